/*
 * python/kport/_ext_call.c — one entry point, call(op, target, *fields), for every op.
 *
 * Each op is a table of its params struct's fields (name, kind, offset), so the argument
 * list is written once, here, and the Python layer passes the fields in that order.
 * A tensor field takes any object with __dlpack__ (or a "dltensor" capsule):
 *  - memory of the kind the device uses (numpy on cpu, torch.cuda on cuda) is imported with
 *    kp_tensor_from_dlpack: zero copy, and on cpu/cuda/rocm an address tensor (no kp_buffer
 *    made or freed per call); on OpenCL a kp_buffer over the cl_mem, freed after the call;
 *  - host memory on a device that cannot address it (numpy on opencl) is staged: copied into
 *    a device buffer, and outputs copied back once the op has succeeded (never after a failure:
 *    a call that fails writes nothing).
 * A call that touched host memory returns when the work is done (numpy semantics); a call on
 * device memory only is asynchronous on its stream, as in the framework.
 */
#include "_ext.h"

#include <dlpack/dlpack.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

/* DLPack 1.1's code for OCP e4m3fn (kDLFloat8_e4m3fn); Debian's dlpack.h (0.6) predates it. */
#define KPY_DL_FLOAT8_E4M3FN 10

enum field_kind {
    F_IN,     /* input tensor (or None when optional) */
    F_IN_FP8, /* input tensor that may be FP8 e4m3 given as raw bytes (uint8) */
    F_OUT,    /* output tensor, written by the op (or None when optional) */
    F_I32,    /* int32 scalar */
    F_F32,    /* float scalar */
};

typedef struct op_field {
    const char *name;
    unsigned char kind;
    unsigned short offset;
} op_field;

typedef struct op_table {
    const char *name;
    kp_status (*run)(kp_stream *s, const void *params);
    const op_field *fields;
    int nfields;
} op_table;

#define RUN(fn, T) \
    static kp_status run_##fn(kp_stream *s, const void *p) { return fn(s, (const T *)p); }
RUN(kp_attention_prefill, kp_attention_prefill_params)
RUN(kp_attention_decode, kp_attention_decode_params)
RUN(kp_mla_decode, kp_mla_decode_params)
RUN(kp_moe_gate, kp_moe_gate_params)
RUN(kp_moe_align, kp_moe_align_params)
RUN(kp_grouped_gemm, kp_grouped_gemm_params)
RUN(kp_moe_combine, kp_moe_combine_params)
RUN(kp_moe_forward, kp_moe_forward_params)
RUN(kp_kv_cache_store, kp_kv_cache_store_params)
RUN(kp_quantize_fp8, kp_quantize_fp8_params)

#define FLD(T, member, kind) {#member, kind, (unsigned short)offsetof(T, member)}
#define ROUTING(T) \
    FLD(T, routing.topk, F_I32), FLD(T, routing.n_group, F_I32), FLD(T, routing.topk_group, F_I32), \
        FLD(T, routing.scoring, F_I32), FLD(T, routing.renormalize, F_I32), FLD(T, routing.route_scale, F_F32)

static const op_field prefill_fields[] = {
    FLD(kp_attention_prefill_params, q, F_IN),
    FLD(kp_attention_prefill_params, k, F_IN),
    FLD(kp_attention_prefill_params, v, F_IN),
    FLD(kp_attention_prefill_params, out, F_OUT),
    FLD(kp_attention_prefill_params, lse, F_OUT),
    FLD(kp_attention_prefill_params, cu_seqlens_q, F_IN),
    FLD(kp_attention_prefill_params, cu_seqlens_k, F_IN),
    FLD(kp_attention_prefill_params, max_seqlen_q, F_I32),
    FLD(kp_attention_prefill_params, max_seqlen_k, F_I32),
    FLD(kp_attention_prefill_params, softmax_scale, F_F32),
    FLD(kp_attention_prefill_params, causal, F_I32),
    FLD(kp_attention_prefill_params, window_left, F_I32),
    FLD(kp_attention_prefill_params, window_right, F_I32),
};
static const op_field decode_fields[] = {
    FLD(kp_attention_decode_params, q, F_IN),
    FLD(kp_attention_decode_params, k_cache, F_IN_FP8),
    FLD(kp_attention_decode_params, v_cache, F_IN_FP8),
    FLD(kp_attention_decode_params, block_table, F_IN),
    FLD(kp_attention_decode_params, seq_lens, F_IN),
    FLD(kp_attention_decode_params, out, F_OUT),
    FLD(kp_attention_decode_params, lse, F_OUT),
    FLD(kp_attention_decode_params, softmax_scale, F_F32),
    FLD(kp_attention_decode_params, causal, F_I32),
    FLD(kp_attention_decode_params, num_splits, F_I32),
    FLD(kp_attention_decode_params, k_scale, F_IN),
    FLD(kp_attention_decode_params, v_scale, F_IN),
};
static const op_field mla_fields[] = {
    FLD(kp_mla_decode_params, q, F_IN),
    FLD(kp_mla_decode_params, kv_cache, F_IN_FP8),
    FLD(kp_mla_decode_params, block_table, F_IN),
    FLD(kp_mla_decode_params, seq_lens, F_IN),
    FLD(kp_mla_decode_params, out, F_OUT),
    FLD(kp_mla_decode_params, lse, F_OUT),
    FLD(kp_mla_decode_params, softmax_scale, F_F32),
    FLD(kp_mla_decode_params, causal, F_I32),
    FLD(kp_mla_decode_params, head_dim_v, F_I32),
    FLD(kp_mla_decode_params, num_splits, F_I32),
    FLD(kp_mla_decode_params, kv_scale, F_IN),
};
static const op_field gate_fields[] = {
    FLD(kp_moe_gate_params, logits, F_IN),
    FLD(kp_moe_gate_params, bias, F_IN),
    FLD(kp_moe_gate_params, topk_ids, F_OUT),
    FLD(kp_moe_gate_params, topk_weights, F_OUT),
    ROUTING(kp_moe_gate_params),
};
static const op_field align_fields[] = {
    FLD(kp_moe_align_params, topk_ids, F_IN),
    FLD(kp_moe_align_params, sorted_ids, F_OUT),
    FLD(kp_moe_align_params, expert_offsets, F_OUT),
    FLD(kp_moe_align_params, token_pos, F_OUT),
    FLD(kp_moe_align_params, num_experts, F_I32),
    FLD(kp_moe_align_params, block_size, F_I32),
};
static const op_field gemm_fields[] = {
    FLD(kp_grouped_gemm_params, a, F_IN_FP8), /* W8A8: e4m3 activations (uint8 bytes too) */
    FLD(kp_grouped_gemm_params, w, F_IN_FP8),
    FLD(kp_grouped_gemm_params, w_scale, F_IN),
    FLD(kp_grouped_gemm_params, expert_offsets, F_IN),
    FLD(kp_grouped_gemm_params, out, F_OUT),
    FLD(kp_grouped_gemm_params, a_scale, F_IN),
    FLD(kp_grouped_gemm_params, a_scale_layout, F_I32),
    FLD(kp_grouped_gemm_params, masked_m, F_IN), /* the masked [E, max_m, K] layout's int32 [E] counts */
};
static const op_field combine_fields[] = {
    FLD(kp_moe_combine_params, expert_out, F_IN),
    FLD(kp_moe_combine_params, token_pos, F_IN),
    FLD(kp_moe_combine_params, topk_weights, F_IN),
    FLD(kp_moe_combine_params, out, F_OUT),
};
static const op_field forward_fields[] = {
    FLD(kp_moe_forward_params, x, F_IN),
    FLD(kp_moe_forward_params, router_logits, F_IN),
    FLD(kp_moe_forward_params, bias, F_IN),
    FLD(kp_moe_forward_params, w13, F_IN_FP8),
    FLD(kp_moe_forward_params, w13_scale, F_IN),
    FLD(kp_moe_forward_params, w2, F_IN_FP8),
    FLD(kp_moe_forward_params, w2_scale, F_IN),
    FLD(kp_moe_forward_params, shared_w13, F_IN_FP8),
    FLD(kp_moe_forward_params, shared_w2, F_IN_FP8),
    FLD(kp_moe_forward_params, out, F_OUT),
    ROUTING(kp_moe_forward_params),
    FLD(kp_moe_forward_params, activation_dtype, F_I32),
    FLD(kp_moe_forward_params, activation_scale_ue8m0, F_I32),
    FLD(kp_moe_forward_params, shared_w13_scale, F_IN),
    FLD(kp_moe_forward_params, shared_w2_scale, F_IN),
};

/* The caches are updated in place (only the mapped slots change): a cache must be memory
 * the device addresses (torch.cuda on cuda, numpy on cpu); a staged copy would lose the
 * other slots. FP8 caches are given as raw bytes (uint8). */
static const op_field kv_store_fields[] = {
    FLD(kp_kv_cache_store_params, key, F_IN),
    FLD(kp_kv_cache_store_params, value, F_IN),
    FLD(kp_kv_cache_store_params, k_cache, F_OUT),
    FLD(kp_kv_cache_store_params, v_cache, F_OUT),
    FLD(kp_kv_cache_store_params, slot_mapping, F_IN),
    FLD(kp_kv_cache_store_params, k_scale, F_IN),
    FLD(kp_kv_cache_store_params, v_scale, F_IN),
};
static const op_field quant_fields[] = {
    FLD(kp_quantize_fp8_params, x, F_IN),
    FLD(kp_quantize_fp8_params, out, F_OUT),
    FLD(kp_quantize_fp8_params, scale, F_OUT),
    FLD(kp_quantize_fp8_params, scale_layout, F_I32),
    FLD(kp_quantize_fp8_params, scale_ue8m0, F_I32),
};

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))
_Static_assert(N(forward_fields) <= 24 && N(gemm_fields) <= 24, "MAX_FIELDS (below) holds every op's fields");
/* Indexed by kp_op. */
static const op_table ops[KP_OP_COUNT] = {
    [KP_OP_ATTENTION_PREFILL] = {"attention_prefill", run_kp_attention_prefill, prefill_fields, N(prefill_fields)},
    [KP_OP_ATTENTION_DECODE] = {"attention_decode", run_kp_attention_decode, decode_fields, N(decode_fields)},
    [KP_OP_MLA_DECODE] = {"mla_decode", run_kp_mla_decode, mla_fields, N(mla_fields)},
    [KP_OP_MOE_GATE] = {"moe_gate", run_kp_moe_gate, gate_fields, N(gate_fields)},
    [KP_OP_MOE_ALIGN] = {"moe_align", run_kp_moe_align, align_fields, N(align_fields)},
    [KP_OP_GROUPED_GEMM] = {"grouped_gemm", run_kp_grouped_gemm, gemm_fields, N(gemm_fields)},
    [KP_OP_MOE_COMBINE] = {"moe_combine", run_kp_moe_combine, combine_fields, N(combine_fields)},
    [KP_OP_MOE_FORWARD] = {"moe_forward", run_kp_moe_forward, forward_fields, N(forward_fields)},
    [KP_OP_KV_CACHE_STORE] = {"kv_cache_store", run_kp_kv_cache_store, kv_store_fields, N(kv_store_fields)},
    [KP_OP_QUANTIZE_FP8] = {"quantize_fp8", run_kp_quantize_fp8, quant_fields, N(quant_fields)},
};
#define MAX_FIELDS 24

typedef union op_params {
    kp_attention_prefill_params prefill;
    kp_attention_decode_params decode;
    kp_mla_decode_params mla;
    kp_moe_gate_params gate;
    kp_moe_align_params align;
    kp_grouped_gemm_params gemm;
    kp_moe_combine_params combine;
    kp_moe_forward_params forward;
} op_params;

/* One tensor argument while a call is in flight. */
typedef struct imported {
    PyObject *capsule; /* owned: keeps the producer's memory alive; its destructor releases it */
    kp_buffer *buffer; /* freed after the call: the OpenCL wrap or the staging copy (NULL: an address tensor) */
    void *host;        /* staged: the caller's memory, copied back when the field is an output */
    size_t bytes;
    int staged, output, host_memory;
} imported;

static PyObject *dlpack_name;
/* Time spent inside the C op calls (with the copies back and the wait for host results), so that the binding's own cost is wall time minus this
 * (kport.overhead measures it; README, Python). Updated with the GIL held. */
static unsigned long long op_calls, op_ns;
/* kpy_name_kernels: while set on a thread, its calls ask kp_op_kernel instead of running */
static _Thread_local int naming;
static _Thread_local char named[KP_KERNEL_NAME_MAX];
static PyObject *exporters;   /* tuple of (type, exporter): faster than __dlpack__ for those types */
static PyObject *host_target; /* the Device that host memory goes to when no target is given */
static PyObject *resolver;    /* resolver(dl_type, dl_id, obj) -> Device | Stream for device memory */

PyObject *kpy_configure(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *host, *res, *exp;
    if (!PyArg_ParseTuple(args, "OOO!", &host, &res, &PyTuple_Type, &exp)) return NULL;
    if (host != Py_None && !Py_IS_TYPE(host, kpy_device_type)) {
        PyErr_SetString(PyExc_TypeError, "configure: the host device must be a Device or None");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(exp); i++) {
        PyObject *pair = PyTuple_GET_ITEM(exp, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyType_Check(PyTuple_GET_ITEM(pair, 0)) ||
            !PyCallable_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "configure: exporters must be (type, callable) pairs");
            return NULL;
        }
    }
    Py_INCREF(host);
    Py_XSETREF(host_target, host);
    Py_INCREF(res);
    Py_XSETREF(resolver, res);
    Py_INCREF(exp);
    Py_XSETREF(exporters, exp);
    Py_RETURN_NONE;
}

int kpy_call_init(void) {
    dlpack_name = PyUnicode_InternFromString("__dlpack__");
    return dlpack_name ? 0 : -1;
}

static int raise_field(const op_table *op, const op_field *f, kp_status st) {
    char what[96];
    snprintf(what, sizeof what, "%s: %s", op->name, f->name);
    kpy_raise(st, what);
    return -1;
}

static int type_error(const op_table *op, const op_field *f, const char *rule, PyObject *obj) {
    PyErr_Format(PyExc_TypeError, "%s: %s must be %s, not %.100s", op->name, f->name, rule, Py_TYPE(obj)->tp_name);
    return -1;
}

static kp_dtype dtype_of(DLDataType t, int *ok) {
    *ok = t.lanes == 1;
    if (t.code == kDLFloat && t.bits == 32) return KP_F32;
    if (t.code == kDLFloat && t.bits == 16) return KP_F16;
    if (t.code == kDLBfloat && t.bits == 16) return KP_BF16;
    if (t.code == kDLInt && t.bits == 32) return KP_I32;
    if (t.code == KPY_DL_FLOAT8_E4M3FN && t.bits == 8) return KP_FP8_E4M3;
    *ok = 0;
    return KP_F32;
}

/* Host memory for a device that cannot address it: a device buffer holding the same bytes
 * (the whole strided span, so rows an op leaves untouched come back unchanged).
 * Returns 0, or -1 with a Python exception set. */
static int stage(const op_table *op, const op_field *f, kp_device *dev, kp_stream *s, const DLTensor *dl,
                 kp_tensor *t, imported *im) {
    char msg[256], what[96];
    snprintf(what, sizeof what, "%s: %s", op->name, f->name);
    int ok;
    kp_dtype dt = dtype_of(dl->dtype, &ok);
    if (!ok) {
        snprintf(msg, sizeof msg, "DLPack dtype (code %u, bits %u, lanes %u) has no kport dtype", dl->dtype.code,
                 dl->dtype.bits, dl->dtype.lanes);
        return kpy_raise_text(KP_ERR_INVALID_DTYPE, msg, what), -1;
    }
    if (dl->ndim < 1 || dl->ndim > KP_MAX_DIMS) {
        snprintf(msg, sizeof msg, "ndim is %d; it must be 1..%d", dl->ndim, KP_MAX_DIMS);
        return kpy_raise_text(KP_ERR_INVALID_SHAPE, msg, what), -1;
    }
    int64_t shape[KP_MAX_DIMS], strides[KP_MAX_DIMS], contiguous = 1, span = 0;
    for (int i = dl->ndim - 1; i >= 0; i--) {
        shape[i] = dl->shape[i];
        strides[i] = dl->strides ? dl->strides[i] : contiguous;
        int64_t term;
        if (shape[i] <= 0 || strides[i] < 0 || __builtin_mul_overflow(contiguous, shape[i], &contiguous) ||
            __builtin_mul_overflow(shape[i] - 1, strides[i], &term) || __builtin_add_overflow(span, term, &span)) {
            snprintf(msg, sizeof msg, "dim %d (size %lld, stride %lld) cannot be copied to the device: sizes "
                     "must be > 0, strides >= 0, the span addressable", i, (long long)shape[i], (long long)strides[i]);
            return kpy_raise_text(KP_ERR_INVALID_SHAPE, msg, what), -1;
        }
    }
    size_t bytes;
    if (__builtin_mul_overflow((size_t)span + 1, kp_dtype_size(dt), &bytes)) {
        return kpy_raise_text(KP_ERR_INVALID_SHAPE, "the tensor is too large to address", what), -1;
    }
    im->host = (char *)dl->data + dl->byte_offset;
    im->bytes = bytes;
    im->staged = 1;
    kp_status st = kp_buffer_alloc(dev, bytes, &im->buffer);
    if (st == KP_OK) st = kp_buffer_write(s, im->buffer, 0, im->host, bytes);
    if (st == KP_OK) st = kp_tensor_init(t, im->buffer, 0, dt, dl->ndim, shape, strides);
    return st == KP_OK ? 0 : raise_field(op, f, st);
}

/* obj -> a "dltensor" capsule in im->capsule: a capsule as is, a registered type through its
 * exporter (torch.Tensor.__dlpack__ is Python code and costs ~8 us; torch's C exporter < 1 us),
 * anything else through __dlpack__(). Returns 0, or -1 with a Python exception set. */
static int export_tensor(const op_table *op, const op_field *f, PyObject *obj, imported *im) {
    if (PyCapsule_IsValid(obj, "dltensor")) {
        Py_INCREF(obj);
        im->capsule = obj;
        return 0;
    }
    for (Py_ssize_t i = 0; exporters && i < PyTuple_GET_SIZE(exporters); i++) {
        PyObject *pair = PyTuple_GET_ITEM(exporters, i);
        if (PyObject_TypeCheck(obj, (PyTypeObject *)PyTuple_GET_ITEM(pair, 0))) {
            im->capsule = PyObject_CallOneArg(PyTuple_GET_ITEM(pair, 1), obj);
            break;
        }
    }
    if (!im->capsule) {
        if (PyErr_Occurred()) return -1;
        im->capsule = PyObject_CallMethodNoArgs(obj, dlpack_name);
        if (!im->capsule) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return -1;
            PyErr_Clear();
            return type_error(op, f, "a tensor with __dlpack__ (numpy, torch, cupy), or None where optional", obj);
        }
    }
    if (!PyCapsule_IsValid(im->capsule, "dltensor")) return type_error(op, f, "exported as a \"dltensor\" capsule", im->capsule);
    return 0;
}

static DLTensor *dltensor_of(imported *im) {
    return &((DLManagedTensor *)PyCapsule_GetPointer(im->capsule, "dltensor"))->dl_tensor;
}

/* The exported tensor -> kp_tensor on dev: wrapped, or staged when dev cannot address host memory.
 * Returns 0, or -1 with a Python exception set. */
static int import_tensor(const op_table *op, const op_field *f, kpy_device *dev, kp_stream *s, kp_tensor *t,
                         imported *im) {
    DLTensor dl = *dltensor_of(im);
    if (f->kind == F_IN_FP8 && dl.dtype.code == kDLUInt && dl.dtype.bits == 8 && dl.dtype.lanes == 1)
        dl.dtype.code = KPY_DL_FLOAT8_E4M3FN; /* raw e4m3 bytes: numpy and others have no FP8 dtype */
    im->output = f->kind == F_OUT;
    im->host_memory = dl.device.device_type == kDLCPU || dl.device.device_type == kDLCUDAHost;
    if (im->host_memory && dev->dlpack_type != kDLCPU) return stage(op, f, dev->device, s, &dl, t, im);
    kp_status st = kp_tensor_from_dlpack(&dl, dev->device, t);
    if (st != KP_OK) return raise_field(op, f, st);
    im->buffer = t->buffer != dev->memory ? t->buffer : NULL; /* an address tensor: nothing to free */
    return 0;
}

static int scalar(const op_table *op, const op_field *f, PyObject *obj, char *params) {
    if (f->kind == F_F32) {
        double v = PyFloat_AsDouble(obj);
        if (v == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return type_error(op, f, "a number", obj);
        }
        float fv = (float)v;
        memcpy(params + f->offset, &fv, sizeof fv);
        return 0;
    }
    int overflow = 0;
    long v = PyLong_AsLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return type_error(op, f, "an int", obj);
    }
    if (overflow || v < INT32_MIN || v > INT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s: %s does not fit in int32", op->name, f->name);
        return -1;
    }
    int32_t iv = (int32_t)v;
    memcpy(params + f->offset, &iv, sizeof iv);
    return 0;
}

PyObject *kpy_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "call(op, target, *fields)");
        return NULL;
    }
    long index = PyLong_AsLong(args[0]);
    if (index < 0 || index >= KP_OP_COUNT) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "call: op %ld is not a kp_op", index);
        return NULL;
    }
    const op_table *op = &ops[index];
    if (nargs - 2 != op->nfields) {
        PyErr_Format(PyExc_TypeError, "call: %s takes %d fields, %zd given", op->name, op->nfields, nargs - 2);
        return NULL;
    }
    op_params params;
    memset(&params, 0, sizeof params);
    char *raw = (char *)&params;
    imported ims[MAX_FIELDS];
    memset(ims, 0, sizeof ims);
    int failed = 0, host = 0, n_imported = 0, first = -1;
    /* 1. scalars, and every tensor exported (None: an absent optional tensor; the core says if required) */
    for (int i = 0; i < op->nfields && !failed; i++) {
        const op_field *f = &op->fields[i];
        PyObject *obj = args[2 + i];
        if (f->kind == F_I32 || f->kind == F_F32) {
            failed = scalar(op, f, obj, raw) != 0;
        } else if (obj != Py_None) {
            n_imported = i + 1;
            failed = export_tensor(op, f, obj, &ims[i]) != 0;
            if (first < 0) first = i;
        }
    }
    /* 2. the device and stream: given, else where the first tensor lives. Device memory runs on
     * the framework's current stream (the resolver's Stream), a given Device included. */
    PyObject *target = args[1], *resolved = NULL;
    const DLTensor *dl = !failed && first >= 0 ? dltensor_of(&ims[first]) : NULL;
    int on_device = dl && dl->device.device_type != kDLCPU && dl->device.device_type != kDLCUDAHost;
    if (!failed && (target == Py_None || (on_device && Py_IS_TYPE(target, kpy_device_type) &&
                                          ((kpy_device *)target)->dlpack_type == (int)dl->device.device_type))) {
        if (!on_device) {
            target = host_target;
        } else if (resolver && resolver != Py_None) {
            target = resolved = PyObject_CallFunction(resolver, "iiO", (int)dl->device.device_type,
                                                      (int)dl->device.device_id, args[2 + first]);
            failed = resolved == NULL;
        }
    }
    kpy_device *dev = NULL;
    kpy_queue *queue = NULL;
    if (!failed && target && Py_IS_TYPE(target, kpy_stream_type)) {
        dev = ((kpy_stream *)target)->owner;
        queue = &((kpy_stream *)target)->queue;
    } else if (!failed && target && Py_IS_TYPE(target, kpy_device_type)) {
        dev = (kpy_device *)target;
        failed = !(queue = kpy_device_queue(dev));
    } else if (!failed) {
        PyErr_Format(PyExc_TypeError, "%s: the target must be a kport Device or Stream, not %.100s", op->name,
                     target ? Py_TYPE(target)->tp_name : "unset (kport.configure was not called)");
        failed = 1;
    }
    /* 3. every tensor as a kp_tensor on that device */
    for (int i = 0; i < n_imported && !failed; i++) {
        if (!ims[i].capsule) continue;
        const op_field *f = &op->fields[i];
        failed = import_tensor(op, f, dev, queue->stream, (kp_tensor *)(raw + f->offset), &ims[i]) != 0;
        host |= ims[i].host_memory;
    }
    kp_status st = KP_OK;
    const char *stage_name = NULL; /* the core's messages name the op themselves */
    if (!failed && index == KP_OP_MOE_FORWARD) { /* the Python layer keeps a workspace per stream */
        size_t bytes = 0;
        st = kp_moe_forward_workspace_size(dev->device, &params.forward, &bytes);
        if (st == KP_OK) st = kpy_queue_reserve(queue, dev->device, bytes);
        params.forward.workspace = queue->workspace;
        stage_name = "moe_forward workspace";
    }
    if (!failed && st == KP_OK && naming) {
        st = kp_op_kernel(dev->device, (kp_op)index, &params, named, sizeof named);
    } else if (!failed && st == KP_OK) {
        stage_name = NULL;
        struct timespec t0, t1;
        Py_BEGIN_ALLOW_THREADS
        clock_gettime(CLOCK_MONOTONIC, &t0);
        st = op->run(queue->stream, &params);
        for (int i = 0; st == KP_OK && i < n_imported; i++)
            if (ims[i].staged && ims[i].output) st = kp_buffer_read(queue->stream, ims[i].buffer, 0, ims[i].host, ims[i].bytes);
        if (st == KP_OK && host) st = kp_stream_sync(queue->stream);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        Py_END_ALLOW_THREADS
        op_calls++;
        op_ns += (unsigned long long)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    }
    if (!failed && st != KP_OK) {
        kpy_raise(st, stage_name);
        failed = 1;
    }
    for (int i = 0; i < n_imported; i++) {
        if (ims[i].buffer) kp_buffer_free(ims[i].buffer);
        Py_XDECREF(ims[i].capsule);
    }
    Py_XDECREF(resolved); /* after the queue's last use: a resolved Stream owns it */
    if (failed) return NULL;
    Py_RETURN_NONE;
}

PyObject *kpy_name_kernels(PyObject *module, PyObject *on) {
    (void)module;
    int was = naming;
    naming = PyObject_IsTrue(on) == 1;
    if (naming) named[0] = '\0';
    if (!was || naming || !named[0]) Py_RETURN_NONE;
    return PyUnicode_FromString(named);
}

PyObject *kpy_op_time(PyObject *module, PyObject *unused) {
    (void)module, (void)unused;
    return Py_BuildValue("(Kd)", op_calls, (double)op_ns * 1e-9);
}

PyObject *kpy_op_names(PyObject *module, PyObject *unused) {
    (void)module, (void)unused;
    PyObject *list = PyList_New(KP_OP_COUNT);
    for (int i = 0; list && i < KP_OP_COUNT; i++) {
        PyObject *fields = PyTuple_New(ops[i].nfields);
        for (int j = 0; fields && j < ops[i].nfields; j++) {
            static const char *kinds[] = {"in", "in_fp8", "out", "i32", "f32"};
            PyObject *pair = Py_BuildValue("(ss)", ops[i].fields[j].name, kinds[ops[i].fields[j].kind]);
            if (!pair) Py_CLEAR(fields);
            else PyTuple_SET_ITEM(fields, j, pair);
        }
        PyObject *entry = fields ? Py_BuildValue("(sN)", ops[i].name, fields) : NULL;
        if (!entry) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, entry);
    }
    return list;
}
