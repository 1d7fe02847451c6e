// engine::qwen3next_model: the Qwen3-Next forward pass on the CPU, fp32 compute over bf16 (or f32) weights.
//
// Follows transformers' models/qwen3_next/modeling_qwen3_next.py:
//   x = embed_tokens[ids]
//   per layer:  x += mixer(rmsnorm_1p(x))        mixer = Gated DeltaNet (linear_attention) | gated attention (full)
//               x += ffn(rmsnorm_1p(x))          ffn   = sparse MoE + shared expert | dense SwiGLU MLP
//   logits = lm_head(rmsnorm_1p(x))              lm_head = embed_tokens when tie_word_embeddings
// with rmsnorm_1p(x) = x / sqrt(mean(x^2) + eps) * (1 + w) (zero-centred weights).
//
// Gated attention: q_proj gives [query | gate] per head (head_dim each); q_norm / k_norm (1 + w) per head; rotary on
// the first rotary_dim dims (rotate_half convention); GQA (head h reads kv head h / (n_heads / n_kv_heads));
// softmax(q k^T / sqrt(head_dim)) in fp32; output * sigmoid(gate); o_proj.
// Gated DeltaNet: in_proj_qkvz / in_proj_ba grouped by key head ([q k v z] and [b a] per key head); causal
// depth-wise conv1d (kernel linear_conv_kernel_dim, no bias) + SiLU over [q k v]; q, k L2-normalised (eps 1e-6), q
// scaled by 1/sqrt(d_k); beta = sigmoid(b); g = -exp(A_log) * softplus(a + dt_bias); the gated delta rule in its
// chunked form (chunks of 64) for n_tokens > 1 and its recurrent form for one token; gated RMSNorm (plain w) with z;
// out_proj. MoE: softmax (fp32) over router logits, top-k, renormalised when norm_topk_prob, SwiGLU experts weighted
// by their probability, plus shared expert * sigmoid(shared_expert_gate(x)).
//
// Weights stay where they are (the mmap'd checkpoint) when bf16 or f32; f16 tensors are converted to f32 at load.
// Small vectors (norm weights, A_log, dt_bias, conv1d) are copied to fp32.
//
// Thread-safety: a loaded model is immutable; forward() may run concurrently on different sequences, but each call
// uses the shared thread pool, so concurrent calls serialise on it. The model must outlive its sequences' use.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/cpu-ops.h"
#include "engine/memory.h"
#include "engine/model-config.h"
#include "engine/safetensors.h"
#include "engine/thread-pool.h"

namespace evident::engine {

// Optional observer of the sparse-MoE routing of forward() calls (tests, diagnostics). forward() appends one record
// per sparse-MoE layer per call when given a trace; without one (the default) nothing is recorded and nothing costs.
// Not thread-safe: one trace per forward() call at a time.
struct routing_trace {
  struct layer_routing {
    int layer = 0;             // model layer index
    int64_t start = 0;         // position of the call's first token (the sequence's n_past before the call)
    int64_t n_tokens = 0;
    int64_t n_experts = 0;
    int64_t top_k = 0;
    std::vector<float> logits;  // fp32 [n_tokens, n_experts]: router logits (before the softmax)
    std::vector<float> probs;   // fp32 [n_tokens, n_experts]: router softmax
    std::vector<int32_t> ids;   // [n_tokens, top_k]: the chosen experts, most probable first (ties to the lower id)
    // p_(k) - p_(k+1) for token t (k-th and (k+1)-th largest probability); +inf when top_k == n_experts.
    float prob_margin(int64_t t) const;
    // l_(k) - l_(k+1) = log(p_(k) / p_(k+1)) for token t, from the logits; +inf when top_k == n_experts.
    float logit_margin(int64_t t) const;
  };
  std::vector<layer_routing> records;  // appended in call order, within a call in layer order
};

// Looks a tensor up by its checkpoint name; returns null when absent.
using tensor_lookup = std::function<const tensor_view*(const std::string& name)>;

// The tensor `name` through `lookup`, checked: present, of exactly `shape`, stored as BF16, F16 or F32. Throws
// evident::error naming `origin` and the tensor (not_found when missing, invalid_input otherwise).
const tensor_view& find_tensor(const tensor_lookup& lookup, const std::string& origin, const std::string& name,
                               const std::vector<int64_t>& shape);

class qwen3next_model {
 public:
  // Loads config.json and the safetensors of a Hugging Face checkpoint directory. Throws evident::error naming the
  // file / field / tensor (missing tensor, wrong shape, unsupported dtype, truncated file, bad config).
  static std::unique_ptr<qwen3next_model> load(const std::filesystem::path& dir, thread_pool* pool = nullptr);
  // Builds the model from tensors found through `lookup`; `keep_alive` owns their memory (may be null when the
  // caller keeps it alive). Used for in-memory models (benchmarks, tests).
  static std::unique_ptr<qwen3next_model> from_tensors(const model_config& cfg, const tensor_lookup& lookup,
                                                       std::shared_ptr<void> keep_alive, std::string origin,
                                                       thread_pool* pool = nullptr);
  ~qwen3next_model();

  const model_config& config() const { return cfg_; }
  int64_t vocab_size() const { return cfg_.vocab_size; }

  // A fresh, empty sequence sized for this model.
  sequence_memory new_sequence() const;

  // Runs ids[0..n) at positions mem.n_past.. and appends them to `mem`.
  //   logits: fp32 [n, vocab] when all_logits, else fp32 [vocab] for the last token only; may be null (no lm_head).
  //   trace: when not null, one routing record per sparse-MoE layer is appended to it (see routing_trace).
  // requires: n >= 1, every id in [0, vocab). Throws evident::error (invalid_input) for an id out of range.
  void forward(sequence_memory& mem, const int32_t* ids, int64_t n, float* logits, bool all_logits = false,
               routing_trace* trace = nullptr) const;

  // Bytes of weights the model reads (as stored), and per token generated (active parameters, as stored).
  size_t weight_bytes() const { return weight_bytes_; }

 private:
  struct layer;
  qwen3next_model() = default;
  void build(const tensor_lookup& lookup, const std::string& origin);

  void attention(const layer& L, int li, sequence_memory& mem, const float* xn, int64_t n, float* out) const;
  void deltanet(const layer& L, int li, sequence_memory& mem, const float* xn, int64_t n, float* out) const;
  void ffn(const layer& L, const float* xn, int64_t n, float* out, routing_trace::layer_routing* rec) const;

  model_config cfg_;
  std::shared_ptr<void> keep_alive_;
  std::unique_ptr<safetensors_dir> files_;
  std::vector<std::vector<float>> owned_;  // converted f16 tensors and fp32 copies of small vectors
  thread_pool* pool_ = nullptr;
  weight embed_, lm_head_;
  std::vector<float> final_norm_;
  std::vector<layer> layers_;
  std::vector<float> inv_freq_;  // rotary inverse frequencies, rotary_dim / 2
  size_t weight_bytes_ = 0;
};

}  // namespace evident::engine
