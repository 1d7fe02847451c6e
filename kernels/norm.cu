// CUDA RMS norms: one warp per row, 4 bf16 (8 bytes) per lane per step; the row is read twice (the second time from
// L1), which keeps any dim without a register array sized for the largest. The gated norm at dim 128 has its own
// kernel (a half-warp per row, 16-byte accesses).
#include <cuda_bf16.h>

#include "kernels/cuda-check.cuh"
#include "kernels/device-util.cuh"
#include "kernels/norm.h"

namespace evident::kernels {
namespace {

using nvbf = __nv_bfloat16;
constexpr int kWarps = 8;

using dev::load4;
using dev::warp_sum;

__device__ __forceinline__ void store4(bf16* p, const float (&x)[4]) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(x[0], x[1]), hi = __floats2bfloat162_rn(x[2], x[3]);
  uint2 raw;
  raw.x = *reinterpret_cast<uint32_t*>(&lo);
  raw.y = *reinterpret_cast<uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(p) = raw;
}

__global__ void rmsnorm_residual_kernel(rmsnorm_args a) {
  const int row = blockIdx.x * kWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= a.n_rows) return;
  const bf16* x = a.x + std::int64_t(row) * a.x_stride;
  bf16* res = a.residual ? a.residual + std::int64_t(row) * a.residual_stride : nullptr;
  float ss = 0.f;
  for (int i = lane * 4; i < a.dim; i += 128) {
    float h[4];
    load4(x + i, h);
    if (res) {
      float r[4];
      load4(res + i, r);
#pragma unroll
      for (int j = 0; j < 4; ++j) h[j] = __bfloat162float(__float2bfloat16(h[j] + r[j]));
      store4(res + i, h);  // the same lane re-reads it below
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) ss += h[j] * h[j];
  }
  const float inv = rsqrtf(warp_sum(ss) / a.dim + a.eps);
  const bf16* src = res ? res : x;
  bf16* out = a.out + std::int64_t(row) * a.out_stride;
  for (int i = lane * 4; i < a.dim; i += 128) {
    float h[4], w[4];
    load4(src + i, h);
    load4(a.w + i, w);
#pragma unroll
    for (int j = 0; j < 4; ++j) h[j] = h[j] * inv * (1.f + w[j]);
    store4(out + i, h);
  }
}

__global__ void rmsnorm_gated_kernel(rmsnorm_args a) {
  const int row = blockIdx.x * kWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= a.n_rows) return;
  const bf16* x = a.x + std::int64_t(row) * a.x_stride;
  const bf16* z = a.z + (a.z_group > 0 ? std::int64_t(row / a.z_group) * a.z_group_stride +
                                            std::int64_t(row % a.z_group) * a.z_stride
                                      : std::int64_t(row) * a.z_stride);
  float ss = 0.f;
  for (int i = lane * 4; i < a.dim; i += 128) {
    float h[4];
    load4(x + i, h);
#pragma unroll
    for (int j = 0; j < 4; ++j) ss += h[j] * h[j];
  }
  const float inv = rsqrtf(warp_sum(ss) / a.dim + a.eps);
  bf16* out = a.out + std::int64_t(row) * a.out_stride;
  for (int i = lane * 4; i < a.dim; i += 128) {
    float h[4], w[4], g[4];
    load4(x + i, h);
    load4(a.w + i, w);
    load4(z + i, g);
#pragma unroll
    for (int j = 0; j < 4; ++j) h[j] = w[j] * h[j] * inv * (g[j] / (1.f + __expf(-g[j])));
    store4(out + i, h);
  }
}

// Gated norm at dim 128 (Qwen3-Next's value head): a half-warp per row, 8 bf16 (16 bytes) per lane, the row held in
// registers (read once). Needs x, z, w, out 16-byte aligned and all strides multiples of 8 elements.
__device__ __forceinline__ void unpack8(const uint4 raw, float (&x)[8]) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&w[i]);
    x[2 * i] = __low2float(h);
    x[2 * i + 1] = __high2float(h);
  }
}

__global__ void __launch_bounds__(256) rmsnorm_gated128_kernel(rmsnorm_args a) {
  const int row_raw = int((blockIdx.x * blockDim.x + threadIdx.x) >> 4), sub = threadIdx.x & 15;
  const bool ok = row_raw < a.n_rows;  // no early exit: the shuffles below take the whole warp
  const int row = ok ? row_raw : a.n_rows - 1;
  const bf16* xr = a.x + std::int64_t(row) * a.x_stride + sub * 8;
  const bf16* zr = a.z + (a.z_group > 0 ? std::int64_t(row / a.z_group) * a.z_group_stride +
                                              std::int64_t(row % a.z_group) * a.z_stride
                                        : std::int64_t(row) * a.z_stride) +
                   sub * 8;
  float h[8], g[8], w[8];
  unpack8(*reinterpret_cast<const uint4*>(xr), h);
  unpack8(*reinterpret_cast<const uint4*>(zr), g);
  unpack8(*reinterpret_cast<const uint4*>(a.w + sub * 8), w);
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) ss += h[j] * h[j];
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  const float inv = rsqrtf(ss / 128.f + a.eps);
  uint32_t packed[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float v[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int j = 2 * i + e;
      v[e] = w[j] * h[j] * inv * (g[j] / (1.f + __expf(-g[j])));
    }
    __nv_bfloat162 b = __floats2bfloat162_rn(v[0], v[1]);
    packed[i] = *reinterpret_cast<uint32_t*>(&b);
  }
  if (ok)
    *reinterpret_cast<uint4*>(a.out + std::int64_t(row) * a.out_stride + sub * 8) =
        make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

status check(const rmsnorm_args& a, bool gated, const char* what) {
  EV_KERNEL_REQUIRE(a.n_rows >= 0 && a.dim > 0 && a.dim % 4 == 0, what, ": n_rows = ", a.n_rows, ", dim = ", a.dim,
                    ": expected n_rows >= 0 and dim a positive multiple of 4");
  if (a.n_rows == 0) return status::success();
  EV_KERNEL_REQUIRE(a.x && a.w && a.out && (!gated || a.z), what, ": null input, weight, gate or output");
  auto ok8 = [](const void* p, std::int64_t stride) {
    return reinterpret_cast<std::uintptr_t>(p) % 8 == 0 && stride % 4 == 0;
  };
  EV_KERNEL_REQUIRE(ok8(a.x, a.x_stride) && ok8(a.out, a.out_stride) && ok8(a.w, 0) &&
                        (gated ? ok8(a.z, a.z_stride) && a.z_group >= 0 && (a.z_group == 0 || a.z_group_stride % 4 == 0)
                               : (!a.residual || ok8(a.residual, a.residual_stride))),
                    what, ": pointers must be 8-byte aligned and strides multiples of 4 elements");
  EV_KERNEL_REQUIRE(a.x_stride >= a.dim && a.out_stride >= a.dim, what, ": strides must be >= dim");
  return status::success();
}

}  // namespace

status rmsnorm_residual(const rmsnorm_args& a, stream_t stream) {
  if (auto st = check(a, false, "rmsnorm_residual"); !st.ok()) return st;
  if (a.n_rows == 0) return status::success();
  rmsnorm_residual_kernel<<<(a.n_rows + kWarps - 1) / kWarps, kWarps * 32, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("rmsnorm_residual_kernel");
  return status::success();
}

status rmsnorm_gated(const rmsnorm_args& a, stream_t stream) {
  if (auto st = check(a, true, "rmsnorm_gated"); !st.ok()) return st;
  if (a.n_rows == 0) return status::success();
  auto a16 = [](const void* p, std::int64_t stride) {
    return reinterpret_cast<std::uintptr_t>(p) % 16 == 0 && stride % 8 == 0;
  };
  if (a.dim == 128 && a16(a.x, a.x_stride) && a16(a.z, a.z_stride) && a16(a.out, a.out_stride) && a16(a.w, 0) &&
      (a.z_group == 0 || a.z_group_stride % 8 == 0)) {
    rmsnorm_gated128_kernel<<<(a.n_rows + 15) / 16, 256, 0, stream>>>(a);
    EV_CUDA_CHECK_LAUNCH("rmsnorm_gated128_kernel");
    return status::success();
  }
  rmsnorm_gated_kernel<<<(a.n_rows + kWarps - 1) / kWarps, kWarps * 32, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("rmsnorm_gated_kernel");
  return status::success();
}

}  // namespace evident::kernels
