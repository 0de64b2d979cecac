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

/* kp_device.impl. HIP has no explicit contexts: the device is made current on the
 * calling thread (hipSetDevice) around each call. */
typedef struct kp_hip_device {
    const kp_hip_syms *hip; /* borrowed: the backend state's table */
    int ordinal;
} kp_hip_device;

/* kp_stream.impl */
typedef struct kp_hip_stream {
    hipStream_t stream;     /* owned: non-blocking, destroyed by stream_destroy */
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

#endif /* KPORT_BACKENDS_HIP_INTERNAL_H */
