/*
 * kernels/common/sm90_selftest.cl - the sm_90a tile primitives (common/kp_tile_sm90.h)
 * end to end in one warpgroup: two TMA boxes into 128-byte-swizzled shared memory,
 * completing on one mbarrier, then D = A B^T by four wgmma k16 steps on descriptors
 * advanced along K. A and B are [64 x 64] bf16, K-major (B's row n is column n of B^T);
 * D is f32 [64 x 64], row-major. Built for sm_90a by kernels/meson.build; its SASS is
 * checked (HGMMA, UTMALDG, SYNCS: tests/test_cuda_static.c) and ci/gpu-check runs it.
 * Launch: one block of 128 threads; the tensor maps: 64 x 64 bf16 boxes, 128-byte swizzle.
 */
#include "kp_dialect.h"
#include "common/kp_tile_sm90.h"

#define ST_N 64
#define ST_TILE_BYTES (ST_N * ST_N * 2)

KP_KERNEL void KP_LAUNCH_BOUNDS(128, 1) kp_sm90_selftest(const __grid_constant__ kp_tensor_map ta,
                                                        const __grid_constant__ kp_tensor_map tb,
                                                        KP_GLOBAL float *KP_RESTRICT d_out) {
    /* repeat-aligned tiles (1024 bytes for the 128-byte swizzle) */
    __shared__ __align__(1024) uint4 a_s[ST_TILE_BYTES / 16], b_s[ST_TILE_BYTES / 16];
    __shared__ unsigned long long bar;
    const int t = kp_local_id(0);
    if (t == 0) {
        kp_mbar_init(&bar, 1);
        kp_mbar_fence_init();
    }
    kp_barrier();
    if (t == 0) {
        kp_mbar_expect_tx(&bar, 2 * ST_TILE_BYTES);
        kp_tma_load_2d(a_s, &ta, 0, 0, &bar);
        kp_tma_load_2d(b_s, &tb, 0, 0, &bar);
    }
    kp_mbar_wait(&bar, 0);

    float acc[32];
    for (int i = 0; i < 32; ++i) acc[i] = 0.0f;
    const unsigned long long da = KP_SM90_DESC_KMAJOR(kp_local_addr32(a_s), KP_SM90_SWIZZLE_128B);
    const unsigned long long db = KP_SM90_DESC_KMAJOR(kp_local_addr32(b_s), KP_SM90_SWIZZLE_128B);
    kp_wgmma_fence();
    for (int k = 0; k < ST_N / 16; ++k)
        kp_wgmma_m64n64k16_bf16(acc, KP_SM90_DESC_ADVANCE(da, 32 * k), KP_SM90_DESC_ADVANCE(db, 32 * k), k > 0);
    kp_wgmma_commit();
    kp_wgmma_wait(0);

    const int w = t / 32, l = t % 32;
    for (int i = 0; i < ST_N / 8; ++i)
        for (int j = 0; j < 4; ++j)
            d_out[(16 * w + l / 4 + 8 * (j / 2)) * ST_N + 8 * i + 2 * (l % 4) + (j % 2)] = acc[4 * i + j];
}
