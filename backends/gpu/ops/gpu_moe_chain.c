/*
 * backends/gpu/ops/gpu_moe_chain.c — kp_moe_forward's launch chain planned once per
 * shape (issue 17: the host cost of a call under 1 µs on GPU backends).
 *
 * Planned launch by launch (gpu_moe_forward.c), one call costs 6 or 7 plans: kernel
 * generation switches (getenv, the tuning table), option strings (snprintf), variant
 * checks, tile picks, each twice (a dry pass, then the wet one). Here the first call of
 * a shape runs that fresh path behind a recording target and files what it launched in
 * the plan cache (one large-plan slot, gpu_plan_cache.c): each launch's variant
 * (source, kernel, options), geometry, local bytes, and the constant parts of its
 * parameter block (the GEMMs' small_max, split-K count and slice; align's chunk and
 * chunk count). A later call with the same signature replays it: the parameter blocks
 * are rebuilt by the same constructors the launchers use (kp_gpu_gate_kargs,
 * kp_gpu_align_kargs, kp_gpu_gemm_kargs, kp_gpu_combine_kargs) from this call's views,
 * so only buffers, offsets and the routing scalars are filled per call. A GEMM on the
 * sm_90a tier (generation 3, where the tuning table's grouped_gemm;gen 3 picks it: w2's,
 * the one without gathered rows or a SwiGLU or combine epilogue; KPORT_GPU_KERNELS=
 * grouped_gemm=sm90 makes the whole chain unsupported, since w13's cannot run there)
 * records its tile width alone: its launch takes TMA tensor maps, which describe buffer
 * addresses, so the replay rebuilds them, with the parameter block, through the builder
 * the fresh plan uses (kp_gpu_gemm_sm90_args) from this call's views; the backend encodes
 * them at launch (cuTensorMapEncodeTiled, host-only) as for a fresh plan: no allocation,
 * no sync.
 *
 * The signature is every scalar of the params the plan reads besides buffers, offsets
 * and routing scalars: the shapes (T exactly: launch grids depend on it), dtypes, row
 * strides, which GEMMs generation 2 and the sm_90a tier cannot take (alignment of this
 * call's views), whether KPORT_DISABLE_TIER turns the sm_90a tier off, and
 * KPORT_GPU_KERNELS's text (read per call, so a changed setting replans). The device,
 * its profile and the tuning generation are the cache's own checks. Validation stays:
 * the core validated the call; the setup's checks (gpu_moe_forward.c) run every call; a
 * plan is filed only when the whole fresh chain succeeded, so every error comes from
 * fresh planning. A launch the recorder does not know (a new stage) leaves the shape
 * uncached. Dry runs always plan afresh.
 */
#include "gpu_ops.h"

#include <stdlib.h>
#include <string.h>

#define CHAIN_MAX 16      /* gate, align x3, 2 per GEMM x4, W8A8's quantize x3 */
#define CHAIN_OPTS 1280   /* the chain's distinct option strings, NUL-separated */
#define CHAIN_ENV_MAX 64  /* a longer KPORT_GPU_KERNELS is not cached */

enum { ST_GATE, ST_ALIGN, ST_G1, ST_G2, ST_S1, ST_S2, ST_COMBINE, ST_QX, ST_QH, ST_QS };

typedef struct chain_sig {
    int64_t t, hidden, e, inter2, k, inter_s2;
    int64_t ld[9]; /* x, out, logits, w13 (2), w2 (2), shared w13, shared w2 */
    int32_t dt, logits_dt, w13_dt, w2_dt;
    int32_t act_dt, shared_dt; /* activation_dtype (W8A8's chain), the shared expert's weights */
    int32_t gen2_missing; /* bit g: GEMM g (g1, g2, s1, s2) cannot run generation 2 */
    int32_t sm90_missing; /* bit g: nor the sm_90a tier (kp_gpu_gemm_sm90_missing) */
    int32_t sm90_off;     /* KPORT_DISABLE_TIER names sm90 */
    int32_t has_env;
    char env[CHAIN_ENV_MAX];
} chain_sig;

typedef struct chain_launch {
    const char *source, *kernel; /* the launchers' string literals */
    uint64_t groups[3];
    uint32_t local[3], local_bytes;
    uint16_t opts_at; /* in chain_plan.opts */
    uint8_t stage;
    uint8_t scratch;    /* 1: acquire the split-K partials before it, 2: release them after it */
    uint8_t sm90;       /* a GEMM on the sm_90a tier (kp_gpu_gemm_sm90_args) */
    int32_t a, b, c;    /* GEMM: small_max, ksplit, kslice (sm90: BN); align: chunk, nchunks */
} chain_launch;

typedef struct chain_plan {
    chain_sig sig;
    int32_t n, opts_len;
    chain_launch l[CHAIN_MAX];
    char opts[CHAIN_OPTS];
} chain_plan;

_Static_assert(sizeof(chain_plan) > KP_GPU_PLAN_VALUE_MAX && sizeof(chain_plan) <= KP_GPU_PLAN_BIG_VALUE_MAX,
               "a chain plan goes to the large-plan table");

static int sig_make(kp_gpu_ctx *c, const kp_moe_forward_params *p, const kp_gpu_moe_fwd *f, chain_sig *s) {
    memset(s, 0, sizeof *s);
    const char *env = getenv("KPORT_GPU_KERNELS");
    if (env) {
        size_t n = strlen(env);
        if (n >= CHAIN_ENV_MAX) return 0;
        memcpy(s->env, env, n);
        s->has_env = 1;
    }
    s->t = f->t, s->hidden = f->hidden, s->e = f->e, s->inter2 = p->w13.shape[1], s->k = f->k;
    s->inter_s2 = 2 * f->inter_s;
    const kp_tensor *two_d[] = {&p->x, &p->out, &p->router_logits};
    for (int i = 0; i < 3; i++) s->ld[i] = two_d[i]->ndim >= 2 ? two_d[i]->strides[0] : 1;
    s->ld[3] = p->w13.strides[0], s->ld[4] = p->w13.strides[1];
    s->ld[5] = p->w2.strides[0], s->ld[6] = p->w2.strides[1];
    if (f->inter_s > 0) s->ld[7] = p->shared_w13.strides[0], s->ld[8] = p->shared_w2.strides[0];
    s->dt = (int32_t)f->dt, s->logits_dt = (int32_t)p->router_logits.dtype;
    s->w13_dt = (int32_t)p->w13.dtype, s->w2_dt = (int32_t)p->w2.dtype;
    s->act_dt = f->w8a8 ? (int32_t)KP_FP8_E4M3 : 0;
    s->shared_dt = f->inter_s > 0 ? (int32_t)p->shared_w13.dtype : 0;
    const kp_gpu_moe_gemm *g[4] = {&f->g1, &f->g2, &f->s1, &f->s2};
    for (int i = 0; i < (f->inter_s > 0 ? 4 : 2); i++) {
        if (g[i]->a_fp8 ? kp_gpu_gemm8_missing(c, g[i]) != NULL : kp_gpu_gemm2_missing(c, g[i]) != NULL)
            s->gen2_missing |= 1 << i;
        if (kp_gpu_gemm_sm90_missing(c, g[i]) != NULL) s->sm90_missing |= 1 << i;
    }
    s->sm90_off = kp_gpu_tier_disabled("sm90");
    return 1;
}

static uint64_t sig_hash(const chain_sig *s) {
    const unsigned char *b = (const unsigned char *)s;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < sizeof *s; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    return h;
}
_Static_assert(sizeof(chain_sig) % 8 == 0, "sig_hash reads words");

/* ---- recording the fresh chain ---- */

typedef struct chain_rec {
    const kp_gpu_target *real;
    chain_plan *plan;
    int bad;     /* a launch the replay cannot rebuild */
    int quants;  /* W8A8's quantize launches so far: x's, h's, then h_s's */
} chain_rec;

static _Thread_local chain_rec *recording;

static int is_gemm_source(const char *src) {
    return strcmp(src, KP_GPU_SRC_MOE_GEMM) == 0 || strcmp(src, KP_GPU_SRC_MOE_GEMM2) == 0;
}

static int gemm_nargs(const char *src) { return strcmp(src, KP_GPU_SRC_MOE_GEMM8) == 0 ? 13 : 12; }

static void record(chain_rec *r, const kp_gpu_launch *l) {
    chain_plan *p = r->plan;
    /* the parameter block is the last argument; the sm_90a GEMM's two tensor maps follow it */
    const int sm90 = strcmp(l->source, KP_GPU_SRC_MOE_GEMM_SM90) == 0;
    const int kx = l->nargs - 1 - (sm90 ? 2 : 0);
    if (r->bad || p->n >= CHAIN_MAX || l->overflow || kx < 0 || l->args[kx].kind != KP_GPU_ARG_KARGS) {
        r->bad = 1;
        return;
    }
    chain_launch *x = &p->l[p->n];
    memset(x, 0, sizeof *x);
    const void *ka = l->args[kx].v.kargs.data;
    const uint32_t kn = l->args[kx].v.kargs.size;
    if (strcmp(l->kernel, "kp_moe_gate") == 0 && kn == sizeof(kp_moe_gate_kargs) && l->nargs == 5) {
        x->stage = ST_GATE;
    } else if (strncmp(l->kernel, "kp_moe_align_", 13) == 0 && kn == sizeof(kp_moe_align_kargs) && l->nargs == 5) {
        kp_moe_align_kargs a;
        memcpy(&a, ka, sizeof a);
        x->stage = ST_ALIGN, x->a = a.chunk, x->b = a.nchunks;
    } else if (strcmp(l->kernel, "kp_moe_combine") == 0 && kn == sizeof(kp_moe_combine_kargs) && l->nargs == 5) {
        x->stage = ST_COMBINE;
    } else if (strcmp(l->kernel, "kp_quantize_fp8") == 0 && kn == sizeof(kp_quant_fp8_kargs) && l->nargs == 4 &&
               r->quants < 3) {
        x->stage = (uint8_t)(ST_QX + r->quants++);
    } else if ((is_gemm_source(l->source) || strcmp(l->source, KP_GPU_SRC_MOE_GEMM8) == 0) &&
               kn == sizeof(kp_moe_gemm_kargs) && l->nargs == gemm_nargs(l->source)) {
        kp_moe_gemm_kargs g;
        memcpy(&g, ka, sizeof g);
        if (g.mode == KP_MOE_GEMM_SWIGLU || g.mode == KP_MOE_GEMM_SWIGLU_FP8)
            x->stage = g.dense_rows > 0 ? ST_S1 : ST_G1;
        else if (g.mode == KP_MOE_GEMM_STORE && g.dense_rows == 0) x->stage = ST_G2;
        else if (g.mode == KP_MOE_GEMM_COMBINE && g.dense_rows > 0) x->stage = ST_S2;
        else r->bad = 1;
        x->a = g.small_max, x->b = g.ksplit, x->c = g.kslice;
        if (g.ksplit > 1) x->scratch = strstr(l->kernel, "_reduce") ? 2 : 1;
    } else if (sm90 && kn == sizeof(kp_moe_gemm_sm90_kargs) && l->nargs == 6 &&
               l->args[4].kind == KP_GPU_ARG_TENSOR_MAP && l->args[5].kind == KP_GPU_ARG_TENSOR_MAP) {
        kp_moe_gemm_sm90_kargs g;
        memcpy(&g, ka, sizeof g);
        if (g.mode == KP_MOE_GEMM_STORE && g.dense_rows == 0) x->stage = ST_G2; /* the only one it takes */
        else r->bad = 1;
        x->sm90 = 1, x->a = (int32_t)l->args[5].v.tmap.box[1]; /* BN: the rows of w's box */
    } else {
        r->bad = 1;
    }
    /* the option string, shared with an earlier launch's when equal */
    int at = -1;
    for (int o = 0; o < p->opts_len; o += (int)strlen(p->opts + o) + 1)
        if (strcmp(p->opts + o, l->options) == 0) {
            at = o;
            break;
        }
    if (at < 0) {
        size_t n = strlen(l->options) + 1;
        if ((size_t)p->opts_len + n > CHAIN_OPTS) {
            r->bad = 1;
            return;
        }
        at = p->opts_len;
        memcpy(p->opts + at, l->options, n);
        p->opts_len += (int32_t)n;
    }
    x->opts_at = (uint16_t)at;
    x->source = l->source, x->kernel = l->kernel;
    for (int d = 0; d < 3; d++) x->groups[d] = l->groups[d], x->local[d] = l->local[d];
    x->local_bytes = l->local_bytes;
    p->n++;
}

static kp_status recording_launch(kp_stream *s, const kp_gpu_launch *l) {
    chain_rec *r = recording;
    record(r, l);
    return r->real->launch(s, l);
}

/* ---- replaying a plan ---- */

static const kp_gpu_moe_gemm *gemm_of(const kp_gpu_moe_fwd *f, int stage) {
    return stage == ST_G1 ? &f->g1 : stage == ST_G2 ? &f->g2 : stage == ST_S1 ? &f->s1 : &f->s2;
}

static kp_status replay(kp_gpu_ctx *c, const kp_moe_forward_params *p, const kp_gpu_moe_fwd *f, const chain_plan *pl) {
    const kp_gpu_view logits = kp_gpu_view_of(&p->router_logits), bias = kp_gpu_view_of(&p->bias);
    void *scratch[2] = {NULL, NULL};
    kp_status st = KP_OK;
    for (int i = 0; i < pl->n; i++) {
        const chain_launch *r = &pl->l[i];
        union {
            kp_moe_gate_kargs gate;
            kp_moe_align_kargs align;
            kp_moe_combine_kargs combine;
            kp_moe_gemm_kargs gemm;
            kp_quant_fp8_kargs quant;
            kp_moe_gemm_sm90_kargs sm90;
        } ka;
        kp_gpu_launch l;
        kp_gpu_launch_init(&l, r->source, pl->opts + r->opts_at, r->kernel);
        switch (r->stage) {
        case ST_GATE:
            ka.gate = kp_gpu_gate_kargs(logits, f->e, bias, &p->routing, f->ids, f->wts);
            kp_gpu_gate_args(&l, logits, bias, f->ids, f->wts, &ka.gate);
            break;
        case ST_ALIGN:
            ka.align = kp_gpu_align_kargs(f->ids, f->pairs, (int32_t)f->e, 1, f->sorted, f->pairs, f->offsets, f->pos,
                                          r->a, r->b);
            kp_gpu_align_args(&l, f->ids, f->sorted, f->pos, f->offsets, &ka.align);
            break;
        case ST_COMBINE:
            ka.combine = kp_gpu_combine_kargs(f->y, f->pairs, f->pos, f->wts, (int32_t)f->k, f->out, f->hidden);
            kp_gpu_combine_args(&l, f->y, f->pos, f->wts, f->out, &ka.combine);
            break;
        case ST_QX:
            ka.quant = kp_gpu_quant_fp8_kargs(f->x, f->xq, f->xs, f->ue8m0);
            kp_gpu_quant_fp8_args(&l, f->x, f->xq, f->xs, &ka.quant);
            break;
        case ST_QH:
            ka.quant = kp_gpu_quant_fp8_kargs(f->hf, f->h8, f->hs, f->ue8m0);
            kp_gpu_quant_fp8_args(&l, f->hf, f->h8, f->hs, &ka.quant);
            break;
        case ST_QS:
            ka.quant = kp_gpu_quant_fp8_kargs(f->hf_s, f->hs8, f->hss, f->ue8m0);
            kp_gpu_quant_fp8_args(&l, f->hf_s, f->hs8, f->hss, &ka.quant);
            break;
        default: {
            const kp_gpu_moe_gemm *g = gemm_of(f, r->stage);
            if (r->sm90) { /* the maps and the kargs from this call's views, as the fresh plan builds them */
                kp_gpu_gemm_sm90_args(&l, g, r->a, &ka.sm90);
                break;
            }
            if (r->scratch == 1) {
                size_t bytes[2] = {(size_t)r->b * (size_t)g->m * (size_t)g->n * sizeof(float), 16};
                if ((st = kp_gpu_scratch_acquire(c, bytes, scratch)) != KP_OK)
                    return c->host->add_context(st, "grouped_gemm: split-K partials");
            }
            ka.gemm = kp_gpu_gemm_kargs(g, r->a);
            ka.gemm.ksplit = r->b, ka.gemm.kslice = r->c;
            kp_gpu_gemm_args(&l, g, &ka.gemm, r->b > 1 ? scratch[0] : NULL);
        }
        }
        for (int d = 0; d < 3; d++) l.groups[d] = r->groups[d], l.local[d] = r->local[d];
        l.local_bytes = r->local_bytes;
        st = kp_gpu_enqueue(c, &l);
        if (scratch[0] && (r->scratch == 2 || st != KP_OK)) {
            c->t->scratch_release(c->s, scratch);
            scratch[0] = scratch[1] = NULL;
        }
        if (st != KP_OK) {
            const char *what = r->sm90                                          ? "grouped_gemm (the sm_90a tier)"
                               : strcmp(r->source, KP_GPU_SRC_MOE_GEMM2) == 0 ? "grouped_gemm (generation 2)"
                               : strcmp(r->source, KP_GPU_SRC_MOE_GEMM8) == 0 ? "grouped_gemm (W8A8, generation 2)"
                               : strcmp(r->source, KP_GPU_SRC_QUANT_FP8) == 0 ? "quantize_fp8"
                                                                              : NULL;
            return what ? c->host->add_context(st, what) : st;
        }
    }
    return KP_OK;
}

kp_status kp_gpu_moe_chain_run(kp_gpu_ctx *c, const kp_moe_forward_params *p, const kp_gpu_moe_fwd *f) {
    chain_sig sig;
    if (!sig_make(c, p, f, &sig)) return kp_gpu_moe_forward_launches(c, p, f, 0);
    const kp_gpu_plan_key key = {{KP_GPU_PLAN_MOE_CHAIN, (uint64_t)f->t, (uint64_t)f->hidden | (uint64_t)f->e << 32,
                                  (uint64_t)f->k | (uint64_t)f->dt << 32, sig_hash(&sig)}};
    chain_plan plan; /* about 2.4 KiB */
    uint64_t gen;
    char none[1];
    if (kp_gpu_plan_lookup(c, &key, &plan, sizeof plan, none, sizeof none, &gen) &&
        memcmp(&plan.sig, &sig, sizeof sig) == 0)
        return replay(c, p, f, &plan);
    memset(&plan, 0, sizeof plan);
    plan.sig = sig;
    chain_rec rec = {.real = c->t, .plan = &plan};
    kp_gpu_target rt = *c->t;
    rt.launch = recording_launch;
    kp_gpu_ctx rc = *c;
    rc.t = &rt;
    chain_rec *outer = recording;
    recording = &rec;
    kp_status st = kp_gpu_moe_forward_launches(&rc, p, f, 0);
    recording = outer;
    if (st == KP_OK && !rec.bad) kp_gpu_plan_store(c, &key, gen, &plan, sizeof plan, "");
    return st;
}
