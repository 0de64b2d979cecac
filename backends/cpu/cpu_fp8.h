/*
 * backends/cpu/cpu_fp8.h — FP8 e4m3 (OCP e4m3fn) conversions the CPU ops share: the
 * encoder of kp_kv_cache_store and kp_quantize_fp8 (round to nearest even, saturate
 * to +-448, NaN stays NaN) and the exact decoder.
 */
#ifndef KPORT_CPU_FP8_H
#define KPORT_CPU_FP8_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define CPU_FP8_MAX 448.0f

/* f32 -> e4m3 byte. Works on the f32 bits: the 24-bit significand is shifted right so
 * that 3 fraction bits remain (more for e4m3's subnormals, below 2^-6) and rounded to
 * nearest even; a carry out of the fraction lands in the exponent field by itself. */
static inline uint8_t cpu_f32_to_e4m3(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t mag = u & 0x7fffffffu;
    if (mag > 0x7f800000u) return sign | 0x7fu;              /* NaN */
    if (mag >= 0x43e00000u) return sign | 0x7eu;             /* >= 448 (and inf): saturate */
    int e = (int)(mag >> 23) - 127;                          /* unbiased f32 exponent */
    if (e < -11) return sign;                                /* below 2^-11 < half the smallest subnormal */
    uint32_t sig = (mag & 0x7fffffu) | 0x800000u;
    int shift = e >= -6 ? 20 : 20 + (-6 - e);                /* 20..25 */
    uint32_t q = sig >> shift, rem = sig & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    /* normal: exponent field e + 7 above the 8 of the hidden bit; subnormal: q itself */
    uint32_t byte = e >= -6 ? ((uint32_t)(e + 7) << 3) + (q - 8u) : q;
    return (uint8_t)(sign | byte);
}

/* e4m3 byte -> f32, exact: the fields move into f32's (bias 7 -> 127), subnormals
 * are m * 2^-9. */
static inline float cpu_e4m3_to_f32(uint8_t b) {
    uint32_t e = (b >> 3) & 0xfu, m = b & 7u, u;
    float v;
    if (e == 0xf && m == 7) return NAN;
    if (e == 0) {
        v = (float)m * 0x1p-9f;
    } else {
        u = ((e + 120u) << 23) | (m << 20);
        memcpy(&v, &u, 4);
    }
    return (b & 0x80) ? -v : v;
}

#define CPU_FP8_AMAX_FLOOR 1e-10f /* an all-zero group still gets a finite, positive scale */
#define CPU_FP8_GROUP 128

/* The smallest power of two s with 448 * s >= amax: exact, from amax's bits
 * (amax = 2^e * 1.f; 448 * 2^(e-8) = 1.75 * 2^e covers it when 1.f <= 1.75). */
static inline float cpu_fp8_ue8m0_scale(float amax) {
    uint32_t u;
    memcpy(&u, &amax, 4);
    int e = (int)(u >> 23) - 127;
    return ldexpf(1.0f, (u & 0x7fffffu) <= 0x600000u ? e - 8 : e - 7);
}

/* kp_quantize_fp8 of one 128-value group x (f32): out[i] = e4m3(x[i] / scale) with
 * scale = max(amax, 1e-10) / 448 (or UE8M0); returns the scale. */
static inline float cpu_fp8_quantize_group(const float *x, uint8_t *out, int ue8m0) {
    float amax = CPU_FP8_AMAX_FLOOR;
    for (int i = 0; i < CPU_FP8_GROUP; i++) amax = fmaxf(amax, fabsf(x[i]));
    float s = ue8m0 ? cpu_fp8_ue8m0_scale(amax) : amax / CPU_FP8_MAX;
    for (int i = 0; i < CPU_FP8_GROUP; i++) out[i] = cpu_f32_to_e4m3(x[i] / s);
    return s;
}

#endif /* KPORT_CPU_FP8_H */
