/*
 * backends/cpu/ops/cpu_grouped_gemm.c — kp_grouped_gemm on the CPU backend.
 *
 * out[r, :] = a[r, :] · w[e]ᵀ for r in [expert_offsets[e], expert_offsets[e+1]), f32
 * accumulation (cpu_gemm.c). Work is split into (expert, column tile, row chunk)
 * tasks over the thread pool (tile sizes: the engine's plan). Offsets must be non-decreasing within [0, M]:
 * otherwise KP_ERR_INVALID_ARGUMENT and nothing is written. Rows outside every
 * expert's range are not touched. The masked layout (masked_m [E]): expert e's rows
 * e * max_m .. + min(max(masked_m[e], 0), max_m), max_m = M / E (cpu_expert_rows); any
 * count is valid (clamped), so nothing is checked.
 *
 * W8A8 (a FP8 e4m3 with per-token-group scales): each 128-wide K slice is its own
 * engine block (e4m3 a decoded exactly to bf16, so with FP8 weights the bf16 dot
 * products are exact and the weight block scale multiplies the slice's f32 sum), and
 * the slice's f32 result, times the row's activation scale, is added to the f32
 * accumulator: DeepGEMM's promotion, one scale per (row, slice), not per element.
 */
#include "cpu_gemm.h"

#include <stdatomic.h>
#include <stdlib.h>

typedef struct gg_job {
    const kp_grouped_gemm_params *p;
    cpu_gemm_plan plan;
    cpu_expert_tasks tasks;
    atomic_int failed;
} gg_job;

/* One W8A8 task (cpu_gemm_block_w8a8): the rows' e4m3 bytes and their scales, in
 * either of kp_quantize_fp8's layouts. */
static kp_status gg_task_w8a8(const gg_job *j, const cpu_expert_task *k, float *c) {
    const kp_grouped_gemm_params *p = j->p;
    const kp_tensor *sc = &p->a_scale;
    const int col = p->a_scale_layout == KP_FP8_SCALE_COL_MAJOR;
    const int64_t s_row = col ? sc->strides[1] : sc->strides[0], s_kb = col ? sc->strides[0] : sc->strides[1];
    const float *s0 = (const float *)cpu_tensor_data(sc);
    const uint8_t *rows[CPU_GEMM_MC_MAX];
    const float *scales[CPU_GEMM_MC_MAX];
    for (int i = 0; i < k->m; i++) {
        rows[i] = cpu_at2(&p->a, k->row0 + i, 0);
        scales[i] = s0 + (k->row0 + i) * s_row;
    }
    cpu_gemm_w w = cpu_gemm_expert(&p->w, &p->w_scale, k->e);
    return cpu_gemm_block_w8a8(&j->plan, rows, scales, s_kb, k->m, &w, k->n0, k->nc, c, j->plan.nc);
}

static void gg_range(void *ctx, int64_t begin, int64_t end) {
    gg_job *j = ctx;
    const kp_grouped_gemm_params *p = j->p;
    if (p->a.dtype == KP_FP8_E4M3) {
        float *c = cpu_gemm_out_buffer(&j->plan, 0);
        int ok = c != NULL;
        for (int64_t t = begin; t < end && ok; t++) {
            cpu_expert_task k = cpu_expert_task_at(&j->tasks, t);
            ok = gg_task_w8a8(j, &k, c) == KP_OK;
            for (int i = 0; ok && i < k.m; i++)
                cpu_store_row(j->plan.cvt, p->out.dtype, c + (size_t)i * j->plan.nc,
                              cpu_at2(&p->out, k.row0 + i, k.n0), k.nc);
        }
        if (!ok) atomic_store(&j->failed, 1);
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
    const int masked = p->masked_m.buffer != NULL;
    const int32_t *off = masked ? NULL : (const int32_t *)cpu_tensor_data(&p->expert_offsets);
    int64_t experts = p->w.shape[0], m = p->a.shape[0];
    cpu_moe_stream_lock(s);
    kp_status st = KP_OK;
    for (int64_t e = 0; !masked && e <= experts && st == KP_OK; e++) {
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
        int64_t ntasks =
            masked ? cpu_expert_tasks_init_masked(&job.tasks, &job.plan, (const int32_t *)cpu_tensor_data(&p->masked_m),
                                                  m / experts, experts, p->w.shape[1], start)
                   : cpu_expert_tasks_init(&job.tasks, &job.plan, off, experts, p->w.shape[1], start);
        cpu_pool_parallel_for(cpu_state(s)->pool, ntasks, 1, gg_range, &job);
        if (atomic_load(&job.failed))
            st = cpu_host()->set_error(KP_ERR_OUT_OF_MEMORY, "grouped_gemm: out of host memory for GEMM scratch");
    }
    free(start);
    cpu_moe_stream_unlock(s);
    return st;
}
