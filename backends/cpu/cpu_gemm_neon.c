/*
 * backends/cpu/cpu_gemm_neon.c — NEON (aarch64 Advanced SIMD) packing routines and
 * micro-kernels of the GEMM engine (layouts: cpu_gemm_kernels.h). NEON is part of
 * every aarch64 CPU, so this file needs no extra flags.
 *
 * Micro-kernel: a 6 x 16 tile of C in 24 of the 32 q registers (6 rows x 4 vectors of
 * 4 floats); per K step four vectors of packed weights and six A elements loaded
 * with ld1r (24 FMAs against 10 loads). A 32-column panel is two such tiles.
 * FP8 e4m3 weights decode exactly to f32 with integer ops; their 128 x 128 block
 * scale multiplies each 128-wide K partial sum (fp8_partial), as on AVX2.
 */
#include "cpu_gemm_kernels.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#define NR CPU_GEMM_NR
#define MR_NEON 6
#define FP8_BLOCK CPU_GEMM_FP8_BLOCK
#define INLINE static inline __attribute__((always_inline))

/* 4 FP8 bytes (the low 4 of x, widened) -> f32, exact; 0x7f/0xff are NaN. */
INLINE float32x4_t fp8x4_to_f32(uint32x4_t x) {
    uint32x4_t mag = vandq_u32(x, vdupq_n_u32(0x7f));
    uint32x4_t normal = vaddq_u32(vshlq_n_u32(mag, 20), vdupq_n_u32(120u << 23));
    float32x4_t subn = vmulq_f32(vcvtq_f32_u32(mag), vdupq_n_f32(0x1p-9f));
    float32x4_t v = vbslq_f32(vcltq_u32(mag, vdupq_n_u32(8)), subn, vreinterpretq_f32_u32(normal));
    v = vbslq_f32(vceqq_u32(mag, vdupq_n_u32(0x7f)), vdupq_n_f32(NAN), v);
    return vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(v), vshlq_n_u32(vandq_u32(x, vdupq_n_u32(0x80)), 24)));
}

/* 4 elements of dtype dt at p -> f32; n < 4 reads only n (the rest 0). */
INLINE float32x4_t load4(const int dt, const unsigned char *p, int64_t n) {
    unsigned char tmp[16];
    if (n < 4) {
        size_t esz = dt == KP_F32 ? 4 : dt == KP_FP8_E4M3 ? 1 : 2;
        memset(tmp, 0, sizeof tmp);
        memcpy(tmp, p, (size_t)(n > 0 ? n : 0) * esz);
        p = tmp;
    }
    switch (dt) {
    case KP_F32: return vld1q_f32((const float *)(const void *)p);
    case KP_F16: return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)(const void *)p)));
    case KP_BF16: return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)(const void *)p), 16));
    default: {
        uint32_t w;
        memcpy(&w, p, 4);
        return fp8x4_to_f32(vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(w)))));
    }
    }
}

/* Transposes 4 rows of 4 lanes in place: r[c] becomes column c. */
INLINE void tr4x4(float32x4_t r[4]) {
    float32x4x2_t t01 = vtrnq_f32(r[0], r[1]), t23 = vtrnq_f32(r[2], r[3]);
    r[0] = vcombine_f32(vget_low_f32(t01.val[0]), vget_low_f32(t23.val[0]));
    r[1] = vcombine_f32(vget_low_f32(t01.val[1]), vget_low_f32(t23.val[1]));
    r[2] = vcombine_f32(vget_high_f32(t01.val[0]), vget_high_f32(t23.val[0]));
    r[3] = vcombine_f32(vget_high_f32(t01.val[1]), vget_high_f32(t23.val[1]));
}

/* ---- f32 panels ---- */

INLINE void pack_body(const int dt, const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc, float *dst,
                      int pf) {
    const size_t esz = dt == KP_F32 ? 4 : dt == KP_FP8_E4M3 ? 1 : 2;
    for (int g = 0; g < NR / 4; g++) {
        int rows = ncols - g * 4;
        if (rows > 4) rows = 4;
        if (rows <= 0) {
            for (int64_t k = 0; k < kc; k++) vst1q_f32(dst + k * NR + g * 4, vdupq_n_f32(0.0f));
            continue;
        }
        const unsigned char *src[4];
        for (int j = 0; j < 4; j++) src[j] = w->base + (size_t)((n0 + g * 4 + (j < rows ? j : 0)) * w->ld + k0) * esz;
        for (int64_t k = 0; k < kc; k += 4) {
            float32x4_t r[4];
            for (int j = 0; j < 4; j++) {
                if (j >= rows) {
                    r[j] = vdupq_n_f32(0.0f);
                    continue;
                }
                const unsigned char *p = src[j] + (size_t)k * esz;
                if (pf) __builtin_prefetch(p + pf, 0, 3);
                r[j] = load4(dt, p, kc - k);
            }
            tr4x4(r);
            int64_t kn = kc - k < 4 ? kc - k : 4;
            for (int t = 0; t < kn; t++) vst1q_f32(dst + (k + t) * NR + g * 4, r[t]);
        }
    }
}

static void pack_b_f32_neon(const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc, float *dst,
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
INLINE void row_out(float *ci, int cols, float32x4_t x[4], int acc, const float *sc) {
    if (sc)
        for (int v = 0; v < 4; v++) x[v] = vmulq_f32(x[v], vld1q_f32(sc + 4 * v));
    if (cols >= 16) {
        for (int v = 0; v < 4; v++) vst1q_f32(ci + 4 * v, acc ? vaddq_f32(x[v], vld1q_f32(ci + 4 * v)) : x[v]);
        return;
    }
    float t[16];
    for (int v = 0; v < 4; v++) vst1q_f32(t + 4 * v, x[v]);
    for (int j = 0; j < cols; j++) ci[j] = acc ? ci[j] + t[j] : t[j];
}

INLINE void uk_body(const int MR, int64_t kc, const float *a, int64_t lda, const float *b, float *c, int64_t ldc,
                    int cols, int acc, const float *sc) {
    const int64_t step = sc ? FP8_BLOCK : kc;
    for (int64_t k0 = 0; k0 < kc; k0 += step) {
        int64_t k1 = kc - k0 < step ? kc : k0 + step;
        float32x4_t x[MR_NEON][4];
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++)
            for (int v = 0; v < 4; v++) x[i][v] = vdupq_n_f32(0.0f);
#pragma GCC unroll 2
        for (int64_t k = k0; k < k1; k++) {
            float32x4_t bv[4];
            for (int v = 0; v < 4; v++) bv[v] = vld1q_f32(b + k * NR + 4 * v);
#pragma GCC unroll 6
            for (int i = 0; i < MR; i++) {
                float32x4_t ai = vld1q_dup_f32(a + i * lda + k);
                for (int v = 0; v < 4; v++) x[i][v] = vfmaq_f32(x[i][v], ai, bv[v]);
            }
        }
        const float *s = sc ? sc + (k0 / FP8_BLOCK) * NR : NULL;
        for (int i = 0; i < MR; i++) row_out(c + i * ldc, cols, x[i], acc || k0 > 0, s);
    }
}

#define UK_CASE(R)                                                                                                 \
    case R: uk_body(R, kc, a, lda, bh, ch, ldc, cols, acc, sh); break;

static void uk_f32_neon(int mr, int64_t kc, const float *a, int64_t lda, const float *b, float *c, int64_t ldc,
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

/* MRD A rows x J weight rows; per 128-K block (FP8: then times the block scale). */
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
        float tot[4][8] = {{0}};
        for (int64_t k0 = 0; k0 < K; k0 += block) {
            int64_t k1 = K - k0 < block ? K : k0 + block;
            float32x4_t acc[4][8];
            for (int i = 0; i < MRD; i++)
                for (int j = 0; j < J; j++) acc[i][j] = vdupq_n_f32(0.0f);
            for (int64_t k = k0; k < k1; k += 4) {
                int64_t left = k1 - k;
                float32x4_t av[4];
                for (int i = 0; i < MRD; i++)
                    av[i] = left >= 4 ? vld1q_f32(a + i * lda + k) : load4(KP_F32, (const unsigned char *)(a + i * lda + k), left);
                const int do_pf = pf && (((size_t)k * esz) & 63) == 0;
                for (int j = 0; j < J; j++) {
                    const unsigned char *p = src[j] + (size_t)k * esz;
                    if (do_pf) __builtin_prefetch(p + pfo, 0, 3);
                    float32x4_t wv = load4(dt, p, left >= 4 ? 4 : left);
                    for (int i = 0; i < MRD; i++) acc[i][j] = vfmaq_f32(acc[i][j], av[i], wv);
                }
            }
            for (int j = 0; j < J; j++) {
                float s = dt == KP_FP8_E4M3
                              ? w->scale[(row[j] / FP8_BLOCK) * w->scale_ld0 + (k0 / FP8_BLOCK) * w->scale_ld1]
                              : 1.0f;
                for (int i = 0; i < MRD; i++) tot[i][j] += vaddvq_f32(acc[i][j]) * s;
            }
        }
        for (int i = 0; i < MRD; i++)
            for (int j = 0; j < jn; j++) c[i * ldc + j0 + j] = tot[i][j];
    }
}

#define DOT_CASES(DT)                                                                                              \
    switch (m) {                                                                                                   \
    case 1: dot_body(DT, 1, 8, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                        \
    case 2: dot_body(DT, 2, 6, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                        \
    case 3: dot_body(DT, 3, 4, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                        \
    default: dot_body(DT, 4, 4, K, a, lda, w, n0, ncols, c, ldc, pf); break;                                       \
    }

static void dot_f32_neon(int m, int64_t K, const float *a, int64_t lda, const cpu_gemm_w *w, int64_t n0, int ncols,
                         float *c, int64_t ldc, int pf) {
    switch (w->dtype) {
    case KP_F32: DOT_CASES(KP_F32) break;
    case KP_F16: DOT_CASES(KP_F16) break;
    case KP_BF16: DOT_CASES(KP_BF16) break;
    default: DOT_CASES(KP_FP8_E4M3) break;
    }
}

const cpu_gemm_isa cpu_gemm_isa_neon = {
    .mr = MR_NEON,
    .fp8_partial = true,
    .pack_f32 = pack_b_f32_neon,
    .uk_f32 = uk_f32_neon,
    .dot_rows_max = 4,
    .dot_f32 = dot_f32_neon,
};

/* The bf16 level: this f32 mode plus bfdot (cpu_gemm_neon_bf16.c, built for +bf16). */
const cpu_gemm_isa cpu_gemm_isa_neon_bf16 = {
    .mr = MR_NEON,
    .fp8_partial = true,
    .pack_f32 = pack_b_f32_neon,
    .uk_f32 = uk_f32_neon,
    .dot_rows_max = 4,
    .dot_f32 = dot_f32_neon,
    .bf16_takes_fp8 = false, /* FP8 stays in f32 mode, decoded in registers */
    .pack_bf16 = cpu_gemm_pack_b_bf16_neon,
    .uk_bf16 = cpu_gemm_uk_bf16_neon,
    .dot_bf16 = cpu_gemm_dot_bf16_neon,
};
#endif /* __aarch64__ */
