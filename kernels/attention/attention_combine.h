/*
 * kernels/attention/attention_combine.h - kp_attention_combine, the split-KV merge of
 * both generations of paged decode (attention_decode.cl, attention_decode_gen2.cl):
 * one work-group of any size per (b, i, head) row of the f32 partials
 * part [nsplit, B * s_q * h_q, dv] and part_lse [nsplit, B * s_q * h_q] (-inf: a split
 * that saw no key):
 * out = sum_s e^(lse_s - M) O_s / sum_s e^(lse_s - M), lse = M + log sum_s e^(lse_s - M).
 */
#ifndef KP_ATTENTION_COMBINE_H
#define KP_ATTENTION_COMBINE_H

#include "kp_dialect.h"
#include "attention_kargs.h"

#define ATTN_MAX_SPLITS 1024

#if defined(KP_TARGET_OPENCL)
typedef long kp_comb_i64;
#define kp_combine_log2(x) log2(x)
#else
typedef long long kp_comb_i64;
#define kp_combine_log2(x) log2f(x)
#endif

KP_KERNEL void kp_attention_combine(KP_GLOBAL const float *KP_RESTRICT part,
                                    KP_GLOBAL const float *KP_RESTRICT part_lse,
                                    KP_GLOBAL kp_storage_t *KP_RESTRICT out, KP_GLOBAL float *KP_RESTRICT lse,
                                    kp_attn_combine_kargs p) {
    KP_LOCAL(float, w, ATTN_MAX_SPLITS);
    KP_LOCAL(float, stat, 2);
    int lid = kp_local_id(0), nt = kp_local_size(0);
    kp_comb_i64 rowid = kp_group_id(0), nrows_all = kp_num_groups(0);
    int hq = (int)(rowid % p.h_q), qi = (int)((rowid / p.h_q) % p.s_q), b = (int)(rowid / ((kp_comb_i64)p.h_q * p.s_q));
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
        stat[1] = sum > 0.0f ? mx + kp_combine_log2(sum) * 0.6931471805599453f : KP_INFINITY;
    }
    kp_barrier();
    float inv = stat[0];
    kp_comb_i64 obase = p.o_off + (kp_comb_i64)b * p.o_s0 + (kp_comb_i64)qi * p.o_s1 + (kp_comb_i64)hq * p.o_s2;
    for (int c = lid; c < p.dv; c += nt) {
        float acc = 0.0f;
        for (int s = 0; s < ns; ++s)
            if (w[s] > 0.0f) acc = kp_fmaf(w[s], part[(s * nrows_all + rowid) * p.dv + c], acc);
        kp_store(out, obase + c, acc * inv);
    }
    if (lid == 0 && p.has_lse) lse[p.lse_off + ((kp_comb_i64)b * p.h_q + hq) * p.s_q + qi] = stat[1];
}

#endif /* KP_ATTENTION_COMBINE_H */
