/*
 * core/ep_forward.c — kp_moe_forward_ep: the expert-parallel MoE layer in one call
 * (kport.h, "Expert parallelism").
 *
 *   1. gate: kp_moe_gate on the local tokens over all experts   -> topk_ids, topk_weights
 *   2. the shared expert, if any, on the local tokens            -> T rows in x's dtype
 *   3. kp_ep_dispatch                                            -> recv_x, expert_offsets
 *   4. the local experts on the received rows                    -> y [recv_rows, hidden]
 *   5. kp_ep_combine's exchange, then one kp_moe_combine of the k slots (+ the shared row)
 *
 * Steps 2 and 4 are kp_moe_forward itself, so the GEMMs, the fused SwiGLU and the
 * roundings are the ones the single-rank layer uses: step 4 routes each received row to
 * its own local expert with weight exactly 1 (softmax over logits 0 at that expert and
 * -1e30 elsewhere, top-1, renormalised: 1/1), so its output is the expert's row, rounded
 * once to x's dtype as in kp_moe_forward. Step 2 is a one-expert kp_moe_forward of the
 * shared weights (weight 1 likewise). Step 5 sums the slots in order in f32, then adds
 * 1.0 * the shared row: kp_moe_forward adds the shared expert's f32 value there (the
 * shared row's one rounding to x's dtype is the only extra step). The GEMMs' f32
 * summation order may still differ from one rank's, as each expert gets other row
 * counts (kport.h, tests/ep/test_ep_forward.c).
 *
 * Workspace, each region aligned to KP_MOE_WORKSPACE_ALIGN from the aligned start:
 * topk_ids, topk_weights [T*k]; recv_x [M, hidden]; expert_offsets [LE+1]; one-hot
 * logits f32 [M, LE]; y [M, hidden]; combine rows [T + S + 1, hidden] (the shared rows,
 * the rows that come home, a zero row); combine token_pos, weights [T*(k+1)]; shared
 * logits f32 [T]; the inner kp_moe_forward workspace (the larger of steps 2 and 4).
 * M = the handle's max_recv_rows, S = the most rows one dispatch sends, LE = local experts.
 */
#include "internal.h"
#include "ep_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OFF_LOGIT (-1e30f) /* exp(OFF_LOGIT - 0) is 0 in f32: the one-hot softmax is exactly 1 */

typedef struct fwd_layout {
    size_t ids, wts, recv, offsets, logits, y, rows, pos, cwts, shared_logits, inner, end;
    size_t inner_bytes;
} fwd_layout;

typedef struct fwd_shape {
    int64_t t, k, hidden, le, inter, inter_s, m, s;
    size_t act;
} fwd_shape;

static const kp_moe_routing one_hot = {.topk = 1, .n_group = 1, .topk_group = 1,
                                       .scoring = KP_MOE_SCORING_SOFTMAX, .renormalize = 1, .route_scale = 1.0f};

/* *at = the next region of count * elem bytes; false on overflow. */
static bool region(size_t *at, size_t *out, int64_t count, size_t elem) {
    size_t n;
    if (count < 0 || __builtin_mul_overflow((size_t)count, elem, &n) ||
        __builtin_add_overflow(n, (size_t)KP_MOE_WORKSPACE_ALIGN - 1, &n))
        return false;
    n -= n % KP_MOE_WORKSPACE_ALIGN;
    *out = *at;
    return !__builtin_add_overflow(*at, n, at);
}

/* The inner kp_moe_forward's workspace for rows rows of `experts` experts of inter. */
static bool inner_bytes(const kp_moe_forward_ep_params *p, int64_t rows, int64_t experts, int64_t inter,
                        size_t *bytes) {
    kp_moe_forward_params f;
    memset(&f, 0, sizeof f);
    f.x.dtype = p->x.dtype;
    f.x.shape[0] = rows;
    f.x.shape[1] = p->x.shape[1];
    f.w13.shape[0] = experts;
    f.w13.shape[1] = 2 * inter;
    f.routing = one_hot;
    kp_status st = kp_moe_forward_workspace_bytes(&f, bytes);
    return st == KP_OK;
}

static kp_status make_layout(const fwd_shape *sh, const kp_moe_forward_ep_params *p, fwd_layout *l) {
    size_t at = 0, in_c = 0, in_s = 0;
    int64_t rows, pk, logits;
    bool ok = !__builtin_add_overflow(sh->t, sh->s + 1, &rows) && rows <= INT32_MAX &&
              !__builtin_mul_overflow(sh->t, sh->k + 1, &pk) && !__builtin_mul_overflow(sh->m, sh->le, &logits);
    ok = ok && region(&at, &l->ids, sh->t * sh->k, 4) && region(&at, &l->wts, sh->t * sh->k, 4) &&
         region(&at, &l->recv, sh->m, (size_t)sh->hidden * sh->act) && region(&at, &l->offsets, sh->le + 1, 4) &&
         region(&at, &l->logits, logits, 4) && region(&at, &l->y, sh->m, (size_t)sh->hidden * sh->act) &&
         region(&at, &l->rows, rows, (size_t)sh->hidden * sh->act) && region(&at, &l->pos, pk, 4) &&
         region(&at, &l->cwts, pk, 4) && region(&at, &l->shared_logits, sh->t, 4);
    ok = ok && inner_bytes(p, sh->m, sh->le, sh->inter, &in_c) &&
         (!sh->inter_s || inner_bytes(p, sh->t, 1, sh->inter_s, &in_s));
    l->inner_bytes = in_c > in_s ? in_c : in_s;
    ok = ok && region(&at, &l->inner, (int64_t)l->inner_bytes, 1);
    if (!ok)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "kp_moe_forward_ep: the workspace for T = %lld, topk = %lld, hidden = %lld, %lld local "
                            "experts of inter %lld and %lld received rows is too large to address",
                            (long long)sh->t, (long long)sh->k, (long long)sh->hidden, (long long)sh->le,
                            (long long)sh->inter, (long long)sh->m);
    l->end = at;
    return KP_OK;
}

static bool contiguous2(const kp_tensor *t) {
    return t->ndim == 2 && (t->shape[0] <= 1 || t->strides[0] == t->shape[1]) &&
           (t->shape[1] <= 1 || t->strides[1] == 1);
}

/* Everything that can be checked without the workspace; fills sh. */
static kp_status check_shapes(kp_ep *ep, const kp_moe_forward_ep_params *p, fwd_shape *sh) {
    const char *fn = "kp_moe_forward_ep";
    const kp_ep_options *o = kp_ep_options_of(ep);
    kp_device *d = kp_ep_device(ep);
    kp_ep_info info;
    kp_ep_get_info(ep, &info);
    if (kp_ep_is_broken(ep))
        return kp_set_error(KP_ERR_BACKEND, "%s: an earlier exchange failed or timed out; destroy the handle", fn);
    if (info.local_experts < 1)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: this rank holds no experts (expert_begin == expert_end); kp_moe_forward_ep needs "
                            "at least one per rank", fn);
    if (p->x.ndim != 2 || p->x.dtype != o->dtype || p->x.shape[1] != o->hidden || p->x.shape[0] < 0 ||
        p->x.shape[0] > o->max_tokens_per_rank)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "%s: x must be %s [T, %d] with T <= max_tokens_per_rank %d (the handle's), got %s ndim %d",
                            fn, kp_dtype_name(o->dtype), (int)o->hidden, (int)o->max_tokens_per_rank,
                            kp_dtype_name(p->x.dtype), (int)p->x.ndim);
    kp_status st = kp_validate_moe_routing(fn, &p->routing, o->num_experts);
    if (st != KP_OK) return st;
    if (p->routing.topk > o->topk)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: routing.topk %d exceeds the handle's topk %d", fn,
                            (int)p->routing.topk, (int)o->topk);
    if (p->router_logits.ndim != 2 || p->router_logits.shape[1] != o->num_experts)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: router_logits must be [T, num_experts = %d]", fn,
                            (int)o->num_experts);
    if (p->w13.ndim != 3 || p->w13.shape[0] != info.local_experts || p->w2.ndim != 3 ||
        p->w2.shape[0] != info.local_experts)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "%s: w13 and w2 must hold this rank's %d experts [%d, %d) in their first dimension", fn,
                            (int)info.local_experts, (int)o->expert_begin, (int)o->expert_end);
    if (!contiguous2(&p->x) || !contiguous2(&p->out))
        return kp_set_error(KP_ERR_INVALID_LAYOUT, "%s: %s must be contiguous", fn,
                            contiguous2(&p->x) ? "out" : "x");
    /* the local layer: kp_moe_forward's rules on x, out and the weights */
    kp_moe_forward_params f = {.x = p->x, .router_logits = p->router_logits, .w13 = p->w13,
                               .w13_scale = p->w13_scale, .w2 = p->w2, .w2_scale = p->w2_scale,
                               .shared_w13 = p->shared_w13, .shared_w2 = p->shared_w2, .out = p->out,
                               .routing = one_hot};
    f.router_logits.shape[1] = info.local_experts; /* checked above; a narrower view of the same rows */
    st = kp_validate_moe_forward_shapes(d, &f);
    if (st != KP_OK) return kp_add_context(st, "%s", fn);
    const kp_tensor *all[] = {&p->x, &p->router_logits, &p->bias, &p->w13, &p->w13_scale, &p->w2,
                              &p->w2_scale, &p->shared_w13, &p->shared_w2, &p->out};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i]->buffer && kp_buffer_is_address_space(all[i]->buffer))
            return kp_set_error(KP_ERR_UNSUPPORTED,
                                "%s: an address tensor (kp_device_memory) was passed; expert parallelism stages "
                                "its tensors through the host: wrap the memory with kp_buffer_wrap", fn);
    sh->t = p->x.shape[0];
    sh->k = p->routing.topk;
    sh->hidden = o->hidden;
    sh->le = info.local_experts;
    sh->inter = p->w13.shape[1] / 2;
    sh->inter_s = p->shared_w13.buffer ? p->shared_w13.shape[0] / 2 : 0;
    sh->m = info.max_recv_rows;
    sh->s = kp_ep_max_send_rows(ep);
    sh->act = kp_dtype_size(o->dtype);
    return KP_OK;
}

static kp_status adopt(const char *fn, const kp_moe_forward_ep_params *p, size_t size, kp_moe_forward_ep_params *buf,
                       const kp_moe_forward_ep_params **out) {
    const void *a;
    /* the first version of the struct is this one: 0 (the plain function) reads it */
    kp_status st = kp_abi_adopt(fn, "params", p, size, sizeof *buf, sizeof *buf, buf, &a);
    *out = a;
    return st;
}

/* kp_moe_forward_ep_async's workspace (file comment): topk_ids, topk_weights [T*k];
 * recv_x [M, hidden]; expert_offsets int32 [LE + 2] (the last: M, the padding rows'
 * range); one-hot logits f32 [M, LE]; y [M, hidden]; with a shared expert rows2
 * [2 * Tmax, hidden] (the routed sums, then the shared rows); the inner kp_moe_forward
 * workspace (the larger of the experts on M rows and the shared expert on T). */
typedef struct async_layout {
    size_t ids, wts, recv, offsets, logits, y, rows2, inner, end;
} async_layout;

static bool async_route(const kp_ep *ep, const char **why) {
    if (!kp_ep_async_supported(ep, why)) return false;
    if (!ep->c_fwd && why)
        *why = ep->local_experts > KP_EP_FWD_MAX_LOCAL ? "this rank holds more than 512 experts (kp_moe_gate's most)"
                                                        : "its constants were not allocated";
    return ep->c_fwd != NULL;
}

static kp_status make_async_layout(kp_ep *ep, const fwd_shape *sh, const kp_moe_forward_ep_params *p,
                                   async_layout *l) {
    const int64_t tmax = kp_ep_options_of(ep)->max_tokens_per_rank;
    const size_t rb = (size_t)sh->hidden * sh->act;
    size_t at = 0, in_c = 0, in_s = 0;
    int64_t logits;
    bool ok = !__builtin_mul_overflow(sh->m, sh->le, &logits);
    ok = ok && region(&at, &l->ids, sh->t * sh->k, 4) && region(&at, &l->wts, sh->t * sh->k, 4) &&
         region(&at, &l->recv, sh->m, rb) && region(&at, &l->offsets, sh->le + 2, 4) &&
         region(&at, &l->logits, logits, 4) && region(&at, &l->y, sh->m, rb) &&
         region(&at, &l->rows2, sh->inter_s ? 2 * tmax : 0, rb);
    ok = ok && inner_bytes(p, sh->m, sh->le, sh->inter, &in_c) &&
         (!sh->inter_s || inner_bytes(p, sh->t, 1, sh->inter_s, &in_s));
    ok = ok && region(&at, &l->inner, (int64_t)(in_c > in_s ? in_c : in_s), 1);
    if (!ok)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "kp_moe_forward_ep_async: the workspace for %lld received rows of hidden %lld and %lld "
                            "local experts is too large to address", (long long)sh->m, (long long)sh->hidden,
                            (long long)sh->le);
    l->end = at;
    return KP_OK;
}

kp_status kp_moe_forward_ep_workspace_size_sized(kp_ep *ep, const kp_moe_forward_ep_params *p, size_t size,
                                                 size_t *bytes) {
    const char *fn = "kp_moe_forward_ep_workspace_size";
    if (!ep || !p || !bytes)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !ep ? "ep" : !p ? "p" : "bytes");
    kp_moe_forward_ep_params buf;
    kp_status st = adopt(fn, p, size, &buf, &p);
    fwd_shape sh;
    fwd_layout l;
    if (st == KP_OK) st = check_shapes(ep, p, &sh);
    if (st == KP_OK) st = make_layout(&sh, p, &l);
    size_t end = l.end;
    if (st == KP_OK && async_route(ep, NULL)) { /* kp_moe_forward_ep_async's layout too */
        async_layout al;
        st = make_async_layout(ep, &sh, p, &al);
        if (st == KP_OK && al.end > end) end = al.end;
    }
    if (st == KP_OK && __builtin_add_overflow(end, (size_t)KP_MOE_WORKSPACE_ALIGN - 1, bytes))
        st = kp_set_error(KP_ERR_INVALID_SHAPE, "%s: the workspace is too large to address", fn);
    return st;
}

kp_status(kp_moe_forward_ep_workspace_size)(kp_ep *ep, const kp_moe_forward_ep_params *p, size_t *bytes) {
    return kp_moe_forward_ep_workspace_size_sized(ep, p, 0, bytes);
}

static kp_status check_workspace(const char *fn, kp_ep *ep, const kp_moe_forward_ep_params *p, size_t end,
                                 size_t start) {
    const kp_buffer *ws = p->workspace;
    const size_t need = end + (start - p->workspace_offset);
    if (!ws)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: workspace is NULL; allocate kp_moe_forward_ep_workspace_size bytes", fn);
    if (kp_buffer_device(ws) != kp_ep_device(ep))
        return kp_set_error(KP_ERR_DEVICE_MISMATCH, "%s: workspace is not on the EP handle's device", fn);
    if (kp_buffer_is_address_space(ws))
        return kp_set_error(KP_ERR_UNSUPPORTED, "%s: workspace is kp_device_memory; pass a buffer", fn);
    if (p->workspace_offset > kp_buffer_size(ws) || kp_buffer_size(ws) - p->workspace_offset < need)
        return kp_set_error(KP_ERR_OUT_OF_BOUNDS, "%s: workspace has %zu bytes after offset %zu; %zu are needed", fn,
                            p->workspace_offset <= kp_buffer_size(ws) ? kp_buffer_size(ws) - p->workspace_offset : 0,
                            p->workspace_offset, need);
    const kp_tensor *all[] = {&p->x, &p->router_logits, &p->bias, &p->w13, &p->w13_scale, &p->w2,
                              &p->w2_scale, &p->shared_w13, &p->shared_w2, &p->out};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        size_t lo, hi;
        if (all[i]->buffer != ws) continue;
        kp_tensor_byte_range(all[i], &lo, &hi);
        if (lo < p->workspace_offset + need && p->workspace_offset < hi)
            return kp_set_error(KP_ERR_ALIASING, "%s: the workspace overlaps a tensor argument", fn);
    }
    return KP_OK;
}

static kp_status view(kp_tensor *t, kp_buffer *b, size_t off, kp_dtype dt, int64_t rows, int64_t cols) {
    const int64_t shape[2] = {rows, cols};
    return kp_tensor_init(t, b, off, dt, 2, shape, NULL);
}

/* A [rows, cols] weight matrix as a one-expert [1, rows, cols] tensor. */
static kp_tensor as_one_expert(const kp_tensor *w) {
    kp_tensor t = *w;
    t.ndim = 3;
    t.shape[2] = w->shape[1], t.shape[1] = w->shape[0], t.shape[0] = 1;
    t.strides[2] = w->strides[1], t.strides[1] = w->strides[0];
    t.strides[0] = w->shape[0] * w->strides[0];
    return t;
}

/* Step 4: each received row through its own expert with weight 1. */
static kp_status local_experts(kp_stream *s, const kp_moe_forward_ep_params *p, const fwd_shape *sh,
                               const fwd_layout *l, size_t at, int64_t rows) {
    kp_buffer *ws = p->workspace;
    int32_t *off = malloc(((size_t)sh->le + 1) * sizeof *off);
    float *logits = malloc((size_t)rows * (size_t)sh->le * sizeof *logits); /* rows * le <= M * le: checked */
    kp_status st = off && logits ? KP_OK
                                 : kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_moe_forward_ep: out of host memory");
    if (st == KP_OK) st = kp_buffer_read(s, ws, at + l->offsets, off, ((size_t)sh->le + 1) * sizeof *off);
    if (st == KP_OK) {
        for (int64_t i = 0; i < rows * sh->le; i++) logits[i] = OFF_LOGIT;
        for (int64_t e = 0; e < sh->le; e++)
            for (int64_t r = off[e]; r < off[e + 1] && r < rows; r++) logits[r * sh->le + e] = 0.0f;
        st = kp_buffer_write(s, ws, at + l->logits, logits, (size_t)(rows * sh->le) * sizeof *logits);
    }
    free(off);
    free(logits);
    kp_moe_forward_params f = {.w13 = p->w13, .w13_scale = p->w13_scale, .w2 = p->w2, .w2_scale = p->w2_scale,
                               .workspace = ws, .workspace_offset = at + l->inner, .routing = one_hot};
    if (st == KP_OK) st = view(&f.x, ws, at + l->recv, p->x.dtype, rows, sh->hidden);
    if (st == KP_OK) st = view(&f.router_logits, ws, at + l->logits, KP_F32, rows, sh->le);
    if (st == KP_OK) st = view(&f.out, ws, at + l->y, p->x.dtype, rows, sh->hidden);
    if (st == KP_OK) st = kp_moe_forward(s, &f);
    return st;
}

/* Step 2: the shared expert as a one-expert kp_moe_forward into the combine rows. */
static kp_status shared_expert(kp_stream *s, const kp_moe_forward_ep_params *p, const fwd_shape *sh,
                               const fwd_layout *l, size_t at) {
    kp_buffer *ws = p->workspace;
    float *zeros = calloc((size_t)sh->t, sizeof *zeros);
    kp_status st = zeros ? kp_buffer_write(s, ws, at + l->shared_logits, zeros, (size_t)sh->t * sizeof *zeros)
                         : kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_moe_forward_ep: out of host memory");
    free(zeros);
    kp_moe_forward_params f = {.x = p->x, .w13 = as_one_expert(&p->shared_w13), .w2 = as_one_expert(&p->shared_w2),
                               .workspace = ws, .workspace_offset = at + l->inner, .routing = one_hot};
    if (st == KP_OK) st = view(&f.router_logits, ws, at + l->shared_logits, KP_F32, sh->t, 1);
    if (st == KP_OK) st = view(&f.out, ws, at + l->rows, p->x.dtype, sh->t, sh->hidden);
    if (st == KP_OK) st = kp_moe_forward(s, &f);
    return st;
}

kp_status kp_moe_forward_ep_sized(kp_ep *ep, kp_stream *s, const kp_moe_forward_ep_params *p, size_t size,
                                  kp_ep_dispatch_result *r) {
    const char *fn = "kp_moe_forward_ep";
    if (!ep || !s || !p)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !ep ? "ep" : !s ? "s" : "p");
    if (s->device != kp_ep_device(ep))
        return kp_set_error(KP_ERR_DEVICE_MISMATCH, "%s: the stream is not on the EP handle's device", fn);
    kp_moe_forward_ep_params buf;
    kp_status st = adopt(fn, p, size, &buf, &p);
    fwd_shape sh;
    fwd_layout l;
    if (st == KP_OK) st = check_shapes(ep, p, &sh);
    if (st == KP_OK) st = make_layout(&sh, p, &l);
    const size_t at = p->workspace_offset + (KP_MOE_WORKSPACE_ALIGN - p->workspace_offset % KP_MOE_WORKSPACE_ALIGN) %
                                                KP_MOE_WORKSPACE_ALIGN;
    if (st == KP_OK) st = check_workspace(fn, ep, p, l.end, at);
    kp_buffer *ws = p->workspace;
    kp_moe_gate_params gp = {.logits = p->router_logits, .bias = p->bias, .routing = p->routing};
    if (st == KP_OK) st = view(&gp.topk_ids, ws, at + l.ids, KP_I32, sh.t, sh.k);
    if (st == KP_OK) st = view(&gp.topk_weights, ws, at + l.wts, KP_F32, sh.t, sh.k);
    if (st == KP_OK) st = kp_validate_moe_gate(kp_ep_device(ep), &gp);
    if (st != KP_OK) return st; /* nothing written, nothing exchanged */

    /* steps 1 and 2: local; a failure leaves the peers to time out in the exchange */
    if (sh.t) st = kp_moe_gate(s, &gp);
    if (st == KP_OK && sh.t && sh.inter_s) st = shared_expert(s, p, &sh, &l, at);
    if (st != KP_OK) return kp_add_context(st, "%s", fn);

    /* step 3 */
    kp_ep_dispatch_params dp = {.x = p->x, .topk_ids = gp.topk_ids};
    kp_ep_dispatch_result res = {0};
    const int64_t off_shape[1] = {sh.le + 1};
    st = view(&dp.recv_x, ws, at + l.recv, p->x.dtype, sh.m, sh.hidden);
    if (st == KP_OK) st = kp_tensor_init(&dp.expert_offsets, ws, at + l.offsets, KP_I32, 1, off_shape, NULL);
    if (st == KP_OK) st = kp_ep_dispatch(ep, s, &dp, &res);
    const bool overflow = st == KP_ERR_OUT_OF_BOUNDS; /* the exchange completed without the dropped pairs */
    if (st != KP_OK && !overflow) return st;
    char overflow_msg[KP_REASON_MAX] = "";
    if (overflow) snprintf(overflow_msg, sizeof overflow_msg, "%s", kp_last_error());

    /* steps 4 and 5 */
    st = res.recv_rows ? local_experts(s, p, &sh, &l, at, res.recv_rows) : KP_OK;
    if (st != KP_OK) {
        kp_ep_mark_broken(ep); /* the peers wait in the combine's exchange: they time out */
        return kp_add_context(st, "%s: the local experts", fn);
    }
    kp_tensor y;
    kp_ep_combine_scratch sc = {.buffer = ws, .rows_offset = at + l.rows, .pos_offset = at + l.pos,
                                .weights_offset = at + l.cwts, .extra_rows = sh.inter_s ? sh.t : 0};
    st = view(&y, ws, at + l.y, p->x.dtype, sh.m, sh.hidden);
    if (st == KP_OK) st = kp_ep_combine_into(ep, s, &y, &gp.topk_weights, &p->out, &sc);
    if (st != KP_OK) return kp_add_context(st, "%s", fn);
    if (r) *r = res;
    if (overflow) return kp_set_error(KP_ERR_OUT_OF_BOUNDS, "%s: %s", fn, overflow_msg);
    return KP_OK;
}

kp_status(kp_moe_forward_ep)(kp_ep *ep, kp_stream *s, const kp_moe_forward_ep_params *p, kp_ep_dispatch_result *r) {
    return kp_moe_forward_ep_sized(ep, s, p, 0, r);
}

/* ---- kp_moe_forward_ep_async: capacity mode with no host sync ------------------ */

/* A view of the handle's constants (c_fwd). */
static kp_status cview(kp_tensor *t, const kp_ep *ep, size_t off, kp_dtype dt, int ndim, const int64_t *shape) {
    return kp_tensor_init(t, ep->c_fwd, off, dt, ndim, shape, NULL);
}

/* dropped: NULL, or int32 [2] on the handle's device, inside its buffer. */
static kp_status check_dropped(const char *fn, const kp_ep *ep, const kp_tensor *d) {
    if (!d) return KP_OK;
    size_t lo, hi;
    if (!d->buffer || d->ndim != 1 || d->shape[0] != 2 || (d->strides[0] != 1 && d->shape[0] > 1))
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: dropped must be a contiguous int32 [2] buffer tensor", fn);
    if (d->dtype != KP_I32)
        return kp_set_error(KP_ERR_INVALID_DTYPE, "%s: dropped must be int32, not %s", fn, kp_dtype_name(d->dtype));
    if (kp_buffer_is_address_space(d->buffer))
        return kp_set_error(KP_ERR_UNSUPPORTED, "%s: dropped is an address tensor; pass a buffer tensor", fn);
    if (kp_buffer_device(d->buffer) != ep->dev)
        return kp_set_error(KP_ERR_DEVICE_MISMATCH, "%s: dropped is not on the EP handle's device", fn);
    kp_tensor_byte_range(d, &lo, &hi);
    if (hi > kp_buffer_size(d->buffer))
        return kp_set_error(KP_ERR_OUT_OF_BOUNDS, "%s: dropped runs past the end of its buffer", fn);
    return KP_OK;
}

/* Everything the call will run, built and dry-run (kp_op_supported) before the first
 * step, so that an unsupported shape is found before anything is exchanged. */
typedef struct async_plan {
    kp_moe_gate_params gate;
    kp_moe_forward_params shared, experts;
    kp_ep_dispatch_params dispatch;
    kp_grouped_gemm_params onehot;
    kp_tensor offsets2, y, routed; /* offsets [LE + 2]; y [M, hidden]; routed [T, hidden] */
    kp_moe_combine_params with_shared;
} async_plan;

static kp_status plan_async(kp_ep *ep, const kp_moe_forward_ep_params *p, const fwd_shape *sh,
                            const async_layout *l, size_t at, async_plan *q) {
    kp_buffer *ws = p->workspace;
    kp_ep_fwd_consts c;
    kp_ep_fwd_consts_of(ep, &c);
    const kp_dtype dt = p->x.dtype;
    const int64_t LE = sh->le, M = sh->m, T = sh->t;
    memset(q, 0, sizeof *q);
    q->gate = (kp_moe_gate_params){.logits = p->router_logits, .bias = p->bias, .routing = p->routing};
    kp_status st = view(&q->gate.topk_ids, ws, at + l->ids, KP_I32, T, sh->k);
    if (st == KP_OK) st = view(&q->gate.topk_weights, ws, at + l->wts, KP_F32, T, sh->k);
    if (st == KP_OK) st = kp_validate_moe_gate(ep->dev, &q->gate);
    /* the shared expert: one expert, logits 1.0 (softmax of one: weight 1), into rows2's second half */
    if (st == KP_OK && sh->inter_s) {
        q->shared = (kp_moe_forward_params){.x = p->x, .w13 = as_one_expert(&p->shared_w13),
                                            .w2 = as_one_expert(&p->shared_w2), .workspace = ws,
                                            .workspace_offset = at + l->inner, .routing = one_hot};
        st = cview(&q->shared.router_logits, ep, c.ones, KP_F32, 2, (const int64_t[]){T, 1});
        if (st == KP_OK) st = view(&q->shared.out, ws, at + l->rows2 + (size_t)c.tmax * sh->hidden * sh->act, dt,
                                   T, sh->hidden);
        if (st == KP_OK) st = view(&q->routed, ws, at + l->rows2, dt, T, sh->hidden);
        if (st == KP_OK && T) st = kp_op_supported(ep->dev, KP_OP_MOE_FORWARD, &q->shared);
        q->with_shared.out = p->out;
        if (st == KP_OK) st = view(&q->with_shared.expert_out, ws, at + l->rows2, dt, 2 * c.tmax, sh->hidden);
        if (st == KP_OK) st = cview(&q->with_shared.token_pos, ep, c.pos2, KP_I32, 2, (const int64_t[]){T, 2});
        if (st == KP_OK) st = cview(&q->with_shared.topk_weights, ep, c.ones2, KP_F32, 2, (const int64_t[]){T, 2});
        if (st == KP_OK && T) st = kp_op_supported(ep->dev, KP_OP_MOE_COMBINE, &q->with_shared);
    } else {
        q->routed = p->out;
    }
    /* dispatch into recv_x and expert_offsets [LE + 1] (offsets2 adds M) */
    q->dispatch = (kp_ep_dispatch_params){.x = p->x, .topk_ids = q->gate.topk_ids};
    if (st == KP_OK) st = view(&q->dispatch.recv_x, ws, at + l->recv, dt, M, sh->hidden);
    if (st == KP_OK)
        st = kp_tensor_init(&q->dispatch.expert_offsets, ws, at + l->offsets, KP_I32, 1, (const int64_t[]){LE + 1},
                            NULL);
    if (st == KP_OK)
        st = kp_tensor_init(&q->offsets2, ws, at + l->offsets, KP_I32, 1, (const int64_t[]){LE + 2}, NULL);
    /* the one-hot logits: ones [M, 1] · onehot[e]ᵀ over each expert's rows, LE + 1 "experts" */
    if (st == KP_OK) st = cview(&q->onehot.a, ep, c.ones, KP_F32, 2, (const int64_t[]){M, 1});
    if (st == KP_OK) st = cview(&q->onehot.w, ep, c.onehot, KP_F32, 3, (const int64_t[]){LE + 1, LE, 1});
    q->onehot.expert_offsets = q->offsets2;
    if (st == KP_OK) st = view(&q->onehot.out, ws, at + l->logits, KP_F32, M, LE);
    if (st == KP_OK) st = kp_op_supported(ep->dev, KP_OP_GROUPED_GEMM, &q->onehot);
    /* the local experts on all M rows (the padding rows go to local expert 0, unused) */
    q->experts = (kp_moe_forward_params){.w13 = p->w13, .w13_scale = p->w13_scale, .w2 = p->w2,
                                         .w2_scale = p->w2_scale, .workspace = ws,
                                         .workspace_offset = at + l->inner, .routing = one_hot};
    q->experts.x = q->dispatch.recv_x;
    q->experts.router_logits = q->onehot.out;
    if (st == KP_OK) st = view(&q->experts.out, ws, at + l->y, dt, M, sh->hidden);
    if (st == KP_OK) st = kp_op_supported(ep->dev, KP_OP_MOE_FORWARD, &q->experts);
    q->y = q->experts.out;
    return st;
}

kp_status kp_moe_forward_ep_async_sized(kp_ep *ep, kp_stream *s, const kp_moe_forward_ep_params *p, size_t size,
                                        const kp_tensor *dropped) {
    const char *fn = "kp_moe_forward_ep_async", *why = NULL;
    if (!ep || !s || !p)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is NULL%s", fn, !ep ? "ep" : !s ? "s" : "p",
                            !s ? " (everything runs on the stream)" : "");
    if (s->device != kp_ep_device(ep))
        return kp_set_error(KP_ERR_DEVICE_MISMATCH, "%s: the stream is not on the EP handle's device", fn);
    kp_moe_forward_ep_params buf;
    kp_status st = adopt(fn, p, size, &buf, &p);
    if (st == KP_OK && !async_route(ep, &why))
        st = kp_set_error(KP_ERR_UNSUPPORTED, "%s: %s (kp_moe_forward_ep takes every handle)", fn, why);
    fwd_shape sh;
    async_layout l;
    if (st == KP_OK) st = check_shapes(ep, p, &sh);
    if (st == KP_OK) st = check_dropped(fn, ep, dropped);
    if (st == KP_OK) st = make_async_layout(ep, &sh, p, &l);
    const size_t at = p->workspace_offset + (KP_MOE_WORKSPACE_ALIGN - p->workspace_offset % KP_MOE_WORKSPACE_ALIGN) %
                                                KP_MOE_WORKSPACE_ALIGN;
    if (st == KP_OK) st = check_workspace(fn, ep, p, l.end, at);
    if (st == KP_OK && dropped && dropped->buffer == p->workspace) {
        size_t lo, hi;
        kp_tensor_byte_range(dropped, &lo, &hi);
        if (lo < at + l.end && at < hi)
            st = kp_set_error(KP_ERR_ALIASING, "%s: dropped overlaps the workspace", fn);
    }
    async_plan q;
    if (st == KP_OK) st = plan_async(ep, p, &sh, &l, at, &q);
    if (st != KP_OK) return kp_add_context(st, "%s", fn); /* nothing written, nothing exchanged */

    kp_ep_fwd_consts c;
    kp_ep_fwd_consts_of(ep, &c);
    /* 1, 2: local; a failure leaves the peers to find it at their kp_ep_wait */
    if (sh.t) st = kp_moe_gate(s, &q.gate);
    if (st == KP_OK && sh.t && sh.inter_s) st = kp_moe_forward(s, &q.shared);
    if (st != KP_OK) return kp_add_context(st, "%s", fn);
    /* 3: enqueued only; 4: the one-hot logits from the device offsets; 5: the experts */
    st = kp_ep_dispatch_async(ep, s, &q.dispatch, dropped);
    if (st != KP_OK) return kp_add_context(st, "%s", fn);
    st = kp_buffer_copy(s, p->workspace, at + l.offsets + (size_t)(sh.le + 1) * 4, ep->c_fwd, c.end_row, 4);
    if (st == KP_OK) st = kp_grouped_gemm(s, &q.onehot);
    if (st == KP_OK) st = kp_moe_forward(s, &q.experts);
    /* 6: the return exchange and the slot-order sum; 7: + 1.0 * the shared row */
    if (st == KP_OK) st = kp_ep_combine_into(ep, s, &q.y, &q.gate.topk_weights, &q.routed, NULL);
    if (st == KP_OK && sh.t && sh.inter_s) st = kp_moe_combine(s, &q.with_shared);
    if (st != KP_OK) {
        kp_ep_mark_broken(ep); /* the peers' exchanges may wait on this rank: they time out */
        return kp_add_context(st, "%s: after the dispatch", fn);
    }
    return KP_OK;
}

kp_status(kp_moe_forward_ep_async)(kp_ep *ep, kp_stream *s, const kp_moe_forward_ep_params *p,
                                   const kp_tensor *dropped) {
    return kp_moe_forward_ep_async_sized(ep, s, p, 0, dropped);
}
