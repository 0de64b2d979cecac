/*
 * backends/hip/hip_internal.h — types shared by the hip backend's files.
 *
 * The plugin compiles against hip_runtime_api.h (with __HIP_PLATFORM_AMD__, plain C,
 * no hipcc) and links nothing from ROCm: libamdhip64 is dlopen'd at init and every
 * entry point is reached through kp_hip_syms (hip_symbols.inc). Plugins never call
 * libkport: errors go through the host services the core lent at init (kp_hip_host).
 */
#ifndef KPORT_BACKENDS_HIP_INTERNAL_H
#define KPORT_BACKENDS_HIP_INTERNAL_H

#include "backend.h"

#include <pthread.h>

#ifndef __HIP_PLATFORM_AMD__
#define __HIP_PLATFORM_AMD__ 1
#endif
#include <hip/hip_runtime_api.h>

/* The libamdhip64 entry points, one field per line of hip_symbols.inc. */
typedef struct kp_hip_syms {
#define KP_HIP_REQUIRED(name, ret, ...) ret (*name)(__VA_ARGS__);
#define KP_HIP_OPTIONAL(name, ret, ...) ret (*name)(__VA_ARGS__);
#include "hip_symbols.inc"
#undef KP_HIP_REQUIRED
#undef KP_HIP_OPTIONAL
} kp_hip_syms;

/* One HIP device as enumerated at init. */
typedef struct kp_hip_device_desc {
    int ordinal;          /* HIP device id */
    kp_device_info info;  /* filled at init; backend_index is set by the core */
    uint32_t max_group;   /* hipDeviceProp_t.maxThreadsPerBlock */
    uint32_t max_grid[3]; /* hipDeviceProp_t.maxGridSize (work-groups per dimension) */
} kp_hip_device_desc;

/* kp_backend_state: the loaded runtime and its devices. */
struct kp_backend_state {
    void *lib;                   /* owned: dlclose'd unless runtime_started */
    char lib_name[64];           /* the name dlopen succeeded with ("libamdhip64.so") */
    int runtime_started;         /* hipInit was called: never unload the runtime after that */
    int runtime_version;         /* 50221153 = 5.2.21153 */
    kp_hip_syms hip;             /* resolved from lib */
    int device_count;            /* usable entries in devices */
    kp_hip_device_desc *devices; /* owned: device_count entries */
};

typedef struct kp_hip_module kp_hip_module; /* hip_launch.c */

/* kp_device.impl. HIP has no explicit contexts: the device is made current on the
 * calling thread (hipSetDevice) around each call. */
typedef struct kp_hip_device {
    const kp_hip_syms *hip; /* borrowed: the backend state's table */
    int ordinal;
    const kp_device_info *info; /* borrowed: the backend state's description (arch, limits) */
    uint32_t max_group;
    uint32_t max_grid[3];
    char runtime[32];       /* "HIP 50221153": part of the hiprtc cache key */
    /* Kernels (hip_launch.c): code objects loaded on this device, each with the entry
     * points looked up so far. lock guards modules, hiprtc_checked and hiprtc_status. */
    pthread_mutex_t lock;
    kp_hip_module *modules;  /* owned: unloaded at device close */
    int hiprtc_checked;      /* hiprtc_status/hiprtc_why hold the answer for this arch */
    kp_status hiprtc_status; /* KP_OK: hiprtc can build for info->arch */
    char hiprtc_why[KP_REASON_MAX];
} kp_hip_device;

/* kp_stream.impl */
typedef struct kp_hip_stream {
    hipStream_t stream;     /* owned: non-blocking, destroyed by stream_destroy (wrapped: borrowed) */
    void *scratch[2];       /* owned: split-KV scratch (hipMalloc), see hip_scratch_reserve; freed at destroy */
    size_t scratch_size[2];
} kp_hip_stream;

/* kp_buffer.impl */
typedef struct kp_hip_buffer {
    hipDeviceptr_t ptr;     /* owned by hipMalloc, or borrowed when the buffer wraps one */
} kp_hip_buffer;

/* Host services from init; valid until shutdown. */
extern const kp_host_services *kp_hip_host;

/* hip_status.c */
/* "hipErrorOutOfMemory": compiled in; the runtime's name (hip may be NULL) for codes
 * newer than this build; never NULL. */
const char *kp_hip_error_name(const kp_hip_syms *hip, hipError_t e);
kp_status kp_hip_error_status(hipError_t e);
/* Records "HIP error NAME (n) in <what>" via the host and returns the mapped status. */
kp_status kp_hip_fail(const kp_hip_syms *hip, hipError_t e, const char *what_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* hip_backend.c: make the device current on this thread for a call and restore the
 * previous one afterwards. push fails with a recorded error. */
kp_status kp_hip_push(const kp_hip_device *d, int *prev);
void kp_hip_pop(const kp_hip_device *d, int prev);

/* hip_buffer.c: the stream and buffer methods, in vtable order */
kp_status kp_hip_stream_create(kp_device *d, void **out_impl);
kp_status kp_hip_stream_wrap(kp_device *d, void *native, void **out_impl);
kp_status kp_hip_stream_native(kp_stream *s, void **out);
kp_status kp_hip_stream_sync(kp_stream *s);
void kp_hip_stream_destroy(kp_stream *s);
kp_status kp_hip_buffer_alloc(kp_device *d, size_t bytes, void **out_impl);
kp_status kp_hip_buffer_wrap(kp_device *d, void *native, size_t bytes, void **out_impl);
void kp_hip_buffer_free(kp_buffer *b);
kp_status kp_hip_buffer_write(kp_stream *s, kp_buffer *dst, size_t off, const void *src, size_t n);
kp_status kp_hip_buffer_read(kp_stream *s, const kp_buffer *src, size_t off, void *dst, size_t n);
kp_status kp_hip_buffer_copy(kp_stream *s, kp_buffer *dst, size_t dst_off, const kp_buffer *src,
                             size_t src_off, size_t n);
/* hip_buffer.c: events */
kp_status kp_hip_event_create(kp_device *d, void **out_impl);
kp_status kp_hip_event_record(kp_event *e, kp_stream *s);
kp_status kp_hip_event_sync(kp_event *e);
kp_status kp_hip_event_query(kp_event *e, int *done);
kp_status kp_hip_buffer_address(const kp_buffer *b, uintptr_t *out);
kp_status kp_hip_event_elapsed(kp_event *start, kp_event *end, float *ms);
void kp_hip_event_destroy(kp_event *e);

/* hip_launch.c: the op layer's target (backends/gpu/kp_gpu.h); host is set at init */
struct kp_gpu_target;
extern struct kp_gpu_target kp_hip_target;
/* Per-device kernel state: set up at device open, released at device close. */
void kp_hip_kernels_init(kp_hip_device *d);
void kp_hip_kernels_release(kp_hip_device *d);
/* Frees a stream's scratch: a stream kport created is synchronised first; a wrapped one
 * never is (hipFree itself waits for the device). */
void kp_hip_scratch_free(const kp_hip_device *d, kp_hip_stream *s, int wrapped);
kp_status kp_hip_stream_reserve(kp_stream *s, size_t bytes);
kp_status kp_hip_stream_wait_event(kp_stream *s, kp_event *e);

#endif /* KPORT_BACKENDS_HIP_INTERNAL_H */
