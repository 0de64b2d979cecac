/*
 * backends/cpu/cpu_attention_avx512.c — the attention micro-kernels in AVX-512
 * (cpu_attention.h has the contract), compiled for their target with
 * __attribute__((target)); chosen only when cpuid reports AVX-512 F/BW/VL/DQ.
 */
#include "cpu_attention.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <math.h>

/* ------------------------------------------------------------------------ */
/* AVX-512 micro-kernels                                                     */
/* ------------------------------------------------------------------------ */

#define KP_ATT512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define KP_ATT512_INLINE static inline __attribute__((always_inline)) KP_ATT512

/* 2^x for x <= 0 (and -inf -> 0): x = i + f, f in [-1/2, 1/2], 2^f by its degree-7
 * Taylor polynomial (relative error < 1e-8), scaled by 2^i with vscalefps. */
KP_ATT512_INLINE __m512 exp2_512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-160.0f));
    __m512 i = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, i);
    __m512 y = _mm512_set1_ps(1.525273380405984e-05f);
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.5403530393381608e-04f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.3333558146428443e-03f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(9.618129107628477e-03f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(5.550410866482158e-02f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(2.402265069591007e-01f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(6.931471805599453e-01f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, i);
}

/* NK keys x NV vectors of 16 rows, accumulated over the whole head dim. */
KP_ATT512_INLINE void qk_tile512(const float *qt, int64_t ldq, int d, const float *const *kr, float *st,
                                 int64_t ldst, const int NK, const int NV) {
    __m512 acc[8][4];
    const float *kp[8];
#pragma GCC unroll 8
    for (int n = 0; n < NK; n++) {
        kp[n] = kr[n];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[n][v] = _mm512_setzero_ps();
    }
    for (int k = 0; k < d; k++) {
        __m512 q[4];
        const float *qk = qt + k * ldq;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) q[v] = _mm512_loadu_ps(qk + 16 * v);
#pragma GCC unroll 8
        for (int n = 0; n < NK; n++) {
            __m512 b = _mm512_set1_ps(kp[n][k]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[n][v] = _mm512_fmadd_ps(b, q[v], acc[n][v]);
        }
    }
#pragma GCC unroll 8
    for (int n = 0; n < NK; n++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_storeu_ps(st + n * ldst + 16 * v, acc[n][v]);
}

#define QK_CASES(NV)                                                                     \
    switch (nk - n) {                                                                    \
    case 1: qk_tile512(q, ldq, d, krow + n, s, ldst, 1, NV); break;                      \
    case 2: qk_tile512(q, ldq, d, krow + n, s, ldst, 2, NV); break;                      \
    case 3: qk_tile512(q, ldq, d, krow + n, s, ldst, 3, NV); break;                      \
    case 4: qk_tile512(q, ldq, d, krow + n, s, ldst, 4, NV); break;                      \
    case 5: qk_tile512(q, ldq, d, krow + n, s, ldst, 5, NV); break;                      \
    case 6: qk_tile512(q, ldq, d, krow + n, s, ldst, 6, NV); break;                      \
    case 7: qk_tile512(q, ldq, d, krow + n, s, ldst, 7, NV); break;                      \
    default: qk_tile512(q, ldq, d, krow + n, s, ldst, 8, NV); break;                     \
    }

/* Lane i of the result is the sum of v[i]'s 16 lanes. */
KP_ATT512_INLINE __m512 hsum16_512(const __m512 *v) {
    __m512 a[8], b[4];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* 128-bit lane L of b[i] holds 4 partial sums of v[4i + L] */
    __m512 c0 = _mm512_add_ps(_mm512_unpacklo_ps(b[0], b[1]), _mm512_unpackhi_ps(b[0], b[1]));
    __m512 c1 = _mm512_add_ps(_mm512_unpacklo_ps(b[2], b[3]), _mm512_unpackhi_ps(b[2], b[3]));
    __m512d c0d = _mm512_castps_pd(c0), c1d = _mm512_castps_pd(c1);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(c0d, c1d)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(c0d, c1d)));
    /* lane 4L + e = sum of v[4e + L] */
}

/* Few rows (decode): S for 4 keys x 4 rows as dot products along the head dim,
 * reduced together. Keys past nk and rows past m repeat the last valid one; their
 * results land in padding (rows) or are not stored (keys). */
KP_ATT512 static void qk_dot512(const float *qr, int d, int m, const float *const *krow, int nk, float *st,
                                int64_t ldst) {
    const int full = d & ~15;
    const __mmask16 tail = (__mmask16)((1u << (d - full)) - 1);
    for (int r0 = 0; r0 < m; r0 += 4) {
        const float *q[4];
        for (int r = 0; r < 4; r++) q[r] = qr + (int64_t)(r0 + r < m ? r0 + r : m - 1) * d;
        for (int n0 = 0; n0 < nk; n0 += 4) {
            const float *k[4];
            for (int n = 0; n < 4; n++) k[n] = krow[n0 + n < nk ? n0 + n : nk - 1];
            __m512 acc[16]; /* acc[r * 4 + n] */
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
            for (int c = 0; c < full; c += 16) {
                __m512 kv[4];
#pragma GCC unroll 4
                for (int n = 0; n < 4; n++) kv[n] = _mm512_loadu_ps(k[n] + c);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                    __m512 qv = _mm512_loadu_ps(q[r] + c);
#pragma GCC unroll 4
                    for (int n = 0; n < 4; n++) acc[r * 4 + n] = _mm512_fmadd_ps(qv, kv[n], acc[r * 4 + n]);
                }
            }
            if (tail) {
                __m512 kv[4];
#pragma GCC unroll 4
                for (int n = 0; n < 4; n++) kv[n] = _mm512_maskz_loadu_ps(tail, k[n] + full);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                    __m512 qv = _mm512_maskz_loadu_ps(tail, q[r] + full);
#pragma GCC unroll 4
                    for (int n = 0; n < 4; n++) acc[r * 4 + n] = _mm512_fmadd_ps(qv, kv[n], acc[r * 4 + n]);
                }
            }
            __m512 sums = hsum16_512(acc); /* lane 4n + r = acc[r * 4 + n] */
            for (int n = 0; n < 4 && n0 + n < nk; n++) {
                __m128 row = n == 0   ? _mm512_castps512_ps128(sums)
                             : n == 1 ? _mm512_extractf32x4_ps(sums, 1)
                             : n == 2 ? _mm512_extractf32x4_ps(sums, 2)
                                      : _mm512_extractf32x4_ps(sums, 3);
                _mm_storeu_ps(st + (int64_t)(n0 + n) * ldst + r0, row);
            }
        }
    }
}

KP_ATT512 static void qk_512(const float *qt, const float *qr, int d, int m, int mpad, const float *const *krow,
                             int nk, float *st, int64_t ldst) {
    if (m <= 8) {
        qk_dot512(qr, d, m, krow, nk, st, ldst);
        return;
    }
    const int64_t ldq = mpad;
    int r = 0;
    for (; r + 64 <= mpad; r += 64) /* 6 keys x 4 vectors: 24 accumulators */
        for (int n = 0; n < nk; n += 6) {
            const float *q = qt + r;
            float *s = st + n * ldst + r;
            switch (nk - n) {
            case 1: qk_tile512(q, ldq, d, krow + n, s, ldst, 1, 4); break;
            case 2: qk_tile512(q, ldq, d, krow + n, s, ldst, 2, 4); break;
            case 3: qk_tile512(q, ldq, d, krow + n, s, ldst, 3, 4); break;
            case 4: qk_tile512(q, ldq, d, krow + n, s, ldst, 4, 4); break;
            case 5: qk_tile512(q, ldq, d, krow + n, s, ldst, 5, 4); break;
            default: qk_tile512(q, ldq, d, krow + n, s, ldst, 6, 4); break;
            }
        }
    for (; r + 32 <= mpad; r += 32) /* 8 keys x 2 vectors */
        for (int n = 0; n < nk; n += 8) {
            const float *q = qt + r;
            float *s = st + n * ldst + r;
            QK_CASES(2)
        }
    for (; r < mpad; r += 16) /* 8 keys x 1 vector */
        for (int n = 0; n < nk; n += 8) {
            const float *q = qt + r;
            float *s = st + n * ldst + r;
            QK_CASES(1)
        }
}

KP_ATT512 static void softmax_512(float *st, int64_t ldst, int nk, int m, int64_t j0, const int32_t *lo,
                                  const int32_t *hi, float *mx, float *l, float *alpha) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const __m512i base = _mm512_set1_epi32((int32_t)j0);
    for (int r = 0; r < m; r += 16) {
        /* key n of the block is visible to a row when rlo <= n < rhi */
        __m512i rlo = _mm512_sub_epi32(_mm512_loadu_si512(lo + r), base);
        __m512i rhi = _mm512_sub_epi32(_mm512_loadu_si512(hi + r), base);
        __m512 bm = ninf;
        for (int n = 0; n < nk; n++) {
            __m512i vn = _mm512_set1_epi32(n);
            __mmask16 vis = _mm512_cmple_epi32_mask(rlo, vn) & _mm512_cmpgt_epi32_mask(rhi, vn);
            bm = _mm512_mask_max_ps(bm, vis, bm, _mm512_loadu_ps(st + n * ldst + r));
        }
        __m512 mold = _mm512_loadu_ps(mx + r);
        __m512 mnew = _mm512_max_ps(mold, bm);
        __mmask16 live = _mm512_cmp_ps_mask(mnew, ninf, _CMP_NEQ_OQ);
        __m512 sum = _mm512_setzero_ps();
        for (int n = 0; n < nk; n++) {
            __m512i vn = _mm512_set1_epi32(n);
            __mmask16 vis = _mm512_cmple_epi32_mask(rlo, vn) & _mm512_cmpgt_epi32_mask(rhi, vn) & live;
            float *s = st + n * ldst + r;
            __m512 p = _mm512_maskz_mov_ps(vis, exp2_512(_mm512_sub_ps(_mm512_loadu_ps(s), mnew)));
            _mm512_storeu_ps(s, p);
            sum = _mm512_add_ps(sum, p);
        }
        __m512 a = _mm512_mask_blend_ps(live, _mm512_set1_ps(1.0f), exp2_512(_mm512_sub_ps(mold, mnew)));
        _mm512_storeu_ps(alpha + r, a);
        _mm512_storeu_ps(l + r, _mm512_fmadd_ps(_mm512_loadu_ps(l + r), a, sum));
        _mm512_storeu_ps(mx + r, mnew);
    }
}

/* NR rows x 64 columns of O (masked at the dv edge), over the block's keys. */
KP_ATT512_INLINE void pv_tile512(const float *p, int64_t ldp, const float *const *vr, int nk, float *o, int64_t ldo,
                                 const __mmask16 *mk, const float *alpha, const int NR) {
    __m512 acc[6][4];
#pragma GCC unroll 6
    for (int i = 0; i < NR; i++) {
        __m512 a = _mm512_set1_ps(alpha[i]);
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) acc[i][v] = _mm512_mul_ps(a, _mm512_maskz_loadu_ps(mk[v], o + i * ldo + 16 * v));
    }
    for (int n = 0; n < nk; n++) {
        const float *vn = vr[n], *pn = p + n * ldp;
        __m512 vv[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) vv[v] = _mm512_maskz_loadu_ps(mk[v], vn + 16 * v);
#pragma GCC unroll 6
        for (int i = 0; i < NR; i++) {
            __m512 b = _mm512_set1_ps(pn[i]);
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) acc[i][v] = _mm512_fmadd_ps(b, vv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < NR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) _mm512_mask_storeu_ps(o + i * ldo + 16 * v, mk[v], acc[i][v]);
}

KP_ATT512 static void pv_512(const float *p, int64_t ldp, const float *const *vrow, int nk, float *o, int64_t ldo,
                             int m, int dv, const float *alpha) {
    const float *vr[CPU_ATT_NB];
    for (int j = 0; j < dv; j += 64) {
        __mmask16 mk[4];
        for (int v = 0; v < 4; v++) {
            int left = dv - j - 16 * v;
            mk[v] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
        }
        for (int n = 0; n < nk; n++) vr[n] = vrow[n] + j;
        for (int r = 0; r < m; r += 6) {
            const float *pr = p + r;
            float *orow = o + r * ldo + j;
            switch (m - r) {
            case 1: pv_tile512(pr, ldp, vr, nk, orow, ldo, mk, alpha + r, 1); break;
            case 2: pv_tile512(pr, ldp, vr, nk, orow, ldo, mk, alpha + r, 2); break;
            case 3: pv_tile512(pr, ldp, vr, nk, orow, ldo, mk, alpha + r, 3); break;
            case 4: pv_tile512(pr, ldp, vr, nk, orow, ldo, mk, alpha + r, 4); break;
            case 5: pv_tile512(pr, ldp, vr, nk, orow, ldo, mk, alpha + r, 5); break;
            default: pv_tile512(pr, ldp, vr, nk, orow, ldo, mk, alpha + r, 6); break;
            }
        }
    }
}


/* ---- decode-sized items straight off 16-bit rows ---- */

/* 16 f16 (BF: bf16) at p -> f32, lanes past the mask 0 (never read). */
KP_ATT512_INLINE __m512 load16_512(const int BF, const uint16_t *p, __mmask16 m) {
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return BF ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)) : _mm512_cvtph_ps(h);
}

/* RB rows x KB keys (RB * KB <= 16) as dot products along the head dim, each K chunk
 * converted once for all RB rows, reduced together through hsum16_512 (whose lane
 * 4L + e holds the sum of v[4e + L]). */
KP_ATT512_INLINE void qk16_body512(const int BF, const int RB, const int KB, const float *qr, int d, int m,
                                   const void *const *krow, int nk, float *st, int64_t ldst) {
    const int full = d & ~15;
    const __mmask16 tail = (__mmask16)((1u << (d - full)) - 1);
    for (int r0 = 0; r0 < m; r0 += RB) {
        const float *q[16];
        for (int r = 0; r < RB; r++) q[r] = qr + (int64_t)(r0 + r < m ? r0 + r : m - 1) * d;
        for (int n0 = 0; n0 < nk; n0 += KB) {
            const uint16_t *k[16];
            for (int n = 0; n < KB; n++) k[n] = krow[n0 + n < nk ? n0 + n : nk - 1];
            __m512 acc[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
            for (int c = 0; c < full; c += 16) {
                __m512 kv[8];
#pragma GCC unroll 8
                for (int n = 0; n < KB; n++) kv[n] = load16_512(BF, k[n] + c, (__mmask16)0xffff);
#pragma GCC unroll 8
                for (int r = 0; r < RB; r++) {
                    __m512 qv = _mm512_loadu_ps(q[r] + c);
#pragma GCC unroll 8
                    for (int n = 0; n < KB; n++) acc[r * KB + n] = _mm512_fmadd_ps(qv, kv[n], acc[r * KB + n]);
                }
            }
            if (tail)
                for (int n = 0; n < KB; n++) {
                    __m512 kv = load16_512(BF, k[n] + full, tail);
                    for (int r = 0; r < RB; r++)
                        acc[r * KB + n] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q[r] + full), kv, acc[r * KB + n]);
                }
            float sums[16];
            _mm512_storeu_ps(sums, hsum16_512(acc));
            for (int n = 0; n < KB && n0 + n < nk; n++)
                for (int r = 0; r < RB && r0 + r < m; r++) {
                    int i = r * KB + n;
                    st[(int64_t)(n0 + n) * ldst + r0 + r] = sums[4 * (i % 4) + i / 4];
                }
        }
    }
}

#define QK16_512_CASES(BF)                                                                                         \
    switch (m) {                                                                                                   \
    case 1: qk16_body512(BF, 1, 8, qr, d, m, krow, nk, st, ldst); break;                                           \
    case 2: qk16_body512(BF, 2, 8, qr, d, m, krow, nk, st, ldst); break;                                           \
    case 3: qk16_body512(BF, 3, 4, qr, d, m, krow, nk, st, ldst); break;                                           \
    case 4: qk16_body512(BF, 4, 4, qr, d, m, krow, nk, st, ldst); break;                                           \
    case 5: qk16_body512(BF, 5, 2, qr, d, m, krow, nk, st, ldst); break;                                           \
    case 6: qk16_body512(BF, 6, 2, qr, d, m, krow, nk, st, ldst); break;                                           \
    case 7: qk16_body512(BF, 7, 2, qr, d, m, krow, nk, st, ldst); break;                                           \
    default: qk16_body512(BF, 8, 2, qr, d, m, krow, nk, st, ldst); break;                                          \
    }

KP_ATT512 static void qk16_512(kp_dtype dt, const float *qr, int d, int m, const void *const *krow, int nk,
                               float *st, int64_t ldst) {
    if (dt == KP_BF16) QK16_512_CASES(1)
    else QK16_512_CASES(0)
}

/* pv_tile512 over 16-bit V rows: NR rows x 64 columns (masked at the dv edge). */
KP_ATT512_INLINE void pv16_tile512(const int BF, const float *p, int64_t ldp, const void *const *vrow, int64_t j,
                                   int nk, float *o, int64_t ldo, const __mmask16 *mk, const float *alpha,
                                   const int NR) {
    __m512 acc[6][4];
#pragma GCC unroll 6
    for (int i = 0; i < NR; i++) {
        __m512 a = _mm512_set1_ps(alpha[i]);
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) acc[i][v] = _mm512_mul_ps(a, _mm512_maskz_loadu_ps(mk[v], o + i * ldo + 16 * v));
    }
    for (int n = 0; n < nk; n++) {
        const uint16_t *vn = (const uint16_t *)vrow[n] + j;
        const float *pn = p + n * ldp;
        __m512 vv[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) vv[v] = load16_512(BF, vn + 16 * v, mk[v]);
#pragma GCC unroll 6
        for (int i = 0; i < NR; i++) {
            __m512 b = _mm512_set1_ps(pn[i]);
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) acc[i][v] = _mm512_fmadd_ps(b, vv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < NR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) _mm512_mask_storeu_ps(o + i * ldo + 16 * v, mk[v], acc[i][v]);
}

#define PV16_512_CASES(BF)                                                                                         \
    switch (m - r) {                                                                                               \
    case 1: pv16_tile512(BF, pr, ldp, vrow, j, nk, orow, ldo, mk, alpha + r, 1); break;                            \
    case 2: pv16_tile512(BF, pr, ldp, vrow, j, nk, orow, ldo, mk, alpha + r, 2); break;                            \
    case 3: pv16_tile512(BF, pr, ldp, vrow, j, nk, orow, ldo, mk, alpha + r, 3); break;                            \
    case 4: pv16_tile512(BF, pr, ldp, vrow, j, nk, orow, ldo, mk, alpha + r, 4); break;                            \
    case 5: pv16_tile512(BF, pr, ldp, vrow, j, nk, orow, ldo, mk, alpha + r, 5); break;                            \
    default: pv16_tile512(BF, pr, ldp, vrow, j, nk, orow, ldo, mk, alpha + r, 6); break;                           \
    }

KP_ATT512 static void pv16_512(kp_dtype dt, const float *p, int64_t ldp, const void *const *vrow, int nk, float *o,
                               int64_t ldo, int m, int dv, const float *alpha) {
    for (int j = 0; j < dv; j += 64) {
        __mmask16 mk[4];
        for (int v = 0; v < 4; v++) {
            int left = dv - j - 16 * v;
            mk[v] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
        }
        for (int r = 0; r < m; r += 6) {
            const float *pr = p + r;
            float *orow = o + r * ldo + j;
            if (dt == KP_BF16) PV16_512_CASES(1)
            else PV16_512_CASES(0)
        }
    }
}

/* ---- FP8 rows: byte permutes (AVX-512 VBMI) ---- */

#define KP_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi")))
#define KP_VBMI_INLINE static inline __attribute__((always_inline)) KP_VBMI

bool cpu_att_has_vbmi(void) { return __builtin_cpu_supports("avx512vbmi"); }

/* The table's 7-bit lookups held in registers: low and high bytes of h[0..127]. */
typedef struct fp8_regs {
    __m512i lo0, lo1, hi0, hi1;
} fp8_regs;

KP_VBMI_INLINE fp8_regs fp8_regs_load(const cpu_att_fp8_lut *t) {
    fp8_regs r;
    r.lo0 = _mm512_loadu_si512(t->lo), r.lo1 = _mm512_loadu_si512(t->lo + 64);
    r.hi0 = _mm512_loadu_si512(t->hi), r.hi1 = _mm512_loadu_si512(t->hi + 64);
    return r;
}

/* 64 bytes -> the low and high bytes of their 16-bit values (vpermt2b reads an index's
 * low 7 bits, the magnitude: the sign bit is or-ed into the high byte after). */
KP_VBMI_INLINE void fp8_bytes64(__m512i x, const fp8_regs *r, __m512i *lo, __m512i *hi) {
    *lo = _mm512_permutex2var_epi8(r->lo0, x, r->lo1);
    *hi = _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(r->hi0, x, r->hi1), x, _mm512_set1_epi8((char)0x80),
                                    0xf8); /* a | (b & c) */
}

/* idx[k] picks, for output byte k of the interleave, byte i of lo (i) or of hi (64 + i) */
KP_VBMI_INLINE __m512i fp8_words_idx(int first) {
    uint8_t b[64];
    for (int k = 0; k < 64; k++) b[k] = (uint8_t)((k & 1 ? 64 : 0) + first + k / 2);
    return _mm512_loadu_si512(b);
}

KP_VBMI void cpu_att_fp8_16_vbmi(const uint8_t *src, uint16_t *dst, int64_t n, const cpu_att_fp8_lut *t) {
    const fp8_regs r = fp8_regs_load(t);
    const __m512i i0 = fp8_words_idx(0), i1 = fp8_words_idx(32);
    for (int64_t i = 0; i < n; i += 64) {
        int64_t left = n - i;
        __mmask64 km = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
        __m512i lo, hi;
        fp8_bytes64(_mm512_maskz_loadu_epi8(km, src + i), &r, &lo, &hi);
        __mmask32 k0 = (__mmask32)km, k1 = (__mmask32)(km >> 32);
        _mm512_mask_storeu_epi16(dst + i, k0, _mm512_permutex2var_epi8(lo, i0, hi));
        if (k1) _mm512_mask_storeu_epi16(dst + i + 32, k1, _mm512_permutex2var_epi8(lo, i1, hi));
    }
}

KP_VBMI void cpu_att_fp8_f32_vbmi(const uint8_t *src, float *dst, int64_t n, const cpu_att_fp8_lut *t) {
    const fp8_regs r = fp8_regs_load(t);
    const int bf = t->dt == KP_BF16;
    if (t->dt == KP_F32) { /* no 16-bit form: the f32 values gathered */
        for (int64_t i = 0; i < n; i += 16) {
            int64_t left = n - i;
            __mmask16 km = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            __m512i idx = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(km, src + i));
            _mm512_mask_storeu_ps(dst + i, km, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), km, idx, t->f, 4));
        }
        return;
    }
    /* bf16: f32 lane e = [0, 0, lo, hi] straight from the two byte vectors; f16: words, then vcvtph2ps */
    __m512i fi[4], wi[2] = {fp8_words_idx(0), fp8_words_idx(32)};
    for (int q = 0; q < 4; q++) {
        uint8_t b[64];
        for (int k = 0; k < 64; k++) b[k] = (uint8_t)((k & 1 ? 64 : 0) + 16 * q + k / 4);
        fi[q] = _mm512_loadu_si512(b);
    }
    const __mmask64 upper = 0xccccccccccccccccull; /* bytes 2, 3 of each f32 lane */
    for (int64_t i = 0; i < n; i += 64) {
        int64_t left = n - i;
        __mmask64 km = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
        __m512i lo, hi;
        fp8_bytes64(_mm512_maskz_loadu_epi8(km, src + i), &r, &lo, &hi);
        for (int q = 0; q < 4; q++) {
            __mmask16 kq = (__mmask16)(km >> (16 * q));
            if (!kq) break;
            __m512 v;
            if (bf) {
                v = _mm512_castsi512_ps(_mm512_maskz_permutex2var_epi8(upper, lo, fi[q], hi));
            } else {
                __m512i w = _mm512_permutex2var_epi8(lo, wi[q / 2], hi);
                v = _mm512_cvtph_ps(q & 1 ? _mm512_extracti64x4_epi64(w, 1) : _mm512_castsi512_si256(w));
            }
            _mm512_mask_storeu_ps(dst + i + 16 * q, kq, v);
        }
    }
}

/* The AVX-512 level's FP8 decoders: VBMI's where cpuid has it, else AVX2's gathers. */
KP_ATT512 static void fp8_f32_512(const uint8_t *src, float *dst, int64_t n, const cpu_att_fp8_lut *t) {
    if (cpu_att_has_vbmi()) cpu_att_fp8_f32_vbmi(src, dst, n, t);
    else cpu_att_fp8_f32_avx2(src, dst, n, t);
}

KP_ATT512 static void fp8_16_512(const uint8_t *src, uint16_t *dst, int64_t n, const cpu_att_fp8_lut *t) {
    if (cpu_att_has_vbmi()) cpu_att_fp8_16_vbmi(src, dst, n, t);
    else cpu_att_fp8_16_avx2(src, dst, n, t);
}

const cpu_att_kernels cpu_att_kernels_avx512 = {.qk = qk_512,
                                                .softmax = softmax_512,
                                                .pv = pv_512,
                                                .qk16 = qk16_512,
                                                .pv16 = pv16_512,
                                                .fp8_f32 = fp8_f32_512,
                                                .fp8_16 = fp8_16_512};
#endif /* x86 */

