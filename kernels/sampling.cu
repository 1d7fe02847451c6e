#include <cuda_runtime.h>

#include <cfloat>

#include "kernels/cuda-check.cuh"
#include "kernels/sampling.h"

namespace evident::kernels {
namespace {

constexpr int kThreads = 1024;

// (value, index) pair order: larger value wins, then the lower index; NaN counts as -inf.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

__global__ void argmax_kernel(argmax_args a) {
  __shared__ float sv[kThreads / 32];
  __shared__ int si[kThreads / 32];
  const float* l = a.logits + std::int64_t(blockIdx.x) * a.stride;
  float bv = -FLT_MAX;
  int bi = 0x7fffffff;
  for (int j = threadIdx.x; j < a.vocab; j += kThreads) {
    float v = l[j];
    if (v != v) v = -FLT_MAX;
    if (better(v, j, bv, bi)) bv = v, bi = j;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) sv[warp] = bv, si[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    bv = lane < kThreads / 32 ? sv[lane] : -FLT_MAX;
    bi = lane < kThreads / 32 ? si[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if (lane == 0) a.ids[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
  }
}

}  // namespace

status sample_greedy(const argmax_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_rows >= 0 && a.vocab > 0 && a.stride >= a.vocab, "sample_greedy: n_rows = ", a.n_rows,
                    ", vocab = ", a.vocab, ", stride = ", a.stride, ": expected stride >= vocab > 0");
  if (a.n_rows == 0) return status::success();
  EV_KERNEL_REQUIRE(a.logits && a.ids, "sample_greedy: null logits or ids");
  argmax_kernel<<<a.n_rows, kThreads, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("argmax_kernel");
  return status::success();
}

}  // namespace evident::kernels
