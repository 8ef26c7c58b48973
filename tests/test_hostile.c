/* tests/test_hostile.c - hostile files: the fixture checkpoints (tests/fixtures/tiny_f32 and tiny_bf16)
 * and GGUF files made from them with kosmos2_model_save_gguf, damaged in generated ways:
 * truncated at many offsets, header bytes broken, shapes / offsets / dtypes that lie, absurd sizes
 * (header length 2^63, tensor counts in the billions, 65535 layers), GGUF files with bad alignment,
 * counts, types and offsets; config.json, preprocessor_config.json and the SentencePiece model
 * truncated or absurd. Every case is a load through kosmos2_model_load: it must fail with a
 * KOSMOS2_E_* code, a message and *out == NULL (where the damage makes the file invalid), or load
 * (where it cannot be detected, e.g. a flipped weight byte), and never crash. Run it under
 * build/test-asan (LeakSanitizer) and build/test-ubsan: `build/test-asan hostile`.
 * The files are written under build/tmp/hostile/. Nothing here compares numbers: the reference is
 * "an error, not a crash". */
#include <sys/stat.h>
#include <dirent.h>
#include <unistd.h>

/* The libFuzzer targets, without their LLVMFuzzerTestOneInput: test_hostile_fuzz_replay runs each
 * over its committed seeds and regression inputs (tests/fuzz/corpus/, tests/fuzz/regressions/). */
#define FUZZ_NO_MAIN
#include "fuzz/fuzz_json.c"
#include "fuzz/fuzz_safetensors.c"
#include "fuzz/fuzz_gguf.c"
#include "fuzz/fuzz_spm.c"
#include "fuzz/fuzz_tokenize.c"
#include "fuzz/fuzz_grounding.c"
#include "fuzz/fuzz_prompt.c"
#include "fuzz/fuzz_image.c"

typedef struct {
    int cases;      /* loads attempted */
    int failed;     /* failed cleanly (code, message, NULL model) */
    int loaded;     /* loaded (only where allowed) */
    int must_fail;  /* cases whose damage makes the file invalid (all of them must fail) */
} hostile_tally;

static hostile_tally hostile__t;

/* Load `path` (a directory or a .gguf file) and check the outcome. must_fail: the damage makes the
 * file invalid, so loading has to fail. Reading alternates between mmap and plain reads. */
static int hostile_load(const char *what, const char *path, int must_fail) {
    kosmos2_model_params mp = kosmos2_model_default_params();
    kosmos2_model *m = (kosmos2_model *)1;
    int rc;
    mp.use_mmap = hostile__t.cases % 2 == 0;
    kosmos2__clear_error();
    rc = kosmos2_model_load(path, &mp, &m);
    hostile__t.cases++;
    hostile__t.must_fail += must_fail != 0;
    if (rc < 0) {
        CHECK(rc >= KOSMOS2_E_UNSUPPORTED && m == NULL && kosmos2_last_error()[0] != 0, "%s: rc %d, model %p, message '%s'", what, rc, (void *)m, kosmos2_last_error());
        hostile__t.failed++;
        return rc;
    }
    CHECK(rc == 0 && m != NULL && m != (kosmos2_model *)1, "%s: rc %d", what, rc);
    CHECK(!must_fail, "%s: loaded although the file is invalid", what);
    hostile__t.loaded++;
    if (m && m != (kosmos2_model *)1) kosmos2_model_free(m);
    return 0;
}

static void hostile_mkdirs(void) {
    mkdir("build", 0755); mkdir("build/tmp", 0755); mkdir("build/tmp/hostile", 0755);
}

static void hostile_write(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

/* build/tmp/hostile/<name>: a copy of fixture `fx` (0 tiny_f32, 1 tiny_bf16) whose file `skip` (if
 * not NULL) is left for the caller to write. Returns the directory (static buffer). */
static const char *hostile_dir(const char *name, int fx, const char *skip) {
    static char dir[256];
    static const char *files[] = {"config.json", "preprocessor_config.json", "sentencepiece.bpe.model", "model.safetensors"};
    char a[512], b[512];
    int i;
    hostile_mkdirs();
    snprintf(dir, sizeof dir, "build/tmp/hostile/%s", name);
    mkdir(dir, 0755);
    for (i = 0; i < 4; i++) {
        size_t n;
        unsigned char *buf;
        if (skip && !strcmp(skip, files[i])) continue;
        snprintf(a, sizeof a, "tests/fixtures/%s/%s", fx ? "tiny_bf16" : "tiny_f32", files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        buf = test_read_file(a, &n);
        CHECK(buf != NULL, "fixture %s missing", a);
        if (buf) hostile_write(b, buf, n);
        free(buf);
    }
    return dir;
}

static const char *hostile_fx_name(int fx) { return fx ? "tiny_bf16" : "tiny_f32"; }

/* ---- safetensors ------------------------------------------------------------------------- */
/* One header entry, as text, so that it can lie in any way. */
typedef struct { char name[200]; char dtype[24]; char shape[96]; char offsets[96]; } hostile_st;

typedef struct {
    unsigned char *file;  /* the fixture's model.safetensors */
    size_t size, hlen;    /* file size, header length */
    hostile_st *e;        /* [n] the truthful table */
    int n;
} hostile_stfile;

/* Read the fixture's safetensors file and its table (through the library's own parser). */
static int hostile_st_read(int fx, hostile_stfile *s) {
    char path[256];
    kosmos2__file f;
    kosmos2__tensor *t = NULL;
    int i, d, n = 0, rc;
    memset(s, 0, sizeof *s);
    snprintf(path, sizeof path, "tests/fixtures/%s/model.safetensors", hostile_fx_name(fx));
    s->file = test_read_file(path, &s->size);
    if (!s->file || s->size < 8) return -1;
    for (i = 7; i >= 0; i--) s->hlen = (s->hlen << 8) | s->file[i];
    f.data = s->file; f.size = s->size; f.mapped = 0;
    rc = kosmos2__safetensors_parse(path, &f, 0, &t, &n);
    s->e = (hostile_st *)calloc((size_t)n + 1, sizeof *s->e);
    for (i = 0; rc == 0 && i < n; i++) {
        size_t o = 0, b = (size_t)(t[i].data - (s->file + 8 + s->hlen));
        snprintf(s->e[i].name, sizeof s->e[i].name, "%s", t[i].name);
        snprintf(s->e[i].dtype, sizeof s->e[i].dtype, "\"%s\"", t[i].dtype);
        o += (size_t)snprintf(s->e[i].shape, sizeof s->e[i].shape, "[");
        for (d = 0; d < t[i].ndim; d++) o += (size_t)snprintf(s->e[i].shape + o, sizeof s->e[i].shape - o, d ? ",%lld" : "%lld", (long long)t[i].shape[d]);
        snprintf(s->e[i].shape + o, sizeof s->e[i].shape - o, "]");
        snprintf(s->e[i].offsets, sizeof s->e[i].offsets, "[%zu,%zu]", b, b + t[i].nbytes);
    }
    for (i = 0; i < n; i++) free(t[i].name);
    free(t);
    s->n = rc == 0 ? n : 0;
    return rc;
}

/* Write <dir>/model.safetensors: header from e[0..n-1] (+ `extra` raw members), data = the fixture's
 * data section. hlen_override: write that length instead; cut: truncate the file to that many bytes. */
static void hostile_st_write(const char *dir, const hostile_stfile *s, const hostile_st *e, int n, const char *extra,
                             const uint64_t *hlen_override, size_t cut) {
    size_t cap = 1 << 20, o = 0, data = s->size - 8 - s->hlen, total;
    char *h = (char *)malloc(cap);
    unsigned char *out;
    char path[512];
    int i;
    o += (size_t)snprintf(h + o, cap - o, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (i = 0; i < n; i++)
        o += (size_t)snprintf(h + o, cap - o, ",\"%s\":{\"dtype\":%s,\"shape\":%s,\"data_offsets\":%s}", e[i].name, e[i].dtype, e[i].shape, e[i].offsets);
    if (extra) o += (size_t)snprintf(h + o, cap - o, ",%s", extra);
    o += (size_t)snprintf(h + o, cap - o, "}");
    while (o % 8) h[o++] = ' ';
    total = 8 + o + data;
    out = (unsigned char *)malloc(total);
    for (i = 0; i < 8; i++) out[i] = (unsigned char)((hlen_override ? *hlen_override : (uint64_t)o) >> (8 * i));
    memcpy(out + 8, h, o);
    memcpy(out + 8 + o, s->file + 8 + s->hlen, data);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    hostile_write(path, out, cut && cut < total ? cut : total);
    free(out);
    free(h);
}

static int hostile_st_find(const hostile_stfile *s, const char *name) {
    int i;
    for (i = 0; i < s->n; i++) if (!strcmp(s->e[i].name, name)) return i;
    return 0;
}

/* The fixture file, cut at many offsets: in the length prefix, the header and the data section. */
static void test_hostile_st_truncated(void) {
    int fx, k;
    for (fx = 0; fx < 2; fx++) {
        hostile_stfile s;
        const char *d = hostile_dir("st_cut", fx, "model.safetensors");
        char path[512], what[1024];
        if (hostile_st_read(fx, &s) != 0) { CHECK(0, "fixture table: %s", kosmos2_last_error()); continue; }
        snprintf(path, sizeof path, "%s/model.safetensors", d);
        for (k = 0; k < 60; k++) {
            size_t cut = k < 10 ? (size_t)k                                              /* in the length */
                       : k < 35 ? 8 + (s.hlen * (size_t)(k - 10)) / 25                    /* in the header */
                       : 8 + s.hlen + ((s.size - 8 - s.hlen) * (size_t)(k - 35 + 1)) / 26 - 1; /* in the data */
            hostile_write(path, s.file, cut);
            snprintf(what, sizeof what, "%s model.safetensors cut at %zu of %zu", hostile_fx_name(fx), cut, s.size);
            hostile_load(what, d, 1);
        }
        free(s.file); free(s.e);
    }
}

/* Header bytes broken: structural JSON characters replaced, and digits changed (in shapes, offsets,
 * names and dtypes every digit matters, so each change must be detected). */
static void test_hostile_st_header_bytes(void) {
    int fx;
    for (fx = 0; fx < 2; fx++) {
        hostile_stfile s;
        const char *d = hostile_dir("st_bytes", fx, "model.safetensors");
        char path[512], what[1024];
        size_t pos[2][2048], np[2] = {0, 0}, i;
        int kind;
        unsigned char *b;
        if (hostile_st_read(fx, &s) != 0) { CHECK(0, "fixture table"); continue; }
        snprintf(path, sizeof path, "%s/model.safetensors", d);
        for (i = 8; i < 8 + s.hlen; i++) {
            unsigned char c = s.file[i];
            if ((c == '{' || c == '}' || c == '[' || c == ']' || c == ':' || c == ',' || c == '"') && np[0] < 2048) pos[0][np[0]++] = i;
            if (c >= '0' && c <= '9' && np[1] < 2048) pos[1][np[1]++] = i;
        }
        b = (unsigned char *)malloc(s.size);
        for (kind = 0; kind < 2; kind++) {
            int k;
            for (k = 0; k < 30 && np[kind]; k++) {
                size_t at = pos[kind][(np[kind] * (size_t)k) / 30];
                memcpy(b, s.file, s.size);
                if (kind == 0) b[at] = (b[at] == '"') ? '\'' : 'x';
                else b[at] = (unsigned char)('0' + (b[at] - '0' + 1 + k % 8) % 10);
                hostile_write(path, b, s.size);
                snprintf(what, sizeof what, "%s header byte %zu '%c' -> '%c'", hostile_fx_name(fx), at, s.file[at], b[at]);
                hostile_load(what, d, 1);
            }
        }
        free(b); free(s.file); free(s.e);
    }
}

/* Tables that lie: shapes, offsets, dtypes, header lengths, odd JSON; and absurd sizes. */
static void test_hostile_st_lies(void) {
    /* {field, value}: field 0 shape, 1 offsets, 2 dtype, 3 the whole entry */
    static const struct { int field; const char *value; } lies[] = {
        {0, "[37]"}, {0, "[-1]"}, {0, "[1.5]"}, {0, "[1e300]"}, {0, "[4294967296,4294967296,4294967296]"},
        {0, "[1,1,1,1,1,1,1,1,1]"}, {0, "36"}, {0, "[]"}, {0, "[\"36\"]"}, {0, "[36,0]"}, {0, "[0]"},
        {0, "[9223372036854775807]"}, {0, "[18446744073709551616]"}, {0, "null"},
        {1, "[144,0]"}, {1, "[-4,140]"}, {1, "[0,1e30]"}, {1, "[0]"}, {1, "[0,144,288]"}, {1, "[\"0\",\"144\"]"},
        {1, "[0.5,144.5]"}, {1, "[18446744073709551615,18446744073709551615]"}, {1, "[9e18,9e18]"}, {1, "{}"},
        {2, "\"F99\""}, {2, "\"\""}, {2, "32"}, {2, "\"F8_E4M3\""}, {2, "\"I32\""}, {2, "\"F64\""}, {2, "\"F32\\u0000\""},
        {2, "\"BF16BF16BF16BF16BF16\""}, {2, "null"},
        {3, "5"}, {3, "[]"}, {3, "{}"}, {3, "\"x\""},
    };
    int fx;
    for (fx = 0; fx < 2; fx++) {
        hostile_stfile s;
        const char *d = hostile_dir("st_lies", fx, "model.safetensors");
        hostile_st *e;
        char what[1024], extra[20000];
        size_t k;
        int i, j, victim, other;
        if (hostile_st_read(fx, &s) != 0) { CHECK(0, "fixture table"); continue; }
        e = (hostile_st *)malloc(sizeof *e * ((size_t)s.n + 1));
        victim = hostile_st_find(&s, "text_model.model.layer_norm.bias");
        other = hostile_st_find(&s, "text_model.model.layer_norm.weight");
        /* the truthful table loads: the writer is right */
        hostile_st_write(d, &s, s.e, s.n, NULL, NULL, 0);
        hostile_load("truthful table", d, 0);
        CHECK(hostile__t.loaded > 0, "%s: the rewritten checkpoint does not load: %s", hostile_fx_name(fx), kosmos2_last_error());
        for (k = 0; k < sizeof lies / sizeof lies[0]; k++) {
            memcpy(e, s.e, sizeof *e * (size_t)s.n);
            if (lies[k].field == 0) snprintf(e[victim].shape, sizeof e[victim].shape, "%s", lies[k].value);
            if (lies[k].field == 1) snprintf(e[victim].offsets, sizeof e[victim].offsets, "%s", lies[k].value);
            if (lies[k].field == 2) snprintf(e[victim].dtype, sizeof e[victim].dtype, "%s", lies[k].value);
            if (lies[k].field == 3) { /* the entry itself is not an object */
                snprintf(extra, sizeof extra, "\"%s\":%s", e[victim].name, lies[k].value);
                e[victim] = e[s.n - 1];
                hostile_st_write(d, &s, e, s.n - 1, extra, NULL, 0);
            } else hostile_st_write(d, &s, e, s.n, NULL, NULL, 0);
            snprintf(what, sizeof what, "%s: %s of the tensor = %s", hostile_fx_name(fx), lies[k].field == 0 ? "shape" : lies[k].field == 1 ? "data_offsets" : lies[k].field == 2 ? "dtype" : "entry", lies[k].value);
            hostile_load(what, d, 1);
        }
        /* offsets beyond the data section, overlapping another tensor, swapped with another tensor's */
        memcpy(e, s.e, sizeof *e * (size_t)s.n);
        snprintf(e[victim].offsets, sizeof e[victim].offsets, "[%zu,%zu]", s.size, s.size + 144);
        hostile_st_write(d, &s, e, s.n, NULL, NULL, 0);
        hostile_load("offsets past the data", d, 1);
        memcpy(e, s.e, sizeof *e * (size_t)s.n);
        memcpy(e[victim].offsets, e[other].offsets, sizeof e[victim].offsets);
        hostile_st_write(d, &s, e, s.n, NULL, NULL, 0);
        hostile_load("two tensors on the same bytes", d, 1);
        /* every tensor's shape transposed or one dimension doubled (offsets kept) */
        for (i = 0, j = 0; i < s.n && j < 24; i += 3) {
            char *comma = strchr(s.e[i].shape, ',');
            memcpy(e, s.e, sizeof *e * (size_t)s.n);
            if (comma && j % 2 == 0) { /* [a,b] -> [b,a] is the same size: the binding must catch it (unless square) */
                long long a = atoll(s.e[i].shape + 1), b2 = atoll(comma + 1);
                if (a == b2 || strchr(comma + 1, ',')) continue;
                snprintf(e[i].shape, sizeof e[i].shape, "[%lld,%lld]", b2, a);
            } else {
                long long a = atoll(s.e[i].shape + 1);
                snprintf(e[i].shape, sizeof e[i].shape, "[%lld%s", 2 * a, strchr(s.e[i].shape, ',') ? strchr(s.e[i].shape, ',') : "]");
            }
            hostile_st_write(d, &s, e, s.n, NULL, NULL, 0);
            snprintf(what, sizeof what, "%s: %s shape %s -> %s", hostile_fx_name(fx), s.e[i].name, s.e[i].shape, e[i].shape);
            hostile_load(what, d, 1);
            j++;
        }
        /* a tensor missing; one with an absurd name length; a duplicate key */
        memcpy(e, s.e, sizeof *e * (size_t)s.n);
        e[victim] = e[s.n - 1];
        hostile_st_write(d, &s, e, s.n - 1, NULL, NULL, 0);
        hostile_load("a tensor missing", d, 1);
        memset(extra, 'n', 16000); memcpy(extra, "\"", 1);
        snprintf(extra + 16000, sizeof extra - 16000, "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}");
        hostile_st_write(d, &s, s.e, s.n, extra, NULL, 0);
        hostile_load("16000-byte tensor name overlapping the first tensor", d, 1);
        snprintf(extra, sizeof extra, "\"%s\":{\"dtype\":%s,\"shape\":%s,\"data_offsets\":%s}", s.e[other].name, s.e[victim].dtype, s.e[victim].shape, s.e[victim].offsets);
        hostile_st_write(d, &s, s.e, s.n, extra, NULL, 0);
        hostile_load("a duplicate key", d, 1);
        /* header lengths that lie */
        {
            static const uint64_t lens[] = {(uint64_t)1 << 63, ~(uint64_t)0, (uint64_t)1 << 32, 0, 1, 2, 7, 100 << 20};
            for (k = 0; k < sizeof lens / sizeof lens[0]; k++) {
                hostile_st_write(d, &s, s.e, s.n, NULL, &lens[k], 0);
                snprintf(what, sizeof what, "header length %llu", (unsigned long long)lens[k]);
                hostile_load(what, d, 1);
            }
            uint64_t past = s.hlen + 8 * 100000;
            hostile_st_write(d, &s, s.e, s.n, NULL, &past, 0); /* past the end by a little */
            hostile_load("header length past the end", d, 1);
        }
        /* not an object, trailing garbage, deep nesting, an extra member of every JSON type */
        {
            static const char *heads[] = {"[]", "null", "1", "\"x\"", "{} {}", "{\"a\":1,}"};
            char path[512];
            unsigned char hdr[64];
            size_t z;
            for (k = 0; k < sizeof heads / sizeof heads[0]; k++) {
                size_t hl = strlen(heads[k]);
                for (z = 0; z < 8; z++) hdr[z] = (unsigned char)((uint64_t)hl >> (8 * z));
                memcpy(hdr + 8, heads[k], hl);
                snprintf(path, sizeof path, "%s/model.safetensors", d);
                hostile_write(path, hdr, 8 + hl);
                snprintf(what, sizeof what, "header %s", heads[k]);
                hostile_load(what, d, 1);
            }
            for (z = 0; z < 100; z++) extra[z] = '[';
            snprintf(extra + 100, sizeof extra - 100, "0");
            for (z = 0; z < 100; z++) strcat(extra, "]");
            {
                char member[20100];
                snprintf(member, sizeof member, "\"deep\":%s", extra);
                hostile_st_write(d, &s, s.e, s.n, member, NULL, 0);
                hostile_load("100-deep nesting", d, 1);
            }
        }
        free(e); free(s.file); free(s.e);
    }
}

/* ---- config.json, preprocessor_config.json ---------------------------------------------- */
/* A copy of JSON text with the value of the first member "key" replaced by `value` (text up to the
 * next ',', newline or '}' is the old value). */
static char *hostile_set_key(const char *text, const char *key, const char *value) {
    char pat[128];
    const char *at, *v, *e;
    char *out = (char *)malloc(strlen(text) + strlen(value) + 1);
    snprintf(pat, sizeof pat, "\"%s\":", key);
    at = strstr(text, pat);
    if (!at) { strcpy(out, text); return out; }
    v = at + strlen(pat);
    while (*v == ' ') v++;
    e = v;
    if (*e == '{' || *e == '[') e++; /* an object/array value: replace just its opening bracket */
    else while (*e && *e != ',' && *e != '\n' && *e != '}') e++;
    memcpy(out, text, (size_t)(v - text));
    strcpy(out + (v - text), value);
    strcat(out, e);
    return out;
}

static void test_hostile_config(void) {
    /* {text to replace, replacement}: each makes the checkpoint invalid */
    static const char *edits[][2] = { /* {key, new value} */
        {"layers", "65535"}, {"layers", "4096"}, {"num_hidden_layers", "65535"}, {"num_hidden_layers", "4096"},
        {"embed_dim", "1048576"}, {"embed_dim", "1e400"}, {"embed_dim", "-36"}, {"embed_dim", "36.5"}, {"embed_dim", "\"36\""},
        {"embed_dim", "0"}, {"attention_heads", "0"}, {"attention_heads", "7"}, {"ffn_dim", "2147483647"},
        {"ffn_dim", "9007199254740993"}, {"eos_token_id", "99999999"}, {"activation_function", "\"tanh\""},
        {"layer_norm_eps", "5"}, {"model_type", "5"}, {"text_config", "[], \"x\": {"}, {"latent_query_num", "0"},
        {"latent_query_num", "1000000"}, {"image_size", "8190"}, {"patch_size", "1"}, {"vocab_size", "16777216"},
        {"vocab_size", "5"}, {"hidden_size", "1048576"}, {"max_position_embeddings", "0"}, {"bos_token_id", "-1"},
    };
    int fx;
    size_t k, n, cut;
    for (fx = 0; fx < 2; fx++) {
        char src[256], path[512], what[1024];
        const char *d = hostile_dir("config", fx, "config.json");
        char *cfg, *pre;
        snprintf(src, sizeof src, "tests/fixtures/%s/config.json", hostile_fx_name(fx));
        cfg = (char *)test_read_file(src, &n);
        if (!cfg) { CHECK(0, "%s missing", src); continue; }
        snprintf(path, sizeof path, "%s/config.json", d);
        for (k = 0; k < 25; k++) { /* truncated */
            cut = (n * k) / 25;
            hostile_write(path, cfg, cut);
            snprintf(what, sizeof what, "%s config.json cut at %zu", hostile_fx_name(fx), cut);
            hostile_load(what, d, 1);
        }
        for (k = 0; k < sizeof edits / sizeof edits[0]; k++) {
            char *x = hostile_set_key(cfg, edits[k][0], edits[k][1]);
            CHECK(strcmp(x, cfg) != 0, "%s: '%s' not found in config.json", hostile_fx_name(fx), edits[k][0]);
            hostile_write(path, x, strlen(x));
            snprintf(what, sizeof what, "%s config.json %s = %s", hostile_fx_name(fx), edits[k][0], edits[k][1]);
            hostile_load(what, d, 1);
            free(x);
        }
        hostile_write(path, cfg, n);
        /* preprocessor_config.json: truncated (not to 0 bytes: an empty file counts as absent) and absurd */
        snprintf(src, sizeof src, "tests/fixtures/%s/preprocessor_config.json", hostile_fx_name(fx));
        pre = (char *)test_read_file(src, &n);
        snprintf(path, sizeof path, "%s/preprocessor_config.json", d);
        for (k = 1; pre && k < 15; k++) {
            cut = (n * k) / 15;
            hostile_write(path, pre, cut);
            snprintf(what, sizeof what, "%s preprocessor_config.json cut at %zu", hostile_fx_name(fx), cut);
            hostile_load(what, d, 1);
        }
        {
            static const char *pp[] = {
                "{\"size\": 1e10, \"crop_size\": 1e10}", "{\"size\": -1e300}", "{\"size\": {\"height\": 1e19, \"width\": 42}}",
                "{\"size\": {\"shortest_edge\": 4294967338}, \"use_square_size\": true}", "{\"crop_size\": {\"height\": -1e300, \"width\": 1}}",
                "{\"image_mean\": [1, 2]}", "{\"image_std\": [0, 0, 0]}", "{\"resample\": 1e30}", "{\"size\": \"big\"}", "[]"};
            for (k = 0; k < sizeof pp / sizeof pp[0]; k++) {
                hostile_write(path, pp[k], strlen(pp[k]));
                snprintf(what, sizeof what, "%s preprocessor_config.json %s", hostile_fx_name(fx), pp[k]);
                hostile_load(what, d, 1);
            }
        }
        free(cfg); free(pre);
    }
}

/* ---- the SentencePiece model -------------------------------------------------------------- */
/* Offsets where a top-level protobuf field of the .model file ends (a cut there leaves a valid, shorter
 * message; anywhere else the cut is inside a field and must be refused). */
static int hostile_pb_boundary(const unsigned char *p, size_t n, size_t cut) {
    size_t pos = 0;
    while (pos < n) {
        uint64_t key = 0, len = 0;
        int sh = 0;
        if (pos == cut) return 1;
        do { key |= (uint64_t)(p[pos] & 127) << sh; sh += 7; } while (p[pos++] & 128 && pos < n);
        if ((key & 7) == 2) {
            sh = 0;
            do { len |= (uint64_t)(p[pos] & 127) << sh; sh += 7; } while (p[pos++] & 128 && pos < n);
            pos += (size_t)len;
        } else if ((key & 7) == 0) { while (pos < n && (p[pos++] & 128)) {} }
        else if ((key & 7) == 5) pos += 4;
        else if ((key & 7) == 1) pos += 8;
        else return 0;
    }
    return pos == cut;
}

static void test_hostile_tokenizer_model(void) {
    int fx;
    for (fx = 0; fx < 2; fx++) {
        char src[256], path[512], what[1024];
        const char *d = hostile_dir("spm", fx, "sentencepiece.bpe.model");
        size_t n, k;
        unsigned char *spm, *b;
        snprintf(src, sizeof src, "tests/fixtures/%s/sentencepiece.bpe.model", hostile_fx_name(fx));
        spm = test_read_file(src, &n);
        if (!spm) { CHECK(0, "%s missing", src); continue; }
        snprintf(path, sizeof path, "%s/sentencepiece.bpe.model", d);
        for (k = 0; k < 40; k++) { /* truncated: in the first pieces, then spread over the file */
            size_t cut = k < 10 ? k * 3 : ((n - 1) * (k - 9)) / 31;
            hostile_write(path, spm, cut);
            snprintf(what, sizeof what, "%s sentencepiece.bpe.model cut at %zu of %zu", hostile_fx_name(fx), cut, n);
            hostile_load(what, d, !hostile_pb_boundary(spm, n, cut));
        }
        b = (unsigned char *)malloc(n);
        for (k = 0; k < 30; k++) { /* bytes flipped: an error or a (different) tokenizer, never a crash */
            size_t at = k < 10 ? k : (k * 7919u) % n;
            memcpy(b, spm, n);
            b[at] ^= (unsigned char)(k < 10 ? 0x80 : 1u << (k % 8));
            hostile_write(path, b, n);
            snprintf(what, sizeof what, "%s sentencepiece.bpe.model byte %zu flipped", hostile_fx_name(fx), at);
            hostile_load(what, d, 0);
        }
        free(b); free(spm);
    }
}

/* A directory, or a device, where a file should be (fopen succeeds on a directory; its "size" from
 * ftell is LONG_MAX). Both read paths: mmap and plain reads (hostile_load alternates). */
static void test_hostile_not_files(void) {
    static const char *files[] = {"config.json", "preprocessor_config.json", "sentencepiece.bpe.model", "model.safetensors"};
    char p[512], what[1024];
    int fx, i, k;
    for (fx = 0; fx < 2; fx++)
        for (i = 0; i < 4; i++)
            for (k = 0; k < 4; k++) {
                const char *d = hostile_dir("not_files", fx, files[i]);
                snprintf(p, sizeof p, "%s/%s", d, files[i]);
                remove(p); rmdir(p);
                if (k < 2) mkdir(p, 0755);
                else if (symlink("/dev/zero", p) != 0) continue;
                snprintf(what, sizeof what, "%s: %s is %s", hostile_fx_name(fx), files[i], k < 2 ? "a directory" : "/dev/zero");
                hostile_load(what, d, 1);
                remove(p); rmdir(p);
            }
    hostile_mkdirs();
    mkdir("build/tmp/hostile/dir.gguf", 0755);
    hostile_load("a directory named like a GGUF file", "build/tmp/hostile/dir.gguf", 1);
}

/* ---- GGUF ------------------------------------------------------------------------------------ */
/* Where the fields of a GGUF file written by kosmos2_model_save_gguf are (byte offsets). */
typedef struct {
    size_t kv_key[16], kv_type[16], kv_val[16];  /* key length field, type field, value */
    int n_kv;
    size_t ti_name[1024], ti_nd[1024], ti_dims[1024], ti_type[1024], ti_off[1024];
    int n_ti;
    size_t align_val, config_len, spm_type, spm_count;
    size_t end_of_data;  /* one past the last byte of tensor data (later bytes are padding) */
} hostile_gguf;

static uint64_t hostile_u(const unsigned char *p, int bytes) {
    uint64_t v = 0;
    int i;
    for (i = bytes - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static void hostile_put(unsigned char *p, uint64_t v, int bytes) {
    int i;
    for (i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static int hostile_gguf_map(const unsigned char *p, size_t n, hostile_gguf *g) {
    size_t pos = 24;
    uint64_t nt = hostile_u(p + 8, 8), nkv = hostile_u(p + 16, 8), i;
    kosmos2__file f;
    kosmos2__tensor *t = NULL;
    kosmos2__gguf_meta meta;
    int nn = 0, rc;
    memset(g, 0, sizeof *g);
    if (nkv > 16 || nt > 1024) return -1;
    for (i = 0; i < nkv; i++) {
        size_t klen = (size_t)hostile_u(p + pos, 8);
        uint32_t type;
        g->kv_key[i] = pos;
        pos += 8 + klen;
        g->kv_type[i] = pos;
        type = (uint32_t)hostile_u(p + pos, 4);
        pos += 4;
        g->kv_val[i] = pos;
        if (klen == 17 && !memcmp(p + g->kv_key[i] + 8, "general.alignment", 17)) g->align_val = pos;
        if (klen == 19 && !memcmp(p + g->kv_key[i] + 8, "kosmos2.config_json", 19)) g->config_len = pos;
        if (type == KOSMOS2__GT_STR) pos += 8 + (size_t)hostile_u(p + pos, 8);
        else if (type == KOSMOS2__GT_U32) pos += 4;
        else if (type == KOSMOS2__GT_ARR) { g->spm_type = pos; g->spm_count = pos + 4; pos += 12 + (size_t)hostile_u(p + pos + 4, 8); }
        else return -1;
    }
    g->n_kv = (int)nkv;
    for (i = 0; i < nt; i++) {
        uint32_t nd;
        g->ti_name[i] = pos;
        pos += 8 + (size_t)hostile_u(p + pos, 8);
        g->ti_nd[i] = pos;
        nd = (uint32_t)hostile_u(p + pos, 4);
        g->ti_dims[i] = pos + 4;
        pos += 4 + 8 * (size_t)nd;
        g->ti_type[i] = pos;
        g->ti_off[i] = pos + 4;
        pos += 12;
    }
    g->n_ti = (int)nt;
    f.data = (unsigned char *)p; f.size = n; f.mapped = 0;
    rc = kosmos2__gguf_parse("x.gguf", &f, &t, &nn, &meta);
    for (i = 0; rc == 0 && i < (uint64_t)nn; i++) {
        size_t e = (size_t)(t[i].data - p) + t[i].nbytes;
        if (e > g->end_of_data) g->end_of_data = e;
    }
    for (i = 0; i < (uint64_t)nn; i++) free(t[i].name);
    free(t);
    return rc;
}

/* Write bytes b[0..n-1] as build/tmp/hostile/bad.gguf and load it. */
static void hostile_gguf_case(const char *what, const unsigned char *b, size_t n, int must_fail) {
    hostile_write("build/tmp/hostile/bad.gguf", b, n);
    hostile_load(what, "build/tmp/hostile/bad.gguf", must_fail);
}

/* A copy of the GGUF file with the config.json string replaced by `cfg` (same length: padded with
 * spaces, or an error if it does not fit). */
static int hostile_gguf_set_config(unsigned char *b, const hostile_gguf *g, const char *cfg) {
    size_t len = (size_t)hostile_u(b + g->config_len, 8), n = strlen(cfg);
    if (n > len) return -1;
    memcpy(b + g->config_len + 8, cfg, n);
    memset(b + g->config_len + 8 + n, ' ', len - n);
    return 0;
}

/* Remove the indentation after newlines (the fixture's config.json is pretty-printed): room for edits. */
static char *hostile_compact(const char *s) {
    char *o = (char *)malloc(strlen(s) + 1), *w = o;
    while (*s) {
        *w++ = *s;
        if (*s++ == '\n') while (*s == ' ') s++;
    }
    *w = 0;
    return o;
}

static void test_hostile_gguf(void) {
    static const struct { int fx; const char *type; } files[] = {{0, "f32"}, {0, "q4_0"}, {1, "bf16"}, {1, "q8_0"}};
    size_t fi;
    hostile_mkdirs();
    for (fi = 0; fi < sizeof files / sizeof files[0]; fi++) {
        kosmos2_model *m = NULL;
        char path[256], what[1024];
        unsigned char *orig, *b;
        size_t n, k;
        hostile_gguf g;
        int i, t;
        snprintf(path, sizeof path, "build/tmp/hostile/%s_%s.gguf", hostile_fx_name(files[fi].fx), files[fi].type);
        CHECK_OK(kosmos2_model_load(files[fi].fx ? "tests/fixtures/tiny_bf16" : "tests/fixtures/tiny_f32", NULL, &m));
        if (!m) continue;
        CHECK_OK(kosmos2_model_save_gguf(m, path, files[fi].type, NULL, NULL));
        kosmos2_model_free(m);
        orig = test_read_file(path, &n);
        if (!orig) { CHECK(0, "%s not written", path); continue; }
        if (hostile_gguf_map(orig, n, &g) != 0) { CHECK(0, "%s: cannot map its fields: %s", path, kosmos2_last_error()); free(orig); continue; }
        CHECK(g.align_val && g.config_len && g.spm_type && g.n_ti > 50 && g.end_of_data > n / 2, "%s: fields found", path);
        hostile_load("the GGUF file itself", path, 0);
        b = (unsigned char *)malloc(n);
        /* truncated anywhere before the end of the last tensor's data */
        for (k = 0; k < 40; k++) {
            size_t cut = k < 12 ? k * 2 : 24 + ((g.end_of_data - 25) * (k - 11)) / 29;
            snprintf(what, sizeof what, "%s cut at %zu of %zu", path, cut, n);
            hostile_gguf_case(what, orig, cut, 1);
        }
        /* the header: magic, version, counts */
        {
            static const struct { size_t at; int bytes; uint64_t v; } hdr[] = {
                {0, 1, 'g'}, {4, 4, 0}, {4, 4, 1}, {4, 4, 4}, {4, 4, 0xffffffffu},
                {8, 8, (uint64_t)1 << 63}, {8, 8, ~(uint64_t)0}, {8, 8, 4000000000ull}, {8, 8, 100001}, {8, 8, 0},
                {16, 8, (uint64_t)1 << 63}, {16, 8, 3000000000ull}, {16, 8, 0}};
            for (k = 0; k < sizeof hdr / sizeof hdr[0]; k++) {
                memcpy(b, orig, n);
                hostile_put(b + hdr[k].at, hdr[k].v, hdr[k].bytes);
                snprintf(what, sizeof what, "%s: header field at %zu = %llu", path, hdr[k].at, (unsigned long long)hdr[k].v);
                hostile_gguf_case(what, b, n, 1);
            }
            for (t = -1; t <= 1; t += 2) { /* one tensor / one key more or less than there are */
                memcpy(b, orig, n);
                hostile_put(b + 8, (uint64_t)(g.n_ti + t), 8);
                hostile_gguf_case("n_tensors off by one", b, n, 1);
                memcpy(b, orig, n);
                hostile_put(b + 16, (uint64_t)(g.n_kv + t), 8);
                hostile_gguf_case("n_kv off by one", b, n, 1);
            }
        }
        /* metadata: key lengths, value types, alignment, the config string, the tokenizer array */
        {
            static const uint64_t aligns[] = {0, 3, 48, 100, (uint64_t)1 << 17, 0xffffffffu};
            for (i = 0; i < g.n_kv; i++) {
                static const uint64_t klens[] = {(uint64_t)1 << 63, ~(uint64_t)0, 0};
                static const uint32_t types[] = {13, 99, 0xffffffffu};
                for (k = 0; k < 3; k++) {
                    memcpy(b, orig, n);
                    hostile_put(b + g.kv_key[i], klens[k], 8);
                    snprintf(what, sizeof what, "%s: key %d length %llu", path, i, (unsigned long long)klens[k]);
                    hostile_gguf_case(what, b, n, 1);
                    memcpy(b, orig, n);
                    hostile_put(b + g.kv_type[i], types[k], 4);
                    snprintf(what, sizeof what, "%s: key %d type %u", path, i, types[k]);
                    hostile_gguf_case(what, b, n, 1);
                }
            }
            for (k = 0; k < sizeof aligns / sizeof aligns[0]; k++) {
                memcpy(b, orig, n);
                hostile_put(b + g.align_val, aligns[k], 4);
                snprintf(what, sizeof what, "%s: general.alignment %llu", path, (unsigned long long)aligns[k]);
                hostile_gguf_case(what, b, n, 1);
            }
            memcpy(b, orig, n);
            hostile_put(b + g.config_len, hostile_u(orig + g.config_len, 8) + 1, 8);
            hostile_gguf_case("config string one byte longer", b, n, 1);
            memcpy(b, orig, n);
            hostile_put(b + g.config_len, (uint64_t)1 << 62, 8);
            hostile_gguf_case("config string 2^62 bytes", b, n, 1);
            memcpy(b, orig, n);
            hostile_put(b + g.spm_type, KOSMOS2__GT_U16, 4);
            hostile_gguf_case("tokenizer array of u16", b, n, 1);
            memcpy(b, orig, n);
            hostile_put(b + g.spm_count, (uint64_t)1 << 62, 8);
            hostile_gguf_case("tokenizer array of 2^62 bytes", b, n, 1);
            memcpy(b, orig, n);
            memcpy(b + g.kv_key[2] + 8, "kosmos2.config_jsoN", 19); /* kv 2 is config_json: now absent */
            hostile_gguf_case("no config_json key", b, n, 1);
        }
        /* the config inside the file: absurd sizes */
        {
            static const char *edits[][2] = {{"layers", "65535"}, {"layers", "4096"}, {"num_hidden_layers", "4096"},
                                             {"embed_dim", "1048576"}, {"vocab_size", "16777216"}, {"vocab_size", "1000"}};
            size_t clen = (size_t)hostile_u(orig + g.config_len, 8);
            char *cfg = (char *)malloc(clen + 1), *compact;
            memcpy(cfg, orig + g.config_len + 8, clen);
            cfg[clen] = 0;
            compact = hostile_compact(cfg);
            for (k = 0; k < sizeof edits / sizeof edits[0]; k++) {
                char *x = hostile_set_key(compact, edits[k][0], edits[k][1]);
                memcpy(b, orig, n);
                CHECK(strcmp(x, compact) != 0 && hostile_gguf_set_config(b, &g, x) == 0, "config edit %s", edits[k][1]);
                snprintf(what, sizeof what, "%s: config %s", path, edits[k][1]);
                hostile_gguf_case(what, b, n, 1);
                free(x);
            }
            memcpy(b, orig, n);
            hostile_gguf_set_config(b, &g, "{\"model_type\": \"kosmos-2\", \"text_config\": {\"layers\": 1}");
            hostile_gguf_case("config JSON cut short", b, n, 1);
            free(cfg); free(compact);
        }
        /* tensor infos: first, a middle one, the last */
        for (t = 0; t < 3; t++) {
            int ti = t == 0 ? 0 : t == 1 ? g.n_ti / 2 : g.n_ti - 1;
            static const struct { int field; uint64_t v; } lies[] = {
                {0, 0}, {0, 513}, {0, (uint64_t)1 << 63}, {1, 0}, {1, 9}, {1, 0xffffffffu}, {2, 0}, {2, ((uint64_t)1 << 40) + 1},
                {2, (uint64_t)1 << 63}, {2, 3}, {3, 3}, {3, 99}, {3, 0xffffffffu}, {4, 1}, {4, (uint64_t)1 << 63}, {4, 64 * 1000000ull}};
            for (k = 0; k < sizeof lies / sizeof lies[0]; k++) {
                size_t at = lies[k].field == 0 ? g.ti_name[ti] : lies[k].field == 1 ? g.ti_nd[ti] : lies[k].field == 2 ? g.ti_dims[ti]
                          : lies[k].field == 3 ? g.ti_type[ti] : g.ti_off[ti];
                uint64_t v = lies[k].v;
                int bytes = lies[k].field == 1 || lies[k].field == 3 ? 4 : 8;
                memcpy(b, orig, n);
                if (lies[k].field == 4 && v == 1) v = hostile_u(orig + at, 8) + 1;     /* misaligned */
                if (lies[k].field == 2 && v == 3) v = hostile_u(orig + at, 8) * 2;     /* a lying dimension */
                hostile_put(b + at, v, bytes);
                snprintf(what, sizeof what, "%s: tensor info %d field %d = %llu", path, ti, lies[k].field, (unsigned long long)v);
                hostile_gguf_case(what, b, n, 1);
            }
            /* this tensor's data on another tensor's bytes */
            memcpy(b, orig, n);
            memcpy(b + g.ti_off[ti], orig + g.ti_off[ti == 0 ? 1 : 0], 8);
            hostile_gguf_case("tensor data overlapping another", b, n, 1);
        }
        /* bytes flipped in the metadata and tensor infos: an error or a model, never a crash */
        for (k = 0; k < 30; k++) {
            size_t at = 24 + (k * 104729u) % (g.ti_off[g.n_ti - 1] + 8 - 24);
            memcpy(b, orig, n);
            b[at] ^= (unsigned char)(1u << (k % 8));
            snprintf(what, sizeof what, "%s: byte %zu flipped", path, at);
            hostile_gguf_case(what, b, n, 0);
        }
        free(b);
        free(orig);
    }
}

/* ---- limits: over a limit is an error before any large allocation ------------------------- */
static void test_hostile_limits(void) {
    kosmos2_model *m = NULL;
    kosmos2_context *ctx = NULL;
    kosmos2_context_params cp = kosmos2_context_default_params();
    kosmos2_generate_params gp = kosmos2_generate_default_params();
    kosmos2_result r;
    int32_t ids[8] = {0, 10, 11, 12, 13, 14, 15, 16}, out[4];
    int n_out = 0, rc;
    CHECK_OK(kosmos2_model_load("tests/fixtures/tiny_f32", NULL, &m));
    if (!m) return;
    cp.max_ctx = 16;
    CHECK_OK(kosmos2_context_new(m, &cp, &ctx));
    if (!ctx) { kosmos2_model_free(m); return; }
    gp.max_new_tokens = 9; /* 8 + 9 > 16 */
    rc = kosmos2_generate_ids(ctx, ids, NULL, 8, &gp, out, 4, &n_out);
    CHECK(rc == KOSMOS2_E_LIMIT && n_out == 0, "prompt + new tokens over max_ctx: rc %d", rc);
    gp.max_new_tokens = 2147483647;
    rc = kosmos2_generate_ids(ctx, ids, NULL, 8, &gp, out, 4, &n_out);
    CHECK(rc == KOSMOS2_E_LIMIT, "max_new_tokens INT_MAX: rc %d", rc);
    gp.max_new_tokens = -5;
    rc = kosmos2_generate_ids(ctx, ids, NULL, 8, &gp, out, 4, &n_out);
    CHECK(rc == KOSMOS2_E_INVALID, "negative max_new_tokens: rc %d", rc);
    memset(&r, 0, sizeof r);
    rc = kosmos2_generate(ctx, NULL, "a b c", NULL, 0, &gp, &r);
    CHECK(rc == KOSMOS2_E_INVALID, "kosmos2_generate with max_new_tokens -5: rc %d (%s)", rc, kosmos2_last_error());
    kosmos2_result_free(&r);
    gp.max_new_tokens = 2147483647;
    rc = kosmos2_generate(ctx, NULL, "a b c", NULL, 0, &gp, &r);
    CHECK(rc == KOSMOS2_E_LIMIT, "kosmos2_generate with max_new_tokens INT_MAX: rc %d (%s)", rc, kosmos2_last_error());
    kosmos2_result_free(&r);
    gp.max_new_tokens = 4;
    gp.num_beams = 1000000;
    rc = kosmos2_generate_ids(ctx, ids, NULL, 8, &gp, out, 4, &n_out);
    CHECK(rc == KOSMOS2_E_INVALID, "a million beams: rc %d", rc);
    gp.num_beams = 1;
    { /* a prompt far longer than the context: refused, not tokenized into a huge buffer first (limit) */
        size_t big = 1 << 20, i;
        char *p = (char *)malloc(big + 1);
        for (i = 0; i < big; i++) p[i] = i % 2 ? ' ' : 'a';
        p[big] = 0;
        rc = kosmos2_generate(ctx, NULL, p, NULL, 0, &gp, &r);
        CHECK(rc == KOSMOS2_E_LIMIT, "a 1 MiB prompt with max_ctx 16: rc %d (%s)", rc, kosmos2_last_error());
        kosmos2_result_free(&r);
        free(p);
    }
    { /* image pixel limit: a PNG header claiming 12000 x 9000 (stb_image itself refuses much larger ones) */
        static const unsigned char png[] = {0x89, 'P', 'N', 'G', 13, 10, 26, 10, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                            0, 0, 0x2e, 0xe0, 0, 0, 0x23, 0x28, 8, 2, 0, 0, 0, 0, 0, 0, 0};
        kosmos2_image img;
        rc = kosmos2_image_load_memory(png, sizeof png, 0, &img);
        CHECK(rc == KOSMOS2_E_LIMIT && img.rgb == NULL, "12000x9000 PNG over the default 10^8 pixels: rc %d (%s)", rc, kosmos2_last_error());
        rc = kosmos2_image_load_memory(png, sizeof png, 1000, &img);
        CHECK(rc == KOSMOS2_E_LIMIT && img.rgb == NULL, "PNG over a caller limit: rc %d", rc);
    }
    kosmos2_context_free(ctx);
    kosmos2_model_free(m);
}

/* Every committed fuzz input (seeds and the inputs that once crashed a target) through its target:
 * a crash, sanitizer report or leak here is a regression. */
static void test_hostile_fuzz_replay(void) {
    static const struct { const char *name; int (*fn)(const uint8_t *, size_t); } targets[] = {
        {"json", fuzz_json}, {"safetensors", fuzz_safetensors}, {"gguf", fuzz_gguf}, {"spm", fuzz_spm},
        {"tokenize", fuzz_tokenize}, {"grounding", fuzz_grounding}, {"prompt", fuzz_prompt}, {"image", fuzz_image}};
    static const char *dirs[] = {"tests/fuzz/corpus", "tests/fuzz/regressions"};
    size_t t, d;
    int total = 0, regressions = 0;
    for (t = 0; t < sizeof targets / sizeof targets[0]; t++)
        for (d = 0; d < 2; d++) {
            char path[512];
            DIR *dir;
            struct dirent *de;
            snprintf(path, sizeof path, "%s/%s", dirs[d], targets[t].name);
            dir = opendir(path);
            CHECK(dir != NULL || d == 1, "%s is missing", path);
            if (!dir) continue;
            while ((de = readdir(dir)) != NULL) {
                char file[1024];
                size_t n;
                unsigned char *b;
                if (de->d_name[0] == '.') continue;
                snprintf(file, sizeof file, "%s/%s", path, de->d_name);
                b = test_read_file(file, &n);
                if (!b) continue;
                targets[t].fn(b, n);
                free(b);
                total++;
                regressions += d;
            }
            closedir(dir);
        }
    fuzz_tokenize_cleanup();
    printf("    replayed %d fuzz inputs (%d regression inputs)\n", total, regressions);
    CHECK(total >= 50, "only %d fuzz inputs found", total);
}

static void test_hostile_summary(void) {
    printf("    hostile cases: %d loads (%d of them invalid files), %d failed cleanly, %d loaded (allowed)\n", hostile__t.cases,
           hostile__t.must_fail, hostile__t.failed, hostile__t.loaded);
    CHECK(hostile__t.must_fail >= 500 || test__filter, "only %d invalid-file cases ran", hostile__t.must_fail);
}

static void tests_hostile(void) {
    RUN(test_hostile_st_truncated);
    RUN(test_hostile_st_header_bytes);
    RUN(test_hostile_st_lies);
    RUN(test_hostile_config);
    RUN(test_hostile_tokenizer_model);
    RUN(test_hostile_not_files);
    RUN(test_hostile_gguf);
    RUN(test_hostile_limits);
    RUN(test_hostile_fuzz_replay);
    RUN(test_hostile_summary);
}
