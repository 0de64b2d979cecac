/*
 * backends/cpu/ops/cpu_quantize_fp8.c — kp_quantize_fp8 on the CPU backend: per token
 * and 128-wide group, the f32 amax, the scale (amax / 448, or UE8M0: the power of two
 * at or above it), and e4m3(x / scale) (cpu_fp8.h).
 */
#include "cpu_fp8.h"
#include "cpu_gemm.h"

#define QUANT_AMAX_FLOOR 1e-10f /* an all-zero group still gets a finite, positive scale */

/* The smallest power of two s with 448 * s >= amax: exact, from amax's bits
 * (amax = 2^e * 1.f; 448 * 2^(e-8) = 1.75 * 2^e covers it when 1.f <= 1.75). */
static float ue8m0_scale(float amax) {
    uint32_t u;
    memcpy(&u, &amax, 4);
    int e = (int)(u >> 23) - 127;
    return ldexpf(1.0f, (u & 0x7fffffu) <= 0x600000u ? e - 8 : e - 7);
}

typedef struct quant_job {
    const kp_quantize_fp8_params *p;
    const cpu_kernels *cvt;
    int64_t groups, s_t, s_g; /* scale strides of token and group, in elements */
} quant_job;

static void quant_range(void *ctx, int64_t t0, int64_t t1) {
    const quant_job *j = ctx;
    const kp_quantize_fp8_params *p = j->p;
    float *scales = (float *)cpu_tensor_data(&p->scale);
    float row[KP_FP8_GROUP];
    for (int64_t t = t0; t < t1; t++)
        for (int64_t g = 0; g < j->groups; g++) {
            cpu_load_row(j->cvt, p->x.dtype, cpu_at2(&p->x, t, g * KP_FP8_GROUP), row, KP_FP8_GROUP);
            float amax = QUANT_AMAX_FLOOR;
            for (int i = 0; i < KP_FP8_GROUP; i++) amax = fmaxf(amax, fabsf(row[i]));
            float s = p->scale_ue8m0 ? ue8m0_scale(amax) : amax / CPU_FP8_MAX;
            uint8_t *out = cpu_at2(&p->out, t, g * KP_FP8_GROUP);
            for (int i = 0; i < KP_FP8_GROUP; i++) out[i] = cpu_f32_to_e4m3(row[i] / s);
            scales[t * j->s_t + g * j->s_g] = s;
        }
}

kp_status cpu_op_quantize_fp8(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_quantize_fp8_params *p = params;
    if (dry_run) return KP_OK;
    quant_job job = {p, cpu_state(s)->kernels, p->x.shape[1] / KP_FP8_GROUP, 0, 0};
    int col = p->scale_layout == KP_FP8_SCALE_COL_MAJOR;
    job.s_t = col ? 1 : p->scale.strides[0];
    job.s_g = col ? p->scale.strides[0] : 1;
    cpu_moe_stream_lock(s);
    cpu_pool_parallel_for(cpu_state(s)->pool, p->x.shape[0], 4, quant_range, &job);
    cpu_moe_stream_unlock(s);
    return KP_OK;
}
