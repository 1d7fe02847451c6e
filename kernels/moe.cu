// CUDA MoE router: one warp per token; each lane keeps n_experts/32 logits in registers (strided: lane + 32 i), the
// softmax reductions and the k rounds of arg-max are warp shuffles.
#include <cuda_runtime.h>

#include <cfloat>

#include "kernels/cuda-check.cuh"
#include "kernels/moe.h"

namespace evident::kernels {
namespace {

constexpr int kMaxPerLane = 32;  // n_experts <= 1024

template <int PER_LANE>
__global__ void router_kernel(moe_router_args a) {
  const int t = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (t >= a.n_tokens) return;
  const float* l = a.logits + std::int64_t(t) * a.logits_stride;
  float v[PER_LANE];
  float mx = -FLT_MAX;
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) {
    const int e = lane + 32 * i;
    v[i] = e < a.n_experts ? l[e] : -FLT_MAX;
    mx = fmaxf(mx, v[i]);
  }
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) {
    const int e = lane + 32 * i;
    v[i] = e < a.n_experts ? expf(v[i] - mx) : -1.f;  // probabilities are >= 0; -1 marks padding and taken experts
    sum += e < a.n_experts ? v[i] : 0.f;
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  float chosen_p = 0.f, top = 0.f;
  int chosen_e = 0;
  for (int j = 0; j < a.top_k; ++j) {
    float bv = -2.f;
    int bi = 0x7fffffff;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i)
      if (v[i] > bv) bv = v[i], bi = lane + 32 * i;  // ascending e within the lane: the first maximum wins
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    if ((bi & 31) == lane) {
#pragma unroll
      for (int i = 0; i < PER_LANE; ++i)
        if (lane + 32 * i == bi) v[i] = -1.f;
    }
    const float p = bv / sum;
    top += p;
    if (lane == j) chosen_p = p, chosen_e = bi;
  }
  if (lane < a.top_k) {
    a.ids[std::int64_t(t) * a.top_k + lane] = chosen_e;
    a.weights[std::int64_t(t) * a.top_k + lane] = a.renormalize ? chosen_p / top : chosen_p;
  }
}

}  // namespace

status moe_router(const moe_router_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_tokens >= 0 && a.n_experts > 0 && a.top_k > 0 && a.top_k <= a.n_experts,
                    "moe_router: n_experts = ", a.n_experts, ", top_k = ", a.top_k, ": expected 0 < top_k <= n_experts");
  EV_KERNEL_SUPPORTED(a.n_experts <= 32 * kMaxPerLane && a.top_k <= 32, "moe_router: n_experts = ", a.n_experts,
                      ", top_k = ", a.top_k, ": supported n_experts <= 1024, top_k <= 32");
  if (a.n_tokens == 0) return status::success();
  EV_KERNEL_REQUIRE(a.logits && a.ids && a.weights && a.logits_stride >= a.n_experts,
                    "moe_router: null logits/ids/weights or logits_stride < n_experts");
  const int blocks = (a.n_tokens + 7) / 8;
  if (a.n_experts <= 512) router_kernel<16><<<blocks, 256, 0, stream>>>(a);
  else router_kernel<kMaxPerLane><<<blocks, 256, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("router_kernel");
  return status::success();
}

}  // namespace evident::kernels
