/* tests/bench.c - `make bench`: per-stage timings of the whole pipeline on one checkpoint.
 * usage: build/bench MODEL_DIR [IMAGE] [N_NEW_TOKENS] [THREADS]
 * Prints load, preprocess, vision, resampler, prefill and decode times, tokens/s, GFLOP/s and
 * peak RSS. Benchmarks are not tests: nothing here asserts a time. */
#define KOSMOS2_IMPLEMENTATION
#include "kosmos2.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "tests/fixtures/tiny_f32";
    const char *img_path = argc > 2 ? argv[2] : "../shared/assets/snowman.png";
    int n_new = argc > 3 ? atoi(argv[3]) : 32, threads = argc > 4 ? atoi(argv[4]) : 0;
    kosmos2_model *m = NULL;
    kosmos2_context *ctx = NULL;
    kosmos2_context_params cp = kosmos2_context_default_params();
    kosmos2_generate_params gp = kosmos2_generate_default_params();
    kosmos2_image img;
    kosmos2_result r;
    const kosmos2_config *c;
    double t0 = kosmos2__now_ms(), t_load, vis_flop, pre_flop, dec_bytes = 0;
    int rc, i;
    if ((rc = kosmos2_model_load(dir, NULL, &m)) != 0) { fprintf(stderr, "bench: %s\n", kosmos2_last_error()); return 1; }
    t_load = kosmos2__now_ms() - t0;
    c = kosmos2_model_config(m);
    cp.n_threads = threads;
    if (kosmos2_context_new(m, &cp, &ctx) || kosmos2_image_load_file(img_path, 0, &img)) { fprintf(stderr, "bench: %s\n", kosmos2_last_error()); return 1; }
    gp.max_new_tokens = n_new;
    gp.no_repeat_ngram_size = 0; /* a fixed amount of work: */
    rc = kosmos2_generate(ctx, &img, "<grounding>An image of", NULL, 0, &gp, &r);
    if (rc) { fprintf(stderr, "bench: %s\n", kosmos2_last_error()); return 1; }
    {   /* work per stage, for GFLOP/s: 2 flops per multiply-add of every matrix product */
        double N = (double)(c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1, Dv = c->vision_hidden, Fv = c->vision_intermediate;
        double D = c->text_hidden, F = c->ffn_dim, V = c->vocab_size, T = r.n_prompt;
        vis_flop = 2.0 * N * c->vision_layers * (4 * Dv * Dv + 2 * Dv * Fv) + 2.0 * N * N * Dv * 2 * c->vision_layers;
        pre_flop = 2.0 * T * c->text_layers * (4 * D * D + 2 * D * F) + 2.0 * T * V * D;
        for (i = 0; i < kosmos2_model_n_tensors(m); i++) { /* decode reads every text weight once per token */
            kosmos2_tensor_info ti;
            kosmos2_model_tensor(m, i, &ti);
            if (!strncmp(ti.name, "text_model.", 11)) dec_bytes += (double)ti.nbytes;
        }
    }
    printf("model            %s (%d threads)\n", dir, threads);
    printf("load             %8.1f ms\n", t_load);
    printf("preprocess       %8.1f ms   (%dx%d image)\n", r.t_preprocess_ms, img.width, img.height);
    printf("vision           %8.1f ms   %6.1f GFLOP/s\n", r.t_vision_ms, vis_flop / r.t_vision_ms * 1e-6);
    printf("resampler        %8.1f ms\n", r.t_resampler_ms);
    printf("prefill          %8.1f ms   %6.1f GFLOP/s  (%d tokens)\n", r.t_prefill_ms, pre_flop / r.t_prefill_ms * 1e-6, r.n_prompt);
    if (r.n_decode > 1)
        printf("decode           %8.1f ms/token  %6.2f tokens/s  %6.1f GB/s of weights  (%d tokens)\n", r.t_decode_ms / (r.n_decode - 1),
               (r.n_decode - 1) * 1e3 / r.t_decode_ms, dec_bytes * (r.n_decode - 1) / r.t_decode_ms * 1e-6, r.n_decode);
    printf("end to end       %8.1f ms\n", kosmos2__now_ms() - t0);
    printf("peak RSS         %8.1f MB\n", peak_rss_mb());
    kosmos2_result_free(&r);
    kosmos2_image_free(&img);
    kosmos2_context_free(ctx);
    kosmos2_model_free(m);
    return 0;
}
