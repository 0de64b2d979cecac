/*
 * tests/test_address.c — tensors that point straight at a device address
 * (kp_device_memory, kp_tensor_init_address, DLPack import; issue 17 "Cheap tensors").
 * Every op run on address tensors must give the same bytes as on buffer tensors and
 * touch nothing around them; every bad address is refused with nothing written; a
 * DLPack import allocates no handle.
 */
#include "kp_test.h"
#include "op_params.h"

#include "internal.h"

#include <dlpack/dlpack.h>
#include <stdlib.h>
#include <string.h>

static kp_device *open_cpu(void) { return kp_test_open_backend("cpu"); }

#define GUARD 64
#define GUARD_BYTE 0xA5

/* Host copies of an argument set's buffers, each between two guards. */
typedef struct host_copy {
    unsigned char *mem[OP_PARAMS_MAX_BUFFERS];
    size_t size[OP_PARAMS_MAX_BUFFERS];
} host_copy;

static void copy_to_host(op_params *o, host_copy *h) {
    for (int i = 0; i < o->nbuffers; i++) {
        h->size[i] = kp_buffer_size(o->buffers[i]);
        h->mem[i] = aligned_alloc(256, (h->size[i] + 2 * GUARD + 255) / 256 * 256);
        CHECK(h->mem[i] != NULL);
        memset(h->mem[i], GUARD_BYTE, h->size[i] + 2 * GUARD);
        CHECK_OK(kp_buffer_read(NULL, o->buffers[i], 0, h->mem[i] + GUARD, h->size[i]));
    }
}

/* params with every tensor moved from its buffer to the same bytes of the host copy. */
static void to_addresses(op_params *o, host_copy *h, kp_device *d, void *params, int *moved_buffer) {
    kp_buffer *mem;
    CHECK_OK(kp_device_memory(d, &mem));
    const kp_tensor *t[KP_OP_MAX_TENSORS];
    const char *names[KP_OP_MAX_TENSORS];
    int n = kp_backend_op_tensors(o->op, params, t, names);
    int moved = 0;
    for (int i = 0; i < n; i++) {
        kp_tensor *u = (kp_tensor *)t[i];
        if (!u->buffer) continue;
        for (int b = 0; b < o->nbuffers; b++) {
            if (u->buffer != o->buffers[b]) continue;
            u->offset = (size_t)(uintptr_t)(h->mem[b] + GUARD) + u->offset;
            u->buffer = mem;
            if (moved_buffer) moved_buffer[b] = 1;
            moved++;
            break;
        }
    }
    CHECK(moved > 0);
}

/* Runs o's op on buffer tensors and on address tensors over copies of the same
 * bytes: every buffer must end bitwise equal to its copy, the guards untouched. */
static void same_bytes_as_buffers_with(kp_op op, void (*tweak)(op_params *o, kp_device *d)) {
    kp_device *d = open_cpu();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    op_params o;
    op_params_make(&o, d, op);
    if (tweak) tweak(&o, d);
    host_copy h;
    copy_to_host(&o, &h);
    op_params a = o; /* the same params, its tensors moved to addresses */
    int moved[OP_PARAMS_MAX_BUFFERS] = {0}; /* buffers not moved (moe_forward's workspace) serve both runs */
    to_addresses(&o, &h, d, &a.p, moved);
    CHECK_OK(op_params_run(&a, s));
    CHECK_OK(op_params_run(&o, s));
    CHECK_OK(kp_stream_sync(s));
    for (int i = 0; i < o.nbuffers; i++) {
        unsigned char *got = malloc(h.size[i]);
        if (!moved[i]) {
            free(got);
            free(h.mem[i]);
            continue;
        }
        CHECK_OK(kp_buffer_read(NULL, o.buffers[i], 0, got, h.size[i]));
        CHECK_MSG(memcmp(got, h.mem[i] + GUARD, h.size[i]) == 0, "%s: %s differs between buffer and address tensors",
                  kp_op_name(op), o.names[i]);
        for (size_t g = 0; g < GUARD; g++)
            CHECK_MSG(h.mem[i][g] == GUARD_BYTE && h.mem[i][GUARD + h.size[i] + g] == GUARD_BYTE,
                      "%s: a guard byte of %s changed", kp_op_name(op), o.names[i]);
        free(got);
        free(h.mem[i]);
    }
    op_params_free(&o);
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
}

static void same_bytes_as_buffers(kp_op op) { same_bytes_as_buffers_with(op, NULL); }

KP_TEST(api_address_tensors_same_bytes_as_buffers) {
    for (int op = 0; op < KP_OP_COUNT; op++) same_bytes_as_buffers((kp_op)op);
}

/* A tensor of its own buffer (adopted by o), filled from bytes. */
static kp_tensor extra_tensor(op_params *o, kp_device *d, kp_dtype dt, int ndim, const int64_t *shape,
                              const void *bytes, size_t n) {
    kp_buffer *b;
    kp_tensor t;
    CHECK_OK(kp_buffer_alloc(d, n, &b));
    CHECK_OK(kp_buffer_write(NULL, b, 0, bytes, n));
    op_params_adopt(o, b);
    CHECK_OK(kp_tensor_init(&t, b, 0, dt, ndim, shape, NULL));
    return t;
}

/* grouped_gemm W8A8: e4m3 a with its scales (column-major: a second stride to honour) and e4m3 w. */
static void w8a8_gemm(op_params *o, kp_device *d) {
    kp_grouped_gemm_params *p = &o->p.gemm;
    unsigned char a[8 * 128], w[4 * 32 * 128];
    float a_scale[1 * 8], w_scale[4];
    for (size_t i = 0; i < sizeof a; i++) a[i] = (unsigned char)((i * 37 + 11) & 0xbf);
    for (size_t i = 0; i < sizeof w; i++) w[i] = (unsigned char)((i * 53 + 5) & 0xbf);
    for (int i = 0; i < 8; i++) a_scale[i] = 0.25f * (float)(i + 1);
    for (int i = 0; i < 4; i++) w_scale[i] = 0.01f * (float)(i + 1);
    p->a = extra_tensor(o, d, KP_FP8_E4M3, 2, (int64_t[]){8, 128}, a, sizeof a);
    p->a_scale = extra_tensor(o, d, KP_F32, 2, (int64_t[]){1, 8}, a_scale, sizeof a_scale);
    p->a_scale_layout = KP_FP8_SCALE_COL_MAJOR;
    p->w = extra_tensor(o, d, KP_FP8_E4M3, 3, (int64_t[]){4, 32, 128}, w, sizeof w);
    p->w_scale = extra_tensor(o, d, KP_F32, 3, (int64_t[]){4, 1, 1}, w_scale, sizeof w_scale);
}

/* W8A8's scales are read through the address too (they once were read through the
 * buffer, which crashed on an address tensor: every framework call on cpu). */
KP_TEST(api_address_tensors_w8a8) { same_bytes_as_buffers_with(KP_OP_GROUPED_GEMM, w8a8_gemm); }

KP_TEST(api_address_tensor_rules) {
    kp_device *d = open_cpu();
    kp_buffer *mem, *again;
    CHECK_ERR(kp_device_memory(NULL, &mem), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK_ERR(kp_device_memory(d, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_OK(kp_device_memory(d, &mem));
    CHECK_OK(kp_device_memory(d, &again));
    CHECK(mem == again); /* one per device, owned by it */
    CHECK(kp_buffer_size(mem) == SIZE_MAX);
    CHECK(kp_buffer_device(mem) == d);

    float data[4 * 8 + 1];
    int64_t shape[2] = {4, 8};
    kp_tensor t, untouched;
    memset(&t, 0x5A, sizeof t);
    untouched = t;
    CHECK_ERR(kp_tensor_init_address(&t, d, NULL, KP_F32, 2, shape, NULL), KP_ERR_INVALID_ARGUMENT, "address is NULL");
    CHECK_ERR(kp_tensor_init(&t, mem, 0, KP_F32, 2, shape, NULL), KP_ERR_INVALID_ARGUMENT, "NULL address");
    CHECK_ERR(kp_tensor_init_address(&t, d, (char *)data + 2, KP_F32, 2, shape, NULL), KP_ERR_INVALID_LAYOUT,
              "not a multiple of its element size");
    CHECK_ERR(kp_tensor_init_address(&t, NULL, data, KP_F32, 2, shape, NULL), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    /* address + extent wraps around: the view is never touched, only described */
    const void *top = (const void *)(uintptr_t)(UINTPTR_MAX & ~(uintptr_t)15);
    CHECK_ERR(kp_tensor_init_address(&t, d, top, KP_F32, 2, shape, NULL), KP_ERR_OUT_OF_BOUNDS,
              "past the end of the address space");
    int64_t huge[2] = {INT64_MAX / 2, 4};
    CHECK_ERR(kp_tensor_init_address(&t, d, data, KP_F32, 2, huge, NULL), KP_ERR_INVALID_SHAPE, "too large");
    CHECK(memcmp(&t, &untouched, sizeof t) == 0);

    CHECK_OK(kp_tensor_init_address(&t, d, data, KP_F32, 2, shape, NULL));
    CHECK(t.buffer == mem && t.offset == (size_t)(uintptr_t)data && t.strides[0] == 8);
    int64_t padded[2] = {9, 1}; /* the extent is the view's own: 3 * 9 + 8 floats */
    CHECK_OK(kp_tensor_init_address(&t, d, data, KP_F32, 2, shape, padded));

    /* no copies through the pseudo-buffer; freeing it is a harmless no-op */
    float v = 1.0f;
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(d, 64, &b));
    CHECK_ERR(kp_buffer_write(NULL, mem, (size_t)(uintptr_t)data, &v, 4), KP_ERR_UNSUPPORTED, "kp_device_memory");
    CHECK_ERR(kp_buffer_read(NULL, mem, (size_t)(uintptr_t)data, &v, 4), KP_ERR_UNSUPPORTED, "kp_device_memory");
    CHECK_ERR(kp_buffer_copy(NULL, b, 0, mem, (size_t)(uintptr_t)data, 4), KP_ERR_UNSUPPORTED, "kp_device_memory");
    CHECK_ERR(kp_buffer_copy(NULL, mem, (size_t)(uintptr_t)data, b, 0, 4), KP_ERR_UNSUPPORTED, "kp_device_memory");
    int live = kp_registry_handles_live();
    CHECK_OK(kp_buffer_free(mem));
    CHECK_OK(kp_buffer_free(mem));
    CHECK_INT_EQ(kp_registry_handles_live(), live);
    CHECK_OK(kp_tensor_init_address(&t, d, data, KP_F32, 2, shape, NULL)); /* still usable */
    CHECK_OK(kp_buffer_free(b));
    CHECK_OK(kp_device_close(d));
}

/* Ops refuse bad address tensors before writing anything. */
KP_TEST(api_address_tensors_refused_by_ops) {
    kp_device *d = open_cpu();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    op_params o;
    op_params_make(&o, d, KP_OP_ATTENTION_DECODE);
    host_copy h;
    copy_to_host(&o, &h);
    int out = -1, q = -1; /* which host copies hold out and q */
    for (int i = 0; i < o.nbuffers; i++) {
        if (o.buffers[i] == o.p.decode.out.buffer) out = i;
        if (o.buffers[i] == o.p.decode.q.buffer) q = i;
    }
    CHECK(out >= 0 && q >= 0);
    unsigned char *before = malloc(h.size[out]);
    memcpy(before, h.mem[out] + GUARD, h.size[out]);

    op_params a = o;
    to_addresses(&o, &h, d, &a.p, NULL);
    kp_attention_decode_params p = a.p.decode;
    p.out.offset += 1; /* misaligned */
    CHECK_ERR(kp_attention_decode(s, &p), KP_ERR_INVALID_LAYOUT, "out");
    p = a.p.decode;
    p.out.offset = 0; /* NULL */
    CHECK_ERR(kp_attention_decode(s, &p), KP_ERR_INVALID_ARGUMENT, "NULL address");
    p = a.p.decode;
    p.out.offset = (size_t)(UINTPTR_MAX & ~(uintptr_t)15); /* wraps around */
    CHECK_ERR(kp_attention_decode(s, &p), KP_ERR_OUT_OF_BOUNDS, "past the end of the address space");
    p = a.p.decode;
    p.out.offset = p.q.offset; /* two address tensors over one region */
    CHECK_ERR(kp_attention_decode(s, &p), KP_ERR_ALIASING, "overlaps");
    p = a.p.decode;
    p.out.offset = p.q.offset + 4 * kp_dtype_size(p.q.dtype); /* partly */
    CHECK_ERR(kp_attention_decode(s, &p), KP_ERR_ALIASING, "overlaps");
    p = a.p.decode;
    p.out.strides[0] = 0; /* an output whose rows meet */
    CHECK_ERR(kp_attention_decode(s, &p), KP_ERR_INVALID_LAYOUT, "distinct element");
    CHECK(memcmp(before, h.mem[out] + GUARD, h.size[out]) == 0);
    CHECK_ERR(kp_op_supported(d, KP_OP_ATTENTION_DECODE, &p), KP_ERR_INVALID_LAYOUT, "distinct element");

    /* a kp_moe_forward workspace must be a real buffer */
    op_params f;
    op_params_make(&f, d, KP_OP_MOE_FORWARD);
    kp_moe_forward_params fp = f.p.forward;
    CHECK_OK(kp_device_memory(d, &fp.workspace));
    fp.workspace_offset = (size_t)(uintptr_t)h.mem[out];
    CHECK_ERR(kp_moe_forward(s, &fp), KP_ERR_UNSUPPORTED, "kp_buffer_wrap");
    op_params_free(&f);

    for (int i = 0; i < o.nbuffers; i++) free(h.mem[i]);
    free(before);
    op_params_free(&o);
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
}

KP_TEST(api_dlpack_import_allocates_nothing) {
    kp_device *d = open_cpu();
    kp_buffer *mem;
    CHECK_OK(kp_device_memory(d, &mem));
    float data[6 * 8];
    for (int i = 0; i < 48; i++) data[i] = (float)i;
    int64_t shape[2] = {5, 8}, strides[2] = {8, 1};
    DLTensor t = {data, {kDLCPU, 0}, 2, {kDLFloat, 32, 1}, shape, strides, 8 * sizeof(float)};
    int live = kp_registry_handles_live();
    kp_tensor k;
    for (int i = 0; i < 1000; i++) CHECK_OK(kp_tensor_from_dlpack(&t, d, &k));
    CHECK_INT_EQ(kp_registry_handles_live(), live); /* no kp_buffer made, none to free */
    CHECK(k.buffer == mem);
    CHECK(k.offset == (size_t)(uintptr_t)(data + 8)); /* byte_offset honoured */
    CHECK_OK(kp_buffer_free(k.buffer));                /* what older callers do: harmless */

    /* the view reads the producer's memory: a gate on it sees row 1 of data */
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    int32_t ids[5 * 2];
    float w[5 * 2];
    int64_t ts[2] = {5, 2};
    kp_moe_gate_params g;
    memset(&g, 0, sizeof g);
    g.logits = k;
    CHECK_OK(kp_tensor_init_address(&g.topk_ids, d, ids, KP_I32, 2, ts, NULL));
    CHECK_OK(kp_tensor_init_address(&g.topk_weights, d, w, KP_F32, 2, ts, NULL));
    g.routing.topk = 2;
    g.routing.n_group = 1;
    g.routing.topk_group = 1;
    g.routing.scoring = KP_MOE_SCORING_SOFTMAX;
    g.routing.route_scale = 1.0f;
    CHECK_OK(kp_moe_gate(s, &g));
    CHECK_INT_EQ(ids[0], 7); /* row 0 of the view is data[8..15]: largest at column 7 */
    CHECK_INT_EQ(ids[1], 6);
    CHECK_OK(kp_stream_destroy(s));

    /* data + byte_offset or the extent past the end of the address space */
    DLTensor bad = t;
    bad.data = (void *)(uintptr_t)(UINTPTR_MAX & ~(uintptr_t)63);
    bad.byte_offset = 128;
    memset(&k, 0x5A, sizeof k);
    kp_tensor untouched = k;
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_OUT_OF_BOUNDS, "address space");
    bad.byte_offset = 0;
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_OUT_OF_BOUNDS, "past the end of the address space");
    CHECK(memcmp(&k, &untouched, sizeof k) == 0);
    CHECK_INT_EQ(kp_registry_handles_live(), live);
    CHECK_OK(kp_device_close(d));
}

KP_TEST(api_address_tensors_refused_on_opencl) {
    kp_device *d = kp_test_open_backend("opencl");
    kp_device_info info;
    CHECK_OK(kp_device_get_info(d, &info));
    CHECK(!(info.caps & KP_CAP_DEVICE_ADDRESSES));
    kp_buffer *mem = (kp_buffer *)1;
    CHECK_ERR(kp_device_memory(d, &mem), KP_ERR_UNSUPPORTED, "kp_buffer_wrap");
    CHECK(mem == NULL);
    float data[4];
    int64_t shape[1] = {4};
    kp_tensor t;
    CHECK_ERR(kp_tensor_init_address(&t, d, data, KP_F32, 1, shape, NULL), KP_ERR_UNSUPPORTED, "kp_buffer_wrap");
    CHECK_OK(kp_device_close(d));
}
