/*
 * backends/cpu/cpu_gemm_neon_bf16.c — the bf16 mode of the NEON GEMM on CPUs with
 * FEAT_BF16 (Neoverse V1/V2/N2: Graviton 3/4, Grace): bfdot multiplies pairs of bf16
 * (exact products, f32 sums), twice the f32 FMA rate per instruction. meson builds
 * this file alone with -march=armv8.2-a+bf16; it runs only when getauxval reports
 * HWCAP2_BF16. Packed panels hold pairs (cpu_gemm_kernels.h), as for vdpbf16ps.
 *
 * bfdot flushes denormal inputs and rounds its internal sums its own way (round to
 * odd without FEAT_EBF16): results differ from f32 FMAs by a few f32 ulps of the sum.
 */
#include "cpu_gemm_kernels.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#define NR CPU_GEMM_NR
#define MR_NEON 6
#define INLINE static inline __attribute__((always_inline))

/* 8 bf16 at p as a vector; n < 8 reads only n (the rest 0). */
INLINE uint16x8_t load8_u16(const uint16_t *p, int64_t n) {
    if (n >= 8) return vld1q_u16(p);
    uint16_t t[8] = {0};
    memcpy(t, p, (size_t)(n > 0 ? n : 0) * 2);
    return vld1q_u16(t);
}

/* Transposes 4 rows of 4 32-bit lanes in place: r[c] becomes column c. */
INLINE void tr4x4(uint32x4_t r[4]) {
    uint32x4x2_t t01 = vtrnq_u32(r[0], r[1]), t23 = vtrnq_u32(r[2], r[3]);
    r[0] = vcombine_u32(vget_low_u32(t01.val[0]), vget_low_u32(t23.val[0]));
    r[1] = vcombine_u32(vget_low_u32(t01.val[1]), vget_low_u32(t23.val[1]));
    r[2] = vcombine_u32(vget_high_u32(t01.val[0]), vget_high_u32(t23.val[0]));
    r[3] = vcombine_u32(vget_high_u32(t01.val[1]), vget_high_u32(t23.val[1]));
}

/* bf16 weights only (the level's bf16_takes_fp8 is false): scales unused. */
void cpu_gemm_pack_b_bf16_neon(const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc, uint32_t *dst,
                               float *scales, int pf) {
    (void)scales;
    for (int g = 0; g < NR / 4; g++) {
        int rows = ncols - g * 4;
        if (rows > 4) rows = 4;
        const uint16_t *src[4];
        for (int j = 0; j < 4; j++)
            src[j] = (const uint16_t *)(const void *)w->base + (n0 + g * 4 + (j < rows && rows > 0 ? j : 0)) * w->ld + k0;
        for (int64_t k = 0; k < kc; k += 8) {
            uint32x4_t r[4];
            for (int j = 0; j < 4; j++) {
                if (j >= rows) {
                    r[j] = vdupq_n_u32(0);
                    continue;
                }
                if (pf) __builtin_prefetch((const unsigned char *)(src[j] + k) + pf, 0, 3);
                r[j] = vreinterpretq_u32_u16(load8_u16(src[j] + k, kc - k));
            }
            tr4x4(r);
            int64_t pn = (kc - k + 1) / 2;
            if (pn > 4) pn = 4;
            for (int t = 0; t < pn; t++) vst1q_u32(dst + (k / 2 + t) * NR + g * 4, r[t]);
        }
    }
}

INLINE void row_out(float *ci, int cols, float32x4_t x[4], int acc) {
    if (cols >= 16) {
        for (int v = 0; v < 4; v++) vst1q_f32(ci + 4 * v, acc ? vaddq_f32(x[v], vld1q_f32(ci + 4 * v)) : x[v]);
        return;
    }
    float t[16];
    for (int v = 0; v < 4; v++) vst1q_f32(t + 4 * v, x[v]);
    for (int j = 0; j < cols; j++) ci[j] = acc ? ci[j] + t[j] : t[j];
}

/* MR rows x 16 columns over kp pairs: 24 accumulators, four panel vectors and one
 * broadcast A pair per step. */
INLINE void uk_body(const int MR, int64_t kp, const uint32_t *a, int64_t lda, const uint32_t *b, float *c,
                    int64_t ldc, int cols, int acc) {
    float32x4_t x[MR_NEON][4];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < 4; v++) x[i][v] = vdupq_n_f32(0.0f);
#pragma GCC unroll 2
    for (int64_t p = 0; p < kp; p++) {
        bfloat16x8_t bv[4];
        for (int v = 0; v < 4; v++) bv[v] = vreinterpretq_bf16_u32(vld1q_u32(b + p * NR + 4 * v));
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            bfloat16x8_t ai = vreinterpretq_bf16_u32(vld1q_dup_u32(a + i * lda + p));
            for (int v = 0; v < 4; v++) x[i][v] = vbfdotq_f32(x[i][v], ai, bv[v]);
        }
    }
    for (int i = 0; i < MR; i++) row_out(c + i * ldc, cols, x[i], acc);
}

#define UK_CASE(R)                                                                                                 \
    case R: uk_body(R, kp, a, lda, b + 16 * h, c + 16 * h, ldc, ncols - 16 * h, acc); break;

/* scales: always NULL here, FP8 takes the f32 mode at this level. */
void cpu_gemm_uk_bf16_neon(int mr, int64_t kp, const uint32_t *a, int64_t lda, const uint32_t *b, float *c,
                           int64_t ldc, int ncols, int acc, const float *scales) {
    (void)scales;
    for (int h = 0; h * 16 < ncols; h++) {
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

/* m <= 4 bf16 rows times J bf16 weight rows, 8 K per bfdot, straight off the rows. */
INLINE void dot_body(const int MRD, const int J, int64_t K, const uint16_t *a, int64_t lda, const cpu_gemm_w *w,
                     int64_t n0, int ncols, float *c, int64_t ldc, int pf) {
    for (int j0 = 0; j0 < ncols; j0 += J) {
        int jn = ncols - j0 < J ? ncols - j0 : J;
        const uint16_t *src[8];
        for (int j = 0; j < J; j++)
            src[j] = (const uint16_t *)(const void *)w->base + (n0 + j0 + (j < jn ? j : jn - 1)) * w->ld;
        const int64_t pfo = pf > 0 ? pf : (int64_t)J * w->ld * 2;
        float32x4_t acc[4][8];
        for (int i = 0; i < MRD; i++)
            for (int j = 0; j < J; j++) acc[i][j] = vdupq_n_f32(0.0f);
        for (int64_t k = 0; k < K; k += 8) {
            int64_t left = K - k;
            bfloat16x8_t av[4];
            for (int i = 0; i < MRD; i++) av[i] = vreinterpretq_bf16_u16(load8_u16(a + i * lda + k, left));
            const int do_pf = pf && (k & 31) == 0; /* once per 64-byte line */
            for (int j = 0; j < J; j++) {
                if (do_pf) __builtin_prefetch((const unsigned char *)(src[j] + k) + pfo, 0, 3);
                bfloat16x8_t wv = vreinterpretq_bf16_u16(load8_u16(src[j] + k, left));
                for (int i = 0; i < MRD; i++) acc[i][j] = vbfdotq_f32(acc[i][j], av[i], wv);
            }
        }
        for (int i = 0; i < MRD; i++)
            for (int j = 0; j < jn; j++) c[i * ldc + j0 + j] = vaddvq_f32(acc[i][j]);
    }
}

void cpu_gemm_dot_bf16_neon(int m, int64_t K, const uint16_t *a, int64_t lda, const cpu_gemm_w *w, int64_t n0,
                            int ncols, float *c, int64_t ldc, int pf) {
    switch (m) {
    case 1: dot_body(1, 8, K, a, lda, w, n0, ncols, c, ldc, pf); break;
    case 2: dot_body(2, 6, K, a, lda, w, n0, ncols, c, ldc, pf); break;
    case 3: dot_body(3, 4, K, a, lda, w, n0, ncols, c, ldc, pf); break;
    default: dot_body(4, 4, K, a, lda, w, n0, ncols, c, ldc, pf); break;
    }
}
#endif /* __aarch64__ */
