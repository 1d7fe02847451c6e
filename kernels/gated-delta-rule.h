// Gated delta rule (Gated DeltaNet's token mixer), as in transformers' modeling_qwen3_next.py
// (torch_chunk_gated_delta_rule / torch_recurrent_gated_delta_rule with use_qk_l2norm_in_kernel=True).
//
// For each sequence and value head hv (key head hk = hv / (n_v_heads / n_k_heads), the repeat_interleave mapping), with
// q_t, k_t L2-normalised (eps 1e-6 inside the rsqrt), q_t also scaled by 1/sqrt(d_k), and S the [d_k, d_v] state:
//     S   <- exp(g_t) * S
//     S   <- S + k_t (beta_t * (v_t - S^T k_t))^T
//     o_t  = S^T q_t
// The chunked form (prompts) computes the same thing 64 tokens at a time in the WY/UT form of flash-linear-attention:
// per chunk, T = (I + strict_lower(beta_i k_i.k_j exp(G_i - G_j)))^-1 with G the in-chunk cumulative sum of g, then
//     v_new = T (beta * (v - exp(G) * (K S)))      o = (exp(G) * Q) S + tril(Q K^T * exp(G_i - G_j)) v_new
//     S     = exp(G_last) S + (K * exp(G_last - G))^T v_new
//
// Layouts (token-major, as the projections produce them; strides are in elements between consecutive tokens, so q, k
// and v may point into one packed [n_tokens, 2*key_dim + value_dim] buffer):
//     q      bf16 [n_tokens, n_k_heads, d_k]   row stride q_stride
//     k      bf16 [n_tokens, n_k_heads, d_k]   row stride k_stride
//     v      bf16 [n_tokens, n_v_heads, d_v]   row stride v_stride
//     g      fp32 [n_tokens, n_v_heads]        log decay, <= 0 (= -exp(A_log) * softplus(a + dt_bias))
//     beta   fp32 [n_tokens, n_v_heads]        write strength (= sigmoid(b))
//     out    bf16 [n_tokens, n_v_heads, d_v]   row stride out_stride; every row of every sequence is written
//     state  fp32 [n_slots, n_v_heads, d_k, d_v]  (row-major [d_k][d_v]) recurrent state per slot
// Sequences are packed back to back: sequence s owns tokens [cu_seqlens[s], cu_seqlens[s+1]); cu_seqlens is int32
// [n_seq + 1] in DEVICE memory for the CUDA launchers and in host memory for the references; lengths may be zero.
// The state slot of sequence s is state_slots[s] (int32 [n_seq], device memory) or s when state_slots is null.
// initial_state null means zeros; final_state null means "do not write it"; they may alias (in-place update: each
// sequence's slot is read before it is written, by the same block). Slots of different sequences must differ.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/status.h"

namespace evident::kernels {

struct gdn_shape {
  int n_tokens = 0;    // total tokens over all sequences
  int n_seq = 0;       // number of sequences (cu_seqlens has n_seq + 1 entries)
  int n_k_heads = 16;  // query/key heads
  int n_v_heads = 32;  // value heads; a multiple of n_k_heads
  int d_k = 128;       // key/query head dim (the CUDA kernels support 128 only)
  int d_v = 128;       // value head dim (the CUDA kernels support 128 only)
};

// Device pointers for the CUDA launchers.
struct gdn_args {
  const bf16* q = nullptr;
  std::int64_t q_stride = 0;
  const bf16* k = nullptr;
  std::int64_t k_stride = 0;
  const bf16* v = nullptr;
  std::int64_t v_stride = 0;
  const float* g = nullptr;
  const float* beta = nullptr;
  const std::int32_t* cu_seqlens = nullptr;   // device int32 [n_seq + 1]
  const std::int32_t* state_slots = nullptr;  // device int32 [n_seq] or null
  const float* initial_state = nullptr;       // device fp32 [n_slots, n_v_heads, d_k, d_v] or null
  float* final_state = nullptr;               // device, same layout, or null
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
};

// Tuning knobs of the chunked kernel (0 = the default measured best).
struct gdn_chunked_options {
  bool wgmma = true;          // v15, the default where it runs (wgmma_available(): an sm_90a build on a compute
                              // capability 9.0 device; n_v_heads <= 2 n_k_heads): producer blocks prepare the chunks
                              // into the workspace, consumer blocks of 64 value columns run the scan on warpgroup MMAs,
                              // in one cooperative launch (or two launches where both do not fit on the GPU at once).
                              // The options below apply to the other paths (wgmma = false, or where v15 cannot run)
  int wgmma_variant = 0;      // v15, for tests and benchmarks: 3 = always the two launches (the fallback); 1 = the
                              // producers only, 2 = the consumers only, without waiting for producers, 4 = both, the
                              // consumers not waiting for the producers' flags (1, 2, 4: wrong results)
  int wgmma_producers = 0;    // v15, tests: at most this many producer blocks (0 = as many as fit), so that every
                              // producer warpgroup prepares several items
  int v_tile = 0;             // value columns per scan block: 16, 32 or 64 (default 32; the mma scan keeps 64
                              // without split_output: 3 stages do not fit in shared memory)
  int scan_warps = 0;         // wmma_scan only: warps per scan block, 8 or 16 (default 16)
  bool split_output = true;   // mma scan: the output product in separate warps, one chunk behind the state chain
  int scan_cluster = 0;       // mma scan with split_output, v_tile 16 or 32: the blocks of a value head in thread-block
                              // clusters of this many (2 or 4; sm_90 only) that load the shared chunk inputs once,
                              // by multicast bulk copies; 0 or 1 = no clusters (the default: clusters measured slower)
  bool wmma_scan = false;     // the previous (v7) WMMA scan with its shared-memory state, kept for comparison
  bool cooperative = true;    // mma scan, v_tile 32, split output, no clusters (the default): one cooperative launch
                              // whose blocks also prepare the chunks, beside the scan (v14: each block prepares
                              // every G-th chunk of its key head into the workspace and publishes it by a flag).
                              // Needs n_v_heads <= 2 n_k_heads and every block resident at once, else (or false)
                              // the separate preparation kernel, then the scan (v12b)
  int coop_variant = 0;       // cooperative, for benchmarks (1-3 and 5 give wrong results): 1 = consumers skip the flag
                              // waits, 2 = producers only, 3 = consumers only (no producers, no waits); 4 = q, k, T,
                              // P and the vectors by bulk copies; 5 = 4 with consumers only
  bool prepare_only = false;  // benchmarks: run only the per-chunk preparation kernel (outputs are not written)
};

// Bytes of device workspace gdn_chunked_forward needs for `shape` (per chunk, for at most n_tokens/64 + n_seq
// chunks: prepared q per value head (the WMMA scan; the mma scan uses a key head's share of it) and k per key head,
// T and masked QK^T in bf16, decays and betas in fp32, and a uint32 flag per chunk and key head for the cooperative
// scan; about 3x the bytes of q, k and v together).
std::size_t gdn_chunked_workspace_bytes(const gdn_shape& shape);

// Chunked prompt path (chunk 64). requires: d_k == d_v == 128; q, k, v and out 16-byte aligned with strides that
// are multiples of 8 elements; workspace >= gdn_chunked_workspace_bytes(...), 256-byte aligned. Enqueues on `stream`:
// a flag memset and one cooperative launch (v15 or v14) or two launches (v15's fallback, or v12b's two kernels).
status gdn_chunked_forward(const gdn_shape& shape, const gdn_args& args, void* workspace, std::size_t workspace_bytes,
                           stream_t stream, const gdn_chunked_options& options = {});

// Fused recurrent path: one token at a time in fp32, any lengths (decode is one token per sequence, with
// cu_seqlens = 0, 1, 2, ..., n_seq). requires: d_k == d_v == 128.
status gdn_recurrent_forward(const gdn_shape& shape, const gdn_args& args, stream_t stream);

// ---------------------------------------------------------------------------------------------------------------------
// CPU references (plain C++, always built). Contiguous layouts as above (strides = heads * dim), fp32 in and out,
// fp64 inside. cu_seqlens in host memory; the state slot of sequence s is s (initial_state / final_state hold n_seq
// slots; either may be null).
struct gdn_ref_io {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* g = nullptr;
  const float* beta = nullptr;
  const std::int32_t* cu_seqlens = nullptr;
  const float* initial_state = nullptr;
  float* final_state = nullptr;
  float* out = nullptr;
};

// Token-by-token recurrence (transformers' torch_recurrent_gated_delta_rule).
void gdn_recurrent_ref(const gdn_shape& shape, const gdn_ref_io& io);

// Chunked WY/UT form (transformers' torch_chunk_gated_delta_rule), chunk `chunk` tokens. Same function as the
// recurrence up to rounding; the unit tests check that in fp64.
void gdn_chunked_ref(const gdn_shape& shape, const gdn_ref_io& io, int chunk = 64);

}  // namespace evident::kernels
