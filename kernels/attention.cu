// CUDA decode attention over the paged KV cache (split-KV, online softmax in fp32) and the KV cache write.
// One block per (KV head, sequence, split): its 8 warps take the query heads of that KV head (GQA: they share every
// K/V row, which L1 serves after the first warp); each lane owns 8 of the 256 dims.
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "kernels/attention.h"
#include "kernels/cuda-check.cuh"

namespace evident::kernels {
namespace {

using nvbf = __nv_bfloat16;
constexpr int kD = 256;
constexpr int kThreads = 256;
constexpr int kMaxSplits = 64;

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ __forceinline__ void ld8(const bf16* p, float (&x)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&w[i]);
    x[2 * i] = __low2float(h);
    x[2 * i + 1] = __high2float(h);
  }
}

struct partial_view {
  float* ml;   // [n_seq, n_q_heads, n_splits, 2]  running max and sum
  float* acc;  // [n_seq, n_q_heads, n_splits, 256]
};

__global__ void __launch_bounds__(kThreads) attn_decode_split_kernel(attention_decode_args a, int n_splits,
                                                                     partial_view ws) {
  const int hk = blockIdx.x, s = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int len = a.seq_lens[s];
  const int per = (len + n_splits - 1) / n_splits;
  const int p0 = split * per, p1 = min(len, p0 + per);
  const int group = a.n_q_heads / a.n_kv_heads;
  const std::int32_t* table = a.kv.block_tables + std::size_t(s) * a.kv.max_blocks_per_seq;
  for (int hl = warp; hl < group; hl += kThreads / 32) {
    const int h = hk * group + hl;
    float q[8];
    ld8(a.q + std::int64_t(s) * a.q_stride + std::int64_t(h) * a.q_head_stride + lane * 8, q);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] *= a.scale;
    float m = -FLT_MAX, l = 0.f, acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int p = p0; p < p1; p += 4) {
      // Up to 4 positions per step: all loads issued before the reductions.
      float k[4][8], v[4][8];
      const int n = min(4, p1 - p);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j < n) {
          const int pos = p + j;
          const std::size_t row =
              ((std::size_t(table[pos / a.kv.block_size]) * a.kv.block_size + pos % a.kv.block_size) * a.n_kv_heads +
               hk) * kD + lane * 8;
          ld8(a.kv.k_cache + row, k[j]);
          ld8(a.kv.v_cache + row, v[j]);
        }
      }
      float sc[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) d += q[i] * k[j][i];
        sc[j] = warp_sum(d);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j < n) {
          const float m_new = fmaxf(m, sc[j]);
          const float corr = __expf(m - m_new), pe = __expf(sc[j] - m_new);
          l = l * corr + pe;
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[i] = acc[i] * corr + pe * v[j][i];
          m = m_new;
        }
      }
    }
    const std::size_t idx = (std::size_t(s) * a.n_q_heads + h) * n_splits + split;
    if (lane == 0) {
      ws.ml[idx * 2] = p1 > p0 ? m : -FLT_MAX;
      ws.ml[idx * 2 + 1] = l;
    }
    float4* dst = reinterpret_cast<float4*>(ws.acc + idx * kD + lane * 8);
    dst[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
    dst[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
  }
}

// Merges the splits of one (sequence, query head); thread d owns dimension d; applies the sigmoid gate.
__global__ void __launch_bounds__(kD) attn_decode_merge_kernel(attention_decode_args a, int n_splits,
                                                               partial_view ws) {
  const int h = blockIdx.x, s = blockIdx.y, d = threadIdx.x;
  const std::size_t base = (std::size_t(s) * a.n_q_heads + h) * n_splits;
  float M = -FLT_MAX;
  for (int i = 0; i < n_splits; ++i) M = fmaxf(M, ws.ml[(base + i) * 2]);
  float L = 0.f, o = 0.f;
  for (int i = 0; i < n_splits; ++i) {
    const float l = ws.ml[(base + i) * 2 + 1];
    if (l == 0.f) continue;  // an empty split
    const float w = __expf(ws.ml[(base + i) * 2] - M);
    L += l * w;
    o += ws.acc[(base + i) * kD + d] * w;
  }
  o = L > 0.f ? o / L : 0.f;
  const float g = __bfloat162float(
      reinterpret_cast<const nvbf*>(a.gate)[std::int64_t(s) * a.gate_stride + std::int64_t(h) * a.gate_head_stride + d]);
  reinterpret_cast<nvbf*>(a.out)[std::int64_t(s) * a.out_stride + std::int64_t(h) * kD + d] =
      __float2bfloat16(o / (1.f + __expf(-g)));
}

__global__ void kv_write_kernel(kv_write_args a) {
  const int t = blockIdx.x, slot = a.slot_mapping[t];
  if (slot < 0) return;
  const int segs = a.head_dim / 8;
  for (int i = threadIdx.x; i < a.n_kv_heads * segs; i += blockDim.x) {
    const int h = i / segs, sg = i % segs;
    const std::size_t dst = (std::size_t(slot) * a.n_kv_heads + h) * a.head_dim + sg * 8;
    *reinterpret_cast<uint4*>(a.kv.k_cache + dst) =
        *reinterpret_cast<const uint4*>(a.k + std::int64_t(t) * a.k_stride + h * a.head_dim + sg * 8);
    *reinterpret_cast<uint4*>(a.kv.v_cache + dst) =
        *reinterpret_cast<const uint4*>(a.v + std::int64_t(t) * a.v_stride + h * a.head_dim + sg * 8);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace

int attention_decode_splits(const attention_decode_args& a) {
  if (a.n_splits > 0) return std::min(a.n_splits, kMaxSplits);
  // About two blocks per SM of an H100 in total, but no split shorter than 256 positions.
  const int by_fill = (264 + a.n_seq * a.n_kv_heads - 1) / std::max(1, a.n_seq * a.n_kv_heads);
  const int by_len = (std::max(a.max_seq_len, 1) + 255) / 256;
  return std::max(1, std::min(std::min(by_fill, by_len), kMaxSplits));
}

std::size_t attention_decode_workspace_bytes(const attention_decode_args& a) {
  const std::size_t n = std::size_t(a.n_seq) * a.n_q_heads * attention_decode_splits(a);
  return n * 2 * sizeof(float) + 256 + n * kD * sizeof(float);
}

status attention_decode(const attention_decode_args& a, void* workspace, std::size_t workspace_bytes,
                        stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_seq >= 0 && a.n_q_heads > 0 && a.n_kv_heads > 0 && a.n_q_heads % a.n_kv_heads == 0,
                    "attention_decode: n_q_heads = ", a.n_q_heads, " must be a positive multiple of n_kv_heads = ",
                    a.n_kv_heads);
  EV_KERNEL_SUPPORTED(a.head_dim == kD, "attention_decode: head_dim = ", a.head_dim, ", only 256 is implemented");
  if (a.n_seq == 0) return status::success();
  EV_KERNEL_REQUIRE(a.q && a.gate && a.out && a.seq_lens && a.kv.k_cache && a.kv.v_cache && a.kv.block_tables,
                    "attention_decode: null q, gate, out, seq_lens, cache or block table");
  EV_KERNEL_REQUIRE(a.kv.block_size > 0 && a.max_seq_len <= a.kv.max_blocks_per_seq * a.kv.block_size,
                    "attention_decode: max_seq_len = ", a.max_seq_len, " exceeds max_blocks_per_seq * block_size");
  EV_KERNEL_REQUIRE(aligned16(a.q) && aligned16(a.kv.k_cache) && aligned16(a.kv.v_cache) && a.q_stride % 8 == 0 &&
                        a.q_head_stride % 8 == 0,
                    "attention_decode: q and the caches must be 16-byte aligned, q strides multiples of 8");
  EV_KERNEL_REQUIRE(workspace && workspace_bytes >= attention_decode_workspace_bytes(a) && aligned16(workspace),
                    "attention_decode: workspace of ", workspace_bytes, " bytes, expected at least ",
                    attention_decode_workspace_bytes(a), " (16-byte aligned)");
  const int n_splits = attention_decode_splits(a);
  const std::size_t n = std::size_t(a.n_seq) * a.n_q_heads * n_splits;
  partial_view ws;
  ws.ml = static_cast<float*>(workspace);
  ws.acc = reinterpret_cast<float*>(static_cast<char*>(workspace) + (n * 2 * sizeof(float) + 255) / 256 * 256);
  attn_decode_split_kernel<<<dim3(a.n_kv_heads, a.n_seq, n_splits), kThreads, 0, stream>>>(a, n_splits, ws);
  EV_CUDA_CHECK_LAUNCH("attn_decode_split_kernel");
  attn_decode_merge_kernel<<<dim3(a.n_q_heads, a.n_seq), kD, 0, stream>>>(a, n_splits, ws);
  EV_CUDA_CHECK_LAUNCH("attn_decode_merge_kernel");
  return status::success();
}

status kv_cache_write(const kv_write_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_tokens >= 0 && a.n_kv_heads > 0 && a.head_dim > 0 && a.head_dim % 8 == 0,
                    "kv_cache_write: head_dim = ", a.head_dim, " must be a positive multiple of 8");
  if (a.n_tokens == 0) return status::success();
  EV_KERNEL_REQUIRE(a.k && a.v && a.slot_mapping && a.kv.k_cache && a.kv.v_cache,
                    "kv_cache_write: null k, v, slot_mapping or cache");
  EV_KERNEL_REQUIRE(aligned16(a.k) && aligned16(a.v) && aligned16(a.kv.k_cache) && aligned16(a.kv.v_cache) &&
                        a.k_stride % 8 == 0 && a.v_stride % 8 == 0,
                    "kv_cache_write: 16-byte aligned pointers and strides that are multiples of 8 required");
  kv_write_kernel<<<a.n_tokens, 128, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("kv_write_kernel");
  return status::success();
}

}  // namespace evident::kernels
