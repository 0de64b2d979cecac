/*
 * backends/cpu/ops/cpu_attention_prefill.c — kp_attention_prefill on the CPU backend:
 * varlen packed flash attention. Work items are (sequence, KV head, query tile): a
 * tile packs the G = h_q / h_kv query heads of one KV head for a run of queries
 * (rows = queries x heads, about 64), so each K/V block is gathered once for all of
 * them. Items run on the pool with dynamic scheduling (causal tiles differ in cost).
 *
 * f16/bf16 K and V are converted to f32 once per call, for all the query tiles that
 * read them (within CPU_ATT_PREFILL_F32_KV bytes; above it each item converts the
 * blocks it visits, as decode does).
 *
 * Paged K/V (block_table given): keys come through the block table as in decode
 * (cpu_att_kv's table), each item converting the blocks it visits; seq_lens_k gives
 * the key counts and cu_seqlens_k is not read.
 *
 * Content rules checked before anything is written: cu_seqlens_q/k start at 0, never
 * decrease, end at most at total_q/total_k, and no sequence is longer than
 * max_seqlen_q/k; paged: each seq_lens_k in [0, max_seqlen_k] (max_seqlen_k fits the
 * table, checked by the core) and each table entry a sequence uses in [0, num_blocks).
 * Query rows past cu_seqlens_q[B] belong to no sequence: they get out 0 and lse +inf,
 * like any row with no visible key.
 */
#include "cpu_attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PREFILL_ROWS 64 /* query rows (queries x packed heads) a tile aims for */
#define CPU_ATT_PREFILL_F32_KV ((size_t)512 << 20) /* the most bytes of f32 K+V converted up front */

typedef struct prefill_item {
    int32_t b, g, h0, nh; /* sequence, KV head, first head of the group chunk, heads */
    int32_t q0, nq;       /* queries [q0, q0 + nq) of the sequence */
} prefill_item;

typedef struct prefill_job {
    const kp_attention_prefill_params *p;
    cpu_att_problem prob;
    cpu_att_slots slots;
    int max_m;
    const int32_t *cq, *ck;  /* ck: contiguous K/V only */
    const int32_t *lens_k;   /* paged K/V only: seq_lens_k */
    const int32_t *table;    /* paged K/V only: block_table row 0 */
    int64_t table_s0;
    const prefill_item *items;
    float *kf, *vf; /* NULL, or K and V as f32, head-major (each head's keys contiguous):
                       [h_kv][total_k][d] and [h_kv][total_k][dv] */
} prefill_job;

static void row_to_f32(const cpu_kernels *c, kp_dtype dt, const void *src, float *dst, int64_t n) {
    if (dt == KP_F16) c->f16_to_f32(src, dst, n);
    else c->bf16_to_f32(src, dst, n); /* only 16-bit K/V are converted */
}

/* rows [begin, end) of K and V -> f32 (kf, vf) */
static void prefill_convert(void *ctx, int64_t begin, int64_t end) {
    prefill_job *j = ctx;
    const kp_attention_prefill_params *p = j->p;
    const int64_t hk = p->k.shape[1], tk = p->k.shape[0], d = p->k.shape[2], dv = p->v.shape[2];
    for (int64_t t = begin; t < end; t++)
        for (int64_t g = 0; g < hk; g++) {
            row_to_f32(j->prob.conv, p->k.dtype, cpu_att_at(&p->k, t, g, 0), j->kf + (g * tk + t) * d, d);
            row_to_f32(j->prob.conv, p->v.dtype, cpu_att_at(&p->v, t, g, 0), j->vf + (g * tk + t) * dv, dv);
        }
}

static void prefill_items(void *ctx, int64_t begin, int64_t end) {
    prefill_job *j = ctx;
    const kp_attention_prefill_params *p = j->p;
    const cpu_att_problem *pr = &j->prob;
    int slot = cpu_att_slot_take(&j->slots);
    cpu_att_work w;
    cpu_att_work_bind(&w, j->slots.mem + (size_t)slot * j->slots.bytes, j->max_m, pr->d, pr->dv);
    for (int64_t it = begin; it < end; it++) {
        const prefill_item *t = &j->items[it];
        int64_t sq = j->cq[t->b], lq = j->cq[t->b + 1] - sq;
        int64_t sk = j->table ? 0 : j->ck[t->b], lk = j->table ? j->lens_k[t->b] : j->ck[t->b + 1] - sk;
        cpu_att_begin(pr, &w, t->nq * t->nh);
        for (int32_t qi = 0; qi < t->nq; qi++) {
            int64_t i = t->q0 + qi, ip = i + lk - lq; /* bottom-right aligned position */
            int64_t hi = lk, lo = 0;
            if (p->causal && ip + 1 < hi) hi = ip + 1;
            if (p->window_right >= 0 && ip + p->window_right + 1 < hi) hi = ip + p->window_right + 1;
            if (p->window_left >= 0 && ip - p->window_left > lo) lo = ip - p->window_left;
            for (int32_t hh = 0; hh < t->nh; hh++)
                cpu_att_set_row(pr, &w, qi * t->nh + hh, cpu_att_at(&p->q, sq + i, t->h0 + hh, 0), lo, hi);
        }
        cpu_att_kv kv = {
            .k = cpu_att_at(&p->k, sk, t->g, 0),
            .v = cpu_att_at(&p->v, sk, t->g, 0),
            .k_row = p->k.strides[0],
            .v_row = p->v.strides[0],
        };
        if (j->table) { /* k, v [num_blocks, block_size, h_kv, d] */
            kv.k = cpu_att_at(&p->k, 0, 0, t->g);
            kv.v = cpu_att_at(&p->v, 0, 0, t->g);
            kv.k_row = p->k.strides[1], kv.v_row = p->v.strides[1];
            kv.k_blk = p->k.strides[0], kv.v_blk = p->v.strides[0];
            kv.table = j->table + t->b * j->table_s0;
            kv.block_size = p->k.shape[1];
        } else if (j->kf) {
            const int64_t tk = p->k.shape[0];
            kv.k = (const unsigned char *)(j->kf + (t->g * tk + sk) * pr->d);
            kv.v = (const unsigned char *)(j->vf + (t->g * tk + sk) * pr->dv);
            kv.k_row = pr->d;
            kv.v_row = pr->dv;
        }
        cpu_att_run(pr, &w, &kv, 0, lk);
        float *lse = p->lse.buffer ? (float *)(void *)cpu_tensor_data(&p->lse) : NULL;
        for (int32_t qi = 0; qi < t->nq; qi++)
            for (int32_t hh = 0; hh < t->nh; hh++) {
                int64_t row = sq + t->q0 + qi, h = t->h0 + hh;
                cpu_att_finish_row(pr, &w, qi * t->nh + hh, cpu_att_at(&p->out, row, h, 0),
                                   lse ? lse + h * p->lse.strides[0] + row * p->lse.strides[1] : NULL);
            }
    }
    cpu_att_slot_give(&j->slots, slot);
}

static kp_status check_cu_seqlens(const char *op, const char *name, const int32_t *cu, int64_t n, int64_t total,
                                  int64_t max_len) {
    if (cu[0] != 0)
        return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s[0] is %d; it must be 0", op, name, (int)cu[0]);
    for (int64_t i = 1; i < n; i++) {
        if (cu[i] < cu[i - 1])
            return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                         "%s: %s[%lld] is %d, below %s[%lld] = %d; it must be non-decreasing", op,
                                         name, (long long)i, (int)cu[i], name, (long long)(i - 1), (int)cu[i - 1]);
        if (cu[i] > total)
            return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                         "%s: %s[%lld] is %d, past the %lld packed tokens", op, name, (long long)i,
                                         (int)cu[i], (long long)total);
        if (cu[i] - cu[i - 1] > max_len)
            return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                         "%s: sequence %lld has length %d (%s[%lld] - %s[%lld]), above the max_seqlen "
                                         "%lld passed for it",
                                         op, (long long)(i - 1), (int)(cu[i] - cu[i - 1]), name, (long long)i, name,
                                         (long long)(i - 1), (long long)max_len);
    }
    return KP_OK;
}

/* Paged K/V: the table and seq_lens_k content (as decode checks it), and each length
 * within max_seqlen_k. Sets j's table and lens_k. */
static kp_status check_paged_lens(const char *op, const kp_attention_prefill_params *p, prefill_job *j) {
    int64_t max_len = 0;
    kp_status st = cpu_att_check_paged(op, "seq_lens_k", &p->block_table, &p->seq_lens_k, p->k.shape[0],
                                       p->k.shape[1], &max_len);
    if (st != KP_OK) return st;
    j->lens_k = (const int32_t *)(const void *)cpu_tensor_data(&p->seq_lens_k);
    j->table = (const int32_t *)(const void *)cpu_tensor_data(&p->block_table);
    j->table_s0 = p->block_table.strides[0];
    for (int64_t b = 0; b < p->seq_lens_k.shape[0]; b++)
        if (j->lens_k[b] > p->max_seqlen_k)
            return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                         "%s: seq_lens_k[%lld] is %d, above the max_seqlen_k %d passed for it", op,
                                         (long long)b, (int)j->lens_k[b], (int)p->max_seqlen_k);
    return KP_OK;
}

kp_status cpu_op_attention_prefill(kp_op op, kp_stream *s, const void *params, int dry_run) {
    const kp_attention_prefill_params *p = params;
    const char *name = kp_backend_op_name(op);
    int64_t d = p->q.shape[2], dv = p->v.shape[p->v.ndim - 1]; /* v [total_k, h_kv, dv] or a paged cache */
    if (d > CPU_ATT_MAX_D || dv > CPU_ATT_MAX_D)
        return cpu_host()->set_error(KP_ERR_UNSUPPORTED,
                                     "%s: head dims %lld/%lld; the cpu backend takes head dims up to %d", name,
                                     (long long)d, (long long)dv, CPU_ATT_MAX_D);
    if (dry_run) return KP_OK;

    kp_backend_state *bs = cpu_state(s);
    cpu_stream *cs = s->impl;
    prefill_job j;
    memset(&j, 0, sizeof j);
    j.p = p;
    prefill_item *items = NULL;
    pthread_mutex_lock(&cs->lock);
    int64_t nb = p->cu_seqlens_q.shape[0] - 1;
    j.cq = (const int32_t *)(const void *)cpu_tensor_data(&p->cu_seqlens_q);
    if (p->cu_seqlens_k.buffer) /* absent with a block table */
        j.ck = (const int32_t *)(const void *)cpu_tensor_data(&p->cu_seqlens_k);
    const bool paged = p->block_table.buffer != NULL;
    kp_status st = check_cu_seqlens(name, "cu_seqlens_q", j.cq, nb + 1, p->q.shape[0], p->max_seqlen_q);
    if (st == KP_OK && paged) st = check_paged_lens(name, p, &j);
    else if (st == KP_OK) st = check_cu_seqlens(name, "cu_seqlens_k", j.ck, nb + 1, p->k.shape[0], p->max_seqlen_k);
    if (st != KP_OK) goto done;

    int64_t h_q = p->q.shape[1], h_kv = p->k.shape[paged ? 2 : 1], group = h_q / h_kv;
    int64_t nh = group < CPU_ATT_MAX_ROWS ? group : CPU_ATT_MAX_ROWS;
    int64_t chunks = (group + nh - 1) / nh;
    int64_t qt = PREFILL_ROWS / nh < 1 ? 1 : PREFILL_ROWS / nh;
    int64_t count = 0;
    for (int64_t b = 0; b < nb; b++) count += (j.cq[b + 1] - j.cq[b] + qt - 1) / qt * h_kv * chunks;
    items = malloc((size_t)(count ? count : 1) * sizeof *items);
    j.max_m = (int)(qt * nh);
    cpu_att_problem_init(&j.prob, bs, p->q.dtype, (int)d, (int)dv, p->softmax_scale);
    if (!items || cpu_att_slots_init(&j.slots, cpu_pool_threads(bs->pool),
                                     cpu_att_work_bytes(j.max_m, (int)d, (int)dv)) != KP_OK) {
        st = cpu_host()->set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of memory for the cpu backend's scratch", name);
        goto done;
    }
    /* longest sequences first: the big causal tiles start early, small ones fill in */
    int64_t n = 0;
    for (int64_t b = 0; b < nb; b++) {
        int64_t lq = j.cq[b + 1] - j.cq[b];
        for (int64_t q0 = (lq - 1) / qt * qt; q0 >= 0 && lq > 0; q0 -= qt)
            for (int64_t g = 0; g < h_kv; g++)
                for (int64_t c = 0; c < chunks; c++) {
                    prefill_item *t = &items[n++];
                    t->b = (int32_t)b;
                    t->g = (int32_t)g;
                    t->h0 = (int32_t)(g * group + c * nh);
                    t->nh = (int32_t)(group - c * nh < nh ? group - c * nh : nh);
                    t->q0 = (int32_t)q0;
                    t->nq = (int32_t)(lq - q0 < qt ? lq - q0 : qt);
                }
    }
    j.items = items;
    /* every query tile of a (sequence, KV head) reads all its keys: convert them once */
    int64_t tk = p->k.shape[0], kv_elems = tk * h_kv * (d + dv);
    if (!paged && p->k.dtype != KP_F32 && n > 2 * nb * h_kv && kv_elems > 0 &&
        (size_t)kv_elems <= CPU_ATT_PREFILL_F32_KV / sizeof(float)) {
        j.kf = malloc((size_t)(tk * h_kv * d) * sizeof(float));
        j.vf = malloc((size_t)(tk * h_kv * dv) * sizeof(float));
        if (!j.kf || !j.vf) {
            st = cpu_host()->set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of memory for the cpu backend's scratch", name);
            goto done;
        }
        cpu_pool_parallel_for(bs->pool, tk, 16, prefill_convert, &j);
        j.prob.kv_dt = KP_F32;
    }
    cpu_pool_parallel_for(bs->pool, n, 1, prefill_items, &j);
    for (int64_t row = j.cq[nb]; row < p->q.shape[0]; row++)
        for (int64_t h = 0; h < h_q; h++) {
            memset(cpu_att_at(&p->out, row, h, 0), 0, (size_t)dv * kp_dtype_size(p->out.dtype));
            if (p->lse.buffer)
                ((float *)(void *)cpu_tensor_data(&p->lse))[h * p->lse.strides[0] +
                                                                                    row * p->lse.strides[1]] =
                    INFINITY;
        }
done:
    cpu_att_slots_free(&j.slots);
    free(items);
    free(j.kf);
    free(j.vf);
    pthread_mutex_unlock(&cs->lock);
    return st;
}
