/*
 * kernels/moe/ep_capacity.cl - expert parallelism's capacity mode on the device: the
 * three steps of the ep_capacity backend slot (core/backend.h has the spec, the cpu
 * backend's cpu_ep_capacity.c the reference), so that kp_ep_dispatch_async and its
 * combine enqueue no host sync. Integers are exactly the cpu step's.
 *
 *   plan_send  one work-group: every pair's send row reset to the drop row W*C, then per
 *              send row (d, i) the i-th of destination d's pairs in sorted order when
 *              i < min(n_d, C); the drops summed; the headers W x HW.
 *   plan_recv  one work-group: per local expert le (in order), every source's row count
 *              (its header clamped: rows sent in [0, C], a negative count 0, the running
 *              sum stopping at rows sent), an exclusive scan over the sources, and each
 *              received row placed by a binary search of the scan (balanced whatever
 *              the skew). Sources' running counts live in dynamic local memory,
 *              3 W + 1 ints (the host checks that the device has them).
 *   gather     one work-group per destination row (strided over the rows): the row's
 *              source index read once, an index outside [0, src_rows) moves nothing,
 *              else the row copied in units of vec bytes (16 where row_bytes and both
 *              offsets allow, else 4, else 1).
 *
 * Every index read from a buffer is clamped or checked: corrupt input never reads or
 * writes out of bounds (range, written once by the core, is trusted). Sort offsets that
 * make two destinations' pair ranges overlap (never kp_moe_align's) give a pair two
 * writers: which of the two send rows it keeps is then unspecified (the cpu step: the
 * later one).
 * Options: KP_EPC_WG (default 256; the launch's local size).
 */
#include "kp_dialect.h"
#include "moe_common.h"
#include "ep_capacity_kargs.h"

#ifndef KP_EPC_WG
#define KP_EPC_WG 256
#endif

KP_FN int kpe_clamp(kpm_i64 v, kpm_i64 lo, kpm_i64 hi) { return (int)(v < lo ? lo : v > hi ? hi : v); }

/* Destination d's pairs in sorted order: [*b, *end), both in [0, pairs]. */
KP_FN void kpe_dest(KP_GLOBAL const int *aoff, KP_GLOBAL const int *range, const kp_ep_capacity_kargs *p, int d,
                    int *b, int *end) {
    if (p->pairs == 0) {
        *b = 0, *end = 0;
        return;
    }
    const int r0 = range[p->in2_off + d], r1 = range[p->in2_off + d + 1];
    *b = kpe_clamp(aoff[p->in1_off + r0], 0, p->pairs);
    *end = kpe_clamp(aoff[p->in1_off + r1], *b, p->pairs);
}

/* The sum of part[0, wg) (int64), returned to every work-item. */
KP_FN kpm_i64 kpe_sum(KP_LOCAL_MEM kpm_i64 *part, kpm_i64 v, int lid, int wg) {
    part[lid] = v;
    kp_barrier();
    if (lid == 0) {
        kpm_i64 s = 0;
        for (int i = 0; i < wg; ++i) s += part[i];
        part[0] = s;
    }
    kp_barrier();
    const kpm_i64 s = part[0];
    kp_barrier(); /* part may be reused */
    return s;
}

KP_KERNEL void kp_ep_plan_send(KP_GLOBAL const int *KP_RESTRICT sorted, KP_GLOBAL const int *KP_RESTRICT aoff,
                               KP_GLOBAL const int *KP_RESTRICT range, KP_GLOBAL int *KP_RESTRICT send_idx,
                               KP_GLOBAL int *KP_RESTRICT send_pos, KP_GLOBAL int *KP_RESTRICT hdr,
                               KP_GLOBAL int *KP_RESTRICT dropped_out, kp_ep_capacity_kargs p) {
    KP_LOCAL(kpm_i64, part, KP_EPC_WG);
    const int lid = kp_local_id(0), wg = kp_local_size(0);
    const int W = p.world, C = p.capacity, HW = p.header_ints;
    const kpm_i64 WC = (kpm_i64)W * C;
    for (kpm_i64 i = lid; i < p.pairs; i += wg) send_pos[p.out1_off + i] = (int)WC;
    kp_barrier(); /* the reset lands before any pair's send row */
    for (kpm_i64 j = lid; j < WC; j += wg) {
        const int d = (int)(j / C), i = (int)(j - (kpm_i64)d * C);
        int b, end;
        kpe_dest(aoff, range, &p, d, &b, &end);
        const int sent = end - b < C ? end - b : C;
        const int pair = i < sent ? sorted[p.in0_off + b + i] : -1;
        const int ok = pair >= 0 && pair < p.pairs;
        send_idx[p.out0_off + j] = ok ? pair / p.topk : -1;
        if (ok) send_pos[p.out1_off + pair] = (int)j;
    }
    kpm_i64 drop = 0;
    for (int d = lid; d < W; d += wg) {
        int b, end;
        kpe_dest(aoff, range, &p, d, &b, &end);
        drop += end - b > C ? end - b - C : 0;
    }
    const kpm_i64 dropped = kpe_sum(part, drop, lid, wg);
    for (kpm_i64 j = lid; j < (kpm_i64)W * HW; j += wg) {
        const int d = (int)(j / HW), q = (int)(j - (kpm_i64)d * HW);
        int b, end, v = 0;
        kpe_dest(aoff, range, &p, d, &b, &end);
        const int sent = end - b < C ? end - b : C;
        if (q == 0) {
            v = sent;
        } else if (q == 1) {
            v = (int)dropped;
        } else if (p.pairs) {
            const int r0 = range[p.in2_off + d], r1 = range[p.in2_off + d + 1], le = q - 2;
            const int le_n = r1 - r0 < HW - 2 ? r1 - r0 : HW - 2;
            if (le < le_n) {
                const int lo = kpe_clamp((kpm_i64)aoff[p.in1_off + r0 + le] - b, 0, sent);
                const int hi = kpe_clamp((kpm_i64)aoff[p.in1_off + r0 + le + 1] - b, lo, sent);
                v = hi - lo;
            }
        }
        hdr[p.out2_off + j] = v;
    }
    if (lid == 0) dropped_out[p.out3_off] = kpe_clamp(dropped, 0, 0x7fffffff);
}

KP_KERNEL void kp_ep_plan_recv(KP_GLOBAL const int *KP_RESTRICT hdr, KP_GLOBAL int *KP_RESTRICT offsets,
                               KP_GLOBAL int *KP_RESTRICT recv_map, KP_GLOBAL int *KP_RESTRICT grouped_src,
                               KP_GLOBAL int *KP_RESTRICT dropped_all,
                               kp_ep_capacity_kargs p KP_DYNAMIC_LOCAL_ARG(smem)) {
    KP_DYNAMIC_LOCAL(smem);
    /* 3 W + 1 ints, sized by the host: per source first, its rows taken by the experts
     * before le, and cnt, its rows of expert le; pre, their exclusive scan */
    KP_LOCAL_MEM int *first = (KP_LOCAL_MEM int *)smem;
    KP_LOCAL_MEM int *cnt = first + p.world, *pre = first + 2 * p.world;
    KP_LOCAL(kpm_i64, part64, KP_EPC_WG);
    const int lid = kp_local_id(0), wg = kp_local_size(0);
    const int W = p.world, C = p.capacity, HW = p.header_ints, LE = p.local_experts;
    const kpm_i64 WC = (kpm_i64)W * C;
    for (kpm_i64 j = lid; j < WC; j += wg) recv_map[p.out1_off + j] = -1, grouped_src[p.out2_off + j] = -1;
    for (int s = lid; s < W; s += wg) first[s] = 0;
    kp_barrier(); /* the resets land before any row is placed */
    int row = 0; /* the same in every work-item */
    const int counted = LE < HW - 2 ? LE : HW - 2; /* experts past the header's counts get no rows */
    for (int le = 0; le < counted; ++le) {
        if (lid == 0) offsets[p.out0_off + le] = row;
        for (int s = lid; s < W; s += wg) {
            const kpm_i64 h = p.in0_off + (kpm_i64)s * HW;
            const int sent = kpe_clamp(hdr[h], 0, C), f = first[s];
            cnt[s] = kpe_clamp((kpm_i64)f + hdr[h + 2 + le], f, sent) - f;
        }
        kp_barrier();
        /* exclusive scan of cnt into pre, pre[W] the total: W ints, one work-item (with
         * moe_align's scan by per-work-item segments here, PoCL 3 lost the other
         * work-items' stores to pre; W is small beside the rows placed below) */
        if (lid == 0) {
            int run = 0;
            for (int e = 0; e < W; ++e) {
                pre[e] = run;
                run += cnt[e];
            }
            pre[W] = run;
        }
        kp_barrier();
        const int total = pre[W];
        for (int r = lid; r < total; r += wg) {
            int lo = 0, hi = W; /* pre[lo] <= r < pre[hi]: the source whose rows hold r */
            while (hi - lo > 1) {
                const int mid = (lo + hi) / 2;
                if (pre[mid] <= r) lo = mid;
                else hi = mid;
            }
            const int at = lo * C + first[lo] + (r - pre[lo]);
            recv_map[p.out1_off + at] = row + r;
            grouped_src[p.out2_off + row + r] = at;
        }
        kp_barrier(); /* first and pre are read above before they change */
        for (int s = lid; s < W; s += wg) first[s] += cnt[s];
        row += total;
        kp_barrier();
    }
    for (int le = counted + lid; le <= LE; le += wg) offsets[p.out0_off + le] = row;
    kpm_i64 drop = 0;
    for (int s = lid; s < W; s += wg) drop += kpe_clamp(hdr[p.in0_off + (kpm_i64)s * HW + 1], 0, 0x7fffffff);
    const kpm_i64 all = kpe_sum(part64, drop, lid, wg);
    if (lid == 0) dropped_all[p.out3_off] = kpe_clamp(all, 0, 0x7fffffff);
}

KP_KERNEL void kp_ep_gather(KP_GLOBAL const unsigned char *src, KP_GLOBAL const int *KP_RESTRICT idx,
                            KP_GLOBAL unsigned char *dst, kp_ep_capacity_kargs p) {
    const int lid = kp_local_id(0), wg = kp_local_size(0);
    for (kpm_i64 r = kp_group_id(0); r < p.rows; r += kp_num_groups(0)) {
        const int s = idx[p.in1_off + r];
        if (s < 0 || s >= p.src_rows) continue; /* the row is left untouched */
        const kpm_i64 from = p.in0_off + (kpm_i64)s * p.row_units, to = p.out0_off + r * p.row_units;
        if (p.vec == 16) {
            KP_GLOBAL const uint4 *sv = (KP_GLOBAL const uint4 *)src;
            KP_GLOBAL uint4 *dv = (KP_GLOBAL uint4 *)dst;
            for (kpm_i64 u = lid; u < p.row_units; u += wg) dv[to + u] = sv[from + u];
        } else if (p.vec == 4) {
            KP_GLOBAL const kp_u32 *sv = (KP_GLOBAL const kp_u32 *)src;
            KP_GLOBAL kp_u32 *dv = (KP_GLOBAL kp_u32 *)dst;
            for (kpm_i64 u = lid; u < p.row_units; u += wg) dv[to + u] = sv[from + u];
        } else {
            for (kpm_i64 u = lid; u < p.row_units; u += wg) dst[to + u] = src[from + u];
        }
    }
}
