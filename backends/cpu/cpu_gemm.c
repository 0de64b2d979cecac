/*
 * backends/cpu/cpu_gemm.c — the GEMM engine of the CPU backend (see cpu_gemm.h).
 *
 * Tile kernels, one per SIMD level, each computing a 4 x 6 tile of dot products
 * over one K block:
 *   - portable C (any CPU; f32),
 *   - AVX-512 F f32 FMA,
 *   - AVX512_BF16 vdpbf16ps (bf16 x bf16 products are exact in f32; f32 accumulate).
 * Each is compiled for its own target with __attribute__((target)); the level comes
 * from cpu_simd_active() at plan time, never from -march.
 *
 * FP8 e4m3 weights (OCP e4m3fn: bias 7, no infinities, S.1111.111 is NaN, max 448)
 * are decoded into f32 times their 128 x 128 block scale, which is exact up to one
 * f32 rounding, and multiplied in f32.
 */
#include "cpu_gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KP_X86 1
#define KP_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define KP_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))
#endif

#define TI 4           /* tile rows */
#define TJ 6           /* tile columns */
#define KC_F32 512     /* K block, f32 mode (multiple of 128: FP8 scale blocks) */
#define KC_BF16 1024   /* K block, bf16 mode */
#define FP8_BLOCK 128

/* ---- per-thread scratch: A rows and W rows of one K block, converted ---- */

#define SCRATCH_A_BYTES ((size_t)CPU_GEMM_MC * KC_F32 * 4)
#define SCRATCH_W_BYTES ((size_t)CPU_GEMM_NC * KC_F32 * 4)

static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static int g_scratch_key_ok;

static void scratch_key_make(void) { g_scratch_key_ok = pthread_key_create(&g_scratch_key, free) == 0; }

/* Allocated on a thread's first GEMM, kept until the thread exits. */
static unsigned char *thread_scratch(void) {
    pthread_once(&g_scratch_once, scratch_key_make);
    if (!g_scratch_key_ok) return NULL;
    void *p = pthread_getspecific(g_scratch_key);
    if (p) return p;
    if (posix_memalign(&p, 64, SCRATCH_A_BYTES + SCRATCH_W_BYTES) != 0) return NULL;
    if (pthread_setspecific(g_scratch_key, p) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

/* ---- FP8 e4m3 ---- */

static float g_fp8_lut[256];
static pthread_once_t g_fp8_once = PTHREAD_ONCE_INIT;

static void fp8_lut_make(void) {
    for (int b = 0; b < 256; b++) {
        int e = (b >> 3) & 0xf, m = b & 7;
        float v;
        if (e == 0xf && m == 7) v = NAN;
        else if (e == 0) v = ldexpf((float)m, -9); /* subnormal: m/8 * 2^-6 */
        else v = ldexpf(1.0f + (float)m / 8.0f, e - 7);
        g_fp8_lut[b] = (b & 0x80) ? -v : v;
    }
}

/* dst[i] = e4m3(src[i]) * scale for i < n. */
static void fp8_decode_c(const uint8_t *src, float scale, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = g_fp8_lut[src[i]] * scale;
}

#ifdef KP_X86
/* 16 bytes at a time: the magnitude bits go to the f32 exponent/mantissa fields and an
 * integer add of 120 to the exponent rebiases; subnormals go through an integer
 * conversion (no float op ever sees a denormal: no assists, no DAZ flushing). */
KP_AVX512 static void fp8_decode_avx512(const uint8_t *src, float scale, float *dst, int64_t n) {
    const __m512i mag_mask = _mm512_set1_epi32(0x7f), sign_mask = _mm512_set1_epi32(0x80);
    const __m512i rebias = _mm512_set1_epi32(120 << 23);
    const __m512 sub = _mm512_set1_ps(0x1p-9f), s = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 km = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512i x = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(km, src + i));
        __m512i mag = _mm512_and_si512(x, mag_mask);
        __m512 normal = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_slli_epi32(mag, 20), rebias));
        __m512 subn = _mm512_mul_ps(_mm512_cvtepi32_ps(mag), sub);
        __mmask16 is_sub = _mm512_cmplt_epi32_mask(mag, _mm512_set1_epi32(8));
        __m512 v = _mm512_mask_blend_ps(is_sub, normal, subn);
        __mmask16 is_nan = _mm512_cmpeq_epi32_mask(mag, mag_mask);
        v = _mm512_mask_blend_ps(is_nan, v, _mm512_set1_ps(NAN));
        v = _mm512_castsi512_ps(
            _mm512_or_si512(_mm512_castps_si512(v), _mm512_slli_epi32(_mm512_and_si512(x, sign_mask), 24)));
        _mm512_mask_storeu_ps(dst + i, km, _mm512_mul_ps(v, s));
    }
}
#endif

/* ---- tile kernels: out[i * TJ + j] = sum_{k < kc} a[i][k] * w[j][k] ---- */

static void tile_f32_c(int64_t kc, const void *const *av, const void *const *wv, float *out) {
    const float *const *a = (const float *const *)av, *const *w = (const float *const *)wv;
    for (int i = 0; i < TI; i++)
        for (int j = 0; j < TJ; j++) {
            float acc[8] = {0};
            int64_t k = 0;
            for (; k + 8 <= kc; k += 8)
                for (int l = 0; l < 8; l++) acc[l] += a[i][k + l] * w[j][k + l];
            for (; k < kc; k++) acc[0] += a[i][k] * w[j][k];
            out[i * TJ + j] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        }
}

#ifdef KP_X86
/* Four accumulators -> their four sums in one __m128. */
KP_AVX512 static inline __attribute__((always_inline)) __m128 hsum4_512(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
    __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
    __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Stores the 4 x 6 accumulators as out[i * 6 + j]. A macro, not a function: with
 * every index a constant the accumulators stay in registers (taking the array's
 * address would make GCC keep a memory copy updated on every step). */
#define TILE_STORE_512(acc, out)                                                                   \
    do {                                                                                           \
        _Pragma("GCC unroll 8") for (int j_ = 0; j_ < TJ; j_++) {                                  \
            float t4_[4];                                                                          \
            _mm_storeu_ps(t4_, hsum4_512(acc[0][j_], acc[1][j_], acc[2][j_], acc[3][j_]));         \
            for (int i_ = 0; i_ < TI; i_++) (out)[i_ * TJ + j_] = t4_[i_];                         \
        }                                                                                          \
    } while (0)

KP_AVX512 static void tile_f32_avx512(int64_t kc, const void *const *av, const void *const *wv, float *out) {
    const float *a0 = av[0], *a1 = av[1], *a2 = av[2], *a3 = av[3];
    const float *const *w = (const float *const *)wv;
    __m512 acc[TI][TJ];
#pragma GCC unroll 8
    for (int i = 0; i < TI; i++)
#pragma GCC unroll 8
        for (int j = 0; j < TJ; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k < kc; k += 16) {
        __mmask16 km = kc - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (kc - k)) - 1);
        __m512 x0 = _mm512_maskz_loadu_ps(km, a0 + k), x1 = _mm512_maskz_loadu_ps(km, a1 + k);
        __m512 x2 = _mm512_maskz_loadu_ps(km, a2 + k), x3 = _mm512_maskz_loadu_ps(km, a3 + k);
#pragma GCC unroll 8
        for (int j = 0; j < TJ; j++) {
            __m512 y = _mm512_maskz_loadu_ps(km, w[j] + k);
            acc[0][j] = _mm512_fmadd_ps(x0, y, acc[0][j]);
            acc[1][j] = _mm512_fmadd_ps(x1, y, acc[1][j]);
            acc[2][j] = _mm512_fmadd_ps(x2, y, acc[2][j]);
            acc[3][j] = _mm512_fmadd_ps(x3, y, acc[3][j]);
        }
    }
    TILE_STORE_512(acc, out);
}

KP_AVX512BF16 static void tile_bf16_avx512(int64_t kc, const void *const *av, const void *const *wv,
                                           float *out) {
    const uint16_t *a0 = av[0], *a1 = av[1], *a2 = av[2], *a3 = av[3];
    const uint16_t *const *w = (const uint16_t *const *)wv;
    __m512 acc[TI][TJ];
#pragma GCC unroll 8
    for (int i = 0; i < TI; i++)
#pragma GCC unroll 8
        for (int j = 0; j < TJ; j++) acc[i][j] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k += 32) {
        __mmask32 km = kc - k >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (kc - k)) - 1);
        __m512bh x0 = (__m512bh)_mm512_maskz_loadu_epi16(km, a0 + k);
        __m512bh x1 = (__m512bh)_mm512_maskz_loadu_epi16(km, a1 + k);
        __m512bh x2 = (__m512bh)_mm512_maskz_loadu_epi16(km, a2 + k);
        __m512bh x3 = (__m512bh)_mm512_maskz_loadu_epi16(km, a3 + k);
#pragma GCC unroll 8
        for (int j = 0; j < TJ; j++) {
            __m512bh y = (__m512bh)_mm512_maskz_loadu_epi16(km, w[j] + k);
            acc[0][j] = _mm512_dpbf16_ps(acc[0][j], x0, y);
            acc[1][j] = _mm512_dpbf16_ps(acc[1][j], x1, y);
            acc[2][j] = _mm512_dpbf16_ps(acc[2][j], x2, y);
            acc[3][j] = _mm512_dpbf16_ps(acc[3][j], x3, y);
        }
    }
    TILE_STORE_512(acc, out);
}
#endif

typedef void (*tile_fn)(int64_t kc, const void *const *a, const void *const *w, float *out);

/* ---- plan ---- */

cpu_gemm_plan cpu_gemm_plan_make(kp_dtype act, kp_dtype a_dtype, kp_dtype w_dtype) {
    cpu_gemm_plan p;
    p.simd = cpu_simd_active();
    p.cvt = cpu_kernels_for(p.simd);
    p.a_dtype = a_dtype;
    /* bf16 weights with bf16 activations: vdpbf16ps. FP8 and f16 go through f32 so
     * the block scales and f16's mantissa keep their precision. */
    p.mode = (p.simd >= CPU_SIMD_AVX512_BF16 && w_dtype == KP_BF16 && act == KP_BF16) ? CPU_GEMM_BF16
                                                                                       : CPU_GEMM_F32;
    pthread_once(&g_fp8_once, fp8_lut_make);
    return p;
}

cpu_gemm_w cpu_gemm_expert(const kp_tensor *w, const kp_tensor *scale, int64_t e) {
    cpu_gemm_w g;
    memset(&g, 0, sizeof g);
    g.dtype = w->dtype;
    g.base = cpu_at3(w, e, 0, 0);
    g.ld = w->strides[1];
    g.n = w->shape[1];
    g.k = w->shape[2];
    if (w->dtype == KP_FP8_E4M3 && scale->buffer) {
        g.scale = (const float *)cpu_at3(scale, e, 0, 0);
        g.scale_ld0 = scale->strides[1];
        g.scale_ld1 = scale->strides[2];
    }
    return g;
}

void cpu_load_row(const cpu_kernels *cvt, kp_dtype dt, const void *src, float *dst, int64_t n) {
    switch (dt) {
    case KP_F16: cvt->f16_to_f32(src, dst, n); break;
    case KP_BF16: cvt->bf16_to_f32(src, dst, n); break;
    default: memcpy(dst, src, (size_t)n * 4); break;
    }
}

void cpu_store_row(const cpu_kernels *cvt, kp_dtype dt, const float *src, void *dst, int64_t n) {
    switch (dt) {
    case KP_F16: cvt->f32_to_f16(src, dst, n); break;
    case KP_BF16: cvt->f32_to_bf16(src, dst, n); break;
    default: memcpy(dst, src, (size_t)n * 4); break;
    }
}

static void fp8_decode(const cpu_gemm_plan *pl, const uint8_t *src, float scale, float *dst, int64_t n) {
#ifdef KP_X86
    if (pl->simd >= CPU_SIMD_AVX512) {
        fp8_decode_avx512(src, scale, dst, n);
        return;
    }
#endif
    (void)pl;
    fp8_decode_c(src, scale, dst, n);
}

/* W row n0 + j, K range [k0, k0 + kc), as compute-format elements: a pointer into
 * w itself when it is already in that format, else converted into dst. */
static const void *w_row(const cpu_gemm_plan *pl, const cpu_gemm_w *w, int64_t n, int64_t k0, int64_t kc,
                         float *dst, int copy) {
    size_t esz = kp_dtype_size(w->dtype);
    const unsigned char *src = w->base + (size_t)(n * w->ld + k0) * esz;
    if (pl->mode == CPU_GEMM_BF16 || w->dtype == KP_F32) { /* bf16 mode: w is bf16 */
        if (!copy) return src;
        memcpy(dst, src, (size_t)kc * esz);
        return dst;
    }
    if (w->dtype == KP_FP8_E4M3) {
        const float *srow = w->scale + (n / FP8_BLOCK) * w->scale_ld0;
        for (int64_t k = 0; k < kc; k += FP8_BLOCK) {
            int64_t len = kc - k < FP8_BLOCK ? kc - k : FP8_BLOCK;
            fp8_decode(pl, src + k, srow[((k0 + k) / FP8_BLOCK) * w->scale_ld1], dst + k, len);
        }
    } else {
        cpu_load_row(pl->cvt, w->dtype, src, dst, kc);
    }
    return dst;
}

/* A row i, K range [k0, k0 + kc), likewise. */
static const void *a_row(const cpu_gemm_plan *pl, const unsigned char *row, int64_t k0, int64_t kc, void *dst,
                         int copy) {
    size_t esz = kp_dtype_size(pl->a_dtype);
    const unsigned char *src = row + (size_t)k0 * esz;
    if (copy && (pl->mode == CPU_GEMM_BF16 ? pl->a_dtype == KP_BF16 : pl->a_dtype == KP_F32)) {
        memcpy(dst, src, (size_t)kc * esz);
        return dst;
    }
    if (pl->mode == CPU_GEMM_BF16) {
        if (pl->a_dtype == KP_BF16) return src;
        pl->cvt->f32_to_bf16((const float *)src, dst, kc); /* f32 intermediates of a bf16 layer */
        return dst;
    }
    if (pl->a_dtype == KP_F32) return src;
    cpu_load_row(pl->cvt, pl->a_dtype, src, dst, kc);
    return dst;
}

/* At most one tile of rows (decode): the A rows are converted once for all of K, and
 * each group of six weight rows streams through K in long runs (the whole K when the
 * weights need no conversion), so the hardware prefetchers see long sequential
 * streams and the weights go by at memory bandwidth. */
static void gemm_few_rows(const cpu_gemm_plan *pl, tile_fn tile, size_t celem, const unsigned char *const *a_rows,
                          int m, const cpu_gemm_w *w, int64_t n0, int nc, float *c, int ldc, float *a_scr,
                          float *w_scr) {
    const void *at[TI];
    for (int i = 0; i < TI; i++)
        at[i] = i < m ? a_row(pl, a_rows[i], 0, w->k, (unsigned char *)a_scr + (size_t)i * w->k * celem, 0) : NULL;
    for (int i = m; i < TI; i++) at[i] = at[m - 1];
    int direct = pl->mode == CPU_GEMM_BF16 || w->dtype == KP_F32;
    const int64_t run = direct ? w->k : (int64_t)(SCRATCH_W_BYTES / (TJ * 4)) / FP8_BLOCK * FP8_BLOCK;
    for (int j0 = 0; j0 < nc; j0 += TJ) {
        int jn = nc - j0 < TJ ? nc - j0 : TJ;
        for (int64_t k0 = 0; k0 < w->k; k0 += run) {
            int64_t kc = w->k - k0 < run ? w->k - k0 : run;
            const void *wt[TJ], *ak[TI];
            for (int j = 0; j < TJ; j++)
                wt[j] = j < jn ? w_row(pl, w, n0 + j0 + j, k0, kc, w_scr + (size_t)j * run, 0) : wt[jn - 1];
            for (int i = 0; i < TI; i++) ak[i] = (const unsigned char *)at[i] + (size_t)k0 * celem;
            float t[TI * TJ];
            tile(kc, ak, wt, t);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < jn; j++) c[(size_t)i * ldc + j0 + j] += t[i * TJ + j];
        }
    }
}

kp_status cpu_gemm_block(const cpu_gemm_plan *pl, const unsigned char *const *a_rows, int m, const cpu_gemm_w *w,
                         int64_t n0, int nc, float *c, int ldc) {
    unsigned char *scratch = thread_scratch();
    if (!scratch) return KP_ERR_OUT_OF_MEMORY;
    float *a_scr = (float *)scratch, *w_scr = (float *)(scratch + SCRATCH_A_BYTES);
    tile_fn tile = tile_f32_c;
    int64_t kc_max = KC_F32;
    size_t celem = 4;
#ifdef KP_X86
    if (pl->mode == CPU_GEMM_BF16) {
        tile = tile_bf16_avx512;
        kc_max = KC_BF16;
        celem = 2;
    } else if (pl->simd >= CPU_SIMD_AVX512) {
        tile = tile_f32_avx512;
    }
#endif
    for (int i = 0; i < m; i++) memset(c + (size_t)i * ldc, 0, (size_t)nc * sizeof *c);
    if (m <= TI && (size_t)TI * w->k * celem <= SCRATCH_A_BYTES) {
        gemm_few_rows(pl, tile, celem, a_rows, m, w, n0, nc, c, ldc, a_scr, w_scr);
        return KP_OK;
    }
    const void *ap[CPU_GEMM_MC], *wp[CPU_GEMM_NC];
    for (int64_t k0 = 0; k0 < w->k; k0 += kc_max) {
        int64_t kc = w->k - k0 < kc_max ? w->k - k0 : kc_max;
        for (int i = 0; i < m; i++)
            ap[i] = a_row(pl, a_rows[i], k0, kc, (unsigned char *)a_scr + (size_t)i * kc_max * celem, 1);
        for (int j = 0; j < nc; j++) wp[j] = w_row(pl, w, n0 + j, k0, kc, w_scr + (size_t)j * KC_F32, 1);
        for (int j0 = 0; j0 < nc; j0 += TJ) {
            int jn = nc - j0 < TJ ? nc - j0 : TJ;
            const void *wt[TJ];
            for (int j = 0; j < TJ; j++) wt[j] = wp[j0 + (j < jn ? j : jn - 1)];
            for (int i0 = 0; i0 < m; i0 += TI) {
                int in = m - i0 < TI ? m - i0 : TI;
                const void *at[TI];
                float t[TI * TJ];
                for (int i = 0; i < TI; i++) at[i] = ap[i0 + (i < in ? i : in - 1)];
                tile(kc, at, wt, t);
                for (int i = 0; i < in; i++)
                    for (int j = 0; j < jn; j++) c[(size_t)(i0 + i) * ldc + j0 + j] += t[i * TJ + j];
            }
        }
    }
    return KP_OK;
}

void cpu_gemm_swiglu(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void cpu_moe_stream_lock(kp_stream *s) { pthread_mutex_lock(&((cpu_stream *)s->impl)->lock); }
void cpu_moe_stream_unlock(kp_stream *s) { pthread_mutex_unlock(&((cpu_stream *)s->impl)->lock); }

/* ---- task lists of grouped rows ---- */

int64_t cpu_expert_tasks_init(cpu_expert_tasks *t, const int32_t *off, int64_t experts, int64_t n, int64_t *start) {
    t->off = off;
    t->experts = experts;
    t->n = n;
    t->ntiles = (n + CPU_GEMM_NC - 1) / CPU_GEMM_NC;
    t->start = start;
    start[0] = 0;
    for (int64_t e = 0; e < experts; e++) {
        int64_t rows = (int64_t)off[e + 1] - off[e];
        start[e + 1] = start[e] + (rows + CPU_GEMM_MC - 1) / CPU_GEMM_MC * t->ntiles;
    }
    return start[experts];
}

cpu_expert_task cpu_expert_task_at(const cpu_expert_tasks *t, int64_t index) {
    int64_t lo = 0, hi = t->experts - 1; /* the expert e with start[e] <= index < start[e + 1] */
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (t->start[mid] <= index) lo = mid;
        else hi = mid - 1;
    }
    cpu_expert_task k;
    int64_t local = index - t->start[lo], rows = (int64_t)t->off[lo + 1] - t->off[lo];
    int64_t chunks = (rows + CPU_GEMM_MC - 1) / CPU_GEMM_MC;
    int64_t tile = local / chunks, chunk = local % chunks;
    k.e = lo;
    k.n0 = tile * CPU_GEMM_NC;
    k.nc = (int)(t->n - k.n0 < CPU_GEMM_NC ? t->n - k.n0 : CPU_GEMM_NC);
    k.row0 = t->off[lo] + chunk * CPU_GEMM_MC;
    k.m = (int)(rows - chunk * CPU_GEMM_MC < CPU_GEMM_MC ? rows - chunk * CPU_GEMM_MC : CPU_GEMM_MC);
    return k;
}
