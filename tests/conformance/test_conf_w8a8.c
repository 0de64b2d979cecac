/*
 * tests/conformance/test_conf_w8a8.c — kp_grouped_gemm with FP8 activations (W8A8: e4m3
 * a with per-token-group scales, e4m3 weights with 128x128 block scales) against the
 * float64 reference ref_grouped_gemm_w8a8: both scale layouts, UE8M0 scales, scales
 * 2^-10..2^10, outliers, uneven and empty experts; and the path kp_quantize_fp8 ->
 * kp_grouped_gemm against the unquantized GEMM, within the error the quantization
 * explains. Every backend runs W8A8: the GPU backends on the generation-2 kernels
 * (kernels/moe/moe_gemm_fp8_gen2.cl: e4m3 tile MMA, K tiles of 128 promoted once with both
 * scales), which is their default for W8A8 on every device, PoCL included. Only when
 * generation 1 is forced for grouped_gemm (KPORT_GPU_KERNELS: it has no W8A8 kernel) may a
 * GPU backend decline; it must say so through kp_op_supported, and the call must then
 * fail the same way without writing.
 */
#include "kp_conformance.h"
#include "ref_fp8.h"
#include "ref_moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define MAY_DECLINE kp_conf_w8a8_may_decline()

static kp_stream *new_stream(kp_device *d) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    return s;
}

/* n e4m3 values: random finite bytes below 2 in magnitude, or (wide) any finite byte. */
static double *e4m3_values(int64_t n, int wide) {
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) {
        unsigned char b;
        do b = (unsigned char)(kp_test_rand_u64() & (wide ? 0xff : 0xbf)); while ((b & 0x7f) == 0x7f);
        v[i] = ref_fp8_e4m3(b);
    }
    return v;
}

/* A scale: 0.01..0.1; wide: [1, 2) * 2^(-10..10); ue8m0: 2^(-10..10). */
static double scale_value(int wide, int ue8m0) {
    int e = (int)(kp_test_rand_u64() % 21) - 10;
    if (ue8m0) return ldexp(1.0, e);
    return wide ? ldexp(kp_test_rand_uniform(1.0, 2.0), e) : kp_test_rand_uniform(0.01, 0.1);
}

typedef struct w8a8_case {
    kp_dtype out_dt;
    int64_t m, k, e, n;
    const int32_t *offsets; /* [e + 1] */
    int layout;             /* kp_fp8_scale_layout of a_scale */
    int64_t m_pad;          /* column-major: a_scale columns (>= m) */
    int ue8m0;              /* activation scales powers of two */
    int wide;               /* both scales over 2^-10..2^10 */
    int outliers;           /* 4 activation channels over e4m3's whole range */
} w8a8_case;

typedef struct w8a8_args {
    kp_conf_tensor a, a_scale, w, w_scale, off, out;
    double *as_rows; /* a_scale [m, k/128] row-major, whatever the layout */
} w8a8_args;

/* Uploads a case's tensors (a_scale's padding columns are NaN: never to be read). */
static void w8a8_make(kp_device *d, const w8a8_case *c, w8a8_args *x, kp_grouped_gemm_params *p) {
    const int64_t kb = c->k / 128, nb = (c->n + 127) / 128;
    double *av = e4m3_values(c->m * c->k, 0);
    if (c->outliers)
        for (int ch = 0; ch < 4; ch++) {
            int64_t col = (int64_t)(kp_test_rand_u64() % (uint64_t)c->k);
            for (int64_t r = 0; r < c->m; r++) av[r * c->k + col] = ref_e4m3_round(kp_test_rand_uniform(-448.0, 448.0));
        }
    x->a = kp_conf_from(d, "a", KP_FP8_E4M3, 2, SHAPE(c->m, c->k), av);
    free(av);
    x->as_rows = malloc((size_t)(c->m * kb + 1) * sizeof *x->as_rows);
    for (int64_t i = 0; i < c->m * kb; i++) x->as_rows[i] = scale_value(c->wide, c->ue8m0);
    if (c->layout == KP_FP8_SCALE_COL_MAJOR) {
        double *col = malloc((size_t)(kb * c->m_pad + 1) * sizeof *col);
        for (int64_t g = 0; g < kb; g++)
            for (int64_t r = 0; r < c->m_pad; r++) col[g * c->m_pad + r] = r < c->m ? x->as_rows[r * kb + g] : NAN;
        x->a_scale = kp_conf_from(d, "a_scale", KP_F32, 2, SHAPE(kb, c->m_pad), col);
        free(col);
    } else {
        x->a_scale = kp_conf_from(d, "a_scale", KP_F32, 2, SHAPE(c->m, kb), x->as_rows);
    }
    double *wv = e4m3_values(c->e * c->n * c->k, 0), *wsv = malloc((size_t)(c->e * nb * kb) * sizeof *wsv);
    for (int64_t i = 0; i < c->e * nb * kb; i++) wsv[i] = scale_value(c->wide, 0);
    x->w = kp_conf_from(d, "w", KP_FP8_E4M3, 3, SHAPE(c->e, c->n, c->k), wv);
    x->w_scale = kp_conf_from(d, "w_scale", KP_F32, 3, SHAPE(c->e, nb, kb), wsv);
    free(wv), free(wsv);
    double *offv = malloc((size_t)(c->e + 1) * sizeof *offv);
    for (int64_t i = 0; i <= c->e; i++) offv[i] = c->offsets[i];
    x->off = kp_conf_from(d, "expert_offsets", KP_I32, 1, SHAPE(c->e + 1), offv);
    free(offv);
    x->out = kp_conf_output(d, "out", c->out_dt, 2, SHAPE(c->m, c->n));
    memset(p, 0, sizeof *p);
    p->a = x->a.t, p->w = x->w.t, p->w_scale = x->w_scale.t, p->expert_offsets = x->off.t, p->out = x->out.t;
    p->a_scale = x->a_scale.t;
    p->a_scale_layout = c->layout;
}

static void w8a8_free(w8a8_args *x) {
    kp_conf_free(&x->a), kp_conf_free(&x->a_scale), kp_conf_free(&x->w), kp_conf_free(&x->w_scale);
    kp_conf_free(&x->off), kp_conf_free(&x->out);
    free(x->as_rows);
}

/* The dtype whose rules the output is held to: out's own, except on the sm_90a tier's
 * e4m3 wgmma (QGMMA). Hopper's FP8 tensor cores sum each 128-K slice with about 14
 * bits, truncating (DeepSeek-V3 §3.5.2; DeepGEMM promotes every 128 K for this reason),
 * so that kernel promises bf16's accuracy whatever out is: f32 and f16 outputs are held
 * to bf16's element bound and relative L2 there, and f32 loses the no-bias rule (the
 * truncation biases). A wrong layout or scale still fails: its errors are O(|ref|). */
static kp_dtype w8a8_rule_dtype(kp_device *d, const kp_grouped_gemm_params *p) {
    char kernel[KP_KERNEL_NAME_MAX];
    if (p->out.dtype == KP_BF16 || kp_op_kernel(d, KP_OP_GROUPED_GEMM, p, kernel, sizeof kernel) != KP_OK)
        return p->out.dtype;
    return strncmp(kernel, "sm90:", 5) == 0 ? KP_BF16 : p->out.dtype;
}

/* A backend that declines must refuse the call the same way and write nothing. */
static void declined_call(kp_stream *s, const kp_grouped_gemm_params *p, kp_conf_tensor *out) {
    CHECK(kp_grouped_gemm(s, p) == KP_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(kp_last_error(), "generation-2 kernels only") != NULL, "W8A8 declined with: %s", kp_last_error());
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(out);
    for (int64_t i = 0; i < out->numel; i++) CHECK_MSG(isnan(out->host[i]), "declined W8A8 wrote out[%lld]", (long long)i);
}

/* kernel: NULL, or the kernel kp_op_kernel must name (the path under test) */
static void w8a8_run_on(kp_device *d, kp_stream *s, const w8a8_case *c, const char *kernel) {
    w8a8_args x;
    kp_grouped_gemm_params p;
    w8a8_make(d, c, &x, &p);
    if (!kp_test_case_runs(d, KP_OP_GROUPED_GEMM, &p, MAY_DECLINE)) {
        declined_call(s, &p, &x.out);
        w8a8_free(&x);
        return;
    }
    if (kernel) {
        char kname[KP_KERNEL_NAME_MAX];
        CHECK_OK(kp_op_kernel(d, KP_OP_GROUPED_GEMM, &p, kname, sizeof kname));
        CHECK_MSG(strcmp(kname, kernel) == 0, "W8A8 case runs on %s, not %s", kname, kernel);
    }
    CHECK_OK(kp_grouped_gemm(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&x.out);
    double *ref = malloc((size_t)(c->m * c->n) * sizeof *ref), *err = calloc((size_t)(c->m * c->n), sizeof *err);
    for (int64_t i = 0; i < c->m * c->n; i++) ref[i] = NAN; /* the poison, where no expert writes */
    ref_grouped_gemm_w8a8(x.a.host, x.as_rows, c->k, x.w.host, x.w_scale.host, c->e, c->n, c->offsets, ref, err);
    char what[192];
    snprintf(what, sizeof what, "grouped_gemm w8a8 -> %s m %lld k %lld e %lld n %lld %s%s%s%s",
             kp_dtype_name(c->out_dt), (long long)c->m, (long long)c->k, (long long)c->e, (long long)c->n,
             c->layout == KP_FP8_SCALE_COL_MAJOR ? "column-major scales" : "row-major scales",
             c->ue8m0 ? " ue8m0" : "", c->wide ? " scales 2^-10..2^10" : "", c->outliers ? " outliers" : "");
    kp_conf_check_at(what, w8a8_rule_dtype(d, &p), x.out.host, ref, err, x.out.numel, x.out.t.ndim, x.out.t.shape,
                     "row,col", __FILE__, __LINE__);
    free(ref), free(err);
    w8a8_free(&x);
}

static void w8a8_run(kp_device *d, kp_stream *s, const w8a8_case *c) { w8a8_run_on(d, s, c, NULL); }

/* Uneven experts (empty ones, rows before the first and after the last untouched), M
 * and N multiples of no tile, both scale layouts, every output dtype. */
KP_CONFORMANCE(conf_grouped_gemm_w8a8) {
    kp_stream *s = new_stream(d);
    const int32_t off[6] = {3, 20, 41, 41, 69, 70};  /* 77 rows, expert 2 empty */
    const int32_t few[6] = {0, 2, 5, 9, 14, 30};     /* the decode paths: 2, 3, 4, 5, 16 rows */
    const int32_t big[4] = {0, 0, 130, 131};         /* past one 128-row tile, expert 0 empty */
    const w8a8_case cases[] = {
        {KP_BF16, 77, 384, 5, 200, off, KP_FP8_SCALE_ROW_MAJOR, 0, 0, 0, 0},
        {KP_F16, 77, 256, 5, 100, off, KP_FP8_SCALE_COL_MAJOR, 80, 0, 0, 0},
        {KP_F32, 30, 256, 5, 37, few, KP_FP8_SCALE_ROW_MAJOR, 0, 0, 0, 0},
        {KP_BF16, 30, 640, 5, 130, few, KP_FP8_SCALE_COL_MAJOR, 32, 0, 0, 0},
        {KP_BF16, 131, 128, 3, 70, big, KP_FP8_SCALE_ROW_MAJOR, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) w8a8_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* Long K (more K slices than any pipeline has stages: every stage reused, each slice's
 * scales its own), experts past one row tile and M = 131 (no tile's multiple), N past
 * two column tiles and no multiple of one, both layouts, scales 2^-10..2^10. */
KP_CONFORMANCE(conf_grouped_gemm_w8a8_long_k) {
    kp_stream *s = new_stream(d);
    const int32_t off[4] = {0, 70, 70, 131}, one[2] = {0, 131};
    const w8a8_case cases[] = {
        {KP_BF16, 131, 1152, 3, 136, off, KP_FP8_SCALE_COL_MAJOR, 132, 0, 1, 1},
        {KP_F32, 131, 896, 1, 200, one, KP_FP8_SCALE_ROW_MAJOR, 0, 0, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) w8a8_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* Scales over 2^-10..2^10 (a scale applied to the wrong row, slice or block, or twice,
 * cannot hide), UE8M0 activation scales, outlier channels up to e4m3's 448. */
KP_CONFORMANCE(conf_grouped_gemm_w8a8_scales) {
    kp_stream *s = new_stream(d);
    const int32_t off[4] = {2, 40, 40, 111}, few[5] = {0, 3, 7, 9, 25};
    const w8a8_case cases[] = {
        {KP_BF16, 115, 384, 3, 200, off, KP_FP8_SCALE_ROW_MAJOR, 0, 0, 1, 0},
        {KP_F32, 115, 384, 3, 200, off, KP_FP8_SCALE_COL_MAJOR, 116, 1, 1, 1},
        {KP_BF16, 25, 512, 4, 300, few, KP_FP8_SCALE_COL_MAJOR, 28, 1, 0, 1},
        {KP_BF16, 25, 384, 4, 130, few, KP_FP8_SCALE_ROW_MAJOR, 0, 1, 1, 1},
        {KP_F16, 115, 256, 3, 130, off, KP_FP8_SCALE_ROW_MAJOR, 0, 0, 0, 1}, /* f16: no 2^10 scales */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) w8a8_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* Generation 2's W8A8 tiled kernel (kernels/moe/moe_gemm_fp8_gen2.cl) with the AMD
 * wave-tile layout (kernels/common/kp_wave_tile_e4m3.h: 64-lane waves of 32 rows, one
 * column and 8 rows a lane, e4m3 decoded as the MFMA path decodes it), emulated on PoCL
 * (-DKP_WT_EMULATE_MFMA16): the kernel's code for the native v_mfma_f32_16x16x16f16
 * layout, all but the instruction. Row and column tiles cut short (M, N multiples of no
 * tile), five experts of 67, 0, 71, 9 and 50 rows (rows before the first and after the
 * last untouched), K of 3..5 128-blocks (more than the pipeline's stages), activation
 * scales that differ per row and per block and weight scales per 128 x 128 block over
 * 2^-10..2^10 (a scale read for the wrong row, column or slice cannot hide), UE8M0,
 * outliers, every output dtype; each case checked to run on the tiled kernel. */
static void w8a8_gen2_mfma16_layout_on(kp_device *d) {
    kp_stream *s = new_stream(d);
    const int32_t off[6] = {3, 70, 70, 141, 150, 200}, two[3] = {0, 45, 130};
    const char *tiled = "gen2:grouped_gemm_fp8_gen2_tiled";
    const w8a8_case cases[] = {
        {KP_BF16, 203, 512, 5, 136, off, KP_FP8_SCALE_ROW_MAJOR, 0, 0, 1, 0},
        {KP_F32, 203, 384, 5, 200, off, KP_FP8_SCALE_COL_MAJOR, 204, 1, 1, 1},
        {KP_F16, 130, 640, 2, 72, two, KP_FP8_SCALE_ROW_MAJOR, 0, 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) w8a8_run_on(d, s, &cases[i], tiled);
    kp_stream_destroy(s);
}
KP_TEST(conf_grouped_gemm_w8a8_gen2_mfma16_layout__opencl) {
    kp_conf_run_mfma16_layout("grouped_gemm=gen2", w8a8_gen2_mfma16_layout_on);
}

/* Expert offsets of T tokens routed to topk distinct experts of E each (random), the
 * rows sorted by expert as kp_moe_align leaves them: [E + 1], rows T * topk. */
static void routed_offsets(int64_t t, int topk, int64_t e, int32_t *off) {
    for (int64_t i = 0; i <= e; i++) off[i] = 0;
    for (int64_t tok = 0; tok < t; tok++) {
        int64_t picked[16];
        for (int s = 0; s < topk; s++) {
            int64_t x, dup;
            do {
                x = (int64_t)(kp_test_rand_u64() % (uint64_t)e), dup = 0;
                for (int q = 0; q < s; q++) dup |= picked[q] == x;
            } while (dup);
            picked[s] = x, off[x + 1]++;
        }
    }
    for (int64_t i = 0; i < e; i++) off[i + 1] += off[i];
}

/* Decode shapes (kernels/moe/moe_gemm_fp8_rows.h, the planner's choice when the rows an
 * expert has are few): T = 1, 4, 16, 128 tokens routed top-k over E = 8..64 experts
 * (empty experts, an expert of three 16-row tiles), both scale layouts, every output dtype;
 * K of 384..1536, not all multiples of the 1,024-wide chunk; a one-expert, one-column-
 * tile grid that split-K cuts into K slices (its partials summed by the reduce kernel)
 * and grids that need no split. */
KP_CONFORMANCE(conf_grouped_gemm_w8a8_decode) {
    kp_stream *s = new_stream(d);
    static const struct { int64_t t; int topk; int64_t e, k, n; kp_dtype dt; int layout, wide; } shapes[] = {
        {1, 1, 8, 1536, 32, KP_BF16, KP_FP8_SCALE_ROW_MAJOR, 1},   /* one work-group: split-K */
        {1, 2, 16, 1024, 72, KP_F16, KP_FP8_SCALE_COL_MAJOR, 0},
        {1, 8, 64, 640, 40, KP_F32, KP_FP8_SCALE_ROW_MAJOR, 1},
        {4, 2, 8, 512, 200, KP_F32, KP_FP8_SCALE_COL_MAJOR, 1},
        {4, 4, 32, 1152, 24, KP_BF16, KP_FP8_SCALE_COL_MAJOR, 0},
        {16, 4, 32, 384, 130, KP_BF16, KP_FP8_SCALE_ROW_MAJOR, 1},
        {16, 8, 64, 768, 64, KP_F16, KP_FP8_SCALE_COL_MAJOR, 0},
        {128, 4, 64, 256, 96, KP_F16, KP_FP8_SCALE_ROW_MAJOR, 0},   /* 8 rows an expert: some past 16 */
        {128, 2, 64, 640, 40, KP_F32, KP_FP8_SCALE_COL_MAJOR, 1},
        {128, 8, 64, 384, 48, KP_BF16, KP_FP8_SCALE_ROW_MAJOR, 1},  /* 16 rows an expert: the tiled kernel */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int32_t off[65];
        routed_offsets(shapes[i].t, shapes[i].topk, shapes[i].e, off);
        const int64_t m = shapes[i].t * shapes[i].topk;
        const w8a8_case c = {shapes[i].dt, m, shapes[i].k, shapes[i].e, shapes[i].n, off, shapes[i].layout,
                             (m + 3) / 4 * 4, 0, shapes[i].wide, 0};
        w8a8_run(d, s, &c);
    }
    /* one expert of 40 rows (three row tiles: 16, 16, 8) among seven of one, rows before
     * the first expert and after the last untouched (5.75 rows an expert: the decode kernel) */
    const int32_t hot[9] = {1, 1, 41, 42, 43, 44, 45, 46, 47};
    const w8a8_case c = {KP_BF16, 49, 512, 8, 80, hot, KP_FP8_SCALE_COL_MAJOR, 52, 0, 1, 0};
    w8a8_run(d, s, &c);
    kp_stream_destroy(s);
}

/* kp_quantize_fp8 -> kp_grouped_gemm against the exact GEMM of the unquantized bf16 x
 * with the (dequantized) FP8 weights. The model of the quantization error: element l
 * of a group with scale sc is off by at most delta_l = 2^-4 |x_l| (3 fraction bits,
 * round to nearest) or, below e4m3's normal range (|x_l| / sc < 2^-6), 2^-10 sc (half
 * the subnormal step 2^-9 sc); taken as uniform over +-delta_l, the output's error has
 * variance sum_l (delta_l w_l)^2 / 3, added to the GEMM's own rounding (the W8A8
 * model). The whole-output relative L2 error is held to that model's too. */
static void e2e_run(kp_device *d, kp_stream *s, int64_t t, int64_t k, int64_t e, int64_t n, const int32_t *off,
                    int layout, int ue8m0) {
    const int64_t kb = k / 128, nb = (n + 127) / 128, t_pad = (t + 3) / 4 * 4;
    const int col = layout == KP_FP8_SCALE_COL_MAJOR;
    /* rows scaled by 2^-10..2^10 in turn, 3 outlier channels x 40 */
    double *xv = malloc((size_t)(t * k) * sizeof *xv);
    int64_t outl[3];
    for (int i = 0; i < 3; i++) outl[i] = (int64_t)(kp_test_rand_u64() % (uint64_t)k);
    for (int64_t r = 0; r < t; r++)
        for (int64_t i = 0; i < k; i++) {
            double v = kp_test_rand_uniform(-1.0, 1.0) * ldexp(1.0, (int)(r % 21) - 10);
            xv[r * k + i] = i == outl[0] || i == outl[1] || i == outl[2] ? 40.0 * v : v;
        }
    kp_conf_tensor x = kp_conf_from(d, "x", KP_BF16, 2, SHAPE(t, k), xv);
    free(xv);
    kp_conf_tensor q = kp_conf_output(d, "q", KP_FP8_E4M3, 2, SHAPE(t, k));
    kp_conf_tensor sc = col ? kp_conf_output(d, "scale", KP_F32, 2, SHAPE(kb, t_pad))
                            : kp_conf_output(d, "scale", KP_F32, 2, SHAPE(t, kb));
    kp_quantize_fp8_params qp = {x.t, q.t, sc.t, layout, ue8m0};
    kp_test_require_op(d, KP_OP_QUANTIZE_FP8, &qp);
    CHECK_OK(kp_quantize_fp8(s, &qp));

    double *wv = e4m3_values(e * n * k, 0), *wsv = malloc((size_t)(e * nb * kb) * sizeof *wsv);
    for (int64_t i = 0; i < e * nb * kb; i++) wsv[i] = scale_value(0, 0);
    kp_conf_tensor w = kp_conf_from(d, "w", KP_FP8_E4M3, 3, SHAPE(e, n, k), wv);
    kp_conf_tensor ws = kp_conf_from(d, "w_scale", KP_F32, 3, SHAPE(e, nb, kb), wsv);
    free(wv), free(wsv);
    double *offv = malloc((size_t)(e + 1) * sizeof *offv);
    for (int64_t i = 0; i <= e; i++) offv[i] = off[i];
    kp_conf_tensor offt = kp_conf_from(d, "expert_offsets", KP_I32, 1, SHAPE(e + 1), offv);
    free(offv);
    kp_conf_tensor out = kp_conf_output(d, "out", KP_BF16, 2, SHAPE(t, n));
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    p.a = q.t, p.w = w.t, p.w_scale = ws.t, p.expert_offsets = offt.t, p.out = out.t, p.a_scale = sc.t;
    p.a_scale_layout = layout;
    if (kp_test_case_runs(d, KP_OP_GROUPED_GEMM, &p, MAY_DECLINE)) {
        CHECK_OK(kp_grouped_gemm(s, &p));
        CHECK_OK(kp_stream_sync(s));
        kp_conf_download(&out);
        kp_conf_download(&sc);
        /* the exact GEMM of x with the dequantized weights, and the GEMM's own rounding
         * (w8a8 model over the device's quantized values) */
        double *deq = malloc((size_t)(e * n * k) * sizeof *deq), *srow = malloc((size_t)(t * kb) * sizeof *srow);
        for (int64_t i = 0; i < e * n * k; i++)
            deq[i] = w.host[i] * ws.host[((i / (n * k)) * nb + (i / k) % n / 128) * kb + (i % k) / 128];
        for (int64_t r = 0; r < t; r++)
            for (int64_t g = 0; g < kb; g++) srow[r * kb + g] = sc.host[col ? g * t_pad + r : r * kb + g];
        kp_conf_download(&q);
        double *ref = malloc((size_t)(t * n) * sizeof *ref), *gerr = calloc((size_t)(t * n), sizeof *gerr);
        double *qref = malloc((size_t)(t * n) * sizeof *qref);
        ref_grouped_gemm_w8a8(q.host, srow, k, w.host, ws.host, e, n, off, qref, gerr);
        ref_prec exact = {0.0, 0.0};
        for (int64_t i = 0; i < t * n; i++) ref[i] = NAN;
        ref_grouped_gemm(x.host, k, deq, n * k, e, n, off, ref, &exact, NULL);
        double *err = calloc((size_t)(t * n), sizeof *err), err2 = 0.0, ref2 = 0.0, got2 = 0.0;
        for (int64_t ex = 0; ex < e; ex++)
            for (int64_t r = off[ex]; r < off[ex + 1]; r++)
                for (int64_t j = 0; j < n; j++) {
                    double var = 0.0;
                    for (int64_t l = 0; l < k; l++) {
                        double xl = x.host[r * k + l], scl = srow[r * kb + l / 128];
                        double delta = fabs(xl) / scl >= 0x1p-6 ? 0x1p-4 * fabs(xl) : 0x1p-10 * scl;
                        double dw = delta * deq[(ex * n + j) * k + l];
                        var += dw * dw / 3.0;
                    }
                    int64_t i = r * n + j;
                    err[i] = sqrt(var + gerr[i] * gerr[i]);
                    err2 += err[i] * err[i], ref2 += ref[i] * ref[i];
                    got2 += (out.host[i] - ref[i]) * (out.host[i] - ref[i]);
                }
        char what[160];
        snprintf(what, sizeof what, "quantize_fp8 -> grouped_gemm w8a8 vs bf16 GEMM T %lld K %lld E %lld N %lld %s%s",
                 (long long)t, (long long)k, (long long)e, (long long)n, col ? "column-major" : "row-major",
                 ue8m0 ? " ue8m0" : "");
        kp_conf_result res = kp_conf_compare(KP_BF16, out.host, ref, err, t * n);
        /* the per-element rule must hold; the dtype's rel-L2 tolerance gives way to the
         * model's: 2x its expected relative L2 plus bf16's own */
        double model_l2 = ref2 > 0 ? 2.0 * sqrt(err2 / ref2) + kp_conf_tolerance(KP_BF16) : 0.0;
        if (!res.ok && strcmp(res.rule, "rel_l2") == 0 && res.rel_l2 <= model_l2) res.ok = 1;
        CHECK_MSG(res.ok, "%s: %s check failed: %lld elements over their bound, rel L2 %.3g (model %.3g); worst at "
                  "flat %lld: %.9g, reference %.9g, bound %.3g", what, res.rule, (long long)res.over, res.rel_l2,
                  model_l2, (long long)res.worst, res.worst_got, res.worst_ref, res.worst_bound);
        CHECK_MSG(ref2 == 0 || sqrt(got2 / ref2) <= model_l2, "%s: rel L2 %.3g over the model's %.3g", what,
                  sqrt(got2 / ref2), model_l2);
        free(deq), free(srow), free(ref), free(gerr), free(qref), free(err);
    } else {
        declined_call(s, &p, &out);
    }
    kp_conf_free(&x), kp_conf_free(&q), kp_conf_free(&sc), kp_conf_free(&w), kp_conf_free(&ws);
    kp_conf_free(&offt), kp_conf_free(&out);
}

KP_CONFORMANCE(conf_grouped_gemm_w8a8_quantized) {
    kp_stream *s = new_stream(d);
    const int32_t off[5] = {0, 17, 17, 40, 41}, dec[3] = {0, 1, 3};
    e2e_run(d, s, 41, 512, 4, 160, off, KP_FP8_SCALE_ROW_MAJOR, 0);
    e2e_run(d, s, 41, 384, 4, 96, off, KP_FP8_SCALE_COL_MAJOR, 0);
    e2e_run(d, s, 3, 1024, 2, 130, dec, KP_FP8_SCALE_COL_MAJOR, 1);
    e2e_run(d, s, 41, 256, 4, 64, off, KP_FP8_SCALE_ROW_MAJOR, 1);
    kp_stream_destroy(s);
}
