/*
 * tests/test_opencl_attention.c — the OpenCL attention kernels' own paths, beyond
 * what the conformance suite (tests/conformance/test_conf_attention.c, _mla.c) covers
 * on every backend:
 *  - strided views: q, k, v as slices of one packed qkv tensor, out with a row pitch;
 *  - tile boundaries: tiny tiles (tuning file: 32 threads, block_m 2, block_n 16), so
 *    every sequence spans many query and key tiles; a max_seqlen_q below the real
 *    lengths (the kernel's grid-stride loop) and rows past cu_seqlens_q[B];
 *  - the tile-MMA fragment path (tuning mma 1): on PoCL it runs through the portable
 *    fragments of kernels/common/kp_tile_mma.h, the same kernel code that takes PTX
 *    mma.sync on NVIDIA;
 *  - the split-KV combine at the extremes (1024 splits, far more than key tiles);
 *  - bad index contents: clamped in the kernel, so nothing outside any buffer is read
 *    or written (guard bytes) and the call still succeeds.
 * Every result is compared with the float64 references in tests/ref.
 */
#include "conformance/conf_attention.h"
#include "ref_attention.h"

#include <math.h>
#include <stdatomic.h>
#include <unistd.h>

void kp_tuning_reset(void); /* core/tuning.c: rereads KPORT_TUNING_FILE */

/* Points the tuning table at a file holding lines (vendor;arch;device;kernel;param;value). */
static void use_tuning(const char *lines) {
    char path[] = "/tmp/kport-attn-tuning-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK((size_t)write(fd, lines, strlen(lines)) == strlen(lines));
    close(fd);
    setenv("KPORT_TUNING_FILE", path, 1);
    kp_tuning_reset();
}

static kp_device *open_opencl(void) {
    kp_device *d = kp_test_open_backend("opencl");
    return d;
}

/* Contiguous double copy of a [n, h, d] slice (heads h0..h0+h) of a [n, H, d] host array. */
static double *slice_heads(const double *x, int64_t n, int H, int d, int h0, int h) {
    double *o = malloc((size_t)(n * h * d + 1) * sizeof *o);
    for (int64_t t = 0; t < n; t++)
        for (int j = 0; j < h; j++) memcpy(o + (t * h + j) * d, x + (t * H + h0 + j) * d, (size_t)d * sizeof *o);
    return o;
}

/* Self-attention prefill on q, k, v sliced out of one packed [total, h_q + 2 h_kv, d]
 * tensor; out is written with a row pitch of 2 h_q dv. cu_q_end < total leaves rows
 * past the last sequence (out 0, lse +inf). */
static void packed_case(kp_device *dev, kp_stream *s, kp_dtype dt, int nb, const int32_t *len, int cu_q_end_short,
                        int h_q, int h_kv, int d, int causal, int wl, int wr, int max_q_override) {
    int32_t cu[9];
    cu[0] = 0;
    int max_len = 0;
    for (int b = 0; b < nb; b++) cu[b + 1] = cu[b] + len[b], max_len = len[b] > max_len ? len[b] : max_len;
    int64_t total = cu[nb] + cu_q_end_short;
    int H = h_q + 2 * h_kv;
    int64_t sh[3] = {total, H, d}, so[3] = {total, 2 * h_q, d}, sl[2] = {h_q, total}, scu[1] = {nb + 1};
    double cud[9];
    for (int b = 0; b <= nb; b++) cud[b] = cu[b];
    kp_conf_tensor qkv = kp_conf_random(dev, "qkv", dt, 3, sh, -1.0, 1.0);
    kp_conf_tensor outw = kp_conf_output(dev, "out", dt, 3, so);
    kp_conf_tensor lse = kp_conf_output(dev, "lse", KP_F32, 2, sl);
    kp_conf_tensor cq = kp_conf_from(dev, "cu_seqlens", KP_I32, 1, scu, cud);
    size_t es = kp_dtype_size(dt);

    kp_attention_prefill_params p;
    memset(&p, 0, sizeof p);
    int64_t st_qkv[3] = {(int64_t)H * d, d, 1}, st_o[3] = {2LL * h_q * d, d, 1};
    int64_t shq[3] = {total, h_q, d}, shk[3] = {total, h_kv, d};
    CHECK_OK(kp_tensor_init(&p.q, qkv.t.buffer, qkv.t.offset, dt, 3, shq, st_qkv));
    CHECK_OK(kp_tensor_init(&p.k, qkv.t.buffer, qkv.t.offset + (size_t)h_q * d * es, dt, 3, shk, st_qkv));
    CHECK_OK(kp_tensor_init(&p.v, qkv.t.buffer, qkv.t.offset + (size_t)(h_q + h_kv) * d * es, dt, 3, shk, st_qkv));
    CHECK_OK(kp_tensor_init(&p.out, outw.t.buffer, outw.t.offset + (size_t)h_q * d * es, dt, 3, shq, st_o));
    p.lse = lse.t, p.cu_seqlens_q = cq.t, p.cu_seqlens_k = cq.t;
    p.max_seqlen_q = max_q_override >= 0 ? max_q_override : max_len, p.max_seqlen_k = max_len;
    p.softmax_scale = (float)(1.0 / sqrt((double)d)), p.causal = causal, p.window_left = wl, p.window_right = wr;
    kp_test_require_op(dev, KP_OP_ATTENTION_PREFILL, &p);
    CHECK_OK(kp_attention_prefill(s, &p));
    CHECK_OK(kp_stream_sync(s));

    double *q = slice_heads(qkv.host, total, H, d, 0, h_q), *k = slice_heads(qkv.host, total, H, d, h_q, h_kv);
    double *v = slice_heads(qkv.host, total, H, d, h_q + h_kv, h_kv);
    size_t no = (size_t)(total * h_q * d + 1), nl = (size_t)(total * h_q + 1);
    double *ref = calloc(no, sizeof *ref), *ref_lse = calloc(nl, sizeof *ref_lse);
    ref_attn_err e = {kp_conf_prec(dt), calloc(no, sizeof(double)), calloc(nl, sizeof(double))};
    /* the reference treats rows past cu[nb] as empty; its k/v are the same total rows */
    ref_attention_prefill(q, k, v, total, h_q, h_kv, d, d, cu, cu, nb, (double)p.softmax_scale, causal, wl, wr, ref,
                          ref_lse, &e);
    kp_conf_download(&outw);
    double *got = slice_heads(outw.host, total, 2 * h_q, d, h_q, h_q);
    char what[160];
    snprintf(what, sizeof what, "packed prefill %s h %d/%d d %d causal %d window %d/%d", kp_dtype_name(dt), h_q, h_kv,
             d, causal, wl, wr);
    kp_conf_check_at(what, dt, got, ref, e.out, total * h_q * d, 3, shq, "token,head,col", __FILE__, __LINE__);
    /* the other half of each out row is not ours: still the poison */
    for (int64_t t = 0; t < total; t++)
        for (int j = 0; j < h_q * d; j++) CHECK_MSG(isnan(outw.host[t * 2 * h_q * d + j]), "out pad written at row %lld", (long long)t);
    kp_conf_download(&lse);
    kp_conf_expect("packed prefill lse", &lse, ref_lse, e.lse, "head,token");
    free(q), free(k), free(v), free(ref), free(ref_lse), free(got), free(e.out), free(e.lse);
    kp_conf_free(&qkv), kp_conf_free(&outw), kp_conf_free(&lse), kp_conf_free(&cq);
}

static const int32_t lens5[5] = {1, 45, 0, 17, 100};

KP_TEST(opencl_attn_prefill_strided) {
    kp_device *d = open_opencl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    packed_case(d, s, KP_BF16, 5, lens5, 0, 8, 2, 128, 1, -1, -1, -1);
    packed_case(d, s, KP_F32, 5, lens5, 3, 4, 1, 64, 0, 9, 2, -1);
    packed_case(d, s, KP_F16, 5, lens5, 0, 2, 2, 64, 1, 4, -1, -1);
    CHECK_OK(kp_stream_destroy(s));
}

/* Tiny tiles: every sequence spans many query and key tiles, and max_seqlen_q = 1 makes
 * one work-group per (head, sequence) walk all of its query tiles. */
KP_TEST(opencl_attn_prefill_small_tiles) {
    use_tuning("*;*;*;attention_prefill;threads;32\n*;*;*;attention_prefill;block_m;2\n"
               "*;*;*;attention_prefill;block_n;16\n");
    kp_device *d = open_opencl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    packed_case(d, s, KP_F32, 5, lens5, 2, 6, 2, 64, 1, -1, -1, 1);
    packed_case(d, s, KP_BF16, 5, lens5, 0, 4, 4, 64, 0, 20, 5, -1);
    CHECK_OK(kp_stream_destroy(s));
}

static const int32_t dec_lens[4] = {0, 1, 77, 300};

/* The tile-MMA fragment path of every kernel, f16 and bf16. */
KP_TEST(opencl_attn_mma_path) {
    use_tuning("*;*;*;attention_prefill;mma;1\n*;*;*;attention_prefill;threads;64\n"
               "*;*;*;attention_prefill;block_m;32\n*;*;*;attention_prefill;block_n;32\n"
               "*;*;*;attention_decode;mma;1\n*;*;*;attention_decode;threads;32\n"
               "*;*;*;attention_decode;block_m;16\n*;*;*;attention_decode;block_n;16\n"
               "*;*;*;mla_decode;mma;1\n*;*;*;mla_decode;threads;64\n*;*;*;mla_decode;block_m;32\n"
               "*;*;*;mla_decode;block_n;32\n");
    kp_device *d = open_opencl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    packed_case(d, s, KP_BF16, 5, lens5, 0, 8, 2, 128, 1, -1, -1, -1);
    packed_case(d, s, KP_F16, 5, lens5, 1, 4, 4, 64, 0, 30, 3, -1);
    static const int32_t splits[2] = {1, 5};
    conf_paged_case a = {.dt = KP_F16, .b = 4, .s_q = 2, .h_q = 8, .h_kv = 2, .d = 128, .dv = 128, .block_size = 16,
        .seq_lens = dec_lens, .causal = 1, .lse = 1, .splits = splits, .nsplits = 2};
    conf_run_paged(d, s, &a);
    conf_paged_case b = {.dt = KP_BF16, .b = 4, .s_q = 1, .h_q = 16, .h_kv = 1, .d = 192, .dv = 128,
        .block_size = 32, .seq_lens = dec_lens, .causal = 0, .lse = 1, .splits = splits, .nsplits = 2};
    conf_run_paged(d, s, &b);
    conf_paged_case m = {.dt = KP_BF16, .b = 4, .s_q = 2, .h_q = 16, .h_kv = 1, .d = 576, .dv = 512,
        .block_size = 64, .seq_lens = dec_lens, .causal = 1, .lse = 1, .scale = 0.1352337788608801, .mla = 1,
        .splits = splits, .nsplits = 2};
    conf_run_paged(d, s, &m);
    CHECK_OK(kp_stream_destroy(s));
}

/* Generation-2 MLA decode (mla_decode_gen2.cl) with 32-key tiles, 4 or 3 pipeline
 * stages, at 64 rows (4 row groups: P of groups 2 and 3 beside 0 and 1's in the tile),
 * the tiles of tuning and of devices with less local memory, with a 16-bit and an FP8
 * latent cache (per-block scales); PoCL's 2 MiB takes the table's 64 keys, 2 stages,
 * which conf_mla_decode_gen2 and conf_mla_decode_gen2_fp8 run. */
KP_TEST(opencl_mla_gen2_tuned_tiles) {
    setenv("KPORT_GPU_KERNELS", "mla_decode=gen2", 1);
    static const int32_t splits[2] = {1, 3};
    for (int st = 4; st >= 3; st--) {
        char lines[128];
        snprintf(lines, sizeof lines, "*;*;*;mla_decode;g2_block_n;32\n*;*;*;mla_decode;g2_stages;%d\n", st);
        use_tuning(lines);
        kp_device *d = open_opencl();
        kp_stream *s;
        CHECK_OK(kp_stream_create(d, &s));
        conf_paged_case m = {.dt = st == 4 ? KP_BF16 : KP_F16, .b = 4, .s_q = 1, .h_q = 64, .h_kv = 1, .d = 576,
            .dv = st == 4 ? 512 : 256, .block_size = 16, .seq_lens = dec_lens, .causal = 1, .lse = 1,
            .scale = 0.1352337788608801, .mla = 1, .splits = splits, .nsplits = 2};
        conf_run_paged(d, s, &m);
        m.fp8 = 1, m.fp8_per_block = 1, m.fp8_scale = 0x1p-5, m.fp8_range = 32.0;
        conf_run_paged(d, s, &m);
        CHECK_OK(kp_stream_destroy(s));
        CHECK_OK(kp_device_close(d));
    }
    unsetenv("KPORT_GPU_KERNELS");
}

/* The combine kernel at its extremes: 1024 splits (most of them empty), and splits
 * of one key tile each. */
KP_TEST(opencl_attn_split_combine) {
    kp_device *d = open_opencl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    static const int32_t splits[4] = {1, 1024, 10, 2};
    conf_paged_case a = {.dt = KP_F32, .b = 4, .s_q = 3, .h_q = 4, .h_kv = 1, .d = 64, .dv = 64, .block_size = 16,
        .seq_lens = dec_lens, .causal = 1, .lse = 1, .splits = splits, .nsplits = 4};
    conf_run_paged(d, s, &a);
    conf_paged_case m = {.dt = KP_F16, .b = 4, .s_q = 1, .h_q = 32, .h_kv = 1, .d = 576, .dv = 512, .block_size = 64,
        .seq_lens = dec_lens, .causal = 1, .lse = 1, .scale = 0.1352337788608801, .mla = 1, .splits = splits,
        .nsplits = 4};
    conf_run_paged(d, s, &m);
    CHECK_OK(kp_stream_destroy(s));
}

/* Index contents are not validated on the GPU: bad ones are clamped, so the call
 * succeeds, nothing outside a buffer is touched (guards), and every output is written. */
KP_TEST(opencl_attn_bad_index_clamped) {
    kp_device *d = open_opencl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    /* decode: block ids out of range both ways, a seq_len past the table's capacity, a negative one */
    int64_t sq[4] = {3, 1, 4, 64}, sc[4] = {6, 16, 2, 64}, st[2] = {3, 2}, sb[1] = {3};
    const double table[6] = {0, 99, -5, 3, 4, 5}, lens[3] = {30, 1000, -4};
    kp_conf_tensor q = kp_conf_random(d, "q", KP_BF16, 4, sq, -1.0, 1.0);
    kp_conf_tensor k = kp_conf_random(d, "k_cache", KP_BF16, 4, sc, -1.0, 1.0);
    kp_conf_tensor v = kp_conf_random(d, "v_cache", KP_BF16, 4, sc, -1.0, 1.0);
    kp_conf_tensor bt = kp_conf_from(d, "block_table", KP_I32, 2, st, table);
    kp_conf_tensor sl = kp_conf_from(d, "seq_lens", KP_I32, 1, sb, lens);
    for (int ns = 0; ns < 3; ns += 2) {
        kp_conf_tensor out = kp_conf_output(d, "out", KP_BF16, 4, sq);
        kp_attention_decode_params p;
        memset(&p, 0, sizeof p);
        p.q = q.t, p.k_cache = k.t, p.v_cache = v.t, p.block_table = bt.t, p.seq_lens = sl.t, p.out = out.t;
        p.softmax_scale = 0.125f, p.causal = 1, p.num_splits = ns;
        kp_test_require_op(d, KP_OP_ATTENTION_DECODE, &p);
        CHECK_OK(kp_attention_decode(s, &p));
        CHECK_OK(kp_stream_sync(s));
        kp_conf_download(&out);
        for (int64_t i = 0; i < out.numel; i++) CHECK_MSG(isfinite(out.host[i]), "out[%lld] not written", (long long)i);
        kp_conf_free(&out);
    }
    kp_conf_free(&q), kp_conf_free(&k), kp_conf_free(&v), kp_conf_free(&bt), kp_conf_free(&sl);

    /* prefill: cu_seqlens decreasing and past the end */
    int64_t pq[3] = {8, 2, 64}, pl[2] = {2, 8}, scu[1] = {4};
    const double cuq[4] = {0, 6, 3, 8}, cuk[4] = {0, 2, 50, 9};
    kp_conf_tensor pq_t = kp_conf_random(d, "q", KP_F16, 3, pq, -1.0, 1.0);
    kp_conf_tensor pk_t = kp_conf_random(d, "k", KP_F16, 3, pq, -1.0, 1.0);
    kp_conf_tensor pv_t = kp_conf_random(d, "v", KP_F16, 3, pq, -1.0, 1.0);
    kp_conf_tensor cq = kp_conf_from(d, "cu_seqlens_q", KP_I32, 1, scu, cuq);
    kp_conf_tensor ck = kp_conf_from(d, "cu_seqlens_k", KP_I32, 1, scu, cuk);
    kp_conf_tensor out = kp_conf_output(d, "out", KP_F16, 3, pq);
    kp_conf_tensor lse = kp_conf_output(d, "lse", KP_F32, 2, pl);
    kp_attention_prefill_params p;
    memset(&p, 0, sizeof p);
    p.q = pq_t.t, p.k = pk_t.t, p.v = pv_t.t, p.out = out.t, p.lse = lse.t, p.cu_seqlens_q = cq.t;
    p.cu_seqlens_k = ck.t, p.max_seqlen_q = 6, p.max_seqlen_k = 8, p.softmax_scale = 0.125f;
    p.window_left = p.window_right = -1;
    kp_test_require_op(d, KP_OP_ATTENTION_PREFILL, &p);
    CHECK_OK(kp_attention_prefill(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&out);
    kp_conf_download(&lse);
    kp_conf_free(&pq_t), kp_conf_free(&pk_t), kp_conf_free(&pv_t), kp_conf_free(&cq), kp_conf_free(&ck);
    kp_conf_free(&out), kp_conf_free(&lse);
    CHECK_OK(kp_stream_destroy(s));
}

/* ------------------------------------------------------------------------ */
/* Split-KV scratch: cached per queue, reused, grown, dropped, freed         */
/* ------------------------------------------------------------------------ */

#if defined(KP_OPENCL_TESTS)
#include "opencl_internal.h"

/* A paged decode problem on the device (contiguous blocks, one spare past the end that
 * no sequence uses) and its float64 reference. */
typedef struct split_problem {
    kp_dtype dt;
    int b, s_q, h_q, h_kv, d, dv, bs, mla;
    kp_conf_tensor q, k, v, bt, sl;
    double *ref, *err, scale;
    size_t part_bytes, lse_bytes; /* what num_splits 8 needs */
} split_problem;

static split_problem split_problem_make(kp_device *dev, kp_dtype dt, int b, int s_q, int h_q, int h_kv, int d,
                                        int dv, int bs, int mla, const int32_t *lens) {
    split_problem p;
    memset(&p, 0, sizeof p);
    p.dt = dt, p.b = b, p.s_q = s_q, p.h_q = h_q, p.h_kv = mla ? 1 : h_kv, p.d = d, p.dv = dv, p.bs = bs, p.mla = mla;
    int max_blocks = 1, used = 0;
    for (int i = 0; i < b; i++) {
        int n = (lens[i] + bs - 1) / bs;
        used += n;
        if (n > max_blocks) max_blocks = n;
    }
    int32_t *table = malloc((size_t)(b * max_blocks) * sizeof *table);
    double *table_d = malloc((size_t)(b * max_blocks) * sizeof *table_d), lens_d[16];
    for (int i = 0, next = 0; i < b; i++) {
        lens_d[i] = lens[i];
        for (int j = 0; j < max_blocks; j++) {
            table[i * max_blocks + j] = j < (lens[i] + bs - 1) / bs ? next++ : used; /* spare block */
            table_d[i * max_blocks + j] = table[i * max_blocks + j];
        }
    }
    int64_t sq[4] = {b, s_q, h_q, d}, sk[4] = {used + 1, bs, p.h_kv, d}, sv[4] = {used + 1, bs, p.h_kv, dv};
    int64_t st[2] = {b, max_blocks}, sb[1] = {b};
    p.q = kp_conf_random(dev, "q", dt, 4, sq, -1.0, 1.0);
    p.k = kp_conf_random(dev, mla ? "kv_cache" : "k_cache", dt, 4, sk, -1.0, 1.0);
    if (!mla) p.v = kp_conf_random(dev, "v_cache", dt, 4, sv, -1.0, 1.0);
    p.bt = kp_conf_from(dev, "block_table", KP_I32, 2, st, table_d);
    p.sl = kp_conf_from(dev, "seq_lens", KP_I32, 1, sb, lens_d);
    p.scale = (double)(float)(1.0 / sqrt((double)d));
    p.ref = calloc((size_t)(b * s_q * h_q * dv), sizeof *p.ref);
    p.err = calloc((size_t)(b * s_q * h_q * dv), sizeof *p.err);
    ref_attn_err e = {kp_conf_prec(dt), p.err, NULL};
    ref_attention_decode(p.q.host, p.k.host, mla ? p.k.host : p.v.host, b, s_q, h_q, p.h_kv, d, dv, d, mla ? d : dv,
                         bs, table, max_blocks, lens, p.scale, 1, p.ref, NULL, &e);
    size_t nrows = (size_t)b * (size_t)s_q * (size_t)h_q;
    p.part_bytes = 8 * nrows * (size_t)dv * sizeof(float), p.lse_bytes = 8 * nrows * sizeof(float);
    free(table), free(table_d);
    return p;
}

static void split_problem_free(split_problem *p) {
    kp_conf_free(&p->q), kp_conf_free(&p->k), kp_conf_free(&p->bt), kp_conf_free(&p->sl);
    if (!p->mla) kp_conf_free(&p->v);
    free(p->ref);
    free(p->err);
}

/* Enqueues the problem with num_splits 8 into a fresh output; no sync. */
static kp_conf_tensor split_launch(kp_device *dev, kp_stream *s, const split_problem *p) {
    int64_t so[4] = {p->b, p->s_q, p->h_q, p->dv};
    kp_conf_tensor out = kp_conf_output(dev, "out", p->dt, 4, so);
    if (p->mla) {
        kp_mla_decode_params m;
        memset(&m, 0, sizeof m);
        m.q = p->q.t, m.kv_cache = p->k.t, m.block_table = p->bt.t, m.seq_lens = p->sl.t, m.out = out.t;
        m.softmax_scale = (float)p->scale, m.causal = 1, m.head_dim_v = p->dv, m.num_splits = 8;
        kp_test_require_op(dev, KP_OP_MLA_DECODE, &m);
        CHECK_OK(kp_mla_decode(s, &m));
    } else {
        kp_attention_decode_params a;
        memset(&a, 0, sizeof a);
        a.q = p->q.t, a.k_cache = p->k.t, a.v_cache = p->v.t, a.block_table = p->bt.t, a.seq_lens = p->sl.t;
        a.out = out.t, a.softmax_scale = (float)p->scale, a.causal = 1, a.num_splits = 8;
        kp_test_require_op(dev, KP_OP_ATTENTION_DECODE, &a);
        CHECK_OK(kp_attention_decode(s, &a));
    }
    return out;
}

/* The scratch entry of queue q (NULL: none); the number of entries in *n. */
static kp_ocl_scratch *scratch_of(kp_device *dev, void *q, int *n) {
    kp_ocl_device *d = kp_ocl_dev(dev);
    kp_ocl_scratch *hit = NULL;
    *n = 0;
    pthread_mutex_lock(&d->lock);
    for (kp_ocl_scratch *e = d->scratch; e; e = e->next, ++*n)
        if (e->queue == (cl_command_queue)q) hit = e;
    pthread_mutex_unlock(&d->lock);
    return hit;
}

/* Whether a memory object has been freed, told by the runtime itself: its destructor
 * callback fires once the last reference is gone, kport's and any the runtime keeps
 * for commands it still tracks (PoCL may let those go a moment after the queue has
 * finished, so a reference count read right away is not what kport promises). */
static void CL_CALLBACK mem_freed(cl_mem m, void *flag) {
    (void)m;
    atomic_store((atomic_int *)flag, 1);
}

static void watch_free(cl_mem m, atomic_int *flag) {
    atomic_init(flag, 0);
    CHECK(clSetMemObjectDestructorCallback(m, mem_freed, flag) == CL_SUCCESS);
}

/* Waits for every flag, up to 10 s (no timing is assumed below that); 1 if all fired. */
static int freed_within_bound(atomic_int *flags, int n) {
    for (int waited_ms = 0; waited_ms < 10000; waited_ms++) {
        int all = 1;
        for (int i = 0; i < n; i++) all &= atomic_load(&flags[i]);
        if (all) return 1;
        usleep(1000);
    }
    return 0;
}

static int pow2(size_t n) { return n && (n & (n - 1)) == 0; }

/* num_splits 8 on two streams alternately, many calls in flight before any sync, the
 * sizes growing (and shrinking back) along the way: every output matches the float64
 * reference with its guards intact; each queue has one scratch pair, large enough for
 * its biggest call; destroying a stream removes its pair from kport's table and lets
 * go of it (the runtime frees it: its destructor callback fires), the other stream's
 * pair stays alive; closing the device frees what is left. */
KP_TEST(opencl_attn_split_scratch_streams) {
    kp_device *dev = open_opencl();
    kp_stream *s[2];
    CHECK_OK(kp_stream_create(dev, &s[0]));
    CHECK_OK(kp_stream_create(dev, &s[1]));
    void *qn[2];
    CHECK_OK(kp_stream_get_native(s[0], &qn[0]));
    CHECK_OK(kp_stream_get_native(s[1], &qn[1]));

    static const int32_t l0[1] = {40}, l1[2] = {130, 7}, l2[3] = {300, 1, 90}, l3[4] = {517, 64, 0, 250};
    static const int32_t lm[2] = {200, 33};
    enum { NP = 5, NCALLS = 24 };
    split_problem p[NP] = {
        split_problem_make(dev, KP_F32, 1, 1, 4, 2, 64, 64, 16, 0, l0),
        split_problem_make(dev, KP_F16, 2, 2, 8, 2, 128, 128, 16, 0, l1),
        split_problem_make(dev, KP_BF16, 3, 1, 16, 4, 64, 64, 32, 0, l2),
        split_problem_make(dev, KP_F32, 4, 3, 8, 2, 64, 64, 16, 0, l3),
        split_problem_make(dev, KP_BF16, 2, 1, 16, 1, 576, 512, 64, 1, lm),
    };
    /* problem per call: growing, with smaller ones in between (reuse after growth) */
    static const int order[NCALLS] = {0, 0, 1, 0, 1, 1, 2, 0, 2, 1, 3, 2, 0, 3, 4, 3, 4, 0, 1, 4, 2, 3, 4, 0};
    size_t need_part[2] = {0, 0}, need_lse[2] = {0, 0};
    for (int round = 0; round < 2; round++) { /* the second round runs on grown scratch only */
        kp_conf_tensor out[NCALLS];
        for (int c = 0; c < NCALLS; c++) {
            const split_problem *pp = &p[order[c]];
            int si = c % 2;
            out[c] = split_launch(dev, s[si], pp);
            if (pp->part_bytes > need_part[si]) need_part[si] = pp->part_bytes;
            if (pp->lse_bytes > need_lse[si]) need_lse[si] = pp->lse_bytes;
        }
        CHECK_OK(kp_stream_sync(s[0]));
        CHECK_OK(kp_stream_sync(s[1]));
        for (int c = 0; c < NCALLS; c++) {
            const split_problem *pp = &p[order[c]];
            char what[160];
            snprintf(what, sizeof what, "split scratch round %d call %d (stream %d, %s b %d d %d/%d%s)", round, c,
                     c % 2, kp_dtype_name(pp->dt), pp->b, pp->d, pp->dv, pp->mla ? " mla" : "");
            kp_conf_download(&out[c]); /* checks the guards around out */
            kp_conf_expect(what, &out[c], pp->ref, pp->err, "batch,query,head,col");
            kp_conf_free(&out[c]);
        }
    }

    int n = 0;
    kp_ocl_scratch *e[2] = {scratch_of(dev, qn[0], &n), scratch_of(dev, qn[1], &n)};
    CHECK_INT_EQ(n, 2);
    atomic_int freed[2][2]; /* [stream][part, lse] */
    for (int i = 0; i < 2; i++) {
        CHECK(e[i] != NULL);
        CHECK(e[i]->part_bytes >= need_part[i] && e[i]->lse_bytes >= need_lse[i]);
        CHECK(pow2(e[i]->part_bytes) && pow2(e[i]->lse_bytes));
        watch_free(e[i]->part, &freed[i][0]);
        watch_free(e[i]->part_lse, &freed[i][1]);
    }
    CHECK(e[0]->part != e[1]->part && e[0]->part_lse != e[1]->part_lse);
    for (int i = 0; i < NP; i++) split_problem_free(&p[i]);

    /* stream destroy drops that queue's pair only */
    CHECK_OK(kp_stream_destroy(s[0]));
    CHECK(scratch_of(dev, qn[0], &n) == NULL);
    CHECK_INT_EQ(n, 1);
    CHECK_MSG(freed_within_bound(freed[0], 2), "stream 0's scratch pair is still alive 10 s after kp_stream_destroy");
    CHECK(!atomic_load(&freed[1][0]) && !atomic_load(&freed[1][1])); /* kport still holds stream 1's */
    CHECK_OK(kp_stream_destroy(s[1]));
    CHECK(scratch_of(dev, qn[1], &n) == NULL);
    CHECK_INT_EQ(n, 0);
    CHECK_MSG(freed_within_bound(freed[1], 2), "stream 1's scratch pair is still alive 10 s after kp_stream_destroy");

    /* device close frees whatever is left: a queue of the test's own with a pair, grown once */
    kp_native_device nd;
    CHECK_OK(kp_device_get_native(dev, &nd));
    cl_int err = CL_SUCCESS;
    cl_command_queue rq = clCreateCommandQueue((cl_context)nd.context, (cl_device_id)nd.device, 0, &err);
    CHECK(err == CL_SUCCESS);
    kp_ocl_device *od = kp_ocl_dev(dev);
    cl_mem a = NULL, b = NULL, a2 = NULL, b2 = NULL;
    atomic_int old_freed[2], new_freed[2];
    CHECK(kp_ocl_scratch_get(od, rq, 1000, 100, &a, &b) == 0 && !a && !b); /* none yet, none made */
    CHECK(kp_ocl_scratch_grow(od, rq, 1000, 100) == CL_SUCCESS);
    CHECK(kp_ocl_scratch_get(od, rq, 1000, 100, &a, &b) == 1);
    watch_free(a, &old_freed[0]), watch_free(b, &old_freed[1]);
    clReleaseMemObject(a), clReleaseMemObject(b); /* the test's references: the cache keeps its own */
    CHECK(kp_ocl_scratch_get(od, rq, 300, 30, &a2, &b2) == 1); /* fits: the same pair */
    CHECK(a2 == a && b2 == b);
    clReleaseMemObject(a2), clReleaseMemObject(b2);
    CHECK(!atomic_load(&old_freed[0]) && !atomic_load(&old_freed[1]));
    CHECK(kp_ocl_scratch_get(od, rq, 5000, 50, &a2, &b2) == 0 && !a2 && !b2); /* short: nothing grown */
    CHECK(!atomic_load(&old_freed[0]) && !atomic_load(&old_freed[1]));
    CHECK(kp_ocl_scratch_grow(od, rq, 5000, 50) == CL_SUCCESS); /* grows: a new pair, the queue not waited for */
    CHECK(kp_ocl_scratch_get(od, rq, 5000, 50, &a2, &b2) == 1);
    CHECK(a2 != a && b2 != b);
    CHECK_MSG(freed_within_bound(old_freed, 2), "the outgrown pair is still alive 10 s after the cache replaced it");
    watch_free(a2, &new_freed[0]), watch_free(b2, &new_freed[1]);
    clReleaseMemObject(a2), clReleaseMemObject(b2);
    kp_ocl_scratch *re = scratch_of(dev, rq, &n);
    CHECK_INT_EQ(n, 1);
    CHECK(re && re->part == a2 && re->part_bytes == 8192 && re->lse_bytes == 256);
    CHECK(!atomic_load(&new_freed[0]) && !atomic_load(&new_freed[1])); /* the cache holds it */
    CHECK_OK(kp_device_close(dev));
    CHECK_MSG(freed_within_bound(new_freed, 2), "the last pair is still alive 10 s after kp_device_close");
    clReleaseCommandQueue(rq);
}

/* The graph-capture rule on a wrapped queue (kport.h, kp_stream_reserve): a split decode
 * with nothing reserved is refused before anything is enqueued (out keeps its poison,
 * kport's scratch table gains no entry); after kp_stream_reserve of the bytes the
 * message names, decode and MLA decode run on the reservation, match the float64
 * reference, and never replace it; destroying the wrapper leaves the queue usable. */
KP_TEST(opencl_wrapped_queue_runs_on_reserved_scratch) {
    kp_device *dev = open_opencl();
    kp_stream *own, *s;
    CHECK_OK(kp_stream_create(dev, &own));
    void *q;
    CHECK_OK(kp_stream_get_native(own, &q));
    CHECK_OK(kp_stream_wrap(dev, q, &s));
    static const int32_t l1[2] = {130, 7}, lm[2] = {200, 33};
    split_problem p[2] = {
        split_problem_make(dev, KP_F16, 2, 2, 8, 2, 128, 128, 16, 0, l1),
        split_problem_make(dev, KP_BF16, 2, 1, 16, 1, 576, 512, 64, 1, lm),
    };
    int n = 0;
    kp_attention_decode_params a;
    memset(&a, 0, sizeof a);
    kp_conf_tensor out = kp_conf_output(dev, "out", p[0].dt, 4, (int64_t[]){p[0].b, p[0].s_q, p[0].h_q, p[0].dv});
    a.q = p[0].q.t, a.k_cache = p[0].k.t, a.v_cache = p[0].v.t, a.block_table = p[0].bt.t, a.seq_lens = p[0].sl.t;
    a.out = out.t, a.softmax_scale = (float)p[0].scale, a.causal = 1, a.num_splits = 8;
    char want[96];
    snprintf(want, sizeof want, "kp_stream_reserve(s, %zu)", p[0].part_bytes);
    CHECK_ERR(kp_attention_decode(s, &a), KP_ERR_OUT_OF_MEMORY, want);
    CHECK(scratch_of(dev, q, &n) == NULL);
    kp_conf_download(&out);
    int poisoned = 1;
    for (int64_t i = 0; i < out.numel; i++) poisoned &= isnan(out.host[i]) != 0;
    CHECK_MSG(poisoned, "a refused decode wrote its output");
    kp_conf_free(&out);

    size_t need = p[0].part_bytes > p[1].part_bytes ? p[0].part_bytes : p[1].part_bytes;
    CHECK_OK(kp_stream_reserve(s, need));
    kp_ocl_scratch *e = scratch_of(dev, q, &n);
    CHECK(e != NULL);
    cl_mem held = e ? e->part : NULL;
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 2; i++) {
            kp_conf_tensor o = split_launch(dev, s, &p[i]);
            CHECK_OK(kp_stream_sync(own));
            kp_conf_download(&o);
            kp_conf_expect(p[i].mla ? "wrapped mla decode" : "wrapped decode", &o, p[i].ref, p[i].err,
                           "batch,query,head,col");
            kp_conf_free(&o);
        }
    e = scratch_of(dev, q, &n);
    CHECK(e != NULL && e->part == held); /* reused, never replaced */
    CHECK_OK(kp_stream_destroy(s));
    CHECK(scratch_of(dev, q, &n) == NULL);
    CHECK_OK(kp_stream_sync(own)); /* the server's queue outlives its wrapper */
    for (int i = 0; i < 2; i++) split_problem_free(&p[i]);
    CHECK_OK(kp_stream_destroy(own));
    CHECK_OK(kp_device_close(dev));
}

#else
KP_TEST(opencl_attn_split_scratch_streams) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_wrapped_queue_runs_on_reserved_scratch) { KP_SKIP("opencl backend not built"); }
#endif
