/*
 * backends/cpu/ops/cpu_moe_gate.c — kp_moe_gate on the CPU backend, and the per-token
 * routing kp_moe_forward shares (cpu_moe_gate_rows).
 *
 * Per token, computed in double and ranked as f32 values, the way DeepSeek's
 * model.py scores in f32 (so scores that saturate to the same f32, like sigmoid of
 * logits past ~17, tie; and every backend selects the same experts):
 *   s = softmax(logits) or sigmoid(logits);  b = s + bias (bias for selection only);
 *   n_group > 1: group score = sum of the top-2 b of the group with a bias
 *   (DeepSeek-V3), the best b without one (DeepSeek-V2); keep the topk_group best
 *   groups (ties: lower group), the others are masked out (-inf, never 0, so negative
 *   biased scores still lose to nothing);
 *   top-k of b over the kept experts, ids in descending b (ties: lower index);
 *   weights = s at those ids, / their sum when renormalize, * route_scale.
 */
#include "cpu_gemm.h"

#include <math.h>
#include <string.h>

#define GATE_MAX_E 512
#define GATE_MAX_GROUPS 32

/* i ranks before j: larger value, ties to the lower index. */
static inline int better(double vi, int i, double vj, int j) { return vi > vj || (vi == vj && i < j); }

void cpu_moe_gate_rows(const cpu_gate_job *job, int64_t t0, int64_t t1) {
    const int64_t e = job->e;
    const kp_moe_routing *r = &job->r;
    const int gsize = (int)(e / r->n_group);
    double s[GATE_MAX_E], b[GATE_MAX_E];
    for (int64_t t = t0; t < t1; t++) {
        const unsigned char *row = job->logits + (size_t)(t * job->logits_ld) * kp_dtype_size(job->logits_dtype);
        for (int64_t i = 0; i < e; i++) {
            switch (job->logits_dtype) {
            case KP_F16: {
                float f;
                cpu_kernels_for(CPU_SIMD_PORTABLE)->f16_to_f32((const uint16_t *)row + i, &f, 1);
                s[i] = f;
                break;
            }
            case KP_BF16: {
                uint32_t u = (uint32_t)((const uint16_t *)row)[i] << 16;
                float f;
                memcpy(&f, &u, 4);
                s[i] = f;
                break;
            }
            default: s[i] = ((const float *)row)[i]; break;
            }
        }
        if (r->scoring == KP_MOE_SCORING_SOFTMAX) {
            double mx = -INFINITY, sum = 0.0;
            for (int64_t i = 0; i < e; i++) mx = s[i] > mx ? s[i] : mx;
            for (int64_t i = 0; i < e; i++) sum += (s[i] = exp(s[i] - mx));
            for (int64_t i = 0; i < e; i++) s[i] = (float)(s[i] / sum);
        } else {
            for (int64_t i = 0; i < e; i++) s[i] = (float)(1.0 / (1.0 + exp(-s[i])));
        }
        for (int64_t i = 0; i < e; i++) b[i] = (float)(s[i] + (job->bias ? (double)job->bias[i] : 0.0));

        unsigned char kept[GATE_MAX_GROUPS];
        memset(kept, 1, sizeof kept);
        if (r->n_group > 1 && r->topk_group < r->n_group) {
            double gscore[GATE_MAX_GROUPS];
            for (int g = 0; g < r->n_group; g++) {
                double top1 = -INFINITY, top2 = -INFINITY;
                for (int i = g * gsize; i < (g + 1) * gsize; i++) {
                    if (b[i] > top1) top2 = top1, top1 = b[i];
                    else if (b[i] > top2) top2 = b[i];
                }
                gscore[g] = !job->bias ? top1 : gsize >= 2 ? (float)(top1 + top2) : top1;
            }
            memset(kept, 0, sizeof kept);
            for (int n = 0; n < r->topk_group; n++) {
                int best = -1;
                for (int g = 0; g < r->n_group; g++)
                    if (!kept[g] && (best < 0 || better(gscore[g], g, gscore[best], best))) best = g;
                kept[best] = 1;
            }
        }
        /* selection: one pass keeping the k best in order. Experts come in ascending
         * index, so a strict '>' leaves an equal score behind the lower index. */
        int ids[32];
        double top[32];
        int count = 0;
        const int k = r->topk;
        for (int i = 0; i < e; i++) {
            if (!kept[i / gsize] || (count == k && !(b[i] > top[k - 1]))) continue;
            int at = count < k ? count++ : k - 1;
            while (at > 0 && b[i] > top[at - 1]) {
                top[at] = top[at - 1];
                ids[at] = ids[at - 1];
                at--;
            }
            top[at] = b[i];
            ids[at] = i;
        }
        double sum = 0.0;
        for (int n = 0; n < k; n++) sum += s[ids[n]];
        int32_t *out_ids = job->ids + t * job->ids_ld;
        float *out_w = job->weights + t * job->weights_ld;
        for (int n = 0; n < r->topk; n++) {
            double wv = s[ids[n]];
            if (r->renormalize && sum > 0.0) wv /= sum;
            out_ids[n] = ids[n];
            out_w[n] = (float)(wv * (double)r->route_scale);
        }
    }
}

static void gate_range(void *ctx, int64_t t0, int64_t t1) { cpu_moe_gate_rows(ctx, t0, t1); }

kp_status cpu_op_moe_gate(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_moe_gate_params *p = params;
    if (dry_run) return KP_OK; /* every dtype and routing the core accepts runs here */
    cpu_gate_job job = {
        .logits = cpu_at2(&p->logits, 0, 0),
        .logits_dtype = p->logits.dtype,
        .logits_ld = p->logits.strides[0],
        .e = p->logits.shape[1],
        .bias = p->bias.buffer ? (const float *)cpu_tensor_data(&p->bias) : NULL,
        .r = p->routing,
        .ids = (int32_t *)cpu_at2(&p->topk_ids, 0, 0),
        .ids_ld = p->topk_ids.strides[0],
        .weights = (float *)cpu_at2(&p->topk_weights, 0, 0),
        .weights_ld = p->topk_weights.strides[0],
    };
    cpu_moe_stream_lock(s);
    cpu_pool_parallel_for(cpu_state(s)->pool, p->logits.shape[0], 16, gate_range, &job);
    cpu_moe_stream_unlock(s);
    return KP_OK;
}
