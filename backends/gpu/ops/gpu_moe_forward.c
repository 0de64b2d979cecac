/*
 * backends/gpu/ops/gpu_moe_forward.c — kp_moe_forward on the GPU backends: the
 * routed layer as a chain of device launches on the stream, in the caller's workspace
 * only, with no host round trip:
 *
 *   1. gate (moe_gate.cl)                        -> topk_ids, topk_weights
 *   2. align, block size 1 (moe_align.cl)        -> sorted_ids, expert_offsets, token_pos
 *      (the grouped GEMM tiles over unpadded expert ranges, so no padding rows)
 *   3. grouped GEMM, x rows gathered through sorted_ids, SwiGLU in the epilogue
 *                                                -> h [rows, inter] in x's dtype
 *   4. grouped GEMM h . w2^T                     -> y [rows, hidden] in x's dtype
 *      (each GEMM accumulates in f32 and rounds once, on store)
 *   5. combine y in slot order -> out; with a shared expert, its SwiGLU GEMM over all
 *      T tokens (one dense "expert") writes h_s, and its second GEMM's epilogue does
 *      the combine and adds its own value last.
 *
 * Workspace: the layout of core/ops/op_moe_forward.c (kp_moe_forward_workspace_bytes),
 * regions aligned to 256 bytes: topk_ids, topk_weights, token_pos [T*k]; sorted_ids
 * [T*k] (align's per-chunk histogram, at most T*k entries, lives there first);
 * expert_offsets [E+1]; rows = T*k (no padding rows);
 * then in x's dtype: h [rows, inter] (SwiGLU fused into the w13 GEMM: x.w13^T is
 * never stored); y [rows, hidden]; h_s [T, inter_s].
 *
 * W8A8 (activation_dtype KP_FP8_E4M3) is KP_ERR_UNSUPPORTED here until the grouped
 * GEMM kernels take e4m3 activations with their scales. The plan, with the core's
 * W8A8 workspace layout (h e4m3 [rows, inter]; after h_s: e4m3 x [T, hidden], x's
 * scales [T, hidden/128], h's scales [rows, inter/128]): a quantize launch over x
 * (gpu_quantize_fp8.c's kernel), g1 W8A8 on the gathered e4m3 rows with the SwiGLU
 * epilogue quantizing each 128-column group of h (its tile's columns whole groups),
 * g2 W8A8 on h, then combine as today.
 */
#include "gpu_ops.h"

#define WS_ALIGN 256

static size_t ws_align(size_t n) { return (n + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN; }

/* The chain's views and GEMMs for p (no launch): what kp_gpu_moe_forward_launches runs,
 * and what the cached chain (gpu_moe_chain.c) fills its launches from. */
kp_status kp_gpu_moe_forward_setup(kp_gpu_ctx *c, const kp_moe_forward_params *p, kp_gpu_moe_fwd *f) {
    const int64_t t = p->x.shape[0], hidden = p->x.shape[1], e = p->w13.shape[0];
    const int64_t inter = p->w13.shape[1] / 2, k = p->routing.topk;
    const int64_t inter_s = p->shared_w13.buffer ? p->shared_w13.shape[0] / 2 : 0;
    const int64_t pairs = t * k, rows = pairs;
    const kp_dtype dt = p->x.dtype;
    const size_t act = kp_backend_dtype_size(dt); /* the intermediates' element size */
    if (p->activation_dtype == KP_FP8_E4M3) /* see the note at the top */
        return c->host->set_error(KP_ERR_UNSUPPORTED,
                                  "moe_forward: FP8 activations (W8A8, activation_dtype KP_FP8_E4M3) are not "
                                  "implemented on the %s backend yet (they need the grouped GEMM's W8A8 path); "
                                  "the cpu backend runs them", c->t->name);
    if (rows > INT32_MAX || hidden > INT32_MAX || 2 * inter > INT32_MAX || 2 * inter_s > INT32_MAX)
        return c->host->set_error(KP_ERR_UNSUPPORTED, "moe_forward: the %s kernels take sizes below 2^31",
                                  c->t->name);

    if (p->workspace_offset % WS_ALIGN != 0) /* views address the workspace in 4-byte elements */
        return c->host->set_error(KP_ERR_INTERNAL, "moe_forward: workspace_offset %zu reached the %s backend unaligned",
                                  p->workspace_offset, c->t->name);
    size_t at = p->workspace_offset;
    const kp_buffer *ws = p->workspace;
    kp_gpu_view ids = kp_gpu_view_bytes(ws, at, 4, k);
    at += ws_align((size_t)pairs * 4);
    kp_gpu_view wts = kp_gpu_view_bytes(ws, at, 4, k);
    at += ws_align((size_t)pairs * 4);
    kp_gpu_view pos = kp_gpu_view_bytes(ws, at, 4, k);
    at += ws_align((size_t)pairs * 4);
    kp_gpu_view sorted = kp_gpu_view_bytes(ws, at, 4, 1);
    at += ws_align((size_t)rows * 4);
    kp_gpu_view offsets = kp_gpu_view_bytes(ws, at, 4, 1);
    at += ws_align((size_t)(e + 1) * 4);
    kp_gpu_view h = kp_gpu_view_bytes(ws, at, act, inter);
    at += ws_align((size_t)rows * inter * act);
    kp_gpu_view y = kp_gpu_view_bytes(ws, at, act, hidden);
    at += ws_align((size_t)rows * hidden * act);
    kp_gpu_view h_s = kp_gpu_view_bytes(ws, at, act, inter_s);

    kp_gpu_view x = kp_gpu_view_of(&p->x), out = kp_gpu_view_of(&p->out);
    kp_gpu_moe_gemm g1 = {
        .dtype = dt, .w_fp8 = p->w13.dtype == KP_FP8_E4M3, .a = x, .a_rows = t, .gather = sorted,
        .gather_k = (int32_t)k, .w = kp_gpu_view_of(&p->w13), .w_se = p->w13.strides[0],
        .w_scale = kp_gpu_view_of(&p->w13_scale), .offsets = offsets, .n_exp = (int32_t)e, .m = pairs,
        .n = 2 * inter, .k = hidden, .mode = KP_MOE_GEMM_SWIGLU, .n_out = inter, .out = h, .max_rows_hint = t,
    };
    g1.w.ld = p->w13.strides[1];
    kp_gpu_moe_gemm g2 = {
        .dtype = dt, .w_fp8 = p->w2.dtype == KP_FP8_E4M3, .a = h, .a_rows = pairs,
        .w = kp_gpu_view_of(&p->w2), .w_se = p->w2.strides[0], .w_scale = kp_gpu_view_of(&p->w2_scale),
        .offsets = offsets, .n_exp = (int32_t)e, .m = pairs, .n = hidden, .k = inter,
        .mode = KP_MOE_GEMM_STORE, .out = y, .max_rows_hint = t,
    };
    g2.w.ld = p->w2.strides[1];
    kp_gpu_moe_gemm s1, s2;
    if (inter_s > 0) {
        s1 = (kp_gpu_moe_gemm){
            .dtype = dt, .w_fp8 = p->shared_w13.dtype == KP_FP8_E4M3, .a = x, .a_rows = t,
            .w = kp_gpu_view_of(&p->shared_w13), .w_scale = kp_gpu_view_of(&p->shared_w13_scale), .dense_rows = t,
            .n_exp = 1,
            .m = t, .n = 2 * inter_s, .k = hidden, .mode = KP_MOE_GEMM_SWIGLU, .n_out = inter_s, .out = h_s,
        };
        s1.w.ld = p->shared_w13.strides[0];
        s2 = (kp_gpu_moe_gemm){
            .dtype = dt, .w_fp8 = p->shared_w2.dtype == KP_FP8_E4M3, .a = h_s, .a_rows = t,
            .w = kp_gpu_view_of(&p->shared_w2), .w_scale = kp_gpu_view_of(&p->shared_w2_scale), .dense_rows = t,
            .n_exp = 1, .m = t, .n = hidden, .k = inter_s, .mode = KP_MOE_GEMM_COMBINE, .out = out, .y = y,
            .y_rows = pairs, .pos = pos, .tw = wts, .topk = (int32_t)k,
        };
        s2.w.ld = p->shared_w2.strides[0];
    }
    *f = (kp_gpu_moe_fwd){.t = t, .hidden = hidden, .e = e, .k = k, .inter_s = inter_s, .pairs = pairs, .dt = dt,
                          .ids = ids, .wts = wts, .pos = pos, .sorted = sorted, .offsets = offsets, .y = y, .out = out,
                          .g1 = g1, .g2 = g2};
    if (inter_s > 0) f->s1 = s1, f->s2 = s2;
    return KP_OK;
}

/* The chain planned and launched afresh (every launch planned before the first runs). */
kp_status kp_gpu_moe_forward_launches(kp_gpu_ctx *c, const kp_moe_forward_params *p, const kp_gpu_moe_fwd *f,
                                      int dry_run) {
    const int64_t t = f->t, hidden = f->hidden, e = f->e, k = f->k, inter_s = f->inter_s, pairs = f->pairs;
    const kp_dtype dt = f->dt;
    const kp_gpu_view ids = f->ids, wts = f->wts, pos = f->pos, sorted = f->sorted, offsets = f->offsets, y = f->y,
                      out = f->out;
    const kp_gpu_moe_gemm *g1 = &f->g1, *g2 = &f->g2, *s1 = &f->s1, *s2 = &f->s2;
    /* the same selection wet and dry: every launch is planned before the first runs */
    for (int pass = dry_run ? 1 : 0; pass < 2; pass++) {
        int dry = pass == 0 ? 1 : dry_run;
        kp_status st;
        if ((st = kp_gpu_moe_gate_run(c, kp_gpu_view_of(&p->router_logits), p->router_logits.dtype, t, e,
                                      kp_gpu_view_of(&p->bias), &p->routing, ids, wts, dry)) ||
            (st = kp_gpu_moe_align_run(c, ids, pairs, (int32_t)e, 1, sorted, pairs, offsets, pos, dry)) ||
            (st = kp_gpu_moe_gemm_run(c, g1, dry)) || (st = kp_gpu_moe_gemm_run(c, g2, dry)))
            return st;
        if (inter_s > 0) {
            if ((st = kp_gpu_moe_gemm_run(c, s1, dry)) || (st = kp_gpu_moe_gemm_run(c, s2, dry))) return st;
        } else {
            if ((st = kp_gpu_moe_combine_run(c, y, 0, pairs, pos, wts, (int32_t)k, out, dt, t, hidden, dry)))
                return st;
        }
        if (dry_run) break;
    }
    return KP_OK;
}

kp_status kp_gpu_moe_forward(kp_gpu_ctx *c, const kp_moe_forward_params *p, int dry_run) {
    kp_gpu_moe_fwd f;
    kp_status st = kp_gpu_moe_forward_setup(c, p, &f);
    if (st != KP_OK) return st;
    if (!dry_run) return kp_gpu_moe_chain_run(c, p, &f); /* gpu_moe_chain.c: the chain planned once per shape */
    return kp_gpu_moe_forward_launches(c, p, &f, dry_run);
}
