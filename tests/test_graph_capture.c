/*
 * tests/test_graph_capture.c — a server's decode step on its own (wrapped) stream:
 * paged decode, MLA decode and kp_moe_forward, replayed with new inputs in the same
 * buffers and checked against the float64 references each time.
 *
 *   cuda_graph_capture_decode_step   captures the step once with cuStreamBeginCapture
 *                                    (global mode: any allocation, free or sync during
 *                                    capture fails it) and replays the graph; needs a
 *                                    CUDA device (ci/gpu-check runs it on the H200)
 *   opencl_wrapped_decode_step       the same step re-enqueued on a wrapped PoCL queue
 *
 * The stream's scratch is reserved once before the first step; after that the step must
 * run on it (the graph-capture rule, kport.h kp_stream_reserve).
 */
#include "kp_conformance.h"
#include "kp_test.h"
#include "ref_attention.h"
#include "ref_moe.h"

#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SHAPE(...) ((int64_t[]){__VA_ARGS__})

/* ---- the few CUDA driver calls capture needs, dlopen'd (tests link no CUDA) ---- */

typedef int cu_result;
typedef struct cu_graph_api {
    void *lib;
    cu_result (*ctx_push)(void *ctx);
    cu_result (*ctx_pop)(void **ctx);
    cu_result (*begin)(void *stream, int mode);
    cu_result (*end)(void *stream, void **graph);
    cu_result (*instantiate)(void **exec, void *graph, unsigned long long flags);
    cu_result (*launch)(void *exec, void *stream);
    cu_result (*exec_destroy)(void *exec);
    cu_result (*graph_destroy)(void *graph);
} cu_graph_api;

static int cu_graph_api_load(cu_graph_api *a) {
    memset(a, 0, sizeof *a);
    a->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!a->lib) return 0;
#define SYM(field, name) (*(void **)&a->field = dlsym(a->lib, name))
    SYM(ctx_push, "cuCtxPushCurrent_v2"), SYM(ctx_pop, "cuCtxPopCurrent_v2");
    SYM(begin, "cuStreamBeginCapture_v2"), SYM(end, "cuStreamEndCapture");
    SYM(instantiate, "cuGraphInstantiateWithFlags"), SYM(launch, "cuGraphLaunch");
    SYM(exec_destroy, "cuGraphExecDestroy"), SYM(graph_destroy, "cuGraphDestroy");
#undef SYM
    return a->ctx_push && a->ctx_pop && a->begin && a->end && a->instantiate && a->launch && a->exec_destroy &&
           a->graph_destroy;
}

/* ---- the step's inputs, refilled in place ---- */

static void refill(kp_conf_tensor *c, double lo, double hi) {
    size_t es = kp_dtype_size(c->t.dtype);
    void *packed = malloc((size_t)c->numel * es);
    CHECK(packed != NULL);
    for (int64_t i = 0; i < c->numel; i++) c->host[i] = kp_conf_round(kp_test_rand_uniform(lo, hi), c->t.dtype);
    kp_conf_pack(c->host, c->numel, c->t.dtype, packed);
    kp_guarded_write(&c->g, packed, (size_t)c->numel * es);
    free(packed);
}

typedef struct paged {
    int b, h_q, h_kv, d, dv, bs, mla, max_blocks;
    int32_t lens[4], *table;
    kp_conf_tensor q, k, v, bt, sl, out;
} paged;

static paged paged_make(kp_device *d, int b, int h_q, int h_kv, int dim, int dv, int bs, int mla, const int32_t *lens) {
    paged p;
    memset(&p, 0, sizeof p);
    p.b = b, p.h_q = h_q, p.h_kv = h_kv, p.d = dim, p.dv = dv, p.bs = bs, p.mla = mla, p.max_blocks = 1;
    int used = 0;
    for (int i = 0; i < b; i++) {
        p.lens[i] = lens[i];
        int n = (lens[i] + bs - 1) / bs;
        used += n;
        if (n > p.max_blocks) p.max_blocks = n;
    }
    p.table = malloc((size_t)(b * p.max_blocks) * sizeof *p.table);
    double *td = malloc((size_t)(b * p.max_blocks) * sizeof *td), ld[4];
    for (int i = 0, next = used - 1; i < b; i++) { /* blocks handed out backwards: not the identity */
        ld[i] = lens[i];
        for (int j = 0; j < p.max_blocks; j++)
            td[i * p.max_blocks + j] = p.table[i * p.max_blocks + j] = j < (lens[i] + bs - 1) / bs ? next-- : 0;
    }
    p.q = kp_conf_random(d, "q", KP_BF16, 4, SHAPE(b, 1, h_q, dim), -1.0, 1.0);
    p.k = kp_conf_random(d, mla ? "kv_cache" : "k_cache", KP_BF16, 4, SHAPE(used, bs, h_kv, dim), -1.0, 1.0);
    if (!mla) p.v = kp_conf_random(d, "v_cache", KP_BF16, 4, SHAPE(used, bs, h_kv, dv), -1.0, 1.0);
    p.bt = kp_conf_from(d, "block_table", KP_I32, 2, SHAPE(b, p.max_blocks), td);
    p.sl = kp_conf_from(d, "seq_lens", KP_I32, 1, SHAPE(b), ld);
    p.out = kp_conf_output(d, "out", KP_BF16, 4, SHAPE(b, 1, h_q, dv));
    free(td);
    return p;
}

static void paged_check(paged *p, double scale, const char *what) {
    size_t n = (size_t)p->b * (size_t)p->h_q * (size_t)p->dv;
    double *ref = calloc(n, sizeof *ref), *err = calloc(n, sizeof *err);
    ref_attn_err e = {kp_conf_prec(KP_BF16), err, NULL};
    ref_attention_decode(p->q.host, p->k.host, p->mla ? p->k.host : p->v.host, p->b, 1, p->h_q, p->h_kv, p->d, p->dv,
                         p->d, p->mla ? p->d : p->dv, p->bs, p->table, p->max_blocks, p->lens, scale, 1, ref, NULL,
                         &e);
    kp_conf_download(&p->out);
    kp_conf_expect(what, &p->out, ref, err, "batch,query,head,col");
    free(ref), free(err);
}

static void paged_free(paged *p) {
    kp_conf_free(&p->q), kp_conf_free(&p->k), kp_conf_free(&p->bt), kp_conf_free(&p->sl), kp_conf_free(&p->out);
    if (!p->mla) kp_conf_free(&p->v);
    free(p->table);
}

typedef struct moe {
    int64_t t, e, hidden, inter, k;
    kp_moe_routing r;
    kp_conf_tensor x, lg, w13, w2, out;
    kp_guarded ws;
} moe;

static void moe_check(moe *m, const char *what) {
    double *ids = malloc((size_t)(m->t * m->k) * sizeof *ids), *wts = malloc((size_t)(m->t * m->k) * sizeof *wts);
    double *ref = calloc((size_t)(m->t * m->hidden), sizeof *ref), *err2 = calloc((size_t)(m->t * m->hidden), sizeof *err2);
    ref_moe_gate(m->lg.host, m->t, m->e, NULL, &m->r, ids, wts, NULL);
    ref_mlp_err me = {kp_conf_prec(KP_BF16), kp_conf_prec(KP_BF16), NULL};
    for (int64_t tok = 0; tok < m->t; tok++) {
        me.err2 = err2 + tok * m->hidden;
        for (int64_t slot = 0; slot < m->k; slot++) {
            int64_t ex = (int64_t)ids[tok * m->k + slot];
            ref_swiglu_mlp_add(m->x.host + tok * m->hidden, m->w13.host + ex * 2 * m->inter * m->hidden,
                               m->w2.host + ex * m->hidden * m->inter, m->hidden, m->inter, wts[tok * m->k + slot],
                               ref + tok * m->hidden, &me);
        }
    }
    for (int64_t i = 0; i < m->t * m->hidden; i++) err2[i] = sqrt(err2[i]);
    kp_conf_download(&m->out);
    kp_conf_expect(what, &m->out, ref, err2, "token,col");
    free(ids), free(wts), free(ref), free(err2);
}

/* Runs the step `replays` times on a wrapper of a stream kport created; with cu set,
 * the step is captured once into a CUDA graph that every replay launches. */
static void decode_step_replays(kp_device *d, const cu_graph_api *cu, int replays) {
    kp_stream *own, *s;
    CHECK_OK(kp_stream_create(d, &own));
    void *native;
    CHECK_OK(kp_stream_get_native(own, &native));
    CHECK_OK(kp_stream_wrap(d, native, &s));

    static const int32_t lens[4] = {300, 17, 1, 129}, mla_lens[2] = {200, 33};
    paged dec = paged_make(d, 4, 16, 4, 128, 128, 16, 0, lens);
    paged mla = paged_make(d, 2, 16, 1, 576, 512, 64, 1, mla_lens);
    const double dec_scale = (double)(float)(1.0 / sqrt(128.0)), mla_scale = 0.135234;
    kp_attention_decode_params ap;
    memset(&ap, 0, sizeof ap);
    ap.q = dec.q.t, ap.k_cache = dec.k.t, ap.v_cache = dec.v.t, ap.block_table = dec.bt.t, ap.seq_lens = dec.sl.t;
    ap.out = dec.out.t, ap.softmax_scale = (float)dec_scale, ap.causal = 1, ap.num_splits = 4;
    kp_mla_decode_params mp;
    memset(&mp, 0, sizeof mp);
    mp.q = mla.q.t, mp.kv_cache = mla.k.t, mp.block_table = mla.bt.t, mp.seq_lens = mla.sl.t, mp.out = mla.out.t;
    mp.softmax_scale = (float)mla_scale, mp.causal = 1, mp.head_dim_v = 512, mp.num_splits = 4;

    moe m = {.t = 5, .e = 16, .hidden = 256, .inter = 128, .k = 4,
             .r = {4, 4, 2, KP_MOE_SCORING_SIGMOID, 1, 2.5f}};
    m.x = kp_conf_random(d, "x", KP_BF16, 2, SHAPE(m.t, m.hidden), -1.0, 1.0);
    m.lg = kp_conf_random(d, "router_logits", KP_F32, 2, SHAPE(m.t, m.e), -3.0, 3.0);
    m.w13 = kp_conf_random(d, "w13", KP_BF16, 3, SHAPE(m.e, 2 * m.inter, m.hidden), -0.15, 0.15);
    m.w2 = kp_conf_random(d, "w2", KP_BF16, 3, SHAPE(m.e, m.hidden, m.inter), -0.15, 0.15);
    m.out = kp_conf_output(d, "out", KP_BF16, 2, SHAPE(m.t, m.hidden));
    kp_moe_forward_params fp;
    memset(&fp, 0, sizeof fp);
    fp.x = m.x.t, fp.router_logits = m.lg.t, fp.w13 = m.w13.t, fp.w2 = m.w2.t, fp.out = m.out.t, fp.routing = m.r;
    size_t ws_bytes = 0;
    CHECK_OK(kp_moe_forward_workspace_size(d, &fp, &ws_bytes));
    m.ws = kp_guarded_alloc(d, ws_bytes);
    fp.workspace = m.ws.buf, fp.workspace_offset = m.ws.offset;
    kp_test_require_op(d, KP_OP_ATTENTION_DECODE, &ap);
    kp_test_require_op(d, KP_OP_MLA_DECODE, &mp);
    kp_test_require_op(d, KP_OP_MOE_FORWARD, &fp);

    /* before capture: reserve, and one step outside it (modules load, kernels build) */
    CHECK_OK(kp_stream_reserve(s, (size_t)64 << 20));
    CHECK_OK(kp_attention_decode(s, &ap));
    CHECK_OK(kp_mla_decode(s, &mp));
    CHECK_OK(kp_moe_forward(s, &fp));
    CHECK_OK(kp_stream_sync(own));

    kp_native_device nd;
    CHECK_OK(kp_device_get_native(d, &nd));
    void *graph = NULL, *exec = NULL, *popped = NULL;
    if (cu) {
        CHECK_INT_EQ(cu->ctx_push(nd.context), 0);
        CHECK_INT_EQ(cu->begin(native, 0 /* CU_STREAM_CAPTURE_MODE_GLOBAL */), 0);
        kp_status st[3] = {kp_attention_decode(s, &ap), kp_mla_decode(s, &mp), kp_moe_forward(s, &fp)};
        cu_result ended = cu->end(native, &graph); /* always end the capture, even after a failure */
        for (int i = 0; i < 3; i++) CHECK_OK(st[i]);
        CHECK_INT_EQ(ended, 0);
        CHECK_INT_EQ(cu->instantiate(&exec, graph, 0), 0);
        CHECK_INT_EQ(cu->ctx_pop(&popped), 0);
    }
    for (int r = 0; r < replays; r++) {
        refill(&dec.q, -1.0, 1.0), refill(&dec.k, -1.0, 1.0), refill(&dec.v, -1.0, 1.0);
        refill(&mla.q, -1.0, 1.0), refill(&mla.k, -1.0, 1.0);
        refill(&m.x, -1.0, 1.0), refill(&m.lg, -3.0, 3.0);
        kp_guarded_poison(&dec.out.g, 0xFF), kp_guarded_poison(&mla.out.g, 0xFF), kp_guarded_poison(&m.out.g, 0xFF);
        if (cu) {
            CHECK_INT_EQ(cu->ctx_push(nd.context), 0);
            CHECK_INT_EQ(cu->launch(exec, native), 0);
            CHECK_INT_EQ(cu->ctx_pop(&popped), 0);
        } else {
            CHECK_OK(kp_attention_decode(s, &ap));
            CHECK_OK(kp_mla_decode(s, &mp));
            CHECK_OK(kp_moe_forward(s, &fp));
        }
        CHECK_OK(kp_stream_sync(own));
        char what[64];
        snprintf(what, sizeof what, "replay %d: paged decode", r);
        paged_check(&dec, dec_scale, what);
        snprintf(what, sizeof what, "replay %d: mla decode", r);
        paged_check(&mla, mla_scale, what);
        snprintf(what, sizeof what, "replay %d: moe_forward", r);
        moe_check(&m, what);
        kp_guarded_check(&m.ws, "workspace");
    }
    if (cu) {
        CHECK_INT_EQ(cu->ctx_push(nd.context), 0);
        cu->exec_destroy(exec), cu->graph_destroy(graph);
        CHECK_INT_EQ(cu->ctx_pop(&popped), 0);
    }
    CHECK_OK(kp_stream_destroy(s)); /* the wrapper only: own is still usable */
    CHECK_OK(kp_stream_sync(own));
    paged_free(&dec), paged_free(&mla);
    kp_conf_free(&m.x), kp_conf_free(&m.lg), kp_conf_free(&m.w13), kp_conf_free(&m.w2), kp_conf_free(&m.out);
    kp_guarded_free(&m.ws);
    CHECK_OK(kp_stream_destroy(own));
}

static void graph_on_cuda(kp_device *d) {
    cu_graph_api cu;
    if (!cu_graph_api_load(&cu)) KP_SKIP("cuda: libcuda.so.1 or its graph calls not found");
    decode_step_replays(d, &cu, 3);
    dlclose(cu.lib);
}

static void step_on_opencl(kp_device *d) { decode_step_replays(d, NULL, 2); }

KP_TEST(cuda_graph_capture_decode_step) { kp_test_run_on("cuda", graph_on_cuda); }
KP_TEST(opencl_wrapped_decode_step) { kp_test_run_on("opencl", step_on_opencl); }
