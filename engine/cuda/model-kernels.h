// engine/cuda's own kernels: glue the model needs between kernels/ launchers, and generic (any-shape, simple)
// fallbacks for the ops whose fast kernels in kernels/ support only Qwen3-Next-80B's real head shapes (the tiny
// transformers fixtures have head_dim 16-32 and DeltaNet heads of 16-32). Same conventions as kernels/: raw device
// pointers, sizes and strides in elements, a stream; a status is returned, arguments are checked before launching.
// Standard library only (the .cu holds the CUDA code).
//
// Numerics: fp32 inside every kernel, inputs/outputs bf16 where the model keeps bf16 activations, rounded once.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/bf16.h"
#include "kernels/gated-delta-rule.h"
#include "kernels/status.h"

namespace evident::engine::cuda_ops {

using kernels::bf16;
using kernels::status;
using kernels::stream_t;

// Zeroes the DeltaNet state (conv + recurrent, every linear layer) of entries with flags[e] != 0, i.e. sequences
// that start in this step. Layer l's conv state of slot s is conv + l * conv_layer_stride + s * conv_slot_elems
// (bf16 elements), its recurrent state rec + l * rec_layer_stride + s * rec_slot_elems (fp32 elements).
// flags, slots: int32 [n_entries] device.
struct reset_states_args {
  int n_entries = 0;
  int n_layers = 0;
  const std::int32_t* flags = nullptr;
  const std::int32_t* slots = nullptr;
  bf16* conv = nullptr;
  std::int64_t conv_layer_stride = 0, conv_slot_elems = 0;
  float* rec = nullptr;
  std::int64_t rec_layer_stride = 0, rec_slot_elems = 0;
};
status reset_states(const reset_states_args& a, stream_t stream);

// DeltaNet gates: beta = sigmoid(b), g = -exp(A_log) * softplus(a + dt_bias) (softplus(x) = x above 20), in fp32.
//     b, a   bf16 [n_tokens, n_v_heads] at row stride `stride` (columns inside the fused input projection)
//     a_log, dt_bias  fp32 [n_v_heads]       g, beta  fp32 [n_tokens, n_v_heads] contiguous
struct gdn_gates_args {
  int n_tokens = 0;
  int n_v_heads = 0;
  const bf16* b = nullptr;
  const bf16* a = nullptr;
  std::int64_t stride = 0;
  const float* a_log = nullptr;
  const float* dt_bias = nullptr;
  float* g = nullptr;
  float* beta = nullptr;
};
status gdn_gates(const gdn_gates_args& a, stream_t stream);

// The gated delta rule token by token (kernels/gated-delta-rule.h semantics, L2-normalisation of q and k and the
// 1/sqrt(d_k) scale included) for ANY head dims d_k, d_v <= 128: one block per (value head, sequence), the fp32
// state in shared memory (up to 65 KB: opts in to large dynamic shared memory). Any sequence lengths (prompts too).
// Fallback only.
status gdn_recurrent_generic(const kernels::gdn_shape& shape, const kernels::gdn_args& args, stream_t stream);

// q_norm / k_norm (zero-centred RMSNorm, weight applied as 1 + w) and partial RoPE (rotate_half pairing) in one
// pass, in place, fp32 between the two (one bf16 rounding at the end):
//     q  bf16 [n_tokens, n_q_heads, head_dim]   token stride q_stride, head stride q_head_stride
//     k  bf16 [n_tokens, n_kv_heads, head_dim]  token stride k_stride, head stride head_dim
//     q_w, k_w bf16 [head_dim]     inv_freq fp32 [rotary_dim / 2]     positions int32 [n_tokens]
// requires: head_dim <= 256, rotary_dim even and <= head_dim.
struct qk_norm_rope_args {
  int n_tokens = 0;
  int n_q_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int rotary_dim = 0;
  float eps = 1e-6f;
  bf16* q = nullptr;
  std::int64_t q_stride = 0, q_head_stride = 0;
  bf16* k = nullptr;
  std::int64_t k_stride = 0;
  const bf16* q_w = nullptr;
  const bf16* k_w = nullptr;
  const float* inv_freq = nullptr;
  const std::int32_t* positions = nullptr;
};
status qk_norm_rope(const qk_norm_rope_args& a, stream_t stream);

// Causal attention over the paged cache for any head_dim <= 256 and any GQA ratio, one token per warp-block:
// token t attends to positions [0, positions[t]] of the sequence whose block-table row is token_entry[t]
// (kv.block_tables is int32 [rows, kv.max_blocks_per_seq]); out = softmax(q k^T * scale) v * sigmoid(gate), fp32
// online softmax. q/gate/out as in kernels/attention.h. Slow (positions one after the other); fallback only.
struct attention_generic_args {
  int n_tokens = 0;
  int n_q_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 0.f;
  const bf16* q = nullptr;
  std::int64_t q_stride = 0, q_head_stride = 0;
  const bf16* gate = nullptr;
  std::int64_t gate_stride = 0, gate_head_stride = 0;
  const std::int32_t* token_entry = nullptr;  // int32 [n_tokens]
  const std::int32_t* positions = nullptr;    // int32 [n_tokens]
  kernels::paged_kv_view kv;
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
};
status attention_generic(const attention_generic_args& a, stream_t stream);

// SwiGLU on a gate|up projection: out[r][i] = bf16(silu(in[r][i]) * in[r][inter + i]).
//     in bf16 [n_rows, 2 * inter] row stride in_stride      out bf16 [n_rows, inter] row stride out_stride
status swiglu_generic(int n_rows, int inter, const bf16* in, std::int64_t in_stride, bf16* out,
                      std::int64_t out_stride, stream_t stream);

// The routed experts without permutation (fallback; one warp per output element, weights re-read per token):
//     h[t*top_k + k][i] = bf16(silu(x[t] . Wg[e][i]) * (x[t] . Wu[e][i]))            e = ids[t][k]
//     out[t][j]         = bf16( sum_k weights[t][k] * (h[t*top_k + k] . Wd[e][j])
//                               + sigmoid(shared_gate[t]) * shared[t][j] )             (shared part if shared)
//     x bf16 [n_tokens, hidden] (x_stride); ids int32 / weights fp32 [n_tokens, top_k]; w_gate_up bf16
//     [n_experts, 2 * inter, hidden]; w_down bf16 [n_experts, hidden, inter]; h bf16 [n_tokens * top_k, inter]
//     (scratch); shared bf16 [n_tokens, hidden] (shared_stride) or null; shared_gate fp32 [n_tokens] or null (gate 1);
//     out bf16 [n_tokens, hidden] (out_stride). An id outside [0, n_experts) contributes nothing.
struct moe_generic_args {
  int n_tokens = 0;
  int n_experts = 0;
  int top_k = 0;
  int hidden = 0;
  int inter = 0;
  const bf16* x = nullptr;
  std::int64_t x_stride = 0;
  const std::int32_t* ids = nullptr;
  const float* weights = nullptr;
  const bf16* w_gate_up = nullptr;
  const bf16* w_down = nullptr;
  bf16* h = nullptr;
  const bf16* shared = nullptr;
  std::int64_t shared_stride = 0;
  const float* shared_gate = nullptr;
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
};
status moe_generic(const moe_generic_args& a, stream_t stream);

// Small-M projection (decode): y[m][j] = sum_k x[m][k] * w[j][k] for m <= 8 rows, fp32 accumulation, one rounding to
// the output type. Reads each weight row once for all m rows with 16-byte loads (a warp per output column j), so it
// runs near the copy bandwidth where cuBLAS at M = 1..8 may not. Same layout as kernels::gemm_args:
//     x bf16 [m, k] (row stride ldx)   w bf16 [n, k] (row stride ldw)   y bf16 or fp32 [m, n] (row stride ldy)
// requires: 1 <= m <= 8, k % 8 == 0, ldx % 8 == 0, ldw % 8 == 0, x and w 16-byte aligned, m * k * 2 bytes <= 160 KB
// (x is staged in shared memory). gemv_small_supported() answers whether these hold.
struct gemv_args {
  int m = 0, n = 0, k = 0;
  const bf16* x = nullptr;
  std::int64_t ldx = 0;
  const bf16* w = nullptr;
  std::int64_t ldw = 0;
  void* y = nullptr;
  std::int64_t ldy = 0;
  bool y_fp32 = false;
};
bool gemv_small_supported(const gemv_args& a);
status gemv_small(const gemv_args& a, stream_t stream);

// The whole sparse-MoE block for few tokens (decode) in two launches, weights read with 16-byte loads, a warp per
// output element (replaces shared gate_up / swiglu / shared down / shared gate / permute / grouped gate_up / down /
// combine: 8 launches of ~5-20 us at one token):
//   1. per token t: for k < top_k (e = ids[t][k]; e outside [0, n_experts): h row = 0)
//        h[t*(top_k+1) + k][i] = bf16(silu(x[t] . Wg[e][i]) * (x[t] . Wu[e][i]))          (as moe_gate_up_swiglu)
//      the shared expert (if w_shared_gate_up), as gemm_bf16 (bf16 out) + swiglu do it:
//        h[t*(top_k+1) + top_k][i] = bf16(silu(bf16(x[t] . Wsg[i])) * bf16(x[t] . Wsu[i]))
//      and its gate logit (if w_shared_gate) sg[t] = x[t] . w_shared_gate (fp32)
//   2. out[t][j] = bf16( sum_k weights[t][k] * (h[t*(top_k+1)+k] . Wd[e][j])                (k = 0..top_k-1)
//                        + sigmoid(sg[t]) * bf16(h[t*(top_k+1)+top_k] . Wsd[j]) )           (as moe_down + combine)
//   x bf16 [n_tokens, hidden] (x_stride); ids int32 / weights fp32 [n_tokens, top_k]; w_gate_up bf16 [n_experts,
//   2*inter, hidden]; w_down bf16 [n_experts, hidden, inter]; w_shared_gate_up bf16 [2*shared_inter, hidden];
//   w_shared_down bf16 [hidden, shared_inter]; w_shared_gate bf16 [hidden] (null: gate 1); h bf16 scratch
//   [n_tokens*(top_k+1), h_stride >= max(inter, shared_inter)]; sg fp32 scratch [n_tokens]; out bf16 (out_stride).
// requires: hidden, inter, shared_inter, strides multiples of 8, pointers 16-byte aligned (moe_decode_supported()).
struct moe_decode_args {
  int n_tokens = 0, n_experts = 0, top_k = 0, hidden = 0, inter = 0, shared_inter = 0;
  const bf16* x = nullptr;
  std::int64_t x_stride = 0;
  const std::int32_t* ids = nullptr;
  const float* weights = nullptr;
  const bf16* w_gate_up = nullptr;
  const bf16* w_down = nullptr;
  const bf16* w_shared_gate_up = nullptr;
  const bf16* w_shared_down = nullptr;
  const bf16* w_shared_gate = nullptr;
  bf16* h = nullptr;
  std::int64_t h_stride = 0;
  float* sg = nullptr;
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
};
bool moe_decode_supported(const moe_decode_args& a);
status moe_decode(const moe_decode_args& a, stream_t stream);

// Residual add + zero-centred RMSNorm for few rows (decode), one block per row (kernels::rmsnorm_residual's warp per
// row walks a 2048-wide row in 16 dependent steps: ~20 us at one row on H200). Same math as kernels::rmsnorm_residual:
//     residual != null: h = bf16(x + residual), written back to residual; else h = x
//     out = bf16(h * rsqrt(mean(h^2) + eps) * (1 + w))                    (fp32 inside; sum order differs)
//     x, residual, out bf16 [n_rows, dim] (row strides x_stride, residual_stride, out_stride); w bf16 [dim]
// requires: dim % 8 == 0, dim <= 8192, 16-byte aligned rows (add_rmsnorm_rows_supported()).
struct add_rmsnorm_args {
  int n_rows = 0, dim = 0;
  float eps = 1e-6f;
  const bf16* x = nullptr;
  std::int64_t x_stride = 0;
  bf16* residual = nullptr;
  std::int64_t residual_stride = 0;
  const bf16* w = nullptr;
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
};
bool add_rmsnorm_rows_supported(const add_rmsnorm_args& a);
status add_rmsnorm_rows(const add_rmsnorm_args& a, stream_t stream);

// Greedy argmax of few long rows in two launches (kernels::sample_greedy runs one block per row: ~23 us for one row of
// 151936 on H200). Same contract: ids[r] = the lowest index among the maxima of row r, NaN never wins (counts as
// -FLT_MAX); order-independent, so the result equals sample_greedy's. A row of all -inf answers 0 (kernels::sample_greedy
// answers 2147483647 there: its running maximum starts at -FLT_MAX, as this kernel's did before test_engine_model_kernels).
//     logits fp32 [n_rows, vocab] (row stride `stride`)   ids int32 [n_rows]
//     workspace: argmax_rows_workspace_bytes(n_rows) bytes of device memory
std::size_t argmax_rows_workspace_bytes(int n_rows);
status argmax_rows(int n_rows, int vocab, const float* logits, std::int64_t stride, std::int32_t* ids, void* workspace,
                   std::size_t workspace_bytes, stream_t stream);

// Keeps the stream busy for about `ns` nanoseconds (profiling: the host enqueues a whole step behind it, so the
// per-op event times that follow measure the GPU, not the launch rate of the host).
status spin(long long ns, stream_t stream);

}  // namespace evident::engine::cuda_ops
