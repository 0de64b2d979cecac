/*
 * core/ops/op_moe_gate.c — argument rules of kp_moe_gate and of the routing
 * settings kp_moe_forward shares.
 */
#include "internal.h"

#include <math.h>

#define KP_MOE_MAX_EXPERTS 512
#define KP_MOE_MAX_TOPK 32
#define KP_MOE_MAX_GROUPS 32

kp_status kp_validate_moe_routing(const char *op, const kp_moe_routing *r, int64_t e) {
    if (e < 1 || e > KP_MOE_MAX_EXPERTS)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %lld experts; kport supports 1..%d", op, (long long)e,
                            KP_MOE_MAX_EXPERTS);
    if (r->topk < 1 || r->topk > KP_MOE_MAX_TOPK || r->topk > e)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: topk is %d; it must be in 1..min(%d, E = %lld)", op,
                            (int)r->topk, KP_MOE_MAX_TOPK, (long long)e);
    if (r->n_group < 1 || r->n_group > KP_MOE_MAX_GROUPS || e % r->n_group != 0)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: n_group is %d; it must be in 1..%d and divide E = %lld", op, (int)r->n_group,
                            KP_MOE_MAX_GROUPS, (long long)e);
    if (r->topk_group < 1 || r->topk_group > r->n_group)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: topk_group is %d; it must be in 1..n_group (%d)", op,
                            (int)r->topk_group, (int)r->n_group);
    if ((int64_t)r->topk > (int64_t)r->topk_group * (e / r->n_group))
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: topk (%d) exceeds the experts in the kept groups (topk_group %d x %lld)", op,
                            (int)r->topk, (int)r->topk_group, (long long)(e / r->n_group));
    if (r->scoring != KP_MOE_SCORING_SOFTMAX && r->scoring != KP_MOE_SCORING_SIGMOID)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: scoring %d is not a kp_moe_scoring", op,
                            (int)r->scoring);
    kp_status st = kp_check_flag(op, "renormalize", r->renormalize);
    if (st != KP_OK) return st;
    if (!(r->route_scale > 0.0f) || isinf(r->route_scale))
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: route_scale is %g; it must be finite and > 0", op,
                            (double)r->route_scale);
    return KP_OK;
}

kp_status kp_validate_moe_gate(kp_device *d, const void *params) {
    const char *op = "moe_gate";
    const kp_moe_gate_params *p = params;
    const kp_tensor_rule rules[] = {
        {"logits", &p->logits, false, false, KP_DT_FLOAT, 2, false},
        {"bias", &p->bias, true, false, KP_DT(KP_F32), 1, true},
        {"topk_ids", &p->topk_ids, false, true, KP_DT(KP_I32), 2, false},
        {"topk_weights", &p->topk_weights, false, true, KP_DT(KP_F32), 2, false},
    };
    kp_status st = kp_validate_tensors(op, d, rules, (int)(sizeof rules / sizeof rules[0]));
    if (st != KP_OK) return st;
    int64_t t = p->logits.shape[0], e = p->logits.shape[1];
    if ((st = kp_validate_moe_routing(op, &p->routing, e))) return st;
    if ((p->bias.buffer && (st = kp_check_dim(op, "bias", &p->bias, 0, e, "E of logits"))) ||
        (st = kp_check_dim(op, "topk_ids", &p->topk_ids, 0, t, "T of logits")) ||
        (st = kp_check_dim(op, "topk_ids", &p->topk_ids, 1, p->routing.topk, "routing.topk")) ||
        (st = kp_check_dim(op, "topk_weights", &p->topk_weights, 0, t, "T of logits")) ||
        (st = kp_check_dim(op, "topk_weights", &p->topk_weights, 1, p->routing.topk, "routing.topk")))
        return st;
    return KP_OK;
}
