/*
 * backends/gpu/gpu_variants.c — every kernel variant the planners can pick for a
 * device profile (kp_gpu_variants_enumerate, kp_gpu.h). The ahead-of-time backends
 * build exactly this list (backends/gpu/gpu_variants_main.c prints it at build time),
 * and their tests check that each one is embedded: a planner change that picks a new
 * tile changes the build with it.
 */
#include "gpu_variants.h"
#include "ops/gpu_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct seen_list {
    char **items;
    size_t n, cap;
} seen_list;

/* 1 the first time (source, options) is offered. */
static int first_time(seen_list *l, const char *source, const char *options) {
    char key[512];
    snprintf(key, sizeof key, "%s|%s", source, options);
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i], key) == 0) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **p = realloc(l->items, cap * sizeof *p);
        if (!p) return 1; /* listing twice beats listing nothing */
        l->items = p, l->cap = cap;
    }
    char *copy = malloc(strlen(key) + 1);
    if (copy) strcpy(copy, key), l->items[l->n++] = copy;
    return 1;
}

typedef struct emitter {
    seen_list seen;
    kp_gpu_variant_fn fn;
    void *user;
} emitter;

static void emit(emitter *e, const char *source, const char *options, const char *kernels) {
    if (first_time(&e->seen, source, options)) e->fn(e->user, source, options, kernels);
}

static const kp_dtype float_types[] = {KP_F32, KP_F16, KP_BF16};

/* The FP8-cache twin of a decode variant (gpu_attention_decode.c's plan_fp8). */
static void emit_fp8_kv(emitter *e, const char *opts) {
    char fp8[300];
    snprintf(fp8, sizeof fp8, "%s -DATTN_KV_FP8", opts);
    emit(e, KP_GPU_SRC_ATTN_DECODE, fp8, "kp_attention_decode_paged kp_attention_combine");
}

static void attention(emitter *e, const kp_host_services *h, const kp_gpu_profile *p) {
    static const int dims[][2] = {{64, 64}, {128, 128}, {256, 256}, {192, 128}};
    static const int mla_dims[][2] = {{576, 512}, {576, 256}};
    static const int rows[] = {1, 4, 5, 16, 128};
    char opts[256];
    kp_gpu_attn_cfg c;
    for (size_t t = 0; t < 3; t++) {
        kp_dtype dt = float_types[t];
        for (size_t d = 0; d < 4; d++) {
            if (kp_gpu_attn_config(h, p, "attention_prefill", dt, dims[d][0], dims[d][1], 0, 0, 0, &c) == KP_OK) {
                kp_gpu_attn_options(&c, opts, sizeof opts);
                emit(e, KP_GPU_SRC_ATTN_PREFILL, opts, "kp_attention_prefill");
            }
            for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
                if (kp_gpu_attn_config(h, p, "attention_decode", dt, dims[d][0], dims[d][1], 0, rows[r], 0, &c) ==
                    KP_OK) {
                    kp_gpu_attn_options(&c, opts, sizeof opts);
                    emit(e, KP_GPU_SRC_ATTN_DECODE, opts, "kp_attention_decode_paged kp_attention_combine");
                    emit_fp8_kv(e, opts);
                }
        }
        /* generation 2: 16-bit dtypes, the table's tile per head-dim pair (none: generation 1) */
        kp_gpu_attn2_tile t2;
        for (size_t d = 0; d < 4 && dt != KP_F32; d++)
            if (kp_gpu_attn2_tile_pick(h, p, dims[d][0], dims[d][1], 0, &t2)) {
                kp_gpu_attn2_options(&t2, dt, dims[d][0], dims[d][1], opts, sizeof opts);
                emit(e, KP_GPU_SRC_ATTN_PREFILL2, opts, "kp_attention_prefill_gen2");
            }
        /* generation-2 paged decode: each row-group count (rows 1, 32, 128 -> 1, 2, 4 groups of 16) */
        kp_gpu_attn2_dec_tile d2;
        static const int dec2_rows[] = {1, 32, 128};
        for (size_t d = 0; d < 4 && dt != KP_F32; d++)
            for (size_t r = 0; r < 3; r++)
                if (kp_gpu_attn2_dec_tile_pick(h, p, dec2_rows[r], dims[d][0], dims[d][1], 0, &d2)) {
                    kp_gpu_attn2_dec_options(&d2, dt, dims[d][0], dims[d][1], opts, sizeof opts);
                    emit(e, KP_GPU_SRC_ATTN_DECODE2, opts, "kp_attention_decode_gen2");
                }
        /* generation-2 MLA decode: each row-group count (s_q * h_q 16, 32, 128 -> 1, 2, 4
         * groups), 16-bit and FP8 latent caches */
        kp_gpu_mla2_tile m2;
        static const int mla2_rows[] = {16, 32, 128};
        for (size_t d = 0; d < 2 && dt != KP_F32; d++)
            for (size_t r = 0; r < 3; r++)
                for (int fp8 = 0; fp8 < 2; fp8++)
                    if (kp_gpu_mla2_tile_pick(h, p, mla2_rows[r], mla_dims[d][0], fp8, 0, &m2)) {
                        kp_gpu_mla2_options(&m2, dt, mla_dims[d][0], mla_dims[d][1], opts, sizeof opts);
                        emit(e, KP_GPU_SRC_MLA_DECODE2, opts, "kp_mla_decode_gen2");
                    }
        for (size_t d = 0; d < 2; d++)
            for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
                if (kp_gpu_attn_config(h, p, "mla_decode", dt, mla_dims[d][0], mla_dims[d][1], 1, rows[r], 0, &c) ==
                    KP_OK) {
                    kp_gpu_attn_options(&c, opts, sizeof opts);
                    emit(e, KP_GPU_SRC_ATTN_DECODE, opts, "kp_attention_decode_paged kp_attention_combine");
                    emit_fp8_kv(e, opts);
                }
    }
}

static void moe(emitter *e, const kp_host_services *h, const kp_gpu_profile *p) {
    char opts[256];
    for (size_t t = 0; t < 3; t++) {
        kp_gpu_gate_options(float_types[t], opts, sizeof opts);
        emit(e, KP_GPU_SRC_MOE_GATE, opts, "kp_moe_gate");
    }
    static const int32_t experts[] = {1, 4096};
    for (size_t i = 0; i < 2; i++) {
        kp_gpu_align_options(experts[i], opts, sizeof opts);
        emit(e, KP_GPU_SRC_MOE_ALIGN, opts, "kp_moe_align_hist kp_moe_align_scan kp_moe_align_scatter");
    }
    for (size_t t = 0; t < 3; t++)
        for (int y_f32 = 0; y_f32 < 2; y_f32++) {
            kp_gpu_combine_options(float_types[t], y_f32, opts, sizeof opts);
            emit(e, KP_GPU_SRC_MOE_COMBINE, opts, "kp_moe_combine");
        }
    /* expert parallelism's capacity steps (the ep_capacity slot) */
    emit(e, KP_GPU_SRC_EP_CAPACITY, kp_gpu_ep_capacity_options(), "kp_ep_plan_send kp_ep_plan_recv kp_ep_gather");
    /* FP8 weights take 16-bit activations only (core/ops/op_grouped_gemm.c) */
    for (size_t t = 0; t < 3; t++)
        for (int fp8 = 0; fp8 < (float_types[t] == KP_F32 ? 1 : 2); fp8++)
            for (int a_f32 = 0; a_f32 < 2; a_f32++) {
                kp_gpu_gemm_tiles tl;
                kp_gpu_gemm_tiles_pick(h, p, float_types[t], fp8, 0, &tl);
                kp_gpu_gemm_options(&tl, float_types[t], fp8, a_f32, opts, sizeof opts);
                emit(e, KP_GPU_SRC_MOE_GEMM, opts, "kp_grouped_gemm_tiled kp_grouped_gemm_small");
            }
    /* generation 2: 16-bit activations (f32 ones from kp_moe_forward's SwiGLU), both row classes */
    static const int64_t avg_rows[] = {16, 1024};
    for (size_t t = 1; t < 3; t++)
        for (int fp8 = 0; fp8 < 2; fp8++)
            for (int a_f32 = 0; a_f32 < 2; a_f32++)
                for (size_t r = 0; r < 2; r++) {
                    kp_gpu_gemm2_tile t2;
                    kp_gpu_gemm2_tile_pick(h, p, fp8, avg_rows[r], 0, &t2);
                    kp_gpu_gemm2_options(&t2, float_types[t], fp8, a_f32, opts, sizeof opts);
                    emit(e, KP_GPU_SRC_MOE_GEMM2, opts,
                         "kp_grouped_gemm_gen2_tiled kp_grouped_gemm_gen2_rows kp_grouped_gemm_gen2_reduce");
                }
    /* the sm_90a tier: bf16 and f16, its tile table's columns (BN 128 and 256) */
    if (p->sm90a)
        for (size_t t = 1; t < 3; t++)
            for (int bn = 128; bn <= 256; bn *= 2) {
                kp_gpu_gemm_sm90_options(p, float_types[t], bn, opts, sizeof opts);
                emit(e, KP_GPU_SRC_MOE_GEMM_SM90, opts, "kp_grouped_gemm_sm90");
            }
    /* ... and its W8A8 kernel: every output dtype */
    if (p->sm90a)
        for (size_t t = 0; t < 3; t++) {
            kp_gpu_gemm_sm90_fp8_options(p, float_types[t], opts, sizeof opts);
            emit(e, KP_GPU_SRC_MOE_GEMM_SM90_FP8, opts, "kp_grouped_gemm_sm90_e4m3");
        }
    /* the sm_90a tier's attention prefill: bf16 and f16, head dims 64/64, 128/128, 192/128,
     * 256/256, both schedules (with and without the consumers' ping-pong: a tuning key) */
    if (p->sm90a)
        for (size_t t = 1; t < 3; t++)
            for (int dqk = 64; dqk <= 256; dqk += 64)
                for (int pp = 1; pp >= 0; pp--) {
                    kp_gpu_attn_sm90_options(p, float_types[t], dqk, pp, opts, sizeof opts);
                    emit(e, KP_GPU_SRC_ATTN_PREFILL_SM90, opts, "kp_attention_prefill_sm90");
                }
    /* W8A8: e4m3 activations and weights, every output dtype, both row classes */
    for (size_t t = 0; t < 3; t++)
        for (size_t r = 0; r < 2; r++) {
            kp_gpu_gemm8_tile t8;
            kp_gpu_gemm8_tile_pick(h, p, avg_rows[r], 0, &t8);
            kp_gpu_gemm8_options(&t8, float_types[t], opts, sizeof opts);
            emit(e, KP_GPU_SRC_MOE_GEMM8, opts,
                 "kp_grouped_gemm_fp8_gen2_tiled kp_grouped_gemm_fp8_rows kp_grouped_gemm_fp8_reduce");
        }
    kp_gpu_gemm8_tile tf; /* kp_moe_forward's W8A8 w13 GEMM quantizing h in its epilogue (f32 out) */
    if (kp_gpu_gemm8_fused_tile_pick(h, p, 0, &tf)) {
        kp_gpu_gemm8_options(&tf, KP_F32, opts, sizeof opts);
        /* the source defines the decode kernels too (moe_gemm_fp8_rows.h): listed, unused here */
        emit(e, KP_GPU_SRC_MOE_GEMM8, opts,
             "kp_grouped_gemm_fp8_gen2_tiled kp_grouped_gemm_fp8_rows kp_grouped_gemm_fp8_reduce");
    }
}

static void fp8_paths(emitter *e) {
    char opts[96];
    for (size_t t = 0; t < 3; t++)
        for (int fp8 = 0; fp8 < 2; fp8++) {
            kp_gpu_kv_store_options(float_types[t], fp8, opts, sizeof opts);
            emit(e, KP_GPU_SRC_KV_STORE, opts, "kp_kv_cache_store");
        }
    for (size_t t = 0; t < 3; t++) {
        kp_gpu_quant_fp8_options(float_types[t], opts, sizeof opts);
        emit(e, KP_GPU_SRC_QUANT_FP8, opts, "kp_quantize_fp8");
    }
}

void kp_gpu_variants_enumerate(const kp_host_services *host, const kp_gpu_profile *p, kp_gpu_variant_fn fn,
                               void *user) {
    emitter e = {{NULL, 0, 0}, fn, user};
    attention(&e, host, p);
    moe(&e, host, p);
    fp8_paths(&e);
    for (size_t i = 0; i < e.seen.n; i++) free(e.seen.items[i]);
    free(e.seen.items);
}

/* ---- build profiles and the stub host ---------------------------------------- */

int kp_gpu_build_profile(const char *backend, kp_device_info *info, kp_gpu_profile *p) {
    memset(info, 0, sizeof *info);
    memset(p, 0, sizeof *p);
    p->info = info;
    p->max_group = 1024;
    p->compute_units = 1;
    info->kind = KP_DEVICE_GPU_DISCRETE;
    if (strcmp(backend, "cuda") == 0) {
        snprintf(info->name, sizeof info->name, "any sm_80+ GPU");
        snprintf(info->vendor, sizeof info->vendor, "NVIDIA");
        p->mma = 1, p->warp = 32, p->local_mem = KP_GPU_CUDA_LOCAL_MEM;
        p->static_local_mem = KP_GPU_CUDA_STATIC_LOCAL_MEM;
        p->sm90a = 1; /* the plugin embeds the sm_90a tier's kernels too (sm_90a SASS only) */
        return 0;
    }
    if (strcmp(backend, "hip") == 0) {
        snprintf(info->name, sizeof info->name, "any AMD GPU");
        snprintf(info->vendor, sizeof info->vendor, "AMD");
        p->mma = 0, p->warp = 64, p->local_mem = p->static_local_mem = KP_GPU_HIP_LOCAL_MEM;
        p->max_group = 256; /* KP_HIP_MAX_GROUP: the code objects are built for at most 256 */
        return 0;
    }
    return -1;
}

static kp_status stub_status(kp_status st, const char *fmt, ...) {
    (void)fmt;
    return st;
}
static void stub_log(const char *fmt, ...) { (void)fmt; }
static const char *stub_cache_dir(void) { return NULL; }
static int64_t stub_tuning(const kp_device_info *dev, const char *kernel, const char *param, int64_t def) {
    (void)dev, (void)kernel, (void)param;
    return def;
}

const kp_host_services *kp_gpu_stub_host(void) {
    static const kp_host_services host = {
        .abi_version = KP_BACKEND_ABI_VERSION,
        .set_error = stub_status,
        .add_context = stub_status,
        .log = stub_log,
        .cache_dir = stub_cache_dir,
        .tuning_get = stub_tuning,
    };
    return &host;
}
