#include "engine/model-config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/base/error.h"

namespace evident::engine {

using json = nlohmann::json;

const char* to_string(layer_kind k) { return k == layer_kind::full_attention ? "full_attention" : "linear_attention"; }

bool model_config::is_moe_layer(int64_t layer) const {
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end()) return false;
  return num_experts > 0 && (layer + 1) % decoder_sparse_step == 0;
}

int model_config::n_full_attention_layers() const {
  return static_cast<int>(std::count(layer_types.begin(), layer_types.end(), layer_kind::full_attention));
}

namespace {

// Reads an optional field of a given JSON type; a present field of the wrong type is an error naming it.
template <typename T>
void read_field(const json& j, const char* name, T& out, const std::string& origin) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return;
  try {
    if constexpr (std::is_same_v<T, bool>) {
      EV_THROW_IF_NOT_MSG(it->is_boolean(), origin, ": ", name, ": expected a boolean, found ", it->dump());
      out = it->get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      EV_THROW_IF_NOT_MSG(it->is_number_integer(), origin, ": ", name, ": expected an integer, found ", it->dump());
      out = it->get<T>();
    } else if constexpr (std::is_floating_point_v<T>) {
      EV_THROW_IF_NOT_MSG(it->is_number(), origin, ": ", name, ": expected a number, found ", it->dump());
      out = it->get<T>();
    } else {
      EV_THROW_IF_NOT_MSG(it->is_string(), origin, ": ", name, ": expected a string, found ", it->dump());
      out = it->get<std::string>();
    }
  } catch (const json::exception& e) {
    EV_THROW(invalid_input, origin, ": ", name, ": ", e.what());
  }
}

void require_range(bool ok, const std::string& origin, const char* field, int64_t value, const char* expected) {
  EV_THROW_IF_NOT_MSG(ok, origin, ": ", field, ": found ", value, ", expected ", expected);
}

}  // namespace

void model_config::validate(const std::string& origin) const {
  EV_THROW_IF_NOT_MSG(architecture == "Qwen3NextForCausalLM", origin, ": architectures: unsupported architecture \"",
                      architecture, "\", expected \"Qwen3NextForCausalLM\"");
  EV_THROW_IF_NOT_MSG(model_type == "qwen3_next", origin, ": model_type: unsupported \"", model_type,
                      "\", expected \"qwen3_next\"");
  EV_THROW_IF_NOT_MSG(hidden_act == "silu", origin, ": hidden_act: unsupported \"", hidden_act, "\", expected \"silu\"");
  EV_THROW_IF_NOT_MSG(!attention_bias, origin, ": attention_bias: true is not supported");
  const int64_t big = int64_t{1} << 24;
  require_range(vocab_size > 0 && vocab_size <= (int64_t{1} << 31) - 1, origin, "vocab_size", vocab_size, "1..2^31-1");
  require_range(hidden_size > 0 && hidden_size <= big, origin, "hidden_size", hidden_size, "1..2^24");
  require_range(num_hidden_layers > 0 && num_hidden_layers <= 4096, origin, "num_hidden_layers", num_hidden_layers,
                "1..4096");
  EV_THROW_IF_NOT_MSG(rms_norm_eps > 0 && rms_norm_eps < 1, origin, ": rms_norm_eps: found ", rms_norm_eps,
                      ", expected in (0, 1)");
  require_range(num_attention_heads > 0 && num_attention_heads <= 4096, origin, "num_attention_heads",
                num_attention_heads, "1..4096");
  require_range(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0, origin,
                "num_key_value_heads", num_key_value_heads, "a positive divisor of num_attention_heads");
  require_range(head_dim > 0 && head_dim <= 4096 && head_dim % 2 == 0, origin, "head_dim", head_dim,
                "an even number in 2..4096");
  EV_THROW_IF_NOT_MSG(rope_theta > 0, origin, ": rope_theta: found ", rope_theta, ", expected > 0");
  EV_THROW_IF_NOT_MSG(partial_rotary_factor > 0 && partial_rotary_factor <= 1, origin,
                      ": partial_rotary_factor: found ", partial_rotary_factor, ", expected in (0, 1]");
  require_range(rotary_dim() % 2 == 0 && rotary_dim() > 0, origin, "partial_rotary_factor * head_dim", rotary_dim(),
                "a positive even number");
  require_range(linear_conv_kernel_dim >= 1 && linear_conv_kernel_dim <= 64, origin, "linear_conv_kernel_dim",
                linear_conv_kernel_dim, "1..64");
  require_range(linear_key_head_dim > 0 && linear_key_head_dim <= 4096, origin, "linear_key_head_dim",
                linear_key_head_dim, "1..4096");
  require_range(linear_value_head_dim > 0 && linear_value_head_dim <= 4096, origin, "linear_value_head_dim",
                linear_value_head_dim, "1..4096");
  require_range(linear_num_key_heads > 0 && linear_num_key_heads <= 4096, origin, "linear_num_key_heads",
                linear_num_key_heads, "1..4096");
  require_range(linear_num_value_heads > 0 && linear_num_value_heads % linear_num_key_heads == 0, origin,
                "linear_num_value_heads", linear_num_value_heads, "a positive multiple of linear_num_key_heads");
  require_range(intermediate_size > 0 && intermediate_size <= big, origin, "intermediate_size", intermediate_size,
                "1..2^24");
  require_range(num_experts >= 0 && num_experts <= 65536, origin, "num_experts", num_experts, "0..65536");
  if (num_experts > 0) {
    require_range(num_experts_per_tok > 0 && num_experts_per_tok <= num_experts, origin, "num_experts_per_tok",
                  num_experts_per_tok, "1..num_experts");
    require_range(moe_intermediate_size > 0 && moe_intermediate_size <= big, origin, "moe_intermediate_size",
                  moe_intermediate_size, "1..2^24");
  }
  require_range(shared_expert_intermediate_size >= 0 && shared_expert_intermediate_size <= big, origin,
                "shared_expert_intermediate_size", shared_expert_intermediate_size, "0..2^24");
  require_range(decoder_sparse_step > 0, origin, "decoder_sparse_step", decoder_sparse_step, ">= 1");
  for (int64_t l : mlp_only_layers)
    require_range(l >= 0 && l < num_hidden_layers, origin, "mlp_only_layers[]", l, "a layer index in 0..num_hidden_layers-1");
  require_range(static_cast<int64_t>(layer_types.size()) == num_hidden_layers, origin, "layer_types (length)",
                static_cast<int64_t>(layer_types.size()), "num_hidden_layers entries");
  for (int64_t id : eos_token_ids)
    require_range(id >= 0 && id < vocab_size, origin, "eos_token_id", id, "an id in 0..vocab_size-1");
}

model_config parse_model_config(const std::string& json_text, const std::string& origin) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    EV_THROW(corrupt, origin, ": not valid JSON: ", e.what());
  }
  EV_THROW_IF_NOT_KIND(j.is_object(), corrupt, origin, ": expected a JSON object at the top level");
  model_config c;
  if (auto it = j.find("architectures"); it != j.end() && !it->is_null()) {
    EV_THROW_IF_NOT_MSG(it->is_array() && !it->empty() && (*it)[0].is_string(), origin,
                        ": architectures: expected a non-empty list of strings, found ", it->dump());
    c.architecture = (*it)[0].get<std::string>();
  } else {
    c.architecture = "";
  }
  read_field(j, "model_type", c.model_type, origin);
  if (c.architecture.empty()) {
    EV_THROW_IF_NOT_MSG(c.model_type == "qwen3_next", origin,
                        ": architectures: missing, and model_type is not \"qwen3_next\"");
    c.architecture = "Qwen3NextForCausalLM";
  }
  read_field(j, "vocab_size", c.vocab_size, origin);
  read_field(j, "hidden_size", c.hidden_size, origin);
  read_field(j, "num_hidden_layers", c.num_hidden_layers, origin);
  read_field(j, "rms_norm_eps", c.rms_norm_eps, origin);
  read_field(j, "tie_word_embeddings", c.tie_word_embeddings, origin);
  read_field(j, "max_position_embeddings", c.max_position_embeddings, origin);
  read_field(j, "hidden_act", c.hidden_act, origin);
  read_field(j, "num_attention_heads", c.num_attention_heads, origin);
  read_field(j, "num_key_value_heads", c.num_key_value_heads, origin);
  read_field(j, "head_dim", c.head_dim, origin);
  read_field(j, "attention_bias", c.attention_bias, origin);
  // Top level first (released checkpoints), then rope_parameters (transformers 5), which wins.
  read_field(j, "rope_theta", c.rope_theta, origin);
  read_field(j, "partial_rotary_factor", c.partial_rotary_factor, origin);
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    EV_THROW_IF_NOT_MSG(it->is_object(), origin, ": rope_parameters: expected an object, found ", it->dump());
    std::string rope_type = "default";
    read_field(*it, "rope_type", rope_type, origin + ": rope_parameters");
    EV_THROW_IF_NOT_MSG(rope_type == "default", origin, ": rope_parameters.rope_type: unsupported \"", rope_type,
                        "\", expected \"default\"");
    read_field(*it, "rope_theta", c.rope_theta, origin + ": rope_parameters");
    read_field(*it, "partial_rotary_factor", c.partial_rotary_factor, origin + ": rope_parameters");
  }
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null())
    EV_THROW(invalid_input, origin, ": rope_scaling: not supported (found ", it->dump(), ")");
  read_field(j, "linear_conv_kernel_dim", c.linear_conv_kernel_dim, origin);
  read_field(j, "linear_key_head_dim", c.linear_key_head_dim, origin);
  read_field(j, "linear_value_head_dim", c.linear_value_head_dim, origin);
  read_field(j, "linear_num_key_heads", c.linear_num_key_heads, origin);
  read_field(j, "linear_num_value_heads", c.linear_num_value_heads, origin);
  read_field(j, "intermediate_size", c.intermediate_size, origin);
  read_field(j, "num_experts", c.num_experts, origin);
  read_field(j, "num_experts_per_tok", c.num_experts_per_tok, origin);
  read_field(j, "moe_intermediate_size", c.moe_intermediate_size, origin);
  read_field(j, "shared_expert_intermediate_size", c.shared_expert_intermediate_size, origin);
  read_field(j, "norm_topk_prob", c.norm_topk_prob, origin);
  read_field(j, "decoder_sparse_step", c.decoder_sparse_step, origin);
  if (auto it = j.find("mlp_only_layers"); it != j.end() && !it->is_null()) {
    EV_THROW_IF_NOT_MSG(it->is_array(), origin, ": mlp_only_layers: expected a list of integers, found ", it->dump());
    for (const auto& v : *it) {
      EV_THROW_IF_NOT_MSG(v.is_number_integer(), origin, ": mlp_only_layers: expected integers, found ", v.dump());
      c.mlp_only_layers.push_back(v.get<int64_t>());
    }
  }
  if (auto it = j.find("layer_types"); it != j.end() && !it->is_null()) {
    EV_THROW_IF_NOT_MSG(it->is_array(), origin, ": layer_types: expected a list of strings, found ", it->dump());
    for (const auto& v : *it) {
      const std::string s = v.is_string() ? v.get<std::string>() : v.dump();
      if (s == "linear_attention")
        c.layer_types.push_back(layer_kind::linear_attention);
      else if (s == "full_attention" || s == "attention")
        c.layer_types.push_back(layer_kind::full_attention);
      else
        EV_THROW(invalid_input, origin, ": layer_types: unknown layer type ", s,
                 ", expected \"linear_attention\" or \"full_attention\"");
    }
  } else {
    int64_t interval = 4;
    read_field(j, "full_attention_interval", interval, origin);
    require_range(interval > 0, origin, "full_attention_interval", interval, ">= 1");
    for (int64_t i = 0; i < c.num_hidden_layers && c.num_hidden_layers <= 4096; ++i)
      c.layer_types.push_back((i + 1) % interval != 0 ? layer_kind::linear_attention : layer_kind::full_attention);
  }
  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    if (it->is_number_integer()) {
      c.eos_token_ids.push_back(it->get<int64_t>());
    } else {
      EV_THROW_IF_NOT_MSG(it->is_array(), origin, ": eos_token_id: expected an integer or a list, found ", it->dump());
      for (const auto& v : *it) {
        EV_THROW_IF_NOT_MSG(v.is_number_integer(), origin, ": eos_token_id: expected integers, found ", v.dump());
        c.eos_token_ids.push_back(v.get<int64_t>());
      }
    }
  }
  read_field(j, "bos_token_id", c.bos_token_id, origin);
  c.validate(origin);
  return c;
}

model_config load_model_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EV_THROW_IF_NOT_KIND(in.good(), not_found, path.string(), ": cannot open (expected a Hugging Face config.json)");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_model_config(ss.str(), path.string());
}

param_counts count_params(const model_config& c) {
  param_counts p;
  const int64_t h = c.hidden_size;
  p.embedding = c.vocab_size * h;
  const int64_t lm_head = c.vocab_size * h;
  p.total = p.embedding + (c.tie_word_embeddings ? 0 : lm_head) + h;  // + final norm
  p.active_per_token = lm_head + h;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    int64_t mixer = 0;
    if (c.layer_types[static_cast<size_t>(l)] == layer_kind::full_attention) {
      const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
      mixer = h * 2 * q + 2 * h * kv + q * h + 2 * c.head_dim;
    } else {
      const int64_t kd = c.linear_key_dim(), vd = c.linear_value_dim(), nv = c.linear_num_value_heads;
      mixer = h * (2 * kd + 2 * vd) + h * 2 * nv + c.linear_conv_dim() * c.linear_conv_kernel_dim + 2 * nv +
              c.linear_value_head_dim + vd * h;
    }
    int64_t ffn_total = 0, ffn_active = 0;
    if (c.is_moe_layer(l)) {
      const int64_t expert = 3 * h * c.moe_intermediate_size;
      const int64_t shared = 3 * h * c.shared_expert_intermediate_size + h;
      const int64_t router = c.num_experts * h;
      ffn_total = c.num_experts * expert + shared + router;
      ffn_active = c.num_experts_per_tok * expert + shared + router;
    } else {
      ffn_total = ffn_active = 3 * h * c.intermediate_size;
    }
    p.total += mixer + ffn_total + 2 * h;
    p.active_per_token += mixer + ffn_active + 2 * h;
  }
  return p;
}

}  // namespace evident::engine
