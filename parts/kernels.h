/* part: [6] KERNELS (owned by the kernels work; inlined into kosmos2.h later) */
#ifdef KOSMOS2__PART_API
#else
/* ============================================================================================
 *  [6] KERNELS: weight types, matrix products, row conversion
 * ============================================================================================
 *  Weights stay in the type they were stored in (memory-mapped, no conversion at load); every
 *  product computes in float32. A matrix W is [rows = out features, cols = in features],
 *  row-major, as PyTorch's nn.Linear stores it.
 *  Determinism: each output element is produced by exactly one thread with a fixed reduction
 *  order, so results do not depend on the thread count. */
typedef enum { KOSMOS2__F32 = 0, KOSMOS2__F16 = 1, KOSMOS2__BF16 = 2, KOSMOS2__Q8_0 = 3, KOSMOS2__Q4_0 = 4 } kosmos2__dtype;

typedef struct {
    const void *data; /* [rows, cols] in `dtype` */
    kosmos2__dtype dtype;
    int64_t rows, cols;
} kosmos2__mat;

KOSMOS2__UNUSED static float kosmos2__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    float f;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: value = man * 2^-24 */
            f = (float)man * (1.0f / 16777216.0f);
            return sign ? -f : f;
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    memcpy(&f, &bits, 4);
    return f;
}
KOSMOS2__UNUSED static float kosmos2__bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* out[0..cols-1] = W[row] as float32. */
KOSMOS2__UNUSED static void kosmos2__mat_row_f32(const kosmos2__mat *W, int64_t row, float *out) {
    int64_t j, n = W->cols;
    if (W->dtype == KOSMOS2__F32) { memcpy(out, (const float *)W->data + row * n, (size_t)n * 4); return; }
    if (W->dtype == KOSMOS2__F16) {
        const uint16_t *p = (const uint16_t *)W->data + row * n;
        for (j = 0; j < n; j++) out[j] = kosmos2__f16_to_f32(p[j]);
        return;
    }
    if (W->dtype == KOSMOS2__BF16) {
        const uint16_t *p = (const uint16_t *)W->data + row * n;
        for (j = 0; j < n; j++) out[j] = kosmos2__bf16_to_f32(p[j]);
        return;
    }
}

/* dot(x[0..n-1], W[row]) in float32, sequential order (the scalar reference). */
static float kosmos2__dot_row(const kosmos2__mat *W, int64_t row, const float *x) {
    int64_t j, n = W->cols;
    float s = 0.0f;
    if (W->dtype == KOSMOS2__F32) {
        const float *w = (const float *)W->data + row * n;
        for (j = 0; j < n; j++) s += w[j] * x[j];
    } else if (W->dtype == KOSMOS2__F16) {
        const uint16_t *w = (const uint16_t *)W->data + row * n;
        for (j = 0; j < n; j++) s += kosmos2__f16_to_f32(w[j]) * x[j];
    } else if (W->dtype == KOSMOS2__BF16) {
        const uint16_t *w = (const uint16_t *)W->data + row * n;
        for (j = 0; j < n; j++) s += kosmos2__bf16_to_f32(w[j]) * x[j];
    }
    return s;
}

/* y[m, n] = sum_k x[m, k] * W[n, k] + bias[n]    x [M, K], W [N, K], bias [N] or NULL, y [M, N].
 * Parallel over output features n: the sum over k for one (m, n) is always one thread's. */
KOSMOS2__UNUSED static void kosmos2__matmul(float *y, const float *x, int64_t M, const kosmos2__mat *W,
                                            const float *bias, int n_threads) {
    int64_t N = W->rows, K = W->cols, n;
    (void)n_threads;
#pragma omp parallel for schedule(static) num_threads(n_threads > 0 ? n_threads : 1)
    for (n = 0; n < N; n++) {
        int64_t m;
        for (m = 0; m < M; m++) y[m * N + n] = kosmos2__dot_row(W, n, x + m * K) + (bias ? bias[n] : 0.0f);
    }
}
#endif
