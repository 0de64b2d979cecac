/*
 * kernels/moe/moe_combine.cl - kp_moe_combine: out[t, :] = sum over slot 0..k-1, in that
 * order, of topk_weights[t, slot] * expert_out[token_pos[t, slot], :], f32 accumulation.
 * One work-item per output element; the sum order is fixed, so results are bitwise
 * the same run to run. A token_pos outside [0, rows) adds nothing (the kernel never
 * reads out of bounds; reporting it is the CPU backend's and the caller's job).
 *
 * Options: KP_DTYPE_* (out), KP_COMBINE_Y_F32 (expert_out is f32; else it has out's
 * dtype, as kp_moe_forward's workspace does), KP_COMBINE_WG (default 128).
 * Launch: global = (ceil(hidden / WG) * WG, T), local = (WG, 1).
 */
#include "kp_dialect.h"
#include "moe_common.h"
#include "moe_kargs.h"

#if defined(KP_COMBINE_Y_F32)
typedef float kpc_y_t;
#define KPC_Y(p, i) ((p)[i])
#else
typedef kp_storage_t kpc_y_t;
#define KPC_Y(p, i) kp_load(p, i)
#endif

KP_KERNEL void kp_moe_combine(KP_GLOBAL const kpc_y_t *KP_RESTRICT y, KP_GLOBAL const int *KP_RESTRICT pos,
                              KP_GLOBAL const float *KP_RESTRICT tw, KP_GLOBAL kp_storage_t *KP_RESTRICT out,
                              kp_moe_combine_kargs p) {
    const int col = kp_global_id(0), t = kp_group_id(1);
    if (col >= p.hidden) return;
    float acc = 0.0f;
    for (int slot = 0; slot < p.topk; ++slot) {
        int r = pos[p.pos_off + (kpm_i64)t * p.pos_ld + slot];
        if (r < 0 || r >= p.y_rows) continue;
        acc += tw[p.tw_off + (kpm_i64)t * p.tw_ld + slot] * KPC_Y(y, p.y_off + (kpm_i64)r * p.y_ld + col);
    }
    kp_store(out, p.out_off + (kpm_i64)t * p.out_ld + col, acc);
}
