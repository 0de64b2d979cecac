/*
 * kernels/moe/moe_gemm_fp8_sm90_kargs.h - the by-value parameter block of the sm_90a W8A8
 * grouped GEMM (moe_gemm_fp8_sm90.cl) and its tile, shared by the kernel and its planner
 * (backends/gpu/ops/gpu_grouped_gemm_sm90.c). A header of its own, so that the other
 * kernels' build cache keys do not change with it. Offsets and strides in elements.
 */
#ifndef KP_MOE_GEMM_FP8_SM90_KARGS_H
#define KP_MOE_GEMM_FP8_SM90_KARGS_H

#include "moe_gemm_sm90_kargs.h"

/* Arguments: offsets, a_scale, w_scale, out (the dtype) and outf (f32; the same buffer,
 * the mode picks), this block, then the tensor maps of a (e4m3 [a_rows, K]) and w (e4m3
 * [E * N, K], experts contiguous) by value. g: the bf16 kernel's block (mode STORE or
 * STORE_F32; k % 128 == 0). The scale of (row r, K slice kb) is
 * a_scale[as_off + r * as_t + kb * as_g]; of (expert e, column block nb, slice kb)
 * w_scale[ws_off + (e * ws_nb + nb) * ws_kb + kb] (include/kport.h's W8A8 contract). */
typedef struct kp_moe_gemm_fp8_sm90_kargs {
    kp_moe_gemm_sm90_kargs g;
    kp_karg_i64 as_off, as_t, as_g, ws_off;
    kp_karg_i32 ws_nb, ws_kb;
} kp_moe_gemm_fp8_sm90_kargs;
KP_KARGS_OFFSET(kp_moe_gemm_fp8_sm90_kargs, as_off, 56);
KP_KARGS_OFFSET(kp_moe_gemm_fp8_sm90_kargs, ws_nb, 88);
KP_KARGS_SIZE(kp_moe_gemm_fp8_sm90_kargs, 96);

/* Its tile: 128 rows (two consumer warpgroups of 64) x 128 columns (one w_scale block; a
 * consumer thread holds 64 promoted f32 and 64 of the slice's: n256 would need 256), K
 * steps of 128 e4m3 (one 128-byte swizzle span and one scale slice). Shared memory as the
 * bf16 kernel's, with stages of 2 x 16 KiB. */
#define KP_MOE_GEMM_FP8_SM90_BN 128
#define KP_MOE_GEMM_FP8_SM90_BK 128
#define KP_MOE_GEMM_FP8_SM90_STAGE_BYTES ((KP_MOE_GEMM_SM90_BM + KP_MOE_GEMM_FP8_SM90_BN) * KP_MOE_GEMM_FP8_SM90_BK)
#define KP_MOE_GEMM_FP8_SM90_LOCAL_BYTES(stages, n_exp) \
    (1024 + (stages) * KP_MOE_GEMM_FP8_SM90_STAGE_BYTES + (stages) * 16 + ((n_exp) + 1) * 4)

#endif /* KP_MOE_GEMM_FP8_SM90_KARGS_H */
