/*
 * bench/vs_ggml_kport.c — kport's side of bench/vs-ggml.sh: one of ggml's
 * test-backend-ops perf cases, run through kport's public API on the best device
 * (KPORT_BACKEND to choose), timed with kp_event marks, its FLOPs counted as ggml
 * counts them. Prints one line: "kport <case> <us/run> <GFLOP/s> <level>".
 *
 *   vs_ggml_kport fa   HSK HSV NH NR KV NB   flash attention, f16 q/k/v (ggml: f32 q, f16 K/V)
 *                                            NB > 1: kp_attention_prefill; NB = 1: kp_attention_decode
 *                                            (KV in 64-key cache blocks)
 *   vs_ggml_kport mmid E USED M BS K         f16 expert weights [E, M, K] times BS tokens routed to
 *                                            USED random experts each (kp_grouped_gemm, f16 rows)
 *
 * Until kbench takes any shape on its command line (`--shape`), this is how kport
 * runs ggml's shapes; correctness is the conformance suite's job (this only checks
 * the status of every call).
 */
#include <kport.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(x)                                                                                                     \
    do {                                                                                                           \
        kp_status st_ = (x);                                                                                       \
        if (st_ != KP_OK) {                                                                                        \
            fprintf(stderr, "vs_ggml_kport: %s: %s: %s\n", #x, kp_status_str(st_), kp_last_error());               \
            exit(1);                                                                                               \
        }                                                                                                          \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

/* n f16 values in about [-1, 1] (random sign, exponent 2^-4..2^-1, mantissa) */
static kp_buffer *random_f16(kp_device *d, kp_stream *s, int64_t n) {
    uint16_t *h = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = next();
        h[i] = (uint16_t)((r & 0x8000) | (0x2c00 + ((r >> 16) & 0xfff)));
    }
    kp_buffer *b;
    TRY(kp_buffer_alloc(d, (size_t)n * 2, &b));
    TRY(kp_buffer_write(s, b, 0, h, (size_t)n * 2));
    free(h);
    return b;
}

static kp_buffer *upload_i32(kp_device *d, kp_stream *s, const int32_t *x, int64_t n) {
    kp_buffer *b;
    TRY(kp_buffer_alloc(d, (size_t)n * 4, &b));
    TRY(kp_buffer_write(s, b, 0, x, (size_t)n * 4));
    return b;
}

static void tensor(kp_tensor *t, kp_buffer *b, kp_dtype dt, int nd, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t shape[4] = {d0, d1, d2, d3};
    TRY(kp_tensor_init(t, b, 0, dt, nd, shape, NULL));
}

typedef kp_status (*run_fn)(kp_stream *s, const void *p);
static kp_status run_prefill(kp_stream *s, const void *p) { return kp_attention_prefill(s, p); }
static kp_status run_decode(kp_stream *s, const void *p) { return kp_attention_decode(s, p); }
static kp_status run_gemm(kp_stream *s, const void *p) { return kp_grouped_gemm(s, p); }

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median ms of samples of back-to-back calls (>= 1 s in all, >= 3 samples) after a warm-up. */
static double time_ms(kp_device *d, kp_stream *s, run_fn fn, const void *p) {
    kp_event *e0, *e1;
    TRY(kp_event_create(d, &e0));
    TRY(kp_event_create(d, &e1));
    TRY(fn(s, p));
    TRY(kp_stream_sync(s));
    float samples[64], total = 0;
    int n = 0;
    while (n < 64 && (n < 3 || total < 1000.0f)) {
        TRY(kp_event_record(e0, s));
        TRY(fn(s, p));
        TRY(kp_event_record(e1, s));
        TRY(kp_event_sync(e1));
        TRY(kp_event_elapsed_ms(e0, e1, &samples[n]));
        total += samples[n++];
    }
    qsort(samples, (size_t)n, sizeof *samples, cmp_float);
    kp_event_destroy(e0), kp_event_destroy(e1);
    return samples[n / 2];
}

int main(int argc, char **argv) {
    int fa = argc > 1 && strcmp(argv[1], "fa") == 0, mmid = argc > 1 && strcmp(argv[1], "mmid") == 0;
    if (!(fa && argc == 8) && !(mmid && argc == 7)) {
        fprintf(stderr, "usage: %s fa HSK HSV NH NR KV NB | mmid E USED M BS K\n", argv[0]);
        return 2;
    }
    int64_t a[6] = {0};
    for (int i = 0; i + 2 < argc; i++) {
        char *end;
        a[i] = strtoll(argv[i + 2], &end, 10);
        if (*end || a[i] < 1 || a[i] > ((int64_t)1 << 24) || (mmid && i == 1 && a[i] > 64)) {
            fprintf(stderr, "vs_ggml_kport: argument %d '%s' is not a size in 1..2^24 (n_used: 1..64)\n", i + 1,
                    argv[i + 2]);
            return 2;
        }
    }
    kp_device *d;
    kp_stream *s;
    TRY(kp_init(NULL));
    TRY(kp_device_open(-1, &d));
    TRY(kp_stream_create(d, &s));
    kp_device_info info;
    TRY(kp_device_get_info(d, &info));
    double flops, ms;
    char name[160];
    if (fa) {
        int64_t hsk = a[0], hsv = a[1], nh = a[2], nr = a[3], kv = a[4], nb = a[5], hq = nh * nr;
        flops = 2.0 * (double)hq * (double)nb * (double)(hsk + hsv) * (double)kv; /* ggml's op_flops */
        snprintf(name, sizeof name, "FLASH_ATTN_EXT hsk=%lld hsv=%lld nh=%lld nr=%lld kv=%lld nb=%lld f16",
                 (long long)hsk, (long long)hsv, (long long)nh, (long long)nr, (long long)kv, (long long)nb);
        kp_buffer *q = random_f16(d, s, nb * hq * hsk), *k = random_f16(d, s, kv * nh * hsk);
        kp_buffer *v = random_f16(d, s, kv * nh * hsv), *out;
        TRY(kp_buffer_alloc(d, (size_t)(nb * hq * hsv) * 2, &out));
        if (nb > 1) {
            kp_attention_prefill_params p = {.softmax_scale = (float)(1.0 / sqrt((double)hsk)),
                                             .window_left = -1, .window_right = -1,
                                             .max_seqlen_q = (int32_t)nb, .max_seqlen_k = (int32_t)kv};
            int32_t cq[2] = {0, (int32_t)nb}, ck[2] = {0, (int32_t)kv};
            tensor(&p.q, q, KP_F16, 3, nb, hq, hsk, 0);
            tensor(&p.k, k, KP_F16, 3, kv, nh, hsk, 0);
            tensor(&p.v, v, KP_F16, 3, kv, nh, hsv, 0);
            tensor(&p.out, out, KP_F16, 3, nb, hq, hsv, 0);
            tensor(&p.cu_seqlens_q, upload_i32(d, s, cq, 2), KP_I32, 1, 2, 0, 0, 0);
            tensor(&p.cu_seqlens_k, upload_i32(d, s, ck, 2), KP_I32, 1, 2, 0, 0, 0);
            ms = time_ms(d, s, run_prefill, &p);
        } else { /* the KV as a paged cache: 64-key blocks in order */
            const int64_t bs = 64, blocks = (kv + bs - 1) / bs;
            kp_attention_decode_params p = {.softmax_scale = (float)(1.0 / sqrt((double)hsk))};
            int32_t *table = malloc((size_t)blocks * 4), len = (int32_t)kv;
            for (int64_t i = 0; i < blocks; i++) table[i] = (int32_t)i;
            kp_buffer *kc = random_f16(d, s, blocks * bs * nh * hsk), *vc = random_f16(d, s, blocks * bs * nh * hsv);
            tensor(&p.q, q, KP_F16, 4, 1, 1, hq, hsk);
            tensor(&p.k_cache, kc, KP_F16, 4, blocks, bs, nh, hsk);
            tensor(&p.v_cache, vc, KP_F16, 4, blocks, bs, nh, hsv);
            tensor(&p.block_table, upload_i32(d, s, table, blocks), KP_I32, 2, 1, blocks, 0, 0);
            tensor(&p.seq_lens, upload_i32(d, s, &len, 1), KP_I32, 1, 1, 0, 0, 0);
            tensor(&p.out, out, KP_F16, 4, 1, 1, hq, hsv);
            ms = time_ms(d, s, run_decode, &p);
            free(table);
        }
    } else {
        int64_t e = a[0], used = a[1], m = a[2], bs = a[3], kk = a[4], rows = bs * used;
        flops = 2.0 * (double)m * (double)kk * (double)bs * (double)used; /* ggml's op_flops */
        snprintf(name, sizeof name, "MUL_MAT_ID f16 n_mats=%lld n_used=%lld m=%lld n=%lld k=%lld", (long long)e,
                 (long long)used, (long long)m, (long long)bs, (long long)kk);
        /* each token picks `used` distinct random experts; rows sorted by expert */
        int32_t *count = calloc((size_t)e + 1, 4);
        for (int64_t t = 0; t < bs; t++) {
            int64_t picked[64];
            for (int64_t u = 0; u < used; u++) {
                int64_t x, dup;
                do {
                    x = (int64_t)(next() % (uint64_t)e), dup = 0;
                    for (int64_t z = 0; z < u; z++) dup |= picked[z] == x;
                } while (dup);
                picked[u] = x;
                count[x + 1]++;
            }
        }
        for (int64_t i = 0; i < e; i++) count[i + 1] += count[i];
        kp_grouped_gemm_params p;
        memset(&p, 0, sizeof p);
        kp_buffer *out;
        TRY(kp_buffer_alloc(d, (size_t)(rows * m) * 2, &out));
        tensor(&p.a, random_f16(d, s, rows * kk), KP_F16, 2, rows, kk, 0, 0);
        tensor(&p.w, random_f16(d, s, e * m * kk), KP_F16, 3, e, m, kk, 0);
        tensor(&p.expert_offsets, upload_i32(d, s, count, e + 1), KP_I32, 1, e + 1, 0, 0, 0);
        tensor(&p.out, out, KP_F16, 2, rows, m, 0, 0);
        ms = time_ms(d, s, run_gemm, &p);
        free(count);
    }
    printf("kport | %s | %.1f us/run | %.2f GFLOP/s | %s %s\n", name, ms * 1e3, flops / (ms * 1e-3) * 1e-9,
           info.backend, info.arch);
    return 0;
}
