// Loading of the tiny Qwen3-Next reference fixtures (tests/fixtures/tiny-*/, made by
// tools/reference/make_tiny_qwen3next.py with transformers 5.17 in fp32 from the bf16 weights).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "tests/test-util.h"

namespace evident::test {

struct qwen3next_reference {
  std::vector<int32_t> prompt;        // prompt ids
  std::vector<int32_t> generated;     // greedy continuation (reference cached decode path)
  std::vector<int64_t> positions;     // positions (into prompt + generated) of the rows of `logits`
  std::vector<float> logits;          // fp32 [positions.size(), vocab]: one full forward pass
  std::vector<float> decode_logits;   // fp32 [generated.size(), vocab] or empty
  int64_t vocab = 0;
};

inline qwen3next_reference load_reference(const std::string& fixture_dir) {
  engine::safetensors_file f(fixture_dir + "/reference.safetensors");
  const auto& t = f.tensors();
  qwen3next_reference r;
  for (int64_t v : engine::to_i64(t.at("prompt_ids"))) r.prompt.push_back(static_cast<int32_t>(v));
  for (int64_t v : engine::to_i64(t.at("generated_ids"))) r.generated.push_back(static_cast<int32_t>(v));
  r.positions = engine::to_i64(t.at("logits_positions"));
  r.logits = engine::to_f32(t.at("logits"));
  r.vocab = t.at("logits").shape.at(1);
  if (t.count("decode_logits")) r.decode_logits = engine::to_f32(t.at("decode_logits"));
  return r;
}

// max |a - b| / max |b| over n values.
inline double rel_max_diff(const float* a, const float* b, size_t n) {
  double md = 0, mr = 0;
  for (size_t i = 0; i < n; ++i) {
    md = std::max(md, static_cast<double>(std::abs(a[i] - b[i])));
    mr = std::max(mr, static_cast<double>(std::abs(b[i])));
  }
  return mr > 0 ? md / mr : md;
}

}  // namespace evident::test
