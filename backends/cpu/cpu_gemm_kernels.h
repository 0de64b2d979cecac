/*
 * backends/cpu/cpu_gemm_kernels.h — what cpu_gemm.c (the GEMM driver) and the
 * per-level packing routines and micro-kernels (cpu_gemm_avx2.c, cpu_gemm_avx512.c,
 * cpu_gemm_neon.c, cpu_gemm_neon_bf16.c) share.
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
#define CPU_GEMM_MR 8      /* the most rows of a micro-tile, any level */
#define CPU_GEMM_FP8_BLOCK 128
#define CPU_GEMM_DOT_MAX 8 /* the most rows any level's dot kernels take */

/* bf16 bits of the FP8 e4m3 magnitudes 0..127 (NaN: 0x7fc0), and the f32 value of
 * every FP8 byte; filled by plan_make. */
extern uint16_t cpu_gemm_fp8_bf16[128];
extern float cpu_gemm_fp8_f32[256];

/* The packing routines and micro-kernels of one SIMD level (cpu_gemm_<level>.c),
 * chosen once per plan (cpu_gemm_isa_for). */
typedef struct cpu_gemm_isa {
    int mr;           /* rows of a micro-tile: uk_* take mr <= this many */
    bool fp8_partial; /* FP8 weights in f32 mode: pack_f32 decodes without the block
                         scale and writes scales; uk_f32 multiplies each 128-wide K
                         partial sum by it (otherwise pack_f32 scales each weight) */
    /* Panel of columns [n0, n0 + ncols) x K [k0, k0 + kc) of w as f32. FP8: times its
     * block scale, or (fp8_partial) unscaled with scales [ceil(kc/128)][NR] of each
     * column. pf: prefetch distance in bytes along each row (0: none). */
    void (*pack_f32)(const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc, float *dst, float *scales,
                     int pf);
    /* c[i * ldc + j] (+)= sum_k a[i * lda + k] * b[k][j], i < mr, j < ncols <= NR;
     * acc: add to c instead of storing. scales non-NULL: every 128 K the partial sums
     * are multiplied by scales[sub][j] before being added to c. */
    void (*uk_f32)(int mr, int64_t kc, const float *a, int64_t lda, const float *b, float *c, int64_t ldc, int ncols,
                   int acc, const float *scales);
    /* m <= dot_rows_max f32 A rows (lda floats apart) times weight rows [n0, n0 + ncols)
     * straight off the rows, no packing: c[i * ldc + j]. NULL: decode packs like the
     * other path. */
    int dot_rows_max; /* the most rows dot_f32 / dot_bf16 take (<= CPU_GEMM_DOT_MAX) */
    void (*dot_f32)(int m, int64_t K, const float *a, int64_t lda, const cpu_gemm_w *w, int64_t n0, int ncols,
                    float *c, int64_t ldc, int pf);
    /* bf16 mode (bf16 x bf16 products exact in f32); NULL: the level has none. */
    bool bf16_takes_fp8; /* FP8 weights decode (exactly) to bf16 in this mode */
    void (*pack_bf16)(const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc, uint32_t *dst,
                      float *scales, int pf);
    void (*uk_bf16)(int mr, int64_t kp, const uint32_t *a, int64_t lda, const uint32_t *b, float *c, int64_t ldc,
                    int ncols, int acc, const float *scales);
    void (*dot_bf16)(int m, int64_t K, const uint16_t *a, int64_t lda, const cpu_gemm_w *w, int64_t n0, int ncols,
                     float *c, int64_t ldc, int pf);
} cpu_gemm_isa;

const cpu_gemm_isa *cpu_gemm_isa_for(cpu_simd_level l);

extern const cpu_gemm_isa cpu_gemm_isa_portable;
#if defined(__x86_64__) || defined(__i386__)
#define CPU_GEMM_X86 1
extern const cpu_gemm_isa cpu_gemm_isa_avx2;        /* cpu_gemm_avx2.c */
extern const cpu_gemm_isa cpu_gemm_isa_avx512;      /* cpu_gemm_avx512.c */
extern const cpu_gemm_isa cpu_gemm_isa_avx512_bf16; /* cpu_gemm_avx512.c */
#endif
#if defined(__aarch64__)
#define CPU_GEMM_ARM64 1
extern const cpu_gemm_isa cpu_gemm_isa_neon;      /* cpu_gemm_neon.c */
extern const cpu_gemm_isa cpu_gemm_isa_neon_bf16; /* cpu_gemm_neon.c, with: */
/* the bf16 mode of cpu_gemm_isa_neon_bf16 (cpu_gemm_neon_bf16.c, built for +bf16) */
void cpu_gemm_pack_b_bf16_neon(const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc, uint32_t *dst,
                               float *scales, int pf);
void cpu_gemm_uk_bf16_neon(int mr, int64_t kp, const uint32_t *a, int64_t lda, const uint32_t *b, float *c,
                           int64_t ldc, int ncols, int acc, const float *scales);
void cpu_gemm_dot_bf16_neon(int m, int64_t K, const uint16_t *a, int64_t lda, const cpu_gemm_w *w, int64_t n0,
                            int ncols, float *c, int64_t ldc, int pf);
#endif

#endif /* KPORT_CPU_GEMM_KERNELS_H */
