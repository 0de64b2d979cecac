/*
 * backends/gpu/ops/gpu_grouped_gemm_gen2.c — the grouped GEMM's generation-2 plan
 * (kernels/moe/moe_gemm_gen2.cl): tiles from the device's local memory, the prefill and
 * decode kernels, split-K for decode grids too small to fill the device.
 *
 * The tile table, keyed by the local memory a work-group may use (profile.local_mem),
 * first match wins:
 *
 *   local memory   rows/expert  tile (BM x BN x BK)  groups   stages  local bytes  where
 *                                                                  (blocks/SM)
 *   >= 160 KiB     > 64         128 x 128 x 32       2 x 4    4       84,480       A100 (163 KiB), H100/H200 (227 KiB: 2 blocks/SM)
 *   >= 160 KiB     <= 64        64 x 128 x 32        2 x 4    4       63,488
 *   >= 96 KiB      > 64         128 x 128 x 32       2 x 4    3       70,144       sm_86/89/120 (99 KiB)
 *   >= 96 KiB      <= 64        64 x 128 x 32        2 x 4    3       48,128
 *   CPU devices    any          64 x 64 x 32         2 x 2    2       21,760       PoCL: the portable fragments
 *   else           any          64 x 128 x 32        2 x 4    2       35,840       48 KiB (OpenCL on NVIDIA), 64 KiB LDS (AMD)
 *
 * (blocks/SM: 2 in the >= 160 KiB rows, 1 elsewhere, passed as G2_MIN_BLOCKS so that
 * ptxas holds registers to 128 a thread; e4m3 weights' 128-row tile takes 1 there:
 * its K-slice fragments double the accumulators, 200-207 registers without spills
 * (the 64-row one fits 128); groups of 32
 * work-items: 8 warps on NVIDIA; "rows/expert": M / min(E, M), the rows
 * an expert with rows has on average, known on the host without reading the offsets;
 * local bytes: KP_MOE_GEMM2_LOCAL_BYTES, moe_kargs.h.) The CUDA plugin embeds the
 * >= 160 KiB rows (its build profile is sm_90's); a 99 KiB GPU gets its tiles from NVRTC
 * at first use.
 * Decode experts (at most small_m rows) stream their weights with 8 groups of 32, 4
 * weight rows a group (2 for e4m3, whose decode needs more registers), K staged 256 at
 * a time. Split-K: when the decode grid has fewer than 2 work-groups per compute unit
 * and only the decode kernel runs, K is cut into slices of at least 512 until it has;
 * the slices' f32 partials go to the stream's scratch and a reduce kernel applies the
 * epilogue.
 */
#include "gpu_ops.h"

#include <stdint.h>
#include <stdio.h>

#define ROWS_KC KP_MOE_GEMM2_ROWS_KC
#define ROWS_MIN_SLICE 512 /* K per split-K slice, at least */

/* The element alignment a 16-byte vector access needs, for elements of es bytes. */
static int aligned16(kp_gpu_ctx *c, kp_gpu_view v, size_t es, size_t vec) {
    if (!v.buf) return 1;
    uint32_t base = kp_gpu_base_align(c->t, v.buf, v.addr);
    return base >= vec && ((uint64_t)v.off * es) % vec == 0 && ((uint64_t)v.ld * es) % vec == 0;
}

const char *kp_gpu_gemm2_missing(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g) {
    if (g->dtype == KP_F32) return "f32 runs generation 1's FMA tile (generation 2 takes 16-bit activations)";
    if (g->k % 8) return "K is not a multiple of 8 (generation 2 moves 16-byte chunks of a row)";
    size_t aes = g->a_f32 ? 4 : 2, wes = g->w_fp8 ? 1 : 2, wvec = g->w_fp8 ? 8 : 16;
    if (!aligned16(c, g->a, aes, 16) || !aligned16(c, g->w, wes, wvec) ||
        ((uint64_t)g->w_se * wes) % wvec)
        return "a row of a or w is not 16-byte aligned (offsets and strides)";
    return NULL;
}

void kp_gpu_gemm2_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int w_fp8, int64_t avg_rows,
                            int use_tuning, kp_gpu_gemm2_tile *t) {
    int small = avg_rows <= 64;
    kp_gpu_gemm2_tile r = {64, 128, 32, 2, 4, 2, 1, 8, w_fp8 ? 2 : 4};
    if (p->cpu) r.bn = 64, r.wn = 2;
    else if (p->local_mem >= 160 * 1024) r.bm = small ? 64 : 128, r.stages = 4, r.min_blocks = w_fp8 && !small ? 1 : 2;
    else if (p->local_mem >= 96 * 1024) r.bm = small ? 64 : 128, r.stages = 3;
    if (use_tuning) { /* ci/gpu-check's sweep: stages 2..4, tile_m 64 or 128 (NVRTC builds what is not embedded) */
        int64_t st = h->tuning_get(p->info, "grouped_gemm", "g2_stages", r.stages);
        int64_t bm = h->tuning_get(p->info, "grouped_gemm", "g2_tile_m", r.bm);
        kp_gpu_gemm2_tile u = r;
        u.stages = st >= 2 && st <= 4 ? (int)st : r.stages;
        u.bm = bm == 64 || bm == 128 ? (int)bm : r.bm;
        if (KP_MOE_GEMM2_LOCAL_BYTES((uint64_t)u.bm, (uint64_t)u.bn, (uint64_t)u.bk, (uint64_t)u.stages) *
                (uint64_t)u.min_blocks <= p->local_mem)
            r = u;
        else
            h->log("grouped_gemm: tuned generation-2 tile (%d rows, %d stages) does not fit; using the table's",
                   u.bm, u.stages);
    }
    *t = r;
}

void kp_gpu_gemm2_options(const kp_gpu_gemm2_tile *t, kp_dtype dt, int w_fp8, int a_f32, char *buf, size_t n) {
    snprintf(buf, n, "%s%s%s -DG2_BM=%d -DG2_BN=%d -DG2_BK=%d -DG2_WM=%d -DG2_WN=%d -DG2_STAGES=%d -DG2_MIN_BLOCKS=%d "
             "-DG2R_WARPS=%d -DG2R_RPW=%d", kp_gpu_dtype_define(dt), w_fp8 ? " -DKP_GG_W_FP8" : "",
             a_f32 ? " -DKP_GG_A_F32" : "", t->bm, t->bn, t->bk, t->wm, t->wn, t->stages, t->min_blocks, t->rows_warps,
             t->rows_rpw);
}

kp_status kp_gpu_moe_gemm2_run(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int dry_run) {
    const kp_host_services *h = c->host;
    int small_max, run_tiled, run_small;
    kp_gpu_gemm_split(c, g, &small_max, &run_tiled, &run_small);
    int64_t rows = g->dense_rows > 0 ? (g->dense_rows < g->m ? g->dense_rows : g->m) : g->m;
    int64_t experts = g->dense_rows > 0 ? 1 : g->n_exp;
    int64_t busy = experts < rows ? experts : rows; /* experts that can have rows */
    kp_gpu_gemm2_tile t;
    char opts[320];
    const int64_t avg_rows = busy > 0 ? rows / busy : 0;
    const kp_gpu_plan_key key = {{KP_GPU_PLAN_GEMM2, (uint64_t)g->dtype, (uint64_t)g->w_fp8, (uint64_t)g->a_f32,
                                  (uint64_t)avg_rows}};
    uint64_t gen;
    const int cached = kp_gpu_plan_lookup(c, &key, &t, sizeof t, opts, sizeof opts, &gen);
    if (!cached) {
        kp_gpu_gemm2_tile_pick(h, &c->prof, g->w_fp8, avg_rows, 1, &t);
        kp_gpu_gemm2_options(&t, g->dtype, g->w_fp8, g->a_f32, opts, sizeof opts);
        if (kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_GEMM2, opts) != KP_OK) { /* a tuned tile not built here */
            kp_gpu_gemm2_tile_pick(h, &c->prof, g->w_fp8, avg_rows, 0, &t);
            kp_gpu_gemm2_options(&t, g->dtype, g->w_fp8, g->a_f32, opts, sizeof opts);
        }
    }
    const int tiled_threads = t.wm * t.wn * 32, rows_threads = t.rows_warps * 32;
    const size_t tiled_bytes = KP_MOE_GEMM2_LOCAL_BYTES((size_t)t.bm, (size_t)t.bn, (size_t)t.bk, (size_t)t.stages);
    const size_t rows_bytes = KP_MOE_GEMM2_ROWS_LOCAL_BYTES((size_t)rows_threads, (size_t)(t.rows_warps * t.rows_rpw));
    if ((run_tiled && tiled_bytes > c->prof.local_mem) || (run_small && rows_bytes > c->prof.local_mem) ||
        (uint32_t)tiled_threads > c->prof.max_group || (uint32_t)rows_threads > c->prof.max_group)
        return h->set_error(KP_ERR_UNSUPPORTED, "grouped_gemm: the %s generation-2 kernels need %zu bytes of local "
                            "memory and %d work-items; %s has %llu and %u", c->t->name,
                            run_tiled ? tiled_bytes : rows_bytes, tiled_threads, c->prof.info ? c->prof.info->name : "?",
                            (unsigned long long)c->prof.local_mem, c->prof.max_group);
    kp_status st = cached ? KP_OK : kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_GEMM2, opts);
    if (st == KP_OK && !cached) kp_gpu_plan_store(c, &key, gen, &t, sizeof t, opts);
    static const char tiled[] = "kp_grouped_gemm_gen2_tiled", decode[] = "kp_grouped_gemm_gen2_rows";
    if (run_tiled) kp_gpu_kernel_note(c, KP_GPU_NOTE_MAIN, 2, tiled);
    if (run_small) kp_gpu_kernel_note(c, KP_GPU_NOTE_MAIN, 2, decode); /* not its split-K reduce */
    if (st != KP_OK || dry_run) return st;
    int64_t cols = g->mode == KP_MOE_GEMM_SWIGLU ? g->n_out : g->n;
    if (rows <= 0 || cols <= 0) return KP_OK;

    kp_moe_gemm_kargs ka = kp_gpu_gemm_kargs(g, small_max);
    kp_gpu_launch l;
    if (run_tiled) {
        kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_GEMM2, opts, tiled);
        kp_gpu_gemm_args(&l, g, &ka, NULL);
        int64_t per = g->mode == KP_MOE_GEMM_SWIGLU ? t.bn / 2 : t.bn;
        l.groups[0] = (uint64_t)((cols + per - 1) / per);
        l.groups[1] = (uint64_t)((rows + t.bm - 1) / t.bm + (g->dense_rows > 0 ? 0 : busy));
        l.local[0] = (uint32_t)tiled_threads, l.local_bytes = (uint32_t)tiled_bytes;
        if ((st = kp_gpu_enqueue(c, &l)) != KP_OK) return h->add_context(st, "grouped_gemm (generation 2)");
    }
    if (!run_small) return KP_OK;

    const int cols_per = t.rows_warps * t.rows_rpw;
    int64_t per = g->mode == KP_MOE_GEMM_SWIGLU ? cols_per / 2 : cols_per;
    int64_t col_groups = (cols + per - 1) / per, groups = col_groups * busy;
    int64_t want = 2 * (int64_t)(c->prof.compute_units > 0 ? c->prof.compute_units : 1);
    int ksplit = 1;
    if (!run_tiled && groups < want && g->k >= 2 * ROWS_MIN_SLICE) {
        int64_t ns = (want + groups - 1) / groups, most = g->k / ROWS_MIN_SLICE;
        ksplit = (int)(ns < most ? ns : most);
    }
    void *scratch[2] = {NULL, NULL};
    if (ksplit > 1) {
        int64_t slice = (g->k + ksplit - 1) / ksplit;
        slice = (slice + ROWS_KC - 1) / ROWS_KC * ROWS_KC;
        ksplit = (int)((g->k + slice - 1) / slice);
        ka.ksplit = ksplit, ka.kslice = (int32_t)slice;
        size_t bytes[2] = {(size_t)ksplit * (size_t)g->m * (size_t)g->n * sizeof(float), 16};
        if ((st = kp_gpu_scratch_acquire(c, bytes, scratch)) != KP_OK)
            return h->add_context(st, "grouped_gemm: split-K partials");
    }
    kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_GEMM2, opts, decode);
    kp_gpu_gemm_args(&l, g, &ka, scratch[0]);
    l.groups[0] = (uint64_t)col_groups, l.groups[1] = (uint64_t)busy, l.groups[2] = (uint64_t)ksplit;
    l.local[0] = (uint32_t)rows_threads, l.local_bytes = (uint32_t)rows_bytes;
    st = kp_gpu_enqueue(c, &l);
    if (st == KP_OK && ksplit > 1) {
        kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_GEMM2, opts, "kp_grouped_gemm_gen2_reduce");
        kp_gpu_gemm_args(&l, g, &ka, scratch[0]);
        l.groups[0] = (uint64_t)((cols + rows_threads - 1) / rows_threads), l.groups[1] = (uint64_t)busy;
        l.local[0] = (uint32_t)rows_threads;
        st = kp_gpu_enqueue(c, &l);
    }
    if (ksplit > 1) c->t->scratch_release(c->s, scratch);
    return st == KP_OK ? st : h->add_context(st, "grouped_gemm (generation 2)");
}

/* ---- W8A8: e4m3 activations and weights (kernels/moe/moe_gemm_fp8_gen2.cl) ----------
 *
 *   local memory   rows/expert  tile (BM x BN, K 128)  groups  stages  local bytes  where
 *   >= 160 KiB     > 64         128 x 128               2 x 4   4       155,136      A100, H100/H200
 *   >= 160 KiB     <= 64        64 x 128                2 x 4   4       116,224
 *   >= 96 KiB      > 64         128 x 128               2 x 4   2       79,360       sm_86/89/120
 *   >= 96 KiB      <= 64        64 x 128                2 x 4   3       87,808
 *   else, CPUs     any          64 x 64                 2 x 2   2       39,680       48 KiB (OpenCL on NVIDIA), PoCL
 * (KP_MOE_GEMM8_LOCAL_BYTES.) Tuning: "g8_stages" (2..4), "g8_tile_m" (16, 32, 64 or
 * 128; 16 and 32 rows take one row of groups, which wave64 devices cannot pair into
 * 32-row waves: the table's tile there), kept only when they fit.
 *
 * Decode (kp_grouped_gemm_fp8_rows, moe_gemm_fp8_rows.h): 256 work-items, 8 per weight
 * row (32 weight rows a work-group), row tiles of 16, 37,696 bytes of local memory (every
 * device above). It runs instead of the tiled kernel, for every expert, when the
 * decode split (kp_gpu_gemm_split: "small_m") sends experts to a decode kernel and
 * either every expert is known to be small or the rows an expert has on average are at
 * most "g8r_avg_m" (default 8; 0 turns the rows kernel off): V3 at T = 128 (1,024 rows
 * over 256 experts) has 4. Split-K as generation 2's: when the grid has fewer than 2
 * work-groups per compute unit, K is cut into slices of at least "g8r_min_slice" (512,
 * a multiple of 128), the partials go to the stream's scratch and
 * kp_grouped_gemm_fp8_reduce applies the epilogue. */

#define G8R_THREADS 256
#define G8R_AVG_M 8
#define G8R_MIN_SLICE 512
_Static_assert(G8R_THREADS * KP_MOE_GEMM8_ROWS_M * 4 <= KP_MOE_GEMM8_ROWS_X_BYTES,
               "the rows kernel's cross-work-item sum reuses the staged activations");

const char *kp_gpu_gemm8_missing(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g) {
    if (!aligned16(c, g->a, 1, 16) || !aligned16(c, g->w, 1, 16) || g->w_se % 16)
        return "a row of the e4m3 a or w is not 16-byte aligned (offsets and strides)";
    return NULL;
}

void kp_gpu_gemm8_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int64_t avg_rows, int use_tuning,
                            kp_gpu_gemm8_tile *t) {
    const int small = avg_rows <= 64;
    kp_gpu_gemm8_tile r = {64, 64, 2, 2, 2, 1};
    if (!p->cpu && p->local_mem >= 160 * 1024) r = (kp_gpu_gemm8_tile){small ? 64 : 128, 128, 2, 4, 4, 1};
    else if (!p->cpu && p->local_mem >= 96 * 1024) r = (kp_gpu_gemm8_tile){small ? 64 : 128, 128, 2, 4, small ? 3 : 2, 1};
    if (use_tuning) {
        kp_gpu_gemm8_tile u = r;
        int64_t st = h->tuning_get(p->info, "grouped_gemm", "g8_stages", r.stages);
        int64_t bm = h->tuning_get(p->info, "grouped_gemm", "g8_tile_m", r.bm);
        u.stages = st >= 2 && st <= 4 ? (int)st : r.stages;
        u.bm = bm == 16 || bm == 32 || bm == 64 || bm == 128 ? (int)bm : r.bm;
        if (u.bm < 32 * u.wm) u.wn *= u.wm, u.wm = 1; /* 16/32 rows: one row of groups, BN / (16 wn) >= 1 */
        /* the kernel's 16-column wave tiles; on wave64 (AMD MFMA) units pair into waves of 32 rows */
        if (u.bn % (16 * u.wn) || (p->warp == 64 && (u.wm % 2 || u.bm % 32))) u = r;
        if (KP_MOE_GEMM8_LOCAL_BYTES((uint64_t)u.bm, (uint64_t)u.bn, (uint64_t)u.stages) * (uint64_t)u.min_blocks <=
            p->local_mem)
            r = u;
        else
            h->log("grouped_gemm: tuned W8A8 tile (%d rows, %d stages) does not fit; using the table's", u.bm,
                   u.stages);
    }
    *t = r;
}

/* SWIGLU_FP8 (kp_moe_forward's W8A8 w13 GEMM, the SwiGLU epilogue quantizing h): 64 x 256
 * tiles, so the 128 h columns of a tile are one whole 1 x 128 group; groups 2 x 4 (the
 * fragments of a group as at 128 x 128), as many stages (4, 3, 2) as fit; CPUs 2 stages.
 *   local memory  stages  local bytes
 *   >= 190 KiB    4       193,536      H100/H200
 *   >= 143 KiB    3       146,176      A100
 *   >= 97 KiB     2       98,816       sm_86/89/120, PoCL
 *   else          none: h in f32, then the quantize kernel (48 KiB: OpenCL on NVIDIA) */
int kp_gpu_gemm8_fused_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int use_tuning,
                                 kp_gpu_gemm8_tile *t) {
    if (use_tuning && h->tuning_get(p->info, "grouped_gemm", "g8_fused_swiglu", 1) == 0) return 0;
    for (int st = p->cpu ? 2 : 4; st >= 2; st--) {
        if (KP_MOE_GEMM8_LOCAL_BYTES((uint64_t)64, (uint64_t)256, (uint64_t)st) <= p->local_mem) {
            *t = (kp_gpu_gemm8_tile){64, 256, 2, 4, st, 1};
            return 1;
        }
    }
    return 0;
}

void kp_gpu_gemm8_options(const kp_gpu_gemm8_tile *t, kp_dtype out_dt, char *buf, size_t n) {
    snprintf(buf, n, "%s -DKP_GG_A_FP8 -DKP_GG_W_FP8 -DG8_BM=%d -DG8_BN=%d -DG8_WM=%d -DG8_WN=%d -DG8_STAGES=%d "
             "-DG8_MIN_BLOCKS=%d", kp_gpu_dtype_define(out_dt), t->bm, t->bn, t->wm, t->wn, t->stages, t->min_blocks);
}

/* Whether the decode kernel takes g (see the table above): decode-sized experts, an
 * epilogue it knows, and a device it fits. */
static int gemm8_use_rows(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int64_t avg_rows) {
    int small_max, run_tiled, run_small;
    kp_gpu_gemm_split(c, g, &small_max, &run_tiled, &run_small);
    int64_t avg_m = c->host->tuning_get(c->prof.info, "grouped_gemm", "g8r_avg_m", G8R_AVG_M);
    if (!run_small || avg_m <= 0 || (run_tiled && avg_rows > avg_m)) return 0;
    if (g->mode != KP_MOE_GEMM_STORE && g->mode != KP_MOE_GEMM_STORE_F32 && g->mode != KP_MOE_GEMM_SWIGLU &&
        g->mode != KP_MOE_GEMM_COMBINE)
        return 0; /* another epilogue: the tiled kernel's */
    return KP_MOE_GEMM8_ROWS_LOCAL_BYTES((uint64_t)G8R_THREADS) <= c->prof.local_mem &&
           (uint32_t)G8R_THREADS <= c->prof.max_group;
}

/* The decode kernel over every expert (row tiles of 16), split-K where the grid is small. */
static kp_status gemm8_rows_run(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, const char *opts, int64_t rows,
                                int64_t cols, int64_t busy) {
    const kp_host_services *h = c->host;
    const int64_t cols_per = G8R_THREADS / KP_MOE_GEMM8_ROWS_TPR;
    const int64_t per = g->mode == KP_MOE_GEMM_SWIGLU ? cols_per / 2 : cols_per;
    const int64_t col_groups = (cols + per - 1) / per;
    const int64_t tiles = (rows + KP_MOE_GEMM8_ROWS_M - 1) / KP_MOE_GEMM8_ROWS_M + (g->dense_rows > 0 ? 0 : busy);
    const int64_t want = 2 * (int64_t)(c->prof.compute_units > 0 ? c->prof.compute_units : 1);
    const int64_t groups = col_groups * busy; /* the work-groups with rows, at least */
    int64_t min_slice = h->tuning_get(c->prof.info, "grouped_gemm", "g8r_min_slice", G8R_MIN_SLICE);
    min_slice = min_slice < 128 ? 128 : (min_slice + 127) / 128 * 128;
    kp_moe_gemm_kargs ka = kp_gpu_gemm_kargs(g, 0);
    int ksplit = 1;
    if (groups < want && g->k >= 2 * min_slice && (uint64_t)g->m * (uint64_t)g->n <= SIZE_MAX / 4 / 64) {
        int64_t ns = (want + groups - 1) / groups, most = g->k / min_slice;
        ns = ns < most ? ns : most;
        ns = ns < 64 ? ns : 64; /* the partials' bytes: at most 64 x M x N x 4 */
        int64_t slice = (g->k + ns - 1) / ns;
        slice = (slice + 127) / 128 * 128;
        ksplit = (int)((g->k + slice - 1) / slice);
        ka.ksplit = ksplit, ka.kslice = (int32_t)slice;
    }
    kp_status st;
    void *scratch[2] = {NULL, NULL};
    if (ksplit > 1) {
        size_t bytes[2] = {(size_t)ksplit * (size_t)g->m * (size_t)g->n * sizeof(float), 16};
        if ((st = kp_gpu_scratch_acquire(c, bytes, scratch)) != KP_OK)
            return h->add_context(st, "grouped_gemm (W8A8 decode): split-K partials");
    }
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_GEMM8, opts, "kp_grouped_gemm_fp8_rows");
    kp_gpu_gemm_args(&l, g, &ka, scratch[0]);
    l.groups[0] = (uint64_t)col_groups, l.groups[1] = (uint64_t)tiles, l.groups[2] = (uint64_t)ksplit;
    l.local[0] = G8R_THREADS, l.local_bytes = (uint32_t)KP_MOE_GEMM8_ROWS_LOCAL_BYTES(G8R_THREADS);
    st = kp_gpu_enqueue(c, &l);
    if (st == KP_OK && ksplit > 1) {
        kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_GEMM8, opts, "kp_grouped_gemm_fp8_reduce");
        kp_gpu_gemm_args(&l, g, &ka, scratch[0]);
        l.groups[0] = (uint64_t)((cols + G8R_THREADS - 1) / G8R_THREADS), l.groups[1] = (uint64_t)tiles;
        l.local[0] = G8R_THREADS;
        st = kp_gpu_enqueue(c, &l);
    }
    if (ksplit > 1) c->t->scratch_release(c->s, scratch);
    return st == KP_OK ? st : h->add_context(st, "grouped_gemm (W8A8 decode)");
}

kp_status kp_gpu_moe_gemm8_run(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int dry_run) {
    const kp_host_services *h = c->host;
    int64_t rows = g->dense_rows > 0 ? (g->dense_rows < g->m ? g->dense_rows : g->m) : g->m;
    int64_t experts = g->dense_rows > 0 ? 1 : g->n_exp;
    int64_t busy = experts < rows ? experts : rows; /* experts that can have rows */
    const int64_t avg_rows = busy > 0 ? rows / busy : 0;
    kp_gpu_gemm8_tile t;
    char opts[256];
    const int fused = g->mode == KP_MOE_GEMM_SWIGLU_FP8;
    const kp_gpu_plan_key key = {
        {KP_GPU_PLAN_GEMM8, (uint64_t)g->dtype, (uint64_t)(avg_rows > 64) | (uint64_t)fused << 1}};
    uint64_t gen;
    const int cached = kp_gpu_plan_lookup(c, &key, &t, sizeof t, opts, sizeof opts, &gen);
    if (!cached && fused) {
        if (!kp_gpu_gemm8_fused_tile_pick(h, &c->prof, 0, &t)) /* the caller asked after checking: never here */
            return h->set_error(KP_ERR_INTERNAL, "grouped_gemm: no W8A8 SwiGLU-quantize tile fits %s",
                                c->prof.info ? c->prof.info->name : "?");
        kp_gpu_gemm8_options(&t, g->dtype, opts, sizeof opts);
    } else if (!cached) {
        kp_gpu_gemm8_tile_pick(h, &c->prof, avg_rows, 1, &t);
        kp_gpu_gemm8_options(&t, g->dtype, opts, sizeof opts);
        if (kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_GEMM8, opts) != KP_OK) { /* a tuned tile not built here */
            kp_gpu_gemm8_tile_pick(h, &c->prof, avg_rows, 0, &t);
            kp_gpu_gemm8_options(&t, g->dtype, opts, sizeof opts);
        }
    }
    const int threads = t.wm * t.wn * 32;
    const size_t bytes = KP_MOE_GEMM8_LOCAL_BYTES((size_t)t.bm, (size_t)t.bn, (size_t)t.stages);
    if (bytes > c->prof.local_mem || (uint32_t)threads > c->prof.max_group)
        return h->set_error(KP_ERR_UNSUPPORTED, "grouped_gemm: the %s W8A8 kernel needs %zu bytes of local memory "
                            "and %d work-items; %s has %llu and %u", c->t->name, bytes, threads,
                            c->prof.info ? c->prof.info->name : "?", (unsigned long long)c->prof.local_mem,
                            c->prof.max_group);
    kp_status st = cached ? KP_OK : kp_gpu_variant_ok(c, KP_GPU_SRC_MOE_GEMM8, opts);
    if (st == KP_OK && !cached) kp_gpu_plan_store(c, &key, gen, &t, sizeof t, opts);
    static const char kernel[] = "kp_grouped_gemm_fp8_gen2_tiled";
    kp_gpu_kernel_note(c, KP_GPU_NOTE_MAIN, 2, kernel);
    if (st != KP_OK || dry_run) return st;
    const int swiglu = g->mode == KP_MOE_GEMM_SWIGLU || fused;
    int64_t cols = swiglu ? g->n_out : g->n;
    if (rows <= 0 || cols <= 0) return KP_OK;

    if (gemm8_use_rows(c, g, avg_rows)) return gemm8_rows_run(c, g, opts, rows, cols, busy);
    kp_moe_gemm_kargs ka = kp_gpu_gemm_kargs(g, 0);
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_MOE_GEMM8, opts, kernel);
    kp_gpu_gemm_args(&l, g, &ka, NULL);
    int64_t per = swiglu ? t.bn / 2 : t.bn;
    l.groups[0] = (uint64_t)((cols + per - 1) / per);
    l.groups[1] = (uint64_t)((rows + t.bm - 1) / t.bm + (g->dense_rows > 0 ? 0 : busy));
    l.local[0] = (uint32_t)threads, l.local_bytes = (uint32_t)bytes;
    st = kp_gpu_enqueue(c, &l);
    return st == KP_OK ? st : h->add_context(st, "grouped_gemm (W8A8, generation 2)");
}
