/*
 * backends/gpu/gpu_launch.c — building a kp_gpu_launch (see kp_gpu.h).
 */
#include "kp_gpu.h"

#include <string.h>

void kp_gpu_launch_init(kp_gpu_launch *l, const char *source, const char *options, const char *kernel) {
    memset(l, 0, sizeof *l);
    l->source = source;
    l->options = options;
    l->kernel = kernel;
    for (int d = 0; d < 3; d++) l->groups[d] = 1, l->local[d] = 1;
}

static kp_gpu_arg *next(kp_gpu_launch *l, kp_gpu_arg_kind kind) {
    if (l->nargs >= KP_GPU_MAX_ARGS) {
        l->overflow = 1;
        return NULL;
    }
    kp_gpu_arg *a = &l->args[l->nargs++];
    a->kind = kind;
    return a;
}

void kp_gpu_arg_buffer(kp_gpu_launch *l, const kp_buffer *b) {
    kp_gpu_arg *a = next(l, KP_GPU_ARG_BUFFER);
    if (a) a->v.buffer = b;
}

void kp_gpu_arg_native(kp_gpu_launch *l, void *native) {
    kp_gpu_arg *a = next(l, KP_GPU_ARG_NATIVE);
    if (a) a->v.native = native;
}

void kp_gpu_arg_tensor(kp_gpu_launch *l, const kp_tensor *t) {
    if (kp_buffer_is_address_space(t->buffer))
        kp_gpu_arg_native(l, (void *)(uintptr_t)t->offset);
    else
        kp_gpu_arg_buffer(l, t->buffer);
}

void kp_gpu_arg_kargs(kp_gpu_launch *l, const void *data, size_t size) {
    if (size == 0 || size > KP_GPU_MAX_KARGS_BYTES) {
        l->overflow = 1;
        return;
    }
    kp_gpu_arg *a = next(l, KP_GPU_ARG_KARGS);
    if (a) a->v.kargs.data = data, a->v.kargs.size = (uint32_t)size;
}

void kp_gpu_arg_tensor_map(kp_gpu_launch *l, const kp_gpu_tensor_map *m) {
    kp_gpu_arg *a = next(l, KP_GPU_ARG_TENSOR_MAP);
    if (a) a->v.tmap = *m;
}

int64_t kp_gpu_elem_offset(const kp_tensor *t) {
    size_t es = kp_backend_dtype_size(t->dtype);
    return t->buffer && es && !kp_buffer_is_address_space(t->buffer) ? (int64_t)(t->offset / es) : 0;
}

uint64_t kp_gpu_tensor_address(const kp_tensor *t) {
    return kp_buffer_is_address_space(t->buffer) ? (uint64_t)t->offset : 0;
}

uint32_t kp_gpu_base_align(const kp_gpu_target *t, const kp_buffer *b, uint64_t addr) {
    if (addr) {
        uint64_t low = addr & (~addr + 1);
        return low >= 256 ? 256u : (uint32_t)low;
    }
    return b && t->buffer_align ? t->buffer_align(b) : 256u;
}
