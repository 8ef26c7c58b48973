/* Fuzz target: the SentencePiece ModelProto reader (protobuf wire format, pieces, trainer and
 * normalizer specs, the precompiled charsmap), then a little use of what was loaded. */
#include "fuzz.h"

static int fuzz_spm(const uint8_t *data, size_t size) {
    unsigned char *bytes = fuzz_copy(data, size, 0);
    kosmos2_tokenizer *tok = NULL;
    if (kosmos2_tokenizer_load_memory(bytes, size, &tok) == 0) {
        static const char *texts[] = {"Hello world", " <grounding>An image of<phrase> a dog</phrase>", "\xc3\xa9t\xc3\xa9 \xef\xbc\xa1 \xe2\x85\xa0", ""};
        int32_t ids[256];
        char out[1024];
        int i, n, V = kosmos2_tokenizer_vocab_size(tok);
        for (i = 0; i < 4; i++) {
            n = kosmos2_tokenize(tok, texts[i], ids, 256);
            if (n > 0) kosmos2_detokenize(tok, ids, n < 256 ? n : 256, i & 1, out, sizeof out);
            kosmos2_tokenizer_normalize(tok, texts[i], out, sizeof out);
        }
        for (i = 0; i < 256 && i < V; i++) ids[i] = (int32_t)((V - 1 - i * 7919 % V + V) % V);
        kosmos2_detokenize(tok, ids, i, 0, out, sizeof out);
        kosmos2_token_text(tok, V - 1);
        kosmos2_token_id(tok, "<s>");
        kosmos2_tokenizer_free(tok);
    }
    free(bytes);
    return 0;
}

#ifndef FUZZ_NO_MAIN /* tests/test_hostile.c includes the targets to replay their inputs */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_spm(data, size); }
#endif
