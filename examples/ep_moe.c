/*
 * examples/ep_moe.c — an expert-parallel MoE layer over MPI with kport.
 *
 *   mpirun -np 4 build/tools/ep_moe          (add --oversubscribe on a small machine)
 *
 * 32 experts of [hidden x hidden] weights, 8 per rank. Each rank routes its own tokens
 * (here: random top-4), dispatches them to the ranks holding their experts, runs its
 * experts on what it received with kp_grouped_gemm, and combines the results back
 * into its tokens' outputs. Rank 0 prints what moved.
 */
#include <kport.h>
#include <mpi.h>

#include <stdio.h>
#include <stdlib.h>

#define EXPERTS 32
#define HIDDEN 256
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

static kp_tensor matrix(kp_buffer *b, size_t off, kp_dtype dt, int64_t rows, int64_t cols) {
    kp_tensor t;
    int64_t shape[2] = {rows, cols};
    TRY(kp_tensor_init(&t, b, off, dt, 2, shape, NULL));
    return t;
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
    const int32_t per_rank = EXPERTS / world;
    kp_ep_options o = {.comm_kind = KP_EP_COMM_MPI, .comm = &comm, .num_experts = EXPERTS,
                       .expert_begin = rank * per_rank, .expert_end = (rank + 1) * per_rank,
                       .hidden = HIDDEN, .dtype = KP_F32, .topk = TOPK, .max_tokens_per_rank = TOKENS,
                       .mode = KP_EP_MODE_NORMAL, .timeout_ms = 10000};
    kp_ep *ep;
    TRY(kp_ep_create(dev, &o, &ep));
    kp_ep_info info;
    TRY(kp_ep_get_info(ep, &info));

    /* inputs: this rank's tokens, their routing, and this rank's experts only */
    float *x = malloc(sizeof(float) * TOKENS * HIDDEN), *w = malloc(sizeof(float) * per_rank * HIDDEN * HIDDEN);
    float *weights = malloc(sizeof(float) * TOKENS * TOPK);
    int32_t *ids = malloc(sizeof(int32_t) * TOKENS * TOPK);
    srand(17 + rank);
    for (int i = 0; i < TOKENS * HIDDEN; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int i = 0; i < per_rank * HIDDEN * HIDDEN; i++) w[i] = ((float)rand() / RAND_MAX - 0.5f) / HIDDEN;
    for (int t = 0; t < TOKENS; t++)
        for (int k = 0; k < TOPK; k++) { /* distinct experts, weights summing to 1 */
            ids[t * TOPK + k] = (t * 7 + k * (EXPERTS / TOPK) + rank) % EXPERTS;
            weights[t * TOPK + k] = 1.0f / TOPK;
        }
    const size_t row = sizeof(float) * HIDDEN;
    kp_buffer *bx, *bids, *bwt, *bw, *brecv, *boff, *beo, *bout;
    TRY(kp_buffer_alloc(dev, TOKENS * row, &bx));
    TRY(kp_buffer_alloc(dev, sizeof(int32_t) * TOKENS * TOPK, &bids));
    TRY(kp_buffer_alloc(dev, sizeof(float) * TOKENS * TOPK, &bwt));
    TRY(kp_buffer_alloc(dev, (size_t)per_rank * HIDDEN * row, &bw));
    TRY(kp_buffer_alloc(dev, (size_t)info.max_recv_rows * row, &brecv));
    TRY(kp_buffer_alloc(dev, sizeof(int32_t) * (per_rank + 1), &boff));
    TRY(kp_buffer_alloc(dev, (size_t)info.max_recv_rows * row, &beo));
    TRY(kp_buffer_alloc(dev, TOKENS * row, &bout));
    TRY(kp_buffer_write(s, bx, 0, x, TOKENS * row));
    TRY(kp_buffer_write(s, bids, 0, ids, sizeof(int32_t) * TOKENS * TOPK));
    TRY(kp_buffer_write(s, bwt, 0, weights, sizeof(float) * TOKENS * TOPK));
    TRY(kp_buffer_write(s, bw, 0, w, (size_t)per_rank * HIDDEN * row));

    /* dispatch: rows grouped by local expert, with their offsets */
    kp_ep_dispatch_params dp = {.x = matrix(bx, 0, KP_F32, TOKENS, HIDDEN),
                                .topk_ids = matrix(bids, 0, KP_I32, TOKENS, TOPK),
                                .recv_x = matrix(brecv, 0, KP_F32, info.max_recv_rows, HIDDEN)};
    int64_t off_shape[1] = {per_rank + 1};
    TRY(kp_tensor_init(&dp.expert_offsets, boff, 0, KP_I32, 1, off_shape, NULL));
    kp_ep_dispatch_result r;
    TRY(kp_ep_dispatch(ep, s, &dp, &r));

    /* this rank's experts on the received rows */
    if (r.recv_rows > 0) {
        kp_grouped_gemm_params gp = {.a = matrix(brecv, 0, KP_F32, r.recv_rows, HIDDEN),
                                     .expert_offsets = dp.expert_offsets,
                                     .out = matrix(beo, 0, KP_F32, r.recv_rows, HIDDEN)};
        int64_t wshape[3] = {per_rank, HIDDEN, HIDDEN};
        TRY(kp_tensor_init(&gp.w, bw, 0, KP_F32, 3, wshape, NULL));
        TRY(kp_grouped_gemm(s, &gp));
    }

    /* combine: results come home, summed with the routing weights in slot order */
    kp_ep_combine_params cp = {.expert_out = matrix(beo, 0, KP_F32, info.max_recv_rows, HIDDEN),
                               .topk_weights = matrix(bwt, 0, KP_F32, TOKENS, TOPK),
                               .out = matrix(bout, 0, KP_F32, TOKENS, HIDDEN)};
    TRY(kp_ep_combine(ep, s, &cp));
    TRY(kp_buffer_read(s, bout, 0, x, TOKENS * row));

    long long received = r.recv_rows, total = 0;
    MPI_Reduce(&received, &total, 1, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    printf("rank %d/%d: experts [%d, %d), received %lld rows, out[0][0] = %.6f\n", rank, world,
           (int)o.expert_begin, (int)o.expert_end, received, x[0]);
    fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) printf("%lld rows dispatched over %d ranks (%d tokens x top-%d each)\n", total, world, TOKENS, TOPK);

    kp_buffer *all[] = {bx, bids, bwt, bw, brecv, boff, beo, bout};
    for (int i = 0; i < 8; i++) kp_buffer_free(all[i]);
    TRY(kp_ep_destroy(ep));
    TRY(kp_stream_destroy(s));
    TRY(kp_device_close(dev));
    TRY(kp_shutdown());
    free(x), free(w), free(weights), free(ids);
    MPI_Finalize();
    return 0;
}
