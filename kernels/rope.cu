// CUDA partial RoPE: one thread per rotated pair. cosf/sinf are the accurate versions (angles reach ~1e5 rad at long
// contexts, where the fast intrinsics lose all precision).
#include <cuda_bf16.h>

#include "kernels/cuda-check.cuh"
#include "kernels/rope.h"

namespace evident::kernels {
namespace {

using nvbf = __nv_bfloat16;

__global__ void rope_kernel(rope_args a) {
  const int half = a.rotary_dim / 2;
  const int t = blockIdx.x;
  for (int e = threadIdx.x; e < a.n_heads * half; e += blockDim.x) {
    const int h = e / half, i = e % half;
    const float inv_freq = 1.f / powf(a.theta, float(2 * i) / float(a.rotary_dim));
    const float ang = float(a.positions[t]) * inv_freq;
    float s, c;
    sincosf(ang, &s, &c);
    nvbf* x = reinterpret_cast<nvbf*>(a.x + std::int64_t(t) * a.token_stride + std::int64_t(h) * a.head_stride);
    const float x1 = __bfloat162float(x[i]), x2 = __bfloat162float(x[i + half]);
    x[i] = __float2bfloat16(x1 * c - x2 * s);
    x[i + half] = __float2bfloat16(x2 * c + x1 * s);
  }
}

}  // namespace

status rope_apply(const rope_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_tokens >= 0 && a.n_heads > 0 && a.rotary_dim > 0 && a.rotary_dim % 2 == 0 &&
                        a.rotary_dim <= a.head_dim,
                    "rope_apply: n_tokens = ", a.n_tokens, ", n_heads = ", a.n_heads, ", rotary_dim = ", a.rotary_dim,
                    ", head_dim = ", a.head_dim, ": expected an even rotary_dim <= head_dim");
  if (a.n_tokens == 0) return status::success();
  EV_KERNEL_REQUIRE(a.x && a.positions, "rope_apply: x and positions must be non-null");
  rope_kernel<<<a.n_tokens, 128, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("rope_kernel");
  return status::success();
}

}  // namespace evident::kernels
