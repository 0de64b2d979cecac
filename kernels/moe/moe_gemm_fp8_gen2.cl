/*
 * kernels/moe/moe_gemm_fp8_gen2.cl - grouped GEMM, generation 2, W8A8: e4m3 activations
 * a [M, K] with f32 scales per 1 x 128 token group, e4m3 weights w [E, N, K] with f32
 * 128 x 128 block scales, f32 accumulation; out (the dtype: f32, f16 or bf16) =
 *     sum over K slices kb of (a[r, slice kb] . w[e, n, slice kb]) * a_scale(r, kb) * w_scale[e, n/128, kb]
 * (kp_grouped_gemm's contract, include/kport.h; the expert search, index clamping and
 * epilogue are moe_gemm_common.h's).
 *
 * kp_grouped_gemm_fp8_gen2_tiled   every expert with rows (no separate decode kernel:
 *     the weight tile is read once per (expert, column tile) whatever the row count, so
 *     small experts stream their weights at the same bytes; the unused MMA rows cost
 *     e4m3 tensor-core time only). G8_BM x G8_BN output tiles, G8_WM x G8_WN units of
 *     32 work-items. K runs in tiles of 128 - one scale slice each - through a
 *     G8_STAGES-stage pipeline in dynamic local memory (common/kp_async_copy.h): 16-byte
 *     cp.async of the raw e4m3 rows of A and B, and the slice's row and column scales
 *     (plain loads into the same stage). Each tile is multiplied into fresh f32 tiles
 *     with the wave-level tile's e4m3 unit (common/kp_wave_tile_e4m3.h, which owns the
 *     layout: m16n8k32 e4m3 mma.sync on sm_89+, f16 decode + m16n8k16 on sm_80; on AMD
 *     CDNA 64-lane waves of 32 rows, e4m3 decoded to f16 in registers, two
 *     v_mfma_f32_16x16x16f16 per 16 rows and 32 k in the native layout; f32 decode
 *     elsewhere), then promoted once through the tile's layout: acc += slice * a_scale *
 *     w_scale (DeepGEMM's promotion). The G8_WM x G8_WN units pair into waves along M
 *     (G8_VM x G8_VN waves, each a G8_TM x G8_TN tile), so one launch shape,
 *     G8_WM * G8_WN * 32 work-items, serves every target.
 *     Work-group (x, z): column tile x, row tile z over the experts.
 *     Epilogues: moe_gemm_common.h's, and (tiles with G8_BN % 256 == 0, whose SwiGLU
 *     columns are whole 128-column groups of h) SWIGLU_FP8, kp_moe_forward's W8A8 w13
 *     GEMM: h = silu(gate) * up in f32 quantized to e4m3 with its 1 x 128 group scales
 *     in the work-group (g8_swiglu_fp8), no f32 h in memory and no quantize launch.
 *
 * Requirements the planner checks: K % 128 == 0 (the API's); 16-byte aligned rows of a
 * and w (offsets and row strides multiples of 16 bytes).
 * kp_grouped_gemm_fp8_rows, _reduce   decode-sized experts (moe_gemm_fp8_rows.h, included
 *     at the end): weight streaming with split-K; the planner picks between the two.
 *
 * Options: KP_DTYPE_F32 / _F16 / _BF16 (out), KP_GG_A_FP8 and KP_GG_W_FP8 (both
 * required); G8_BM, G8_BN, G8_WM, G8_WN, G8_STAGES, G8_MIN_BLOCKS; G8R_WARPS (decode).
 */
#include "kp_dialect.h"
#include "moe_gemm_common.h"
#include "common/kp_async_copy.h"
#include "common/kp_wave_tile_e4m3.h"

#if !defined(KP_GG_A_FP8) || !defined(KP_GG_W_FP8)
#error "moe_gemm_fp8_gen2.cl takes e4m3 activations and weights (-DKP_GG_A_FP8 -DKP_GG_W_FP8)"
#endif

#ifndef G8_BM
#define G8_BM 128
#endif
#ifndef G8_BN
#define G8_BN 128
#endif
#ifndef G8_WM
#define G8_WM 2
#endif
#ifndef G8_WN
#define G8_WN 4
#endif
#ifndef G8_STAGES
#define G8_STAGES 3
#endif
#ifndef G8_MIN_BLOCKS
#define G8_MIN_BLOCKS 1
#endif

#define G8_NT (G8_WM * G8_WN * 32) /* work-items: the same on every target */
#define G8_UPW (KP_WT_LANES / 32)    /* 32-lane units a wave: 1, 2 on AMD MFMA */
#define G8_VM (G8_WM / G8_UPW)       /* waves along M, along N */
#define G8_VN G8_WN
#define G8_TM (G8_BM / G8_VM)        /* a wave's rows, columns */
#define G8_TN (G8_BN / G8_VN)
#define G8_FM (G8_TM / KP_WT_M)      /* its wave tiles along M, along N */
#define G8_FN (G8_TN / KP_WT_N)
#define G8_BK KP_MOE_GEMM8_BK
#define G8_LD KP_MOE_GEMM8_LD
#define G8_CHUNKS (G8_BK / 16) /* 16-byte chunks of a tile row */
#define G8_LDC (G8_BN + 4)
#define G8_STAGE KP_MOE_GEMM8_STAGE_BYTES(G8_BM, G8_BN)
#if G8_BM % (16 * G8_WM) || G8_BN % (16 * G8_WN) || (G8_BM + G8_BN) % 4 || G8_STAGES < 2 || G8_STAGES > 4
#error "moe_gemm_fp8_gen2.cl: G8_BM % (16 G8_WM), G8_BN % (16 G8_WN), (G8_BM + G8_BN) % 4 must be 0; 2 <= G8_STAGES <= 4"
#endif
#if G8_WM % G8_UPW || G8_TM % KP_WT_M
#error "moe_gemm_fp8_gen2.cl: G8_WM a multiple of the 32-lane units a wave has, G8_BM / waves along M of its rows"
#endif

#define G8_ARGS                                                                                        \
    KP_GLOBAL const kpg_a_t *KP_RESTRICT a, KP_GLOBAL const int *KP_RESTRICT gather,                   \
        KP_GLOBAL const kpg_w_t *KP_RESTRICT w, KP_GLOBAL const float *KP_RESTRICT ws,                 \
        KP_GLOBAL const int *KP_RESTRICT offsets, KP_GLOBAL kp_storage_t *out, KP_GLOBAL float *outf,  \
        KP_GLOBAL const kp_storage_t *KP_RESTRICT y, KP_GLOBAL const int *KP_RESTRICT pos,             \
        KP_GLOBAL const float *KP_RESTRICT tw, KP_GLOBAL float *part,                                  \
        KP_GLOBAL const float *KP_RESTRICT as, kp_moe_gemm_kargs p

/* Issues K tile kt (bytes kt*128 ..) of A and B into stage st, and its scales (every
 * work-item, uniformly). A stage: A [G8_BM][G8_LD], B [G8_BN][G8_LD], sa [G8_BM], sw [G8_BN]. */
KP_FN void g8_issue(KP_LOCAL_MEM unsigned char *st, int kt, KP_GLOBAL const kpg_a_t *a, KP_GLOBAL const kpg_w_t *w,
                    KP_GLOBAL const float *ws, KP_GLOBAL const float *as, const kp_moe_gemm_kargs *p,
                    KP_LOCAL_MEM const kpm_i64 *arow, KP_LOCAL_MEM const kpm_i64 *asrow,
                    KP_LOCAL_MEM const kpm_i64 *wrow, KP_LOCAL_MEM const int *srow) {
    const int lid = kp_local_id(0), k0 = kt * G8_BK;
    for (int c = lid; c < G8_BM * G8_CHUNKS; c += G8_NT) {
        int r = c / G8_CHUNKS, k = k0 + (c % G8_CHUNKS) * 16;
        kpm_i64 ar = arow[r];
        kp_copy16_async(st + r * G8_LD + (c % G8_CHUNKS) * 16, a + (ar >= 0 ? ar + k : 0), ar >= 0);
    }
    KP_LOCAL_MEM unsigned char *bs = st + G8_BM * G8_LD;
    for (int c = lid; c < G8_BN * G8_CHUNKS; c += G8_NT) {
        int r = c / G8_CHUNKS, k = k0 + (c % G8_CHUNKS) * 16;
        kpm_i64 wo = wrow[r];
        kp_copy16_async(bs + r * G8_LD + (c % G8_CHUNKS) * 16, w + (wo >= 0 ? wo + k : 0), wo >= 0);
    }
    KP_LOCAL_MEM float *sa = (KP_LOCAL_MEM float *)(st + (G8_BM + G8_BN) * G8_LD), *sw = sa + G8_BM;
    for (int c = lid; c < G8_BM + G8_BN; c += G8_NT) {
        if (c < G8_BM) sa[c] = asrow[c] >= 0 ? as[asrow[c] + kt * p->as_g] : 0.0f;
        else sw[c - G8_BM] = wrow[c - G8_BM] >= 0 ? ws[p->ws_off + srow[c - G8_BM] + kt] : 0.0f;
    }
}

#if G8_BN % 256 == 0
#define G8_FUSED_GROUPS (G8_BN / 256) /* whole 128-column groups of h in a SwiGLU tile */
/* The SWIGLU_FP8 epilogue: from the finished tile cs (gate columns, then up columns),
 * h = silu(gate) * up in f32 for rows row0.. and h columns n0.. (G8_BN / 2 of them,
 * whole 128-column groups), each (row, group) quantized as kp_quantize_fp8 does
 * (quantize_fp8.cl: amax of |h| floored at 1e-10, scale amax / 448 or, ue8m0, the power
 * of two from amax's bits; e4m3(h / scale)): e4m3 h to out8, the scales to os. Local
 * memory: h replaces the gate columns; the up columns then hold each group's 4 partial
 * maxima and its scale. */
KP_FN void g8_swiglu_fp8(KP_LOCAL_MEM float *cs, int row0, int hi, int n0, const kp_moe_gemm_kargs *p,
                         KP_GLOBAL unsigned char *out8, KP_GLOBAL float *os) {
    const int lid = kp_local_id(0), hb = G8_BN / 2;
    for (int idx = lid; idx < G8_BM * hb; idx += G8_NT) {
        int i = idx / hb, c = idx % hb;
        float v = cs[i * G8_LDC + c], u = cs[i * G8_LDC + hb + c];
        cs[i * G8_LDC + c] = v / (1.0f + kp_expf(-v)) * u;
    }
    kp_barrier();
    for (int idx = lid; idx < G8_BM * G8_FUSED_GROUPS * 4; idx += G8_NT) { /* 4 work-items a group, 32 columns each */
        int i = idx / (G8_FUSED_GROUPS * 4), g = (idx / 4) % G8_FUSED_GROUPS, q = idx % 4;
        KP_LOCAL_MEM const float *h = cs + i * G8_LDC + g * 128 + q * 32;
        float m = 0.0f;
        for (int c = 0; c < 32; ++c) m = kp_fmaxf(m, kp_as_float(kp_as_uint(h[c]) & 0x7fffffffu));
        cs[i * G8_LDC + hb + g * 4 + q] = m;
    }
    kp_barrier();
    for (int idx = lid; idx < G8_BM * G8_FUSED_GROUPS; idx += G8_NT) {
        int i = idx / G8_FUSED_GROUPS, g = idx % G8_FUSED_GROUPS;
        KP_LOCAL_MEM float *m = cs + i * G8_LDC + hb + g * 4;
        float amax = kp_fmaxf(kp_fmaxf(kp_fmaxf(m[0], m[1]), kp_fmaxf(m[2], m[3])), 1e-10f), sc;
        if (p->ue8m0) { /* 448 * 2^(e-8) = 1.75 * 2^e covers amax = 2^e * 1.f when 1.f <= 1.75 */
            kp_u32 u = kp_as_uint(amax);
            int e = (int)(u >> 23) - 127 - ((u & 0x7fffffu) <= 0x600000u ? 8 : 7);
            sc = kp_as_float((kp_u32)(e + 127) << 23);
        } else {
            sc = amax / KP_FP8_MAX;
        }
        cs[i * G8_LDC + hb + G8_FUSED_GROUPS * 4 + g] = sc;
        int r = row0 + i, n = n0 + g * 128;
        if (r < hi && n < p->n_out) os[p->os_off + (kpm_i64)r * p->os_t + n / 128] = sc;
    }
    kp_barrier();
    for (int idx = lid; idx < G8_BM * hb; idx += G8_NT) {
        int i = idx / hb, c = idx % hb, r = row0 + i, n = n0 + c;
        if (r >= hi || n >= p->n_out) continue;
        float sc = cs[i * G8_LDC + hb + G8_FUSED_GROUPS * 4 + c / 128];
        out8[p->out_off + (kpm_i64)r * p->out_ld + n] = (unsigned char)kp_f32_to_e4m3(cs[i * G8_LDC + c] / sc);
    }
}
#endif

KP_KERNEL void KP_LAUNCH_BOUNDS(G8_NT, G8_MIN_BLOCKS) kp_grouped_gemm_fp8_gen2_tiled(G8_ARGS KP_DYNAMIC_LOCAL_ARG(smem)) {
    KP_DYNAMIC_LOCAL(smem);
    KP_LOCAL_MEM unsigned char *stages = (KP_LOCAL_MEM unsigned char *)smem;
    KP_LOCAL_MEM float *cs = (KP_LOCAL_MEM float *)smem; /* after the K loop */
    KP_LOCAL_MEM char *idx = (KP_LOCAL_MEM char *)smem + KP_MOE_GEMM8_TILES_BYTES(G8_BM, G8_BN, G8_STAGES);
    KP_LOCAL_MEM kpm_i64 *arow = (KP_LOCAL_MEM kpm_i64 *)idx;
    KP_LOCAL_MEM kpm_i64 *asrow = arow + G8_BM;
    KP_LOCAL_MEM kpm_i64 *wrow = asrow + G8_BM;
    KP_LOCAL_MEM int *srow = (KP_LOCAL_MEM int *)(wrow + G8_BN);
    (void)part;

    const int lid = kp_local_id(0);
    int row0 = 0, hi = 0;
    const int e = kpg_find(offsets, p.offsets_off, p.mask_m, p.n_exp, p.dense_rows, p.m, 0, 0x7fffffff, G8_BM,
                           kp_group_id(1), &row0, &hi);
    if (e < 0) return; /* uniform over the work-group */
    const int n0 = kp_group_id(0) * (KPG_SWIGLU(p.mode) ? G8_BN / 2 : G8_BN);
    for (int i = lid; i < G8_BM; i += G8_NT) {
        kpm_i64 ar = kpg_arow(row0 + i, hi, gather, p.gather_off, p.gather_k, p.a_rows, p.a_off, p.a_ld);
        arow[i] = ar;
        /* the scale row: the source row a's row offset came from */
        asrow[i] = ar >= 0 ? p.as_off + (p.a_ld > 0 ? (ar - p.a_off) / p.a_ld : 0) * p.as_t : -1;
    }
    for (int c = lid; c < G8_BN; c += G8_NT) {
        int sr;
        wrow[c] = kpg_wrow(c, G8_BN, n0, p.mode, p.n, p.n_out, e, p.w_off, p.w_se, p.w_sn, p.ws_nb, p.ws_kb, &sr);
        srow[c] = sr;
    }
    kp_barrier();

    const int lane = kp_wt_lane(), wave = kp_wt_wave(), gm = wave / G8_VN, gn = wave % G8_VN;
    const int fr0 = gm * G8_TM, fc0 = gn * G8_TN; /* the wave's tile in the block's */
    kp_wt_acc acc[G8_FM * G8_FN];
    for (int f = 0; f < G8_FM * G8_FN; ++f) kp_wt_acc_zero(&acc[f]);

    const int ktiles = p.k / G8_BK;
    for (int s = 0; s < G8_STAGES - 1; ++s) {
        if (s < ktiles) g8_issue(stages + s * G8_STAGE, s, a, w, ws, as, &p, arow, asrow, wrow, srow);
        kp_copy_commit();
    }
    for (int t = 0; t < ktiles; ++t) {
        kp_copy_wait(G8_STAGES - 2);
        kp_barrier(); /* tile t landed; every group is done with tile t - 1's stage */
        const int nt = t + G8_STAGES - 1;
        if (nt < ktiles) g8_issue(stages + (nt % G8_STAGES) * G8_STAGE, nt, a, w, ws, as, &p, arow, asrow, wrow, srow);
        kp_copy_commit();
        KP_LOCAL_MEM const unsigned char *at = stages + (t % G8_STAGES) * G8_STAGE;
        KP_LOCAL_MEM const unsigned char *bt = at + G8_BM * G8_LD;
        KP_LOCAL_MEM const float *sa = (KP_LOCAL_MEM const float *)(at + (G8_BM + G8_BN) * G8_LD);
        KP_LOCAL_MEM const float *sw = sa + G8_BM;
        kp_wt_acc sl[G8_FM * G8_FN]; /* this K slice's sums */
        for (int f = 0; f < G8_FM * G8_FN; ++f) kp_wt_acc_zero(&sl[f]);
        KP_NO_UNROLL /* unrolled, nvcc holds several steps' fragments: 255 registers and spills at 128 x 128 */
        for (int kk = 0; kk < G8_BK; kk += KP_WT8_K) {
            kp_wt8_a fa[G8_FM];
            for (int i = 0; i < G8_FM; ++i) kp_wt8_load_a(&fa[i], at + (fr0 + i * KP_WT_M) * G8_LD + kk, G8_LD, lane);
            KP_UNROLL
            for (int j = 0; j < G8_FN; ++j) {
                kp_wt8_b fb;
                kp_wt8_load_b(&fb, bt + (fc0 + j * KP_WT_N) * G8_LD + kk, G8_LD, lane);
                for (int i = 0; i < G8_FM; ++i) kp_wt8_mma(&sl[i * G8_FN + j], &fa[i], &fb);
            }
        }
        for (int i = 0; i < G8_FM; ++i)
            for (int j = 0; j < G8_FN; ++j)
                kp_wt8_promote(&acc[i * G8_FN + j], &sl[i * G8_FN + j], sa + fr0 + i * KP_WT_M, sw + fc0 + j * KP_WT_N,
                               lane);
    }
    kp_copy_wait(0);
    kp_barrier(); /* the stages become the C tile */
    for (int i = 0; i < G8_FM; ++i)
        for (int j = 0; j < G8_FN; ++j)
            kp_wt8_store_local_f32(&acc[i * G8_FN + j], cs + (fr0 + i * KP_WT_M) * G8_LDC + fc0 + j * KP_WT_N, G8_LDC,
                                   lane);
    kp_barrier();
#if G8_BN % 256 == 0
    if (p.mode == KPG_MODE_SWIGLU_FP8) { /* uniform over the work-group */
        g8_swiglu_fp8(cs, row0, hi, n0, &p, (KP_GLOBAL unsigned char *)out, outf);
        return;
    }
#endif
    kpg_epilogue(cs, G8_LDC, G8_BM, G8_BN, row0, hi, n0, p.mode, p.n, p.n_out, out, outf, p.out_off, p.out_ld, y,
                 p.y_off, p.y_ld, p.y_rows, pos, p.pos_off, tw, p.tw_off, p.topk);
}

/* the decode kernels: same options and arguments */
#include "moe_gemm_fp8_rows.h"
