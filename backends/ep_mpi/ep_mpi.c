/*
 * backends/ep_mpi/ep_mpi.c — the MPI transport of kport's expert parallelism
 * (libkport-ep-mpi.so). libkport dlopens it (core/ep.c) so that libkport itself never
 * links MPI. The caller initialises MPI and owns its communicator; this plugin works on
 * a private duplicate (so kport's messages never match the caller's) and frees only that.
 *
 * Every collective is non-blocking (MPI-3) and polled against a deadline: a rank that
 * never joins makes the others return KP_EP_TR_TIMEOUT rather than hang. A timed-out
 * collective cannot be cancelled in MPI; the state keeps its request and buffers alive
 * and reports itself broken.
 */
#include "ep_transport.h"

#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EP_MPI_API __attribute__((visibility("default")))

struct kp_ep_tr_state {
    MPI_Comm comm;        /* our duplicate of the caller's communicator */
    MPI_Request pending;  /* a collective that timed out, or MPI_REQUEST_NULL */
    MPI_Datatype pending_type;
    void *pending_bufs[3]; /* its buffers, kept alive while it may still complete */
    int32_t world;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static kp_ep_tr_result mpi_error(int rc, const char *what, char *why, size_t n) {
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    snprintf(why, n, "MPI: %s failed: %s", what, msg);
    return KP_EP_TR_ERROR;
}

/* Polls req until done or timeout_ms (<= 0: wait without limit) has passed. */
static kp_ep_tr_result wait_deadline(MPI_Request *req, int32_t timeout_ms, const char *what, char *why,
                                     size_t n) {
    const double deadline = now_s() + timeout_ms * 1e-3;
    for (unsigned spins = 0;; spins++) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_error(rc, what, why, n);
        if (done) return KP_EP_TR_OK;
        if (timeout_ms > 0 && now_s() > deadline) {
            snprintf(why, n, "MPI: %s timed out after %d ms: a rank did not join (failed, absent or "
                     "called with other arguments)", what, (int)timeout_ms);
            return KP_EP_TR_TIMEOUT;
        }
        /* yield the core to oversubscribed ranks; sleeping instead stalls the fragment
         * pipeline of large messages (every fragment needs both sides to progress) */
        if (spins > 64) sched_yield();
    }
}

/* A collective that timed out: it may still complete later and use its buffers, so
 * they are kept (with its type) until destroy can wait for it. */
static kp_ep_tr_result park(kp_ep_tr_state *s, MPI_Request req, MPI_Datatype type, void *b0, void *b1,
                            void *b2) {
    s->pending = req;
    s->pending_type = type;
    s->pending_bufs[0] = b0;
    s->pending_bufs[1] = b1;
    s->pending_bufs[2] = b2;
    return KP_EP_TR_TIMEOUT;
}

static kp_ep_tr_result refuse_if_broken(const kp_ep_tr_state *s, char *why, size_t n) {
    if (s->pending == MPI_REQUEST_NULL) return KP_EP_TR_OK;
    snprintf(why, n, "MPI: an earlier collective timed out and is still pending; this EP handle can only be "
             "destroyed");
    return KP_EP_TR_ERROR;
}

/* Copies of the caller's buffers: a collective that times out keeps reading/writing its
 * buffers until it completes, which may be after the caller has freed them. */
static void *dup_bytes(const void *src, size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (p && bytes) memcpy(p, src, bytes);
    return p;
}

static kp_ep_tr_result ep_mpi_create(const void *comm, int32_t timeout_ms, kp_ep_tr_state **out, int32_t *rank,
                                     int32_t *world, char *why, size_t n) {
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (!inited || finalized) {
        snprintf(why, n, "MPI is not initialised (call MPI_Init before kp_ep_create)");
        return KP_EP_TR_ERROR;
    }
    kp_ep_tr_state *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(why, n, "out of host memory");
        return KP_EP_TR_ERROR;
    }
    s->pending = MPI_REQUEST_NULL;
    s->pending_type = MPI_DATATYPE_NULL;
    MPI_Request req;
    int rc = MPI_Comm_idup(*(const MPI_Comm *)comm, &s->comm, &req);
    if (rc != MPI_SUCCESS) {
        free(s);
        return mpi_error(rc, "MPI_Comm_idup", why, n);
    }
    kp_ep_tr_result r = wait_deadline(&req, timeout_ms, "MPI_Comm_idup", why, n);
    if (r != KP_EP_TR_OK) {
        if (r == KP_EP_TR_TIMEOUT) {
            s->pending = req; /* leaked with s: cannot be completed without the peers */
            return r;
        }
        free(s);
        return r;
    }
    int rk = 0, ws = 0;
    MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(s->comm, &rk);
    MPI_Comm_size(s->comm, &ws);
    s->world = ws;
    *rank = rk;
    *world = ws;
    *out = s;
    return KP_EP_TR_OK;
}

static kp_ep_tr_result ep_mpi_allgather(kp_ep_tr_state *s, const void *send, size_t bytes, void *recv,
                                        int32_t timeout_ms, char *why, size_t n) {
    kp_ep_tr_result r = refuse_if_broken(s, why, n);
    if (r != KP_EP_TR_OK) return r;
    if (bytes > INT32_MAX / (size_t)s->world) {
        snprintf(why, n, "allgather of %zu bytes per rank is too large", bytes);
        return KP_EP_TR_ERROR;
    }
    void *sb = dup_bytes(send, bytes), *rb = malloc(bytes * (size_t)s->world + 1);
    if (!sb || !rb) {
        free(sb);
        free(rb);
        snprintf(why, n, "out of host memory");
        return KP_EP_TR_ERROR;
    }
    MPI_Request req;
    int rc = MPI_Iallgather(sb, (int)bytes, MPI_BYTE, rb, (int)bytes, MPI_BYTE, s->comm, &req);
    if (rc != MPI_SUCCESS) {
        free(sb);
        free(rb);
        return mpi_error(rc, "MPI_Iallgather", why, n);
    }
    r = wait_deadline(&req, timeout_ms, "MPI_Iallgather", why, n);
    if (r == KP_EP_TR_OK) memcpy(recv, rb, bytes * (size_t)s->world);
    if (r == KP_EP_TR_TIMEOUT) return park(s, req, MPI_DATATYPE_NULL, sb, rb, NULL);
    free(sb);
    free(rb);
    return r;
}

/* Blocks of `bytes` to every rank, counted in a contiguous type so any size fits an int. */
static kp_ep_tr_result ep_mpi_alltoall(kp_ep_tr_state *s, const void *send, size_t bytes, void *recv,
                                       int32_t timeout_ms, char *why, size_t n) {
    kp_ep_tr_result r = refuse_if_broken(s, why, n);
    if (r != KP_EP_TR_OK) return r;
    const size_t total = bytes * (size_t)s->world;
    if (bytes > INT32_MAX) {
        snprintf(why, n, "alltoall block of %zu bytes is too large", bytes);
        return KP_EP_TR_ERROR;
    }
    void *sb = dup_bytes(send, total), *rb = malloc(total + 1);
    MPI_Datatype type = MPI_DATATYPE_NULL;
    if (!sb || !rb) {
        free(sb);
        free(rb);
        snprintf(why, n, "out of host memory");
        return KP_EP_TR_ERROR;
    }
    MPI_Type_contiguous((int)(bytes ? bytes : 1), MPI_BYTE, &type);
    MPI_Type_commit(&type);
    MPI_Request req;
    int rc = MPI_Ialltoall(sb, bytes ? 1 : 0, type, rb, bytes ? 1 : 0, type, s->comm, &req);
    if (rc != MPI_SUCCESS) {
        MPI_Type_free(&type);
        free(sb);
        free(rb);
        return mpi_error(rc, "MPI_Ialltoall", why, n);
    }
    r = wait_deadline(&req, timeout_ms, "MPI_Ialltoall", why, n);
    if (r == KP_EP_TR_TIMEOUT) return park(s, req, type, sb, rb, NULL);
    if (r == KP_EP_TR_OK) memcpy(recv, rb, total);
    MPI_Type_free(&type);
    free(sb);
    free(rb);
    return r;
}

static kp_ep_tr_result ep_mpi_alltoallv(kp_ep_tr_state *s, const void *send, const int32_t *send_rows,
                                        const int32_t *send_displ, void *recv, const int32_t *recv_rows,
                                        const int32_t *recv_displ, size_t row_bytes, int32_t timeout_ms,
                                        char *why, size_t n) {
    kp_ep_tr_result r = refuse_if_broken(s, why, n);
    if (r != KP_EP_TR_OK) return r;
    if (row_bytes == 0 || row_bytes > INT32_MAX) {
        snprintf(why, n, "alltoallv row of %zu bytes is out of range", row_bytes);
        return KP_EP_TR_ERROR;
    }
    size_t send_total = 0, recv_total = 0;
    for (int32_t i = 0; i < s->world; i++) {
        size_t se = (size_t)send_displ[i] + (size_t)send_rows[i], re = (size_t)recv_displ[i] + (size_t)recv_rows[i];
        if (se > send_total) send_total = se;
        if (re > recv_total) recv_total = re;
    }
    /* the core checked rows * row_bytes fits a size_t */
    void *sb = dup_bytes(send, send_total * row_bytes), *rb = malloc(recv_total * row_bytes + 1);
    int *sc = malloc(4 * sizeof(int) * (size_t)s->world);
    if (!sb || !rb || !sc) {
        free(sb);
        free(rb);
        free(sc);
        snprintf(why, n, "out of host memory");
        return KP_EP_TR_ERROR;
    }
    int *sd = sc + s->world, *rc_ = sd + s->world, *rd = rc_ + s->world;
    for (int32_t i = 0; i < s->world; i++) {
        sc[i] = send_rows[i];
        sd[i] = send_displ[i];
        rc_[i] = recv_rows[i];
        rd[i] = recv_displ[i];
    }
    MPI_Datatype type = MPI_DATATYPE_NULL;
    MPI_Type_contiguous((int)row_bytes, MPI_BYTE, &type);
    MPI_Type_commit(&type);
    MPI_Request req;
    int rc = MPI_Ialltoallv(sb, sc, sd, type, rb, rc_, rd, type, s->comm, &req);
    if (rc != MPI_SUCCESS) {
        MPI_Type_free(&type);
        free(sb);
        free(rb);
        free(sc);
        return mpi_error(rc, "MPI_Ialltoallv", why, n);
    }
    r = wait_deadline(&req, timeout_ms, "MPI_Ialltoallv", why, n);
    if (r == KP_EP_TR_TIMEOUT) return park(s, req, type, sb, rb, sc); /* counts must outlive it too */
    if (r == KP_EP_TR_OK) memcpy(recv, rb, recv_total * row_bytes);
    MPI_Type_free(&type);
    free(sb);
    free(rb);
    free(sc);
    return r;
}

static void ep_mpi_destroy(kp_ep_tr_state *s, int32_t timeout_ms) {
    if (!s) return;
    if (s->pending != MPI_REQUEST_NULL) {
        char why[256];
        if (wait_deadline(&s->pending, timeout_ms, "pending collective", why, sizeof why) != KP_EP_TR_OK)
            return; /* still pending: the request, its buffers and the duplicate leak by design */
        if (s->pending_type != MPI_DATATYPE_NULL) MPI_Type_free(&s->pending_type);
        free(s->pending_bufs[0]);
        free(s->pending_bufs[1]);
        free(s->pending_bufs[2]);
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&s->comm);
    free(s);
}

static const kp_ep_transport ep_mpi_iface = {
    .abi_version = KP_EP_TRANSPORT_ABI_VERSION,
    .struct_size = sizeof(kp_ep_transport),
    .name = "mpi",
    .create = ep_mpi_create,
    .allgather = ep_mpi_allgather,
    .alltoall = ep_mpi_alltoall,
    .alltoallv = ep_mpi_alltoallv,
    .destroy = ep_mpi_destroy,
    /* exchange, poll: NULL (host-staged only; a GPU-aware MPI path is not built) */
};

EP_MPI_API const kp_ep_transport *kport_ep_transport_entry(uint32_t abi_version) {
    return abi_version == KP_EP_TRANSPORT_ABI_VERSION ? &ep_mpi_iface : NULL;
}
