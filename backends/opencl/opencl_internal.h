/*
 * backends/opencl/opencl_internal.h — types shared by the OpenCL backend's files.
 *
 * Not installed, not part of any ABI: the plugin's own files, the op files to come,
 * and tests/test_opencl.c (which links the same objects, see meson.build) include it.
 */
#ifndef KPORT_OPENCL_INTERNAL_H
#define KPORT_OPENCL_INTERNAL_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <pthread.h>

#include "backend.h"

/* NVIDIA's cl_nv_device_attribute_query, AMD's cl_amd_device_attribute_query and
 * Intel's subgroup query, defined here so the plugin builds with any CL headers. */
#define KP_CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV 0x4000
#define KP_CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV 0x4001
#define KP_CL_DEVICE_WARP_SIZE_NV 0x4003
#define KP_CL_DEVICE_WAVEFRONT_WIDTH_AMD 0x4043
#define KP_CL_DEVICE_SUB_GROUP_SIZES_INTEL 0x4108
#define KP_CL_DEVICE_IL_VERSION 0x105B /* OpenCL 2.1 */

/* One enumerated device: what init found, kept for the backend's lifetime. */
typedef struct kp_ocl_device_desc {
    cl_platform_id platform;
    cl_device_id id;
    kp_device_info info;
    char platform_name[128];
    char platform_version[128];
    char device_version[128];
    int has_inline_ptx; /* NVIDIA platform: build with -DKP_HAS_INLINE_PTX */
    int has_e4m3_mma;   /* and sm_89+: -DKP_HAS_E4M3_MMA (common/kp_tile_mma_e4m3.h) */
    int has_spirv_il;   /* CL_DEVICE_IL_VERSION names SPIR-V */
    int has_il_khr;     /* cl_khr_il_program: clCreateProgramWithILKHR (pre-2.1 drivers) */
    int has_khr_subgroups; /* cl_khr_subgroups: which flavour of an embedded SPIR-V module fits */
} kp_ocl_device_desc;

struct kp_backend_state {
    const kp_host_services *host; /* borrowed: the core's */
    kp_ocl_device_desc *devices;  /* owned */
    int device_count;
};

typedef enum kp_ocl_origin {
    KP_OCL_FROM_MEMORY = 0, /* this device already built it */
    KP_OCL_FROM_DISK = 1,   /* binary from the on-disk cache */
    KP_OCL_FROM_SOURCE = 2, /* compiled now */
    KP_OCL_FROM_IL = 3,     /* built now from the embedded SPIR-V (opencl_program.c) */
} kp_ocl_origin;

typedef struct kp_ocl_cache_stats {
    int memory_hits, disk_hits, source_builds;
    int disk_rejected; /* corrupt, stale or unloadable entries removed */
    int disk_writes;
    int il_builds;   /* programs built from embedded SPIR-V */
    int il_failures; /* IL builds the driver refused: each fell back to source */
} kp_ocl_cache_stats;

typedef struct kp_ocl_program_entry kp_ocl_program_entry;

/* Split-KV scratch of one command queue (opencl_launch.c): the decode
 * partials, kept across calls. Reuse is safe because the queue is in order; a buffer
 * is only released after clFinish of its queue (growth, stream destroy, device close). */
typedef struct kp_ocl_scratch {
    struct kp_ocl_scratch *next;
    cl_command_queue queue; /* borrowed: the key; the entry is dropped in ocl_stream_destroy */
    cl_mem part, part_lse;  /* owned: one reference each */
    size_t part_bytes, lse_bytes;
} kp_ocl_scratch;

/* An open device: the impl behind kp_device. */
typedef struct kp_ocl_device {
    kp_ocl_device_desc desc;       /* copied: outlives nothing */
    cl_context context;            /* owned */
    pthread_mutex_t lock;          /* guards programs, scratch and stats */
    kp_ocl_program_entry *programs; /* owned: built programs, newest first */
    kp_ocl_scratch *scratch;        /* owned, under lock: split-KV scratch per queue */
    kp_ocl_cache_stats stats;
    /* SPIR-V (opencl_program.c, under lock): clCreateProgramWithIL[KHR] resolved once */
    int il_resolved;
    void *il_create;           /* cl_program (*)(cl_context, const void *, size_t, cl_int *) */
    const char *il_create_how; /* where il_create came from, for the log */
    unsigned char *il_failed;  /* owned, one flag per kp_ocl_spirv_modules entry: don't retry */
} kp_ocl_device;

/* ---- opencl_status.c ---- */

/* The host services of the running backend (set by init); never NULL after init. */
const kp_host_services *kp_ocl_host(void);
void kp_ocl_set_host(const kp_host_services *host);
/* "CL_OUT_OF_RESOURCES"; "CL_UNKNOWN_ERROR" for codes this file does not know. */
const char *kp_ocl_error_name(cl_int err);
kp_status kp_ocl_status(cl_int err);
/* Records "OpenCL error CL_X (-5) in <call>" and returns the mapped status. */
kp_status kp_ocl_fail(cl_int err, const char *call);

/* ---- opencl_buffer.c (vtable slots) ---- */

kp_status kp_ocl_buffer_alloc(kp_device *d, size_t bytes, void **out_impl);
kp_status kp_ocl_buffer_wrap(kp_device *d, void *native, size_t bytes, void **out_impl);
void kp_ocl_buffer_free(kp_buffer *b);
kp_status kp_ocl_buffer_write(kp_stream *s, kp_buffer *dst, size_t off, const void *src, size_t n);
kp_status kp_ocl_buffer_read(kp_stream *s, const kp_buffer *src, size_t off, void *dst, size_t n);
kp_status kp_ocl_buffer_copy(kp_stream *s, kp_buffer *dst, size_t dst_off, const kp_buffer *src,
                             size_t src_off, size_t n);

/* ---- opencl_event.c (vtable slots) ---- */

kp_status kp_ocl_event_create(kp_device *d, void **out_impl);
kp_status kp_ocl_event_record(kp_event *e, kp_stream *s);
kp_status kp_ocl_event_sync(kp_event *e);
kp_status kp_ocl_event_elapsed(kp_event *start, kp_event *end, float *ms);
void kp_ocl_event_destroy(kp_event *e);
kp_status kp_ocl_stream_wait_event(kp_stream *s, kp_event *e);
kp_status kp_ocl_stream_reserve(kp_stream *s, size_t bytes); /* opencl_launch.c */

/* The cl_mem / cl_command_queue behind core objects. */
static inline cl_mem kp_ocl_mem(const kp_buffer *b) { return (cl_mem)b->impl; }
static inline cl_command_queue kp_ocl_queue(const kp_stream *s) { return (cl_command_queue)s->impl; }
static inline kp_ocl_device *kp_ocl_dev(const kp_device *d) { return (kp_ocl_device *)d->impl; }

/* ---- opencl_program.c ---- */

/* Frees every cached program of d (at device close). */
void kp_ocl_programs_release(kp_ocl_device *d);

/* ---- opencl_launch.c: per-queue split-KV scratch ---- */

/* 1 when queue q's scratch holds part_bytes / lse_bytes: *part and *part_lse then carry
 * a reference of the caller's own, to release once the kernels using them are enqueued
 * (the cache keeps its own). 0, with nothing allocated, otherwise. */
int kp_ocl_scratch_get(kp_ocl_device *d, cl_command_queue q, size_t part_bytes, size_t lse_bytes, cl_mem *part,
                       cl_mem *part_lse);
/* Grows q's scratch to at least part_bytes and lse_bytes (the next power of two), never
 * waiting for q: OpenCL frees the old buffers once the commands using them finish.
 * Does not record an error. */
cl_int kp_ocl_scratch_grow(kp_ocl_device *d, cl_command_queue q, size_t part_bytes, size_t lse_bytes);
/* Drops q's scratch, if any (ocl_stream_destroy): after clFinish(q) when finish is set. */
void kp_ocl_scratch_drop(kp_ocl_device *d, cl_command_queue q, int finish);
/* Frees every queue's scratch (device close). */
void kp_ocl_scratch_release_all(kp_ocl_device *d);

/* ---- opencl_launch.c ---- */
/* Every op slot: the shared GPU ops (backends/gpu/kp_gpu.h) with this backend as target. */
kp_status kp_ocl_op(kp_op op, kp_stream *s, const void *params, int dry_run);
kp_status kp_ocl_op_kernel(kp_op op, kp_stream *s, const void *params, char *name, size_t cap);
kp_status kp_ocl_ep_capacity(kp_stream *s, const kp_ep_capacity_args *a); /* the ep_capacity slot */
/* The target's launch (kp_gpu_target.launch): one kernel variant, built on demand. */
struct kp_gpu_launch;
kp_status kp_ocl_launch(kp_stream *s, const struct kp_gpu_launch *l);

/* ---- opencl_backend.c ---- */

/* The backend's vtable (the plugin entry returns it; tests call it directly). */
const kp_backend_iface *kp_ocl_backend_iface(void);

#endif /* KPORT_OPENCL_INTERNAL_H */
