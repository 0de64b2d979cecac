/*
 * tests/ref/ref_fp8.h — float64 references of the FP8 data paths (kp_kv_cache_store,
 * kp_quantize_fp8) and the tests' own e4m3 rounding. Independent of every backend: the
 * rounding searches the 127 finite e4m3 magnitudes instead of working on bits.
 */
#ifndef KPORT_TESTS_REF_FP8_H
#define KPORT_TESTS_REF_FP8_H

#include <stdint.h>

#define REF_FP8_MAX 448.0

/* The e4m3 value nearest v (ties to the even code), saturated to +-448; NaN stays NaN. */
double ref_e4m3_round(double v);
/* The e4m3 byte of ref_e4m3_round(v). */
unsigned char ref_e4m3_encode(double v);

/* The two roundings an implementation may give e4m3(x / scale) when x / scale is
 * computed in f32: exact when scale is a power of two (the quotient is exact), else
 * the roundings of the quotient moved by +-2^-21 relative (f32 division, correctly
 * rounded or OpenCL's 2.5 ulp), which differ only next to a tie. */
void ref_e4m3_quantize_pair(double x, double scale, double *lo, double *hi);

/* kp_kv_cache_store on one cache. src [T, h, d] (host values), slots [T], cache
 * [num_blocks, block_size, h, d] holding its values before the call. scale NULL: the
 * cache has src's dtype (rows copied: lo = hi = src); else e4m3 with scale [n_scale]
 * (1 or num_blocks). Writes the values each cache element may hold after the call
 * into lo and hi (elements no slot maps to: their old values). */
void ref_kv_cache_store(const double *src, const double *slots, int64_t t, int64_t h, int64_t d,
                        int64_t num_blocks, int64_t block_size, const double *cache, const double *scale,
                        int64_t n_scale, double *lo, double *hi);

/* kp_quantize_fp8's scales: x [T, K] (host values), groups of 128 -> scale [T, K/128]
 * in double: max(amax, 1e-10f) / 448, or (ue8m0) the power of two at or above it. The
 * quantized values follow from the scale with ref_e4m3_quantize_pair. */
void ref_quantize_fp8_scales(const double *x, int64_t t, int64_t k, int ue8m0, double *scale);

/* W8A8 grouped GEMM (kp_grouped_gemm with an e4m3 a): for rows r of expert e's range
 * [offsets[e], offsets[e+1]),
 *   out[r, j] = sum over kb of (sum over slice kb of a[r, l] * w[e, j, l])
 *               * a_scale[r, kb] * w_scale[e, j/128, kb].
 * a [M, K] and w [E, N, K] hold the e4m3 values (decoded), a_scale [M, K/128] row-major,
 * w_scale [E, ceil(N/128), K/128]; other rows untouched. err (may be NULL): the error
 * model: products exact (e4m3 x e4m3 fits f32), each 128-term slice summed in f32,
 * its scalings and the sum of the K/128 scaled slices in f32 (ref_prec.h). */
void ref_grouped_gemm_w8a8(const double *a, const double *a_scale, int64_t k, const double *w,
                           const double *w_scale, int64_t experts, int64_t n, const int32_t *offsets, double *out,
                           double *err);

/* kp_moe_forward W8A8 (activation_dtype KP_FP8_E4M3) for one token and one expert:
 *   out[hidden] += scale * y, y = W8A8(hq, w2), hq = quant(silu(g) * u),
 *   [g | u] = W8A8(quant(x), w13),
 * quant = kp_quantize_fp8's rule per 128 values (scale = max(amax, 1e-10f) / 448 rounded
 * to f32, or UE8M0), W8A8 = ref_grouped_gemm_w8a8's sum. x [hidden] (host values);
 * w13 [2*inter, hidden] and w2 [hidden, inter] the e4m3 values (decoded), their block
 * scales [ceil(2*inter/128), hidden/128] and [ceil(hidden/128), inter/128].
 * err2 [hidden] (may be NULL) accumulates the squared error model: the f32 GEMMs
 * (ref_grouped_gemm_w8a8's), SwiGLU in f32 (exp to REF_U_EXP), y rounded to `store`,
 * and the quantizations' uncertainty: where the implementation's f32 value (within 3
 * of its modelled standard deviations, the group's amax too) may round to another e4m3
 * code than the reference's value, the distance to it counts as error.
 * Away from such ties the quantized values are exact, so a quantization skipped or done
 * differently moves the output by far more than the model allows. */
void ref_moe_w8a8_mlp_add(const double *x, int64_t hidden, int64_t inter, const double *w13,
                          const double *w13_scale, const double *w2, const double *w2_scale, int ue8m0,
                          double scale, double store_unit, double *out, double *err2);
#endif
