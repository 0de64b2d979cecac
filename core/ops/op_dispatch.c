/*
 * core/ops/op_dispatch.c — the public op entry points: check the stream and params,
 * run the op's validator (core/ops/op_<name>.c), then call the backend's slot.
 * kp_op_supported runs the same path with dry_run set, so capability and dispatch
 * cannot drift apart.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#include <math.h>

static const kp_op_validate_fn validators[KP_OP_COUNT] = {
    [KP_OP_ATTENTION_PREFILL] = kp_validate_attention_prefill,
    [KP_OP_ATTENTION_DECODE] = kp_validate_attention_decode,
    [KP_OP_MLA_DECODE] = kp_validate_mla_decode,
    [KP_OP_MOE_GATE] = kp_validate_moe_gate,
    [KP_OP_MOE_ALIGN] = kp_validate_moe_align,
    [KP_OP_GROUPED_GEMM] = kp_validate_grouped_gemm,
    [KP_OP_MOE_COMBINE] = kp_validate_moe_combine,
    [KP_OP_MOE_FORWARD] = kp_validate_moe_forward,
    [KP_OP_KV_CACHE_STORE] = kp_validate_kv_cache_store,
    [KP_OP_QUANTIZE_FP8] = kp_validate_quantize_fp8,
};

kp_status kp_check_same_dtype(const char *op, const char *name, const kp_tensor *t, const char *ref_name,
                              const kp_tensor *ref) {
    if (t->dtype != ref->dtype)
        return kp_set_error(KP_ERR_INVALID_DTYPE, "%s: %s has dtype %s but %s is %s; they must match", op,
                            name, kp_dtype_name(t->dtype), ref_name, kp_dtype_name(ref->dtype));
    return KP_OK;
}

kp_status kp_check_scale(const char *op, float scale) {
    if (!(scale > 0.0f) || isinf(scale))
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: softmax_scale is %g; it must be finite and > 0 (pass it explicitly)", op,
                            (double)scale);
    return KP_OK;
}

kp_status kp_check_flag(const char *op, const char *name, int32_t v) {
    if (v != 0 && v != 1)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is %d; it must be 0 or 1", op, name, (int)v);
    return KP_OK;
}

kp_status kp_check_paged_kv(const char *op, const kp_tensor *q, const kp_tensor *block_table,
                            const kp_tensor *seq_lens, const kp_tensor *out, const kp_tensor *lse,
                            int64_t dv, int32_t num_splits) {
    int64_t b = q->shape[0], s_q = q->shape[1], h_q = q->shape[2];
    kp_status st;
    if (s_q < 1 || h_q < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: q must have s_q >= 1 and h_q >= 1 (got %lld, %lld)",
                            op, (long long)s_q, (long long)h_q);
    if ((st = kp_check_dim(op, "block_table", block_table, 0, b, "B of q")) ||
        (st = kp_check_dim(op, "seq_lens", seq_lens, 0, b, "B of q")) ||
        (st = kp_check_dim(op, "out", out, 0, b, "B of q")) ||
        (st = kp_check_dim(op, "out", out, 1, s_q, "s_q of q")) ||
        (st = kp_check_dim(op, "out", out, 2, h_q, "h_q of q")) ||
        (st = kp_check_dim(op, "out", out, 3, dv, "the value head dim")))
        return st;
    if (b > 0 && block_table->shape[1] < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: block_table needs at least one column", op);
    if (lse->buffer && ((st = kp_check_dim(op, "lse", lse, 0, b, "B")) ||
                        (st = kp_check_dim(op, "lse", lse, 1, h_q, "h_q")) ||
                        (st = kp_check_dim(op, "lse", lse, 2, s_q, "s_q"))))
        return st;
    if (num_splits < 0 || num_splits > 1024)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: num_splits is %d; it must be 0 (automatic) .. 1024",
                            op, (int)num_splits);
    return KP_OK;
}

/* The op's validator, then the params a backend sees (*out: params; fwd for
 * moe_forward, whose backends see an aligned workspace: KP_MOE_WORKSPACE_ALIGN; gemm for
 * grouped_gemm, whose backends see the masked layout's a and out as 2-D views). */
static kp_status op_prepare(kp_op op, kp_device *d, const void *params, kp_moe_forward_params *fwd,
                            kp_grouped_gemm_params *gemm, const void **out) {
    if (!params) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_%s: params is NULL", kp_op_name(op));
    kp_status st = validators[op](d, params);
    if (st != KP_OK) return st;
    *out = params;
    if (op == KP_OP_MOE_FORWARD) {
        *fwd = *(const kp_moe_forward_params *)params;
        fwd->workspace_offset = kp_moe_forward_workspace_start(fwd);
        *out = fwd;
    } else if (op == KP_OP_GROUPED_GEMM) {
        if ((st = kp_grouped_gemm_view(params, gemm)) != KP_OK) return st;
        *out = gemm;
    }
    return KP_OK;
}

kp_status kp_op_dispatch(kp_op op, kp_stream *s, kp_device *d, const void *params, int dry_run) {
    kp_moe_forward_params fwd;
    kp_grouped_gemm_params gemm;
    const void *p = NULL;
    kp_status st = op_prepare(op, d, params, &fwd, &gemm, &p);
    return st == KP_OK ? d->iface->ops[op](op, s, p, dry_run) : st;
}

/* ---- the growable ABI (kport.h, "a growable ABI") ---- */


/* This library's size of op's params struct: kport.h's kp_op_params_size, compiled
 * here, is this library's (0: an op added later, whose params pass through unsized). */
static size_t params_size(kp_op op) { return kp_op_params_size(op); }

/* Room for any op's params at this library's size. */
typedef union params_buf {
    kp_attention_prefill_params prefill;
    kp_attention_decode_params decode;
    kp_mla_decode_params mla;
    kp_moe_gate_params gate;
    kp_moe_align_params align;
    kp_grouped_gemm_params gemm;
    kp_moe_combine_params combine;
    kp_moe_forward_params forward;
    kp_kv_cache_store_params kv_store;
    kp_quantize_fp8_params quantize_fp8;
} params_buf;

kp_status kp_abi_adopt(const char *fn, const char *what, const void *p, size_t size, size_t v01, size_t cur,
                       void *buf, const void **out) {
    *out = p;
    if (!p || cur == 0) return KP_OK; /* NULL is the caller's to report */
    if (size == 0) size = v01;
    if (size == cur) return KP_OK;
    if (size < v01)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: the %s struct is %zu bytes; kport 0.1's was already %zu (a size from "
                            "another struct?)", fn, what, size, v01);
    if (size > cur) {
        const unsigned char *extra = (const unsigned char *)p + cur;
        for (size_t i = 0; i < size - cur; i++)
            if (extra[i])
                return kp_set_error(KP_ERR_UNSUPPORTED,
                                    "%s: the caller's %s struct (%zu bytes) sets a field past the %zu bytes "
                                    "this kport knows (byte %zu): it was built against a newer kport.h",
                                    fn, what, size, cur, cur + i);
        return KP_OK; /* the known prefix is read in place */
    }
    memset(buf, 0, cur);
    memcpy(buf, p, size);
    *out = buf;
    return KP_OK;
}

/* The caller's params at this library's size: p itself when the sizes agree (the usual
 * case: no copy), else a copy into buf with the fields the caller did not have zeroed. */
static kp_status params_adopt(kp_op op, const void *p, size_t size, params_buf *buf, const void **out) {
    const size_t cur = params_size(op);
    /* an op added after 0.1 (kv_cache_store, quantize_fp8: 0.2): its first size, which is
     * today's; when its struct grows, freeze that size here as 0.1's are in abi_0_1.c */
    const size_t v01 = (unsigned)op < 8 ? kp_abi_0_1_params_size[op] : cur;
    if (!p || size == cur || (size == 0 && v01 == cur)) { /* the usual case, before naming anything */
        *out = p;
        return KP_OK;
    }
    char fn[64];
    snprintf(fn, sizeof fn, "kp_%s", kp_op_name(op));
    return kp_abi_adopt(fn, "params", p, size, v01, cur, buf, out);
}

/* The plain kp_<op> functions are 0.1's entry points (size 0: 0.1's size); the
 * parenthesised names keep kport.h's macros of the same names from expanding. */
#define KP_OP_ENTRY(fn, op, type)                                                              \
    kp_status kp_##fn##_sized(kp_stream *s, const type *p, size_t size) {                      \
        if (!s) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_" #fn ": s (the stream) is NULL"); \
        params_buf buf;                                                                        \
        const void *adopted;                                                                   \
        kp_status st = params_adopt(op, p, size, &buf, &adopted);                              \
        return st == KP_OK ? kp_op_dispatch(op, s, s->device, adopted, 0) : st;               \
    }                                                                                          \
    kp_status(kp_##fn)(kp_stream * s, const type *p) { return kp_##fn##_sized(s, p, 0); }

KP_OP_ENTRY(attention_prefill, KP_OP_ATTENTION_PREFILL, kp_attention_prefill_params)
KP_OP_ENTRY(attention_decode, KP_OP_ATTENTION_DECODE, kp_attention_decode_params)
KP_OP_ENTRY(mla_decode, KP_OP_MLA_DECODE, kp_mla_decode_params)
KP_OP_ENTRY(moe_gate, KP_OP_MOE_GATE, kp_moe_gate_params)
KP_OP_ENTRY(moe_align, KP_OP_MOE_ALIGN, kp_moe_align_params)
KP_OP_ENTRY(grouped_gemm, KP_OP_GROUPED_GEMM, kp_grouped_gemm_params)
KP_OP_ENTRY(moe_combine, KP_OP_MOE_COMBINE, kp_moe_combine_params)
KP_OP_ENTRY(moe_forward, KP_OP_MOE_FORWARD, kp_moe_forward_params)
KP_OP_ENTRY(kv_cache_store, KP_OP_KV_CACHE_STORE, kp_kv_cache_store_params)
KP_OP_ENTRY(quantize_fp8, KP_OP_QUANTIZE_FP8, kp_quantize_fp8_params)

kp_status kp_op_supported_sized(kp_device *d, kp_op op, const void *params, size_t size) {
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_op_supported: d is NULL");
    if ((unsigned)op >= KP_OP_COUNT)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_op_supported: op %d is not a kp_op", (int)op);
    params_buf buf;
    const void *adopted;
    kp_status st = params_adopt(op, params, size, &buf, &adopted);
    return st == KP_OK ? kp_op_dispatch(op, d->default_stream, d, adopted, 1) : st;
}

kp_status(kp_op_supported)(kp_device *d, kp_op op, const void *params) { return kp_op_supported_sized(d, op, params, 0); }

kp_status kp_op_kernel_sized(kp_device *d, kp_op op, const void *params, size_t size, char *name, size_t cap) {
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_op_kernel: d is NULL");
    if ((unsigned)op >= KP_OP_COUNT)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_op_kernel: op %d is not a kp_op", (int)op);
    if (!name) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_op_kernel: name is NULL");
    if (cap < KP_KERNEL_NAME_MAX)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_op_kernel: cap is %zu; name needs KP_KERNEL_NAME_MAX (%d) "
                            "bytes", cap, KP_KERNEL_NAME_MAX);
    params_buf buf;
    const void *adopted, *p = NULL;
    kp_moe_forward_params fwd;
    kp_grouped_gemm_params gemm;
    kp_status st = params_adopt(op, params, size, &buf, &adopted);
    if (st == KP_OK) st = op_prepare(op, d, adopted, &fwd, &gemm, &p);
    if (st != KP_OK) return st;
    if (!kp_backend_has_slot(d->iface, op_kernel))
        return kp_set_error(KP_ERR_UNSUPPORTED, "kp_op_kernel: the %s backend's plugin predates kp_op_kernel (its "
                            "interface has no op_kernel slot); kp_op_supported still answers whether %s runs",
                            d->iface->name, kp_op_name(op));
    char got[KP_KERNEL_NAME_MAX] = {0}; /* the caller's buffer is written only on success */
    st = d->iface->op_kernel(op, d->default_stream, p, got, sizeof got);
    if (st != KP_OK) return st;
    if (!got[0] || got[sizeof got - 1])
        return kp_set_error(KP_ERR_INTERNAL, "kp_op_kernel: the %s backend gave %s for %s (a bug)", d->iface->name,
                            got[0] ? "an unterminated name" : "no kernel name", kp_op_name(op));
    memcpy(name, got, strlen(got) + 1);
    return KP_OK;
}
