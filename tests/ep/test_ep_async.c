/*
 * tests/ep/test_ep_async.c — kp_ep_dispatch_async's failure cases over the fake libnccl
 * (its dispatch/combine cases run through tests/ep/test_ep.c's run_case: async_cases).
 */
#include "ep_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(x) do { if ((st = (x)) != KP_OK) { snprintf(detail, sizeof detail, "%s: %s: %s", #x, kp_status_str(st), kp_last_error()); goto done; } } while (0)

int ep_never_joins(kp_ep *ep, kp_status setup, kp_status (*call)(kp_ep *, const void *), const void *params,
                   const char *name, char *detail, size_t dn) {
    int ok = 0;
    MPI_Barrier(MPI_COMM_WORLD);
    if (setup != KP_OK) {
        snprintf(detail, dn, "setup: %s: %s", kp_status_str(setup), kp_last_error());
    } else if (rank == 0) {
        ok = 1; /* never joins */
    } else {
        setenv("KPORT_FAKE_NCCL_TIMEOUT_MS", "1000", 1); /* a blocking group's own bound */
        const double t0 = now_s();
        kp_status st = call(ep, params);
        const char *where = name;
        if (st == KP_OK) st = kp_ep_wait(ep, stream), where = "kp_ep_wait";
        const double dt = now_s() - t0;
        unsetenv("KPORT_FAKE_NCCL_TIMEOUT_MS");
        ok = st == KP_ERR_BACKEND && dt < 10;
        snprintf(detail, dn, "%s: %s after %.2f s: %s", where, kp_status_str(st), dt, kp_last_error());
        if (ok) {
            st = call(ep, params);
            ok = st == KP_ERR_BACKEND && strstr(kp_last_error(), "destroy");
            if (!ok) snprintf(detail, dn, "after the failure: %s: %s", kp_status_str(st), kp_last_error());
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    return ok;
}

static kp_status dispatch_async(kp_ep *ep, const void *dp) { return kp_ep_dispatch_async(ep, stream, dp, NULL); }

/* kp_ep_dispatch_async with a rank that never joins (rank 0 skips the call), over a
 * fresh fake-NCCL communicator (the failure spoils it): the others end in
 * KP_ERR_BACKEND in bounded time, from the call or from kp_ep_wait, never hang; the
 * handle then refuses further calls. */
void run_async_timeout(const char *backend, kp_device *dev, const void *nccl_comm) {
    if (world < 2) return;
    MPI_Comm comm = MPI_COMM_WORLD;
    char detail[600] = "";
    kp_ep *ep = NULL;
    kp_buffer *b = NULL;
    kp_ep_options o = base_options(&comm);
    o.comm_kind = KP_EP_COMM_NCCL;
    o.comm = nccl_comm;
    o.mode = KP_EP_MODE_CAPACITY;
    o.capacity_per_rank = 4;
    o.timeout_ms = 1000;
    kp_status st = kp_ep_create(dev, &o, &ep);
    kp_ep_info info = {0};
    if (st == KP_OK) st = kp_ep_get_info(ep, &info);
    if (st == KP_OK) st = kp_buffer_alloc(dev, (size_t)info.max_recv_rows * 16 * 4 + 4096, &b);
    kp_ep_dispatch_params dp = {0};
    if (st == KP_OK) {
        int64_t xs[2] = {1, 16}, is[2] = {1, 2}, rs[2] = {info.max_recv_rows, 16}, os[1] = {5};
        int32_t ids[2] = {0, 1}; /* rank 0's experts */
        kp_buffer_write(NULL, b, 0, ids, 8);
        kp_tensor_init(&dp.topk_ids, b, 0, KP_I32, 2, is, NULL);
        kp_tensor_init(&dp.x, b, 64, KP_F32, 2, xs, NULL);
        kp_tensor_init(&dp.expert_offsets, b, 256, KP_I32, 1, os, NULL);
        kp_tensor_init(&dp.recv_x, b, 512, KP_F32, 2, rs, NULL);
    }
    const int ok = ep_never_joins(ep, st, dispatch_async, &dp, "kp_ep_dispatch_async", detail, sizeof detail);
    if (ep) kp_ep_destroy(ep);
    if (b) kp_buffer_free(b);
    report(backend, "NCCL transport (fake libnccl): kp_ep_dispatch_async with a rank that never joins ends in "
           "KP_ERR_BACKEND within the timeout, then the handle refuses calls", ok, detail);
}

const ep_async_refusal ep_async_refusals[2] = {{KP_EP_COMM_MPI, KP_EP_MODE_CAPACITY, "device path"},
                                                {KP_EP_COMM_NCCL, KP_EP_MODE_NORMAL, "capacity mode"}};

/* kp_ep_dispatch_async's refusals, found before anything is exchanged or written (every
 * rank makes the same bad calls, so none waits): a normal-mode or MPI handle
 * (KP_ERR_UNSUPPORTED, saying why), no stream, a dropped tensor of the wrong shape or
 * dtype, recv_x too small; the buffer stays poisoned. */
void run_async_bad_calls(const char *backend, kp_device *dev, const void *nccl_comm) {
    MPI_Comm comm = MPI_COMM_WORLD;
    char detail[600] = "";
    int ok = 0;
    kp_status st = KP_OK;
    kp_ep *ep = NULL;
    kp_buffer *b = NULL;
    const size_t region = 1 << 16, total = 5 * region;
    uint8_t *poison = malloc(total), *after = malloc(total);
    memset(poison, 0xab, total);
    TRY(kp_buffer_alloc(dev, total, &b));
    TRY(kp_buffer_write(stream, b, 0, poison, total));
    int32_t ids[4] = {0, 1, 2, 3};
    TRY(kp_buffer_write(stream, b, 0, ids, sizeof ids));
    kp_ep_dispatch_params dp = {0};
    int64_t os[1] = {5}, two[1] = {2}, three[1] = {3};
    kp_tensor drop, drop3, dropf;
    TRY(tensor2(&dp.topk_ids, b, 0, KP_I32, 2, 2));
    TRY(tensor2(&dp.x, b, region, KP_F32, 2, 16));
    TRY(kp_tensor_init(&dp.expert_offsets, b, 2 * region, KP_I32, 1, os, NULL));
    TRY(kp_tensor_init(&drop, b, 4 * region, KP_I32, 1, two, NULL));
    TRY(kp_tensor_init(&drop3, b, 4 * region, KP_I32, 1, three, NULL));
    TRY(kp_tensor_init(&dropf, b, 4 * region, KP_F32, 1, two, NULL));
    const ep_async_refusal *refusals = ep_async_refusals;
    for (int i = 0; i < 2; i++) {
        kp_ep_options o = base_options(&comm);
        o.comm_kind = refusals[i].kind;
        if (o.comm_kind == KP_EP_COMM_NCCL) o.comm = nccl_comm;
        o.mode = refusals[i].mode;
        o.capacity_per_rank = 4;
        TRY(kp_ep_create(dev, &o, &ep));
        kp_ep_info info;
        TRY(kp_ep_get_info(ep, &info));
        TRY(tensor2(&dp.recv_x, b, 3 * region, KP_F32, info.max_recv_rows, 16));
        st = kp_ep_dispatch_async(ep, stream, &dp, &drop);
        if (st != KP_ERR_UNSUPPORTED || !strstr(kp_last_error(), refusals[i].needle)) {
            snprintf(detail, sizeof detail, "%s: %s: %s", refusals[i].needle, kp_status_str(st), kp_last_error());
            goto done;
        }
        kp_ep_destroy(ep);
        ep = NULL;
    }
    kp_ep_options o = base_options(&comm);
    o.comm_kind = KP_EP_COMM_NCCL, o.comm = nccl_comm, o.mode = KP_EP_MODE_CAPACITY, o.capacity_per_rank = 4;
    TRY(kp_ep_create(dev, &o, &ep));
    kp_ep_info info;
    TRY(kp_ep_get_info(ep, &info));
    TRY(tensor2(&dp.recv_x, b, 3 * region, KP_F32, info.max_recv_rows, 16));
    struct {
        kp_stream *s;
        const kp_tensor *drop;
        int64_t recv_rows;
        kp_status want;
        const char *needle;
    } bad[] = {{NULL, &drop, info.max_recv_rows, KP_ERR_INVALID_ARGUMENT, "stream"},
               {stream, &drop3, info.max_recv_rows, KP_ERR_INVALID_SHAPE, "dropped"},
               {stream, &dropf, info.max_recv_rows, KP_ERR_INVALID_DTYPE, "dropped"},
               {stream, &drop, info.max_recv_rows - 1, KP_ERR_INVALID_SHAPE, "recv_x"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        TRY(tensor2(&dp.recv_x, b, 3 * region, KP_F32, bad[i].recv_rows, 16));
        st = kp_ep_dispatch_async(ep, bad[i].s, &dp, bad[i].drop);
        if (st != bad[i].want || !strstr(kp_last_error(), bad[i].needle)) {
            snprintf(detail, sizeof detail, "%s: %s: %s", bad[i].needle, kp_status_str(st), kp_last_error());
            goto done;
        }
    }
    TRY(kp_buffer_read(stream, b, 0, after, total));
    memcpy(poison, ids, sizeof ids);
    if (memcmp(after, poison, total) != 0) {
        snprintf(detail, sizeof detail, "a refused call wrote its outputs");
        goto done;
    }
    ok = 1;
done:
    if (ep) kp_ep_destroy(ep);
    if (b) kp_buffer_free(b);
    free(poison), free(after);
    report(backend, "NCCL transport: kp_ep_dispatch_async refuses a normal-mode or MPI handle, no stream, a bad "
           "dropped tensor, a small recv_x, writing nothing", ok, detail);
}
