// engine/cuda's own kernels (contracts in model-kernels.h). Simple by design: they are glue or fallbacks for shapes
// kernels/ does not cover, so each favours obviously-correct indexing over speed.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <sstream>
#include <string>

#include "engine/cuda/model-kernels.h"
#include "kernels/device-util.cuh"

namespace evident::engine::cuda_ops {
namespace {

using nvbf = __nv_bfloat16;

template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

#define OPS_REQUIRE(cond, ...)                                                                                    \
  do {                                                                                                            \
    if (!(cond)) return status::make(kernels::status_code::invalid_argument, concat(__VA_ARGS__));                \
  } while (0)

#define OPS_LAUNCHED(name)                                                                                        \
  do {                                                                                                            \
    cudaError_t e_ = cudaGetLastError();                                                                          \
    if (e_ != cudaSuccess)                                                                                        \
      return status::make(kernels::status_code::cuda_error,                                                       \
                          concat(name, " launch failed: ", cudaGetErrorName(e_), " (", cudaGetErrorString(e_),   \
                                 ") at ", __FILE__, ":", __LINE__));                                              \
  } while (0)

__device__ __forceinline__ float ld(const bf16* p) { return __bfloat162float(*reinterpret_cast<const nvbf*>(p)); }
__device__ __forceinline__ void st(bf16* p, float v) { *reinterpret_cast<nvbf*>(p) = __float2bfloat16(v); }
using kernels::dev::warp_sum;
__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// ---- reset ----------------------------------------------------------------------------------------------------------
__global__ void reset_states_kernel(reset_states_args a) {
  const int e = blockIdx.x, l = blockIdx.y;
  if (a.flags[e] == 0) return;
  const std::int64_t slot = a.slots[e];
  bf16* c = a.conv + l * a.conv_layer_stride + slot * a.conv_slot_elems;
  for (std::int64_t i = threadIdx.x; i < a.conv_slot_elems; i += blockDim.x) c[i].bits = 0;
  float* r = a.rec + l * a.rec_layer_stride + slot * a.rec_slot_elems;
  for (std::int64_t i = threadIdx.x; i < a.rec_slot_elems; i += blockDim.x) r[i] = 0.f;
}

// ---- gates ----------------------------------------------------------------------------------------------------------
__global__ void gdn_gates_kernel(gdn_gates_args a) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= std::int64_t(a.n_tokens) * a.n_v_heads) return;
  const std::int64_t t = i / a.n_v_heads;
  const int h = int(i % a.n_v_heads);
  const float b = ld(a.b + t * a.stride + h), x = ld(a.a + t * a.stride + h) + a.dt_bias[h];
  const float sp = x > 20.f ? x : log1pf(expf(x));
  a.beta[i] = sigmoid(b);
  a.g[i] = -expf(a.a_log[h]) * sp;
}

// ---- generic gated delta rule ---------------------------------------------------------------------------------------
__global__ void gdn_generic_kernel(kernels::gdn_shape sh, kernels::gdn_args a) {
  extern __shared__ float smem[];
  const int hv = blockIdx.x, s = blockIdx.y;
  const int dk = sh.d_k, dv = sh.d_v, hk = hv / (sh.n_v_heads / sh.n_k_heads);
  float* S = smem;              // [dk][dv]
  float* qs = S + dk * dv;      // [dk]
  float* ks = qs + dk;          // [dk]
  float* nrm = ks + dk;         // [2]
  const int slot = a.state_slots ? a.state_slots[s] : s;
  const std::int64_t soff = (std::int64_t(slot) * sh.n_v_heads + hv) * dk * dv;
  for (int i = threadIdx.x; i < dk * dv; i += blockDim.x) S[i] = a.initial_state ? a.initial_state[soff + i] : 0.f;
  const int t0 = a.cu_seqlens[s], t1 = a.cu_seqlens[s + 1];
  const float qscale = rsqrtf(float(dk));
  __syncthreads();
  for (int t = t0; t < t1; ++t) {
    for (int i = threadIdx.x; i < dk; i += blockDim.x) {
      qs[i] = ld(a.q + std::int64_t(t) * a.q_stride + hk * dk + i);
      ks[i] = ld(a.k + std::int64_t(t) * a.k_stride + hk * dk + i);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float sq = 0.f, sk = 0.f;
      for (int i = 0; i < dk; ++i) {
        sq += qs[i] * qs[i];
        sk += ks[i] * ks[i];
      }
      nrm[0] = 1.f / sqrtf(sq + 1e-6f) * qscale;
      nrm[1] = 1.f / sqrtf(sk + 1e-6f);
    }
    __syncthreads();
    const float decay = expf(a.g[std::int64_t(t) * sh.n_v_heads + hv]);
    const float beta = a.beta[std::int64_t(t) * sh.n_v_heads + hv];
    const float qn = nrm[0], kn = nrm[1];
    for (int j = threadIdx.x; j < dv; j += blockDim.x) {
      float kv = 0.f;
      for (int i = 0; i < dk; ++i) {
        S[i * dv + j] *= decay;
        kv += ks[i] * kn * S[i * dv + j];
      }
      const float d = beta * (ld(a.v + std::int64_t(t) * a.v_stride + hv * dv + j) - kv);
      float o = 0.f;
      for (int i = 0; i < dk; ++i) {
        S[i * dv + j] += ks[i] * kn * d;
        o += qs[i] * qn * S[i * dv + j];
      }
      st(a.out + std::int64_t(t) * a.out_stride + hv * dv + j, o);
    }
    __syncthreads();  // qs / ks are rewritten by the next token
  }
  if (a.final_state)
    for (int i = threadIdx.x; i < dk * dv; i += blockDim.x) a.final_state[soff + i] = S[i];
}

// ---- q/k norm + rope ------------------------------------------------------------------------------------------------
constexpr int kNormWarps = 8;
__global__ void qk_norm_rope_kernel(qk_norm_rope_args a) {
  __shared__ float buf[kNormWarps][256];
  const int t = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int hd = a.head_dim, half = a.rotary_dim / 2;
  const float pos = float(a.positions[t]);
  for (int hh = warp; hh < a.n_q_heads + a.n_kv_heads; hh += kNormWarps) {
    const bool is_q = hh < a.n_q_heads;
    bf16* x = is_q ? a.q + std::int64_t(t) * a.q_stride + std::int64_t(hh) * a.q_head_stride
                   : a.k + std::int64_t(t) * a.k_stride + std::int64_t(hh - a.n_q_heads) * hd;
    const bf16* w = is_q ? a.q_w : a.k_w;
    float ss = 0.f;
    for (int d = lane; d < hd; d += 32) {
      const float v = ld(x + d);
      buf[warp][d] = v;
      ss += v * v;
    }
    ss = warp_sum(ss);
    const float inv = 1.f / sqrtf(ss / float(hd) + a.eps);
    __syncwarp();
    for (int d = lane; d < hd; d += 32) buf[warp][d] = buf[warp][d] * inv * (1.f + ld(w + d));
    __syncwarp();
    for (int d = lane; d < hd; d += 32) {
      float v = buf[warp][d];
      if (d < half) {
        float s, c;
        sincosf(pos * a.inv_freq[d], &s, &c);
        v = buf[warp][d] * c - buf[warp][d + half] * s;
      } else if (d < a.rotary_dim) {
        float s, c;
        sincosf(pos * a.inv_freq[d - half], &s, &c);
        v = buf[warp][d] * c + buf[warp][d - half] * s;
      }
      st(x + d, v);
    }
    __syncwarp();
  }
}

// ---- generic attention ----------------------------------------------------------------------------------------------
__global__ void attention_generic_kernel(attention_generic_args a) {
  const int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x;
  const int hd = a.head_dim, g = h / (a.n_q_heads / a.n_kv_heads);
  constexpr int kMaxPer = 8;  // head_dim <= 256
  float q[kMaxPer], acc[kMaxPer];
  const bf16* qp = a.q + std::int64_t(t) * a.q_stride + std::int64_t(h) * a.q_head_stride;
#pragma unroll
  for (int j = 0; j < kMaxPer; ++j) {
    const int d = lane + 32 * j;
    q[j] = d < hd ? ld(qp + d) : 0.f;
    acc[j] = 0.f;
  }
  const std::int32_t* table = a.kv.block_tables + std::int64_t(a.token_entry[t]) * a.kv.max_blocks_per_seq;
  const int n = a.positions[t] + 1;
  float m = -INFINITY, l = 0.f;
  const std::int64_t row = std::int64_t(a.n_kv_heads) * hd;
  for (int p = 0; p < n; ++p) {
    const std::int64_t cache_row = std::int64_t(table[p / a.kv.block_size]) * a.kv.block_size + p % a.kv.block_size;
    const bf16* kp = a.kv.k_cache + cache_row * row + std::int64_t(g) * hd;
    const bf16* vp = a.kv.v_cache + cache_row * row + std::int64_t(g) * hd;
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < kMaxPer; ++j) {
      const int d = lane + 32 * j;
      if (d < hd) s += q[j] * ld(kp + d);
    }
    s = warp_sum(s) * a.scale;
    const float m2 = fmaxf(m, s), corr = expf(m - m2), e = expf(s - m2);
    l = l * corr + e;
#pragma unroll
    for (int j = 0; j < kMaxPer; ++j) {
      const int d = lane + 32 * j;
      acc[j] = acc[j] * corr + (d < hd ? e * ld(vp + d) : 0.f);
    }
    m = m2;
  }
  const bf16* gp = a.gate + std::int64_t(t) * a.gate_stride + std::int64_t(h) * a.gate_head_stride;
  bf16* op = a.out + std::int64_t(t) * a.out_stride + std::int64_t(h) * hd;
#pragma unroll
  for (int j = 0; j < kMaxPer; ++j) {
    const int d = lane + 32 * j;
    if (d < hd) st(op + d, (l > 0.f ? acc[j] / l : 0.f) * sigmoid(ld(gp + d)));
  }
}

// ---- swiglu ---------------------------------------------------------------------------------------------------------
__global__ void swiglu_kernel(int n_rows, int inter, const bf16* in, std::int64_t in_stride, bf16* out,
                              std::int64_t out_stride) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= std::int64_t(n_rows) * inter) return;
  const std::int64_t r = i / inter;
  const int c = int(i % inter);
  st(out + r * out_stride + c, silu(ld(in + r * in_stride + c)) * ld(in + r * in_stride + inter + c));
}

// ---- MoE fallback ---------------------------------------------------------------------------------------------------
constexpr int kMoeWarps = 8;
__global__ void moe_gate_up_generic_kernel(moe_generic_args a) {
  const int r = blockIdx.x;  // (token, k)
  const int i = blockIdx.y * kMoeWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (i >= a.inter) return;
  const int t = r / a.top_k, e = a.ids[r];
  bf16* hp = a.h + std::int64_t(r) * a.inter + i;
  if (e < 0 || e >= a.n_experts) {
    if (lane == 0) st(hp, 0.f);
    return;
  }
  const bf16* x = a.x + std::int64_t(t) * a.x_stride;
  const bf16* wg = a.w_gate_up + (std::int64_t(e) * 2 * a.inter + i) * a.hidden;
  const bf16* wu = wg + std::int64_t(a.inter) * a.hidden;
  float g = 0.f, u = 0.f;
  for (int d = lane; d < a.hidden; d += 32) {
    const float xv = ld(x + d);
    g += xv * ld(wg + d);
    u += xv * ld(wu + d);
  }
  g = warp_sum(g);
  u = warp_sum(u);
  if (lane == 0) st(hp, silu(g) * u);
}

__global__ void moe_down_combine_generic_kernel(moe_generic_args a) {
  const int t = blockIdx.x;
  const int j = blockIdx.y * kMoeWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (j >= a.hidden) return;
  float acc = 0.f;
  for (int k = 0; k < a.top_k; ++k) {
    const int r = t * a.top_k + k, e = a.ids[r];
    if (e < 0 || e >= a.n_experts) continue;
    const bf16* w = a.w_down + (std::int64_t(e) * a.hidden + j) * a.inter;
    const bf16* hp = a.h + std::int64_t(r) * a.inter;
    float s = 0.f;
    for (int i = lane; i < a.inter; i += 32) s += ld(hp + i) * ld(w + i);
    acc += a.weights[r] * warp_sum(s);
  }
  if (a.shared) {
    const float gate = a.shared_gate ? sigmoid(a.shared_gate[t]) : 1.f;
    acc += gate * ld(a.shared + std::int64_t(t) * a.shared_stride + j);
  }
  if (lane == 0) st(a.out + std::int64_t(t) * a.out_stride + j, acc);
}


// ---- small-M projection -------------------------------------------------------------------------------------------
constexpr int kGemvWarps = 8;
constexpr int kGemvUnroll = 8;  // 16-byte weight loads in flight per lane

__device__ __forceinline__ void bf16x8_to_f32(const uint4& u, float* f) {
  const nvbf* h = reinterpret_cast<const nvbf*>(&u);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = __bfloat162float(h[i]);
}

// x staged in shared memory ([M][k] contiguous); each warp walks output columns j = warp_global, += total warps.
template <int M>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_small_kernel(gemv_args a) {
  extern __shared__ uint4 xs_raw[];
  const int k8 = a.k / 8;  // uint4 per row
  for (int i = threadIdx.x; i < M * k8; i += blockDim.x) {
    const int m = i / k8, c = i - m * k8;
    xs_raw[i] = reinterpret_cast<const uint4*>(a.x + std::int64_t(m) * a.ldx)[c];
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_warps = gridDim.x * kGemvWarps;
  for (int j = blockIdx.x * kGemvWarps + warp; j < a.n; j += n_warps) {
    const uint4* wr = reinterpret_cast<const uint4*>(a.w + std::int64_t(j) * a.ldw);
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = 0.f;
    for (int c0 = lane; c0 < k8; c0 += 32 * kGemvUnroll) {
      uint4 wv[kGemvUnroll];
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int c = c0 + u * 32;
        wv[u] = c < k8 ? __ldg(wr + c) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int c = c0 + u * 32;
        if (c >= k8) break;
        float wf[8];
        bf16x8_to_f32(wv[u], wf);
#pragma unroll
        for (int m = 0; m < M; ++m) {
          float xf[8];
          bf16x8_to_f32(xs_raw[m * k8 + c], xf);
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[m] = fmaf(wf[i], xf[i], acc[m]);
        }
      }
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = warp_sum(acc[m]);
      if (lane == m) {
        if (a.y_fp32)
          static_cast<float*>(a.y)[std::int64_t(m) * a.ldy + j] = v;
        else
          st(static_cast<bf16*>(a.y) + std::int64_t(m) * a.ldy + j, v);
      }
    }
  }
}


// ---- residual add + RMSNorm, block per row --------------------------------------------------------------------------
constexpr int kNormThreads = 256;
constexpr int kNormIter = 4;  // dim <= 8 * 256 * 4

__global__ void __launch_bounds__(kNormThreads) add_rmsnorm_rows_kernel(add_rmsnorm_args a) {
  __shared__ float part[kNormThreads / 32];
  const int row = blockIdx.x, tid = threadIdx.x;
  const bf16* x = a.x + std::int64_t(row) * a.x_stride;
  bf16* res = a.residual ? a.residual + std::int64_t(row) * a.residual_stride : nullptr;
  float h[kNormIter][8];
  float ss = 0.f;
#pragma unroll
  for (int it = 0; it < kNormIter; ++it) {
    const int i = (it * kNormThreads + tid) * 8;
    if (i >= a.dim) break;
    bf16x8_to_f32(*reinterpret_cast<const uint4*>(x + i), h[it]);
    if (res) {
      float r[8];
      bf16x8_to_f32(*reinterpret_cast<const uint4*>(res + i), r);
      uint4 packed;
      nvbf* pk = reinterpret_cast<nvbf*>(&packed);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        pk[j] = __float2bfloat16(h[it][j] + r[j]);
        h[it][j] = __bfloat162float(pk[j]);
      }
      *reinterpret_cast<uint4*>(res + i) = packed;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) ss += h[it][j] * h[it][j];
  }
  ss = warp_sum(ss);
  if ((tid & 31) == 0) part[tid >> 5] = ss;
  __syncthreads();
  float tot = 0.f;
#pragma unroll
  for (int w = 0; w < kNormThreads / 32; ++w) tot += part[w];
  const float inv = rsqrtf(tot / float(a.dim) + a.eps);
  bf16* out = a.out + std::int64_t(row) * a.out_stride;
#pragma unroll
  for (int it = 0; it < kNormIter; ++it) {
    const int i = (it * kNormThreads + tid) * 8;
    if (i >= a.dim) break;
    float wv[8];
    bf16x8_to_f32(*reinterpret_cast<const uint4*>(a.w + i), wv);
    uint4 packed;
    nvbf* pk = reinterpret_cast<nvbf*>(&packed);
#pragma unroll
    for (int j = 0; j < 8; ++j) pk[j] = __float2bfloat16(h[it][j] * inv * (1.f + wv[j]));
    *reinterpret_cast<uint4*>(out + i) = packed;
  }
}


// ---- decode MoE -----------------------------------------------------------------------------------------------------
__device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
  float fa[8], fb[8];
  bf16x8_to_f32(a, fa);
  bf16x8_to_f32(b, fb);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) s = fmaf(fa[i], fb[i], s);
  return s;
}

// grid (n_tokens * (top_k + 2), ceil(max(inter, shared_inter) / 8)); row kind k: < top_k routed, == top_k shared
// expert, == top_k + 1 shared gate logit (one warp).
__global__ void __launch_bounds__(kMoeWarps * 32) moe_decode_gate_up_kernel(moe_decode_args a) {
  const int kinds = a.top_k + 2;
  const int t = blockIdx.x / kinds, k = blockIdx.x % kinds;
  const int i = blockIdx.y * kMoeWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint4* x = reinterpret_cast<const uint4*>(a.x + std::int64_t(t) * a.x_stride);
  const int h8 = a.hidden / 8;
  if (k == a.top_k + 1) {  // shared gate logit
    if (i != 0 || !a.w_shared_gate || !a.w_shared_gate_up) return;
    const uint4* w = reinterpret_cast<const uint4*>(a.w_shared_gate);
    float s = 0.f;
    for (int c = lane; c < h8; c += 32) s += dot8(__ldg(w + c), x[c]);
    s = warp_sum(s);
    if (lane == 0) a.sg[t] = s;
    return;
  }
  const bool shared = k == a.top_k;
  if (shared && !a.w_shared_gate_up) return;
  const int I = shared ? a.shared_inter : a.inter;
  if (i >= I) return;
  bf16* hp = a.h + std::int64_t(t * (a.top_k + 1) + k) * a.h_stride + i;
  const bf16* wbase;
  if (shared) {
    wbase = a.w_shared_gate_up;
  } else {
    const int e = a.ids[t * a.top_k + k];
    if (e < 0 || e >= a.n_experts) {
      if (lane == 0) st(hp, 0.f);
      return;
    }
    wbase = a.w_gate_up + std::int64_t(e) * 2 * I * a.hidden;
  }
  const uint4* wg = reinterpret_cast<const uint4*>(wbase + std::int64_t(i) * a.hidden);
  const uint4* wu = reinterpret_cast<const uint4*>(wbase + std::int64_t(I + i) * a.hidden);
  float g = 0.f, u = 0.f;
  int c = lane;
  for (; c + 96 < h8; c += 128) {
    uint4 g4[4], u4[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) g4[q] = __ldg(wg + c + 32 * q), u4[q] = __ldg(wu + c + 32 * q);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const uint4 xv = x[c + 32 * q];
      g += dot8(g4[q], xv);
      u += dot8(u4[q], xv);
    }
  }
  for (; c < h8; c += 32) {
    const uint4 xv = x[c];
    g += dot8(__ldg(wg + c), xv);
    u += dot8(__ldg(wu + c), xv);
  }
  g = warp_sum(g);
  u = warp_sum(u);
  if (lane == 0) {
    if (shared) {
      g = __bfloat162float(__float2bfloat16(g));
      u = __bfloat162float(__float2bfloat16(u));
    }
    st(hp, silu(g) * u);
  }
}

// grid (n_tokens, ceil(hidden / 8)): warp per output column j.
__global__ void __launch_bounds__(kMoeWarps * 32) moe_decode_down_kernel(moe_decode_args a) {
  const int t = blockIdx.x;
  const int j = blockIdx.y * kMoeWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (j >= a.hidden) return;
  const int i8 = a.inter / 8;
  float acc = 0.f;
  // Branch-free over k (an invalid id reads expert 0's row and adds 0) so the unrolled iterations' loads overlap.
#pragma unroll 2
  for (int k = 0; k < a.top_k; ++k) {
    const int e = a.ids[t * a.top_k + k];
    const bool valid = e >= 0 && e < a.n_experts;
    const uint4* w =
        reinterpret_cast<const uint4*>(a.w_down + (std::int64_t(valid ? e : 0) * a.hidden + j) * a.inter);
    const uint4* hp = reinterpret_cast<const uint4*>(a.h + std::int64_t(t * (a.top_k + 1) + k) * a.h_stride);
    float s = 0.f;
    for (int c = lane; c < i8; c += 32) s += dot8(__ldg(w + c), hp[c]);
    s = warp_sum(s);
    acc += valid ? a.weights[t * a.top_k + k] * s : 0.f;
  }
  if (a.w_shared_gate_up) {
    const int s8 = a.shared_inter / 8;
    const uint4* w = reinterpret_cast<const uint4*>(a.w_shared_down + std::int64_t(j) * a.shared_inter);
    const uint4* hp = reinterpret_cast<const uint4*>(a.h + std::int64_t(t * (a.top_k + 1) + a.top_k) * a.h_stride);
    float s = 0.f;
    for (int c = lane; c < s8; c += 32) s += dot8(__ldg(w + c), hp[c]);
    const float sh = __bfloat162float(__float2bfloat16(warp_sum(s)));
    acc += (a.w_shared_gate ? sigmoid(a.sg[t]) : 1.f) * sh;
  }
  if (lane == 0) st(a.out + std::int64_t(t) * a.out_stride + j, acc);
}


// ---- argmax of few rows -----------------------------------------------------------------------------------------
constexpr int kArgChunks = 64;
constexpr int kArgThreads = 256;
__device__ __forceinline__ bool arg_better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

__global__ void __launch_bounds__(kArgThreads) argmax_partial_kernel(int vocab, const float* logits, std::int64_t stride,
                                                                     float* pv, int* pi) {
  __shared__ float sv[kArgThreads / 32];
  __shared__ int si[kArgThreads / 32];
  const int row = blockIdx.y, chunk = blockIdx.x;
  const int len = (vocab + kArgChunks - 1) / kArgChunks;
  const int j0 = chunk * len, j1 = min(vocab, j0 + len);
  const float* l = logits + std::int64_t(row) * stride;
  float bv = -INFINITY;  // below every value NaN maps to, so an all -inf row still has a lowest-index maximum
  int bi = 0x7fffffff;
  for (int j = j0 + threadIdx.x; j < j1; j += kArgThreads) {
    float v = l[j];
    if (v != v) v = -FLT_MAX;
    if (arg_better(v, j, bv, bi)) bv = v, bi = j;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (arg_better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) sv[warp] = bv, si[warp] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kArgThreads / 32; ++w)
      if (arg_better(sv[w], si[w], bv, bi)) bv = sv[w], bi = si[w];
    pv[row * kArgChunks + chunk] = bv;
    pi[row * kArgChunks + chunk] = bi;
  }
}

__global__ void argmax_final_kernel(int n_rows, const float* pv, const int* pi, std::int32_t* ids) {
  const int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= n_rows) return;
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  for (int c = lane; c < kArgChunks; c += 32)
    if (arg_better(pv[row * kArgChunks + c], pi[row * kArgChunks + c], bv, bi))
      bv = pv[row * kArgChunks + c], bi = pi[row * kArgChunks + c];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (arg_better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  if (lane == 0) ids[row] = bi;
}

__global__ void spin_kernel(long long ns) {
  long long t0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  for (;;) {
    long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    if (t - t0 >= ns) break;
  }
}

template <int M>
status launch_gemv(const gemv_args& a, stream_t stream) {
  static int sms = 0;
  static bool attr_set = false;
  if (sms == 0) {
    int dev = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (sms <= 0) sms = 132;
  }
  if (!attr_set) {
    cudaFuncSetAttribute(gemv_small_kernel<M>, cudaFuncAttributeMaxDynamicSharedMemorySize, 160 * 1024);
    attr_set = true;
  }
  const std::size_t smem = std::size_t(M) * std::size_t(a.k) * 2;
  // Enough warps to cover every column once, at most ~8 blocks (64 warps) per SM resident; fewer blocks when x is
  // large so each block's staging of x is amortised over several columns.
  const int want = (a.n + kGemvWarps - 1) / kGemvWarps;
  const int per_sm = smem <= 24 * 1024 ? 8 : (smem <= 48 * 1024 ? 4 : 2);
  const int grid = std::max(1, std::min(want, sms * per_sm));
  gemv_small_kernel<M><<<grid, kGemvWarps * 32, smem, stream>>>(a);
  OPS_LAUNCHED("gemv_small_kernel");
  return status::success();
}
}  // namespace

status reset_states(const reset_states_args& a, stream_t stream) {
  OPS_REQUIRE(a.n_entries >= 0 && a.n_layers >= 0, "reset_states: negative sizes");
  if (a.n_entries == 0 || a.n_layers == 0) return status::success();
  OPS_REQUIRE(a.flags && a.slots && a.conv && a.rec, "reset_states: null pointer");
  reset_states_kernel<<<dim3(a.n_entries, a.n_layers), 256, 0, stream>>>(a);
  OPS_LAUNCHED("reset_states_kernel");
  return status::success();
}

status gdn_gates(const gdn_gates_args& a, stream_t stream) {
  OPS_REQUIRE(a.n_tokens >= 0 && a.n_v_heads > 0, "gdn_gates: n_tokens = ", a.n_tokens, ", n_v_heads = ", a.n_v_heads);
  if (a.n_tokens == 0) return status::success();
  OPS_REQUIRE(a.a && a.b && a.a_log && a.dt_bias && a.g && a.beta, "gdn_gates: null pointer");
  const std::int64_t n = std::int64_t(a.n_tokens) * a.n_v_heads;
  gdn_gates_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(a);
  OPS_LAUNCHED("gdn_gates_kernel");
  return status::success();
}

status gdn_recurrent_generic(const kernels::gdn_shape& sh, const kernels::gdn_args& a, stream_t stream) {
  OPS_REQUIRE(sh.n_seq >= 0 && sh.n_tokens >= 0 && sh.n_k_heads > 0 && sh.n_v_heads % sh.n_k_heads == 0,
              "gdn_recurrent_generic: bad shape (n_v_heads must be a multiple of n_k_heads)");
  OPS_REQUIRE(sh.d_k > 0 && sh.d_v > 0 && sh.d_k <= 128 && sh.d_v <= 128,
              "gdn_recurrent_generic: d_k = ", sh.d_k, ", d_v = ", sh.d_v, ": expected <= 128 each");
  if (sh.n_seq == 0) return status::success();
  OPS_REQUIRE(a.cu_seqlens && a.q && a.k && a.v && a.g && a.beta && a.out, "gdn_recurrent_generic: null pointer");
  const int threads = ((std::max(sh.d_k, sh.d_v) + 31) / 32) * 32;
  const std::size_t smem = (std::size_t(sh.d_k) * sh.d_v + 2 * sh.d_k + 2) * sizeof(float);
  if (smem > 48 * 1024) {  // 128 x 128 states: 65 KB, above the default limit
    const cudaError_t e = cudaFuncSetAttribute(gdn_generic_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               int(smem));
    if (e != cudaSuccess)
      return status::make(kernels::status_code::cuda_error,
                          concat("cudaFuncSetAttribute(gdn_generic_kernel) failed: ", cudaGetErrorString(e)));
  }
  gdn_generic_kernel<<<dim3(sh.n_v_heads, sh.n_seq), threads, smem, stream>>>(sh, a);
  OPS_LAUNCHED("gdn_generic_kernel");
  return status::success();
}

status qk_norm_rope(const qk_norm_rope_args& a, stream_t stream) {
  OPS_REQUIRE(a.n_tokens >= 0 && a.head_dim > 0 && a.head_dim <= 256 && a.rotary_dim % 2 == 0 &&
                  a.rotary_dim >= 0 && a.rotary_dim <= a.head_dim,
              "qk_norm_rope: head_dim = ", a.head_dim, ", rotary_dim = ", a.rotary_dim,
              ": expected head_dim <= 256 and an even rotary_dim <= head_dim");
  if (a.n_tokens == 0) return status::success();
  OPS_REQUIRE(a.q && a.k && a.q_w && a.k_w && a.positions && (a.rotary_dim == 0 || a.inv_freq),
              "qk_norm_rope: null pointer");
  qk_norm_rope_kernel<<<a.n_tokens, kNormWarps * 32, 0, stream>>>(a);
  OPS_LAUNCHED("qk_norm_rope_kernel");
  return status::success();
}

status attention_generic(const attention_generic_args& a, stream_t stream) {
  OPS_REQUIRE(a.n_tokens >= 0 && a.n_kv_heads > 0 && a.n_q_heads % a.n_kv_heads == 0 && a.head_dim > 0 &&
                  a.head_dim <= 256,
              "attention_generic: n_q_heads = ", a.n_q_heads, ", n_kv_heads = ", a.n_kv_heads,
              ", head_dim = ", a.head_dim);
  if (a.n_tokens == 0) return status::success();
  OPS_REQUIRE(a.q && a.gate && a.out && a.token_entry && a.positions && a.kv.k_cache && a.kv.v_cache &&
                  a.kv.block_tables && a.kv.block_size > 0,
              "attention_generic: null pointer");
  attention_generic_kernel<<<dim3(a.n_tokens, a.n_q_heads), 32, 0, stream>>>(a);
  OPS_LAUNCHED("attention_generic_kernel");
  return status::success();
}

status swiglu_generic(int n_rows, int inter, const bf16* in, std::int64_t in_stride, bf16* out,
                      std::int64_t out_stride, stream_t stream) {
  OPS_REQUIRE(n_rows >= 0 && inter > 0 && in_stride >= 2 * inter && out_stride >= inter, "swiglu_generic: bad sizes");
  if (n_rows == 0) return status::success();
  OPS_REQUIRE(in && out, "swiglu_generic: null pointer");
  const std::int64_t n = std::int64_t(n_rows) * inter;
  swiglu_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(n_rows, inter, in, in_stride, out, out_stride);
  OPS_LAUNCHED("swiglu_kernel");
  return status::success();
}

status moe_generic(const moe_generic_args& a, stream_t stream) {
  OPS_REQUIRE(a.n_tokens >= 0 && a.top_k > 0 && a.hidden > 0 && a.inter > 0 && a.n_experts > 0,
              "moe_generic: bad sizes");
  if (a.n_tokens == 0) return status::success();
  OPS_REQUIRE(a.x && a.ids && a.weights && a.w_gate_up && a.w_down && a.h && a.out, "moe_generic: null pointer");
  moe_gate_up_generic_kernel<<<dim3(a.n_tokens * a.top_k, (a.inter + kMoeWarps - 1) / kMoeWarps), kMoeWarps * 32, 0,
                               stream>>>(a);
  OPS_LAUNCHED("moe_gate_up_generic_kernel");
  moe_down_combine_generic_kernel<<<dim3(a.n_tokens, (a.hidden + kMoeWarps - 1) / kMoeWarps), kMoeWarps * 32, 0,
                                    stream>>>(a);
  OPS_LAUNCHED("moe_down_combine_generic_kernel");
  return status::success();
}

bool gemv_small_supported(const gemv_args& a) {
  auto aligned = [](const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; };
  return a.m >= 1 && a.m <= 8 && a.n >= 1 && a.k >= 8 && a.k % 8 == 0 && a.ldx % 8 == 0 && a.ldw % 8 == 0 &&
         a.ldx >= a.k && a.ldw >= a.k && a.ldy >= a.n && aligned(a.x) && aligned(a.w) &&
         std::size_t(a.m) * std::size_t(a.k) * 2 <= 160 * 1024;
}

status gemv_small(const gemv_args& a, stream_t stream) {
  OPS_REQUIRE(a.x && a.w && a.y, "gemv_small: null x, w or y");
  OPS_REQUIRE(gemv_small_supported(a), "gemv_small: m ", a.m, " n ", a.n, " k ", a.k, " ldx ", a.ldx, " ldw ", a.ldw,
              " ldy ", a.ldy, ": needs 1 <= m <= 8, k and strides multiples of 8, 16-byte aligned x and w, m*k*2 <= 160 KB");
  switch (a.m) {
    case 1: return launch_gemv<1>(a, stream);
    case 2: return launch_gemv<2>(a, stream);
    case 3: return launch_gemv<3>(a, stream);
    case 4: return launch_gemv<4>(a, stream);
    case 5: return launch_gemv<5>(a, stream);
    case 6: return launch_gemv<6>(a, stream);
    case 7: return launch_gemv<7>(a, stream);
    default: return launch_gemv<8>(a, stream);
  }
}

bool add_rmsnorm_rows_supported(const add_rmsnorm_args& a) {
  auto aligned = [](const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; };
  return a.n_rows >= 0 && a.dim >= 8 && a.dim % 8 == 0 && a.dim <= 8 * kNormThreads * kNormIter && a.x && a.w &&
         a.out && aligned(a.x) && aligned(a.w) && aligned(a.out) && a.x_stride % 8 == 0 && a.out_stride % 8 == 0 &&
         (!a.residual || (aligned(a.residual) && a.residual_stride % 8 == 0));
}

status add_rmsnorm_rows(const add_rmsnorm_args& a, stream_t stream) {
  OPS_REQUIRE(add_rmsnorm_rows_supported(a), "add_rmsnorm_rows: dim ", a.dim,
              ": needs a multiple of 8 <= 8192, non-null 16-byte aligned rows with strides multiples of 8");
  if (a.n_rows == 0) return status::success();
  add_rmsnorm_rows_kernel<<<a.n_rows, kNormThreads, 0, stream>>>(a);
  OPS_LAUNCHED("add_rmsnorm_rows_kernel");
  return status::success();
}

bool moe_decode_supported(const moe_decode_args& a) {
  auto aligned = [](const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; };
  const bool sh = a.w_shared_gate_up != nullptr;
  return a.n_tokens >= 0 && a.n_experts > 0 && a.top_k > 0 && a.hidden > 0 && a.inter > 0 && a.hidden % 8 == 0 &&
         a.inter % 8 == 0 && a.x_stride % 8 == 0 && a.h_stride % 8 == 0 && a.h_stride >= a.inter && a.x && a.ids &&
         a.weights && a.w_gate_up && a.w_down && a.h && a.out && aligned(a.x) && aligned(a.w_gate_up) &&
         aligned(a.w_down) && aligned(a.h) &&
         (!sh || (a.shared_inter > 0 && a.shared_inter % 8 == 0 && a.h_stride >= a.shared_inter && a.w_shared_down &&
                  aligned(a.w_shared_gate_up) && aligned(a.w_shared_down) &&
                  (!a.w_shared_gate || (aligned(a.w_shared_gate) && a.sg))));
}

status moe_decode(const moe_decode_args& a, stream_t stream) {
  OPS_REQUIRE(moe_decode_supported(a), "moe_decode: hidden ", a.hidden, " inter ", a.inter, " shared_inter ",
              a.shared_inter, ": needs multiples of 8, non-null 16-byte aligned operands, h_stride >= both inters");
  if (a.n_tokens == 0) return status::success();
  const int I = std::max(a.inter, a.w_shared_gate_up ? a.shared_inter : 0);
  moe_decode_gate_up_kernel<<<dim3(a.n_tokens * (a.top_k + 2), (I + kMoeWarps - 1) / kMoeWarps), kMoeWarps * 32, 0,
                              stream>>>(a);
  OPS_LAUNCHED("moe_decode_gate_up_kernel");
  moe_decode_down_kernel<<<dim3(a.n_tokens, (a.hidden + kMoeWarps - 1) / kMoeWarps), kMoeWarps * 32, 0, stream>>>(a);
  OPS_LAUNCHED("moe_decode_down_kernel");
  return status::success();
}

std::size_t argmax_rows_workspace_bytes(int n_rows) {
  return std::size_t(std::max(n_rows, 0)) * kArgChunks * (sizeof(float) + sizeof(int)) + 256;
}

status argmax_rows(int n_rows, int vocab, const float* logits, std::int64_t stride, std::int32_t* ids, void* workspace,
                   std::size_t workspace_bytes, stream_t stream) {
  OPS_REQUIRE(n_rows >= 0 && vocab > 0 && stride >= vocab, "argmax_rows: n_rows ", n_rows, " vocab ", vocab,
              " stride ", stride, ": expected stride >= vocab > 0");
  if (n_rows == 0) return status::success();
  OPS_REQUIRE(logits && ids && workspace && workspace_bytes >= argmax_rows_workspace_bytes(n_rows),
              "argmax_rows: null logits / ids / workspace, or workspace of ", workspace_bytes, " bytes < ",
              argmax_rows_workspace_bytes(n_rows));
  float* pv = static_cast<float*>(workspace);
  int* pi = reinterpret_cast<int*>(pv + std::size_t(n_rows) * kArgChunks);
  argmax_partial_kernel<<<dim3(kArgChunks, n_rows), kArgThreads, 0, stream>>>(vocab, logits, stride, pv, pi);
  OPS_LAUNCHED("argmax_partial_kernel");
  argmax_final_kernel<<<(n_rows + 7) / 8, 256, 0, stream>>>(n_rows, pv, pi, ids);
  OPS_LAUNCHED("argmax_final_kernel");
  return status::success();
}

status spin(long long ns, stream_t stream) {
  spin_kernel<<<1, 1, 0, stream>>>(ns);
  OPS_LAUNCHED("spin_kernel");
  return status::success();
}

}  // namespace evident::engine::cuda_ops
