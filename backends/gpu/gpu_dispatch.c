/*
 * backends/gpu/gpu_dispatch.c — kp_gpu_op_run: one op slot body for every GPU plugin.
 */
#include "ops/gpu_ops.h"

static kp_status op_run(kp_gpu_ctx *c, kp_op op, const void *params, int dry_run) {
    c->t->profile(c->s, &c->prof);
    kp_status st = kp_gpu_check_limits(c, op, params);
    if (st != KP_OK) return st;
    switch (op) {
    case KP_OP_ATTENTION_PREFILL: return kp_gpu_attention_prefill(c, params, dry_run);
    case KP_OP_ATTENTION_DECODE: return kp_gpu_attention_decode(c, params, dry_run);
    case KP_OP_MLA_DECODE: return kp_gpu_mla_decode(c, params, dry_run);
    case KP_OP_MOE_GATE: return kp_gpu_moe_gate(c, params, dry_run);
    case KP_OP_MOE_ALIGN: return kp_gpu_moe_align(c, params, dry_run);
    case KP_OP_GROUPED_GEMM: return kp_gpu_grouped_gemm(c, params, dry_run);
    case KP_OP_MOE_COMBINE: return kp_gpu_moe_combine(c, params, dry_run);
    case KP_OP_MOE_FORWARD: return kp_gpu_moe_forward(c, params, dry_run);
    case KP_OP_KV_CACHE_STORE: return kp_gpu_kv_cache_store(c, params, dry_run);
    case KP_OP_QUANTIZE_FP8: return kp_gpu_quantize_fp8(c, params, dry_run);
    case KP_OP_COUNT: break;
    }
    return c->host->set_error(KP_ERR_UNSUPPORTED, "%s: unknown op %d", c->t->name, (int)op);
}

kp_status kp_gpu_op_run(const kp_gpu_target *t, kp_op op, kp_stream *s, const void *params, int dry_run) {
    kp_gpu_ctx c = {.t = t, .s = s, .host = t->host};
    return op_run(&c, op, params, dry_run);
}

kp_status kp_gpu_op_kernel(const kp_gpu_target *t, kp_op op, kp_stream *s, const void *params, char *name, size_t cap) {
    if (!name || cap == 0) return t->host->set_error(KP_ERR_INTERNAL, "%s: op_kernel without a name buffer", t->name);
    name[0] = '\0';
    kp_gpu_ctx c = {.t = t, .s = s, .host = t->host, .kernel = name, .kernel_cap = cap};
    kp_status st = op_run(&c, op, params, 1);
    if (st == KP_OK && !name[0])
        st = t->host->set_error(KP_ERR_INTERNAL, "%s: %s planned without naming its kernel (a bug)", t->name,
                                kp_backend_op_name(op));
    if (st != KP_OK) name[0] = '\0';
    return st;
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

/* ---- per-stream scratch and the graph-capture rule ------------------------- */

size_t kp_gpu_scratch_need(const size_t bytes[2]) {
    if (bytes[1] > SIZE_MAX / KP_GPU_SCRATCH_LSE_RATIO) return 0;
    size_t lse = bytes[1] * KP_GPU_SCRATCH_LSE_RATIO;
    return bytes[0] > lse ? bytes[0] : lse;
}

static void scratch_regions(size_t reserve, size_t r[2]) {
    r[0] = reserve;
    r[1] = reserve / KP_GPU_SCRATCH_LSE_RATIO + (reserve % KP_GPU_SCRATCH_LSE_RATIO != 0);
}

kp_status kp_gpu_stream_reserve(const kp_gpu_target *t, kp_stream *s, size_t bytes) {
    if (bytes == 0) return KP_OK;
    size_t r[2];
    scratch_regions(bytes, r);
    void *h[2] = {NULL, NULL};
    if (t->scratch_get(s, r, h)) { /* already held: nothing to allocate */
        t->scratch_release(s, h);
        return KP_OK;
    }
    return t->scratch_reserve(s, r);
}

kp_status kp_gpu_scratch_acquire(kp_gpu_ctx *c, const size_t bytes[2], void *out[2]) {
    out[0] = out[1] = NULL;
    if (c->t->scratch_get(c->s, bytes, out)) return KP_OK; /* the hot path: no alloc, free or wait */
    size_t need = kp_gpu_scratch_need(bytes);
    if (need == 0)
        return c->host->set_error(KP_ERR_OUT_OF_MEMORY, "%s: %zu + %zu bytes of stream scratch do not fit in a size_t",
                                  c->t->name, bytes[0], bytes[1]);
    if (c->s->flags & KP_STREAM_WRAPPED)
        return c->host->set_error(KP_ERR_OUT_OF_MEMORY,
                                  "%s: this op needs %zu bytes of stream scratch, more than the wrapped stream's "
                                  "reservation; an op never allocates on a wrapped stream (it may be capturing a "
                                  "graph): call kp_stream_reserve(s, %zu) before capture",
                                  c->t->name, need, need);
    size_t r[2];
    scratch_regions(need, r);
    kp_status st = c->t->scratch_reserve(c->s, r);
    if (st != KP_OK) return st;
    if (c->t->scratch_get(c->s, bytes, out)) return KP_OK;
    return c->host->set_error(KP_ERR_INTERNAL, "%s: the stream's scratch was grown to %zu bytes but still "
                              "does not hold %zu + %zu", c->t->name, need, bytes[0], bytes[1]);
}
