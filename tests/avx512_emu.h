/* tests/avx512_emu.h - run kosmos2.h's AVX-512 (and AVX-VNNI) kernels on a CPU without them (tests only).
 *
 * Included before kosmos2.h in a translation unit built with -mavx2 -mfma -mf16c (see
 * tests/test_avx512_emu.c and the Makefile's build/test-avx512emu). It maps every AVX-512
 * intrinsic the kernels use to SIMDe's portable implementation (Debian's libsimde-dev, a
 * test-only dependency), which builds each 512-bit operation from native AVX2 halves where it
 * can: _mm512_fmadd_ps becomes two hardware _mm256_fmadd_ps, so fused multiply-adds stay fused
 * and the bits are the hardware's. KOSMOS2__EMULATE_AVX512 then drops the AVX-512 target
 * attribute and makes the ISA detection report AVX-512 and AVX-VNNI, so the whole test suite's
 * "every ISA against the scalar reference" loops include those source paths.
 *
 * What this checks: the AVX-512 kernels' logic (layouts, tails and masks, reduction orders,
 * quantization), i.e. everything but the silicon. SIMDe 0.7.4 lacks ten of the intrinsics; they
 * are written below from the Intel intrinsics guide's definitions, lane by lane. An intrinsic the
 * kernels start using and this file does not map fails to compile (GCC refuses to inline an
 * AVX-512 intrinsic into a function without the AVX-512 target), so nothing runs natively by
 * accident. */
#ifndef KOSMOS2_AVX512_EMU_H
#define KOSMOS2_AVX512_EMU_H
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "tests/avx512_emu.h needs -mavx2 -mfma -mf16c (AVX2 native, AVX-512 emulated on top)"
#endif
#include <string.h>
#include <immintrin.h>
#include <simde/x86/avx512.h>
#if defined(SIMDE_X86_AVX512F_NATIVE)
#error "tests/avx512_emu.h: build without -mavx512*: the point is to emulate AVX-512"
#endif

/* ---- the ten intrinsics SIMDe 0.7.4 lacks (Intel's definitions, lane by lane) ---- */
/* A masked load with zeroing: the n elements of `size` bytes at p whose bit in k is set, the
 * others 0; only the selected elements are read (as the hardware: no fault past them). */
static inline void k2emu_maskz_load(void *out, uint64_t k, const void *p, int n, int size) {
    int i;
    memset(out, 0, (size_t)(n * size));
    for (i = 0; i < n; i++)
        if ((k >> i) & 1) memcpy((char *)out + i * size, (const char *)p + i * size, (size_t)size);
}
static inline simde__m512 k2emu_mm512_maskz_loadu_ps(simde__mmask16 k, const void *p) {
    simde__m512 r;
    k2emu_maskz_load(&r, k, p, 16, 4);
    return r;
}
static inline simde__m512i k2emu_mm512_maskz_loadu_epi8(uint64_t k, const void *p) {
    simde__m512i r;
    k2emu_maskz_load(&r, k, p, 64, 1);
    return r;
}
static inline __m256i k2emu_mm256_maskz_loadu_epi16(simde__mmask16 k, const void *p) {
    __m256i r;
    k2emu_maskz_load(&r, k, p, 16, 2);
    return r;
}
static inline void k2emu_mm512_mask_storeu_ps(void *p, simde__mmask16 k, simde__m512 a) {
    float v[16];
    int i;
    memcpy(v, &a, 64);
    for (i = 0; i < 16; i++)
        if ((k >> i) & 1) memcpy((char *)p + 4 * i, &v[i], 4);
}
static inline simde__m128i k2emu_mm512_cvtepi32_epi8(simde__m512i a) { /* vpmovdb: truncation */
    int32_t v[16];
    int8_t o[16];
    int i;
    memcpy(v, &a, 64);
    for (i = 0; i < 16; i++) o[i] = (int8_t)(uint8_t)((uint32_t)v[i] & 0xffu);
    simde__m128i r;
    memcpy(&r, o, 16);
    return r;
}
/* conversions: the two halves through the native AVX2/F16C instruction op */
#define K2EMU_BY_HALVES(name, out_t, half_out_t, in_t, half_in_t, op) \
    static inline out_t name(in_t a) {                              \
        half_in_t h[2];                                             \
        half_out_t o[2];                                            \
        out_t r;                                                    \
        memcpy(h, &a, sizeof h);                                    \
        o[0] = op(h[0]);                                            \
        o[1] = op(h[1]);                                            \
        memcpy(&r, o, sizeof r);                                    \
        return r;                                                   \
    }
K2EMU_BY_HALVES(k2emu_mm512_cvtepi32_ps, simde__m512, __m256, simde__m512i, __m256i, _mm256_cvtepi32_ps)
K2EMU_BY_HALVES(k2emu_mm512_cvtps_epi32, simde__m512i, __m256i, simde__m512, __m256, _mm256_cvtps_epi32) /* (rounding: MXCSR's, nearest even) */
K2EMU_BY_HALVES(k2emu_mm512_cvtepu16_epi32, simde__m512i, __m256i, __m256i, __m128i, _mm256_cvtepu16_epi32)
K2EMU_BY_HALVES(k2emu_mm512_cvtph_ps, simde__m512, __m256, __m256i, __m128i, _mm256_cvtph_ps)
static inline __m256 k2emu_mm512_extractf32x8_ps(simde__m512 a, int imm) {
    __m256 h[2];
    memcpy(h, &a, 64);
    return h[imm & 1];
}

/* ---- the names: every AVX-512 intrinsic kosmos2.h uses, to SIMDe or the functions above ----
 * The immediates are parenthesized here: SIMDe 0.7.4's roundscale macro shifts its unparenthesized
 * argument (_MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC came out as 3 | (8 >> 4): 3 fraction bits kept). */
#define __m512 simde__m512
#define __m512i simde__m512i
#define __m512d simde__m512d
#undef _mm512_add_epi32
#define _mm512_add_epi32 simde_mm512_add_epi32
#undef _mm512_add_ps
#define _mm512_add_ps simde_mm512_add_ps
#undef _mm512_and_si512
#define _mm512_and_si512 simde_mm512_and_si512
#undef _mm512_andnot_ps
#define _mm512_andnot_ps simde_mm512_andnot_ps
#undef _mm512_andnot_si512
#define _mm512_andnot_si512 simde_mm512_andnot_si512
#undef _mm512_broadcast_f32x4
#define _mm512_broadcast_f32x4 simde_mm512_broadcast_f32x4
#undef _mm512_castpd_ps
#define _mm512_castpd_ps simde_mm512_castpd_ps
#undef _mm512_castps512_ps128
#define _mm512_castps512_ps128 simde_mm512_castps512_ps128
#undef _mm512_castps512_ps256
#define _mm512_castps512_ps256 simde_mm512_castps512_ps256
#undef _mm512_castps_pd
#define _mm512_castps_pd simde_mm512_castps_pd
#undef _mm512_castps_si512
#define _mm512_castps_si512 simde_mm512_castps_si512
#undef _mm512_castsi256_si512
#define _mm512_castsi256_si512 simde_mm512_castsi256_si512
#undef _mm512_castsi512_ps
#define _mm512_castsi512_ps simde_mm512_castsi512_ps
#undef _mm512_castsi512_si128
#define _mm512_castsi512_si128 simde_mm512_castsi512_si128
#undef _mm512_castsi512_si256
#define _mm512_castsi512_si256 simde_mm512_castsi512_si256
#undef _mm512_cmp_ps_mask
#define _mm512_cmp_ps_mask(a, b, i) simde_mm512_cmp_ps_mask((a), (b), (i))
#undef _mm512_div_ps
#define _mm512_div_ps simde_mm512_div_ps
#undef _mm512_dpbusd_epi32
#define _mm512_dpbusd_epi32 simde_mm512_dpbusd_epi32
#undef _mm512_extractf32x4_ps
#define _mm512_extractf32x4_ps(a, i) simde_mm512_extractf32x4_ps((a), (i))
#undef _mm512_fmadd_ps
#define _mm512_fmadd_ps simde_mm512_fmadd_ps
#undef _mm512_inserti64x4
#define _mm512_inserti64x4(a, b, i) simde_mm512_inserti64x4((a), (b), (i))
#undef _mm512_loadu_ps
#define _mm512_loadu_ps simde_mm512_loadu_ps
#undef _mm512_loadu_si512
#define _mm512_loadu_si512 simde_mm512_loadu_si512
#undef _mm512_mask_add_ps
#define _mm512_mask_add_ps simde_mm512_mask_add_ps
#undef _mm512_mask_mov_ps
#define _mm512_mask_mov_ps simde_mm512_mask_mov_ps
#undef _mm512_max_ps
#define _mm512_max_ps simde_mm512_max_ps
#undef _mm512_min_ps
#define _mm512_min_ps simde_mm512_min_ps
#undef _mm512_mul_ps
#define _mm512_mul_ps simde_mm512_mul_ps
#undef _mm512_or_si512
#define _mm512_or_si512 simde_mm512_or_si512
#undef _mm512_permutexvar_epi16
#define _mm512_permutexvar_epi16 simde_mm512_permutexvar_epi16
#undef _mm512_roundscale_ps
#define _mm512_roundscale_ps(a, i) simde_mm512_roundscale_ps((a), (i))
#undef _mm512_set1_epi32
#define _mm512_set1_epi32 simde_mm512_set1_epi32
#undef _mm512_set1_epi8
#define _mm512_set1_epi8 simde_mm512_set1_epi8
#undef _mm512_set1_ps
#define _mm512_set1_ps simde_mm512_set1_ps
#undef _mm512_set_epi16
#define _mm512_set_epi16 simde_mm512_set_epi16
#undef _mm512_set_epi64
#define _mm512_set_epi64 simde_mm512_set_epi64
#undef _mm512_setzero_ps
#define _mm512_setzero_ps simde_mm512_setzero_ps
#undef _mm512_setzero_si512
#define _mm512_setzero_si512 simde_mm512_setzero_si512
#undef _mm512_shuffle_f32x4
#define _mm512_shuffle_f32x4(a, b, i) simde_mm512_shuffle_f32x4((a), (b), (i))
#undef _mm512_shuffle_i64x2
#define _mm512_shuffle_i64x2(a, b, i) simde_mm512_shuffle_i64x2((a), (b), (i))
#undef _mm512_shuffle_ps
#define _mm512_shuffle_ps(a, b, i) simde_mm512_shuffle_ps((a), (b), (i))
#undef _mm512_slli_epi32
#define _mm512_slli_epi32(a, i) simde_mm512_slli_epi32((a), (i))
#undef _mm512_srlv_epi16
#define _mm512_srlv_epi16 simde_mm512_srlv_epi16
#undef _mm512_storeu_ps
#define _mm512_storeu_ps simde_mm512_storeu_ps
#undef _mm512_sub_ps
#define _mm512_sub_ps simde_mm512_sub_ps
#undef _mm512_unpackhi_pd
#define _mm512_unpackhi_pd simde_mm512_unpackhi_pd
#undef _mm512_unpacklo_pd
#define _mm512_unpacklo_pd simde_mm512_unpacklo_pd
#undef _mm512_xor_ps
#define _mm512_xor_ps simde_mm512_xor_ps
#undef _mm512_xor_si512
#define _mm512_xor_si512 simde_mm512_xor_si512
/* not in SIMDe 0.7.4: */
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps k2emu_mm512_maskz_loadu_ps
#undef _mm512_maskz_loadu_epi8
#define _mm512_maskz_loadu_epi8 k2emu_mm512_maskz_loadu_epi8
#undef _mm256_maskz_loadu_epi16
#define _mm256_maskz_loadu_epi16 k2emu_mm256_maskz_loadu_epi16
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps k2emu_mm512_mask_storeu_ps
#undef _mm512_cvtepi32_epi8
#define _mm512_cvtepi32_epi8 k2emu_mm512_cvtepi32_epi8
#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps k2emu_mm512_cvtepi32_ps
#undef _mm512_cvtps_epi32
#define _mm512_cvtps_epi32 k2emu_mm512_cvtps_epi32
#undef _mm512_cvtepu16_epi32
#define _mm512_cvtepu16_epi32 k2emu_mm512_cvtepu16_epi32
#undef _mm512_cvtph_ps
#define _mm512_cvtph_ps k2emu_mm512_cvtph_ps
#undef _mm512_extractf32x8_ps
#define _mm512_extractf32x8_ps k2emu_mm512_extractf32x8_ps

/* AVX-VNNI's vpdpbusd (VEX, 256 bits) computes what AVX-512 VNNI's 256-bit form does: SIMDe's */
#undef _mm256_dpbusd_avx_epi32
#define _mm256_dpbusd_avx_epi32 simde_mm256_dpbusd_epi32

#define KOSMOS2__EMULATE_AVX512 1
#endif
