/*
 * backends/cpu/ops/cpu_ep_capacity.c — the ep_capacity slot (core/backend.h) on the CPU
 * backend: the integer planning of expert parallelism's capacity mode and its row
 * gathers, for kp_ep_dispatch_async / kp_ep_combine with no host sync
 * (core/ep_capacity.c). Like every CPU op it runs inside the call, under the stream's
 * lock. Every index read from a buffer is clamped: a corrupt one moves nothing.
 */
#include "cpu_gemm.h"

#include <string.h>

static const unsigned char *in_ptr(const kp_ep_capacity_args *a, int i) {
    return cpu_buffer_data(a->in[i]) + a->in_off[i];
}
static unsigned char *out_ptr(const kp_ep_capacity_args *a, int i) { return cpu_buffer_data(a->out[i]) + a->out_off[i]; }

static int32_t clamp32(int64_t v, int64_t lo, int64_t hi) { return (int32_t)(v < lo ? lo : v > hi ? hi : v); }

static void plan_send(const kp_ep_capacity_args *a) {
    const int32_t *sorted = (const int32_t *)in_ptr(a, 0), *aoff = (const int32_t *)in_ptr(a, 1),
                  *range = (const int32_t *)in_ptr(a, 2);
    int32_t *send_idx = (int32_t *)out_ptr(a, 0), *send_pos = (int32_t *)out_ptr(a, 1),
            *hdr = (int32_t *)out_ptr(a, 2);
    const int32_t W = a->world, C = a->capacity, HW = a->header_ints, k = a->topk;
    const int64_t pairs = a->pairs, drop_row = (int64_t)W * C;
    int64_t dropped = 0;
    for (int64_t i = 0; i < pairs; i++) send_pos[i] = (int32_t)drop_row; /* every pair lies in one range */
    for (int32_t d = 0; d < W; d++) {
        const int32_t b = pairs ? clamp32(aoff[range[d]], 0, pairs) : 0;
        const int32_t end = pairs ? clamp32(aoff[range[d + 1]], b, pairs) : 0;
        const int32_t n = end - b, sent = n < C ? n : C;
        int32_t *h = hdr + (size_t)d * (size_t)HW;
        for (int32_t i = 0; i < C; i++) {
            const int32_t pair = i < sent ? sorted[b + i] : -1;
            const bool ok = pair >= 0 && pair < pairs;
            send_idx[(size_t)d * (size_t)C + (size_t)i] = ok ? pair / k : -1;
            if (ok) send_pos[pair] = (int32_t)((int64_t)d * C + i);
        }
        memset(h, 0, (size_t)HW * sizeof *h);
        h[0] = sent;
        const int32_t le_n = range[d + 1] - range[d] < HW - 2 ? range[d + 1] - range[d] : HW - 2;
        for (int32_t le = 0; le < le_n && pairs; le++) {
            const int32_t lo = clamp32((int64_t)aoff[range[d] + le] - b, 0, sent);
            const int32_t hi = clamp32((int64_t)aoff[range[d] + le + 1] - b, lo, sent);
            h[2 + le] = hi - lo;
        }
        dropped += n - sent;
    }
    for (int32_t d = 0; d < W; d++) hdr[(size_t)d * (size_t)HW + 1] = (int32_t)dropped;
    *(int32_t *)out_ptr(a, 3) = clamp32(dropped, 0, INT32_MAX);
}

static void plan_recv(const kp_ep_capacity_args *a) {
    const int32_t *hdr = (const int32_t *)in_ptr(a, 0);
    int32_t *offsets = (int32_t *)out_ptr(a, 0), *recv_map = (int32_t *)out_ptr(a, 1),
            *grouped_src = (int32_t *)out_ptr(a, 2);
    const int32_t W = a->world, C = a->capacity, HW = a->header_ints, LE = a->local_experts;
    const size_t rows = (size_t)W * (size_t)C;
    for (size_t j = 0; j < rows; j++) recv_map[j] = -1, grouped_src[j] = -1;
    int64_t row = 0, dropped_all = 0;
    for (int32_t le = 0; le < LE; le++) {
        offsets[le] = (int32_t)row;
        for (int32_t src = 0; src < W && le < HW - 2; src++) {
            const int32_t *h = hdr + (size_t)src * (size_t)HW;
            const int32_t sent = clamp32(h[0], 0, C);
            int32_t first = 0;
            for (int32_t j = 0; j < le; j++) first = clamp32((int64_t)first + h[2 + j], first, sent); /* < 0: 0 */
            const int32_t n = clamp32((int64_t)first + h[2 + le], first, sent) - first;
            for (int32_t i = 0; i < n; i++, row++) {
                const int64_t at = (int64_t)src * C + first + i;
                recv_map[at] = (int32_t)row;
                grouped_src[row] = (int32_t)at;
            }
        }
    }
    offsets[LE] = (int32_t)row;
    for (int32_t src = 0; src < W; src++) dropped_all += clamp32(hdr[(size_t)src * (size_t)HW + 1], 0, INT32_MAX);
    *(int32_t *)out_ptr(a, 3) = clamp32(dropped_all, 0, INT32_MAX);
}

static void gather(const kp_ep_capacity_args *a) {
    const unsigned char *src = in_ptr(a, 0);
    const int32_t *idx = (const int32_t *)in_ptr(a, 1);
    unsigned char *dst = out_ptr(a, 0);
    for (int64_t i = 0; i < a->rows; i++)
        if (idx[i] >= 0 && idx[i] < a->src_rows)
            memcpy(dst + (size_t)i * a->row_bytes, src + (size_t)idx[i] * a->row_bytes, a->row_bytes);
}

kp_status cpu_ep_capacity(kp_stream *s, const kp_ep_capacity_args *a) {
    cpu_moe_stream_lock(s);
    switch (a->step) {
    case KP_EP_CAPACITY_PLAN_SEND: plan_send(a); break;
    case KP_EP_CAPACITY_PLAN_RECV: plan_recv(a); break;
    case KP_EP_CAPACITY_GATHER: gather(a); break;
    default:
        cpu_moe_stream_unlock(s);
        return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT, "cpu: ep_capacity step %d is unknown", (int)a->step);
    }
    cpu_moe_stream_unlock(s);
    return KP_OK;
}
