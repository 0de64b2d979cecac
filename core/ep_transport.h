/*
 * core/ep_transport.h — the interface between the core's expert-parallel layer
 * (core/ep.c) and a transport plugin (libkport-ep-<name>.so, e.g. backends/ep_mpi).
 *
 * A transport moves host bytes between the ranks of the caller's communicator. The
 * core never links MPI/NCCL/RCCL: it dlopens the plugin, which links the library.
 * Every collective is bounded by a deadline: a peer that never joins makes the call
 * return KP_EP_TR_TIMEOUT instead of hanging; the transport is then "broken" (the
 * collective may still be pending) and the core refuses further calls on it.
 */
#ifndef KPORT_EP_TRANSPORT_H
#define KPORT_EP_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#define KP_EP_TRANSPORT_ABI_VERSION 1u
#define KP_EP_TRANSPORT_ENTRY_SYMBOL "kport_ep_transport_entry"

typedef enum kp_ep_tr_result {
    KP_EP_TR_OK = 0,
    KP_EP_TR_TIMEOUT = 1, /* the deadline passed before every rank joined */
    KP_EP_TR_ERROR = 2    /* the library reported an error (message in why) */
} kp_ep_tr_result;

typedef struct kp_ep_tr_state kp_ep_tr_state;

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
} kp_ep_transport;

typedef const kp_ep_transport *(*kp_ep_transport_entry_fn)(uint32_t abi_version);

#endif
