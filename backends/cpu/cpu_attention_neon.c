/*
 * backends/cpu/cpu_attention_neon.c — the attention micro-kernels in NEON (aarch64
 * Advanced SIMD; cpu_attention.h has the contract). NEON is part of every aarch64
 * CPU: no extra flags.
 *
 * Register tiles of 24 q accumulators (of 32 registers):
 *   QK^T: 6 keys x 16 query rows (four vectors of q^T, one broadcast key element);
 *         few rows (decode): 4 keys x 4 rows as dot products along the head dim;
 *   PV:   6 rows x 16 columns of O (four vectors of V, one broadcast p).
 * The online softmax runs 4 rows per vector, with a polynomial exp2 in registers.
 * Decode-sized items (<= 8 rows) take qk16/pv16: K and V straight off the f16/bf16
 * cache rows, converted in registers (fcvtl, or a shift for bf16).
 */
#include "cpu_attention.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

/* 2^x for x <= 0 (-inf -> 0), as the AVX2 kernels do it: degree-7 Taylor polynomial
 * of 2^f, f in [-1/2, 1/2], times 2^i through the exponent bits; below 2^-125 -> 0. */
INLINE float32x4_t exp2_neon(float32x4_t x) {
    x = vmaxq_f32(x, vdupq_n_f32(-127.0f));
    float32x4_t i = vrndnq_f32(x);
    float32x4_t f = vsubq_f32(x, i);
    float32x4_t y = vdupq_n_f32(1.525273380405984e-05f);
    y = vfmaq_f32(vdupq_n_f32(1.5403530393381608e-04f), y, f);
    y = vfmaq_f32(vdupq_n_f32(1.3333558146428443e-03f), y, f);
    y = vfmaq_f32(vdupq_n_f32(9.618129107628477e-03f), y, f);
    y = vfmaq_f32(vdupq_n_f32(5.550410866482158e-02f), y, f);
    y = vfmaq_f32(vdupq_n_f32(2.402265069591007e-01f), y, f);
    y = vfmaq_f32(vdupq_n_f32(6.931471805599453e-01f), y, f);
    y = vfmaq_f32(vdupq_n_f32(1.0f), y, f);
    int32x4_t e = vshlq_n_s32(vcvtq_s32_f32(i), 23);
    float32x4_t r = vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(y), e));
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(r), vcgeq_f32(x, vdupq_n_f32(-125.0f))));
}

/* ---- S^T = K Q^T ---- */

INLINE void qk_tile(const float *q, int64_t ldq, int d, const float *const *kr, float *st, int64_t ldst,
                    const int NK) {
    float32x4_t acc[6][4];
    const float *kp[6];
#pragma GCC unroll 6
    for (int n = 0; n < NK; n++) {
        kp[n] = kr[n];
        for (int v = 0; v < 4; v++) acc[n][v] = vdupq_n_f32(0.0f);
    }
    for (int k = 0; k < d; k++) {
        const float *qk = q + k * ldq;
        float32x4_t qv[4];
        for (int v = 0; v < 4; v++) qv[v] = vld1q_f32(qk + 4 * v);
#pragma GCC unroll 6
        for (int n = 0; n < NK; n++) {
            float32x4_t b = vld1q_dup_f32(kp[n] + k);
            for (int v = 0; v < 4; v++) acc[n][v] = vfmaq_f32(acc[n][v], b, qv[v]);
        }
    }
    for (int n = 0; n < NK; n++)
        for (int v = 0; v < 4; v++) vst1q_f32(st + n * ldst + 4 * v, acc[n][v]);
}

/* Few rows (decode): S for 4 keys x 4 rows as dot products along the head dim. Keys
 * past nk and rows past m repeat the last valid one; their results land in padding
 * (rows: m <= 8 < mpad) or are not stored (keys). */
static void qk_dot(const float *qr, int d, int m, const float *const *krow, int nk, float *st, int64_t ldst) {
    const int full = d & ~3;
    for (int r0 = 0; r0 < m; r0 += 4) {
        const float *q[4];
        for (int r = 0; r < 4; r++) q[r] = qr + (int64_t)(r0 + r < m ? r0 + r : m - 1) * d;
        for (int n0 = 0; n0 < nk; n0 += 4) {
            const float *k[4];
            for (int n = 0; n < 4; n++) k[n] = krow[n0 + n < nk ? n0 + n : nk - 1];
            float32x4_t acc[4][4]; /* [row][key] */
            for (int r = 0; r < 4; r++)
                for (int n = 0; n < 4; n++) acc[r][n] = vdupq_n_f32(0.0f);
            for (int c = 0; c < full; c += 4) {
                float32x4_t kv[4];
                for (int n = 0; n < 4; n++) kv[n] = vld1q_f32(k[n] + c);
                for (int r = 0; r < 4; r++) {
                    float32x4_t qv = vld1q_f32(q[r] + c);
                    for (int n = 0; n < 4; n++) acc[r][n] = vfmaq_f32(acc[r][n], qv, kv[n]);
                }
            }
            float s[4][4];
            for (int r = 0; r < 4; r++) {
                /* lane n: the dot product of row r with key n */
                float32x4_t sum = vpaddq_f32(vpaddq_f32(acc[r][0], acc[r][1]), vpaddq_f32(acc[r][2], acc[r][3]));
                vst1q_f32(s[r], sum);
                for (int c = full; c < d; c++)
                    for (int n = 0; n < 4; n++) s[r][n] += q[r][c] * k[n][c];
            }
            for (int n = 0; n < 4 && n0 + n < nk; n++)
                for (int r = 0; r < 4; r++) st[(int64_t)(n0 + n) * ldst + r0 + r] = s[r][n];
        }
    }
}

static void qk_neon(const float *qt, const float *qr, int d, int m, int mpad, const float *const *krow, int nk,
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

/* ---- online softmax, 4 rows per vector ---- */

static void softmax_neon(float *st, int64_t ldst, int nk, int m, int64_t j0, const int32_t *lo, const int32_t *hi,
                         float *mx, float *l, float *alpha) {
    const float32x4_t ninf = vdupq_n_f32(-INFINITY);
    const int32x4_t base = vdupq_n_s32((int32_t)j0);
    for (int r = 0; r < m; r += 4) {
        /* key n of the block is visible to a row when rlo <= n < rhi */
        int32x4_t rlo = vsubq_s32(vld1q_s32(lo + r), base), rhi = vsubq_s32(vld1q_s32(hi + r), base);
        float32x4_t bm = ninf;
        for (int n = 0; n < nk; n++) {
            int32x4_t vn = vdupq_n_s32(n);
            uint32x4_t vis = vandq_u32(vcleq_s32(rlo, vn), vcgtq_s32(rhi, vn));
            bm = vbslq_f32(vis, vmaxq_f32(bm, vld1q_f32(st + n * ldst + r)), bm);
        }
        float32x4_t mold = vld1q_f32(mx + r), mnew = vmaxq_f32(mold, bm);
        uint32x4_t live = vmvnq_u32(vceqq_f32(mnew, ninf));
        float32x4_t sum = vdupq_n_f32(0.0f);
        for (int n = 0; n < nk; n++) {
            int32x4_t vn = vdupq_n_s32(n);
            uint32x4_t vis = vandq_u32(vandq_u32(vcleq_s32(rlo, vn), vcgtq_s32(rhi, vn)), live);
            float *s = st + n * ldst + r;
            float32x4_t p = exp2_neon(vsubq_f32(vld1q_f32(s), mnew));
            p = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(p), vis));
            vst1q_f32(s, p);
            sum = vaddq_f32(sum, p);
        }
        float32x4_t a = vbslq_f32(live, exp2_neon(vsubq_f32(mold, mnew)), vdupq_n_f32(1.0f));
        vst1q_f32(alpha + r, a);
        vst1q_f32(l + r, vfmaq_f32(sum, vld1q_f32(l + r), a));
        vst1q_f32(mx + r, mnew);
    }
}

/* ---- O = alpha O + P V ---- */

/* NR rows x 16 columns of O over the block's keys; cols < 16 at the dv edge. */
INLINE void pv_tile(const float *p, int64_t ldp, const float *const *vr, int nk, float *o, int64_t ldo,
                    const float *alpha, const int NR, int cols) {
    float32x4_t acc[6][4];
    if (cols < 16) { /* the edge: through a zero-padded copy of each row */
        for (int i = 0; i < NR; i++) {
            float t[16] = {0};
            memcpy(t, o + i * ldo, (size_t)cols * sizeof(float));
            for (int v = 0; v < 4; v++) acc[i][v] = vmulq_n_f32(vld1q_f32(t + 4 * v), alpha[i]);
        }
        for (int n = 0; n < nk; n++) {
            float t[16] = {0};
            memcpy(t, vr[n], (size_t)cols * sizeof(float));
            for (int i = 0; i < NR; i++) {
                float32x4_t b = vld1q_dup_f32(p + n * ldp + i);
                for (int v = 0; v < 4; v++) acc[i][v] = vfmaq_f32(acc[i][v], b, vld1q_f32(t + 4 * v));
            }
        }
        for (int i = 0; i < NR; i++) {
            float t[16];
            for (int v = 0; v < 4; v++) vst1q_f32(t + 4 * v, acc[i][v]);
            memcpy(o + i * ldo, t, (size_t)cols * sizeof(float));
        }
        return;
    }
#pragma GCC unroll 6
    for (int i = 0; i < NR; i++)
        for (int v = 0; v < 4; v++) acc[i][v] = vmulq_n_f32(vld1q_f32(o + i * ldo + 4 * v), alpha[i]);
    for (int n = 0; n < nk; n++) {
        const float *vn = vr[n], *pn = p + n * ldp;
        float32x4_t vv[4];
        for (int v = 0; v < 4; v++) vv[v] = vld1q_f32(vn + 4 * v);
#pragma GCC unroll 6
        for (int i = 0; i < NR; i++) {
            float32x4_t b = vld1q_dup_f32(pn + i);
            for (int v = 0; v < 4; v++) acc[i][v] = vfmaq_f32(acc[i][v], b, vv[v]);
        }
    }
    for (int i = 0; i < NR; i++)
        for (int v = 0; v < 4; v++) vst1q_f32(o + i * ldo + 4 * v, acc[i][v]);
}

static void pv_neon(const float *p, int64_t ldp, const float *const *vrow, int nk, float *o, int64_t ldo, int m,
                    int dv, const float *alpha) {
    const float *vr[CPU_ATT_NB];
    for (int j = 0; j < dv; j += 16) {
        int cols = dv - j < 16 ? dv - j : 16;
        for (int n = 0; n < nk; n++) vr[n] = vrow[n] + j;
        for (int r = 0; r < m; r += 6) {
            const float *pr = p + r;
            float *orow = o + r * ldo + j;
            switch (m - r) {
            case 1: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 1, cols); break;
            case 2: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 2, cols); break;
            case 3: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 3, cols); break;
            case 4: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 4, cols); break;
            case 5: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 5, cols); break;
            default: pv_tile(pr, ldp, vr, nk, orow, ldo, alpha + r, 6, cols); break;
            }
        }
    }
}

/* ---- decode-sized items straight off 16-bit rows ---- */

/* 4 f16 (BF: bf16) at p -> f32; n < 4 reads only n (the rest 0). */
INLINE float32x4_t load16x4(const int BF, const uint16_t *p, int n) {
    uint16x4_t h;
    if (n >= 4) {
        h = vld1_u16(p);
    } else {
        uint16_t t[4] = {0};
        memcpy(t, p, (size_t)(n > 0 ? n : 0) * 2);
        h = vld1_u16(t);
    }
    return BF ? vreinterpretq_f32_u32(vshll_n_u16(h, 16)) : vcvt_f32_f16(vreinterpret_f16_u16(h));
}

/* RB rows x KB keys (RB * KB <= 16) as dot products along the head dim, each K chunk
 * converted once for all RB rows. */
INLINE void qk16_body(const int BF, const int RB, const int KB, const float *qr, int d, int m,
                      const void *const *krow, int nk, float *st, int64_t ldst) {
    for (int r0 = 0; r0 < m; r0 += RB) {
        const float *q[8];
        for (int r = 0; r < RB; r++) q[r] = qr + (int64_t)(r0 + r < m ? r0 + r : m - 1) * d;
        for (int n0 = 0; n0 < nk; n0 += KB) {
            const uint16_t *k[8];
            for (int n = 0; n < KB; n++) k[n] = krow[n0 + n < nk ? n0 + n : nk - 1];
            float32x4_t acc[16];
            for (int i = 0; i < RB * KB; i++) acc[i] = vdupq_n_f32(0.0f);
            for (int c = 0; c < d; c += 4) {
                int left = d - c;
                float32x4_t kv[8];
                for (int n = 0; n < KB; n++) kv[n] = load16x4(BF, k[n] + c, left);
                for (int r = 0; r < RB; r++) {
                    float32x4_t qv;
                    if (left >= 4) {
                        qv = vld1q_f32(q[r] + c);
                    } else {
                        float t[4] = {0};
                        memcpy(t, q[r] + c, (size_t)left * sizeof(float));
                        qv = vld1q_f32(t);
                    }
                    for (int n = 0; n < KB; n++) acc[r * KB + n] = vfmaq_f32(acc[r * KB + n], qv, kv[n]);
                }
            }
            for (int n = 0; n < KB && n0 + n < nk; n++)
                for (int r = 0; r < RB && r0 + r < m; r++) st[(int64_t)(n0 + n) * ldst + r0 + r] = vaddvq_f32(acc[r * KB + n]);
        }
    }
}

#define QK16_CASES(BF)                                                                                             \
    switch (m) {                                                                                                   \
    case 1: qk16_body(BF, 1, 8, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 2: qk16_body(BF, 2, 4, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 3: qk16_body(BF, 3, 4, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 4: qk16_body(BF, 4, 4, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 5: qk16_body(BF, 5, 2, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 6: qk16_body(BF, 6, 2, qr, d, m, krow, nk, st, ldst); break;                                              \
    case 7: qk16_body(BF, 7, 2, qr, d, m, krow, nk, st, ldst); break;                                              \
    default: qk16_body(BF, 8, 2, qr, d, m, krow, nk, st, ldst); break;                                             \
    }

static void qk16_neon(kp_dtype dt, const float *qr, int d, int m, const void *const *krow, int nk, float *st,
                      int64_t ldst) {
    if (dt == KP_BF16) QK16_CASES(1)
    else QK16_CASES(0)
}

/* pv_tile over 16-bit V rows: NR rows x 16 columns (cols of them at the dv edge). */
INLINE void pv16_tile(const int BF, const float *p, int64_t ldp, const void *const *vrow, int64_t j, int nk,
                      float *o, int64_t ldo, const float *alpha, const int NR, int cols) {
    float32x4_t acc[6][4];
    for (int i = 0; i < NR; i++) {
        float t[16] = {0};
        memcpy(t, o + i * ldo, (size_t)cols * sizeof(float));
        for (int v = 0; v < 4; v++) acc[i][v] = vmulq_n_f32(vld1q_f32(t + 4 * v), alpha[i]);
    }
    for (int n = 0; n < nk; n++) {
        const uint16_t *vn = (const uint16_t *)vrow[n] + j;
        float32x4_t vv[4];
        for (int v = 0; v < 4; v++) vv[v] = load16x4(BF, vn + 4 * v, cols - 4 * v);
#pragma GCC unroll 6
        for (int i = 0; i < NR; i++) {
            float32x4_t b = vld1q_dup_f32(p + n * ldp + i);
            for (int v = 0; v < 4; v++) acc[i][v] = vfmaq_f32(acc[i][v], b, vv[v]);
        }
    }
    for (int i = 0; i < NR; i++) {
        float t[16];
        for (int v = 0; v < 4; v++) vst1q_f32(t + 4 * v, acc[i][v]);
        memcpy(o + i * ldo, t, (size_t)cols * sizeof(float));
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

static void pv16_neon(kp_dtype dt, const float *p, int64_t ldp, const void *const *vrow, int nk, float *o,
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

/* ---- FP8 rows: byte-table lookups (tbl/tbx over the table's 128 low and high bytes) ---- */

typedef struct fp8_regs {
    uint8x16x4_t lo0, lo1, hi0, hi1;
} fp8_regs;

INLINE uint8x16x4_t load_x4(const uint8_t *p) {
    uint8x16x4_t r;
    r.val[0] = vld1q_u8(p), r.val[1] = vld1q_u8(p + 16), r.val[2] = vld1q_u8(p + 32), r.val[3] = vld1q_u8(p + 48);
    return r;
}

/* 16 bytes -> their 16-bit values as 2 x 8 words: the 7-bit magnitude looked up (tbl
 * gives 0 past 64, tbx keeps what is there: magnitudes 64..127 take the second half),
 * the sign bit or-ed into the high byte. */
INLINE uint16x8x2_t fp8_words16(uint8x16_t x, const fp8_regs *r) {
    uint8x16_t m = vandq_u8(x, vdupq_n_u8(0x7f)), m2 = vsubq_u8(m, vdupq_n_u8(64));
    uint8x16_t lo = vqtbx4q_u8(vqtbl4q_u8(r->lo0, m), r->lo1, m2);
    uint8x16_t hi = vqtbx4q_u8(vqtbl4q_u8(r->hi0, m), r->hi1, m2);
    hi = vorrq_u8(hi, vandq_u8(x, vdupq_n_u8(0x80)));
    uint16x8x2_t w;
    w.val[0] = vreinterpretq_u16_u8(vzip1q_u8(lo, hi));
    w.val[1] = vreinterpretq_u16_u8(vzip2q_u8(lo, hi));
    return w;
}

static fp8_regs fp8_regs_load(const cpu_att_fp8_lut *t) {
    fp8_regs r;
    r.lo0 = load_x4(t->lo), r.lo1 = load_x4(t->lo + 64), r.hi0 = load_x4(t->hi), r.hi1 = load_x4(t->hi + 64);
    return r;
}

static void fp8_16_neon(const uint8_t *src, uint16_t *dst, int64_t n, const cpu_att_fp8_lut *t) {
    const fp8_regs r = fp8_regs_load(t);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint16x8x2_t w = fp8_words16(vld1q_u8(src + i), &r);
        vst1q_u16(dst + i, w.val[0]);
        vst1q_u16(dst + i + 8, w.val[1]);
    }
    for (; i < n; i++) dst[i] = t->h[src[i]];
}

INLINE float32x4_t words_to_f32(const int BF, uint16x4_t h) {
    return BF ? vreinterpretq_f32_u32(vshll_n_u16(h, 16)) : vcvt_f32_f16(vreinterpret_f16_u16(h));
}

static void fp8_f32_neon(const uint8_t *src, float *dst, int64_t n, const cpu_att_fp8_lut *t) {
    int64_t i = 0;
    if (t->dt == KP_BF16 || t->dt == KP_F16) {
        const fp8_regs r = fp8_regs_load(t);
        const int bf = t->dt == KP_BF16;
        for (; i + 16 <= n; i += 16) {
            uint16x8x2_t w = fp8_words16(vld1q_u8(src + i), &r);
            for (int h = 0; h < 2; h++) {
                float *o = dst + i + 8 * h;
                if (bf) {
                    vst1q_f32(o, words_to_f32(1, vget_low_u16(w.val[h])));
                    vst1q_f32(o + 4, words_to_f32(1, vget_high_u16(w.val[h])));
                } else {
                    vst1q_f32(o, words_to_f32(0, vget_low_u16(w.val[h])));
                    vst1q_f32(o + 4, words_to_f32(0, vget_high_u16(w.val[h])));
                }
            }
        }
    }
    for (; i < n; i++) dst[i] = t->f[src[i]];
}

const cpu_att_kernels cpu_att_kernels_neon = {.qk = qk_neon,
                                              .softmax = softmax_neon,
                                              .pv = pv_neon,
                                              .qk16 = qk16_neon,
                                              .pv16 = pv16_neon,
                                              .fp8_f32 = fp8_f32_neon,
                                              .fp8_16 = fp8_16_neon};
#endif /* __aarch64__ */
