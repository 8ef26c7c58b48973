/* tests for [2] PARSERS and [3] CHECKPOINT: JSON, safetensors, config, loading and bad input.
 * Checksums: tests/fixtures/tiny_{f32,bf16}/ref/tensors.json, computed by scripts/make_fixtures.py
 * (float64 sums of the stored values, with torch). Bad inputs are generated here under build/tmp. */
#include <sys/stat.h>
#include <unistd.h>

static void test_json_parser(void) {
    kosmos2__json v;
    const kosmos2__json *x;
    const char *good = " {\"a\": [1, -2.5e3, true, false, null], \"s\": \"q\\\"\\u00e9\\ud83d\\ude00\\n\", \"o\": {}} ";
    const char *bad[] = {"", "{", "[1,]", "{\"a\" 1}", "\"\\x\"", "01", "1.", "[1e]", "\"abc", "{\"a\":1}}", "nul", "[\"\x01\"]", "\"\\u12G4\""};
    size_t i;
    char deep[300];
    CHECK_OK(kosmos2__json_parse(good, strlen(good), &v));
    x = kosmos2__json_get(&v, "a");
    CHECK(x && x->type == KOSMOS2__JARR && x->len == 5 && x->items[1].num == -2500.0 && x->items[2].num == 1, "array");
    x = kosmos2__json_get(&v, "s");
    CHECK(x && x->type == KOSMOS2__JSTR && strcmp(x->str, "q\"\xc3\xa9\xf0\x9f\x98\x80\n") == 0, "escapes decoded");
    kosmos2__json_free(&v);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = kosmos2__json_parse(bad[i], strlen(bad[i]), &v);
        CHECK(rc == KOSMOS2_E_FORMAT && strstr(kosmos2_last_error(), "invalid JSON at byte"), "bad JSON #%d accepted (rc %d)", (int)i, rc);
    }
    memset(deep, '[', sizeof deep);
    CHECK(kosmos2__json_parse(deep, sizeof deep, &v) == KOSMOS2_E_FORMAT && strstr(kosmos2_last_error(), "deep"), "deep nesting refused");
}

/* The loaded tensors reproduce the reference checksums (float64 sum and sum of |x|). */
static void test_loader_checksums(void) {
    int mi;
    for (mi = 0; mi < 2; mi++) {
        const char *dir = mi ? "tests/fixtures/tiny_bf16" : "tests/fixtures/tiny_f32";
        char path[256];
        kosmos2_model *m = NULL;
        kosmos2__json ref;
        int i, n, matched = 0;
        snprintf(path, sizeof path, "%s/ref/tensors.json", dir);
        CHECK_OK(kosmos2_model_load(dir, NULL, &m));
        CHECK_OK(kosmos2__json_load(path, &ref));
        if (!m || ref.type != KOSMOS2__JOBJ) { kosmos2_model_free(m); continue; }
        n = kosmos2_model_n_tensors(m);
        CHECK(n == (int)ref.len, "%s: %d tensors loaded, reference has %d", dir, n, (int)ref.len);
        for (i = 0; i < n; i++) {
            kosmos2_tensor_info ti;
            const kosmos2__json *r, *rs, *ra;
            double sum = 0, asum = 0;
            size_t k, count;
            kosmos2_model_tensor(m, i, &ti);
            r = kosmos2__json_get(&ref, ti.name);
            CHECK(r != NULL, "%s: no reference for %s", dir, ti.name);
            if (!r) continue;
            count = ti.nbytes / (strcmp(ti.dtype, "F32") ? 2 : 4);
            for (k = 0; k < count; k++) {
                float f;
                if (!strcmp(ti.dtype, "F32")) memcpy(&f, (const char *)ti.data + 4 * k, 4);
                else {
                    uint16_t h;
                    memcpy(&h, (const char *)ti.data + 2 * k, 2);
                    f = !strcmp(ti.dtype, "BF16") ? kosmos2__bf16_to_f32(h) : kosmos2__f16_to_f32(h);
                }
                sum += f;
                asum += fabs(f);
            }
            rs = kosmos2__json_get(r, "sum"); ra = kosmos2__json_get(r, "abs_sum");
            CHECK(rs && ra && fabs(sum - rs->num) <= 1e-9 * (fabs(ra->num) + 1) && fabs(asum - ra->num) <= 1e-9 * (ra->num + 1),
                  "%s %s: sum %.12g vs %.12g", dir, ti.name, sum, rs ? rs->num : 0.0);
            matched++;
        }
        CHECK(matched == n && n > 50, "%s: %d of %d tensors checked", dir, matched, n);
        kosmos2__json_free(&ref);
        kosmos2_model_free(m);
    }
}

/* ---- bad-input helpers: build checkpoint directories under build/tmp ---- */
static int test_copy_file(const char *from, const char *to) {
    size_t n;
    unsigned char *b = test_read_file(from, &n);
    FILE *f;
    if (!b) return -1;
    f = fopen(to, "wb");
    if (!f) { free(b); return -1; }
    fwrite(b, 1, n, f);
    fclose(f);
    free(b);
    return 0;
}
static void test_write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) { fputs(text, f); fclose(f); }
}

/* A fresh directory build/tmp/<name> holding the tiny_f32 fixture, except model.safetensors when
 * with_weights is 0. Returns the directory path (static buffer). */
static const char *test_fixture_copy(const char *name, int with_weights) {
    static char dir[256];
    char a[512], b[512];
    const char *files[] = {"config.json", "preprocessor_config.json", "sentencepiece.bpe.model", "model.safetensors"};
    int i;
    mkdir("build", 0755); mkdir("build/tmp", 0755);
    snprintf(dir, sizeof dir, "build/tmp/%s", name);
    mkdir(dir, 0755);
    snprintf(a, sizeof a, "%s/model.safetensors", dir); remove(a);
    snprintf(a, sizeof a, "%s/model.safetensors.index.json", dir); remove(a);
    for (i = 0; i < 4 - !with_weights; i++) {
        snprintf(a, sizeof a, "tests/fixtures/tiny_f32/%s", files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        test_copy_file(a, b);
    }
    return dir;
}

/* One tensor entry of a safetensors file we write: the header may lie about everything. */
typedef struct { char name[160]; char dtype[8]; char shape[64]; long long begin, end; } test_st;

/* Write a safetensors file: header from e[0..n-1] (+ an optional extra raw JSON member), data = the
 * tiny_f32 data section as is. hlen_override != 0 writes that header length instead. */
static void test_write_st(const char *path, const test_st *e, int n, const char *extra, uint64_t hlen_override, size_t truncate_to) {
    size_t sz, hl, cap = 1 << 20, o = 0, total;
    unsigned char *orig = test_read_file("tests/fixtures/tiny_f32/model.safetensors", &sz);
    char *h = (char *)malloc(cap);
    uint64_t ohl = 0, hl64;
    FILE *f;
    int i, k;
    if (!orig || !h) { free(orig); free(h); return; }
    for (k = 7; k >= 0; k--) ohl = (ohl << 8) | orig[k];
    o += (size_t)snprintf(h + o, cap - o, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (i = 0; i < n; i++)
        o += (size_t)snprintf(h + o, cap - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%lld,%lld]}", e[i].name, e[i].dtype, e[i].shape, e[i].begin, e[i].end);
    if (extra) o += (size_t)snprintf(h + o, cap - o, ",%s", extra);
    o += (size_t)snprintf(h + o, cap - o, "}");
    while (o % 8) h[o++] = ' ';
    hl = o;
    hl64 = hlen_override ? hlen_override : (uint64_t)hl;
    f = fopen(path, "wb");
    if (f) {
        unsigned char le[8];
        unsigned char *all;
        for (k = 0; k < 8; k++) le[k] = (unsigned char)(hl64 >> (8 * k));
        total = 8 + hl + (sz - 8 - (size_t)ohl);
        all = (unsigned char *)malloc(total);
        memcpy(all, le, 8);
        memcpy(all + 8, h, hl);
        memcpy(all + 8 + hl, orig + 8 + ohl, sz - 8 - (size_t)ohl);
        fwrite(all, 1, truncate_to && truncate_to < total ? truncate_to : total, f);
        fclose(f);
        free(all);
    }
    free(orig);
    free(h);
}

/* The tiny_f32 tensor table as test_st entries (truthful). Returns the count. */
static int test_st_entries(test_st *e, int cap) {
    kosmos2_model *m = NULL;
    int i, d, n;
    const unsigned char *base = NULL;
    if (kosmos2_model_load("tests/fixtures/tiny_f32", NULL, &m)) return 0;
    n = kosmos2_model_n_tensors(m);
    for (i = 0; i < n && i < cap; i++) { /* data_offsets are relative to the first tensor's data */
        kosmos2_tensor_info ti;
        kosmos2_model_tensor(m, i, &ti);
        if (!base || (const unsigned char *)ti.data < base) base = (const unsigned char *)ti.data;
    }
    for (i = 0; i < n && i < cap; i++) {
        kosmos2_tensor_info ti;
        size_t o = 0;
        kosmos2_model_tensor(m, i, &ti);
        snprintf(e[i].name, sizeof e[i].name, "%s", ti.name);
        snprintf(e[i].dtype, sizeof e[i].dtype, "%s", ti.dtype);
        o += (size_t)snprintf(e[i].shape + o, sizeof e[i].shape - o, "[");
        for (d = 0; d < ti.ndim; d++) o += (size_t)snprintf(e[i].shape + o, sizeof e[i].shape - o, d ? ",%lld" : "%lld", (long long)ti.shape[d]);
        snprintf(e[i].shape + o, sizeof e[i].shape - o, "]");
        e[i].begin = (long long)((const unsigned char *)ti.data - base);
        e[i].end = e[i].begin + (long long)ti.nbytes;
    }
    kosmos2_model_free(m);
    return n;
}

static int test_find_st(const test_st *e, int n, const char *name) {
    int i;
    for (i = 0; i < n; i++) if (!strcmp(e[i].name, name)) return i;
    return -1;
}

/* Expect loading `dir` to fail with `code` and a message containing `needle`. */
#define CHECK_LOAD_FAILS(dir, code, needle)                                                              \
    do {                                                                                                 \
        kosmos2_model *m_ = (kosmos2_model *)1;                                                           \
        int rc_ = kosmos2_model_load(dir, NULL, &m_);                                                    \
        CHECK(rc_ == (code) && m_ == NULL && strstr(kosmos2_last_error(), needle) != NULL,               \
              "rc %d (want %d), message '%s' (want '%s')", rc_, code, kosmos2_last_error(), needle);     \
        if (rc_ == 0) kosmos2_model_free(m_);                                                            \
    } while (0)

static void test_loader_bad_directory(void) {
    const char *d;
    char p[512];
    CHECK_LOAD_FAILS("build/tmp/does-not-exist", KOSMOS2_E_IO, "config.json: not found");
    d = test_fixture_copy("bad_json", 1);
    snprintf(p, sizeof p, "%s/config.json", d);
    test_write_text(p, "{\"text_config\": {\"embed_dim\": 36,, }}");
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "config.json: invalid JSON at byte 33");
    test_write_text(p, "{\"model_type\": \"kosmos-2\", \"text_config\": {\"embed_dim\": 36, \"attention_heads\": 5}}");
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "not divisible by attention_heads 5");
    test_write_text(p, "{\"model_type\": \"kosmos-2\", \"text_config\": {\"layers\": -3}}");
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "text_config.layers must be an integer");
    test_write_text(p, "{\"model_type\": \"llama\"}");
    CHECK_LOAD_FAILS(d, KOSMOS2_E_UNSUPPORTED, "model_type is 'llama'");
    test_write_text(p, "{\"model_type\": \"kosmos-2\", \"vision_config\": {\"image_size\": 43}}");
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "not a multiple of patch_size");
    /* a config.json whose sizes do not fit the weights */
    test_write_text(p, "{\"model_type\": \"kosmos-2\", \"vision_config\": {\"image_size\": 42, \"hidden_size\": 30, \"num_attention_heads\": 3}}");
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "config.json implies");
    d = test_fixture_copy("no_weights", 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_IO, "model.safetensors: cannot open");
    d = test_fixture_copy("bad_preproc", 1);
    snprintf(p, sizeof p, "%s/preprocessor_config.json", d);
    test_write_text(p, "{\"image_std\": [0.2, 0, 0.3], \"size\": {\"height\": 42, \"width\": 42}}");
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "image_std must not be 0");
    test_write_text(p, "{\"size\": {\"height\": 40, \"width\": 40}, \"crop_size\": {\"height\": 40, \"width\": 40}}");
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "the vision tower takes 42x42");
    remove(p); /* absent: defaults at the model's image size */
    {
        kosmos2_model *m = NULL;
        CHECK_OK(kosmos2_model_load(d, NULL, &m));
        CHECK(m && kosmos2_model_preprocess_config(m)->width == 42, "default preprocessing size");
        kosmos2_model_free(m);
    }
}

static void test_loader_bad_safetensors(void) {
    static test_st e[1024], e2[1024];
    int n = test_st_entries(e, 1024), i, k;
    const char *d = test_fixture_copy("bad_st", 0);
    char p[512];
    size_t sz = 0;
    unsigned char *orig = test_read_file("tests/fixtures/tiny_f32/model.safetensors", &sz);
    CHECK(n > 50, "fixture tensors: %d", n);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    /* our writer with the truthful table loads */
    test_write_st(p, e, n, NULL, 0, 0);
    {
        kosmos2_model *m = NULL;
        CHECK_OK(kosmos2_model_load(d, NULL, &m));
        kosmos2_model_free(m);
    }
    /* truncated files, cut at many offsets */
    for (k = 0; orig && k < 40; k++) {
        size_t cut = k < 12 ? (size_t)k : (size_t)k * (sz / 40);
        FILE *f = fopen(p, "wb");
        kosmos2_model *m = (kosmos2_model *)1;
        int rc;
        fwrite(orig, 1, cut, f);
        fclose(f);
        rc = kosmos2_model_load(d, NULL, &m);
        CHECK(rc < 0 && m == NULL && strstr(kosmos2_last_error(), "model.safetensors"), "truncated at %zu: rc %d '%s'", cut, rc, kosmos2_last_error());
    }
    free(orig);
    test_write_st(p, e, n, NULL, (uint64_t)1 << 63, 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "exceeds the file size");
    test_write_st(p, e, n, NULL, 7, 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "invalid JSON");
    memcpy(e2, e, sizeof e[0] * (size_t)n);
    e2[n - 1].end += 1000000; /* beyond the data section */
    test_write_st(p, e2, n, NULL, 0, 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "outside the data section");
    memcpy(e2, e, sizeof e[0] * (size_t)n);
    i = test_find_st(e2, n, "text_model.model.layer_norm.bias");
    k = test_find_st(e2, n, "text_model.model.layer_norm.weight");
    e2[i].begin = e2[k].begin; e2[i].end = e2[k].end; /* two tensors on the same bytes */
    test_write_st(p, e2, n, NULL, 0, 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "overlap");
    memcpy(e2, e, sizeof e[0] * (size_t)n);
    snprintf(e2[i].shape, sizeof e2[i].shape, "[37]"); /* shape x dtype != byte range */
    test_write_st(p, e2, n, NULL, 0, 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "does not match shape x dtype");
    memcpy(e2, e, sizeof e[0] * (size_t)n);
    snprintf(e2[i].dtype, sizeof e2[i].dtype, "F99");
    test_write_st(p, e2, n, NULL, 0, 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "unknown dtype");
    memcpy(e2, e, sizeof e[0] * (size_t)n);
    snprintf(e2[i].dtype, sizeof e2[i].dtype, "I32");
    test_write_st(p, e2, n, NULL, 0, 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_UNSUPPORTED, "text_model.model.layer_norm.bias' has dtype I32");
    memcpy(e2, e, sizeof e[0] * (size_t)n);
    snprintf(e2[i].shape, sizeof e2[i].shape, "[-36]");
    test_write_st(p, e2, n, NULL, 0, 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "bad shape entry");
    memcpy(e2, e, sizeof e[0] * (size_t)n);
    snprintf(e2[i].shape, sizeof e2[i].shape, "[4294967296,4294967296,4294967296]");
    test_write_st(p, e2, n, NULL, 0, 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "overflows");
    /* a missing tensor, and a mis-shaped one (same bytes, transposed shape) */
    memcpy(e2, e, sizeof e[0] * (size_t)n);
    e2[i] = e2[n - 1];
    test_write_st(p, e2, n - 1, NULL, 0, 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "tensor 'text_model.model.layer_norm.bias' is missing");
    memcpy(e2, e, sizeof e[0] * (size_t)n);
    i = test_find_st(e2, n, "image_to_text_projection.dense.weight");
    snprintf(e2[i].shape, sizeof e2[i].shape, "[30,36]");
    test_write_st(p, e2, n, NULL, 0, 0);
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "has shape [30, 36], config.json implies [36, 30]");
    /* lm_head present: used if well-shaped, refused if not */
    i = test_find_st(e, n, "text_model.model.embed_tokens.weight");
    {
        char extra[256];
        kosmos2_model *m = NULL;
        snprintf(extra, sizeof extra, "\"text_model.lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[2037,36],\"data_offsets\":[%lld,%lld]}", e[i].begin, e[i].end);
        /* the same bytes twice is an overlap; so the lm_head points at the embedding only through the loader */
        test_write_st(p, e, n, extra, 0, 0);
        CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "overlap");
        memcpy(e2, e, sizeof e[0] * (size_t)n);
        snprintf(e2[i].name, sizeof e2[i].name, "text_model.lm_head.weight"); /* only lm_head, no embed_tokens */
        test_write_st(p, e2, n, NULL, 0, 0);
        CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "embed_tokens.weight' is missing");
        (void)m;
    }
}

/* A sharded checkpoint (model.safetensors.index.json + two shards) loads like the single file. */
static void test_loader_shards(void) {
    static test_st e[1024];
    int n = test_st_entries(e, 1024), i;
    const char *d = test_fixture_copy("sharded", 0);
    char p[512], idx[1 << 16];
    size_t o = 0;
    kosmos2_model *m = NULL;
    /* both shards carry the whole data section; each header lists half of the tensors */
    snprintf(p, sizeof p, "%s/a.safetensors", d);
    test_write_st(p, e, n / 2, NULL, 0, 0);
    snprintf(p, sizeof p, "%s/b.safetensors", d);
    test_write_st(p, e + n / 2, n - n / 2, NULL, 0, 0);
    o += (size_t)snprintf(idx + o, sizeof idx - o, "{\"metadata\": {}, \"weight_map\": {");
    for (i = 0; i < n; i++) o += (size_t)snprintf(idx + o, sizeof idx - o, "%s\"%s\": \"%s\"", i ? ", " : "", e[i].name, i < n / 2 ? "a.safetensors" : "b.safetensors");
    snprintf(idx + o, sizeof idx - o, "}}");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    test_write_text(p, idx);
    CHECK_OK(kosmos2_model_load(d, NULL, &m));
    CHECK(m && kosmos2_model_n_tensors(m) == n, "all tensors from two shards");
    kosmos2_model_free(m);
    test_write_text(p, "{\"weight_map\": {\"x\": \"../../etc/passwd\"}}");
    CHECK_LOAD_FAILS(d, KOSMOS2_E_FORMAT, "not a plain file name");
}

/* float32 weights are used in place from the mapped file: no copies. */
static void test_loader_zero_copy(void) {
    kosmos2_model *m = NULL;
    CHECK_OK(kosmos2_model_load("tests/fixtures/tiny_f32", NULL, &m));
    if (!m) return;
    CHECK(m->files[0].mapped, "model.safetensors is memory-mapped");
    CHECK(m->tl[0].fc1.w.data == (const void *)kosmos2__find(m, "text_model.model.layers.0.ffn.fc1.weight")->data, "matrix used in place");
    CHECK(m->tl[1].attn_ln.w == (const float *)(const void *)kosmos2__find(m, "text_model.model.layers.1.self_attn_layer_norm.weight")->data, "vector used in place");
    CHECK(m->lm_head.data == m->embed.data, "lm_head tied to embed_tokens");
    CHECK(m->n_owned == 0, "%d float32 copies made at load", m->n_owned);
    kosmos2_model_free(m);
}

/* The header compiles as C++ too (build/cxx_check.o in `make test`); and mmap vs read agree. */
static void test_loader_no_mmap(void) {
    kosmos2_model *a = NULL, *b = NULL;
    kosmos2_model_params mp = kosmos2_model_default_params();
    kosmos2_tensor_info ta, tb;
    mp.use_mmap = 0;
    CHECK_OK(kosmos2_model_load("tests/fixtures/tiny_bf16", NULL, &a));
    CHECK_OK(kosmos2_model_load("tests/fixtures/tiny_bf16", &mp, &b));
    if (a && b) {
        kosmos2_model_tensor(a, 3, &ta);
        kosmos2_model_tensor(b, 3, &tb);
        CHECK(ta.nbytes == tb.nbytes && memcmp(ta.data, tb.data, ta.nbytes) == 0 && ta.data != tb.data, "mmap and read give the same bytes");
    }
    kosmos2_model_free(a);
    kosmos2_model_free(b);
}

/* Prompt logits of tests/fixtures/tiny_f32 case0 with the model at `path`; [V] malloc'd. */
static float *test_case0_logits(const char *path) {
    kosmos2_model *m = NULL;
    kosmos2_context *ctx = NULL;
    float *px, *logits = NULL;
    size_t n;
    int shape[8], nd;
    kosmos2__json js;
    int32_t ids[128];
    uint8_t mask[128];
    int i, np = 0;
    if (kosmos2_model_load(path, NULL, &m)) return NULL;
    px = test_load_npy("tests/fixtures/tiny_f32/ref/case0/pixel_values.npy", &n, shape, &nd);
    if (!kosmos2__json_load("tests/fixtures/tiny_f32/ref/case0/case.json", &js)) {
        const kosmos2__json *a = kosmos2__json_get(&js, "prompt_ids"), *b = kosmos2__json_get(&js, "image_mask");
        for (i = 0; a && b && i < (int)a->len && i < 128; i++) { ids[i] = (int32_t)a->items[i].num; mask[i] = (uint8_t)b->items[i].num; np++; }
        kosmos2__json_free(&js);
    }
    logits = (float *)malloc((size_t)kosmos2_model_config(m)->vocab_size * 4);
    if (!px || np == 0 || kosmos2_context_new(m, NULL, &ctx) || kosmos2_encode_image(ctx, px, NULL, NULL) ||
        kosmos2_decode(ctx, ids, np, mask, logits)) { free(logits); logits = NULL; }
    free(px);
    kosmos2_context_free(ctx);
    kosmos2_model_free(m);
    return logits;
}

static int test_progress_count(const char *t, const char *type, int done, int total, void *ud) {
    (void)t; (void)type; (void)total;
    *(int *)ud = done;
    return 0;
}

/* GGUF: save -> load gives the same model (f32: bit-identical logits; f16/q: close), and the
 * single file holds config, tokenizer and preprocessing. */
static void test_gguf_roundtrip(void) {
    static const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
    float *ref = test_case0_logits("tests/fixtures/tiny_f32"), *got;
    kosmos2_model *m = NULL, *g = NULL;
    int i, V = 0, calls = 0;
    char path[256];
    mkdir("build", 0755); mkdir("build/tmp", 0755);
    CHECK(ref != NULL, "reference logits");
    CHECK_OK(kosmos2_model_load("tests/fixtures/tiny_f32", NULL, &m));
    if (!m || !ref) { kosmos2_model_free(m); free(ref); return; }
    V = kosmos2_model_config(m)->vocab_size;
    for (i = 0; i < 5; i++) {
        double e;
        snprintf(path, sizeof path, "build/tmp/tiny_%s.gguf", types[i]);
        CHECK_OK(kosmos2_model_save_gguf(m, path, types[i], test_progress_count, &calls));
        CHECK(calls == kosmos2_model_n_tensors(m), "progress called for every tensor (%d)", calls);
        got = test_case0_logits(path);
        CHECK(got != NULL, "%s: %s", path, kosmos2_last_error());
        if (!got) continue;
        e = test_max_rel_err(got, ref, (size_t)V);
        printf("    gguf %-5s prompt logits max rel err vs safetensors f32: %.2e\n", types[i], e);
        if (i == 0) CHECK(memcmp(got, ref, (size_t)V * 4) == 0, "f32 GGUF logits are bit-identical");
        else CHECK(e < (i == 2 ? 3e-2 : 1e-2), "%s: max rel err %.3e", types[i], e);
        free(got);
    }
    CHECK_OK(kosmos2_model_load("build/tmp/tiny_f32.gguf", NULL, &g));
    if (g) {
        CHECK(kosmos2_model_config(g)->text_hidden == 36 && kosmos2_model_preprocess_config(g)->width == 42, "config from the GGUF file");
        CHECK(kosmos2_tokenizer_vocab_size(kosmos2_model_tokenizer(g)) == kosmos2_tokenizer_vocab_size(kosmos2_model_tokenizer(m)), "tokenizer from the GGUF file");
    }
    CHECK(kosmos2_model_save_gguf(m, "build/tmp/x.gguf", "q5_k", NULL, NULL) == KOSMOS2_E_INVALID, "unknown type refused");
    CHECK(kosmos2_model_save_gguf(m, "build/no-such-dir/x.gguf", "f16", NULL, NULL) == KOSMOS2_E_IO, "unwritable path: %s", kosmos2_last_error());
    kosmos2_model_free(g);
    kosmos2_model_free(m);
    free(ref);
}

/* Hostile GGUF files: truncated anywhere, bad counts, alignment, offsets, types. */
static void test_gguf_hostile(void) {
    size_t sz, k;
    unsigned char *orig = test_read_file("build/tmp/tiny_q8_0.gguf", &sz), *b;
    int fails = 0, cases = 0;
    CHECK(orig != NULL, "run test_gguf_roundtrip first");
    if (!orig) return;
    b = (unsigned char *)malloc(sz);
    for (k = 0; k < 300; k++) { /* truncations */
        size_t cut = k < 100 ? k : (k - 100) * (sz / 200);
        FILE *f = fopen("build/tmp/bad.gguf", "wb");
        kosmos2_model *m = (kosmos2_model *)1;
        fwrite(orig, 1, cut, f);
        fclose(f);
        cases++;
        fails += kosmos2_model_load("build/tmp/bad.gguf", NULL, &m) < 0 && m == NULL;
    }
    for (k = 0; k < 200; k++) { /* bytes flipped in the header and tensor infos */
        FILE *f;
        kosmos2_model *m = NULL;
        size_t at = 4 + (k * 7919) % (sz < 60000 ? sz - 4 : 60000);
        memcpy(b, orig, sz);
        b[at] ^= (unsigned char)(1 + k % 255);
        f = fopen("build/tmp/bad.gguf", "wb");
        fwrite(b, 1, sz, f);
        fclose(f);
        if (kosmos2_model_load("build/tmp/bad.gguf", NULL, &m) == 0) kosmos2_model_free(m); /* may still be valid: no crash is the test */
    }
    {   /* absurd counts, a huge tensor offset */
        FILE *f;
        kosmos2_model *m = (kosmos2_model *)1;
        int rc;
        memcpy(b, orig, sz);
        memset(b + 8, 0xff, 8); /* n_tensors = 2^64-1 */
        f = fopen("build/tmp/bad.gguf", "wb"); fwrite(b, 1, sz, f); fclose(f);
        rc = kosmos2_model_load("build/tmp/bad.gguf", NULL, &m);
        CHECK(rc == KOSMOS2_E_FORMAT && strstr(kosmos2_last_error(), "absurd counts"), "huge tensor count: %s", kosmos2_last_error());
        memcpy(b, orig, sz);
        b[4] = 7; /* version 7 */
        f = fopen("build/tmp/bad.gguf", "wb"); fwrite(b, 1, sz, f); fclose(f);
        rc = kosmos2_model_load("build/tmp/bad.gguf", NULL, &m);
        CHECK(rc == KOSMOS2_E_UNSUPPORTED && strstr(kosmos2_last_error(), "version 7"), "version: %s", kosmos2_last_error());
    }
    CHECK(fails == cases, "%d of %d truncated GGUF files failed cleanly", fails, cases);
    free(b);
    free(orig);
}

/* ---- a random checkpoint whose matrices can be block-quantized (rows of 64/128) ---- */
typedef struct { char name[128]; int ndim; int64_t shape[4]; } test_tensor_spec;

/* Every tensor of the architecture for config c (the names kosmos2__bind_weights asks for). */
static int test_arch_tensors(const kosmos2_config *c, test_tensor_spec *t, int cap) {
    int n = 0, i, j;
    int64_t Dv = c->vision_hidden, Fv = c->vision_intermediate, D = c->text_hidden, F = c->ffn_dim, V = c->vocab_size;
    int64_t N = (int64_t)(c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1;
    static const char *proj[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
#define T_ADD(nd, a, b, c2, d, ...) do { if (n < cap) { snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__); t[n].ndim = nd; \
    t[n].shape[0] = a; t[n].shape[1] = b; t[n].shape[2] = c2; t[n].shape[3] = d; n++; } } while (0)
    T_ADD(4, Dv, 3, c->patch_size, c->patch_size, "vision_model.model.embeddings.patch_embedding.weight");
    T_ADD(1, Dv, 0, 0, 0, "vision_model.model.embeddings.class_embedding");
    T_ADD(2, N, Dv, 0, 0, "vision_model.model.embeddings.position_embedding.weight");
    T_ADD(1, Dv, 0, 0, 0, "vision_model.model.pre_layrnorm.weight"); T_ADD(1, Dv, 0, 0, 0, "vision_model.model.pre_layrnorm.bias");
    T_ADD(1, Dv, 0, 0, 0, "vision_model.model.post_layernorm.weight"); T_ADD(1, Dv, 0, 0, 0, "vision_model.model.post_layernorm.bias");
    for (i = 0; i < c->vision_layers; i++) {
        for (j = 1; j <= 2; j++) {
            T_ADD(1, Dv, 0, 0, 0, "vision_model.model.encoder.layers.%d.layer_norm%d.weight", i, j);
            T_ADD(1, Dv, 0, 0, 0, "vision_model.model.encoder.layers.%d.layer_norm%d.bias", i, j);
        }
        for (j = 0; j < 4; j++) {
            T_ADD(2, Dv, Dv, 0, 0, "vision_model.model.encoder.layers.%d.self_attn.%s.weight", i, proj[j]);
            T_ADD(1, Dv, 0, 0, 0, "vision_model.model.encoder.layers.%d.self_attn.%s.bias", i, proj[j]);
        }
        T_ADD(2, Fv, Dv, 0, 0, "vision_model.model.encoder.layers.%d.mlp.fc1.weight", i); T_ADD(1, Fv, 0, 0, 0, "vision_model.model.encoder.layers.%d.mlp.fc1.bias", i);
        T_ADD(2, Dv, Fv, 0, 0, "vision_model.model.encoder.layers.%d.mlp.fc2.weight", i); T_ADD(1, Dv, 0, 0, 0, "vision_model.model.encoder.layers.%d.mlp.fc2.bias", i);
    }
    T_ADD(2, D, Dv, 0, 0, "image_to_text_projection.dense.weight"); T_ADD(1, D, 0, 0, 0, "image_to_text_projection.dense.bias");
    T_ADD(2, c->latent_query_num, D, 0, 0, "image_to_text_projection.latent_query");
    for (j = 0; j < 4; j++) {
        T_ADD(2, D, D, 0, 0, "image_to_text_projection.x_attn.%s.weight", proj[j]);
        T_ADD(1, D, 0, 0, 0, "image_to_text_projection.x_attn.%s.bias", proj[j]);
    }
    T_ADD(2, V, D, 0, 0, "text_model.model.embed_tokens.weight");
    T_ADD(1, D, 0, 0, 0, "text_model.model.layer_norm.weight"); T_ADD(1, D, 0, 0, 0, "text_model.model.layer_norm.bias");
    for (i = 0; i < c->text_layers; i++) {
        static const char *lns[] = {"self_attn_layer_norm", "self_attn.inner_attn_ln", "final_layer_norm"};
        for (j = 0; j < 3; j++) {
            T_ADD(1, D, 0, 0, 0, "text_model.model.layers.%d.%s.weight", i, lns[j]);
            T_ADD(1, D, 0, 0, 0, "text_model.model.layers.%d.%s.bias", i, lns[j]);
        }
        T_ADD(1, F, 0, 0, 0, "text_model.model.layers.%d.ffn.ffn_layernorm.weight", i); T_ADD(1, F, 0, 0, 0, "text_model.model.layers.%d.ffn.ffn_layernorm.bias", i);
        for (j = 0; j < 4; j++) {
            T_ADD(2, D, D, 0, 0, "text_model.model.layers.%d.self_attn.%s.weight", i, proj[j]);
            T_ADD(1, D, 0, 0, 0, "text_model.model.layers.%d.self_attn.%s.bias", i, proj[j]);
        }
        T_ADD(2, F, D, 0, 0, "text_model.model.layers.%d.ffn.fc1.weight", i); T_ADD(1, F, 0, 0, 0, "text_model.model.layers.%d.ffn.fc1.bias", i);
        T_ADD(2, D, F, 0, 0, "text_model.model.layers.%d.ffn.fc2.weight", i); T_ADD(1, D, 0, 0, 0, "text_model.model.layers.%d.ffn.fc2.bias", i);
    }
#undef T_ADD
    return n;
}

/* Write a float32 checkpoint directory with random weights (LayerNorm weights ~1, biases small,
 * matrices ~N(0, 1/fan_in)) for the config text `config_json`, reusing tiny_f32's tokenizer. */
static int test_make_random_checkpoint(const char *dir, const char *config_json, unsigned seed) {
    static test_tensor_spec t[512];
    kosmos2__json js;
    kosmos2_config c;
    char p[512], *hdr;
    size_t o = 0, cap = 1 << 18, hl;
    int64_t off = 0;
    int n, i, d;
    FILE *f;
    uint64_t rng = seed * 2654435761u + 1;
    mkdir("build", 0755); mkdir("build/tmp", 0755); mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/config.json", dir); test_write_text(p, config_json);
    snprintf(p, sizeof p, "%s/sentencepiece.bpe.model", dir); test_copy_file("tests/fixtures/tiny_f32/sentencepiece.bpe.model", p);
    if (kosmos2__json_parse(config_json, strlen(config_json), &js)) return -1;
    if (kosmos2__config_from_json(&js, &c)) { kosmos2__json_free(&js); return -1; }
    kosmos2__json_free(&js);
    n = test_arch_tensors(&c, t, 512);
    hdr = (char *)malloc(cap);
    o += (size_t)snprintf(hdr + o, cap - o, "{");
    for (i = 0; i < n; i++) {
        int64_t cnt = 1;
        for (d = 0; d < t[i].ndim; d++) cnt *= t[i].shape[d];
        o += (size_t)snprintf(hdr + o, cap - o, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", i ? "," : "", t[i].name);
        for (d = 0; d < t[i].ndim; d++) o += (size_t)snprintf(hdr + o, cap - o, d ? ",%lld" : "%lld", (long long)t[i].shape[d]);
        o += (size_t)snprintf(hdr + o, cap - o, "],\"data_offsets\":[%lld,%lld]}", (long long)off, (long long)(off + cnt * 4));
        off += cnt * 4;
    }
    o += (size_t)snprintf(hdr + o, cap - o, "}");
    while (o % 8) hdr[o++] = ' ';
    hl = o;
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    f = fopen(p, "wb");
    if (!f) { free(hdr); return -1; }
    for (d = 0; d < 8; d++) fputc((int)((hl >> (8 * d)) & 255), f);
    fwrite(hdr, 1, hl, f);
    for (i = 0; i < n; i++) {
        int64_t cnt = 1, k;
        double fan_in = t[i].ndim >= 2 ? (double)(cnt = 1, t[i].shape[t[i].ndim - 1]) : 1.0, scale;
        int is_norm_w = strstr(t[i].name, "norm") != NULL && strstr(t[i].name, ".weight") != NULL;
        int is_ln = strstr(t[i].name, "layrnorm") || strstr(t[i].name, "norm") || strstr(t[i].name, "_ln");
        for (d = 0; d < t[i].ndim; d++) cnt *= t[i].shape[d];
        if (t[i].ndim == 4) fan_in = (double)(t[i].shape[1] * t[i].shape[2] * t[i].shape[3]);
        scale = t[i].ndim >= 2 ? 1.0 / sqrt(fan_in) : 0.1;
        if (strstr(t[i].name, "embed_tokens") || strstr(t[i].name, "embedding") || strstr(t[i].name, "latent_query")) scale = 0.5;
        if (strstr(t[i].name, "dense.weight")) scale *= 20;
        for (k = 0; k < cnt; k++) {
            double u1, u2, g;
            float v;
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; u1 = ((rng >> 11) + 0.5) / 9007199254740992.0;
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; u2 = ((rng >> 11) + 0.5) / 9007199254740992.0;
            g = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
            v = (float)((is_norm_w || (is_ln && strstr(t[i].name, ".weight"))) ? 1.0 + 0.2 * g : g * scale);
            fwrite(&v, 4, 1, f);
        }
    }
    fclose(f);
    free(hdr);
    return 0;
}

/* Relative RMS error of a against b. */
static double test_rel_rms(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    int i;
    for (i = 0; i < n; i++) { num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); den += (double)b[i] * b[i]; }
    return sqrt(num / (den > 0 ? den : 1));
}

/* A random model large enough for the kernels' parallel paths, with rows that can be quantized. */
static const char *test_random_q_config =
    "{\"model_type\": \"kosmos-2\", \"latent_query_num\": 64,"
    " \"text_config\": {\"vocab_size\": 2037, \"embed_dim\": 128, \"layers\": 2, \"attention_heads\": 2, \"ffn_dim\": 256, \"no_repeat_ngram_size\": 3},"
    " \"vision_config\": {\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"image_size\": 28, \"patch_size\": 14}}";

/* q8_0 / q4_0 prompt logits stay close to float32 on a random model whose rows are multiples of 32
 * (the bound the speed issue sets for the full-size model: q8_0 < 1%, q4_0 < 5% relative RMS).
 * q4_0 files hold the q4_0r8 layout (kosmos2.h's own GGUF type), q4_0_ggml files ggml's rows,
 * repacked at load (mapped or read whole): the same matrices and the same logits, bit for bit. */
static void test_gguf_quantized_accuracy(void) {
    const char *cfg = test_random_q_config;
    static const char *types[] = {"f32", "q8_0", "q4_0", "q4_0_ggml", "q4_0_ggml", "q8_0_ggml"};
    static const char *stored[] = {"F32", "Q8_0R8", "Q4_0R8", "Q4_0", "Q4_0", "Q8_0"};
    float *logits[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    kosmos2_model *m = NULL;
    int i, V = 2037;
    size_t fsz[6] = {0, 0, 0, 0, 0, 0};
    CHECK(test_make_random_checkpoint("build/tmp/random_q", cfg, 7) == 0, "random checkpoint");
    CHECK_OK(kosmos2_model_load("build/tmp/random_q", NULL, &m));
    if (!m) return;
    for (i = 0; i < 6; i++) {
        char path[128];
        kosmos2_model *g = NULL;
        kosmos2_model_params mp = kosmos2_model_default_params();
        kosmos2_context *ctx = NULL;
        kosmos2_image img;
        float px[3 * 28 * 28];
        int32_t ids[128];
        uint8_t mask[128];
        int n, k;
        unsigned char rgb[40 * 30 * 3];
        snprintf(path, sizeof path, "build/tmp/random_%s.gguf", types[i]);
        CHECK_OK(kosmos2_model_save_gguf(m, path, types[i], NULL, NULL));
        mp.use_mmap = i != 4;
        CHECK_OK(kosmos2_model_load(path, &mp, &g));
        if (!g) continue;
        {
            unsigned char *bytes = test_read_file(path, &fsz[i]);
            const kosmos2__tensor *t = kosmos2__find(g, "text_model.model.layers.0.ffn.fc1.weight");
            free(bytes);
            const kosmos2__dtype use = i == 1 || i == 5 ? KOSMOS2__Q8_0R8 : KOSMOS2__Q4_0R8; /* interleaved either way */
            if (i >= 1)
                CHECK(t && !strcmp(t->dtype, stored[i]) && g->tl[0].fc1.w.dtype == use && g->vl[1].fc2.w.dtype == use &&
                          g->dense.w.dtype == KOSMOS2__Q8_0R8,
                      "%s: stored %s, in use %s", types[i], t ? t->dtype : "?", kosmos2__dtype_name(g->tl[0].fc1.w.dtype));
        }
        for (k = 0; k < (int)sizeof rgb; k++) rgb[k] = (unsigned char)((k * 37) ^ (k >> 5));
        CHECK_OK(kosmos2_image_from_pixels(rgb, 40, 30, 3, 0, &img));
        CHECK_OK(kosmos2_image_preprocess(&img, kosmos2_model_preprocess_config(g), px));
        n = kosmos2_prompt_ids(kosmos2_model_tokenizer(g), "<grounding>An image of", 64, ids, mask, 128);
        logits[i] = (float *)malloc((size_t)V * 4);
        CHECK(n > 64 && n < 128, "prompt");
        CHECK_OK(kosmos2_context_new(g, NULL, &ctx));
        CHECK_OK(kosmos2_encode_image(ctx, px, NULL, NULL));
        CHECK_OK(kosmos2_decode(ctx, ids, n, mask, logits[i]));
        kosmos2_context_free(ctx);
        kosmos2_image_free(&img);
        kosmos2_model_free(g);
    }
    CHECK(fsz[2] > 0 && fsz[2] == fsz[3] && fsz[1] > 0 && fsz[1] == fsz[5], "r8 and ggml files of one size (%zu, %zu; %zu, %zu)", fsz[2], fsz[3], fsz[1], fsz[5]);
    CHECK(logits[2] && logits[3] && logits[4] && !memcmp(logits[2], logits[3], (size_t)V * 4) && !memcmp(logits[2], logits[4], (size_t)V * 4),
          "q4_0r8 from the file == q4_0 repacked at load (mapped and read whole), bit for bit");
    CHECK(logits[1] && logits[5] && !memcmp(logits[1], logits[5], (size_t)V * 4), "q8_0r8 from the file == q8_0 repacked at load, bit for bit");
    if (logits[0] && logits[1] && logits[2]) {
        double e8 = test_rel_rms(logits[1], logits[0], V), e4 = test_rel_rms(logits[2], logits[0], V);
        printf("    prompt logits relative RMS error vs f32: q8_0 %.3f%%  q4_0 %.3f%%\n", 100 * e8, 100 * e4);
        CHECK(e8 < 0.01, "q8_0 relative RMS error %.4f", e8);
        CHECK(e4 < 0.05, "q4_0 relative RMS error %.4f", e4);
        CHECK(e8 > 0 && e4 > e8, "quantization changed the logits (q4_0 more than q8_0)");
    }
    for (i = 0; i < 6; i++) free(logits[i]);
    kosmos2_model_free(m);
    {   /* hostile r8 files: truncated anywhere, every tensor's type set to the other r8 type */
        size_t sz, k, at;
        unsigned char *orig = test_read_file("build/tmp/random_q4_0.gguf", &sz), *b;
        int fails = 0, cases = 0, swapped = 0, refused = 0;
        CHECK(orig != NULL, "random_q4_0.gguf");
        if (!orig) return;
        b = (unsigned char *)malloc(sz);
        for (k = 0; k < 60; k++) {
            kosmos2_model *g = (kosmos2_model *)1;
            FILE *f = fopen("build/tmp/bad.gguf", "wb");
            fwrite(orig, 1, k * (sz / 60) + k % 7, f);
            fclose(f);
            cases++;
            fails += kosmos2_model_load("build/tmp/bad.gguf", NULL, &g) < 0 && g == NULL;
        }
        CHECK(fails == cases, "%d of %d truncated q4_0r8 files failed cleanly", fails, cases);
        memcpy(b, orig, sz);
        for (at = 0; at + 4 <= sz; at++) /* the u32 type 4098 (0x1002) of each tensor info */
            if (b[at] == 0x02 && b[at + 1] == 0x10 && b[at + 2] == 0 && b[at + 3] == 0) { b[at] = 0x08; swapped++; }
        {
            FILE *f = fopen("build/tmp/bad.gguf", "wb");
            kosmos2_model *g = (kosmos2_model *)1;
            fwrite(b, 1, sz, f);
            fclose(f);
            refused = kosmos2_model_load("build/tmp/bad.gguf", NULL, &g) == KOSMOS2_E_FORMAT && g == NULL;
            CHECK(swapped > 10 && refused, "q4_0r8 tensors relabelled q8_0r8 (%d): refused (%s)", swapped, kosmos2_last_error());
        }
        free(b);
        free(orig);
    }
}

static void tests_loader(void) {
    RUN(test_json_parser);
    RUN(test_loader_checksums);
    RUN(test_loader_bad_directory);
    RUN(test_loader_bad_safetensors);
    RUN(test_loader_shards);
    RUN(test_loader_no_mmap);
    RUN(test_loader_zero_copy);
    RUN(test_gguf_roundtrip);
    RUN(test_gguf_hostile);
    RUN(test_gguf_quantized_accuracy);
}
