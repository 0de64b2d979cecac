/*
 * tests/ep/ep_test.h — what the EP test files share (tests/ep/test_ep.c owns these).
 */
#ifndef KPORT_TESTS_EP_TEST_H
#define KPORT_TESTS_EP_TEST_H

#include <kport.h>
#include <mpi.h>

#include <stdint.h>

extern int rank, world;
extern int n_pass, n_fail, n_skip;
extern kp_stream *stream; /* of the device under test */
extern uint64_t rng_state;

/* A check passes when it passes on every rank (collective); rank 0 prints PASS/FAIL. */
void report(const char *backend, const char *name, int ok_local, const char *detail);
uint32_t rng(void);
float frand(void); /* in [-1, 1] */
uint16_t to_bf16(float f);
float from_bf16(uint16_t h);
void fill_rows(void *dst, kp_dtype dt, size_t n); /* f32 or bf16 values of frand() */

/* tests/ep/test_ep_forward.c: kp_moe_forward_ep against kp_moe_forward. */
void run_forward_ep_cases(const char *backend, kp_device *dev);
/* The same layer over the NCCL transport against tests/fake_nccl (cpu backend only). */
void run_nccl_cases(const char *backend, kp_device *dev);
/* tests/ep/test_ep.c's dispatch/combine cases (scale experts, bitwise) over the NCCL
 * transport; polls: the fake's ncclCommGetAsyncError count (the device path polls). */
void run_cases_over_nccl(const char *backend, kp_device *dev, const void *nccl_comm, long (*polls)(void));
/* tests/ep/test_ep.c's helpers the other files share. */
double now_s(void);
kp_ep_options base_options(MPI_Comm *comm); /* MPI, normal mode, 4 experts per rank, hidden 16 f32 */
kp_status tensor2(kp_tensor *t, kp_buffer *b, size_t off, kp_dtype dt, int64_t r, int64_t c);
/* tests/ep/test_ep_async.c: kp_ep_dispatch_async with a rank that never joins (on a
 * communicator it spoils), and its refusals. */
void run_async_timeout(const char *backend, kp_device *dev, const void *nccl_comm);
/* A rank that never joins, over a fake-NCCL handle ep with timeout 1 s (after its
 * collective set-up, whose status is setup): rank 0 never calls; on the others call
 * (the async op, named name) or the kp_ep_wait after it ends in KP_ERR_BACKEND within
 * 10 s, and a second call is then refused ("destroy"). Collective; 1 when it passes. */
int ep_never_joins(kp_ep *ep, kp_status setup, kp_status (*call)(kp_ep *, const void *), const void *params,
                   const char *name, char *detail, size_t dn);
/* The handles kp_ep_dispatch_async and kp_moe_forward_ep_async refuse with
 * KP_ERR_UNSUPPORTED (an MPI handle, a normal-mode one), and a word of each message. */
typedef struct ep_async_refusal {
    kp_ep_comm_kind kind;
    kp_ep_mode mode;
    const char *needle;
} ep_async_refusal;
extern const ep_async_refusal ep_async_refusals[2];
void run_async_bad_calls(const char *backend, kp_device *dev, const void *nccl_comm);
/* tests/ep/test_ep_forward_async.c: kp_moe_forward_ep_async over the fake libnccl (cpu);
 * the timeout case spoils its communicator (pass a fresh one, its last use). */
void run_forward_async_cases(const char *backend, kp_device *dev, const void *nccl_comm);
void run_forward_async_timeout(const char *backend, kp_device *dev, const void *nccl_comm);

#endif
