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
 *     (tokens/s), GFLOP/s and GB/s achieved as fractions of the limits, end to end, peak RSS.
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
        else if (n_models < 16) models[n_models++] = argv[i];
    }
    if (!n_models) {
        fprintf(stderr, "usage: build/bench [-t THREADS] [-n NEW_TOKENS] [-i IMAGE] MODEL [MODEL...]\n");
        return 2;
    }
    if (g_threads <= 0) g_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    printf("kosmos2.h %s bench, %d threads, %d new tokens, image %s\n", KOSMOS2_VERSION, g_threads, g_new, g_image);
    in_child(bench_inputs, spm, NULL, 0);
    for (i = 0; i < n_models; i++) {
        printf("--\n");
        if (bench_model(models[i]) != 0) printf("%s: build/kosmos2 bench failed\n", models[i]);
    }
    return 0;
}
