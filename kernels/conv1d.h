// Causal depthwise conv1d with SiLU, as Qwen3-Next's GatedDeltaNet applies it to the packed q|k|v channels
// (transformers: F.silu(conv1d(x)[..., :seq_len]) for prompts, torch_causal_conv1d_update for decoding). No bias.
//
//     out[t][c] = silu( sum_{j=0}^{K-1} w[c][j] * x[t - (K-1) + j][c] )
// where x before a sequence's first token comes from its conv state (or is zero).
//
// Layouts:
//     x      bf16 [n_tokens, n_channels]       row stride x_stride (elements)
//     w      bf16 [n_channels, K]              (nn.Conv1d weight [C, 1, K] squeezed)
//     out    bf16 [n_tokens, n_channels]       row stride out_stride; may alias x only if the strides are equal
//                                              for conv1d_update (each element is read before it is written)
//     state  bf16 [n_slots, K-1, n_channels]   the last K-1 inputs of a sequence, oldest first (bf16 holds them
//                                              exactly). transformers keeps K columns; the oldest is never used.
// cu_seqlens int32 [n_seq + 1] (device memory for CUDA, host memory for the references); state_slots int32 [n_seq]
// or null (slot = sequence index). CUDA kernels support K in [2, 8].
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/status.h"

namespace evident::kernels {

struct conv1d_args {
  int n_tokens = 0;
  int n_seq = 0;
  int n_channels = 0;
  int kernel = 4;  // K
  const bf16* x = nullptr;
  std::int64_t x_stride = 0;
  const bf16* w = nullptr;
  const std::int32_t* cu_seqlens = nullptr;
  const std::int32_t* state_slots = nullptr;
  bf16* state = nullptr;       // null: zero history, nothing written back
  bool read_state = false;     // true: history from `state` (continuing a sequence); false: zeros
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
};

// Prompt path: every token of every sequence; afterwards state (if given) holds each sequence's last K-1 inputs.
// Two launches (the conv, then the state write-back, so that a state read and its overwrite never race).
status conv1d_forward(const conv1d_args& args, stream_t stream);

// Decode path: exactly one token per sequence (n_tokens == n_seq, cu_seqlens ignored and may be null), state required
// and always read, shifted in place.
status conv1d_update(const conv1d_args& args, stream_t stream);

// CPU reference of both (contiguous or strided as given; host pointers; fp32 math).
void conv1d_ref(const conv1d_args& args);

}  // namespace evident::kernels
