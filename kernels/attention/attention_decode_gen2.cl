/*
 * kernels/attention/attention_decode_gen2.cl - paged-KV decode, generation 2 (the
 * GQA-packed split-KV schedule of FlashInfer's and FA2's decode); the contract is
 * attention_decode.cl's kp_attention_decode_paged: q [B, s_q, h_q, DQK]; k cache
 * [num_blocks, block_size, h_kv, DQK], v cache [.., DV]; block_table int32 [B, max_blocks];
 * seq_lens int32 [B]; causal: query i sees keys j <= seq_len - s_q + i; rows that see no
 * key write 0 and lse +inf. seq_len is clamped to the table's capacity and block ids to
 * [0, num_blocks): bad contents never address outside the cache.
 *
 * Work-group (mt, hk, b * nsplit + sp) packs the s_q * G query rows of (b, hk) (row r:
 * query r / G, q head hk * G + r % G) into D2_BM = 16 * D2_WM rows - the MMA's M, padded
 * with zero rows - so each K/V tile is read once for the whole GQA group. Its key range,
 * split sp of nsplit contiguous runs of D2_BN-key tiles, streams through a D2_STAGES-stage
 * pipeline of 16-byte async copies (common/kp_async_copy.h) in dynamic local memory, the
 * block table read once per key row of a tile. The work-group is sized in 32-lane units,
 * D2_WM x D2_WN of them (the planner's and the local memory's unit), and computes on the
 * wave-level tile (common/kp_wave_tile.h): waves of KP_WT_LANES lanes owning KP_WT_M rows
 * (NVIDIA and the portable tile: 32 lanes, 16 rows, so a wave is a unit; AMD CDNA: 64
 * lanes, 32 rows, one v_mfma_f32_16x16x16 per 16-row m-block in its native layout, so a
 * wave is two units, and a 16-row tile (D2_WM 1) leaves the wave's second m-block zero).
 * D2_WMW x D2_WNW waves: wave w takes rows KP_WT_M (w % D2_WMW) .. + KP_WT_M - 1 and keys
 * (w / D2_WMW) * D2_BNW .. + D2_BNW - 1 of every tile, with its own online softmax in
 * registers (S = Q K^T and O += P V on the wave tile, P from the S accumulators, V by the
 * transposing load, Q fragments held in registers up to DQK 192; kp_attn_online.h's step;
 * the split, copies, masks and lse of kp_attn_decode2.h, which mla_decode_gen2.cl
 * shares); the code reads accumulators only through the tile's layout (kp_wt_el,
 * kp_wt_slot, kp_wt_row, kp_wt_col), as attention_prefill_gen2.cl does. The epilogue
 * merges the D2_WNW key groups exactly (their max, sum and O through local memory) and
 * writes out / lse,
 * or with nsplit > 1 the f32 partials part [nsplit, B * s_q * h_q, DV] and part_lse
 * (-inf: saw no key) that generation 1's kp_attention_combine (attention_decode.cl) merges.
 * Launch: D2_WM * D2_WN * 32 work-items; grid (m_tiles, h_kv, B * nsplit).
 * Dynamic local memory: KP_ATTN2_DECODE_LOCAL_BYTES (attention_gen2_layout.h).
 * Requirements the planner checks (else generation 1 runs): 16-bit dtype, no FP8 cache,
 * a whole number of waves (D2_WM * D2_WN even on 64-lane AMD),
 * no sliding window; q and cache offsets and strides multiples of 8 elements (16-byte
 * rows); out's multiples of 4 (8-byte rows: the epilogue stores 4 columns at once);
 * DQK, DV multiples of 16.
 * Options: KP_DTYPE_F16 / _BF16, D2_DQK, D2_DV, D2_WM, D2_WN, D2_BN, D2_STAGES.
 */
#include "kp_dialect.h"
#include "attention_kargs.h"
#include "attention_gen2_layout.h"
#include "kp_attn_decode2.h"
#include "kp_attn_online.h"

#if defined(KP_DTYPE_F16)
#define D2_MMA kp_wt_mma_f16
#define D2_IS_F16 1
#elif defined(KP_DTYPE_BF16)
#define D2_MMA kp_wt_mma_bf16
#define D2_IS_F16 0
#else
#error "attention_decode_gen2.cl takes 16-bit q and caches (f32 runs generation 1)"
#endif

#ifndef D2_DQK
#define D2_DQK 128
#endif
#ifndef D2_DV
#define D2_DV D2_DQK
#endif
#ifndef D2_WM
#define D2_WM 1
#endif
#ifndef D2_WN
#define D2_WN 4
#endif
#ifndef D2_BN
#define D2_BN 64
#endif
#ifndef D2_STAGES
#define D2_STAGES 2
#endif
#ifndef D2_MIN_BLOCKS /* work-groups an SM should hold: decode hides latency with more of them */
#define D2_MIN_BLOCKS 2
#endif
#ifndef D2_Q_REGS /* Q fragments in registers; above 192 they would crowd out O */
#define D2_Q_REGS (D2_DQK <= 192)
#endif
#define D2_BM (16 * D2_WM)
#define D2_NT (32 * D2_WM * D2_WN)
/* the waves: D2_WMW row groups of KP_WT_M rows (covering D2_BM, padded to whole waves)
 * x D2_WNW key groups of D2_BNW keys a tile */
#define D2_WAVES (D2_NT / KP_WT_LANES)
#define D2_WMW ((D2_BM + KP_WT_M - 1) / KP_WT_M)
#define D2_BMP (D2_WMW * KP_WT_M)
#define D2_WNW (D2_WAVES / D2_WMW)
#define D2_BNW (D2_BN / D2_WNW)
#if D2_NT % KP_WT_LANES || D2_WAVES % D2_WMW || D2_BN % D2_WNW
#error "attention_decode_gen2.cl: a whole number of waves (D2_WM * D2_WN even on AMD), split into row and key groups"
#endif
#if D2_DQK % 16 || D2_DV % 16 || D2_BNW % 16 || D2_STAGES < 2 || D2_STAGES > 4
#error "attention_decode_gen2.cl: DQK, DV, BN / WN multiples of 16; 2 <= D2_STAGES <= 4"
#endif
#if D2_NT < D2_BM
#error "attention_decode_gen2.cl: the epilogue takes a work-item a row"
#endif
/* the merge area [WNW][BMP] holds as much as the layout's [WN][BM] */
#if D2_WNW * D2_BMP != D2_WN * D2_BM
#error "attention_decode_gen2.cl: the waves' merge area differs from attention_gen2_layout.h's"
#endif

#define D2_LDK (D2_DQK + 8)
#define D2_LDV (D2_DV + 8)
#define D2_KF (D2_DQK / 16) /* k16 steps of Q K^T */
#define D2_SF (D2_BNW / 16) /* 16-key wave tiles of a wave's S */
#define D2_OF (D2_DV / 16)  /* 16-column wave tiles of O */
#define D2_STAGE_ELEMS (D2_BN * (D2_LDK + D2_LDV))
#define D2_ES ((int)sizeof(kp_storage_t))

/* unroll a constant-count loop that indexes register arrays (nvcc, hipcc; OpenCL: none) */
#if defined(KP_TARGET_CUDA) || defined(KP_TARGET_HIP)
#define D2_UNROLL _Pragma("unroll")
#else
#define D2_UNROLL
#endif

/* A Q fragment: the tile's rows from the wave's first (w0); a wave taller than the tile
 * (AMD, D2_WM 1) reads zeros past it */
#if D2_BMP > D2_BM
#define D2_LOAD_Q(a, src, w0) kp_wt_load_a_rows(a, src, D2_LDK, lane, D2_BM - (w0))
#else
#define D2_LOAD_Q(a, src, w0) kp_wt_load_a(a, src, D2_LDK, lane)
#endif

/* Issues the K and V rows of keys n0 .. n0 + D2_BN - 1 (zeros from kend on) into stage st,
 * each row's cache block from the table. */
KP_FN void d2_issue(KP_LOCAL_MEM kp_u16 *st, KP_GLOBAL const kp_storage_t *k, KP_GLOBAL const kp_storage_t *v,
                    KP_GLOBAL const int *trow, int n0, int kend, int hk, const kp_attn_decode_kargs *p) {
    kp_dec2_issue_rows((KP_LOCAL_MEM unsigned char *)st, D2_LDK * 2, (KP_GLOBAL const unsigned char *)k, D2_ES,
                       p->k_off + (kp_dec2_i64)hk * p->k_s2, p->k_s0, p->k_s1, trow, n0, kend, D2_BN, D2_DQK * 2, p,
                       D2_NT);
    kp_dec2_issue_rows((KP_LOCAL_MEM unsigned char *)(st + D2_BN * D2_LDK), D2_LDV * 2,
                       (KP_GLOBAL const unsigned char *)v, D2_ES, p->v_off + (kp_dec2_i64)hk * p->v_s2, p->v_s0,
                       p->v_s1, trow, n0, kend, D2_BN, D2_DV * 2, p, D2_NT);
}

KP_KERNEL void KP_LAUNCH_BOUNDS(D2_NT, D2_MIN_BLOCKS)
    kp_attention_decode_gen2(KP_GLOBAL const kp_storage_t *KP_RESTRICT q, KP_GLOBAL const kp_storage_t *KP_RESTRICT k,
                             KP_GLOBAL const kp_storage_t *KP_RESTRICT v, KP_GLOBAL kp_storage_t *KP_RESTRICT out,
                             KP_GLOBAL float *KP_RESTRICT lse, KP_GLOBAL float *KP_RESTRICT part,
                             KP_GLOBAL float *KP_RESTRICT part_lse, KP_GLOBAL const int *KP_RESTRICT table,
                             KP_GLOBAL const int *KP_RESTRICT seq_lens, kp_attn_decode_kargs p KP_DYNAMIC_LOCAL_ARG(smem)) {
    KP_DYNAMIC_LOCAL(smem);
    KP_LOCAL_MEM kp_u16 *qs = (KP_LOCAL_MEM kp_u16 *)smem;
    KP_LOCAL_MEM kp_u16 *stages = qs + D2_BM * D2_LDK;
    KP_LOCAL_MEM float *red = (KP_LOCAL_MEM float *)(stages + D2_STAGES * D2_STAGE_ELEMS);
    KP_LOCAL_MEM kp_u16 *pscr = (KP_LOCAL_MEM kp_u16 *)(red + 2 * D2_NT);
    /* the epilogue's merge area, over the stages once the loop is done */
    KP_LOCAL_MEM float *mstat = (KP_LOCAL_MEM float *)stages;  /* [WNW][BMP] row max, then weight */
    KP_LOCAL_MEM float *lstat = mstat + D2_WNW * D2_BMP;         /* [WNW][BMP] row sum */
    KP_LOCAL_MEM float *obuf = lstat + D2_WNW * D2_BMP;          /* [WNW][BMP][DV] unnormalized O */

    const int lid = kp_local_id(0), lane = kp_wt_lane(), wave = kp_wt_wave();
    const int w0 = (wave % D2_WMW) * KP_WT_M, wn = wave / D2_WMW; /* the wave's first row, key group */
    const int hk = kp_group_id(1), b = kp_group_id(2) / p.nsplit, sp = kp_group_id(2) % p.nsplit;
    const int partial = p.nsplit > 1;
    const kp_dec2_i64 nrows_all = (kp_dec2_i64)(kp_num_groups(2) / p.nsplit) * p.s_q * p.h_q;
    KP_LOCAL_MEM kp_u16 *my_pscr = pscr + wave * KP_WT_M * 16; /* 256 per 32 lanes */

    const kp_dec2_seq sq = kp_dec2_split(&p, seq_lens, b, sp, D2_BN);
    const int rows = p.s_q * p.group, kb = sq.kb;
    KP_GLOBAL const int *trow = table + p.bt_off + (kp_dec2_i64)b * p.bt_s0;

    for (int m0 = kp_group_id(0) * D2_BM; m0 < rows; m0 += kp_num_groups(0) * D2_BM) {
        /* the Q tile, padding rows as zeros: its own copy group, landed by tile 0's wait */
        kp_dec2_load_q(qs, D2_LDK, q, &p, b, hk, m0, rows, D2_BM, D2_DQK, D2_NT);
        kp_copy_commit();

        /* the last key each of this lane's row slots sees, and the keys of this split some
         * row of the tile sees */
        int rhi[KP_WT_ROWS], kend;
        const int ntiles = kp_dec2_wt_tile_keys(&p, &sq, m0, D2_BM, rows, w0, lane, D2_BN, rhi, &kend);

        for (int s = 0; s < D2_STAGES - 1; ++s) {
            if (s < ntiles) d2_issue(stages + s * D2_STAGE_ELEMS, k, v, trow, kb + s * D2_BN, kend, hk, &p);
            kp_copy_commit();
        }

        float mrow[KP_WT_ROWS], lrow[KP_WT_ROWS];
        for (int i = 0; i < KP_WT_ROWS; ++i) mrow[i] = -KP_INFINITY, lrow[i] = 0.0f;
        kp_wt_acc o[D2_OF];
        for (int f = 0; f < D2_OF; ++f) kp_wt_acc_zero(&o[f]);
#if D2_Q_REGS
        kp_wt_a qf[D2_KF];
#endif
        for (int t = 0; t < ntiles; ++t) {
            kp_copy_wait(D2_STAGES - 2);
            kp_barrier(); /* tile t (and Q) landed; every wave is done with tile t - 1's stage */
            const int nt = t + D2_STAGES - 1;
            if (nt < ntiles) d2_issue(stages + (nt % D2_STAGES) * D2_STAGE_ELEMS, k, v, trow, kb + nt * D2_BN, kend, hk, &p);
            kp_copy_commit();
            /* this wave's keys of the tile */
            KP_LOCAL_MEM const kp_u16 *kt = stages + (t % D2_STAGES) * D2_STAGE_ELEMS + wn * D2_BNW * D2_LDK;
            KP_LOCAL_MEM const kp_u16 *vt = stages + (t % D2_STAGES) * D2_STAGE_ELEMS + D2_BN * D2_LDK + wn * D2_BNW * D2_LDV;
            KP_LOCAL_MEM const kp_u16 *qt = qs + w0 * D2_LDK;
#if D2_Q_REGS
            if (t == 0)
                for (int i = 0; i < D2_KF; ++i) D2_LOAD_Q(&qf[i], qt + i * 16, w0);
#endif

            /* S = Q K^T */
            kp_wt_acc s[D2_SF];
            for (int j = 0; j < D2_SF; ++j) kp_wt_acc_zero(&s[j]);
            for (int i = 0; i < D2_KF; ++i) {
#if D2_Q_REGS
#define D2_QA qf[i]
#else
                kp_wt_a qa;
                D2_LOAD_Q(&qa, qt + i * 16, w0);
#define D2_QA qa
#endif
                for (int j = 0; j < D2_SF; ++j) {
                    kp_wt_b kf;
                    kp_wt_load_b(&kf, kt + j * 16 * D2_LDK + i * 16, D2_LDK, lane);
                    D2_MMA(&s[j], &D2_QA, &kf);
                }
#undef D2_QA
            }

            /* scale, mask (keys past a row's causal bound or the split's end), row max */
            float tmax[KP_WT_ROWS];
            kp_dec2_wt_scale_mask(s, D2_SF, p.scale_log2, kb + t * D2_BN + wn * D2_BNW, lane, kend, rhi, tmax, red, lid);

            /* online softmax and O += P V (kp_attn_online.h) */
            kp_attn_online_wt_pv(mrow, lrow, tmax, s, D2_SF, o, D2_OF, vt, D2_LDV, my_pscr, lane);
        }

        /* epilogue: each wave's row sums over the lanes sharing a row, then its (max, sum,
         * O) into the merge area over the stages (every copy landed, every wave done) */
        kp_wt_row_sum(lrow, red, lid);
        kp_copy_wait(0);
        kp_barrier();
        D2_UNROLL /* constant slots: the row state and O stay in registers */
        for (int i = 0; i < KP_WT_ROWS; ++i) {
            int r = w0 + kp_wt_row(lane, i);
            if (lane % KP_WT_ROW_LANES == 0) mstat[wn * D2_BMP + r] = mrow[i], lstat[wn * D2_BMP + r] = lrow[i];
            kp_wt_store_row_f32_l(o, D2_OF, i, 1.0f, obuf + (wn * D2_BMP + r) * D2_DV, lane);
        }
        kp_barrier();
        /* per row: M = max of the groups' maxima, L = sum_w 2^(m_w - M) l_w; each group's
         * weight 2^(m_w - M) / L replaces its max; the lse */
        if (lid < D2_BM) { /* a work-item a row (D2_NT >= 2 D2_BM) */
            const int r = lid;
            float mx = -KP_INFINITY, l = 0.0f;
            for (int w = 0; w < D2_WNW; ++w) mx = kp_fmaxf(mx, mstat[w * D2_BMP + r]);
            for (int w = 0; w < D2_WNW; ++w) {
                float e = mx == -KP_INFINITY ? 0.0f : kp_dec2_exp2(mstat[w * D2_BMP + r] - mx);
                mstat[w * D2_BMP + r] = e;
                l += e * lstat[w * D2_BMP + r];
            }
            float inv = l > 0.0f ? 1.0f / l : 0.0f;
            for (int w = 0; w < D2_WNW; ++w) mstat[w * D2_BMP + r] *= inv;
            int row = m0 + r, qi = row / p.group, hq = hk * p.group + row % p.group;
            kp_dec2_i64 rowid = ((kp_dec2_i64)b * p.s_q + qi) * p.h_q + hq;
            if (row < rows) kp_dec2_store_lse(&p, lse, part_lse, partial, sp * nrows_all + rowid, b, qi, hq, mx, l);
        }
        kp_barrier();
        /* the rows' weighted sums, 4 columns a work-item: 16-byte reads of the merge area,
         * a 16-byte store of partials or an 8-byte one of out (its rows 8-byte aligned: the
         * planner's rule) */
        for (int e = lid; e < D2_BM * (D2_DV / 4); e += D2_NT) {
            int r = e / (D2_DV / 4), col = e % (D2_DV / 4) * 4, row = m0 + r;
            if (row >= rows) continue;
            float4 acc;
            acc.x = acc.y = acc.z = acc.w = 0.0f;
            for (int w = 0; w < D2_WNW; ++w) {
                float wt = mstat[w * D2_BMP + r];
                float4 x = *(KP_LOCAL_MEM const float4 *)(obuf + (w * D2_BMP + r) * D2_DV + col);
                acc.x += wt * x.x, acc.y += wt * x.y, acc.z += wt * x.z, acc.w += wt * x.w;
            }
            int qi = row / p.group, hq = hk * p.group + row % p.group;
            kp_dec2_i64 rowid = ((kp_dec2_i64)b * p.s_q + qi) * p.h_q + hq;
            if (partial) {
                *(KP_GLOBAL float4 *)(part + (sp * nrows_all + rowid) * D2_DV + col) = acc;
            } else {
                uint2 h;
                h.x = kp_pack2_f32_(acc.x, acc.y, D2_IS_F16), h.y = kp_pack2_f32_(acc.z, acc.w, D2_IS_F16);
                *(KP_GLOBAL uint2 *)((KP_GLOBAL kp_u16 *)out + p.o_off + (kp_dec2_i64)b * p.o_s0 + (kp_dec2_i64)qi * p.o_s1 +
                                     (kp_dec2_i64)hq * p.o_s2 + col) = h;
            }
        }
        kp_barrier(); /* the next row tile reuses Q, the stages and the merge area */
    }
}
