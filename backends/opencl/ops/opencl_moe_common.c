/*
 * backends/opencl/ops/opencl_moe_common.c — argument lists, views, and the gate, align
 * and combine launchers the MoE ops share (the grouped GEMM's is in
 * opencl_grouped_gemm.c). Kernels: kernels/moe/moe_gate.cl, moe_align.cl, moe_combine.cl.
 */
#include "opencl_moe_common.h"

#include <stdio.h>

/* The plugin does not link libkport: its own element sizes. */
static size_t elem_size(kp_dtype t) {
    return t == KP_F16 || t == KP_BF16 ? 2 : t == KP_FP8_E4M3 ? 1 : 4;
}

kp_ocl_moe_view kp_ocl_moe_view_of(const kp_tensor *t) {
    kp_ocl_moe_view v = {NULL, 0, 0};
    if (!t->buffer) return v;
    size_t es = elem_size(t->dtype);
    v.mem = kp_ocl_mem(t->buffer);
    v.off = (int64_t)(t->offset / (es ? es : 1));
    v.ld = t->ndim >= 2 ? t->strides[0] : 1;
    return v;
}

kp_ocl_moe_view kp_ocl_moe_view_bytes(const kp_buffer *b, size_t byte_off, size_t elem_size, int64_t ld) {
    kp_ocl_moe_view v = {kp_ocl_mem(b), (int64_t)(byte_off / elem_size), ld};
    return v;
}

const char *kp_ocl_moe_dtype_define(kp_dtype t) {
    return t == KP_F16 ? "-DKP_DTYPE_F16" : t == KP_BF16 ? "-DKP_DTYPE_BF16" : "-DKP_DTYPE_F32";
}

static kp_status kernel(kp_stream *s, kp_ocl_source_id src, const char *opts, const char *name, kp_ocl_args *a) {
    a->next = 0;
    a->err = CL_SUCCESS;
    a->failed = 0;
    return kp_ocl_kernel_create(kp_ocl_dev(s->device), src, opts, name, &a->k, NULL);
}

static kp_status no_fit(const char *op, size_t need, uint64_t have) {
    return kp_ocl_host()->set_error(KP_ERR_UNSUPPORTED,
                                    "%s: the opencl kernel needs %zu bytes of local memory; this device has %llu",
                                    op, need, (unsigned long long)have);
}

/* ---- gate ---- */

#define GATE_WG 128

kp_status kp_ocl_moe_gate_run(kp_stream *s, kp_ocl_moe_view logits, kp_dtype dt, int64_t t, int64_t e,
                              kp_ocl_moe_view bias, const kp_moe_routing *r, kp_ocl_moe_view ids, kp_ocl_moe_view weights,
                              int dry_run) {
    size_t lmem = (512 * 2 + GATE_WG + 32 * 3) * 4;
    uint64_t have = s->device->info.local_mem_bytes;
    if (have && lmem > have) return no_fit("moe_gate", lmem, have);
    if (dry_run || t == 0) return KP_OK;
    char opts[96];
    snprintf(opts, sizeof opts, "%s -DKP_GATE_WG=%d", kp_ocl_moe_dtype_define(dt), GATE_WG);
    kp_ocl_args a;
    kp_status st = kernel(s, KP_OCL_SRC_MOE_MOE_GATE, opts, "kp_moe_gate", &a);
    if (st != KP_OK) return st;
    kp_ocl_arg_mem(&a, logits.mem);
    kp_ocl_arg_i64(&a, logits.off);
    kp_ocl_arg_i64(&a, logits.ld);
    kp_ocl_arg_mem(&a, bias.mem);
    kp_ocl_arg_i64(&a, bias.off);
    kp_ocl_arg_i32(&a, bias.mem != NULL);
    kp_ocl_arg_i32(&a, e);
    kp_ocl_arg_i32(&a, r->topk);
    kp_ocl_arg_i32(&a, r->n_group);
    kp_ocl_arg_i32(&a, r->topk_group);
    kp_ocl_arg_i32(&a, r->scoring == KP_MOE_SCORING_SIGMOID);
    kp_ocl_arg_i32(&a, r->renormalize);
    kp_ocl_arg_f32(&a, r->route_scale);
    kp_ocl_arg_mem(&a, ids.mem);
    kp_ocl_arg_i64(&a, ids.off);
    kp_ocl_arg_i64(&a, ids.ld);
    kp_ocl_arg_mem(&a, weights.mem);
    kp_ocl_arg_i64(&a, weights.off);
    kp_ocl_arg_i64(&a, weights.ld);
    size_t global[1] = {(size_t)t * GATE_WG}, local[1] = {GATE_WG};
    return kp_ocl_args_launch(&a, kp_ocl_queue(s), "kp_moe_gate", 1, global, local);
}

/* ---- align ---- */

#define ALIGN_WG 256

kp_status kp_ocl_moe_align_run(kp_stream *s, kp_ocl_moe_view ids, int64_t pairs, int32_t n_exp, int32_t block,
                               kp_ocl_moe_view sorted, int64_t sorted_len, kp_ocl_moe_view offsets, kp_ocl_moe_view pos,
                               int dry_run) {
    /* two variants: up to 512 experts (small local arrays), up to the core's 4096 */
    int max_e = n_exp <= 512 ? 512 : 4096;
    size_t lmem = ((size_t)max_e * 2 + 1 + ALIGN_WG + 1) * 4; /* the scan kernel's, the largest */
    uint64_t have = s->device->info.local_mem_bytes;
    if (have && lmem > have) return no_fit("moe_align", lmem, have);
    if (dry_run) return KP_OK;
    const kp_host_services *h = kp_ocl_host();
    int64_t chunk = h->tuning_get(&s->device->info, "moe_align", "chunk", 4096);
    if (chunk < n_exp) chunk = n_exp;
    if (chunk < ALIGN_WG) chunk = ALIGN_WG;
    int64_t nchunks = pairs / chunk;
    if (nchunks < 1) nchunks = 1;
    if (pairs == 0) nchunks = 0;
    char opts[96];
    snprintf(opts, sizeof opts, "-DKP_ALIGN_WG=%d -DKP_ALIGN_MAX_E=%d", ALIGN_WG, max_e);
    cl_command_queue q = kp_ocl_queue(s);
    size_t local[1] = {ALIGN_WG}, global[1];
    kp_ocl_args a;
    kp_status st = KP_OK;
    if (nchunks > 1) {
        if ((st = kernel(s, KP_OCL_SRC_MOE_MOE_ALIGN, opts, "kp_moe_align_hist", &a)) != KP_OK) return st;
        kp_ocl_arg_mem(&a, ids.mem);
        kp_ocl_arg_i64(&a, ids.off);
        kp_ocl_arg_i32(&a, pairs);
        kp_ocl_arg_i32(&a, n_exp);
        kp_ocl_arg_i32(&a, chunk);
        kp_ocl_arg_i32(&a, nchunks);
        kp_ocl_arg_mem(&a, sorted.mem);
        kp_ocl_arg_i64(&a, sorted.off);
        global[0] = (size_t)nchunks * ALIGN_WG;
        if ((st = kp_ocl_args_launch(&a, q, "kp_moe_align_hist", 1, global, local)) != KP_OK) return st;
    }
    if ((st = kernel(s, KP_OCL_SRC_MOE_MOE_ALIGN, opts, "kp_moe_align_scan", &a)) != KP_OK) return st;
    kp_ocl_arg_mem(&a, ids.mem);
    kp_ocl_arg_i64(&a, ids.off);
    kp_ocl_arg_mem(&a, sorted.mem);
    kp_ocl_arg_i64(&a, sorted.off);
    kp_ocl_arg_i32(&a, sorted_len);
    kp_ocl_arg_mem(&a, pos.mem);
    kp_ocl_arg_i64(&a, pos.off);
    kp_ocl_arg_mem(&a, offsets.mem);
    kp_ocl_arg_i64(&a, offsets.off);
    kp_ocl_arg_i32(&a, pairs);
    kp_ocl_arg_i32(&a, n_exp);
    kp_ocl_arg_i32(&a, chunk);
    kp_ocl_arg_i32(&a, nchunks);
    kp_ocl_arg_i32(&a, block);
    global[0] = ALIGN_WG;
    if ((st = kp_ocl_args_launch(&a, q, "kp_moe_align_scan", 1, global, local)) != KP_OK) return st;
    if (nchunks == 0) return KP_OK;
    if ((st = kernel(s, KP_OCL_SRC_MOE_MOE_ALIGN, opts, "kp_moe_align_scatter", &a)) != KP_OK) return st;
    kp_ocl_arg_mem(&a, ids.mem);
    kp_ocl_arg_i64(&a, ids.off);
    kp_ocl_arg_i32(&a, pairs);
    kp_ocl_arg_i32(&a, n_exp);
    kp_ocl_arg_i32(&a, chunk);
    kp_ocl_arg_i32(&a, nchunks);
    kp_ocl_arg_mem(&a, offsets.mem);
    kp_ocl_arg_i64(&a, offsets.off);
    kp_ocl_arg_mem(&a, sorted.mem);
    kp_ocl_arg_i64(&a, sorted.off);
    kp_ocl_arg_i32(&a, sorted_len);
    kp_ocl_arg_mem(&a, pos.mem);
    kp_ocl_arg_i64(&a, pos.off);
    global[0] = (size_t)nchunks * ALIGN_WG;
    return kp_ocl_args_launch(&a, q, "kp_moe_align_scatter", 1, global, local);
}

/* ---- combine ---- */

#define COMBINE_WG 128

kp_status kp_ocl_moe_combine_run(kp_stream *s, kp_ocl_moe_view y, int y_f32, int64_t y_rows, kp_ocl_moe_view pos,
                                 kp_ocl_moe_view tw, int32_t topk, kp_ocl_moe_view out, kp_dtype dt, int64_t t,
                                 int64_t hidden, int dry_run) {
    if (dry_run || t == 0 || hidden == 0) return KP_OK;
    char opts[96];
    snprintf(opts, sizeof opts, "%s%s", kp_ocl_moe_dtype_define(dt), y_f32 && dt != KP_F32 ? " -DKP_COMBINE_Y_F32" : "");
    kp_ocl_args a;
    kp_status st = kernel(s, KP_OCL_SRC_MOE_MOE_COMBINE, opts, "kp_moe_combine", &a);
    if (st != KP_OK) return st;
    kp_ocl_arg_mem(&a, y.mem);
    kp_ocl_arg_i64(&a, y.off);
    kp_ocl_arg_i64(&a, y.ld);
    kp_ocl_arg_i32(&a, y_rows);
    kp_ocl_arg_mem(&a, pos.mem);
    kp_ocl_arg_i64(&a, pos.off);
    kp_ocl_arg_i64(&a, pos.ld);
    kp_ocl_arg_mem(&a, tw.mem);
    kp_ocl_arg_i64(&a, tw.off);
    kp_ocl_arg_i64(&a, tw.ld);
    kp_ocl_arg_i32(&a, topk);
    kp_ocl_arg_mem(&a, out.mem);
    kp_ocl_arg_i64(&a, out.off);
    kp_ocl_arg_i64(&a, out.ld);
    kp_ocl_arg_i32(&a, hidden);
    size_t global[2] = {(size_t)hidden, (size_t)t}, local[2] = {COMBINE_WG, 1};
    return kp_ocl_args_launch(&a, kp_ocl_queue(s), "kp_moe_combine", 2, global, local);
}
