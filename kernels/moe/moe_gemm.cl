/*
 * kernels/moe/moe_gemm.cl - grouped GEMM: out[r, :] = a[r, :] . w[e]^T for the rows r of
 * expert e's range [expert_offsets[e], expert_offsets[e+1]), f32 accumulation; rows
 * outside every range are never written. Used by kp_grouped_gemm and kp_moe_forward.
 *
 * Two kernels in one program (the same arguments):
 *   kp_grouped_gemm_tiled  BM x BN output tiles. Work-group (x, z): column tile x; z is
 *                          the z-th row tile of the experts with more than small_max
 *                          rows, found by walking expert_offsets on the device. Inner
 *                          product: the tile-MMA layer (KP_GG_MMA: mma.sync on NVIDIA,
 *                          its portable FMA emulation elsewhere; 16-bit operands, 128
 *                          work-items = 4 MMA groups of 32 in 2x2) or a local-memory
 *                          f32 FMA tile (256 work-items, (BM/16) x (BN/16) outputs each;
 *                          f32 inputs, and devices without matrix units).
 *   kp_grouped_gemm_small  decode: experts with 1..small_max (<= 16) rows. Work-group
 *                          (x, z): SM_WG/32 weight rows of the z-th such expert; 32
 *                          lanes per weight row stream it along K once, every row of
 *                          the expert (staged in local memory) used on each element.
 *
 * Weights: the dtype, or FP8 e4m3 (KP_GG_W_FP8) decoded in the kernel with their 128x128
 * block scale w_scale[e, n/128, k/128]: multiplied by it in f32 (FMA tile, decode), or
 * (MMA path) stored unscaled as the 16-bit operand, exactly, each 128-wide K slice summed
 * in its own fragments and promoted once with the scale (KP_GG_BK divides 128).
 * Activations: the dtype, or f32 (KP_GG_A_F32), optionally gathered: gather_k > 0 reads a row
 * gather[r] / gather_k (kp_moe_forward's sorted_ids).
 *
 * Epilogue (mode, at run time): 0 store in the dtype; 1 store f32; 2 SwiGLU: the tile's
 * first BN/2 columns are weight rows j (gate), the others rows n_out + j (up), and
 * out[r, j] = silu(gate) * up in the dtype; 3 combine (kp_moe_forward's shared expert,
 * rows = tokens): out[t, n] = sum over slots in order of tw[t, s] * y[pos[t, s], n] (y in
 * the dtype), plus this GEMM's own value last.
 *
 * Index contents are clamped, never trusted: offsets into [0, M] (a range ending below
 * its start is empty), a gathered row outside [0, a_rows) reads zeros, a combine
 * position outside [0, y_rows) adds nothing.
 *
 * Options: KP_DTYPE_*; KP_GG_W_FP8; KP_GG_A_F32; KP_GG_MMA; KP_GG_BM / KP_GG_BN / KP_GG_BK
 * (tiles; MMA: BM % 32, BN % 16, BK % 16 == 0; FMA: BM % 16, BN % 16 == 0); KP_GG_SM_WG.
 */
#include "kp_dialect.h"
#include "moe_common.h"
#include "moe_kargs.h"
#include "moe_gemm_common.h"
#if defined(KP_GG_MMA)
#include "common/kp_tile_mma.h"
#endif

#ifndef KP_GG_BM
#define KP_GG_BM 64
#endif
#ifndef KP_GG_BN
#define KP_GG_BN 64
#endif
#ifndef KP_GG_BK
#define KP_GG_BK 32
#endif
#ifndef KP_GG_SM_WG
#define KP_GG_SM_WG 128
#endif
#define KP_GG_SMALL_M 16
#define KP_GG_SM_COLS (KP_GG_SM_WG / 32)
#define KP_GG_SM_KC 256

#if defined(KP_GG_MMA)
#if defined(KP_DTYPE_F32)
#error "moe_gemm.cl: the MMA path takes 16-bit operands; f32 uses the FMA tile"
#endif
#if defined(KP_GG_W_FP8) && 128 % KP_GG_BK
#error "moe_gemm.cl: the MMA path's FP8 K slices need KP_GG_BK to divide 128"
#endif
#define KP_GG_WG 128
#define KPG_LDA (KP_GG_BK + 8) /* rows 16-byte aligned for ldmatrix, banks staggered */
#define KPG_LDB (KP_GG_BK + 8)
#if defined(KP_DTYPE_F16)
#define KPG_TO16(f) kp_f32_to_f16(f)
#define KPG_MMA kp_mma_16x8x16_f16
#else
#define KPG_TO16(f) kp_f32_to_bf16(f)
#define KPG_MMA kp_mma_16x8x16_bf16
#endif
#else
#define KP_GG_WG 256
#define KPG_LDA (KP_GG_BM + 4)
#define KPG_LDB (KP_GG_BN + 4)
#endif
#define KPG_LDC (KP_GG_BN + 4)
#if defined(KP_GG_MMA)
#define KPG_STAGE_FLOATS ((KP_GG_BM * KPG_LDA + KP_GG_BN * KPG_LDB + 1) / 2)
#else
#define KPG_STAGE_FLOATS (KP_GG_BK * (KPG_LDA + KPG_LDB))
#endif
#define KPG_C_FLOATS (KP_GG_BM * KPG_LDC)
#define KPG_SMEM_FLOATS (KPG_STAGE_FLOATS > KPG_C_FLOATS ? KPG_STAGE_FLOATS : KPG_C_FLOATS)

#define KPG_ARGS                                                                                              \
    KP_GLOBAL const kpg_a_t *KP_RESTRICT a, KP_GLOBAL const int *KP_RESTRICT gather,                          \
        KP_GLOBAL const kpg_w_t *KP_RESTRICT w, KP_GLOBAL const float *KP_RESTRICT ws,                        \
        KP_GLOBAL const int *KP_RESTRICT offsets, KP_GLOBAL kp_storage_t *out, KP_GLOBAL float *outf,         \
        KP_GLOBAL const kp_storage_t *KP_RESTRICT y, KP_GLOBAL const int *KP_RESTRICT pos,                           \
        KP_GLOBAL const float *KP_RESTRICT tw, KP_GLOBAL float *part, kp_moe_gemm_kargs p

KP_KERNEL void kp_grouped_gemm_tiled(KPG_ARGS) {
    /* one local buffer: the A and B stages while the K loop runs, then the C tile */
    KP_LOCAL(float, smem, KPG_SMEM_FLOATS);
    KP_LOCAL(kpm_i64, arow, KP_GG_BM);
    KP_LOCAL(kpm_i64, wrow, KP_GG_BN);
#if defined(KP_GG_W_FP8)
    KP_LOCAL(int, srow, KP_GG_BN);
#define KPG_SROW(c) srow[c]
#else
#define KPG_SROW(c) 0
#endif
#if defined(KP_GG_MMA)
    KP_LOCAL_MEM kp_u16 *as = (KP_LOCAL_MEM kp_u16 *)smem;
    KP_LOCAL_MEM kp_u16 *bs = as + KP_GG_BM * KPG_LDA;
#else
    KP_LOCAL_MEM float *as = smem;
    KP_LOCAL_MEM float *bs = smem + KP_GG_BK * KPG_LDA;
#endif
    KP_LOCAL_MEM float *cs = smem;

    const int lid = kp_local_id(0), wg = kp_local_size(0);
    int row0 = 0, hi = 0;
    const int e = kpg_find(offsets, p.offsets_off, p.mask_m, p.n_exp, p.dense_rows, p.m, p.small_max, 0x7fffffff,
                           KP_GG_BM, kp_group_id(1), &row0, &hi);
    if (e < 0) return; /* uniform over the work-group */
    const int n0 = kp_group_id(0) * (p.mode == KPG_MODE_SWIGLU ? KP_GG_BN / 2 : KP_GG_BN);

    for (int i = lid; i < KP_GG_BM; i += wg)
        arow[i] = kpg_arow(row0 + i, hi, gather, p.gather_off, p.gather_k, p.a_rows, p.a_off, p.a_ld);
    for (int c = lid; c < KP_GG_BN; c += wg) {
        int sr;
        wrow[c] = kpg_wrow(c, KP_GG_BN, n0, p.mode, p.n, p.n_out, e, p.w_off, p.w_se, p.w_sn, p.ws_nb, p.ws_kb, &sr);
#if defined(KP_GG_W_FP8)
        srow[c] = sr;
#endif
    }
    kp_barrier();

#if defined(KP_GG_MMA)
#define KPG_FM (KP_GG_BM / 32)
#define KPG_FN (KP_GG_BN / 16)
    const int lane = kp_mma_lane(), warp = lid / KP_MMA_LANES, wm = warp / 2, wn = warp % 2;
    kp_mma_acc acc[KPG_FM * KPG_FN];
    for (int f = 0; f < KPG_FM * KPG_FN; ++f) kp_mma_acc_zero(&acc[f]);
#if defined(KP_GG_W_FP8)
    kp_mma_acc sl[KPG_FM * KPG_FN]; /* this K slice's sums */
    float wsc[KPG_FN][2];           /* its block scales, columns 2t and 2t + 1 of each n8 fragment */
#define KPG_SUM sl
#else
#define KPG_SUM acc
#endif
#else
#define KPG_TM (KP_GG_BM / 16)
#define KPG_TN (KP_GG_BN / 16)
    const int tx = lid % 16, ty = lid / 16;
    float acc[KPG_TM][KPG_TN];
    for (int i = 0; i < KPG_TM; ++i)
        for (int j = 0; j < KPG_TN; ++j) acc[i][j] = 0.0f;
#endif

    for (int k0 = 0; k0 < p.k; k0 += KP_GG_BK) {
        for (int idx = lid; idx < KP_GG_BM * KP_GG_BK; idx += wg) {
            int i = idx / KP_GG_BK, kk = idx % KP_GG_BK, gk = k0 + kk;
            kpm_i64 ar = arow[i];
            int ok = ar >= 0 && gk < p.k;
#if defined(KP_GG_MMA) && !defined(KP_GG_A_F32)
            as[i * KPG_LDA + kk] = ok ? a[ar + gk] : (kp_u16)0;
#elif defined(KP_GG_MMA)
            as[i * KPG_LDA + kk] = KPG_TO16(ok ? KPG_A(a, ar + gk) : 0.0f);
#else
            as[kk * KPG_LDA + i] = ok ? KPG_A(a, ar + gk) : 0.0f;
#endif
        }
        for (int idx = lid; idx < KP_GG_BN * KP_GG_BK; idx += wg) {
            int c = idx / KP_GG_BK, kk = idx % KP_GG_BK, gk = k0 + kk;
            kpm_i64 wo = wrow[c];
            int ok = wo >= 0 && gk < p.k;
#if defined(KP_GG_MMA) && !defined(KP_GG_W_FP8)
            bs[c * KPG_LDB + kk] = ok ? w[wo + gk] : (kp_u16)0;
#elif defined(KP_GG_MMA)
            bs[c * KPG_LDB + kk] = KPG_TO16(ok ? KPG_W(w, wo + gk) : 0.0f); /* exact; scaled per slice */
#else
            bs[kk * KPG_LDB + c] = ok ? kpg_wval(w, wo, gk, ws, p.ws_off, KPG_SROW(c)) : 0.0f;
#endif
        }
        kp_barrier();
#if defined(KP_GG_MMA)
#if defined(KP_GG_W_FP8)
        if (k0 % 128 == 0) {
            for (int f = 0; f < KPG_FM * KPG_FN; ++f) kp_mma_acc_zero(&sl[f]);
            for (int j = 0; j < KPG_FN; ++j)
                for (int q = 0; q < 2; ++q) {
                    int c = wn * (KP_GG_BN / 2) + j * 8 + 2 * (lane % 4) + q;
                    wsc[j][q] = wrow[c] >= 0 ? ws[p.ws_off + srow[c] + k0 / 128] : 0.0f;
                }
        }
#endif
        for (int kk = 0; kk < KP_GG_BK; kk += 16) {
            kp_mma_a fa[KPG_FM];
            for (int i = 0; i < KPG_FM; ++i)
                kp_mma_load_a(&fa[i], as + (wm * (KP_GG_BM / 2) + i * 16) * KPG_LDA + kk, KPG_LDA, lane);
            for (int j = 0; j < KPG_FN; ++j) {
                kp_mma_b fb;
                kp_mma_load_b(&fb, bs + (wn * (KP_GG_BN / 2) + j * 8) * KPG_LDB + kk, KPG_LDB, lane);
                for (int i = 0; i < KPG_FM; ++i) KPG_MMA(&KPG_SUM[i * KPG_FN + j], &fa[i], &fb);
            }
        }
#if defined(KP_GG_W_FP8)
        if ((k0 + KP_GG_BK) % 128 == 0 || k0 + KP_GG_BK >= p.k) /* the slice's end: acc += slice * w_scale */
            for (int j = 0; j < KPG_FN; ++j)
                for (int i = 0; i < KPG_FM; ++i) {
                    kp_mma_acc *d = &acc[i * KPG_FN + j];
                    const kp_mma_acc *v = &sl[i * KPG_FN + j];
                    d->x[0] = kp_fmaf(v->x[0], wsc[j][0], d->x[0]), d->x[1] = kp_fmaf(v->x[1], wsc[j][1], d->x[1]);
                    d->x[2] = kp_fmaf(v->x[2], wsc[j][0], d->x[2]), d->x[3] = kp_fmaf(v->x[3], wsc[j][1], d->x[3]);
                }
#endif
#else
        for (int kk = 0; kk < KP_GG_BK; ++kk) {
            float av[KPG_TM], bv[KPG_TN];
            for (int i = 0; i < KPG_TM; ++i) av[i] = as[kk * KPG_LDA + ty + 16 * i];
            for (int j = 0; j < KPG_TN; ++j) bv[j] = bs[kk * KPG_LDB + tx + 16 * j];
            for (int i = 0; i < KPG_TM; ++i)
                for (int j = 0; j < KPG_TN; ++j) acc[i][j] = kp_fmaf(av[i], bv[j], acc[i][j]);
        }
#endif
        kp_barrier();
    }

#if defined(KP_GG_MMA)
    for (int i = 0; i < KPG_FM; ++i)
        for (int j = 0; j < KPG_FN; ++j)
            kp_mma_store_acc_local_f32(&acc[i * KPG_FN + j],
                                       cs + (wm * (KP_GG_BM / 2) + i * 16) * KPG_LDC + wn * (KP_GG_BN / 2) + j * 8,
                                       KPG_LDC, lane);
#else
    for (int i = 0; i < KPG_TM; ++i)
        for (int j = 0; j < KPG_TN; ++j) cs[(ty + 16 * i) * KPG_LDC + tx + 16 * j] = acc[i][j];
#endif
    kp_barrier();
    kpg_epilogue(cs, KPG_LDC, KP_GG_BM, KP_GG_BN, row0, hi, n0, p.mode, p.n, p.n_out, out, outf, p.out_off, p.out_ld, y,
                 p.y_off, p.y_ld, p.y_rows, pos, p.pos_off, tw, p.tw_off, p.topk);
}

/* acc[r] += w * a[r][kk] for the first R rows (R a constant: the loop unrolls). */
#define KPG_SMALL_STEP(R)                                                                                     \
    for (int kk = lane; kk < kc; kk += 32) {                                                                  \
        float wv = kpg_wval(w, wo, k0 + kk, ws, p.ws_off, sr);                                                \
        for (int r = 0; r < (R); ++r) acc[r] = kp_fmaf(wv, as[r * KP_GG_SM_KC + kk], acc[r]);                 \
    }

KP_KERNEL void kp_grouped_gemm_small(KPG_ARGS) {
    KP_LOCAL(float, as, KP_GG_SMALL_M * KP_GG_SM_KC);
    KP_LOCAL(float, red, KP_GG_SMALL_M * KP_GG_SM_WG);
    KP_LOCAL(float, cs, KP_GG_SMALL_M * (KP_GG_SM_COLS + 1));
    KP_LOCAL(kpm_i64, arow, KP_GG_SMALL_M);

    const int lid = kp_local_id(0), wg = kp_local_size(0);
    const int lane = lid % 32, col = lid / 32;
    int row0 = 0, hi = 0;
    const int smax = p.small_max < KP_GG_SMALL_M ? p.small_max : KP_GG_SMALL_M;
    const int e = kpg_find(offsets, p.offsets_off, p.mask_m, p.n_exp, p.dense_rows, p.m, 0, smax, KP_GG_SMALL_M,
                           kp_group_id(1), &row0, &hi);
    if (e < 0) return; /* uniform over the work-group */
    const int m = hi - row0;
    const int n0 = kp_group_id(0) * (p.mode == KPG_MODE_SWIGLU ? KP_GG_SM_COLS / 2 : KP_GG_SM_COLS);
    int sr = 0;
    const kpm_i64 wo0 = kpg_wrow(col, KP_GG_SM_COLS, n0, p.mode, p.n, p.n_out, e, p.w_off, p.w_se, p.w_sn, p.ws_nb, p.ws_kb, &sr);
    const kpm_i64 wo = wo0 >= 0 ? wo0 : p.w_off + (kpm_i64)e * p.w_se;
    if (lid < KP_GG_SMALL_M) arow[lid] = kpg_arow(row0 + lid, hi, gather, p.gather_off, p.gather_k, p.a_rows, p.a_off, p.a_ld);
    kp_barrier();

    float acc[KP_GG_SMALL_M];
    for (int r = 0; r < KP_GG_SMALL_M; ++r) acc[r] = 0.0f;
    for (int k0 = 0; k0 < p.k; k0 += KP_GG_SM_KC) {
        const int kc = p.k - k0 < KP_GG_SM_KC ? p.k - k0 : KP_GG_SM_KC;
        for (int idx = lid; idx < m * KP_GG_SM_KC; idx += wg) {
            int r = idx / KP_GG_SM_KC, kk = idx % KP_GG_SM_KC;
            kpm_i64 ar = arow[r];
            as[idx] = ar >= 0 && kk < kc ? KPG_A(a, ar + k0 + kk) : 0.0f;
        }
        kp_barrier();
        /* every lane computes (a column past N reads row 0 and is never stored):
         * PoCL 3.1 gave zeros for the valid lanes when this was skipped per lane */
        if (m <= 2) {
            KPG_SMALL_STEP(2)
        } else if (m <= 4) {
            KPG_SMALL_STEP(4)
        } else if (m <= 8) {
            KPG_SMALL_STEP(8)
        } else {
            KPG_SMALL_STEP(KP_GG_SMALL_M)
        }
        kp_barrier();
    }
    for (int r = 0; r < KP_GG_SMALL_M; ++r) red[r * KP_GG_SM_WG + lid] = acc[r];
    kp_barrier();
    for (int idx = lid; idx < m * KP_GG_SM_COLS; idx += wg) {
        int r = idx / KP_GG_SM_COLS, c = idx % KP_GG_SM_COLS;
        float s = 0.0f;
        for (int l = 0; l < 32; ++l) s += red[r * KP_GG_SM_WG + c * 32 + l];
        cs[r * (KP_GG_SM_COLS + 1) + c] = s;
    }
    kp_barrier();
    kpg_epilogue(cs, KP_GG_SM_COLS + 1, KP_GG_SMALL_M, KP_GG_SM_COLS, row0, hi, n0, p.mode, p.n, p.n_out, out, outf,
                 p.out_off, p.out_ld, y, p.y_off, p.y_ld, p.y_rows, pos, p.pos_off, tw, p.tw_off, p.topk);
}
