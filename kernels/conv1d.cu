// CUDA causal conv1d. Generic kernel: one thread per (token, channel); the K-1 earlier inputs of the same channel are
// re-read (they are in L1/L2: neighbouring threads of the block share them), so x is read from DRAM about once. The
// vectorized kernel (8 channels x 16 tokens a thread) is the prompt path of the model.
#include <cuda_bf16.h>

#include "kernels/conv1d.h"
#include "kernels/cuda-check.cuh"

namespace evident::kernels {
namespace {

using nvbf = __nv_bfloat16;
constexpr int kMaxK = 8;

__device__ __forceinline__ float silu(float x) { return x / (1.f + __expf(-x)); }

// Sequence of token t: the largest s with cu[s] <= t.
__device__ __forceinline__ int find_seq(const int32_t* cu, int n_seq, int t) {
  int lo = 0, hi = n_seq - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__global__ void conv1d_fwd_kernel(conv1d_args a) {
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  const int t = blockIdx.x;  // x: up to 2^31 - 1 tokens
  if (c >= a.n_channels) return;
  const int s = find_seq(a.cu_seqlens, a.n_seq, t);
  const int pos = t - a.cu_seqlens[s];
  const int K = a.kernel;
  const int slot = a.state_slots ? a.state_slots[s] : s;
  const nvbf* x = reinterpret_cast<const nvbf*>(a.x);
  const nvbf* w = reinterpret_cast<const nvbf*>(a.w) + std::size_t(c) * K;
  const nvbf* st = reinterpret_cast<const nvbf*>(a.state);
  float acc = 0.f;
  for (int j = 0; j < K; ++j) {
    const int p = pos - (K - 1) + j;  // position of the input, may be negative (history)
    float xv = 0.f;
    if (p >= 0) xv = __bfloat162float(x[std::int64_t(t - pos + p) * a.x_stride + c]);
    else if (st && a.read_state) xv = __bfloat162float(st[(std::size_t(slot) * (K - 1) + (K - 1 + p)) * a.n_channels + c]);
    acc += __bfloat162float(w[j]) * xv;
  }
  reinterpret_cast<nvbf*>(a.out)[std::int64_t(t) * a.out_stride + c] = __float2bfloat16(silu(acc));
}

// Fast path: one thread per (8 consecutive channels, kVecTokens consecutive tokens), 16-byte loads and stores
// (n_channels, strides multiples of 8; pointers 16-byte aligned). A tile whose K-1 earlier rows lie in the same
// sequence (all but a sequence's first tile and tiles across a boundary: the block decides, uniformly) issues all its
// kVecTokens + K - 1 row loads at once and slides the window in registers, so x is read once (plus the K-1 halo rows,
// L2 hits) with every load in flight together; the other tiles take the per-token loop below.
__device__ __forceinline__ void unpack8(const uint4 raw, float (&x)[8]) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&w[i]);
    x[2 * i] = __low2float(h);
    x[2 * i + 1] = __high2float(h);
  }
}
__device__ __forceinline__ void ld8(const nvbf* p, float (&x)[8]) { unpack8(*reinterpret_cast<const uint4*>(p), x); }

__device__ __forceinline__ uint4 silu_pack8(const float (&acc)[8]) {
  uint32_t packed[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __nv_bfloat162 h = __floats2bfloat162_rn(silu(acc[2 * i]), silu(acc[2 * i + 1]));
    packed[i] = *reinterpret_cast<uint32_t*>(&h);
  }
  return make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

constexpr int kVecTokens = 16;  // tokens per thread: fewer, fuller blocks; weights loaded once

// KT: the kernel size when known at compile time (the window path), 0: any K (per-token loop only).
// 1-D grid, channel groups fastest: the blocks running together cover whole rows (DRAM page locality).
template <int KT>
__global__ void __launch_bounds__(128) conv1d_fwd_vec8_kernel(conv1d_args a, int n_groups) {
  const int group = int(blockIdx.x % unsigned(n_groups)), tile = int(blockIdx.x / unsigned(n_groups));
  const int c8 = (group * blockDim.x + threadIdx.x) * 8;
  if (c8 >= a.n_channels) return;
  const int K = KT > 0 ? KT : a.kernel;
  const nvbf* x = reinterpret_cast<const nvbf*>(a.x);
  const nvbf* st = reinterpret_cast<const nvbf*>(a.state);
  float w[kMaxK][8];
#pragma unroll
  for (int j = 0; j < kMaxK; ++j)
#pragma unroll
    for (int i = 0; i < 8; ++i)
      w[j][i] = j < K ? __bfloat162float(reinterpret_cast<const nvbf*>(a.w)[std::size_t(c8 + i) * K + j]) : 0.f;
  const int t_begin = tile * kVecTokens, t_end = min(a.n_tokens, t_begin + kVecTokens);
  int s = find_seq(a.cu_seqlens, a.n_seq, t_begin);
  if constexpr (KT > 0) {
    if (t_begin - (KT - 1) >= a.cu_seqlens[s] && t_end <= a.cu_seqlens[s + 1]) {
      constexpr int kRows = kVecTokens + KT - 1;
      const int n_rows = t_end - t_begin + KT - 1;
      const nvbf* src = x + std::int64_t(t_begin - (KT - 1)) * a.x_stride + c8;
      uint4 raw[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        raw[r] = r < n_rows ? *reinterpret_cast<const uint4*>(src + std::int64_t(r) * a.x_stride)
                            : make_uint4(0, 0, 0, 0);
      nvbf* dst = reinterpret_cast<nvbf*>(a.out) + std::int64_t(t_begin) * a.out_stride + c8;
#pragma unroll
      for (int t = 0; t < kVecTokens; ++t) {
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll
        for (int j = 0; j < KT; ++j) {
          float xv[8];
          unpack8(raw[t + j], xv);
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[i] += w[j][i] * xv[i];
        }
        if (t < t_end - t_begin) *reinterpret_cast<uint4*>(dst + std::int64_t(t) * a.out_stride) = silu_pack8(acc);
      }
      return;
    }
  }
  for (int t = t_begin; t < t_end; ++t) {
    while (a.cu_seqlens[s + 1] <= t) ++s;
    const int pos = t - a.cu_seqlens[s];
    const int slot = a.state_slots ? a.state_slots[s] : s;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll
    for (int j = 0; j < kMaxK; ++j) {
      if (j >= K) break;
      const int p = pos - (K - 1) + j;
      float xv[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      if (p >= 0) ld8(x + std::int64_t(t - pos + p) * a.x_stride + c8, xv);
      else if (st && a.read_state) ld8(st + (std::size_t(slot) * (K - 1) + (K - 1 + p)) * a.n_channels + c8, xv);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] += w[j][i] * xv[i];
    }
    *reinterpret_cast<uint4*>(reinterpret_cast<nvbf*>(a.out) + std::int64_t(t) * a.out_stride + c8) = silu_pack8(acc);
  }
}

// New state = last K-1 of (old state | inputs). One thread per (sequence, channel): reads everything it needs before
// writing, so in-place is safe.
__global__ void conv1d_state_kernel(conv1d_args a) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
  if (c >= a.n_channels) return;
  const int K = a.kernel, len = a.cu_seqlens[s + 1] - a.cu_seqlens[s];
  const int slot = a.state_slots ? a.state_slots[s] : s;
  const nvbf* x = reinterpret_cast<const nvbf*>(a.x);
  nvbf* st = reinterpret_cast<nvbf*>(a.state) + std::size_t(slot) * (K - 1) * a.n_channels + c;
  nvbf h[kMaxK];
  for (int p = 0; p < K - 1; ++p) {
    const int src = len - (K - 1) + p;  // index into the inputs; negative: from the old state
    if (src >= 0) h[p] = x[std::int64_t(a.cu_seqlens[s] + src) * a.x_stride + c];
    else h[p] = a.read_state ? st[std::size_t(K - 1 + src) * a.n_channels] : __float2bfloat16(0.f);
  }
  for (int p = 0; p < K - 1; ++p) st[std::size_t(p) * a.n_channels] = h[p];
}

__global__ void conv1d_update_kernel(conv1d_args a) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
  if (c >= a.n_channels) return;
  const int K = a.kernel;
  const int slot = a.state_slots ? a.state_slots[s] : s;
  nvbf* st = reinterpret_cast<nvbf*>(a.state) + std::size_t(slot) * (K - 1) * a.n_channels + c;
  const nvbf* w = reinterpret_cast<const nvbf*>(a.w) + std::size_t(c) * K;
  nvbf h[kMaxK];
  for (int p = 0; p < K - 1; ++p) h[p] = st[std::size_t(p) * a.n_channels];
  h[K - 1] = reinterpret_cast<const nvbf*>(a.x)[std::int64_t(s) * a.x_stride + c];
  float acc = 0.f;
  for (int j = 0; j < K; ++j) acc += __bfloat162float(w[j]) * __bfloat162float(h[j]);
  reinterpret_cast<nvbf*>(a.out)[std::int64_t(s) * a.out_stride + c] = __float2bfloat16(silu(acc));
  for (int p = 0; p < K - 1; ++p) st[std::size_t(p) * a.n_channels] = h[p + 1];
}

status check(const conv1d_args& a, const char* what) {
  EV_KERNEL_REQUIRE(a.n_tokens >= 0 && a.n_seq >= 0 && a.n_channels > 0, what, ": n_tokens = ", a.n_tokens,
                    ", n_seq = ", a.n_seq, ", n_channels = ", a.n_channels, ": expected >= 0, >= 0, > 0");
  EV_KERNEL_SUPPORTED(a.kernel >= 2 && a.kernel <= kMaxK, what, ": kernel size ", a.kernel, ", supported 2..", kMaxK);
  EV_KERNEL_REQUIRE(a.x_stride >= a.n_channels && a.out_stride >= a.n_channels, what,
                    ": x_stride and out_stride must be >= n_channels");
  EV_KERNEL_REQUIRE(a.n_tokens == 0 || (a.x && a.w && a.out), what, ": x, w and out must be non-null");
  return status::success();
}

constexpr int kThreads = 256;

}  // namespace

status conv1d_forward(const conv1d_args& a, stream_t stream) {
  if (auto st = check(a, "conv1d_forward"); !st.ok()) return st;
  if (a.n_seq == 0) return status::success();
  EV_KERNEL_REQUIRE(a.cu_seqlens, "conv1d_forward: cu_seqlens is null");
  EV_KERNEL_REQUIRE(!a.read_state || a.state, "conv1d_forward: read_state without a state buffer");
  const int bx = (a.n_channels + kThreads - 1) / kThreads;
  auto a16 = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  const bool vec8 = a.n_channels % 8 == 0 && a.x_stride % 8 == 0 && a.out_stride % 8 == 0 && a16(a.x) &&
                    a16(a.out) && (!a.state || a16(a.state));
  if (a.n_tokens > 0 && vec8) {
    const int threads = 128, by = (a.n_channels / 8 + threads - 1) / threads;
    const unsigned grid = unsigned((a.n_tokens + kVecTokens - 1) / kVecTokens) * unsigned(by);
    if (a.kernel == 4) conv1d_fwd_vec8_kernel<4><<<grid, threads, 0, stream>>>(a, by);
    else conv1d_fwd_vec8_kernel<0><<<grid, threads, 0, stream>>>(a, by);
    EV_CUDA_CHECK_LAUNCH("conv1d_fwd_vec8_kernel");
  } else if (a.n_tokens > 0) {
    conv1d_fwd_kernel<<<dim3(a.n_tokens, bx), kThreads, 0, stream>>>(a);
    EV_CUDA_CHECK_LAUNCH("conv1d_fwd_kernel");
  }
  if (a.state) {
    conv1d_state_kernel<<<dim3(bx, a.n_seq), kThreads, 0, stream>>>(a);
    EV_CUDA_CHECK_LAUNCH("conv1d_state_kernel");
  }
  return status::success();
}

status conv1d_update(const conv1d_args& a, stream_t stream) {
  if (auto st = check(a, "conv1d_update"); !st.ok()) return st;
  EV_KERNEL_REQUIRE(a.n_tokens == a.n_seq, "conv1d_update: n_tokens = ", a.n_tokens, " != n_seq = ", a.n_seq,
                    " (one token per sequence)");
  if (a.n_seq == 0) return status::success();
  EV_KERNEL_REQUIRE(a.state, "conv1d_update: state is null");
  conv1d_update_kernel<<<dim3((a.n_channels + kThreads - 1) / kThreads, a.n_seq), kThreads, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("conv1d_update_kernel");
  return status::success();
}

}  // namespace evident::kernels
