/* examples/quickstart.c — route 4 tokens over 16 experts on the best device. */
#include <kport.h>
#include <stdio.h>

#define TRY(call) do { kp_status st_ = (call); if (st_ != KP_OK) { \
    fprintf(stderr, "%s failed: %s: %s\n", #call, kp_status_str(st_), kp_last_error()); \
    return 1; } } while (0)

int main(void) {
    enum { T = 4, E = 16, K = 2 };
    float logits[T * E];
    for (int i = 0; i < T * E; i++) logits[i] = (float)((i * 7919) % 113) / 50.0f - 1.0f;
    kp_device *dev;
    kp_stream *s;
    kp_buffer *lb, *ib, *wb;
    TRY(kp_init(NULL));
    TRY(kp_device_open(-1, &dev)); /* KPORT_BACKEND / KPORT_DEVICE pick another */
    TRY(kp_stream_create(dev, &s));
    TRY(kp_buffer_alloc(dev, sizeof logits, &lb));
    TRY(kp_buffer_alloc(dev, T * K * sizeof(int32_t), &ib));
    TRY(kp_buffer_alloc(dev, T * K * sizeof(float), &wb));
    TRY(kp_buffer_write(s, lb, 0, logits, sizeof logits));
    kp_moe_gate_params p = {.routing = {.topk = K, .n_group = 1, .topk_group = 1,
                                        .scoring = KP_MOE_SCORING_SOFTMAX, .renormalize = 1,
                                        .route_scale = 1.0f}};
    TRY(kp_tensor_init(&p.logits, lb, 0, KP_F32, 2, (int64_t[]){T, E}, NULL));
    TRY(kp_tensor_init(&p.topk_ids, ib, 0, KP_I32, 2, (int64_t[]){T, K}, NULL));
    TRY(kp_tensor_init(&p.topk_weights, wb, 0, KP_F32, 2, (int64_t[]){T, K}, NULL));
    TRY(kp_moe_gate(s, &p)); /* asynchronous on s */
    int32_t ids[T * K];
    float w[T * K];
    TRY(kp_buffer_read(s, ib, 0, ids, sizeof ids)); /* waits for the gate */
    TRY(kp_buffer_read(s, wb, 0, w, sizeof w));
    for (int t = 0; t < T; t++)
        printf("token %d -> expert %d (%.3f), expert %d (%.3f)\n", t, ids[t * K], w[t * K],
               ids[t * K + 1], w[t * K + 1]);
    kp_buffer_free(lb); kp_buffer_free(ib); kp_buffer_free(wb);
    kp_stream_destroy(s);
    kp_device_close(dev);
    return kp_shutdown() == KP_OK ? 0 : 1;
}
