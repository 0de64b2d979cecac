/*
 * core/ops/op_grouped_gemm.c — argument rules of kp_grouped_gemm, and the FP8
 * block-scale rules kp_moe_forward shares.
 */
#include "internal.h"

#define KP_FP8_BLOCK 128

/* w [E, N, K] in a's dtype, or FP8 e4m3 with scale f32 [E, ceil(N/128), ceil(K/128)]. */
kp_status kp_check_expert_weights(const char *op, const char *wname, const kp_tensor *w,
                                  const char *sname, const kp_tensor *scale, const kp_tensor *a) {
    kp_status st;
    if (w->dtype == KP_FP8_E4M3) {
        if (!scale->buffer)
            return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is FP8 e4m3, so %s (f32 block scales) is required",
                                op, wname, sname);
        if (w->shape[2] % KP_FP8_BLOCK != 0)
            return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %s is FP8 with K = %lld; K must be a multiple of %d",
                                op, wname, (long long)w->shape[2], KP_FP8_BLOCK);
        if ((st = kp_check_dim(op, sname, scale, 0, w->shape[0], "E of the weights")) ||
            (st = kp_check_dim(op, sname, scale, 1, (w->shape[1] + KP_FP8_BLOCK - 1) / KP_FP8_BLOCK,
                               "ceil(N/128)")) ||
            (st = kp_check_dim(op, sname, scale, 2, w->shape[2] / KP_FP8_BLOCK, "K/128")))
            return st;
        if (a->dtype == KP_F32)
            return kp_set_error(KP_ERR_INVALID_DTYPE, "%s: FP8 weights take f16 or bf16 activations, not f32", op);
        return KP_OK;
    }
    if (scale->buffer)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is given but %s is %s, not FP8", op, sname, wname,
                            kp_dtype_name(w->dtype));
    return kp_check_same_dtype(op, wname, w, "the activations", a);
}

kp_status kp_validate_grouped_gemm(kp_device *d, const void *params) {
    const char *op = "grouped_gemm";
    const kp_grouped_gemm_params *p = params;
    const kp_tensor_rule rules[] = {
        {"a", &p->a, false, false, KP_DT_FLOAT, 2, false},
        {"w", &p->w, false, false, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 3, false},
        {"w_scale", &p->w_scale, true, false, KP_DT(KP_F32), 3, true},
        {"expert_offsets", &p->expert_offsets, false, false, KP_DT(KP_I32), 1, true},
        {"out", &p->out, false, true, KP_DT_FLOAT, 2, false},
    };
    kp_status st = kp_validate_tensors(op, d, rules, (int)(sizeof rules / sizeof rules[0]));
    if (st == KP_OK) st = kp_check_same_dtype(op, "out", &p->out, "a", &p->a);
    if (st == KP_OK) st = kp_check_expert_weights(op, "w", &p->w, "w_scale", &p->w_scale, &p->a);
    if (st != KP_OK) return st;
    int64_t e = p->w.shape[0], n = p->w.shape[1], k = p->w.shape[2];
    if (e < 1 || n < 1 || k < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: w must have E, N, K >= 1 (got %lld, %lld, %lld)", op,
                            (long long)e, (long long)n, (long long)k);
    if ((st = kp_check_dim(op, "a", &p->a, 1, k, "K of w")) ||
        (st = kp_check_dim(op, "expert_offsets", &p->expert_offsets, 0, e + 1, "E + 1")) ||
        (st = kp_check_dim(op, "out", &p->out, 0, p->a.shape[0], "M of a")) ||
        (st = kp_check_dim(op, "out", &p->out, 1, n, "N of w")))
        return st;
    return KP_OK;
}
