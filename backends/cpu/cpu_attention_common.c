/*
 * backends/cpu/cpu_attention_common.c — the flash-attention engine of the CPU backend
 * (see cpu_attention.h): the choice of micro-kernels per SIMD level (they live in
 * cpu_attention_<level>.c), the block loop, finishing and split-KV combining,
 * per-thread scratch slots, paged-KV content checks.
 */
#include "cpu_attention.h"
#include "cpu_fp8.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define LN2 0.69314718055994530942
#define CPU_ATT_PREFETCH 16 /* keys ahead */
#define LOG2E 1.44269504088896340736

const cpu_att_kernels *cpu_att_kernels_for(cpu_simd_level l) {
#if defined(__x86_64__) || defined(__i386__)
    if (cpu_simd_at_least(l, CPU_SIMD_AVX512)) return &cpu_att_kernels_avx512;
    if (cpu_simd_at_least(l, CPU_SIMD_AVX2)) return &cpu_att_kernels_avx2;
#endif
#if defined(__aarch64__)
    if (cpu_simd_at_least(l, CPU_SIMD_NEON)) return &cpu_att_kernels_neon;
#endif
    return &cpu_att_kernels_portable;
}

/* ------------------------------------------------------------------------ */
/* The block loop                                                            */
/* ------------------------------------------------------------------------ */

void cpu_att_problem_init(cpu_att_problem *p, kp_backend_state *b, kp_dtype dt, int d, int dv, float scale) {
    cpu_simd_level l = cpu_simd_active();
    if (!cpu_simd_at_least(b->simd, l)) l = b->simd; /* never above the level the backend started with */
    p->kern = cpu_att_kernels_for(l);
    p->conv = cpu_kernels_for(l);
    p->dt = dt;
    p->kv_dt = dt;
    p->d = d;
    p->dv = dv;
    p->scale_log2 = (float)((double)scale * LOG2E);
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static int pad16(int m) { return (m + 15) & ~15; }

size_t cpu_att_work_bytes(int max_m, int d, int dv) {
    size_t mp = (size_t)pad16(max_m), nb = CPU_ATT_NB, f = sizeof(float);
    size_t dmax = (size_t)(d > dv ? d : dv);
    return 2 * align64((size_t)d * mp * f) + align64((size_t)max_m * (size_t)dv * f) + 3 * align64(mp * f) +
           2 * align64(mp * sizeof(int32_t)) + align64(nb * mp * f) + align64(nb * (size_t)d * f) +
           align64(nb * (size_t)dv * f) + align64(dmax * f) + 4 * align64(nb * sizeof(float *)) +
           align64(2 * sizeof(cpu_att_fp8_lut));
}

void cpu_att_work_bind(cpu_att_work *w, void *mem, int max_m, int d, int dv) {
    size_t mp = (size_t)pad16(max_m), nb = CPU_ATT_NB, f = sizeof(float);
    size_t dmax = (size_t)(d > dv ? d : dv);
    unsigned char *c = mem;
#define TAKE(field, type, n)                   \
    w->field = (type)(void *)c;                \
    c += align64(n)
    TAKE(qt, float *, (size_t)d * mp * f);
    TAKE(qr, float *, (size_t)d * mp * f);
    TAKE(o, float *, (size_t)max_m * (size_t)dv * f);
    TAKE(mx, float *, mp * f);
    TAKE(l, float *, mp * f);
    TAKE(alpha, float *, mp * f);
    TAKE(lo, int32_t *, mp * sizeof(int32_t));
    TAKE(hi, int32_t *, mp * sizeof(int32_t));
    TAKE(st, float *, nb * mp * f);
    TAKE(kf, float *, nb * (size_t)d * f);
    TAKE(vf, float *, nb * (size_t)dv * f);
    TAKE(tmp, float *, dmax * f);
    TAKE(krow, const float **, nb * sizeof(float *));
    TAKE(vrow, const float **, nb * sizeof(float *));
    TAKE(kraw, const void **, nb * sizeof(void *));
    TAKE(vraw, const void **, nb * sizeof(void *));
    TAKE(fp8_lut, cpu_att_fp8_lut *, 2 * sizeof(cpu_att_fp8_lut));
#undef TAKE
    w->kh = (uint16_t *)(void *)w->kf;
    w->vh = (uint16_t *)(void *)w->vf;
    w->max_m = max_m;
    w->m = w->mpad = 0;
    w->fp8_lut[0].valid = w->fp8_lut[1].valid = false;
}

void cpu_att_begin(const cpu_att_problem *p, cpu_att_work *w, int m) {
    w->m = m;
    w->mpad = pad16(m);
    memset(w->o, 0, (size_t)m * (size_t)p->dv * sizeof(float));
    for (int r = 0; r < w->mpad; r++) {
        w->mx[r] = -INFINITY;
        w->l[r] = 0.0f;
        w->lo[r] = w->hi[r] = 0;
    }
    if (m < w->mpad)
        for (int k = 0; k < p->d; k++)
            for (int r = m; r < w->mpad; r++) w->qt[(int64_t)k * w->mpad + r] = 0.0f;
}

/* n elements of dt at src -> f32 at dst */
static void to_f32(const cpu_att_problem *p, const void *src, float *dst, int64_t n) {
    switch (p->dt) {
    case KP_F16: p->conv->f16_to_f32(src, dst, n); break;
    case KP_BF16: p->conv->bf16_to_f32(src, dst, n); break;
    default: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    }
}

/* n elements of the K/V rows' dtype at src -> f32 at dst */
static void kv_to_f32(const cpu_att_problem *p, const void *src, float *dst, int64_t n) {
    switch (p->kv_dt) {
    case KP_F16: p->conv->f16_to_f32(src, dst, n); break;
    case KP_BF16: p->conv->bf16_to_f32(src, dst, n); break;
    default: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    }
}

/* e4m3 byte -> f32, exact, for every byte (kp_fp8.h's decoder; NaN keeps its sign) */
static float g_e4m3[256];
static pthread_once_t g_e4m3_once = PTHREAD_ONCE_INIT;

static void e4m3_make(void) {
    for (int b = 0; b < 128; b++) {
        g_e4m3[b] = cpu_e4m3_to_f32((uint8_t)b);
        g_e4m3[b | 0x80] = -g_e4m3[b];
    }
}

void cpu_att_fp8_lut_make(cpu_att_fp8_lut *t, const cpu_kernels *conv, kp_dtype dt, float scale) {
    pthread_once(&g_e4m3_once, e4m3_make);
    for (int b = 0; b < 128; b++) t->f[b] = g_e4m3[b] * scale; /* the product in f32, as kport.h reads it */
    if (dt == KP_BF16) conv->f32_to_bf16(t->f, t->h, 128), conv->bf16_to_f32(t->h, t->f, 128);
    else if (dt == KP_F16) conv->f32_to_f16(t->f, t->h, 128), conv->f16_to_f32(t->h, t->f, 128);
    else memset(t->h, 0, sizeof t->h);
    for (int b = 0; b < 128; b++) {
        t->f[b | 0x80] = -t->f[b]; /* rounding to nearest even is symmetric */
        t->h[b | 0x80] = (uint16_t)(t->h[b] | (dt == KP_F32 ? 0 : 0x8000u));
        t->lo[b] = (uint8_t)(t->h[b] & 0xffu);
        t->hi[b] = (uint8_t)(t->h[b] >> 8);
    }
    t->dt = dt;
    memcpy(&t->scale_bits, &scale, sizeof t->scale_bits);
    t->valid = true;
}

/* The table for key j's row of an FP8 cache (which: 0 K, 1 V), rebuilt when the row's
 * scale (per tensor, or its cache block's) differs from the one t holds. */
static inline const cpu_att_fp8_lut *fp8_lut_at(const cpu_att_problem *p, cpu_att_fp8_lut *t, const float *scales,
                                                bool per_block, const int32_t *table, int64_t block_size,
                                                int64_t j) {
    float s = scales[per_block ? table[j / block_size] : 0];
    uint32_t bits;
    memcpy(&bits, &s, sizeof bits);
    if (!t->valid || t->scale_bits != bits) cpu_att_fp8_lut_make(t, p->conv, p->dt, s);
    return t;
}

static void from_f32(const cpu_att_problem *p, const float *src, void *dst, int64_t n) {
    switch (p->dt) {
    case KP_F16: p->conv->f32_to_f16(src, dst, n); break;
    case KP_BF16: p->conv->f32_to_bf16(src, dst, n); break;
    default: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    }
}

void cpu_att_set_row(const cpu_att_problem *p, cpu_att_work *w, int r, const void *q, int64_t lo, int64_t hi) {
    to_f32(p, q, w->tmp, p->d);
    float *qr = w->qr + (int64_t)r * p->d;
    for (int k = 0; k < p->d; k++) {
        qr[k] = w->tmp[k] * p->scale_log2;
        w->qt[(int64_t)k * w->mpad + r] = qr[k];
    }
    if (lo < 0) lo = 0;
    if (hi < lo) hi = lo;
    w->lo[r] = (int32_t)lo;
    w->hi[r] = (int32_t)hi;
}

/* Byte offsets of key j's K and V rows. */
static inline void key_rows(const cpu_att_kv *kv, int64_t j, int64_t es, const unsigned char **kp,
                            const unsigned char **vp) {
    int64_t koff, voff;
    if (kv->table) {
        int64_t blk = kv->table[j / kv->block_size], row = j % kv->block_size;
        koff = blk * kv->k_blk + row * kv->k_row;
        voff = blk * kv->v_blk + row * kv->v_row;
    } else {
        koff = j * kv->k_row;
        voff = j * kv->v_row;
    }
    *kp = kv->k + koff * es;
    *vp = kv->v + voff * es;
}

/* Asks for key j's rows ahead of use: paged rows sit at scattered addresses the
 * hardware prefetcher does not follow. One key at a time, interleaved with the
 * gather, keeps the number of misses in flight within what the core can track. */
static inline void prefetch_key(const cpu_att_problem *p, const cpu_att_kv *kv, int64_t j, int64_t es) {
    const unsigned char *kp, *vp;
    key_rows(kv, j, es, &kp, &vp);
    for (int64_t b = 0; b < p->d * es; b += 64) __builtin_prefetch(kp + b, 0, 3);
    if (!kv->v_is_k_prefix)
        for (int64_t b = 0; b < p->dv * es; b += 64) __builtin_prefetch(vp + b, 0, 3);
}

/* One block of nk keys (first key j0) whose f32 rows are krow/vrow: S, softmax, O. */
static inline void att_block(const cpu_att_problem *p, cpu_att_work *w, const float *const *krow,
                             const float *const *vrow, int nk, int64_t j0) {
    p->kern->qk(w->qt, w->qr, p->d, w->m, w->mpad, krow, nk, w->st, w->mpad);
    p->kern->softmax(w->st, w->mpad, nk, w->m, j0, w->lo, w->hi, w->mx, w->l, w->alpha);
    p->kern->pv(w->st, w->mpad, vrow, nk, w->o, p->dv, w->m, p->dv, w->alpha);
}

/* Does an item of m rows read its 16-bit K/V rows directly (qk16/pv16)? With few rows
 * the conversion to f32 would cost as much as the attention itself. */
static inline bool use_raw(const cpu_att_problem *p, int m) {
    kp_dtype raw = p->kv_dt == KP_FP8_E4M3 ? p->dt : p->kv_dt; /* FP8 rows decode to q's dtype */
    return raw != KP_F32 && m <= CPU_ATT_RAW_ROWS && p->kern->qk16 && p->kern->pv16;
}

/* The 16-bit dtype qk16/pv16 read: the cache's, or an FP8 cache's decoded rows' (q's). */
static inline kp_dtype raw_dtype(const cpu_att_problem *p) {
    return p->kv_dt == KP_FP8_E4M3 ? p->dt : p->kv_dt;
}

/* att_block over 16-bit rows (use_raw). */
static inline void att_block_raw(const cpu_att_problem *p, cpu_att_work *w, const void *const *krow,
                                 const void *const *vrow, int nk, int64_t j0) {
    p->kern->qk16(raw_dtype(p), w->qr, p->d, w->m, krow, nk, w->st, w->mpad);
    p->kern->softmax(w->st, w->mpad, nk, w->m, j0, w->lo, w->hi, w->mx, w->l, w->alpha);
    p->kern->pv16(raw_dtype(p), w->st, w->mpad, vrow, nk, w->o, p->dv, w->m, p->dv, w->alpha);
}

void cpu_att_run(const cpu_att_problem *p, cpu_att_work *w, const cpu_att_kv *kv, int64_t j_begin, int64_t j_end) {
    int64_t lo = INT64_MAX, hi = 0;
    for (int r = 0; r < w->m; r++)
        if (w->lo[r] < w->hi[r]) {
            if (w->lo[r] < lo) lo = w->lo[r];
            if (w->hi[r] > hi) hi = w->hi[r];
        }
    if (j_begin < lo) j_begin = lo;
    if (j_end > hi) j_end = hi;
    const int64_t es = (int64_t)kp_dtype_size(p->kv_dt);
    const bool f32 = p->kv_dt == KP_F32, raw = use_raw(p, w->m), fp8 = p->kv_dt == KP_FP8_E4M3;
    for (int64_t j = j_begin; j < j_end && j < j_begin + CPU_ATT_PREFETCH; j++) prefetch_key(p, kv, j, es);
    for (int64_t j0 = j_begin; j0 < j_end; j0 += CPU_ATT_NB) {
        int nk = j_end - j0 < CPU_ATT_NB ? (int)(j_end - j0) : CPU_ATT_NB;
        for (int n = 0; n < nk; n++) {
            const unsigned char *kp, *vp;
            if (j0 + n + CPU_ATT_PREFETCH < j_end) prefetch_key(p, kv, j0 + n + CPU_ATT_PREFETCH, es);
            key_rows(kv, j0 + n, es, &kp, &vp);
            if (fp8) { /* decoded through the rows' tables: to q's 16-bit dtype for qk16/pv16, else f32 */
                const cpu_att_fp8_lut *kt = fp8_lut_at(p, &w->fp8_lut[0], kv->k_scale, kv->k_per_block, kv->table,
                                                       kv->block_size, j0 + n);
                const cpu_att_fp8_lut *vt = kv->v_is_k_prefix ? kt
                                                              : fp8_lut_at(p, &w->fp8_lut[1], kv->v_scale,
                                                                           kv->v_per_block, kv->table,
                                                                           kv->block_size, j0 + n);
                if (raw) {
                    uint16_t *kd = w->kh + (int64_t)n * p->d, *vd = w->vh + (int64_t)n * p->dv;
                    p->kern->fp8_16(kp, kd, p->d, kt);
                    if (!kv->v_is_k_prefix) p->kern->fp8_16(vp, vd, p->dv, vt);
                    w->kraw[n] = kd;
                    w->vraw[n] = kv->v_is_k_prefix ? (const void *)kd : (const void *)vd;
                } else {
                    float *kd = w->kf + (int64_t)n * p->d, *vd = w->vf + (int64_t)n * p->dv;
                    p->kern->fp8_f32(kp, kd, p->d, kt);
                    if (!kv->v_is_k_prefix) p->kern->fp8_f32(vp, vd, p->dv, vt);
                    w->krow[n] = kd;
                    w->vrow[n] = kv->v_is_k_prefix ? kd : vd;
                }
            } else if (raw) {
                w->kraw[n] = kp;
                w->vraw[n] = kv->v_is_k_prefix ? kp : vp;
            } else if (f32) {
                w->krow[n] = (const float *)(const void *)kp;
                w->vrow[n] = kv->v_is_k_prefix ? w->krow[n] : (const float *)(const void *)vp;
            } else {
                float *kd = w->kf + (int64_t)n * p->d;
                kv_to_f32(p, kp, kd, p->d);
                w->krow[n] = kd;
                if (kv->v_is_k_prefix) {
                    w->vrow[n] = kd;
                } else {
                    float *vd = w->vf + (int64_t)n * p->dv;
                    kv_to_f32(p, vp, vd, p->dv);
                    w->vrow[n] = vd;
                }
            }
        }
        if (raw) att_block_raw(p, w, w->kraw, w->vraw, nk, j0);
        else att_block(p, w, w->krow, w->vrow, nk, j0);
    }
}

void cpu_att_finish_row(const cpu_att_problem *p, cpu_att_work *w, int r, void *out, float *lse) {
    float l = w->l[r];
    const float *o = w->o + (int64_t)r * p->dv;
    if (l > 0.0f) {
        float inv = 1.0f / l;
        for (int j = 0; j < p->dv; j++) w->tmp[j] = o[j] * inv;
        if (lse) *lse = (float)(((double)w->mx[r] + log2((double)l)) * LN2);
    } else {
        memset(w->tmp, 0, (size_t)p->dv * sizeof(float));
        if (lse) *lse = INFINITY;
    }
    from_f32(p, w->tmp, out, p->dv);
}

void cpu_att_partial_row(const cpu_att_problem *p, const cpu_att_work *w, int r, float *o, float *mx, float *l) {
    memcpy(o, w->o + (int64_t)r * p->dv, (size_t)p->dv * sizeof(float));
    *mx = w->mx[r];
    *l = w->l[r];
}

void cpu_att_combine(const cpu_att_problem *p, int n, const float *o, int64_t o_stride, const float *mx,
                     const float *l, float *tmp, void *out, float *lse) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++)
        if (l[i] > 0.0f && mx[i] > m) m = mx[i];
    memset(tmp, 0, (size_t)p->dv * sizeof(float));
    double total = 0.0;
    if (m != -INFINITY) {
        for (int i = 0; i < n; i++) {
            if (!(l[i] > 0.0f)) continue;
            float wgt = exp2f(mx[i] - m);
            total += (double)l[i] * wgt;
            const float *oi = o + i * o_stride;
            for (int j = 0; j < p->dv; j++) tmp[j] += wgt * oi[j];
        }
    }
    if (total > 0.0) {
        float inv = (float)(1.0 / total);
        for (int j = 0; j < p->dv; j++) tmp[j] *= inv;
        if (lse) *lse = (float)(((double)m + log2(total)) * LN2);
    } else if (lse) {
        *lse = INFINITY;
    }
    from_f32(p, tmp, out, p->dv);
}

/* ------------------------------------------------------------------------ */
/* Scratch slots                                                             */
/* ------------------------------------------------------------------------ */

kp_status cpu_att_slots_init(cpu_att_slots *s, int n, size_t bytes) {
    memset(s, 0, sizeof *s);
    s->bytes = align64(bytes);
    s->n = n;
    s->busy = calloc((size_t)n, sizeof *s->busy);
    size_t total = s->bytes * (size_t)n;
    if (s->bytes && (size_t)n > SIZE_MAX / s->bytes) s->mem = NULL;
    else s->mem = aligned_alloc(64, total > 0 ? total : 64);
    if (!s->busy || !s->mem) {
        cpu_att_slots_free(s);
        return KP_ERR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < n; i++) atomic_init(&s->busy[i], 0);
    return KP_OK;
}

int cpu_att_slot_take(cpu_att_slots *s) {
    for (;;)
        for (int i = 0; i < s->n; i++) {
            int expect = 0;
            if (atomic_compare_exchange_strong(&s->busy[i], &expect, 1)) return i;
        }
}

void cpu_att_slot_give(cpu_att_slots *s, int i) { atomic_store(&s->busy[i], 0); }

void cpu_att_slots_free(cpu_att_slots *s) {
    free(s->mem);
    free(s->busy);
    s->mem = NULL;
    s->busy = NULL;
}

/* ------------------------------------------------------------------------ */
/* Paged KV checks and split choice                                          */
/* ------------------------------------------------------------------------ */

kp_status cpu_att_check_paged(const char *op, const char *lens_name, const kp_tensor *block_table,
                              const kp_tensor *seq_lens, int64_t num_blocks, int64_t block_size, int64_t *max_len) {
    const int64_t b = seq_lens->shape[0], max_blocks = block_table->shape[1];
    const int32_t *lens = (const int32_t *)(const void *)cpu_tensor_data(seq_lens);
    const int32_t *table = (const int32_t *)(const void *)cpu_tensor_data(block_table);
    *max_len = 0;
    for (int64_t i = 0; i < b; i++) {
        int64_t len = lens[i];
        if (len < 0 || len > max_blocks * block_size)
            return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                         "%s: %s[%lld] is %lld; it must be in [0, max_blocks * block_size = "
                                         "%lld * %lld]",
                                         op, lens_name, (long long)i, (long long)len, (long long)max_blocks,
                                         (long long)block_size);
        if (len > *max_len) *max_len = len;
        for (int64_t j = 0; j < (len + block_size - 1) / block_size; j++) {
            int32_t e = table[i * block_table->strides[0] + j * block_table->strides[1]];
            if (e < 0 || e >= num_blocks)
                return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                             "%s: block_table[%lld, %lld] is %d; it must be in [0, num_blocks %lld) "
                                             "(sequence %lld uses %lld blocks)",
                                             op, (long long)i, (long long)j, (int)e, (long long)num_blocks,
                                             (long long)i, (long long)((len + block_size - 1) / block_size));
        }
    }
    return KP_OK;
}

int cpu_att_num_splits(int32_t forced, int64_t units, int64_t max_len, int threads) {
    if (forced > 0) return forced;
    if (units <= 0 || units >= 2 * (int64_t)threads || max_len <= 512) return 1;
    int64_t want = (4 * (int64_t)threads + units - 1) / units;
    int64_t cap = max_len / 256;
    if (want > cap) want = cap;
    if (want > 64) want = 64;
    return want < 1 ? 1 : (int)want;
}

/* ------------------------------------------------------------------------ */
/* Paged decode driver (attention_decode and mla_decode)                     */
/* ------------------------------------------------------------------------ */

typedef struct paged_job {
    const cpu_att_paged_args *a;
    cpu_att_problem prob;
    cpu_att_slots slots;
    int max_m;
    int64_t b, s_q, h_q, h_kv, group, heads_per_item, head_chunks;
    int splits;
    int tile;                        /* heads mode: keys per tile */
    float *part_o, *part_m, *part_l; /* splits > 1: [B, s_q, h_q, splits] (x dv for o) */
    const float *k_scale, *v_scale;  /* FP8 caches */
    bool k_per_block, v_per_block;
} paged_job;

static float *lse_at(const kp_tensor *lse, int64_t i0, int64_t i1, int64_t i2) {
    if (!lse->buffer) return NULL;
    int64_t off = i0 * lse->strides[0] + i1 * lse->strides[1] + i2 * lse->strides[2];
    return (float *)(void *)cpu_tensor_data(lse) + off;
}

/* item = ((b * h_kv + g) * head_chunks + c) * splits + split */
static void paged_items(void *ctx, int64_t begin, int64_t end) {
    paged_job *j = ctx;
    const cpu_att_paged_args *a = j->a;
    const cpu_att_problem *p = &j->prob;
    int slot = cpu_att_slot_take(&j->slots);
    cpu_att_work w;
    cpu_att_work_bind(&w, j->slots.mem + (size_t)slot * j->slots.bytes, j->max_m, p->d, p->dv);
    const int32_t *lens = (const int32_t *)(const void *)cpu_tensor_data(a->seq_lens);
    for (int64_t it = begin; it < end; it++) {
        int64_t split = it % j->splits, rest = it / j->splits;
        int64_t c = rest % j->head_chunks;
        rest /= j->head_chunks;
        int64_t g = rest % j->h_kv, b = rest / j->h_kv;
        int64_t h0 = g * j->group + c * j->heads_per_item;
        int64_t nh = j->group - c * j->heads_per_item;
        if (nh > j->heads_per_item) nh = j->heads_per_item;
        int64_t len = lens[b];
        /* this split's keys, in whole blocks of CPU_ATT_NB */
        int64_t per = (len + j->splits - 1) / j->splits;
        per = (per + CPU_ATT_NB - 1) / CPU_ATT_NB * CPU_ATT_NB;
        int64_t kb = split * per, ke = kb + per < len ? kb + per : len;

        cpu_att_begin(p, &w, (int)(j->s_q * nh));
        for (int64_t i = 0; i < j->s_q; i++) {
            int64_t last = a->causal ? len - j->s_q + i + 1 : len; /* keys [first, last) */
            int64_t first = a->window_left > 0 ? len - j->s_q + i - a->window_left : 0;
            if (last > len) last = len;
            for (int64_t hh = 0; hh < nh; hh++)
                cpu_att_set_row(p, &w, (int)(i * nh + hh), cpu_att_at(a->q, b, i, h0 + hh), first, last);
        }
        cpu_att_kv kv = {
            .k = cpu_att_at(a->k_cache, 0, 0, g),
            .v = cpu_att_at(a->v_cache, 0, 0, g),
            .k_row = a->k_cache->strides[1],
            .v_row = a->v_cache->strides[1],
            .k_blk = a->k_cache->strides[0],
            .v_blk = a->v_cache->strides[0],
            .table = (const int32_t *)(const void *)cpu_tensor_data(a->block_table) +
                     b * a->block_table->strides[0],
            .block_size = a->k_cache->shape[1],
            .v_is_k_prefix = a->v_is_k_prefix,
            .k_scale = j->k_scale,
            .v_scale = j->v_scale,
            .k_per_block = j->k_per_block,
            .v_per_block = j->v_per_block,
        };
        if (kb < ke) cpu_att_run(p, &w, &kv, kb, ke);
        for (int64_t i = 0; i < j->s_q; i++)
            for (int64_t hh = 0; hh < nh; hh++) {
                int r = (int)(i * nh + hh);
                int64_t h = h0 + hh;
                if (j->splits == 1) {
                    cpu_att_finish_row(p, &w, r, cpu_att_at(a->out, b, i, h), lse_at(a->lse, b, h, i));
                } else {
                    int64_t idx = ((b * j->s_q + i) * j->h_q + h) * j->splits + split;
                    cpu_att_partial_row(p, &w, r, j->part_o + idx * p->dv, j->part_m + idx, j->part_l + idx);
                }
            }
    }
    cpu_att_slot_give(&j->slots, slot);
}

/* row = (b * s_q + i) * h_q + h */
static void paged_combine(void *ctx, int64_t begin, int64_t end) {
    paged_job *j = ctx;
    const cpu_att_paged_args *a = j->a;
    float tmp[CPU_ATT_MAX_D];
    for (int64_t row = begin; row < end; row++) {
        int64_t h = row % j->h_q, i = (row / j->h_q) % j->s_q, b = row / (j->h_q * j->s_q);
        int64_t idx = row * j->splits;
        cpu_att_combine(&j->prob, j->splits, j->part_o + idx * j->prob.dv, j->prob.dv, j->part_m + idx,
                        j->part_l + idx, tmp, cpu_att_at(a->out, b, i, h), lse_at(a->lse, b, h, i));
    }
}

/* Heads mode (h_kv > 1): one item is a (sequence, split) and visits its keys in tiles
 * of j->tile keys across all KV heads, so each cache row ([h_kv, d]) is read whole and
 * in order, once (a per-head item would read a d-element slice of every row: a strided
 * walk that touches a new page per key when h_kv·d is large). A tile's rows are
 * converted to f32 once (f16/bf16) into kf/vf, then each head runs its rows (its GQA
 * group x s_q) over the tile from there; every head keeps its own O, max and sum.
 * FP8 caches decode per head instead, just before that head runs the tile: the head's
 * slice of the tile's rows into kf/vf (16-bit for qk16/pv16, else f32), through one
 * table per cache-block scale the tile meets (built once per tile, for all heads). */
#define CPU_ATT_TILE_BYTES (256 * 1024) /* aim for converted K+V of one tile, all heads */

static size_t head_state_bytes(int max_m, int d, int dv) {
    size_t mp = (size_t)pad16(max_m), f = sizeof(float);
    return align64((size_t)d * mp * f) + align64((size_t)max_m * (size_t)d * f) +
           align64((size_t)max_m * (size_t)dv * f) + 3 * align64(mp * f) + 2 * align64(mp * sizeof(int32_t));
}

/* FP8 tables per K and V in a heads-mode slot: a tile of t keys meets at most
 * t / block_size + 2 cache blocks */
static int heads_luts(const paged_job *j) {
    int64_t n = j->tile / j->a->k_cache->shape[1] + 2;
    return n > j->tile ? j->tile : (int)n;
}

static size_t heads_slot_bytes(const paged_job *j) {
    size_t mp = (size_t)pad16(j->max_m), f = sizeof(float), hk = (size_t)j->h_kv;
    size_t d = (size_t)j->prob.d, dv = (size_t)j->prob.dv, dmax = d > dv ? d : dv;
    size_t conv = 0;
    if (j->prob.kv_dt == KP_FP8_E4M3) /* one head's slice of a tile, and the tables */
        conv = align64((size_t)j->tile * d * f) + align64((size_t)j->tile * dv * f) +
               align64(2 * (size_t)heads_luts(j) * sizeof(cpu_att_fp8_lut));
    else if (j->prob.kv_dt != KP_F32 && !use_raw(&j->prob, j->max_m))
        conv = align64((size_t)j->tile * hk * d * f) + align64((size_t)j->tile * hk * dv * f);
    return align64(hk * sizeof(cpu_att_work)) + hk * head_state_bytes(j->max_m, j->prob.d, j->prob.dv) +
           align64(CPU_ATT_NB * mp * f) + conv + align64(dmax * f) + 4 * align64(CPU_ATT_NB * sizeof(float *));
}

/* A table for scale s from a pool of n: entry *i when it holds s, else the next one
 * (rebuilt). A tile meets fewer than n scales, so no entry it uses is overwritten. */
static const cpu_att_fp8_lut *fp8_pool_lut(const cpu_att_problem *p, cpu_att_fp8_lut *pool, int n, int *i,
                                           float s) {
    uint32_t bits;
    memcpy(&bits, &s, sizeof bits);
    if (pool[*i].valid && pool[*i].scale_bits == bits) return &pool[*i];
    *i = (*i + 1) % n;
    if (!pool[*i].valid || pool[*i].scale_bits != bits) cpu_att_fp8_lut_make(&pool[*i], p->conv, p->dt, s);
    return &pool[*i];
}

/* item = b * splits + split */
static void heads_items(void *ctx, int64_t begin, int64_t end) {
    paged_job *j = ctx;
    const cpu_att_paged_args *a = j->a;
    const cpu_att_problem *p = &j->prob;
    const int d = p->d, dv = p->dv, max_m = j->max_m, hk = (int)j->h_kv;
    const size_t mp = (size_t)pad16(max_m), f = sizeof(float);
    int slot = cpu_att_slot_take(&j->slots);
    unsigned char *c = j->slots.mem + (size_t)slot * j->slots.bytes;
    cpu_att_work *w = (cpu_att_work *)(void *)c;
    c += align64((size_t)hk * sizeof(cpu_att_work));
    float *st = (float *)(void *)c;
    c += align64(CPU_ATT_NB * mp * f);
    const bool raw = use_raw(p, max_m); /* 16-bit rows read in place: nothing converted (FP8: decoded) */
    const bool fp8 = p->kv_dt == KP_FP8_E4M3;
    float *kf = NULL, *vf = NULL;
    cpu_att_fp8_lut *kpool = NULL, *vpool = NULL;
    const cpu_att_fp8_lut *klut[CPU_ATT_NB], *vlut[CPU_ATT_NB];
    const int nlut = fp8 ? heads_luts(j) : 0;
    if (fp8) {
        kf = (float *)(void *)c;
        c += align64((size_t)j->tile * (size_t)d * f);
        vf = (float *)(void *)c;
        c += align64((size_t)j->tile * (size_t)dv * f);
        kpool = (cpu_att_fp8_lut *)(void *)c;
        vpool = kpool + nlut;
        c += align64(2 * (size_t)nlut * sizeof(cpu_att_fp8_lut));
        for (int i = 0; i < 2 * nlut; i++) kpool[i].valid = false;
    } else if (p->kv_dt != KP_F32 && !raw) {
        kf = (float *)(void *)c;
        c += align64((size_t)j->tile * (size_t)hk * (size_t)d * f);
        vf = (float *)(void *)c;
        c += align64((size_t)j->tile * (size_t)hk * (size_t)dv * f);
    }
    int kpi = 0, vpi = 0; /* the pool entries last used */
    float *tmp = (float *)(void *)c;
    c += align64((size_t)(d > dv ? d : dv) * f);
    const float **krow = (const float **)(void *)c;
    c += align64(CPU_ATT_NB * sizeof(float *));
    const float **vrow = (const float **)(void *)c;
    c += align64(CPU_ATT_NB * sizeof(float *));
    const void **kraw = (const void **)(void *)c;
    c += align64(CPU_ATT_NB * sizeof(void *));
    const void **vraw = (const void **)(void *)c;
    c += align64(CPU_ATT_NB * sizeof(void *));
    for (int g = 0; g < hk; g++) {
        cpu_att_work *x = &w[g];
#define TAKE(field, type, n)                   \
    x->field = (type)(void *)c;                \
    c += align64(n)
        TAKE(qt, float *, (size_t)d * mp * f);
        TAKE(qr, float *, (size_t)max_m * (size_t)d * f);
        TAKE(o, float *, (size_t)max_m * (size_t)dv * f);
        TAKE(mx, float *, mp * f);
        TAKE(l, float *, mp * f);
        TAKE(alpha, float *, mp * f);
        TAKE(lo, int32_t *, mp * sizeof(int32_t));
        TAKE(hi, int32_t *, mp * sizeof(int32_t));
#undef TAKE
        x->st = st, x->kf = NULL, x->vf = NULL, x->tmp = tmp, x->krow = krow, x->vrow = vrow;
        x->kraw = kraw, x->vraw = vraw;
        x->kh = NULL, x->vh = NULL, x->fp8_lut = NULL;
        x->max_m = max_m, x->m = x->mpad = 0;
    }
    const int32_t *lens = (const int32_t *)(const void *)cpu_tensor_data(a->seq_lens);
    const int64_t es = (int64_t)kp_dtype_size(p->kv_dt), bs = a->k_cache->shape[1];
    const int64_t k_row = a->k_cache->strides[1], v_row = a->v_cache->strides[1];
    const int64_t k_blk = a->k_cache->strides[0], v_blk = a->v_cache->strides[0];
    const int64_t k_hd = a->k_cache->strides[2] * es, v_hd = a->v_cache->strides[2] * es; /* bytes between heads */
    const bool f32 = p->kv_dt == KP_F32, kcont = k_hd == d * es, vcont = v_hd == dv * es;
    const unsigned char *kbase = cpu_att_at(a->k_cache, 0, 0, 0), *vbase = cpu_att_at(a->v_cache, 0, 0, 0);
    const unsigned char *kr[CPU_ATT_NB], *vr[CPU_ATT_NB];
    /* bytes of a cache row that hold the heads' data */
    const int64_t k_span = (hk - 1) * k_hd + d * es, v_span = (hk - 1) * v_hd + dv * es;
    const int m = (int)(j->s_q * j->group);
    for (int64_t it = begin; it < end; it++) {
        int64_t split = it % j->splits, b = it / j->splits;
        int64_t len = lens[b];
        int64_t per = (len + j->splits - 1) / j->splits;
        per = (per + CPU_ATT_NB - 1) / CPU_ATT_NB * CPU_ATT_NB;
        int64_t kb = split * per, ke = kb + per < len ? kb + per : len;
        int64_t lo = INT64_MAX, hi = 0;
        for (int g = 0; g < hk; g++) {
            cpu_att_begin(p, &w[g], m);
            for (int64_t i = 0; i < j->s_q; i++) {
                int64_t last = a->causal ? len - j->s_q + i + 1 : len;
                int64_t first = a->window_left > 0 ? len - j->s_q + i - a->window_left : 0;
                if (last > len) last = len;
                for (int64_t hh = 0; hh < j->group; hh++)
                    cpu_att_set_row(p, &w[g], (int)(i * j->group + hh), cpu_att_at(a->q, b, i, g * j->group + hh),
                                    first, last);
            }
        }
        for (int r = 0; r < m; r++)
            if (w[0].lo[r] < w[0].hi[r]) {
                if (w[0].lo[r] < lo) lo = w[0].lo[r];
                if (w[0].hi[r] > hi) hi = w[0].hi[r];
            }
        if (kb < lo) kb = lo;
        if (ke > hi) ke = hi;
        const int32_t *table = (const int32_t *)(const void *)cpu_tensor_data(a->block_table) +
                               b * a->block_table->strides[0];
        for (int64_t j0 = kb; j0 < ke; j0 += j->tile) {
            int nk = ke - j0 < j->tile ? (int)(ke - j0) : j->tile;
            for (int n = 0; n < nk; n++) {
                int64_t key = j0 + n, blk = table[key / bs], row = key % bs;
                kr[n] = kbase + (blk * k_blk + row * k_row) * es;
                vr[n] = vbase + (blk * v_blk + row * v_row) * es;
                if (fp8) { /* the row's tables: the last one while the scale stays, else the pool's next */
                    const float ks = j->k_scale[j->k_per_block ? blk : 0], vs = j->v_scale[j->v_per_block ? blk : 0];
                    klut[n] = fp8_pool_lut(p, kpool, nlut, &kpi, ks);
                    vlut[n] = fp8_pool_lut(p, vpool, nlut, &vpi, vs);
                    continue;
                }
                if (f32 || raw) continue;
                float *kd = kf + (int64_t)n * hk * d, *vd = vf + (int64_t)n * hk * dv;
                if (kcont) kv_to_f32(p, kr[n], kd, (int64_t)hk * d);
                else
                    for (int g = 0; g < hk; g++) kv_to_f32(p, kr[n] + g * k_hd, kd + (int64_t)g * d, d);
                if (vcont) kv_to_f32(p, vr[n], vd, (int64_t)hk * dv);
                else
                    for (int g = 0; g < hk; g++) kv_to_f32(p, vr[n] + g * v_hd, vd + (int64_t)g * dv, dv);
            }
            /* the next tile's rows stream into L2 while the heads work on this one */
            for (int64_t key = j0 + nk; key < j0 + nk + j->tile && key < ke; key++) {
                int64_t blk = table[key / bs], row = key % bs;
                const unsigned char *kn = kbase + (blk * k_blk + row * k_row) * es;
                const unsigned char *vn = vbase + (blk * v_blk + row * v_row) * es;
                for (int64_t o = 0; o < k_span; o += 64) __builtin_prefetch(kn + o, 0, 2);
                for (int64_t o = 0; o < v_span; o += 64) __builtin_prefetch(vn + o, 0, 2);
            }
            for (int g = 0; g < hk; g++) {
                if (fp8) {
                    for (int n = 0; n < nk; n++) {
                        if (raw) {
                            uint16_t *kd = (uint16_t *)(void *)kf + (int64_t)n * d;
                            uint16_t *vd = (uint16_t *)(void *)vf + (int64_t)n * dv;
                            p->kern->fp8_16(kr[n] + g * k_hd, kd, d, klut[n]);
                            p->kern->fp8_16(vr[n] + g * v_hd, vd, dv, vlut[n]);
                            kraw[n] = kd, vraw[n] = vd;
                        } else {
                            float *kd = kf + (int64_t)n * d, *vd = vf + (int64_t)n * dv;
                            p->kern->fp8_f32(kr[n] + g * k_hd, kd, d, klut[n]);
                            p->kern->fp8_f32(vr[n] + g * v_hd, vd, dv, vlut[n]);
                            krow[n] = kd, vrow[n] = vd;
                        }
                    }
                    if (raw) att_block_raw(p, &w[g], kraw, vraw, nk, j0);
                    else att_block(p, &w[g], krow, vrow, nk, j0);
                    continue;
                }
                if (raw) {
                    for (int n = 0; n < nk; n++) kraw[n] = kr[n] + g * k_hd, vraw[n] = vr[n] + g * v_hd;
                    att_block_raw(p, &w[g], kraw, vraw, nk, j0);
                    continue;
                }
                for (int n = 0; n < nk; n++) {
                    if (f32) {
                        krow[n] = (const float *)(const void *)(kr[n] + g * k_hd);
                        vrow[n] = (const float *)(const void *)(vr[n] + g * v_hd);
                    } else {
                        krow[n] = kf + ((int64_t)n * hk + g) * d;
                        vrow[n] = vf + ((int64_t)n * hk + g) * dv;
                    }
                }
                att_block(p, &w[g], krow, vrow, nk, j0);
            }
        }
        for (int g = 0; g < hk; g++)
            for (int64_t i = 0; i < j->s_q; i++)
                for (int64_t hh = 0; hh < j->group; hh++) {
                    int r = (int)(i * j->group + hh);
                    int64_t h = g * j->group + hh;
                    if (j->splits == 1) {
                        cpu_att_finish_row(p, &w[g], r, cpu_att_at(a->out, b, i, h), lse_at(a->lse, b, h, i));
                    } else {
                        int64_t idx = ((b * j->s_q + i) * j->h_q + h) * j->splits + split;
                        cpu_att_partial_row(p, &w[g], r, j->part_o + idx * p->dv, j->part_m + idx,
                                            j->part_l + idx);
                    }
                }
    }
    cpu_att_slot_give(&j->slots, slot);
}

kp_status cpu_att_paged(kp_stream *s, const cpu_att_paged_args *a) {
    kp_backend_state *bs = cpu_state(s);
    cpu_stream *cs = s->impl;
    paged_job j;
    memset(&j, 0, sizeof j);
    j.a = a;
    j.b = a->q->shape[0];
    j.s_q = a->q->shape[1];
    j.h_q = a->q->shape[2];
    j.h_kv = a->k_cache->shape[2];
    j.group = j.h_q / j.h_kv;

    pthread_mutex_lock(&cs->lock);
    int64_t max_len = 0;
    kp_status st = cpu_att_check_paged(a->op, "seq_lens", a->block_table, a->seq_lens, a->k_cache->shape[0],
                                       a->k_cache->shape[1], &max_len);
    if (st != KP_OK) goto done;

    cpu_att_problem_init(&j.prob, bs, a->q->dtype, a->d, a->dv, a->scale);
    const bool fp8 = a->k_cache->dtype == KP_FP8_E4M3;
    if (fp8) { /* dequantized row by row in cpu_att_run, with the rows' cache-block scales */
        j.prob.kv_dt = KP_FP8_E4M3;
        j.k_scale = (const float *)(const void *)cpu_tensor_data(a->k_scale);
        j.v_scale = a->v_is_k_prefix ? j.k_scale
                                     : (const float *)(const void *)cpu_tensor_data(a->v_scale);
        j.k_per_block = a->k_scale->shape[0] != 1;
        j.v_per_block = a->v_is_k_prefix ? j.k_per_block : a->v_scale->shape[0] != 1;
    }
    int threads = cpu_pool_threads(bs->pool);
    /* heads mode when the cache has several KV heads and a sequence's rows fit an item */
    bool heads = j.h_kv > 1 && j.s_q * j.group <= CPU_ATT_MAX_ROWS;
    if (heads) {
        int64_t per_key = j.h_kv * (a->d + a->dv) * (int64_t)sizeof(float);
        int64_t t = CPU_ATT_TILE_BYTES / per_key;
        /* at least 16 keys even past the budget (wide MHA caches): with few rows per head
         * the per-tile qk/softmax/pv overheads dominate smaller tiles */
        j.tile = t < 16 ? 16 : t > CPU_ATT_NB ? CPU_ATT_NB : (int)t;
        j.max_m = (int)(j.s_q * j.group);
        /* nothing converted, or (FP8) only one head's slice at a time: no budget to keep */
        if (use_raw(&j.prob, j.max_m) || fp8) j.tile = CPU_ATT_NB;
        j.heads_per_item = j.group;
        j.head_chunks = 1;
        /* items are few (one per sequence): split keys until there are ~4 per thread,
         * which also evens out sequences of different lengths */
        j.splits = 1;
        if (a->num_splits > 0) j.splits = a->num_splits;
        else if (j.b < 4 * (int64_t)threads && max_len > 512) {
            int64_t want = (4 * (int64_t)threads + j.b - 1) / j.b, cap = max_len / 256;
            if (want > cap) want = cap;
            if (want > 64) want = 64;
            j.splits = want < 1 ? 1 : (int)want;
        }
        if (heads_slot_bytes(&j) > ((size_t)64 << 20)) heads = false;
    }
    if (!heads) {
        j.heads_per_item = CPU_ATT_MAX_ROWS / j.s_q;
        if (j.heads_per_item < 1) j.heads_per_item = 1;
        if (j.heads_per_item > j.group) j.heads_per_item = j.group;
        j.head_chunks = (j.group + j.heads_per_item - 1) / j.heads_per_item;
        j.max_m = (int)(j.s_q * j.heads_per_item);
        j.splits = cpu_att_num_splits(a->num_splits, j.b * j.h_kv * j.head_chunks, max_len, threads);
    }

    int64_t rows = j.b * j.s_q * j.h_q;
    if (j.splits > 1) {
        size_t n = (size_t)rows * (size_t)j.splits;
        j.part_o = malloc(n * (size_t)a->dv * sizeof(float));
        j.part_m = malloc(n * sizeof(float));
        j.part_l = malloc(n * sizeof(float));
    }
    if ((j.splits > 1 && (!j.part_o || !j.part_m || !j.part_l)) ||
        cpu_att_slots_init(&j.slots, threads,
                           heads ? heads_slot_bytes(&j) : cpu_att_work_bytes(j.max_m, a->d, a->dv)) != KP_OK) {
        st = cpu_host()->set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of memory for the cpu backend's scratch", a->op);
        goto done;
    }
    if (heads) {
        cpu_pool_parallel_for(bs->pool, j.b * j.splits, 1, heads_items, &j);
    } else {
        int64_t items = j.b * j.h_kv * j.head_chunks * j.splits;
        cpu_pool_parallel_for(bs->pool, items, 1, paged_items, &j);
    }
    if (j.splits > 1) cpu_pool_parallel_for(bs->pool, rows, 16, paged_combine, &j);
done:
    cpu_att_slots_free(&j.slots);
    free(j.part_o);
    free(j.part_m);
    free(j.part_l);
    pthread_mutex_unlock(&cs->lock);
    return st;
}
