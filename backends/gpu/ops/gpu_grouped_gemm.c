/*
 * backends/gpu/ops/gpu_grouped_gemm.c — kp_grouped_gemm on the GPU backends, and the
 * grouped-GEMM launcher kp_moe_forward uses (kernels/moe/moe_gemm.cl).
 *
 * Selection (the same code answers dry runs):
 *   inner product  the tile-MMA layer on devices with matrix units (profile.mma) for
 *                  16-bit activations; the f32 FMA tile for f32, and on devices
 *                  without them (PoCL). Tuning "grouped_gemm" "mma" = 0/1 overrides
 *                  (1 on PoCL runs the MMA layer's portable emulation).
 *   tiles          "tile_m", "tile_n", "tile_k" from the tuning table (defaults 64, 64,
 *                  32 for MMA, 16 for FMA; 128, 128, 32 for the FMA tile on devices
 *                  with >= 256 KiB of local memory, i.e. CPUs); a tuned tile that breaks
 *                  the kernel's divisibility rules or the device's local memory, or that
 *                  an ahead-of-time backend did not build, falls back to the defaults.
 *   decode         experts with at most "small_m" (default 16, max 16) rows run the
 *                  weight-streaming kernel. The split is made on the device per expert,
 *                  so the host never reads the offsets: when the average expert has
 *                  more than small_m rows only the tiled kernel runs (small_max = 0);
 *                  when every expert has at most small_m rows (M <= small_m, or
 *                  kp_moe_forward's T <= small_m) only the small one does.
 * Generations (gpu_kernel_gen.c): 16-bit cases the sm_90a tier covers run it on sm_90a
 * devices (generation 3, gpu_grouped_gemm_sm90.c), others generation 2
 * (gpu_grouped_gemm_gen2.c) or this file's generation 1.
 * Work-group counts are upper bounds computed from M and E alone (tiles <= M/BM + min(E,
 * M)); work-groups past the real tile count exit at once.
 */
#include "gpu_ops.h"

#include <stdio.h>
#include <string.h>

static size_t tiled_lmem(int mma, int bm, int bn, int bk, int fp8) {
    size_t stage = mma ? ((size_t)bm * (bk + 8) + (size_t)bn * (bk + 8) + 1) / 2 : (size_t)bk * (bm + 4 + bn + 4);
    size_t c = (size_t)bm * (bn + 4);
    return (stage > c ? stage : c) * 4 + (size_t)bm * 8 + (size_t)bn * (fp8 ? 12 : 8);
}

static int tiles_ok(int mma, int bm, int bn, int bk, int w_fp8) {
    if (bm < 16 || bn < 16 || bk < 1 || bm > 256 || bn > 256 || bk > 128) return 0;
    if (mma) return bm % 32 == 0 && bn % 16 == 0 && bk % 16 == 0 && (!w_fp8 || 128 % bk == 0); /* FP8: K slices */
    return bm % 16 == 0 && bn % 16 == 0 && bm / 16 <= 8 && bn / 16 <= 8;
}

void kp_gpu_gemm_tiles_pick(const kp_host_services *h, const kp_gpu_profile *p, kp_dtype dt, int w_fp8,
                            int use_tuning, kp_gpu_gemm_tiles *out) {
    const kp_device_info *info = p->info;
    uint64_t have = p->static_local_mem;
    int mma = p->mma;
    if (use_tuning) mma = (int)h->tuning_get(info, "grouped_gemm", "mma", mma) != 0;
    if (dt == KP_F32) mma = 0; /* the MMA layer takes 16-bit operands only */
    int dbk = mma ? 32 : 16;
    /* CPU-like devices (PoCL: 1 MiB of local memory) run the FMA tile faster at
     * 128x128x32 (4.7 vs 2.7 GFLOP/s at M 512, N K 1024 on the 2-core CI machine) */
    int big = !mma && have >= 256 * 1024;
    int bm = big ? 128 : 64, bn = big ? 128 : 64, bk = big ? 32 : dbk;
    if (use_tuning) {
        bm = (int)h->tuning_get(info, "grouped_gemm", "tile_m", bm);
        bn = (int)h->tuning_get(info, "grouped_gemm", "tile_n", bn);
        bk = (int)h->tuning_get(info, "grouped_gemm", "tile_k", bk);
    }
    size_t lmem = tiled_lmem(mma, bm, bn, bk, w_fp8);
    if (!tiles_ok(mma, bm, bn, bk, w_fp8) || (have && lmem > have)) {
        h->log("grouped_gemm: tuned tiles %dx%dx%d unusable here; using 64x64x%d", bm, bn, bk, dbk);
        bm = 64, bn = 64, bk = dbk;
        lmem = tiled_lmem(mma, 64, 64, dbk, w_fp8);
    }
    out->mma = mma, out->bm = bm, out->bn = bn, out->bk = bk, out->lmem = lmem;
    out->wg = mma ? 128 : 256;
}

void kp_gpu_gemm_options(const kp_gpu_gemm_tiles *tl, kp_dtype dt, int w_fp8, int a_f32, char *buf, size_t n) {
    snprintf(buf, n, "%s%s%s%s -DKP_GG_BM=%d -DKP_GG_BN=%d -DKP_GG_BK=%d -DKP_GG_SM_WG=%d", kp_gpu_dtype_define(dt),
             w_fp8 ? " -DKP_GG_W_FP8" : "", a_f32 && dt != KP_F32 ? " -DKP_GG_A_F32" : "", tl->mma ? " -DKP_GG_MMA" : "",
             tl->bm, tl->bn, tl->bk, KP_GPU_GG_SMALL_WG);
}

typedef struct gemm_plan {
    kp_gpu_gemm_tiles tl;
    int small_max, run_tiled, run_small;
    char opts[256];
} gemm_plan;

void kp_gpu_gemm_split(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int *small_max, int *run_tiled, int *run_small) {
    int64_t sm = c->host->tuning_get(c->prof.info, "grouped_gemm", "small_m", KP_GPU_GG_SMALL_M_MAX);
    *small_max = sm < 0 ? 0 : sm > KP_GPU_GG_SMALL_M_MAX ? KP_GPU_GG_SMALL_M_MAX : (int)sm;
    int64_t experts = g->dense_rows > 0 ? 1 : g->n_exp;
    int64_t rows = g->dense_rows > 0 ? (g->dense_rows < g->m ? g->dense_rows : g->m) : g->m;
    if (*small_max == 0 || rows > (int64_t)*small_max * experts) {
        *small_max = 0, *run_small = 0, *run_tiled = 1;
    } else if (rows <= *small_max || (g->max_rows_hint > 0 && g->max_rows_hint <= *small_max)) {
        *run_small = 1, *run_tiled = 0;
    } else {
        *run_small = 1, *run_tiled = 1;
    }
}

static kp_status plan_make(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, gemm_plan *p) {
    const kp_host_services *h = c->host;
    kp_status st;
    kp_gpu_gemm_tiles_pick(h, &c->prof, g->dtype, g->w_fp8, 1, &p->tl);
    kp_gpu_gemm_options(&p->tl, g->dtype, g->w_fp8, g->a_f32, p->opts, sizeof p->opts);
    st = kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_GEMM, p->opts);
    if (st != KP_OK) { /* a tuned tile this backend did not build: the default one */
        kp_gpu_gemm_tiles d;
        char dopts[256];
        kp_gpu_gemm_tiles_pick(h, &c->prof, g->dtype, g->w_fp8, 0, &d);
        kp_gpu_gemm_options(&d, g->dtype, g->w_fp8, g->a_f32, dopts, sizeof dopts);
        if (strcmp(dopts, p->opts) == 0 || kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_GEMM, dopts) != KP_OK) return st;
        h->log("grouped_gemm on %s: the tuned tile (%s) is not built for this device; using %s", c->t->name, p->opts,
               dopts);
        p->tl = d;
        snprintf(p->opts, sizeof p->opts, "%s", dopts);
    }
    kp_gpu_gemm_split(c, g, &p->small_max, &p->run_tiled, &p->run_small);
    uint64_t have = c->prof.static_local_mem;
    size_t small_lmem = (size_t)KP_GPU_GG_SMALL_M_MAX * (256 + KP_GPU_GG_SMALL_WG + KP_GPU_GG_SMALL_WG / 32 + 1) * 4 +
                        KP_GPU_GG_SMALL_M_MAX * 8;
    if (have && ((p->run_tiled && p->tl.lmem > have) || (p->run_small && small_lmem > have)))
        return h->set_error(KP_ERR_UNSUPPORTED,
                            "grouped_gemm: the %s kernels need %zu bytes of local memory; this device has %llu",
                            c->t->name, p->run_tiled ? p->tl.lmem : small_lmem, (unsigned long long)have);
    return KP_OK;
}

void kp_gpu_gemm_args(kp_gpu_launch *l, const kp_gpu_moe_gemm *g, const kp_moe_gemm_kargs *ka, void *partials) {
    kp_gpu_arg_view(l, g->a), kp_gpu_arg_view(l, g->gather), kp_gpu_arg_view(l, g->w);
    kp_gpu_arg_view(l, g->w_scale), kp_gpu_arg_view(l, g->offsets);
    kp_gpu_arg_view(l, g->out); /* out and outf: the mode picks (SWIGLU_FP8: e4m3 h and its scales) */
    kp_gpu_arg_view(l, g->mode == KP_MOE_GEMM_SWIGLU_FP8 ? g->out_scale : g->out);
    kp_gpu_arg_view(l, g->y), kp_gpu_arg_view(l, g->pos), kp_gpu_arg_view(l, g->tw);
    kp_gpu_arg_native(l, partials);
    if (g->a_fp8) kp_gpu_arg_view(l, g->a_scale); /* moe_gemm_fp8_gen2.cl's extra buffer */
    kp_gpu_arg_kargs(l, ka, sizeof *ka);
}

kp_moe_gemm_kargs kp_gpu_gemm_kargs(const kp_gpu_moe_gemm *g, int small_max) {
    kp_moe_gemm_kargs ka = {
        .a_off = g->a.off, .a_ld = g->a.ld, .gather_off = g->gather.off, .w_off = g->w.off, .w_se = g->w_se,
        .w_sn = g->w.ld, .ws_off = g->w_scale.off, .offsets_off = g->offsets.off, .out_off = g->out.off,
        .out_ld = g->out.ld, .y_off = g->y.off, .y_ld = g->y.ld, .pos_off = g->pos.off, .tw_off = g->tw.off,
        .a_rows = (int32_t)g->a_rows, .gather_k = g->gather_k, .ws_nb = (int32_t)((g->n + 127) / 128),
        .ws_kb = (int32_t)(g->k / 128), .n_exp = g->n_exp, .dense_rows = (int32_t)g->dense_rows,
        .m = (int32_t)g->m, .n = (int32_t)g->n, .k = (int32_t)g->k, .mode = g->mode, .n_out = (int32_t)g->n_out,
        .small_max = small_max, .y_rows = (int32_t)g->y_rows, .topk = g->topk, .ksplit = 1, .kslice = (int32_t)g->k,
        .as_off = g->a_scale.off, .as_t = g->as_t, .as_g = g->as_g,
        .os_off = g->out_scale.off, .os_t = g->out_scale.ld, .ue8m0 = g->ue8m0, .mask_m = g->mask_m,
    };
    return ka;
}

kp_status kp_gpu_moe_gemm_run(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int dry_run) {
    int gen;
    if (g->a_fp8) { /* W8A8: generation 2 by default wherever it can run; the sm_90a tier only when forced */
        const char *missing = kp_gpu_gemm8_missing(c, g);
        kp_status st = kp_gpu_kernel_gen_pick(c, "grouped_gemm", missing, 2, &gen);
        if (st != KP_OK) return st;
        if (gen == 2) return kp_gpu_moe_gemm8_run(c, g, dry_run);
        if (gen == 3) { /* KPORT_GPU_KERNELS=grouped_gemm=sm90 (the tuning table's gen 3 is not read here) */
            const char *m90 = kp_gpu_gemm_sm90_fp8_missing(c, g);
            if (kp_gpu_tier_disabled("sm90"))
                return c->host->set_error(KP_ERR_UNSUPPORTED, "%s: KPORT_GPU_KERNELS forces grouped_gemm onto the "
                                          "sm_90a tier, and KPORT_DISABLE_TIER turns that tier off", c->t->name);
            if (m90)
                return c->host->set_error(KP_ERR_UNSUPPORTED, "%s: KPORT_GPU_KERNELS forces grouped_gemm onto the "
                                          "sm_90a tier, whose W8A8 kernel cannot take this case: %s", c->t->name, m90);
            return kp_gpu_moe_gemm_sm90_fp8_run(c, g, dry_run);
        }
        if (missing)
            return c->host->set_error(KP_ERR_UNSUPPORTED,
                                      "grouped_gemm: FP8 e4m3 activations (W8A8) run on the generation-2 kernels "
                                      "only, and the %s ones cannot take this case: %s", c->t->name, missing);
        return c->host->set_error(KP_ERR_UNSUPPORTED,
                                  "grouped_gemm: FP8 e4m3 activations (W8A8) run on the generation-2 kernels only; "
                                  "the %s backend was asked for generation 1 (KPORT_GPU_KERNELS or the tuning "
                                  "table's grouped_gemm;gen)", c->t->name);
    }
    kp_status st = kp_gpu_kernel_gen_tier(c, "grouped_gemm", kp_gpu_gemm2_missing(c, g), kp_gpu_gemm_sm90_missing(c, g),
                                          &gen);
    if (st != KP_OK) return st;
    if (gen == 3) return kp_gpu_moe_gemm_sm90_run(c, g, dry_run);
    if (gen == 2) return kp_gpu_moe_gemm2_run(c, g, dry_run);
    gemm_plan p;
    static const char tiled[] = "kp_grouped_gemm_tiled", small[] = "kp_grouped_gemm_small";
    st = plan_make(c, g, &p);
    if (st != KP_OK) return st;
    if (p.run_tiled) kp_gpu_kernel_note(c, KP_GPU_NOTE_MAIN, 1, tiled);
    if (p.run_small) kp_gpu_kernel_note(c, KP_GPU_NOTE_MAIN, 1, small);
    if (dry_run) return st;
    int64_t rows = g->dense_rows > 0 ? (g->dense_rows < g->m ? g->dense_rows : g->m) : g->m;
    int64_t experts = g->dense_rows > 0 ? 1 : g->n_exp;
    int64_t cols = g->mode == KP_MOE_GEMM_SWIGLU ? g->n_out : g->n;
    if (rows <= 0 || cols <= 0) return KP_OK;
    int64_t busy = experts < rows ? experts : rows; /* experts that can have rows */
    kp_moe_gemm_kargs ka = kp_gpu_gemm_kargs(g, p.small_max);
    kp_gpu_launch l;
    if (p.run_tiled) {
        kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_GEMM, p.opts, tiled);
        kp_gpu_gemm_args(&l, g, &ka, NULL);
        int64_t per = g->mode == KP_MOE_GEMM_SWIGLU ? p.tl.bn / 2 : p.tl.bn;
        l.groups[0] = (uint64_t)((cols + per - 1) / per);
        l.groups[1] = (uint64_t)((rows + p.tl.bm - 1) / p.tl.bm + (g->dense_rows > 0 ? 0 : busy));
        l.local[0] = (uint32_t)p.tl.wg;
        if ((st = kp_gpu_enqueue(c, &l)) != KP_OK) return st;
    }
    if (p.run_small) {
        kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_GEMM, p.opts, small);
        kp_gpu_gemm_args(&l, g, &ka, NULL);
        int64_t per = g->mode == KP_MOE_GEMM_SWIGLU ? KP_GPU_GG_SMALL_WG / 64 : KP_GPU_GG_SMALL_WG / 32;
        l.groups[0] = (uint64_t)((cols + per - 1) / per), l.groups[1] = (uint64_t)busy;
        l.local[0] = KP_GPU_GG_SMALL_WG;
        if ((st = kp_gpu_enqueue(c, &l)) != KP_OK) return st;
    }
    return KP_OK;
}

kp_status kp_gpu_grouped_gemm(kp_gpu_ctx *c, const kp_grouped_gemm_params *p, int dry_run) {
    const int a_fp8 = p->a.dtype == KP_FP8_E4M3; /* W8A8: out's dtype is the kernel's */
    kp_gpu_moe_gemm g = {
        .dtype = a_fp8 ? p->out.dtype : p->a.dtype,
        .w_fp8 = p->w.dtype == KP_FP8_E4M3,
        .a = kp_gpu_view_of(&p->a),
        .a_rows = p->a.shape[0],
        .w = kp_gpu_view_of(&p->w),
        .w_se = p->w.strides[0],
        .w_scale = kp_gpu_view_of(&p->w_scale),
        .offsets = kp_gpu_view_of(&p->expert_offsets),
        .n_exp = (int32_t)p->w.shape[0],
        .m = p->a.shape[0],
        .n = p->w.shape[1],
        .k = p->w.shape[2],
        .mode = KP_MOE_GEMM_STORE,
        .out = kp_gpu_view_of(&p->out),
    };
    g.w.ld = p->w.strides[1];
    if (a_fp8) {
        const int col = p->a_scale_layout == KP_FP8_SCALE_COL_MAJOR;
        g.a_fp8 = 1, g.a_scale = kp_gpu_view_of(&p->a_scale);
        g.as_t = col ? p->a_scale.strides[1] : p->a_scale.strides[0];
        g.as_g = col ? p->a_scale.strides[0] : p->a_scale.strides[1];
    }
    if (g.m > INT32_MAX || g.n > INT32_MAX || g.k > INT32_MAX || g.n_exp < 1)
        return c->host->set_error(KP_ERR_UNSUPPORTED, "grouped_gemm: the %s kernels take M, N and K below 2^31",
                                  c->t->name);
    if (p->masked_m.buffer) { /* the masked layout: core checked M = E * max_m; the counts stay on the device */
        g.offsets = kp_gpu_view_of(&p->masked_m);
        g.mask_m = g.m > 0 ? (int32_t)(g.m / g.n_exp) : 1; /* max_m = 0: any mask_m > 0, every range clamps to M = 0 */
        g.max_rows_hint = g.mask_m; /* no expert has more rows: decode-sized max_m runs the rows kernels only */
    }
    return kp_gpu_moe_gemm_run(c, &g, dry_run);
}
