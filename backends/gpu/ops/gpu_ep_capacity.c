/*
 * backends/gpu/ops/gpu_ep_capacity.c — the ep_capacity slot (core/backend.h) on the GPU
 * backends: expert parallelism's capacity-mode planning and row gathers
 * (kernels/moe/ep_capacity.cl), enqueued on the stream with no host sync, so that
 * kp_ep_dispatch_async and its combine can be captured in a graph. The integers are
 * the cpu step's (backends/cpu/ops/cpu_ep_capacity.c), bit for bit.
 *
 * The arguments come from the core (core/ep_capacity.c, core/ep_device.c), not the
 * user; they are still checked here (an inconsistent one is an error, never a launch),
 * and every index the kernels read from a buffer is clamped there.
 */
#include "gpu_ops.h"
#include "moe/ep_capacity_kargs.h"

/* The kernels' local size. */
#define EPC_OPTIONS "-DKP_EPC_WG=" KP_GPU_STR_(KP_GPU_EPC_WG)
#define KP_GPU_STR_(x) KP_GPU_STR2_(x)
#define KP_GPU_STR2_(x) #x

const char *kp_gpu_ep_capacity_options(void) { return EPC_OPTIONS; }

/* A region given in bytes, as elements of elem bytes; an address buffer
 * (kp_device_memory) passes its address, offset 0. */
static kp_gpu_view epc_view(const kp_buffer *b, size_t byte_off, size_t elem) {
    if (kp_buffer_is_address_space(b)) {
        kp_gpu_view v = {b, 0, 0, (uint64_t)byte_off};
        return v;
    }
    return kp_gpu_view_bytes(b, byte_off, elem, 0);
}

/* Does the region start on a multiple of n bytes (the base's alignment included)? */
static int epc_aligned(const kp_gpu_target *t, const kp_buffer *b, size_t byte_off, uint32_t n) {
    if (kp_buffer_is_address_space(b)) return kp_gpu_base_align(t, b, (uint64_t)byte_off) >= n;
    return byte_off % n == 0 && kp_gpu_base_align(t, b, 0) >= n;
}

static kp_status epc_bad(kp_gpu_ctx *c, const char *what) {
    return c->host->set_error(KP_ERR_INVALID_ARGUMENT, "%s: ep_capacity: %s", c->t->name, what);
}

/* The int32 buffers of a plan step: present and 4-byte aligned. */
static kp_status epc_ints(kp_gpu_ctx *c, const kp_buffer *const *b, const size_t *off, int n) {
    for (int i = 0; i < n; i++) {
        if (!b[i]) return epc_bad(c, "a buffer of the step is missing");
        if (!epc_aligned(c->t, b[i], off[i], 4)) return epc_bad(c, "an int32 buffer offset is not a multiple of 4");
    }
    return KP_OK;
}

static kp_status epc_launch(kp_gpu_ctx *c, const char *kernel, const kp_gpu_view *v, int nv,
                            const kp_ep_capacity_kargs *ka, uint64_t groups, uint32_t local_bytes) {
    kp_status st = kp_gpu_variant_ok(c, KP_GPU_SRC_EP_CAPACITY, EPC_OPTIONS);
    if (st != KP_OK) return st;
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_EP_CAPACITY, EPC_OPTIONS, kernel);
    for (int i = 0; i < nv; i++) kp_gpu_arg_view(&l, v[i]);
    kp_gpu_arg_kargs(&l, ka, sizeof *ka);
    l.groups[0] = groups, l.local[0] = KP_GPU_EPC_WG, l.local_bytes = local_bytes;
    return kp_gpu_enqueue(c, &l);
}

static kp_status plan(kp_gpu_ctx *c, const kp_ep_capacity_args *a) {
    const int send = a->step == KP_EP_CAPACITY_PLAN_SEND;
    if (a->world < 1 || a->capacity < 1 || a->header_ints < 2 || (int64_t)a->world * a->capacity > INT32_MAX ||
        (int64_t)a->world * a->header_ints > INT32_MAX)
        return epc_bad(c, "world, capacity or header_ints out of range");
    if (send && (a->pairs < 0 || a->pairs > INT32_MAX || (a->pairs > 0 && a->topk < 1)))
        return epc_bad(c, "pairs or topk out of range");
    if (!send && a->local_experts < 0) return epc_bad(c, "local_experts is negative");
    /* the receive plan's per-source counts: 3 W + 1 ints of local memory */
    const uint64_t lmem = send ? 0 : ((3 * (uint64_t)a->world + 1) * 4 + 15) / 16 * 16;
    if (lmem && c->prof.local_mem && lmem > c->prof.local_mem)
        return c->host->set_error(KP_ERR_UNSUPPORTED,
                                  "%s: ep_capacity: the receive plan of %d ranks needs %llu bytes of local memory "
                                  "in one work-group, the device has %llu", c->t->name, (int)a->world,
                                  (unsigned long long)lmem, (unsigned long long)c->prof.local_mem);
    kp_status st = send ? epc_ints(c, a->in, a->in_off, 3) : epc_ints(c, a->in, a->in_off, 1);
    if (st == KP_OK) st = epc_ints(c, (const kp_buffer *const *)a->out, a->out_off, 4);
    if (st != KP_OK) return st;
    kp_ep_capacity_kargs ka = {.pairs = send ? a->pairs : 0, .world = a->world, .capacity = a->capacity,
                               .topk = send ? a->topk : 0, .header_ints = a->header_ints,
                               .local_experts = send ? 0 : a->local_experts, .vec = 4};
    kp_gpu_view v[7];
    int nv = 0;
    for (int i = 0; i < (send ? 3 : 1); i++) v[nv++] = epc_view(a->in[i], a->in_off[i], 4);
    for (int i = 0; i < 4; i++) v[nv++] = epc_view(a->out[i], a->out_off[i], 4);
    int64_t *in_off[3] = {&ka.in0_off, &ka.in1_off, &ka.in2_off};
    int64_t *out_off[4] = {&ka.out0_off, &ka.out1_off, &ka.out2_off, &ka.out3_off};
    for (int i = 0; i < (send ? 3 : 1); i++) *in_off[i] = v[i].off;
    for (int i = 0; i < 4; i++) *out_off[i] = v[(send ? 3 : 1) + i].off;
    return epc_launch(c, send ? "kp_ep_plan_send" : "kp_ep_plan_recv", v, nv, &ka, 1, (uint32_t)lmem);
}

static kp_status gather(kp_gpu_ctx *c, const kp_ep_capacity_args *a) {
    if (a->rows < 0 || a->rows > INT32_MAX || a->src_rows < 0 || a->src_rows > INT32_MAX)
        return epc_bad(c, "rows or src_rows out of range");
    if (a->rows == 0 || a->row_bytes == 0) return KP_OK;
    if (!a->in[0] || !a->in[1] || !a->out[0]) return epc_bad(c, "a buffer of the gather is missing");
    if (!epc_aligned(c->t, a->in[1], a->in_off[1], 4)) return epc_bad(c, "the index offset is not a multiple of 4");
    uint32_t vec = 16;
    while (vec > 1 && (a->row_bytes % vec || !epc_aligned(c->t, a->in[0], a->in_off[0], vec) ||
                       !epc_aligned(c->t, a->out[0], a->out_off[0], vec)))
        vec = vec == 16 ? 4 : 1;
    const size_t units = a->row_bytes / vec;
    if (units > (size_t)INT64_MAX / (size_t)(a->rows > a->src_rows ? a->rows : a->src_rows))
        return epc_bad(c, "rows of row_bytes overflow");
    kp_gpu_view v[3] = {epc_view(a->in[0], a->in_off[0], vec), epc_view(a->in[1], a->in_off[1], 4),
                        epc_view(a->out[0], a->out_off[0], vec)};
    kp_ep_capacity_kargs ka = {.in0_off = v[0].off, .in1_off = v[1].off, .out0_off = v[2].off, .rows = a->rows,
                               .src_rows = a->src_rows, .row_units = (int64_t)units, .vec = (int32_t)vec};
    const uint64_t groups = a->rows < KP_GPU_EPC_MAX_GROUPS ? (uint64_t)a->rows : KP_GPU_EPC_MAX_GROUPS;
    return epc_launch(c, "kp_ep_gather", v, 3, &ka, groups, 0);
}

kp_status kp_gpu_ep_capacity(const kp_gpu_target *t, kp_stream *s, const kp_ep_capacity_args *a) {
    kp_gpu_ctx c = {.t = t, .s = s, .host = t->host};
    if (!a) return epc_bad(&c, "no arguments");
    t->profile(s, &c.prof);
    switch (a->step) {
    case KP_EP_CAPACITY_PLAN_SEND:
    case KP_EP_CAPACITY_PLAN_RECV: return plan(&c, a);
    case KP_EP_CAPACITY_GATHER: return gather(&c, a);
    default: return t->host->set_error(KP_ERR_INVALID_ARGUMENT, "%s: ep_capacity step %d is unknown", t->name, (int)a->step);
    }
}
