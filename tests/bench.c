/* tests/bench.c - `make bench`: the whole pipeline per stage, as fractions of this machine's limits.
 *
 * usage: build/bench [-t THREADS] [-n NEW_TOKENS] [-i IMAGE] MODEL [MODEL...]
 *   MODEL: a checkpoint directory or .gguf file (make bench uses the full-size random checkpoint of
 *   scripts/make_fullsize.py and its bf16/q8_0/q4_0 GGUF conversions).
 * One run prints:
 *   - tokenizer encoding speed on tests/fixtures/tokenizer/corpus.txt and preprocessing time of a
 *     12-megapixel JPEG (written on the fly);
 *   - per model, `build/kosmos2 bench` in its own process (so the peak RSS is that model's): the
 *     machine's memory read bandwidth and FMA peak measured in the same run, load, a warm-up run
 *     that pages the mapped weights in, then preprocess, vision, resampler, prefill, decode
 *     (tokens/s), GFLOP/s and GB/s achieved as fractions of the limits, end to end, peak RSS;
 *   - the decode kernels (one weight row per output, M = 1) against the memory read probe,
 *     interleaved in one process: on a shared host the probe and a model's decode stage, timed
 *     seconds apart, can see different machines (here the probe alone has read 30-47 GB/s).
 * Benchmarks are not tests: nothing here asserts a time. */
#define KOSMOS2_IMPLEMENTATION
#include "kosmos2.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Decode matrix-vector products (2048 columns, ~512 MB of weights: from DRAM) against the memory
 * read probe on a 512 MB buffer, alternately, 3 rounds of (probe, each type), best of 2 runs each;
 * the median ratio per type. */
static void bench_decode_kernels(void *arg, void *out) {
    static const int dts[4] = {KOSMOS2__F16, KOSMOS2__BF16, KOSMOS2__Q8_0R8, KOSMOS2__Q4_0R8};
    const int64_t K = 2048, nprobe = (int64_t)1 << 27; /* floats */
    float *probe = (float *)malloc((size_t)nprobe * 4), *x = (float *)malloc((size_t)K * 4), *y = NULL;
    double ratio[4][3], gbs[4][3];
    kosmos2__mat W[4];
    int i, r, rep;
    int64_t j;
    (void)arg; (void)out;
    if (!probe || !x) return;
    kosmos2__probe_fill(probe, nprobe, g_threads);
    for (j = 0; j < K; j++) x[j] = (float)((j * 37) % 101) / 50.0f - 1.0f;
    for (i = 0; i < 4; i++) { /* random-ish rows in the format (repacked for the r8 types) */
        const int q8 = dts[i] == KOSMOS2__Q8_0R8, r8 = kosmos2__is_r8(dts[i]);
        const int64_t rb = kosmos2__row_bytes((kosmos2__dtype)dts[i], K), N = ((int64_t)512 << 20) / rb / 8 * 8;
        uint8_t *w = (uint8_t *)malloc((size_t)(N * rb)), *t = r8 ? (uint8_t *)malloc((size_t)(N * rb)) : w;
        float *row = (float *)malloc((size_t)K * 4);
        int64_t n, k;
        for (n = 0; n < N; n++) {
            for (k = 0; k < K; k++) row[k] = (float)(((n * 131 + k * 7) % 211) - 105) / 105.0f;
            if (dts[i] == KOSMOS2__F16 || dts[i] == KOSMOS2__BF16)
                for (k = 0; k < K; k++) { uint16_t h = kosmos2__f32_to_f16(row[k]); memcpy(t + n * rb + 2 * k, &h, 2); }
            else if (q8) kosmos2__quantize_row_q8_0(row, t + n * rb, K);
            else kosmos2__quantize_row_q4_0(row, t + n * rb, K);
        }
        if (r8) { kosmos2__repack_r8(t, w, N, K, 0, N / 8, 1, q8); free(t); }
        free(row);
        W[i].data = w; W[i].dtype = (kosmos2__dtype)dts[i]; W[i].rows = N; W[i].cols = K;
        if (!y) y = (float *)malloc((size_t)(((int64_t)512 << 20) / 18 + 8) * 4); /* the most rows (q4_0r8) */
    }
    for (r = 0; r < 3; r++) {
        const double bw = kosmos2__probe_read_best(probe, nprobe, g_threads, 2);
        for (i = 0; i < 4; i++) {
            double best = 0, bytes = (double)W[i].rows * (double)kosmos2__row_bytes(W[i].dtype, K);
            for (rep = 0; rep < 2; rep++) {
                double t0 = kosmos2__now_ms(), t;
                kosmos2__matmul(y, x, 1, &W[i], NULL, g_threads);
                t = kosmos2__now_ms() - t0;
                if (bytes / (t * 1e-3) > best) best = bytes / (t * 1e-3);
            }
            gbs[i][r] = best * 1e-9;
            ratio[i][r] = best / bw;
        }
    }
    for (i = 0; i < 4; i++) { /* median of 3 */
        double a = ratio[i][0], b = ratio[i][1], c = ratio[i][2], med = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
        printf("decode kernel %-6s %4.1f %4.1f %4.1f GB/s, %3.0f %% of the probe read beside it (median of 3 rounds)\n",
               kosmos2__dtype_name(W[i].dtype), gbs[i][0], gbs[i][1], gbs[i][2], 100 * med);
        free((void *)W[i].data);
    }
    free(probe); free(x); free(y);
}

/* One model: `build/kosmos2 bench` (the CLI prints the figures). */
static int bench_model(const char *path) {
    char threads[16], n_new[16];
    pid_t pid;
    int status = 0;
    snprintf(threads, sizeof threads, "%d", g_threads);
    snprintf(n_new, sizeof n_new, "%d", g_new);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        execl("./build/kosmos2", "kosmos2", "bench", "-m", path, "-t", threads, "-n", n_new, "-i", g_image, (char *)NULL);
        perror("build/kosmos2");
        _exit(127);
    }
    if (pid < 0 || waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(int argc, char **argv) {
    const char *models[16];
    int n_models = 0, i;
    char spm[4096] = "../shared/assets/sentencepiece.bpe.model";
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) g_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) g_new = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-i") && i + 1 < argc) g_image = argv[++i];
        else if (argv[i][0] == '-') { n_models = 0; break; } /* -h, --help, an unknown flag, a flag without its value */
        else if (n_models < 16) models[n_models++] = argv[i];
    }
    if (!n_models) {
        fprintf(stderr, "usage: build/bench [-t THREADS] [-n NEW_TOKENS] [-i IMAGE] MODEL [MODEL...]\n");
        return 2;
    }
    if (g_threads <= 0) g_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    printf("kosmos2.h %s bench, %d threads, %d new tokens, image %s\n", KOSMOS2_VERSION, g_threads, g_new, g_image);
    in_child(bench_inputs, spm, NULL, 0);
    printf("decode kernels, %d threads: interleaved with the memory read probe (about a minute)...\n", g_threads);
    in_child(bench_decode_kernels, NULL, NULL, 0);
    for (i = 0; i < n_models; i++) {
        printf("--\n");
        if (bench_model(models[i]) != 0) printf("%s: build/kosmos2 bench failed\n", models[i]);
    }
    return 0;
}
