/*
 * examples/ep_moe.c — an expert-parallel MoE layer over MPI with kport.
 *
 *   mpirun -np 4 build/tools/ep_moe          (add --oversubscribe on a small machine)
 *
 * A scaled-down DeepSeek-V3 layer: 32 routed experts (SwiGLU MLPs, hidden 256, inter
 * 128), 8 per rank, group-limited top-4 routing (8 groups, 4 kept, sigmoid scores plus
 * a selection bias, route scale 2.5) and one shared expert. Each rank holds its own
 * tokens, its router logits, its 8 experts' weights and the shared expert, and calls
 * kp_moe_forward_ep once: gate, dispatch to the ranks holding the chosen experts, the
 * local experts on what arrived, combine back in slot order, plus the shared expert.
 * Rank 0 prints what moved.
 *
 *   mpirun -np 4 -x LD_LIBRARY_PATH build/tools/ep_moe --async
 *
 * takes capacity mode with no host sync instead (what a server captures in a CUDA
 * graph): the caller's NCCL communicator (libnccl.so.2, dlopened here; on a CPU machine
 * tests/fake_nccl's, on LD_LIBRARY_PATH) and kp_moe_forward_ep_async, which enqueues the
 * whole layer on the stream; kp_ep_wait is the one host sync, and the pairs over the
 * capacity are counted in a device tensor.
 */
#include <kport.h>
#include <mpi.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPERTS 32
#define HIDDEN 256
#define INTER 128
#define TOPK 4
#define TOKENS 64

#define TRY(x)                                                                                   \
    do {                                                                                         \
        kp_status st_ = (x);                                                                     \
        if (st_ != KP_OK) {                                                                      \
            fprintf(stderr, "%s: %s: %s\n", #x, kp_status_str(st_), kp_last_error());           \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                        \
        }                                                                                        \
    } while (0)

typedef struct { char internal[128]; } nccl_id; /* ncclUniqueId */

/* The caller's NCCL communicator over MPI ranks (kport only borrows it); *lib: libnccl. */
static void *nccl_comm(int rank, int world, void **lib) {
    void *comm = NULL;
    int (*get_id)(nccl_id *) = NULL, (*init)(void **, int, nccl_id, int) = NULL;
    *lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (*lib) *(void **)&get_id = dlsym(*lib, "ncclGetUniqueId"), *(void **)&init = dlsym(*lib, "ncclCommInitRank");
    nccl_id id;
    memset(&id, 0, sizeof id);
    if (!get_id || !init || (rank == 0 && get_id(&id) != 0)) {
        fprintf(stderr, "--async needs libnccl.so.2: %s\n", *lib ? "ncclGetUniqueId failed" : dlerror());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (init(&comm, world, id, rank) != 0) MPI_Abort(MPI_COMM_WORLD, 1);
    return comm;
}

static kp_tensor tensor(kp_buffer *b, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    kp_tensor t;
    const int64_t shape[3] = {d0, d1, d2};
    TRY(kp_tensor_init(&t, b, 0, KP_F32, ndim, shape, NULL));
    return t;
}

/* A device buffer of n random floats in [-scale, scale]. */
static kp_buffer *random_buffer(kp_device *dev, kp_stream *s, size_t n, float scale) {
    float *h = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) h[i] = scale * (2.0f * (float)rand() / (float)RAND_MAX - 1.0f);
    kp_buffer *b;
    TRY(kp_buffer_alloc(dev, sizeof(float) * n, &b));
    TRY(kp_buffer_write(s, b, 0, h, sizeof(float) * n));
    free(h);
    return b;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (EXPERTS % world) {
        if (rank == 0) fprintf(stderr, "run with a rank count that divides %d\n", EXPERTS);
        MPI_Finalize();
        return 1;
    }
    TRY(kp_init(NULL));
    kp_device *dev;
    kp_stream *s;
    TRY(kp_device_open(-1, &dev));
    TRY(kp_stream_create(dev, &s));

    /* the communicator stays ours: kport duplicates it for its own traffic */
    MPI_Comm comm = MPI_COMM_WORLD;
    const int async = argc > 1 && strcmp(argv[1], "--async") == 0;
    void *nccl_lib = NULL, *nccl = async ? nccl_comm(rank, world, &nccl_lib) : NULL;
    const int32_t per_rank = EXPERTS / world;
    kp_ep_options o = {.comm_kind = KP_EP_COMM_MPI, .comm = &comm, .num_experts = EXPERTS,
                       .expert_begin = rank * per_rank, .expert_end = (rank + 1) * per_rank,
                       .hidden = HIDDEN, .dtype = KP_F32, .topk = TOPK, .max_tokens_per_rank = TOKENS,
                       .mode = KP_EP_MODE_NORMAL, .timeout_ms = 10000};
    if (async) { /* fixed blocks of 1.5x the mean rows per rank pair: every size known on the host */
        o.comm_kind = KP_EP_COMM_NCCL, o.comm = &nccl;
        o.mode = KP_EP_MODE_CAPACITY, o.capacity_per_rank = TOKENS * TOPK * 3 / (2 * world);
    }
    kp_ep *ep;
    TRY(kp_ep_create(dev, &o, &ep));

    /* the weights are the same on every rank (one seed); each rank uploads only its own
     * experts. The tokens and their router logits are this rank's. */
    srand(17);
    float *all_w13 = malloc(sizeof(float) * EXPERTS * 2 * INTER * HIDDEN);
    float *all_w2 = malloc(sizeof(float) * EXPERTS * HIDDEN * INTER);
    for (size_t i = 0; i < (size_t)EXPERTS * 2 * INTER * HIDDEN; i++)
        all_w13[i] = (2.0f * (float)rand() / (float)RAND_MAX - 1.0f) / 16.0f;
    for (size_t i = 0; i < (size_t)EXPERTS * HIDDEN * INTER; i++)
        all_w2[i] = (2.0f * (float)rand() / (float)RAND_MAX - 1.0f) / 11.0f;
    kp_buffer *bw13, *bw2;
    const size_t w13_bytes = sizeof(float) * per_rank * 2 * INTER * HIDDEN;
    const size_t w2_bytes = sizeof(float) * per_rank * HIDDEN * INTER;
    TRY(kp_buffer_alloc(dev, w13_bytes, &bw13));
    TRY(kp_buffer_alloc(dev, w2_bytes, &bw2));
    TRY(kp_buffer_write(s, bw13, 0, all_w13 + (size_t)rank * per_rank * 2 * INTER * HIDDEN, w13_bytes));
    TRY(kp_buffer_write(s, bw2, 0, all_w2 + (size_t)rank * per_rank * HIDDEN * INTER, w2_bytes));
    free(all_w13);
    free(all_w2);
    kp_buffer *bsw13 = random_buffer(dev, s, (size_t)2 * INTER * HIDDEN, 1.0f / 16.0f);
    kp_buffer *bsw2 = random_buffer(dev, s, (size_t)HIDDEN * INTER, 1.0f / 11.0f);
    kp_buffer *bbias = random_buffer(dev, s, EXPERTS, 0.05f);
    srand(1000 + rank);
    kp_buffer *bx = random_buffer(dev, s, (size_t)TOKENS * HIDDEN, 1.0f);
    kp_buffer *blogits = random_buffer(dev, s, (size_t)TOKENS * EXPERTS, 2.0f);
    kp_buffer *bout;
    TRY(kp_buffer_alloc(dev, sizeof(float) * TOKENS * HIDDEN, &bout));

    kp_moe_forward_ep_params p = {
        .x = tensor(bx, 2, TOKENS, HIDDEN, 0),
        .router_logits = tensor(blogits, 2, TOKENS, EXPERTS, 0),
        .bias = tensor(bbias, 1, EXPERTS, 0, 0),
        .w13 = tensor(bw13, 3, per_rank, 2 * INTER, HIDDEN), /* this rank's experts */
        .w2 = tensor(bw2, 3, per_rank, HIDDEN, INTER),
        .shared_w13 = tensor(bsw13, 2, 2 * INTER, HIDDEN, 0),
        .shared_w2 = tensor(bsw2, 2, HIDDEN, INTER, 0),
        .out = tensor(bout, 2, TOKENS, HIDDEN, 0),
        .routing = {.topk = TOPK, .n_group = 8, .topk_group = 4, .scoring = KP_MOE_SCORING_SIGMOID,
                    .renormalize = 1, .route_scale = 2.5f},
    };
    size_t ws_bytes;
    TRY(kp_moe_forward_ep_workspace_size(ep, &p, &ws_bytes));
    TRY(kp_buffer_alloc(dev, ws_bytes, &p.workspace));

    kp_ep_dispatch_result r = {0};
    if (async) {
        kp_buffer *bdrop;
        kp_tensor dropped; /* int32 {this rank's dropped pairs, every rank's} */
        TRY(kp_buffer_alloc(dev, 8, &bdrop));
        TRY(kp_tensor_init(&dropped, bdrop, 0, KP_I32, 1, (const int64_t[]){2}, NULL));
        TRY(kp_moe_forward_ep_async(ep, s, &p, &dropped)); /* enqueued: no host round trip */
        TRY(kp_ep_wait(ep, s));                             /* the one sync; a lost rank fails here */
        int32_t d[2];
        TRY(kp_buffer_read(s, bdrop, 0, d, sizeof d));
        r.dropped = d[0], r.dropped_all = d[1];
        kp_buffer_free(bdrop);
    } else {
        TRY(kp_moe_forward_ep(ep, s, &p, &r));
    }
    float out00;
    TRY(kp_buffer_read(s, bout, 0, &out00, sizeof out00));

    long long received = r.recv_rows, total = 0;
    MPI_Reduce(&received, &total, 1, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (async) /* the received counts stayed on the device */
        printf("rank %d/%d: experts [%d, %d), capacity mode, %lld pairs dropped (%lld on all ranks), out[0][0] = "
               "%.6f\n", rank, world, (int)o.expert_begin, (int)o.expert_end, (long long)r.dropped,
               (long long)r.dropped_all, out00);
    else
        printf("rank %d/%d: experts [%d, %d), received %lld rows, out[0][0] = %.6f\n", rank, world,
               (int)o.expert_begin, (int)o.expert_end, received, out00);
    fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0 && !async)
        printf("%lld rows dispatched over %d ranks (%d tokens x top-%d each), workspace %zu bytes per rank\n", total,
               world, TOKENS, TOPK, ws_bytes);

    kp_buffer *all[] = {bx, blogits, bbias, bw13, bw2, bsw13, bsw2, bout, p.workspace};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) kp_buffer_free(all[i]);
    TRY(kp_ep_destroy(ep));
    if (nccl) { /* ours to free, after kport's handle */
        int (*destroy)(void *) = NULL;
        *(void **)&destroy = dlsym(nccl_lib, "ncclCommDestroy");
        if (destroy) destroy(nccl);
    }
    TRY(kp_stream_destroy(s));
    TRY(kp_device_close(dev));
    TRY(kp_shutdown());
    MPI_Finalize();
    return 0;
}
