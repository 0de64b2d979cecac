/*
 * backends/hip/hip_backend.c — the hip plugin: runtime loading, devices, vtable.
 *
 * libamdhip64 is dlopen'd at init (never linked), so one plugin binary loads on any
 * machine and reports "no AMD GPU" where there is none (there hipInit returns
 * hipErrorInvalidDevice (101) and hipGetDeviceCount hipErrorNoDevice (100)).
 * Streams and buffers live in hip_buffer.c; hipError_t names and mapping in
 * hip_status.c; kernels (the shared op layer's target: modules, launches, scratch) in
 * hip_launch.c, and the embedded code objects and hiprtc in hip_rtc.c.
 *
 * Devices: HIP keeps a current device per thread; every method that touches the
 * runtime sets the kp_device's one current (kp_hip_push) and restores the caller's
 * afterwards (kp_hip_pop).
 */
#include "hip_internal.h"
#include "kp_gpu.h"

#include "gpu_cache.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each line of hip_symbols.inc must match hip_runtime_api.h's prototype exactly. */
#define KP_HIP_REQUIRED(name, ret, ...)                                                    \
    _Static_assert(__builtin_types_compatible_p(__typeof__(&name), ret (*)(__VA_ARGS__)), \
                   "hip_symbols.inc: " #name " does not match hip_runtime_api.h");
#define KP_HIP_OPTIONAL KP_HIP_REQUIRED
#include "hip_symbols.inc"
#undef KP_HIP_REQUIRED
#undef KP_HIP_OPTIONAL

static const kp_backend_iface hip_iface;

/* ------------------------------------------------------------------------ */
/* Loading libamdhip64                                                       */
/* ------------------------------------------------------------------------ */

/* dlopen's the runtime; on failure the reason lists every name tried with its error.
 * The unversioned name is what a ROCm install (or libamdhip64-dev) provides; the
 * versioned ones cover a runtime-only install (ROCm 6, then 5). */
static kp_status hip_open_library(kp_backend_state *b, char *reason, size_t reason_len) {
    static const char *const names[] = {"libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"};
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
    snprintf(reason, reason_len, "libamdhip64.so not found: no AMD GPU runtime (ROCm) installed (tried: %s)",
             tried);
    return KP_ERR_UNAVAILABLE;
}

static int hip_resolve_one(kp_backend_state *b, const char *name, void **slot, int required,
                           char *reason, size_t reason_len) {
    void *fn = NULL;
    (void)dlerror();
    /* ROCm 6 exports the hipDeviceProp_t layout of the header we compile against
     * (ROCm 5) under this name; its plain hipGetDeviceProperties may fill a larger one. */
    if (strcmp(name, "hipGetDeviceProperties") == 0) fn = dlsym(b->lib, "hipGetDevicePropertiesR0000");
    if (!fn) fn = dlsym(b->lib, name);
    const char *err = fn ? NULL : dlerror();
    *slot = fn;
    if (!fn && required) {
        snprintf(reason, reason_len, "symbol '%s' not found in %s (%s)", name, b->lib_name,
                 err ? err : "?");
        return 0;
    }
    return 1;
}

static kp_status hip_resolve_symbols(kp_backend_state *b, char *reason, size_t reason_len) {
    int ok = 1;
#define KP_HIP_REQUIRED(name, ret, ...) \
    ok = ok && hip_resolve_one(b, #name, (void **)&b->hip.name, 1, reason, reason_len);
#define KP_HIP_OPTIONAL(name, ret, ...) \
    ok = ok && hip_resolve_one(b, #name, (void **)&b->hip.name, 0, reason, reason_len);
#include "hip_symbols.inc"
#undef KP_HIP_REQUIRED
#undef KP_HIP_OPTIONAL
    return ok ? KP_OK : KP_ERR_UNAVAILABLE;
}

/* ------------------------------------------------------------------------ */
/* Devices                                                                   */
/* ------------------------------------------------------------------------ */

/* What the architecture computes natively ("gfx90a", feature suffixes stripped). */
static uint32_t hip_arch_caps(const char *arch) {
    uint32_t caps = KP_CAP_SUBGROUPS | KP_CAP_F16 | KP_CAP_DEVICE_ADDRESSES; /* wavefront ops, packed f16: all GCN+; address tensors */
    if (!strcmp(arch, "gfx908") || !strcmp(arch, "gfx90a") || !strncmp(arch, "gfx94", 5) ||
        !strncmp(arch, "gfx95", 5))
        caps |= KP_CAP_MATRIX_UNITS | KP_CAP_BF16; /* CDNA: MFMA */
    if (!strncmp(arch, "gfx11", 5) || !strncmp(arch, "gfx12", 5))
        caps |= KP_CAP_MATRIX_UNITS | KP_CAP_BF16; /* RDNA3/4: WMMA */
    if (!strncmp(arch, "gfx94", 5) || !strncmp(arch, "gfx95", 5) || !strncmp(arch, "gfx12", 5))
        caps |= KP_CAP_FP8; /* CDNA3/4 MFMA and RDNA4 WMMA take fp8 */
    return caps;
}

/* Fills one device description; returns the first failing hipError_t, naming the call. */
static hipError_t hip_query_device(const kp_backend_state *b, int ordinal, kp_hip_device_desc *d,
                                   const char **what) {
    const kp_hip_syms *hip = &b->hip;
    kp_device_info *info = &d->info;
    /* Room to spare in case a runtime's struct is larger than this header's. */
    union {
        hipDeviceProp_t p;
        unsigned char pad[8192];
    } props;
    size_t mem = 0;
    hipError_t e;
    memset(d, 0, sizeof *d);
    memset(&props, 0, sizeof props);
    d->ordinal = ordinal;

    *what = "hipDeviceGetName";
    if ((e = hip->hipDeviceGetName(info->name, (int)sizeof info->name, ordinal)) != hipSuccess) return e;
    info->name[sizeof info->name - 1] = '\0';
    *what = "hipDeviceTotalMem";
    if ((e = hip->hipDeviceTotalMem(&mem, ordinal)) != hipSuccess) return e;
    *what = "hipGetDeviceProperties";
    if ((e = hip->hipGetDeviceProperties(&props.p, ordinal)) != hipSuccess) return e;

    /* gcnArchName: "gfx90a:sramecc+:xnack-"; the arch is the part before the first ':'. */
    props.p.gcnArchName[sizeof props.p.gcnArchName - 1] = '\0';
    size_t n = strcspn(props.p.gcnArchName, ":");
    if (n == 0 || n >= sizeof info->arch)
        snprintf(info->arch, sizeof info->arch, "gfx-unknown");
    else
        snprintf(info->arch, sizeof info->arch, "%.*s", (int)n, props.p.gcnArchName);

    int v = b->runtime_version;
    snprintf(info->vendor, sizeof info->vendor, "AMD");
    snprintf(info->backend, sizeof info->backend, "hip");
    snprintf(info->driver, sizeof info->driver, "HIP %d.%d.%d", v / 10000000, (v / 100000) % 100,
             v % 100000);
    info->kind = props.p.integrated ? KP_DEVICE_GPU_INTEGRATED : KP_DEVICE_GPU_DISCRETE;
    info->memory_bytes = (uint64_t)mem;
    info->compute_units = props.p.multiProcessorCount;
    /* wave64 on CDNA/GCN, wave32 by default on RDNA */
    info->subgroup_size = (props.p.warpSize == 32 || props.p.warpSize == 64) ? props.p.warpSize : 64;
    info->local_mem_bytes = (uint64_t)props.p.sharedMemPerBlock; /* LDS per work-group */
    d->max_group = props.p.maxThreadsPerBlock > 0 ? (uint32_t)props.p.maxThreadsPerBlock : 1024;
    for (int k = 0; k < 3; k++) d->max_grid[k] = props.p.maxGridSize[k] > 0 ? (uint32_t)props.p.maxGridSize[k] : 0;
    info->caps = hip_arch_caps(info->arch);
    if (props.p.pageableMemoryAccess) info->caps |= KP_CAP_UNIFIED_MEMORY; /* e.g. MI300A with XNACK */
    info->backend_device = ordinal;
    return hipSuccess;
}

/* Once hipInit has run, libamdhip64 stays loaded: ROCr starts threads and registers
 * exit handlers that must not outlive its code. A later init dlopen's the same copy. */
static void hip_state_free(kp_backend_state *b) {
    if (!b) return;
    free(b->devices);
    if (b->lib && !b->runtime_started) dlclose(b->lib);
    free(b);
}

/* "no AMD GPU: hipInit returned hipErrorInvalidDevice (101)" for the codes a machine
 * without an AMD GPU gives; "<call> failed: ..." for anything else. */
static void hip_init_reason(const kp_backend_state *b, const char *call, hipError_t e, char *reason,
                            size_t reason_len) {
    if (e == hipErrorNoDevice || e == hipErrorInvalidDevice)
        snprintf(reason, reason_len, "no AMD GPU: %s returned %s (%d)", call,
                 kp_hip_error_name(&b->hip, e), (int)e);
    else
        snprintf(reason, reason_len, "%s failed: %s (%d)", call, kp_hip_error_name(&b->hip, e), (int)e);
}

static kp_status hip_init(const kp_host_services *host, const kp_init_options *opt,
                          kp_backend_state **out, char *reason, size_t reason_len) {
    (void)opt;
    if (!host || !out || !reason || reason_len == 0) return KP_ERR_INVALID_ARGUMENT;
    kp_hip_host = host;
    kp_hip_target.host = host;
    *out = NULL;
    reason[0] = '\0';

    kp_status st = KP_OK;
    kp_backend_state *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(reason, reason_len, "out of memory creating the hip backend state");
        st = KP_ERR_OUT_OF_MEMORY;
    }
    if (st == KP_OK) st = hip_open_library(b, reason, reason_len);
    if (st == KP_OK) st = hip_resolve_symbols(b, reason, reason_len);
    int count = 0;
    if (st == KP_OK) {
        const char *what = "hipInit";
        b->runtime_started = 1;
        hipError_t e = b->hip.hipInit(0);
        if (e == hipSuccess) {
            what = "hipGetDeviceCount";
            e = b->hip.hipGetDeviceCount(&count);
        }
        if (e != hipSuccess) {
            hip_init_reason(b, what, e, reason, reason_len);
            st = KP_ERR_UNAVAILABLE;
        }
    }
    if (st == KP_OK) { /* the runtime's version; the driver's (the same number on ROCm) if absent */
        int have = b->hip.hipRuntimeGetVersion &&
                   b->hip.hipRuntimeGetVersion(&b->runtime_version) == hipSuccess;
        if (!have && b->hip.hipDriverGetVersion(&b->runtime_version) != hipSuccess)
            b->runtime_version = 0;
    }
    if (st == KP_OK && count > 0) {
        b->devices = calloc((size_t)count, sizeof *b->devices);
        if (!b->devices) {
            snprintf(reason, reason_len, "out of memory listing %d HIP devices", count);
            st = KP_ERR_OUT_OF_MEMORY;
        }
    }
    /* A device that cannot be queried is left out (and logged), not fatal. */
    for (int i = 0; st == KP_OK && i < count; i++) {
        const char *what = "";
        hipError_t e = hip_query_device(b, i, &b->devices[b->device_count], &what);
        if (e == hipSuccess) {
            b->device_count++;
            continue;
        }
        snprintf(reason, reason_len, "HIP device %d: %s failed: %s (%d)", i, what,
                 kp_hip_error_name(&b->hip, e), (int)e);
        host->log("hip: skipping %s", reason);
    }
    /* Zero devices is still KP_OK (backend.h); the reason says why none is usable. */
    if (st == KP_OK && b->device_count > 0)
        reason[0] = '\0';
    else if (st == KP_OK && count == 0)
        snprintf(reason, reason_len, "no AMD GPU: hipGetDeviceCount returned 0");

    if (st == KP_OK) {
        host->log("hip: %s, runtime %d, %d device(s)", b->lib_name, b->runtime_version, b->device_count);
        *out = b;
    } else {
        hip_state_free(b);
    }
    return st;
}

static void hip_shutdown(kp_backend_state *b) {
    hip_state_free(b);
}

static int hip_device_count(kp_backend_state *b) {
    return b ? b->device_count : 0;
}

static kp_status hip_device_info(kp_backend_state *b, int index, kp_device_info *out) {
    if (!b || index < 0 || index >= b->device_count)
        return kp_hip_host->set_error(KP_ERR_INVALID_ARGUMENT, "hip device index %d out of range [0, %d)",
                                      index, b ? b->device_count : 0);
    *out = b->devices[index].info;
    return KP_OK;
}

static kp_status hip_device_open(kp_backend_state *b, int index, void **out_impl) {
    *out_impl = NULL;
    if (!b || index < 0 || index >= b->device_count)
        return kp_hip_host->set_error(KP_ERR_INVALID_ARGUMENT, "hip device index %d out of range [0, %d)",
                                      index, b ? b->device_count : 0);
    kp_hip_device *d = calloc(1, sizeof *d);
    if (!d) return kp_hip_host->set_error(KP_ERR_OUT_OF_MEMORY, "out of memory opening hip device %d", index);
    d->hip = &b->hip;
    d->ordinal = b->devices[index].ordinal;
    d->info = &b->devices[index].info;
    d->max_group = b->devices[index].max_group;
    memcpy(d->max_grid, b->devices[index].max_grid, sizeof d->max_grid);
    snprintf(d->runtime, sizeof d->runtime, "HIP %d", b->runtime_version);
    /* Making it current once checks the device is usable (and creates its context). */
    int prev = 0;
    kp_status st = kp_hip_push(d, &prev);
    if (st != KP_OK) {
        free(d);
        return kp_hip_host->add_context(st, "while opening hip device %d (%s)", index,
                                        b->devices[index].info.name);
    }
    kp_hip_pop(d, prev);
    kp_hip_kernels_init(d);
    *out_impl = d;
    return KP_OK;
}

static kp_status hip_device_native(kp_device *d, kp_native_device *out) {
    const kp_hip_device *dev = d->impl;
    out->device = (void *)(intptr_t)dev->ordinal;
    return KP_OK;
}

static void hip_device_close(void *dev_impl) {
    kp_hip_device *d = dev_impl;
    if (!d) return;
    kp_hip_kernels_release(d); /* modules unloaded; HIP's per-device context lives as long as the process */
    free(d);
}

/* ------------------------------------------------------------------------ */
/* Ops: the shared planners (backends/gpu) with the hip target (hip_launch.c)  */
/* ------------------------------------------------------------------------ */

static kp_status hip_op(kp_op op, kp_stream *s, const void *p, int dry_run) {
    return kp_gpu_op_run(&kp_hip_target, op, s, p, dry_run);
}

static kp_status hip_op_kernel(kp_op op, kp_stream *s, const void *p, char *name, size_t cap) {
    return kp_gpu_op_kernel(&kp_hip_target, op, s, p, name, cap);
}

static kp_status hip_ep_capacity(kp_stream *s, const kp_ep_capacity_args *a) {
    return kp_gpu_ep_capacity(&kp_hip_target, s, a);
}

/* ------------------------------------------------------------------------ */
/* The vtable                                                                */
/* ------------------------------------------------------------------------ */

_Static_assert(KP_OP_COUNT == 10, "a new kp_op needs its slot in hip_iface.ops");

static const kp_backend_iface hip_iface = {
    .abi_version = KP_BACKEND_ABI_VERSION,
    .struct_size = (uint32_t)sizeof(kp_backend_iface),
    .name = "hip",
    .description = "AMD HIP runtime (libamdhip64.so, dlopen'd)",
    .reserved = {NULL, NULL, NULL, NULL},

    .init = hip_init,
    .shutdown = hip_shutdown,
    .device_count = hip_device_count,
    .device_info = hip_device_info,
    .device_open = hip_device_open,
    .device_close = hip_device_close,

    .device_native = hip_device_native,
    .stream_create = kp_hip_stream_create,
    .stream_wrap = kp_hip_stream_wrap,
    .stream_native = kp_hip_stream_native,
    .stream_sync = kp_hip_stream_sync,
    .stream_destroy = kp_hip_stream_destroy,

    .buffer_alloc = kp_hip_buffer_alloc,
    .buffer_wrap = kp_hip_buffer_wrap,
    .buffer_free = kp_hip_buffer_free,
    .buffer_write = kp_hip_buffer_write,
    .buffer_read = kp_hip_buffer_read,
    .buffer_copy = kp_hip_buffer_copy,
    .event_create = kp_hip_event_create,
    .event_record = kp_hip_event_record,
    .event_sync = kp_hip_event_sync,
    .event_elapsed = kp_hip_event_elapsed,
    .event_destroy = kp_hip_event_destroy,
    .stream_reserve = kp_hip_stream_reserve,
    .stream_wait_event = kp_hip_stream_wait_event,
    .dlpack_device_type = kDLROCM,

    .ops = {
        [KP_OP_ATTENTION_PREFILL] = hip_op,
        [KP_OP_ATTENTION_DECODE] = hip_op,
        [KP_OP_MLA_DECODE] = hip_op,
        [KP_OP_MOE_GATE] = hip_op,
        [KP_OP_MOE_ALIGN] = hip_op,
        [KP_OP_GROUPED_GEMM] = hip_op,
        [KP_OP_MOE_COMBINE] = hip_op,
        [KP_OP_MOE_FORWARD] = hip_op,
        [KP_OP_KV_CACHE_STORE] = hip_op,
        [KP_OP_QUANTIZE_FP8] = hip_op,
    },
    .buffer_address = kp_hip_buffer_address,
    .event_query = kp_hip_event_query,
    .op_kernel = hip_op_kernel,
    .ep_capacity = hip_ep_capacity,
};

/* The plugin's one exported symbol. The core refuses an abi_version it does not
 * understand (and prints both numbers), so the iface is returned whatever it asks. */
__attribute__((visibility("default"))) const kp_backend_iface *kport_backend_entry(uint32_t core_abi_version) {
    (void)core_abi_version;
    return &hip_iface;
}
