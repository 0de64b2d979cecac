/*
 * tests/ep/test_ep_forward_async.c — kp_moe_forward_ep_async (capacity mode, no host
 * sync) over the fake libnccl on the cpu backend, under mpirun -np 2 and 4 (ci/ep-test).
 *
 * Every rank holds all the weights on the host, passes its own experts' slice to
 * kp_moe_forward_ep_async, and checks:
 *  - the call moves kp_host_sync_count by 0 (the kp_ep_wait after it is the one sync);
 *  - out equals kp_moe_forward over every expert on this rank's tokens within
 *    kp_moe_forward_ep's tolerance (tests/ep/test_ep_forward.c: 2 ulps of the element
 *    plus 2^-20 (f32) or 2^-6 (bf16) of its row's largest magnitude, relative L2 1e-6 /
 *    4e-3; bf16 with a shared expert: 1 ulp of the shared row and 1 ulp of the routed
 *    sum more, each rounded once to bf16 before they are added). Not bit for bit, for
 *    the blocking layer's reason: an expert's GEMM sees other row counts than on one
 *    rank (here every expert range plus the padding rows on local expert 0);
 *  - dropped (int32 [2], guard ints on both sides) reads {0, 0}, out's guard bytes
 *    are intact and every element is written (poisoned with NaN bytes first).
 * Routings: DeepSeek-V3 style and softmax; every token to rank 0's experts with ranks
 * that have no tokens (with and without a shared expert); T = 1. Overflow (capacity 3, every token to rank 0): dropped
 * equals the blocking kp_moe_forward_ep's (MPI transport, the same capacity) r.dropped
 * and r.dropped_all, and out equals its out within the same tolerance (the same drop
 * rule: dropped pairs count as zero). A rank that never joins: the others' call or
 * their kp_ep_wait ends in KP_ERR_BACKEND within 10 s (timeout 1 s), and the handle then
 * refuses calls. Refusals (every rank makes the same bad call): an MPI handle, a
 * normal-mode handle, no stream, a bad dropped tensor, a short workspace; out untouched.
 */
#include "ep_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { E = 16, H = 32, I = 16, IS = 16, K = 4, MAXT = 8, GUARD = 64 };

typedef struct async_case {
    const char *name;
    kp_dtype dtype;
    int shared, deepseek;
    int32_t tokens[4];
    int skew; /* every token's experts on rank 0 */
    int32_t capacity;
    int overflow;
} async_case;

static const async_case cases[] = {
    {"f32 DeepSeek routing + shared expert", KP_F32, 1, 1, {7, 3, 8, 5}, 0, MAXT * K, 0},
    {"bf16 DeepSeek routing + shared expert", KP_BF16, 1, 1, {7, 3, 8, 5}, 0, MAXT * K, 0},
    {"bf16 all tokens to rank 0's experts, ranks with no tokens", KP_BF16, 0, 0, {8, 0, 6, 0}, 1, MAXT * K, 0},
    {"f32 + shared expert, every token to rank 0's experts, rank 0 with none", KP_F32, 1, 1, {0, 5, 0, 3}, 1,
     MAXT * K, 0},
    {"f32 T=1 + shared expert", KP_F32, 1, 0, {1, 1, 1, 1}, 0, MAXT * K, 0},
    {"bf16 T=1, softmax", KP_BF16, 0, 0, {1, 1, 1, 1}, 0, MAXT * K, 0},
    {"f32 capacity overflow (capacity 3, every token to rank 0) + shared expert", KP_F32, 1, 0, {8, 8, 8, 8}, 1, 3,
     1},
};

static double get(const void *p, kp_dtype dt, size_t i) {
    return dt == KP_F32 ? ((const float *)p)[i] : from_bf16(((const uint16_t *)p)[i]);
}

static double ulp(double v, kp_dtype dt) {
    int e;
    frexp(fabs(v) > 1e-30 ? fabs(v) : 1e-30, &e);
    return ldexp(1.0, e - 1 - (dt == KP_F32 ? 23 : 7));
}

/* Host data: the same weights on every rank, this rank's tokens and logits. */
typedef struct host_data {
    void *x, *w13, *w2, *w13s, *w2s;
    float *logits, *bias;
} host_data;

static void make_data(const async_case *c, int64_t T, host_data *h) {
    const size_t es = kp_dtype_size(c->dtype);
    h->x = malloc((size_t)(T ? T : 1) * H * es);
    h->w13 = malloc((size_t)E * 2 * I * H * es);
    h->w2 = malloc((size_t)E * H * I * es);
    h->w13s = malloc((size_t)2 * IS * H * es);
    h->w2s = malloc((size_t)H * IS * es);
    h->logits = malloc(sizeof(float) * (size_t)(T ? T : 1) * E);
    h->bias = malloc(sizeof(float) * E);
    rng_state = 4242;
    fill_rows(h->w13, c->dtype, (size_t)E * 2 * I * H);
    fill_rows(h->w2, c->dtype, (size_t)E * H * I);
    fill_rows(h->w13s, c->dtype, (size_t)2 * IS * H);
    fill_rows(h->w2s, c->dtype, (size_t)H * IS);
    for (int e = 0; e < E; e++) h->bias[e] = 0.05f * frand();
    rng_state = 777 + 131 * (uint64_t)rank;
    fill_rows(h->x, c->dtype, (size_t)T * H);
    for (int64_t i = 0; i < T * E; i++)
        h->logits[i] = 2.0f * frand() + (c->skew && (int32_t)(i % E) < E / world ? 8.0f : 0.0f);
}

static void free_data(host_data *h) {
    free(h->x), free(h->w13), free(h->w2), free(h->w13s), free(h->w2s), free(h->logits), free(h->bias);
}

/* The shared expert's output in float64 (for the tolerance only). */
static double shared_out(const host_data *h, kp_dtype dt, int64_t t, int n) {
    double s = 0;
    for (int i = 0; i < IS; i++) {
        double g = 0, u = 0;
        for (int c = 0; c < H; c++) {
            g += get(h->x, dt, (size_t)(t * H + c)) * get(h->w13s, dt, (size_t)(i * H + c));
            u += get(h->x, dt, (size_t)(t * H + c)) * get(h->w13s, dt, (size_t)((IS + i) * H + c));
        }
        s += g / (1.0 + exp(-g)) * u * get(h->w2s, dt, (size_t)(n * IS + i));
    }
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

static kp_status t3(kp_tensor *t, kp_buffer *b, size_t off, kp_dtype dt, int64_t a, int64_t r, int64_t c) {
    const int64_t s[3] = {a, r, c};
    return kp_tensor_init(t, b, off, dt, 3, s, NULL);
}

/* The device copies of one case's data and the layer's params (out at GUARD in bout). */
typedef struct layer {
    kp_buffer *bx, *blog, *bbias, *bw13, *bw2, *bw13s, *bw2s, *bout, *bws;
    kp_moe_forward_ep_params p;
} layer;

static kp_status layer_setup(kp_device *dev, const async_case *c, const host_data *h, int64_t T, layer *L) {
    const size_t es = kp_dtype_size(c->dtype), out_bytes = (size_t)T * H * es;
    const int32_t LE = E / world, eb = rank * LE;
    kp_status st = upload(dev, h->x, out_bytes, &L->bx);
    if (st == KP_OK) st = upload(dev, h->logits, sizeof(float) * (size_t)T * E, &L->blog);
    if (st == KP_OK) st = upload(dev, h->bias, sizeof(float) * E, &L->bbias);
    if (st == KP_OK) st = upload(dev, h->w13, (size_t)E * 2 * I * H * es, &L->bw13);
    if (st == KP_OK) st = upload(dev, h->w2, (size_t)E * H * I * es, &L->bw2);
    if (st == KP_OK) st = upload(dev, h->w13s, (size_t)2 * IS * H * es, &L->bw13s);
    if (st == KP_OK) st = upload(dev, h->w2s, (size_t)H * IS * es, &L->bw2s);
    uint8_t *poison = malloc(out_bytes + 2 * GUARD);
    if (poison) memset(poison, 0xff, out_bytes + 2 * GUARD); /* NaN in f32 and bf16 */
    if (st == KP_OK) st = poison ? upload(dev, poison, out_bytes + 2 * GUARD, &L->bout) : KP_ERR_OUT_OF_MEMORY;
    free(poison);
    kp_moe_forward_ep_params *p = &L->p;
    p->routing = (kp_moe_routing){.topk = K, .n_group = 1, .topk_group = 1, .scoring = KP_MOE_SCORING_SOFTMAX,
                                  .renormalize = 1, .route_scale = 1.0f};
    if (c->deepseek)
        p->routing = (kp_moe_routing){.topk = K, .n_group = 4, .topk_group = 2, .scoring = KP_MOE_SCORING_SIGMOID,
                                      .renormalize = 1, .route_scale = 2.5f};
    if (st == KP_OK) st = tensor2(&p->x, L->bx, 0, c->dtype, T, H);
    if (st == KP_OK) st = tensor2(&p->router_logits, L->blog, 0, KP_F32, T, E);
    if (st == KP_OK && c->deepseek) st = kp_tensor_init(&p->bias, L->bbias, 0, KP_F32, 1, (const int64_t[]){E}, NULL);
    if (st == KP_OK) st = t3(&p->w13, L->bw13, (size_t)eb * 2 * I * H * es, c->dtype, LE, 2 * I, H);
    if (st == KP_OK) st = t3(&p->w2, L->bw2, (size_t)eb * H * I * es, c->dtype, LE, H, I);
    if (st == KP_OK && c->shared) st = tensor2(&p->shared_w13, L->bw13s, 0, c->dtype, 2 * IS, H);
    if (st == KP_OK && c->shared) st = tensor2(&p->shared_w2, L->bw2s, 0, c->dtype, H, IS);
    if (st == KP_OK) st = tensor2(&p->out, L->bout, GUARD, c->dtype, T, H);
    return st;
}

/* The workspace the handle's query asks for, at an unaligned offset, with no slack. */
static kp_status layer_workspace(kp_ep *ep, kp_device *dev, layer *L) {
    size_t ws = 0;
    kp_status st = kp_moe_forward_ep_workspace_size(ep, &L->p, &ws);
    if (st == KP_OK) st = kp_buffer_alloc(dev, ws + 100, &L->bws);
    L->p.workspace = L->bws;
    L->p.workspace_offset = 100;
    return st;
}

static void layer_free(layer *L) {
    kp_buffer *all[] = {L->bx, L->blog, L->bbias, L->bw13, L->bw2, L->bw13s, L->bw2s, L->bout, L->bws};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i]) kp_buffer_free(all[i]);
    memset(L, 0, sizeof *L);
}

static kp_ep_options options(const async_case *c, kp_ep_comm_kind kind, const void *comm) {
    const int32_t LE = E / world, eb = rank * LE;
    return (kp_ep_options){.comm_kind = kind, .comm = comm, .num_experts = E, .expert_begin = eb,
                           .expert_end = eb + LE, .hidden = H, .dtype = c->dtype, .topk = K,
                           .max_tokens_per_rank = MAXT, .mode = KP_EP_MODE_CAPACITY, .capacity_per_rank = c->capacity,
                           .timeout_ms = 60000};
}

/* The reference out [T, H]: kp_moe_forward over every expert, or (overflow) the blocking
 * kp_moe_forward_ep over MPI with the same capacity, whose r is returned too. */
static kp_status reference(kp_device *dev, const async_case *c, const host_data *h, int64_t T, uint8_t *ref,
                           kp_ep_dispatch_result *r, char *detail, size_t dn) {
    layer L = {0};
    kp_ep *ep = NULL;
    kp_buffer *bws = NULL;
    const size_t es = kp_dtype_size(c->dtype);
    kp_status st = layer_setup(dev, c, h, T, &L);
    if (st == KP_OK && c->overflow) {
        MPI_Comm comm = MPI_COMM_WORLD;
        kp_ep_options o = options(c, KP_EP_COMM_MPI, &comm);
        st = kp_ep_create(dev, &o, &ep);
        if (st == KP_OK) st = layer_workspace(ep, dev, &L);
        if (st == KP_OK) st = kp_moe_forward_ep(ep, stream, &L.p, r);
        if (st == KP_ERR_OUT_OF_BOUNDS) st = KP_OK; /* the overflow it reports */
    } else if (st == KP_OK && T) {
        kp_moe_forward_params f = {.x = L.p.x, .router_logits = L.p.router_logits, .bias = L.p.bias,
                                   .shared_w13 = L.p.shared_w13, .shared_w2 = L.p.shared_w2, .out = L.p.out,
                                   .routing = L.p.routing};
        size_t ws = 0;
        st = t3(&f.w13, L.bw13, 0, c->dtype, E, 2 * I, H); /* every expert */
        if (st == KP_OK) st = t3(&f.w2, L.bw2, 0, c->dtype, E, H, I);
        if (st == KP_OK) st = kp_moe_forward_workspace_size(dev, &f, &ws);
        if (st == KP_OK) st = kp_buffer_alloc(dev, ws, &bws);
        f.workspace = bws;
        if (st == KP_OK) st = kp_moe_forward(stream, &f);
    }
    if (st == KP_OK && T) st = kp_buffer_read(stream, L.bout, GUARD, ref, (size_t)T * H * es);
    if (st != KP_OK) snprintf(detail, dn, "reference: %s: %s", kp_status_str(st), kp_last_error());
    if (ep) kp_ep_destroy(ep);
    if (bws) kp_buffer_free(bws);
    layer_free(&L);
    return st;
}

static void run_case(const char *backend, kp_device *dev, const void *nccl_comm, const async_case *c) {
    char detail[1024] = "";
    int ok = 0;
    kp_status st = KP_OK;
    const int64_t T = c->tokens[rank % 4];
    const size_t es = kp_dtype_size(c->dtype), out_bytes = (size_t)T * H * es;
    kp_ep *ep = NULL;
    kp_buffer *bdrop = NULL;
    layer L = {0};
    uint8_t *hout = malloc(out_bytes + 2 * GUARD), *href = malloc(out_bytes + 1);
    host_data h;
    make_data(c, T, &h);
    kp_ep_dispatch_result r = {0};
    if (reference(dev, c, &h, T, href, &r, detail, sizeof detail) != KP_OK) goto done;
    kp_ep_options o = options(c, KP_EP_COMM_NCCL, nccl_comm);
    TRY(kp_ep_create(dev, &o, &ep));
    TRY(layer_setup(dev, c, &h, T, &L));
    TRY(layer_workspace(ep, dev, &L));
    int32_t drop_host[4] = {-7, -7, -7, -7}; /* guard, {dropped, dropped_all}, guard */
    TRY(upload(dev, drop_host, sizeof drop_host, &bdrop));
    kp_tensor drop;
    TRY(kp_tensor_init(&drop, bdrop, 4, KP_I32, 1, (const int64_t[]){2}, NULL));

    const uint64_t syncs = kp_host_sync_count();
    st = kp_moe_forward_ep_async(ep, stream, &L.p, &drop);
    const uint64_t moved = kp_host_sync_count() - syncs;
    if (st != KP_OK) {
        snprintf(detail, sizeof detail, "kp_moe_forward_ep_async: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    TRY(kp_ep_wait(ep, stream));
    if (moved) {
        snprintf(detail, sizeof detail, "kp_host_sync_count moved by %llu across the call", (unsigned long long)moved);
        goto done;
    }
    TRY(kp_buffer_read(stream, bdrop, 0, drop_host, sizeof drop_host));
    const int32_t want_d = c->overflow ? (int32_t)r.dropped : 0, want_all = c->overflow ? (int32_t)r.dropped_all : 0;
    if (drop_host[0] != -7 || drop_host[3] != -7 || drop_host[1] != want_d || drop_host[2] != want_all ||
        (c->overflow && want_all < 1)) {
        snprintf(detail, sizeof detail, "dropped {%d, %d} (guards %d, %d), expected {%d, %d} (> 0 overflowing)",
                 drop_host[1], drop_host[2], drop_host[0], drop_host[3], want_d, want_all);
        goto done;
    }
    TRY(kp_buffer_read(stream, L.bout, 0, hout, out_bytes + 2 * GUARD));
    for (size_t i = 0; i < GUARD; i++)
        if (hout[i] != 0xff || hout[GUARD + out_bytes + i] != 0xff) {
            snprintf(detail, sizeof detail, "a guard byte around out changed (byte %zu)", i);
            goto done;
        }
    const uint8_t *got = hout + GUARD;
    double d2 = 0, r2 = 0;
    for (int64_t t = 0; t < T; t++) {
        double rowmax = 0;
        for (int64_t j = 0; j < H; j++) rowmax = fmax(rowmax, fabs(get(href, c->dtype, (size_t)(t * H + j))));
        for (int64_t j = 0; j < H; j++) {
            const size_t i = (size_t)(t * H + j);
            const double a = get(got, c->dtype, i), b = get(href, c->dtype, i);
            double tol = 2 * ulp(b, c->dtype) + ldexp(rowmax, c->dtype == KP_F32 ? -20 : -6);
            if (c->shared && c->dtype != KP_F32) { /* the shared row's and the routed sum's own roundings */
                const double sh = fabs(shared_out(&h, c->dtype, t, (int)j));
                tol += ulp(1.1 * sh, c->dtype) + ulp(fabs(b) + 1.1 * sh, c->dtype);
            }
            if (!(fabs(a - b) <= tol)) {
                snprintf(detail, sizeof detail, "out[%lld, %lld]: async %.9g, %s %.9g, tolerance %.3g", (long long)t,
                         (long long)j, a, c->overflow ? "kp_moe_forward_ep" : "kp_moe_forward", b, tol);
                goto done;
            }
            d2 += (a - b) * (a - b), r2 += b * b;
        }
    }
    if (T && !(sqrt(d2) <= (c->dtype == KP_F32 ? 1e-6 : 4e-3) * sqrt(r2))) {
        snprintf(detail, sizeof detail, "relative L2 %.3g", sqrt(d2 / r2));
        goto done;
    }
    ok = 1;
done:
    if (ep) kp_ep_destroy(ep);
    if (bdrop) kp_buffer_free(bdrop);
    layer_free(&L);
    free(hout), free(href);
    free_data(&h);
    char name[300];
    snprintf(name, sizeof name, "NCCL transport (fake libnccl): moe_forward_ep_async %s: no host sync, %s", c->name,
             c->overflow ? "dropped and out as the blocking kp_moe_forward_ep's" : "equals kp_moe_forward, dropped {0, 0}");
    report(backend, name, ok, detail);
}

/* Bad calls, the same on every rank (none waits): each refused with its code, out untouched. */
static void run_refusals(const char *backend, kp_device *dev, const void *nccl_comm) {
    char detail[1024] = "";
    int ok = 0;
    kp_status st = KP_OK;
    const async_case *c = &cases[0];
    const int64_t T = 4;
    const size_t out_bytes = (size_t)T * H * kp_dtype_size(c->dtype);
    kp_ep *ep = NULL;
    kp_buffer *bdrop = NULL;
    layer L = {0};
    uint8_t *before = malloc(out_bytes + 2 * GUARD), *after = malloc(out_bytes + 2 * GUARD);
    host_data h;
    make_data(c, T, &h);
    MPI_Comm comm = MPI_COMM_WORLD;
    TRY(layer_setup(dev, c, &h, T, &L));
    TRY(kp_buffer_alloc(dev, 64, &bdrop));
    kp_tensor drop3;
    TRY(kp_tensor_init(&drop3, bdrop, 0, KP_I32, 1, (const int64_t[]){3}, NULL));
    TRY(kp_buffer_read(stream, L.bout, 0, before, out_bytes + 2 * GUARD));
    struct {
        kp_ep_comm_kind kind;
        kp_ep_mode mode;
        const char *needle;
    } handles[] = {{KP_EP_COMM_MPI, KP_EP_MODE_CAPACITY, "device path"},
                   {KP_EP_COMM_NCCL, KP_EP_MODE_NORMAL, "capacity mode"}};
    for (int i = 0; i < 2; i++) {
        kp_ep_options o = options(c, handles[i].kind, handles[i].kind == KP_EP_COMM_MPI ? (const void *)&comm
                                                                                        : nccl_comm);
        o.mode = handles[i].mode;
        TRY(kp_ep_create(dev, &o, &ep));
        TRY(layer_workspace(ep, dev, &L));
        st = kp_moe_forward_ep_async(ep, stream, &L.p, NULL);
        if (st != KP_ERR_UNSUPPORTED || !strstr(kp_last_error(), handles[i].needle)) {
            snprintf(detail, sizeof detail, "%s: %s: %s", handles[i].needle, kp_status_str(st), kp_last_error());
            goto done;
        }
        kp_ep_destroy(ep);
        ep = NULL;
        kp_buffer_free(L.bws);
        L.bws = NULL;
    }
    kp_ep_options o = options(c, KP_EP_COMM_NCCL, nccl_comm);
    TRY(kp_ep_create(dev, &o, &ep));
    TRY(layer_workspace(ep, dev, &L));
    st = kp_moe_forward_ep_async(ep, NULL, &L.p, NULL);
    if (st != KP_ERR_INVALID_ARGUMENT || !strstr(kp_last_error(), "stream")) {
        snprintf(detail, sizeof detail, "no stream: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    st = kp_moe_forward_ep_async(ep, stream, &L.p, &drop3);
    if (st != KP_ERR_INVALID_SHAPE || !strstr(kp_last_error(), "dropped")) {
        snprintf(detail, sizeof detail, "dropped [3]: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    L.p.workspace_offset = kp_buffer_size(L.bws) - 64; /* 64 bytes left */
    st = kp_moe_forward_ep_async(ep, stream, &L.p, NULL);
    if (st != KP_ERR_OUT_OF_BOUNDS || !strstr(kp_last_error(), "workspace")) {
        snprintf(detail, sizeof detail, "short workspace: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    TRY(kp_buffer_read(stream, L.bout, 0, after, out_bytes + 2 * GUARD));
    if (memcmp(before, after, out_bytes + 2 * GUARD) != 0) {
        snprintf(detail, sizeof detail, "a refused call wrote out");
        goto done;
    }
    ok = 1;
done:
    if (ep) kp_ep_destroy(ep);
    if (bdrop) kp_buffer_free(bdrop);
    layer_free(&L);
    free(before), free(after);
    free_data(&h);
    report(backend, "NCCL transport: moe_forward_ep_async refuses an MPI or normal-mode handle, no stream, a bad "
           "dropped tensor, a short workspace, writing nothing", ok, detail);
}

void run_forward_async_cases(const char *backend, kp_device *dev, const void *nccl_comm) {
    if (E % world) {
        if (rank == 0) printf("SKIP np%d %s moe_forward_ep_async: needs a rank count dividing %d\n", world, backend, E);
        n_skip++;
        return;
    }
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(backend, dev, nccl_comm, &cases[i]);
    run_refusals(backend, dev, nccl_comm);
}

/* A rank that never joins (rank 0 creates the handle, then skips the layer), over a
 * fresh communicator that the failure spoils: the others end in KP_ERR_BACKEND from the
 * call or from kp_ep_wait within 10 s (timeout 1 s), never hang; then the handle refuses. */
void run_forward_async_timeout(const char *backend, kp_device *dev, const void *nccl_comm) {
    if (world < 2 || E % world) return;
    char detail[1024] = "";
    int ok = 0;
    kp_status st = KP_OK;
    const async_case *c = &cases[0];
    const int64_t T = 4;
    kp_ep *ep = NULL;
    layer L = {0};
    host_data h;
    make_data(c, T, &h);
    kp_ep_options o = options(c, KP_EP_COMM_NCCL, nccl_comm);
    o.timeout_ms = 1000;
    st = kp_ep_create(dev, &o, &ep);
    if (st == KP_OK) st = layer_setup(dev, c, &h, T, &L);
    if (st == KP_OK) st = layer_workspace(ep, dev, &L);
    MPI_Barrier(MPI_COMM_WORLD);
    if (st != KP_OK) {
        snprintf(detail, sizeof detail, "setup: %s: %s", kp_status_str(st), kp_last_error());
    } else if (rank == 0) {
        ok = 1; /* never joins */
    } else {
        setenv("KPORT_FAKE_NCCL_TIMEOUT_MS", "1000", 1); /* a blocking group's own bound */
        const double t0 = now_s();
        st = kp_moe_forward_ep_async(ep, stream, &L.p, NULL);
        const char *where = "kp_moe_forward_ep_async";
        if (st == KP_OK) st = kp_ep_wait(ep, stream), where = "kp_ep_wait";
        const double dt = now_s() - t0;
        unsetenv("KPORT_FAKE_NCCL_TIMEOUT_MS");
        ok = st == KP_ERR_BACKEND && dt < 10;
        snprintf(detail, sizeof detail, "%s: %s after %.2f s: %s", where, kp_status_str(st), dt, kp_last_error());
        if (ok) {
            st = kp_moe_forward_ep_async(ep, stream, &L.p, NULL);
            ok = st == KP_ERR_BACKEND && strstr(kp_last_error(), "destroy");
            if (!ok)
                snprintf(detail, sizeof detail, "after the failure: %s: %s", kp_status_str(st), kp_last_error());
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (ep) kp_ep_destroy(ep);
    layer_free(&L);
    free_data(&h);
    report(backend, "NCCL transport (fake libnccl): moe_forward_ep_async with a rank that never joins ends in "
           "KP_ERR_BACKEND within the timeout (call or kp_ep_wait), then the handle refuses calls", ok, detail);
}
