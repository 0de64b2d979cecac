/*
 * core/ep_device.c — expert parallelism on device buffers (issue 19, docs/ep-nccl.md):
 * dispatch and combine's return trip where the rows never touch the host.
 *
 * Taken when the transport has the device collectives (exchange + poll: NCCL, RCCL) and
 * the backend gives buffer addresses and event queries (cpu, cuda, hip), in both modes
 * (num_experts <= 4096, kp_moe_align's limit). The rows move only on the device:
 * kp_buffer_copy runs on the op's stream and the transport's exchanges on its native
 * stream. The host sees only integers:
 *
 *   dispatch  kp_moe_align over the global expert ids (stable sort of the (token, slot)
 *             pairs by expert: the send layout, grouped by destination rank and then
 *             local expert, as core/ep.c's host path sorts them) -> each destination
 *             gets the slice of expert_offsets over its experts (LE_d + 1 ints) -> one
 *             host sync reads expert_offsets, the received slices and sorted_ids ->
 *             the send rows are copied from x in runs -> the rows' exchange -> the
 *             receiver regroups source-major into expert-major with copies in runs.
 *             Capacity mode clamps the same counts: each destination gets the first
 *             capacity_per_rank of its pairs in (expert, token, slot) order, as the host
 *             path; then one more exchange tells every rank the drops into every other
 *             (dropped_all).
 *   combine   expert_out's rows back into the receive layout (copies in runs) -> the
 *             return exchange straight into the combine's row buffer; core/ep.c then
 *             sums them with kp_moe_combine as on the host path.
 *
 * Every exchange is followed by the transport's poll (ncclCommGetAsyncError and a
 * kp_event on the stream) up to the handle's timeout, so a missing peer is an error in
 * bounded time. The row copies move bytes only, so the results have the host path's
 * bits. The send rows are one GATHER launch where the backend has the ep_capacity slot
 * (cpu, opencl, cuda, hip), else one copy per run of rows adjacent in x. Capacity mode here
 * syncs as normal mode does, plus once for dropped_all; kp_ep_dispatch_async is its
 * variant with no host sync (core/ep_capacity.c).
 */
#include "internal.h"
#include "ep_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN_MAX_EXPERTS 4096 /* kp_moe_align's limit */

bool kp_ep_device_path_possible(const kp_ep_options *o, kp_device *d, const kp_ep_transport *tr) {
    return tr && tr->struct_size >= sizeof *tr && tr->exchange && tr->poll && d->iface->buffer_address &&
           d->iface->event_query && o->num_experts <= ALIGN_MAX_EXPERTS;
}

kp_status kp_ep_alloc_array(kp_device *d, size_t n, size_t size, kp_buffer **out) {
    size_t bytes;
    if (__builtin_mul_overflow(n ? n : 1, size, &bytes))
        return kp_set_error(KP_ERR_INVALID_SHAPE, "kp_ep_create: a device staging buffer is too large");
    return kp_buffer_alloc(d, bytes, out);
}

kp_status kp_ep_device_allocate(kp_ep *ep) {
    const size_t pairs = (size_t)ep->opt.max_tokens_per_rank * (size_t)ep->opt.topk; /* checked at create */
    const size_t E = (size_t)ep->opt.num_experts, W = (size_t)ep->world, LE = (size_t)ep->local_experts;
    kp_status st = kp_ep_alloc_array(ep->dev, pairs, 4, &ep->d_sorted);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, pairs, 4, &ep->d_tpos);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, E + 1, 4, &ep->d_aoff);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, W * (LE + 1), 4, &ep->d_roffs);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, pairs, ep->row_bytes, &ep->d_send);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, (size_t)ep->max_recv_rows, ep->row_bytes, &ep->d_recv);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, W + 1, sizeof(int64_t), &ep->d_drop);
    if (st == KP_OK && !ep->d_event) st = kp_event_create(ep->dev, &ep->d_event);
    return st == KP_OK ? KP_OK : kp_add_context(st, "kp_ep_create: device staging buffers");
}

void kp_ep_device_free(kp_ep *ep) {
    kp_buffer *b[] = {ep->d_sorted, ep->d_tpos, ep->d_aoff, ep->d_roffs, ep->d_send, ep->d_recv, ep->d_drop};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++)
        if (b[i]) kp_buffer_free(b[i]);
    if (ep->d_event) kp_event_destroy(ep->d_event);
}

/* ---- the exchange and its bounded wait --------------------------------------- */

typedef struct poll_ctx {
    kp_event *e;
} poll_ctx;

static int event_done(void *ctx) {
    kp_event *e = ((poll_ctx *)ctx)->e;
    int done = 0;
    return e->device->iface->event_query(e, &done) == KP_OK ? done : -1;
}

static kp_status address(const char *fn, const kp_buffer *b, size_t off, uintptr_t *out) {
    if (kp_buffer_is_address_space(b)) {
        *out = (uintptr_t)off;
        return KP_OK;
    }
    uintptr_t base = 0;
    kp_status st = b->device->iface->buffer_address(b, &base);
    if (st != KP_OK) return kp_add_context(st, "%s: the device address of a buffer", fn);
    *out = base + off;
    return KP_OK;
}

/* Waits, bounded by the timeout, for what the transport enqueued on s: an event on s,
 * then the transport's poll (the library's asynchronous error and the event). */
kp_status kp_ep_device_wait(kp_ep *ep, const char *fn, kp_stream *s) {
    char why[KP_REASON_MAX - 64] = "";
    kp_ep_tr_result r = KP_EP_TR_OK;
    if (kp_event_record(ep->d_event, s) != KP_OK) {
        r = KP_EP_TR_ERROR;
        snprintf(why, sizeof why, "recording the event that marks the exchange's end failed");
    }
    kp_note_host_sync();
    poll_ctx ctx = {ep->d_event};
    if (r == KP_EP_TR_OK) r = ep->tr->poll(ep->trs, event_done, &ctx, kp_ep_timeout(&ep->opt), why, sizeof why);
    return r == KP_EP_TR_OK ? KP_OK : kp_ep_transport_failed(ep, fn, r, why);
}

/* Per peer p: send rows [send_displ[p], + send_rows[p]) of send, receive recv_rows[p]
 * rows at recv_displ[p] of recv (rows of rb bytes); then (wait) waits, bounded, for it. */
kp_status kp_ep_device_exchange(kp_ep *ep, const char *fn, kp_stream *s, kp_buffer *send, size_t send_at,
                                const int32_t *send_rows, const int32_t *send_displ, kp_buffer *recv, size_t recv_at,
                                const int32_t *recv_rows, const int32_t *recv_displ, size_t rb, bool wait) {
    const size_t W = (size_t)ep->world;
    size_t *v = calloc(4 * W, sizeof *v);
    if (!v) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    for (size_t p = 0; p < W; p++) {
        v[p] = (size_t)send_displ[p] * rb;
        v[W + p] = (size_t)send_rows[p] * rb;
        v[2 * W + p] = (size_t)recv_displ[p] * rb;
        v[3 * W + p] = (size_t)recv_rows[p] * rb;
    }
    uintptr_t sa = 0, ra = 0;
    void *native = NULL;
    kp_status st = address(fn, send, send_at, &sa);
    if (st == KP_OK) st = address(fn, recv, recv_at, &ra);
    if (st == KP_OK) st = kp_stream_get_native(s, &native);
    if (st != KP_OK) {
        free(v);
        return st; /* nothing enqueued: the peers time out */
    }
    kp_ep_tr_xfer x = {.send = (const void *)sa, .recv = (void *)ra, .send_off = v, .send_bytes = v + W,
                       .recv_off = v + 2 * W, .recv_bytes = v + 3 * W};
    char why[KP_REASON_MAX - 64] = "";
    kp_ep_tr_result r = ep->tr->exchange(ep->trs, &x, native, why, sizeof why);
    free(v);
    if (r != KP_EP_TR_OK) return kp_ep_transport_failed(ep, fn, r, why);
    return wait ? kp_ep_device_wait(ep, fn, s) : KP_OK;
}

/* dst row map[i] <- src row i (dir 0), or dst row i <- src row map[i] (dir 1), for the
 * i with map[i] >= 0: one copy per run of rows adjacent on both sides. */
static kp_status copy_runs(kp_stream *s, kp_buffer *dst, size_t dst_at, const kp_buffer *src, size_t src_at,
                           const int64_t *map, int64_t n, size_t rb, int dir) {
    kp_status st = KP_OK;
    for (int64_t i = 0; st == KP_OK && i < n;) {
        if (map[i] < 0) {
            i++;
            continue;
        }
        int64_t len = 1;
        while (i + len < n && map[i + len] == map[i] + len) len++;
        const size_t a = (size_t)i * rb, b = (size_t)map[i] * rb;
        st = kp_buffer_copy(s, dst, dst_at + (dir ? a : b), src, src_at + (dir ? b : a), (size_t)len * rb);
        i += len;
    }
    return st;
}

/* The send layout's rows from x: row i <- x's row map[i] (map[i] < 0: untouched). With
 * the backend's ep_capacity slot one GATHER launch, its int32 index written into d_tpos
 * (kp_moe_align's token_pos, which nothing reads after the sort); else one copy per run
 * of rows adjacent in x. The same bytes either way. */
static kp_status send_rows(kp_ep *ep, kp_stream *s, const kp_ep_dispatch_params *p, const int64_t *map,
                           int64_t pairs) {
    const size_t rb = ep->row_bytes;
    if (!pairs || !kp_backend_has_slot(ep->dev->iface, ep_capacity))
        return copy_runs(s, ep->d_send, 0, p->x.buffer, p->x.offset, map, pairs, rb, 1);
    int32_t *idx = malloc((size_t)pairs * sizeof *idx);
    if (!idx) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_ep_dispatch: out of host memory");
    for (int64_t i = 0; i < pairs; i++) idx[i] = (int32_t)map[i]; /* a token row, or -1: < T <= INT32_MAX */
    kp_status st = kp_buffer_write(s, ep->d_tpos, 0, idx, (size_t)pairs * sizeof *idx);
    free(idx);
    if (st != KP_OK) return st;
    kp_ep_capacity_args a = {.step = KP_EP_CAPACITY_GATHER, .rows = pairs, .src_rows = p->x.shape[0],
                             .row_bytes = rb, .in = {p->x.buffer, ep->d_tpos}, .in_off = {p->x.offset, 0},
                             .out = {ep->d_send}};
    return ep->dev->iface->ep_capacity(s, &a);
}

/* all = every rank's `bytes` of mine, in rank order, through b ((world + 1) rows of
 * bytes: mine goes to row world, and from there to every rank's row of this one). */
static kp_status allgather_through(kp_ep *ep, const char *fn, kp_stream *s, kp_buffer *b, const void *mine,
                                   size_t bytes, void *all) {
    const size_t W = (size_t)ep->world;
    int32_t *cnt = calloc(4 * W, sizeof *cnt);
    if (!cnt) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    for (size_t d = 0; d < W; d++)
        cnt[d] = 1, cnt[W + d] = (int32_t)W, cnt[2 * W + d] = 1, cnt[3 * W + d] = (int32_t)d;
    kp_status st = kp_buffer_write(s, b, W * bytes, mine, bytes);
    if (st == KP_OK)
        st = kp_ep_device_exchange(ep, fn, s, b, 0, cnt, cnt + W, b, 0, cnt + 2 * W, cnt + 3 * W, bytes, true);
    if (st == KP_OK) st = kp_buffer_read(s, b, 0, all, W * bytes);
    free(cnt);
    return st;
}

/* kp_ep_create's agreement on the device path: NCCL on a GPU takes device memory only. */
kp_status kp_ep_device_allgather(kp_ep *ep, const void *mine, size_t bytes, void *all) {
    kp_buffer *b = NULL;
    kp_status st = ep->d_event ? KP_OK : kp_event_create(ep->dev, &ep->d_event);
    if (st == KP_OK) st = kp_ep_alloc_array(ep->dev, (size_t)ep->world + 1, bytes, &b);
    if (st == KP_OK) st = allgather_through(ep, "kp_ep_create", ep->dev->default_stream, b, mine, bytes, all);
    if (b) kp_buffer_free(b);
    return st;
}

/* ---- dispatch ----------------------------------------------------------------- */

typedef struct dev_work {
    int32_t *aoff, *roffs, *sorted, *offsets;
    int64_t *map;
} dev_work;

static void dev_work_free(dev_work *w) {
    free(w->aoff), free(w->roffs), free(w->sorted), free(w->offsets), free(w->map);
}

kp_status kp_ep_device_dispatch(kp_ep *ep, kp_stream *s, const kp_ep_dispatch_params *p, kp_ep_dispatch_result *r) {
    const char *fn = "kp_ep_dispatch";
    s = s ? s : ep->dev->default_stream;
    const int64_t T = p->x.shape[0];
    const int32_t k = (int32_t)p->topk_ids.shape[1], W = ep->world, E = ep->opt.num_experts, LE = ep->local_experts;
    const int64_t pairs = T * k;
    const size_t rb = ep->row_bytes;
    dev_work w = {0};
    w.aoff = calloc((size_t)E + 1, 4);
    w.roffs = calloc((size_t)W * ((size_t)LE + 1), 4);
    w.sorted = calloc((size_t)pairs + 1, 4);
    w.offsets = calloc((size_t)LE + 1, 4);
    w.map = calloc((size_t)pairs + 1, sizeof(int64_t));
    ep->send_pos = calloc((size_t)pairs + 1, sizeof(int32_t));
    ep->send_rows = calloc(4 * (size_t)W, sizeof(int32_t));
    ep->recv_to_out = calloc((size_t)ep->max_recv_rows + 1, sizeof(int64_t));
    if (!w.aoff || !w.roffs || !w.sorted || !w.offsets || !w.map || !ep->send_pos || !ep->send_rows ||
        !ep->recv_to_out) {
        dev_work_free(&w);
        return kp_set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    }
    ep->send_displ = ep->send_rows + W;
    ep->recv_from = ep->send_displ + W;
    ep->recv_displ = ep->recv_from + W;

    /* 1. sort the pairs by expert on the device; every destination gets its slice of
     * the expert offsets: [range_begin[d], range_begin[d + 1]] */
    kp_status st = KP_OK;
    if (pairs) {
        kp_moe_align_params ap = {.num_experts = E, .block_size = 1};
        const int64_t flat[1] = {pairs}, tk[2] = {T, k}, eo[1] = {(int64_t)E + 1};
        ap.topk_ids = p->topk_ids;
        st = kp_tensor_init(&ap.sorted_ids, ep->d_sorted, 0, KP_I32, 1, flat, NULL);
        if (st == KP_OK) st = kp_tensor_init(&ap.expert_offsets, ep->d_aoff, 0, KP_I32, 1, eo, NULL);
        if (st == KP_OK) st = kp_tensor_init(&ap.token_pos, ep->d_tpos, 0, KP_I32, 2, tk, NULL);
        if (st == KP_OK) st = kp_moe_align(s, &ap);
    } else {
        st = kp_buffer_write(s, ep->d_aoff, 0, w.aoff, ((size_t)E + 1) * 4); /* all zero */
    }
    if (st != KP_OK) { /* nothing sent: the other ranks time out */
        dev_work_free(&w);
        return kp_add_context(st, "%s: sorting the pairs by expert", fn);
    }
    for (int32_t d = 0; d < W; d++) {
        ep->send_displ[d] = ep->range_begin[d];
        ep->send_rows[d] = ep->range_begin[d + 1] - ep->range_begin[d] + 1;
        ep->recv_displ[d] = d * (LE + 1);
        ep->recv_from[d] = LE + 1;
    }
    st = kp_ep_device_exchange(ep, fn, s, ep->d_aoff, 0, ep->send_rows, ep->send_displ, ep->d_roffs, 0,
                               ep->recv_from, ep->recv_displ, 4, true);
    /* 2. the one host sync: the counts, and the sorted order for the copies */
    if (st == KP_OK) st = kp_buffer_read(s, ep->d_aoff, 0, w.aoff, ((size_t)E + 1) * 4);
    if (st == KP_OK) st = kp_buffer_read(s, ep->d_roffs, 0, w.roffs, (size_t)W * ((size_t)LE + 1) * 4);
    if (st == KP_OK && pairs) st = kp_buffer_read(s, ep->d_sorted, 0, w.sorted, (size_t)pairs * 4);
    /* capacity mode: each destination gets the first C of its pairs in sorted (expert,
     * token, slot) order, as the host path; the receiver clamps the same way */
    const int32_t cap = ep->opt.mode == KP_EP_MODE_CAPACITY ? ep->opt.capacity_per_rank : INT32_MAX;
    int64_t total = 0, dropped = 0, dropped_in = 0;
    for (int32_t d = 0; st == KP_OK && d < W; d++) {
        const int32_t *ro = w.roffs + (size_t)d * ((size_t)LE + 1);
        const int32_t n_out = w.aoff[ep->range_begin[d + 1]] - w.aoff[ep->range_begin[d]], n_in = ro[LE] - ro[0];
        ep->send_displ[d] = w.aoff[ep->range_begin[d]];
        ep->send_rows[d] = n_out < cap ? n_out : cap;
        ep->recv_from[d] = n_in < cap ? n_in : cap;
        ep->recv_displ[d] = (int32_t)total;
        total += ep->recv_from[d];
        dropped += n_out - ep->send_rows[d];
        dropped_in += n_in - ep->recv_from[d];
        bool bad = n_out < 0 || n_in < 0 || total > ep->max_recv_rows;
        for (int32_t le = 0; le < LE; le++) bad = bad || ro[le + 1] < ro[le];
        if (bad) {
            ep->broken = true; /* the peers wait for the rows */
            st = kp_set_error(KP_ERR_BACKEND, "%s: rank %d sent inconsistent counts", fn, (int)d);
        }
    }
    if (st == KP_OK && w.aoff[E] != pairs) {
        ep->broken = true;
        st = kp_set_error(KP_ERR_BACKEND, "%s: the device sort placed %d of %lld pairs (an expert id outside "
                          "[0, %d)?)", fn, (int)w.aoff[E], (long long)pairs, (int)E);
    }
    if (st != KP_OK) {
        dev_work_free(&w);
        return st;
    }
    /* 3. the send rows: row i of the send layout is x's row sorted[i] / k (capacity: the
     * pairs past it are neither copied nor sent, and combine counts them as zero) */
    for (int64_t i = 0; i < pairs; i++) ep->send_pos[i] = -1, w.map[i] = -1;
    for (int32_t d = 0; d < W; d++)
        for (int64_t i = ep->send_displ[d]; i < (int64_t)ep->send_displ[d] + ep->send_rows[d]; i++) {
            ep->send_pos[w.sorted[i]] = (int32_t)i;
            w.map[i] = w.sorted[i] / k;
        }
    ep->send_layout_rows = pairs;
    st = send_rows(ep, s, p, w.map, pairs);
    if (st == KP_OK)
        st = kp_ep_device_exchange(ep, fn, s, ep->d_send, 0, ep->send_rows, ep->send_displ, ep->d_recv, 0,
                                   ep->recv_from, ep->recv_displ, rb, true);
    if (st != KP_OK) {
        ep->broken = true;
        dev_work_free(&w);
        return st;
    }
    /* 4. regroup: local expert, then source rank, then the source's order */
    int64_t row = 0;
    for (int32_t le = 0; le < LE; le++) {
        w.offsets[le] = (int32_t)row;
        for (int32_t src = 0; src < W; src++) {
            const int32_t *ro = w.roffs + (size_t)src * ((size_t)LE + 1);
            const int32_t lo = ro[le] - ro[0] < cap ? ro[le] - ro[0] : cap;
            const int32_t hi = ro[le + 1] - ro[0] < cap ? ro[le + 1] - ro[0] : cap;
            for (int32_t i = lo; i < hi; i++, row++) ep->recv_to_out[ep->recv_displ[src] + i] = row;
        }
    }
    w.offsets[LE] = (int32_t)row;
    ep->recv_layout_rows = total;
    ep->recv_rows = row;
    st = copy_runs(s, p->recv_x.buffer, p->recv_x.offset, ep->d_recv, 0, ep->recv_to_out, total, rb, 0);
    if (st == KP_OK)
        st = kp_buffer_write(s, p->expert_offsets.buffer, p->expert_offsets.offset, w.offsets,
                             ((size_t)LE + 1) * sizeof(int32_t));
    if (st != KP_OK) {
        dev_work_free(&w);
        ep->broken = true; /* combine would leave the peers waiting */
        return kp_add_context(st, "%s: placing the received rows", fn);
    }
    /* 5. capacity mode: every rank learns the drops into every other (dropped_all) */
    int64_t dropped_all = 0;
    if (cap != INT32_MAX) {
        int64_t *all = calloc((size_t)W, sizeof *all);
        st = all ? allgather_through(ep, fn, s, ep->d_drop, &dropped_in, sizeof dropped_in, all)
                 : kp_set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
        for (int32_t d = 0; st == KP_OK && d < W; d++) dropped_all += all[d];
        free(all);
        if (st != KP_OK) {
            ep->broken = true;
            dev_work_free(&w);
            return st;
        }
    }
    dev_work_free(&w);
    ep->tokens = T;
    ep->k = k;
    ep->dispatched = true;
    return kp_ep_dispatch_result_set(ep, r, row, dropped, dropped_all);
}

/* ---- combine's return trip ---------------------------------------------------- */

kp_status kp_ep_device_combine_rows(kp_ep *ep, kp_stream *s, const kp_tensor *expert_out, kp_buffer *rows_buf,
                                    size_t at) {
    const char *fn = "kp_ep_combine";
    const size_t rb = ep->row_bytes;
    /* the receive layout again (source-major), then back to where each row came from */
    kp_status st = copy_runs(s, ep->d_recv, 0, expert_out->buffer, expert_out->offset, ep->recv_to_out,
                             ep->recv_layout_rows, rb, 1);
    if (st != KP_OK) return kp_add_context(st, "%s: gathering the expert outputs", fn);
    return kp_ep_device_exchange(ep, fn, s, ep->d_recv, 0, ep->recv_from, ep->recv_displ, rows_buf, at,
                                 ep->send_rows, ep->send_displ, rb, true);
}
