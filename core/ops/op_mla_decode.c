/*
 * core/ops/op_mla_decode.c — argument rules of kp_mla_decode (FlashMLA layout).
 */
#include "internal.h"

kp_status kp_validate_mla_decode(kp_device *d, const void *params) {
    const char *op = "mla_decode";
    const kp_mla_decode_params *p = params;
    const kp_tensor_rule rules[] = {
        {"q", &p->q, false, false, KP_DT_FLOAT, 4, false},
        {"kv_cache", &p->kv_cache, false, false, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 4, false},
        {"block_table", &p->block_table, false, false, KP_DT(KP_I32), 2, false},
        {"seq_lens", &p->seq_lens, false, false, KP_DT(KP_I32), 1, true},
        {"out", &p->out, false, true, KP_DT_FLOAT, 4, false},
        {"lse", &p->lse, true, true, KP_DT(KP_F32), 3, true},
        {"kv_scale", &p->kv_scale, true, false, KP_DT(KP_F32), 1, true},
    };
    kp_status st = kp_validate_tensors(op, d, rules, (int)(sizeof rules / sizeof rules[0]));
    if (st == KP_OK) st = kp_check_fp8_cache(op, "kv_cache", &p->kv_cache, "kv_scale", &p->kv_scale, &p->q);
    if (st == KP_OK) st = kp_check_same_dtype(op, "out", &p->out, "q", &p->q);
    if (st != KP_OK) return st;

    int64_t d_qk = p->q.shape[3];
    if (p->kv_cache.shape[1] < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: kv_cache block size must be >= 1", op);
    if ((st = kp_check_dim(op, "kv_cache", &p->kv_cache, 2, 1, "1 (MLA has one latent KV head)")) ||
        (st = kp_check_dim(op, "kv_cache", &p->kv_cache, 3, d_qk, "q's head dim")))
        return st;
    if (p->head_dim_v < 1 || p->head_dim_v > d_qk)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: head_dim_v is %d; it must be in 1..%lld (V is the first head_dim_v columns of K)",
                            op, (int)p->head_dim_v, (long long)d_qk);
    if ((st = kp_check_paged_kv(op, &p->q, &p->block_table, &p->seq_lens, &p->out, &p->lse,
                                p->head_dim_v, p->num_splits)))
        return st;
    if ((st = kp_check_scale(op, p->softmax_scale)) || (st = kp_check_flag(op, "causal", p->causal)))
        return st;
    return KP_OK;
}
