/*
 * backends/cpu/cpu_gemm.h — the CPU backend's GEMM engine and the MoE building
 * blocks the MoE op files share (cpu_moe_gate.c, cpu_moe_align.c, cpu_moe_combine.c,
 * cpu_moe_forward.c).
 *
 * The engine computes f32 blocks C[i, j] = sum_k A[row_i, k] * W[n0 + j, k] with
 * both operands K-contiguous ("NT" GEMM, the layout of expert weights [E, N, K]).
 * It is a packed, register-blocked outer-product GEMM (cpu_gemm.c has the details
 * and the tunables): weights are packed per K block into 32-column panels,
 * converted to the compute format on the way (f16, FP8 with its block scales), the
 * A rows into contiguous K blocks, and a micro-kernel keeps an up-to 8 x 32 tile of
 * C in registers. A block of few rows (decode) streams each panel of weights
 * through the whole K before moving on, so the weights go by at memory bandwidth.
 */
#ifndef KPORT_CPU_GEMM_H
#define KPORT_CPU_GEMM_H

#include "cpu_internal.h"
#include <string.h>

#define CPU_GEMM_MC_MAX 512 /* the most rows one cpu_gemm_block call takes */

typedef enum cpu_gemm_mode {
    CPU_GEMM_F32 = 0,  /* f32 FMA; any dtype converted to f32 */
    CPU_GEMM_BF16 = 1  /* bf16 dot products (vdpbf16ps, bfdot): bf16 (or FP8 decoded
                          exactly to bf16) weights, activations in bf16 */
} cpu_gemm_mode;

/* One expert's weights: rows n of K elements. */
typedef struct cpu_gemm_w {
    kp_dtype dtype;               /* f32, f16, bf16 or FP8 e4m3 */
    const unsigned char *base;    /* element (0, 0) */
    int64_t ld;                   /* elements between consecutive rows */
    int64_t n, k;
    const float *scale;           /* FP8: element (0, 0) of [ceil(N/128), K/128] */
    int64_t scale_ld0, scale_ld1; /* FP8: strides of scale, in elements */
} cpu_gemm_w;

struct cpu_gemm_isa; /* cpu_gemm_kernels.h */

/* What stays the same over all the blocks of one GEMM. */
typedef struct cpu_gemm_plan {
    cpu_gemm_mode mode;
    cpu_simd_level simd;
    const cpu_kernels *cvt;
    const struct cpu_gemm_isa *isa; /* the level's packing routines and micro-kernels */
    kp_dtype a_dtype;  /* storage dtype of the A rows */
    int mc, nc;        /* rows and columns of one task (cpu_gemm_block's m, nc limits) */
    int kc;            /* K block (elements) */
    int decode_rows;   /* blocks of at most this many rows stream the weights per panel */
    int pf;            /* software prefetch distance along a weight row, bytes (0: none) */
    int pf_dot;        /* the dot path's prefetch: bytes along each row, -1: the next rows' same K */
    int dot_rows;      /* decode: up to this many rows take dot products off the weight rows */
} cpu_gemm_plan;

/* act: the activations' dtype (what precision the caller asked for); a_dtype: how the
 * A rows are stored (f32 intermediates of an act-dtype layer, say). The tile sizes
 * come from the tuning table of info ("grouped_gemm" kernel; NULL: the defaults). */
cpu_gemm_plan cpu_gemm_plan_make(const kp_device_info *info, kp_dtype act, kp_dtype a_dtype, kp_dtype w_dtype);

/* c[i * ldc + j] = sum_k A[i, k] * W[n0 + j, k] for i < m <= plan->mc and
 * j < nc <= plan->nc; a_rows[i] points at element 0 of row i (dtype plan->a_dtype).
 * Runs in the calling thread with its own scratch (kept per thread).
 * KP_ERR_OUT_OF_MEMORY when that scratch cannot be had. */
kp_status cpu_gemm_block(const cpu_gemm_plan *plan, const unsigned char *const *a_rows, int m,
                         const cpu_gemm_w *w, int64_t n0, int nc, float *c, int ldc);

/* W8A8 (FP8 activations, FP8 weights w with block scales): for i < m, j < nc,
 *   c[i * ldc + j] = sum over K slices kb of (sum_{k in kb} a[i, k] * W[n0 + j, k]
 *                    * w's block scale) * a_scales[i][kb * scale_step],
 * a_rows[i] the e4m3 bytes of row i (decoded exactly to bf16 for the engine, which
 * sums each 128-wide slice in f32), each slice's f32 result scaled once and added to
 * the f32 accumulator (DeepGEMM's promotion). plan: cpu_gemm_plan_make(info, KP_BF16,
 * KP_BF16, KP_FP8_E4M3). Scratch is kept per thread; KP_ERR_OUT_OF_MEMORY without it. */
kp_status cpu_gemm_block_w8a8(const cpu_gemm_plan *plan, const uint8_t *const *a_rows, const float *const *a_scales,
                              int64_t scale_step, int m, const cpu_gemm_w *w, int64_t n0, int nc, float *c, int ldc);

/* A per-thread f32 buffer of plan->mc * plan->nc elements for a block's output
 * (slot 0 or 1: two independent buffers); NULL when out of memory. */
float *cpu_gemm_out_buffer(const cpu_gemm_plan *plan, int slot);

/* silu(g) * u, n elements, in place into g. */
void cpu_gemm_swiglu(float *g, const float *u, int64_t n);

/* f32 -> a storage dtype (f32, f16, bf16), n elements. */
void cpu_store_row(const cpu_kernels *cvt, kp_dtype dt, const float *src, void *dst, int64_t n);
/* A storage dtype -> f32, n elements. */
void cpu_load_row(const cpu_kernels *cvt, kp_dtype dt, const void *src, float *dst, int64_t n);

/* Pointer to element (i, j) of a 2-D view (or (i, j, l) of a 3-D one). */
static inline unsigned char *cpu_at2(const kp_tensor *t, int64_t i, int64_t j) {
    return cpu_tensor_data(t) +
           (size_t)(i * t->strides[0] + j * t->strides[1]) * kp_dtype_size(t->dtype);
}
static inline unsigned char *cpu_at3(const kp_tensor *t, int64_t i, int64_t j, int64_t l) {
    return cpu_tensor_data(t) +
           (size_t)(i * t->strides[0] + j * t->strides[1] + l * t->strides[2]) * kp_dtype_size(t->dtype);
}

/* The expert-e slice of a weight tensor [E, N, K] (+ scales [E, N/128, K/128]). */
cpu_gemm_w cpu_gemm_expert(const kp_tensor *w, const kp_tensor *scale, int64_t e);

/* Takes the stream's lock: ops on one stream run one at a time, in order. */
void cpu_moe_stream_lock(kp_stream *s);
void cpu_moe_stream_unlock(kp_stream *s);

/* ---- MoE building blocks ---- */

/* Gate for tokens [t0, t1): logits row t (dtype ldt, row stride lstride elements),
 * bias (NULL or f32 [E]) -> ids [t, k], weights [t, k] (row strides in elements). */
typedef struct cpu_gate_job {
    const unsigned char *logits;
    kp_dtype logits_dtype;
    int64_t logits_ld, e;
    const float *bias;
    kp_moe_routing r;
    int32_t *ids;
    int64_t ids_ld;
    float *weights;
    int64_t weights_ld;
} cpu_gate_job;
void cpu_moe_gate_rows(const cpu_gate_job *job, int64_t t0, int64_t t1);

/* Counting sort of pairs (t * k + slot) by expert; ids already checked in range.
 * sorted_ids gets `sorted_len` entries (pad value pairs = T*k everywhere unused). */
void cpu_moe_align_fill(const int32_t *ids, int64_t pairs, int32_t num_experts, int32_t block_size,
                        int32_t *sorted_ids, int64_t sorted_len, int32_t *offsets, int32_t *token_pos);

/* Tasks (expert, column tile of plan->nc, row chunk of plan->mc) over the row ranges
 * [off[e], off[e+1]) of grouped rows, in that order (consecutive tasks share an
 * expert's weight tile). */
typedef struct cpu_expert_tasks {
    const int32_t *off;      /* [E + 1], checked non-decreasing; NULL in the masked layout */
    const int32_t *masked_m; /* the masked layout: [E] counts, expert e's rows e * max_m + r */
    int64_t max_m;
    int64_t experts, n, ntiles, mc, nc;
    int64_t *start;     /* [E + 1]: the first task of each expert (caller's storage) */
} cpu_expert_tasks;
/* Returns the task count. */
int64_t cpu_expert_tasks_init(cpu_expert_tasks *t, const cpu_gemm_plan *plan, const int32_t *off, int64_t experts,
                              int64_t n, int64_t *start);
/* The masked layout (kport.h, masked_m): expert e's rows e * max_m .. + min(max(masked_m[e], 0), max_m). */
int64_t cpu_expert_tasks_init_masked(cpu_expert_tasks *t, const cpu_gemm_plan *plan, const int32_t *masked_m,
                                     int64_t max_m, int64_t experts, int64_t n, int64_t *start);
/* Expert e's rows [*lo, *hi) in either layout. */
static inline void cpu_expert_rows(const cpu_expert_tasks *t, int64_t e, int64_t *lo, int64_t *hi) {
    if (t->masked_m) {
        int64_t c = t->masked_m[e];
        *lo = e * t->max_m;
        *hi = *lo + (c < 0 ? 0 : c > t->max_m ? t->max_m : c);
    } else {
        *lo = t->off[e], *hi = t->off[e + 1];
    }
}
typedef struct cpu_expert_task {
    int64_t e, n0, row0;
    int nc, m;
} cpu_expert_task;
cpu_expert_task cpu_expert_task_at(const cpu_expert_tasks *t, int64_t index);

/* Combine source: rows of expert outputs y, the routing of each token. */
typedef struct cpu_combine_src {
    const unsigned char *y;
    kp_dtype y_dtype;
    int64_t y_ld, y_rows;
    const int32_t *pos;
    int64_t pos_ld;
    const float *weights;
    int64_t weights_ld;
    int64_t k;
    const cpu_kernels *cvt;
} cpu_combine_src;
/* dst = sum over slot 0..k-1, in order, of weights[t, slot] * y[pos[t, slot], n0 .. n0+nc)
 * (+ extra[0 .. nc) when extra is not NULL), f32 accumulation, stored as dtype dt. */
void cpu_moe_combine_row(const cpu_combine_src *src, int64_t t, int64_t n0, int64_t nc, const float *extra,
                         kp_dtype dt, void *dst);

#endif /* KPORT_CPU_GEMM_H */
