/*
 * core/ops/op_moe_align.c — argument rules of kp_moe_align.
 */
#include "internal.h"

kp_status kp_validate_moe_align(kp_device *d, const void *params) {
    const char *op = "moe_align";
    const kp_moe_align_params *p = params;
    const kp_tensor_rule rules[] = {
        {"topk_ids", &p->topk_ids, false, false, KP_DT(KP_I32), 2, true},
        {"sorted_ids", &p->sorted_ids, false, true, KP_DT(KP_I32), 1, true},
        {"expert_offsets", &p->expert_offsets, false, true, KP_DT(KP_I32), 1, true},
        {"token_pos", &p->token_pos, false, true, KP_DT(KP_I32), 2, true},
    };
    kp_status st = kp_validate_tensors(op, d, rules, (int)(sizeof rules / sizeof rules[0]));
    if (st != KP_OK) return st;
    if (p->num_experts < 1 || p->num_experts > 4096)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: num_experts is %d; it must be in 1..4096", op,
                            (int)p->num_experts);
    if (p->block_size < 1 || p->block_size > 1024)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: block_size is %d; it must be in 1..1024", op,
                            (int)p->block_size);
    int64_t pairs = p->topk_ids.shape[0] * p->topk_ids.shape[1];
    int64_t need = pairs + (int64_t)p->num_experts * (p->block_size - 1);
    if (pairs > INT32_MAX / 2)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %lld (token, slot) pairs exceed the int32 index range",
                            op, (long long)pairs);
    if (p->sorted_ids.shape[0] < need)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "%s: sorted_ids has %lld entries; it needs T*k + E*(block_size-1) = %lld", op,
                            (long long)p->sorted_ids.shape[0], (long long)need);
    if ((st = kp_check_dim(op, "expert_offsets", &p->expert_offsets, 0, (int64_t)p->num_experts + 1,
                           "num_experts + 1")) ||
        (st = kp_check_dim(op, "token_pos", &p->token_pos, 0, p->topk_ids.shape[0], "T of topk_ids")) ||
        (st = kp_check_dim(op, "token_pos", &p->token_pos, 1, p->topk_ids.shape[1], "k of topk_ids")))
        return st;
    return KP_OK;
}
