/*
 * core/ops/op_attention_prefill.c — argument rules of kp_attention_prefill, contiguous
 * (k, v [total_k, h_kv, d]) or paged (k, v caches through block_table and seq_lens_k).
 */
#include "internal.h"

/* Shapes of the paged form: k/v caches, block_table [B, max_blocks], seq_lens_k [B]. */
static kp_status check_paged(const char *op, const kp_attention_prefill_params *p) {
    kp_status st;
    int64_t nb = p->cu_seqlens_q.shape[0] - 1, block_size = p->k.shape[1], max_blocks = p->block_table.shape[1];
    if (block_size < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: k's block_size (dim 1) is %lld; it must be >= 1", op,
                            (long long)block_size);
    if ((st = kp_check_dim(op, "v", &p->v, 0, p->k.shape[0], "num_blocks of k")) ||
        (st = kp_check_dim(op, "v", &p->v, 1, block_size, "block_size of k")) ||
        (st = kp_check_dim(op, "v", &p->v, 2, p->k.shape[2], "h_kv of k")) ||
        (st = kp_check_dim(op, "block_table", &p->block_table, 0, nb, "B of cu_seqlens_q")) ||
        (st = kp_check_dim(op, "seq_lens_k", &p->seq_lens_k, 0, nb, "B of cu_seqlens_q")))
        return st;
    if (nb > 0 && max_blocks < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: block_table needs at least one column", op);
    if (max_blocks > INT64_MAX / block_size)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: block_table's %lld columns x block_size %lld overflow", op,
                            (long long)max_blocks, (long long)block_size);
    if (p->max_seqlen_k < 0 || p->max_seqlen_k > max_blocks * block_size)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: max_seqlen_k is %d; with a block table it must be in [0, max_blocks * block_size = "
                            "%lld * %lld]",
                            op, (int)p->max_seqlen_k, (long long)max_blocks, (long long)block_size);
    return KP_OK;
}

kp_status kp_validate_attention_prefill(kp_device *d, const void *params) {
    const char *op = "attention_prefill";
    const kp_attention_prefill_params *p = params;
    const bool paged = p->block_table.buffer != NULL;
    const int kv_rank = paged ? 4 : 3; /* [num_blocks, block_size, h_kv, d] or [total_k, h_kv, d] */
    if (!paged && p->seq_lens_k.buffer)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: seq_lens_k is given without a block_table; contiguous K/V take cu_seqlens_k", op);
    const kp_tensor_rule rules[] = {
        {"q", &p->q, false, false, KP_DT_FLOAT, 3, false},
        {"k", &p->k, false, false, KP_DT_FLOAT, kv_rank, false},
        {"v", &p->v, false, false, KP_DT_FLOAT, kv_rank, false},
        {"cu_seqlens_q", &p->cu_seqlens_q, false, false, KP_DT(KP_I32), 1, true},
        {"cu_seqlens_k", &p->cu_seqlens_k, paged, false, KP_DT(KP_I32), 1, true},
        {"out", &p->out, false, true, KP_DT_FLOAT, 3, false},
        {"lse", &p->lse, true, true, KP_DT(KP_F32), 2, true},
        {"block_table", &p->block_table, true, false, KP_DT(KP_I32), 2, false},
        {"seq_lens_k", &p->seq_lens_k, !paged, false, KP_DT(KP_I32), 1, true},
    };
    kp_status st = kp_validate_tensors(op, d, rules, (int)(sizeof rules / sizeof rules[0]));
    if (st == KP_OK) st = kp_check_same_dtype(op, "k", &p->k, "q", &p->q);
    if (st == KP_OK) st = kp_check_same_dtype(op, "v", &p->v, "q", &p->q);
    if (st == KP_OK) st = kp_check_same_dtype(op, "out", &p->out, "q", &p->q);
    if (st != KP_OK) return st;

    int64_t total_q = p->q.shape[0], h_q = p->q.shape[1], dqk = p->q.shape[2];
    int64_t h_kv = p->k.shape[kv_rank - 2], dv = p->v.shape[kv_rank - 1];
    if (p->cu_seqlens_q.shape[0] < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: cu_seqlens_q must have B+1 >= 1 entries", op);
    if (h_q < 1 || h_kv < 1 || dqk < 1 || dv < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "%s: heads and head dims must be >= 1 (h_q %lld, h_kv %lld, d %lld, dv %lld)", op,
                            (long long)h_q, (long long)h_kv, (long long)dqk, (long long)dv);
    if (h_q % h_kv != 0)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: h_q (%lld) must be a multiple of h_kv (%lld)", op,
                            (long long)h_q, (long long)h_kv);
    if (paged ? (st = check_paged(op, p)) != KP_OK
              : ((st = kp_check_dim(op, "cu_seqlens_k", &p->cu_seqlens_k, 0, p->cu_seqlens_q.shape[0],
                                    "B+1 of cu_seqlens_q")) ||
                 (st = kp_check_dim(op, "v", &p->v, 0, p->k.shape[0], "total_k of k")) ||
                 (st = kp_check_dim(op, "v", &p->v, 1, h_kv, "h_kv of k"))))
        return st;
    if ((st = kp_check_dim(op, "k", &p->k, kv_rank - 1, dqk, "q's head dim")) ||
        (st = kp_check_dim(op, "out", &p->out, 0, total_q, "total_q of q")) ||
        (st = kp_check_dim(op, "out", &p->out, 1, h_q, "h_q of q")) ||
        (st = kp_check_dim(op, "out", &p->out, 2, dv, "dv of v")))
        return st;
    if (p->lse.buffer && ((st = kp_check_dim(op, "lse", &p->lse, 0, h_q, "h_q")) ||
                          (st = kp_check_dim(op, "lse", &p->lse, 1, total_q, "total_q"))))
        return st;
    if ((st = kp_check_scale(op, p->softmax_scale)) || (st = kp_check_flag(op, "causal", p->causal)))
        return st;
    if (p->window_left < -1 || p->window_right < -1)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: window_left/right are %d/%d; each must be >= 0, or -1 for unbounded", op,
                            (int)p->window_left, (int)p->window_right);
    if (p->max_seqlen_q < 0 || p->max_seqlen_k < 0 || p->max_seqlen_q > total_q ||
        (!paged && p->max_seqlen_k > p->k.shape[0]))
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: max_seqlen_q/k are %d/%d; they must be in [0, total_q %lld] / [0, total_k %lld]",
                            op, (int)p->max_seqlen_q, (int)p->max_seqlen_k, (long long)total_q,
                            (long long)p->k.shape[0]);
    return KP_OK;
}
