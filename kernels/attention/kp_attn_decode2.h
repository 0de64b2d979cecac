/*
 * kernels/attention/kp_attn_decode2.h - what the generation-2 paged decode kernels
 * (attention_decode_gen2.cl, mla_decode_gen2.cl) share: the key range of a split, the Q
 * tile and the paged K/V rows as 16-byte async copies (common/kp_async_copy.h), each
 * lane's visible keys, S scaled and masked with its row max, and the lse of a row.
 * Their contract is kp_attn_decode_kargs' (attention_kargs.h): q [B, s_q, h_q, dqk],
 * caches [num_blocks, block_size, h_kv, d], block_table [B, max_blocks], seq_lens [B];
 * the s_q * group packed rows of (b, hk): row r is query r / group, head
 * hk * group + r % group (MLA: one latent head, group = h_q). Causal: query i sees keys
 * j <= len_k - s_q + i. seq_len is clamped to the table's capacity and block ids to
 * [0, num_blocks): bad contents never address outside the cache.
 *
 * One work-group's walk over its row tiles and key tiles (the kernels keep it, since the
 * tile's issue and compute differ):
 *
 *     kp_dec2_seq sq = kp_dec2_split(&p, seq_lens, b, sp, BN);
 *     for each row tile m0:
 *         kp_dec2_load_q(...); kp_copy_commit();          Q: its own copy group
 *         ntiles = kp_dec2_wt_tile_keys(&p, &sq, m0, BM, rows, w0, lane, BN, rhi, &kend);
 *         prologue: STAGES - 1 tiles issued (kp_dec2_issue_rows), one commit each
 *         for t < ntiles: wait, barrier, issue tile t + STAGES - 1, commit,
 *             S = Q K^T; kp_dec2_wt_scale_mask(...); softmax, P V
 *         epilogue: rows' sums merged; kp_dec2_store_lse per row; out or partials
 */
#ifndef KP_ATTN_DECODE2_H
#define KP_ATTN_DECODE2_H

#include "kp_dialect.h"
#include "attention_kargs.h"
#include "common/kp_async_copy.h"
#include "common/kp_wave_tile.h"

#if defined(KP_TARGET_OPENCL)
typedef long kp_dec2_i64;
#define kp_dec2_exp2(x) exp2(x)
#define kp_dec2_log2(x) log2(x)
#else
typedef long long kp_dec2_i64;
#define kp_dec2_exp2(x) exp2f(x)
#define kp_dec2_log2(x) log2f(x)
#endif
#define KP_DEC2_LN2 0.6931471805599453f

/* The keys of sequence b: len_k (clamped), shift = len_k - s_q, and split sp's run of
 * whole bn-key tiles [kb, ke) (nsplit contiguous runs). */
typedef struct kp_dec2_seq {
    int len_k, shift, kb, ke;
} kp_dec2_seq;

KP_FN kp_dec2_seq kp_dec2_split(const kp_attn_decode_kargs *p, KP_GLOBAL const int *seq_lens, int b, int sp, int bn) {
    kp_dec2_seq s;
    s.len_k = min(max(seq_lens[p->sl_off + b], 0), p->max_blocks * p->block_size);
    s.shift = s.len_k - p->s_q;
    int tiles_all = (s.len_k + bn - 1) / bn, per = (tiles_all + p->nsplit - 1) / p->nsplit;
    s.kb = min(sp * per * bn, s.len_k), s.ke = min((sp + 1) * per * bn, s.len_k);
    return s;
}

/* The Q tile: packed rows m0 .. m0 + bm - 1 of (b, hk), dqk 16-bit columns each, into
 * qs with a row stride of ldq elements; rows from `rows` on as zeros. nt work-items. */
KP_FN void kp_dec2_load_q(KP_LOCAL_MEM kp_u16 *qs, int ldq, KP_GLOBAL const kp_storage_t *q,
                          const kp_attn_decode_kargs *p, int b, int hk, int m0, int rows, int bm, int dqk, int nt) {
    for (int c = kp_local_id(0); c < bm * (dqk / 8); c += nt) {
        int r = c / (dqk / 8), col = (c % (dqk / 8)) * 8, row = m0 + r, valid = row < rows;
        kp_dec2_i64 off = 0;
        if (valid) {
            int qi = row / p->group, hq = hk * p->group + row % p->group;
            off = p->q_off + (kp_dec2_i64)b * p->q_s0 + (kp_dec2_i64)qi * p->q_s1 + (kp_dec2_i64)hq * p->q_s2 + col;
        }
        kp_copy16_async(qs + r * ldq + col, q + off, valid);
    }
}

/* Issues the rows of keys n0 .. n0 + bn - 1 of one paged cache (zeros from kend on),
 * row_bytes of each (a multiple of 16), into dst + r * ld bytes. The cache's elements
 * are esize bytes; off (the head's first element), s0 (between blocks) and s1 (between
 * a block's rows) count elements. Each row's block comes from the table row trow. */
KP_FN void kp_dec2_issue_rows(KP_LOCAL_MEM unsigned char *dst, int ld, KP_GLOBAL const unsigned char *cache,
                              int esize, kp_dec2_i64 off, kp_dec2_i64 s0, kp_dec2_i64 s1,
                              KP_GLOBAL const int *trow, int n0, int kend, int bn, int row_bytes,
                              const kp_attn_decode_kargs *p, int nt) {
    for (int c = kp_local_id(0); c < bn * (row_bytes / 16); c += nt) {
        int r = c / (row_bytes / 16), col = (c % (row_bytes / 16)) * 16, j = n0 + r, valid = j < kend;
        kp_dec2_i64 src = 0;
        if (valid) {
            int blk = min(max(trow[j / p->block_size], 0), p->num_blocks - 1);
            src = (off + (kp_dec2_i64)blk * s0 + (kp_dec2_i64)(j % p->block_size) * s1) * esize + col;
        }
        kp_copy16_async(dst + r * ld + col, cache + src, valid);
    }
}

/* On the wave-level tile (common/kp_wave_tile.h), for this lane's KP_WT_ROWS row slots
 * whatever the target's layout. kp_dec2_wt_tile_keys: row tile m0 (bm rows of `rows`),
 * the wave's rows from w0 of the tile; rhi[KP_WT_ROWS], the last key each slot's row
 * sees (-1: padding, a row past `rows` or past the tile's bm - an AMD wave holds 32 rows
 * of a 16-row tile); *kend, the end of the keys of this split some row of the tile sees
 * (the last row sees the most). Returns the number of bn-key tiles. */
KP_FN int kp_dec2_wt_tile_keys(const kp_attn_decode_kargs *p, const kp_dec2_seq *s, int m0, int bm, int rows, int w0,
                               int lane, int bn, int *rhi, int *kend) {
    for (int i = 0; i < KP_WT_ROWS; ++i) {
        int r = w0 + kp_wt_row(lane, i), row = m0 + r;
        rhi[i] = r < bm && row < rows ? (p->causal ? min(row / p->group + s->shift, s->len_k - 1) : s->len_k - 1) : -1;
    }
    const int last = min(m0 + bm, rows) - 1;
    *kend = min(p->causal ? last / p->group + s->shift + 1 : s->len_k, s->ke);
    return *kend > s->kb ? (*kend - s->kb + bn - 1) / bn : 0;
}

/* kp_dec2_wt_scale_mask: S of nsw 16-key wave tiles from key n0 to the log2 domain, keys
 * past a slot's bound (rhi) or the split's end (kend) to -inf; tmax[KP_WT_ROWS], the
 * row max over the lanes sharing each row (red: 2 floats a work-item, lid the
 * work-item). */
KP_FN void kp_dec2_wt_scale_mask(kp_wt_acc *s, int nsw, float scale_log2, int n0, int lane, int kend, const int *rhi,
                                 float *tmax, KP_LOCAL_MEM float *red, int lid) {
    for (int i = 0; i < KP_WT_ROWS; ++i) tmax[i] = -KP_INFINITY;
    for (int j = 0; j < nsw; ++j)
        for (int e = 0; e < KP_WT_ACC_N; ++e) {
            int i = kp_wt_slot(e), key = n0 + j * 16 + kp_wt_col(lane, e);
            float x = kp_wt_el(s[j], e) * scale_log2;
            if (key > rhi[i] || key >= kend) x = -KP_INFINITY;
            kp_wt_el(s[j], e) = x;
            tmax[i] = kp_fmaxf(tmax[i], x);
        }
    kp_wt_row_max(tmax, red, lid);
}

/* The lse of row (b, query qi, head hq) from its max m (log2 domain) and sum l: into lse
 * [B, h_q, s_q] (if asked for), or with partial into part_lse at prow; a row that saw no
 * key: +inf, or -inf in a partial (the combine then weighs it 0). */
KP_FN void kp_dec2_store_lse(const kp_attn_decode_kargs *p, KP_GLOBAL float *lse, KP_GLOBAL float *part_lse,
                             int partial, kp_dec2_i64 prow, int b, int qi, int hq, float m, float l) {
    float row_lse = l > 0.0f ? (m + kp_dec2_log2(l)) * KP_DEC2_LN2 : (partial ? -KP_INFINITY : KP_INFINITY);
    if (partial) part_lse[prow] = row_lse;
    else if (p->has_lse) lse[p->lse_off + ((kp_dec2_i64)b * p->h_q + hq) * p->s_q + qi] = row_lse;
}

#endif /* KP_ATTN_DECODE2_H */
