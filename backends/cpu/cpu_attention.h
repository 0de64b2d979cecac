/*
 * backends/cpu/cpu_attention.h — the flash-attention engine the three CPU attention
 * ops share (cpu_attention_common.c).
 *
 * One "work item" is a set of m query rows that read the same keys: the query heads
 * of one KV head (GQA/MQA packing) times a run of queries. Its keys are visited in
 * blocks of CPU_ATT_NB; each block is
 *   1. gathered: a row pointer per key (paged or contiguous), f16/bf16 rows converted
 *      to f32 once for all m rows (V rows reuse K's when V is K's prefix, as in MLA);
 *      FP8 e4m3 rows decoded through a table of e4m3 * scale rounded to q's dtype
 *      (cpu_att_fp8_lut), to f32 or, for decode-sized items, to q's 16-bit dtype,
 *   2. S^T[n][r] = k_n · q_r, with q kept transposed (qt[k][r], pre-scaled by
 *      softmax_scale·log2 e) so a vector holds 16 query rows; with 8 rows or fewer
 *      (decode) as dot products of 4 keys x 4 rows reduced together instead,
 *   3. masked online softmax, vectorised across rows: running max mx and sum l per
 *      row (log2 domain), p = exp2(s - mx) in place of S^T, alpha = exp2(mx_old - mx),
 *   4. O[r][:] = alpha_r·O[r][:] + Σ_n p[n][r]·v_n.
 * No S×S matrix exists: S^T is CPU_ATT_NB × m. Each row sees keys [lo_r, hi_r) (causal,
 * sliding window and sequence bounds all give one interval). A row that sees no key
 * finishes with out 0 and lse +inf. Split-KV partials (mx, l, unnormalised O) merge
 * through their log-sum-exp in cpu_att_combine.
 *
 * The micro-kernels (qk, softmax, pv) have one implementation per SIMD level, each in
 * its own file (cpu_attention_portable.c, _avx2.c, _avx512.c, _neon.c), chosen once
 * per op call from the backend's level.
 */
#ifndef KPORT_CPU_ATTENTION_H
#define KPORT_CPU_ATTENTION_H

#include "cpu_internal.h"

#include <stdatomic.h>

#define CPU_ATT_NB 64          /* keys per block */
#define CPU_ATT_MAX_D 1024     /* largest head dim (q/k and v) the CPU backend takes */
#define CPU_ATT_MAX_ROWS 256   /* rows per work item a op aims for (more when s_q needs it) */

struct cpu_att_fp8_lut;

typedef struct cpu_att_kernels {
    /* st[n*ldst + r] = Σ_k krow[n][k]·q_r[k], n < nk, r < mpad (mpad % 16 == 0): q is
     * qt[k*mpad + r] (transposed, zero past m) and qr[r*d + k] (row-major, r < m); a
     * kernel reads whichever suits m (dot products when m is a decode group's few rows). */
    void (*qk)(const float *qt, const float *qr, int d, int m, int mpad, const float *const *krow, int nk,
               float *st, int64_t ldst);
    /* Online-softmax step over a block whose first key is j0; row r sees keys in
     * [lo[r], hi[r]). Turns st into p, updates mx and l, writes alpha, for rows r < m;
     * a kernel may also do the rows up to its vector width past m (below pad16(m),
     * where lo = hi: no key visible). */
    void (*softmax)(float *st, int64_t ldst, int nk, int m, int64_t j0, const int32_t *lo, const int32_t *hi,
                    float *mx, float *l, float *alpha);
    /* o[r*ldo + j] = alpha[r]·o[r*ldo + j] + Σ_n p[n*ldp + r]·vrow[n][j], r < m, j < dv */
    void (*pv)(const float *p, int64_t ldp, const float *const *vrow, int nk, float *o, int64_t ldo, int m, int dv,
               const float *alpha);
    /* Decode-sized items (m <= CPU_ATT_RAW_ROWS): qk (from qr) and pv straight off
     * 16-bit rows (dt f16 or bf16), converted in registers, so a cache row is read
     * once and never written back as f32. NULL: rows are converted to f32 first. */
    void (*qk16)(kp_dtype dt, const float *qr, int d, int m, const void *const *krow, int nk, float *st,
                 int64_t ldst);
    void (*pv16)(kp_dtype dt, const float *p, int64_t ldp, const void *const *vrow, int nk, float *o, int64_t ldo,
                 int m, int dv, const float *alpha);
    /* FP8 e4m3 rows: n bytes -> the values table t gives them (below), as f32 (fp8_f32)
     * or as t->dt's 16-bit bits for qk16/pv16 (fp8_16; t->dt f16 or bf16). Every level
     * writes exactly what the portable table lookup does, bit for bit. */
    void (*fp8_f32)(const uint8_t *src, float *dst, int64_t n, const struct cpu_att_fp8_lut *t);
    void (*fp8_16)(const uint8_t *src, uint16_t *dst, int64_t n, const struct cpu_att_fp8_lut *t);
} cpu_att_kernels;

#define CPU_ATT_RAW_ROWS 8 /* the most rows qk16/pv16 take */

/* What an FP8 cache row's bytes read as (kport.h): e4m3 * scale rounded to the math
 * dtype dt, one value per byte, so per element a lookup replaces a decode, a multiply
 * and a rounding; the scale costs nothing per element. Built once per scale (per
 * tensor: once; per cache block: when the block's scale differs from the last one).
 * Sign-symmetric: entry b | 0x80 is entry b negated (h: the sign bit set), NaN included,
 * so a SIMD level may look up the 7-bit magnitude and move the sign over. */
typedef struct cpu_att_fp8_lut {
    float f[256];               /* f32 */
    uint16_t h[256];            /* dt's bits (dt f16 / bf16; 0 for f32) */
    uint8_t lo[128], hi[128];   /* h[0..127]'s low and high bytes (byte-table lookups) */
    kp_dtype dt;
    uint32_t scale_bits;
    bool valid;
} cpu_att_fp8_lut;

/* Fills t for dt and scale (conv: the level's dtype conversions, bit-identical at
 * every level). */
void cpu_att_fp8_lut_make(cpu_att_fp8_lut *t, const cpu_kernels *conv, kp_dtype dt, float scale);
/* The portable decoders (table lookups): the reference every level matches. */
void cpu_att_fp8_f32_c(const uint8_t *src, float *dst, int64_t n, const cpu_att_fp8_lut *t);
void cpu_att_fp8_16_c(const uint8_t *src, uint16_t *dst, int64_t n, const cpu_att_fp8_lut *t);
#if defined(__x86_64__) || defined(__i386__)
/* AVX2 (gathers from t->f), and AVX-512 VBMI (byte permutes of t->lo / t->hi held in
 * four zmm): the AVX-512 level takes the VBMI pair when cpuid has VBMI, else AVX2's. */
void cpu_att_fp8_f32_avx2(const uint8_t *src, float *dst, int64_t n, const cpu_att_fp8_lut *t);
void cpu_att_fp8_16_avx2(const uint8_t *src, uint16_t *dst, int64_t n, const cpu_att_fp8_lut *t);
void cpu_att_fp8_f32_vbmi(const uint8_t *src, float *dst, int64_t n, const cpu_att_fp8_lut *t);
void cpu_att_fp8_16_vbmi(const uint8_t *src, uint16_t *dst, int64_t n, const cpu_att_fp8_lut *t);
bool cpu_att_has_vbmi(void);
#endif

const cpu_att_kernels *cpu_att_kernels_for(cpu_simd_level l);

extern const cpu_att_kernels cpu_att_kernels_portable;
#if defined(__x86_64__) || defined(__i386__)
extern const cpu_att_kernels cpu_att_kernels_avx2;   /* built with -mavx2 -mfma -mf16c */
extern const cpu_att_kernels cpu_att_kernels_avx512; /* target attributes */
#endif
#if defined(__aarch64__)
extern const cpu_att_kernels cpu_att_kernels_neon;
#endif

/* Where one KV head's keys live. Key j is row j of a contiguous sequence (table NULL),
 * or row j % block_size of cache block table[j / block_size]. Offsets in elements. */
typedef struct cpu_att_kv {
    const unsigned char *k, *v; /* element 0 of this head in row 0 (of block 0) */
    int64_t k_row, v_row;       /* between consecutive keys (within a block) */
    int64_t k_blk, v_blk;       /* between cache blocks */
    const int32_t *table;       /* borrowed; NULL: contiguous */
    int64_t block_size;
    bool v_is_k_prefix;         /* V row j = the first dv elements of K row j (MLA) */
    const float *k_scale, *v_scale; /* FP8 rows (kv_dt e4m3): [1] or per cache block */
    bool k_per_block, v_per_block;
} cpu_att_kv;

/* What stays fixed over one op call. */
typedef struct cpu_att_problem {
    const cpu_att_kernels *kern; /* static */
    const cpu_kernels *conv;     /* static */
    kp_dtype dt;                 /* q and out (and k, v as the caller passed them) */
    kp_dtype kv_dt;              /* the K/V rows cpu_att_run reads: dt, or f32 when an op
                                    converted them once for all its items, or FP8 e4m3
                                    (dequantized with cpu_att_kv's scales, rounded to dt) */
    int d, dv;
    float scale_log2;            /* softmax_scale · log2(e) */
} cpu_att_problem;

void cpu_att_problem_init(cpu_att_problem *p, kp_backend_state *b, kp_dtype dt, int d, int dv, float scale);

/* One work item's scratch, carved from a slot (cpu_att_slots). */
typedef struct cpu_att_work {
    int m, mpad, max_m;
    float *qt;       /* [d][mpad] */
    float *qr;       /* [max_m][d] */
    float *o;        /* [max_m][dv] */
    float *mx, *l, *alpha; /* [mpad] */
    int32_t *lo, *hi;      /* [mpad] */
    float *st;       /* [NB][mpad] */
    float *kf, *vf;  /* [NB][d], [NB][dv]: converted rows */
    float *tmp;      /* [max(d, dv)] */
    const float **krow, **vrow; /* [NB] */
    const void **kraw, **vraw;  /* [NB]: 16-bit rows for qk16/pv16 */
    uint16_t *kh, *vh;  /* [NB][d], [NB][dv]: FP8 rows decoded for qk16/pv16 (in kf, vf) */
    cpu_att_fp8_lut *fp8_lut; /* [2]: FP8 caches, K's and V's tables for the scale last seen */
} cpu_att_work;

size_t cpu_att_work_bytes(int max_m, int d, int dv);
void cpu_att_work_bind(cpu_att_work *w, void *mem, int max_m, int d, int dv);

/* Starts an item of m rows (m <= max_m): O = 0, mx = -inf, l = 0, every row empty. */
void cpu_att_begin(const cpu_att_problem *p, cpu_att_work *w, int m);
/* Row r's query (d elements of p->dt) and the keys [lo, hi) it sees. */
void cpu_att_set_row(const cpu_att_problem *p, cpu_att_work *w, int r, const void *q, int64_t lo, int64_t hi);
/* Visits keys [j_begin, j_end) (clipped to what the rows see). */
void cpu_att_run(const cpu_att_problem *p, cpu_att_work *w, const cpu_att_kv *kv, int64_t j_begin, int64_t j_end);
/* Writes row r: out (dv elements of p->dt) = O/l, *lse = ln Σ exp (lse may be NULL). */
void cpu_att_finish_row(const cpu_att_problem *p, cpu_att_work *w, int r, void *out, float *lse);
/* Copies row r's partial state: o [dv] unnormalised, *mx, *l. */
void cpu_att_partial_row(const cpu_att_problem *p, const cpu_att_work *w, int r, float *o, float *mx, float *l);
/* Merges n partials (o_i at o + i*o_stride, mx[i], l[i]) into out and *lse (may be
 * NULL); tmp holds dv floats. */
void cpu_att_combine(const cpu_att_problem *p, int n, const float *o, int64_t o_stride, const float *mx,
                     const float *l, float *tmp, void *out, float *lse);

/* Per-thread scratch slots: at most `threads` items run at once (one per pool thread),
 * so a taker always finds a free slot. All memory is allocated before an op writes
 * anything, so running out of it leaves the outputs untouched. */
typedef struct cpu_att_slots {
    unsigned char *mem; /* owned */
    size_t bytes;       /* per slot, a multiple of 64 */
    int n;
    atomic_int *busy;   /* owned */
} cpu_att_slots;

kp_status cpu_att_slots_init(cpu_att_slots *s, int n, size_t bytes);
int cpu_att_slot_take(cpu_att_slots *s);
void cpu_att_slot_give(cpu_att_slots *s, int i);
void cpu_att_slots_free(cpu_att_slots *s);

/* Address of element [i0][i1][i2][0] of a tensor (rank 3 or 4: i0.. are the leading
 * indices), for the CPU backend's host buffers. */
static inline unsigned char *cpu_att_at(const kp_tensor *t, int64_t i0, int64_t i1, int64_t i2) {
    int64_t off = i0 * t->strides[0] + i1 * t->strides[1] + (t->ndim > 3 ? i2 * t->strides[2] : 0);
    return cpu_tensor_data(t) + off * (int64_t)kp_dtype_size(t->dtype);
}

/* Paged-KV content checks shared by decode and MLA decode: every seq_len in
 * [0, max_blocks·block_size], every block_table entry a sequence uses in
 * [0, num_blocks). Sets the error naming the argument (lens_name: "seq_lens") and
 * index. *max_len gets the
 * longest sequence. */
kp_status cpu_att_check_paged(const char *op, const char *lens_name, const kp_tensor *block_table,
                              const kp_tensor *seq_lens, int64_t num_blocks, int64_t block_size, int64_t *max_len);

/* Number of KV splits for decode: forced (> 0) or chosen so B·h_kv·splits keeps the
 * pool busy with at least ~256 keys per split. */
int cpu_att_num_splits(int32_t forced, int64_t units, int64_t max_len, int threads);

/* Paged decode, shared by kp_attention_decode and kp_mla_decode (MLA: one KV head,
 * v_cache == k_cache, v_is_k_prefix). Checks the content of block_table and seq_lens
 * first, allocates all scratch, then writes; takes the stream's lock. */
typedef struct cpu_att_paged_args {
    const char *op;
    const kp_tensor *q, *k_cache, *v_cache, *block_table, *seq_lens, *out, *lse; /* borrowed */
    const kp_tensor *k_scale, *v_scale; /* FP8 caches' scales; NULL or absent otherwise */
    int d, dv;
    float scale;
    int32_t causal, num_splits;
    int32_t window_left; /* > 0: query at position p sees keys from p - window_left on; else unbounded */
    bool v_is_k_prefix;
} cpu_att_paged_args;

kp_status cpu_att_paged(kp_stream *s, const cpu_att_paged_args *a);

#endif /* KPORT_CPU_ATTENTION_H */
