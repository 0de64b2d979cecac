/*
 * backends/cpu/cpu_gemm_avx2.c — AVX2 + FMA + F16C packing routines and micro-kernels
 * of the GEMM engine (layouts: cpu_gemm_kernels.h), for x86-64 CPUs without AVX-512
 * (Zen 1-3, Intel client and pre-Skylake-SP parts). meson compiles this file alone
 * with -mavx2 -mfma -mf16c; cpu_gemm.c calls it only when cpuid reports all three.
 *
 * Micro-kernel: the BLIS/OpenBLAS Haswell shape, a 6 x 16 tile of C in 12 ymm
 * accumulators; per K step two ymm of packed weights and six broadcast A elements
 * (12 FMAs against 8 loads, so the two FMA pipes stay busy). A 32-column panel is
 * two such tiles side by side.
 *
 * FP8 e4m3 weights decode exactly to f32 (integer ops, no table); their 128 x 128
 * block scale multiplies each 128-wide K partial sum (fp8_partial), not each weight.
 */
#include "cpu_gemm_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define NR CPU_GEMM_NR
#define MR_AVX2 6
#define FP8_BLOCK CPU_GEMM_FP8_BLOCK
#define INLINE static inline __attribute__((always_inline))

/* Lanes [0, n) set (n clamped to 0..8). */
INLINE __m256i lane_mask(int64_t n) {
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(const void *)(m + 8 - n));
}

/* 8 FP8 bytes -> f32, exact. Subnormals go through an integer conversion (no float op
 * sees a denormal); 0x7f/0xff are NaN. */
INLINE __m256 fp8_to_f32(__m128i bytes) {
    __m256i x = _mm256_cvtepu8_epi32(bytes);
    __m256i mag = _mm256_and_si256(x, _mm256_set1_epi32(0x7f));
    __m256 normal = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23)));
    __m256 subn = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(0x1p-9f));
    __m256 v = _mm256_blendv_ps(normal, subn, _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag)));
    v = _mm256_blendv_ps(v, _mm256_set1_ps(NAN), _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7f))));
    return _mm256_or_ps(v, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x80)), 24)));
}

/* 8 elements of dtype dt at p -> f32; n < 8 reads only n (the rest 0): a row's end may
 * be the end of the caller's buffer. */
INLINE __m256 load8(const int dt, const unsigned char *p, int64_t n) {
    unsigned char tmp[32];
    if (n < 8) {
        size_t esz = dt == KP_F32 ? 4 : dt == KP_FP8_E4M3 ? 1 : 2;
        memset(tmp, 0, sizeof tmp);
        memcpy(tmp, p, (size_t)(n > 0 ? n : 0) * esz);
        p = tmp;
    }
    switch (dt) {
    case KP_F32: return _mm256_loadu_ps((const float *)(const void *)p);
    case KP_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
    case KP_BF16:
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p)), 16));
    default: return fp8_to_f32(_mm_loadl_epi64((const __m128i *)(const void *)p));
    }
}

/* Transposes 8 rows of 8 lanes in place: r[c] becomes column c. */
INLINE void tr8x8(__m256 r[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

/* ---- f32 panels ---- */

INLINE void pack_body(const int dt, const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc, float *dst,
                      int pf) {
    const size_t esz = dt == KP_F32 ? 4 : dt == KP_FP8_E4M3 ? 1 : 2;
    for (int g = 0; g < NR / 8; g++) {
        int rows = ncols - g * 8;
        if (rows > 8) rows = 8;
        if (rows <= 0) {
            for (int64_t k = 0; k < kc; k++) _mm256_store_ps(dst + k * NR + g * 8, _mm256_setzero_ps());
            continue;
        }
        const unsigned char *src[8];
        for (int j = 0; j < 8; j++) src[j] = w->base + (size_t)((n0 + g * 8 + (j < rows ? j : 0)) * w->ld + k0) * esz;
        for (int64_t k = 0; k < kc; k += 8) {
            __m256 r[8];
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                if (j >= rows) {
                    r[j] = _mm256_setzero_ps();
                    continue;
                }
                const unsigned char *p = src[j] + (size_t)k * esz;
                if (pf) _mm_prefetch((const char *)p + pf, _MM_HINT_T0);
                r[j] = load8(dt, p, kc - k);
            }
            tr8x8(r);
            int64_t kn = kc - k < 8 ? kc - k : 8;
            for (int t = 0; t < kn; t++) _mm256_store_ps(dst + (k + t) * NR + g * 8, r[t]);
        }
    }
}

static void pack_b_f32_avx2(const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc, float *dst,
                            float *scales, int pf) {
    switch (w->dtype) {
    case KP_F32: pack_body(KP_F32, w, n0, ncols, k0, kc, dst, pf); return;
    case KP_F16: pack_body(KP_F16, w, n0, ncols, k0, kc, dst, pf); return;
    case KP_BF16: pack_body(KP_BF16, w, n0, ncols, k0, kc, dst, pf); return;
    default: break;
    }
    pack_body(KP_FP8_E4M3, w, n0, ncols, k0, kc, dst, pf);
    for (int64_t s = 0; s * FP8_BLOCK < kc; s++)
        for (int j = 0; j < NR; j++)
            scales[s * NR + j] =
                j < ncols ? w->scale[((n0 + j) / FP8_BLOCK) * w->scale_ld0 + (k0 / FP8_BLOCK + s) * w->scale_ld1] : 0.0f;
}

/* ---- the 6 x 16 micro-kernel ---- */

/* Stores (or adds) 16 columns of one row, the first `cols` of them; sc: column scales. */
INLINE void row_out(float *ci, int cols, __m256 x0, __m256 x1, int acc, const float *sc) {
    if (sc) {
        x0 = _mm256_mul_ps(x0, _mm256_loadu_ps(sc));
        x1 = _mm256_mul_ps(x1, _mm256_loadu_ps(sc + 8));
    }
    if (cols >= 16) {
        if (acc) {
            x0 = _mm256_add_ps(x0, _mm256_loadu_ps(ci));
            x1 = _mm256_add_ps(x1, _mm256_loadu_ps(ci + 8));
        }
        _mm256_storeu_ps(ci, x0);
        _mm256_storeu_ps(ci + 8, x1);
        return;
    }
    __m256i m0 = lane_mask(cols), m1 = lane_mask(cols - 8);
    if (acc) {
        x0 = _mm256_add_ps(x0, _mm256_maskload_ps(ci, m0));
        x1 = _mm256_add_ps(x1, _mm256_maskload_ps(ci + 8, m1));
    }
    _mm256_maskstore_ps(ci, m0, x0);
    _mm256_maskstore_ps(ci + 8, m1, x1);
}

/* MR rows x 16 columns (b: the half panel, NR floats per K step) over K [0, kc), in
 * K sub-blocks of 128 when scales are given. */
INLINE void uk_body(const int MR, int64_t kc, const float *a, int64_t lda, const float *b, float *c, int64_t ldc,
                    int cols, int acc, const float *sc) {
    const int64_t step = sc ? FP8_BLOCK : kc;
    for (int64_t k0 = 0; k0 < kc; k0 += step) {
        int64_t k1 = kc - k0 < step ? kc : k0 + step;
        __m256 x0[MR_AVX2], x1[MR_AVX2];
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) x0[i] = x1[i] = _mm256_setzero_ps();
#pragma GCC unroll 4
        for (int64_t k = k0; k < k1; k++) {
            __m256 b0 = _mm256_load_ps(b + k * NR), b1 = _mm256_load_ps(b + k * NR + 8);
#pragma GCC unroll 6
            for (int i = 0; i < MR; i++) {
                __m256 ai = _mm256_broadcast_ss(a + i * lda + k);
                x0[i] = _mm256_fmadd_ps(ai, b0, x0[i]);
                x1[i] = _mm256_fmadd_ps(ai, b1, x1[i]);
            }
        }
        const float *s = sc ? sc + (k0 / FP8_BLOCK) * NR : NULL;
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) row_out(c + i * ldc, cols, x0[i], x1[i], acc || k0 > 0, s);
    }
}

#define UK_CASE(R)                                                                                                 \
    case R: uk_body(R, kc, a, lda, bh, ch, ldc, cols, acc, sh); break;

static void uk_f32_avx2(int mr, int64_t kc, const float *a, int64_t lda, const float *b, float *c, int64_t ldc,
                        int ncols, int acc, const float *scales) {
    for (int h = 0; h * 16 < ncols; h++) {
        const float *bh = b + 16 * h, *sh = scales ? scales + 16 * h : NULL;
        float *ch = c + 16 * h;
        int cols = ncols - 16 * h;
        switch (mr) {
            UK_CASE(1)
            UK_CASE(2)
            UK_CASE(3)
            UK_CASE(4)
            UK_CASE(5)
            UK_CASE(6)
        default: break;
        }
    }
}

/* ---- a few rows (decode): dot products straight off the weight rows ---- */

/* Lane i of the result is the sum of v[i]'s 8 lanes. */
INLINE __m256 hsum8(const __m256 v[8]) {
    __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
    __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* MRD A rows x J weight rows (MRD * J <= 8), the products summed per 128-K block (FP8:
 * then times the block scale) into lane i * J + j of one vector. */
INLINE void dot_body(const int dt, const int MRD, const int J, int64_t K, const float *a, int64_t lda,
                     const cpu_gemm_w *w, int64_t n0, int ncols, float *c, int64_t ldc, int pf) {
    const size_t esz = dt == KP_F32 ? 4 : dt == KP_FP8_E4M3 ? 1 : 2;
    const int64_t block = dt == KP_FP8_E4M3 ? FP8_BLOCK : K;
    for (int j0 = 0; j0 < ncols; j0 += J) {
        int jn = ncols - j0 < J ? ncols - j0 : J;
        const unsigned char *src[8];
        int64_t row[8];
        for (int j = 0; j < J; j++) {
            row[j] = n0 + j0 + (j < jn ? j : jn - 1);
            src[j] = w->base + (size_t)(row[j] * w->ld) * esz;
        }
        const int64_t pfo = pf > 0 ? pf : (int64_t)J * w->ld * (int64_t)esz;
        __m256 tot = _mm256_setzero_ps();
        for (int64_t k0 = 0; k0 < K; k0 += block) {
            int64_t k1 = K - k0 < block ? K : k0 + block;
            __m256 acc[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
#pragma GCC unroll 2
            for (int64_t k = k0; k < k1; k += 8) {
                int64_t left = k1 - k;
                __m256 av[8];
                __m256i am = lane_mask(left);
#pragma GCC unroll 8
                for (int i = 0; i < MRD; i++)
                    av[i] = left >= 8 ? _mm256_loadu_ps(a + i * lda + k) : _mm256_maskload_ps(a + i * lda + k, am);
                const int do_pf = pf && (((size_t)k * esz) & 63) == 0; /* once per 64-byte line */
#pragma GCC unroll 8
                for (int j = 0; j < J; j++) {
                    const unsigned char *p = src[j] + (size_t)k * esz;
                    if (do_pf) _mm_prefetch((const char *)p + pfo, _MM_HINT_T0);
                    __m256 wv = left >= 8 ? load8(dt, p, 8) : load8(dt, p, left);
#pragma GCC unroll 8
                    for (int i = 0; i < MRD; i++) acc[i * J + j] = _mm256_fmadd_ps(av[i], wv, acc[i * J + j]);
                }
            }
            __m256 sums = hsum8(acc);
            if (dt == KP_FP8_E4M3) {
                float s[8] = {0};
                for (int i = 0; i < MRD; i++)
                    for (int j = 0; j < J; j++)
                        s[i * J + j] = w->scale[(row[j] / FP8_BLOCK) * w->scale_ld0 + (k0 / FP8_BLOCK) * w->scale_ld1];
                tot = _mm256_fmadd_ps(sums, _mm256_loadu_ps(s), tot);
            } else {
                tot = _mm256_add_ps(tot, sums);
            }
        }
        float out[8];
        _mm256_storeu_ps(out, tot);
        for (int i = 0; i < MRD; i++)
            for (int j = 0; j < jn; j++) c[i * ldc + j0 + j] = out[i * J + j];
    }
}

/* 5..8 rows: one weight row at a time, each weight vector converted once for all rows */
#define DOT_CASES(DT)                                                                                              \
    switch (m) {                                                                                                   \
    case 1: dot_body(DT, 1, 8, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                        \
    case 2: dot_body(DT, 2, 4, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                        \
    case 3: dot_body(DT, 3, 2, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                        \
    case 4: dot_body(DT, 4, 2, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                        \
    case 5: dot_body(DT, 5, 1, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                        \
    case 6: dot_body(DT, 6, 1, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                        \
    case 7: dot_body(DT, 7, 1, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                        \
    default: dot_body(DT, 8, 1, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                       \
    }

static void dot_f32_avx2(int m, int64_t K, const float *a, int64_t lda, const cpu_gemm_w *w, int64_t n0, int ncols,
                         float *c, int64_t ldc, int pf) {
    switch (w->dtype) {
    case KP_F32: DOT_CASES(KP_F32) break;
    case KP_F16: DOT_CASES(KP_F16) break;
    case KP_BF16: DOT_CASES(KP_BF16) break;
    default: DOT_CASES(KP_FP8_E4M3) break;
    }
}

const cpu_gemm_isa cpu_gemm_isa_avx2 = {
    .mr = MR_AVX2,
    .fp8_partial = true,
    .pack_f32 = pack_b_f32_avx2,
    .uk_f32 = uk_f32_avx2,
    .dot_rows_max = 8,
    .dot_f32 = dot_f32_avx2,
};
