/*
 * tests/test_api_ops.c — the argument rules of every op. Each case starts from a
 * valid argument set (op_params.c), breaks one rule, and expects that rule's status
 * code, a message naming the argument, and output buffers left byte-for-byte as
 * they were.
 */
#include "kp_test.h"
#include "op_params.h"

typedef struct bad_case {
    const char *what;
    kp_op op;
    void (*mutate)(op_params *o, kp_device *d);
    kp_status code;
    const char *needle;
} bad_case;

/* Replaces t with a view of the same buffer with another shape (same dtype). */
static void reshape(kp_tensor *t, int ndim, int64_t a, int64_t b, int64_t c, int64_t e) {
    int64_t shape[4] = {a, b, c, e};
    kp_tensor n;
    CHECK_OK(kp_tensor_init(&n, t->buffer, 0, t->dtype, ndim, shape, NULL));
    *t = n;
}

/* ---- attention_prefill ---- */
static void pf_hq_not_multiple(op_params *o, kp_device *d) {
    (void)d; /* q and out with 3 heads over 2 KV heads */
    reshape(&o->p.prefill.q, 3, 5, 3, 64, 0);
    reshape(&o->p.prefill.out, 3, 5, 3, 64, 0);
}
static void pf_k_dtype(op_params *o, kp_device *d) { (void)d; o->p.prefill.k.dtype = KP_F16; }
static void pf_int_q(op_params *o, kp_device *d) { (void)d; o->p.prefill.q.dtype = KP_I32; reshape(&o->p.prefill.q, 3, 5, 4, 32, 0); }
static void pf_strided_last(op_params *o, kp_device *d) {
    (void)d;
    o->p.prefill.q.strides[2] = 2;
    o->p.prefill.q.shape[2] = 32;
    o->p.prefill.k.shape[2] = 32;
    o->p.prefill.k.strides[2] = 1;
}
static void pf_cu_dtype(op_params *o, kp_device *d) { (void)d; o->p.prefill.cu_seqlens_q.dtype = KP_F32; }
static void pf_cu_len(op_params *o, kp_device *d) { (void)d; reshape(&o->p.prefill.cu_seqlens_k, 1, 2, 0, 0, 0); }
static void pf_out_small(op_params *o, kp_device *d) { (void)d; reshape(&o->p.prefill.out, 3, 4, 4, 64, 0); }
static void pf_out_overflows(op_params *o, kp_device *d) { (void)d; o->p.prefill.out.offset = 2; }
static void pf_out_aliases_q(op_params *o, kp_device *d) { (void)d; o->p.prefill.out.buffer = o->p.prefill.q.buffer; }
static void pf_lse_shape(op_params *o, kp_device *d) { (void)d; reshape(&o->p.prefill.lse, 2, 5, 4, 0, 0); }
static void pf_scale(op_params *o, kp_device *d) { (void)d; o->p.prefill.softmax_scale = 0.0f; }
static void pf_causal(op_params *o, kp_device *d) { (void)d; o->p.prefill.causal = 2; }
static void pf_window(op_params *o, kp_device *d) { (void)d; o->p.prefill.window_left = -5; }
static void pf_missing_v(op_params *o, kp_device *d) { (void)d; o->p.prefill.v.buffer = NULL; }
static void pf_ndim(op_params *o, kp_device *d) { (void)d; reshape(&o->p.prefill.q, 2, 5, 256, 0, 0); }
static void pf_other_device(op_params *o, kp_device *d) {
    (void)d;
    kp_device *other;
    CHECK_OK(kp_device_open(0, &other)); /* another handle: tensors belong to one handle */
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(other, kp_buffer_size(o->p.prefill.k.buffer), &b));
    o->p.prefill.k.buffer = b;
    op_params_adopt(o, b);
    o->extra_device = other;
}

/* ---- attention_decode ---- */
static void dc_block_table_rows(op_params *o, kp_device *d) { (void)d; reshape(&o->p.decode.block_table, 2, 1, 4, 0, 0); }
static void dc_v_heads(op_params *o, kp_device *d) { (void)d; reshape(&o->p.decode.v_cache, 4, 4, 16, 1, 128); }
static void dc_hq(op_params *o, kp_device *d) {
    (void)d;
    reshape(&o->p.decode.q, 4, 2, 1, 3, 64);
    reshape(&o->p.decode.out, 4, 2, 1, 3, 64);
}
static void dc_splits(op_params *o, kp_device *d) { (void)d; o->p.decode.num_splits = -1; }
static void dc_seq_lens_dtype(op_params *o, kp_device *d) { (void)d; o->p.decode.seq_lens.dtype = KP_F32; }

/* ---- mla_decode ---- */
static void mla_two_heads(op_params *o, kp_device *d) { (void)d; reshape(&o->p.mla.kv_cache, 4, 2, 64, 2, 576); }
static void mla_dv(op_params *o, kp_device *d) { (void)d; o->p.mla.head_dim_v = 600; }
static void mla_out_dv(op_params *o, kp_device *d) { (void)d; o->p.mla.head_dim_v = 256; }
static void mla_kv_dim(op_params *o, kp_device *d) { (void)d; reshape(&o->p.mla.kv_cache, 4, 4, 64, 1, 512); }

/* ---- moe_gate ---- */
static void gate_topk_gt_e(op_params *o, kp_device *d) { (void)d; o->p.gate.routing.topk = 17; }
static void gate_group_divides(op_params *o, kp_device *d) { (void)d; o->p.gate.routing.n_group = 3; }
static void gate_topk_group(op_params *o, kp_device *d) { (void)d; o->p.gate.routing.topk_group = 5; }
static void gate_kept_too_few(op_params *o, kp_device *d) {
    (void)d; /* 1 group of 4 experts kept cannot give 4 + 1 */
    o->p.gate.routing.topk_group = 1;
    o->p.gate.routing.topk = 5;
}
static void gate_scoring(op_params *o, kp_device *d) { (void)d; o->p.gate.routing.scoring = (kp_moe_scoring)7; }
static void gate_route_scale(op_params *o, kp_device *d) { (void)d; o->p.gate.routing.route_scale = -1.0f; }
static void gate_ids_shape(op_params *o, kp_device *d) { (void)d; o->p.gate.routing.topk = 2; }
static void gate_bias_len(op_params *o, kp_device *d) { (void)d; reshape(&o->p.gate.bias, 1, 8, 0, 0, 0); }
static void gate_bias_dtype(op_params *o, kp_device *d) { (void)d; o->p.gate.bias.dtype = KP_BF16; reshape(&o->p.gate.bias, 1, 16, 0, 0, 0); }
static void gate_weights_alias_ids(op_params *o, kp_device *d) { (void)d; o->p.gate.topk_weights.buffer = o->p.gate.topk_ids.buffer; o->p.gate.topk_weights.dtype = KP_F32; }
static void gate_too_many_experts(op_params *o, kp_device *d) {
    (void)d;
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(kp_buffer_device(o->p.gate.logits.buffer), 3 * 1024 * 4, &b));
    op_params_adopt(o, b);
    int64_t shape[2] = {3, 1024};
    CHECK_OK(kp_tensor_init(&o->p.gate.logits, b, 0, KP_F32, 2, shape, NULL));
}

/* ---- moe_align ---- */
static void align_small_sorted(op_params *o, kp_device *d) { (void)d; reshape(&o->p.align.sorted_ids, 1, 59, 0, 0, 0); }
static void align_block(op_params *o, kp_device *d) { (void)d; o->p.align.block_size = 0; }
static void align_experts(op_params *o, kp_device *d) { (void)d; o->p.align.num_experts = 0; }
static void align_offsets_len(op_params *o, kp_device *d) { (void)d; o->p.align.num_experts = 15; }

/* ---- grouped_gemm ---- */
static void gemm_fp8_no_scale(op_params *o, kp_device *d) { (void)d; o->p.gemm.w.dtype = KP_FP8_E4M3; reshape(&o->p.gemm.w, 3, 4, 32, 128, 0); }
static void gemm_fp8_k(op_params *o, kp_device *d) {
    o->p.gemm.w.dtype = KP_FP8_E4M3;
    reshape(&o->p.gemm.w, 3, 4, 32, 96, 0);
    reshape(&o->p.gemm.a, 2, 8, 96, 0, 0);
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(d, 64, &b));
    op_params_adopt(o, b);
    int64_t shape[3] = {4, 1, 1};
    CHECK_OK(kp_tensor_init(&o->p.gemm.w_scale, b, 0, KP_F32, 3, shape, NULL));
}
static void gemm_scale_shape(op_params *o, kp_device *d) {
    o->p.gemm.w.dtype = KP_FP8_E4M3;
    reshape(&o->p.gemm.w, 3, 4, 32, 128, 0);
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(d, 64, &b));
    op_params_adopt(o, b);
    int64_t shape[3] = {4, 2, 1};
    CHECK_OK(kp_tensor_init(&o->p.gemm.w_scale, b, 0, KP_F32, 3, shape, NULL));
}
static void gemm_scale_not_fp8(op_params *o, kp_device *d) {
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(d, 64, &b));
    op_params_adopt(o, b);
    int64_t shape[3] = {4, 1, 1};
    CHECK_OK(kp_tensor_init(&o->p.gemm.w_scale, b, 0, KP_F32, 3, shape, NULL));
}
static void gemm_k_mismatch(op_params *o, kp_device *d) { (void)d; reshape(&o->p.gemm.a, 2, 16, 64, 0, 0); }
static void gemm_out_dtype(op_params *o, kp_device *d) { (void)d; o->p.gemm.out.dtype = KP_F16; }
static void gemm_offsets_len(op_params *o, kp_device *d) { (void)d; reshape(&o->p.gemm.expert_offsets, 1, 4, 0, 0, 0); }

/* W8A8: e4m3 a and w, with w_scale [4, 1, 1] and a_scale (rows x cols f32, its own
 * buffer of 64 floats, ones) in the given layout: valid for 8 x 1 row-major. */
static kp_tensor f32_matrix(kp_device *d, op_params *o, int64_t rows, int64_t cols) {
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(d, 256, &b));
    op_params_adopt(o, b);
    float ones[64];
    for (int i = 0; i < 64; i++) ones[i] = 1.0f;
    CHECK_OK(kp_buffer_write(NULL, b, 0, ones, sizeof ones));
    kp_tensor t;
    CHECK_OK(kp_tensor_init(&t, b, 0, KP_F32, 2, (const int64_t[]){rows, cols}, NULL));
    return t;
}
static void w8a8(op_params *o, kp_device *d, int64_t rows, int64_t cols, int32_t layout) {
    kp_grouped_gemm_params *g = &o->p.gemm;
    g->w.dtype = KP_FP8_E4M3;
    reshape(&g->w, 3, 4, 32, 128, 0);
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(d, 64, &b));
    op_params_adopt(o, b);
    CHECK_OK(kp_tensor_init(&g->w_scale, b, 0, KP_F32, 3, (const int64_t[]){4, 1, 1}, NULL));
    g->a.dtype = KP_FP8_E4M3;
    reshape(&g->a, 2, 8, 128, 0, 0);
    g->a_scale = f32_matrix(d, o, rows, cols);
    g->a_scale_layout = layout;
}
static void w8a8_no_a_scale(op_params *o, kp_device *d) { w8a8(o, d, 8, 1, 0), o->p.gemm.a_scale.buffer = NULL; }
static void w8a8_scale_without_fp8_a(op_params *o, kp_device *d) { o->p.gemm.a_scale = f32_matrix(d, o, 8, 1); }
static void w8a8_layout_without_fp8_a(op_params *o, kp_device *d) { (void)d; o->p.gemm.a_scale_layout = 1; }
static void w8a8_bf16_weights(op_params *o, kp_device *d) {
    w8a8(o, d, 8, 1, 0);
    reshape(&o->p.gemm.w, 3, 4, 32, 128, 0);
    o->p.gemm.w.dtype = KP_BF16;
    o->p.gemm.w_scale.buffer = NULL;
}
static void w8a8_scale_cols(op_params *o, kp_device *d) { w8a8(o, d, 8, 2, 0); }
static void w8a8_scale_rows(op_params *o, kp_device *d) { w8a8(o, d, 7, 1, 0); }
static void w8a8_col_short(op_params *o, kp_device *d) { w8a8(o, d, 1, 7, KP_FP8_SCALE_COL_MAJOR); }
static void w8a8_col_groups(op_params *o, kp_device *d) { w8a8(o, d, 2, 8, KP_FP8_SCALE_COL_MAJOR); }
static void w8a8_layout(op_params *o, kp_device *d) { w8a8(o, d, 8, 1, 2); }
static void w8a8_scale_dtype(op_params *o, kp_device *d) { w8a8(o, d, 8, 1, 0), o->p.gemm.a_scale.dtype = KP_BF16; }
static void w8a8_k(op_params *o, kp_device *d) {
    w8a8(o, d, 8, 1, 0);
    reshape(&o->p.gemm.a, 2, 8, 192, 0, 0);
    reshape(&o->p.gemm.w, 3, 4, 32, 192, 0);
}
static void w8a8_scale_past_buffer(op_params *o, kp_device *d) { w8a8(o, d, 8, 1, 0), o->p.gemm.a_scale.offset = 232; }
static void w8a8_scale_in_out(op_params *o, kp_device *d) {
    w8a8(o, d, 8, 1, 0);
    o->p.gemm.a_scale.buffer = o->p.gemm.out.buffer;
}
static void w8a8_scale_strided(op_params *o, kp_device *d) {
    w8a8(o, d, 1, 8, KP_FP8_SCALE_COL_MAJOR);
    o->p.gemm.a_scale.strides[0] = 16, o->p.gemm.a_scale.strides[1] = 2; /* [1, 8] every other float */
}

/* ---- moe_combine ---- */
static void comb_t(op_params *o, kp_device *d) { (void)d; reshape(&o->p.combine.out, 2, 2, 32, 0, 0); }
static void comb_hidden(op_params *o, kp_device *d) { (void)d; reshape(&o->p.combine.out, 2, 3, 16, 0, 0); }
static void comb_weights_dtype(op_params *o, kp_device *d) { (void)d; o->p.combine.topk_weights.dtype = KP_I32; }

/* ---- kv_cache_store ---- */
static kp_tensor f32_vector(kp_device *d, op_params *o, int64_t n) {
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(d, (size_t)n * 4, &b));
    op_params_adopt(o, b);
    float ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_OK(kp_buffer_write(NULL, b, 0, ones, (size_t)n * 4));
    kp_tensor t;
    CHECK_OK(kp_tensor_init(&t, b, 0, KP_F32, 1, (const int64_t[]){n}, NULL));
    return t;
}
static void kv_fp8(op_params *o) { o->p.kv_store.k_cache.dtype = KP_FP8_E4M3, o->p.kv_store.v_cache.dtype = KP_FP8_E4M3; }
static void kv_v_alone(op_params *o, kp_device *d) { (void)d; o->p.kv_store.v_cache.buffer = NULL; }
static void kv_fp8_no_scale(op_params *o, kp_device *d) { (void)d; kv_fp8(o); }
static void kv_scale_not_fp8(op_params *o, kp_device *d) { o->p.kv_store.k_scale = f32_vector(d, o, 1); }
static void kv_scale_shape(op_params *o, kp_device *d) {
    kv_fp8(o);
    o->p.kv_store.k_scale = f32_vector(d, o, 3);
    o->p.kv_store.v_scale = f32_vector(d, o, 1);
}
static void kv_v_scale_missing(op_params *o, kp_device *d) { kv_fp8(o), o->p.kv_store.k_scale = f32_vector(d, o, 4); }
static void kv_heads(op_params *o, kp_device *d) { (void)d; reshape(&o->p.kv_store.k_cache, 4, 4, 16, 1, 64); }
static void kv_slots_len(op_params *o, kp_device *d) { (void)d; reshape(&o->p.kv_store.slot_mapping, 1, 4, 0, 0, 0); }
static void kv_slots_dtype(op_params *o, kp_device *d) { (void)d; o->p.kv_store.slot_mapping.dtype = KP_F32; }
static void kv_cache_dtype(op_params *o, kp_device *d) { (void)d; o->p.kv_store.k_cache.dtype = KP_F16; }
static void kv_v_blocks(op_params *o, kp_device *d) { (void)d; reshape(&o->p.kv_store.v_cache, 4, 3, 16, 2, 32); }
static void kv_block_size(op_params *o, kp_device *d) {
    (void)d;
    reshape(&o->p.kv_store.k_cache, 4, 4, 0, 2, 64);
    reshape(&o->p.kv_store.v_cache, 4, 4, 0, 2, 32);
}
static void kv_cache_aliases_key(op_params *o, kp_device *d) {
    (void)d;
    kp_tensor *k = &o->p.kv_store.k_cache;
    CHECK_OK(kp_tensor_init(k, o->p.kv_store.key.buffer, 0, KP_FP8_E4M3, 4, (const int64_t[]){1, 5, 2, 64}, NULL));
    o->p.kv_store.v_cache.dtype = KP_FP8_E4M3;
    reshape(&o->p.kv_store.v_cache, 4, 1, 5, 2, 32);
    o->p.kv_store.k_scale = f32_vector(d, o, 1);
    o->p.kv_store.v_scale = f32_vector(d, o, 1);
}

/* ---- FP8 caches in decode and MLA decode ---- */
static void dc_fp8_no_scale(op_params *o, kp_device *d) {
    (void)d;
    o->p.decode.k_cache.dtype = KP_FP8_E4M3, o->p.decode.v_cache.dtype = KP_FP8_E4M3;
}
static void dc_fp8_k_only(op_params *o, kp_device *d) {
    o->p.decode.k_cache.dtype = KP_FP8_E4M3;
    o->p.decode.k_scale = f32_vector(d, o, 1);
}
static void dc_fp8_scale_len(op_params *o, kp_device *d) {
    o->p.decode.k_cache.dtype = KP_FP8_E4M3, o->p.decode.v_cache.dtype = KP_FP8_E4M3;
    o->p.decode.k_scale = f32_vector(d, o, 4);
    o->p.decode.v_scale = f32_vector(d, o, 2);
}
static void mla_scale_not_fp8(op_params *o, kp_device *d) { o->p.mla.kv_scale = f32_vector(d, o, 1); }
static void mla_fp8_no_scale(op_params *o, kp_device *d) { (void)d; o->p.mla.kv_cache.dtype = KP_FP8_E4M3; }

/* ---- quantize_fp8 ---- */
static void qf_k(op_params *o, kp_device *d) {
    (void)d;
    reshape(&o->p.quant.x, 2, 3, 192, 0, 0);
    reshape(&o->p.quant.out, 2, 3, 192, 0, 0);
}
static void qf_out_dtype(op_params *o, kp_device *d) { (void)d; o->p.quant.out.dtype = KP_BF16; reshape(&o->p.quant.out, 2, 3, 128, 0, 0); }
static void qf_scale_shape(op_params *o, kp_device *d) { (void)d; reshape(&o->p.quant.scale, 2, 3, 1, 0, 0); }
static void qf_layout(op_params *o, kp_device *d) { (void)d; o->p.quant.scale_layout = 2; }
static void qf_ue8m0(op_params *o, kp_device *d) { (void)d; o->p.quant.scale_ue8m0 = 2; }
static void qf_col_short(op_params *o, kp_device *d) {
    (void)d;
    o->p.quant.scale_layout = KP_FP8_SCALE_COL_MAJOR;
    reshape(&o->p.quant.scale, 2, 2, 2, 0, 0);
}
static void qf_col_rows(op_params *o, kp_device *d) { (void)d; o->p.quant.scale_layout = KP_FP8_SCALE_COL_MAJOR; }
static void qf_scale_aliases_out(op_params *o, kp_device *d) {
    (void)d;
    CHECK_OK(kp_tensor_init(&o->p.quant.scale, o->p.quant.out.buffer, 0, KP_F32, 2, (const int64_t[]){3, 2}, NULL));
}

/* ---- moe_forward ---- */
static void fwd_no_ws(op_params *o, kp_device *d) { (void)d; o->p.forward.workspace = NULL; }
static void fwd_ws_small(op_params *o, kp_device *d) { (void)d; o->p.forward.workspace_offset = 256; }
static void fwd_shared_half(op_params *o, kp_device *d) { (void)d; o->p.forward.shared_w13 = o->p.forward.w13; reshape(&o->p.forward.shared_w13, 2, 64, 64, 0, 0); }
static void fwd_w2_inter(op_params *o, kp_device *d) { (void)d; reshape(&o->p.forward.w2, 3, 16, 64, 16, 0); }
static void fwd_odd_w13(op_params *o, kp_device *d) { (void)d; reshape(&o->p.forward.w13, 3, 16, 63, 64, 0); }
static void fwd_routing(op_params *o, kp_device *d) { (void)d; o->p.forward.routing.topk_group = 0; }
static void fwd_out_aliases_ws(op_params *o, kp_device *d) { (void)d; o->p.forward.out.buffer = o->p.forward.workspace; }

static const bad_case bad_cases[] = {
    {"prefill h_q % h_kv", KP_OP_ATTENTION_PREFILL, pf_hq_not_multiple, KP_ERR_INVALID_SHAPE, "multiple of h_kv"},
    {"prefill k dtype", KP_OP_ATTENTION_PREFILL, pf_k_dtype, KP_ERR_INVALID_DTYPE, "k has dtype f16 but q is bf16"},
    {"prefill int q", KP_OP_ATTENTION_PREFILL, pf_int_q, KP_ERR_INVALID_DTYPE, "q has dtype i32"},
    {"prefill strided last dim", KP_OP_ATTENTION_PREFILL, pf_strided_last, KP_ERR_INVALID_LAYOUT, "q must have a contiguous last dimension"},
    {"prefill cu_seqlens dtype", KP_OP_ATTENTION_PREFILL, pf_cu_dtype, KP_ERR_INVALID_DTYPE, "cu_seqlens_q"},
    {"prefill cu_seqlens length", KP_OP_ATTENTION_PREFILL, pf_cu_len, KP_ERR_INVALID_SHAPE, "cu_seqlens_k"},
    {"prefill out rows", KP_OP_ATTENTION_PREFILL, pf_out_small, KP_ERR_INVALID_SHAPE, "out.shape[0]"},
    {"prefill out past buffer", KP_OP_ATTENTION_PREFILL, pf_out_overflows, KP_ERR_OUT_OF_BOUNDS, "out view"},
    {"prefill out aliases q", KP_OP_ATTENTION_PREFILL, pf_out_aliases_q, KP_ERR_ALIASING, "output out"},
    {"prefill lse shape", KP_OP_ATTENTION_PREFILL, pf_lse_shape, KP_ERR_INVALID_SHAPE, "lse.shape[0]"},
    {"prefill scale", KP_OP_ATTENTION_PREFILL, pf_scale, KP_ERR_INVALID_ARGUMENT, "softmax_scale"},
    {"prefill causal flag", KP_OP_ATTENTION_PREFILL, pf_causal, KP_ERR_INVALID_ARGUMENT, "causal is 2"},
    {"prefill window", KP_OP_ATTENTION_PREFILL, pf_window, KP_ERR_INVALID_ARGUMENT, "window_left"},
    {"prefill missing v", KP_OP_ATTENTION_PREFILL, pf_missing_v, KP_ERR_INVALID_ARGUMENT, "v is required"},
    {"prefill q rank", KP_OP_ATTENTION_PREFILL, pf_ndim, KP_ERR_INVALID_SHAPE, "q has 2 dims"},
    {"prefill k on another device handle", KP_OP_ATTENTION_PREFILL, pf_other_device, KP_ERR_DEVICE_MISMATCH, "k is on device"},
    {"decode block_table rows", KP_OP_ATTENTION_DECODE, dc_block_table_rows, KP_ERR_INVALID_SHAPE, "block_table.shape[0]"},
    {"decode v_cache heads", KP_OP_ATTENTION_DECODE, dc_v_heads, KP_ERR_INVALID_SHAPE, "v_cache.shape[2]"},
    {"decode h_q % h_kv", KP_OP_ATTENTION_DECODE, dc_hq, KP_ERR_INVALID_SHAPE, "multiple of h_kv"},
    {"decode num_splits", KP_OP_ATTENTION_DECODE, dc_splits, KP_ERR_INVALID_ARGUMENT, "num_splits"},
    {"decode seq_lens dtype", KP_OP_ATTENTION_DECODE, dc_seq_lens_dtype, KP_ERR_INVALID_DTYPE, "seq_lens"},
    {"mla two kv heads", KP_OP_MLA_DECODE, mla_two_heads, KP_ERR_INVALID_SHAPE, "one latent KV head"},
    {"mla head_dim_v > d", KP_OP_MLA_DECODE, mla_dv, KP_ERR_INVALID_ARGUMENT, "head_dim_v is 600"},
    {"mla out vs head_dim_v", KP_OP_MLA_DECODE, mla_out_dv, KP_ERR_INVALID_SHAPE, "out.shape[3]"},
    {"mla kv dim", KP_OP_MLA_DECODE, mla_kv_dim, KP_ERR_INVALID_SHAPE, "kv_cache.shape[3]"},
    {"gate topk > E", KP_OP_MOE_GATE, gate_topk_gt_e, KP_ERR_INVALID_ARGUMENT, "topk is 17"},
    {"gate n_group divides E", KP_OP_MOE_GATE, gate_group_divides, KP_ERR_INVALID_ARGUMENT, "divide E"},
    {"gate topk_group > n_group", KP_OP_MOE_GATE, gate_topk_group, KP_ERR_INVALID_ARGUMENT, "topk_group is 5"},
    {"gate kept groups too small", KP_OP_MOE_GATE, gate_kept_too_few, KP_ERR_INVALID_ARGUMENT, "kept groups"},
    {"gate scoring", KP_OP_MOE_GATE, gate_scoring, KP_ERR_INVALID_ARGUMENT, "scoring 7"},
    {"gate route_scale", KP_OP_MOE_GATE, gate_route_scale, KP_ERR_INVALID_ARGUMENT, "route_scale"},
    {"gate topk_ids columns", KP_OP_MOE_GATE, gate_ids_shape, KP_ERR_INVALID_SHAPE, "topk_ids.shape[1]"},
    {"gate bias length", KP_OP_MOE_GATE, gate_bias_len, KP_ERR_INVALID_SHAPE, "bias.shape[0]"},
    {"gate bias dtype", KP_OP_MOE_GATE, gate_bias_dtype, KP_ERR_INVALID_DTYPE, "bias has dtype bf16"},
    {"gate outputs overlap", KP_OP_MOE_GATE, gate_weights_alias_ids, KP_ERR_ALIASING, "overlaps"},
    {"gate E > 512", KP_OP_MOE_GATE, gate_too_many_experts, KP_ERR_INVALID_SHAPE, "1024 experts"},
    {"align sorted_ids capacity", KP_OP_MOE_ALIGN, align_small_sorted, KP_ERR_INVALID_SHAPE, "sorted_ids has 59"},
    {"align block_size", KP_OP_MOE_ALIGN, align_block, KP_ERR_INVALID_ARGUMENT, "block_size is 0"},
    {"align num_experts", KP_OP_MOE_ALIGN, align_experts, KP_ERR_INVALID_ARGUMENT, "num_experts is 0"},
    {"align offsets length", KP_OP_MOE_ALIGN, align_offsets_len, KP_ERR_INVALID_SHAPE, "expert_offsets.shape[0]"},
    {"gemm fp8 without scale", KP_OP_GROUPED_GEMM, gemm_fp8_no_scale, KP_ERR_INVALID_ARGUMENT, "w_scale"},
    {"gemm fp8 K % 128", KP_OP_GROUPED_GEMM, gemm_fp8_k, KP_ERR_INVALID_SHAPE, "multiple of 128"},
    {"gemm fp8 scale shape", KP_OP_GROUPED_GEMM, gemm_scale_shape, KP_ERR_INVALID_SHAPE, "w_scale.shape[1]"},
    {"gemm scale without fp8", KP_OP_GROUPED_GEMM, gemm_scale_not_fp8, KP_ERR_INVALID_ARGUMENT, "not FP8"},
    {"gemm K mismatch", KP_OP_GROUPED_GEMM, gemm_k_mismatch, KP_ERR_INVALID_SHAPE, "a.shape[1]"},
    {"gemm out dtype", KP_OP_GROUPED_GEMM, gemm_out_dtype, KP_ERR_INVALID_DTYPE, "out has dtype f16"},
    {"gemm offsets length", KP_OP_GROUPED_GEMM, gemm_offsets_len, KP_ERR_INVALID_SHAPE, "expert_offsets.shape[0]"},
    {"w8a8 without a_scale", KP_OP_GROUPED_GEMM, w8a8_no_a_scale, KP_ERR_INVALID_ARGUMENT, "a_scale (f32"},
    {"a_scale with bf16 a", KP_OP_GROUPED_GEMM, w8a8_scale_without_fp8_a, KP_ERR_INVALID_ARGUMENT, "a_scale is given but a is bf16"},
    {"a_scale_layout with bf16 a", KP_OP_GROUPED_GEMM, w8a8_layout_without_fp8_a, KP_ERR_INVALID_ARGUMENT, "must stay 0"},
    {"w8a8 with bf16 weights", KP_OP_GROUPED_GEMM, w8a8_bf16_weights, KP_ERR_INVALID_DTYPE, "w must be FP8 e4m3 too"},
    {"w8a8 a_scale columns", KP_OP_GROUPED_GEMM, w8a8_scale_cols, KP_ERR_INVALID_SHAPE, "a_scale.shape[1]"},
    {"w8a8 a_scale rows", KP_OP_GROUPED_GEMM, w8a8_scale_rows, KP_ERR_INVALID_SHAPE, "a_scale.shape[0]"},
    {"w8a8 column-major too few columns", KP_OP_GROUPED_GEMM, w8a8_col_short, KP_ERR_INVALID_SHAPE, "at least M (8)"},
    {"w8a8 column-major groups", KP_OP_GROUPED_GEMM, w8a8_col_groups, KP_ERR_INVALID_SHAPE, "a_scale.shape[0]"},
    {"w8a8 a_scale_layout", KP_OP_GROUPED_GEMM, w8a8_layout, KP_ERR_INVALID_ARGUMENT, "a_scale_layout is 2"},
    {"w8a8 a_scale dtype", KP_OP_GROUPED_GEMM, w8a8_scale_dtype, KP_ERR_INVALID_DTYPE, "a_scale has dtype bf16"},
    {"w8a8 K % 128", KP_OP_GROUPED_GEMM, w8a8_k, KP_ERR_INVALID_SHAPE, "a is FP8 with K = 192"},
    {"w8a8 a_scale past its buffer", KP_OP_GROUPED_GEMM, w8a8_scale_past_buffer, KP_ERR_OUT_OF_BOUNDS, "a_scale view"},
    {"w8a8 a_scale overlaps out", KP_OP_GROUPED_GEMM, w8a8_scale_in_out, KP_ERR_ALIASING, "overlaps"},
    {"w8a8 a_scale strided last dim", KP_OP_GROUPED_GEMM, w8a8_scale_strided, KP_ERR_INVALID_LAYOUT, "a_scale must have a contiguous last dimension"},
    {"combine T", KP_OP_MOE_COMBINE, comb_t, KP_ERR_INVALID_SHAPE, "out.shape[0]"},
    {"combine hidden", KP_OP_MOE_COMBINE, comb_hidden, KP_ERR_INVALID_SHAPE, "out.shape[1]"},
    {"combine weights dtype", KP_OP_MOE_COMBINE, comb_weights_dtype, KP_ERR_INVALID_DTYPE, "topk_weights has dtype i32"},
    {"kv store value without v_cache", KP_OP_KV_CACHE_STORE, kv_v_alone, KP_ERR_INVALID_ARGUMENT, "go together"},
    {"kv store fp8 without k_scale", KP_OP_KV_CACHE_STORE, kv_fp8_no_scale, KP_ERR_INVALID_ARGUMENT, "k_scale (f32"},
    {"kv store scale without fp8", KP_OP_KV_CACHE_STORE, kv_scale_not_fp8, KP_ERR_INVALID_ARGUMENT, "not FP8 e4m3"},
    {"kv store scale shape", KP_OP_KV_CACHE_STORE, kv_scale_shape, KP_ERR_INVALID_SHAPE, "k_scale.shape[0] is 3"},
    {"kv store fp8 without v_scale", KP_OP_KV_CACHE_STORE, kv_v_scale_missing, KP_ERR_INVALID_ARGUMENT, "v_scale (f32"},
    {"kv store cache heads", KP_OP_KV_CACHE_STORE, kv_heads, KP_ERR_INVALID_SHAPE, "k_cache.shape[2]"},
    {"kv store slot_mapping length", KP_OP_KV_CACHE_STORE, kv_slots_len, KP_ERR_INVALID_SHAPE, "slot_mapping.shape[0]"},
    {"kv store slot_mapping dtype", KP_OP_KV_CACHE_STORE, kv_slots_dtype, KP_ERR_INVALID_DTYPE, "slot_mapping"},
    {"kv store cache dtype", KP_OP_KV_CACHE_STORE, kv_cache_dtype, KP_ERR_INVALID_DTYPE, "k_cache has dtype f16"},
    {"kv store v_cache blocks", KP_OP_KV_CACHE_STORE, kv_v_blocks, KP_ERR_INVALID_SHAPE, "v_cache.shape[0]"},
    {"kv store block_size 0", KP_OP_KV_CACHE_STORE, kv_block_size, KP_ERR_INVALID_SHAPE, "block_size"},
    {"kv store cache aliases key", KP_OP_KV_CACHE_STORE, kv_cache_aliases_key, KP_ERR_ALIASING, "overlaps"},
    {"decode fp8 without scales", KP_OP_ATTENTION_DECODE, dc_fp8_no_scale, KP_ERR_INVALID_ARGUMENT, "k_scale (f32"},
    {"decode fp8 k, f16 v", KP_OP_ATTENTION_DECODE, dc_fp8_k_only, KP_ERR_INVALID_DTYPE, "v_cache has dtype f16"},
    {"decode fp8 v_scale length", KP_OP_ATTENTION_DECODE, dc_fp8_scale_len, KP_ERR_INVALID_SHAPE, "v_scale.shape[0] is 2"},
    {"mla scale without fp8", KP_OP_MLA_DECODE, mla_scale_not_fp8, KP_ERR_INVALID_ARGUMENT, "not FP8 e4m3"},
    {"mla fp8 without scale", KP_OP_MLA_DECODE, mla_fp8_no_scale, KP_ERR_INVALID_ARGUMENT, "kv_scale (f32"},
    {"quantize K % 128", KP_OP_QUANTIZE_FP8, qf_k, KP_ERR_INVALID_SHAPE, "multiple of the group"},
    {"quantize out dtype", KP_OP_QUANTIZE_FP8, qf_out_dtype, KP_ERR_INVALID_DTYPE, "out"},
    {"quantize scale shape", KP_OP_QUANTIZE_FP8, qf_scale_shape, KP_ERR_INVALID_SHAPE, "scale.shape[1]"},
    {"quantize scale_layout", KP_OP_QUANTIZE_FP8, qf_layout, KP_ERR_INVALID_ARGUMENT, "scale_layout is 2"},
    {"quantize scale_ue8m0", KP_OP_QUANTIZE_FP8, qf_ue8m0, KP_ERR_INVALID_ARGUMENT, "scale_ue8m0 is 2"},
    {"quantize column-major too few columns", KP_OP_QUANTIZE_FP8, qf_col_short, KP_ERR_INVALID_SHAPE, "at least T (3)"},
    {"quantize column-major shape", KP_OP_QUANTIZE_FP8, qf_col_rows, KP_ERR_INVALID_SHAPE, "scale.shape[0]"},
    {"quantize scale aliases out", KP_OP_QUANTIZE_FP8, qf_scale_aliases_out, KP_ERR_ALIASING, "overlaps"},
    {"forward no workspace", KP_OP_MOE_FORWARD, fwd_no_ws, KP_ERR_INVALID_ARGUMENT, "workspace is NULL"},
    {"forward small workspace", KP_OP_MOE_FORWARD, fwd_ws_small, KP_ERR_OUT_OF_BOUNDS, "are needed"},
    {"forward half a shared expert", KP_OP_MOE_FORWARD, fwd_shared_half, KP_ERR_INVALID_ARGUMENT, "shared_w13 and shared_w2"},
    {"forward w2 inter", KP_OP_MOE_FORWARD, fwd_w2_inter, KP_ERR_INVALID_SHAPE, "w2.shape[2]"},
    {"forward odd w13", KP_OP_MOE_FORWARD, fwd_odd_w13, KP_ERR_INVALID_SHAPE, "2*inter"},
    {"forward routing", KP_OP_MOE_FORWARD, fwd_routing, KP_ERR_INVALID_ARGUMENT, "topk_group is 0"},
    {"forward out in workspace", KP_OP_MOE_FORWARD, fwd_out_aliases_ws, KP_ERR_ALIASING, "workspace overlaps"},
};

KP_TEST(api_ops_reject_bad_arguments) {
    kp_device *d = kp_test_open_backend("cpu");
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        op_params o;
        unsigned char *snaps[OP_PARAMS_MAX_BUFFERS];
        op_params_make(&o, d, c->op);
        op_params_snapshot(&o, snaps);
        c->mutate(&o, d);
        kp_status st = op_params_run(&o, s);
        CHECK_MSG(st == c->code, "[%s] -> %s, expected %s: %s", c->what, kp_status_str(st), kp_status_str(c->code),
                  kp_last_error());
        CHECK_MSG(strstr(kp_last_error(), c->needle) != NULL, "[%s] message \"%s\" lacks \"%s\"", c->what,
                  kp_last_error(), c->needle);
        CHECK_MSG(strstr(kp_last_error(), kp_op_name(c->op)) != NULL, "[%s] message \"%s\" does not name the op",
                  c->what, kp_last_error());
        /* the same answer from the capability query, which also writes nothing */
        CHECK_MSG(kp_op_supported(d, c->op, &o.p) == c->code, "[%s] kp_op_supported disagrees", c->what);
        op_params_unchanged(&o, snaps);
        op_params_free(&o);
    }
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
}

/* On every backend: each op with small valid arguments either runs, or the backend
 * says plainly that it lacks it, and the capability query agrees with the call. */
KP_CONFORMANCE(api_ops_valid_arguments_reach_the_backend) {
    kp_device_info info;
    CHECK_OK(kp_device_get_info(d, &info));
    char backend_name[64];
    snprintf(backend_name, sizeof backend_name, "%s backend", info.backend);
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int op = 0; op < KP_OP_COUNT; op++) {
        op_params o;
        unsigned char *snaps[OP_PARAMS_MAX_BUFFERS];
        op_params_make(&o, d, (kp_op)op);
        op_params_snapshot(&o, snaps);
        kp_status supported = kp_op_supported(d, (kp_op)op, &o.p);
        op_params_unchanged(&o, snaps); /* the query writes nothing */
        op_params_snapshot(&o, snaps);
        kp_status st = op_params_run(&o, s);
        CHECK_OK(kp_stream_sync(s));
        /* Either the op runs, or the backend says plainly that it lacks it; the
         * capability query and the call agree. */
        CHECK_MSG(st == KP_OK || st == KP_ERR_UNSUPPORTED, "%s -> %s: %s", kp_op_name((kp_op)op), kp_status_str(st),
                  kp_last_error());
        CHECK_INT_EQ(supported, st);
        if (st == KP_ERR_UNSUPPORTED) {
            CHECK_STR_CONTAINS(kp_last_error(), kp_op_name((kp_op)op));
            CHECK_STR_CONTAINS(kp_last_error(), backend_name);
            op_params_unchanged(&o, snaps);
        } else {
            for (int i = 0; i < o.outputs; i++) free(snaps[i]);
        }
        op_params_free(&o);
    }
    CHECK_OK(kp_stream_destroy(s));
}

KP_TEST(api_ops_null_arguments) {
    kp_device *d = kp_test_open_backend("cpu");
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    kp_attention_prefill_params pf;
    memset(&pf, 0, sizeof pf);
    CHECK_ERR(kp_attention_prefill(NULL, &pf), KP_ERR_INVALID_ARGUMENT, "kp_attention_prefill: s");
    CHECK_ERR(kp_attention_decode(NULL, NULL), KP_ERR_INVALID_ARGUMENT, "kp_attention_decode: s");
    CHECK_ERR(kp_mla_decode(NULL, NULL), KP_ERR_INVALID_ARGUMENT, "kp_mla_decode: s");
    CHECK_ERR(kp_moe_gate(NULL, NULL), KP_ERR_INVALID_ARGUMENT, "kp_moe_gate: s");
    CHECK_ERR(kp_moe_align(NULL, NULL), KP_ERR_INVALID_ARGUMENT, "kp_moe_align: s");
    CHECK_ERR(kp_grouped_gemm(NULL, NULL), KP_ERR_INVALID_ARGUMENT, "kp_grouped_gemm: s");
    CHECK_ERR(kp_moe_combine(NULL, NULL), KP_ERR_INVALID_ARGUMENT, "kp_moe_combine: s");
    CHECK_ERR(kp_moe_forward(NULL, NULL), KP_ERR_INVALID_ARGUMENT, "kp_moe_forward: s");
    CHECK_ERR(kp_attention_prefill(s, NULL), KP_ERR_INVALID_ARGUMENT, "params is NULL");
    CHECK_ERR(kp_attention_decode(s, NULL), KP_ERR_INVALID_ARGUMENT, "params is NULL");
    CHECK_ERR(kp_mla_decode(s, NULL), KP_ERR_INVALID_ARGUMENT, "params is NULL");
    CHECK_ERR(kp_moe_gate(s, NULL), KP_ERR_INVALID_ARGUMENT, "params is NULL");
    CHECK_ERR(kp_moe_align(s, NULL), KP_ERR_INVALID_ARGUMENT, "params is NULL");
    CHECK_ERR(kp_grouped_gemm(s, NULL), KP_ERR_INVALID_ARGUMENT, "params is NULL");
    CHECK_ERR(kp_moe_combine(s, NULL), KP_ERR_INVALID_ARGUMENT, "params is NULL");
    CHECK_ERR(kp_moe_forward(s, NULL), KP_ERR_INVALID_ARGUMENT, "params is NULL");
    CHECK_ERR(kp_kv_cache_store(NULL, NULL), KP_ERR_INVALID_ARGUMENT, "kp_kv_cache_store: s");
    CHECK_ERR(kp_kv_cache_store(s, NULL), KP_ERR_INVALID_ARGUMENT, "params is NULL");
    CHECK_ERR(kp_quantize_fp8(NULL, NULL), KP_ERR_INVALID_ARGUMENT, "kp_quantize_fp8: s");
    CHECK_ERR(kp_quantize_fp8(s, NULL), KP_ERR_INVALID_ARGUMENT, "params is NULL");
    CHECK_ERR(kp_attention_prefill(s, &pf), KP_ERR_INVALID_ARGUMENT, "q is required"); /* all-zero params */
    CHECK_ERR(kp_op_supported(NULL, KP_OP_MOE_GATE, &pf), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK_ERR(kp_op_supported(d, KP_OP_COUNT, &pf), KP_ERR_INVALID_ARGUMENT, "not a kp_op");
    CHECK_ERR(kp_op_supported(d, (kp_op)-1, &pf), KP_ERR_INVALID_ARGUMENT, "not a kp_op");
    CHECK_ERR(kp_op_supported(d, KP_OP_MOE_GATE, NULL), KP_ERR_INVALID_ARGUMENT, "params is NULL");
    size_t ws = 7;
    kp_moe_forward_params fw;
    memset(&fw, 0, sizeof fw);
    CHECK_ERR(kp_moe_forward_workspace_size(NULL, &fw, &ws), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK_ERR(kp_moe_forward_workspace_size(d, NULL, &ws), KP_ERR_INVALID_ARGUMENT, "p is NULL");
    CHECK_ERR(kp_moe_forward_workspace_size(d, &fw, NULL), KP_ERR_INVALID_ARGUMENT, "bytes is NULL");
    CHECK_ERR(kp_moe_forward_workspace_size(d, &fw, &ws), KP_ERR_INVALID_ARGUMENT, "x is required");
    CHECK_INT_EQ(ws, 7);
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
}
