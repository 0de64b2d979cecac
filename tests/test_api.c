/*
 * tests/test_api.c — the public API's contract outside the ops: init, backends,
 * devices, streams, buffers, tensors, DLPack, errors and thread safety. Every bad
 * argument gets its own status code, a message naming it, and changes nothing.
 */
#include "kp_test.h"

#include <limits.h>
#include <pthread.h>

static kp_device *open_cpu(void) { return kp_test_open_backend("cpu"); }

KP_TEST(api_status_names) {
    for (int s = KP_OK; s <= KP_ERR_INTERNAL; s++) {
        const char *name = kp_status_str((kp_status)s);
        CHECK(strncmp(name, "KP_", 3) == 0);
        CHECK(strcmp(name, "KP_ERR_UNKNOWN") != 0);
    }
    CHECK_STR_EQ(kp_status_str((kp_status)999), "KP_ERR_UNKNOWN");
    CHECK_STR_EQ(kp_status_str(KP_ERR_INVALID_SHAPE), "KP_ERR_INVALID_SHAPE");
    CHECK(kp_last_error() != NULL);
    CHECK_STR_CONTAINS(kp_version(), "0.1.0");
}

KP_TEST(api_dtype_and_op_names) {
    CHECK_INT_EQ(kp_dtype_size(KP_F32), 4);
    CHECK_INT_EQ(kp_dtype_size(KP_BF16), 2);
    CHECK_INT_EQ(kp_dtype_size(KP_F16), 2);
    CHECK_INT_EQ(kp_dtype_size(KP_I32), 4);
    CHECK_INT_EQ(kp_dtype_size(KP_FP8_E4M3), 1);
    CHECK_INT_EQ(kp_dtype_size((kp_dtype)42), 0);
    CHECK_STR_EQ(kp_dtype_name(KP_BF16), "bf16");
    CHECK_STR_EQ(kp_dtype_name((kp_dtype)-1), "invalid");
    CHECK_STR_EQ(kp_op_name(KP_OP_MLA_DECODE), "mla_decode");
    CHECK_STR_EQ(kp_op_name(KP_OP_MOE_FORWARD), "moe_forward");
    CHECK_STR_EQ(kp_op_name((kp_op)77), "invalid");
}

KP_TEST(api_before_init) {
    kp_device *d = (kp_device *)0x1;
    kp_backend_info b;
    kp_device_info i;
    CHECK_INT_EQ(kp_backend_count(), 0);
    CHECK_INT_EQ(kp_device_count(), 0);
    CHECK_ERR(kp_device_open(-1, &d), KP_ERR_NOT_INITIALIZED, "kp_init");
    CHECK(d == NULL);
    CHECK_ERR(kp_backend_info_get(0, &b), KP_ERR_NOT_INITIALIZED, "kp_init");
    CHECK_ERR(kp_device_info_get(0, &i), KP_ERR_NOT_INITIALIZED, "kp_init");
    CHECK_ERR(kp_shutdown(), KP_ERR_NOT_INITIALIZED, "not initialised");
}

KP_TEST(api_init_options) {
    kp_init_options bad_threads = {NULL, -1, 0};
    CHECK_ERR(kp_init(&bad_threads), KP_ERR_INVALID_ARGUMENT, "cpu_threads");
    kp_init_options bad_flags = {NULL, 0, 0x80};
    CHECK_ERR(kp_init(&bad_flags), KP_ERR_INVALID_ARGUMENT, "flags");
    CHECK_INT_EQ(kp_backend_count(), 0);
    kp_init_options ok = {NULL, 3, KP_INIT_NO_PLUGINS};
    CHECK_OK(kp_init(&ok));
    CHECK_INT_EQ(kp_backend_count(), 1);
    kp_device_info i;
    CHECK_OK(kp_device_info_get(0, &i));
    CHECK_INT_EQ(i.compute_units, 3); /* the CPU backend took the thread count */
    CHECK_OK(kp_init(NULL));          /* idempotent: the first options stay */
    CHECK_INT_EQ(kp_backend_count(), 1);
    CHECK_OK(kp_shutdown());
    CHECK_INT_EQ(kp_backend_count(), 0);
    CHECK_OK(kp_init(NULL)); /* and again after shutdown */
    CHECK(kp_backend_count() >= 1);
    CHECK_OK(kp_shutdown());
}

KP_TEST(api_num_threads_env) {
    setenv("KPORT_NUM_THREADS", "2", 1);
    kp_init_options opt = {NULL, 0, KP_INIT_NO_PLUGINS};
    CHECK_OK(kp_init(&opt));
    kp_device_info i;
    CHECK_OK(kp_device_info_get(0, &i));
    CHECK_INT_EQ(i.compute_units, 2);
    CHECK_OK(kp_shutdown());
    setenv("KPORT_NUM_THREADS", "lots", 1); /* ignored with a log line, not fatal */
    CHECK_OK(kp_init(&opt));
    CHECK_OK(kp_device_info_get(0, &i));
    CHECK(i.compute_units >= 1);
    CHECK_OK(kp_shutdown());
}

static void *init_thread(void *arg) {
    (void)arg;
    return (void *)(intptr_t)kp_init(NULL);
}

KP_TEST(api_init_concurrent) {
    pthread_t t[8];
    for (int i = 0; i < 8; i++) CHECK(pthread_create(&t[i], NULL, init_thread, NULL) == 0);
    for (int i = 0; i < 8; i++) {
        void *r;
        pthread_join(t[i], &r);
        CHECK_INT_EQ((intptr_t)r, KP_OK);
    }
    int backends = kp_backend_count();
    CHECK(backends >= 1);
    CHECK_OK(kp_init(NULL));
    CHECK_INT_EQ(kp_backend_count(), backends);
}

KP_TEST(api_backend_info) {
    kp_test_init();
    kp_backend_info b;
    int cpu = -1;
    for (int i = 0; i < kp_backend_count(); i++) {
        CHECK_OK(kp_backend_info_get(i, &b));
        CHECK(b.name[0] != '\0');
        CHECK_MSG(b.available || b.reason[0], "backend %s is unavailable with no reason", b.name);
        CHECK_MSG(!b.available || !b.reason[0], "backend %s is available but has reason '%s'", b.name, b.reason);
        if (strcmp(b.name, "cpu") == 0) cpu = i;
    }
    CHECK(cpu >= 0);
    CHECK_OK(kp_backend_info_get(cpu, &b));
    CHECK_INT_EQ(b.available, 1);
    CHECK_INT_EQ(b.device_count, 1);
    CHECK_STR_EQ(b.path, "");
    CHECK_ERR(kp_backend_info_get(kp_backend_count(), &b), KP_ERR_INVALID_ARGUMENT, "out of range");
    CHECK_ERR(kp_backend_info_get(-1, &b), KP_ERR_INVALID_ARGUMENT, "out of range");
    CHECK_ERR(kp_backend_info_get(0, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
}

KP_TEST(api_device_info) {
    kp_test_init();
    CHECK(kp_device_count() >= 1);
    for (int i = 0; i < kp_device_count(); i++) {
        kp_device_info d;
        CHECK_OK(kp_device_info_get(i, &d));
        CHECK(d.name[0] && d.backend[0] && d.vendor[0]);
        CHECK(d.compute_units >= 1);
        CHECK(d.subgroup_size >= 1);
        kp_backend_info b;
        CHECK_OK(kp_backend_info_get(d.backend_index, &b));
        CHECK_STR_EQ(b.name, d.backend);
        if (strcmp(d.backend, "cpu") == 0) {
            CHECK_INT_EQ(d.kind, KP_DEVICE_CPU);
            CHECK(d.memory_bytes > 0);
            CHECK(d.caps & KP_CAP_UNIFIED_MEMORY);
        }
    }
    kp_device_info d;
    CHECK_ERR(kp_device_info_get(kp_device_count(), &d), KP_ERR_INVALID_ARGUMENT, "out of range");
    CHECK_ERR(kp_device_info_get(0, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
}

KP_TEST(api_device_open_and_close) {
    kp_test_init();
    kp_device *d = (kp_device *)0x1;
    CHECK_ERR(kp_device_open(0, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_ERR(kp_device_open(kp_device_count(), &d), KP_ERR_INVALID_ARGUMENT, "out of range");
    CHECK(d == NULL);
    CHECK_ERR(kp_device_open(-2, &d), KP_ERR_INVALID_ARGUMENT, "out of range");
    CHECK_OK(kp_device_open(-1, &d));
    kp_device_info i;
    CHECK_ERR(kp_device_get_info(NULL, &i), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK_ERR(kp_device_get_info(d, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_OK(kp_device_get_info(d, &i));
    CHECK_ERR(kp_shutdown(), KP_ERR_INVALID_ARGUMENT, "still open");
    CHECK_OK(kp_device_close(d));
    CHECK_ERR(kp_device_close(NULL), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK_OK(kp_shutdown());
}

KP_TEST(api_selection_policy_env) {
    kp_test_init();
    kp_device *d = NULL;
    kp_device_info i;
    setenv("KPORT_BACKEND", "cpu", 1);
    CHECK_OK(kp_device_open(-1, &d));
    CHECK_OK(kp_device_get_info(d, &i));
    CHECK_STR_EQ(i.backend, "cpu");
    CHECK_OK(kp_device_close(d));
    setenv("KPORT_BACKEND", "nosuchbackend,cpu", 1);
    CHECK_ERR(kp_device_open(-1, &d), KP_ERR_INVALID_ARGUMENT, "nosuchbackend");
    setenv("KPORT_BACKEND", "cpu", 1);
    setenv("KPORT_DEVICE", "0", 1);
    CHECK_OK(kp_device_open(-1, &d));
    CHECK_OK(kp_device_close(d));
    setenv("KPORT_DEVICE", "7", 1);
    CHECK_ERR(kp_device_open(-1, &d), KP_ERR_INVALID_ARGUMENT, "KPORT_DEVICE=7");
    setenv("KPORT_DEVICE", "zero", 1);
    CHECK_ERR(kp_device_open(-1, &d), KP_ERR_INVALID_ARGUMENT, "KPORT_DEVICE='zero'");
    unsetenv("KPORT_DEVICE");
    /* a backend that is listed but unavailable says why */
    for (int b = 0; b < kp_backend_count(); b++) {
        kp_backend_info bi;
        CHECK_OK(kp_backend_info_get(b, &bi));
        if (bi.available) continue;
        setenv("KPORT_BACKEND", bi.name, 1);
        CHECK_ERR(kp_device_open(-1, &d), KP_ERR_UNAVAILABLE, bi.name);
        CHECK_STR_CONTAINS(kp_last_error(), bi.reason);
    }
    unsetenv("KPORT_BACKEND");
}

KP_TEST(api_stream_args) {
    kp_device *d = open_cpu();
    kp_stream *s = (kp_stream *)0x1;
    CHECK_ERR(kp_stream_create(NULL, &s), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK(s == NULL);
    CHECK_ERR(kp_stream_create(d, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_ERR(kp_stream_sync(NULL), KP_ERR_INVALID_ARGUMENT, "s is NULL");
    CHECK_ERR(kp_stream_destroy(NULL), KP_ERR_INVALID_ARGUMENT, "s is NULL");
    CHECK_OK(kp_stream_create(d, &s));
    CHECK_OK(kp_stream_sync(s));
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
}

KP_TEST(api_buffer_alloc_args) {
    kp_device *d = open_cpu();
    kp_buffer *b = (kp_buffer *)0x1;
    CHECK_ERR(kp_buffer_alloc(NULL, 16, &b), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK(b == NULL);
    CHECK_ERR(kp_buffer_alloc(d, 16, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_ERR(kp_buffer_alloc(d, 0, &b), KP_ERR_INVALID_ARGUMENT, "bytes is 0");
    CHECK_ERR(kp_buffer_alloc(d, SIZE_MAX, &b), KP_ERR_OUT_OF_MEMORY, "bytes");
    CHECK_ERR(kp_buffer_alloc(d, SIZE_MAX / 2, &b), KP_ERR_OUT_OF_MEMORY, "bytes");
    CHECK_OK(kp_buffer_alloc(d, 1000, &b));
    CHECK_INT_EQ(kp_buffer_size(b), 1000);
    CHECK(kp_buffer_device(b) == d);
    CHECK_INT_EQ(kp_buffer_size(NULL), 0);
    CHECK(kp_buffer_device(NULL) == NULL);
    CHECK_ERR(kp_buffer_free(NULL), KP_ERR_INVALID_ARGUMENT, "b is NULL");
    CHECK_OK(kp_buffer_free(b));
    CHECK_OK(kp_device_close(d));
}

KP_TEST(api_buffer_round_trip) {
    kp_device *d = open_cpu();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    enum { N = 4099 };
    unsigned char src[N], back[N];
    for (int i = 0; i < N; i++) src[i] = (unsigned char)kp_test_rand_u64();
    kp_buffer *a, *b;
    CHECK_OK(kp_buffer_alloc(d, N + 7, &a));
    CHECK_OK(kp_buffer_alloc(d, N + 3, &b));
    CHECK_OK(kp_buffer_write(s, a, 7, src, N));
    CHECK_OK(kp_buffer_copy(s, b, 3, a, 7, N));
    CHECK_OK(kp_buffer_read(s, b, 3, back, N));
    CHECK_OK(kp_stream_sync(s));
    CHECK(memcmp(src, back, N) == 0);
    memset(back, 0, N); /* the same through the device's own stream */
    CHECK_OK(kp_buffer_copy(NULL, a, 0, b, 3, N));
    CHECK_OK(kp_buffer_read(NULL, a, 0, back, N));
    CHECK(memcmp(src, back, N) == 0);
    CHECK_OK(kp_buffer_write(s, a, 0, NULL, 0)); /* zero bytes: nothing to do, not an error */
    CHECK_OK(kp_buffer_free(a));
    CHECK_OK(kp_buffer_free(b));
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
}

KP_TEST(api_buffer_bounds) {
    kp_device *d = open_cpu();
    kp_buffer *a, *b;
    CHECK_OK(kp_buffer_alloc(d, 64, &a));
    CHECK_OK(kp_buffer_alloc(d, 64, &b));
    unsigned char host[128] = {0};
    CHECK_OK(kp_buffer_write(NULL, a, 0, host, 64));
    CHECK_OK(kp_buffer_write(NULL, b, 0, host, 64)); /* new buffers hold undefined bytes */
    unsigned char *snap_a = kp_test_snapshot(a), *snap_b = kp_test_snapshot(b);
    for (int i = 0; i < 128; i++) host[i] = (unsigned char)(i + 1);
    CHECK_ERR(kp_buffer_write(NULL, a, 1, host, 64), KP_ERR_OUT_OF_BOUNDS, "dst range");
    CHECK_ERR(kp_buffer_write(NULL, a, 65, host, 0), KP_ERR_OUT_OF_BOUNDS, "outside the buffer of 64");
    CHECK_ERR(kp_buffer_write(NULL, a, SIZE_MAX, host, 2), KP_ERR_OUT_OF_BOUNDS, "dst range");
    CHECK_ERR(kp_buffer_write(NULL, a, 8, host, SIZE_MAX - 4), KP_ERR_OUT_OF_BOUNDS, "dst range");
    CHECK_ERR(kp_buffer_write(NULL, NULL, 0, host, 4), KP_ERR_INVALID_ARGUMENT, "dst is NULL");
    CHECK_ERR(kp_buffer_write(NULL, a, 0, NULL, 4), KP_ERR_INVALID_ARGUMENT, "src is NULL");
    CHECK_ERR(kp_buffer_read(NULL, a, 60, host, 8), KP_ERR_OUT_OF_BOUNDS, "src range");
    CHECK_ERR(kp_buffer_read(NULL, NULL, 0, host, 8), KP_ERR_INVALID_ARGUMENT, "src is NULL");
    CHECK_ERR(kp_buffer_read(NULL, a, 0, NULL, 8), KP_ERR_INVALID_ARGUMENT, "dst is NULL");
    CHECK_ERR(kp_buffer_copy(NULL, b, 0, a, 1, 64), KP_ERR_OUT_OF_BOUNDS, "src range");
    CHECK_ERR(kp_buffer_copy(NULL, b, 1, a, 0, 64), KP_ERR_OUT_OF_BOUNDS, "dst range");
    CHECK_ERR(kp_buffer_copy(NULL, a, 8, a, 0, 16), KP_ERR_ALIASING, "overlap");
    CHECK_ERR(kp_buffer_copy(NULL, NULL, 0, a, 0, 16), KP_ERR_INVALID_ARGUMENT, "dst is NULL");
    CHECK_ERR(kp_buffer_copy(NULL, a, 0, NULL, 0, 16), KP_ERR_INVALID_ARGUMENT, "src is NULL");
    CHECK_OK(kp_buffer_copy(NULL, a, 32, a, 0, 32)); /* adjacent, not overlapping */
    kp_test_unchanged(b, snap_b);
    kp_test_unchanged(a, snap_a); /* the copy moved zeros onto zeros */
    CHECK_OK(kp_buffer_free(a));
    CHECK_OK(kp_buffer_free(b));
    CHECK_OK(kp_device_close(d));
}

KP_TEST(api_buffer_wrap_is_zero_copy) {
    kp_device *d = open_cpu();
    float host[256];
    for (int i = 0; i < 256; i++) host[i] = (float)i;
    kp_buffer *w = (kp_buffer *)0x1;
    CHECK_ERR(kp_buffer_wrap(d, NULL, 16, &w), KP_ERR_INVALID_ARGUMENT, "native is NULL");
    CHECK(w == NULL);
    CHECK_ERR(kp_buffer_wrap(d, host, 0, &w), KP_ERR_INVALID_ARGUMENT, "bytes is 0");
    CHECK_ERR(kp_buffer_wrap(NULL, host, 16, &w), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK_OK(kp_buffer_wrap(d, host, sizeof host, &w));
    float v = -1.5f;
    CHECK_OK(kp_buffer_write(NULL, w, 10 * sizeof(float), &v, sizeof v));
    CHECK(host[10] == -1.5f); /* written straight into the caller's memory */
    host[20] = 42.0f;
    CHECK_OK(kp_buffer_read(NULL, w, 20 * sizeof(float), &v, sizeof v));
    CHECK(v == 42.0f);
    CHECK_OK(kp_buffer_free(w)); /* frees the wrapper, not the caller's memory */
    CHECK(host[20] == 42.0f);
    CHECK_OK(kp_device_close(d));
}

KP_TEST(api_tensor_init) {
    kp_device *d = open_cpu();
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(d, 4096, &b));
    kp_tensor t;
    int64_t shape[3] = {4, 8, 16};
    CHECK_OK(kp_tensor_init(&t, b, 0, KP_BF16, 3, shape, NULL));
    CHECK_INT_EQ(t.strides[0], 128);
    CHECK_INT_EQ(t.strides[1], 16);
    CHECK_INT_EQ(t.strides[2], 1);
    CHECK_OK(kp_tensor_init(&t, b, 4096 - 1024, KP_BF16, 3, shape, NULL)); /* exactly fits */
    CHECK_ERR(kp_tensor_init(&t, b, 4096 - 1022, KP_BF16, 3, shape, NULL), KP_ERR_OUT_OF_BOUNDS, "reaches past");
    CHECK_ERR(kp_tensor_init(&t, b, 1, KP_BF16, 3, shape, NULL), KP_ERR_INVALID_LAYOUT, "multiple of its element size");
    CHECK_ERR(kp_tensor_init(NULL, b, 0, KP_BF16, 3, shape, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_ERR(kp_tensor_init(&t, NULL, 0, KP_BF16, 3, shape, NULL), KP_ERR_INVALID_ARGUMENT, "buffer is NULL");
    CHECK_ERR(kp_tensor_init(&t, b, 0, KP_BF16, 3, NULL, NULL), KP_ERR_INVALID_ARGUMENT, "shape is NULL");
    CHECK_ERR(kp_tensor_init(&t, b, 0, (kp_dtype)9, 3, shape, NULL), KP_ERR_INVALID_DTYPE, "dtype 9");
    CHECK_ERR(kp_tensor_init(&t, b, 0, KP_BF16, 0, shape, NULL), KP_ERR_INVALID_SHAPE, "ndim is 0");
    CHECK_ERR(kp_tensor_init(&t, b, 0, KP_BF16, 5, shape, NULL), KP_ERR_INVALID_SHAPE, "ndim is 5");
    int64_t neg[2] = {4, -1};
    CHECK_ERR(kp_tensor_init(&t, b, 0, KP_F32, 2, neg, NULL), KP_ERR_INVALID_SHAPE, ">= 0");
    int64_t huge[2] = {INT64_MAX / 2, 4};
    CHECK_ERR(kp_tensor_init(&t, b, 0, KP_F32, 2, huge, NULL), KP_ERR_INVALID_SHAPE, "too large");
    int64_t strided[2] = {32, 2};
    int64_t sh2[2] = {4, 8};
    CHECK_ERR(kp_tensor_init(&t, b, 0, KP_F32, 2, sh2, strided), KP_ERR_INVALID_LAYOUT, "contiguous last dimension");
    int64_t padded[2] = {40, 1}; /* row padding is fine */
    CHECK_OK(kp_tensor_init(&t, b, 0, KP_F32, 2, sh2, padded));
    int64_t empty[2] = {0, 8};
    CHECK_OK(kp_tensor_init(&t, b, 0, KP_F32, 2, empty, NULL));
    CHECK_OK(kp_buffer_free(b));
    CHECK_OK(kp_device_close(d));
}

KP_TEST(api_tensor_from_dlpack) {
    kp_device *d = open_cpu();
    float data[6 * 8];
    for (int i = 0; i < 48; i++) data[i] = (float)i;
    int64_t shape[2] = {6, 8}, strides[2] = {8, 1};
    DLTensor t = {data, {kDLCPU, 0}, 2, {kDLFloat, 32, 1}, shape, NULL, 0};
    kp_tensor k;
    CHECK_OK(kp_tensor_from_dlpack(&t, d, &k));
    CHECK_INT_EQ(k.dtype, KP_F32);
    CHECK_INT_EQ(k.shape[1], 8);
    CHECK_INT_EQ(k.strides[0], 8);
    kp_buffer *mem;
    CHECK_OK(kp_device_memory(d, &mem));
    CHECK(k.buffer == mem); /* an address tensor: zero copy, nothing allocated */
    CHECK(k.offset == (size_t)(uintptr_t)data);
    CHECK_OK(kp_buffer_free(k.buffer)); /* a no-op, as older callers expect */
    t.strides = strides;
    t.byte_offset = 8 * sizeof(float);
    shape[0] = 5;
    CHECK_OK(kp_tensor_from_dlpack(&t, d, &k));
    CHECK(k.offset == (size_t)(uintptr_t)data + 32);

    DLTensor bad = t;
    bad.device.device_type = kDLCUDA;
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_DEVICE_MISMATCH, "DLPack device type is 2");
    bad = t;
    bad.dtype.bits = 64;
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_INVALID_DTYPE, "bits 64");
    bad = t;
    bad.dtype.lanes = 4;
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_INVALID_DTYPE, "lanes 4");
    bad = t;
    bad.ndim = 0;
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_INVALID_SHAPE, "ndim is 0");
    bad = t;
    bad.data = NULL;
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_INVALID_ARGUMENT, "data is NULL");
    int64_t neg_strides[2] = {-8, 1};
    bad = t;
    bad.strides = neg_strides;
    CHECK_ERR(kp_tensor_from_dlpack(&bad, d, &k), KP_ERR_INVALID_LAYOUT, "negative");
    CHECK_ERR(kp_tensor_from_dlpack(NULL, d, &k), KP_ERR_INVALID_ARGUMENT, "t is NULL");
    CHECK_ERR(kp_tensor_from_dlpack(&t, NULL, &k), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK_ERR(kp_tensor_from_dlpack(&t, d, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_OK(kp_device_close(d));
}

/* ---- thread safety ---- */

typedef struct stream_job {
    kp_stream *s;
    kp_buffer *b;
    int slot;
    int ok;
} stream_job;

static void *stream_worker(void *arg) {
    stream_job *j = arg;
    unsigned char out[512], back[512];
    j->ok = 1;
    for (int iter = 0; iter < 200 && j->ok; iter++) {
        memset(out, (j->slot * 37 + iter) & 0xff, sizeof out);
        if (kp_buffer_write(j->s, j->b, (size_t)j->slot * 512, out, 512) != KP_OK) j->ok = 0;
        if (kp_buffer_read(j->s, j->b, (size_t)j->slot * 512, back, 512) != KP_OK) j->ok = 0;
        if (memcmp(out, back, 512) != 0) j->ok = 0;
    }
    return NULL;
}

KP_TEST(api_stream_shared_by_threads) {
    kp_device *d = open_cpu();
    kp_stream *s;
    kp_buffer *b;
    CHECK_OK(kp_stream_create(d, &s));
    CHECK_OK(kp_buffer_alloc(d, 8 * 512, &b));
    pthread_t t[8];
    stream_job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (stream_job){i % 2 ? s : NULL, b, i, 0};
        CHECK(pthread_create(&t[i], NULL, stream_worker, &jobs[i]) == 0);
    }
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 8; i++) CHECK_MSG(jobs[i].ok, "thread %d saw a torn or failed round trip", i);
    CHECK_OK(kp_buffer_free(b));
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
}

static void *error_thread(void *arg) {
    (void)arg;
    kp_stream_sync(NULL);
    return (void *)(intptr_t)(strstr(kp_last_error(), "kp_stream_sync") != NULL);
}

KP_TEST(api_last_error_is_per_thread) {
    kp_test_init();
    kp_buffer *b = NULL;
    CHECK_ERR(kp_buffer_alloc(NULL, 1, &b), KP_ERR_INVALID_ARGUMENT, "kp_buffer_alloc");
    pthread_t t;
    void *r;
    CHECK(pthread_create(&t, NULL, error_thread, NULL) == 0);
    pthread_join(t, &r);
    CHECK((intptr_t)r == 1);
    CHECK_STR_CONTAINS(kp_last_error(), "kp_buffer_alloc"); /* untouched by the other thread */
}

KP_TEST(api_native_handles_on_cpu) {
    kp_device *d = open_cpu();
    kp_native_device nd = {(void *)1, (void *)1, (void *)1};
    CHECK_OK(kp_device_get_native(d, &nd));
    CHECK(nd.context == NULL && nd.device == NULL && nd.platform == NULL); /* host memory: none */
    CHECK_ERR(kp_device_get_native(NULL, &nd), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK_ERR(kp_device_get_native(d, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    void *native = (void *)1;
    CHECK_OK(kp_stream_get_native(s, &native));
    CHECK(native == NULL);
    CHECK_ERR(kp_stream_get_native(NULL, &native), KP_ERR_INVALID_ARGUMENT, "s is NULL");
    CHECK_ERR(kp_stream_get_native(s, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
    kp_stream *w = (kp_stream *)0x1;
    CHECK_ERR(kp_stream_wrap(d, (void *)0x1234, &w), KP_ERR_UNSUPPORTED, "no native streams");
    CHECK(w == NULL);
    CHECK_ERR(kp_stream_wrap(d, NULL, &w), KP_ERR_INVALID_ARGUMENT, "native is NULL");
    CHECK_ERR(kp_stream_wrap(NULL, (void *)0x1234, &w), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK_ERR(kp_stream_wrap(d, (void *)0x1234, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
}
