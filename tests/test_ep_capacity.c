/*
 * tests/test_ep_capacity.c — the ep_capacity backend slot (core/backend.h: PLAN_SEND,
 * PLAN_RECV, GATHER, the steps of kp_ep_dispatch_async) on every backend that has it,
 * against the spec: the same integers and bytes on cpu and on the GPU kernels
 * (kernels/moe/ep_capacity.cl), outputs poisoned, guard bytes around every output, and
 * corrupt headers, counts and indexes clamped (moving nothing out of bounds).
 */
#include "kp_test.h"
#include "backend.h" /* the ep_capacity slot, called directly */

#include <stdlib.h>
#include <string.h>

#define CAP_GUARD 64 /* poisoned bytes before and after every output */

static kp_buffer *cap_buf(kp_device *d, size_t bytes) {
    kp_buffer *b = NULL;
    CHECK_OK(kp_buffer_alloc(d, bytes + 2 * CAP_GUARD, &b));
    unsigned char *p = malloc(bytes + 2 * CAP_GUARD);
    memset(p, 0xab, bytes + 2 * CAP_GUARD);
    CHECK_OK(kp_buffer_write(NULL, b, 0, p, bytes + 2 * CAP_GUARD));
    free(p);
    return b;
}

/* reads the bytes after the front guard; fails when either guard was written */
static void cap_read(kp_buffer *b, size_t bytes, void *out) {
    unsigned char *p = malloc(bytes + 2 * CAP_GUARD);
    CHECK_OK(kp_buffer_read(NULL, b, 0, p, bytes + 2 * CAP_GUARD));
    for (size_t i = 0; i < CAP_GUARD; i++)
        CHECK_MSG(p[i] == 0xab && p[CAP_GUARD + bytes + i] == 0xab,
                  "ep_capacity wrote outside its output of %zu bytes (guard byte %zu: %02x before, %02x after)", bytes,
                  i, p[i], p[CAP_GUARD + bytes + i]);
    memcpy(out, p + CAP_GUARD, bytes);
    free(p);
}

static kp_buffer *cap_input(kp_device *d, const void *data, size_t bytes) {
    kp_buffer *b = NULL;
    CHECK_OK(kp_buffer_alloc(d, bytes, &b));
    CHECK_OK(kp_buffer_write(NULL, b, 0, data, bytes));
    return b;
}

enum { W = 3, E = 9, K = 3, T = 7, C = 4, HW = 4 + 2, P = T * K, LE = 3 };
static const int32_t range[W + 1] = {0, 2, 5, 9}; /* 2, 3 and 4 local experts: max 4 */

typedef struct send_plan {
    int32_t sidx[W * C], spos[P], hdr[W * HW], cnt;
} send_plan;

/* PLAN_SEND on d for sorted ids / offsets given on the host (kp_moe_align's output). */
static void plan_send(kp_device *d, const int32_t *sorted, const int32_t *aoff, send_plan *out) {
    kp_buffer *bsorted = cap_input(d, sorted, P * 4), *baoff = cap_input(d, aoff, (E + 1) * 4),
              *brange = cap_input(d, range, sizeof range);
    kp_buffer *bsidx = cap_buf(d, W * C * 4), *bspos = cap_buf(d, P * 4), *bhdr = cap_buf(d, W * HW * 4),
              *bcnt = cap_buf(d, 4);
    kp_ep_capacity_args a = {.step = KP_EP_CAPACITY_PLAN_SEND, .world = W, .capacity = C, .topk = K,
                             .header_ints = HW, .pairs = P, .in = {bsorted, baoff, brange},
                             .out = {bsidx, bspos, bhdr, bcnt}, .out_off = {CAP_GUARD, CAP_GUARD, CAP_GUARD, CAP_GUARD}};
    CHECK_OK(d->iface->ep_capacity(d->default_stream, &a));
    cap_read(bsidx, sizeof out->sidx, out->sidx), cap_read(bspos, sizeof out->spos, out->spos);
    cap_read(bhdr, sizeof out->hdr, out->hdr), cap_read(bcnt, 4, &out->cnt);
    kp_buffer *bufs[] = {bsorted, baoff, brange, bsidx, bspos, bhdr, bcnt};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) CHECK_OK(kp_buffer_free(bufs[i]));
}

static void check_plan(const send_plan *got, const send_plan *want) {
    for (int i = 0; i < W * C; i++)
        CHECK_MSG(got->sidx[i] == want->sidx[i], "send_idx[%d] = %d, expected %d", i, got->sidx[i], want->sidx[i]);
    for (int i = 0; i < P; i++)
        CHECK_MSG(got->spos[i] == want->spos[i], "send_pos[%d] = %d, expected %d", i, got->spos[i], want->spos[i]);
    for (int i = 0; i < W * HW; i++)
        CHECK_MSG(got->hdr[i] == want->hdr[i], "header[%d] = %d, expected %d", i, got->hdr[i], want->hdr[i]);
    CHECK_INT_EQ(got->cnt, want->cnt);
}

/* PLAN_RECV on d for W headers; LE local experts. */
static void plan_recv(kp_device *d, const int32_t *hin, int32_t *offs, int32_t *rmap, int32_t *gsrc, int32_t *all) {
    kp_buffer *bhin = cap_input(d, hin, W * HW * 4), *boffs = cap_buf(d, (LE + 1) * 4), *brmap = cap_buf(d, W * C * 4),
              *bgsrc = cap_buf(d, W * C * 4), *bcnt = cap_buf(d, 4);
    kp_ep_capacity_args r = {.step = KP_EP_CAPACITY_PLAN_RECV, .world = W, .capacity = C, .header_ints = HW,
                             .local_experts = LE, .in = {bhin}, .out = {boffs, brmap, bgsrc, bcnt},
                             .out_off = {CAP_GUARD, CAP_GUARD, CAP_GUARD, CAP_GUARD}};
    CHECK_OK(d->iface->ep_capacity(d->default_stream, &r));
    cap_read(boffs, (LE + 1) * 4, offs), cap_read(brmap, W * C * 4, rmap), cap_read(bgsrc, W * C * 4, gsrc);
    cap_read(bcnt, 4, all);
    kp_buffer *bufs[] = {bhin, boffs, brmap, bgsrc, bcnt};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) CHECK_OK(kp_buffer_free(bufs[i]));
}

/* GATHER of n rows of rb bytes from src (sr rows), dst shifted by shift bytes (the
 * vector width the kernel may use: 16, 4 or 1); every byte checked. */
static void check_gather(kp_device *d, int rb, int shift, const int32_t *idx, int n, int sr) {
    unsigned char *src = malloc((size_t)sr * rb), *got = malloc((size_t)n * rb + shift);
    for (int i = 0; i < sr * rb; i++) src[i] = (unsigned char)(i * 7 + 3);
    kp_buffer *bsrc = cap_input(d, src, (size_t)sr * rb), *bidx = cap_input(d, idx, (size_t)n * 4);
    kp_buffer *bdst = cap_buf(d, (size_t)n * rb + shift);
    kp_ep_capacity_args g = {.step = KP_EP_CAPACITY_GATHER, .rows = n, .src_rows = sr, .row_bytes = (size_t)rb,
                             .in = {bsrc, bidx}, .out = {bdst}, .out_off = {CAP_GUARD + (size_t)shift}};
    CHECK_OK(d->iface->ep_capacity(d->default_stream, &g));
    cap_read(bdst, (size_t)n * rb + shift, got);
    for (int b = 0; b < shift; b++) CHECK_MSG(got[b] == 0xab, "gather wrote before its output (row bytes %d)", rb);
    int moved_rows = 0;
    for (int i = 0; i < n; i++) {
        const int moved = idx[i] >= 0 && idx[i] < sr;
        moved_rows += moved;
        for (int b = 0; b < rb; b++)
            CHECK_MSG(got[shift + i * rb + b] == (moved ? src[idx[i] * rb + b] : 0xab),
                      "row bytes %d, shift %d: gathered row %d byte %d", rb, shift, i, b);
    }
    CHECK(moved_rows > 0 && moved_rows < n);
    kp_buffer *bufs[] = {bsrc, bidx, bdst};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) CHECK_OK(kp_buffer_free(bufs[i]));
    free(src), free(got);
}

/* PLAN_SEND, PLAN_RECV and GATHER: bit-exact against a reference written from the spec
 * (per destination rank the first C pairs in (expert, token, slot) order are sent, the
 * rest dropped; received rows grouped by local expert, then source, then the source's
 * order), nothing written outside the outputs, and corrupt counts or indexes clamped
 * (moving nothing out of bounds); on a GPU backend also equal to the cpu backend's
 * integers for corrupt sort offsets. */
KP_CONFORMANCE(ep_capacity_steps_match_the_spec) {
    if (!kp_backend_has_slot(d->iface, ep_capacity)) KP_SKIP("%s has no ep_capacity slot", d->iface->name);
    int32_t ids[P];
    uint64_t rs = 12345;
    for (int t = 0; t < T; t++)
        for (int s = 0; s < K; s++) {
            int32_t e, dup;
            do {
                rs = rs * 6364136223846793005ull + 1442695040888963407ull;
                e = (int32_t)((rs >> 33) % E);
                e = e < 5 && (rs >> 40) % 4 ? e % 2 : e; /* skewed: rank 0's experts overflow */
                dup = 0;
                for (int j = 0; j < s; j++) dup |= ids[t * K + j] == e;
            } while (dup);
            ids[t * K + s] = e;
        }
    /* kp_moe_align's sort on this device, as core/ep_capacity.c runs it */
    kp_buffer *bids = cap_input(d, ids, sizeof ids), *bsorted = NULL, *baoff = NULL, *bpos = NULL;
    CHECK_OK(kp_buffer_alloc(d, sizeof ids, &bsorted));
    CHECK_OK(kp_buffer_alloc(d, (E + 1) * 4, &baoff));
    CHECK_OK(kp_buffer_alloc(d, sizeof ids, &bpos));
    kp_moe_align_params ap = {.num_experts = E, .block_size = 1};
    CHECK_OK(kp_tensor_init(&ap.topk_ids, bids, 0, KP_I32, 2, (int64_t[]){T, K}, NULL));
    CHECK_OK(kp_tensor_init(&ap.sorted_ids, bsorted, 0, KP_I32, 1, (int64_t[]){P}, NULL));
    CHECK_OK(kp_tensor_init(&ap.expert_offsets, baoff, 0, KP_I32, 1, (int64_t[]){E + 1}, NULL));
    CHECK_OK(kp_tensor_init(&ap.token_pos, bpos, 0, KP_I32, 2, (int64_t[]){T, K}, NULL));
    CHECK_OK(kp_moe_align(d->default_stream, &ap));
    int32_t sorted[P], aoff[E + 1];
    CHECK_OK(kp_buffer_read(NULL, bsorted, 0, sorted, sizeof sorted));
    CHECK_OK(kp_buffer_read(NULL, baoff, 0, aoff, sizeof aoff));
    kp_buffer *bufs[] = {bids, bsorted, baoff, bpos};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) CHECK_OK(kp_buffer_free(bufs[i]));

    /* PLAN_SEND */
    send_plan got, want = {.cnt = 0};
    plan_send(d, sorted, aoff, &got);
    for (int i = 0; i < W * C; i++) want.sidx[i] = -1;
    for (int d2 = 0; d2 < W; d2++) {
        int32_t sent = 0;
        for (int32_t e = range[d2]; e < range[d2 + 1]; e++)
            for (int i = 0; i < P; i++) {
                if (ids[i] != e) continue;
                if (sent == C) {
                    want.spos[i] = W * C, want.cnt++;
                    continue;
                }
                want.sidx[d2 * C + sent] = i / K;
                want.spos[i] = d2 * C + sent++;
                want.hdr[d2 * HW + 2 + e - range[d2]]++;
            }
        want.hdr[d2 * HW] = sent;
    }
    for (int d2 = 0; d2 < W; d2++) want.hdr[d2 * HW + 1] = want.cnt;
    CHECK_MSG(want.cnt > 0, "the routing should overflow rank 0's capacity (a test that can fail)");
    check_plan(&got, &want);

    /* corrupt sorted ids (negative, past the pairs): their send rows carry no x row (-1)
     * and the pairs they displaced keep the drop row; the headers count the slots */
    int32_t bad_sorted[P];
    memcpy(bad_sorted, sorted, sizeof bad_sorted);
    const int32_t victim0 = bad_sorted[aoff[range[1]]], victim1 = bad_sorted[aoff[range[1]] + 1];
    bad_sorted[aoff[range[1]]] = -7, bad_sorted[aoff[range[1]] + 1] = P + 5; /* rank 1's first two */
    send_plan bad_want = want;
    bad_want.sidx[1 * C + 0] = bad_want.sidx[1 * C + 1] = -1;
    bad_want.spos[victim0] = bad_want.spos[victim1] = W * C;
    CHECK_MSG(aoff[range[2]] - aoff[range[1]] >= 2, "rank 1 should receive two pairs");
    plan_send(d, bad_sorted, aoff, &got);
    check_plan(&got, &bad_want);

    /* corrupt sort offsets (negative, past the pairs, decreasing inside a destination's
     * experts): clamped, and on a GPU backend the same integers as the cpu backend's.
     * The destinations' pair ranges stay disjoint ([0, 6), [6, 10), [10, P)): with
     * overlapping ones (never from kp_moe_align) a pair has two writers, and which send
     * row it keeps is unspecified there. */
    const int32_t bad_aoff[E + 1] = {-4, 40, 6, -1, 3, 10, P + 9, 1, 7, P + 30};
    plan_send(d, sorted, bad_aoff, &got);
    if (strcmp(d->iface->name, "cpu") != 0) {
        kp_device *cpu = kp_test_open_backend("cpu");
        send_plan ref;
        plan_send(cpu, sorted, bad_aoff, &ref);
        CHECK_OK(kp_device_close(cpu));
        check_plan(&got, &ref);
    }

    /* PLAN_RECV for a rank with LE = 3 local experts: source 0's header valid, source 1
     * empty, source 2 corrupt (counts past C, negative) */
    const int32_t hin[W * HW] = {4, 2, 1, 0, 3, 0, /**/ 0, 0, 0, 0, 0, 0, /**/ 9, 5, 3, -2, 7, 0};
    int32_t offs[LE + 1], rmap[W * C], gsrc[W * C], all;
    plan_recv(d, hin, offs, rmap, gsrc, &all);
    /* expert 0: src 0 rows 0 (1 row), src 2 rows 0-2 (3 of C=4 clamped); expert 1: src 2
     * nothing (-2); expert 2: src 0 rows 1-3, src 2 row 3 (clamped to what is left) */
    const int32_t want_offs[LE + 1] = {0, 4, 4, 8};
    const int32_t want_gsrc[W * C] = {0, 8, 9, 10, 1, 2, 3, 11, -1, -1, -1, -1};
    for (int i = 0; i <= LE; i++) CHECK_MSG(offs[i] == want_offs[i], "offsets[%d] = %d, expected %d", i, offs[i], want_offs[i]);
    for (int i = 0; i < W * C; i++) {
        CHECK_MSG(gsrc[i] == want_gsrc[i], "grouped_src[%d] = %d, expected %d", i, gsrc[i], want_gsrc[i]);
        if (gsrc[i] >= 0) CHECK_MSG(rmap[gsrc[i]] == i, "recv_map is not grouped_src's inverse at %d", i);
    }
    for (int i = 4; i < 8; i++) CHECK_MSG(rmap[i] == -1, "recv_map[%d]: source 1 sent nothing", i);
    CHECK_INT_EQ(all, 2 + 0 + 5);

    /* every header corrupt the other way: rows sent negative, drops past INT32_MAX in sum */
    const int32_t hbad[W * HW] = {-3, INT32_MAX, 5, 5, 5, 5, /**/ 2, INT32_MAX, -1, 9, 0, 0,
                                  /**/ 4, -9, INT32_MIN, 4, 4, 4};
    plan_recv(d, hbad, offs, rmap, gsrc, &all);
    /* src 0 sends nothing; src 1: expert 0 none (-1), expert 1 both rows; src 2: expert
     * 0 none, expert 1 all four */
    const int32_t want_offs2[LE + 1] = {0, 0, 6, 6};
    const int32_t want_gsrc2[W * C] = {4, 5, 8, 9, 10, 11, -1, -1, -1, -1, -1, -1};
    for (int i = 0; i <= LE; i++) CHECK_MSG(offs[i] == want_offs2[i], "offsets[%d] = %d, expected %d", i, offs[i], want_offs2[i]);
    for (int i = 0; i < W * C; i++) {
        CHECK_MSG(gsrc[i] == want_gsrc2[i], "grouped_src[%d] = %d, expected %d", i, gsrc[i], want_gsrc2[i]);
        if (gsrc[i] >= 0) CHECK_MSG(rmap[gsrc[i]] == i, "recv_map is not grouped_src's inverse at %d", i);
    }
    CHECK_INT_EQ(all, INT32_MAX);

    /* GATHER: idx -1, src_rows and INT32_MIN move nothing; rows of 32 bytes (16-byte
     * moves), 12 (4-byte), 5 and a destination 4 or 1 bytes off (narrower moves) */
    enum { SR = 5, N = 8 };
    const int32_t idx[N] = {2, -1, 0, SR, 4, INT32_MIN, 2, SR - 1};
    check_gather(d, 32, 0, idx, N, SR);
    check_gather(d, 32, 4, idx, N, SR);
    check_gather(d, 12, 0, idx, N, SR);
    check_gather(d, 5, 0, idx, N, SR);
    check_gather(d, 16, 1, idx, N, SR);
    /* more rows than one pass of work-items: 300 rows of 14336 bytes (a V3 bf16 row) */
    enum { NB = 300, SRB = 97 };
    int32_t *bidx = malloc(NB * sizeof *bidx);
    for (int i = 0; i < NB; i++) bidx[i] = i % 11 == 3 ? -1 : (int32_t)((i * 37) % (SRB + 3));
    check_gather(d, 14336, 0, bidx, NB, SRB);
    free(bidx);
}

/* PLAN_RECV from the spec (core/backend.h): per local expert le < min(LE, HW - 2), per
 * source s in order, the next min(its count, what is left of its rows sent) of s's rows,
 * rows sent clamped to [0, C] and a negative count taken as 0; experts past the header's
 * counts get no rows; dropped_all the clamped sum of the headers' drops. */
static void ref_plan_recv(int w, int c, int hw, int le_n, const int32_t *hdr, int32_t *offs, int32_t *rmap,
                          int32_t *gsrc, int32_t *all) {
    int32_t *first = calloc((size_t)w, sizeof *first);
    int64_t dropped = 0;
    int32_t row = 0;
    for (int i = 0; i < w * c; i++) rmap[i] = gsrc[i] = -1;
    const int counted = le_n < hw - 2 ? le_n : hw - 2;
    for (int le = 0; le < counted; le++) {
        offs[le] = row;
        for (int s = 0; s < w; s++) {
            const int64_t sent = hdr[s * hw] < 0 ? 0 : hdr[s * hw] > c ? c : hdr[s * hw];
            const int64_t n = hdr[s * hw + 2 + le] < 0 ? 0 : hdr[s * hw + 2 + le];
            const int64_t take = n < sent - first[s] ? n : sent - first[s];
            for (int64_t r = 0; r < take; r++, row++) {
                const int32_t at = (int32_t)(s * c + first[s] + r);
                rmap[at] = row, gsrc[row] = at;
            }
            first[s] += (int32_t)take;
        }
    }
    for (int le = counted; le <= le_n; le++) offs[le] = row;
    for (int s = 0; s < w; s++) dropped += hdr[s * hw + 1] < 0 ? 0 : hdr[s * hw + 1];
    *all = dropped > INT32_MAX ? INT32_MAX : (int32_t)dropped;
    free(first);
}

/* PLAN_RECV on d against ref_plan_recv for w sources, every output checked. */
static void check_plan_recv(kp_device *d, int w, int c, int hw, int le_n, const int32_t *hdr) {
    const size_t rows = (size_t)w * c;
    kp_buffer *bhin = cap_input(d, hdr, (size_t)w * hw * 4), *boffs = cap_buf(d, (le_n + 1) * 4),
              *brmap = cap_buf(d, rows * 4), *bgsrc = cap_buf(d, rows * 4), *bcnt = cap_buf(d, 4);
    kp_ep_capacity_args r = {.step = KP_EP_CAPACITY_PLAN_RECV, .world = w, .capacity = c, .header_ints = hw,
                             .local_experts = le_n, .in = {bhin}, .out = {boffs, brmap, bgsrc, bcnt},
                             .out_off = {CAP_GUARD, CAP_GUARD, CAP_GUARD, CAP_GUARD}};
    CHECK_OK(d->iface->ep_capacity(d->default_stream, &r));
    int32_t *got = malloc((le_n + 1 + 2 * rows + 1) * 4), *want = malloc((le_n + 1 + 2 * rows + 1) * 4);
    int32_t *g_rmap = got + le_n + 1, *g_gsrc = g_rmap + rows, *w_rmap = want + le_n + 1, *w_gsrc = w_rmap + rows;
    cap_read(boffs, (le_n + 1) * 4, got), cap_read(brmap, rows * 4, g_rmap), cap_read(bgsrc, rows * 4, g_gsrc);
    cap_read(bcnt, 4, g_gsrc + rows);
    ref_plan_recv(w, c, hw, le_n, hdr, want, w_rmap, w_gsrc, w_gsrc + rows);
    for (int i = 0; i <= le_n; i++)
        CHECK_MSG(got[i] == want[i], "W %d: offsets[%d] = %d, expected %d", w, i, got[i], want[i]);
    for (size_t i = 0; i < rows; i++) {
        CHECK_MSG(g_rmap[i] == w_rmap[i], "W %d: recv_map[%zu] = %d, expected %d", w, i, g_rmap[i], w_rmap[i]);
        CHECK_MSG(g_gsrc[i] == w_gsrc[i], "W %d: grouped_src[%zu] = %d, expected %d", w, i, g_gsrc[i], w_gsrc[i]);
    }
    CHECK_MSG(g_gsrc[rows] == w_gsrc[rows], "W %d: dropped_all = %d, expected %d", w, g_gsrc[rows], w_gsrc[rows]);
    kp_buffer *bufs[] = {bhin, boffs, brmap, bgsrc, bcnt};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) CHECK_OK(kp_buffer_free(bufs[i]));
    free(got), free(want);
}

/* PLAN_RECV's scan over the sources at world sizes around and past the GPU kernels'
 * work-group of 256 (one source per work-item, then runs of 2, 3 and 9 per work-item):
 * random headers (a few corrupt: rows sent past C or negative, counts negative or past
 * what is left), some sources empty, a header with fewer counts than local experts. */
KP_CONFORMANCE(ep_capacity_plan_recv_many_sources) {
    if (!kp_backend_has_slot(d->iface, ep_capacity)) KP_SKIP("%s has no ep_capacity slot", d->iface->name);
    const int worlds[] = {1, 255, 256, 257, 600, 2051};
    for (size_t wi = 0; wi < sizeof worlds / sizeof *worlds; wi++) {
        const int w = worlds[wi], c = 5, le_n = 4, hw = wi % 2 ? 2 + le_n : 2 + le_n - 1;
        int32_t *hdr = malloc((size_t)w * hw * sizeof *hdr);
        for (int s = 0; s < w; s++) {
            int32_t *h = hdr + (size_t)s * hw;
            const uint64_t r = kp_test_rand_u64();
            h[0] = r % 11 == 0 ? 0 : (int32_t)(r % 6); /* rows sent, 0..C */
            h[1] = (int32_t)(r >> 8 & 3);              /* drops */
            for (int q = 2; q < hw; q++) h[q] = (int32_t)(kp_test_rand_u64() % 3);
            if (r % 13 == 1) h[0] = c + 4;            /* corrupt: past C */
            if (r % 17 == 2) h[0] = -3;
            if (r % 19 == 3) h[2] = -2, h[hw - 1] = 9;
        }
        check_plan_recv(d, w, c, hw, le_n, hdr);
        free(hdr);
    }
}

/* The slot's arguments come from the core, but an inconsistent step is still an error with
 * a message, never a launch: an unknown step everywhere; on the GPU backends (which check
 * what their kernels assume) no world, a misaligned index and a missing buffer. */
KP_CONFORMANCE(ep_capacity_rejects_inconsistent_steps) {
    if (!kp_backend_has_slot(d->iface, ep_capacity)) KP_SKIP("%s has no ep_capacity slot", d->iface->name);
    kp_buffer *b = cap_buf(d, 256);
    kp_ep_capacity_args a = {.step = 7, .world = 1, .capacity = 1, .header_ints = 2};
    CHECK_ERR(d->iface->ep_capacity(d->default_stream, &a), KP_ERR_INVALID_ARGUMENT, "step 7 is unknown");
    if (strcmp(d->iface->name, "cpu") != 0) {
        kp_ep_capacity_args r = {.step = KP_EP_CAPACITY_PLAN_RECV, .world = 0, .capacity = 1, .header_ints = 3,
                                 .in = {b}, .out = {b, b, b, b}};
        CHECK_ERR(d->iface->ep_capacity(d->default_stream, &r), KP_ERR_INVALID_ARGUMENT, "world");
        kp_ep_capacity_args g = {.step = KP_EP_CAPACITY_GATHER, .rows = 2, .src_rows = 2, .row_bytes = 16,
                                 .in = {b, b}, .in_off = {0, 2}, .out = {b}};
        CHECK_ERR(d->iface->ep_capacity(d->default_stream, &g), KP_ERR_INVALID_ARGUMENT, "multiple of 4");
        g.in_off[1] = 0, g.out[0] = NULL;
        CHECK_ERR(d->iface->ep_capacity(d->default_stream, &g), KP_ERR_INVALID_ARGUMENT, "missing");
    }
    unsigned char after[256];
    cap_read(b, sizeof after, after);
    for (size_t i = 0; i < sizeof after; i++) CHECK_MSG(after[i] == 0xab, "a refused step wrote byte %zu", i);
    CHECK_OK(kp_buffer_free(b));
}
