/*
 * backends/cpu/cpu_attention_avx2.c — the attention micro-kernels in AVX2 + FMA
 * (cpu_attention.h has the contract), for x86-64 CPUs without AVX-512. meson
 * compiles this file alone with -mavx2 -mfma -mf16c; it runs only when cpuid
 * reports all three.
 *
 * Register tiles of 12 ymm accumulators, as the GEMM's 6 x 16:
 *   QK^T: 6 keys x 16 query rows (two vectors of q^T, one broadcast key element);
 *         few rows (decode): 4 keys x 2 rows as dot products along the head dim;
 *   PV:   6 rows x 16 columns of O (two vectors of V, one broadcast p).
 * The online softmax runs 8 rows per vector, with a polynomial exp2 in registers.
 * Decode-sized items (<= 8 rows) take qk16/pv16: K and V straight off the f16/bf16
 * cache rows, converted in registers (vcvtph2ps, or a shift for bf16).
 */
#include "cpu_attention.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

/* Lanes [0, n) set (n clamped to 0..8). */
INLINE __m256i lane_mask(int n) {
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(const void *)(m + 8 - n));
}

/* 2^x for x <= 0 (-inf -> 0): x = i + f, f in [-1/2, 1/2], 2^f by its degree-7 Taylor
 * polynomial (relative error < 1e-8), times 2^i through the exponent bits. Results
 * below 2^-125 (no longer a normal float after scaling) are flushed to 0: next to the
 * row maximum's 1 they are nothing. */
INLINE __m256 exp2_avx2(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-127.0f));
    __m256 i = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(x, i);
    __m256 y = _mm256_set1_ps(1.525273380405984e-05f);
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.5403530393381608e-04f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.3333558146428443e-03f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(9.618129107628477e-03f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(5.550410866482158e-02f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(2.402265069591007e-01f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(6.931471805599453e-01f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(i), 23);
    __m256 r = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), e));
    return _mm256_and_ps(r, _mm256_cmp_ps(x, _mm256_set1_ps(-125.0f), _CMP_GE_OQ));
}

/* ---- S^T = K Q^T ---- */

/* NK keys x 16 rows (q: qt at the tile's first row, ldq apart per head-dim element). */
INLINE void qk_tile(const float *q, int64_t ldq, int d, const float *const *kr, float *st, int64_t ldst,
                    const int NK) {
    __m256 acc[6][2];
    const float *kp[6];
#pragma GCC unroll 6
    for (int n = 0; n < NK; n++) {
        kp[n] = kr[n];
        acc[n][0] = acc[n][1] = _mm256_setzero_ps();
    }
#pragma GCC unroll 2
    for (int k = 0; k < d; k++) {
        const float *qk = q + k * ldq;
        __m256 q0 = _mm256_loadu_ps(qk), q1 = _mm256_loadu_ps(qk + 8);
#pragma GCC unroll 6
        for (int n = 0; n < NK; n++) {
            __m256 b = _mm256_broadcast_ss(kp[n] + k);
            acc[n][0] = _mm256_fmadd_ps(b, q0, acc[n][0]);
            acc[n][1] = _mm256_fmadd_ps(b, q1, acc[n][1]);
        }
    }
#pragma GCC unroll 6
    for (int n = 0; n < NK; n++) {
        _mm256_storeu_ps(st + n * ldst, acc[n][0]);
        _mm256_storeu_ps(st + n * ldst + 8, acc[n][1]);
    }
}

/* Lane i of the result is the sum of v[i]'s 8 lanes. */
INLINE __m256 hsum8(const __m256 v[8]) {
    __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
    __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Few rows (decode): S for 4 keys x 2 rows as dot products along the head dim, reduced
 * together. Keys past nk and rows past m repeat the last valid one; their results land
 * in padding (rows: m <= 8 < mpad) or are not stored (keys). */
static void qk_dot(const float *qr, int d, int m, const float *const *krow, int nk, float *st, int64_t ldst) {
    const int full = d & ~7;
    const __m256i tail = lane_mask(d - full);
    for (int r0 = 0; r0 < m; r0 += 2) {
        const float *q[2];
        for (int r = 0; r < 2; r++) q[r] = qr + (int64_t)(r0 + r < m ? r0 + r : m - 1) * d;
        for (int n0 = 0; n0 < nk; n0 += 4) {
            const float *k[4];
            for (int n = 0; n < 4; n++) k[n] = krow[n0 + n < nk ? n0 + n : nk - 1];
            __m256 acc[8]; /* acc[r * 4 + n] */
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
#pragma GCC unroll 2
            for (int c = 0; c < full; c += 8) {
                __m256 kv[4];
#pragma GCC unroll 4
                for (int n = 0; n < 4; n++) kv[n] = _mm256_loadu_ps(k[n] + c);
#pragma GCC unroll 2
                for (int r = 0; r < 2; r++) {
                    __m256 qv = _mm256_loadu_ps(q[r] + c);
#pragma GCC unroll 4
                    for (int n = 0; n < 4; n++) acc[r * 4 + n] = _mm256_fmadd_ps(qv, kv[n], acc[r * 4 + n]);
                }
            }
            if (full < d) {
                __m256 kv[4];
                for (int n = 0; n < 4; n++) kv[n] = _mm256_maskload_ps(k[n] + full, tail);
                for (int r = 0; r < 2; r++) {
                    __m256 qv = _mm256_maskload_ps(q[r] + full, tail);
                    for (int n = 0; n < 4; n++) acc[r * 4 + n] = _mm256_fmadd_ps(qv, kv[n], acc[r * 4 + n]);
                }
            }
            float sums[8]; /* sums[r * 4 + n] */
            _mm256_storeu_ps(sums, hsum8(acc));
            for (int n = 0; n < 4 && n0 + n < nk; n++) {
                st[(int64_t)(n0 + n) * ldst + r0] = sums[n];
                st[(int64_t)(n0 + n) * ldst + r0 + 1] = sums[4 + n];
            }
        }
    }
}

static void qk_avx2(const float *qt, const float *qr, int d, int m, int mpad, const float *const *krow, int nk,
                    float *st, int64_t ldst) {
    if (m <= 8) {
        qk_dot(qr, d, m, krow, nk, st, ldst);
        return;
    }
    for (int r = 0; r < mpad; r += 16) /* mpad % 16 == 0 */
        for (int n = 0; n < nk; n += 6) {
            const float *q = qt + r;
            float *s = st + n * ldst + r;
            switch (nk - n) {
            case 1: qk_tile(q, mpad, d, krow + n, s, ldst, 1); break;
            case 2: qk_tile(q, mpad, d, krow + n, s, ldst, 2); break;
            case 3: qk_tile(q, mpad, d, krow + n, s, ldst, 3); break;
            case 4: qk_tile(q, mpad, d, krow + n, s, ldst, 4); break;
            case 5: qk_tile(q, mpad, d, krow + n, s, ldst, 5); break;
            default: qk_tile(q, mpad, d, krow + n, s, ldst, 6); break;
            }
        }
}

/* ---- online softmax, 8 rows per vector ---- */

static void softmax_avx2(float *st, int64_t ldst, int nk, int m, int64_t j0, const int32_t *lo, const int32_t *hi,
                         float *mx, float *l, float *alpha) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    const __m256i base = _mm256_set1_epi32((int32_t)j0);
    for (int r = 0; r < m; r += 8) {
        /* key n of the block is visible to a row when rlo <= n < rhi */
        __m256i rlo = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(lo + r)), base);
        __m256i rhi = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(hi + r)), base);
        __m256 bm = ninf;
        for (int n = 0; n < nk; n++) {
            __m256i vn = _mm256_set1_epi32(n);
            __m256 vis = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(rlo, vn), _mm256_cmpgt_epi32(rhi, vn)));
            bm = _mm256_blendv_ps(bm, _mm256_max_ps(bm, _mm256_loadu_ps(st + n * ldst + r)), vis);
        }
        __m256 mold = _mm256_loadu_ps(mx + r);
        __m256 mnew = _mm256_max_ps(mold, bm);
        __m256 live = _mm256_cmp_ps(mnew, ninf, _CMP_NEQ_OQ);
        __m256 sum = _mm256_setzero_ps();
        for (int n = 0; n < nk; n++) {
            __m256i vn = _mm256_set1_epi32(n);
            __m256 vis = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(rlo, vn), _mm256_cmpgt_epi32(rhi, vn)));
            float *s = st + n * ldst + r;
            __m256 p = _mm256_and_ps(_mm256_and_ps(vis, live), exp2_avx2(_mm256_sub_ps(_mm256_loadu_ps(s), mnew)));
            _mm256_storeu_ps(s, p);
            sum = _mm256_add_ps(sum, p);
        }
        __m256 a = _mm256_blendv_ps(_mm256_set1_ps(1.0f), exp2_avx2(_mm256_sub_ps(mold, mnew)), live);
        _mm256_storeu_ps(alpha + r, a);
        _mm256_storeu_ps(l + r, _mm256_fmadd_ps(_mm256_loadu_ps(l + r), a, sum));
        _mm256_storeu_ps(mx + r, mnew);
    }
}

/* ---- O = alpha O + P V ---- */

/* NR rows x 16 columns of O over the block's keys; FULL: all 16 columns exist,
 * otherwise m0/m1 mask the dv edge. */
INLINE void pv_tile(const float *p, int64_t ldp, const float *const *vr, int nk, float *o, int64_t ldo,
                    const float *alpha, const int NR, const int FULL, __m256i m0, __m256i m1) {
    __m256 acc[6][2];
#pragma GCC unroll 6
    for (int i = 0; i < NR; i++) {
        __m256 a = _mm256_set1_ps(alpha[i]);
        const float *oi = o + i * ldo;
        acc[i][0] = _mm256_mul_ps(a, FULL ? _mm256_loadu_ps(oi) : _mm256_maskload_ps(oi, m0));
        acc[i][1] = _mm256_mul_ps(a, FULL ? _mm256_loadu_ps(oi + 8) : _mm256_maskload_ps(oi + 8, m1));
    }
#pragma GCC unroll 2
    for (int n = 0; n < nk; n++) {
        const float *vn = vr[n], *pn = p + n * ldp;
        __m256 v0 = FULL ? _mm256_loadu_ps(vn) : _mm256_maskload_ps(vn, m0);
        __m256 v1 = FULL ? _mm256_loadu_ps(vn + 8) : _mm256_maskload_ps(vn + 8, m1);
#pragma GCC unroll 6
        for (int i = 0; i < NR; i++) {
            __m256 b = _mm256_broadcast_ss(pn + i);
            acc[i][0] = _mm256_fmadd_ps(b, v0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(b, v1, acc[i][1]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < NR; i++) {
        float *oi = o + i * ldo;
        if (FULL) {
            _mm256_storeu_ps(oi, acc[i][0]);
            _mm256_storeu_ps(oi + 8, acc[i][1]);
        } else {
            _mm256_maskstore_ps(oi, m0, acc[i][0]);
            _mm256_maskstore_ps(oi + 8, m1, acc[i][1]);
        }
    }
}

#define PV_CASES(FULL)                                                                                             \
    switch (m - r) {                                                                                               \
    case 1: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 1, FULL, m0, m1); break;                                \
    case 2: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 2, FULL, m0, m1); break;                                \
    case 3: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 3, FULL, m0, m1); break;                                \
    case 4: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 4, FULL, m0, m1); break;                                \
    case 5: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 5, FULL, m0, m1); break;                                \
    default: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 6, FULL, m0, m1); break;                               \
    }

static void pv_avx2(const float *p, int64_t ldp, const float *const *vrow, int nk, float *o, int64_t ldo, int m,
                    int dv, const float *alpha) {
    const float *vr[CPU_ATT_NB];
    for (int j = 0; j < dv; j += 16) {
        const int full = dv - j >= 16;
        const __m256i m0 = lane_mask(dv - j), m1 = lane_mask(dv - j - 8);
        for (int n = 0; n < nk; n++) vr[n] = vrow[n] + j;
        for (int r = 0; r < m; r += 6) {
            const float *pr = p + r;
            float *orow = o + r * ldo + j;
            if (full) {
                PV_CASES(1)
            } else {
                PV_CASES(0)
            }
        }
    }
}

/* ---- decode-sized items straight off 16-bit rows ---- */

/* 8 f16 (BF: bf16) at p -> f32; n < 8 reads only n (the rest 0). */
INLINE __m256 load16(const int BF, const uint16_t *p, int n) {
    __m128i h;
    if (n >= 8) {
        h = _mm_loadu_si128((const __m128i *)(const void *)p);
    } else {
        uint16_t t[8] = {0};
        memcpy(t, p, (size_t)(n > 0 ? n : 0) * 2);
        h = _mm_loadu_si128((const __m128i *)(const void *)t);
    }
    return BF ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)) : _mm256_cvtph_ps(h);
}

/* RB rows x KB keys (RB * KB <= 8) as dot products along the head dim, each K chunk
 * converted once for all RB rows; reduced together (lane r * KB + n). */
INLINE void qk16_body(const int BF, const int RB, const int KB, const float *qr, int d, int m,
                      const void *const *krow, int nk, float *st, int64_t ldst) {
    const int full = d & ~7;
    const __m256i tail = lane_mask(d - full);
    for (int r0 = 0; r0 < m; r0 += RB) {
        const float *q[8];
        for (int r = 0; r < RB; r++) q[r] = qr + (int64_t)(r0 + r < m ? r0 + r : m - 1) * d;
        for (int n0 = 0; n0 < nk; n0 += KB) {
            const uint16_t *k[8];
            for (int n = 0; n < KB; n++) k[n] = krow[n0 + n < nk ? n0 + n : nk - 1];
            __m256 acc[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
#pragma GCC unroll 2
            for (int c = 0; c < full; c += 8) {
                __m256 kv[4];
#pragma GCC unroll 4
                for (int n = 0; n < KB; n++) kv[n] = load16(BF, k[n] + c, 8);
#pragma GCC unroll 8
                for (int r = 0; r < RB; r++) {
                    __m256 qv = _mm256_loadu_ps(q[r] + c);
#pragma GCC unroll 4
                    for (int n = 0; n < KB; n++) acc[r * KB + n] = _mm256_fmadd_ps(qv, kv[n], acc[r * KB + n]);
                }
            }
            if (full < d)
                for (int n = 0; n < KB; n++) {
                    __m256 kv = load16(BF, k[n] + full, d - full);
                    for (int r = 0; r < RB; r++)
                        acc[r * KB + n] = _mm256_fmadd_ps(_mm256_maskload_ps(q[r] + full, tail), kv, acc[r * KB + n]);
                }
            float sums[8];
            _mm256_storeu_ps(sums, hsum8(acc));
            for (int n = 0; n < KB && n0 + n < nk; n++)
                for (int r = 0; r < RB && r0 + r < m; r++) st[(int64_t)(n0 + n) * ldst + r0 + r] = sums[r * KB + n];
        }
    }
}

#define QK16_CASES(BF)                                                                                             \
    switch (m) {                                                                                                   \
    case 1: qk16_body(BF, 1, 4, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 2: qk16_body(BF, 2, 4, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 3: qk16_body(BF, 3, 2, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 4: qk16_body(BF, 4, 2, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 5: qk16_body(BF, 5, 1, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 6: qk16_body(BF, 6, 1, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 7: qk16_body(BF, 7, 1, qr, d, m, krow, nk, st, ldst); break;                                              \
    default: qk16_body(BF, 8, 1, qr, d, m, krow, nk, st, ldst); break;                                             \
    }

static void qk16_avx2(kp_dtype dt, const float *qr, int d, int m, const void *const *krow, int nk, float *st,
                      int64_t ldst) {
    if (dt == KP_BF16) QK16_CASES(1)
    else QK16_CASES(0)
}

/* pv_tile over 16-bit V rows: NR rows x 16 columns (cols of them at the dv edge). */
INLINE void pv16_tile(const int BF, const float *p, int64_t ldp, const void *const *vrow, int64_t j, int nk,
                      float *o, int64_t ldo, const float *alpha, const int NR, int cols) {
    const __m256i m0 = lane_mask(cols), m1 = lane_mask(cols - 8);
    const int full = cols >= 16;
    __m256 acc[6][2];
#pragma GCC unroll 6
    for (int i = 0; i < NR; i++) {
        __m256 a = _mm256_set1_ps(alpha[i]);
        const float *oi = o + i * ldo;
        acc[i][0] = _mm256_mul_ps(a, full ? _mm256_loadu_ps(oi) : _mm256_maskload_ps(oi, m0));
        acc[i][1] = _mm256_mul_ps(a, full ? _mm256_loadu_ps(oi + 8) : _mm256_maskload_ps(oi + 8, m1));
    }
#pragma GCC unroll 2
    for (int n = 0; n < nk; n++) {
        const uint16_t *vn = (const uint16_t *)vrow[n] + j;
        const float *pn = p + n * ldp;
        __m256 v0 = load16(BF, vn, full ? 8 : cols), v1 = load16(BF, vn + 8, full ? 8 : cols - 8);
#pragma GCC unroll 6
        for (int i = 0; i < NR; i++) {
            __m256 b = _mm256_broadcast_ss(pn + i);
            acc[i][0] = _mm256_fmadd_ps(b, v0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(b, v1, acc[i][1]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < NR; i++) {
        float *oi = o + i * ldo;
        if (full) {
            _mm256_storeu_ps(oi, acc[i][0]);
            _mm256_storeu_ps(oi + 8, acc[i][1]);
        } else {
            _mm256_maskstore_ps(oi, m0, acc[i][0]);
            _mm256_maskstore_ps(oi + 8, m1, acc[i][1]);
        }
    }
}

#define PV16_CASES(BF)                                                                                             \
    switch (m - r) {                                                                                               \
    case 1: pv16_tile(BF, pr, ldp, vrow, j, nk, orow, ldo, alpha + r, 1, cols); break;                              \
    case 2: pv16_tile(BF, pr, ldp, vrow, j, nk, orow, ldo, alpha + r, 2, cols); break;                              \
    case 3: pv16_tile(BF, pr, ldp, vrow, j, nk, orow, ldo, alpha + r, 3, cols); break;                              \
    case 4: pv16_tile(BF, pr, ldp, vrow, j, nk, orow, ldo, alpha + r, 4, cols); break;                              \
    case 5: pv16_tile(BF, pr, ldp, vrow, j, nk, orow, ldo, alpha + r, 5, cols); break;                              \
    default: pv16_tile(BF, pr, ldp, vrow, j, nk, orow, ldo, alpha + r, 6, cols); break;                             \
    }

static void pv16_avx2(kp_dtype dt, const float *p, int64_t ldp, const void *const *vrow, int nk, float *o,
                      int64_t ldo, int m, int dv, const float *alpha) {
    for (int j = 0; j < dv; j += 16) {
        int cols = dv - j < 16 ? dv - j : 16;
        for (int r = 0; r < m; r += 6) {
            const float *pr = p + r;
            float *orow = o + r * ldo + j;
            if (dt == KP_BF16) PV16_CASES(1)
            else PV16_CASES(0)
        }
    }
}

/* ---- FP8 rows: gathers from the table's f32 values ---- */

INLINE __m256 fp8_gather8(const uint8_t *src, const cpu_att_fp8_lut *t) {
    __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)src));
    return _mm256_i32gather_ps(t->f, idx, 4);
}

void cpu_att_fp8_f32_avx2(const uint8_t *src, float *dst, int64_t n, const cpu_att_fp8_lut *t) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, fp8_gather8(src + i, t));
    for (; i < n; i++) dst[i] = t->f[src[i]];
}

/* The 16-bit bits from the f32 values, exactly: bf16 is their top half; f16 values
 * convert back without rounding. */
void cpu_att_fp8_16_avx2(const uint8_t *src, uint16_t *dst, int64_t n, const cpu_att_fp8_lut *t) {
    int64_t i = 0;
    if (t->dt == KP_BF16) {
        for (; i + 16 <= n; i += 16) {
            __m256i a = _mm256_srli_epi32(_mm256_castps_si256(fp8_gather8(src + i, t)), 16);
            __m256i b = _mm256_srli_epi32(_mm256_castps_si256(fp8_gather8(src + i + 8, t)), 16);
            __m256i h = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), _MM_SHUFFLE(3, 1, 2, 0));
            _mm256_storeu_si256((__m256i *)(void *)(dst + i), h);
        }
    } else {
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(void *)(dst + i),
                             _mm256_cvtps_ph(fp8_gather8(src + i, t), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (; i < n; i++) dst[i] = t->h[src[i]];
}

const cpu_att_kernels cpu_att_kernels_avx2 = {.qk = qk_avx2,
                                              .softmax = softmax_avx2,
                                              .pv = pv_avx2,
                                              .qk16 = qk16_avx2,
                                              .pv16 = pv16_avx2,
                                              .fp8_f32 = cpu_att_fp8_f32_avx2,
                                              .fp8_16 = cpu_att_fp8_16_avx2};
