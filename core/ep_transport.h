/*
 * core/ep_transport.h — the interface between the core's expert-parallel layer
 * (core/ep.c) and a transport plugin (libkport-ep-<name>.so, e.g. backends/ep_mpi).
 *
 * A transport moves bytes between the ranks of the caller's communicator. The core
 * never links MPI/NCCL/RCCL: it dlopens the plugin, which links the library (or dlopens
 * it). Every collective is bounded by a deadline: a peer that never joins makes the
 * call return KP_EP_TR_TIMEOUT instead of hanging; the transport is then "broken" (the
 * collective may still be pending) and the core refuses further calls on it.
 *
 * Two kinds of collective, one interface (version 2):
 *  - host-staged (allgather, alltoall, alltoallv): host buffers, blocking, every
 *    transport has them (MPI: the only ones);
 *  - device (exchange + poll, optional: NULL where absent): device addresses (a
 *    CUdeviceptr / hipDeviceptr_t / host pointer on cpu) on the op's native stream,
 *    non-blocking: exchange only enqueues; poll waits, up to a deadline, for the
 *    library's asynchronous error and for the stream (through a callback the core
 *    gives: a kp_event recorded after the exchange). NCCL and RCCL have them.
 */
#ifndef KPORT_EP_TRANSPORT_H
#define KPORT_EP_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#define KP_EP_TRANSPORT_ABI_VERSION 2u /* 2: exchange and poll (device addresses) */
#define KP_EP_TRANSPORT_ENTRY_SYMBOL "kport_ep_transport_entry"

typedef enum kp_ep_tr_result {
    KP_EP_TR_OK = 0,
    KP_EP_TR_TIMEOUT = 1, /* the deadline passed before every rank joined */
    KP_EP_TR_ERROR = 2    /* the library reported an error (message in why) */
} kp_ep_tr_result;

typedef struct kp_ep_tr_state kp_ep_tr_state;

/* One device exchange: to every peer p, send_bytes[p] bytes from send + send_off[p];
 * from every peer, recv_bytes[p] bytes into recv + recv_off[p] (arrays of world). */
typedef struct kp_ep_tr_xfer {
    const void *send;
    void *recv;
    const size_t *send_off, *send_bytes, *recv_off, *recv_bytes;
} kp_ep_tr_xfer;

/* The core's view of the stream: 1 when everything enqueued before the poll has run,
 * 0 when not yet, < 0 on a device error. */
typedef int (*kp_ep_tr_stream_done_fn)(void *ctx);

typedef struct kp_ep_transport {
    uint32_t abi_version; /* KP_EP_TRANSPORT_ABI_VERSION */
    uint32_t struct_size; /* sizeof(kp_ep_transport) */
    const char *name;     /* "mpi" */
    /* comm: the address of the caller's communicator (an MPI_Comm *). The transport
     * may duplicate it for private traffic; it never frees the caller's. */
    kp_ep_tr_result (*create)(const void *comm, int32_t timeout_ms, kp_ep_tr_state **out, int32_t *rank,
                              int32_t *world, char *why, size_t why_n);
    /* Every rank contributes bytes; recv holds world * bytes, in rank order. */
    kp_ep_tr_result (*allgather)(kp_ep_tr_state *s, const void *send, size_t bytes, void *recv,
                                 int32_t timeout_ms, char *why, size_t why_n);
    /* Rank r's block j (bytes) goes to rank j's block r. */
    kp_ep_tr_result (*alltoall)(kp_ep_tr_state *s, const void *send, size_t bytes, void *recv,
                                int32_t timeout_ms, char *why, size_t why_n);
    /* Counts and displacements in rows of row_bytes, one per rank; each <= INT32_MAX. */
    kp_ep_tr_result (*alltoallv)(kp_ep_tr_state *s, const void *send, const int32_t *send_rows,
                                 const int32_t *send_displ, void *recv, const int32_t *recv_rows,
                                 const int32_t *recv_displ, size_t row_bytes, int32_t timeout_ms, char *why,
                                 size_t why_n);
    /* Waits up to timeout_ms for a pending collective, then releases what it can. */
    void (*destroy)(kp_ep_tr_state *s, int32_t timeout_ms);
    /* ---- version 2: device addresses on a native stream (NULL: host-staged only) ---- */
    /* Enqueues x on stream (cudaStream_t / hipStream_t; NULL on cpu) and returns. */
    kp_ep_tr_result (*exchange)(kp_ep_tr_state *s, const kp_ep_tr_xfer *x, void *stream, char *why, size_t why_n);
    /* Until stream_done(ctx) says 1: KP_EP_TR_OK; the library's asynchronous error or a
     * device error: KP_EP_TR_ERROR; timeout_ms (> 0) passed first: KP_EP_TR_TIMEOUT (a
     * peer never joined; the communicator is then the caller's to abort). */
    kp_ep_tr_result (*poll)(kp_ep_tr_state *s, kp_ep_tr_stream_done_fn stream_done, void *ctx,
                            int32_t timeout_ms, char *why, size_t why_n);
} kp_ep_transport;

typedef const kp_ep_transport *(*kp_ep_transport_entry_fn)(uint32_t abi_version);

#endif
