/*
 * core/ep_internal.h — what core/ep_forward.c (kp_moe_forward_ep) uses of the EP
 * handle in core/ep.c.
 */
#ifndef KPORT_CORE_EP_INTERNAL_H
#define KPORT_CORE_EP_INTERNAL_H

#include "internal.h"

#include <stdbool.h>

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

#endif /* KPORT_CORE_EP_INTERNAL_H */
