/*
 * backends/cpu/cpu_gemm.c — the GEMM engine of the CPU backend (see cpu_gemm.h):
 * its driver, the portable C paths, the per-thread scratch and the task lists.
 *
 * cpu_gemm_block(A rows, W columns [n0, n0 + nc)) runs, for an m-row block:
 *   - m > decode_rows: for each K block of kc: the A rows' K block is packed
 *     contiguously (converted to the compute format), then for each 32-column
 *     panel the weights' K block is packed (converted, transposed: cpu_gemm_kernels.h)
 *     and the micro-kernel runs over the rows 8 at a time, adding into C. The packed
 *     panel (32 KiB) stays in L1 while the rows go by; the A block in L2.
 *   - m <= decode_rows (decode): the A rows are packed once for the whole K, and each
 *     panel streams its 32 weight rows through the whole K before the next panel, so
 *     the weights flow as long sequential streams at memory bandwidth, with software
 *     prefetch pf bytes ahead along each row. Up to dot_rows rows skip the packing
 *     (every SIMD level): dot products along K, a few weight rows at a time, the
 *     weights converted in registers (the level's dot_f32 / dot_bf16).
 * Compute formats: f32 FMA, or bf16 dot products (CPU_GEMM_BF16: vdpbf16ps, bfdot) for bf16 activations with
 * bf16 weights (f32 A rows of a bf16 layer are rounded to bf16, as before) or with FP8
 * weights: FP8 e4m3 decodes exactly to bf16, so the products are exact in f32; the
 * 128 x 128 block scale multiplies each 128-wide K partial sum (f32) before it is added
 * to C: the result differs from scaling each weight first only by f32 rounding. FP8
 * with f16 or f32 activations is decoded to f32: times its scale while packing
 * (portable, AVX-512), or exactly, its scale applied per 128-wide K partial sum
 * (AVX2, NEON: fp8_partial).
 * Packing routines and micro-kernels per SIMD level (cpu_gemm_kernels.h): portable C
 * (below, any CPU), AVX2 (6 x 16 tiles in ymm), AVX-512 (8 x 32 in zmm), NEON.
 *
 * Tunables (tuning table, kernel "grouped_gemm", read once per plan):
 *   kc          K block, f32 mode (default 256; rounded to a multiple of 16)
 *   kc_bf16     K block, bf16 mode (default 512; multiple of 32; FP8: of 128)
 *   nc          columns per task (default 256; multiple of 32)
 *   mc          rows per task (default 256; at most CPU_GEMM_MC_MAX)
 *   decode_rows blocks of at most this many rows take the decode path (default 16)
 *   pf          decode path: software prefetch distance along weight rows, bytes
 *               (default 512); 0 also turns off the other path's prefetch (the next
 *               panel's weights and the next K block of A, issued between micro-kernels)
 *   dot_rows    decode path: blocks of at most this many rows (default and most: the
 *               level's dot_rows_max, 4 or 8) take dot
 *               products straight off the weight rows, without packing (default 4)
 *   pf_dot      the dot path's software prefetch: bytes ahead along each row, or -1
 *               (default): the same K offset of the next group of weight rows
 */
#include "cpu_gemm_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NR CPU_GEMM_NR
#define MR CPU_GEMM_MR
#define FP8_BLOCK CPU_GEMM_FP8_BLOCK
#define A_FULL_MAX ((size_t)1 << 20) /* decode path: the most bytes of A packed for the whole K */
#define LDA_PAD 16                   /* units of padding between packed A rows (no L1 set aliasing) */

/* ---- per-thread scratch: packed blocks, and the callers' output blocks ---- */

typedef struct gemm_tls {
    unsigned char *work;
    size_t work_size;
    float *out[2];
    size_t out_size[2];
    unsigned char *w8a8[2]; /* cpu_gemm_block_w8a8: a slice's f32 block, its bf16 A rows */
    size_t w8a8_size[2];
} gemm_tls;

static pthread_key_t g_tls_key;
static pthread_once_t g_tls_once = PTHREAD_ONCE_INIT;
static int g_tls_key_ok;

static void tls_free(void *p) {
    gemm_tls *t = p;
    free(t->work);
    free(t->out[0]);
    free(t->out[1]);
    free(t->w8a8[0]);
    free(t->w8a8[1]);
    free(t);
}

static void tls_key_make(void) { g_tls_key_ok = pthread_key_create(&g_tls_key, tls_free) == 0; }

static gemm_tls *thread_tls(void) {
    pthread_once(&g_tls_once, tls_key_make);
    if (!g_tls_key_ok) return NULL;
    gemm_tls *t = pthread_getspecific(g_tls_key);
    if (t) return t;
    if (!(t = calloc(1, sizeof *t))) return NULL;
    if (pthread_setspecific(g_tls_key, t) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

/* A 64-byte aligned buffer of at least bytes, kept (and grown) per thread. */
static void *tls_grow(unsigned char **buf, size_t *size, size_t bytes) {
    if (*size >= bytes) return *buf;
    void *p;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    free(*buf);
    *buf = p;
    *size = bytes;
    return p;
}

float *cpu_gemm_out_buffer(const cpu_gemm_plan *pl, int slot) {
    gemm_tls *t = thread_tls();
    if (!t) return NULL;
    return tls_grow((unsigned char **)&t->out[slot], &t->out_size[slot], (size_t)pl->mc * pl->nc * sizeof(float));
}

/* ---- FP8 e4m3 (portable path) ---- */

float cpu_gemm_fp8_f32[256];
static pthread_once_t g_fp8_once = PTHREAD_ONCE_INIT;
uint16_t cpu_gemm_fp8_bf16[128];

static void fp8_lut_make(void) {
    for (int b = 0; b < 256; b++) {
        int e = (b >> 3) & 0xf, m = b & 7;
        float v;
        if (e == 0xf && m == 7) v = NAN;
        else if (e == 0) v = ldexpf((float)m, -9); /* subnormal: m/8 * 2^-6 */
        else v = ldexpf(1.0f + (float)m / 8.0f, e - 7);
        cpu_gemm_fp8_f32[b] = (b & 0x80) ? -v : v;
        if (b < 128) { /* at most 4 significant bits: the top half of the f32 is exact */
            uint32_t u;
            memcpy(&u, &v, 4);
            cpu_gemm_fp8_bf16[b] = isnan(v) ? 0x7fc0 : (uint16_t)(u >> 16);
        }
    }
}

/* ---- plan ---- */

static int64_t tune(const kp_device_info *info, const char *param, int64_t def, int64_t lo, int64_t hi) {
    int64_t v = info ? cpu_host()->tuning_get(info, "grouped_gemm", param, def) : def;
    return v < lo ? lo : v > hi ? hi : v;
}

const cpu_gemm_isa *cpu_gemm_isa_for(cpu_simd_level l) {
#ifdef CPU_GEMM_X86
    if (cpu_simd_at_least(l, CPU_SIMD_AVX512_BF16)) return &cpu_gemm_isa_avx512_bf16;
    if (cpu_simd_at_least(l, CPU_SIMD_AVX512)) return &cpu_gemm_isa_avx512;
    if (cpu_simd_at_least(l, CPU_SIMD_AVX2)) return &cpu_gemm_isa_avx2;
#endif
#ifdef CPU_GEMM_ARM64
    if (cpu_simd_at_least(l, CPU_SIMD_NEON_BF16)) return &cpu_gemm_isa_neon_bf16;
    if (cpu_simd_at_least(l, CPU_SIMD_NEON)) return &cpu_gemm_isa_neon;
#endif
    (void)l;
    return &cpu_gemm_isa_portable;
}

cpu_gemm_plan cpu_gemm_plan_make(const kp_device_info *info, kp_dtype act, kp_dtype a_dtype, kp_dtype w_dtype) {
    cpu_gemm_plan p;
    memset(&p, 0, sizeof p);
    p.simd = cpu_simd_active();
    p.cvt = cpu_kernels_for(p.simd);
    p.isa = cpu_gemm_isa_for(p.simd);
    p.a_dtype = a_dtype;
    /* bf16 dot products for bf16 weights with bf16 activations, and for FP8 weights with
     * bf16 A rows (exact in bf16) where the level decodes FP8 to bf16. f16 and f32
     * activations keep f32 (f16's mantissa). */
    int bf = p.isa->uk_bf16 && act == KP_BF16 &&
             (w_dtype == KP_BF16 || (w_dtype == KP_FP8_E4M3 && a_dtype == KP_BF16 && p.isa->bf16_takes_fp8));
    p.mode = bf ? CPU_GEMM_BF16 : CPU_GEMM_F32;
    if (bf) {
        int64_t kc = tune(info, "kc_bf16", 512, 32, 8192);
        p.kc = (int)(w_dtype == KP_FP8_E4M3 ? (kc + FP8_BLOCK / 2) / FP8_BLOCK * FP8_BLOCK : kc / 32 * 32);
        if (p.kc < FP8_BLOCK && w_dtype == KP_FP8_E4M3) p.kc = FP8_BLOCK;
    } else {
        p.kc = (int)(tune(info, "kc", 256, 16, 8192) / 16 * 16);
        if (w_dtype == KP_FP8_E4M3 && p.isa->fp8_partial) /* whole scale blocks per K block */
            p.kc = p.kc < FP8_BLOCK ? FP8_BLOCK : p.kc / FP8_BLOCK * FP8_BLOCK;
    }
    p.nc = (int)((tune(info, "nc", 256, NR, 8192) + NR - 1) / NR * NR);
    p.mc = (int)tune(info, "mc", 256, MR, CPU_GEMM_MC_MAX);
    p.decode_rows = (int)tune(info, "decode_rows", 16, 0, CPU_GEMM_MC_MAX);
    p.pf = (int)tune(info, "pf", 512, 0, 16384);
    p.dot_rows = (int)tune(info, "dot_rows", p.isa->dot_rows_max, 0, p.isa->dot_rows_max);
    p.pf_dot = (int)tune(info, "pf_dot", -1, -1, 16384);
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

/* ---- portable packing and micro-kernel (f32 mode) ---- */

/* Weight row n, K [k0, k0 + kc) -> f32 (FP8: times its block scale). */
static void w_row_f32(const cpu_gemm_w *w, int64_t n, int64_t k0, int64_t kc, float *dst) {
    const unsigned char *src = w->base + (size_t)(n * w->ld + k0) * kp_dtype_size(w->dtype);
    if (w->dtype != KP_FP8_E4M3) {
        cpu_load_row(cpu_kernels_for(CPU_SIMD_PORTABLE), w->dtype, src, dst, kc);
        return;
    }
    const float *srow = w->scale + (n / FP8_BLOCK) * w->scale_ld0;
    for (int64_t k = 0; k < kc; k++)
        dst[k] = cpu_gemm_fp8_f32[src[k]] * srow[((k0 + k) / FP8_BLOCK) * w->scale_ld1];
}

static void pack_b_f32_c(const cpu_gemm_w *w, int64_t n0, int ncols, int64_t k0, int64_t kc, float *dst,
                         float *scales, int pf) {
    (void)scales, (void)pf;
    enum { CHUNK = 256 };
    float tmp[CHUNK];
    for (int j = 0; j < NR; j++)
        for (int64_t c0 = 0; c0 < kc; c0 += CHUNK) {
            int64_t cn = kc - c0 < CHUNK ? kc - c0 : CHUNK;
            if (j < ncols) w_row_f32(w, n0 + j, k0 + c0, cn, tmp);
            for (int64_t k = 0; k < cn; k++) dst[(c0 + k) * NR + j] = j < ncols ? tmp[k] : 0.0f;
        }
}

static void uk_f32_c(int mr, int64_t kc, const float *a, int64_t lda, const float *b, float *c, int64_t ldc, int ncols,
                     int acc, const float *scales) {
    (void)scales; /* NULL: FP8 is scaled while packing at this level */
    float t[MR][NR];
    memset(t, 0, sizeof t);
    for (int64_t k = 0; k < kc; k++)
        for (int i = 0; i < mr; i++) {
            float x = a[i * lda + k];
            for (int j = 0; j < NR; j++) t[i][j] += x * b[k * NR + j];
        }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < ncols; j++) c[i * ldc + j] = acc ? c[i * ldc + j] + t[i][j] : t[i][j];
}

const cpu_gemm_isa cpu_gemm_isa_portable = {
    .mr = MR,
    .pack_f32 = pack_b_f32_c,
    .uk_f32 = uk_f32_c,
};

/* ---- the driver ---- */

/* A rows' K range [k0, k0 + kc) -> a[i * lda ...] in the compute format (bf16 mode:
 * pairs, a zero after an odd kc). lda in 4-byte units. */
static void pack_a(const cpu_gemm_plan *pl, const unsigned char *const *rows, int m, int64_t k0, int64_t kc,
                   uint32_t *a, int64_t lda) {
    size_t esz = kp_dtype_size(pl->a_dtype);
    for (int i = 0; i < m; i++) {
        const unsigned char *src = rows[i] + (size_t)k0 * esz;
        uint32_t *dst = a + (size_t)i * lda;
        if (pl->mode == CPU_GEMM_BF16) {
            uint16_t *d16 = (uint16_t *)dst;
            if (pl->a_dtype == KP_BF16) memcpy(d16, src, (size_t)kc * 2);
            else pl->cvt->f32_to_bf16((const float *)src, d16, kc); /* f32 intermediates of a bf16 layer */
            if (kc & 1) d16[kc] = 0;
        } else {
            cpu_load_row(pl->cvt, pl->a_dtype, src, (float *)dst, kc);
        }
    }
}

/* Software prefetch of rows [0, nrows) x bytes [0, bytes) (row r at base + r * ld,
 * or at rows[r] + off), a few lines at a time between micro-kernel calls, so the next
 * panel's weights and the next K block of A arrive while this panel computes. */
typedef struct pf_job {
    const unsigned char *base;
    const unsigned char *const *rows;
    int64_t ld, off, bytes;
    int64_t lines, done; /* lines in all; issued so far */
    int r, l;            /* the next line: row r, byte offset l */
} pf_job;

static void pf_init(pf_job *j, const unsigned char *base, const unsigned char *const *rows, int64_t ld, int64_t off,
                    int nrows, int64_t bytes) {
    j->base = base;
    j->rows = rows;
    j->ld = ld;
    j->off = off;
    j->bytes = bytes;
    j->lines = nrows > 0 && bytes > 0 ? (int64_t)nrows * ((bytes + 63) / 64) : 0;
    j->done = 0;
    j->r = j->l = 0;
}

static void pf_issue(pf_job *j, int64_t count) {
    if (j->done + count > j->lines) count = j->lines - j->done;
    j->done += count;
    while (count > 0) {
        const unsigned char *row = j->rows ? j->rows[j->r] + j->off : j->base + j->r * j->ld;
        for (; count > 0 && j->l < j->bytes; count--, j->l += 64) __builtin_prefetch(row + j->l, 0, 3);
        if (j->l >= j->bytes) {
            j->l = 0;
            j->r++;
        }
    }
}

typedef struct panel_ctx {
    const cpu_gemm_plan *pl;
    const cpu_gemm_isa *isa;
    const cpu_gemm_w *w;
    int bf, fp8;
    int row_pf;   /* the packer's prefetch distance along rows (decode path) */
    uint32_t *b;  /* packed panel */
    float *scales;
    const float *uk_scales; /* scales when the micro-kernel applies them, else NULL */
    pf_job pf[2]; /* issued during panel_rows (lines == 0: none) */
} panel_ctx;

static void pack_b(const panel_ctx *x, int64_t n0, int ncols, int64_t k0, int64_t kc) {
    if (x->bf) x->isa->pack_bf16(x->w, n0, ncols, k0, kc, x->b, x->scales, x->row_pf);
    else x->isa->pack_f32(x->w, n0, ncols, k0, kc, (float *)x->b, x->scales, x->row_pf);
}

/* Rows [0, m) of packed A (a, at the panel's K offset) times the packed panel. */
static void panel_rows(panel_ctx *x, int m, int64_t kc, const uint32_t *a, int64_t lda, float *c, int ldc,
                       int ncols, int acc) {
    const int step = x->isa->mr;
    int calls = (m + step - 1) / step;
    int64_t per[2] = {(x->pf[0].lines + calls - 1) / calls, (x->pf[1].lines + calls - 1) / calls};
    for (int i0 = 0; i0 < m; i0 += step) {
        pf_issue(&x->pf[0], per[0]);
        pf_issue(&x->pf[1], per[1]);
        int mr = m - i0 < step ? m - i0 : step;
        const uint32_t *ai = a + (size_t)i0 * lda;
        float *ci = c + (size_t)i0 * ldc;
        if (x->bf) x->isa->uk_bf16(mr, (kc + 1) / 2, ai, lda, x->b, ci, ldc, ncols, acc, x->fp8 ? x->scales : NULL);
        else x->isa->uk_f32(mr, kc, (const float *)ai, lda, (const float *)x->b, ci, ldc, ncols, acc, x->uk_scales);
    }
}

kp_status cpu_gemm_block(const cpu_gemm_plan *pl, const unsigned char *const *a_rows, int m, const cpu_gemm_w *w,
                         int64_t n0, int nc, float *c, int ldc) {
    const int64_t K = w->k;
    panel_ctx x = {.pl = pl, .isa = pl->isa, .w = w, .bf = pl->mode == CPU_GEMM_BF16, .fp8 = w->dtype == KP_FP8_E4M3};
    if (K == 0 || m == 0) {
        for (int i = 0; i < m; i++) memset(c + (size_t)i * ldc, 0, (size_t)nc * sizeof *c);
        return KP_OK;
    }
    const int64_t kc = pl->kc < K ? pl->kc : K;
    /* lda in 4-byte units: f32 elements, or bf16 pairs */
    int64_t full_lda = (K + 31) / 32 * 32 / (x.bf ? 2 : 1) + LDA_PAD;
    int full = m <= pl->decode_rows && (size_t)m * full_lda * 4 <= A_FULL_MAX;
    int64_t lda = full ? full_lda : (kc + 31) / 32 * 32 / (x.bf ? 2 : 1) + LDA_PAD;
    size_t a_bytes = ((size_t)m * lda * 4 + 63) / 64 * 64, b_bytes = (size_t)kc * NR * 4;
    size_t s_bytes = (size_t)(kc / FP8_BLOCK + 1) * NR * 4;
    gemm_tls *t = thread_tls();
    unsigned char *scr = t ? tls_grow(&t->work, &t->work_size, a_bytes + b_bytes + s_bytes) : NULL;
    if (!scr) return KP_ERR_OUT_OF_MEMORY;
    uint32_t *a = (uint32_t *)scr;
    x.b = (uint32_t *)(scr + a_bytes);
    x.scales = (float *)(scr + a_bytes + b_bytes);
    x.uk_scales = !x.bf && x.fp8 && x.isa->fp8_partial ? x.scales : NULL;
    memset(x.pf, 0, sizeof x.pf);
    x.row_pf = full ? pl->pf : 0;
    if (full) {
        pack_a(pl, a_rows, m, 0, K, a, lda);
        if (m <= pl->dot_rows && x.bf && x.isa->dot_bf16) {
            x.isa->dot_bf16(m, K, (const uint16_t *)a, lda * 2, w, n0, nc, c, ldc, pl->pf_dot);
            return KP_OK;
        }
        if (m <= pl->dot_rows && !x.bf && x.isa->dot_f32) {
            x.isa->dot_f32(m, K, (const float *)a, lda, w, n0, nc, c, ldc, pl->pf_dot);
            return KP_OK;
        }
        for (int p = 0; p < nc; p += NR) {
            int pn = nc - p < NR ? nc - p : NR;
            for (int64_t k0 = 0; k0 < K; k0 += kc) {
                int64_t kk = K - k0 < kc ? K - k0 : kc;
                pack_b(&x, n0 + p, pn, k0, kk);
                panel_rows(&x, m, kk, a + (x.bf ? k0 / 2 : k0), lda, c + p, ldc, pn, k0 > 0);
            }
        }
        return KP_OK;
    }
    /* prefetch: the next panel's weights (or the first panel's of the next K block),
     * and a slice of the A rows' next K block per panel */
    const size_t wsz = kp_dtype_size(w->dtype), asz = kp_dtype_size(pl->a_dtype);
    const int panels = (nc + NR - 1) / NR;
    const int use_pf = pl->pf > 0;
    for (int64_t k0 = 0; k0 < K; k0 += kc) {
        int64_t kk = K - k0 < kc ? K - k0 : kc, k1 = k0 + kk, kn = K - k1 < kc ? K - k1 : kc;
        pack_a(pl, a_rows, m, k0, kk, a, lda);
        for (int p = 0; p < nc; p += NR) {
            int pn = nc - p < NR ? nc - p : NR, pi = p / NR;
            pack_b(&x, n0 + p, pn, k0, kk);
            if (use_pf) {
                int last = p + NR >= nc;
                int64_t pk = last ? k1 : k0, pb = last ? kn : kk;
                int np = last ? (nc < NR ? nc : NR) : (nc - p - NR < NR ? nc - p - NR : NR);
                const unsigned char *wb = w->base + (size_t)((n0 + (last ? 0 : p + NR)) * w->ld + pk) * wsz;
                pf_init(&x.pf[0], wb, NULL, w->ld * (int64_t)wsz, 0, pb > 0 ? np : 0, pb * (int64_t)wsz);
                int r0 = (int)((int64_t)m * pi / panels), r1 = (int)((int64_t)m * (pi + 1) / panels);
                pf_init(&x.pf[1], NULL, a_rows + r0, 0, k1 * (int64_t)asz, kn > 0 ? r1 - r0 : 0, kn * (int64_t)asz);
            }
            panel_rows(&x, m, kk, a, lda, c + p, ldc, pn, k0 > 0);
        }
    }
    return KP_OK;
}

kp_status cpu_gemm_block_w8a8(const cpu_gemm_plan *pl, const uint8_t *const *a_rows, const float *const *a_scales,
                              int64_t scale_step, int m, const cpu_gemm_w *w, int64_t n0, int nc, float *c, int ldc) {
    gemm_tls *t = thread_tls();
    float *cs = t ? tls_grow(&t->w8a8[0], &t->w8a8_size[0], (size_t)pl->mc * ldc * sizeof(float)) : NULL;
    uint16_t *a16 = t ? tls_grow(&t->w8a8[1], &t->w8a8_size[1], (size_t)pl->mc * FP8_BLOCK * sizeof(uint16_t)) : NULL;
    if (!cs || !a16) return KP_ERR_OUT_OF_MEMORY;
    const unsigned char *rows[CPU_GEMM_MC_MAX];
    cpu_gemm_w ws = *w;
    ws.k = FP8_BLOCK;
    for (int i = 0; i < m; i++) {
        rows[i] = (const unsigned char *)(a16 + (size_t)i * FP8_BLOCK);
        memset(c + (size_t)i * ldc, 0, (size_t)nc * sizeof *c);
    }
    for (int64_t kb = 0; kb < w->k / FP8_BLOCK; kb++) {
        const int64_t k0 = kb * FP8_BLOCK;
        for (int i = 0; i < m; i++) { /* e4m3 -> bf16 is exact: the table holds |x|, the sign moves over */
            const uint8_t *src = a_rows[i] + k0;
            uint16_t *dst = a16 + (size_t)i * FP8_BLOCK;
            for (int l = 0; l < FP8_BLOCK; l++)
                dst[l] = (uint16_t)(cpu_gemm_fp8_bf16[src[l] & 0x7f] | ((src[l] & 0x80u) << 8));
        }
        ws.base = w->base + k0;
        ws.scale = w->scale + kb * w->scale_ld1;
        kp_status st = cpu_gemm_block(pl, rows, m, &ws, n0, nc, cs, ldc);
        if (st != KP_OK) return st;
        for (int i = 0; i < m; i++) {
            const float sa = a_scales[i][kb * scale_step];
            float *ci = c + (size_t)i * ldc;
            const float *si = cs + (size_t)i * ldc;
            for (int n = 0; n < nc; n++) ci[n] += si[n] * sa;
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

static int64_t expert_tasks_count(cpu_expert_tasks *t, const cpu_gemm_plan *pl, int64_t experts, int64_t n,
                                  int64_t *start) {
    t->experts = experts;
    t->n = n;
    t->mc = pl->mc;
    t->nc = pl->nc;
    t->ntiles = (n + t->nc - 1) / t->nc;
    t->start = start;
    start[0] = 0;
    for (int64_t e = 0; e < experts; e++) {
        int64_t lo, hi;
        cpu_expert_rows(t, e, &lo, &hi);
        start[e + 1] = start[e] + (hi - lo + t->mc - 1) / t->mc * t->ntiles;
    }
    return start[experts];
}

int64_t cpu_expert_tasks_init(cpu_expert_tasks *t, const cpu_gemm_plan *pl, const int32_t *off, int64_t experts,
                              int64_t n, int64_t *start) {
    t->off = off;
    t->masked_m = NULL;
    t->max_m = 0;
    return expert_tasks_count(t, pl, experts, n, start);
}

int64_t cpu_expert_tasks_init_masked(cpu_expert_tasks *t, const cpu_gemm_plan *pl, const int32_t *masked_m,
                                     int64_t max_m, int64_t experts, int64_t n, int64_t *start) {
    t->off = NULL;
    t->masked_m = masked_m;
    t->max_m = max_m;
    return expert_tasks_count(t, pl, experts, n, start);
}

cpu_expert_task cpu_expert_task_at(const cpu_expert_tasks *t, int64_t index) {
    int64_t lo = 0, hi = t->experts - 1; /* the expert e with start[e] <= index < start[e + 1] */
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (t->start[mid] <= index) lo = mid;
        else hi = mid - 1;
    }
    cpu_expert_task k;
    int64_t r_lo, r_hi;
    cpu_expert_rows(t, lo, &r_lo, &r_hi);
    int64_t local = index - t->start[lo], rows = r_hi - r_lo;
    int64_t chunks = (rows + t->mc - 1) / t->mc;
    int64_t tile = local / chunks, chunk = local % chunks;
    k.e = lo;
    k.n0 = tile * t->nc;
    k.nc = (int)(t->n - k.n0 < t->nc ? t->n - k.n0 : t->nc);
    k.row0 = r_lo + chunk * t->mc;
    k.m = (int)(rows - chunk * t->mc < t->mc ? rows - chunk * t->mc : t->mc);
    return k;
}
