/*
 * backends/gpu/ops/gpu_attention_plan.c — the attention tile plan every GPU backend
 * uses (kernels/attention/kp_attn_tile.h's -D set), picked from the device profile.
 *
 * The per-device table (defaults; tuning keys override each, per op kind):
 *
 *   device                        path        threads  block_m  block_n  tiles in local
 *   CPU (PoCL)                    portable    128/64   64/16    32       f32
 *   matrix units, f16/bf16        tile-MMA    128      64       32       16-bit
 *   f32, GPUs without MMA         portable    128      32       32       f32
 *   MLA on GPUs                   portable    128      16       16       storage dtype
 *
 * (decode: 64 threads, block_m 4 when s_q * G <= 4 and 16 above, on every device but
 * the MMA path: a decode row tile is s_q * G rows.) Whatever the table or the tuning
 * file says, the tile then shrinks (block_n, then block_m, then threads, then f32
 * tiles, then the MMA path) until it fits the profile's local memory — 48 KiB of
 * static shared memory on CUDA and NVIDIA's OpenCL, 64 KiB of LDS on AMD.
 * K is held transposed in local memory on the portable path (ATTN_KT) except for MLA
 * on GPUs, where the latent tile serves as V in place.
 * Tuning keys: threads, block_m, block_n, mma (0/1), local_f32 (0/1), k_transposed (0/1).
 */
#include "gpu_ops.h"

#include <stdio.h>
#include <string.h>

int kp_gpu_attn_dims_supported(int dqk, int dv, int mla) {
    if (mla) return dqk == 576 && (dv == 512 || dv == 256);
    return (dqk == dv && (dqk == 64 || dqk == 128 || dqk == 256)) || (dqk == 192 && dv == 128);
}

static size_t al16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Mirrors ATTN_DECLARE_LOCALS in kernels/attention/kp_attn_tile.h. */
static size_t local_bytes(const kp_gpu_attn_cfg *c) {
    size_t es = kp_backend_dtype_size(c->dt);
    size_t lt = c->mma ? 2 : c->local_f32 ? 4 : es;
    size_t pad = (c->local_f32 && !c->mma) || c->dt == KP_F32 ? 1 : 8;
    size_t kld = (size_t)c->dqk + pad, vld = (size_t)c->dv + pad;
    size_t bm = (size_t)c->bm, bn = (size_t)c->bn;
    size_t kbytes = c->kt ? (size_t)c->dqk * (bn + 1) * lt : bn * kld * lt;
    size_t n = al16(bm * kld * lt) + al16(kbytes) + al16(c->mla && !c->kt ? lt : bn * vld * lt);
    n += al16(bm * (bn + 1) * 4);
    n += al16(c->mma ? bm * (bn + 8) * 2 : 2) + al16(c->mma ? (size_t)c->dv * (bn + 8) * 2 : 2);
    n += 3 * al16(bm * 8) + 2 * al16(bm * 4) + 3 * al16(bm * 4) + 2 * al16(bn * 8);
    return n;
}

static int cfg_valid(const kp_gpu_attn_cfg *c) {
    if (c->nt < 32 || c->nt > 1024 || c->nt % 32 || c->bn < 16 || c->bn % 16 || c->bm < 1) return 0;
    if (c->mma) return c->dt != KP_F32 && !c->kt && c->bm == 16 * (c->nt / 32);
    return c->bm % (c->nt / 16) == 0;
}

static void defaults(const kp_gpu_profile *p, const char *kind, int rows, kp_gpu_attn_cfg *c) {
    int cpu = p->cpu, decode = strcmp(kind, "attention_decode") == 0;
    c->mma = p->mma && c->dt != KP_F32 && !c->mla;
    c->local_f32 = !c->mma && (cpu || c->dt == KP_F32 || !c->mla);
    c->kt = !c->mma && (cpu || !c->mla);
    c->nt = 128, c->bn = 32;
    if (c->mma) c->bm = 64;
    else if (c->mla) c->bm = cpu ? 64 : 16, c->bn = cpu ? 32 : 16;
    else if (decode) c->nt = 64, c->bm = rows > 0 && rows <= 4 ? 4 : 16;
    else c->bm = cpu ? 64 : 32;
}

/* One step smaller; 0 when there is nothing left to shrink. */
static int shrink(kp_gpu_attn_cfg *c) {
    if (c->bn > 16) c->bn /= 2;
    else if (c->mma && c->nt > 32) c->nt /= 2, c->bm = 16 * (c->nt / 32);
    else if (!c->mma && c->bm > c->nt / 16) c->bm /= 2;
    else if (!c->mma && c->nt > 32) c->nt /= 2;
    else if (c->local_f32 && c->dt != KP_F32) c->local_f32 = 0;
    else if (c->kt && c->mla) c->kt = 0;
    else if (c->mma) c->mma = 0, c->local_f32 = 0, c->nt = 128, c->bm = 32, c->bn = 32;
    else return 0;
    return 1;
}

kp_status kp_gpu_attn_config(const kp_host_services *h, const kp_gpu_profile *p, const char *kind, kp_dtype dt,
                             int dqk, int dv, int mla, int rows, int use_tuning, kp_gpu_attn_cfg *out) {
    kp_gpu_attn_cfg c;
    memset(&c, 0, sizeof c);
    c.dt = dt, c.dqk = dqk, c.dv = dv, c.mla = mla;
    defaults(p, kind, rows, &c);

    if (use_tuning) {
        kp_gpu_attn_cfg t = c;
        const kp_device_info *info = p->info;
        t.nt = (int)h->tuning_get(info, kind, "threads", c.nt);
        t.bm = (int)h->tuning_get(info, kind, "block_m", c.bm);
        t.bn = (int)h->tuning_get(info, kind, "block_n", c.bn);
        t.mma = (int)h->tuning_get(info, kind, "mma", c.mma) != 0 && dt != KP_F32;
        t.local_f32 = (int)h->tuning_get(info, kind, "local_f32", c.local_f32) != 0;
        t.kt = !t.mma && (int)h->tuning_get(info, kind, "k_transposed", c.kt) != 0;
        if (cfg_valid(&t)) c = t;
        else
            h->log("%s: tuning (threads %d, block_m %d, block_n %d, mma %d) is not a valid tile; using the defaults",
                   kind, t.nt, t.bm, t.bn, t.mma);
    }

    size_t limit = p->static_local_mem > 512 ? (size_t)p->static_local_mem - 512 : 0; /* the compiler's own share */
    for (;;) {
        c.local_bytes = local_bytes(&c);
        if (cfg_valid(&c) && c.local_bytes <= limit && (uint32_t)c.nt <= p->max_group) break;
        if (!shrink(&c))
            return h->set_error(KP_ERR_UNSUPPORTED,
                                "%s: no attention tile for head dims %d/%d fits '%s' (%llu bytes of local memory, "
                                "work-groups up to %u)",
                                kind, dqk, dv, p->info ? p->info->name : "?", (unsigned long long)p->static_local_mem,
                                p->max_group);
    }
    *out = c;
    return KP_OK;
}

void kp_gpu_attn_options(const kp_gpu_attn_cfg *c, char *buf, size_t n) {
    const char *dt = c->dt == KP_F16 ? "F16" : c->dt == KP_BF16 ? "BF16" : "F32";
    snprintf(buf, n, "-DKP_DTYPE_%s -DATTN_DQK=%d -DATTN_DV=%d -DATTN_BM=%d -DATTN_BN=%d -DATTN_NT=%d%s%s%s%s", dt,
             c->dqk, c->dv, c->bm, c->bn, c->nt, c->mma ? " -DATTN_MMA" : "", c->local_f32 ? " -DATTN_LOCAL_F32" : "",
             c->kt ? " -DATTN_KT" : "", c->mla ? " -DATTN_MLA" : "");
}

kp_status kp_gpu_attn_plan(kp_gpu_ctx *c, const char *kind, const char *source, kp_dtype dt, int dqk, int dv, int mla,
                           int rows, kp_gpu_attn_cfg *cfg, char *opts, size_t n) {
    const kp_gpu_plan_key key = {{KP_GPU_PLAN_ATTN, (uintptr_t)kind, (uintptr_t)source, (uint64_t)dt, (uint64_t)dqk,
                                  (uint64_t)dv, (uint64_t)mla, (uint64_t)rows}};
    uint64_t gen;
    if (kp_gpu_plan_lookup(c, &key, cfg, sizeof *cfg, opts, n, &gen)) return KP_OK;
    kp_status st = kp_gpu_attn_config(c->host, &c->prof, kind, dt, dqk, dv, mla, rows, 1, cfg);
    if (st != KP_OK) return st;
    kp_gpu_attn_options(cfg, opts, n);
    if ((st = kp_gpu_variant_ok(c, source, opts)) == KP_OK) {
        kp_gpu_plan_store(c, &key, gen, cfg, sizeof *cfg, opts);
        return KP_OK;
    }
    kp_gpu_attn_cfg d;
    char dopts[256];
    if (kp_gpu_attn_config(c->host, &c->prof, kind, dt, dqk, dv, mla, rows, 0, &d) != KP_OK) return st;
    kp_gpu_attn_options(&d, dopts, sizeof dopts);
    if (strcmp(dopts, opts) == 0) return st; /* the default itself is missing: st says why */
    if ((st = kp_gpu_variant_ok(c, source, dopts)) != KP_OK) return st;
    c->host->log("%s on %s: the tuned tile (%s) is not built for this device; using the default (%s)", kind,
                 c->t->name, opts, dopts);
    *cfg = d;
    snprintf(opts, n, "%s", dopts);
    kp_gpu_plan_store(c, &key, gen, cfg, sizeof *cfg, opts);
    return KP_OK;
}
