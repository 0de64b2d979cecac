/*
 * core/ops/op_quantize_fp8.c — argument rules of kp_quantize_fp8 (kport.h).
 */
#include "internal.h"

kp_status kp_validate_quantize_fp8(kp_device *d, const void *params) {
    const char *op = "quantize_fp8";
    const kp_quantize_fp8_params *p = params;
    const kp_tensor_rule rules[] = {
        {"x", &p->x, false, false, KP_DT_FLOAT, 2, false},
        {"out", &p->out, false, true, KP_DT(KP_FP8_E4M3), 2, false},
        {"scale", &p->scale, false, true, KP_DT(KP_F32), 2, true},
    };
    kp_status st = kp_validate_tensors(op, d, rules, (int)(sizeof rules / sizeof rules[0]));
    if (st != KP_OK) return st;
    if (p->scale_layout != KP_FP8_SCALE_ROW_MAJOR && p->scale_layout != KP_FP8_SCALE_COL_MAJOR)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: scale_layout is %d; it must be KP_FP8_SCALE_ROW_MAJOR (0) or _COL_MAJOR (1)", op,
                            (int)p->scale_layout);
    if ((st = kp_check_flag(op, "scale_ue8m0", p->scale_ue8m0))) return st;
    int64_t t = p->x.shape[0], k = p->x.shape[1];
    if (k % KP_FP8_GROUP != 0)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: x has K = %lld; K must be a multiple of the group (%d)", op,
                            (long long)k, KP_FP8_GROUP);
    int64_t groups = k / KP_FP8_GROUP;
    if ((st = kp_check_dim(op, "out", &p->out, 0, t, "T of x")) ||
        (st = kp_check_dim(op, "out", &p->out, 1, k, "K of x")))
        return st;
    if (p->scale_layout == KP_FP8_SCALE_ROW_MAJOR)
        return (st = kp_check_dim(op, "scale", &p->scale, 0, t, "T of x")) ? st
               : kp_check_dim(op, "scale", &p->scale, 1, groups, "K/128");
    if ((st = kp_check_dim(op, "scale", &p->scale, 0, groups, "K/128 (column-major scales)"))) return st;
    if (p->scale.shape[1] < t)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "%s: scale.shape[1] is %lld; column-major scales need at least T (%lld) columns", op,
                            (long long)p->scale.shape[1], (long long)t);
    return KP_OK;
}
