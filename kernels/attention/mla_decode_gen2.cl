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
 * table read once per key row. Q (M2_BM x DQK) stays in local memory.
 *
 * 2 * M2_WM groups of 32 lanes: group w takes rows 16 (w % M2_WM) .. +15 and half
 * h = w / M2_WM. For each tile:
 *   S    the group computes Q K^T for its rows and the tile's keys h * BN/2 .. +BN/2 - 1
 *        (the two halves split the 576-deep product, nothing is computed twice);
 *   max  each half's row max through local memory (xmax), so both halves take the same
 *        new max m' = max(m, both tile maxima): the online softmax stays exact;
 *   P    exp2(S - m') rounded to the 16-bit dtype, each half its keys, into the tile's
 *        columns DV .. DQK - 1 (the rope part: read by S only, which both halves have
 *        finished at the max exchange), so P costs no local memory of its own: 16-row
 *        group w's P at rows 16 w % BN, columns DV + (16 w / BN) BN of the tile; each
 *        half keeps the row sum of its own keys;
 *   PV   O (16 x DV/2 f32: DV/16 accumulators) += P (all BN keys, from the tile) V, the
 *        group's DV/2 columns h * DV/2 .. of the same latent tile, V by the
 *        transposing fragment load.
 * The epilogue adds the two halves' row sums (xsum) and writes out / lse, or with
 * nsplit > 1 the f32 partials part [nsplit, B * s_q * h_q, DV] and part_lse (-inf: saw
 * no key) that generation 1's kp_attention_combine (attention_decode.cl) merges.
 * Launch: 64 * M2_WM work-items; grid (m_tiles, 1, B * nsplit).
 * Dynamic local memory: KP_MLA2_LOCAL_BYTES (attention_gen2_layout.h).
 * Requirements the planner checks (else generation 1 runs): 16-bit dtype, no FP8 cache;
 * q and cache offsets and strides multiples of 8 elements (16-byte rows).
 * Options: KP_DTYPE_F16 / _BF16, M2_DQK, M2_DV, M2_WM, M2_BN, M2_STAGES.
 */
#include "kp_dialect.h"
#include "attention_kargs.h"
#include "attention_gen2_layout.h"
#include "common/kp_async_copy.h"
#include "common/kp_fragment_ops.h"

#if defined(KP_DTYPE_F16)
#define M2_MMA kp_mma_16x8x16_f16
#define M2_IS_F16 1
#elif defined(KP_DTYPE_BF16)
#define M2_MMA kp_mma_16x8x16_bf16
#define M2_IS_F16 0
#else
#error "mla_decode_gen2.cl takes 16-bit q and caches (f32 runs generation 1)"
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
#define M2_DVH (M2_DV / 2)  /* O columns of a group */
#define M2_BNH (M2_BN / 2)  /* S keys of a group */
#if M2_DQK % 16 || M2_DVH % 16 || M2_BNH % 16 || M2_STAGES < 2 || M2_STAGES > 4
#error "mla_decode_gen2.cl: DQK, DV / 2, BN / 2 multiples of 16; 2 <= M2_STAGES <= 4"
#endif
#if M2_DV + (M2_BM > M2_BN ? M2_BM : M2_BN) > M2_DQK || (M2_BM > M2_BN && M2_BM % M2_BN)
#error "mla_decode_gen2.cl: P (BM x BN) must fit in the tile's columns DV .. DQK - 1"
#endif

#define M2_LDK (M2_DQK + 8)
#define M2_KF (M2_DQK / 16) /* k16 steps of Q K^T */
#define M2_SF (M2_BNH / 8)  /* n8 fragments of a group's S */
#define M2_OF (M2_DVH / 8)  /* n8 fragments of a group's O */
#define M2_STAGE_ELEMS (M2_BN * M2_LDK)
#define M2_LN2 0.6931471805599453f
/* a loop over the O accumulators nvcc would not unroll on its own (they would go to the
 * stack); every target's compiler takes the pragma */
#define M2_UNROLL _Pragma("unroll")

#if defined(KP_TARGET_OPENCL)
typedef long m2_i64;
#define m2_exp2(x) exp2(x)
#define m2_log2(x) log2(x)
#else
typedef long long m2_i64;
#define m2_exp2(x) exp2f(x)
#define m2_log2(x) log2f(x)
#endif

/* Issues latent rows n0 .. n0 + M2_BN - 1 (zeros from kend on) into stage st, each row's
 * cache block from the table. */
KP_FN void m2_issue(KP_LOCAL_MEM kp_u16 *st, KP_GLOBAL const kp_storage_t *kv, KP_GLOBAL const int *trow, int n0,
                    int kend, const kp_attn_decode_kargs *p) {
    const int lid = kp_local_id(0);
    for (int c = lid; c < M2_BN * (M2_DQK / 8); c += M2_NT) {
        int r = c / (M2_DQK / 8), col = (c % (M2_DQK / 8)) * 8, j = n0 + r, valid = j < kend;
        m2_i64 off = 0;
        if (valid) {
            int blk = min(max(trow[j / p->block_size], 0), p->num_blocks - 1);
            off = p->k_off + (m2_i64)blk * p->k_s0 + (m2_i64)(j % p->block_size) * p->k_s1 + col;
        }
        kp_copy16_async(st + r * M2_LDK + col, kv + off, valid);
    }
}

KP_KERNEL void KP_LAUNCH_BOUNDS(M2_NT, 1)
    kp_mla_decode_gen2(KP_GLOBAL const kp_storage_t *KP_RESTRICT q, KP_GLOBAL const kp_storage_t *KP_RESTRICT kv,
                       KP_GLOBAL const kp_storage_t *KP_RESTRICT v_unused, KP_GLOBAL kp_storage_t *KP_RESTRICT out,
                       KP_GLOBAL float *KP_RESTRICT lse, KP_GLOBAL float *KP_RESTRICT part,
                       KP_GLOBAL float *KP_RESTRICT part_lse, KP_GLOBAL const int *KP_RESTRICT table,
                       KP_GLOBAL const int *KP_RESTRICT seq_lens, kp_attn_decode_kargs p KP_DYNAMIC_LOCAL_ARG(smem)) {
    KP_DYNAMIC_LOCAL(smem);
    KP_LOCAL_MEM kp_u16 *qs = (KP_LOCAL_MEM kp_u16 *)smem;
    KP_LOCAL_MEM kp_u16 *stages = qs + M2_BM * M2_LDK;
    KP_LOCAL_MEM float *red = (KP_LOCAL_MEM float *)(stages + M2_STAGES * M2_STAGE_ELEMS);
    KP_LOCAL_MEM float *xmax = red + 2 * M2_NT; /* [2][BM] each half's tile row max */
    KP_LOCAL_MEM float *xsum = xmax + 2 * M2_BM; /* [2][BM] each half's row sum */
    (void)v_unused;

    const int lid = kp_local_id(0), lane = kp_mma_lane(), grp = lid / KP_MMA_LANES;
    const int wm = grp % M2_WM, wh = grp / M2_WM, g = lane / 4, t4 = lane % 4;
    const int b = kp_group_id(2) / p.nsplit, sp = kp_group_id(2) % p.nsplit;
    const int partial = p.nsplit > 1;
    const m2_i64 nrows_all = (m2_i64)(kp_num_groups(2) / p.nsplit) * p.s_q * p.h_q;

    const int len_k = min(max(seq_lens[p.sl_off + b], 0), p.max_blocks * p.block_size);
    const int rows = p.s_q * p.h_q, shift = len_k - p.s_q;
    const int tiles_all = (len_k + M2_BN - 1) / M2_BN, per = (tiles_all + p.nsplit - 1) / p.nsplit;
    const int kb = min(sp * per * M2_BN, len_k), ke = min((sp + 1) * per * M2_BN, len_k);
    KP_GLOBAL const int *trow = table + p.bt_off + (m2_i64)b * p.bt_s0;

    for (int m0 = kp_group_id(0) * M2_BM; m0 < rows; m0 += kp_num_groups(0) * M2_BM) {
        /* the Q tile, padding rows as zeros: its own copy group, landed by tile 0's wait */
        for (int c = lid; c < M2_BM * (M2_DQK / 8); c += M2_NT) {
            int r = c / (M2_DQK / 8), col = (c % (M2_DQK / 8)) * 8, row = m0 + r, valid = row < rows;
            m2_i64 off = 0;
            if (valid)
                off = p.q_off + (m2_i64)b * p.q_s0 + (m2_i64)(row / p.h_q) * p.q_s1 + (m2_i64)(row % p.h_q) * p.q_s2 + col;
            kp_copy16_async(qs + r * M2_LDK + col, q + off, valid);
        }
        kp_copy_commit();

        /* the last key this lane's two rows (g, g + 8 of its row group) see; -1: none */
        int rhi[2];
        for (int i = 0; i < 2; ++i) {
            int row = m0 + wm * 16 + g + 8 * i;
            rhi[i] = row < rows ? (p.causal ? min(row / p.h_q + shift, len_k - 1) : len_k - 1) : -1;
        }
        /* the keys of this split some row of the tile sees (the last row sees the most) */
        const int last = min(m0 + M2_BM, rows) - 1;
        const int kend = min(p.causal ? last / p.h_q + shift + 1 : len_k, ke);
        const int ntiles = kend > kb ? (kend - kb + M2_BN - 1) / M2_BN : 0;

        for (int s = 0; s < M2_STAGES - 1; ++s) {
            if (s < ntiles) m2_issue(stages + s * M2_STAGE_ELEMS, kv, trow, kb + s * M2_BN, kend, &p);
            kp_copy_commit();
        }

        float mrow[2] = {-KP_INFINITY, -KP_INFINITY}, lrow[2] = {0.0f, 0.0f};
        kp_mma_acc o[M2_OF];
        for (int f = 0; f < M2_OF; ++f) kp_mma_acc_zero(&o[f]);
        KP_LOCAL_MEM const kp_u16 *qt = qs + wm * 16 * M2_LDK;
        const int poff = (wm * 16) % M2_BN * M2_LDK + M2_DV + (wm * 16) / M2_BN * M2_BN; /* this row group's P */
        for (int t = 0; t < ntiles; ++t) {
            kp_copy_wait(M2_STAGES - 2);
            kp_barrier(); /* tile t (and Q) landed; every group is done with tile t - 1's stage and P */
            const int nt = t + M2_STAGES - 1;
            if (nt < ntiles) m2_issue(stages + (nt % M2_STAGES) * M2_STAGE_ELEMS, kv, trow, kb + nt * M2_BN, kend, &p);
            kp_copy_commit();
            KP_LOCAL_MEM kp_u16 *tile = stages + (t % M2_STAGES) * M2_STAGE_ELEMS;
            KP_LOCAL_MEM kp_u16 *prow = tile + poff;
            KP_LOCAL_MEM const kp_u16 *kt = tile + wh * M2_BNH * M2_LDK; /* this half's keys */

            /* S = Q K^T for this half's keys */
            kp_mma_acc s[M2_SF];
            for (int j = 0; j < M2_SF; ++j) kp_mma_acc_zero(&s[j]);
            for (int i = 0; i < M2_KF; ++i) {
                kp_mma_a qa;
                kp_mma_load_a(&qa, qt + i * 16, M2_LDK, lane);
                for (int j = 0; j < M2_SF; j += 2) {
                    kp_mma_b kb0, kb1;
                    kp_mma_load_b_pair(&kb0, &kb1, kt + j * 8 * M2_LDK + i * 16, M2_LDK, lane);
                    M2_MMA(&s[j], &qa, &kb0);
                    M2_MMA(&s[j + 1], &qa, &kb1);
                }
            }

            /* scale, mask (keys past a row's causal bound or the split's end), row max */
            const int n0 = kb + t * M2_BN + wh * M2_BNH;
            float tmax[2] = {-KP_INFINITY, -KP_INFINITY};
            for (int j = 0; j < M2_SF; ++j)
                for (int e = 0; e < 4; ++e) {
                    int i = e / 2, key = n0 + j * 8 + 2 * t4 + (e & 1);
                    float x = s[j].x[e] * p.scale_log2;
                    if (key >= kend || key > rhi[i]) x = -KP_INFINITY;
                    s[j].x[e] = x;
                    tmax[i] = kp_fmaxf(tmax[i], x);
                }
            kp_quad_max2_f32(&tmax[0], &tmax[1], red, lid);
            /* the two halves' maxima: both take the same m' */
            if (t4 == 0)
                xmax[wh * M2_BM + wm * 16 + g] = tmax[0], xmax[wh * M2_BM + wm * 16 + g + 8] = tmax[1];
            kp_barrier(); /* ... and both halves' S done: P may overwrite the rope columns */
            tmax[0] = kp_fmaxf(tmax[0], xmax[(1 - wh) * M2_BM + wm * 16 + g]);
            tmax[1] = kp_fmaxf(tmax[1], xmax[(1 - wh) * M2_BM + wm * 16 + g + 8]);

            /* online softmax: P = exp2(S - m'), l and O rescaled by exp2(m - m') */
            float base[2], alpha[2];
            for (int i = 0; i < 2; ++i) {
                float mnew = kp_fmaxf(mrow[i], tmax[i]);
                base[i] = mnew == -KP_INFINITY ? 0.0f : mnew; /* a row with no key yet: P = 0 */
                alpha[i] = m2_exp2(mrow[i] - base[i]);
                mrow[i] = mnew;
                lrow[i] *= alpha[i];
            }
            for (int j = 0; j < M2_SF; ++j) {
                float pv[4];
                for (int e = 0; e < 4; ++e) {
                    pv[e] = m2_exp2(s[j].x[e] - base[e / 2]);
                    lrow[e / 2] += pv[e];
                }
                KP_LOCAL_MEM kp_u32 *w = (KP_LOCAL_MEM kp_u32 *)(prow + g * M2_LDK + wh * M2_BNH + j * 8 + 2 * t4);
                w[0] = kp_pack2_f32_(pv[0], pv[1], M2_IS_F16);
                w[4 * M2_LDK] = kp_pack2_f32_(pv[2], pv[3], M2_IS_F16); /* row g + 8: 8 * LDK / 2 words on */
            }
            for (int f = 0; f < M2_OF; ++f)
                o[f].x[0] *= alpha[0], o[f].x[1] *= alpha[0], o[f].x[2] *= alpha[1], o[f].x[3] *= alpha[1];
            kp_barrier(); /* P of both halves written */

            /* O += P V over all the tile's keys, this half's columns of the same tile */
            KP_LOCAL_MEM const kp_u16 *vt = tile + wh * M2_DVH;
            for (int kk = 0; kk < M2_BN / 16; ++kk) {
                kp_mma_a pa;
                kp_mma_load_a(&pa, prow + kk * 16, M2_LDK, lane);
                for (int f = 0; f < M2_OF; f += 2) {
                    kp_mma_b vb0, vb1;
                    kp_mma_load_b_trans_pair(&vb0, &vb1, vt + kk * 16 * M2_LDK + f * 8, M2_LDK, lane);
                    M2_MMA(&o[f], &pa, &vb0);
                    M2_MMA(&o[f + 1], &pa, &vb1);
                }
            }
        }

        /* epilogue: each half's row sum over the quad, the two halves added */
        kp_quad_sum2_f32(&lrow[0], &lrow[1], red, lid);
        if (t4 == 0) xsum[wh * M2_BM + wm * 16 + g] = lrow[0], xsum[wh * M2_BM + wm * 16 + g + 8] = lrow[1];
        kp_copy_wait(0);
        kp_barrier();
        float inv[2];
        m2_i64 dst[2]; /* this lane's first element of its two rows in out or part; -1: padding */
        for (int i = 0; i < 2; ++i) {
            int r = wm * 16 + g + 8 * i, row = m0 + r, qi = row / p.h_q, hq = row % p.h_q;
            float l = xsum[r] + xsum[M2_BM + r];
            inv[i] = l > 0.0f ? 1.0f / l : 0.0f;
            m2_i64 rowid = ((m2_i64)b * p.s_q + qi) * p.h_q + hq;
            dst[i] = row >= rows ? -1
                     : partial ? (sp * nrows_all + rowid) * M2_DV + wh * M2_DVH + 2 * t4
                               : p.o_off + (m2_i64)b * p.o_s0 + (m2_i64)qi * p.o_s1 + (m2_i64)hq * p.o_s2 +
                                     wh * M2_DVH + 2 * t4;
            if (row < rows && wh == 0 && t4 == 0) {
                float row_lse = l > 0.0f ? (mrow[i] + m2_log2(l)) * M2_LN2 : (partial ? -KP_INFINITY : KP_INFINITY);
                if (partial) part_lse[sp * nrows_all + rowid] = row_lse;
                else if (p.has_lse) lse[p.lse_off + ((m2_i64)b * p.h_q + hq) * p.s_q + qi] = row_lse;
            }
        }
        /* f outermost with constant accumulator indices: O stays in registers */
        M2_UNROLL for (int f = 0; f < M2_OF; ++f)
            for (int i = 0; i < 2; ++i) {
                float v0 = o[f].x[2 * i] * inv[i], v1 = o[f].x[2 * i + 1] * inv[i];
                if (dst[i] >= 0 && partial) part[dst[i] + f * 8] = v0, part[dst[i] + f * 8 + 1] = v1;
                else if (dst[i] >= 0) kp_store(out, dst[i] + f * 8, v0), kp_store(out, dst[i] + f * 8 + 1, v1);
            }
        kp_barrier(); /* the next row tile reuses Q, the stages and the sums */
    }
}
