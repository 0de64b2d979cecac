/*
 * backends/gpu/gpu_limits.c — the index widths of the GPU kernels, checked in one
 * place (kp_gpu_op_run) before any op plans, answers "supported?" or launches, so
 * kp_op_supported and a call agree and nothing is enqueued past a limit.
 *
 * The kernels take counts, token and row indices as 32-bit ints and element offsets
 * and strides as 64-bit. So, on every GPU backend:
 *  - every extent of every tensor argument is below 2^31 (gate and combine give each
 *    token a work-group; prefill's tokens, GEMM rows, N and K are ints);
 *  - attention_decode and mla_decode: B * s_q * h_q query rows below 2^31;
 *  - moe_forward: its rows T * topk below 2^31.
 * (kp_moe_align's T * topk < 2^30 is the core's rule, for every backend.)
 */
#include "ops/gpu_ops.h"

#define KP_GPU_I32_RULE "the %s kernels count them in 32-bit integers: it must be below 2^31"

kp_status kp_gpu_check_limits(kp_gpu_ctx *c, kp_op op, const void *params) {
    const char *name = kp_backend_op_name(op);
    kp_status st = kp_backend_check_i32_extents(c->host, c->t->name, op, params);
    if (st != KP_OK) return st;
    const kp_tensor *q = NULL;
    if (op == KP_OP_ATTENTION_DECODE) q = &((const kp_attention_decode_params *)params)->q;
    if (op == KP_OP_MLA_DECODE) q = &((const kp_mla_decode_params *)params)->q;
    int64_t n;
    if (q && (__builtin_mul_overflow(q->shape[0], q->shape[1], &n) || __builtin_mul_overflow(n, q->shape[2], &n) ||
              n > INT32_MAX))
        return c->host->set_error(KP_ERR_UNSUPPORTED, "%s: B * s_q * h_q (query rows) is %lld * %lld * %lld; " KP_GPU_I32_RULE,
                                  name, (long long)q->shape[0], (long long)q->shape[1], (long long)q->shape[2],
                                  c->t->name);
    if (op == KP_OP_MOE_FORWARD) {
        const kp_moe_forward_params *p = params;
        n = p->x.shape[0] * p->routing.topk; /* below 2^37: no overflow */
        if (n > INT32_MAX)
            return c->host->set_error(KP_ERR_UNSUPPORTED, "%s: T * topk (rows) is %lld; " KP_GPU_I32_RULE,
                                      name, (long long)n, c->t->name);
    }
    return KP_OK;
}
