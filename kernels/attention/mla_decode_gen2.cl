/*
 * kernels/attention/mla_decode_gen2.cl - MLA paged decode, generation 2 (FlashMLA's
 * schedule on mma.sync); the contract is kp_mla_decode's as attention_decode.cl's
 * -DATTN_MLA build runs it: q [B, s_q, h_q, DQK]; one latent KV head, cache
 * [num_blocks, block_size, 1, DQK]; V is the first DV columns of the same row;
 * block_table int32 [B, max_blocks]; seq_lens int32 [B]; causal: query i sees keys
 * j <= seq_len - s_q + i; rows that see no key write 0 and lse +inf. seq_len is clamped
 * to the table's capacity and block ids to [0, num_blocks).
 *
 * Work-group (mt, 0, b * nsplit + sp) packs the s_q * h_q query rows of sequence b (row
 * r: query r / h_q, head r % h_q) into M2_BM = 16 * M2_WM rows (zero-padded), so each
 * latent tile is read from global memory once for all of them (MLA at h_q 128 is
 * compute-bound: the tile feeds 64 rows of tensor-core work). Its key range, split sp of
 * nsplit contiguous runs of M2_BN-key tiles, streams through an M2_STAGES-stage pipeline
 * of 16-byte async copies (common/kp_async_copy.h) in dynamic local memory, the block
 * table read once per key row. Q (M2_BM x DQK) stays in local memory. The split, the
 * copies, the masks and the lse are kp_attn_decode2.h's, shared with
 * attention_decode_gen2.cl.
 *
 * FP8 latent caches (-DATTN_KV_FP8): e4m3 [num_blocks, block_size, 1, DQK] with kv_scale
 * f32 [1] or [num_blocks] (generation 1's k_scale / v_scale arguments; v_scale unused).
 * The pipeline copies the cache's bytes as they are (half a 16-bit tile's), each row's
 * scale beside them; after a tile lands, one pass over it writes e4m3 * scale rounded to
 * the 16-bit dtype (common/kp_fp8.h's exact decoder: kp_mla_decode's contract, as
 * generation 1 reads the cache) into the one 16-bit tile the MMAs read, then a barrier.
 *
 * 2 * M2_WM units of 32 lanes, computing on the wave-level tile (common/kp_wave_tile.h:
 * waves of KP_WT_LANES lanes owning KP_WT_M rows - 32 lanes and 16 rows on NVIDIA and
 * the portable tile; 64 lanes and 32 rows on AMD CDNA, one v_mfma_f32_16x16x16 per
 * 16-row m-block in its native layout, so there M2_WM is even). Wave w takes rows
 * KP_WT_M (w % M2_WMW) .. + KP_WT_M - 1 and half h = w / M2_WMW; the code reads
 * accumulators only through the tile's layout. For each tile:
 *   S    the wave computes Q K^T for its rows and the tile's keys h * BN/2 .. +BN/2 - 1
 *        (the two halves split the 576-deep product, nothing is computed twice);
 *   max  each half's row max through local memory (xmax), so both halves take the same
 *        new max m' = max(m, both tile maxima): the online softmax stays exact;
 *   P    exp2(S - m') rounded to the 16-bit dtype, each half its keys, into the tile's
 *        columns DV .. DQK - 1 (the rope part: read by S only, which both halves have
 *        finished at the max exchange), so P costs no local memory of its own: the
 *        P of the rows from r0 at rows r0 % BN, columns DV + (r0 / BN) BN of the tile
 *        (kp_wt_store_acc_16); each half keeps the row sum of its own keys;
 *   PV   O (KP_WT_M x DV/2 f32: DV/32 wave tiles) += P (all BN keys, from the tile) V,
 *        the wave's DV/2 columns h * DV/2 .. of the same latent tile, V by the
 *        transposing fragment load.
 * The epilogue adds the two halves' row sums (xsum) and writes out / lse, or with
 * nsplit > 1 the f32 partials part [nsplit, B * s_q * h_q, DV] and part_lse (-inf: saw
 * no key) that generation 1's kp_attention_combine (attention_decode.cl) merges.
 * Launch: 64 * M2_WM work-items; grid (m_tiles, 1, B * nsplit).
 * Dynamic local memory: KP_MLA2_LOCAL_BYTES (attention_gen2_layout.h).
 * Requirements the planner checks (else generation 1 runs): 16-bit q; q and cache rows
 * 16-byte aligned (offsets and strides); out's rows 4-byte aligned (the epilogue stores
 * two columns at once where the tile's layout pairs them).
 * Options: KP_DTYPE_F16 / _BF16, M2_DQK, M2_DV, M2_WM, M2_BN, M2_STAGES, ATTN_KV_FP8.
 */
#include "kp_dialect.h"
#include "attention_kargs.h"
#include "attention_gen2_layout.h"
#include "kp_attn_decode2.h"
#include "kp_attn_online.h"
#include "common/kp_fp8.h"

#if defined(KP_DTYPE_F16)
#define M2_MMA kp_wt_mma_f16
#define M2_IS_F16 1
#elif defined(KP_DTYPE_BF16)
#define M2_MMA kp_wt_mma_bf16
#define M2_IS_F16 0
#else
#error "mla_decode_gen2.cl takes 16-bit q (f32 runs generation 1)"
#endif

#ifndef M2_DQK
#define M2_DQK 576
#endif
#ifndef M2_DV
#define M2_DV 512
#endif
#ifndef M2_WM
#define M2_WM 4
#endif
#ifndef M2_BN
#define M2_BN 64
#endif
#ifndef M2_STAGES
#define M2_STAGES 2
#endif
#define M2_BM (16 * M2_WM)
#define M2_NT KP_MLA2_THREADS(M2_WM)
#define M2_DVH (M2_DV / 2)  /* O columns of a wave */
#define M2_BNH (M2_BN / 2)  /* S keys of a wave */
/* the waves: M2_WMW row groups of KP_WT_M rows x the two halves */
#define M2_WMW (M2_BM / KP_WT_M)
#if M2_BM % KP_WT_M || M2_NT / KP_WT_LANES != 2 * M2_WMW
#error "mla_decode_gen2.cl: M2_WM even on AMD (a 64-lane wave holds 32 rows, and each row group takes two waves)"
#endif
#if M2_DQK % 16 || M2_DVH % 16 || M2_BNH % 16 || M2_STAGES < 2 || M2_STAGES > 4
#error "mla_decode_gen2.cl: DQK, DV / 2, BN / 2 multiples of 16; 2 <= M2_STAGES <= 4"
#endif
#if M2_DV + (M2_BM > M2_BN ? M2_BM : M2_BN) > M2_DQK || (M2_BM > M2_BN && M2_BM % M2_BN) || M2_BN % KP_WT_M
#error "mla_decode_gen2.cl: P (BM x BN) must fit in the tile's columns DV .. DQK - 1"
#endif

#define M2_LDK (M2_DQK + 8)
#define M2_KF (M2_DQK / 16) /* k16 steps of Q K^T */
#define M2_SF (M2_BNH / 16) /* 16-key wave tiles of a wave's S */
#define M2_OF (M2_DVH / 16) /* 16-column wave tiles of a wave's O */
/* a loop over the O accumulators nvcc would not unroll on its own (they would go to the
 * stack); every target's compiler takes the pragma */
#define M2_UNROLL _Pragma("unroll")

#if defined(ATTN_KV_FP8)
typedef unsigned char m2_kv_t;
#define M2_STAGE_BYTES (M2_BN * M2_DQK) /* e4m3 rows as the cache holds them */
#define M2_FP8_ARGS                                                                                      \
    , KP_GLOBAL const float *KP_RESTRICT kv_scale, KP_GLOBAL const float *KP_RESTRICT v_scale_unused, \
        kp_attn_kv_fp8_kargs f
#else
typedef kp_storage_t m2_kv_t;
#define M2_STAGE_BYTES (M2_BN * M2_LDK * 2)
#define M2_FP8_ARGS
#endif

/* Issues latent rows n0 .. n0 + M2_BN - 1 (zeros from kend on) into stage st, each row's
 * cache block from the table; FP8: each row's scale into sc[row] (0 past kend). */
KP_FN void m2_issue(KP_LOCAL_MEM unsigned char *st, KP_GLOBAL const m2_kv_t *kv, KP_GLOBAL const int *trow, int n0,
                    int kend, const kp_attn_decode_kargs *p
#if defined(ATTN_KV_FP8)
                    ,
                    KP_LOCAL_MEM float *sc, KP_GLOBAL const float *kv_scale, const kp_attn_kv_fp8_kargs *f
#endif
) {
#if defined(ATTN_KV_FP8)
    kp_dec2_issue_rows(st, M2_DQK, (KP_GLOBAL const unsigned char *)kv, 1, p->k_off, p->k_s0, p->k_s1, trow, n0, kend,
                       M2_BN, M2_DQK, p, M2_NT);
    for (int r = kp_local_id(0); r < M2_BN; r += M2_NT) {
        int j = n0 + r, blk = j < kend ? min(max(trow[j / p->block_size], 0), p->num_blocks - 1) : 0;
        sc[r] = j < kend ? kv_scale[f->ks_off + (f->ks_per_block ? blk : 0)] : 0.0f;
    }
#else
    kp_dec2_issue_rows(st, M2_LDK * 2, (KP_GLOBAL const unsigned char *)kv, 2, p->k_off, p->k_s0, p->k_s1, trow, n0,
                       kend, M2_BN, M2_DQK * 2, p, M2_NT);
#endif
}

#if defined(ATTN_KV_FP8)
/* The landed e4m3 stage st (scales sc) into the 16-bit tile: e4m3 * scale in f32, rounded
 * to the dtype; 16 bytes in, 32 out, a work-item at a time. */
KP_FN void m2_dequant(KP_LOCAL_MEM kp_u16 *tile, KP_LOCAL_MEM const unsigned char *st, KP_LOCAL_MEM const float *sc) {
    for (int c = kp_local_id(0); c < M2_BN * (M2_DQK / 16); c += M2_NT) {
        int r = c / (M2_DQK / 16), col = (c % (M2_DQK / 16)) * 16;
        uint4 x = *(KP_LOCAL_MEM const uint4 *)(st + r * M2_DQK + col);
        const float s = sc[r];
        kp_u32 in[4] = {x.x, x.y, x.z, x.w}, w[8];
        for (int i = 0; i < 4; ++i) {
            w[2 * i] = kp_pack2_f32_(kp_e4m3_to_f32(in[i] & 0xffu) * s, kp_e4m3_to_f32((in[i] >> 8) & 0xffu) * s,
                                     M2_IS_F16);
            w[2 * i + 1] = kp_pack2_f32_(kp_e4m3_to_f32((in[i] >> 16) & 0xffu) * s, kp_e4m3_to_f32(in[i] >> 24) * s,
                                         M2_IS_F16);
        }
        uint4 lo, hi;
        lo.x = w[0], lo.y = w[1], lo.z = w[2], lo.w = w[3];
        hi.x = w[4], hi.y = w[5], hi.z = w[6], hi.w = w[7];
        KP_LOCAL_MEM uint4 *d = (KP_LOCAL_MEM uint4 *)(tile + r * M2_LDK + col);
        d[0] = lo, d[1] = hi;
    }
}
#endif

KP_KERNEL void KP_LAUNCH_BOUNDS(M2_NT, 1)
    kp_mla_decode_gen2(KP_GLOBAL const kp_storage_t *KP_RESTRICT q, KP_GLOBAL const m2_kv_t *KP_RESTRICT kv,
                       KP_GLOBAL const m2_kv_t *KP_RESTRICT v_unused, KP_GLOBAL kp_storage_t *KP_RESTRICT out,
                       KP_GLOBAL float *KP_RESTRICT lse, KP_GLOBAL float *KP_RESTRICT part,
                       KP_GLOBAL float *KP_RESTRICT part_lse, KP_GLOBAL const int *KP_RESTRICT table,
                       KP_GLOBAL const int *KP_RESTRICT seq_lens,
                       kp_attn_decode_kargs p M2_FP8_ARGS KP_DYNAMIC_LOCAL_ARG(smem)) {
    KP_DYNAMIC_LOCAL(smem);
    /* Q, then the stages (FP8: the 16-bit tile, the e4m3 stages and their row scales),
     * the quad scratch, the halves' row maxima and sums: KP_MLA2_LOCAL_BYTES */
    KP_LOCAL_MEM kp_u16 *qs = (KP_LOCAL_MEM kp_u16 *)smem;
#if defined(ATTN_KV_FP8)
    KP_LOCAL_MEM kp_u16 *tile16 = qs + M2_BM * M2_LDK;
    KP_LOCAL_MEM unsigned char *stages = (KP_LOCAL_MEM unsigned char *)(tile16 + M2_BN * M2_LDK);
    KP_LOCAL_MEM float *scales = (KP_LOCAL_MEM float *)(stages + M2_STAGES * M2_STAGE_BYTES); /* [STAGES][BN] */
    KP_LOCAL_MEM float *red = scales + M2_STAGES * M2_BN;
#define M2_ISSUE(t_) m2_issue(stages + ((t_) % M2_STAGES) * M2_STAGE_BYTES, kv, trow, kb + (t_) * M2_BN, kend, &p, \
                              scales + ((t_) % M2_STAGES) * M2_BN, kv_scale, &f)
    (void)v_scale_unused;
#else
    KP_LOCAL_MEM unsigned char *stages = (KP_LOCAL_MEM unsigned char *)(qs + M2_BM * M2_LDK);
    KP_LOCAL_MEM float *red = (KP_LOCAL_MEM float *)(stages + M2_STAGES * M2_STAGE_BYTES);
#define M2_ISSUE(t_) m2_issue(stages + ((t_) % M2_STAGES) * M2_STAGE_BYTES, kv, trow, kb + (t_) * M2_BN, kend, &p)
#endif
    KP_LOCAL_MEM float *xmax = red + 2 * M2_NT; /* [2][BM] each half's tile row max */
    KP_LOCAL_MEM float *xsum = xmax + 2 * M2_BM; /* [2][BM] each half's row sum */
    (void)v_unused;

    const int lid = kp_local_id(0), lane = kp_wt_lane(), wave = kp_wt_wave();
    const int w0 = (wave % M2_WMW) * KP_WT_M, wh = wave / M2_WMW; /* the wave's first row, half */
    const int b = kp_group_id(2) / p.nsplit, sp = kp_group_id(2) % p.nsplit;
    const int partial = p.nsplit > 1;
    const kp_dec2_i64 nrows_all = (kp_dec2_i64)(kp_num_groups(2) / p.nsplit) * p.s_q * p.h_q;

    /* one latent head: the packed rows are s_q * h_q (group = h_q), row r query r / h_q */
    const kp_dec2_seq sq = kp_dec2_split(&p, seq_lens, b, sp, M2_BN);
    const int rows = p.s_q * p.h_q, kb = sq.kb;
    KP_GLOBAL const int *trow = table + p.bt_off + (kp_dec2_i64)b * p.bt_s0;

    for (int m0 = kp_group_id(0) * M2_BM; m0 < rows; m0 += kp_num_groups(0) * M2_BM) {
        /* the Q tile, padding rows as zeros: its own copy group, landed by tile 0's wait */
        kp_dec2_load_q(qs, M2_LDK, q, &p, b, 0, m0, rows, M2_BM, M2_DQK, M2_NT);
        kp_copy_commit();

        /* the last key each of this lane's row slots sees, and the keys of this split some
         * row of the tile sees */
        int rhi[KP_WT_ROWS], kend;
        const int ntiles = kp_dec2_wt_tile_keys(&p, &sq, m0, M2_BM, rows, w0, lane, M2_BN, rhi, &kend);

        for (int s = 0; s < M2_STAGES - 1; ++s) {
            if (s < ntiles) M2_ISSUE(s);
            kp_copy_commit();
        }

        float mrow[KP_WT_ROWS], lrow[KP_WT_ROWS];
        for (int i = 0; i < KP_WT_ROWS; ++i) mrow[i] = -KP_INFINITY, lrow[i] = 0.0f;
        kp_wt_acc o[M2_OF];
        for (int f = 0; f < M2_OF; ++f) kp_wt_acc_zero(&o[f]);
        KP_LOCAL_MEM const kp_u16 *qt = qs + w0 * M2_LDK;
        const int poff = w0 % M2_BN * M2_LDK + M2_DV + w0 / M2_BN * M2_BN; /* this wave's rows' P */
        for (int t = 0; t < ntiles; ++t) {
            kp_copy_wait(M2_STAGES - 2);
            kp_barrier(); /* tile t (and Q) landed; every group is done with tile t - 1's stage and P */
            if (t + M2_STAGES - 1 < ntiles) M2_ISSUE(t + M2_STAGES - 1);
            kp_copy_commit();
#if defined(ATTN_KV_FP8)
            KP_LOCAL_MEM kp_u16 *tile = tile16;
            m2_dequant(tile, stages + (t % M2_STAGES) * M2_STAGE_BYTES, scales + (t % M2_STAGES) * M2_BN);
            kp_barrier(); /* the 16-bit tile written */
#else
            KP_LOCAL_MEM kp_u16 *tile = (KP_LOCAL_MEM kp_u16 *)(stages + (t % M2_STAGES) * M2_STAGE_BYTES);
#endif
            KP_LOCAL_MEM kp_u16 *prow = tile + poff;
            KP_LOCAL_MEM const kp_u16 *kt = tile + wh * M2_BNH * M2_LDK; /* this half's keys */

            /* S = Q K^T for this half's keys */
            kp_wt_acc s[M2_SF];
            for (int j = 0; j < M2_SF; ++j) kp_wt_acc_zero(&s[j]);
            for (int i = 0; i < M2_KF; ++i) {
                kp_wt_a qa;
                kp_wt_load_a(&qa, qt + i * 16, M2_LDK, lane);
                for (int j = 0; j < M2_SF; ++j) {
                    kp_wt_b kf;
                    kp_wt_load_b(&kf, kt + j * 16 * M2_LDK + i * 16, M2_LDK, lane);
                    M2_MMA(&s[j], &qa, &kf);
                }
            }

            /* scale, mask (keys past a row's causal bound or the split's end), row max */
            float tmax[KP_WT_ROWS];
            kp_dec2_wt_scale_mask(s, M2_SF, p.scale_log2, kb + t * M2_BN + wh * M2_BNH, lane, kend, rhi, tmax, red, lid);
            /* the two halves' maxima: both take the same m' */
            if (lane % KP_WT_ROW_LANES == 0)
                for (int i = 0; i < KP_WT_ROWS; ++i) xmax[wh * M2_BM + w0 + kp_wt_row(lane, i)] = tmax[i];
            kp_barrier(); /* ... and both halves' S done: P may overwrite the rope columns */
            for (int i = 0; i < KP_WT_ROWS; ++i) tmax[i] = kp_fmaxf(tmax[i], xmax[(1 - wh) * M2_BM + w0 + kp_wt_row(lane, i)]);

            /* online softmax: P = exp2(S - m') into the tile, l and O rescaled by exp2(m - m') */
            float base[KP_WT_ROWS], alpha[KP_WT_ROWS];
            kp_attn_online_wt_rescale(mrow, lrow, tmax, base, alpha);
            for (int j = 0; j < M2_SF; ++j) {
                for (int e = 0; e < KP_WT_ACC_N; ++e) {
                    float pv = kp_dec2_exp2(kp_wt_el(s[j], e) - base[kp_wt_slot(e)]);
                    kp_wt_el(s[j], e) = pv;
                    lrow[kp_wt_slot(e)] += pv;
                }
                kp_wt_store_acc_16(&s[j], prow + wh * M2_BNH + j * 16, M2_LDK, M2_IS_F16, lane);
            }
            for (int f = 0; f < M2_OF; ++f)
                for (int e = 0; e < KP_WT_ACC_N; ++e) kp_wt_el(o[f], e) *= alpha[kp_wt_slot(e)];
            kp_barrier(); /* P of both halves written */

            /* O += P V over all the tile's keys, this half's columns of the same tile */
            KP_LOCAL_MEM const kp_u16 *vt = tile + wh * M2_DVH;
            for (int kk = 0; kk < M2_BN / 16; ++kk) {
                kp_wt_a pa;
                kp_wt_load_a(&pa, prow + kk * 16, M2_LDK, lane);
                for (int f = 0; f < M2_OF; ++f) {
                    kp_wt_b vb;
                    kp_wt_load_b_trans(&vb, vt + kk * 16 * M2_LDK + f * 16, M2_LDK, lane);
                    M2_MMA(&o[f], &pa, &vb);
                }
            }
        }

        /* epilogue: each half's row sums over the lanes sharing a row, the two halves added */
        kp_wt_row_sum(lrow, red, lid);
        if (lane % KP_WT_ROW_LANES == 0)
            for (int i = 0; i < KP_WT_ROWS; ++i) xsum[wh * M2_BM + w0 + kp_wt_row(lane, i)] = lrow[i];
        kp_copy_wait(0);
        kp_barrier();
        float inv[KP_WT_ROWS];
        kp_dec2_i64 dst[KP_WT_ROWS]; /* this wave's first column of each slot's row in out or part; -1: padding */
        M2_UNROLL for (int i = 0; i < KP_WT_ROWS; ++i) {
            int r = w0 + kp_wt_row(lane, i), row = m0 + r, qi = row / p.h_q, hq = row % p.h_q;
            float l = xsum[r] + xsum[M2_BM + r];
            inv[i] = l > 0.0f ? 1.0f / l : 0.0f;
            kp_dec2_i64 rowid = ((kp_dec2_i64)b * p.s_q + qi) * p.h_q + hq;
            dst[i] = row >= rows ? -1
                     : partial ? (sp * nrows_all + rowid) * M2_DV + wh * M2_DVH
                               : p.o_off + (kp_dec2_i64)b * p.o_s0 + (kp_dec2_i64)qi * p.o_s1 +
                                     (kp_dec2_i64)hq * p.o_s2 + wh * M2_DVH;
            if (row < rows && wh == 0 && lane % KP_WT_ROW_LANES == 0)
                kp_dec2_store_lse(&p, lse, part_lse, partial, sp * nrows_all + rowid, b, qi, hq, mrow[i], l);
        }
        /* a row slot at a time (constant slots: O stays in registers), its columns by the
         * tile's row stores: one branch a row, addresses the row's plus constants, two
         * columns a store where the layout pairs them (out's rows 4-byte aligned: the
         * planner's rule) */
        M2_UNROLL for (int i = 0; i < KP_WT_ROWS; ++i) {
            if (dst[i] < 0) continue;
            if (partial) kp_wt_store_row_f32(o, M2_OF, i, inv[i], part + dst[i], lane);
            else kp_wt_store_row_16(o, M2_OF, i, inv[i], (KP_GLOBAL kp_u16 *)out + dst[i], M2_IS_F16, lane);
        }
        kp_barrier(); /* the next row tile reuses Q, the stages and the sums */
    }
}
