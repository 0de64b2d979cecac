/*
 * kernels/attention/attention_prefill.cl - varlen flash-attention prefill
 * (kp_attention_prefill): q [total_q, h_q, DQK], k [total_k, h_kv, DQK],
 * v [total_k, h_kv, DV] -> out [total_q, h_q, DV], lse f32 [h_q, total_q].
 *
 * Launch: 1-D work-groups of ATTN_NT; grid (m_tiles * ATTN_NT, h_kv, B + 1).
 * Work-group (mt, hk, b) takes query tiles mt, mt + m_tiles, ... of sequence b's
 * len_q * G packed rows (G = h_q / h_kv; a grid-stride loop, so a max_seqlen_q that
 * understates the lengths costs time, never rows). b = B covers the rows past
 * cu_seqlens_q[B], which see no key (out 0, lse +inf). Causal and window masks are
 * bottom-right aligned (query i sees around i + len_k - len_q); key tiles that no row
 * of a query tile sees are skipped.
 * Paged K/V (p.paged): k, v are caches [num_blocks, block_size, h_kv, D] read through
 * table [B, max_blocks] with len_k = seq_lens_k[b] (cu_k unused), as decode reads them:
 * len_k is clamped to the table's capacity and block ids to [0, num_blocks), so bad
 * contents never address outside the caches.
 * Offsets and strides are in elements (attention_kargs.h: kp_attn_prefill_kargs).
 */
#include "kp_attn_tile.h"
#include "attention_kargs.h"
#include "kp_attn_seq.h"

KP_KERNEL void kp_attention_prefill(KP_GLOBAL const kp_storage_t *KP_RESTRICT q, KP_GLOBAL const kp_storage_t *KP_RESTRICT k,
                                    KP_GLOBAL const kp_storage_t *KP_RESTRICT v, KP_GLOBAL kp_storage_t *KP_RESTRICT out,
                                    KP_GLOBAL float *KP_RESTRICT lse, KP_GLOBAL const int *KP_RESTRICT cu_q,
                                    KP_GLOBAL const int *KP_RESTRICT cu_k, KP_GLOBAL const int *KP_RESTRICT table,
                                    KP_GLOBAL const int *KP_RESTRICT seq_lens_k, kp_attn_prefill_kargs p) {
    ATTN_DECLARE_LOCALS();
    int lid = kp_local_id(0), hk = kp_group_id(1), b = kp_group_id(2);

    const kp_attn_seq sq = kp_attn_seq_of(cu_q, cu_k, seq_lens_k, p, b);
    const int qs0 = sq.qs0, ks0 = sq.ks0;
    int len_q = sq.qe - qs0, len_k = sq.ke - ks0, shift = len_k - len_q, rows = len_q * p.group;

    for (int m0 = kp_group_id(0) * ATTN_BM; m0 < rows; m0 += kp_num_groups(0) * ATTN_BM) {
        for (int r = lid; r < ATTN_BM; r += ATTN_NT) {
            int row = m0 + r;
            if (row < rows) {
                int qi = row / p.group, hq = hk * p.group + row % p.group, tok = qs0 + qi, lo, hi;
                row_q[r] = p.q_off + tok * p.q_s0 + hq * p.q_s1;
                row_o[r] = p.o_off + tok * p.o_s0 + hq * p.o_s1;
                row_lse[r] = p.has_lse ? p.lse_off + (kp_i64)hq * p.total_q + tok : -1;
                attn_key_range(qi + shift, len_k, p.causal, p.wl, p.wr, &lo, &hi);
                row_lo[r] = lo;
                row_hi[r] = hi;
            } else {
                row_q[r] = row_o[r] = row_lse[r] = -1;
                row_lo[r] = 1;
                row_hi[r] = 0;
            }
        }
        kp_barrier();
        attn_acc acc;
        attn_begin(q, &acc, ATTN_LOCAL_ARGS);

        /* keys some row of this tile sees: lo and hi grow with the query position */
        int lo_first, hi_first, lo_last, hi_last;
        attn_key_range(m0 / p.group + shift, len_k, p.causal, p.wl, p.wr, &lo_first, &hi_first);
        attn_key_range((min(m0 + ATTN_BM, rows) - 1) / p.group + shift, len_k, p.causal, p.wl, p.wr, &lo_last, &hi_last);
        int kbeg = max(lo_first, 0), kend = min(hi_last + 1, len_k);

        for (int n0 = kbeg; n0 < kend; n0 += ATTN_BN) {
            int nvalid = min(ATTN_BN, kend - n0);
            for (int r = lid; r < ATTN_BN; r += ATTN_NT) {
                kp_i64 tok = ks0 + n0 + r, blk = 0;
                if (p.paged && r < nvalid) { /* row within the block, and the block */
                    int j = n0 + r;
                    blk = min(max(table[p.bt_off + (kp_i64)b * p.bt_s0 + j / p.block_size], 0), p.num_blocks - 1);
                    tok = j % p.block_size;
                }
                key_k[r] = r < nvalid ? p.k_off + blk * p.k_sb + tok * p.k_s0 + hk * p.k_s1 : -1;
                key_v[r] = r < nvalid ? p.v_off + blk * p.v_sb + tok * p.v_s0 + hk * p.v_s1 : -1;
            }
            kp_barrier();
            attn_tile(k, v, n0, nvalid, p.scale_log2, &acc, ATTN_LOCAL_ARGS);
        }
        attn_end(out, (KP_GLOBAL float *)0, lse, 0, &acc, ATTN_LOCAL_ARGS);
    }
}
