/*
 * kernels/common/sm90_e4m3_selftest.cl - the sm_90a e4m3 wgmma (common/kp_tile_sm90_e4m3.h)
 * end to end in one warpgroup, with the W8A8 GEMM's block-scale arithmetic:
 *
 *   out[r][n] = sum over slices s of  a_scale[s][r] * w_scale[s] * (A_s B_s^T)[r][n]
 *
 * A [64 x 256] and B [ST_N x 256] are e4m3 bytes, K-major, in two 128-wide K slices. Per
 * slice: one TMA box of each ({128, rows} bytes, 128-byte swizzle: a row of the box is
 * one swizzle span) into the same shared tiles, completing on one mbarrier (phase s, so
 * the barrier's parity flips between slices); four k32 wgmma steps into a fresh f32
 * accumulator (the first step overwrites it); then DeepGEMM's promotion: the slice's
 * result times a per-(row, slice) a-scale times a per-slice w-scale, added to an f32
 * total. ST_N = 64 and 128 keep the total in registers as a W8A8 kernel does; n256's 128
 * accumulators leave no room for a second 128, so ST_N = 256 promotes into `out`
 * itself (each thread reads back only what it wrote).
 *
 * Built for sm_90a once per ST_N by kernels/meson.build (kernel kp_sm90_e4m3_selftest_n<N>);
 * its SASS is checked (QGMMA.64xNx32.F32.E4M3.E4M3 - ptxas's name for 8-bit wgmma -,
 * UTMALDG, SYNCS, no spills: backends/cuda/check_kernels.py --cubin; nvcc 13: 78 / 141 /
 * 254 registers for N = 64 / 128 / 256) and tests/test_cuda_sm90_e4m3.c runs it on an
 * sm_90 GPU.
 * Launch: one block of 128 threads. Arguments: tensor maps of A and B (uint8, dims
 * {256, rows}, boxes {128, rows}, 128-byte swizzle), a_scale [2][64], w_scale [2], out
 * [64][ST_N] f32 row-major.
 */
#include "kp_dialect.h"
#include "common/kp_tile_sm90_e4m3.h"

#ifndef ST_N
#error "sm90_e4m3_selftest.cl: -DST_N=64, 128 or 256"
#endif
#define ST_M 64
#define ST_SLICES 2
#define ST_A_BYTES (ST_M * KP_SM90_E4M3_PANEL_K)
#define ST_B_BYTES (ST_N * KP_SM90_E4M3_PANEL_K)
#define ST_REGS (ST_N / 2) /* accumulator floats per thread: 64 x N / 128 */
#define ST_STEPS (KP_SM90_E4M3_PANEL_K / KP_SM90_E4M3_K_STEP)

#define ST_CAT2(a, b) a##b
#define ST_CAT(a, b) ST_CAT2(a, b)
#define ST_KERNEL_NAME ST_CAT(kp_sm90_e4m3_selftest_n, ST_N)

/* One k32 step of the n-wide instruction. */
#if ST_N == 64
#define ST_WGMMA kp_wgmma_m64n64k32_e4m3
#elif ST_N == 128
#define ST_WGMMA kp_wgmma_m64n128k32_e4m3
#elif ST_N == 256
#define ST_WGMMA kp_wgmma_m64n256k32_e4m3
#define ST_TOTAL_IN_OUT 1
#else
#error "sm90_e4m3_selftest.cl: ST_N must be 64, 128 or 256"
#endif

KP_KERNEL void KP_LAUNCH_BOUNDS(128, 1) ST_KERNEL_NAME(const __grid_constant__ kp_tensor_map ta,
                                                      const __grid_constant__ kp_tensor_map tb,
                                                      const KP_GLOBAL float *KP_RESTRICT a_scale,
                                                      const KP_GLOBAL float *KP_RESTRICT w_scale,
                                                      KP_GLOBAL float *KP_RESTRICT out) {
    /* repeat-aligned tiles (1024 bytes for the 128-byte swizzle) */
    __shared__ __align__(1024) uint4 a_s[ST_A_BYTES / 16], b_s[ST_B_BYTES / 16];
    __shared__ unsigned long long bar;
    const int t = kp_local_id(0);
    if (t == 0) {
        kp_mbar_init(&bar, 1);
        kp_mbar_fence_init();
    }
    kp_barrier();

    const unsigned long long da = KP_SM90_DESC_KMAJOR(kp_local_addr32(a_s), KP_SM90_SWIZZLE_128B);
    const unsigned long long db = KP_SM90_DESC_KMAJOR(kp_local_addr32(b_s), KP_SM90_SWIZZLE_128B);
    const int r0 = KP_SM90_E4M3_ACC_ROW(t, 0); /* this thread's two rows: r0 and r0 + 8 */
    float acc[ST_REGS];
    for (int q = 0; q < ST_REGS; ++q) acc[q] = 0.0f; /* overwritten by step 0; defined for the asm */
#ifndef ST_TOTAL_IN_OUT
    float total[ST_REGS];
    for (int q = 0; q < ST_REGS; ++q) total[q] = 0.0f;
#endif

    for (int s = 0; s < ST_SLICES; ++s) {
        if (t == 0) { /* every warp is past the previous slice's wgmma (barrier below) */
            kp_mbar_expect_tx(&bar, ST_A_BYTES + ST_B_BYTES);
            kp_tma_load_2d(a_s, &ta, s * KP_SM90_E4M3_PANEL_K, 0, &bar);
            kp_tma_load_2d(b_s, &tb, s * KP_SM90_E4M3_PANEL_K, 0, &bar);
        }
        kp_mbar_wait(&bar, (unsigned)s & 1u);

        kp_wgmma_fence();
        for (int k = 0; k < ST_STEPS; ++k)
            ST_WGMMA(acc, KP_SM90_E4M3_DESC_STEP(da, ST_M, k), KP_SM90_E4M3_DESC_STEP(db, ST_N, k), k > 0);
        kp_wgmma_commit();
        kp_wgmma_wait(0);
        kp_barrier(); /* the tiles are free: the next slice's TMA may overwrite them */

        /* promotion: one scale per accumulator row (two per thread) */
        const float w = w_scale[s];
        const float sc0 = a_scale[s * ST_M + r0] * w, sc1 = a_scale[s * ST_M + r0 + 8] * w;
        for (int q = 0; q < ST_REGS; ++q) {
            const float sc = (q % 4) < 2 ? sc0 : sc1;
#ifdef ST_TOTAL_IN_OUT
            float *o = &out[KP_SM90_E4M3_ACC_ROW(t, q) * ST_N + KP_SM90_E4M3_ACC_COL(t, q)];
            *o = (s == 0 ? 0.0f : *o) + acc[q] * sc;
#else
            total[q] += acc[q] * sc;
#endif
        }
    }
#ifndef ST_TOTAL_IN_OUT
    for (int q = 0; q < ST_REGS; ++q)
        out[KP_SM90_E4M3_ACC_ROW(t, q) * ST_N + KP_SM90_E4M3_ACC_COL(t, q)] = total[q];
#endif
}
