// engine::local_generator with device "cuda" end to end, the path `evident serve --model DIR --device cuda` takes: the
// real-vocabulary fixture (tests/fixtures/tiny-vocab) loaded onto the GPU from its Hugging Face files, behind
// serving_engine (continuous batching, chunked prefill, CUDA graphs for decode steps, sampling on the device), with
// the real Qwen3 tokenizer and the Thinking chat template.
// The model is random, so the text is gibberish. Its numerics against the CPU engine and transformers are checked,
// teacher-forced, by tests/engine-cuda/test-cuda-model.cpp; free-running text is not compared with the CPU engine's
// here, because bf16 on the GPU and fp32 on the CPU may pick different tokens wherever two of 151936 random logits are
// nearly tied, and one such pick changes everything after it. What is checked: the protocol (event order, usage, the
// prompt token count equal to the CPU engine's, finish reasons), greedy decoding giving the same text on a repeat
// (graph replay against the first run's capture), concurrent callers, cancellation, admission limits and errors.
#include <gtest/gtest.h>

#include <thread>

#include "engine/base/error.h"
#include "engine/local-generator.h"
#include "tests/engine/generator-run.h"
#include "tests/test-util.h"

namespace {

using namespace evident::engine;
using evident::test::collected;
using evident::test::request;
using evident::test::run;

local_generator_options opts(const std::string& device) {
  local_generator_options o;
  o.model_dir = evident::test::source_path("tests/fixtures/tiny-vocab");
  o.tokenizer_path = evident::test::shared_path("models/qwen3-tokenizer/tokenizer.json");
  o.device = device;
  if (device == "cuda") {
    o.max_sequences = 2;    // three concurrent callers below: one waits in the queue
    o.max_context = 256;
    o.token_budget = 16;    // prompts of ~40 tokens prefill in chunks beside the others' decodes
    o.prefill_budget = 24;  // and in chunks of 24 while nothing decodes
  }
  return o;
}

// A finished stream: deltas, then usage, then finish; the Thinking template opens <think> and the random model never
// closes it, so every completion token is reasoning.
void expect_well_formed(const collected& c, int max_tokens, const std::string& what) {
  ASSERT_GE(c.kinds.size(), 3u) << what;
  EXPECT_EQ(c.kinds.back(), event_kind::finish) << what;
  EXPECT_EQ(c.kinds[c.kinds.size() - 2], event_kind::usage) << what;
  EXPECT_TRUE(c.finish == "length" || c.finish == "stop") << what << ": " << c.finish << " " << c.error;
  EXPECT_GT(c.usage.completion_tokens, 0) << what;
  EXPECT_LE(c.usage.completion_tokens, max_tokens) << what;
  if (c.finish == "length") {
    EXPECT_EQ(c.usage.completion_tokens, max_tokens) << what;
  }
  EXPECT_EQ(c.usage.reasoning_tokens, c.usage.completion_tokens) << what;
  EXPECT_EQ(c.usage.cached_prompt_tokens, 0) << what;  // no prefix cache on "cuda" yet
  EXPECT_FALSE(c.reasoning.empty()) << what;
}

TEST(local_generator_cuda, streams_repeats_and_serves_concurrent_callers) {
  EV_REQUIRE_CUDA();
  local_generator cpu(opts("cpu"));
  local_generator gpu(opts("cuda"));
  EXPECT_EQ(gpu.name(), cpu.name());
  const std::vector<std::pair<std::string, int>> qs = {
      {"What colour is the sky?", 30}, {"And grass?", 12}, {"Why is the sky blue, in one line?", 20}};
  std::vector<collected> first;
  for (const auto& [q, n] : qs) {
    const auto want = run(cpu, request(q, n));
    const auto c = run(gpu, request(q, n));
    expect_well_formed(c, n, q);
    // The same tokenizer and template on both: the same prompt.
    EXPECT_EQ(c.usage.prompt_tokens, want.usage.prompt_tokens) << q;
    EXPECT_GT(c.usage.prompt_tokens, 20) << q;
    first.push_back(c);
  }
  // Greedy decoding alone again (decode steps replay the graph captured by the first run): the same text.
  for (size_t i = 0; i < qs.size(); ++i) {
    const auto c = run(gpu, request(qs[i].first, qs[i].second));
    EXPECT_EQ(c.reasoning, first[i].reasoning) << "repeat " << i;
    EXPECT_EQ(c.usage.completion_tokens, first[i].usage.completion_tokens) << "repeat " << i;
  }
  // Three at once with room for two: one waits, all finish. Their batch differs from the single runs', so the GPU's
  // rounding may differ too (see the top): only the streams are checked.
  std::vector<collected> got(qs.size());
  std::vector<std::thread> th;
  for (size_t i = 0; i < qs.size(); ++i)
    th.emplace_back([&, i] { got[i] = run(gpu, request(qs[i].first, qs[i].second)); });
  for (auto& t : th) t.join();
  for (size_t i = 0; i < qs.size(); ++i) {
    expect_well_formed(got[i], qs[i].second, "concurrent " + std::to_string(i));
    EXPECT_EQ(got[i].usage.prompt_tokens, first[i].usage.prompt_tokens) << "concurrent " << i;
  }
}

TEST(local_generator_cuda, cancel_reject_and_errors) {
  EV_REQUIRE_CUDA();
  local_generator g(opts("cuda"));
  EXPECT_EQ(run(g, request("Why?", 40), /*cancel_after=*/2).finish, "cancelled");
  const auto big = run(g, request("Why?", 1000));  // prompt + max_tokens beyond max_context 256
  EXPECT_EQ(big.finish, "error");
  EXPECT_NE(big.error.find("request rejected"), std::string::npos) << big.error;
  generate_request bad = request("x", 8);
  bad.messages = {{"robot", "hi"}};
  EXPECT_EQ(run(g, bad).finish, "error");
  generate_request badp = request("x", 8);
  badp.sampling.top_p = 0;
  EXPECT_EQ(run(g, badp).finish, "error");
  const auto alive = run(g, request("Still serving?", 4));  // the engine survived all of the above
  expect_well_formed(alive, 4, "after the errors");
  auto o = opts("cuda");
  o.cuda_device = 64;  // no such device
  EXPECT_THROW(local_generator g_bad(o), evident::error);
}

}  // namespace
