/*
 * kernels/moe/moe_align.cl - kp_moe_align on the device: a stable counting sort of the
 * T*k (token, slot) pairs by expert, rows of each expert padded to block_size, no host
 * round trip, correct for any pair count the int32 range allows. Three kernels:
 *
 *   hist     one work-group per chunk of C pairs (C >= E; the last chunk takes the
 *            remainder): per-expert counts in local memory -> hist[c][e]. hist lives in
 *            sorted_ids (nchunks * E <= P entries), which is written for real only later.
 *            Not run for a single chunk: scan then counts the ids itself.
 *   scan     one work-group: for each expert, counts of the chunks before c -> pre[c][e],
 *            stored in token_pos[c*C + e] (inside chunk c's own pairs, which only chunk c
 *            rewrites, after reading it); padded counts -> expert_offsets by a
 *            work-group scan; then every padding row of sorted_ids (after each expert's
 *            pairs, and past expert_offsets[E]) set to P = T*k.
 *   scatter  one work-group per chunk, pairs in order, WG at a time: a pair's row is its
 *            expert's running counter plus the number of same-expert pairs before it in
 *            the step (stable: rows follow the flat index t*k + slot).
 *
 * An id outside [0, E) is skipped: it gets no row and token_pos -1 (combine adds
 * nothing for it). Checking ids is the CPU backend's and the caller's job.
 * Options: KP_ALIGN_WG (default 256; the launch's local size), KP_ALIGN_MAX_E (E <= it).
 */
#include "kp_dialect.h"
#include "moe_common.h"
#include "moe_kargs.h"

#ifndef KP_ALIGN_WG
#define KP_ALIGN_WG 256
#endif
#ifndef KP_ALIGN_MAX_E
#define KP_ALIGN_MAX_E 4096 /* the core's limit; the host builds 512 for smaller E */
#endif

KP_FN int kpa_chunk_end(int c, int nchunks, int chunk, int pairs) {
    return c == nchunks - 1 ? pairs : (c + 1) * chunk;
}

/* hist is sorted_ids (see above); the three kernels take the same arguments */
KP_KERNEL void kp_moe_align_hist(KP_GLOBAL const int *KP_RESTRICT ids, KP_GLOBAL int *KP_RESTRICT hist,
                                 KP_GLOBAL int *KP_RESTRICT pos, KP_GLOBAL int *KP_RESTRICT offsets,
                                 kp_moe_align_kargs p) {
    KP_LOCAL(int, cnt, KP_ALIGN_MAX_E);
    const int c = kp_group_id(0), lid = kp_local_id(0), wg = kp_local_size(0);
    for (int e = lid; e < p.n_exp; e += wg) cnt[e] = 0;
    kp_barrier();
    const int end = kpa_chunk_end(c, p.nchunks, p.chunk, p.pairs);
    for (int i = c * p.chunk + lid; i < end; i += wg) {
        int e = ids[p.ids_off + i];
        if (e >= 0 && e < p.n_exp) kp_atomic_add_local_i32(&cnt[e], 1);
    }
    kp_barrier();
    for (int e = lid; e < p.n_exp; e += wg) hist[p.sorted_off + (kpm_i64)c * p.n_exp + e] = cnt[e];
}

KP_KERNEL void kp_moe_align_scan(KP_GLOBAL const int *KP_RESTRICT ids, KP_GLOBAL int *KP_RESTRICT sorted,
                                 KP_GLOBAL int *KP_RESTRICT pos, KP_GLOBAL int *KP_RESTRICT offsets,
                                 kp_moe_align_kargs p) {
    KP_LOCAL(int, cnt, KP_ALIGN_MAX_E);
    KP_LOCAL(int, off, KP_ALIGN_MAX_E + 1);
    KP_LOCAL(int, part, KP_ALIGN_WG + 1);
    const int lid = kp_local_id(0), wg = kp_local_size(0);

    if (p.nchunks <= 1) {
        /* one chunk (sorted_ids may then be shorter than E): count the ids here */
        for (int e = lid; e < p.n_exp; e += wg) cnt[e] = 0;
        kp_barrier();
        for (int i = lid; i < p.pairs; i += wg) {
            int e = ids[p.ids_off + i];
            if (e >= 0 && e < p.n_exp) kp_atomic_add_local_i32(&cnt[e], 1);
        }
        kp_barrier();
    } else {
        /* column sums of hist (in sorted_ids), chunk prefixes into token_pos */
        for (int e = lid; e < p.n_exp; e += wg) {
            int run = 0;
            for (int c = 0; c < p.nchunks; ++c) {
                int h = sorted[p.sorted_off + (kpm_i64)c * p.n_exp + e];
                if (c > 0) pos[p.pos_off + (kpm_i64)c * p.chunk + e] = run;
                run += h;
            }
            cnt[e] = run;
        }
    }
    for (int e = lid; e < p.n_exp; e += wg) off[e] = (cnt[e] + p.block - 1) / p.block * p.block;
    kp_barrier();

    /* exclusive scan of the padded counts: contiguous segments, one per work-item */
    const int seg = (p.n_exp + wg - 1) / wg;
    const int e0 = lid * seg < p.n_exp ? lid * seg : p.n_exp, e1 = e0 + seg < p.n_exp ? e0 + seg : p.n_exp;
    int sum = 0;
    for (int e = e0; e < e1; ++e) sum += off[e];
    part[lid] = sum;
    kp_barrier();
    if (lid == 0) {
        int run = 0;
        for (int i = 0; i < wg; ++i) {
            int v = part[i];
            part[i] = run;
            run += v;
        }
        part[wg] = run;
    }
    kp_barrier();
    int run = part[lid];
    for (int e = e0; e < e1; ++e) {
        int v = off[e];
        off[e] = run;
        run += v;
    }
    if (lid == 0) off[p.n_exp] = part[wg];
    kp_barrier();
    for (int e = lid; e <= p.n_exp; e += wg) offsets[p.offsets_off + e] = off[e];

    /* padding rows (every hist read above happened before the barriers) */
    for (int e = lid; e < p.n_exp; e += wg)
        for (int r = off[e] + cnt[e]; r < off[e + 1] && r < p.sorted_len; ++r) sorted[p.sorted_off + r] = p.pairs;
    for (int r = off[p.n_exp] + lid; r < p.sorted_len; r += wg) sorted[p.sorted_off + r] = p.pairs;
}

KP_KERNEL void kp_moe_align_scatter(KP_GLOBAL const int *KP_RESTRICT ids, KP_GLOBAL int *KP_RESTRICT sorted,
                                    KP_GLOBAL int *KP_RESTRICT pos, KP_GLOBAL const int *KP_RESTRICT offsets,
                                    kp_moe_align_kargs p) {
    KP_LOCAL(int, next, KP_ALIGN_MAX_E);
    KP_LOCAL(int, ex, KP_ALIGN_WG);
    const int c = kp_group_id(0), lid = kp_local_id(0), wg = kp_local_size(0);
    const int start = c * p.chunk, end = kpa_chunk_end(c, p.nchunks, p.chunk, p.pairs);
    for (int e = lid; e < p.n_exp; e += wg)
        next[e] = offsets[p.offsets_off + e] + (c > 0 ? pos[p.pos_off + start + e] : 0);
    kp_barrier(); /* the chunk prefixes are read before this chunk's token_pos is written */
    for (int base = start; base < end; base += wg) {
        const int i = base + lid;
        int e = i < end ? ids[p.ids_off + i] : -1;
        if (e < 0 || e >= p.n_exp) e = -1;
        ex[lid] = e;
        kp_barrier();
        int before = 0, last = 1;
        for (int j = 0; j < wg; ++j) {
            int same = ex[j] == e;
            before += same && j < lid;
            last = last && !(same && j > lid);
        }
        int row = e >= 0 ? next[e] + before : -1;
        kp_barrier();
        if (e >= 0 && last) next[e] += before + 1;
        if (i < end) {
            if (row >= 0 && row < p.sorted_len) sorted[p.sorted_off + row] = i;
            pos[p.pos_off + i] = row;
        }
        kp_barrier();
    }
}
