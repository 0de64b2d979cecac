/*
 * kernels/common/kp_fp8.h - the FP8 e4m3 (OCP e4m3fn) encoder the FP8 data-path kernels
 * share (kv_cache_store.cl, quantize_fp8.cl), and the decoder the tile layer's e4m3 unit
 * uses (common/kp_tile_mma_e4m3.h), the MoE kernels' weights and the attention kernels' FP8
 * caches (moe/moe_common.h, attention/kp_attn_tile.h).
 * Integer ops on the f32 bits only, so every target rounds the same.
 */
#ifndef KP_FP8_H
#define KP_FP8_H

#define KP_FP8_MAX 448.0f

/* f32 -> e4m3 byte: round to nearest even, saturate to +-448 (infinities too), NaN
 * stays NaN. The 24-bit significand is shifted so that 3 fraction bits remain (more
 * below 2^-6, e4m3's subnormals) and rounded; a carry out of the fraction moves into
 * the exponent field by itself. */
KP_FN kp_u32 kp_f32_to_e4m3(float x) {
    kp_u32 u = kp_as_uint(x);
    kp_u32 sign = (u >> 24) & 0x80u, mag = u & 0x7fffffffu;
    if (mag > 0x7f800000u) return sign | 0x7fu; /* NaN */
    if (mag >= 0x43e00000u) return sign | 0x7eu; /* >= 448 */
    int e = (int)(mag >> 23) - 127;
    if (e < -11) return sign; /* below a quarter of the smallest subnormal (2^-9) */
    kp_u32 sig = (mag & 0x7fffffu) | 0x800000u;
    int shift = e >= -6 ? 20 : 14 - e; /* 20..25 */
    kp_u32 q = sig >> shift, rem = sig & ((1u << shift) - 1u), tie = 1u << (shift - 1);
    if (rem > tie || (rem == tie && (q & 1u))) q++;
    return sign | (e >= -6 ? ((kp_u32)(e + 7) << 3) + (q - 8u) : q);
}

/* e4m3 byte -> f32, exact: sign, 4 exponent bits (bias 7), 3 mantissa bits; S.1111.111
 * is NaN; exponent 0 holds the subnormals m * 2^-9. */
KP_FN float kp_e4m3_to_f32(kp_u32 b) {
    kp_u32 sign = (b & 0x80u) << 24, e = (b >> 3) & 0xfu, m = b & 7u;
    if (e == 0xfu && m == 7u) return kp_as_float(sign | 0x7fc00000u);
    if (e == 0u) { /* subnormal: m * 2^-9 */
        float v = (float)m * 0.001953125f;
        return sign ? -v : v;
    }
    return kp_as_float(sign | ((e + 120u) << 23) | (m << 20));
}

#endif /* KP_FP8_H */
