/*
 * core/ep.c — expert parallelism: MoE dispatch and combine over the caller's
 * communicator (kport.h, "Expert parallelism").
 *
 * The host path: everything is staged through host memory with kp_buffer_read/write, so
 * it works on every backend (MPI); where the transport moves device addresses (NCCL,
 * RCCL) and the backend has them, dispatch and combine take the device path of
 * core/ep_device.c instead, sharing this file's combine. The bytes move through a
 * transport plugin (core/ep_transport.h) that this file dlopens, so libkport links no
 * communication library. The summing of a token's expert outputs is kp_moe_combine on
 * the caller's device: the result has the same bits as kp_moe_combine on one rank.
 *
 * Row orders. The sender sorts its (token, slot) pairs stably by global expert id; since
 * ranks hold contiguous, ascending expert ranges this groups them by destination rank and,
 * within one, by local expert. The receiver regroups what arrives (source-major) into
 * expert-major order: local expert, then source rank, then token and slot.
 */
#include "internal.h"
#include "ep_internal.h"
#include "ep_transport.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EP_MAX_EXPERTS 65536
#define EP_MAX_TOPK 32
#define EP_HEADER_ALIGN 16


/* What every rank must agree on, exchanged at create. */
enum { D_ABI, D_NUM_EXPERTS, D_HIDDEN, D_DTYPE, D_TOPK, D_MAX_TOKENS, D_MODE, D_CAPACITY, D_BEGIN, D_END, D_COUNT };
typedef struct ep_descriptor {
    int32_t v[D_COUNT]; /* D_BEGIN and D_END differ per rank; the others must agree */
} ep_descriptor;

static bool mul_size(size_t a, size_t b, size_t *out) {
    if (a && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

static size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

kp_status kp_ep_transport_failed(kp_ep *ep, const char *fn, kp_ep_tr_result r, const char *why) {
    ep->broken = true;
    return kp_set_error(KP_ERR_BACKEND, "%s: %s%s", fn, r == KP_EP_TR_TIMEOUT ? "timed out: " : "", why);
}

int32_t kp_ep_timeout(const kp_ep_options *o) {
    return o->timeout_ms > 0 ? o->timeout_ms : KP_EP_TIMEOUT_DEFAULT_MS;
}

/* ---- create / destroy ------------------------------------------------------ */

static kp_status check_options(const kp_ep_options *o) {
    const char *fn = "kp_ep_create";
    if (o->comm_kind != KP_EP_COMM_MPI && o->comm_kind != KP_EP_COMM_NCCL && o->comm_kind != KP_EP_COMM_RCCL)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: comm_kind %d is not a kp_ep_comm_kind", fn,
                            (int)o->comm_kind);
    if (!o->comm)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: comm is NULL (pass &your_%s)", fn,
                            o->comm_kind == KP_EP_COMM_MPI ? "MPI_Comm" : "ncclComm_t");
    if (o->num_experts < 1 || o->num_experts > EP_MAX_EXPERTS)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: num_experts %d is outside 1..%d", fn,
                            (int)o->num_experts, EP_MAX_EXPERTS);
    if (o->expert_begin < 0 || o->expert_end < o->expert_begin || o->expert_end > o->num_experts)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: expert range [%d, %d) is not inside [0, num_experts = %d)", fn,
                            (int)o->expert_begin, (int)o->expert_end, (int)o->num_experts);
    if (o->hidden < 1) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: hidden %d < 1", fn, (int)o->hidden);
    if (o->dtype != KP_F32 && o->dtype != KP_F16 && o->dtype != KP_BF16)
        return kp_set_error(KP_ERR_INVALID_DTYPE, "%s: dtype %s is not f32, f16 or bf16", fn,
                            kp_dtype_name(o->dtype));
    if (o->topk < 1 || o->topk > EP_MAX_TOPK)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: topk %d is outside 1..%d", fn, (int)o->topk,
                            EP_MAX_TOPK);
    if (o->max_tokens_per_rank < 1)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: max_tokens_per_rank %d < 1", fn,
                            (int)o->max_tokens_per_rank);
    if (o->mode != KP_EP_MODE_NORMAL && o->mode != KP_EP_MODE_CAPACITY)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: mode %d is not a kp_ep_mode", fn, (int)o->mode);
    if (o->mode == KP_EP_MODE_CAPACITY && o->capacity_per_rank < 1)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: capacity_per_rank %d < 1 in capacity mode", fn,
                            (int)o->capacity_per_rank);
    if (o->timeout_ms < 0)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: timeout_ms %d < 0", fn, (int)o->timeout_ms);
    return KP_OK;
}

/* NCCL/RCCL: the device path (core/ep_device.c) where the backend has device addresses;
 * otherwise only the cpu backend, whose buffers are host memory, could hand the transport
 * the host staging buffers. */
static kp_status check_transport_device(const kp_ep *ep) {
    const kp_ep_options *o = &ep->opt;
    if (o->comm_kind == KP_EP_COMM_MPI || ep->device_path) return KP_OK;
    const char *backend = ep->dev->iface && ep->dev->iface->name ? ep->dev->iface->name : "?";
    if (strcmp(backend, "cpu") == 0) return KP_OK;
    const char *why = !ep->dev->iface->buffer_address || !ep->dev->iface->event_query
                          ? "it has no device addresses (OpenCL: use MPI)"
                          : "num_experts is over kp_moe_align's 4096";
    return kp_set_error(KP_ERR_UNSUPPORTED, "kp_ep_create: the %s transport cannot run on the %s backend here: %s",
                        o->comm_kind == KP_EP_COMM_NCCL ? "NCCL" : "RCCL", backend, why);
}

static kp_status load_transport(kp_ep *ep) {
    const kp_ep_comm_kind kind = ep->opt.comm_kind;
    const char *file = kind == KP_EP_COMM_NCCL ? "libkport-ep-nccl.so"
                       : kind == KP_EP_COMM_RCCL ? "libkport-ep-rccl.so"
                                                 : "libkport-ep-mpi.so";
    const char *label = kind == KP_EP_COMM_NCCL ? "NCCL" : kind == KP_EP_COMM_RCCL ? "RCCL" : "MPI";
    char real[PATH_MAX], why[KP_REASON_MAX - 64];
    if (!kp_plugin_find(file, real, why, sizeof why))
        return kp_set_error(KP_ERR_UNAVAILABLE, "kp_ep_create: the %s transport is unavailable: %s%s", label, why,
                            kind == KP_EP_COMM_MPI ? " (built only when meson finds MPI: libopenmpi-dev)" : "");
    /* NODELETE: MPI libraries are not made to be unloaded */
    ep->dl = dlopen(real, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!ep->dl) {
        const char *e = dlerror();
        return kp_set_error(KP_ERR_UNAVAILABLE, "kp_ep_create: the %s transport is unavailable: dlopen %s: %s",
                            label, real, e ? e : "unknown error");
    }
    kp_ep_transport_entry_fn entry;
    *(void **)&entry = dlsym(ep->dl, KP_EP_TRANSPORT_ENTRY_SYMBOL);
    const kp_ep_transport *t = entry ? entry(KP_EP_TRANSPORT_ABI_VERSION) : NULL;
    if (!t || t->abi_version != KP_EP_TRANSPORT_ABI_VERSION || t->struct_size < sizeof *t || !t->create ||
        !t->allgather || !t->alltoall || !t->alltoallv || !t->destroy || !t->exchange != !t->poll)
        return kp_set_error(KP_ERR_ABI_MISMATCH,
                            "kp_ep_create: %s is not a transport for ABI version %u (%s%u, struct %u bytes; "
                            "this libkport: struct %zu bytes)",
                            real, KP_EP_TRANSPORT_ABI_VERSION, !entry ? "no entry symbol, " : "it has version ",
                            t ? t->abi_version : 0u, t ? t->struct_size : 0u, sizeof *t);
    ep->tr = t;
    return KP_OK;
}

/* Every rank runs this on the same gathered descriptors, so every rank reports the
 * same mismatch. */
static kp_status check_agreement(kp_ep *ep, const ep_descriptor *all) {
    static const char *names[] = {"abi", "num_experts", "hidden", "dtype", "topk", "max_tokens_per_rank",
                                  "mode", "capacity_per_rank"};
    for (int32_t r = 1; r < ep->world; r++) {
        const int32_t *a = all[0].v, *b = all[r].v;
        for (int f = 0; f < D_BEGIN; f++)
            if (a[f] != b[f])
                return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                                    "kp_ep_create: ranks disagree: rank %d has %s = %d, rank 0 has %d", (int)r,
                                    names[f], (int)b[f], (int)a[f]);
    }
    int32_t expect = 0;
    for (int32_t r = 0; r < ep->world; r++) {
        if (all[r].v[D_BEGIN] != expect)
            return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                                "kp_ep_create: expert ranges do not tile [0, %d) in rank order: rank %d starts at "
                                "%d, expected %d",
                                (int)all[0].v[D_NUM_EXPERTS], (int)r, (int)all[r].v[D_BEGIN], (int)expect);
        ep->range_begin[r] = all[r].v[D_BEGIN];
        expect = all[r].v[D_END];
        int32_t n = all[r].v[D_END] - all[r].v[D_BEGIN];
        if (n > ep->max_local_experts) ep->max_local_experts = n;
    }
    if (expect != all[0].v[D_NUM_EXPERTS])
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "kp_ep_create: expert ranges do not tile [0, %d): the last rank ends at %d",
                            (int)all[0].v[D_NUM_EXPERTS], (int)expect);
    ep->range_begin[ep->world] = expect;
    return KP_OK;
}

static void free_dispatch_state(kp_ep *ep) {
    free(ep->send_pos);
    free(ep->send_rows); /* send_displ, recv_from, recv_displ share its allocation */
    free(ep->recv_to_out);
    ep->send_pos = NULL;
    ep->send_rows = NULL;
    ep->recv_to_out = NULL;
    ep->dispatched = false;
    ep->async_dispatched = false;
}

kp_status kp_ep_destroy(kp_ep *ep) {
    if (!ep) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_ep_destroy: ep is NULL");
    if (ep->trs) ep->tr->destroy(ep->trs, kp_ep_timeout(&ep->opt));
    if (ep->rows_dev) kp_buffer_free(ep->rows_dev);
    if (ep->pos_dev) kp_buffer_free(ep->pos_dev);
    kp_ep_device_free(ep);
    kp_ep_async_free(ep);
    if (ep->dl) dlclose(ep->dl);
    free_dispatch_state(ep);
    free(ep->range_begin);
    free(ep);
    return KP_OK;
}

/* Sizes of the largest layouts, overflow-checked, and the device staging buffers. */
static kp_status size_and_allocate(kp_ep *ep) {
    const kp_ep_options *o = &ep->opt;
    size_t row_bytes, pairs, recv, cap_rows, dev_rows, bytes;
    bool ok = mul_size((size_t)o->hidden, kp_dtype_size(o->dtype), &row_bytes) &&
              mul_size((size_t)o->max_tokens_per_rank, (size_t)o->topk, &pairs) &&
              mul_size(pairs, (size_t)ep->world, &recv) &&
              mul_size((size_t)(o->mode == KP_EP_MODE_CAPACITY ? o->capacity_per_rank : 0), (size_t)ep->world,
                       &cap_rows);
    if (ok && o->mode == KP_EP_MODE_CAPACITY) recv = cap_rows;
    dev_rows = (pairs > cap_rows ? pairs : cap_rows) + 1;
    ok = ok && recv <= INT32_MAX && dev_rows <= INT32_MAX && mul_size(recv, row_bytes, &bytes) &&
         mul_size(dev_rows, row_bytes, &bytes);
    if (!ok)
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "kp_ep_create: world %d x max_tokens_per_rank %d x topk %d (or the capacity) rows of "
                            "hidden %d are too many to address",
                            (int)ep->world, (int)o->max_tokens_per_rank, (int)o->topk, (int)o->hidden);
    ep->row_bytes = row_bytes;
    ep->max_recv_rows = (int64_t)recv;
    ep->rows_dev_cap = (int64_t)dev_rows;
    kp_status st = kp_buffer_alloc(ep->dev, bytes, &ep->rows_dev);
    if (st == KP_OK) st = kp_buffer_alloc(ep->dev, pairs * sizeof(int32_t), &ep->pos_dev);
    return st == KP_OK ? KP_OK : kp_add_context(st, "kp_ep_create: staging buffers");
}

kp_status kp_ep_create(kp_device *d, const kp_ep_options *opt, kp_ep **out) {
    kp_status st = kp_require_init("kp_ep_create");
    if (st != KP_OK) return st;
    if (!d || !opt || !out)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_ep_create: %s is NULL", !d ? "d" : !opt ? "opt" : "out");
    *out = NULL;
    st = check_options(opt);
    if (st != KP_OK) return st;
    kp_ep *ep = calloc(1, sizeof *ep);
    if (!ep) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_ep_create: out of host memory");
    ep->dev = d;
    ep->opt = *opt;
    ep->local_experts = opt->expert_end - opt->expert_begin;
    st = load_transport(ep);
    if (st == KP_OK) {
        ep->device_path = kp_ep_device_path_possible(opt, d, ep->tr);
        st = check_transport_device(ep);
    }
    if (st != KP_OK) {
        kp_ep_destroy(ep);
        return st;
    }
    char why[KP_REASON_MAX - 64] = "";
    kp_ep_tr_result r = ep->tr->create(opt->comm, kp_ep_timeout(opt), &ep->trs, &ep->rank, &ep->world, why, sizeof why);
    if (r != KP_EP_TR_OK) {
        ep->trs = NULL; /* a timed-out duplicate cannot be freed: left to MPI_Finalize */
        kp_ep_destroy(ep);
        return kp_set_error(r == KP_EP_TR_TIMEOUT ? KP_ERR_BACKEND : KP_ERR_UNAVAILABLE, "kp_ep_create: %s%s",
                            r == KP_EP_TR_TIMEOUT ? "timed out: " : "", why);
    }
    ep_descriptor mine = {{(int32_t)KP_EP_TRANSPORT_ABI_VERSION, opt->num_experts, opt->hidden, (int32_t)opt->dtype,
                          opt->topk, opt->max_tokens_per_rank, (int32_t)opt->mode,
                          opt->mode == KP_EP_MODE_CAPACITY ? opt->capacity_per_rank : 0, opt->expert_begin,
                          opt->expert_end}};
    ep_descriptor *all = calloc((size_t)ep->world, sizeof *all);
    ep->range_begin = calloc((size_t)ep->world + 1, sizeof *ep->range_begin);
    if (!all || !ep->range_begin) {
        free(all);
        kp_ep_destroy(ep);
        return kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_ep_create: out of host memory");
    }
    if (ep->device_path) { /* the library may take device memory only (NCCL on a GPU) */
        st = kp_ep_device_allgather(ep, &mine, sizeof mine, all);
    } else {
        r = ep->tr->allgather(ep->trs, &mine, sizeof mine, all, kp_ep_timeout(opt), why, sizeof why);
        st = r != KP_EP_TR_OK ? kp_ep_transport_failed(ep, "kp_ep_create", r, why) : KP_OK;
    }
    if (st == KP_OK) st = check_agreement(ep, all);
    free(all);
    if (st == KP_OK) st = size_and_allocate(ep);
    if (st == KP_OK && ep->device_path) st = kp_ep_device_allocate(ep);
    ep->async_possible = st == KP_OK && kp_ep_async_supported(ep, NULL);
    if (ep->async_possible) st = kp_ep_async_allocate(ep);
    if (st != KP_OK) {
        kp_ep_destroy(ep);
        return st;
    }
    *out = ep;
    return KP_OK;
}

kp_status kp_ep_get_info(const kp_ep *ep, kp_ep_info *out) {
    if (!ep || !out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_ep_get_info: %s is NULL", ep ? "out" : "ep");
    out->rank = ep->rank;
    out->world = ep->world;
    out->local_experts = ep->local_experts;
    out->max_recv_rows = ep->max_recv_rows;
    return KP_OK;
}

/* ---- tensors --------------------------------------------------------------- */

/* A contiguous 2-D tensor on the handle's device; rows < 0: any row count. */
static kp_status check_matrix(const char *fn, kp_ep *ep, const char *name, const kp_tensor *t, kp_dtype dtype,
                              int64_t rows, int64_t min_rows, int64_t cols) {
    if (!t->buffer) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s has no buffer", fn, name);
    if (kp_buffer_is_address_space(t->buffer)) /* staged with kp_buffer_read/write, which need a buffer */
        return kp_set_error(KP_ERR_UNSUPPORTED,
                            "%s: %s is an address tensor (kp_device_memory); expert parallelism stages its "
                            "tensors through the host: wrap the memory with kp_buffer_wrap", fn, name);
    if (kp_buffer_device(t->buffer) != ep->dev)
        return kp_set_error(KP_ERR_DEVICE_MISMATCH, "%s: %s is not on the EP handle's device", fn, name);
    if (t->dtype != dtype)
        return kp_set_error(KP_ERR_INVALID_DTYPE, "%s: %s is %s, expected %s", fn, name, kp_dtype_name(t->dtype),
                            kp_dtype_name(dtype));
    if (t->ndim != 2 || t->shape[0] < 0 || t->shape[1] != cols || (rows >= 0 && t->shape[0] != rows) ||
        t->shape[0] < min_rows)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %s must be [%s%lld, %lld], got ndim %d [%lld, %lld]", fn,
                            name, rows >= 0 ? "" : ">= ", (long long)(rows >= 0 ? rows : min_rows),
                            (long long)cols, (int)t->ndim, (long long)t->shape[0],
                            (long long)(t->ndim > 1 ? t->shape[1] : 0));
    if ((t->shape[0] > 1 && t->strides[0] != cols) || (cols > 1 && t->strides[1] != 1))
        return kp_set_error(KP_ERR_INVALID_LAYOUT, "%s: %s must be contiguous", fn, name);
    size_t lo, hi;
    kp_tensor_byte_range(t, &lo, &hi);
    if (hi > kp_buffer_size(t->buffer))
        return kp_set_error(KP_ERR_OUT_OF_BOUNDS, "%s: %s reaches past its buffer", fn, name);
    return KP_OK;
}

/* Host rows of an EP-sized tensor: the caller's sizes were bounded at create. Zeroed:
 * for what is sent without being written first (capacity padding) or counted into. */
static void *host_alloc(size_t n, size_t size) {
    size_t bytes;
    if (!mul_size(n, size, &bytes)) return NULL;
    return calloc(bytes ? bytes : 1, 1);
}

/* Not zeroed: for buffers every byte of which is written before it is read (rows of up
 * to hundreds of MB, where zeroing was a visible share of a call). */
static void *host_alloc_rows(size_t n, size_t size) {
    size_t bytes;
    if (!mul_size(n, size, &bytes)) return NULL;
    return malloc(bytes ? bytes : 1);
}

/* ---- dispatch -------------------------------------------------------------- */

/* The pieces of one dispatch, freed together. */
typedef struct dispatch_work {
    int32_t *ids, *order, *per_expert, *counts_out, *counts_in, *les;
    uint8_t *x, *send, *recv, *out;
    int32_t *offsets;
} dispatch_work;

static void dispatch_work_free(dispatch_work *w) {
    free(w->ids), free(w->order), free(w->per_expert), free(w->counts_out), free(w->counts_in), free(w->les);
    free(w->x), free(w->send), free(w->recv), free(w->out), free(w->offsets);
}

static kp_status check_dispatch(kp_ep *ep, const kp_ep_dispatch_params *p, kp_ep_dispatch_result *r) {
    const char *fn = "kp_ep_dispatch";
    if (!p || !r) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, p ? "r" : "p");
    if (ep->broken)
        return kp_set_error(KP_ERR_BACKEND, "%s: an earlier exchange failed or timed out; destroy the handle", fn);
    int64_t T = p->x.ndim == 2 ? p->x.shape[0] : -1;
    if (T < 0 || T > ep->opt.max_tokens_per_rank)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: x must be [T, %d] with T <= max_tokens_per_rank %d", fn,
                            (int)ep->opt.hidden, (int)ep->opt.max_tokens_per_rank);
    int64_t k = p->topk_ids.ndim == 2 ? p->topk_ids.shape[1] : -1;
    if (k < 1 || k > ep->opt.topk)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: topk_ids must be [T, k] with 1 <= k <= topk %d", fn,
                            (int)ep->opt.topk);
    kp_status st = check_matrix(fn, ep, "x", &p->x, ep->opt.dtype, T, 0, ep->opt.hidden);
    if (st == KP_OK) st = check_matrix(fn, ep, "topk_ids", &p->topk_ids, KP_I32, T, 0, k);
    if (st == KP_OK)
        st = check_matrix(fn, ep, "recv_x", &p->recv_x, ep->opt.dtype, -1, ep->max_recv_rows, ep->opt.hidden);
    if (st == KP_OK && (p->expert_offsets.ndim != 1 || p->expert_offsets.shape[0] != ep->local_experts + 1))
        st = kp_set_error(KP_ERR_INVALID_SHAPE, "%s: expert_offsets must be int32 [%d]", fn,
                          (int)ep->local_experts + 1);
    if (st == KP_OK) {
        kp_tensor off2 = p->expert_offsets; /* checked as a [n, 1] matrix */
        off2.ndim = 2;
        off2.shape[1] = 1;
        off2.strides[1] = 1;
        st = check_matrix(fn, ep, "expert_offsets", &off2, KP_I32, ep->local_experts + 1, 0, 1);
    }
    return st;
}

/* Sorts the pairs stably by expert, fills the send layout and the per-destination
 * counts. Returns the number of pairs dropped (capacity mode). */
static int64_t pack_send(kp_ep *ep, dispatch_work *w, int64_t T, int32_t k, size_t block_bytes, size_t hdr_bytes) {
    const int32_t E = ep->opt.num_experts, W = ep->world, ML = ep->max_local_experts;
    const int64_t pairs = T * k;
    for (int64_t i = 0; i < pairs; i++) w->per_expert[w->ids[i] + 1]++;
    for (int32_t e = 0; e < E; e++) w->per_expert[e + 1] += w->per_expert[e];
    for (int64_t i = 0; i < pairs; i++) w->order[w->per_expert[w->ids[i]]++] = (int32_t)i;
    /* per_expert[e] is now the end of expert e's run */
    const bool capacity = ep->opt.mode == KP_EP_MODE_CAPACITY;
    const int32_t C = ep->opt.capacity_per_rank;
    int64_t dropped = 0, row = 0;
    for (int64_t j = 0; j < pairs; j++) ep->send_pos[j] = -1;
    int64_t next = 0;
    for (int32_t d = 0; d < W; d++) {
        int32_t sent = 0;
        ep->send_displ[d] = (int32_t)(capacity ? (int64_t)d * C : row);
        for (int32_t e = ep->range_begin[d]; e < ep->range_begin[d + 1]; e++) {
            int32_t le = e - ep->range_begin[d];
            for (; next < w->per_expert[e]; next++) {
                int32_t pair = w->order[next];
                if (capacity && sent == C) {
                    dropped++;
                    continue;
                }
                int64_t pos = ep->send_displ[d] + sent;
                ep->send_pos[pair] = (int32_t)pos;
                const uint8_t *src = w->x + (size_t)(pair / k) * ep->row_bytes;
                if (capacity) {
                    uint8_t *block = w->send + (size_t)d * block_bytes;
                    memcpy(block + hdr_bytes + (size_t)sent * ep->row_bytes, src, ep->row_bytes);
                    ((int32_t *)block)[2 + sent] = le;
                } else {
                    memcpy(w->send + (size_t)pos * ep->row_bytes, src, ep->row_bytes);
                    w->counts_out[(size_t)d * (size_t)(ML ? ML : 1) + (size_t)le]++;
                }
                sent++;
            }
        }
        ep->send_rows[d] = sent;
        if (capacity) ((int32_t *)(w->send + (size_t)d * block_bytes))[0] = sent;
        row += sent;
    }
    ep->send_layout_rows = capacity ? (int64_t)W * C : row;
    return dropped;
}

kp_status kp_ep_dispatch(kp_ep *ep, kp_stream *s, const kp_ep_dispatch_params *p, kp_ep_dispatch_result *r) {
    const char *fn = "kp_ep_dispatch";
    if (!ep) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: ep is NULL", fn);
    kp_status st = check_dispatch(ep, p, r);
    if (st != KP_OK) return st;
    const int64_t T = p->x.shape[0];
    const int32_t k = (int32_t)p->topk_ids.shape[1], W = ep->world, E = ep->opt.num_experts;
    const int32_t ML = ep->max_local_experts ? ep->max_local_experts : 1, LE = ep->local_experts;
    const bool capacity = ep->opt.mode == KP_EP_MODE_CAPACITY;
    const int32_t C = ep->opt.capacity_per_rank;
    const size_t rb = ep->row_bytes, hdr = align_up(sizeof(int32_t) * (2 + (size_t)(capacity ? C : 0)),
                                                     EP_HEADER_ALIGN);
    const size_t block = capacity ? hdr + (size_t)C * rb : 0; /* sizes bounded at create */
    const int64_t pairs = T * k;

    if (ep->async_pending) { /* kp_ep_dispatch_async's exchanges: the failure check */
        st = kp_ep_wait(ep, s ? s : ep->dev->default_stream);
        if (st != KP_OK) return st;
    }
    free_dispatch_state(ep);
    if (ep->device_path) return kp_ep_device_dispatch(ep, s, p, r);
    dispatch_work w = {0};
    ep->send_pos = host_alloc((size_t)pairs + 1, sizeof(int32_t));
    ep->send_rows = host_alloc(4 * (size_t)W, sizeof(int32_t));
    w.ids = host_alloc((size_t)pairs + 1, sizeof(int32_t));
    w.order = host_alloc((size_t)pairs + 1, sizeof(int32_t));
    w.per_expert = host_alloc((size_t)E + 1, sizeof(int32_t));
    w.counts_out = host_alloc((size_t)W * (size_t)ML, sizeof(int32_t));
    w.counts_in = host_alloc((size_t)W * (size_t)ML, sizeof(int32_t));
    w.x = host_alloc_rows((size_t)T, rb);
    w.send = capacity ? host_alloc((size_t)W, block) : host_alloc_rows((size_t)pairs, rb); /* normal: all sent */
    w.offsets = host_alloc((size_t)LE + 1, sizeof(int32_t));
    if (!ep->send_pos || !ep->send_rows || !w.ids || !w.order || !w.per_expert || !w.counts_out ||
        !w.counts_in || !w.x || !w.send || !w.offsets) {
        dispatch_work_free(&w);
        return kp_set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    }
    ep->send_displ = ep->send_rows + W;
    ep->recv_from = ep->send_displ + W;
    ep->recv_displ = ep->recv_from + W;
    if (pairs) st = kp_buffer_read(s, p->topk_ids.buffer, p->topk_ids.offset, w.ids, (size_t)pairs * 4);
    if (st == KP_OK && T) st = kp_buffer_read(s, p->x.buffer, p->x.offset, w.x, (size_t)T * rb);
    for (int64_t i = 0; st == KP_OK && i < pairs; i++)
        if (w.ids[i] < 0 || w.ids[i] >= E)
            st = kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: topk_ids[%lld, %lld] = %d is outside [0, %d)", fn,
                              (long long)(i / k), (long long)(i % k), (int)w.ids[i], (int)E);
    if (st != KP_OK) { /* nothing sent: the other ranks time out */
        dispatch_work_free(&w);
        free_dispatch_state(ep);
        return st;
    }
    const int64_t dropped = pack_send(ep, &w, T, k, block, hdr);

    char why[KP_REASON_MAX - 64] = "";
    kp_ep_tr_result tr;
    int64_t dropped_all = 0;
    if (!capacity) {
        tr = ep->tr->alltoall(ep->trs, w.counts_out, (size_t)ML * 4, w.counts_in, kp_ep_timeout(&ep->opt), why,
                              sizeof why);
        int64_t total = 0;
        for (int32_t src = 0; tr == KP_EP_TR_OK && src < W; src++) {
            int64_t n = 0;
            for (int32_t le = 0; le < LE; le++) n += w.counts_in[(size_t)src * ML + le];
            ep->recv_from[src] = (int32_t)n; /* <= max_tokens * topk: bounded at create */
            ep->recv_displ[src] = (int32_t)total;
            total += n;
        }
        ep->recv_layout_rows = total;
        w.recv = host_alloc_rows((size_t)total + 1, rb);
        if (tr == KP_EP_TR_OK && !w.recv) {
            tr = KP_EP_TR_ERROR;
            snprintf(why, sizeof why, "out of host memory for %lld received rows", (long long)total);
        }
        if (tr == KP_EP_TR_OK)
            tr = ep->tr->alltoallv(ep->trs, w.send, ep->send_rows, ep->send_displ, w.recv, ep->recv_from,
                                   ep->recv_displ, rb, kp_ep_timeout(&ep->opt), why, sizeof why);
    } else {
        w.recv = host_alloc_rows((size_t)W, block);
        tr = w.recv ? KP_EP_TR_OK : KP_EP_TR_ERROR;
        if (tr != KP_EP_TR_OK) snprintf(why, sizeof why, "out of host memory");
        for (int32_t d = 0; d < W; d++) ((int32_t *)(w.send + (size_t)d * block))[1] = (int32_t)dropped;
        if (tr == KP_EP_TR_OK)
            tr = ep->tr->alltoall(ep->trs, w.send, block, w.recv, kp_ep_timeout(&ep->opt), why, sizeof why);
        ep->recv_layout_rows = (int64_t)W * C;
        for (int32_t src = 0; tr == KP_EP_TR_OK && src < W; src++) {
            const int32_t *h = (const int32_t *)(w.recv + (size_t)src * block);
            if (h[0] < 0 || h[0] > C || h[1] < 0) {
                tr = KP_EP_TR_ERROR;
                snprintf(why, sizeof why, "rank %d sent a corrupt block header", (int)src);
                break;
            }
            ep->recv_from[src] = h[0];
            ep->recv_displ[src] = src * C;
            dropped_all += h[1];
            for (int32_t i = 0; i < h[0]; i++) {
                if (h[2 + i] < 0 || h[2 + i] >= LE) {
                    tr = KP_EP_TR_ERROR;
                    snprintf(why, sizeof why, "rank %d sent a row for local expert %d of %d", (int)src,
                             (int)h[2 + i], (int)LE);
                    break;
                }
                w.counts_in[(size_t)src * ML + h[2 + i]]++;
            }
        }
    }
    if (tr != KP_EP_TR_OK) {
        dispatch_work_free(&w);
        free_dispatch_state(ep);
        return kp_ep_transport_failed(ep, fn, tr, why);
    }

    /* regroup source-major rows into expert-major order */
    ep->recv_to_out = host_alloc((size_t)ep->recv_layout_rows + 1, sizeof(int64_t));
    int64_t recv_rows = 0;
    for (int32_t src = 0; src < W; src++) recv_rows += ep->recv_from[src];
    w.out = host_alloc_rows((size_t)recv_rows + 1, rb);
    if (!ep->recv_to_out || !w.out) {
        dispatch_work_free(&w);
        free_dispatch_state(ep);
        ep->broken = true; /* combine would leave the peers waiting */
        return kp_set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    }
    for (int64_t i = 0; i < ep->recv_layout_rows; i++) ep->recv_to_out[i] = -1;
    int64_t row = 0;
    for (int32_t le = 0; le < LE; le++) {
        w.offsets[le] = (int32_t)row;
        for (int32_t src = 0; src < W; src++) {
            /* src's rows are sorted by local expert: skip the experts before le */
            int64_t first = 0;
            for (int32_t j = 0; j < le; j++) first += w.counts_in[(size_t)src * ML + j];
            const int32_t n = w.counts_in[(size_t)src * ML + le];
            for (int32_t i = 0; i < n; i++, row++) {
                const int64_t at = ep->recv_displ[src] + first + i;
                const uint8_t *from = capacity ? w.recv + (size_t)src * block + hdr + (size_t)(first + i) * rb
                                               : w.recv + (size_t)at * rb;
                memcpy(w.out + (size_t)row * rb, from, rb);
                ep->recv_to_out[at] = row;
            }
        }
    }
    w.offsets[LE] = (int32_t)row;
    ep->recv_rows = row;
    ep->tokens = T;
    ep->k = k;
    ep->dispatched = true;
    st = row ? kp_buffer_write(s, p->recv_x.buffer, p->recv_x.offset, w.out, (size_t)row * rb) : KP_OK;
    if (st == KP_OK)
        st = kp_buffer_write(s, p->expert_offsets.buffer, p->expert_offsets.offset, w.offsets,
                             ((size_t)LE + 1) * sizeof(int32_t));
    dispatch_work_free(&w);
    if (st != KP_OK) return kp_add_context(st, "%s: writing the received rows", fn);
    return kp_ep_dispatch_result_set(ep, r, row, dropped, dropped_all);
}

kp_status kp_ep_dispatch_async(kp_ep *ep, kp_stream *s, const kp_ep_dispatch_params *p, const kp_tensor *dropped) {
    const char *fn = "kp_ep_dispatch_async", *why = NULL;
    if (!ep) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: ep is NULL", fn);
    kp_ep_dispatch_result unused;
    kp_status st = check_dispatch(ep, p, &unused);
    if (st != KP_OK) return kp_add_context(st, "%s", fn);
    if (!s) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: s (the stream) is NULL: everything runs on it", fn);
    if (s->device != ep->dev) return kp_set_error(KP_ERR_DEVICE_MISMATCH, "%s: s is not on the EP handle's device", fn);
    if (!ep->async_possible) {
        kp_ep_async_supported(ep, &why);
        return kp_set_error(KP_ERR_UNSUPPORTED, "%s: %s", fn, why ? why : "its buffers were not allocated");
    }
    if (dropped) {
        kp_tensor d2 = *dropped; /* checked as a [2, 1] matrix */
        st = d2.ndim == 1 && d2.shape[0] == 2 ? KP_OK
                                               : kp_set_error(KP_ERR_INVALID_SHAPE, "%s: dropped must be int32 [2]", fn);
        d2.ndim = 2, d2.shape[1] = 1, d2.strides[1] = 1;
        if (st == KP_OK) st = check_matrix(fn, ep, "dropped", &d2, KP_I32, 2, 0, 1);
        if (st != KP_OK) return st;
    }
    free_dispatch_state(ep);
    return kp_ep_async_dispatch(ep, s, p, dropped);
}

kp_status kp_ep_wait(kp_ep *ep, kp_stream *s) {
    if (!ep || !s) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_ep_wait: %s is NULL", ep ? "s" : "ep");
    if (ep->broken)
        return kp_set_error(KP_ERR_BACKEND, "kp_ep_wait: an earlier exchange failed or timed out; destroy the handle");
    if (!ep->async_pending) return KP_OK;
    kp_status st = kp_ep_device_wait(ep, "kp_ep_wait", s);
    ep->async_pending = false;
    return st;
}

kp_status kp_ep_dispatch_result_set(const kp_ep *ep, kp_ep_dispatch_result *r, int64_t recv_rows, int64_t dropped,
                                    int64_t dropped_all) {
    r->recv_rows = recv_rows;
    r->dropped = dropped;
    r->dropped_all = dropped_all;
    if (dropped_all)
        return kp_set_error(KP_ERR_OUT_OF_BOUNDS,
                            "kp_ep_dispatch: capacity overflow: %lld pairs over capacity_per_rank %d were not sent "
                            "(%lld from this rank); the outputs are valid and combine counts them as zero",
                            (long long)dropped_all, (int)ep->opt.capacity_per_rank, (long long)dropped);
    return KP_OK;
}

/* ---- combine --------------------------------------------------------------- */

kp_status kp_ep_combine_into(kp_ep *ep, kp_stream *s, const kp_tensor *expert_out, const kp_tensor *topk_weights,
                             const kp_tensor *out, const kp_ep_combine_scratch *sc) {
    const char *fn = "kp_ep_combine";
    if (ep->broken)
        return kp_set_error(KP_ERR_BACKEND, "%s: an earlier exchange failed or timed out; destroy the handle", fn);
    if (!ep->dispatched) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: no kp_ep_dispatch to invert", fn);
    if (!s) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: s (the stream) is NULL: the sum runs on it", fn);
    const int64_t T = ep->tokens;
    const int32_t k = ep->k;
    kp_status st = check_matrix(fn, ep, "expert_out", expert_out, ep->opt.dtype, -1, ep->recv_rows, ep->opt.hidden);
    if (st == KP_OK) st = check_matrix(fn, ep, "topk_weights", topk_weights, KP_F32, T, 0, k);
    if (st == KP_OK) st = check_matrix(fn, ep, "out", out, ep->opt.dtype, T, 0, ep->opt.hidden);
    if (st != KP_OK) return st;
    if (ep->async_dispatched) {
        if (sc) return kp_set_error(KP_ERR_UNSUPPORTED, "%s: kp_moe_forward_ep after kp_ep_dispatch_async", fn);
        return kp_ep_async_combine(ep, s, expert_out, topk_weights, out);
    }

    /* the rows that come home land in rows_buf after `extra` rows (sc: the caller's
     * shared-expert rows), then one zero row; kp_moe_combine sums k (+1) slots */
    const int64_t extra = sc ? sc->extra_rows : 0;
    const int32_t kk = k + (extra ? 1 : 0);
    kp_buffer *rows_buf = sc ? sc->buffer : ep->rows_dev, *pos_buf = sc ? sc->buffer : ep->pos_dev;
    const size_t rows_off = sc ? sc->rows_offset : 0, pos_off = sc ? sc->pos_offset : 0;
    const size_t rb = ep->row_bytes;
    const bool capacity = ep->opt.mode == KP_EP_MODE_CAPACITY;
    const int32_t C = ep->opt.capacity_per_rank;
    const bool dev = ep->device_path; /* the rows stay on the device: core/ep_device.c */
    uint8_t *results = dev ? NULL : host_alloc_rows((size_t)ep->recv_rows + 1, rb);
    /* capacity mode sends padding rows: zeroed */
    uint8_t *back = dev        ? NULL
                    : capacity ? host_alloc((size_t)ep->recv_layout_rows + 1, rb)
                               : host_alloc_rows((size_t)ep->recv_layout_rows + 1, rb);
    const size_t home_rows = dev ? 0 : (size_t)ep->send_layout_rows; /* on the host; + the zero row */
    uint8_t *home = host_alloc_rows(home_rows + 1, rb);
    int32_t *pos = host_alloc((size_t)(T * kk) + 1, sizeof(int32_t));
    float *wts = extra ? host_alloc((size_t)(T * kk + T * k) + 1, sizeof(float)) : NULL; /* out, then in */
    if ((!dev && (!results || !back)) || !home || !pos || (extra && !wts)) {
        free(results), free(back), free(home), free(pos), free(wts);
        return kp_set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    }
    if (ep->recv_rows && !dev) st = kp_buffer_read(s, expert_out->buffer, expert_out->offset, results,
                                           (size_t)ep->recv_rows * rb);
    if (st == KP_OK && extra && T)
        st = kp_buffer_read(s, topk_weights->buffer, topk_weights->offset, wts + T * kk,
                            (size_t)(T * k) * sizeof(float));
    if (st != KP_OK) {
        free(results), free(back), free(home), free(pos), free(wts);
        return kp_add_context(st, "%s: reading expert_out", fn);
    }
    for (int64_t i = 0; !dev && i < ep->recv_layout_rows; i++)
        if (ep->recv_to_out[i] >= 0) memcpy(back + (size_t)i * rb, results + (size_t)ep->recv_to_out[i] * rb, rb);
    char why[KP_REASON_MAX - 64] = "";
    kp_ep_tr_result tr = dev ? KP_EP_TR_OK
                         : capacity ? ep->tr->alltoall(ep->trs, back, (size_t)C * rb, home, kp_ep_timeout(&ep->opt),
                                                     why, sizeof why)
                                  : ep->tr->alltoallv(ep->trs, back, ep->recv_from, ep->recv_displ, home,
                                                      ep->send_rows, ep->send_displ, rb, kp_ep_timeout(&ep->opt),
                                                      why, sizeof why);
    free(results);
    free(back);
    if (tr != KP_EP_TR_OK) {
        free(home), free(pos), free(wts);
        return kp_ep_transport_failed(ep, fn, tr, why);
    }
    if (dev) st = kp_ep_device_combine_rows(ep, s, expert_out, rows_buf, rows_off + (size_t)extra * rb);
    if (st != KP_OK) {
        free(home), free(pos), free(wts);
        return st;
    }
    const int64_t zero_row = extra + ep->send_layout_rows; /* dropped pairs add w * 0 */
    memset(home + home_rows * rb, 0, rb);
    for (int64_t t = 0; t < T; t++) {
        for (int32_t j = 0; j < k; j++) {
            const int32_t sp = ep->send_pos[t * k + j];
            pos[t * kk + j] = (int32_t)(sp >= 0 ? extra + sp : zero_row); /* < INT32_MAX: checked by the caller */
            if (extra) wts[t * kk + j] = wts[T * kk + t * k + j];
        }
        if (extra) pos[t * kk + k] = (int32_t)t, wts[t * kk + k] = 1.0f; /* the shared expert, added last */
    }
    if (T) {
        /* the host path's rows and the zero row; the device path's zero row only */
        st = kp_buffer_write(s, rows_buf, rows_off + ((size_t)extra + (dev ? (size_t)ep->send_layout_rows : 0)) * rb,
                             home, (home_rows + 1) * rb);
        if (st == KP_OK) st = kp_buffer_write(s, pos_buf, pos_off, pos, (size_t)(T * kk) * sizeof(int32_t));
        if (st == KP_OK && extra)
            st = kp_buffer_write(s, sc->buffer, sc->weights_offset, wts, (size_t)(T * kk) * sizeof(float));
        kp_moe_combine_params cp = {0};
        const int64_t rows_shape[2] = {zero_row + 1, ep->opt.hidden}, pos_shape[2] = {T, kk};
        if (st == KP_OK) st = kp_tensor_init(&cp.expert_out, rows_buf, rows_off, ep->opt.dtype, 2, rows_shape, NULL);
        if (st == KP_OK) st = kp_tensor_init(&cp.token_pos, pos_buf, pos_off, KP_I32, 2, pos_shape, NULL);
        if (st == KP_OK && extra)
            st = kp_tensor_init(&cp.topk_weights, sc->buffer, sc->weights_offset, KP_F32, 2, pos_shape, NULL);
        else
            cp.topk_weights = *topk_weights;
        cp.out = *out;
        if (st == KP_OK) st = kp_moe_combine(s, &cp);
    }
    free(home);
    free(pos);
    free(wts);
    return st == KP_OK ? KP_OK : kp_add_context(st, "%s", fn);
}

kp_status kp_ep_combine(kp_ep *ep, kp_stream *s, const kp_ep_combine_params *p) {
    if (!ep || !p) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_ep_combine: %s is NULL", ep ? "p" : "ep");
    return kp_ep_combine_into(ep, s, &p->expert_out, &p->topk_weights, &p->out, NULL);
}

/* ---- what kp_moe_forward_ep (core/ep_forward.c) needs of the handle ---------- */

kp_device *kp_ep_device(const kp_ep *ep) { return ep->dev; }
const kp_ep_options *kp_ep_options_of(const kp_ep *ep) { return &ep->opt; }
bool kp_ep_is_broken(const kp_ep *ep) { return ep->broken; }
void kp_ep_mark_broken(kp_ep *ep) { ep->broken = true; }
int64_t kp_ep_max_send_rows(const kp_ep *ep) { return ep->rows_dev_cap - 1; }
