/*
 * kernels/attention/attention_prefill_gen2.cl - varlen flash-attention prefill,
 * generation 2 (FlashAttention-2's schedule); the contract is attention_prefill.cl's:
 * q [total_q, h_q, DQK], k [total_k, h_kv, DQK], v [total_k, h_kv, DV] -> out
 * [total_q, h_q, DV], lse f32 [h_q, total_q]; rows packed (query, head of the group),
 * causal and window masks bottom-right aligned, rows that see no key write 0 and lse +inf.
 *
 * A work-group of A2_BM / 16 units of 32 lanes (4 warps at 64 rows) owns A2_BM packed
 * query rows. It is written on the wave-level tile (common/kp_wave_tile.h): a wave of
 * KP_WT_LANES lanes owns KP_WT_M rows (32 lanes and 16 rows on NVIDIA and the portable
 * tile; 64 lanes and 32 rows, the native MFMA 16x16x16 layout, on AMD CDNA), and the
 * code below reads accumulators only through the tile's layout (kp_wt_el, kp_wt_slot,
 * kp_wt_row, kp_wt_col), so each target keeps its own register layout. The Q tile is
 * copied once (16-byte copies) and, up to A2_DQK 192, held in registers as A fragments
 * for the whole key loop. K and V tiles of A2_BN keys stream through an A2_STAGES-stage
 * pipeline of 16-byte async copies in dynamic local memory (common/kp_async_copy.h).
 * Per key tile and wave:
 *   S = Q K^T        16x16x16 wave-tile MMAs (NVIDIA: two mma.sync m16n8k16 each, K by
 *                    ldmatrix.x4) into accumulators that stay in registers;
 *   mask             only on tiles that cross a row's key range (the diagonal of a causal
 *                    mask, window edges, the last partial tile);
 *   online softmax   (kp_attn_online.h's wave-tile step, shared with the paged decode)
 *                    running max and sum per row in registers; the row max over the
 *                    lanes that share a row by shuffles (kp_wt_row_max: the quad on
 *                    NVIDIA, 16 lanes on AMD); the row sum stays per lane until the end
 *                    (FA2);
 *   O += P V         P rounded from the S accumulators into A fragments (in registers on
 *                    NVIDIA; through local memory where C's layout is not A's), V read
 *                    with a transposing fragment load (ldmatrix.x4.trans on NVIDIA).
 * Launch: grid (m_tiles * A2_NT, h_kv, B + 1), as generation 1 (grid-stride over row
 * tiles; z = B covers the rows past cu_seqlens_q[B]). Dynamic local memory:
 * KP_ATTN2_LOCAL_BYTES (attention_gen2_layout.h).
 * Requirements the planner checks (else generation 1 runs): 16-bit dtype; q, k, v
 * offsets and token/head strides multiples of 8 elements (16-byte rows); DQK, DV
 * multiples of 16.
 * Options: KP_DTYPE_F16 / _BF16, A2_DQK, A2_DV, A2_BM, A2_BN, A2_STAGES, A2_MIN_BLOCKS.
 */
#include "kp_dialect.h"
#include "attention_kargs.h"
#include "kp_attn_seq.h"
#include "attention_gen2_layout.h"
#include "common/kp_async_copy.h"
#include "common/kp_wave_tile.h"
#include "kp_attn_online.h"

#if defined(KP_DTYPE_F16)
#define A2_MMA kp_wt_mma_f16
#elif defined(KP_DTYPE_BF16)
#define A2_MMA kp_wt_mma_bf16
#else
#error "attention_prefill_gen2.cl takes 16-bit q, k, v (f32 runs generation 1)"
#endif

#ifndef A2_DQK
#define A2_DQK 128
#endif
#ifndef A2_DV
#define A2_DV A2_DQK
#endif
#ifndef A2_BM
#define A2_BM 64
#endif
#ifndef A2_BN
#define A2_BN 64
#endif
#ifndef A2_STAGES
#define A2_STAGES 2
#endif
#ifndef A2_MIN_BLOCKS
#define A2_MIN_BLOCKS 1
#endif
#ifndef A2_Q_REGS /* Q fragments in registers; above 192 they would crowd out O */
#define A2_Q_REGS (A2_DQK <= 192)
#endif
#if A2_DQK % 16 || A2_DV % 16 || A2_BM % 16 || A2_BN % 16 || A2_STAGES < 2 || A2_STAGES > 4
#error "attention_prefill_gen2.cl: DQK, DV, BM, BN multiples of 16; 2 <= A2_STAGES <= 4"
#endif
#if A2_BM % KP_WT_M
#error "attention_prefill_gen2.cl: A2_BM a multiple of the wave tile's rows (32 on AMD MFMA)"
#endif

#define A2_NT KP_ATTN2_THREADS(A2_BM)
#define A2_LDK (A2_DQK + 8)
#define A2_LDV (A2_DV + 8)
#define A2_KF (A2_DQK / 16) /* k16 steps of Q K^T */
#define A2_SF (A2_BN / 16)  /* 16-key wave tiles of S */
#define A2_OF (A2_DV / 16)  /* 16-column wave tiles of O */
#define A2_STAGE_ELEMS (A2_BN * (A2_LDK + A2_LDV))
#define A2_LN2 0.6931471805599453f

/* unroll a constant-count loop that indexes register arrays (nvcc, hipcc; OpenCL: none) */
#if defined(KP_TARGET_CUDA) || defined(KP_TARGET_HIP)
#define A2_UNROLL _Pragma("unroll")
#else
#define A2_UNROLL
#endif

#if defined(KP_TARGET_OPENCL)
typedef long a2_i64;
#define a2_log2(x) log2(x)
#define a2_exp2(x) exp2(x)
#else
typedef long long a2_i64;
#define a2_log2(x) log2f(x)
#define a2_exp2(x) exp2f(x)
#endif

/* Keys [lo, hi] query position a sees (bottom-right aligned; lo > hi: none). */
KP_FN void a2_key_range(int a, int len_k, int causal, int wl, int wr, int *lo, int *hi) {
    int l = 0, h = len_k - 1;
    if (causal && a < h) h = a;
    if (wr >= 0 && a + wr < h) h = a + wr;
    if (wl >= 0 && a - wl > l) l = a - wl;
    *lo = l, *hi = h;
}

/* Issues the K and V rows of keys n0 .. n0 + A2_BN - 1 (zeros from kend on) into stage st. */
KP_FN void a2_issue(KP_LOCAL_MEM kp_u16 *st, KP_GLOBAL const kp_storage_t *k, KP_GLOBAL const kp_storage_t *v,
                    int n0, int kend, int ks0, int hk, const kp_attn_prefill_kargs *p) {
    const int lid = kp_local_id(0);
    for (int c = lid; c < A2_BN * (A2_DQK / 8); c += A2_NT) {
        int r = c / (A2_DQK / 8), col = (c % (A2_DQK / 8)) * 8, valid = n0 + r < kend;
        a2_i64 off = valid ? p->k_off + (a2_i64)(ks0 + n0 + r) * p->k_s0 + (a2_i64)hk * p->k_s1 + col : 0;
        kp_copy16_async(st + r * A2_LDK + col, k + off, valid);
    }
    KP_LOCAL_MEM kp_u16 *vs = st + A2_BN * A2_LDK;
    for (int c = lid; c < A2_BN * (A2_DV / 8); c += A2_NT) {
        int r = c / (A2_DV / 8), col = (c % (A2_DV / 8)) * 8, valid = n0 + r < kend;
        a2_i64 off = valid ? p->v_off + (a2_i64)(ks0 + n0 + r) * p->v_s0 + (a2_i64)hk * p->v_s1 + col : 0;
        kp_copy16_async(vs + r * A2_LDV + col, v + off, valid);
    }
}

KP_KERNEL void KP_LAUNCH_BOUNDS(A2_NT, A2_MIN_BLOCKS)
    kp_attention_prefill_gen2(KP_GLOBAL const kp_storage_t *KP_RESTRICT q, KP_GLOBAL const kp_storage_t *KP_RESTRICT k,
                              KP_GLOBAL const kp_storage_t *KP_RESTRICT v, KP_GLOBAL kp_storage_t *KP_RESTRICT out,
                              KP_GLOBAL float *KP_RESTRICT lse, KP_GLOBAL const int *KP_RESTRICT cu_q,
                              KP_GLOBAL const int *KP_RESTRICT cu_k, kp_attn_prefill_kargs p KP_DYNAMIC_LOCAL_ARG(smem)) {
    KP_DYNAMIC_LOCAL(smem);
    KP_LOCAL_MEM kp_u16 *qs = (KP_LOCAL_MEM kp_u16 *)smem;
    KP_LOCAL_MEM kp_u16 *stages = qs + A2_BM * A2_LDK;
    KP_LOCAL_MEM float *red = (KP_LOCAL_MEM float *)(stages + A2_STAGES * A2_STAGE_ELEMS);
    KP_LOCAL_MEM kp_u16 *pscr = (KP_LOCAL_MEM kp_u16 *)(red + 2 * A2_NT);

    const int lid = kp_local_id(0), lane = kp_wt_lane(), wave = kp_wt_wave(), w0 = wave * KP_WT_M;
    const int hk = kp_group_id(1), b = kp_group_id(2);
    KP_LOCAL_MEM kp_u16 *my_pscr = pscr + w0 * 16; /* KP_WT_M x 16 a wave: 256 per 32 lanes */

    const kp_attn_seq sq = kp_attn_seq_of(cu_q, cu_k, 0, p, b);
    const int qs0 = sq.qs0, ks0 = sq.ks0;
    const int len_q = sq.qe - qs0, len_k = sq.ke - ks0, shift = len_k - len_q, rows = len_q * p.group;

    for (int m0 = kp_group_id(0) * A2_BM; m0 < rows; m0 += kp_num_groups(0) * A2_BM) {
        /* the Q tile, rows past the end as zeros: its own copy group, landed by tile 0's wait */
        for (int c = lid; c < A2_BM * (A2_DQK / 8); c += A2_NT) {
            int r = c / (A2_DQK / 8), col = (c % (A2_DQK / 8)) * 8, row = m0 + r, valid = row < rows;
            a2_i64 off = 0;
            if (valid) {
                int qi = row / p.group, hq = hk * p.group + row % p.group;
                off = p.q_off + (a2_i64)(qs0 + qi) * p.q_s0 + (a2_i64)hq * p.q_s1 + col;
            }
            kp_copy16_async(qs + r * A2_LDK + col, q + off, valid);
        }
        kp_copy_commit();

        /* this lane's rows (the wave tile's slots): key ranges; past the end: none */
        int rlo[KP_WT_ROWS], rhi[KP_WT_ROWS];
        for (int i = 0; i < KP_WT_ROWS; ++i) {
            int row = m0 + w0 + kp_wt_row(lane, i);
            rlo[i] = 1, rhi[i] = 0;
            if (row < rows) a2_key_range(row / p.group + shift, len_k, p.causal, p.wl, p.wr, &rlo[i], &rhi[i]);
        }
        /* keys some row of the tile sees (lo and hi grow with the row), and the keys all see */
        int lo_first, hi_first, lo_last, hi_last;
        a2_key_range(m0 / p.group + shift, len_k, p.causal, p.wl, p.wr, &lo_first, &hi_first);
        a2_key_range((min(m0 + A2_BM, rows) - 1) / p.group + shift, len_k, p.causal, p.wl, p.wr, &lo_last, &hi_last);
        const int kbeg = max(lo_first, 0), kend = min(hi_last + 1, len_k);
        const int ntiles = kend > kbeg ? (kend - kbeg + A2_BN - 1) / A2_BN : 0;

        for (int s = 0; s < A2_STAGES - 1; ++s) {
            if (s < ntiles) a2_issue(stages + s * A2_STAGE_ELEMS, k, v, kbeg + s * A2_BN, kend, ks0, hk, &p);
            kp_copy_commit();
        }

        float mrow[KP_WT_ROWS], lrow[KP_WT_ROWS];
        for (int i = 0; i < KP_WT_ROWS; ++i) mrow[i] = -KP_INFINITY, lrow[i] = 0.0f;
        kp_wt_acc o[A2_OF];
        for (int f = 0; f < A2_OF; ++f) kp_wt_acc_zero(&o[f]);
#if A2_Q_REGS
        kp_wt_a qf[A2_KF];
#endif
        for (int t = 0; t < ntiles; ++t) {
            kp_copy_wait(A2_STAGES - 2);
            kp_barrier(); /* tile t (and Q) landed; every group is done with tile t - 1's stage */
            const int nt = t + A2_STAGES - 1;
            if (nt < ntiles) a2_issue(stages + (nt % A2_STAGES) * A2_STAGE_ELEMS, k, v, kbeg + nt * A2_BN, kend, ks0, hk, &p);
            kp_copy_commit();
            KP_LOCAL_MEM const kp_u16 *kt = stages + (t % A2_STAGES) * A2_STAGE_ELEMS;
            KP_LOCAL_MEM const kp_u16 *vt = kt + A2_BN * A2_LDK;
#if A2_Q_REGS
            if (t == 0)
                for (int i = 0; i < A2_KF; ++i) kp_wt_load_a(&qf[i], qs + w0 * A2_LDK + i * 16, A2_LDK, lane);
#endif

            /* S = Q K^T */
            kp_wt_acc s[A2_SF];
            for (int j = 0; j < A2_SF; ++j) kp_wt_acc_zero(&s[j]);
            for (int i = 0; i < A2_KF; ++i) {
#if A2_Q_REGS
#define A2_QA qf[i]
#else
                kp_wt_a qa;
                kp_wt_load_a(&qa, qs + w0 * A2_LDK + i * 16, A2_LDK, lane);
#define A2_QA qa
#endif
                for (int j = 0; j < A2_SF; ++j) {
                    kp_wt_b kb;
                    kp_wt_load_b(&kb, kt + j * 16 * A2_LDK + i * 16, A2_LDK, lane);
                    A2_MMA(&s[j], &A2_QA, &kb);
                }
#undef A2_QA
            }

            /* scale, mask where the tile crosses a row's range, row max */
            const int n0 = kbeg + t * A2_BN;
            const int inside = n0 >= lo_last && n0 + A2_BN - 1 <= hi_first && n0 + A2_BN <= kend;
            float tmax[KP_WT_ROWS];
            for (int i = 0; i < KP_WT_ROWS; ++i) tmax[i] = -KP_INFINITY;
            for (int j = 0; j < A2_SF; ++j)
                for (int e = 0; e < KP_WT_ACC_N; ++e) {
                    int i = kp_wt_slot(e), key = n0 + j * 16 + kp_wt_col(lane, e);
                    float x = kp_wt_el(s[j], e) * p.scale_log2;
                    if (!inside && (key < rlo[i] || key > rhi[i])) x = -KP_INFINITY;
                    kp_wt_el(s[j], e) = x;
                    tmax[i] = kp_fmaxf(tmax[i], x);
                }
            kp_wt_row_max(tmax, red, lid);

            /* online softmax and O += P V */
            kp_attn_online_wt_pv(mrow, lrow, tmax, s, A2_SF, o, A2_OF, vt, A2_LDV, my_pscr, lane);
        }

        /* epilogue: the row sums over the lanes sharing a row, O / l, lse */
        kp_wt_row_sum(lrow, red, lid);
        A2_UNROLL /* constant slots: the row state stays in registers */
        for (int i = 0; i < KP_WT_ROWS; ++i) {
            int row = m0 + w0 + kp_wt_row(lane, i);
            if (row >= rows) continue;
            int qi = row / p.group, hq = hk * p.group + row % p.group, tok = qs0 + qi;
            float l = lrow[i], inv = l > 0.0f ? 1.0f / l : 0.0f;
            a2_i64 ob = p.o_off + (a2_i64)tok * p.o_s0 + (a2_i64)hq * p.o_s1;
            for (int f = 0; f < A2_OF; ++f)
                for (int e = 0; e < KP_WT_ACC_N; ++e)
                    if (kp_wt_slot(e) == i) kp_store(out, ob + f * 16 + kp_wt_col(lane, e), kp_wt_el(o[f], e) * inv);
            if (p.has_lse && lane % KP_WT_ROW_LANES == 0)
                lse[p.lse_off + (a2_i64)hq * p.total_q + tok] = l > 0.0f ? (mrow[i] + a2_log2(l)) * A2_LN2 : KP_INFINITY;
        }
        kp_copy_wait(0);
        kp_barrier(); /* the next row tile reuses Q and the stages */
    }
}
