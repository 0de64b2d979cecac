/*
 * kport.h — the one public header of kport (C11).
 *
 * kport runs attention and mixture-of-experts kernels on NVIDIA (CUDA), AMD (HIP),
 * OpenCL devices and the CPU behind one C API, choosing the backend at run time.
 *
 * Conventions
 *  - Every function returns kp_status; on failure kp_last_error() gives a
 *    thread-local message naming the argument and the rule it broke.
 *  - A call that fails validation writes nothing to any output.
 *  - Ops are asynchronous on their stream; kp_stream_sync waits for them.
 *  - Tensors are views: dtype, shape and strides (in elements) over a kp_buffer, or at a
 *    device address (kp_device_memory: no kp_buffer per tensor). An input may repeat
 *    elements (a stride of 0 broadcasts); an output may not: every
 *    index of an output needs its own element, or the call fails with
 *    KP_ERR_INVALID_LAYOUT (checked conservatively: sorted by stride, each stride of a
 *    dimension of extent > 1 must reach past all the smaller dimensions span).
 *  - Every size computation is overflow-checked: a view or workspace too large to
 *    address is KP_ERR_INVALID_SHAPE. Each backend states its index-width limits
 *    (README, "Limits"); past them an op is KP_ERR_UNSUPPORTED, from kp_op_supported
 *    and the call alike, before anything runs.
 *
 * Optional tensors (an lse output, a bias) are "absent" when their buffer is NULL.
 */
#ifndef KPORT_H
#define KPORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define KP_API
#elif defined(__GNUC__)
#define KP_API __attribute__((visibility("default")))
#else
#define KP_API
#endif

#define KPORT_VERSION_MAJOR 0
#define KPORT_VERSION_MINOR 1
#define KPORT_VERSION_PATCH 0

#define KP_MAX_DIMS 4
#define KP_NAME_MAX 128
#define KP_REASON_MAX 512

/* ------------------------------------------------------------------------ */
/* Status                                                                    */
/* ------------------------------------------------------------------------ */

typedef enum kp_status {
    KP_OK = 0,
    KP_ERR_INVALID_ARGUMENT = 1, /* NULL pointer, bad enum, bad scalar value */
    KP_ERR_INVALID_DTYPE = 2,    /* a tensor's dtype is not allowed for that argument */
    KP_ERR_INVALID_SHAPE = 3,    /* rank or extents break the op's shape rules */
    KP_ERR_INVALID_LAYOUT = 4,   /* strides or alignment the op cannot take */
    KP_ERR_OUT_OF_BOUNDS = 5,    /* a view or copy reaches past its buffer */
    KP_ERR_DEVICE_MISMATCH = 6,  /* tensors/buffers/streams on different devices */
    KP_ERR_ALIASING = 7,         /* an output overlaps an input or another output */
    KP_ERR_UNSUPPORTED = 8,      /* valid call this backend/device cannot run (yet) */
    KP_ERR_OUT_OF_MEMORY = 9,
    KP_ERR_UNAVAILABLE = 10,     /* backend or device not usable on this machine */
    KP_ERR_NOT_INITIALIZED = 11, /* kp_init has not succeeded */
    KP_ERR_BACKEND = 12,         /* the vendor runtime reported an error */
    KP_ERR_BUILD_FAILED = 13,    /* a kernel failed to compile (log in the message) */
    KP_ERR_ABI_MISMATCH = 14,    /* a plugin built for another backend ABI */
    KP_ERR_IO = 15,              /* file system error (cache, tuning file) */
    KP_ERR_INTERNAL = 16
} kp_status;

/* A static string naming the code ("KP_ERR_INVALID_SHAPE"); never NULL. */
KP_API const char *kp_status_str(kp_status s);
/* The message of the calling thread's last failed call ("" if none); never NULL.
 * Valid until the next kport call on this thread. */
KP_API const char *kp_last_error(void);
/* "0.1.0 (abi 1)" */
KP_API const char *kp_version(void);

/* ------------------------------------------------------------------------ */
/* Init, backends and devices                                                */
/* ------------------------------------------------------------------------ */

#define KP_CPU_THREADS_MAX 4096 /* the most CPU worker threads cpu_threads or KPORT_NUM_THREADS may ask for */

typedef struct kp_init_options {
    const char *plugin_path; /* extra ':'-separated absolute dirs to search (NULL: none); a
                                directory or plugin writable by others, or owned by another
                                user than root or this one, is refused */
    int32_t cpu_threads;     /* CPU backend worker threads, 0..KP_CPU_THREADS_MAX;
                                0 = KPORT_NUM_THREADS or all cores */
    uint32_t flags;          /* KP_INIT_* */
} kp_init_options;

#define KP_INIT_NO_PLUGINS 0x1u /* only the built-in CPU backend */

/* Loads plugins and enumerates devices. Idempotent and thread-safe: the first
 * successful call's options win; later calls return KP_OK. opt may be NULL. */
KP_API kp_status kp_init(const kp_init_options *opt);
/* Releases everything kp_init made. Every handle must have been freed first;
 * kp_init may be called again afterwards. */
KP_API kp_status kp_shutdown(void);

typedef struct kp_backend_info {
    char name[16];               /* "cpu", "cuda", "hip", "opencl", or a plugin's name */
    char description[KP_NAME_MAX];
    char path[KP_REASON_MAX];    /* plugin file ("" for the built-in CPU backend) */
    int32_t available;           /* 1 if at least one device can be used */
    char reason[KP_REASON_MAX];  /* why not available ("" when available) */
    int32_t device_count;
} kp_backend_info;

KP_API int kp_backend_count(void); /* 0 before kp_init */
KP_API kp_status kp_backend_info_get(int index, kp_backend_info *out);

typedef enum kp_device_kind {
    KP_DEVICE_CPU = 0,
    KP_DEVICE_GPU_INTEGRATED = 1,
    KP_DEVICE_GPU_DISCRETE = 2,
    KP_DEVICE_ACCELERATOR = 3
} kp_device_kind;

/* Capability bits of kp_device_info.caps */
#define KP_CAP_F16 0x01u          /* computes on f16 natively */
#define KP_CAP_BF16 0x02u         /* computes on bf16 natively (dot products, MMA) */
#define KP_CAP_FP8 0x04u          /* FP8 (e4m3) matrix units */
#define KP_CAP_MATRIX_UNITS 0x08u /* tensor cores / MFMA / AMX / VNNI-class units */
#define KP_CAP_SUBGROUPS 0x10u    /* warp/subgroup shuffles */
#define KP_CAP_INLINE_PTX 0x20u   /* OpenCL on NVIDIA: inline PTX accepted */
#define KP_CAP_UNIFIED_MEMORY 0x40u /* host pointers are device pointers */
/* The backend checks the contents of index tensors (expert ids, offsets, block tables,
 * cu_seqlens, token positions) before writing anything, and rejects bad ones with
 * KP_ERR_INVALID_ARGUMENT. Without it (GPU backends: checking would cost a host round
 * trip), a bad index never causes an out-of-bounds access, but the outputs it touches
 * are unspecified. */
#define KP_CAP_CHECKS_INDICES 0x80u
/* Tensors may point straight at a device address (kp_device_memory,
 * kp_tensor_init_address): cpu, cuda, hip. Not OpenCL, whose memory has no addresses. */
#define KP_CAP_DEVICE_ADDRESSES 0x100u

typedef struct kp_device_info {
    char name[KP_NAME_MAX];
    char vendor[64];
    char backend[16];
    char arch[64];           /* "sm_90", "gfx90a", "x86-64 avx512-bf16", ... */
    char driver[64];         /* driver or runtime version */
    kp_device_kind kind;
    uint64_t memory_bytes;
    int32_t compute_units;   /* SMs, CUs, cores */
    int32_t subgroup_size;   /* warp/wavefront/SIMD width; 1 if none */
    uint64_t local_mem_bytes;/* shared/local memory per work-group */
    uint32_t caps;           /* KP_CAP_* */
    int32_t backend_index;   /* into kp_backend_info_get */
    int32_t backend_device;  /* index within that backend */
} kp_device_info;

KP_API int kp_device_count(void); /* all usable devices of all backends */
KP_API kp_status kp_device_info_get(int index, kp_device_info *out);

typedef struct kp_device kp_device;
typedef struct kp_stream kp_stream;
typedef struct kp_buffer kp_buffer;
typedef struct kp_event kp_event;

/* index = -1: the best device by policy. KPORT_BACKEND="cuda,hip,opencl,cpu" sets the
 * order of preference (one name forces it); KPORT_DEVICE=N picks device N of that one
 * backend, or global device N when KPORT_BACKEND is unset.
 * Default policy: discrete GPU > integrated GPU > other > CPU; the built-in CPU
 * backend before other CPU devices. */
KP_API kp_status kp_device_open(int index, kp_device **out);
KP_API kp_status kp_device_close(kp_device *d);
KP_API kp_status kp_device_get_info(const kp_device *d, kp_device_info *out);

/* ------------------------------------------------------------------------ */
/* Streams and buffers                                                       */
/* ------------------------------------------------------------------------ */

KP_API kp_status kp_stream_create(kp_device *d, kp_stream **out);
KP_API kp_status kp_stream_sync(kp_stream *s);
/* Waits for pending work first (a wrapped stream: nothing waited for, nothing destroyed). */
KP_API kp_status kp_stream_destroy(kp_stream *s);

/* ---- events: points in a stream's work, timed on the device ---- */

/* An event of device d; it marks nothing until recorded. */
KP_API kp_status kp_event_create(kp_device *d, kp_event **out);
/* Marks the point after the work queued on s so far (s on the event's device;
 * re-recording moves the mark). Asynchronous. */
KP_API kp_status kp_event_record(kp_event *e, kp_stream *s);
/* Waits until the work before the mark has finished. */
KP_API kp_status kp_event_sync(kp_event *e);
/* How many host round trips this process has made through kport: each kp_buffer_read,
 * kp_buffer_write, kp_stream_sync and kp_event_sync (an op's own included) and each
 * bounded wait of an EP exchange counts one. A debugging aid: tests/ep uses it to show
 * that kp_ep_dispatch_async + kp_grouped_gemm + kp_ep_combine make none (graph capture). */
KP_API uint64_t kp_host_sync_count(void);
/* Milliseconds of device time between two recorded events of one device, once end
 * has completed (waits for it): CUDA/HIP events, OpenCL profiling counters, the host
 * clock on cpu (its ops finish inside each call). KP_ERR_UNSUPPORTED where the
 * device cannot time (an OpenCL queue wrapped without CL_QUEUE_PROFILING_ENABLE). */
KP_API kp_status kp_event_elapsed_ms(kp_event *start, kp_event *end, float *ms);
KP_API kp_status kp_event_destroy(kp_event *e);

/* ---- interop with a server's own runtime objects ---- */

/* The native handles behind a device, to make memory or queues kport can wrap. */
typedef struct kp_native_device {
    void *context;  /* CUcontext (the primary context), cl_context; NULL on hip and cpu */
    void *device;   /* CUdevice or HIP ordinal (as intptr_t), cl_device_id; NULL on cpu */
    void *platform; /* cl_platform_id; NULL elsewhere */
} kp_native_device;

KP_API kp_status kp_device_get_native(const kp_device *d, kp_native_device *out);
/* The CUstream, hipStream_t or cl_command_queue behind s (NULL on cpu). */
KP_API kp_status kp_stream_get_native(const kp_stream *s, void **out);
/* Runs kport's work on the server's own stream: a CUstream (of the device's primary
 * context), hipStream_t, or in-order cl_command_queue of kp_device_get_native's
 * context. kport never synchronises or destroys it. KP_ERR_UNSUPPORTED on cpu. */
KP_API kp_status kp_stream_wrap(kp_device *d, void *native, kp_stream **out);

KP_API kp_status kp_buffer_alloc(kp_device *d, size_t bytes, kp_buffer **out);
/* Zero copy: native is a CUdeviceptr (cuda), hipDeviceptr_t (hip), cl_mem (opencl) or a
 * host pointer (cpu), passed as a pointer-sized value. kport never frees it. */
KP_API kp_status kp_buffer_wrap(kp_device *d, void *native, size_t bytes, kp_buffer **out);
KP_API kp_status kp_buffer_free(kp_buffer *b);
KP_API size_t kp_buffer_size(const kp_buffer *b);
KP_API kp_device *kp_buffer_device(const kp_buffer *b);
/* Blocking copies to and from host memory, ordered after the work already queued
 * on s. s may be NULL: the buffer device's internal stream, which is synchronous. */
KP_API kp_status kp_buffer_write(kp_stream *s, kp_buffer *dst, size_t dst_offset,
                                 const void *src, size_t bytes);
KP_API kp_status kp_buffer_read(kp_stream *s, const kp_buffer *src, size_t src_offset,
                                void *dst, size_t bytes);
/* Device-to-device copy within one device, asynchronous on s (NULL: synchronous).
 * The two ranges may not overlap when src == dst. */
KP_API kp_status kp_buffer_copy(kp_stream *s, kp_buffer *dst, size_t dst_offset,
                                const kp_buffer *src, size_t src_offset, size_t bytes);

/* ---- address tensors: no kp_buffer per framework tensor ----
 * *out = the pseudo-buffer that stands for all of d's memory: a tensor on it has
 * offset = a device address (CUdeviceptr, hipDeviceptr_t, host pointer on cpu) and is
 * otherwise an ordinary view. Owned by d and valid until kp_device_close; kp_buffer_free
 * on it is a no-op returning KP_OK (so callers that free every buffer keep working);
 * kp_buffer_size gives SIZE_MAX. kp_buffer_write/read/copy on it are
 * KP_ERR_UNSUPPORTED (copy with the framework's own API), and it cannot be a
 * kp_moe_forward workspace (wrap that memory once with kp_buffer_wrap).
 * KP_ERR_UNSUPPORTED on a device without KP_CAP_DEVICE_ADDRESSES (OpenCL: wrap the cl_mem
 * with kp_buffer_wrap instead).
 * Bounds come from the caller: kport checks that the address is not NULL, is aligned to
 * the dtype's size, and that address + the view's extent does not wrap around; whether
 * the memory really spans that extent it cannot know. Overlap checks between an op's
 * tensors compare byte ranges within one buffer, so two address tensors that overlap
 * are caught (KP_ERR_ALIASING), but an address tensor over memory that a kp_buffer also
 * covers (one region reached both ways) is not: do not mix the two for one region. */
KP_API kp_status kp_device_memory(kp_device *d, kp_buffer **out);

/* ------------------------------------------------------------------------ */
/* Tensors                                                                   */
/* ------------------------------------------------------------------------ */

typedef enum kp_dtype {
    KP_F32 = 0,
    KP_F16 = 1,
    KP_BF16 = 2,
    KP_I32 = 3,
    KP_FP8_E4M3 = 4, /* OCP e4m3fn: weights (block scales), activations, KV caches */
    KP_DTYPE_COUNT = 5
} kp_dtype;

KP_API size_t kp_dtype_size(kp_dtype t);     /* 0 for an invalid dtype */
KP_API const char *kp_dtype_name(kp_dtype t); /* "bf16"; "invalid" */

typedef struct kp_tensor {
    kp_buffer *buffer;  /* NULL: an absent optional tensor */
    size_t offset;      /* bytes from the buffer's start (kp_device_memory: the address) */
    kp_dtype dtype;
    int32_t ndim;       /* 1..KP_MAX_DIMS */
    int64_t shape[KP_MAX_DIMS];
    int64_t strides[KP_MAX_DIMS]; /* in elements */
} kp_tensor;

/* Fills *out with a view; strides NULL means contiguous row-major. Checks the view
 * fits in the buffer. */
KP_API kp_status kp_tensor_init(kp_tensor *out, kp_buffer *buffer, size_t offset, kp_dtype dtype,
                                int ndim, const int64_t *shape, const int64_t *strides);
/* kp_tensor_init(out, kp_device_memory(d), (size_t)address, ...): a view of memory at a
 * device address, allocating nothing. The address must be non-NULL and aligned to the
 * dtype's size; the view's own extent (shape and strides) is its bounds. */
KP_API kp_status kp_tensor_init_address(kp_tensor *out, kp_device *d, const void *address, kp_dtype dtype,
                                        int ndim, const int64_t *shape, const int64_t *strides);

#ifndef KPORT_NO_DLPACK
#include <dlpack/dlpack.h>
/* Zero-copy view of a DLPack tensor on device d (kDLCPU, kDLCUDA, kDLROCM or kDLOpenCL
 * matching d's backend); the memory stays the producer's.
 *  - cpu, cuda, hip: an address tensor (out->buffer = kp_device_memory(d), out->offset =
 *    data + byte_offset); nothing is allocated. kp_buffer_free(out->buffer) is a no-op
 *    and may be called or not.
 *  - opencl (data is a cl_mem): wraps it in a new kp_buffer (out->buffer, offset =
 *    byte_offset) that the caller must release with kp_buffer_free. */
KP_API kp_status kp_tensor_from_dlpack(const DLTensor *t, kp_device *d, kp_tensor *out);
#endif

/* ------------------------------------------------------------------------ */
/* Ops                                                                       */
/* Inputs f32/f16/bf16 (one dtype per op call), f32 accumulation and softmax,  */
/* outputs in the input dtype, optional f32 log-sum-exp. Last dims contiguous. */
/* ------------------------------------------------------------------------ */

typedef enum kp_op {
    KP_OP_ATTENTION_PREFILL = 0,
    KP_OP_ATTENTION_DECODE = 1,
    KP_OP_MLA_DECODE = 2,
    KP_OP_MOE_GATE = 3,
    KP_OP_MOE_ALIGN = 4,
    KP_OP_GROUPED_GEMM = 5,
    KP_OP_MOE_COMBINE = 6,
    KP_OP_MOE_FORWARD = 7,
    KP_OP_KV_CACHE_STORE = 8,
    KP_OP_QUANTIZE_FP8 = 9,
    KP_OP_COUNT = 10
} kp_op;

KP_API const char *kp_op_name(kp_op op); /* "attention_prefill"; "invalid" */

/* Varlen packed prefill (FlashAttention's varlen layout).
 * q [total_q, h_q, d], k [total_k, h_kv, d], v [total_k, h_kv, dv], out [total_q, h_q, dv],
 * cu_seqlens_q / cu_seqlens_k int32 [B+1], non-decreasing from 0.
 * lse (optional) f32 [h_q, total_q]. h_q % h_kv == 0 (GQA/MQA).
 * causal: query i of a sequence sees key j when j <= i + (len_k - len_q) (bottom-right).
 * window_left/right >= 0 limit keys to [i' - left, i' + right] around the aligned
 * position i' = i + len_k - len_q; -1 means unbounded. A query with no visible key
 * gets out = 0 and lse = +inf.
 *
 * Paged K/V (chunked prefill, prefix caching): when block_table.buffer != NULL, k and v
 * are the paged caches of kp_attention_decode, k [num_blocks, block_size, h_kv, d] and
 * v [num_blocks, block_size, h_kv, dv]; block_table int32 [B, max_blocks] maps key j of
 * sequence b to row j % block_size of block block_table[b, j / block_size];
 * seq_lens_k int32 [B] gives len_k of each sequence (the cached prefix plus this
 * chunk's keys, already stored), each in [0, max_seqlen_k] and max_seqlen_k <=
 * max_blocks * block_size; cu_seqlens_k is then unused (leave it absent). Only the
 * first ceil(len_k / block_size) table entries of a sequence are read; each must be in
 * [0, num_blocks). Queries are the last len_q of the len_k positions (same bottom-right
 * rule as above), so a prefix hit is q shorter than its keys. Backends with
 * KP_CAP_CHECKS_INDICES reject bad table or length content with nothing written; the
 * others clamp it so no read leaves the caches. Without a block table, seq_lens_k must
 * be absent. */
typedef struct kp_attention_prefill_params {
    kp_tensor q, k, v, out, lse;
    kp_tensor cu_seqlens_q, cu_seqlens_k;
    int32_t max_seqlen_q, max_seqlen_k; /* upper bounds of the lengths in cu_seqlens / seq_lens_k */
    float softmax_scale;                /* explicit, > 0 */
    int32_t causal;
    int32_t window_left, window_right;
    kp_tensor block_table, seq_lens_k;  /* optional: paged K/V (above) */
} kp_attention_prefill_params;

/* Paged-KV decode. q [B, s_q, h_q, d]; k_cache [num_blocks, block_size, h_kv, d];
 * v_cache [num_blocks, block_size, h_kv, dv]; block_table int32 [B, max_blocks];
 * seq_lens int32 [B] (keys per sequence, the s_q new ones included);
 * out [B, s_q, h_q, dv]; lse (optional) f32 [B, h_q, s_q].
 * causal: query i of s_q sees keys j <= seq_len - s_q + i. num_splits 0 = automatic.
 * window_left (sliding window, Mistral/Gemma style): N > 0 limits query i to keys
 * j >= p - N, p = seq_len - s_q + i its position (N + 1 keys with causal), exactly as
 * kp_attention_prefill's window_left = N. 0 (what a zeroed struct holds) and -1 mean
 * unbounded, so a window of only the query's own key is not expressible here. */
typedef struct kp_attention_decode_params {
    kp_tensor q, k_cache, v_cache, block_table, seq_lens, out, lse;
    float softmax_scale;
    int32_t causal;
    int32_t num_splits;
    int32_t window_left; /* 0 or -1: unbounded; N > 0: keys from position - N on */
    /* FP8 KV cache: k_cache and v_cache both e4m3, each element read as e4m3 * scale
     * rounded to q's dtype; k_scale / v_scale f32 [1] (per tensor) or [num_blocks] (per
     * cache block), as kp_kv_cache_store wrote them. Absent for caches in q's dtype. */
    kp_tensor k_scale, v_scale;
} kp_attention_decode_params;

/* MLA decode (FlashMLA layout). q [B, s_q, h_q, 576]; kv_cache [num_blocks, 64, 1, 576]
 * whose first head_dim_v (512) columns are V; block_table, seq_lens as in decode;
 * out [B, s_q, h_q, 512]; lse (optional) f32 [B, h_q, s_q]. s_q 1..2 (MTP).
 * The scale is always explicit (DeepSeek-V3: 0.1352337788608801). */
typedef struct kp_mla_decode_params {
    kp_tensor q, kv_cache, block_table, seq_lens, out, lse;
    float softmax_scale;
    int32_t causal;
    int32_t head_dim_v; /* 512 */
    int32_t num_splits;
    /* FP8 latent cache: kv_cache e4m3, read as e4m3 * kv_scale rounded to q's dtype;
     * kv_scale f32 [1] or [num_blocks]. Absent for a cache in q's dtype. */
    kp_tensor kv_scale;
} kp_mla_decode_params;

typedef enum kp_moe_scoring {
    KP_MOE_SCORING_SOFTMAX = 0,
    KP_MOE_SCORING_SIGMOID = 1
} kp_moe_scoring;

/* Routing rules shared by kp_moe_gate and kp_moe_forward.
 * DeepSeek-V3: {topk 8, n_group 8, topk_group 4, SIGMOID, renormalize 1, route_scale 2.5}.
 * Mixtral/Qwen: {topk k, n_group 1, topk_group 1, SOFTMAX, renormalize 0 or 1, 1.0}. */
typedef struct kp_moe_routing {
    int32_t topk;        /* 1..32, <= E */
    int32_t n_group;     /* 1..32, divides E */
    int32_t topk_group;  /* 1..n_group */
    kp_moe_scoring scoring;
    int32_t renormalize; /* divide the chosen weights by their sum */
    float route_scale;   /* multiplies the final weights */
} kp_moe_routing;

/* logits [T, E] (E <= 512), bias (optional) f32 [E], used for selection only;
 * topk_ids int32 [T, topk], topk_weights f32 [T, topk]. Ties go to the lower index. */
typedef struct kp_moe_gate_params {
    kp_tensor logits, bias, topk_ids, topk_weights;
    kp_moe_routing routing;
} kp_moe_gate_params;

/* Sorts the T*k (token, slot) pairs by expert, stably, padding each expert's rows
 * to a multiple of block_size. topk_ids int32 [T, k] (each in [0, num_experts));
 * sorted_ids int32 [T*k + num_experts*(block_size-1)]: flat index t*k + slot of each
 * row in sorted order, padding rows = T*k; expert_offsets int32 [num_experts + 1]
 * (padded row offsets); token_pos int32 [T, k]: the sorted row of each pair. */
typedef struct kp_moe_align_params {
    kp_tensor topk_ids, sorted_ids, expert_offsets, token_pos;
    int32_t num_experts;
    int32_t block_size; /* >= 1 */
} kp_moe_align_params;

/* out[r, :] = a[r, :] · w[e]ᵀ for rows r in [expert_offsets[e], expert_offsets[e+1]).
 * a [M, K]; w [E, N, K] (f16/bf16 as a, or FP8 e4m3 with w_scale f32
 * [E, ceil(N/128), ceil(K/128)], K % 128 == 0); expert_offsets int32 [E+1]; out [M, N]
 * in a's dtype. Rows outside every expert range are left untouched.
 * W8A8 (FP8 activations, DeepGEMM's fp8_gemm_nt / vLLM's w8a8 block FP8): a FP8 e4m3
 * with a_scale f32 per token group of 128 columns (kp_quantize_fp8's output, either
 * layout, UE8M0 included), w FP8 e4m3 with w_scale; out f32, f16 or bf16. Then
 *   out[r, n] = sum over kb of (sum_{k in slice kb} a[r, k] * w[e, n, k])
 *               * a_scale(r, kb) * w_scale[e, n/128, kb],
 * each 128-wide K slice summed in f32 and scaled once (DeepGEMM's promotion).
 * a_scale is required exactly when a is e4m3, and only then may a be e4m3. */
typedef struct kp_grouped_gemm_params {
    kp_tensor a, w, w_scale, expert_offsets, out;
    /* 0.2: FP8 activations' scales. a_scale_layout KP_FP8_SCALE_ROW_MAJOR: a_scale
     * [M, K/128]; KP_FP8_SCALE_COL_MAJOR: a_scale [K/128, M_pad], M_pad >= M (element
     * (kb, r)); last dim contiguous. Zeros (absent, row-major): today's bf16/f16/f32 a. */
    kp_tensor a_scale;
    int32_t a_scale_layout; /* kp_fp8_scale_layout */
    /* 0.2: the masked layout (DeepGEMM's m_grouped_gemm_*_masked; low-latency decode
     * after a capacity-mode EP dispatch). masked_m int32 [E] on the device; then
     * expert_offsets is absent (exactly one of the two is given), a is [E, max_m, K] or
     * [E * max_m, K] (its first two dims one flat row dim: stride[0] = max_m * stride[1])
     * and out [E, max_m, N] or [E * max_m, N], the same rank as a. Expert e owns rows
     * e * max_m + r, r < min(max(masked_m[e], 0), max_m) (a count past max_m is clamped);
     * its other rows of out are left untouched. The counts are read on the device only
     * (no host sync: capturable in a CUDA graph). Every dtype path applies; W8A8's a_scale
     * is indexed by the flat row e * max_m + r (row-major [E * max_m, K/128], or
     * column-major [K/128, M_pad >= E * max_m]). Zeros (absent): expert_offsets mode. */
    kp_tensor masked_m;
} kp_grouped_gemm_params;

/* out[t, :] = sum over slot 0..k-1, in that order, of topk_weights[t, slot] *
 * expert_out[token_pos[t, slot], :]. expert_out [rows, hidden]; token_pos int32 [T, k];
 * topk_weights f32 [T, k]; out [T, hidden]. Deterministic. */
typedef struct kp_moe_combine_params {
    kp_tensor expert_out, token_pos, topk_weights, out;
} kp_moe_combine_params;

/* The routed-expert layer in one call: gate -> align -> x·w13ᵀ -> SwiGLU -> ·w2ᵀ ->
 * combine, plus an optional shared expert (dense SwiGLU MLP) added to the output
 * (its weights in x's dtype, or FP8 with shared_w13_scale / shared_w2_scale below).
 * x [T, hidden]; router_logits [T, E]; bias optional f32 [E];
 * w13 [E, 2*inter, hidden] (gate rows first, then up); w2 [E, hidden, inter];
 * w13_scale / w2_scale f32 block scales when the weights are FP8;
 * shared_w13 [2*inter_s, hidden], shared_w2 [hidden, inter_s] optional;
 * out [T, hidden]. workspace: kp_moe_forward_workspace_size bytes of a buffer on the
 * same device, from workspace_offset on (any offset: the size includes room to align
 * the workspace's regions, which start at the next multiple of 256); they may overlap
 * no tensor argument. The call never allocates. Precision: each GEMM accumulates in f32;
 * the SwiGLU output and each expert's output are stored in the workspace in x's dtype
 * (rounded once each, as vLLM and SGLang do), the combine sums in f32. */
typedef struct kp_moe_forward_params {
    kp_tensor x, router_logits, bias;
    kp_tensor w13, w13_scale, w2, w2_scale;
    kp_tensor shared_w13, shared_w2;
    kp_tensor out;
    kp_buffer *workspace;
    size_t workspace_offset;
    kp_moe_routing routing;
    /* 0.2: FP8 activations (W8A8, the way DeepSeek-V3 is served; README "FP8 layouts").
     * activation_dtype 0 (what a zeroed struct holds) or x's dtype: the activations stay
     * in x's dtype (W8A16 with FP8 weights). KP_FP8_E4M3: W8A8, which needs FP8 e4m3 w13
     * and w2 with their scales (anything else: KP_ERR_INVALID_ARGUMENT, nothing written):
     *  - x is quantized per token and 128-column group exactly as kp_quantize_fp8 does
     *    (scale = amax / 448 in f32, or UE8M0 with activation_scale_ue8m0 = 1);
     *  - x·w13ᵀ as kp_grouped_gemm's W8A8: each 128-wide K slice summed in f32 and
     *    scaled once by a_scale * w_scale (DeepGEMM's promotion);
     *  - h = silu(gate) * up in f32, quantized in the SwiGLU epilogue the same way (per
     *    row, groups of 128 columns of inter; never stored in x's dtype);
     *  - h·w2ᵀ W8A8 likewise, y stored in x's dtype, combined as in W8A16.
     * A shared expert with FP8 weights runs the same way (its h quantized in its own
     * SwiGLU epilogue), as SGLang and vLLM serve V3; one in x's dtype keeps x's dtype
     * activations. hidden and inter are multiples of 128 (FP8 weights need it). */
    int32_t activation_dtype;       /* 0 / x's dtype, or KP_FP8_E4M3 */
    int32_t activation_scale_ue8m0; /* W8A8 only: 1 = power-of-two activation scales */
    /* 0.2: an FP8 shared expert (DeepSeek-V3's shared_experts with weight_scale_inv):
     * shared_w13 / shared_w2 e4m3 with f32 128x128 block scales shared_w13_scale
     * [ceil(2*inter_s/128), hidden/128] and shared_w2_scale [ceil(hidden/128), inter_s/128]
     * (hidden, inter_s multiples of 128; x f16/bf16). Absent for shared weights in x's
     * dtype. Without FP8 activations the shared expert is then W8A16 like the routed. */
    kp_tensor shared_w13_scale, shared_w2_scale;
} kp_moe_forward_params;

KP_API kp_status kp_attention_prefill(kp_stream *s, const kp_attention_prefill_params *p);
KP_API kp_status kp_attention_decode(kp_stream *s, const kp_attention_decode_params *p);
KP_API kp_status kp_mla_decode(kp_stream *s, const kp_mla_decode_params *p);
KP_API kp_status kp_moe_gate(kp_stream *s, const kp_moe_gate_params *p);
KP_API kp_status kp_moe_align(kp_stream *s, const kp_moe_align_params *p);
KP_API kp_status kp_grouped_gemm(kp_stream *s, const kp_grouped_gemm_params *p);
KP_API kp_status kp_moe_combine(kp_stream *s, const kp_moe_combine_params *p);
KP_API kp_status kp_moe_forward(kp_stream *s, const kp_moe_forward_params *p);
/* Bytes of workspace kp_moe_forward needs for these shapes and x's dtype on device d
 * (the intermediates are x's dtype: a bf16/f16 layer needs about half of an f32 one;
 * W8A8 adds the e4m3 x and its scales, and keeps h in e4m3 with its scales);
 * workspace fields of p are ignored. */
KP_API kp_status kp_moe_forward_workspace_size(kp_device *d, const kp_moe_forward_params *p,
                                               size_t *bytes);

/* ---- FP8 data paths: KV cache writes, activation quantization (README "FP8 layouts") ---- */

/* Writes new tokens' keys and values into their paged cache slots (vLLM's
 * reshape_and_cache): for each token t with slot = slot_mapping[t] >= 0,
 *   k_cache[slot / block_size, slot % block_size, :, :] = key[t, :, :] (v likewise).
 * key [T, h_kv, d]; value [T, h_kv, dv], absent for an MLA latent cache (one cache,
 * no V: then v_cache and v_scale are absent too); k_cache [num_blocks, block_size,
 * h_kv, d], v_cache [num_blocks, block_size, h_kv, dv]; slot_mapping int32 [T]: slot =
 * block * block_size + offset, negative = skip the token (vLLM's padding); each slot at
 * most once per call. A cache has key's dtype, or is FP8 e4m3 (KP_FP8_E4M3): then its
 * scale (k_scale / v_scale) is required, f32 [1] (per tensor) or [num_blocks] (per
 * cache block), and each element is stored as e4m3(x / scale), x / scale computed in
 * f32, rounded to nearest even and saturated to +-448 (NaN stays NaN). The decode ops
 * read such a cache back as e4m3 * scale. */
typedef struct kp_kv_cache_store_params {
    kp_tensor key, value, k_cache, v_cache, slot_mapping, k_scale, v_scale;
} kp_kv_cache_store_params;

KP_API kp_status kp_kv_cache_store(kp_stream *s, const kp_kv_cache_store_params *p);

#define KP_FP8_GROUP 128 /* kp_quantize_fp8's group: 1 x 128, DeepSeek-V3's activations */

typedef enum kp_fp8_scale_layout {
    KP_FP8_SCALE_ROW_MAJOR = 0, /* scale [T, K/128] */
    KP_FP8_SCALE_COL_MAJOR = 1  /* scale [K/128, T_pad], T_pad >= T (DeepGEMM: T rounded up to a
                                   multiple of 4); columns past T are left untouched */
} kp_fp8_scale_layout;

/* Per-token-group FP8 quantization (vLLM's per_token_group_quant_fp8, DeepGEMM's
 * activation input): for token t and group g of 128 columns,
 *   amax = max |x[t, 128g .. 128g+127]| (f32), at least 1e-10 (an all-zero group);
 *   scale = amax / 448 in f32, or with scale_ue8m0 the smallest power of two with
 *           448 * scale >= amax (UE8M0, DeepGEMM on Blackwell; stored as f32);
 *   out[t, c] = e4m3(x[t, c] / scale) (round to nearest even, saturating);
 *   the scale's element (t, g) = scale. Dequantize: x ~ out * scale.
 * x [T, K] f32/f16/bf16 with K % 128 == 0; out [T, K] e4m3; scale f32 as scale_layout says. */
typedef struct kp_quantize_fp8_params {
    kp_tensor x, out, scale;
    int32_t scale_layout; /* kp_fp8_scale_layout */
    int32_t scale_ue8m0;  /* 0 or 1 */
} kp_quantize_fp8_params;

KP_API kp_status kp_quantize_fp8(kp_stream *s, const kp_quantize_fp8_params *p);

/* Would this op with these params run on d? KP_OK, or KP_ERR_UNSUPPORTED (or a
 * validation error) with the reason in kp_last_error(). params points to the op's
 * params struct. Answered by the same selector that picks the kernel. Writes nothing. */
KP_API kp_status kp_op_supported(kp_device *d, kp_op op, const void *params);

/* Which kernel would this op with these params run on d? (issue 14) On KP_OK writes a
 * short stable name, NUL-terminated, into name: "<tier>:<kernel>", where tier is
 *   gen1 / gen2 / sm90   a GPU backend's kernel generation (KPORT_GPU_KERNELS) and
 *                        kernel the kernel function without its kp_ prefix, e.g.
 *                        "gen2:grouped_gemm_gen2_tiled", "gen2:grouped_gemm_gen2_rows"
 *                        (the decode kernel), "gen1:attention_decode_paged";
 *   cpu                  the cpu backend, kernel its SIMD level (KPORT_CPU_SIMD's names):
 *                        "cpu:avx512-bf16", "cpu:avx2", "cpu:neon", "cpu:portable".
 * An op that runs two main kernels for one call joins them with '+' (grouped_gemm with
 * both decode-sized and larger experts: "gen2:grouped_gemm_gen2_tiled+gen2:grouped_gemm_gen2_rows");
 * kp_moe_forward names its GEMMs' kernels. Helper kernels (split-KV combine, split-K
 * reduce) are not named. Answered by the same selector that picks the kernel, as
 * kp_op_supported is: its errors are kp_op_supported's (KP_ERR_UNSUPPORTED with the
 * reason; a backend plugin older than this call is KP_ERR_UNSUPPORTED too, saying so).
 * name NULL or cap below KP_KERNEL_NAME_MAX is KP_ERR_INVALID_ARGUMENT. Writes nothing
 * (name included) unless it returns KP_OK. C callers use the macro kp_op_kernel(d, op,
 * p, name, cap) below; the size argument is as kp_op_supported_sized's. */
#define KP_KERNEL_NAME_MAX 128
KP_API kp_status kp_op_kernel_sized(kp_device *d, kp_op op, const void *params, size_t size, char *name, size_t cap);

/* ---- serving: graph capture and stream dependencies (issue 17) ---- */

/* Graph-capture rule: no op allocates, frees or synchronises on its stream once the
 * stream's scratch is reserved. Split-KV decode and split-K GEMM partials live in a
 * per-stream scratch; kp_moe_forward uses the caller's workspace.
 *  - On a wrapped stream (kp_stream_wrap) an op never grows the scratch: when it needs
 *    more than the reservation it fails with KP_ERR_OUT_OF_MEMORY, naming the bytes
 *    to reserve, before anything is enqueued or written.
 *  - On a stream kport created, an op grows the scratch when short (waiting for that
 *    stream first); after kp_stream_reserve of enough bytes it never does.
 * kp_stream_reserve makes the scratch hold at least bytes of partials (and their
 * log-sum-exps beside them); call it before capture. Replacing a smaller reservation
 * frees the old one after s's pending work (stream-ordered where the driver can; else
 * it waits); reserving no more than is held returns at once. A no-op on cpu.
 * The scratch belongs to s (a wrapper included): keep s alive while graphs captured
 * through it are replayed. */
KP_API kp_status kp_stream_reserve(kp_stream *s, size_t bytes);
/* Makes work queued on s after this call wait until e's mark has completed, without
 * blocking the host (cuStreamWaitEvent, hipStreamWaitEvent, an OpenCL marker wait).
 * e and s on the same device; an event never recorded marks nothing: KP_OK. */
KP_API kp_status kp_stream_wait_event(kp_stream *s, kp_event *e);

/* ---- a growable ABI (issue 17) ----
 * Params structs only ever grow at their end. A program tells the library the size of
 * each params struct it was compiled with: in C, kp_attention_prefill(s, p) ... and
 * kp_op_supported(d, op, p) below are macros that pass sizeof *(p) to the _sized
 * functions. The library reads that many bytes and takes every later field as zero, so
 * a binary built against an older kport.h runs on a newer library unchanged. The plain
 * functions stay exported for binaries built against 0.1 (which passed no size): they
 * read 0.1's sizes, as does a size of 0. kp_op_supported's macro takes the size from op
 * (kp_op_params_size, as this header defines the struct), so p may be a void pointer.
 * A size below 0.1's is KP_ERR_INVALID_ARGUMENT; one above this library's, with a
 * non-zero byte past the fields it knows, KP_ERR_UNSUPPORTED (a newer caller asks for
 * something this library cannot do). C++ callers call the _sized functions. */
KP_API kp_status kp_attention_prefill_sized(kp_stream *s, const kp_attention_prefill_params *p, size_t size);
KP_API kp_status kp_attention_decode_sized(kp_stream *s, const kp_attention_decode_params *p, size_t size);
KP_API kp_status kp_mla_decode_sized(kp_stream *s, const kp_mla_decode_params *p, size_t size);
KP_API kp_status kp_moe_gate_sized(kp_stream *s, const kp_moe_gate_params *p, size_t size);
KP_API kp_status kp_moe_align_sized(kp_stream *s, const kp_moe_align_params *p, size_t size);
KP_API kp_status kp_grouped_gemm_sized(kp_stream *s, const kp_grouped_gemm_params *p, size_t size);
KP_API kp_status kp_moe_combine_sized(kp_stream *s, const kp_moe_combine_params *p, size_t size);
KP_API kp_status kp_moe_forward_sized(kp_stream *s, const kp_moe_forward_params *p, size_t size);
KP_API kp_status kp_kv_cache_store_sized(kp_stream *s, const kp_kv_cache_store_params *p, size_t size);
KP_API kp_status kp_quantize_fp8_sized(kp_stream *s, const kp_quantize_fp8_params *p, size_t size);
KP_API kp_status kp_op_supported_sized(kp_device *d, kp_op op, const void *params, size_t size);
/* kp_init and kp_moe_forward_workspace_size are sized the same way: kp_init(opt) passes
 * sizeof(kp_init_options) (opt may be NULL), kp_moe_forward_workspace_size(d, p, bytes)
 * passes sizeof *(p); the plain functions read 0.1's sizes. */
KP_API kp_status kp_init_sized(const kp_init_options *opt, size_t size);
KP_API kp_status kp_moe_forward_workspace_size_sized(kp_device *d, const kp_moe_forward_params *p, size_t size,
                                                     size_t *bytes);

/* sizeof op's params struct as the caller's kport.h defines it (0: an unknown op). */
static inline size_t kp_op_params_size(kp_op op) {
    switch (op) {
    case KP_OP_ATTENTION_PREFILL: return sizeof(kp_attention_prefill_params);
    case KP_OP_ATTENTION_DECODE: return sizeof(kp_attention_decode_params);
    case KP_OP_MLA_DECODE: return sizeof(kp_mla_decode_params);
    case KP_OP_MOE_GATE: return sizeof(kp_moe_gate_params);
    case KP_OP_MOE_ALIGN: return sizeof(kp_moe_align_params);
    case KP_OP_GROUPED_GEMM: return sizeof(kp_grouped_gemm_params);
    case KP_OP_MOE_COMBINE: return sizeof(kp_moe_combine_params);
    case KP_OP_MOE_FORWARD: return sizeof(kp_moe_forward_params);
    case KP_OP_KV_CACHE_STORE: return sizeof(kp_kv_cache_store_params);
    case KP_OP_QUANTIZE_FP8: return sizeof(kp_quantize_fp8_params);
    default: return 0;
    }
}

#if !defined(__cplusplus) && !defined(KP_NO_SIZED_CALLS)
#define kp_attention_prefill(s, p) kp_attention_prefill_sized((s), (p), sizeof *(p))
#define kp_attention_decode(s, p) kp_attention_decode_sized((s), (p), sizeof *(p))
#define kp_mla_decode(s, p) kp_mla_decode_sized((s), (p), sizeof *(p))
#define kp_moe_gate(s, p) kp_moe_gate_sized((s), (p), sizeof *(p))
#define kp_moe_align(s, p) kp_moe_align_sized((s), (p), sizeof *(p))
#define kp_grouped_gemm(s, p) kp_grouped_gemm_sized((s), (p), sizeof *(p))
#define kp_moe_combine(s, p) kp_moe_combine_sized((s), (p), sizeof *(p))
#define kp_moe_forward(s, p) kp_moe_forward_sized((s), (p), sizeof *(p))
#define kp_kv_cache_store(s, p) kp_kv_cache_store_sized((s), (p), sizeof *(p))
#define kp_quantize_fp8(s, p) kp_quantize_fp8_sized((s), (p), sizeof *(p))
#define kp_op_supported(d, op, p) kp_op_supported_sized((d), (op), (p), kp_op_params_size(op))
#define kp_op_kernel(d, op, p, name, cap) kp_op_kernel_sized((d), (op), (p), kp_op_params_size(op), (name), (cap))
#define kp_init(opt) kp_init_sized((opt), sizeof(kp_init_options))
#define kp_moe_forward_workspace_size(d, p, bytes) \
    kp_moe_forward_workspace_size_sized((d), (p), sizeof *(p), (bytes))
#endif

/* ------------------------------------------------------------------------ */
/* Expert parallelism: MoE dispatch and combine over the caller's communicator */
/* ------------------------------------------------------------------------ */

/* Each rank holds a contiguous range of the experts; ranks in order tile [0, num_experts).
 * kp_ep_dispatch sends every (token, slot) pair's row of x to the rank that holds its
 * expert; kp_ep_combine brings each expert output home and sums a token's outputs with
 * their weights in slot order, with kp_moe_combine on the caller's device: the same bits
 * as kp_moe_combine on one rank given the same expert outputs. Both are collective: every
 * rank of the communicator calls them, in the same order. Their tensors are buffer
 * tensors (an address tensor is KP_ERR_UNSUPPORTED).
 * kport never creates or frees the caller's communicator and links no communication
 * library: the MPI transport is the
 * plugin libkport-ep-mpi.so, found like the backend plugins; a missing plugin or library
 * makes kp_ep_create KP_ERR_UNAVAILABLE with the reason. Over MPI, data is staged through
 * host memory (works for every backend); over NCCL/RCCL the rows stay in device memory
 * (backends with device addresses: cpu, cuda, hip; the host reads back only counts and
 * the sorted order, once per dispatch; kp_ep_dispatch_async below reads nothing;
 * README "Expert parallelism"). A rank that fails a
 * call or never joins makes the others fail with KP_ERR_BACKEND ("timed out") within
 * timeout_ms; the handle is then unusable and may only be destroyed. */
typedef struct kp_ep kp_ep;

typedef enum kp_ep_comm_kind {
    KP_EP_COMM_MPI = 0,  /* comm: the address of an MPI_Comm (MPI initialised by the caller) */
    KP_EP_COMM_NCCL = 1, /* comm: the address of an ncclComm_t; libkport-ep-nccl.so dlopens libnccl.so.2 */
    KP_EP_COMM_RCCL = 2  /* comm: the address of an RCCL ncclComm_t; libkport-ep-rccl.so, librccl.so.1.
                            NCCL/RCCL: backends with device addresses (cpu, cuda, hip; OpenCL:
                            KP_ERR_UNSUPPORTED), num_experts <= 4096 off the cpu backend */
} kp_ep_comm_kind;

typedef enum kp_ep_mode {
    KP_EP_MODE_NORMAL = 0,  /* exchange counts, then all-to-all-v: nothing dropped */
    KP_EP_MODE_CAPACITY = 1 /* at most capacity_per_rank rows to each rank (MPI: fixed blocks,
                               no count exchange); per destination rank, the pairs in (expert,
                               token, slot) order past the capacity are dropped and reported */
} kp_ep_mode;

#define KP_EP_TIMEOUT_DEFAULT_MS 30000

typedef struct kp_ep_options {
    kp_ep_comm_kind comm_kind;
    const void *comm;            /* the caller's communicator (see kp_ep_comm_kind) */
    int32_t num_experts;         /* 1..65536, the same on every rank */
    int32_t expert_begin;        /* this rank's experts [expert_begin, expert_end); may be empty */
    int32_t expert_end;
    int32_t hidden;              /* row length of x and of the expert outputs, >= 1 */
    kp_dtype dtype;              /* of x, the received rows and the expert outputs: f32/f16/bf16 */
    int32_t topk;                /* the most slots per token, 1..32 */
    int32_t max_tokens_per_rank; /* the most tokens any rank dispatches at once, >= 1 */
    kp_ep_mode mode;
    int32_t capacity_per_rank;   /* KP_EP_MODE_CAPACITY: rows one rank may send to another, >= 1 */
    int32_t timeout_ms;          /* bound on every collective; 0 = KP_EP_TIMEOUT_DEFAULT_MS */
} kp_ep_options;

typedef struct kp_ep_info {
    int32_t rank, world;
    int32_t local_experts;  /* expert_end - expert_begin */
    int64_t max_recv_rows;  /* rows recv_x must hold: world * max_tokens_per_rank * topk
                               (normal) or world * capacity_per_rank (capacity) */
} kp_ep_info;

/* x [T, hidden] (T <= max_tokens_per_rank, may be 0), dtype of the options; topk_ids
 * int32 [T, k], k <= topk, global expert ids; recv_x [>= max_recv_rows, hidden]: the rows
 * routed to this rank, grouped by local expert (ascending), within one expert by source
 * rank, token and slot; expert_offsets int32 [local_experts + 1]: each local expert's
 * first row, ready for kp_grouped_gemm. Rows past the received ones are left untouched.
 * All tensors contiguous, on the handle's device. */
typedef struct kp_ep_dispatch_params {
    kp_tensor x, topk_ids, recv_x, expert_offsets;
} kp_ep_dispatch_params;

typedef struct kp_ep_dispatch_result {
    int64_t recv_rows;   /* rows written to recv_x (= expert_offsets[local_experts]) */
    int64_t dropped;     /* capacity mode: this rank's pairs not sent (over capacity) */
    int64_t dropped_all; /* the same summed over every rank (equal on every rank) */
} kp_ep_dispatch_result;

/* expert_out [>= recv_rows, hidden] in recv_x's row order (the output of the experts on
 * the received rows); topk_weights f32 [T, k] of the dispatched tokens; out [T, hidden]. */
typedef struct kp_ep_combine_params {
    kp_tensor expert_out, topk_weights, out;
} kp_ep_combine_params;

/* Collective. Checks that every rank passed the same num_experts, hidden, dtype, topk,
 * max_tokens_per_rank, mode and capacity, and that the expert ranges tile the experts in
 * rank order: a mismatch is KP_ERR_INVALID_ARGUMENT on every rank, naming it. */
KP_API kp_status kp_ep_create(kp_device *d, const kp_ep_options *opt, kp_ep **out);
KP_API kp_status kp_ep_get_info(const kp_ep *ep, kp_ep_info *out);
/* Blocking and collective. Capacity mode with pairs over the capacity on
 * any rank: the exchange completes without them, r says how many, and every rank returns
 * KP_ERR_OUT_OF_BOUNDS; the outputs are valid and combine counts the dropped pairs as
 * zero. s may be NULL (the device's synchronous stream). */
KP_API kp_status kp_ep_dispatch(kp_ep *ep, kp_stream *s, const kp_ep_dispatch_params *p,
                                kp_ep_dispatch_result *r);
/* The inverse of the last dispatch; collective. out is written by kp_moe_combine on s
 * (not NULL); the exchange is synchronous (host-staged, or polled on s). */
KP_API kp_status kp_ep_combine(kp_ep *ep, kp_stream *s, const kp_ep_combine_params *p);
/* Capacity mode with no host sync, so the layer can be captured in a graph (issue 19):
 * kp_ep_dispatch's result (the same recv_x rows, expert_offsets and drop rule), but
 * everything is enqueued on s (not NULL, the handle's device): no host read, write or
 * wait (kp_host_sync_count does not move). Each rank sends every other exactly
 * capacity_per_rank rows (padded) and a small header of counts, so every size is fixed;
 * expert_offsets is written on the device, ready for kp_grouped_gemm on recv_x's
 * max_recv_rows rows (rows outside the experts are left untouched). The result struct
 * is not filled (it needs a host read): dropped, optional int32 [2] on the device,
 * receives {this rank's dropped pairs, dropped_all} on s; nothing is an error: overflow
 * is reported there only, and combine counts the dropped pairs as zero. The kp_ep_combine
 * that follows runs with no host sync too, with expert_out [>= max_recv_rows, hidden].
 * Collective. Needs capacity mode, an NCCL/RCCL communicator and a backend with the
 * capacity kernels (cpu, cuda, hip; a plugin built before them is KP_ERR_UNSUPPORTED, use
 * kp_ep_dispatch); on cpu the communicator must be blocking (ncclGroupEnd completes the
 * exchange). A rank that fails or never joins is found by kp_ep_wait (or the next
 * kp_ep_dispatch, which calls it): KP_ERR_BACKEND within timeout_ms, never a hang. */
KP_API kp_status kp_ep_dispatch_async(kp_ep *ep, kp_stream *s, const kp_ep_dispatch_params *p,
                                      const kp_tensor *dropped);
/* Blocks, up to timeout_ms, until the exchanges kp_ep_dispatch_async / kp_ep_combine
 * enqueued on s have completed; KP_ERR_BACKEND (and the handle unusable) when a rank
 * failed or timed out. KP_OK at once when nothing is pending. Local. */
KP_API kp_status kp_ep_wait(kp_ep *ep, kp_stream *s);
/* Local (not collective); after a timeout waits up to timeout_ms for the pending exchange. */
KP_API kp_status kp_ep_destroy(kp_ep *ep);

/* The whole EP layer in one call (collective, blocking like kp_ep_dispatch):
 *   gate (kp_moe_gate with routing, on this rank's T tokens, over all num_experts)
 *   -> kp_ep_dispatch -> this rank's experts on the rows it received (x·w13ᵀ -> SwiGLU
 *   -> ·w2ᵀ, each expert output rounded once to x's dtype, as kp_moe_forward does)
 *   -> kp_ep_combine (slot order, f32) + the shared expert on the local tokens, added last.
 * x [T, hidden] (T <= max_tokens_per_rank, may be 0; dtype and hidden of the handle);
 * router_logits [T, num_experts]; bias optional f32 [num_experts]; w13 [local_experts,
 * 2*inter, hidden], w2 [local_experts, hidden, inter] (and their FP8 block scales): this
 * rank's experts [expert_begin, expert_end), local_experts >= 1; shared_w13 / shared_w2
 * optional as in kp_moe_forward; out [T, hidden]; routing.topk <= the handle's topk.
 * workspace: kp_moe_forward_ep_workspace_size bytes of a buffer on the handle's device
 * from workspace_offset on, overlapping no tensor argument. Every tensor is a buffer
 * tensor (address tensors: KP_ERR_UNSUPPORTED).
 * Result: kp_moe_forward on one rank holding every expert, given the same x,
 * router_logits, bias, weights and routing, up to f32 summation order: the same gate,
 * the same GEMMs with SwiGLU fused, the same roundings (each expert output once to x's
 * dtype), the same slot-order combine. Not bit for bit, because a GEMM's summation
 * order may depend on how many rows an expert gets in one call (the CPU backend takes
 * a dot-product path for a few rows, tiles for more), and each expert gets other row
 * counts here than on one rank; an expert output element may then round the other way
 * (tests/ep: 2 ulps of the element plus 2^-20 (f32) or 2^-6 (bf16) of its row's
 * largest value). With a shared expert in bf16/f16, its output is rounded to x's dtype
 * before it is added (kp_moe_forward adds it in f32): up to 1 ulp of it more.
 * Capacity mode: pairs over the capacity count as zero, r reports them and every rank
 * returns KP_ERR_OUT_OF_BOUNDS with out written. r may be NULL. Bad arguments are found
 * before anything is exchanged or written; a rank that fails makes the others fail with
 * KP_ERR_BACKEND within timeout_ms (kp_ep_dispatch's rules). */
typedef struct kp_moe_forward_ep_params {
    kp_tensor x, router_logits, bias;
    kp_tensor w13, w13_scale, w2, w2_scale; /* this rank's experts only */
    kp_tensor shared_w13, shared_w2;
    kp_tensor out;
    kp_buffer *workspace;
    size_t workspace_offset;
    kp_moe_routing routing;
} kp_moe_forward_ep_params;

/* Sized like kp_moe_forward (the struct only grows at its end): in C, the macros below
 * pass sizeof *(p); the plain functions read this version's struct. */
KP_API kp_status kp_moe_forward_ep_sized(kp_ep *ep, kp_stream *s, const kp_moe_forward_ep_params *p, size_t size,
                                         kp_ep_dispatch_result *r);
/* Bytes of workspace for these shapes on this handle (its world, mode and capacity);
 * the workspace fields of p are ignored. Overflow: KP_ERR_INVALID_SHAPE. Local. */
KP_API kp_status kp_moe_forward_ep_workspace_size_sized(kp_ep *ep, const kp_moe_forward_ep_params *p, size_t size,
                                                        size_t *bytes);
KP_API kp_status kp_moe_forward_ep(kp_ep *ep, kp_stream *s, const kp_moe_forward_ep_params *p,
                                   kp_ep_dispatch_result *r);
KP_API kp_status kp_moe_forward_ep_workspace_size(kp_ep *ep, const kp_moe_forward_ep_params *p, size_t *bytes);
/* kp_moe_forward_ep with no host read, write or wait (kp_host_sync_count does not move),
 * so a server can capture the layer in a graph (issue 19): the same params and layer,
 * every step enqueued on s (not NULL), sized from capacity_per_rank alone. The gate,
 * kp_ep_dispatch_async, the experts (one-hot router logits made on the device by a
 * kp_grouped_gemm over the device's expert_offsets, then kp_moe_forward's GEMMs on all
 * max_recv_rows rows: the rows past the received ones are computed and never used), the
 * combine's return exchange and the slot-order sum. Needs what kp_ep_dispatch_async
 * needs (capacity mode, NCCL/RCCL, a backend with the capacity kernels: else
 * KP_ERR_UNSUPPORTED, saying why; kp_moe_forward_ep takes every handle) and at most 512
 * local experts. Workspace: kp_moe_forward_ep_workspace_size covers both calls.
 * Result: kp_moe_forward_ep's, within its tolerance (tests/ep/test_ep_forward_async.c),
 * except that with a shared expert in bf16/f16 the routed sum is rounded once to x's
 * dtype before the shared row is added (one more rounding; f32: the same bits as one
 * sum). Overflow is not an error: dropped, optional int32 [2] on the device, receives
 * {this rank's dropped pairs, dropped_all} on s, and the dropped pairs count as zero.
 * A rank that fails or never joins is found by kp_ep_wait: KP_ERR_BACKEND within
 * timeout_ms. Collective; bad arguments are found before anything is written or sent. */
KP_API kp_status kp_moe_forward_ep_async_sized(kp_ep *ep, kp_stream *s, const kp_moe_forward_ep_params *p,
                                               size_t size, const kp_tensor *dropped);
KP_API kp_status kp_moe_forward_ep_async(kp_ep *ep, kp_stream *s, const kp_moe_forward_ep_params *p,
                                         const kp_tensor *dropped);
#if !defined(__cplusplus) && !defined(KP_NO_SIZED_CALLS)
#define kp_moe_forward_ep_async(ep, s, p, dropped) kp_moe_forward_ep_async_sized((ep), (s), (p), sizeof *(p), (dropped))
#define kp_moe_forward_ep(ep, s, p, r) kp_moe_forward_ep_sized((ep), (s), (p), sizeof *(p), (r))
#define kp_moe_forward_ep_workspace_size(ep, p, bytes) \
    kp_moe_forward_ep_workspace_size_sized((ep), (p), sizeof *(p), (bytes))
#endif

#ifdef __cplusplus
}
#endif
#endif /* KPORT_H */
