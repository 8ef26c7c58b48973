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
 *  which picks, at run time, a scalar, AVX2+FMA+F16C or AVX-512 (F/BW/VL/DQ + VNNI)
 *  implementation. The environment variable KOSMOS2_ISA=scalar|avx2 caps the choice (read once);
 *  defining KOSMOS2_NO_SIMD builds the scalar path only. Do not build with -ffast-math (it would
 *  reorder the sums below).
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
 *  TILING (float weights, kosmos2__matmul_float). W is cut into panels of C rows; each thread
 *  takes whole panels (static schedule). With at least R activation rows, a panel is walked in
 *  blocks of KB = 512 values of k: the block [C, KB] is copied / widened to float32 into a
 *  per-thread buffer (row stride KB + 16, so that its rows do not share L1 sets; 12 KB on
 *  AVX-512, it stays in L1) and multiplied with every group of R activation rows by a register
 *  tile of R x C 16-lane accumulators (AVX-512: 4 x 6 = 24 zmm; AVX2: 2 x 3 pairs of ymm).
 *  Between blocks the accumulators are parked in a per-thread buffer [M, C, 16] (each lane keeps
 *  its k's, so the order stays the canonical one). Activations are taken in chunks of about
 *  1 MB, which stay in L2 while all the panels pass; the next weight block is prefetched a
 *  slice at a time between tiles. With fewer rows (decoding) the kernels read the weights as
 *  stored, converting in registers, all of K at once: each weight row is streamed once.
 *  Quantized weights (kosmos2__matmul_q): the activations are quantized once per product, then
 *  panels of QC weight rows meet groups of QR activation rows (AVX-512: 4 x 4, two blocks per
 *  step with VNNI; AVX2: 2 x 2, one block per step), reading the blocks as stored.
 *  Speed: 64-byte aligned activations and weights avoid split loads (about 10%). */

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
/* x86-64 SIMD paths with GCC/clang, unless KOSMOS2_NO_SIMD is defined (scalar only) */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(KOSMOS2_NO_SIMD)
#define KOSMOS2__X86 1
#include <immintrin.h>
#include <cpuid.h>
#if defined(__GNUC__) && !defined(__clang__)
/* g++ -O2 falsely warns about the _mm512_undefined_* inside the AVX-512 intrinsics' unmasked forms */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define KOSMOS2__X86_DIAG_PUSHED 1
#endif
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
    int best = KOSMOS2__ISA_SCALAR, f16c;
    unsigned a, b, c, d;
    __builtin_cpu_init();
    f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)); /* CPUID.1:ECX.F16C (clang's builtin lacks it) */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) {
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

/* The next block of weights one thread will need: rows base + j*stride, j < rows, bytes
 * [0, bytes) of each. The weights stream from memory once; for the reads to overlap the
 * arithmetic, the block's cache lines are prefetched while the current block is multiplied,
 * a slice per register tile and one line per step of the tile's loop (a burst of prefetches
 * would hold the line fill buffers that the tile's own loads need). */
typedef struct {
    const uint8_t *base;
    int64_t stride, bytes, rows;
} kosmos2__next_block;
/* the slice for one tile: n lines from line `off` of row `row` (per_row lines per row) */
typedef struct {
    const uint8_t *base;
    int64_t stride, per_row, row, off, n;
} kosmos2__pf;

/* A tile kernel computes y[r*ldy + c] for r < R, c < C (its own R x C, see the kernel tables):
 * x rows at x + r*ldx (float32), weight rows at w + c*ldw elements of type dt, K of them.
 * Cache blocking over K: the 16 lanes of output (r, c) can be parked in part + (r*C + c)*16
 * between blocks of K (multiples of 16, so the lanes keep their k's). flags: KOSMOS2__T_RESUME
 * = start from the parked lanes (else from 0); KOSMOS2__T_FINISH = fold, add bias and write y
 * (else park the lanes). pf: lines to prefetch (or NULL). */
typedef void (*kosmos2__ftile_fn)(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                                  int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags,
                                  const kosmos2__pf *pf);
enum { KOSMOS2__T_RESUME = 1, KOSMOS2__T_FINISH = 2 };
/* n weights of type dt to float32 (exact) */
typedef void (*kosmos2__widen_fn)(const void *src, int dt, float *dst, int64_t n);

/* Activations quantized to q8_0 for one product (row m of x -> row m of each array). The scales
 * are stored per block pair, each repeated 8 times, as the AVX-512 kernel's lanes want them. */
typedef struct {
    int64_t nb;      /* blocks per row = K / 32 */
    int64_t nbp;     /* block pairs per row = (nb + 1) / 2 */
    float *d;        /* [M, nbp, 16] lanes 0-7: scale of block 2j, lanes 8-15: of block 2j+1 (or 0) */
    int8_t *q;       /* [M, nb*32] quantized values in [-127, 127] */
    int32_t *ns;     /* [M, nb*8] minus the sum of each group of 4 quantized values */
} kosmos2__qacts;
/* scale of block b of activation row m */
#define KOSMOS2__QACT_D(A, m, b) ((A)->d[((m) * (A)->nbp + ((b) >> 1)) * 16 + ((b) & 1) * 8])
/* A quantized tile kernel: y[r*ldy + c] for activation rows m0 + r of A and weight rows c
 * (w + c*wstride bytes, type dt = Q8_0 or Q4_0). pf != 0: while reading a weight block, also
 * prefetch the block pf bytes further (the next panel: rows of a few hundred bytes are too
 * short for the hardware prefetchers to ramp up). */
typedef void (*kosmos2__qtile_fn)(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0, const uint8_t *w,
                                  int64_t wstride, int dt, const float *bias, int64_t pf);

/* The kernels of one ISA: R x C tiles. full: R x C, float32 weights; row: 1 x C, any float
 * dtype; one: 1 x 1. The q* entries are the same for quantized weights. */
typedef struct {
    int R, C;
    int64_t KB; /* block of K for M >= R (0: none) */
    kosmos2__ftile_fn full, row, one;
    kosmos2__ftile_fn fewer[4]; /* fewer[r]: r x C tile for the last r < R rows, float32 weights (or NULL) */
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
                                 int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    (void)ldy; (void)ldx; (void)ldw; (void)part; (void)flags; (void)pf; /* the scalar driver does not block K */
    *y = kosmos2__dot_scalar(w, dt, x, K) + (bias ? bias[0] : 0.0f);
}
/* Canonical dot product of a q8_0/q4_0 weight row with a q8_0 activation row (scalar reference). */
static float kosmos2__qdot_scalar(const uint8_t *w, int dt, const kosmos2__qacts *A, int64_t m) {
    float s[16] = {0};
    int64_t b;
    const int8_t *aq = A->q + m * A->nb * KOSMOS2__QK;
    int bs = dt == KOSMOS2__Q8_0 ? KOSMOS2__Q8_0_BYTES : KOSMOS2__Q4_0_BYTES;
    for (b = 0; b < A->nb; b++, w += bs, aq += KOSMOS2__QK) {
        int wq[KOSMOS2__QK], i, g;
        float d = kosmos2__f16_at(w) * KOSMOS2__QACT_D(A, m, b); /* exact: two float16 values */
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
static void kosmos2__qtile_scalar(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0, const uint8_t *w,
                                  int64_t wstride, int dt, const float *bias, int64_t pf) {
    (void)ldy; (void)wstride; (void)pf;
    *y = kosmos2__qdot_scalar(w, dt, A, m0) + (bias ? bias[0] : 0.0f);
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
                                                             const float *bias, float *part, int flags,
                                                             const kosmos2__pf *pf, const int R, const int C) {
    __m256 lo[2][3], hi[2][3];
    float xt[2][16], wt[3][16];
    int64_t k;
    int r, c;
    const int es = dt == KOSMOS2__F32 ? 4 : 2;
    (void)pf; /* (no prefetching on this path) */
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) {
        lo[r][c] = flags & KOSMOS2__T_RESUME ? _mm256_loadu_ps(part + (r * C + c) * 16) : _mm256_setzero_ps();
        hi[r][c] = flags & KOSMOS2__T_RESUME ? _mm256_loadu_ps(part + (r * C + c) * 16 + 8) : _mm256_setzero_ps();
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
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) {
        if (flags & KOSMOS2__T_FINISH)
            y[r * ldy + c] = kosmos2__fold8_avx2(_mm256_add_ps(lo[r][c], hi[r][c])) + (bias ? bias[c] : 0.0f);
        else {
            _mm256_storeu_ps(part + (r * C + c) * 16, lo[r][c]);
            _mm256_storeu_ps(part + (r * C + c) * 16 + 8, hi[r][c]);
        }
    }
}
static KOSMOS2__T_AVX2 void kosmos2__tile_avx2_full(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                     const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    (void)dt;
    kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 2, 3);
}
static KOSMOS2__T_AVX2 void kosmos2__tile_avx2_row(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                    const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 1, 3);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, part, flags, pf, 1, 3);
    else kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, part, flags, pf, 1, 3);
}
static KOSMOS2__T_AVX2 void kosmos2__tile_avx2_one(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                    const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 1, 1);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, part, flags, pf, 1, 1);
    else kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, part, flags, pf, 1, 1);
}
static KOSMOS2__T_AVX2 void kosmos2__widen_avx2(const void *src, int dt, float *dst, int64_t n) {
    int64_t k;
    if (dt == KOSMOS2__F32)
        for (k = 0; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, _mm256_loadu_ps((const float *)src + k));
    else if (dt == KOSMOS2__F16)
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
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_body(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                              const uint8_t *w, int64_t wstride, int dt,
                                                              const float *bias, int64_t pf, const int R, const int C) {
    __m256 acc[2][2][2]; /* [r][c][b & 1] */
    const int64_t nb = A->nb;
    const int8_t *aq = A->q + m0 * nb * KOSMOS2__QK;
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
            if (pf) _mm_prefetch((const char *)blk + pf, _MM_HINT_T0);
            unsigned short dh;
            float dw;
            memcpy(&dh, blk, 2);
            dw = _cvtsh_ss(dh);
            KOSMOS2__UNROLL for (r = 0; r < R; r++) {
                __m256i av = _mm256_loadu_si256((const __m256i *)(aq + r * nb * KOSMOS2__QK + b * KOSMOS2__QK));
                __m256 p = _mm256_cvtepi32_ps(kosmos2__qgroups_avx2(wv, av));
                __m256 d = _mm256_set1_ps(dw * KOSMOS2__QACT_D(A, m0 + r, b));
                acc[r][c][h] = _mm256_fmadd_ps(d, p, acc[r][c][h]);
            }
        }
    }
    for (r = 0; r < R; r++)
        for (c = 0; c < C; c++)
            y[r * ldy + c] = kosmos2__fold8_avx2(_mm256_add_ps(acc[r][c][0], acc[r][c][1])) + (bias ? bias[c] : 0.0f);
}
static KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_full(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                     const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 2, 2);
    else kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 2, 2);
}
static KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_row(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                     const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 1, 2);
    else kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 1, 2);
}
static KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_one(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                     const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 1, 1);
    else kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 1, 1);
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
/* Folding many accumulators at once, in the canonical tree order: each step adds the two halves
 * of the remaining lanes of two accumulators and packs both results into one register, so 16
 * accumulators take 4 levels of 8 + 4 + 2 + 1 shuffle-shuffle-add steps (45 instructions,
 * against about 150 folding them one by one). */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__fold_l1(__m512 a, __m512 b) { /* [a_l + a_l+8 | b_l + b_l+8] */
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__fold_l2(__m512 s, __m512 t) { /* 4 x (l + l+4) per 128 bits */
    return _mm512_add_ps(_mm512_shuffle_f32x4(s, t, 0x88), _mm512_shuffle_f32x4(s, t, 0xDD));
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__fold_l3(__m512 u, __m512 v) { /* per 128 bits: u_l + u_l+2, v_l + v_l+2 */
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(u), _mm512_castps_pd(v))),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(u), _mm512_castps_pd(v))));
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__fold_l4(__m512 x, __m512 y) { /* per 128 bits: x0+x1 x2+x3 y0+y1 y2+y3 */
    return _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x88), _mm512_shuffle_ps(x, y, 0xDD));
}
/* Finish a 4 x 6 tile: y[r*ldy + c] = fold(acc[r][c]) + bias[c]. Columns 0-3 are folded as 16
 * accumulators a[4c + r], giving lane 4r + c (row r = 128-bit quarter r); columns 4-5 as 8,
 * giving lanes 4r, 4r + 1. */
KOSMOS2__INLINE KOSMOS2__T_AVX512 void kosmos2__finish_4x6_avx512(float *y, int64_t ldy, __m512 acc[4][6],
                                                                  const float *bias) {
    __m512 u0, u1, u2, u3, v0, v1, b4;
    u0 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][0], acc[1][0]), kosmos2__fold_l1(acc[2][0], acc[3][0]));
    u1 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][1], acc[1][1]), kosmos2__fold_l1(acc[2][1], acc[3][1]));
    u2 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][2], acc[1][2]), kosmos2__fold_l1(acc[2][2], acc[3][2]));
    u3 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][3], acc[1][3]), kosmos2__fold_l1(acc[2][3], acc[3][3]));
    u0 = kosmos2__fold_l4(kosmos2__fold_l3(u0, u1), kosmos2__fold_l3(u2, u3));
    v0 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][4], acc[1][4]), kosmos2__fold_l1(acc[2][4], acc[3][4]));
    v1 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][5], acc[1][5]), kosmos2__fold_l1(acc[2][5], acc[3][5]));
    v0 = kosmos2__fold_l3(v0, v1);
    v0 = kosmos2__fold_l4(v0, v0);
    b4 = bias ? _mm512_broadcast_f32x4(_mm_loadu_ps(bias)) : _mm512_setzero_ps();
    u0 = _mm512_add_ps(u0, b4);
    b4 = bias ? _mm512_broadcast_f32x4(_mm_setr_ps(bias[4], bias[5], bias[4], bias[5])) : _mm512_setzero_ps();
    v0 = _mm512_add_ps(v0, b4);
    _mm_storeu_ps(y, _mm512_castps512_ps128(u0)); /* (immediates must be literal, even at -O0) */
    _mm_storeu_ps(y + ldy, _mm512_extractf32x4_ps(u0, 1));
    _mm_storeu_ps(y + 2 * ldy, _mm512_extractf32x4_ps(u0, 2));
    _mm_storeu_ps(y + 3 * ldy, _mm512_extractf32x4_ps(u0, 3));
    _mm_storel_pi((__m64 *)(void *)(y + 4), _mm512_castps512_ps128(v0));
    _mm_storel_pi((__m64 *)(void *)(y + ldy + 4), _mm512_extractf32x4_ps(v0, 1));
    _mm_storel_pi((__m64 *)(void *)(y + 2 * ldy + 4), _mm512_extractf32x4_ps(v0, 2));
    _mm_storel_pi((__m64 *)(void *)(y + 3 * ldy + 4), _mm512_extractf32x4_ps(v0, 3));
}

/* The float tile: R x C outputs (R <= 4, C <= 6), one 16-lane zmm accumulator each; per 16 k:
 * C weight loads, R activation loads, R*C FMAs (4 x 6: 24 accumulators + 6 weights + 1 x). */
KOSMOS2__INLINE KOSMOS2__T_AVX512 void kosmos2__tile_avx512_body(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                                 const void *w, int64_t ldw, int dt, int64_t K,
                                                                 const float *bias, float *part, int flags,
                                                                 const kosmos2__pf *pf, const int R, const int C) {
    __m512 acc[4][6], wv[6];
    int64_t k, pn = pf ? pf->n : 0, prow = pf ? pf->row : 0, poff = pf ? pf->off : 0;
    int r, c;
    const int es = dt == KOSMOS2__F32 ? 4 : 2;
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++)
        acc[r][c] = flags & KOSMOS2__T_RESUME ? _mm512_loadu_ps(part + (r * C + c) * 16) : _mm512_setzero_ps();
    for (k = 0; k + 16 <= K; k += 16) {
        if (pn > 0) { /* one line of the next weight block per step */
            _mm_prefetch((const char *)pf->base + prow * pf->stride + poff * 64, _MM_HINT_T1);
            pn--;
            if (++poff == pf->per_row) { poff = 0; prow++; }
        }
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
    if (R == 4 && C == 6 && (flags & KOSMOS2__T_FINISH)) kosmos2__finish_4x6_avx512(y, ldy, acc, bias);
    else
        KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) {
            if (flags & KOSMOS2__T_FINISH) y[r * ldy + c] = kosmos2__fold16_avx512(acc[r][c]) + (bias ? bias[c] : 0.0f);
            else _mm512_storeu_ps(part + (r * C + c) * 16, acc[r][c]);
        }
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_full(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                         const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    (void)dt;
    kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 4, 6);
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_2x6(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                        const void *w, int64_t ldw, int dt, int64_t K, const float *bias,
                                                        float *part, int flags, const kosmos2__pf *pf) {
    (void)dt;
    kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 2, 6);
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_3x6(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                        const void *w, int64_t ldw, int dt, int64_t K, const float *bias,
                                                        float *part, int flags, const kosmos2__pf *pf) {
    (void)dt;
    kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 3, 6);
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_row(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                        const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 1, 6);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, part, flags, pf, 1, 6);
    else kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, part, flags, pf, 1, 6);
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_one(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                        const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 1, 1);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, part, flags, pf, 1, 1);
    else kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, part, flags, pf, 1, 1);
}
static KOSMOS2__T_AVX512 void kosmos2__widen_avx512(const void *src, int dt, float *dst, int64_t n) {
    int64_t k;
    if (dt == KOSMOS2__F32)
        for (k = 0; k + 16 <= n; k += 16) _mm512_storeu_ps(dst + k, _mm512_loadu_ps((const float *)src + k));
    else if (dt == KOSMOS2__F16)
        for (k = 0; k + 16 <= n; k += 16) _mm512_storeu_ps(dst + k, kosmos2__load16_avx512(src, KOSMOS2__F16, k));
    else
        for (k = 0; k + 16 <= n; k += 16) _mm512_storeu_ps(dst + k, kosmos2__load16_avx512(src, KOSMOS2__BF16, k));
    for (; k < n; k++) dst[k] = kosmos2__load_w(src, dt, k);
}

/* Two blocks (b even, b+1) in one zmm of UNSIGNED bytes for vpdpbusd (unsigned x signed bytes,
 * 4 products summed per int32 lane): bytes 0-31 = block b, 32-63 = block b+1 (zero when absent),
 * so int32 lane j is group j of the canonical sum. The weights are made unsigned and the
 * activations a stay signed:
 *   q4_0: u = the nibble in [0, 15]:  sum((u - 8) * a) = sum(u * a) - 8 * sum(a)
 *   q8_0: u = w + 128 (w ^ 0x80):     sum(w * a)       = sum(u * a) - 128 * sum(a)
 * The group sums of a come with the quantized activations (A->ns = -sum), so the correction is
 * the start value of vpdpbusd: one shift per activation row and step, shared by all weight rows. */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512i kosmos2__qload64u_avx512(const uint8_t *blk, int two, int bs, int dt) {
    if (dt == KOSMOS2__Q8_0) {
        __m256i lo = _mm256_loadu_si256((const __m256i *)(blk + 2));
        __m256i hi = two ? _mm256_loadu_si256((const __m256i *)(blk + bs + 2)) : _mm256_setzero_si256();
        return _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), _mm512_set1_epi8((char)0x80));
    } else {
        __m128i v0 = _mm_loadu_si128((const __m128i *)(blk + 2));
        __m128i v1 = two ? _mm_loadu_si128((const __m128i *)(blk + bs + 2)) : _mm_setzero_si128();
        __m256i v = _mm256_set_m128i(v1, v0), m = _mm256_set1_epi8(15);
        __m256i lo = _mm256_and_si256(v, m), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
        __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); /* b.lo b1.lo b.hi b1.hi */
        return _mm512_shuffle_i64x2(z, z, 0xD8);                          /* b.lo b.hi b1.lo b1.hi */
    }
}
/* the scales of blocks b and b+1 (0 when absent) in lanes 0-7 and 8-15 */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__qscale2_avx512(const uint8_t *blk, int two, int bs) {
    short h0, h1 = 0;
    memcpy(&h0, blk, 2);
    if (two) memcpy(&h1, blk + bs, 2);
    return _mm512_cvtph_ps(_mm256_set_m128i(_mm_set1_epi16(h1), _mm_set1_epi16(h0)));
}
/* The quantized tile: R x C outputs (R, C <= 4), two blocks per step; per step and (r, c):
 * vpdpbusd, convert, scale product, FMA. */
KOSMOS2__INLINE KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_body(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                                  const uint8_t *w, int64_t wstride, int dt,
                                                                  const float *bias, int64_t pf, const int R, const int C) {
    __m512 acc[4][4], dw[4];
    __m512i wu[4];
    const int64_t nb = A->nb, nbp = A->nbp;
    const int bs = dt == KOSMOS2__Q8_0 ? KOSMOS2__Q8_0_BYTES : KOSMOS2__Q4_0_BYTES, sh = dt == KOSMOS2__Q8_0 ? 7 : 3;
    int64_t b = 0, j = 0;
    int r, c, pass;
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    /* pass 0: the pairs of blocks; pass 1: a last odd block (the loop is unrolled, so `two` is a
     * constant in each copy) */
    KOSMOS2__UNROLL for (pass = 0; pass < 2; pass++)
    for (; pass == 0 ? b + 2 <= nb : b < nb; b += 2, j++) {
        const int two = pass == 0;
        KOSMOS2__UNROLL for (c = 0; c < C; c++) {
            const uint8_t *blk = w + c * wstride + b * bs;
            wu[c] = kosmos2__qload64u_avx512(blk, two, bs, dt);
            if (pf) _mm_prefetch((const char *)blk + pf, _MM_HINT_T0);
            dw[c] = kosmos2__qscale2_avx512(blk, two, bs);
        }
        KOSMOS2__UNROLL for (r = 0; r < R; r++) {
            const int64_t m = m0 + r;
            const int8_t *a = A->q + (m * nb + b) * KOSMOS2__QK;
            const int32_t *ns = A->ns + (m * nb + b) * 8;
            const __m512 dx = _mm512_loadu_ps(A->d + (m * nbp + j) * 16);
            __m512i av, init;
            if (two) {
                av = _mm512_loadu_si512((const void *)a);
                init = _mm512_loadu_si512((const void *)ns);
            } else {
                av = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_loadu_si256((const __m256i *)a), 0);
                init = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_loadu_si256((const __m256i *)ns), 0);
            }
            init = _mm512_slli_epi32(init, (unsigned)sh);
            KOSMOS2__UNROLL for (c = 0; c < C; c++) {
                __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, wu[c], av));
                acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(dx, dw[c]), p, acc[r][c]);
            }
        }
    }
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++)
        y[r * ldy + c] = kosmos2__fold16_avx512(acc[r][c]) + (bias ? bias[c] : 0.0f);
}
static KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_full(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                          const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 4, 4);
    else kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 4, 4);
}
static KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_row(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                         const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 1, 4);
    else kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 1, 4);
}
static KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_one(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                         const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 1, 1);
    else kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 1, 1);
}
#endif /* KOSMOS2__X86 */

/* ----------------------------------------------------------------------- kernel tables ---- */
static const kosmos2__kernel_set kosmos2__kernels_scalar = {
    1, 1, 0, kosmos2__tile_scalar, kosmos2__tile_scalar, kosmos2__tile_scalar, {NULL, NULL, NULL, NULL}, NULL,
    1, 1, kosmos2__qtile_scalar, kosmos2__qtile_scalar, kosmos2__qtile_scalar};
#ifdef KOSMOS2__X86
static const kosmos2__kernel_set kosmos2__kernels_avx2 = {
    2, 3, 512, kosmos2__tile_avx2_full, kosmos2__tile_avx2_row, kosmos2__tile_avx2_one, {NULL, NULL, NULL, NULL},
    kosmos2__widen_avx2,
    2, 2, kosmos2__qtile_avx2_full, kosmos2__qtile_avx2_row, kosmos2__qtile_avx2_one};
static const kosmos2__kernel_set kosmos2__kernels_avx512 = {
    4, 6, 512, kosmos2__tile_avx512_full, kosmos2__tile_avx512_row, kosmos2__tile_avx512_one,
    {NULL, NULL, kosmos2__tile_avx512_2x6, kosmos2__tile_avx512_3x6}, kosmos2__widen_avx512,
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
#ifdef KOSMOS2__X86_DIAG_PUSHED
#pragma GCC diagnostic pop
#endif

/* --------------------------------------------------------------------- product drivers ---- */
/* p rounded up to a multiple of 64 bytes (a cache line: whole-line vector loads); NULL stays NULL */
static void *kosmos2__align64(void *p) {
    return p ? (void *)((char *)p + ((64 - (uintptr_t)p % 64) % 64)) : NULL;
}

/* One panel of c weight rows (type dt, row stride ldw elements) times M activation rows (row
 * stride ldx), kc values of k: R x C tiles, then 1 x C rows, then 1 x 1 for a narrow last panel.
 * part: [M, C, 16] lanes parked between blocks of K (see kosmos2__ftile_fn). */
static void kosmos2__panel_float(const kosmos2__kernel_set *ks, float *y, int64_t ldy, const float *x, int64_t ldx,
                                 int64_t M, const void *w, int64_t ldw, int dt, int64_t c, int64_t kc,
                                 const float *bias, float *part, int flags, const kosmos2__next_block *next) {
    const int64_t es = dt == KOSMOS2__F32 ? 4 : 2, C = ks->C;
    int64_t m = 0, j;
    if (c == C && dt == KOSMOS2__F32)
        for (; m + ks->R <= M; m += ks->R) {
            kosmos2__pf pf, *pfp = NULL;
            if (next && next->rows > 0) { /* slice m / R of M / R of the next block's lines */
                const int64_t per_row = (next->bytes + 63) / 64, lines = per_row * next->rows, T = M / ks->R;
                const int64_t l0 = lines * (m / ks->R) / T, l1 = lines * (m / ks->R + 1) / T;
                pf.base = next->base;
                pf.stride = next->stride;
                pf.per_row = per_row;
                pf.row = l0 / per_row;
                pf.off = l0 - pf.row * per_row;
                pf.n = l1 - l0;
                pfp = &pf;
            }
            ks->full(y + m * ldy, ldy, x + m * ldx, ldx, w, ldw, dt, kc, bias, part ? part + m * C * 16 : NULL, flags, pfp);
        }
    if (c == C && dt == KOSMOS2__F32 && M - m > 1 && M - m < ks->R && ks->fewer[M - m]) { /* the last rows */
        ks->fewer[M - m](y + m * ldy, ldy, x + m * ldx, ldx, w, ldw, dt, kc, bias, part ? part + m * C * 16 : NULL, flags,
                         NULL);
        m = M;
    }
    for (; m < M; m++) {
        if (c == C)
            ks->row(y + m * ldy, ldy, x + m * ldx, ldx, w, ldw, dt, kc, bias, part ? part + m * C * 16 : NULL, flags, NULL);
        else
            for (j = 0; j < c; j++)
                ks->one(y + m * ldy + j, ldy, x + m * ldx, ldx, (const char *)w + j * ldw * es, ldw, dt, kc,
                        bias ? bias + j : NULL, part ? part + (m * C + j) * 16 : NULL, flags, NULL);
    }
}

/* y[M,N] = x[M,K] W^T + bias for F32/F16/BF16 weights (see TILING above). */
static int kosmos2__matmul_float(float *y, const float *x, int64_t M, const kosmos2__mat *W, const float *bias,
                                 int n_threads, const kosmos2__kernel_set *ks) {
    const int64_t N = W->rows, K = W->cols, C = ks->C, np = (N + C - 1) / C;
    const int64_t wbytes = kosmos2__row_bytes(W->dtype, K), es = W->dtype == KOSMOS2__F32 ? 4 : 2;
    /* many rows: copy/widen each panel block of K to a float buffer and tile over rows */
    const int many = M >= ks->R && ks->R > 1;
    const int64_t kb = many ? (K < ks->KB ? K : ks->KB) : K;
    const int64_t ldb = kb + 16; /* buffer row stride: +64 bytes, so rows do not share L1 sets */
    int64_t chunks = (M * K * 4) / (1 << 20) + 1, mc = (M + chunks - 1) / chunks, m0;
    mc = (mc + ks->R - 1) / ks->R * ks->R; /* activation rows per chunk (about 1 MB, stays in L2) */
    (void)n_threads;
    for (m0 = 0; m0 < M; m0 += mc) {
        const int64_t mr = M - m0 < mc ? M - m0 : mc;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && !omp_in_parallel())
#endif
        {
            /* per thread: the panel block [C, ldb] as float32 and the parked lanes [mr, C, 16];
             * without them (few rows, or no memory) the kernels read W directly over all of K */
            void *bufmem = many ? KOSMOS2_MALLOC((size_t)(C * ldb) * 4 + 64) : NULL;
            void *partmem = bufmem && kb < K ? KOSMOS2_MALLOC((size_t)(mr * C) * 64 + 64) : NULL;
            float *buf = (float *)kosmos2__align64(bufmem), *part = (float *)kosmos2__align64(partmem);
            int64_t p;
            if (buf && kb < K && !part) { KOSMOS2_FREE(bufmem); buf = NULL; bufmem = NULL; }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (p = 0; p < np; p++) {
                const int64_t n0 = p * C, c = N - n0 < C ? N - n0 : C;
                const uint8_t *w = (const uint8_t *)W->data + n0 * wbytes;
                float *yp = y + m0 * N + n0;
                const float *xp = x + m0 * K, *bp = bias ? bias + n0 : NULL;
                int64_t k0, j;
                if (!buf) { /* weights as stored, all of K at once */
                    kosmos2__panel_float(ks, yp, N, xp, K, mr, w, K, W->dtype, c, K, bp, NULL, KOSMOS2__T_FINISH, NULL);
                    continue;
                }
                for (k0 = 0; k0 == 0 || k0 < K; k0 += kb) { /* blocks of K, in increasing k */
                    const int64_t kc = K - k0 < kb ? K - k0 : kb;
                    const int flags = (k0 > 0 ? KOSMOS2__T_RESUME : 0) | (k0 + kc >= K ? KOSMOS2__T_FINISH : 0);
                    kosmos2__next_block next; /* k0 + kc in this panel, or the start of the next one */
                    next.stride = wbytes;
                    if (k0 + kc < K) {
                        next.base = w + (k0 + kc) * es;
                        next.rows = c;
                        next.bytes = (K - k0 - kc < kb ? K - k0 - kc : kb) * es;
                    } else {
                        next.base = w + c * wbytes;
                        next.rows = p + 1 < np ? (N - n0 - c < C ? N - n0 - c : C) : 0;
                        next.bytes = kb * es;
                    }
                    for (j = 0; j < c; j++) ks->widen(w + j * wbytes + k0 * es, W->dtype, buf + j * ldb, kc);
                    kosmos2__panel_float(ks, yp, N, xp + k0, K, mr, buf, ldb, KOSMOS2__F32, c, kc, bp, part, flags, &next);
                }
            }
            KOSMOS2_FREE(bufmem);
            KOSMOS2_FREE(partmem);
        }
    }
    return KOSMOS2_OK;
}

/* Quantize activation row x[0..K-1] to q8_0 (the weights' rule) into row m of A. */
static void kosmos2__quantize_act_row(const float *x, kosmos2__qacts *A, int64_t m) {
    uint8_t blk[KOSMOS2__Q8_0_BYTES];
    float *d = A->d + m * A->nbp * 16;             /* [nbp, 16] */
    int8_t *q = A->q + m * A->nb * KOSMOS2__QK;    /* [nb, 32] */
    int32_t *ns = A->ns + m * A->nb * 8;           /* [nb, 8] */
    int64_t b;
    int i, g;
    for (i = 0; i < 16 && A->nbp > 0; i++) d[(A->nbp - 1) * 16 + i] = 0.0f; /* odd nb: no block 2j+1 */
    for (b = 0; b < A->nb; b++) {
        float dv;
        kosmos2__quantize_row_q8_0(x + b * KOSMOS2__QK, blk, KOSMOS2__QK);
        dv = kosmos2__f16_at(blk);
        for (i = 0; i < 8; i++) d[(b >> 1) * 16 + (b & 1) * 8 + i] = dv;
        memcpy(q + b * KOSMOS2__QK, blk + 2, KOSMOS2__QK);
        for (g = 0; g < 8; g++)
            ns[b * 8 + g] = -((int8_t)blk[2 + 4 * g] + (int8_t)blk[3 + 4 * g] + (int8_t)blk[4 + 4 * g] + (int8_t)blk[5 + 4 * g]);
    }
}

/* One panel of c quantized weight rows times M quantized activation rows. */
static void kosmos2__panel_q(const kosmos2__kernel_set *ks, float *y, int64_t ldy, const kosmos2__qacts *A, int64_t M,
                             const uint8_t *w, int64_t wstride, int dt, int64_t c, const float *bias, int64_t pf) {
    int64_t m = 0, j;
    if (c == ks->QC)
        for (; m + ks->QR <= M; m += ks->QR, pf = 0) ks->qfull(y + m * ldy, ldy, A, m, w, wstride, dt, bias, pf);
    for (; m < M; m++, pf = 0) { /* (the first pass over the panel prefetches the next one) */
        if (c == ks->QC) ks->qrow(y + m * ldy, ldy, A, m, w, wstride, dt, bias, pf);
        else
            for (j = 0; j < c; j++)
                ks->qone(y + m * ldy + j, ldy, A, m, w + j * wstride, wstride, dt, bias ? bias + j : NULL, 0);
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
    A.nb = nb;
    A.nbp = (nb + 1) / 2;
    mem = kosmos2__alloc((size_t)(M * A.nbp) * 64 + (size_t)(M * nb) * (32 + KOSMOS2__QK));
    if (!mem) return KOSMOS2_E_NOMEM;
    A.d = (float *)mem;
    A.ns = (int32_t *)(A.d + M * A.nbp * 16);
    A.q = (int8_t *)(A.ns + M * nb * 8);
    (void)n_threads;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && !omp_in_parallel())
#endif
    {
        int64_t m, p;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (m = 0; m < M; m++) kosmos2__quantize_act_row(x + m * K, &A, m);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (p = 0; p < np; p++) {
            const int64_t n0 = p * C, c = N - n0 < C ? N - n0 : C;
            kosmos2__panel_q(ks, y + n0, N, &A, M, (const uint8_t *)W->data + n0 * wbytes, wbytes, W->dtype, c,
                             bias ? bias + n0 : NULL, p + 1 < np ? C * wbytes : 0);
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
