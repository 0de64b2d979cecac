/*
 * backends/gpu/gpu_dispatch.c — kp_gpu_op_run: one op slot body for every GPU plugin.
 */
#include "ops/gpu_ops.h"

kp_status kp_gpu_op_run(const kp_gpu_target *t, kp_op op, kp_stream *s, const void *params, int dry_run) {
    kp_gpu_ctx c = {.t = t, .s = s, .host = t->host};
    t->profile(s, &c.prof);
    kp_status st = kp_gpu_check_limits(&c, op, params);
    if (st != KP_OK) return st;
    switch (op) {
    case KP_OP_ATTENTION_PREFILL: return kp_gpu_attention_prefill(&c, params, dry_run);
    case KP_OP_ATTENTION_DECODE: return kp_gpu_attention_decode(&c, params, dry_run);
    case KP_OP_MLA_DECODE: return kp_gpu_mla_decode(&c, params, dry_run);
    case KP_OP_MOE_GATE: return kp_gpu_moe_gate(&c, params, dry_run);
    case KP_OP_MOE_ALIGN: return kp_gpu_moe_align(&c, params, dry_run);
    case KP_OP_GROUPED_GEMM: return kp_gpu_grouped_gemm(&c, params, dry_run);
    case KP_OP_MOE_COMBINE: return kp_gpu_moe_combine(&c, params, dry_run);
    case KP_OP_MOE_FORWARD: return kp_gpu_moe_forward(&c, params, dry_run);
    case KP_OP_KV_CACHE_STORE: return kp_gpu_kv_cache_store(&c, params, dry_run);
    case KP_OP_QUANTIZE_FP8: return kp_gpu_quantize_fp8(&c, params, dry_run);
    case KP_OP_COUNT: break;
    }
    return t->host->set_error(KP_ERR_UNSUPPORTED, "%s: unknown op %d", t->name, (int)op);
}

kp_status kp_gpu_variant_ok(kp_gpu_ctx *c, const char *source, const char *options) {
    return c->t->variant_check ? c->t->variant_check(c->s, source, options) : KP_OK;
}

kp_status kp_gpu_enqueue(kp_gpu_ctx *c, const kp_gpu_launch *l) {
    if (l->overflow)
        return c->host->set_error(KP_ERR_INTERNAL, "%s: more than %d arguments for kernel %s", c->t->name,
                                  KP_GPU_MAX_ARGS, l->kernel);
    return c->t->launch(c->s, l);
}
