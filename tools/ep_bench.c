/*
 * tools/ep_bench.c — expert-parallel dispatch and combine timings under mpirun
 * (kport-ep-bench). DeepSeek-V3 shapes by default: hidden 7168, bf16, 256 experts,
 * top-8, random routing; tokens per rank from the command line (default 128).
 *
 *   mpirun -np 4 build/tools/kport-ep-bench [tokens...] [--iters N] [--capacity] [--nccl] [--async]
 *
 * --nccl: over a communicator of the libnccl.so.2 on the loader's path (made here, its
 * unique id sent with MPI), so normal mode takes the device path (core/ep_device.c): on
 * a GPU, NVIDIA's library; on cpu, tests/fake_nccl's (put build/tests/fake_nccl on
 * LD_LIBRARY_PATH and pass -x LD_LIBRARY_PATH to mpirun).
 * --async (implies --capacity --nccl): kp_ep_dispatch_async and the combine after it,
 * with no host sync; each timed call ends with kp_ep_wait (the bounded check a caller
 * makes at its next blocking point), so the times are comparable with the others.
 *
 * Per call: the slowest rank's time (each call is a collective). GB/s counts the rows a
 * rank sends (tokens x topk x hidden x 2 bytes), as DeepEP counts its dispatch and
 * combine bandwidth; its figures (NVLink EP8, 4096 tokens: 153 / 158 GB/s; low latency,
 * 128 tokens: 77 / 114 us) are printed as anchors.
 */
#include <kport.h>
#include <mpi.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIDDEN 7168
#define EXPERTS 256
#define TOPK 8

#define TRY(x)                                                                                   \
    do {                                                                                         \
        kp_status st_ = (x);                                                                     \
        if (st_ != KP_OK) {                                                                      \
            fprintf(stderr, "%s: %s: %s\n", #x, kp_status_str(st_), kp_last_error());           \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                        \
        }                                                                                        \
    } while (0)

static kp_tensor matrix(kp_buffer *b, kp_dtype dt, int64_t rows, int64_t cols) {
    kp_tensor t;
    int64_t shape[2] = {rows, cols};
    TRY(kp_tensor_init(&t, b, 0, dt, 2, shape, NULL));
    return t;
}

/* The slowest rank's seconds for one call of fn. */
static double timed_max(double local) {
    double m = 0;
    MPI_Allreduce(&local, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return m;
}

typedef struct { char internal[128]; } nccl_unique_id; /* ncclUniqueId */

/* A communicator of world ranks from libnccl.so.2 (dlopen'd: nothing links NCCL). */
static void *make_nccl_comm(int rank, int world) {
    void *lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    int (*get_id)(nccl_unique_id *) = NULL, (*init_rank)(void **, int, nccl_unique_id, int) = NULL;
    if (lib) {
        *(void **)&get_id = dlsym(lib, "ncclGetUniqueId");
        *(void **)&init_rank = dlsym(lib, "ncclCommInitRank");
    }
    nccl_unique_id id;
    memset(&id, 0, sizeof id);
    void *comm = NULL;
    if (!get_id || !init_rank || (rank == 0 && get_id(&id) != 0)) {
        fprintf(stderr, "kport-ep-bench: --nccl: libnccl.so.2 %s\n",
                lib ? "lacks ncclGetUniqueId/ncclCommInitRank or failed" : "not found");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (init_rank(&comm, world, id, rank) != 0) {
        fprintf(stderr, "kport-ep-bench: --nccl: ncclCommInitRank failed\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return comm; /* kept to the end of the process, as the library is */
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, world, iters = 5, capacity = 0, ntok = 0, nccl = 0, async = 0;
    int tokens[16];
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--capacity")) capacity = 1;
        else if (!strcmp(argv[i], "--nccl")) nccl = 1;
        else if (!strcmp(argv[i], "--async")) async = capacity = nccl = 1;
        else if (ntok < 16 && atoi(argv[i]) > 0) tokens[ntok++] = atoi(argv[i]);
    }
    if (!ntok) tokens[ntok++] = 128;
    if (EXPERTS % world || iters < 1) {
        if (rank == 0) fprintf(stderr, "needs a rank count dividing %d and --iters >= 1\n", EXPERTS);
        MPI_Finalize();
        return 2;
    }
    TRY(kp_init(NULL));
    kp_device *dev;
    kp_stream *s;
    kp_device_info di;
    TRY(kp_device_open(-1, &dev));
    TRY(kp_device_get_info(dev, &di));
    TRY(kp_stream_create(dev, &s));
    if (rank == 0)
        printf("kport-ep-bench: %d ranks on %s (%s), hidden %d bf16, %d experts, top-%d, %s mode, over %s\n"
               "%8s %14s %14s %14s %14s\n",
               world, di.name, di.backend, HIDDEN, EXPERTS, TOPK, async ? "capacity (kp_ep_dispatch_async, no host sync)" : capacity ? "capacity" : "normal",
               nccl ? "NCCL (libnccl.so.2)" : "MPI", "tokens",
               "dispatch us", "dispatch GB/s", "combine us", "combine GB/s");
    const int per_rank = EXPERTS / world;
    void *nccl_comm = nccl ? make_nccl_comm(rank, world) : NULL;
    for (int ti = 0; ti < ntok; ti++) {
        const int T = tokens[ti];
        MPI_Comm comm = MPI_COMM_WORLD;
        kp_ep_options o = {.comm_kind = nccl ? KP_EP_COMM_NCCL : KP_EP_COMM_MPI,
                           .comm = nccl ? (const void *)&nccl_comm : (const void *)&comm, .num_experts = EXPERTS,
                           .expert_begin = rank * per_rank, .expert_end = (rank + 1) * per_rank,
                           .hidden = HIDDEN, .dtype = KP_BF16, .topk = TOPK, .max_tokens_per_rank = T,
                           .mode = capacity ? KP_EP_MODE_CAPACITY : KP_EP_MODE_NORMAL,
                           .capacity_per_rank = T * TOPK, .timeout_ms = 60000};
        kp_ep *ep;
        kp_ep_info info;
        TRY(kp_ep_create(dev, &o, &ep));
        TRY(kp_ep_get_info(ep, &info));
        const size_t row = 2 * HIDDEN;
        uint16_t *x = malloc(row * T);
        int32_t *ids = malloc(sizeof(int32_t) * T * TOPK);
        float *w = malloc(sizeof(float) * T * TOPK);
        srand(11 + rank);
        for (size_t i = 0; i < (size_t)T * HIDDEN; i++) x[i] = (uint16_t)(0x3c00 + rand() % 256);
        for (int t = 0; t < T; t++) /* 8 distinct experts: a random start, stride 32 */
            for (int k = 0, e0 = rand() % EXPERTS; k < TOPK; k++) {
                ids[t * TOPK + k] = (e0 + k * (EXPERTS / TOPK)) % EXPERTS;
                w[t * TOPK + k] = 0.125f;
            }
        kp_buffer *bx, *bids, *bw, *brecv, *boff, *bout;
        TRY(kp_buffer_alloc(dev, row * T, &bx));
        TRY(kp_buffer_alloc(dev, sizeof(int32_t) * T * TOPK, &bids));
        TRY(kp_buffer_alloc(dev, sizeof(float) * T * TOPK, &bw));
        TRY(kp_buffer_alloc(dev, row * info.max_recv_rows, &brecv));
        TRY(kp_buffer_alloc(dev, sizeof(int32_t) * (per_rank + 1), &boff));
        TRY(kp_buffer_alloc(dev, row * T, &bout));
        TRY(kp_buffer_write(s, bx, 0, x, row * T));
        TRY(kp_buffer_write(s, bids, 0, ids, sizeof(int32_t) * T * TOPK));
        TRY(kp_buffer_write(s, bw, 0, w, sizeof(float) * T * TOPK));
        kp_ep_dispatch_params dp = {.x = matrix(bx, KP_BF16, T, HIDDEN), .topk_ids = matrix(bids, KP_I32, T, TOPK),
                                    .recv_x = matrix(brecv, KP_BF16, info.max_recv_rows, HIDDEN)};
        int64_t off_shape[1] = {per_rank + 1};
        TRY(kp_tensor_init(&dp.expert_offsets, boff, 0, KP_I32, 1, off_shape, NULL));
        /* identity experts: the received rows go straight back */
        kp_ep_combine_params cp = {.expert_out = dp.recv_x, .topk_weights = matrix(bw, KP_F32, T, TOPK),
                                   .out = matrix(bout, KP_BF16, T, HIDDEN)};
        double best_d = 1e30, best_c = 1e30;
        for (int it = 0; it <= iters; it++) { /* the first call warms up */
            kp_ep_dispatch_result r;
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            if (async) {
                TRY(kp_ep_dispatch_async(ep, s, &dp, NULL));
                TRY(kp_ep_wait(ep, s));
            } else {
                TRY(kp_ep_dispatch(ep, s, &dp, &r));
            }
            double td = timed_max(MPI_Wtime() - t0);
            MPI_Barrier(MPI_COMM_WORLD);
            t0 = MPI_Wtime();
            TRY(kp_ep_combine(ep, s, &cp));
            if (async) TRY(kp_ep_wait(ep, s));
            TRY(kp_stream_sync(s));
            double tc = timed_max(MPI_Wtime() - t0);
            if (it && td < best_d) best_d = td;
            if (it && tc < best_c) best_c = tc;
        }
        const double bytes = (double)T * TOPK * row;
        if (rank == 0)
            printf("%8d %14.1f %14.3f %14.1f %14.3f\n", T, best_d * 1e6, bytes / best_d * 1e-9, best_c * 1e6,
                   bytes / best_c * 1e-9);
        kp_buffer *all[] = {bx, bids, bw, brecv, boff, bout};
        for (int i = 0; i < 6; i++) kp_buffer_free(all[i]);
        TRY(kp_ep_destroy(ep));
        free(x), free(ids), free(w);
    }
    if (rank == 0)
        printf("anchors (issue 19): DeepEP NVLink EP8, 4096 tokens: dispatch 153 GB/s, combine 158 GB/s; "
               "DeepEP low latency EP8, 128 tokens: dispatch 77 us, combine 114 us; MORI MI300X EP8: 307 / 330 GB/s\n");
    TRY(kp_stream_destroy(s));
    TRY(kp_device_close(dev));
    TRY(kp_shutdown());
    MPI_Finalize();
    return 0;
}
