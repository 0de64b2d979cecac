/*
 * backends/gpu/ops/gpu_grouped_gemm_sm90.c — the grouped GEMM on the sm_90a tier
 * (generation 3; kernels/moe/moe_gemm_sm90.cl: persistent, warp-specialised, TMA + wgmma;
 * W8A8 in kernels/moe/moe_gemm_fp8_sm90.cl, below).
 *
 * What it takes (kp_gpu_gemm_sm90_missing; anything else stays on generation 2): a CUDA
 * sm_90a device (profile.sm90a), bf16 or f16 a and w, no gather, the plain epilogues
 * (STORE in the dtype, STORE_F32), K a positive multiple of 64, at most 1024 experts,
 * a and w rows 16-byte aligned (TMA's global address and stride rule), w's experts
 * contiguous (w_se = N x its row stride: one 2-D tensor map [E * N, K] covers them), out
 * 8-byte aligned (the epilogue's paired stores). Both layouts: expert_offsets, and the
 * masked [E, max_m, K] one (g->mask_m = max_m > 0, offsets = masked_m [E], read on the
 * device alone: kernels/moe/moe_gemm_sm90_tiles.h; the grid is the bound
 * E x ceil(max_m / 128) x ceil(N / BN), at most one CTA per SM, so nothing the host
 * computes depends on the counts and a CUDA graph can capture the launch).
 *
 * The tile: 128 rows x BN columns, K steps of 64, a 128-byte swizzle. BN from the tuning
 * table's "grouped_gemm" "sm90_bn" (128 or 256; default 128), stages as many as the
 * device's local memory holds with 1024 experts' tile prefix (227 KiB: 6 for BN 128, 4 for
 * BN 256), at most 8. One CTA of 384 threads per SM, at most as many CTAs as the tile list
 * can have: (ceil(rows / 128) + experts) x ceil(N / BN), the kernel reading the real list
 * from the offsets.
 *
 * W8A8 (kp_gpu_gemm_sm90_fp8_missing; run only when KPORT_GPU_KERNELS forces
 * grouped_gemm=sm90, gpu_grouped_gemm.c): e4m3 a and w with their f32 scales, out f32 / f16
 * / bf16, K % 128, the same layout rules with 1-byte elements; tiles 128 x 128 (one w_scale
 * block), K steps of 128 (one scale slice), 6 stages of 32 KiB in 227 KiB.
 */
#include "gpu_ops.h"

#include <stdio.h>

#define SM90_THREADS 384
#define SM90_MAX_STAGES 8

/* Rows of v (elements of es bytes) on 16 bytes: TMA's global address and stride rule. */
static int tma_rows_ok(kp_gpu_ctx *c, kp_gpu_view v, uint64_t es) {
    uint32_t base = kp_gpu_base_align(c->t, v.buf, v.addr);
    return base >= 16 && ((uint64_t)v.off * es) % 16 == 0 && ((uint64_t)v.ld * es) % 16 == 0 && v.ld > 0;
}

/* What both kernels require past their operand types and K: no gather, the plain
 * epilogues, experts and sizes in range, TMA-aligned rows of a and w (elements of es
 * bytes), w's experts contiguous, out 8-byte aligned, at least 2 stages. */
static const char *layout_missing(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, uint64_t es, int stages) {
    if (g->gather_k > 0 || g->gather.buf || g->gather.addr) return "gathered activation rows";
    if (g->mode != KP_MOE_GEMM_STORE && g->mode != KP_MOE_GEMM_STORE_F32)
        return "the SwiGLU and combine epilogues (SwiGLU-FP8 too)";
    const int64_t experts = g->dense_rows > 0 ? 1 : g->n_exp;
    if (experts > KP_MOE_GEMM_SM90_MAX_EXPERTS) return "more than 1024 experts";
    if (experts * g->n > INT32_MAX - 256 || g->a_rows > INT32_MAX) return "E x N or the rows of a past 2^31";
    if (!tma_rows_ok(c, g->a, es) || !tma_rows_ok(c, g->w, es))
        return "a row of a or w is not 16-byte aligned (TMA's address and stride rule)";
    if (experts > 1 && g->w_se != g->n * g->w.ld) return "w's experts are not contiguous (w_se != N x the row stride)";
    if (kp_gpu_base_align(c->t, g->out.buf, g->out.addr) < 8) return "out is not 8-byte aligned";
    if (stages < 2) return "the device's local memory holds fewer than 2 stages";
    return NULL;
}

const char *kp_gpu_gemm_sm90_missing(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g) {
    if (!c->prof.sm90a) return "the device is not CUDA sm_90a with the driver's cuTensorMapEncodeTiled";
    if (g->a_fp8 || g->w_fp8)
        return "FP8 e4m3 operands (W8A8 has a kernel of its own, below; e4m3 weights with 16-bit activations none)";
    if (g->a_f32 || (g->dtype != KP_BF16 && g->dtype != KP_F16)) return "the activations are not bf16 or f16";
    if (g->k <= 0 || g->k % KP_MOE_GEMM_SM90_BK) return "K is not a positive multiple of 64";
    return layout_missing(c, g, 2, kp_gpu_gemm_sm90_stages(&c->prof, 128));
}

int kp_gpu_gemm_sm90_stages(const kp_gpu_profile *p, int bn) {
    uint64_t fixed = KP_MOE_GEMM_SM90_LOCAL_BYTES((uint64_t)bn, 0u, (uint64_t)KP_MOE_GEMM_SM90_MAX_EXPERTS);
    uint64_t per = KP_MOE_GEMM_SM90_STAGE_BYTES((uint64_t)bn) + 16;
    if (p->local_mem <= fixed) return 0;
    uint64_t s = (p->local_mem - fixed) / per;
    return s > SM90_MAX_STAGES ? SM90_MAX_STAGES : (int)s;
}

void kp_gpu_gemm_sm90_options(const kp_gpu_profile *p, kp_dtype dt, int bn, char *buf, size_t n) {
    snprintf(buf, n, "%s -DS90_BN=%d -DS90_STAGES=%d", kp_gpu_dtype_define(dt), bn, kp_gpu_gemm_sm90_stages(p, bn));
}

/* The map of v [rows, cols] (elements of dt: 2 bytes, or e4m3's 1), boxes of one 128-byte
 * swizzle span of K by box_rows rows. */
static kp_gpu_tensor_map tmap_of(kp_gpu_view v, kp_dtype dt, uint64_t cols, uint64_t rows, uint32_t box_rows) {
    const uint64_t es = dt == KP_FP8_E4M3 ? 1 : 2;
    kp_gpu_tensor_map m = {
        .buffer = v.addr ? NULL : v.buf, .address = v.addr, .byte_offset = (uint64_t)v.off * es, .dtype = dt,
        .swizzle = KP_GPU_TMAP_SWIZZLE_128B, .dims = {cols, rows}, .row_stride = (uint64_t)v.ld * es,
        .box = {(uint32_t)(128 / es), box_rows},
    };
    return m;
}

/* Both kernels' parameter block (W8A8 extends it). */
static kp_moe_gemm_sm90_kargs base_kargs(const kp_gpu_moe_gemm *g) {
    kp_moe_gemm_sm90_kargs ka = {
        .offsets_off = g->offsets.off, .out_off = g->out.off, .out_ld = g->out.ld, .n_exp = g->n_exp,
        .dense_rows = (int32_t)g->dense_rows, .m = (int32_t)g->m, .n = (int32_t)g->n, .k = (int32_t)g->k,
        .mode = g->mode, .mask_m = g->mask_m,
    };
    return ka;
}

/* CTAs: one per SM, at most the tile list's upper bound: (ceil(rows / 128) + the experts
 * that can have rows) x ceil(N / bn); in the masked layout E x ceil(max_m / 128) x
 * ceil(N / bn) (every expert at its max_m; the kernel lists the counts' tiles alone). */
static uint64_t ctas(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int64_t rows, int64_t experts, int bn) {
    const int64_t busy = experts < rows ? experts : rows;
    const int64_t bm = KP_MOE_GEMM_SM90_BM;
    const int64_t mtiles = g->mask_m > 0 && g->dense_rows <= 0 ? experts * ((g->mask_m + bm - 1) / bm)
                                                                : (rows + bm - 1) / bm + (g->dense_rows > 0 ? 0 : busy);
    const int64_t tiles = mtiles * ((g->n + bn - 1) / bn);
    const int64_t cus = c->prof.compute_units > 0 ? c->prof.compute_units : 1;
    return (uint64_t)(tiles < cus ? tiles : cus);
}

void kp_gpu_gemm_sm90_args(kp_gpu_launch *l, const kp_gpu_moe_gemm *g, int bn, kp_moe_gemm_sm90_kargs *ka) {
    const int64_t experts = g->dense_rows > 0 ? 1 : g->n_exp;
    *ka = base_kargs(g);
    const kp_gpu_tensor_map ta = tmap_of(g->a, g->dtype, (uint64_t)g->k, (uint64_t)g->a_rows, KP_MOE_GEMM_SM90_BM);
    const kp_gpu_tensor_map tw = tmap_of(g->w, g->dtype, (uint64_t)g->k, (uint64_t)(experts * g->n), (uint32_t)bn);
    kp_gpu_arg_view(l, g->offsets);
    kp_gpu_arg_view(l, g->out), kp_gpu_arg_view(l, g->out); /* out and outf: the mode picks */
    kp_gpu_arg_kargs(l, ka, sizeof *ka);
    kp_gpu_arg_tensor_map(l, &ta);
    kp_gpu_arg_tensor_map(l, &tw);
}

kp_status kp_gpu_moe_gemm_sm90_run(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int dry_run) {
    const kp_host_services *h = c->host;
    int64_t tuned = h->tuning_get(c->prof.info, "grouped_gemm", "sm90_bn", 128);
    int bn = tuned == 256 && kp_gpu_gemm_sm90_stages(&c->prof, 256) >= 2 ? 256 : 128;
    char opts[128];
    kp_gpu_gemm_sm90_options(&c->prof, g->dtype, bn, opts, sizeof opts);
    kp_status st = kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_GEMM_SM90, opts);
    if (st != KP_OK && bn == 256) { /* a tuned tile not built here: the default one */
        bn = 128;
        kp_gpu_gemm_sm90_options(&c->prof, g->dtype, bn, opts, sizeof opts);
        st = kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_GEMM_SM90, opts);
    }
    if (st == KP_OK) kp_gpu_kernel_note(c, KP_GPU_NOTE_MAIN, 3, "kp_grouped_gemm_sm90");
    if (st != KP_OK || dry_run) return st;
    const int64_t rows = g->dense_rows > 0 ? (g->dense_rows < g->m ? g->dense_rows : g->m) : g->m;
    const int64_t experts = g->dense_rows > 0 ? 1 : g->n_exp;
    if (rows <= 0 || g->n <= 0) return KP_OK;

    const int stages = kp_gpu_gemm_sm90_stages(&c->prof, bn);
    kp_moe_gemm_sm90_kargs ka;
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_GEMM_SM90, opts, "kp_grouped_gemm_sm90");
    kp_gpu_gemm_sm90_args(&l, g, bn, &ka);
    l.groups[0] = ctas(c, g, rows, experts, bn);
    l.local[0] = SM90_THREADS;
    l.local_bytes = (uint32_t)KP_MOE_GEMM_SM90_LOCAL_BYTES((uint64_t)bn, (uint64_t)stages, (uint64_t)experts);
    st = kp_gpu_enqueue(c, &l);
    return st == KP_OK ? st : h->add_context(st, "grouped_gemm (the sm_90a tier)");
}

/* ---- W8A8: kernels/moe/moe_gemm_fp8_sm90.cl ------------------------------------------ */

const char *kp_gpu_gemm_sm90_fp8_missing(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g) {
    if (!c->prof.sm90a) return "the device is not CUDA sm_90a with the driver's cuTensorMapEncodeTiled";
    if (!g->a_fp8 || !g->w_fp8) return "a and w are not both FP8 e4m3 (W8A8)";
    if (g->dtype != KP_F32 && g->dtype != KP_BF16 && g->dtype != KP_F16) return "out is not f32, f16 or bf16";
    if (g->k <= 0 || g->k % KP_MOE_GEMM_FP8_SM90_BK) return "K is not a positive multiple of 128";
    return layout_missing(c, g, 1, kp_gpu_gemm_sm90_fp8_stages(&c->prof));
}

int kp_gpu_gemm_sm90_fp8_stages(const kp_gpu_profile *p) {
    uint64_t fixed = KP_MOE_GEMM_FP8_SM90_LOCAL_BYTES(0u, (uint64_t)KP_MOE_GEMM_SM90_MAX_EXPERTS);
    uint64_t per = KP_MOE_GEMM_FP8_SM90_STAGE_BYTES + 16;
    if (p->local_mem <= fixed) return 0;
    uint64_t s = (p->local_mem - fixed) / per;
    return s > SM90_MAX_STAGES ? SM90_MAX_STAGES : (int)s;
}

void kp_gpu_gemm_sm90_fp8_options(const kp_gpu_profile *p, kp_dtype out_dt, char *buf, size_t n) {
    snprintf(buf, n, "%s -DS90_STAGES=%d", kp_gpu_dtype_define(out_dt), kp_gpu_gemm_sm90_fp8_stages(p));
}

kp_status kp_gpu_moe_gemm_sm90_fp8_run(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int dry_run) {
    const kp_host_services *h = c->host;
    char opts[128];
    kp_gpu_gemm_sm90_fp8_options(&c->prof, g->dtype, opts, sizeof opts);
    kp_status st = kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_GEMM_SM90_FP8, opts);
    if (st == KP_OK) kp_gpu_kernel_note(c, KP_GPU_NOTE_MAIN, 3, "kp_grouped_gemm_sm90_e4m3");
    if (st != KP_OK || dry_run) return st;
    const int64_t rows = g->dense_rows > 0 ? (g->dense_rows < g->m ? g->dense_rows : g->m) : g->m;
    const int64_t experts = g->dense_rows > 0 ? 1 : g->n_exp;
    if (rows <= 0 || g->n <= 0) return KP_OK;

    const int stages = kp_gpu_gemm_sm90_fp8_stages(&c->prof);
    const kp_moe_gemm_fp8_sm90_kargs ka = {
        .g = base_kargs(g),
        .as_off = g->a_scale.off, .as_t = g->as_t, .as_g = g->as_g, .ws_off = g->w_scale.off,
        .ws_nb = (int32_t)((g->n + 127) / 128), .ws_kb = (int32_t)(g->k / 128),
    };
    const kp_gpu_tensor_map ta = tmap_of(g->a, KP_FP8_E4M3, (uint64_t)g->k, (uint64_t)g->a_rows, KP_MOE_GEMM_SM90_BM);
    const kp_gpu_tensor_map tw =
        tmap_of(g->w, KP_FP8_E4M3, (uint64_t)g->k, (uint64_t)(experts * g->n), KP_MOE_GEMM_FP8_SM90_BN);
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_GEMM_SM90_FP8, opts, "kp_grouped_gemm_sm90_e4m3");
    kp_gpu_arg_view(&l, g->offsets);
    kp_gpu_arg_view(&l, g->a_scale), kp_gpu_arg_view(&l, g->w_scale);
    kp_gpu_arg_view(&l, g->out), kp_gpu_arg_view(&l, g->out); /* out and outf: the mode picks */
    kp_gpu_arg_kargs(&l, &ka, sizeof ka);
    kp_gpu_arg_tensor_map(&l, &ta);
    kp_gpu_arg_tensor_map(&l, &tw);
    l.groups[0] = ctas(c, g, rows, experts, KP_MOE_GEMM_FP8_SM90_BN);
    l.local[0] = SM90_THREADS;
    l.local_bytes = (uint32_t)KP_MOE_GEMM_FP8_SM90_LOCAL_BYTES((uint64_t)stages, (uint64_t)experts);
    st = kp_gpu_enqueue(c, &l);
    return st == KP_OK ? st : h->add_context(st, "grouped_gemm W8A8 (the sm_90a tier)");
}
