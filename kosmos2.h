/* kosmos2.h - Microsoft Kosmos-2 (grounded multimodal LLM) in one C header.
 *
 * ============================================================================================
 *  USAGE
 * ============================================================================================
 *  This is an stb-style single-file library. In exactly ONE C or C++ file:
 *
 *      #define KOSMOS2_IMPLEMENTATION
 *      #include "kosmos2.h"
 *
 *  Everywhere else just #include "kosmos2.h". Link with -lm and -fopenmp (OpenMP is optional:
 *  without it everything runs on one thread). Image files are decoded with stb_image
 *  (Debian: libstb-dev, #include <stb/stb_image.h>); define KOSMOS2_NO_STB_IMAGE to leave image
 *  file decoding out (raw pixels still work).
 *
 *  The smallest program:
 *
 *      kosmos2_model *m; kosmos2_context *c;
 *      if (kosmos2_model_load("kosmos-2-patch14-224", NULL, &m)) { puts(kosmos2_last_error()); return 1; }
 *      kosmos2_context_new(m, NULL, &c);
 *      ... see examples/minimal.c ...
 *      kosmos2_context_free(c); kosmos2_model_free(m);
 *
 *  Contract:
 *   - Every function that can fail returns 0 (KOSMOS2_OK) or a negative KOSMOS2_E_* code, and
 *     kosmos2_last_error() (per thread) says what failed and where (file, tensor, byte offset).
 *   - The library never exits, never prints (unless a callback you pass prints), never aborts
 *     on bad input. Every file it reads is treated as hostile and bounds-checked.
 *   - A kosmos2_model is read-only after loading and may be shared by many threads; a
 *     kosmos2_context (KV cache, scratch) belongs to one thread at a time.
 *
 *  Configuration macros (define before the implementation include):
 *   KOSMOS2_MALLOC(n) / KOSMOS2_REALLOC(p,n) / KOSMOS2_FREE(p)   allocator (default: libc)
 *   KOSMOS2_NO_STB_IMAGE        do not include stb_image (no image file decoding)
 *   KOSMOS2_STB_IMAGE_INCLUDE   the header to include for stb_image (default <stb/stb_image.h>)
 *   KOSMOS2_STB_IMAGE_IMPLEMENTED  stb_image's implementation is already compiled elsewhere
 *   KOSMOS2_USE_LIBJPEG         decode JPEG with libjpeg(-turbo) as Pillow does (-ljpeg)
 *
 * ============================================================================================
 *  TABLE OF CONTENTS  (search for the banner text, e.g. "[7] VISION ENCODER")
 * ============================================================================================
 *   PUBLIC API
 *     errors, model & context, tokenizer, images, generation
 *   IMPLEMENTATION
 *     [1] PLATFORM        allocation, errors, files, mmap, threads
 *     [2] PARSERS         JSON, safetensors
 *     [3] CHECKPOINT      config.json, tensors by name, shapes checked
 *     [4] TOKENIZER       SentencePiece protobuf, normaliser, unigram/BPE, ids, decode
 *     [5] IMAGE           decode, Pillow-exact bicubic resize, normalise
 *     [6] KERNELS         matmul, layernorm, softmax, activations
 *     [7] VISION ENCODER  CLIP ViT
 *     [8] RESAMPLER       image-to-text projection (64 latent queries)
 *     [9] TEXT DECODER    sub-LN transformer with KV cache
 *     [10] GENERATION     greedy / beam / sampling, no-repeat n-gram
 *   LICENCE
 */
#ifndef KOSMOS2_H
#define KOSMOS2_H

#include <stddef.h>
#include <stdint.h>

#define KOSMOS2_VERSION "0.1.0"

#ifdef __cplusplus
extern "C" {
#endif

/* ============================================================================================
 *  PUBLIC API: errors
 * ============================================================================================ */
enum {
    KOSMOS2_OK = 0,
    KOSMOS2_E_INVALID = -1,     /* bad argument from the caller */
    KOSMOS2_E_IO = -2,          /* a file could not be opened / read / mapped */
    KOSMOS2_E_FORMAT = -3,      /* a file is malformed (JSON, safetensors, protobuf, image ...) */
    KOSMOS2_E_NOMEM = -4,       /* out of memory */
    KOSMOS2_E_LIMIT = -5,       /* a configured limit would be exceeded (pixels, context, ...) */
    KOSMOS2_E_ABORTED = -6,     /* the abort callback asked to stop */
    KOSMOS2_E_UNSUPPORTED = -7  /* valid input that this build does not handle */
};
/* What the last failing call on this thread said (never NULL; "" when nothing failed). */
const char *kosmos2_last_error(void);
/* A short name for an error code ("format error", ...). */
const char *kosmos2_strerror(int code);

/* During development the tokenizer and image sections live in parts/ and are inlined later. */
#define KOSMOS2__PART_API
#include "parts/tokenizer.h"
#include "parts/image.h"
#include "parts/grounding.h"
#include "parts/kernels.h"
#undef KOSMOS2__PART_API
/* ============================================================================================
 *  PUBLIC API: model, context, generation
 * ============================================================================================ */
typedef struct kosmos2_model kosmos2_model;     /* weights + tokenizer + config; read-only, shareable */
typedef struct kosmos2_context kosmos2_context; /* KV cache + scratch; one thread at a time */

/* The architecture, from config.json (HF defaults where a field is absent). */
typedef struct kosmos2_config {
    /* vision tower (CLIP ViT) */
    int vision_hidden;        /* hidden_size, 1024 */
    int vision_intermediate;  /* intermediate_size, 4096 */
    int vision_layers;        /* num_hidden_layers, 24 */
    int vision_heads;         /* num_attention_heads, 16 */
    int image_size;           /* 224 */
    int patch_size;           /* 14 */
    int num_channels;         /* 3 */
    float vision_eps;         /* layer_norm_eps, 1e-5 */
    char vision_act[24];      /* hidden_act, "quick_gelu" */
    /* text decoder */
    int vocab_size;           /* 65037 */
    int text_hidden;          /* embed_dim, 2048 */
    int text_layers;          /* layers, 24 */
    int text_heads;           /* attention_heads, 32 */
    int ffn_dim;              /* 8192 */
    int max_positions;        /* max_position_embeddings, 2048 */
    float text_eps;           /* layer_norm_eps, 1e-5 */
    int scale_embedding;      /* 1: embeddings x sqrt(embed_dim) */
    char text_act[24];        /* activation_function, "gelu" */
    int bos_id, eos_id, pad_id;   /* 0, 2, 1 */
    int no_repeat_ngram_size;     /* text_config's, 3 for the official checkpoint (0 = off) */
    /* connector */
    int latent_query_num;     /* 64 image tokens in the prompt */
} kosmos2_config;

typedef struct kosmos2_model_params {
    int use_mmap;   /* 1 (default): map weight files read-only instead of reading them */
    int n_threads;  /* default threads for contexts made from this model; 0 = all cores */
} kosmos2_model_params;

kosmos2_model_params kosmos2_model_default_params(void);
/* Load a Hugging Face checkpoint directory (config.json, model.safetensors or a sharded
 * model.safetensors.index.json, sentencepiece.bpe.model, preprocessor_config.json).
 * params may be NULL for the defaults. On failure *out is NULL and the error says which file. */
int kosmos2_model_load(const char *path, const kosmos2_model_params *params, kosmos2_model **out);
void kosmos2_model_free(kosmos2_model *model);
const kosmos2_config *kosmos2_model_config(const kosmos2_model *model);
const kosmos2_tokenizer *kosmos2_model_tokenizer(const kosmos2_model *model);
const kosmos2_preprocess_config *kosmos2_model_preprocess_config(const kosmos2_model *model);

/* Tensors as loaded (for tools and tests): index 0..n-1. `dtype` is the stored type ("F32", ...). */
typedef struct kosmos2_tensor_info {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[8];
    const void *data;     /* raw stored bytes */
    size_t nbytes;
} kosmos2_tensor_info;
int kosmos2_model_n_tensors(const kosmos2_model *model);
/* Progress of long operations: return nonzero to stop (KOSMOS2_E_ABORTED). */
typedef int (*kosmos2_progress_callback)(const char *tensor, const char *type, int done, int total, void *user_data);
/* Write the loaded model as one self-contained GGUF file (weights, config, tokenizer,
 * preprocessing), 64-byte aligned, with the large matrices in `type`: "f32", "f16", "bf16", "q8_0"
 * or "q4_0". Quantized files keep 1-D tensors and embeddings of positions in float32, the token
 * embedding (= lm_head) in float16, and rows that are not a multiple of 32 in float16; progress (may
 * be NULL) is told each tensor's chosen type. kosmos2_model_load(path.gguf) maps it back. */
int kosmos2_model_save_gguf(const kosmos2_model *model, const char *path, const char *type,
                            kosmos2_progress_callback progress, void *user_data);
int kosmos2_model_tensor(const kosmos2_model *model, int index, kosmos2_tensor_info *info);

typedef struct kosmos2_context_params {
    int n_threads;  /* 0 = the model's default (all cores) */
    int max_ctx;    /* cap on positions (prompt + generation); 0 = config max_position_embeddings */
} kosmos2_context_params;
kosmos2_context_params kosmos2_context_default_params(void);
/* A context holds one conversation's KV cache and scratch state. Many contexts may share one
 * model, each used by one thread at a time. params may be NULL. */
int kosmos2_context_new(const kosmos2_model *model, const kosmos2_context_params *params, kosmos2_context **out);
void kosmos2_context_free(kosmos2_context *ctx);

/* ---- the stages, one call each (for tools, teaching and tests) ---- */
/* pixels [3, S, S] (kosmos2_image_preprocess output) -> the vision encoder's last hidden state
 * [N = (S/P)^2 + 1, Dv] (before post-LN; NULL to skip) and the resampler's image embeddings
 * [64, D] (NULL to skip); the embeddings are also kept in ctx for the next prompt. */
int kosmos2_encode_image(kosmos2_context *ctx, const float *pixels, float *vision_hidden, float *image_embeds);
/* Use precomputed image embeddings [64, D] instead of encoding an image. */
int kosmos2_set_image_embeds(kosmos2_context *ctx, const float *image_embeds);
/* Append n tokens to the KV cache and compute the logits of the last one ([vocab_size], or NULL).
 * image_mask [n] (or NULL): 1 where the position takes the next image embedding. */
int kosmos2_decode(kosmos2_context *ctx, const int32_t *ids, int n, const uint8_t *image_mask, float *logits);
void kosmos2_kv_clear(kosmos2_context *ctx);
int kosmos2_kv_size(const kosmos2_context *ctx);

/* ---- generation ---- */
typedef struct kosmos2_generate_params {
    int max_new_tokens;        /* 128 */
    int num_beams;             /* 1: greedy (or sampling); >1: beam search as transformers */
    float length_penalty;      /* beam search: score = sum logprob / len^length_penalty (1.0) */
    int early_stopping;        /* beam search: stop once num_beams hypotheses are done (0) */
    int do_sample;             /* 0: greedy; 1: sample with temperature / top_k / top_p */
    float temperature;         /* 1.0 */
    int top_k;                 /* 0 = off */
    float top_p;               /* 1.0 = off */
    uint64_t seed;             /* sampling seed */
    int no_repeat_ngram_size;  /* -1: the model's text_config value (3 for Kosmos-2); 0: off */
    /* called with each new token as it is chosen (beam search: the final tokens at the end);
     * return nonzero to stop generating (not an error) */
    int (*on_token)(int32_t id, void *user_data);
    /* polled before each decode step; nonzero stops with KOSMOS2_E_ABORTED (tokens so far kept) */
    int (*abort_callback)(void *user_data);
    void *user_data;
} kosmos2_generate_params;
kosmos2_generate_params kosmos2_generate_default_params(void);

/* Generate after prompt ids [n_prompt] (from kosmos2_prompt_ids; encode the image first when
 * image_mask has ones). The KV cache is reset first. Writes up to cap generated ids (EOS
 * included when produced) to out_ids and their count to *n_out (also on error/abort). */
int kosmos2_generate_ids(kosmos2_context *ctx, const int32_t *prompt_ids, const uint8_t *image_mask, int n_prompt,
                         const kosmos2_generate_params *params, int32_t *out_ids, int cap, int *n_out);

/* ---- the whole pipeline in one call: image + prompt (+ boxes) -> text, caption, entities ---- */
typedef struct kosmos2_result {
    int32_t *prompt_ids;        /* [n_prompt] the prompt as the model saw it (<s>, image slots, ...) */
    int n_prompt;
    int32_t *ids;               /* [n_ids] generated ids (EOS included when produced) */
    int n_ids;
    char *prompt;               /* the prompt text after box markup was attached */
    char *text;                 /* prompt + generation decoded, special tokens skipped (HF batch_decode) */
    kosmos2_grounding grounding;/* caption + entities (processor.post_process_generation) */
    int image_width, image_height; /* of the input image (for boxes in pixels) */
    double t_preprocess_ms, t_vision_ms, t_resampler_ms, t_prefill_ms, t_decode_ms;
    int n_decode;               /* tokens generated (for tokens/s) */
} kosmos2_result;

/* Caption or answer for `image` (NULL: text only) and `prompt` (NULL: "<grounding>An image of").
 * boxes: per <phrase>...</phrase> of the prompt, in order (NULL/0: none), as the processor's
 * bboxes= argument. params may be NULL (greedy, 128 new tokens, the model's n-gram ban).
 * Free the result with kosmos2_result_free (also after a failure). */
int kosmos2_generate(kosmos2_context *ctx, const kosmos2_image *image, const char *prompt,
                     const kosmos2_phrase_boxes *boxes, int n_box_groups,
                     const kosmos2_generate_params *params, kosmos2_result *out);
void kosmos2_result_free(kosmos2_result *r);
/* Free memory the library allocated for the caller (strings from kosmos2_prompt_attach_boxes ...). */
void kosmos2_free(void *p);


#ifdef __cplusplus
}
#endif
#endif /* KOSMOS2_H */

/* ############################################################################################
 *  IMPLEMENTATION
 * ############################################################################################ */
#ifdef KOSMOS2_IMPLEMENTATION
#ifndef KOSMOS2_IMPLEMENTATION_DONE
#define KOSMOS2_IMPLEMENTATION_DONE

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>
#include <limits.h>
#include <errno.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ============================================================================================
 *  [1] PLATFORM: allocation, errors, files, mmap, threads
 * ============================================================================================ */
#ifndef KOSMOS2_MALLOC
#define KOSMOS2_MALLOC(n) malloc(n)
#define KOSMOS2_REALLOC(p, n) realloc(p, n)
#define KOSMOS2_FREE(p) free(p)
#endif

#if defined(__cplusplus) && __cplusplus >= 201103L
#define KOSMOS2__TLS thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_THREADS__)
#define KOSMOS2__TLS _Thread_local
#elif defined(__GNUC__) || defined(__clang__)
#define KOSMOS2__TLS __thread
#elif defined(_MSC_VER)
#define KOSMOS2__TLS __declspec(thread)
#else
#define KOSMOS2__TLS /* no thread-local storage: last error shared between threads */
#endif

#if defined(__GNUC__) || defined(__clang__)
#define KOSMOS2__PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KOSMOS2__UNUSED __attribute__((unused))
#else
#define KOSMOS2__PRINTF(a, b)
#define KOSMOS2__UNUSED
#endif

static KOSMOS2__TLS char kosmos2__errbuf[1024];

const char *kosmos2_last_error(void) { return kosmos2__errbuf; }

const char *kosmos2_strerror(int code) {
    switch (code) {
    case KOSMOS2_OK: return "ok";
    case KOSMOS2_E_INVALID: return "invalid argument";
    case KOSMOS2_E_IO: return "i/o error";
    case KOSMOS2_E_FORMAT: return "format error";
    case KOSMOS2_E_NOMEM: return "out of memory";
    case KOSMOS2_E_LIMIT: return "limit exceeded";
    case KOSMOS2_E_ABORTED: return "aborted";
    case KOSMOS2_E_UNSUPPORTED: return "unsupported";
    default: return "unknown error";
    }
}

/* Record an error message for this thread and return `code` (so: `return kosmos2__fail(...)`). */
static int kosmos2__fail(int code, const char *fmt, ...) KOSMOS2__PRINTF(2, 3);
static int kosmos2__fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kosmos2__errbuf, sizeof kosmos2__errbuf, fmt, ap);
    va_end(ap);
    return code;
}

/* Prefix the current error message with more context ("file.json: " + message). */
static int kosmos2__wrap(int code, const char *fmt, ...) KOSMOS2__PRINTF(2, 3);
KOSMOS2__UNUSED static int kosmos2__wrap(int code, const char *fmt, ...) {
    char prefix[512], old[sizeof kosmos2__errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, kosmos2__errbuf, sizeof old);
    {   /* prefix + old message, cut to the buffer */
        size_t np = strlen(prefix), no = strlen(old);
        if (np > sizeof kosmos2__errbuf - 1) np = sizeof kosmos2__errbuf - 1;
        if (no > sizeof kosmos2__errbuf - 1 - np) no = sizeof kosmos2__errbuf - 1 - np;
        memcpy(kosmos2__errbuf, prefix, np);
        memcpy(kosmos2__errbuf + np, old, no);
        kosmos2__errbuf[np + no] = 0;
    }
    return code;
}

KOSMOS2__UNUSED static void kosmos2__clear_error(void) { kosmos2__errbuf[0] = 0; }

/* Wall-clock milliseconds (monotonic where available), for the timings reported to callers. */
#if defined(__unix__) || defined(__APPLE__)
#include <time.h>
static double kosmos2__now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}
#else
#include <time.h>
static double kosmos2__now_ms(void) { return (double)clock() * 1e3 / CLOCKS_PER_SEC; }
#endif

/* malloc that records an error; n == 0 allocates 1 byte so that NULL always means failure. */
KOSMOS2__UNUSED static void *kosmos2__alloc(size_t n) {
    void *p = KOSMOS2_MALLOC(n ? n : 1);
    if (!p) kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}
KOSMOS2__UNUSED static void *kosmos2__calloc(size_t count, size_t size) {
    void *p;
    if (size && count > SIZE_MAX / size) {
        kosmos2__fail(KOSMOS2_E_NOMEM, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    p = kosmos2__alloc(count * size);
    if (p && count && size) memset(p, 0, count * size);
    return p;
}
KOSMOS2__UNUSED static char *kosmos2__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = (char *)kosmos2__alloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* ============================================================================================
 *  [2] PARSERS: JSON, safetensors
 * ============================================================================================
 *  Both parsers read untrusted bytes: every read is bounds-checked, nesting and sizes are
 *  limited, and a failure says what and at which byte offset. */

/* ---- JSON: a small DOM (config.json, preprocessor_config.json, safetensors headers) ---------- */
typedef enum { KOSMOS2__JNULL, KOSMOS2__JBOOL, KOSMOS2__JNUM, KOSMOS2__JSTR, KOSMOS2__JARR, KOSMOS2__JOBJ } kosmos2__jtype;

typedef struct kosmos2__json {
    kosmos2__jtype type;
    double num;                   /* JNUM, JBOOL (0/1) */
    char *str;                    /* JSTR: decoded UTF-8, NUL-terminated (may contain NUL via \u0000) */
    size_t len;                   /* JSTR: byte length; JARR/JOBJ: number of items */
    struct kosmos2__json *items;  /* JARR/JOBJ: [len] values */
    char **keys;                  /* JOBJ: [len] keys */
} kosmos2__json;

typedef struct {
    const char *s; /* the text [n] (not NUL-terminated) */
    size_t n, pos;
    int depth;
} kosmos2__jparser;

#define KOSMOS2__JSON_MAX_DEPTH 64

static void kosmos2__json_free(kosmos2__json *v) {
    size_t i;
    if (!v) return;
    if (v->type == KOSMOS2__JSTR) KOSMOS2_FREE(v->str);
    if (v->type == KOSMOS2__JARR || v->type == KOSMOS2__JOBJ) {
        for (i = 0; i < v->len; i++) {
            kosmos2__json_free(&v->items[i]);
            if (v->keys) KOSMOS2_FREE(v->keys[i]);
        }
        KOSMOS2_FREE(v->items);
        KOSMOS2_FREE(v->keys);
    }
    memset(v, 0, sizeof *v);
}

static int kosmos2__jerr(kosmos2__jparser *p, const char *what) {
    return kosmos2__fail(KOSMOS2_E_FORMAT, "invalid JSON at byte %zu: %s", p->pos, what);
}

static void kosmos2__jskip_ws(kosmos2__jparser *p) {
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r')) p->pos++;
}

static int kosmos2__jhex4(kosmos2__jparser *p, unsigned *out) {
    unsigned v = 0;
    int i;
    if (p->n - p->pos < 4) return kosmos2__jerr(p, "truncated \\u escape");
    for (i = 0; i < 4; i++) {
        char c = p->s[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return kosmos2__jerr(p, "bad hex digit in \\u escape");
    }
    *out = v;
    return 0;
}

/* Append code point cp as UTF-8 to buf (which has room: at most 4 bytes per escape). */
static size_t kosmos2__utf8_put(char *buf, unsigned cp) {
    if (cp < 0x80) { buf[0] = (char)cp; return 1; }
    if (cp < 0x800) { buf[0] = (char)(0xC0 | (cp >> 6)); buf[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        buf[0] = (char)(0xE0 | (cp >> 12)); buf[1] = (char)(0x80 | ((cp >> 6) & 63)); buf[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    buf[0] = (char)(0xF0 | (cp >> 18)); buf[1] = (char)(0x80 | ((cp >> 12) & 63));
    buf[2] = (char)(0x80 | ((cp >> 6) & 63)); buf[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* A string starting at the opening quote. The decoded form is never longer than the source. */
static int kosmos2__jstring(kosmos2__jparser *p, char **out, size_t *out_len) {
    size_t start = ++p->pos, end = start, o = 0;
    char *buf;
    while (end < p->n && p->s[end] != '"') end += (p->s[end] == '\\') ? 2 : 1;
    if (end >= p->n) return kosmos2__jerr(p, "unterminated string");
    buf = (char *)kosmos2__alloc(end - start + 1);
    if (!buf) return KOSMOS2_E_NOMEM;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos++];
        if (c < 0x20) { KOSMOS2_FREE(buf); return kosmos2__jerr(p, "control character in string"); }
        if (c != '\\') { buf[o++] = (char)c; continue; }
        c = (unsigned char)p->s[p->pos++];
        switch (c) {
        case '"': buf[o++] = '"'; break;
        case '\\': buf[o++] = '\\'; break;
        case '/': buf[o++] = '/'; break;
        case 'b': buf[o++] = '\b'; break;
        case 'f': buf[o++] = '\f'; break;
        case 'n': buf[o++] = '\n'; break;
        case 'r': buf[o++] = '\r'; break;
        case 't': buf[o++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (p->pos + 4 > end || kosmos2__jhex4(p, &cp)) { KOSMOS2_FREE(buf); return kosmos2__jerr(p, "bad \\u escape"); }
            if (cp >= 0xD800 && cp < 0xDC00 && p->pos + 6 <= end && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
                size_t save = p->pos;
                p->pos += 2;
                if (kosmos2__jhex4(p, &lo)) { KOSMOS2_FREE(buf); return KOSMOS2_E_FORMAT; }
                if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else p->pos = save; /* lone high surrogate: kept as is, like Python */
            }
            o += kosmos2__utf8_put(buf + o, cp); /* 6 source bytes -> at most 3 (4 for a pair of 12) */
            break;
        }
        default: KOSMOS2_FREE(buf); return kosmos2__jerr(p, "bad escape in string");
        }
    }
    buf[o] = 0;
    p->pos = end + 1;
    *out = buf;
    *out_len = o;
    return 0;
}

static int kosmos2__jnumber(kosmos2__jparser *p, double *out) {
    size_t s = p->pos, n;
    char tmp[64], *e;
    if (p->pos < p->n && p->s[p->pos] == '-') p->pos++;
    if (p->pos >= p->n || p->s[p->pos] < '0' || p->s[p->pos] > '9') return kosmos2__jerr(p, "bad number");
    if (p->s[p->pos] == '0') p->pos++;
    else while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    if (p->pos < p->n && p->s[p->pos] == '.') {
        p->pos++;
        if (p->pos >= p->n || p->s[p->pos] < '0' || p->s[p->pos] > '9') return kosmos2__jerr(p, "bad fraction");
        while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->n || p->s[p->pos] < '0' || p->s[p->pos] > '9') return kosmos2__jerr(p, "bad exponent");
        while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    }
    n = p->pos - s;
    if (n >= sizeof tmp) { /* absurdly long literal: keep its leading digits' magnitude via strtod on a copy */
        char *big = (char *)kosmos2__alloc(n + 1);
        if (!big) return KOSMOS2_E_NOMEM;
        memcpy(big, p->s + s, n);
        big[n] = 0;
        *out = strtod(big, &e);
        KOSMOS2_FREE(big);
        return 0;
    }
    memcpy(tmp, p->s + s, n);
    tmp[n] = 0;
    *out = strtod(tmp, &e);
    return 0;
}

static int kosmos2__jvalue(kosmos2__jparser *p, kosmos2__json *v);

/* Parse the items of an array or object; p->pos is just after the opening bracket. */
static int kosmos2__jcontainer(kosmos2__jparser *p, kosmos2__json *v, int is_obj) {
    size_t cap = 0;
    char close = is_obj ? '}' : ']';
    int rc;
    v->type = is_obj ? KOSMOS2__JOBJ : KOSMOS2__JARR;
    if (++p->depth > KOSMOS2__JSON_MAX_DEPTH) return kosmos2__jerr(p, "nesting too deep");
    kosmos2__jskip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == close) { p->pos++; p->depth--; return 0; }
    for (;;) {
        char *key = NULL;
        size_t klen;
        if (v->len == cap) { /* grow items (and keys) */
            size_t ncap = cap ? cap * 2 : 8;
            kosmos2__json *ni = (kosmos2__json *)KOSMOS2_REALLOC(v->items, ncap * sizeof *ni);
            if (!ni) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory parsing JSON");
            v->items = ni;
            if (is_obj) {
                char **nk = (char **)KOSMOS2_REALLOC(v->keys, ncap * sizeof *nk);
                if (!nk) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory parsing JSON");
                v->keys = nk;
            }
            cap = ncap;
        }
        kosmos2__jskip_ws(p);
        if (is_obj) {
            if (p->pos >= p->n || p->s[p->pos] != '"') return kosmos2__jerr(p, "expected a string key");
            if ((rc = kosmos2__jstring(p, &key, &klen)) != 0) return rc;
            kosmos2__jskip_ws(p);
            if (p->pos >= p->n || p->s[p->pos] != ':') { KOSMOS2_FREE(key); return kosmos2__jerr(p, "expected ':'"); }
            p->pos++;
        }
        memset(&v->items[v->len], 0, sizeof v->items[0]);
        if (is_obj) v->keys[v->len] = key;
        v->len++; /* counted now so that a failure below frees the key and partial value */
        if ((rc = kosmos2__jvalue(p, &v->items[v->len - 1])) != 0) return rc;
        kosmos2__jskip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->n && p->s[p->pos] == close) { p->pos++; p->depth--; return 0; }
        return kosmos2__jerr(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int kosmos2__jvalue(kosmos2__jparser *p, kosmos2__json *v) {
    kosmos2__jskip_ws(p);
    if (p->pos >= p->n) return kosmos2__jerr(p, "unexpected end of input");
    switch (p->s[p->pos]) {
    case '{': p->pos++; return kosmos2__jcontainer(p, v, 1);
    case '[': p->pos++; return kosmos2__jcontainer(p, v, 0);
    case '"': v->type = KOSMOS2__JSTR; return kosmos2__jstring(p, &v->str, &v->len);
    case 't':
        if (p->n - p->pos >= 4 && !memcmp(p->s + p->pos, "true", 4)) { p->pos += 4; v->type = KOSMOS2__JBOOL; v->num = 1; return 0; }
        break;
    case 'f':
        if (p->n - p->pos >= 5 && !memcmp(p->s + p->pos, "false", 5)) { p->pos += 5; v->type = KOSMOS2__JBOOL; v->num = 0; return 0; }
        break;
    case 'n':
        if (p->n - p->pos >= 4 && !memcmp(p->s + p->pos, "null", 4)) { p->pos += 4; v->type = KOSMOS2__JNULL; return 0; }
        break;
    default: v->type = KOSMOS2__JNUM; return kosmos2__jnumber(p, &v->num);
    }
    return kosmos2__jerr(p, "unexpected character");
}

/* Parse text[0..n-1] into *out (free with kosmos2__json_free). Trailing garbage is an error. */
static int kosmos2__json_parse(const char *text, size_t n, kosmos2__json *out) {
    kosmos2__jparser p;
    int rc;
    p.s = text; p.n = n; p.pos = 0; p.depth = 0;
    memset(out, 0, sizeof *out);
    rc = kosmos2__jvalue(&p, out);
    if (rc == 0) {
        kosmos2__jskip_ws(&p);
        if (p.pos != p.n) rc = kosmos2__jerr(&p, "trailing characters after the value");
    }
    if (rc) kosmos2__json_free(out);
    return rc;
}

/* Member `key` of object v, or NULL. */
static const kosmos2__json *kosmos2__json_get(const kosmos2__json *v, const char *key) {
    size_t i;
    if (!v || v->type != KOSMOS2__JOBJ) return NULL;
    for (i = 0; i < v->len; i++)
        if (strcmp(v->keys[i], key) == 0) return &v->items[i];
    return NULL;
}

/* ---- files: whole-file reads and read-only memory maps ---------------------------------- */
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#define KOSMOS2__HAVE_MMAP 1
#endif

typedef struct {
    unsigned char *data; /* [size] bytes */
    size_t size;
    int mapped; /* 1: munmap on close, 0: KOSMOS2_FREE */
} kosmos2__file;

static void kosmos2__file_close(kosmos2__file *f) {
    if (!f->data) return;
#ifdef KOSMOS2__HAVE_MMAP
    if (f->mapped) munmap(f->data, f->size);
    else
#endif
        KOSMOS2_FREE(f->data);
    memset(f, 0, sizeof *f);
}

/* Open `path` read-only: memory-mapped when use_mmap and the platform allows, else read whole. */
static int kosmos2__file_open(const char *path, int use_mmap, kosmos2__file *f) {
    FILE *fp;
    long sz;
    memset(f, 0, sizeof *f);
#ifdef KOSMOS2__HAVE_MMAP
    if (use_mmap) {
        struct stat st;
        int fd = open(path, O_RDONLY);
        if (fd < 0) return kosmos2__fail(KOSMOS2_E_IO, "%s: cannot open: %s", path, strerror(errno));
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { close(fd); return kosmos2__fail(KOSMOS2_E_IO, "%s: not a regular file", path); }
        f->size = (size_t)st.st_size;
        if (f->size == 0) { close(fd); f->data = (unsigned char *)kosmos2__alloc(1); return f->data ? 0 : KOSMOS2_E_NOMEM; }
        f->data = (unsigned char *)mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (f->data == (unsigned char *)MAP_FAILED) { f->data = NULL; return kosmos2__fail(KOSMOS2_E_IO, "%s: mmap failed: %s", path, strerror(errno)); }
        f->mapped = 1;
        return 0;
    }
#endif
    (void)use_mmap;
#ifdef KOSMOS2__HAVE_MMAP
    {   /* a directory opens with fopen but has no size (ftell gives LONG_MAX): refuse it first */
        struct stat st;
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) return kosmos2__fail(KOSMOS2_E_IO, "%s: not a regular file", path);
    }
#endif
    fp = fopen(path, "rb");
    if (!fp) return kosmos2__fail(KOSMOS2_E_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0 || (sz = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return kosmos2__fail(KOSMOS2_E_IO, "%s: cannot determine the file size", path);
    }
    f->size = (size_t)sz;
    f->data = (unsigned char *)kosmos2__alloc(f->size + 1);
    if (!f->data) { fclose(fp); return KOSMOS2_E_NOMEM; }
    if (fread(f->data, 1, f->size, fp) != f->size) {
        fclose(fp);
        kosmos2__file_close(f);
        return kosmos2__fail(KOSMOS2_E_IO, "%s: read error", path);
    }
    fclose(fp);
    return 0;
}

static int kosmos2__file_exists(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (fp) fclose(fp);
    return fp != NULL;
}

/* Read and parse a JSON file; errors are prefixed with the path. */
static int kosmos2__json_load(const char *path, kosmos2__json *out) {
    kosmos2__file f;
    int rc = kosmos2__file_open(path, 0, &f);
    memset(out, 0, sizeof *out);
    if (rc) return rc;
    if (f.size > ((size_t)64 << 20)) { kosmos2__file_close(&f); return kosmos2__fail(KOSMOS2_E_LIMIT, "%s: JSON file larger than 64 MiB", path); }
    rc = kosmos2__json_parse((const char *)f.data, f.size, out);
    kosmos2__file_close(&f);
    if (rc) return kosmos2__wrap(rc, "%s: ", path);
    return 0;
}

/* ---- safetensors ---------------------------------------------------------------------------
 *  File = u64 little-endian header length N, N bytes of JSON {name: {"dtype", "shape",
 *  "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data section; offsets are
 *  relative to the data section. We check: N fits the file, every dtype is known, every shape is
 *  sane, end - begin == prod(shape) * dtype size, ranges inside the data section and not
 *  overlapping. */
typedef struct {
    char *name;
    char dtype[8];            /* "F32", "F16", "BF16", ... as stored */
    int ndim;
    int64_t shape[8];
    const unsigned char *data; /* into the mapped file */
    size_t nbytes;
    int file;                  /* index of the file it lives in */
} kosmos2__tensor;

static int kosmos2__dtype_size(const char *dt) {
    if (!strcmp(dt, "F32") || !strcmp(dt, "I32") || !strcmp(dt, "U32")) return 4;
    if (!strcmp(dt, "F16") || !strcmp(dt, "BF16") || !strcmp(dt, "I16") || !strcmp(dt, "U16")) return 2;
    if (!strcmp(dt, "F64") || !strcmp(dt, "I64") || !strcmp(dt, "U64")) return 8;
    if (!strcmp(dt, "I8") || !strcmp(dt, "U8") || !strcmp(dt, "BOOL") || !strcmp(dt, "F8_E4M3") || !strcmp(dt, "F8_E5M2")) return 1;
    return 0;
}

static int kosmos2__cmp_range(const void *a, const void *b) {
    const kosmos2__tensor *x = *(const kosmos2__tensor *const *)a, *y = *(const kosmos2__tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data ? 1 : 0;
}

/* No two tensors of one file may share bytes. */
static int kosmos2__check_overlaps(const char *path, kosmos2__tensor *t, int n) {
    kosmos2__tensor **sorted;
    int i, rc = 0;
    if (n < 2) return 0;
    sorted = (kosmos2__tensor **)kosmos2__alloc((size_t)n * sizeof *sorted);
    if (!sorted) return KOSMOS2_E_NOMEM;
    for (i = 0; i < n; i++) sorted[i] = &t[i];
    qsort(sorted, (size_t)n, sizeof *sorted, kosmos2__cmp_range);
    for (i = 1; i < n && !rc; i++)
        if (sorted[i]->data < sorted[i - 1]->data + sorted[i - 1]->nbytes)
            rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensors '%s' and '%s' overlap", path, sorted[i - 1]->name, sorted[i]->name);
    KOSMOS2_FREE(sorted);
    return rc;
}

/* Parse the tensors of one mapped safetensors file and append them to *tensors (grown). */
static int kosmos2__safetensors_parse(const char *path, const kosmos2__file *f, int file_index,
                                      kosmos2__tensor **tensors, int *n_tensors) {
    uint64_t hlen = 0;
    const unsigned char *data;
    size_t data_size, i, first = (size_t)*n_tensors;
    kosmos2__json root;
    int rc, k;
    if (f->size < 8) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: not a safetensors file (only %zu bytes)", path, f->size);
    for (k = 7; k >= 0; k--) hlen = (hlen << 8) | f->data[k];
    if (hlen > f->size - 8) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: header length %llu exceeds the file size %zu (truncated or not safetensors)", path, (unsigned long long)hlen, f->size);
    if (hlen > ((uint64_t)100 << 20)) return kosmos2__fail(KOSMOS2_E_LIMIT, "%s: header length %llu is over 100 MiB", path, (unsigned long long)hlen);
    if ((rc = kosmos2__json_parse((const char *)f->data + 8, (size_t)hlen, &root)) != 0) return kosmos2__wrap(rc, "%s: header: ", path);
    if (root.type != KOSMOS2__JOBJ) { kosmos2__json_free(&root); return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: header is not a JSON object", path); }
    data = f->data + 8 + hlen;
    data_size = f->size - 8 - (size_t)hlen;
    for (i = 0; i < root.len; i++) {
        const kosmos2__json *t = &root.items[i], *dt, *sh, *off;
        kosmos2__tensor *ts;
        uint64_t count = 1, b, e;
        int esz, d;
        if (!strcmp(root.keys[i], "__metadata__")) continue;
        dt = kosmos2__json_get(t, "dtype"); sh = kosmos2__json_get(t, "shape"); off = kosmos2__json_get(t, "data_offsets");
        if (!dt || dt->type != KOSMOS2__JSTR || !sh || sh->type != KOSMOS2__JARR || !off || off->type != KOSMOS2__JARR || off->len != 2) {
            rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': missing or malformed dtype/shape/data_offsets", path, root.keys[i]);
            goto fail;
        }
        esz = strlen(dt->str) == dt->len ? kosmos2__dtype_size(dt->str) : 0; /* "F32\u0000x" is not F32 */
        if (!esz) { rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': unknown dtype '%.16s'", path, root.keys[i], dt->str); goto fail; }
        if (sh->len > 8) { rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': %zu dimensions (max 8)", path, root.keys[i], sh->len); goto fail; }
        if (*n_tensors % 64 == 0) {
            kosmos2__tensor *nt = (kosmos2__tensor *)KOSMOS2_REALLOC(*tensors, ((size_t)*n_tensors + 64) * sizeof *nt);
            if (!nt) { rc = kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory"); goto fail; }
            *tensors = nt;
        }
        ts = &(*tensors)[*n_tensors];
        memset(ts, 0, sizeof *ts);
        for (d = 0; d < (int)sh->len; d++) {
            double v = sh->items[d].num;
            if (sh->items[d].type != KOSMOS2__JNUM || v < 0 || v > 4e12 || v != floor(v)) {
                rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': bad shape entry", path, root.keys[i]);
                goto fail;
            }
            ts->shape[d] = (int64_t)v;
            if (ts->shape[d] && count > UINT64_MAX / 16 / (uint64_t)ts->shape[d]) {
                rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': shape overflows", path, root.keys[i]);
                goto fail;
            }
            count *= (uint64_t)ts->shape[d];
        }
        if (off->items[0].type != KOSMOS2__JNUM || off->items[1].type != KOSMOS2__JNUM || off->items[0].num < 0 ||
            off->items[1].num < off->items[0].num || off->items[1].num > (double)data_size ||
            off->items[0].num != floor(off->items[0].num) || off->items[1].num != floor(off->items[1].num)) {
            rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': data_offsets outside the data section (%zu bytes)", path, root.keys[i], data_size);
            goto fail;
        }
        b = (uint64_t)off->items[0].num; e = (uint64_t)off->items[1].num;
        if (e - b != count * (uint64_t)esz) {
            rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': byte range %llu..%llu does not match shape x dtype (%llu bytes)", path,
                               root.keys[i], (unsigned long long)b, (unsigned long long)e, (unsigned long long)(count * (uint64_t)esz));
            goto fail;
        }
        ts->name = kosmos2__strdup(root.keys[i]);
        if (!ts->name) { rc = KOSMOS2_E_NOMEM; goto fail; }
        memcpy(ts->dtype, dt->str, strlen(dt->str) + 1);
        ts->ndim = (int)sh->len;
        ts->data = data + b;
        ts->nbytes = (size_t)(e - b);
        ts->file = file_index;
        (*n_tensors)++;
    }
    kosmos2__json_free(&root);
    return kosmos2__check_overlaps(path, *tensors + first, *n_tensors - (int)first);
fail:
    kosmos2__json_free(&root);
    return rc;
}


#include "parts/tokenizer.h"
#include "parts/image.h"
#include "parts/kernels.h"

/* ============================================================================================
 *  [3] CHECKPOINT: config.json, preprocessor_config.json, tensors by name, shapes checked
 * ============================================================================================ */
typedef struct { const float *w, *b; } kosmos2__ln;          /* LayerNorm weight [n], bias [n] */
typedef struct { kosmos2__mat w; const float *b; } kosmos2__linear; /* y = x W^T + b: w [out, in], b [out] */

typedef struct {             /* one CLIP encoder layer (pre-LN) */
    kosmos2__ln ln1, ln2;    /* layer_norm1, layer_norm2 [Dv] */
    kosmos2__linear q, k, v, o;  /* self_attn.{q,k,v,out}_proj [Dv, Dv] */
    kosmos2__linear fc1, fc2;    /* mlp.fc1 [Fv, Dv], mlp.fc2 [Dv, Fv] */
} kosmos2__vision_layer;

typedef struct {             /* one text decoder block (pre-LN with two sub-LNs) */
    kosmos2__ln attn_ln;     /* self_attn_layer_norm [D] */
    kosmos2__linear q, k, v, o;  /* self_attn.{q,k,v,out}_proj [D, D] */
    kosmos2__ln inner_ln;    /* self_attn.inner_attn_ln [D]: on the merged context, before out_proj */
    kosmos2__ln ffn_pre_ln;  /* final_layer_norm [D]: the block's pre-FFN norm (misleading HF name) */
    kosmos2__linear fc1, fc2;    /* ffn.fc1 [F, D], ffn.fc2 [D, F] */
    kosmos2__ln ffn_ln;      /* ffn.ffn_layernorm [F]: after the activation, before fc2 */
} kosmos2__text_layer;

struct kosmos2_model {
    kosmos2_config cfg;
    kosmos2_preprocess_config pp;
    kosmos2_tokenizer *tok;
    int n_threads;
    kosmos2__file files[64];  /* the mapped safetensors files */
    int n_files;
    kosmos2__tensor *tensors; /* [n_tensors], data pointers into files */
    int n_tensors;
    char *config_json;        /* config.json as read (kept for `quantize`) */
    char *preproc_json;       /* preprocessor_config.json as read ("" when absent) */
    unsigned char *spm;       /* [spm_size] sentencepiece.bpe.model bytes */
    size_t spm_size;
    void **owned;             /* float32 copies made at load (non-f32 vectors, misaligned data) */
    int n_owned, cap_owned;
    /* vision tower */
    kosmos2__mat patch_w;     /* patch_embedding.weight [Dv, C*P*P] (a conv as a matrix) */
    const float *class_emb;   /* class_embedding [Dv] */
    const float *pos_emb;     /* position_embedding.weight [N = (S/P)^2 + 1, Dv] */
    kosmos2__ln pre_ln, post_ln;  /* pre_layrnorm, post_layernorm [Dv] */
    kosmos2__vision_layer *vl;    /* [vision_layers] */
    /* image-to-text projection (the resampler) */
    kosmos2__linear dense;    /* dense [D, Dv] */
    const float *latent_query;    /* latent_query [Q = 64, D] */
    kosmos2__linear xq, xk, xv, xo;   /* x_attn.{q,k,v,out}_proj [D, D] */
    /* text decoder */
    kosmos2__mat embed;       /* embed_tokens.weight [V, D] */
    kosmos2__mat lm_head;     /* lm_head.weight [V, D] (the same memory as embed when tied) */
    kosmos2__text_layer *tl;  /* [text_layers] */
    kosmos2__ln final_ln;     /* layer_norm [D] */
};

kosmos2_model_params kosmos2_model_default_params(void) {
    kosmos2_model_params p;
    p.use_mmap = 1;
    p.n_threads = 0;
    return p;
}

/* ---- config.json ----------------------------------------------------------------------- */
/* Read integer field `key` of object o into *out (unchanged when absent). */
static int kosmos2__cfg_int(const kosmos2__json *o, const char *sect, const char *key, int lo, int hi, int *out) {
    const kosmos2__json *v = kosmos2__json_get(o, key);
    if (!v || v->type == KOSMOS2__JNULL) return 0;
    if (v->type != KOSMOS2__JNUM || v->num != floor(v->num) || v->num < lo || v->num > hi)
        return kosmos2__fail(KOSMOS2_E_FORMAT, "%s%s must be an integer in [%d, %d]", sect, key, lo, hi);
    *out = (int)v->num;
    return 0;
}
static int kosmos2__cfg_float(const kosmos2__json *o, const char *sect, const char *key, float *out) {
    const kosmos2__json *v = kosmos2__json_get(o, key);
    if (!v || v->type == KOSMOS2__JNULL) return 0;
    if (v->type != KOSMOS2__JNUM || !(v->num > 0 && v->num < 1)) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s%s must be a number in (0, 1)", sect, key);
    *out = (float)v->num;
    return 0;
}
static int kosmos2__cfg_bool(const kosmos2__json *o, const char *key, int *out) {
    const kosmos2__json *v = kosmos2__json_get(o, key);
    if (v && (v->type == KOSMOS2__JBOOL || v->type == KOSMOS2__JNUM)) *out = v->num != 0;
    return 0;
}
static int kosmos2__cfg_str(const kosmos2__json *o, const char *sect, const char *key, char *out, size_t cap) {
    const kosmos2__json *v = kosmos2__json_get(o, key);
    if (!v || v->type == KOSMOS2__JNULL) return 0;
    if (v->type != KOSMOS2__JSTR || v->len >= cap) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s%s must be a short string", sect, key);
    memcpy(out, v->str, v->len + 1);
    return 0;
}

static int kosmos2__act_known(const char *a) {
    return !strcmp(a, "gelu") || !strcmp(a, "quick_gelu") || !strcmp(a, "gelu_new") || !strcmp(a, "gelu_pytorch_tanh") ||
           !strcmp(a, "relu") || !strcmp(a, "silu") || !strcmp(a, "swish");
}

/* Fill cfg from the parsed config.json; absent fields keep transformers' defaults. */
static int kosmos2__config_from_json(const kosmos2__json *root, kosmos2_config *c) {
    const kosmos2__json *t = kosmos2__json_get(root, "text_config"), *v = kosmos2__json_get(root, "vision_config");
    const kosmos2__json *mt = kosmos2__json_get(root, "model_type");
    const int BIG = 1 << 20;
    int rc = 0;
    memset(c, 0, sizeof *c);
    c->vision_hidden = 1024; c->vision_intermediate = 4096; c->vision_layers = 24; c->vision_heads = 16;
    c->image_size = 224; c->patch_size = 14; c->num_channels = 3; c->vision_eps = 1e-5f; strcpy(c->vision_act, "quick_gelu");
    c->vocab_size = 65037; c->text_hidden = 2048; c->text_layers = 24; c->text_heads = 32; c->ffn_dim = 8192;
    c->max_positions = 2048; c->text_eps = 1e-5f; c->scale_embedding = 1; strcpy(c->text_act, "gelu");
    c->bos_id = 0; c->eos_id = 2; c->pad_id = 1; c->no_repeat_ngram_size = 0; c->latent_query_num = 64;
    if (root->type != KOSMOS2__JOBJ) return kosmos2__fail(KOSMOS2_E_FORMAT, "not a JSON object");
    if (mt && (mt->type != KOSMOS2__JSTR || strcmp(mt->str, "kosmos-2") != 0))
        return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "model_type is '%s', expected 'kosmos-2'", mt->type == KOSMOS2__JSTR ? mt->str : "?");
    if ((t && t->type != KOSMOS2__JOBJ) || (v && v->type != KOSMOS2__JOBJ))
        return kosmos2__fail(KOSMOS2_E_FORMAT, "text_config and vision_config must be objects");
    rc |= kosmos2__cfg_int(root, "", "latent_query_num", 1, 4096, &c->latent_query_num);
    if (v) {
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "hidden_size", 1, BIG, &c->vision_hidden);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "intermediate_size", 1, BIG, &c->vision_intermediate);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "num_hidden_layers", 0, 4096, &c->vision_layers);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "num_attention_heads", 1, 4096, &c->vision_heads);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "image_size", 1, 8192, &c->image_size);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "patch_size", 1, 8192, &c->patch_size);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "num_channels", 3, 3, &c->num_channels);
        rc = rc ? rc : kosmos2__cfg_float(v, "vision_config.", "layer_norm_eps", &c->vision_eps);
        rc = rc ? rc : kosmos2__cfg_str(v, "vision_config.", "hidden_act", c->vision_act, sizeof c->vision_act);
    }
    if (t) {
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "vocab_size", 5, 1 << 24, &c->vocab_size);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "embed_dim", 2, BIG, &c->text_hidden);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "layers", 0, 4096, &c->text_layers);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "attention_heads", 1, 4096, &c->text_heads);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "ffn_dim", 1, BIG, &c->ffn_dim);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "max_position_embeddings", 1, 1 << 24, &c->max_positions);
        rc = rc ? rc : kosmos2__cfg_float(t, "text_config.", "layer_norm_eps", &c->text_eps);
        rc = rc ? rc : kosmos2__cfg_bool(t, "scale_embedding", &c->scale_embedding);
        rc = rc ? rc : kosmos2__cfg_str(t, "text_config.", "activation_function", c->text_act, sizeof c->text_act);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "bos_token_id", 0, 1 << 24, &c->bos_id);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "eos_token_id", 0, 1 << 24, &c->eos_id);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "pad_token_id", 0, 1 << 24, &c->pad_id);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "no_repeat_ngram_size", 0, 1 << 20, &c->no_repeat_ngram_size);
    }
    if (rc) return rc;
    /* values that would make the model impossible */
    if (c->vision_hidden % c->vision_heads) return kosmos2__fail(KOSMOS2_E_FORMAT, "vision_config.hidden_size %d is not divisible by num_attention_heads %d", c->vision_hidden, c->vision_heads);
    if (c->text_hidden % c->text_heads) return kosmos2__fail(KOSMOS2_E_FORMAT, "text_config.embed_dim %d is not divisible by attention_heads %d", c->text_hidden, c->text_heads);
    if (c->text_hidden % 2) return kosmos2__fail(KOSMOS2_E_FORMAT, "text_config.embed_dim %d must be even (sinusoidal positions)", c->text_hidden);
    if (c->image_size % c->patch_size) return kosmos2__fail(KOSMOS2_E_FORMAT, "vision_config.image_size %d is not a multiple of patch_size %d", c->image_size, c->patch_size);
    if ((int64_t)(c->image_size / c->patch_size) * (c->image_size / c->patch_size) > 1 << 20) return kosmos2__fail(KOSMOS2_E_LIMIT, "too many patches");
    if (c->eos_id >= c->vocab_size || c->bos_id >= c->vocab_size || c->pad_id >= c->vocab_size)
        return kosmos2__fail(KOSMOS2_E_FORMAT, "special token ids must be below vocab_size %d", c->vocab_size);
    if (!kosmos2__act_known(c->vision_act)) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "vision_config.hidden_act '%s' is not supported", c->vision_act);
    if (!kosmos2__act_known(c->text_act)) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "text_config.activation_function '%s' is not supported", c->text_act);
    return 0;
}

/* ---- preprocessor_config.json ------------------------------------------------------------
 * CLIPImageProcessor as Kosmos-2 configures it: squash-resize to size, (no-op) centre crop,
 * rescale, normalise. Only the square-resize path is supported (what use_square_size and a
 * {height, width} size give); anything else is refused with a clear error. */
static int kosmos2__size_of(const kosmos2__json *s, int square, int *w, int *h) {
    const kosmos2__json *a;
    if (!s || s->type == KOSMOS2__JNULL) return 0;
    /* sizes are clamped to [-1, 1e6] before the int conversion (out-of-range doubles are UB to convert);
     * anything outside 1..8192 is refused by the caller */
#define KOSMOS2__SIZE(x) ((x) > 1e6 || !((x) >= -1) ? -1 : (int)(x))
    if (s->type == KOSMOS2__JNUM) { *w = *h = KOSMOS2__SIZE(s->num); return 0; }
    if (s->type != KOSMOS2__JOBJ) return kosmos2__fail(KOSMOS2_E_FORMAT, "size must be an object");
    if ((a = kosmos2__json_get(s, "height")) && a->type == KOSMOS2__JNUM) *h = KOSMOS2__SIZE(a->num);
    if ((a = kosmos2__json_get(s, "width")) && a->type == KOSMOS2__JNUM) *w = KOSMOS2__SIZE(a->num);
    if ((a = kosmos2__json_get(s, "shortest_edge")) && a->type == KOSMOS2__JNUM) {
        if (!square) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "aspect-preserving resize (size.shortest_edge without use_square_size) is not supported");
        *w = *h = KOSMOS2__SIZE(a->num);
    }
#undef KOSMOS2__SIZE
    return 0;
}

static int kosmos2__preprocess_from_json(const kosmos2__json *r, kosmos2_preprocess_config *pp) {
    const kosmos2__json *a;
    int square = 0, cw, ch, crop = 1, i, rc;
    if (r->type != KOSMOS2__JOBJ) return kosmos2__fail(KOSMOS2_E_FORMAT, "not a JSON object");
    kosmos2__cfg_bool(r, "use_square_size", &square);
    kosmos2__cfg_bool(r, "do_resize", &pp->do_resize);
    kosmos2__cfg_bool(r, "do_rescale", &pp->do_rescale);
    kosmos2__cfg_bool(r, "do_normalize", &pp->do_normalize);
    kosmos2__cfg_bool(r, "do_convert_rgb", &pp->do_convert_rgb);
    kosmos2__cfg_bool(r, "do_center_crop", &crop);
    if ((rc = kosmos2__cfg_int(r, "", "resample", 0, 5, &pp->resample)) != 0) return rc;
    if ((a = kosmos2__json_get(r, "rescale_factor")) && a->type == KOSMOS2__JNUM) pp->rescale_factor = a->num;
    if ((rc = kosmos2__size_of(kosmos2__json_get(r, "size"), square, &pp->width, &pp->height)) != 0) return rc;
    cw = pp->width; ch = pp->height;
    if ((rc = kosmos2__size_of(kosmos2__json_get(r, "crop_size"), 1, &cw, &ch)) != 0) return rc;
    if (crop && (cw != pp->width || ch != pp->height)) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "a centre crop (%dx%d) different from the resize (%dx%d) is not supported", cw, ch, pp->width, pp->height);
    for (i = 0; i < 2; i++) {
        const char *key = i ? "image_std" : "image_mean";
        float *dst = i ? pp->std : pp->mean;
        a = kosmos2__json_get(r, key);
        if (!a || a->type == KOSMOS2__JNULL) continue;
        if (a->type != KOSMOS2__JARR || a->len != 3 || a->items[0].type != KOSMOS2__JNUM || a->items[1].type != KOSMOS2__JNUM || a->items[2].type != KOSMOS2__JNUM)
            return kosmos2__fail(KOSMOS2_E_FORMAT, "%s must be an array of 3 numbers", key);
        dst[0] = (float)a->items[0].num; dst[1] = (float)a->items[1].num; dst[2] = (float)a->items[2].num;
    }
    if (pp->do_normalize && (pp->std[0] == 0 || pp->std[1] == 0 || pp->std[2] == 0)) return kosmos2__fail(KOSMOS2_E_FORMAT, "image_std must not be 0");
    if (pp->width < 1 || pp->height < 1 || pp->width > 8192 || pp->height > 8192) return kosmos2__fail(KOSMOS2_E_FORMAT, "bad image size %dx%d", pp->width, pp->height);
    return 0;
}

/* ---- tensors by name ------------------------------------------------------------------ */
static const kosmos2__tensor *kosmos2__find(const kosmos2_model *m, const char *name) {
    int i;
    for (i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

static int kosmos2__own(kosmos2_model *m, void *p) {
    if (m->n_owned == m->cap_owned) {
        int nc = m->cap_owned ? m->cap_owned * 2 : 256;
        void **no = (void **)KOSMOS2_REALLOC(m->owned, (size_t)nc * sizeof *no);
        if (!no) { KOSMOS2_FREE(p); return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory"); }
        m->owned = no;
        m->cap_owned = nc;
    }
    m->owned[m->n_owned++] = p;
    return 0;
}

/* Find `name`, check its shape against d0..d{ndim-1} and its dtype (F32/F16/BF16). */
static int kosmos2__check(const kosmos2_model *m, const char *name, int ndim, const int64_t *dims, const kosmos2__tensor **out) {
    const kosmos2__tensor *t = kosmos2__find(m, name);
    char want[96], got[96];
    int i, ok;
    *out = NULL;
    if (!t) return kosmos2__fail(KOSMOS2_E_FORMAT, "tensor '%s' is missing from the checkpoint", name);
    ok = t->ndim == ndim;
    for (i = 0; ok && i < ndim; i++) ok = t->shape[i] == dims[i];
    if (!ok) {
        size_t a = 0, b = 0;
        for (i = 0; i < ndim && a < 80; i++) a += (size_t)snprintf(want + a, sizeof want - a, i ? ", %lld" : "%lld", (long long)dims[i]);
        for (i = 0; i < t->ndim && b < 80; i++) b += (size_t)snprintf(got + b, sizeof got - b, i ? ", %lld" : "%lld", (long long)t->shape[i]);
        want[a] = 0; got[b] = 0;
        return kosmos2__fail(KOSMOS2_E_FORMAT, "tensor '%s' has shape [%s], config.json implies [%s]", name, got, want);
    }
    if (strcmp(t->dtype, "F32") && strcmp(t->dtype, "F16") && strcmp(t->dtype, "BF16") && strcmp(t->dtype, "Q8_0") && strcmp(t->dtype, "Q4_0"))
        return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "tensor '%s' has dtype %s (supported: F32, F16, BF16)", name, t->dtype);
    *out = t;
    return 0;
}

static kosmos2__dtype kosmos2__dtype_of(const kosmos2__tensor *t) {
    return !strcmp(t->dtype, "F32") ? KOSMOS2__F32 : !strcmp(t->dtype, "F16") ? KOSMOS2__F16 : !strcmp(t->dtype, "BF16") ? KOSMOS2__BF16
         : !strcmp(t->dtype, "Q8_0") ? KOSMOS2__Q8_0 : KOSMOS2__Q4_0;
}
/* The alignment the kernels need for a stored type (q blocks start with a float16). */
static size_t kosmos2__dtype_align(const kosmos2__tensor *t) { return !strcmp(t->dtype, "F32") ? 4 : 2; }

/* A tensor as a float32 array: the mapped data itself when it is F32 and aligned, else a copy. */
static int kosmos2__get_f32(kosmos2_model *m, const char *name, int ndim, const int64_t *dims, const float **out) {
    const kosmos2__tensor *t;
    kosmos2__mat tmp;
    float *copy;
    int64_t i, n;
    int rc = kosmos2__check(m, name, ndim, dims, &t);
    if (rc) return rc;
    if (!strcmp(t->dtype, "F32") && ((uintptr_t)t->data % 4) == 0) { *out = (const float *)t->data; return 0; }
    for (n = 1, i = 0; i < ndim; i++) n *= dims[i];
    copy = (float *)kosmos2__alloc((size_t)n * sizeof(float));
    if (!copy || (rc = kosmos2__own(m, copy)) != 0) return KOSMOS2_E_NOMEM;
    tmp.dtype = kosmos2__dtype_of(t); tmp.rows = 1; tmp.cols = n;
    tmp.data = t->data;
    if ((uintptr_t)t->data % kosmos2__dtype_align(t)) { /* misaligned: an aligned copy of the bytes first */
        void *bytes = kosmos2__alloc(t->nbytes);
        if (!bytes) return KOSMOS2_E_NOMEM;
        memcpy(bytes, t->data, t->nbytes);
        tmp.data = bytes;
        kosmos2__mat_row_f32(&tmp, 0, copy);
        KOSMOS2_FREE(bytes);
    } else kosmos2__mat_row_f32(&tmp, 0, copy);
    *out = copy;
    return 0;
}

/* Tensor t viewed as a matrix [rows, cols] in its stored type (copied only when misaligned). */
static int kosmos2__mat_from(kosmos2_model *m, const kosmos2__tensor *t, int64_t rows, int64_t cols, kosmos2__mat *out) {
    out->dtype = kosmos2__dtype_of(t);
    out->rows = rows; out->cols = cols;
    out->data = t->data;
    if ((uintptr_t)t->data % kosmos2__dtype_align(t)) {
        void *copy = kosmos2__alloc(t->nbytes);
        if (!copy || kosmos2__own(m, copy)) return KOSMOS2_E_NOMEM;
        memcpy(copy, t->data, t->nbytes);
        out->data = copy;
    }
    return 0;
}

/* A 2-D tensor [rows, cols] as a matrix. */
static int kosmos2__get_mat(kosmos2_model *m, const char *name, int64_t rows, int64_t cols, kosmos2__mat *out) {
    const kosmos2__tensor *t;
    int64_t dims[2];
    int rc;
    dims[0] = rows; dims[1] = cols;
    if ((rc = kosmos2__check(m, name, 2, dims, &t)) != 0) return rc;
    return kosmos2__mat_from(m, t, rows, cols, out);
}

static int kosmos2__get_ln(kosmos2_model *m, const char *prefix, int64_t n, kosmos2__ln *ln) {
    char name[256];
    int rc;
    snprintf(name, sizeof name, "%s.weight", prefix);
    if ((rc = kosmos2__get_f32(m, name, 1, &n, &ln->w)) != 0) return rc;
    snprintf(name, sizeof name, "%s.bias", prefix);
    return kosmos2__get_f32(m, name, 1, &n, &ln->b);
}

static int kosmos2__get_linear(kosmos2_model *m, const char *prefix, int64_t out_f, int64_t in_f, kosmos2__linear *l) {
    char name[256];
    int rc;
    snprintf(name, sizeof name, "%s.weight", prefix);
    if ((rc = kosmos2__get_mat(m, name, out_f, in_f, &l->w)) != 0) return rc;
    snprintf(name, sizeof name, "%s.bias", prefix);
    return kosmos2__get_f32(m, name, 1, &out_f, &l->b);
}

/* Bind every weight the architecture needs, checking names and shapes against the config. */
static int kosmos2__bind_weights(kosmos2_model *m) {
    const kosmos2_config *c = &m->cfg;
    int64_t Dv = c->vision_hidden, Fv = c->vision_intermediate, D = c->text_hidden, F = c->ffn_dim, V = c->vocab_size;
    int64_t side = c->image_size / c->patch_size, N = side * side + 1, Q = c->latent_query_num;
    int64_t dims[4];
    char p[200];
    int i, rc;
    const kosmos2__tensor *lm;
    /* vision embeddings */
    dims[0] = Dv; dims[1] = c->num_channels; dims[2] = c->patch_size; dims[3] = c->patch_size;
    {   /* the conv weight [Dv, C, P, P] is the matrix [Dv, C*P*P] */
        const kosmos2__tensor *t;
        if ((rc = kosmos2__check(m, "vision_model.model.embeddings.patch_embedding.weight", 4, dims, &t)) != 0) return rc;
        if ((rc = kosmos2__mat_from(m, t, Dv, dims[1] * dims[2] * dims[3], &m->patch_w)) != 0) return rc;
    }
    if ((rc = kosmos2__get_f32(m, "vision_model.model.embeddings.class_embedding", 1, &Dv, &m->class_emb)) != 0) return rc;
    dims[0] = N; dims[1] = Dv;
    if ((rc = kosmos2__get_f32(m, "vision_model.model.embeddings.position_embedding.weight", 2, dims, &m->pos_emb)) != 0) return rc;
    if ((rc = kosmos2__get_ln(m, "vision_model.model.pre_layrnorm", Dv, &m->pre_ln)) != 0) return rc;
    if ((rc = kosmos2__get_ln(m, "vision_model.model.post_layernorm", Dv, &m->post_ln)) != 0) return rc;
    m->vl = (kosmos2__vision_layer *)kosmos2__calloc((size_t)c->vision_layers + 1, sizeof *m->vl);
    if (!m->vl) return KOSMOS2_E_NOMEM;
    for (i = 0; i < c->vision_layers; i++) {
        kosmos2__vision_layer *L = &m->vl[i];
#define KOSMOS2__P(fmt) (snprintf(p, sizeof p, "vision_model.model.encoder.layers.%d." fmt, i), p)
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("layer_norm1"), Dv, &L->ln1)) != 0) return rc;
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("layer_norm2"), Dv, &L->ln2)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.q_proj"), Dv, Dv, &L->q)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.k_proj"), Dv, Dv, &L->k)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.v_proj"), Dv, Dv, &L->v)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.out_proj"), Dv, Dv, &L->o)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("mlp.fc1"), Fv, Dv, &L->fc1)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("mlp.fc2"), Dv, Fv, &L->fc2)) != 0) return rc;
#undef KOSMOS2__P
    }
    /* image-to-text projection */
    if ((rc = kosmos2__get_linear(m, "image_to_text_projection.dense", D, Dv, &m->dense)) != 0) return rc;
    dims[0] = Q; dims[1] = D;
    if ((rc = kosmos2__get_f32(m, "image_to_text_projection.latent_query", 2, dims, &m->latent_query)) != 0) return rc;
    if ((rc = kosmos2__get_linear(m, "image_to_text_projection.x_attn.q_proj", D, D, &m->xq)) != 0) return rc;
    if ((rc = kosmos2__get_linear(m, "image_to_text_projection.x_attn.k_proj", D, D, &m->xk)) != 0) return rc;
    if ((rc = kosmos2__get_linear(m, "image_to_text_projection.x_attn.v_proj", D, D, &m->xv)) != 0) return rc;
    if ((rc = kosmos2__get_linear(m, "image_to_text_projection.x_attn.out_proj", D, D, &m->xo)) != 0) return rc;
    /* text decoder */
    if ((rc = kosmos2__get_mat(m, "text_model.model.embed_tokens.weight", V, D, &m->embed)) != 0) return rc;
    m->tl = (kosmos2__text_layer *)kosmos2__calloc((size_t)c->text_layers + 1, sizeof *m->tl);
    if (!m->tl) return KOSMOS2_E_NOMEM;
    for (i = 0; i < c->text_layers; i++) {
        kosmos2__text_layer *L = &m->tl[i];
#define KOSMOS2__P(fmt) (snprintf(p, sizeof p, "text_model.model.layers.%d." fmt, i), p)
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("self_attn_layer_norm"), D, &L->attn_ln)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.q_proj"), D, D, &L->q)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.k_proj"), D, D, &L->k)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.v_proj"), D, D, &L->v)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.out_proj"), D, D, &L->o)) != 0) return rc;
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("self_attn.inner_attn_ln"), D, &L->inner_ln)) != 0) return rc;
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("final_layer_norm"), D, &L->ffn_pre_ln)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("ffn.fc1"), F, D, &L->fc1)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("ffn.fc2"), D, F, &L->fc2)) != 0) return rc;
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("ffn.ffn_layernorm"), F, &L->ffn_ln)) != 0) return rc;
#undef KOSMOS2__P
    }
    if ((rc = kosmos2__get_ln(m, "text_model.model.layer_norm", D, &m->final_ln)) != 0) return rc;
    /* lm_head: tied to embed_tokens; the hub file stores the matrix once */
    lm = kosmos2__find(m, "text_model.lm_head.weight");
    if (lm) return kosmos2__get_mat(m, "text_model.lm_head.weight", V, D, &m->lm_head);
    m->lm_head = m->embed;
    return 0;
}


/* ---- GGUF: the single-file format (weights, config, tokenizer) -----------------------------
 *  Layout (GGUF v3, little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv key/value
 *  pairs (key = u64 length + bytes; u32 value type; value); n_tensors tensor infos (name, u32
 *  n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset into the data section);
 *  padding to `general.alignment` (64 here); the data section. kosmos2.h stores config.json and
 *  preprocessor_config.json as strings and the SentencePiece model as a byte array, so one file
 *  is a whole model. Tensor names are the Hugging Face names. */
#define KOSMOS2__GGUF_ALIGN 64
enum { KOSMOS2__GT_U8, KOSMOS2__GT_I8, KOSMOS2__GT_U16, KOSMOS2__GT_I16, KOSMOS2__GT_U32, KOSMOS2__GT_I32, KOSMOS2__GT_F32,
       KOSMOS2__GT_BOOL, KOSMOS2__GT_STR, KOSMOS2__GT_ARR, KOSMOS2__GT_U64, KOSMOS2__GT_I64, KOSMOS2__GT_F64 };

typedef struct {            /* a bounds-checked reader over the mapped file */
    const unsigned char *p; /* [n] */
    size_t n, pos;
    int bad;
} kosmos2__rd;

static uint64_t kosmos2__rd_u(kosmos2__rd *r, int bytes) {
    uint64_t v = 0;
    int i;
    if (r->bad || r->n - r->pos < (size_t)bytes) { r->bad = 1; return 0; }
    for (i = bytes - 1; i >= 0; i--) v = (v << 8) | r->p[r->pos + (size_t)i];
    r->pos += (size_t)bytes;
    return v;
}
/* A GGUF string: pointer into the file and its length (not NUL-terminated). */
static const char *kosmos2__rd_str(kosmos2__rd *r, size_t *len) {
    uint64_t n = kosmos2__rd_u(r, 8);
    const char *s;
    if (r->bad || n > r->n - r->pos) { r->bad = 1; *len = 0; return ""; }
    s = (const char *)r->p + r->pos;
    r->pos += (size_t)n;
    *len = (size_t)n;
    return s;
}
static int kosmos2__gt_size(uint32_t t) {
    static const int sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? sz[t] : -1;
}
/* Skip one value of type t (arrays of arrays nest at most 4 deep). */
static void kosmos2__rd_skip(kosmos2__rd *r, uint32_t t, int depth) {
    size_t len;
    if (t == KOSMOS2__GT_STR) { kosmos2__rd_str(r, &len); return; }
    if (t == KOSMOS2__GT_ARR) {
        uint32_t et = (uint32_t)kosmos2__rd_u(r, 4);
        uint64_t n = kosmos2__rd_u(r, 8), i;
        int es = kosmos2__gt_size(et);
        if (depth > 4 || es < 0) { r->bad = 1; return; }
        if (es > 0) {
            if (n > (r->n - r->pos) / (uint64_t)es) { r->bad = 1; return; }
            r->pos += (size_t)(n * (uint64_t)es);
            return;
        }
        for (i = 0; i < n && !r->bad; i++) kosmos2__rd_skip(r, et, depth + 1);
        return;
    }
    if (kosmos2__gt_size(t) <= 0) { r->bad = 1; return; }
    kosmos2__rd_u(r, kosmos2__gt_size(t));
}

typedef struct {            /* what kosmos2.h needs from a GGUF file's metadata */
    const char *config_json, *preproc_json, *spm; /* into the mapped file */
    size_t config_len, preproc_len, spm_len;
} kosmos2__gguf_meta;

static const char *kosmos2__ggml_type_name(uint32_t t) {
    switch (t) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 8: return "Q8_0";
    case 30: return "BF16";
    default: return NULL;
    }
}

static int kosmos2__gguf_parse(const char *path, const kosmos2__file *f, kosmos2__tensor **tensors, int *n_tensors, kosmos2__gguf_meta *meta) {
    kosmos2__rd r;
    uint64_t nt, nkv, i, align = 32, data_start;
    uint32_t version;
    int rc;
    r.p = f->data; r.n = f->size; r.pos = 0; r.bad = 0;
    memset(meta, 0, sizeof *meta);
    if (f->size < 24 || memcmp(f->data, "GGUF", 4) != 0) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: not a GGUF file", path);
    r.pos = 4;
    version = (uint32_t)kosmos2__rd_u(&r, 4);
    nt = kosmos2__rd_u(&r, 8);
    nkv = kosmos2__rd_u(&r, 8);
    if (version < 2 || version > 3) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "%s: GGUF version %u (supported: 2, 3)", path, version);
    if (nt > 100000 || nkv > 100000) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: absurd counts (%llu tensors, %llu keys)", path, (unsigned long long)nt, (unsigned long long)nkv);
    for (i = 0; i < nkv && !r.bad; i++) {
        size_t klen;
        const char *key = kosmos2__rd_str(&r, &klen);
        uint32_t t = (uint32_t)kosmos2__rd_u(&r, 4);
#define KOSMOS2__KEY(s) (klen == strlen(s) && !memcmp(key, s, klen))
        if (r.bad) break;
        if (t == KOSMOS2__GT_STR && KOSMOS2__KEY("kosmos2.config_json")) meta->config_json = kosmos2__rd_str(&r, &meta->config_len);
        else if (t == KOSMOS2__GT_STR && KOSMOS2__KEY("kosmos2.preprocessor_config_json")) meta->preproc_json = kosmos2__rd_str(&r, &meta->preproc_len);
        else if (t == KOSMOS2__GT_ARR && KOSMOS2__KEY("tokenizer.sentencepiece_model")) {
            uint32_t et = (uint32_t)kosmos2__rd_u(&r, 4);
            uint64_t n = kosmos2__rd_u(&r, 8);
            if (et != KOSMOS2__GT_U8 || n > r.n - r.pos) { r.bad = 1; break; }
            meta->spm = (const char *)r.p + r.pos;
            meta->spm_len = (size_t)n;
            r.pos += (size_t)n;
        } else if (t == KOSMOS2__GT_U32 && KOSMOS2__KEY("general.alignment")) {
            align = kosmos2__rd_u(&r, 4);
            if (align == 0 || (align & (align - 1)) || align > 65536) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: bad general.alignment %llu", path, (unsigned long long)align);
        } else kosmos2__rd_skip(&r, t, 0);
#undef KOSMOS2__KEY
    }
    if (r.bad) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: metadata runs past the end of the file (byte %zu)", path, r.pos);
    *tensors = (kosmos2__tensor *)kosmos2__calloc((size_t)nt + 1, sizeof **tensors);
    if (!*tensors) return KOSMOS2_E_NOMEM;
    for (i = 0; i < nt; i++) {
        kosmos2__tensor *ts = &(*tensors)[i];
        size_t nlen;
        const char *name = kosmos2__rd_str(&r, &nlen), *tn;
        uint32_t nd = (uint32_t)kosmos2__rd_u(&r, 4), d, type;
        uint64_t count = 1;
        if (r.bad || nd == 0 || nd > 8 || nlen == 0 || nlen > 512) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor info %llu is malformed (byte %zu)", path, (unsigned long long)i, r.pos);
        ts->name = (char *)kosmos2__alloc(nlen + 1);
        if (!ts->name) return KOSMOS2_E_NOMEM;
        memcpy(ts->name, name, nlen);
        ts->name[nlen] = 0;
        (*n_tensors)++;
        ts->ndim = (int)nd;
        for (d = 0; d < nd; d++) { /* GGUF lists the innermost dimension first; we keep PyTorch's order */
            uint64_t v = kosmos2__rd_u(&r, 8);
            if (v == 0 || v > ((uint64_t)1 << 40) || count > ((uint64_t)1 << 40) / v) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s' has a bad dimension", path, ts->name);
            ts->shape[nd - 1 - d] = (int64_t)v;
            count *= v;
        }
        type = (uint32_t)kosmos2__rd_u(&r, 4);
        ts->data = (const unsigned char *)(uintptr_t)kosmos2__rd_u(&r, 8); /* the offset for now */
        if (r.bad) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor infos run past the end of the file", path);
        tn = kosmos2__ggml_type_name(type);
        if (!tn) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "%s: tensor '%s' has ggml type %u (supported: F32, F16, BF16, Q8_0, Q4_0)", path, ts->name, type);
        strcpy(ts->dtype, tn);
        if ((type == 2 || type == 8) && ts->shape[nd - 1] % 32) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: quantized tensor '%s' has rows of %lld (not a multiple of 32)", path, ts->name, (long long)ts->shape[nd - 1]);
        ts->nbytes = (size_t)(count / (uint64_t)ts->shape[nd - 1] * (uint64_t)kosmos2__row_bytes(type == 0 ? KOSMOS2__F32 : type == 1 ? KOSMOS2__F16 : type == 30 ? KOSMOS2__BF16 : type == 8 ? KOSMOS2__Q8_0 : KOSMOS2__Q4_0, ts->shape[nd - 1]));
    }
    data_start = ((uint64_t)r.pos + align - 1) / align * align;
    if (data_start > f->size) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: truncated before the data section", path);
    for (i = 0; i < nt; i++) {
        kosmos2__tensor *ts = &(*tensors)[i];
        uint64_t off = (uint64_t)(uintptr_t)ts->data;
        if (off % align) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s' offset %llu is not aligned to %llu", path, ts->name, (unsigned long long)off, (unsigned long long)align);
        if (off > f->size - data_start || ts->nbytes > f->size - data_start - off)
            return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s' (%zu bytes at offset %llu) lies outside the file (truncated?)", path, ts->name, ts->nbytes, (unsigned long long)off);
        ts->data = f->data + data_start + off;
    }
    if ((rc = kosmos2__check_overlaps(path, *tensors, *n_tensors)) != 0) return rc;
    if (!meta->config_json || !meta->spm) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: not a kosmos2.h GGUF file (no kosmos2.config_json or tokenizer.sentencepiece_model)", path);
    return 0;
}

/* ---- writing a GGUF file (`kosmos2 quantize`) ---------------------------------------------- */
static uint16_t kosmos2__f32_to_bf16(float f) { /* round to nearest even, NaN kept quiet */
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1)) >> 16);
}

static uint32_t kosmos2__ggml_type_of(kosmos2__dtype t) {
    switch (t) {
    case KOSMOS2__F32: return 0;
    case KOSMOS2__F16: return 1;
    case KOSMOS2__Q4_0: return 2;
    case KOSMOS2__Q8_0: return 8;
    default: return 30;
    }
}

/* The type a tensor gets when quantizing to `want`: large matrices take `want`; the token
 * embedding stays float16 (it is also the tied lm_head: in q8_0 it alone doubled the logits'
 * error, measured by test_gguf_quantized_accuracy); 1-D tensors, the class/position embeddings and
 * the latent queries stay float32; rows that are not a multiple of 32 cannot be block-quantized:
 * float16. */
static kosmos2__dtype kosmos2__quant_choice(const kosmos2__tensor *t, kosmos2__dtype want) {
    int64_t cols = t->shape[t->ndim - 1];
    int is_q = want == KOSMOS2__Q8_0 || want == KOSMOS2__Q4_0;
    if (t->ndim < 2 || strstr(t->name, "position_embedding") || strstr(t->name, "latent_query") || strstr(t->name, "class_embedding")) return KOSMOS2__F32;
    if (!is_q) return want;
    if (cols % 32 || strstr(t->name, "patch_embedding")) return KOSMOS2__F16;
    if (strstr(t->name, "embed_tokens") || strstr(t->name, "lm_head")) return KOSMOS2__F16;
    return want;
}

static int kosmos2__fw(FILE *fp, const void *p, size_t n) { return fwrite(p, 1, n, fp) == n ? 0 : -1; }
static int kosmos2__fw_u(FILE *fp, uint64_t v, int bytes) {
    unsigned char b[8];
    int i;
    for (i = 0; i < bytes; i++) b[i] = (unsigned char)(v >> (8 * i));
    return kosmos2__fw(fp, b, (size_t)bytes);
}
static int kosmos2__fw_str(FILE *fp, const char *s, size_t n) { return kosmos2__fw_u(fp, n, 8) | kosmos2__fw(fp, s, n); }

int kosmos2_model_save_gguf(const kosmos2_model *m, const char *path, const char *type, kosmos2_progress_callback progress, void *user_data) {
    kosmos2__dtype want, *chosen = NULL;
    FILE *fp = NULL;
    uint64_t off = 0, *offs = NULL;
    float *row = NULL;
    unsigned char *qrow = NULL;
    int i, d, rc = 0;
    long pos;
    if (!m || !path || !type) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_model_save_gguf: NULL argument");
    if (!strcmp(type, "f32")) want = KOSMOS2__F32;
    else if (!strcmp(type, "f16")) want = KOSMOS2__F16;
    else if (!strcmp(type, "bf16")) want = KOSMOS2__BF16;
    else if (!strcmp(type, "q8_0")) want = KOSMOS2__Q8_0;
    else if (!strcmp(type, "q4_0")) want = KOSMOS2__Q4_0;
    else return kosmos2__fail(KOSMOS2_E_INVALID, "unknown weight type '%s' (f32, f16, bf16, q8_0, q4_0)", type);
    chosen = (kosmos2__dtype *)kosmos2__calloc((size_t)m->n_tensors + 1, sizeof *chosen);
    offs = (uint64_t *)kosmos2__calloc((size_t)m->n_tensors + 1, sizeof *offs);
    if (!chosen || !offs) { rc = KOSMOS2_E_NOMEM; goto end; }
    fp = fopen(path, "wb");
    if (!fp) { rc = kosmos2__fail(KOSMOS2_E_IO, "%s: cannot create: %s", path, strerror(errno)); goto end; }
    /* header and metadata */
    rc |= kosmos2__fw(fp, "GGUF", 4) | kosmos2__fw_u(fp, 3, 4) | kosmos2__fw_u(fp, (uint64_t)m->n_tensors, 8) | kosmos2__fw_u(fp, 5, 8);
    rc |= kosmos2__fw_str(fp, "general.architecture", 20) | kosmos2__fw_u(fp, KOSMOS2__GT_STR, 4) | kosmos2__fw_str(fp, "kosmos2", 7);
    rc |= kosmos2__fw_str(fp, "general.alignment", 17) | kosmos2__fw_u(fp, KOSMOS2__GT_U32, 4) | kosmos2__fw_u(fp, KOSMOS2__GGUF_ALIGN, 4);
    rc |= kosmos2__fw_str(fp, "kosmos2.config_json", 19) | kosmos2__fw_u(fp, KOSMOS2__GT_STR, 4) | kosmos2__fw_str(fp, m->config_json, strlen(m->config_json));
    rc |= kosmos2__fw_str(fp, "kosmos2.preprocessor_config_json", 32) | kosmos2__fw_u(fp, KOSMOS2__GT_STR, 4) | kosmos2__fw_str(fp, m->preproc_json, strlen(m->preproc_json));
    rc |= kosmos2__fw_str(fp, "tokenizer.sentencepiece_model", 29) | kosmos2__fw_u(fp, KOSMOS2__GT_ARR, 4) | kosmos2__fw_u(fp, KOSMOS2__GT_U8, 4) | kosmos2__fw_u(fp, m->spm_size, 8) | kosmos2__fw(fp, m->spm, m->spm_size);
    /* tensor infos */
    for (i = 0; i < m->n_tensors; i++) {
        const kosmos2__tensor *t = &m->tensors[i];
        int64_t rows = 1;
        chosen[i] = kosmos2__quant_choice(t, want);
        for (d = 0; d < t->ndim - 1; d++) rows *= t->shape[d];
        offs[i] = off;
        off += ((uint64_t)(rows * kosmos2__row_bytes(chosen[i], t->shape[t->ndim - 1])) + KOSMOS2__GGUF_ALIGN - 1) / KOSMOS2__GGUF_ALIGN * KOSMOS2__GGUF_ALIGN;
        rc |= kosmos2__fw_str(fp, t->name, strlen(t->name)) | kosmos2__fw_u(fp, (uint64_t)t->ndim, 4);
        for (d = t->ndim - 1; d >= 0; d--) rc |= kosmos2__fw_u(fp, (uint64_t)t->shape[d], 8);
        rc |= kosmos2__fw_u(fp, kosmos2__ggml_type_of(chosen[i]), 4) | kosmos2__fw_u(fp, offs[i], 8);
    }
    pos = ftell(fp);
    while (rc == 0 && pos % KOSMOS2__GGUF_ALIGN) { rc |= kosmos2__fw(fp, "", 1); pos++; }
    if (rc) { rc = kosmos2__fail(KOSMOS2_E_IO, "%s: write error: %s", path, strerror(errno)); goto end; }
    /* data: row by row, converted from the stored type */
    for (i = 0; i < m->n_tensors; i++) {
        const kosmos2__tensor *t = &m->tensors[i];
        kosmos2__mat src;
        int64_t rows = 1, cols = t->shape[t->ndim - 1], r2, k, rb = kosmos2__row_bytes(chosen[i], cols);
        for (d = 0; d < t->ndim - 1; d++) rows *= t->shape[d];
        src.data = t->data; src.dtype = kosmos2__dtype_of(t); src.rows = rows; src.cols = cols;
        KOSMOS2_FREE(row); KOSMOS2_FREE(qrow);
        row = (float *)kosmos2__alloc((size_t)cols * sizeof(float));
        qrow = (unsigned char *)kosmos2__alloc((size_t)rb);
        if (!row || !qrow) { rc = KOSMOS2_E_NOMEM; goto end; }
        for (r2 = 0; r2 < rows && rc == 0; r2++) {
            kosmos2__mat_row_f32(&src, r2, row);
            switch (chosen[i]) {
            case KOSMOS2__F32: memcpy(qrow, row, (size_t)rb); break;
            case KOSMOS2__F16: for (k = 0; k < cols; k++) { uint16_t h = kosmos2__f32_to_f16(row[k]); memcpy(qrow + 2 * k, &h, 2); } break;
            case KOSMOS2__BF16: for (k = 0; k < cols; k++) { uint16_t h = kosmos2__f32_to_bf16(row[k]); memcpy(qrow + 2 * k, &h, 2); } break;
            case KOSMOS2__Q8_0: kosmos2__quantize_row_q8_0(row, qrow, cols); break;
            case KOSMOS2__Q4_0: kosmos2__quantize_row_q4_0(row, qrow, cols); break;
            }
            rc |= kosmos2__fw(fp, qrow, (size_t)rb);
        }
        pos = ftell(fp);
        while (rc == 0 && pos % KOSMOS2__GGUF_ALIGN) { rc |= kosmos2__fw(fp, "", 1); pos++; }
        if (rc) { rc = kosmos2__fail(KOSMOS2_E_IO, "%s: write error: %s", path, strerror(errno)); goto end; }
        if (progress && progress(t->name, kosmos2__dtype_name(chosen[i]), i + 1, m->n_tensors, user_data)) { rc = kosmos2__fail(KOSMOS2_E_ABORTED, "quantization aborted"); goto end; }
    }
    if (fclose(fp) != 0) { fp = NULL; rc = kosmos2__fail(KOSMOS2_E_IO, "%s: write error", path); goto end; }
    fp = NULL;
end:
    if (fp) fclose(fp);
    if (rc) remove(path);
    KOSMOS2_FREE(chosen); KOSMOS2_FREE(offs); KOSMOS2_FREE(row); KOSMOS2_FREE(qrow);
    return rc;
}

/* ---- the checkpoint directory ----------------------------------------------------------- */
static int kosmos2__path(char *buf, size_t cap, const char *dir, const char *file) {
    if ((size_t)snprintf(buf, cap, "%s/%s", dir, file) >= cap) return kosmos2__fail(KOSMOS2_E_INVALID, "path too long: %s/%s", dir, file);
    return 0;
}

/* Open the weight files: model.safetensors, or the shards listed by model.safetensors.index.json. */
static int kosmos2__open_weights(kosmos2_model *m, const char *dir, int use_mmap) {
    char path[4096];
    kosmos2__json idx;
    const kosmos2__json *wm;
    size_t i;
    int rc, j;
    if ((rc = kosmos2__path(path, sizeof path, dir, "model.safetensors")) != 0) return rc;
    if (kosmos2__file_exists(path) || !(kosmos2__path(path, sizeof path, dir, "model.safetensors.index.json") == 0 && kosmos2__file_exists(path))) {
        kosmos2__path(path, sizeof path, dir, "model.safetensors");
        if ((rc = kosmos2__file_open(path, use_mmap, &m->files[0])) != 0) return rc;
        m->n_files = 1;
        return kosmos2__safetensors_parse(path, &m->files[0], 0, &m->tensors, &m->n_tensors);
    }
    if ((rc = kosmos2__json_load(path, &idx)) != 0) return rc;
    wm = kosmos2__json_get(&idx, "weight_map");
    if (!wm || wm->type != KOSMOS2__JOBJ) { kosmos2__json_free(&idx); return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: no weight_map object", path); }
    for (i = 0; i < wm->len; i++) {
        const kosmos2__json *f = &wm->items[i];
        int seen = 0;
        if (f->type != KOSMOS2__JSTR || !f->len || strchr(f->str, '/') || strchr(f->str, '\\') || !strcmp(f->str, "..")) {
            rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: weight_map entry for '%s' is not a plain file name", path, wm->keys[i]);
            kosmos2__json_free(&idx);
            return rc;
        }
        for (j = 0; j < (int)i && !seen; j++) seen = !strcmp(wm->items[j].str, f->str);
        if (seen) continue;
        if (m->n_files == (int)(sizeof m->files / sizeof m->files[0])) { kosmos2__json_free(&idx); return kosmos2__fail(KOSMOS2_E_LIMIT, "%s: more than 64 shards", path); }
        {
            char sp[4096];
            if ((rc = kosmos2__path(sp, sizeof sp, dir, f->str)) != 0 || (rc = kosmos2__file_open(sp, use_mmap, &m->files[m->n_files])) != 0) { kosmos2__json_free(&idx); return rc; }
            m->n_files++;
            if ((rc = kosmos2__safetensors_parse(sp, &m->files[m->n_files - 1], m->n_files - 1, &m->tensors, &m->n_tensors)) != 0) { kosmos2__json_free(&idx); return rc; }
        }
    }
    kosmos2__json_free(&idx);
    return 0;
}

void kosmos2_model_free(kosmos2_model *m) {
    int i;
    if (!m) return;
    for (i = 0; i < m->n_owned; i++) KOSMOS2_FREE(m->owned[i]);
    KOSMOS2_FREE(m->owned);
    for (i = 0; i < m->n_tensors; i++) KOSMOS2_FREE(m->tensors[i].name);
    KOSMOS2_FREE(m->tensors);
    for (i = 0; i < m->n_files; i++) kosmos2__file_close(&m->files[i]);
    KOSMOS2_FREE(m->vl);
    KOSMOS2_FREE(m->tl);
    KOSMOS2_FREE(m->config_json);
    KOSMOS2_FREE(m->preproc_json);
    KOSMOS2_FREE(m->spm);
    if (m->tok) kosmos2_tokenizer_free(m->tok);
    KOSMOS2_FREE(m);
}

/* A NUL-terminated copy of n bytes. */
static char *kosmos2__strndup(const char *s, size_t n) {
    char *p = (char *)kosmos2__alloc(n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

/* Read a whole (small) file into a NUL-terminated buffer; *out NULL when the file is absent and
 * `optional`. */
static int kosmos2__read_text(const char *path, int optional, char **out, size_t *size) {
    kosmos2__file f;
    int rc;
    *out = NULL;
    if (optional && !kosmos2__file_exists(path)) return 0;
    if ((rc = kosmos2__file_open(path, 0, &f)) != 0) return rc;
    if (f.size > ((size_t)64 << 20)) { kosmos2__file_close(&f); return kosmos2__fail(KOSMOS2_E_LIMIT, "%s: larger than 64 MiB", path); }
    *out = kosmos2__strndup((const char *)f.data, f.size);
    if (size) *size = f.size;
    kosmos2__file_close(&f);
    return *out ? 0 : KOSMOS2_E_NOMEM;
}

/* config.json text, preprocessor_config.json text ("" = absent) and the SentencePiece model bytes
 * -> m->cfg, m->pp, m->tok. `where` names the source in error messages. */
static int kosmos2__setup_from_texts(kosmos2_model *m, const char *where) {
    kosmos2__json js;
    int rc;
    if ((rc = kosmos2__json_parse(m->config_json, strlen(m->config_json), &js)) != 0) return kosmos2__wrap(rc, "%sconfig.json: ", where);
    rc = kosmos2__config_from_json(&js, &m->cfg);
    kosmos2__json_free(&js);
    if (rc) return kosmos2__wrap(rc, "%sconfig.json: ", where);
    m->pp = kosmos2_preprocess_default_config();
    m->pp.width = m->pp.height = m->cfg.image_size;
    if (m->preproc_json[0]) {
        if ((rc = kosmos2__json_parse(m->preproc_json, strlen(m->preproc_json), &js)) != 0) return kosmos2__wrap(rc, "%spreprocessor_config.json: ", where);
        rc = kosmos2__preprocess_from_json(&js, &m->pp);
        kosmos2__json_free(&js);
        if (rc) return kosmos2__wrap(rc, "%spreprocessor_config.json: ", where);
        if (m->pp.width != m->cfg.image_size || m->pp.height != m->cfg.image_size)
            return kosmos2__fail(KOSMOS2_E_FORMAT, "%spreprocessor_config.json: images are resized to %dx%d but the vision tower takes %dx%d", where,
                                 m->pp.width, m->pp.height, m->cfg.image_size, m->cfg.image_size);
    }
    if ((rc = kosmos2_tokenizer_load_memory(m->spm, m->spm_size, &m->tok)) != 0) return kosmos2__wrap(rc, "%ssentencepiece.bpe.model: ", where);
    if (kosmos2_tokenizer_vocab_size(m->tok) > m->cfg.vocab_size)
        return kosmos2__fail(KOSMOS2_E_FORMAT, "%ssentencepiece.bpe.model: the tokenizer has %d ids but the model's vocab_size is %d", where,
                             kosmos2_tokenizer_vocab_size(m->tok), m->cfg.vocab_size);
    return 0;
}

/* A Hugging Face checkpoint directory. */
static int kosmos2__load_dir(kosmos2_model *m, const char *dir, int use_mmap) {
    char path[4096], where[4200];
    int rc;
    snprintf(where, sizeof where, "%s/", dir);
    if ((rc = kosmos2__path(path, sizeof path, dir, "config.json")) != 0) return rc;
    if (!kosmos2__file_exists(path)) return kosmos2__fail(KOSMOS2_E_IO, "%s: not found (is '%s' a Kosmos-2 checkpoint directory?)", path, dir);
    if ((rc = kosmos2__read_text(path, 0, &m->config_json, NULL)) != 0) return rc;
    if ((rc = kosmos2__path(path, sizeof path, dir, "preprocessor_config.json")) != 0) return rc;
    if ((rc = kosmos2__read_text(path, 1, &m->preproc_json, NULL)) != 0) return rc;
    if (!m->preproc_json && !(m->preproc_json = kosmos2__strdup(""))) return KOSMOS2_E_NOMEM;
    if ((rc = kosmos2__path(path, sizeof path, dir, "sentencepiece.bpe.model")) != 0) return rc;
    if ((rc = kosmos2__read_text(path, 0, (char **)&m->spm, &m->spm_size)) != 0) return rc;
    if ((rc = kosmos2__setup_from_texts(m, where)) != 0) return rc;
    if ((rc = kosmos2__open_weights(m, dir, use_mmap)) != 0) return rc;
    if ((rc = kosmos2__bind_weights(m)) != 0) return kosmos2__wrap(rc, "%s: ", dir);
    return 0;
}

/* One GGUF file written by kosmos2_model_save_gguf. */
static int kosmos2__load_gguf(kosmos2_model *m, const char *path, int use_mmap) {
    kosmos2__gguf_meta meta;
    char where[4200];
    int rc;
    snprintf(where, sizeof where, "%s: ", path);
    if ((rc = kosmos2__file_open(path, use_mmap, &m->files[0])) != 0) return rc;
    m->n_files = 1;
    if ((rc = kosmos2__gguf_parse(path, &m->files[0], &m->tensors, &m->n_tensors, &meta)) != 0) return rc;
    m->config_json = kosmos2__strndup(meta.config_json, meta.config_len);
    m->preproc_json = kosmos2__strndup(meta.preproc_json ? meta.preproc_json : "", meta.preproc_len);
    m->spm = (unsigned char *)kosmos2__strndup(meta.spm, meta.spm_len);
    m->spm_size = meta.spm_len;
    if (!m->config_json || !m->preproc_json || !m->spm) return KOSMOS2_E_NOMEM;
    if ((rc = kosmos2__setup_from_texts(m, where)) != 0) return rc;
    if ((rc = kosmos2__bind_weights(m)) != 0) return kosmos2__wrap(rc, "%s", where);
    return 0;
}

static int kosmos2__is_dir(const char *path) {
#ifdef KOSMOS2__HAVE_MMAP
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
#else
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", path);
    return kosmos2__file_exists(p);
#endif
}

int kosmos2_model_load(const char *path, const kosmos2_model_params *params, kosmos2_model **out) {
    kosmos2_model_params mp = params ? *params : kosmos2_model_default_params();
    kosmos2_model *m;
    int rc;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_model_load: out is NULL");
    *out = NULL;
    if (!path || !*path) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_model_load: no model path given");
    m = (kosmos2_model *)kosmos2__calloc(1, sizeof *m);
    if (!m) return KOSMOS2_E_NOMEM;
    m->n_threads = mp.n_threads;
    (void)kosmos2__kernels_isa(); /* detect the CPU now, not lazily in contexts racing on other threads */
    if (!kosmos2__is_dir(path) && kosmos2__file_exists(path)) rc = kosmos2__load_gguf(m, path, mp.use_mmap);
    else rc = kosmos2__load_dir(m, path, mp.use_mmap);
    if (rc) { kosmos2_model_free(m); return rc; }
    *out = m;
    return 0;
}

const kosmos2_config *kosmos2_model_config(const kosmos2_model *m) { return m ? &m->cfg : NULL; }
const kosmos2_tokenizer *kosmos2_model_tokenizer(const kosmos2_model *m) { return m ? m->tok : NULL; }
const kosmos2_preprocess_config *kosmos2_model_preprocess_config(const kosmos2_model *m) { return m ? &m->pp : NULL; }
int kosmos2_model_n_tensors(const kosmos2_model *m) { return m ? m->n_tensors : 0; }
int kosmos2_model_tensor(const kosmos2_model *m, int i, kosmos2_tensor_info *info) {
    const kosmos2__tensor *t;
    if (!m || !info || i < 0 || i >= m->n_tensors) return kosmos2__fail(KOSMOS2_E_INVALID, "tensor index %d out of range", i);
    t = &m->tensors[i];
    info->name = t->name; info->dtype = t->dtype; info->ndim = t->ndim;
    memcpy(info->shape, t->shape, sizeof info->shape);
    info->data = t->data; info->nbytes = t->nbytes;
    return 0;
}

/* ============================================================================================
 *  [6b] MODEL OPS: layer norm, activations, softmax, attention (float32, row-wise)
 * ============================================================================================ */
/* x[r, :] = LayerNorm(x[r, :]) * w + b for r < rows; x [rows, n]. Mean and variance in double. */
static void kosmos2__layernorm(float *x, int64_t rows, int64_t n, const kosmos2__ln *ln, float eps) {
    int64_t r;
    for (r = 0; r < rows; r++) {
        float *v = x + r * n;
        double mean = 0, var = 0;
        float inv;
        int64_t i;
        for (i = 0; i < n; i++) mean += v[i];
        mean /= (double)n;
        for (i = 0; i < n; i++) var += ((double)v[i] - mean) * ((double)v[i] - mean);
        var /= (double)n;
        inv = (float)(1.0 / sqrt(var + (double)eps));
        for (i = 0; i < n; i++) v[i] = ((float)((double)v[i] - mean) * inv) * ln->w[i] + ln->b[i];
    }
}

/* In-place activation by HF name: gelu (exact erf), quick_gelu, gelu_new (tanh), relu, silu. */
static void kosmos2__activate(float *x, int64_t n, const char *act) {
    int64_t i;
    if (!strcmp(act, "gelu")) {
        for (i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
    } else if (!strcmp(act, "quick_gelu")) {
        for (i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
    } else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh")) {
        for (i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + tanhf(0.7978845608028654f * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
    } else if (!strcmp(act, "relu")) {
        for (i = 0; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0;
    } else { /* silu / swish */
        for (i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
    }
}

/* Softmax of row p [n] in place: exp(x - max) / sum, sums in double. */
static void kosmos2__softmax_row(float *p, int64_t n) {
    float maxv = -FLT_MAX;
    double sum = 0;
    int64_t s;
    for (s = 0; s < n; s++) if (p[s] > maxv) maxv = p[s];
    for (s = 0; s < n; s++) { p[s] = expf(p[s] - maxv); sum += p[s]; }
    for (s = 0; s < n; s++) p[s] = (float)(p[s] / sum);
}

/* Multi-head attention for T queries over S keys, heads concatenated head-major.
 *   q [T, q_stride] (already scaled), k/v [S, kv_stride], out [T, H*hd].
 *   Query t may see keys 0 .. (causal ? causal_base + t : S-1).
 * Many queries (vision, resampler, prefill): per head, scores = Q K^T and out = P V are matrix
 * products through the kernels. Few queries (decode): one parallel loop over (head, query).
 * Either way each output is one thread's fixed-order sum: no dependence on the thread count. */
static int kosmos2__attention(float *out, const float *q, int64_t q_stride, const float *k, const float *v, int64_t kv_stride,
                              int64_t T, int64_t S, int H, int hd, int causal, int64_t causal_base, int n_threads) {
    int64_t job, n_jobs = T * H;
    if (T >= 8) {
        float *qh, *kh, *vt, *p, *oh;  /* [T, hd], [S, hd], [hd, S], [T, S], [T, hd] */
        kosmos2__mat km, vm;
        int h;
        int64_t t, s, d;
        qh = (float *)kosmos2__alloc((size_t)(T * hd * 2 + S * hd * 2 + T * S) * sizeof(float));
        if (!qh) return KOSMOS2_E_NOMEM;
        oh = qh + T * hd; kh = oh + T * hd; vt = kh + S * hd; p = vt + S * hd;
        km.data = kh; km.dtype = KOSMOS2__F32; km.rows = S; km.cols = hd;
        vm.data = vt; vm.dtype = KOSMOS2__F32; vm.rows = hd; vm.cols = S;
        for (h = 0; h < H; h++) {
            for (t = 0; t < T; t++) memcpy(qh + t * hd, q + t * q_stride + (int64_t)h * hd, (size_t)hd * sizeof(float));
            for (s = 0; s < S; s++) {
                memcpy(kh + s * hd, k + s * kv_stride + (int64_t)h * hd, (size_t)hd * sizeof(float));
                for (d = 0; d < hd; d++) vt[d * S + s] = v[s * kv_stride + (int64_t)h * hd + d];
            }
            kosmos2__matmul(p, qh, T, &km, NULL, n_threads);
            for (t = 0; t < T; t++) {
                int64_t n_keys = causal ? causal_base + t + 1 : S;
                if (n_keys > S) n_keys = S;
                kosmos2__softmax_row(p + t * S, n_keys);
                for (s = n_keys; s < S; s++) p[t * S + s] = 0.0f;
            }
            kosmos2__matmul(oh, p, T, &vm, NULL, n_threads);
            for (t = 0; t < T; t++) memcpy(out + t * (int64_t)H * hd + (int64_t)h * hd, oh + t * hd, (size_t)hd * sizeof(float));
        }
        KOSMOS2_FREE(qh);
        return 0;
    }
    {
        float *scores = (float *)kosmos2__alloc((size_t)(n_jobs * S) * sizeof(float)); /* [T*H, S] */
        if (!scores) return KOSMOS2_E_NOMEM;
#pragma omp parallel for schedule(static) num_threads(n_threads) if (n_jobs * S * hd > 32768)
        for (job = 0; job < n_jobs; job++) {
            int64_t t = job / H, h = job % H, s, n_keys = causal ? causal_base + t + 1 : S, d;
            const float *qr = q + t * q_stride + h * hd;
            float *o = out + t * (int64_t)H * hd + h * hd, *p = scores + job * S;
            if (n_keys > S) n_keys = S;
            for (s = 0; s < n_keys; s++) {
                const float *kr = k + s * kv_stride + h * hd;
                float acc = 0;
                for (d = 0; d < hd; d++) acc += qr[d] * kr[d];
                p[s] = acc;
            }
            kosmos2__softmax_row(p, n_keys);
            for (d = 0; d < hd; d++) o[d] = 0;
            for (s = 0; s < n_keys; s++) {
                const float *vr = v + s * kv_stride + h * hd;
                float w = p[s];
                for (d = 0; d < hd; d++) o[d] += w * vr[d];
            }
        }
        KOSMOS2_FREE(scores);
    }
    return 0;
}

static void kosmos2__linear_fwd(float *y, const float *x, int64_t M, const kosmos2__linear *l, int n_threads) {
    kosmos2__matmul(y, x, M, &l->w, l->b, n_threads);
}

/* ============================================================================================
 *  CONTEXT: per-thread state (KV caches, threads)
 * ============================================================================================ */
typedef struct {        /* the key/value cache of one sequence */
    float **k, **v;     /* [text_layers] -> [cap, D] keys / values after projection (heads interleaved) */
    int32_t *ids;       /* [cap] the tokens in the cache (for the n-gram ban) */
    int n, cap;         /* positions used / allocated */
    int n_nonpad;       /* tokens that are not <pad> (positions count only those) */
} kosmos2__kv;

struct kosmos2_context {
    const kosmos2_model *m;
    int n_threads;
    int max_ctx;        /* hard limit on positions (config max_position_embeddings unless lowered) */
    kosmos2__kv kv;     /* the main sequence */
    float *image_embeds;/* [Q, D] the last encoded image */
    int have_image;
    double t_vision_ms, t_resampler_ms, t_prefill_ms, t_decode_ms;
    int n_decoded;
};

static void kosmos2__kv_free(kosmos2__kv *kv, int layers) {
    int l;
    if (kv->k) for (l = 0; l < layers; l++) KOSMOS2_FREE(kv->k[l]);
    if (kv->v) for (l = 0; l < layers; l++) KOSMOS2_FREE(kv->v[l]);
    KOSMOS2_FREE(kv->k); KOSMOS2_FREE(kv->v); KOSMOS2_FREE(kv->ids);
    memset(kv, 0, sizeof *kv);
}

/* Make room for `need` positions (grown by doubling, never beyond max_ctx). */
static int kosmos2__kv_reserve(kosmos2__kv *kv, const kosmos2_config *c, int need, int max_ctx) {
    int l, cap;
    size_t D = (size_t)c->text_hidden;
    if (need <= kv->cap) return 0;
    if (need > max_ctx) return kosmos2__fail(KOSMOS2_E_LIMIT, "sequence of %d tokens exceeds the context limit of %d positions", need, max_ctx);
    cap = kv->cap ? kv->cap : 64;
    while (cap < need) cap = cap > max_ctx / 2 ? max_ctx : cap * 2;
    if (!kv->k) {
        kv->k = (float **)kosmos2__calloc((size_t)c->text_layers + 1, sizeof(float *));
        kv->v = (float **)kosmos2__calloc((size_t)c->text_layers + 1, sizeof(float *));
        if (!kv->k || !kv->v) return KOSMOS2_E_NOMEM;
    }
    for (l = 0; l < c->text_layers; l++) {
        float *nk = (float *)KOSMOS2_REALLOC(kv->k[l], (size_t)cap * D * sizeof(float));
        if (!nk) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory growing the KV cache to %d positions", cap);
        kv->k[l] = nk;
        nk = (float *)KOSMOS2_REALLOC(kv->v[l], (size_t)cap * D * sizeof(float));
        if (!nk) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory growing the KV cache to %d positions", cap);
        kv->v[l] = nk;
    }
    {
        int32_t *ni = (int32_t *)KOSMOS2_REALLOC(kv->ids, (size_t)cap * sizeof(int32_t));
        if (!ni) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory");
        kv->ids = ni;
    }
    kv->cap = cap;
    return 0;
}

/* dst = a copy of src's first src->n positions (beam search reorders sequences this way). */
static int kosmos2__kv_copy(kosmos2__kv *dst, const kosmos2__kv *src, const kosmos2_config *c, int max_ctx) {
    int l, rc;
    size_t D = (size_t)c->text_hidden;
    if ((rc = kosmos2__kv_reserve(dst, c, src->n > 0 ? src->n : 1, max_ctx)) != 0) return rc;
    for (l = 0; l < c->text_layers; l++) {
        memcpy(dst->k[l], src->k[l], (size_t)src->n * D * sizeof(float));
        memcpy(dst->v[l], src->v[l], (size_t)src->n * D * sizeof(float));
    }
    memcpy(dst->ids, src->ids, (size_t)src->n * sizeof(int32_t));
    dst->n = src->n;
    dst->n_nonpad = src->n_nonpad;
    return 0;
}

kosmos2_context_params kosmos2_context_default_params(void) {
    kosmos2_context_params p;
    p.n_threads = 0;
    p.max_ctx = 0;
    return p;
}

int kosmos2_context_new(const kosmos2_model *m, const kosmos2_context_params *params, kosmos2_context **out) {
    kosmos2_context_params p = params ? *params : kosmos2_context_default_params();
    kosmos2_context *c;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_context_new: out is NULL");
    *out = NULL;
    if (!m) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_context_new: model is NULL");
    c = (kosmos2_context *)kosmos2__calloc(1, sizeof *c);
    if (!c) return KOSMOS2_E_NOMEM;
    c->m = m;
    c->n_threads = p.n_threads > 0 ? p.n_threads : m->n_threads;
#ifdef _OPENMP
    if (c->n_threads <= 0) c->n_threads = omp_get_num_procs();
#endif
    if (c->n_threads <= 0) c->n_threads = 1;
    c->max_ctx = m->cfg.max_positions;
    if (p.max_ctx > 0 && p.max_ctx < c->max_ctx) c->max_ctx = p.max_ctx;
    c->image_embeds = (float *)kosmos2__calloc((size_t)m->cfg.latent_query_num * (size_t)m->cfg.text_hidden, sizeof(float));
    if (!c->image_embeds) { KOSMOS2_FREE(c); return KOSMOS2_E_NOMEM; }
    *out = c;
    return 0;
}

void kosmos2_context_free(kosmos2_context *c) {
    if (!c) return;
    kosmos2__kv_free(&c->kv, c->m->cfg.text_layers);
    KOSMOS2_FREE(c->image_embeds);
    KOSMOS2_FREE(c);
}

/* ============================================================================================
 *  [7] VISION ENCODER: CLIP ViT (patch conv, class token, learned positions, pre-LN layers)
 * ============================================================================================ */
/* One pre-LN encoder layer on h [N, Dv]; scratch: a [N, Dv], q/k/v/ctx [N, Dv] each, f [N, Fv]. */
static int kosmos2__vision_layer_fwd(const kosmos2_model *m, const kosmos2__vision_layer *L, float *h, int64_t N, float *a,
                                     float *q, float *k, float *v, float *ctx, float *f, int nt) {
    const kosmos2_config *c = &m->cfg;
    int64_t Dv = c->vision_hidden, i;
    int rc;
    int hd = c->vision_hidden / c->vision_heads;
    float scale = (float)pow((double)hd, -0.5);
    memcpy(a, h, (size_t)(N * Dv) * sizeof(float));
    kosmos2__layernorm(a, N, Dv, &L->ln1, c->vision_eps);
    kosmos2__linear_fwd(q, a, N, &L->q, nt);
    kosmos2__linear_fwd(k, a, N, &L->k, nt);
    kosmos2__linear_fwd(v, a, N, &L->v, nt);
    for (i = 0; i < N * Dv; i++) q[i] *= scale;
    if ((rc = kosmos2__attention(ctx, q, Dv, k, v, Dv, N, N, c->vision_heads, hd, 0, 0, nt)) != 0) return rc;
    kosmos2__linear_fwd(a, ctx, N, &L->o, nt);
    for (i = 0; i < N * Dv; i++) h[i] += a[i];
    memcpy(a, h, (size_t)(N * Dv) * sizeof(float));
    kosmos2__layernorm(a, N, Dv, &L->ln2, c->vision_eps);
    kosmos2__linear_fwd(f, a, N, &L->fc1, nt);
    kosmos2__activate(f, N * c->vision_intermediate, c->vision_act);
    kosmos2__linear_fwd(a, f, N, &L->fc2, nt);
    for (i = 0; i < N * Dv; i++) h[i] += a[i];
    return 0;
}

/* pixels [C, S, S] -> h [N = (S/P)^2 + 1, Dv], the encoder's last_hidden_state (before post-LN). */
static int kosmos2__vision_fwd(const kosmos2_model *m, const float *pixels, float *h, int nt) {
    const kosmos2_config *c = &m->cfg;
    int64_t S = c->image_size, P = c->patch_size, side = S / P, Np = side * side, N = Np + 1, Dv = c->vision_hidden;
    int64_t CPP = (int64_t)c->num_channels * P * P, Fv = c->vision_intermediate, i, l;
    float *buf, *patches, *a, *q, *k, *v, *ctx, *f;
    int rc = 0;
    size_t need = (size_t)(Np * CPP + 5 * N * Dv + N * Fv);
    buf = (float *)kosmos2__alloc(need * sizeof(float));
    if (!buf) return KOSMOS2_E_NOMEM;
    patches = buf;               /* [Np, C*P*P], element (c, ky, kx) as the conv weight */
    a = patches + Np * CPP;      /* [N, Dv] */
    q = a + N * Dv; k = q + N * Dv; v = k + N * Dv; ctx = v + N * Dv; /* [N, Dv] each */
    f = ctx + N * Dv;            /* [N, Fv] */
    for (i = 0; i < Np; i++) {   /* patch i = (py, px), row-major */
        int64_t py = i / side, px = i % side, ch, ky, kx;
        float *dst = patches + i * CPP;
        for (ch = 0; ch < c->num_channels; ch++)
            for (ky = 0; ky < P; ky++)
                for (kx = 0; kx < P; kx++) *dst++ = pixels[(ch * S + py * P + ky) * S + px * P + kx];
    }
    /* token 0 = class embedding, tokens 1.. = patch embeddings; + learned positions */
    memcpy(h, m->class_emb, (size_t)Dv * sizeof(float));
    kosmos2__matmul(h + Dv, patches, Np, &m->patch_w, NULL, nt);
    for (i = 0; i < N * Dv; i++) h[i] += m->pos_emb[i];
    kosmos2__layernorm(h, N, Dv, &m->pre_ln, c->vision_eps);
    for (l = 0; l < c->vision_layers && rc == 0; l++) rc = kosmos2__vision_layer_fwd(m, &m->vl[l], h, N, a, q, k, v, ctx, f, nt);
    KOSMOS2_FREE(buf);
    return rc;
}

/* ============================================================================================
 *  [8] RESAMPLER: image-to-text projection (64 latent queries attend over [image; latents])
 * ============================================================================================ */
/* vision hidden h [N, Dv] -> image embeddings out [Q, D]. */
static int kosmos2__resampler_fwd(const kosmos2_model *m, const float *h, float *out, int nt) {
    const kosmos2_config *c = &m->cfg;
    int64_t N = (int64_t)(c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1;
    int64_t Dv = c->vision_hidden, D = c->text_hidden, Q = c->latent_query_num, i, j;
    int hd = c->text_hidden / c->text_heads;
    float scale = (float)pow((double)hd, -0.5), *buf, *x, *kv, *q, *k, *v, *ctx;
    int rc;
    buf = (float *)kosmos2__alloc((size_t)(N * Dv + (N + Q) * D * 3 + Q * D * 2) * sizeof(float));
    if (!buf) return KOSMOS2_E_NOMEM;
    x = buf;                 /* [N, Dv]   post-LN, L2-normalised features */
    kv = x + N * Dv;         /* [N+Q, D]  dense(features) then the raw latent queries */
    k = kv + (N + Q) * D;    /* [N+Q, D] */
    v = k + (N + Q) * D;     /* [N+Q, D] */
    q = v + (N + Q) * D;     /* [Q, D] */
    ctx = q + Q * D;         /* [Q, D] */
    memcpy(x, h, (size_t)(N * Dv) * sizeof(float));
    kosmos2__layernorm(x, N, Dv, &m->post_ln, c->vision_eps);
    for (i = 0; i < N; i++) { /* F.normalize(dim=-1): x / max(||x||, 1e-12) */
        double ss = 0;
        float nrm;
        for (j = 0; j < Dv; j++) ss += (double)x[i * Dv + j] * x[i * Dv + j];
        nrm = (float)sqrt(ss);
        if (nrm < 1e-12f) nrm = 1e-12f;
        for (j = 0; j < Dv; j++) x[i * Dv + j] /= nrm;
    }
    kosmos2__linear_fwd(kv, x, N, &m->dense, nt);
    memcpy(kv + N * D, m->latent_query, (size_t)(Q * D) * sizeof(float));
    kosmos2__linear_fwd(q, m->latent_query, Q, &m->xq, nt);
    for (i = 0; i < Q * D; i++) q[i] *= scale;
    kosmos2__linear_fwd(k, kv, N + Q, &m->xk, nt);
    kosmos2__linear_fwd(v, kv, N + Q, &m->xv, nt);
    rc = kosmos2__attention(ctx, q, D, k, v, D, Q, N + Q, c->text_heads, hd, 0, 0, nt);
    if (rc == 0) kosmos2__linear_fwd(out, ctx, Q, &m->xo, nt);
    KOSMOS2_FREE(buf);
    return rc;
}

int kosmos2_encode_image(kosmos2_context *ctx, const float *pixels, float *vision_hidden, float *image_embeds) {
    const kosmos2_model *m;
    const kosmos2_config *c;
    int64_t N;
    float *h;
    int rc;
    double t0;
    if (!ctx || !pixels) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_encode_image: NULL argument");
    m = ctx->m; c = &m->cfg;
    N = (int64_t)(c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1;
    h = (float *)kosmos2__alloc((size_t)(N * c->vision_hidden) * sizeof(float)); /* [N, Dv] */
    if (!h) return KOSMOS2_E_NOMEM;
    t0 = kosmos2__now_ms();
    rc = kosmos2__vision_fwd(m, pixels, h, ctx->n_threads);
    ctx->t_vision_ms = kosmos2__now_ms() - t0;
    if (!rc && vision_hidden) memcpy(vision_hidden, h, (size_t)(N * c->vision_hidden) * sizeof(float));
    t0 = kosmos2__now_ms();
    if (!rc) rc = kosmos2__resampler_fwd(m, h, ctx->image_embeds, ctx->n_threads);
    ctx->t_resampler_ms = kosmos2__now_ms() - t0;
    KOSMOS2_FREE(h);
    if (rc) return rc;
    ctx->have_image = 1;
    if (image_embeds) memcpy(image_embeds, ctx->image_embeds, (size_t)c->latent_query_num * (size_t)c->text_hidden * sizeof(float));
    return 0;
}

int kosmos2_set_image_embeds(kosmos2_context *ctx, const float *image_embeds) {
    if (!ctx || !image_embeds) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_set_image_embeds: NULL argument");
    memcpy(ctx->image_embeds, image_embeds, (size_t)ctx->m->cfg.latent_query_num * (size_t)ctx->m->cfg.text_hidden * sizeof(float));
    ctx->have_image = 1;
    return 0;
}

/* ============================================================================================
 *  [9] TEXT DECODER: embeddings (+ image splice), sinusoidal positions, sub-LN blocks, KV cache
 * ============================================================================================ */
/* Row `pos` of the M2M100-style sinusoid table [sin | cos] (float32 as transformers builds it);
 * the padding row (pos == pad) is zero. out [D]. */
static void kosmos2__sinusoid(float *out, int64_t pos, int D, int pad) {
    int half = D / 2, i;
    float negc = (float)-(log(10000.0) / (double)(half - 1));
    if (pos == pad) { memset(out, 0, (size_t)D * sizeof(float)); return; }
    for (i = 0; i < half; i++) {
        float f = expf((float)i * negc), a = (float)pos * f;
        out[i] = sinf(a);
        out[half + i] = cosf(a);
    }
}

/* Run T new tokens through the decoder, appending to the cache kv.
 *   ids [T]; image_mask [T] or NULL: where 1, the row is the next row of image_embeds [Q, D].
 *   logits: NULL, or [V] for the last token, or [T, V] when all_logits. */
static int kosmos2__text_fwd(kosmos2_context *ctx, kosmos2__kv *kv, const int32_t *ids, int T, const uint8_t *image_mask,
                             const float *image_embeds, float *logits, int all_logits) {
    const kosmos2_model *m = ctx->m;
    const kosmos2_config *c = &m->cfg;
    int64_t D = c->text_hidden, F = c->ffn_dim, V = c->vocab_size, t, i, n_img = 0;
    int hd = c->text_hidden / c->text_heads, l, rc, nt = ctx->n_threads, p0 = kv->n, nonpad0 = kv->n_nonpad;
    float scale = (float)pow((double)hd, -0.5);
    float emb_scale = c->scale_embedding ? (float)sqrt((double)D) : 1.0f;
    float *buf, *h, *a, *q, *ctxv, *f;
    if (T <= 0) return kosmos2__fail(KOSMOS2_E_INVALID, "no tokens to decode");
    for (t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= V) return kosmos2__fail(KOSMOS2_E_INVALID, "token id %d at position %d is outside the vocabulary (0..%lld)", ids[t], (int)t, (long long)V - 1);
    if ((rc = kosmos2__kv_reserve(kv, c, kv->n + T, ctx->max_ctx)) != 0) return rc;
    buf = (float *)kosmos2__alloc((size_t)(T * D * 4 + T * F) * sizeof(float));
    if (!buf) return KOSMOS2_E_NOMEM;
    h = buf; a = h + T * D; q = a + T * D; ctxv = q + T * D; f = ctxv + T * D; /* [T, D] x4, [T, F] */
    /* embeddings: token rows or image rows, times sqrt(D); then + sinusoid(position) */
    for (t = 0; t < T; t++) {
        float *row = h + t * D;
        int64_t pos;
        if (image_mask && image_mask[t]) {
            if (n_img >= c->latent_query_num) { KOSMOS2_FREE(buf); return kosmos2__fail(KOSMOS2_E_INVALID, "the image mask has more than %d ones", c->latent_query_num); }
            memcpy(row, image_embeds + n_img * D, (size_t)D * sizeof(float));
            n_img++;
        } else kosmos2__mat_row_f32(&m->embed, ids[t], row);
        for (i = 0; i < D; i++) row[i] *= emb_scale;
        if (ids[t] != c->pad_id) kv->n_nonpad++;
        pos = ids[t] == c->pad_id ? c->pad_id : (int64_t)c->pad_id + kv->n_nonpad;
        kosmos2__sinusoid(a, pos, (int)D, c->pad_id);
        for (i = 0; i < D; i++) row[i] += a[i];
        kv->ids[p0 + t] = ids[t];
    }
    for (l = 0; l < c->text_layers; l++) {
        const kosmos2__text_layer *L = &m->tl[l];
        float *kc = kv->k[l] + (int64_t)p0 * D, *vc = kv->v[l] + (int64_t)p0 * D; /* this step's cache rows */
        memcpy(a, h, (size_t)(T * D) * sizeof(float));
        kosmos2__layernorm(a, T, D, &L->attn_ln, c->text_eps);
        kosmos2__linear_fwd(q, a, T, &L->q, nt);
        for (i = 0; i < T * D; i++) q[i] *= scale;
        kosmos2__linear_fwd(kc, a, T, &L->k, nt);
        kosmos2__linear_fwd(vc, a, T, &L->v, nt);
        if ((rc = kosmos2__attention(ctxv, q, D, kv->k[l], kv->v[l], D, T, p0 + T, c->text_heads, hd, 1, p0, nt)) != 0) {
            kv->n = p0; /* the cache rows of this call are not valid */
            kv->n_nonpad = nonpad0;
            KOSMOS2_FREE(buf);
            return rc;
        }
        kosmos2__layernorm(ctxv, T, D, &L->inner_ln, c->text_eps);
        kosmos2__linear_fwd(a, ctxv, T, &L->o, nt);
        for (i = 0; i < T * D; i++) h[i] += a[i];
        memcpy(a, h, (size_t)(T * D) * sizeof(float));
        kosmos2__layernorm(a, T, D, &L->ffn_pre_ln, c->text_eps);
        kosmos2__linear_fwd(f, a, T, &L->fc1, nt);
        kosmos2__activate(f, T * F, c->text_act);
        kosmos2__layernorm(f, T, F, &L->ffn_ln, c->text_eps);
        kosmos2__linear_fwd(a, f, T, &L->fc2, nt);
        for (i = 0; i < T * D; i++) h[i] += a[i];
    }
    kv->n += T;
    if (logits) {
        int64_t first = all_logits ? 0 : T - 1;
        kosmos2__layernorm(h + first * D, T - first, D, &m->final_ln, c->text_eps);
        kosmos2__matmul(logits, h + first * D, T - first, &m->lm_head, NULL, nt);
    }
    KOSMOS2_FREE(buf);
    return 0;
}

int kosmos2_decode(kosmos2_context *ctx, const int32_t *ids, int n, const uint8_t *image_mask, float *logits) {
    if (!ctx || !ids || n <= 0) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_decode: bad arguments");
    if (image_mask && !ctx->have_image) {
        int i;
        for (i = 0; i < n; i++)
            if (image_mask[i]) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_decode: image positions given but no image was encoded");
    }
    return kosmos2__text_fwd(ctx, &ctx->kv, ids, n, image_mask, ctx->image_embeds, logits, 0);
}

void kosmos2_kv_clear(kosmos2_context *ctx) {
    if (!ctx) return;
    ctx->kv.n = 0;
    ctx->kv.n_nonpad = 0;
}

int kosmos2_kv_size(const kosmos2_context *ctx) { return ctx ? ctx->kv.n : 0; }

/* ============================================================================================
 *  [10] GENERATION: greedy, beam search, sampling; no-repeat n-gram ban (transformers' rules)
 * ============================================================================================ */
kosmos2_generate_params kosmos2_generate_default_params(void) {
    kosmos2_generate_params p;
    memset(&p, 0, sizeof p);
    p.max_new_tokens = 128;
    p.num_beams = 1;
    p.length_penalty = 1.0f;
    p.early_stopping = 0;
    p.do_sample = 0;
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.seed = 0;
    p.no_repeat_ngram_size = -1;
    return p;
}

/* NoRepeatNGramLogitsProcessor: with the last n-1 tokens of seq [len] as a prefix, every token that
 * followed the same prefix earlier in seq gets -inf. Applies only once len + 1 >= n. */
static void kosmos2__ban_ngrams(float *logits, const int32_t *seq, int len, int n) {
    int i, j;
    if (n <= 0 || len + 1 < n) return;
    for (i = 0; i + n <= len; i++) { /* the n-gram seq[i .. i+n-1] */
        for (j = 0; j < n - 1; j++)
            if (seq[i + j] != seq[len - n + 1 + j]) break;
        if (j == n - 1) logits[seq[i + n - 1]] = -INFINITY;
    }
}

static int32_t kosmos2__argmax(const float *x, int64_t n) {
    int64_t i, best = 0;
    for (i = 1; i < n; i++)
        if (x[i] > x[best]) best = i; /* first index wins ties, like torch.argmax */
    return (int32_t)best;
}

/* xorshift64* random numbers for sampling (seeded; not torch's generator). */
static double kosmos2__rand01(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

static int kosmos2__cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Sample from logits [V] after temperature, top-k, top-p (transformers' warper order). scratch [V]. */
static int32_t kosmos2__sample(float *logits, int64_t V, const kosmos2_generate_params *p, uint64_t *rng, float *scratch) {
    int64_t i;
    float maxv = -INFINITY, cut = -INFINITY;
    double sum = 0, r, acc = 0;
    if (p->temperature > 0 && p->temperature != 1.0f)
        for (i = 0; i < V; i++) logits[i] /= p->temperature;
    if (p->top_k > 0 && p->top_k < V) { /* keep logits >= the k-th largest (ties kept) */
        memcpy(scratch, logits, (size_t)V * sizeof(float));
        qsort(scratch, (size_t)V, sizeof(float), kosmos2__cmp_desc);
        cut = scratch[p->top_k - 1];
        for (i = 0; i < V; i++) if (logits[i] < cut) logits[i] = -INFINITY;
    }
    for (i = 0; i < V; i++) if (logits[i] > maxv) maxv = logits[i];
    if (maxv == -INFINITY) return 0;
    for (i = 0; i < V; i++) { scratch[i] = logits[i] == -INFINITY ? 0.0f : expf(logits[i] - maxv); sum += scratch[i]; }
    if (p->top_p > 0 && p->top_p < 1.0f) {
        /* drop the least likely tokens whose cumulative probability (ascending) stays <= 1 - top_p */
        float *sorted = (float *)KOSMOS2_MALLOC((size_t)V * sizeof(float));
        if (sorted) {
            double cum = 0, thresh = 1.0 - p->top_p;
            int64_t kept = V;
            float pcut = 0;
            memcpy(sorted, scratch, (size_t)V * sizeof(float));
            qsort(sorted, (size_t)V, sizeof(float), kosmos2__cmp_desc);
            for (i = V - 1; i > 0; i--) { /* ascending walk; always keep the top one */
                cum += sorted[i] / sum;
                if (cum > thresh) break;
                kept = i;
            }
            pcut = sorted[kept - 1 < 0 ? 0 : kept - 1];
            sum = 0;
            for (i = 0; i < V; i++) { if (scratch[i] < pcut) scratch[i] = 0; sum += scratch[i]; }
            KOSMOS2_FREE(sorted);
        }
    }
    r = kosmos2__rand01(rng) * sum;
    for (i = 0; i < V; i++) {
        acc += scratch[i];
        if (acc > r && scratch[i] > 0) return (int32_t)i;
    }
    return kosmos2__argmax(logits, V);
}

/* log_softmax in float32 over x [n] (in place). */
static void kosmos2__log_softmax(float *x, int64_t n) {
    int64_t i;
    float maxv = -INFINITY;
    double sum = 0;
    float lse;
    for (i = 0; i < n; i++) if (x[i] > maxv) maxv = x[i];
    for (i = 0; i < n; i++) sum += exp((double)(x[i] - maxv));
    lse = maxv + (float)log(sum);
    for (i = 0; i < n; i++) x[i] -= lse;
}

static int kosmos2__check_prompt(kosmos2_context *ctx, const int32_t *ids, const uint8_t *mask, int n, const kosmos2_generate_params *p) {
    const kosmos2_config *c = &ctx->m->cfg;
    int i, ones = 0;
    if (!ids || n <= 0) return kosmos2__fail(KOSMOS2_E_INVALID, "empty prompt");
    if (p->max_new_tokens < 0) return kosmos2__fail(KOSMOS2_E_INVALID, "max_new_tokens must be >= 0");
    if (p->num_beams < 1 || p->num_beams > 64) return kosmos2__fail(KOSMOS2_E_INVALID, "num_beams must be in 1..64");
    if (mask) for (i = 0; i < n; i++) ones += mask[i] != 0;
    if (ones && ones != c->latent_query_num) return kosmos2__fail(KOSMOS2_E_INVALID, "the image mask has %d ones, expected %d", ones, c->latent_query_num);
    if (ones && !ctx->have_image) return kosmos2__fail(KOSMOS2_E_INVALID, "the prompt has image positions but no image was encoded");
    if ((int64_t)n + p->max_new_tokens > ctx->max_ctx)
        return kosmos2__fail(KOSMOS2_E_LIMIT, "prompt (%d tokens) + max_new_tokens (%d) exceeds the context limit of %d positions", n, p->max_new_tokens, ctx->max_ctx);
    return 0;
}

/* Greedy decoding or sampling: one sequence. */
static int kosmos2__generate_single(kosmos2_context *ctx, const int32_t *ids, const uint8_t *mask, int n, const kosmos2_generate_params *p,
                                    int ngram, int32_t *out, int cap, int *n_out) {
    const kosmos2_config *c = &ctx->m->cfg;
    int64_t V = c->vocab_size;
    float *logits = (float *)kosmos2__alloc((size_t)V * 2 * sizeof(float)), *scratch; /* [V] + scratch [V] */
    uint64_t rng = p->seed * 0x9E3779B97F4A7C15ull + 1;
    int rc, step;
    double t0;
    if (!logits) return KOSMOS2_E_NOMEM;
    scratch = logits + V;
    t0 = kosmos2__now_ms();
    rc = kosmos2__text_fwd(ctx, &ctx->kv, ids, n, mask, ctx->image_embeds, logits, 0);
    ctx->t_prefill_ms = kosmos2__now_ms() - t0;
    t0 = kosmos2__now_ms();
    for (step = 0; rc == 0 && step < p->max_new_tokens; step++) {
        int32_t tok;
        kosmos2__ban_ngrams(logits, ctx->kv.ids, ctx->kv.n, ngram);
        tok = p->do_sample ? kosmos2__sample(logits, V, p, &rng, scratch) : kosmos2__argmax(logits, V);
        if (*n_out < cap) out[*n_out] = tok;
        (*n_out)++;
        if (p->on_token && p->on_token(tok, p->user_data)) break;
        if (tok == c->eos_id || step + 1 == p->max_new_tokens) break;
        if (p->abort_callback && p->abort_callback(p->user_data)) { rc = kosmos2__fail(KOSMOS2_E_ABORTED, "generation aborted by the callback after %d tokens", *n_out); break; }
        rc = kosmos2__text_fwd(ctx, &ctx->kv, &tok, 1, NULL, NULL, logits, 0);
    }
    ctx->t_decode_ms = kosmos2__now_ms() - t0;
    ctx->n_decoded = *n_out;
    KOSMOS2_FREE(logits);
    return rc;
}

/* Beam search as transformers' BeamSearchScorer (length_penalty, early_stopping True/False). */
typedef struct { float score; int32_t *ids; int n; } kosmos2__hyp; /* a finished hypothesis (generated ids) */

static void kosmos2__hyps_add(kosmos2__hyp *h, int *nh, int K, float *worst, const int32_t *ids, int n, float sum_logprobs, int gen_len, float lp) {
    float score = sum_logprobs / powf((float)gen_len, lp);
    int i, wi = 0;
    if (*nh < K || score > *worst) {
        int32_t *copy = (int32_t *)KOSMOS2_MALLOC((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
        if (!copy) return;
        memcpy(copy, ids, (size_t)n * sizeof(int32_t));
        h[*nh].score = score; h[*nh].ids = copy; h[*nh].n = n;
        (*nh)++;
        if (*nh > K) { /* drop the worst (the first one among equals, like Python's sorted) */
            float second = INFINITY;
            for (i = 1; i < *nh; i++) if (h[i].score < h[wi].score) wi = i;
            KOSMOS2_FREE(h[wi].ids);
            for (i = wi; i + 1 < *nh; i++) h[i] = h[i + 1];
            (*nh)--;
            for (i = 0; i < *nh; i++) if (h[i].score < second) second = h[i].score;
            *worst = second;
        } else if (score < *worst) *worst = score;
    }
}

static int kosmos2__generate_beam(kosmos2_context *ctx, const int32_t *ids, const uint8_t *mask, int n, const kosmos2_generate_params *p,
                                  int ngram, int32_t *out, int cap, int *n_out) {
    const kosmos2_config *c = &ctx->m->cfg;
    int K = p->num_beams, b, i, rc = 0, cur_len = n, max_len = n + p->max_new_tokens, nh = 0, done = 0, best;
    int64_t V = c->vocab_size, j;
    float worst = 1e9f, *logits = NULL, *cand = NULL, *beam_scores = NULL, *next_scores = NULL;
    int32_t *gen = NULL, *next_gen = NULL, *cand_tok = NULL, *cand_beam = NULL, *next_tok = NULL;
    kosmos2__kv *kv = NULL, *kv2 = NULL;
    kosmos2__hyp *hyps = NULL;
    int gcap = p->max_new_tokens + 1;
    logits = (float *)kosmos2__alloc((size_t)K * (size_t)V * sizeof(float));   /* [K, V] */
    cand = (float *)kosmos2__alloc((size_t)2 * K * sizeof(float));              /* [2K] top scores */
    cand_tok = (int32_t *)kosmos2__alloc((size_t)2 * K * sizeof(int32_t));
    cand_beam = (int32_t *)kosmos2__alloc((size_t)2 * K * sizeof(int32_t));
    beam_scores = (float *)kosmos2__alloc((size_t)K * sizeof(float));
    next_scores = (float *)kosmos2__alloc((size_t)K * sizeof(float));
    next_tok = (int32_t *)kosmos2__alloc((size_t)K * sizeof(int32_t));
    gen = (int32_t *)kosmos2__calloc((size_t)K * gcap, sizeof(int32_t));        /* [K, gcap] generated ids */
    next_gen = (int32_t *)kosmos2__calloc((size_t)K * gcap, sizeof(int32_t));
    kv = (kosmos2__kv *)kosmos2__calloc((size_t)K, sizeof *kv);
    kv2 = (kosmos2__kv *)kosmos2__calloc((size_t)K, sizeof *kv2);
    hyps = (kosmos2__hyp *)kosmos2__calloc((size_t)K + 1, sizeof *hyps);
    if (!logits || !cand || !cand_tok || !cand_beam || !beam_scores || !next_scores || !next_tok || !gen || !next_gen || !kv || !kv2 || !hyps) { rc = KOSMOS2_E_NOMEM; goto end; }
    /* prefill once; every beam starts as that sequence, only beam 0 "alive" (others -1e9) */
    rc = kosmos2__text_fwd(ctx, &kv[0], ids, n, mask, ctx->image_embeds, logits, 0);
    for (b = 1; rc == 0 && b < K; b++) {
        rc = kosmos2__kv_copy(&kv[b], &kv[0], c, ctx->max_ctx);
        memcpy(logits + b * V, logits, (size_t)V * sizeof(float));
    }
    for (b = 0; b < K; b++) beam_scores[b] = b ? -1e9f : 0.0f;
    while (rc == 0 && cur_len < max_len) {
        int nc = 0, bi = 0, g = cur_len - n;
        float best_next = -INFINITY;
        /* scores = log_softmax(logits) with the n-gram ban, + beam score; keep the top 2K of [K*V] */
        for (b = 0; b < K; b++) {
            float *l = logits + b * V;
            kosmos2__log_softmax(l, V);
            kosmos2__ban_ngrams(l, kv[b].ids, kv[b].n, ngram);
            for (j = 0; j < V; j++) {
                float s = l[j] + beam_scores[b];
                int pos;
                if (nc == 2 * K && !(s > cand[nc - 1])) continue;
                pos = nc < 2 * K ? nc++ : nc - 1;
                while (pos > 0 && s > cand[pos - 1]) { cand[pos] = cand[pos - 1]; cand_tok[pos] = cand_tok[pos - 1]; cand_beam[pos] = cand_beam[pos - 1]; pos--; }
                cand[pos] = s; cand_tok[pos] = (int32_t)j; cand_beam[pos] = b;
            }
        }
        for (i = 0; i < nc && bi < K; i++) {
            if (cand_tok[i] == c->eos_id) {
                if (i >= K) continue;
                kosmos2__hyps_add(hyps, &nh, K, &worst, gen + cand_beam[i] * gcap, g, cand[i], g + 1, p->length_penalty);
            } else {
                next_scores[bi] = cand[i]; next_tok[bi] = cand_tok[i];
                memcpy(next_gen + bi * gcap, gen + cand_beam[i] * gcap, (size_t)g * sizeof(int32_t));
                next_gen[bi * gcap + g] = cand_tok[i];
                if ((rc = kosmos2__kv_copy(&kv2[bi], &kv[cand_beam[i]], c, ctx->max_ctx)) != 0) goto end;
                bi++;
            }
        }
        if (bi < K) { rc = kosmos2__fail(KOSMOS2_E_INVALID, "beam search: fewer than %d candidates", K); goto end; }
        for (i = 0; i < nc; i++) if (cand[i] > best_next) best_next = cand[i];
        if (nh >= K) done = p->early_stopping ? 1 : worst >= best_next / powf((float)(g + 1), p->length_penalty);
        { kosmos2__kv *t = kv; kv = kv2; kv2 = t; }
        { int32_t *t = gen; gen = next_gen; next_gen = t; }
        memcpy(beam_scores, next_scores, (size_t)K * sizeof(float));
        cur_len++;
        if (done || cur_len >= max_len) break;
        if (p->abort_callback && p->abort_callback(p->user_data)) { rc = kosmos2__fail(KOSMOS2_E_ABORTED, "beam search aborted by the callback"); goto end; }
        for (b = 0; b < K && rc == 0; b++) rc = kosmos2__text_fwd(ctx, &kv[b], &next_tok[b], 1, NULL, NULL, logits + b * V, 0);
    }
    if (rc) goto end;
    if (!done) /* the running beams join the finished ones */
        for (b = 0; b < K; b++) kosmos2__hyps_add(hyps, &nh, K, &worst, gen + b * gcap, cur_len - n, beam_scores[b], cur_len - n, p->length_penalty);
    best = 0; /* the highest score; among equals the one added last (Python's stable sort + pop) */
    for (i = 1; i < nh; i++) if (hyps[i].score >= hyps[best].score) best = i;
    if (nh) {
        for (i = 0; i < hyps[best].n; i++) { if (*n_out < cap) out[*n_out] = hyps[best].ids[i]; (*n_out)++; }
        if (n + hyps[best].n < max_len) { if (*n_out < cap) out[*n_out] = c->eos_id; (*n_out)++; }
    }
    if (p->on_token) for (i = 0; i < *n_out && i < cap; i++) if (p->on_token(out[i], p->user_data)) break;
end:
    for (i = 0; i < nh; i++) KOSMOS2_FREE(hyps[i].ids);
    for (b = 0; kv && kv2 && b < K; b++) { kosmos2__kv_free(&kv[b], c->text_layers); kosmos2__kv_free(&kv2[b], c->text_layers); }
    KOSMOS2_FREE(logits); KOSMOS2_FREE(cand); KOSMOS2_FREE(cand_tok); KOSMOS2_FREE(cand_beam); KOSMOS2_FREE(beam_scores);
    KOSMOS2_FREE(next_scores); KOSMOS2_FREE(next_tok); KOSMOS2_FREE(gen); KOSMOS2_FREE(next_gen); KOSMOS2_FREE(kv); KOSMOS2_FREE(kv2); KOSMOS2_FREE(hyps);
    return rc;
}

int kosmos2_generate_ids(kosmos2_context *ctx, const int32_t *prompt_ids, const uint8_t *image_mask, int n_prompt,
                         const kosmos2_generate_params *params, int32_t *out_ids, int cap, int *n_out) {
    kosmos2_generate_params p = params ? *params : kosmos2_generate_default_params();
    int rc, ngram, dummy = 0;
    if (!n_out) n_out = &dummy;
    *n_out = 0;
    if (!ctx) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_generate_ids: context is NULL");
    if (cap < 0 || (cap > 0 && !out_ids)) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_generate_ids: bad output buffer");
    if ((rc = kosmos2__check_prompt(ctx, prompt_ids, image_mask, n_prompt, &p)) != 0) return rc;
    ngram = p.no_repeat_ngram_size >= 0 ? p.no_repeat_ngram_size : ctx->m->cfg.no_repeat_ngram_size;
    kosmos2_kv_clear(ctx);
    if (p.max_new_tokens == 0) return 0;
    if (p.num_beams > 1) return kosmos2__generate_beam(ctx, prompt_ids, image_mask, n_prompt, &p, ngram, out_ids, cap, n_out);
    return kosmos2__generate_single(ctx, prompt_ids, image_mask, n_prompt, &p, ngram, out_ids, cap, n_out);
}

/* ---- the whole pipeline ---------------------------------------------------------------------- */
void kosmos2_result_free(kosmos2_result *r) {
    if (!r) return;
    KOSMOS2_FREE(r->prompt_ids);
    KOSMOS2_FREE(r->ids);
    KOSMOS2_FREE(r->prompt);
    KOSMOS2_FREE(r->text);
    kosmos2_grounding_free(&r->grounding);
    memset(r, 0, sizeof *r);
}

int kosmos2_generate(kosmos2_context *ctx, const kosmos2_image *image, const char *prompt, const kosmos2_phrase_boxes *boxes,
                     int n_box_groups, const kosmos2_generate_params *params, kosmos2_result *out) {
    kosmos2_generate_params p = params ? *params : kosmos2_generate_default_params();
    const kosmos2_model *m;
    const kosmos2_config *c;
    float *pixels = NULL;
    uint8_t *mask = NULL;
    int32_t *all = NULL;
    int rc, n, cap, n_img, tlen;
    double t0;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_generate: out is NULL");
    memset(out, 0, sizeof *out);
    if (!ctx) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_generate: context is NULL");
    m = ctx->m; c = &m->cfg;
    if (!prompt) prompt = "<grounding>An image of";
    if (p.max_new_tokens < 0) return kosmos2__fail(KOSMOS2_E_INVALID, "max_new_tokens must be >= 0"); /* before sizing buffers by it */
    /* boxes -> markup in the prompt */
    if ((rc = kosmos2_prompt_attach_boxes(prompt, boxes, boxes ? n_box_groups : 0, &out->prompt)) != 0) goto end;
    /* prompt -> ids (+ image slots) */
    n_img = image ? c->latent_query_num : 0;
    if (strlen(out->prompt) > (size_t)INT_MAX / 8) { rc = kosmos2__fail(KOSMOS2_E_LIMIT, "prompt of %zu bytes is too long", strlen(out->prompt)); goto end; }
    cap = (int)strlen(out->prompt) + n_img + 16;
    for (;;) { /* ids [cap] and image mask [cap]; retried once with the exact size if too small */
        out->prompt_ids = (int32_t *)kosmos2__alloc((size_t)cap * sizeof(int32_t));
        mask = (uint8_t *)kosmos2__alloc((size_t)cap);
        if (!out->prompt_ids || !mask) { rc = KOSMOS2_E_NOMEM; goto end; }
        n = kosmos2_prompt_ids(m->tok, out->prompt, n_img, out->prompt_ids, mask, cap);
        if (n < 0) { rc = n; goto end; }
        if (n <= cap) break;
        KOSMOS2_FREE(out->prompt_ids); KOSMOS2_FREE(mask); out->prompt_ids = NULL; mask = NULL;
        cap = n;
    }
    out->n_prompt = n;
    if ((int64_t)n + p.max_new_tokens > ctx->max_ctx) {
        rc = kosmos2__fail(KOSMOS2_E_LIMIT, "the prompt (%d tokens) + max_new_tokens (%d) exceeds the context limit of %d positions", n, p.max_new_tokens, ctx->max_ctx);
        goto end;
    }
    /* image -> pixels -> image embeddings */
    if (image) {
        out->image_width = image->width; out->image_height = image->height;
        pixels = (float *)kosmos2__alloc((size_t)3 * (size_t)m->pp.width * (size_t)m->pp.height * sizeof(float));
        if (!pixels) { rc = KOSMOS2_E_NOMEM; goto end; }
        t0 = kosmos2__now_ms();
        if ((rc = kosmos2_image_preprocess(image, &m->pp, pixels)) != 0) goto end;
        out->t_preprocess_ms = kosmos2__now_ms() - t0;
        if ((rc = kosmos2_encode_image(ctx, pixels, NULL, NULL)) != 0) goto end;
        out->t_vision_ms = ctx->t_vision_ms;
        out->t_resampler_ms = ctx->t_resampler_ms;
    }
    /* generate */
    out->ids = (int32_t *)kosmos2__alloc((size_t)(p.max_new_tokens + 1) * sizeof(int32_t));
    if (!out->ids) { rc = KOSMOS2_E_NOMEM; goto end; }
    rc = kosmos2_generate_ids(ctx, out->prompt_ids, image ? mask : NULL, n, &p, out->ids, p.max_new_tokens + 1, &out->n_ids);
    if (out->n_ids > p.max_new_tokens + 1) out->n_ids = p.max_new_tokens + 1;
    out->t_prefill_ms = ctx->t_prefill_ms;
    out->t_decode_ms = ctx->t_decode_ms;
    out->n_decode = out->n_ids;
    if (rc && rc != KOSMOS2_E_ABORTED) goto end;
    /* decode prompt + generation, then the grounding post-processing */
    {
        int r2;
        all = (int32_t *)kosmos2__alloc((size_t)(n + out->n_ids) * sizeof(int32_t));
        if (!all) { rc = KOSMOS2_E_NOMEM; goto end; }
        memcpy(all, out->prompt_ids, (size_t)n * sizeof(int32_t));
        memcpy(all + n, out->ids, (size_t)out->n_ids * sizeof(int32_t));
        tlen = kosmos2_detokenize(m->tok, all, n + out->n_ids, 1, NULL, 0);
        if (tlen < 0) { rc = tlen; goto end; }
        out->text = (char *)kosmos2__alloc((size_t)tlen + 1);
        if (!out->text) { rc = KOSMOS2_E_NOMEM; goto end; }
        kosmos2_detokenize(m->tok, all, n + out->n_ids, 1, out->text, (size_t)tlen + 1);
        if ((r2 = kosmos2_grounding_parse(out->text, &out->grounding)) != 0) { rc = r2; goto end; }
    }
end:
    KOSMOS2_FREE(pixels);
    KOSMOS2_FREE(mask);
    KOSMOS2_FREE(all);
    return rc;
}


#include "parts/grounding.h"

#endif /* KOSMOS2_IMPLEMENTATION_DONE */
#endif /* KOSMOS2_IMPLEMENTATION */

/* ============================================================================================
 *  LICENCE
 * ============================================================================================
 *  MIT License. Copyright (c) 2026 the kosmos2.h authors.
 *  Permission is hereby granted, free of charge, to any person obtaining a copy of this software
 *  and associated documentation files (the "Software"), to deal in the Software without
 *  restriction, including without limitation the rights to use, copy, modify, merge, publish,
 *  distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
 *  Software is furnished to do so, subject to the following conditions: The above copyright
 *  notice and this permission notice shall be included in all copies or substantial portions of
 *  the Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 *  IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
 *  PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE
 *  LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
 *  OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS
 *  IN THE SOFTWARE.
 */
