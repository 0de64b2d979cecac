/*
 * backends/cpu/cpu_gemm_kernels.h — what cpu_gemm.c (the GEMM driver) and
 * cpu_gemm_avx512.c (its AVX-512 packing routines and micro-kernels) share.
 *
 * Packed weight panels hold CPU_GEMM_NR columns:
 *   f32 mode:  [kc][NR] f32, weight (n0 + j, k0 + k) at [k][j];
 *   bf16 mode: [ceil(kc / 2)][NR] pairs of bf16, (n0 + j, k0 + 2p + h) at [p][j].h
 *              (the layout vdpbf16ps multiplies against a broadcast pair of A);
 * columns past the panel's ncols and K past kc are zero. A rows are packed
 * contiguously, lda elements (f32) or pairs (bf16 mode) apart.
 */
#ifndef KPORT_CPU_GEMM_KERNELS_H
#define KPORT_CPU_GEMM_KERNELS_H

#include "cpu_gemm.h"

#define CPU_GEMM_NR 32     /* columns of a packed panel and of a micro-tile */
#define CPU_GEMM_MR 8      /* the most rows of a micro-tile */
#define CPU_GEMM_FP8_BLOCK 128

/* bf16 bits of the FP8 e4m3 magnitudes 0..127 (NaN: 0x7fc0); filled by plan_make. */
extern uint16_t cpu_gemm_fp8_bf16[128];

#if defined(__x86_64__) || defined(__i386__)
#define CPU_GEMM_X86 1
/* Panel of columns [n0, n0 + ncols) x K [k0, k0 + kc) of w, converted to f32 (FP8:
 * times its block scale). pf: prefetch distance in bytes along each row (0: none). */
void cpu_gemm_pack_b_f32_avx512(const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc, float *dst,
                                int pf);
/* The same as bf16 pairs; w is bf16 or FP8 (decoded exactly; then scales gets the
 * block scale of each column for each 128-wide K sub-block: [ceil(kc/128)][NR]). */
void cpu_gemm_pack_b_bf16_avx512(const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc,
                                 uint32_t *dst, float *scales, int pf);
/* c[i * ldc + j] (+)= sum_k a[i * lda + k] * b[k][j], i < mr <= CPU_GEMM_MR,
 * j < ncols <= CPU_GEMM_NR; acc: add to c instead of storing. */
void cpu_gemm_uk_f32_avx512(int mr, int64_t kc, const float *a, int64_t lda, const float *b, float *c, int64_t ldc,
                            int ncols, int acc);
/* The same over kp pairs of bf16. scales non-NULL: every 64 pairs (128 K) the
 * partial sums are multiplied by scales[sub][j] before being added to c. */
void cpu_gemm_uk_bf16_avx512(int mr, int64_t kp, const uint32_t *a, int64_t lda, const uint32_t *b, float *c,
                             int64_t ldc, int ncols, int acc, const float *scales);
/* m <= 4 A rows (bf16, K elements, lda apart) times weight rows [n0, n0 + ncols)
 * (bf16 or FP8), straight off the rows (no packing): c[i * ldc + j]. */
void cpu_gemm_dot_bf16_avx512(int m, int64_t K, const uint16_t *a, int64_t lda, const cpu_gemm_w *w, int64_t n0,
                              int ncols, float *c, int64_t ldc, int pf);
/* The same in f32 mode: f32 A rows (lda floats apart), any weight dtype. */
void cpu_gemm_dot_f32_avx512(int m, int64_t K, const float *a, int64_t lda, const cpu_gemm_w *w, int64_t n0,
                             int ncols, float *c, int64_t ldc, int pf);
#endif

#endif /* KPORT_CPU_GEMM_KERNELS_H */
