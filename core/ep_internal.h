/*
 * core/ep_internal.h — what core/ep_forward.c (kp_moe_forward_ep) uses of the EP
 * handle in core/ep.c.
 */
#ifndef KPORT_CORE_EP_INTERNAL_H
#define KPORT_CORE_EP_INTERNAL_H

#include "internal.h"

#include "ep_transport.h"

#include <stdbool.h>

struct kp_ep {
    kp_device *dev;
    kp_ep_options opt;
    const kp_ep_transport *tr;
    void *dl;
    kp_ep_tr_state *trs;
    int32_t rank, world, local_experts, max_local_experts;
    int32_t *range_begin; /* [world + 1]: rank r holds experts [range_begin[r], range_begin[r+1]) */
    size_t row_bytes;
    int64_t max_recv_rows;
    bool broken; /* a collective failed or timed out: only destroy is allowed */
    kp_buffer *rows_dev; /* combine: the rows that came home, then one zero row */
    kp_buffer *pos_dev;  /* combine: token_pos of kp_moe_combine */
    int64_t rows_dev_cap;
    /* the last dispatch, for combine */
    bool dispatched;
    int64_t tokens;
    int32_t k;
    int32_t *send_pos;     /* [tokens * k]: each pair's row in the send layout; -1 dropped */
    int64_t send_layout_rows;
    int32_t *send_rows, *send_displ, *recv_from, *recv_displ; /* [world] each, in rows */
    int64_t recv_layout_rows; /* rows of the receive layout (capacity: padded) */
    int64_t recv_rows;        /* rows actually received */
    int64_t *recv_to_out;     /* [recv_layout_rows]: the output row of each; -1 padding */
    /* the device path (core/ep_device.c): on when the transport has exchange/poll and
     * the backend gives buffer addresses and event queries */
    bool device_path;
    kp_buffer *d_sorted, *d_aoff, *d_tpos, *d_roffs, *d_send, *d_recv, *d_drop;
    kp_event *d_event;
    /* capacity mode with no host sync (core/ep_capacity.c): on when the device path is
     * and the backend has the ep_capacity slot */
    bool async_possible;
    bool async_dispatched; /* the last dispatch was kp_ep_dispatch_async */
    bool async_pending;    /* exchanges enqueued and not yet waited for (kp_ep_wait) */
    kp_buffer *c_range, *c_sidx, *c_spos, *c_hdr, *c_rmap, *c_gsrc, *c_cnt, *c_send, *c_home;
    kp_buffer *c_fwd; /* kp_moe_forward_ep_async's constants (kp_ep_fwd_consts); NULL: none */
};

/* Where kp_ep_combine_into stages the combine in the caller's buffer: rows_offset holds
 * extra_rows rows first (the shared expert's output, written by the caller), then the
 * rows that come home and one zero row (kp_ep_max_send_rows() + 1 at most); pos_offset
 * int32 [T, k + 1]; weights_offset f32 [T, k + 1]. With extra_rows = T the combine sums
 * the k slots and then 1.0 * extra row t, in that order. */
typedef struct kp_ep_combine_scratch {
    kp_buffer *buffer;
    size_t rows_offset, pos_offset, weights_offset;
    int64_t extra_rows; /* 0 or T */
} kp_ep_combine_scratch;

/* kp_ep_combine with its tensors given one by one; sc NULL: the handle's own staging. */
kp_status kp_ep_combine_into(kp_ep *ep, kp_stream *s, const kp_tensor *expert_out, const kp_tensor *topk_weights,
                             const kp_tensor *out, const kp_ep_combine_scratch *sc);
kp_device *kp_ep_device(const kp_ep *ep);
const kp_ep_options *kp_ep_options_of(const kp_ep *ep);
bool kp_ep_is_broken(const kp_ep *ep);
void kp_ep_mark_broken(kp_ep *ep);
/* The most rows one dispatch sends: max_tokens_per_rank * topk, or world * capacity. */
int64_t kp_ep_max_send_rows(const kp_ep *ep);

/* core/ep_device.c: the device path (kport.h "Expert parallelism", docs/ep-nccl.md). */
bool kp_ep_device_path_possible(const kp_ep_options *o, kp_device *d, const kp_ep_transport *tr);
/* n elements of size bytes on d, the product checked (KP_ERR_INVALID_SHAPE: too large). */
kp_status kp_ep_alloc_array(kp_device *d, size_t n, size_t size, kp_buffer **out);
kp_status kp_ep_device_allocate(kp_ep *ep);
/* all = every rank's `bytes` of mine, in rank order, through device memory. */
kp_status kp_ep_device_allgather(kp_ep *ep, const void *mine, size_t bytes, void *all);
void kp_ep_device_free(kp_ep *ep);
/* Dispatch with the arguments checked and the handle's dispatch state freed. */
kp_status kp_ep_device_dispatch(kp_ep *ep, kp_stream *s, const kp_ep_dispatch_params *p, kp_ep_dispatch_result *r);
/* Combine's return trip: expert_out's rows, back in the send layout, at rows_buf + at. */
kp_status kp_ep_device_combine_rows(kp_ep *ep, kp_stream *s, const kp_tensor *expert_out, kp_buffer *rows_buf,
                                    size_t at);
/* Fills r; KP_ERR_OUT_OF_BOUNDS, saying so, when capacity mode dropped pairs anywhere. */
kp_status kp_ep_dispatch_result_set(const kp_ep *ep, kp_ep_dispatch_result *r, int64_t recv_rows, int64_t dropped,
                                    int64_t dropped_all);
/* The device exchange (core/ep_device.c): per peer p, send_rows[p] rows from send_displ[p],
 * recv_rows[p] rows into recv_displ[p] (rows of rb bytes), enqueued on s's native stream;
 * wait: then kp_ep_device_wait. kp_ep_device_wait: an event on s and the transport's
 * poll, bounded by timeout_ms (one host sync). */
kp_status kp_ep_device_exchange(kp_ep *ep, const char *fn, kp_stream *s, kp_buffer *send, size_t send_at,
                                const int32_t *send_rows, const int32_t *send_displ, kp_buffer *recv, size_t recv_at,
                                const int32_t *recv_rows, const int32_t *recv_displ, size_t rb, bool wait);
kp_status kp_ep_device_wait(kp_ep *ep, const char *fn, kp_stream *s);

/* core/ep_capacity.c: capacity mode with no host sync (kp_ep_dispatch_async). */
bool kp_ep_async_supported(const kp_ep *ep, const char **why);
kp_status kp_ep_async_allocate(kp_ep *ep);
void kp_ep_async_free(kp_ep *ep);
/* Arguments checked, dispatch state freed; dropped: NULL or int32 [2], checked. */
kp_status kp_ep_async_dispatch(kp_ep *ep, kp_stream *s, const kp_ep_dispatch_params *p, const kp_tensor *dropped);
kp_status kp_ep_async_combine(kp_ep *ep, kp_stream *s, const kp_tensor *expert_out, const kp_tensor *topk_weights,
                              const kp_tensor *out);

/* kp_moe_forward_ep_async's constants in c_fwd (written once at create, read only):
 * ones f32 [max(max_recv_rows, max_tokens_per_rank)]; onehot f32 [LE + 1, LE, 1]: the
 * one-hot router logits as a K = 1 grouped GEMM's weights (expert e: 0 at column e,
 * -1e30 elsewhere; "expert" LE, the rows past the received ones: column 0); end_row
 * int32 max_recv_rows (that last range's end); pos2 int32 [Tmax, 2] {t, Tmax + t} and
 * ones2 f32 [Tmax, 2]: the routed sum plus the shared row, as one combine. */
#define KP_EP_FWD_MAX_LOCAL 512 /* kp_moe_gate's most experts */
typedef struct kp_ep_fwd_consts {
    size_t ones, onehot, end_row, pos2, ones2, bytes;
    int64_t ones_rows, tmax;
} kp_ep_fwd_consts;
void kp_ep_fwd_consts_of(const kp_ep *ep, kp_ep_fwd_consts *c);

kp_status kp_ep_transport_failed(kp_ep *ep, const char *fn, kp_ep_tr_result r, const char *why);
int32_t kp_ep_timeout(const kp_ep_options *o);

#endif /* KPORT_CORE_EP_INTERNAL_H */
