// `evident model`: inspect and run a Qwen3-Next checkpoint with the CPU engine.
//   evident model info --model DIR
//   evident model run  --model DIR --ids 1,2,3 [--generate N] [--logits-out FILE.safetensors]
//   evident model chat --model DIR [--tokenizer FILE] [--max-tokens N] [--temperature T] [--seed S] TEXT
// `run` is the interface outside checks use: it prints {"generated": [...]} (greedy) and writes the logits of every
// position of --ids (f32, tensor `logits`, shape [n_ids, vocab]). Keep it stable.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/cli.h"
#include "api/commands.h"
#include "engine/base/error.h"
#include "engine/local-generator.h"
#include "engine/models/qwen3next.h"
#include "engine/safetensors.h"

namespace evident::cli {

namespace {

using json = nlohmann::json;

int model_info(const std::vector<std::string>& argv) {
  args a("model info", "--model DIR", "Print the architecture, parameter counts and memory needs of a checkpoint.");
  auto& dir = a.option("--model", "DIR", "Hugging Face checkpoint directory (config.json + *.safetensors)");
  if (!a.parse(argv, 0, 0)) return 0;
  if (dir.empty()) throw usage_error{"--model DIR is required"};
  auto model = engine::qwen3next_model::load(dir);  // validates every tensor's presence and shape
  const auto& c = model->config();
  const auto pc = engine::count_params(c);
  engine::safetensors_dir st(dir);
  int n_moe = 0;
  std::vector<std::string> kinds;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    n_moe += c.is_moe_layer(l) ? 1 : 0;
    kinds.push_back(engine::to_string(c.layer_types[static_cast<size_t>(l)]));
  }
  const int n_full = c.n_full_attention_layers();
  const int64_t n_lin = c.num_hidden_layers - n_full;
  const int64_t kv_per_token = 2 * n_full * c.num_key_value_heads * c.head_dim * 4;  // fp32 on the CPU backend
  const int64_t state = n_lin * (c.linear_num_value_heads * c.linear_key_head_dim * c.linear_value_head_dim +
                                 (c.linear_conv_kernel_dim - 1) * c.linear_conv_dim()) * 4;
  json j = {
      {"architecture", c.architecture},
      {"layers", c.num_hidden_layers},
      {"linear_attention_layers", n_lin},
      {"full_attention_layers", n_full},
      {"moe_layers", n_moe},
      {"dense_mlp_layers", c.num_hidden_layers - n_moe},
      {"hidden_size", c.hidden_size},
      {"vocab_size", c.vocab_size},
      {"experts", c.num_experts},
      {"experts_per_token", c.num_experts_per_tok},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"parameters", {{"total", pc.total}, {"active_per_token", pc.active_per_token}, {"embedding", pc.embedding}}},
      {"memory",
       {{"weights_bytes", st.total_bytes()},
        {"kv_bytes_per_token", kv_per_token},
        {"recurrent_state_bytes_per_sequence", state},
        {"bytes_for_32k_context", static_cast<int64_t>(st.total_bytes()) + state + 32768 * kv_per_token}}},
      {"layer_types", kinds},
  };
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

int model_run(const std::vector<std::string>& argv) {
  args a("model run", "--model DIR --ids 1,2,3 [--generate N] [--logits-out FILE.safetensors]",
         "Run token ids through the model: print {\"generated\": [...]} (greedy continuation of N tokens) and\n"
         "optionally write the f32 logits of every input position (tensor `logits`, shape [n_ids, vocab]).");
  auto& dir = a.option("--model", "DIR", "Hugging Face checkpoint directory");
  auto& ids_s = a.option("--ids", "IDS", "input token ids, comma-separated");
  auto& gen_s = a.option("--generate", "N", "greedy tokens to generate after the ids", "0");
  auto& out = a.option("--logits-out", "FILE", "write all-position logits to this .safetensors file");
  if (!a.parse(argv, 0, 0)) return 0;
  if (dir.empty()) throw usage_error{"--model DIR is required"};
  const std::vector<int32_t> ids = parse_token_ids("--ids", ids_s);
  if (ids.empty()) throw usage_error{"--ids: at least one token id is required"};
  const int64_t n_gen = static_cast<int64_t>(parse_count("--generate", gen_s));
  auto model = engine::qwen3next_model::load(dir);
  const int64_t V = model->vocab_size(), n = static_cast<int64_t>(ids.size());
  auto mem = model->new_sequence();
  std::vector<float> logits(static_cast<size_t>(n * V));
  model->forward(mem, ids.data(), n, logits.data(), /*all_logits=*/true);
  if (!out.empty()) {
    engine::write_safetensors(out, {{"logits", engine::st_dtype::f32, {n, V}, logits.data()}},
                              {{"producer", "evident model run"}});
  }
  std::vector<int32_t> generated;
  std::vector<float> last(logits.end() - V, logits.end());
  for (int64_t i = 0; i < n_gen; ++i) {
    const int32_t next = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    generated.push_back(next);
    if (i + 1 < n_gen) model->forward(mem, &next, 1, last.data());
  }
  std::printf("%s\n", json{{"generated", generated}}.dump().c_str());
  return 0;
}

int model_chat(const std::vector<std::string>& argv) {
  args a("model chat", "--model DIR [--tokenizer FILE] [--max-tokens N] [--temperature T] [--seed S] TEXT",
         "Ask the local engine one question (chat template applied): reasoning goes to stderr, the answer to stdout.");
  auto& dir = a.option("--model", "DIR", "Hugging Face checkpoint directory");
  auto& tok = a.option("--tokenizer", "FILE", "tokenizer.json (default: DIR/tokenizer.json)");
  auto& max_tokens = a.option("--max-tokens", "N", "tokens to generate at most, reasoning included", "256");
  auto& temperature = a.option("--temperature", "T", "0 = greedy", "0.6");
  auto& seed = a.option("--seed", "S", "sampling seed (0: from the clock)", "0");
  auto& system = a.option("--system", "TEXT", "system message", "");
  if (!a.parse(argv, 1, 1)) return 0;
  if (dir.empty()) throw usage_error{"--model DIR is required"};
  engine::local_generator_options o;
  o.model_dir = dir;
  o.tokenizer_path = tok;
  engine::local_generator g(o);
  engine::generate_request r;
  if (!system.empty()) r.messages.push_back({"system", system});
  r.messages.push_back({"user", a.positional()[0]});
  r.sampling.max_tokens = static_cast<int>(parse_count("--max-tokens", max_tokens));
  try {
    r.sampling.temperature = std::stof(temperature);
    r.sampling.seed = std::stoull(seed);
  } catch (const std::exception&) {
    throw usage_error{"--temperature / --seed: expected numbers"};
  }
  std::string finish, error;
  engine::usage_info usage;
  g.generate(r, [&](const engine::generate_event& e) {
    if (e.kind == engine::event_kind::reasoning_delta) std::fprintf(stderr, "%s", e.text.c_str());
    if (e.kind == engine::event_kind::answer_delta) std::printf("%s", e.text.c_str());
    if (e.kind == engine::event_kind::usage) usage = e.usage;
    if (e.kind == engine::event_kind::finish) {
      finish = e.finish_reason;
      error = e.error_message;
    }
    std::fflush(stdout);
    return true;
  });
  std::printf("\n");
  std::fprintf(stderr, "\n[finish: %s, prompt %d tokens, completion %d tokens, %.0f ms]\n", finish.c_str(),
               usage.prompt_tokens, usage.completion_tokens, usage.total_ms);
  if (finish == "error") throw evident::error("generation failed: " + error, error_kind::internal);
  return 0;
}

}  // namespace

int cmd_model(const std::vector<std::string>& argv) {
  const std::string usage = "expected a subcommand: info | run | chat";
  if (argv.empty()) throw usage_error{usage};
  const std::string sub = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (sub == "info") return model_info(rest);
  if (sub == "run") return model_run(rest);
  if (sub == "chat") return model_chat(rest);
  if (sub == "--help" || sub == "-h") {
    std::printf("usage: evident model info|run|chat --model DIR ...\n");
    return 0;
  }
  throw usage_error{"unknown subcommand '" + sub + "' (" + usage + ")"};
}

}  // namespace evident::cli
