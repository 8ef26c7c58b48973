/* tests/fuzz/make_seeds.c - writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.
 * Run from the repository root (tests/fuzz/run.sh --seeds does it). Everything is derived from the
 * committed fixtures or generated here deterministically:
 *   json/         the fixture config.json / preprocessor_config.json / generation_config.json, the tiny
 *                 config of fuzz.h and a few hand-written documents (escapes, nesting, numbers)
 *   safetensors/  tiny checkpoints of the fuzz.h architecture (F32 with some BF16/F16 tensors; a
 *                 misaligned data section; one with __metadata__), all valid
 *   gguf/         kosmos2_model_save_gguf of tiny checkpoints (f32, bf16, q8_0, q4_0 in ggml's rows and
 *                 in the r8 layouts) whose tokenizer is
 *                 tests/fixtures/tokenizer/bpe_tiny.model
 *   spm/          bpe_tiny.model and a hand-built minimal UNIGRAM ModelProto
 *   tokenize/, grounding/, prompt/   texts from tests/fixtures/tokenizer/corpus.txt and
 *                 tests/fixtures/grounding/ (texts), markup, boxes
 *   image/        the small images of tests/fixtures/images (< 12 KB each) */
#include "fuzz.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static unsigned char *rd(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long s;
    if (!f) { fprintf(stderr, "make_seeds: cannot read %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END); s = ftell(f); fseek(f, 0, SEEK_SET);
    b = (unsigned char *)malloc((size_t)s + 1);
    if (fread(b, 1, (size_t)s, f) != (size_t)s) exit(1);
    b[s] = 0;
    fclose(f);
    *n = (size_t)s;
    return b;
}
static void wr(const char *target, const char *name, const void *p, size_t n) {
    char path[512];
    FILE *f;
    snprintf(path, sizeof path, "tests/fuzz/corpus/%s", target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "tests/fuzz/corpus/%s/%s", target, name);
    f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) { fprintf(stderr, "make_seeds: cannot write %s\n", path); exit(1); }
    fclose(f);
}
static void wr_text(const char *target, const char *name, const char *s) { wr(target, name, s, strlen(s)); }
static void copy(const char *target, const char *name, const char *from) {
    size_t n;
    unsigned char *b = rd(from, &n);
    wr(target, name, b, n);
    free(b);
}

/* ---- tiny checkpoints ---- */
typedef struct { int Dv, Fv, Lv, Hv, S, P, V, D, F, Lt, Ht, Q, maxpos; } arch;
typedef struct { char name[128]; int nd; long long sh[4]; const char *dt; } tinfo;

static int tensor_list(const arch *a, tinfo *t) {
    int n = 0, l;
#define T1(nm, x) (snprintf(t[n].name, 128, "%s", nm), t[n].nd = 1, t[n].sh[0] = x, t[n].dt = "F32", n++)
#define T2(nm, x, y) (snprintf(t[n].name, 128, "%s", nm), t[n].nd = 2, t[n].sh[0] = x, t[n].sh[1] = y, t[n].dt = "F32", n++)
#define LN(pre, x) (snprintf(t[n].name, 128, "%s.weight", pre), t[n].nd = 1, t[n].sh[0] = x, t[n].dt = "F32", n++, \
                    snprintf(t[n].name, 128, "%s.bias", pre), t[n].nd = 1, t[n].sh[0] = x, t[n].dt = "BF16", n++)
#define LIN(pre, o, i) (snprintf(t[n].name, 128, "%s.weight", pre), t[n].nd = 2, t[n].sh[0] = o, t[n].sh[1] = i, t[n].dt = (n % 3 == 1 ? "F16" : "F32"), n++, \
                        snprintf(t[n].name, 128, "%s.bias", pre), t[n].nd = 1, t[n].sh[0] = o, t[n].dt = "F32", n++)
    char p[128];
    snprintf(t[n].name, 128, "vision_model.model.embeddings.patch_embedding.weight");
    t[n].nd = 4; t[n].sh[0] = a->Dv; t[n].sh[1] = 3; t[n].sh[2] = a->P; t[n].sh[3] = a->P; t[n].dt = "F32"; n++;
    T1("vision_model.model.embeddings.class_embedding", a->Dv);
    T2("vision_model.model.embeddings.position_embedding.weight", (a->S / a->P) * (a->S / a->P) + 1, a->Dv);
    LN("vision_model.model.pre_layrnorm", a->Dv);
    LN("vision_model.model.post_layernorm", a->Dv);
    for (l = 0; l < a->Lv; l++) {
#define P(s) (snprintf(p, sizeof p, "vision_model.model.encoder.layers.%d.%s", l, s), p)
        LN(P("layer_norm1"), a->Dv); LN(P("layer_norm2"), a->Dv);
        LIN(P("self_attn.q_proj"), a->Dv, a->Dv); LIN(P("self_attn.k_proj"), a->Dv, a->Dv);
        LIN(P("self_attn.v_proj"), a->Dv, a->Dv); LIN(P("self_attn.out_proj"), a->Dv, a->Dv);
        LIN(P("mlp.fc1"), a->Fv, a->Dv); LIN(P("mlp.fc2"), a->Dv, a->Fv);
#undef P
    }
    LIN("image_to_text_projection.dense", a->D, a->Dv);
    T2("image_to_text_projection.latent_query", a->Q, a->D);
    LIN("image_to_text_projection.x_attn.q_proj", a->D, a->D); LIN("image_to_text_projection.x_attn.k_proj", a->D, a->D);
    LIN("image_to_text_projection.x_attn.v_proj", a->D, a->D); LIN("image_to_text_projection.x_attn.out_proj", a->D, a->D);
    T2("text_model.model.embed_tokens.weight", a->V, a->D);
    t[n - 1].dt = "BF16";
    for (l = 0; l < a->Lt; l++) {
#define P(s) (snprintf(p, sizeof p, "text_model.model.layers.%d.%s", l, s), p)
        LN(P("self_attn_layer_norm"), a->D);
        LIN(P("self_attn.q_proj"), a->D, a->D); LIN(P("self_attn.k_proj"), a->D, a->D);
        LIN(P("self_attn.v_proj"), a->D, a->D); LIN(P("self_attn.out_proj"), a->D, a->D);
        LN(P("self_attn.inner_attn_ln"), a->D); LN(P("final_layer_norm"), a->D);
        LIN(P("ffn.fc1"), a->F, a->D); LIN(P("ffn.fc2"), a->D, a->F);
        LN(P("ffn.ffn_layernorm"), a->F);
#undef P
    }
    LN("text_model.model.layer_norm", a->D);
    return n;
}

static uint32_t rng = 12345;
static float rnd(void) { rng = rng * 1664525u + 1013904223u; return (float)((rng >> 8) & 0xffff) / 65536.0f - 0.5f; }

/* A safetensors file of the tensors, random values; `pad` extra header bytes shift the data's
 * alignment. Returns malloc'd bytes. */
static unsigned char *make_st(const arch *a, int pad, int metadata, size_t *size) {
    static tinfo t[512];
    int n = tensor_list(a, t), i, d;
    char *h = (char *)malloc(1 << 20);
    size_t o = 0, off = 0, total;
    unsigned char *out;
    o += (size_t)sprintf(h + o, "{");
    if (metadata) o += (size_t)sprintf(h + o, "\"__metadata__\":{\"format\":\"pt\"},");
    for (i = 0; i < n; i++) {
        long long cnt = 1;
        int es = !strcmp(t[i].dt, "F32") ? 4 : 2;
        for (d = 0; d < t[i].nd; d++) cnt *= t[i].sh[d];
        o += (size_t)sprintf(h + o, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t[i].name, t[i].dt);
        for (d = 0; d < t[i].nd; d++) o += (size_t)sprintf(h + o, d ? ",%lld" : "%lld", t[i].sh[d]);
        o += (size_t)sprintf(h + o, "],\"data_offsets\":[%zu,%zu]}", off, off + (size_t)(cnt * es));
        off += (size_t)(cnt * es);
    }
    o += (size_t)sprintf(h + o, "}");
    while ((o + (size_t)pad) % 8) h[o++] = ' ';
    for (i = 0; i < pad; i++) h[o++] = ' ';
    total = 8 + o + off;
    out = (unsigned char *)malloc(total);
    for (i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)o >> (8 * i));
    memcpy(out + 8, h, o);
    off = 8 + o;
    for (i = 0; i < n; i++) {
        long long cnt = 1, k;
        for (d = 0; d < t[i].nd; d++) cnt *= t[i].sh[d];
        for (k = 0; k < cnt; k++) {
            float f = rnd();
            if (!strcmp(t[i].dt, "F32")) { memcpy(out + off, &f, 4); off += 4; }
            else {
                uint16_t v = !strcmp(t[i].dt, "BF16") ? kosmos2__f32_to_bf16(f) : kosmos2__f32_to_f16(f);
                memcpy(out + off, &v, 2); off += 2;
            }
        }
    }
    free(h);
    *size = total;
    return out;
}

static void arch_config(const arch *a, char *buf, size_t cap) {
    snprintf(buf, cap,
             "{\"model_type\": \"kosmos-2\", \"latent_query_num\": %d,"
             " \"vision_config\": {\"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,"
             " \"num_attention_heads\": %d, \"image_size\": %d, \"patch_size\": %d},"
             " \"text_config\": {\"vocab_size\": %d, \"embed_dim\": %d, \"layers\": %d, \"attention_heads\": %d,"
             " \"ffn_dim\": %d, \"max_position_embeddings\": %d, \"no_repeat_ngram_size\": 3}}",
             a->Q, a->Dv, a->Fv, a->Lv, a->Hv, a->S, a->P, a->V, a->D, a->Lt, a->Ht, a->F, a->maxpos);
}

/* A checkpoint directory build/fuzz/seed_ckpt with arch a and the bpe_tiny tokenizer; returns the model. */
static kosmos2_model *make_model(const arch *a) {
    char cfg[2048];
    size_t n;
    unsigned char *st = make_st(a, 0, 1, &n);
    FILE *f;
    kosmos2_model *m = NULL;
    mkdir("build", 0755); mkdir("build/fuzz", 0755); mkdir("build/fuzz/seed_ckpt", 0755);
    arch_config(a, cfg, sizeof cfg);
    f = fopen("build/fuzz/seed_ckpt/config.json", "wb"); fputs(cfg, f); fclose(f);
    f = fopen("build/fuzz/seed_ckpt/preprocessor_config.json", "wb");
    fprintf(f, "{\"do_resize\": true, \"size\": {\"shortest_edge\": %d}, \"use_square_size\": true, \"crop_size\": {\"height\": %d, \"width\": %d}, \"resample\": 3}", a->S, a->S, a->S);
    fclose(f);
    f = fopen("build/fuzz/seed_ckpt/model.safetensors", "wb"); fwrite(st, 1, n, f); fclose(f);
    free(st);
    {
        unsigned char *spm = rd("tests/fixtures/tokenizer/bpe_tiny.model", &n);
        f = fopen("build/fuzz/seed_ckpt/sentencepiece.bpe.model", "wb"); fwrite(spm, 1, n, f); fclose(f);
        free(spm);
    }
    if (kosmos2_model_load("build/fuzz/seed_ckpt", NULL, &m)) { fprintf(stderr, "make_seeds: tiny model: %s\n", kosmos2_last_error()); exit(1); }
    return m;
}

static void gguf_seed(kosmos2_model *m, const char *type, const char *name) {
    size_t n;
    unsigned char *b;
    if (kosmos2_model_save_gguf(m, "build/fuzz/seed.gguf", type, NULL, NULL)) { fprintf(stderr, "make_seeds: %s\n", kosmos2_last_error()); exit(1); }
    b = rd("build/fuzz/seed.gguf", &n);
    wr("gguf", name, b, n);
    free(b);
}

/* ---- a minimal UNIGRAM ModelProto ---- */
static size_t pb_varint(unsigned char *o, uint64_t v) { size_t k = 0; do { o[k] = (unsigned char)(v & 127); v >>= 7; if (v) o[k] |= 128; k++; } while (v); return k; }
static size_t pb_bytes(unsigned char *o, int field, const void *p, size_t n) {
    size_t k = pb_varint(o, (uint64_t)field << 3 | 2);
    k += pb_varint(o + k, n);
    memcpy(o + k, p, n);
    return k + n;
}
static size_t pb_piece(unsigned char *o, const char *s, float score, int type) {
    unsigned char in[128];
    size_t k = pb_bytes(in, 1, s, strlen(s));
    in[k++] = (2 << 3) | 5; memcpy(in + k, &score, 4); k += 4;
    if (type != 1) { in[k++] = 3 << 3; k += pb_varint(in + k, (uint64_t)type); }
    return pb_bytes(o, 1, in, k);
}
static size_t unigram_model(unsigned char *o) {
    static const char *pieces[] = {"\xe2\x96\x81", "\xe2\x96\x81" "a", "\xe2\x96\x81the", "e", "t", "a", "o", "n", "\xe2\x96\x81" "an", "image", "of", "s", "d", "g"};
    unsigned char ts[16], ns[64];
    size_t k = 0, i, tk = 0, nk = 0;
    k += pb_piece(o + k, "<unk>", 0, 2);
    k += pb_piece(o + k, "<s>", 0, 3);
    k += pb_piece(o + k, "</s>", 0, 3);
    for (i = 0; i < sizeof pieces / sizeof pieces[0]; i++) k += pb_piece(o + k, pieces[i], -1.0f - (float)i, 1);
    ts[tk++] = 3 << 3; ts[tk++] = 1; /* trainer_spec.model_type = UNIGRAM */
    k += pb_bytes(o + k, 2, ts, tk);
    nk += pb_bytes(ns + nk, 1, "identity", 8);     /* normalizer_spec.name */
    ns[nk++] = 3 << 3; ns[nk++] = 1;                  /* add_dummy_prefix */
    ns[nk++] = 4 << 3; ns[nk++] = 1;                  /* remove_extra_whitespaces */
    k += pb_bytes(o + k, 3, ns, nk);
    return k;
}

int main(void) {
    static const char *json_docs[] = {
        "{\"a\": [1, -2.5e3, 0.0001, 1E+2, true, false, null], \"s\": \"q\\\"\\u00e9\\ud83d\\ude00\\n\\t\\/\", \"o\": {\"k\": {}}}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "{\"size\": {\"height\": 224, \"width\": 224}, \"crop_size\": 224, \"image_mean\": [0.5, 0.5, 0.5], \"image_std\": [0.25, 0.25, 0.25], \"rescale_factor\": 0.00392156862745098, \"do_normalize\": true, \"resample\": 3}",
        "{\"model_type\": \"kosmos-2\", \"text_config\": {\"layers\": 65535, \"vocab_size\": 65037}, \"vision_config\": {\"num_hidden_layers\": 4096}}",
        "\"\\ud800\\u0000x\"",
        "123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890e-99999",
    };
    static const char *texts[] = {
        "<grounding>An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object> warming himself by<phrase> a fire</phrase><object><patch_index_0005><patch_index_0911></object>.",
        "<image>. the, to</image><grounding> Two puppies<phrase> dogs</phrase><object><patch_index_0000><patch_index_1023></object><object><patch_index_0001><patch_index_0002></delimiter_of_multi_objects/><patch_index_0100><patch_index_0200></object>",
        "<s>Hello   world</s><pad><unk><mask>  \xc3\xa9t\xc3\xa9 \xef\xbc\xa1\xef\xbc\xa2 \xe2\x85\xa0 \xe3\x81\x8b\xe3\x82\x99 \t\n x",
        "<phrase>x</phrase><object><patch_index_99999999999999999999></object><phrase></phrase></object><object><patch_index_0001>",
        "\xff\xfe invalid \xc3 utf8 \xed\xa0\x80 <patch_index_0012><patch_index_0013> end",
    };
    static const char *images[] = {"gif_60x40.gif", "gray16_33x21.png", "gray_97x61.png", "graya_80x45.png", "jpeg_cmyk_64x48.jpg",
                                   "jpeg_gray_73x91.jpg", "jpeg_progressive_199x263.jpg", "palette_64x48.png", "palette_trns_64x48.png",
                                   "pnm_31x29.pgm", "pnm_45x37.ppm", "rgb16_40x30.png", "rgb_1x1.png", "rgb_3x500.png", "rgb_50x40.png",
                                   "rgba16_36x22.png", "tga_52x33.tga", "tga_rle_47x35.tga", "bmp_70x50.bmp"};
    char name[64], cfg[2048];
    size_t i, n;
    unsigned char *b;
    arch a;
    kosmos2_tokenizer *tok;
    mkdir("tests/fuzz/corpus", 0755);
    /* json */
    copy("json", "tiny_f32_config.json", "tests/fixtures/tiny_f32/config.json");
    copy("json", "tiny_bf16_preprocessor_config.json", "tests/fixtures/tiny_bf16/preprocessor_config.json");
    copy("json", "generation_config.json", "tests/fixtures/tiny_f32/generation_config.json");
    wr_text("json", "fuzz_tiny_config.json", FUZZ_TINY_CONFIG);
    for (i = 0; i < sizeof json_docs / sizeof json_docs[0]; i++) { snprintf(name, sizeof name, "doc%zu.json", i); wr_text("json", name, json_docs[i]); }
    /* safetensors: the fuzz.h architecture (vocab 8) */
    a.Dv = 4; a.Fv = 8; a.Lv = 1; a.Hv = 2; a.S = 4; a.P = 2; a.V = 8; a.D = 4; a.F = 8; a.Lt = 1; a.Ht = 2; a.Q = 2; a.maxpos = 16;
    b = make_st(&a, 0, 1, &n); wr("safetensors", "tiny.safetensors", b, n); free(b);
    b = make_st(&a, 3, 0, &n); wr("safetensors", "tiny_misaligned.safetensors", b, n); free(b);
    /* gguf: the same shape with the bpe_tiny tokenizer's vocabulary; then wider rows for q8_0/q4_0 */
    if (kosmos2_tokenizer_load_file("tests/fixtures/tokenizer/bpe_tiny.model", &tok)) { fprintf(stderr, "%s\n", kosmos2_last_error()); return 1; }
    a.V = kosmos2_tokenizer_vocab_size(tok);
    kosmos2_tokenizer_free(tok);
    {
        kosmos2_model *m = make_model(&a);
        gguf_seed(m, "f32", "tiny_f32.gguf");
        gguf_seed(m, "bf16", "tiny_bf16.gguf");
        kosmos2_model_free(m);
        a.D = 32; a.F = 32; a.Dv = 32; a.Fv = 32;
        m = make_model(&a);
        gguf_seed(m, "q8_0_ggml", "tiny_q8_0.gguf");  /* ggml rows: repacked at load */
        gguf_seed(m, "q4_0_ggml", "tiny_q4_0.gguf");
        gguf_seed(m, "q8_0", "tiny_q8_0r8.gguf");       /* 8 rows interleaved (kosmos2.h's types) */
        gguf_seed(m, "q4_0", "tiny_q4_0r8.gguf");
        kosmos2_model_free(m);
    }
    arch_config(&a, cfg, sizeof cfg);
    wr_text("json", "arch_config.json", cfg);
    /* spm */
    copy("spm", "bpe_tiny.model", "tests/fixtures/tokenizer/bpe_tiny.model");
    { unsigned char buf[4096]; n = unigram_model(buf); wr("spm", "unigram_min.model", buf, n); }
    /* tokenize (byte 0 = tokenizer/mode), grounding, prompt */
    for (i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char buf[1024];
        buf[0] = (char)(i * 5 + 1);
        snprintf(buf + 1, sizeof buf - 1, "%s", texts[i]);
        snprintf(name, sizeof name, "text%zu", i);
        wr("tokenize", name, buf, strlen(buf + 1) + 1);
        wr_text("grounding", name, texts[i]);
    }
    {   /* some corpus lines */
        char *c = (char *)rd("tests/fixtures/tokenizer/corpus.txt", &n), *line = c, *nl;
        int k = 0;
        while ((nl = strchr(line, '\n')) && k < 40) {
            if (nl - line > 0 && nl - line < 400 && (k++ % 4) == 0) {
                char buf[512];
                buf[0] = (char)k;
                memcpy(buf + 1, line, (size_t)(nl - line));
                snprintf(name, sizeof name, "corpus%d", k);
                wr("tokenize", name, buf, (size_t)(nl - line) + 1);
            }
            line = nl + 1;
        }
        free(c);
    }
    {   /* grounding cases: the text column of the reference file's "case" lines */
        char *c = (char *)rd("tests/fixtures/grounding/post_process.txt", &n), *line = c, *nl;
        int k = 0;
        while ((nl = strchr(line, '\n')) && k < 24) {
            if (!strncmp(line, "case\t", 5)) {
                char *t = strchr(line + 5, '\t');
                if (t && t < nl && (k++ % 3) == 0) {
                    snprintf(name, sizeof name, "case%d", k);
                    wr("grounding", name, t + 1, (size_t)(nl - t - 1));
                }
            }
            line = nl + 1;
        }
        free(c);
    }
    {   /* prompt: header byte (2 groups), group bytes (1 box as doubles; 2 patch pairs), payload, text */
        unsigned char buf[256];
        double box[4] = {0.1, 0.2, 0.55, 0.9};
        int pairs[4] = {44, 863, 5, 911};
        const char *txt = "<grounding><phrase> a snowman</phrase> warming himself by<phrase> a fire</phrase>.";
        size_t k = 0;
        buf[k++] = 2; buf[k++] = 1; buf[k++] = 4 | 2;
        memcpy(buf + k, box, 32); k += 32;
        memcpy(buf + k, pairs, 16); k += 16;
        memcpy(buf + k, txt, strlen(txt)); k += strlen(txt);
        wr("prompt", "two_phrases", buf, k);
        k = 0;
        buf[k++] = 1; buf[k++] = 3;
        for (i = 0; i < 3; i++) { memcpy(buf + k, box, 32); k += 32; }
        memcpy(buf + k, "<phrase>it</phrase>", 19); k += 19;
        wr("prompt", "three_boxes", buf, k);
        wr("prompt", "no_boxes", "\0<phrase>a</phrase>", 19);
    }
    for (i = 0; i < sizeof images / sizeof images[0]; i++) {
        char from[256];
        snprintf(from, sizeof from, "tests/fixtures/images/%s", images[i]);
        copy("image", images[i], from);
    }
    printf("seeds written to tests/fuzz/corpus/\n");
    return 0;
}
