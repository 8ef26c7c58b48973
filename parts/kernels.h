/* part: [6] KERNELS (owned by the kernels work; inlined into kosmos2.h later) */
#ifdef KOSMOS2__PART_API
#else
/* ============================================================================================
 *  [6] KERNELS: weight types, matrix products, row conversion
 * ============================================================================================
 *  Weights stay in the type they were stored in (memory-mapped, no conversion at load); every
 *  product accumulates in float32. A matrix W is [rows = out features N, cols = in features K],
 *  row-major, as PyTorch's nn.Linear stores it. The one entry point is
 *      kosmos2__matmul(y, x, M, W, bias, n_threads):  y[M,N] = x[M,K] . W[N,K]^T + bias[N]
 *  which picks, at run time, a scalar, AVX2+FMA+F16C or AVX-512 (F/BW/VL/DQ, VNNI for the
 *  quantized types) implementation.
 *
 *  THE CANONICAL SUM (why every path gives the same bits)
 *  Float weights (F32/F16/BF16; F16/BF16 are widened exactly to F32, activations are never
 *  rounded): output (m, n) keeps 16 partial sums ("lanes"). Lane l accumulates x[k]*w[k] for the
 *  k = l, l+16, l+32, ... in increasing order, one fused multiply-add each (fmaf). The 16 lanes
 *  are then folded as a tree: s[l] += s[l+8] (l<8), s[l] += s[l+4] (l<4), s[l] += s[l+2] (l<2),
 *  s[0] + s[1]; finally + bias[n].
 *  Quantized weights (Q8_0/Q4_0): the activation row is quantized to q8_0 once per product. Per
 *  32-block b the integer products are summed exactly in 8 groups of 4 consecutive elements,
 *  p[b][g] (g = 0..7); lane (b mod 2)*8 + g accumulates fmaf(dx[b]*dw[b], (float)p[b][g], lane)
 *  in increasing b (dx*dw is exact: both are float16 values), then the same fold and + bias.
 *  AVX-512 holds the 16 lanes in one register, AVX2 in two (lanes 0-7, 8-15), the scalar code in
 *  an array, so the three paths agree bit for bit (the tests check ==), a decode step (M = 1)
 *  gives the same bits as a prefill row, and every output is one thread's work: the result does
 *  not depend on the thread count.
 *
 *  DATA LAYOUTS (ggml's block layouts, 32 weights per block, rows must be a multiple of 32):
 *    q8_0 block, 34 bytes: float16 d; int8 qs[32];           value[i] = qs[i] * d
 *    q4_0 block, 18 bytes: float16 d; uint8 qs[16];          value[i] = ((qs[i] & 15) - 8) * d,
 *                                                            value[i+16] = ((qs[i] >> 4) - 8) * d
 *  Blocks are read byte-wise (memcpy), so rows need no alignment.
 *
 *  TILING (float weights, see kosmos2__matmul_float): W is cut into panels of C rows; each thread
 *  takes whole panels (static schedule). A panel of F16/BF16 weights is widened once into a
 *  per-thread float buffer [C, K] (when M >= 4), then every block of R activation rows is
 *  multiplied with it by a register tile of R x C 16-lane accumulators (AVX-512: 4 x 6 = 24 zmm
 *  registers; AVX2: 2 x 3 pairs of ymm) that walks K once. The panel (C*K floats) stays in L1/L2
 *  while the activation rows stream from L2; activations are processed in chunks of about 1 MB
 *  so that they stay in L2. For M < 4 (decoding) the weights are read directly (converted in
 *  registers): each weight row is streamed once per product. */

typedef enum { KOSMOS2__F32 = 0, KOSMOS2__F16 = 1, KOSMOS2__BF16 = 2, KOSMOS2__Q8_0 = 3, KOSMOS2__Q4_0 = 4 } kosmos2__dtype;

typedef struct {
    const void *data; /* [rows, cols] in `dtype` (q types: rows x cols/32 blocks) */
    kosmos2__dtype dtype;
    int64_t rows, cols;
} kosmos2__mat;

#define KOSMOS2__QK 32           /* weights per quantization block */
#define KOSMOS2__Q8_0_BYTES 34   /* float16 d + 32 x int8 */
#define KOSMOS2__Q4_0_BYTES 18   /* float16 d + 16 x (2 x 4 bit) */

/* Which implementation runs (kosmos2__kernels_set_isa / KOSMOS2_ISA=scalar|avx2|avx512). */
enum { KOSMOS2__ISA_SCALAR = 0, KOSMOS2__ISA_AVX2 = 1, KOSMOS2__ISA_AVX512 = 2 };

/* ------------------------------------------------------------------ float16 / bfloat16 ---- */
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
/* float32 -> float16, round to nearest even (overflow -> inf, NaN stays NaN). */
KOSMOS2__UNUSED static uint16_t kosmos2__f32_to_f16(float f) {
    uint32_t x, sign, e, m, h, r;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    e = x >> 23;
    if (e <= 112) { /* |f| < 2^-14: a float16 subnormal, h = round(|f| / 2^-24) */
        uint32_t s = 126 - e;
        if (s > 25) return (uint16_t)sign;
        m = (x & 0x7fffffu) | 0x800000u; /* |f| = m * 2^(e-150) */
        h = m >> s;
        r = m & ((1u << s) - 1);
        if (r > (1u << (s - 1)) || (r == (1u << (s - 1)) && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    h = ((e - 112) << 10) | ((x & 0x7fffffu) >> 13);
    r = x & 0x1fffu;
    if (r > 0x1000u || (r == 0x1000u && (h & 1))) h++; /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
}
static float kosmos2__f16_at(const uint8_t *p) { /* an unaligned little-endian float16 */
    uint16_t h;
    memcpy(&h, p, 2);
    return kosmos2__f16_to_f32(h);
}

/* Bytes of one row of `cols` weights (q types: cols must be a multiple of 32). */
KOSMOS2__UNUSED static int64_t kosmos2__row_bytes(kosmos2__dtype t, int64_t cols) {
    switch (t) {
    case KOSMOS2__F32: return cols * 4;
    case KOSMOS2__F16: case KOSMOS2__BF16: return cols * 2;
    case KOSMOS2__Q8_0: return cols / KOSMOS2__QK * KOSMOS2__Q8_0_BYTES;
    case KOSMOS2__Q4_0: return cols / KOSMOS2__QK * KOSMOS2__Q4_0_BYTES;
    }
    return 0;
}
KOSMOS2__UNUSED static const char *kosmos2__dtype_name(kosmos2__dtype t) {
    static const char *names[] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
    return (unsigned)t < 5 ? names[t] : "?";
}

/* ----------------------------------------------------------- q8_0 / q4_0 (de)quantization -- */
/* x[0..k-1] -> k/32 q8_0 blocks at out (k a multiple of 32). Per block: d = max|x| / 127,
 * q = round-half-away(x / d) (computed as x * (1/d)), d stored as float16 (ggml's rule). */
KOSMOS2__UNUSED static void kosmos2__quantize_row_q8_0(const float *x, void *out, int64_t k) {
    uint8_t *o = (uint8_t *)out;
    int64_t b, nb = k / KOSMOS2__QK;
    for (b = 0; b < nb; b++, x += KOSMOS2__QK, o += KOSMOS2__Q8_0_BYTES) {
        float amax = 0.0f, d, id;
        uint16_t dh;
        int i;
        for (i = 0; i < KOSMOS2__QK; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        d = amax / 127.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        dh = kosmos2__f32_to_f16(d);
        memcpy(o, &dh, 2);
        for (i = 0; i < KOSMOS2__QK; i++) {
            float q = roundf(x[i] * id);
            q = q >= -127.0f ? (q <= 127.0f ? q : 127.0f) : -127.0f; /* also NaN -> -127 */
            o[2 + i] = (uint8_t)(int8_t)q;
        }
    }
}
/* x[0..k-1] -> k/32 q4_0 blocks. Per block: m = the element of largest magnitude (first one),
 * d = m / -8, q = min(15, trunc(x / d + 8.5)) (so m itself maps to 0), d stored as float16. */
KOSMOS2__UNUSED static void kosmos2__quantize_row_q4_0(const float *x, void *out, int64_t k) {
    uint8_t *o = (uint8_t *)out;
    int64_t b, nb = k / KOSMOS2__QK;
    for (b = 0; b < nb; b++, x += KOSMOS2__QK, o += KOSMOS2__Q4_0_BYTES) {
        float amax = 0.0f, m = 0.0f, d, id;
        uint16_t dh;
        int i;
        for (i = 0; i < KOSMOS2__QK; i++)
            if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); m = x[i]; }
        d = m / -8.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        dh = kosmos2__f32_to_f16(d);
        memcpy(o, &dh, 2);
        for (i = 0; i < KOSMOS2__QK / 2; i++) {
            float t0 = x[i] * id + 8.5f, t1 = x[i + 16] * id + 8.5f;
            int q0, q1;
            t0 = t0 >= 0.0f ? (t0 <= 15.0f ? t0 : 15.0f) : 0.0f; /* NaN -> 0 */
            t1 = t1 >= 0.0f ? (t1 <= 15.0f ? t1 : 15.0f) : 0.0f;
            q0 = (int)t0;
            q1 = (int)t1;
            o[2 + i] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}
/* k/32 blocks -> k floats. */
KOSMOS2__UNUSED static void kosmos2__dequantize_row_q8_0(const void *in, float *y, int64_t k) {
    const uint8_t *p = (const uint8_t *)in;
    int64_t b, nb = k / KOSMOS2__QK;
    for (b = 0; b < nb; b++, p += KOSMOS2__Q8_0_BYTES) {
        float d = kosmos2__f16_at(p);
        int i;
        for (i = 0; i < KOSMOS2__QK; i++) y[b * KOSMOS2__QK + i] = (float)(int8_t)p[2 + i] * d;
    }
}
KOSMOS2__UNUSED static void kosmos2__dequantize_row_q4_0(const void *in, float *y, int64_t k) {
    const uint8_t *p = (const uint8_t *)in;
    int64_t b, nb = k / KOSMOS2__QK;
    for (b = 0; b < nb; b++, p += KOSMOS2__Q4_0_BYTES) {
        float d = kosmos2__f16_at(p);
        int i;
        for (i = 0; i < 16; i++) {
            y[b * KOSMOS2__QK + i] = (float)((p[2 + i] & 15) - 8) * d;
            y[b * KOSMOS2__QK + i + 16] = (float)((p[2 + i] >> 4) - 8) * d;
        }
    }
}

/* out[0..cols-1] = W[row] as float32 (exact for F16/BF16; dequantized for q types). */
KOSMOS2__UNUSED static void kosmos2__mat_row_f32(const kosmos2__mat *W, int64_t row, float *out) {
    int64_t j, n = W->cols;
    const uint8_t *base = (const uint8_t *)W->data + row * kosmos2__row_bytes(W->dtype, n);
    switch (W->dtype) {
    case KOSMOS2__F32: memcpy(out, base, (size_t)n * 4); break;
    case KOSMOS2__F16:
        for (j = 0; j < n; j++) out[j] = kosmos2__f16_at(base + 2 * j);
        break;
    case KOSMOS2__BF16:
        for (j = 0; j < n; j++) {
            uint16_t h;
            memcpy(&h, base + 2 * j, 2);
            out[j] = kosmos2__bf16_to_f32(h);
        }
        break;
    case KOSMOS2__Q8_0: kosmos2__dequantize_row_q8_0(base, out, n); break;
    case KOSMOS2__Q4_0: kosmos2__dequantize_row_q4_0(base, out, n); break;
    }
}

/* ------------------------------------------------------------------------ ISA selection ---- */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KOSMOS2__X86 1
#include <immintrin.h>
#define KOSMOS2__T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KOSMOS2__T_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define KOSMOS2__INLINE static inline __attribute__((always_inline))
#define KOSMOS2__UNROLL _Pragma("GCC unroll 8")
#endif

static int kosmos2__isa_forced = -1; /* -1: best available; else the ISA asked for (tests) */
static int kosmos2__isa_best = -1;   /* detected once (benign race: every thread writes the same) */

static int kosmos2__isa_detect(void) {
#ifdef KOSMOS2__X86
    const char *env = getenv("KOSMOS2_ISA");
    int best = KOSMOS2__ISA_SCALAR;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        best = KOSMOS2__ISA_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
            __builtin_cpu_supports("avx512vnni"))
            best = KOSMOS2__ISA_AVX512;
    }
    if (env && strcmp(env, "scalar") == 0) best = KOSMOS2__ISA_SCALAR;
    else if (env && strcmp(env, "avx2") == 0 && best > KOSMOS2__ISA_AVX2) best = KOSMOS2__ISA_AVX2;
    return best;
#else
    return KOSMOS2__ISA_SCALAR;
#endif
}
/* The ISA the kernels use now. */
static int kosmos2__kernels_isa(void) {
    if (kosmos2__isa_best < 0) kosmos2__isa_best = kosmos2__isa_detect();
    if (kosmos2__isa_forced >= 0 && kosmos2__isa_forced < kosmos2__isa_best) return kosmos2__isa_forced;
    return kosmos2__isa_best;
}
/* Force an ISA (KOSMOS2__ISA_*; -1 = best available). Returns the ISA in effect, which is lower
 * than asked when the CPU (or KOSMOS2_ISA) does not allow it. Not thread-safe: call it before
 * starting work. */
KOSMOS2__UNUSED static int kosmos2__kernels_set_isa(int isa) {
    kosmos2__isa_forced = isa;
    return kosmos2__kernels_isa();
}
KOSMOS2__UNUSED static const char *kosmos2__isa_name(int isa) {
    return isa == KOSMOS2__ISA_AVX512 ? "avx512" : isa == KOSMOS2__ISA_AVX2 ? "avx2" : "scalar";
}

/* A tile kernel computes y[r*ldy + c] for r < R, c < C (its own R x C, see the kernel tables):
 * x rows at x + r*ldx (float32), weight rows at w + c*ldw elements of type dt. */
typedef void (*kosmos2__ftile_fn)(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                                  int64_t ldw, int dt, int64_t K, const float *bias);
/* widen n weights of type dt (F16/BF16) to float32 */
typedef void (*kosmos2__widen_fn)(const void *src, int dt, float *dst, int64_t n);

/* Activations quantized to q8_0 for one product: per row nb scales and nb*32 values. */
typedef struct {
    int64_t nb;      /* blocks per row = K / 32 */
    float *d;        /* [M, nb] scale per block (a float16 value) */
    int8_t *q;       /* [M, nb*32] quantized values in [-127, 127] */
} kosmos2__qacts;
/* A quantized tile kernel: y[r*ldy + c] for activation rows r (d + r*nb, q + r*nb*32) and
 * weight rows c (w + c*wstride bytes, type dt = Q8_0 or Q4_0). */
typedef void (*kosmos2__qtile_fn)(float *y, int64_t ldy, const float *ad, const int8_t *aq, int64_t nb,
                                  const uint8_t *w, int64_t wstride, int dt, const float *bias);

/* The kernels of one ISA: R x C tiles. full: R x C, float32 weights; row: 1 x C, any float
 * dtype; one: 1 x 1. The q* entries are the same for quantized weights. */
typedef struct {
    int R, C;
    kosmos2__ftile_fn full, row, one;
    kosmos2__widen_fn widen;
    int QR, QC;
    kosmos2__qtile_fn qfull, qrow, qone;
} kosmos2__kernel_set;

/* ---------------------------------------------------------------- scalar reference path ---- */
/* Fold 16 lanes in the canonical tree order. */
static float kosmos2__fold16(float *s) {
    int l;
    for (l = 0; l < 8; l++) s[l] += s[l + 8];
    for (l = 0; l < 4; l++) s[l] += s[l + 4];
    for (l = 0; l < 2; l++) s[l] += s[l + 2];
    return s[0] + s[1];
}
static float kosmos2__load_w(const void *w, int dt, int64_t k) { /* one float weight as float32 */
    uint16_t h;
    if (dt == KOSMOS2__F32) return ((const float *)w)[k];
    memcpy(&h, (const uint16_t *)w + k, 2);
    return dt == KOSMOS2__F16 ? kosmos2__f16_to_f32(h) : kosmos2__bf16_to_f32(h);
}
/* Canonical dot product of a float weight row with x (the scalar reference). */
static float kosmos2__dot_scalar(const void *w, int dt, const float *x, int64_t K) {
    float s[16] = {0};
    int64_t k;
    for (k = 0; k < K; k++) s[k & 15] = fmaf(x[k], kosmos2__load_w(w, dt, k), s[k & 15]);
    return kosmos2__fold16(s);
}
static void kosmos2__tile_scalar(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w, int64_t ldw,
                                 int dt, int64_t K, const float *bias) {
    (void)ldy; (void)ldx; (void)ldw;
    *y = kosmos2__dot_scalar(w, dt, x, K) + (bias ? bias[0] : 0.0f);
}
/* Canonical dot product of a q8_0/q4_0 weight row with a q8_0 activation row (scalar reference). */
static float kosmos2__qdot_scalar(const uint8_t *w, int dt, const float *ad, const int8_t *aq, int64_t nb) {
    float s[16] = {0};
    int64_t b;
    int bs = dt == KOSMOS2__Q8_0 ? KOSMOS2__Q8_0_BYTES : KOSMOS2__Q4_0_BYTES;
    for (b = 0; b < nb; b++, w += bs, aq += KOSMOS2__QK) {
        int wq[KOSMOS2__QK], i, g;
        float d = kosmos2__f16_at(w) * ad[b]; /* exact: two float16 values */
        if (dt == KOSMOS2__Q8_0)
            for (i = 0; i < 32; i++) wq[i] = (int8_t)w[2 + i];
        else
            for (i = 0; i < 16; i++) { wq[i] = (w[2 + i] & 15) - 8; wq[i + 16] = (w[2 + i] >> 4) - 8; }
        for (g = 0; g < 8; g++) {
            int p = 0;
            for (i = 4 * g; i < 4 * g + 4; i++) p += wq[i] * aq[i];
            s[(b & 1) * 8 + g] = fmaf(d, (float)p, s[(b & 1) * 8 + g]);
        }
    }
    return kosmos2__fold16(s);
}
static void kosmos2__qtile_scalar(float *y, int64_t ldy, const float *ad, const int8_t *aq, int64_t nb,
                                  const uint8_t *w, int64_t wstride, int dt, const float *bias) {
    (void)ldy; (void)wstride;
    *y = kosmos2__qdot_scalar(w, dt, ad, aq, nb) + (bias ? bias[0] : 0.0f);
}

/* ------------------------------------------------------------------------------ AVX2 path -- */
#ifdef KOSMOS2__X86
/* fold of a[l] = s[l] + s[l+8] (l < 8) down to one float, in the canonical order */
KOSMOS2__INLINE KOSMOS2__T_AVX2 float kosmos2__fold8_avx2(__m256 a) {
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}
/* 8 weights at w[k..k+7] as float32 */
KOSMOS2__INLINE KOSMOS2__T_AVX2 __m256 kosmos2__load8_avx2(const void *w, int dt, int64_t k) {
    if (dt == KOSMOS2__F32) return _mm256_loadu_ps((const float *)w + k);
    if (dt == KOSMOS2__F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k))), 16));
}
/* The float tile: R x C outputs, each with two 8-lane accumulators (lanes 0-7, 8-15). The K % 16
 * tail is copied into zero-padded float buffers (0*0 added to a lane leaves it unchanged). */
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__tile_avx2_body(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                             const void *w, int64_t ldw, int dt, int64_t K,
                                                             const float *bias, const int R, const int C) {
    __m256 lo[2][3], hi[2][3];
    float xt[2][16], wt[3][16];
    int64_t k;
    int r, c;
    const int es = dt == KOSMOS2__F32 ? 4 : 2;
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) {
        lo[r][c] = _mm256_setzero_ps();
        hi[r][c] = _mm256_setzero_ps();
    }
    for (k = 0; k + 16 <= K; k += 16) {
        KOSMOS2__UNROLL for (c = 0; c < C; c++) {
            __m256 w0 = kosmos2__load8_avx2((const char *)w + c * ldw * es, dt, k);
            __m256 w1 = kosmos2__load8_avx2((const char *)w + c * ldw * es, dt, k + 8);
            KOSMOS2__UNROLL for (r = 0; r < R; r++) {
                lo[r][c] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * ldx + k), w0, lo[r][c]);
                hi[r][c] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * ldx + k + 8), w1, hi[r][c]);
            }
        }
    }
    if (k < K) {
        int64_t n = K - k, j;
        for (r = 0; r < R; r++)
            for (j = 0; j < 16; j++) xt[r][j] = j < n ? x[r * ldx + k + j] : 0.0f;
        for (c = 0; c < C; c++)
            for (j = 0; j < 16; j++) wt[c][j] = j < n ? kosmos2__load_w((const char *)w + c * ldw * es, dt, k + j) : 0.0f;
        KOSMOS2__UNROLL for (c = 0; c < C; c++) KOSMOS2__UNROLL for (r = 0; r < R; r++) {
            lo[r][c] = _mm256_fmadd_ps(_mm256_loadu_ps(xt[r]), _mm256_loadu_ps(wt[c]), lo[r][c]);
            hi[r][c] = _mm256_fmadd_ps(_mm256_loadu_ps(xt[r] + 8), _mm256_loadu_ps(wt[c] + 8), hi[r][c]);
        }
    }
    for (r = 0; r < R; r++)
        for (c = 0; c < C; c++)
            y[r * ldy + c] = kosmos2__fold8_avx2(_mm256_add_ps(lo[r][c], hi[r][c])) + (bias ? bias[c] : 0.0f);
}
static KOSMOS2__T_AVX2 void kosmos2__tile_avx2_full(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                     const void *w, int64_t ldw, int dt, int64_t K, const float *bias) {
    (void)dt;
    kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, 2, 3);
}
static KOSMOS2__T_AVX2 void kosmos2__tile_avx2_row(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                    const void *w, int64_t ldw, int dt, int64_t K, const float *bias) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, 1, 3);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, 1, 3);
    else kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, 1, 3);
}
static KOSMOS2__T_AVX2 void kosmos2__tile_avx2_one(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                    const void *w, int64_t ldw, int dt, int64_t K, const float *bias) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, 1, 1);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, 1, 1);
    else kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, 1, 1);
}
/* widen F16/BF16 to float32 (exact) */
static KOSMOS2__T_AVX2 void kosmos2__widen_avx2(const void *src, int dt, float *dst, int64_t n) {
    int64_t k;
    if (dt == KOSMOS2__F16)
        for (k = 0; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, kosmos2__load8_avx2(src, KOSMOS2__F16, k));
    else
        for (k = 0; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, kosmos2__load8_avx2(src, KOSMOS2__BF16, k));
    for (; k < n; k++) dst[k] = kosmos2__load_w(src, dt, k);
}

/* 32 weights of block `blk` as int8 (q4_0 nibbles unpacked: low nibbles first, minus 8) */
KOSMOS2__INLINE KOSMOS2__T_AVX2 __m256i kosmos2__qload32_avx2(const uint8_t *blk, int dt) {
    if (dt == KOSMOS2__Q8_0) return _mm256_loadu_si256((const __m256i *)(blk + 2));
    {
        __m128i v = _mm_loadu_si128((const __m128i *)(blk + 2)), m = _mm_set1_epi8(15);
        __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
    }
}
/* exact int32 sums of 4 consecutive products w*a (8 groups), by maddubs on |w| and sign(a, w) */
KOSMOS2__INLINE KOSMOS2__T_AVX2 __m256i kosmos2__qgroups_avx2(__m256i w, __m256i a) {
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}
/* The quantized tile: R x C outputs; accumulators lo (even blocks) and hi (odd blocks). */
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_body(float *y, int64_t ldy, const float *ad, const int8_t *aq,
                                                              int64_t nb, const uint8_t *w, int64_t wstride, int dt,
                                                              const float *bias, const int R, const int C) {
    __m256 acc[2][2][2]; /* [r][c][b & 1] */
    int64_t b;
    int r, c;
    const int bs = dt == KOSMOS2__Q8_0 ? KOSMOS2__Q8_0_BYTES : KOSMOS2__Q4_0_BYTES;
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) {
        acc[r][c][0] = _mm256_setzero_ps();
        acc[r][c][1] = _mm256_setzero_ps();
    }
    for (b = 0; b < nb; b++) {
        const int h = (int)(b & 1);
        KOSMOS2__UNROLL for (c = 0; c < C; c++) {
            const uint8_t *blk = w + c * wstride + b * bs;
            __m256i wv = kosmos2__qload32_avx2(blk, dt);
            unsigned short dh;
            float dw;
            memcpy(&dh, blk, 2);
            dw = _cvtsh_ss(dh);
            KOSMOS2__UNROLL for (r = 0; r < R; r++) {
                __m256i av = _mm256_loadu_si256((const __m256i *)(aq + r * nb * KOSMOS2__QK + b * KOSMOS2__QK));
                __m256 p = _mm256_cvtepi32_ps(kosmos2__qgroups_avx2(wv, av));
                __m256 d = _mm256_set1_ps(dw * ad[r * nb + b]);
                acc[r][c][h] = _mm256_fmadd_ps(d, p, acc[r][c][h]);
            }
        }
    }
    for (r = 0; r < R; r++)
        for (c = 0; c < C; c++)
            y[r * ldy + c] = kosmos2__fold8_avx2(_mm256_add_ps(acc[r][c][0], acc[r][c][1])) + (bias ? bias[c] : 0.0f);
}
static KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_full(float *y, int64_t ldy, const float *ad, const int8_t *aq, int64_t nb,
                                                      const uint8_t *w, int64_t wstride, int dt, const float *bias) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx2_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q8_0, bias, 2, 2);
    else kosmos2__qtile_avx2_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q4_0, bias, 2, 2);
}
static KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_row(float *y, int64_t ldy, const float *ad, const int8_t *aq, int64_t nb,
                                                     const uint8_t *w, int64_t wstride, int dt, const float *bias) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx2_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q8_0, bias, 1, 2);
    else kosmos2__qtile_avx2_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q4_0, bias, 1, 2);
}
static KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_one(float *y, int64_t ldy, const float *ad, const int8_t *aq, int64_t nb,
                                                     const uint8_t *w, int64_t wstride, int dt, const float *bias) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx2_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q8_0, bias, 1, 1);
    else kosmos2__qtile_avx2_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q4_0, bias, 1, 1);
}

/* --------------------------------------------------------------------------- AVX-512 path -- */
/* 16 weights at w[k..k+15] as float32; the masked form reads only lanes in `mask` (others 0) */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__load16_avx512(const void *w, int dt, int64_t k) {
    if (dt == KOSMOS2__F32) return _mm512_loadu_ps((const float *)w + k);
    if (dt == KOSMOS2__F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k))), 16));
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__load16m_avx512(const void *w, int dt, int64_t k, __mmask16 mask) {
    if (dt == KOSMOS2__F32) return _mm512_maskz_loadu_ps(mask, (const float *)w + k);
    if (dt == KOSMOS2__F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, (const uint16_t *)w + k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, (const uint16_t *)w + k)), 16));
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 float kosmos2__fold16_avx512(__m512 v) {
    return kosmos2__fold8_avx2(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}
/* The float tile: R x C outputs (R <= 4, C <= 6), one 16-lane zmm accumulator each; per 16 k:
 * C weight loads, R activation loads, R*C FMAs (4 x 6: 24 accumulators + 6 weights + 1 x). */
KOSMOS2__INLINE KOSMOS2__T_AVX512 void kosmos2__tile_avx512_body(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                                 const void *w, int64_t ldw, int dt, int64_t K,
                                                                 const float *bias, const int R, const int C) {
    __m512 acc[4][6], wv[6];
    int64_t k;
    int r, c;
    const int es = dt == KOSMOS2__F32 ? 4 : 2;
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    for (k = 0; k + 16 <= K; k += 16) {
        KOSMOS2__UNROLL for (c = 0; c < C; c++) wv[c] = kosmos2__load16_avx512((const char *)w + c * ldw * es, dt, k);
        KOSMOS2__UNROLL for (r = 0; r < R; r++) {
            __m512 xv = _mm512_loadu_ps(x + r * ldx + k);
            KOSMOS2__UNROLL for (c = 0; c < C; c++) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
    if (k < K) { /* masked tail: absent lanes add 0*0, which leaves an accumulator unchanged */
        const __mmask16 mask = (__mmask16)((1u << (K - k)) - 1);
        KOSMOS2__UNROLL for (c = 0; c < C; c++) wv[c] = kosmos2__load16m_avx512((const char *)w + c * ldw * es, dt, k, mask);
        KOSMOS2__UNROLL for (r = 0; r < R; r++) {
            __m512 xv = _mm512_maskz_loadu_ps(mask, x + r * ldx + k);
            KOSMOS2__UNROLL for (c = 0; c < C; c++) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++)
        y[r * ldy + c] = kosmos2__fold16_avx512(acc[r][c]) + (bias ? bias[c] : 0.0f);
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_full(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                         const void *w, int64_t ldw, int dt, int64_t K, const float *bias) {
    (void)dt;
    kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, 4, 6);
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_row(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                        const void *w, int64_t ldw, int dt, int64_t K, const float *bias) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, 1, 6);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, 1, 6);
    else kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, 1, 6);
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_one(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                        const void *w, int64_t ldw, int dt, int64_t K, const float *bias) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, 1, 1);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, 1, 1);
    else kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, 1, 1);
}
static KOSMOS2__T_AVX512 void kosmos2__widen_avx512(const void *src, int dt, float *dst, int64_t n) {
    int64_t k;
    if (dt == KOSMOS2__F16)
        for (k = 0; k + 16 <= n; k += 16) _mm512_storeu_ps(dst + k, kosmos2__load16_avx512(src, KOSMOS2__F16, k));
    else
        for (k = 0; k + 16 <= n; k += 16) _mm512_storeu_ps(dst + k, kosmos2__load16_avx512(src, KOSMOS2__BF16, k));
    for (; k < n; k++) dst[k] = kosmos2__load_w(src, dt, k);
}

/* Two blocks (b even, b+1) in one zmm: bytes 0-31 block b, 32-63 block b+1 (zero if absent).
 * The int8 dot products use VNNI vpdpbusd, which multiplies unsigned by signed bytes: with
 * a' = a + 128 (unsigned), sum(a*w) = sum(a'*w) - 128*sum(w), the second term computed per weight
 * vector (once per tile step, shared by all activation rows). Lane j of the result = group j. */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512i kosmos2__qload64_avx512(const uint8_t *blk, int two, int bs, int dt) {
    __m256i lo = kosmos2__qload32_avx2(blk, dt);
    __m256i hi = two ? kosmos2__qload32_avx2(blk + bs, dt) : _mm256_setzero_si256();
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__pair_avx512(float a, float b) {
    return _mm512_insertf32x8(_mm512_set1_ps(a), _mm256_set1_ps(b), 1);
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 float kosmos2__f16_at_avx512(const uint8_t *p) {
    unsigned short h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}
/* The quantized tile: R x C outputs (R, C <= 4), two blocks per step. */
KOSMOS2__INLINE KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_body(float *y, int64_t ldy, const float *ad, const int8_t *aq,
                                                                  int64_t nb, const uint8_t *w, int64_t wstride, int dt,
                                                                  const float *bias, const int R, const int C) {
    __m512 acc[4][4], dw[4];
    __m512i wv[4], nc[4];
    const __m512i zero = _mm512_setzero_si512(), c80 = _mm512_set1_epi8((char)0x80);
    const int bs = dt == KOSMOS2__Q8_0 ? KOSMOS2__Q8_0_BYTES : KOSMOS2__Q4_0_BYTES;
    int64_t b;
    int r, c;
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    for (b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        KOSMOS2__UNROLL for (c = 0; c < C; c++) {
            const uint8_t *blk = w + c * wstride + b * bs;
            wv[c] = kosmos2__qload64_avx512(blk, two, bs, dt);
            nc[c] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, c80, wv[c])); /* -128 * group sums of w */
            dw[c] = kosmos2__pair_avx512(kosmos2__f16_at_avx512(blk), two ? kosmos2__f16_at_avx512(blk + bs) : 0.0f);
        }
        KOSMOS2__UNROLL for (r = 0; r < R; r++) {
            const int8_t *a = aq + r * nb * KOSMOS2__QK + b * KOSMOS2__QK;
            __m512i av = two ? _mm512_loadu_si512((const void *)a)
                             : _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a));
            __m512 dx = kosmos2__pair_avx512(ad[r * nb + b], two ? ad[r * nb + b + 1] : 0.0f);
            if (!two) av = _mm512_inserti64x4(av, _mm256_setzero_si256(), 1);
            av = _mm512_xor_si512(av, c80); /* a + 128 as unsigned bytes */
            KOSMOS2__UNROLL for (c = 0; c < C; c++) {
                __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(nc[c], av, wv[c]));
                acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(dx, dw[c]), p, acc[r][c]);
            }
        }
    }
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++)
        y[r * ldy + c] = kosmos2__fold16_avx512(acc[r][c]) + (bias ? bias[c] : 0.0f);
}
static KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_full(float *y, int64_t ldy, const float *ad, const int8_t *aq, int64_t nb,
                                                          const uint8_t *w, int64_t wstride, int dt, const float *bias) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx512_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q8_0, bias, 4, 4);
    else kosmos2__qtile_avx512_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q4_0, bias, 4, 4);
}
static KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_row(float *y, int64_t ldy, const float *ad, const int8_t *aq, int64_t nb,
                                                         const uint8_t *w, int64_t wstride, int dt, const float *bias) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx512_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q8_0, bias, 1, 4);
    else kosmos2__qtile_avx512_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q4_0, bias, 1, 4);
}
static KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_one(float *y, int64_t ldy, const float *ad, const int8_t *aq, int64_t nb,
                                                         const uint8_t *w, int64_t wstride, int dt, const float *bias) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx512_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q8_0, bias, 1, 1);
    else kosmos2__qtile_avx512_body(y, ldy, ad, aq, nb, w, wstride, KOSMOS2__Q4_0, bias, 1, 1);
}
#endif /* KOSMOS2__X86 */

/* ----------------------------------------------------------------------- kernel tables ---- */
static const kosmos2__kernel_set kosmos2__kernels_scalar = {
    1, 1, kosmos2__tile_scalar, kosmos2__tile_scalar, kosmos2__tile_scalar, NULL,
    1, 1, kosmos2__qtile_scalar, kosmos2__qtile_scalar, kosmos2__qtile_scalar};
#ifdef KOSMOS2__X86
static const kosmos2__kernel_set kosmos2__kernels_avx2 = {
    2, 3, kosmos2__tile_avx2_full, kosmos2__tile_avx2_row, kosmos2__tile_avx2_one, kosmos2__widen_avx2,
    2, 2, kosmos2__qtile_avx2_full, kosmos2__qtile_avx2_row, kosmos2__qtile_avx2_one};
static const kosmos2__kernel_set kosmos2__kernels_avx512 = {
    4, 6, kosmos2__tile_avx512_full, kosmos2__tile_avx512_row, kosmos2__tile_avx512_one, kosmos2__widen_avx512,
    4, 4, kosmos2__qtile_avx512_full, kosmos2__qtile_avx512_row, kosmos2__qtile_avx512_one};
#endif
static const kosmos2__kernel_set *kosmos2__kernel_table(void) {
#ifdef KOSMOS2__X86
    int isa = kosmos2__kernels_isa();
    if (isa == KOSMOS2__ISA_AVX512) return &kosmos2__kernels_avx512;
    if (isa == KOSMOS2__ISA_AVX2) return &kosmos2__kernels_avx2;
#endif
    return &kosmos2__kernels_scalar;
}

/* --------------------------------------------------------------------- product drivers ---- */
/* One panel of c weight rows (float type dt, row stride K) times M activation rows. */
static void kosmos2__panel_float(const kosmos2__kernel_set *ks, float *y, int64_t ldy, const float *x, int64_t M,
                                 int64_t K, const void *w, int dt, int64_t c, const float *bias) {
    int64_t m = 0, j, es = dt == KOSMOS2__F32 ? 4 : 2;
    if (c == ks->C && dt == KOSMOS2__F32)
        for (; m + ks->R <= M; m += ks->R) ks->full(y + m * ldy, ldy, x + m * K, K, w, K, dt, K, bias);
    for (; m < M; m++) {
        if (c == ks->C) ks->row(y + m * ldy, ldy, x + m * K, K, w, K, dt, K, bias);
        else
            for (j = 0; j < c; j++)
                ks->one(y + m * ldy + j, ldy, x + m * K, K, (const char *)w + j * K * es, K, dt, K, bias ? bias + j : NULL);
    }
}

/* y[M,N] = x[M,K] W^T + bias for F32/F16/BF16 weights (see TILING above). */
static int kosmos2__matmul_float(float *y, const float *x, int64_t M, const kosmos2__mat *W, const float *bias,
                                 int n_threads, const kosmos2__kernel_set *ks) {
    const int64_t N = W->rows, K = W->cols, C = ks->C, np = (N + C - 1) / C;
    const int64_t wbytes = kosmos2__row_bytes(W->dtype, K);
    const int widen = W->dtype != KOSMOS2__F32 && ks->widen != NULL && M >= 4;
    int64_t chunks = (M * K * 4) / (1 << 20) + 1, mc = (M + chunks - 1) / chunks, m0;
    mc = (mc + ks->R - 1) / ks->R * ks->R; /* activation rows per chunk (about 1 MB, stays in L2) */
    (void)n_threads;
    for (m0 = 0; m0 < M; m0 += mc) {
        const int64_t mr = M - m0 < mc ? M - m0 : mc;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && !omp_in_parallel())
#endif
        {
            /* [C, K] widened panel; without it the row kernels convert in registers */
            float *buf = widen ? (float *)KOSMOS2_MALLOC((size_t)(C * K) * 4 + 4) : NULL;
            int64_t p;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (p = 0; p < np; p++) {
                const int64_t n0 = p * C, c = N - n0 < C ? N - n0 : C;
                const void *w = (const uint8_t *)W->data + n0 * wbytes;
                int dt = W->dtype;
                if (buf) { ks->widen(w, dt, buf, c * K); w = buf; dt = KOSMOS2__F32; }
                kosmos2__panel_float(ks, y + m0 * N + n0, N, x + m0 * K, mr, K, w, dt, c, bias ? bias + n0 : NULL);
            }
            KOSMOS2_FREE(buf);
        }
    }
    return KOSMOS2_OK;
}

/* Quantize activation row x[0..nb*32-1] to q8_0 (the weights' rule) into d[nb], q[nb*32]. */
static void kosmos2__quantize_act_row(const float *x, int64_t nb, float *d, int8_t *q) {
    uint8_t blk[KOSMOS2__Q8_0_BYTES];
    int64_t b;
    for (b = 0; b < nb; b++) {
        kosmos2__quantize_row_q8_0(x + b * KOSMOS2__QK, blk, KOSMOS2__QK);
        d[b] = kosmos2__f16_at(blk);
        memcpy(q + b * KOSMOS2__QK, blk + 2, KOSMOS2__QK);
    }
}

/* One panel of c quantized weight rows times M quantized activation rows. */
static void kosmos2__panel_q(const kosmos2__kernel_set *ks, float *y, int64_t ldy, const kosmos2__qacts *A, int64_t M,
                             const uint8_t *w, int64_t wstride, int dt, int64_t c, const float *bias) {
    const int64_t nb = A->nb;
    int64_t m = 0, j;
    if (c == ks->QC)
        for (; m + ks->QR <= M; m += ks->QR)
            ks->qfull(y + m * ldy, ldy, A->d + m * nb, A->q + m * nb * KOSMOS2__QK, nb, w, wstride, dt, bias);
    for (; m < M; m++) {
        if (c == ks->QC) ks->qrow(y + m * ldy, ldy, A->d + m * nb, A->q + m * nb * KOSMOS2__QK, nb, w, wstride, dt, bias);
        else
            for (j = 0; j < c; j++)
                ks->qone(y + m * ldy + j, ldy, A->d + m * nb, A->q + m * nb * KOSMOS2__QK, nb, w + j * wstride, wstride, dt,
                         bias ? bias + j : NULL);
    }
}

/* y[M,N] = q8_0(x)[M,K] W^T + bias for Q8_0/Q4_0 weights: x is quantized once (in parallel over
 * rows), then panels of QC weight rows are distributed over the threads. */
static int kosmos2__matmul_q(float *y, const float *x, int64_t M, const kosmos2__mat *W, const float *bias,
                             int n_threads, const kosmos2__kernel_set *ks) {
    const int64_t N = W->rows, K = W->cols, C = ks->QC, np = (N + C - 1) / C, nb = K / KOSMOS2__QK;
    const int64_t wbytes = kosmos2__row_bytes(W->dtype, K);
    kosmos2__qacts A;
    void *mem;
    if (K % KOSMOS2__QK != 0)
        return kosmos2__fail(KOSMOS2_E_INVALID, "matmul: %s weights need a multiple of 32 columns, got %lld",
                             kosmos2__dtype_name(W->dtype), (long long)K);
    mem = kosmos2__alloc((size_t)(M * nb) * (4 + KOSMOS2__QK));
    if (!mem) return KOSMOS2_E_NOMEM;
    A.nb = nb;
    A.d = (float *)mem;                                    /* [M, nb] */
    A.q = (int8_t *)((uint8_t *)mem + (size_t)(M * nb) * 4); /* [M, nb*32] */
    (void)n_threads;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && !omp_in_parallel())
#endif
    {
        int64_t m, p;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (m = 0; m < M; m++) kosmos2__quantize_act_row(x + m * K, nb, A.d + m * nb, A.q + m * K);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (p = 0; p < np; p++) {
            const int64_t n0 = p * C, c = N - n0 < C ? N - n0 : C;
            kosmos2__panel_q(ks, y + n0, N, &A, M, (const uint8_t *)W->data + n0 * wbytes, wbytes, W->dtype, c,
                             bias ? bias + n0 : NULL);
        }
    }
    KOSMOS2_FREE(mem);
    return KOSMOS2_OK;
}

/* y[m, n] = sum_k x[m, k] * W[n, k] + bias[n]    x [M, K], W [N, K], bias [N] or NULL, y [M, N].
 * Any dtype; the canonical sum above, so the result is the same for any thread count and ISA.
 * Runs on n_threads OpenMP threads (one when called inside a parallel region). Returns 0, or
 * KOSMOS2_E_INVALID (q type with K % 32 != 0) / KOSMOS2_E_NOMEM (q types only). */
KOSMOS2__UNUSED static int kosmos2__matmul(float *y, const float *x, int64_t M, const kosmos2__mat *W,
                                           const float *bias, int n_threads) {
    const kosmos2__kernel_set *ks = kosmos2__kernel_table();
    if (M <= 0 || W->rows <= 0) return KOSMOS2_OK;
    if (n_threads < 1) n_threads = 1;
    if (W->dtype == KOSMOS2__Q8_0 || W->dtype == KOSMOS2__Q4_0) return kosmos2__matmul_q(y, x, M, W, bias, n_threads, ks);
    return kosmos2__matmul_float(y, x, M, W, bias, n_threads, ks);
}

/* dot(x[0..cols-1], W[row]) for a float-type W, in the canonical order (scalar). */
KOSMOS2__UNUSED static float kosmos2__dot_row(const kosmos2__mat *W, int64_t row, const float *x) {
    return kosmos2__dot_scalar((const uint8_t *)W->data + row * kosmos2__row_bytes(W->dtype, W->cols), W->dtype, x,
                               W->cols);
}
#endif
