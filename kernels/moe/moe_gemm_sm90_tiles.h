/*
 * kernels/moe/moe_gemm_sm90_tiles.h - the sm_90a grouped GEMMs' tile list as integers:
 * an expert's clamped rows (expert_offsets, the masked layout, one dense expert), its m-tile
 * count, and tile t -> (expert, first row, row end, first column). Pure index arithmetic
 * on the kargs block and the counts the kernel read, shared by moe_gemm_sm90_sched.h (the
 * device scheduler of both sm_90a kernels) and host C (tests/test_gpu_plan_sm90_masked.c
 * walks the list a kernel would walk and checks every row it would store).
 *
 * The masked layout (mask_m > 0: `offsets` is masked_m [E], m = E * mask_m): expert e owns
 * rows e * mask_m .. + clamp(masked_m[e], 0, mask_m), read on the device only. Its m-tiles
 * are ceil(count / 128), from the count the device read: tiles past an expert's count are
 * never listed (the prefix over the experts is built from the counts, as DeepGEMM's masked
 * scheduler sums ceil(masked_m[g] / BLOCK_M)), so the CTAs stride over real tiles only.
 * A tile's A box may run into the next expert's rows (its count > 0 or not): those rows
 * are loaded, multiplied and never stored (the epilogue's row end is the expert's).
 */
#ifndef KP_MOE_GEMM_SM90_TILES_H
#define KP_MOE_GEMM_SM90_TILES_H

#include "moe_gemm_sm90_kargs.h"

#if defined(__CUDACC__) || defined(KP_TARGET_CUDA) || defined(__HIPCC__) || defined(KP_TARGET_HIP)
#define KP_S90_FN static __device__ __forceinline__
#else
#define KP_S90_FN static inline
#endif

/* Expert e's clamped rows [lo, hi) of the m rows of out. dense_rows > 0: the one expert,
 * [0, min(dense_rows, m)). mask_m > 0: offsets[e] is the count (masked_m[e]; offsets[e + 1]
 * is not read: masked_m has E entries). Else offsets[e] .. offsets[e + 1]. */
KP_S90_FN void kp_s90_rows(const int *offsets, const kp_moe_gemm_sm90_kargs *p, int e, int *lo, int *hi) {
    if (p->dense_rows > 0) {
        *lo = 0, *hi = p->dense_rows < p->m ? p->dense_rows : p->m;
        return;
    }
    int l, h;
    if (p->mask_m > 0) {
        const int c = offsets[p->offsets_off + e];
        l = e * p->mask_m;
        h = l + (c < 0 ? 0 : c > p->mask_m ? p->mask_m : c);
    } else {
        l = offsets[p->offsets_off + e], h = offsets[p->offsets_off + e + 1];
    }
    l = l < 0 ? 0 : l > p->m ? p->m : l;
    h = h < l ? l : h > p->m ? p->m : h;
    *lo = l, *hi = h;
}

/* Expert e's m-tiles of KP_MOE_GEMM_SM90_BM rows. */
KP_S90_FN int kp_s90_mtiles(const int *offsets, const kp_moe_gemm_sm90_kargs *p, int e) {
    int lo, hi;
    kp_s90_rows(offsets, p, e, &lo, &hi);
    return (hi - lo + KP_MOE_GEMM_SM90_BM - 1) / KP_MOE_GEMM_SM90_BM;
}

/* Tile t (m-tile t / tiles_n, columns (t % tiles_n) * bn ..) -> its expert, first row, the
 * expert's row end and first column; 0 when t is past the list. prefix[e]: m-tiles of
 * experts 0 .. e-1 (prefix[nexp] = all of them; experts without rows repeat a value). */
KP_S90_FN int kp_s90_tile(const int *offsets, const kp_moe_gemm_sm90_kargs *p, const int *prefix, int nexp,
                          int tiles_n, int bn, int t, int *e_out, int *row0, int *hi, int *n0) {
    const int mt = t / tiles_n;
    if (mt >= prefix[nexp]) return 0;
    int lo_e = 0, hi_e = nexp - 1; /* the last e with prefix[e] <= mt */
    while (lo_e < hi_e) {
        int mid = (lo_e + hi_e + 1) / 2;
        if (prefix[mid] <= mt) lo_e = mid;
        else hi_e = mid - 1;
    }
    int lo;
    kp_s90_rows(offsets, p, lo_e, &lo, hi);
    *e_out = lo_e;
    *row0 = lo + (mt - prefix[lo_e]) * KP_MOE_GEMM_SM90_BM;
    *n0 = (t % tiles_n) * bn;
    return 1;
}

#endif /* KP_MOE_GEMM_SM90_TILES_H */
