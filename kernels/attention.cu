// CUDA decode attention over the paged KV cache (split-KV, online softmax in fp32) and the KV cache write.
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

// One block per (KV head, sequence, split); warp w takes positions p0 + w, p0 + w + 8, ... of the split for all
// query heads of the group at once (kGroup = 8 for 16/2 heads), so each K/V row is loaded once per block. A lane owns
// 8 of the 256 dims; the 8 per-head partial dot products are reduced across the warp by a transposing butterfly
// (9 shuffles instead of 8 x 5). Each warp writes its own partial (max, sum, accumulator) as one of n_splits * 8
// sub-splits, merged by attn_decode_merge_kernel.
constexpr int kGroup = 8;
constexpr int kWarps = kThreads / 32;

__global__ void __launch_bounds__(kThreads) attn_decode_split_kernel(attention_decode_args a, int n_splits,
                                                                     partial_view ws) {
  const int hk = blockIdx.x, s = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int len = a.seq_lens[s];
  const int per = (len + n_splits - 1) / n_splits;
  const int p0 = split * per, p1 = min(len, p0 + per);
  const std::int32_t* table = a.kv.block_tables + std::size_t(s) * a.kv.max_blocks_per_seq;
  float q[kGroup][8];
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
    ld8(a.q + std::int64_t(s) * a.q_stride + std::int64_t(hk * kGroup + h) * a.q_head_stride + lane * 8, q[h]);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[h][i] *= a.scale;
  }
  float m[kGroup], l[kGroup], acc[kGroup][8];
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
    m[h] = -FLT_MAX, l[h] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[h][i] = 0.f;
  }
  for (int p = p0 + warp; p < p1; p += kWarps) {
    const std::size_t row =
        ((std::size_t(table[p / a.kv.block_size]) * a.kv.block_size + p % a.kv.block_size) * a.n_kv_heads + hk) * kD +
        lane * 8;
    float k[8], v[8];
    ld8(a.kv.k_cache + row, k);
    ld8(a.kv.v_cache + row, v);
    float d[kGroup];
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      d[h] = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) d[h] += q[h][i] * k[i];
    }
    // Butterfly: xor 16 halves the heads each lane keeps (upper lanes keep heads 4-7), xor 8 and xor 4 halve again,
    // xor 2 and xor 1 finish the sum of the one head left.
    float e4[4], e2[2], e1;
    {
      const bool up = lane & 16;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float send = up ? d[j] : d[j + 4];
        const float keep = up ? d[j + 4] : d[j];
        e4[j] = keep + __shfl_xor_sync(0xffffffffu, send, 16);
      }
    }
    {
      const bool up = lane & 8;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float send = up ? e4[j] : e4[j + 2];
        const float keep = up ? e4[j + 2] : e4[j];
        e2[j] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
      }
    }
    {
      const bool up = lane & 4;
      const float send = up ? e2[0] : e2[1];
      const float keep = up ? e2[1] : e2[0];
      e1 = keep + __shfl_xor_sync(0xffffffffu, send, 4);
    }
    e1 += __shfl_xor_sync(0xffffffffu, e1, 2);
    e1 += __shfl_xor_sync(0xffffffffu, e1, 1);
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      // Head h's sum lives in lanes with bits (h>>2, (h>>1)&1, h&1) at positions 4, 3, 2.
      const float sc = __shfl_sync(0xffffffffu, e1, ((h >> 2) << 4) | (((h >> 1) & 1) << 3) | ((h & 1) << 2));
      const float m_new = fmaxf(m[h], sc);
      const float corr = __expf(m[h] - m_new), pe = __expf(sc - m_new);
      l[h] = l[h] * corr + pe;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[h][i] = acc[h][i] * corr + pe * v[i];
      m[h] = m_new;
    }
  }
  const int sub = split * kWarps + warp, n_sub = n_splits * kWarps;
  const bool empty = p0 + warp >= p1;
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
    const std::size_t idx = (std::size_t(s) * a.n_q_heads + hk * kGroup + h) * n_sub + sub;
    if (lane == 0) {
      ws.ml[idx * 2] = empty ? -FLT_MAX : m[h];
      ws.ml[idx * 2 + 1] = empty ? 0.f : l[h];
    }
    float4* dst = reinterpret_cast<float4*>(ws.acc + idx * kD + lane * 8);
    dst[0] = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
    dst[1] = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
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
  const std::size_t n = std::size_t(a.n_seq) * a.n_q_heads * attention_decode_splits(a) * kWarps;
  return n * 2 * sizeof(float) + 256 + n * kD * sizeof(float);
}

status attention_decode(const attention_decode_args& a, void* workspace, std::size_t workspace_bytes,
                        stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_seq >= 0 && a.n_q_heads > 0 && a.n_kv_heads > 0 && a.n_q_heads % a.n_kv_heads == 0,
                    "attention_decode: n_q_heads = ", a.n_q_heads, " must be a positive multiple of n_kv_heads = ",
                    a.n_kv_heads);
  EV_KERNEL_SUPPORTED(a.head_dim == kD, "attention_decode: head_dim = ", a.head_dim, ", only 256 is implemented");
  EV_KERNEL_SUPPORTED(a.n_q_heads / a.n_kv_heads == kGroup, "attention_decode: ", a.n_q_heads / a.n_kv_heads,
                      " query heads per KV head, only 8 (Qwen3-Next's 16/2) is implemented");
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
  const std::size_t n = std::size_t(a.n_seq) * a.n_q_heads * n_splits * kWarps;
  partial_view ws;
  ws.ml = static_cast<float*>(workspace);
  ws.acc = reinterpret_cast<float*>(static_cast<char*>(workspace) + (n * 2 * sizeof(float) + 255) / 256 * 256);
  attn_decode_split_kernel<<<dim3(a.n_kv_heads, a.n_seq, n_splits), kThreads, 0, stream>>>(a, n_splits, ws);
  EV_CUDA_CHECK_LAUNCH("attn_decode_split_kernel");
  attn_decode_merge_kernel<<<dim3(a.n_q_heads, a.n_seq), kD, 0, stream>>>(a, n_splits * kWarps, ws);
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
