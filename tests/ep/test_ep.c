/*
 * tests/ep/test_ep.c — expert parallelism over MPI (kp_ep_*), run under
 * mpirun --oversubscribe -np 2 and -np 4 (ci/ep-test).
 *
 * Each case: every rank dispatches its tokens, runs its local experts with
 * kp_grouped_gemm on the rows it received, and combines; the result must equal, bit
 * for bit, the single-rank path on the same tokens (kp_moe_align -> kp_grouped_gemm
 * over all experts -> kp_moe_combine). Outputs are poisoned first (NaN bytes), so an
 * element left unwritten fails. A check passes when it passes on every rank; rank 0
 * prints the PASS/FAIL lines and "N passed, N failed, N skipped".
 */
#include "ep_test.h"

#include <dlfcn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int rank, world;
int n_pass, n_fail, n_skip;
kp_stream *stream; /* of the device under test: ops need one */

void report(const char *backend, const char *name, int ok_local, const char *detail) {
    int ok = 0;
    MPI_Allreduce(&ok_local, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!ok_local) fprintf(stderr, "rank %d: %s %s: %s\n", rank, backend, name, detail ? detail : "");
    if (rank == 0) printf("%s np%d %s %s\n", ok ? "PASS" : "FAIL", world, backend, name);
    fflush(stdout);
    if (ok) n_pass++;
    else n_fail++;
}

/* ---- deterministic data ---- */
uint64_t rng_state;
uint32_t rng(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}
float frand(void) { return (float)(rng() % 20001) / 10000.0f - 1.0f; }

uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static float get(const void *p, kp_dtype dt, size_t i) {
    return dt == KP_F32 ? ((const float *)p)[i] : from_bf16(((const uint16_t *)p)[i]);
}
/* The "scale" expert: row * (1 + e/16), rounded to the dtype; row-local, so the EP and
 * single-rank paths must agree bit for bit. */
static void scale_row(void *dst, const void *src, kp_dtype dt, int64_t H, int32_t e) {
    const float s = 1.0f + (float)e / 16.0f;
    for (int64_t i = 0; i < H; i++) {
        float v = get(src, dt, (size_t)i) * s;
        if (dt == KP_F32) ((float *)dst)[i] = v;
        else ((uint16_t *)dst)[i] = to_bf16(v);
    }
}

void fill_rows(void *dst, kp_dtype dt, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = frand();
        if (dt == KP_F32) ((float *)dst)[i] = v;
        else ((uint16_t *)dst)[i] = to_bf16(v);
    }
}

/* ---- a case ---- */
typedef enum { ROUTE_RANDOM, ROUTE_ONE_RANK, ROUTE_LAST_EXPERT } route_kind;
typedef struct ep_case {
    const char *name;
    kp_dtype dtype;
    int32_t E, hidden, topk, max_tokens;
    int32_t tokens[4];   /* per rank (rank % 4) */
    route_kind route;
    int skewed_ranges;   /* rank 0 holds half the experts, the last rank none */
    kp_ep_mode mode;
    int32_t capacity;
    int expect_drops;
} ep_case;

static void expert_range(const ep_case *c, int r, int32_t *b, int32_t *e) {
    if (!c->skewed_ranges || world == 1) {
        int32_t base = c->E / world, rem = c->E % world;
        *b = r * base + (r < rem ? r : rem);
        *e = *b + base + (r < rem ? 1 : 0);
        return;
    }
    int32_t half = c->E / 2, rest = c->E - half, mid = world - 2; /* ranks 1..world-2 share rest */
    if (r == 0) *b = 0, *e = half;
    else if (r == world - 1) *b = *e = c->E;
    else {
        int32_t base = rest / mid, rem = rest % mid, i = r - 1;
        *b = half + i * base + (i < rem ? i : rem);
        *e = *b + base + (i < rem ? 1 : 0);
    }
    if (mid == 0 && r == 0) *e = c->E; /* world 2: rank 0 all, rank 1 none */
}

/* topk distinct experts in [lo, hi) for each token */
static void route(const ep_case *c, int32_t *ids, int64_t T) {
    int32_t lo = 0, hi = c->E;
    if (c->route == ROUTE_ONE_RANK) expert_range(c, 0, &lo, &hi);
    for (int64_t t = 0; t < T; t++)
        for (int32_t s = 0; s < c->topk; s++) {
            int32_t e;
            int dup;
            do {
                e = c->route == ROUTE_LAST_EXPERT ? c->E - 1 - s : lo + (int32_t)(rng() % (uint32_t)(hi - lo));
                dup = 0;
                for (int32_t j = 0; j < s; j++) dup |= ids[t * c->topk + j] == e;
            } while (dup);
            ids[t * c->topk + s] = e;
        }
}

static kp_status make(kp_device *d, size_t bytes, kp_buffer **b) { return kp_buffer_alloc(d, bytes ? bytes : 16, b); }

kp_status tensor2(kp_tensor *t, kp_buffer *b, size_t off, kp_dtype dt, int64_t r, int64_t c) {
    int64_t shape[2] = {r, c};
    return kp_tensor_init(t, b, off, dt, 2, shape, NULL);
}

/* The transport run_case uses: MPI, or the NCCL transport over tests/fake_nccl
 * (run_cases_over_nccl), where polls counts the fake's ncclCommGetAsyncError calls. */
static kp_ep_comm_kind case_kind = KP_EP_COMM_MPI;
static const void *case_comm;
static long (*case_polls)(void);
/* run_cases_over_nccl's capacity cases through kp_ep_dispatch_async (no host sync) */
static int case_async;

/* kp_ep_dispatch_async fills no result: {dropped, dropped_all} from its device tensor,
 * recv_rows = expert_offsets[LE] (host reads, after the calls under test) */
static kp_status async_result(kp_ep *ep, kp_buffer *bdrop, kp_buffer *boff, int32_t LE, kp_ep_dispatch_result *r) {
    int32_t d[2] = {-1, -1}, rows = -1;
    kp_status st = kp_ep_wait(ep, stream);
    if (st == KP_OK) st = kp_buffer_read(stream, bdrop, 0, d, sizeof d);
    if (st == KP_OK) st = kp_buffer_read(stream, boff, (size_t)LE * 4, &rows, 4);
    r->dropped = d[0], r->dropped_all = d[1], r->recv_rows = rows;
    return st;
}

/* The checks on a dispatch's result that every path shares. */
static int check_result(const ep_case *c, int64_t T, const kp_ep_dispatch_result *res, char *detail, size_t n) {
    if (c->expect_drops && res->dropped_all == 0) {
        snprintf(detail, n, "expected drops, none reported");
        return 0;
    }
    if (!c->expect_drops && (res->dropped_all != 0 || res->dropped != 0)) {
        snprintf(detail, n, "drops reported (%lld, all %lld) where none were expected", (long long)res->dropped,
                 (long long)res->dropped_all);
        return 0;
    }
    int64_t sums[3] = {res->recv_rows, T * c->topk - res->dropped, res->dropped}, tot[3];
    MPI_Allreduce(sums, tot, 3, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (tot[0] != tot[1]) {
        snprintf(detail, n, "rows received %lld != pairs sent %lld", (long long)tot[0], (long long)tot[1]);
        return 0;
    }
    if (tot[2] != res->dropped_all) {
        snprintf(detail, n, "dropped_all %lld != the ranks' dropped summed, %lld", (long long)res->dropped_all,
                 (long long)tot[2]);
        return 0;
    }
    return 1;
}

#define TRY(x) do { if ((st = (x)) != KP_OK) { snprintf(detail, sizeof detail, "%s: %s: %s", #x, kp_status_str(st), kp_last_error()); goto done; } } while (0)

static void run_case(const char *backend, kp_device *dev, const ep_case *c, int gemm) {
    char detail[1024] = "";
    int ok = 0;
    kp_status st = KP_OK;
    const size_t es = kp_dtype_size(c->dtype), rb = es * (size_t)c->hidden;
    const int64_t T = c->tokens[rank % 4], K = c->topk, H = c->hidden, E = c->E;
    int32_t eb, ee;
    expert_range(c, rank, &eb, &ee);
    const int32_t LE = ee - eb;
    kp_ep *ep = NULL;
    kp_buffer *bx = NULL, *bids = NULL, *bw8 = NULL, *bw = NULL, *brecv = NULL, *boff = NULL, *beo = NULL,
              *bout = NULL, *bref = NULL, *bsorted = NULL, *boffs_all = NULL, *bpos = NULL, *ba = NULL,
              *beo_ref = NULL, *bdrop = NULL;
    void *hx = malloc(T * rb + 1), *hw = malloc((size_t)E * H * H * es), *hout = malloc(T * rb + 1),
         *href = malloc(T * rb + 1);
    int32_t *hids = malloc(T * K * 4 + 4), *hsorted = malloc(T * K * 4 + 4), *hpos = malloc(T * K * 4 + 4);
    float *hwt = malloc(T * K * 4 + 4);
    uint8_t *ha = malloc((T * K + 1) * rb);

    rng_state = 1234567;           /* weights: the same on every rank */
    fill_rows(hw, c->dtype, (size_t)E * H * H);
    rng_state = 99991 + 7919 * (uint64_t)rank;
    fill_rows(hx, c->dtype, (size_t)T * H);
    route(c, hids, T);
    for (int64_t i = 0; i < T * K; i++) hwt[i] = (float)(rng() % 1000) / 1000.0f;

    kp_ep_options o = {.comm_kind = KP_EP_COMM_MPI, .comm = &(MPI_Comm){MPI_COMM_WORLD}, .num_experts = c->E,
                       .expert_begin = eb, .expert_end = ee, .hidden = c->hidden, .dtype = c->dtype,
                       .topk = c->topk, .max_tokens_per_rank = c->max_tokens, .mode = c->mode,
                       .capacity_per_rank = c->capacity, .timeout_ms = 60000};
    MPI_Comm comm = MPI_COMM_WORLD;
    o.comm = &comm;
    if (case_kind != KP_EP_COMM_MPI) o.comm_kind = case_kind, o.comm = case_comm;
    const long polls_before = case_polls ? case_polls() : 0;
    TRY(kp_ep_create(dev, &o, &ep));
    kp_ep_info info;
    TRY(kp_ep_get_info(ep, &info));
    TRY(make(dev, T * rb, &bx));
    TRY(make(dev, T * K * 4, &bids));
    TRY(make(dev, T * K * 4, &bw8));
    TRY(make(dev, (size_t)E * H * H * es, &bw));
    TRY(make(dev, info.max_recv_rows * rb, &brecv));
    TRY(make(dev, ((size_t)LE + 1) * 4, &boff));
    TRY(make(dev, info.max_recv_rows * rb, &beo));
    TRY(make(dev, T * rb, &bout));
    if (T) TRY(kp_buffer_write(NULL, bx, 0, hx, T * rb));
    if (T) TRY(kp_buffer_write(NULL, bids, 0, hids, T * K * 4));
    if (T) TRY(kp_buffer_write(NULL, bw8, 0, hwt, T * K * 4));
    TRY(kp_buffer_write(NULL, bw, 0, hw, (size_t)E * H * H * es));
    memset(hout, 0xff, T * rb + 1); /* poison: NaN in f32 and bf16 */
    if (T) TRY(kp_buffer_write(NULL, bout, 0, hout, T * rb));

    /* ---- the EP path ---- */
    kp_ep_dispatch_params dp = {0};
    TRY(tensor2(&dp.x, bx, 0, c->dtype, T, H));
    TRY(tensor2(&dp.topk_ids, bids, 0, KP_I32, T, K));
    TRY(tensor2(&dp.recv_x, brecv, 0, c->dtype, info.max_recv_rows, H));
    int64_t off_shape[1] = {LE + 1};
    TRY(kp_tensor_init(&dp.expert_offsets, boff, 0, KP_I32, 1, off_shape, NULL));
    kp_ep_dispatch_result res = {0};
    kp_tensor drop_t;
    const int64_t two[1] = {2};
    TRY(make(dev, 8, &bdrop));
    TRY(kp_tensor_init(&drop_t, bdrop, 0, KP_I32, 1, two, NULL));
    /* async + gemm: dispatch, the experts and combine must make no host round trip and
     * no transport poll (graph-capturable) */
    const uint64_t syncs_before = kp_host_sync_count();
    const long polls_window = case_polls ? case_polls() : 0;
    if (case_async) {
        st = kp_ep_dispatch_async(ep, stream, &dp, &drop_t);
        if (st != KP_OK) {
            snprintf(detail, sizeof detail, "dispatch_async: %s: %s", kp_status_str(st), kp_last_error());
            goto done;
        }
        if (!gemm) TRY(async_result(ep, bdrop, boff, LE, &res));
    } else {
        st = kp_ep_dispatch(ep, stream, &dp, &res);
        if (st != (c->expect_drops ? KP_ERR_OUT_OF_BOUNDS : KP_OK)) {
            snprintf(detail, sizeof detail, "dispatch: %s: %s", kp_status_str(st), kp_last_error());
            goto done;
        }
    }
    if ((!case_async || !gemm) && !check_result(c, T, &res, detail, sizeof detail)) goto done;
    if (!gemm && res.recv_rows > 0) {
        uint8_t *rows = malloc(res.recv_rows * rb);
        int32_t *offs = malloc(((size_t)LE + 1) * 4);
        st = kp_buffer_read(stream, brecv, 0, rows, res.recv_rows * rb);
        if (st == KP_OK) st = kp_buffer_read(stream, boff, 0, offs, ((size_t)LE + 1) * 4);
        for (int32_t le = 0; st == KP_OK && le < LE; le++)
            for (int32_t r = offs[le]; r < offs[le + 1]; r++) scale_row(rows + r * rb, rows + r * rb, c->dtype, H, eb + le);
        if (st == KP_OK && offs[LE] != res.recv_rows) st = KP_ERR_INTERNAL;
        if (st == KP_OK) st = kp_buffer_write(stream, beo, 0, rows, res.recv_rows * rb);
        free(rows);
        free(offs);
        TRY(st);
    }
    if (gemm && LE > 0 && (case_async || res.recv_rows > 0)) {
        /* async: the row count is on the device only; the GEMM takes every row of recv_x
         * and expert_offsets picks the received ones */
        const int64_t M = case_async ? info.max_recv_rows : res.recv_rows;
        kp_grouped_gemm_params gp = {0};
        int64_t wshape[3] = {LE, H, H};
        TRY(tensor2(&gp.a, brecv, 0, c->dtype, M, H));
        TRY(kp_tensor_init(&gp.w, bw, (size_t)eb * H * H * es, c->dtype, 3, wshape, NULL));
        gp.expert_offsets = dp.expert_offsets;
        TRY(tensor2(&gp.out, beo, 0, c->dtype, M, H));
        TRY(kp_grouped_gemm(stream, &gp));
    }
    kp_ep_combine_params cp = {0};
    TRY(tensor2(&cp.expert_out, beo, 0, c->dtype, info.max_recv_rows, H));
    TRY(tensor2(&cp.topk_weights, bw8, 0, KP_F32, T, K));
    TRY(tensor2(&cp.out, bout, 0, c->dtype, T, H));
    TRY(kp_ep_combine(ep, stream, &cp));
    if (case_async && gemm) {
        const uint64_t syncs = kp_host_sync_count() - syncs_before;
        const long polls = case_polls ? case_polls() - polls_window : 0;
        if (syncs || polls) {
            snprintf(detail, sizeof detail, "dispatch_async + grouped GEMM + combine made %llu host round trips "
                     "and %ld transport polls; expected none", (unsigned long long)syncs, polls);
            goto done;
        }
        TRY(async_result(ep, bdrop, boff, LE, &res));
        if (!check_result(c, T, &res, detail, sizeof detail)) goto done;
    }
    if (T) TRY(kp_buffer_read(stream, bout, 0, hout, T * rb));
    if (case_polls && case_polls() == polls_before) { /* the device path's poll asks the library */
        snprintf(detail, sizeof detail, "no ncclCommGetAsyncError call: the device path was not taken");
        goto done;
    }

    /* ---- the single-rank reference on this rank's tokens ---- */
    if (T) {
        TRY(make(dev, (T * K + E) * 4, &bsorted));
        TRY(make(dev, ((size_t)E + 1) * 4, &boffs_all));
        TRY(make(dev, T * K * 4, &bpos));
        TRY(make(dev, (T * K + 1) * rb, &ba));
        TRY(make(dev, (T * K + 1) * rb, &beo_ref));
        TRY(make(dev, T * rb, &bref));
        kp_moe_align_params ap = {0};
        TRY(tensor2(&ap.topk_ids, bids, 0, KP_I32, T, K));
        int64_t s1[1] = {T * K + E}, s2[1] = {E + 1};
        TRY(kp_tensor_init(&ap.sorted_ids, bsorted, 0, KP_I32, 1, s1, NULL));
        TRY(kp_tensor_init(&ap.expert_offsets, boffs_all, 0, KP_I32, 1, s2, NULL));
        TRY(tensor2(&ap.token_pos, bpos, 0, KP_I32, T, K));
        ap.num_experts = (int32_t)E;
        ap.block_size = 1;
        TRY(kp_moe_align(stream, &ap));
        TRY(kp_buffer_read(stream, bsorted, 0, hsorted, T * K * 4));
        TRY(kp_buffer_read(stream, bpos, 0, hpos, T * K * 4));
        for (int64_t r = 0; r < T * K; r++) memcpy(ha + r * rb, (uint8_t *)hx + (hsorted[r] / K) * rb, rb);
        TRY(kp_buffer_write(NULL, ba, 0, ha, T * K * rb));
        kp_grouped_gemm_params gp = {0};
        int64_t wshape[3] = {E, H, H};
        TRY(tensor2(&gp.a, ba, 0, c->dtype, T * K, H));
        TRY(kp_tensor_init(&gp.w, bw, 0, c->dtype, 3, wshape, NULL));
        gp.expert_offsets = ap.expert_offsets;
        TRY(tensor2(&gp.out, beo_ref, 0, c->dtype, T * K, H));
        if (gemm) TRY(kp_grouped_gemm(stream, &gp));
        if (!gemm) { /* rows in flat pair order, token_pos = the pair's index */
            for (int64_t i = 0; i < T * K; i++) {
                scale_row(ha + i * rb, (uint8_t *)hx + (i / K) * rb, c->dtype, H, hids[i]);
                hpos[i] = (int32_t)i;
            }
            TRY(kp_buffer_write(stream, beo_ref, 0, ha, T * K * rb));
            TRY(kp_buffer_write(stream, bpos, 0, hpos, T * K * 4));
        }
        memset(ha, 0, rb); /* the zero row for dropped pairs */
        TRY(kp_buffer_write(NULL, beo_ref, T * K * rb, ha, rb));
        if (c->mode == KP_EP_MODE_CAPACITY) {
            /* the documented drop rule: per destination rank, pairs in (expert, token, slot)
             * order; those past capacity_per_rank are dropped */
            int32_t *sent = calloc((size_t)world, 4);
            int64_t dropped = 0;
            for (int32_t e = 0; e < E; e++) {
                int d = 0;
                for (; d < world; d++) {
                    int32_t b2, e2;
                    expert_range(c, d, &b2, &e2);
                    if (e >= b2 && e < e2) break;
                }
                for (int64_t i = 0; i < T * K; i++)
                    if (hids[i] == e && sent[d]++ >= c->capacity) hpos[i] = (int32_t)(T * K), dropped++;
            }
            free(sent);
            if (dropped != res.dropped) {
                snprintf(detail, sizeof detail, "dropped %lld, expected %lld", (long long)res.dropped,
                         (long long)dropped);
                goto done;
            }
            TRY(kp_buffer_write(NULL, bpos, 0, hpos, T * K * 4));
        }
        kp_moe_combine_params rp = {0};
        TRY(tensor2(&rp.expert_out, beo_ref, 0, c->dtype, T * K + 1, H));
        rp.token_pos = ap.token_pos;
        rp.topk_weights = cp.topk_weights;
        TRY(tensor2(&rp.out, bref, 0, c->dtype, T, H));
        TRY(kp_moe_combine(stream, &rp));
        TRY(kp_buffer_read(stream, bref, 0, href, T * rb));
        if (gemm) { /* kp_grouped_gemm may round differently with another row count: a tolerance */
            const double tol = c->dtype == KP_F32 ? 1e-5 : 1e-2;
            for (size_t i = 0; i < (size_t)(T * H); i++) {
                double a = get(hout, c->dtype, i), b = get(href, c->dtype, i);
                if (!(a - b <= tol * (1 + (b < 0 ? -b : b)) && b - a <= tol * (1 + (b < 0 ? -b : b)))) {
                    snprintf(detail, sizeof detail, "element %zu: EP %.9g, single rank %.9g", i, a, b);
                    goto done;
                }
            }
        } else if (memcmp(hout, href, T * rb) != 0) {
            size_t i = 0;
            while (((uint8_t *)hout)[i] == ((uint8_t *)href)[i]) i++;
            snprintf(detail, sizeof detail, "EP result differs from single-rank kp_moe_combine at byte %zu (token %zu)",
                     i, i / rb);
            goto done;
        }
    }
    ok = 1;
done:
    if (ep) kp_ep_destroy(ep);
    kp_buffer *all[] = {bx, bids, bw8, bw, brecv, boff, beo, bout, bref, bsorted, boffs_all, bpos, ba, beo_ref, bdrop};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i]) kp_buffer_free(all[i]);
    free(hx), free(hw), free(hout), free(href), free(hids), free(hsorted), free(hpos), free(hwt), free(ha);
    char name[224];
    snprintf(name, sizeof name, "%s%s %s, %s experts%s",
             case_kind == KP_EP_COMM_MPI ? ""
             : case_async ? "NCCL transport (fake libnccl), kp_ep_dispatch_async, no host sync: "
                          : "NCCL transport (fake libnccl, device path): ",
             c->name, kp_dtype_name(c->dtype), gemm ? "grouped-gemm" : "scale",
             gemm ? " (tolerance)" : " (bitwise)");
    report(backend, name, ok, detail);
}

/* The whole routed layer: kp_moe_gate, then dispatch -> x·w13ᵀ -> SwiGLU (on the host)
 * -> ·w2ᵀ -> combine, against the single-rank kp_moe_forward on this rank's tokens
 * (within a tolerance: kp_moe_forward fuses its steps). f32, softmax top-2 of 8 experts. */
static void run_forward_case(const char *backend, kp_device *dev) {
    enum { E = 8, H = 32, I = 16, K = 2, MAXT = 8 };
    const int32_t tokens[4] = {7, 3, 0, 5};
    const int64_t T = tokens[rank % 4];
    char detail[1024] = "";
    int ok = 0;
    kp_status st = KP_OK;
    kp_ep *ep = NULL;
    kp_buffer *bx = NULL, *blog = NULL, *bw13 = NULL, *bw2 = NULL, *bids = NULL, *bwt = NULL, *brecv = NULL,
              *boff = NULL, *bh = NULL, *bact = NULL, *beo = NULL, *bout = NULL, *bref = NULL, *bws = NULL;
    float *hx = malloc(sizeof(float) * (MAXT * H)), *hlog = malloc(sizeof(float) * MAXT * E),
          *hw13 = malloc(sizeof(float) * E * 2 * I * H), *hw2 = malloc(sizeof(float) * E * H * I),
          *hout = malloc(sizeof(float) * MAXT * H), *href = malloc(sizeof(float) * MAXT * H), *hh = NULL;
    if (world > E || E % world) {
        if (rank == 0) printf("SKIP np%d %s moe_forward: needs a rank count dividing %d\n", world, backend, E);
        n_skip++;
        goto out;
    }
    const int32_t per = E / world, eb = rank * per, LE = per;
    rng_state = 777;
    fill_rows(hw13, KP_F32, (size_t)E * 2 * I * H);
    fill_rows(hw2, KP_F32, (size_t)E * H * I);
    rng_state = 4242 + (uint64_t)rank;
    fill_rows(hx, KP_F32, (size_t)T * H);
    fill_rows(hlog, KP_F32, (size_t)T * E);
    MPI_Comm comm = MPI_COMM_WORLD;
    kp_ep_options o = {.comm_kind = KP_EP_COMM_MPI, .comm = &comm, .num_experts = E, .expert_begin = eb,
                       .expert_end = eb + LE, .hidden = H, .dtype = KP_F32, .topk = K, .max_tokens_per_rank = MAXT,
                       .mode = KP_EP_MODE_NORMAL, .timeout_ms = 60000};
    TRY(kp_ep_create(dev, &o, &ep));
    kp_ep_info info;
    TRY(kp_ep_get_info(ep, &info));
    const size_t f = sizeof(float);
    TRY(make(dev, T * H * f, &bx));
    TRY(make(dev, T * E * f, &blog));
    TRY(make(dev, (size_t)E * 2 * I * H * f, &bw13));
    TRY(make(dev, (size_t)E * H * I * f, &bw2));
    TRY(make(dev, T * K * 4, &bids));
    TRY(make(dev, T * K * 4, &bwt));
    TRY(make(dev, info.max_recv_rows * H * f, &brecv));
    TRY(make(dev, ((size_t)LE + 1) * 4, &boff));
    TRY(make(dev, info.max_recv_rows * 2 * I * f, &bh));
    TRY(make(dev, info.max_recv_rows * I * f, &bact));
    TRY(make(dev, info.max_recv_rows * H * f, &beo));
    TRY(make(dev, T * H * f, &bout));
    TRY(make(dev, T * H * f, &bref));
    if (T) TRY(kp_buffer_write(stream, bx, 0, hx, T * H * f));
    if (T) TRY(kp_buffer_write(stream, blog, 0, hlog, T * E * f));
    TRY(kp_buffer_write(stream, bw13, 0, hw13, (size_t)E * 2 * I * H * f));
    TRY(kp_buffer_write(stream, bw2, 0, hw2, (size_t)E * H * I * f));
    memset(hout, 0xff, sizeof(float) * MAXT * H);
    if (T) TRY(kp_buffer_write(stream, bout, 0, hout, T * H * f));
    kp_moe_routing routing = {.topk = K, .n_group = 1, .topk_group = 1, .scoring = KP_MOE_SCORING_SOFTMAX,
                              .renormalize = 1, .route_scale = 1.0f};
    if (T) {
        kp_moe_gate_params gp = {.routing = routing};
        TRY(tensor2(&gp.logits, blog, 0, KP_F32, T, E));
        TRY(tensor2(&gp.topk_ids, bids, 0, KP_I32, T, K));
        TRY(tensor2(&gp.topk_weights, bwt, 0, KP_F32, T, K));
        TRY(kp_moe_gate(stream, &gp));
    }
    kp_ep_dispatch_params dp = {0};
    TRY(tensor2(&dp.x, bx, 0, KP_F32, T, H));
    TRY(tensor2(&dp.topk_ids, bids, 0, KP_I32, T, K));
    TRY(tensor2(&dp.recv_x, brecv, 0, KP_F32, info.max_recv_rows, H));
    int64_t off_shape[1] = {LE + 1};
    TRY(kp_tensor_init(&dp.expert_offsets, boff, 0, KP_I32, 1, off_shape, NULL));
    kp_ep_dispatch_result res;
    TRY(kp_ep_dispatch(ep, stream, &dp, &res));
    const int64_t R = res.recv_rows;
    if (R > 0) {
        kp_grouped_gemm_params g1 = {0}, g2 = {0};
        int64_t w13s[3] = {LE, 2 * I, H}, w2s[3] = {LE, H, I};
        TRY(tensor2(&g1.a, brecv, 0, KP_F32, R, H));
        TRY(kp_tensor_init(&g1.w, bw13, (size_t)eb * 2 * I * H * f, KP_F32, 3, w13s, NULL));
        g1.expert_offsets = dp.expert_offsets;
        TRY(tensor2(&g1.out, bh, 0, KP_F32, R, 2 * I));
        TRY(kp_grouped_gemm(stream, &g1));
        hh = malloc(R * 2 * I * f);
        TRY(kp_buffer_read(stream, bh, 0, hh, R * 2 * I * f));
        for (int64_t r = 0; r < R; r++)
            for (int i = 0; i < I; i++) {
                float g = hh[r * 2 * I + i], u = hh[r * 2 * I + I + i];
                hh[r * I + i] = g / (1.0f + expf(-g)) * u; /* silu(gate) * up, in place: r*I <= r*2I */
            }
        TRY(kp_buffer_write(stream, bact, 0, hh, R * I * f));
        TRY(tensor2(&g2.a, bact, 0, KP_F32, R, I));
        TRY(kp_tensor_init(&g2.w, bw2, (size_t)eb * H * I * f, KP_F32, 3, w2s, NULL));
        g2.expert_offsets = dp.expert_offsets;
        TRY(tensor2(&g2.out, beo, 0, KP_F32, R, H));
        TRY(kp_grouped_gemm(stream, &g2));
    }
    kp_ep_combine_params cp = {0};
    TRY(tensor2(&cp.expert_out, beo, 0, KP_F32, info.max_recv_rows, H));
    TRY(tensor2(&cp.topk_weights, bwt, 0, KP_F32, T, K));
    TRY(tensor2(&cp.out, bout, 0, KP_F32, T, H));
    TRY(kp_ep_combine(ep, stream, &cp));
    if (T) {
        kp_moe_forward_params fp = {.routing = routing};
        int64_t w13s[3] = {E, 2 * I, H}, w2s[3] = {E, H, I};
        TRY(tensor2(&fp.x, bx, 0, KP_F32, T, H));
        TRY(tensor2(&fp.router_logits, blog, 0, KP_F32, T, E));
        TRY(kp_tensor_init(&fp.w13, bw13, 0, KP_F32, 3, w13s, NULL));
        TRY(kp_tensor_init(&fp.w2, bw2, 0, KP_F32, 3, w2s, NULL));
        TRY(tensor2(&fp.out, bref, 0, KP_F32, T, H));
        size_t ws = 0;
        TRY(kp_moe_forward_workspace_size(dev, &fp, &ws));
        TRY(make(dev, ws, &bws));
        fp.workspace = bws;
        TRY(kp_moe_forward(stream, &fp));
        TRY(kp_buffer_read(stream, bout, 0, hout, T * H * f));
        TRY(kp_buffer_read(stream, bref, 0, href, T * H * f));
        for (int64_t i = 0; i < T * H; i++) {
            double a = hout[i], b = href[i], tol = 1e-4 * (1 + (b < 0 ? -b : b));
            if (!(a - b <= tol && b - a <= tol)) {
                snprintf(detail, sizeof detail, "element %lld: EP %.9g, kp_moe_forward %.9g", (long long)i, a, b);
                goto done;
            }
        }
    }
    ok = 1;
done:
    if (ep) kp_ep_destroy(ep);
    {
        kp_buffer *all[] = {bx, blog, bw13, bw2, bids, bwt, brecv, boff, bh, bact, beo, bout, bref, bws};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++)
            if (all[i]) kp_buffer_free(all[i]);
    }
    report(backend, "gate + dispatch + SwiGLU experts + combine equals kp_moe_forward f32 (tolerance)", ok, detail);
out:
    free(hx), free(hlog), free(hw13), free(hw2), free(hout), free(href), free(hh);
}

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

kp_ep_options base_options(MPI_Comm *comm) {
    kp_ep_options o = {.comm_kind = KP_EP_COMM_MPI, .comm = comm, .num_experts = 4 * world, .hidden = 16,
                       .dtype = KP_F32, .topk = 2, .max_tokens_per_rank = 8, .mode = KP_EP_MODE_NORMAL,
                       .timeout_ms = 60000};
    o.expert_begin = 4 * rank;
    o.expert_end = 4 * rank + 4;
    return o;
}

/* Arguments that differ across ranks: every rank reports the same error. */
static void run_mismatch(const char *backend, kp_device *dev) {
    MPI_Comm comm = MPI_COMM_WORLD;
    char detail[600] = "";
    kp_ep *ep = NULL;
    kp_ep_options o = base_options(&comm);
    if (rank == world - 1) o.hidden = 17;
    kp_status st = kp_ep_create(dev, &o, &ep);
    int ok = st == KP_ERR_INVALID_ARGUMENT && strstr(kp_last_error(), "hidden") && !ep;
    snprintf(detail, sizeof detail, "%s: %s", kp_status_str(st), kp_last_error());
    if (ep) kp_ep_destroy(ep), ep = NULL;
    report(backend, "create: mismatched hidden is an error on every rank", ok, detail);

    o = base_options(&comm);
    if (rank == 0) o.expert_end = 5; /* overlaps rank 1 (or leaves a gap with one rank) */
    if (world == 1) o.expert_end = 3;
    st = kp_ep_create(dev, &o, &ep);
    ok = st == KP_ERR_INVALID_ARGUMENT && strstr(kp_last_error(), "tile") && !ep;
    snprintf(detail, sizeof detail, "%s: %s", kp_status_str(st), kp_last_error());
    if (ep) kp_ep_destroy(ep), ep = NULL;
    report(backend, "create: expert ranges that do not tile are an error on every rank", ok, detail);

    /* NCCL/RCCL: backends with device addresses (cpu here; cuda, hip) or cpu's host staging;
     * not OpenCL (no addresses). On cpu: no librccl.so.1 */
    const int cpu = strcmp(backend, "cpu") == 0;
    static char fake_nccl_comm[64]; /* never dereferenced: refused before the transport is created */
    o = base_options(&comm);
    o.comm_kind = cpu ? KP_EP_COMM_RCCL : KP_EP_COMM_NCCL;
    o.comm = cpu ? (const void *)&comm : (const void *)fake_nccl_comm;
    st = cpu ? KP_OK : kp_ep_create(dev, &o, &ep);
    if (cpu) { /* a real librccl would be given an MPI_Comm: only where it is missing */
        void *rccl = dlopen("librccl.so.1", RTLD_NOW | RTLD_LOCAL);
        if (rccl) dlclose(rccl);
        else st = kp_ep_create(dev, &o, &ep);
    }
    ok = cpu ? (st == KP_OK || (st == KP_ERR_UNAVAILABLE && strstr(kp_last_error(), "rccl"))) && !ep
             : st == KP_ERR_UNSUPPORTED && strstr(kp_last_error(), "no device addresses") && !ep;
    snprintf(detail, sizeof detail, "%s: %s", kp_status_str(st), kp_last_error());
    report(backend, cpu ? "create: RCCL without librccl.so.1 is KP_ERR_UNAVAILABLE, saying why"
                        : "create: NCCL on a backend without device addresses is KP_ERR_UNSUPPORTED, saying why",
           ok, detail);

    o = base_options(&comm);
    o.mode = KP_EP_MODE_CAPACITY; /* capacity 0 */
    st = kp_ep_create(dev, &o, &ep);
    ok = st == KP_ERR_INVALID_ARGUMENT && !ep;
    snprintf(detail, sizeof detail, "%s: %s", kp_status_str(st), kp_last_error());
    report(backend, "create: capacity mode without a capacity is refused", ok, detail);
}

/* Bad arguments on every rank: each returns the error locally before any exchange,
 * writes nothing, and the handle stays usable. */
static void run_bad_calls(const char *backend, kp_device *dev) {
    MPI_Comm comm = MPI_COMM_WORLD;
    char detail[600] = "";
    int ok = 0;
    kp_status st = KP_OK;
    kp_ep *ep = NULL;
    kp_buffer *b = NULL;
    kp_ep_options o = base_options(&comm);
    const size_t region = 1 << 16, total = 4 * region;
    uint8_t *poison = malloc(total), *after = malloc(total);
    memset(poison, 0xab, total);
    TRY(kp_ep_create(dev, &o, &ep));
    kp_ep_info info;
    TRY(kp_ep_get_info(ep, &info));
    TRY(kp_buffer_alloc(dev, total, &b));
    TRY(kp_buffer_write(stream, b, 0, poison, total));
    int32_t ids[4] = {0, 1, (int32_t)o.num_experts, 2}; /* token 1 slot 0 is out of range */
    TRY(kp_buffer_write(stream, b, 0, ids, sizeof ids));
    kp_ep_dispatch_params dp = {0};
    kp_ep_dispatch_result r;
    int64_t os[1] = {5};
    TRY(tensor2(&dp.topk_ids, b, 0, KP_I32, 2, 2));
    TRY(tensor2(&dp.x, b, region, KP_F32, 2, 16));
    TRY(kp_tensor_init(&dp.expert_offsets, b, 2 * region, KP_I32, 1, os, NULL));
    TRY(tensor2(&dp.recv_x, b, 3 * region, KP_F32, info.max_recv_rows - 1, 16));
    st = kp_ep_dispatch(ep, stream, &dp, &r);
    if (st != KP_ERR_INVALID_SHAPE || !strstr(kp_last_error(), "recv_x")) {
        snprintf(detail, sizeof detail, "recv_x too small: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    TRY(tensor2(&dp.recv_x, b, 3 * region, KP_F32, info.max_recv_rows, 16));
    kp_tensor x16 = dp.x;
    dp.x.dtype = KP_BF16;
    st = kp_ep_dispatch(ep, stream, &dp, &r);
    if (st != KP_ERR_INVALID_DTYPE) {
        snprintf(detail, sizeof detail, "x bf16: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    dp.x = x16;
    st = kp_ep_dispatch(ep, stream, &dp, &r);
    if (st != KP_ERR_INVALID_ARGUMENT || !strstr(kp_last_error(), "topk_ids[1, 0]")) {
        snprintf(detail, sizeof detail, "bad expert id: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    kp_ep_combine_params cp = {0};
    TRY(tensor2(&cp.expert_out, b, 3 * region, KP_F32, info.max_recv_rows, 16));
    TRY(tensor2(&cp.topk_weights, b, 0, KP_F32, 2, 2));
    TRY(tensor2(&cp.out, b, region, KP_F32, 2, 16));
    st = kp_ep_combine(ep, stream, &cp);
    if (st != KP_ERR_INVALID_ARGUMENT || !strstr(kp_last_error(), "no kp_ep_dispatch")) {
        snprintf(detail, sizeof detail, "combine first: %s: %s", kp_status_str(st), kp_last_error());
        goto done;
    }
    TRY(kp_buffer_read(stream, b, 0, after, total));
    memcpy(poison, ids, sizeof ids);
    if (memcmp(poison, after, total) != 0) {
        snprintf(detail, sizeof detail, "a refused call wrote to a tensor");
        goto done;
    }
    ids[2] = 3; /* now valid: the handle must still work */
    TRY(kp_buffer_write(stream, b, 0, ids, sizeof ids));
    TRY(kp_ep_dispatch(ep, stream, &dp, &r));
    cp.out = dp.x; /* out may be x: it was read before */
    TRY(tensor2(&cp.topk_weights, b, 2 * region + 4096, KP_F32, 2, 2));
    TRY(kp_ep_combine(ep, stream, &cp));
    ok = 1;
done:
    if (ep) kp_ep_destroy(ep);
    if (b) kp_buffer_free(b);
    free(poison), free(after);
    report(backend, "bad dispatch/combine arguments: refused locally, nothing written, handle still usable", ok, detail);
}

/* A rank that joins late: rank 0 (short timeout) returns a timeout within a bounded
 * time instead of hanging; the handle then refuses further exchanges. "Late" is an
 * order, not a sleep: the other ranks call dispatch only once rank 0 has said (on a
 * communicator of the test's own) that its call returned, or after 30 s if it never
 * does; so no load can make them join in time, and a rank 0 that only returns when
 * they join (no timeout) returns KP_OK after 30 s and fails. rank 0's timeout (2 s)
 * also bounds kp_ep_create, a collective: the ranks must reach it within 2 s of each
 * other, coming from one barrier. Bounds: no sooner than timeout_ms, and well before
 * the others' 30 s. */
static void run_timeout(const char *backend, kp_device *dev) {
    if (world < 2) return;
    MPI_Comm comm = MPI_COMM_WORLD;
    char detail[600] = "";
    kp_ep *ep = NULL;
    kp_buffer *b = NULL;
    int ok = 0;
    kp_ep_options o = base_options(&comm);
    o.mode = KP_EP_MODE_CAPACITY;
    o.capacity_per_rank = 4;
    enum { SHORT_MS = 2000, LATE_WAIT_S = 30 };
    o.timeout_ms = rank == 0 ? SHORT_MS : 60000;
    MPI_Comm side; /* rank 0's "my call returned" to the others, apart from kport's traffic */
    MPI_Comm_dup(MPI_COMM_WORLD, &side);
    MPI_Barrier(MPI_COMM_WORLD);
    kp_status st = kp_ep_create(dev, &o, &ep);
    kp_ep_info info = {0};
    if (st == KP_OK) st = kp_ep_get_info(ep, &info);
    if (st == KP_OK) st = kp_buffer_alloc(dev, (size_t)info.max_recv_rows * 16 * 4 + 4096, &b);
    if (st != KP_OK) {
        snprintf(detail, sizeof detail, "setup: %s: %s", kp_status_str(st), kp_last_error());
    } else {
        kp_ep_dispatch_params dp = {0};
        int64_t xs[2] = {1, 16}, is[2] = {1, 2}, rs[2] = {info.max_recv_rows, 16}, os[1] = {5};
        int32_t ids[2] = {0, 1};
        kp_buffer_write(NULL, b, 0, ids, 8);
        kp_tensor_init(&dp.topk_ids, b, 0, KP_I32, 2, is, NULL);
        kp_tensor_init(&dp.x, b, 64, KP_F32, 2, xs, NULL);
        kp_tensor_init(&dp.expert_offsets, b, 256, KP_I32, 1, os, NULL);
        kp_tensor_init(&dp.recv_x, b, 512, KP_F32, 2, rs, NULL);
        kp_ep_dispatch_result r;
        int returned = 0;
        if (rank != 0) { /* wait (bounded) for rank 0's call to return */
            int flag = 0;
            for (double t = now_s(); !flag && now_s() - t < LATE_WAIT_S; usleep(1000))
                MPI_Iprobe(0, 77, side, &flag, MPI_STATUS_IGNORE);
            if (flag) MPI_Recv(&returned, 1, MPI_INT, 0, 77, side, MPI_STATUS_IGNORE);
        }
        double t0 = now_s();
        st = kp_ep_dispatch(ep, NULL, &dp, &r);
        double dt = now_s() - t0;
        if (rank == 0) {
            returned = 1;
            for (int to = 1; to < world; to++) MPI_Send(&returned, 1, MPI_INT, to, 77, side);
            ok = st == KP_ERR_BACKEND && strstr(kp_last_error(), "timed out") && dt >= SHORT_MS * 1e-3 &&
                 dt < LATE_WAIT_S / 2;
            snprintf(detail, sizeof detail, "%s after %.2f s: %s", kp_status_str(st), dt, kp_last_error());
            if (ok) st = kp_ep_dispatch(ep, NULL, &dp, &r); /* (after no timeout, it would wait for the others) */
            if (ok && !(st == KP_ERR_BACKEND && strstr(kp_last_error(), "destroy"))) {
                ok = 0;
                snprintf(detail, sizeof detail, "after a timeout: %s: %s", kp_status_str(st), kp_last_error());
            }
        } else {
            ok = st == KP_OK && returned;
            snprintf(detail, sizeof detail, "late rank: %s: %s%s", kp_status_str(st), kp_last_error(),
                     returned ? "" : " (rank 0's call had not returned after 30 s)");
        }
    }
    MPI_Barrier(MPI_COMM_WORLD); /* lets rank 0's abandoned exchange complete */
    MPI_Comm_free(&side);
    if (ep) kp_ep_destroy(ep);
    if (b) kp_buffer_free(b);
    report(backend, "timeout: a late rank makes the call fail in bounded time, not hang", ok, detail);
}

static const ep_case cases[] = {
    {"normal random", KP_F32, 16, 32, 4, 16, {16, 9, 13, 5}, ROUTE_RANDOM, 0, KP_EP_MODE_NORMAL, 0, 0},
    {"normal random", KP_BF16, 16, 32, 4, 16, {16, 9, 13, 5}, ROUTE_RANDOM, 0, KP_EP_MODE_NORMAL, 0, 0},
    {"normal all tokens to rank 0's experts", KP_BF16, 16, 32, 2, 16, {12, 16, 3, 7}, ROUTE_ONE_RANK, 0,
     KP_EP_MODE_NORMAL, 0, 0},
    {"normal skewed ranges, a rank with no experts, ranks with no tokens", KP_F32, 16, 32, 4, 16, {10, 0, 0, 6},
     ROUTE_RANDOM, 1, KP_EP_MODE_NORMAL, 0, 0},
    {"normal T=1", KP_BF16, 16, 32, 4, 4, {1, 1, 1, 1}, ROUTE_RANDOM, 0, KP_EP_MODE_NORMAL, 0, 0},
    {"normal every token to the last experts", KP_F32, 16, 48, 3, 16, {16, 16, 16, 16}, ROUTE_LAST_EXPERT, 0,
     KP_EP_MODE_NORMAL, 0, 0},
    {"capacity, fits", KP_BF16, 16, 32, 4, 16, {16, 9, 13, 5}, ROUTE_RANDOM, 0, KP_EP_MODE_CAPACITY, 64, 0},
    {"capacity, fits", KP_F32, 16, 32, 2, 8, {1, 0, 8, 3}, ROUTE_ONE_RANK, 0, KP_EP_MODE_CAPACITY, 16, 0},
    {"capacity overflow is reported and dropped pairs count as zero", KP_F32, 16, 32, 4, 16, {16, 9, 13, 5},
     ROUTE_ONE_RANK, 0, KP_EP_MODE_CAPACITY, 5, 1},
};

/* kp_ep_dispatch_async's cases (capacity mode over the fake libnccl): skewed routings,
 * empty ranks, T=1, overflow */
static const ep_case async_cases[] = {
    {"capacity, fits", KP_BF16, 16, 32, 4, 16, {16, 9, 13, 5}, ROUTE_RANDOM, 0, KP_EP_MODE_CAPACITY, 64, 0},
    {"capacity, all tokens to rank 0's experts, T=1 and T=0 ranks", KP_F32, 16, 32, 2, 8, {1, 0, 8, 3},
     ROUTE_ONE_RANK, 0, KP_EP_MODE_CAPACITY, 16, 0},
    {"capacity, skewed ranges, a rank with no experts, ranks with no tokens", KP_F32, 16, 32, 4, 16,
     {10, 0, 0, 6}, ROUTE_RANDOM, 1, KP_EP_MODE_CAPACITY, 64, 0},
    {"capacity T=1", KP_BF16, 16, 32, 4, 4, {1, 1, 1, 1}, ROUTE_RANDOM, 0, KP_EP_MODE_CAPACITY, 4, 0},
    {"capacity overflow is reported on the device and dropped pairs count as zero", KP_F32, 16, 32, 4, 16,
     {16, 9, 13, 5}, ROUTE_ONE_RANK, 0, KP_EP_MODE_CAPACITY, 5, 1},
    {"capacity overflow, every token to the last experts", KP_BF16, 16, 48, 3, 16, {16, 16, 16, 16},
     ROUTE_LAST_EXPERT, 0, KP_EP_MODE_CAPACITY, 7, 1},
};

void run_cases_over_nccl(const char *backend, kp_device *dev, const void *nccl_comm, long (*polls)(void)) {
    case_kind = KP_EP_COMM_NCCL;
    case_comm = nccl_comm;
    case_polls = polls;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(backend, dev, &cases[i], 0);
    case_async = 1; /* capacity mode with no host sync: bitwise (scale) and through the GEMM */
    for (size_t i = 0; i < sizeof async_cases / sizeof *async_cases; i++)
        for (int gemm = 0; gemm < 2; gemm++) run_case(backend, dev, &async_cases[i], gemm);
    case_async = 0;
    run_async_bad_calls(backend, dev, nccl_comm);
    case_kind = KP_EP_COMM_MPI;
    case_comm = NULL;
    case_polls = NULL;
}

static kp_device *open_backend(const char *name) {
    for (int i = 0; i < kp_device_count(); i++) {
        kp_device_info info;
        if (kp_device_info_get(i, &info) == KP_OK && strcmp(info.backend, name) == 0) {
            kp_device *d = NULL;
            if (kp_device_open(i, &d) == KP_OK) return d;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    kp_status st = kp_init(NULL);
    if (st != KP_OK) {
        fprintf(stderr, "kp_init: %s\n", kp_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const char *only = getenv("KPORT_EP_TEST_BACKENDS");
    const char *backends[] = {"cpu", "opencl"};
    for (int b = 0; b < 2; b++) {
        if (only && !strstr(only, backends[b])) continue;
        kp_device *dev = open_backend(backends[b]);
        int have = dev != NULL, all = 0;
        MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (!all) {
            if (rank == 0) printf("SKIP np%d %s: no device of this backend\n", world, backends[b]);
            n_skip++;
            if (dev) kp_device_close(dev);
            continue;
        }
        if (kp_stream_create(dev, &stream) != KP_OK) {
            fprintf(stderr, "rank %d: kp_stream_create: %s\n", rank, kp_last_error());
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            for (int gemm = 0; gemm < 2; gemm++) run_case(backends[b], dev, &cases[i], gemm);
        run_forward_case(backends[b], dev);
        run_forward_ep_cases(backends[b], dev);
        if (b == 0) run_nccl_cases(backends[b], dev); /* cpu: the fake libnccl treats addresses as host memory */
        run_mismatch(backends[b], dev);
        run_bad_calls(backends[b], dev);
        run_timeout(backends[b], dev);
        kp_stream_destroy(stream);
        kp_device_close(dev);
    }
    kp_shutdown();
    if (rank == 0) printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
    MPI_Finalize();
    return n_fail ? 1 : 0;
}
