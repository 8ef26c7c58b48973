#!/bin/sh
# scripts/ab_stages.sh - is revision B faster than revision A? Vision and prefill, in one process.
#
# usage: scripts/ab_stages.sh REV_A REV_B MODEL [PAIRS] [THREADS]
#   REV_A, REV_B  git revisions of kosmos2.h (WORK = the working tree's file)
#   MODEL         a checkpoint directory or .gguf (make bench's full-size one, say)
#   PAIRS         alternations (default 10); THREADS (default 2)
#
# Why: on a shared VM one run of a stage moves by 10-20 % (other tenants), more than most changes
# are worth. Here both revisions are built as shared objects, loaded into one process (the model
# mapped once per revision, the weights shared through the page cache) and run alternately:
# A, B, A, B, ... so that both see the same host. Prints the min and median of each stage
# (vision = kosmos2_encode_image: vision encoder + resampler; prefill = kosmos2_decode of the
# default prompt's 71 tokens after kv_clear) and whether A and B gave the same bits.
# A benchmark, not a test: nothing here asserts a time.
set -e
[ $# -ge 3 ] || { sed -n 2,15p "$0"; exit 2; }
A=$1 B=$2 MODEL=$3 PAIRS=${4:-10} THREADS=${5:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for side in a b; do
    rev=$A; [ $side = b ] && rev=$B
    mkdir -p "$TMP/$side"
    if [ "$rev" = WORK ]; then cp "$ROOT/kosmos2.h" "$TMP/$side/kosmos2.h"
    else git -C "$ROOT" show "$rev:kosmos2.h" > "$TMP/$side/kosmos2.h"; fi
done
cat > "$TMP/lib.c" <<'EOF'
#define KOSMOS2_IMPLEMENTATION
#include "kosmos2.h"
#include <stdlib.h>
#include <string.h>
static kosmos2_model *g_m;
static kosmos2_context *g_c;
static float *g_px, *g_vh, *g_logits; /* pixels [3, S, S], vision_hidden [N, Dv], logits [V] */
static int32_t g_ids[512];
static uint8_t g_mask[512];
static int g_n;
int lib_init(const char *path, int nt) {
    kosmos2_model_params mp = kosmos2_model_default_params();
    kosmos2_context_params cp = kosmos2_context_default_params();
    const kosmos2_config *c;
    int64_t i, S, N;
    mp.n_threads = nt;
    cp.n_threads = nt;
    if (kosmos2_model_load(path, &mp, &g_m) || kosmos2_context_new(g_m, &cp, &g_c)) return 1;
    c = kosmos2_model_config(g_m);
    S = c->image_size;
    N = (S / c->patch_size) * (S / c->patch_size) + 1;
    g_px = (float *)malloc((size_t)(3 * S * S) * 4);
    g_vh = (float *)malloc((size_t)(N * c->vision_hidden) * 4);
    g_logits = (float *)malloc((size_t)c->vocab_size * 4);
    if (!g_px || !g_vh || !g_logits) return 1;
    for (i = 0; i < 3 * S * S; i++) g_px[i] = (float)((uint32_t)(i * 2654435761u) >> 20) / 4096.0f - 0.5f;
    g_n = kosmos2_prompt_ids(kosmos2_model_tokenizer(g_m), "<grounding>An image of", c->latent_query_num, g_ids, g_mask, 512);
    return g_n <= 0 || g_n > 512;
}
int lib_vision(void) { return kosmos2_encode_image(g_c, g_px, g_vh, NULL); }
int lib_prefill(void) { kosmos2_kv_clear(g_c); return kosmos2_decode(g_c, g_ids, g_n, g_mask, g_logits); }
void lib_sizes(size_t *vh_bytes, size_t *lg_bytes) {
    const kosmos2_config *c = kosmos2_model_config(g_m);
    const int64_t side = c->image_size / c->patch_size;
    *vh_bytes = (size_t)((side * side + 1) * c->vision_hidden) * 4;
    *lg_bytes = (size_t)c->vocab_size * 4;
}
const float *lib_vh(void) { return g_vh; }
const float *lib_logits(void) { return g_logits; }
EOF
cat > "$TMP/main.c" <<'EOF'
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec * 1e-6; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
typedef int (*fn_t)(void);
int main(int argc, char **argv) {
    const char *so[2] = {argv[1], argv[2]}, *names[2] = {"vision", "prefill"};
    int pairs = atoi(argv[4]), nt = atoi(argv[5]), w, r, st;
    fn_t stage[2][2];
    const float *(*vh[2])(void), *(*lg[2])(void);
    void (*sizes)(size_t *, size_t *) = NULL;
    size_t vb = 0, lb = 0;
    double *t = (double *)calloc((size_t)pairs * 4, sizeof(double)); /* [stage][side][pair] */
    for (w = 0; w < 2; w++) {
        void *h = dlopen(so[w], RTLD_NOW | RTLD_LOCAL);
        int (*init)(const char *, int);
        if (!h) { fprintf(stderr, "%s\n", dlerror()); return 1; }
        init = (int (*)(const char *, int))dlsym(h, "lib_init");
        stage[0][w] = (fn_t)dlsym(h, "lib_vision");
        stage[1][w] = (fn_t)dlsym(h, "lib_prefill");
        vh[w] = (const float *(*)(void))dlsym(h, "lib_vh");
        lg[w] = (const float *(*)(void))dlsym(h, "lib_logits");
        sizes = (void (*)(size_t *, size_t *))dlsym(h, "lib_sizes");
        if (init(argv[3], nt) || stage[0][w]() || stage[1][w]()) { fprintf(stderr, "side %c: init or warm-up failed\n", 'A' + w); return 1; }
    }
    for (r = 0; r < pairs; r++)
        for (st = 0; st < 2; st++)
            for (w = 0; w < 2; w++) {
                double t0 = now_ms();
                if (stage[st][w]()) { fprintf(stderr, "side %c: %s failed\n", 'A' + w, names[st]); return 1; }
                t[(st * 2 + w) * pairs + r] = now_ms() - t0;
            }
    for (st = 0; st < 2; st++)
        for (w = 0; w < 2; w++) {
            double *v = t + (st * 2 + w) * pairs;
            qsort(v, (size_t)pairs, sizeof(double), cmp);
            printf("%-8s %c: min %8.1f ms, median %8.1f ms (%d runs)\n", names[st], 'A' + w, v[0], v[pairs / 2], pairs);
        }
    sizes(&vb, &lb); /* both sides ran the same inputs: their last outputs */
    printf("same bits (vision hidden state, prompt logits): %s\n",
           !memcmp(vh[0](), vh[1](), vb) && !memcmp(lg[0](), lg[1](), lb) ? "yes" : "NO");
    free(t);
    return 0;
}
EOF
CC=${CC:-cc}
for side in a b; do (cd "$TMP/$side" && $CC -O2 -fopenmp -fPIC -shared -I. -o ../$side.so ../lib.c -lm); done
$CC -O2 -o "$TMP/ab" "$TMP/main.c" -ldl
echo "A = $A, B = $B, $MODEL, $THREADS threads, $PAIRS alternations"
"$TMP/ab" "$TMP/a.so" "$TMP/b.so" "$MODEL" "$PAIRS" "$THREADS"
