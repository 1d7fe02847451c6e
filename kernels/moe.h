// MoE routing of Qwen3-Next (transformers Qwen3NextTopKRouter): softmax over the router logits in fp32, top-k,
// then (norm_topk_prob) the k probabilities renormalised to sum to 1.
//     logits   fp32 [n_tokens, n_experts] (row stride; the router projection through gemm_bf16 with fp32 output.
//              transformers rounds the logits to bf16 first: callers matching it bit for bit round them)
//     ids      int32 [n_tokens, top_k]  experts by decreasing probability; ties: the lower expert id first
//     weights  fp32 [n_tokens, top_k]
// CUDA: one warp per token; n_experts <= 1024, top_k <= 32.
// Not yet here (see docs/kernels.md): token permutation by expert, grouped expert GEMM with fused SwiGLU, un-permute
// with the weighted sum, shared expert with its sigmoid gate.
#pragma once

#include <cstdint>

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

}  // namespace evident::kernels
