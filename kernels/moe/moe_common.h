/*
 * kernels/moe/moe_common.h - what the MoE kernels share: a 64-bit index type (weights of
 * V3 size pass 2^31 elements), the OCP e4m3fn decoder, and the tie rule of the gate.
 *
 * Index contents (expert ids, offsets, row positions) are never trusted: a GPU cannot
 * report them without a host round trip, so every kernel here clamps or skips what
 * lies outside its range and never reads or writes out of bounds. Reporting bad
 * contents as an error is the CPU backend's job (and the caller's).
 */
#ifndef KP_MOE_COMMON_H
#define KP_MOE_COMMON_H

#include "kp_dialect.h"

#if defined(KP_TARGET_OPENCL)
typedef long kpm_i64;
#else
typedef long long kpm_i64;
#endif

/* OCP e4m3fn: sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities,
 * S.1111.111 is NaN, the largest finite value 448. Exact in f32 (and in f16/bf16). */
KP_FN float kpm_e4m3_to_f32(kp_u32 b) {
    kp_u32 sign = (b & 0x80u) << 24, e = (b >> 3) & 0xfu, m = b & 7u;
    if (e == 0xfu && m == 7u) return kp_as_float(sign | 0x7fc00000u);
    if (e == 0u) { /* subnormal: m * 2^-9 */
        float v = (float)m * 0.001953125f;
        return sign ? -v : v;
    }
    return kp_as_float(sign | ((e + 120u) << 23) | (m << 20));
}

/* Selection order of the gate: the larger value first, ties to the lower index. */
KP_FN int kpm_better(float vi, int i, float vj, int j) { return vi > vj || (vi == vj && i < j); }

#endif /* KP_MOE_COMMON_H */
