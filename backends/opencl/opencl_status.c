/*
 * backends/opencl/opencl_status.c — OpenCL error codes to kp_status, in one switch.
 *
 * The names are compiled in (the ICD loader has no clGetErrorString), so a message
 * reads "OpenCL error CL_OUT_OF_RESOURCES (-5) in clEnqueueNDRangeKernel" everywhere.
 */
#include "opencl_internal.h"

static const kp_host_services *g_host; /* borrowed: the core's, set by init */

const kp_host_services *kp_ocl_host(void) { return g_host; }
void kp_ocl_set_host(const kp_host_services *host) { g_host = host; }

const char *kp_ocl_error_name(cl_int err) {
    switch (err) {
#define KP_CL_ERR(name) case name: return #name;
    KP_CL_ERR(CL_SUCCESS)
    KP_CL_ERR(CL_DEVICE_NOT_FOUND)
    KP_CL_ERR(CL_DEVICE_NOT_AVAILABLE)
    KP_CL_ERR(CL_COMPILER_NOT_AVAILABLE)
    KP_CL_ERR(CL_MEM_OBJECT_ALLOCATION_FAILURE)
    KP_CL_ERR(CL_OUT_OF_RESOURCES)
    KP_CL_ERR(CL_OUT_OF_HOST_MEMORY)
    KP_CL_ERR(CL_PROFILING_INFO_NOT_AVAILABLE)
    KP_CL_ERR(CL_MEM_COPY_OVERLAP)
    KP_CL_ERR(CL_IMAGE_FORMAT_MISMATCH)
    KP_CL_ERR(CL_IMAGE_FORMAT_NOT_SUPPORTED)
    KP_CL_ERR(CL_BUILD_PROGRAM_FAILURE)
    KP_CL_ERR(CL_MAP_FAILURE)
    KP_CL_ERR(CL_MISALIGNED_SUB_BUFFER_OFFSET)
    KP_CL_ERR(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    KP_CL_ERR(CL_COMPILE_PROGRAM_FAILURE)
    KP_CL_ERR(CL_LINKER_NOT_AVAILABLE)
    KP_CL_ERR(CL_LINK_PROGRAM_FAILURE)
    KP_CL_ERR(CL_DEVICE_PARTITION_FAILED)
    KP_CL_ERR(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
    KP_CL_ERR(CL_INVALID_VALUE)
    KP_CL_ERR(CL_INVALID_DEVICE_TYPE)
    KP_CL_ERR(CL_INVALID_PLATFORM)
    KP_CL_ERR(CL_INVALID_DEVICE)
    KP_CL_ERR(CL_INVALID_CONTEXT)
    KP_CL_ERR(CL_INVALID_QUEUE_PROPERTIES)
    KP_CL_ERR(CL_INVALID_COMMAND_QUEUE)
    KP_CL_ERR(CL_INVALID_HOST_PTR)
    KP_CL_ERR(CL_INVALID_MEM_OBJECT)
    KP_CL_ERR(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
    KP_CL_ERR(CL_INVALID_IMAGE_SIZE)
    KP_CL_ERR(CL_INVALID_SAMPLER)
    KP_CL_ERR(CL_INVALID_BINARY)
    KP_CL_ERR(CL_INVALID_BUILD_OPTIONS)
    KP_CL_ERR(CL_INVALID_PROGRAM)
    KP_CL_ERR(CL_INVALID_PROGRAM_EXECUTABLE)
    KP_CL_ERR(CL_INVALID_KERNEL_NAME)
    KP_CL_ERR(CL_INVALID_KERNEL_DEFINITION)
    KP_CL_ERR(CL_INVALID_KERNEL)
    KP_CL_ERR(CL_INVALID_ARG_INDEX)
    KP_CL_ERR(CL_INVALID_ARG_VALUE)
    KP_CL_ERR(CL_INVALID_ARG_SIZE)
    KP_CL_ERR(CL_INVALID_KERNEL_ARGS)
    KP_CL_ERR(CL_INVALID_WORK_DIMENSION)
    KP_CL_ERR(CL_INVALID_WORK_GROUP_SIZE)
    KP_CL_ERR(CL_INVALID_WORK_ITEM_SIZE)
    KP_CL_ERR(CL_INVALID_GLOBAL_OFFSET)
    KP_CL_ERR(CL_INVALID_EVENT_WAIT_LIST)
    KP_CL_ERR(CL_INVALID_EVENT)
    KP_CL_ERR(CL_INVALID_OPERATION)
    KP_CL_ERR(CL_INVALID_GL_OBJECT)
    KP_CL_ERR(CL_INVALID_BUFFER_SIZE)
    KP_CL_ERR(CL_INVALID_MIP_LEVEL)
    KP_CL_ERR(CL_INVALID_GLOBAL_WORK_SIZE)
    KP_CL_ERR(CL_INVALID_PROPERTY)
    KP_CL_ERR(CL_INVALID_IMAGE_DESCRIPTOR)
    KP_CL_ERR(CL_INVALID_COMPILER_OPTIONS)
    KP_CL_ERR(CL_INVALID_LINKER_OPTIONS)
    KP_CL_ERR(CL_INVALID_DEVICE_PARTITION_COUNT)
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR"; /* the ICD loader: no vendor .icd */
#undef KP_CL_ERR
    }
    return "CL_UNKNOWN_ERROR";
}

kp_status kp_ocl_status(cl_int err) {
    switch (err) {
    case CL_SUCCESS:
        return KP_OK;
    case CL_OUT_OF_HOST_MEMORY:
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
    case CL_INVALID_BUFFER_SIZE:
        return KP_ERR_OUT_OF_MEMORY;
    case CL_BUILD_PROGRAM_FAILURE:
    case CL_COMPILE_PROGRAM_FAILURE:
    case CL_LINK_PROGRAM_FAILURE:
    case CL_INVALID_BUILD_OPTIONS:
    case CL_INVALID_COMPILER_OPTIONS:
    case CL_INVALID_BINARY:
        return KP_ERR_BUILD_FAILED;
    case CL_DEVICE_NOT_FOUND:
    case CL_DEVICE_NOT_AVAILABLE:
    case CL_COMPILER_NOT_AVAILABLE:
    case CL_LINKER_NOT_AVAILABLE:
    case -1001: /* CL_PLATFORM_NOT_FOUND_KHR */
        return KP_ERR_UNAVAILABLE;
    case CL_INVALID_WORK_GROUP_SIZE:
    case CL_INVALID_WORK_ITEM_SIZE:
        return KP_ERR_UNSUPPORTED;
    default: /* CL_OUT_OF_RESOURCES (often a kernel fault), invalid handles, ... */
        return KP_ERR_BACKEND;
    }
}

kp_status kp_ocl_fail(cl_int err, const char *call) {
    kp_status st = kp_ocl_status(err);
    if (st == KP_OK) st = KP_ERR_INTERNAL; /* a caller bug: failing on success */
    return kp_ocl_host()->set_error(st, "OpenCL error %s (%d) in %s", kp_ocl_error_name(err),
                                    (int)err, call);
}
