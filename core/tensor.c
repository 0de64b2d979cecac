/*
 * core/tensor.c — dtypes, tensor views, the one tensor validation every op uses,
 * and DLPack import.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

const char *kp_version(void) {
#define KP_STR2(x) #x
#define KP_STR(x) KP_STR2(x)
    return KP_STR(KPORT_VERSION_MAJOR) "." KP_STR(KPORT_VERSION_MINOR) "." KP_STR(
        KPORT_VERSION_PATCH) " (backend abi " KP_STR(KP_BACKEND_ABI_NUMBER) ")";
}

size_t kp_dtype_size(kp_dtype t) { return kp_backend_dtype_size(t); }

const char *kp_dtype_name(kp_dtype t) {
    switch (t) {
    case KP_F32: return "f32";
    case KP_F16: return "f16";
    case KP_BF16: return "bf16";
    case KP_I32: return "i32";
    case KP_FP8_E4M3: return "fp8_e4m3";
    case KP_DTYPE_COUNT: break;
    }
    return "invalid";
}

const char *kp_op_name(kp_op op) { return kp_backend_op_name(op); }

int64_t kp_tensor_numel(const kp_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

void kp_tensor_byte_range(const kp_tensor *t, size_t *lo, size_t *hi) {
    size_t es = kp_dtype_size(t->dtype);
    int64_t last = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0) {
            *lo = *hi = t->offset;
            return;
        }
        last += (t->shape[i] - 1) * t->strides[i];
    }
    *lo = t->offset;
    *hi = t->offset + (size_t)last * es + es;
}

/* Shape, strides and the byte span of a view, with every overflow caught. */
static kp_status check_view(const char *op, const char *name, const kp_tensor *t, bool contiguous) {
    if (t->ndim < 1 || t->ndim > KP_MAX_DIMS)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %s has ndim %d; it must be 1..%d", op, name,
                            (int)t->ndim, KP_MAX_DIMS);
    size_t es = kp_dtype_size(t->dtype);
    if (es == 0)
        return kp_set_error(KP_ERR_INVALID_DTYPE, "%s: %s has an invalid dtype (%d)", op, name,
                            (int)t->dtype);
    int64_t span = 0, expect = 1;
    bool empty = false;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] < 0)
            return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %s has shape[%d] = %lld; extents must be >= 0",
                                op, name, i, (long long)t->shape[i]);
        if (t->strides[i] < 0)
            return kp_set_error(KP_ERR_INVALID_LAYOUT,
                                "%s: %s has stride[%d] = %lld; negative strides are not supported", op,
                                name, i, (long long)t->strides[i]);
        if (t->shape[i] == 0) empty = true;
        if (t->shape[i] > 1 && contiguous && t->strides[i] != expect)
            return kp_set_error(KP_ERR_INVALID_LAYOUT,
                                "%s: %s must be contiguous: stride[%d] is %lld, expected %lld", op, name,
                                i, (long long)t->strides[i], (long long)expect);
        int64_t term;
        if (__builtin_mul_overflow(t->shape[i] > 0 ? t->shape[i] - 1 : 0, t->strides[i], &term) ||
            __builtin_add_overflow(span, term, &span) ||
            __builtin_mul_overflow(expect, t->shape[i] > 0 ? t->shape[i] : 1, &expect))
            return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %s is too large to address", op, name);
    }
    int last = t->ndim - 1;
    if (t->shape[last] > 1 && t->strides[last] != 1)
        return kp_set_error(KP_ERR_INVALID_LAYOUT,
                            "%s: %s must have a contiguous last dimension (stride[%d] is %lld, not 1)", op,
                            name, last, (long long)t->strides[last]);
    bool address = kp_buffer_is_address_space(t->buffer);
    if (address && t->offset == 0)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is an address tensor with a NULL address", op, name);
    if (address && t->offset % es != 0)
        return kp_set_error(KP_ERR_INVALID_LAYOUT,
                            "%s: %s address 0x%zx is not a multiple of its element size %zu", op, name, t->offset, es);
    if (t->offset % es != 0)
        return kp_set_error(KP_ERR_INVALID_LAYOUT,
                            "%s: %s byte offset %zu is not a multiple of its element size %zu", op, name,
                            t->offset, es);
    if (empty) return KP_OK;
    uint64_t bytes;
    if (address && (__builtin_mul_overflow((uint64_t)span, (uint64_t)es, &bytes) ||
                    __builtin_add_overflow(bytes, (uint64_t)es, &bytes) ||
                    __builtin_add_overflow(bytes, (uint64_t)t->offset, &bytes) || (size_t)bytes != bytes))
        return kp_set_error(KP_ERR_OUT_OF_BOUNDS,
                            "%s: %s at address 0x%zx with a %lld-element span runs past the end of the address space",
                            op, name, t->offset, (long long)span + 1);
    if (__builtin_mul_overflow((uint64_t)span, (uint64_t)es, &bytes) ||
        __builtin_add_overflow(bytes, (uint64_t)es, &bytes) ||
        __builtin_add_overflow(bytes, (uint64_t)t->offset, &bytes) || bytes > t->buffer->size)
        return kp_set_error(KP_ERR_OUT_OF_BOUNDS,
                            "%s: %s view (offset %zu, %lld elements span) reaches past its buffer of %zu bytes",
                            op, name, t->offset, (long long)span + 1, t->buffer->size);
    return KP_OK;
}

/* An output view must give every index its own element: a stride of 0 on a dimension
 * of extent > 1, or strides that interleave so two indices meet, would have threads
 * race on one element. Checked conservatively: with the dimensions of extent > 1
 * sorted by stride, each stride must reach past everything the smaller ones span
 * (every permutation of a row-major layout, padded or not, passes). */
static kp_status check_no_self_overlap(const char *op, const char *name, const kp_tensor *t) {
    int dims[KP_MAX_DIMS], n = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0) return KP_OK; /* no elements */
        if (t->shape[i] > 1) dims[n++] = i;
    }
    for (int a = 1; a < n; a++) /* insertion sort by stride */
        for (int b = a; b > 0 && t->strides[dims[b]] < t->strides[dims[b - 1]]; b--) {
            int x = dims[b];
            dims[b] = dims[b - 1];
            dims[b - 1] = x;
        }
    int64_t reach = 1; /* elements spanned by the dimensions checked so far, +1 */
    for (int a = 0; a < n; a++) {
        int i = dims[a];
        if (t->strides[i] < reach)
            return kp_set_error(KP_ERR_INVALID_LAYOUT,
                                "%s: output %s has stride[%d] = %lld over %lld indices, less than the %lld "
                                "element(s) its smaller-stride dimensions span, so two indices would share an "
                                "element; an output needs a distinct element for every index",
                                op, name, i, (long long)t->strides[i], (long long)t->shape[i], (long long)reach);
        if (__builtin_add_overflow(reach, (t->shape[i] - 1) * t->strides[i], &reach)) /* the span fits (check_view) */
            reach = INT64_MAX;
    }
    return KP_OK;
}

static void dtype_list(uint32_t mask, char *out, size_t n) {
    out[0] = '\0';
    for (int d = 0; d < KP_DTYPE_COUNT; d++) {
        if (!(mask & KP_DT(d))) continue;
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s%s", used ? ", " : "", kp_dtype_name((kp_dtype)d));
    }
}

kp_status kp_validate_tensors(const char *op, kp_device *d, const kp_tensor_rule *rules, int n) {
    for (int i = 0; i < n; i++) {
        const kp_tensor_rule *r = &rules[i];
        const kp_tensor *t = r->t;
        if (!t->buffer) {
            if (r->optional) continue;
            return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is required (its buffer is NULL)", op,
                                r->name);
        }
        if ((unsigned)t->dtype >= KP_DTYPE_COUNT || !(r->dtypes & KP_DT(t->dtype))) {
            char allowed[96];
            dtype_list(r->dtypes, allowed, sizeof allowed);
            return kp_set_error(KP_ERR_INVALID_DTYPE, "%s: %s has dtype %s; it must be one of: %s", op,
                                r->name, kp_dtype_name(t->dtype), allowed);
        }
        if (t->ndim != r->ndim)
            return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %s has %d dims; it must have %d", op, r->name,
                                (int)t->ndim, r->ndim);
        kp_status st = check_view(op, r->name, t, r->contiguous);
        if (st == KP_OK && r->output) st = check_no_self_overlap(op, r->name, t);
        if (st != KP_OK) return st;
        if (t->buffer->device != d)
            return kp_set_error(KP_ERR_DEVICE_MISMATCH,
                                "%s: %s is on device %d (%s), the stream on device %d (%s)", op, r->name,
                                t->buffer->device->global_index, t->buffer->device->info.name,
                                d->global_index, d->info.name);
    }
    for (int i = 0; i < n; i++) {
        if (!rules[i].output || !rules[i].t->buffer) continue;
        size_t lo, hi;
        kp_tensor_byte_range(rules[i].t, &lo, &hi);
        for (int j = 0; j < n; j++) {
            const kp_tensor *u = rules[j].t;
            if (j == i || !u->buffer || u->buffer != rules[i].t->buffer) continue;
            size_t ulo, uhi;
            kp_tensor_byte_range(u, &ulo, &uhi);
            if (lo < uhi && ulo < hi)
                return kp_set_error(KP_ERR_ALIASING,
                                    "%s: output %s (bytes [%zu, %zu)) overlaps %s (bytes [%zu, %zu)) in the same buffer",
                                    op, rules[i].name, lo, hi, rules[j].name, ulo, uhi);
        }
    }
    return KP_OK;
}

kp_status kp_check_dim(const char *op, const char *name, const kp_tensor *t, int dim, int64_t want,
                       const char *what) {
    if (t->shape[dim] != want)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: %s.shape[%d] is %lld; it must equal %s (%lld)", op,
                            name, dim, (long long)t->shape[dim], what, (long long)want);
    return KP_OK;
}

kp_status kp_tensor_init(kp_tensor *out, kp_buffer *buffer, size_t offset, kp_dtype dtype, int ndim,
                         const int64_t *shape, const int64_t *strides) {
    const char *fn = "kp_tensor_init";
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    if (!buffer) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: buffer is NULL", fn);
    if (!shape) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: shape is NULL", fn);
    if ((unsigned)dtype >= KP_DTYPE_COUNT)
        return kp_set_error(KP_ERR_INVALID_DTYPE, "%s: dtype %d is not a kp_dtype", fn, (int)dtype);
    if (ndim < 1 || ndim > KP_MAX_DIMS)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: ndim is %d; it must be 1..%d", fn, ndim, KP_MAX_DIMS);
    kp_tensor t;
    memset(&t, 0, sizeof t);
    t.buffer = buffer;
    t.offset = offset;
    t.dtype = dtype;
    t.ndim = ndim;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t.shape[i] = shape[i];
        t.strides[i] = strides ? strides[i] : stride;
        if (shape[i] > 0 && __builtin_mul_overflow(stride, shape[i], &stride))
            return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: the shape is too large to address", fn);
    }
    kp_status st = check_view(fn, "the view", &t, false);
    if (st != KP_OK) return st;
    *out = t;
    return KP_OK;
}

kp_status kp_tensor_init_address(kp_tensor *out, kp_device *d, const void *address, kp_dtype dtype, int ndim,
                                 const int64_t *shape, const int64_t *strides) {
    const char *fn = "kp_tensor_init_address";
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    if (!address) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: address is NULL", fn);
    kp_buffer *mem;
    kp_status st = kp_device_memory(d, &mem);
    if (st != KP_OK) return kp_add_context(st, "%s", fn);
    return kp_tensor_init(out, mem, (size_t)(uintptr_t)address, dtype, ndim, shape, strides);
}

static kp_status dtype_from_dlpack(DLDataType t, kp_dtype *out) {
    if (t.lanes != 1) return KP_ERR_INVALID_DTYPE;
    if (t.code == kDLFloat && t.bits == 32) *out = KP_F32;
    else if (t.code == kDLFloat && t.bits == 16) *out = KP_F16;
    else if (t.code == kDLBfloat && t.bits == 16) *out = KP_BF16;
    else if (t.code == kDLInt && t.bits == 32) *out = KP_I32;
    else if (t.code == 10 && t.bits == 8) *out = KP_FP8_E4M3; /* kDLFloat8_e4m3fn (DLPack 1.1; Debian's header is 0.6) */
    else return KP_ERR_INVALID_DTYPE;
    return KP_OK;
}

kp_status kp_tensor_from_dlpack(const DLTensor *t, kp_device *d, kp_tensor *out) {
    const char *fn = "kp_tensor_from_dlpack";
    if (!t) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: t is NULL", fn);
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: d is NULL", fn);
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    if ((int)t->device.device_type != d->iface->dlpack_device_type)
        return kp_set_error(KP_ERR_DEVICE_MISMATCH,
                            "%s: the tensor's DLPack device type is %d; the %s backend takes %d", fn,
                            (int)t->device.device_type, d->info.backend, d->iface->dlpack_device_type);
    if (t->device.device_id != d->info.backend_device && t->device.device_type != kDLCPU)
        return kp_set_error(KP_ERR_DEVICE_MISMATCH, "%s: the tensor is on device_id %d, d is %s device %d",
                            fn, t->device.device_id, d->info.backend, (int)d->info.backend_device);
    kp_dtype dt;
    if (dtype_from_dlpack(t->dtype, &dt) != KP_OK)
        return kp_set_error(KP_ERR_INVALID_DTYPE,
                            "%s: DLPack dtype (code %u, bits %u, lanes %u) has no kport dtype", fn,
                            t->dtype.code, t->dtype.bits, t->dtype.lanes);
    if (t->ndim < 1 || t->ndim > KP_MAX_DIMS)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: ndim is %d; it must be 1..%d", fn, t->ndim,
                            KP_MAX_DIMS);
    if (!t->shape) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: shape is NULL", fn);
    if (!t->data) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: data is NULL", fn);
    kp_tensor v;
    memset(&v, 0, sizeof v);
    v.dtype = dt;
    v.ndim = t->ndim;
    v.offset = (size_t)t->byte_offset;
    int64_t stride = 1, span = 0;
    for (int i = t->ndim - 1; i >= 0; i--) {
        v.shape[i] = t->shape[i];
        v.strides[i] = t->strides ? t->strides[i] : stride;
        if (v.shape[i] <= 0)
            return kp_set_error(KP_ERR_INVALID_SHAPE,
                                "%s: shape[%d] is %lld; empty DLPack tensors cannot be wrapped", fn, i,
                                (long long)v.shape[i]);
        if (v.strides[i] < 0)
            return kp_set_error(KP_ERR_INVALID_LAYOUT, "%s: stride[%d] is negative", fn, i);
        int64_t term;
        if (__builtin_mul_overflow(stride, v.shape[i], &stride) ||
            __builtin_mul_overflow(v.shape[i] - 1, v.strides[i], &term) ||
            __builtin_add_overflow(span, term, &span))
            return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: the tensor is too large to address", fn);
    }
    size_t bytes;
    if (__builtin_mul_overflow((uint64_t)span + 1, kp_dtype_size(dt), &bytes) ||
        __builtin_add_overflow(bytes, t->byte_offset, &bytes))
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "%s: byte_offset %llu plus the %lld-element span of the tensor is too large to address",
                            fn, (unsigned long long)t->byte_offset, (long long)span + 1);
    kp_status st;
    if (d->info.caps & KP_CAP_DEVICE_ADDRESSES) {
        /* an address tensor: nothing allocated; data + byte_offset may not wrap around */
        uintptr_t addr;
        if (__builtin_add_overflow((uintptr_t)t->data, (uintptr_t)t->byte_offset, &addr) ||
            (uint64_t)(uintptr_t)t->byte_offset != t->byte_offset)
            return kp_set_error(KP_ERR_OUT_OF_BOUNDS, "%s: data %p + byte_offset %llu runs past the address space",
                                fn, t->data, (unsigned long long)t->byte_offset);
        v.buffer = &d->memory;
        v.offset = (size_t)addr;
        st = check_view(fn, "the tensor", &v, false);
        if (st == KP_OK) *out = v;
        return st;
    }
    st = kp_buffer_wrap(d, t->data, bytes, &v.buffer);
    if (st != KP_OK) return kp_add_context(st, "%s", fn);
    st = check_view(fn, "the tensor", &v, false); /* what kp_tensor_init requires of a view */
    if (st != KP_OK) {
        kp_buffer_free(v.buffer);
        return st;
    }
    *out = v;
    return KP_OK;
}
