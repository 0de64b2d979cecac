/*
 * kernels/attention/attention_decode.cl - paged-KV decode (kp_attention_decode) and,
 * with -DATTN_MLA, MLA decode (kp_mla_decode), split-KV (flash-decoding) style.
 *
 * kp_attention_decode_paged: q [B, s_q, h_q, DQK]; k cache [num_blocks, block_size,
 * h_kv, DQK] (-DATTN_KV_FP8: e4m3, with k_scale / v_scale [1] or [num_blocks] read per
 * key into key_ks / key_vs, kp_attn_tile.h); v cache [.., DV] (MLA: v is the k cache, V its first DV columns, read from
 * the same local tile: each latent block is read once per work-group for all h_q heads);
 * block_table int32 [B, max_blocks]; seq_lens int32 [B].
 * Launch: 1-D work-groups of ATTN_NT; grid (m_tiles * ATTN_NT, h_kv, B * nsplit).
 * Work-group (mt, hk, b * nsplit + sp) takes query tiles of the s_q * G packed rows of
 * (b, hk) against split sp of the keys: key tiles are dealt out in nsplit contiguous
 * runs. nsplit == 1: out / lse directly. nsplit > 1: f32 partials (O / l and lse, -inf
 * for a split that saw nothing) into part [nsplit, B * s_q * h_q, DV] and
 * part_lse [nsplit, B * s_q * h_q], which kp_attention_combine merges.
 * Causal: query i sees keys j <= seq_len - s_q + i; a window (wl >= 0) keys
 * j >= seq_len - s_q + i - wl. seq_len is clamped to the table's
 * capacity and block ids to [0, num_blocks): bad contents never address outside the cache.
 *
 * kp_attention_combine: one work-group of any size per (b, i, head) row:
 * out = sum_s e^(lse_s - M) O_s / sum_s e^(lse_s - M), lse = M + log sum_s e^(lse_s - M).
 */
#include "kp_attn_tile.h"
#include "attention_kargs.h"

#define ATTN_MAX_SPLITS 1024

KP_KERNEL void kp_attention_decode_paged(KP_GLOBAL const kp_storage_t *KP_RESTRICT q,
                                         KP_GLOBAL const attn_kv_t *KP_RESTRICT k,
                                         KP_GLOBAL const attn_kv_t *KP_RESTRICT v,
                                         KP_GLOBAL kp_storage_t *KP_RESTRICT out, KP_GLOBAL float *KP_RESTRICT lse,
                                         KP_GLOBAL float *KP_RESTRICT part, KP_GLOBAL float *KP_RESTRICT part_lse,
                                         KP_GLOBAL const int *KP_RESTRICT table,
                                         KP_GLOBAL const int *KP_RESTRICT seq_lens, kp_attn_decode_kargs p
#if defined(ATTN_KV_FP8)
                                         ,
                                         KP_GLOBAL const float *KP_RESTRICT k_scale,
                                         KP_GLOBAL const float *KP_RESTRICT v_scale, kp_attn_kv_fp8_kargs f
#endif
) {
    ATTN_DECLARE_LOCALS();
#if defined(ATTN_KV_FP8)
    KP_LOCAL(float, key_ks, ATTN_BN); /* each key's dequantization scales */
    KP_LOCAL(float, key_vs, ATTN_BN);
#endif
    int lid = kp_local_id(0), hk = kp_group_id(1);
    int b = kp_group_id(2) / p.nsplit, sp = kp_group_id(2) % p.nsplit, partial = p.nsplit > 1;
    int nbatch = kp_num_groups(2) / p.nsplit;
    kp_i64 nrows_all = (kp_i64)nbatch * p.s_q * p.h_q;

    int len_k = min(max(seq_lens[p.sl_off + b], 0), p.max_blocks * p.block_size);
    int rows = p.s_q * p.group, shift = len_k - p.s_q;
    int tiles = (len_k + ATTN_BN - 1) / ATTN_BN, per = (tiles + p.nsplit - 1) / p.nsplit;
    int kb = min(sp * per * ATTN_BN, len_k), ke = min((sp + 1) * per * ATTN_BN, len_k);
    KP_GLOBAL const int *trow = table + p.bt_off + b * p.bt_s0;

    for (int m0 = kp_group_id(0) * ATTN_BM; m0 < rows; m0 += kp_num_groups(0) * ATTN_BM) {
        for (int r = lid; r < ATTN_BM; r += ATTN_NT) {
            int row = m0 + r;
            if (row < rows) {
                int qi = row / p.group, hq = hk * p.group + row % p.group, lo, hi;
                kp_i64 rowid = ((kp_i64)b * p.s_q + qi) * p.h_q + hq;
                row_q[r] = p.q_off + b * p.q_s0 + qi * p.q_s1 + hq * p.q_s2;
                if (partial) {
                    row_o[r] = (sp * nrows_all + rowid) * ATTN_DV;
                    row_lse[r] = sp * nrows_all + rowid;
                } else {
                    row_o[r] = p.o_off + b * p.o_s0 + qi * p.o_s1 + hq * p.o_s2;
                    row_lse[r] = p.has_lse ? p.lse_off + ((kp_i64)b * p.h_q + hq) * p.s_q + qi : -1;
                }
                attn_key_range(qi + shift, len_k, p.causal, p.wl, -1, &lo, &hi);
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

        int lo_first, hi_first, lo_last, hi_last;
        attn_key_range(m0 / p.group + shift, len_k, p.causal, p.wl, -1, &lo_first, &hi_first);
        attn_key_range((min(m0 + ATTN_BM, rows) - 1) / p.group + shift, len_k, p.causal, p.wl, -1, &lo_last, &hi_last);
        int kbeg = max(lo_first, kb), kend = min(hi_last + 1, ke);

        for (int n0 = kbeg; n0 < kend; n0 += ATTN_BN) {
            int nvalid = min(ATTN_BN, kend - n0);
            for (int r = lid; r < ATTN_BN; r += ATTN_NT) {
                int j = n0 + r;
                if (r < nvalid) {
                    int blk = min(max(trow[j / p.block_size], 0), p.num_blocks - 1), slot = j % p.block_size;
                    key_k[r] = p.k_off + blk * p.k_s0 + slot * p.k_s1 + hk * p.k_s2;
                    key_v[r] = p.v_off + blk * p.v_s0 + slot * p.v_s1 + hk * p.v_s2;
#if defined(ATTN_KV_FP8)
                    key_ks[r] = k_scale[f.ks_off + (f.ks_per_block ? blk : 0)];
                    key_vs[r] = v_scale[f.vs_off + (f.vs_per_block ? blk : 0)];
#endif
                } else {
                    key_k[r] = key_v[r] = -1;
                }
            }
            kp_barrier();
            attn_tile(k, v, n0, nvalid, p.scale_log2, &acc, ATTN_LOCAL_ARGS ATTN_FP8_ARGS);
        }
        attn_end(out, part, partial ? part_lse : lse, partial, &acc, ATTN_LOCAL_ARGS);
    }
}

KP_KERNEL void kp_attention_combine(KP_GLOBAL const float *KP_RESTRICT part,
                                    KP_GLOBAL const float *KP_RESTRICT part_lse,
                                    KP_GLOBAL kp_storage_t *KP_RESTRICT out, KP_GLOBAL float *KP_RESTRICT lse,
                                    kp_attn_combine_kargs p) {
    KP_LOCAL(float, w, ATTN_MAX_SPLITS);
    KP_LOCAL(float, stat, 2);
    int lid = kp_local_id(0), nt = kp_local_size(0);
    kp_i64 rowid = kp_group_id(0), nrows_all = kp_num_groups(0);
    int hq = (int)(rowid % p.h_q), qi = (int)((rowid / p.h_q) % p.s_q), b = (int)(rowid / ((kp_i64)p.h_q * p.s_q));
    int ns = min(p.nsplit, ATTN_MAX_SPLITS);

    if (lid == 0) {
        float mx = -KP_INFINITY;
        for (int s = 0; s < ns; ++s) mx = kp_fmaxf(mx, part_lse[s * nrows_all + rowid]);
        float sum = 0.0f;
        for (int s = 0; s < ns; ++s) {
            float e = mx == -KP_INFINITY ? 0.0f : kp_expf(part_lse[s * nrows_all + rowid] - mx);
            w[s] = e;
            sum += e;
        }
        stat[0] = sum > 0.0f ? 1.0f / sum : 0.0f;
        stat[1] = sum > 0.0f ? mx + attn_log2(sum) * ATTN_LN2 : KP_INFINITY;
    }
    kp_barrier();
    float inv = stat[0];
    kp_i64 obase = p.o_off + (kp_i64)b * p.o_s0 + (kp_i64)qi * p.o_s1 + (kp_i64)hq * p.o_s2;
    for (int c = lid; c < p.dv; c += nt) {
        float acc = 0.0f;
        for (int s = 0; s < ns; ++s)
            if (w[s] > 0.0f) acc = kp_fmaf(w[s], part[(s * nrows_all + rowid) * p.dv + c], acc);
        kp_store(out, obase + c, acc * inv);
    }
    if (lid == 0 && p.has_lse) lse[p.lse_off + ((kp_i64)b * p.h_q + hq) * p.s_q + qi] = stat[1];
}
