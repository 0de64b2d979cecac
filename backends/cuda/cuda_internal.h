/*
 * backends/cuda/cuda_internal.h — types shared by the cuda backend's files.
 *
 * The plugin compiles against cuda.h only and links neither libcuda nor libcudart:
 * libcuda.so.1 is dlopen'd at init and every entry point is reached through
 * kp_cu_syms (cuda_symbols.inc). Plugins never call libkport: errors go through the
 * host services the core lent at init (kp_cu_host).
 */
#ifndef KPORT_BACKENDS_CUDA_INTERNAL_H
#define KPORT_BACKENDS_CUDA_INTERNAL_H

#include "backend.h"

#include <cuda.h>
#include <pthread.h>

#if CUDA_VERSION < 12000
#error "the cuda backend needs cuda.h from CUDA 12.0 or newer (cuGetProcAddress_v2)"
#endif

/* The libcuda.so.1 entry points, one field per line of cuda_symbols.inc. Field names
 * are macro-expanded like every other use of the name, so `cu->cuMemAlloc` is the
 * field cuMemAlloc_v2 and always matches what cuda.h declares. */
typedef struct kp_cu_syms {
#define KP_CU_REQUIRED(name, ret, ...) ret(CUDAAPI *name)(__VA_ARGS__);
#define KP_CU_OPTIONAL(name, ret, ...) ret(CUDAAPI *name)(__VA_ARGS__);
#include "cuda_symbols.inc"
#undef KP_CU_REQUIRED
#undef KP_CU_OPTIONAL
} kp_cu_syms;

/* One CUDA device as enumerated at init. */
typedef struct kp_cu_device_desc {
    CUdevice dev;         /* the driver's handle for this ordinal */
    kp_device_info info;  /* filled at init; backend_index is set by the core */
} kp_cu_device_desc;

/* kp_backend_state: the loaded driver and its devices. */
struct kp_backend_state {
    void *lib;                  /* owned: dlclose'd unless runtime_started */
    char lib_name[64];          /* the name dlopen succeeded with ("libcuda.so.1") */
    int runtime_started;        /* cuInit was called: never unload the driver after that */
    int driver_version;         /* cuDriverGetVersion: 12040 = 12.4 */
    int proc_version;           /* API version symbols were resolved at (0: plain dlsym) */
    kp_cu_syms cu;              /* resolved from lib */
    int device_count;           /* usable entries in devices */
    kp_cu_device_desc *devices; /* owned: device_count entries */
};

/* One embedded kernel variant as loaded on one device (cuda_launch.c). */
typedef struct kp_cu_module kp_cu_module;
/* One variant compiled at run time with NVRTC (cuda_rtc.h), as loaded on one device. */
typedef struct kp_cu_rtc_module kp_cu_rtc_module;

/* kp_device.impl */
typedef struct kp_cu_device {
    const kp_cu_syms *cu; /* borrowed: the backend state's table */
    CUdevice dev;
    CUcontext ctx;        /* the primary context; retained by device_open, released by close */
    int cc;               /* compute capability, major * 10 + minor: 90 for sm_90 */
    int smem_optin;       /* shared memory a block may use once a kernel opts in (227 KiB on sm_90) */
    char name[128];       /* for messages */
    pthread_mutex_t lock; /* guards modules and rtc_modules */
    kp_cu_module *modules; /* owned: one slot per embedded variant, loaded on first launch;
                              unloaded by device_close (kp_cu_modules_unload) */
    kp_cu_rtc_module *rtc_modules; /* owned: a list of the variants NVRTC built for this
                                      device, keyed by (source, options); same lifetime */
} kp_cu_device;

/* kp_stream.impl */
typedef struct kp_cu_stream {
    CUstream stream;      /* owned: non-blocking, destroyed by stream_destroy */
    CUdeviceptr scratch[2]; /* owned: kp_gpu_target scratch (split-KV partials), see cu_scratch_reserve */
    size_t scratch_bytes[2];
    int scratch_async[2];   /* allocated by cuMemAllocAsync on this stream: freed by cuMemFreeAsync */
} kp_cu_stream;

/* kp_buffer.impl */
typedef struct kp_cu_buffer {
    CUdeviceptr ptr;      /* owned by cuMemAlloc, or borrowed when the buffer wraps one */
} kp_cu_buffer;

/* Host services from init; valid until shutdown. */
extern const kp_host_services *kp_cu_host;

/* cuda_status.c */
/* "CUDA_ERROR_OUT_OF_MEMORY": compiled in; the driver's name (cu may be NULL) for
 * codes newer than this build; never NULL. */
const char *kp_cu_result_name(const kp_cu_syms *cu, CUresult r);
kp_status kp_cu_result_status(CUresult r);
/* Records "CUDA error NAME (n) in <what>" via the host and returns the mapped status. */
kp_status kp_cu_fail(const kp_cu_syms *cu, CUresult r, const char *what_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* cuda_status.c: make the device's primary context current on this thread around
 * each driver call. push fails with a recorded error; pop cannot fail usefully. */
kp_status kp_cu_push(const kp_cu_device *d);
void kp_cu_pop(const kp_cu_device *d);

/* cuda_launch.c: the kp_gpu_target the op slots run through (host set at init), the
 * per-device module cache, and per-stream scratch. */
struct kp_gpu_target;
extern struct kp_gpu_target kp_cu_target;
kp_status kp_cu_modules_init(kp_cu_device *d);
void kp_cu_modules_unload(kp_cu_device *d); /* the context must be usable: before its release */
/* Frees s's scratch, ordered after the work queued on s (cuMemFreeAsync) or, for memory
 * cuMemAlloc gave, by cuMemFree (which waits for the device). The context is current. */
void kp_cu_scratch_free(kp_cu_stream *s, const kp_cu_device *d);
kp_status kp_cu_stream_reserve(kp_stream *s, size_t bytes);
kp_status kp_cu_stream_wait_event(kp_stream *s, kp_event *e);
/* A one-line description of what this plugin embeds: "29 kernel variants (cuda dialect),
 * each sm_80, sm_90a SASS and compute_80 PTX" */
const char *kp_cu_embedded_summary(char *buf, size_t len);

/* cuda_buffer.c: the stream and buffer methods, in vtable order */
kp_status kp_cu_stream_create(kp_device *d, void **out_impl);
kp_status kp_cu_stream_wrap(kp_device *d, void *native, void **out_impl);
kp_status kp_cu_stream_native(kp_stream *s, void **out);
kp_status kp_cu_stream_sync(kp_stream *s);
void kp_cu_stream_destroy(kp_stream *s);
kp_status kp_cu_buffer_alloc(kp_device *d, size_t bytes, void **out_impl);
kp_status kp_cu_buffer_wrap(kp_device *d, void *native, size_t bytes, void **out_impl);
void kp_cu_buffer_free(kp_buffer *b);
kp_status kp_cu_buffer_write(kp_stream *s, kp_buffer *dst, size_t off, const void *src, size_t n);
kp_status kp_cu_buffer_read(kp_stream *s, const kp_buffer *src, size_t off, void *dst, size_t n);
kp_status kp_cu_buffer_copy(kp_stream *s, kp_buffer *dst, size_t dst_off, const kp_buffer *src,
                            size_t src_off, size_t n);
kp_status kp_cu_event_create(kp_device *d, void **out_impl);
kp_status kp_cu_event_record(kp_event *e, kp_stream *s);
kp_status kp_cu_event_sync(kp_event *e);
kp_status kp_cu_event_query(kp_event *e, int *done);
kp_status kp_cu_buffer_address(const kp_buffer *b, uintptr_t *out);
kp_status kp_cu_event_elapsed(kp_event *start, kp_event *end, float *ms);
void kp_cu_event_destroy(kp_event *e);

#endif /* KPORT_BACKENDS_CUDA_INTERNAL_H */
