/*
 * kernels/common/sm90_attn_selftest.cl - the sm_90a attention primitives
 * (common/kp_tile_sm90_attn.h) end to end in one warpgroup, the two products of one
 * FlashAttention-3 step without the softmax: S = Q K^T by wgmma from descriptors (both
 * K-major), P = S rounded to bf16 in registers and used as the A operand of the next
 * wgmma without a trip through shared memory, O = P V with V in its natural [kv, d]
 * layout (B MN-major, imm-trans-b = 1, two 64-column panels: LBO in use).
 * Q, K: [64 x 64] bf16; V: [64 kv x 128 d] bf16; out: S f32 [64 x 64] and O f32 [64 x 128],
 * row-major. Built for sm_90a by kernels/meson.build; its SASS is checked (HGMMA, UTMALDG,
 * SYNCS: tests/test_cuda_static.c) and tests/test_cuda_sm90.c runs it on a Hopper GPU.
 * Launch: one block of 128 threads; tensor maps: 64 x 64 bf16 boxes, 128-byte swizzle
 * (V's map: dims {128, 64}, the same box, loaded at columns 0 and 64).
 */
#include "kp_dialect.h"
#include "common/kp_tile_sm90_attn.h"

#define ST_N 64
#define ST_D 128
#define ST_BOX_BYTES (ST_N * 64 * 2)

KP_KERNEL void KP_LAUNCH_BOUNDS(128, 1) kp_sm90_attn_selftest(const __grid_constant__ kp_tensor_map tq,
                                                             const __grid_constant__ kp_tensor_map tk,
                                                             const __grid_constant__ kp_tensor_map tv,
                                                             KP_GLOBAL float *KP_RESTRICT s_out,
                                                             KP_GLOBAL float *KP_RESTRICT o_out) {
    /* repeat-aligned tiles (1024 bytes for the 128-byte swizzle); V: two panels of 64 d */
    __shared__ __align__(1024) uint4 q_s[ST_BOX_BYTES / 16], k_s[ST_BOX_BYTES / 16], v_s[2 * ST_BOX_BYTES / 16];
    __shared__ unsigned long long bar;
    const int t = kp_local_id(0);
    if (t == 0) {
        kp_mbar_init(&bar, 1);
        kp_mbar_fence_init();
    }
    kp_barrier();
    if (t == 0) {
        kp_mbar_expect_tx(&bar, 4 * ST_BOX_BYTES);
        kp_tma_load_2d(q_s, &tq, 0, 0, &bar);
        kp_tma_load_2d(k_s, &tk, 0, 0, &bar);
        kp_tma_load_2d(v_s, &tv, 0, 0, &bar);
        kp_tma_load_2d(v_s + ST_BOX_BYTES / 16, &tv, 64, 0, &bar);
    }
    kp_mbar_wait(&bar, 0);

    float s[ST_N / 2];
    for (int i = 0; i < ST_N / 2; ++i) s[i] = 0.0f;
    const unsigned long long dq = KP_SM90_DESC_KMAJOR(kp_local_addr32(q_s), KP_SM90_SWIZZLE_128B);
    const unsigned long long dk = KP_SM90_DESC_KMAJOR(kp_local_addr32(k_s), KP_SM90_SWIZZLE_128B);
    kp_wgmma_fence();
    for (int k = 0; k < ST_N / 16; ++k)
        kp_wgmma_m64n64k16_bf16(s, KP_SM90_DESC_ADVANCE(dq, 32 * k), KP_SM90_DESC_ADVANCE(dk, 32 * k), k > 0);
    kp_wgmma_commit();
    kp_wgmma_wait(0);

    float o[ST_D / 2];
    for (int i = 0; i < ST_D / 2; ++i) o[i] = 0.0f;
    const unsigned long long dv = KP_SM90_DESC_MNMAJOR(kp_local_addr32(v_s), ST_N, KP_SM90_SWIZZLE_128B);
    kp_u32 a[ST_N / 16][4];
    for (int kk = 0; kk < ST_N / 16; ++kk) kp_sm90_p_to_a_bf16(s, kk, a[kk]);
    kp_wgmma_fence();
    for (int kk = 0; kk < ST_N / 16; ++kk)
        kp_wgmma_rs_m64n128k16_bf16_t1(o, a[kk], KP_SM90_DESC_ADVANCE(dv, KP_SM90_MNMAJOR_STEP_BYTES(KP_SM90_SWIZZLE_128B, kk)),
                                       kk > 0);
    kp_wgmma_commit();
    kp_wgmma_wait(0);

    for (int q = 0; q < ST_N / 2; ++q) s_out[KP_SM90_ACC_ROW(t, q) * ST_N + KP_SM90_ACC_COL(t, q)] = s[q];
    for (int q = 0; q < ST_D / 2; ++q) o_out[KP_SM90_ACC_ROW(t, q) * ST_D + KP_SM90_ACC_COL(t, q)] = o[q];
}
