/*
 * tests/op_params.c — see op_params.h.
 */
#include "op_params.h"
#include "kp_conformance.h"

/* A tensor in a new buffer of exactly its size, filled with random bytes. */
static kp_tensor make(op_params *o, kp_device *d, const char *name, kp_dtype dt, int ndim, int64_t a, int64_t b,
                      int64_t c, int64_t e) {
    int64_t shape[4] = {a, b, c, e};
    size_t n = kp_dtype_size(dt);
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    CHECK(o->nbuffers < OP_PARAMS_MAX_BUFFERS);
    kp_buffer *buf;
    CHECK_OK(kp_buffer_alloc(d, n ? n : 1, &buf));
    /* floats in [-1, 1); index tensors are filled with valid values by the caller */
    int64_t count = (int64_t)(n / kp_dtype_size(dt));
    double *v = calloc((size_t)count + 1, sizeof *v);
    unsigned char *bytes = malloc(n ? n : 1);
    for (int64_t i = 0; i < count; i++) v[i] = dt == KP_I32 ? 0 : kp_test_rand_uniform(-1.0, 1.0);
    if (dt == KP_FP8_E4M3) {
        for (size_t i = 0; i < n; i++) bytes[i] = (unsigned char)(kp_test_rand_u64() & 0x77); /* finite e4m3 */
    } else {
        kp_conf_pack(v, count, dt, bytes);
    }
    CHECK_OK(kp_buffer_write(NULL, buf, 0, bytes, n));
    free(bytes);
    free(v);
    o->buffers[o->nbuffers] = buf;
    o->names[o->nbuffers++] = name;
    kp_tensor t;
    CHECK_OK(kp_tensor_init(&t, buf, 0, dt, ndim, shape, NULL));
    return t;
}

#define T1(name, dt, a) make(o, d, name, dt, 1, a, 1, 1, 1)
#define T2(name, dt, a, b) make(o, d, name, dt, 2, a, b, 1, 1)
#define T3(name, dt, a, b, c) make(o, d, name, dt, 3, a, b, c, 1)
#define T4(name, dt, a, b, c, e) make(o, d, name, dt, 4, a, b, c, e)

static void write_ints(kp_tensor *t, const int32_t *v, size_t n) {
    CHECK_OK(kp_buffer_write(NULL, t->buffer, t->offset, v, n * sizeof *v));
}

static const kp_moe_routing v3_like = {4, 4, 2, KP_MOE_SCORING_SIGMOID, 1, 2.5f};

void op_params_make(op_params *o, kp_device *d, kp_op op) {
    memset(o, 0, sizeof *o);
    o->op = op;
    switch (op) {
    case KP_OP_ATTENTION_PREFILL: {
        kp_attention_prefill_params *p = &o->p.prefill;
        p->out = T3("out", KP_BF16, 5, 4, 64);
        p->lse = T2("lse", KP_F32, 4, 5);
        o->outputs = 2;
        p->q = T3("q", KP_BF16, 5, 4, 64);
        p->k = T3("k", KP_BF16, 7, 2, 64);
        p->v = T3("v", KP_BF16, 7, 2, 64);
        p->cu_seqlens_q = T1("cu_seqlens_q", KP_I32, 3);
        p->cu_seqlens_k = T1("cu_seqlens_k", KP_I32, 3);
        int32_t cq[3] = {0, 2, 5}, ck[3] = {0, 3, 7};
        CHECK_OK(kp_buffer_write(NULL, p->cu_seqlens_q.buffer, 0, cq, sizeof cq));
        CHECK_OK(kp_buffer_write(NULL, p->cu_seqlens_k.buffer, 0, ck, sizeof ck));
        p->max_seqlen_q = 3;
        p->max_seqlen_k = 4;
        p->softmax_scale = 0.125f;
        p->causal = 1;
        p->window_left = p->window_right = -1;
        break;
    }
    case KP_OP_ATTENTION_DECODE: {
        kp_attention_decode_params *p = &o->p.decode;
        p->out = T4("out", KP_F16, 2, 1, 4, 64);
        p->lse = T3("lse", KP_F32, 2, 4, 1);
        o->outputs = 2;
        p->q = T4("q", KP_F16, 2, 1, 4, 64);
        p->k_cache = T4("k_cache", KP_F16, 4, 16, 2, 64);
        p->v_cache = T4("v_cache", KP_F16, 4, 16, 2, 64);
        p->block_table = T2("block_table", KP_I32, 2, 2);
        p->seq_lens = T1("seq_lens", KP_I32, 2);
        int32_t table[4] = {3, 1, 0, 2}, lens[2] = {20, 7};
        write_ints(&p->block_table, table, 4);
        write_ints(&p->seq_lens, lens, 2);
        p->softmax_scale = 0.125f;
        p->causal = 1;
        break;
    }
    case KP_OP_MLA_DECODE: {
        kp_mla_decode_params *p = &o->p.mla;
        p->out = T4("out", KP_BF16, 2, 1, 16, 512);
        p->lse = T3("lse", KP_F32, 2, 16, 1);
        o->outputs = 2;
        p->q = T4("q", KP_BF16, 2, 1, 16, 576);
        p->kv_cache = T4("kv_cache", KP_BF16, 4, 64, 1, 576);
        p->block_table = T2("block_table", KP_I32, 2, 2);
        p->seq_lens = T1("seq_lens", KP_I32, 2);
        int32_t table[4] = {2, 0, 3, 1}, lens[2] = {100, 1};
        write_ints(&p->block_table, table, 4);
        write_ints(&p->seq_lens, lens, 2);
        p->softmax_scale = 0.1352337788608801f;
        p->causal = 1;
        p->head_dim_v = 512;
        break;
    }
    case KP_OP_MOE_GATE: {
        kp_moe_gate_params *p = &o->p.gate;
        p->topk_ids = T2("topk_ids", KP_I32, 3, 4);
        p->topk_weights = T2("topk_weights", KP_F32, 3, 4);
        o->outputs = 2;
        p->logits = T2("logits", KP_F32, 3, 16);
        p->bias = T1("bias", KP_F32, 16);
        p->routing = v3_like;
        break;
    }
    case KP_OP_MOE_ALIGN: {
        kp_moe_align_params *p = &o->p.align;
        p->sorted_ids = T1("sorted_ids", KP_I32, 12 + 16 * 3);
        p->expert_offsets = T1("expert_offsets", KP_I32, 17);
        p->token_pos = T2("token_pos", KP_I32, 3, 4);
        o->outputs = 3;
        p->topk_ids = T2("topk_ids", KP_I32, 3, 4);
        int32_t ids[12] = {0, 5, 9, 15, 5, 6, 7, 8, 15, 0, 1, 2};
        write_ints(&p->topk_ids, ids, 12);
        p->num_experts = 16;
        p->block_size = 4;
        break;
    }
    case KP_OP_GROUPED_GEMM: {
        kp_grouped_gemm_params *p = &o->p.gemm;
        p->out = T2("out", KP_BF16, 8, 32);
        o->outputs = 1;
        p->a = T2("a", KP_BF16, 8, 128);
        p->w = T3("w", KP_BF16, 4, 32, 128);
        p->expert_offsets = T1("expert_offsets", KP_I32, 5);
        int32_t offsets[5] = {0, 3, 3, 7, 8};
        write_ints(&p->expert_offsets, offsets, 5);
        break;
    }
    case KP_OP_MOE_COMBINE: {
        kp_moe_combine_params *p = &o->p.combine;
        p->out = T2("out", KP_BF16, 3, 32);
        o->outputs = 1;
        p->expert_out = T2("expert_out", KP_BF16, 60, 32);
        p->token_pos = T2("token_pos", KP_I32, 3, 4);
        p->topk_weights = T2("topk_weights", KP_F32, 3, 4);
        int32_t pos[12] = {0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44};
        write_ints(&p->token_pos, pos, 12);
        break;
    }
    case KP_OP_MOE_FORWARD: {
        kp_moe_forward_params *p = &o->p.forward;
        p->out = T2("out", KP_BF16, 3, 64);
        o->outputs = 1;
        p->x = T2("x", KP_BF16, 3, 64);
        p->router_logits = T2("router_logits", KP_F32, 3, 16);
        p->bias = T1("bias", KP_F32, 16);
        p->w13 = T3("w13", KP_BF16, 16, 64, 64);
        p->w2 = T3("w2", KP_BF16, 16, 64, 32);
        p->routing = v3_like;
        size_t ws = 0;
        CHECK_OK(kp_moe_forward_workspace_size(d, p, &ws));
        CHECK(ws > 0);
        CHECK_OK(kp_buffer_alloc(d, ws, &p->workspace));
        o->buffers[o->nbuffers] = p->workspace;
        o->names[o->nbuffers++] = "workspace";
        break;
    }
    case KP_OP_KV_CACHE_STORE: {
        kp_kv_cache_store_params *p = &o->p.kv_store;
        p->k_cache = T4("k_cache", KP_BF16, 4, 16, 2, 64);
        p->v_cache = T4("v_cache", KP_BF16, 4, 16, 2, 32);
        o->outputs = 2;
        p->key = T3("key", KP_BF16, 5, 2, 64);
        p->value = T3("value", KP_BF16, 5, 2, 32);
        p->slot_mapping = T1("slot_mapping", KP_I32, 5);
        int32_t slots[5] = {0, 17, -1, 63, 40};
        write_ints(&p->slot_mapping, slots, 5);
        break;
    }
    case KP_OP_QUANTIZE_FP8: {
        kp_quantize_fp8_params *p = &o->p.quant;
        p->out = T2("out", KP_FP8_E4M3, 3, 256);
        p->scale = T2("scale", KP_F32, 3, 2);
        o->outputs = 2;
        p->x = T2("x", KP_BF16, 3, 256);
        break;
    }
    case KP_OP_COUNT: break;
    }
}

void op_params_adopt(op_params *o, kp_buffer *b) {
    CHECK(o->nbuffers < OP_PARAMS_MAX_BUFFERS);
    o->names[o->nbuffers] = "extra";
    o->buffers[o->nbuffers++] = b;
}

void op_params_free(op_params *o) {
    for (int i = 0; i < o->nbuffers; i++) CHECK_OK(kp_buffer_free(o->buffers[i]));
    o->nbuffers = 0;
    if (o->extra_device) CHECK_OK(kp_device_close(o->extra_device));
    o->extra_device = NULL;
}

void op_params_snapshot(op_params *o, unsigned char **snaps) {
    for (int i = 0; i < o->outputs; i++) snaps[i] = kp_test_snapshot(o->buffers[i]);
}

void op_params_unchanged_at(op_params *o, unsigned char **snaps, const char *file, int line) {
    for (int i = 0; i < o->outputs; i++) kp_test_unchanged_at(o->buffers[i], snaps[i], file, line);
}

kp_status op_params_run(op_params *o, kp_stream *s) {
    switch (o->op) {
    case KP_OP_ATTENTION_PREFILL: return kp_attention_prefill(s, &o->p.prefill);
    case KP_OP_ATTENTION_DECODE: return kp_attention_decode(s, &o->p.decode);
    case KP_OP_MLA_DECODE: return kp_mla_decode(s, &o->p.mla);
    case KP_OP_MOE_GATE: return kp_moe_gate(s, &o->p.gate);
    case KP_OP_MOE_ALIGN: return kp_moe_align(s, &o->p.align);
    case KP_OP_GROUPED_GEMM: return kp_grouped_gemm(s, &o->p.gemm);
    case KP_OP_MOE_COMBINE: return kp_moe_combine(s, &o->p.combine);
    case KP_OP_MOE_FORWARD: return kp_moe_forward(s, &o->p.forward);
    case KP_OP_KV_CACHE_STORE: return kp_kv_cache_store(s, &o->p.kv_store);
    case KP_OP_QUANTIZE_FP8: return kp_quantize_fp8(s, &o->p.quant);
    case KP_OP_COUNT: break;
    }
    return KP_ERR_INVALID_ARGUMENT;
}
