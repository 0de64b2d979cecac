/*
 * backends/cuda/cuda_backend.c — the cuda plugin: driver loading, devices, vtable.
 *
 * libcuda.so.1 is dlopen'd at init (never linked), so one plugin binary loads on any
 * machine and reports "no NVIDIA driver" where there is none. Streams and buffers
 * live in cuda_buffer.c; CUresult names and mapping in cuda_status.c; kernel
 * launches (the kp_gpu_target every op slot runs through) in cuda_launch.c; NVRTC, for
 * kernel variants the build did not embed (tuned tiles), in cuda_rtc.c.
 *
 * Contexts: each opened device retains its primary context (the one the CUDA runtime
 * and PyTorch use, so CUdeviceptrs they hand us are valid in it) and every method that
 * touches the driver pushes it current and pops it afterwards, leaving the calling
 * thread's context as it was.
 */
#include "cuda_internal.h"
#include "kp_gpu.h"

#include "gpu_cache.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The API version symbols are resolved at: cuGetProcAddress returns the variant of
 * each function (cuMemAlloc -> cuMemAlloc_v2, ...) whose ABI matches CUDA 12.0's
 * cuda.h, i.e. the prototypes checked below. Pinned rather than CUDA_VERSION so a
 * newer toolkit's header cannot silently move us to a new variant. */
#define KP_CU_PROC_VERSION 12000


/* Each line of cuda_symbols.inc must match cuda.h's prototype exactly. */
#define KP_CU_REQUIRED(name, ret, ...)                                                     \
    _Static_assert(__builtin_types_compatible_p(__typeof__(&name), ret(CUDAAPI *)(__VA_ARGS__)), \
                   "cuda_symbols.inc: " #name " does not match cuda.h");
#define KP_CU_OPTIONAL KP_CU_REQUIRED
#include "cuda_symbols.inc"
#undef KP_CU_REQUIRED
#undef KP_CU_OPTIONAL

/* cuGetProcAddress exists in two forms; both are looked up with dlsym. */
typedef CUresult (*kp_cu_gpa_v2_fn)(const char *symbol, void **pfn, int cuda_version,
                                    cuuint64_t flags, CUdriverProcAddressQueryResult *status);
typedef CUresult (*kp_cu_gpa_v1_fn)(const char *symbol, void **pfn, int cuda_version,
                                    cuuint64_t flags);
typedef CUresult (*kp_cu_version_fn)(int *version);

static const kp_backend_iface cuda_iface;

/* ------------------------------------------------------------------------ */
/* Loading libcuda.so.1                                                      */
/* ------------------------------------------------------------------------ */

/* dlopen's the driver; on failure the reason lists every name tried with its error. */
static kp_status cu_open_library(kp_backend_state *b, char *reason, size_t reason_len) {
    static const char *const names[] = {"libcuda.so.1", "libcuda.so"};
    char tried[KP_REASON_MAX] = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        b->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (b->lib) {
            snprintf(b->lib_name, sizeof b->lib_name, "%s", names[i]);
            return KP_OK;
        }
        const char *err = dlerror(); /* copied at once: the next dl* call overwrites it */
        if (!err) err = "?";
        if (strncmp(err, names[i], strlen(names[i])) == 0) /* "libx.so: cannot open ..." */
            kp_gpu_append(tried, sizeof tried, "%s%s", i ? "; " : "", err);
        else
            kp_gpu_append(tried, sizeof tried, "%s%s: %s", i ? "; " : "", names[i], err);
    }
    snprintf(reason, reason_len, "libcuda.so.1 not found: no NVIDIA driver (tried: %s)", tried);
    return KP_ERR_UNAVAILABLE;
}

typedef struct cu_resolver {
    void *lib;
    const char *lib_name;
    kp_cu_gpa_v2_fn gpa_v2; /* driver >= 12.0 */
    kp_cu_gpa_v1_fn gpa_v1; /* driver 11.3 - 11.x */
    int version;            /* API version asked of cuGetProcAddress */
} cu_resolver;

/* One symbol: cuGetProcAddress(documented name, pinned version), else dlsym of the
 * versioned name cuda.h mapped it to. Returns 0 and writes the reason when a required
 * symbol is missing. */
static int cu_resolve_one(const cu_resolver *r, const char *name, const char *versioned,
                          void **slot, int required, char *reason, size_t reason_len) {
    const cuuint64_t flags = CU_GET_PROC_ADDRESS_LEGACY_STREAM; /* we pass explicit streams */
    CUdriverProcAddressQueryResult qs = CU_GET_PROC_ADDRESS_SUCCESS;
    CUresult res = CUDA_ERROR_NOT_FOUND;
    void *fn = NULL;
    if (r->gpa_v2)
        res = r->gpa_v2(name, &fn, r->version, flags, &qs);
    else if (r->gpa_v1)
        res = r->gpa_v1(name, &fn, r->version, flags);
    if (res != CUDA_SUCCESS || qs != CU_GET_PROC_ADDRESS_SUCCESS)
        fn = NULL;
    if (!fn) {
        fn = dlsym(r->lib, versioned);
        if (!fn) (void)dlerror();
    }
    *slot = fn;
    if (!fn && required) {
        const char *why = "not available";
        if (r->gpa_v2 || r->gpa_v1)
            why = res != CUDA_SUCCESS ? kp_cu_result_name(NULL, res)
                  : qs == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT ? "version not sufficient"
                                                                    : "symbol not found";
        snprintf(reason, reason_len,
                 "symbol '%s' not found in %s (cuGetProcAddress at API %d: %s; dlsym '%s' failed); "
                 "the NVIDIA driver is too old",
                 name, r->lib_name, r->version, why, versioned);
        return 0;
    }
    return 1;
}

#define KP_CU_XSTR_(x) #x
#define KP_CU_XSTR(x) KP_CU_XSTR_(x) /* the name after cuda.h's renaming: "cuMemAlloc_v2" */

static kp_status cu_resolve_symbols(kp_backend_state *b, char *reason, size_t reason_len) {
    cu_resolver r = {.lib = b->lib, .lib_name = b->lib_name};
    /* (POSIX's idiom for storing dlsym's void * into a function pointer) */
    *(void **)&r.gpa_v2 = dlsym(b->lib, "cuGetProcAddress_v2");
    if (!r.gpa_v2) *(void **)&r.gpa_v1 = dlsym(b->lib, "cuGetProcAddress");
    (void)dlerror();

    /* Never ask for a newer API than the driver implements. */
    kp_cu_version_fn get_version = NULL;
    *(void **)&get_version = dlsym(b->lib, "cuDriverGetVersion");
    if (!get_version || get_version(&b->driver_version) != CUDA_SUCCESS) b->driver_version = 0;
    r.version = KP_CU_PROC_VERSION;
    if (b->driver_version > 0 && b->driver_version < r.version) r.version = b->driver_version;
    b->proc_version = (r.gpa_v2 || r.gpa_v1) ? r.version : 0;

    int ok = 1;
    /* #name is the documented name; KP_CU_XSTR(name) expands cuda.h's #define first. */
#define KP_CU_REQUIRED(name, ret, ...) \
    ok = ok && cu_resolve_one(&r, #name, KP_CU_XSTR(name), (void **)&b->cu.name, 1, reason, reason_len);
#define KP_CU_OPTIONAL(name, ret, ...) \
    ok = ok && cu_resolve_one(&r, #name, KP_CU_XSTR(name), (void **)&b->cu.name, 0, reason, reason_len);
#include "cuda_symbols.inc"
#undef KP_CU_REQUIRED
#undef KP_CU_OPTIONAL
    return ok ? KP_OK : KP_ERR_UNAVAILABLE;
}

/* ------------------------------------------------------------------------ */
/* Devices                                                                   */
/* ------------------------------------------------------------------------ */

static CUresult cu_attr(const kp_backend_state *b, CUdevice dev, CUdevice_attribute a, int *out) {
    *out = 0;
    return b->cu.cuDeviceGetAttribute(out, a, dev);
}

/* Fills one device description; returns the first failing CUresult, naming the call. */
static CUresult cu_query_device(const kp_backend_state *b, int ordinal, kp_cu_device_desc *d,
                                const char **what) {
    const kp_cu_syms *cu = &b->cu;
    kp_device_info *info = &d->info;
    int major = 0, minor = 0, sms = 0, warp = 0, smem = 0, smem_optin = 0, integrated = 0;
    int pageable = 0;
    size_t mem = 0;
    CUresult r;
    memset(d, 0, sizeof *d);

    *what = "cuDeviceGet";
    if ((r = cu->cuDeviceGet(&d->dev, ordinal)) != CUDA_SUCCESS) return r;
    *what = "cuDeviceGetName";
    if ((r = cu->cuDeviceGetName(info->name, (int)sizeof info->name, d->dev)) != CUDA_SUCCESS)
        return r;
    info->name[sizeof info->name - 1] = '\0';
    *what = "cuDeviceTotalMem";
    if ((r = cu->cuDeviceTotalMem(&mem, d->dev)) != CUDA_SUCCESS) return r;
    *what = "cuDeviceGetAttribute";
    if ((r = cu_attr(b, d->dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &major)) ||
        (r = cu_attr(b, d->dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &minor)) ||
        (r = cu_attr(b, d->dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &sms)) ||
        (r = cu_attr(b, d->dev, CU_DEVICE_ATTRIBUTE_WARP_SIZE, &warp)) ||
        (r = cu_attr(b, d->dev, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, &smem)) ||
        (r = cu_attr(b, d->dev, CU_DEVICE_ATTRIBUTE_INTEGRATED, &integrated)))
        return r;
    /* Newer attributes: an old driver may not know them; absent means "no". */
    if (cu_attr(b, d->dev, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, &smem_optin))
        smem_optin = 0;
    if (cu_attr(b, d->dev, CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS, &pageable)) pageable = 0;

    snprintf(info->vendor, sizeof info->vendor, "NVIDIA");
    snprintf(info->backend, sizeof info->backend, "cuda");
    snprintf(info->arch, sizeof info->arch, "sm_%d%d", major, minor); /* H200: sm_90 */
    snprintf(info->driver, sizeof info->driver, "CUDA driver %d.%d", b->driver_version / 1000,
             (b->driver_version % 1000) / 10);
    info->kind = integrated ? KP_DEVICE_GPU_INTEGRATED : KP_DEVICE_GPU_DISCRETE;
    info->memory_bytes = (uint64_t)mem;
    info->compute_units = sms;
    info->subgroup_size = warp > 0 ? warp : 32;
    /* opt-in: what a kernel may use after cuFuncSetAttribute (227 KiB on sm_90) */
    info->local_mem_bytes = (uint64_t)(smem_optin > smem ? smem_optin : smem);

    const int cc = major * 10 + minor;
    info->caps = KP_CAP_SUBGROUPS | KP_CAP_DEVICE_ADDRESSES; /* warp shuffles; CUdeviceptr address tensors */
    if (cc >= 53) info->caps |= KP_CAP_F16;        /* native half arithmetic */
    if (cc >= 70) info->caps |= KP_CAP_MATRIX_UNITS; /* tensor cores (mma.sync) */
    if (cc >= 80) info->caps |= KP_CAP_BF16;       /* bf16 mma */
    if (cc >= 89) info->caps |= KP_CAP_FP8;        /* e4m3 mma: Ada, Hopper, Blackwell */
    if (pageable) info->caps |= KP_CAP_UNIFIED_MEMORY; /* HMM / Grace Hopper: malloc'd memory is device-visible */
    info->backend_device = ordinal;
    return CUDA_SUCCESS;
}

/* Once cuInit has run, libcuda stays loaded: the driver starts threads and registers
 * exit handlers that must not outlive its code. A later init dlopen's the same copy. */
static void cu_state_free(kp_backend_state *b) {
    if (!b) return;
    free(b->devices);
    if (b->lib && !b->runtime_started) dlclose(b->lib);
    free(b);
}

static kp_status cuda_init(const kp_host_services *host, const kp_init_options *opt,
                           kp_backend_state **out, char *reason, size_t reason_len) {
    (void)opt;
    if (!host || !out || !reason || reason_len == 0) return KP_ERR_INVALID_ARGUMENT;
    kp_cu_host = host;
    kp_cu_target.host = host;
    *out = NULL;
    reason[0] = '\0';

    kp_status st = KP_OK;
    kp_backend_state *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(reason, reason_len, "out of memory creating the cuda backend state");
        st = KP_ERR_OUT_OF_MEMORY;
    }
    if (st == KP_OK) st = cu_open_library(b, reason, reason_len);
    if (st == KP_OK) st = cu_resolve_symbols(b, reason, reason_len);
    int count = 0;
    if (st == KP_OK) {
        const char *what = "cuInit";
        b->runtime_started = 1;
        CUresult r = b->cu.cuInit(0);
        if (r == CUDA_SUCCESS) {
            what = "cuDeviceGetCount";
            r = b->cu.cuDeviceGetCount(&count);
        }
        if (r != CUDA_SUCCESS) {
            /* "cuInit failed: CUDA_ERROR_NO_DEVICE (100)" */
            snprintf(reason, reason_len, "%s failed: %s (%d)", what, kp_cu_result_name(&b->cu, r),
                     (int)r);
            st = KP_ERR_UNAVAILABLE;
        }
    }
    if (st == KP_OK && count > 0) {
        b->devices = calloc((size_t)count, sizeof *b->devices);
        if (!b->devices) {
            snprintf(reason, reason_len, "out of memory listing %d CUDA devices", count);
            st = KP_ERR_OUT_OF_MEMORY;
        }
    }
    /* A device that cannot be queried is left out (and logged), not fatal. */
    for (int i = 0; st == KP_OK && i < count; i++) {
        const char *what = "";
        CUresult r = cu_query_device(b, i, &b->devices[b->device_count], &what);
        if (r == CUDA_SUCCESS) {
            b->device_count++;
            continue;
        }
        snprintf(reason, reason_len, "CUDA device %d: %s failed: %s (%d)", i, what,
                 kp_cu_result_name(&b->cu, r), (int)r);
        host->log("cuda: skipping %s", reason);
    }
    /* Zero devices is still KP_OK (backend.h); the reason says why none is usable. */
    if (st == KP_OK && b->device_count > 0)
        reason[0] = '\0';
    else if (st == KP_OK && count == 0)
        snprintf(reason, reason_len, "no CUDA devices: cuDeviceGetCount returned 0");

    if (st == KP_OK) {
        char kernels[256];
        host->log("cuda: %s, driver %d, %d device(s), symbols at API %d; kernels: %s", b->lib_name,
                  b->driver_version, b->device_count, b->proc_version,
                  kp_cu_embedded_summary(kernels, sizeof kernels));
        *out = b;
    } else {
        cu_state_free(b);
    }
    return st;
}

static void cuda_shutdown(kp_backend_state *b) {
    cu_state_free(b);
}

static int cuda_device_count(kp_backend_state *b) {
    return b ? b->device_count : 0;
}

static kp_status cuda_device_info(kp_backend_state *b, int index, kp_device_info *out) {
    if (!b || index < 0 || index >= b->device_count)
        return kp_cu_host->set_error(KP_ERR_INVALID_ARGUMENT, "cuda device index %d out of range [0, %d)",
                                     index, b ? b->device_count : 0);
    *out = b->devices[index].info;
    return KP_OK;
}

static kp_status cuda_device_open(kp_backend_state *b, int index, void **out_impl) {
    *out_impl = NULL;
    if (!b || index < 0 || index >= b->device_count)
        return kp_cu_host->set_error(KP_ERR_INVALID_ARGUMENT, "cuda device index %d out of range [0, %d)",
                                     index, b ? b->device_count : 0);
    kp_cu_device *d = calloc(1, sizeof *d);
    if (!d) return kp_cu_host->set_error(KP_ERR_OUT_OF_MEMORY, "out of memory opening cuda device %d", index);
    const kp_device_info *info = &b->devices[index].info;
    d->cu = &b->cu;
    d->dev = b->devices[index].dev;
    if (sscanf(info->arch, "sm_%d", &d->cc) != 1) d->cc = 0; /* "sm_90" -> 90, "sm_100" -> 100 */
    snprintf(d->name, sizeof d->name, "%s", info->name);
    d->smem_optin = info->local_mem_bytes > INT32_MAX ? INT32_MAX : (int)info->local_mem_bytes;
    kp_status st = kp_cu_modules_init(d);
    if (st != KP_OK) {
        free(d);
        return st;
    }
    CUresult r = b->cu.cuDevicePrimaryCtxRetain(&d->ctx, d->dev);
    if (r != CUDA_SUCCESS) {
        kp_cu_modules_unload(d); /* nothing loaded yet: frees the table */
        free(d);
        return kp_cu_fail(&b->cu, r, "cuDevicePrimaryCtxRetain of device %d (%s)", index, info->name);
    }
    *out_impl = d;
    return KP_OK;
}

static kp_status cuda_device_native(kp_device *d, kp_native_device *out) {
    const kp_cu_device *dev = d->impl;
    out->context = dev->ctx;
    out->device = (void *)(intptr_t)dev->dev;
    return KP_OK;
}

static void cuda_device_close(void *dev_impl) {
    kp_cu_device *d = dev_impl;
    if (!d) return;
    kp_cu_modules_unload(d); /* while the primary context is still retained */
    CUresult r = d->cu->cuDevicePrimaryCtxRelease(d->dev);
    if (r != CUDA_SUCCESS)
        kp_cu_host->log("cuda: cuDevicePrimaryCtxRelease: %s (%d)", kp_cu_result_name(d->cu, r), (int)r);
    free(d);
}

/* ------------------------------------------------------------------------ */
/* Ops: the shared GPU op layer (backends/gpu) over kp_cu_target               */
/* ------------------------------------------------------------------------ */

static kp_status cuda_op(kp_op op, kp_stream *s, const void *params, int dry_run) {
    return kp_gpu_op_run(&kp_cu_target, op, s, params, dry_run);
}

static kp_status cuda_op_kernel(kp_op op, kp_stream *s, const void *params, char *name, size_t cap) {
    return kp_gpu_op_kernel(&kp_cu_target, op, s, params, name, cap);
}

static kp_status cuda_ep_capacity(kp_stream *s, const kp_ep_capacity_args *a) {
    return kp_gpu_ep_capacity(&kp_cu_target, s, a);
}

/* ------------------------------------------------------------------------ */
/* The vtable                                                                */
/* ------------------------------------------------------------------------ */

_Static_assert(KP_OP_COUNT == 10, "a new kp_op needs its slot in cuda_iface.ops");

static const kp_backend_iface cuda_iface = {
    .abi_version = KP_BACKEND_ABI_VERSION,
    .struct_size = (uint32_t)sizeof(kp_backend_iface),
    .name = "cuda",
    .description = "NVIDIA CUDA driver API (libcuda.so.1, dlopen'd)",
    .reserved = {NULL, NULL, NULL, NULL},

    .init = cuda_init,
    .shutdown = cuda_shutdown,
    .device_count = cuda_device_count,
    .device_info = cuda_device_info,
    .device_open = cuda_device_open,
    .device_close = cuda_device_close,

    .device_native = cuda_device_native,
    .stream_create = kp_cu_stream_create,
    .stream_wrap = kp_cu_stream_wrap,
    .stream_native = kp_cu_stream_native,
    .stream_sync = kp_cu_stream_sync,
    .stream_destroy = kp_cu_stream_destroy,

    .buffer_alloc = kp_cu_buffer_alloc,
    .buffer_wrap = kp_cu_buffer_wrap,
    .buffer_free = kp_cu_buffer_free,
    .buffer_write = kp_cu_buffer_write,
    .buffer_read = kp_cu_buffer_read,
    .buffer_copy = kp_cu_buffer_copy,
    .event_create = kp_cu_event_create,
    .event_record = kp_cu_event_record,
    .event_sync = kp_cu_event_sync,
    .event_elapsed = kp_cu_event_elapsed,
    .event_destroy = kp_cu_event_destroy,
    .stream_reserve = kp_cu_stream_reserve,
    .stream_wait_event = kp_cu_stream_wait_event,
    .dlpack_device_type = kDLCUDA,

    .ops = {
        [KP_OP_ATTENTION_PREFILL] = cuda_op,
        [KP_OP_ATTENTION_DECODE] = cuda_op,
        [KP_OP_MLA_DECODE] = cuda_op,
        [KP_OP_MOE_GATE] = cuda_op,
        [KP_OP_MOE_ALIGN] = cuda_op,
        [KP_OP_GROUPED_GEMM] = cuda_op,
        [KP_OP_MOE_COMBINE] = cuda_op,
        [KP_OP_MOE_FORWARD] = cuda_op,
        [KP_OP_KV_CACHE_STORE] = cuda_op,
        [KP_OP_QUANTIZE_FP8] = cuda_op,
    },
    .buffer_address = kp_cu_buffer_address,
    .event_query = kp_cu_event_query,
    .op_kernel = cuda_op_kernel,
    .ep_capacity = cuda_ep_capacity,
};

/* The plugin's one exported symbol. The core refuses an abi_version it does not
 * understand (and prints both numbers), so the iface is returned whatever it asks. */
__attribute__((visibility("default"))) const kp_backend_iface *kport_backend_entry(uint32_t core_abi_version) {
    (void)core_abi_version;
    return &cuda_iface;
}
