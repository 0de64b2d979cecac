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
 * The layer's set-up, reference and check of out: tests/ep/ep_layer.c.
 */
#include "ep_layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the weights' seed, and rank r's tokens' (777 + 131 r) */
static const layer_seeds seeds = {4242, 777, 131};

static const layer_case cases[] = {
    {"f32 DeepSeek routing + shared expert", KP_F32, 1, 1, {7, 3, 8, 5}, 0, KP_EP_MODE_CAPACITY, MAXT * K, 0},
    {"bf16 DeepSeek routing + shared expert", KP_BF16, 1, 1, {7, 3, 8, 5}, 0, KP_EP_MODE_CAPACITY, MAXT * K, 0},
    {"bf16 all tokens to rank 0's experts, ranks with no tokens", KP_BF16, 0, 0, {8, 0, 6, 0}, 1,
     KP_EP_MODE_CAPACITY, MAXT * K, 0},
    {"f32 + shared expert, every token to rank 0's experts, rank 0 with none", KP_F32, 1, 1, {0, 5, 0, 3}, 1,
     KP_EP_MODE_CAPACITY, MAXT * K, 0},
    {"f32 T=1 + shared expert", KP_F32, 1, 0, {1, 1, 1, 1}, 0, KP_EP_MODE_CAPACITY, MAXT * K, 0},
    {"bf16 T=1, softmax", KP_BF16, 0, 0, {1, 1, 1, 1}, 0, KP_EP_MODE_CAPACITY, MAXT * K, 0},
    {"f32 capacity overflow (capacity 3, every token to rank 0) + shared expert", KP_F32, 1, 0, {8, 8, 8, 8}, 1,
     KP_EP_MODE_CAPACITY, 3, 1},
};

/* The reference out [T, H]: kp_moe_forward over every expert, or (overflow) the blocking
 * kp_moe_forward_ep over MPI with the same capacity, whose r is returned too. */
static kp_status reference(kp_device *dev, const layer_case *c, uint8_t *ref, kp_ep_dispatch_result *r,
                           char *detail, size_t dn) {
    layer L;
    layer_init(&L, c, c->tokens[rank % 4], seeds);
    kp_status st = layer_setup(&L, dev);
    if (st == KP_OK && c->overflow) {
        MPI_Comm comm = MPI_COMM_WORLD;
        kp_ep_options o = layer_options(c, KP_EP_COMM_MPI, &comm, 60000);
        st = kp_ep_create(dev, &o, &L.ep);
        if (st == KP_OK) st = layer_workspace(&L, dev, 100);
        if (st == KP_OK) st = kp_moe_forward_ep(L.ep, stream, &L.p, r);
        if (st == KP_ERR_OUT_OF_BOUNDS) st = KP_OK; /* the overflow it reports */
        if (st == KP_OK && L.T) st = kp_buffer_read(stream, L.bout, GUARD, ref, L.out_bytes);
    } else if (st == KP_OK && L.T) {
        st = layer_reference(&L, dev, ref);
    }
    if (st != KP_OK) snprintf(detail, dn, "reference: %s: %s", kp_status_str(st), kp_last_error());
    layer_free(&L);
    return st;
}

static void run_case(const char *backend, kp_device *dev, const void *nccl_comm, const layer_case *c) {
    char detail[1024] = "";
    int ok = 0;
    kp_status st = KP_OK;
    kp_buffer *bdrop = NULL;
    layer L;
    layer_init(&L, c, c->tokens[rank % 4], seeds);
    const size_t out_bytes = L.out_bytes;
    uint8_t *hout = malloc(out_bytes + 2 * GUARD), *href = malloc(out_bytes + 1);
    kp_ep_dispatch_result r = {0};
    if (reference(dev, c, href, &r, detail, sizeof detail) != KP_OK) goto done;
    kp_ep_options o = layer_options(c, KP_EP_COMM_NCCL, nccl_comm, 60000);
    TRY(kp_ep_create(dev, &o, &L.ep));
    TRY(layer_setup(&L, dev));
    TRY(layer_workspace(&L, dev, 100)); /* unaligned, no slack */
    int32_t drop_host[4] = {-7, -7, -7, -7}; /* guard, {dropped, dropped_all}, guard */
    TRY(ep_upload(dev, drop_host, sizeof drop_host, &bdrop));
    kp_tensor drop;
    TRY(kp_tensor_init(&drop, bdrop, 4, KP_I32, 1, (const int64_t[]){2}, NULL));

    const uint64_t syncs = kp_host_sync_count();
    st = kp_moe_forward_ep_async(L.ep, stream, &L.p, &drop);
    const uint64_t moved = kp_host_sync_count() - syncs;
    if (st != KP_OK) {
        snprintf(detail, sizeof detail, "kp_moe_forward_ep_async: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    TRY(kp_ep_wait(L.ep, stream));
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
    /* the shared row's and the routed sum's own roundings (bf16 + shared) */
    const layer_check k = {.got = "async", .ref = c->overflow ? "kp_moe_forward_ep" : "kp_moe_forward",
                           .values = 1, .sum_rounding = 1};
    ok = layer_check_out(&L, hout, href, &k, detail, sizeof detail);
done:
    layer_free(&L);
    if (bdrop) kp_buffer_free(bdrop);
    free(hout), free(href);
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
    kp_buffer *bdrop = NULL;
    layer L;
    layer_init(&L, &cases[0], 4, seeds);
    const size_t bytes = L.out_bytes + 2 * GUARD; /* out and its guards */
    uint8_t *before = malloc(bytes);
    MPI_Comm comm = MPI_COMM_WORLD;
    TRY(layer_setup(&L, dev));
    TRY(kp_buffer_alloc(dev, 64, &bdrop));
    kp_tensor drop3;
    TRY(kp_tensor_init(&drop3, bdrop, 0, KP_I32, 1, (const int64_t[]){3}, NULL));
    TRY(kp_buffer_read(stream, L.bout, 0, before, bytes));
    for (int i = 0; i < 2; i++) { /* an MPI handle, a normal-mode handle */
        const ep_async_refusal *f = &ep_async_refusals[i];
        kp_ep_options o = layer_options(L.c, f->kind, f->kind == KP_EP_COMM_MPI ? (const void *)&comm : nccl_comm,
                                        60000);
        o.mode = f->mode;
        TRY(kp_ep_create(dev, &o, &L.ep));
        TRY(layer_workspace(&L, dev, 100));
        st = kp_moe_forward_ep_async(L.ep, stream, &L.p, NULL);
        if (st != KP_ERR_UNSUPPORTED || !strstr(kp_last_error(), f->needle)) {
            snprintf(detail, sizeof detail, "%s: %s: %s", f->needle, kp_status_str(st), kp_last_error());
            goto done;
        }
        kp_ep_destroy(L.ep);
        L.ep = NULL;
        kp_buffer_free(L.bws);
        L.bws = NULL;
    }
    kp_ep_options o = layer_options(L.c, KP_EP_COMM_NCCL, nccl_comm, 60000);
    TRY(kp_ep_create(dev, &o, &L.ep));
    TRY(layer_workspace(&L, dev, 100));
    st = kp_moe_forward_ep_async(L.ep, NULL, &L.p, NULL);
    if (st != KP_ERR_INVALID_ARGUMENT || !strstr(kp_last_error(), "stream")) {
        snprintf(detail, sizeof detail, "no stream: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    st = kp_moe_forward_ep_async(L.ep, stream, &L.p, &drop3);
    if (st != KP_ERR_INVALID_SHAPE || !strstr(kp_last_error(), "dropped")) {
        snprintf(detail, sizeof detail, "dropped [3]: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    L.p.workspace_offset = kp_buffer_size(L.bws) - 64; /* 64 bytes left */
    st = kp_moe_forward_ep_async(L.ep, stream, &L.p, NULL);
    if (st != KP_ERR_OUT_OF_BOUNDS || !strstr(kp_last_error(), "workspace")) {
        snprintf(detail, sizeof detail, "short workspace: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    if (!layer_out_unchanged(&L, before)) {
        snprintf(detail, sizeof detail, "a refused call wrote out");
        goto done;
    }
    ok = 1;
done:
    layer_free(&L);
    if (bdrop) kp_buffer_free(bdrop);
    free(before);
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

static kp_status forward_async(kp_ep *ep, const void *p) {
    const kp_moe_forward_ep_params *params = p; /* the macro passes sizeof *params */
    return kp_moe_forward_ep_async(ep, stream, params, NULL);
}

/* A rank that never joins (rank 0 creates the handle, then skips the layer), over a
 * fresh communicator that the failure spoils: the others end in KP_ERR_BACKEND from the
 * call or from kp_ep_wait within 10 s (timeout 1 s), never hang; then the handle refuses. */
void run_forward_async_timeout(const char *backend, kp_device *dev, const void *nccl_comm) {
    if (world < 2 || E % world) return;
    char detail[1024] = "";
    layer L;
    layer_init(&L, &cases[0], 4, seeds);
    kp_ep_options o = layer_options(L.c, KP_EP_COMM_NCCL, nccl_comm, 1000);
    kp_status st = kp_ep_create(dev, &o, &L.ep);
    if (st == KP_OK) st = layer_setup(&L, dev);
    if (st == KP_OK) st = layer_workspace(&L, dev, 100);
    const int ok = ep_never_joins(L.ep, st, forward_async, &L.p, "kp_moe_forward_ep_async", detail, sizeof detail);
    layer_free(&L);
    report(backend, "NCCL transport (fake libnccl): moe_forward_ep_async with a rank that never joins ends in "
           "KP_ERR_BACKEND within the timeout (call or kp_ep_wait), then the handle refuses calls", ok, detail);
}
