/*
 * kernels/moe/moe_common.h - what the MoE kernels share: a 64-bit index type (weights of
 * V3 size pass 2^31 elements), the OCP e4m3fn decoder (common/kp_fp8.h), and the tie
 * rule of the gate.
 *
 * Index contents (expert ids, offsets, row positions) are never trusted: a GPU cannot
 * report them without a host round trip, so every kernel here clamps or skips what
 * lies outside its range and never reads or writes out of bounds. Reporting bad
 * contents as an error is the CPU backend's job (and the caller's).
 */
#ifndef KP_MOE_COMMON_H
#define KP_MOE_COMMON_H

#include "kp_dialect.h"
/* the e4m3 decoder, kp_e4m3_to_f32 */
#include "common/kp_fp8.h"

#if defined(KP_TARGET_OPENCL)
typedef long kpm_i64;
#else
typedef long long kpm_i64;
#endif

/* Selection order of the gate: the larger value first, ties to the lower index. */
KP_FN int kpm_better(float vi, int i, float vj, int j) { return vi > vj || (vi == vj && i < j); }

#endif /* KP_MOE_COMMON_H */
