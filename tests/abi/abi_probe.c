/*
 * tests/abi/abi_probe.c — a program built against kport 0.1's header (kport_0_1.h, frozen)
 * and linked to today's libkport.so: the growable ABI's promise (issue 17) that old
 * binaries keep working. Runs moe_gate and a paged decode on the cpu device through
 * 0.1's entry points (kp_init with 0.1's options struct, kp_moe_forward_workspace_size with
 * 0.1's params included), checks exact results, and prints the workspace size of a small
 * MoE layer (test_abi.c compares it with today's header's) and "abi 0.1 ok".
 */
#include "kport_0_1.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(call)                                                                         \
    do {                                                                                  \
        kp_status st_ = (call);                                                           \
        if (st_ != KP_OK) {                                                               \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, kp_last_error()); \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

static kp_buffer *upload(kp_device *d, const void *src, size_t n) {
    kp_buffer *b;
    TRY(kp_buffer_alloc(d, n, &b));
    TRY(kp_buffer_write(NULL, b, 0, src, n));
    return b;
}

int main(void) {
    setenv("KPORT_BACKEND", "cpu", 1);
    kp_init_options opt = {NULL, 2, 0}; /* 0.1's struct, read at 0.1's size */
    TRY(kp_init(&opt));
    kp_device *d;
    TRY(kp_device_open(-1, &d));
    kp_stream *s;
    TRY(kp_stream_create(d, &s));

    /* moe_gate: softmax top-1 of two rows */
    const float logits[8] = {0, 3, 1, 2, 5, 0, 0, 0};
    kp_buffer *lb = upload(d, logits, sizeof logits), *ib, *wb;
    TRY(kp_buffer_alloc(d, 2 * sizeof(int32_t), &ib));
    TRY(kp_buffer_alloc(d, 2 * sizeof(float), &wb));
    kp_moe_gate_params g;
    memset(&g, 0, sizeof g);
    g.routing.topk = 1, g.routing.n_group = 1, g.routing.topk_group = 1;
    g.routing.scoring = KP_MOE_SCORING_SOFTMAX, g.routing.renormalize = 1, g.routing.route_scale = 1.0f;
    TRY(kp_tensor_init(&g.logits, lb, 0, KP_F32, 2, (int64_t[]){2, 4}, NULL));
    TRY(kp_tensor_init(&g.topk_ids, ib, 0, KP_I32, 2, (int64_t[]){2, 1}, NULL));
    TRY(kp_tensor_init(&g.topk_weights, wb, 0, KP_F32, 2, (int64_t[]){2, 1}, NULL));
    TRY(kp_op_supported(d, KP_OP_MOE_GATE, &g));
    TRY(kp_moe_gate(s, &g));
    TRY(kp_stream_sync(s));
    int32_t ids[2];
    float w[2];
    TRY(kp_buffer_read(s, ib, 0, ids, sizeof ids));
    TRY(kp_buffer_read(s, wb, 0, w, sizeof w));
    if (ids[0] != 1 || ids[1] != 0 || w[0] != 1.0f || w[1] != 1.0f) {
        fprintf(stderr, "moe_gate: ids %d %d weights %g %g, want 1 0 and 1 1\n", ids[0], ids[1], w[0], w[1]);
        return 1;
    }

    /* paged decode over one key: out = that key's value row */
    enum { D = 64, BS = 16 };
    float q[D], k[BS * D], v[BS * D], out[D];
    for (int i = 0; i < D; i++) q[i] = (float)(i % 7) * 0.25f - 0.5f;
    for (int i = 0; i < BS * D; i++) k[i] = (float)(i % 5) * 0.5f - 1.0f, v[i] = (float)(i % 11) - 5.0f;
    const int32_t table[1] = {0}, lens[1] = {1};
    kp_buffer *qb = upload(d, q, sizeof q), *kb = upload(d, k, sizeof k), *vb = upload(d, v, sizeof v);
    kp_buffer *tb = upload(d, table, sizeof table), *sb = upload(d, lens, sizeof lens), *ob;
    TRY(kp_buffer_alloc(d, sizeof out, &ob));
    kp_attention_decode_params a;
    memset(&a, 0, sizeof a);
    TRY(kp_tensor_init(&a.q, qb, 0, KP_F32, 4, (int64_t[]){1, 1, 1, D}, NULL));
    TRY(kp_tensor_init(&a.k_cache, kb, 0, KP_F32, 4, (int64_t[]){1, BS, 1, D}, NULL));
    TRY(kp_tensor_init(&a.v_cache, vb, 0, KP_F32, 4, (int64_t[]){1, BS, 1, D}, NULL));
    TRY(kp_tensor_init(&a.block_table, tb, 0, KP_I32, 2, (int64_t[]){1, 1}, NULL));
    TRY(kp_tensor_init(&a.seq_lens, sb, 0, KP_I32, 1, (int64_t[]){1}, NULL));
    TRY(kp_tensor_init(&a.out, ob, 0, KP_F32, 4, (int64_t[]){1, 1, 1, D}, NULL));
    a.softmax_scale = 0.125f, a.causal = 1;
    TRY(kp_attention_decode(s, &a));
    TRY(kp_stream_sync(s));
    TRY(kp_buffer_read(s, ob, 0, out, sizeof out));
    for (int i = 0; i < D; i++)
        if (fabsf(out[i] - v[i]) > 1e-6f) {
            fprintf(stderr, "attention_decode: out[%d] = %g, want %g\n", i, out[i], v[i]);
            return 1;
        }

    /* kp_moe_forward_workspace_size: T 4, hidden 64, E 8, inter 32, top-2 */
    kp_buffer *mb;
    TRY(kp_buffer_alloc(d, (8 * 64 * 64 + 4 * 64) * sizeof(float), &mb));
    kp_moe_forward_params f;
    memset(&f, 0, sizeof f);
    TRY(kp_tensor_init(&f.x, mb, 0, KP_F32, 2, (int64_t[]){4, 64}, NULL));
    TRY(kp_tensor_init(&f.router_logits, mb, 0, KP_F32, 2, (int64_t[]){4, 8}, NULL));
    TRY(kp_tensor_init(&f.w13, mb, 0, KP_F32, 3, (int64_t[]){8, 64, 64}, NULL));
    TRY(kp_tensor_init(&f.w2, mb, 0, KP_F32, 3, (int64_t[]){8, 64, 32}, NULL));
    TRY(kp_tensor_init(&f.out, mb, 8 * 64 * 64 * sizeof(float), KP_F32, 2, (int64_t[]){4, 64}, NULL));
    f.routing.topk = 2, f.routing.n_group = 1, f.routing.topk_group = 1;
    f.routing.scoring = KP_MOE_SCORING_SOFTMAX, f.routing.renormalize = 1, f.routing.route_scale = 1.0f;
    size_t ws = 0;
    TRY(kp_moe_forward_workspace_size(d, &f, &ws));
    printf("workspace %zu\n", ws);

    kp_buffer *all[] = {lb, ib, wb, qb, kb, vb, tb, sb, ob, mb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) TRY(kp_buffer_free(all[i]));
    TRY(kp_stream_destroy(s));
    TRY(kp_device_close(d));
    TRY(kp_shutdown());
    printf("abi 0.1 ok\n");
    return 0;
}
