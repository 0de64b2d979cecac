/*
 * backends/gpu/kp_gpu.h — the op layer every GPU-style backend shares (opencl, cuda, hip).
 *
 * The kernels under kernels/ are written once; so is everything between an op's
 * validated parameters and a kernel launch: tile selection, -D options, launch
 * geometry, argument order, split-KV scratch, the MoE chains. That lives here, in
 * backends/gpu/ (one file per op under ops/), compiled into each GPU plugin. A plugin
 * supplies one kp_gpu_target: how to describe its device (kp_gpu_profile), how to
 * launch a kernel variant with an argument list, and per-stream scratch memory.
 *
 *   op slot -> kp_gpu_op_run(target, op, stream, params, dry_run)
 *           -> ops/gpu_<op>.c: plan (pure: profile + tuning) -> kp_gpu_launch list
 *           -> target->launch(stream, launch)   (clEnqueueNDRangeKernel / cuLaunchKernel / hipModuleLaunchKernel)
 *
 * A kernel variant is (source, options): the source path under kernels/
 * ("attention/attention_decode.cl") and its canonical -D options (the planner's
 * string, byte for byte). Backends that compile ahead of time (cuda, hip) embed the
 * variants kp_gpu_variants_enumerate lists for their profile, so the build and the
 * planner cannot drift apart.
 *
 * Arguments follow the kernels' convention: whole buffers (base addresses), then one
 * by-value parameter block whose struct the kernel's kargs header defines for host and
 * device alike (kernels/kp_kargs.h); offsets into the buffers are in that block, in
 * elements, so no sub-buffer or pointer arithmetic happens on the host.
 */
#ifndef KPORT_BACKENDS_GPU_H
#define KPORT_BACKENDS_GPU_H

#include "backend.h"

#include <stddef.h>
#include <stdint.h>

/* ---- kernel arguments ---------------------------------------------------- */

/* A kernel takes its buffers as pointer arguments, then one by-value parameter block
 * (its "kargs" struct, kernels/kp_kargs.h: offsets, strides, sizes, flags), in the
 * order the kernel declares them. */
typedef enum kp_gpu_arg_kind {
    KP_GPU_ARG_BUFFER, /* v.buffer: its device memory (NULL: a null pointer) */
    KP_GPU_ARG_NATIVE, /* v.native: backend memory handle from scratch_acquire (cl_mem, device pointer) */
    KP_GPU_ARG_KARGS,  /* v.kargs: a parameter block passed by value (clSetKernelArg with its size,
                          a kernelParams entry on CUDA/HIP) */
    KP_GPU_ARG_TENSOR_MAP, /* v.tmap: a 2-D TMA tensor map (the sm_90a tier): the CUDA backend encodes it
                              with cuTensorMapEncodeTiled and passes the 128-byte CUtensorMap by value
                              (a __grid_constant__ parameter); every other backend refuses it */
} kp_gpu_arg_kind;

/* Swizzle of a tensor map's box in shared memory (the values of CUtensorMapSwizzle). */
#define KP_GPU_TMAP_SWIZZLE_NONE 0
#define KP_GPU_TMAP_SWIZZLE_32B 1
#define KP_GPU_TMAP_SWIZZLE_64B 2
#define KP_GPU_TMAP_SWIZZLE_128B 3

/* A 2-D tiled tensor map: element (i0, i1), i0 the contiguous coordinate, is at byte
 * byte_offset + i1 * row_stride + i0 * (dtype's size) of the memory; a box of box[0] x
 * box[1] elements lands in shared memory with `swizzle`; reads past dims are zeros.
 * rank 3 or 4 (0 reads as 2): coordinates i2, i3 add i2 * outer_strides[0] and
 * i3 * outer_strides[1] bytes; dims and box have rank entries. */
typedef struct kp_gpu_tensor_map {
    const kp_buffer *buffer; /* the memory; NULL when address is set (kp_device_memory) */
    uint64_t address;        /* a device address, else 0 */
    uint64_t byte_offset;    /* of element (0, 0) from the buffer's base or the address */
    kp_dtype dtype;          /* KP_BF16, KP_F16 or KP_FP8_E4M3 (the tier's operands) */
    int swizzle;             /* KP_GPU_TMAP_SWIZZLE_* */
    uint64_t dims[4];        /* elements: dims[0] contiguous, dims[1] rows (then dims[2], dims[3]) */
    uint64_t row_stride;     /* bytes from a row to the next (a multiple of 16) */
    uint32_t box[4];         /* elements: box[0] x dtype size <= the swizzle span; each <= 256 */
    int rank;                /* 2, 3 or 4; 0: 2 */
    uint64_t outer_strides[2]; /* bytes, dims 2 and 3 (multiples of 16) */
} kp_gpu_tensor_map;

typedef struct kp_gpu_arg {
    kp_gpu_arg_kind kind;
    union {
        const kp_buffer *buffer;
        void *native;
        struct {
            const void *data; /* borrowed for the duration of target->launch */
            uint32_t size;
        } kargs;
        kp_gpu_tensor_map tmap;
    } v;
} kp_gpu_arg;

#define KP_GPU_MAX_ARGS 16
#define KP_GPU_MAX_KARGS_BYTES 1024 /* far below every API's limit (CUDA 4 KiB, OpenCL 1 KiB) */

/* One kernel launch: groups[d] work-groups of local[d] work-items in each dimension
 * (OpenCL's global size is groups * local). The strings and the kargs block are
 * borrowed for the duration of target->launch only (they usually sit in the op's
 * stack frame). */
typedef struct kp_gpu_launch {
    const char *source;  /* "attention/attention_decode.cl" */
    const char *options; /* "-DKP_DTYPE_BF16 -DATTN_DQK=128 ..." */
    const char *kernel;  /* "kp_attention_decode_paged" */
    uint64_t groups[3];
    uint32_t local[3];
    uint32_t local_bytes; /* dynamic local memory (KP_DYNAMIC_LOCAL); > 0 exactly when the kernel declares it */
    int nargs;
    int overflow; /* more than KP_GPU_MAX_ARGS, or a kargs block too large: a bug, reported by launch */
    kp_gpu_arg args[KP_GPU_MAX_ARGS];
} kp_gpu_launch;

void kp_gpu_launch_init(kp_gpu_launch *l, const char *source, const char *options, const char *kernel);
void kp_gpu_arg_buffer(kp_gpu_launch *l, const kp_buffer *b);
void kp_gpu_arg_native(kp_gpu_launch *l, void *native);
/* A tensor's buffer (NULL when the tensor is absent); its offset goes in the kargs.
 * A tensor on kp_device_memory passes its address itself (KP_GPU_ARG_NATIVE, a device
 * pointer on cuda and hip) with element offset 0. */
void kp_gpu_arg_tensor(kp_gpu_launch *l, const kp_tensor *t);
/* The kernel's parameter block, by value: data must stay valid until the launch is enqueued. */
void kp_gpu_arg_kargs(kp_gpu_launch *l, const void *data, size_t size);
/* A TMA tensor map, by value (copied into the launch). */
void kp_gpu_arg_tensor_map(kp_gpu_launch *l, const kp_gpu_tensor_map *m);
/* A tensor's byte offset in elements of its dtype (0 when the tensor is absent or an
 * address tensor, whose address is the kernel's buffer argument). */
int64_t kp_gpu_elem_offset(const kp_tensor *t);
/* The device address of an address tensor (on kp_device_memory); 0 for any other. */
uint64_t kp_gpu_tensor_address(const kp_tensor *t);
/* The alignment (a power of two, at most 256) of the base the kernel gets for memory
 * b, address addr (see kp_gpu_tensor_address): the address's own alignment when addr != 0,
 * else b's (target->buffer_align). */
struct kp_gpu_target;
uint32_t kp_gpu_base_align(const struct kp_gpu_target *t, const kp_buffer *b, uint64_t addr);

/* ---- the device, as the planners see it ----------------------------------- */

typedef struct kp_gpu_profile {
    const kp_device_info *info; /* tuning keys and messages */
    int cpu;                   /* a CPU device (PoCL): large local memory, no matrix units */
    int mma;                   /* the tile-MMA hardware path (PTX mma.sync, AMD MFMA/WMMA) exists */
    int warp;                  /* physical warp / wavefront / subgroup width (32 or 64) */
    uint64_t local_mem;        /* bytes of local (shared) memory one work-group may use, dynamic local
                                  memory included: CUDA's opt-in maximum (227 KiB on sm_90), HIP's LDS,
                                  OpenCL's CL_DEVICE_LOCAL_MEM_SIZE */
    uint64_t static_local_mem; /* what a kernel may declare in static arrays (KP_LOCAL): 48 KiB on CUDA,
                                  local_mem elsewhere */
    uint32_t max_group;        /* work-items per work-group */
    int compute_units;
    int sm90a;                 /* the sm_90a tier (wgmma + TMA) can run: CUDA on sm_90 with the driver's
                                  cuTensorMapEncodeTiled (the cuda build profile: its kernels are built) */
} kp_gpu_profile;

/* ---- what a backend provides --------------------------------------------- */

typedef struct kp_gpu_target {
    const char *name;              /* "cuda": the backend in messages */
    const kp_host_services *host;  /* the plugin's host services (set at init) */

    /* The profile of s's device. */
    void (*profile)(kp_stream *s, kp_gpu_profile *out);

    /* KP_OK when (source, options) can run on s's device: embedded for its arch, or
     * compilable at run time. Otherwise KP_ERR_UNSUPPORTED with the reason set.
     * Planners call it in dry runs too: it must not build or load anything slow when
     * the answer is known. NULL: every variant is available (opencl compiles on demand). */
    kp_status (*variant_check)(kp_stream *s, const char *source, const char *options);

    /* The alignment in bytes (a power of two, at most 256) of b's base address: a wrapped
     * pointer may have any. NULL: every buffer is at least 256-byte aligned (OpenCL: a
     * cl_mem's base, sub-buffers included, is aligned to CL_DEVICE_MEM_BASE_ADDR_ALIGN). */
    uint32_t (*buffer_align)(const kp_buffer *b);

    /* Enqueues one launch on s (asynchronous). Errors set the message. */
    kp_status (*launch)(kp_stream *s, const kp_gpu_launch *l);

    /* Per-stream scratch in two regions (split-KV partials and their log-sum-exps,
     * split-K partials). scratch_get: when the stream's regions hold at least bytes[0]
     * and bytes[1], their native handles for KP_GPU_ARG_NATIVE in out, and 1; otherwise
     * 0, having allocated, freed and waited for nothing. The handles are valid for
     * launches enqueued on s until scratch_release; the stream is in order, so the next
     * op may reuse the memory. Ops reach these only through kp_gpu_scratch_acquire,
     * which applies the graph-capture rule (kport.h, kp_stream_reserve). */
    int (*scratch_get)(kp_stream *s, const size_t bytes[2], void *out[2]);
    /* Grows the regions to at least bytes[0] and bytes[1] (never shrinks them). Memory
     * that work queued on s may still read is freed only after that work. */
    kp_status (*scratch_reserve)(kp_stream *s, const size_t bytes[2]);
    void (*scratch_release)(kp_stream *s, void *handles[2]);
} kp_gpu_target;

/* Runs one op through the shared planners (the body of every GPU plugin's op slots). */
kp_status kp_gpu_op_run(const kp_gpu_target *t, kp_op op, kp_stream *s, const void *params, int dry_run);
/* The op_kernel slot (kp_op_kernel): the op planned as a dry run, which names the kernels
 * it picks ("<tier>:<kernel>", kport.h) into name. */
kp_status kp_gpu_op_kernel(const kp_gpu_target *t, kp_op op, kp_stream *s, const void *params, char *name, size_t cap);
/* The ep_capacity slot (core/backend.h; ops/gpu_ep_capacity.c): one step enqueued on s. */
kp_status kp_gpu_ep_capacity(const kp_gpu_target *t, kp_stream *s, const struct kp_ep_capacity_args *a);

/* kp_stream_reserve on a GPU plugin (its stream_reserve slot): a reservation of R bytes
 * is R bytes of partials and R / KP_GPU_SCRATCH_LSE_RATIO of log-sum-exps, so an op
 * needing (b0, b1) fits when max(b0, b1 * ratio) <= R (every head dim is >= 64). */
#define KP_GPU_SCRATCH_LSE_RATIO 64
kp_status kp_gpu_stream_reserve(const kp_gpu_target *t, kp_stream *s, size_t bytes);
/* The reservation an op needing bytes[0] and bytes[1] of scratch asks for; 0 when that
 * does not fit in a size_t. */
size_t kp_gpu_scratch_need(const size_t bytes[2]);

/* ---- build-time variant lists ---------------------------------------------- */

/* Calls fn once for each distinct (source, options, kernels) the planners can pick on
 * a device with this profile under default tuning, over every dtype, head dim, shape
 * class and MoE mode the ops accept. kernels: the entry points launched from that
 * variant, space-separated. host may be a stub (tuning_get returns its default). */
typedef void (*kp_gpu_variant_fn)(void *user, const char *source, const char *options, const char *kernels);
void kp_gpu_variants_enumerate(const kp_host_services *host, const kp_gpu_profile *p, kp_gpu_variant_fn fn,
                               void *user);

#endif /* KPORT_BACKENDS_GPU_H */
