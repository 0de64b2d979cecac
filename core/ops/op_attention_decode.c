/*
 * core/ops/op_attention_decode.c — argument rules of kp_attention_decode (paged KV).
 */
#include "internal.h"

kp_status kp_validate_attention_decode(kp_device *d, const void *params) {
    const char *op = "attention_decode";
    const kp_attention_decode_params *p = params;
    const kp_tensor_rule rules[] = {
        {"q", &p->q, false, false, KP_DT_FLOAT, 4, false},
        {"k_cache", &p->k_cache, false, false, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 4, false},
        {"v_cache", &p->v_cache, false, false, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 4, false},
        {"block_table", &p->block_table, false, false, KP_DT(KP_I32), 2, false},
        {"seq_lens", &p->seq_lens, false, false, KP_DT(KP_I32), 1, true},
        {"out", &p->out, false, true, KP_DT_FLOAT, 4, false},
        {"lse", &p->lse, true, true, KP_DT(KP_F32), 3, true},
        {"k_scale", &p->k_scale, true, false, KP_DT(KP_F32), 1, true},
        {"v_scale", &p->v_scale, true, false, KP_DT(KP_F32), 1, true},
    };
    kp_status st = kp_validate_tensors(op, d, rules, (int)(sizeof rules / sizeof rules[0]));
    if (st == KP_OK) st = kp_check_fp8_cache(op, "k_cache", &p->k_cache, "k_scale", &p->k_scale, &p->q);
    if (st == KP_OK) st = kp_check_fp8_cache(op, "v_cache", &p->v_cache, "v_scale", &p->v_scale, &p->q);
    if (st == KP_OK && p->k_cache.dtype != p->v_cache.dtype) st = kp_check_same_dtype(op, "v_cache", &p->v_cache, "k_cache", &p->k_cache);
    if (st == KP_OK) st = kp_check_same_dtype(op, "out", &p->out, "q", &p->q);
    if (st != KP_OK) return st;

    int64_t h_q = p->q.shape[2], d_qk = p->q.shape[3];
    int64_t block_size = p->k_cache.shape[1], h_kv = p->k_cache.shape[2], dv = p->v_cache.shape[3];
    if (block_size < 1 || h_kv < 1 || d_qk < 1 || dv < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "%s: block_size, h_kv and head dims must be >= 1 (got %lld, %lld, %lld, %lld)", op,
                            (long long)block_size, (long long)h_kv, (long long)d_qk, (long long)dv);
    if (h_q % h_kv != 0)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: h_q (%lld) must be a multiple of h_kv (%lld)", op,
                            (long long)h_q, (long long)h_kv);
    if ((st = kp_check_dim(op, "k_cache", &p->k_cache, 3, d_qk, "q's head dim")) ||
        (st = kp_check_dim(op, "v_cache", &p->v_cache, 0, p->k_cache.shape[0], "num_blocks of k_cache")) ||
        (st = kp_check_dim(op, "v_cache", &p->v_cache, 1, block_size, "block_size of k_cache")) ||
        (st = kp_check_dim(op, "v_cache", &p->v_cache, 2, h_kv, "h_kv of k_cache")))
        return st;
    if ((st = kp_check_paged_kv(op, &p->q, &p->block_table, &p->seq_lens, &p->out, &p->lse, dv,
                                p->num_splits)))
        return st;
    if ((st = kp_check_scale(op, p->softmax_scale)) || (st = kp_check_flag(op, "causal", p->causal)))
        return st;
    if (p->window_left < -1)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: window_left is %d; it must be > 0, or 0 / -1 for unbounded", op,
                            (int)p->window_left);
    return KP_OK;
}
