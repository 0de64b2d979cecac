/*
 * tools/kbench/kbench_attention.c — attention_prefill, attention_decode and mla_decode:
 * inputs, FLOP/byte counts (docs/kbench.md) and float64 checks of sampled output rows.
 *
 * Counts follow FlashAttention's and FlashMLA's benchmarks: FLOPs = 2 * visible
 * (query, key) pairs * h_q * (d + dv) (causal counts only the visible pairs); bytes =
 * what must cross memory once: q, k, v (for decode: the KV cache of every sequence's
 * keys) and out.
 */
#include "kbench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_ROWS 8

/* Output row `row` (its query at row * d in q, its dv values at row * dv in out) against
 * softmax(scale * q·k_j) · v * vscale over keys j < n, in float64. slot[j] is key j's row
 * of the cache's [keys, h_kv] grid: its k values at slot * d, its v values at slot * vdim
 * (MLA: vdim = d, V being the first dv columns of the K row). */
static kp_status check_row(kb_bench *b, const kb_data *qd, const kb_data *k, const kb_data *v, int64_t vdim,
                           kp_buffer *out, int64_t row, const int64_t *slot, int64_t n, double scale, double vscale,
                           kb_err *err) {
    int64_t d = b->c->d, dv = b->c->dv;
    double *q = kb_alloc(b->env, (size_t)d * 8), *ref = kb_alloc(b->env, (size_t)(dv + 1) * 8), *got = kb_alloc(b->env, (size_t)dv * 8);
    double *scores = kb_alloc(b->env, (size_t)(n + 1) * 8), m = -INFINITY, sum = 0.0;
    kp_status st = q && ref && got && scores ? KP_OK : KP_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < d && st == KP_OK; i++) q[i] = kb_at(qd, row * d + i);
    for (int64_t j = 0; j < n && st == KP_OK; j++) {
        scores[j] = scale * kb_dot(k, slot[j] * d, q, d);
        if (scores[j] > m) m = scores[j];
    }
    for (int64_t j = 0; j < n && st == KP_OK; j++) {
        double p = exp(scores[j] - m);
        int64_t vo = slot[j] * vdim;
        sum += p;
        for (int64_t c = 0; c < dv; c++) ref[c] += p * kb_at(v, vo + c);
    }
    if (st == KP_OK) st = kb_read(b->env, out, b->c->dtype, row * dv, dv, got);
    for (int64_t c = 0; c < dv && st == KP_OK; c++) kb_err_add(err, got[c], n > 0 ? ref[c] / sum * vscale : 0.0); /* no key: 0 */
    return st;
}

/* ================================ prefill ================================ */

typedef struct prefill_st {
    kp_attention_prefill_params p;
    kb_data q, k, v;
    kp_buffer *out;
    int32_t *cuq, *cuk;
    int64_t tq;
} prefill_st;

static kp_status prefill_setup(kb_bench *b) {
    const kb_case *c = b->c;
    kb_env *e = b->env;
    prefill_st *s = b->st;
    s->cuq = kb_alloc(e, (size_t)(c->b + 1) * 4);
    s->cuk = kb_alloc(e, (size_t)(c->b + 1) * 4);
    if (!s->cuq || !s->cuk) return KP_ERR_OUT_OF_MEMORY;
    int64_t maxq = 0, maxk = 0;
    for (int64_t i = 0; i < c->b; i++) {
        int64_t lq, lk;
        kb_prefill_len(c, i, &lq, &lk);
        s->cuq[i + 1] = s->cuq[i] + (int32_t)lq;
        s->cuk[i + 1] = s->cuk[i] + (int32_t)lk;
        maxq = lq > maxq ? lq : maxq, maxk = lk > maxk ? lk : maxk;
    }
    int64_t tq = s->tq = s->cuq[c->b], tk = s->cuk[c->b];
    kp_attention_prefill_params *p = &s->p;
    p->softmax_scale = (float)(1.0 / sqrt((double)c->d));
    p->causal = c->causal;
    p->window_left = p->window_right = -1;
    p->max_seqlen_q = (int32_t)maxq, p->max_seqlen_k = (int32_t)maxk;
    kp_status st = kb_input(e, &s->q, &p->q, c->dtype, -1, 1, 3, (int64_t[]){tq, c->h_q, c->d});
    if (st == KP_OK) st = kb_input(e, &s->k, &p->k, c->dtype, -1, 1, 3, (int64_t[]){tk, c->h_kv, c->d});
    if (st == KP_OK) st = kb_input(e, &s->v, &p->v, c->dtype, -1, 1, 3, (int64_t[]){tk, c->h_kv, c->dv});
    if (st == KP_OK) st = kb_output_tensor(e, &s->out, &p->out, c->dtype, 3, (int64_t[]){tq, c->h_q, c->dv});
    if (st == KP_OK) st = kb_input_i32(e, s->cuq, &p->cu_seqlens_q, 1, (int64_t[]){c->b + 1});
    if (st == KP_OK) st = kb_input_i32(e, s->cuk, &p->cu_seqlens_k, 1, (int64_t[]){c->b + 1});
    return st;
}

static kp_status prefill_check(kb_bench *b, kb_err *err) {
    const kb_case *c = b->c;
    prefill_st *s = b->st;
    kb_rng r = {b->env->seed + 17};
    kp_status st = KP_OK;
    for (int n = 0; n < CHECK_ROWS && st == KP_OK && s->tq > 0; n++) {
        int64_t t = n == 0 ? 0 : n == 1 ? s->tq - 1 : kb_rng_below(&r, s->tq), h = kb_rng_below(&r, c->h_q);
        int64_t i = 0;
        while (s->cuq[i + 1] <= t) i++;
        int64_t lq = s->cuq[i + 1] - s->cuq[i], lk = s->cuk[i + 1] - s->cuk[i], hk = h / (c->h_q / c->h_kv);
        int64_t *slot = kb_alloc(b->env, (size_t)(lk + 1) * 8);
        if (!slot) return KP_ERR_OUT_OF_MEMORY;
        for (int64_t j = 0; j < lk; j++) slot[j] = (s->cuk[i] + j) * c->h_kv + hk;
        st = check_row(b, &s->q, &s->k, &s->v, c->dv, s->out, t * c->h_q + h, slot,
                       kb_visible(t - s->cuq[i], lq, lk, c->causal), s->p.softmax_scale, 1.0, err);
    }
    return st;
}

/* ========================= paged decode and MLA decode ========================= */

typedef struct paged_st {
    union { /* first: the params kp_op_supported reads */
        kp_attention_decode_params p;
        kp_mla_decode_params m;
    };
    bool mla;
    kb_data q, k, v; /* MLA: v unused, V is the first dv columns of k */
    kb_data kscale, vscale; /* FP8 cache: per-tensor f32 scales (MLA: kscale for the latent) */
    kp_buffer *out;
    int32_t *table, *lens;
    int64_t max_blocks, h_kv;
} paged_st;

static kp_status paged_setup(kb_bench *b, bool mla) {
    const kb_case *c = b->c;
    kb_env *e = b->env;
    paged_st *s = b->st;
    s->mla = mla;
    s->h_kv = mla ? 1 : c->h_kv;
    s->lens = kb_alloc(e, (size_t)c->b * 4);
    if (!s->lens) return KP_ERR_OUT_OF_MEMORY;
    int64_t blocks = 0, keys = 0;
    for (int64_t i = 0; i < c->b; i++) {
        int64_t len = kb_decode_len(c, i), nb = (len + c->block_size - 1) / c->block_size;
        s->lens[i] = (int32_t)len;
        blocks += nb, keys += len;
        s->max_blocks = nb > s->max_blocks ? nb : s->max_blocks;
    }
    blocks += 1; /* one spare, so the table is a true permutation of a larger pool */
    s->table = kb_alloc(e, (size_t)(c->b * s->max_blocks) * 4);
    int32_t *perm = kb_alloc(e, (size_t)blocks * 4);
    if (!s->table || !perm) return KP_ERR_OUT_OF_MEMORY;
    kb_rng_permutation(&(kb_rng){e->seed + 5}, perm, blocks); /* scattered, as a server's allocator leaves them */
    for (int64_t i = 0, next = 0; i < c->b; i++)
        for (int64_t j = 0; j < s->max_blocks; j++)
            s->table[i * s->max_blocks + j] = j * c->block_size < s->lens[i] ? perm[next++] : 0;
    double el = (double)kp_dtype_size(c->dtype), kvd = mla ? (double)c->d : (double)(c->d + c->dv);
    bool fp8 = c->wdtype == KP_FP8_E4M3;
    b->bytes = (double)kp_dtype_size(c->wdtype) * keys * s->h_kv * kvd +
               el * (double)c->b * c->s_q * c->h_q * (c->d + c->dv) + 4.0 * (double)c->b * (s->max_blocks + 1) +
               (fp8 ? 8.0 : 0.0);
    kp_tensor q, k, v, bt, sl, out, ks = {0}, vs = {0};
    /* FP8: x / scale over e4m3's range and scales near 1/448, so e4m3 * scale spans [-1, 1] as bf16 rows do */
    double amp = fp8 ? 448.0 : 1.0, smin = 0.75 / 448, smax = 1.5 / 448;
    kp_status st = kb_input(e, &s->q, &q, c->dtype, -1, 1, 4, (int64_t[]){c->b, c->s_q, c->h_q, c->d});
    if (st == KP_OK) st = kb_input(e, &s->k, &k, c->wdtype, -amp, amp, 4, (int64_t[]){blocks, c->block_size, s->h_kv, c->d});
    if (st == KP_OK && !mla)
        st = kb_input(e, &s->v, &v, c->wdtype, -amp, amp, 4, (int64_t[]){blocks, c->block_size, s->h_kv, c->dv});
    if (st == KP_OK && fp8) st = kb_input(e, &s->kscale, &ks, KP_F32, smin, smax, 1, (int64_t[]){1});
    if (st == KP_OK && fp8 && !mla) st = kb_input(e, &s->vscale, &vs, KP_F32, smin, smax, 1, (int64_t[]){1});
    if (st == KP_OK) st = kb_output_tensor(e, &s->out, &out, c->dtype, 4, (int64_t[]){c->b, c->s_q, c->h_q, c->dv});
    if (st == KP_OK) st = kb_input_i32(e, s->table, &bt, 2, (int64_t[]){c->b, s->max_blocks});
    if (st == KP_OK) st = kb_input_i32(e, s->lens, &sl, 1, (int64_t[]){c->b});
    if (st != KP_OK) return st;
    if (mla) {
        /* DeepSeek-V3's scale: (192^-0.5 * mscale^2), not 576^-0.5 (DESIGN §2) */
        s->m = (kp_mla_decode_params){.q = q, .kv_cache = k, .block_table = bt, .seq_lens = sl, .out = out,
                                      .softmax_scale = 0.1352337788608801f, .causal = c->causal,
                                      .head_dim_v = (int32_t)c->dv, .kv_scale = ks};
    } else {
        s->p = (kp_attention_decode_params){.q = q, .k_cache = k, .v_cache = v, .block_table = bt, .seq_lens = sl,
                                            .out = out, .softmax_scale = (float)(1.0 / sqrt((double)c->d)),
                                            .causal = c->causal, .k_scale = ks, .v_scale = vs};
    }
    return KP_OK;
}

static kp_status decode_setup(kb_bench *b) { return paged_setup(b, false); }
static kp_status mla_setup(kb_bench *b) { return paged_setup(b, true); }
static kp_status prefill_run(kb_bench *b) { return kp_attention_prefill(b->env->s, &((prefill_st *)b->st)->p); }
static kp_status decode_run(kb_bench *b) { return kp_attention_decode(b->env->s, &((paged_st *)b->st)->p); }
static kp_status mla_run(kb_bench *b) { return kp_mla_decode(b->env->s, &((paged_st *)b->st)->m); }

static kp_status paged_check(kb_bench *b, kb_err *err) {
    const kb_case *c = b->c;
    paged_st *s = b->st;
    kb_rng r = {b->env->seed + 23};
    float scale = s->mla ? s->m.softmax_scale : s->p.softmax_scale;
    /* an FP8 cache holds values / scale: the reference reads e4m3 * scale, unrounded */
    double ksc = s->kscale.buf ? kb_at(&s->kscale, 0) : 1.0, vsc = s->mla ? ksc : s->vscale.buf ? kb_at(&s->vscale, 0) : 1.0;
    kp_status st = KP_OK;
    for (int n = 0; n < CHECK_ROWS && st == KP_OK; n++) {
        int64_t seq = n == 0 ? c->b - 1 : kb_rng_below(&r, c->b), t = kb_rng_below(&r, c->s_q);
        int64_t h = n == 0 ? c->h_q - 1 : kb_rng_below(&r, c->h_q), hk = h / (c->h_q / s->h_kv), bs = c->block_size;
        int64_t keys = kb_visible(t, c->s_q, s->lens[seq], c->causal), *slot = kb_alloc(b->env, (size_t)(keys + 1) * 8);
        if (!slot) return KP_ERR_OUT_OF_MEMORY;
        for (int64_t j = 0; j < keys; j++) slot[j] = (s->table[seq * s->max_blocks + j / bs] * bs + j % bs) * s->h_kv + hk;
        st = check_row(b, &s->q, &s->k, s->mla ? &s->k : &s->v, s->mla ? c->d : c->dv, s->out,
                       (seq * c->s_q + t) * c->h_q + h, slot, keys, scale * ksc, vsc, err);
    }
    return st;
}

const kb_op_impl kb_attention_impls[3] = {
    {KP_OP_ATTENTION_PREFILL, prefill_setup, prefill_run, prefill_check, sizeof(prefill_st)},
    {KP_OP_ATTENTION_DECODE, decode_setup, decode_run, paged_check, sizeof(paged_st)},
    {KP_OP_MLA_DECODE, mla_setup, mla_run, paged_check, sizeof(paged_st)},
};
