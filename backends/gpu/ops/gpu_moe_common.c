/*
 * backends/gpu/ops/gpu_moe_common.c — views, option strings, and the gate, align and
 * combine launchers the MoE ops share (the grouped GEMM's is in gpu_grouped_gemm.c).
 * Kernels: kernels/moe/moe_gate.cl, moe_align.cl, moe_combine.cl.
 */
#include "gpu_ops.h"

#include <stdio.h>

kp_gpu_view kp_gpu_view_of(const kp_tensor *t) {
    kp_gpu_view v = {NULL, 0, 0, 0};
    if (!t->buffer) return v;
    v.buf = t->buffer;
    v.off = kp_gpu_elem_offset(t);
    v.addr = kp_gpu_tensor_address(t);
    v.ld = t->ndim >= 2 ? t->strides[0] : 1;
    return v;
}

kp_gpu_view kp_gpu_view_bytes(const kp_buffer *b, size_t byte_off, size_t elem_size, int64_t ld) {
    kp_gpu_view v = {b, (int64_t)(byte_off / elem_size), ld, 0};
    return v;
}

void kp_gpu_arg_view(kp_gpu_launch *l, kp_gpu_view v) {
    if (v.addr)
        kp_gpu_arg_native(l, (void *)(uintptr_t)v.addr);
    else
        kp_gpu_arg_buffer(l, v.buf);
}

const char *kp_gpu_dtype_define(kp_dtype t) {
    return t == KP_F16 ? "-DKP_DTYPE_F16" : t == KP_BF16 ? "-DKP_DTYPE_BF16" : "-DKP_DTYPE_F32";
}

static kp_status no_fit(kp_gpu_ctx *c, const char *op, size_t need) {
    return c->host->set_error(KP_ERR_UNSUPPORTED, "%s: the %s kernel needs %zu bytes of local memory; this device has %llu",
                              op, c->t->name, need, (unsigned long long)c->prof.static_local_mem);
}

/* ---- gate ---- */

void kp_gpu_gate_options(kp_dtype dt, char *buf, size_t n) {
    snprintf(buf, n, "%s -DKP_GATE_WG=%d", kp_gpu_dtype_define(dt), KP_GPU_GATE_WG);
}

kp_moe_gate_kargs kp_gpu_gate_kargs(kp_gpu_view logits, int64_t e, kp_gpu_view bias, const kp_moe_routing *r,
                                    kp_gpu_view ids, kp_gpu_view weights) {
    kp_moe_gate_kargs ka = {
        .logits_off = logits.off, .logits_ld = logits.ld, .bias_off = bias.off, .ids_off = ids.off,
        .ids_ld = ids.ld, .w_off = weights.off, .w_ld = weights.ld, .has_bias = bias.buf != NULL,
        .n_exp = (int32_t)e, .topk = r->topk, .n_group = r->n_group, .topk_group = r->topk_group,
        .use_sigmoid = r->scoring == KP_MOE_SCORING_SIGMOID, .renormalize = r->renormalize,
        .route_scale = r->route_scale,
    };
    return ka;
}

/* The plan (local memory fits, the variant exists), cached per dtype: opts. */
static kp_status gate_plan(kp_gpu_ctx *c, kp_dtype dt, char *opts, size_t n) {
    const kp_gpu_plan_key key = {{KP_GPU_PLAN_GATE, (uint64_t)dt}};
    uint64_t gen;
    int32_t v = 0;
    if (kp_gpu_plan_lookup(c, &key, &v, sizeof v, opts, n, &gen)) return KP_OK;
    size_t lmem = (512 * 2 + KP_GPU_GATE_WG + 32 * 3) * 4;
    if (c->prof.static_local_mem && lmem > c->prof.static_local_mem) return no_fit(c, "moe_gate", lmem);
    kp_gpu_gate_options(dt, opts, n);
    kp_status st = kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_GATE, opts);
    if (st == KP_OK) kp_gpu_plan_store(c, &key, gen, &v, sizeof v, opts);
    return st;
}

kp_status kp_gpu_moe_gate_run(kp_gpu_ctx *c, kp_gpu_view logits, kp_dtype dt, int64_t t, int64_t e, kp_gpu_view bias,
                              const kp_moe_routing *r, kp_gpu_view ids, kp_gpu_view weights, int dry_run) {
    int gen;
    kp_status st = kp_gpu_kernel_gen(c, "moe_gate", "moe_gate has one generation of kernels", &gen);
    if (st != KP_OK) return st;
    char opts[96];
    st = gate_plan(c, dt, opts, sizeof opts);
    if (st != KP_OK || dry_run || t == 0) return st;
    kp_moe_gate_kargs ka = kp_gpu_gate_kargs(logits, e, bias, r, ids, weights);
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_GATE, opts, "kp_moe_gate");
    kp_gpu_gate_args(&l, logits, bias, ids, weights, &ka);
    l.groups[0] = (uint64_t)t, l.local[0] = KP_GPU_GATE_WG;
    return kp_gpu_enqueue(c, &l);
}

void kp_gpu_gate_args(kp_gpu_launch *l, kp_gpu_view logits, kp_gpu_view bias, kp_gpu_view ids, kp_gpu_view weights,
                      const kp_moe_gate_kargs *ka) {
    kp_gpu_arg_view(l, logits), kp_gpu_arg_view(l, bias);
    kp_gpu_arg_view(l, ids), kp_gpu_arg_view(l, weights);
    kp_gpu_arg_kargs(l, ka, sizeof *ka);
}

/* ---- align ---- */

/* Two variants: up to 512 experts (small local arrays), up to the core's 4096. */
static int align_max_e(int32_t n_exp) { return n_exp <= 512 ? 512 : 4096; }

void kp_gpu_align_options(int32_t n_exp, char *buf, size_t n) {
    snprintf(buf, n, "-DKP_ALIGN_WG=%d -DKP_ALIGN_MAX_E=%d", KP_GPU_ALIGN_WG, align_max_e(n_exp));
}

kp_moe_align_kargs kp_gpu_align_kargs(kp_gpu_view ids, int64_t pairs, int32_t n_exp, int32_t block, kp_gpu_view sorted,
                                      int64_t sorted_len, kp_gpu_view offsets, kp_gpu_view pos, int64_t chunk,
                                      int64_t nchunks) {
    kp_moe_align_kargs ka = {
        .ids_off = ids.off, .sorted_off = sorted.off, .pos_off = pos.off, .offsets_off = offsets.off,
        .pairs = (int32_t)pairs, .n_exp = n_exp, .chunk = (int32_t)chunk, .nchunks = (int32_t)nchunks,
        .sorted_len = (int32_t)sorted_len, .block = block,
    };
    return ka;
}

void kp_gpu_align_args(kp_gpu_launch *l, kp_gpu_view ids, kp_gpu_view sorted, kp_gpu_view pos, kp_gpu_view offsets,
                       const kp_moe_align_kargs *ka) {
    kp_gpu_arg_view(l, ids), kp_gpu_arg_view(l, sorted);
    kp_gpu_arg_view(l, pos), kp_gpu_arg_view(l, offsets);
    kp_gpu_arg_kargs(l, ka, sizeof *ka);
}

/* The plan (local memory fits, the variant exists) and the tuning table's chunk, cached
 * per variant (512 or 4096 experts at most). */
static kp_status align_plan(kp_gpu_ctx *c, int32_t n_exp, char *opts, size_t n, int64_t *chunk) {
    const kp_gpu_plan_key key = {{KP_GPU_PLAN_ALIGN, (uint64_t)align_max_e(n_exp)}};
    uint64_t gen;
    if (kp_gpu_plan_lookup(c, &key, chunk, sizeof *chunk, opts, n, &gen)) return KP_OK;
    size_t lmem = ((size_t)align_max_e(n_exp) * 2 + 1 + KP_GPU_ALIGN_WG + 1) * 4; /* the scan kernel's, the largest */
    if (c->prof.static_local_mem && lmem > c->prof.static_local_mem) return no_fit(c, "moe_align", lmem);
    kp_gpu_align_options(n_exp, opts, n);
    kp_status st = kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_ALIGN, opts);
    if (st != KP_OK) return st;
    *chunk = c->host->tuning_get(c->prof.info, "moe_align", "chunk", 4096);
    kp_gpu_plan_store(c, &key, gen, chunk, sizeof *chunk, opts);
    return KP_OK;
}

kp_status kp_gpu_moe_align_run(kp_gpu_ctx *c, kp_gpu_view ids, int64_t pairs, int32_t n_exp, int32_t block,
                               kp_gpu_view sorted, int64_t sorted_len, kp_gpu_view offsets, kp_gpu_view pos,
                               int dry_run) {
    int gen;
    kp_status st = kp_gpu_kernel_gen(c, "moe_align", "moe_align has one generation of kernels", &gen);
    if (st != KP_OK) return st;
    char opts[96];
    int64_t chunk;
    st = align_plan(c, n_exp, opts, sizeof opts, &chunk);
    if (st != KP_OK || dry_run) return st;
    if (chunk < n_exp) chunk = n_exp;
    if (chunk < KP_GPU_ALIGN_WG) chunk = KP_GPU_ALIGN_WG;
    int64_t nchunks = pairs / chunk;
    if (nchunks < 1) nchunks = 1;
    if (pairs == 0) nchunks = 0;
    kp_moe_align_kargs ka = kp_gpu_align_kargs(ids, pairs, n_exp, block, sorted, sorted_len, offsets, pos, chunk, nchunks);
    /* hist (several chunks only), scan, scatter (when there are pairs): the same arguments */
    static const char *const kernels[] = {"kp_moe_align_hist", "kp_moe_align_scan", "kp_moe_align_scatter"};
    for (int i = nchunks > 1 ? 0 : 1; i < (nchunks > 0 ? 3 : 2); i++) {
        kp_gpu_launch l;
        kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_ALIGN, opts, kernels[i]);
        kp_gpu_align_args(&l, ids, sorted, pos, offsets, &ka);
        l.groups[0] = i == 1 ? 1 : (uint64_t)nchunks, l.local[0] = KP_GPU_ALIGN_WG;
        if ((st = kp_gpu_enqueue(c, &l)) != KP_OK) return st;
    }
    return KP_OK;
}

/* ---- combine ---- */

void kp_gpu_combine_options(kp_dtype dt, int y_f32, char *buf, size_t n) {
    snprintf(buf, n, "%s%s", kp_gpu_dtype_define(dt), y_f32 && dt != KP_F32 ? " -DKP_COMBINE_Y_F32" : "");
}

kp_moe_combine_kargs kp_gpu_combine_kargs(kp_gpu_view y, int64_t y_rows, kp_gpu_view pos, kp_gpu_view tw, int32_t topk,
                                          kp_gpu_view out, int64_t hidden) {
    kp_moe_combine_kargs ka = {
        .y_off = y.off, .y_ld = y.ld, .pos_off = pos.off, .pos_ld = pos.ld, .tw_off = tw.off, .tw_ld = tw.ld,
        .out_off = out.off, .out_ld = out.ld, .y_rows = (int32_t)y_rows, .topk = topk, .hidden = (int32_t)hidden,
    };
    return ka;
}

void kp_gpu_combine_args(kp_gpu_launch *l, kp_gpu_view y, kp_gpu_view pos, kp_gpu_view tw, kp_gpu_view out,
                         const kp_moe_combine_kargs *ka) {
    kp_gpu_arg_view(l, y), kp_gpu_arg_view(l, pos), kp_gpu_arg_view(l, tw);
    kp_gpu_arg_view(l, out);
    kp_gpu_arg_kargs(l, ka, sizeof *ka);
}

kp_status kp_gpu_moe_combine_run(kp_gpu_ctx *c, kp_gpu_view y, int y_f32, int64_t y_rows, kp_gpu_view pos,
                                 kp_gpu_view tw, int32_t topk, kp_gpu_view out, kp_dtype dt, int64_t t, int64_t hidden,
                                 int dry_run) {
    int gen;
    kp_status st = kp_gpu_kernel_gen(c, "moe_combine", "moe_combine has one generation of kernels", &gen);
    if (st != KP_OK) return st;
    char opts[96];
    const kp_gpu_plan_key key = {{KP_GPU_PLAN_COMBINE, (uint64_t)dt, (uint64_t)(y_f32 && dt != KP_F32)}};
    uint64_t pgen;
    int32_t v = 0;
    if (!kp_gpu_plan_lookup(c, &key, &v, sizeof v, opts, sizeof opts, &pgen)) {
        kp_gpu_combine_options(dt, y_f32, opts, sizeof opts);
        st = kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_COMBINE, opts);
        if (st == KP_OK) kp_gpu_plan_store(c, &key, pgen, &v, sizeof v, opts);
    }
    if (st != KP_OK || dry_run || t == 0 || hidden == 0) return st;
    kp_moe_combine_kargs ka = kp_gpu_combine_kargs(y, y_rows, pos, tw, topk, out, hidden);
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_COMBINE, opts, "kp_moe_combine");
    kp_gpu_combine_args(&l, y, pos, tw, out, &ka);
    l.groups[0] = (uint64_t)((hidden + KP_GPU_COMBINE_WG - 1) / KP_GPU_COMBINE_WG), l.groups[1] = (uint64_t)t;
    l.local[0] = KP_GPU_COMBINE_WG;
    return kp_gpu_enqueue(c, &l);
}
