/*
 * backends/opencl/opencl_backend.c — the OpenCL backend: devices, streams, the vtable.
 *
 * Linked against the ICD loader (libOpenCL.so.1), so one plugin sees every vendor's
 * platform (PoCL, NVIDIA, Intel, AMD). Devices are enumerated once at init; a device's
 * context is made when it is opened. A stream is one in-order command queue with
 * profiling on (kbench reads its events). Kernels: opencl_program.c; buffers:
 * opencl_buffer.c; op slots stay "unsupported" until the op issues land.
 */
#include "opencl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const kp_backend_iface kp_ocl_iface;

/* ---- device discovery ---------------------------------------------------- */

static void ocl_str(cl_device_id dev, cl_device_info what, char *out, size_t cap) {
    out[0] = '\0';
    if (clGetDeviceInfo(dev, what, cap, out, NULL) != CL_SUCCESS) out[0] = '\0';
    out[cap - 1] = '\0';
}

static int ocl_has_word(const char *list, const char *word) {
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return 1;
    return 0;
}

/* Fills d->info and flags from the driver's own answers; nothing is assumed. */
static void ocl_describe(kp_ocl_device_desc *d, int index) {
    kp_device_info *info = &d->info;
    char ext[8192];
    cl_device_type type = 0;
    cl_bool unified = CL_FALSE;
    cl_uint cus = 0;
    cl_ulong mem = 0, local = 0;

    memset(info, 0, sizeof *info);
    ocl_str(d->id, CL_DEVICE_NAME, info->name, sizeof info->name);
    ocl_str(d->id, CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
    ocl_str(d->id, CL_DRIVER_VERSION, info->driver, sizeof info->driver);
    ocl_str(d->id, CL_DEVICE_VERSION, d->device_version, sizeof d->device_version);
    ocl_str(d->id, CL_DEVICE_EXTENSIONS, ext, sizeof ext);
    snprintf(info->backend, sizeof info->backend, "opencl");
    clGetDeviceInfo(d->id, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(d->id, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof unified, &unified, NULL);
    clGetDeviceInfo(d->id, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
    clGetDeviceInfo(d->id, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
    clGetDeviceInfo(d->id, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL);

    if (type & CL_DEVICE_TYPE_CPU) info->kind = KP_DEVICE_CPU;
    else if (type & CL_DEVICE_TYPE_GPU) info->kind = unified ? KP_DEVICE_GPU_INTEGRATED : KP_DEVICE_GPU_DISCRETE;
    else info->kind = KP_DEVICE_ACCELERATOR;
    info->compute_units = (int32_t)cus;
    info->memory_bytes = mem;
    info->local_mem_bytes = local;
    info->backend_device = index;
    info->subgroup_size = 1;

    if (ocl_has_word(ext, "cl_khr_fp16")) info->caps |= KP_CAP_F16;
    if (ocl_has_word(ext, "cl_khr_subgroups") || ocl_has_word(ext, "cl_intel_subgroups"))
        info->caps |= KP_CAP_SUBGROUPS;

    d->has_inline_ptx = strstr(d->platform_name, "NVIDIA") != NULL;
    if (d->has_inline_ptx && ocl_has_word(ext, "cl_nv_device_attribute_query")) {
        cl_uint major = 0, minor = 0, warp = 0;
        clGetDeviceInfo(d->id, KP_CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV, sizeof major, &major, NULL);
        clGetDeviceInfo(d->id, KP_CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV, sizeof minor, &minor, NULL);
        clGetDeviceInfo(d->id, KP_CL_DEVICE_WARP_SIZE_NV, sizeof warp, &warp, NULL);
        snprintf(info->arch, sizeof info->arch, "sm_%u%u", major, minor);
        if (warp) info->subgroup_size = (int32_t)warp;
        /* mma.sync through inline PTX: bf16/f16 from sm_80, e4m3 from sm_89 (DESIGN §3) */
        if (major >= 8) info->caps |= KP_CAP_MATRIX_UNITS | KP_CAP_BF16;
        if (major > 8 || (major == 8 && minor >= 9)) info->caps |= KP_CAP_FP8, d->has_e4m3_mma = 1;
    }
    if (d->has_inline_ptx) info->caps |= KP_CAP_INLINE_PTX;
    if (ocl_has_word(ext, "cl_amd_device_attribute_query")) {
        cl_uint wave = 0;
        if (clGetDeviceInfo(d->id, KP_CL_DEVICE_WAVEFRONT_WIDTH_AMD, sizeof wave, &wave, NULL) == CL_SUCCESS && wave)
            info->subgroup_size = (int32_t)wave;
    }
    if (ocl_has_word(ext, "cl_intel_subgroups")) {
        size_t sizes[8] = {0}, bytes = 0;
        if (clGetDeviceInfo(d->id, KP_CL_DEVICE_SUB_GROUP_SIZES_INTEL, sizeof sizes, sizes, &bytes) == CL_SUCCESS)
            for (size_t i = 0; i < bytes / sizeof sizes[0]; ++i)
                if ((int32_t)sizes[i] > info->subgroup_size) info->subgroup_size = (int32_t)sizes[i];
    }
    if (!info->arch[0]) ocl_str(d->id, CL_DEVICE_OPENCL_C_VERSION, info->arch, sizeof info->arch);

    /* IL only exists from OpenCL 2.1; older headers and drivers answer an error. */
    char il[256];
    ocl_str(d->id, KP_CL_DEVICE_IL_VERSION, il, sizeof il);
    d->has_spirv_il = strstr(il, "SPIR-V") != NULL;
    d->has_il_khr = ocl_has_word(ext, "cl_khr_il_program");
    d->has_khr_subgroups = ocl_has_word(ext, "cl_khr_subgroups");
}

static int ocl_usable(cl_device_id dev) {
    cl_bool avail = CL_FALSE, compiler = CL_FALSE;
    clGetDeviceInfo(dev, CL_DEVICE_AVAILABLE, sizeof avail, &avail, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_COMPILER_AVAILABLE, sizeof compiler, &compiler, NULL);
    return avail && compiler; /* every kernel is built from source at first use */
}

/* ---- init / shutdown ----------------------------------------------------- */

static kp_status ocl_init(const kp_host_services *host, const kp_init_options *opt,
                          kp_backend_state **out, char *reason, size_t reason_len) {
    (void)opt;
    *out = NULL;
    kp_ocl_set_host(host);

    cl_uint nplat = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &nplat);
    if (err != CL_SUCCESS || nplat == 0) {
        snprintf(reason, reason_len,
                 "no OpenCL platform: the ICD loader found no vendor driver (%s (%d); "
                 "see /etc/OpenCL/vendors/*.icd or OCL_ICD_VENDORS; Debian: pocl-opencl-icd)",
                 kp_ocl_error_name(err), (int)err);
        return KP_ERR_UNAVAILABLE;
    }
    cl_platform_id *plats = calloc(nplat, sizeof *plats);
    kp_backend_state *b = calloc(1, sizeof *b);
    if (!plats || !b || clGetPlatformIDs(nplat, plats, NULL) != CL_SUCCESS) {
        free(plats);
        free(b);
        snprintf(reason, reason_len, "clGetPlatformIDs failed or out of memory");
        return KP_ERR_BACKEND;
    }
    b->host = host;

    for (cl_uint p = 0; p < nplat; ++p) {
        cl_uint ndev = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &ndev) != CL_SUCCESS || ndev == 0)
            continue; /* a platform with no device (or a broken one) is not fatal */
        cl_device_id *ids = calloc(ndev, sizeof *ids);
        kp_ocl_device_desc *grown = realloc(b->devices, (b->device_count + ndev) * sizeof *grown);
        if (!ids || !grown) {
            free(ids);
            if (grown) b->devices = grown;
            break;
        }
        b->devices = grown;
        char pname[128] = "", pversion[128] = "";
        clGetPlatformInfo(plats[p], CL_PLATFORM_NAME, sizeof pname, pname, NULL);
        clGetPlatformInfo(plats[p], CL_PLATFORM_VERSION, sizeof pversion, pversion, NULL);
        pname[sizeof pname - 1] = pversion[sizeof pversion - 1] = '\0';
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, ndev, ids, NULL) == CL_SUCCESS) {
            for (cl_uint i = 0; i < ndev; ++i) {
                if (!ocl_usable(ids[i])) {
                    host->log("opencl: skipping a device of '%s' (unavailable or no compiler)", pname);
                    continue;
                }
                kp_ocl_device_desc *d = &b->devices[b->device_count];
                memset(d, 0, sizeof *d);
                d->platform = plats[p];
                d->id = ids[i];
                memcpy(d->platform_name, pname, sizeof pname);
                memcpy(d->platform_version, pversion, sizeof pversion);
                ocl_describe(d, b->device_count);
                host->log("opencl: device %d: %s (%s, %s)", b->device_count, d->info.name, pname,
                          d->info.driver);
                b->device_count++;
            }
        }
        free(ids);
    }
    free(plats);
    *out = b;
    return KP_OK;
}

static void ocl_shutdown(kp_backend_state *b) {
    if (!b) return;
    free(b->devices);
    free(b);
}

static int ocl_device_count(kp_backend_state *b) { return b ? b->device_count : 0; }

static kp_status ocl_device_info(kp_backend_state *b, int index, kp_device_info *out) {
    if (!b || index < 0 || index >= b->device_count)
        return kp_ocl_host()->set_error(KP_ERR_INVALID_ARGUMENT, "opencl: no device %d", index);
    *out = b->devices[index].info;
    return KP_OK;
}

static kp_status ocl_device_open(kp_backend_state *b, int index, void **out_impl) {
    *out_impl = NULL;
    if (!b || index < 0 || index >= b->device_count)
        return kp_ocl_host()->set_error(KP_ERR_INVALID_ARGUMENT, "opencl: no device %d", index);
    kp_ocl_device *d = calloc(1, sizeof *d);
    if (!d) return kp_ocl_host()->set_error(KP_ERR_OUT_OF_MEMORY, "opencl: out of memory opening a device");
    d->desc = b->devices[index];

    cl_int err = CL_SUCCESS;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)d->desc.platform, 0};
    d->context = clCreateContext(props, 1, &d->desc.id, NULL, NULL, &err);
    if (err != CL_SUCCESS || pthread_mutex_init(&d->lock, NULL) != 0) {
        kp_status st = err != CL_SUCCESS ? kp_ocl_fail(err, "clCreateContext")
                                         : kp_ocl_host()->set_error(KP_ERR_INTERNAL, "opencl: mutex init failed");
        if (d->context) clReleaseContext(d->context);
        free(d);
        return kp_ocl_host()->add_context(st, "while opening OpenCL device %d (%s)", index, b->devices[index].info.name);
    }
    *out_impl = d;
    return KP_OK;
}

static void ocl_device_close(void *impl) {
    kp_ocl_device *d = impl;
    if (!d) return;
    kp_ocl_scratch_release_all(d);
    kp_ocl_programs_release(d);
    clReleaseContext(d->context);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* ---- streams ------------------------------------------------------------- */

static kp_status ocl_stream_create(kp_device *dev, void **out_impl) {
    kp_ocl_device *d = kp_ocl_dev(dev);
    cl_int err = CL_SUCCESS;
    *out_impl = NULL;
    /* In order: kport's streams are FIFO like CUDA's. clCreateCommandQueue is the 1.2
     * entry point; every 2.x/3.0 ICD still exports it. */
    cl_command_queue q = clCreateCommandQueue(d->context, d->desc.id, CL_QUEUE_PROFILING_ENABLE, &err);
    if (err != CL_SUCCESS) return kp_ocl_fail(err, "clCreateCommandQueue");
    *out_impl = q;
    return KP_OK;
}

/* A server's queue: same context and device as ours, and in order (kport relies on
 * FIFO execution). Retained, so the server may release its reference any time. */
static kp_status ocl_stream_wrap(kp_device *dev, void *native, void **out_impl) {
    kp_ocl_device *d = kp_ocl_dev(dev);
    cl_command_queue q = (cl_command_queue)native;
    cl_context ctx = NULL;
    cl_device_id id = NULL;
    cl_command_queue_properties props = 0;
    cl_int err = clGetCommandQueueInfo(q, CL_QUEUE_CONTEXT, sizeof ctx, &ctx, NULL);
    if (err == CL_SUCCESS) err = clGetCommandQueueInfo(q, CL_QUEUE_DEVICE, sizeof id, &id, NULL);
    if (err == CL_SUCCESS) err = clGetCommandQueueInfo(q, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (err != CL_SUCCESS) return kp_ocl_fail(err, "clGetCommandQueueInfo (is native a cl_command_queue?)");
    if (ctx != d->context || id != d->desc.id)
        return kp_ocl_host()->set_error(KP_ERR_DEVICE_MISMATCH,
                                        "opencl: the queue belongs to another context or device; make it on "
                                        "kp_device_get_native's context and device");
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return kp_ocl_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                        "opencl: the queue is out of order; kport needs an in-order queue");
    err = clRetainCommandQueue(q);
    if (err != CL_SUCCESS) return kp_ocl_fail(err, "clRetainCommandQueue");
    *out_impl = q;
    return KP_OK;
}

static kp_status ocl_stream_native(kp_stream *s, void **out) {
    *out = kp_ocl_queue(s);
    return KP_OK;
}

static kp_status ocl_device_native(kp_device *dev, kp_native_device *out) {
    kp_ocl_device *d = kp_ocl_dev(dev);
    out->context = d->context;
    out->device = d->desc.id;
    out->platform = d->desc.platform;
    return KP_OK;
}

static kp_status ocl_stream_sync(kp_stream *s) {
    cl_int err = clFinish(kp_ocl_queue(s));
    return err == CL_SUCCESS ? KP_OK : kp_ocl_fail(err, "clFinish");
}

static void ocl_stream_destroy(kp_stream *s) {
    cl_command_queue q = kp_ocl_queue(s);
    if (!q) return;
    int wrapped = (s->flags & KP_STREAM_WRAPPED) != 0;
    if (!wrapped) clFinish(q); /* pending work first, as kp_stream_destroy promises */
    /* the queue's scratch: OpenCL frees it once the commands using it finish, so a
     * wrapped queue is never waited for */
    kp_ocl_scratch_drop(kp_ocl_dev(s->device), q, 0);
    clReleaseCommandQueue(q); /* a wrapped queue: our reference only */
}

/* ---- the vtable and the plugin entry ------------------------------------ */

static const kp_backend_iface kp_ocl_iface = {
    .abi_version = KP_BACKEND_ABI_VERSION,
    .struct_size = sizeof(kp_backend_iface),
    .name = "opencl",
    .description = "OpenCL 1.2+ through the ICD loader (libOpenCL.so.1): PoCL, NVIDIA, Intel, AMD",
    .init = ocl_init,
    .shutdown = ocl_shutdown,
    .device_count = ocl_device_count,
    .device_info = ocl_device_info,
    .device_open = ocl_device_open,
    .device_close = ocl_device_close,
    .device_native = ocl_device_native,
    .stream_create = ocl_stream_create,
    .stream_wrap = ocl_stream_wrap,
    .stream_native = ocl_stream_native,
    .stream_sync = ocl_stream_sync,
    .stream_destroy = ocl_stream_destroy,
    .buffer_alloc = kp_ocl_buffer_alloc,
    .buffer_wrap = kp_ocl_buffer_wrap,
    .buffer_free = kp_ocl_buffer_free,
    .buffer_write = kp_ocl_buffer_write,
    .buffer_read = kp_ocl_buffer_read,
    .buffer_copy = kp_ocl_buffer_copy,
    .event_create = kp_ocl_event_create,
    .event_record = kp_ocl_event_record,
    .event_sync = kp_ocl_event_sync,
    .event_elapsed = kp_ocl_event_elapsed,
    .event_destroy = kp_ocl_event_destroy,
    .stream_reserve = kp_ocl_stream_reserve,
    .stream_wait_event = kp_ocl_stream_wait_event,
    .dlpack_device_type = 4, /* kDLOpenCL */
    .ops = {
        [KP_OP_ATTENTION_PREFILL] = kp_ocl_op,
        [KP_OP_ATTENTION_DECODE] = kp_ocl_op,
        [KP_OP_MLA_DECODE] = kp_ocl_op,
        [KP_OP_MOE_GATE] = kp_ocl_op,
        [KP_OP_MOE_ALIGN] = kp_ocl_op,
        [KP_OP_GROUPED_GEMM] = kp_ocl_op,
        [KP_OP_MOE_COMBINE] = kp_ocl_op,
        [KP_OP_MOE_FORWARD] = kp_ocl_op,
        [KP_OP_KV_CACHE_STORE] = kp_ocl_op,
        [KP_OP_QUANTIZE_FP8] = kp_ocl_op,
    },
    .op_kernel = kp_ocl_op_kernel,
    .ep_capacity = kp_ocl_ep_capacity,
};

const kp_backend_iface *kp_ocl_backend_iface(void) { return &kp_ocl_iface; }

__attribute__((visibility("default"))) const kp_backend_iface *kport_backend_entry(uint32_t core_abi_version) {
    /* The core compares abi_version and prints both numbers on a mismatch. */
    (void)core_abi_version;
    return &kp_ocl_iface;
}
