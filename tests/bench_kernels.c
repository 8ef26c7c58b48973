/* tests/bench_kernels.c - microbenchmark of the [6] KERNELS section (not part of `make test`).
 *   cc -O2 -fopenmp -I. tests/bench_kernels.c -lm && ./a.out [quick]
 * Measures the machine's limits, then the kernels against them, on 1 and 2 threads:
 *   - memory bandwidth: a streaming read of a 1 GB buffer (larger than L3 on most machines), each
 *     thread reading its part as 4 sequential streams;
 *   - FMA peak: 16 independent chains of fused multiply-adds in registers only (AVX-512 / AVX2 /
 *     scalar: whichever width the kernels use);
 *   - matmul GFLOP/s (2*M*N*K flops) for the vision encoder (257x1024 -> 4096, 257x4096 -> 1024)
 *     and prefill (71x2048 -> 8192, 71x8192 -> 2048) shapes, per weight type;
 *   - matvec (M = 1, decoding) GB/s of weight bytes streamed, for W 2048x8192 and 8192x2048,
 *     cycling through >= 1.2 GB of copies so that the weights come from DRAM, not from cache.
 * Every figure is the best of a few runs, timed two ways: wall clock, and process CPU time
 * divided by the thread count. On a quiet machine they agree; on a shared one (other jobs
 * running) wall time is meaningless and the CPU-time figure is the one to read.
 * KOSMOS2_ISA=scalar|avx2|avxvnni|avx512 selects the kernels' path. */
#define KOSMOS2_IMPLEMENTATION
#include "kosmos2.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>

/* ---- timing: wall and CPU seconds of one run; a "best" keeps the fastest of each ---- */
typedef struct { double wall, cpu; } bench_time;
static bench_time stamp(void) {
    struct timespec w, c;
    bench_time t;
    clock_gettime(CLOCK_MONOTONIC, &w);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c);
    t.wall = w.tv_sec + w.tv_nsec * 1e-9;
    t.cpu = c.tv_sec + c.tv_nsec * 1e-9;
    return t;
}
/* rates (work per second) of the run since t0, keeping the best in *best */
static void rate(bench_time t0, int nt, double work, bench_time *best) {
    bench_time t1 = stamp();
    double rw = work / (t1.wall - t0.wall), rc = work / ((t1.cpu - t0.cpu) / nt);
    if (rw > best->wall) best->wall = rw;
    if (rc > best->cpu) best->cpu = rc;
}

/* ---- machine limits: the library's probe kernels (kosmos2__probe_*, behind kosmos2_bench_*),
 * timed here both ways ---- */
static bench_time bandwidth(int nt) {
    const int64_t n = (int64_t)1 << 28; /* 1 GB of floats */
    float *p = (float *)aligned_alloc(64, (size_t)n * 4);
    bench_time best = {0, 0};
    int rep;
    volatile float sink = 0;
    int64_t i;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (i = 0; i < n; i++) /* distinct contents (no page sharing), first touch by the readers */
        p[i] = (float)(uint32_t)((uint64_t)i * 2654435761u >> 7);
    for (rep = 0; rep < 4; rep++) {
        bench_time t0 = stamp();
#pragma omp parallel num_threads(nt)
        {
            const int64_t chunk = n / omp_get_num_threads() / 64 * 64;
            const float *q = p + omp_get_thread_num() * chunk;
            const float s = kosmos2__probe_read(q, chunk);
#pragma omp atomic
            sink += s;
        }
        rate(t0, nt, (double)n * 4, &best);
    }
    free(p);
    return best;
}

static bench_time fma_peak(int nt) {
    const int64_t iters = 20000000;
    bench_time best = {0, 0};
    int rep;
    volatile float sink = 0;
    for (rep = 0; rep < 4; rep++) {
        bench_time t0 = stamp();
#pragma omp parallel num_threads(nt)
        {
            const float s = kosmos2__probe_fma(iters);
#pragma omp atomic
            sink += s;
        }
        rate(t0, nt, kosmos2__probe_fma_flops(iters) * nt, &best);
    }
    return best;
}

/* ---- kernels ---- */
#ifndef BENCH_KERNELS_NO_MAIN /* (a tool may include this file for its helpers) */
static float frand(void) { return (float)rand() / RAND_MAX * 2 - 1; }
/* 64-byte aligned (as the model's buffers and mapped weights should be) */
static void *amalloc(size_t n) { return aligned_alloc(64, (n + 63) / 64 * 64); }

static void *make_weights(int dt, int64_t N, int64_t K) {
    int64_t rb = kosmos2__row_bytes((kosmos2__dtype)dt, K), n, k;
    uint8_t *w = (uint8_t *)amalloc((size_t)(N * rb));
    float *row = (float *)malloc((size_t)K * 4);
    for (n = 0; n < N; n++) {
        uint8_t *o = w + n * rb;
        for (k = 0; k < K; k++) row[k] = frand();
        if (dt == KOSMOS2__F32) memcpy(o, row, (size_t)K * 4);
        for (k = 0; k < K && (dt == KOSMOS2__F16 || dt == KOSMOS2__BF16); k++) {
            uint16_t h = kosmos2__f32_to_f16(row[k]);
            memcpy(o + 2 * k, &h, 2);
        }
        if (dt == KOSMOS2__Q8_0 || dt == KOSMOS2__Q8_0R8) kosmos2__quantize_row_q8_0(row, o, K);
        if (dt == KOSMOS2__Q4_0 || dt == KOSMOS2__Q4_0R8) kosmos2__quantize_row_q4_0(row, o, K);
    }
    free(row);
    if (kosmos2__is_r8(dt)) { /* the rows interleaved, as the model's files hold them */
        uint8_t *r8 = (uint8_t *)amalloc((size_t)(N * rb));
        kosmos2__repack_r8(w, r8, N, K, 0, N / 8, 1, dt == KOSMOS2__Q8_0R8);
        free(w);
        w = r8;
    }
    return w;
}

static bench_time bench_matmul(int dt, int64_t M, int64_t N, int64_t K, int nt) {
    void *w = make_weights(dt, N, K);
    float *x = (float *)amalloc((size_t)(M * K) * 4), *y = (float *)amalloc((size_t)(M * N) * 4);
    kosmos2__mat W;
    bench_time best = {0, 0};
    int64_t i;
    int rep;
    W.data = w; W.dtype = (kosmos2__dtype)dt; W.rows = N; W.cols = K;
    for (i = 0; i < M * K; i++) x[i] = frand();
    for (rep = 0; rep < 4; rep++) {
        bench_time t0 = stamp();
        kosmos2__matmul(y, x, M, &W, NULL, nt);
        rate(t0, nt, 2.0 * M * N * K, &best);
    }
    free(w); free(x); free(y);
    return best;
}

static bench_time bench_matvec(int dt, int64_t N, int64_t K, int nt) {
    int64_t bytes = N * kosmos2__row_bytes((kosmos2__dtype)dt, K), copies = ((int64_t)1200 << 20) / bytes + 1, c, i;
    void **w = (void **)malloc(sizeof(void *) * (size_t)copies);
    float *x = (float *)amalloc((size_t)K * 4), *y = (float *)amalloc((size_t)N * 4);
    kosmos2__mat W;
    bench_time best = {0, 0};
    int rep;
    W.dtype = (kosmos2__dtype)dt; W.rows = N; W.cols = K;
    w[0] = make_weights(dt, N, K);
    for (c = 1; c < copies; c++) { w[c] = amalloc((size_t)bytes); memcpy(w[c], w[0], (size_t)bytes); }
    for (i = 0; i < K; i++) x[i] = frand();
    for (rep = 0; rep < 3; rep++) {
        bench_time t0 = stamp();
        for (c = 0; c < copies; c++) { W.data = w[c]; kosmos2__matmul(y, x, 1, &W, NULL, nt); }
        rate(t0, nt, (double)copies * bytes, &best);
    }
    for (c = 0; c < copies; c++) free(w[c]);
    free(w); free(x); free(y);
    return best;
}

int main(int argc, char **argv) {
    static const char *dts[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_0r8", "q8_0r8"}; /* (r8: what models use) */
    static const int64_t mm[4][3] = {{257, 4096, 1024}, {257, 1024, 4096}, {71, 8192, 2048}, {71, 2048, 8192}}; /* M, N, K */
    static const int64_t mv[2][2] = {{2048, 8192}, {8192, 2048}};          /* N, K */
    int quick = argc > 1 && strcmp(argv[1], "quick") == 0, nt, dt, s;
    bench_time bw[3], peak[3];
    printf("kernels path: %s; figures are wall-clock / CPU-time based (see the header comment)\n",
           kosmos2__isa_name(kosmos2__kernels_isa()));
    for (nt = 1; nt <= 2; nt++) {
        bw[nt] = bandwidth(nt);
        peak[nt] = fma_peak(nt);
        printf("threads %d: memory read %.1f / %.1f GB/s, FMA peak %.1f / %.1f GFLOP/s (float32)\n", nt, bw[nt].wall / 1e9,
               bw[nt].cpu / 1e9, peak[nt].wall / 1e9, peak[nt].cpu / 1e9);
    }
    for (nt = quick ? 2 : 1; nt <= 2; nt++) {
        printf("-- %d thread(s)\n", nt);
        for (s = 0; s < 4; s++)
            for (dt = 0; dt < 7; dt++) {
                bench_time g = bench_matmul(dt, mm[s][0], mm[s][1], mm[s][2], nt);
                printf("matmul %-6s %3lldx%lld -> %lld: %6.1f / %6.1f GFLOP/s = %3.0f%% / %3.0f%% of FMA peak\n", dts[dt],
                       (long long)mm[s][0], (long long)mm[s][2], (long long)mm[s][1], g.wall / 1e9, g.cpu / 1e9,
                       100 * g.wall / peak[nt].wall, 100 * g.cpu / peak[nt].cpu);
            }
        for (s = 0; s < 2; s++)
            for (dt = 0; dt < 7; dt++) {
                bench_time g = bench_matvec(dt, mv[s][0], mv[s][1], nt);
                printf("matvec %-6s %lldx%lld: %5.1f / %5.1f GB/s = %3.0f%% / %3.0f%% of memory read\n", dts[dt],
                       (long long)mv[s][0], (long long)mv[s][1], g.wall / 1e9, g.cpu / 1e9, 100 * g.wall / bw[nt].wall,
                       100 * g.cpu / bw[nt].cpu);
            }
    }
    return 0;
}
#endif
