/*
 * kernels/moe/moe_gemm_sm90_kargs.h - the by-value parameter block of the sm_90a grouped
 * GEMM (moe_gemm_sm90.cl) and its shared-memory formula, shared by the kernel and its
 * planner (backends/gpu/ops/gpu_grouped_gemm_sm90.c). A header of its own, so that the
 * other MoE kernels' build cache keys do not change with it. Offsets and row strides in
 * elements.
 */
#ifndef KP_MOE_GEMM_SM90_KARGS_H
#define KP_MOE_GEMM_SM90_KARGS_H

#include "kp_kargs.h"

/* The sm_90a grouped GEMM (moe_gemm_sm90.cl, CUDA sm_90a only); arguments: offsets,
 * out (16-bit) and outf (f32; the same buffer, the mode picks), this block, then the
 * tensor maps of a ([a_rows, K] from a_off, row stride a_ld) and w ([E * N, K] from w_off,
 * row stride w_sn; experts contiguous: w_se = N w_sn) by value. mode: KP_MOE_GEMM_STORE
 * or KP_MOE_GEMM_STORE_F32. mask_m > 0: the masked layout (offsets holds masked_m [E],
 * m = E * mask_m; moe_gemm_sm90_tiles.h reads it). */
typedef struct kp_moe_gemm_sm90_kargs {
    kp_karg_i64 offsets_off, out_off, out_ld;
    kp_karg_i32 n_exp;
    kp_karg_i32 dense_rows; /* > 0: one expert, rows [0, dense_rows) */
    kp_karg_i32 m, n, k;    /* m: rows of out (offsets clamp to it); k % 64 == 0 */
    kp_karg_i32 mode;
    kp_karg_i32 mask_m; /* > 0: expert e's rows e * mask_m + r, r < clamp(offsets[e], 0, mask_m) */
    kp_karg_i32 pad0;
} kp_moe_gemm_sm90_kargs;
KP_KARGS_OFFSET(kp_moe_gemm_sm90_kargs, n_exp, 24);
KP_KARGS_OFFSET(kp_moe_gemm_sm90_kargs, pad0, 52);
KP_KARGS_SIZE(kp_moe_gemm_sm90_kargs, 56);

/* Its tiles: 128 rows (two consumer warpgroups of 64) x BN (128 or 256) columns, K steps
 * of 64 (one 128-byte swizzle span of 16-bit elements). Dynamic shared memory: 1 KiB of
 * slack to align the stages to the swizzle's 1024-byte repeat, `stages` A and W boxes,
 * a full and an empty mbarrier per stage, the m-tile prefix over the experts (n_exp + 1). */
#define KP_MOE_GEMM_SM90_BM 128
#define KP_MOE_GEMM_SM90_BK 64
#define KP_MOE_GEMM_SM90_MAX_EXPERTS 1024
#define KP_MOE_GEMM_SM90_STAGE_BYTES(bn) ((KP_MOE_GEMM_SM90_BM + (bn)) * KP_MOE_GEMM_SM90_BK * 2)
#define KP_MOE_GEMM_SM90_LOCAL_BYTES(bn, stages, n_exp) \
    (1024 + (stages) * KP_MOE_GEMM_SM90_STAGE_BYTES(bn) + (stages) * 16 + ((n_exp) + 1) * 4)

#endif /* KP_MOE_GEMM_SM90_KARGS_H */
