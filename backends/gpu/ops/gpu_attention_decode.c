/*
 * backends/gpu/ops/gpu_attention_decode.c — kp_attention_decode on the GPU backends:
 * kernels/attention/attention_decode.cl (paged KV, split-KV with a combine kernel), or
 * generation 2, attention_decode_gen2.cl (16-bit, no FP8 cache, no window: its tile plan
 * in gpu_attention_gen2.c), with the same grid, split-KV scratch and combine kernel (from
 * a generation-1 variant of the same shape).
 * The launch itself is shared with kp_mla_decode (gpu_mla_decode.c): MLA is the same
 * kernel built with -DATTN_MLA, one KV head, V read from the K tile; its generation 2
 * is mla_decode_gen2.cl (the same arguments, grid and scratch; an FP8 latent cache's
 * scale arguments as generation 1 takes them).
 *
 * Split-KV partials live in the per-stream scratch (kp_gpu_scratch_acquire): the
 * stream is in order, so a call's kernels never overlap the previous call's.
 */
#include "gpu_ops.h"

#include "attention/attention_gen2_layout.h"

#include <stdio.h>
#include <string.h>

#define ATTN_LOG2E 1.4426950408889634

/* Automatic split count: enough work-groups for every compute unit per_cu times over
 * (2; 1 for generation-2 MLA, whose 227 KiB work-group fills an SM: more splits would
 * only add partials to write and combine), each split at least two key tiles of the
 * longest sequence the block table can hold. */
static int auto_splits(const kp_gpu_profile *p, int per_cu, int64_t base_groups, int64_t max_len, int bn) {
    int64_t want = per_cu * (int64_t)(p->compute_units > 0 ? p->compute_units : 1);
    if (base_groups >= want) return 1;
    int64_t ns = (want + base_groups - 1) / base_groups, tiles = (max_len + bn - 1) / bn;
    if (ns > tiles / 2) ns = tiles / 2;
    if (ns > 64) ns = 64;
    return ns < 1 ? 1 : (int)ns;
}

/* The FP8-cache variant of a planned tile: the same options plus -DATTN_KV_FP8 (the
 * tiles hold q's dtype either way, so the plan's sizes stand). An ahead-of-time build
 * that lacks a tuned tile's FP8 variant falls back to the default tile's. */
static kp_status plan_fp8(kp_gpu_ctx *c, const char *name, kp_dtype dt, int dqk, int dv, int mla, int rows,
                          kp_gpu_attn_cfg *cfg, char *opts, size_t n) {
    size_t len = strlen(opts);
    snprintf(opts + len, n - len, " -DATTN_KV_FP8");
    kp_status st = kp_gpu_variant_ok(c, KP_GPU_SRC_ATTN_DECODE, opts);
    if (st == KP_OK) return st;
    kp_gpu_attn_cfg d;
    if (kp_gpu_attn_config(c->host, &c->prof, name, dt, dqk, dv, mla, rows, 0, &d) != KP_OK) return st;
    kp_gpu_attn_options(&d, opts, n);
    len = strlen(opts);
    snprintf(opts + len, n - len, " -DATTN_KV_FP8");
    if ((st = kp_gpu_variant_ok(c, KP_GPU_SRC_ATTN_DECODE, opts)) == KP_OK) *cfg = d;
    return st;
}

kp_status kp_gpu_paged_decode(kp_gpu_ctx *c, kp_op op, const kp_gpu_paged_args *pa, int dry_run) {
    const kp_host_services *h = c->host;
    const char *name = kp_backend_op_name(op);
    int gen;
    const int fp8 = pa->k_cache->dtype == KP_FP8_E4M3;
    kp_status st = kp_gpu_kernel_gen(c, name, kp_gpu_attn2_decode_missing(c, pa), &gen);
    if (st != KP_OK) return st;
    const kp_tensor *q = pa->q, *kc = pa->k_cache, *vc = pa->v_cache;
    int dqk = (int)q->shape[3], dv = pa->dv;
    if (!kp_gpu_attn_dims_supported(dqk, dv, pa->mla))
        return h->set_error(KP_ERR_UNSUPPORTED, "%s on %s: head dims %d/%d are not built (supported: %s)", name,
                            c->t->name, dqk, dv, pa->mla ? "576/512, 576/256" : "64, 128, 256, 192/128");
    int64_t b = q->shape[0], s_q = q->shape[1], h_q = q->shape[2], h_kv = kc->shape[2];
    int64_t num_blocks = kc->shape[0], block_size = kc->shape[1], max_blocks = pa->block_table->shape[1];
    if (b * s_q * h_q > INT32_MAX || num_blocks > INT32_MAX || max_blocks * block_size > INT32_MAX)
        return h->set_error(KP_ERR_UNSUPPORTED, "%s on %s: more than 2^31 rows, blocks or keys", name, c->t->name);
    int group = (int)(h_q / h_kv);
    kp_gpu_attn_cfg cfg;
    char opts[256];
    const char *src = KP_GPU_SRC_ATTN_DECODE, *kernel = "kp_attention_decode_paged";
    char combine_opts[256]; /* a generation-1 variant: generation 2 launches its kp_attention_combine */
    size_t local_bytes = 0;
    if (gen == 2 && pa->mla) { /* mla_decode_gen2.cl; the combine from the generation-1 MLA plan */
        kp_gpu_mla2_tile t;
        src = KP_GPU_SRC_MLA_DECODE2, kernel = "kp_mla_decode_gen2";
        if (!kp_gpu_mla2_tile_pick(h, &c->prof, (int)(s_q * group), dqk, fp8, 1, &t))
            return h->set_error(KP_ERR_UNSUPPORTED, "%s (generation 2) on %s: no tile fits", name, c->t->name);
        kp_gpu_mla2_options(&t, q->dtype, dqk, dv, opts, sizeof opts);
        if (kp_gpu_variant_ok(c, src, opts) != KP_OK) { /* a tuned tile not built here */
            kp_gpu_mla2_tile_pick(h, &c->prof, (int)(s_q * group), dqk, fp8, 0, &t);
            kp_gpu_mla2_options(&t, q->dtype, dqk, dv, opts, sizeof opts);
        }
        st = kp_gpu_variant_ok(c, src, opts);
        kp_gpu_attn_cfg c1;
        if (st == KP_OK)
            st = kp_gpu_attn_plan(c, name, KP_GPU_SRC_ATTN_DECODE, q->dtype, dqk, dv, 1, (int)(s_q * group), &c1,
                                  combine_opts, sizeof combine_opts);
        cfg.bm = 16 * t.wm, cfg.bn = t.bn, cfg.nt = KP_MLA2_THREADS(t.wm), local_bytes = t.local_bytes;
    } else if (gen == 2) { /* the plan fills what the launch below reads: bm, bn, nt */
        kp_gpu_attn2_dec_tile t;
        src = KP_GPU_SRC_ATTN_DECODE2, kernel = "kp_attention_decode_gen2";
        if (!kp_gpu_attn2_dec_tile_pick(h, &c->prof, (int)(s_q * group), dqk, dv, 1, &t))
            return h->set_error(KP_ERR_UNSUPPORTED, "%s (generation 2) on %s: no tile fits", name, c->t->name);
        kp_gpu_attn2_dec_options(&t, q->dtype, dqk, dv, opts, sizeof opts);
        if (kp_gpu_variant_ok(c, src, opts) != KP_OK) { /* a tuned tile not built here */
            kp_gpu_attn2_dec_tile_pick(h, &c->prof, (int)(s_q * group), dqk, dv, 0, &t);
            kp_gpu_attn2_dec_options(&t, q->dtype, dqk, dv, opts, sizeof opts);
        }
        st = kp_gpu_variant_ok(c, src, opts);
        kp_gpu_attn_cfg c1;
        if (st == KP_OK)
            st = kp_gpu_attn_plan(c, name, KP_GPU_SRC_ATTN_DECODE, q->dtype, dqk, dv, 0, (int)(s_q * group), &c1,
                                  combine_opts, sizeof combine_opts);
        cfg.bm = 16 * t.wm, cfg.bn = t.bn, cfg.nt = KP_ATTN2_DEC_THREADS(t.wm, t.wn), local_bytes = t.local_bytes;
    } else {
        st = kp_gpu_attn_plan(c, name, src, q->dtype, dqk, dv, pa->mla, (int)(s_q * group), &cfg, opts, sizeof opts);
        if (st == KP_OK && fp8)
            st = plan_fp8(c, name, q->dtype, dqk, dv, pa->mla, (int)(s_q * group), &cfg, opts, sizeof opts);
        snprintf(combine_opts, sizeof combine_opts, "%s", opts);
    }
    kp_gpu_kernel_note(c, KP_GPU_NOTE_MAIN, gen, kernel); /* not its split-KV combine */
    if (st != KP_OK || dry_run || b == 0) return st;

    int64_t rows = s_q * group, m_tiles = (rows + cfg.bm - 1) / cfg.bm;
    int ns = pa->num_splits > 0 ? pa->num_splits
                                : auto_splits(&c->prof, gen == 2 && pa->mla ? 1 : 2, b * h_kv * m_tiles,
                                              max_blocks * block_size, cfg.bn);
    int64_t nrows_all = b * s_q * h_q;
    void *scratch[2] = {NULL, NULL}; /* partials [ns, rows, dv] f32 and their lse [ns, rows] */
    if (ns > 1) {
        /* ns <= 1024 and rows, dv < 2^31, but their product may not fit a size_t */
        if ((uint64_t)nrows_all > (uint64_t)SIZE_MAX / sizeof(float) / (uint64_t)ns / (uint64_t)(dv > 0 ? dv : 1))
            return h->set_error(KP_ERR_OUT_OF_MEMORY, "%s: %d split-KV partials of %lld rows x %d do not fit in memory",
                                name, ns, (long long)nrows_all, dv);
        size_t bytes[2] = {(size_t)ns * (size_t)nrows_all * (size_t)dv * sizeof(float),
                           (size_t)ns * (size_t)nrows_all * sizeof(float)};
        if ((st = kp_gpu_scratch_acquire(c, bytes, scratch)) != KP_OK)
            return h->add_context(st, "%s: split-KV partials", name);
    }

    const kp_tensor *bt = pa->block_table, *out = pa->out, *lse = pa->lse;
    kp_attn_decode_kargs ka = {
        .q_off = kp_gpu_elem_offset(q), .q_s0 = q->strides[0], .q_s1 = q->strides[1], .q_s2 = q->strides[2],
        .k_off = kp_gpu_elem_offset(kc), .k_s0 = kc->strides[0], .k_s1 = kc->strides[1], .k_s2 = kc->strides[2],
        .v_off = kp_gpu_elem_offset(vc), .v_s0 = vc->strides[0], .v_s1 = vc->strides[1], .v_s2 = vc->strides[2],
        .o_off = kp_gpu_elem_offset(out), .o_s0 = out->strides[0], .o_s1 = out->strides[1], .o_s2 = out->strides[2],
        .lse_off = kp_gpu_elem_offset(lse), .bt_off = kp_gpu_elem_offset(bt), .bt_s0 = bt->strides[0],
        .sl_off = kp_gpu_elem_offset(pa->seq_lens), .has_lse = lse->buffer != NULL, .nsplit = ns,
        .max_blocks = (int32_t)max_blocks, .num_blocks = (int32_t)num_blocks, .block_size = (int32_t)block_size,
        .s_q = (int32_t)s_q, .h_q = (int32_t)h_q, .group = group, .causal = pa->causal,
        .scale_log2 = (float)(pa->scale * ATTN_LOG2E), .wl = pa->window_left > 0 ? pa->window_left : -1,
    };
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, src, opts, kernel);
    kp_gpu_arg_tensor(&l, q), kp_gpu_arg_tensor(&l, kc), kp_gpu_arg_tensor(&l, vc);
    kp_gpu_arg_tensor(&l, out), kp_gpu_arg_tensor(&l, lse);
    kp_gpu_arg_native(&l, scratch[0]), kp_gpu_arg_native(&l, scratch[1]);
    kp_gpu_arg_tensor(&l, bt), kp_gpu_arg_tensor(&l, pa->seq_lens);
    kp_gpu_arg_kargs(&l, &ka, sizeof ka);
    kp_attn_kv_fp8_kargs kf;
    if (fp8) { /* MLA: kv_scale is both */
        kf = (kp_attn_kv_fp8_kargs){
            .ks_off = kp_gpu_elem_offset(pa->k_scale), .vs_off = kp_gpu_elem_offset(pa->v_scale),
            .ks_per_block = pa->k_scale->shape[0] != 1, .vs_per_block = pa->v_scale->shape[0] != 1,
        };
        kp_gpu_arg_tensor(&l, pa->k_scale), kp_gpu_arg_tensor(&l, pa->v_scale);
        kp_gpu_arg_kargs(&l, &kf, sizeof kf);
    }
    l.groups[0] = (uint64_t)m_tiles, l.groups[1] = (uint64_t)h_kv, l.groups[2] = (uint64_t)(b * ns);
    l.local[0] = (uint32_t)cfg.nt, l.local_bytes = (uint32_t)local_bytes;
    st = kp_gpu_enqueue(c, &l);

    if (st == KP_OK && ns > 1) {
        kp_attn_combine_kargs kc_args = {
            .o_off = ka.o_off, .o_s0 = ka.o_s0, .o_s1 = ka.o_s1, .o_s2 = ka.o_s2, .lse_off = ka.lse_off,
            .nsplit = ns, .has_lse = ka.has_lse, .s_q = ka.s_q, .h_q = ka.h_q, .dv = dv,
        };
        kp_gpu_launch_init(&l, KP_GPU_SRC_ATTN_DECODE, combine_opts, "kp_attention_combine");
        kp_gpu_arg_native(&l, scratch[0]), kp_gpu_arg_native(&l, scratch[1]);
        kp_gpu_arg_tensor(&l, out), kp_gpu_arg_tensor(&l, lse);
        kp_gpu_arg_kargs(&l, &kc_args, sizeof kc_args);
        l.groups[0] = (uint64_t)nrows_all, l.local[0] = 64;
        st = kp_gpu_enqueue(c, &l);
    }
    if (ns > 1) c->t->scratch_release(c->s, scratch);
    return st == KP_OK ? st : h->add_context(st, "%s", name);
}

kp_status kp_gpu_attention_decode(kp_gpu_ctx *c, const kp_attention_decode_params *p, int dry_run) {
    kp_gpu_paged_args a = {&p->q, &p->k_cache, &p->v_cache, &p->block_table, &p->seq_lens, &p->out, &p->lse,
                           p->softmax_scale, p->causal, p->num_splits, (int)p->v_cache.shape[3], 0,
                           p->window_left, &p->k_scale, &p->v_scale};
    return kp_gpu_paged_decode(c, KP_OP_ATTENTION_DECODE, &a, dry_run);
}
