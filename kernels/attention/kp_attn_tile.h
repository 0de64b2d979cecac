/*
 * kernels/attention/kp_attn_tile.h - the flash-attention tile engine shared by
 * attention_prefill.cl and attention_decode.cl (paged decode and MLA decode).
 *
 * One work-group owns a tile of ATTN_BM query rows that share one KV head: GQA packs
 * the G = h_q / h_kv query heads of a KV head into the rows (row = query * G + head
 * in group), so every K/V tile read from global memory serves all of them. For each
 * tile of ATTN_BN keys:
 *
 *     S = (Q K^T) * scale * log2(e)      masked (causal / window / past the end) to -inf
 *     m' = max(m, rowmax S);  P = exp2(S - m');  l = l * exp2(m - m') + rowsum P
 *     O = O * exp2(m - m') + P V
 *
 * in f32; nothing S x S ever reaches global memory. The epilogue writes O / l and
 * lse = (m + log2 l) * ln 2; a row that saw no key writes 0 and lse +inf (-inf into a
 * split-KV partial, so that it weighs nothing in the combine).
 *
 * Two implementations of the two products, picked at compile time:
 *   portable (default)  Q, K, V tiles in local memory as f32 (-DATTN_LOCAL_F32) or as
 *                       the storage dtype; each work-item accumulates a register
 *                       micro-tile (ATTN_SR x ATTN_SC scores, ATTN_OR x ATTN_OC outputs)
 *   -DATTN_MMA          16-bit dtypes: the tile-MMA fragment API (common/kp_tile_mma.h)
 *                       for Q K^T and P V, one 16-row slice of the tile per 32 lanes:
 *                       PTX mma.sync on NVIDIA (CUDA, and OpenCL with KP_HAS_INLINE_PTX),
 *                       the portable FMA fragments elsewhere (how PoCL tests this path)
 *
 * Compile-time options (the host sets every one; the defaults only serve the build checks):
 *   ATTN_DQK, ATTN_DV   head dims of q/k and of v
 *   ATTN_BM, ATTN_BN    query rows and keys per tile
 *   ATTN_NT             work-items per work-group (1-D)
 *   ATTN_MLA            V is the first ATTN_DV columns of the K tile (no V tile)
 *   ATTN_KV_FP8         decode: e4m3 K/V caches, each element read as e4m3 * its key's
 *                       scale (key_ks / key_vs, filled with key_k / key_v) rounded to the
 *                       storage dtype, so the tiles and the math are those of q's dtype
 *   ATTN_KT             portable path: the K tile transposed in local memory ([d][key]),
 *                       so that neighbouring work-items read neighbouring keys (what
 *                       PoCL's work-item vectoriser needs); under MLA the V tile is then
 *                       a local copy of the latent tile's first ATTN_DV columns
 *
 * Index contents (cu_seqlens, block tables, seq_lens) are never trusted: every one is
 * clamped into range before it addresses memory, so bad contents give wrong numbers,
 * never an out-of-bounds access. Validating them is the CPU backend's and the caller's
 * job (a GPU check would need a host round trip).
 */
#ifndef KP_ATTN_TILE_H
#define KP_ATTN_TILE_H

#include "kp_dialect.h"
#include "common/kp_tile_mma.h"

#if defined(KP_TARGET_OPENCL)
typedef long kp_i64;
#define attn_exp2(x) exp2(x)
#define attn_log2(x) log2(x)
#else
typedef long long kp_i64;
#define attn_exp2(x) exp2f(x)
#define attn_log2(x) log2f(x)
#endif

#define ATTN_LOG2E 1.4426950408889634f
#define ATTN_LN2 0.6931471805599453f

#ifndef ATTN_DQK
#define ATTN_DQK 128
#endif
#ifndef ATTN_DV
#define ATTN_DV ATTN_DQK
#endif
#ifndef ATTN_NT
#define ATTN_NT 128
#endif
#ifndef ATTN_BM
#define ATTN_BM (ATTN_NT / 2)
#endif
#ifndef ATTN_BN
#define ATTN_BN 32
#endif

/* ---- local tile element type ------------------------------------------ */

#if defined(ATTN_MMA)
#if !defined(KP_DTYPE_F16) && !defined(KP_DTYPE_BF16)
#error "ATTN_MMA needs a 16-bit dtype (KP_DTYPE_F16 or KP_DTYPE_BF16)"
#endif
#if ATTN_BM != 16 * (ATTN_NT / KP_MMA_LANES)
#error "ATTN_MMA: ATTN_BM must be 16 rows per 32-lane group"
#endif
#if defined(KP_DTYPE_F16)
#define ATTN_MMA_OP kp_mma_16x8x16_f16
#define attn_to_mma_(x) kp_f32_to_f16(x)
#else
#define ATTN_MMA_OP kp_mma_16x8x16_bf16
#define attn_to_mma_(x) kp_f32_to_bf16(x)
#endif
#endif

#if defined(ATTN_LOCAL_F32) && !defined(ATTN_MMA)
typedef float attn_lt;
#define ATTN_LT_FROM_GLOBAL(g, i) kp_load((g), (i))
#define ATTN_LT_GET(p, i) ((p)[i])
#define ATTN_LT_ZERO 0.0f
#define ATTN_PAD 1 /* odd row length: no bank conflicts on column walks */
#else
typedef kp_storage_t attn_lt; /* raw copies, converted when read */
#define ATTN_LT_FROM_GLOBAL(g, i) ((g)[i])
#define ATTN_LT_GET(p, i) kp_load_l((p), (i))
#if defined(KP_DTYPE_F32)
#define ATTN_LT_ZERO 0.0f
#define ATTN_PAD 1
#else
#define ATTN_LT_ZERO ((kp_u16)0)
#define ATTN_PAD 8 /* rows 16-byte aligned: ldmatrix */
#endif
#endif

/* K/V element sources: the storage dtype, or e4m3 bytes dequantized on the way into the
 * tile (ATTN_KV_FP8), rounded to the storage dtype whatever the tile's type. */
#if defined(ATTN_KV_FP8)
#include "common/kp_fp8.h"
typedef unsigned char attn_kv_t;
#if defined(KP_DTYPE_BF16)
#define ATTN_DQ_STORE_(x) kp_f32_to_bf16(x)
#define ATTN_DQ_ROUND_(x) kp_bf16_to_f32(kp_f32_to_bf16(x))
#elif defined(KP_DTYPE_F16)
#define ATTN_DQ_STORE_(x) kp_f32_to_f16(x)
#define ATTN_DQ_ROUND_(x) kp_f16_to_f32(kp_f32_to_f16(x))
#else
#define ATTN_DQ_STORE_(x) (x)
#define ATTN_DQ_ROUND_(x) (x)
#endif
#if defined(ATTN_LOCAL_F32) && !defined(ATTN_MMA)
#define ATTN_LT_FROM_FP8(g, i, s) ATTN_DQ_ROUND_(kp_e4m3_to_f32((g)[i]) * (s))
#else
#define ATTN_LT_FROM_FP8(g, i, s) ATTN_DQ_STORE_(kp_e4m3_to_f32((g)[i]) * (s))
#endif
#define ATTN_KV_LOAD(g, i, s) ATTN_LT_FROM_FP8(g, i, s)
#define ATTN_FP8_PARAMS , KP_LOCAL_MEM float *key_ks, KP_LOCAL_MEM float *key_vs
#define ATTN_FP8_ARGS , key_ks, key_vs
#else
typedef kp_storage_t attn_kv_t;
#define ATTN_KV_LOAD(g, i, s) ATTN_LT_FROM_GLOBAL(g, i)
#define ATTN_FP8_PARAMS
#define ATTN_FP8_ARGS
#endif

#if defined(ATTN_KT) && defined(ATTN_MMA)
#error "ATTN_KT is for the portable path"
#endif
#define ATTN_KLD (ATTN_DQK + ATTN_PAD)
#define ATTN_KTLD (ATTN_BN + 1)
#if defined(ATTN_KT)
#define ATTN_K_ELEMS (ATTN_DQK * ATTN_KTLD)
#else
#define ATTN_K_ELEMS (ATTN_BN * ATTN_KLD)
#endif
#if defined(ATTN_MLA) && !defined(ATTN_KT)
#define ATTN_VLD ATTN_KLD
#else
#define ATTN_VLD (ATTN_DV + ATTN_PAD)
#endif
#define ATTN_SLD (ATTN_BN + 1)
#define ATTN_PLD (ATTN_BN + 8)  /* MMA: P as 16-bit, A operand */
#define ATTN_VTLD (ATTN_BN + 8) /* MMA: V transposed, B operand */

/* Work-item grids of the portable products. */
#define ATTN_STC 16
#define ATTN_STR (ATTN_NT / ATTN_STC)
#define ATTN_SR (ATTN_BM / ATTN_STR)
#define ATTN_SC (ATTN_BN / ATTN_STC)
#define ATTN_OTC 32
#define ATTN_OTR (ATTN_NT / ATTN_OTC)
#define ATTN_OR (ATTN_BM / ATTN_OTR)
#define ATTN_OC (ATTN_DV / ATTN_OTC)

#if ATTN_NT % 32 != 0 || ATTN_BN % 16 != 0 || ATTN_DV % 32 != 0 || ATTN_DQK % 16 != 0
#error "attention tile: ATTN_NT % 32, ATTN_BN % 16, ATTN_DV % 32 and ATTN_DQK % 16 must be 0"
#endif
#if !defined(ATTN_MMA) && (ATTN_BM % ATTN_STR != 0 || ATTN_BM % ATTN_OTR != 0)
#error "attention tile: ATTN_BM must be a multiple of ATTN_NT / 16"
#endif

#if defined(ATTN_MMA)
#define ATTN_OACC (ATTN_DV / 8)
#else
#define ATTN_OACC (ATTN_OR * ATTN_OC)
#endif

/* The per-work-item output accumulators. */
typedef struct attn_acc {
#if defined(ATTN_MMA)
    kp_mma_acc f[ATTN_OACC];
#else
    float x[ATTN_OACC];
#endif
} attn_acc;

/* Local memory of one work-group; every kernel declares exactly these (the host's
 * fit check in backends/opencl/ops/opencl_attention_common.c mirrors the sizes). */
#if defined(ATTN_MLA) && !defined(ATTN_KT)
#define ATTN_V_ELEMS 1
#else
#define ATTN_V_ELEMS (ATTN_BN * ATTN_VLD)
#endif
#if defined(ATTN_MMA)
#define ATTN_P_ELEMS (ATTN_BM * ATTN_PLD)
#define ATTN_VT_ELEMS (ATTN_DV * ATTN_VTLD)
#else
#define ATTN_P_ELEMS 1
#define ATTN_VT_ELEMS 1
#endif

#define ATTN_DECLARE_LOCALS()                                        \
    KP_LOCAL(attn_lt, qs, ATTN_BM * ATTN_KLD);                       \
    KP_LOCAL(attn_lt, ks, ATTN_K_ELEMS);                             \
    KP_LOCAL(attn_lt, vs, ATTN_V_ELEMS);                             \
    KP_LOCAL(float, ss, ATTN_BM * ATTN_SLD);                         \
    KP_LOCAL(kp_u16, ps, ATTN_P_ELEMS);                              \
    KP_LOCAL(kp_u16, vts, ATTN_VT_ELEMS);                            \
    KP_LOCAL(kp_i64, row_q, ATTN_BM);   /* q row offset, -1: none */ \
    KP_LOCAL(kp_i64, row_o, ATTN_BM);   /* out row offset, -1: none */ \
    KP_LOCAL(kp_i64, row_lse, ATTN_BM); /* lse index, -1: none */    \
    KP_LOCAL(int, row_lo, ATTN_BM);     /* visible keys [lo, hi] */   \
    KP_LOCAL(int, row_hi, ATTN_BM);                                  \
    KP_LOCAL(float, row_m, ATTN_BM);                                 \
    KP_LOCAL(float, row_l, ATTN_BM);                                 \
    KP_LOCAL(float, row_a, ATTN_BM);                                 \
    KP_LOCAL(kp_i64, key_k, ATTN_BN);   /* k row offset, -1: none */ \
    KP_LOCAL(kp_i64, key_v, ATTN_BN)

#define ATTN_LOCAL_ARGS qs, ks, vs, ss, ps, vts, row_q, row_o, row_lse, row_lo, row_hi, row_m, row_l, row_a, key_k, key_v
#define ATTN_LOCAL_PARAMS                                                                                     \
    KP_LOCAL_MEM attn_lt *qs, KP_LOCAL_MEM attn_lt *ks, KP_LOCAL_MEM attn_lt *vs, KP_LOCAL_MEM float *ss,    \
        KP_LOCAL_MEM kp_u16 *ps, KP_LOCAL_MEM kp_u16 *vts, KP_LOCAL_MEM kp_i64 *row_q,                      \
        KP_LOCAL_MEM kp_i64 *row_o, KP_LOCAL_MEM kp_i64 *row_lse, KP_LOCAL_MEM int *row_lo,                 \
        KP_LOCAL_MEM int *row_hi, KP_LOCAL_MEM float *row_m, KP_LOCAL_MEM float *row_l,                     \
        KP_LOCAL_MEM float *row_a, KP_LOCAL_MEM kp_i64 *key_k, KP_LOCAL_MEM kp_i64 *key_v

/* Visible key range of aligned query position a (= i + len_k - len_q) in a sequence of
 * len_k keys: [lo, hi], empty when lo > hi. */
KP_FN void attn_key_range(int a, int len_k, int causal, int wl, int wr, int *lo, int *hi) {
    int l = 0, h = len_k - 1;
    if (causal && a < h) h = a;
    if (wr >= 0 && a + wr < h) h = a + wr;
    if (wl >= 0 && a - wl > l) l = a - wl;
    *lo = l;
    *hi = h;
}

/* ---- phase 1: the Q tile and the row state (after row_* are filled) ---- */

KP_FN void attn_begin(KP_GLOBAL const kp_storage_t *q, attn_acc *acc, ATTN_LOCAL_PARAMS) {
    int lid = kp_local_id(0);
    for (int e = lid; e < ATTN_BM * ATTN_DQK; e += ATTN_NT) {
        int r = e / ATTN_DQK, c = e % ATTN_DQK;
        kp_i64 off = row_q[r];
        qs[r * ATTN_KLD + c] = off >= 0 ? ATTN_LT_FROM_GLOBAL(q, off + c) : ATTN_LT_ZERO;
    }
    for (int r = lid; r < ATTN_BM; r += ATTN_NT) {
        row_m[r] = -KP_INFINITY;
        row_l[r] = 0.0f;
    }
#if defined(ATTN_MMA)
    for (int i = 0; i < ATTN_OACC; ++i) kp_mma_acc_zero(&acc->f[i]);
#else
    for (int i = 0; i < ATTN_OACC; ++i) acc->x[i] = 0.0f;
#endif
    (void)ps, (void)vts, (void)vs, (void)ks, (void)ss, (void)row_o, (void)row_lse, (void)row_lo, (void)row_hi;
    (void)row_a, (void)key_k, (void)key_v;
}

/* ---- phase 2: one key tile (key_k / key_v filled, keys n0 .. n0 + nvalid - 1) ---- */

KP_FN void attn_tile(KP_GLOBAL const attn_kv_t *k, KP_GLOBAL const attn_kv_t *v, int n0, int nvalid,
                     float scale_log2, attn_acc *acc, ATTN_LOCAL_PARAMS ATTN_FP8_PARAMS) {
    int lid = kp_local_id(0);
    /* K (and V) tile: rows past nvalid are zero, so that 0 * V stays 0 */
    for (int e = lid; e < ATTN_BN * ATTN_DQK; e += ATTN_NT) {
        int r = e / ATTN_DQK, c = e % ATTN_DQK;
        kp_i64 off = r < nvalid ? key_k[r] : -1;
#if defined(ATTN_KT)
        ks[c * ATTN_KTLD + r] = off >= 0 ? ATTN_KV_LOAD(k, off + c, key_ks[r]) : ATTN_LT_ZERO;
#else
        ks[r * ATTN_KLD + c] = off >= 0 ? ATTN_KV_LOAD(k, off + c, key_ks[r]) : ATTN_LT_ZERO;
#endif
    }
#if !defined(ATTN_MLA)
    for (int e = lid; e < ATTN_BN * ATTN_DV; e += ATTN_NT) {
        int r = e / ATTN_DV, c = e % ATTN_DV;
        kp_i64 off = r < nvalid ? key_v[r] : -1;
        vs[r * ATTN_VLD + c] = off >= 0 ? ATTN_KV_LOAD(v, off + c, key_vs[r]) : ATTN_LT_ZERO;
    }
#endif
    kp_barrier();
#if defined(ATTN_MLA) && defined(ATTN_KT)
    for (int e = lid; e < ATTN_BN * ATTN_DV; e += ATTN_NT) {
        int r = e / ATTN_DV, c = e % ATTN_DV;
        vs[r * ATTN_VLD + c] = ks[c * ATTN_KTLD + r];
    }
    kp_barrier();
#endif

    /* S = Q K^T, scaled and masked, into ss */
#if defined(ATTN_MMA)
    {
        int lane = kp_mma_lane(), w = lid / KP_MMA_LANES, g = lane / 4, t = lane % 4;
        /* V^T for the P V product (from the V tile, or from the latent K tile under MLA) */
        for (int e = lid; e < ATTN_BN * ATTN_DV; e += ATTN_NT) {
            int r = e / ATTN_DV, c = e % ATTN_DV;
#if defined(ATTN_MLA)
            vts[c * ATTN_VTLD + r] = ks[r * ATTN_KLD + c];
#else
            vts[c * ATTN_VTLD + r] = vs[r * ATTN_VLD + c];
#endif
        }
        kp_mma_a fa;
        kp_mma_b fb;
        for (int nb = 0; nb < ATTN_BN / 8; ++nb) {
            kp_mma_acc sacc;
            kp_mma_acc_zero(&sacc);
            for (int k0 = 0; k0 < ATTN_DQK; k0 += 16) {
                kp_mma_load_a(&fa, qs + w * 16 * ATTN_KLD + k0, ATTN_KLD, lane);
                kp_mma_load_b(&fb, ks + nb * 8 * ATTN_KLD + k0, ATTN_KLD, lane);
                ATTN_MMA_OP(&sacc, &fa, &fb);
            }
            for (int i = 0; i < 4; ++i) {
                int r = w * 16 + g + (i / 2) * 8, c = nb * 8 + 2 * t + (i % 2), j = n0 + c;
                int vis = c < nvalid && j >= row_lo[r] && j <= row_hi[r];
                ss[r * ATTN_SLD + c] = vis ? sacc.x[i] * scale_log2 : -KP_INFINITY;
            }
        }
    }
#else
    {
        int tr = lid / ATTN_STC, tc = lid % ATTN_STC;
        float s[ATTN_SR * ATTN_SC];
        for (int i = 0; i < ATTN_SR * ATTN_SC; ++i) s[i] = 0.0f;
        for (int kk = 0; kk < ATTN_DQK; ++kk) {
            float a[ATTN_SR], b[ATTN_SC];
            for (int i = 0; i < ATTN_SR; ++i) a[i] = ATTN_LT_GET(qs, (tr + ATTN_STR * i) * ATTN_KLD + kk);
#if defined(ATTN_KT)
            for (int j = 0; j < ATTN_SC; ++j) b[j] = ATTN_LT_GET(ks, kk * ATTN_KTLD + tc + ATTN_STC * j);
#else
            for (int j = 0; j < ATTN_SC; ++j) b[j] = ATTN_LT_GET(ks, (tc + ATTN_STC * j) * ATTN_KLD + kk);
#endif
            for (int i = 0; i < ATTN_SR; ++i)
                for (int j = 0; j < ATTN_SC; ++j) s[i * ATTN_SC + j] = kp_fmaf(a[i], b[j], s[i * ATTN_SC + j]);
        }
        for (int i = 0; i < ATTN_SR; ++i)
            for (int j = 0; j < ATTN_SC; ++j) {
                int r = tr + ATTN_STR * i, c = tc + ATTN_STC * j, key = n0 + c;
                int vis = c < nvalid && key >= row_lo[r] && key <= row_hi[r];
                ss[r * ATTN_SLD + c] = vis ? s[i * ATTN_SC + j] * scale_log2 : -KP_INFINITY;
            }
    }
#endif
    kp_barrier();

    /* online softmax, one work-item per row */
    for (int r = lid; r < ATTN_BM; r += ATTN_NT) {
        float m_old = row_m[r], mx = m_old;
        for (int c = 0; c < ATTN_BN; ++c) mx = kp_fmaxf(mx, ss[r * ATTN_SLD + c]);
        float alpha = 1.0f, sum = 0.0f;
        if (mx == -KP_INFINITY) {
            for (int c = 0; c < ATTN_BN; ++c) ss[r * ATTN_SLD + c] = 0.0f;
        } else {
            alpha = attn_exp2(m_old - mx); /* m_old = -inf: 0 */
            for (int c = 0; c < ATTN_BN; ++c) {
                float p = attn_exp2(ss[r * ATTN_SLD + c] - mx);
                ss[r * ATTN_SLD + c] = p;
                sum += p;
            }
            row_m[r] = mx;
        }
        row_l[r] = row_l[r] * alpha + sum;
        row_a[r] = alpha;
#if defined(ATTN_MMA)
        for (int c = 0; c < ATTN_BN; ++c) ps[r * ATTN_PLD + c] = attn_to_mma_(ss[r * ATTN_SLD + c]);
#endif
    }
    kp_barrier();

    /* O = O * alpha + P V */
#if defined(ATTN_MMA)
    {
        int lane = kp_mma_lane(), w = lid / KP_MMA_LANES, g = lane / 4;
        float a0 = row_a[w * 16 + g], a1 = row_a[w * 16 + g + 8];
        for (int nb = 0; nb < ATTN_OACC; ++nb) {
            acc->f[nb].x[0] *= a0, acc->f[nb].x[1] *= a0;
            acc->f[nb].x[2] *= a1, acc->f[nb].x[3] *= a1;
        }
        kp_mma_a fa;
        kp_mma_b fb;
        for (int k0 = 0; k0 < ATTN_BN; k0 += 16) {
            kp_mma_load_a(&fa, ps + w * 16 * ATTN_PLD + k0, ATTN_PLD, lane);
            for (int nb = 0; nb < ATTN_OACC; ++nb) {
                kp_mma_load_b(&fb, vts + nb * 8 * ATTN_VTLD + k0, ATTN_VTLD, lane);
                ATTN_MMA_OP(&acc->f[nb], &fa, &fb);
            }
        }
    }
#else
    {
        int tr = lid / ATTN_OTC, tc = lid % ATTN_OTC;
        for (int i = 0; i < ATTN_OR; ++i) {
            float al = row_a[tr + ATTN_OTR * i];
            for (int j = 0; j < ATTN_OC; ++j) acc->x[i * ATTN_OC + j] *= al;
        }
        for (int c = 0; c < nvalid; ++c) {
            float p[ATTN_OR], vv[ATTN_OC];
            for (int i = 0; i < ATTN_OR; ++i) p[i] = ss[(tr + ATTN_OTR * i) * ATTN_SLD + c];
#if defined(ATTN_MLA) && !defined(ATTN_KT)
            for (int j = 0; j < ATTN_OC; ++j) vv[j] = ATTN_LT_GET(ks, c * ATTN_KLD + tc + ATTN_OTC * j);
#else
            for (int j = 0; j < ATTN_OC; ++j) vv[j] = ATTN_LT_GET(vs, c * ATTN_VLD + tc + ATTN_OTC * j);
#endif
            for (int i = 0; i < ATTN_OR; ++i)
                for (int j = 0; j < ATTN_OC; ++j) acc->x[i * ATTN_OC + j] = kp_fmaf(p[i], vv[j], acc->x[i * ATTN_OC + j]);
        }
    }
#endif
    kp_barrier(); /* the next tile overwrites ks, vs, ss */
    (void)qs, (void)row_q, (void)row_o, (void)row_lse, (void)v;
}

/* ---- phase 3: epilogue ---------------------------------------------------- */
/* partial == 0: out (storage dtype) gets O / l, lse (f32) gets the row's lse or +inf.
 * partial != 0: part (f32) gets O / l, part_lse the row's lse or -inf (a split-KV partial). */

KP_FN void attn_store_(KP_GLOBAL kp_storage_t *out, KP_GLOBAL float *part, int partial, kp_i64 off, float val) {
    if (partial) part[off] = val;
    else kp_store(out, off, val);
}

KP_FN void attn_end(KP_GLOBAL kp_storage_t *out, KP_GLOBAL float *part, KP_GLOBAL float *lse, int partial,
                    const attn_acc *acc, ATTN_LOCAL_PARAMS) {
    int lid = kp_local_id(0);
    kp_barrier(); /* row_l / row_m of a tile that saw no key tile */
#if defined(ATTN_MMA)
    {
        int lane = kp_mma_lane(), w = lid / KP_MMA_LANES, g = lane / 4, t = lane % 4;
        for (int h = 0; h < 2; ++h) {
            int r = w * 16 + g + 8 * h;
            kp_i64 off = row_o[r];
            if (off < 0) continue;
            float l = row_l[r], inv = l > 0.0f ? 1.0f / l : 0.0f;
            for (int nb = 0; nb < ATTN_OACC; ++nb) {
                attn_store_(out, part, partial, off + nb * 8 + 2 * t, acc->f[nb].x[2 * h] * inv);
                attn_store_(out, part, partial, off + nb * 8 + 2 * t + 1, acc->f[nb].x[2 * h + 1] * inv);
            }
        }
    }
#else
    {
        int tr = lid / ATTN_OTC, tc = lid % ATTN_OTC;
        for (int i = 0; i < ATTN_OR; ++i) {
            int r = tr + ATTN_OTR * i;
            kp_i64 off = row_o[r];
            if (off < 0) continue;
            float l = row_l[r], inv = l > 0.0f ? 1.0f / l : 0.0f;
            for (int j = 0; j < ATTN_OC; ++j)
                attn_store_(out, part, partial, off + tc + ATTN_OTC * j, acc->x[i * ATTN_OC + j] * inv);
        }
    }
#endif
    for (int r = lid; r < ATTN_BM; r += ATTN_NT) {
        kp_i64 li = row_lse[r];
        if (li < 0) continue;
        float l = row_l[r];
        lse[li] = l > 0.0f ? (row_m[r] + attn_log2(l)) * ATTN_LN2 : (partial ? -KP_INFINITY : KP_INFINITY);
    }
    kp_barrier(); /* row_* are refilled for the next query tile */
    (void)qs, (void)ks, (void)vs, (void)ss, (void)ps, (void)vts, (void)row_q, (void)row_lo, (void)row_hi;
    (void)row_a, (void)key_k, (void)key_v;
}

#endif /* KP_ATTN_TILE_H */
