/*
 * backends/gpu/ops/gpu_attention_gen2.c — the generation-2 attention plans
 * (kernels/attention/attention_prefill_gen2.cl, and the paged-decode tile of
 * attention_decode_gen2.cl at the end): tiles from the device's local memory.
 *
 * The first tile that fits the local memory a work-group may use (profile.local_mem),
 * starting from the device's row of the table:
 *
 *   device                       head dims   rows x keys   warps  stages  local bytes
 *   >= 160 KiB (A100, H100/H200)  <= 128      128 x 64      8      3       d128: 145,408
 *                                 192/128     128 x 64      8      2       143,360
 *                                 256         64 x 64       4      2       172,032
 *   >= 96 KiB (sm_86/89/120)      <= 128      128 x 64      8      2       d128: 110,592
 *                                 > 128       64 x 64       4      2
 *   CPU devices (PoCL)            any         64 x 64       4      2       the portable fragments
 *   else (48 KiB, 64 KiB LDS)     any         64 x 64       4      2       (shrunk; d256 fits
 *                                                                         neither: generation 1)
 *
 * and, while it does not fit: 2 stages, then 32 keys, then 64 rows (64 keys), then 32 and
 * 16 keys; nothing at 64 x 16 x 2 means generation 1 runs (the case is declined, not
 * failed). One work-group per SM (min_blocks 1): ptxas may give a thread all 255
 * registers (8 warps: 65,536 / 256). Tuning keys (attention_prefill): g2_block_m (64 or
 * 128), g2_block_n (16..128), g2_stages (2..4); a tuned tile that does not fit is
 * ignored with a log line.
 */
#include "gpu_ops.h"

#include "attention/attention_gen2_layout.h"

#include <stdio.h>
#include <string.h>

#define ATTN_LOG2E 1.4426950408889634

static size_t tile_bytes(const kp_gpu_attn2_tile *t, int dqk, int dv) {
    return KP_ATTN2_LOCAL_BYTES((size_t)t->bm, (size_t)t->bn, (size_t)dqk, (size_t)dv, (size_t)t->stages);
}

static int tile_fits(const kp_gpu_profile *p, const kp_gpu_attn2_tile *t, int dqk, int dv) {
    return tile_bytes(t, dqk, dv) * (size_t)t->min_blocks <= p->local_mem &&
           (uint32_t)KP_ATTN2_THREADS(t->bm) <= p->max_group;
}

/* One step smaller; 0 when nothing is left to shrink. */
static int shrink(kp_gpu_attn2_tile *t) {
    if (t->stages > 2) t->stages--;
    else if (t->bn > 16 && (t->bm == 64 || t->bn > 32)) t->bn /= 2;
    else if (t->bm > 64) t->bm = 64, t->bn = 64;
    else return 0;
    return 1;
}

int kp_gpu_attn2_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int dqk, int dv, int use_tuning,
                           kp_gpu_attn2_tile *out) {
    kp_gpu_attn2_tile t = {64, 64, 2, 1, 0};
    if (!p->cpu && p->local_mem >= 160 * 1024) {
        if (dqk <= 128) t.bm = 128, t.stages = 3;
        else if (dqk <= 192) t.bm = 128;
    } else if (!p->cpu && p->local_mem >= 96 * 1024 && dqk <= 128) {
        t.bm = 128;
    }
    if (use_tuning) {
        kp_gpu_attn2_tile u = t;
        int64_t bm = h->tuning_get(p->info, "attention_prefill", "g2_block_m", t.bm);
        int64_t bn = h->tuning_get(p->info, "attention_prefill", "g2_block_n", t.bn);
        int64_t st = h->tuning_get(p->info, "attention_prefill", "g2_stages", t.stages);
        u.bm = bm == 64 || bm == 128 ? (int)bm : t.bm;
        u.bn = bn == 16 || bn == 32 || bn == 64 || bn == 128 ? (int)bn : t.bn;
        u.stages = st >= 2 && st <= 4 ? (int)st : t.stages;
        if (tile_fits(p, &u, dqk, dv)) t = u;
        else
            h->log("attention_prefill: tuned generation-2 tile (%d rows, %d keys, %d stages) does not fit; using "
                   "the table's", u.bm, u.bn, u.stages);
    }
    while (!tile_fits(p, &t, dqk, dv))
        if (!shrink(&t)) return 0;
    t.local_bytes = tile_bytes(&t, dqk, dv);
    *out = t;
    return 1;
}

void kp_gpu_attn2_options(const kp_gpu_attn2_tile *t, kp_dtype dt, int dqk, int dv, char *buf, size_t n) {
    snprintf(buf, n, "%s -DA2_DQK=%d -DA2_DV=%d -DA2_BM=%d -DA2_BN=%d -DA2_STAGES=%d -DA2_MIN_BLOCKS=%d",
             kp_gpu_dtype_define(dt), dqk, dv, t->bm, t->bn, t->stages, t->min_blocks);
}

/* Rows of t start on `align` bytes: the buffer, the offset and the strides of all dims but the last. */
static int rows_aligned(kp_gpu_ctx *c, const kp_tensor *t, uint32_t align) {
    uint32_t base = kp_gpu_base_align(c->t, t->buffer, kp_gpu_tensor_address(t));
    uint64_t es = kp_backend_dtype_size(t->dtype);
    int ok = base >= align && ((uint64_t)kp_gpu_elem_offset(t) * es) % align == 0;
    for (int d = 0; d + 1 < t->ndim; d++) ok = ok && ((uint64_t)t->strides[d] * es) % align == 0;
    return ok;
}
#define rows_aligned16(c, t) rows_aligned((c), (t), 16)

const char *kp_gpu_attn2_prefill_missing(kp_gpu_ctx *c, const kp_attention_prefill_params *p) {
    if (p->q.dtype != KP_F16 && p->q.dtype != KP_BF16)
        return "f32 runs generation 1 (generation 2 takes 16-bit q, k, v)";
    int dqk = (int)p->q.shape[2], dv = (int)p->v.shape[2];
    if (!kp_gpu_attn_dims_supported(dqk, dv, 0)) return "head dims not built for generation 2";
    if (!rows_aligned16(c, &p->q) || !rows_aligned16(c, &p->k) || !rows_aligned16(c, &p->v))
        return "a row of q, k or v is not 16-byte aligned (offsets and strides)";
    kp_gpu_attn2_tile t;
    if (!kp_gpu_attn2_tile_pick(c->host, &c->prof, dqk, dv, 0, &t))
        return "no generation-2 tile fits the device's local memory";
    return NULL;
}

kp_status kp_gpu_attention_prefill_gen2(kp_gpu_ctx *c, const kp_attention_prefill_params *p, int dry_run) {
    const kp_host_services *h = c->host;
    const char *name = "attention_prefill (generation 2)";
    int dqk = (int)p->q.shape[2], dv = (int)p->v.shape[2];
    int64_t total_q = p->q.shape[0], total_k = p->k.shape[0], h_q = p->q.shape[1], h_kv = p->k.shape[1];
    int64_t nb = p->cu_seqlens_q.shape[0] - 1;
    if (total_q > INT32_MAX || total_k > INT32_MAX || nb + 1 > INT32_MAX / 2)
        return h->set_error(KP_ERR_UNSUPPORTED, "%s on %s: more than 2^31 tokens", name, c->t->name);
    kp_gpu_attn2_tile t;
    char opts[256];
    const kp_gpu_plan_key key = {{KP_GPU_PLAN_ATTN2, (uint64_t)p->q.dtype, (uint64_t)dqk, (uint64_t)dv}};
    uint64_t gen;
    const int cached = kp_gpu_plan_lookup(c, &key, &t, sizeof t, opts, sizeof opts, &gen);
    if (!cached) {
        if (!kp_gpu_attn2_tile_pick(h, &c->prof, dqk, dv, 1, &t))
            return h->set_error(KP_ERR_UNSUPPORTED, "%s on %s: no tile fits", name, c->t->name);
        kp_gpu_attn2_options(&t, p->q.dtype, dqk, dv, opts, sizeof opts);
        if (kp_gpu_variant_ok(c, KP_GPU_SRC_ATTN_PREFILL2, opts) != KP_OK) { /* a tuned tile not built here */
            kp_gpu_attn2_tile_pick(h, &c->prof, dqk, dv, 0, &t);
            kp_gpu_attn2_options(&t, p->q.dtype, dqk, dv, opts, sizeof opts);
        }
    }
    kp_status st = cached ? KP_OK : kp_gpu_variant_ok(c, KP_GPU_SRC_ATTN_PREFILL2, opts);
    if (st == KP_OK && !cached) kp_gpu_plan_store(c, &key, gen, &t, sizeof t, opts);
    static const char kernel[] = "kp_attention_prefill_gen2";
    kp_gpu_kernel_note(c, KP_GPU_NOTE_MAIN, 2, kernel);
    if (st != KP_OK || dry_run || total_q == 0) return st;

    int group = (int)(h_q / h_kv);
    int64_t rows = (int64_t)(p->max_seqlen_q > 0 ? p->max_seqlen_q : 1) * group;
    kp_attn_prefill_kargs ka = kp_gpu_attn_prefill_kargs(p, 3, nb, total_q, total_k, group);
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_ATTN_PREFILL2, opts, kernel);
    kp_gpu_arg_tensor(&l, &p->q), kp_gpu_arg_tensor(&l, &p->k), kp_gpu_arg_tensor(&l, &p->v);
    kp_gpu_arg_tensor(&l, &p->out), kp_gpu_arg_tensor(&l, &p->lse);
    kp_gpu_arg_tensor(&l, &p->cu_seqlens_q), kp_gpu_arg_tensor(&l, &p->cu_seqlens_k);
    kp_gpu_arg_kargs(&l, &ka, sizeof ka);
    l.groups[0] = (uint64_t)((rows + t.bm - 1) / t.bm), l.groups[1] = (uint64_t)h_kv, l.groups[2] = (uint64_t)nb + 1;
    l.local[0] = (uint32_t)KP_ATTN2_THREADS(t.bm), l.local_bytes = (uint32_t)t.local_bytes;
    st = kp_gpu_enqueue(c, &l);
    return st == KP_OK ? st : h->add_context(st, "%s", name);
}

/* ---- paged decode (kernels/attention/attention_decode_gen2.cl) ------------------- */

/* The 4 groups of a work-group cover the packed rows first (16 each: one group up to 16
 * rows, the common GQA case, 4 above 32), the keys of a tile with the rest; bn 64 keys
 * (16 a key group at 4), 3 stages on >= 160 KiB devices up to head dim 128, else 2.
 * While it does not fit: 2 stages, then fewer keys down to 16 a key group, then fewer
 * key groups, then fewer row groups; then generation 1. On 64-lane AMD waves a
 * work-group keeps at least two units (one wave: 2 row groups x 1 key group at the
 * last). Tuning keys (attention_decode): g2_block_n (32..128), g2_stages (2..4). */
static size_t dec_bytes(const kp_gpu_attn2_dec_tile *t, int dqk, int dv) {
    return KP_ATTN2_DECODE_LOCAL_BYTES((size_t)t->wm, (size_t)t->wn, (size_t)t->bn, (size_t)dqk, (size_t)dv,
                                       (size_t)t->stages);
}

/* ... and a whole number of the device's waves: the wave-level tile's AMD MFMA waves are
 * 64 lanes (two 32-lane units; attention_decode_gen2.cl) */
static int dec_fits(const kp_gpu_profile *p, const kp_gpu_attn2_dec_tile *t, int dqk, int dv) {
    const uint32_t nt = (uint32_t)KP_ATTN2_DEC_THREADS(t->wm, t->wn);
    return dec_bytes(t, dqk, dv) <= p->local_mem && nt <= p->max_group && (p->warp != 64 || nt % 64 == 0) &&
           t->bn % (16 * t->wn) == 0;
}

int kp_gpu_attn2_dec_tile_pick(const kp_host_services *h, const kp_gpu_profile *p, int rows, int dqk, int dv,
                               int use_tuning, kp_gpu_attn2_dec_tile *out) {
    kp_gpu_attn2_dec_tile t = {rows <= 16 ? 1 : rows <= 32 ? 2 : 4, 0, 64, 2, 0};
    t.wn = 4 / t.wm;
    if (!p->cpu && p->local_mem >= 160 * 1024 && dqk <= 128) t.stages = 3;
    if (use_tuning) {
        kp_gpu_attn2_dec_tile u = t;
        int64_t bn = h->tuning_get(p->info, "attention_decode", "g2_block_n", t.bn);
        int64_t st = h->tuning_get(p->info, "attention_decode", "g2_stages", t.stages);
        u.bn = bn == 32 || bn == 64 || bn == 128 ? (int)bn : t.bn;
        u.stages = st >= 2 && st <= 4 ? (int)st : t.stages;
        if (dec_fits(p, &u, dqk, dv)) t = u;
        else
            h->log("attention_decode: tuned generation-2 tile (%d keys, %d stages) does not fit; using the "
                   "table's", u.bn, u.stages);
    }
    while (!dec_fits(p, &t, dqk, dv)) {
        if (t.stages > 2) t.stages--;
        else if (t.bn / 2 >= 16 * t.wn) t.bn /= 2;
        else if (p->warp == 64 && t.wm * t.wn == 2 && t.wn == 2) t.wm = 2, t.wn = 1; /* one AMD wave */
        else if (t.wn > 1 && (p->warp != 64 || t.wm * t.wn > 2)) t.wn /= 2; /* fewer key groups (AMD's 64 KiB of LDS) */
        else if (t.wm > 1 && (p->warp != 64 || t.wm * t.wn > 2)) t.wm /= 2; /* then fewer rows a work-group */
        else return 0;
    }
    t.local_bytes = dec_bytes(&t, dqk, dv);
    *out = t;
    return 1;
}

void kp_gpu_attn2_dec_options(const kp_gpu_attn2_dec_tile *t, kp_dtype dt, int dqk, int dv, char *buf, size_t n) {
    snprintf(buf, n, "%s -DD2_DQK=%d -DD2_DV=%d -DD2_WM=%d -DD2_WN=%d -DD2_BN=%d -DD2_STAGES=%d",
             kp_gpu_dtype_define(dt), dqk, dv, t->wm, t->wn, t->bn, t->stages);
}

const char *kp_gpu_attn2_decode_missing(kp_gpu_ctx *c, const kp_gpu_paged_args *a) {
    if (a->k_cache->dtype == KP_FP8_E4M3 && !a->mla) return "FP8 KV caches run the generation-1 kernel";
    if (a->window_left > 0) return "generation-1 kernels run decode with a sliding window";
    if (a->q->dtype != KP_F16 && a->q->dtype != KP_BF16)
        return "f32 runs generation 1 (generation 2 takes 16-bit q, and 16-bit caches or MLA's FP8 latent cache)";
    int dqk = (int)a->q->shape[3], dv = a->dv;
    if (a->mla) { /* mla_decode_gen2.cl */
        if (!kp_gpu_attn_dims_supported(dqk, dv, 1)) return "head dims not built for generation 2";
        if (!rows_aligned16(c, a->q) || !rows_aligned16(c, a->k_cache))
            return "a row of q or of the latent cache is not 16-byte aligned (offsets and strides)";
        if (!rows_aligned(c, a->out, 4)) /* the epilogue's paired 16-bit stores */
            return "a row of out is not 4-byte aligned (offset and strides)";
        int64_t rows = a->q->shape[1] * a->q->shape[2];
        kp_gpu_mla2_tile m;
        if (!kp_gpu_mla2_tile_pick(c->host, &c->prof, rows > INT32_MAX ? INT32_MAX : (int)rows, dqk,
                                   a->k_cache->dtype == KP_FP8_E4M3, 0, &m))
            return "no generation-2 MLA tile fits the device's local memory";
        return NULL;
    }
    if (!kp_gpu_attn_dims_supported(dqk, dv, 0)) return "head dims not built for generation 2";
    if (!rows_aligned16(c, a->q) || !rows_aligned16(c, a->k_cache) || !rows_aligned16(c, a->v_cache))
        return "a row of q or of the caches is not 16-byte aligned (offsets and strides)";
    if (!rows_aligned(c, a->out, 8)) /* the epilogue stores 4 16-bit columns at once */
        return "a row of out is not 8-byte aligned (offset and strides)";
    int64_t rows = a->q->shape[1] * (a->q->shape[2] / (a->k_cache->shape[2] > 0 ? a->k_cache->shape[2] : 1));
    kp_gpu_attn2_dec_tile t;
    if (!kp_gpu_attn2_dec_tile_pick(c->host, &c->prof, rows > INT32_MAX ? INT32_MAX : (int)rows, dqk, dv, 0, &t))
        return "no generation-2 tile fits the device's local memory";
    return NULL;
}
