// EV_CUDA_THROW(who, call): runs a CUDA runtime call and, when it fails, throws evident::error (internal) naming `who`
// (the component), the call, CUDA's error name and text, and the source line. For engine/cuda's host code, which
// reports failures as exceptions (kernels/ return a status instead: kernels/cuda-check.cuh).
#pragma once

#include <cuda_runtime.h>

#include "engine/base/error.h"

#define EV_CUDA_THROW(who, call)                                                                                  \
  do {                                                                                                            \
    cudaError_t ev_cuda_err_ = (call);                                                                            \
    if (ev_cuda_err_ != cudaSuccess)                                                                              \
      EV_THROW(internal, who, ": ", #call, " failed: ", cudaGetErrorName(ev_cuda_err_), " (",                     \
               cudaGetErrorString(ev_cuda_err_), ") at ", __FILE__, ":", __LINE__);                               \
  } while (0)
