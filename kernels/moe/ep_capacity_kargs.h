/*
 * kernels/moe/ep_capacity_kargs.h - the by-value parameter block of the EP capacity
 * steps (ep_capacity.cl; the ep_capacity backend slot, core/backend.h), shared by
 * backends/gpu/ops/gpu_ep_capacity.c, which fills it, and the kernels. One block for the
 * three kernels; see kp_kargs.h for the layout rule.
 */
#ifndef KP_EP_CAPACITY_KARGS_H
#define KP_EP_CAPACITY_KARGS_H

#include "kp_kargs.h"

/* Offsets in elements of the buffer's type: int32 for the plan buffers; for GATHER's
 * src and dst, units of `vec` bytes (16, 4 or 1: what row_bytes and both offsets allow).
 *  kp_ep_plan_send   in0 sorted, in1 offsets, in2 range; out0 send_idx, out1 send_pos,
 *                    out2 header, out3 dropped
 *  kp_ep_plan_recv   in0 headers; out0 expert_offsets, out1 recv_map, out2 grouped_src,
 *                    out3 dropped_all
 *  kp_ep_gather      in0 src, in1 idx; out0 dst */
typedef struct kp_ep_capacity_kargs {
    kp_karg_i64 in0_off, in1_off, in2_off;
    kp_karg_i64 out0_off, out1_off, out2_off, out3_off;
    kp_karg_i64 pairs, rows, src_rows;
    kp_karg_i64 row_units; /* GATHER: row_bytes / vec */
    kp_karg_i32 world, capacity, topk, header_ints, local_experts;
    kp_karg_i32 vec;
} kp_ep_capacity_kargs;
KP_KARGS_OFFSET(kp_ep_capacity_kargs, world, 88);
KP_KARGS_OFFSET(kp_ep_capacity_kargs, vec, 108);
KP_KARGS_SIZE(kp_ep_capacity_kargs, 112);

#endif /* KP_EP_CAPACITY_KARGS_H */
