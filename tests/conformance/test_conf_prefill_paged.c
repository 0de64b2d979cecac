/*
 * tests/conformance/test_conf_prefill_paged.c — kp_attention_prefill over a paged K/V
 * cache (block_table + seq_lens_k: chunked prefill and prefix caching) against the
 * float64 reference (ref_attention_prefill_paged): every dtype, block sizes 16 and 64,
 * GQA ratios 1/4/8 and MQA, causal and not, sliding windows, prefix hits (queries the
 * last few of many keys), chunks whose keys start and end inside a block, T = 1,
 * empty sequences (no queries, no keys, both), shuffled and in-order block tables with
 * unused entries out of range (never read); then bad table / length content (nothing
 * written where the backend checks indices) and bad shapes (the core's errors).
 */
#include "kp_conformance.h"
#include "ref_attention.h"

#include <math.h>

typedef struct paged_prefill_case {
    kp_dtype dt;
    int nb;
    const int32_t *lq, *lk; /* [nb]: queries of this chunk, keys in the cache (prefix + chunk) */
    int h_q, h_kv, d, dv, block_size;
    int causal, wl, wr, lse;
    int in_order;           /* blocks handed out in order (else shuffled) */
} paged_prefill_case;

static void run_paged_prefill(kp_device *dev, kp_stream *s, const paged_prefill_case *c) {
    const int bs = c->block_size;
    int32_t cu_q[17], lens_k[16];
    double cuq_d[17], lens_d[16];
    int max_q = 0, max_k = 0, max_blocks = 1, used = 0;
    cu_q[0] = 0;
    for (int b = 0; b < c->nb; b++) {
        int n = (c->lk[b] + bs - 1) / bs;
        cu_q[b + 1] = cu_q[b] + c->lq[b];
        lens_k[b] = c->lk[b];
        used += n;
        if (n + 1 > max_blocks) max_blocks = n + 1; /* a spare column nobody reads */
        if (c->lq[b] > max_q) max_q = c->lq[b];
        if (c->lk[b] > max_k) max_k = c->lk[b];
    }
    for (int b = 0; b <= c->nb; b++) cuq_d[b] = cu_q[b];
    for (int b = 0; b < c->nb; b++) lens_d[b] = lens_k[b];
    int num_blocks = used + 3; /* spare blocks nobody uses */
    int *perm = malloc((size_t)num_blocks * sizeof *perm);
    for (int i = 0; i < num_blocks; i++) perm[i] = i;
    for (int i = num_blocks - 1; i > 0 && !c->in_order; i--) {
        int j = (int)(kp_test_rand_u64() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int32_t *table = malloc((size_t)(c->nb * max_blocks + 1) * sizeof *table);
    double *table_d = malloc((size_t)(c->nb * max_blocks + 1) * sizeof *table_d);
    int next = 0;
    for (int b = 0; b < c->nb; b++)
        for (int j = 0; j < max_blocks; j++) {
            int32_t e = j < (c->lk[b] + bs - 1) / bs ? perm[next++] : (j % 2 ? -7 : num_blocks + 1000);
            table[b * max_blocks + j] = e;
            table_d[b * max_blocks + j] = e;
        }
    int64_t tq = cu_q[c->nb];
    double scale = 1.0 / sqrt((double)c->d);
    char what[200];
    snprintf(what, sizeof what, "paged prefill %s d %d/%d h %d/%d block %d causal %d window %d/%d%s",
             kp_dtype_name(c->dt), c->d, c->dv, c->h_q, c->h_kv, bs, c->causal, c->wl, c->wr,
             c->in_order ? " in order" : "");

    int64_t sq[3] = {tq, c->h_q, c->d}, so[3] = {tq, c->h_q, c->dv}, sl[2] = {c->h_q, tq};
    int64_t sk[4] = {num_blocks, bs, c->h_kv, c->d}, sv[4] = {num_blocks, bs, c->h_kv, c->dv};
    int64_t scu[1] = {c->nb + 1}, st[2] = {c->nb, max_blocks}, sb[1] = {c->nb};
    kp_conf_tensor q = kp_conf_random(dev, "q", c->dt, 3, sq, -1.0, 1.0);
    kp_conf_tensor k = kp_conf_random(dev, "k", c->dt, 4, sk, -1.0, 1.0);
    kp_conf_tensor v = kp_conf_random(dev, "v", c->dt, 4, sv, -1.0, 1.0);
    kp_conf_tensor cq = kp_conf_from(dev, "cu_seqlens_q", KP_I32, 1, scu, cuq_d);
    kp_conf_tensor bt = kp_conf_from(dev, "block_table", KP_I32, 2, st, table_d);
    kp_conf_tensor slk = kp_conf_from(dev, "seq_lens_k", KP_I32, 1, sb, lens_d);
    kp_conf_tensor out = kp_conf_output(dev, "out", c->dt, 3, so);
    kp_conf_tensor lse = {0};
    if (c->lse) lse = kp_conf_output(dev, "lse", KP_F32, 2, sl);

    kp_attention_prefill_params p;
    memset(&p, 0, sizeof p);
    p.q = q.t, p.k = k.t, p.v = v.t, p.out = out.t;
    if (c->lse) p.lse = lse.t;
    p.cu_seqlens_q = cq.t, p.block_table = bt.t, p.seq_lens_k = slk.t;
    p.max_seqlen_q = max_q, p.max_seqlen_k = max_k;
    p.softmax_scale = (float)scale;
    p.causal = c->causal, p.window_left = c->wl, p.window_right = c->wr;
    kp_test_require_op(dev, KP_OP_ATTENTION_PREFILL, &p);
    CHECK_OK(kp_attention_prefill(s, &p));
    CHECK_OK(kp_stream_sync(s));
    size_t no = (size_t)out.numel + 1, nl = (size_t)(tq * c->h_q + 1);
    double *ref = calloc(no, sizeof *ref), *ref_lse = calloc(nl, sizeof *ref_lse);
    ref_attn_err e = {kp_conf_prec(c->dt), calloc(no, sizeof(double)), calloc(nl, sizeof(double))};
    ref_attention_prefill_paged(q.host, k.host, v.host, tq, c->h_q, c->h_kv, c->d, c->dv, bs, table, max_blocks, lens_k,
                                cu_q, c->nb, (double)(float)scale, c->causal, c->wl, c->wr, ref, ref_lse, &e);
    kp_conf_download(&out);
    kp_conf_expect(what, &out, ref, e.out, "token,head,col");
    if (c->lse) {
        kp_conf_download(&lse);
        char w2[240];
        snprintf(w2, sizeof w2, "%s: lse", what);
        kp_conf_expect(w2, &lse, ref_lse, e.lse, "head,token");
        kp_conf_free(&lse);
    }
    free(ref), free(ref_lse), free(e.out), free(e.lse), free(perm), free(table), free(table_d);
    kp_conf_free(&q), kp_conf_free(&k), kp_conf_free(&v), kp_conf_free(&cq), kp_conf_free(&bt);
    kp_conf_free(&slk), kp_conf_free(&out);
}

/* Queries are the last lq of lk keys: T = 1 behind a prefix (decode-like), no queries
 * with cached keys, a prefix hit whose chunk starts mid-block (50 cached + 37 new), a
 * chunk crossing several blocks (130 cached + 20 new), a sequence with no keys at all,
 * one with more queries than keys (the first see nothing under causal), and an empty
 * one. Lengths 0 and 1 and lengths no block or tile divides. */
static const int32_t mixed_lq[7] = {1, 0, 37, 20, 9, 4, 0};
static const int32_t mixed_lk[7] = {17, 5, 87, 150, 3, 0, 0};

static const int head_dims[4][2] = {{64, 64}, {128, 128}, {256, 256}, {192, 128}};
static const int heads[4][2] = {{4, 4}, {8, 2}, {16, 2}, {6, 1}}; /* ratios 1, 4, 8; MQA */

static void paged_grid(kp_device *dev, kp_dtype dt) {
    static const int blocks[2] = {16, 64};
    kp_stream *s;
    CHECK_OK(kp_stream_create(dev, &s));
    int n = 0;
    for (int bi = 0; bi < 2; bi++)
        for (int hh = 0; hh < 4; hh++)
            for (int causal = 0; causal < 2; causal++, n++) {
                const int *hd = head_dims[n % 4];
                paged_prefill_case c = {.dt = dt, .nb = 7, .lq = mixed_lq, .lk = mixed_lk, .h_q = heads[hh][0],
                    .h_kv = heads[hh][1], .d = hd[0], .dv = hd[1], .block_size = blocks[bi], .causal = causal,
                    .wl = -1, .wr = -1, .lse = n % 3 != 1, .in_order = n % 5 == 0};
                run_paged_prefill(dev, s, &c);
            }
    CHECK_OK(kp_stream_destroy(s));
}

KP_CONFORMANCE(conf_attn_prefill_paged_f32) { paged_grid(d, KP_F32); }
KP_CONFORMANCE(conf_attn_prefill_paged_f16) { paged_grid(d, KP_F16); }
KP_CONFORMANCE(conf_attn_prefill_paged_bf16) { paged_grid(d, KP_BF16); }

KP_CONFORMANCE(conf_attn_prefill_paged_window) {
    static const int win[6][3] = {{5, -1, 1}, {0, -1, 1}, {16, 4, 0}, {20, 2, 1}, {-1, 3, 0}, {40, -1, 1}};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int w = 0; w < 6; w++) {
        paged_prefill_case c = {.dt = w % 2 ? KP_F32 : KP_F16, .nb = 7, .lq = mixed_lq, .lk = mixed_lk, .h_q = 8,
            .h_kv = 2, .d = 128, .dv = 128, .block_size = w % 3 ? 16 : 64, .causal = win[w][2], .wl = win[w][0],
            .wr = win[w][1], .lse = 1};
        run_paged_prefill(d, s, &c);
    }
    CHECK_OK(kp_stream_destroy(s));
}

/* Chunked prefill of a long prompt: chunks of 64 and 300 queries behind 1000 and 700
 * cached keys, many blocks and query tiles. */
KP_CONFORMANCE(conf_attn_prefill_paged_long) {
    static const int32_t lq[2] = {64, 300}, lk[2] = {1064, 1000};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    paged_prefill_case a = {.dt = KP_BF16, .nb = 2, .lq = lq, .lk = lk, .h_q = 8, .h_kv = 2, .d = 128, .dv = 128,
        .block_size = 16, .causal = 1, .wl = -1, .wr = -1, .lse = 1};
    run_paged_prefill(d, s, &a);
    paged_prefill_case b = {.dt = KP_F16, .nb = 2, .lq = lq, .lk = lk, .h_q = 4, .h_kv = 1, .d = 64, .dv = 64,
        .block_size = 64, .causal = 1, .wl = 256, .wr = -1, .lse = 1};
    run_paged_prefill(d, s, &b);
    CHECK_OK(kp_stream_destroy(s));
}

/* ------------------------------------------------------------------------ */
/* Bad content and bad shapes: an error naming the argument, nothing written  */
/* ------------------------------------------------------------------------ */

/* Two sequences (3 and 2 queries), k/v caches [6, 16, 1, 64], table [2, 3]. */
typedef struct bad_setup {
    kp_conf_tensor q, k, v, cq, bt, slk, out, lse;
    kp_attention_prefill_params p;
} bad_setup;

static void bad_make(kp_device *dev, bad_setup *b, const double *table, const double *lens) {
    int64_t sq[3] = {5, 2, 64}, sc[4] = {6, 16, 1, 64}, scu[1] = {3}, st[2] = {2, 3}, sb[1] = {2}, sl[2] = {2, 5};
    static const double cuq[3] = {0, 3, 5};
    b->q = kp_conf_random(dev, "q", KP_F16, 3, sq, -1.0, 1.0);
    b->k = kp_conf_random(dev, "k", KP_F16, 4, sc, -1.0, 1.0);
    b->v = kp_conf_random(dev, "v", KP_F16, 4, sc, -1.0, 1.0);
    b->cq = kp_conf_from(dev, "cu_seqlens_q", KP_I32, 1, scu, cuq);
    b->bt = kp_conf_from(dev, "block_table", KP_I32, 2, st, table);
    b->slk = kp_conf_from(dev, "seq_lens_k", KP_I32, 1, sb, lens);
    b->out = kp_conf_output(dev, "out", KP_F16, 3, sq);
    b->lse = kp_conf_output(dev, "lse", KP_F32, 2, sl);
    kp_attention_prefill_params *p = &b->p;
    memset(p, 0, sizeof *p);
    p->q = b->q.t, p->k = b->k.t, p->v = b->v.t, p->out = b->out.t, p->lse = b->lse.t;
    p->cu_seqlens_q = b->cq.t, p->block_table = b->bt.t, p->seq_lens_k = b->slk.t;
    p->max_seqlen_q = 3, p->max_seqlen_k = 48, p->softmax_scale = 0.125f, p->causal = 1;
    p->window_left = p->window_right = -1;
}

static void bad_free(bad_setup *b) {
    kp_conf_free(&b->q), kp_conf_free(&b->k), kp_conf_free(&b->v), kp_conf_free(&b->cq), kp_conf_free(&b->bt);
    kp_conf_free(&b->slk), kp_conf_free(&b->out), kp_conf_free(&b->lse);
}

static void prefill_paged_bad(kp_device *dev, const double *table, const double *lens, int max_k,
                              const char *needle) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(dev, &s));
    bad_setup b;
    bad_make(dev, &b, table, lens);
    b.p.max_seqlen_k = max_k;
    kp_test_require_op(dev, KP_OP_ATTENTION_PREFILL, &b.p);
    unsigned char *so = kp_test_snapshot(b.out.g.buf), *sls = kp_test_snapshot(b.lse.g.buf);
    int checked = kp_test_bad_index_result(dev, kp_attention_prefill(s, &b.p), needle);
    CHECK_OK(kp_stream_sync(s));
    if (checked) {
        kp_test_unchanged(b.out.g.buf, so);
        kp_test_unchanged(b.lse.g.buf, sls);
    } else { /* a backend without KP_CAP_CHECKS_INDICES: only memory safety */
        free(so), free(sls);
        kp_guarded_check(&b.out.g, "out");
        kp_guarded_check(&b.lse.g, "lse");
    }
    bad_free(&b);
    CHECK_OK(kp_stream_destroy(s));
}

KP_CONFORMANCE(conf_attn_prefill_paged_bad_content) {
    const double table_ok[6] = {0, 1, 2, 3, 4, 5}, table_bad[6] = {0, 1, 2, 3, 6, 5};
    const double table_neg[6] = {0, -1, 2, 3, 4, 5};
    const double lens_ok[2] = {48, 20}, lens_big[2] = {48, 49}, lens_neg[2] = {-1, 20};
    prefill_paged_bad(d, table_bad, lens_ok, 48, "block_table[1, 1]");
    prefill_paged_bad(d, table_neg, lens_ok, 48, "block_table[0, 1]");
    prefill_paged_bad(d, table_ok, lens_big, 48, "seq_lens_k[1]");
    prefill_paged_bad(d, table_ok, lens_neg, 48, "seq_lens_k[0]");
    prefill_paged_bad(d, table_ok, lens_ok, 40, "max_seqlen_k");
}

/* Shape rules the core checks on every backend, before any backend runs. */
KP_CONFORMANCE(conf_attn_prefill_paged_bad_shapes) {
    const double table[6] = {0, 1, 2, 3, 4, 5}, lens[2] = {48, 20};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    bad_setup b;
    bad_make(d, &b, table, lens);
    unsigned char *so = kp_test_snapshot(b.out.g.buf), *sls = kp_test_snapshot(b.lse.g.buf);
    kp_attention_prefill_params p = b.p;
    p.max_seqlen_k = 49; /* past the table's 3 x 16 keys */
    CHECK_ERR(kp_attention_prefill(s, &p), KP_ERR_INVALID_ARGUMENT, "max_seqlen_k");
    p = b.p;
    p.block_table.shape[0] = 1; /* B rows of the table */
    CHECK_ERR(kp_attention_prefill(s, &p), KP_ERR_INVALID_SHAPE, "block_table");
    p = b.p;
    p.seq_lens_k.shape[0] = 3;
    CHECK_ERR(kp_attention_prefill(s, &p), KP_ERR_INVALID_SHAPE, "seq_lens_k");
    p = b.p;
    p.seq_lens_k.buffer = NULL; /* a block table needs its lengths */
    CHECK_ERR(kp_attention_prefill(s, &p), KP_ERR_INVALID_ARGUMENT, "seq_lens_k");
    p = b.p;
    p.block_table.buffer = NULL; /* lengths without a table: contiguous K/V of rank 3 expected */
    CHECK_ERR(kp_attention_prefill(s, &p), KP_ERR_INVALID_ARGUMENT, "seq_lens_k");
    p = b.p;
    p.v.shape[1] = 8, p.v.strides[0] = 8 * 64; /* v's block_size differs from k's */
    CHECK_ERR(kp_attention_prefill(s, &p), KP_ERR_INVALID_SHAPE, "block_size");
    p = b.p;
    p.k.ndim = 3, p.k.shape[0] = 96, p.k.shape[1] = 1, p.k.shape[2] = 64; /* a contiguous k with a table */
    p.k.strides[0] = 64, p.k.strides[1] = 64, p.k.strides[2] = 1;
    CHECK_ERR(kp_attention_prefill(s, &p), KP_ERR_INVALID_SHAPE, "k");
    p = b.p;
    p.block_table.dtype = KP_F32;
    CHECK_ERR(kp_attention_prefill(s, &p), KP_ERR_INVALID_DTYPE, "block_table");
    CHECK_OK(kp_stream_sync(s));
    kp_test_unchanged(b.out.g.buf, so);
    kp_test_unchanged(b.lse.g.buf, sls);
    bad_free(&b);
    CHECK_OK(kp_stream_destroy(s));
}
