#include "kernels/arch.h"

#include <cuda_runtime.h>

#include "kernels/wgmma-sm90.cuh"

namespace evident::kernels {
namespace {

// The sm_90a probe: its static shared array exists only in the sm_90a device pass, so the function attributes of the
// code the runtime picks for this device say whether the wgmma kernels were compiled for it (the library's .cu files
// share one architecture list).
__global__ void sm90a_probe_kernel(int* out) {
#if EV_SM90A
  __shared__ int s[256];
  s[threadIdx.x] = threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = s[255 - threadIdx.x];
#else
  out[threadIdx.x] = 0;
#endif
}

}  // namespace

bool wgmma_available() {
  static const bool ok = [] {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
      return false;
    if (major != 9 || minor != 0) return false;
    cudaFuncAttributes fa{};
    if (cudaFuncGetAttributes(&fa, sm90a_probe_kernel) != cudaSuccess) return false;
    return fa.sharedSizeBytes >= 1024;
  }();
  return ok;
}

}  // namespace evident::kernels
