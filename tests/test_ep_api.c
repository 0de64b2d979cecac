/*
 * tests/test_ep_api.c — kp_ep_* argument checks that need no MPI run (the exchanges
 * themselves are tested under mpirun by tests/ep/test_ep.c, ci/ep-test).
 */
#include "kp_test.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

static kp_device *open_cpu(void) {
    CHECK_OK(kp_init(NULL));
    setenv("KPORT_BACKEND", "cpu", 1);
    kp_device *d = NULL;
    CHECK_OK(kp_device_open(-1, &d));
    return d;
}

static kp_ep_options good_options(const void *comm) {
    kp_ep_options o = {.comm_kind = KP_EP_COMM_MPI, .comm = comm, .num_experts = 8, .expert_begin = 0,
                       .expert_end = 8, .hidden = 16, .dtype = KP_BF16, .topk = 2, .max_tokens_per_rank = 4,
                       .mode = KP_EP_MODE_NORMAL};
    return o;
}

KP_TEST(ep_create_rejects_bad_options) {
    kp_device *d = open_cpu();
    long fake_comm = 0;
    kp_ep *ep = (kp_ep *)&fake_comm; /* must be cleared on failure */
    kp_ep_options o = good_options(&fake_comm);
    CHECK_ERR(kp_ep_create(NULL, &o, &ep), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK_ERR(kp_ep_create(d, NULL, &ep), KP_ERR_INVALID_ARGUMENT, "opt is NULL");
    CHECK_ERR(kp_ep_create(d, &o, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
#define BAD(field, value, code, needle)                          \
    do {                                                         \
        o = good_options(&fake_comm);                            \
        o.field = value;                                         \
        ep = (kp_ep *)&fake_comm;                                \
        CHECK_ERR(kp_ep_create(d, &o, &ep), code, needle);       \
        CHECK(ep == NULL);                                       \
    } while (0)
    BAD(comm_kind, (kp_ep_comm_kind)7, KP_ERR_INVALID_ARGUMENT, "comm_kind 7");
    BAD(comm, NULL, KP_ERR_INVALID_ARGUMENT, "comm is NULL");
    BAD(num_experts, 0, KP_ERR_INVALID_ARGUMENT, "num_experts 0");
    BAD(expert_end, 9, KP_ERR_INVALID_ARGUMENT, "expert range [0, 9)");
    BAD(expert_begin, -1, KP_ERR_INVALID_ARGUMENT, "expert range [-1, 8)");
    BAD(hidden, 0, KP_ERR_INVALID_ARGUMENT, "hidden 0");
    BAD(dtype, KP_I32, KP_ERR_INVALID_DTYPE, "dtype i32");
    BAD(topk, 33, KP_ERR_INVALID_ARGUMENT, "topk 33");
    BAD(max_tokens_per_rank, 0, KP_ERR_INVALID_ARGUMENT, "max_tokens_per_rank 0");
    BAD(mode, (kp_ep_mode)5, KP_ERR_INVALID_ARGUMENT, "mode 5");
    BAD(mode, KP_EP_MODE_CAPACITY, KP_ERR_INVALID_ARGUMENT, "capacity_per_rank 0");
    BAD(timeout_ms, -1, KP_ERR_INVALID_ARGUMENT, "timeout_ms -1");
#undef BAD
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}

/* The NCCL/RCCL transports: their plugin is found on the plugin path only, and it
 * dlopens libnccl.so.2 / librccl.so.1 at create (none here: CI machines have neither;
 * tests/ep runs the NCCL path against tests/fake_nccl). */
KP_TEST(ep_nccl_rccl_library_missing_is_unavailable) {
    setenv("KPORT_PLUGIN_PATH", "/nonexistent-kport-dir", 1);
    kp_device *d = open_cpu();
    void *fake_comm = NULL;
    kp_ep_options o = good_options(&fake_comm);
    kp_ep *ep = (kp_ep *)&fake_comm;
    o.comm_kind = KP_EP_COMM_NCCL;
    CHECK_ERR(kp_ep_create(d, &o, &ep), KP_ERR_UNAVAILABLE, "NCCL transport is unavailable: libkport-ep-nccl.so");
    CHECK(ep == NULL);
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
    setenv("KPORT_PLUGIN_PATH", KPORT_EP_NCCL_DIR, 1);
    unsetenv("LD_LIBRARY_PATH"); /* (read at exec; a fake libnccl on it would still be found) */
    d = open_cpu();
    void *probe = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!probe) {
        CHECK_ERR(kp_ep_create(d, &o, &ep), KP_ERR_UNAVAILABLE, "libnccl.so.2 not found");
        CHECK(ep == NULL);
    } else {
        dlclose(probe);
    }
    o.comm_kind = KP_EP_COMM_RCCL;
    probe = dlopen("librccl.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!probe) {
        CHECK_ERR(kp_ep_create(d, &o, &ep), KP_ERR_UNAVAILABLE, "librccl.so.1 not found");
        CHECK(ep == NULL);
    } else {
        dlclose(probe);
    }
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}

/* The transport plugin is found on the plugin path only; found, it refuses a process
 * that has not initialised MPI (nothing is exchanged). */
KP_TEST(ep_transport_missing_or_mpi_not_initialised) {
    setenv("KPORT_PLUGIN_PATH", "/nonexistent-kport-dir", 1);
    kp_device *d = open_cpu();
    long fake_comm = 0;
    kp_ep_options o = good_options(&fake_comm);
    kp_ep *ep = NULL;
    CHECK_ERR(kp_ep_create(d, &o, &ep), KP_ERR_UNAVAILABLE, "libkport-ep-mpi.so not found on the plugin path");
    CHECK(ep == NULL);
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
    if (!KPORT_EP_MPI_DIR[0]) KP_SKIP("built without MPI: no libkport-ep-mpi.so to load");
    setenv("KPORT_PLUGIN_PATH", KPORT_EP_MPI_DIR, 1);
    d = open_cpu();
    CHECK_ERR(kp_ep_create(d, &o, &ep), KP_ERR_UNAVAILABLE, "MPI is not initialised");
    CHECK(ep == NULL);
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}

KP_TEST(ep_calls_reject_null) {
    kp_ep_dispatch_params dp;
    kp_ep_dispatch_result r;
    kp_ep_combine_params cp;
    kp_ep_info info;
    memset(&dp, 0, sizeof dp);
    memset(&cp, 0, sizeof cp);
    CHECK_ERR(kp_ep_dispatch(NULL, NULL, &dp, &r), KP_ERR_INVALID_ARGUMENT, "ep is NULL");
    CHECK_ERR(kp_ep_combine(NULL, NULL, &cp), KP_ERR_INVALID_ARGUMENT, "ep is NULL");
    CHECK_ERR(kp_ep_get_info(NULL, &info), KP_ERR_INVALID_ARGUMENT, "ep is NULL");
    CHECK_ERR(kp_ep_destroy(NULL), KP_ERR_INVALID_ARGUMENT, "ep is NULL");
    kp_moe_forward_ep_params fp;
    size_t bytes = 0;
    memset(&fp, 0, sizeof fp);
    CHECK_ERR(kp_moe_forward_ep(NULL, NULL, &fp, &r), KP_ERR_INVALID_ARGUMENT, "ep is NULL");
    CHECK_ERR(kp_moe_forward_ep_workspace_size(NULL, &fp, &bytes), KP_ERR_INVALID_ARGUMENT, "ep is NULL");
}
