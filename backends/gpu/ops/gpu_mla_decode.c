/*
 * backends/gpu/ops/gpu_mla_decode.c — kp_mla_decode on the GPU backends: the paged
 * decode kernel built with -DATTN_MLA (kernels/attention/attention_decode.cl,
 * generation 1), or generation 2, kernels/attention/mla_decode_gen2.cl (16-bit q; 16-bit
 * or FP8 e4m3 latent caches), both launched by kp_gpu_paged_decode
 * (gpu_attention_decode.c) with the same grid, split-KV scratch and combine kernel.
 * All h_q heads share the one latent KV head, so a work-group's rows are s_q * h_q and
 * each 576-wide row is read from global memory once per work-group; V is the first
 * head_dim_v (512, or 256) columns of the same local tile.
 *
 * The generation-2 tile: wm row groups of 16 rows (1 up to 16 packed rows, 2 up to 32,
 * else 4: 64 rows, h_q 128 in two row tiles) x 2 halves of DV, bn keys a tile, stages of
 * the copy pipeline; the first of (bn, stages) = (64, 2), (32, 4), (32, 3), (32, 2) whose
 * local memory (KP_MLA2_LOCAL_BYTES, one formula for both cache types) fits the
 * device's, then fewer row groups; nothing at one row group (two on 64-lane AMD waves,
 * whose 32 rows are two row groups) means generation 1 runs. On
 * a 227 KiB device (H100/H200) the 64-row tile takes (64, 2): 227,328 bytes with a
 * 16-bit cache (P lives in the tile's rope columns, so Q and two 64-key latent tiles are
 * nearly all of it), 226,816 with an FP8 one (two stages of e4m3 rows and their scales,
 * 74,240 bytes, and the one 16-bit tile they are dequantized into); A100's 163 KiB takes
 * (32, 2), 152,576 / 152,320 bytes, variants the fatbins (built for the 227 KiB profile)
 * leave to NVRTC. On 64-lane AMD waves an FP8 cache takes 32-key tiles only (64 spills
 * gfx90a's VGPRs). No AMD tile fits 64 KiB of LDS (32 rows of Q are 37,376 bytes, one
 * 32-key 16-bit latent tile as many again): generation 1 runs there; CDNA4's 160 KiB
 * takes 32-key tiles, 4 stages (FP8) or 3 (16-bit) at two row groups, 2 at four.
 * Tuning keys (mla_decode): g2_block_n (32 or 64), g2_stages (2..4).
 */
#include "gpu_ops.h"

#include "attention/attention_gen2_layout.h"

#include <stdio.h>

static size_t mla2_bytes(const kp_gpu_mla2_tile *t, int dqk) {
    return KP_MLA2_LOCAL_BYTES((size_t)t->wm, (size_t)t->bn, (size_t)dqk, (size_t)t->stages, (size_t)t->fp8);
}

static int mla2_fits(const kp_gpu_profile *p, const kp_gpu_mla2_tile *t, int dqk) {
    return mla2_bytes(t, dqk) <= p->local_mem && (uint32_t)KP_MLA2_THREADS(t->wm) <= p->max_group;
}

int kp_gpu_mla2_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int rows, int dqk, int fp8,
                          int use_tuning, kp_gpu_mla2_tile *out) {
    static const int steps[][2] = {{64, 2}, {32, 4}, {32, 3}, {32, 2}};
    /* 64-lane AMD waves hold 32 rows, and each row group takes one wave a half: wm >= 2 */
    const int wm_min = p->warp == 64 ? 2 : 1;
    /* AMD with an FP8 cache: 32-key tiles (at 64 keys the dequantizing pass on top of O and
     * S needs more than gfx90a's 512 VGPRs and spills; at 32 it takes about 500, no scratch:
     * kernels/check_hip_isa.py) */
    const int bn_max = p->warp == 64 && fp8 ? 32 : 64;
    kp_gpu_mla2_tile t = {rows <= 16 * wm_min ? wm_min : rows <= 32 ? 2 : 4, 64, 2, fp8 != 0, 0};
    if (use_tuning) {
        kp_gpu_mla2_tile u = t;
        int64_t bn = h->tuning_get(p->info, "mla_decode", "g2_block_n", t.bn);
        int64_t st = h->tuning_get(p->info, "mla_decode", "g2_stages", t.stages);
        u.bn = (bn == 32 || bn == 64) && bn <= bn_max ? (int)bn : bn_max;
        u.stages = st >= 2 && st <= 4 ? (int)st : t.stages;
        if (mla2_fits(p, &u, dqk)) {
            u.local_bytes = mla2_bytes(&u, dqk);
            *out = u;
            return 1;
        }
        if (u.bn != t.bn || u.stages != t.stages)
            h->log("mla_decode: tuned generation-2 tile (%d keys, %d stages) does not fit; using the table's", u.bn,
                   u.stages);
    }
    for (; t.wm >= wm_min; t.wm /= 2)
        for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
            t.bn = steps[i][0], t.stages = steps[i][1];
            if (t.bn <= bn_max && mla2_fits(p, &t, dqk)) {
                t.local_bytes = mla2_bytes(&t, dqk);
                *out = t;
                return 1;
            }
        }
    return 0;
}

void kp_gpu_mla2_options(const kp_gpu_mla2_tile *t, kp_dtype dt, int dqk, int dv, char *buf, size_t n) {
    snprintf(buf, n, "%s -DM2_DQK=%d -DM2_DV=%d -DM2_WM=%d -DM2_BN=%d -DM2_STAGES=%d%s", kp_gpu_dtype_define(dt),
             dqk, dv, t->wm, t->bn, t->stages, t->fp8 ? " -DATTN_KV_FP8" : "");
}

kp_status kp_gpu_mla_decode(kp_gpu_ctx *c, const kp_mla_decode_params *p, int dry_run) {
    kp_gpu_paged_args a = {&p->q, &p->kv_cache, &p->kv_cache, &p->block_table, &p->seq_lens, &p->out, &p->lse,
                           p->softmax_scale, p->causal, p->num_splits, p->head_dim_v, 1, 0, &p->kv_scale,
                           &p->kv_scale};
    return kp_gpu_paged_decode(c, KP_OP_MLA_DECODE, &a, dry_run);
}
