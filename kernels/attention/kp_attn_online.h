/*
 * kernels/attention/kp_attn_online.h - the online-softmax step and O += P V of one key
 * tile on the wave-level tile (common/kp_wave_tile.h, whose layout is the target's own:
 * two mma.sync per 16x16x16 step on NVIDIA, AMD's MFMA 16x16x16 natively): the
 * register-resident core of the generation-2 attention kernels - the prefill
 * (attention_prefill_gen2.cl), the paged decode (attention_decode_gen2.cl) and, for
 * its rescale, the MLA decode (mla_decode_gen2.cl, which writes P into its tile).
 * (kp_attn_tile.h is generation 1's engine, whose row state lives in local memory.)
 *
 * kp_attn_online_wt_pv(m, l, tmax, s, nsw, o, now, vt, ldv, pscr, lane) - a wave owns
 * KP_WT_M rows; this lane holds KP_WT_ROWS row slots (kp_wt_slot, kp_wt_row):
 *   m[ROWS]   running row max, log2 domain (-inf: no key yet); updated to max(m, tmax)
 *   l[ROWS]   this lane's part of the running row sum; rescaled by exp2(m - m') and
 *             P's part added (the caller sums over the lanes sharing a row once, at the
 *             end: FA2)
 *   tmax[ROWS] the tile's row max of S, already reduced over those lanes
 *   s[nsw]    S of nsw 16-key wave tiles, scaled to log2 and masked (-inf); replaced by
 *             P = exp2(S - m')
 *   o[now]    O over now 16-column wave tiles: rescaled by exp2(m - m'), then += P V,
 *             P rounded into A operands 16 keys at a time (kp_wt_acc_to_a: registers
 *             on NVIDIA and AMD, no barrier; through pscr, KP_WT_M x 16 16-bit values
 *             of this wave, elsewhere)
 *   vt, ldv   the V tile of those keys in local memory, [key][column] with row stride
 *             ldv 16-bit elements (16-byte rows), read by kp_wt_load_b_trans
 * A row with no visible key yet keeps P = 0 (its base is 0, not -inf). nsw and now are
 * compile-time constants at every call, so the loops unroll and s, o stay in registers.
 * kp_attn_online_wt_rescale(m, l, tmax, base, alpha): the step's first part alone.
 * Needs KP_DTYPE_F16 or KP_DTYPE_BF16 (the MMA's input type); every lane of the
 * work-group calls these together (the fallbacks hold barriers).
 */
#ifndef KP_ATTN_ONLINE_H
#define KP_ATTN_ONLINE_H

#include "kp_dialect.h"
#include "common/kp_wave_tile.h"

#if defined(KP_DTYPE_F16)
#define KP_ATTN_WT_MMA kp_wt_mma_f16
#define KP_ATTN_PV_F16 1
#elif defined(KP_DTYPE_BF16)
#define KP_ATTN_WT_MMA kp_wt_mma_bf16
#define KP_ATTN_PV_F16 0
#else
#error "kp_attn_online.h: P V on the tile MMA needs a 16-bit dtype"
#endif

#if defined(KP_TARGET_OPENCL)
#define kp_attn_exp2_(x) exp2(x)
#else
#define kp_attn_exp2_(x) exp2f(x)
#endif

/* The new max m' = max(m, tmax) per row slot: base[r], what P subtracts (0 for a row
 * with no key yet, so that its P is 0), alpha[r] = exp2(m - m'), which l takes here and
 * O takes from the caller; m updated. */
KP_FN void kp_attn_online_wt_rescale(float *m, float *l, const float *tmax, float *base, float *alpha) {
    for (int r = 0; r < KP_WT_ROWS; ++r) {
        float mnew = kp_fmaxf(m[r], tmax[r]);
        base[r] = mnew == -KP_INFINITY ? 0.0f : mnew; /* a row with no key yet: P = 0 */
        alpha[r] = kp_attn_exp2_(m[r] - base[r]);
        m[r] = mnew;
        l[r] *= alpha[r];
    }
}

KP_FN void kp_attn_online_wt_pv(float *m, float *l, const float *tmax, kp_wt_acc *s, int nsw, kp_wt_acc *o, int now,
                                KP_LOCAL_MEM const kp_u16 *vt, int ldv, KP_LOCAL_MEM kp_u16 *pscr, int lane) {
    float base[KP_WT_ROWS], alpha[KP_WT_ROWS];
    kp_attn_online_wt_rescale(m, l, tmax, base, alpha);
    for (int j = 0; j < nsw; ++j)
        for (int e = 0; e < KP_WT_ACC_N; ++e) {
            float pv = kp_attn_exp2_(kp_wt_el(s[j], e) - base[kp_wt_slot(e)]);
            kp_wt_el(s[j], e) = pv;
            l[kp_wt_slot(e)] += pv;
        }
    for (int f = 0; f < now; ++f)
        for (int e = 0; e < KP_WT_ACC_N; ++e) kp_wt_el(o[f], e) *= alpha[kp_wt_slot(e)];
    for (int kk = 0; kk < nsw; ++kk) {
        kp_wt_a pa;
        kp_wt_acc_to_a(&pa, &s[kk], KP_ATTN_PV_F16, pscr, lane);
        for (int f = 0; f < now; ++f) {
            kp_wt_b vb;
            kp_wt_load_b_trans(&vb, vt + kk * 16 * ldv + f * 16, ldv, lane);
            KP_ATTN_WT_MMA(&o[f], &pa, &vb);
        }
    }
}

#endif /* KP_ATTN_ONLINE_H */
