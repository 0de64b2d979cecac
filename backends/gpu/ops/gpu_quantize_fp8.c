/*
 * backends/gpu/ops/gpu_quantize_fp8.c — kp_quantize_fp8 on the GPU backends
 * (kernels/moe/quantize_fp8.cl): one work-group of 128 per (token, group). Past the
 * grid's limit (K / 128 above 65535 groups) it is KP_ERR_UNSUPPORTED.
 */
#include "gpu_ops.h"

#include <stdio.h>

static const char kernel[] = "kp_quantize_fp8"; /* one generation */

void kp_gpu_quant_fp8_options(kp_dtype dt, char *buf, size_t n) { snprintf(buf, n, "%s", kp_gpu_dtype_define(dt)); }

kp_status kp_gpu_quantize_fp8(kp_gpu_ctx *c, const kp_quantize_fp8_params *p, int dry_run) {
    char opts[64];
    kp_gpu_quant_fp8_options(p->x.dtype, opts, sizeof opts);
    kp_status st = kp_gpu_variant_ok(c, KP_GPU_SRC_QUANT_FP8, opts);
    int64_t t = p->x.shape[0], groups = p->x.shape[1] / KP_FP8_GROUP;
    if (st == KP_OK && groups > 65535)
        st = c->host->set_error(KP_ERR_UNSUPPORTED, "quantize_fp8 on %s: K / 128 is %lld; the kernel takes up to 65535 "
                                "groups per token (a grid dimension's limit)", c->t->name, (long long)groups);
    kp_gpu_kernel_note(c, KP_GPU_NOTE_OP, 1, kernel);
    if (st != KP_OK || dry_run || t == 0 || groups == 0) return st;
    const int col = p->scale_layout == KP_FP8_SCALE_COL_MAJOR;
    kp_quant_fp8_kargs ka = {
        .x_off = kp_gpu_elem_offset(&p->x), .x_ld = p->x.strides[0],
        .out_off = kp_gpu_elem_offset(&p->out), .out_ld = p->out.strides[0],
        .s_off = kp_gpu_elem_offset(&p->scale), .s_t = col ? 1 : p->scale.strides[0],
        .s_g = col ? p->scale.strides[0] : 1, .ue8m0 = p->scale_ue8m0,
    };
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_QUANT_FP8, opts, kernel);
    kp_gpu_arg_tensor(&l, &p->x), kp_gpu_arg_tensor(&l, &p->out), kp_gpu_arg_tensor(&l, &p->scale);
    kp_gpu_arg_kargs(&l, &ka, sizeof ka);
    l.groups[0] = (uint64_t)t, l.groups[1] = (uint64_t)groups; /* tokens first: CUDA's y takes 65535 */
    l.local[0] = KP_FP8_GROUP;
    st = kp_gpu_enqueue(c, &l);
    return st == KP_OK ? st : c->host->add_context(st, "quantize_fp8");
}

/* The same kernel on views (row-major scales): kp_moe_forward's W8A8 chain. */
kp_quant_fp8_kargs kp_gpu_quant_fp8_kargs(kp_gpu_view x, kp_gpu_view out, kp_gpu_view scale, int ue8m0) {
    kp_quant_fp8_kargs ka = {
        .x_off = x.off, .x_ld = x.ld, .out_off = out.off, .out_ld = out.ld,
        .s_off = scale.off, .s_t = scale.ld, .s_g = 1, .ue8m0 = ue8m0,
    };
    return ka;
}

void kp_gpu_quant_fp8_args(kp_gpu_launch *l, kp_gpu_view x, kp_gpu_view out, kp_gpu_view scale,
                           const kp_quant_fp8_kargs *ka) {
    kp_gpu_arg_view(l, x), kp_gpu_arg_view(l, out), kp_gpu_arg_view(l, scale);
    kp_gpu_arg_kargs(l, ka, sizeof *ka);
}

kp_status kp_gpu_quant_fp8_run(kp_gpu_ctx *c, kp_gpu_view x, kp_dtype dt, kp_gpu_view out, kp_gpu_view scale,
                               int64_t t, int64_t k, int ue8m0, int dry_run) {
    char opts[64];
    kp_gpu_quant_fp8_options(dt, opts, sizeof opts);
    kp_status st = kp_gpu_variant_ok(c, KP_GPU_SRC_QUANT_FP8, opts);
    const int64_t groups = k / KP_FP8_GROUP;
    if (st == KP_OK && (groups > 65535 || t > INT32_MAX))
        st = c->host->set_error(KP_ERR_UNSUPPORTED, "quantize_fp8 on %s: %lld rows of %lld groups; the kernel takes up "
                                "to 65535 groups per row (a grid dimension's limit)", c->t->name, (long long)t,
                                (long long)groups);
    kp_gpu_kernel_note(c, KP_GPU_NOTE_OP, 1, kernel);
    if (st != KP_OK || dry_run || t == 0 || groups == 0) return st;
    kp_quant_fp8_kargs ka = kp_gpu_quant_fp8_kargs(x, out, scale, ue8m0);
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_QUANT_FP8, opts, kernel);
    kp_gpu_quant_fp8_args(&l, x, out, scale, &ka);
    l.groups[0] = (uint64_t)t, l.groups[1] = (uint64_t)groups;
    l.local[0] = KP_FP8_GROUP;
    st = kp_gpu_enqueue(c, &l);
    return st == KP_OK ? st : c->host->add_context(st, "quantize_fp8");
}
