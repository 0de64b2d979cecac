/*
 * kernels/moe/moe_gemm_fp8_rows.h - the W8A8 grouped GEMM's decode kernels, included by
 * moe_gemm_fp8_gen2.cl (same source, options and arguments as its tiled kernel; the
 * contract and arithmetic are that file's): out = sum over K slices kb of
 * (a[r, slice kb] . w[e, n, slice kb]) * a_scale(r, kb) * w_scale[e, n/128, kb].
 *
 * kp_grouped_gemm_fp8_rows     decode-sized experts: the expert's rows in tiles of
 *     G8R_M (16), every expert (a larger one takes several tiles and streams its weights
 *     once per tile; the planner runs this kernel only while the rows an expert has on
 *     average are few). A work-group has G8R_NT work-items, G8R_TPR of them per weight
 *     row: G8R_COLS weight rows. K runs in chunks of G8R_TPR 128-wide slices; the tile's
 *     activation rows of a chunk are decoded once into local memory (e4m3 -> bf16 bits:
 *     exact) with their scales; work-item j of a weight row takes slice j of the chunk:
 *     eight 16-byte loads (128 contiguous e4m3 weights), decoded in pairs to f16 bits
 *     (exact; the factor 2^8 between e4m3's and f16's exponent bias goes into the
 *     scale), an f32 sum over the slice for each activation row, then one promotion
 *     acc += slice * (a_scale * w_scale), as the tiled kernel's kp_mma_acc_promote.
 *     The G8R_TPR partials of a weight row are summed in local memory and the tile goes
 *     through the common epilogue (every mode). Work-group (x, z, s): weight rows
 *     x * G8R_COLS.. of row tile z, K slice s of ksplit (kslice: a multiple of 128);
 *     with ksplit > 1 the f32 partials go to `part` [ksplit, M, N] and
 *     kp_grouped_gemm_fp8_reduce sums them and applies the epilogue.
 *     e4m3 NaN bytes (0x7f, 0xff) in w decode as +-480 here (the tiled kernel's MMA
 *     reads them as NaN); the API's weights are finite.
 * kp_grouped_gemm_fp8_reduce   the split-K sum and the epilogue, per row tile.
 *
 * Options: G8R_WARPS (work-items / 32).
 */
#ifndef KP_MOE_GEMM_FP8_ROWS_H
#define KP_MOE_GEMM_FP8_ROWS_H

#ifndef G8R_WARPS
#define G8R_WARPS 8
#endif
#define G8R_NT (G8R_WARPS * 32)
#define G8R_TPR KP_MOE_GEMM8_ROWS_TPR
#define G8R_COLS (G8R_NT / G8R_TPR)
#define G8R_M KP_MOE_GEMM8_ROWS_M
#define G8R_LDS KP_MOE_GEMM8_ROWS_LDS /* a staged slice row: 128 bf16 + 8 (16 bytes: banks) */
#define G8R_KC (G8R_TPR * 128)

/* Two e4m3 bytes (bits 0-7 and 16-23 of y, the rest 0) as f16x2 bits, 2^-8 times
 * their value: the 7 magnitude bits move under f16's exponent and fraction, the sign
 * to f16's. Subnormals stay subnormal (m * 2^-17 in f16), exact. */
#define G8R_E4M3X2_F16(y) ((((y) & 0x007f007fu) << 7) | (((y) & 0x00800080u) << 8))

/* 16 e4m3 bytes of v, times 2^-8, as f32. */
KP_FN void g8r_decode16(uint4 v, float *f) {
    kp_u32 q[4] = {v.x, v.y, v.z, v.w};
    for (int i = 0; i < 4; ++i) {
        kp_u32 lo = G8R_E4M3X2_F16((q[i] & 0xffu) | ((q[i] & 0xff00u) << 8));
        kp_u32 hi = G8R_E4M3X2_F16(((q[i] >> 16) & 0xffu) | ((q[i] >> 8) & 0xff0000u));
        f[4 * i + 0] = kp_f16_to_f32((kp_u16)(lo & 0xffffu)), f[4 * i + 1] = kp_f16_to_f32((kp_u16)(lo >> 16));
        f[4 * i + 2] = kp_f16_to_f32((kp_u16)(hi & 0xffffu)), f[4 * i + 3] = kp_f16_to_f32((kp_u16)(hi >> 16));
    }
}

/* The f32 of bf16 bits in the low or high half of a word. */
#define G8R_BLO(u) kp_as_float((u) << 16)
#define G8R_BHI(u) kp_as_float((u) & 0xffff0000u)

/* This work-item's slice j of the chunk for the first R activation rows: sl[r] = the
 * f32 sum of its 128 products, then acc[r] += sl[r] * (a_scale * w_scale). */
#define G8R_SLICE(R)                                                                                \
    {                                                                                               \
        float sl[R];                                                                                \
        for (int r = 0; r < (R); ++r) sl[r] = 0.0f;                                                 \
        KP_UNROLL /* wq[] stays in registers: eight 16-byte loads in flight */                       \
        for (int q = 0; q < 8; ++q) {                                                               \
            float wf[16];                                                                           \
            g8r_decode16(wq[q], wf);                                                                \
            for (int r = 0; r < (R); ++r) {                                                         \
                KP_LOCAL_MEM const uint4 *xr =                                                      \
                    (KP_LOCAL_MEM const uint4 *)(xa + (r * G8R_TPR + j) * G8R_LDS + q * 16);        \
                uint4 x0 = xr[0], x1 = xr[1];                                                       \
                float s = sl[r];                                                                    \
                s = kp_fmaf(wf[0], G8R_BLO(x0.x), s), s = kp_fmaf(wf[1], G8R_BHI(x0.x), s);         \
                s = kp_fmaf(wf[2], G8R_BLO(x0.y), s), s = kp_fmaf(wf[3], G8R_BHI(x0.y), s);         \
                s = kp_fmaf(wf[4], G8R_BLO(x0.z), s), s = kp_fmaf(wf[5], G8R_BHI(x0.z), s);         \
                s = kp_fmaf(wf[6], G8R_BLO(x0.w), s), s = kp_fmaf(wf[7], G8R_BHI(x0.w), s);         \
                s = kp_fmaf(wf[8], G8R_BLO(x1.x), s), s = kp_fmaf(wf[9], G8R_BHI(x1.x), s);         \
                s = kp_fmaf(wf[10], G8R_BLO(x1.y), s), s = kp_fmaf(wf[11], G8R_BHI(x1.y), s);       \
                s = kp_fmaf(wf[12], G8R_BLO(x1.z), s), s = kp_fmaf(wf[13], G8R_BHI(x1.z), s);       \
                s = kp_fmaf(wf[14], G8R_BLO(x1.w), s), s = kp_fmaf(wf[15], G8R_BHI(x1.w), s);       \
                sl[r] = s;                                                                          \
            }                                                                                       \
        }                                                                                           \
        for (int r = 0; r < (R); ++r) acc[r] = kp_fmaf(sl[r], sa[r * G8R_TPR + j] * wsc, acc[r]);   \
    }

/* Expert e's rows clamped to [0, M] as kpg_find does, and its row tiles. */
KP_FN int g8r_tiles(KP_GLOBAL const int *offsets, kpm_i64 off0, int mask_m, int e, int M, int *lo_out,
                    int *hi_out) {
    kp_expert_rows(offsets, off0, mask_m, e, M, lo_out, hi_out);
    return (*hi_out - *lo_out + G8R_M - 1) / G8R_M;
}

/* kpg_find's answer (every expert with rows, tiles of G8R_M) for row tile z, found by
 * the work-group together rather than by a walk over every expert in each work-item
 * (E = 256 dependent loads, microseconds, in each of thousands of work-groups):
 * work-item t counts the tiles of experts [t E / NT, (t + 1) E / NT), a scan in local
 * memory (`scan`, G8R_NT ints) gives each its first tile, and the one holding z
 * publishes (e, row_lo, row_hi) in fnd. Uniform over the work-group. */
KP_FN int g8r_find(KP_GLOBAL const int *offsets, kpm_i64 off0, int mask_m, int n_exp, int dense_rows, int M, int z,
                   KP_LOCAL_MEM int *scan, KP_LOCAL_MEM int *fnd, int *row_lo, int *row_hi) {
    if (dense_rows > 0)
        return kpg_find(offsets, off0, mask_m, n_exp, dense_rows, M, 0, 0x7fffffff, G8R_M, z, row_lo, row_hi);
    const int lid = kp_local_id(0);
    const int e0 = (int)((kpm_i64)n_exp * lid / G8R_NT), e1 = (int)((kpm_i64)n_exp * (lid + 1) / G8R_NT);
    int cnt = 0, lo, hi;
    for (int e = e0; e < e1; ++e) cnt += g8r_tiles(offsets, off0, mask_m, e, M, &lo, &hi);
    scan[lid] = cnt;
    if (lid == 0) fnd[0] = -1;
    kp_barrier();
    for (int d = 1; d < G8R_NT; d <<= 1) { /* inclusive prefix sum */
        const int v = lid >= d ? scan[lid - d] : 0;
        kp_barrier();
        scan[lid] += v;
        kp_barrier();
    }
    int zz = z - (scan[lid] - cnt);
    if (zz >= 0 && zz < cnt)
        for (int e = e0; e < e1; ++e) {
            const int nt = g8r_tiles(offsets, off0, mask_m, e, M, &lo, &hi);
            if (zz < nt) {
                fnd[0] = e, fnd[1] = lo + zz * G8R_M, fnd[2] = hi;
                break;
            }
            zz -= nt;
        }
    kp_barrier();
    *row_lo = fnd[1], *row_hi = fnd[2];
    return fnd[0];
}

KP_KERNEL void KP_LAUNCH_BOUNDS(G8R_NT, 1) kp_grouped_gemm_fp8_rows(G8_ARGS KP_DYNAMIC_LOCAL_ARG(smem)) {
    KP_DYNAMIC_LOCAL(smem);
    KP_LOCAL_MEM kp_u16 *xa = (KP_LOCAL_MEM kp_u16 *)smem;  /* [G8R_M][G8R_TPR][G8R_LDS] */
    KP_LOCAL_MEM float *red = (KP_LOCAL_MEM float *)smem;  /* after the K loop: [G8R_NT][G8R_M] */
    KP_LOCAL_MEM float *sa = (KP_LOCAL_MEM float *)((KP_LOCAL_MEM char *)smem + KP_MOE_GEMM8_ROWS_X_BYTES);
    KP_LOCAL_MEM float *cs = sa + G8R_M * G8R_TPR;          /* [G8R_M][G8R_COLS + 1] */
    KP_LOCAL_MEM kpm_i64 *arow = (KP_LOCAL_MEM kpm_i64 *)(cs + G8R_M * (G8R_COLS + 1));
    KP_LOCAL_MEM kpm_i64 *asrow = arow + G8R_M;
    KP_LOCAL_MEM int *fnd = (KP_LOCAL_MEM int *)(asrow + G8R_M); /* g8r_find's answer */

    const int lid = kp_local_id(0), j = lid % G8R_TPR, col = lid / G8R_TPR;
    int row0 = 0, hi = 0;
    const int e = g8r_find(offsets, p.offsets_off, p.mask_m, p.n_exp, p.dense_rows, p.m, kp_group_id(1),
                           (KP_LOCAL_MEM int *)smem, fnd, &row0, &hi); /* its scan in xa's bytes */
    if (e < 0) return; /* uniform over the work-group */
    if (hi - row0 > G8R_M) hi = row0 + G8R_M; /* this tile's rows */
    const int m = hi - row0;
    const int n0 = kp_group_id(0) * (p.mode == KPG_MODE_SWIGLU ? G8R_COLS / 2 : G8R_COLS);
    const int kbeg = kp_group_id(2) * p.kslice;
    const int kend = kbeg + p.kslice < p.k ? kbeg + p.kslice : p.k;
    int sr;
    const kpm_i64 o = kpg_wrow(col, G8R_COLS, n0, p.mode, p.n, p.n_out, e, p.w_off, p.w_se, p.w_sn, p.ws_nb, p.ws_kb,
                               &sr);
    const int wv = o >= 0; /* a weight row past N computes zeros, never stored */
    const kpm_i64 wo = wv ? o : 0;
    if (lid < G8R_M) {
        kpm_i64 ar = kpg_arow(row0 + lid, hi, gather, p.gather_off, p.gather_k, p.a_rows, p.a_off, p.a_ld);
        arow[lid] = ar;
        /* the scale row: the source row a's row offset came from */
        asrow[lid] = ar >= 0 ? p.as_off + (p.a_ld > 0 ? (ar - p.a_off) / p.a_ld : 0) * p.as_t : -1;
    }
    float acc[G8R_M];
    for (int r = 0; r < G8R_M; ++r) acc[r] = 0.0f;

    for (int k0 = kbeg; k0 < kend; k0 += G8R_KC) {
        const int kc = kend - k0 < G8R_KC ? kend - k0 : G8R_KC; /* a multiple of 128 */
        /* this work-item's slice of weights first: its loads are in flight while the
         * activations are staged (one memory latency a chunk, not two) */
        const int mine = j * 128 < kc;
        KP_GLOBAL const uint4 *wp = (KP_GLOBAL const uint4 *)(w + wo + k0 + (mine ? j * 128 : 0));
        uint4 wq[8];
        KP_UNROLL
        for (int q = 0; q < 8; ++q) wq[q] = wv && mine ? wp[q] : KP_UINT4_ZERO;
        const float wsc = wv && mine ? ws[p.ws_off + sr + k0 / 128 + j] * 256.0f : 0.0f; /* 2^8: g8r_decode16 */
        kp_barrier(); /* arow is set; the previous chunk is used up */
        for (int c = lid; c < m * (G8R_KC / 16); c += G8R_NT) {
            const int r = c / (G8R_KC / 16), kk = (c % (G8R_KC / 16)) * 16;
            const kpm_i64 ar = arow[r];
            const uint4 v = ar >= 0 && kk < kc ? *(KP_GLOBAL const uint4 *)(a + ar + k0 + kk) : KP_UINT4_ZERO;
            const kp_u32 q[4] = {v.x, v.y, v.z, v.w};
            kp_u32 h[8];
            for (int i = 0; i < 8; ++i) {
                kp_u32 b0 = (q[i / 2] >> (16 * (i % 2))) & 0xffu, b1 = (q[i / 2] >> (16 * (i % 2) + 8)) & 0xffu;
                h[i] = (kp_as_uint(kp_e4m3_to_f32(b0)) >> 16) | (kp_as_uint(kp_e4m3_to_f32(b1)) & 0xffff0000u);
            }
            KP_LOCAL_MEM uint4 *dst = (KP_LOCAL_MEM uint4 *)(xa + (r * G8R_TPR + kk / 128) * G8R_LDS + kk % 128);
            uint4 d0, d1;
            d0.x = h[0], d0.y = h[1], d0.z = h[2], d0.w = h[3];
            d1.x = h[4], d1.y = h[5], d1.z = h[6], d1.w = h[7];
            dst[0] = d0, dst[1] = d1;
        }
        for (int c = lid; c < m * G8R_TPR; c += G8R_NT) {
            const int r = c / G8R_TPR, s = c % G8R_TPR;
            const kpm_i64 sr0 = asrow[r];
            sa[c] = sr0 >= 0 && s * 128 < kc ? as[sr0 + (kpm_i64)(k0 / 128 + s) * p.as_g] : 0.0f;
        }
        kp_barrier();
        if (mine) {
            if (m == 1) { /* T = 1 decode: every expert has one row */
                G8R_SLICE(1)
            } else if (m == 2) {
                G8R_SLICE(2)
            } else if (m <= 4) {
                G8R_SLICE(4)
            } else if (m <= 8) {
                G8R_SLICE(8)
            } else {
                G8R_SLICE(G8R_M)
            }
        }
    }

    /* a weight row's G8R_TPR partials (consecutive work-items), summed in local memory */
    kp_barrier();
    for (int r = 0; r < G8R_M; ++r) red[lid * G8R_M + r] = acc[r];
    kp_barrier();
    for (int q = lid; q < G8R_COLS * G8R_M; q += G8R_NT) {
        const int c = q / G8R_M, r = q % G8R_M;
        float s = 0.0f;
        for (int t = 0; t < G8R_TPR; ++t) s += red[(c * G8R_TPR + t) * G8R_M + r];
        cs[r * (G8R_COLS + 1) + c] = s;
    }
    kp_barrier();
    kpg_rows_finish(cs, G8R_COLS, G8R_M, row0, hi, n0, &p, out, outf, y, pos, tw, part);
}

/* Work-group (x, z): output columns x * G8R_NT .. of row tile z (the rows kernel's tiles). */
KP_KERNEL void KP_LAUNCH_BOUNDS(G8R_NT, 1) kp_grouped_gemm_fp8_reduce(G8_ARGS) {
    (void)a, (void)gather, (void)w, (void)ws, (void)as;
    int row0 = 0, hi = 0;
    const int e = kpg_find(offsets, p.offsets_off, p.mask_m, p.n_exp, p.dense_rows, p.m, 0, 0x7fffffff, G8R_M,
                           kp_group_id(1), &row0, &hi);
    const int ncols = p.mode == KPG_MODE_SWIGLU ? p.n_out : p.n;
    const int n = kp_group_id(0) * G8R_NT + kp_local_id(0);
    if (e < 0 || n >= ncols) return;
    if (hi - row0 > G8R_M) hi = row0 + G8R_M;
    kpg_rows_reduce(row0, hi, n, &p, out, outf, y, pos, tw, part);
}

#endif /* KP_MOE_GEMM_FP8_ROWS_H */
