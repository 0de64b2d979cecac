/*
 * core/internal.h — what the core's files share. Not installed.
 */
#ifndef KPORT_CORE_INTERNAL_H
#define KPORT_CORE_INTERNAL_H

#include "backend.h"
#include <stdbool.h>

/* ---- errors (core/error.c) ---- */
kp_status kp_set_error(kp_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One host round trip (kp_host_sync_count, core/stream.c). */
void kp_note_host_sync(void);
kp_status kp_add_context(kp_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kp_clear_error(void);
void kp_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- registry (core/registry.c) ---- */
typedef struct kp_backend_entry {
    const kp_backend_iface *iface; /* NULL when the plugin was refused */
    kp_backend_state *state;       /* NULL when unavailable */
    void *dl_handle;               /* plugin handle; NULL for the built-in CPU backend */
    kp_backend_info info;
} kp_backend_entry;

bool kp_is_initialized(void);
const kp_host_services *kp_host(void);
/* Checks kp_init ran; sets KP_ERR_NOT_INITIALIZED otherwise. */
kp_status kp_require_init(const char *fn);
int kp_registry_backend_count(void);
kp_backend_entry *kp_registry_backend(int i);
/* Global device index -> (backend, device index in it); false if out of range. */
bool kp_registry_device(int global, kp_backend_entry **be, int *local, kp_device_info *info);
int kp_registry_device_count(void);
/* Counts live handles, so kp_shutdown can refuse while any remain. */
void kp_registry_handles_add(int delta);
/* How many are open now (tests: an import that allocates nothing leaves it unchanged). */
int kp_registry_handles_live(void);

/* ---- plugins (core/plugin.c) ---- */
/* Loads every libkport-*.so on the search path into entries (appended). */
void kp_plugins_discover(const kp_init_options *opt, kp_backend_entry **entries, int *count,
                         int *cap);
/* Loads one plugin file; fills entry->info (reason on failure). Never fatal. */
kp_status kp_plugin_load(const char *path, const kp_init_options *opt, kp_backend_entry *entry);
/* Finds a non-backend plugin file ("libkport-ep-mpi.so") on the same search path, under
 * the same trust rules; real gets its canonical path, why the reason when false. */
bool kp_plugin_find(const char *file, char *real, char *why, size_t why_n);

/* ---- the built-in CPU backend (backends/cpu) ---- */
const kp_backend_iface *kp_cpu_backend_iface(void);

/* ---- cache dir and tuning (core/cache_dir.c, core/tuning.c) ---- */
const char *kp_cache_dir(void);
int64_t kp_tuning_get(const kp_device_info *dev, const char *kernel, const char *param, int64_t def);
void kp_tuning_reset(void);
/* Bumped by every kp_tuning_reset (kp_host_services.tuning_generation). */
uint64_t kp_tuning_generation(void);
/* How often the tuning file was read: once per kp_tuning_reset, lookups never (tests). */
int kp_tuning_loads(void);

/* ---- tensors and op validation (core/tensor.c) ---- */
/* Element count of a tensor's shape. */
int64_t kp_tensor_numel(const kp_tensor *t);
/* The byte range [lo, hi) a view touches (hi == lo for an empty view). */
void kp_tensor_byte_range(const kp_tensor *t, size_t *lo, size_t *hi);

/* What an op requires of one tensor argument. */
typedef struct kp_tensor_rule {
    const char *name;      /* argument name for messages: "q" */
    const kp_tensor *t;
    bool optional;         /* absent (buffer NULL) allowed */
    bool output;
    uint32_t dtypes;       /* bit (1u << dtype) per allowed dtype */
    int ndim;              /* required rank */
    bool contiguous;       /* fully row-major contiguous (else: last dim stride 1) */
} kp_tensor_rule;

#define KP_DT(x) (1u << (x))
#define KP_DT_FLOAT (KP_DT(KP_F32) | KP_DT(KP_F16) | KP_DT(KP_BF16))

/* Checks each present tensor: dtype, rank, non-negative shape, strides, alignment,
 * buffer bounds, device == d; then that no output overlaps any other tensor.
 * Sets the error naming op and argument. */
kp_status kp_validate_tensors(const char *op, kp_device *d, const kp_tensor_rule *rules, int n);
/* Checks t's extent in dimension dim equals want. */
kp_status kp_check_dim(const char *op, const char *name, const kp_tensor *t, int dim, int64_t want,
                       const char *what);

/* t has the same dtype as ref (both present). */
kp_status kp_check_same_dtype(const char *op, const char *name, const kp_tensor *t, const char *ref_name,
                              const kp_tensor *ref);
/* softmax_scale is finite and > 0. */
kp_status kp_check_scale(const char *op, float scale);
/* Paged-KV rules shared by decode and MLA decode: q [B, s_q, h_q, *], block_table
 * [B, max_blocks], seq_lens [B], out [B, s_q, h_q, dv], lse [B, h_q, s_q]. */
kp_status kp_check_paged_kv(const char *op, const kp_tensor *q, const kp_tensor *block_table,
                            const kp_tensor *seq_lens, const kp_tensor *out, const kp_tensor *lse,
                            int64_t dv, int32_t num_splits);
/* Expert weights w [E, N, K]: a's dtype, or FP8 e4m3 with f32 block scales
 * [E, ceil(N/128), K/128] (core/ops/op_grouped_gemm.c). */
kp_status kp_check_expert_weights(const char *op, const char *wname, const kp_tensor *w,
                                  const char *sname, const kp_tensor *scale, const kp_tensor *a);
/* A decode cache in q's dtype with no scale, or FP8 e4m3 with its f32 scale [1] or
 * [num_blocks] (core/ops/op_kv_cache_store.c). */
kp_status kp_check_fp8_cache(const char *op, const char *cname, const kp_tensor *cache, const char *sname,
                             const kp_tensor *scale, const kp_tensor *q);
/* A flag is 0 or 1. */
kp_status kp_check_flag(const char *op, const char *name, int32_t v);

/* ---- the growable ABI (core/ops/op_dispatch.c, core/abi_0_1.c) ---- */
/* The caller's struct p of size bytes (0: 0.1's, v01) at this library's size cur: p
 * itself when it can be read in place, else a zero-padded copy in buf (cur bytes).
 * Smaller than v01: KP_ERR_INVALID_ARGUMENT; larger than cur with a non-zero byte past
 * cur: KP_ERR_UNSUPPORTED. fn and what name the call and the struct in messages. */
kp_status kp_abi_adopt(const char *fn, const char *what, const void *p, size_t size, size_t v01, size_t cur,
                       void *buf, const void **out);
extern const size_t kp_abi_0_1_init_options_size;
extern const size_t kp_abi_0_1_params_size[8]; /* indexed by kp_op */

/* ---- op dispatch (core/ops/op_dispatch.c) ---- */
/* Validated op -> backend slot; dry_run answers "supported?". */
kp_status kp_op_dispatch(kp_op op, kp_stream *s, kp_device *d, const void *params, int dry_run);
/* Per-op validators, one per file in core/ops/. */
typedef kp_status (*kp_op_validate_fn)(kp_device *d, const void *params);
kp_status kp_validate_attention_prefill(kp_device *d, const void *params);
kp_status kp_validate_attention_decode(kp_device *d, const void *params);
kp_status kp_validate_mla_decode(kp_device *d, const void *params);
kp_status kp_validate_moe_gate(kp_device *d, const void *params);
kp_status kp_validate_moe_align(kp_device *d, const void *params);
kp_status kp_validate_grouped_gemm(kp_device *d, const void *params);
/* The params grouped_gemm's backends see: the masked layout's 3-D a and out as 2-D
 * [E * max_m, .] views (core/ops/op_grouped_gemm.c); KP_OK or the error, with a message. */
kp_status kp_grouped_gemm_view(const kp_grouped_gemm_params *p, kp_grouped_gemm_params *view);
kp_status kp_validate_moe_combine(kp_device *d, const void *params);
kp_status kp_validate_moe_forward(kp_device *d, const void *params);
kp_status kp_validate_kv_cache_store(kp_device *d, const void *params);
kp_status kp_validate_quantize_fp8(kp_device *d, const void *params);
kp_status kp_validate_moe_routing(const char *op, const kp_moe_routing *r, int64_t num_experts);
/* Shapes and dtypes of kp_moe_forward, without the workspace. */
kp_status kp_validate_moe_forward_shapes(kp_device *d, const kp_moe_forward_params *p);
/* Bytes kp_moe_forward_workspace_size reports (layout plus alignment room); an
 * overflow is KP_ERR_INVALID_SHAPE. */
kp_status kp_moe_forward_workspace_bytes(const kp_moe_forward_params *p, size_t *bytes);
/* activation_dtype asks for FP8 activations (W8A8). */
bool kp_moe_forward_w8a8(const kp_moe_forward_params *p);
/* workspace_offset rounded up to KP_MOE_WORKSPACE_ALIGN: where the layout starts. */
size_t kp_moe_forward_workspace_start(const kp_moe_forward_params *p);

#endif /* KPORT_CORE_INTERNAL_H */
