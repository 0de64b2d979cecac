/*
 * tests/test_ep_api.c — kp_ep_* argument checks that need no MPI run (the exchanges
 * themselves are tested under mpirun by tests/ep/test_ep.c, ci/ep-test).
 */
#include "kp_test.h"

#include <dlfcn.h>
#include <math.h>
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

/* ---- issue 19 on a GPU: the real libnccl.so.2, one rank -------------------------- */

typedef struct { char internal[128]; } real_nccl_id; /* ncclUniqueId */

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* On a cuda device with NVIDIA's libnccl.so.2 (ci/gpu-check on the H200): a one-rank
 * communicator made here, kport borrows it, and the layer takes the device path (NCCL
 * on cuda has no other). dispatch must give x's rows sorted stably by expert (bitwise)
 * with their offsets, nothing written past them; combine with the experts the identity
 * must give sum_j w[t, j] * x[t] (within bf16 rounding). Then capacity mode through
 * kp_ep_dispatch_async (the cuda ep_capacity kernels, with drops) and its combine. Skipped, saying why, without a
 * cuda device or with no real libnccl.so.2 (tests/fake_nccl's is not it). */
KP_TEST(ep_cuda_nccl_one_rank_real_library) {
    enum { T = 5, K = 2, E = 8, HD = 64, MAXT = 8 };
    const char *old = getenv("KPORT_PLUGIN_PATH");
    char path[4096];
    snprintf(path, sizeof path, "%s%s%s", old ? old : "", old && old[0] ? ":" : "", KPORT_EP_NCCL_DIR);
    setenv("KPORT_PLUGIN_PATH", path, 1);
    void *lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) KP_SKIP("no libnccl.so.2 on the loader's path (ci/gpu-check finds the toolkit's or pip's)");
    const char *(*err_str)(int) = NULL;
    int (*get_id)(real_nccl_id *) = NULL, (*init_rank)(void **, int, real_nccl_id, int) = NULL,
        (*destroy)(void *) = NULL;
    *(void **)&err_str = dlsym(lib, "ncclGetErrorString");
    *(void **)&get_id = dlsym(lib, "ncclGetUniqueId");
    *(void **)&init_rank = dlsym(lib, "ncclCommInitRank");
    *(void **)&destroy = dlsym(lib, "ncclCommDestroy");
    if (!err_str || !get_id || !init_rank || !destroy || strstr(err_str(0), "(fake)")) {
        dlclose(lib);
        KP_SKIP("libnccl.so.2 is tests/fake_nccl's or lacks the calls: this test needs NVIDIA's");
    }
    CHECK_OK(kp_init(NULL));
    kp_device *d = NULL;
    for (int i = 0; i < kp_device_count() && !d; i++) {
        kp_device_info info;
        if (kp_device_info_get(i, &info) == KP_OK && strcmp(info.backend, "cuda") == 0) CHECK_OK(kp_device_open(i, &d));
    }
    if (!d) {
        CHECK_OK(kp_shutdown());
        dlclose(lib);
        KP_SKIP("no cuda device (the H200 runs it: ci/gpu-check)");
    }
    real_nccl_id id;
    void *comm = NULL;
    int r = get_id(&id);
    if (r == 0) r = init_rank(&comm, 1, id, 0); /* the current CUDA device: 0, kport's first */
    CHECK_MSG(r == 0, "ncclCommInitRank (one rank): %s (%d)", err_str(r), r);

    /* data: bf16 x, distinct experts per token, f32 weights */
    uint16_t x[T * HD], rows[MAXT * K * HD], out[T * HD];
    int32_t ids[T * K], offs[E + 1];
    float w[T * K];
    uint64_t s = 12345;
    for (int i = 0; i < T * HD; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float v = (float)((s >> 33) % 2001) / 1000.0f - 1.0f;
        uint32_t u;
        memcpy(&u, &v, 4);
        x[i] = (uint16_t)(u >> 16); /* truncation: any bf16 value will do */
    }
    for (int t = 0; t < T; t++)
        for (int j = 0; j < K; j++) ids[t * K + j] = (t * 3 + j * 5) % E, w[t * K + j] = 0.25f + 0.5f * (float)j;

    kp_ep_options o = good_options(&comm);
    o.comm_kind = KP_EP_COMM_NCCL;
    o.hidden = HD;
    o.topk = K;
    o.max_tokens_per_rank = MAXT;
    o.timeout_ms = 20000;
    kp_ep *ep = NULL;
    CHECK_OK(kp_ep_create(d, &o, &ep));
    kp_stream *st = NULL;
    CHECK_OK(kp_stream_create(d, &st));
    kp_buffer *bx, *bids, *bw, *brecv, *boff, *bout;
    CHECK_OK(kp_buffer_alloc(d, sizeof x, &bx));
    CHECK_OK(kp_buffer_alloc(d, sizeof ids, &bids));
    CHECK_OK(kp_buffer_alloc(d, sizeof w, &bw));
    CHECK_OK(kp_buffer_alloc(d, sizeof rows, &brecv));
    CHECK_OK(kp_buffer_alloc(d, sizeof offs, &boff));
    CHECK_OK(kp_buffer_alloc(d, sizeof out, &bout));
    CHECK_OK(kp_buffer_write(st, bx, 0, x, sizeof x));
    CHECK_OK(kp_buffer_write(st, bids, 0, ids, sizeof ids));
    CHECK_OK(kp_buffer_write(st, bw, 0, w, sizeof w));
    memset(rows, 0xff, sizeof rows); /* poison: NaN */
    memset(out, 0xff, sizeof out);
    CHECK_OK(kp_buffer_write(st, brecv, 0, rows, sizeof rows));
    CHECK_OK(kp_buffer_write(st, bout, 0, out, sizeof out));
    kp_ep_dispatch_params dp = {0};
    const int64_t xs[2] = {T, HD}, is[2] = {T, K}, rs[2] = {MAXT * K, HD}, os[1] = {E + 1};
    CHECK_OK(kp_tensor_init(&dp.x, bx, 0, KP_BF16, 2, xs, NULL));
    CHECK_OK(kp_tensor_init(&dp.topk_ids, bids, 0, KP_I32, 2, is, NULL));
    CHECK_OK(kp_tensor_init(&dp.recv_x, brecv, 0, KP_BF16, 2, rs, NULL));
    CHECK_OK(kp_tensor_init(&dp.expert_offsets, boff, 0, KP_I32, 1, os, NULL));
    kp_ep_dispatch_result res = {0};
    CHECK_OK(kp_ep_dispatch(ep, st, &dp, &res));
    CHECK(res.recv_rows == T * K && res.dropped == 0 && res.dropped_all == 0);
    CHECK_OK(kp_buffer_read(st, brecv, 0, rows, sizeof rows));
    CHECK_OK(kp_buffer_read(st, boff, 0, offs, sizeof offs));
    int row = 0;
    for (int e = 0; e < E; e++) {
        CHECK_MSG(offs[e] == row, "expert_offsets[%d] = %d, expected %d", e, offs[e], row);
        for (int i = 0; i < T * K; i++)
            if (ids[i] == e) {
                CHECK_MSG(memcmp(rows + row * HD, x + (i / K) * HD, HD * 2) == 0, "recv_x row %d is not x's row %d",
                          row, i / K);
                row++;
            }
    }
    CHECK(offs[E] == T * K);
    for (int i = T * K * HD; i < MAXT * K * HD; i++) CHECK_MSG(rows[i] == 0xffff, "recv_x written past its rows");
    kp_ep_combine_params cp = {0};
    const int64_t eo[2] = {T * K, HD};
    CHECK_OK(kp_tensor_init(&cp.expert_out, brecv, 0, KP_BF16, 2, eo, NULL)); /* the identity experts */
    CHECK_OK(kp_tensor_init(&cp.topk_weights, bw, 0, KP_F32, 2, is, NULL));
    CHECK_OK(kp_tensor_init(&cp.out, bout, 0, KP_BF16, 2, xs, NULL));
    CHECK_OK(kp_ep_combine(ep, st, &cp));
    CHECK_OK(kp_buffer_read(st, bout, 0, out, sizeof out));
    for (int t = 0; t < T; t++)
        for (int c = 0; c < HD; c++) {
            const float xv = bf16_to_f32(x[t * HD + c]), want = (w[t * K] + w[t * K + 1]) * xv,
                        got = bf16_to_f32(out[t * HD + c]);
            CHECK_MSG(got - want <= 1e-2f * (1 + (want < 0 ? -want : want)) &&
                          want - got <= 1e-2f * (1 + (want < 0 ? -want : want)),
                      "out[%d, %d] = %g, expected %g", t, c, (double)got, (double)want);
        }
    CHECK_OK(kp_ep_destroy(ep));

    /* the same routing through kp_ep_dispatch_async (capacity mode, no host sync: the
     * cuda backend's ep_capacity kernels), CAP < T * K so that two pairs are dropped:
     * the first CAP pairs in (expert, token, slot) order are received and summed */
    enum { CAP = 8 };
    o.mode = KP_EP_MODE_CAPACITY;
    o.capacity_per_rank = CAP;
    kp_ep *epc = NULL;
    CHECK_OK(kp_ep_create(d, &o, &epc));
    kp_buffer *bdrop = NULL;
    int32_t drops[2] = {-1, -1};
    CHECK_OK(kp_buffer_alloc(d, sizeof drops, &bdrop));
    memset(rows, 0xff, sizeof rows);
    memset(out, 0xff, sizeof out);
    CHECK_OK(kp_buffer_write(st, brecv, 0, rows, sizeof rows));
    CHECK_OK(kp_buffer_write(st, bout, 0, out, sizeof out));
    kp_tensor drop_t;
    const int64_t two[1] = {2}, ceo[2] = {CAP, HD};
    CHECK_OK(kp_tensor_init(&drop_t, bdrop, 0, KP_I32, 1, two, NULL));
    CHECK_OK(kp_ep_dispatch_async(epc, st, &dp, &drop_t));
    CHECK_OK(kp_tensor_init(&cp.expert_out, brecv, 0, KP_BF16, 2, ceo, NULL));
    CHECK_OK(kp_ep_combine(epc, st, &cp));
    CHECK_OK(kp_ep_wait(epc, st));
    CHECK_OK(kp_buffer_read(st, bdrop, 0, drops, sizeof drops));
    CHECK_OK(kp_buffer_read(st, brecv, 0, rows, sizeof rows));
    CHECK_OK(kp_buffer_read(st, boff, 0, offs, sizeof offs));
    CHECK_OK(kp_buffer_read(st, bout, 0, out, sizeof out));
    CHECK_MSG(drops[0] == T * K - CAP && drops[1] == T * K - CAP, "async drops {%d, %d}, expected %d", drops[0],
              drops[1], T * K - CAP);
    int kept[T * K] = {0};
    row = 0;
    for (int e = 0; e < E; e++) {
        CHECK_MSG(offs[e] == row, "async expert_offsets[%d] = %d, expected %d", e, offs[e], row);
        for (int i = 0; i < T * K; i++)
            if (ids[i] == e && row < CAP) {
                CHECK_MSG(memcmp(rows + row * HD, x + (i / K) * HD, HD * 2) == 0,
                          "async recv_x row %d is not x's row %d", row, i / K);
                kept[i] = 1, row++;
            }
    }
    CHECK(offs[E] == CAP);
    for (int i = CAP * HD; i < MAXT * K * HD; i++) CHECK_MSG(rows[i] == 0xffff, "async recv_x written past its rows");
    for (int t = 0; t < T; t++)
        for (int c = 0; c < HD; c++) {
            const float xv = bf16_to_f32(x[t * HD + c]), got = bf16_to_f32(out[t * HD + c]);
            const float want = (kept[t * K] ? w[t * K] : 0.0f) * xv + (kept[t * K + 1] ? w[t * K + 1] : 0.0f) * xv;
            CHECK_MSG(got - want <= 1e-2f * (1 + (want < 0 ? -want : want)) &&
                          want - got <= 1e-2f * (1 + (want < 0 ? -want : want)),
                      "async out[%d, %d] = %g, expected %g", t, c, (double)got, (double)want);
        }
    CHECK_OK(kp_ep_destroy(epc));
    kp_buffer *all[] = {bx, bids, bw, brecv, boff, bout, bdrop};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) CHECK_OK(kp_buffer_free(all[i]));
    CHECK_OK(kp_stream_destroy(st));
    destroy(comm);
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}

/* ---- kp_moe_forward_ep_async on one rank over tests/fake_nccl ------------------- */

typedef struct { char internal[128]; } fake_nccl_id; /* ncclUniqueId */

/* The fake libnccl.so.2, loaded by path with RTLD_GLOBAL before kp_ep_create, so that
 * the NCCL transport's dlopen("libnccl.so.2") finds it by its soname; a one-rank
 * communicator. */
static void *fake_nccl_comm(void **lib) {
    *lib = dlopen(KPORT_FAKE_NCCL_DIR "/libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
    CHECK_MSG(*lib, "dlopen %s: %s", KPORT_FAKE_NCCL_DIR "/libnccl.so.2", dlerror());
    int (*get_id)(fake_nccl_id *) = NULL, (*init_rank)(void **, int, fake_nccl_id, int) = NULL;
    *(void **)&get_id = dlsym(*lib, "ncclGetUniqueId");
    *(void **)&init_rank = dlsym(*lib, "ncclCommInitRank");
    CHECK(get_id && init_rank);
    fake_nccl_id id;
    memset(&id, 0, sizeof id);
    CHECK_INT_EQ(get_id(&id), 0);
    void *comm = NULL;
    CHECK_INT_EQ(init_rank(&comm, 1, id, 0), 0);
    return comm;
}

/* One rank holding every expert, capacity T*k (nothing dropped, every received row an
 * expert's): kp_moe_forward_ep_async moves kp_host_sync_count by 0, writes dropped =
 * {0, 0} and every element of out (poisoned, guarded), and equals kp_moe_forward within
 * 2 ulps + 2^-20 of the row's largest value (f32; the combine sums the routed slots,
 * then adds the shared row). Then capacity 3: dropped = {T*k - 3, T*k - 3}. ci/mutants
 * breaks the one-hot router constants and the shared row's combine against it. */
KP_TEST(ep_forward_async_one_rank_fake_nccl) {
    setenv("KPORT_PLUGIN_PATH", KPORT_EP_NCCL_DIR, 1);
    kp_device *d = open_cpu();
    void *lib = NULL, *comm = fake_nccl_comm(&lib);
    enum { E = 8, H = 32, I = 16, IS = 8, K = 2, T = 5, G = 64 };
    static float x[T * H], logits[T * E], w13[E * 2 * I * H], w2[E * H * I], w13s[2 * IS * H], w2s[H * IS];
    uint64_t rs = 99;
    float *all[] = {x, logits, w13, w2, w13s, w2s};
    const size_t n[] = {T * H, T * E, E * 2 * I * H, E * H * I, 2 * IS * H, H * IS};
    for (int a = 0; a < 6; a++)
        for (size_t i = 0; i < n[a]; i++) {
            rs = rs * 6364136223846793005ull + 1442695040888963407ull;
            all[a][i] = (float)((double)(rs >> 40) / (double)(1ull << 24) * 2.0 - 1.0) * (a == 1 ? 3.0f : 1.0f);
        }
    kp_buffer *b[6];
    for (int a = 0; a < 6; a++) {
        CHECK_OK(kp_buffer_alloc(d, n[a] * 4, &b[a]));
        CHECK_OK(kp_buffer_write(NULL, b[a], 0, all[a], n[a] * 4));
    }
    const int64_t sx[2] = {T, H}, sl[2] = {T, E}, s13[3] = {E, 2 * I, H}, s2[3] = {E, H, I}, s13s[2] = {2 * IS, H},
                  s2s[2] = {H, IS}, sd[1] = {2};
    kp_moe_forward_ep_params p = {.routing = {.topk = K, .n_group = 1, .topk_group = 1,
                                              .scoring = KP_MOE_SCORING_SOFTMAX, .renormalize = 1,
                                              .route_scale = 1.0f}};
    CHECK_OK(kp_tensor_init(&p.x, b[0], 0, KP_F32, 2, sx, NULL));
    CHECK_OK(kp_tensor_init(&p.router_logits, b[1], 0, KP_F32, 2, sl, NULL));
    CHECK_OK(kp_tensor_init(&p.w13, b[2], 0, KP_F32, 3, s13, NULL));
    CHECK_OK(kp_tensor_init(&p.w2, b[3], 0, KP_F32, 3, s2, NULL));
    CHECK_OK(kp_tensor_init(&p.shared_w13, b[4], 0, KP_F32, 2, s13s, NULL));
    CHECK_OK(kp_tensor_init(&p.shared_w2, b[5], 0, KP_F32, 2, s2s, NULL));
    /* the reference: kp_moe_forward */
    kp_buffer *bref = NULL, *bwsr = NULL, *bout = NULL, *bws = NULL, *bdrop = NULL;
    kp_moe_forward_params f = {.x = p.x, .router_logits = p.router_logits, .w13 = p.w13, .w2 = p.w2,
                               .shared_w13 = p.shared_w13, .shared_w2 = p.shared_w2, .routing = p.routing};
    size_t wsr = 0, ws = 0;
    CHECK_OK(kp_buffer_alloc(d, T * H * 4, &bref));
    CHECK_OK(kp_tensor_init(&f.out, bref, 0, KP_F32, 2, sx, NULL));
    CHECK_OK(kp_moe_forward_workspace_size(d, &f, &wsr));
    CHECK_OK(kp_buffer_alloc(d, wsr, &bwsr));
    f.workspace = bwsr;
    kp_stream *s = NULL;
    CHECK_OK(kp_stream_create(d, &s));
    CHECK_OK(kp_moe_forward(s, &f));
    float ref[T * H], got[T * H + 2 * G];
    CHECK_OK(kp_buffer_read(s, bref, 0, ref, sizeof ref));
    for (int cap = T * K; cap >= 3; cap = cap == 3 ? 0 : 3) {
        kp_ep_options o = {.comm_kind = KP_EP_COMM_NCCL, .comm = &comm, .num_experts = E, .expert_begin = 0,
                           .expert_end = E, .hidden = H, .dtype = KP_F32, .topk = K, .max_tokens_per_rank = T,
                           .mode = KP_EP_MODE_CAPACITY, .capacity_per_rank = cap, .timeout_ms = 5000};
        kp_ep *ep = NULL;
        CHECK_OK(kp_ep_create(d, &o, &ep));
        memset(got, 0xff, sizeof got); /* NaN */
        CHECK_OK(kp_buffer_alloc(d, sizeof got, &bout));
        CHECK_OK(kp_buffer_write(s, bout, 0, got, sizeof got));
        CHECK_OK(kp_tensor_init(&p.out, bout, G * 4, KP_F32, 2, sx, NULL));
        CHECK_OK(kp_moe_forward_ep_workspace_size(ep, &p, &ws));
        CHECK_OK(kp_buffer_alloc(d, ws + 36, &bws));
        p.workspace = bws, p.workspace_offset = 36;
        int32_t drop[4] = {-7, -7, -7, -7};
        CHECK_OK(kp_buffer_alloc(d, sizeof drop, &bdrop));
        CHECK_OK(kp_buffer_write(s, bdrop, 0, drop, sizeof drop));
        kp_tensor dt;
        CHECK_OK(kp_tensor_init(&dt, bdrop, 4, KP_I32, 1, sd, NULL));
        const uint64_t syncs = kp_host_sync_count();
        CHECK_OK(kp_moe_forward_ep_async(ep, s, &p, &dt));
        CHECK_INT_EQ(kp_host_sync_count() - syncs, 0);
        CHECK_OK(kp_ep_wait(ep, s));
        CHECK_OK(kp_buffer_read(s, bdrop, 0, drop, sizeof drop));
        CHECK_INT_EQ(drop[0], -7);
        CHECK_INT_EQ(drop[3], -7);
        CHECK_INT_EQ(drop[1], T * K - cap);
        CHECK_INT_EQ(drop[2], T * K - cap);
        CHECK_OK(kp_buffer_read(s, bout, 0, got, sizeof got));
        for (int i = 0; i < G; i++) CHECK_MSG(isnan(got[i]) && isnan(got[G + T * H + i]), "a guard of out changed");
        for (int t = 0; t < T; t++) {
            float rowmax = 0;
            for (int j = 0; j < H; j++) rowmax = fmaxf(rowmax, fabsf(ref[t * H + j]));
            for (int j = 0; j < H; j++) {
                const float a = got[G + t * H + j], r = ref[t * H + j];
                CHECK_MSG(!isnan(a), "out[%d, %d] was not written", t, j);
                if (cap < T * K) continue; /* dropped pairs count as zero */
                const float tol = 2 * (nextafterf(fabsf(r), INFINITY) - fabsf(r)) + ldexpf(rowmax, -20);
                CHECK_MSG(fabsf(a - r) <= tol, "out[%d, %d]: async %.9g, kp_moe_forward %.9g (tolerance %.3g)", t,
                          j, a, r, tol);
            }
        }
        CHECK_OK(kp_ep_destroy(ep));
        kp_buffer_free(bout), kp_buffer_free(bws), kp_buffer_free(bdrop);
    }
    for (int a = 0; a < 6; a++) kp_buffer_free(b[a]);
    kp_buffer_free(bref), kp_buffer_free(bwsr);
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}
