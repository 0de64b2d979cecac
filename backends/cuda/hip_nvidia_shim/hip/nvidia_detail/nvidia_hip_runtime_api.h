/*
 * backends/cuda/hip_nvidia_shim/hip/nvidia_detail/nvidia_hip_runtime_api.h — stands in
 * for the header of that name in Debian's libamdhip64-dev (ROCm 5.2) when the cuda
 * plugin's kernels are compiled through HIP's NVIDIA platform
 * (-Dcudakernels_hip_dialect=true). ROCm 5.2's version declares the host runtime API
 * against CUDA 11 (cudaDeviceProp fields, texture references, graph APIs that CUDA 13
 * removed or changed) and does not compile with nvcc 13. The kernels need none of the
 * host API: only the runtime headers and the one device function HIP maps here.
 * Everything else (hip/hip_runtime.h, nvidia_hip_runtime.h, hip_fp16.h) is ROCm's own.
 * Compiled with -D__HIP_DISABLE_CPP_FUNCTIONS__ (build_fatbins.py), so hip_runtime_api.h's
 * host templates that would name the host API's flags are left out.
 */
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h> /* before the macro below: it declares a __shfl_xor of its own */

/* HIP's width-taking shuffle on a 32-lane NVIDIA warp */
#define __shfl_xor(...) __shfl_xor_sync(0xffffffffu, __VA_ARGS__)
