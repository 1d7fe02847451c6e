// MoE routing of Qwen3-Next (transformers Qwen3NextTopKRouter): softmax over the router logits in fp32, top-k,
// then (norm_topk_prob) the k probabilities renormalised to sum to 1.
//     logits   fp32 [n_tokens, n_experts] (row stride; the router projection through gemm_bf16 with fp32 output.
//              transformers rounds the logits to bf16 first: callers matching it bit for bit round them)
//     ids      int32 [n_tokens, top_k]  experts by decreasing probability; ties: the lower expert id first
//     weights  fp32 [n_tokens, top_k]
// CUDA: one warp per token; n_experts <= 1024, top_k <= 32.
//
// The routed experts of one MoE layer (transformers Qwen3NextSparseMoeBlock), in four launches, none of which needs
// the host to know how many rows each expert got (no device->host sync; CUDA-graph friendly):
//   1. moe_permute          ids -> expert_offsets, row_token, token_row (rows grouped by expert, stable by token)
//   2. moe_gate_up_swiglu   h[r]   = silu(x[row_token[r]] . Wg[e]^T) * (x[row_token[r]] . Wu[e]^T)   (grouped GEMM)
//   3. moe_down             y[r]   = h[r] . Wd[e]^T                                                   (grouped GEMM)
//   4. moe_combine          out[t] = sum_k weights[t,k] y[token_row[t,k]] + sigmoid(gate_logit[t]) shared[t]
//                                    (+ residual[t])
// The shared expert is three dense projections (gemm_bf16 with N = 2 * inter for gate|up, then swiglu, then down)
// and its gate one more (Linear(hidden, 1), fp32 output); moe_combine adds it.
// A "permuted row" r in [0, n_tokens * top_k) is one (token, k) pair; rows of expert e are
// [expert_offsets[e], expert_offsets[e + 1]), in increasing (token, k) order.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/gemm.h"
#include "kernels/status.h"

namespace evident::kernels {

struct moe_router_args {
  int n_tokens = 0;
  int n_experts = 512;
  int top_k = 10;
  bool renormalize = true;  // norm_topk_prob
  const float* logits = nullptr;
  std::int64_t logits_stride = 0;
  std::int32_t* ids = nullptr;
  float* weights = nullptr;
};

status moe_router(const moe_router_args& args, stream_t stream);
void moe_router_ref(const moe_router_args& args);  // host pointers; fp64 softmax

// 1. Permutation by expert.
//     ids             int32 [n_tokens, top_k] contiguous (moe_router's output). An id outside [0, n_experts) drops
//                     that (token, k): it gets no row and token_row = -1 (moe_combine skips it).
//     expert_offsets  int32 [n_experts + 1]; expert_offsets[0] = 0, expert_offsets[n_experts] = rows in use
//                     (n_tokens * top_k unless ids were dropped)
//     row_token       int32 [n_tokens * top_k]: the source token of each permuted row; entries past the rows in use
//                     are left unwritten
//     token_row       int32 [n_tokens * top_k]: the permuted row of (t, k) at index t * top_k + k, or -1
// Deterministic (the same ids give the same outputs bit for bit). Needs a caller-owned device workspace of
// moe_permute_workspace_bytes() bytes (no initialisation needed). CUDA: n_experts <= 4096.
struct moe_permute_args {
  int n_tokens = 0;
  int n_experts = 512;
  int top_k = 10;
  const std::int32_t* ids = nullptr;
  std::int32_t* expert_offsets = nullptr;
  std::int32_t* row_token = nullptr;
  std::int32_t* token_row = nullptr;
};
std::size_t moe_permute_workspace_bytes(const moe_permute_args& args);
status moe_permute(const moe_permute_args& args, void* workspace, std::size_t workspace_bytes, stream_t stream);
void moe_permute_ref(const moe_permute_args& args);  // host pointers

// 2. Grouped GEMM with the SwiGLU fused, over the permuted rows:
//     x          bf16 [n_tokens, hidden]  row stride x_stride (the post-attention-norm hidden states)
//     w_gate_up  bf16 [n_experts, 2 * inter, hidden] contiguous: rows 0..inter-1 of expert e are gate_proj,
//                rows inter..2*inter-1 up_proj (transformers' per-expert gate_proj / up_proj stacked)
//     h          bf16 [n_rows, inter]  row stride h_stride; row r = silu(g) * u with g, u the fp32 dot products,
//                rounded to bf16 once. Rows past expert_offsets[n_experts] are not written.
// n_rows (host) is an upper bound of expert_offsets[n_experts]: n_tokens * top_k. It sizes the grid; only experts
// with rows do work (each active expert's weights are read once per 16- or 128-row tile).
// Prefill tiling on sm_90a (wgmma_available()): wgmma.m64n256k16 from 128-byte-swizzled shared tiles fed by a
// 4-stage cp.async pipeline; the same products in fp32 (summation order differs from the mma.sync path).
// fp32 accumulation on tensor cores (mma.sync bf16). CUDA: hidden and inter multiples of 8, x / w / h 16-byte
// aligned with strides multiples of 8 elements.
struct moe_gate_up_args {
  int n_rows = 0;
  int n_experts = 512;
  int hidden = 2048;
  int inter = 512;
  const std::int32_t* expert_offsets = nullptr;  // int32 [n_experts + 1] (moe_permute)
  const std::int32_t* row_token = nullptr;       // int32 [n_rows] (moe_permute)
  const bf16* x = nullptr;
  std::int64_t x_stride = 0;
  const bf16* w_gate_up = nullptr;
  bf16* h = nullptr;
  std::int64_t h_stride = 0;
  int tile_m = 0;  // 0: chosen from n_rows / n_experts (prefill sizes: the wgmma tiling where wgmma_available());
                   // 16 or 128 forces the decode or the mma.sync prefill tiling, 256 the sm_90a wgmma tiling (tests)
};
status moe_gate_up_swiglu(const moe_gate_up_args& args, stream_t stream);
void moe_gate_up_swiglu_ref(const moe_gate_up_args& args);  // fp64 dot products of the bf16 inputs

// 3. Grouped GEMM down:
//     h       bf16 [n_rows, inter]  row stride h_stride (permuted rows, from moe_gate_up_swiglu)
//     w_down  bf16 [n_experts, hidden, inter] contiguous (per-expert down_proj)
//     y       bf16 or fp32 [n_rows, hidden]  row stride y_stride; rows past expert_offsets[n_experts] not written
// Same constraints as moe_gate_up_swiglu.
struct moe_down_args {
  int n_rows = 0;
  int n_experts = 512;
  int hidden = 2048;
  int inter = 512;
  const std::int32_t* expert_offsets = nullptr;
  const bf16* h = nullptr;
  std::int64_t h_stride = 0;
  const bf16* w_down = nullptr;
  void* y = nullptr;  // bf16* or float* per y_type
  std::int64_t y_stride = 0;
  gemm_out y_type = gemm_out::fp32;
  int tile_m = 0;  // as in moe_gate_up_args
};
status moe_down(const moe_down_args& args, stream_t stream);
void moe_down_ref(const moe_down_args& args);  // fp64 dot products, rounded to y_type

// 4. Un-permute with the weighted sum, the shared expert with its sigmoid gate, the residual:
//     out[t] = sum_k weights[t, k] * y[token_row[t * top_k + k]]                    (skipped where token_row < 0)
//            + sigmoid(shared_gate_logit[t * shared_gate_stride]) * shared[t]     (if shared != nullptr)
//            + residual[t]                                                        (if residual != nullptr)
//     weights  fp32 [n_tokens, top_k] contiguous (moe_router's output)
//     y        bf16 or fp32 [n_tokens * top_k, hidden] row stride y_stride (moe_down's output)
//     shared   bf16 [n_tokens, hidden] row stride shared_stride; shared_gate_logit fp32, element stride
//              shared_gate_stride (the Linear(hidden, 1) output through gemm_bf16 with fp32 output)
//     residual bf16 [n_tokens, hidden] row stride residual_stride; may alias out (same pointer and stride)
//     out      bf16 [n_tokens, hidden] row stride out_stride
// fp32 accumulation in the order k = 0..top_k-1, shared, residual; rounded to bf16 once.
// CUDA: hidden a multiple of 8, bf16 pointers 16-byte aligned, strides multiples of 8 elements (fp32 y: 4).
struct moe_combine_args {
  int n_tokens = 0;
  int top_k = 10;
  int hidden = 2048;
  const float* weights = nullptr;
  const std::int32_t* token_row = nullptr;
  const void* y = nullptr;
  std::int64_t y_stride = 0;
  gemm_out y_type = gemm_out::fp32;
  const bf16* shared = nullptr;
  std::int64_t shared_stride = 0;
  const float* shared_gate_logit = nullptr;
  std::int64_t shared_gate_stride = 1;
  const bf16* residual = nullptr;
  std::int64_t residual_stride = 0;
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
};
status moe_combine(const moe_combine_args& args, stream_t stream);
void moe_combine_ref(const moe_combine_args& args);  // fp64

// SwiGLU on a gate|up projection (the shared expert):
//     in   bf16 [n_rows, 2 * inter] row stride in_stride: columns 0..inter-1 gate, inter..2*inter-1 up
//     out  bf16 [n_rows, inter]     row stride out_stride;  out = silu(gate) * up in fp32, rounded to bf16 once
// CUDA: inter a multiple of 8, pointers 16-byte aligned, strides multiples of 8 elements.
struct swiglu_args {
  int n_rows = 0;
  int inter = 512;
  const bf16* in = nullptr;
  std::int64_t in_stride = 0;
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
};
status swiglu(const swiglu_args& args, stream_t stream);
void swiglu_ref(const swiglu_args& args);

}  // namespace evident::kernels
