/*
 * core/ops/op_grouped_gemm.c — argument rules of kp_grouped_gemm, and the FP8
 * block-scale rules kp_moe_forward shares, and W8A8's activation scales.
 */
#include "internal.h"

#include <stdint.h>

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

/* W8A8: a e4m3 needs e4m3 weights and a_scale (f32 per 1 x 128 group, either of
 * kp_quantize_fp8's layouts), and a_scale needs an e4m3 a. */
static kp_status kp_check_activation_scales(const char *op, const kp_grouped_gemm_params *p) {
    if (p->a.dtype != KP_FP8_E4M3) {
        if (p->a_scale.buffer)
            return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: a_scale is given but a is %s, not FP8 e4m3", op,
                                kp_dtype_name(p->a.dtype));
        if (p->a_scale_layout != KP_FP8_SCALE_ROW_MAJOR)
            return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: a_scale_layout is %d but a is %s, not FP8 e4m3 "
                                "(it must stay 0)", op, (int)p->a_scale_layout, kp_dtype_name(p->a.dtype));
        return KP_OK;
    }
    if (p->w.dtype != KP_FP8_E4M3)
        return kp_set_error(KP_ERR_INVALID_DTYPE, "%s: a is FP8 e4m3 (W8A8), so w must be FP8 e4m3 too, not %s", op,
                            kp_dtype_name(p->w.dtype));
    if (!p->a_scale.buffer)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: a is FP8 e4m3, so a_scale (f32 per-token-group scales, kp_quantize_fp8's) is "
                            "required", op);
    if (p->a_scale_layout != KP_FP8_SCALE_ROW_MAJOR && p->a_scale_layout != KP_FP8_SCALE_COL_MAJOR)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: a_scale_layout is %d; it must be KP_FP8_SCALE_ROW_MAJOR (0) or _COL_MAJOR (1)", op,
                            (int)p->a_scale_layout);
    int64_t m = p->a.shape[0], k = p->a.shape[1];
    if (k % KP_FP8_BLOCK != 0)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: a is FP8 with K = %lld; K must be a multiple of %d", op,
                            (long long)k, KP_FP8_BLOCK);
    kp_status st;
    if (p->a_scale_layout == KP_FP8_SCALE_ROW_MAJOR)
        return (st = kp_check_dim(op, "a_scale", &p->a_scale, 0, m, "M of a")) ? st
               : kp_check_dim(op, "a_scale", &p->a_scale, 1, k / KP_FP8_BLOCK, "K/128");
    if ((st = kp_check_dim(op, "a_scale", &p->a_scale, 0, k / KP_FP8_BLOCK, "K/128 (column-major scales)")))
        return st;
    if (p->a_scale.shape[1] < m)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "%s: a_scale.shape[1] is %lld; column-major scales need at least M (%lld) columns", op,
                            (long long)p->a_scale.shape[1], (long long)m);
    return KP_OK;
}

/* The masked layout's 3-D a [E, max_m, K] / out [E, max_m, N] as the 2-D [E * max_m, .]
 * views backends see (a 2-D one passes as it is). */
static kp_status flat_rows(const char *op, const char *name, const kp_tensor *t, kp_tensor *out) {
    *out = *t;
    if (t->ndim != 3) return KP_OK;
    int64_t rows;
    if (t->shape[0] < 0 || t->shape[1] < 0 || __builtin_mul_overflow(t->shape[0], t->shape[1], &rows) ||
        rows > INT32_MAX)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %s is [%lld, %lld, %lld]; E * max_m must be 0 .. 2^31 - 1", op,
                            name, (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2]);
    int64_t want;
    if (t->shape[0] > 1 && t->shape[1] > 0 &&
        (__builtin_mul_overflow(t->shape[1], t->strides[1], &want) || t->strides[0] != want))
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %s has strides [%lld, %lld, .]; the masked layout needs its "
                            "first two dims one flat row dim (stride[0] = max_m * stride[1])", op, name,
                            (long long)t->strides[0], (long long)t->strides[1]);
    out->ndim = 2;
    out->shape[0] = rows, out->shape[1] = t->shape[2];
    out->strides[0] = t->strides[1], out->strides[1] = t->strides[2];
    out->shape[2] = 0, out->strides[2] = 0;
    return KP_OK;
}

kp_status kp_grouped_gemm_view(const kp_grouped_gemm_params *p, kp_grouped_gemm_params *view) {
    const char *op = "grouped_gemm";
    *view = *p;
    const int masked = p->masked_m.buffer != NULL;
    if (masked && p->expert_offsets.buffer)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: both expert_offsets and masked_m are given; give exactly one (masked_m: the "
                            "masked [E, max_m, K] layout)", op);
    if (!masked && !p->expert_offsets.buffer)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: neither expert_offsets nor masked_m is given; give exactly one", op);
    if (!masked) return KP_OK;
    if (p->a.ndim != 2 && p->a.ndim != 3)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: masked layout: a has %d dims; it must be [E, max_m, K] or "
                            "[E * max_m, K]", op, (int)p->a.ndim);
    if (p->out.ndim != p->a.ndim)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: masked layout: out has %d dims but a has %d; they must match",
                            op, (int)p->out.ndim, (int)p->a.ndim);
    if (p->a.ndim == 3 && (p->out.shape[0] != p->a.shape[0] || p->out.shape[1] != p->a.shape[1]))
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: masked layout: out is [%lld, %lld, .] but a is [%lld, %lld, "
                            ".]; E and max_m must match", op, (long long)p->out.shape[0],
                            (long long)p->out.shape[1], (long long)p->a.shape[0], (long long)p->a.shape[1]);
    kp_status st = flat_rows(op, "a", &p->a, &view->a);
    if (st == KP_OK) st = flat_rows(op, "out", &p->out, &view->out);
    return st;
}

/* The masked layout's max_m (rows per expert) of a validated view. */
static kp_status check_masked(const char *op, const kp_grouped_gemm_params *q, const kp_grouped_gemm_params *p) {
    kp_status st;
    int64_t e = q->w.shape[0], m = q->a.shape[0];
    if ((st = kp_check_dim(op, "masked_m", &q->masked_m, 0, e, "E of w")))
        return st;
    if (p->a.ndim == 3 && p->a.shape[0] != e)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: masked layout: a is [%lld, max_m, K] but w has E = %lld", op,
                            (long long)p->a.shape[0], (long long)e);
    if (m % e != 0)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: masked layout: a has %lld rows, not a multiple of E = %lld "
                            "(it must be [E * max_m, K])", op, (long long)m, (long long)e);
    return KP_OK;
}

kp_status kp_validate_grouped_gemm(kp_device *d, const void *params) {
    const char *op = "grouped_gemm";
    kp_grouped_gemm_params view;
    kp_status st = kp_grouped_gemm_view(params, &view);
    if (st != KP_OK) return st;
    const kp_grouped_gemm_params *p = &view;
    const int masked = p->masked_m.buffer != NULL;
    const kp_tensor_rule rules[] = {
        {"a", &p->a, false, false, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 2, false},
        {"w", &p->w, false, false, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 3, false},
        {"w_scale", &p->w_scale, true, false, KP_DT(KP_F32), 3, true},
        {"expert_offsets", &p->expert_offsets, masked, false, KP_DT(KP_I32), 1, true},
        {"out", &p->out, false, true, KP_DT_FLOAT, 2, false},
        {"a_scale", &p->a_scale, true, false, KP_DT(KP_F32), 2, false},
        {"masked_m", &p->masked_m, true, false, KP_DT(KP_I32), 1, true},
    };
    const int a_fp8 = p->a.dtype == KP_FP8_E4M3;
    st = kp_validate_tensors(op, d, rules, (int)(sizeof rules / sizeof rules[0]));
    if (st == KP_OK && !a_fp8) st = kp_check_same_dtype(op, "out", &p->out, "a", &p->a);
    if (st == KP_OK) st = kp_check_activation_scales(op, p);
    if (st == KP_OK) st = kp_check_expert_weights(op, "w", &p->w, "w_scale", &p->w_scale, &p->a);
    if (st != KP_OK) return st;
    int64_t e = p->w.shape[0], n = p->w.shape[1], k = p->w.shape[2];
    if (e < 1 || n < 1 || k < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: w must have E, N, K >= 1 (got %lld, %lld, %lld)", op,
                            (long long)e, (long long)n, (long long)k);
    if ((st = kp_check_dim(op, "a", &p->a, 1, k, "K of w")) ||
        (!masked && (st = kp_check_dim(op, "expert_offsets", &p->expert_offsets, 0, e + 1, "E + 1"))) ||
        (masked && (st = check_masked(op, p, params))) ||
        (st = kp_check_dim(op, "out", &p->out, 0, p->a.shape[0], "M of a")) ||
        (st = kp_check_dim(op, "out", &p->out, 1, n, "N of w")))
        return st;
    return KP_OK;
}
