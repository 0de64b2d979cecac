/*
 * backends/cpu/ops/cpu_grouped_gemm.c — kp_grouped_gemm on the CPU backend.
 *
 * out[r, :] = a[r, :] · w[e]ᵀ for r in [expert_offsets[e], expert_offsets[e+1]), f32
 * accumulation (cpu_gemm.c). Work is split into (expert, column tile, row chunk)
 * tasks over the thread pool (tile sizes: the engine's plan). Offsets must be non-decreasing within [0, M]:
 * otherwise KP_ERR_INVALID_ARGUMENT and nothing is written. Rows outside every
 * expert's range are not touched.
 *
 * W8A8 (a FP8 e4m3 with per-token-group scales): each 128-wide K slice is its own
 * engine block (e4m3 a decoded exactly to bf16, so with FP8 weights the bf16 dot
 * products are exact and the weight block scale multiplies the slice's f32 sum), and
 * the slice's f32 result, times the row's activation scale, is added to the f32
 * accumulator: DeepGEMM's promotion, one scale per (row, slice), not per element.
 */
#include "cpu_gemm.h"
#include "cpu_gemm_kernels.h"

#include <stdatomic.h>
#include <stdlib.h>

typedef struct gg_job {
    const kp_grouped_gemm_params *p;
    cpu_gemm_plan plan;
    cpu_expert_tasks tasks;
    atomic_int failed;
} gg_job;

/* The activation scale of (row r, K slice kb) in either of kp_quantize_fp8's layouts. */
static float a_scale_at(const kp_grouped_gemm_params *p, int64_t r, int64_t kb) {
    const kp_tensor *t = &p->a_scale;
    int64_t i = p->a_scale_layout == KP_FP8_SCALE_COL_MAJOR ? kb * t->strides[0] + r * t->strides[1]
                                                             : r * t->strides[0] + kb * t->strides[1];
    return ((const float *)(cpu_buffer_data(t->buffer) + t->offset))[i];
}

/* One W8A8 task: c[i, 0 .. nc) = sum over K slices kb of slice(i, kb) * a_scale(row0 + i, kb).
 * a16: m * 128 bf16 of scratch, cs: the slice's f32 block. */
static kp_status gg_task_w8a8(const gg_job *j, const cpu_expert_task *k, uint16_t *a16, float *cs, float *c) {
    const kp_grouped_gemm_params *p = j->p;
    const int ldc = j->plan.nc;
    const unsigned char *rows[CPU_GEMM_MC_MAX];
    cpu_gemm_w w = cpu_gemm_expert(&p->w, &p->w_scale, k->e), ws = w;
    ws.k = CPU_GEMM_FP8_BLOCK;
    for (int i = 0; i < k->m; i++) {
        rows[i] = (const unsigned char *)(a16 + (size_t)i * CPU_GEMM_FP8_BLOCK);
        memset(c + (size_t)i * ldc, 0, (size_t)k->nc * sizeof *c);
    }
    for (int64_t kb = 0; kb < w.k / CPU_GEMM_FP8_BLOCK; kb++) {
        const int64_t k0 = kb * CPU_GEMM_FP8_BLOCK;
        for (int i = 0; i < k->m; i++) { /* e4m3 -> bf16 is exact: the table holds |x|, the sign moves over */
            const uint8_t *src = cpu_at2(&p->a, k->row0 + i, k0);
            uint16_t *dst = a16 + (size_t)i * CPU_GEMM_FP8_BLOCK;
            for (int l = 0; l < CPU_GEMM_FP8_BLOCK; l++)
                dst[l] = (uint16_t)(cpu_gemm_fp8_bf16[src[l] & 0x7f] | ((src[l] & 0x80u) << 8));
        }
        ws.base = w.base + k0;
        ws.scale = w.scale + kb * w.scale_ld1;
        kp_status st = cpu_gemm_block(&j->plan, rows, k->m, &ws, k->n0, k->nc, cs, ldc);
        if (st != KP_OK) return st;
        for (int i = 0; i < k->m; i++) {
            const float s = a_scale_at(p, k->row0 + i, kb);
            float *ci = c + (size_t)i * ldc;
            const float *si = cs + (size_t)i * ldc;
            for (int n = 0; n < k->nc; n++) ci[n] += si[n] * s;
        }
    }
    return KP_OK;
}

static void gg_range(void *ctx, int64_t begin, int64_t end) {
    gg_job *j = ctx;
    const kp_grouped_gemm_params *p = j->p;
    if (p->a.dtype == KP_FP8_E4M3) {
        float *c = cpu_gemm_out_buffer(&j->plan, 0), *cs = cpu_gemm_out_buffer(&j->plan, 1);
        uint16_t *a16 = malloc((size_t)j->plan.mc * CPU_GEMM_FP8_BLOCK * sizeof *a16);
        int ok = c && cs && a16;
        for (int64_t t = begin; t < end && ok; t++) {
            cpu_expert_task k = cpu_expert_task_at(&j->tasks, t);
            ok = gg_task_w8a8(j, &k, a16, cs, c) == KP_OK;
            for (int i = 0; ok && i < k.m; i++)
                cpu_store_row(j->plan.cvt, p->out.dtype, c + (size_t)i * j->plan.nc,
                              cpu_at2(&p->out, k.row0 + i, k.n0), k.nc);
        }
        if (!ok) atomic_store(&j->failed, 1);
        free(a16);
        return;
    }
    float *c = cpu_gemm_out_buffer(&j->plan, 0);
    const unsigned char *rows[CPU_GEMM_MC_MAX];
    if (!c) {
        atomic_store(&j->failed, 1);
        return;
    }
    for (int64_t t = begin; t < end; t++) {
        cpu_expert_task k = cpu_expert_task_at(&j->tasks, t);
        cpu_gemm_w w = cpu_gemm_expert(&p->w, &p->w_scale, k.e);
        for (int i = 0; i < k.m; i++) rows[i] = cpu_at2(&p->a, k.row0 + i, 0);
        if (cpu_gemm_block(&j->plan, rows, k.m, &w, k.n0, k.nc, c, j->plan.nc) != KP_OK) {
            atomic_store(&j->failed, 1);
            return;
        }
        for (int i = 0; i < k.m; i++)
            cpu_store_row(j->plan.cvt, p->out.dtype, c + (size_t)i * j->plan.nc, cpu_at2(&p->out, k.row0 + i, k.n0),
                          k.nc);
    }
}

kp_status cpu_op_grouped_gemm(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_grouped_gemm_params *p = params;
    if (dry_run) return KP_OK; /* f32/f16/bf16, FP8 weights with f16/bf16 or e4m3 (W8A8) activations: all run */
    const int32_t *off = (const int32_t *)cpu_tensor_data(&p->expert_offsets);
    int64_t experts = p->w.shape[0], m = p->a.shape[0];
    cpu_moe_stream_lock(s);
    kp_status st = KP_OK;
    for (int64_t e = 0; e <= experts && st == KP_OK; e++) {
        if (off[e] < 0 || off[e] > m)
            st = cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                       "grouped_gemm: expert_offsets[%lld] is %d; offsets must lie in [0, M = %lld]",
                                       (long long)e, (int)off[e], (long long)m);
        else if (e > 0 && off[e] < off[e - 1])
            st = cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                       "grouped_gemm: expert_offsets[%lld] = %d is below expert_offsets[%lld] = %d; "
                                       "offsets must be non-decreasing",
                                       (long long)e, (int)off[e], (long long)(e - 1), (int)off[e - 1]);
    }
    int64_t *start = NULL;
    if (st == KP_OK && !(start = malloc((size_t)(experts + 1) * sizeof *start)))
        st = cpu_host()->set_error(KP_ERR_OUT_OF_MEMORY, "grouped_gemm: out of host memory for the task list");
    if (st == KP_OK) {
        gg_job job = {.p = p,
                      .plan = p->a.dtype == KP_FP8_E4M3 /* rows decoded to bf16 (exact) */
                                  ? cpu_gemm_plan_make(&cpu_state(s)->info, KP_BF16, KP_BF16, p->w.dtype)
                                  : cpu_gemm_plan_make(&cpu_state(s)->info, p->a.dtype, p->a.dtype, p->w.dtype)};
        atomic_init(&job.failed, 0);
        int64_t ntasks = cpu_expert_tasks_init(&job.tasks, &job.plan, off, experts, p->w.shape[1], start);
        cpu_pool_parallel_for(cpu_state(s)->pool, ntasks, 1, gg_range, &job);
        if (atomic_load(&job.failed))
            st = cpu_host()->set_error(KP_ERR_OUT_OF_MEMORY, "grouped_gemm: out of host memory for GEMM scratch");
    }
    free(start);
    cpu_moe_stream_unlock(s);
    return st;
}
