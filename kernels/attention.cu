// CUDA attention over the paged KV cache: decode (split-KV, online softmax in fp32), prefill (flash-attention-2 style,
// mma.sync tensor cores) and the KV cache write.
#include <cuda_bf16.h>

#include <algorithm>
#include <type_traits>
#include <cfloat>
#include <cmath>
#include <cstdlib>

#include "kernels/attention.h"
#include "kernels/arch.h"
#include "kernels/cuda-check.cuh"
#include "kernels/device-util.cuh"
#include "kernels/wgmma-sm90.cuh"

namespace evident::kernels {
namespace {

using nvbf = __nv_bfloat16;
constexpr int kD = 256;
constexpr int kThreads = 256;
constexpr int kMaxSplits = 64;

// Decode splits hold at least this many positions (8 per warp): a short sequence under a large split count (graphs pad
// max_seq_len) then uses few splits; splits past the sequence exit at once and the merge reads only the used ones.
constexpr int kMinSplitLen = 64;
__device__ __forceinline__ int decode_split_len(int len, int n_splits) {
  return max(kMinSplitLen, (len + n_splits - 1) / n_splits);
}

using dev::cvt8;
using dev::ld8;

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

// One step of the transposing butterfly: lanes with bit MASK set keep the upper half of in, the others the lower
// half, and each adds the half its partner (lane ^ MASK) gives away: out[j] = kept[j] + partner's kept[j].
template <int N, int MASK>
__device__ __forceinline__ void butterfly_halve(const float (&in)[2 * N], float (&out)[N], int lane) {
  const bool up = lane & MASK;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const float send = up ? in[j] : in[j + N];
    const float keep = up ? in[j + N] : in[j];
    out[j] = keep + __shfl_xor_sync(0xffffffffu, send, MASK);
  }
}

__global__ void __launch_bounds__(kThreads) attn_decode_split_kernel(attention_decode_args a, int n_splits,
                                                                     partial_view ws) {
  const int hk = blockIdx.x, s = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int len = a.seq_lens[s];
  const int per = decode_split_len(len, n_splits);
  const int p0 = split * per, p1 = min(len, p0 + per);
  if (p0 >= len) return;  // past the sequence: the merge does not read this split
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
  // The next position's K/V row is loaded before this one is used (one row in flight per warp while it computes).
  auto row_of = [&](int p) {
    return ((std::size_t(table[p / a.kv.block_size]) * a.kv.block_size + p % a.kv.block_size) * a.n_kv_heads + hk) *
               kD +
           lane * 8;
  };
  uint4 k_next = make_uint4(0, 0, 0, 0), v_next = k_next;
  if (p0 + warp < p1) {
    const std::size_t row = row_of(p0 + warp);
    k_next = *reinterpret_cast<const uint4*>(a.kv.k_cache + row);
    v_next = *reinterpret_cast<const uint4*>(a.kv.v_cache + row);
  }
  for (int p = p0 + warp; p < p1; p += kWarps) {
    float k[8], v[8];
    cvt8(k_next, k);
    cvt8(v_next, v);
    if (p + kWarps < p1) {
      const std::size_t row = row_of(p + kWarps);
      k_next = *reinterpret_cast<const uint4*>(a.kv.k_cache + row);
      v_next = *reinterpret_cast<const uint4*>(a.kv.v_cache + row);
    }
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
    butterfly_halve<4, 16>(d, e4, lane);
    butterfly_halve<2, 8>(e4, e2, lane);
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

// Merges the used splits of one (sequence, query head) (n_splits * kWarps sub-splits per head in the workspace;
// only the first ceil(len / split_len) * kWarps were written); applies the sigmoid gate. Warp w folds sub-splits
// w, w + 8, ... for all 256 dims (lane: 8 dims), then the 8 warps' sums are added in shared memory.
constexpr int kMergeWarps = kD / 32;
__global__ void __launch_bounds__(kD) attn_decode_merge_kernel(attention_decode_args a, int n_splits,
                                                               partial_view ws) {
  __shared__ float red[kMergeWarps];
  __shared__ float sl[kMergeWarps];
  __shared__ float sacc[kMergeWarps][kD];
  const int h = blockIdx.x, s = blockIdx.y, d = threadIdx.x, warp = d >> 5, lane = d & 31;
  const int len = a.seq_lens[s];
  const int per = decode_split_len(len, n_splits);
  const int used = min(n_splits, (len + per - 1) / per) * kWarps;
  const std::size_t base = (std::size_t(s) * a.n_q_heads + h) * std::size_t(n_splits) * kWarps;
  float M = -FLT_MAX;
  for (int i = d; i < used; i += kD) M = fmaxf(M, ws.ml[(base + i) * 2]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
  if (lane == 0) red[warp] = M;
  __syncthreads();
  M = red[0];
#pragma unroll
  for (int w = 1; w < kMergeWarps; ++w) M = fmaxf(M, red[w]);
  float L = 0.f, o[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  for (int i = warp; i < used; i += kMergeWarps) {
    const float l = ws.ml[(base + i) * 2 + 1];
    if (l == 0.f) continue;  // an empty sub-split (warp-uniform)
    const float w = __expf(ws.ml[(base + i) * 2] - M);
    L += l * w;
    const float4* src = reinterpret_cast<const float4*>(ws.acc + (base + i) * kD + lane * 8);
    const float4 a0 = src[0], a1 = src[1];
    o[0] += a0.x * w, o[1] += a0.y * w, o[2] += a0.z * w, o[3] += a0.w * w;
    o[4] += a1.x * w, o[5] += a1.y * w, o[6] += a1.z * w, o[7] += a1.w * w;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) sacc[warp][lane * 8 + j] = o[j];
  if (lane == 0) sl[warp] = L;
  __syncthreads();
  float Ls = 0.f, od = 0.f;
#pragma unroll
  for (int w = 0; w < kMergeWarps; ++w) Ls += sl[w], od += sacc[w][d];
  od = Ls > 0.f ? od / Ls : 0.f;
  const float g = __bfloat162float(
      reinterpret_cast<const nvbf*>(a.gate)[std::int64_t(s) * a.gate_stride + std::int64_t(h) * a.gate_head_stride + d]);
  reinterpret_cast<nvbf*>(a.out)[std::int64_t(s) * a.out_stride + std::int64_t(h) * kD + d] =
      __float2bfloat16(od / (1.f + __expf(-g)));
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

// ---------------------------------------------------------------------------------------------------------------------
// Prefill: flash-attention-2 over the paged cache.
// A block takes 128 rows = (query token, query head) pairs of one KV head (128 / group tokens x group heads, so each
// K/V tile loaded serves all the heads of the group), 8 warps of 16 rows. It walks the K/V tiles of 64 positions up to
// its last token's position, double-buffered through cp.async (positions gathered through the block table). Per
// tile: S = Q K^T (mma.sync m16n8k16, Q and K fragments by ldmatrix from XOR-swizzled shared tiles), the causal mask,
// the online softmax in fp32 (exp2 domain; running max and sum per row, the accumulator rescaled in registers), then
// O += P V with P re-packed from the S accumulators as bf16 A fragments and V fragments by ldmatrix.trans.
namespace evident::kernels {
namespace {

constexpr int kPfKeys = 64;
constexpr int kPfRowBytes = kD * 2;  // 512 bytes: 32 chunks of 16 bytes
constexpr int kPfKvBytes = kPfKeys * kPfRowBytes;
// ROWS (token, head) rows per block, 16 per warp; shared memory: Q, 2 x K, 2 x V (192 KiB for 128 rows).
template <int ROWS>
constexpr int pf_smem() { return ROWS * kPfRowBytes + 4 * kPfKvBytes; }

// 32 chunks per row; the low 3 bits of the chunk index are XORed with the row so that ldmatrix over 8 rows at one
// chunk touches 8 different 16-byte bank groups.
__device__ __forceinline__ int swz256(int row, int chunk) { return row * kPfRowBytes + ((chunk ^ (row & 7)) << 4); }

// Element e (< 4) of the mma accumulator of output dims 8 d .. 8 d + 7: o[d][e] in attention_prefill_kernel, o[4 d + e]
// in the wgmma kernels (the m64n256 accumulator, same order).
__device__ __forceinline__ float o_at(const float (&o)[kD / 8][4], int d, int e) { return o[d][e]; }
#if EV_SM90A
__device__ __forceinline__ float o_at(const float (&o)[128], int d, int e) { return o[4 * d + e]; }
#endif

// The epilogue of the prefill kernels: for this thread's two rows (row0 and row0 + 8 of the block's ROWS-row tile),
// the quad-reduced row sum l, then out = o / l * sigmoid(gate) in bf16 (rows past the sequence are skipped).
template <int ROWS, typename O>
__device__ __forceinline__ void store_gated_rows(const attention_prefill_args& a, const O& o, const float (&l_run)[2],
                                                 int row0, int lane, int tile, int group, int n_new, int hk, int q0) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = l_run[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int rr = row0 + 8 * h, pi = tile * ROWS + rr, tok = pi / group;
    if (tok >= n_new) continue;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int head = hk * group + pi % group;
    const bf16* g = a.gate + std::int64_t(q0 + tok) * a.gate_stride + std::int64_t(head) * a.gate_head_stride;
    bf16* out = a.out + std::int64_t(q0 + tok) * a.out_stride + std::int64_t(head) * kD;
#pragma unroll
    for (int d = 0; d < kD / 8; ++d) {
      const int col = d * 8 + 2 * (lane & 3);
      const float2 gv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(g + col));
      const float v0 = o_at(o, d, 2 * h) * inv / (1.f + expf(-gv.x));
      const float v1 = o_at(o, d, 2 * h + 1) * inv / (1.f + expf(-gv.y));
      *reinterpret_cast<__nv_bfloat162*>(out + col) = __floats2bfloat162_rn(v0, v1);
    }
  }
}

template <int kPfRows>
__global__ void __launch_bounds__(kPfRows * 2, 1) attention_prefill_kernel(attention_prefill_args a, float scale_log2) {
  constexpr int kPfThreads = kPfRows * 2, kPfQBytes = kPfRows * kPfRowBytes;
  extern __shared__ __align__(128) unsigned char smem[];
  const int s = blockIdx.z, hk = blockIdx.y;
  const int tile = gridDim.x - 1 - blockIdx.x;  // heavier (later) tiles first
  const int group = a.n_q_heads / a.n_kv_heads, tok_per_tile = kPfRows / group;
  const int q0 = a.cu_q[s], n_new = a.cu_q[s + 1] - q0, ctx = a.seq_lens[s];
  const int i_first = tile * tok_per_tile;
  if (i_first >= n_new) return;
  const int i_last = min(n_new, i_first + tok_per_tile) - 1;
  const int base_pos = ctx - n_new;
  const int kv_len = max(base_pos + i_last + 1, 0);
  const int n_tiles = (kv_len + kPfKeys - 1) / kPfKeys;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  unsigned char* sq = smem;
  auto sk = [&](int b) { return smem + kPfQBytes + b * kPfKvBytes; };
  auto sv = [&](int b) { return smem + kPfQBytes + (2 + b) * kPfKvBytes; };

  // Q tile: thread covers chunk tid % 32 of rows tid / 32 + (threads / 32) i.
  constexpr int kRowStep = kPfThreads / 32;
  const int cc = tid & 31;
#pragma unroll 4
  for (int i = 0; i < kPfRows / kRowStep; ++i) {
    const int rr = tid / 32 + kRowStep * i, pi = tile * kPfRows + rr, tok = pi / group;
    const bool ok = tok < n_new;
    const bf16* src = ok ? a.q + std::int64_t(q0 + tok) * a.q_stride +
                               std::int64_t(hk * group + pi % group) * a.q_head_stride + cc * 8
                         : a.q;
    dev::cp_async16(sq + swz256(rr, cc), src, ok);
  }
  const std::int32_t* table = a.kv.block_tables + std::int64_t(s) * a.kv.max_blocks_per_seq;
  auto load_kv = [&](int j, int b) {
#pragma unroll 4
    for (int i = 0; i < kPfKeys / kRowStep; ++i) {
      const int rr = tid / 32 + kRowStep * i, pos = j * kPfKeys + rr;
      const bool ok = pos < kv_len;
      std::int64_t off = 0;
      if (ok) {
        const int blk = table[pos / a.kv.block_size];
        off = ((std::int64_t(blk) * a.kv.block_size + pos % a.kv.block_size) * a.n_kv_heads + hk) * kD + cc * 8;
      }
      dev::cp_async16(sk(b) + swz256(rr, cc), a.kv.k_cache + off, ok);
      dev::cp_async16(sv(b) + swz256(rr, cc), a.kv.v_cache + off, ok);
    }
  };
  if (n_tiles > 0) load_kv(0, 0);
  dev::cp_async_commit();

  // This thread's two rows: r0 = 16 warp + lane / 4 and r0 + 8; their query positions (-1: no query, all masked).
  int pos_row[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int rr = warp * 16 + (lane >> 2) + 8 * h, tok = (tile * kPfRows + rr) / group;
    pos_row[h] = tok < n_new ? base_pos + tok : -1;
  }
  const int pos_first = base_pos + i_first;

  float o[kD / 8][4];
#pragma unroll
  for (int d = 0; d < kD / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};

  for (int j = 0; j < n_tiles; ++j) {
    if (j + 1 < n_tiles) load_kv(j + 1, (j + 1) & 1);
    dev::cp_async_commit();
    dev::cp_async_wait<1>();
    __syncthreads();
    const std::uint32_t q_base = dev::smem_u32(sq), k_base = dev::smem_u32(sk(j & 1)),
                        v_base = dev::smem_u32(sv(j & 1));
    // S = Q K^T for this warp's 16 rows x 64 keys.
    float sacc[kPfKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kPfKeys / 8; ++n) sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      std::uint32_t af[4];
      dev::ldmatrix_x4(af, q_base + swz256(warp * 16 + (lane & 15), ks * 2 + (lane >> 4)));
#pragma unroll
      for (int np = 0; np < kPfKeys / 16; ++np) {
        std::uint32_t bf[4];
        dev::ldmatrix_x4(bf, k_base + swz256(np * 16 + ((lane >> 4) << 3) + (lane & 7), ks * 2 + ((lane >> 3) & 1)));
        dev::mma_bf16(sacc[2 * np], af, bf[0], bf[1]);
        dev::mma_bf16(sacc[2 * np + 1], af, bf[2], bf[3]);
      }
    }
    // Scale, mask, online softmax.
    const int kv0 = j * kPfKeys;
    const bool need_mask = kv0 + kPfKeys - 1 > pos_first;
    float mx[2] = {m_run[0], m_run[1]};
#pragma unroll
    for (int n = 0; n < kPfKeys / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1, key = kv0 + n * 8 + 2 * (lane & 3) + (e & 1);
        float v = sacc[n][e] * scale_log2;
        if (need_mask && key > pos_row[h]) v = -INFINITY;
        sacc[n][e] = v;
        mx[h] = fmaxf(mx[h], v);
      }
    float alpha[2], m_use[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      m_use[h] = mx[h] == -INFINITY ? 0.f : mx[h];
      alpha[h] = exp2f(m_run[h] - m_use[h]);  // m_run = -inf -> 0
      m_run[h] = mx[h];
      l_run[h] *= alpha[h];
    }
#pragma unroll
    for (int d = 0; d < kD / 8; ++d) {
      o[d][0] *= alpha[0], o[d][1] *= alpha[0];
      o[d][2] *= alpha[1], o[d][3] *= alpha[1];
    }
    std::uint32_t pf[kPfKeys / 16][4];
#pragma unroll
    for (int n = 0; n < kPfKeys / 8; ++n) {
      const float p0 = exp2f(sacc[n][0] - m_use[0]), p1 = exp2f(sacc[n][1] - m_use[0]);
      const float p2 = exp2f(sacc[n][2] - m_use[1]), p3 = exp2f(sacc[n][3] - m_use[1]);
      l_run[0] += p0 + p1;
      l_run[1] += p2 + p3;
      pf[n >> 1][(n & 1) * 2 + 0] = dev::pack_bf16(p0, p1);
      pf[n >> 1][(n & 1) * 2 + 1] = dev::pack_bf16(p2, p3);
    }
    // O += P V.
#pragma unroll
    for (int kk = 0; kk < kPfKeys / 16; ++kk)
#pragma unroll
      for (int dp = 0; dp < kD / 16; ++dp) {
        std::uint32_t bf[4];
        dev::ldmatrix_x4_trans(bf, v_base + swz256(kk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7), dp * 2 + (lane >> 4)));
        dev::mma_bf16(o[2 * dp], pf[kk], bf[0], bf[1]);
        dev::mma_bf16(o[2 * dp + 1], pf[kk], bf[2], bf[3]);
      }
    __syncthreads();  // the next iteration's loads overwrite this buffer
  }
  dev::cp_async_wait<0>();

  // Epilogue: out = O / l * sigmoid(gate).
  store_gated_rows<kPfRows>(a, o, l_run, warp * 16 + (lane >> 2), lane, tile, group, n_new, hk, q0);
}

// ---- sm_90a: the same algorithm on warpgroup MMAs. A block = 2 warpgroups x 64 rows (128 (token, head) rows, as the
// 128-row tiling); K/V tiles of 64 positions double-buffered through cp.async. Shared tiles are split into four
// 64-dim blocks of 128-byte rows, 128-byte swizzled (dev::swz64), so that Q (A operand) and K (B operand) are K-major
// wgmma tiles and V is an N-major one (imm-trans-b). Per tile and warpgroup: S = Q K^T by 16 wgmma.m64n64k16 (both
// operands in shared memory), the mask and online softmax in registers (the accumulator layout per warp is the
// mma.sync one, so this part is the 128-row kernel's), then O += P V by 4 wgmma.m64n256k16 with P from registers.
constexpr int kWgKeys = 64;
constexpr int kWgQBytes = 128 * kPfRowBytes;       // 64 KiB
constexpr int kWgKvBytes = kWgKeys * kPfRowBytes;  // 32 KiB
constexpr int kWgAttnSmem = kWgQBytes + 4 * kWgKvBytes + 1024;

#if EV_SM90A
// Byte offset of 16-byte chunk c (0..31) of row `row` in a tile of `rows` rows split into four 64-dim blocks.
__device__ __forceinline__ int blk256(int rows, int row, int c) { return (c >> 3) * rows * 128 + dev::swz64(row, c & 7); }

// The pieces of the wgmma prefill kernels' main loop (attention_prefill_wgmma_kernel, attention_prefill_ws_kernel),
// per warpgroup of 64 query rows and tile of kWgKeys keys.

// The loop state of this thread: pos_row, its two rows (row 16 wr + lane / 4 of warpgroup wg and 8 below, in the
// block's 128-row tile) as query positions, -1 past the sequence; O = 0, running max -inf and row sums 0.
__device__ __forceinline__ void wg_loop_init(int (&pos_row)[2], float (&o)[128], float (&m_run)[2], float (&l_run)[2],
                                             int wg, int wr, int lane, int tile, int group, int n_new, int base_pos) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int rr = wg * 64 + wr * 16 + (lane >> 2) + 8 * h, tok = (tile * 128 + rr) / group;
    pos_row[h] = tok < n_new ? base_pos + tok : -1;
  }
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
  m_run[0] = m_run[1] = -INFINITY;
  l_run[0] = l_run[1] = 0.f;
}

// Issues (and commits) S = Q K^T: sacc (m64n64 fp32 accumulator) from this warpgroup's Q rows at q_base and the
// K tile at k_base (both blk256 layouts in shared memory).
__device__ __forceinline__ void wg_issue_s(float (&sacc)[32], std::uint32_t q_base, std::uint32_t k_base) {
#pragma unroll
  for (int i = 0; i < 32; ++i) sacc[i] = 0.f;
  dev::wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks)
    dev::wgmma_m64n64k16(sacc, dev::wgmma_desc(q_base + (ks >> 2) * 128 * 128 + 32 * (ks & 3)),
                         dev::wgmma_desc(k_base + (ks >> 2) * kWgKeys * 128 + 32 * (ks & 3)), 1);
  dev::wgmma_commit();
}

// Issues (and commits) O += P V: P as bf16 A fragments in registers (pf), V N-major at v_base (dims contiguous;
// 64-dim blocks kWgKeys * 128 bytes apart, 16 keys = 2048 bytes).
__device__ __forceinline__ void wg_issue_pv(float (&o)[128], const std::uint32_t (&pf)[kWgKeys / 16][4],
                                            std::uint32_t v_base) {
  dev::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kWgKeys / 16; ++kk)
    dev::wgmma_m64n256k16_rs_tb(o, pf[kk], dev::wgmma_desc(v_base + kk * 16 * 128, kWgKeys * 128), 1);
  dev::wgmma_commit();
}

// Scale, mask, running max of tile S (keys from kv0; sacc[4 n + e]: row r0 + 8 (e / 2), key kv0 + 8 n + 2 (lane % 4)
// + e % 2): updates m_run, rescales l_run, and returns the rescale factor alpha and the max m_use to subtract (mx:
// scratch for the new row maxima, the caller's so that the kernels keep their register allocation).
__device__ __forceinline__ void wg_softmax_max(float (&sacc)[32], int kv0, int pos_first, const int (&pos_row)[2],
                                               int lane, float scale_log2, float (&m_run)[2], float (&l_run)[2],
                                               float (&mx)[2], float (&alpha)[2], float (&m_use)[2]) {
  const bool need_mask = kv0 + kWgKeys - 1 > pos_first;
  mx[0] = m_run[0], mx[1] = m_run[1];
#pragma unroll
  for (int n = 0; n < kWgKeys / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int h = e >> 1, key = kv0 + n * 8 + 2 * (lane & 3) + (e & 1);
      float v = sacc[4 * n + e] * scale_log2;
      if (need_mask && key > pos_row[h]) v = -INFINITY;
      sacc[4 * n + e] = v;
      mx[h] = fmaxf(mx[h], v);
    }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    m_use[h] = mx[h] == -INFINITY ? 0.f : mx[h];
    alpha[h] = exp2f(m_run[h] - m_use[h]);
    m_run[h] = mx[h];
    l_run[h] *= alpha[h];
  }
}

// P = exp2(S - m_use) into bf16 A fragments pf (row sums added to l_run), then O *= alpha per row.
__device__ __forceinline__ void wg_softmax_p(const float (&sacc)[32], const float (&alpha)[2], const float (&m_use)[2],
                                             float (&l_run)[2], std::uint32_t (&pf)[kWgKeys / 16][4],
                                             float (&o)[128]) {
#pragma unroll
  for (int n = 0; n < kWgKeys / 8; ++n) {
    const float p0 = exp2f(sacc[4 * n + 0] - m_use[0]), p1 = exp2f(sacc[4 * n + 1] - m_use[0]);
    const float p2 = exp2f(sacc[4 * n + 2] - m_use[1]), p3 = exp2f(sacc[4 * n + 3] - m_use[1]);
    l_run[0] += p0 + p1;
    l_run[1] += p2 + p3;
    pf[n >> 1][(n & 1) * 2 + 0] = dev::pack_bf16(p0, p1);
    pf[n >> 1][(n & 1) * 2 + 1] = dev::pack_bf16(p2, p3);
  }
#pragma unroll
  for (int d = 0; d < kD / 8; ++d) {
    o[4 * d + 0] *= alpha[0], o[4 * d + 1] *= alpha[0];
    o[4 * d + 2] *= alpha[1], o[4 * d + 3] *= alpha[1];
  }
}

// The block's work in the wgmma prefill kernels: sequence s (blockIdx.z), KV head hk (blockIdx.y) and its 128-row tile
// of (token, query head) rows (heavier, later tiles first), the tokens' first index i_first and position base_pos +
// i, and the keys it attends to: kv_len of them in n_tiles tiles of kWgKeys (>= 1: the block's last query sits at
// position >= 0). False where the tile lies past the sequence's new tokens (the block has nothing to do).
struct wg_block {
  int s, hk, tile, group, q0, n_new, i_first, base_pos, kv_len, n_tiles;
};
__device__ __forceinline__ bool wg_block_of(const attention_prefill_args& a, wg_block& b) {
  b.s = blockIdx.z, b.hk = blockIdx.y;
  b.tile = gridDim.x - 1 - blockIdx.x;
  b.group = a.n_q_heads / a.n_kv_heads;
  const int tok_per_tile = 128 / b.group;
  b.q0 = a.cu_q[b.s], b.n_new = a.cu_q[b.s + 1] - b.q0;
  const int ctx = a.seq_lens[b.s];
  b.i_first = b.tile * tok_per_tile;
  if (b.i_first >= b.n_new) return false;
  const int i_last = min(b.n_new, b.i_first + tok_per_tile) - 1;
  b.base_pos = ctx - b.n_new;
  b.kv_len = max(b.base_pos + i_last + 1, 0);
  b.n_tiles = (b.kv_len + kWgKeys - 1) / kWgKeys;
  return true;
}

// Issues the cp.async of 16-byte chunk cc of row rr of the block's 128-row Q tile into sq (blk256 layout); rows past
// the sequence's new tokens are zero-filled.
__device__ __forceinline__ void wg_load_q_chunk(const attention_prefill_args& a, unsigned char* sq, int rr, int cc,
                                                int tile, int group, int n_new, int hk, int q0) {
  const int pi = tile * 128 + rr, tok = pi / group;
  const bool ok = tok < n_new;
  const bf16* src = ok ? a.q + std::int64_t(q0 + tok) * a.q_stride +
                             std::int64_t(hk * group + pi % group) * a.q_head_stride + cc * 8
                       : a.q;
  dev::cp_async16(sq + blk256(128, rr, cc), src, ok);
}
#endif

template <bool OVERLAP>
__global__ void __launch_bounds__(256, 1) attention_prefill_wgmma_kernel(attention_prefill_args a, float scale_log2) {
#if EV_SM90A
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) &
                                                         ~std::uintptr_t(1023));
  wg_block blk;
  if (!wg_block_of(a, blk)) return;
  const int s = blk.s, hk = blk.hk, tile = blk.tile, group = blk.group, q0 = blk.q0, n_new = blk.n_new;
  const int i_first = blk.i_first, base_pos = blk.base_pos, kv_len = blk.kv_len, n_tiles = blk.n_tiles;
  const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7, wr = (tid >> 5) & 3;

  unsigned char* sq = smem;
  auto sk = [&](int b) { return smem + kWgQBytes + b * kWgKvBytes; };
  auto sv = [&](int b) { return smem + kWgQBytes + (2 + b) * kWgKvBytes; };
  const int cc = tid & 31;
#pragma unroll 4
  for (int i = 0; i < 16; ++i) {
    wg_load_q_chunk(a, sq, tid / 32 + 8 * i, cc, tile, group, n_new, hk, q0);
  }
  // This thread's 8 cache rows of a tile (rows tid / 32 + 8 i, chunk tid % 32): element offsets into the caches, -1
  // past kv_len (zero fill). Computed once per tile for K and V (the block-table lookups are global loads).
  const std::int32_t* table = a.kv.block_tables + std::int64_t(s) * a.kv.max_blocks_per_seq;
  std::int64_t off[kWgKeys / 8];
  auto lookup = [&](int j) {
#pragma unroll
    for (int i = 0; i < kWgKeys / 8; ++i) {
      const int pos = j * kWgKeys + tid / 32 + 8 * i;
      off[i] = -1;
      if (pos < kv_len) {
        const int blk = table[pos / a.kv.block_size];
        off[i] = ((std::int64_t(blk) * a.kv.block_size + pos % a.kv.block_size) * a.n_kv_heads + hk) * kD + cc * 8;
      }
    }
  };
  auto load_rows = [&](const bf16* cache, unsigned char* dst) {
#pragma unroll
    for (int i = 0; i < kWgKeys / 8; ++i)
      dev::cp_async16(dst + blk256(kWgKeys, tid / 32 + 8 * i, cc), cache + (off[i] >= 0 ? off[i] : 0), off[i] >= 0);
  };
  lookup(0);
  load_rows(a.kv.k_cache, sk(0));
  dev::cp_async_commit();  // {Q, K_0}
  load_rows(a.kv.v_cache, sv(0));
  dev::cp_async_commit();  // {V_0}

  int pos_row[2];
  float o[128], m_run[2], l_run[2];
  wg_loop_init(pos_row, o, m_run, l_run, wg, wr, lane, tile, group, n_new, base_pos);
  const int pos_first = base_pos + i_first;
  const std::uint32_t q_base = dev::smem_u32(sq) + wg * 64 * 128;
  // P as bf16 A fragments (OVERLAP: P_{j-1}; zero before the first tile, whose P V step then adds 0 * V_0: V_0 has
  // landed and is finite, cache rows or zero fill, which keeps the loop free of branches around the MMAs).
  std::uint32_t pf[kWgKeys / 16][4] = {};
  auto issue_s = [&](float (&sacc)[32], int j) { wg_issue_s(sacc, q_base, dev::smem_u32(sk(j & 1))); };
  auto issue_pv = [&](int b) { wg_issue_pv(o, pf, dev::smem_u32(sv(b))); };
  auto softmax_max = [&](float (&sacc)[32], int j, float (&alpha)[2], float (&m_use)[2]) {
    float mx[2];
    wg_softmax_max(sacc, j * kWgKeys, pos_first, pos_row, lane, scale_log2, m_run, l_run, mx, alpha, m_use);
  };

  if constexpr (!OVERLAP) {
    // Per tile: S = Q K^T (async) while this thread looks up and loads tile j + 1 into the other buffers (read by
    // tile j - 1, whose MMAs every warpgroup finished before the barrier); softmax; O += P V.
    for (int j = 0; j < n_tiles; ++j) {
      dev::cp_async_wait<0>();
      dev::fence_proxy_async();
      __syncthreads();
      float sacc[32];
      issue_s(sacc, j);
      if (j + 1 < n_tiles) {
        lookup(j + 1);
        load_rows(a.kv.k_cache, sk((j + 1) & 1));
        load_rows(a.kv.v_cache, sv((j + 1) & 1));
      }
      dev::cp_async_commit();
      dev::wgmma_wait<0>();
      dev::fence_regs(sacc);
      float alpha[2], m_use[2];
      softmax_max(sacc, j, alpha, m_use);
      wg_softmax_p(sacc, alpha, m_use, l_run, pf, o);
      issue_pv(j & 1);
      dev::wgmma_wait<0>();
      dev::fence_regs(o);
    }
  } else {
    // FA3's intra-warpgroup overlap: iteration j issues S_j and O += P_{j-1} V_{j-1} back to back and runs the
    // softmax of S_j while P V runs. K_{j+1} is loaded after the MMAs are issued (K_{j-1}'s buffer: S_{j-1} completed
    // in iteration j - 1), V_{j+1} after P_{j-1} V_{j-1} completed in every warpgroup (a second barrier). cp.async
    // groups in commit order: {Q, K_0}, {V_0}, then per iteration {K_{j+1}}, {V_{j+1}}; at the top of iteration j
    // all but the newest ({V_j}) must have landed (K_j and V_{j-1}).
    dev::cp_async_wait<0>();
    for (int j = 0; j < n_tiles; ++j) {
      dev::cp_async_wait<1>();
      dev::fence_proxy_async();
      __syncthreads();
      float sacc[32];
      issue_s(sacc, j);
      issue_pv(j > 0 ? (j - 1) & 1 : 0);
      if (j + 1 < n_tiles) {
        lookup(j + 1);
        load_rows(a.kv.k_cache, sk((j + 1) & 1));
      }
      dev::cp_async_commit();
      dev::wgmma_wait<1>();  // S_j done (P V may still run)
      dev::fence_regs(sacc);
      float alpha[2], m_use[2];
      softmax_max(sacc, j, alpha, m_use);
      dev::wgmma_wait<0>();  // P_{j-1} V_{j-1} done: O and pf may change
      dev::fence_regs(o);
      wg_softmax_p(sacc, alpha, m_use, l_run, pf, o);
      __syncthreads();  // every warpgroup is done with V_{j-1}'s buffer
      if (j + 1 < n_tiles) load_rows(a.kv.v_cache, sv((j + 1) & 1));
      dev::cp_async_commit();
    }
    dev::cp_async_wait<0>();
    dev::fence_proxy_async();
    __syncthreads();
    issue_pv((n_tiles - 1) & 1);  // the last tile's P V
    dev::wgmma_wait<0>();
    dev::fence_regs(o);
  }
  dev::cp_async_wait<0>();

  store_gated_rows<128>(a, o, l_run, wg * 64 + wr * 16 + (lane >> 2), lane, tile, group, n_new, hk, q0);
#else
  __trap();  // launched only where wgmma_available()
#endif
}

// ---- sm_90a, warp-specialized (FA3's layout): 3 warpgroups. Warpgroup 2 is the producer: it loads Q and the K/V
// tiles (cp.async, completion signalled on mbarriers: full_k/full_v per stage, 2 stages), gives most of its registers
// to the consumers (setmaxnreg) and waits on empty_k/empty_v before refilling a stage. Warpgroups 0 and 1 each own 64
// rows and run the overlapped loop (issue S_j and O += P_{j-1} V_{j-1} together, softmax of S_j while P V runs) in
// ping-pong: a warpgroup issues its MMAs only after the other issued its own (two named barriers), so one warpgroup's
// softmax runs under the other's MMAs instead of both waiting on a block-wide barrier every tile.
constexpr int kWsSmem = kWgAttnSmem + 128;  // + 8 mbarriers

#if EV_SM90A
constexpr int kWsProducerRegs = 24, kWsConsumerRegs = 240;  // 128 x (24 + 2 x 240) = 64512 <= 65536
__device__ __forceinline__ void mbar_init(std::uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(std::uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives on `bar` once every cp.async this thread issued so far has landed (counts as one of the expected arrivals).
__device__ __forceinline__ void mbar_arrive_cp_async(std::uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(std::uint32_t bar, std::uint32_t parity) {
  asm volatile(
      "{\n.reg .pred p;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
#endif

__global__ void __launch_bounds__(384, 1) attention_prefill_ws_kernel(attention_prefill_args a, float scale_log2) {
#if EV_SM90A
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) &
                                                         ~std::uintptr_t(1023));
  wg_block blk;
  if (!wg_block_of(a, blk)) return;
  const int s = blk.s, hk = blk.hk, tile = blk.tile, group = blk.group, q0 = blk.q0, n_new = blk.n_new;
  const int i_first = blk.i_first, base_pos = blk.base_pos, kv_len = blk.kv_len, n_tiles = blk.n_tiles;
  const int tid = threadIdx.x, wg = tid >> 7;

  unsigned char* sq = smem;
  auto sk = [&](int b) { return smem + kWgQBytes + b * kWgKvBytes; };
  auto sv = [&](int b) { return smem + kWgQBytes + (2 + b) * kWgKvBytes; };
  // mbarriers: full_k[2], full_v[2] (128 producer arrivals), empty_k[2], empty_v[2] (256 consumer arrivals).
  const std::uint32_t bars = dev::smem_u32(smem + kWgQBytes + 4 * kWgKvBytes);
  auto full_k = [&](int b) { return bars + 8 * b; };
  auto full_v = [&](int b) { return bars + 16 + 8 * b; };
  auto empty_k = [&](int b) { return bars + 32 + 8 * b; };
  auto empty_v = [&](int b) { return bars + 48 + 8 * b; };
  if (tid == 0) {
    for (int b = 0; b < 2; ++b) {
      mbar_init(full_k(b), 128);
      mbar_init(full_v(b), 128);
      mbar_init(empty_k(b), 256);
      mbar_init(empty_v(b), 256);
    }
  }
  __syncthreads();

  if (wg == 2) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kWsProducerRegs));
    const int p = tid - 256;
    {  // Q: rows p / 32 + 4 i, chunk p % 32 (lands with K_0: full_k(0) covers it)
      const int cc = p & 31;
#pragma unroll 1
      for (int i = 0; i < 32; ++i) {
        wg_load_q_chunk(a, sq, p / 32 + 4 * i, cc, tile, group, n_new, hk, q0);
      }
    }
    // K/V: rows p / 8 + 16 i (i < 4), chunks p % 8 + 8 c (c < 4): a warp covers 4 rows x 128 contiguous bytes per
    // instruction. Row i of chunk c sits at dst0 + c * kWgKeys * 128 + i * 16 * 128 (blk256 with the row's low 3 bits
    // fixed). Cache rows as int32 indices (-1: past kv_len, zero fill).
    const std::int32_t* table = a.kv.block_tables + std::int64_t(s) * a.kv.max_blocks_per_seq;
    const int c0 = p & 7, r0 = p >> 3;
    const int dst0 = r0 * 128 + ((c0 ^ (r0 & 7)) << 4);
    for (int j = 0; j < n_tiles; ++j) {
      const int b = j & 1;
      int row[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int pos = j * kWgKeys + r0 + 16 * i;
        row[i] = -1;
        if (pos < kv_len)
          row[i] = (table[pos / a.kv.block_size] * a.kv.block_size + pos % a.kv.block_size) * a.n_kv_heads + hk;
      }
      auto load = [&](const bf16* cache, unsigned char* dst) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const bf16* src = cache + (row[i] >= 0 ? std::int64_t(row[i]) * kD + c0 * 8 : 0);
#pragma unroll
          for (int c = 0; c < 4; ++c)
            dev::cp_async16(dst + dst0 + c * kWgKeys * 128 + i * 16 * 128, src + 64 * c, row[i] >= 0);
        }
      };
      if (j >= 2) mbar_wait(empty_k(b), ((j >> 1) - 1) & 1);
      load(a.kv.k_cache, sk(b));
      mbar_arrive_cp_async(full_k(b));
      if (j >= 2) mbar_wait(empty_v(b), ((j >> 1) - 1) & 1);
      load(a.kv.v_cache, sv(b));
      mbar_arrive_cp_async(full_v(b));
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kWsConsumerRegs));
  const int lane = tid & 31, wr = (tid >> 5) & 3;
  int pos_row[2];
  float o[128], m_run[2], l_run[2];
  wg_loop_init(pos_row, o, m_run, l_run, wg, wr, lane, tile, group, n_new, base_pos);
  const int pos_first = base_pos + i_first;
  const std::uint32_t q_base = dev::smem_u32(sq) + wg * 64 * 128;
  // P as bf16 A fragments (P_{j-1}; zero before the first tile, whose P V step then adds 0 * V_0: V_0 has landed and
  // is finite, cache rows or zero fill, which keeps the MMA waits unconditional).
  std::uint32_t pf[kWgKeys / 16][4] = {};
  auto issue_s = [&](float (&sacc)[32], int b) { wg_issue_s(sacc, q_base, dev::smem_u32(sk(b))); };
  auto issue_pv = [&](int b) { wg_issue_pv(o, pf, dev::smem_u32(sv(b))); };
  // Ping-pong: turn barrier 1 + w is completed by warpgroup w's sync and the other warpgroup's arrive. Warpgroup 1
  // lets warpgroup 0 go first.
  const int my_turn = 1 + wg, other_turn = 2 - wg;
  if (wg == 1) dev::named_bar_arrive(1, 256);
  for (int j = 0; j < n_tiles; ++j) {
    const int b = j & 1;
    const int jv = j > 0 ? j - 1 : 0;  // the V tile of this iteration's P V
    mbar_wait(full_k(b), (j >> 1) & 1);
    mbar_wait(full_v(jv & 1), (jv >> 1) & 1);
    dev::fence_proxy_async();
    float sacc[32];
    dev::named_bar_sync(my_turn, 256);
    issue_s(sacc, b);
    issue_pv(jv & 1);
    dev::named_bar_arrive(other_turn, 256);
    dev::wgmma_wait<1>();  // S_j done (P V may still run)
    dev::fence_regs(sacc);
    mbar_arrive(empty_k(b));
    float mx[2], alpha[2], m_use[2];
    wg_softmax_max(sacc, j * kWgKeys, pos_first, pos_row, lane, scale_log2, m_run, l_run, mx, alpha, m_use);
    dev::wgmma_wait<0>();  // P_{j-1} V_{j-1} done: O and pf may change
    dev::fence_regs(o);
    if (j > 0) mbar_arrive(empty_v(jv & 1));
    wg_softmax_p(sacc, alpha, m_use, l_run, pf, o);
  }
  // The last tile's P V; the final sync balances warpgroup 1's first arrive on barrier 1.
  mbar_wait(full_v((n_tiles - 1) & 1), ((n_tiles - 1) >> 1) & 1);
  dev::fence_proxy_async();
  issue_pv((n_tiles - 1) & 1);
  if (wg == 0) dev::named_bar_sync(1, 256);
  dev::wgmma_wait<0>();
  dev::fence_regs(o);

  store_gated_rows<128>(a, o, l_run, wg * 64 + wr * 16 + (lane >> 2), lane, tile, group, n_new, hk, q0);
#else
  __trap();  // launched only where wgmma_available()
#endif
}

// EVIDENT_ATTN_PREFILL_OVERLAP=1 selects the overlapped wgmma kernel where args.wgmma_overlap is 0 (benchmarks: both
// kernels from one binary). Read once.
bool prefill_overlap_from_env() {
  static const bool on = [] {
    const char* v = std::getenv("EVIDENT_ATTN_PREFILL_OVERLAP");
    return v && v[0] == '1';
  }();
  return on;
}
// EVIDENT_ATTN_PREFILL_WS=0 selects the plain wgmma kernel instead of the warp-specialized one where
// args.wgmma_overlap is 0 (benchmarks: both kernels from one binary). Read once.
bool prefill_ws_off_from_env() {
  static const bool off = [] {
    const char* v = std::getenv("EVIDENT_ATTN_PREFILL_WS");
    return v && v[0] == '0';
  }();
  return off;
}

}  // namespace

status attention_prefill(const attention_prefill_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_seq >= 0 && a.n_tokens >= 0 && a.max_n_new >= 0, "attention_prefill: n_seq = ", a.n_seq,
                    ", n_tokens = ", a.n_tokens, ", max_n_new = ", a.max_n_new, ": expected >= 0");
  EV_KERNEL_REQUIRE(a.n_kv_heads > 0 && a.n_q_heads > 0 && a.n_q_heads % a.n_kv_heads == 0,
                    "attention_prefill: n_q_heads = ", a.n_q_heads, ", n_kv_heads = ", a.n_kv_heads,
                    ": expected a multiple");
  EV_KERNEL_REQUIRE(a.tile_rows == 0 || a.tile_rows == 64 || a.tile_rows == 128, "attention_prefill: tile_rows = ",
                    a.tile_rows, ": expected 0, 64 or 128");
  const int group = a.n_q_heads / a.n_kv_heads;
  EV_KERNEL_SUPPORTED(a.head_dim == kD && 64 % group == 0, "attention_prefill: head_dim = ", a.head_dim,
                      ", group = ", group, ": supported head_dim 256 and a group dividing 64");
  if (a.n_seq == 0 || a.n_tokens == 0 || a.max_n_new == 0) return status::success();
  EV_KERNEL_SUPPORTED(a.n_seq <= 65535 && a.n_kv_heads <= 65535, "attention_prefill: n_seq = ", a.n_seq,
                      ": supported <= 65535");
  EV_KERNEL_REQUIRE(a.cu_q && a.seq_lens && a.q && a.gate && a.out && a.kv.k_cache && a.kv.v_cache &&
                        a.kv.block_tables,
                    "attention_prefill: null cu_q, seq_lens, q, gate, out, caches or block_tables");
  EV_KERNEL_REQUIRE(a.kv.block_size > 0 && a.kv.max_blocks_per_seq > 0, "attention_prefill: block_size = ",
                    a.kv.block_size, ", max_blocks_per_seq = ", a.kv.max_blocks_per_seq, ": expected > 0");
  EV_KERNEL_REQUIRE(a.q_stride % 8 == 0 && a.q_head_stride % 8 == 0 && a.gate_stride % 2 == 0 &&
                        a.gate_head_stride % 2 == 0 && a.out_stride % 2 == 0 && a.out_stride >= a.n_q_heads * kD,
                    "attention_prefill: q strides must be multiples of 8, gate / out strides even, out_stride >= ",
                    a.n_q_heads * kD);
  EV_KERNEL_REQUIRE(aligned16(a.q) && aligned16(a.kv.k_cache) && aligned16(a.kv.v_cache) &&
                        (reinterpret_cast<std::uintptr_t>(a.gate) & 3u) == 0 &&
                        (reinterpret_cast<std::uintptr_t>(a.out) & 3u) == 0,
                    "attention_prefill: q and the caches must be 16-byte aligned, gate and out 4-byte aligned");
  const float scale_log2 = a.scale * 1.4426950408889634f;
  auto launch = [&](auto rows_tag) -> cudaError_t {
    constexpr int rows = decltype(rows_tag)::value;
    auto kernel = attention_prefill_kernel<rows>;
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, pf_smem<rows>());
    if (err != cudaSuccess) return err;
    const long long tiles = (static_cast<long long>(a.max_n_new) * group + rows - 1) / rows;
    kernel<<<dim3(unsigned(tiles), a.n_kv_heads, a.n_seq), rows * 2, pf_smem<rows>(), stream>>>(a, scale_log2);
    return cudaSuccess;
  };
  // 1 plain, 2 overlap, 3 warp-specialized (the default)
  int wg_variant = a.tile_rows == 0 && wgmma_available() ? 3 : 0;
  if (wg_variant && a.wgmma_overlap != 0) wg_variant = a.wgmma_overlap == 1 ? 2 : a.wgmma_overlap == 2 ? 3 : 1;
  if (wg_variant && a.wgmma_overlap == 0 && prefill_overlap_from_env()) wg_variant = 2;
  else if (wg_variant && a.wgmma_overlap == 0 && prefill_ws_off_from_env()) wg_variant = 1;
  if (wg_variant == 3) {
    EV_CUDA_CHECK(cudaFuncSetAttribute(attention_prefill_ws_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       kWsSmem));
    const long long tiles = (static_cast<long long>(a.max_n_new) * group + 127) / 128;
    attention_prefill_ws_kernel<<<dim3(unsigned(tiles), a.n_kv_heads, a.n_seq), 384, kWsSmem, stream>>>(a,
                                                                                                         scale_log2);
  } else if (wg_variant) {
    auto kernel = wg_variant == 2 ? attention_prefill_wgmma_kernel<true> : attention_prefill_wgmma_kernel<false>;
    EV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgAttnSmem));
    const long long tiles = (static_cast<long long>(a.max_n_new) * group + 127) / 128;
    kernel<<<dim3(unsigned(tiles), a.n_kv_heads, a.n_seq), 256, kWgAttnSmem, stream>>>(a, scale_log2);
  } else if (a.tile_rows == 64) {
    EV_CUDA_CHECK(launch(std::integral_constant<int, 64>{}));
  } else {
    EV_CUDA_CHECK(launch(std::integral_constant<int, 128>{}));
  }
  EV_CUDA_CHECK_LAUNCH("attention_prefill_kernel");
  return status::success();
}

}  // namespace evident::kernels
