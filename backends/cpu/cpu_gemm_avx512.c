/*
 * backends/cpu/cpu_gemm_avx512.c — AVX-512 packing routines and micro-kernels of
 * the GEMM engine (layouts: cpu_gemm_kernels.h). Compiled for their targets with
 * __attribute__((target)); cpu_gemm.c calls them only when cpu_simd_active() allows.
 *
 * Micro-kernels: an mr x 32 tile of C (mr <= 8) in 2 * mr zmm accumulators; per K
 * step two zmm of packed weights and one broadcast A element (f32 FMA) or A pair
 * (vdpbf16ps: bf16 x bf16 products are exact in f32, f32 accumulation).
 *
 * FP8 e4m3 (OCP e4m3fn: bias 7, no infinities, S.1111.111 is NaN) decodes exactly to
 * bf16 (3 mantissa bits, exponents 2^-9 .. 2^8) through a table of the 128
 * magnitudes (two vpermt2w), or to f32 (then times the block scale) with integer ops.
 */
#include "cpu_gemm_kernels.h"

#ifdef CPU_GEMM_X86
#include <immintrin.h>
#include <math.h>

#define KP_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define KP_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))
#define INLINE static inline __attribute__((always_inline))
#define NR CPU_GEMM_NR

static inline __mmask16 mask16(int64_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }
static inline __mmask32 mask32(int64_t n) { return n >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << n) - 1); }

/* Transposes 16 rows of 16 32-bit lanes in place: r[c] becomes column c. */
KP_AVX512 INLINE void tr16x16(__m512 r[16]) {
    __m512 t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m512 x = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), y = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
        __m512 z = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88), v = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
        t[j] = _mm512_shuffle_f32x4(x, z, 0x88);
        t[8 + j] = _mm512_shuffle_f32x4(x, z, 0xDD);
        t[4 + j] = _mm512_shuffle_f32x4(y, v, 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(y, v, 0xDD);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

/* 16 FP8 bytes -> f32 times scale. Subnormals go through an integer conversion (no
 * float op sees a denormal). */
KP_AVX512 INLINE __m512 fp8_to_f32(__m128i bytes, __m512 scale) {
    __m512i x = _mm512_cvtepu8_epi32(bytes);
    __m512i mag = _mm512_and_si512(x, _mm512_set1_epi32(0x7f));
    __m512 normal = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_slli_epi32(mag, 20), _mm512_set1_epi32(120 << 23)));
    __m512 subn = _mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(0x1p-9f));
    __m512 v = _mm512_mask_blend_ps(_mm512_cmplt_epi32_mask(mag, _mm512_set1_epi32(8)), normal, subn);
    v = _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7f)), v, _mm512_set1_ps(NAN));
    v = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(v), _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x80)), 24)));
    return _mm512_mul_ps(v, scale);
}

/* 32 FP8 bytes -> 32 bf16, exactly: the magnitude through a 128-entry table held in
 * four zmm (t, from cpu_gemm_fp8_bf16), the sign or-ed in. */
KP_AVX512 INLINE __m512i fp8_to_bf16(__m256i bytes, const __m512i t[4]) {
    __m512i x = _mm512_cvtepu8_epi16(bytes);
    __m512i lo = _mm512_permutex2var_epi16(t[0], x, t[1]), hi = _mm512_permutex2var_epi16(t[2], x, t[3]);
    __m512i v = _mm512_mask_mov_epi16(lo, _mm512_test_epi16_mask(x, _mm512_set1_epi16(0x40)), hi);
    return _mm512_ternarylogic_epi32(v, _mm512_slli_epi16(x, 8), _mm512_set1_epi16((short)0x8000), 0xF8);
}

/* ---- f32 panels ---- */

KP_AVX512 INLINE void pack_f32_body(const int dt, const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc,
                                    float *dst, int pf) {
    const size_t esz = dt == KP_F32 ? 4 : dt == KP_FP8_E4M3 ? 1 : 2;
    for (int g = 0; g < 2; g++) {
        int rows = ncols - g * 16;
        if (rows > 16) rows = 16;
        if (rows <= 0) {
            for (int64_t k = 0; k < kc; k++) _mm512_store_ps(dst + k * NR + g * 16, _mm512_setzero_ps());
            continue;
        }
        const unsigned char *src[16];
        for (int j = 0; j < 16; j++)
            src[j] = w->base + (size_t)((n0 + g * 16 + (j < rows ? j : 0)) * w->ld + k0) * esz;
        for (int64_t k = 0; k < kc; k += 16) {
            __mmask16 km = mask16(kc - k);
            __m512 r[16];
            for (int j = 0; j < 16; j++) {
                if (j >= rows) {
                    r[j] = _mm512_setzero_ps();
                    continue;
                }
                const unsigned char *p = src[j] + (size_t)k * esz;
                if (pf) _mm_prefetch((const char *)p + pf, _MM_HINT_T0);
                if (dt == KP_F32) {
                    r[j] = _mm512_maskz_loadu_ps(km, p);
                } else if (dt == KP_F16) {
                    r[j] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(km, p));
                } else if (dt == KP_BF16) {
                    r[j] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(km, p)), 16));
                } else {
                    int64_t n = n0 + g * 16 + j;
                    float s = w->scale[(n / CPU_GEMM_FP8_BLOCK) * w->scale_ld0 +
                                       ((k0 + k) / CPU_GEMM_FP8_BLOCK) * w->scale_ld1];
                    r[j] = _mm512_maskz_mov_ps(km, fp8_to_f32(_mm_maskz_loadu_epi8(km, p), _mm512_set1_ps(s)));
                }
            }
            tr16x16(r);
            int64_t kn = kc - k < 16 ? kc - k : 16;
            for (int t = 0; t < kn; t++) _mm512_store_ps(dst + (k + t) * NR + g * 16, r[t]);
        }
    }
}

/* Scales each FP8 weight while packing (fp8_partial is off at this level): scales unused. */
KP_AVX512 static void pack_b_f32_avx512(const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc,
                                        float *dst, float *scales, int pf) {
    (void)scales;
    switch (w->dtype) {
    case KP_F32: pack_f32_body(KP_F32, w, n0, ncols, k0, kc, dst, pf); break;
    case KP_F16: pack_f32_body(KP_F16, w, n0, ncols, k0, kc, dst, pf); break;
    case KP_BF16: pack_f32_body(KP_BF16, w, n0, ncols, k0, kc, dst, pf); break;
    default: pack_f32_body(KP_FP8_E4M3, w, n0, ncols, k0, kc, dst, pf); break;
    }
}

/* ---- bf16 pair panels ---- */

KP_AVX512 INLINE void pack_bf16_body(const int dt, const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc,
                                     uint32_t *dst, int pf) {
    const size_t esz = dt == KP_FP8_E4M3 ? 1 : 2;
    const int64_t kp = (kc + 1) / 2;
    __m512i lut[4];
    for (int q = 0; q < 4; q++) lut[q] = _mm512_loadu_si512(cpu_gemm_fp8_bf16 + 32 * q);
    for (int g = 0; g < 2; g++) {
        int rows = ncols - g * 16;
        if (rows > 16) rows = 16;
        if (rows <= 0) {
            for (int64_t p = 0; p < kp; p++) _mm512_store_si512(dst + p * NR + g * 16, _mm512_setzero_si512());
            continue;
        }
        const unsigned char *src[16];
        for (int j = 0; j < 16; j++)
            src[j] = w->base + (size_t)((n0 + g * 16 + (j < rows ? j : 0)) * w->ld + k0) * esz;
        for (int64_t k = 0; k < kc; k += 32) {
            __mmask32 km = mask32(kc - k);
            __m512 r[16];
            for (int j = 0; j < 16; j++) {
                if (j >= rows) {
                    r[j] = _mm512_setzero_ps();
                    continue;
                }
                const unsigned char *p = src[j] + (size_t)k * esz;
                if (pf) _mm_prefetch((const char *)p + pf, _MM_HINT_T0);
                if (dt == KP_BF16) r[j] = _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(km, p));
                else r[j] = _mm512_castsi512_ps(_mm512_maskz_mov_epi16(km, fp8_to_bf16(_mm256_maskz_loadu_epi8(km, p), lut)));
            }
            tr16x16(r);
            int64_t pn = (kc - k + 1) / 2;
            if (pn > 16) pn = 16;
            for (int t = 0; t < pn; t++) _mm512_store_ps((float *)(dst + (k / 2 + t) * NR + g * 16), r[t]);
        }
    }
}

KP_AVX512 static void pack_b_bf16_avx512(const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc,
                                           uint32_t *dst, float *scales, int pf) {
    if (w->dtype == KP_BF16) {
        pack_bf16_body(KP_BF16, w, n0, ncols, k0, kc, dst, pf);
        return;
    }
    pack_bf16_body(KP_FP8_E4M3, w, n0, ncols, k0, kc, dst, pf);
    for (int64_t s = 0; s * CPU_GEMM_FP8_BLOCK < kc; s++)
        for (int j = 0; j < NR; j++)
            scales[s * NR + j] = j < ncols ? w->scale[((n0 + j) / CPU_GEMM_FP8_BLOCK) * w->scale_ld0 +
                                                      ((k0 / CPU_GEMM_FP8_BLOCK) + s) * w->scale_ld1]
                                           : 0.0f;
}

/* ---- micro-kernels ---- */

/* Stores (or adds) one row of the tile; sc: the column scales (NULL: none). */
KP_AVX512 INLINE void tile_row_out(float *ci, __mmask16 m0, __mmask16 m1, __m512 x0, __m512 x1, int acc,
                                   const float *sc) {
    if (sc) {
        __m512 s0 = _mm512_load_ps(sc), s1 = _mm512_load_ps(sc + 16);
        if (acc) {
            x0 = _mm512_fmadd_ps(x0, s0, _mm512_maskz_loadu_ps(m0, ci));
            x1 = _mm512_fmadd_ps(x1, s1, _mm512_maskz_loadu_ps(m1, ci + 16));
        } else {
            x0 = _mm512_mul_ps(x0, s0);
            x1 = _mm512_mul_ps(x1, s1);
        }
    } else if (acc) {
        x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, ci));
        x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, ci + 16));
    }
    _mm512_mask_storeu_ps(ci, m0, x0);
    _mm512_mask_storeu_ps(ci + 16, m1, x1);
}

KP_AVX512 INLINE void uk_f32_body(const int MR, int64_t kc, const float *a, int64_t lda, const float *b, float *c,
                                  int64_t ldc, __mmask16 m0, __mmask16 m1, int acc) {
    __m512 x0[CPU_GEMM_MR], x1[CPU_GEMM_MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) x0[i] = x1[i] = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(b + k * NR), b1 = _mm512_load_ps(b + k * NR + 16);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i * lda + k]);
            x0[i] = _mm512_fmadd_ps(ai, b0, x0[i]);
            x1[i] = _mm512_fmadd_ps(ai, b1, x1[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) tile_row_out(c + i * ldc, m0, m1, x0[i], x1[i], acc, NULL);
}

#define UK_F32_CASE(R)                                                                                             \
    case R: uk_f32_body(R, kc, a, lda, b, c, ldc, m0, m1, acc); break;

KP_AVX512 static void uk_f32_avx512(int mr, int64_t kc, const float *a, int64_t lda, const float *b, float *c,
                                    int64_t ldc, int ncols, int acc, const float *scales) {
    (void)scales; /* NULL: FP8 weights are scaled while packing at this level */
    __mmask16 m0 = mask16(ncols), m1 = mask16(ncols - 16 > 0 ? ncols - 16 : 0);
    switch (mr) {
        UK_F32_CASE(1)
        UK_F32_CASE(2)
        UK_F32_CASE(3)
        UK_F32_CASE(4)
        UK_F32_CASE(5)
        UK_F32_CASE(6)
        UK_F32_CASE(7)
        UK_F32_CASE(8)
    default: break;
    }
}

KP_AVX512BF16 INLINE void uk_bf16_body(const int MR, int64_t kp, const uint32_t *a, int64_t lda, const uint32_t *b,
                                       float *c, int64_t ldc, __mmask16 m0, __mmask16 m1, int acc, const float *sc) {
    const int64_t step = sc ? CPU_GEMM_FP8_BLOCK / 2 : kp; /* pairs between scalings */
    for (int64_t p0 = 0; p0 < kp; p0 += step) {
        int64_t p1 = kp - p0 < step ? kp : p0 + step;
        __m512 x0[CPU_GEMM_MR], x1[CPU_GEMM_MR];
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) x0[i] = x1[i] = _mm512_setzero_ps();
#pragma GCC unroll 4
        for (int64_t p = p0; p < p1; p++) {
            __m512bh b0 = (__m512bh)_mm512_load_si512(b + p * NR), b1 = (__m512bh)_mm512_load_si512(b + p * NR + 16);
#pragma GCC unroll 8
            for (int i = 0; i < MR; i++) {
                __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i * lda + p]);
                x0[i] = _mm512_dpbf16_ps(x0[i], ai, b0);
                x1[i] = _mm512_dpbf16_ps(x1[i], ai, b1);
            }
        }
        const float *s = sc ? sc + (p0 / step) * NR : NULL;
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) tile_row_out(c + i * ldc, m0, m1, x0[i], x1[i], acc || p0 > 0, s);
    }
}

#define UK_BF16_CASE(R)                                                                                            \
    case R: uk_bf16_body(R, kp, a, lda, b, c, ldc, m0, m1, acc, scales); break;

KP_AVX512BF16 static void uk_bf16_avx512(int mr, int64_t kp, const uint32_t *a, int64_t lda, const uint32_t *b,
                                           float *c, int64_t ldc, int ncols, int acc, const float *scales) {
    __mmask16 m0 = mask16(ncols), m1 = mask16(ncols - 16 > 0 ? ncols - 16 : 0);
    switch (mr) {
        UK_BF16_CASE(1)
        UK_BF16_CASE(2)
        UK_BF16_CASE(3)
        UK_BF16_CASE(4)
        UK_BF16_CASE(5)
        UK_BF16_CASE(6)
        UK_BF16_CASE(7)
        UK_BF16_CASE(8)
    default: break;
    }
}

#endif /* CPU_GEMM_X86 */

#ifdef CPU_GEMM_X86
/* ---- a few rows (decode): dot products straight off the weight rows ---- */

/* MRD rows of A x J weight rows at a time; FP8: per-128 partial sums scaled into tot. */
KP_AVX512BF16 INLINE void dot_body(const int fp8, const int MRD, const int J, int64_t K, const uint16_t *a, int64_t lda,
                                   const cpu_gemm_w *w, int64_t n0, int ncols, float *c, int64_t ldc, int pf) {
    const size_t esz = fp8 ? 1 : 2;
    __m512i lut[4];
    if (fp8)
        for (int q = 0; q < 4; q++) lut[q] = _mm512_loadu_si512(cpu_gemm_fp8_bf16 + 32 * q);
    const int64_t block = fp8 ? CPU_GEMM_FP8_BLOCK : K; /* K between scalings */
    for (int j0 = 0; j0 < ncols; j0 += J) {
        int jn = ncols - j0 < J ? ncols - j0 : J;
        const unsigned char *src[8];
        int64_t row[8];
        for (int j = 0; j < J; j++) {
            row[j] = n0 + j0 + (j < jn ? j : jn - 1);
            src[j] = w->base + (size_t)(row[j] * w->ld) * esz;
        }
        __m512 tot[4][8], acc[4][8];
#pragma GCC unroll 4
        for (int i = 0; i < MRD; i++)
#pragma GCC unroll 8
            for (int j = 0; j < J; j++) tot[i][j] = _mm512_setzero_ps();
        for (int64_t k0 = 0; k0 < K; k0 += block) {
            int64_t k1 = K - k0 < block ? K : k0 + block;
#pragma GCC unroll 4
            for (int i = 0; i < MRD; i++)
#pragma GCC unroll 8
                for (int j = 0; j < J; j++) acc[i][j] = fp8 ? _mm512_setzero_ps() : tot[i][j];
#pragma GCC unroll 2
            for (int64_t k = k0; k < k1; k += 32) {
                __mmask32 km = mask32(k1 - k);
                __m512bh av[4];
#pragma GCC unroll 4
                for (int i = 0; i < MRD; i++) av[i] = (__m512bh)_mm512_maskz_loadu_epi16(km, a + i * lda + k);
                const int do_pf = pf && (!fp8 || (k & 32) == 0); /* once per 64-byte line */
                const int64_t pfo = pf > 0 ? pf : (int64_t)J * w->ld * (int64_t)esz;
#pragma GCC unroll 8
                for (int j = 0; j < J; j++) {
                    const unsigned char *p = src[j] + (size_t)k * esz;
                    if (do_pf) _mm_prefetch((const char *)p + pfo, _MM_HINT_T0);
                    __m512i wv = fp8 ? fp8_to_bf16(_mm256_maskz_loadu_epi8(km, p), lut) : _mm512_maskz_loadu_epi16(km, p);
#pragma GCC unroll 4
                    for (int i = 0; i < MRD; i++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av[i], (__m512bh)wv);
                }
            }
#pragma GCC unroll 8
            for (int j = 0; j < J; j++) {
                __m512 s = fp8 ? _mm512_set1_ps(w->scale[(row[j] / CPU_GEMM_FP8_BLOCK) * w->scale_ld0 +
                                                         (k0 / CPU_GEMM_FP8_BLOCK) * w->scale_ld1])
                               : _mm512_setzero_ps();
#pragma GCC unroll 4
                for (int i = 0; i < MRD; i++) tot[i][j] = fp8 ? _mm512_fmadd_ps(acc[i][j], s, tot[i][j]) : acc[i][j];
            }
        }
        for (int i = 0; i < MRD; i++)
            for (int j = 0; j < jn; j++) c[i * ldc + j0 + j] = _mm512_reduce_add_ps(tot[i][j]);
    }
}

KP_AVX512BF16 static void dot_bf16_avx512(int m, int64_t K, const uint16_t *a, int64_t lda, const cpu_gemm_w *w,
                                            int64_t n0, int ncols, float *c, int64_t ldc, int pf) {
    if (w->dtype == KP_FP8_E4M3) {
        switch (m) {
        case 1: dot_body(1, 1, 8, K, a, lda, w, n0, ncols, c, ldc, pf); break;
        case 2: dot_body(1, 2, 4, K, a, lda, w, n0, ncols, c, ldc, pf); break;
        case 3: dot_body(1, 3, 3, K, a, lda, w, n0, ncols, c, ldc, pf); break;
        default: dot_body(1, 4, 3, K, a, lda, w, n0, ncols, c, ldc, pf); break;
        }
        return;
    }
    switch (m) {
    case 1: dot_body(0, 1, 8, K, a, lda, w, n0, ncols, c, ldc, pf); break;
    case 2: dot_body(0, 2, 8, K, a, lda, w, n0, ncols, c, ldc, pf); break;
    case 3: dot_body(0, 3, 5, K, a, lda, w, n0, ncols, c, ldc, pf); break;
    default: dot_body(0, 4, 4, K, a, lda, w, n0, ncols, c, ldc, pf); break;
    }
}
/* The same in f32 mode: f32 A rows, weights converted in registers (FP8: times its
 * block scale, as the packed panels), f32 FMA. */
KP_AVX512 INLINE void dotf_body(const int dt, const int MRD, const int J, int64_t K, const float *a, int64_t lda,
                                const cpu_gemm_w *w, int64_t n0, int ncols, float *c, int64_t ldc, int pf) {
    const size_t esz = dt == KP_F32 ? 4 : dt == KP_FP8_E4M3 ? 1 : 2;
    const int64_t block = dt == KP_FP8_E4M3 ? CPU_GEMM_FP8_BLOCK : K;
    for (int j0 = 0; j0 < ncols; j0 += J) {
        int jn = ncols - j0 < J ? ncols - j0 : J;
        const unsigned char *src[8];
        int64_t row[8];
        float sj[8] = {0};
        for (int j = 0; j < J; j++) {
            row[j] = n0 + j0 + (j < jn ? j : jn - 1);
            src[j] = w->base + (size_t)(row[j] * w->ld) * esz;
        }
        __m512 acc[4][8];
#pragma GCC unroll 4
        for (int i = 0; i < MRD; i++)
#pragma GCC unroll 8
            for (int j = 0; j < J; j++) acc[i][j] = _mm512_setzero_ps();
        for (int64_t k0 = 0; k0 < K; k0 += block) {
            int64_t k1 = K - k0 < block ? K : k0 + block;
            if (dt == KP_FP8_E4M3)
                for (int j = 0; j < J; j++)
                    sj[j] = w->scale[(row[j] / CPU_GEMM_FP8_BLOCK) * w->scale_ld0 + (k0 / CPU_GEMM_FP8_BLOCK) * w->scale_ld1];
#pragma GCC unroll 2
            for (int64_t k = k0; k < k1; k += 16) {
                __mmask16 km = mask16(k1 - k);
                __m512 av[4];
#pragma GCC unroll 4
                for (int i = 0; i < MRD; i++) av[i] = _mm512_maskz_loadu_ps(km, a + i * lda + k);
                const int do_pf = pf && (((size_t)k * esz) & 63) == 0; /* once per 64-byte line */
                const int64_t pfo = pf > 0 ? pf : (int64_t)J * w->ld * (int64_t)esz;
#pragma GCC unroll 8
                for (int j = 0; j < J; j++) {
                    const unsigned char *p = src[j] + (size_t)k * esz;
                    if (do_pf) _mm_prefetch((const char *)p + pfo, _MM_HINT_T0);
                    __m512 wv;
                    if (dt == KP_F32) wv = _mm512_maskz_loadu_ps(km, p);
                    else if (dt == KP_F16) wv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(km, p));
                    else if (dt == KP_BF16)
                        wv = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(km, p)), 16));
                    else wv = _mm512_maskz_mov_ps(km, fp8_to_f32(_mm_maskz_loadu_epi8(km, p), _mm512_set1_ps(sj[j])));
#pragma GCC unroll 4
                    for (int i = 0; i < MRD; i++) acc[i][j] = _mm512_fmadd_ps(av[i], wv, acc[i][j]);
                }
            }
        }
        for (int i = 0; i < MRD; i++)
            for (int j = 0; j < jn; j++) c[i * ldc + j0 + j] = _mm512_reduce_add_ps(acc[i][j]);
    }
}

#define DOTF_CASES(DT)                                                                                             \
    switch (m) {                                                                                                   \
    case 1: dotf_body(DT, 1, 8, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                       \
    case 2: dotf_body(DT, 2, 8, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                       \
    case 3: dotf_body(DT, 3, 6, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                       \
    default: dotf_body(DT, 4, 6, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                      \
    }

KP_AVX512 static void dot_f32_avx512(int m, int64_t K, const float *a, int64_t lda, const cpu_gemm_w *w, int64_t n0,
                                       int ncols, float *c, int64_t ldc, int pf) {
    switch (w->dtype) {
    case KP_F32: DOTF_CASES(KP_F32) break;
    case KP_F16: DOTF_CASES(KP_F16) break;
    case KP_BF16: DOTF_CASES(KP_BF16) break;
    default: DOTF_CASES(KP_FP8_E4M3) break;
    }
}

const cpu_gemm_isa cpu_gemm_isa_avx512 = {
    .mr = 8,
    .pack_f32 = pack_b_f32_avx512,
    .uk_f32 = uk_f32_avx512,
    .dot_rows_max = 4,
    .dot_f32 = dot_f32_avx512,
};

const cpu_gemm_isa cpu_gemm_isa_avx512_bf16 = {
    .mr = 8,
    .pack_f32 = pack_b_f32_avx512,
    .uk_f32 = uk_f32_avx512,
    .dot_rows_max = 4,
    .dot_f32 = dot_f32_avx512,
    .bf16_takes_fp8 = true,
    .pack_bf16 = pack_b_bf16_avx512,
    .uk_bf16 = uk_bf16_avx512,
    .dot_bf16 = dot_bf16_avx512,
};
#endif /* CPU_GEMM_X86 */
