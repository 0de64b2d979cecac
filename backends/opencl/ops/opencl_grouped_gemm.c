/*
 * backends/opencl/ops/opencl_grouped_gemm.c — kp_grouped_gemm on the OpenCL backend,
 * and the grouped-GEMM launcher kp_moe_forward uses (kernels/moe/moe_gemm.cl).
 *
 * Selection (the same code answers dry runs):
 *   inner product  the tile-MMA layer (mma.sync through inline PTX) on NVIDIA for
 *                  16-bit activations; the f32 FMA tile for f32, and on devices
 *                  without matrix units (PoCL). Tuning "grouped_gemm" "mma" = 0/1
 *                  overrides (1 on PoCL runs the MMA layer's portable emulation).
 *   tiles          "tile_m", "tile_n", "tile_k" from the tuning table (defaults 64, 64,
 *                  32 for MMA, 16 for FMA; 128, 128, 32 for the FMA tile on devices
 *                  with >= 256 KiB of local memory, i.e. CPUs); a tuned tile that breaks the kernel's
 *                  divisibility rules or the device's local memory falls back to the
 *                  defaults.
 *   decode         experts with at most "small_m" (default 16, max 16) rows run the
 *                  weight-streaming kernel. The split is made on the device per expert,
 *                  so the host never reads the offsets: when the average expert has
 *                  more than small_m rows only the tiled kernel runs (small_max = 0);
 *                  when every expert has at most small_m rows (M <= small_m, or
 *                  kp_moe_forward's T <= small_m) only the small one does.
 * Work-group counts are upper bounds computed from M and E alone (tiles <= M/BM + min(E,
 * M)); work-groups past the real tile count exit at once.
 */
#include "opencl_moe_common.h"

#include <stdio.h>

#define SMALL_M_MAX 16 /* KP_GG_SMALL_M */
#define SMALL_WG 128   /* KP_GG_SM_WG: 4 weight rows per work-group */

typedef struct gemm_plan {
    int mma, bm, bn, bk, wg, small_max, run_tiled, run_small;
    size_t lmem;
} gemm_plan;

static size_t tiled_lmem(int mma, int bm, int bn, int bk, int fp8) {
    size_t stage = mma ? ((size_t)bm * (bk + 8) + (size_t)bn * (bk + 8) + 1) / 2 : (size_t)bk * (bm + 4 + bn + 4);
    size_t c = (size_t)bm * (bn + 4);
    return (stage > c ? stage : c) * 4 + (size_t)bm * 8 + (size_t)bn * (fp8 ? 12 : 8);
}

static int tiles_ok(int mma, int bm, int bn, int bk) {
    if (bm < 16 || bn < 16 || bk < 1 || bm > 256 || bn > 256 || bk > 128) return 0;
    if (mma) return bm % 32 == 0 && bn % 16 == 0 && bk % 16 == 0;
    return bm % 16 == 0 && bn % 16 == 0 && bm / 16 <= 8 && bn / 16 <= 8;
}

static kp_status plan_make(kp_stream *s, const kp_ocl_moe_gemm *g, gemm_plan *p) {
    const kp_host_services *h = kp_ocl_host();
    const kp_ocl_device *dev = kp_ocl_dev(s->device);
    const kp_device_info *info = &s->device->info;
    uint64_t have = info->local_mem_bytes;
    int mma = (int)h->tuning_get(info, "grouped_gemm", "mma", dev->desc.has_inline_ptx ? 1 : 0) != 0;
    if (g->dtype == KP_F32) mma = 0; /* the MMA layer takes 16-bit operands only */
    int dbk = mma ? 32 : 16;
    /* CPU-like devices (PoCL: 1 MiB of local memory) run the FMA tile faster at
     * 128x128x32 (4.7 vs 2.7 GFLOP/s at M 512, N K 1024 on the 2-core CI machine) */
    int big = !mma && have >= 256 * 1024;
    p->mma = mma;
    p->bm = (int)h->tuning_get(info, "grouped_gemm", "tile_m", big ? 128 : 64);
    p->bn = (int)h->tuning_get(info, "grouped_gemm", "tile_n", big ? 128 : 64);
    p->bk = (int)h->tuning_get(info, "grouped_gemm", "tile_k", big ? 32 : dbk);
    p->lmem = tiled_lmem(mma, p->bm, p->bn, p->bk, g->w_fp8);
    if (!tiles_ok(mma, p->bm, p->bn, p->bk) || (have && p->lmem > have)) {
        h->log("grouped_gemm: tuned tiles %dx%dx%d unusable here; using 64x64x%d", p->bm, p->bn, p->bk, dbk);
        p->bm = 64, p->bn = 64, p->bk = dbk;
        p->lmem = tiled_lmem(mma, 64, 64, dbk, g->w_fp8);
    }
    p->wg = mma ? 128 : 256;
    int64_t sm = h->tuning_get(info, "grouped_gemm", "small_m", SMALL_M_MAX);
    p->small_max = sm < 0 ? 0 : sm > SMALL_M_MAX ? SMALL_M_MAX : (int)sm;
    int64_t experts = g->dense_rows > 0 ? 1 : g->n_exp;
    int64_t rows = g->dense_rows > 0 ? (g->dense_rows < g->m ? g->dense_rows : g->m) : g->m;
    if (p->small_max == 0 || rows > (int64_t)p->small_max * experts) {
        p->small_max = 0, p->run_small = 0, p->run_tiled = 1;
    } else if (rows <= p->small_max || (g->max_rows_hint > 0 && g->max_rows_hint <= p->small_max)) {
        p->run_small = 1, p->run_tiled = 0;
    } else {
        p->run_small = 1, p->run_tiled = 1;
    }
    size_t small_lmem = (size_t)SMALL_M_MAX * (256 + SMALL_WG + SMALL_WG / 32 + 1) * 4 + SMALL_M_MAX * 8;
    if (have && ((p->run_tiled && p->lmem > have) || (p->run_small && small_lmem > have)))
        return h->set_error(KP_ERR_UNSUPPORTED,
                            "grouped_gemm: the opencl kernels need %zu bytes of local memory; this device has %llu",
                            p->run_tiled ? p->lmem : small_lmem, (unsigned long long)have);
    return KP_OK;
}

static void set_args(kp_ocl_args *a, const kp_ocl_moe_gemm *g, int small_max) {
    kp_ocl_arg_mem(a, g->a.mem);
    kp_ocl_arg_i64(a, g->a.off);
    kp_ocl_arg_i64(a, g->a.ld);
    kp_ocl_arg_i32(a, g->a_rows);
    kp_ocl_arg_mem(a, g->gather.mem);
    kp_ocl_arg_i64(a, g->gather.off);
    kp_ocl_arg_i32(a, g->gather_k);
    kp_ocl_arg_mem(a, g->w.mem);
    kp_ocl_arg_i64(a, g->w.off);
    kp_ocl_arg_i64(a, g->w_se);
    kp_ocl_arg_i64(a, g->w.ld);
    kp_ocl_arg_mem(a, g->w_scale.mem);
    kp_ocl_arg_i64(a, g->w_scale.off);
    kp_ocl_arg_i32(a, (g->n + 127) / 128);
    kp_ocl_arg_i32(a, g->k / 128);
    kp_ocl_arg_mem(a, g->offsets.mem);
    kp_ocl_arg_i64(a, g->offsets.off);
    kp_ocl_arg_i32(a, g->n_exp);
    kp_ocl_arg_i32(a, g->dense_rows);
    kp_ocl_arg_i32(a, g->m);
    kp_ocl_arg_i32(a, g->n);
    kp_ocl_arg_i32(a, g->k);
    kp_ocl_arg_i32(a, g->mode);
    kp_ocl_arg_i32(a, g->n_out);
    kp_ocl_arg_i32(a, small_max);
    kp_ocl_arg_mem(a, g->out.mem); /* out (dtype) and outf (f32): the same buffer, the mode picks */
    kp_ocl_arg_mem(a, g->out.mem);
    kp_ocl_arg_i64(a, g->out.off);
    kp_ocl_arg_i64(a, g->out.ld);
    kp_ocl_arg_mem(a, g->y.mem);
    kp_ocl_arg_i64(a, g->y.off);
    kp_ocl_arg_i64(a, g->y.ld);
    kp_ocl_arg_i32(a, g->y_rows);
    kp_ocl_arg_mem(a, g->pos.mem);
    kp_ocl_arg_i64(a, g->pos.off);
    kp_ocl_arg_mem(a, g->tw.mem);
    kp_ocl_arg_i64(a, g->tw.off);
    kp_ocl_arg_i32(a, g->topk);
}

kp_status kp_ocl_moe_gemm_run(kp_stream *s, const kp_ocl_moe_gemm *g, int dry_run) {
    gemm_plan p;
    kp_status st = plan_make(s, g, &p);
    if (st != KP_OK || dry_run) return st;
    int64_t rows = g->dense_rows > 0 ? (g->dense_rows < g->m ? g->dense_rows : g->m) : g->m;
    int64_t experts = g->dense_rows > 0 ? 1 : g->n_exp;
    int64_t cols = g->mode == KP_OCL_GG_SWIGLU ? g->n_out : g->n;
    if (rows <= 0 || cols <= 0) return KP_OK;
    char opts[256];
    snprintf(opts, sizeof opts, "%s%s%s%s -DKP_GG_BM=%d -DKP_GG_BN=%d -DKP_GG_BK=%d -DKP_GG_SM_WG=%d",
             kp_ocl_moe_dtype_define(g->dtype), g->w_fp8 ? " -DKP_GG_W_FP8" : "",
             g->a_f32 && g->dtype != KP_F32 ? " -DKP_GG_A_F32" : "", p.mma ? " -DKP_GG_MMA" : "", p.bm, p.bn, p.bk,
             SMALL_WG);
    kp_ocl_device *dev = kp_ocl_dev(s->device);
    cl_command_queue q = kp_ocl_queue(s);
    int64_t busy = experts < rows ? experts : rows; /* experts that can have rows */
    kp_ocl_args a = {0};
    if (p.run_tiled) {
        if ((st = kp_ocl_kernel_create(dev, KP_OCL_SRC_MOE_MOE_GEMM, opts, "kp_grouped_gemm_tiled", &a.k, NULL)))
            return st;
        set_args(&a, g, p.small_max);
        int64_t per = g->mode == KP_OCL_GG_SWIGLU ? p.bn / 2 : p.bn;
        int64_t tiles = (rows + p.bm - 1) / p.bm + (g->dense_rows > 0 ? 0 : busy);
        size_t global[2] = {(size_t)((cols + per - 1) / per) * (size_t)p.wg, (size_t)tiles};
        size_t local[2] = {(size_t)p.wg, 1};
        if ((st = kp_ocl_args_launch(&a, q, "kp_grouped_gemm_tiled", 2, global, local)) != KP_OK) return st;
    }
    if (p.run_small) {
        kp_ocl_args b = {0};
        if ((st = kp_ocl_kernel_create(dev, KP_OCL_SRC_MOE_MOE_GEMM, opts, "kp_grouped_gemm_small", &b.k, NULL)))
            return st;
        set_args(&b, g, p.small_max);
        int64_t per = g->mode == KP_OCL_GG_SWIGLU ? SMALL_WG / 64 : SMALL_WG / 32;
        size_t global[2] = {(size_t)((cols + per - 1) / per) * SMALL_WG, (size_t)busy};
        size_t local[2] = {SMALL_WG, 1};
        if ((st = kp_ocl_args_launch(&b, q, "kp_grouped_gemm_small", 2, global, local)) != KP_OK) return st;
    }
    return KP_OK;
}

kp_status kp_ocl_op_grouped_gemm(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_grouped_gemm_params *p = params;
    kp_ocl_moe_gemm g = {
        .dtype = p->a.dtype,
        .w_fp8 = p->w.dtype == KP_FP8_E4M3,
        .a = kp_ocl_moe_view_of(&p->a),
        .a_rows = p->a.shape[0],
        .w = kp_ocl_moe_view_of(&p->w),
        .w_se = p->w.strides[0],
        .w_scale = kp_ocl_moe_view_of(&p->w_scale),
        .offsets = kp_ocl_moe_view_of(&p->expert_offsets),
        .n_exp = (int32_t)p->w.shape[0],
        .m = p->a.shape[0],
        .n = p->w.shape[1],
        .k = p->w.shape[2],
        .mode = KP_OCL_GG_STORE,
        .out = kp_ocl_moe_view_of(&p->out),
    };
    g.w.ld = p->w.strides[1];
    if (g.m > INT32_MAX || g.n > INT32_MAX || g.k > INT32_MAX || g.n_exp < 1)
        return kp_ocl_host()->set_error(KP_ERR_UNSUPPORTED,
                                        "grouped_gemm: the opencl kernels take M, N and K below 2^31");
    return kp_ocl_moe_gemm_run(s, &g, dry_run);
}
