/*
 * kernels/common/wave_selftest.cl - the wave-level tile (common/kp_wave_tile.h) in every
 * operation an attention loop uses, checked exactly against a float64 reference
 * (tests/test_opencl_gen2.c on PoCL: the portable tile; on AMD hardware the MFMA
 * 16x16x16 tile; its gfx90a ISA is checked at build time, kernels/check_hip_isa.py).
 *
 * One work-group of WS_GROUPS * 32 work-items; M = WS_GROUPS * 16 rows, each wave its
 * KP_WT_M of them:
 *   S = A Bt^T        A [M][WS_K], Bt [16][WS_K] (16-bit), ksteps 16-k steps (kp_wt_load_a,
 *                     kp_wt_load_b, kp_wt_mma)
 *   rows[r]           max and sum over S's row r (kp_wt_row_max / _sum): rows[2r], rows[2r+1]
 *   O = round(S) V    S rounded to the 16-bit type as an A operand (kp_wt_acc_to_a), V
 *                     [16][16] K-major (kp_wt_load_b_trans)
 *   s, o [M][16] f32  (kp_wt_store_acc_f32; every element written)
 * Options: KP_DTYPE_BF16 / _F16, WS_GROUPS, WS_K. Launch: one work-group of
 * WS_GROUPS * 32, local_bytes = WS_LOCAL_BYTES(WS_GROUPS, WS_K).
 */
#include "kp_dialect.h"
#include "common/selftest_kargs.h"
#include "common/kp_wave_tile.h"

#if defined(KP_DTYPE_F16)
#define WS_MMA kp_wt_mma_f16
#define WS_F16 1
#elif defined(KP_DTYPE_BF16)
#define WS_MMA kp_wt_mma_bf16
#define WS_F16 0
#else
#error "wave_selftest.cl: KP_DTYPE_F16 or KP_DTYPE_BF16"
#endif
#ifndef WS_GROUPS
#define WS_GROUPS 4
#endif
#ifndef WS_K
#define WS_K 64
#endif
#define WS_NT (WS_GROUPS * 32)
#define WS_M (WS_GROUPS * 16)
#define WS_LD (WS_K + 8)
#if WS_K % 16 || WS_NT % KP_WT_LANES
#error "wave_selftest.cl: WS_K a multiple of 16, the work-group whole waves"
#endif

KP_KERNEL void KP_LAUNCH_BOUNDS(WS_NT, 1)
    kp_wave_selftest(KP_GLOBAL const kp_u16 *KP_RESTRICT a, KP_GLOBAL const kp_u16 *KP_RESTRICT bt,
                     KP_GLOBAL const kp_u16 *KP_RESTRICT v, KP_GLOBAL float *KP_RESTRICT s_out,
                     KP_GLOBAL float *KP_RESTRICT o_out, KP_GLOBAL float *KP_RESTRICT rows_out,
                     kp_wave_selftest_kargs p KP_DYNAMIC_LOCAL_ARG(smem)) {
    KP_DYNAMIC_LOCAL(smem);
    KP_LOCAL_MEM kp_u16 *as = (KP_LOCAL_MEM kp_u16 *)smem; /* [WS_M][WS_LD] */
    KP_LOCAL_MEM kp_u16 *bs = as + WS_M * WS_LD;           /* [16][WS_LD] */
    KP_LOCAL_MEM kp_u16 *vs = bs + 16 * WS_LD;             /* [16][24] */
    KP_LOCAL_MEM kp_u16 *ps = vs + 16 * 24;                /* [WS_M][16] */
    KP_LOCAL_MEM float *red = (KP_LOCAL_MEM float *)(ps + WS_M * 16); /* KP_WT_ROWS a work-item */
    const int lid = kp_local_id(0), lane = kp_wt_lane(), wave = kp_wt_wave();
    for (int i = lid; i < WS_M * WS_K; i += WS_NT) as[(i / WS_K) * WS_LD + i % WS_K] = a[i];
    for (int i = lid; i < 16 * WS_K; i += WS_NT) bs[(i / WS_K) * WS_LD + i % WS_K] = bt[i];
    for (int i = lid; i < 256; i += WS_NT) vs[(i / 16) * 24 + i % 16] = v[i];
    kp_barrier();

    const int r0 = wave * KP_WT_M;
    kp_wt_acc s;
    kp_wt_acc_zero(&s);
    for (int kk = 0; kk < p.ksteps && kk < WS_K / 16; ++kk) {
        kp_wt_a fa;
        kp_wt_b fb;
        kp_wt_load_a(&fa, as + r0 * WS_LD + kk * 16, WS_LD, lane);
        kp_wt_load_b(&fb, bs + kk * 16, WS_LD, lane);
        WS_MMA(&s, &fa, &fb);
    }
    kp_wt_store_acc_f32(&s, s_out + r0 * 16, 16, lane);

    float mx[KP_WT_ROWS], sm[KP_WT_ROWS];
    for (int r = 0; r < KP_WT_ROWS; ++r) mx[r] = -KP_INFINITY, sm[r] = 0.0f;
    for (int e = 0; e < KP_WT_ACC_N; ++e) {
        float x = kp_wt_el(s, e);
        mx[kp_wt_slot(e)] = kp_fmaxf(mx[kp_wt_slot(e)], x);
        sm[kp_wt_slot(e)] += x;
    }
    kp_wt_row_max(mx, red, lid);
    kp_wt_row_sum(sm, red, lid);
    if (lane % KP_WT_ROW_LANES == 0)
        for (int r = 0; r < KP_WT_ROWS; ++r) {
            int row = r0 + kp_wt_row(lane, r);
            rows_out[2 * row] = mx[r], rows_out[2 * row + 1] = sm[r];
        }

    kp_wt_a pa;
    kp_wt_acc_to_a(&pa, &s, WS_F16, ps + r0 * 16, lane);
    kp_wt_b vb;
    kp_wt_load_b_trans(&vb, vs, 24, lane);
    kp_wt_acc o;
    kp_wt_acc_zero(&o);
    WS_MMA(&o, &pa, &vb);
    kp_wt_store_acc_f32(&o, o_out + r0 * 16, 16, lane);
}
