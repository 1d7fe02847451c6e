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

// Prefill (varlen, chunked): sequence s brings n_new[s] = cu_q[s + 1] - cu_q[s] query tokens at positions
// [seq_lens[s] - n_new[s], seq_lens[s]); query token i of s (row cu_q[s] + i of q/gate/out) attends to cache positions
// [0, seq_lens[s] - n_new[s] + i] (the cached prefix + causal within the chunk). Write the chunk's K/V with
// kv_cache_write first. seq_lens[s] >= n_new[s] >= 0 is the caller's promise (a violation leaves those rows
// unspecified but reads nothing out of the block tables' range [0, ceil(seq_lens[s] / block_size))).
//     q     bf16 [n_tokens, n_q_heads, head_dim]  token stride q_stride, head stride q_head_stride
//     gate  bf16 [n_tokens, n_q_heads, head_dim]  token stride gate_stride, head stride gate_head_stride
//     out   bf16 [n_tokens, n_q_heads * head_dim] token stride out_stride
//     out = softmax(q k^T * scale) v * sigmoid(gate)
// Flash-attention-2 style: one block per (tile of 128 (token, head) rows of one KV head, sequence); fp32 online softmax
// (running max / sum, rescaled accumulator in registers); Q K^T and P V on tensor cores (fp32 accumulate; P rounded
// to bf16 as in flash-attention). No workspace. On an sm_90a build on a compute capability 9.0 device
// (wgmma_available()) the default runs on warpgroup MMAs (wgmma: 2 consumer warpgroups x 64 rows in ping-pong
// and a producer warpgroup, K/V tiles of 64 positions, P V with P from registers); elsewhere, and with tile_rows
// forced, on mma.sync.
// CUDA: head_dim == 256, n_q_heads / n_kv_heads a divisor of 64; q/gate/out and the caches 16-byte aligned with
// strides multiples of 8 elements.
struct attention_prefill_args {
  int n_seq = 0;
  int n_tokens = 0;  // cu_q[n_seq]: rows of q / gate / out
  int max_n_new = 0; // host-side upper bound of n_new[s] (sizes the grid)
  int n_q_heads = 16;
  int n_kv_heads = 2;
  int head_dim = 256;
  float scale = 0.0625f;
  const std::int32_t* cu_q = nullptr;      // int32 [n_seq + 1], cu_q[0] = 0, non-decreasing
  const std::int32_t* seq_lens = nullptr;  // int32 [n_seq]: the context length after this chunk
  const bf16* q = nullptr;
  std::int64_t q_stride = 0, q_head_stride = 0;
  const bf16* gate = nullptr;
  std::int64_t gate_stride = 0, gate_head_stride = 0;
  paged_kv_view kv;
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
  int tile_rows = 0;  // 0: the default (sm_90a build on a 9.0 device: the wgmma kernel, else 128 rows / 8 warps of
                      // mma.sync); 128 or 64 force the mma.sync kernel with 128 rows / 8 warps or 64 rows / 4 warps
  int wgmma_overlap = 0;  // wgmma kernel only: 1 = the variant that overlaps the softmax of tile j with P V of tile
                          // j - 1 (both warpgroups in lockstep), 2 = the warp-specialized one (a producer warpgroup,
                          // 2 consumer warpgroups in ping-pong), -1 = the plain one, 0 = the default: warp-specialized
                          // (EVIDENT_ATTN_PREFILL_OVERLAP=1: overlap; EVIDENT_ATTN_PREFILL_WS=0: plain)
};
status attention_prefill(const attention_prefill_args& args, stream_t stream);

// CPU references (host pointers; fp64 softmax).
void attention_decode_ref(const attention_decode_args& args);
void kv_cache_write_ref(const kv_write_args& args);
void attention_prefill_ref(const attention_prefill_args& args);

}  // namespace evident::kernels
