/*
 * tests/ep/ep_layer.c — the MoE layer the EP layer tests run (see ep_layer.h).
 */
#include "ep_layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double get(const void *p, kp_dtype dt, size_t i) {
    return dt == KP_F32 ? ((const float *)p)[i] : from_bf16(((const uint16_t *)p)[i]);
}

static double ulp(double v, kp_dtype dt) {
    int e;
    frexp(fabs(v) > 1e-30 ? fabs(v) : 1e-30, &e); /* v = m * 2^e, m in [0.5, 1) */
    return ldexp(1.0, e - 1 - (dt == KP_F32 ? 23 : 7));
}

kp_status ep_upload(kp_device *d, const void *host, size_t bytes, kp_buffer **b) {
    kp_status st = kp_buffer_alloc(d, bytes ? bytes : 16, b);
    if (st == KP_OK && bytes) st = kp_buffer_write(stream, *b, 0, host, bytes);
    return st;
}

kp_status tensor3(kp_tensor *t, kp_buffer *b, size_t off, kp_dtype dt, int64_t a, int64_t r, int64_t c) {
    const int64_t s[3] = {a, r, c};
    return kp_tensor_init(t, b, off, dt, 3, s, NULL);
}

void layer_init(layer *L, const layer_case *c, int64_t T, layer_seeds s) {
    const size_t es = kp_dtype_size(c->dtype);
    memset(L, 0, sizeof *L);
    L->c = c;
    L->T = T;
    L->out_bytes = (size_t)T * H * es;
    L->x = malloc((size_t)(T ? T : 1) * H * es);
    L->w13 = malloc((size_t)E * 2 * I * H * es);
    L->w2 = malloc((size_t)E * H * I * es);
    L->w13s = malloc((size_t)2 * IS * H * es);
    L->w2s = malloc((size_t)H * IS * es);
    L->logits = malloc(sizeof(float) * (size_t)(T ? T : 1) * E);
    L->bias = malloc(sizeof(float) * E);
    rng_state = s.weights;
    fill_rows(L->w13, c->dtype, (size_t)E * 2 * I * H);
    fill_rows(L->w2, c->dtype, (size_t)E * H * I);
    fill_rows(L->w13s, c->dtype, (size_t)2 * IS * H);
    fill_rows(L->w2s, c->dtype, (size_t)H * IS);
    for (int e = 0; e < E; e++) L->bias[e] = 0.05f * frand();
    rng_state = s.tokens + s.per_rank * (uint64_t)rank;
    fill_rows(L->x, c->dtype, (size_t)T * H);
    const int32_t rank0_end = E / world; /* rank 0's experts are [0, E / world) */
    for (int64_t i = 0; i < T * E; i++)
        L->logits[i] = 2.0f * frand() + (c->skew && (int32_t)(i % E) < rank0_end ? 8.0f : 0.0f);
}

kp_status layer_setup(layer *L, kp_device *dev) {
    const layer_case *c = L->c;
    const int64_t T = L->T;
    const size_t es = kp_dtype_size(c->dtype), out_bytes = L->out_bytes;
    const int32_t LE = E / world, eb = rank * LE;
    kp_status st = ep_upload(dev, L->x, out_bytes, &L->bx);
    if (st == KP_OK) st = ep_upload(dev, L->logits, sizeof(float) * (size_t)T * E, &L->blog);
    if (st == KP_OK) st = ep_upload(dev, L->bias, sizeof(float) * E, &L->bbias);
    if (st == KP_OK) st = ep_upload(dev, L->w13, (size_t)E * 2 * I * H * es, &L->bw13);
    if (st == KP_OK) st = ep_upload(dev, L->w2, (size_t)E * H * I * es, &L->bw2);
    if (st == KP_OK) st = ep_upload(dev, L->w13s, (size_t)2 * IS * H * es, &L->bw13s);
    if (st == KP_OK) st = ep_upload(dev, L->w2s, (size_t)H * IS * es, &L->bw2s);
    uint8_t *poison = malloc(out_bytes + 2 * GUARD);
    if (poison) memset(poison, 0xff, out_bytes + 2 * GUARD); /* NaN in f32 and bf16 */
    if (st == KP_OK) st = poison ? ep_upload(dev, poison, out_bytes + 2 * GUARD, &L->bout) : KP_ERR_OUT_OF_MEMORY;
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
    /* this rank's slice of the experts */
    if (st == KP_OK) st = tensor3(&p->w13, L->bw13, (size_t)eb * 2 * I * H * es, c->dtype, LE, 2 * I, H);
    if (st == KP_OK) st = tensor3(&p->w2, L->bw2, (size_t)eb * H * I * es, c->dtype, LE, H, I);
    if (st == KP_OK && c->shared) st = tensor2(&p->shared_w13, L->bw13s, 0, c->dtype, 2 * IS, H);
    if (st == KP_OK && c->shared) st = tensor2(&p->shared_w2, L->bw2s, 0, c->dtype, H, IS);
    if (st == KP_OK) st = tensor2(&p->out, L->bout, GUARD, c->dtype, T, H);
    return st;
}

kp_status layer_workspace(layer *L, kp_device *dev, size_t offset) {
    size_t ws = 0;
    kp_status st = kp_moe_forward_ep_workspace_size(L->ep, &L->p, &ws);
    if (st == KP_OK) st = kp_buffer_alloc(dev, ws + offset, &L->bws);
    L->p.workspace = L->bws;
    L->p.workspace_offset = offset;
    return st;
}

void layer_free(layer *L) {
    if (L->ep) kp_ep_destroy(L->ep);
    kp_buffer *all[] = {L->bx, L->blog, L->bbias, L->bw13, L->bw2, L->bw13s, L->bw2s, L->bout, L->bws};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i]) kp_buffer_free(all[i]);
    free(L->x), free(L->w13), free(L->w2), free(L->w13s), free(L->w2s), free(L->logits), free(L->bias);
    memset(L, 0, sizeof *L);
}

kp_ep_options layer_options(const layer_case *c, kp_ep_comm_kind kind, const void *comm, int32_t timeout_ms) {
    const int32_t LE = E / world, eb = rank * LE;
    return (kp_ep_options){.comm_kind = kind, .comm = comm, .num_experts = E, .expert_begin = eb,
                           .expert_end = eb + LE, .hidden = H, .dtype = c->dtype, .topk = K,
                           .max_tokens_per_rank = MAXT, .mode = c->mode, .capacity_per_rank = c->capacity,
                           .timeout_ms = timeout_ms};
}

kp_status layer_reference(layer *L, kp_device *dev, uint8_t *ref) {
    const layer_case *c = L->c;
    kp_buffer *bref = NULL, *bws = NULL;
    kp_moe_forward_params f = {.x = L->p.x, .router_logits = L->p.router_logits, .bias = L->p.bias,
                               .shared_w13 = L->p.shared_w13, .shared_w2 = L->p.shared_w2, .routing = L->p.routing};
    size_t ws = 0;
    kp_status st = tensor3(&f.w13, L->bw13, 0, c->dtype, E, 2 * I, H); /* every expert */
    if (st == KP_OK) st = tensor3(&f.w2, L->bw2, 0, c->dtype, E, H, I);
    if (st == KP_OK) st = kp_buffer_alloc(dev, L->out_bytes + 16, &bref);
    if (st == KP_OK) st = tensor2(&f.out, bref, 0, c->dtype, L->T, H);
    if (st == KP_OK) st = kp_moe_forward_workspace_size(dev, &f, &ws);
    if (st == KP_OK) st = kp_buffer_alloc(dev, ws, &bws);
    f.workspace = bws;
    if (st == KP_OK) st = kp_moe_forward(stream, &f);
    if (st == KP_OK) st = kp_buffer_read(stream, bref, 0, ref, L->out_bytes);
    if (bref) kp_buffer_free(bref);
    if (bws) kp_buffer_free(bws);
    return st;
}

int layer_out_unchanged(const layer *L, const uint8_t *before) {
    const size_t bytes = L->out_bytes + 2 * GUARD;
    uint8_t *now = malloc(bytes);
    const int same = now && kp_buffer_read(stream, L->bout, 0, now, bytes) == KP_OK && memcmp(now, before, bytes) == 0;
    free(now);
    return same;
}

/* The shared expert's output for token t, column n, in float64 (for the tolerance only). */
static double shared_out(const layer *L, kp_dtype dt, int64_t t, int n) {
    double s = 0;
    for (int i = 0; i < IS; i++) {
        double g = 0, u = 0;
        for (int c = 0; c < H; c++) {
            g += get(L->x, dt, (size_t)(t * H + c)) * get(L->w13s, dt, (size_t)(i * H + c));
            u += get(L->x, dt, (size_t)(t * H + c)) * get(L->w13s, dt, (size_t)((IS + i) * H + c));
        }
        s += g / (1.0 + exp(-g)) * u * get(L->w2s, dt, (size_t)(n * IS + i));
    }
    return s;
}

int layer_check_out(const layer *L, const uint8_t *hout, const uint8_t *ref, const layer_check *k, char *detail,
                    size_t dn) {
    const layer_case *c = L->c;
    const kp_dtype dt = c->dtype;
    for (size_t i = 0; i < GUARD; i++)
        if (hout[i] != 0xff || hout[GUARD + L->out_bytes + i] != 0xff) {
            snprintf(detail, dn, "a guard byte around out changed (byte %zu)", i);
            return 0;
        }
    const uint8_t *got = hout + GUARD;
    double d2 = 0, r2 = 0;
    for (int64_t t = 0; t < L->T; t++) {
        double rowmax = 0;
        for (int64_t j = 0; j < H; j++) rowmax = fmax(rowmax, fabs(get(ref, dt, (size_t)(t * H + j))));
        for (int64_t j = 0; j < H; j++) {
            const size_t i = (size_t)(t * H + j);
            const double a = get(got, dt, i), b = get(ref, dt, i);
            if (isnan(a)) {
                snprintf(detail, dn, "out[%lld, %lld] is NaN (not written)", (long long)t, (long long)j);
                return 0;
            }
            if (!k->values) continue;
            /* the GEMMs' f32 order may differ (an expert gets other row counts on one rank
             * than on several), and a y element may round the other way: a few ulps of the
             * element and of the row */
            double tol = 2 * ulp(b, dt) + ldexp(rowmax, dt == KP_F32 ? -20 : -6);
            if (c->shared && dt != KP_F32) { /* the shared row's own rounding (and the routed sum's) */
                const double sh = fabs(shared_out(L, dt, t, (int)j));
                tol += ulp(1.1 * sh, dt) + (k->sum_rounding ? ulp(fabs(b) + 1.1 * sh, dt) : 0);
            }
            if (!(fabs(a - b) <= tol)) {
                snprintf(detail, dn, "out[%lld, %lld]: %s %.9g, %s %.9g, tolerance %.3g", (long long)t, (long long)j,
                         k->got, a, k->ref, b, tol);
                return 0;
            }
            d2 += (a - b) * (a - b), r2 += b * b;
        }
    }
    if (k->values && L->T && !(sqrt(d2) <= (dt == KP_F32 ? 1e-6 : 4e-3) * sqrt(r2))) {
        snprintf(detail, dn, "relative L2 %.3g", sqrt(d2 / r2));
        return 0;
    }
    return 1;
}
