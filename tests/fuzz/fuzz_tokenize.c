/* Fuzz target: text -> ids (tags, normaliser, unigram and BPE), prompt ids, ids -> text, with the
 * two fixture tokenizers (tests/fixtures/tokenizer/bpe_tiny.model, BPE; tests/fixtures/tiny_f32/
 * sentencepiece.bpe.model, unigram with the nmt_nfkc charsmap). Run from the repository root.
 * Input: byte 0 selects tokenizer and mode; the rest is the text (also read as raw ids). */
#include "fuzz.h"
#include <stdio.h>

static kosmos2_tokenizer *fuzz_tok[2];

static void fuzz_tok_init(void) {
    static const char *paths[2] = {"tests/fixtures/tokenizer/bpe_tiny.model", "tests/fixtures/tiny_f32/sentencepiece.bpe.model"};
    int i;
    for (i = 0; i < 2; i++)
        if (!fuzz_tok[i] && kosmos2_tokenizer_load_file(paths[i], &fuzz_tok[i]) != 0) {
            fprintf(stderr, "fuzz_tokenize: %s (run from the repository root)\n", kosmos2_last_error());
            abort();
        }
}

static int fuzz_tokenize(const uint8_t *data, size_t size) {
    const kosmos2_tokenizer *tok;
    char *text;
    int32_t ids[512];
    uint8_t mask[512];
    char out[2048];
    int n, V, mode;
    if (size < 1) return 0;
    fuzz_tok_init();
    tok = fuzz_tok[data[0] & 1];
    mode = data[0] >> 1;
    V = kosmos2_tokenizer_vocab_size(tok);
    text = (char *)fuzz_copy(data + 1, size - 1, 1);
    n = kosmos2_tokenize(tok, text, ids, 512);
    if (n > 512) { /* the count is exact: a big enough buffer gets the same count */
        int32_t *big = (int32_t *)malloc((size_t)n * sizeof *big);
        if (!big || kosmos2_tokenize(tok, text, big, n) != n) abort();
        free(big);
    }
    if (n > 0) {
        int k = n < 512 ? n : 512, len = kosmos2_detokenize(tok, ids, k, mode & 1, out, sizeof out);
        if (len >= 0 && (size_t)len >= sizeof out) { /* snprintf-style: the full length fits a bigger buffer */
            char *big = (char *)malloc((size_t)len + 1);
            if (!big || kosmos2_detokenize(tok, ids, k, mode & 1, big, (size_t)len + 1) != len) abort();
            free(big);
        }
    }
    n = kosmos2_prompt_ids(tok, text, (mode & 2) ? 64 : 0, ids, mask, (mode & 4) ? 512 : 3);
    kosmos2_tokenizer_normalize(tok, text, out, (mode & 8) ? sizeof out : 7);
    { /* the input bytes as ids, some out of range */
        size_t i, k = 0;
        for (i = 1; i + 2 <= size && k < 512; i += 2) ids[k++] = (int32_t)((data[i] | data[i + 1] << 8) % (V + 3)) - 1;
        kosmos2_detokenize(tok, ids, (int)k, mode & 1, out, sizeof out);
        if (k) kosmos2_token_is_special(tok, ids[0]);
        if (k) kosmos2_token_text(tok, ids[0]);
    }
    kosmos2_token_id(tok, text);
    free(text);
    return 0;
}

/* Free the tokenizers (the test replay calls this; libFuzzer keeps them for the whole run). */
static void fuzz_tokenize_cleanup(void) {
    kosmos2_tokenizer_free(fuzz_tok[0]); kosmos2_tokenizer_free(fuzz_tok[1]);
    fuzz_tok[0] = fuzz_tok[1] = NULL;
}

#ifndef FUZZ_NO_MAIN /* tests/test_hostile.c includes the targets to replay their inputs */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_tokenize(data, size); }
#endif
