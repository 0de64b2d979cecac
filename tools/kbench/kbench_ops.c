/*
 * tools/kbench/kbench_ops.c — every op kbench runs: inputs (with valid indices for the
 * MoE ops), FLOP/byte counts (docs/kbench.md) and float64 checks: attention_prefill,
 * attention_decode and mla_decode on sampled output rows; moe_gate and moe_align exact,
 * every token; quantize_fp8 exact, sampled rows; grouped_gemm, moe_combine and
 * moe_forward on sampled rows.
 *
 * Attention counts follow FlashAttention's and FlashMLA's benchmarks: FLOPs = 2 * visible
 * (query, key) pairs * h_q * (d + dv) (causal counts only the visible pairs); bytes =
 * what must cross memory once: q, k, v (for decode: the KV cache of every sequence's
 * keys) and out.
 */
#include "kbench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_ROWS 8
#define CHECK_COLS 64
#define FP8_BLOCK 128

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
        sum += p;
        for (int64_t c = 0; c < dv; c++) ref[c] += p * kb_at(v, slot[j] * vdim + c);
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

static kp_status paged_setup(kb_bench *b) {
    const kb_case *c = b->c;
    kb_env *e = b->env;
    paged_st *s = b->st;
    bool mla = s->mla = c->op == KP_OP_MLA_DECODE;
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

/* ============================== MoE routing ============================== */

/* DeepSeek-V3's router (sigmoid, a selection bias, scale 2.5) or Qwen3's and Mixtral's
 * (softmax, no bias, scale 1); both renormalise the chosen weights. */
static kp_moe_routing case_routing(const kb_case *c) {
    bool v3 = c->scoring == KP_MOE_SCORING_SIGMOID;
    return (kp_moe_routing){.topk = (int32_t)c->k, .n_group = (int32_t)c->n_group,
                            .topk_group = (int32_t)c->topk_group, .scoring = (kp_moe_scoring)c->scoring, .renormalize = 1,
                            .route_scale = v3 ? 2.5f : 1.0f};
}

/* V3's selection bias on the device, and its values for ref_gate (d->buf NULL and an
 * absent tensor for a router without one). */
static kp_status router_bias(kb_env *e, const kb_case *c, kb_data *d, kp_tensor *t) {
    if (c->scoring != KP_MOE_SCORING_SIGMOID) return KP_OK;
    return kb_input(e, d, t, KP_F32, -0.05, 0.05, 1, (int64_t[]){c->E});
}

/* ---- the DeepSeek-V3 gate in float64 (DESIGN §2) ---- */

/* Index of the largest v[i] among allowed, ties to the lower index; -1 if none. */
static int argmax(const double *v, const bool *allowed, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (allowed[i] && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

/* Token t of the router logits [T, E]: ids/w [k]; returns the routing margin: how far the
 * last choice (of a group or an expert) is from the first rejected one. A margin near 0
 * is a near-tie that float32 may legitimately break the other way. */
static double ref_gate(const kb_data *lgd, int64_t t, const kb_data *bias, int E, const kp_moe_routing *r,
                       int32_t *ids, double *w) {
    double logits[512], s[512], b[512], gs[32], margin = INFINITY;
    bool ok[512], gok[32], biased = bias->buf != NULL;
    for (int e = 0; e < E; e++) logits[e] = kb_at(lgd, t * E + e);
    if (r->scoring == KP_MOE_SCORING_SIGMOID) {
        for (int e = 0; e < E; e++) s[e] = 1.0 / (1.0 + exp(-logits[e]));
    } else {
        double m = -INFINITY, sum = 0;
        for (int e = 0; e < E; e++) m = logits[e] > m ? logits[e] : m;
        for (int e = 0; e < E; e++) sum += (s[e] = exp(logits[e] - m));
        for (int e = 0; e < E; e++) s[e] /= sum;
    }
    for (int e = 0; e < E; e++) b[e] = s[e] + (biased ? kb_at(bias, e) : 0.0), ok[e] = true;
    int G = r->n_group, per = E / G;
    if (G > 1) {
        for (int g = 0; g < G; g++) { /* with a bias: sum of the top 2; without: the best */
            int i1 = argmax(b + g * per, ok + g * per, per), i2 = -1;
            for (int i = 0; i < per; i++)
                if (i != i1 && (i2 < 0 || b[g * per + i] > b[g * per + i2])) i2 = i;
            gs[g] = b[g * per + i1] + (biased && i2 >= 0 ? b[g * per + i2] : 0.0);
            gok[g] = true;
        }
        bool keep[32] = {false};
        for (int i = 0; i < r->topk_group; i++) {
            int g = argmax(gs, gok, G);
            keep[g] = true, gok[g] = false;
            if (i == r->topk_group - 1) {
                int next = argmax(gs, gok, G);
                if (next >= 0) margin = fmin(margin, gs[g] - gs[next]);
            }
        }
        for (int e = 0; e < E; e++) ok[e] = keep[e / per];
    }
    double sum = 0;
    for (int i = 0; i < r->topk; i++) {
        int e = argmax(b, ok, E);
        ids[i] = e, ok[e] = false, w[i] = s[e], sum += s[e];
        if (i == r->topk - 1) {
            int next = argmax(b, ok, E);
            if (next >= 0) margin = fmin(margin, b[e] - b[next]);
        }
    }
    for (int i = 0; i < r->topk; i++) w[i] = (r->renormalize ? w[i] / sum : w[i]) * r->route_scale;
    return margin;
}

/* Random distinct experts per token, as a router would pick; offsets of the rows
 * sorted by expert (unpadded). Returns how many experts got rows. */
static int64_t route_random(kb_env *e, const kb_case *c, int32_t *ids, int32_t *offsets) {
    kb_rng r = {e->seed + 31};
    for (int64_t t = 0; t < c->T; t++) kb_rng_distinct(&r, c->E, (int)c->k, ids + t * c->k);
    memset(offsets, 0, (size_t)(c->E + 1) * 4);
    for (int64_t i = 0; i < c->T * c->k; i++) offsets[ids[i] + 1]++;
    int64_t used = 0;
    for (int64_t x = 0; x < c->E; x++) used += offsets[x + 1] > 0, offsets[x + 1] += offsets[x];
    return used;
}

/* ================================ moe_gate ================================ */

typedef struct gate_st {
    kp_moe_gate_params p;
    kb_data logits, bias; /* bias.buf NULL: no bias */
    kp_buffer *ids, *w;
} gate_st;

static kp_status gate_setup(kb_bench *b) {
    const kb_case *c = b->c;
    gate_st *s = b->st;
    s->p.routing = case_routing(c);
    kp_status st = kb_input(b->env, &s->logits, &s->p.logits, c->dtype, -4, 4, 2, (int64_t[]){c->T, c->E});
    if (st == KP_OK) st = router_bias(b->env, c, &s->bias, &s->p.bias);
    if (st == KP_OK) st = kb_output_tensor(b->env, &s->ids, &s->p.topk_ids, KP_I32, 2, (int64_t[]){c->T, c->k});
    if (st == KP_OK) st = kb_output_tensor(b->env, &s->w, &s->p.topk_weights, KP_F32, 2, (int64_t[]){c->T, c->k});
    return st;
}

static kp_status gate_check(kb_bench *b, kb_err *err) {
    const kb_case *c = b->c;
    gate_st *s = b->st;
    int k = (int)c->k, E = (int)c->E;
    int32_t *ids = kb_alloc(b->env, (size_t)(c->T * k) * 4), rid[32];
    double *w = kb_alloc(b->env, (size_t)(c->T * k) * 8), rw[32];
    kp_status st = ids && w ? KP_OK : KP_ERR_OUT_OF_MEMORY;
    if (st == KP_OK) st = kp_buffer_read(b->env->s, s->ids, 0, ids, (size_t)(c->T * k) * 4);
    if (st == KP_OK) st = kb_read(b->env, s->w, KP_F32, 0, c->T * k, w);
    for (int64_t t = 0; t < c->T && st == KP_OK && !b->msg[0]; t++) {
        double margin = ref_gate(&s->logits, t, &s->bias, E, &s->p.routing, rid, rw);
        for (int i = 0; i < k; i++) { /* the order of the k slots is free: match by id */
            int j = 0;
            while (j < k && rid[j] != ids[t * k + i]) j++;
            if (j == k) {
                if (margin < 1e-6) break; /* a near-tie float32 may break either way */
                snprintf(b->msg, sizeof b->msg, "moe_gate token %lld: expert %d chosen, not in the float64 top-%d (first %d)",
                         (long long)t, (int)ids[t * k + i], k, (int)rid[0]);
                break;
            }
            kb_err_add(err, w[t * k + i], rw[j]);
        }
    }
    return st;
}

/* ================================ moe_align ================================ */

typedef struct align_st {
    kp_moe_align_params p;
    int32_t *ids;
    kp_buffer *sorted, *offsets, *pos;
    int64_t rows;
} align_st;

static kp_status align_setup(kb_bench *b) {
    const kb_case *c = b->c;
    kb_env *e = b->env;
    align_st *s = b->st;
    int32_t *offsets = kb_alloc(e, (size_t)(c->E + 1) * 4);
    if (!(s->ids = kb_alloc(e, (size_t)(c->T * c->k) * 4)) || !offsets) return KP_ERR_OUT_OF_MEMORY;
    route_random(e, c, s->ids, offsets);
    int64_t padded = 0, pairs = c->T * c->k;
    for (int64_t x = 0; x < c->E; x++)
        padded += (offsets[x + 1] - offsets[x] + c->block_size - 1) / c->block_size * c->block_size;
    s->rows = pairs + c->E * (c->block_size - 1);
    b->bytes = 4.0 * (2.0 * pairs + (double)padded + (double)c->E + 1); /* ids in; pos, sorted rows, offsets out */
    s->p.num_experts = (int32_t)c->E, s->p.block_size = (int32_t)c->block_size;
    kp_status st = kb_input_i32(e, s->ids, &s->p.topk_ids, 2, (int64_t[]){c->T, c->k});
    if (st == KP_OK) st = kb_output_tensor(e, &s->sorted, &s->p.sorted_ids, KP_I32, 1, (int64_t[]){s->rows});
    if (st == KP_OK) st = kb_output_tensor(e, &s->offsets, &s->p.expert_offsets, KP_I32, 1, (int64_t[]){c->E + 1});
    if (st == KP_OK) st = kb_output_tensor(e, &s->pos, &s->p.token_pos, KP_I32, 2, (int64_t[]){c->T, c->k});
    return st;
}

/* Everything is checked: offsets, each pair's row (stable order), padding rows. */
static kp_status align_check(kb_bench *b, kb_err *err) {
    const kb_case *c = b->c;
    align_st *s = b->st;
    int64_t pairs = c->T * c->k, E = c->E, bs = c->block_size;
    int32_t *sorted = kb_alloc(b->env, (size_t)s->rows * 4), *off = kb_alloc(b->env, (size_t)(E + 1) * 4);
    int32_t *pos = kb_alloc(b->env, (size_t)pairs * 4), *fill = kb_alloc(b->env, (size_t)(E + 1) * 4);
    kp_status st = sorted && off && pos && fill ? KP_OK : KP_ERR_OUT_OF_MEMORY;
    if (st == KP_OK) st = kp_buffer_read(b->env->s, s->sorted, 0, sorted, (size_t)s->rows * 4);
    if (st == KP_OK) st = kp_buffer_read(b->env->s, s->offsets, 0, off, (size_t)(E + 1) * 4);
    if (st == KP_OK) st = kp_buffer_read(b->env->s, s->pos, 0, pos, (size_t)pairs * 4);
    if (st == KP_OK) {
        int64_t want = 0;
        for (int64_t i = 0; i < pairs; i++) fill[s->ids[i] + 1]++;
        for (int64_t x = 0; x <= E && !b->msg[0]; x++) {
            if (x > 0) want += (fill[x] + bs - 1) / bs * bs;
            if (off[x] != want)
                snprintf(b->msg, sizeof b->msg, "moe_align: expert_offsets[%lld] is %d, expected %lld", (long long)x, (int)off[x],
                         (long long)want);
        }
        memset(fill, 0, (size_t)(E + 1) * 4);
        for (int64_t i = 0; i < pairs && !b->msg[0]; i++) { /* stable: pairs in flat order within an expert */
            int64_t x = s->ids[i], row = off[x] + fill[x]++;
            if (pos[i] != row || sorted[row] != i)
                snprintf(b->msg, sizeof b->msg, "moe_align: pair %lld (expert %lld) at row %d (sorted_ids there %d), expected %lld",
                         (long long)i, (long long)x, (int)pos[i], (int)sorted[row], (long long)row);
        }
        for (int64_t x = 0; x < E && !b->msg[0]; x++)
            for (int64_t row = off[x] + fill[x]; row < off[x + 1] && !b->msg[0]; row++)
                if (sorted[row] != pairs)
                    snprintf(b->msg, sizeof b->msg, "moe_align: padding row %lld holds %d, expected %lld", (long long)row,
                             (int)sorted[row], (long long)pairs);
        kb_err_add(err, 0.0, 1.0); /* exact: reported as error 0 */
        err->num = 0.0;
    }
    return st;
}

/* ============================== grouped_gemm ============================== */

/* x · w[e, n, :] in float64, with FP8 128x128 block scales when scale is given. */
static double wdot(const kb_data *w, const kb_data *scale, int64_t e, int64_t n, int64_t N, int64_t K,
                   const double *x) {
    int64_t base = (e * N + n) * K;
    if (!scale) return kb_dot(w, base, x, K);
    int64_t kb = K / FP8_BLOCK, nb = (N + FP8_BLOCK - 1) / FP8_BLOCK;
    double sum = 0;
    for (int64_t j = 0; j < kb; j++)
        sum += kb_at(scale, (e * nb + n / FP8_BLOCK) * kb + j) * kb_dot(w, base + j * FP8_BLOCK, x + j * FP8_BLOCK, FP8_BLOCK);
    return sum;
}

/* Expert weights [E, N, K] of variance ~1/K (FP8: values in [-1, 1] times block scales). */
static kp_status weights(kb_env *e, const kb_case *c, int64_t N, int64_t K, kb_data *w, kb_data *scale,
                         kp_tensor *wt, kp_tensor *st_) {
    double amp = sqrt(3.0 / (double)K);
    bool fp8 = c->wdtype == KP_FP8_E4M3;
    kp_status st = kb_input(e, w, wt, c->wdtype, fp8 ? -1 : -amp, fp8 ? 1 : amp, 3, (int64_t[]){c->E, N, K});
    if (st == KP_OK && fp8)
        st = kb_input(e, scale, st_, KP_F32, 0.5 * amp, 1.5 * amp, 3,
                      (int64_t[]){c->E, (N + FP8_BLOCK - 1) / FP8_BLOCK, K / FP8_BLOCK});
    return st;
}

static double weight_bytes(const kb_case *c, int64_t N, int64_t K) {
    double b = (double)kp_dtype_size(c->wdtype) * N * K;
    if (c->wdtype == KP_FP8_E4M3) b += 4.0 * ((N + FP8_BLOCK - 1) / FP8_BLOCK) * (K / FP8_BLOCK);
    return b;
}

typedef struct gemm_st {
    kp_grouped_gemm_params p;
    kb_data a, w, scale, a_scale; /* a_scale: W8A8's [M, K/128] */
    kp_buffer *out;
    int32_t *offsets;
    int32_t *counts; /* the masked layout (max_m > 0): masked_m [E], min(rows routed, max_m) */
    int64_t M;
} gemm_st;

/* W8A8 rows (dtype e4m3) store bf16 (moe_forward: x and out bf16 too) */
static kp_dtype gemm_out_dtype(const kb_case *c) { return c->dtype == KP_FP8_E4M3 ? KP_BF16 : c->dtype; }

static kp_status gemm_setup(kb_bench *b) {
    const kb_case *c = b->c;
    kb_env *e = b->env;
    gemm_st *s = b->st;
    int32_t *ids = kb_alloc(e, (size_t)(c->T * c->k) * 4);
    if (!ids || !(s->offsets = kb_alloc(e, (size_t)(c->E + 1) * 4))) return KP_ERR_OUT_OF_MEMORY;
    int64_t used = route_random(e, c, ids, s->offsets), M = s->M = c->T * c->k, rows = M;
    if (c->max_m > 0) { /* the masked layout: the routed rows of each expert, clamped to max_m */
        if (!(s->counts = kb_alloc(e, (size_t)c->E * 4))) return KP_ERR_OUT_OF_MEMORY;
        M = s->M = c->E * c->max_m, rows = 0;
        for (int64_t x = 0; x < c->E; x++) {
            int64_t n = s->offsets[x + 1] - s->offsets[x];
            s->counts[x] = (int32_t)(n < c->max_m ? n : c->max_m), rows += s->counts[x];
        }
        b->flops = 2.0 * rows * c->N * c->K;
    }
    const kp_dtype odt = gemm_out_dtype(c);
    double el = (double)kp_dtype_size(c->dtype), a8 = c->dtype == KP_FP8_E4M3;
    b->bytes = el * rows * c->K + 4.0 * a8 * rows * (c->K / FP8_BLOCK) + (double)kp_dtype_size(odt) * rows * c->N +
               used * weight_bytes(c, c->N, c->K) + 4.0 * (c->E + 1);
    kp_status st = kb_input(e, &s->a, &s->p.a, c->dtype, -1, 1, 2, (int64_t[]){M, c->K});
    if (st == KP_OK && a8) st = kb_input(e, &s->a_scale, &s->p.a_scale, KP_F32, 0.5, 1.5, 2, (int64_t[]){M, c->K / FP8_BLOCK});
    if (st == KP_OK) st = weights(e, c, c->N, c->K, &s->w, &s->scale, &s->p.w, &s->p.w_scale);
    if (st == KP_OK && s->counts) st = kb_input_i32(e, s->counts, &s->p.masked_m, 1, (int64_t[]){c->E});
    else if (st == KP_OK) st = kb_input_i32(e, s->offsets, &s->p.expert_offsets, 1, (int64_t[]){c->E + 1});
    if (st == KP_OK) st = kb_output_tensor(e, &s->out, &s->p.out, odt, 2, (int64_t[]){M, c->N});
    return st;
}

static kp_status gemm_check(kb_bench *b, kb_err *err) {
    const kb_case *c = b->c;
    gemm_st *s = b->st;
    kb_rng r = {b->env->seed + 41};
    double *x = kb_alloc(b->env, (size_t)c->K * 8), *got = kb_alloc(b->env, (size_t)c->N * 8);
    kp_status st = x && got ? KP_OK : KP_ERR_OUT_OF_MEMORY;
    for (int n = 0; n < CHECK_ROWS && st == KP_OK; n++) {
        int64_t row = n == 0 ? s->M - 1 : kb_rng_below(&r, s->M), e = 0;
        if (s->counts) { /* the masked layout: a valid row of a random expert with rows */
            e = kb_rng_below(&r, c->E);
            for (int64_t i = 0; i < c->E && s->counts[e] == 0; i++) e = (e + 1) % c->E;
            if (s->counts[e] == 0) break; /* no rows at all */
            row = e * c->max_m + (n == 0 ? s->counts[e] - 1 : kb_rng_below(&r, s->counts[e]));
        }
        while (!s->counts && s->offsets[e + 1] <= row) e++;
        for (int64_t i = 0; i < c->K; i++) /* W8A8: a times its group's scale */
            x[i] = kb_at(&s->a, row * c->K + i) *
                   (s->p.a_scale.buffer ? kb_at(&s->a_scale, row * (c->K / FP8_BLOCK) + i / FP8_BLOCK) : 1.0);
        st = kb_read(b->env, s->out, gemm_out_dtype(c), row * c->N, c->N, got);
        for (int j = 0; j < CHECK_COLS && j < c->N && st == KP_OK; j++) {
            int64_t col = j == 0 ? c->N - 1 : kb_rng_below(&r, c->N);
            kb_err_add(err, got[col],
                       wdot(&s->w, c->wdtype == KP_FP8_E4M3 ? &s->scale : NULL, e, col, c->N, c->K, x));
        }
    }
    return st;
}

/* =============================== moe_combine =============================== */

typedef struct combine_st {
    kp_moe_combine_params p;
    kb_data x, w;
    int32_t *pos;
    kp_buffer *out;
} combine_st;

static kp_status combine_setup(kb_bench *b) {
    const kb_case *c = b->c;
    kb_env *e = b->env;
    combine_st *s = b->st;
    int64_t rows = c->T * c->k;
    if (!(s->pos = kb_alloc(e, (size_t)rows * 4))) return KP_ERR_OUT_OF_MEMORY;
    kb_rng_permutation(&(kb_rng){e->seed + 47}, s->pos, rows); /* token_pos as moe_align leaves it */
    kp_status st = kb_input(e, &s->x, &s->p.expert_out, c->dtype, -1, 1, 2, (int64_t[]){rows, c->hidden});
    if (st == KP_OK) st = kb_input(e, &s->w, &s->p.topk_weights, KP_F32, 0, 1, 2, (int64_t[]){c->T, c->k});
    if (st == KP_OK) st = kb_input_i32(e, s->pos, &s->p.token_pos, 2, (int64_t[]){c->T, c->k});
    if (st == KP_OK) st = kb_output_tensor(e, &s->out, &s->p.out, c->dtype, 2, (int64_t[]){c->T, c->hidden});
    return st;
}

static kp_status combine_check(kb_bench *b, kb_err *err) {
    const kb_case *c = b->c;
    combine_st *s = b->st;
    kb_rng r = {b->env->seed + 53};
    double *got = kb_alloc(b->env, (size_t)c->hidden * 8);
    kp_status st = got ? KP_OK : KP_ERR_OUT_OF_MEMORY;
    for (int n = 0; n < CHECK_ROWS && st == KP_OK; n++) {
        int64_t t = n == 0 ? c->T - 1 : kb_rng_below(&r, c->T);
        st = kb_read(b->env, s->out, c->dtype, t * c->hidden, c->hidden, got);
        for (int64_t h = 0; h < c->hidden && st == KP_OK; h++) {
            double ref = 0;
            for (int64_t j = 0; j < c->k; j++)
                ref += kb_at(&s->w, t * c->k + j) * kb_at(&s->x, s->pos[t * c->k + j] * c->hidden + h);
            kb_err_add(err, got[h], ref);
        }
    }
    return st;
}

/* =============================== moe_forward =============================== */

typedef struct forward_st {
    kp_moe_forward_params p;
    kb_data x, logits, bias, w13, s13, w2, s2; /* bias.buf NULL: no bias */
    kp_buffer *out;
} forward_st;

static kp_status forward_setup(kb_bench *b) {
    const kb_case *c = b->c;
    kb_env *e = b->env;
    forward_st *s = b->st;
    kp_moe_forward_params *p = &s->p;
    p->routing = case_routing(c);
    const kp_dtype act = gemm_out_dtype(c);
    p->activation_dtype = c->dtype == KP_FP8_E4M3 ? KP_FP8_E4M3 : 0; /* W8A8 */
    /* f32 router logits: a model's router runs in f32, and bf16 logits would tie often */
    kp_status st = kb_input(e, &s->x, &p->x, act, -1, 1, 2, (int64_t[]){c->T, c->hidden});
    if (st == KP_OK) st = kb_input(e, &s->logits, &p->router_logits, KP_F32, -4, 4, 2, (int64_t[]){c->T, c->E});
    if (st == KP_OK) st = router_bias(e, c, &s->bias, &p->bias);
    if (st == KP_OK) st = weights(e, c, 2 * c->inter, c->hidden, &s->w13, &s->s13, &p->w13, &p->w13_scale);
    if (st == KP_OK) st = weights(e, c, c->hidden, c->inter, &s->w2, &s->s2, &p->w2, &p->w2_scale);
    if (st == KP_OK) st = kb_output_tensor(e, &s->out, &p->out, act, 2, (int64_t[]){c->T, c->hidden});
    size_t ws = 0;
    if (st == KP_OK) st = kp_moe_forward_workspace_size(e->dev, p, &ws);
    if (st == KP_OK) st = kb_buffer(e, ws, &p->workspace);
    if (st != KP_OK) return st;
    /* bytes: x, logits, bias, out, and the weights of the experts the float64 router uses */
    bool *used = kb_alloc(e, (size_t)c->E);
    double w[32];
    if (!used) return KP_ERR_OUT_OF_MEMORY;
    int32_t ids[32];
    for (int64_t t = 0; t < c->T; t++) {
        ref_gate(&s->logits, t, &s->bias, (int)c->E, &p->routing, ids, w);
        for (int64_t j = 0; j < c->k; j++) used[ids[j]] = true;
    }
    int64_t n_used = 0;
    for (int64_t x = 0; x < c->E; x++) n_used += used[x];
    double el = (double)kp_dtype_size(act);
    b->bytes = el * 2.0 * c->T * c->hidden + 4.0 * c->T * c->E + (s->bias.buf ? 4.0 * c->E : 0) +
               n_used * (weight_bytes(c, 2 * c->inter, c->hidden) + weight_bytes(c, c->hidden, c->inter));
    return KP_OK;
}

/* W8A8: v[0 .. n) quantized per 128 values as kport.h says (scale = max(amax, 1e-10) / 448
 * in f32, e4m3(v / scale)), dequantized. */
static void quant_groups(double *v, int64_t n) {
    for (int64_t g = 0; g < n; g += FP8_BLOCK) {
        float amax = 1e-10f, scale;
        unsigned char code;
        for (int64_t i = g; i < g + FP8_BLOCK; i++) amax = fmaxf(amax, fabsf((float)v[i]));
        scale = amax / 448.0f;
        for (int64_t i = g; i < g + FP8_BLOCK; i++) v[i] = kb_store(KP_FP8_E4M3, &code, 0, (float)v[i] / scale) * scale;
    }
}

/* A few tokens whose routing has a clear margin, through every chosen expert in
 * float64 (SwiGLU = silu(gate) * up; W8A8: x and the SwiGLU output quantized), on a
 * sample of output columns. */
static kp_status forward_check(kb_bench *b, kb_err *err) {
    const kb_case *c = b->c;
    forward_st *s = b->st;
    const kb_data *s13 = c->wdtype == KP_FP8_E4M3 ? &s->s13 : NULL, *s2 = s13 ? &s->s2 : NULL;
    kb_rng r = {b->env->seed + 59};
    double *x = kb_alloc(b->env, (size_t)c->hidden * 8), *h = kb_alloc(b->env, (size_t)c->inter * 2 * 8);
    double *act = kb_alloc(b->env, (size_t)c->inter * 8), *got = kb_alloc(b->env, (size_t)c->hidden * 8);
    double w[32], ref[CHECK_COLS];
    int64_t cols[CHECK_COLS];
    int32_t ids[32];
    kp_status st = x && h && act && got ? KP_OK : KP_ERR_OUT_OF_MEMORY;
    int ncols = c->hidden < CHECK_COLS ? (int)c->hidden : CHECK_COLS;
    for (int j = 0; j < ncols; j++) cols[j] = j == 0 ? c->hidden - 1 : kb_rng_below(&r, c->hidden);
    int checked = 0;
    for (int attempt = 0; attempt < 20 && checked < 3 && st == KP_OK; attempt++) {
        int64_t t = attempt == 0 ? c->T - 1 : kb_rng_below(&r, c->T);
        if (ref_gate(&s->logits, t, &s->bias, (int)c->E, &s->p.routing, ids, w) < 1e-4) continue; /* near-tie: skip */
        for (int64_t i = 0; i < c->hidden; i++) x[i] = kb_at(&s->x, t * c->hidden + i);
        if (s->p.activation_dtype) quant_groups(x, c->hidden);
        for (int j = 0; j < ncols; j++) ref[j] = 0;
        for (int64_t slot = 0; slot < c->k; slot++) {
            int64_t e = ids[slot];
            for (int64_t n = 0; n < 2 * c->inter; n++) h[n] = wdot(&s->w13, s13, e, n, 2 * c->inter, c->hidden, x);
            for (int64_t n = 0; n < c->inter; n++) act[n] = h[n] / (1.0 + exp(-h[n])) * h[c->inter + n];
            if (s->p.activation_dtype) quant_groups(act, c->inter);
            for (int j = 0; j < ncols; j++) ref[j] += w[slot] * wdot(&s->w2, s2, e, cols[j], c->hidden, c->inter, act);
        }
        st = kb_read(b->env, s->out, gemm_out_dtype(c), t * c->hidden, c->hidden, got);
        for (int j = 0; j < ncols && st == KP_OK; j++) kb_err_add(err, got[cols[j]], ref[j]);
        checked++;
    }
    return st;
}

/* ============================== quantize_fp8 ============================== */

typedef struct quant_st {
    kp_quantize_fp8_params p;
    kb_data x;
    kp_buffer *out, *scale;
} quant_st;

static kp_status quant_setup(kb_bench *b) {
    const kb_case *c = b->c;
    quant_st *s = b->st;
    kp_status st = kb_input(b->env, &s->x, &s->p.x, c->dtype, -4, 4, 2, (int64_t[]){c->T, c->K});
    if (st == KP_OK) st = kb_output_tensor(b->env, &s->out, &s->p.out, KP_FP8_E4M3, 2, (int64_t[]){c->T, c->K});
    if (st == KP_OK) st = kb_output_tensor(b->env, &s->scale, &s->p.scale, KP_F32, 2, (int64_t[]){c->T, c->K / FP8_BLOCK});
    return st; /* row-major scales, f32 (not UE8M0): vLLM's per_token_group_quant_fp8 */
}

/* kport.h's definition, exactly: scale = max(amax, 1e-10) / 448 in f32, out = e4m3(x / scale in f32). */
static kp_status quant_check(kb_bench *b, kb_err *err) {
    const kb_case *c = b->c;
    quant_st *s = b->st;
    int64_t groups = c->K / FP8_BLOCK;
    kb_rng r = {b->env->seed + 61};
    double *got = kb_alloc(b->env, (size_t)c->K * 8), *sc = kb_alloc(b->env, (size_t)groups * 8);
    kp_status st = got && sc ? KP_OK : KP_ERR_OUT_OF_MEMORY;
    for (int n = 0; n < CHECK_ROWS && st == KP_OK && !b->msg[0]; n++) {
        int64_t t = n == 0 ? c->T - 1 : kb_rng_below(&r, c->T);
        st = kb_read(b->env, s->out, KP_FP8_E4M3, t * c->K, c->K, got);
        if (st == KP_OK) st = kb_read(b->env, s->scale, KP_F32, t * groups, groups, sc);
        for (int64_t g = 0; g < groups && st == KP_OK && !b->msg[0]; g++) {
            float amax = 1e-10f, scale;
            for (int64_t i = g * FP8_BLOCK; i < (g + 1) * FP8_BLOCK; i++)
                amax = fmaxf(amax, fabsf((float)kb_at(&s->x, t * c->K + i)));
            scale = amax / 448.0f;
            if (sc[g] != scale)
                snprintf(b->msg, sizeof b->msg, "quantize_fp8 token %lld group %lld: scale %.9g, expected %.9g", (long long)t,
                         (long long)g, sc[g], (double)scale);
            for (int64_t i = g * FP8_BLOCK; i < (g + 1) * FP8_BLOCK && !b->msg[0]; i++) {
                unsigned char code;
                double want = kb_store(KP_FP8_E4M3, &code, 0, (float)kb_at(&s->x, t * c->K + i) / scale);
                if (got[i] != want)
                    snprintf(b->msg, sizeof b->msg, "quantize_fp8 token %lld column %lld: e4m3 %g, expected %g", (long long)t,
                             (long long)i, got[i], want);
                kb_err_add(err, got[i] * scale, want * scale);
            }
        }
    }
    return st;
}

/* One call, asynchronous. */
static kp_status gate_run(kb_bench *b) { return kp_moe_gate(b->env->s, &((gate_st *)b->st)->p); }
static kp_status align_run(kb_bench *b) { return kp_moe_align(b->env->s, &((align_st *)b->st)->p); }
static kp_status gemm_run(kb_bench *b) { return kp_grouped_gemm(b->env->s, &((gemm_st *)b->st)->p); }
static kp_status combine_run(kb_bench *b) { return kp_moe_combine(b->env->s, &((combine_st *)b->st)->p); }
static kp_status forward_run(kb_bench *b) { return kp_moe_forward(b->env->s, &((forward_st *)b->st)->p); }
static kp_status quant_run(kb_bench *b) { return kp_quantize_fp8(b->env->s, &((quant_st *)b->st)->p); }

const kb_op_impl kb_op_impls[KP_OP_COUNT] = { /* KP_OP_KV_CACHE_STORE: none */
    [KP_OP_ATTENTION_PREFILL] = {prefill_setup, prefill_run, prefill_check, sizeof(prefill_st)},
    [KP_OP_ATTENTION_DECODE] = {paged_setup, decode_run, paged_check, sizeof(paged_st)},
    [KP_OP_MLA_DECODE] = {paged_setup, mla_run, paged_check, sizeof(paged_st)},
    [KP_OP_MOE_GATE] = {gate_setup, gate_run, gate_check, sizeof(gate_st)},
    [KP_OP_MOE_ALIGN] = {align_setup, align_run, align_check, sizeof(align_st)},
    [KP_OP_GROUPED_GEMM] = {gemm_setup, gemm_run, gemm_check, sizeof(gemm_st)},
    [KP_OP_MOE_COMBINE] = {combine_setup, combine_run, combine_check, sizeof(combine_st)},
    [KP_OP_MOE_FORWARD] = {forward_setup, forward_run, forward_check, sizeof(forward_st)},
    [KP_OP_QUANTIZE_FP8] = {quant_setup, quant_run, quant_check, sizeof(quant_st)},
};
