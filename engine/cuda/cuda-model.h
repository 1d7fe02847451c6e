// engine::cuda_model: the Qwen3-Next forward pass on one CUDA device, batched over many sequences.
//
// Same math as engine::qwen3next_model (the CPU engine, which matches transformers), computed the way a bf16 engine
// does: weights bf16 on the GPU, activations bf16 between ops (the residual stream too), fp32 accumulation in every
// product, DeltaNet recurrent state / A_log / dt_bias / decay / router softmax / logits in fp32.
//
// This header includes no CUDA header (the stream is kernels::stream_t, i.e. cudaStream_t).
//
// ---------------------------------------------------------------------------------------------------------------------
// Memory (all allocated once, at load; nothing is allocated per step):
//   weights      bf16. Experts stacked: gate_up [E, 2*moe_inter, hidden] (gate rows first), down [E, hidden,
//                moe_inter]. Attention q|k|v fused into one [n_heads*2*head_dim + 2*n_kv*head_dim, hidden] matrix;
//                DeltaNet in_proj_qkvz + in_proj_ba fused and regrouped to [q all heads | k | v | z | b | a].
//   KV cache     per attention layer: k, v bf16 [kv_blocks, block_size, n_kv_heads, head_dim]; one block table per
//                sequence serves every layer (engine/cuda/sequence-slots.h does the bookkeeping).
//   DeltaNet     per linear layer: conv state bf16 [max_sequences + 1, K-1, conv_dim], recurrent state fp32
//                [max_sequences + 1, n_v_heads, d_k, d_v]; slot max_sequences is the scratch slot of padding entries.
//   step buffers activations for max_step_tokens tokens, metadata for max_step_entries entries, logits fp32
//                [max_logit_rows, vocab] (device) + the pinned staging buffers of the step metadata.
// Out of memory is a clear error: load() checks cudaMemGetInfo before allocating and throws evident::error
// (resource) naming what did not fit, how much it needed and how much was free; open_sequence() and can_step()
// answer "no room" with a reason.
//
// ---------------------------------------------------------------------------------------------------------------------
// A step is one forward over a batch of entries. Each entry is (sequence slot, token ids, start position): a prompt
// chunk (n_tokens >= 1 starting where the sequence stands) or a single decode token. Prefill chunks and decode
// tokens mix freely in one step (varlen: the tokens are packed back to back, cu_seqlens drive conv1d and the gated
// delta rule, a slot mapping drives the KV-cache writes, block tables drive attention). A sequence appears at most
// once per step. An entry whose start is 0 begins the sequence: its DeltaNet state is zeroed inside the step.
//
// Two ways to run a step:
//   step(batch, logits)                        one call: prepare + launch + wait + copy logits to the host.
//   prepare(batch) ; launch(stream) ; ...      split, for the scheduler and for CUDA graphs:
//       prepare()   host only: validates, grows the sequences' block tables, writes the step metadata into pinned
//                   host staging (ids, positions, slot mapping, block tables, cu_seqlens, state slots, logit rows).
//                   Not graph-safe (it is host code; run it before each replay).
//       launch()    enqueues on `stream`: one async copy of the staging to device memory, then every kernel. No
//                   allocation, no host synchronisation, no host-visible results. GRAPH-SAFE (capturable) when the
//                   prepared batch is decode-only and padded (prepare's pad_entries): then every pointer and every
//                   launch shape depends only on the padded entry count (the bucket), so a graph captured for a
//                   bucket replays for any decode batch prepared with that bucket.
//                   Caveat for capture: the cuBLAS handle (kernels::gemm_context, owned here) must have a workspace
//                   set so cuBLAS does not allocate during capture; capture after one warm-up launch per bucket.
//       logits()    device fp32 [n_logit_rows, vocab] of the last launch, rows in the order of prepare's answer.
//       read_logits(host) waits for the stream and copies them.
//   Graphs: a captured launch records no event (an event recorded inside a capture cannot be waited on); each replay
//   copies the staging when it runs, so the caller calls replayed(stream) after enqueuing a replay, and the next
//   prepare() waits for that replay's copy before rewriting the staging.
//
// Thread-safety: one thread drives a cuda_model (prepare/launch/step/open/close are not re-entrant).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/cuda/sequence-slots.h"
#include "engine/model-config.h"
#include "engine/models/qwen3next.h"  // tensor_lookup
#include "kernels/status.h"

namespace evident::engine {

// Runtime parameters (model hyper-parameters come from config.json).
struct cuda_model_options {
  int device = 0;                  // CUDA device ordinal
  int max_sequences = 64;          // sequence slots (DeltaNet state) = the most sequences open at once
  int block_size = 16;             // KV-cache block, in token positions
  std::int64_t max_context = 32768;  // most positions one sequence may hold (sizes the block tables)
  int max_step_tokens = 2048;      // most tokens in one step (sum over entries); sizes the activation buffers
  int max_step_entries = 256;      // most entries in one step (padding included)
  int max_logit_rows = 256;        // most logit rows one step returns (one per entry, or all tokens with all_logits)
  std::int64_t kv_blocks = 0;      // KV blocks; 0 = as many as fit in kv_memory_fraction of the memory left after
                                   // weights, states and step buffers
  double kv_memory_fraction = 0.9; // (kv_blocks == 0) share of the remaining free memory given to the KV cache
  bool use_generic_kernels = false;  // force engine/cuda's generic kernels even where kernels/ has a fast one (tests)
  bool record_routing = false;     // keep each sparse-MoE layer's router logits and chosen ids of the last launch
                                   // (read_routing(); tests). Costs one device buffer and two device copies a layer
  int gemv_max_m = 1;              // projections of at most this many rows (decode) and at most 2^24 weights use
                                   // engine/cuda's gemv_small instead of cuBLAS; 0 = cuBLAS always
  bool fast_decode = true;         // decode-sized steps use engine/cuda's block-per-row add+norm (<= 256 rows),
                                   // moe_decode (<= 8 tokens) and decode attention splits of >= 64 positions; false =
                                   // kernels/ paths only (benchmarks: the before/after of these paths on one card)
};

// Per-op GPU time of profiled launches (cuda_model::set_profiling), summed by op name.
struct cuda_profile_entry {
  std::string name;   // "<layer kind>: <op>" ("deltanet: in_proj qkvz+ba", "moe: experts gate_up+swiglu", ...)
  double ms = 0;      // total over the profiled launches
  int count = 0;      // how many times the op ran
};

// The routing of the last launch (cuda_model::read_routing), as the GPU computed it.
struct cuda_routing {
  int n_tokens = 0;                 // tokens of the launch (padding included), in the step's packed order:
                                    // [decode entries | prefill entries], each entry's tokens in order
  int n_experts = 0;
  int top_k = 0;
  std::vector<int> layers;          // model layer index of each sparse-MoE layer, in order
  std::vector<float> logits;        // fp32 [layers.size(), n_tokens, n_experts]: router logits (bf16 x, bf16 W)
  std::vector<std::int32_t> ids;    // [layers.size(), n_tokens, top_k]: chosen experts, as moe_router wrote them
};

// One entry of a step. ids are host memory, valid until prepare()/step() returns.
struct step_entry {
  int slot = -1;                  // an open sequence (open_sequence())
  const std::int32_t* ids = nullptr;
  int n_tokens = 0;               // >= 1
  std::int64_t start = 0;         // position of ids[0]; must equal sequence_length(slot)
  bool all_logits = false;        // logits of every token of the entry (tests), else of its last token only
};

// What prepare() decided.
struct step_plan {
  int n_entries = 0;       // real entries
  int n_padded = 0;        // entries after padding (== n_entries without padding)
  int n_tokens = 0;        // tokens after padding
  bool decode_only = false;
  bool graph_safe = false; // decode-only and padded: launch() may be captured for bucket n_padded
  // Logit rows: entry i's rows start at logit_row[i] (its last token, or n_tokens rows with all_logits).
  std::vector<int> logit_row;
  int n_logit_rows = 0;
};

class cuda_model {
 public:
  // Loads config.json + safetensors of a Hugging Face checkpoint and uploads the weights. Throws evident::error:
  // the loader's errors (missing tensor, wrong shape, ...), resource when the weights + states + step buffers do
  // not fit in the device's free memory (message: what, bytes needed, bytes free), invalid_input for a shape the
  // CUDA path cannot run or bad options, internal for a CUDA failure (message names the call).
  static std::unique_ptr<cuda_model> load(const std::filesystem::path& dir, const cuda_model_options& options = {});
  // Same from tensors found through `lookup` (in-memory models: tests, benchmarks). The tensors are copied to the
  // device; they need not outlive the call.
  static std::unique_ptr<cuda_model> from_tensors(const model_config& cfg, const tensor_lookup& lookup,
                                                  const cuda_model_options& options, const std::string& origin);
  ~cuda_model();
  cuda_model(const cuda_model&) = delete;
  cuda_model& operator=(const cuda_model&) = delete;

  const model_config& config() const;
  const cuda_model_options& options() const;
  std::int64_t vocab_size() const;

  // ---- sequences ----------------------------------------------------------------------------------------------
  // Opens a sequence (length 0). Refused (slot -1, reason) when no slot is free or `expected_tokens` can never fit
  // (longer than max_context, or more blocks than the cache holds free now). Never throws for lack of room.
  sequence_slots::admission open_sequence(std::int64_t expected_tokens = 0);
  // requires: slot open. Frees its slot and KV blocks (host bookkeeping only; safe while a launched step that does
  // not use the slot is still running).
  void close_sequence(int slot);
  std::int64_t sequence_length(int slot) const;  // positions processed (or reserved by prepare) so far
  const sequence_slots& slots() const;

  // "" when the batch can run, else why not (bad entry, too many tokens / entries / logit rows, no KV blocks).
  std::string can_step(const std::vector<step_entry>& batch) const;

  // ---- steps --------------------------------------------------------------------------------------------------
  // One forward over `batch`; writes logits fp32 [plan.n_logit_rows, vocab] to `logits` (host, may be null) in the
  // order of the entries (each entry's rows at plan.logit_row[i]). Throws evident::error (invalid_input / resource)
  // with can_step()'s reason when the batch cannot run (nothing changes then), internal for a CUDA failure.
  step_plan step(const std::vector<step_entry>& batch, float* logits);

  // Host half of a step (see the top of this file). pad_entries > 0 pads a decode-only batch to that many entries
  // with scratch entries (graph buckets); requires pad_entries >= batch.size() and <= max_step_entries. Advances
  // each sequence's length by its n_tokens (the launch that follows must run). Throws like step().
  step_plan prepare(const std::vector<step_entry>& batch, int pad_entries = 0);
  // Device half: enqueues the prepared step on `stream` (null = the model's own stream). Graph-safe as described
  // at the top. Throws evident::error (internal) if a launcher refuses (a bug) or a launch fails.
  void launch(kernels::stream_t stream = nullptr);
  // After enqueuing a replay of a graph captured from launch() on `stream` (null = own stream): records there the
  // event the next prepare() waits for (the replay's metadata copy reads the staging).
  void replayed(kernels::stream_t stream = nullptr);
  // Device fp32 [max_logit_rows, vocab] buffer the last launch writes (rows [0, plan.n_logit_rows) valid).
  const float* logits() const;
  // Waits for `stream` (null = own stream) and copies the last launch's logit rows to `host` (fp32 [rows, vocab]).
  void read_logits(float* host, kernels::stream_t stream = nullptr);
  kernels::stream_t stream() const;  // the model's own stream
  // requires: options().record_routing (else throws invalid_input). Waits for `stream` (null = own stream) and copies
  // the routing of the last launch.
  cuda_routing read_routing(kernels::stream_t stream = nullptr);

  // ---- profiling (benchmarks) ---------------------------------------------------------------------------------
  // While on, launch() first enqueues a busy kernel of ~spin_us (so the host enqueues the whole step before the GPU
  // reaches it and the times below are GPU time, not the host's launch rate), then records a CUDA event before each
  // op. Marks are skipped while the stream is being captured (profile eager launches only). read_profile() records
  // a last mark, waits for `stream` (null = own stream) and returns the time between consecutive marks summed by op
  // name, in first-seen order, over every profiled launch since the previous read_profile(); the spin itself is not
  // counted. profile_mark() adds a mark for the caller's own ops enqueued after launch() (e.g. "argmax").
  void set_profiling(bool on, int spin_us = 20000);
  // Changes options().gemv_max_m for the launches that follow (benchmarks: cuBLAS vs gemv_small on one model;
  // graphs captured earlier keep the path they captured).
  void set_gemv_max_m(int max_m);
  void set_fast_decode(bool on);  // same for options().fast_decode
  void profile_mark(kernels::stream_t stream, const std::string& name);
  std::vector<cuda_profile_entry> read_profile(kernels::stream_t stream = nullptr);

  // ---- introspection ------------------------------------------------------------------------------------------
  std::size_t weight_bytes() const;   // device bytes of weights
  std::size_t state_bytes() const;    // device bytes of KV cache + DeltaNet states
  std::size_t buffer_bytes() const;   // device bytes of step buffers + workspaces
  // Which implementation each op uses ("kernels/attention_decode", "engine/cuda generic attention", ...), for logs.
  std::string kernel_report() const;

 private:
  struct impl;
  explicit cuda_model(std::unique_ptr<impl> p);
  std::unique_ptr<impl> p_;
};

}  // namespace evident::engine
