/*
 * python/kport/_ext.c — the module kport._ext: init, backend and device queries, the Device
 * and Stream objects, and kport.Error. The op calls are in _ext_call.c.
 *
 * Written against the CPython C API directly (no binding generator): an op call is one
 * vectorcall into kpy_call, which is what keeps the per-call overhead small (README, Python).
 */
#include "_ext.h"

#include <dlpack/dlpack.h>

PyTypeObject *kpy_device_type;
PyTypeObject *kpy_stream_type;
PyObject *kpy_error;

PyObject *kpy_raise_text(kp_status st, const char *message, const char *what) {
    PyObject *text = what ? PyUnicode_FromFormat("%s: %s: %s", kp_status_str(st), what, message)
                          : PyUnicode_FromFormat("%s: %s", kp_status_str(st), message);
    if (!text) return NULL;
    PyObject *exc = PyObject_CallOneArg(kpy_error, text);
    Py_DECREF(text);
    if (!exc) return NULL;
    PyObject *status = PyUnicode_FromString(kp_status_str(st));
    PyObject *code = PyLong_FromLong((long)st);
    PyObject *msg = what ? PyUnicode_FromFormat("%s: %s", what, message) : PyUnicode_FromString(message);
    if (status && code && msg && PyObject_SetAttrString(exc, "status", status) == 0 &&
        PyObject_SetAttrString(exc, "code", code) == 0 && PyObject_SetAttrString(exc, "message", msg) == 0)
        PyErr_SetObject(kpy_error, exc);
    Py_XDECREF(status);
    Py_XDECREF(code);
    Py_XDECREF(msg);
    Py_DECREF(exc);
    return NULL;
}

PyObject *kpy_raise(kp_status st, const char *what) { return kpy_raise_text(st, kp_last_error(), what); }

/* ---- queues ---- */

kp_status kpy_queue_reserve(kpy_queue *q, kp_device *d, size_t bytes) {
    if (q->workspace && q->workspace_bytes >= bytes) return KP_OK;
    kp_buffer *grown = NULL;
    kp_status st = kp_buffer_alloc(d, bytes ? bytes : 1, &grown);
    if (st != KP_OK) return st;
    if (q->workspace) {
        /* earlier calls on this stream may still be using the old workspace */
        st = kp_stream_sync(q->stream);
        if (st != KP_OK) {
            kp_buffer_free(grown);
            return st;
        }
        kp_buffer_free(q->workspace);
    }
    q->workspace = grown;
    q->workspace_bytes = bytes;
    return KP_OK;
}

static void queue_release(kpy_queue *q) {
    if (q->stream) kp_stream_destroy(q->stream); /* waits for pending work first */
    if (q->workspace) kp_buffer_free(q->workspace);
    q->stream = NULL;
    q->workspace = NULL;
    q->workspace_bytes = 0;
}

/* ---- Device ---- */

/* The DLPack device type each built-in backend wraps without a copy (its plugin's
 * dlpack_device_type); anything else is staged through a device buffer. */
static int dlpack_type_of(const char *backend) {
    if (strcmp(backend, "cpu") == 0) return kDLCPU;
    if (strcmp(backend, "cuda") == 0) return kDLCUDA;
    if (strcmp(backend, "hip") == 0) return kDLROCM;
    if (strcmp(backend, "opencl") == 0) return kDLOpenCL;
    return -1;
}

static PyObject *info_dict(const kp_device_info *i, int index);

static PyObject *device_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *names[] = {"index", NULL};
    int index = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|i", names, &index)) return NULL;
    kp_status st = kp_init(NULL);
    if (st != KP_OK) return kpy_raise(st, "kp_init");
    kp_device *dev = NULL;
    kp_device_info info;
    st = kp_device_open(index, &dev);
    if (st == KP_OK) st = kp_device_get_info(dev, &info);
    if (st != KP_OK) {
        if (dev) kp_device_close(dev);
        return kpy_raise(st, "kp_device_open");
    }
    /* the global index, so that equal devices compare equal in Python */
    int global = -1;
    for (int i = 0; i < kp_device_count() && global < 0; i++) {
        kp_device_info other;
        if (kp_device_info_get(i, &other) == KP_OK && other.backend_index == info.backend_index &&
            other.backend_device == info.backend_device)
            global = i;
    }
    kpy_device *self = (kpy_device *)type->tp_alloc(type, 0);
    if (!self) {
        kp_device_close(dev);
        return NULL;
    }
    self->device = dev;
    self->index = global;
    self->dlpack_type = dlpack_type_of(info.backend);
    self->backend_device = info.backend_device;
    if ((info.caps & KP_CAP_DEVICE_ADDRESSES) && kp_device_memory(dev, &self->memory) != KP_OK) self->memory = NULL;
    return (PyObject *)self;
}

static void device_dealloc(kpy_device *self) {
    queue_release(&self->queue);
    if (self->device) kp_device_close(self->device);
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

kpy_queue *kpy_device_queue(kpy_device *d) {
    if (!d->queue.stream) {
        kp_status st = kp_stream_create(d->device, &d->queue.stream);
        if (st != KP_OK) {
            d->queue.stream = NULL;
            kpy_raise(st, "kp_stream_create");
            return NULL;
        }
    }
    return &d->queue;
}

static PyObject *device_info(kpy_device *self, PyObject *unused) {
    (void)unused;
    kp_device_info info;
    kp_status st = kp_device_get_info(self->device, &info);
    if (st != KP_OK) return kpy_raise(st, "kp_device_get_info");
    return info_dict(&info, self->index);
}

static PyObject *stream_make(kpy_device *owner, void *native);

static PyObject *device_stream(kpy_device *self, PyObject *unused) {
    (void)unused;
    return stream_make(self, NULL);
}

/* wrap_stream(native: int): runs kport's work on a framework's CUstream / hipStream_t /
 * cl_command_queue, given as its address. kport never synchronises or destroys it. */
static PyObject *device_wrap_stream(kpy_device *self, PyObject *arg) {
    void *native = PyLong_AsVoidPtr(arg);
    if (!native && PyErr_Occurred()) return NULL;
    if (!native) {
        PyErr_SetString(PyExc_ValueError, "wrap_stream: the native stream is NULL (0)");
        return NULL;
    }
    return stream_make(self, native);
}

static PyObject *device_synchronize(kpy_device *self, PyObject *unused) {
    (void)unused;
    if (!self->queue.stream) Py_RETURN_NONE; /* nothing was queued on it */
    kp_status st;
    Py_BEGIN_ALLOW_THREADS st = kp_stream_sync(self->queue.stream);
    Py_END_ALLOW_THREADS if (st != KP_OK) return kpy_raise(st, "kp_stream_sync");
    Py_RETURN_NONE;
}

static PyObject *device_get_index(kpy_device *self, void *c) {
    (void)c;
    return PyLong_FromLong(self->index);
}

static PyObject *device_get_dlpack(kpy_device *self, void *c) {
    (void)c;
    return Py_BuildValue("(ii)", self->dlpack_type, self->backend_device);
}

static PyMethodDef device_methods[] = {
    {"info", (PyCFunction)device_info, METH_NOARGS, "kp_device_info of this device, as a dict."},
    {"stream", (PyCFunction)device_stream, METH_NOARGS, "A new kport stream on this device."},
    {"wrap_stream", (PyCFunction)device_wrap_stream, METH_O,
     "wrap_stream(native: int) -> Stream over a framework's stream (CUstream, hipStream_t, cl_command_queue)."},
    {"synchronize", (PyCFunction)device_synchronize, METH_NOARGS, "Waits for the default stream's work."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef device_getset[] = {
    {"index", (getter)device_get_index, NULL, "global device index", NULL},
    {"dlpack_device", (getter)device_get_dlpack, NULL,
     "(DLDeviceType, device_id) of the memory this device uses without a copy; type -1: none", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot device_slots[] = {
    {Py_tp_new, device_new},
    {Py_tp_dealloc, device_dealloc},
    {Py_tp_methods, device_methods},
    {Py_tp_getset, device_getset},
    {Py_tp_doc, "Device(index=-1): an open kport device (-1: the best one by policy)."},
    {0, NULL},
};

static PyType_Spec device_spec = {"kport._ext.Device", sizeof(kpy_device), 0, Py_TPFLAGS_DEFAULT,
                                  device_slots};

/* ---- Stream ---- */

static PyObject *stream_make(kpy_device *owner, void *native) {
    kp_stream *s = NULL;
    kp_status st = native ? kp_stream_wrap(owner->device, native, &s) : kp_stream_create(owner->device, &s);
    if (st != KP_OK) return kpy_raise(st, native ? "kp_stream_wrap" : "kp_stream_create");
    kpy_stream *self = (kpy_stream *)kpy_stream_type->tp_alloc(kpy_stream_type, 0);
    if (!self) {
        kp_stream_destroy(s);
        return NULL;
    }
    Py_INCREF(owner);
    self->owner = owner;
    self->queue.stream = s;
    self->wrapped = native != NULL;
    return (PyObject *)self;
}

static PyObject *stream_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    (void)type, (void)args, (void)kw;
    PyErr_SetString(PyExc_TypeError, "make streams with Device.stream() or Device.wrap_stream(native)");
    return NULL;
}

static void stream_dealloc(kpy_stream *self) {
    queue_release(&self->queue);
    Py_XDECREF(self->owner);
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyObject *stream_synchronize(kpy_stream *self, PyObject *unused) {
    (void)unused;
    kp_status st;
    Py_BEGIN_ALLOW_THREADS st = kp_stream_sync(self->queue.stream);
    Py_END_ALLOW_THREADS if (st != KP_OK) return kpy_raise(st, "kp_stream_sync");
    Py_RETURN_NONE;
}

static PyObject *stream_native(kpy_stream *self, PyObject *unused) {
    (void)unused;
    void *native = NULL;
    kp_status st = kp_stream_get_native(self->queue.stream, &native);
    if (st != KP_OK) return kpy_raise(st, "kp_stream_get_native");
    return PyLong_FromVoidPtr(native);
}

static PyObject *stream_get_device(kpy_stream *self, void *c) {
    (void)c;
    Py_INCREF(self->owner);
    return (PyObject *)self->owner;
}

static PyMethodDef stream_methods[] = {
    {"synchronize", (PyCFunction)stream_synchronize, METH_NOARGS, "Waits for the work queued on this stream."},
    {"native", (PyCFunction)stream_native, METH_NOARGS,
     "The CUstream / hipStream_t / cl_command_queue behind this stream, as an int (0 on cpu)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef stream_getset[] = {
    {"device", (getter)stream_get_device, NULL, "the Device this stream belongs to", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot stream_slots[] = {
    {Py_tp_new, stream_new},
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_methods, stream_methods},
    {Py_tp_getset, stream_getset},
    {Py_tp_doc, "A kport stream: ops queued on it run in order."},
    {0, NULL},
};

static PyType_Spec stream_spec = {"kport._ext.Stream", sizeof(kpy_stream), 0, Py_TPFLAGS_DEFAULT,
                                  stream_slots};

/* ---- module functions ---- */

static PyObject *kind_str(kp_device_kind k) {
    switch (k) {
    case KP_DEVICE_CPU: return PyUnicode_FromString("cpu");
    case KP_DEVICE_GPU_INTEGRATED: return PyUnicode_FromString("integrated-gpu");
    case KP_DEVICE_GPU_DISCRETE: return PyUnicode_FromString("discrete-gpu");
    case KP_DEVICE_ACCELERATOR: return PyUnicode_FromString("accelerator");
    }
    return PyUnicode_FromString("unknown");
}

static PyObject *info_dict(const kp_device_info *i, int index) {
    return Py_BuildValue("{s:i,s:s,s:s,s:s,s:s,s:s,s:N,s:K,s:i,s:i,s:K,s:I,s:i,s:i}", "index", index, "name",
                         i->name, "vendor", i->vendor, "backend", i->backend, "arch", i->arch, "driver",
                         i->driver, "kind", kind_str(i->kind), "memory_bytes",
                         (unsigned long long)i->memory_bytes, "compute_units", (int)i->compute_units,
                         "subgroup_size", (int)i->subgroup_size, "local_mem_bytes",
                         (unsigned long long)i->local_mem_bytes, "caps", (unsigned)i->caps, "backend_index",
                         (int)i->backend_index, "backend_device", (int)i->backend_device);
}

static PyObject *mod_init(PyObject *m, PyObject *args, PyObject *kw) {
    (void)m;
    static char *names[] = {"plugin_path", "cpu_threads", "no_plugins", NULL};
    const char *plugin_path = NULL;
    int cpu_threads = 0, no_plugins = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|zip", names, &plugin_path, &cpu_threads, &no_plugins))
        return NULL;
    kp_init_options opt = {.plugin_path = plugin_path, .cpu_threads = cpu_threads,
                           .flags = no_plugins ? KP_INIT_NO_PLUGINS : 0u};
    kp_status st;
    Py_BEGIN_ALLOW_THREADS st = kp_init(&opt);
    Py_END_ALLOW_THREADS if (st != KP_OK) return kpy_raise(st, "kp_init");
    Py_RETURN_NONE;
}

static PyObject *mod_backends(PyObject *m, PyObject *unused) {
    (void)m, (void)unused;
    PyObject *list = PyList_New(0);
    for (int i = 0; list && i < kp_backend_count(); i++) {
        kp_backend_info b;
        kp_status st = kp_backend_info_get(i, &b);
        if (st != KP_OK) {
            Py_DECREF(list);
            return kpy_raise(st, "kp_backend_info_get");
        }
        PyObject *d = Py_BuildValue("{s:s,s:s,s:s,s:O,s:s,s:i}", "name", b.name, "description", b.description,
                                    "path", b.path, "available", b.available ? Py_True : Py_False, "reason",
                                    b.reason, "device_count", (int)b.device_count);
        if (!d || PyList_Append(list, d) != 0) Py_CLEAR(list);
        Py_XDECREF(d);
    }
    return list;
}

static PyObject *mod_devices(PyObject *m, PyObject *unused) {
    (void)m, (void)unused;
    PyObject *list = PyList_New(0);
    for (int i = 0; list && i < kp_device_count(); i++) {
        kp_device_info info;
        kp_status st = kp_device_info_get(i, &info);
        if (st != KP_OK) {
            Py_DECREF(list);
            return kpy_raise(st, "kp_device_info_get");
        }
        PyObject *d = info_dict(&info, i);
        if (!d || PyList_Append(list, d) != 0) Py_CLEAR(list);
        Py_XDECREF(d);
    }
    return list;
}

static PyObject *mod_version(PyObject *m, PyObject *unused) {
    (void)m, (void)unused;
    return PyUnicode_FromString(kp_version());
}

static PyMethodDef module_methods[] = {
    {"init", (PyCFunction)(void (*)(void))mod_init, METH_VARARGS | METH_KEYWORDS,
     "init(plugin_path=None, cpu_threads=0, no_plugins=False): kp_init (idempotent: the first call's options win)."},
    {"backends", mod_backends, METH_NOARGS, "kp_backend_info of every backend, as dicts."},
    {"devices", mod_devices, METH_NOARGS, "kp_device_info of every usable device, as dicts."},
    {"version", mod_version, METH_NOARGS, "kp_version()"},
    {"call", (PyCFunction)(void (*)(void))kpy_call, METH_FASTCALL,
     "call(op: int, target: Device | Stream, *fields): one op, fields in its params struct's order."},
    {"configure", kpy_configure, METH_VARARGS,
     "configure(host_device, resolver, exporters): where host memory runs when no target is given, "
     "resolver(dl_type, dl_id, obj) -> Device | Stream for device memory, and (type, to_capsule) pairs."},
    {"op_time", kpy_op_time, METH_NOARGS,
     "(calls, seconds) spent inside the C op calls since import: wall time minus this is the binding's cost."},
    {"name_kernels", kpy_name_kernels, METH_O,
     "name_kernels(on): while on, this thread's calls name their kernel (kp_op_kernel) instead of running; "
     "turning it off returns the last name (None: no call named one)."},
    {"op_names", kpy_op_names, METH_NOARGS, "The ops call() knows, in index order, with their field names."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "kport._ext",
                                        "kport's C API, as the Python package uses it.", -1, module_methods,
                                        NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__ext(void) {
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    kpy_device_type = (PyTypeObject *)PyType_FromSpec(&device_spec);
    kpy_stream_type = (PyTypeObject *)PyType_FromSpec(&stream_spec);
    kpy_error = PyErr_NewExceptionWithDoc(
        "kport.Error",
        "A kport call failed: .status is the kp_status name (\"KP_ERR_INVALID_SHAPE\"), .code its value, "
        ".message kp_last_error()'s text.",
        PyExc_RuntimeError, NULL);
    if (!kpy_device_type || !kpy_stream_type || !kpy_error || kpy_call_init() != 0 ||
        PyModule_AddObjectRef(m, "Device", (PyObject *)kpy_device_type) != 0 ||
        PyModule_AddObjectRef(m, "Stream", (PyObject *)kpy_stream_type) != 0 ||
        PyModule_AddObjectRef(m, "Error", kpy_error) != 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
