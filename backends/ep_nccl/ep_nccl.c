/*
 * backends/ep_nccl/ep_nccl.c — the NCCL and RCCL transports of kport's expert
 * parallelism (libkport-ep-nccl.so and libkport-ep-rccl.so, one source: EP_LIB names
 * the library). core/ep.c dlopens the transport; the transport dlopens libnccl.so.2 or
 * librccl.so.1 (the same API) at kp_ep_create, so nothing links NCCL at build time and a
 * missing library makes kp_ep_create KP_ERR_UNAVAILABLE with the reason.
 *
 * The caller's ncclComm_t is borrowed, never destroyed. Every collective is one group
 * of ncclSend/ncclRecv over int8 bytes (NCCL >= 2.7), one pair with every peer, self
 * included: exchange() below, which both kinds of core/ep_transport.h use.
 *
 *  - exchange + poll (interface version 2): device addresses on the op's stream. The
 *    group is enqueued and the call returns; poll then watches ncclCommGetAsyncError
 *    and the stream (the core's kp_event) up to the deadline, so a missing peer ends in
 *    KP_EP_TR_TIMEOUT instead of a hang (aborting the communicator is the caller's
 *    decision: kport does not own it). This is the path of every backend with device
 *    addresses (core/ep_device.c).
 *  - allgather / alltoall / alltoallv: the host-staged collectives, given host buffers
 *    and the NULL stream; meaningful only where host memory is the library's memory
 *    (the fake libnccl of tests/fake_nccl, on the cpu backend): the handle's create-time
 *    agreement, and on cpu a layer with more than kp_moe_align's 4096 experts.
 */
#include "ep_transport.h"

#include <dlfcn.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EP_NCCL_API __attribute__((visibility("default")))
#ifndef EP_LIB
#define EP_LIB "libnccl.so.2"
#endif
#ifndef EP_NAME
#define EP_NAME "nccl"
#endif

/* The few NCCL types used, as nccl.h declares them (no NCCL headers at build time). */
typedef int nccl_result;
typedef void *nccl_comm;
typedef void *nccl_stream;
enum { NCCL_SUCCESS = 0, NCCL_IN_PROGRESS = 7, NCCL_INT8 = 0, NCCL_MIN_VERSION = 2700 /* send/recv: 2.7.0 */ };

typedef struct nccl_syms {
    const char *(*GetErrorString)(nccl_result);
    nccl_result (*GetVersion)(int *);
    nccl_result (*CommCount)(nccl_comm, int *);
    nccl_result (*CommUserRank)(nccl_comm, int *);
    nccl_result (*GroupStart)(void);
    nccl_result (*GroupEnd)(void);
    nccl_result (*Send)(const void *, size_t, int, int, nccl_comm, nccl_stream);
    nccl_result (*Recv)(void *, size_t, int, int, nccl_comm, nccl_stream);
    nccl_result (*CommGetAsyncError)(nccl_comm, nccl_result *); /* optional (NCCL 2.4) */
} nccl_syms;

struct kp_ep_tr_state {
    void *lib;     /* owned: dlclose at destroy */
    nccl_syms sym;
    nccl_comm comm; /* borrowed: the caller's */
    int32_t rank, world;
};

static kp_ep_tr_result fail(const kp_ep_tr_state *s, nccl_result r, const char *what, char *why, size_t n) {
    snprintf(why, n, "%s: %s failed: %s (%d)", EP_NAME, what, s->sym.GetErrorString(r), r);
    return KP_EP_TR_ERROR;
}

static kp_ep_tr_result load(kp_ep_tr_state *s, char *why, size_t n) {
    s->lib = dlopen(EP_LIB, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE); /* NCCL is not made to be unloaded */
    if (!s->lib) {
        const char *e = dlerror();
        snprintf(why, n, "%s not found: %s", EP_LIB, e ? e : "dlopen failed");
        return KP_EP_TR_ERROR;
    }
    struct {
        const char *name;
        void **slot;
    } want[] = {
        {"ncclGetErrorString", (void **)&s->sym.GetErrorString}, {"ncclGetVersion", (void **)&s->sym.GetVersion},
        {"ncclCommCount", (void **)&s->sym.CommCount},           {"ncclCommUserRank", (void **)&s->sym.CommUserRank},
        {"ncclGroupStart", (void **)&s->sym.GroupStart},         {"ncclGroupEnd", (void **)&s->sym.GroupEnd},
        {"ncclSend", (void **)&s->sym.Send},                     {"ncclRecv", (void **)&s->sym.Recv},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        *want[i].slot = dlsym(s->lib, want[i].name);
        if (!*want[i].slot) {
            snprintf(why, n, "symbol '%s' not found in %s", want[i].name, EP_LIB);
            return KP_EP_TR_ERROR;
        }
    }
    *(void **)&s->sym.CommGetAsyncError = dlsym(s->lib, "ncclCommGetAsyncError");
    int v = 0;
    nccl_result r = s->sym.GetVersion(&v);
    if (r != NCCL_SUCCESS) return fail(s, r, "ncclGetVersion", why, n);
    if (v < NCCL_MIN_VERSION) {
        snprintf(why, n, "%s is version %d; point-to-point send/recv needs %d or later", EP_LIB, v,
                 (int)NCCL_MIN_VERSION);
        return KP_EP_TR_ERROR;
    }
    return KP_EP_TR_OK;
}

static void ep_nccl_destroy(kp_ep_tr_state *s, int32_t timeout_ms) {
    (void)timeout_ms; /* every group completed inside its call */
    if (!s) return;
    if (s->lib) dlclose(s->lib);
    free(s);
}

static kp_ep_tr_result ep_nccl_create(const void *comm, int32_t timeout_ms, kp_ep_tr_state **out, int32_t *rank,
                                      int32_t *world, char *why, size_t n) {
    (void)timeout_ms;
    kp_ep_tr_state *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(why, n, "out of host memory");
        return KP_EP_TR_ERROR;
    }
    kp_ep_tr_result res = load(s, why, n);
    int rk = 0, ws = 0;
    nccl_result r = NCCL_SUCCESS;
    if (res == KP_EP_TR_OK) {
        s->comm = *(nccl_comm const *)comm;
        if ((r = s->sym.CommUserRank(s->comm, &rk)) != NCCL_SUCCESS) res = fail(s, r, "ncclCommUserRank", why, n);
        else if ((r = s->sym.CommCount(s->comm, &ws)) != NCCL_SUCCESS) res = fail(s, r, "ncclCommCount", why, n);
    }
    if (res != KP_EP_TR_OK) {
        ep_nccl_destroy(s, 0);
        return res;
    }
    s->rank = rk;
    s->world = ws;
    *rank = rk;
    *world = ws;
    *out = s;
    return KP_EP_TR_OK;
}

/* One group of ncclSend/ncclRecv pairs, one with every peer, enqueued on stream. */
static kp_ep_tr_result exchange(kp_ep_tr_state *s, const kp_ep_tr_xfer *x, void *stream, const char *what, char *why,
                                size_t n) {
    nccl_result r = s->sym.GroupStart();
    if (r != NCCL_SUCCESS) return fail(s, r, "ncclGroupStart", why, n);
    nccl_result first = NCCL_SUCCESS;
    for (int32_t peer = 0; peer < s->world && first == NCCL_SUCCESS; peer++) {
        first = s->sym.Send((const unsigned char *)x->send + x->send_off[peer], x->send_bytes[peer], NCCL_INT8,
                            (int)peer, s->comm, stream);
        if (first == NCCL_SUCCESS)
            first = s->sym.Recv((unsigned char *)x->recv + x->recv_off[peer], x->recv_bytes[peer], NCCL_INT8,
                                (int)peer, s->comm, stream);
    }
    r = s->sym.GroupEnd(); /* always closes the group */
    if (first != NCCL_SUCCESS) return fail(s, first, what, why, n);
    if (r != NCCL_SUCCESS && r != NCCL_IN_PROGRESS) return fail(s, r, what, why, n);
    return KP_EP_TR_OK;
}

/* A host-staged collective: offsets and sizes of every peer's block, then one group on
 * the NULL stream (host memory: tests/fake_nccl on cpu, see the top). */
static kp_ep_tr_result host_exchange(kp_ep_tr_state *s, const void *send, void *recv, size_t block,
                                     bool same_send, const int32_t *send_rows,
                                     const int32_t *send_displ, const int32_t *recv_rows, const int32_t *recv_displ,
                                     size_t row_bytes, const char *what, char *why, size_t n) {
    size_t *v = malloc(4 * sizeof(size_t) * (size_t)s->world);
    if (!v) {
        snprintf(why, n, "%s: out of host memory", EP_NAME);
        return KP_EP_TR_ERROR;
    }
    kp_ep_tr_xfer x = {.send = send, .recv = recv, .send_off = v, .send_bytes = v + s->world,
                       .recv_off = v + 2 * s->world, .recv_bytes = v + 3 * s->world};
    for (int32_t p = 0; p < s->world; p++) {
        const size_t P = (size_t)p, W = (size_t)s->world;
        v[P] = send_rows ? (size_t)send_displ[p] * row_bytes : same_send ? 0 : P * block;
        v[W + P] = send_rows ? (size_t)send_rows[p] * row_bytes : block;
        v[2 * W + P] = send_rows ? (size_t)recv_displ[p] * row_bytes : P * block;
        v[3 * W + P] = send_rows ? (size_t)recv_rows[p] * row_bytes : block;
    }
    kp_ep_tr_result r = exchange(s, &x, NULL, what, why, n);
    free(v);
    return r;
}

static kp_ep_tr_result ep_nccl_allgather(kp_ep_tr_state *s, const void *send, size_t bytes, void *recv,
                                         int32_t timeout_ms, char *why, size_t n) {
    (void)timeout_ms; /* the fake's own bound (host-staged: see the top) */
    /* every peer gets the same block: send offsets 0 */
    return host_exchange(s, send, recv, bytes, true, NULL, NULL, NULL, NULL, 0, "allgather", why, n);
}

static kp_ep_tr_result ep_nccl_alltoall(kp_ep_tr_state *s, const void *send, size_t bytes, void *recv,
                                        int32_t timeout_ms, char *why, size_t n) {
    (void)timeout_ms;
    return host_exchange(s, send, recv, bytes, false, NULL, NULL, NULL, NULL, 0, "all-to-all", why, n);
}

static kp_ep_tr_result ep_nccl_alltoallv(kp_ep_tr_state *s, const void *send, const int32_t *send_rows,
                                         const int32_t *send_displ, void *recv, const int32_t *recv_rows,
                                         const int32_t *recv_displ, size_t row_bytes, int32_t timeout_ms, char *why,
                                         size_t n) {
    (void)timeout_ms;
    return host_exchange(s, send, recv, 0, false, send_rows, send_displ, recv_rows, recv_displ, row_bytes,
                         "all-to-all-v", why, n);
}

static kp_ep_tr_result ep_nccl_exchange(kp_ep_tr_state *s, const kp_ep_tr_xfer *x, void *stream, char *why,
                                        size_t n) {
    return exchange(s, x, stream, "exchange", why, n);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static kp_ep_tr_result ep_nccl_poll(kp_ep_tr_state *s, kp_ep_tr_stream_done_fn stream_done, void *ctx,
                                    int32_t timeout_ms, char *why, size_t n) {
    const double deadline = now_ms() + (double)timeout_ms;
    for (;;) {
        nccl_result e = NCCL_SUCCESS;
        if (s->sym.CommGetAsyncError) {
            nccl_result r = s->sym.CommGetAsyncError(s->comm, &e);
            if (r != NCCL_SUCCESS) return fail(s, r, "ncclCommGetAsyncError", why, n);
            if (e != NCCL_SUCCESS && e != NCCL_IN_PROGRESS)
                return fail(s, e, "the exchange (asynchronous error)", why, n);
        }
        /* a non-blocking communicator's group may still be being issued (ncclInProgress):
         * only then does the stream hold all of it */
        const int done = e == NCCL_IN_PROGRESS ? 0 : stream_done(ctx);
        if (done > 0) return KP_EP_TR_OK;
        if (done < 0) {
            snprintf(why, n, "%s: the stream of the exchange reported an error", EP_NAME);
            return KP_EP_TR_ERROR;
        }
        if (timeout_ms > 0 && now_ms() > deadline) {
            snprintf(why, n, "%s: the exchange did not complete within %d ms: a rank did not join (failed, absent "
                     "or called with other arguments); the communicator may need ncclCommAbort", EP_NAME,
                     (int)timeout_ms);
            return KP_EP_TR_TIMEOUT;
        }
        sched_yield();
    }
}

static const kp_ep_transport ep_nccl_iface = {
    .abi_version = KP_EP_TRANSPORT_ABI_VERSION,
    .struct_size = sizeof(kp_ep_transport),
    .name = EP_NAME,
    .create = ep_nccl_create,
    .allgather = ep_nccl_allgather,
    .alltoall = ep_nccl_alltoall,
    .alltoallv = ep_nccl_alltoallv,
    .destroy = ep_nccl_destroy,
    .exchange = ep_nccl_exchange,
    .poll = ep_nccl_poll,
};

EP_NCCL_API const kp_ep_transport *kport_ep_transport_entry(uint32_t abi_version) {
    return abi_version == KP_EP_TRANSPORT_ABI_VERSION ? &ep_nccl_iface : NULL;
}
