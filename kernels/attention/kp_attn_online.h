/*
 * kernels/attention/kp_attn_online.h - the online-softmax step and O += P V of one key
 * tile: the register-resident core of the generation-2 attention kernels. On the
 * wave-level tile (common/kp_wave_tile.h, whose layout is the target's own: AMD's MFMA
 * 16x16x16 natively), kp_attn_online_wt_pv at the end, the step of the prefill
 * (attention_prefill_gen2.cl) and the paged decode (attention_decode_gen2.cl); on
 * kp_tile_mma.h's m16n8k16 fragments, kp_attn_online_pv and kp_attn_online_rescale
 * (mla_decode_gen2.cl its rescale). (kp_attn_tile.h is generation 1's engine, whose
 * row state lives in local memory.)
 *
 * kp_attn_online_pv(m, l, tmax, s, nsf, o, nof, vt, ldv, pscr, lane) - one group of 32
 * lanes owns 16 rows; lane 4g+t holds rows g and g + 8 (index i = 0, 1 below):
 *   m[2]      running row max, log2 domain (-inf: no key yet); updated to max(m, tmax)
 *   l[2]      this lane's part of the running row sum; rescaled by exp2(m - m') and
 *             P's part added (the caller sums the quad once, at the end: FA2)
 *   tmax[2]   the tile's row max of S, already reduced over the quad
 *   s[nsf]    S of nsf * 8 keys (m16n8 accumulators: x[0..1] row g, x[2..3] row g + 8),
 *             scaled to log2 and masked (-inf); replaced by P = exp2(S - m'). nsf even
 *   o[nof]    O accumulators over nof * 8 value columns (nof even): rescaled by
 *             exp2(m - m'), then += P V, P rounded into A operands 16 keys at a time
 *             (kp_mma_acc_to_a: no trip through memory on NVIDIA)
 *   vt, ldv   the V tile of those keys in local memory, [key][column] with row stride
 *             ldv 16-bit elements (16-byte rows), read by the transposing fragment load
 *   pscr      this group's 256-element scratch for kp_mma_acc_to_a's fallback
 * A row with no visible key yet keeps P = 0 (its base is 0, not -inf). nsf and nof are
 * compile-time constants at every call, so the loops unroll and s, o stay in registers.
 * A kernel that splits O across calls (a wide MLA value dim) passes its slice as o / vt.
 * Needs KP_DTYPE_F16 or KP_DTYPE_BF16 (the MMA's input type); every lane of the group
 * calls it together.
 */
#ifndef KP_ATTN_ONLINE_H
#define KP_ATTN_ONLINE_H

#include "kp_dialect.h"
#include "common/kp_fragment_ops.h"
#include "common/kp_wave_tile.h"

#if defined(KP_DTYPE_F16)
#define KP_ATTN_WT_MMA kp_wt_mma_f16
#define KP_ATTN_PV_MMA kp_mma_16x8x16_f16
#define KP_ATTN_PV_F16 1
#elif defined(KP_DTYPE_BF16)
#define KP_ATTN_WT_MMA kp_wt_mma_bf16
#define KP_ATTN_PV_MMA kp_mma_16x8x16_bf16
#define KP_ATTN_PV_F16 0
#else
#error "kp_attn_online.h: P V on the tile MMA needs a 16-bit dtype"
#endif

#if defined(KP_TARGET_OPENCL)
#define kp_attn_exp2_(x) exp2(x)
#else
#define kp_attn_exp2_(x) exp2f(x)
#endif

/* The online softmax's new max m' = max(m, tmax) per row: base[i], what P subtracts
 * (0 for a row with no key yet, so that its P is 0), alpha[i] = exp2(m - m'), which l
 * takes here and O takes from the caller; m updated. (mla_decode_gen2.cl calls it with
 * its own P step.) */
KP_FN void kp_attn_online_rescale(float *m, float *l, const float *tmax, float *base, float *alpha) {
    for (int i = 0; i < 2; ++i) {
        float mnew = kp_fmaxf(m[i], tmax[i]);
        base[i] = mnew == -KP_INFINITY ? 0.0f : mnew; /* a row with no key yet: P = 0 */
        alpha[i] = kp_attn_exp2_(m[i] - base[i]);
        m[i] = mnew;
        l[i] *= alpha[i];
    }
}

KP_FN void kp_attn_online_pv(float *m, float *l, const float *tmax, kp_mma_acc *s, int nsf, kp_mma_acc *o, int nof,
                             KP_LOCAL_MEM const kp_u16 *vt, int ldv, KP_LOCAL_MEM kp_u16 *pscr, int lane) {
    /* online softmax: P = exp2(S - m'), l and O rescaled by exp2(m - m') */
    float base[2], alpha[2];
    kp_attn_online_rescale(m, l, tmax, base, alpha);
    for (int j = 0; j < nsf; ++j)
        for (int e = 0; e < 4; ++e) {
            float pv = kp_attn_exp2_(s[j].x[e] - base[e / 2]);
            s[j].x[e] = pv;
            l[e / 2] += pv;
        }
    for (int f = 0; f < nof; ++f)
        o[f].x[0] *= alpha[0], o[f].x[1] *= alpha[0], o[f].x[2] *= alpha[1], o[f].x[3] *= alpha[1];

    /* O += P V: P from the accumulators, V through the transposing load */
    for (int kk = 0; kk < nsf / 2; ++kk) {
        kp_mma_a pa;
        kp_mma_acc_to_a(&pa, &s[2 * kk], &s[2 * kk + 1], KP_ATTN_PV_F16, pscr, lane);
        for (int f = 0; f < nof; f += 2) {
            kp_mma_b vb0, vb1;
            kp_mma_load_b_trans_pair(&vb0, &vb1, vt + kk * 16 * ldv + f * 8, ldv, lane);
            KP_ATTN_PV_MMA(&o[f], &pa, &vb0);
            KP_ATTN_PV_MMA(&o[f + 1], &pa, &vb1);
        }
    }
}

/* kp_attn_online_wt_rescale: kp_attn_online_rescale for this lane's KP_WT_ROWS row slots
 * of the wave-level tile (mla_decode_gen2.cl calls it with its own P step).
 * kp_attn_online_wt_pv: the same step on the wave-level tile (common/kp_wave_tile.h),
 * whose layout is the target's: m, l, tmax hold this lane's KP_WT_ROWS row slots; s[nsw]
 * S of nsw 16-key wave tiles (scaled, masked), replaced by P; o[now] O over now 16-column
 * wave tiles; P to A operands by kp_wt_acc_to_a (registers on NVIDIA; through pscr,
 * KP_WT_M x 16 16-bit values of this wave, elsewhere), V by kp_wt_load_b_trans. Every
 * lane of the work-group calls it together (the fallbacks hold barriers). */
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
