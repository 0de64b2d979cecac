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
 * overflow reported on every rank; bad input on every rank and on one rank. The layer's
 * set-up, its kp_moe_forward reference and the check of out: tests/ep/ep_layer.c (shared
 * with tests/ep/test_ep_forward_async.c).
 */
#include "ep_layer.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the weights' seed, and rank r's tokens' (5150 + 977 r) */
static const layer_seeds seeds = {31337, 5150, 977};

static const layer_case cases[] = {
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

static void run_case(const char *backend, kp_device *dev, const layer_case *c) {
    char detail[1024] = "";
    int ok = 0;
    kp_status st = KP_OK;
    layer L;
    layer_init(&L, c, c->tokens[rank % 4], seeds);
    uint8_t *hout = malloc(L.out_bytes + 2 * GUARD), *href = malloc(L.out_bytes + 1);
    MPI_Comm comm = MPI_COMM_WORLD;
    kp_ep_options o = layer_options(c, KP_EP_COMM_MPI, &comm, 60000);
    TRY(kp_ep_create(dev, &o, &L.ep));
    TRY(layer_setup(&L, dev));
    TRY(layer_workspace(&L, dev, 100)); /* unaligned: the size includes the room to align */
    kp_ep_dispatch_result r = {0};
    st = kp_moe_forward_ep(L.ep, stream, &L.p, &r);
    if (c->overflow) {
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
    if (!c->overflow && (r.dropped || r.dropped_all)) {
        snprintf(detail, sizeof detail, "dropped %lld pairs without an overflow", (long long)r.dropped_all);
        goto done;
    }
    TRY(kp_buffer_read(stream, L.bout, 0, hout, L.out_bytes + 2 * GUARD));
    if (L.T) TRY(layer_reference(&L, dev, href));
    /* dropped pairs count as zero: not kp_moe_forward's sum, only every element written */
    const layer_check k = {.got = "EP", .ref = "kp_moe_forward", .values = !c->overflow};
    ok = layer_check_out(&L, hout, href, &k, detail, sizeof detail);
done:
    layer_free(&L);
    char name[256];
    snprintf(name, sizeof name, "moe_forward_ep %s%s", c->name,
             c->overflow ? "" : " equals kp_moe_forward (f32-order tolerance)");
    report(backend, name, ok, detail);
    free(hout), free(href);
}

/* Bad input: on every rank (each returns the error at once, out untouched), then on
 * rank 0 only (rank 0 returns its error at once; the others time out, not hang). In
 * capacity mode a dispatch is one exchange, so rank 0 can settle the one the others
 * abandoned afterwards (a T = 0 kp_ep_dispatch): no request is left pending. */
static void run_bad_input(const char *backend, kp_device *dev, int only_rank0) {
    char detail[1024] = "";
    int ok = 0;
    kp_status st = KP_OK;
    /* cases[0]'s data (f32) with softmax routing, no shared expert, in capacity mode */
    layer_case c = cases[0];
    c.shared = c.deepseek = 0, c.mode = KP_EP_MODE_CAPACITY, c.capacity = MAXT * K;
    layer L;
    layer_init(&L, &c, 4, seeds);
    const size_t es = kp_dtype_size(c.dtype), out_bytes = L.out_bytes;
    const int32_t LE = E / world;
    kp_buffer *brecv = NULL;
    uint8_t *before = malloc(out_bytes + 2 * GUARD);
    int settled = 0;
    MPI_Comm side;
    MPI_Comm_dup(MPI_COMM_WORLD, &side);
    MPI_Comm comm = MPI_COMM_WORLD;
    kp_ep_options o = layer_options(&c, KP_EP_COMM_MPI, &comm, 1500);
    TRY(kp_ep_create(dev, &o, &L.ep));
    kp_ep_info info;
    TRY(kp_ep_get_info(L.ep, &info));
    TRY(kp_buffer_alloc(dev, (size_t)info.max_recv_rows * H * es + 256, &brecv));
    TRY(layer_setup(&L, dev));
    TRY(layer_workspace(&L, dev, 0));
    TRY(kp_buffer_read(stream, L.bout, 0, before, out_bytes + 2 * GUARD)); /* poisoned, with its guards */
    const int bad = !only_rank0 || rank == 0;
    if (bad) TRY(tensor3(&L.p.w13, L.bw13, 0, c.dtype, E, 2 * I, H)); /* every expert, not this rank's slice */
    const double t0 = now_s();
    st = kp_moe_forward_ep(L.ep, stream, &L.p, NULL);
    const double secs = now_s() - t0;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", kp_last_error());
    MPI_Barrier(side); /* every rank's call has returned */
    settled = 1;
    if (only_rank0 && rank == 0) { /* join the exchange the others abandoned */
        kp_ep_dispatch_params dp = {0};
        kp_ep_dispatch_result dr;
        const int64_t os[1] = {LE + 1};
        kp_status s2 = tensor2(&dp.x, L.bx, 0, c.dtype, 0, H);
        if (s2 == KP_OK) s2 = tensor2(&dp.topk_ids, L.bx, 0, KP_I32, 0, K);
        if (s2 == KP_OK) s2 = tensor2(&dp.recv_x, brecv, 256, c.dtype, info.max_recv_rows, H);
        if (s2 == KP_OK) s2 = kp_tensor_init(&dp.expert_offsets, brecv, 0, KP_I32, 1, os, NULL);
        if (s2 == KP_OK) s2 = kp_ep_dispatch(L.ep, stream, &dp, &dr);
        if (s2 != KP_OK) fprintf(stderr, "rank 0: settling dispatch: %s\n", kp_last_error());
    }
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
    if (bad && !layer_out_unchanged(&L, before)) {
        snprintf(detail, sizeof detail, "out (or a guard byte) was written by a call that failed validation");
        goto done;
    }
    ok = 1;
done:
    if (!settled) MPI_Barrier(side);
    MPI_Comm_free(&side);
    layer_free(&L);
    if (brecv) kp_buffer_free(brecv);
    report(backend,
           only_rank0 ? "moe_forward_ep bad input on rank 0 only: rank 0 fails at once, out untouched; the others "
                        "fail within the timeout"
                      : "moe_forward_ep bad input on every rank: a clear error at once, out untouched",
           ok, detail);
    free(before);
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

/* One kp_moe_forward_ep of case c, with DeepSeek routing whatever c's, over the given
 * communicator: out's bytes, the status and the dispatch result. */
static kp_status forward_once(kp_device *dev, const layer_case *c, kp_ep_comm_kind kind, const void *comm,
                              uint8_t *out, kp_ep_dispatch_result *r, char *detail, size_t dn) {
    kp_status st = KP_OK, call = KP_OK;
    layer_case d = *c;
    d.deepseek = 1;
    layer L;
    layer_init(&L, &d, c->tokens[rank % 4], seeds);
    kp_ep_options o = layer_options(&d, kind, comm, fwd_timeout_ms);
#define STEP(x) if (st == KP_OK && (st = (x)) != KP_OK) snprintf(detail, dn, "%s: %s: %s", #x, kp_status_str(st), kp_last_error())
    STEP(kp_ep_create(dev, &o, &L.ep));
    STEP(layer_setup(&L, dev));
    STEP(layer_workspace(&L, dev, 0));
#undef STEP
    if (st == KP_OK && fwd_nonblocking) setenv("KPORT_FAKE_NCCL_NONBLOCKING", "1", 1);
    if (st == KP_OK && !fwd_skip_call) {
        call = kp_moe_forward_ep(L.ep, stream, &L.p, r);
        if (call != KP_OK && call != KP_ERR_OUT_OF_BOUNDS)
            snprintf(detail, dn, "kp_moe_forward_ep: %s: %s", kp_status_str(call), kp_last_error());
        if ((call == KP_OK || call == KP_ERR_OUT_OF_BOUNDS) && L.out_bytes)
            st = kp_buffer_read(stream, L.bout, GUARD, out, L.out_bytes);
    }
    unsetenv("KPORT_FAKE_NCCL_NONBLOCKING");
    layer_free(&L);
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
    static const layer_case t1 = {"bf16 T=1 + shared expert, normal", KP_BF16, 1, 1, {1, 1, 1, 1}, 0,
                                KP_EP_MODE_NORMAL, 0, 0};
    /* normal: f32 + shared; bf16 + shared; skewed, ranks with no tokens; T=1; capacity:
     * T=1, skewed, overflow */
    const layer_case *run[] = {&cases[0], &cases[2], &cases[3], &t1, &cases[4], &cases[5], &cases[6]};
    for (size_t ci = 0; ci < sizeof run / sizeof *run; ci++) {
        const layer_case *c = run[ci];
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
        const layer_case *c = &cases[0];
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
