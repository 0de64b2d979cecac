/*
 * backends/cpu/cpu_internal.h — what the CPU backend's files share.
 */
#ifndef KPORT_CPU_INTERNAL_H
#define KPORT_CPU_INTERNAL_H

#include "backend.h"
#include <pthread.h>
#include <stdbool.h>

/* ---- thread pool (cpu_threads.c) ---- */
typedef struct cpu_pool cpu_pool;
/* fn runs over [begin, end) chunks of [0, n); chunks are at least grain long. */
typedef void (*cpu_range_fn)(void *ctx, int64_t begin, int64_t end);
kp_status cpu_pool_create(int threads, cpu_pool **out);
void cpu_pool_destroy(cpu_pool *p);
int cpu_pool_threads(const cpu_pool *p);
/* Runs fn on all threads and returns when every chunk is done. One job at a time:
 * concurrent callers (several streams) take turns. */
void cpu_pool_parallel_for(cpu_pool *p, int64_t n, int64_t grain, cpu_range_fn fn, void *ctx);

/* ---- SIMD level chosen at run time (cpu_simd.c) ----
 * x86-64 from cpuid + xgetbv, aarch64 from getauxval(AT_HWCAP/AT_HWCAP2). Each
 * architecture has its own ladder of levels above portable; a level is only ever
 * compared with levels of its own ladder (cpu_simd_at_least). */
typedef enum cpu_simd_level {
    CPU_SIMD_PORTABLE = 0,
    CPU_SIMD_AVX2 = 1,        /* AVX2 + FMA + F16C */
    CPU_SIMD_AVX512 = 2,      /* AVX-512 F/BW/VL/DQ */
    CPU_SIMD_AVX512_BF16 = 3, /* + AVX512_BF16 */
    CPU_SIMD_NEON = 4,        /* aarch64 Advanced SIMD (f16 conversions are base aarch64) */
    CPU_SIMD_NEON_BF16 = 5    /* + FEAT_BF16 (bfdot) */
} cpu_simd_level;
#define CPU_SIMD_LEVELS 6

typedef struct cpu_features {
    bool avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512dq, avx512_bf16, avx512_fp16, amx;
    bool neon, neon_fp16, neon_bf16; /* aarch64: asimd, asimdhp (fp16 arithmetic), bf16 */
    cpu_simd_level best;     /* what the CPU and OS support */
    char vendor[16];
} cpu_features;

const cpu_features *cpu_detect(void);
/* The level in use: the best supported, lowered by KPORT_CPU_SIMD (a level name). */
cpu_simd_level cpu_simd_active(void);
const char *cpu_simd_name(cpu_simd_level l);
/* Does level have reach at least want? (Same ladder and as high; portable is below all.) */
bool cpu_simd_at_least(cpu_simd_level have, cpu_simd_level want);
/* The levels this build and CPU can run, lowest first (portable included); returns
 * how many were written to out (at most CPU_SIMD_LEVELS). */
int cpu_simd_supported(cpu_simd_level out[CPU_SIMD_LEVELS]);
/* f32 lanes of one vector at a level (1: portable). */
int cpu_simd_lanes(cpu_simd_level l);

/* Kernels with one implementation per SIMD level; the table for a level falls back to
 * the next lower level for anything it does not specialise. */
typedef struct cpu_kernels {
    /* Storage dtype <-> f32. bf16 stores round to nearest even; NaN stays NaN. */
    void (*bf16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    void (*f32_to_bf16)(const float *src, uint16_t *dst, int64_t n);
    void (*f16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    void (*f32_to_f16)(const float *src, uint16_t *dst, int64_t n);
} cpu_kernels;

const cpu_kernels *cpu_kernels_for(cpu_simd_level l);

/* ---- backend objects (cpu_backend.c) ---- */
struct kp_backend_state {
    const kp_host_services *host; /* borrowed */
    cpu_pool *pool;               /* owned */
    const cpu_kernels *kernels;   /* static */
    cpu_simd_level simd;
    kp_device_info info;
};

typedef struct cpu_stream {
    pthread_mutex_t lock; /* ops on one stream run in order, one at a time */
} cpu_stream;

typedef struct cpu_buffer {
    unsigned char *data; /* owned unless the kp_buffer is wrapped */
} cpu_buffer;

static inline unsigned char *cpu_buffer_data(const kp_buffer *b) {
    return ((const cpu_buffer *)b->impl)->data;
}

/* The first byte of a tensor's view: on kp_device_memory the offset is the host
 * address itself (no arithmetic on a NULL base). */
static inline unsigned char *cpu_tensor_data(const kp_tensor *t) {
    if (kp_buffer_is_address_space(t->buffer)) return (unsigned char *)(uintptr_t)t->offset;
    return cpu_buffer_data(t->buffer) + t->offset;
}

/* The host services the core lent at init. */
const kp_host_services *cpu_host(void);
/* The backend state behind a stream (the CPU backend has one device). */
static inline kp_backend_state *cpu_state(const kp_stream *s) { return s->device->backend; }

/* Every op slot: the index-width limits (cpu_limits.c), then the op's own function. */
kp_status cpu_op_run(kp_op op, kp_stream *s, const void *params, int dry_run);
/* The op_kernel slot (kp_op_kernel): "cpu:<SIMD level>" when the op runs (cpu_limits.c). */
kp_status cpu_op_kernel(kp_op op, kp_stream *s, const void *params, char *name, size_t cap);
/* The ep_capacity slot (core/backend.h): ops/cpu_ep_capacity.c. */
kp_status cpu_ep_capacity(kp_stream *s, const kp_ep_capacity_args *a);

/* ---- ops, one per file in backends/cpu/ops/ ---- */
kp_status cpu_op_attention_prefill(kp_op op, kp_stream *s, const void *params, int dry_run);
kp_status cpu_op_attention_decode(kp_op op, kp_stream *s, const void *params, int dry_run);
kp_status cpu_op_mla_decode(kp_op op, kp_stream *s, const void *params, int dry_run);
kp_status cpu_op_moe_gate(kp_op op, kp_stream *s, const void *params, int dry_run);
kp_status cpu_op_moe_align(kp_op op, kp_stream *s, const void *params, int dry_run);
kp_status cpu_op_grouped_gemm(kp_op op, kp_stream *s, const void *params, int dry_run);
kp_status cpu_op_moe_combine(kp_op op, kp_stream *s, const void *params, int dry_run);
kp_status cpu_op_moe_forward(kp_op op, kp_stream *s, const void *params, int dry_run);
kp_status cpu_op_kv_cache_store(kp_op op, kp_stream *s, const void *params, int dry_run);
kp_status cpu_op_quantize_fp8(kp_op op, kp_stream *s, const void *params, int dry_run);

#endif /* KPORT_CPU_INTERNAL_H */
