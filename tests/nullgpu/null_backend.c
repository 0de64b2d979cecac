/*
 * tests/nullgpu/null_backend.c — libkport-null.so: a GPU-style backend that runs no
 * kernels, to measure kport's own host work per op (issue 17).
 *
 * Its one device describes an H200-class GPU (sm_90: 227 KiB opt-in shared memory,
 * mma.sync, warp 32, 132 SMs), so the shared GPU op layer (backends/gpu/kp_gpu.h)
 * plans exactly as on the H200: validation, dispatch, tile and variant selection,
 * argument packing and stream scratch all run; target->launch packs the argument
 * array a driver call takes and then drops the launch. Buffers are host memory, so
 * copies work; outputs of ops are never written.
 *
 * KPORT_NULL_SM90A=1 (read at init) gives the profile the sm_90a tier (profile.sm90a: an
 * H200 whose driver has cuTensorMapEncodeTiled), for ci/host-overhead's sm90 rows; tensor
 * maps are then packed as the launch's argument but not encoded (no driver here).
 *
 * Never installed and never on the default search path: it loads only when
 * KPORT_PLUGIN_PATH names this directory (ci/test's host-overhead step, kbench
 * --backend null). Its device name says that it runs no kernels, and kbench reports
 * host µs only for the "null" backend (no timing, no checks).
 */
#include "kp_gpu.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NULL_SMEM_OPTIN (227u * 1024u) /* sm_90 opt-in shared memory per block */
#define NULL_STATIC_SMEM (48u * 1024u)  /* what CUDA lets a kernel declare statically */
#define NULL_SMS 132

static const kp_host_services *host;
static int null_sm90a; /* KPORT_NULL_SM90A=1 */

struct kp_backend_state {
    int unused;
};

typedef struct null_stream {
    void *scratch[2];
    size_t scratch_bytes[2];
} null_stream;

static kp_status null_init(const kp_host_services *h, const kp_init_options *opt, kp_backend_state **out,
                           char *reason, size_t reason_len) {
    (void)opt, (void)reason, (void)reason_len;
    host = h;
    const char *sm90a = getenv("KPORT_NULL_SM90A");
    null_sm90a = sm90a && strcmp(sm90a, "1") == 0;
    *out = calloc(1, sizeof **out);
    return *out ? KP_OK : KP_ERR_OUT_OF_MEMORY;
}
static void null_shutdown(kp_backend_state *b) { free(b); }
static int null_device_count(kp_backend_state *b) { (void)b; return 1; }

static kp_status null_device_info(kp_backend_state *b, int index, kp_device_info *out) {
    (void)b;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "null GPU %d (H200-class profile; runs no kernels)", index);
    snprintf(out->vendor, sizeof out->vendor, "kport tests");
    snprintf(out->backend, sizeof out->backend, "null");
    snprintf(out->arch, sizeof out->arch, "sm_90");
    snprintf(out->driver, sizeof out->driver, "none (launches are dropped)");
    out->kind = KP_DEVICE_GPU_DISCRETE;
    out->memory_bytes = 141ull << 30;
    out->compute_units = NULL_SMS;
    out->subgroup_size = 32;
    out->local_mem_bytes = NULL_SMEM_OPTIN;
    out->caps = KP_CAP_SUBGROUPS | KP_CAP_F16 | KP_CAP_MATRIX_UNITS | KP_CAP_BF16 | KP_CAP_FP8;
    out->backend_device = index;
    return KP_OK;
}

static kp_status null_device_open(kp_backend_state *b, int index, void **out) {
    (void)b;
    *out = (void *)(intptr_t)(index + 1);
    return KP_OK;
}
static void null_device_close(void *d) { (void)d; }
static kp_status null_device_native(kp_device *d, kp_native_device *out) {
    (void)d, (void)out;
    return host->set_error(KP_ERR_UNSUPPORTED, "null: the null backend has no native handles");
}

static kp_status null_stream_create(kp_device *d, void **out) {
    (void)d;
    *out = calloc(1, sizeof(null_stream));
    return *out ? KP_OK : host->set_error(KP_ERR_OUT_OF_MEMORY, "null: out of memory");
}
static kp_status null_stream_wrap(kp_device *d, void *native, void **out) {
    (void)native;
    return null_stream_create(d, out);
}
static kp_status null_stream_native(kp_stream *s, void **out) { *out = s->impl; return KP_OK; }
static kp_status null_stream_sync(kp_stream *s) { (void)s; return KP_OK; }
static void null_stream_destroy(kp_stream *s) {
    null_stream *ns = s->impl;
    if (!ns) return;
    free(ns->scratch[0]), free(ns->scratch[1]);
    free(ns);
}

static kp_status null_buffer_alloc(kp_device *d, size_t n, void **out) {
    (void)d;
    *out = aligned_alloc(256, (n + 255) / 256 * 256 + (n == 0) * 256);
    return *out ? KP_OK : host->set_error(KP_ERR_OUT_OF_MEMORY, "null: %zu bytes: out of host memory", n);
}
static kp_status null_buffer_wrap(kp_device *d, void *native, size_t n, void **out) {
    (void)d, (void)n;
    *out = native;
    return KP_OK;
}
static void null_buffer_free(kp_buffer *b) {
    if (!(b->flags & KP_BUFFER_WRAPPED)) free(b->impl);
}
static kp_status null_buffer_write(kp_stream *s, kp_buffer *dst, size_t off, const void *src, size_t n) {
    (void)s;
    memcpy((char *)dst->impl + off, src, n);
    return KP_OK;
}
static kp_status null_buffer_read(kp_stream *s, const kp_buffer *src, size_t off, void *dst, size_t n) {
    (void)s;
    memcpy(dst, (const char *)src->impl + off, n);
    return KP_OK;
}
static kp_status null_buffer_copy(kp_stream *s, kp_buffer *dst, size_t doff, const kp_buffer *src, size_t soff,
                                  size_t n) {
    (void)s;
    memmove((char *)dst->impl + doff, (const char *)src->impl + soff, n);
    return KP_OK;
}

/* Events cannot time work that never runs: kbench falls back to the host clock. */
static kp_status null_event_create(kp_device *d, void **out) {
    (void)d, (void)out;
    return host->set_error(KP_ERR_UNSUPPORTED, "null: no events (the null backend runs no kernels)");
}
static kp_status null_event_record(kp_event *e, kp_stream *s) { (void)e, (void)s; return KP_ERR_UNSUPPORTED; }
static kp_status null_event_sync(kp_event *e) { (void)e; return KP_OK; }
static kp_status null_event_elapsed(kp_event *a, kp_event *b, float *ms) {
    (void)a, (void)b, (void)ms;
    return KP_ERR_UNSUPPORTED;
}
static void null_event_destroy(kp_event *e) { (void)e; }
static kp_status null_stream_wait_event(kp_stream *s, kp_event *e) { (void)s, (void)e; return KP_OK; }

/* ---- the target: everything a real one does up to the driver call ---- */

static void null_profile(kp_stream *s, kp_gpu_profile *out) {
    memset(out, 0, sizeof *out);
    out->info = &s->device->info;
    out->mma = 1;
    out->warp = 32;
    out->static_local_mem = NULL_STATIC_SMEM;
    out->local_mem = NULL_SMEM_OPTIN;
    out->max_group = 1024;
    out->compute_units = s->device->info.compute_units;
    out->sm90a = null_sm90a;
}

/* The argument array cuLaunchKernel takes, built as the CUDA target builds it; then
 * the launch is dropped. */
static kp_status null_launch(kp_stream *s, const kp_gpu_launch *l) {
    (void)s;
    uintptr_t ptrs[KP_GPU_MAX_ARGS];
    void *params[KP_GPU_MAX_ARGS + 1];
    for (int i = 0; i < l->nargs; i++) {
        const kp_gpu_arg *a = &l->args[i];
        switch (a->kind) {
        case KP_GPU_ARG_BUFFER:
            ptrs[i] = a->v.buffer ? (uintptr_t)a->v.buffer->impl : 0;
            params[i] = &ptrs[i];
            break;
        case KP_GPU_ARG_NATIVE:
            ptrs[i] = (uintptr_t)a->v.native;
            params[i] = &ptrs[i];
            break;
        case KP_GPU_ARG_KARGS: params[i] = (void *)a->v.kargs.data; break;
        case KP_GPU_ARG_TENSOR_MAP: params[i] = (void *)&a->v.tmap; break; /* a CUtensorMap's stand-in */
        default: return host->set_error(KP_ERR_INTERNAL, "null: argument %d of %s has kind %d", i, l->kernel, (int)a->kind);
        }
    }
    params[l->nargs] = NULL;
    if (l->groups[0] == 0 || l->groups[1] == 0 || l->groups[2] == 0 || l->local_bytes > NULL_SMEM_OPTIN)
        return host->set_error(KP_ERR_INTERNAL, "null: %s: empty grid or %u bytes of shared memory", l->kernel,
                               l->local_bytes);
    __asm__ volatile("" : : "r"(params) : "memory"); /* the array is "passed on" */
    return KP_OK;
}

static int null_scratch_get(kp_stream *s, const size_t bytes[2], void *out[2]) {
    null_stream *ns = s->impl;
    if (bytes[0] > ns->scratch_bytes[0] || bytes[1] > ns->scratch_bytes[1]) return 0;
    out[0] = ns->scratch[0], out[1] = ns->scratch[1];
    return 1;
}
/* Host memory stands for the device's: never touched, so not zeroed. */
static kp_status null_scratch_reserve(kp_stream *s, const size_t bytes[2]) {
    null_stream *ns = s->impl;
    for (int i = 0; i < 2; i++) {
        if (bytes[i] <= ns->scratch_bytes[i]) continue;
        void *p = malloc(bytes[i] ? bytes[i] : 1);
        if (!p) return host->set_error(KP_ERR_OUT_OF_MEMORY, "null: %zu bytes of stream scratch", bytes[i]);
        free(ns->scratch[i]);
        ns->scratch[i] = p, ns->scratch_bytes[i] = bytes[i];
    }
    return KP_OK;
}
static void null_scratch_release(kp_stream *s, void *handles[2]) { (void)s, (void)handles; }

static kp_gpu_target null_target = {
    .name = "null",
    .profile = null_profile,
    .launch = null_launch,
    .scratch_get = null_scratch_get,
    .scratch_reserve = null_scratch_reserve,
    .scratch_release = null_scratch_release,
};

static kp_status null_op(kp_op op, kp_stream *s, const void *params, int dry_run) {
    return kp_gpu_op_run(&null_target, op, s, params, dry_run);
}
static kp_status null_op_kernel(kp_op op, kp_stream *s, const void *params, char *name, size_t cap) {
    return kp_gpu_op_kernel(&null_target, op, s, params, name, cap);
}
static kp_status null_stream_reserve(kp_stream *s, size_t bytes) { return kp_gpu_stream_reserve(&null_target, s, bytes); }

static kp_status null_init_target(const kp_host_services *h, const kp_init_options *opt, kp_backend_state **out,
                                  char *reason, size_t reason_len) {
    null_target.host = h;
    return null_init(h, opt, out, reason, reason_len);
}

static const kp_backend_iface null_iface = {
    .abi_version = KP_BACKEND_ABI_VERSION,
    .struct_size = sizeof(kp_backend_iface),
    .name = "null",
    .description = "null-kernel GPU (tests only): plans and packs every launch like CUDA on an H200, runs none",
    .init = null_init_target,
    .shutdown = null_shutdown,
    .device_count = null_device_count,
    .device_info = null_device_info,
    .device_open = null_device_open,
    .device_close = null_device_close,
    .device_native = null_device_native,
    .stream_create = null_stream_create,
    .stream_wrap = null_stream_wrap,
    .stream_native = null_stream_native,
    .stream_sync = null_stream_sync,
    .stream_destroy = null_stream_destroy,
    .buffer_alloc = null_buffer_alloc,
    .buffer_wrap = null_buffer_wrap,
    .buffer_free = null_buffer_free,
    .buffer_write = null_buffer_write,
    .buffer_read = null_buffer_read,
    .buffer_copy = null_buffer_copy,
    .event_create = null_event_create,
    .event_record = null_event_record,
    .event_sync = null_event_sync,
    .event_elapsed = null_event_elapsed,
    .event_destroy = null_event_destroy,
    .stream_reserve = null_stream_reserve,
    .stream_wait_event = null_stream_wait_event,
    .dlpack_device_type = 0, /* wraps no framework's memory */
    .ops = {null_op, null_op, null_op, null_op, null_op, null_op, null_op, null_op, null_op, null_op},
    .op_kernel = null_op_kernel,
};

__attribute__((visibility("default"))) const kp_backend_iface *kport_backend_entry(uint32_t core_abi_version) {
    (void)core_abi_version;
    return &null_iface;
}
