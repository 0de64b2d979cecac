/*
 * tests/ep/test_ep_forward.c — kp_moe_forward_ep, the whole expert-parallel layer in
 * one call, under mpirun -np 2 and 4 (ci/ep-test).
 *
 * Every rank holds all the weights on the host, passes its own experts' slice to
 * kp_moe_forward_ep, and computes kp_moe_forward over all the experts on its own
 * tokens: the two must agree element by element within 2 ulps of the element plus
 * 2^-20 (f32) or 2^-6 (bf16) of its row's largest magnitude, and in relative L2 within
 * 1e-6 / 4e-3. Why not bit for bit (kport.h): a GEMM's f32 summation order depends on
 * the rows an expert gets in one call (the CPU engine takes a dot-product path for a
 * few rows, tiles for more), and an expert gets other row counts on one rank than on
 * several; a y element may then round the other way. With a shared expert in bf16
 * the shared row is rounded once before it is added: 1 ulp of its magnitude more
 * (from a float64 host computation). Outputs are
 * poisoned (NaN bytes) with guard bytes on both sides. Routings: DeepSeek-V3 style
 * (group-limited, sigmoid, bias, route scale 2.5) and softmax; skewed so that every
 * token goes to rank 0's experts; ranks with no tokens; T = 1; both modes; a capacity
 * overflow reported on every rank; bad input on every rank and on one rank.
 */
#include "ep_test.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { E = 16, H = 32, I = 16, IS = 16, K = 4, MAXT = 8, GUARD = 64 };

typedef struct fwd_case {
    const char *name;
    kp_dtype dtype;
    int shared;   /* with a shared expert of inter IS */
    int deepseek; /* n_group 4, topk_group 2, sigmoid, bias, scale 2.5; else softmax, renormalised */
    int32_t tokens[4];
    int skew;     /* every token's experts on rank 0 */
    kp_ep_mode mode;
    int32_t capacity;
    int expect_overflow;
} fwd_case;

static const fwd_case cases[] = {
    {"f32 DeepSeek routing + shared expert, normal", KP_F32, 1, 1, {7, 3, 8, 5}, 0, KP_EP_MODE_NORMAL, 0, 0},
    {"bf16 DeepSeek routing, normal", KP_BF16, 0, 1, {7, 3, 8, 5}, 0, KP_EP_MODE_NORMAL, 0, 0},
    {"bf16 DeepSeek routing + shared expert, normal", KP_BF16, 1, 1, {7, 3, 8, 5}, 0, KP_EP_MODE_NORMAL, 0, 0},
    {"bf16 all tokens to rank 0's experts, ranks with no tokens", KP_BF16, 0, 0, {8, 0, 6, 0}, 1,
     KP_EP_MODE_NORMAL, 0, 0},
    {"f32 T=1 + shared expert, capacity", KP_F32, 1, 0, {1, 1, 1, 1}, 0, KP_EP_MODE_CAPACITY, MAXT * K, 0},
    {"bf16 all tokens to rank 0's experts, capacity", KP_BF16, 0, 1, {8, 5, 0, 8}, 1, KP_EP_MODE_CAPACITY,
     MAXT * K, 0},
    {"f32 capacity overflow is reported on every rank, out written", KP_F32, 1, 0, {8, 8, 8, 8}, 1,
     KP_EP_MODE_CAPACITY, 3, 1},
};

static double get(const void *p, kp_dtype dt, size_t i) {
    return dt == KP_F32 ? ((const float *)p)[i] : from_bf16(((const uint16_t *)p)[i]);
}

static double ulp(double v, kp_dtype dt) {
    int e;
    frexp(fabs(v) > 1e-30 ? fabs(v) : 1e-30, &e); /* v = m * 2^e, m in [0.5, 1) */
    return ldexp(1.0, e - 1 - (dt == KP_F32 ? 23 : 7));
}

/* The shared expert's output for token row xr, in float64 (for the tolerance only). */
static double shared_out(const void *x, const void *w13s, const void *w2s, kp_dtype dt, int64_t t, int n) {
    double h[IS];
    for (int i = 0; i < IS; i++) {
        double g = 0, u = 0;
        for (int c = 0; c < H; c++) {
            g += get(x, dt, (size_t)(t * H + c)) * get(w13s, dt, (size_t)(i * H + c));
            u += get(x, dt, (size_t)(t * H + c)) * get(w13s, dt, (size_t)((IS + i) * H + c));
        }
        h[i] = g / (1.0 + exp(-g)) * u;
    }
    double s = 0;
    for (int i = 0; i < IS; i++) s += h[i] * get(w2s, dt, (size_t)(n * IS + i));
    return s;
}

#define TRY(x)                                                                                                 \
    do {                                                                                                       \
        if ((st = (x)) != KP_OK) {                                                                             \
            snprintf(detail, sizeof detail, "%s: %s: %s", #x, kp_status_str(st), kp_last_error());             \
            goto done;                                                                                         \
        }                                                                                                      \
    } while (0)

static kp_status upload(kp_device *d, const void *host, size_t bytes, kp_buffer **b) {
    kp_status st = kp_buffer_alloc(d, bytes ? bytes : 16, b);
    if (st == KP_OK && bytes) st = kp_buffer_write(stream, *b, 0, host, bytes);
    return st;
}

static kp_status t2(kp_tensor *t, kp_buffer *b, size_t off, kp_dtype dt, int64_t r, int64_t c) {
    const int64_t s[2] = {r, c};
    return kp_tensor_init(t, b, off, dt, 2, s, NULL);
}

static kp_status t3(kp_tensor *t, kp_buffer *b, size_t off, kp_dtype dt, int64_t a, int64_t r, int64_t c) {
    const int64_t s[3] = {a, r, c};
    return kp_tensor_init(t, b, off, dt, 3, s, NULL);
}

/* Host data of one case, the same weights on every rank. */
typedef struct fwd_data {
    void *x, *w13, *w2, *w13s, *w2s;
    float *logits, *bias;
} fwd_data;

static void make_data(const fwd_case *c, int64_t T, fwd_data *h) {
    const size_t es = kp_dtype_size(c->dtype);
    h->x = malloc((size_t)(T ? T : 1) * H * es);
    h->w13 = malloc((size_t)E * 2 * I * H * es);
    h->w2 = malloc((size_t)E * H * I * es);
    h->w13s = malloc((size_t)2 * IS * H * es);
    h->w2s = malloc((size_t)H * IS * es);
    h->logits = malloc(sizeof(float) * (size_t)(T ? T : 1) * E);
    h->bias = malloc(sizeof(float) * E);
    rng_state = 31337;
    fill_rows(h->w13, c->dtype, (size_t)E * 2 * I * H);
    fill_rows(h->w2, c->dtype, (size_t)E * H * I);
    fill_rows(h->w13s, c->dtype, (size_t)2 * IS * H);
    fill_rows(h->w2s, c->dtype, (size_t)H * IS);
    for (int e = 0; e < E; e++) h->bias[e] = 0.05f * frand();
    rng_state = 5150 + 977 * (uint64_t)rank;
    fill_rows(h->x, c->dtype, (size_t)T * H);
    const int32_t rank0_end = E / world; /* rank 0's experts are [0, E / world) */
    for (int64_t i = 0; i < T * E; i++)
        h->logits[i] = 2.0f * frand() + (c->skew && (int32_t)(i % E) < rank0_end ? 8.0f : 0.0f);
}

static void free_data(fwd_data *h) { free(h->x), free(h->w13), free(h->w2), free(h->w13s), free(h->w2s), free(h->logits), free(h->bias); }

static void run_case(const char *backend, kp_device *dev, const fwd_case *c) {
    char detail[1024] = "";
    int ok = 0;
    kp_status st = KP_OK;
    const int64_t T = c->tokens[rank % 4];
    const size_t es = kp_dtype_size(c->dtype), out_bytes = (size_t)T * H * es;
    const int32_t LE = E / world, eb = rank * LE;
    kp_ep *ep = NULL;
    kp_buffer *bx = NULL, *blog = NULL, *bbias = NULL, *bw13 = NULL, *bw2 = NULL, *bw13s = NULL, *bw2s = NULL,
              *bout = NULL, *bref = NULL, *bws = NULL, *bws_ref = NULL;
    uint8_t *hout = malloc(out_bytes + 2 * GUARD), *href = malloc(out_bytes + 1);
    fwd_data h;
    make_data(c, T, &h);
    kp_moe_routing routing = {.topk = K, .n_group = 1, .topk_group = 1, .scoring = KP_MOE_SCORING_SOFTMAX,
                              .renormalize = 1, .route_scale = 1.0f};
    if (c->deepseek)
        routing = (kp_moe_routing){.topk = K, .n_group = 4, .topk_group = 2, .scoring = KP_MOE_SCORING_SIGMOID,
                                   .renormalize = 1, .route_scale = 2.5f};
    MPI_Comm comm = MPI_COMM_WORLD;
    kp_ep_options o = {.comm_kind = KP_EP_COMM_MPI, .comm = &comm, .num_experts = E, .expert_begin = eb,
                       .expert_end = eb + LE, .hidden = H, .dtype = c->dtype, .topk = K,
                       .max_tokens_per_rank = MAXT, .mode = c->mode, .capacity_per_rank = c->capacity,
                       .timeout_ms = 60000};
    TRY(kp_ep_create(dev, &o, &ep));
    TRY(upload(dev, h.x, out_bytes, &bx));
    TRY(upload(dev, h.logits, sizeof(float) * (size_t)T * E, &blog));
    TRY(upload(dev, h.bias, sizeof(float) * E, &bbias));
    TRY(upload(dev, h.w13, (size_t)E * 2 * I * H * es, &bw13));
    TRY(upload(dev, h.w2, (size_t)E * H * I * es, &bw2));
    TRY(upload(dev, h.w13s, (size_t)2 * IS * H * es, &bw13s));
    TRY(upload(dev, h.w2s, (size_t)H * IS * es, &bw2s));
    memset(hout, 0xff, out_bytes + 2 * GUARD); /* NaN in f32 and bf16 */
    TRY(upload(dev, hout, out_bytes + 2 * GUARD, &bout));
    TRY(kp_buffer_alloc(dev, out_bytes + 16, &bref));

    kp_moe_forward_ep_params p = {.routing = routing};
    TRY(t2(&p.x, bx, 0, c->dtype, T, H));
    TRY(t2(&p.router_logits, blog, 0, KP_F32, T, E));
    if (c->deepseek) TRY(kp_tensor_init(&p.bias, bbias, 0, KP_F32, 1, (const int64_t[]){E}, NULL));
    TRY(t3(&p.w13, bw13, (size_t)eb * 2 * I * H * es, c->dtype, LE, 2 * I, H)); /* this rank's slice */
    TRY(t3(&p.w2, bw2, (size_t)eb * H * I * es, c->dtype, LE, H, I));
    if (c->shared) TRY(t2(&p.shared_w13, bw13s, 0, c->dtype, 2 * IS, H));
    if (c->shared) TRY(t2(&p.shared_w2, bw2s, 0, c->dtype, H, IS));
    TRY(t2(&p.out, bout, GUARD, c->dtype, T, H));
    size_t ws = 0;
    TRY(kp_moe_forward_ep_workspace_size(ep, &p, &ws));
    TRY(kp_buffer_alloc(dev, ws + 100, &bws));
    p.workspace = bws;
    p.workspace_offset = 100; /* unaligned: the size includes the room to align */
    kp_ep_dispatch_result r = {0};
    st = kp_moe_forward_ep(ep, stream, &p, &r);
    if (c->expect_overflow) {
        int64_t sum = 0;
        MPI_Allreduce(&r.dropped, &sum, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        if (st != KP_ERR_OUT_OF_BOUNDS || r.dropped_all < 1 || sum != r.dropped_all) {
            snprintf(detail, sizeof detail, "status %s (%s), dropped %lld, dropped_all %lld, sum %lld",
                     kp_status_str(st), kp_last_error(), (long long)r.dropped, (long long)r.dropped_all,
                     (long long)sum);
            goto done;
        }
    } else if (st != KP_OK) {
        snprintf(detail, sizeof detail, "kp_moe_forward_ep: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    if (!c->expect_overflow && (r.dropped || r.dropped_all)) {
        snprintf(detail, sizeof detail, "dropped %lld pairs without an overflow", (long long)r.dropped_all);
        goto done;
    }
    TRY(kp_buffer_read(stream, bout, 0, hout, out_bytes + 2 * GUARD));
    for (size_t i = 0; i < GUARD; i++)
        if (hout[i] != 0xff || hout[GUARD + out_bytes + i] != 0xff) {
            snprintf(detail, sizeof detail, "a guard byte around out changed (byte %zu)", i);
            goto done;
        }
    if (T) {
        kp_moe_forward_params f = {.x = p.x, .router_logits = p.router_logits, .bias = p.bias,
                                   .shared_w13 = p.shared_w13, .shared_w2 = p.shared_w2, .routing = routing};
        TRY(t3(&f.w13, bw13, 0, c->dtype, E, 2 * I, H)); /* every expert */
        TRY(t3(&f.w2, bw2, 0, c->dtype, E, H, I));
        TRY(t2(&f.out, bref, 0, c->dtype, T, H));
        size_t wsr = 0;
        TRY(kp_moe_forward_workspace_size(dev, &f, &wsr));
        TRY(kp_buffer_alloc(dev, wsr, &bws_ref));
        f.workspace = bws_ref;
        TRY(kp_moe_forward(stream, &f));
        TRY(kp_buffer_read(stream, bref, 0, href, out_bytes));
    }
    const uint8_t *got = hout + GUARD;
    double d2 = 0, r2 = 0;
    for (int64_t t = 0; t < T; t++) {
        double rowmax = 0;
        for (int64_t j = 0; j < H; j++) rowmax = fmax(rowmax, fabs(get(href, c->dtype, (size_t)(t * H + j))));
        for (int64_t j = 0; j < H; j++) {
            const size_t i = (size_t)(t * H + j);
            double a = get(got, c->dtype, i), b = get(href, c->dtype, i);
            if (isnan(a)) {
                snprintf(detail, sizeof detail, "out[%lld, %lld] is NaN (not written)", (long long)t, (long long)j);
                goto done;
            }
            if (c->expect_overflow) continue; /* dropped pairs count as zero: not kp_moe_forward's sum */
            /* the GEMMs' f32 order may differ (see the file comment), and a y element may
             * round the other way: a few ulps of the element and of the row */
            double tol = 2 * ulp(b, c->dtype) + ldexp(rowmax, c->dtype == KP_F32 ? -20 : -6);
            if (c->shared && c->dtype != KP_F32) /* the shared row's own rounding */
                tol += ulp(1.1 * shared_out(h.x, h.w13s, h.w2s, c->dtype, t, (int)j), c->dtype);
            if (!(fabs(a - b) <= tol)) {
                snprintf(detail, sizeof detail, "out[%lld, %lld]: EP %.9g, kp_moe_forward %.9g, tolerance %.3g",
                         (long long)t, (long long)j, a, b, tol);
                goto done;
            }
            d2 += (a - b) * (a - b), r2 += b * b;
        }
    }
    if (!c->expect_overflow && T && !(sqrt(d2) <= (c->dtype == KP_F32 ? 1e-6 : 4e-3) * sqrt(r2))) {
        snprintf(detail, sizeof detail, "relative L2 %.3g", sqrt(d2 / r2));
        goto done;
    }
    ok = 1;
done:
    if (ep) kp_ep_destroy(ep);
    kp_buffer *all[] = {bx, blog, bbias, bw13, bw2, bw13s, bw2s, bout, bref, bws, bws_ref};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i]) kp_buffer_free(all[i]);
    char name[256];
    snprintf(name, sizeof name, "moe_forward_ep %s%s", c->name,
             c->expect_overflow ? "" : " equals kp_moe_forward (f32-order tolerance)");
    report(backend, name, ok, detail);
    free(hout), free(href);
    free_data(&h);
}

/* Bad input: on every rank (each returns the error at once, out untouched), then on
 * rank 0 only (rank 0 returns its error at once; the others time out, not hang). In
 * capacity mode a dispatch is one exchange, so rank 0 can settle the one the others
 * abandoned afterwards (a T = 0 kp_ep_dispatch): no request is left pending. */
static void run_bad_input(const char *backend, kp_device *dev, int only_rank0) {
    char detail[1024] = "";
    int ok = 0;
    kp_status st = KP_OK;
    const fwd_case *c = &cases[0];
    const int64_t T = 4;
    const size_t es = kp_dtype_size(c->dtype), out_bytes = (size_t)T * H * es;
    const int32_t LE = E / world, eb = rank * LE;
    kp_ep *ep = NULL;
    kp_buffer *bx = NULL, *blog = NULL, *bw13 = NULL, *bw2 = NULL, *bout = NULL, *bws = NULL, *brecv = NULL;
    uint8_t *hout = malloc(out_bytes);
    int settled = 0;
    MPI_Comm side;
    MPI_Comm_dup(MPI_COMM_WORLD, &side);
    fwd_data h;
    make_data(c, T, &h);
    MPI_Comm comm = MPI_COMM_WORLD;
    kp_ep_options o = {.comm_kind = KP_EP_COMM_MPI, .comm = &comm, .num_experts = E, .expert_begin = eb,
                       .expert_end = eb + LE, .hidden = H, .dtype = c->dtype, .topk = K,
                       .max_tokens_per_rank = MAXT, .mode = KP_EP_MODE_CAPACITY, .capacity_per_rank = MAXT * K,
                       .timeout_ms = 1500};
    TRY(kp_ep_create(dev, &o, &ep));
    kp_ep_info info;
    TRY(kp_ep_get_info(ep, &info));
    TRY(kp_buffer_alloc(dev, (size_t)info.max_recv_rows * H * es + 256, &brecv));
    TRY(upload(dev, h.x, out_bytes, &bx));
    TRY(upload(dev, h.logits, sizeof(float) * (size_t)T * E, &blog));
    TRY(upload(dev, h.w13, (size_t)E * 2 * I * H * es, &bw13));
    TRY(upload(dev, h.w2, (size_t)E * H * I * es, &bw2));
    memset(hout, 0xff, out_bytes);
    TRY(upload(dev, hout, out_bytes, &bout));
    kp_moe_forward_ep_params p = {.routing = {.topk = K, .n_group = 1, .topk_group = 1,
                                              .scoring = KP_MOE_SCORING_SOFTMAX, .renormalize = 1,
                                              .route_scale = 1.0f}};
    TRY(t2(&p.x, bx, 0, c->dtype, T, H));
    TRY(t2(&p.router_logits, blog, 0, KP_F32, T, E));
    TRY(t3(&p.w13, bw13, (size_t)eb * 2 * I * H * es, c->dtype, LE, 2 * I, H));
    TRY(t3(&p.w2, bw2, (size_t)eb * H * I * es, c->dtype, LE, H, I));
    TRY(t2(&p.out, bout, 0, c->dtype, T, H));
    size_t ws = 0;
    TRY(kp_moe_forward_ep_workspace_size(ep, &p, &ws));
    TRY(kp_buffer_alloc(dev, ws, &bws));
    p.workspace = bws;
    const int bad = !only_rank0 || rank == 0;
    if (bad) TRY(t3(&p.w13, bw13, 0, c->dtype, E, 2 * I, H)); /* every expert, not this rank's slice */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    st = kp_moe_forward_ep(ep, stream, &p, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", kp_last_error());
    MPI_Barrier(side); /* every rank's call has returned */
    settled = 1;
    if (only_rank0 && rank == 0) { /* join the exchange the others abandoned */
        kp_ep_dispatch_params dp = {0};
        kp_ep_dispatch_result dr;
        const int64_t os[1] = {LE + 1};
        kp_status s2 = t2(&dp.x, bx, 0, c->dtype, 0, H);
        if (s2 == KP_OK) s2 = t2(&dp.topk_ids, bx, 0, KP_I32, 0, K);
        if (s2 == KP_OK) s2 = t2(&dp.recv_x, brecv, 256, c->dtype, info.max_recv_rows, H);
        if (s2 == KP_OK) s2 = kp_tensor_init(&dp.expert_offsets, brecv, 0, KP_I32, 1, os, NULL);
        if (s2 == KP_OK) s2 = kp_ep_dispatch(ep, stream, &dp, &dr);
        if (s2 != KP_OK) fprintf(stderr, "rank 0: settling dispatch: %s\n", kp_last_error());
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    kp_status want = bad ? KP_ERR_INVALID_SHAPE : KP_ERR_BACKEND;
    if (st != want || (bad && !strstr(msg, "w13"))) {
        snprintf(detail, sizeof detail, "got %s (%s), expected %s", kp_status_str(st), msg,
                 kp_status_str(want));
        goto done;
    }
    if (secs > (bad ? 0.5 : 20.0)) {
        snprintf(detail, sizeof detail, "took %.1f s", secs);
        goto done;
    }
    uint8_t *now = malloc(out_bytes);
    st = now ? kp_buffer_read(stream, bout, 0, now, out_bytes) : KP_ERR_OUT_OF_MEMORY;
    int untouched = st == KP_OK && memcmp(now, hout, out_bytes) == 0;
    free(now);
    if (bad && !untouched) {
        snprintf(detail, sizeof detail, "out was written by a call that failed validation");
        goto done;
    }
    ok = 1;
done:
    if (!settled) MPI_Barrier(side);
    MPI_Comm_free(&side);
    if (ep) kp_ep_destroy(ep);
    kp_buffer *all[] = {bx, blog, bw13, bw2, bout, bws, brecv};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i]) kp_buffer_free(all[i]);
    report(backend,
           only_rank0 ? "moe_forward_ep bad input on rank 0 only: rank 0 fails at once, out untouched; the others "
                        "fail within the timeout"
                      : "moe_forward_ep bad input on every rank: a clear error at once, out untouched",
           ok, detail);
    free(hout);
    free_data(&h);
}

void run_forward_ep_cases(const char *backend, kp_device *dev) {
    if (E % world) {
        if (rank == 0) printf("SKIP np%d %s moe_forward_ep: needs a rank count dividing %d\n", world, backend, E);
        n_skip++;
        return;
    }
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(backend, dev, &cases[i]);
    run_bad_input(backend, dev, 0);
    run_bad_input(backend, dev, 1);
}

/* ---- the NCCL transport against tests/fake_nccl (cpu backend) ----------------- */

/* forward_once's handle timeout, and whether the fake libnccl is made non-blocking
 * once the handle exists (the timeout case below) */
static int32_t fwd_timeout_ms = 60000;
static int fwd_nonblocking, fwd_skip_call; /* skip: create the handle (collective), never call */

/* One kp_moe_forward_ep of case c over the given communicator: out's bytes, the status
 * and the dispatch result. */
static kp_status forward_once(kp_device *dev, const fwd_case *c, kp_ep_comm_kind kind, const void *comm,
                              uint8_t *out, kp_ep_dispatch_result *r, char *detail, size_t dn) {
    kp_status st = KP_OK, call = KP_OK;
    const int64_t T = c->tokens[rank % 4];
    const size_t es = kp_dtype_size(c->dtype), out_bytes = (size_t)T * H * es;
    const int32_t LE = E / world, eb = rank * LE;
    kp_ep *ep = NULL;
    kp_buffer *bx = NULL, *blog = NULL, *bbias = NULL, *bw13 = NULL, *bw2 = NULL, *bw13s = NULL, *bw2s = NULL,
              *bout = NULL, *bws = NULL;
    fwd_data h;
    make_data(c, T, &h);
    kp_ep_options o = {.comm_kind = kind, .comm = comm, .num_experts = E, .expert_begin = eb, .expert_end = eb + LE,
                       .hidden = H, .dtype = c->dtype, .topk = K, .max_tokens_per_rank = MAXT, .mode = c->mode,
                       .capacity_per_rank = c->capacity, .timeout_ms = fwd_timeout_ms};
    kp_moe_forward_ep_params p = {.routing = {.topk = K, .n_group = 4, .topk_group = 2,
                                              .scoring = KP_MOE_SCORING_SIGMOID, .renormalize = 1,
                                              .route_scale = 2.5f}};
    size_t ws = 0;
#define STEP(x) if (st == KP_OK && (st = (x)) != KP_OK) snprintf(detail, dn, "%s: %s: %s", #x, kp_status_str(st), kp_last_error())
    STEP(kp_ep_create(dev, &o, &ep));
    STEP(upload(dev, h.x, out_bytes, &bx));
    STEP(upload(dev, h.logits, sizeof(float) * (size_t)T * E, &blog));
    STEP(upload(dev, h.bias, sizeof(float) * E, &bbias));
    STEP(upload(dev, h.w13, (size_t)E * 2 * I * H * es, &bw13));
    STEP(upload(dev, h.w2, (size_t)E * H * I * es, &bw2));
    STEP(upload(dev, h.w13s, (size_t)2 * IS * H * es, &bw13s));
    STEP(upload(dev, h.w2s, (size_t)H * IS * es, &bw2s));
    STEP(kp_buffer_alloc(dev, out_bytes + 16, &bout));
    STEP(t2(&p.x, bx, 0, c->dtype, T, H));
    STEP(t2(&p.router_logits, blog, 0, KP_F32, T, E));
    STEP(kp_tensor_init(&p.bias, bbias, 0, KP_F32, 1, (const int64_t[]){E}, NULL));
    STEP(t3(&p.w13, bw13, (size_t)eb * 2 * I * H * es, c->dtype, LE, 2 * I, H));
    STEP(t3(&p.w2, bw2, (size_t)eb * H * I * es, c->dtype, LE, H, I));
    if (c->shared) STEP(t2(&p.shared_w13, bw13s, 0, c->dtype, 2 * IS, H));
    if (c->shared) STEP(t2(&p.shared_w2, bw2s, 0, c->dtype, H, IS));
    STEP(t2(&p.out, bout, 0, c->dtype, T, H));
    STEP(kp_moe_forward_ep_workspace_size(ep, &p, &ws));
    STEP(kp_buffer_alloc(dev, ws, &bws));
#undef STEP
    p.workspace = bws;
    if (st == KP_OK && fwd_nonblocking) setenv("KPORT_FAKE_NCCL_NONBLOCKING", "1", 1);
    if (st == KP_OK && !fwd_skip_call) {
        call = kp_moe_forward_ep(ep, stream, &p, r);
        if (call != KP_OK && call != KP_ERR_OUT_OF_BOUNDS)
            snprintf(detail, dn, "kp_moe_forward_ep: %s: %s", kp_status_str(call), kp_last_error());
        if ((call == KP_OK || call == KP_ERR_OUT_OF_BOUNDS) && out_bytes)
            st = kp_buffer_read(stream, bout, 0, out, out_bytes);
    }
    unsetenv("KPORT_FAKE_NCCL_NONBLOCKING");
    if (ep) kp_ep_destroy(ep);
    kp_buffer *all[] = {bx, blog, bbias, bw13, bw2, bw13s, bw2s, bout, bws};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i]) kp_buffer_free(all[i]);
    free_data(&h);
    return st != KP_OK ? st : call;
}

typedef struct { char internal[128]; } nccl_id; /* ncclUniqueId */

/* The fake's calls a test needs to make a communicator (kport never makes one). */
typedef struct fake_nccl {
    void *lib;
    int (*get_unique_id)(nccl_id *id);
    int (*comm_init_rank)(void **comm, int nranks, nccl_id id, int rank);
    int (*comm_destroy)(void *comm);
    const char *(*error_string)(int);
    long (*polls)(void); /* kportFakeNcclAsyncErrorCalls: not NCCL, the fake's own */
} fake_nccl;

void run_nccl_cases(const char *backend, kp_device *dev) {
    char detail[1024] = "";
    const int need = getenv("KPORT_EP_TEST_NEED_FAKE_NCCL") != NULL;
    fake_nccl f = {.lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL)};
    int fake = 0;
    if (f.lib) {
        *(void **)&f.get_unique_id = dlsym(f.lib, "ncclGetUniqueId");
        *(void **)&f.comm_init_rank = dlsym(f.lib, "ncclCommInitRank");
        *(void **)&f.comm_destroy = dlsym(f.lib, "ncclCommDestroy");
        *(void **)&f.error_string = dlsym(f.lib, "ncclGetErrorString");
        *(void **)&f.polls = dlsym(f.lib, "kportFakeNcclAsyncErrorCalls");
        fake = f.get_unique_id && f.comm_init_rank && f.comm_destroy && f.error_string && f.polls &&
               strstr(f.error_string(0), "(fake)");
    }
    int all = 0;
    MPI_Allreduce(&fake, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all) {
        if (need) report(backend, "NCCL transport: the fake libnccl.so.2 (tests/fake_nccl) is loaded", 0,
                         "libnccl.so.2 is missing or not the fake: put build/tests/fake_nccl on LD_LIBRARY_PATH");
        else if (rank == 0) printf("SKIP np%d %s NCCL transport: libnccl.so.2 is not tests/fake_nccl's (ci/ep-test "
                                   "puts it on LD_LIBRARY_PATH)\n", world, backend);
        if (!need) n_skip++;
        if (f.lib) dlclose(f.lib);
        return;
    }
    nccl_id id;
    memset(&id, 0, sizeof id);
    if (rank == 0) f.get_unique_id(&id);
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    void *comm = NULL;
    int rc = f.comm_init_rank(&comm, world, id, rank);
    report(backend, "NCCL transport: the fake libnccl makes a communicator over shared memory", rc == 0,
           rc == 0 ? "" : f.error_string(rc));
    if (rc != 0) {
        dlclose(f.lib);
        return;
    }
    run_cases_over_nccl(backend, dev, &comm, f.polls);
    MPI_Comm mpi = MPI_COMM_WORLD;
    static const fwd_case t1 = {"bf16 T=1 + shared expert, normal", KP_BF16, 1, 1, {1, 1, 1, 1}, 0,
                                KP_EP_MODE_NORMAL, 0, 0};
    /* normal: f32 + shared; bf16 + shared; skewed, ranks with no tokens; T=1; capacity:
     * T=1, skewed, overflow */
    const fwd_case *run[] = {&cases[0], &cases[2], &cases[3], &t1, &cases[4], &cases[5], &cases[6]};
    for (size_t ci = 0; ci < sizeof run / sizeof *run; ci++) {
        const fwd_case *c = run[ci];
        const size_t bytes = (size_t)c->tokens[rank % 4] * H * kp_dtype_size(c->dtype) + 1;
        uint8_t *a = calloc(bytes, 1), *b = calloc(bytes, 1);
        kp_ep_dispatch_result ra = {0}, rb = {0};
        detail[0] = 0;
        kp_status sa = forward_once(dev, c, KP_EP_COMM_MPI, &mpi, a, &ra, detail, sizeof detail);
        const long polls_before = f.polls();
        kp_status sb = forward_once(dev, c, KP_EP_COMM_NCCL, &comm, b, &rb, detail, sizeof detail);
        const int polled = f.polls() > polls_before; /* the device path's poll asks the library */
        if (!polled && !detail[0])
            snprintf(detail, sizeof detail, "no ncclCommGetAsyncError call: the device path was not taken");
        int ok = polled && sa == sb && (sa == KP_OK || sa == KP_ERR_OUT_OF_BOUNDS) &&
                 memcmp(a, b, bytes) == 0 && ra.recv_rows == rb.recv_rows && ra.dropped == rb.dropped &&
                 ra.dropped_all == rb.dropped_all;
        if (!ok && !detail[0])
            snprintf(detail, sizeof detail, "MPI %s, NCCL %s; outputs %s; recv_rows %lld / %lld", kp_status_str(sa),
                     kp_status_str(sb), memcmp(a, b, bytes) ? "differ" : "equal", (long long)ra.recv_rows,
                     (long long)rb.recv_rows);
        char name[256];
        snprintf(name, sizeof name,
                 "NCCL transport (fake libnccl, device path): moe_forward_ep %s equals the MPI transport's bits",
                 c->name);
        report(backend, name, ok, detail);
        free(a), free(b);
    }
    run_forward_async_cases(backend, dev, &comm); /* tests/ep/test_ep_forward_async.c */
    /* A rank that never joins (rank 0 skips the layer) with a non-blocking communicator:
     * nothing blocks inside NCCL, so only kport's own poll can end the others' call: at
     * the handle's timeout, KP_ERR_BACKEND "timed out". The communicator is then spoilt
     * (half-sent chunks): the last use of it. */
    if (world > 1) {
        const fwd_case *c = &cases[0];
        const size_t bytes = (size_t)c->tokens[rank % 4] * H * kp_dtype_size(c->dtype) + 1;
        uint8_t *b = calloc(bytes, 1);
        kp_ep_dispatch_result rb = {0};
        fwd_timeout_ms = 1000;
        fwd_nonblocking = 1;
        fwd_skip_call = rank == 0;
        detail[0] = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        kp_status sb = forward_once(dev, c, KP_EP_COMM_NCCL, &comm, b, &rb, detail, sizeof detail);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        const double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        fwd_timeout_ms = 60000;
        fwd_nonblocking = fwd_skip_call = 0;
        const int ok = (rank == 0 && sb == KP_OK) ||
                       (sb == KP_ERR_BACKEND && strstr(detail, "timed out") && s > 0.9 && s < 10);
        if (!ok)
            snprintf(detail + strlen(detail), sizeof detail - strlen(detail), " (%s after %.2f s)",
                     kp_status_str(sb), s);
        report(backend, "NCCL transport (fake libnccl, non-blocking, device path): a rank that never joins makes "
               "the others' layer end in KP_ERR_BACKEND 'timed out' at the handle's timeout (1 s)", ok, detail);
        free(b);
    }
    f.comm_destroy(comm);
    /* a fresh communicator for each missing-rank case (the failure spoils it):
     * kp_ep_dispatch_async's, then kp_moe_forward_ep_async's */
    void (*const spoilers[])(const char *, kp_device *, const void *) = {run_async_timeout,
                                                                         run_forward_async_timeout};
    for (size_t i = 0; world > 1 && i < sizeof spoilers / sizeof *spoilers; i++) {
        memset(&id, 0, sizeof id);
        if (rank == 0) f.get_unique_id(&id);
        MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
        void *comm2 = NULL;
        rc = f.comm_init_rank(&comm2, world, id, rank);
        if (rc == 0) spoilers[i](backend, dev, &comm2);
        else report(backend, "NCCL transport: a fresh fake communicator", 0, f.error_string(rc));
        if (rc == 0) f.comm_destroy(comm2);
    }
    dlclose(f.lib);
}
