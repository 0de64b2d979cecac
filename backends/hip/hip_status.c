/*
 * backends/hip/hip_status.c — hipError_t -> kp_status, and hipError_t names.
 *
 * Both are switches over hip_runtime_api.h's enumerators, so a duplicate case is a
 * compile error (the header's deprecated aliases, hipErrorMemoryAllocation = 2 and
 * friends, are left out for that reason) and each name string is spelled by the
 * preprocessor from the enumerator itself. Names are compiled in because a runtime
 * that fails to initialise must still be reported by name; codes newer than this
 * build's header fall back to the runtime's hipGetErrorName.
 *
 * Also here, because everything in the backend but hip_backend.c (which only the
 * plugin links: it holds the exported entry) uses them: the host services and the
 * current-device helpers.
 */
#include "hip_internal.h"

#include <stdarg.h>
#include <stdio.h>

const kp_host_services *kp_hip_host; /* lent by the core at init; valid until shutdown */

kp_status kp_hip_push(const kp_hip_device *d, int *prev) {
    hipError_t e = d->hip->hipGetDevice(prev);
    if (e != hipSuccess) return kp_hip_fail(d->hip, e, "hipGetDevice");
    if (*prev == d->ordinal) return KP_OK;
    e = d->hip->hipSetDevice(d->ordinal);
    return e == hipSuccess ? KP_OK : kp_hip_fail(d->hip, e, "hipSetDevice(%d)", d->ordinal);
}

void kp_hip_pop(const kp_hip_device *d, int prev) {
    if (prev == d->ordinal) return;
    hipError_t e = d->hip->hipSetDevice(prev);
    if (e != hipSuccess)
        kp_hip_host->log("hip: hipSetDevice(%d) restoring the caller's device: %s (%d)", prev,
                         kp_hip_error_name(d->hip, e), (int)e);
}

#define KP_HIP_NAME(e) \
    case e: return #e;

static const char *hip_builtin_name(hipError_t e) {
    switch ((int)e) { /* int: codes from a newer runtime are not in this enum */
    KP_HIP_NAME(hipSuccess)
    KP_HIP_NAME(hipErrorInvalidValue)
    KP_HIP_NAME(hipErrorOutOfMemory)
    KP_HIP_NAME(hipErrorNotInitialized)
    KP_HIP_NAME(hipErrorDeinitialized)
    KP_HIP_NAME(hipErrorProfilerDisabled)
    KP_HIP_NAME(hipErrorProfilerNotInitialized)
    KP_HIP_NAME(hipErrorProfilerAlreadyStarted)
    KP_HIP_NAME(hipErrorProfilerAlreadyStopped)
    KP_HIP_NAME(hipErrorInvalidConfiguration)
    KP_HIP_NAME(hipErrorInvalidPitchValue)
    KP_HIP_NAME(hipErrorInvalidSymbol)
    KP_HIP_NAME(hipErrorInvalidDevicePointer)
    KP_HIP_NAME(hipErrorInvalidMemcpyDirection)
    KP_HIP_NAME(hipErrorInsufficientDriver)
    KP_HIP_NAME(hipErrorMissingConfiguration)
    KP_HIP_NAME(hipErrorPriorLaunchFailure)
    KP_HIP_NAME(hipErrorInvalidDeviceFunction)
    KP_HIP_NAME(hipErrorNoDevice)
    KP_HIP_NAME(hipErrorInvalidDevice)
    KP_HIP_NAME(hipErrorInvalidImage)
    KP_HIP_NAME(hipErrorInvalidContext)
    KP_HIP_NAME(hipErrorContextAlreadyCurrent)
    KP_HIP_NAME(hipErrorMapFailed)
    KP_HIP_NAME(hipErrorUnmapFailed)
    KP_HIP_NAME(hipErrorArrayIsMapped)
    KP_HIP_NAME(hipErrorAlreadyMapped)
    KP_HIP_NAME(hipErrorNoBinaryForGpu)
    KP_HIP_NAME(hipErrorAlreadyAcquired)
    KP_HIP_NAME(hipErrorNotMapped)
    KP_HIP_NAME(hipErrorNotMappedAsArray)
    KP_HIP_NAME(hipErrorNotMappedAsPointer)
    KP_HIP_NAME(hipErrorECCNotCorrectable)
    KP_HIP_NAME(hipErrorUnsupportedLimit)
    KP_HIP_NAME(hipErrorContextAlreadyInUse)
    KP_HIP_NAME(hipErrorPeerAccessUnsupported)
    KP_HIP_NAME(hipErrorInvalidKernelFile)
    KP_HIP_NAME(hipErrorInvalidGraphicsContext)
    KP_HIP_NAME(hipErrorInvalidSource)
    KP_HIP_NAME(hipErrorFileNotFound)
    KP_HIP_NAME(hipErrorSharedObjectSymbolNotFound)
    KP_HIP_NAME(hipErrorSharedObjectInitFailed)
    KP_HIP_NAME(hipErrorOperatingSystem)
    KP_HIP_NAME(hipErrorInvalidHandle)
    KP_HIP_NAME(hipErrorIllegalState)
    KP_HIP_NAME(hipErrorNotFound)
    KP_HIP_NAME(hipErrorNotReady)
    KP_HIP_NAME(hipErrorIllegalAddress)
    KP_HIP_NAME(hipErrorLaunchOutOfResources)
    KP_HIP_NAME(hipErrorLaunchTimeOut)
    KP_HIP_NAME(hipErrorPeerAccessAlreadyEnabled)
    KP_HIP_NAME(hipErrorPeerAccessNotEnabled)
    KP_HIP_NAME(hipErrorSetOnActiveProcess)
    KP_HIP_NAME(hipErrorContextIsDestroyed)
    KP_HIP_NAME(hipErrorAssert)
    KP_HIP_NAME(hipErrorHostMemoryAlreadyRegistered)
    KP_HIP_NAME(hipErrorHostMemoryNotRegistered)
    KP_HIP_NAME(hipErrorLaunchFailure)
    KP_HIP_NAME(hipErrorCooperativeLaunchTooLarge)
    KP_HIP_NAME(hipErrorNotSupported)
    KP_HIP_NAME(hipErrorStreamCaptureUnsupported)
    KP_HIP_NAME(hipErrorStreamCaptureInvalidated)
    KP_HIP_NAME(hipErrorStreamCaptureMerge)
    KP_HIP_NAME(hipErrorStreamCaptureUnmatched)
    KP_HIP_NAME(hipErrorStreamCaptureUnjoined)
    KP_HIP_NAME(hipErrorStreamCaptureIsolation)
    KP_HIP_NAME(hipErrorStreamCaptureImplicit)
    KP_HIP_NAME(hipErrorCapturedEvent)
    KP_HIP_NAME(hipErrorStreamCaptureWrongThread)
    KP_HIP_NAME(hipErrorGraphExecUpdateFailure)
    KP_HIP_NAME(hipErrorUnknown)
    KP_HIP_NAME(hipErrorRuntimeMemory)
    KP_HIP_NAME(hipErrorRuntimeOther)
    }
    return NULL;
}

const char *kp_hip_error_name(const kp_hip_syms *hip, hipError_t e) {
    const char *name = hip_builtin_name(e);
    if (!name && hip && hip->hipGetErrorName) name = hip->hipGetErrorName(e);
    return name ? name : "hipErrorUnrecognized";
}

kp_status kp_hip_error_status(hipError_t e) {
    switch ((int)e) {
    case hipSuccess:
        return KP_OK;
    case hipErrorOutOfMemory:
        return KP_ERR_OUT_OF_MEMORY;
    case hipErrorInvalidValue:
    case hipErrorInvalidHandle:
    case hipErrorInvalidDevicePointer:
        return KP_ERR_INVALID_ARGUMENT;
    case hipErrorNotInitialized:
    case hipErrorDeinitialized:
    case hipErrorInsufficientDriver:
    case hipErrorNoDevice:
    case hipErrorInvalidDevice: /* what hipInit returns on a machine without an AMD GPU */
        return KP_ERR_UNAVAILABLE;
    case hipErrorNotSupported:
        return KP_ERR_UNSUPPORTED;
    case hipErrorInvalidImage:
    case hipErrorInvalidKernelFile:
    case hipErrorNoBinaryForGpu:
    case hipErrorInvalidSource:
        return KP_ERR_BUILD_FAILED;
    case hipErrorFileNotFound:
        return KP_ERR_IO;
    default:
        return KP_ERR_BACKEND;
    }
}

kp_status kp_hip_fail(const kp_hip_syms *hip, hipError_t e, const char *what_fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, what_fmt);
    vsnprintf(what, sizeof what, what_fmt, ap);
    va_end(ap);
    kp_status st = kp_hip_error_status(e);
    if (st == KP_OK) /* a caller's slip: never report success as a failure */
        st = KP_ERR_INTERNAL;
    return kp_hip_host->set_error(st, "HIP error %s (%d) in %s", kp_hip_error_name(hip, e), (int)e,
                                  what);
}
