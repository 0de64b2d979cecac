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
 * W8A8 (activation_dtype KP_FP8_E4M3), the cpu backend's semantics: x is quantized
 * per 1x128 token group (quantize_fp8.cl on x's dtype) into the core's W8A8 regions
 * (e4m3 x [T, hidden], its scales [T, hidden/128]); g1 runs W8A8 (moe_gemm_fp8_gen2.cl)
 * on the gathered e4m3 rows with the SwiGLU epilogue storing h in f32 into the last
 * region (hf [rows, inter], which the core adds for W8A8: the GPU backends need it,
 * and no dead region is large enough for every shape); quantize_fp8.cl on that f32 h
 * gives e4m3 h and its scales [rows, inter/128] (h is quantized from f32, never from
 * x's dtype); g2 runs W8A8 on e4m3 h into y (x's dtype); combine as above. An FP8
 * shared expert runs the same way on the e4m3 x (s1 -> hf [T, inter_s] f32, which
 * reuses hf after h's quantization, -> e4m3 h_s and its scales; s2 W8A8 with the
 * combine epilogue); a shared expert in x's dtype runs as in W8A16. W8A8 has
 * generation-2 kernels only: with grouped_gemm forced to generation 1 it is
 * KP_ERR_UNSUPPORTED with the GEMM's reason.
 * Fused (the default where it fits: kp_gpu_gemm8_fused_tile_pick, 64 x 256 tiles whose
 * SwiGLU columns are whole 128-column groups of h; not on 48 KiB OpenCL-on-NVIDIA, or
 * with the tuning table's grouped_gemm;g8_fused_swiglu = 0): g1 (and an FP8 s1) run the
 * SWIGLU_FP8 epilogue, which quantizes h per 1 x 128 group in the work-group, as the
 * quantize kernel would from the same f32 values, straight into h8 / hs (hs8 / hss):
 * no f32 h write or read, no quantize launch for h. The hf region stays in the
 * workspace (kp_moe_forward_workspace_size is the core's, one size for every backend
 * and kernel choice: a size that followed the tile choice could change between the
 * size query and the call when the tuning table does).
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
    const int w8a8 = p->activation_dtype == KP_FP8_E4M3;
    const int s8 = w8a8 && inter_s > 0 && p->shared_w13.dtype == KP_FP8_E4M3;
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
    /* sizes checked by the core (kp_moe_forward_workspace_bytes); W8A8: h (and with
     * an FP8 shared expert h_s) in e4m3, then its regions after h_s */
    const size_t h_es = w8a8 ? 1 : act, hs_es = s8 ? 1 : act;
    kp_gpu_view h = kp_gpu_view_bytes(ws, at, h_es, inter);
    at += ws_align((size_t)rows * inter * h_es);
    kp_gpu_view y = kp_gpu_view_bytes(ws, at, act, hidden);
    at += ws_align((size_t)rows * hidden * act);
    kp_gpu_view h_s = kp_gpu_view_bytes(ws, at, hs_es, inter_s);
    at += ws_align((size_t)t * inter_s * hs_es);
    kp_gpu_view xq = {0}, xs = {0}, hs = {0}, hss = {0}, hf = {0}, hf_s = {0};
    if (w8a8) {
        xq = kp_gpu_view_bytes(ws, at, 1, hidden);
        at += ws_align((size_t)t * hidden);
        xs = kp_gpu_view_bytes(ws, at, 4, hidden / 128);
        at += ws_align((size_t)t * (hidden / 128) * 4);
        hs = kp_gpu_view_bytes(ws, at, 4, inter / 128);
        at += ws_align((size_t)rows * (inter / 128) * 4);
        if (s8) {
            hss = kp_gpu_view_bytes(ws, at, 4, inter_s / 128);
            at += ws_align((size_t)t * (inter_s / 128) * 4);
        }
        hf = kp_gpu_view_bytes(ws, at, 4, inter), hf_s = kp_gpu_view_bytes(ws, at, 4, inter_s);
    }

    kp_gpu_view x = kp_gpu_view_of(&p->x), out = kp_gpu_view_of(&p->out);
    kp_gpu_moe_gemm g1 = {
        .dtype = dt, .w_fp8 = p->w13.dtype == KP_FP8_E4M3, .a = x, .a_rows = t, .gather = sorted,
        .gather_k = (int32_t)k, .w = kp_gpu_view_of(&p->w13), .w_se = p->w13.strides[0],
        .w_scale = kp_gpu_view_of(&p->w13_scale), .offsets = offsets, .n_exp = (int32_t)e, .m = pairs,
        .n = 2 * inter, .k = hidden, .mode = KP_MOE_GEMM_SWIGLU, .n_out = inter, .out = h, .max_rows_hint = t,
    };
    g1.w.ld = p->w13.strides[1];
    /* W8A8: h quantized in the w13 GEMM's epilogue where the device holds a fused tile
     * (kp_gpu_gemm8_fused_tile_pick), else stored in f32 for the quantize kernel */
    kp_gpu_gemm8_tile ft;
    const int fused = w8a8 && kp_gpu_gemm8_fused_tile_pick(c->host, &c->prof, 1, &ft);
    if (w8a8) /* e4m3 x gathered, with its token's scales; h stored in f32 */
        g1.dtype = KP_F32, g1.a_fp8 = 1, g1.a = xq, g1.a_scale = xs, g1.as_t = hidden / 128, g1.as_g = 1, g1.out = hf;
    if (fused) g1.mode = KP_MOE_GEMM_SWIGLU_FP8, g1.out = h, g1.out_scale = hs, g1.ue8m0 = p->activation_scale_ue8m0;
    kp_gpu_moe_gemm g2 = {
        .dtype = dt, .w_fp8 = p->w2.dtype == KP_FP8_E4M3, .a = h, .a_rows = pairs,
        .w = kp_gpu_view_of(&p->w2), .w_se = p->w2.strides[0], .w_scale = kp_gpu_view_of(&p->w2_scale),
        .offsets = offsets, .n_exp = (int32_t)e, .m = pairs, .n = hidden, .k = inter,
        .mode = KP_MOE_GEMM_STORE, .out = y, .max_rows_hint = t,
    };
    g2.w.ld = p->w2.strides[1];
    if (w8a8) g2.a_fp8 = 1, g2.a_scale = hs, g2.as_t = inter / 128, g2.as_g = 1;
    kp_gpu_moe_gemm s1, s2;
    if (inter_s > 0) {
        s1 = (kp_gpu_moe_gemm){
            .dtype = dt, .w_fp8 = p->shared_w13.dtype == KP_FP8_E4M3, .a = x, .a_rows = t,
            .w = kp_gpu_view_of(&p->shared_w13), .w_scale = kp_gpu_view_of(&p->shared_w13_scale), .dense_rows = t,
            .n_exp = 1,
            .m = t, .n = 2 * inter_s, .k = hidden, .mode = KP_MOE_GEMM_SWIGLU, .n_out = inter_s, .out = h_s,
        };
        s1.w.ld = p->shared_w13.strides[0];
        if (s8) s1.dtype = KP_F32, s1.a_fp8 = 1, s1.a = xq, s1.a_scale = xs, s1.as_t = hidden / 128, s1.as_g = 1,
            s1.out = hf_s;
        if (s8 && fused)
            s1.mode = KP_MOE_GEMM_SWIGLU_FP8, s1.out = h_s, s1.out_scale = hss, s1.ue8m0 = p->activation_scale_ue8m0;
        s2 = (kp_gpu_moe_gemm){
            .dtype = dt, .w_fp8 = p->shared_w2.dtype == KP_FP8_E4M3, .a = h_s, .a_rows = t,
            .w = kp_gpu_view_of(&p->shared_w2), .w_scale = kp_gpu_view_of(&p->shared_w2_scale), .dense_rows = t,
            .n_exp = 1, .m = t, .n = hidden, .k = inter_s, .mode = KP_MOE_GEMM_COMBINE, .out = out, .y = y,
            .y_rows = pairs, .pos = pos, .tw = wts, .topk = (int32_t)k,
        };
        s2.w.ld = p->shared_w2.strides[0];
        if (s8) s2.a_fp8 = 1, s2.a_scale = hss, s2.as_t = inter_s / 128, s2.as_g = 1;
    }
    *f = (kp_gpu_moe_fwd){.t = t, .hidden = hidden, .e = e, .k = k, .inter_s = inter_s, .pairs = pairs, .dt = dt,
                          .ids = ids, .wts = wts, .pos = pos, .sorted = sorted, .offsets = offsets, .y = y, .out = out,
                          .g1 = g1, .g2 = g2, .w8a8 = w8a8, .s8 = s8, .fused = fused,
                          .ue8m0 = p->activation_scale_ue8m0,
                          .inter = inter, .x = kp_gpu_view_of(&p->x), .xq = xq, .xs = xs, .hf = hf, .h8 = h, .hs = hs,
                          .hf_s = hf_s, .hs8 = h_s, .hss = hss};
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
            (f->w8a8 && (st = kp_gpu_quant_fp8_run(c, f->x, dt, f->xq, f->xs, t, hidden, f->ue8m0, dry))) ||
            (st = kp_gpu_moe_gemm_run(c, g1, dry)) ||
            (f->w8a8 && !f->fused &&
             (st = kp_gpu_quant_fp8_run(c, f->hf, KP_F32, f->h8, f->hs, pairs, f->inter, f->ue8m0, dry))) ||
            (st = kp_gpu_moe_gemm_run(c, g2, dry)))
            return st;
        if (inter_s > 0) {
            if ((st = kp_gpu_moe_gemm_run(c, s1, dry)) ||
                (f->s8 && !f->fused &&
                 (st = kp_gpu_quant_fp8_run(c, f->hf_s, KP_F32, f->hs8, f->hss, t, inter_s, f->ue8m0, dry))) ||
                (st = kp_gpu_moe_gemm_run(c, s2, dry)))
                return st;
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
