/*
 * kernels/moe/moe_gemm_fp8_sm90.cl - the W8A8 grouped GEMM on sm_90a's wgmma + TMA tier
 * (issue 14): for the rows r of expert e (offsets[e] .. offsets[e+1], clamped to [0, m];
 * in the masked layout, p.g.mask_m > 0, the flat rows e * mask_m .. + clamp(masked_m[e], 0,
 * mask_m), counts read on the device alone, a_scale indexed by the flat row),
 *     out[r, n] = sum over K slices kb of (a[r, kb] . w[e, n, kb]) * (a_scale(r, kb) * w_scale[e, n/128, kb])
 * with a and w e4m3 (K slices of 128), f32 scales, out in the dtype (KP_DTYPE_F32 / _F16 /
 * _BF16; KP_MOE_GEMM_STORE) or f32 (KP_MOE_GEMM_STORE_F32): the arithmetic of
 * moe_gemm_fp8_gen2.cl (each slice summed on its own in f32, then promoted once with
 * fma(slice, a_scale * w_scale, acc): DeepGEMM's promotion). CUDA sm_90a only, built as
 * sm_90a SASS alone; the planner (backends/gpu/ops/gpu_grouped_gemm_sm90.c) runs it only
 * when KPORT_GPU_KERNELS forces grouped_gemm=sm90, and sends what it does not cover
 * (gather, the SwiGLU/combine epilogues, unaligned rows, w experts not contiguous) to
 * generation 2.
 *
 * KP_ARCHS: sm_90a
 *
 * kp_grouped_gemm_sm90_e4m3: persistent and warp-specialised, 384 threads, one CTA per SM,
 *   the bf16 kernel's scheduler, setup, producer and epilogue (moe_gemm_sm90_sched.h).
 *   Tiles 128 x 128; a stage holds the A box [128 rows, 128 k] and the W box [128 rows,
 *   128 k] of e4m3 (128-byte swizzle, one panel each).
 *   Warpgroup 0, the producer: one thread issues the TMA loads of each K slice.
 *   Warpgroups 1 and 2, the consumers: 64 rows each; per K slice: load the slice's scales
 *   (its two rows' a_scale, the tile's one w_scale: plain loads issued before the wait, so
 *   their latency hides behind it), wait full[s], four wgmma m64n128k32 e4m3 into a fresh
 *   slice accumulator (the first overwrites it), commit, wait for the group, release the
 *   stage (one arrival per consumer warp), promote the slice into the running f32 tile.
 *   After the K loop, the masked epilogue. Rows past the expert's end (and past a_rows)
 *   read no a_scale (0 there: their results are discarded).
 * Precision: Hopper's FP8 tensor cores add each instruction's 32 products in a fixed-point
 *   adder that keeps ~14 bits below the largest one (DeepSeek-V3 report, section 3.5.2), and
 *   accumulate across instructions at that precision too; the promotion after every 128 K
 *   (4 instructions) bounds it as DeepGEMM does, but a slice's sum can still be ~2^-13 off
 *   relative to its largest product, where gen2 (f16 HMMA on sm_90a) sums it in f32. The
 *   W8A8 conformance on the H200 (ci/gpu-check, variant sm90w8a8) decides whether its
 *   f32-exact error model must admit that for this tier.
 * Options: KP_DTYPE_F32 / _F16 / _BF16 (out), S90_STAGES (2..8).
 */
#include "kp_dialect.h"

#ifndef S90_STAGES
#define S90_STAGES 4
#endif
#if S90_STAGES < 2 || S90_STAGES > 8
#error "moe_gemm_fp8_sm90.cl: 2 <= S90_STAGES <= 8"
#endif

#include "moe_gemm_fp8_sm90_kargs.h"
#define S90_BM KP_MOE_GEMM_SM90_BM
#define S90_BN KP_MOE_GEMM_FP8_SM90_BN
#define S90_BK KP_MOE_GEMM_FP8_SM90_BK
#define S90_A_BYTES (S90_BM * S90_BK)
#define S90_STAGE_BYTES KP_MOE_GEMM_FP8_SM90_STAGE_BYTES
#define S90_ACC (S90_BN / 2) /* f32 a consumer thread holds per 64 x 128 tile */
#include "moe_gemm_sm90_sched.h"
#include "common/kp_tile_sm90_e4m3.h"

KP_KERNEL void KP_LAUNCH_BOUNDS(384, 1)
    kp_grouped_gemm_sm90_e4m3(KP_GLOBAL const int *KP_RESTRICT offsets, KP_GLOBAL const float *KP_RESTRICT as,
                              KP_GLOBAL const float *KP_RESTRICT ws, KP_GLOBAL kp_storage_t *out,
                              KP_GLOBAL float *outf, kp_moe_gemm_fp8_sm90_kargs p,
                              const __grid_constant__ kp_tensor_map ta, const __grid_constant__ kp_tensor_map tw) {
    KP_DYNAMIC_LOCAL(s90_raw);
    const int tid = kp_local_id(0);
    const int nexp = p.g.dense_rows > 0 ? 1 : p.g.n_exp;
    const int tiles_n = (p.g.n + S90_BN - 1) / S90_BN, ksteps = p.g.k / S90_BK;
    s90_smem sm;
    /* empty: one arrival per consumer warp (8) */
    const int tiles = s90_setup((KP_LOCAL_MEM unsigned char *)s90_raw, offsets, &p.g, nexp, tiles_n, 8, &sm);

    if (tid < 128) { /* ---- producer warpgroup ---- */
        kp_setmaxnreg_dec(S90_REGS_PRODUCER);
        if (tid == 0) s90_produce(offsets, &p.g, &sm, nexp, tiles_n, tiles, ksteps, &ta, &tw);
        return;
    }

    /* ---- consumer warpgroups: rows 64 wg .. 64 wg + 63 of each tile ---- */
    kp_setmaxnreg_inc(S90_REGS_CONSUMER);
    const int wg = tid / 128 - 1, lt = tid % 128, w = lt / 32, l = lt % 32;
    int s = 0;
    unsigned phase = 0;
    float acc[S90_ACC], sl[S90_ACC];
    for (int t = kp_group_id(0); t < tiles; t += kp_num_groups(0)) {
        int e, row0, hi, n0;
        s90_tile(offsets, &p.g, sm.prefix, nexp, tiles_n, t, &e, &row0, &hi, &n0);
#pragma unroll
        for (int i = 0; i < S90_ACC; ++i) acc[i] = 0.0f;
        /* this thread's two rows (KP_SM90_E4M3_ACC_ROW: q % 4 < 2 the first, else 8 below) */
        const int r0 = row0 + wg * 64 + 16 * w + l / 4, r1 = r0 + 8;
        KP_GLOBAL const float *as0 = as + p.as_off + (long long)(r0 < hi ? r0 : 0) * p.as_t;
        KP_GLOBAL const float *as1 = as + p.as_off + (long long)(r1 < hi ? r1 : 0) * p.as_t;
        KP_GLOBAL const float *wsp = ws + p.ws_off + ((long long)e * p.ws_nb + n0 / 128) * p.ws_kb;
        for (int kb = 0; kb < ksteps; ++kb) {
            const float w_s = wsp[kb];
            const float a0 = r0 < hi ? as0[(long long)kb * p.as_g] : 0.0f;
            const float a1 = r1 < hi ? as1[(long long)kb * p.as_g] : 0.0f;
            kp_mbar_wait(&sm.full[s], phase);
            KP_LOCAL_MEM unsigned char *st = sm.stages + s * S90_STAGE_BYTES;
            const unsigned long long da =
                KP_SM90_DESC_KMAJOR(kp_local_addr32(st) + wg * 64 * S90_BK, KP_SM90_SWIZZLE_128B);
            const unsigned long long db = KP_SM90_DESC_KMAJOR(kp_local_addr32(st + S90_A_BYTES), KP_SM90_SWIZZLE_128B);
#pragma unroll
            for (int i = 0; i < S90_ACC; ++i) kp_wgmma_fence_operand(&sl[i]);
            kp_wgmma_fence();
#pragma unroll
            for (int k = 0; k < S90_BK / KP_SM90_E4M3_K_STEP; ++k)
                kp_wgmma_m64n128k32_e4m3(sl, KP_SM90_E4M3_DESC_STEP(da, 64, k), KP_SM90_E4M3_DESC_STEP(db, S90_BN, k),
                                         k > 0);
            kp_wgmma_commit();
#pragma unroll
            for (int i = 0; i < S90_ACC; ++i) kp_wgmma_fence_operand(&sl[i]);
            kp_wgmma_wait(0); /* the slice is in registers and the stage read: release it */
#pragma unroll
            for (int i = 0; i < S90_ACC; ++i) kp_wgmma_fence_operand(&sl[i]);
            if (l == 0) kp_mbar_arrive(&sm.empty[s]);
            if (++s == S90_STAGES) s = 0, phase ^= 1u;
            const float s0 = a0 * w_s, s1 = a1 * w_s;
#pragma unroll
            for (int q = 0; q < S90_ACC; ++q) acc[q] = kp_fmaf(sl[q], (q & 2) ? s1 : s0, acc[q]);
        }
        s90_epilogue(out, outf, &p.g, acc, row0, hi, n0, wg, w, l);
    }
}
