/*
 * core/ops/op_moe_combine.c — argument rules of kp_moe_combine.
 */
#include "internal.h"

kp_status kp_validate_moe_combine(kp_device *d, const void *params) {
    const char *op = "moe_combine";
    const kp_moe_combine_params *p = params;
    const kp_tensor_rule rules[] = {
        {"expert_out", &p->expert_out, false, false, KP_DT_FLOAT, 2, false},
        {"token_pos", &p->token_pos, false, false, KP_DT(KP_I32), 2, true},
        {"topk_weights", &p->topk_weights, false, false, KP_DT(KP_F32), 2, false},
        {"out", &p->out, false, true, KP_DT_FLOAT, 2, false},
    };
    kp_status st = kp_validate_tensors(op, d, rules, (int)(sizeof rules / sizeof rules[0]));
    if (st == KP_OK) st = kp_check_same_dtype(op, "out", &p->out, "expert_out", &p->expert_out);
    if (st != KP_OK) return st;
    int64_t t = p->token_pos.shape[0], k = p->token_pos.shape[1];
    if ((st = kp_check_dim(op, "topk_weights", &p->topk_weights, 0, t, "T of token_pos")) ||
        (st = kp_check_dim(op, "topk_weights", &p->topk_weights, 1, k, "k of token_pos")) ||
        (st = kp_check_dim(op, "out", &p->out, 0, t, "T of token_pos")) ||
        (st = kp_check_dim(op, "out", &p->out, 1, p->expert_out.shape[1], "hidden of expert_out")))
        return st;
    return KP_OK;
}
