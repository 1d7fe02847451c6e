// Attention of Qwen3-Next's full-attention layers over a paged KV cache: GQA (n_q_heads / n_kv_heads query heads per
// KV head, repeat_kv mapping: query head h reads KV head h / group) and the sigmoid output gate
// (transformers Qwen3NextAttention: attn_output * sigmoid(gate)). q and k are expected normalised and rotated already
// (q_norm/k_norm through rmsnorm_residual, partial RoPE through rope_apply).
//
// Paged cache: fixed-size blocks of `block_size` token positions; a sequence's logical block b lives in physical
// block block_tables[seq * max_blocks_per_seq + b].
//     k_cache, v_cache  bf16 [n_blocks, block_size, n_kv_heads, head_dim]
//
// Decode (one query token per sequence, which attends to positions [0, seq_lens[s]) of its sequence, its own K/V
// included: write them with kv_cache_write first):
//     q     bf16 [n_seq, n_q_heads, head_dim]  token stride q_stride, head stride q_head_stride (q inside the q|gate
//                                             projection: head stride 2 * head_dim)
//     gate  bf16 [n_seq, n_q_heads, head_dim]  token stride gate_stride, head stride gate_head_stride
//     out   bf16 [n_seq, n_q_heads * head_dim] token stride out_stride
//     out = softmax(q k^T * scale) v * sigmoid(gate); a sequence of length 0 gets zeros.
// Split-KV: each sequence's positions are cut into n_splits ranges processed by separate blocks (fp32 partial
// max / sum / accumulator in the workspace), then merged; long contexts fill the GPU at batch 1.
// The CUDA kernels support head_dim == 256 and 8 query heads per KV head (16/2) only.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/status.h"

namespace evident::kernels {

struct paged_kv_view {
  bf16* k_cache = nullptr;
  bf16* v_cache = nullptr;
  int n_blocks = 0;
  int block_size = 16;
  const std::int32_t* block_tables = nullptr;  // int32 [n_seq, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
};

struct attention_decode_args {
  int n_seq = 0;
  int n_q_heads = 16;
  int n_kv_heads = 2;
  int head_dim = 256;
  float scale = 0.0625f;  // head_dim^-1/2
  int max_seq_len = 0;    // an upper bound of seq_lens (host-side: sizes the split)
  int n_splits = 0;       // 0: chosen from max_seq_len
  const bf16* q = nullptr;
  std::int64_t q_stride = 0, q_head_stride = 0;
  const bf16* gate = nullptr;
  std::int64_t gate_stride = 0, gate_head_stride = 0;
  const std::int32_t* seq_lens = nullptr;  // int32 [n_seq]
  paged_kv_view kv;
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
};

// The number of splits the decode kernel will use, and the fp32 workspace it needs.
int attention_decode_splits(const attention_decode_args& args);
std::size_t attention_decode_workspace_bytes(const attention_decode_args& args);

status attention_decode(const attention_decode_args& args, void* workspace, std::size_t workspace_bytes,
                        stream_t stream);

// Appends K/V rows to the cache: token t goes to slot slot_mapping[t] (= physical block * block_size + offset).
//     k, v bf16 [n_tokens, n_kv_heads, head_dim] with token strides; a negative slot skips the token.
struct kv_write_args {
  int n_tokens = 0;
  int n_kv_heads = 2;
  int head_dim = 256;
  const bf16* k = nullptr;
  std::int64_t k_stride = 0;
  const bf16* v = nullptr;
  std::int64_t v_stride = 0;
  const std::int32_t* slot_mapping = nullptr;  // int32 [n_tokens]
  paged_kv_view kv;
};
status kv_cache_write(const kv_write_args& args, stream_t stream);

// CPU references (host pointers; fp64 softmax).
void attention_decode_ref(const attention_decode_args& args);
void kv_cache_write_ref(const kv_write_args& args);

}  // namespace evident::kernels
