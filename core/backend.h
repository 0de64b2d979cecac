/*
 * core/backend.h — the versioned interface between the kport core and a backend.
 *
 * A backend is one kp_backend_iface. The CPU backend is linked into libkport; every
 * other backend is a plugin (libkport-<name>.so) exporting one entry function:
 *
 *     const kp_backend_iface *kport_backend_entry(uint32_t core_abi_version);
 *
 * The core passes the highest ABI version it understands and refuses an iface whose
 * abi_version differs, printing both numbers. No slot may be NULL: a backend that
 * lacks an op points the slot at a function returning KP_ERR_UNSUPPORTED (see
 * kp_backend_unsupported_op below).
 *
 * Ownership: the core owns kp_device/kp_stream/kp_buffer (defined here so a backend
 * can read its own impl pointers back out of op params); each holds the backend's
 * opaque impl, created and destroyed through the vtable.
 */
#ifndef KPORT_CORE_BACKEND_H
#define KPORT_CORE_BACKEND_H

#include "kport.h"
#include <stdarg.h>
#include <stddef.h>

/* Bump on any change to the structs below or to what an op's params ask of a backend
 * (2: events, 3: reserve, wait, kv_cache_store, quantize_fp8, FP8 KV caches,
 * 4: tuning_generation, 5: buffer_address, event_query, 6: grouped GEMM's masked layout,
 * which an older plugin would run as if expert_offsets were absent), except an optional
 * slot appended after event_query (see there: op_kernel, ep_capacity), which older
 * plugins simply lack. */
#define KP_BACKEND_ABI_NUMBER 6
#define KP_BACKEND_ABI_VERSION ((uint32_t)KP_BACKEND_ABI_NUMBER)
#define KP_BACKEND_ENTRY_SYMBOL "kport_backend_entry"

typedef struct kp_backend_iface kp_backend_iface;
struct kp_ep_capacity_args; /* below the iface: core/ep_capacity.c's steps */

/* Services the core lends a backend at init; valid until shutdown. */
typedef struct kp_host_services {
    uint32_t abi_version;
    /* Records a message for kp_last_error() on this thread and returns st. */
    kp_status (*set_error)(kp_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
    /* Prepends context to the current message ("while building attention_prefill: ..."). */
    kp_status (*add_context)(kp_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
    /* Debug log, printed when KPORT_LOG=1. */
    void (*log)(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
    /* The kernel-binary cache dir (KPORT_CACHE_DIR or $XDG_CACHE_HOME/kport or
     * ~/.cache/kport), created with mode 0700; NULL if none could be made. */
    const char *(*cache_dir)(void);
    /* Looks up a tuning value (see core/tuning.h); returns def when none is set. */
    int64_t (*tuning_get)(const kp_device_info *dev, const char *kernel, const char *param,
                          int64_t def);
    /* Changes whenever the tuning table may have (a reread of the user file): what a
     * backend derived from tuning_get under another generation is stale. */
    uint64_t (*tuning_generation)(void);
} kp_host_services;

/* Opaque backend-side objects. */
typedef struct kp_backend_state kp_backend_state;


#define KP_STREAM_WRAPPED 0x1u

struct kp_stream {
    kp_device *device; /* borrowed */
    void *impl;        /* owned through iface->stream_destroy (wrapped: only the wrapper) */
    uint32_t flags;
};

/* kp_event: impl is the backend's; stream is where it was last recorded (NULL: never). */
struct kp_event {
    kp_device *device; /* borrowed */
    void *impl;        /* owned through iface->event_destroy */
    kp_stream *stream; /* borrowed; only compared, never dereferenced after record */
};

#define KP_BUFFER_WRAPPED 0x1u
/* The device's address space (kp_device_memory): impl is NULL, size SIZE_MAX, and a
 * tensor's offset is the device address itself (never 0). Only devices with
 * KP_CAP_DEVICE_ADDRESSES have one; their backends read such a tensor's memory at
 * (uintptr_t)offset: cpu_tensor_data, kp_gpu_arg_tensor / kp_gpu_elem_offset. */
#define KP_BUFFER_ADDRESS_SPACE 0x2u

struct kp_buffer {
    kp_device *device; /* borrowed */
    void *impl;        /* owned through iface->buffer_free (wrapped: only the wrapper) */
    size_t size;
    uint32_t flags;
};

static inline int kp_buffer_is_address_space(const kp_buffer *b) {
    return b && (b->flags & KP_BUFFER_ADDRESS_SPACE);
}

struct kp_device {
    const kp_backend_iface *iface; /* borrowed */
    kp_backend_state *backend;     /* borrowed */
    void *impl;                    /* owned through iface->device_close */
    kp_device_info info;
    int global_index;
    struct kp_stream *default_stream; /* for NULL-stream copies; owned */
    struct kp_buffer memory;          /* kp_device_memory: the address-space pseudo-buffer */
};

/* Ops reach a backend after the core validated every argument (shapes, dtypes,
 * bounds, devices, aliasing). dry_run != 0: answer "supported?" with the same
 * selector that would pick the kernel, launch nothing, write nothing. A backend
 * without an op points its slot at a stub that reports KP_ERR_UNSUPPORTED naming op
 * and backend (kp_backend_op_name below gives the op's name without linking libkport). */
typedef kp_status (*kp_op_fn)(kp_op op, kp_stream *s, const void *params, int dry_run);

/* kp_moe_forward reaches a backend with workspace_offset a multiple of this (the core
 * rounds the caller's offset up; the reported workspace size has room for that), so
 * every region of the workspace layout is aligned for any element type. */
#define KP_MOE_WORKSPACE_ALIGN 256

struct kp_backend_iface {
    /* header: stable across ABI versions */
    uint32_t abi_version;
    uint32_t struct_size;
    const char *name;        /* "cuda" */
    const char *description; /* "NVIDIA CUDA driver API (libcuda.so.1, dlopen'd)" */
    const void *reserved[4];  /* zero */

    /* Returns KP_OK and the state when the vendor runtime was found (even with zero
     * devices); otherwise an error, with the reason written into reason. */
    kp_status (*init)(const kp_host_services *host, const kp_init_options *opt,
                      kp_backend_state **out, char *reason, size_t reason_len);
    void (*shutdown)(kp_backend_state *b);
    int (*device_count)(kp_backend_state *b);
    kp_status (*device_info)(kp_backend_state *b, int index, kp_device_info *out);
    kp_status (*device_open)(kp_backend_state *b, int index, void **out_impl);
    void (*device_close)(void *dev_impl);

    /* The native handles behind an open device (kp_device_get_native). */
    kp_status (*device_native)(kp_device *d, kp_native_device *out);

    kp_status (*stream_create)(kp_device *d, void **out_impl);
    /* Adopts a server's native queue; stream_destroy of a KP_STREAM_WRAPPED stream
     * frees only kport's wrapper. */
    kp_status (*stream_wrap)(kp_device *d, void *native, void **out_impl);
    kp_status (*stream_native)(kp_stream *s, void **out);
    kp_status (*stream_sync)(kp_stream *s);
    void (*stream_destroy)(kp_stream *s);

    kp_status (*buffer_alloc)(kp_device *d, size_t bytes, void **out_impl);
    kp_status (*buffer_wrap)(kp_device *d, void *native, size_t bytes, void **out_impl);
    void (*buffer_free)(kp_buffer *b);
    /* Blocking; s is never NULL here (the core substitutes the default stream). */
    kp_status (*buffer_write)(kp_stream *s, kp_buffer *dst, size_t off, const void *src, size_t n);
    kp_status (*buffer_read)(kp_stream *s, const kp_buffer *src, size_t off, void *dst, size_t n);
    kp_status (*buffer_copy)(kp_stream *s, kp_buffer *dst, size_t dst_off, const kp_buffer *src,
                             size_t src_off, size_t n);

    /* Events (kp_event_*): the core checks devices and that both ends were recorded;
     * event_elapsed waits for end itself. */
    kp_status (*event_create)(kp_device *d, void **out_impl);
    kp_status (*event_record)(kp_event *e, kp_stream *s);
    kp_status (*event_sync)(kp_event *e);
    kp_status (*event_elapsed)(kp_event *start, kp_event *end, float *ms);
    void (*event_destroy)(kp_event *e);
    /* kp_stream_reserve: at least bytes of per-stream scratch, allocated now (see kport.h
     * for the graph-capture rule); backends without stream scratch answer KP_OK. */
    kp_status (*stream_reserve)(kp_stream *s, size_t bytes);
    /* kp_stream_wait_event: the core checks devices and that e was recorded. */
    kp_status (*stream_wait_event)(kp_stream *s, kp_event *e);
    /* The DLPack device type whose pointers this backend can wrap (kDLCUDA = 2, ...). */
    int dlpack_device_type;

    /* One slot per kp_op, indexed by kp_op. */
    kp_op_fn ops[KP_OP_COUNT];

    /* 5: what expert parallelism on device buffers needs (core/ep_device.c); NULL in a
     * backend without device addresses (OpenCL). buffer_address: the device address of
     * byte 0 of b (CUdeviceptr, hipDeviceptr_t; the host pointer on cpu). event_query:
     * *done = 1 when the work recorded before e has run, 0 when not yet (never waits). */
    kp_status (*buffer_address)(const kp_buffer *b, uintptr_t *out);
    kp_status (*event_query)(kp_event *e, int *done);

    /* ---- optional slots: appended after event_query without an ABI bump. The core reads one
     * only when struct_size covers it (kp_backend_has_slot) and it is not NULL, so a
     * plugin built before the slot existed still loads; the call it serves then
     * reports KP_ERR_UNSUPPORTED, saying the plugin predates it. ---- */

    /* kp_op_kernel (issue 14): params validated by the core, as for ops[op] with
     * dry_run; the same selector answers, launching nothing. On KP_OK name (cap bytes,
     * KP_KERNEL_NAME_MAX) holds "<tier>:<kernel>" (kport.h). */
    kp_status (*op_kernel)(kp_op op, kp_stream *s, const void *params, char *name, size_t cap);

    /* Expert parallelism's capacity mode without host syncs (core/ep_capacity.c,
     * kp_ep_dispatch_async): one integer-planning or row-gather step, enqueued on s (see
     * kp_ep_capacity_args). NULL: kp_ep_dispatch_async is KP_ERR_UNSUPPORTED there. */
    kp_status (*ep_capacity)(kp_stream *s, const struct kp_ep_capacity_args *a);
};

/* The steps of the ep_capacity slot. Buffers are the backend's own, at byte offsets; every
 * index is clamped by the kernel (an out-of-range one moves nothing), so corrupt input
 * never reads or writes out of bounds. C = capacity, W = world, HW = header_ints.
 *  PLAN_SEND  in[0] sorted int32 [pairs] and in[1] offsets int32 [E+1] (kp_moe_align's,
 *             block_size 1; ignored when pairs = 0), in[2] range int32 [W+1] (rank d holds
 *             experts [range[d], range[d+1])). Per destination d, the first min(n_d, C) of
 *             its pairs in sorted order are sent: out[0] send_idx int32 [W*C] (x's row of
 *             send row d*C+i, or -1), out[1] send_pos int32 [pairs] (each pair's send row,
 *             W*C when dropped), out[2] header int32 [W*HW] (to d: [0] rows sent, [1] this
 *             rank's dropped pairs, [2+le] rows of d's local expert le, zero past d's
 *             experts), out[3] int32 [1] this rank's dropped pairs.
 *  PLAN_RECV  in[0] the headers received, int32 [W*HW] (from source src at src*HW).
 *             Rows grouped by local expert, then source, then the source's order:
 *             out[0] expert_offsets int32 [local_experts+1], out[1] recv_map int32 [W*C]
 *             (the grouped row of received row src*C+i, or -1), out[2] grouped_src int32
 *             [W*C] (the received row of grouped row r, or -1 past the rows), out[3]
 *             int32 [1] dropped_all (the sum of header [1] over the sources, saturated).
 *             A corrupt header moves nothing out of bounds: rows sent is clamped to
 *             [0, C], a negative count is 0, and the running sum stops at rows sent.
 *  GATHER     out[0] row i (row_bytes each) <- in[0] row idx[i] for i < rows, idx = in[1]
 *             int32 [rows]; idx outside [0, src_rows): row i left untouched. Bytes only. */
enum { KP_EP_CAPACITY_PLAN_SEND = 0, KP_EP_CAPACITY_PLAN_RECV = 1, KP_EP_CAPACITY_GATHER = 2 };
typedef struct kp_ep_capacity_args {
    int32_t step;
    int32_t world, capacity, topk, header_ints, local_experts;
    int64_t pairs, rows, src_rows;
    size_t row_bytes;
    const kp_buffer *in[3];
    size_t in_off[3];
    kp_buffer *out[4];
    size_t out_off[4];
} kp_ep_capacity_args;

/* Does f's struct reach the optional slot at byte offset off (offsetof) and set it? */
#define kp_backend_has_slot(f, slot)                                                      \
    ((f)->struct_size >= offsetof(kp_backend_iface, slot) + sizeof((f)->slot) && (f)->slot != NULL)
/* The size of the iface before its optional slots: what every plugin's struct_size
 * must reach. */
#define KP_BACKEND_IFACE_MIN_SIZE offsetof(kp_backend_iface, op_kernel)

static inline const char *kp_backend_op_name(kp_op op) {
    switch (op) {
    case KP_OP_ATTENTION_PREFILL: return "attention_prefill";
    case KP_OP_ATTENTION_DECODE: return "attention_decode";
    case KP_OP_MLA_DECODE: return "mla_decode";
    case KP_OP_MOE_GATE: return "moe_gate";
    case KP_OP_MOE_ALIGN: return "moe_align";
    case KP_OP_GROUPED_GEMM: return "grouped_gemm";
    case KP_OP_MOE_COMBINE: return "moe_combine";
    case KP_OP_MOE_FORWARD: return "moe_forward";
    case KP_OP_KV_CACHE_STORE: return "kv_cache_store";
    case KP_OP_QUANTIZE_FP8: return "quantize_fp8";
    case KP_OP_COUNT: break;
    }
    return "invalid";
}

/* kp_dtype_size without linking libkport (plugins must not: see kp_backend_op_name). */
static inline size_t kp_backend_dtype_size(kp_dtype t) {
    switch (t) {
    case KP_F32: return 4;
    case KP_F16: return 2;
    case KP_BF16: return 2;
    case KP_I32: return 4;
    case KP_FP8_E4M3: return 1;
    case KP_DTYPE_COUNT: break;
    }
    return 0;
}

/* The tensor arguments of an op's params struct, for rules that apply to all of them
 * (a backend's index-width limits): fills t and names, returns the count. */
#define KP_OP_MAX_TENSORS 12
static inline int kp_backend_op_tensors(kp_op op, const void *params, const kp_tensor *t[KP_OP_MAX_TENSORS],
                                        const char *names[KP_OP_MAX_TENSORS]) {
    int n = 0;
#define KP_T_(type, field) (t[n] = &((const type *)params)->field, names[n++] = #field)
    switch (op) {
    case KP_OP_ATTENTION_PREFILL:
        KP_T_(kp_attention_prefill_params, q), KP_T_(kp_attention_prefill_params, k);
        KP_T_(kp_attention_prefill_params, v), KP_T_(kp_attention_prefill_params, out);
        KP_T_(kp_attention_prefill_params, lse), KP_T_(kp_attention_prefill_params, cu_seqlens_q);
        KP_T_(kp_attention_prefill_params, cu_seqlens_k), KP_T_(kp_attention_prefill_params, block_table);
        KP_T_(kp_attention_prefill_params, seq_lens_k);
        break;
    case KP_OP_ATTENTION_DECODE:
        KP_T_(kp_attention_decode_params, q), KP_T_(kp_attention_decode_params, k_cache);
        KP_T_(kp_attention_decode_params, v_cache), KP_T_(kp_attention_decode_params, block_table);
        KP_T_(kp_attention_decode_params, seq_lens), KP_T_(kp_attention_decode_params, out);
        KP_T_(kp_attention_decode_params, lse), KP_T_(kp_attention_decode_params, k_scale);
        KP_T_(kp_attention_decode_params, v_scale);
        break;
    case KP_OP_MLA_DECODE:
        KP_T_(kp_mla_decode_params, q), KP_T_(kp_mla_decode_params, kv_cache);
        KP_T_(kp_mla_decode_params, block_table), KP_T_(kp_mla_decode_params, seq_lens);
        KP_T_(kp_mla_decode_params, out), KP_T_(kp_mla_decode_params, lse);
        KP_T_(kp_mla_decode_params, kv_scale);
        break;
    case KP_OP_MOE_GATE:
        KP_T_(kp_moe_gate_params, logits), KP_T_(kp_moe_gate_params, bias);
        KP_T_(kp_moe_gate_params, topk_ids), KP_T_(kp_moe_gate_params, topk_weights);
        break;
    case KP_OP_MOE_ALIGN:
        KP_T_(kp_moe_align_params, topk_ids), KP_T_(kp_moe_align_params, sorted_ids);
        KP_T_(kp_moe_align_params, expert_offsets), KP_T_(kp_moe_align_params, token_pos);
        break;
    case KP_OP_GROUPED_GEMM:
        KP_T_(kp_grouped_gemm_params, a), KP_T_(kp_grouped_gemm_params, w);
        KP_T_(kp_grouped_gemm_params, w_scale), KP_T_(kp_grouped_gemm_params, expert_offsets);
        KP_T_(kp_grouped_gemm_params, out), KP_T_(kp_grouped_gemm_params, a_scale);
        KP_T_(kp_grouped_gemm_params, masked_m);
        break;
    case KP_OP_MOE_COMBINE:
        KP_T_(kp_moe_combine_params, expert_out), KP_T_(kp_moe_combine_params, token_pos);
        KP_T_(kp_moe_combine_params, topk_weights), KP_T_(kp_moe_combine_params, out);
        break;
    case KP_OP_MOE_FORWARD:
        KP_T_(kp_moe_forward_params, x), KP_T_(kp_moe_forward_params, router_logits);
        KP_T_(kp_moe_forward_params, bias), KP_T_(kp_moe_forward_params, w13);
        KP_T_(kp_moe_forward_params, w13_scale), KP_T_(kp_moe_forward_params, w2);
        KP_T_(kp_moe_forward_params, w2_scale), KP_T_(kp_moe_forward_params, shared_w13);
        KP_T_(kp_moe_forward_params, shared_w2), KP_T_(kp_moe_forward_params, out);
        KP_T_(kp_moe_forward_params, shared_w13_scale), KP_T_(kp_moe_forward_params, shared_w2_scale);
        break;
    case KP_OP_KV_CACHE_STORE:
        KP_T_(kp_kv_cache_store_params, key), KP_T_(kp_kv_cache_store_params, value);
        KP_T_(kp_kv_cache_store_params, k_cache), KP_T_(kp_kv_cache_store_params, v_cache);
        KP_T_(kp_kv_cache_store_params, slot_mapping), KP_T_(kp_kv_cache_store_params, k_scale);
        KP_T_(kp_kv_cache_store_params, v_scale);
        break;
    case KP_OP_QUANTIZE_FP8:
        KP_T_(kp_quantize_fp8_params, x), KP_T_(kp_quantize_fp8_params, out), KP_T_(kp_quantize_fp8_params, scale);
        break;
    case KP_OP_COUNT: break;
    }
#undef KP_T_
    return n;
}

/* KP_OK when every extent of every present tensor argument is below 2^31; otherwise
 * KP_ERR_UNSUPPORTED naming the argument, the backend and the limit. A backend whose
 * kernels index with 32-bit integers runs this before answering "supported?". */
static inline kp_status kp_backend_check_i32_extents(const kp_host_services *h, const char *backend, kp_op op,
                                                     const void *params) {
    const kp_tensor *t[KP_OP_MAX_TENSORS];
    const char *names[KP_OP_MAX_TENSORS];
    int n = kp_backend_op_tensors(op, params, t, names);
    for (int i = 0; i < n; i++) {
        if (!t[i]->buffer) continue;
        for (int d = 0; d < t[i]->ndim && d < KP_MAX_DIMS; d++)
            if (t[i]->shape[d] > INT32_MAX)
                return h->set_error(KP_ERR_UNSUPPORTED,
                                    "%s: %s.shape[%d] is %lld; the %s backend indexes with 32-bit integers: "
                                    "every extent must be below 2^31",
                                    kp_backend_op_name(op), names[i], d, (long long)t[i]->shape[d], backend);
    }
    return KP_OK;
}

typedef const kp_backend_iface *(*kp_backend_entry_fn)(uint32_t core_abi_version);

#endif /* KPORT_CORE_BACKEND_H */
