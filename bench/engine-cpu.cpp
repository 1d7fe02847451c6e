// CPU engine throughput on a random Qwen3-Next at 1/SCALE of Qwen3-Next-80B-A3B's widths (default 8), generated in
// memory (no checkpoint). Depth, head counts, expert count / top-k, layer pattern and vocabulary are the 80B model's;
// widths (hidden, head dims, intermediate sizes) are divided by SCALE. Weights bf16, compute fp32.
//
//   bench_engine_cpu [--scale 8] [--layers 48] [--prompt 512] [--gen 64] [--threads 0]
// Prints one JSON line: prompt tokens/s (prefill, chunks of 512), generation tokens/s (greedy decode, batch 1),
// weights in memory, and the parameter counts.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/generation.h"
#include "engine/models/qwen3next.h"
#include "engine/sampling.h"

using namespace evident::engine;

namespace {

struct store {
  std::map<std::string, std::vector<uint16_t>> data;
  std::map<std::string, tensor_view> views;
};

uint64_t g_state = 0x9E3779B97F4A7C15ull;
inline uint64_t next_u64() {  // xorshift64*
  g_state ^= g_state >> 12;
  g_state ^= g_state << 25;
  g_state ^= g_state >> 27;
  return g_state * 2685821657736338717ull;
}

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

void add(store& s, const std::string& name, std::vector<int64_t> shape, float scale, float offset = 0.0f) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  auto& buf = s.data[name];
  buf.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    // Uniform in [-scale, scale] (+ offset): cheap and free of denormals.
    const float u = static_cast<float>(next_u64() >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f;
    buf[static_cast<size_t>(i)] = to_bf16(u * scale + offset);
  }
  tensor_view t;
  t.name = name;
  t.dtype = st_dtype::bf16;
  t.dtype_name = "BF16";
  t.shape = std::move(shape);
  t.data = buf.data();
  t.file = "<memory>";
  s.views[name] = t;
}

int64_t arg(int argc, char** argv, const char* name, int64_t def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoll(argv[i + 1]);
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t scale = arg(argc, argv, "--scale", 8);
  const int64_t n_prompt = arg(argc, argv, "--prompt", 512);
  const int64_t n_gen = arg(argc, argv, "--gen", 64);
  const int threads = static_cast<int>(arg(argc, argv, "--threads", 0));

  model_config c;  // defaults are Qwen3-Next-80B-A3B's
  c.hidden_size = 2048 / scale;
  c.num_hidden_layers = arg(argc, argv, "--layers", 48);
  c.head_dim = 256 / scale;
  c.linear_key_head_dim = 128 / scale;
  c.linear_value_head_dim = 128 / scale;
  c.intermediate_size = 5120 / scale;
  c.moe_intermediate_size = 512 / scale;
  c.shared_expert_intermediate_size = 512 / scale;
  c.layer_types.clear();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    c.layer_types.push_back((i + 1) % 4 ? layer_kind::linear_attention : layer_kind::full_attention);
  c.eos_token_ids = {151645};

  const auto t0 = std::chrono::steady_clock::now();
  auto s = std::make_shared<store>();
  const int64_t H = c.hidden_size;
  const float wscale = 1.0f / std::sqrt(static_cast<float>(H));
  add(*s, "model.embed_tokens.weight", {c.vocab_size, H}, 1.0f);
  add(*s, "lm_head.weight", {c.vocab_size, H}, wscale);
  add(*s, "model.norm.weight", {H}, 0.1f);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(*s, p + "input_layernorm.weight", {H}, 0.1f);
    add(*s, p + "post_attention_layernorm.weight", {H}, 0.1f);
    if (c.layer_types[static_cast<size_t>(l)] == layer_kind::full_attention) {
      const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
      add(*s, p + "self_attn.q_proj.weight", {2 * q, H}, wscale);
      add(*s, p + "self_attn.k_proj.weight", {kv, H}, wscale);
      add(*s, p + "self_attn.v_proj.weight", {kv, H}, wscale);
      add(*s, p + "self_attn.o_proj.weight", {H, q}, 1.0f / std::sqrt(static_cast<float>(q)));
      add(*s, p + "self_attn.q_norm.weight", {c.head_dim}, 0.1f);
      add(*s, p + "self_attn.k_norm.weight", {c.head_dim}, 0.1f);
    } else {
      const int64_t kd = c.linear_key_dim(), vd = c.linear_value_dim(), nv = c.linear_num_value_heads;
      add(*s, p + "linear_attn.in_proj_qkvz.weight", {2 * kd + 2 * vd, H}, wscale);
      add(*s, p + "linear_attn.in_proj_ba.weight", {2 * nv, H}, wscale);
      add(*s, p + "linear_attn.out_proj.weight", {H, vd}, 1.0f / std::sqrt(static_cast<float>(vd)));
      add(*s, p + "linear_attn.conv1d.weight", {c.linear_conv_dim(), 1, c.linear_conv_kernel_dim}, 0.5f);
      add(*s, p + "linear_attn.A_log", {nv}, 1.0f, 0.5f);
      add(*s, p + "linear_attn.dt_bias", {nv}, 0.5f);
      add(*s, p + "linear_attn.norm.weight", {c.linear_value_head_dim}, 0.1f, 1.0f);
    }
    const int64_t I = c.moe_intermediate_size;
    add(*s, p + "mlp.gate.weight", {c.num_experts, H}, wscale);
    add(*s, p + "mlp.shared_expert.gate_proj.weight", {c.shared_expert_intermediate_size, H}, wscale);
    add(*s, p + "mlp.shared_expert.up_proj.weight", {c.shared_expert_intermediate_size, H}, wscale);
    add(*s, p + "mlp.shared_expert.down_proj.weight", {H, c.shared_expert_intermediate_size}, 1.0f / std::sqrt(static_cast<float>(I)));
    add(*s, p + "mlp.shared_expert_gate.weight", {1, H}, wscale);
    for (int64_t e = 0; e < c.num_experts; ++e) {
      const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
      add(*s, q + "gate_proj.weight", {I, H}, wscale);
      add(*s, q + "up_proj.weight", {I, H}, wscale);
      add(*s, q + "down_proj.weight", {H, I}, 1.0f / std::sqrt(static_cast<float>(I)));
    }
  }
  const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  thread_pool pool(threads);
  const store* sp = s.get();
  auto model = qwen3next_model::from_tensors(
      c, [sp](const std::string& n) { auto it = sp->views.find(n); return it == sp->views.end() ? nullptr : &it->second; },
      s, "<random 1/" + std::to_string(scale) + " Qwen3-Next>", &pool);

  std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
  for (auto& id : prompt) id = static_cast<int32_t>(next_u64() % 151643);
  sampling_params sp_greedy;
  sp_greedy.temperature = 0;
  sampler smp(sp_greedy);
  auto mem = model->new_sequence();
  // CPU seconds (all threads) of the prefill and of the decode: on a loaded machine wall-clock rates understate
  // the engine; tokens per CPU-second x threads is what an idle machine would approach.
  auto cpu_s = [] {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
  };
  const double c0 = cpu_s();
  double c1 = 0;
  bool first = true;
  const auto res = generate_tokens(*model, mem, prompt, smp, static_cast<int>(n_gen), {}, [&](int32_t) {
    if (first) c1 = cpu_s();
    first = false;
    return true;
  }, 512);
  const double c2 = cpu_s();
  const auto pc = count_params(c);
  const double prefill_tps = static_cast<double>(n_prompt) / (res.prefill_ms / 1000.0);
  // The first generated token comes from the prefill's logits: n_gen - 1 decode steps.
  const double decode_tps = static_cast<double>(res.tokens.size() - 1) / (res.decode_ms / 1000.0);
  std::printf(
      "{\"scale\": %lld, \"layers\": %lld, \"hidden\": %lld, \"threads\": %d, \"params_total\": %lld, "
      "\"params_active\": %lld, \"weight_bytes\": %zu, \"prompt_tokens\": %lld, \"prompt_tok_per_s\": %.1f, "
      "\"gen_tokens\": %zu, \"gen_tok_per_s\": %.2f, \"prompt_tok_per_cpu_s\": %.1f, \"gen_tok_per_cpu_s\": %.2f, "
      "\"build_s\": %.1f}\n",
      static_cast<long long>(scale), static_cast<long long>(c.num_hidden_layers), static_cast<long long>(H), pool.size(),
      static_cast<long long>(pc.total), static_cast<long long>(pc.active_per_token), model->weight_bytes(),
      static_cast<long long>(n_prompt), prefill_tps, res.tokens.size(), decode_tps, static_cast<double>(n_prompt) / (c1 - c0),
      static_cast<double>(res.tokens.size() - 1) / (c2 - c1), build_s);
  return 0;
}
