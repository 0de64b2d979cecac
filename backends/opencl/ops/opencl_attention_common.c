/*
 * backends/opencl/ops/opencl_attention_common.c — tile configuration and kernel
 * arguments shared by the attention ops (see opencl_attention_common.h).
 *
 * The per-device table (defaults; tuning keys override each, per op kind):
 *
 *   device                    path        threads  block_m  block_n  tiles in local
 *   CPU (PoCL)                portable    128/64   64/16    32       f32
 *   NVIDIA, f16/bf16          tile-MMA    128      64       32       16-bit
 *   NVIDIA f32, other GPUs    portable    128      32       32       f32
 *   MLA on GPUs               portable    128      16       16       storage dtype
 *
 * (decode: 64 threads, block_m 4 when s_q * G <= 4 and 16 above, on every device but
 * NVIDIA's MMA path: a decode row tile is s_q * G rows.) Whatever the table or the tuning file says, the tile then
 * shrinks (block_n, then block_m, then threads, then f32 tiles, then the MMA path)
 * until it fits CL_DEVICE_LOCAL_MEM_SIZE — 48 KiB on NVIDIA.
 * K is held transposed in local memory on the portable path (ATTN_KT) except for MLA
 * on GPUs, where the latent tile serves as V in place.
 * Tuning keys: threads, block_m, block_n, mma (0/1), local_f32 (0/1), k_transposed (0/1).
 */
#include "opencl_attention_common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kp_ocl_attn_dims_supported(int dqk, int dv, int mla) {
    if (mla) return dqk == 576 && (dv == 512 || dv == 256);
    return (dqk == dv && (dqk == 64 || dqk == 128 || dqk == 256)) || (dqk == 192 && dv == 128);
}

static size_t al16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Mirrors ATTN_DECLARE_LOCALS in kernels/attention/kp_attn_tile.h. */
static size_t local_bytes(const kp_ocl_attn_cfg *c) {
    size_t es = kp_backend_dtype_size(c->dt);
    size_t lt = c->mma ? 2 : c->local_f32 ? 4 : es;
    size_t pad = (c->local_f32 && !c->mma) || c->dt == KP_F32 ? 1 : 8;
    size_t kld = (size_t)c->dqk + pad, vld = (size_t)c->dv + pad;
    size_t bm = (size_t)c->bm, bn = (size_t)c->bn;
    size_t kbytes = c->kt ? (size_t)c->dqk * (bn + 1) * lt : bn * kld * lt;
    size_t n = al16(bm * kld * lt) + al16(kbytes) + al16(c->mla && !c->kt ? lt : bn * vld * lt);
    n += al16(bm * (bn + 1) * 4);
    n += al16(c->mma ? bm * (bn + 8) * 2 : 2) + al16(c->mma ? (size_t)c->dv * (bn + 8) * 2 : 2);
    n += 3 * al16(bm * 8) + 2 * al16(bm * 4) + 3 * al16(bm * 4) + 2 * al16(bn * 8);
    return n;
}

static int cfg_valid(const kp_ocl_attn_cfg *c) {
    if (c->nt < 32 || c->nt > 1024 || c->nt % 32 || c->bn < 16 || c->bn % 16 || c->bm < 1) return 0;
    if (c->mma) return c->dt != KP_F32 && !c->kt && c->bm == 16 * (c->nt / 32);
    return c->bm % (c->nt / 16) == 0;
}

static void defaults(const kp_ocl_device *d, const char *kind, int rows, kp_ocl_attn_cfg *c) {
    int cpu = d->desc.info.kind == KP_DEVICE_CPU, decode = strcmp(kind, "attention_decode") == 0;
    c->mma = d->desc.has_inline_ptx && c->dt != KP_F32 && !c->mla;
    c->local_f32 = !c->mma && (cpu || c->dt == KP_F32 || !c->mla);
    c->kt = !c->mma && (cpu || !c->mla);
    c->nt = 128, c->bn = 32;
    if (c->mma) c->bm = 64;
    else if (c->mla) c->bm = cpu ? 64 : 16, c->bn = cpu ? 32 : 16;
    else if (decode) c->nt = 64, c->bm = rows > 0 && rows <= 4 ? 4 : 16;
    else c->bm = cpu ? 64 : 32;
}

/* One step smaller; 0 when there is nothing left to shrink. */
static int shrink(kp_ocl_attn_cfg *c) {
    if (c->bn > 16) c->bn /= 2;
    else if (c->mma && c->nt > 32) c->nt /= 2, c->bm = 16 * (c->nt / 32);
    else if (!c->mma && c->bm > c->nt / 16) c->bm /= 2;
    else if (!c->mma && c->nt > 32) c->nt /= 2;
    else if (c->local_f32 && c->dt != KP_F32) c->local_f32 = 0;
    else if (c->kt && c->mla) c->kt = 0;
    else if (c->mma) c->mma = 0, c->local_f32 = 0, c->nt = 128, c->bm = 32, c->bn = 32;
    else return 0;
    return 1;
}

kp_status kp_ocl_attn_config(kp_ocl_device *d, const char *kind, kp_dtype dt, int dqk, int dv, int mla, int rows,
                             kp_ocl_attn_cfg *out) {
    const kp_host_services *h = kp_ocl_host();
    kp_ocl_attn_cfg c;
    memset(&c, 0, sizeof c);
    c.dt = dt, c.dqk = dqk, c.dv = dv, c.mla = mla;
    defaults(d, kind, rows, &c);

    kp_ocl_attn_cfg t = c;
    const kp_device_info *info = &d->desc.info;
    t.nt = (int)h->tuning_get(info, kind, "threads", c.nt);
    t.bm = (int)h->tuning_get(info, kind, "block_m", c.bm);
    t.bn = (int)h->tuning_get(info, kind, "block_n", c.bn);
    t.mma = (int)h->tuning_get(info, kind, "mma", c.mma) != 0 && dt != KP_F32;
    t.local_f32 = (int)h->tuning_get(info, kind, "local_f32", c.local_f32) != 0;
    t.kt = !t.mma && (int)h->tuning_get(info, kind, "k_transposed", c.kt) != 0;
    if (cfg_valid(&t)) c = t;
    else
        h->log("opencl %s: tuning (threads %d, block_m %d, block_n %d, mma %d) is not a valid tile; using "
               "the defaults", kind, t.nt, t.bm, t.bn, t.mma);

    cl_ulong lmem = 0;
    size_t max_wg = 0;
    cl_int err = clGetDeviceInfo(d->desc.id, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lmem, &lmem, NULL);
    if (err == CL_SUCCESS) err = clGetDeviceInfo(d->desc.id, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_wg, &max_wg, NULL);
    if (err != CL_SUCCESS) return kp_ocl_fail(err, "clGetDeviceInfo(CL_DEVICE_LOCAL_MEM_SIZE)");
    size_t limit = lmem > 512 ? (size_t)lmem - 512 : 0; /* the compiler's own share */
    for (;;) {
        c.local_bytes = local_bytes(&c);
        if (cfg_valid(&c) && c.local_bytes <= limit && (size_t)c.nt <= max_wg) break;
        if (!shrink(&c))
            return h->set_error(KP_ERR_UNSUPPORTED,
                                "opencl %s: no attention tile for head dims %d/%d fits '%s' (%llu bytes of local "
                                "memory, work-groups up to %zu)",
                                kind, dqk, dv, info->name, (unsigned long long)lmem, max_wg);
    }
    *out = c;
    return KP_OK;
}

void kp_ocl_attn_options(const kp_ocl_attn_cfg *c, char *buf, size_t n) {
    const char *dt = c->dt == KP_F16 ? "F16" : c->dt == KP_BF16 ? "BF16" : "F32";
    snprintf(buf, n, "-DKP_DTYPE_%s -DATTN_DQK=%d -DATTN_DV=%d -DATTN_BM=%d -DATTN_BN=%d -DATTN_NT=%d%s%s%s%s", dt,
             c->dqk, c->dv, c->bm, c->bn, c->nt, c->mma ? " -DATTN_MMA" : "", c->local_f32 ? " -DATTN_LOCAL_F32" : "",
             c->kt ? " -DATTN_KT" : "", c->mla ? " -DATTN_MLA" : "");
}

/* ---- per-queue split-KV scratch (see opencl_internal.h) ---------------------------- */

/* The next power of two at or above n (at least 256 bytes); n itself past 2^62. */
static size_t scratch_round(size_t n) {
    size_t r = 256;
    while (r < n && r <= SIZE_MAX / 2) r *= 2;
    return r < n ? n : r;
}

/* A buffer of want bytes rounded up; the exact size if the rounded one is refused
 * (CL_DEVICE_MAX_MEM_ALLOC_SIZE, memory). */
static cl_mem scratch_create(cl_context ctx, size_t want, size_t *got, cl_int *err) {
    size_t r = scratch_round(want);
    cl_mem m = clCreateBuffer(ctx, CL_MEM_READ_WRITE, r, NULL, err);
    if (*err != CL_SUCCESS && r != want) m = clCreateBuffer(ctx, CL_MEM_READ_WRITE, r = want, NULL, err);
    *got = *err == CL_SUCCESS ? r : 0;
    return *err == CL_SUCCESS ? m : NULL;
}

cl_int kp_ocl_scratch_get(kp_ocl_device *d, cl_command_queue q, size_t part_bytes, size_t lse_bytes, cl_mem *part,
                          cl_mem *part_lse) {
    *part = *part_lse = NULL;
    pthread_mutex_lock(&d->lock);
    kp_ocl_scratch *e = d->scratch;
    while (e && e->queue != q) e = e->next;
    if (e && e->part_bytes >= part_bytes && e->lse_bytes >= lse_bytes) { /* the common case: reuse */
        clRetainMemObject(e->part), clRetainMemObject(e->part_lse);
        *part = e->part, *part_lse = e->part_lse;
        pthread_mutex_unlock(&d->lock);
        return CL_SUCCESS;
    }
    /* missing or short: new buffers, at least as large as the old ones */
    if (e && e->part_bytes > part_bytes) part_bytes = e->part_bytes;
    if (e && e->lse_bytes > lse_bytes) lse_bytes = e->lse_bytes;
    cl_int err = CL_SUCCESS;
    size_t pb = 0, lb = 0;
    cl_mem a = scratch_create(d->context, part_bytes, &pb, &err), b = NULL;
    if (err == CL_SUCCESS) b = scratch_create(d->context, lse_bytes, &lb, &err);
    if (err == CL_SUCCESS && !e) {
        e = calloc(1, sizeof *e);
        if (e) e->queue = q, e->next = d->scratch, d->scratch = e;
        else err = CL_OUT_OF_HOST_MEMORY;
    }
    if (err != CL_SUCCESS) {
        pthread_mutex_unlock(&d->lock);
        if (a) clReleaseMemObject(a);
        if (b) clReleaseMemObject(b);
        return err;
    }
    cl_mem old_a = e->part, old_b = e->part_lse;
    e->part = a, e->part_lse = b, e->part_bytes = pb, e->lse_bytes = lb;
    clRetainMemObject(a), clRetainMemObject(b);
    *part = a, *part_lse = b;
    pthread_mutex_unlock(&d->lock);
    if (old_a || old_b) { /* growth (rare): the old ones once the queue's earlier calls are done */
        clFinish(q);
        if (old_a) clReleaseMemObject(old_a);
        if (old_b) clReleaseMemObject(old_b);
    }
    return CL_SUCCESS;
}

static void scratch_free(kp_ocl_scratch *e, int finish) {
    if (finish) clFinish(e->queue);
    if (e->part) clReleaseMemObject(e->part);
    if (e->part_lse) clReleaseMemObject(e->part_lse);
    free(e);
}

void kp_ocl_scratch_drop(kp_ocl_device *d, cl_command_queue q, int finish) {
    if (!d) return;
    pthread_mutex_lock(&d->lock);
    kp_ocl_scratch **pp = &d->scratch, *e = NULL;
    while (*pp && (*pp)->queue != q) pp = &(*pp)->next;
    if (*pp) e = *pp, *pp = e->next;
    pthread_mutex_unlock(&d->lock);
    if (e) scratch_free(e, finish);
}

void kp_ocl_scratch_release_all(kp_ocl_device *d) {
    pthread_mutex_lock(&d->lock);
    kp_ocl_scratch *e = d->scratch;
    d->scratch = NULL;
    pthread_mutex_unlock(&d->lock);
    while (e) { /* only a stream still open at close leaves an entry: its queue is alive */
        kp_ocl_scratch *next = e->next;
        scratch_free(e, 1);
        e = next;
    }
}
