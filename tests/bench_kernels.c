/* tests/bench_kernels.c - microbenchmark of the [6] KERNELS section (not part of `make test`).
 *   cc -O2 -fopenmp -I. tests/bench_kernels.c -lm && ./a.out [quick]
 * Measures the machine's limits, then the kernels against them:
 *   - memory bandwidth: a streaming read of a 1.5 GB buffer (larger than any L3), 1 and 2 threads;
 *   - FMA peak: independent fused multiply-add chains in registers only (AVX-512 / AVX2 / scalar,
 *     whichever the kernels use), 1 and 2 threads;
 *   - matmul GFLOP/s (2*M*N*K flops) for the vision encoder (257x1024 -> 4096) and prefill
 *     (71x2048 -> 8192) shapes, per weight type;
 *   - matvec (M = 1, decoding) GB/s of weight bytes streamed, for W 2048x8192 and 8192x2048,
 *     cycling through enough copies (>= 1.2 GB) that the weights come from DRAM, not L3.
 * KOSMOS2_ISA=scalar|avx2|avx512 selects the path. */
#ifdef BENCH_SHIM_H
#include BENCH_SHIM_H
#else
#define KOSMOS2_IMPLEMENTATION
#include "kosmos2.h"
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- machine limits ---- */
#ifdef KOSMOS2__X86
__attribute__((target("avx512f"))) static float read_avx512(const float *p, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i;
    for (i = 0; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
/* 16 independent chains of 16-lane FMAs: 512 flops per iteration */
__attribute__((target("avx512f"))) static float fma_avx512(int64_t iters) {
    __m512 a[16], m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    int i, j;
    for (j = 0; j < 16; j++) a[j] = _mm512_set1_ps((float)j);
    for (i = 0; i < iters; i++)
        for (j = 0; j < 16; j++) a[j] = _mm512_fmadd_ps(a[j], m, c);
    for (j = 1; j < 16; j++) a[0] = _mm512_add_ps(a[0], a[j]);
    return _mm512_reduce_add_ps(a[0]);
}
__attribute__((target("avx2,fma"))) static float fma_avx2(int64_t iters) {
    __m256 a[12], m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    float t[8];
    int i, j;
    for (j = 0; j < 12; j++) a[j] = _mm256_set1_ps((float)j);
    for (i = 0; i < iters; i++)
        for (j = 0; j < 12; j++) a[j] = _mm256_fmadd_ps(a[j], m, c);
    for (j = 1; j < 12; j++) a[0] = _mm256_add_ps(a[0], a[j]);
    _mm256_storeu_ps(t, a[0]);
    return t[0];
}
#endif

static double bandwidth(int nt) {
    int64_t n = (int64_t)3 << 28; /* 1.5 GB of floats */
    float *p = (float *)aligned_alloc(64, (size_t)n * 4);
    double best = 0;
    int rep;
    volatile float sink = 0;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++) p[i] = 1.0f; /* touch (first-touch by the reading thread) */
    for (rep = 0; rep < 3; rep++) {
        double t = now();
#pragma omp parallel num_threads(nt)
        {
            int id = omp_get_thread_num(), k = omp_get_num_threads();
            int64_t chunk = n / k / 64 * 64;
            float s;
#ifdef KOSMOS2__X86
            s = read_avx512(p + id * chunk, chunk);
#else
            s = 0;
            for (int64_t i = 0; i < chunk; i++) s += p[id * chunk + i];
#endif
#pragma omp atomic
            sink += s;
        }
        t = now() - t;
        if (n * 4.0 / t > best) best = n * 4.0 / t;
    }
    free(p);
    return best / 1e9;
}

static double fma_peak(int nt) {
    int64_t iters = 20000000;
    double best = 0;
    int rep, isa = kosmos2__kernels_isa();
    volatile float sink = 0;
    for (rep = 0; rep < 3; rep++) {
        double t = now(), flops;
#pragma omp parallel num_threads(nt)
        {
            float s;
#ifdef KOSMOS2__X86
            if (isa == KOSMOS2__ISA_AVX512) s = fma_avx512(iters);
            else if (isa == KOSMOS2__ISA_AVX2) s = fma_avx2(iters);
            else
#endif
            {
                float a[8] = {0};
                int64_t i;
                int j;
                for (i = 0; i < iters; i++)
                    for (j = 0; j < 8; j++) a[j] = fmaf(a[j], 0.999999f, 1e-7f);
                s = a[0];
            }
#pragma omp atomic
            sink += s;
        }
        t = now() - t;
        flops = (double)iters * nt * 2 *
                (isa == KOSMOS2__ISA_AVX512 ? 16 * 16 : isa == KOSMOS2__ISA_AVX2 ? 12 * 8 : 8);
        if (flops / t > best) best = flops / t;
    }
    return best / 1e9;
}

/* ---- kernels ---- */
static float frand(void) { return (float)rand() / RAND_MAX * 2 - 1; }

static void *make_weights(int dt, int64_t N, int64_t K) {
    int64_t rb = kosmos2__row_bytes((kosmos2__dtype)dt, K), n, k;
    uint8_t *w = (uint8_t *)malloc((size_t)(N * rb));
    float *row = (float *)malloc((size_t)K * 4);
    for (n = 0; n < N; n++) {
        uint8_t *o = w + n * rb;
        for (k = 0; k < K; k++) row[k] = frand();
        if (dt == KOSMOS2__F32) memcpy(o, row, (size_t)K * 4);
        for (k = 0; k < K && (dt == KOSMOS2__F16 || dt == KOSMOS2__BF16); k++) {
            uint16_t h = kosmos2__f32_to_f16(row[k]);
            memcpy(o + 2 * k, &h, 2);
        }
        if (dt == KOSMOS2__Q8_0) kosmos2__quantize_row_q8_0(row, o, K);
        if (dt == KOSMOS2__Q4_0) kosmos2__quantize_row_q4_0(row, o, K);
    }
    free(row);
    return w;
}

static double bench_matmul(int dt, int64_t M, int64_t N, int64_t K, int nt) {
    void *w = make_weights(dt, N, K);
    float *x = (float *)malloc((size_t)(M * K) * 4), *y = (float *)malloc((size_t)(M * N) * 4);
    kosmos2__mat W;
    double best = 1e30;
    int64_t i;
    int rep;
    W.data = w; W.dtype = (kosmos2__dtype)dt; W.rows = N; W.cols = K;
    for (i = 0; i < M * K; i++) x[i] = frand();
    for (rep = 0; rep < 4; rep++) {
        double t = now();
        kosmos2__matmul(y, x, M, &W, NULL, nt);
        t = now() - t;
        if (t < best) best = t;
    }
    free(w); free(x); free(y);
    return 2.0 * M * N * K / best / 1e9;
}

static double bench_matvec(int dt, int64_t N, int64_t K, int nt) {
    int64_t bytes = N * kosmos2__row_bytes((kosmos2__dtype)dt, K), copies = ((int64_t)1200 << 20) / bytes + 1, c, i;
    void **w = (void **)malloc(sizeof(void *) * (size_t)copies);
    float *x = (float *)malloc((size_t)K * 4), *y = (float *)malloc((size_t)N * 4);
    kosmos2__mat W;
    double t;
    int rep;
    W.dtype = (kosmos2__dtype)dt; W.rows = N; W.cols = K;
    w[0] = make_weights(dt, N, K);
    for (c = 1; c < copies; c++) { w[c] = malloc((size_t)bytes); memcpy(w[c], w[0], (size_t)bytes); }
    for (i = 0; i < K; i++) x[i] = frand();
    for (c = 0; c < copies; c++) { W.data = w[c]; kosmos2__matmul(y, x, 1, &W, NULL, nt); } /* warm up */
    t = now();
    for (rep = 0; rep < 2; rep++)
        for (c = 0; c < copies; c++) { W.data = w[c]; kosmos2__matmul(y, x, 1, &W, NULL, nt); }
    t = now() - t;
    for (c = 0; c < copies; c++) free(w[c]);
    free(w); free(x); free(y);
    return 2.0 * copies * bytes / t / 1e9;
}

int main(int argc, char **argv) {
    static const char *dts[] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
    static const int64_t mm[2][3] = {{257, 4096, 1024}, {71, 8192, 2048}}; /* M, N, K */
    static const int64_t mv[2][2] = {{2048, 8192}, {8192, 2048}};          /* N, K */
    int quick = argc > 1 && strcmp(argv[1], "quick") == 0, nt, dt, s;
    double bw[3], peak[3];
    printf("kernels path: %s\n", kosmos2__isa_name(kosmos2__kernels_isa()));
    for (nt = 1; nt <= 2; nt++) {
        bw[nt] = bandwidth(nt);
        peak[nt] = fma_peak(nt);
        printf("threads %d: memory read %.1f GB/s, FMA peak %.1f GFLOP/s (float32)\n", nt, bw[nt], peak[nt]);
    }
    for (nt = quick ? 2 : 1; nt <= 2; nt++) {
        printf("-- %d thread(s)\n", nt);
        for (s = 0; s < 2; s++)
            for (dt = 0; dt < 5; dt++) {
                double g = bench_matmul(dt, mm[s][0], mm[s][1], mm[s][2], nt);
                printf("matmul %-4s %3lldx%lld -> %lld: %7.1f GFLOP/s = %5.1f%% of FMA peak\n", dts[dt], (long long)mm[s][0],
                       (long long)mm[s][2], (long long)mm[s][1], g, 100 * g / peak[nt]);
            }
        for (s = 0; s < 2; s++)
            for (dt = 0; dt < 5; dt++) {
                double g = bench_matvec(dt, mv[s][0], mv[s][1], nt);
                printf("matvec %-4s %lldx%lld: %6.1f GB/s = %5.1f%% of memory read\n", dts[dt], (long long)mv[s][0],
                       (long long)mv[s][1], g, 100 * g / bw[nt]);
            }
    }
    return 0;
}
