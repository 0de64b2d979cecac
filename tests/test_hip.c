/*
 * tests/test_hip.c — the hip plugin, on any machine.
 *
 * Without an AMD GPU (this project's machines have libamdhip64 but no GPU: hipInit
 * returns hipErrorInvalidDevice) the backend must be listed, unavailable, with a
 * reason saying "no AMD GPU", and nothing may crash; the plugin file itself is loaded
 * directly and its vtable checked. With a GPU the same tests check what the runtime
 * reports, and hip_buffer_roundtrip moves bytes through the device.
 */
#include "kp_test.h"

#include "backend.h"

/* tests/test_cuda.c */
const kp_backend_iface *kp_test_plugin_load(const char *name, char *path, size_t path_len);
void kp_test_plugin_check_iface(const kp_backend_iface *f, const char *name, int dlpack_type);
void kp_test_plugin_check_imports(const char *path);
void kp_test_plugin_check_init(const kp_backend_iface *f, const char *name, const char *why1,
                               const char *why2);
void kp_test_backend_check_listed(const char *name, const char *why1, const char *why2,
                                  const char *vendor);

/* reasons a machine without a usable AMD GPU gives: no runtime, or no device */
#define HIP_WHY_NO_GPU "no AMD GPU"
#define HIP_WHY_NO_RUNTIME "libamdhip64"

KP_TEST(hip_plugin_entry) {
    char path[4096];
    const kp_backend_iface *f = kp_test_plugin_load("hip", path, sizeof path);
    kp_test_plugin_check_iface(f, "hip", 10 /* kDLROCM */);
    kp_test_plugin_check_imports(path);
}

KP_TEST(hip_plugin_init) {
    char path[4096];
    const kp_backend_iface *f = kp_test_plugin_load("hip", path, sizeof path);
    kp_test_plugin_check_init(f, "hip", HIP_WHY_NO_GPU, HIP_WHY_NO_RUNTIME);
}

/* Every op slot is the shared op layer's (backends/gpu, through the hip target): one
 * function for all ops. Ops need a stream, so with no AMD GPU they are exercised in
 * tests/test_hip_kernels.c on devices that are only descriptions. */
KP_TEST(hip_plugin_ops_wired) {
    char path[4096];
    const kp_backend_iface *f = kp_test_plugin_load("hip", path, sizeof path);
    for (int i = 0; i < KP_OP_COUNT; i++) {
        CHECK_MSG(f->ops[i] != NULL, "hip: op slot %s is NULL", kp_backend_op_name((kp_op)i));
        CHECK_MSG(f->ops[i] == f->ops[0], "hip: op slot %s is not the shared dispatcher", kp_backend_op_name((kp_op)i));
    }
}

KP_TEST(hip_backend_listed) {
    kp_test_backend_check_listed("hip", HIP_WHY_NO_GPU, HIP_WHY_NO_RUNTIME, "AMD");
}

/* Needs a GPU: skips with the backend's reason elsewhere. */
KP_TEST(hip_buffer_roundtrip) {
    kp_device *d = kp_test_open_backend("hip");
    kp_device_info info;
    CHECK_OK(kp_device_get_info(d, &info));
    CHECK(strncmp(info.arch, "gfx", 3) == 0);
    CHECK(info.subgroup_size == 32 || info.subgroup_size == 64);

    enum { N = 1 << 20 };
    unsigned char *src = malloc(N), *dst = malloc(N);
    CHECK(src && dst);
    for (size_t i = 0; i < N; i++) src[i] = (unsigned char)(kp_test_rand_u64() & 0xFF);

    kp_stream *s = NULL;
    CHECK_OK(kp_stream_create(d, &s));
    kp_guarded a = kp_guarded_alloc(d, N), b = kp_guarded_alloc(d, N);
    kp_guarded_write(&a, src, N);
    CHECK_OK(kp_buffer_copy(s, b.buf, b.offset + 1, a.buf, a.offset, N - 1)); /* odd offset */
    CHECK_OK(kp_stream_sync(s));
    memset(dst, 0, N);
    CHECK_OK(kp_buffer_read(s, b.buf, b.offset + 1, dst, N - 1));
    CHECK(memcmp(dst, src, N - 1) == 0);
    kp_guarded_check(&a, "source");
    kp_guarded_check(&b, "destination");
    kp_guarded_free(&a);
    kp_guarded_free(&b);

    /* the whole memory: more than is free once the runtime has its share, so a clean
     * out-of-memory error from the driver (not the core's size check), not a crash */
    kp_buffer *huge = NULL;
    CHECK_ERR(kp_buffer_alloc(d, (size_t)info.memory_bytes, &huge), KP_ERR_OUT_OF_MEMORY, "hipErrorOutOfMemory");
    CHECK(huge == NULL);

    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
    free(src);
    free(dst);
}
