/*
 * tests/ep/ep_layer.h — one MoE layer under expert parallelism, as the layer tests set
 * it up (tests/ep/ep_layer.c): tests/ep/test_ep_forward.c (kp_moe_forward_ep) and
 * tests/ep/test_ep_forward_async.c (kp_moe_forward_ep_async) share its sizes, its case
 * struct, the host data (the same weights on every rank), the device copies and params
 * (this rank's slice of the experts), the kp_moe_forward reference and the check of out.
 */
#ifndef KPORT_TESTS_EP_LAYER_H
#define KPORT_TESTS_EP_LAYER_H

#include "ep_test.h"

#include <stddef.h>

/* experts, hidden, expert inter, shared expert inter, top-k, tokens per rank at most,
 * guard bytes on both sides of out */
enum { E = 16, H = 32, I = 16, IS = 16, K = 4, MAXT = 8, GUARD = 64 };

typedef struct layer_case {
    const char *name;
    kp_dtype dtype;
    int shared;        /* with a shared expert of inter IS */
    int deepseek;      /* n_group 4, topk_group 2, sigmoid, bias, scale 2.5; else softmax, renormalised */
    int32_t tokens[4]; /* rank r's T: tokens[r % 4] */
    int skew;          /* every token's experts on rank 0 */
    kp_ep_mode mode;
    int32_t capacity;
    int overflow; /* a capacity overflow is expected */
} layer_case;

/* rng_state before the weights, and before rank r's tokens and logits (tokens + per_rank * r) */
typedef struct layer_seeds {
    uint64_t weights, tokens, per_rank;
} layer_seeds;

/* One rank's layer: its case, T, host data, device copies, params (out at GUARD in bout,
 * poisoned with NaN bytes, guard bytes around it) and handle. */
typedef struct layer {
    const layer_case *c;
    int64_t T;
    size_t out_bytes;
    void *x, *w13, *w2, *w13s, *w2s; /* host */
    float *logits, *bias;
    kp_buffer *bx, *blog, *bbias, *bw13, *bw2, *bw13s, *bw2s, *bout, *bws;
    kp_moe_forward_ep_params p;
    kp_ep *ep;
} layer;

/* The host data of case c with this rank's T (nothing on the device yet). */
void layer_init(layer *L, const layer_case *c, int64_t T, layer_seeds s);
/* The device copies and p (routing, x, logits, bias, this rank's w13 / w2 slice, shared
 * expert, out); no workspace. */
kp_status layer_setup(layer *L, kp_device *dev);
/* The workspace L->ep's query asks for, at offset, with no slack past it. */
kp_status layer_workspace(layer *L, kp_device *dev, size_t offset);
/* Destroys the handle and frees the buffers and the host data. */
void layer_free(layer *L);
/* kp_ep_options for case c: this rank's E / world experts, timeout_ms. */
kp_ep_options layer_options(const layer_case *c, kp_ep_comm_kind kind, const void *comm, int32_t timeout_ms);
/* The reference: kp_moe_forward over every expert on L's tokens, read into ref [T, H]. */
kp_status layer_reference(layer *L, kp_device *dev, uint8_t *ref);

/* 1 when out and its guard bytes (L->out_bytes + 2 * GUARD from bout) still equal before. */
int layer_out_unchanged(const layer *L, const uint8_t *before);

/* How layer_check_out compares. */
typedef struct layer_check {
    const char *got, *ref; /* what out and ref are called in a failure's detail */
    int values;            /* 0: only that every element is written (dropped pairs count as zero) */
    int sum_rounding;      /* bf16 + shared: the routed sum is rounded once too (1 ulp more) */
} layer_check;
/* hout: out with its guard bytes, as read from bout. Guard bytes intact, no NaN (every
 * element written) and, with k->values, each element within 2 ulps of ref's plus 2^-20
 * (f32) or 2^-6 (bf16) of its row's largest magnitude (bf16 + shared: 1 ulp of the shared
 * row more), relative L2 within 1e-6 / 4e-3. 1 when it passes, else 0 and detail. */
int layer_check_out(const layer *L, const uint8_t *hout, const uint8_t *ref, const layer_check *k, char *detail,
                    size_t dn);

/* Sets st; on failure writes detail (a char array in scope) and jumps to done. */
#define TRY(x)                                                                                                 \
    do {                                                                                                       \
        if ((st = (x)) != KP_OK) {                                                                             \
            snprintf(detail, sizeof detail, "%s: %s: %s", #x, kp_status_str(st), kp_last_error());             \
            goto done;                                                                                         \
        }                                                                                                      \
    } while (0)

kp_status ep_upload(kp_device *d, const void *host, size_t bytes, kp_buffer **b);
kp_status tensor3(kp_tensor *t, kp_buffer *b, size_t off, kp_dtype dt, int64_t a, int64_t r, int64_t c);

#endif
