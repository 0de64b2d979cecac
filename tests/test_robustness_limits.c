/*
 * tests/test_robustness_limits.c — sizes at and past what kport can address (issue 16,
 * defects 1, 2 and 5): a kp_moe_forward workspace at any byte offset, size
 * computations that would overflow, each backend's index-width limits (kp_op_supported
 * and the call agree, and nothing runs past them), outputs whose strides make two
 * indices meet, DLPack views reaching past their memory, and address tensors
 * (kp_tensor_init_address) past the index width or the address space.
 *
 * Views of 2^32 rows and more are made cheaply: a stride of 0, or a small host buffer
 * wrapped with a size it does not have ("claimed"). Nothing may touch them: a backend
 * that ran past its limit would crash the test.
 */
#include "kp_test.h"
#include "op_params.h"

#include "internal.h"

#include <dlpack/dlpack.h>
#include <string.h>

static kp_device *open_cpu(void) { return kp_test_open_backend("cpu"); }

static kp_tensor view(kp_buffer *b, kp_dtype dt, int ndim, const int64_t *shape, const int64_t *strides) {
    kp_tensor t;
    CHECK_OK(kp_tensor_init(&t, b, 0, dt, ndim, shape, strides));
    return t;
}

/* The buffers the helpers below make, freed by release_all at the end of a test. */
static kp_buffer *made[64];
static int nmade;

static kp_buffer *keep(kp_buffer *b) {
    CHECK(nmade < (int)(sizeof made / sizeof made[0]));
    return made[nmade++] = b;
}

static void release_all(kp_device *d, kp_stream *s) {
    while (nmade > 0) CHECK_OK(kp_buffer_free(made[--nmade]));
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
}

/* A cpu buffer that claims `bytes` over 64 real ones. */
static kp_buffer *claimed(kp_device *d, size_t bytes) {
    static unsigned char cell[64];
    kp_buffer *b;
    CHECK_OK(kp_buffer_wrap(d, cell, bytes, &b));
    return keep(b);
}

static kp_buffer *zeroed(kp_device *d, size_t bytes) {
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(d, bytes, &b));
    unsigned char *z = calloc(1, bytes);
    CHECK_OK(kp_buffer_write(NULL, b, 0, z, bytes));
    free(z);
    return keep(b);
}

/* ---- defect 1: the workspace at any byte offset ---- */

/* kp_moe_forward with its workspace at offsets that are not multiples of 4 (or of 256),
 * in a buffer that also holds x right below the workspace (2-byte aligned, so a write
 * before the workspace lands in x) and guard bytes after it: the output is bitwise the
 * one of a workspace at offset 0, and no byte outside the workspace changes. OpenCL
 * used to address the workspace in 4-byte units from offset / 4, writing 1-3 bytes
 * before it. */
KP_CONFORMANCE(robust_moe_forward_workspace_at_any_offset) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    op_params o;
    op_params_make(&o, d, KP_OP_MOE_FORWARD);
    kp_moe_forward_params p = o.p.forward;
    size_t ws = 0, out_bytes = kp_buffer_size(p.out.buffer), x_bytes = kp_buffer_size(p.x.buffer);
    CHECK_OK(kp_moe_forward_workspace_size(d, &p, &ws));
    unsigned char *ref = malloc(out_bytes), *got = malloc(out_bytes), *x = malloc(x_bytes);
    CHECK_OK(kp_moe_forward(s, &p));
    CHECK_OK(kp_buffer_read(s, p.out.buffer, 0, ref, out_bytes));
    CHECK_OK(kp_buffer_read(s, p.x.buffer, 0, x, x_bytes));

    static const size_t offsets[] = {512, 513, 514, 515, 518, 700, 1001, 1024};
    enum { GUARD = 512 };
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        const size_t off = offsets[i], x_at = (off - x_bytes) & ~(size_t)1, total = off + ws + GUARD;
        unsigned char *before = malloc(total), *after = malloc(total);
        memset(before, 0xA5, total);
        memcpy(before + x_at, x, x_bytes);
        kp_buffer *shared;
        CHECK_OK(kp_buffer_alloc(d, total, &shared));
        CHECK_OK(kp_buffer_write(s, shared, 0, before, total));
        kp_moe_forward_params q = p;
        CHECK_OK(kp_tensor_init(&q.x, shared, x_at, p.x.dtype, 2, p.x.shape, NULL));
        q.workspace = shared;
        q.workspace_offset = off;
        memset(got, 0xFF, out_bytes);
        CHECK_OK(kp_buffer_write(s, q.out.buffer, 0, got, out_bytes)); /* poison */
        CHECK_OK(kp_op_supported(d, KP_OP_MOE_FORWARD, &q));
        CHECK_OK(kp_moe_forward(s, &q));
        CHECK_OK(kp_buffer_read(s, q.out.buffer, 0, got, out_bytes));
        CHECK_OK(kp_buffer_read(s, shared, 0, after, total));
        CHECK_MSG(memcmp(got, ref, out_bytes) == 0, "workspace_offset %zu: out differs from offset 0's", off);
        for (size_t b = 0; b < off; b++)
            CHECK_MSG(after[b] == before[b], "workspace_offset %zu: byte %zu before the workspace changed (%s)", off, b,
                      b >= x_at && b < x_at + x_bytes ? "in x" : "a guard");
        for (size_t b = off + ws; b < total; b++)
            CHECK_MSG(after[b] == before[b], "workspace_offset %zu: guard byte %zu after the workspace changed", off,
                      b - off - ws);
        CHECK_OK(kp_buffer_free(shared));
        free(before);
        free(after);
    }
    /* the size is what it takes from any offset: one byte less does not do */
    kp_buffer *tight;
    CHECK_OK(kp_buffer_alloc(d, 513 + ws - 1, &tight));
    kp_moe_forward_params q = p;
    q.workspace = tight, q.workspace_offset = 513;
    CHECK_ERR(kp_moe_forward(s, &q), KP_ERR_OUT_OF_BOUNDS, "are needed");
    CHECK_OK(kp_buffer_free(tight));
    free(ref), free(got), free(x);
    op_params_free(&o);
    CHECK_OK(kp_stream_destroy(s));
}

/* ---- defect 2: sizes that overflow, index widths ---- */

/* A view of any shape over one small zeroed buffer: every stride 0 but the last
 * dimension's (the cheap way to claim 2^32 rows). */
static kp_tensor bcast(kp_device *d, kp_dtype dt, int ndim, const int64_t *shape) {
    kp_tensor t;
    memset(&t, 0, sizeof t);
    t.buffer = zeroed(d, (size_t)shape[ndim - 1] * kp_dtype_size(dt));
    t.dtype = dt;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    t.strides[ndim - 1] = 1;
    return t;
}

/* The cpu backend's op slot, as the core calls it after validation. The core now
 * refuses the outputs these views have (a stride of 0: see the next section), so
 * calling the slot directly is how to show the backend enforces its own limits, dry
 * (kp_op_supported) and wet alike, before anything runs. */
static void check_cpu_slot_refuses(kp_op op, kp_stream *s, const void *params, const char *why) {
    const kp_backend_iface *cpu = kp_cpu_backend_iface();
    CHECK_ERR(cpu->ops[op](op, s, params, 1), KP_ERR_UNSUPPORTED, why);
    CHECK_ERR(cpu->ops[op](op, s, params, 0), KP_ERR_UNSUPPORTED, why);
}

/* x [T, 1], router_logits [T, 16] and out [T, 1] broadcast; 16 experts, inter 1. */
static kp_moe_forward_params huge_forward(kp_device *d, int64_t t) {
    kp_moe_forward_params p;
    memset(&p, 0, sizeof p);
    p.x = bcast(d, KP_BF16, 2, (int64_t[]){t, 1});
    p.router_logits = bcast(d, KP_F32, 2, (int64_t[]){t, 16});
    p.w13 = view(zeroed(d, 16 * 2 * 2), KP_BF16, 3, (int64_t[]){16, 2, 1}, NULL);
    p.w2 = view(zeroed(d, 16 * 2), KP_BF16, 3, (int64_t[]){16, 1, 1}, NULL);
    p.out = bcast(d, KP_BF16, 2, (int64_t[]){t, 1});
    p.routing = (kp_moe_routing){8, 1, 1, KP_MOE_SCORING_SOFTMAX, 1, 1.0f};
    p.workspace = zeroed(d, 4096);
    return p;
}

/* kp_moe_forward's workspace holds only what the backends write (issue 17): routing,
 * sorted ids, offsets, h [T*k, inter] and y [T*k, hidden] in x's dtype, and the shared
 * expert's h_s [T, inter_s] (also x's dtype); no x·w13ᵀ [T*k, 2*inter] region (SwiGLU
 * is fused), no padding rows (every backend aligns with block size 1). The DeepSeek-V3
 * sizes the README lists, from the shapes alone. That the backends write only inside
 * this size: the conformance tests' guard bytes around a workspace of exactly this
 * size (conf_moe_forward*); with no slack left, a region placed past its start runs
 * into them. */
static size_t ws_v3(kp_dtype dt, int64_t t, int64_t inter_s) {
    kp_moe_forward_params p;
    memset(&p, 0, sizeof p);
    static kp_buffer dummy;
    p.x.dtype = dt, p.x.ndim = 2, p.x.shape[0] = t, p.x.shape[1] = 7168;
    p.w13.ndim = 3, p.w13.shape[0] = 256, p.w13.shape[1] = 2 * 2048, p.w13.shape[2] = 7168;
    if (inter_s) p.shared_w13.buffer = &dummy, p.shared_w13.ndim = 2, p.shared_w13.shape[0] = 2 * inter_s;
    p.routing.topk = 8;
    size_t b = 0;
    CHECK_OK(kp_moe_forward_workspace_bytes(&p, &b));
    return b;
}

KP_TEST(robust_moe_forward_workspace_only_what_is_written) {
    /* bf16 h and y (the README's table): half of f32's */
    CHECK_INT_EQ(ws_v3(KP_BF16, 1, 0), 150015u);          /* 146.5 KiB (819.5 MiB at first) */
    CHECK_INT_EQ(ws_v3(KP_BF16, 128, 0), 18892287u);      /* 18.0 MiB */
    CHECK_INT_EQ(ws_v3(KP_BF16, 4096, 0), 604505599u);    /* 576.5 MiB (2483.6 at first) */
    CHECK_INT_EQ(ws_v3(KP_BF16, 4096, 2048), 621282815u); /* + the shared expert's h_s [T, 2048] */
    CHECK_INT_EQ(ws_v3(KP_F16, 4096, 0), 604505599u);
    /* f32 layers keep f32 intermediates */
    CHECK_INT_EQ(ws_v3(KP_F32, 1, 0), 297471u);           /* 290.5 KiB */
    CHECK_INT_EQ(ws_v3(KP_F32, 128, 0), 37766655u);       /* 36.0 MiB */
    CHECK_INT_EQ(ws_v3(KP_F32, 4096, 0), 1208485375u);    /* 1152.5 MiB */
    CHECK_INT_EQ(ws_v3(KP_F32, 4096, 2048), 1242039807u);
}

/* The workspace size for T = 2^60 with topk 8: T * topk alone overflows. It came out
 * as 1536 bytes, and kp_moe_forward then wrote past them. */
KP_TEST(robust_moe_forward_workspace_bytes_overflow) {
    kp_device *d = open_cpu();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    kp_moe_forward_params p = huge_forward(d, (int64_t)1 << 60);
    size_t ws = 12345;
    CHECK_ERR(kp_moe_forward_workspace_bytes(&p, &ws), KP_ERR_INVALID_SHAPE, "too large to address");
    CHECK_INT_EQ(ws, 12345);
    p = huge_forward(d, 4); /* and a huge inter: rows * 2 * inter * 4 overflows */
    p.w13 = bcast(d, KP_BF16, 3, (int64_t[]){16, (int64_t)1 << 62, 1});
    CHECK_ERR(kp_moe_forward_workspace_bytes(&p, &ws), KP_ERR_INVALID_SHAPE, "inter = 2305843009213693952");
    CHECK_INT_EQ(ws, 12345);
    release_all(d, s);
}

/* The same through the public API, with views it accepts: T = 2^29 tokens and
 * inter = 2^31 (w13 broadcast, w2 [16, 1, 2^31] and out [T, 1] in host buffers
 * wrapped with sizes they do not have: 4 GiB and 1 GiB, never touched). bf16
 * intermediates: h alone is 2^32 rows * 2^31 * 2 bytes. */
KP_TEST(robust_moe_forward_workspace_size_overflow) {
    kp_device *d = open_cpu();
    kp_device_info info;
    CHECK_OK(kp_device_get_info(d, &info));
    if (info.memory_bytes < ((uint64_t)4 << 30))
        KP_SKIP("kp_buffer_wrap refuses sizes above the device's %llu bytes; this needs a 4 GiB view",
                (unsigned long long)info.memory_bytes);
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    const int64_t t = (int64_t)1 << 29, inter = (int64_t)1 << 31;
    kp_moe_forward_params p = huge_forward(d, t);
    p.w13 = bcast(d, KP_BF16, 3, (int64_t[]){16, 2 * inter, 1});
    p.w2 = view(claimed(d, (size_t)inter * 2), KP_BF16, 3, (int64_t[]){16, 1, inter}, (int64_t[]){0, inter, 1});
    p.out = view(claimed(d, (size_t)t * 2), KP_BF16, 2, (int64_t[]){t, 1}, NULL);
    size_t ws = 12345;
    CHECK_ERR(kp_moe_forward_workspace_size(d, &p, &ws), KP_ERR_INVALID_SHAPE, "too large to address");
    CHECK_INT_EQ(ws, 12345);
    p.workspace = claimed(d, (size_t)info.memory_bytes);
    CHECK_ERR(kp_op_supported(d, KP_OP_MOE_FORWARD, &p), KP_ERR_INVALID_SHAPE, "too large to address");
    CHECK_ERR(kp_moe_forward(s, &p), KP_ERR_INVALID_SHAPE, "too large to address");
    release_all(d, s);
}

/* Sizes past the cpu backend's widths: T = 2^40 (an extent of 2^31 or more), then
 * T = 2^28 with topk 8 (2^31 (token, slot) pairs). */
KP_TEST(robust_cpu_moe_forward_past_index_width) {
    kp_device *d = open_cpu();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    kp_moe_forward_params p = huge_forward(d, (int64_t)1 << 40);
    check_cpu_slot_refuses(KP_OP_MOE_FORWARD, s, &p,
                           "x.shape[0] is 1099511627776; the cpu backend indexes with 32-bit integers");
    p = huge_forward(d, (int64_t)1 << 28);
    check_cpu_slot_refuses(KP_OP_MOE_FORWARD, s, &p,
                           "T * topk is 2147483648; the cpu backend numbers the (token, slot) pairs in 32-bit");
    release_all(d, s);
}

/* Paged decode and MLA decode with s_q = 2^32 (the cpu backend cast it to int and
 * wrote out of bounds) and 2^24 + 1 (past its stated limit): unsupported; s_q = 2^24
 * is supported (asked, not run). Through the public API the same views are refused
 * at the door: out has a stride of 0. */
static void decode_case(kp_device *d, kp_stream *s, kp_op op, int64_t s_q, const char *why) {
    const int mla = op == KP_OP_MLA_DECODE;
    const int64_t dqk = mla ? 576 : 64, dv = mla ? 512 : 64, bs = mla ? 64 : 16;
    const kp_dtype dt = mla ? KP_BF16 : KP_F32;
    kp_tensor q = bcast(d, dt, 4, (int64_t[]){1, s_q, 1, dqk});
    kp_tensor cache = bcast(d, dt, 4, (int64_t[]){1, bs, 1, dqk});
    kp_tensor table = view(zeroed(d, 4), KP_I32, 2, (int64_t[]){1, 1}, NULL);
    kp_tensor lens = view(zeroed(d, 4), KP_I32, 1, (int64_t[]){1}, NULL);
    kp_tensor out = bcast(d, dt, 4, (int64_t[]){1, s_q, 1, dv});
    kp_attention_decode_params a = {.q = q, .k_cache = cache, .v_cache = cache, .block_table = table,
                                    .seq_lens = lens, .out = out, .softmax_scale = 0.125f};
    kp_mla_decode_params m = {.q = q, .kv_cache = cache, .block_table = table, .seq_lens = lens, .out = out,
                              .softmax_scale = 0.1352337788608801f, .head_dim_v = 512};
    const void *params = mla ? (const void *)&m : (const void *)&a;
    if (!why) {
        CHECK_OK(kp_cpu_backend_iface()->ops[op](op, s, params, 1));
        return;
    }
    check_cpu_slot_refuses(op, s, params, why);
    CHECK_ERR(kp_op_supported(d, op, params), KP_ERR_INVALID_LAYOUT, "output out has stride[1] = 0");
    CHECK_ERR(mla ? kp_mla_decode(s, &m) : kp_attention_decode(s, &a), KP_ERR_INVALID_LAYOUT, "distinct element");
}

KP_TEST(robust_cpu_decode_past_index_width) {
    kp_device *d = open_cpu();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int i = 0; i < 2; i++) {
        kp_op op = i ? KP_OP_MLA_DECODE : KP_OP_ATTENTION_DECODE;
        decode_case(d, s, op, (int64_t)1 << 32,
                    "q.shape[1] is 4294967296; the cpu backend indexes with 32-bit integers: every extent must be "
                    "below 2^31");
        decode_case(d, s, op, ((int64_t)1 << 24) + 1, "s_q is 16777217; the cpu backend takes s_q up to 2^24");
        decode_case(d, s, op, (int64_t)1 << 24, NULL);
    }
    release_all(d, s);
}

/* The gate with T = 2^31 tokens: past the cpu backend's extents; T = 2^31 - 1 is
 * within them (asked, not run). */
static kp_moe_gate_params huge_gate(kp_device *d, int64_t t) {
    kp_moe_gate_params p = {
        .logits = bcast(d, KP_F32, 2, (int64_t[]){t, 16}),
        .topk_ids = bcast(d, KP_I32, 2, (int64_t[]){t, 2}),
        .topk_weights = bcast(d, KP_F32, 2, (int64_t[]){t, 2}),
        .routing = {2, 1, 1, KP_MOE_SCORING_SOFTMAX, 1, 1.0f},
    };
    return p;
}

KP_TEST(robust_cpu_gate_past_index_width) {
    kp_device *d = open_cpu();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    kp_moe_gate_params p = huge_gate(d, (int64_t)1 << 31);
    check_cpu_slot_refuses(KP_OP_MOE_GATE, s, &p, "logits.shape[0] is 2147483648");
    p = huge_gate(d, INT32_MAX);
    CHECK_OK(kp_cpu_backend_iface()->ops[KP_OP_MOE_GATE](KP_OP_MOE_GATE, s, &p, 1));
    release_all(d, s);
}

/* ---- outputs whose strides make two indices meet ---- */

/* An output with a stride of 0 on an extent above 1, or strides that interleave
 * (topk_weights [3, 4] with row stride 2), is KP_ERR_INVALID_LAYOUT and nothing is
 * written; an input may be broadcast, and an output in any permutation of a
 * row-major layout runs. */
KP_TEST(robust_outputs_must_not_self_overlap) {
    kp_device *d = open_cpu();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    op_params o;
    unsigned char *snaps[OP_PARAMS_MAX_BUFFERS];
    static const int64_t bad_rows[] = {0, 1, 2, 3};
    for (size_t i = 0; i < sizeof bad_rows / sizeof bad_rows[0]; i++) {
        op_params_make(&o, d, KP_OP_MOE_GATE);
        o.p.gate.topk_weights.strides[0] = bad_rows[i];
        op_params_snapshot(&o, snaps);
        CHECK_ERR(kp_moe_gate(s, &o.p.gate), KP_ERR_INVALID_LAYOUT, "output topk_weights has stride[");
        CHECK_ERR(kp_op_supported(d, KP_OP_MOE_GATE, &o.p.gate), KP_ERR_INVALID_LAYOUT, "distinct element");
        op_params_unchanged(&o, snaps);
        op_params_free(&o);
    }
    op_params_make(&o, d, KP_OP_MOE_GATE);
    o.p.gate.logits.strides[0] = 0; /* a broadcast input is fine */
    CHECK_OK(kp_moe_gate(s, &o.p.gate));
    op_params_free(&o);

    op_params_make(&o, d, KP_OP_ATTENTION_DECODE); /* out [2, 1, 4, 64]: stride 0 on B */
    kp_tensor *out = &o.p.decode.out;
    out->strides[0] = 0;
    op_params_snapshot(&o, snaps);
    CHECK_ERR(kp_attention_decode(s, &o.p.decode), KP_ERR_INVALID_LAYOUT, "output out has stride[0] = 0");
    out->strides[2] = 32; /* heads overlapping by half a row */
    out->strides[0] = 256;
    CHECK_ERR(kp_attention_decode(s, &o.p.decode), KP_ERR_INVALID_LAYOUT, "output out has stride[2] = 32");
    op_params_unchanged(&o, snaps);
    /* stored as [4][2][64] (heads outermost): a permutation of row-major, allowed */
    out->strides[0] = 64, out->strides[1] = 512, out->strides[2] = 128, out->strides[3] = 1;
    CHECK_OK(kp_attention_decode(s, &o.p.decode));
    op_params_free(&o);
    release_all(d, s);
}

/* ---- defect 5: DLPack views past their memory ---- */

/* A byte_offset near 2^64 and a shape whose bytes overflow size_t used to wrap around
 * to a small buffer and KP_OK; a byte offset not a multiple of the element size and a
 * strided last dimension are refused as kp_tensor_init refuses them. No buffer handle
 * is left behind by a refusal (kp_shutdown would fail on one). */
KP_TEST(robust_dlpack_views_past_their_memory) {
    kp_device *d = open_cpu();
    float data[16] = {0};
    int64_t shape[2] = {2, 2}, huge[1] = {(int64_t)1 << 62}, strided[2] = {4, 2};
    DLTensor t = {data, {kDLCPU, 0}, 2, {kDLFloat, 32, 1}, shape, NULL, 0};
    kp_tensor k;
    memset(&k, 0x5A, sizeof k);
    kp_tensor untouched = k;

    DLTensor bad = t;
    bad.byte_offset = UINT64_MAX - 7;
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_INVALID_SHAPE, "too large to address");
    bad = t;
    bad.ndim = 1, bad.shape = huge; /* 2^62 floats: 2^64 bytes */
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_INVALID_SHAPE, "too large to address");
    bad = t;
    bad.byte_offset = 2;
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_INVALID_LAYOUT, "not a multiple of its element size");
    bad = t;
    bad.strides = strided;
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_INVALID_LAYOUT, "contiguous last dimension");
    CHECK(memcmp(&k, &untouched, sizeof k) == 0);

    t.byte_offset = 8 * sizeof(float); /* the good one still works: 8 bytes past 8 floats */
    CHECK_OK(kp_tensor_from_dlpack(&t, d, &k));
    CHECK(k.offset == (size_t)(uintptr_t)(data + 8)); /* an address tensor: its own extent is its bounds */
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}

/* Address tensors (kp_device_memory) describe memory by the caller's word, so a view of
 * 2^32 rows costs nothing to make: the core takes it (address not NULL, aligned, no
 * wrap-around) and the cpu backend refuses it by its index width, asked and called
 * alike, before touching the (fake, unmapped) addresses; past the address space's end,
 * the core refuses it first. */
KP_TEST(robust_address_tensors_past_index_width) {
    kp_device *d = open_cpu();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    const int64_t t = (int64_t)1 << 32, e = 16, k = 2;
    kp_moe_gate_params p = {.routing = {k, 1, 1, KP_MOE_SCORING_SOFTMAX, 1, 1.0f}};
    CHECK_OK(kp_tensor_init_address(&p.logits, d, (void *)(uintptr_t)((uint64_t)1 << 44), KP_F32, 2,
                                    (int64_t[]){t, e}, NULL));
    CHECK_OK(kp_tensor_init_address(&p.topk_ids, d, (void *)(uintptr_t)((uint64_t)1 << 45), KP_I32, 2,
                                    (int64_t[]){t, k}, NULL));
    CHECK_OK(kp_tensor_init_address(&p.topk_weights, d, (void *)(uintptr_t)((uint64_t)3 << 44), KP_F32, 2,
                                    (int64_t[]){t, k}, NULL));
    const char *why = "logits.shape[0] is 4294967296; the cpu backend indexes with 32-bit integers";
    CHECK_ERR(kp_op_supported(d, KP_OP_MOE_GATE, &p), KP_ERR_UNSUPPORTED, why);
    CHECK_ERR(kp_moe_gate(s, &p), KP_ERR_UNSUPPORTED, why);
    /* the outputs overlapping each other: caught between address tensors */
    kp_moe_gate_params q = p;
    q.topk_weights.offset = q.topk_ids.offset + 4;
    CHECK_ERR(kp_moe_gate(s, &q), KP_ERR_ALIASING, "overlaps");
    /* logits reaching past the end of the address space */
    q = p;
    q.logits.offset = (size_t)(UINTPTR_MAX - ((uintptr_t)1 << 30)) & ~(size_t)63;
    CHECK_ERR(kp_moe_gate(s, &q), KP_ERR_OUT_OF_BOUNDS, "past the end of the address space");
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
}
