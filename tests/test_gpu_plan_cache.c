/*
 * tests/test_gpu_plan_cache.c - the plan cache of the GPU op layer
 * (backends/gpu/gpu_plan_cache.c), through the recording fake target
 * (gpu_fake_target.c): cached launches equal fresh planning field by field and kargs
 * byte by byte, invalidation by the tuning generation, bounded slots, and
 * kp_moe_forward's chain planned once per shape.
 */
#include "kp_test.h"

#include "gpu_fake_target.h"
#include "attention/attention_gen2_layout.h"

#include <math.h>
#include <stdarg.h>

/* ---- the plan cache (gpu_plan_cache.c) ---- */

/* The same fake target behind a host that reports a tuning generation, so plans are
 * cached; fake_target's host has none, so it always plans afresh. */
static uint64_t fake_generation = 1;
static uint64_t fake_tuning_generation(void) { return fake_generation; }
static const kp_host_services cached_host = {
    .abi_version = KP_BACKEND_ABI_VERSION, .set_error = fake_set_error, .add_context = fake_add_context,
    .log = fake_log, .cache_dir = fake_cache_dir, .tuning_get = fake_tuning,
    .tuning_generation = fake_tuning_generation,
};
static const kp_gpu_target cached_target = {
    .name = "fake", .host = &cached_host, .profile = fake_profile, .variant_check = fake_check,
    .launch = fake_launch, .scratch_get = fake_scratch_get, .scratch_reserve = fake_scratch_reserve,
    .scratch_release = fake_scratch_release,
};

typedef struct launches {
    int n;
    kp_gpu_launch l[FAKE_MAX];
    char options[FAKE_MAX][256];
    unsigned char kargs[FAKE_MAX][KP_GPU_MAX_KARGS_BYTES];
} launches;

static kp_status run_recorded(const kp_gpu_target *t, kp_op op, const void *params, launches *out) {
    kp_stream s = {0};
    fake_count = 0;
    kp_status st = kp_gpu_op_run(t, op, &s, params, 0);
    memset(out, 0, sizeof *out);
    out->n = fake_count < FAKE_MAX ? fake_count : FAKE_MAX;
    for (int i = 0; i < out->n; i++) {
        out->l[i] = fake_launches[i];
        memcpy(out->options[i], fake_options[i], sizeof out->options[i]); /* both [256], NUL-terminated */
        if (fake_kargs[i]) memcpy(out->kargs[i], fake_kargs[i], KP_GPU_MAX_KARGS_BYTES);
    }
    return st;
}

/* Every input of a TMA tensor map's encoding: memory, byte offset, dtype, swizzle, dims,
 * row stride, box. */
static int tmap_equal(const kp_gpu_tensor_map *a, const kp_gpu_tensor_map *b) {
    return a->buffer == b->buffer && a->address == b->address && a->byte_offset == b->byte_offset &&
           a->dtype == b->dtype && a->swizzle == b->swizzle && a->dims[0] == b->dims[0] && a->dims[1] == b->dims[1] &&
           a->row_stride == b->row_stride && a->box[0] == b->box[0] && a->box[1] == b->box[1];
}

/* Every field a target reads: variant, kernel, geometry, local bytes, arguments (tensor
 * maps field by field), kargs. */
static int launches_equal(const launches *a, const launches *b, char *why, size_t n) {
    if (a->n != b->n) return snprintf(why, n, "%d launches vs %d", a->n, b->n), 0;
    for (int i = 0; i < a->n; i++) {
        const kp_gpu_launch *x = &a->l[i], *y = &b->l[i];
        if (strcmp(x->source, y->source) || strcmp(x->kernel, y->kernel) || strcmp(a->options[i], b->options[i]))
            return snprintf(why, n, "launch %d: %s %s [%s] vs %s %s [%s]", i, x->source, x->kernel, a->options[i],
                            y->source, y->kernel, b->options[i]), 0;
        for (int d = 0; d < 3; d++)
            if (x->groups[d] != y->groups[d] || x->local[d] != y->local[d])
                return snprintf(why, n, "launch %d: geometry differs in dimension %d", i, d), 0;
        if (x->local_bytes != y->local_bytes || x->nargs != y->nargs)
            return snprintf(why, n, "launch %d: %u local bytes / %d args vs %u / %d", i, x->local_bytes, x->nargs,
                            y->local_bytes, y->nargs), 0;
        for (int k = 0; k < x->nargs; k++) {
            if (x->args[k].kind != y->args[k].kind) return snprintf(why, n, "launch %d arg %d: kind", i, k), 0;
            if (x->args[k].kind == KP_GPU_ARG_KARGS
                    ? x->args[k].v.kargs.size != y->args[k].v.kargs.size ||
                          memcmp(a->kargs[i], b->kargs[i], x->args[k].v.kargs.size) != 0
                : x->args[k].kind == KP_GPU_ARG_TENSOR_MAP ? !tmap_equal(&x->args[k].v.tmap, &y->args[k].v.tmap)
                                                           : x->args[k].v.native != y->args[k].v.native)
                return snprintf(why, n, "launch %d arg %d differs", i, k), 0;
        }
    }
    return 1;
}

/* Fresh planning, then the cached target twice (a miss that fills the cache, a hit):
 * all three launch lists identical, the second cached run a hit. */
static void check_cached_same(kp_op op, const void *params, const char *what) {
    static launches fresh, cold, warm;
    char why[512];
    kp_status st = run_recorded(&fake_target, op, params, &fresh);
    CHECK_MSG(st == KP_OK && fresh.n > 0, "%s: status %d, %d launches: %s", what, (int)st, fresh.n, fake_error);
    CHECK_INT_EQ(run_recorded(&cached_target, op, params, &cold), KP_OK);
    uint64_t hits = kp_gpu_plan_cache_stats().hits;
    CHECK_INT_EQ(run_recorded(&cached_target, op, params, &warm), KP_OK);
    if (kp_gpu_plan_cache_stats().hits <= hits) CHECK_MSG(0, "%s: the second run did not hit the plan cache", what);
    if (!launches_equal(&fresh, &cold, why, sizeof why)) CHECK_MSG(0, "%s: first cached run: %s", what, why);
    if (!launches_equal(&fresh, &warm, why, sizeof why)) CHECK_MSG(0, "%s: cache hit: %s", what, why);
}

static kp_attention_decode_params decode_params(kp_dtype dt, int s_q, int h_q, int d, int max_blocks) {
    kp_attention_decode_params p;
    memset(&p, 0, sizeof p);
    p.q = fake_tensor(0, dt, 4, (int64_t[]){2, s_q, h_q, d});
    p.k_cache = fake_tensor(1, dt, 4, (int64_t[]){512, 16, 8, d});
    p.v_cache = fake_tensor(2, dt, 4, (int64_t[]){512, 16, 8, d});
    p.block_table = fake_tensor(3, KP_I32, 2, (int64_t[]){2, max_blocks});
    p.seq_lens = fake_tensor(4, KP_I32, 1, (int64_t[]){2});
    p.out = fake_tensor(5, dt, 4, (int64_t[]){2, s_q, h_q, d});
    p.softmax_scale = 0.1f, p.causal = s_q > 1;
    return p;
}

/* Shapes that differ only in what a plan depends on (dtype, head dim, rows per KV
 * head, the split count a longer context gives, causal, the expert load) must never
 * share a cached plan, and a cached plan must launch exactly what fresh planning does. */
KP_TEST(gpu_plan_cache_same_launches_as_fresh_planning) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    const kp_dtype dts[] = {KP_BF16, KP_F16, KP_F32};
    for (int i = 0; i < 3; i++)
        for (int d = 64; d <= 128; d += 64)
            for (int s_q = 1; s_q <= 2; s_q++)
                for (int mb = 2; mb <= 512; mb *= 16) { /* 32 or 8192 keys: 1 split or many */
                    kp_attention_decode_params p = decode_params(dts[i], s_q, 8 * s_q * (d / 64), d, mb);
                    check_cached_same(KP_OP_ATTENTION_DECODE, &p, "attention_decode");
                }
    kp_mla_decode_params m;
    memset(&m, 0, sizeof m);
    for (int h = 16; h <= 128; h *= 8) {
        m.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){2, 1, h, 576});
        m.kv_cache = fake_tensor(1, KP_BF16, 4, (int64_t[]){64, 64, 1, 576});
        m.block_table = fake_tensor(2, KP_I32, 2, (int64_t[]){2, 32});
        m.seq_lens = fake_tensor(3, KP_I32, 1, (int64_t[]){2});
        m.out = fake_tensor(4, KP_BF16, 4, (int64_t[]){2, 1, h, 512});
        m.softmax_scale = 0.135f, m.head_dim_v = 512;
        check_cached_same(KP_OP_MLA_DECODE, &m, "mla_decode");
    }
    for (int gen = 1; gen <= 2; gen++) {
        if (gen == 1) setenv("KPORT_GPU_KERNELS", "attention_prefill=gen1", 1);
        else unsetenv("KPORT_GPU_KERNELS");
        for (int i = 0; i < 3; i++)
            for (int d = 64; d <= 192; d += 64) /* 64, 128, 192/128 */
                for (int causal = 0; causal <= 1; causal++) {
                    kp_attention_prefill_params p = fake_prefill_params(dts[i], d);
                    if (d == 192) {
                        p.v = fake_tensor(2, dts[i], 3, (int64_t[]){300, 8, 128});
                        p.out = fake_tensor(3, dts[i], 3, (int64_t[]){300, 32, 128});
                    }
                    p.causal = causal;
                    check_cached_same(KP_OP_ATTENTION_PREFILL, &p, gen == 1 ? "prefill gen1" : "prefill gen2");
                }
    }
    unsetenv("KPORT_GPU_KERNELS");
    for (int i = 0; i < 2; i++)
        for (int64_t rows = 8; rows <= 8192; rows *= 32) {
            kp_grouped_gemm_params g;
            memset(&g, 0, sizeof g);
            g.a = fake_tensor(0, dts[i], 2, (int64_t[]){rows, 256});
            g.w = fake_tensor(1, dts[i], 3, (int64_t[]){4, 512, 256});
            g.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){5});
            g.out = fake_tensor(3, dts[i], 2, (int64_t[]){rows, 512});
            check_cached_same(KP_OP_GROUPED_GEMM, &g, "grouped_gemm");
        }
}

/* A new tuning generation (the table reread) retires every cached plan; so does a
 * different device profile. */
KP_TEST(gpu_plan_cache_invalidated_by_tuning_change) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    setenv("KPORT_GPU_KERNELS", "attention_prefill=gen1", 1);
    kp_attention_prefill_params p = fake_prefill_params(KP_F16, 64);
    static launches a, b;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_ATTENTION_PREFILL, &p, &a), KP_OK);
    CHECK_STR_CONTAINS(a.options[0], "-DATTN_BN=32");
    fake_tuned_bn = 16; /* the table changes; until its generation moves the cached plan stands */
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_ATTENTION_PREFILL, &p, &b), KP_OK);
    CHECK_STR_CONTAINS(b.options[0], "-DATTN_BN=32");
    fake_generation++;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_ATTENTION_PREFILL, &p, &b), KP_OK);
    CHECK_STR_CONTAINS(b.options[0], "-DATTN_BN=16");
    check_cached_same(KP_OP_ATTENTION_PREFILL, &p, "after the tuning change");
    fake_tuned_bn = 0, fake_generation++;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_ATTENTION_PREFILL, &p, &b), KP_OK);
    CHECK_STR_EQ(b.options[0], a.options[0]);
    unsetenv("KPORT_GPU_KERNELS");
    /* another profile behind the same device handle (less shared memory) plans afresh */
    kp_grouped_gemm_params g;
    memset(&g, 0, sizeof g);
    g.a = fake_tensor(0, KP_BF16, 2, (int64_t[]){4096, 256});
    g.w = fake_tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256});
    g.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){5});
    g.out = fake_tensor(3, KP_BF16, 2, (int64_t[]){4096, 512});
    check_cached_same(KP_OP_GROUPED_GEMM, &g, "227 KiB");
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_GROUPED_GEMM, &g, &a), KP_OK);
    fake_prof.local_mem = 64 * 1024;
    check_cached_same(KP_OP_GROUPED_GEMM, &g, "64 KiB");
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_GROUPED_GEMM, &g, &b), KP_OK);
    CHECK(a.l[0].local_bytes > 64 * 1024 && b.l[0].local_bytes <= 64 * 1024);
}

/* More distinct plans than slots: the cache holds at most KP_GPU_PLAN_SLOTS, and what
 * it evicted is planned again, correctly. */
KP_TEST(gpu_plan_cache_stays_bounded) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    kp_grouped_gemm_params g;
    memset(&g, 0, sizeof g);
    g.w = fake_tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256});
    g.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){5});
    const int plans = 3 * KP_GPU_PLAN_SLOTS;
    kp_stream s = {0};
    for (int64_t i = 1; i <= plans; i++) { /* 4 experts: i rows each on average, one key per i */
        g.a = fake_tensor(0, KP_BF16, 2, (int64_t[]){4 * i, 256});
        g.out = fake_tensor(3, KP_BF16, 2, (int64_t[]){4 * i, 512});
        fake_count = 0;
        CHECK_INT_EQ(kp_gpu_op_run(&cached_target, KP_OP_GROUPED_GEMM, &s, &g, 0), KP_OK);
    }
    kp_gpu_plan_stats st = kp_gpu_plan_cache_stats();
    CHECK(st.misses >= (uint64_t)plans);
    CHECK(st.slots_used > 0 && st.slots_used <= KP_GPU_PLAN_SLOTS);
    for (int64_t i = 1; i <= plans; i += 97) {
        g.a = fake_tensor(0, KP_BF16, 2, (int64_t[]){4 * i, 256});
        g.out = fake_tensor(3, KP_BF16, 2, (int64_t[]){4 * i, 512});
        check_cached_same(KP_OP_GROUPED_GEMM, &g, "after eviction");
    }
}

/* The gate, align and combine plans (cached per dtype, per align variant) launch what
 * fresh planning does, standalone, across dtypes, expert counts (both align variants)
 * and token counts (one align chunk or several). */
KP_TEST(gpu_plan_cache_moe_gate_align_combine_same_as_fresh) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    const kp_dtype dts[] = {KP_BF16, KP_F16, KP_F32};
    for (int i = 0; i < 3; i++)
        for (int64_t t = 1; t <= 4096; t *= 64) {
            kp_moe_gate_params g;
            memset(&g, 0, sizeof g);
            g.logits = fake_tensor(0, dts[i], 2, (int64_t[]){t, 256});
            if (i == 1) g.bias = fake_tensor(1, KP_F32, 1, (int64_t[]){256});
            g.topk_ids = fake_tensor(2, KP_I32, 2, (int64_t[]){t, 8});
            g.topk_weights = fake_tensor(3, KP_F32, 2, (int64_t[]){t, 8});
            g.routing = (kp_moe_routing){8, 8, 4, KP_MOE_SCORING_SIGMOID, 1, 2.5f};
            check_cached_same(KP_OP_MOE_GATE, &g, "moe_gate");
            kp_moe_combine_params cb;
            memset(&cb, 0, sizeof cb);
            cb.expert_out = fake_tensor(0, dts[i], 2, (int64_t[]){t * 8, 512});
            cb.token_pos = fake_tensor(1, KP_I32, 2, (int64_t[]){t, 8});
            cb.topk_weights = fake_tensor(2, KP_F32, 2, (int64_t[]){t, 8});
            cb.out = fake_tensor(3, dts[i], 2, (int64_t[]){t, 512});
            check_cached_same(KP_OP_MOE_COMBINE, &cb, "moe_combine");
            for (int e = 64; e <= 1024; e *= 16) {
                kp_moe_align_params a;
                memset(&a, 0, sizeof a);
                a.topk_ids = fake_tensor(0, KP_I32, 2, (int64_t[]){t, 8});
                a.sorted_ids = fake_tensor(1, KP_I32, 1, (int64_t[]){t * 8 + (int64_t)e * 15});
                a.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){e + 1});
                a.token_pos = fake_tensor(3, KP_I32, 2, (int64_t[]){t, 8});
                a.num_experts = e, a.block_size = 16;
                check_cached_same(KP_OP_MOE_ALIGN, &a, e > 512 ? "moe_align (4096 experts)" : "moe_align");
            }
        }
}

/* ---- kp_moe_forward's chain plan (gpu_moe_chain.c) ---- */

/* A routed layer: T tokens, E experts, top-k, hidden and inter sizes; x/out dtype dt,
 * expert weights wdt (e4m3: with their f32 block scales); inter_s > 0 adds a shared
 * expert; bias: a gate bias. Buffers 0..11 of fake_buf, the workspace at offset 512. */
static kp_moe_forward_params forward_params(int64_t t, int64_t e, int k, int64_t hidden, int64_t inter, kp_dtype dt,
                                            kp_dtype wdt, int64_t inter_s, int bias) {
    kp_moe_forward_params p;
    memset(&p, 0, sizeof p);
    p.x = fake_tensor(0, dt, 2, (int64_t[]){t, hidden});
    p.router_logits = fake_tensor(1, KP_F32, 2, (int64_t[]){t, e});
    p.w13 = fake_tensor(2, wdt, 3, (int64_t[]){e, 2 * inter, hidden});
    p.w2 = fake_tensor(3, wdt, 3, (int64_t[]){e, hidden, inter});
    if (wdt == KP_FP8_E4M3) {
        p.w13_scale = fake_tensor(8, KP_F32, 3, (int64_t[]){e, (2 * inter + 127) / 128, hidden / 128});
        p.w2_scale = fake_tensor(9, KP_F32, 3, (int64_t[]){e, (hidden + 127) / 128, inter / 128});
    }
    if (inter_s > 0) {
        p.shared_w13 = fake_tensor(6, dt, 2, (int64_t[]){2 * inter_s, hidden});
        p.shared_w2 = fake_tensor(7, dt, 2, (int64_t[]){hidden, inter_s});
    }
    if (bias) p.bias = fake_tensor(10, KP_F32, 1, (int64_t[]){e});
    p.out = fake_tensor(4, dt, 2, (int64_t[]){t, hidden});
    p.workspace = &fake_buf[5], p.workspace_offset = 512;
    p.routing = (kp_moe_routing){k, e % 4 == 0 ? 4 : 1, e % 4 == 0 ? 2 : 1, KP_MOE_SCORING_SIGMOID, 1, 2.5f};
    return p;
}

/* The chain from the cache launches exactly what planning each launch afresh does
 * (variant, kernel, geometry, local bytes, arguments, kargs byte by byte), across T
 * (1 token to several align chunks), E, top-k, dtypes, e4m3 weights, a shared expert
 * (split-K on its decode GEMMs), a bias, both GEMM generations and an unaligned x
 * (generation 2 cannot take it); a hit then fills only this call's buffers, offsets and
 * routing scalars. */
KP_TEST(gpu_plan_cache_moe_forward_chain_same_as_fresh) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    const int64_t ts[] = {1, 16, 200, 1100};
    const int64_t es[] = {8, 64, 256};
    const int ks[] = {1, 2, 8};
    const kp_dtype dts[] = {KP_BF16, KP_F16, KP_F32};
    int cases = 0;
    for (int gen = 1; gen <= 2; gen++) {
        if (gen == 1) setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen1", 1);
        else unsetenv("KPORT_GPU_KERNELS");
        for (int ti = 0; ti < 4; ti++)
            for (int ei = 0; ei < 3; ei++)
                for (int ki = 0; ki < 3; ki++) {
                    if (ks[ki] > es[ei]) continue;
                    const int v = ti + ei + ki; /* vary the rest across the grid */
                    const kp_dtype dt = dts[v % 3];
                    const kp_dtype wdt = dt != KP_F32 && v % 2 ? KP_FP8_E4M3 : dt;
                    const int64_t hidden = v % 4 == 3 ? 1024 : 256;
                    kp_moe_forward_params p =
                        forward_params(ts[ti], es[ei], ks[ki], hidden, 128, dt, wdt, v % 3 == 1 ? 256 : 0, v % 2);
                    char what[160];
                    snprintf(what, sizeof what, "moe_forward gen%d T=%lld E=%lld k=%d %s/%s hidden %lld%s", gen,
                             (long long)ts[ti], (long long)es[ei], ks[ki], kp_dtype_name(dt), kp_dtype_name(wdt),
                             (long long)hidden, p.shared_w13.buffer ? " shared" : "");
                    check_cached_same(KP_OP_MOE_FORWARD, &p, what);
                    cases++;
                    /* the same shape with other routing scalars and offsets: a hit, same as fresh */
                    p.routing.route_scale = 1.0f, p.routing.renormalize = 0;
                    p.out.offset = (size_t)hidden * kp_dtype_size(dt) * 2, p.workspace_offset = 1024;
                    check_cached_same(KP_OP_MOE_FORWARD, &p, what);
                    /* x one element in: generation 2 cannot take it, whatever the cache holds */
                    p.x.offset = kp_dtype_size(dt);
                    check_cached_same(KP_OP_MOE_FORWARD, &p, what);
                }
    }
    unsetenv("KPORT_GPU_KERNELS");
    CHECK(cases >= 40);
    kp_gpu_plan_stats st = kp_gpu_plan_cache_stats();
    CHECK(st.big_slots_used > 0 && st.big_slots_used <= KP_GPU_PLAN_BIG_SLOTS);
    /* split-K ran somewhere in the grid (the shared expert's decode GEMMs at hidden 1024) */
    static launches l;
    kp_moe_forward_params p = forward_params(1, 8, 2, 1024, 128, KP_BF16, KP_BF16, 256, 0);
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &l), KP_OK);
    int reduce = 0;
    for (int i = 0; i < l.n; i++) reduce += strcmp(l.l[i].kernel, "kp_grouped_gemm_gen2_reduce") == 0;
    CHECK(reduce > 0);
}

/* W8A8 (activation_dtype e4m3): the cached chain launches exactly what fresh planning
 * does, its quantize launches and W8A8 GEMMs included - x's quantize only where the w13
 * GEMMs quantize h and h_s in their SWIGLU_FP8 epilogue (sm_90's profile), and x's, f32
 * h's and f32 h_s's with the tuning table's g8_fused_swiglu = 0 -, across
 * T, UE8M0, no / x-dtype / FP8 shared expert; a hit refills this call's buffers and
 * offsets. W8A16 of the same shape is another plan (activation_dtype is in the
 * signature). */
KP_TEST(gpu_plan_cache_moe_forward_chain_w8a8_same_as_fresh) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    const int64_t ts[] = {1, 16, 200};
    for (int fuse = 1; fuse >= 0; fuse--) {
        fake_tuned_fused = fuse ? -1 : 0, fake_generation++; /* a new tuning table retires the cached chains */
        for (int ti = 0; ti < 3; ti++)
        for (int shared = 0; shared < 3; shared++) { /* none, bf16, FP8 */
            kp_moe_forward_params p =
                forward_params(ts[ti], 64, 8, 256, 256, KP_BF16, KP_FP8_E4M3, shared ? 384 : 0, ti % 2);
            if (shared == 2) {
                p.shared_w13.dtype = p.shared_w2.dtype = KP_FP8_E4M3;
                p.shared_w13_scale = fake_tensor(11, KP_F32, 2, (int64_t[]){6, 2});
                p.shared_w2_scale = fake_tensor(11, KP_F32, 2, (int64_t[]){2, 3});
                p.shared_w2_scale.offset = 4096;
            }
            p.activation_dtype = KP_FP8_E4M3, p.activation_scale_ue8m0 = ti == 1;
            char what[128];
            snprintf(what, sizeof what, "moe_forward W8A8 T=%lld%s", (long long)ts[ti],
                     shared == 2 ? " FP8 shared" : shared ? " shared" : "");
            check_cached_same(KP_OP_MOE_FORWARD, &p, what);
            static launches l;
            CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &l), KP_OK);
            int quant = 0, gemm8 = 0, fused = 0;
            for (int i = 0; i < l.n; i++) {
                quant += strcmp(l.l[i].kernel, "kp_quantize_fp8") == 0;
                gemm8 += strcmp(l.l[i].kernel, "kp_grouped_gemm_fp8_gen2_tiled") == 0 ||
                         strcmp(l.l[i].kernel, "kp_grouped_gemm_fp8_rows") == 0;
                fused += strstr(l.l[i].options, "-DG8_BN=256") != NULL;
            }
            const int want_q = fuse ? 1 : shared == 2 ? 3 : 2, want_f = fuse ? (shared == 2 ? 2 : 1) : 0;
            CHECK_MSG(quant == want_q && gemm8 == (shared == 2 ? 4 : 2) && fused == want_f,
                      "%s: %d quantize and %d W8A8 GEMM launches (%d fused)", what, quant, gemm8, fused);
            p.out.offset = 256 * 2 * 2, p.workspace_offset = 1024; /* a hit with other offsets */
            check_cached_same(KP_OP_MOE_FORWARD, &p, what);
            p.activation_dtype = 0, p.activation_scale_ue8m0 = 0; /* W8A16: its own plan */
            check_cached_same(KP_OP_MOE_FORWARD, &p, what);
        }
    }
}

/* How many of a chain's launches run the sm_90a tier's GEMM. */
static int sm90_launches(const launches *l) {
    int n = 0;
    for (int i = 0; i < l->n; i++) n += strcmp(l->l[i].source, KP_GPU_SRC_MOE_GEMM_SM90) == 0;
    return n;
}

/* The sm_90a tier in the chain, on a fake sm_90a profile whose tuning table says
 * grouped_gemm;gen 3 (as test_gpu_plan_sm90.c sets it up): w2's GEMM (STORE, no gather)
 * runs kp_grouped_gemm_sm90 with TMA tensor maps of h and w2; the SwiGLU and combine GEMMs
 * stay on generation 2. The first call of a shape plans and records the chain; the next
 * calls, on other buffers and offsets (w2, the workspace that holds h and y, out), are
 * plan-cache hits whose launches, each tensor map's buffer, byte offset, dims, row
 * stride, box and swizzle included, equal a fresh plan's for those buffers: a replay
 * encodes this call's maps, never an earlier call's. KPORT_DISABLE_TIER=sm90 then takes
 * the tier off at once (it is in the signature). */
KP_TEST(gpu_plan_cache_moe_forward_chain_sm90_same_as_fresh) {
    fake_reset("cuda");
    fake_prof.sm90a = 1, fake_tuned_gen = 3, fake_generation++;
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    unsetenv("KPORT_DISABLE_TIER");
    static launches fresh, cached;
    char why[512];
    for (int shape = 0; shape < 3; shape++) {
        for (int call = 0; call < 3; call++) {
            kp_moe_forward_params p =
                shape == 0   ? forward_params(16, 64, 8, 256, 128, KP_BF16, KP_BF16, 0, 1)
                : shape == 1 ? forward_params(200, 8, 2, 1024, 256, KP_BF16, KP_BF16, 256, 0)
                             : forward_params(1100, 64, 4, 512, 192, KP_F16, KP_F16, 0, 0);
            if (call > 0) { /* other buffers and 16-byte multiples of offsets for w2, h, y and out */
                p.w2.buffer = &fake_buf[7 + call], p.w2.offset = 256 * (size_t)call;
                if (call == 1) p.workspace = &fake_buf[11];
                p.workspace_offset = 512 + 256 * (size_t)call;
                p.out.buffer = &fake_buf[call == 1 ? 9 : 4], p.out.offset = 64 * (size_t)call;
            }
            char what[96];
            snprintf(what, sizeof what, "moe_forward sm90 shape %d call %d", shape, call);
            /* a replay is one lookup, a hit; planning afresh misses (the chain, then its launches' plans) */
            const kp_gpu_plan_stats before = kp_gpu_plan_cache_stats();
            CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &cached), KP_OK);
            const kp_gpu_plan_stats after = kp_gpu_plan_cache_stats();
            const int replay = after.hits == before.hits + 1 && after.misses == before.misses;
            CHECK_MSG(replay == (call > 0), "%s: %s (%llu hits, %llu misses)", what,
                      replay ? "replayed before the chain was planned" : "planned again",
                      (unsigned long long)(after.hits - before.hits), (unsigned long long)(after.misses - before.misses));
            CHECK_INT_EQ(run_recorded(&fake_target, KP_OP_MOE_FORWARD, &p, &fresh), KP_OK);
            CHECK_MSG(sm90_launches(&fresh) == 1, "%s: %d sm_90a launches", what, sm90_launches(&fresh));
            if (!launches_equal(&fresh, &cached, why, sizeof why)) CHECK_MSG(0, "%s: %s", what, why);
        }
    }
    setenv("KPORT_DISABLE_TIER", "sm90", 1);
    kp_moe_forward_params p = forward_params(16, 64, 8, 256, 128, KP_BF16, KP_BF16, 0, 1);
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &cached), KP_OK);
    CHECK_INT_EQ(sm90_launches(&cached), 0);
    check_cached_same(KP_OP_MOE_FORWARD, &p, "moe_forward sm90 under KPORT_DISABLE_TIER=sm90");
    unsetenv("KPORT_DISABLE_TIER");
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &cached), KP_OK);
    CHECK_INT_EQ(sm90_launches(&cached), 1);
    fake_tuned_gen = 0, fake_generation++;
}

/* The source of a chain's first GEMM launch ("" when none). */
static const char *first_gemm_source(const launches *l) {
    for (int i = 0; i < l->n; i++)
        if (strstr(l->l[i].source, "moe_gemm")) return l->l[i].source;
    return "";
}

/* A new tuning generation retires a cached chain; a changed KPORT_GPU_KERNELS replans
 * at once (it is part of the chain's signature). */
KP_TEST(gpu_plan_cache_moe_forward_chain_invalidated) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    kp_moe_forward_params p = forward_params(16, 64, 8, 256, 128, KP_BF16, KP_FP8_E4M3, 0, 1);
    static launches a, b;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &a), KP_OK);
    CHECK(a.n >= 4);
    CHECK_STR_EQ(first_gemm_source(&a), KP_GPU_SRC_MOE_GEMM2);
    fake_tuned_gen = 1; /* the table now says generation 1; until its generation moves the chain stands */
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &b), KP_OK);
    CHECK_STR_EQ(first_gemm_source(&b), KP_GPU_SRC_MOE_GEMM2);
    fake_generation++;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &b), KP_OK);
    CHECK_STR_EQ(first_gemm_source(&b), KP_GPU_SRC_MOE_GEMM);
    check_cached_same(KP_OP_MOE_FORWARD, &p, "moe_forward after the tuning change");
    fake_tuned_gen = 0, fake_generation++;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &b), KP_OK);
    CHECK_STR_EQ(first_gemm_source(&b), KP_GPU_SRC_MOE_GEMM2);
    /* the environment switch, with no tuning change */
    setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen1", 1);
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &b), KP_OK);
    CHECK_STR_EQ(first_gemm_source(&b), KP_GPU_SRC_MOE_GEMM);
    check_cached_same(KP_OP_MOE_FORWARD, &p, "moe_forward under KPORT_GPU_KERNELS=grouped_gemm=gen1");
    /* a malformed setting fails every call (never served from the cache) */
    setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen9", 1);
    kp_stream s = {0};
    for (int i = 0; i < 2; i++) {
        fake_error[0] = '\0';
        CHECK_INT_EQ(kp_gpu_op_run(&cached_target, KP_OP_MOE_FORWARD, &s, &p, 0), KP_ERR_INVALID_ARGUMENT);
        CHECK_STR_CONTAINS(fake_error, "gen9");
    }
    unsetenv("KPORT_GPU_KERNELS");
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &b), KP_OK);
    if (!launches_equal(&a, &b, fake_error, sizeof fake_error)) CHECK_MSG(0, "back to the first plan: %s", fake_error);
}
