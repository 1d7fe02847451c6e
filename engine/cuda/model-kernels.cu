// engine/cuda's own kernels (contracts in model-kernels.h). Simple by design: they are glue or fallbacks for shapes
// kernels/ does not cover, so each favours obviously-correct indexing over speed.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <sstream>
#include <string>

#include "engine/cuda/model-kernels.h"

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
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
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

}  // namespace evident::engine::cuda_ops
