/* tests for the kernels section ([6] in kosmos2.h).
 * - float16 / bfloat16 conversion and q8_0 / q4_0 (de)quantization against hand-checked values;
 * - kosmos2__matmul in every ISA path the CPU has (scalar, avx2, avxvnni, avx512) x every dtype x odd
 *   sizes, against a float64 reference with a rigorous error bound for the canonical sum order,
 *   and bit for bit against the scalar path (the paths implement the same canonical sum);
 * - results independent of the thread count, and a row of an M-row product equal to the
 *   one-row product (decode == prefill). */

/* ---- helpers ---- */
static uint32_t tk__rng = 12345u;
static float tk__rand(void) { /* uniform in [-1, 1) */
    tk__rng ^= tk__rng << 13;
    tk__rng ^= tk__rng >> 17;
    tk__rng ^= tk__rng << 5;
    return (float)(tk__rng >> 8) / 8388608.0f - 1.0f;
}
static uint16_t tk__bf16_of(float f) { /* truncation is fine: any bf16 pattern is a valid weight */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}
static float tk__bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Weights [N, K] of type dt made from random floats (q types: quantized by the format rules). */
static void *tk__make_weights(int dt, int64_t N, int64_t K, float scale) {
    int64_t rb = kosmos2__row_bytes((kosmos2__dtype)dt, K), n, k;
    uint8_t *w = (uint8_t *)malloc((size_t)(N * rb) + 1);
    float *row = (float *)malloc((size_t)K * 4 + 4);
    for (n = 0; n < N; n++) {
        uint8_t *o = w + n * rb;
        for (k = 0; k < K; k++) row[k] = scale * tk__rand();
        if (dt == KOSMOS2__F32) memcpy(o, row, (size_t)K * 4);
        for (k = 0; k < K && dt == KOSMOS2__F16; k++) { uint16_t h = kosmos2__f32_to_f16(row[k]); memcpy(o + 2 * k, &h, 2); }
        for (k = 0; k < K && dt == KOSMOS2__BF16; k++) { uint16_t h = tk__bf16_of(row[k]); memcpy(o + 2 * k, &h, 2); }
        if (dt == KOSMOS2__Q8_0 || dt == KOSMOS2__Q8_0R8) kosmos2__quantize_row_q8_0(row, o, K);
        if (dt == KOSMOS2__Q4_0 || dt == KOSMOS2__Q4_0R8) kosmos2__quantize_row_q4_0(row, o, K);
    }
    free(row);
    if (kosmos2__is_r8(dt)) { /* the rows interleaved, as in files and at load */
        uint8_t *r8 = (uint8_t *)malloc((size_t)(N * rb) + 1);
        kosmos2__repack_r8(w, r8, N, K, 0, N / 8, 1, dt == KOSMOS2__Q8_0R8);
        free(w);
        w = r8;
    }
    return w;
}

/* float64 reference of y = x W^T + bias and a bound on the float32 error of the canonical sum.
 * Float types: W widened exactly; lane sums of ceil(K/16) fmas + 4 folds + bias: each rounding
 * contributes at most u = 2^-24 of the sum of magnitudes. Q types: x quantized to q8_0 with the
 * format function, block sums exact in integers; (nb/2 + 6) roundings. */
static void tk__reference(const float *x, int64_t M, const kosmos2__mat *W, const float *bias, double *ref, double *bound) {
    int64_t N = W->rows, K = W->cols, m, n, k;
    float *wrow = (float *)malloc((size_t)K * 4 + 4);
    int q = kosmos2__is_q(W->dtype);
    int64_t nb = K / 32;
    uint8_t *xq = (uint8_t *)malloc((size_t)(M * nb * 34) + 1);
    double rounds = q ? (double)((nb + 1) / 2 + 6) : (double)((K + 15) / 16 + 6);
    if (q)
        for (m = 0; m < M; m++) kosmos2__quantize_row_q8_0(x + m * K, xq + m * nb * 34, K);
    for (n = 0; n < N; n++) {
        const uint8_t *wb = (const uint8_t *)W->data + n * kosmos2__row_bytes(W->dtype, K);
        kosmos2__mat_row_f32(W, n, wrow);
        for (m = 0; m < M; m++) {
            double s = 0, a = 0, bv = bias ? bias[n] : 0.0;
            if (!q) {
                for (k = 0; k < K; k++) { s += (double)x[m * K + k] * wrow[k]; a += fabs((double)x[m * K + k] * wrow[k]); }
            } else {
                int64_t b;
                int i;
                for (b = 0; b < nb; b++) {
                    const uint8_t *xb = xq + (m * nb + b) * 34;
                    const int q8 = W->dtype == KOSMOS2__Q8_0 || W->dtype == KOSMOS2__Q8_0R8;
                    const uint8_t *wq = wb + b * (q8 ? 34 : 18);
                    uint8_t r8blk[34];
                    if (kosmos2__is_r8(W->dtype)) { kosmos2__r8_block((const uint8_t *)W->data, N, nb, n, b, q8, r8blk); wq = r8blk; }
                    double d = (double)kosmos2__f16_at(xb) * kosmos2__f16_at(wq);
                    long isum = 0, iabs = 0;
                    for (i = 0; i < 32; i++) {
                        int wi = q8 ? (int8_t)wq[2 + i]
                                                            : (i < 16 ? (wq[2 + i] & 15) : (wq[2 + i - 16] >> 4)) - 8;
                        isum += (long)wi * (int8_t)xb[2 + i];
                        iabs += labs((long)wi * (int8_t)xb[2 + i]);
                    }
                    s += d * (double)isum;
                    a += fabs(d) * (double)iabs;
                }
            }
            ref[m * N + n] = s + bv;
            bound[m * N + n] = rounds * ldexp(1.0, -24) * (a + fabs(bv)) * 1.0001 + 1e-30;
        }
    }
    free(wrow);
    free(xq);
}

/* ---- conversions ---- */
static void test_kernels_f16_bf16(void) {
    static const struct { float f; uint16_t h; } cases[] = {
        {1.0f, 0x3c00}, {-2.0f, 0xc000}, {65504.0f, 0x7bff}, {65520.0f, 0x7c00}, {1e6f, 0x7c00},
        {0.1f, 0x2e66},                 /* 0.0999755859375 */
        {5.9604644775390625e-8f, 0x0001}, /* 2^-24, the smallest subnormal */
        {2.98023223876953125e-8f, 0x0000}, /* 2^-25: a tie, to even (0) */
        {8.94069671630859375e-8f, 0x0002}, /* 1.5 * 2^-24: a tie, to even (2) */
        {6.103515625e-5f, 0x0400},        /* 2^-14, the smallest normal */
        {1.00048828125f, 0x3c00},         /* 1 + 2^-11: a tie, to even */
        {1.00146484375f, 0x3c02},         /* 1 + 3*2^-11: a tie, to even (up) */
        {0.0f, 0x0000}, {-0.0f, 0x8000}};
    unsigned i;
    uint32_t h;
    int bad = 0;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(kosmos2__f32_to_f16(cases[i].f) == cases[i].h, "f32_to_f16(%.9g) = 0x%04x, want 0x%04x", cases[i].f,
              kosmos2__f32_to_f16(cases[i].f), cases[i].h);
    CHECK(kosmos2__f16_to_f32(0x3c00) == 1.0f && kosmos2__f16_to_f32(0x0001) == ldexpf(1.0f, -24) &&
              kosmos2__f16_to_f32(0x7bff) == 65504.0f && kosmos2__f16_to_f32(0xc000) == -2.0f &&
              isinf(kosmos2__f16_to_f32(0x7c00)) && isnan(kosmos2__f16_to_f32(0x7e00)),
          "f16_to_f32 hand values");
    CHECK(kosmos2__bf16_to_f32(0x3f80) == 1.0f && kosmos2__bf16_to_f32(0xc0a0) == -5.0f, "bf16_to_f32 hand values");
    CHECK(isnan(kosmos2__f16_to_f32(kosmos2__f32_to_f16(tk__bits(0x7fc00000u)))), "NaN stays NaN");
    /* every finite float16 survives f16 -> f32 -> f16 */
    for (h = 0; h < 65536; h++)
        if ((h & 0x7c00) != 0x7c00 && kosmos2__f32_to_f16(kosmos2__f16_to_f32((uint16_t)h)) != h) bad++;
    CHECK(bad == 0, "%d float16 values do not round-trip", bad);
}

/* ---- q8_0 / q4_0 formats ---- */
static void test_kernels_quantize_q8_0(void) {
    float x[96], y[96];
    uint8_t b[3 * 34];
    int i;
    memset(x, 0, sizeof x);
    /* block 0: max|x| = 127 -> d = 1: q = round half away from zero */
    x[0] = 127; x[1] = -127; x[2] = 63.5f; x[3] = -63.5f; x[4] = 0.49f; x[5] = 2.5f; x[6] = -2.5f; x[7] = -0.5f;
    /* block 1: all zero -> d = 0, q = 0.  block 2: max|x| = 254 -> d = 2 */
    x[64] = 254; x[65] = 3; x[66] = -5; x[67] = 1;
    kosmos2__quantize_row_q8_0(x, b, 96);
    CHECK(b[0] == 0x00 && b[1] == 0x3c, "block 0 d = 0x%02x%02x, want 0x3c00 (1.0)", b[1], b[0]);
    CHECK((int8_t)b[2] == 127 && (int8_t)b[3] == -127 && (int8_t)b[4] == 64 && (int8_t)b[5] == -64 && (int8_t)b[6] == 0 &&
              (int8_t)b[7] == 3 && (int8_t)b[8] == -3 && (int8_t)b[9] == -1,
          "block 0 q = %d %d %d %d %d %d %d %d", (int8_t)b[2], (int8_t)b[3], (int8_t)b[4], (int8_t)b[5], (int8_t)b[6],
          (int8_t)b[7], (int8_t)b[8], (int8_t)b[9]);
    for (i = 0; i < 34; i++) CHECK(b[34 + i] == 0, "zero block byte %d = %d", i, b[34 + i]);
    CHECK(b[68] == 0x00 && b[69] == 0x40, "block 2 d = 0x%02x%02x, want 0x4000 (2.0)", b[69], b[68]);
    CHECK((int8_t)b[70] == 127 && (int8_t)b[71] == 2 && (int8_t)b[72] == -3 && (int8_t)b[73] == 1,
          "block 2 q = %d %d %d %d (want 127 2 -3 1)", (int8_t)b[70], (int8_t)b[71], (int8_t)b[72], (int8_t)b[73]);
    kosmos2__dequantize_row_q8_0(b, y, 96);
    CHECK(y[0] == 127 && y[2] == 64 && y[3] == -64 && y[4] == 0 && y[40] == 0 && y[64] == 254 && y[65] == 4 && y[66] == -6,
          "dequantized %g %g %g %g %g %g %g", y[0], y[2], y[3], y[4], y[64], y[65], y[66]);
}

/* The machine probes of `kosmos2 bench`: positive float and int8 rates on one thread for every
 * path (the memory probe needs 1 GiB: exercised by make bench only), and the kernels' name. */
static void test_kernels_probes(void) {
    int isa, best = kosmos2__kernels_set_isa(-1);
    for (isa = KOSMOS2__ISA_SCALAR; isa <= best; isa++) {
        double f;
        const int got = kosmos2__kernels_set_isa(isa); /* (lower when the CPU lacks isa: AVX-512 without AVX-VNNI) */
        CHECK(got <= isa, "asked for %s, got %s", kosmos2__isa_name(isa), kosmos2__isa_name(got));
        f = kosmos2_bench_fma_peak(1);
        CHECK(f > 1e8 && f < 1e13, "%s: FMA peak %.3g flop/s", kosmos2__isa_name(isa), f);
        f = kosmos2_bench_int8_peak(1);
        CHECK(f > 1e8 && f < 1e14, "%s: int8 peak %.3g op/s", kosmos2__isa_name(isa), f);
        CHECK(!strcmp(kosmos2_kernels_name(), kosmos2__isa_name(got)), "kernels name %s, want %s", kosmos2_kernels_name(), kosmos2__isa_name(got));
    }
    kosmos2__kernels_set_isa(-1);
}

static void test_kernels_quantize_q4_0(void) {
    float x[64], y[64];
    uint8_t b[2 * 18];
    memset(x, 0, sizeof x);
    /* block 0: the largest magnitude is -8 -> d = 1, q = min(15, trunc(x + 8.5)) */
    x[0] = -8; x[1] = 7; x[2] = 7.4f; x[3] = -0.6f; x[4] = 0.49f; x[5] = 0.5f; x[16] = -0.5f; x[17] = 3;
    /* block 1: the largest magnitude is +16 -> d = -2, q = min(15, trunc(x / -2 + 8.5)) */
    x[32] = 16; x[33] = -14; x[34] = -16; x[35] = 2; x[48] = 1;
    kosmos2__quantize_row_q4_0(x, b, 64);
    CHECK(b[0] == 0x00 && b[1] == 0x3c, "block 0 d = 0x%02x%02x, want 0x3c00", b[1], b[0]);
    /* byte i = q[i] | q[i+16] << 4: q[0]=0 q[16]=8 -> 0x80; q[1]=15 q[17]=11 -> 0xbf; q[2]=15 q[18]=8 -> 0x8f;
     * q[3]=7 -> 0x87; q[4]=8 -> 0x88; q[5]=9 -> 0x89 */
    CHECK(b[2] == 0x80 && b[3] == 0xbf && b[4] == 0x8f && b[5] == 0x87 && b[6] == 0x88 && b[7] == 0x89,
          "block 0 bytes %02x %02x %02x %02x %02x %02x", b[2], b[3], b[4], b[5], b[6], b[7]);
    CHECK(b[18] == 0x00 && b[19] == 0xc0, "block 1 d = 0x%02x%02x, want 0xc000 (-2)", b[19], b[18]);
    /* q[0]=0 (16) q[16]=8 (1/-2+8.5 = 8) -> 0x80; q[1]=15 -> 0x8f; q[2]: 16.5 -> 15 -> 0x8f; q[3]=7 -> 0x87 */
    CHECK(b[20] == 0x80 && b[21] == 0x8f && b[22] == 0x8f && b[23] == 0x87, "block 1 bytes %02x %02x %02x %02x", b[20],
          b[21], b[22], b[23]);
    kosmos2__dequantize_row_q4_0(b, y, 64);
    CHECK(y[0] == -8 && y[1] == 7 && y[2] == 7 && y[3] == -1 && y[16] == 0 && y[17] == 3 && y[32] == 16 && y[33] == -14 &&
              y[34] == -14 && y[35] == 2 && y[48] == 0,
          "dequantized %g %g %g %g %g %g | %g %g %g %g %g", y[0], y[1], y[2], y[3], y[16], y[17], y[32], y[33], y[34],
          y[35], y[48]);
}

static void test_kernels_mat_row(void) {
    int dt;
    for (dt = 0; dt < 5; dt++) {
        int64_t K = 64, k;
        void *w = tk__make_weights(dt, 3, K, 2.0f);
        kosmos2__mat W;
        float row[64], ref[64];
        W.data = w; W.dtype = (kosmos2__dtype)dt; W.rows = 3; W.cols = K;
        kosmos2__mat_row_f32(&W, 2, row);
        for (k = 0; k < K; k++) {
            const uint8_t *p = (const uint8_t *)w + 2 * kosmos2__row_bytes(W.dtype, K);
            uint16_t h;
            if (dt == KOSMOS2__F32) memcpy(&ref[k], p + 4 * k, 4);
            if (dt == KOSMOS2__F16 || dt == KOSMOS2__BF16) {
                memcpy(&h, p + 2 * k, 2);
                ref[k] = dt == KOSMOS2__F16 ? kosmos2__f16_to_f32(h) : kosmos2__bf16_to_f32(h);
            }
        }
        if (dt == KOSMOS2__Q8_0) kosmos2__dequantize_row_q8_0((const uint8_t *)w + 2 * 68, ref, K);
        if (dt == KOSMOS2__Q4_0) kosmos2__dequantize_row_q4_0((const uint8_t *)w + 2 * 36, ref, K);
        CHECK(memcmp(row, ref, sizeof row) == 0, "mat_row_f32 %s", kosmos2__dtype_name(W.dtype));
        free(w);
    }
}

/* q4_0r8 (q4_0 repacked 8 rows at a time, as at load): every row of 19 (2 groups and 3 plain
 * rows) reads back as the q4_0 row it came from; the layout of one unit by hand. */
static void test_kernels_repack_q4_0r8(void) {
    const int64_t N = 19, K = 96, nb = 3;
    uint8_t *q = (uint8_t *)tk__make_weights(KOSMOS2__Q4_0, N, K, 1.0f), *r8 = (uint8_t *)malloc((size_t)(N * nb * 18));
    kosmos2__mat A, B;
    float ra[96], rb[96];
    int64_t n;
    int bad = 0;
    kosmos2__repack_r8(q, r8, N, K, 0, 1, 0, 0); /* in two calls, as the loader's threads */
    kosmos2__repack_r8(q, r8, N, K, 1, 2, 1, 0);
    A.data = q; A.dtype = KOSMOS2__Q4_0; B.data = r8; B.dtype = KOSMOS2__Q4_0R8;
    A.rows = B.rows = N; A.cols = B.cols = K;
    for (n = 0; n < N; n++) {
        kosmos2__mat_row_f32(&A, n, ra);
        kosmos2__mat_row_f32(&B, n, rb);
        bad += memcmp(ra, rb, sizeof ra) != 0;
    }
    CHECK(bad == 0, "%d rows differ after repacking", bad);
    /* group 1, block 2 (unit 5): row 8 + 3's scale at 2 * 3, its qs bytes 4..7 in chunk 1 at 16 + 32 + 12 */
    CHECK(memcmp(r8 + 5 * 144 + 6, q + 11 * nb * 18 + 2 * 18, 2) == 0 && memcmp(r8 + 5 * 144 + 16 + 32 + 12, q + 11 * nb * 18 + 2 * 18 + 2 + 4, 4) == 0,
          "unit layout");
    CHECK(memcmp(r8 + 2 * nb * 144, q + 16 * nb * 18, (size_t)(3 * nb * 18)) == 0, "the last N %% 8 rows stay plain q4_0 rows");
    free(q); free(r8);
    /* q8_0r8: 272-byte units, 8 chunks */
    q = (uint8_t *)tk__make_weights(KOSMOS2__Q8_0, N, K, 1.0f);
    r8 = (uint8_t *)malloc((size_t)(N * nb * 34));
    kosmos2__repack_r8(q, r8, N, K, 0, 2, 1, 1);
    A.data = q; A.dtype = KOSMOS2__Q8_0; B.data = r8; B.dtype = KOSMOS2__Q8_0R8;
    for (bad = 0, n = 0; n < N; n++) {
        kosmos2__mat_row_f32(&A, n, ra);
        kosmos2__mat_row_f32(&B, n, rb);
        bad += memcmp(ra, rb, sizeof ra) != 0;
    }
    CHECK(bad == 0, "q8_0r8: %d rows differ after repacking", bad);
    /* group 1, block 2 (unit 5): row 11's scale at 2 * 3, its qs bytes 28..31 in chunk 7 at 16 + 7 * 32 + 12 */
    CHECK(memcmp(r8 + 5 * 272 + 6, q + 11 * nb * 34 + 2 * 34, 2) == 0 && memcmp(r8 + 5 * 272 + 16 + 7 * 32 + 12, q + 11 * nb * 34 + 2 * 34 + 2 + 28, 4) == 0,
          "q8_0r8 unit layout");
    CHECK(memcmp(r8 + 2 * nb * 272, q + 16 * nb * 34, (size_t)(3 * nb * 34)) == 0, "q8_0r8: the last N %% 8 rows stay plain rows");
    free(q); free(r8);
}

/* ---- matrix products ---- */
/* Every ISA the CPU has: y against the float64 reference (bound) and == the scalar path. */
static void test_kernels_matmul_paths(void) {
    static const int64_t Ms[] = {1, 2, 3, 4, 6, 7, 33}, Ns[] = {1, 5, 6, 17, 65};
    static const int64_t Kf[] = {1, 3, 15, 16, 17, 31, 32, 33, 100, 257}, Kq[] = {32, 64, 96, 256, 288};
    int isa, dt, best = kosmos2__kernels_set_isa(-1), checked = 0, bad_ref = 0, bad_eq = 0;
    unsigned mi, ni, ki;
    printf("    kernels: paths exercised:");
    for (isa = 0; isa <= best; isa++)
        if (kosmos2__kernels_set_isa(isa) == isa) printf(" %s", kosmos2__isa_name(isa));
    printf(" (not in this build or CPU:");
    for (isa = 0; isa <= KOSMOS2__ISA_AVX512; isa++)
        if (kosmos2__kernels_set_isa(isa) != isa) printf(" %s", kosmos2__isa_name(isa));
    kosmos2__kernels_set_isa(-1);
    printf(")\n");
    for (dt = 0; dt < 7; dt++) {
        int q = dt >= KOSMOS2__Q8_0;
        unsigned nk = q ? sizeof Kq / sizeof Kq[0] : sizeof Kf / sizeof Kf[0];
        for (ki = 0; ki < nk; ki++)
            for (ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++)
                for (mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++) {
                    int64_t M = Ms[mi], N = Ns[ni], K = q ? Kq[ki] : Kf[ki], i;
                    void *w = tk__make_weights(dt, N, K, 1.5f);
                    float *x = (float *)malloc((size_t)(M * K) * 4), *bias = (float *)malloc((size_t)N * 4);
                    float *y0 = (float *)malloc((size_t)(M * N) * 4), *y = (float *)malloc((size_t)(M * N) * 4);
                    double *ref = (double *)malloc((size_t)(M * N) * 8), *bound = (double *)malloc((size_t)(M * N) * 8);
                    const float *b = (ki + ni) % 2 ? bias : NULL;
                    kosmos2__mat W;
                    W.data = w; W.dtype = (kosmos2__dtype)dt; W.rows = N; W.cols = K;
                    for (i = 0; i < M * K; i++) x[i] = tk__rand() * (i % 7 == 0 ? 10.0f : 1.0f);
                    for (i = 0; i < N; i++) bias[i] = tk__rand();
                    tk__reference(x, M, &W, b, ref, bound);
                    for (isa = 0; isa <= best; isa++) {
                        float *out = isa == 0 ? y0 : y;
                        kosmos2__kernels_set_isa(isa);
                        for (i = 0; i < M * N; i++) out[i] = NAN;
                        CHECK_OK(kosmos2__matmul(out, x, M, &W, b, 1 + (int)(mi % 2)));
                        for (i = 0; i < M * N; i++) {
                            if (!(fabs(out[i] - ref[i]) <= bound[i])) {
                                if (bad_ref++ < 5)
                                    CHECK(0, "%s %s M=%lld N=%lld K=%lld y[%lld] = %.9g, ref %.9g, bound %.3g",
                                          kosmos2__isa_name(isa), kosmos2__dtype_name(W.dtype), (long long)M, (long long)N,
                                          (long long)K, (long long)i, out[i], ref[i], bound[i]);
                            }
                            if (isa > 0 && !(out[i] == y0[i])) {
                                if (bad_eq++ < 5)
                                    CHECK(0, "%s %s M=%lld N=%lld K=%lld y[%lld] = %.9g != scalar %.9g",
                                          kosmos2__isa_name(isa), kosmos2__dtype_name(W.dtype), (long long)M, (long long)N,
                                          (long long)K, (long long)i, out[i], y0[i]);
                            }
                        }
                        checked++;
                    }
                    free(w); free(x); free(bias); free(y0); free(y); free(ref); free(bound);
                }
    }
    kosmos2__kernels_set_isa(-1);
    CHECK(bad_ref == 0 && bad_eq == 0, "%d outputs outside the bound, %d differing from scalar (%d products)", bad_ref,
          bad_eq, checked);
}

/* q8_0 weights with arbitrary bytes (including -128) and the float32 scale extremes of a block;
 * 13 rows: the 4 x 8 tiles, the single rows and the 8-row column tiles. */
static void test_kernels_matmul_q8_raw(void) {
    int64_t M = 13, N = 9, K = 96, i;
    int isa, dt, best = kosmos2__kernels_set_isa(-1);
    uint8_t *w = (uint8_t *)malloc((size_t)(N * K / 32 * 34));
    float x[13 * 96], y0[13 * 9], y[13 * 9];
    double ref[13 * 9], bound[13 * 9];
    kosmos2__mat W;
    for (i = 0; i < N * K / 32 * 34; i++) w[i] = (uint8_t)(tk__rand() * 128 + 128);
    for (i = 0; i < N * K / 32; i++) { uint16_t d = kosmos2__f32_to_f16(0.01f * (1 + tk__rand())); memcpy(w + 34 * i, &d, 2); }
    for (i = 0; i < N * K / 32 * 34; i += 7) w[i] = 0x80; /* -128 all over (scales: overwritten below) */
    for (i = 0; i < N * K / 32; i++) { uint16_t d = kosmos2__f32_to_f16(0.01f * (1 + tk__rand())); memcpy(w + 34 * i, &d, 2); }
    w[2] = 0x80; w[3] = 0x80; /* -128 */
    for (i = 0; i < M * K; i++) x[i] = tk__rand();
    x[5] = -x[6];
    W.data = w; W.dtype = KOSMOS2__Q8_0; W.rows = N; W.cols = K;
    for (dt = 0; dt < 2; dt++) {
        if (dt == 1) { /* the same bytes as q8_0r8: 1 group of 8 rows (-128 in it) and 1 plain row */
            uint8_t *r8 = (uint8_t *)malloc((size_t)(N * K / 32 * 34));
            kosmos2__repack_r8(w, r8, N, K, 0, N / 8, 1, 1);
            free(w);
            W.data = w = r8; W.dtype = KOSMOS2__Q8_0R8;
        }
        tk__reference(x, M, &W, NULL, ref, bound);
        for (isa = 0; isa <= best; isa++) {
            kosmos2__kernels_set_isa(isa);
            CHECK_OK(kosmos2__matmul(isa ? y : y0, x, M, &W, NULL, 1));
            for (i = 0; i < M * N; i++) {
                float v = isa ? y[i] : y0[i];
                CHECK(fabs(v - ref[i]) <= bound[i] && v == y0[i], "%s %s y[%lld] = %.9g ref %.9g scalar %.9g",
                      kosmos2__isa_name(isa), kosmos2__dtype_name(W.dtype), (long long)i, v, ref[i], y0[i]);
            }
        }
    }
    kosmos2__kernels_set_isa(-1);
    free(w);
}

/* q4_0r8 at the int16 limits of the AVX2 tiles: nibbles all 15 or all 0 (weights 7 and -8)
 * against activations quantized to +-127 (each 16-value int16 sum reaches 8 * 2 * 15 * 127 =
 * 30480 before the -8 correction), in every path, 11 rows (4 x 8 tiles, single rows and the
 * 8-row column tiles): within the bound of the float64 reference and == the scalar path. */
static void test_kernels_matmul_q4_extremes(void) {
    const int64_t M = 11, N = 19, K = 96, nb = K / 32;
    int64_t i, m, n;
    int isa, best = kosmos2__kernels_set_isa(-1), bad = 0;
    uint8_t *q = (uint8_t *)malloc((size_t)(N * nb * 18)), *r8 = (uint8_t *)malloc((size_t)(N * nb * 18));
    float x[11 * 96], y0[11 * 19], y[11 * 19];
    double ref[11 * 19], bound[11 * 19];
    kosmos2__mat W;
    for (n = 0; n < N; n++)
        for (i = 0; i < nb; i++) {
            uint8_t *blk = q + (n * nb + i) * 18;
            uint16_t d = kosmos2__f32_to_f16(n % 3 == 2 ? 0.5f : 0.01f * (float)(n + 1));
            memcpy(blk, &d, 2);
            memset(blk + 2, n % 3 == 0 ? 0xff : n % 3 == 1 ? 0x00 : (int)(0x0f + 16 * (i % 2)), 16);
        }
    for (m = 0; m < M; m++)
        for (i = 0; i < K; i++) x[m * K + i] = m % 3 == 0 ? 2.0f : m % 3 == 1 ? -3.0f : (i % 2 ? 1.5f : -1.5f);
    kosmos2__repack_r8(q, r8, N, K, 0, N / 8, 1, 0);
    W.data = r8; W.dtype = KOSMOS2__Q4_0R8; W.rows = N; W.cols = K;
    tk__reference(x, M, &W, NULL, ref, bound);
    for (isa = 0; isa <= best; isa++) {
        float *out = isa ? y : y0;
        kosmos2__kernels_set_isa(isa);
        CHECK_OK(kosmos2__matmul(out, x, M, &W, NULL, 1 + isa % 2));
        for (i = 0; i < M * N; i++)
            if (!(fabs(out[i] - ref[i]) <= bound[i]) || !(out[i] == y0[i])) {
                if (bad++ < 5)
                    CHECK(0, "%s y[%lld] = %.9g, ref %.9g (bound %.3g), scalar %.9g", kosmos2__isa_name(isa), (long long)i,
                          out[i], ref[i], bound[i], y0[i]);
            }
    }
    CHECK(fabs(ref[0] - 7.0 * 0.01 * 127 * K * (2.0 / 127)) < 1e-3 * fabs(ref[0]), "ref[0] = %.9g: the extreme case was not built", ref[0]);
    kosmos2__kernels_set_isa(-1);
    CHECK(bad == 0, "%d outputs wrong", bad);
    free(q); free(r8);
}

/* The r8 column tiles take 8 activation rows per call on AVX2 and 16 on AVX-512 (two groups of
 * the interleaved copy; a last group of up to 8 alone): row counts around those sizes, q4_0r8
 * and q8_0r8 (with -128 and 127 bytes), 1 and 2 threads, every path == the scalar path and
 * within the float64 reference's bound. */
static void test_kernels_r8_cols_rows(void) {
    static const int64_t Ms[] = {8, 9, 15, 16, 17, 24, 31, 40};
    const int64_t N = 24, K = 160;
    int isa, di, best = kosmos2__kernels_set_isa(-1), bad = 0, runs = 0;
    unsigned mi;
    for (di = 0; di < 2; di++) {
        const int dt = di ? KOSMOS2__Q8_0R8 : KOSMOS2__Q4_0R8;
        uint8_t *w = (uint8_t *)tk__make_weights(dt, N, K, 1.0f);
        kosmos2__mat W;
        if (dt == KOSMOS2__Q8_0R8) { /* the byte extremes in group 1's values (units: 16 bytes of scales, 256 of values) */
            uint8_t *g1 = w + (K / 32) * KOSMOS2__R8_UNIT(1);
            int64_t b;
            for (b = 0; b < K / 32; b++) { g1[b * KOSMOS2__R8_UNIT(1) + 16 + 5] = 0x80; g1[b * KOSMOS2__R8_UNIT(1) + 16 + 77] = 0x7f; }
        }
        W.data = w; W.dtype = (kosmos2__dtype)dt; W.rows = N; W.cols = K;
        for (mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++) {
            const int64_t M = Ms[mi];
            float *x = (float *)malloc((size_t)(M * K) * 4), *y0 = (float *)malloc((size_t)(M * N) * 4);
            float *y = (float *)malloc((size_t)(M * N) * 4);
            double *ref = (double *)malloc((size_t)(M * N) * 8), *bound = (double *)malloc((size_t)(M * N) * 8);
            int64_t i;
            for (i = 0; i < M * K; i++) x[i] = tk__rand() * (i % 11 == 0 ? 8.0f : 1.0f);
            tk__reference(x, M, &W, NULL, ref, bound);
            kosmos2__kernels_set_isa(KOSMOS2__ISA_SCALAR);
            CHECK_OK(kosmos2__matmul(y0, x, M, &W, NULL, 1));
            for (isa = 0; isa <= best; isa++) {
                int nt;
                kosmos2__kernels_set_isa(isa);
                for (nt = 1; nt <= 2; nt++) {
                    for (i = 0; i < M * N; i++) y[i] = NAN;
                    CHECK_OK(kosmos2__matmul(y, x, M, &W, NULL, nt));
                    runs++;
                    for (i = 0; i < M * N; i++)
                        if (!(y[i] == y0[i]) || !(fabs(y[i] - ref[i]) <= bound[i])) {
                            if (bad++ < 5)
                                CHECK(0, "%s %s M=%lld, %d threads: y[%lld] = %.9g, scalar %.9g, ref %.9g", kosmos2__isa_name(isa),
                                      kosmos2__dtype_name(W.dtype), (long long)M, nt, (long long)i, y[i], y0[i], ref[i]);
                        }
                }
            }
            free(x); free(y0); free(y); free(ref); free(bound);
        }
        free(w);
    }
    kosmos2__kernels_set_isa(-1);
    printf("    %d r8 products against the scalar path\n", runs);
    CHECK(bad == 0, "%d outputs wrong", bad);
}

/* Attention scores from transposed keys (qkt, where a kernel set has it) == the scalar product
 * of Q and the keys as rows (kosmos2__matmul, the canonical sum), bit for bit: head widths 16 ..
 * 80 (64 has its own unrolled body), 1 and 11 queries, 16 and 48 keys. */
static void test_kernels_qkt(void) {
    static const int64_t hds[] = {16, 32, 64, 80}, Ts[] = {1, 11}, Ss[] = {16, 48};
    int isa, best = kosmos2__kernels_set_isa(-1), bad = 0, runs = 0;
    unsigned a, b, c;
    for (a = 0; a < 4; a++)
        for (b = 0; b < 2; b++)
            for (c = 0; c < 2; c++) {
                const int64_t hd = hds[a], T = Ts[b], S = Ss[c];
                float *q = (float *)malloc((size_t)(T * hd) * 4), *k = (float *)malloc((size_t)(S * hd) * 4);
                float *kt = (float *)malloc((size_t)(S * hd) * 4), *p0 = (float *)malloc((size_t)(T * S) * 4);
                float *p = (float *)malloc((size_t)(T * S) * 4);
                kosmos2__mat K;
                int64_t i, d, s;
                for (i = 0; i < T * hd; i++) q[i] = tk__rand() * (i % 5 == 0 ? 30.0f : 1.0f);
                for (i = 0; i < S * hd; i++) k[i] = tk__rand();
                k[3] = -q[3] * 0.0f; /* a -0 product among them */
                for (s = 0; s < S; s++)
                    for (d = 0; d < hd; d++) kt[(s / 16 * hd + d) * 16 + s % 16] = k[s * hd + d];
                K.data = k; K.dtype = KOSMOS2__F32; K.rows = S; K.cols = hd;
                kosmos2__kernels_set_isa(0);
                CHECK_OK(kosmos2__matmul(p0, q, T, &K, NULL, 1));
                for (isa = 1; isa <= best; isa++) {
                    kosmos2__kernels_set_isa(isa);
                    if (!kosmos2__kernel_table()->qkt) continue;
                    for (i = 0; i < T * S; i++) p[i] = NAN;
                    kosmos2__kernel_table()->qkt(p, S, q, T, kt, S, hd);
                    for (i = 0; i < T * S; i++)
                        if (memcmp(&p[i], &p0[i], 4) != 0 && bad++ < 5)
                            CHECK(0, "%s hd=%lld T=%lld S=%lld p[%lld] = %.9g, scalar %.9g", kosmos2__isa_name(isa), (long long)hd,
                                  (long long)T, (long long)S, (long long)i, p[i], p0[i]);
                    runs++;
                }
                free(q); free(k); free(kt); free(p0); free(p);
            }
    kosmos2__kernels_set_isa(-1);
    CHECK(bad == 0, "%d scores differ from the scalar product", bad);
    printf("    %d qkt runs against the scalar product\n", runs);
}

/* The attention softmax (kosmos2__softmax_row) in every path == the scalar path, bit for bit:
 * 40 rows of each length around the 8-lane blocks, large and tiny scores, -inf among them. */
static void test_kernels_softmax_paths(void) {
    static const int64_t ns[] = {1, 3, 8, 9, 15, 257, 272};
    int isa, best = kosmos2__kernels_set_isa(-1), bad = 0;
    unsigned a;
    for (a = 0; a < 40 * sizeof ns / sizeof ns[0]; a++) { /* 40 rows of each length */
        const int64_t n = ns[a % (sizeof ns / sizeof ns[0])];
        float *x = (float *)malloc((size_t)n * 4), *p0 = (float *)malloc((size_t)n * 4), *p = (float *)malloc((size_t)n * 4);
        int64_t i;
        for (i = 0; i < n; i++) x[i] = tk__rand() * (i % 3 == 0 ? 40.0f : 2.0f);
        if (n > 4) x[n / 2] = -INFINITY;
        memcpy(p0, x, (size_t)n * 4);
        kosmos2__kernels_set_isa(0);
        kosmos2__softmax_row(p0, n);
        for (isa = 1; isa <= best; isa++) {
            kosmos2__kernels_set_isa(isa);
            memcpy(p, x, (size_t)n * 4);
            kosmos2__softmax_row(p, n);
            if (memcmp(p, p0, (size_t)n * 4) != 0 && bad++ < 5) CHECK(0, "%s: softmax of %lld values differs", kosmos2__isa_name(isa), (long long)n);
        }
        free(x); free(p0); free(p);
    }
    kosmos2__kernels_set_isa(-1);
    CHECK(bad == 0, "%d softmax rows differ from the scalar path", bad);
}

/* 1 thread vs 2 threads, and each row of an M-row product vs the one-row product: bit-identical. */
static void test_kernels_matmul_threads_and_rows(void) {
    int64_t M = 33, N = 65, K = 288, i, m;
    int dt, isa, best = kosmos2__kernels_set_isa(-1);
    float *x = (float *)malloc((size_t)(M * K) * 4), *bias = (float *)malloc((size_t)N * 4);
    float *y1 = (float *)malloc((size_t)(M * N) * 4), *y2 = (float *)malloc((size_t)(M * N) * 4);
    for (i = 0; i < M * K; i++) x[i] = tk__rand();
    for (i = 0; i < N; i++) bias[i] = tk__rand();
    for (isa = 0; isa <= best; isa++) {
        kosmos2__kernels_set_isa(isa);
        for (dt = 0; dt < 7; dt++) {
            void *w = tk__make_weights(dt, N, K, 1.0f);
            kosmos2__mat W;
            int diff = 0, rowdiff = 0;
            W.data = w; W.dtype = (kosmos2__dtype)dt; W.rows = N; W.cols = K;
            CHECK_OK(kosmos2__matmul(y1, x, M, &W, bias, 1));
            CHECK_OK(kosmos2__matmul(y2, x, M, &W, bias, 2));
            for (i = 0; i < M * N; i++) diff += y1[i] != y2[i];
            for (m = 0; m < M; m += 8) {
                CHECK_OK(kosmos2__matmul(y2, x + m * K, 1, &W, bias, 2));
                for (i = 0; i < N; i++) rowdiff += y1[m * N + i] != y2[i];
            }
            CHECK(diff == 0 && rowdiff == 0, "%s %s: %d outputs differ 1 vs 2 threads, %d differ row vs M-row product",
                  kosmos2__isa_name(isa), kosmos2__dtype_name(W.dtype), diff, rowdiff);
            free(w);
        }
    }
    kosmos2__kernels_set_isa(-1);
    free(x); free(bias); free(y1); free(y2);
}

/* The fused product of several matrices sharing x (the decoder's q, k, v: kosmos2__matmul_qn, one
 * activation quantization and one parallel region) == each product alone, bit for bit, in every
 * path, on 1 and 2 threads, for one row (the 1 x 8 decode tiles across matrix boundaries, rows
 * not a multiple of 8) and several rows; mixed types are refused. */
static void test_kernels_matmul_fused(void) {
    static const int64_t Ns[3] = {43, 64, 21}, Ms[3] = {1, 2, 9};
    const int64_t K = 160;
    int dt, isa, best = kosmos2__kernels_set_isa(-1), nt, diff = 0, runs = 0;
    unsigned mi;
    int64_t i, j;
    float *x = (float *)malloc((size_t)(9 * K) * 4), *bias = (float *)malloc(64 * 4);
    for (i = 0; i < 9 * K; i++) x[i] = tk__rand() * (i % 5 == 0 ? 8.0f : 1.0f);
    for (i = 0; i < 64; i++) bias[i] = tk__rand();
    for (dt = KOSMOS2__Q8_0; dt <= KOSMOS2__Q8_0R8; dt++) {
        void *w[3];
        kosmos2__mat W[3];
        const kosmos2__mat *Wp[3];
        const float *bp[3];
        for (j = 0; j < 3; j++) {
            w[j] = tk__make_weights(dt, Ns[j], K, 1.0f);
            W[j].data = w[j]; W[j].dtype = (kosmos2__dtype)dt; W[j].rows = Ns[j]; W[j].cols = K;
            Wp[j] = &W[j];
            bp[j] = j == 1 ? NULL : bias;
        }
        for (isa = 0; isa <= best; isa++) {
            kosmos2__kernels_set_isa(isa);
            for (mi = 0; mi < 3; mi++)
                for (nt = 1; nt <= 2; nt++) {
                    const int64_t M = Ms[mi];
                    float *ya[3], *yb[3];
                    for (j = 0; j < 3; j++) {
                        ya[j] = (float *)malloc((size_t)(M * Ns[j]) * 4);
                        yb[j] = (float *)malloc((size_t)(M * Ns[j]) * 4);
                        for (i = 0; i < M * Ns[j]; i++) ya[j][i] = yb[j][i] = NAN;
                        CHECK_OK(kosmos2__matmul(ya[j], x, M, &W[j], bp[j], nt));
                    }
                    CHECK_OK(kosmos2__matmul_qn(yb, x, M, Wp, bp, 3, nt, kosmos2__kernel_table()));
                    for (j = 0; j < 3; j++) {
                        for (i = 0; i < M * Ns[j]; i++) diff += !(ya[j][i] == yb[j][i]);
                        free(ya[j]); free(yb[j]);
                    }
                    runs++;
                }
        }
        for (j = 0; j < 3; j++) free(w[j]);
    }
    kosmos2__kernels_set_isa(-1);
    CHECK(diff == 0, "%d outputs of the fused product differ from the separate products (%d runs)", diff, runs);
    {   /* one q8_0 and one q4_0 matrix: refused, not mixed up */
        void *a = tk__make_weights(KOSMOS2__Q8_0, 8, 64, 1.0f), *b = tk__make_weights(KOSMOS2__Q4_0, 8, 64, 1.0f);
        kosmos2__mat A, B;
        const kosmos2__mat *Wp[2];
        const float *bp[2] = {NULL, NULL};
        float ya[8], yb[8], *ys[2];
        A.data = a; A.dtype = KOSMOS2__Q8_0; A.rows = 8; A.cols = 64;
        B.data = b; B.dtype = KOSMOS2__Q4_0; B.rows = 8; B.cols = 64;
        Wp[0] = &A; Wp[1] = &B; ys[0] = ya; ys[1] = yb;
        CHECK(kosmos2__matmul_qn(ys, x, 1, Wp, bp, 2, 1, kosmos2__kernel_table()) == KOSMOS2_E_INVALID, "mixed types must be refused");
        CHECK(strstr(kosmos2_last_error(), "fused") != NULL, "error: %s", kosmos2_last_error());
        free(a); free(b);
    }
    free(x); free(bias);
}

/* Long rows (K above the kernels' K block of 512, with a tail) and enough rows for the register
 * tiles and the widened panels, in every path and dtype: == scalar and within the bound. */
static void test_kernels_matmul_long_rows(void) {
    int64_t M = 9, N = 29, K = 1312 + 5, i; /* 41 q blocks + 5: float types use K, q types K - 5; 29 rows: AVX2's */
                                          /* 10 panels of 3 (the last of 2) make two panel groups */
    int dt, isa, best = kosmos2__kernels_set_isa(-1), bad = 0;
    float *x = (float *)malloc((size_t)(M * K) * 4), *bias = (float *)malloc((size_t)N * 4);
    float *y0 = (float *)malloc((size_t)(M * N) * 4), *y = (float *)malloc((size_t)(M * N) * 4);
    double *ref = (double *)malloc((size_t)(M * N) * 8), *bound = (double *)malloc((size_t)(M * N) * 8);
    for (i = 0; i < N; i++) bias[i] = tk__rand();
    for (dt = 0; dt < 7; dt++) {
        int64_t k = dt >= KOSMOS2__Q8_0 ? K - 5 : K;
        void *w = tk__make_weights(dt, N, k, 1.0f);
        kosmos2__mat W;
        W.data = w; W.dtype = (kosmos2__dtype)dt; W.rows = N; W.cols = k;
        for (i = 0; i < M * k; i++) x[i] = tk__rand();
        tk__reference(x, M, &W, bias, ref, bound);
        for (isa = 0; isa <= best; isa++) {
            float *out = isa ? y : y0;
            kosmos2__kernels_set_isa(isa);
            CHECK_OK(kosmos2__matmul(out, x, M, &W, bias, 2));
            for (i = 0; i < M * N; i++)
                if (!(fabs(out[i] - ref[i]) <= bound[i]) || !(out[i] == y0[i])) {
                    if (bad++ < 5)
                        CHECK(0, "%s %s K=%lld y[%lld] = %.9g, ref %.9g (bound %.3g), scalar %.9g", kosmos2__isa_name(isa),
                              kosmos2__dtype_name(W.dtype), (long long)k, (long long)i, out[i], ref[i], bound[i], y0[i]);
                }
        }
        free(w);
    }
    kosmos2__kernels_set_isa(-1);
    free(x); free(bias); free(y0); free(y); free(ref); free(bound);
}

/* Products over several chunks of activation rows (each thread keeps its panels across chunks,
 * with no barrier between them): 1 and 2 threads and the scalar path give the same bits. The
 * row count is taken from the L2 size the kernels use, so that the float and the q4_0r8 /
 * q8_0r8 column-tile drivers both see at least 2 chunks. */
static void test_kernels_matmul_chunks(void) {
    const int64_t K = 2048, N = 40, l2 = kosmos2__l2_bytes();
    const int64_t Mf = 2 * l2 / (1024 * 8) + 3, Mq = 2 * l2 / (K + K / 4) + 9, M = Mf > Mq ? Mf : Mq;
    static const int dts[4] = {KOSMOS2__F32, KOSMOS2__BF16, KOSMOS2__Q8_0R8, KOSMOS2__Q4_0R8};
    int di, isa, best = kosmos2__kernels_set_isa(-1), bad = 0;
    int64_t i;
    float *x = (float *)malloc((size_t)(M * K) * 4), *bias = (float *)malloc((size_t)N * 4);
    float *y0 = (float *)malloc((size_t)(M * N) * 4), *y1 = (float *)malloc((size_t)(M * N) * 4), *y2 = (float *)malloc((size_t)(M * N) * 4);
    for (i = 0; i < M * K; i++) x[i] = tk__rand();
    for (i = 0; i < N; i++) bias[i] = tk__rand();
    printf("    %lld rows (L2 %lld KB)\n", (long long)M, (long long)(l2 / 1024));
    for (di = 0; di < 4; di++) {
        void *w = tk__make_weights(dts[di], N, K, 1.0f);
        kosmos2__mat W;
        W.data = w; W.dtype = (kosmos2__dtype)dts[di]; W.rows = N; W.cols = K;
        kosmos2__kernels_set_isa(KOSMOS2__ISA_SCALAR);
        CHECK_OK(kosmos2__matmul(y0, x, M, &W, bias, 1));
        for (isa = 0; isa <= best; isa++) {
            int d1 = 0, d2 = 0;
            kosmos2__kernels_set_isa(isa);
            CHECK_OK(kosmos2__matmul(y1, x, M, &W, bias, 1));
            CHECK_OK(kosmos2__matmul(y2, x, M, &W, bias, 2));
            for (i = 0; i < M * N; i++) {
                d1 += y1[i] != y0[i];
                d2 += y2[i] != y0[i];
            }
            if ((d1 || d2) && bad++ < 5)
                CHECK(0, "%s %s: %d (1 thread) and %d (2 threads) of %lld outputs differ from the scalar path",
                      kosmos2__isa_name(isa), kosmos2__dtype_name(W.dtype), d1, d2, (long long)(M * N));
            if (dts[di] == KOSMOS2__F32 || dts[di] == KOSMOS2__BF16) {
                /* thread 0 starts 30 ms late: thread 1 takes thread 0's groups of panels in every
                 * chunk (the float driver's work taking), and the bits stay the scalar path's */
                int64_t taken0 = kosmos2__claims_taken;
                int d3 = 0;
                kosmos2__claims_delay = 0.03;
                CHECK_OK(kosmos2__matmul(y2, x, M, &W, bias, 2));
                kosmos2__claims_delay = 0.0;
                for (i = 0; i < M * N; i++) d3 += y2[i] != y0[i];
                CHECK(d3 == 0, "%s %s, thread 0 late: %d of %lld outputs differ from the scalar path", kosmos2__isa_name(isa),
                      kosmos2__dtype_name(W.dtype), d3, (long long)(M * N));
#ifdef _OPENMP
                CHECK(kosmos2__claims_taken > taken0, "%s %s: thread 0 late, yet no group was taken from its share",
                      kosmos2__isa_name(isa), kosmos2__dtype_name(W.dtype));
#else
                (void)taken0; /* (without OpenMP: one thread, nothing to take) */
#endif
            }
        }
        free(w);
    }
    kosmos2__kernels_set_isa(-1);
    free(x); free(bias); free(y0); free(y1); free(y2);
}

static void test_kernels_matmul_errors(void) {
    float x[33], y[2];
    uint8_t w[2 * 34];
    kosmos2__mat W;
    memset(w, 0, sizeof w);
    memset(x, 0, sizeof x);
    W.data = w; W.dtype = KOSMOS2__Q8_0; W.rows = 2; W.cols = 33;
    CHECK(kosmos2__matmul(y, x, 1, &W, NULL, 1) == KOSMOS2_E_INVALID, "q8_0 with K = 33 must be rejected");
    CHECK(strstr(kosmos2_last_error(), "multiple of 32") != NULL, "message: %s", kosmos2_last_error());
}

/* The activation quantization of every path (kosmos2__kernel_set.qact) against the scalar format
 * function kosmos2__quantize_row_q8_0, byte for byte: random blocks of many scales, blocks made
 * of exact ties (x / d = k + 0.5, where round-half-away-from-zero and round-to-even differ),
 * zeros, subnormals, huge values, infinities and NaNs; an odd number of blocks. */
static void test_kernels_quantize_act_paths(void) {
    enum { NB = 41, K = NB * 32 };
    float *x = (float *)malloc(K * 4);
    uint8_t blk[34];
    int64_t b, i;
    int isa, best = kosmos2__kernels_set_isa(-1), bad = 0;
    kosmos2__qacts A;
    A.nb = NB;
    A.nbp = (NB + 1) / 2;
    A.rs = NB;
    A.rsp = A.nbp;
    A.d = (float *)malloc((size_t)A.nbp * 16 * 4);
    A.q = (int8_t *)malloc(K);
    A.ns = (int32_t *)malloc((size_t)NB * 8 * 4);
    for (b = 0; b < NB; b++) {
        float *v = x + b * 32, s = ldexpf(1.0f, (int)(b % 13) * 3 - 20);
        for (i = 0; i < 32; i++) v[i] = s * tk__rand();
        if (b % 4 == 1) { /* ties: max 127 * 2^e, d = 2^e exactly, the others (k + 0.5) * 2^e */
            float e = ldexpf(1.0f, (int)(b % 7) - 3);
            v[0] = (b % 8 == 1 ? -127.0f : 127.0f) * e;
            for (i = 1; i < 32; i++) v[i] = ((float)((int)(tk__rand() * 127.0f)) + (tk__rand() < 0 ? -0.5f : 0.5f)) * e;
            v[1] = 0.5f * e; v[2] = -0.5f * e; v[3] = 1.5f * e; v[4] = -2.5f * e; v[5] = 126.5f * e; v[6] = -126.5f * e;
        }
        if (b == 2) memset(v, 0, 32 * 4);
        if (b == 6) for (i = 0; i < 32; i++) v[i] = ldexpf(tk__rand(), -140); /* subnormals */
        if (b == 10) { v[3] = 3e38f; v[4] = -3e38f; }
        if (b == 14) v[7] = INFINITY;
        if (b == 18) { v[8] = -INFINITY; v[9] = INFINITY; }
        if (b == 22) v[5] = NAN;
        if (b == 26) for (i = 0; i < 32; i++) v[i] = NAN;
        if (b == 30) { v[0] = NAN; v[1] = -0.0f; }
    }
    for (isa = 0; isa <= best; isa++) {
        kosmos2__kernels_set_isa(isa);
        memset(A.d, 0x55, (size_t)A.nbp * 16 * 4);
        memset(A.q, 0x55, K);
        memset(A.ns, 0x55, (size_t)NB * 8 * 4);
        kosmos2__kernel_table()->qact(x, &A, 0);
        for (b = 0; b < NB; b++) {
            float d;
            int g, ok = 1;
            kosmos2__quantize_row_q8_0(x + b * 32, blk, 32);
            d = kosmos2__f16_at(blk);
            for (i = 0; i < 8; i++)
                ok &= memcmp(&A.d[(b / 2) * 16 + (b % 2) * 8 + i], &d, 4) == 0;
            ok &= memcmp(A.q + b * 32, blk + 2, 32) == 0;
            for (g = 0; g < 8; g++)
                ok &= A.ns[b * 8 + g] == -((int8_t)blk[2 + 4 * g] + (int8_t)blk[3 + 4 * g] + (int8_t)blk[4 + 4 * g] + (int8_t)blk[5 + 4 * g]);
            if (!ok && bad++ < 5) CHECK(0, "%s: quantized activation block %lld differs from quantize_row_q8_0", kosmos2__isa_name(isa), (long long)b);
        }
        for (i = 8; i < 16; i++) CHECK(A.d[(A.nbp - 1) * 16 + i] == 0.0f, "%s: odd last block: scale lane %lld not 0", kosmos2__isa_name(isa), (long long)i);
    }
    kosmos2__kernels_set_isa(-1);
    CHECK(bad == 0, "%d blocks differ", bad);
    free(x); free(A.d); free(A.q); free(A.ns);
}

/* Vector math (exp, GELU, quick GELU, SiLU): every path gives the scalar reference's bits, on
 * an odd count (vector body + tail) of values over the whole float range and the special ones;
 * and the reference is accurate: exp within 2 ulp-ish (4e-7 relative) of double exp where the
 * result is a normal float, GELU within 3e-7 (absolute, relative to max(|x|, 1)) of the double
 * erf formula, quick GELU / SiLU within 1e-6 relative. */
static void test_kernels_vector_math(void) {
    enum { N = 4099 };
    float *x = (float *)malloc(N * 4), *y = (float *)malloc(N * 4), *ref = (float *)malloc(N * 4);
    int isa, op, best = kosmos2__kernels_set_isa(-1), bad = 0;
    int64_t i;
    double worst[4] = {0, 0, 0, 0};
    for (i = 0; i < N; i++) x[i] = tk__rand() * (i % 3 == 0 ? 100.0f : i % 3 == 1 ? 8.0f : 0.5f);
    x[0] = 0.0f; x[1] = -0.0f; x[2] = INFINITY; x[3] = -INFINITY; x[4] = NAN; x[5] = -87.0f; x[6] = -87.00001f;
    x[7] = 88.0f; x[8] = 88.00001f; x[9] = 1e-30f; x[10] = -1e-30f; x[11] = ldexpf(1.0f, -140); x[12] = -3e38f; x[13] = 3e38f;
    x[N - 1] = NAN; x[N - 2] = -INFINITY; x[N - 3] = -100.0f;
    for (op = KOSMOS2__VM_EXP; op <= KOSMOS2__VM_SILU; op++) {
        for (i = 0; i < N; i++) ref[i] = kosmos2__vm_ref(x[i], op);
        for (i = 0; i < N; i++) {
            double v = x[i], r = ref[i], e, err;
            if (!isfinite(v)) continue;
            if (op == KOSMOS2__VM_EXP) {
                e = exp(v);
                if (v < -87.0 || v > 88.0 || e < 1.2e-38) continue;
                err = fabs(r - e) / e;
            } else if (op == KOSMOS2__VM_GELU) {
                e = 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
                err = fabs(r - e) / (fabs(v) > 1 ? fabs(v) : 1);
            } else {
                /* the argument of exp as float32 computes it (as torch does): -1.702f * x rounded */
                double arg = op == KOSMOS2__VM_QUICK_GELU ? (double)(-1.702f * x[i]) : -v;
                e = v / (1.0 + exp(arg));
                if (arg > 85) continue; /* exp past the float range: the result is ~0 both ways */
                err = fabs(r - e) / (fabs(e) > 1e-30 ? fabs(e) : 1e-30);
            }
            if (err > worst[op]) worst[op] = err;
        }
        for (isa = 0; isa <= best; isa++) {
            kosmos2__kernels_set_isa(isa);
            memcpy(y, x, N * 4);
            kosmos2__kernel_table()->vmath(y + 1, N - 1, op); /* unaligned start, odd count */
            y[0] = kosmos2__vm_ref(x[0], op);
            for (i = 0; i < N; i++)
                if (memcmp(&y[i], &ref[i], 4) != 0 && !(isnan(y[i]) && isnan(ref[i])) && bad++ < 5)
                    CHECK(0, "%s op %d: x=%a gives %a, reference %a", kosmos2__isa_name(isa), op, x[i], y[i], ref[i]);
        }
    }
    kosmos2__kernels_set_isa(-1);
    CHECK(bad == 0, "%d values differ between paths", bad);
    CHECK(kosmos2__vm_ref(0.0f, KOSMOS2__VM_EXP) == 1.0f && kosmos2__vm_ref(-INFINITY, KOSMOS2__VM_EXP) == 0.0f, "exp(0), exp(-inf)");
    CHECK(isinf(kosmos2__vm_ref(INFINITY, KOSMOS2__VM_EXP)) && isnan(kosmos2__vm_ref(NAN, KOSMOS2__VM_GELU)), "exp(inf), gelu(nan)");
    CHECK(kosmos2__vm_ref(-1e4f, KOSMOS2__VM_GELU) == 0.0f && kosmos2__vm_ref(1e4f, KOSMOS2__VM_GELU) == 1e4f, "gelu tails");
    printf("    worst error: exp %.2e (relative), gelu %.2e, quick_gelu %.2e, silu %.2e\n", worst[0], worst[1], worst[2], worst[3]);
    CHECK(worst[0] < 4e-7, "exp error %.3e", worst[0]);
    CHECK(worst[1] < 3e-7, "gelu error %.3e", worst[1]);
    CHECK(worst[2] < 1e-6 && worst[3] < 1e-6, "quick_gelu %.3e silu %.3e", worst[2], worst[3]);
    free(x); free(y); free(ref);
}

/* Decoding attention's kernels, one cache row for nh heads: qk (scores) gives the canonical dot
 * product of each head (== kosmos2__dot_scalar, the float tiles' sum), pv accumulates
 * o += p[h] * v row after row; every path gives the scalar bits, for float32 and float16 rows,
 * head widths with and without vector tails, scores at a stride; and pv over S rows is the
 * weighted sum (checked in double). */
static void test_kernels_attention_rows(void) {
    static const int64_t hds[] = {64, 37, 100, 8, 3, 129, 16, 48};
    enum { S = 23, NH = 3, LDP = 29, LD = 3 * 129 + 7 };
    float p[NH * LDP], *vf = (float *)malloc(S * LD * 4), *q = (float *)malloc(NH * 129 * 4);
    float o[NH * 129], ref[NH * 129], sc[NH * LDP], scref[NH * LDP];
    uint16_t *vh = (uint16_t *)malloc(S * LD * 2);
    int isa, best = kosmos2__kernels_set_isa(-1), bad = 0, t, dt, h;
    int64_t i, s, d;
    for (i = 0; i < NH * LDP; i++) p[i] = tk__rand() * 0.5f + 0.5f;
    for (i = 0; i < NH * 129; i++) q[i] = tk__rand();
    for (i = 0; i < S * LD; i++) { vf[i] = tk__rand() * 3; vh[i] = kosmos2__f32_to_f16(vf[i]); }
    for (dt = 0; dt < 2; dt++)
        for (t = 0; t < (int)(sizeof hds / sizeof hds[0]); t++) {
            const int64_t hd = hds[t];
            const void *v = dt == 0 ? (const void *)(vf + 5) : (const void *)(vh + 5);
            const int kdt = dt == 0 ? KOSMOS2__F32 : KOSMOS2__F16;
            const int64_t es = dt == 0 ? 4 : 2;
            double worst = 0;
            /* pv: S rows accumulated from 0, the scalar path; then its error against double */
            memset(ref, 0, sizeof ref);
            for (s = 0; s < S; s++) kosmos2__pv_scalar(ref, p + s, LDP, (const char *)v + s * LD * es, LD, 1, kdt, NH, hd);
            for (h = 0; h < NH; h++)
                for (d = 0; d < hd; d++) {
                    double e = 0;
                    for (s = 0; s < S; s++) e += (double)p[h * LDP + s] * kosmos2__load_w(v, kdt, s * LD + h * hd + d);
                    if (fabs(e - ref[h * hd + d]) > worst) worst = fabs(e - ref[h * hd + d]);
                }
            CHECK(worst < 1e-5, "pv hd=%lld: error %.3e against the double sum", (long long)hd, worst);
            /* qk: one row's scores at stride LDP against kosmos2__dot_scalar */
            memset(scref, 0, sizeof scref);
            for (h = 0; h < NH; h++) scref[h * LDP] = kosmos2__dot_scalar((const char *)v + (7 * LD + h * hd) * es, kdt, q + h * hd, hd);
            for (isa = 0; isa <= best; isa++) {
                kosmos2__kernels_set_isa(isa);
                memset(o, 0, sizeof o);
                for (s = 0; s < S; s++) kosmos2__kernel_table()->pv(o, p + s, LDP, (const char *)v + s * LD * es, LD, 1, kdt, NH, hd);
                if (memcmp(o, ref, (size_t)(NH * hd) * 4) != 0 && bad++ < 5)
                    CHECK(0, "%s pv dt %d hd=%lld differs from the scalar path", kosmos2__isa_name(isa), kdt, (long long)hd);
                memset(o, 0, sizeof o); /* the rows in calls of 1..5 rows: the same bits */
                for (s = 0; s < S; s += s % 5 + 1)
                    kosmos2__kernel_table()->pv(o, p + s, LDP, (const char *)v + s * LD * es, LD, (int)(S - s < s % 5 + 1 ? S - s : s % 5 + 1), kdt, NH, hd);
                if (memcmp(o, ref, (size_t)(NH * hd) * 4) != 0 && bad++ < 5)
                    CHECK(0, "%s pv dt %d hd=%lld in blocks of rows differs from the scalar path", kosmos2__isa_name(isa), kdt, (long long)hd);
                memset(sc, 0, sizeof sc);
                kosmos2__kernel_table()->qk(sc, LDP, q, (const char *)v + 7 * LD * es, kdt, NH, hd);
                if (memcmp(sc, scref, sizeof sc) != 0 && bad++ < 5)
                    CHECK(0, "%s qk dt %d hd=%lld differs from the canonical dot product", kosmos2__isa_name(isa), kdt, (long long)hd);
            }
        }
    kosmos2__kernels_set_isa(-1);
    CHECK(bad == 0, "%d cases differ", bad);
    free(vf); free(vh); free(q);
}

/* LayerNorm of one row (kernel lnorm): every path gives the scalar bits (sizes with and without
 * vector tails, in place or not, large offsets: a mean far from 0), and the scalar path is
 * LayerNorm (checked against mean and variance computed in long double). */
static void test_kernels_layernorm_row(void) {
    static const int64_t ns[] = {2048, 1, 7, 8, 9, 37, 100, 8191};
    float *v = (float *)malloc(8191 * 4), *w = (float *)malloc(8191 * 4), *b = (float *)malloc(8191 * 4);
    float *ref = (float *)malloc(8191 * 4), *o = (float *)malloc(8191 * 4);
    int isa, best = kosmos2__kernels_set_isa(-1), bad = 0, t, inplace;
    double worst = 0;
    int64_t i;
    for (i = 0; i < 8191; i++) { w[i] = 1.0f + tk__rand() * 0.2f; b[i] = tk__rand() * 0.1f; }
    for (t = 0; t < (int)(sizeof ns / sizeof ns[0]); t++) {
        const int64_t n = ns[t];
        long double mean = 0, var = 0;
        for (i = 0; i < n; i++) v[i] = tk__rand() * 3 + (t & 1 ? 1000.0f : 0.0f);
        kosmos2__lnorm_scalar(ref, v, n, w, b, 1e-5f);
        for (i = 0; i < n; i++) mean += v[i];
        mean /= n;
        for (i = 0; i < n; i++) var += (v[i] - mean) * (v[i] - mean);
        var /= n;
        for (i = 0; i < n; i++) {
            double e = (double)((v[i] - mean) / sqrtl(var + 1e-5L)) * w[i] + b[i];
            if (fabs(e - ref[i]) > worst) worst = fabs(e - ref[i]);
        }
        for (isa = 0; isa <= best; isa++)
            for (inplace = 0; inplace < 2; inplace++) {
                kosmos2__kernels_set_isa(isa);
                if (inplace) {
                    memcpy(o, v, (size_t)n * 4);
                    kosmos2__kernel_table()->lnorm(o, o, n, w, b, 1e-5f);
                } else {
                    memset(o, 0x7f, (size_t)n * 4);
                    kosmos2__kernel_table()->lnorm(o, v, n, w, b, 1e-5f);
                }
                if (memcmp(o, ref, (size_t)n * 4) != 0 && bad++ < 5)
                    CHECK(0, "%s lnorm n=%lld (in place: %d) differs from the scalar path", kosmos2__isa_name(isa), (long long)n, inplace);
            }
    }
    kosmos2__kernels_set_isa(-1);
    CHECK(bad == 0, "%d cases differ", bad);
    CHECK(worst < 2e-5, "LayerNorm error %.3e against long double", worst);
    free(v); free(w); free(b); free(ref); free(o);
}

/* The AVX-512 kernels, emulated: build/test-avx512emu (tests/avx512_emu.h: SIMDe's AVX-512 on
 * native AVX2) runs the kernel, loader, GGUF, model and hostile-file tests with the AVX-512 paths chosen,
 * each against the scalar reference as on AVX-512 hardware. Its binary is $KOSMOS2_AVX512EMU
 * (make asan/ubsan point it at sanitized builds, which also catch a full-width load past a buffer
 * that a masked load should have made). Inside that binary this test checks that the emulation is
 * on. On a CPU without AVX2 + FMA + F16C, which the emulation builds on, it says it did not run. */
static void test_kernels_avx512_emulated(void) {
#ifdef KOSMOS2__EMULATE_AVX512
    int isa = kosmos2__kernels_set_isa(KOSMOS2__ISA_AVXVNNI);
#ifdef KOSMOS2__HAVE_AVXVNNI
    CHECK(isa == KOSMOS2__ISA_AVXVNNI, "the emulated build offers %s, not avxvnni", kosmos2__isa_name(isa));
#endif
    isa = kosmos2__kernels_set_isa(-1);
    CHECK(isa == KOSMOS2__ISA_AVX512, "the emulated build chose %s, not avx512", kosmos2__isa_name(isa));
#else
    const char *bin = getenv("KOSMOS2_AVX512EMU") ? getenv("KOSMOS2_AVX512EMU") : "build/test-avx512emu";
    char cmd[1024], line[4096], last[4096] = "";
    int passed = -1, failed = -1, st, lines = 0;
    FILE *p;
    if (kosmos2__kernels_set_isa(-1) < KOSMOS2__ISA_AVX2) {
        printf("    NOT RUN: this CPU lacks AVX2/FMA/F16C, on which the AVX-512 emulation is built\n");
        return;
    }
    snprintf(cmd, sizeof cmd, "%s kernels,loader,gguf,model,hostile 2>&1", bin);
    p = popen(cmd, "r");
    CHECK(p != NULL, "cannot run %s", bin);
    if (!p) return;
    while (fgets(line, sizeof line, p)) {
        if (strncmp(line, "ok ", 3) != 0 && strstr(line, "FAIL") && lines++ < 40) printf("    emulated: %s", line);
        if (sscanf(line, "%d passed, %d failed", &passed, &failed) == 2) snprintf(last, sizeof last, "%s", line);
    }
    st = pclose(p);
    CHECK(st == 0 && failed == 0 && passed >= 40, "%s (build it with make build/test-avx512emu): exit status %d, closing line '%s'",
          bin, st, last[0] ? strtok(last, "\n") : "(none)");
    if (passed >= 0) printf("    %s: %d passed, %d failed (kernel, loader, GGUF, model, hostile tests with AVX-512 emulated)\n", bin, passed, failed);
#endif
}

static void tests_kernels(void) {
    RUN(test_kernels_f16_bf16);
    RUN(test_kernels_quantize_q8_0);
    RUN(test_kernels_quantize_q4_0);
    RUN(test_kernels_probes);
    RUN(test_kernels_quantize_act_paths);
    RUN(test_kernels_vector_math);
    RUN(test_kernels_attention_rows);
    RUN(test_kernels_layernorm_row);
    RUN(test_kernels_mat_row);
    RUN(test_kernels_matmul_paths);
    RUN(test_kernels_matmul_q8_raw);
    RUN(test_kernels_matmul_q4_extremes);
    RUN(test_kernels_r8_cols_rows);
    RUN(test_kernels_qkt);
    RUN(test_kernels_softmax_paths);
    RUN(test_kernels_matmul_threads_and_rows);
    RUN(test_kernels_matmul_fused);
    RUN(test_kernels_repack_q4_0r8);
    RUN(test_kernels_matmul_long_rows);
    RUN(test_kernels_matmul_chunks);
    RUN(test_kernels_matmul_errors);
    RUN(test_kernels_avx512_emulated);
}
