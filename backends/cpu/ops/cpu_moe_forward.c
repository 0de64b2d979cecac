/*
 * backends/cpu/ops/cpu_moe_forward.c — kp_moe_forward on the CPU backend: the routed
 * expert layer in one call, in the caller's workspace only.
 *
 *   1. gate (cpu_moe_gate_rows) -> topk ids and weights;
 *   2. align (counting sort, block size 1: the CPU tiles need no padding);
 *   3. per (expert, column tile of inter, row chunk): x rows gathered through
 *      sorted_ids, x·w13ᵀ for the tile's gate columns and its up columns, SwiGLU in
 *      the epilogue -> h [rows, inter] in x's dtype (x·w13ᵀ is never stored);
 *   4. h·w2ᵀ -> y [rows, hidden] in x's dtype (f32 accumulation, one rounding on store);
 *   5. combine y with the topk weights in slot order (f32), plus the shared expert:
 *      its SwiGLU MLP runs as a one-"expert" grouped GEMM over all T rows, and its
 *      second GEMM's epilogue does the combine, adding its own output last.
 *
 * W8A8 (activation_dtype KP_FP8_E4M3): before step 3, x is quantized per token and
 * 128-column group (kp_quantize_fp8's rule) into the workspace; steps 3 and 4 run the
 * W8A8 engine (cpu_gemm_block_w8a8: per-slice f32 sums, scaled once); step 3's column
 * tiles are whole multiples of 128, so the SwiGLU epilogue quantizes each 128-column
 * group of h straight from f32 into e4m3 with its scale (h never exists in x's dtype).
 * An FP8 shared expert runs W8A8 the same way (its h_s e4m3 with its own scales); one
 * in x's dtype keeps x's dtype. Without W8A8, FP8 shared weights run W8A16 in the engine.
 *
 * Workspace: the layout of core/ops/op_moe_forward.c (kp_moe_forward_workspace_bytes),
 * each region aligned to 256 bytes: topk_ids, topk_weights, token_pos [T*k];
 * sorted_ids [T*k]; expert_offsets [E+1]; then in x's dtype: SwiGLU [T*k, inter]
 * (x·w13ᵀ is never stored); ·w2ᵀ [T*k, hidden]; the shared expert's SwiGLU [T, inter_s].
 * W8A8: SwiGLU in e4m3 instead; after the shared region, e4m3 x [T, hidden], x's
 * scales [T, hidden/128], h's scales [T*k, inter/128] (f32, row-major); with an FP8
 * shared expert its SwiGLU region is e4m3 and its scales [T, inter_s/128] follow; the
 * f32 h region after them is the GPU backends' (h is quantized in the epilogue here).
 */
#include "cpu_fp8.h"
#include "cpu_gemm.h"

#include <stdatomic.h>

#define WS_ALIGN 256
#define MAX_EXPERTS 512

static size_t ws_align(size_t n) { return (n + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN; }

typedef enum stage { STAGE_W13, STAGE_W2, STAGE_SHARED_W13, STAGE_SHARED_W2 } stage;

typedef struct fwd_job {
    const kp_moe_forward_params *p;
    const kp_device_info *info; /* the tuning table's device */
    int64_t t, k, hidden, inter, inter_s;
    int32_t *ids, *token_pos, *sorted_ids, *offsets;
    float *weights;
    unsigned char *h, *y, *h_s; /* intermediates, in act (x's dtype); W8A8: h in e4m3 */
    int w8a8, ue8m0, s8;        /* s8: W8A8 with an FP8 shared expert */
    uint8_t *xq;                /* W8A8: e4m3 x [T, hidden] */
    float *xs, *hs, *hs_s;      /* W8A8: scales of x [T, hidden/128], of h [T*k, inter/128], of h_s */
    kp_dtype act;
    size_t act_size;
    cpu_gemm_plan plan;
    cpu_expert_tasks tasks;
    stage stage;
    cpu_gemm_w shared_w;
    cpu_combine_src combine;
    atomic_int failed;
} fwd_job;

static void gate_range(void *ctx, int64_t t0, int64_t t1) { cpu_moe_gate_rows(ctx, t0, t1); }

/* W8A8: x's rows [t0, t1) -> e4m3 xq and its scales xs (kp_quantize_fp8's rule). */
static void quant_x_range(void *ctx, int64_t t0, int64_t t1) {
    const fwd_job *j = ctx;
    const int64_t groups = j->hidden / CPU_FP8_GROUP;
    float row[CPU_FP8_GROUP];
    for (int64_t t = t0; t < t1; t++)
        for (int64_t g = 0; g < groups; g++) {
            cpu_load_row(j->plan.cvt, j->act, cpu_at2(&j->p->x, t, g * CPU_FP8_GROUP), row, CPU_FP8_GROUP);
            j->xs[t * groups + g] =
                cpu_fp8_quantize_group(row, j->xq + t * j->hidden + g * CPU_FP8_GROUP, j->ue8m0);
        }
}

/* One W8A8 task: a w13 stage (routed or shared: SwiGLU, h quantized per 128-column
 * group in the epilogue) or a w2 stage (routed: y stored in x's dtype; shared: the
 * combine epilogue adds the routed outputs and its own). */
static kp_status w8a8_task(fwd_job *j, const cpu_expert_task *k, float *c, float *u) {
    const kp_moe_forward_params *p = j->p;
    const uint8_t *rows[CPU_GEMM_MC_MAX];
    const float *scales[CPU_GEMM_MC_MAX];
    const int ldc = j->plan.nc, shared = j->stage == STAGE_SHARED_W13 || j->stage == STAGE_SHARED_W2;
    const int64_t inter = shared ? j->inter_s : j->inter, hgroups = inter / CPU_FP8_GROUP;
    uint8_t *const h = shared ? j->h_s : j->h;
    float *const hs = shared ? j->hs_s : j->hs;
    kp_status st;
    if (j->stage == STAGE_W13 || j->stage == STAGE_SHARED_W13) {
        cpu_gemm_w w = shared ? j->shared_w : cpu_gemm_expert(&p->w13, &p->w13_scale, k->e);
        for (int i = 0; i < k->m; i++) {
            int64_t tok = shared ? k->row0 + i : j->sorted_ids[k->row0 + i] / j->k;
            rows[i] = j->xq + tok * j->hidden;
            scales[i] = j->xs + tok * (j->hidden / CPU_FP8_GROUP);
        }
        if ((st = cpu_gemm_block_w8a8(&j->plan, rows, scales, 1, k->m, &w, k->n0, k->nc, c, ldc)) ||
            (st = cpu_gemm_block_w8a8(&j->plan, rows, scales, 1, k->m, &w, inter + k->n0, k->nc, u, ldc)))
            return st;
        for (int i = 0; i < k->m; i++) { /* n0 and nc are multiples of 128: whole groups */
            const int64_t r = k->row0 + i;
            float *g = c + (size_t)i * ldc;
            cpu_gemm_swiglu(g, u + (size_t)i * ldc, k->nc);
            for (int l = 0; l < k->nc; l += CPU_FP8_GROUP)
                hs[r * hgroups + (k->n0 + l) / CPU_FP8_GROUP] =
                    cpu_fp8_quantize_group(g + l, h + r * inter + k->n0 + l, j->ue8m0);
        }
        return KP_OK;
    }
    cpu_gemm_w w = shared ? j->shared_w : cpu_gemm_expert(&p->w2, &p->w2_scale, k->e);
    for (int i = 0; i < k->m; i++) {
        rows[i] = h + (k->row0 + i) * inter;
        scales[i] = hs + (k->row0 + i) * hgroups;
    }
    if ((st = cpu_gemm_block_w8a8(&j->plan, rows, scales, 1, k->m, &w, k->n0, k->nc, c, ldc))) return st;
    for (int i = 0; i < k->m; i++) {
        if (shared)
            cpu_moe_combine_row(&j->combine, k->row0 + i, k->n0, k->nc, c + (size_t)i * ldc, p->out.dtype,
                                cpu_at2(&p->out, k->row0 + i, k->n0));
        else
            cpu_store_row(j->plan.cvt, j->act, c + (size_t)i * ldc,
                          j->y + ((size_t)(k->row0 + i) * j->hidden + k->n0) * j->act_size, k->nc);
    }
    return KP_OK;
}

/* A shared expert's weights [N, K] (FP8: + scales [ceil(N/128), K/128]). */
static cpu_gemm_w dense_weights(const kp_tensor *w, const kp_tensor *scale) {
    cpu_gemm_w g;
    memset(&g, 0, sizeof g);
    g.dtype = w->dtype;
    g.base = cpu_at2(w, 0, 0);
    g.ld = w->strides[0];
    g.n = w->shape[0];
    g.k = w->shape[1];
    if (w->dtype == KP_FP8_E4M3) {
        g.scale = (const float *)cpu_tensor_data(scale);
        g.scale_ld0 = scale->strides[0];
        g.scale_ld1 = scale->strides[1];
    }
    return g;
}

/* Whether stage sg runs the W8A8 engine. */
static int stage_w8a8(const fwd_job *j, stage sg) {
    return (j->w8a8 && (sg == STAGE_W13 || sg == STAGE_W2)) ||
           (j->s8 && (sg == STAGE_SHARED_W13 || sg == STAGE_SHARED_W2));
}

static void gemm_range(void *ctx, int64_t begin, int64_t end) {
    fwd_job *j = ctx;
    const kp_moe_forward_params *p = j->p;
    float *c = cpu_gemm_out_buffer(&j->plan, 0), *u = cpu_gemm_out_buffer(&j->plan, 1);
    const unsigned char *rows[CPU_GEMM_MC_MAX];
    const int ldc = j->plan.nc;
    if (!c || !u) {
        atomic_store(&j->failed, 1);
        return;
    }
    for (int64_t t = begin; t < end; t++) {
        cpu_expert_task k = cpu_expert_task_at(&j->tasks, t);
        kp_status st = KP_OK;
        if (stage_w8a8(j, j->stage)) {
            if ((st = w8a8_task(j, &k, c, u)) != KP_OK) {
                atomic_store(&j->failed, 1);
                return;
            }
            continue;
        }
        switch (j->stage) {
        case STAGE_W13:
        case STAGE_SHARED_W13: {
            int shared = j->stage == STAGE_SHARED_W13;
            int64_t inter = shared ? j->inter_s : j->inter;
            cpu_gemm_w w = shared ? j->shared_w : cpu_gemm_expert(&p->w13, &p->w13_scale, k.e);
            for (int i = 0; i < k.m; i++) {
                int64_t tok = shared ? k.row0 + i : j->sorted_ids[k.row0 + i] / j->k;
                rows[i] = cpu_at2(&p->x, tok, 0);
            }
            st = cpu_gemm_block(&j->plan, rows, k.m, &w, k.n0, k.nc, c, ldc);
            if (st == KP_OK) st = cpu_gemm_block(&j->plan, rows, k.m, &w, inter + k.n0, k.nc, u, ldc);
            if (st != KP_OK) break;
            unsigned char *h = shared ? j->h_s : j->h;
            for (int i = 0; i < k.m; i++) {
                float *g = c + (size_t)i * ldc;
                cpu_gemm_swiglu(g, u + (size_t)i * ldc, k.nc);
                cpu_store_row(j->plan.cvt, j->act, g, h + ((size_t)(k.row0 + i) * inter + k.n0) * j->act_size, k.nc);
            }
            break;
        }
        case STAGE_W2: {
            cpu_gemm_w w = cpu_gemm_expert(&p->w2, &p->w2_scale, k.e);
            for (int i = 0; i < k.m; i++) rows[i] = j->h + (size_t)(k.row0 + i) * j->inter * j->act_size;
            st = cpu_gemm_block(&j->plan, rows, k.m, &w, k.n0, k.nc, c, ldc);
            if (st != KP_OK) break;
            for (int i = 0; i < k.m; i++)
                cpu_store_row(j->plan.cvt, j->act, c + (size_t)i * ldc,
                              j->y + ((size_t)(k.row0 + i) * j->hidden + k.n0) * j->act_size, k.nc);
            break;
        }
        case STAGE_SHARED_W2: {
            for (int i = 0; i < k.m; i++)
                rows[i] = j->h_s + (size_t)(k.row0 + i) * j->inter_s * j->act_size;
            st = cpu_gemm_block(&j->plan, rows, k.m, &j->shared_w, k.n0, k.nc, c, ldc);
            if (st != KP_OK) break;
            for (int i = 0; i < k.m; i++)
                cpu_moe_combine_row(&j->combine, k.row0 + i, k.n0, k.nc, c + (size_t)i * ldc, p->out.dtype,
                                    cpu_at2(&p->out, k.row0 + i, k.n0));
            break;
        }
        }
        if (st != KP_OK) {
            atomic_store(&j->failed, 1);
            return;
        }
    }
}

static void combine_range(void *ctx, int64_t t0, int64_t t1) {
    const fwd_job *j = ctx;
    for (int64_t t = t0; t < t1; t++)
        cpu_moe_combine_row(&j->combine, t, 0, j->hidden, NULL, j->p->out.dtype, cpu_at2(&j->p->out, t, 0));
}

/* One grouped-GEMM stage over the pool. */
static void run_stage(fwd_job *j, cpu_pool *pool, stage sg, const int32_t *off, int64_t experts, int64_t n,
                      kp_dtype a_dtype, kp_dtype w_dtype, int64_t *start) {
    if (atomic_load(&j->failed)) return;
    j->stage = sg;
    if (stage_w8a8(j, sg)) {
        /* e4m3 rows decoded exactly to bf16; column tiles of whole 128-column groups */
        j->plan = cpu_gemm_plan_make(j->info, KP_BF16, KP_BF16, KP_FP8_E4M3);
        j->plan.nc = (j->plan.nc + CPU_FP8_GROUP - 1) / CPU_FP8_GROUP * CPU_FP8_GROUP;
    } else {
        j->plan = cpu_gemm_plan_make(j->info, j->p->x.dtype, a_dtype, w_dtype);
    }
    int64_t ntasks = cpu_expert_tasks_init(&j->tasks, &j->plan, off, experts, n, start);
    cpu_pool_parallel_for(pool, ntasks, 1, gemm_range, j);
}

kp_status cpu_op_moe_forward(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_moe_forward_params *p = params;
    if (dry_run) return KP_OK; /* every dtype combination the core accepts runs here */
    fwd_job j;
    memset(&j, 0, sizeof j);
    j.p = p;
    j.info = &cpu_state(s)->info;
    j.t = p->x.shape[0];
    j.hidden = p->x.shape[1];
    j.k = p->routing.topk;
    j.inter = p->w13.shape[1] / 2;
    j.inter_s = p->shared_w13.buffer ? p->shared_w13.shape[0] / 2 : 0;
    j.act = p->x.dtype;
    j.act_size = kp_dtype_size(j.act);
    j.w8a8 = p->activation_dtype == KP_FP8_E4M3;
    j.ue8m0 = p->activation_scale_ue8m0;
    j.s8 = j.w8a8 && j.inter_s && p->shared_w13.dtype == KP_FP8_E4M3;
    int64_t experts = p->w13.shape[0];
    size_t pairs = (size_t)(j.t * j.k), rows = pairs; /* align with block size 1: no padding rows */
    unsigned char *ws = cpu_buffer_data(p->workspace) + p->workspace_offset;
    j.ids = (int32_t *)ws;
    ws += ws_align(pairs * 4);
    j.weights = (float *)ws;
    ws += ws_align(pairs * 4);
    j.token_pos = (int32_t *)ws;
    ws += ws_align(pairs * 4);
    j.sorted_ids = (int32_t *)ws;
    ws += ws_align(rows * 4);
    j.offsets = (int32_t *)ws;
    ws += ws_align(((size_t)experts + 1) * 4);
    j.h = ws;
    ws += ws_align(rows * (size_t)j.inter * (j.w8a8 ? 1 : j.act_size));
    j.y = ws;
    ws += ws_align(rows * (size_t)j.hidden * j.act_size);
    j.h_s = ws;
    if (j.w8a8) { /* sizes checked by the core (kp_moe_forward_workspace_bytes) */
        ws += j.inter_s ? ws_align((size_t)(j.t * j.inter_s) * (j.s8 ? 1 : j.act_size)) : 0;
        j.xq = ws;
        ws += ws_align((size_t)(j.t * j.hidden));
        j.xs = (float *)ws;
        ws += ws_align((size_t)(j.t * j.hidden) / CPU_FP8_GROUP * 4);
        j.hs = (float *)ws;
        ws += ws_align((size_t)(j.t * j.k * j.inter) / CPU_FP8_GROUP * 4);
        j.hs_s = (float *)ws; /* s8 only */
    }
    atomic_init(&j.failed, 0);

    cpu_pool *pool = cpu_state(s)->pool;
    cpu_moe_stream_lock(s);
    cpu_gate_job gate = {
        .logits = cpu_at2(&p->router_logits, 0, 0),
        .logits_dtype = p->router_logits.dtype,
        .logits_ld = p->router_logits.strides[0],
        .e = experts,
        .bias = p->bias.buffer ? (const float *)cpu_tensor_data(&p->bias) : NULL,
        .r = p->routing,
        .ids = j.ids,
        .ids_ld = j.k,
        .weights = j.weights,
        .weights_ld = j.k,
    };
    cpu_pool_parallel_for(pool, j.t, 16, gate_range, &gate);
    cpu_moe_align_fill(j.ids, (int64_t)pairs, (int32_t)experts, 1, j.sorted_ids, (int64_t)pairs, j.offsets,
                       j.token_pos);

    int64_t start[MAX_EXPERTS + 1];
    if (j.w8a8) {
        j.plan.cvt = cpu_state(s)->kernels;
        cpu_pool_parallel_for(pool, j.t, 4, quant_x_range, &j);
    }
    run_stage(&j, pool, STAGE_W13, j.offsets, experts, j.inter, p->x.dtype, p->w13.dtype, start);
    run_stage(&j, pool, STAGE_W2, j.offsets, experts, j.hidden, j.act, p->w2.dtype, start);
    j.combine = (cpu_combine_src){.y = j.y,
                                  .y_dtype = j.act,
                                  .y_ld = j.hidden,
                                  .y_rows = (int64_t)pairs,
                                  .pos = j.token_pos,
                                  .pos_ld = j.k,
                                  .weights = j.weights,
                                  .weights_ld = j.k,
                                  .k = j.k,
                                  .cvt = cpu_state(s)->kernels};
    if (p->shared_w13.buffer) {
        int32_t all[2] = {0, (int32_t)j.t};
        j.shared_w = dense_weights(&p->shared_w13, &p->shared_w13_scale);
        run_stage(&j, pool, STAGE_SHARED_W13, all, 1, j.inter_s, p->x.dtype, p->shared_w13.dtype, start);
        j.shared_w = dense_weights(&p->shared_w2, &p->shared_w2_scale);
        run_stage(&j, pool, STAGE_SHARED_W2, all, 1, j.hidden, j.act, p->shared_w2.dtype, start);
    } else if (!atomic_load(&j.failed)) {
        cpu_pool_parallel_for(pool, j.t, 4, combine_range, &j);
    }
    cpu_moe_stream_unlock(s);
    if (atomic_load(&j.failed))
        return cpu_host()->set_error(KP_ERR_OUT_OF_MEMORY, "moe_forward: out of host memory for GEMM scratch");
    return KP_OK;
}
