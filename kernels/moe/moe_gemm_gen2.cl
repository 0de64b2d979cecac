/*
 * kernels/moe/moe_gemm_gen2.cl - grouped GEMM, generation 2: out[r, :] = a[r, :] . w[e]^T
 * for the rows r of expert e (moe_gemm.cl states the contract; the epilogues, index
 * clamping and FP8 scales are the same, moe_gemm_common.h). 16-bit activations or f32
 * (KP_GG_A_F32, rounded to the dtype on the way into local memory, as generation 1's
 * MMA path does); 16-bit or e4m3 weights.
 *
 * kp_grouped_gemm_gen2_tiled   prefill-sized experts (more than small_max rows): G2_BM x
 *     G2_BN output tiles, G2_WM x G2_WN units of 32 work-items (8 warps on NVIDIA). It is
 *     written on the wave-level tile (common/kp_wave_tile.h), which owns the fragment
 *     layout: a wave of KP_WT_LANES lanes multiplies KP_WT_M x 16 tiles, 16 k a step
 *     (NVIDIA: 32 lanes, two mma.sync m16n8k16 with ldmatrix.x4 operands; AMD CDNA: 64
 *     lanes, one v_mfma_f32_16x16x16 per 16 rows in its native layout; elsewhere the
 *     portable FMA tile). The units pair into waves along M (G2_VM x G2_VN waves, each a
 *     G2_TM x G2_TN tile), so one launch shape, G2_WM * G2_WN * 32 work-items, serves
 *     every target; the code reads accumulators only through the tile's layout
 *     (kp_wt_el, kp_wt_row, kp_wt_col). K runs through a G2_STAGES-stage pipeline
 *     (common/kp_async_copy.h) in dynamic local memory: 16-byte cp.async of the gathered A
 *     rows and the weight rows while the previous stages are multiplied. Rows are padded
 *     by 8 elements (16 bytes), so the 8 rows an ldmatrix reads fall on distinct banks.
 *     f32 activations and e4m3 weights are converted on their way in (16-byte loads,
 *     then one 16-byte local store), in the same stage structure. e4m3 weights go in
 *     unscaled (exact in f16 and bf16); each 128-wide K slice (128 / G2_BK tiles) is
 *     multiplied into a fresh f32 fragment and promoted once with the slice's block
 *     scale of each column: acc += slice * w_scale (DeepGEMM's promotion), so the
 *     products are exact and the scale costs one FMA per 128 k.
 *     Work-group (x, z): column tile x, row tile z over the prefill-sized experts.
 * kp_grouped_gemm_gen2_rows    decode: experts with 1..small_max (<= 16) rows. Each group
 *     of 32 lanes streams G2R_RPW weight rows once, 16 bytes a lane (a warp reads 512
 *     contiguous bytes of each row per step), against the expert's activation rows
 *     staged in local memory G2R_KC k at a time (e4m3 weights: each lane's 8-k partial
 *     sum, exact products, scaled once by its block scale); partial sums are reduced
 *     across lanes in local memory. Work-group (x, z, s): G2R_COLS weight rows of the z-th decode
 *     expert, K slice s of ksplit: with ksplit > 1 the slices' f32 partials go to `part`
 *     [ksplit, M, N] and kp_grouped_gemm_gen2_reduce applies the epilogue.
 * kp_grouped_gemm_gen2_reduce  the split-K sum and the epilogue, per decode expert.
 *
 * Requirements the planner checks (else generation 1 runs): K % 8 == 0 (e4m3 weights:
 * K % 128 == 0, the API's; G2_BK divides 128); 16-byte aligned
 * rows (offsets and row strides of a and w multiples of 16 bytes, 8 bytes for e4m3).
 * Options: KP_DTYPE_F16 / _BF16, KP_GG_A_F32, KP_GG_W_FP8; tiled: G2_BM, G2_BN, G2_BK,
 * G2_WM, G2_WN, G2_STAGES, G2_MIN_BLOCKS (per SM, what the planner's local memory
 * allows: ptxas keeps registers within it); decode: G2R_WARPS, G2R_RPW, G2R_KC.
 */
#include "kp_dialect.h"
#include "moe_gemm_common.h"
#include "common/kp_async_copy.h"
#include "common/kp_wave_tile.h"

#if defined(KP_DTYPE_F32) || (!defined(KP_DTYPE_F16) && !defined(KP_DTYPE_BF16))
#error "moe_gemm_gen2.cl takes 16-bit activations (f32 runs generation 1)"
#endif
#if defined(KP_DTYPE_F16)
#define G2_TO16(f) kp_f32_to_f16(f)
#define G2_MMA kp_wt_mma_f16
#else
#define G2_TO16(f) kp_f32_to_bf16(f)
#define G2_MMA kp_wt_mma_bf16
#endif

#ifndef G2_BM
#define G2_BM 128
#endif
#ifndef G2_BN
#define G2_BN 128
#endif
#ifndef G2_BK
#define G2_BK 32
#endif
#ifndef G2_WM
#define G2_WM 2
#endif
#ifndef G2_WN
#define G2_WN 4
#endif
#ifndef G2_STAGES
#define G2_STAGES 4
#endif
#ifndef G2_MIN_BLOCKS
#define G2_MIN_BLOCKS 1 /* work-groups per SM the planner counts on (CUDA: caps registers) */
#endif
#ifndef G2R_WARPS
#define G2R_WARPS 8
#endif
#ifndef G2R_RPW
#define G2R_RPW 4
#endif
#ifndef G2R_KC
#define G2R_KC KP_MOE_GEMM2_ROWS_KC
#endif

#define G2_NT (G2_WM * G2_WN * 32) /* work-items: the same on every target */
#define G2_UPW (KP_WT_LANES / 32)    /* 32-lane units a wave: 1, 2 on AMD MFMA */
#define G2_VM (G2_WM / G2_UPW)       /* waves along M, along N */
#define G2_VN G2_WN
#define G2_TM (G2_BM / G2_VM)        /* a wave's rows, columns */
#define G2_TN (G2_BN / G2_VN)
#define G2_FM (G2_TM / KP_WT_M)      /* its wave tiles along M, along N */
#define G2_FN (G2_TN / KP_WT_N)
#define G2_LD KP_MOE_GEMM2_LD(G2_BK)
#define G2_CHUNKS (G2_BK / 8)      /* 16-byte chunks of a tile row */
#define G2_LDC (G2_BN + 4)
#if G2_BM % (16 * G2_WM) || G2_BN % (16 * G2_WN) || G2_BK % 16 || 128 % G2_BK || G2_STAGES < 2 || G2_STAGES > 4
#error "moe_gemm_gen2.cl: G2_BM % (16 G2_WM), G2_BN % (16 G2_WN), G2_BK % 16, 128 % G2_BK must be 0; G2_STAGES 2..4"
#endif
#if G2_WM % G2_UPW || G2_TM % KP_WT_M
#error "moe_gemm_gen2.cl: G2_WM a multiple of the 32-lane units a wave has, G2_BM / waves along M of its rows"
#endif

#define G2R_NT (G2R_WARPS * 32)
#define G2R_COLS (G2R_WARPS * G2R_RPW)
#define G2R_M KP_MOE_GEMM2_ROWS_M
#if G2R_KC % 256
#error "moe_gemm_gen2.cl: G2R_KC must be a multiple of 256 (32 lanes x 8 k)"
#endif

#define G2_ARGS                                                                                        \
    KP_GLOBAL const kpg_a_t *KP_RESTRICT a, KP_GLOBAL const int *KP_RESTRICT gather,                   \
        KP_GLOBAL const kpg_w_t *KP_RESTRICT w, KP_GLOBAL const float *KP_RESTRICT ws,                 \
        KP_GLOBAL const int *KP_RESTRICT offsets, KP_GLOBAL kp_storage_t *out, KP_GLOBAL float *outf,  \
        KP_GLOBAL const kp_storage_t *KP_RESTRICT y, KP_GLOBAL const int *KP_RESTRICT pos,                    \
        KP_GLOBAL const float *KP_RESTRICT tw, KP_GLOBAL float *part, kp_moe_gemm_kargs p

/* ---- 16-byte chunks into local memory ----------------------------------------- */

/* Eight 16-bit values (one 16-byte chunk) of activation row `ar` at k, to dst. */
KP_FN void g2_load_a8(KP_LOCAL_MEM kp_u16 *dst, KP_GLOBAL const kpg_a_t *a, kpm_i64 ar, int k, int valid) {
#if defined(KP_GG_A_F32)
    uint4 lo = KP_UINT4_ZERO, hi = lo;
    if (valid) {
        lo = *(KP_GLOBAL const uint4 *)(a + ar + k);
        hi = *(KP_GLOBAL const uint4 *)(a + ar + k + 4);
    }
    uint4 v;
    v.x = (kp_u32)G2_TO16(kp_as_float(lo.x)) | ((kp_u32)G2_TO16(kp_as_float(lo.y)) << 16);
    v.y = (kp_u32)G2_TO16(kp_as_float(lo.z)) | ((kp_u32)G2_TO16(kp_as_float(lo.w)) << 16);
    v.z = (kp_u32)G2_TO16(kp_as_float(hi.x)) | ((kp_u32)G2_TO16(kp_as_float(hi.y)) << 16);
    v.w = (kp_u32)G2_TO16(kp_as_float(hi.z)) | ((kp_u32)G2_TO16(kp_as_float(hi.w)) << 16);
    *(KP_LOCAL_MEM uint4 *)dst = v;
#else
    kp_copy16_async(dst, a + (valid ? ar + k : 0), valid);
#endif
}

#if defined(KP_GG_W_FP8)
/* Two e4m3 bytes of a 32-bit word (the low or high pair) as two packed 16-bit values,
 * unscaled: every e4m3 value is exact in f16 and bf16. */
KP_FN kp_u32 g2_e4m3_pair(kp_u32 b, int hi) {
    kp_u32 lo_b = (b >> (hi ? 16 : 0)) & 0xffu, hi_b = (b >> (hi ? 24 : 8)) & 0xffu;
    return (kp_u32)G2_TO16(kp_e4m3_to_f32(lo_b)) | ((kp_u32)G2_TO16(kp_e4m3_to_f32(hi_b)) << 16);
}
#endif

/* Eight weights (16-bit, or e4m3 decoded exactly, without their block scale: the
 * K slice's sum is scaled once, g2_promote) of weight row `wo` at k, to dst. */
KP_FN void g2_load_w8(KP_LOCAL_MEM kp_u16 *dst, KP_GLOBAL const kpg_w_t *w, kpm_i64 wo, int k, int valid) {
#if defined(KP_GG_W_FP8)
    uint2 b = valid ? *(KP_GLOBAL const uint2 *)(w + wo + k) : KP_UINT2_ZERO;
    uint4 v;
    v.x = g2_e4m3_pair(b.x, 0), v.y = g2_e4m3_pair(b.x, 1);
    v.z = g2_e4m3_pair(b.y, 0), v.w = g2_e4m3_pair(b.y, 1);
    *(KP_LOCAL_MEM uint4 *)dst = v;
#else
    kp_copy16_async(dst, w + (valid ? wo + k : 0), valid);
#endif
}

#if defined(KP_GG_W_FP8)
/* The first of this lane's accumulator elements in element e's column: a constant for
 * a constant e (the layouts' columns differ by constants between elements), so the
 * scales are read once a column (PTX's layout: 4 columns a 16-wide tile; AMD's: 1). */
KP_FN int g2_col_first(int lane, int e) {
    for (int r = 0; r < e; ++r)
        if (kp_wt_col(lane, r) == kp_wt_col(lane, e)) return r;
    return e;
}
/* DeepGEMM's promotion for W8A16: acc += slice * w_scale[col] over a wave tile; sc[e]:
 * this K slice's block scale of element e's column (kp_wt_col: the layout's). */
KP_FN void g2_promote(kp_wt_acc *acc, const kp_wt_acc *slice, const float *sc) {
    for (int e = 0; e < KP_WT_ACC_N; ++e) kp_wt_el(*acc, e) = kp_fmaf(kp_wt_el(*slice, e), sc[e], kp_wt_el(*acc, e));
}
#endif

/* ---- prefill: pipelined tiles ---------------------------------------------- */

/* Issues the A and B tiles of k0 into stage buffer st (every work-item, uniformly). */
KP_FN void g2_issue(KP_LOCAL_MEM kp_u16 *st, int k0, int K, KP_GLOBAL const kpg_a_t *a, KP_GLOBAL const kpg_w_t *w,
                    KP_LOCAL_MEM const kpm_i64 *arow, KP_LOCAL_MEM const kpm_i64 *wrow) {
    const int lid = kp_local_id(0);
    for (int c = lid; c < G2_BM * G2_CHUNKS; c += G2_NT) {
        int r = c / G2_CHUNKS, k = k0 + (c % G2_CHUNKS) * 8;
        kpm_i64 ar = arow[r];
        g2_load_a8(st + r * G2_LD + (c % G2_CHUNKS) * 8, a, ar, k, ar >= 0 && k < K);
    }
    KP_LOCAL_MEM kp_u16 *bs = st + G2_BM * G2_LD;
    for (int c = lid; c < G2_BN * G2_CHUNKS; c += G2_NT) {
        int r = c / G2_CHUNKS, k = k0 + (c % G2_CHUNKS) * 8;
        kpm_i64 wo = wrow[r];
        g2_load_w8(bs + r * G2_LD + (c % G2_CHUNKS) * 8, w, wo, k, wo >= 0 && k < K);
    }
}

KP_KERNEL void KP_LAUNCH_BOUNDS(G2_NT, G2_MIN_BLOCKS) kp_grouped_gemm_gen2_tiled(G2_ARGS KP_DYNAMIC_LOCAL_ARG(smem)) {
    KP_DYNAMIC_LOCAL(smem);
    KP_LOCAL_MEM kp_u16 *stages = (KP_LOCAL_MEM kp_u16 *)smem;
    KP_LOCAL_MEM float *cs = (KP_LOCAL_MEM float *)smem; /* after the K loop */
    KP_LOCAL_MEM char *idx = (KP_LOCAL_MEM char *)smem + KP_MOE_GEMM2_TILES_BYTES(G2_BM, G2_BN, G2_BK, G2_STAGES);
    KP_LOCAL_MEM kpm_i64 *arow = (KP_LOCAL_MEM kpm_i64 *)idx;
    KP_LOCAL_MEM kpm_i64 *wrow = arow + G2_BM;
    KP_LOCAL_MEM int *srow = (KP_LOCAL_MEM int *)(wrow + G2_BN);
    (void)part;

    const int lid = kp_local_id(0);
    int row0 = 0, hi = 0;
    const int e = kpg_find(offsets, p.offsets_off, p.mask_m, p.n_exp, p.dense_rows, p.m, p.small_max, 0x7fffffff, G2_BM,
                           kp_group_id(1), &row0, &hi);
    if (e < 0) return; /* uniform over the work-group */
    const int n0 = kp_group_id(0) * (p.mode == KPG_MODE_SWIGLU ? G2_BN / 2 : G2_BN);
    for (int i = lid; i < G2_BM; i += G2_NT)
        arow[i] = kpg_arow(row0 + i, hi, gather, p.gather_off, p.gather_k, p.a_rows, p.a_off, p.a_ld);
    for (int c = lid; c < G2_BN; c += G2_NT) {
        int sr;
        wrow[c] = kpg_wrow(c, G2_BN, n0, p.mode, p.n, p.n_out, e, p.w_off, p.w_se, p.w_sn, p.ws_nb, p.ws_kb, &sr);
        srow[c] = sr;
    }
    kp_barrier();

    const int lane = kp_wt_lane(), wave = kp_wt_wave(), gm = wave / G2_VN, gn = wave % G2_VN;
    kp_wt_acc acc[G2_FM * G2_FN];
    for (int f = 0; f < G2_FM * G2_FN; ++f) kp_wt_acc_zero(&acc[f]);
#if defined(KP_GG_W_FP8)
    /* e4m3 weights: each 128-wide K slice is multiplied into its own tiles sl and
     * promoted once with its block scales wsc (read when the slice starts; elements of
     * one column read the same scale) */
    kp_wt_acc sl[G2_FM * G2_FN];
    float wsc[G2_FN][KP_WT_ACC_N];
#define G2_SUM sl
#else
#define G2_SUM acc
#endif

    const int ktiles = (p.k + G2_BK - 1) / G2_BK;
    for (int s = 0; s < G2_STAGES - 1; ++s) {
        if (s < ktiles)
            g2_issue(stages + s * (G2_BM + G2_BN) * G2_LD, s * G2_BK, p.k, a, w, arow, wrow);
        kp_copy_commit();
    }
    for (int t = 0; t < ktiles; ++t) {
        kp_copy_wait(G2_STAGES - 2);
        kp_barrier(); /* tile t landed; every group is done with tile t - 1's stage */
        const int nt = t + G2_STAGES - 1;
        if (nt < ktiles)
            g2_issue(stages + (nt % G2_STAGES) * (G2_BM + G2_BN) * G2_LD, nt * G2_BK, p.k, a, w, arow, wrow);
        kp_copy_commit();
        KP_LOCAL_MEM const kp_u16 *as = stages + (t % G2_STAGES) * (G2_BM + G2_BN) * G2_LD;
        KP_LOCAL_MEM const kp_u16 *bs = as + G2_BM * G2_LD;
#if defined(KP_GG_W_FP8)
        if ((t * G2_BK) % 128 == 0) {
            for (int f = 0; f < G2_FM * G2_FN; ++f) kp_wt_acc_zero(&sl[f]);
            for (int j = 0; j < G2_FN; ++j)
                for (int q = 0; q < KP_WT_ACC_N; ++q) {
                    int q0 = g2_col_first(lane, q), c = gn * G2_TN + j * KP_WT_N + kp_wt_col(lane, q);
                    if (q0 < q) wsc[j][q] = wsc[j][q0]; /* a column read already */
                    else wsc[j][q] = wrow[c] >= 0 ? ws[p.ws_off + srow[c] + t * G2_BK / 128] : 0.0f;
                }
        }
#endif
        for (int kk = 0; kk < G2_BK; kk += KP_WT_K) {
            kp_wt_a fa[G2_FM];
            for (int i = 0; i < G2_FM; ++i)
                kp_wt_load_a(&fa[i], as + (gm * G2_TM + i * KP_WT_M) * G2_LD + kk, G2_LD, lane);
            for (int j = 0; j < G2_FN; ++j) {
                kp_wt_b fb;
                kp_wt_load_b(&fb, bs + (gn * G2_TN + j * KP_WT_N) * G2_LD + kk, G2_LD, lane);
                for (int i = 0; i < G2_FM; ++i) G2_MMA(&G2_SUM[i * G2_FN + j], &fa[i], &fb);
            }
        }
#if defined(KP_GG_W_FP8)
        if (((t + 1) * G2_BK) % 128 == 0 || t + 1 == ktiles) {
            for (int j = 0; j < G2_FN; ++j)
                for (int i = 0; i < G2_FM; ++i)
                    g2_promote(&acc[i * G2_FN + j], &sl[i * G2_FN + j], wsc[j]);
        }
#endif
    }
    kp_copy_wait(0);
    kp_barrier(); /* the stages become the C tile */
    for (int i = 0; i < G2_FM; ++i)
        for (int j = 0; j < G2_FN; ++j) {
            KP_LOCAL_MEM float *c = cs + (gm * G2_TM + i * KP_WT_M) * G2_LDC + gn * G2_TN + j * KP_WT_N;
            for (int e = 0; e < KP_WT_ACC_N; ++e)
                c[kp_wt_row(lane, kp_wt_slot(e)) * G2_LDC + kp_wt_col(lane, e)] = kp_wt_el(acc[i * G2_FN + j], e);
        }
    kp_barrier();
    kpg_epilogue(cs, G2_LDC, G2_BM, G2_BN, row0, hi, n0, p.mode, p.n, p.n_out, out, outf, p.out_off, p.out_ld, y,
                 p.y_off, p.y_ld, p.y_rows, pos, p.pos_off, tw, p.tw_off, p.topk);
}

/* ---- decode: weight streaming ---------------------------------------------- */

/* The eight 16-bit values of a 16-byte word as floats. */
KP_FN void g2_unpack8(uint4 v, float *f) {
#if defined(KP_DTYPE_F16)
    f[0] = kp_f16_to_f32((kp_u16)(v.x & 0xffffu)), f[1] = kp_f16_to_f32((kp_u16)(v.x >> 16));
    f[2] = kp_f16_to_f32((kp_u16)(v.y & 0xffffu)), f[3] = kp_f16_to_f32((kp_u16)(v.y >> 16));
    f[4] = kp_f16_to_f32((kp_u16)(v.z & 0xffffu)), f[5] = kp_f16_to_f32((kp_u16)(v.z >> 16));
    f[6] = kp_f16_to_f32((kp_u16)(v.w & 0xffffu)), f[7] = kp_f16_to_f32((kp_u16)(v.w >> 16));
#else
    f[0] = kp_as_float(v.x << 16), f[1] = kp_as_float(v.x & 0xffff0000u);
    f[2] = kp_as_float(v.y << 16), f[3] = kp_as_float(v.y & 0xffff0000u);
    f[4] = kp_as_float(v.z << 16), f[5] = kp_as_float(v.z & 0xffff0000u);
    f[6] = kp_as_float(v.w << 16), f[7] = kp_as_float(v.w & 0xffff0000u);
#endif
}

/* Eight weights of row wo at k as floats (0 when !valid); *scale: their block scale
 * (e4m3 weights, decoded exactly and unscaled: a lane's eight k lie in one 128-wide
 * slice, and its partial sum is scaled once), 1 for 16-bit weights. */
KP_FN void g2_weights8(KP_GLOBAL const kpg_w_t *w, kpm_i64 wo, int k, int valid, KP_GLOBAL const float *ws,
                       kpm_i64 ws_off, int srow, float *f, float *scale) {
#if defined(KP_GG_W_FP8)
    uint2 b = KP_UINT2_ZERO;
    *scale = 0.0f;
    if (valid) {
        b = *(KP_GLOBAL const uint2 *)(w + wo + k);
        *scale = ws[ws_off + srow + k / 128];
    }
    for (int i = 0; i < 4; ++i) f[i] = kp_e4m3_to_f32((b.x >> (8 * i)) & 0xffu);
    for (int i = 0; i < 4; ++i) f[4 + i] = kp_e4m3_to_f32((b.y >> (8 * i)) & 0xffu);
#else
    (void)ws, (void)ws_off, (void)srow;
    *scale = 1.0f;
    uint4 v = valid ? *(KP_GLOBAL const uint4 *)(w + wo + k) : KP_UINT4_ZERO;
    g2_unpack8(v, f);
#endif
}

/* acc[i][r] += w_i . a_r over this lane's k chunks of the staged activations, for the
 * first R activation rows (R a constant: the loops unroll). e4m3 weights: the eight
 * products are exact in f32; their sum is scaled once by the block scale (the 16-bit
 * weights' scale is 1 and the FMA chain runs straight on). */
#if defined(KP_GG_W_FP8)
#define G2R_DOT8(i, r, ar)                                                                          \
    {                                                                                               \
        float s = 0.0f;                                                                             \
        for (int j = 0; j < 8; ++j) s = kp_fmaf(wf[i][j], ar[j], s);                                \
        acc[i][r] = kp_fmaf(s, wsc[i], acc[i][r]);                                                  \
    }
#else
#define G2R_DOT8(i, r, ar)                                                                          \
    {                                                                                               \
        float s = acc[i][r];                                                                        \
        for (int j = 0; j < 8; ++j) s = kp_fmaf(wf[i][j], ar[j], s);                                \
        acc[i][r] = s;                                                                              \
    }
#endif
#define G2R_STEP(R)                                                                                 \
    for (int kk = lane * 8; kk < kc; kk += 256) {                                                   \
        float wf[G2R_RPW][8], wsc[G2R_RPW];                                                         \
        for (int i = 0; i < G2R_RPW; ++i)                                                           \
            g2_weights8(w, wo[i], k0 + kk, wv[i], ws, p.ws_off, sr[i], wf[i], &wsc[i]);             \
        for (int r = 0; r < (R); ++r) {                                                             \
            KP_LOCAL_MEM const float *ar = as + r * G2R_KC + kk;                                    \
            for (int i = 0; i < G2R_RPW; ++i) G2R_DOT8(i, r, ar)                                    \
        }                                                                                           \
        (void)wsc;                                                                                  \
    }

KP_KERNEL void KP_LAUNCH_BOUNDS(G2R_NT, 1) kp_grouped_gemm_gen2_rows(G2_ARGS KP_DYNAMIC_LOCAL_ARG(smem)) {
    KP_DYNAMIC_LOCAL(smem);
    KP_LOCAL_MEM float *as = (KP_LOCAL_MEM float *)smem;            /* [G2R_M][G2R_KC] */
    KP_LOCAL_MEM float *red = as + G2R_M * G2R_KC;                   /* [G2R_NT][G2R_M] */
    KP_LOCAL_MEM float *cs = red + G2R_NT * G2R_M;                   /* [G2R_M][G2R_COLS + 1] */
    KP_LOCAL_MEM kpm_i64 *arow = (KP_LOCAL_MEM kpm_i64 *)(cs + G2R_M * (G2R_COLS + 1));

    const int lid = kp_local_id(0), lane = lid % 32, warp = lid / 32;
    int row0 = 0, hi = 0;
    const int smax = p.small_max < G2R_M ? p.small_max : G2R_M;
    const int e = kpg_find(offsets, p.offsets_off, p.mask_m, p.n_exp, p.dense_rows, p.m, 0, smax, G2R_M, kp_group_id(1),
                           &row0, &hi);
    if (e < 0) return; /* uniform over the work-group */
    const int m = hi - row0;
    const int n0 = kp_group_id(0) * (p.mode == KPG_MODE_SWIGLU ? G2R_COLS / 2 : G2R_COLS);
    const int kbeg = kp_group_id(2) * p.kslice;
    const int kend = kbeg + p.kslice < p.k ? kbeg + p.kslice : p.k;

    kpm_i64 wo[G2R_RPW];
    int wv[G2R_RPW], sr[G2R_RPW];
    for (int i = 0; i < G2R_RPW; ++i) {
        kpm_i64 o = kpg_wrow(warp * G2R_RPW + i, G2R_COLS, n0, p.mode, p.n, p.n_out, e, p.w_off, p.w_se, p.w_sn,
                             p.ws_nb, p.ws_kb, &sr[i]);
        wv[i] = o >= 0, wo[i] = o >= 0 ? o : 0;
    }
    if (lid < G2R_M) arow[lid] = kpg_arow(row0 + lid, hi, gather, p.gather_off, p.gather_k, p.a_rows, p.a_off, p.a_ld);
    float acc[G2R_RPW][G2R_M];
    for (int i = 0; i < G2R_RPW; ++i)
        for (int r = 0; r < G2R_M; ++r) acc[i][r] = 0.0f;

    for (int k0 = kbeg; k0 < kend; k0 += G2R_KC) {
        const int kc = kend - k0 < G2R_KC ? kend - k0 : G2R_KC;
        kp_barrier(); /* arow is set; the previous chunk's activations are used up */
        for (int c = lid; c < m * (G2R_KC / 8); c += G2R_NT) {
            int r = c / (G2R_KC / 8), kk = (c % (G2R_KC / 8)) * 8;
            kpm_i64 ar = arow[r];
            int ok = ar >= 0 && kk < kc;
            float f[8];
#if defined(KP_GG_A_F32)
            uint4 lo = ok ? *(KP_GLOBAL const uint4 *)(a + ar + k0 + kk) : KP_UINT4_ZERO;
            uint4 hi4 = ok ? *(KP_GLOBAL const uint4 *)(a + ar + k0 + kk + 4) : KP_UINT4_ZERO;
            f[0] = kp_as_float(lo.x), f[1] = kp_as_float(lo.y), f[2] = kp_as_float(lo.z), f[3] = kp_as_float(lo.w);
            f[4] = kp_as_float(hi4.x), f[5] = kp_as_float(hi4.y), f[6] = kp_as_float(hi4.z), f[7] = kp_as_float(hi4.w);
#else
            g2_unpack8(ok ? *(KP_GLOBAL const uint4 *)(a + ar + k0 + kk) : KP_UINT4_ZERO, f);
#endif
            for (int j = 0; j < 8; ++j) as[r * G2R_KC + kk + j] = f[j];
        }
        kp_barrier();
        /* every lane computes (a weight row past N reads row 0 of the expert, never stored) */
        if (m <= 4) {
            G2R_STEP(4)
        } else if (m <= 8) {
            G2R_STEP(8)
        } else {
            G2R_STEP(G2R_M)
        }
    }

    /* each weight row's 32 lane partials, summed in local memory */
    for (int i = 0; i < G2R_RPW; ++i) {
        kp_barrier();
        for (int r = 0; r < G2R_M; ++r) red[lid * G2R_M + r] = acc[i][r];
        kp_barrier();
        for (int q = lid; q < G2R_WARPS * G2R_M; q += G2R_NT) {
            int wq = q / G2R_M, r = q % G2R_M;
            float s = 0.0f;
            for (int l = 0; l < 32; ++l) s += red[(wq * 32 + l) * G2R_M + r];
            cs[r * (G2R_COLS + 1) + wq * G2R_RPW + i] = s;
        }
    }
    kp_barrier();
    kpg_rows_finish(cs, G2R_COLS, G2R_M, row0, hi, n0, &p, out, outf, y, pos, tw, part);
}

/* Work-group (x, z): output columns x * G2R_NT .. of the z-th decode expert's rows. */
KP_KERNEL void KP_LAUNCH_BOUNDS(G2R_NT, 1) kp_grouped_gemm_gen2_reduce(G2_ARGS) {
    (void)a, (void)gather, (void)w, (void)ws;
    int row0 = 0, hi = 0;
    const int smax = p.small_max < G2R_M ? p.small_max : G2R_M;
    const int e = kpg_find(offsets, p.offsets_off, p.mask_m, p.n_exp, p.dense_rows, p.m, 0, smax, G2R_M, kp_group_id(1),
                           &row0, &hi);
    const int ncols = p.mode == KPG_MODE_SWIGLU ? p.n_out : p.n;
    const int n = kp_group_id(0) * G2R_NT + kp_local_id(0);
    if (e < 0 || n >= ncols) return;
    kpg_rows_reduce(row0, hi, n, &p, out, outf, y, pos, tw, part);
}
