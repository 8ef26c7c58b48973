/* examples/kosmos2.c - the kosmos2 command-line program (build: make; run: build/kosmos2 --help).
 *
 *   kosmos2 -m MODEL_DIR --image FILE [-p PROMPT] [options]   caption / ground / refer
 *                                        (MODEL_DIR: a Hugging Face checkpoint dir or a .gguf file)
 *   kosmos2 tokenize   -m MODEL_DIR [TEXT]                    text -> ids
 *   kosmos2 detokenize -m MODEL_DIR [--keep-special] [IDS...] ids -> text
 *   kosmos2 preprocess -m MODEL_DIR --image FILE --out FILE.npy
 *   kosmos2 quantize IN OUT.gguf --type T                     one self-contained GGUF file
 *   kosmos2 bench -m MODEL [-i IMAGE] [-t N] [-n N]           per-stage speed vs the machine's limits
 *
 * Output conventions:
 *   - stdout carries results only: the streamed text then a readable caption + entity list, or with
 *     --json a single JSON object. Status, progress and timings go to stderr.
 *   - Streaming: the prompt is echoed as the model sees it in Hugging Face's decoded text (the part
 *     after "</image>", e.g. "<grounding> An image of"), then generated text is appended as tokens
 *     arrive. Each step decodes prompt + generated ids with kosmos2_detokenize and prints what is
 *     new, holding back a tail that the tokenizer's clean-up rules could still change (a trailing
 *     " ", " '", " n", " n'", " 'r", " 'v" or an incomplete UTF-8 sequence). The summary printed
 *     after generation (caption:, entity lines) is always computed from the final text.
 *   - Errors: ONE line "kosmos2: error: ..." on stderr; exit status 2 for usage errors (bad flag,
 *     bad value, missing argument), 1 for runtime errors (files, model, limits), 130 when
 *     interrupted by Ctrl-C (what was generated so far is still printed).
 *
 * Box syntax (--box / --box-px, one flag per <phrase>...</phrase> of the prompt, in order):
 *   x1,y1,x2,y2                one box; --box: normalised 0..1, --box-px: pixels of the input image
 *   x1,y1,x2,y2;x1,y1,x2,y2    several boxes for the same phrase (quote it: ';' is special in shells)
 *   -                          no box for this phrase
 *   The number of --box/--box-px flags must equal the number of phrases (or be zero).
 *
 * This file also compiles stb_image_write (PNG output) and stb_easy_font (label text) from
 * Debian's libstb-dev, both as static functions. */
#define KOSMOS2_IMPLEMENTATION
#include "kosmos2.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#include <stb/stb_easy_font.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130

/* ============================================================================================
 *  Errors: one line on stderr
 * ============================================================================================ */

/* Print "kosmos2: error: <message>" on one line (newlines in the message become spaces). */
static void print_error_line(const char *fmt, va_list ap) {
    char msg[2048];
    size_t i;
    vsnprintf(msg, sizeof msg, fmt, ap);
    for (i = 0; msg[i]; i++)
        if (msg[i] == '\n' || msg[i] == '\r') msg[i] = ' ';
    fprintf(stderr, "kosmos2: error: %s\n", msg);
}

/* A usage error (bad flag or value): prints the message and returns EXIT_USAGE. */
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_error_line(fmt, ap);
    va_end(ap);
    return EXIT_USAGE;
}

/* A runtime error (files, model, limits): prints the message and returns EXIT_RUNTIME. */
static int runtime_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_error_line(fmt, ap);
    va_end(ap);
    return EXIT_RUNTIME;
}

/* A library call failed: "<what>: <kosmos2_last_error()>". */
static int library_error(const char *what) {
    return runtime_error("%s: %s", what, kosmos2_last_error());
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Ctrl-C stops generation cleanly: the abort callbacks (of the context: every layer of the
 * vision encoder and decoder; of generation: every token) poll this. */
static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}
static int abort_requested(void *user_data) {
    (void)user_data;
    return g_interrupted != 0;
}

/* ============================================================================================
 *  Flag values
 * ============================================================================================ */

/* An integer flag value in [lo, hi]; 0 or EXIT_USAGE. */
static int parse_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (!*s || *end || errno) return usage_error("%s: '%s' is not an integer", flag, s);
    if (v < lo || v > hi) return usage_error("%s: %ld is out of range (%ld..%ld)", flag, v, lo, hi);
    *out = (int)v;
    return 0;
}

/* A finite number; 0 or EXIT_USAGE. */
static int parse_double(const char *flag, const char *s, double *out) {
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v)) return usage_error("%s: '%s' is not a number", flag, s);
    *out = v;
    return 0;
}

/* An unsigned 64-bit integer (the sampling seed); 0 or EXIT_USAGE. */
static int parse_u64(const char *flag, const char *s, uint64_t *out) {
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (!*s || *end || errno || *s == '-') return usage_error("%s: '%s' is not a non-negative integer", flag, s);
    *out = (uint64_t)v;
    return 0;
}

/* ============================================================================================
 *  Boxes given on the command line
 * ============================================================================================ */
#define MAX_BOXES_PER_PHRASE 64

/* One --box or --box-px flag: the boxes for one <phrase> of the prompt. */
typedef struct box_group {
    int pixels;                              /* 1: --box-px (pixel units), 0: --box (normalised) */
    int n;                                   /* 0 for "-" */
    kosmos2_box box[MAX_BOXES_PER_PHRASE];   /* [n], as given (pixels or normalised) */
    const char *text;                        /* the flag value, for messages */
} box_group;

/* Parse "x1,y1,x2,y2[;x1,y1,x2,y2...]" or "-" into g; 0 or EXIT_USAGE. */
static int parse_box_group(const char *flag, const char *s, int pixels, box_group *g) {
    const char *p = s;
    memset(g, 0, sizeof *g);
    g->pixels = pixels;
    g->text = s;
    if (!strcmp(s, "-")) return 0;
    for (;;) {
        double v[4];
        int k;
        if (g->n == MAX_BOXES_PER_PHRASE) return usage_error("%s '%s': more than %d boxes", flag, s, MAX_BOXES_PER_PHRASE);
        for (k = 0; k < 4; k++) {
            char *end;
            errno = 0;
            v[k] = strtod(p, &end);
            if (end == p || errno || !isfinite(v[k]) || (k < 3 && *end != ',') || (k == 3 && *end && *end != ';'))
                return usage_error("%s '%s': expected x1,y1,x2,y2 (4 numbers; ';' between boxes) or '-'", flag, s);
            p = end + (k < 3);
        }
        if (!(v[2] > v[0] && v[3] > v[1])) return usage_error("%s '%s': a box needs x2 > x1 and y2 > y1", flag, s);
        for (k = 0; k < 4; k++)
            if (v[k] < 0 || (!pixels && v[k] > 1))
                return usage_error("%s '%s': coordinates must be in %s", flag, s, pixels ? "0..width/height" : "0..1");
        g->box[g->n].x1 = v[0]; g->box[g->n].y1 = v[1]; g->box[g->n].x2 = v[2]; g->box[g->n].y2 = v[3];
        g->n++;
        if (!*p) return 0;
        p++; /* past ';' */
    }
}

/* The normalised boxes for kosmos2_generate; pixel boxes are converted with the image size.
 * per_phrase[i].boxes points into norm[i]. 0 or EXIT_USAGE (a pixel box outside the image). */
static int box_groups_normalise(const box_group *g, int n, int width, int height,
                                kosmos2_box (*norm)[MAX_BOXES_PER_PHRASE], kosmos2_phrase_boxes *per_phrase) {
    int i, k;
    for (i = 0; i < n; i++) {
        for (k = 0; k < g[i].n; k++) {
            const kosmos2_box *b = &g[i].box[k];
            if (g[i].pixels) {
                if (b->x2 > width || b->y2 > height)
                    return usage_error("--box-px '%s': outside the %dx%d image", g[i].text, width, height);
                norm[i][k] = kosmos2_box_from_pixels(b->x1, b->y1, b->x2, b->y2, width, height);
            } else {
                norm[i][k] = *b;
            }
        }
        per_phrase[i].n_boxes = g[i].n;
        per_phrase[i].boxes = norm[i];
        per_phrase[i].patch_pairs = NULL;
    }
    return 0;
}

/* ============================================================================================
 *  Options of the main (generate) command
 * ============================================================================================ */
#define MAX_BOX_GROUPS 256

typedef struct gen_options {
    const char *model_dir, *image_path, *prompt, *output_png, *dump_dir;
    int max_new_tokens, threads, beams, ctx_size, no_repeat_ngram, json;
    int kv_type;                 /* KOSMOS2_KV_AUTO / _F32 / _F16 (--kv) */
    int sampling, have_top_k, have_top_p, have_seed;
    double temperature, top_p;
    int top_k;
    uint64_t seed;
    int n_groups;
    box_group groups[MAX_BOX_GROUPS];
} gen_options;

static void gen_options_default(gen_options *o) {
    memset(o, 0, sizeof *o);
    o->prompt = "<grounding>An image of";
    o->max_new_tokens = 128;
    o->beams = 1;
    o->no_repeat_ngram = -1;
    o->temperature = 1.0;
    o->top_p = 1.0;
}

/* If argv[*i] is `name` (or `alias`) followed by a value, or "name=value", set *value and advance
 * *i. Returns 1 when matched, 0 when not, EXIT_USAGE when the value is missing (error printed). */
static int flag_value(int argc, char **argv, int *i, const char *name, const char *alias, const char **value) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (!strncmp(a, name, n) && a[n] == '=') { *value = a + n + 1; return 1; }
    if (strcmp(a, name) != 0 && !(alias && !strcmp(a, alias))) return 0;
    if (*i + 1 >= argc) return usage_error("option '%s' needs a value", a);
    *value = argv[++*i];
    return 1;
}

/* Declared here, defined with the help text at the end of the file. */
static void print_help(FILE *f);

/* Parse the generate command's flags; 0, EXIT_USAGE, or -1 for "--help/--version printed". */
static int parse_gen_options(int argc, char **argv, gen_options *o) {
    int i, r;
    const char *v;
    gen_options_default(o);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
#define VALUE(name, alias) flag_value(argc, argv, &i, name, alias, &v)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { print_help(stdout); return -1; }
        if (!strcmp(a, "--version")) { printf("kosmos2 %s\n", KOSMOS2_VERSION); return -1; }
        if (!strcmp(a, "--json")) { o->json = 1; continue; }
        if ((r = VALUE("--model", "-m")) != 0) { if (r == EXIT_USAGE) return r; o->model_dir = v; continue; }
        if ((r = VALUE("--image", "-i")) != 0) { if (r == EXIT_USAGE) return r; o->image_path = v; continue; }
        if ((r = VALUE("--prompt", "-p")) != 0) { if (r == EXIT_USAGE) return r; o->prompt = v; continue; }
        if ((r = VALUE("--output", "-o")) != 0) { if (r == EXIT_USAGE) return r; o->output_png = v; continue; }
        if ((r = VALUE("--dump-dir", NULL)) != 0) { if (r == EXIT_USAGE) return r; o->dump_dir = v; continue; }
        if ((r = VALUE("--max-new-tokens", "-n")) != 0) {
            if (r == EXIT_USAGE || parse_int(a, v, 1, 1 << 20, &o->max_new_tokens)) return EXIT_USAGE;
            continue;
        }
        if ((r = VALUE("--threads", "-t")) != 0) {
            if (r == EXIT_USAGE || parse_int(a, v, 0, 4096, &o->threads)) return EXIT_USAGE;
            continue;
        }
        if ((r = VALUE("--ctx-size", "-c")) != 0) {
            if (r == EXIT_USAGE || parse_int(a, v, 1, INT_MAX, &o->ctx_size)) return EXIT_USAGE;
            continue;
        }
        if ((r = VALUE("--kv", NULL)) != 0) {
            if (r == EXIT_USAGE) return r;
            if (!strcmp(v, "auto")) o->kv_type = KOSMOS2_KV_AUTO;
            else if (!strcmp(v, "f32")) o->kv_type = KOSMOS2_KV_F32;
            else if (!strcmp(v, "f16")) o->kv_type = KOSMOS2_KV_F16;
            else return usage_error("%s: '%s' is not a KV cache type (f32, f16 or auto)", a, v);
            continue;
        }
        if ((r = VALUE("--beams", NULL)) != 0) {
            if (r == EXIT_USAGE || parse_int(a, v, 1, 64, &o->beams)) return EXIT_USAGE;
            continue;
        }
        if ((r = VALUE("--no-repeat-ngram", NULL)) != 0) {
            if (r == EXIT_USAGE || parse_int(a, v, 0, 1 << 20, &o->no_repeat_ngram)) return EXIT_USAGE;
            continue;
        }
        if ((r = VALUE("--temp", NULL)) != 0) {
            if (r == EXIT_USAGE || parse_double(a, v, &o->temperature)) return EXIT_USAGE;
            if (o->temperature < 0) return usage_error("%s: must be >= 0", a);
            o->sampling = o->temperature > 0;
            continue;
        }
        if ((r = VALUE("--top-k", NULL)) != 0) {
            if (r == EXIT_USAGE || parse_int(a, v, 0, INT_MAX, &o->top_k)) return EXIT_USAGE;
            o->have_top_k = 1;
            continue;
        }
        if ((r = VALUE("--top-p", NULL)) != 0) {
            if (r == EXIT_USAGE || parse_double(a, v, &o->top_p)) return EXIT_USAGE;
            if (!(o->top_p > 0 && o->top_p <= 1)) return usage_error("%s: must be in (0, 1]", a);
            o->have_top_p = 1;
            continue;
        }
        if ((r = VALUE("--seed", NULL)) != 0) {
            if (r == EXIT_USAGE || parse_u64(a, v, &o->seed)) return EXIT_USAGE;
            o->have_seed = 1;
            continue;
        }
        if ((r = VALUE("--box", NULL)) != 0 || (r = VALUE("--box-px", NULL)) != 0) {
            int px = !strncmp(a, "--box-px", 8);
            if (r == EXIT_USAGE) return r;
            if (o->n_groups == MAX_BOX_GROUPS) return usage_error("more than %d --box flags", MAX_BOX_GROUPS);
            if (parse_box_group(px ? "--box-px" : "--box", v, px, &o->groups[o->n_groups])) return EXIT_USAGE;
            o->n_groups++;
            continue;
        }
#undef VALUE
        if (a[0] == '-' && a[1]) return usage_error("unknown option '%s' (see kosmos2 --help)", a);
        return usage_error("unexpected argument '%s' (the prompt goes after -p; see kosmos2 --help)", a);
    }
    if (!o->model_dir) return usage_error("no model directory given (-m DIR; see kosmos2 --help)");
    if ((o->have_top_k || o->have_top_p || o->have_seed) && !o->sampling)
        return usage_error("--top-k, --top-p and --seed only apply when sampling: add --temp T (T > 0)");
    if (o->sampling && o->beams > 1) return usage_error("--beams and --temp cannot be combined (beam sampling is not supported)");
    if (o->output_png && !o->image_path) return usage_error("-o needs an input image (--image FILE)");
    if (o->dump_dir && !o->image_path) return usage_error("--dump-dir needs an input image (--image FILE)");
    for (i = 0; i < o->n_groups; i++)
        if (o->groups[i].pixels && !o->image_path) return usage_error("--box-px needs an input image (--image FILE)");
    if (o->output_png) {
        size_t n = strlen(o->output_png);
        if (n < 4 || (strcmp(o->output_png + n - 4, ".png") && strcmp(o->output_png + n - 4, ".PNG")))
            return usage_error("-o '%s': only PNG output is supported (name it *.png)", o->output_png);
    }
    return 0;
}

/* The prompt must have one <phrase>...</phrase> per box group (checked before loading anything;
 * the library counts the phrases exactly as the Hugging Face processor does). */
static int check_box_count(const gen_options *o) {
    kosmos2_phrase_boxes pb[MAX_BOX_GROUPS];
    kosmos2_box unit;
    char *out = NULL;
    int i, rc;
    if (o->n_groups == 0) return 0;
    unit.x1 = 0; unit.y1 = 0; unit.x2 = 1; unit.y2 = 1;
    for (i = 0; i < o->n_groups; i++) { pb[i].n_boxes = o->groups[i].n ? 1 : 0; pb[i].boxes = &unit; pb[i].patch_pairs = NULL; }
    rc = kosmos2_prompt_attach_boxes(o->prompt, pb, o->n_groups, &out);
    kosmos2_free(out);
    if (rc == KOSMOS2_E_INVALID) return usage_error("--box: %s", kosmos2_last_error());
    if (rc) return library_error("--box");
    return 0;
}

/* ============================================================================================
 *  JSON output helpers
 * ============================================================================================ */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there are not valid UTF-8. */
static int utf8_seq_len(const unsigned char *s) {
    int n, k;
    unsigned cp;
    if (s[0] < 0x80) return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) { n = 2; cp = s[0] & 0x1F; }
    else if (s[0] >= 0xE0 && s[0] <= 0xEF) { n = 3; cp = s[0] & 0x0F; }
    else if (s[0] >= 0xF0 && s[0] <= 0xF4) { n = 4; cp = s[0] & 0x07; }
    else return 0;
    for (k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

/* A JSON string: quotes, backslashes and control characters escaped; invalid UTF-8 -> U+FFFD. */
static void json_string(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    fputc('"', f);
    while (*p) {
        int n = utf8_seq_len(p);
        if (n == 0) { fputs("\\ufffd", f); p++; continue; }
        if (n > 1) { fwrite(p, 1, (size_t)n, f); p += n; continue; }
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (*p < 0x20 || *p == 0x7F) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
        p++;
    }
    fputc('"', f);
}

/* A number that reads back as the same double (shortest of %.15g / %.17g); null if not finite. */
static void json_number(FILE *f, double v) {
    char buf[48];
    if (!isfinite(v)) { fputs("null", f); return; }
    snprintf(buf, sizeof buf, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
    fputs(buf, f);
}

static void json_ids(FILE *f, const int32_t *ids, int n) {
    int i;
    fputc('[', f);
    for (i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", (int)ids[i]);
    fputc(']', f);
}

static void json_box(FILE *f, const double v[4]) {
    int k;
    fputc('[', f);
    for (k = 0; k < 4; k++) { if (k) fputs(", ", f); json_number(f, v[k]); }
    fputc(']', f);
}

/* ============================================================================================
 *  Streaming the text as tokens arrive
 * ============================================================================================ */
typedef struct stream_state {
    const kosmos2_tokenizer *tok;
    int enabled;        /* 0 with --json */
    int32_t *ids;       /* [n] prompt ids followed by the generated ids so far */
    int n, cap;
    char *text;         /* [text_cap] scratch: the decoded text */
    size_t text_cap;
    size_t start;       /* byte offset of the echoed part (after the prompt's "</image>") */
    char *shown;        /* [shown_len] what has been printed (from `start`) */
    size_t shown_len, shown_cap;
    int diverged;       /* printed text no longer a prefix of the decoded text */
} stream_state;

/* How many trailing bytes of s[0..n) the clean-up rules of kosmos2_detokenize could still change
 * when more tokens follow: the longest tail that is a proper prefix of " .", " ?", " !", " ,",
 * " ' ", " n't", " 'm", " 's", " 've", " 're", or an incomplete UTF-8 sequence. */
static size_t stream_holdback(const char *s, size_t n) {
    static const char *const patterns[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    size_t best = 0, k, i;
    for (i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
        size_t plen = strlen(patterns[i]);
        for (k = plen - 1; k > best; k--)
            if (k <= n && !memcmp(s + n - k, patterns[i], k)) { best = k; break; }
    }
    for (k = 1; k <= 3 && k <= n; k++) { /* an unfinished multi-byte sequence at the very end */
        unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xC0) == 0x80) continue;
        if (c >= 0xC0) {
            int need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            if ((size_t)need > k && k > best) best = k;
        }
        break;
    }
    return best;
}

/* Decode ids[0..n) into st->text; length or negative error. */
static int stream_decode(stream_state *st) {
    int len = kosmos2_detokenize(st->tok, st->ids, st->n, 1, st->text, st->text_cap);
    if (len >= 0 && (size_t)len >= st->text_cap) {
        size_t cap = (size_t)len + 256;
        char *t = (char *)realloc(st->text, cap);
        if (!t) return KOSMOS2_E_NOMEM;
        st->text = t;
        st->text_cap = cap;
        len = kosmos2_detokenize(st->tok, st->ids, st->n, 1, st->text, st->text_cap);
    }
    return len;
}

/* Print the newly stable part of the decoded text (all of it when final). */
static void stream_flush(stream_state *st, int final) {
    int len;
    size_t end, from;
    if (!st->enabled || st->diverged) return;
    if ((len = stream_decode(st)) < 0) return;
    end = (size_t)len - (final ? 0 : stream_holdback(st->text, (size_t)len));
    if (end < st->start + st->shown_len) return;
    if (st->shown_len && memcmp(st->text + st->start, st->shown, st->shown_len) != 0) { st->diverged = 1; return; }
    from = st->start + st->shown_len;
    if (end == from) return;
    if (st->shown_len + (end - from) > st->shown_cap) {
        size_t cap = (st->shown_len + (end - from)) * 2 + 64;
        char *t = (char *)realloc(st->shown, cap);
        if (!t) { st->diverged = 1; return; }
        st->shown = t;
        st->shown_cap = cap;
    }
    memcpy(st->shown + st->shown_len, st->text + from, end - from);
    st->shown_len += end - from;
    fwrite(st->text + from, 1, end - from, stdout);
    fflush(stdout);
}

/* Start a stream for the given prompt ids: echo the prompt (what follows its "</image>"). */
static int stream_begin(stream_state *st, const kosmos2_tokenizer *tok, const int32_t *prompt_ids, int n, int max_new, int enabled) {
    int len;
    memset(st, 0, sizeof *st);
    st->tok = tok;
    st->enabled = enabled;
    st->cap = n + max_new + 1;
    st->ids = (int32_t *)malloc((size_t)st->cap * sizeof(int32_t));
    if (!st->ids) return KOSMOS2_E_NOMEM;
    memcpy(st->ids, prompt_ids, (size_t)n * sizeof(int32_t));
    st->n = n;
    if ((len = stream_decode(st)) < 0) return len;
    st->start = (size_t)(kosmos2_grounding_raw_caption(st->text) - st->text);
    stream_flush(st, 0);
    return 0;
}

/* kosmos2_generate_params.on_token: append the id and print what became stable. */
static int stream_on_token(int32_t id, void *user_data) {
    stream_state *st = (stream_state *)user_data;
    if (st->n < st->cap) st->ids[st->n++] = id;
    stream_flush(st, 0);
    return 0;
}

static void stream_free(stream_state *st) {
    free(st->ids);
    free(st->text);
    free(st->shown);
    memset(st, 0, sizeof *st);
}

/* ============================================================================================
 *  Results: readable text or JSON
 * ============================================================================================ */

/* After the streamed text: the caption and one block per entity (boxes normalised and in pixels). */
static void print_readable(const kosmos2_result *r) {
    const kosmos2_grounding *g = &r->grounding;
    int e, b;
    printf("\n\ncaption: %s\n", g->caption ? g->caption : "");
    printf("entities: %d\n", g->n_entities);
    for (e = 0; e < g->n_entities; e++) {
        const kosmos2_entity *en = &g->entities[e];
        printf("  %d. \"%s\" chars [%d, %d)\n", e + 1, en->phrase, en->start, en->end);
        for (b = 0; b < en->n_boxes; b++) {
            const kosmos2_box *bx = &en->boxes[b];
            printf("     box (%.6g, %.6g, %.6g, %.6g)", bx->x1, bx->y1, bx->x2, bx->y2);
            if (r->image_width > 0) {
                double px[4];
                kosmos2_box_to_pixels(bx, r->image_width, r->image_height, px);
                printf("  pixels (%.6g, %.6g, %.6g, %.6g)", px[0], px[1], px[2], px[3]);
            }
            printf("\n");
        }
    }
}

/* The single JSON object of --json. */
static void print_json(const kosmos2_result *r, double t_load_ms, double t_total_ms) {
    const kosmos2_grounding *g = &r->grounding;
    int e, b;
    FILE *f = stdout;
    fputs("{\"prompt\": ", f); json_string(f, r->prompt);
    fputs(", \"prompt_ids\": ", f); json_ids(f, r->prompt_ids, r->n_prompt);
    fputs(", \"ids\": ", f); json_ids(f, r->ids, r->n_ids);
    fputs(", \"text\": ", f); json_string(f, r->text);
    fputs(", \"processed_text\": ", f); json_string(f, kosmos2_grounding_raw_caption(r->text ? r->text : ""));
    fputs(", \"caption\": ", f); json_string(f, g->caption);
    fprintf(f, ", \"image_size\": [%d, %d]", r->image_width, r->image_height);
    fputs(", \"entities\": [", f);
    for (e = 0; e < g->n_entities; e++) {
        const kosmos2_entity *en = &g->entities[e];
        fputs(e ? ", {\"phrase\": " : "{\"phrase\": ", f); json_string(f, en->phrase);
        fprintf(f, ", \"start\": %d, \"end\": %d, \"boxes\": [", en->start, en->end);
        for (b = 0; b < en->n_boxes; b++) {
            double v[4];
            v[0] = en->boxes[b].x1; v[1] = en->boxes[b].y1; v[2] = en->boxes[b].x2; v[3] = en->boxes[b].y2;
            if (b) fputs(", ", f);
            json_box(f, v);
        }
        fputs("], \"boxes_px\": ", f);
        if (r->image_width <= 0) fputs("null", f); /* no image: no pixels */
        for (b = 0; r->image_width > 0 && b < en->n_boxes; b++) {
            double px[4];
            kosmos2_box_to_pixels(&en->boxes[b], r->image_width, r->image_height, px);
            fputs(b ? ", " : "[", f);
            json_box(f, px);
        }
        if (r->image_width > 0) fputs(en->n_boxes ? "]" : "[]", f);
        fputs("}", f);
    }
    fputs("], \"timings_ms\": {\"load\": ", f); json_number(f, t_load_ms);
    fputs(", \"preprocess\": ", f); json_number(f, r->t_preprocess_ms);
    fputs(", \"vision\": ", f); json_number(f, r->t_vision_ms);
    fputs(", \"resampler\": ", f); json_number(f, r->t_resampler_ms);
    fputs(", \"prefill\": ", f); json_number(f, r->t_prefill_ms);
    fputs(", \"decode\": ", f); json_number(f, r->t_decode_ms);
    fputs(", \"total\": ", f); json_number(f, t_total_ms);
    fprintf(f, "}, \"n_decode\": %d}\n", r->n_decode);
}

/* Timings on stderr. */
static void print_timings(const kosmos2_result *r, double t_load_ms, double t_total_ms) {
    fprintf(stderr, "kosmos2: load %.1f ms, preprocess %.1f ms, vision %.1f ms, resampler %.1f ms\n", t_load_ms,
            r->t_preprocess_ms, r->t_vision_ms, r->t_resampler_ms);
    fprintf(stderr, "kosmos2: prefill %.1f ms (%d tokens), decode %.1f ms (%d tokens, %.2f tokens/s), total %.1f ms\n",
            r->t_prefill_ms, r->n_prompt, r->t_decode_ms, r->n_decode,
            r->t_decode_ms > 0 ? r->n_decode * 1000.0 / r->t_decode_ms : 0.0, t_total_ms);
}

/* ============================================================================================
 *  Annotated image (-o FILE.png): boxes in distinct colours, labelled with their phrase
 * ============================================================================================ */

/* Entity e is drawn in colour e % 10 (a set of ten easily told apart). */
static const unsigned char PALETTE[10][3] = {
    {230, 25, 75}, {60, 180, 75}, {0, 130, 200}, {245, 130, 48}, {145, 30, 180},
    {70, 240, 240}, {240, 50, 230}, {210, 245, 60}, {250, 190, 212}, {0, 128, 128},
};

/* Fill the rectangle [x0, x1) x [y0, y1) of an RGB image, clipped to the image. */
static void fill_rect(unsigned char *rgb, int w, int h, int x0, int y0, int x1, int y1, const unsigned char c[3]) {
    int x, y;
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > w) x1 = w;
    if (y1 > h) y1 = h;
    for (y = y0; y < y1; y++)
        for (x = x0; x < x1; x++) memcpy(rgb + ((size_t)y * (size_t)w + (size_t)x) * 3, c, 3);
}

/* A box's pixel rectangle [x0, x1) x [y0, y1), clamped to the image; 0 if nothing is visible. */
static int box_rect(const kosmos2_box *b, int w, int h, int *x0, int *y0, int *x1, int *y1) {
    double fx0 = floor(b->x1 * w), fy0 = floor(b->y1 * h), fx1 = ceil(b->x2 * w), fy1 = ceil(b->y2 * h);
    if (!(fx0 < w && fy0 < h && fx1 > 0 && fy1 > 0 && fx1 > fx0 && fy1 > fy0)) return 0;
    *x0 = fx0 < 0 ? 0 : (int)fx0;
    *y0 = fy0 < 0 ? 0 : (int)fy0;
    *x1 = fx1 > w ? w : (int)fx1;
    *y1 = fy1 > h ? h : (int)fy1;
    return 1;
}

/* The outline of a box, `t` pixels thick, inside its rectangle. */
static void draw_box(unsigned char *rgb, int w, int h, const kosmos2_box *b, int t, const unsigned char c[3]) {
    int x0, y0, x1, y1;
    if (!box_rect(b, w, h, &x0, &y0, &x1, &y1)) return;
    fill_rect(rgb, w, h, x0, y0, x1, y0 + t, c);
    fill_rect(rgb, w, h, x0, y1 - t, x1, y1, c);
    fill_rect(rgb, w, h, x0, y0, x0 + t, y1, c);
    fill_rect(rgb, w, h, x1 - t, y0, x1, y1, c);
}

/* The phrase as printable ASCII for stb_easy_font (each other code point becomes '?'), at most
 * cap - 1 characters. */
static void label_ascii(const char *s, char *out, size_t cap) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (*p && n + 1 < cap) {
        if (*p >= 0x20 && *p < 0x7F) { out[n++] = (char)*p++; continue; }
        out[n++] = '?';
        p++;
        while ((*p & 0xC0) == 0x80) p++; /* the rest of a multi-byte sequence */
    }
    out[n] = 0;
}

/* A label: the phrase in black or white on a filled rectangle of colour c, above the box's
 * top-left corner (inside the box when there is no room above), scaled by `s`. */
static void draw_label(unsigned char *rgb, int w, int h, const kosmos2_box *b, const char *phrase, int s, const unsigned char c[3]) {
    static char quads[64 * 1024]; /* stb_easy_font vertices: 4 per quad, 16 bytes each */
    char text[81];
    unsigned char ink[3];
    int x0, y0, x1, y1, lw, lh, lx, ly, nq, q;
    if (!box_rect(b, w, h, &x0, &y0, &x1, &y1)) return;
    label_ascii(phrase, text, sizeof text);
    lw = (stb_easy_font_width(text) + 4) * s;
    lh = 12 * s;
    lx = x0 + lw > w ? (w - lw > 0 ? w - lw : 0) : x0;
    ly = y0 - lh >= 0 ? y0 - lh : y0;
    fill_rect(rgb, w, h, lx, ly, lx + lw, ly + lh, c);
    ink[0] = ink[1] = ink[2] = (unsigned char)(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 150 ? 0 : 255);
    nq = stb_easy_font_print(0, 0, text, NULL, quads, (int)sizeof quads);
    for (q = 0; q < nq; q++) { /* each quad is an axis-aligned rectangle: vertices 0 and 2 are opposite corners */
        const float *v0 = (const float *)(quads + q * 64), *v2 = (const float *)(quads + q * 64 + 32);
        int qx0 = lx + (2 + (int)floorf(v0[0] + 0.5f)) * s, qy0 = ly + (2 + (int)floorf(v0[1] + 0.5f)) * s;
        int qx1 = lx + (2 + (int)floorf(v2[0] + 0.5f)) * s, qy1 = ly + (2 + (int)floorf(v2[1] + 0.5f)) * s;
        fill_rect(rgb, w, h, qx0, qy0, qx1, qy1, ink);
    }
}

/* Write a copy of img with every entity's boxes and label drawn on it as a PNG. */
static int write_annotated_png(const kosmos2_image *img, const kosmos2_grounding *g, const char *path) {
    int w = img->width, h = img->height, e, b, ok;
    int t = (w < h ? w : h) >= 100 ? 3 : 2;       /* outline thickness, pixels */
    int s = 1 + (w < h ? w : h) / 400;              /* label scale */
    size_t n = (size_t)w * (size_t)h * 3;
    unsigned char *rgb = (unsigned char *)malloc(n); /* [h, w, 3] */
    if (!rgb) return runtime_error("-o %s: out of memory", path);
    memcpy(rgb, img->rgb, n);
    for (e = 0; e < g->n_entities; e++)
        for (b = 0; b < g->entities[e].n_boxes; b++) draw_box(rgb, w, h, &g->entities[e].boxes[b], t, PALETTE[e % 10]);
    for (e = 0; e < g->n_entities; e++)
        for (b = 0; b < g->entities[e].n_boxes; b++)
            draw_label(rgb, w, h, &g->entities[e].boxes[b], g->entities[e].phrase, s, PALETTE[e % 10]);
    ok = stbi_write_png(path, w, h, 3, rgb, w * 3);
    free(rgb);
    if (!ok) return runtime_error("-o %s: cannot write the PNG file", path);
    fprintf(stderr, "kosmos2: wrote %s (%d entities)\n", path, g->n_entities);
    return 0;
}

/* ============================================================================================
 *  --dump-dir: the intermediate tensors as float32 .npy
 * ============================================================================================ */

/* Make `dir` if it does not exist (one level). */
static int ensure_dir(const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0) return S_ISDIR(st.st_mode) ? 0 : runtime_error("--dump-dir %s: not a directory", dir);
    if (mkdir(dir, 0777) != 0) return runtime_error("--dump-dir %s: cannot create: %s", dir, strerror(errno));
    return 0;
}

/* -o FILE: make sure it can be written before spending time on generation. A file that did not
 * exist is created empty now (*created = 1: remove it if nothing gets written). */
static int check_writable(const char *path, int *created) {
    struct stat st;
    FILE *f;
    *created = stat(path, &st) != 0;
    if (!(f = fopen(path, "ab"))) return runtime_error("-o %s: cannot write the PNG file: %s", path, strerror(errno));
    fclose(f);
    return 0;
}

static int dump_npy(const char *dir, const char *name, const float *data, const int64_t *shape, int ndim) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (kosmos2_write_npy_f32(path, data, shape, ndim)) return library_error("--dump-dir");
    return 0;
}

/* pixel_values [1,3,H,W], vision_hidden [1,N,Dv], image_embeds [1,64,D], prompt_logits [V]
 * (the logits at the last prompt position). Leaves an image encoded and the KV cache filled
 * (kosmos2_generate starts afresh). */
static int dump_stages(kosmos2_context *ctx, const kosmos2_model *model, const kosmos2_image *img, const int32_t *ids,
                       const uint8_t *mask, int n, const char *dir) {
    const kosmos2_config *c = kosmos2_model_config(model);
    const kosmos2_preprocess_config *pp = kosmos2_model_preprocess_config(model);
    int n_vis = (c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1;
    size_t n_pix = (size_t)3 * (size_t)pp->width * (size_t)pp->height;
    size_t n_hid = (size_t)n_vis * (size_t)c->vision_hidden, n_emb = (size_t)c->latent_query_num * (size_t)c->text_hidden;
    float *pix = (float *)malloc(n_pix * sizeof(float));        /* [3, H, W] */
    float *hid = (float *)malloc(n_hid * sizeof(float));        /* [N, Dv] */
    float *emb = (float *)malloc(n_emb * sizeof(float));        /* [64, D] */
    float *logits = (float *)malloc((size_t)c->vocab_size * sizeof(float)); /* [V] */
    int rc = 0;
    if (!rc && (!pix || !hid || !emb || !logits)) rc = runtime_error("--dump-dir: out of memory");
    if (!rc && kosmos2_image_preprocess(img, pp, pix)) rc = library_error("--dump-dir: preprocess");
    if (!rc && kosmos2_encode_image(ctx, pix, hid, emb)) rc = library_error("--dump-dir: encode image");
    kosmos2_kv_clear(ctx);
    if (!rc && kosmos2_decode(ctx, ids, n, mask, logits)) rc = library_error("--dump-dir: prompt");
    if (!rc) {
        int64_t s_pix[4], s_hid[3], s_emb[3], s_log[1];
        s_pix[0] = 1; s_pix[1] = 3; s_pix[2] = pp->height; s_pix[3] = pp->width;
        s_hid[0] = 1; s_hid[1] = n_vis; s_hid[2] = c->vision_hidden;
        s_emb[0] = 1; s_emb[1] = c->latent_query_num; s_emb[2] = c->text_hidden;
        s_log[0] = c->vocab_size;
        rc = dump_npy(dir, "pixel_values.npy", pix, s_pix, 4);
        if (!rc) rc = dump_npy(dir, "vision_hidden.npy", hid, s_hid, 3);
        if (!rc) rc = dump_npy(dir, "image_embeds.npy", emb, s_emb, 3);
        if (!rc) rc = dump_npy(dir, "prompt_logits.npy", logits, s_log, 1);
        if (!rc) fprintf(stderr, "kosmos2: wrote pixel_values, vision_hidden, image_embeds, prompt_logits .npy to %s\n", dir);
    }
    kosmos2_kv_clear(ctx);
    free(pix); free(hid); free(emb); free(logits);
    return rc;
}

/* ============================================================================================
 *  The generate command (the default)
 * ============================================================================================ */

/* The model (a checkpoint directory or a .gguf file) must exist: a clear message before the
 * loader's per-file ones. */
static int check_model_path(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return runtime_error("model '%s' not found: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) return runtime_error("'%s' is neither a model directory nor a file", path);
    return 0;
}

/* The prompt ids exactly as kosmos2_generate builds them (for streaming and --dump-dir).
 * *ids and *mask are malloc'd. */
static int build_prompt_ids(const kosmos2_model *model, const char *prompt, const kosmos2_phrase_boxes *pb, int n_groups,
                            int with_image, int32_t **ids, uint8_t **mask, int *n) {
    const kosmos2_tokenizer *tok = kosmos2_model_tokenizer(model);
    int n_img = with_image ? kosmos2_model_config(model)->latent_query_num : 0, len;
    char *full = NULL;
    *ids = NULL; *mask = NULL; *n = 0;
    if (kosmos2_prompt_attach_boxes(prompt, pb, n_groups, &full)) return library_error("--box");
    len = kosmos2_prompt_ids(tok, full, n_img, NULL, NULL, 0);
    if (len < 0) { kosmos2_free(full); return library_error("prompt"); }
    *ids = (int32_t *)malloc((size_t)(len + 1) * sizeof(int32_t));
    *mask = (uint8_t *)malloc((size_t)len + 1);
    if (!*ids || !*mask) { kosmos2_free(full); return runtime_error("out of memory"); }
    kosmos2_prompt_ids(tok, full, n_img, *ids, *mask, len);
    kosmos2_free(full);
    *n = len;
    return 0;
}

/* The generation settings of the flags; tokens go to the stream, Ctrl-C aborts. */
static kosmos2_generate_params generate_params(const gen_options *o, stream_state *st) {
    kosmos2_generate_params gp = kosmos2_generate_default_params();
    gp.max_new_tokens = o->max_new_tokens;
    gp.num_beams = o->beams;
    gp.no_repeat_ngram_size = o->no_repeat_ngram;
    gp.do_sample = o->sampling;
    gp.temperature = (float)o->temperature;
    gp.top_k = o->top_k;
    gp.top_p = (float)o->top_p;
    gp.seed = o->seed;
    gp.on_token = stream_on_token;
    gp.abort_callback = abort_requested;
    gp.user_data = st;
    return gp;
}

/* kosmos2 -m DIR --image FILE ...: load, check, (dump,) generate while streaming, then print the
 * summary or JSON and draw the annotated image. */
static int cmd_generate(int argc, char **argv) {
    static gen_options o;
    static kosmos2_box norm[MAX_BOX_GROUPS][MAX_BOXES_PER_PHRASE];
    kosmos2_phrase_boxes pb[MAX_BOX_GROUPS];
    kosmos2_model_params mp = kosmos2_model_default_params();
    kosmos2_context_params cp = kosmos2_context_default_params();
    kosmos2_generate_params gp;
    kosmos2_model *model = NULL;
    kosmos2_context *ctx = NULL;
    kosmos2_image img;
    kosmos2_result res;
    stream_state st;
    int32_t *prompt_ids = NULL;
    uint8_t *mask = NULL;
    int rc, grc, n_prompt = 0, png_created = 0, png_written = 0;
    double t0 = now_ms(), t_load;

    memset(&img, 0, sizeof img);
    memset(&res, 0, sizeof res);
    memset(&st, 0, sizeof st);
    if ((rc = parse_gen_options(argc, argv, &o)) != 0) return rc < 0 ? 0 : rc;
    if ((rc = check_box_count(&o)) != 0) return rc;
    if ((rc = check_model_path(o.model_dir)) != 0) return rc;
    if (o.dump_dir && (rc = ensure_dir(o.dump_dir)) != 0) return rc;
    if (o.output_png && (rc = check_writable(o.output_png, &png_created)) != 0) return rc;

    /* load */
    mp.n_threads = o.threads;
    if (kosmos2_model_load(o.model_dir, &mp, &model)) { rc = library_error("cannot load the model"); goto end; }
    cp.n_threads = o.threads;
    cp.max_ctx = o.ctx_size;
    cp.kv_type = o.kv_type;
    if (kosmos2_context_new(model, &cp, &ctx)) { rc = library_error("cannot create a context"); goto end; }
    kosmos2_context_set_abort_callback(ctx, abort_requested, NULL); /* Ctrl-C also stops vision/prefill at the next layer */
    if (o.image_path && kosmos2_image_load_file(o.image_path, 0, &img)) { rc = library_error("cannot read the image"); goto end; }
    t_load = now_ms() - t0;

    /* the prompt as the model sees it */
    if ((rc = box_groups_normalise(o.groups, o.n_groups, img.width, img.height, norm, pb)) != 0) goto end;
    if ((rc = build_prompt_ids(model, o.prompt, pb, o.n_groups, o.image_path != NULL, &prompt_ids, &mask, &n_prompt)) != 0) goto end;
    {
        int max_ctx = kosmos2_model_config(model)->max_positions;
        if (o.ctx_size > 0 && o.ctx_size < max_ctx) max_ctx = o.ctx_size;
        if ((int64_t)n_prompt + o.max_new_tokens > max_ctx) {
            rc = runtime_error("the prompt (%d tokens) + --max-new-tokens (%d) exceeds the context of %d positions", n_prompt,
                               o.max_new_tokens, max_ctx);
            goto end;
        }
    }
    fprintf(stderr, "kosmos2: loaded %s in %.1f ms", o.model_dir, t_load);
    if (o.image_path) fprintf(stderr, "; image %s is %dx%d", o.image_path, img.width, img.height);
    else fprintf(stderr, "; no --image: text only");
    fprintf(stderr, "; prompt %d tokens; KV cache %s\n", n_prompt, kosmos2_context_kv_type(ctx) == KOSMOS2_KV_F16 ? "f16" : "f32");
    if (o.dump_dir && (rc = dump_stages(ctx, model, &img, prompt_ids, mask, n_prompt, o.dump_dir)) != 0) goto end;

    /* generate, streaming to stdout */
    if (stream_begin(&st, kosmos2_model_tokenizer(model), prompt_ids, n_prompt, o.max_new_tokens, !o.json)) {
        rc = runtime_error("out of memory");
        goto end;
    }
    gp = generate_params(&o, &st);
    signal(SIGINT, on_sigint);
    grc = kosmos2_generate(ctx, o.image_path ? &img : NULL, o.prompt, pb, o.n_groups, &gp, &res);
    signal(SIGINT, SIG_DFL);
    if (grc && grc != KOSMOS2_E_ABORTED) {
        if (st.shown_len) printf("\n");
        rc = library_error("generation failed");
        goto end;
    }
    stream_flush(&st, 1);

    /* results */
    if (o.json) print_json(&res, t_load, now_ms() - t0);
    else print_readable(&res);
    fflush(stdout);
    print_timings(&res, t_load, now_ms() - t0);
    if (st.diverged) fprintf(stderr, "kosmos2: note: the streamed text differs from the final decoding; the summary is authoritative\n");
    if (o.output_png && (rc = write_annotated_png(&img, &res.grounding, o.output_png)) != 0) goto end;
    png_written = o.output_png != NULL;
    if (grc == KOSMOS2_E_ABORTED) {
        fprintf(stderr, "kosmos2: interrupted after %d tokens\n", res.n_ids);
        rc = EXIT_INTERRUPTED;
    }
end:
    if (png_created && !png_written) remove(o.output_png);
    stream_free(&st);
    free(prompt_ids);
    free(mask);
    kosmos2_result_free(&res);
    kosmos2_image_free(&img);
    kosmos2_context_free(ctx);
    kosmos2_model_free(model);
    return rc;
}

/* ============================================================================================
 *  Subcommands: tokenize, detokenize, preprocess
 * ============================================================================================ */

/* Options shared by the subcommands. */
typedef struct sub_options {
    const char *model_dir, *image_path, *out_path;
    int keep_special;
    int n_args;
    char **args;   /* [n_args] positional arguments */
} sub_options;

/* Parse a subcommand's flags (the ones it allows are in `allowed`, e.g. "mio"); 0, EXIT_USAGE, or
 * -1 after printing help. */
static int parse_sub_options(const char *cmd, int argc, char **argv, const char *allowed, sub_options *o) {
    int i, r;
    const char *v;
    memset(o, 0, sizeof *o);
    o->args = (char **)calloc((size_t)argc + 1, sizeof(char *));
    if (!o->args) return runtime_error("out of memory");
    for (i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { print_help(stdout); return -1; }
        if (!strcmp(a, "--")) { while (++i < argc) o->args[o->n_args++] = argv[i]; break; }
        if ((r = flag_value(argc, argv, &i, "--model", "-m", &v)) != 0) { if (r == EXIT_USAGE) return r; o->model_dir = v; continue; }
        if (strchr(allowed, 'i') && (r = flag_value(argc, argv, &i, "--image", "-i", &v)) != 0) {
            if (r == EXIT_USAGE) return r;
            o->image_path = v;
            continue;
        }
        if (strchr(allowed, 'o') && (r = flag_value(argc, argv, &i, "--out", "-o", &v)) != 0) {
            if (r == EXIT_USAGE) return r;
            o->out_path = v;
            continue;
        }
        if (strchr(allowed, 'k') && !strcmp(a, "--keep-special")) { o->keep_special = 1; continue; }
        /* negative numbers are ids for detokenize (rejected there with a clear message) */
        if (a[0] == '-' && a[1] && !(a[1] >= '0' && a[1] <= '9')) return usage_error("%s: unknown option '%s' (see kosmos2 --help)", cmd, a);
        o->args[o->n_args++] = argv[i];
    }
    if (!o->model_dir) return usage_error("%s: no model directory given (-m DIR)", cmd);
    return 0;
}

/* The tokenizer of -m: DIR/sentencepiece.bpe.model for a checkpoint directory (not the weights),
 * the one inside a .gguf file (the model is memory-mapped), or -m naming a SentencePiece .model
 * file itself. */
typedef struct tokenizer_handle {
    kosmos2_tokenizer *own;      /* loaded from a .model file, or NULL */
    kosmos2_model *model;        /* a .gguf file, or NULL */
    const kosmos2_tokenizer *tok;
} tokenizer_handle;

static int is_gguf_file(const char *path) {
    char magic[4] = {0, 0, 0, 0};
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(magic, 1, 4, f) : 0;
    if (f) fclose(f);
    return n == 4 && !memcmp(magic, "GGUF", 4);
}

static int load_tokenizer(const char *model_path, tokenizer_handle *h) {
    char path[4096];
    struct stat st;
    memset(h, 0, sizeof *h);
    if (stat(model_path, &st) != 0) return runtime_error("model '%s' not found: %s", model_path, strerror(errno));
    if (!S_ISDIR(st.st_mode) && is_gguf_file(model_path)) {
        if (kosmos2_model_load(model_path, NULL, &h->model)) return library_error("cannot load the model");
        h->tok = kosmos2_model_tokenizer(h->model);
        return 0;
    }
    if (S_ISDIR(st.st_mode)) snprintf(path, sizeof path, "%s/sentencepiece.bpe.model", model_path);
    else snprintf(path, sizeof path, "%s", model_path);
    if (kosmos2_tokenizer_load_file(path, &h->own)) return library_error("cannot load the tokenizer");
    h->tok = h->own;
    return 0;
}

static void tokenizer_handle_free(tokenizer_handle *h) {
    kosmos2_tokenizer_free(h->own);
    kosmos2_model_free(h->model);
    memset(h, 0, sizeof *h);
}

/* Print the ids of one text on one line; 0 or EXIT_RUNTIME. */
static int tokenize_line(const kosmos2_tokenizer *tok, const char *text) {
    int n = kosmos2_tokenize(tok, text, NULL, 0), i;
    int32_t *ids;
    if (n < 0) return library_error("tokenize");
    ids = (int32_t *)malloc((size_t)(n + 1) * sizeof(int32_t));
    if (!ids) return runtime_error("out of memory");
    kosmos2_tokenize(tok, text, ids, n);
    for (i = 0; i < n; i++) printf("%s%d", i ? " " : "", (int)ids[i]);
    printf("\n");
    free(ids);
    return 0;
}

/* kosmos2 tokenize -m DIR [TEXT]: as tokenizer(TEXT, add_special_tokens=False); without TEXT one
 * line of ids per line of stdin (the newline is not part of the text). */
static int cmd_tokenize(int argc, char **argv) {
    sub_options o;
    tokenizer_handle th;
    int rc = parse_sub_options("tokenize", argc, argv, "", &o);
    memset(&th, 0, sizeof th);
    if (rc == 0 && o.n_args > 1) rc = usage_error("tokenize: give the text as ONE argument (quote it), or on stdin");
    if (rc == 0) rc = load_tokenizer(o.model_dir, &th);
    if (rc == 0 && o.n_args == 1) rc = tokenize_line(th.tok, o.args[0]);
    else if (rc == 0) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        while (rc == 0 && (len = getline(&line, &cap, stdin)) >= 0) {
            if (len > 0 && line[len - 1] == '\n') line[--len] = 0;
            rc = tokenize_line(th.tok, line);
        }
        free(line);
    }
    tokenizer_handle_free(&th);
    free(o.args);
    return rc < 0 ? 0 : rc;
}

/* Append the ids in `s` (separated by spaces, commas, brackets) to *ids; 0 or EXIT_USAGE. */
static int parse_ids(const char *s, int32_t **ids, int *n, int *cap) {
    const char *p = s;
    for (;;) {
        char *end;
        long v;
        while (*p == ' ' || *p == '\t' || *p == ',' || *p == '[' || *p == ']' || *p == '\r' || *p == '\n') p++;
        if (!*p) return 0;
        errno = 0;
        v = strtol(p, &end, 10);
        if (end == p || errno || v < INT32_MIN || v > INT32_MAX || (*end && !strchr(" \t,[]\r\n", *end)))
            return usage_error("detokenize: '%s' is not a list of integer ids", s);
        if (*n == *cap) {
            int32_t *t;
            *cap = *cap ? *cap * 2 : 64;
            t = (int32_t *)realloc(*ids, (size_t)*cap * sizeof(int32_t));
            if (!t) return runtime_error("out of memory");
            *ids = t;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
}

/* Print the decoded text of ids[0..n) on one line; 0 or EXIT_RUNTIME. */
static int detokenize_line(const kosmos2_tokenizer *tok, const int32_t *ids, int n, int keep_special) {
    int len = kosmos2_detokenize(tok, ids, n, !keep_special, NULL, 0);
    char *text;
    if (len < 0) return library_error("detokenize");
    text = (char *)malloc((size_t)len + 1);
    if (!text) return runtime_error("out of memory");
    kosmos2_detokenize(tok, ids, n, !keep_special, text, (size_t)len + 1);
    printf("%s\n", text);
    free(text);
    return 0;
}

/* kosmos2 detokenize -m DIR [--keep-special] IDS...: processor.batch_decode(skip_special_tokens=
 * not --keep-special); without IDS one decoded line per line of ids on stdin. */
static int cmd_detokenize(int argc, char **argv) {
    sub_options o;
    tokenizer_handle th;
    int32_t *ids = NULL;
    int n = 0, cap = 0, i;
    int rc = parse_sub_options("detokenize", argc, argv, "k", &o);
    memset(&th, 0, sizeof th);
    for (i = 0; rc == 0 && i < o.n_args; i++) rc = parse_ids(o.args[i], &ids, &n, &cap);
    if (rc == 0) rc = load_tokenizer(o.model_dir, &th);
    if (rc == 0 && o.n_args > 0) rc = detokenize_line(th.tok, ids, n, o.keep_special);
    else if (rc == 0) {
        char *line = NULL;
        size_t lcap = 0;
        while (rc == 0 && getline(&line, &lcap, stdin) >= 0) {
            n = 0;
            rc = parse_ids(line, &ids, &n, &cap);
            if (rc == 0) rc = detokenize_line(th.tok, ids, n, o.keep_special);
        }
        free(line);
    }
    free(ids);
    tokenizer_handle_free(&th);
    free(o.args);
    return rc < 0 ? 0 : rc;
}

/* kosmos2 preprocess -m DIR --image FILE --out FILE.npy: pixel_values [1,3,H,W] float32, with the
 * model's preprocessor_config.json (the model is memory-mapped, not read). */
static int cmd_preprocess(int argc, char **argv) {
    sub_options o;
    kosmos2_model *model = NULL;
    kosmos2_image img;
    float *pix = NULL;
    int rc = parse_sub_options("preprocess", argc, argv, "io", &o);
    memset(&img, 0, sizeof img);
    if (rc == 0 && o.n_args) rc = usage_error("preprocess: unexpected argument '%s'", o.args[0]);
    if (rc == 0 && !o.image_path) rc = usage_error("preprocess: no image given (--image FILE)");
    if (rc == 0 && !o.out_path) rc = usage_error("preprocess: no output file given (--out FILE.npy)");
    if (rc == 0) rc = check_model_path(o.model_dir);
    if (rc == 0 && kosmos2_model_load(o.model_dir, NULL, &model)) rc = library_error("cannot load the model");
    if (rc == 0 && kosmos2_image_load_file(o.image_path, 0, &img)) rc = library_error("cannot read the image");
    if (rc == 0) {
        const kosmos2_preprocess_config *pp = kosmos2_model_preprocess_config(model);
        int64_t shape[4];
        shape[0] = 1; shape[1] = 3; shape[2] = pp->height; shape[3] = pp->width;
        pix = (float *)malloc((size_t)3 * (size_t)pp->width * (size_t)pp->height * sizeof(float)); /* [3, H, W] */
        if (!pix) rc = runtime_error("out of memory");
        else if (kosmos2_image_preprocess(&img, pp, pix)) rc = library_error("preprocess");
        else if (kosmos2_write_npy_f32(o.out_path, pix, shape, 4)) rc = library_error("cannot write the output");
    }
    free(pix);
    kosmos2_image_free(&img);
    kosmos2_model_free(model);
    free(o.args);
    return rc < 0 ? 0 : rc;
}

/* Progress of `quantize` on stderr: one line per tensor, with the type it was given. */
static int quantize_progress(const char *tensor, const char *type, int done, int total, void *user_data) {
    (void)user_data;
    fprintf(stderr, "[%4d/%4d] %-6s %s\n", done, total, type, tensor);
    return g_interrupted;
}

/* kosmos2 quantize IN OUT.gguf --type T: one self-contained GGUF file (weights, config, tokenizer,
 * preprocessing); IN is a checkpoint directory or another .gguf file. */
static int cmd_quantize(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *type = NULL, *v;
    kosmos2_model *model = NULL;
    int i, r, rc = 0;
    for (i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { print_help(stdout); return 0; }
        if ((r = flag_value(argc, argv, &i, "--type", NULL, &v)) != 0) { if (r == EXIT_USAGE) return r; type = v; continue; }
        if (argv[i][0] == '-' && argv[i][1]) return usage_error("quantize: unknown option '%s' (see kosmos2 --help)", argv[i]);
        if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else return usage_error("quantize: unexpected argument '%s'", argv[i]);
    }
    if (!in || !out) return usage_error("quantize: usage: kosmos2 quantize IN_DIR OUT.gguf --type f32|f16|bf16|q8_0|q4_0|q8_0_ggml|q4_0_ggml");
    if (!type) return usage_error("quantize: no --type given (f32, f16, bf16, q8_0, q4_0, q8_0_ggml, q4_0_ggml)");
    if (strcmp(type, "f32") && strcmp(type, "f16") && strcmp(type, "bf16") && strcmp(type, "q8_0") && strcmp(type, "q4_0") &&
        strcmp(type, "q8_0_ggml") && strcmp(type, "q4_0_ggml"))
        return usage_error("quantize: --type %s: must be f32, f16, bf16, q8_0, q4_0, q8_0_ggml or q4_0_ggml", type);
    if ((rc = check_model_path(in)) != 0) return rc;
    if (kosmos2_model_load(in, NULL, &model)) return library_error("cannot load the model");
    signal(SIGINT, on_sigint); /* Ctrl-C: stop and remove the partial file */
    if (kosmos2_model_save_gguf(model, out, type, quantize_progress, NULL)) rc = library_error("quantize");
    else fprintf(stderr, "kosmos2: wrote %s (%s)\n", out, type);
    signal(SIGINT, SIG_DFL);
    kosmos2_model_free(model);
    return rc;
}

/* Peak resident memory of this process in MB (Linux: ru_maxrss in KiB; macOS: bytes). */
static double peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
#ifdef __APPLE__
    return (double)ru.ru_maxrss / 1048576.0;
#else
    return (double)ru.ru_maxrss / 1024.0;
#endif
}

/* The machine probes in a child process (its 1 GiB buffer does not count in this process's peak
 * RSS, and no OpenMP threads exist yet in the parent). *bw, *peak, *peak8 stay 0 when that fails. */
static void probe_in_child(int threads, double *bw, double *peak, double *peak8) {
    int fd[2];
    pid_t pid;
    double v[3] = {0, 0, 0};
    if (pipe(fd) != 0) return;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        close(fd[0]);
        v[0] = kosmos2_bench_memory_read(threads);
        v[1] = kosmos2_bench_fma_peak(threads);
        v[2] = kosmos2_bench_int8_peak(threads);
        _exit(write(fd[1], v, sizeof v) == (ssize_t)sizeof v ? 0 : 1);
    }
    close(fd[1]);
    if (pid > 0 && read(fd[0], v, sizeof v) == (ssize_t)sizeof v) { *bw = v[0]; *peak = v[1]; *peak8 = v[2]; }
    close(fd[0]);
    if (pid > 0) waitpid(pid, NULL, 0);
}

/* kosmos2 bench -m MODEL [-i IMAGE] [-p PROMPT] [-t N] [-n N] [--no-limits]: the whole pipeline
 * per stage, as fractions of this machine's limits measured in the same run (the best of a probe
 * before and one after: other load on the machine only lowers them) (stdout). A warm-up
 * run first pages the weights in; then one timed run (no n-gram ban: a fixed amount of work).
 * FLOPs: 2 per multiply-add of the matrix products (attention included); decode bytes: every
 * text-model weight read once per token (the tied lm_head included). With the limits, the last
 * figures time 3 x 8 more decode steps, each 8 right after a memory probe, and 3 generations of
 * one token (vision, prefill), each stage right after the peak probe of its matrices' type: the
 * host's drift between a probe and a stage measured seconds apart can exceed 30 % on shared VMs,
 * and one run of a stage moves by 10-20 % (their medians are the figures to quote). */
static double median3(const double *v) {
    const double a = v[0], b = v[1], c = v[2];
    return a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
}
static int cmd_bench(int argc, char **argv) {
    const char *model_path = NULL, *image_path = NULL, *prompt = "<grounding>An image of", *v;
    int threads = 0, n_new = 32, limits = 1, i, r, rc = 0;
    kosmos2_model_params mp = kosmos2_model_default_params();
    kosmos2_context_params cp = kosmos2_context_default_params();
    kosmos2_generate_params gp = kosmos2_generate_default_params();
    kosmos2_model *model = NULL;
    kosmos2_context *ctx = NULL;
    kosmos2_image img;
    kosmos2_result res;
    double bw = 0, peak = 0, peak8 = 0, t0, t_load, t_warm, t_end, rss, vis_flop, pre_flop, dec_bytes = 0, weight_bytes = 0;
    int vis_q = 0, txt_q = 0; /* vision / text matrices quantized (q8_0, q4_0): their limit is the int8 peak */
    double beside[3] = {0, 0, 0}, beside_gbs[3] = {0, 0, 0}, vis_beside[3] = {0, 0, 0}, pre_beside[3] = {0, 0, 0};
    float *logits = NULL;
    int n_beside = 0;
    memset(&img, 0, sizeof img);
    memset(&res, 0, sizeof res);
    for (i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { print_help(stdout); return 0; }
        if (!strcmp(a, "--no-limits")) { limits = 0; continue; }
        if ((r = flag_value(argc, argv, &i, "--model", "-m", &v)) != 0) { if (r == EXIT_USAGE) return r; model_path = v; continue; }
        if ((r = flag_value(argc, argv, &i, "--image", "-i", &v)) != 0) { if (r == EXIT_USAGE) return r; image_path = v; continue; }
        if ((r = flag_value(argc, argv, &i, "--prompt", "-p", &v)) != 0) { if (r == EXIT_USAGE) return r; prompt = v; continue; }
        if ((r = flag_value(argc, argv, &i, "--threads", "-t", &v)) != 0) {
            if (r == EXIT_USAGE || (r = parse_int(a, v, 0, 4096, &threads)) != 0) return EXIT_USAGE;
            continue;
        }
        if ((r = flag_value(argc, argv, &i, "--max-new-tokens", "-n", &v)) != 0) {
            if (r == EXIT_USAGE || (r = parse_int(a, v, 1, 1 << 20, &n_new)) != 0) return EXIT_USAGE;
            continue;
        }
        if (a[0] == '-' && a[1]) return usage_error("bench: unknown option '%s' (see kosmos2 --help)", a);
        return usage_error("bench: unexpected argument '%s'", a);
    }
    if (!model_path) return usage_error("bench: no model given (-m DIR|FILE)");
    if ((rc = check_model_path(model_path)) != 0) return rc;
    signal(SIGINT, on_sigint);
    if (limits) { /* the limits: the best of a probe before and one after the run (other load on the machine lowers them) */
        fprintf(stderr, "kosmos2 bench: measuring the machine (memory read, FMA and int8 peaks)...\n");
        probe_in_child(threads, &bw, &peak, &peak8);
    }
    t0 = now_ms();
    mp.n_threads = threads;
    if (kosmos2_model_load(model_path, &mp, &model)) { rc = library_error("cannot load the model"); goto end; }
    t_load = now_ms() - t0;
    cp.n_threads = threads;
    if (kosmos2_context_new(model, &cp, &ctx)) { rc = library_error("cannot create a context"); goto end; }
    kosmos2_context_set_abort_callback(ctx, abort_requested, NULL);
    if (image_path) {
        if (kosmos2_image_load_file(image_path, 0, &img)) { rc = library_error("cannot read the image"); goto end; }
    } else { /* a synthetic 1024 x 1024 image: smooth gradients */
        const int w = 1024, h = 1024;
        uint8_t *rgb = (uint8_t *)malloc((size_t)w * h * 3);
        int x, y;
        if (!rgb) { rc = runtime_error("out of memory"); goto end; }
        for (y = 0; y < h; y++)
            for (x = 0; x < w; x++) {
                uint8_t *q = rgb + ((size_t)y * w + x) * 3;
                q[0] = (uint8_t)(x * 255 / w); q[1] = (uint8_t)(y * 255 / h); q[2] = (uint8_t)((x + y) * 255 / (w + h));
            }
        r = kosmos2_image_from_pixels(rgb, w, h, 3, (size_t)w * 3, &img);
        free(rgb);
        if (r) { rc = library_error("cannot make the synthetic image"); goto end; }
    }
    gp.no_repeat_ngram_size = 0; /* a fixed amount of work */
    gp.max_new_tokens = 2;
    fprintf(stderr, "kosmos2 bench: warm-up run (pages the weights in)...\n");
    t_warm = now_ms();
    r = kosmos2_generate(ctx, &img, prompt, NULL, 0, &gp, &res);
    kosmos2_result_free(&res);
    if (r) { rc = r == KOSMOS2_E_ABORTED ? EXIT_INTERRUPTED : library_error("warm-up run"); goto end; }
    t_warm = now_ms() - t_warm;
    gp.max_new_tokens = n_new;
    fprintf(stderr, "kosmos2 bench: timed run (%d new tokens)...\n", n_new);
    t0 = now_ms();
    r = kosmos2_generate(ctx, &img, prompt, NULL, 0, &gp, &res);
    if (r) { rc = r == KOSMOS2_E_ABORTED ? EXIT_INTERRUPTED : library_error("timed run"); goto end; }
    {
        const kosmos2_config *c = kosmos2_model_config(model);
        double N = (double)(c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1, Dv = c->vision_hidden,
               Fv = c->vision_intermediate, D = c->text_hidden, F = c->ffn_dim, V = c->vocab_size, T = res.n_prompt;
        vis_flop = 2.0 * c->vision_layers * (N * (4 * Dv * Dv + 2 * Dv * Fv) + 2 * N * N * Dv);
        pre_flop = 2.0 * c->text_layers * (T * (4 * D * D + 2 * D * F) + T * T * D) + 2.0 * V * D;
        for (i = 0; i < kosmos2_model_n_tensors(model); i++) {
            kosmos2_tensor_info ti;
            kosmos2_model_tensor(model, i, &ti);
            weight_bytes += (double)ti.nbytes;
            if (!strncmp(ti.name, "text_model.", 11)) dec_bytes += (double)ti.nbytes;
            if (ti.dtype && (ti.dtype[0] == 'q' || ti.dtype[0] == 'Q') && !strncmp(ti.name, "vision_model.", 13)) vis_q = 1;
            if (ti.dtype && (ti.dtype[0] == 'q' || ti.dtype[0] == 'Q') && !strncmp(ti.name, "text_model.", 11)) txt_q = 1;
        }
    }
    t_end = now_ms();
    rss = peak_rss_mb(); /* (the model's: the first probe ran in a child, the second comes after this) */
    if (limits) {
        double bw2, peak2, peak82;
        fprintf(stderr, "kosmos2 bench: measuring the machine again...\n");
        bw2 = kosmos2_bench_memory_read(kosmos2_context_n_threads(ctx));
        peak2 = kosmos2_bench_fma_peak(kosmos2_context_n_threads(ctx));
        peak82 = kosmos2_bench_int8_peak(kosmos2_context_n_threads(ctx));
        if (bw2 > bw) bw = bw2;
        if (peak2 > peak) peak = peak2;
        if (peak82 > peak8) peak8 = peak82;
        /* decode beside the probe: 3 rounds of (probe, 8 decode steps), so that the host's drift
         * between a probe and the stage it is compared with stays out of the ratio */
        fprintf(stderr, "kosmos2 bench: decode steps interleaved with the memory probe...\n");
        logits = (float *)malloc((size_t)kosmos2_model_config(model)->vocab_size * sizeof(float)); /* (as generation: lm_head included) */
        if (!logits) { rc = runtime_error("out of memory"); goto end; }
        for (n_beside = 0; n_beside < 3 && !g_interrupted; n_beside++) {
            const double b = kosmos2_bench_memory_read(kosmos2_context_n_threads(ctx));
            const int32_t id = res.n_ids > 0 ? res.ids[res.n_ids - 1] : 2;
            double t;
            int k;
            t = now_ms();
            for (k = 0; k < 8; k++)
                if (kosmos2_decode(ctx, &id, 1, NULL, logits)) { rc = library_error("decode beside the probe"); goto end; }
            t = (now_ms() - t) / 8;
            beside_gbs[n_beside] = dec_bytes / t * 1e-6;
            beside[n_beside] = b > 0 ? dec_bytes / (t * 1e-3) / b : 0;
        }
        /* vision and prefill beside the peak probe (the int8 one for quantized matrices): 3
         * rounds of (probe, a generation of 1 token), each stage's ratio to the probe just before */
        fprintf(stderr, "kosmos2 bench: vision and prefill interleaved with the peak probe...\n");
        gp.max_new_tokens = 1;
        for (i = 0; i < 3 && n_beside == 3 && !g_interrupted; i++) {
            const int nt = kosmos2_context_n_threads(ctx);
            const double pv = vis_q ? kosmos2_bench_int8_peak(nt) : kosmos2_bench_fma_peak(nt);
            kosmos2_result rb;
            double pp;
            memset(&rb, 0, sizeof rb);
            if (kosmos2_generate(ctx, &img, prompt, NULL, 0, &gp, &rb)) { kosmos2_result_free(&rb); rc = library_error("vision beside the probe"); goto end; }
            vis_beside[i] = pv > 0 && rb.t_vision_ms > 0 ? vis_flop / (rb.t_vision_ms * 1e-3) / pv : 0;
            kosmos2_result_free(&rb);
            pp = txt_q ? kosmos2_bench_int8_peak(nt) : kosmos2_bench_fma_peak(nt);
            memset(&rb, 0, sizeof rb);
            if (kosmos2_generate(ctx, &img, prompt, NULL, 0, &gp, &rb)) { kosmos2_result_free(&rb); rc = library_error("prefill beside the probe"); goto end; }
            pre_beside[i] = pp > 0 && rb.t_prefill_ms > 0 ? pre_flop / (rb.t_prefill_ms * 1e-3) / pp : 0;
            kosmos2_result_free(&rb);
        }
    }
    printf("kosmos2 %s bench: %s (%.2f GB of weights), %d threads, kernels %s\n", KOSMOS2_VERSION, model_path,
           weight_bytes / 1e9, kosmos2_context_n_threads(ctx), kosmos2_kernels_name());
    if (limits) printf("machine            memory read %.1f GB/s, float32 FMA peak %.1f GFLOP/s, int8 multiply-add peak %.1f GOP/s (best of a probe before and after the run)\n", bw / 1e9, peak / 1e9, peak8 / 1e9);
    printf("load             %8.1f ms\n", t_load);
    printf("warm-up run      %8.1f ms   (first touch of the weights, 2 new tokens)\n", t_warm);
    printf("preprocess       %8.1f ms   (%dx%d image)\n", res.t_preprocess_ms, img.width, img.height);
    printf("vision           %8.1f ms   %6.1f GFLOP/s", res.t_vision_ms, vis_flop / res.t_vision_ms * 1e-6);
    if (limits && peak > 0) printf(" = %3.0f%% of FMA peak", 100 * vis_flop / (res.t_vision_ms * 1e-3) / peak);
    if (limits && vis_q && peak8 > 0) printf(", %3.0f%% of int8 peak", 100 * vis_flop / (res.t_vision_ms * 1e-3) / peak8);
    printf("\nresampler        %8.1f ms\n", res.t_resampler_ms);
    printf("prefill          %8.1f ms   %6.1f GFLOP/s", res.t_prefill_ms, pre_flop / res.t_prefill_ms * 1e-6);
    if (limits && peak > 0) printf(" = %3.0f%% of FMA peak", 100 * pre_flop / (res.t_prefill_ms * 1e-3) / peak);
    if (limits && txt_q && peak8 > 0) printf(", %3.0f%% of int8 peak", 100 * pre_flop / (res.t_prefill_ms * 1e-3) / peak8);
    printf(" (%d tokens)\n", res.n_prompt);
    if (res.n_decode > 1) {
        double per = res.t_decode_ms / (res.n_decode - 1);
        printf("decode           %8.1f ms/token = %5.2f tokens/s, %5.1f GB/s", per, 1e3 / per, dec_bytes / per * 1e-6);
        if (limits && bw > 0) printf(" = %3.0f%% of memory read", 100 * dec_bytes / (per * 1e-3) / bw);
        printf("\n");
    }
    if (n_beside == 3)
        printf("decode beside    %5.1f %5.1f %5.1f GB/s = %3.0f%% of the memory read probed just before each (median of 3 x 8 tokens)\n",
               beside_gbs[0], beside_gbs[1], beside_gbs[2], 100 * median3(beside));
    if (vis_beside[2] > 0 && pre_beside[2] > 0) {
        printf("vision beside    %3.0f %3.0f %3.0f %% = %3.0f%% of the %s peak probed just before each (median of 3 runs)\n", 100 * vis_beside[0],
               100 * vis_beside[1], 100 * vis_beside[2], 100 * median3(vis_beside), vis_q ? "int8" : "FMA");
        printf("prefill beside   %3.0f %3.0f %3.0f %% = %3.0f%% of the %s peak probed just before each (median of 3 runs)\n", 100 * pre_beside[0],
               100 * pre_beside[1], 100 * pre_beside[2], 100 * median3(pre_beside), txt_q ? "int8" : "FMA");
    }
    printf("end to end       %8.1f ms   (load + the timed run: preprocess, vision, resampler, prefill, %d new tokens)\n",
           t_load + t_end - t0, res.n_decode);
    printf("peak RSS         %8.1f MB\n", rss);
end:
    free(logits);
    signal(SIGINT, SIG_DFL);
    if (g_interrupted && (rc == 0 || rc == EXIT_INTERRUPTED)) {
        fprintf(stderr, "kosmos2: bench interrupted\n");
        rc = EXIT_INTERRUPTED;
    }
    kosmos2_result_free(&res);
    kosmos2_image_free(&img);
    kosmos2_context_free(ctx);
    kosmos2_model_free(model);
    return rc;
}

/* ============================================================================================
 *  Help and dispatch
 * ============================================================================================ */
static void print_help(FILE *f) {
    fprintf(f,
        "kosmos2 %s - Microsoft Kosmos-2 (grounded image captioning) on the CPU\n"
        "\n"
        "usage:\n"
        "  kosmos2 -m DIR --image FILE [-p PROMPT] [options]   caption, ground or refer\n"
        "  kosmos2 tokenize   -m DIR [TEXT]                    ids of TEXT (no TEXT: one line per stdin line)\n"
        "  kosmos2 detokenize -m DIR [--keep-special] [IDS...] text of ids (no IDS: one line of ids per stdin line)\n"
        "  kosmos2 preprocess -m DIR --image FILE --out FILE.npy   pixel_values [1,3,H,W] float32\n"
        "  kosmos2 quantize IN_DIR OUT.gguf --type f32|f16|bf16|q8_0|q4_0|q8_0_ggml|q4_0_ggml\n"
        "                           write one self-contained GGUF file (weights, config, tokenizer);\n"
        "                           q8_0/q4_0 quantize the large matrices, keeping norms, biases and\n"
        "                           position embeddings in f32 and the token embedding in f16 (q4_0:\n"
        "                           it and the resampler in q8_0); one line per tensor says what it\n"
        "                           got. q8_0/q4_0 store the blocks interleaved 8 rows at a time\n"
        "                           (kosmos2.h's own GGUF tensor types: mapped as they are);\n"
        "                           q*_ggml store ggml's rows (for other GGUF tools), repacked in\n"
        "                           memory at every load (seconds, and more memory)\n"
        "  kosmos2 bench -m DIR|FILE [-i IMAGE] [-p PROMPT] [-t N] [-n N] [--no-limits]\n"
        "                           time each stage (load, preprocess, vision, resampler, prefill,\n"
        "                           decode, end to end, peak RSS) as fractions of the machine's memory\n"
        "                           read bandwidth and FMA peak (and int8 peak for q8_0/q4_0 matrices),\n"
        "                           measured before and after the run, then 3 x 8 more decode steps\n"
        "                           each right after a memory probe, and 3 x (vision, prefill) each\n"
        "                           right after a peak probe, as medians (5-30 s in all; --no-limits\n"
        "                           skips them); default image: a synthetic 1024x1024, 32 new tokens,\n"
        "                           no n-gram ban\n"
        "\n"
        "options:\n"
        "  -m, --model DIR|FILE     Hugging Face checkpoint directory (config.json, model.safetensors,\n"
        "                           sentencepiece.bpe.model, preprocessor_config.json) or a .gguf file\n"
        "                           written by kosmos2_model_save_gguf; required. tokenize/detokenize\n"
        "                           read only the tokenizer (-m may also name a SentencePiece .model)\n"
        "  -i, --image FILE         input image (JPEG, PNG, BMP, GIF, PNM, TGA); without it the model\n"
        "                           runs on the text alone\n"
        "  -p, --prompt TEXT        prompt (default \"<grounding>An image of\")\n"
        "  -n, --max-new-tokens N   tokens to generate at most (default 128)\n"
        "      --box x1,y1,x2,y2    boxes for the prompt's <phrase>...</phrase> spans, normalised 0..1;\n"
        "                           one flag per phrase, in order (see BOXES)\n"
        "      --box-px x1,y1,x2,y2 the same in pixels of the input image\n"
        "  -t, --threads N          threads (default 0 = all cores)\n"
        "  -c, --ctx-size N         cap on positions, prompt + generated (default: the model's\n"
        "                           max_position_embeddings, 2048 for Kosmos-2)\n"
        "      --kv f32|f16|auto    element type of the KV cache (default auto: f32 for float weights,\n"
        "                           exact; f16 when the text decoder is quantized q8_0/q4_0). f16\n"
        "                           halves the cache's memory; logits are then no longer exact\n"
        "      --beams K            beam search with K beams (default 1 = greedy)\n"
        "      --temp T             sample with temperature T (default: greedy; T = 0 is greedy)\n"
        "      --top-k K            sampling: keep the K most likely tokens (default 0 = off)\n"
        "      --top-p P            sampling: nucleus probability mass, 0 < P <= 1 (default 1 = off)\n"
        "      --seed S             sampling: random seed (default 0)\n"
        "      --no-repeat-ngram N  ban repeated N-grams (default: the model's, 3 for Kosmos-2; 0 = off)\n"
        "      --json               print one JSON object instead of streamed text: prompt, prompt_ids,\n"
        "                           ids (generated), text, processed_text, caption, image_size,\n"
        "                           entities [{phrase, start, end, boxes, boxes_px}], timings_ms, n_decode\n"
        "  -o, --output FILE.png    write the image with the entities' boxes and phrases drawn on it\n"
        "      --dump-dir DIR       write pixel_values.npy, vision_hidden.npy, image_embeds.npy and\n"
        "                           prompt_logits.npy (float32) to DIR (created if missing)\n"
        "      --keep-special       detokenize: keep <s>, </s>, <pad>, <unk>, <mask> in the text\n"
        "      --out FILE.npy       preprocess: where to write pixel_values\n"
        "  -h, --help               this text\n"
        "      --version            the version\n"
        "\n"
        "OUTPUT: the prompt (as the model's decoded text shows it) and the generated text are printed\n"
        "  to stdout as tokens arrive, then \"caption:\" and one line per entity with its character\n"
        "  span and boxes, normalised and in pixels. Status and timings go to stderr.\n"
        "\n"
        "BOXES: each --box / --box-px gives the boxes of the next <phrase>...</phrase> in the prompt:\n"
        "  --box x1,y1,x2,y2           one box (upper-left x1,y1; lower-right x2,y2)\n"
        "  --box 'x1,y1,x2,y2;x1,y1,x2,y2'   several boxes for one phrase (quote the ';')\n"
        "  --box -                     no box for this phrase\n"
        "  Give one flag per phrase or none at all.\n"
        "\n"
        "EXIT STATUS: 0 ok, 1 runtime error, 2 usage error, 130 interrupted (Ctrl-C).\n"
        "\n"
        "examples:\n"
        "  kosmos2 -m kosmos-2-patch14-224 --image snowman.jpg -o snowman_annotated.png\n"
        "  kosmos2 -m kosmos-2-patch14-224 -i snowman.jpg -p \"<grounding>Describe this image in detail:\"\n"
        "  kosmos2 -m kosmos-2-patch14-224 -i snowman.jpg --json -p \"<grounding><phrase> a snowman</phrase> is\" \\\n"
        "          --box 0.39,0.05,0.98,0.83\n"
        "  kosmos2 tokenize -m kosmos-2-patch14-224 \"<grounding>An image of\"\n",
        KOSMOS2_VERSION);
}

/* Subcommands by name; the default (no name) is generate. */
typedef struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
} subcommand;

static const subcommand SUBCOMMANDS[] = {
    {"tokenize", cmd_tokenize},
    {"detokenize", cmd_detokenize},
    {"preprocess", cmd_preprocess},
    {"quantize", cmd_quantize},
    {"bench", cmd_bench},
};

int main(int argc, char **argv) {
    size_t i;
    if (argc < 2) {
        print_help(stderr);
        return EXIT_USAGE;
    }
    for (i = 0; i < sizeof SUBCOMMANDS / sizeof SUBCOMMANDS[0]; i++)
        if (!strcmp(argv[1], SUBCOMMANDS[i].name)) return SUBCOMMANDS[i].run(argc, argv);
    return cmd_generate(argc, argv);
}
