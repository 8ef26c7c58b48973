/* tests/bench.c - `make bench`: the whole pipeline per stage, as fractions of this machine's limits.
 *
 * usage: build/bench [-t THREADS] [-n NEW_TOKENS] [-i IMAGE] MODEL [MODEL...]
 *   MODEL: a checkpoint directory or .gguf file (make bench uses the full-size random checkpoint of
 *   scripts/make_fullsize.py and its f16/bf16/q8_0/q4_0 GGUF conversions).
 * One run prints:
 *   - the machine's limits, measured here: memory read bandwidth and float32 FMA peak
 *     (the probes of tests/bench_kernels.c);
 *   - tokenizer encoding speed on tests/fixtures/tokenizer/corpus.txt and preprocessing time of a
 *     12-megapixel JPEG (written on the fly);
 *   - per model (after a warm-up run that pages the mapped weights in): load, preprocess, vision, resampler, prefill, decode (tokens/s), GFLOP/s and GB/s
 *     achieved as a fraction of the limits, end to end, and peak RSS (each model runs in its own
 *     child process, so the RSS is that model's).
 * Decode counts the bytes of every text-model weight read once per token (the lm_head included).
 * Benchmarks are not tests: nothing here asserts a time. */
#define BENCH_KERNELS_NO_MAIN
#include "bench_kernels.c" /* kosmos2.h (implementation), bandwidth(), fma_peak() */
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

typedef struct { double bw, peak; } machine_limits; /* bytes/s and flop/s, for the thread count used */

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

/* Run fn(arg) in a child process (fresh OpenMP state, its own peak RSS); `out` [n] bytes come back
 * through a pipe. */
static int in_child(void (*fn)(void *arg, void *out), void *arg, void *out, size_t n) {
    int fd[2], status = 0;
    pid_t pid;
    if (pipe(fd)) return -1;
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        char *buf = (char *)calloc(1, n + 1);
        close(fd[0]);
        fn(arg, buf);
        fflush(stdout);
        if (write(fd[1], buf, n) != (ssize_t)n) _exit(1);
        _exit(0);
    }
    close(fd[1]);
    if (out && n && read(fd[0], out, n) != (ssize_t)n) status = -1;
    close(fd[0]);
    waitpid(pid, NULL, 0);
    return status;
}

static int g_threads = 2, g_new = 32;
static const char *g_image = "../shared/assets/snowman.png";

static void measure_limits(void *arg, void *out) {
    machine_limits L;
    bench_time b = bandwidth(g_threads), p = fma_peak(g_threads);
    (void)arg;
    L.bw = b.wall; L.peak = p.wall;
    printf("machine (%d threads, kernels: %s): memory read %.1f GB/s, float32 FMA peak %.1f GFLOP/s\n", g_threads,
           kosmos2__isa_name(kosmos2__kernels_isa()), L.bw / 1e9, L.peak / 1e9);
    memcpy(out, &L, sizeof L);
}

/* Tokenizer MB/s on the corpus (one thread), 12-megapixel JPEG decode + preprocess. */
static void bench_inputs(void *arg, void *out) {
    const char *spm = (const char *)arg;
    kosmos2_tokenizer *tok = NULL;
    size_t size = 0, bytes = 0;
    char *text = NULL;
    FILE *f;
    int32_t *ids = (int32_t *)malloc((size_t)1 << 20);
    int rep;
    double best = 1e30, t0;
    (void)out;
    if (!kosmos2_tokenizer_load_file(spm, &tok) && (f = fopen("tests/fixtures/tokenizer/corpus.txt", "rb"))) {
        fseek(f, 0, SEEK_END); size = (size_t)ftell(f); fseek(f, 0, SEEK_SET);
        text = (char *)malloc(size + 1);
        if (fread(text, 1, size, f) != size) size = 0;
        text[size] = 0;
        fclose(f);
        for (rep = 0; rep < 3; rep++) {
            char *line = text;
            t0 = kosmos2__now_ms();
            bytes = 0;
            while (line && *line) {
                char *e = strchr(line, '\n');
                if (e) *e = 0;
                kosmos2_tokenize(tok, line, ids, 1 << 18);
                bytes += strlen(line);
                if (e) *e = '\n';
                line = e ? e + 1 : NULL;
            }
            if (kosmos2__now_ms() - t0 < best) best = kosmos2__now_ms() - t0;
        }
        printf("tokenizer        %8.2f MB/s  (%s, corpus of %zu bytes, 1 thread)\n", bytes / best * 1e-3, spm, bytes);
    } else printf("tokenizer        not measured: %s\n", kosmos2_last_error());
    kosmos2_tokenizer_free(tok);
    free(text);
    free(ids);
    {   /* a 4000x3000 JPEG of smooth gradients + noise */
        int w = 4000, h = 3000, x, y;
        unsigned char *rgb = (unsigned char *)malloc((size_t)w * h * 3);
        kosmos2_image img, small;
        kosmos2_preprocess_config pp = kosmos2_preprocess_default_config();
        float *px = (float *)malloc(3 * 224 * 224 * sizeof(float));
        double t_dec, t_pre;
        for (y = 0; y < h; y++)
            for (x = 0; x < w; x++) {
                unsigned char *q = rgb + ((size_t)y * w + x) * 3;
                q[0] = (unsigned char)(x * 255 / w); q[1] = (unsigned char)(y * 255 / h); q[2] = (unsigned char)((x * 7 + y * 13) & 255);
            }
        stbi_write_jpg("build/bench_12mp.jpg", w, h, 3, rgb, 90);
        free(rgb);
        t0 = kosmos2__now_ms();
        if (kosmos2_image_load_file("build/bench_12mp.jpg", 0, &img)) { printf("preprocess 12MP  failed: %s\n", kosmos2_last_error()); free(px); return; }
        t_dec = kosmos2__now_ms() - t0;
        t0 = kosmos2__now_ms();
        kosmos2_image_preprocess(&img, &pp, px);
        t_pre = kosmos2__now_ms() - t0;
        printf("preprocess 12MP  %8.1f ms  (decode %.1f ms + resize/normalise %.1f ms, 4000x3000 JPEG)\n", t_dec + t_pre, t_dec, t_pre);
        kosmos2_image_free(&img);
        (void)small;
        free(px);
    }
}

typedef struct { const char *path; machine_limits L; } model_job;

static void bench_model(void *arg, void *out) {
    model_job *j = (model_job *)arg;
    kosmos2_model *m = NULL;
    kosmos2_context *ctx = NULL;
    kosmos2_context_params cp = kosmos2_context_default_params();
    kosmos2_generate_params gp = kosmos2_generate_default_params();
    kosmos2_image img;
    kosmos2_result r;
    const kosmos2_config *c;
    double t0 = kosmos2__now_ms(), t_load, vis_flop, pre_flop, dec_bytes = 0, weight_bytes = 0;
    int i;
    (void)out;
    if (kosmos2_model_load(j->path, NULL, &m)) { printf("%s: %s\n", j->path, kosmos2_last_error()); return; }
    t_load = kosmos2__now_ms() - t0;
    c = kosmos2_model_config(m);
    cp.n_threads = g_threads;
    if (kosmos2_context_new(m, &cp, &ctx) || kosmos2_image_load_file(g_image, 0, &img)) { printf("%s\n", kosmos2_last_error()); return; }
    gp.no_repeat_ngram_size = 0; /* a fixed amount of work */
    {   /* warm-up: the first touch of the mapped weights reads them from disk or page cache */
        double tw = kosmos2__now_ms();
        gp.max_new_tokens = 2;
        if (kosmos2_generate(ctx, &img, "<grounding>An image of", NULL, 0, &gp, &r)) { printf("%s\n", kosmos2_last_error()); return; }
        kosmos2_result_free(&r);
        printf("-- %s: warm-up run (first touch of the weights) %.1f ms\n", j->path, kosmos2__now_ms() - tw);
    }
    gp.max_new_tokens = g_new;
    t0 = kosmos2__now_ms() - t_load; /* end to end = load + one warm run */
    if (kosmos2_generate(ctx, &img, "<grounding>An image of", NULL, 0, &gp, &r)) { printf("%s\n", kosmos2_last_error()); return; }
    {   /* 2 flops per multiply-add of the matrix products (attention included) */
        double N = (double)(c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1, Dv = c->vision_hidden, Fv = c->vision_intermediate;
        double D = c->text_hidden, F = c->ffn_dim, V = c->vocab_size, T = r.n_prompt;
        vis_flop = 2.0 * c->vision_layers * (N * (4 * Dv * Dv + 2 * Dv * Fv) + 2 * N * N * Dv);
        pre_flop = 2.0 * c->text_layers * (T * (4 * D * D + 2 * D * F) + T * T * D) + 2.0 * V * D;
        for (i = 0; i < kosmos2_model_n_tensors(m); i++) {
            kosmos2_tensor_info ti;
            kosmos2_model_tensor(m, i, &ti);
            weight_bytes += (double)ti.nbytes;
            if (!strncmp(ti.name, "text_model.", 11)) dec_bytes += (double)ti.nbytes;
        }
    }
    printf("-- %s (%.2f GB of weights, %d threads)\n", j->path, weight_bytes / 1e9, g_threads);
    printf("load             %8.1f ms\n", t_load);
    printf("preprocess       %8.1f ms   (%dx%d image)\n", r.t_preprocess_ms, img.width, img.height);
    printf("vision           %8.1f ms   %6.1f GFLOP/s = %3.0f%% of FMA peak\n", r.t_vision_ms, vis_flop / r.t_vision_ms * 1e-6,
           100 * vis_flop / (r.t_vision_ms * 1e-3) / j->L.peak);
    printf("resampler        %8.1f ms\n", r.t_resampler_ms);
    printf("prefill          %8.1f ms   %6.1f GFLOP/s = %3.0f%% of FMA peak (%d tokens)\n", r.t_prefill_ms, pre_flop / r.t_prefill_ms * 1e-6,
           100 * pre_flop / (r.t_prefill_ms * 1e-3) / j->L.peak, r.n_prompt);
    if (r.n_decode > 1) {
        double per = r.t_decode_ms / (r.n_decode - 1);
        printf("decode           %8.1f ms/token = %5.2f tokens/s, %5.1f GB/s = %3.0f%% of memory read\n", per, 1e3 / per,
               dec_bytes / per * 1e-6, 100 * dec_bytes / (per * 1e-3) / j->L.bw);
    }
    printf("end to end       %8.1f ms   (load + a warm run: preprocess, vision, resampler, prefill, %d new tokens)\n", kosmos2__now_ms() - t0, r.n_decode);
    printf("peak RSS         %8.1f MB\n", peak_rss_mb());
    kosmos2_result_free(&r);
    kosmos2_image_free(&img);
    kosmos2_context_free(ctx);
    kosmos2_model_free(m);
}

int main(int argc, char **argv) {
    machine_limits L;
    const char *models[16];
    int n_models = 0, i;
    char spm[4096] = "../shared/assets/sentencepiece.bpe.model";
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) g_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) g_new = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-i") && i + 1 < argc) g_image = argv[++i];
        else if (n_models < 16) models[n_models++] = argv[i];
    }
    if (!n_models) {
        fprintf(stderr, "usage: build/bench [-t THREADS] [-n NEW_TOKENS] [-i IMAGE] MODEL [MODEL...]\n");
        return 2;
    }
    if (g_threads <= 0) g_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    printf("kosmos2.h %s bench, %d new tokens, image %s\n", KOSMOS2_VERSION, g_new, g_image);
    if (in_child(measure_limits, NULL, &L, sizeof L)) return 1;
    in_child(bench_inputs, spm, NULL, 0);
    for (i = 0; i < n_models; i++) {
        model_job j;
        j.path = models[i];
        j.L = L;
        in_child(bench_model, &j, NULL, 0);
    }
    return 0;
}
