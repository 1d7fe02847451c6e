// engine::model_config: the hyper-parameters of a Qwen3-Next checkpoint, read from its config.json.
//
// Field names and defaults follow transformers' Qwen3NextConfig (configuration_qwen3_next.py). Both spellings found
// in the wild are accepted:
//   - layer_types (list of "linear_attention" | "full_attention") or full_attention_interval (every n-th layer is
//     full attention, the rest linear; default 4),
//   - rope_theta / partial_rotary_factor inside rope_parameters (transformers 5) or at the top level (the released
//     checkpoints); rope_parameters wins when both are present, as in transformers.
// Everything is validated in one place (validate()): an unknown architecture / model_type or a field out of range
// throws evident::error naming the field, the value found and what was expected.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace evident::engine {

enum class layer_kind { linear_attention, full_attention };

struct model_config {
  std::string architecture = "Qwen3NextForCausalLM";  // architectures[0]
  std::string model_type = "qwen3_next";

  int64_t vocab_size = 151936;         // rows of embed_tokens / lm_head
  int64_t hidden_size = 2048;          // residual stream width
  int64_t num_hidden_layers = 48;
  double rms_norm_eps = 1e-6;          // every RMSNorm (zero-centred, gated, q/k)
  bool tie_word_embeddings = false;    // lm_head shares embed_tokens' weight
  int64_t max_position_embeddings = 32768;
  std::string hidden_act = "silu";     // only silu is supported

  // Gated attention (full_attention layers).
  int64_t num_attention_heads = 16;
  int64_t num_key_value_heads = 2;     // GQA: num_attention_heads % num_key_value_heads == 0
  int64_t head_dim = 256;
  double rope_theta = 10000.0;
  double partial_rotary_factor = 0.25; // rotary on the first int(head_dim * factor) dims of each head
  bool attention_bias = false;         // only false is supported (the checkpoints have no biases)

  // Gated DeltaNet (linear_attention layers).
  int64_t linear_conv_kernel_dim = 4;
  int64_t linear_key_head_dim = 128;
  int64_t linear_value_head_dim = 128;
  int64_t linear_num_key_heads = 16;
  int64_t linear_num_value_heads = 32;  // multiple of linear_num_key_heads

  // Feed-forward.
  int64_t intermediate_size = 5632;              // dense MLP layers
  int64_t num_experts = 512;                     // 0 = every layer dense
  int64_t num_experts_per_tok = 10;
  int64_t moe_intermediate_size = 512;
  int64_t shared_expert_intermediate_size = 512; // 0 = no shared expert
  bool norm_topk_prob = true;                    // renormalise the top-k router probabilities to sum to one
  int64_t decoder_sparse_step = 1;               // layer i is MoE when (i + 1) % step == 0 (and not in mlp_only_layers)
  std::vector<int64_t> mlp_only_layers;          // layers forced dense

  std::vector<layer_kind> layer_types;  // one per layer (filled from full_attention_interval when absent)
  std::vector<int64_t> eos_token_ids;   // eos_token_id (int or list); may be empty
  int64_t bos_token_id = -1;            // -1 when absent

  // Derived helpers.
  bool is_moe_layer(int64_t layer) const;
  int64_t rotary_dim() const { return static_cast<int64_t>(static_cast<double>(head_dim) * partial_rotary_factor); }
  int64_t linear_key_dim() const { return linear_key_head_dim * linear_num_key_heads; }
  int64_t linear_value_dim() const { return linear_value_head_dim * linear_num_value_heads; }
  int64_t linear_conv_dim() const { return 2 * linear_key_dim() + linear_value_dim(); }
  int n_full_attention_layers() const;

  // Throws evident::error (invalid_input, message "config.json: <field>: ...") when a field is out of range or
  // inconsistent with another. `origin` names the file in messages.
  void validate(const std::string& origin = "config.json") const;
};

// Parses config.json text / file and validates it. Throws evident::error: not_found (no file), corrupt (not JSON),
// invalid_input (unknown architecture, wrong type, out of range).
model_config parse_model_config(const std::string& json_text, const std::string& origin = "config.json");
model_config load_model_config(const std::filesystem::path& path);

// Parameter counts of a model with this config (embedding and lm_head included; lm_head counted once when tied).
struct param_counts {
  int64_t total = 0;             // every weight
  int64_t active_per_token = 0;  // weights one token touches: experts counted num_experts_per_tok times, not num_experts
  int64_t embedding = 0;         // embed_tokens (a lookup: counted in total, not in active)
};
param_counts count_params(const model_config& c);

const char* to_string(layer_kind k);

}  // namespace evident::engine
