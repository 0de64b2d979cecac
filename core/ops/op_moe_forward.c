/*
 * core/ops/op_moe_forward.c — argument rules and workspace size of kp_moe_forward.
 */
#include "internal.h"

/* *acc += count * elem_bytes rounded up to KP_MOE_WORKSPACE_ALIGN; false on overflow. */
static bool ws_add(size_t *acc, int64_t count, size_t elem_bytes) {
    size_t n;
    if (count < 0 || __builtin_mul_overflow((size_t)count, elem_bytes, &n) ||
        __builtin_add_overflow(n, (size_t)KP_MOE_WORKSPACE_ALIGN - 1, &n))
        return false;
    n -= n % KP_MOE_WORKSPACE_ALIGN;
    return !__builtin_add_overflow(*acc, n, acc);
}

bool kp_moe_forward_w8a8(const kp_moe_forward_params *p) { return p->activation_dtype == KP_FP8_E4M3; }

/* activation_dtype: 0 or x's dtype (W8A16), or KP_FP8_E4M3 (W8A8: e4m3 w13 and w2 with
 * scales, which the weight rules above already tie to K % 128 == 0). */
static kp_status kp_check_moe_forward_activations(const char *op, const kp_moe_forward_params *p) {
    if (p->activation_scale_ue8m0 != 0 && p->activation_scale_ue8m0 != 1)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: activation_scale_ue8m0 is %d; it must be 0 or 1", op,
                            (int)p->activation_scale_ue8m0);
    if (!kp_moe_forward_w8a8(p)) {
        if (p->activation_dtype != 0 && p->activation_dtype != (int32_t)p->x.dtype)
            return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                                "%s: activation_dtype is %d; it must be 0 or x's dtype (%s) for activations in x's "
                                "dtype, or KP_FP8_E4M3 (%d) for FP8 activations (W8A8)",
                                op, (int)p->activation_dtype, kp_dtype_name(p->x.dtype), (int)KP_FP8_E4M3);
        if (p->activation_scale_ue8m0)
            return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                                "%s: activation_scale_ue8m0 is set but activation_dtype does not ask for FP8 "
                                "activations (KP_FP8_E4M3)", op);
        return KP_OK;
    }
    if (p->w13.dtype != KP_FP8_E4M3 || p->w2.dtype != KP_FP8_E4M3)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: activation_dtype KP_FP8_E4M3 (W8A8) needs FP8 e4m3 w13 and w2 with their block "
                            "scales; w13 is %s and w2 is %s", op, kp_dtype_name(p->w13.dtype),
                            kp_dtype_name(p->w2.dtype));
    return KP_OK;
}

/* A shared expert's weights: x's dtype without scales, or FP8 e4m3 [N, K] with f32
 * block scales [ceil(N/128), K/128] (K % 128 == 0), x then f16/bf16. */
static kp_status check_shared_weights(const char *op, const char *wname, const kp_tensor *w, const char *sname,
                                      const kp_tensor *scale, const kp_tensor *x) {
    kp_status st;
    if (w->dtype != KP_FP8_E4M3) {
        if (scale->buffer)
            return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is given but %s is %s, not FP8", op, sname, wname,
                                kp_dtype_name(w->dtype));
        return kp_check_same_dtype(op, wname, w, "x", x);
    }
    if (!scale->buffer)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is FP8 e4m3, so %s (f32 block scales) is required", op,
                            wname, sname);
    if (w->shape[1] % 128 != 0)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %s is FP8 with K = %lld; K must be a multiple of 128", op,
                            wname, (long long)w->shape[1]);
    if ((st = kp_check_dim(op, sname, scale, 0, (w->shape[0] + 127) / 128, "ceil(N/128)")) ||
        (st = kp_check_dim(op, sname, scale, 1, w->shape[1] / 128, "K/128")))
        return st;
    if (x->dtype == KP_F32)
        return kp_set_error(KP_ERR_INVALID_DTYPE, "%s: FP8 weights take f16 or bf16 activations, not f32", op);
    return KP_OK;
}

kp_status kp_validate_moe_forward_shapes(kp_device *d, const kp_moe_forward_params *p) {
    const char *op = "moe_forward";
    const kp_tensor_rule rules[] = {
        {"x", &p->x, false, false, KP_DT(KP_F16) | KP_DT(KP_BF16) | KP_DT(KP_F32), 2, false},
        {"router_logits", &p->router_logits, false, false, KP_DT_FLOAT, 2, false},
        {"bias", &p->bias, true, false, KP_DT(KP_F32), 1, true},
        {"w13", &p->w13, false, false, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 3, false},
        {"w13_scale", &p->w13_scale, true, false, KP_DT(KP_F32), 3, true},
        {"w2", &p->w2, false, false, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 3, false},
        {"w2_scale", &p->w2_scale, true, false, KP_DT(KP_F32), 3, true},
        {"shared_w13", &p->shared_w13, true, false, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 2, false},
        {"shared_w2", &p->shared_w2, true, false, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 2, false},
        {"out", &p->out, false, true, KP_DT_FLOAT, 2, false},
        {"shared_w13_scale", &p->shared_w13_scale, true, false, KP_DT(KP_F32), 2, true},
        {"shared_w2_scale", &p->shared_w2_scale, true, false, KP_DT(KP_F32), 2, true},
    };
    kp_status st = kp_validate_tensors(op, d, rules, (int)(sizeof rules / sizeof rules[0]));
    if (st == KP_OK) st = kp_check_same_dtype(op, "out", &p->out, "x", &p->x);
    if (st == KP_OK) st = kp_check_expert_weights(op, "w13", &p->w13, "w13_scale", &p->w13_scale, &p->x);
    if (st == KP_OK) st = kp_check_expert_weights(op, "w2", &p->w2, "w2_scale", &p->w2_scale, &p->x);
    if (st != KP_OK) return st;
    int64_t t = p->x.shape[0], hidden = p->x.shape[1], e = p->w13.shape[0];
    int64_t inter = p->w13.shape[1] / 2;
    if (hidden < 1 || inter < 1 || p->w13.shape[1] % 2 != 0)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "%s: w13 must be [E, 2*inter, hidden] with inter >= 1 (got [%lld, %lld, %lld])", op,
                            (long long)e, (long long)p->w13.shape[1], (long long)p->w13.shape[2]);
    if ((st = kp_check_dim(op, "router_logits", &p->router_logits, 0, t, "T of x")) ||
        (st = kp_check_dim(op, "router_logits", &p->router_logits, 1, e, "E of w13")) ||
        (p->bias.buffer && (st = kp_check_dim(op, "bias", &p->bias, 0, e, "E of w13"))) ||
        (st = kp_check_dim(op, "w13", &p->w13, 2, hidden, "hidden of x")) ||
        (st = kp_check_dim(op, "w2", &p->w2, 0, e, "E of w13")) ||
        (st = kp_check_dim(op, "w2", &p->w2, 1, hidden, "hidden of x")) ||
        (st = kp_check_dim(op, "w2", &p->w2, 2, inter, "inter of w13")) ||
        (st = kp_check_dim(op, "out", &p->out, 0, t, "T of x")) ||
        (st = kp_check_dim(op, "out", &p->out, 1, hidden, "hidden of x")))
        return st;
    if (!p->shared_w13.buffer != !p->shared_w2.buffer)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: give both shared_w13 and shared_w2, or neither", op);
    if (p->shared_w13.buffer) {
        int64_t inter_s = p->shared_w13.shape[0] / 2;
        if (inter_s < 1 || p->shared_w13.shape[0] % 2 != 0)
            return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: shared_w13 must be [2*inter_s, hidden]", op);
        if ((st = check_shared_weights(op, "shared_w13", &p->shared_w13, "shared_w13_scale", &p->shared_w13_scale,
                                       &p->x)) ||
            (st = check_shared_weights(op, "shared_w2", &p->shared_w2, "shared_w2_scale", &p->shared_w2_scale,
                                       &p->x)) ||
            (st = kp_check_dim(op, "shared_w13", &p->shared_w13, 1, hidden, "hidden of x")) ||
            (st = kp_check_dim(op, "shared_w2", &p->shared_w2, 0, hidden, "hidden of x")) ||
            (st = kp_check_dim(op, "shared_w2", &p->shared_w2, 1, inter_s, "inter_s of shared_w13")))
            return st;
    } else if (p->shared_w13_scale.buffer || p->shared_w2_scale.buffer) {
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: shared_w13_scale / shared_w2_scale are given without a "
                            "shared expert", op);
    }
    if ((st = kp_validate_moe_routing(op, &p->routing, e))) return st;
    return kp_check_moe_forward_activations(op, p);
}

/* The layout every backend's kp_moe_forward uses, only what it writes: routing,
 * alignment, the intermediates of the T*k rows (every backend aligns with block size 1,
 * so no padding rows; SwiGLU is fused into the w13 GEMM's epilogue, so no
 * [T*k, 2*inter] region), and the shared expert's SwiGLU output; plus room to start it
 * at the next multiple of KP_MOE_WORKSPACE_ALIGN after any workspace_offset. The
 * intermediates are stored in x's dtype (bf16/f16 halve them, as vLLM and SGLang do;
 * each GEMM still accumulates in f32). A backend that pads rows must grow this.
 * W8A8 (activation_dtype KP_FP8_E4M3) stores h in e4m3 (1 byte, not x's dtype) and
 * appends, after the shared expert's region: the e4m3 x [T, hidden], x's scales f32
 * [T, hidden/128], h's scales f32 [T*k, inter/128] (row-major, kp_quantize_fp8's
 * layout), each 256-byte aligned; with an FP8 shared expert its SwiGLU output is e4m3
 * too and its scales f32 [T, inter_s/128] follow. Last, W8A8's f32 SwiGLU output
 * [max(T*k * inter, FP8 shared expert: T * inter_s)]: the GPU backends store h (then
 * h_s) there in f32 and quantize it from there; the cpu backend quantizes inside its
 * epilogue and leaves it unused. */
kp_status kp_moe_forward_workspace_bytes(const kp_moe_forward_params *p, size_t *bytes) {
    const int64_t t = p->x.shape[0], hidden = p->x.shape[1], e = p->w13.shape[0];
    const int64_t inter = p->w13.shape[1] / 2, k = p->routing.topk;
    const int64_t inter_s = p->shared_w13.buffer ? p->shared_w13.shape[0] / 2 : 0;
    int64_t pairs, rows_i, rows_h, shared, x_q;
    const size_t act = kp_dtype_size(p->x.dtype);
    const bool w8a8 = kp_moe_forward_w8a8(p);
    const bool s8 = w8a8 && inter_s && p->shared_w13.dtype == KP_FP8_E4M3; /* W8A8 shared expert */
    size_t b = KP_MOE_WORKSPACE_ALIGN - 1;
    bool ok = !__builtin_mul_overflow(t, k, &pairs) && !__builtin_mul_overflow(pairs, inter, &rows_i) &&
              !__builtin_mul_overflow(pairs, hidden, &rows_h) && !__builtin_mul_overflow(t, inter_s, &shared) &&
              !__builtin_mul_overflow(t, hidden, &x_q);
    ok = ok && ws_add(&b, pairs, 4) && ws_add(&b, pairs, 4) && ws_add(&b, pairs, 4) && /* topk_ids, weights, token_pos */
         ws_add(&b, pairs, 4) &&                                                       /* sorted_ids */
         ws_add(&b, e + 1, 4) &&                                                       /* expert_offsets */
         ws_add(&b, rows_i, w8a8 ? 1 : act) &&                                         /* SwiGLU (W8A8: e4m3) */
         ws_add(&b, rows_h, act) &&                                                    /* ·w2ᵀ */
         (!inter_s || ws_add(&b, shared, s8 ? 1 : act)) &&                             /* shared SwiGLU */
         (!w8a8 || (ws_add(&b, x_q, 1) &&                                              /* W8A8: e4m3 x */
                    ws_add(&b, x_q / 128, 4) &&                                        /* its scales */
                    ws_add(&b, rows_i / 128, 4))) &&                                   /* h's scales */
         (!s8 || ws_add(&b, shared / 128, 4)) &&                                       /* shared h's scales */
         (!w8a8 || ws_add(&b, s8 && shared > rows_i ? shared : rows_i, 4));            /* f32 h (GPU backends) */
    if (!ok)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "moe_forward: the workspace for T = %lld, topk = %lld, E = %lld, hidden = %lld, "
                            "inter = %lld is too large to address",
                            (long long)t, (long long)k, (long long)e, (long long)hidden, (long long)inter);
    *bytes = b;
    return KP_OK;
}

size_t kp_moe_forward_workspace_start(const kp_moe_forward_params *p) {
    return p->workspace_offset + (KP_MOE_WORKSPACE_ALIGN - p->workspace_offset % KP_MOE_WORKSPACE_ALIGN) %
                                     KP_MOE_WORKSPACE_ALIGN;
}

kp_status kp_moe_forward_workspace_size_sized(kp_device *d, const kp_moe_forward_params *p, size_t size,
                                              size_t *bytes) {
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_moe_forward_workspace_size: d is NULL");
    if (!p) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_moe_forward_workspace_size: p is NULL");
    if (!bytes) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_moe_forward_workspace_size: bytes is NULL");
    kp_moe_forward_params buf;
    const void *adopted;
    kp_status st = kp_abi_adopt("kp_moe_forward_workspace_size", "params", p, size,
                                kp_abi_0_1_params_size[KP_OP_MOE_FORWARD], sizeof buf, &buf, &adopted);
    if (st != KP_OK) return st;
    p = adopted;
    st = kp_validate_moe_forward_shapes(d, p);
    if (st == KP_OK) st = kp_moe_forward_workspace_bytes(p, bytes);
    return st;
}

/* 0.1's entry point: 0.1's kp_moe_forward_params. */
kp_status(kp_moe_forward_workspace_size)(kp_device *d, const kp_moe_forward_params *p, size_t *bytes) {
    return kp_moe_forward_workspace_size_sized(d, p, 0, bytes);
}

kp_status kp_validate_moe_forward(kp_device *d, const void *params) {
    const char *op = "moe_forward";
    const kp_moe_forward_params *p = params;
    size_t need = 0;
    kp_status st = kp_validate_moe_forward_shapes(d, p);
    if (st == KP_OK) st = kp_moe_forward_workspace_bytes(p, &need);
    if (st != KP_OK) return st;
    const kp_buffer *ws = p->workspace;
    if (!ws)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: workspace is NULL; allocate kp_moe_forward_workspace_size bytes (%zu)", op, need);
    if (ws->device != d)
        return kp_set_error(KP_ERR_DEVICE_MISMATCH, "%s: workspace is on device %d, the stream on device %d", op,
                            ws->device->global_index, d->global_index);
    if (kp_buffer_is_address_space(ws))
        return kp_set_error(KP_ERR_UNSUPPORTED,
                            "%s: workspace is kp_device_memory (device addresses); wrap the workspace memory with "
                            "kp_buffer_wrap once and pass that buffer", op);
    if (p->workspace_offset > ws->size || ws->size - p->workspace_offset < need)
        return kp_set_error(KP_ERR_OUT_OF_BOUNDS,
                            "%s: workspace has %zu bytes after offset %zu; %zu are needed", op,
                            p->workspace_offset <= ws->size ? ws->size - p->workspace_offset : 0,
                            p->workspace_offset, need);
    const kp_tensor *all[] = {&p->x,          &p->router_logits, &p->bias,      &p->w13,
                              &p->w13_scale,  &p->w2,            &p->w2_scale,  &p->shared_w13,
                              &p->shared_w2,  &p->out,           &p->shared_w13_scale, &p->shared_w2_scale};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        size_t lo, hi;
        if (all[i]->buffer != ws) continue;
        kp_tensor_byte_range(all[i], &lo, &hi);
        if (lo < p->workspace_offset + need && p->workspace_offset < hi)
            return kp_set_error(KP_ERR_ALIASING, "%s: the workspace overlaps a tensor argument", op);
    }
    return KP_OK;
}
