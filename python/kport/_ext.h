/*
 * python/kport/_ext.h — what the two halves of the extension kport._ext share: the Device and
 * Stream objects and the error type. The extension uses kport's public C API only.
 */
#ifndef KPORT_PY_EXT_H
#define KPORT_PY_EXT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "kport.h"

/* A stream's work queue as the op calls see it: the kp_stream and the workspace that
 * kp_moe_forward borrows (grown on demand, reused in stream order). */
typedef struct kpy_queue {
    kp_stream *stream;
    kp_buffer *workspace;
    size_t workspace_bytes;
} kpy_queue;

/* kport._ext.Device: an open kp_device. Its default queue is created on first use; it is a
 * plain struct, not a Stream object, so that device and stream hold no reference cycle. */
typedef struct kpy_device {
    PyObject_HEAD
    kp_device *device;
    int index;          /* global device index (kp_device_info_get) */
    int dlpack_type;    /* the DLDeviceType this backend takes zero copy; -1: none (always staged) */
    int backend_device; /* the device's index within its backend (DLPack device_id) */
    kp_buffer *memory;  /* kp_device_memory: what DLPack imports point into (NULL on OpenCL) */
    kpy_queue queue;    /* the default queue: created lazily */
} kpy_device;

/* kport._ext.Stream: a kp_stream of kport's own, or a framework's stream wrapped. */
typedef struct kpy_stream {
    PyObject_HEAD
    kpy_device *owner; /* owned reference: the device outlives its streams */
    kpy_queue queue;
    int wrapped;
} kpy_stream;

extern PyTypeObject *kpy_device_type;
extern PyTypeObject *kpy_stream_type;
extern PyObject *kpy_error; /* kport.Error */

/* Raises kport.Error for st with kp_last_error()'s message, prefixed by what (may be NULL);
 * returns NULL. */
PyObject *kpy_raise(kp_status st, const char *what);
/* The same with a message of the binding's own (a staging copy's rules). */
PyObject *kpy_raise_text(kp_status st, const char *message, const char *what);
/* The device's default queue, created on first use; NULL with an exception set on failure. */
kpy_queue *kpy_device_queue(kpy_device *d);
/* Makes q's workspace at least bytes long (the old one is released after the stream drains). */
kp_status kpy_queue_reserve(kpy_queue *q, kp_device *d, size_t bytes);

/* _ext_call.c */
int kpy_call_init(void);
PyObject *kpy_configure(PyObject *module, PyObject *args);
PyObject *kpy_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *kpy_op_names(PyObject *module, PyObject *unused);
PyObject *kpy_op_time(PyObject *module, PyObject *unused);
PyObject *kpy_name_kernels(PyObject *module, PyObject *on);

#endif
