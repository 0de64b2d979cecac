/*
 * backends/cpu/cpu_limits.c — the CPU backend's index-width limits, checked in one
 * place before any op answers "supported?" or runs: every op slot of the iface is
 * cpu_op_run, so kp_op_supported and a call cannot disagree.
 *
 * The limits (the CPU code counts tiles, rows and ids in int / int32):
 *  - every extent of every tensor argument below 2^31;
 *  - attention_decode and mla_decode: s_q up to 2^24 (a work item holds all s_q query
 *    rows of its heads, and pads and counts them as int);
 *  - moe_forward: T * topk below 2^31 (its sorted row ids are int32).
 */
#include "cpu_internal.h"

#include <stdio.h>

static const kp_op_fn cpu_ops[KP_OP_COUNT] = {
    [KP_OP_ATTENTION_PREFILL] = cpu_op_attention_prefill,
    [KP_OP_ATTENTION_DECODE] = cpu_op_attention_decode,
    [KP_OP_MLA_DECODE] = cpu_op_mla_decode,
    [KP_OP_MOE_GATE] = cpu_op_moe_gate,
    [KP_OP_MOE_ALIGN] = cpu_op_moe_align,
    [KP_OP_GROUPED_GEMM] = cpu_op_grouped_gemm,
    [KP_OP_MOE_COMBINE] = cpu_op_moe_combine,
    [KP_OP_MOE_FORWARD] = cpu_op_moe_forward,
    [KP_OP_KV_CACHE_STORE] = cpu_op_kv_cache_store,
    [KP_OP_QUANTIZE_FP8] = cpu_op_quantize_fp8,
};

#define CPU_MAX_DECODE_S_Q (1 << 24)

static kp_status cpu_check_limits(kp_op op, const void *params) {
    const char *name = kp_backend_op_name(op);
    kp_status st = kp_backend_check_i32_extents(cpu_host(), "cpu", op, params);
    if (st != KP_OK) return st;
    const kp_tensor *q = NULL;
    if (op == KP_OP_ATTENTION_DECODE) q = &((const kp_attention_decode_params *)params)->q;
    if (op == KP_OP_MLA_DECODE) q = &((const kp_mla_decode_params *)params)->q;
    if (q && q->shape[1] > CPU_MAX_DECODE_S_Q)
        return cpu_host()->set_error(KP_ERR_UNSUPPORTED, "%s: s_q is %lld; the cpu backend takes s_q up to 2^24", name,
                                     (long long)q->shape[1]);
    if (op == KP_OP_MOE_FORWARD) {
        const kp_moe_forward_params *p = params;
        int64_t pairs = p->x.shape[0] * p->routing.topk; /* below 2^36: no overflow */
        if (pairs > INT32_MAX)
            return cpu_host()->set_error(KP_ERR_UNSUPPORTED,
                                         "%s: T * topk is %lld; the cpu backend numbers the (token, slot) pairs in "
                                         "32-bit integers: it must be below 2^31",
                                         name, (long long)pairs);
    }
    return KP_OK;
}

kp_status cpu_op_run(kp_op op, kp_stream *s, const void *params, int dry_run) {
    if ((unsigned)op >= KP_OP_COUNT)
        return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT, "cpu: op %d is not a kp_op", (int)op);
    kp_status st = cpu_check_limits(op, params);
    return st != KP_OK ? st : cpu_ops[op](op, s, params, dry_run);
}

/* kp_op_kernel: the op's own supported answer, then the SIMD level its kernels run at,
 * cpu_simd_active() (KPORT_CPU_SIMD): the level every op's kernel tables are chosen by. */
kp_status cpu_op_kernel(kp_op op, kp_stream *s, const void *params, char *name, size_t cap) {
    kp_status st = cpu_op_run(op, s, params, 1);
    if (st != KP_OK) return st;
    snprintf(name, cap, "cpu:%s", cpu_simd_name(cpu_simd_active()));
    return KP_OK;
}
