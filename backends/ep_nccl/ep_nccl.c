/*
 * backends/ep_nccl/ep_nccl.c — the NCCL and RCCL transports of kport's expert
 * parallelism (libkport-ep-nccl.so and libkport-ep-rccl.so, one source: EP_LIB names
 * the library). core/ep.c dlopens the transport; the transport dlopens libnccl.so.2 or
 * librccl.so.1 (the same API) at kp_ep_create, so nothing links NCCL at build time and a
 * missing library makes kp_ep_create KP_ERR_UNAVAILABLE with the reason.
 *
 * The caller's ncclComm_t is borrowed, never destroyed. Every collective is one group
 * of ncclSend/ncclRecv over int8 bytes (NCCL >= 2.7): allgather and all-to-all(-v) as
 * point-to-point pairs with every peer, self included.
 *
 * State of the design (issue 19): the core stages EP data through host memory, so this
 * transport is given host buffers and the NULL stream, and the core allows it only on
 * the cpu backend, where buffers are host memory: that is how tests/ep runs it against
 * tests/fake_nccl (a fake libnccl over shared memory), and the results must equal the
 * MPI transport's. A real NCCL needs device buffers on the op's stream (the core's
 * device-buffer path, not built yet) and a deadline polled with ncclCommGetAsyncError;
 * the timeout here is the library's own.
 */
#include "ep_transport.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
enum { NCCL_SUCCESS = 0, NCCL_INT8 = 0, NCCL_MIN_VERSION = 2700 /* send/recv: 2.7.0 */ };

typedef struct nccl_syms {
    const char *(*GetErrorString)(nccl_result);
    nccl_result (*GetVersion)(int *);
    nccl_result (*CommCount)(nccl_comm, int *);
    nccl_result (*CommUserRank)(nccl_comm, int *);
    nccl_result (*GroupStart)(void);
    nccl_result (*GroupEnd)(void);
    nccl_result (*Send)(const void *, size_t, int, int, nccl_comm, nccl_stream);
    nccl_result (*Recv)(void *, size_t, int, int, nccl_comm, nccl_stream);
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

/* One group: to every peer p, send_bytes(p) from send + send_off(p); from every peer,
 * recv_bytes(p) into recv + recv_off(p). */
typedef struct plan {
    const unsigned char *send;
    unsigned char *recv;
    size_t block;                       /* uniform blocks (counts NULL) */
    const int32_t *send_rows, *send_displ, *recv_rows, *recv_displ;
    size_t row_bytes;
} plan;

static kp_ep_tr_result exchange(kp_ep_tr_state *s, const plan *p, const char *what, char *why, size_t n) {
    nccl_result r = s->sym.GroupStart();
    if (r != NCCL_SUCCESS) return fail(s, r, "ncclGroupStart", why, n);
    nccl_result first = NCCL_SUCCESS;
    for (int32_t peer = 0; peer < s->world && first == NCCL_SUCCESS; peer++) {
        size_t so = p->send_rows ? (size_t)p->send_displ[peer] * p->row_bytes : (size_t)peer * p->block;
        size_t sb = p->send_rows ? (size_t)p->send_rows[peer] * p->row_bytes : p->block;
        size_t ro = p->send_rows ? (size_t)p->recv_displ[peer] * p->row_bytes : (size_t)peer * p->block;
        size_t rb = p->send_rows ? (size_t)p->recv_rows[peer] * p->row_bytes : p->block;
        first = s->sym.Send(p->send + so, sb, NCCL_INT8, (int)peer, s->comm, NULL);
        if (first == NCCL_SUCCESS) first = s->sym.Recv(p->recv + ro, rb, NCCL_INT8, (int)peer, s->comm, NULL);
    }
    r = s->sym.GroupEnd(); /* always closes the group */
    if (first != NCCL_SUCCESS) return fail(s, first, what, why, n);
    if (r != NCCL_SUCCESS) return fail(s, r, what, why, n);
    return KP_EP_TR_OK;
}

static kp_ep_tr_result ep_nccl_allgather(kp_ep_tr_state *s, const void *send, size_t bytes, void *recv,
                                         int32_t timeout_ms, char *why, size_t n) {
    (void)timeout_ms;
    /* every peer gets the same block: a plan whose send offsets are all 0 */
    nccl_result r = s->sym.GroupStart();
    if (r != NCCL_SUCCESS) return fail(s, r, "ncclGroupStart", why, n);
    nccl_result first = NCCL_SUCCESS;
    for (int32_t peer = 0; peer < s->world && first == NCCL_SUCCESS; peer++) {
        first = s->sym.Send(send, bytes, NCCL_INT8, (int)peer, s->comm, NULL);
        if (first == NCCL_SUCCESS)
            first = s->sym.Recv((unsigned char *)recv + (size_t)peer * bytes, bytes, NCCL_INT8, (int)peer, s->comm,
                                NULL);
    }
    r = s->sym.GroupEnd();
    if (first != NCCL_SUCCESS) return fail(s, first, "allgather", why, n);
    if (r != NCCL_SUCCESS) return fail(s, r, "allgather (ncclGroupEnd)", why, n);
    return KP_EP_TR_OK;
}

static kp_ep_tr_result ep_nccl_alltoall(kp_ep_tr_state *s, const void *send, size_t bytes, void *recv,
                                        int32_t timeout_ms, char *why, size_t n) {
    (void)timeout_ms;
    plan p = {.send = send, .recv = recv, .block = bytes};
    return exchange(s, &p, "all-to-all", why, n);
}

static kp_ep_tr_result ep_nccl_alltoallv(kp_ep_tr_state *s, const void *send, const int32_t *send_rows,
                                         const int32_t *send_displ, void *recv, const int32_t *recv_rows,
                                         const int32_t *recv_displ, size_t row_bytes, int32_t timeout_ms, char *why,
                                         size_t n) {
    (void)timeout_ms;
    plan p = {.send = send, .recv = recv, .send_rows = send_rows, .send_displ = send_displ,
              .recv_rows = recv_rows, .recv_displ = recv_displ, .row_bytes = row_bytes};
    return exchange(s, &p, "all-to-all-v", why, n);
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
};

EP_NCCL_API const kp_ep_transport *kport_ep_transport_entry(uint32_t abi_version) {
    return abi_version == KP_EP_TRANSPORT_ABI_VERSION ? &ep_nccl_iface : NULL;
}
