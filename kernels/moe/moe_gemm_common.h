/*
 * kernels/moe/moe_gemm_common.h - what both generations of the grouped GEMM share
 * (moe_gemm.cl, moe_gemm_gen2.cl, moe_gemm_fp8_gen2.cl): operand types, finding a block's expert and rows on
 * the device, row addresses, and the epilogues (kp_moe_gemm_kargs.mode).
 *
 * Options read here: KP_GG_W_FP8 (e4m3 weights with 128x128 block scales), KP_GG_A_F32
 * (f32 activations whatever the dtype), KP_GG_A_FP8 (e4m3 activations, W8A8).
 */
#ifndef KP_MOE_GEMM_COMMON_H
#define KP_MOE_GEMM_COMMON_H

#include "kp_dialect.h"
#include "moe_common.h"
#include "moe_kargs.h"

#if defined(KP_GG_W_FP8)
typedef unsigned char kpg_w_t;
#define KPG_W(p, i) kp_e4m3_to_f32((kp_u32)(p)[i])
#else
typedef kp_storage_t kpg_w_t;
#define KPG_W(p, i) kp_load(p, i)
#endif
#if defined(KP_GG_A_FP8) /* W8A8: e4m3 activations with per-token-group scales (moe_gemm_fp8_gen2.cl) */
typedef unsigned char kpg_a_t;
#define KPG_A(p, i) kp_e4m3_to_f32((kp_u32)(p)[i])
#elif defined(KP_GG_A_F32)
typedef float kpg_a_t;
#define KPG_A(p, i) ((p)[i])
#else
typedef kp_storage_t kpg_a_t;
#define KPG_A(p, i) kp_load(p, i)
#endif

#define KPG_MODE_STORE KP_MOE_GEMM_STORE
#define KPG_MODE_STORE_F32 KP_MOE_GEMM_STORE_F32
#define KPG_MODE_SWIGLU KP_MOE_GEMM_SWIGLU
#define KPG_MODE_COMBINE KP_MOE_GEMM_COMBINE
#define KPG_MODE_SWIGLU_FP8 KP_MOE_GEMM_SWIGLU_FP8
/* the SwiGLU tile layout: gate rows, then the matching up rows (SWIGLU, SWIGLU_FP8) */
#define KPG_SWIGLU(mode) ((mode) == KPG_MODE_SWIGLU || (mode) == KPG_MODE_SWIGLU_FP8)

/* Expert e's rows [*lo, *hi), clamped to [0, M] (a range ending below its start is
 * empty). expert_offsets (mask_m 0): offsets[e] .. offsets[e+1]. The masked layout
 * (mask_m > 0: offsets is masked_m [E], M = E * mask_m): e * mask_m .. + the count
 * clamped to [0, mask_m]. Every kernel finds an expert's rows here. */
KP_FN void kp_expert_rows(KP_GLOBAL const int *offsets, kpm_i64 offsets_off, int mask_m, int e, int M, int *lo_out,
                          int *hi_out) {
    int lo, hi;
    if (mask_m > 0) {
        const int c = offsets[offsets_off + e];
        lo = e * mask_m;
        hi = lo + (c < 0 ? 0 : c > mask_m ? mask_m : c);
    } else {
        lo = offsets[offsets_off + e], hi = offsets[offsets_off + e + 1];
    }
    lo = lo < 0 ? 0 : lo > M ? M : lo;
    hi = hi < lo ? lo : hi > M ? M : hi;
    *lo_out = lo, *hi_out = hi;
}

/* The z-th tile (of bm rows) over the experts whose clamped row count m has
 * min_m < m <= max_m; returns the expert (or -1: no such tile) and its row range. */
KP_FN int kpg_find(KP_GLOBAL const int *offsets, kpm_i64 offsets_off, int mask_m, int n_exp, int dense_rows, int M,
                   int min_m, int max_m, int bm, int z, int *row_lo, int *row_hi) {
    if (dense_rows > 0) {
        int hi = dense_rows < M ? dense_rows : M;
        if (hi <= min_m || hi > max_m || z >= (hi + bm - 1) / bm) return -1;
        *row_lo = z * bm;
        *row_hi = hi;
        return 0;
    }
    for (int e = 0; e < n_exp; ++e) {
        int lo, hi;
        kp_expert_rows(offsets, offsets_off, mask_m, e, M, &lo, &hi);
        int m = hi - lo;
        if (m <= min_m || m > max_m) continue;
        int nt = (m + bm - 1) / bm;
        if (z < nt) {
            *row_lo = lo + z * bm;
            *row_hi = hi;
            return e;
        }
        z -= nt;
    }
    return -1;
}

/* Where activation row r of the tile lives (-1: zeros). */
KP_FN kpm_i64 kpg_arow(int r, int hi, KP_GLOBAL const int *gather, kpm_i64 gather_off, int gather_k, int a_rows,
                       kpm_i64 a_off, kpm_i64 a_ld) {
    if (r >= hi) return -1;
    int src = r;
    if (gather_k > 0) {
        int g = gather[gather_off + r];
        src = g >= 0 ? g / gather_k : -1;
    }
    return src >= 0 && src < a_rows ? a_off + (kpm_i64)src * a_ld : -1;
}

/* Tile column c -> the weight row it multiplies (-1: past N / n_out). SWIGLU: the first
 * bn/2 columns are gate rows n0 + c, the others the matching up rows n_out + n0 + c'. */
KP_FN int kpg_wrow_index(int c, int bn, int n0, int mode, int N, int n_out) {
    int hb = bn / 2, wr;
    if (KPG_SWIGLU(mode)) {
        int j = n0 + (c < hb ? c : c - hb);
        if (j >= n_out) return -1;
        wr = c < hb ? j : n_out + j;
    } else {
        wr = n0 + c;
    }
    return wr < N ? wr : -1;
}

/* Tile column c -> the element offset of its weight row (-1: none); *srow: its scale row base. */
KP_FN kpm_i64 kpg_wrow(int c, int bn, int n0, int mode, int N, int n_out, int e, kpm_i64 w_off, kpm_i64 w_se,
                       kpm_i64 w_sn, int ws_nb, int ws_kb, int *srow) {
    int wr = kpg_wrow_index(c, bn, n0, mode, N, n_out);
    *srow = wr >= 0 ? (e * ws_nb + wr / 128) * ws_kb : 0;
    return wr >= 0 ? w_off + (kpm_i64)e * w_se + (kpm_i64)wr * w_sn : -1;
}

KP_FN float kpg_wval(KP_GLOBAL const kpg_w_t *w, kpm_i64 wo, int gk, KP_GLOBAL const float *ws, kpm_i64 ws_off,
                     int srow) {
#if defined(KP_GG_W_FP8)
    return KPG_W(w, wo + gk) * ws[ws_off + srow + gk / 128];
#else
    (void)ws, (void)ws_off, (void)srow;
    return KPG_W(w, wo + gk);
#endif
}

/* y[i] in the dtype, read through the aligned 32-bit word that holds it (and a
 * neighbour): the combine's gather moves 4 bytes per element, as the f32 y it replaced
 * did, and no kernel carries a 16-bit scalar global load (backends/cuda/check_kernels.py).
 * The word never crosses a page, whatever y's alignment. */
KP_FN float kpg_load_y(KP_GLOBAL const kp_storage_t *y, kpm_i64 i) {
#if defined(KP_DTYPE_F16) || defined(KP_DTYPE_BF16)
    KP_GLOBAL const kp_storage_t *e = y + i;
    kp_u32 odd = (kp_u32)((kpm_i64)e & 2);
    kp_u32 w = *(KP_GLOBAL const kp_u32 *)((KP_GLOBAL const char *)e - odd);
    kp_u16 h = (kp_u16)(odd ? w >> 16 : w & 0xffffu);
#if defined(KP_DTYPE_F16)
    return kp_f16_to_f32(h);
#else
    return kp_bf16_to_f32(h);
#endif
#else
    return y[i];
#endif
}

/* Output element (r, n) of the epilogue `mode` from its GEMM value v; SWIGLU: v is the
 * gate value (weight row n), u the up value (weight row n_out + n), n < n_out. SWIGLU
 * stores, and COMBINE reads y, in the dtype (kp_moe_forward's intermediates). */
KP_FN void kpg_store_one(int r, int n, float v, float u, int mode, KP_GLOBAL kp_storage_t *out,
                         KP_GLOBAL float *outf, kpm_i64 out_off, kpm_i64 out_ld, KP_GLOBAL const kp_storage_t *y,
                         kpm_i64 y_off, kpm_i64 y_ld, int y_rows, KP_GLOBAL const int *pos, kpm_i64 pos_off,
                         KP_GLOBAL const float *tw, kpm_i64 tw_off, int topk) {
    kpm_i64 o = out_off + (kpm_i64)r * out_ld + n;
    if (mode == KPG_MODE_SWIGLU) {
        kp_store(out, o, v / (1.0f + kp_expf(-v)) * u);
    } else if (mode == KPG_MODE_STORE_F32) {
        outf[o] = v;
    } else if (mode == KPG_MODE_COMBINE) {
        float acc = 0.0f;
        for (int s = 0; s < topk; ++s) {
            int p = pos[pos_off + (kpm_i64)r * topk + s];
            if (p < 0 || p >= y_rows) continue;
            acc += tw[tw_off + (kpm_i64)r * topk + s] * kpg_load_y(y, y_off + (kpm_i64)p * y_ld + n);
        }
        kp_store(out, o, acc + v);
    } else {
        kp_store(out, o, v);
    }
}

/* Writes the finished tile cs [bm][ldc] (rows row0.., columns n0..; SWIGLU: the first
 * bn/2 columns are gate rows, the others the matching up rows). */
KP_FN void kpg_epilogue(KP_LOCAL_MEM const float *cs, int ldc, int bm, int bn, int row0, int hi, int n0, int mode,
                        int N, int n_out, KP_GLOBAL kp_storage_t *out, KP_GLOBAL float *outf, kpm_i64 out_off,
                        kpm_i64 out_ld, KP_GLOBAL const kp_storage_t *y, kpm_i64 y_off, kpm_i64 y_ld, int y_rows,
                        KP_GLOBAL const int *pos, kpm_i64 pos_off, KP_GLOBAL const float *tw, kpm_i64 tw_off,
                        int topk) {
    const int lid = kp_local_id(0), wg = kp_local_size(0);
    const int ncols = mode == KPG_MODE_SWIGLU ? bn / 2 : bn;
    for (int idx = lid; idx < bm * ncols; idx += wg) {
        int i = idx / ncols, c = idx % ncols, r = row0 + i, n = n0 + c;
        if (r >= hi || n >= (mode == KPG_MODE_SWIGLU ? n_out : N)) continue;
        float u = mode == KPG_MODE_SWIGLU ? cs[i * ldc + c + bn / 2] : 0.0f;
        kpg_store_one(r, n, cs[i * ldc + c], u, mode, out, outf, out_off, out_ld, y, y_off, y_ld, y_rows, pos,
                      pos_off, tw, tw_off, topk);
    }
}

/* The rows (decode) kernels' finish, after the cross-lane sums: the tile cs [tile][cols + 1]
 * (rows row0 .. hi-1, m = hi - row0; columns as kpg_wrow_index maps them) goes through the
 * epilogue, or, under split-K (ksplit > 1), to this K slice's f32 partials by weight row,
 * part[slice][row][n] (slice = kp_group_id(2)), which kpg_rows_reduce sums. */
KP_FN void kpg_rows_finish(KP_LOCAL_MEM const float *cs, int cols, int tile, int row0, int hi, int n0,
                           const kp_moe_gemm_kargs *p, KP_GLOBAL kp_storage_t *out, KP_GLOBAL float *outf,
                           KP_GLOBAL const kp_storage_t *y, KP_GLOBAL const int *pos, KP_GLOBAL const float *tw,
                           KP_GLOBAL float *part) {
    if (p->ksplit <= 1) {
        kpg_epilogue(cs, cols + 1, tile, cols, row0, hi, n0, p->mode, p->n, p->n_out, out, outf, p->out_off,
                     p->out_ld, y, p->y_off, p->y_ld, p->y_rows, pos, p->pos_off, tw, p->tw_off, p->topk);
        return;
    }
    const int lid = kp_local_id(0), wg = kp_local_size(0), m = hi - row0;
    for (int q = lid; q < m * cols; q += wg) {
        const int r = q / cols, c = q % cols, n = kpg_wrow_index(c, cols, n0, p->mode, p->n, p->n_out);
        if (n >= 0) part[((kpm_i64)kp_group_id(2) * p->m + row0 + r) * p->n + n] = cs[r * (cols + 1) + c];
    }
}

/* Split-K's second pass: output column n of rows row0 .. hi-1, the ksplit partials
 * kpg_rows_finish left summed in slice order, then the epilogue. */
KP_FN void kpg_rows_reduce(int row0, int hi, int n, const kp_moe_gemm_kargs *p, KP_GLOBAL kp_storage_t *out,
                           KP_GLOBAL float *outf, KP_GLOBAL const kp_storage_t *y, KP_GLOBAL const int *pos,
                           KP_GLOBAL const float *tw, KP_GLOBAL const float *part) {
    for (int r = row0; r < hi; ++r) {
        float v = 0.0f, u = 0.0f;
        for (int s = 0; s < p->ksplit; ++s) {
            const kpm_i64 base = ((kpm_i64)s * p->m + r) * p->n;
            v += part[base + n];
            if (p->mode == KPG_MODE_SWIGLU) u += part[base + p->n_out + n];
        }
        kpg_store_one(r, n, v, u, p->mode, out, outf, p->out_off, p->out_ld, y, p->y_off, p->y_ld, p->y_rows, pos,
                      p->pos_off, tw, p->tw_off, p->topk);
    }
}

#endif /* KP_MOE_GEMM_COMMON_H */
