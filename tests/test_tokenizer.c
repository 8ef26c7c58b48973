/* tests for the tokenizer section (parts/tokenizer.h).
 * References: the id sequences written in transformers' Kosmos-2 tests (KOSMOS2-SPEC.md §5.2, §5.4,
 * §6.3, §8.2), and for the corpus the Rust `tokenizers` library (the fast tokenizer) run by
 * scripts/make_tokenizer_refs.py on tests/fixtures/tokenizer/corpus.txt. */
#define TOK_FIX "tests/fixtures/tokenizer/"

static kosmos2_tokenizer *tok_load_real(void) {
    char path[1024];
    kosmos2_tokenizer *tok = NULL;
    int rc;
    snprintf(path, sizeof path, "%s/sentencepiece.bpe.model", test_assets_dir());
    rc = kosmos2_tokenizer_load_file(path, &tok);
    CHECK(rc == 0, "cannot load the real tokenizer %s (asset missing?): %s", path, kosmos2_last_error());
    return rc == 0 ? tok : NULL;
}

/* Tokenize and compare with an expected id list. */
static void tok_expect(const kosmos2_tokenizer *tok, const char *text, const int32_t *want, int n_want) {
    int32_t got[512];
    int n = kosmos2_tokenize(tok, text, got, 512), i, same = n == n_want;
    for (i = 0; same && i < n; i++) same = got[i] == want[i];
    CHECK(same, "tokenize(\"%s\"): got %d ids, want %d (first difference at %d)", text, n, n_want, i - 1);
}

#define TOK_EXPECT(tok, text, ...)                                                     \
    do {                                                                               \
        static const int32_t want_[] = {__VA_ARGS__};                                  \
        tok_expect(tok, text, want_, (int)(sizeof want_ / sizeof want_[0]));           \
    } while (0)

static void test_tokenizer_vocab(void) {
    kosmos2_tokenizer *tok = tok_load_real();
    static const struct { int32_t id; const char *text; } known[] = {
        {0, "<s>"}, {1, "<pad>"}, {2, "</s>"}, {3, "<unk>"}, {4, "."}, {5, "\xE2\x96\x81the"}, {6, ","},
        {9, "\xE2\x96\x81of"}, {106, "\xE2\x96\x81"}, {247, "e"}, {712, "\xE2\x96\x81" "An"},
        {34645, "\xE2\x96\x81" "Describ"}, {43867, "\xE2\x96\x81snowman"}, {64001, "<mask>"},
        {64002, "</doc>"}, {64003, "<image>"}, {64004, "</image>"}, {64007, "<phrase>"}, {64008, "</phrase>"},
        {64009, "<object>"}, {64010, "</object>"}, {64011, "</delimiter_of_multi_objects/>"},
        {64012, "<grounding>"}, {64013, "<patch_index_0000>"}, {65036, "<patch_index_1023>"}};
    size_t i;
    if (!tok) return;
    CHECK(kosmos2_tokenizer_vocab_size(tok) == 65037, "vocab size %d", kosmos2_tokenizer_vocab_size(tok));
    for (i = 0; i < sizeof known / sizeof known[0]; i++) {
        const char *t = kosmos2_token_text(tok, known[i].id);
        CHECK(t && strcmp(t, known[i].text) == 0, "id %d is \"%s\", want \"%s\"", known[i].id, t ? t : "(null)", known[i].text);
        CHECK(kosmos2_token_id(tok, known[i].text) == known[i].id, "token_id(\"%s\") = %d, want %d", known[i].text,
              kosmos2_token_id(tok, known[i].text), known[i].id);
    }
    CHECK(kosmos2_token_text(tok, -1) == NULL && kosmos2_token_text(tok, 65037) == NULL, "out of range ids must give NULL");
    CHECK(kosmos2_token_id(tok, "no such token") == -1, "unknown token text must give -1");
    for (i = 0; i < 65037; i++) {
        int want = i <= 3 || i == 64001;
        if (kosmos2_token_is_special(tok, (int32_t)i) != want) {
            CHECK(0, "id %d: is_special %d, want %d", (int)i, kosmos2_token_is_special(tok, (int32_t)i), want);
            break;
        }
    }
    kosmos2_tokenizer_free(tok);
}

/* KOSMOS2-SPEC.md §5.2, §5.4 (processor test rows) and §6.3. */
static void test_tokenizer_spec_ids(void) {
    kosmos2_tokenizer *tok = tok_load_real();
    if (!tok) return;
    TOK_EXPECT(tok, "An image of", 712, 1648, 9);
    TOK_EXPECT(tok, "Describe this image in detail:", 34645, 247, 38, 1648, 12, 3391, 55);
    TOK_EXPECT(tok, "Two puppies sit in a field of grass.", 1264, 17772, 1357, 12, 10, 770, 9, 4464, 4);
    TOK_EXPECT(tok, " The snowman appears to be enjoying the warmth of the fire, and it appears to have a warm and cozy atmosphere.",
               24, 43867, 1684, 7, 27, 3774, 5, 10356, 9, 5, 646, 6, 8, 22, 1684, 7, 30, 10, 2007, 8, 16239, 4337, 4);
    /* §5.4 rows come from the processor with add_eos_token=True: <s> + ids + </s> */
    TOK_EXPECT(tok, "<s><grounding> Two puppies sit in a field of grass.</s>", 0, 64012, 1264, 17772, 1357, 12, 10, 770,
               9, 4464, 4, 2);
    TOK_EXPECT(tok, "<s><grounding> <phrase> Two puppies </phrase> sit in a field of grass.</s>", 0, 64012, 64007, 1264,
               17772, 64008, 1357, 12, 10, 770, 9, 4464, 4, 2);
    TOK_EXPECT(tok, "<s><grounding> <phrase> Two puppies </phrase><object> <patch_index_0079> <patch_index_1016> </object> "
                    "sit in a field of grass.</s>",
               0, 64012, 64007, 1264, 17772, 64008, 64009, 64092, 65029, 64010, 1357, 12, 10, 770, 9, 4464, 4, 2);
    TOK_EXPECT(tok, "<s><grounding> <phrase> Two puppies </phrase><object> <patch_index_0079> <patch_index_1016> "
                    "</delimiter_of_multi_objects/> <patch_index_0135> <patch_index_1008> </object> sit in a field of "
                    "<phrase> grass </phrase><object> <patch_index_0480> <patch_index_1023> </object>.</s>",
               0, 64012, 64007, 1264, 17772, 64008, 64009, 64092, 65029, 64011, 64148, 65021, 64010, 1357, 12, 10, 770,
               9, 64007, 4464, 64008, 64009, 64493, 65036, 64010, 106, 4, 2);
    kosmos2_tokenizer_free(tok);
}

/* §5.2 and §8.2: the processor's prompt ids and image mask. */
static void test_tokenizer_prompt_ids(void) {
    static const char *prompts[] = {"<grounding>An image of", "<grounding> An image of", "  <grounding>An image of \n"};
    static const int32_t describe_tail[] = {64004, 64012, 34645, 247, 38, 1648, 12, 3391, 55};
    kosmos2_tokenizer *tok = tok_load_real();
    int32_t ids[128];
    uint8_t mask[128];
    int n, i, p;
    if (!tok) return;
    for (p = 0; p < 3; p++) {
        int ok = 1;
        memset(mask, 7, sizeof mask);
        n = kosmos2_prompt_ids(tok, prompts[p], 64, ids, mask, 128);
        CHECK(n == 71, "prompt \"%s\": %d ids, want 71", prompts[p], n);
        if (n != 71) continue;
        ok = ids[0] == 0 && ids[1] == 64003 && ids[66] == 64004 && ids[67] == 64012 && ids[68] == 712 &&
             ids[69] == 1648 && ids[70] == 9;
        for (i = 0; i < 64; i++) ok = ok && ids[2 + i] == 4 + i;
        for (i = 0; i < 71; i++) ok = ok && mask[i] == (i >= 2 && i < 66);
        CHECK(ok, "prompt \"%s\": ids or image mask differ from §5.2", prompts[p]);
    }
    n = kosmos2_prompt_ids(tok, "<grounding>Describe this image in detail:", 64, ids, NULL, 128);
    CHECK(n == 75 && ids[0] == 0 && ids[1] == 64003 && ids[2] == 4 && ids[65] == 67 &&
              memcmp(ids + 66, describe_tail, sizeof describe_tail) == 0,
          "Describe prompt: %d ids", n);
    /* small buffer: the count is still the full count, nothing written past cap */
    ids[5] = -7;
    mask[5] = 9;
    n = kosmos2_prompt_ids(tok, "<grounding>An image of", 64, ids, mask, 5);
    CHECK(n == 71 && ids[5] == -7 && mask[5] == 9 && ids[4] == 6 && mask[4] == 1, "cap 5: n=%d", n);
    n = kosmos2_prompt_ids(tok, "<grounding>An image of", 64, NULL, NULL, 0);
    CHECK(n == 71, "cap 0: n=%d", n);
    /* no image: <s> + text */
    n = kosmos2_prompt_ids(tok, " <grounding>An image of ", 0, ids, mask, 128);
    CHECK(n == 5 && ids[0] == 0 && ids[1] == 64012 && ids[2] == 712 && ids[3] == 1648 && ids[4] == 9 &&
              mask[0] + mask[1] + mask[2] + mask[3] + mask[4] == 0,
          "text-only prompt: %d ids", n);
    CHECK(kosmos2_prompt_ids(tok, "x", -1, ids, mask, 128) == KOSMOS2_E_INVALID, "negative n_image_tokens accepted");
    kosmos2_tokenizer_free(tok);
}

/* §8.2 EXPECTED_IDS decode to the §6.4 string; the long caption's text after </image> with the tags removed
 * is the expected caption. */
static void test_tokenizer_decode_spec(void) {
    static const int32_t gen_short[] = {64004, 64012, 712, 1648, 9, 64007, 10, 43867, 64008, 64009, 64057, 64876, 64010,
                                        5950, 597, 32, 64007, 10, 646, 64008, 64009, 64018, 64924, 64010, 4, 2};
    static const int32_t gen_long[] = {
        64004, 64012, 34645, 247, 38, 1648, 12, 3391, 55, 24, 1648, 1338, 10, 43867, 1280, 32, 64007, 10, 30879,
        64008, 64009, 64018, 65020, 64010, 12, 5, 1842, 4, 71, 17, 1679, 64007, 10, 3958, 64008, 64009, 64061,
        64263, 64010, 6, 64007, 15719, 64008, 64009, 64253, 64617, 64010, 6, 8, 64007, 9626, 64008, 64009, 64413,
        64545, 64010, 6, 23, 64007, 10, 4363, 64008, 64009, 64623, 64885, 64010, 2255, 8, 64007, 10, 3486, 64008,
        64009, 64809, 65036, 64010, 1560, 2255, 4, 24, 43867, 1684, 7, 27, 3774, 5, 10356, 9, 5, 646, 6, 8, 22,
        1684, 7, 30, 10, 2007, 8, 16239, 4337, 4, 2};
    static const char *want_short =
        "<image>. the, to and of as in I that' for is was- on\xE2\x80\x99 it with The as at bet he have from by are \" you "
        "his \xE2\x80\x9C this said not has an ( but had we her they will my or were their): up about out who one all been "
        "she can more would It</image><grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044>"
        "<patch_index_0863></object> warming himself by<phrase> a fire</phrase><object><patch_index_0005>"
        "<patch_index_0911></object>.";
    static const char *want_caption =
        "Describe this image in detail: The image features a snowman sitting by a campfire in the snow. He is wearing a "
        "hat, scarf, and gloves, with a pot nearby and a cup placed nearby. The snowman appears to be enjoying the warmth "
        "of the fire, and it appears to have a warm and cozy atmosphere.";
    kosmos2_tokenizer *tok = tok_load_real();
    int32_t ids[256];
    char out[4096], caption[4096];
    const char *tail;
    int n, m, i, j, depth;
    if (!tok) return;
    /* the short example: <s> <image> 4..67 + generated */
    ids[0] = 0;
    ids[1] = 64003;
    for (i = 0; i < 64; i++) ids[2 + i] = 4 + i;
    memcpy(ids + 66, gen_short, sizeof gen_short);
    n = 66 + (int)(sizeof gen_short / sizeof gen_short[0]);
    CHECK(n == 92, "EXPECTED_IDS length %d", n);
    m = kosmos2_detokenize(tok, ids, n, 1, out, sizeof out);
    CHECK(m == (int)strlen(want_short) && strcmp(out, want_short) == 0, "decode(EXPECTED_IDS) =\n[%s]\nwant\n[%s]", out, want_short);
    /* snprintf-style length and truncation */
    CHECK(kosmos2_detokenize(tok, ids, n, 1, NULL, 0) == m, "length query differs");
    CHECK(kosmos2_detokenize(tok, ids, n, 1, out, 8) == m && strcmp(out, "<image>") == 0, "truncated output [%s]", out);
    /* keeping specials keeps <s> and </s> */
    m = kosmos2_detokenize(tok, ids, n, 0, out, sizeof out);
    CHECK(m > 7 && strncmp(out, "<s><image>", 10) == 0 && strcmp(out + m - 5, ".</s>") == 0, "skip_special=0: [%s]", out);
    /* the long example: caption = text after the last </image> with <...> removed, stripped */
    memcpy(ids + 66, gen_long, sizeof gen_long);
    n = 66 + (int)(sizeof gen_long / sizeof gen_long[0]);
    m = kosmos2_detokenize(tok, ids, n, 1, out, sizeof out);
    CHECK(m > 0 && m < (int)sizeof out, "decode long: %d", m);
    tail = strstr(out, "</image>");
    CHECK(tail != NULL, "no </image> in [%s]", out);
    if (tail) {
        for (tail += 8, i = j = depth = 0; tail[i]; i++) {
            if (tail[i] == '<') depth = 1;
            else if (tail[i] == '>' && depth) depth = 0;
            else if (!depth) caption[j++] = tail[i];
        }
        caption[j] = 0;
        for (i = 0; caption[i] == ' '; i++) {}
        CHECK(strcmp(caption + i, want_caption) == 0, "caption\n[%s]\nwant\n[%s]", caption + i, want_caption);
    }
    ids[3] = 65037;
    CHECK(kosmos2_detokenize(tok, ids, n, 1, out, sizeof out) == KOSMOS2_E_INVALID, "out-of-range id accepted");
    ids[3] = -1;
    CHECK(kosmos2_detokenize(tok, ids, n, 1, out, sizeof out) == KOSMOS2_E_INVALID, "negative id accepted");
    kosmos2_tokenizer_free(tok);
}

/* Compare a model with the fast-tokenizer references over the corpus (every `every`-th line). */
static void tok_corpus_check(const char *model_path, const char *ids_file, const char *dec_file, int every) {
    kosmos2_tokenizer *tok = NULL;
    unsigned char *corpus = test_read_file(TOK_FIX "corpus.txt", NULL);
    unsigned char *ref_ids = test_read_file(ids_file, NULL), *ref_dec = test_read_file(dec_file, NULL);
    char *cl, *rl, *dl, *dec = NULL, *expect = NULL;
    int32_t *ids = NULL, *want = NULL;
    int line = 0, bad_ids = 0, bad_dec = 0, checked = 0;
    CHECK(corpus && ref_ids && ref_dec, "missing fixture %s / %s / %s", TOK_FIX "corpus.txt", ids_file, dec_file);
    if (!corpus || !ref_ids || !ref_dec) goto done;
    if (kosmos2_tokenizer_load_file(model_path, &tok) != 0) {
        CHECK(0, "load %s: %s", model_path, kosmos2_last_error());
        goto done;
    }
    ids = (int32_t *)malloc(4096 * sizeof(int32_t));
    want = (int32_t *)malloc(4096 * sizeof(int32_t));
    dec = (char *)malloc(8192);
    expect = (char *)malloc(8192);
    cl = (char *)corpus;
    rl = (char *)ref_ids;
    dl = (char *)ref_dec;
    while (*cl) {
        char *ce = strchr(cl, '\n'), *re, *de, *p;
        int n, m = 0, k, same;
        if (!ce) break;
        *ce = 0;
        if (line++ % every) { cl = ce + 1; continue; }
        re = strchr(rl, '\n');
        de = strchr(dl, '\n');
        CHECK(re && de, "reference files end early at corpus line %d", line);
        if (!re || !de) break;
        *re = 0;
        *de = 0;
        for (p = rl; *p && m < 4096;) {
            char *e;
            long v = strtol(p, &e, 10);
            if (e == p) break;
            want[m++] = (int32_t)v;
            p = e;
        }
        n = kosmos2_tokenize(tok, cl, ids, 4096);
        same = n == m;
        for (k = 0; same && k < n; k++) same = ids[k] == want[k];
        if (!same && ++bad_ids <= 5) CHECK(0, "%s line %d [%s]: ids differ (%d vs %d ids)", ids_file, line, cl, n, m);
        /* decode the REFERENCE ids */
        if (dl[0] == '=') snprintf(expect, 8192, "%s", cl);
        else if (dl[0] == '>') snprintf(expect, 8192, "%s", dl + 1);
        else { /* '~': spaces squeezed and stripped */
            char *w = expect;
            for (p = cl; *p == ' '; p++) {}
            for (; *p; p++)
                if (!(*p == ' ' && (p[1] == ' ' || p[1] == 0))) *w++ = *p;
            *w = 0;
        }
        k = kosmos2_detokenize(tok, want, m, 1, dec, 8192);
        if ((k < 0 || strcmp(dec, expect) != 0) && ++bad_dec <= 5)
            CHECK(0, "%s line %d: decode\n[%s]\nwant\n[%s]", dec_file, line, dec, expect);
        checked++;
        cl = ce + 1;
        rl = re + 1;
        dl = de + 1;
    }
    CHECK(checked >= 3000 / every, "only %d corpus lines checked", checked);
    CHECK(bad_ids == 0, "%d of %d lines with different ids", bad_ids, checked);
    CHECK(bad_dec == 0, "%d of %d lines decode differently", bad_dec, checked);
done:
    kosmos2_tokenizer_free(tok);
    free(corpus);
    free(ref_ids);
    free(ref_dec);
    free(ids);
    free(want);
    free(dec);
    free(expect);
}

static void test_tokenizer_corpus_real(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/sentencepiece.bpe.model", test_assets_dir());
    tok_corpus_check(path, TOK_FIX "real.ids.txt", TOK_FIX "real.dec.txt", 1);
}

static void test_tokenizer_corpus_bpe(void) {
    tok_corpus_check(TOK_FIX "bpe_tiny.model", TOK_FIX "bpe.ids.txt", TOK_FIX "bpe.dec.txt", 5);
}

static void test_tokenizer_api_errors(void) {
    kosmos2_tokenizer *tok = tok_load_real(), *t2 = (kosmos2_tokenizer *)&t2;
    int32_t ids[64];
    char buf[64];
    if (!tok) return;
    CHECK(kosmos2_tokenize(tok, "a\xC3(b", ids, 64) == KOSMOS2_E_INVALID, "invalid UTF-8 accepted");
    CHECK(kosmos2_tokenize(tok, "\xED\xA0\x80", ids, 64) == KOSMOS2_E_INVALID, "surrogate accepted");
    CHECK(kosmos2_tokenize(tok, "\xC0\xAF", ids, 64) == KOSMOS2_E_INVALID, "overlong accepted");
    CHECK(kosmos2_tokenize(tok, NULL, ids, 64) == KOSMOS2_E_INVALID, "NULL text accepted");
    CHECK(kosmos2_tokenize(tok, "", ids, 64) == 0, "empty text gives ids");
    CHECK(kosmos2_tokenize(tok, "An image of", NULL, 0) == 3, "count query");
    CHECK(kosmos2_tokenize(tok, "An image of", ids, 2) == 3 && ids[0] == 712 && ids[1] == 1648, "cap 2");
    CHECK(kosmos2_detokenize(tok, ids, 0, 1, buf, sizeof buf) == 0 && buf[0] == 0, "empty decode");
    CHECK(kosmos2_tokenizer_normalize(tok, " Ｈｅｌｌｏ\xEF\xAC\x81   x\t ", buf, sizeof buf) > 0 &&
              strcmp(buf, "\xE2\x96\x81Hellofi\xE2\x96\x81x") == 0,
          "normalize: [%s]", buf);
    CHECK(kosmos2_tokenizer_load_file("/nonexistent/sentencepiece.bpe.model", &t2) == KOSMOS2_E_IO && t2 == NULL,
          "missing file");
    CHECK(kosmos2_tokenizer_load_memory("", 0, &t2) == KOSMOS2_E_FORMAT && t2 == NULL, "empty model accepted");
    kosmos2_tokenizer_free(NULL);
    kosmos2_tokenizer_free(tok);
}

/* Hand-made hostile protobufs. */
static void test_tokenizer_hostile_small(void) {
    static const struct { const char *bytes; size_t len; int want; } cases[] = {
        {"\x0a", 1, KOSMOS2_E_FORMAT},                                  /* length missing */
        {"\x0a\x05\x0a\x01", 4, KOSMOS2_E_FORMAT},                      /* length past the end */
        {"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11, KOSMOS2_E_FORMAT}, /* huge length */
        {"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, KOSMOS2_E_FORMAT}, /* varint too long */
        {"\x0b\x0c", 2, KOSMOS2_E_FORMAT},                              /* group wire type */
        {"\x00\x00", 2, KOSMOS2_E_FORMAT},                              /* field number 0 */
        {"\x0a\x03\x0a\x01\x80", 5, KOSMOS2_E_FORMAT},                  /* piece not UTF-8 */
        {"\x0a\x02\x0a\x00", 4, KOSMOS2_E_FORMAT},                      /* empty piece */
        {"\x0a\x08\x0a\x01\x61\x15\x00\x00\xc0\x7f", 10, KOSMOS2_E_FORMAT}, /* NaN score */
        {"\x0a\x03\x0a\x01\x61", 5, KOSMOS2_E_FORMAT},                  /* 1 piece: too few */
        {"\x0a\x03\x0a\x01\x61\x0a\x03\x0a\x01\x62\x0a\x03\x0a\x01\x63\x12\x02\x18\x03", 19, KOSMOS2_E_UNSUPPORTED},
        {"\x0a\x03\x0a\x01\x61\x0a\x03\x0a\x01\x62\x0a\x03\x0a\x01\x63\x1a\x04\x12\x02\x01\x00", 21, KOSMOS2_E_FORMAT},
        {"\x0a\x03\x0a\x01\x61\x0a\x03\x0a\x01\x62\x0a\x03\x0a\x01\x63\x1a\x0a\x12\x08\x08\x00\x00\x00\x01\x02\x03\x04",
         27, KOSMOS2_E_FORMAT}, /* charsmap trie size past the blob */
    };
    size_t i;
    { /* a 300-byte piece */
        char big[320];
        kosmos2_tokenizer *t = NULL;
        memset(big, 'a', sizeof big);
        big[0] = 0x0a, big[1] = (char)(0x80 | 47), big[2] = 2; /* pieces: length 303 = varint af 02 */
        big[3] = 0x0a, big[4] = (char)(0x80 | 44), big[5] = 2; /* piece text: length 300 = varint ac 02 */
        memcpy(big + 306, "\x0a\x03\x0a\x01\x62\x0a\x03\x0a\x01\x63", 10); /* two more pieces */
        CHECK(kosmos2_tokenizer_load_memory(big, 316, &t) == KOSMOS2_E_FORMAT && t == NULL &&
                  strstr(kosmos2_last_error(), "300 bytes long"),
              "300-byte piece: %s", kosmos2_last_error());
    }
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kosmos2_tokenizer *t = NULL;
        int rc = kosmos2_tokenizer_load_memory(cases[i].bytes, cases[i].len, &t);
        CHECK(rc == cases[i].want && t == NULL && kosmos2_last_error()[0], "case %d: rc %d, want %d (%s)", (int)i, rc,
              cases[i].want, kosmos2_last_error());
        kosmos2_tokenizer_free(t);
    }
    { /* a minimal valid model: pieces a b c "▁c", a charsmap whose units point out of bounds */
        static const char ok[] = "\x0a\x03\x0a\x01\x61\x0a\x03\x0a\x01\x62\x0a\x03\x0a\x01\x63"
                                 "\x0a\x0b\x0a\x04\xe2\x96\x81\x63\x15\x00\x00\x80\xbf"
                                 "\x1a\x10\x12\x0e\x08\x00\x00\x00\xff\xff\xff\xff\x61\x61\xff\xff\x41\x00";
        kosmos2_tokenizer *t = NULL;
        int32_t ids[16];
        int rc = kosmos2_tokenizer_load_memory(ok, sizeof ok - 1, &t);
        CHECK(rc == 0 && kosmos2_tokenizer_vocab_size(t) == 4 + 2 + 1035, "minimal model: rc %d (%s)", rc, kosmos2_last_error());
        if (t) { /* "▁cab" -> ▁c + fused <unk>; "▁cé" likewise; <image> = 6 + 1; "▁x" -> <unk> */
            rc = kosmos2_tokenize(t, "cab c\xC3\xA9<image>x", ids, 16);
            CHECK(rc == 6 && ids[0] == 4 && ids[1] == 3 && ids[2] == 4 && ids[3] == 3 && ids[4] == 7 && ids[5] == 3,
                  "minimal model ids: rc %d", rc);
        }
        kosmos2_tokenizer_free(t);
    }
}

/* Truncations and bit flips of real files: an error or a working tokenizer, never a crash. */
static void tok_mutate_loop(const unsigned char *file, size_t size, int n_trunc, int n_flip, unsigned seed) {
    unsigned char *buf = (unsigned char *)malloc(size);
    uint32_t state = seed;
    int i, loaded = 0, failed = 0;
    for (i = 0; i < n_trunc + n_flip; i++) {
        kosmos2_tokenizer *t = NULL;
        size_t len = size;
        int rc, k;
        memcpy(buf, file, size);
        state = state * 1664525u + 1013904223u;
        if (i < n_trunc) {
            len = i < 16 ? (size_t)i : (size_t)(state % size);
        } else {
            for (k = 0; k < 1 + (int)(state >> 28); k++) {
                state = state * 1664525u + 1013904223u;
                buf[(state >> 8) % size] ^= (unsigned char)(1u << (state & 7));
            }
        }
        rc = kosmos2_tokenizer_load_memory(buf, len, &t);
        if (rc == 0) {
            int32_t ids[256];
            char out[1024];
            int n = kosmos2_tokenize(t, "Ｈｅｌｌｏ <phrase>ﬁne snowman</phrase> é e\xCC\x81 \xE2\x91\xA0 \xF0\x9F\x98\x80 x\ty", ids, 256);
            if (n > 0) kosmos2_detokenize(t, ids, n < 256 ? n : 256, 1, out, sizeof out);
            loaded++;
        } else {
            CHECK(rc < 0 && t == NULL && kosmos2_last_error()[0], "mutation %d: rc %d without message", i, rc);
            failed++;
        }
        kosmos2_tokenizer_free(t);
    }
    CHECK(failed > 0, "no mutation was rejected (%d loaded)", loaded);
    free(buf);
}

static void test_tokenizer_hostile_files(void) {
    char path[1024];
    size_t size = 0;
    unsigned char *real, *bpe = test_read_file(TOK_FIX "bpe_tiny.model", &size);
    CHECK(bpe != NULL, "missing %s", TOK_FIX "bpe_tiny.model");
    if (bpe) tok_mutate_loop(bpe, size, 400, 1200, 12345u);
    free(bpe);
    snprintf(path, sizeof path, "%s/sentencepiece.bpe.model", test_assets_dir());
    real = test_read_file(path, &size);
    CHECK(real != NULL, "missing %s", path);
    if (real) tok_mutate_loop(real, size, 24, 40, 777u);
    free(real);
}

static void tests_tokenizer(void) {
    RUN(test_tokenizer_vocab);
    RUN(test_tokenizer_spec_ids);
    RUN(test_tokenizer_prompt_ids);
    RUN(test_tokenizer_decode_spec);
    RUN(test_tokenizer_corpus_real);
    RUN(test_tokenizer_corpus_bpe);
    RUN(test_tokenizer_api_errors);
    RUN(test_tokenizer_hostile_small);
    RUN(test_tokenizer_hostile_files);
}
