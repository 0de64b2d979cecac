/*
 * tests/test_opencl_moe.c — the OpenCL MoE kernels' own paths, beyond the conformance
 * suite (tests/conformance/test_conf_moe.c, which runs them too):
 *  - grouped GEMM: the tiled kernel alone, the decode (small-M) kernel alone, both
 *    split per expert on the device, tuned tiles, and the tile-MMA layer's kernel
 *    structure (on PoCL its portable emulation) forced by a tuning file;
 *  - align over many chunks (T*k = 150k pairs, E = 256) and over the smallest chunks a
 *    tuning file allows (20-31 chunks), against the float64 reference;
 *  - bad index contents (ids, offsets, positions): no out-of-bounds write, no failure;
 *  - W8A8: generation 2 by default, generation 1 refusing it with the reason; kp_moe_forward's
 *    h quantized in the w13 GEMM's epilogue gives the bytes the f32 h + quantize chain does.
 * Each test runs in its own process; KPORT_TUNING_FILE is set before kp_init.
 */
#include "kp_conformance.h"
#include "ref_fp8.h"
#include "ref_moe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

/* A tuning file for this process (before the first op looks a value up). */
static void use_tuning(const char *lines) {
    char path[] = "/tmp/kport-ocl-moe-tuning-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "w");
    CHECK(f != NULL);
    fputs(lines, f);
    fclose(f);
    setenv("KPORT_TUNING_FILE", path, 1);
}

static kp_device *open_ocl(void) { return kp_test_open_backend("opencl"); }

static unsigned char fp8_byte(void) {
    unsigned char b;
    do b = (unsigned char)(kp_test_rand_u64() & 0xbf); while ((b & 0x7f) == 0x7f);
    return b;
}

/* a [m, k] x w [e, n, k] over offsets vs the float64 reference; rows outside every
 * range keep the poison. */
static void gemm_check(kp_device *d, kp_stream *s, kp_dtype dt, int fp8, int64_t m, int64_t k, int64_t e, int64_t n,
                       const int32_t *offsets) {
    kp_conf_tensor a = kp_conf_random(d, "a", dt, 2, SHAPE(m, k), -1.0, 1.0);
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    kp_conf_tensor w, sc;
    kp_guarded w8;
    double *wv = malloc((size_t)(e * n * k) * sizeof *wv);
    if (fp8) {
        int64_t nb = (n + 127) / 128, kb = k / 128;
        unsigned char *bytes = malloc((size_t)(e * n * k));
        sc = kp_conf_random(d, "w_scale", KP_F32, 3, SHAPE(e, nb, kb), 0.01, 0.1);
        for (int64_t i = 0; i < e * n * k; i++) {
            bytes[i] = fp8_byte();
            int64_t x = i / (n * k), j = i / k % n, l = i % k;
            wv[i] = ref_fp8_e4m3(bytes[i]) * sc.host[(x * nb + j / 128) * kb + l / 128];
        }
        w8 = kp_guarded_alloc(d, (size_t)(e * n * k));
        kp_guarded_write(&w8, bytes, (size_t)(e * n * k));
        free(bytes);
        CHECK_OK(kp_tensor_init(&p.w, w8.buf, w8.offset, KP_FP8_E4M3, 3, SHAPE(e, n, k), NULL));
        p.w_scale = sc.t;
    } else {
        w = kp_conf_random(d, "w", dt, 3, SHAPE(e, n, k), -1.0, 1.0);
        memcpy(wv, w.host, (size_t)(e * n * k) * sizeof *wv);
        p.w = w.t;
    }
    double offv[65];
    for (int64_t i = 0; i <= e; i++) offv[i] = offsets[i];
    kp_conf_tensor off = kp_conf_from(d, "expert_offsets", KP_I32, 1, SHAPE(e + 1), offv);
    kp_conf_tensor out = kp_conf_output(d, "out", dt, 2, SHAPE(m, n));
    p.a = a.t, p.expert_offsets = off.t, p.out = out.t;
    CHECK_OK(kp_op_supported(d, KP_OP_GROUPED_GEMM, &p));
    CHECK_OK(kp_grouped_gemm(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&out);
    double *ref = malloc((size_t)(m * n) * sizeof *ref), *err = calloc((size_t)(m * n), sizeof *err);
    for (int64_t i = 0; i < m * n; i++) ref[i] = NAN; /* rows outside every range keep the poison */
    ref_prec terms = kp_conf_prec(fp8 ? KP_F32 : dt); /* FP8: exact products, each K slice scaled once in f32 */
    ref_grouped_gemm(a.host, k, wv, n * k, e, n, offsets, ref, &terms, err);
    char what[96];
    snprintf(what, sizeof what, "grouped_gemm %s%s m %lld n %lld k %lld", kp_dtype_name(dt), fp8 ? " fp8" : "",
             (long long)m, (long long)n, (long long)k);
    kp_conf_expect(what, &out, ref, err, "row,col");
    free(ref);
    free(err);
    free(wv);
    if (fp8) {
        kp_guarded_check(&w8, "w");
        kp_guarded_free(&w8);
        kp_conf_free(&sc);
    } else {
        kp_conf_free(&w);
    }
    kp_conf_free(&a);
    kp_conf_free(&off);
    kp_conf_free(&out);
}

/* The three launch shapes: tiled only (many rows per expert), decode only (M <= 16),
 * and both, split on the device (few rows on average, one big expert). */
static void gemm_shapes(kp_device *d, kp_stream *s, kp_dtype dt, int fp8) {
    int64_t k = fp8 ? 256 : 200;
    const int32_t tiled[4] = {0, 70, 70, 203};
    gemm_check(d, s, dt, fp8, 210, k, 3, 150, tiled);
    const int32_t small[5] = {1, 4, 4, 5, 13};
    gemm_check(d, s, dt, fp8, 14, k, 4, 150, small);
    const int32_t mixed[9] = {0, 2, 18, 18, 19, 60, 61, 77, 79};
    gemm_check(d, s, dt, fp8, 80, k, 8, 150, mixed);
}

KP_TEST(opencl_moe_gemm_fma) {
    setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen1", 1); /* generation 1's tiles, whatever the run's setting */
    kp_device *d = open_ocl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    gemm_shapes(d, s, KP_F32, 0);
    gemm_shapes(d, s, KP_BF16, 0);
    gemm_shapes(d, s, KP_F16, 1);
    kp_stream_destroy(s);
}

/* The tile-MMA layer's kernel (mma.sync on NVIDIA) forced on this device: on PoCL its
 * portable emulation, which checks the fragment indexing the NVIDIA path shares;
 * with a tuned 32x32x16 tile. */
KP_TEST(opencl_moe_gemm_mma_layer) {
    use_tuning("*;*;*;grouped_gemm;mma;1\n*;*;*;grouped_gemm;tile_m;32\n*;*;*;grouped_gemm;tile_n;32\n"
               "*;*;*;grouped_gemm;tile_k;16\n");
    setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen1", 1);
    kp_device *d = open_ocl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    gemm_shapes(d, s, KP_BF16, 0);
    gemm_shapes(d, s, KP_BF16, 1);
    kp_stream_destroy(s);
}

/* Generation 2 (kernels/moe/moe_gemm_gen2.cl) on this device: the pipelined tiles and the
 * weight-streaming decode kernel through the portable fragments and copies, the three
 * launch shapes for 16-bit and e4m3 weights, and split-K: one expert, 32 columns and K
 * 2048 make one decode work-group, so K is cut in slices and reduced. */
KP_TEST(opencl_moe_gemm_gen2_shapes) {
    setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen2", 1);
    kp_device *d = open_ocl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    gemm_shapes(d, s, KP_BF16, 0);
    gemm_shapes(d, s, KP_F16, 1);
    const int32_t one[2] = {0, 3};
    gemm_check(d, s, KP_BF16, 0, 3, 2048, 1, 32, one);
    gemm_check(d, s, KP_BF16, 1, 3, 2048, 1, 32, one);
    kp_stream_destroy(s);
}

/* W8A8 (e4m3 a and w) has generation-2 kernels only: they run by default even where
 * generation 1 is the default (PoCL), kp_op_supported agreeing; forcing generation 1 on
 * grouped_gemm makes both refuse with the reason, and the call writes nothing. */
KP_TEST(opencl_grouped_gemm_w8a8_generations) {
    kp_device *d = open_ocl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    double av[8 * 128], wv[16 * 128], asv[8], wsv[1] = {0.5}, offv[2] = {0, 8};
    for (int i = 0; i < 8 * 128; i++) av[i] = ref_fp8_e4m3(fp8_byte());
    for (int i = 0; i < 16 * 128; i++) wv[i] = ref_fp8_e4m3(fp8_byte());
    for (int i = 0; i < 8; i++) asv[i] = 0.25 * (i + 1);
    kp_conf_tensor a = kp_conf_from(d, "a", KP_FP8_E4M3, 2, SHAPE(8, 128), av);
    kp_conf_tensor as = kp_conf_from(d, "a_scale", KP_F32, 2, SHAPE(8, 1), asv);
    kp_conf_tensor w = kp_conf_from(d, "w", KP_FP8_E4M3, 3, SHAPE(1, 16, 128), wv);
    kp_conf_tensor ws = kp_conf_from(d, "w_scale", KP_F32, 3, SHAPE(1, 1, 1), wsv);
    kp_conf_tensor off = kp_conf_from(d, "expert_offsets", KP_I32, 1, SHAPE(2), offv);
    kp_conf_tensor out = kp_conf_output(d, "out", KP_BF16, 2, SHAPE(8, 16));
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    p.a = a.t, p.w = w.t, p.w_scale = ws.t, p.expert_offsets = off.t, p.out = out.t, p.a_scale = as.t;

    setenv("KPORT_GPU_KERNELS", "gen2,grouped_gemm=gen1", 1);
    CHECK(kp_op_supported(d, KP_OP_GROUPED_GEMM, &p) == KP_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(kp_last_error(), "W8A8") && strstr(kp_last_error(), "generation-2 kernels only"),
              "kp_op_supported said: %s", kp_last_error());
    CHECK(kp_grouped_gemm(s, &p) == KP_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(kp_last_error(), "generation-2 kernels only"), "kp_grouped_gemm said: %s", kp_last_error());
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&out);
    for (int i = 0; i < 8 * 16; i++) CHECK_MSG(isnan(out.host[i]), "refused W8A8 wrote out[%d]", i);

    unsetenv("KPORT_GPU_KERNELS"); /* the default: generation 2 for W8A8, here too */
    CHECK_OK(kp_op_supported(d, KP_OP_GROUPED_GEMM, &p));
    CHECK_OK(kp_grouped_gemm(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&out);
    double ref[8 * 16], err[8 * 16];
    const int32_t offsets[2] = {0, 8};
    ref_grouped_gemm_w8a8(a.host, asv, 128, w.host, wsv, 1, 16, offsets, ref, err);
    kp_conf_expect("grouped_gemm w8a8 8 x 16 x 128 (default generation)", &out, ref, err, "row,col");
    kp_conf_free(&a), kp_conf_free(&as), kp_conf_free(&w), kp_conf_free(&ws), kp_conf_free(&off), kp_conf_free(&out);
    kp_stream_destroy(s);
}

void kp_tuning_reset(void); /* core/tuning.c: rereads KPORT_TUNING_FILE */

/* kp_moe_forward W8A8: the w13 GEMMs (routed and FP8 shared expert) quantizing h in their
 * SwiGLU epilogue (the default here) and the chain that stores h in f32 and runs the
 * quantize kernel (the tuning table's grouped_gemm;g8_fused_swiglu = 0) compute the same
 * f32 h and quantize it by the same rules: the outputs agree bit for bit. UE8M0 and not;
 * inter 384 spans three fused tiles and T 37 a partial row tile. */
KP_TEST(opencl_moe_forward_w8a8_fused_quantize_same_bytes) {
    enum { T = 37, H = 256, I = 384, IS = 128, NE = 8 };
    kp_device *d = open_ocl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    double *v = malloc((size_t)NE * 2 * I * H * sizeof *v);
    for (int64_t i = 0; i < (int64_t)NE * 2 * I * H; i++) v[i] = ref_fp8_e4m3(fp8_byte());
    kp_conf_tensor w13 = kp_conf_from(d, "w13", KP_FP8_E4M3, 3, SHAPE(NE, 2 * I, H), v);
    kp_conf_tensor w2 = kp_conf_from(d, "w2", KP_FP8_E4M3, 3, SHAPE(NE, H, I), v);
    kp_conf_tensor sh13 = kp_conf_from(d, "shared_w13", KP_FP8_E4M3, 2, SHAPE(2 * IS, H), v + 7);
    kp_conf_tensor sh2 = kp_conf_from(d, "shared_w2", KP_FP8_E4M3, 2, SHAPE(H, IS), v + 11);
    kp_conf_tensor s13 = kp_conf_random(d, "w13_scale", KP_F32, 3, SHAPE(NE, 2 * I / 128, H / 128), 0.005, 0.02);
    kp_conf_tensor s2 = kp_conf_random(d, "w2_scale", KP_F32, 3, SHAPE(NE, H / 128, I / 128), 0.005, 0.02);
    kp_conf_tensor ss13 = kp_conf_random(d, "shared_w13_scale", KP_F32, 2, SHAPE(2 * IS / 128, H / 128), 0.005, 0.02);
    kp_conf_tensor ss2 = kp_conf_random(d, "shared_w2_scale", KP_F32, 2, SHAPE(H / 128, IS / 128), 0.005, 0.02);
    kp_conf_tensor x = kp_conf_random(d, "x", KP_BF16, 2, SHAPE(T, H), -4.0, 4.0);
    kp_conf_tensor lg = kp_conf_random(d, "router_logits", KP_F32, 2, SHAPE(T, NE), -3.0, 3.0);
    kp_conf_tensor out[2] = {kp_conf_output(d, "out", KP_BF16, 2, SHAPE(T, H)),
                             kp_conf_output(d, "out", KP_BF16, 2, SHAPE(T, H))};
    free(v);
    kp_moe_forward_params p;
    memset(&p, 0, sizeof p);
    p.x = x.t, p.router_logits = lg.t, p.w13 = w13.t, p.w13_scale = s13.t, p.w2 = w2.t, p.w2_scale = s2.t;
    p.shared_w13 = sh13.t, p.shared_w2 = sh2.t, p.shared_w13_scale = ss13.t, p.shared_w2_scale = ss2.t;
    p.routing = (kp_moe_routing){2, 2, 1, KP_MOE_SCORING_SIGMOID, 1, 2.5f};
    p.activation_dtype = KP_FP8_E4M3, p.out = out[0].t;
    size_t bytes = 0;
    CHECK_OK(kp_moe_forward_workspace_size(d, &p, &bytes));
    kp_guarded ws = kp_guarded_alloc(d, bytes);
    p.workspace = ws.buf, p.workspace_offset = ws.offset;
    for (int ue8m0 = 0; ue8m0 < 2; ue8m0++) {
        p.activation_scale_ue8m0 = ue8m0;
        for (int chain = 0; chain < 2; chain++) { /* 0: fused (the default), 1: f32 h + quantize */
            if (chain) use_tuning("*;*;*;grouped_gemm;g8_fused_swiglu;0\n");
            else unsetenv("KPORT_TUNING_FILE");
            kp_tuning_reset();
            kp_guarded_poison(&ws, 0xFF);
            p.out = out[chain].t;
            CHECK_OK(kp_moe_forward(s, &p));
            CHECK_OK(kp_stream_sync(s));
            kp_conf_download(&out[chain]);
        }
        int64_t differ = 0, first = -1;
        for (int64_t i = 0; i < T * H; i++)
            if (memcmp(&out[0].host[i], &out[1].host[i], sizeof(double)) != 0) differ++, first = first < 0 ? i : first;
        CHECK_MSG(differ == 0, "UE8M0 %d: %lld of %d outputs differ between the chains (first [%lld, %lld]: %g vs %g)",
                  ue8m0, (long long)differ, T * H, (long long)(first / H), (long long)(first % H),
                  first >= 0 ? out[0].host[first] : 0.0, first >= 0 ? out[1].host[first] : 0.0);
        CHECK(isfinite(out[0].host[0]));
    }
    kp_guarded_check(&ws, "workspace");
    kp_guarded_free(&ws);
    kp_conf_free(&w13), kp_conf_free(&w2), kp_conf_free(&sh13), kp_conf_free(&sh2), kp_conf_free(&s13);
    kp_conf_free(&s2), kp_conf_free(&ss13), kp_conf_free(&ss2), kp_conf_free(&x), kp_conf_free(&lg);
    kp_conf_free(&out[0]), kp_conf_free(&out[1]);
    kp_stream_destroy(s);
}

/* A tuned tile the kernel cannot take (not a multiple of 16) falls back to the default. */
KP_TEST(opencl_moe_gemm_bad_tuning_falls_back) {
    use_tuning("*;*;*;grouped_gemm;tile_m;40\n*;*;*;grouped_gemm;tile_n;100000\n*;*;*;grouped_gemm;small_m;0\n");
    kp_device *d = open_ocl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    const int32_t off[4] = {0, 5, 40, 41};
    gemm_check(d, s, KP_F32, 0, 41, 70, 3, 90, off);
    kp_stream_destroy(s);
}

/* kp_moe_align on d for ids (host values) against the float64 reference, per element. */
static void align_check(kp_device *d, kp_stream *s, int64_t t, int64_t k, int32_t e, int32_t block, const double *ids) {
    const int64_t pairs = t * k, len = pairs + (int64_t)e * (block - 1);
    kp_conf_tensor ti = kp_conf_from(d, "topk_ids", KP_I32, 2, SHAPE(t, k), ids);
    kp_conf_tensor so = kp_conf_output(d, "sorted_ids", KP_I32, 1, SHAPE(len));
    kp_conf_tensor of = kp_conf_output(d, "expert_offsets", KP_I32, 1, SHAPE(e + 1));
    kp_conf_tensor po = kp_conf_output(d, "token_pos", KP_I32, 2, SHAPE(t, k));
    kp_moe_align_params p = {ti.t, so.t, of.t, po.t, e, block};
    CHECK_OK(kp_moe_align(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&so);
    kp_conf_download(&of);
    kp_conf_download(&po);
    double *rs = malloc((size_t)len * sizeof *rs), *ro = malloc((size_t)(e + 1) * sizeof *ro);
    double *rp = malloc((size_t)pairs * sizeof *rp);
    ref_moe_align(ids, pairs, e, block, rs, len, ro, rp);
    kp_conf_check_ints("expert_offsets", of.host, ro, e + 1);
    kp_conf_check_ints("sorted_ids", so.host, rs, len);
    kp_conf_check_ints("token_pos", po.host, rp, pairs);
    free(rs), free(ro), free(rp);
    kp_conf_free(&ti), kp_conf_free(&so), kp_conf_free(&of), kp_conf_free(&po);
}

/* Many chunks of the device counting sort: 150k pairs, 256 experts, padding 64. */
KP_TEST(opencl_moe_align_many_chunks) {
    kp_device *d = open_ocl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    const int64_t t = 18750, k = 8, pairs = t * k;
    double *ids = malloc((size_t)pairs * sizeof *ids);
    for (int64_t i = 0; i < pairs; i++) /* skewed: expert 7 gets a third of the pairs, 200+ stay empty */
        ids[i] = kp_test_rand_u64() % 3 == 0 ? 7 : (double)(kp_test_rand_u64() % 50);
    align_check(d, s, t, k, 256, 64, ids);
    free(ids);
    kp_stream_destroy(s);
}

/* The smallest chunks the kernels allow (a tuned chunk of 256, raised to E): 20-31
 * chunks at a few thousand pairs, so that every histogram column, every chunk prefix in
 * token_pos and every scatter step's running counters cross many work-groups; E = 300
 * makes the chunk exactly E (every token_pos entry of a chunk first holds a prefix). */
KP_TEST(opencl_moe_align_small_chunks) {
    use_tuning("*;*;*;moe_align;chunk;256\n");
    kp_device *d = open_ocl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    double *ids = malloc(1031 * 8 * sizeof *ids);
    for (int i = 0; i < 1000 * 8; i++) { /* E = 16, experts 3 and 9 empty: 31 chunks */
        int e;
        do e = (int)(kp_test_rand_u64() % 16); while (e == 3 || e == 9);
        ids[i] = e;
    }
    align_check(d, s, 1000, 8, 16, 16, ids);
    for (int i = 0; i < 1031 * 8; i++) ids[i] = (double)(10 + kp_test_rand_u64() % 290); /* 0..9 empty */
    align_check(d, s, 1031, 8, 300, 64, ids);
    for (int i = 0; i < 700 * 8; i++) ids[i] = 0; /* every pair on one expert, 21 chunks */
    align_check(d, s, 700, 8, 256, 1, ids);
    free(ids);
    kp_stream_destroy(s);
}

/* Bad index contents are not reported on this backend (no host round trip), but must
 * never write outside the outputs: ids out of range, offsets past M and decreasing,
 * positions past the rows. kp_conf_download checks every guard. */
KP_TEST(opencl_moe_bad_indices_stay_in_bounds) {
    kp_device *d = open_ocl();
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    const double bad_ids[8] = {0, 9, -1, 3, 1000000, 2, 7, -7};
    kp_conf_tensor ti = kp_conf_from(d, "topk_ids", KP_I32, 2, SHAPE(4, 2), bad_ids);
    kp_conf_tensor so = kp_conf_output(d, "sorted_ids", KP_I32, 1, SHAPE(8 + 8 * 3));
    kp_conf_tensor of = kp_conf_output(d, "expert_offsets", KP_I32, 1, SHAPE(9));
    kp_conf_tensor po = kp_conf_output(d, "token_pos", KP_I32, 2, SHAPE(4, 2));
    kp_moe_align_params ap = {ti.t, so.t, of.t, po.t, 8, 4};
    CHECK_OK(kp_moe_align(s, &ap));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&so), kp_conf_download(&of), kp_conf_download(&po);
    CHECK(po.host[1] == -1 && po.host[2] == -1 && po.host[4] == -1 && po.host[7] == -1);

    const double bad_off[4] = {-5, 1000, 2, 9};
    kp_conf_tensor a = kp_conf_random(d, "a", KP_BF16, 2, SHAPE(8, 32), -1.0, 1.0);
    kp_conf_tensor w = kp_conf_random(d, "w", KP_BF16, 3, SHAPE(3, 16, 32), -1.0, 1.0);
    kp_conf_tensor out = kp_conf_output(d, "out", KP_BF16, 2, SHAPE(8, 16));
    kp_conf_tensor off = kp_conf_from(d, "expert_offsets", KP_I32, 1, SHAPE(4), bad_off);
    kp_grouped_gemm_params gp = {.a = a.t, .w = w.t, .expert_offsets = off.t, .out = out.t};
    kp_status st = kp_grouped_gemm(s, &gp);
    CHECK_MSG(st == KP_OK || st == KP_ERR_INVALID_ARGUMENT, "grouped_gemm: %s", kp_last_error());
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&out);

    const double bad_pos[4] = {0, 9, 10, -3};
    kp_conf_tensor y = kp_conf_random(d, "expert_out", KP_F32, 2, SHAPE(10, 16), -1.0, 1.0);
    kp_conf_tensor pos = kp_conf_from(d, "token_pos", KP_I32, 2, SHAPE(2, 2), bad_pos);
    kp_conf_tensor tw = kp_conf_random(d, "topk_weights", KP_F32, 2, SHAPE(2, 2), 0.0, 1.0);
    kp_conf_tensor co = kp_conf_output(d, "out", KP_F32, 2, SHAPE(2, 16));
    kp_moe_combine_params cp = {y.t, pos.t, tw.t, co.t};
    st = kp_moe_combine(s, &cp);
    CHECK_MSG(st == KP_OK || st == KP_ERR_INVALID_ARGUMENT, "combine: %s", kp_last_error());
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&co);
    for (int c = 0; c < 16; c++) /* row 1 has no valid position: exactly 0 */
        CHECK_MSG(co.host[16 + c] == 0.0, "out[1, %d] = %g", c, co.host[16 + c]);

    kp_conf_free(&ti), kp_conf_free(&so), kp_conf_free(&of), kp_conf_free(&po);
    kp_conf_free(&a), kp_conf_free(&w), kp_conf_free(&out), kp_conf_free(&off);
    kp_conf_free(&y), kp_conf_free(&pos), kp_conf_free(&tw), kp_conf_free(&co);
    kp_stream_destroy(s);
}

/* A dry run (kp_op_supported) launches nothing: the outputs keep their poison. */
KP_TEST(opencl_moe_dry_run_writes_nothing) {
    kp_device *d = open_ocl();
    kp_conf_tensor lg = kp_conf_random(d, "logits", KP_F32, 2, SHAPE(5, 64), -2.0, 2.0);
    kp_conf_tensor ids = kp_conf_output(d, "topk_ids", KP_I32, 2, SHAPE(5, 4));
    kp_conf_tensor w = kp_conf_output(d, "topk_weights", KP_F32, 2, SHAPE(5, 4));
    kp_moe_gate_params p = {.logits = lg.t, .topk_ids = ids.t, .topk_weights = w.t,
                            .routing = {4, 8, 2, KP_MOE_SCORING_SIGMOID, 1, 2.5f}};
    unsigned char *snap = kp_test_snapshot(ids.g.buf);
    CHECK_OK(kp_op_supported(d, KP_OP_MOE_GATE, &p));
    kp_test_unchanged(ids.g.buf, snap);
    kp_conf_free(&lg), kp_conf_free(&ids), kp_conf_free(&w);
}
