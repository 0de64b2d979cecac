/*
 * backends/gpu/ops/gpu_ops.h — what the shared GPU ops use among themselves: the call
 * context, the attention tile plan, MoE tensor views and the per-kernel launchers that
 * kp_moe_forward chains. One op per file beside this header (gpu_<op>.c).
 *
 * Conventions every op follows:
 *  - plan first, then launch: the same code answers dry runs (dry_run != 0 plans,
 *    checks that the kernel variant exists on the device, and enqueues nothing);
 *  - a variant the tuning table asked for but the device lacks (not embedded in an
 *    ahead-of-time backend) falls back to the default plan, with a log line;
 *  - index contents (cu_seqlens, block tables, expert ids, offsets) are not validated
 *    here — that would need a host round trip: the kernels clamp every index into
 *    range, so bad contents give wrong numbers but never an out-of-bounds access. The
 *    CPU backend reports them as errors (KP_CAP_CHECKS_INDICES);
 *  - offsets and strides go to the kernels in elements, buffers whole.
 */
#ifndef KPORT_BACKENDS_GPU_OPS_H
#define KPORT_BACKENDS_GPU_OPS_H

#include "kp_gpu.h"

#include "attention/attention_kargs.h"
#include "moe/moe_kargs.h"
#include "moe/moe_gemm_sm90_kargs.h"
#include "moe/moe_gemm_fp8_sm90_kargs.h"

typedef struct kp_gpu_ctx {
    const kp_gpu_target *t;
    kp_stream *s;
    const kp_host_services *host;
    kp_gpu_profile prof;
    /* kp_op_kernel (kp_gpu_op_kernel): where the planners name the kernels they pick
     * (kp_gpu_kernel_note); NULL on every other call. */
    char *kernel;
    size_t kernel_cap;
    int kernel_rank; /* the rank of what kernel holds (KP_GPU_NOTE_*) */
} kp_gpu_ctx;

/* The op entry points (kp_gpu_op_run dispatches to them). */
kp_status kp_gpu_attention_prefill(kp_gpu_ctx *c, const kp_attention_prefill_params *p, int dry_run);
kp_status kp_gpu_attention_decode(kp_gpu_ctx *c, const kp_attention_decode_params *p, int dry_run);
kp_status kp_gpu_mla_decode(kp_gpu_ctx *c, const kp_mla_decode_params *p, int dry_run);
kp_status kp_gpu_moe_gate(kp_gpu_ctx *c, const kp_moe_gate_params *p, int dry_run);
kp_status kp_gpu_moe_align(kp_gpu_ctx *c, const kp_moe_align_params *p, int dry_run);
kp_status kp_gpu_grouped_gemm(kp_gpu_ctx *c, const kp_grouped_gemm_params *p, int dry_run);
kp_status kp_gpu_moe_combine(kp_gpu_ctx *c, const kp_moe_combine_params *p, int dry_run);
kp_status kp_gpu_moe_forward(kp_gpu_ctx *c, const kp_moe_forward_params *p, int dry_run);
kp_status kp_gpu_kv_cache_store(kp_gpu_ctx *c, const kp_kv_cache_store_params *p, int dry_run);
kp_status kp_gpu_quantize_fp8(kp_gpu_ctx *c, const kp_quantize_fp8_params *p, int dry_run);

/* ---- kernel generations (gpu_kernel_gen.c) ---------------------------------- */

/* Kernels the switch knows: attention_prefill, attention_decode, mla_decode, moe_gate,
 * moe_align, grouped_gemm, moe_combine (the tuning table's names). */
#define KP_GPU_GEN_KERNELS 7

/* KPORT_GPU_KERNELS text -> per kernel (in the order above) 1, 2, 3 (sm90: grouped_gemm only) or 0 (auto). */
kp_status kp_gpu_kernel_gen_parse(const char *text, int out[KP_GPU_GEN_KERNELS], char *why, size_t why_len);

/* The generation (1 or 2) kernel runs here: KPORT_GPU_KERNELS, the tuning table's
 * "<kernel>;gen", else 2 on devices with matrix units. gen2_missing: why generation 2
 * cannot take this case (NULL: it can); it then runs generation 1. Logged once. */
kp_status kp_gpu_kernel_gen(kp_gpu_ctx *c, const char *kernel, const char *gen2_missing, int *gen);
/* The same with the default given: default_gen 2 for a case generation 1 has no kernel
 * for (W8A8), so that only an explicit KPORT_GPU_KERNELS / tuning choice picks 1;
 * default_gen 0: kp_gpu_kernel_gen's default (by matrix units). */
kp_status kp_gpu_kernel_gen_pick(kp_gpu_ctx *c, const char *kernel, const char *gen2_missing, int default_gen,
                                 int *gen);

/* kp_op_kernel's name: a planner notes each kernel it picks, right where it picks it,
 * as "<tier>:<kernel>" (tier gen1, gen2, sm90 = generation 3; kernel: the kernel
 * function, its kp_ prefix dropped). A note of higher rank replaces what c->kernel
 * holds; one of the same rank is appended after '+' (when new and when it fits); a
 * lower one is dropped. So kp_moe_forward names its GEMMs, and an op whose planner names
 * no kernel keeps the generation switch's "<tier>:<switch name>". No-op unless
 * c->kernel is set. */
enum {
    KP_GPU_NOTE_OP = 1,  /* kp_gpu_kernel_gen_pick's "<tier>:<switch name>" (moe_gate, moe_align, moe_combine
                            name no other), and the one-generation ops' kernels (quantize_fp8, kv_cache_store) */
    KP_GPU_NOTE_MAIN = 2 /* GEMM and attention kernels */
};
void kp_gpu_kernel_note(kp_gpu_ctx *c, int rank, int gen, const char *kernel);
/* "gen1", "gen2", "sm90" (3); "gen?" for anything else. */
const char *kp_gpu_tier_name(int gen);
/* With the sm_90a tier (generation 3; grouped_gemm): KPORT_GPU_KERNELS "<kernel>=sm90" forces
 * it (KP_ERR_UNSUPPORTED with the reason when sm90_missing says it cannot run the case, or
 * KPORT_DISABLE_TIER has sm90); auto (no tuning "gen" 1 or 2) picks it when sm90_missing is
 * NULL and the tier is not disabled; otherwise kp_gpu_kernel_gen's choice. *gen: 1, 2 or 3. */
kp_status kp_gpu_kernel_gen_tier(kp_gpu_ctx *c, const char *kernel, const char *gen2_missing, const char *sm90_missing,
                                 int *gen);
/* KPORT_DISABLE_TIER (a comma list, e.g. "sm90") names the tier. */
int kp_gpu_tier_disabled(const char *tier);

/* The GPU kernels' index-width limits (gpu_limits.c): KP_ERR_UNSUPPORTED past them. */
kp_status kp_gpu_check_limits(kp_gpu_ctx *c, kp_op op, const void *params);

/* KP_OK when (source, options) can run here (kp_gpu_target.variant_check). */
kp_status kp_gpu_variant_ok(kp_gpu_ctx *c, const char *source, const char *options);
/* Enqueues l; the op's name is added to any error. */
kp_status kp_gpu_enqueue(kp_gpu_ctx *c, const kp_gpu_launch *l);
/* The stream's scratch regions of at least bytes[0] and bytes[1], under the
 * graph-capture rule: on a wrapped stream never grown (KP_ERR_OUT_OF_MEMORY naming the
 * reservation needed); on a stream kport created grown when short. Release with
 * c->t->scratch_release. */
kp_status kp_gpu_scratch_acquire(kp_gpu_ctx *c, const size_t bytes[2], void *out[2]);

/* ---- the plan cache (gpu_plan_cache.c) ------------------------------------- */

/* A plan's key: what kind of plan (KP_GPU_PLAN_*), then the scalars it depends on
 * besides the device and the tuning table (pointers to string literals count as
 * scalars: a different pointer to the same text only costs a miss). Unused words 0. */
#define KP_GPU_PLAN_KEY_WORDS 8
typedef struct kp_gpu_plan_key {
    uint64_t v[KP_GPU_PLAN_KEY_WORDS];
} kp_gpu_plan_key;
enum {
    KP_GPU_PLAN_ATTN = 1,
    KP_GPU_PLAN_ATTN2,
    KP_GPU_PLAN_GEMM2,
    KP_GPU_PLAN_GEMM8,
    KP_GPU_PLAN_GATE,
    KP_GPU_PLAN_ALIGN,
    KP_GPU_PLAN_COMBINE,
    KP_GPU_PLAN_MOE_CHAIN,
};

#define KP_GPU_PLAN_SLOTS 256 /* a power of two: the cache's bound, per plugin */
#define KP_GPU_PLAN_VALUE_MAX 96
#define KP_GPU_PLAN_BIG_SLOTS 64 /* a power of two: plans above KP_GPU_PLAN_VALUE_MAX bytes (moe_forward's chain) */
#define KP_GPU_PLAN_BIG_VALUE_MAX 3072
#define KP_GPU_PLAN_OPTS_MAX 256

/* 1 and the plan (size bytes into value, its options into opts) when this device
 * planned k under the current tuning table; else 0, with the tuning generation read
 * before planning in *generation (0: no caching), which the store then takes: a plan
 * made while the table changed is filed under the old generation, never the new one.
 * Only successful plans are stored, so errors and their messages always come from
 * planning afresh. */
int kp_gpu_plan_lookup(kp_gpu_ctx *c, const kp_gpu_plan_key *k, void *value, size_t size, char *opts, size_t opts_n,
                       uint64_t *generation);
void kp_gpu_plan_store(kp_gpu_ctx *c, const kp_gpu_plan_key *k, uint64_t generation, const void *value, size_t size,
                       const char *opts);

typedef struct kp_gpu_plan_stats {
    uint64_t hits, misses; /* this thread's lookups since the last clear */
    int slots_used;        /* slots holding a plan (<= KP_GPU_PLAN_SLOTS) */
    int big_slots_used;    /* large-plan slots holding one (<= KP_GPU_PLAN_BIG_SLOTS) */
} kp_gpu_plan_stats;
kp_gpu_plan_stats kp_gpu_plan_cache_stats(void);
void kp_gpu_plan_cache_clear(void); /* tests */

/* ---- attention (gpu_attention_plan.c) -------------------------------------- */

#define KP_GPU_SRC_ATTN_PREFILL "attention/attention_prefill.cl"
#define KP_GPU_SRC_ATTN_DECODE "attention/attention_decode.cl"

typedef struct kp_gpu_attn_cfg {
    kp_dtype dt;
    int dqk, dv, mla;
    int bm, bn, nt;     /* query rows, keys per tile; work-items per group */
    int mma;            /* tile-MMA fragment path (16-bit dtypes) */
    int local_f32;      /* portable path: tiles held as f32 in local memory */
    int kt;             /* portable path: K tile transposed ([d][key]) */
    size_t local_bytes; /* what the kernel declares */
} kp_gpu_attn_cfg;

/* Head-dim pairs the kernels are built for: 64, 128, 256, 192/128; MLA 576/512 and 576/256. */
int kp_gpu_attn_dims_supported(int dqk, int dv, int mla);

/* The tile for this device and shape class. kind: the tuning table's kernel name
 * ("attention_prefill", "attention_decode", "mla_decode"); rows: query rows one KV head
 * has per sequence (s_q * G for decode; 0 = many, for prefill). use_tuning 0: the
 * defaults only. KP_ERR_UNSUPPORTED (with the reason) when no tile fits the device. */
kp_status kp_gpu_attn_config(const kp_host_services *h, const kp_gpu_profile *p, const char *kind, kp_dtype dt,
                             int dqk, int dv, int mla, int rows, int use_tuning, kp_gpu_attn_cfg *out);

/* "-DKP_DTYPE_BF16 -DATTN_DQK=128 ..." */
void kp_gpu_attn_options(const kp_gpu_attn_cfg *c, char *buf, size_t n);
/* The prefill kernels' common parameters (gpu_attention_prefill.c): k and v of rank
 * kv_rank (4: paged); the caller adds what its generation needs. */
kp_attn_prefill_kargs kp_gpu_attn_prefill_kargs(const kp_attention_prefill_params *p, int kv_rank, int64_t nb,
                                                int64_t total_q, int64_t total_k, int group);

/* kp_gpu_attn_config with tuning, its options, and the variant checked on the device;
 * a tuned tile the device lacks falls back to the default one. */
kp_status kp_gpu_attn_plan(kp_gpu_ctx *c, const char *kind, const char *source, kp_dtype dt, int dqk, int dv, int mla,
                           int rows, kp_gpu_attn_cfg *cfg, char *opts, size_t n);

/* The paged decode shared by kp_attention_decode and kp_mla_decode. */
typedef struct kp_gpu_paged_args {
    const kp_tensor *q, *k_cache, *v_cache, *block_table, *seq_lens, *out, *lse; /* borrowed */
    float scale;
    int causal, num_splits, dv, mla; /* mla: v_cache == k_cache, V its first dv columns */
    int window_left;                 /* > 0: keys from the query's position - window_left on */
    const kp_tensor *k_scale, *v_scale; /* e4m3 caches (-DATTN_KV_FP8): f32 [1] or [num_blocks]; else absent */
} kp_gpu_paged_args;

kp_status kp_gpu_paged_decode(kp_gpu_ctx *c, kp_op op, const kp_gpu_paged_args *a, int dry_run);

/* ---- MoE (gpu_moe_common.c, gpu_grouped_gemm.c) ---------------------------- */

#define KP_GPU_SRC_MOE_GATE "moe/moe_gate.cl"
#define KP_GPU_SRC_MOE_ALIGN "moe/moe_align.cl"
#define KP_GPU_SRC_MOE_GEMM "moe/moe_gemm.cl"
#define KP_GPU_SRC_MOE_COMBINE "moe/moe_combine.cl"
#define KP_GPU_SRC_EP_CAPACITY "moe/ep_capacity.cl"

#define KP_GPU_GATE_WG 128
#define KP_GPU_ALIGN_WG 256
#define KP_GPU_COMBINE_WG 128
#define KP_GPU_EPC_WG 256           /* ep_capacity.cl's work-group */
#define KP_GPU_EPC_MAX_GROUPS 65535 /* its gather's work-groups at most (they stride over the rows) */
#define KP_GPU_GG_SMALL_M_MAX 16 /* KP_GG_SMALL_M */
#define KP_GPU_GG_SMALL_WG 128   /* KP_GG_SM_WG: 4 weight rows per work-group */

/* A buffer, an element offset into it, and a row stride in elements. buf NULL: absent.
 * addr != 0: an address tensor's device address (buf is kp_device_memory, off 0). */
typedef struct kp_gpu_view {
    const kp_buffer *buf;
    int64_t off;
    int64_t ld;
    uint64_t addr;
} kp_gpu_view;

/* The view's memory as a kernel argument: its buffer, or its address. */
void kp_gpu_arg_view(kp_gpu_launch *l, kp_gpu_view v);

/* The view of a 1-D or 2-D tensor (ld = strides[0] for 2-D). */
kp_gpu_view kp_gpu_view_of(const kp_tensor *t);
/* A region of a buffer given in bytes, as elements of elem_size bytes. */
kp_gpu_view kp_gpu_view_bytes(const kp_buffer *b, size_t byte_off, size_t elem_size, int64_t ld);

/* "-DKP_DTYPE_BF16" for the float dtypes. */
const char *kp_gpu_dtype_define(kp_dtype t);

/* Option strings of the MoE kernels (the variants an ahead-of-time build embeds). */
void kp_gpu_gate_options(kp_dtype dt, char *buf, size_t n);
void kp_gpu_align_options(int32_t n_exp, char *buf, size_t n);
void kp_gpu_combine_options(kp_dtype dt, int y_f32, char *buf, size_t n);
/* The one option string of ep_capacity.cl (gpu_ep_capacity.c). */
const char *kp_gpu_ep_capacity_options(void);

/* Gate: logits [T, E] (dtype dt) -> ids / weights [T, k]. bias.buf may be NULL. */
kp_status kp_gpu_moe_gate_run(kp_gpu_ctx *c, kp_gpu_view logits, kp_dtype dt, int64_t t, int64_t e, kp_gpu_view bias,
                              const kp_moe_routing *r, kp_gpu_view ids, kp_gpu_view weights, int dry_run);

/* Align: ids [pairs] (contiguous) -> sorted [sorted_len], offsets [E+1], pos [pairs]. */
kp_status kp_gpu_moe_align_run(kp_gpu_ctx *c, kp_gpu_view ids, int64_t pairs, int32_t n_exp, int32_t block,
                               kp_gpu_view sorted, int64_t sorted_len, kp_gpu_view offsets, kp_gpu_view pos,
                               int dry_run);

/* The gate's, align's and combine's parameter blocks and argument lists (shared by
 * their launchers and kp_moe_forward's cached chain, gpu_moe_chain.c). */
kp_moe_gate_kargs kp_gpu_gate_kargs(kp_gpu_view logits, int64_t e, kp_gpu_view bias, const kp_moe_routing *r,
                                    kp_gpu_view ids, kp_gpu_view weights);
void kp_gpu_gate_args(kp_gpu_launch *l, kp_gpu_view logits, kp_gpu_view bias, kp_gpu_view ids, kp_gpu_view weights,
                      const kp_moe_gate_kargs *ka);
kp_moe_align_kargs kp_gpu_align_kargs(kp_gpu_view ids, int64_t pairs, int32_t n_exp, int32_t block, kp_gpu_view sorted,
                                      int64_t sorted_len, kp_gpu_view offsets, kp_gpu_view pos, int64_t chunk,
                                      int64_t nchunks);
void kp_gpu_align_args(kp_gpu_launch *l, kp_gpu_view ids, kp_gpu_view sorted, kp_gpu_view pos, kp_gpu_view offsets,
                       const kp_moe_align_kargs *ka);
kp_moe_combine_kargs kp_gpu_combine_kargs(kp_gpu_view y, int64_t y_rows, kp_gpu_view pos, kp_gpu_view tw, int32_t topk,
                                          kp_gpu_view out, int64_t hidden);
void kp_gpu_combine_args(kp_gpu_launch *l, kp_gpu_view y, kp_gpu_view pos, kp_gpu_view tw, kp_gpu_view out,
                         const kp_moe_combine_kargs *ka);

/* Epilogues of the grouped GEMM (moe_gemm.cl's mode). */

typedef struct kp_gpu_moe_gemm {
    kp_dtype dtype;       /* activations (and a 16-bit weight) storage type; out's for STORE/COMBINE */
    int a_f32;            /* a is f32 whatever dtype says */
    int w_fp8;            /* w is e4m3 with w_scale */
    kp_gpu_view a;        /* [a_rows, K] */
    int64_t a_rows;
    kp_gpu_view gather;   /* gather_k > 0: row r of the GEMM reads a row gather[r] / gather_k */
    int32_t gather_k;
    kp_gpu_view w;        /* [E, N, K]: off, ld = stride of N (w_se: stride of E) */
    int64_t w_se;
    kp_gpu_view w_scale;  /* f32 [E, ceil(N/128), K/128] contiguous */
    kp_gpu_view offsets;  /* int32 [E+1]; unused when dense_rows > 0; the masked layout: masked_m [E] */
    int32_t n_exp;
    int32_t mask_m;       /* > 0: the masked layout, expert e's rows e * mask_m + r, r < min(offsets[e], mask_m) */
    int64_t dense_rows;   /* > 0: one expert, rows [0, dense_rows) */
    int64_t m, n, k;      /* m: rows of out (offsets clamp to it) */
    int mode;             /* KP_MOE_GEMM_STORE, _STORE_F32, _SWIGLU, _COMBINE (moe/moe_kargs.h) */
    int64_t n_out;        /* SwiGLU: columns of out (weight rows j and n_out + j) */
    kp_gpu_view out;      /* STORE/SWIGLU/COMBINE: dtype; STORE_F32: f32 */
    kp_gpu_view y, pos, tw; /* COMBINE: y (dtype) [y_rows, N], pos/tw [rows, topk] */
    int64_t y_rows;
    int32_t topk;
    int64_t max_rows_hint; /* > 0: no expert has more rows than this (decode) */
    /* W8A8: a is e4m3 [a_rows, K] and the scale of (source row r, K slice kb) is
     * a_scale[off + r * as_t + kb * as_g] (f32); dtype is then out's */
    int a_fp8;
    kp_gpu_view a_scale;
    int64_t as_t, as_g;
    /* SWIGLU_FP8 (W8A8 only): out is e4m3 [m, n_out] and the scale of (row r, group g) goes
     * to out_scale[off + r * ld + g] (f32); ue8m0: power-of-two scales */
    kp_gpu_view out_scale;
    int ue8m0;
} kp_gpu_moe_gemm;

/* The grouped GEMM's tiles for a device (pure: profile and tuning). */
typedef struct kp_gpu_gemm_tiles {
    int mma, bm, bn, bk, wg;
    size_t lmem;
} kp_gpu_gemm_tiles;

void kp_gpu_gemm_tiles_pick(const kp_host_services *h, const kp_gpu_profile *p, kp_dtype dt, int w_fp8,
                            int use_tuning, kp_gpu_gemm_tiles *out);
void kp_gpu_gemm_options(const kp_gpu_gemm_tiles *tl, kp_dtype dt, int w_fp8, int a_f32, char *buf, size_t n);

/* Runs the grouped GEMM with the generation kp_gpu_kernel_gen picks. */
kp_status kp_gpu_moe_gemm_run(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int dry_run);

/* What both generations share: which experts go to the decode kernel (small_max rows or
 * fewer; the tuning table's "small_m"), the kernel arguments and their parameter block. */
void kp_gpu_gemm_split(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int *small_max, int *run_tiled, int *run_small);
kp_moe_gemm_kargs kp_gpu_gemm_kargs(const kp_gpu_moe_gemm *g, int small_max);
void kp_gpu_gemm_args(kp_gpu_launch *l, const kp_gpu_moe_gemm *g, const kp_moe_gemm_kargs *ka, void *partials);

/* ---- grouped GEMM, generation 2 (gpu_grouped_gemm_gen2.c) ------------------- */

#define KP_GPU_SRC_MOE_GEMM2 "moe/moe_gemm_gen2.cl"

/* Why generation 2 cannot run g here (f32, K % 8, rows not 16-byte aligned), or NULL. */
const char *kp_gpu_gemm2_missing(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g);
/* The same for W8A8 (rows of a and w 16-byte aligned), or NULL. */
const char *kp_gpu_gemm8_missing(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g);
kp_status kp_gpu_moe_gemm2_run(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int dry_run);

/* ---- grouped GEMM, the sm_90a tier: generation 3 (gpu_grouped_gemm_sm90.c) ---------- */

#define KP_GPU_SRC_MOE_GEMM_SM90 "moe/moe_gemm_sm90.cl"
/* Why the sm_90a kernel cannot run g here (not an sm_90a device, a case it does not cover),
 * or NULL. */
const char *kp_gpu_gemm_sm90_missing(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g);
/* The stages that fit the profile's local memory for BN columns (any expert count it takes). */
int kp_gpu_gemm_sm90_stages(const kp_gpu_profile *p, int bn);
void kp_gpu_gemm_sm90_options(const kp_gpu_profile *p, kp_dtype dt, int bn, char *buf, size_t n);
/* The launch's arguments for g at tile width bn: offsets, out twice, the parameter block
 * (filled into ka, which must outlive the launch) and the TMA tensor maps of a and w, all
 * from g's views. The fresh plan and kp_moe_forward's replayed chain (gpu_moe_chain.c) both
 * build them here, so a replay's maps describe this call's buffers, as a fresh plan's do. */
void kp_gpu_gemm_sm90_args(kp_gpu_launch *l, const kp_gpu_moe_gemm *g, int bn, kp_moe_gemm_sm90_kargs *ka);
kp_status kp_gpu_moe_gemm_sm90_run(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int dry_run);
/* W8A8 on the tier (kernels/moe/moe_gemm_fp8_sm90.cl: e4m3 wgmma, 128 x 128 tiles, per-slice
 * promotion); only when KPORT_GPU_KERNELS forces grouped_gemm=sm90. */
#define KP_GPU_SRC_MOE_GEMM_SM90_FP8 "moe/moe_gemm_fp8_sm90.cl"
const char *kp_gpu_gemm_sm90_fp8_missing(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g);
int kp_gpu_gemm_sm90_fp8_stages(const kp_gpu_profile *p);
void kp_gpu_gemm_sm90_fp8_options(const kp_gpu_profile *p, kp_dtype out_dt, char *buf, size_t n);
kp_status kp_gpu_moe_gemm_sm90_fp8_run(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int dry_run);

/* W8A8 (kernels/moe/moe_gemm_fp8_gen2.cl): generation 2 only; a tile from the device's
 * local memory, K tiles of 128. */
#define KP_GPU_SRC_MOE_GEMM8 "moe/moe_gemm_fp8_gen2.cl"
typedef struct kp_gpu_gemm8_tile {
    int bm, bn, wm, wn, stages, min_blocks;
} kp_gpu_gemm8_tile;
void kp_gpu_gemm8_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int64_t avg_rows, int use_tuning,
                            kp_gpu_gemm8_tile *out);
/* The tile of the SWIGLU_FP8 epilogue (G8_BN 256: whole 128-column groups of h), when one
 * fits this device's local memory and the tuning table's "grouped_gemm" "g8_fused_swiglu"
 * is not 0 (use_tuning); returns 0 otherwise: kp_moe_forward then stores h in f32 and
 * quantizes it with kp_quantize_fp8's kernel. */
int kp_gpu_gemm8_fused_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int use_tuning,
                                 kp_gpu_gemm8_tile *out);
void kp_gpu_gemm8_options(const kp_gpu_gemm8_tile *t, kp_dtype out_dt, char *buf, size_t n);
kp_status kp_gpu_moe_gemm8_run(kp_gpu_ctx *c, const kp_gpu_moe_gemm *g, int dry_run);

/* A generation-2 tile (the planner's table, keyed by the device's local memory). */
typedef struct kp_gpu_gemm2_tile {
    int bm, bn, bk, wm, wn, stages; /* tiled kernel: wm x wn groups of 32 work-items */
    int min_blocks;                 /* tiled kernel: work-groups per SM the plan counts on */
    int rows_warps, rows_rpw;       /* decode kernel: 32-lane groups, weight rows per group */
} kp_gpu_gemm2_tile;

/* The tile for this device and shape class (avg_rows: rows per expert that has any). */
void kp_gpu_gemm2_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int w_fp8, int64_t avg_rows,
                            int use_tuning, kp_gpu_gemm2_tile *out);
void kp_gpu_gemm2_options(const kp_gpu_gemm2_tile *t, kp_dtype dt, int w_fp8, int a_f32, char *buf, size_t n);

/* Combine: out[t] = sum_slot tw[t, slot] * y[pos[t, slot]]; y_f32: y is f32 (else dt). */
kp_status kp_gpu_moe_combine_run(kp_gpu_ctx *c, kp_gpu_view y, int y_f32, int64_t y_rows, kp_gpu_view pos,
                                 kp_gpu_view tw, int32_t topk, kp_gpu_view out, kp_dtype dt, int64_t t, int64_t hidden,
                                 int dry_run);

/* ---- kp_moe_forward (gpu_moe_forward.c, gpu_moe_chain.c) ------------------ */

/* The chain's shape, workspace views and GEMMs for one call (kp_gpu_moe_forward_setup). */
typedef struct kp_gpu_moe_fwd {
    int64_t t, hidden, e, k, inter_s, pairs;
    kp_dtype dt;
    kp_gpu_view ids, wts, pos, sorted, offsets, y, out;
    kp_gpu_moe_gemm g1, g2, s1, s2; /* s1, s2: the shared expert's (inter_s > 0) */
    /* W8A8 (w8a8; s8: with an FP8 shared expert): x's quantization (x -> xq, xs), then
     * h's from g1's f32 SwiGLU output (hf -> h8, hs) and h_s's from s1's (hf_s -> hs8, hss) */
    int w8a8, s8, ue8m0;
    int fused; /* W8A8: g1 (and an FP8 s1) quantize h in their SWIGLU_FP8 epilogue: no h quantize launches */
    int64_t inter;
    kp_gpu_view x, xq, xs, hf, h8, hs, hf_s, hs8, hss;
} kp_gpu_moe_fwd;

kp_status kp_gpu_moe_forward_setup(kp_gpu_ctx *c, const kp_moe_forward_params *p, kp_gpu_moe_fwd *f);
/* The chain planned launch by launch (dry_run: planned only). */
kp_status kp_gpu_moe_forward_launches(kp_gpu_ctx *c, const kp_moe_forward_params *p, const kp_gpu_moe_fwd *f,
                                      int dry_run);
/* The chain from the plan cache: planned (and recorded) by kp_gpu_moe_forward_launches
 * on a miss, replayed with this call's buffers, offsets and routing scalars on a hit. */
kp_status kp_gpu_moe_chain_run(kp_gpu_ctx *c, const kp_moe_forward_params *p, const kp_gpu_moe_fwd *f);

/* ---- FP8 data paths (gpu_kv_cache_store.c, gpu_quantize_fp8.c) -------------- */

#define KP_GPU_SRC_KV_STORE "attention/kv_cache_store.cl"
#define KP_GPU_KV_STORE_WG 128 /* KV_STORE_WG */

/* "-DKP_DTYPE_BF16 -DKV_STORE_FP8": key/value dtype dt, e4m3 caches when fp8. */
void kp_gpu_kv_store_options(kp_dtype dt, int fp8, char *buf, size_t n);

#define KP_GPU_SRC_QUANT_FP8 "moe/quantize_fp8.cl"
/* "-DKP_DTYPE_BF16": x's dtype. */
void kp_gpu_quant_fp8_options(kp_dtype dt, char *buf, size_t n);
/* x (dt) [t, k] -> e4m3 out [t, k] and f32 scale [t, k/128] row-major (views' ld); what
 * kp_moe_forward's W8A8 chain launches on its workspace. */
kp_quant_fp8_kargs kp_gpu_quant_fp8_kargs(kp_gpu_view x, kp_gpu_view out, kp_gpu_view scale, int ue8m0);
void kp_gpu_quant_fp8_args(kp_gpu_launch *l, kp_gpu_view x, kp_gpu_view out, kp_gpu_view scale,
                           const kp_quant_fp8_kargs *ka);
kp_status kp_gpu_quant_fp8_run(kp_gpu_ctx *c, kp_gpu_view x, kp_dtype dt, kp_gpu_view out, kp_gpu_view scale,
                               int64_t t, int64_t k, int ue8m0, int dry_run);

/* ---- attention, generation 2 (gpu_attention_gen2.c) ------------------------ */

#define KP_GPU_SRC_ATTN_PREFILL2 "attention/attention_prefill_gen2.cl"

/* A generation-2 attention tile: bm query rows (bm / 16 groups of 32 work-items), bn
 * keys per tile, stages of the K/V copy pipeline; local_bytes: KP_ATTN2_LOCAL_BYTES. */
typedef struct kp_gpu_attn2_tile {
    int bm, bn, stages, min_blocks;
    size_t local_bytes;
} kp_gpu_attn2_tile;

/* The tile for head dims dqk/dv on this device; 0 when none fits (generation 1 runs). */
int kp_gpu_attn2_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int dqk, int dv, int use_tuning,
                           kp_gpu_attn2_tile *out);
void kp_gpu_attn2_options(const kp_gpu_attn2_tile *t, kp_dtype dt, int dqk, int dv, char *buf, size_t n);
/* Why generation 2 cannot run this prefill here (f32, head dims, unaligned rows, no tile
 * fits), or NULL. */
const char *kp_gpu_attn2_prefill_missing(kp_gpu_ctx *c, const kp_attention_prefill_params *p);
kp_status kp_gpu_attention_prefill_gen2(kp_gpu_ctx *c, const kp_attention_prefill_params *p, int dry_run);
/* the sm_90a tier's prefill (gpu_attention_sm90.c, attention/attention_prefill_sm90.cl) */
#define KP_GPU_SRC_ATTN_PREFILL_SM90 "attention/attention_prefill_sm90.cl"
const char *kp_gpu_attn_sm90_prefill_missing(kp_gpu_ctx *c, const kp_attention_prefill_params *p);
int kp_gpu_attn_sm90_stages(const kp_gpu_profile *p, int dqk);
/* 1: the consumers' ping-pong (the tuning table's attention_prefill;sm90_pingpong, default 1) */
int kp_gpu_attn_sm90_pingpong(const kp_host_services *h, const kp_gpu_profile *p);
void kp_gpu_attn_sm90_options(const kp_gpu_profile *p, kp_dtype dt, int dqk, int pingpong, char *buf, size_t n);
kp_status kp_gpu_attention_prefill_sm90(kp_gpu_ctx *c, const kp_attention_prefill_params *p, int dry_run);

#define KP_GPU_SRC_ATTN_DECODE2 "attention/attention_decode_gen2.cl"

/* A generation-2 paged-decode tile: wm row groups (16 rows each) x wn key groups of 32
 * work-items, bn keys per tile, stages of the K/V pipeline; local_bytes:
 * KP_ATTN2_DECODE_LOCAL_BYTES. */
typedef struct kp_gpu_attn2_dec_tile {
    int wm, wn, bn, stages;
    size_t local_bytes;
} kp_gpu_attn2_dec_tile;

/* The tile for rows = s_q * G packed query rows and head dims dqk/dv; 0 when none fits. */
int kp_gpu_attn2_dec_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int rows, int dqk, int dv,
                               int use_tuning, kp_gpu_attn2_dec_tile *out);
void kp_gpu_attn2_dec_options(const kp_gpu_attn2_dec_tile *t, kp_dtype dt, int dqk, int dv, char *buf, size_t n);
/* Why generation 2 cannot run this paged decode here (f32, an FP8 cache, a sliding
 * window, head dims, unaligned rows, no tile fits), or NULL; MLA asks for
 * mla_decode_gen2.cl's tile. */
const char *kp_gpu_attn2_decode_missing(kp_gpu_ctx *c, const kp_gpu_paged_args *a);

/* ---- MLA decode, generation 2 (gpu_mla_decode.c) ---------------------------- */

#define KP_GPU_SRC_MLA_DECODE2 "attention/mla_decode_gen2.cl"

/* A generation-2 MLA decode tile: wm row groups (16 rows each) x 2 halves of DV, 32
 * work-items each; bn keys a tile, stages of the latent copy pipeline; fp8: an e4m3
 * latent cache (its bytes copied, dequantized in local memory); local_bytes:
 * KP_MLA2_LOCAL_BYTES. */
typedef struct kp_gpu_mla2_tile {
    int wm, bn, stages, fp8;
    size_t local_bytes;
} kp_gpu_mla2_tile;

/* The tile for rows = s_q * h_q packed query rows, latent width dqk and a 16-bit
 * (fp8 = 0) or e4m3 (fp8 = 1) cache; 0 when none fits. */
int kp_gpu_mla2_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int rows, int dqk, int fp8,
                          int use_tuning, kp_gpu_mla2_tile *out);
void kp_gpu_mla2_options(const kp_gpu_mla2_tile *t, kp_dtype dt, int dqk, int dv, char *buf, size_t n);

#endif /* KPORT_BACKENDS_GPU_OPS_H */
