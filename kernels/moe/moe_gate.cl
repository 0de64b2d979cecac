/*
 * kernels/moe/moe_gate.cl - kp_moe_gate: scores, DeepSeek-V3 group-limited top-k,
 * renormalisation and route scale, one work-group per token, no host round trip.
 *
 * Per token (DESIGN section 2):
 *   s = softmax(logits) or sigmoid(logits), in f32; b = s + bias (selection only);
 *   n_group > 1 and topk_group < n_group: a group's score is the sum of its top-2 b
 *   with a bias (V3), its best b without one (V2); the topk_group best groups stay
 *   (ties: lower group), the others are out of the race entirely (-inf, never 0);
 *   top-k of b over the kept experts by rank: an expert's slot is the number of kept
 *   experts that beat it (larger b, ties to the lower index), so slots come out in
 *   descending b with no sort and no loop of barriers;
 *   weights = s at the chosen ids, / their sum (slot order) when renormalize, * route_scale.
 * A NaN b is ranked as -inf, so the order stays total and every slot is written once.
 *
 * Options: KP_DTYPE_* (the logits), KP_GATE_WG (work-group size, default 128).
 * Launch: global = T * KP_GATE_WG, local = KP_GATE_WG. E <= 512, topk <= 32, n_group <= 32.
 */
#include "kp_dialect.h"
#include "moe_common.h"
#include "moe_kargs.h"

#ifndef KP_GATE_WG
#define KP_GATE_WG 128
#endif
#define KP_GATE_MAX_E 512
#define KP_GATE_MAX_K 32
#define KP_GATE_MAX_G 32

KP_KERNEL void kp_moe_gate(KP_GLOBAL const kp_storage_t *KP_RESTRICT logits, KP_GLOBAL const float *KP_RESTRICT bias,
                           KP_GLOBAL int *KP_RESTRICT ids, KP_GLOBAL float *KP_RESTRICT weights, kp_moe_gate_kargs p) {
    KP_LOCAL(float, s, KP_GATE_MAX_E);
    KP_LOCAL(float, b, KP_GATE_MAX_E);
    KP_LOCAL(float, scratch, KP_GATE_WG);
    KP_LOCAL(float, gscore, KP_GATE_MAX_G);
    KP_LOCAL(int, kept, KP_GATE_MAX_G);
    KP_LOCAL(int, chosen, KP_GATE_MAX_K);

    const int t = kp_group_id(0), lid = kp_local_id(0), wg = kp_local_size(0);
    const int ne = p.n_exp < KP_GATE_MAX_E ? p.n_exp : KP_GATE_MAX_E;
    const int ng = p.n_group < 1 ? 1 : p.n_group < KP_GATE_MAX_G ? p.n_group : KP_GATE_MAX_G;
    const int k = p.topk < KP_GATE_MAX_K ? p.topk : KP_GATE_MAX_K;
    const int gsize = ne / ng;
    KP_GLOBAL const kp_storage_t *row = logits + p.logits_off + (kpm_i64)t * p.logits_ld;

    float mx = -KP_INFINITY;
    for (int i = lid; i < ne; i += wg) {
        float v = kp_load(row, i);
        s[i] = v;
        mx = kp_fmaxf(mx, v);
    }
    if (lid < KP_GATE_MAX_K) chosen[lid] = -1;
    if (!p.use_sigmoid) {
        mx = kp_reduce_max(mx, scratch); /* ends with a barrier: s[] is complete */
        float sum = 0.0f;
        for (int i = lid; i < ne; i += wg) {
            float e = kp_expf(s[i] - mx);
            s[i] = e;
            sum += e;
        }
        sum = kp_reduce_sum(sum, scratch);
        for (int i = lid; i < ne; i += wg) s[i] = s[i] / sum;
    } else {
        for (int i = lid; i < ne; i += wg) s[i] = 1.0f / (1.0f + kp_expf(-s[i]));
    }
    for (int i = lid; i < ne; i += wg) {
        float v = s[i] + (p.has_bias ? bias[p.bias_off + i] : 0.0f);
        b[i] = v != v ? -KP_INFINITY : v;
    }
    kp_barrier();

    const int grouped = ng > 1 && p.topk_group < ng;
    if (lid < ng) {
        float top1 = -KP_INFINITY, top2 = -KP_INFINITY;
        for (int i = lid * gsize; i < (lid + 1) * gsize; ++i) {
            float v = b[i];
            if (v > top1) {
                top2 = top1;
                top1 = v;
            } else if (v > top2) {
                top2 = v;
            }
        }
        gscore[lid] = (p.has_bias && gsize >= 2) ? top1 + top2 : top1;
    }
    kp_barrier();
    if (lid < ng) {
        int rank = 0;
        for (int g = 0; g < ng; ++g) rank += kpm_better(gscore[g], g, gscore[lid], lid);
        kept[lid] = !grouped || rank < p.topk_group;
    }
    kp_barrier();

    for (int i = lid; i < ng * gsize; i += wg) {
        if (!kept[i / gsize]) continue;
        float v = b[i];
        int rank = 0;
        for (int g = 0; g < ng && rank < k; ++g) {
            if (!kept[g]) continue;
            for (int j = g * gsize; j < (g + 1) * gsize; ++j) rank += kpm_better(b[j], j, v, i);
        }
        if (rank < k) chosen[rank] = i;
    }
    kp_barrier();

    if (lid < k) {
        float sum = 0.0f;
        for (int n = 0; n < k; ++n) sum += chosen[n] >= 0 ? s[chosen[n]] : 0.0f;
        int id = chosen[lid];
        float wv = id >= 0 ? s[id] : 0.0f;
        if (p.renormalize && sum > 0.0f) wv = wv / sum;
        ids[p.ids_off + (kpm_i64)t * p.ids_ld + lid] = id;
        weights[p.w_off + (kpm_i64)t * p.w_ld + lid] = wv * p.route_scale;
    }
}
