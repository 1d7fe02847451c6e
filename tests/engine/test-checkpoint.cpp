// Bad checkpoints fail with one clear evident::error naming the thing (tensor, field, file) and what was expected:
// missing tensor, wrong shape, truncated safetensors, unknown architecture, out-of-range config fields. Also the
// config parser's two spellings (layer_types vs full_attention_interval, rope_parameters vs top level).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "engine/model-config.h"
#include "engine/models/qwen3next.h"
#include "engine/safetensors.h"
#include "tests/test-util.h"

namespace {

namespace fs = std::filesystem;
using evident::engine::model_config;
using evident::engine::parse_model_config;
using evident::engine::qwen3next_model;
using json = nlohmann::json;

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// The message of the evident::error that f throws (fails the test when nothing is thrown).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const evident::error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not an evident::error: " << e.what();
    return {};
  }
  ADD_FAILURE() << "no error thrown";
  return {};
}

// A copy of tests/fixtures/tiny-b (single file) to damage.
fs::path copy_fixture(const std::string& name) {
  const fs::path src = evident::test::source_path("tests/fixtures/tiny-b");
  const fs::path dst = evident::test::scratch_dir(name);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src / f, dst / f);
  return dst;
}

// Rewrites model.safetensors with a modified header (the data section is kept as it is).
void edit_header(const fs::path& file, const std::function<void(json&)>& edit) {
  const std::string bytes = read(file);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; --i) hl = (hl << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  json h = json::parse(bytes.substr(8, hl));
  edit(h);
  std::string hs = h.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((hs.size() >> (8 * i)) & 0xff);
  write(file, out + hs + bytes.substr(8 + hl));
}

TEST(checkpoint, missing_tensor_is_named) {
  const fs::path d = copy_fixture("ckpt_missing");
  edit_header(d / "model.safetensors", [](json& h) { h.erase("model.layers.1.self_attn.k_proj.weight"); });
  const std::string msg = error_of([&] { qwen3next_model::load(d); });
  EXPECT_NE(msg.find("missing tensor model.layers.1.self_attn.k_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[16, 48]"), std::string::npos) << msg;
}

TEST(checkpoint, wrong_shape_names_expected_and_found) {
  const fs::path d = copy_fixture("ckpt_shape");
  edit_header(d / "model.safetensors", [](json& h) { h["model.layers.0.linear_attn.in_proj_ba.weight"]["shape"] = {48, 6}; });
  const std::string msg = error_of([&] { qwen3next_model::load(d); });
  EXPECT_NE(msg.find("model.layers.0.linear_attn.in_proj_ba.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected [6, 48], found [48, 6]"), std::string::npos) << msg;
}

TEST(checkpoint, truncated_file_fails_at_load) {
  const fs::path d = copy_fixture("ckpt_truncated");
  const std::string bytes = read(d / "model.safetensors");
  write(d / "model.safetensors", bytes.substr(0, bytes.size() - 1000));
  const std::string msg = error_of([&] { qwen3next_model::load(d); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  // A file shorter than its own header length.
  write(d / "model.safetensors", bytes.substr(0, 100));
  EXPECT_NE(error_of([&] { qwen3next_model::load(d); }).find("truncated"), std::string::npos);
  write(d / "model.safetensors", "abc");
  EXPECT_NE(error_of([&] { qwen3next_model::load(d); }).find("truncated"), std::string::npos);
}

TEST(checkpoint, missing_shard_and_missing_dir) {
  const fs::path d = evident::test::scratch_dir("ckpt_shard");
  const fs::path src = evident::test::source_path("tests/fixtures/tiny-a");
  for (const auto& e : fs::directory_iterator(src)) fs::copy_file(e.path(), d / e.path().filename());
  fs::remove(d / "model-00003-of-00008.safetensors");
  const std::string msg = error_of([&] { qwen3next_model::load(d); });
  EXPECT_NE(msg.find("model-00003-of-00008.safetensors"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { qwen3next_model::load(d / "nope"); }).find("config.json"), std::string::npos);
}

TEST(checkpoint, sharded_fixture_loads) {
  // tiny-a is saved in 8 shards with model.safetensors.index.json.
  evident::engine::safetensors_dir st(evident::test::source_path("tests/fixtures/tiny-a"));
  EXPECT_TRUE(st.has("model.layers.3.self_attn.q_proj.weight"));
  EXPECT_EQ(st.get("model.embed_tokens.weight").shape, (std::vector<int64_t>{512, 64}));
}

// The same checkpoint stored as F32 (exact copies of the bf16 values) and as F16 (bf16 values rounded to half) must
// load and give the bf16 model's logits: identical for F32 (same values, same summation order), within 1e-2 of the
// logit scale for F16 (a few weights below half's normal range lose bits; the rest are exact).
TEST(checkpoint, f32_and_f16_tensors_load) {
  using namespace evident::engine;
  const fs::path src = evident::test::source_path("tests/fixtures/tiny-b");
  safetensors_dir st(src);
  auto to_half = [](float f) -> uint16_t {  // round to nearest even, finite inputs of modest range
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const float a = std::fabs(f);
    if (a < 6.1035156e-05f) {  // subnormal half: multiples of 2^-24
      return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
    }
    std::memcpy(&u, &a, 4);
    uint32_t mant = u & 0x7fffffu, exp = (u >> 23) - 127 + 15;
    uint32_t h = (exp << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  };
  std::vector<float> ref_logits;
  const std::vector<int32_t> ids = {1, 50, 700, 3, 99, 1000, 12, 12, 12, 5};
  auto logits_of = [&](const fs::path& dir) {
    auto m = qwen3next_model::load(dir);
    auto mem = m->new_sequence();
    std::vector<float> out(ids.size() * static_cast<size_t>(m->vocab_size()));
    m->forward(mem, ids.data(), static_cast<int64_t>(ids.size()), out.data(), true);
    return out;
  };
  ref_logits = logits_of(src);
  for (st_dtype dt : {st_dtype::f32, st_dtype::f16}) {
    const fs::path d = evident::test::scratch_dir(dt == st_dtype::f32 ? "ckpt_f32" : "ckpt_f16");
    fs::copy_file(src / "config.json", d / "config.json");
    std::vector<std::vector<unsigned char>> bufs;
    std::vector<tensor_to_write> tw;
    for (const auto& name : st.names()) {
      const auto v = to_f32(st.get(name));
      std::vector<unsigned char> b(v.size() * dtype_size(dt));
      for (size_t i = 0; i < v.size(); ++i) {
        if (dt == st_dtype::f32) {
          std::memcpy(b.data() + 4 * i, &v[i], 4);
        } else {
          const uint16_t h = to_half(v[i]);
          std::memcpy(b.data() + 2 * i, &h, 2);
        }
      }
      bufs.push_back(std::move(b));
      tw.push_back({name, dt, st.get(name).shape, bufs.back().data()});
    }
    write_safetensors(d / "model.safetensors", tw);
    const auto got = logits_of(d);
    double md = 0, mr = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      md = std::max(md, static_cast<double>(std::fabs(got[i] - ref_logits[i])));
      mr = std::max(mr, static_cast<double>(std::fabs(ref_logits[i])));
    }
    if (dt == st_dtype::f32)
      EXPECT_EQ(md, 0.0);
    else
      EXPECT_LT(md / mr, 1e-2);
    // The half decoder itself on a few exact values.
    EXPECT_EQ(half_to_float(0x3c00), 1.0f);
    EXPECT_EQ(half_to_float(0xc000), -2.0f);
    EXPECT_EQ(half_to_float(0x0001), 5.9604645e-08f);
    EXPECT_EQ(half_to_float(0x7bff), 65504.0f);
  }
}

json tiny_config() { return json::parse(read(evident::test::source_path("tests/fixtures/tiny-b/config.json"))); }

TEST(config, unknown_architecture) {
  json j = tiny_config();
  j["architectures"] = {"LlamaForCausalLM"};
  const std::string msg = error_of([&] { parse_model_config(j.dump()); });
  EXPECT_NE(msg.find("unsupported architecture \"LlamaForCausalLM\""), std::string::npos) << msg;
}

TEST(config, out_of_range_fields_are_named) {
  struct bad {
    const char* field;
    json value;
    const char* expect;
  };
  const std::vector<bad> cases = {
      {"num_key_value_heads", 4, "num_key_value_heads: found 4"},
      {"hidden_size", 0, "hidden_size: found 0"},
      {"num_experts_per_tok", 7, "num_experts_per_tok: found 7"},
      {"linear_num_value_heads", 4, "linear_num_value_heads: found 4"},
      {"rms_norm_eps", -1.0, "rms_norm_eps"},
      {"mlp_only_layers", json::array({9}), "mlp_only_layers[]: found 9"},
      {"eos_token_id", 5000, "eos_token_id: found 5000"},
      {"hidden_act", "gelu", "hidden_act"},
      {"vocab_size", "many", "vocab_size: expected an integer"},
      {"decoder_sparse_step", 0, "decoder_sparse_step: found 0"},
  };
  for (const auto& c : cases) {
    json j = tiny_config();
    j[c.field] = c.value;
    const std::string msg = error_of([&] { parse_model_config(j.dump()); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.field << ": " << msg;
  }
  json j = tiny_config();
  j["layer_types"] = {"linear_attention"};
  EXPECT_NE(error_of([&] { parse_model_config(j.dump()); }).find("layer_types (length)"), std::string::npos);
  j = tiny_config();
  j["rope_parameters"]["partial_rotary_factor"] = 1.5;
  EXPECT_NE(error_of([&] { parse_model_config(j.dump()); }).find("partial_rotary_factor"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_model_config("{not json"); }).find("not valid JSON"), std::string::npos);
}

TEST(config, both_spellings) {
  // tiny-vocab's config.json is written like the released checkpoints (top-level rope fields, interval).
  const model_config v = evident::engine::load_model_config(evident::test::source_path("tests/fixtures/tiny-vocab/config.json"));
  ASSERT_EQ(v.layer_types.size(), 4u);
  EXPECT_EQ(v.layer_types[3], evident::engine::layer_kind::full_attention);
  EXPECT_EQ(v.layer_types[0], evident::engine::layer_kind::linear_attention);
  EXPECT_EQ(v.rope_theta, 1e7);
  EXPECT_EQ(v.eos_token_ids, (std::vector<int64_t>{151645, 151643}));
  EXPECT_TRUE(v.tie_word_embeddings);
  // tiny-b: rope_parameters (partial 0.5) wins over the top-level partial_rotary_factor (0.25), as in transformers.
  const model_config b = parse_model_config(tiny_config().dump());
  EXPECT_EQ(b.partial_rotary_factor, 0.5);
  EXPECT_EQ(b.rotary_dim(), 8);
  EXPECT_FALSE(b.is_moe_layer(0));
  EXPECT_TRUE(b.is_moe_layer(1));
  // Parameter counts: tiny-b has 2 routed experts of 6 inactive per token... check total against the file.
  evident::engine::safetensors_dir st(evident::test::source_path("tests/fixtures/tiny-b"));
  int64_t n = 0;
  for (const auto& name : st.names()) n += st.get(name).numel();
  EXPECT_EQ(evident::engine::count_params(b).total, n);
  EXPECT_LT(evident::engine::count_params(b).active_per_token, n);
}

}  // namespace
