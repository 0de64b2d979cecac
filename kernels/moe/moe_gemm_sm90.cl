/*
 * kernels/moe/moe_gemm_sm90.cl - the grouped GEMM on sm_90a's wgmma + TMA tier (issue 14):
 * out[r, :] = a[r, :] . w[e]^T for the rows r of expert e (offsets[e] .. offsets[e+1],
 * clamped to [0, m], as moe_gemm_common.h's kpg_find reads them; in the masked layout,
 * p.mask_m > 0, rows e * mask_m .. + clamp(masked_m[e], 0, mask_m), the counts read on the
 * device alone: moe_gemm_sm90_tiles.h), 16-bit a and w, out in
 * the dtype (KP_MOE_GEMM_STORE) or f32 (KP_MOE_GEMM_STORE_F32). CUDA sm_90a only: built into
 * the cuda plugin as sm_90a SASS alone (build_fatbins.py reads the KP_ARCHS line below),
 * never for OpenCL or HIP. The planner (backends/gpu/ops/gpu_grouped_gemm_sm90.c) sends
 * every other case (gather, SwiGLU/combine, e4m3 weights or activations, f32 activations,
 * K % 64, unaligned rows, w experts not contiguous) to generation 2.
 *
 * KP_ARCHS: sm_90a
 *
 * kp_grouped_gemm_sm90: persistent and warp-specialised, 384 threads, one CTA per SM.
 *   Tiles: 128 rows of one expert x S90_BN columns (128 or 256), scheduled on the device
 *     from the offsets (moe_gemm_sm90_sched.h, shared with the W8A8 kernel).
 *   Warpgroup 0, the producer (setmaxnreg.dec to S90_REGS_PRODUCER): one thread loads, for
 *     each K step of 64, the A box [128 rows, 64 k] and the W box [S90_BN rows, 64 k] by
 *     TMA (128-byte swizzle) into stage s, after the consumers released it (empty[s]),
 *     announcing the stage's bytes on full[s].
 *   Warpgroups 1 and 2, the consumers (setmaxnreg.inc to S90_REGS_CONSUMER): 64 rows each;
 *     per K step, wait full[s], four wgmma m64nBNk16 on descriptors advanced by 32 bytes
 *     along the swizzled row, commit, and once the previous step's group has retired
 *     (wgmma.wait_group 1) release that step's stage. After the K loop: the accumulators
 *     straight to global memory, rows past the expert's end and columns past N not written.
 *   Rows of the A box past the expert's end are other experts' rows (or zeros past a_rows:
 *   TMA fills out-of-bounds elements with zeros and still counts their bytes); their
 *   results are discarded, so no expert reads another's weights into its output.
 * Options: KP_DTYPE_BF16 / KP_DTYPE_F16, S90_BN (128, 256), S90_STAGES (2..8).
 */
#include "kp_dialect.h"

#if !defined(KP_DTYPE_BF16) && !defined(KP_DTYPE_F16)
#error "moe_gemm_sm90.cl takes bf16 or f16 operands"
#endif
#ifndef S90_BN
#define S90_BN 128
#endif
#ifndef S90_STAGES
#define S90_STAGES 4
#endif
#if S90_BN != 128 && S90_BN != 256
#error "moe_gemm_sm90.cl: S90_BN is 128 or 256"
#endif
#if S90_STAGES < 2 || S90_STAGES > 8
#error "moe_gemm_sm90.cl: 2 <= S90_STAGES <= 8"
#endif

#define S90_BM KP_MOE_GEMM_SM90_BM
#define S90_BK KP_MOE_GEMM_SM90_BK
#define S90_A_BYTES (S90_BM * S90_BK * 2)
#define S90_STAGE_BYTES KP_MOE_GEMM_SM90_STAGE_BYTES(S90_BN)
#define S90_ACC (S90_BN / 2) /* f32 accumulators a consumer thread holds: 64 rows x BN / 128 */
#include "moe_gemm_sm90_sched.h"

#if defined(KP_DTYPE_F16)
#define S90_WGMMA(n) kp_wgmma_m64n##n##k16_f16
#else
#define S90_WGMMA(n) kp_wgmma_m64n##n##k16_bf16
#endif
#define S90_WGMMA_(n) S90_WGMMA(n)
#define S90_MMA S90_WGMMA_(S90_BN)

KP_KERNEL void KP_LAUNCH_BOUNDS(384, 1)
    kp_grouped_gemm_sm90(KP_GLOBAL const int *KP_RESTRICT offsets, KP_GLOBAL kp_storage_t *out,
                         KP_GLOBAL float *outf, kp_moe_gemm_sm90_kargs p, const __grid_constant__ kp_tensor_map ta,
                         const __grid_constant__ kp_tensor_map tw) {
    KP_DYNAMIC_LOCAL(s90_raw);
    const int tid = kp_local_id(0);
    const int nexp = p.dense_rows > 0 ? 1 : p.n_exp;
    const int tiles_n = (p.n + S90_BN - 1) / S90_BN, ksteps = p.k / S90_BK;
    s90_smem sm;
    /* empty: one arrival per consumer warpgroup */
    const int tiles = s90_setup((KP_LOCAL_MEM unsigned char *)s90_raw, offsets, &p, nexp, tiles_n, 2, &sm);
    KP_LOCAL_MEM unsigned char *stages = sm.stages;
    KP_LOCAL_MEM unsigned long long *full = sm.full, *empty = sm.empty;

    if (tid < 128) { /* ---- producer warpgroup ---- */
        kp_setmaxnreg_dec(S90_REGS_PRODUCER);
        if (tid == 0) s90_produce(offsets, &p, &sm, nexp, tiles_n, tiles, ksteps, &ta, &tw);
        return;
    }

    /* ---- consumer warpgroups: rows 64 wg .. 64 wg + 63 of each tile ---- */
    kp_setmaxnreg_inc(S90_REGS_CONSUMER);
    const int wg = tid / 128 - 1, lt = tid % 128, w = lt / 32, l = lt % 32;
    int s = 0;
    unsigned phase = 0;
    float acc[S90_ACC];
    for (int t = kp_group_id(0); t < tiles; t += kp_num_groups(0)) {
        int e, row0, hi, n0;
        s90_tile(offsets, &p, sm.prefix, nexp, tiles_n, t, &e, &row0, &hi, &n0);
#pragma unroll
        for (int i = 0; i < S90_ACC; ++i) acc[i] = 0.0f;
        int prev = -1;
        for (int kb = 0; kb < ksteps; ++kb) {
            kp_mbar_wait(&full[s], phase);
            const unsigned a_addr = kp_local_addr32(stages + s * S90_STAGE_BYTES) + wg * 64 * 128;
            const unsigned long long da = KP_SM90_DESC_KMAJOR(a_addr, KP_SM90_SWIZZLE_128B);
            const unsigned long long db =
                KP_SM90_DESC_KMAJOR(kp_local_addr32(stages + s * S90_STAGE_BYTES + S90_A_BYTES), KP_SM90_SWIZZLE_128B);
#pragma unroll
            for (int i = 0; i < S90_ACC; ++i) kp_wgmma_fence_operand(&acc[i]);
            kp_wgmma_fence();
#pragma unroll
            for (int k = 0; k < S90_BK / 16; ++k)
                S90_MMA(acc, KP_SM90_DESC_ADVANCE(da, 32 * k), KP_SM90_DESC_ADVANCE(db, 32 * k), 1);
            kp_wgmma_commit();
#pragma unroll
            for (int i = 0; i < S90_ACC; ++i) kp_wgmma_fence_operand(&acc[i]);
            kp_wgmma_wait(1); /* the previous step's group has read its stage: release it */
            if (prev >= 0 && lt == 0) kp_mbar_arrive(&empty[prev]);
            prev = s;
            if (++s == S90_STAGES) s = 0, phase ^= 1u;
        }
        kp_wgmma_wait(0);
#pragma unroll
        for (int i = 0; i < S90_ACC; ++i) kp_wgmma_fence_operand(&acc[i]);
        if (prev >= 0 && lt == 0) kp_mbar_arrive(&empty[prev]);

        s90_epilogue(out, outf, &p, acc, row0, hi, n0, wg, w, l);
    }
}
