/*
 * backends/opencl/opencl_buffer.c — buffers: a kp_buffer's impl is a retained cl_mem.
 *
 * Allocated and wrapped buffers look the same to the rest of the backend: both hold
 * one reference, released in buffer_free (a wrapped cl_mem stays alive for its owner,
 * who holds its own reference). The core has already checked offsets and sizes
 * against kp_buffer.size; these functions only talk to the driver.
 */
#include "opencl_internal.h"

kp_status kp_ocl_buffer_alloc(kp_device *dev, size_t bytes, void **out_impl) {
    kp_ocl_device *d = kp_ocl_dev(dev);
    cl_int err = CL_SUCCESS;
    *out_impl = NULL;
    /* OpenCL refuses size 0; a 1-byte object keeps every path uniform. */
    cl_mem m = clCreateBuffer(d->context, CL_MEM_READ_WRITE, bytes ? bytes : 1, NULL, &err);
    if (err != CL_SUCCESS)
        return kp_ocl_host()->add_context(kp_ocl_fail(err, "clCreateBuffer"), "while allocating %zu bytes on %s",
                                          bytes, d->desc.info.name);
    *out_impl = m;
    return KP_OK;
}

kp_status kp_ocl_buffer_wrap(kp_device *dev, void *native, size_t bytes, void **out_impl) {
    kp_ocl_device *d = kp_ocl_dev(dev);
    cl_mem m = (cl_mem)native;
    cl_context ctx = NULL;
    size_t size = 0;
    *out_impl = NULL;
    if (!m) return kp_ocl_host()->set_error(KP_ERR_INVALID_ARGUMENT, "native: a NULL cl_mem");

    cl_int err = clGetMemObjectInfo(m, CL_MEM_CONTEXT, sizeof ctx, &ctx, NULL);
    if (err == CL_SUCCESS) err = clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err == CL_INVALID_MEM_OBJECT)
        return kp_ocl_host()->set_error(KP_ERR_INVALID_ARGUMENT, "native: not a cl_mem (%s)", kp_ocl_error_name(err));
    if (err != CL_SUCCESS) return kp_ocl_fail(err, "clGetMemObjectInfo");
    /* A memory object is only usable by queues of its own context. */
    if (ctx != d->context)
        return kp_ocl_host()->set_error(KP_ERR_DEVICE_MISMATCH,
                                        "native: the cl_mem belongs to another cl_context than device '%s' uses",
                                        d->desc.info.name);
    if (size < bytes)
        return kp_ocl_host()->set_error(KP_ERR_OUT_OF_BOUNDS, "bytes: %zu, but the cl_mem holds only %zu bytes",
                                        bytes, size);
    err = clRetainMemObject(m);
    if (err != CL_SUCCESS) return kp_ocl_fail(err, "clRetainMemObject");
    *out_impl = m;
    return KP_OK;
}

void kp_ocl_buffer_free(kp_buffer *b) {
    if (b && b->impl) clReleaseMemObject(kp_ocl_mem(b));
}

kp_status kp_ocl_buffer_write(kp_stream *s, kp_buffer *dst, size_t off, const void *src, size_t n) {
    if (n == 0) return KP_OK; /* CL_INVALID_VALUE otherwise */
    cl_int err = clEnqueueWriteBuffer(kp_ocl_queue(s), kp_ocl_mem(dst), CL_TRUE, off, n, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? KP_OK : kp_ocl_fail(err, "clEnqueueWriteBuffer");
}

kp_status kp_ocl_buffer_read(kp_stream *s, const kp_buffer *src, size_t off, void *dst, size_t n) {
    if (n == 0) return KP_OK;
    cl_int err = clEnqueueReadBuffer(kp_ocl_queue(s), kp_ocl_mem(src), CL_TRUE, off, n, dst, 0, NULL, NULL);
    return err == CL_SUCCESS ? KP_OK : kp_ocl_fail(err, "clEnqueueReadBuffer");
}

kp_status kp_ocl_buffer_copy(kp_stream *s, kp_buffer *dst, size_t dst_off, const kp_buffer *src, size_t src_off,
                             size_t n) {
    if (n == 0) return KP_OK;
    cl_int err = clEnqueueCopyBuffer(kp_ocl_queue(s), kp_ocl_mem(src), kp_ocl_mem(dst), src_off, dst_off, n, 0,
                                     NULL, NULL);
    return err == CL_SUCCESS ? KP_OK : kp_ocl_fail(err, "clEnqueueCopyBuffer");
}
