// Partial rotary position embedding of Qwen3-Next attention (transformers apply_rotary_pos_emb with
// partial_rotary_factor 0.25: the first rotary_dim = 64 of head_dim = 256 rotate, the rest pass through), in the
// "rotate_half" (GPT-NeoX) pairing: element i pairs with i + rotary_dim/2.
//     inv_freq[i] = 1 / theta^(2i / rotary_dim)     angle = position * inv_freq[i]   (both fp32, as transformers)
//     x[i]        <- x[i] cos - x[i + half] sin
//     x[i + half] <- x[i + half] cos + x[i] sin            for i < half = rotary_dim / 2
// In place on bf16 x [n_tokens, n_heads, head_dim] with token stride and head stride in elements (q inside the
// q|gate projection has head stride 2 * head_dim). positions: int32 [n_tokens] (device memory for CUDA).
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/status.h"

namespace evident::kernels {

struct rope_args {
  int n_tokens = 0;
  int n_heads = 0;
  int head_dim = 256;
  int rotary_dim = 64;  // even, <= head_dim
  float theta = 10000000.f;
  bf16* x = nullptr;
  std::int64_t token_stride = 0;
  std::int64_t head_stride = 0;
  const std::int32_t* positions = nullptr;
};

status rope_apply(const rope_args& args, stream_t stream);
void rope_ref(const rope_args& args);  // host pointers, fp32

}  // namespace evident::kernels
