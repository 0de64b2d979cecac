/*
 * tests/test_cuda.c — the cuda plugin, on any machine.
 *
 * Without an NVIDIA driver (CI) the backend must be listed, unavailable, with a reason
 * naming libcuda.so.1, and nothing may crash; the plugin file itself is loaded
 * directly and its vtable checked. With a GPU the same tests check what the driver
 * reports, cuda_buffer_roundtrip moves bytes through the device and cuda_ops_dry_run
 * asks the op slots (kp_op_supported). The embedded kernels and the launch glue are
 * checked on any machine by tests/test_cuda_fatbin.c.
 *
 * The plugin helpers below (kp_test_plugin_*) are shared with tests/test_hip.c.
 */
#include "kp_test.h"

#include "backend.h"

#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>

/* ------------------------------------------------------------------------ */
/* Shared with test_hip.c                                                    */
/* ------------------------------------------------------------------------ */

const kp_backend_iface *kp_test_plugin_load(const char *name, char *path, size_t path_len);
void kp_test_plugin_check_iface(const kp_backend_iface *f, const char *name, int dlpack_type);
void kp_test_plugin_check_imports(const char *path);
const kp_host_services *kp_test_fake_host(void);
const char *kp_test_fake_last_error(void);
void kp_test_plugin_check_unsupported_ops(const kp_backend_iface *f, const char *name);
void kp_test_plugin_check_init(const kp_backend_iface *f, const char *name, const char *why1,
                               const char *why2);
void kp_test_backend_check_listed(const char *name, const char *why1, const char *why2,
                                  const char *vendor);

/* The plugin file from $KPORT_PLUGIN_PATH (each dir, or its backends/<name>/); skips
 * the test when it was not built. Fails if it does not load or lacks the entry. */
const kp_backend_iface *kp_test_plugin_load(const char *name, char *path, size_t path_len) {
    const char *list = getenv("KPORT_PLUGIN_PATH");
    path[0] = '\0';
    for (const char *p = list; p && *p && !path[0];) {
        size_t len = strcspn(p, ":");
        static const char *const subdirs[] = {"", "/backends/"};
        for (int k = 0; k < 2 && !path[0]; k++) {
            snprintf(path, path_len, "%.*s%s%s%slibkport-%s.so", (int)len, p, subdirs[k],
                     k ? name : "", k ? "/" : "/", name);
            FILE *fp = fopen(path, "rb");
            if (fp)
                fclose(fp);
            else
                path[0] = '\0';
        }
        p += len;
        if (*p == ':') p++;
    }
    if (!path[0])
        KP_SKIP("%s plugin not built (no libkport-%s.so under KPORT_PLUGIN_PATH=%s)", name, name,
                list ? list : "(unset)");
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CHECK_MSG(h != NULL, "dlopen(%s): %s", path, dlerror());
    kp_backend_entry_fn entry = NULL;
    *(void **)&entry = dlsym(h, KP_BACKEND_ENTRY_SYMBOL);
    CHECK_MSG(entry != NULL, "%s has no %s", path, KP_BACKEND_ENTRY_SYMBOL);
    const kp_backend_iface *f = entry(KP_BACKEND_ABI_VERSION);
    CHECK_MSG(f != NULL, "%s(%u) returned NULL", KP_BACKEND_ENTRY_SYMBOL, KP_BACKEND_ABI_VERSION);
    return f; /* the handle stays open: the test process ends soon */
}

void kp_test_plugin_check_iface(const kp_backend_iface *f, const char *name, int dlpack_type) {
    CHECK_INT_EQ(f->abi_version, KP_BACKEND_ABI_VERSION);
    CHECK_INT_EQ(f->struct_size, sizeof(kp_backend_iface));
    CHECK(f->name != NULL);
    CHECK_STR_EQ(f->name, name);
    CHECK(f->description != NULL && f->description[0] != '\0');
    for (int i = 0; i < 4; i++) CHECK(f->reserved[i] == NULL);
#define SLOT(x) CHECK_MSG(f->x != NULL, "%s: vtable slot " #x " is NULL", name)
    SLOT(init); SLOT(shutdown); SLOT(device_count); SLOT(device_info); SLOT(device_open);
    SLOT(device_close); SLOT(stream_create); SLOT(stream_sync); SLOT(stream_destroy);
    SLOT(buffer_alloc); SLOT(buffer_wrap); SLOT(buffer_free); SLOT(buffer_write);
    SLOT(buffer_read); SLOT(buffer_copy);
#undef SLOT
    for (int i = 0; i < KP_OP_COUNT; i++)
        CHECK_MSG(f->ops[i] != NULL, "%s: ops[%s] is NULL", name, kp_backend_op_name((kp_op)i));
    CHECK_INT_EQ(f->dlpack_device_type, dlpack_type);
}

/* A plugin may be loaded next to a libkport opened RTLD_LOCAL, so it must not import
 * any libkport symbol: reads the ELF dynamic symbol table for undefined kp_ names. */
void kp_test_plugin_check_imports(const char *path) {
    FILE *fp = fopen(path, "rb");
    CHECK_MSG(fp != NULL, "cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    CHECK(size > (long)sizeof(Elf64_Ehdr));
    unsigned char *img = malloc((size_t)size);
    CHECK(img != NULL);
    CHECK(fread(img, 1, (size_t)size, fp) == (size_t)size);
    fclose(fp);
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)img;
    CHECK_MSG(memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64,
              "%s is not a 64-bit ELF file", path);
    CHECK(eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) <= (uint64_t)size);
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(img + eh->e_shoff);
    int found = 0;
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_DYNSYM) continue;
        CHECK(sh[i].sh_link < eh->e_shnum);
        const Elf64_Shdr *strs = &sh[sh[i].sh_link];
        CHECK(sh[i].sh_offset + sh[i].sh_size <= (uint64_t)size);
        CHECK(strs->sh_offset + strs->sh_size <= (uint64_t)size);
        const Elf64_Sym *sym = (const Elf64_Sym *)(img + sh[i].sh_offset);
        size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
        const char *names = (const char *)(img + strs->sh_offset);
        for (size_t k = 0; k < n; k++) {
            CHECK(sym[k].st_name < strs->sh_size);
            const char *s = names + sym[k].st_name;
            if (sym[k].st_shndx == SHN_UNDEF && (strncmp(s, "kp_", 3) == 0 || strncmp(s, "kport_", 6) == 0))
                kp_test_fail(__FILE__, __LINE__, "%s imports %s: plugins may only use host services", path, s);
            if (sym[k].st_shndx != SHN_UNDEF && strcmp(s, KP_BACKEND_ENTRY_SYMBOL) == 0) found = 1;
        }
    }
    free(img);
    CHECK_MSG(found, "%s does not export %s", path, KP_BACKEND_ENTRY_SYMBOL);
}

/* Host services that record the last error, so a plugin can run without the core. */
static kp_status fake_last_status = KP_OK;
static char fake_last_message[1024];

static kp_status fake_set_error(kp_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fake_last_message, sizeof fake_last_message, fmt, ap);
    va_end(ap);
    fake_last_status = st;
    return st;
}

static kp_status fake_add_context(kp_status st, const char *fmt, ...) {
    char ctx[512], old[sizeof fake_last_message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    snprintf(old, sizeof old, "%s", fake_last_message);
    if (snprintf(fake_last_message, sizeof fake_last_message, "%s: %s", ctx, old) < 0)
        fake_last_message[0] = '\0';
    fake_last_status = st;
    return st;
}

static void fake_log(const char *fmt, ...) {
    (void)fmt;
}

static const char *fake_cache_dir(void) {
    return NULL;
}

static int64_t fake_tuning_get(const kp_device_info *dev, const char *kernel, const char *param,
                               int64_t def) {
    (void)dev;
    (void)kernel;
    (void)param;
    return def;
}

const char *kp_test_fake_last_error(void) {
    return fake_last_message;
}

const kp_host_services *kp_test_fake_host(void) {
    static const kp_host_services host = {
        .abi_version = KP_BACKEND_ABI_VERSION,
        .set_error = fake_set_error,
        .add_context = fake_add_context,
        .log = fake_log,
        .cache_dir = fake_cache_dir,
        .tuning_get = fake_tuning_get,
    };
    return &host;
}

/* Every op slot answers KP_ERR_UNSUPPORTED naming the op and the backend, for a dry
 * run and a real call alike. */
void kp_test_plugin_check_unsupported_ops(const kp_backend_iface *f, const char *name) {
    char want[128];
    kp_backend_state *state = NULL;
    char reason[KP_REASON_MAX];
    kp_status init_st = f->init(kp_test_fake_host(), NULL, &state, reason, sizeof reason);
    for (int i = 0; i < KP_OP_COUNT; i++) {
        for (int dry = 0; dry < 2; dry++) {
            fake_last_message[0] = '\0';
            kp_status st = f->ops[i]((kp_op)i, NULL, NULL, dry);
            CHECK_INT_EQ(st, KP_ERR_UNSUPPORTED);
            CHECK_INT_EQ(fake_last_status, KP_ERR_UNSUPPORTED);
            snprintf(want, sizeof want, "the %s backend has no %s kernel yet", name, kp_backend_op_name((kp_op)i));
            CHECK_STR_CONTAINS(fake_last_message, want);
        }
    }
    if (init_st == KP_OK) f->shutdown(state);
}

/* init through the vtable with fake host services, three times (a failed init must
 * leave nothing behind). Without the vendor runtime or a GPU: KP_ERR_UNAVAILABLE, no
 * state, and a reason containing why1 or why2. With one: devices that make sense. */
void kp_test_plugin_check_init(const kp_backend_iface *f, const char *name, const char *why1,
                               const char *why2) {
    for (int round = 0; round < 3; round++) {
        kp_backend_state *state = (kp_backend_state *)(uintptr_t)1; /* must be overwritten */
        char reason[KP_REASON_MAX];
        memset(reason, 'x', sizeof reason);
        kp_status st = f->init(kp_test_fake_host(), NULL, &state, reason, sizeof reason);
        CHECK(memchr(reason, '\0', sizeof reason) != NULL);
        if (st != KP_OK) {
            CHECK_INT_EQ(st, KP_ERR_UNAVAILABLE);
            CHECK(state == NULL);
            CHECK_MSG(strstr(reason, why1) || strstr(reason, why2),
                      "%s: reason \"%s\" mentions neither \"%s\" nor \"%s\"", name, reason, why1, why2);
            continue;
        }
        CHECK(state != NULL);
        int n = f->device_count(state);
        CHECK(n >= 0);
        for (int i = 0; i < n; i++) {
            kp_device_info info;
            memset(&info, 0, sizeof info);
            CHECK_OK(f->device_info(state, i, &info));
            CHECK_STR_EQ(info.backend, name);
            CHECK(info.name[0] != '\0');
            CHECK(info.arch[0] != '\0');
            CHECK(info.memory_bytes > 0);
            CHECK(info.compute_units > 0);
            CHECK(info.subgroup_size == 32 || info.subgroup_size == 64);
            CHECK(info.caps & KP_CAP_SUBGROUPS);
            CHECK(info.kind == KP_DEVICE_GPU_DISCRETE || info.kind == KP_DEVICE_GPU_INTEGRATED);
        }
        kp_device_info info;
        CHECK_INT_EQ(f->device_info(state, n, &info), KP_ERR_INVALID_ARGUMENT);
        f->shutdown(state);
    }
}

/* Through the public API: the backend is listed; unavailable with a reason naming
 * why1 or why2 and no device, or available with devices of the expected vendor. */
void kp_test_backend_check_listed(const char *name, const char *why1, const char *why2,
                                  const char *vendor) {
    kp_test_init();
    int index = -1;
    kp_backend_info b;
    for (int i = 0; i < kp_backend_count(); i++) {
        CHECK_OK(kp_backend_info_get(i, &b));
        if (strcmp(b.name, name) == 0) {
            index = i;
            break;
        }
    }
    if (index < 0) KP_SKIP("%s backend not built (not among kp_backend_info)", name);
    CHECK_STR_CONTAINS(b.path, name);
    int devices = 0;
    for (int i = 0; i < kp_device_count(); i++) {
        kp_device_info d;
        CHECK_OK(kp_device_info_get(i, &d));
        if (d.backend_index != index) continue;
        devices++;
        CHECK_STR_EQ(d.backend, name);
        CHECK_STR_EQ(d.vendor, vendor);
    }
    if (!b.available) {
        CHECK_MSG(strstr(b.reason, why1) || strstr(b.reason, why2),
                  "%s: reason \"%s\" mentions neither \"%s\" nor \"%s\"", name, b.reason, why1, why2);
        CHECK_INT_EQ(b.device_count, 0);
        CHECK_INT_EQ(devices, 0);
    } else {
        CHECK_STR_EQ(b.reason, "");
        CHECK(b.device_count > 0);
        CHECK_INT_EQ(devices, b.device_count);
    }
}

/* ------------------------------------------------------------------------ */
/* cuda                                                                      */
/* ------------------------------------------------------------------------ */

/* reasons a machine without a usable NVIDIA GPU gives */
#define CUDA_WHY_NO_DRIVER "libcuda.so.1"
#define CUDA_WHY_NO_GPU "CUDA" /* "cuInit failed: CUDA_ERROR_NO_DEVICE (100)", "no CUDA devices" */

KP_TEST(cuda_plugin_entry) {
    char path[4096];
    const kp_backend_iface *f = kp_test_plugin_load("cuda", path, sizeof path);
    kp_test_plugin_check_iface(f, "cuda", 2 /* kDLCUDA */);
    kp_test_plugin_check_imports(path);
}

KP_TEST(cuda_plugin_init) {
    char path[4096];
    const kp_backend_iface *f = kp_test_plugin_load("cuda", path, sizeof path);
    kp_test_plugin_check_init(f, "cuda", CUDA_WHY_NO_DRIVER, CUDA_WHY_NO_GPU);
}

/* The op slots run the shared GPU op layer (kp_gpu_op_run over the cuda target): every
 * slot is set, and none is reachable without a device — init fails here, so no device,
 * stream or op call can exist. With a GPU, cuda_ops_dry_run asks them. */
KP_TEST(cuda_plugin_ops) {
    char path[4096];
    const kp_backend_iface *f = kp_test_plugin_load("cuda", path, sizeof path);
    for (int i = 0; i < KP_OP_COUNT; i++)
        CHECK_MSG(f->ops[i] != NULL, "cuda: ops[%s] is NULL", kp_backend_op_name((kp_op)i));
    kp_backend_state *state = NULL;
    char reason[KP_REASON_MAX];
    kp_status st = f->init(kp_test_fake_host(), NULL, &state, reason, sizeof reason);
    if (st != KP_OK) {
        CHECK_INT_EQ(st, KP_ERR_UNAVAILABLE);
        CHECK(state == NULL);
        return; /* no backend state: device_open, and so any op, cannot be reached */
    }
    /* a driver: with no device, device_open refuses every index */
    void *impl = (void *)(uintptr_t)1;
    if (f->device_count(state) == 0) {
        CHECK_INT_EQ(f->device_open(state, 0, &impl), KP_ERR_INVALID_ARGUMENT);
        CHECK(impl == NULL);
    }
    f->shutdown(state);
}

KP_TEST(cuda_backend_listed) {
    kp_test_backend_check_listed("cuda", CUDA_WHY_NO_DRIVER, CUDA_WHY_NO_GPU, "NVIDIA");
}

/* Needs a GPU: a dry run of each op on a small valid case answers KP_OK (the variant
 * is embedded and fits the device) without launching anything. */
KP_TEST(cuda_ops_dry_run) {
    kp_device *d = kp_test_open_backend("cuda");
    enum { T = 4, E = 16, K = 2 };
    kp_buffer *lb = NULL, *ib = NULL, *wb = NULL;
    CHECK_OK(kp_buffer_alloc(d, T * E * sizeof(float), &lb));
    CHECK_OK(kp_buffer_alloc(d, T * K * sizeof(int32_t), &ib));
    CHECK_OK(kp_buffer_alloc(d, T * K * sizeof(float), &wb));
    kp_moe_gate_params p = {.routing = {.topk = K, .n_group = 1, .topk_group = 1,
                                        .scoring = KP_MOE_SCORING_SOFTMAX, .renormalize = 1,
                                        .route_scale = 1.0f}};
    CHECK_OK(kp_tensor_init(&p.logits, lb, 0, KP_F32, 2, (int64_t[]){T, E}, NULL));
    CHECK_OK(kp_tensor_init(&p.topk_ids, ib, 0, KP_I32, 2, (int64_t[]){T, K}, NULL));
    CHECK_OK(kp_tensor_init(&p.topk_weights, wb, 0, KP_F32, 2, (int64_t[]){T, K}, NULL));
    CHECK_OK(kp_op_supported(d, KP_OP_MOE_GATE, &p));
    CHECK_OK(kp_buffer_free(lb));
    CHECK_OK(kp_buffer_free(ib));
    CHECK_OK(kp_buffer_free(wb));
    CHECK_OK(kp_device_close(d));
}

/* Needs a GPU: skips with the backend's reason elsewhere. */
KP_TEST(cuda_buffer_roundtrip) {
    kp_device *d = kp_test_open_backend("cuda");
    kp_device_info info;
    CHECK_OK(kp_device_get_info(d, &info));
    CHECK(strncmp(info.arch, "sm_", 3) == 0);
    CHECK_INT_EQ(info.subgroup_size, 32);

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
    CHECK_ERR(kp_buffer_alloc(d, (size_t)info.memory_bytes, &huge), KP_ERR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY");
    CHECK(huge == NULL);

    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
    free(src);
    free(dst);
}
