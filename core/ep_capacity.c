/*
 * core/ep_capacity.c — capacity mode with no host sync (kp_ep_dispatch_async, issue 19):
 * dispatch, and the combine that inverts it, as work enqueued on the op's stream only,
 * so that the whole layer can be captured in a graph and replayed.
 *
 * Every size is host-known: each rank sends every other exactly capacity_per_rank (C)
 * rows, padded, plus a header of header_ints (HW = max_local_experts + 2) int32. The
 * counts live in device buffers; the backend's ep_capacity slot (core/backend.h) plans
 * and gathers:
 *
 *   dispatch  kp_moe_align (the pairs sorted by global expert, as the other paths) ->
 *             PLAN_SEND: per destination d the first min(n_d, C) pairs in sorted order
 *             (the host path's drop rule), their x rows (send_idx), each pair's send
 *             row (send_pos, W*C when dropped: combine's zero row) and d's header
 *             (rows sent, this rank's drops, rows per d's local expert) -> GATHER x's
 *             rows into C-row blocks -> two exchanges of fixed sizes (the headers, the
 *             blocks) -> PLAN_RECV: expert_offsets straight into the caller's tensor,
 *             recv_map / grouped_src, dropped_all -> GATHER the rows into recv_x grouped
 *             by local expert, then source, then the source's order (the other paths'
 *             order), rows past them untouched -> optionally {dropped, dropped_all}
 *             copied to the caller's device tensor.
 *   combine   GATHER expert_out's rows back into the blocks (recv_map) -> the return
 *             exchange into c_home ([W*C] rows + a zero row written at create) ->
 *             kp_moe_combine with token_pos = send_pos: the slot-order sum of every
 *             other path, so the same bits.
 *
 * No kp_buffer_read/write, stream or event wait: the exchanges are enqueued on the
 * stream's native stream and not polled. A failed or missing rank is found at the next
 * blocking point: kp_ep_wait (an event and the transport's poll, bounded by timeout_ms),
 * or the next blocking kp_ep_dispatch, which waits first. On the cpu backend the library
 * must complete a group inside ncclGroupEnd (a blocking communicator), since cpu ops run
 * inside their calls and cannot wait on the library's stream.
 */
#include "internal.h"
#include "ep_internal.h"

#include <stdlib.h>

bool kp_ep_async_supported(const kp_ep *ep, const char **why) {
    const char *w = NULL;
    if (ep->opt.mode != KP_EP_MODE_CAPACITY) w = "the handle is not in capacity mode";
    else if (!ep->device_path)
        w = "it needs the device path (an NCCL/RCCL communicator on a backend with device addresses)";
    else if (!kp_backend_has_slot(ep->dev->iface, ep_capacity))
        w = "this backend's plugin has no ep_capacity slot (it predates the capacity steps)";
    if (why) *why = w;
    return w == NULL;
}

static int32_t header_ints(const kp_ep *ep) { return ep->max_local_experts + 2; }

static size_t align256(size_t n) { return (n + 255) / 256 * 256; }

void kp_ep_fwd_consts_of(const kp_ep *ep, kp_ep_fwd_consts *c) {
    const int64_t M = ep->max_recv_rows, Tmax = ep->opt.max_tokens_per_rank, LE = ep->local_experts;
    c->ones_rows = M > Tmax ? M : Tmax; /* M <= INT32_MAX (create), LE <= KP_EP_FWD_MAX_LOCAL */
    c->tmax = Tmax;
    c->ones = 0;
    c->onehot = align256((size_t)c->ones_rows * 4);
    c->end_row = c->onehot + align256((size_t)(LE + 1) * (size_t)LE * 4);
    c->pos2 = c->end_row + 256;
    c->ones2 = c->pos2 + align256((size_t)Tmax * 8);
    c->bytes = c->ones2 + align256((size_t)Tmax * 8);
}

/* c_fwd (kp_moe_forward_ep_async): only for 1..KP_EP_FWD_MAX_LOCAL local experts. */
static kp_status fwd_consts_allocate(kp_ep *ep) {
    const int64_t LE = ep->local_experts;
    if (LE < 1 || LE > KP_EP_FWD_MAX_LOCAL) return KP_OK;
    kp_ep_fwd_consts c;
    kp_ep_fwd_consts_of(ep, &c);
    uint8_t *h = calloc(1, c.bytes);
    if (!h) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_ep_create: out of host memory");
    float *ones = (float *)(h + c.ones), *oh = (float *)(h + c.onehot), *ones2 = (float *)(h + c.ones2);
    int32_t *pos2 = (int32_t *)(h + c.pos2);
    for (int64_t i = 0; i < c.ones_rows; i++) ones[i] = 1.0f;
    for (int64_t e = 0; e <= LE; e++)
        for (int64_t n = 0; n < LE; n++) oh[e * LE + n] = n == (e < LE ? e : 0) ? 0.0f : -1e30f;
    *(int32_t *)(h + c.end_row) = (int32_t)ep->max_recv_rows;
    for (int64_t t = 0; t < c.tmax; t++)
        pos2[2 * t] = (int32_t)t, pos2[2 * t + 1] = (int32_t)(c.tmax + t), ones2[2 * t] = ones2[2 * t + 1] = 1.0f;
    kp_status st = kp_buffer_alloc(ep->dev, c.bytes, &ep->c_fwd);
    if (st == KP_OK) st = kp_buffer_write(NULL, ep->c_fwd, 0, h, c.bytes);
    free(h);
    return st;
}

kp_status kp_ep_async_allocate(kp_ep *ep) {
    const size_t W = (size_t)ep->world, C = (size_t)ep->opt.capacity_per_rank, HW = (size_t)header_ints(ep);
    const size_t pairs = (size_t)ep->opt.max_tokens_per_rank * (size_t)ep->opt.topk, rb = ep->row_bytes;
    const size_t WC = W * C; /* <= INT32_MAX: checked at create */
    kp_status st = kp_ep_alloc_array(ep->dev, W + 1, 4, &ep->c_range);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, WC, 4, &ep->c_sidx);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, pairs, 4, &ep->c_spos);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, 2 * W, HW * 4, &ep->c_hdr);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, WC, 4, &ep->c_rmap);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, WC, 4, &ep->c_gsrc);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, 2, 4, &ep->c_cnt);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, WC, rb, &ep->c_send);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, WC + 1, rb, &ep->c_home);
    /* written once here, never in the path: the expert ranges and combine's zero row */
    if (st == KP_OK) st = kp_buffer_write(NULL, ep->c_range, 0, ep->range_begin, (W + 1) * 4);
    void *zero = st == KP_OK ? calloc(1, rb) : NULL;
    if (st == KP_OK && !zero) st = kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_ep_create: out of host memory");
    if (st == KP_OK) st = kp_buffer_write(NULL, ep->c_home, WC * rb, zero, rb);
    free(zero);
    if (st == KP_OK) st = fwd_consts_allocate(ep);
    return st == KP_OK ? KP_OK : kp_add_context(st, "kp_ep_create: capacity-mode buffers");
}

void kp_ep_async_free(kp_ep *ep) {
    kp_buffer *b[] = {ep->c_range, ep->c_sidx, ep->c_spos, ep->c_hdr, ep->c_rmap,
                      ep->c_gsrc, ep->c_cnt, ep->c_send, ep->c_home, ep->c_fwd};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++)
        if (b[i]) kp_buffer_free(b[i]);
}

static kp_status step(kp_ep *ep, kp_stream *s, const kp_ep_capacity_args *a) {
    return ep->dev->iface->ep_capacity(s, a);
}

static kp_status gather(kp_ep *ep, kp_stream *s, kp_buffer *dst, size_t dst_at, const kp_buffer *src, size_t src_at,
                        int64_t src_rows, const kp_buffer *idx, int64_t rows) {
    kp_ep_capacity_args a = {.step = KP_EP_CAPACITY_GATHER, .rows = rows, .src_rows = src_rows,
                             .row_bytes = ep->row_bytes, .in = {src, idx}, .in_off = {src_at, 0},
                             .out = {dst}, .out_off = {dst_at}};
    return step(ep, s, &a);
}

/* The fixed-size exchange: to every peer, n units of unit bytes from send (peer-major),
 * into recv (source-major); enqueued only. */
static kp_status fixed_exchange(kp_ep *ep, const char *fn, kp_stream *s, kp_buffer *send, size_t send_at,
                                kp_buffer *recv, size_t recv_at, int32_t n, size_t unit) {
    const int32_t W = ep->world;
    int32_t *v = calloc(2 * (size_t)W, sizeof *v);
    if (!v) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    for (int32_t d = 0; d < W; d++) v[d] = n, v[W + d] = d * n;
    kp_status st = kp_ep_device_exchange(ep, fn, s, send, send_at, v, v + W, recv, recv_at, v, v + W, unit, false);
    free(v);
    return st;
}

kp_status kp_ep_async_dispatch(kp_ep *ep, kp_stream *s, const kp_ep_dispatch_params *p, const kp_tensor *dropped) {
    const char *fn = "kp_ep_dispatch_async";
    const int64_t T = p->x.shape[0];
    const int32_t k = (int32_t)p->topk_ids.shape[1], W = ep->world, C = ep->opt.capacity_per_rank;
    const int32_t HW = header_ints(ep);
    const int64_t pairs = T * k, WC = (int64_t)W * C;
    const size_t hdr_bytes = (size_t)W * (size_t)HW * 4;
    kp_status st = KP_OK;
    /* 1. the pairs sorted by expert (T = 0: PLAN_SEND reads no offsets) */
    if (pairs) {
        kp_moe_align_params ap = {.num_experts = ep->opt.num_experts, .block_size = 1, .topk_ids = p->topk_ids};
        const int64_t flat[1] = {pairs}, tk[2] = {T, k}, eo[1] = {(int64_t)ep->opt.num_experts + 1};
        st = kp_tensor_init(&ap.sorted_ids, ep->d_sorted, 0, KP_I32, 1, flat, NULL);
        if (st == KP_OK) st = kp_tensor_init(&ap.expert_offsets, ep->d_aoff, 0, KP_I32, 1, eo, NULL);
        if (st == KP_OK) st = kp_tensor_init(&ap.token_pos, ep->d_tpos, 0, KP_I32, 2, tk, NULL);
        if (st == KP_OK) st = kp_moe_align(s, &ap);
    }
    /* 2. the send plan and headers; 3. x's rows into the C-row blocks */
    kp_ep_capacity_args a = {.step = KP_EP_CAPACITY_PLAN_SEND, .world = W, .capacity = C, .topk = k,
                             .header_ints = HW, .pairs = pairs, .in = {ep->d_sorted, ep->d_aoff, ep->c_range},
                             .out = {ep->c_sidx, ep->c_spos, ep->c_hdr, ep->c_cnt}};
    if (st == KP_OK) st = step(ep, s, &a);
    if (st == KP_OK && T) st = gather(ep, s, ep->c_send, 0, p->x.buffer, p->x.offset, T, ep->c_sidx, WC);
    if (st != KP_OK) return kp_add_context(st, "%s: planning the send blocks", fn); /* the peers time out */
    /* 4. the headers, then the blocks: fixed sizes, not waited for */
    st = fixed_exchange(ep, fn, s, ep->c_hdr, 0, ep->c_hdr, hdr_bytes, 1, (size_t)HW * 4);
    if (st == KP_OK) st = fixed_exchange(ep, fn, s, ep->c_send, 0, ep->d_recv, 0, C, ep->row_bytes);
    ep->async_pending = true;
    /* 5. the receive plan: expert_offsets into the caller's tensor; 6. recv_x */
    kp_ep_capacity_args r = {.step = KP_EP_CAPACITY_PLAN_RECV, .world = W, .capacity = C, .header_ints = HW,
                             .local_experts = ep->local_experts, .in = {ep->c_hdr}, .in_off = {hdr_bytes},
                             .out = {p->expert_offsets.buffer, ep->c_rmap, ep->c_gsrc, ep->c_cnt},
                             .out_off = {p->expert_offsets.offset, 0, 0, 4}};
    if (st == KP_OK) st = step(ep, s, &r);
    if (st == KP_OK)
        st = gather(ep, s, p->recv_x.buffer, p->recv_x.offset, ep->d_recv, 0, WC, ep->c_gsrc, WC);
    if (st == KP_OK && dropped) st = kp_buffer_copy(s, dropped->buffer, dropped->offset, ep->c_cnt, 0, 8);
    if (st != KP_OK) {
        ep->broken = true; /* combine would leave the peers waiting */
        return kp_add_context(st, "%s: placing the received rows", fn);
    }
    ep->tokens = T;
    ep->k = k;
    ep->recv_rows = ep->max_recv_rows; /* on the device only: expert_out holds them all */
    ep->send_layout_rows = WC;
    ep->dispatched = true;
    ep->async_dispatched = true;
    return KP_OK;
}

kp_status kp_ep_async_combine(kp_ep *ep, kp_stream *s, const kp_tensor *expert_out, const kp_tensor *topk_weights,
                              const kp_tensor *out) {
    const char *fn = "kp_ep_combine";
    const int32_t W = ep->world, C = ep->opt.capacity_per_rank;
    const int64_t WC = (int64_t)W * C, T = ep->tokens;
    kp_status st = gather(ep, s, ep->c_send, 0, expert_out->buffer, expert_out->offset, expert_out->shape[0],
                          ep->c_rmap, WC);
    if (st != KP_OK) return kp_add_context(st, "%s: gathering the expert outputs", fn); /* the peers time out */
    st = fixed_exchange(ep, fn, s, ep->c_send, 0, ep->c_home, 0, C, ep->row_bytes);
    if (st != KP_OK) return st;
    ep->async_pending = true;
    if (!T) return KP_OK;
    kp_moe_combine_params cp = {.topk_weights = *topk_weights, .out = *out};
    const int64_t rows_shape[2] = {WC + 1, ep->opt.hidden}, pos_shape[2] = {T, ep->k};
    st = kp_tensor_init(&cp.expert_out, ep->c_home, 0, ep->opt.dtype, 2, rows_shape, NULL);
    if (st == KP_OK) st = kp_tensor_init(&cp.token_pos, ep->c_spos, 0, KP_I32, 2, pos_shape, NULL);
    if (st == KP_OK) st = kp_moe_combine(s, &cp);
    return st == KP_OK ? KP_OK : kp_add_context(st, "%s", fn);
}
