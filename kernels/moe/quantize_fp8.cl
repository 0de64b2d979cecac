/*
 * kernels/moe/quantize_fp8.cl - kp_quantize_fp8: per-token-group (1 x 128) FP8 e4m3
 * quantization. One work-group of 128 work-items per (group, token): each loads one
 * element, the group's amax comes from a local-memory tree (no subgroups needed: PoCL
 * has none), work-item 0 computes and writes the scale, all quantize (common/kp_fp8.h).
 * Rules as in kport.h: amax floored at 1e-10, scale = amax / 448 or (ue8m0) the
 * power of two at or above it, taken from amax's bits so that every target agrees.
 *
 * Options: KP_DTYPE_* (x). Launch: groups (T, K / 128), local 128 (tokens first: CUDA's
 * second grid dimension takes 65535).
 */
#include "kp_dialect.h"
#include "moe_common.h"
#include "moe_kargs.h"
#include "common/kp_fp8.h"

#define QF_GROUP 128

KP_KERNEL void KP_LAUNCH_BOUNDS(QF_GROUP, 1)
    kp_quantize_fp8(KP_GLOBAL const kp_storage_t *KP_RESTRICT x, KP_GLOBAL unsigned char *KP_RESTRICT out,
                    KP_GLOBAL float *KP_RESTRICT scale, kp_quant_fp8_kargs p) {
    KP_LOCAL(float, red, QF_GROUP);
    KP_LOCAL(float, group_scale, 1);
    const int lid = kp_local_id(0), t = kp_group_id(0), g = kp_group_id(1);
    const kpm_i64 col = (kpm_i64)g * QF_GROUP + lid;
    const float v = kp_load(x, p.x_off + (kpm_i64)t * p.x_ld + col);
    red[lid] = kp_as_float(kp_as_uint(v) & 0x7fffffffu);
    kp_barrier();
    for (int w = QF_GROUP / 2; w > 0; w >>= 1) {
        if (lid < w) red[lid] = kp_fmaxf(red[lid], red[lid + w]);
        kp_barrier();
    }
    if (lid == 0) {
        float amax = kp_fmaxf(red[0], 1e-10f), s;
        if (p.ue8m0) { /* 448 * 2^(e-8) = 1.75 * 2^e covers amax = 2^e * 1.f when 1.f <= 1.75 */
            kp_u32 u = kp_as_uint(amax);
            int e = (int)(u >> 23) - 127 - ((u & 0x7fffffu) <= 0x600000u ? 8 : 7);
            s = kp_as_float((kp_u32)(e + 127) << 23);
        } else {
            s = amax / KP_FP8_MAX;
        }
        group_scale[0] = s;
        scale[p.s_off + (kpm_i64)t * p.s_t + (kpm_i64)g * p.s_g] = s;
    }
    kp_barrier();
    out[p.out_off + (kpm_i64)t * p.out_ld + col] = (unsigned char)kp_f32_to_e4m3(v / group_scale[0]);
}
