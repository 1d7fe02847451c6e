// engine::local_generator end to end on the real-vocabulary fixture (tests/fixtures/tiny-vocab) with the real Qwen3
// tokenizer (../shared/models/qwen3-tokenizer): event order, finish reasons, usage, stop strings, cancellation, and
// prefix reuse giving the same tokens as a cold run; the scheduled engine ("cpu-scheduled": serving_engine over the
// CPU model, the path device "cuda" takes) giving the CPU engine's text, also for concurrent callers. The model is
// random, so the text is gibberish; what is checked is the protocol and the determinism of greedy decoding. Device
// "cuda" itself: test-local-generator-cuda.cpp.
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

local_generator_options opts() {
  local_generator_options o;
  o.model_dir = evident::test::source_path("tests/fixtures/tiny-vocab");
  o.tokenizer_path = evident::test::shared_path("models/qwen3-tokenizer/tokenizer.json");
  return o;
}

TEST(local_generator, streams_and_finishes) {
  local_generator g(opts());
  EXPECT_EQ(g.name(), "engine:tiny-vocab");
  const auto c = run(g, request("What colour is the sky?"));
  ASSERT_GE(c.kinds.size(), 2u);
  EXPECT_EQ(c.kinds.back(), event_kind::finish);
  EXPECT_EQ(c.kinds[c.kinds.size() - 2], event_kind::usage);
  // Every reasoning delta precedes every answer delta.
  bool answer_seen = false;
  for (auto k : c.kinds) {
    if (k == event_kind::answer_delta) answer_seen = true;
    if (k == event_kind::reasoning_delta) {
      EXPECT_FALSE(answer_seen);
    }
  }
  EXPECT_TRUE(c.finish == "length" || c.finish == "stop") << c.finish << " " << c.error;
  EXPECT_GT(c.usage.prompt_tokens, 20);
  EXPECT_GT(c.usage.completion_tokens, 0);
  EXPECT_LE(c.usage.completion_tokens, 24);
  // The Thinking template opens <think>: the random model never closes it, so everything is reasoning.
  EXPECT_EQ(c.usage.reasoning_tokens, c.usage.completion_tokens);
}

TEST(local_generator, prefix_reuse_gives_the_same_tokens) {
  local_generator warm(opts());
  const auto a = run(warm, request("What colour is the sky?"));
  const auto b = run(warm, request("What colour is grass?"));
  EXPECT_EQ(a.usage.cached_prompt_tokens, 0);
  EXPECT_GT(b.usage.cached_prompt_tokens, 15);  // the system message
  local_generator cold(opts());
  const auto b_cold = run(cold, request("What colour is grass?"));
  EXPECT_EQ(b_cold.usage.cached_prompt_tokens, 0);
  EXPECT_EQ(b.reasoning, b_cold.reasoning);
  EXPECT_EQ(b.answer, b_cold.answer);
}

TEST(local_generator, cancel_and_errors_end_with_finish) {
  local_generator g(opts());
  const auto c = run(g, request("Why?", 40), /*cancel_after=*/2);
  EXPECT_EQ(c.finish, "cancelled");
  generate_request bad = request("x");
  bad.messages = {{"robot", "hi"}};
  const auto e = run(g, bad);
  EXPECT_EQ(e.finish, "error");
  EXPECT_FALSE(e.error.empty());
  generate_request badp = request("x");
  badp.sampling.top_p = 0;
  EXPECT_EQ(run(g, badp).finish, "error");
}

local_generator_options scheduled_opts() {
  local_generator_options o = opts();
  o.device = "cpu-scheduled";
  o.max_sequences = 2;  // three concurrent callers below: one waits in the queue
  o.max_context = 256;
  o.token_budget = 16;    // prompts of ~40 tokens prefill in chunks beside the others' decodes
  o.prefill_budget = 24;  // and in chunks of 24 while nothing decodes
  return o;
}

// Greedy decoding through the scheduler gives the CPU engine's text (same fp32 forward; only chunking and batching
// differ, see scheduler.cpu_model_matches_sequential_generation), one caller at a time and three at once.
TEST(local_generator, scheduled_engine_gives_the_cpu_engines_text) {
  local_generator cpu(opts());
  local_generator sch(scheduled_opts());
  EXPECT_EQ(sch.name(), cpu.name());
  const std::vector<generate_request> reqs = {request("What colour is the sky?", 30), request("And grass?", 12),
                                              request("Why is the sky blue, in one line?", 20)};
  std::vector<collected> want;
  for (const auto& r : reqs) want.push_back(run(cpu, r));
  for (const auto& w : want) ASSERT_FALSE(w.reasoning.empty());  // something to compare
  for (size_t i = 0; i < reqs.size(); ++i) {
    const auto c = run(sch, reqs[i]);
    EXPECT_EQ(c.reasoning, want[i].reasoning) << i;
    EXPECT_EQ(c.answer, want[i].answer) << i;
    EXPECT_EQ(c.finish, want[i].finish) << i << " " << c.error;
    EXPECT_EQ(c.usage.prompt_tokens, want[i].usage.prompt_tokens) << i;
    EXPECT_EQ(c.usage.completion_tokens, want[i].usage.completion_tokens) << i;
    EXPECT_EQ(c.usage.cached_prompt_tokens, 0) << i;
    EXPECT_EQ(c.kinds.back(), event_kind::finish);
  }
  std::vector<collected> got(reqs.size());
  std::vector<std::thread> th;
  for (size_t i = 0; i < reqs.size(); ++i) th.emplace_back([&, i] { got[i] = run(sch, reqs[i]); });
  for (auto& t : th) t.join();
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(got[i].reasoning, want[i].reasoning) << "concurrent " << i;
    EXPECT_EQ(got[i].usage.completion_tokens, want[i].usage.completion_tokens) << "concurrent " << i;
  }
}

TEST(local_generator, scheduled_engine_cancel_reject_and_errors) {
  local_generator g(scheduled_opts());
  EXPECT_EQ(run(g, request("Why?", 40), /*cancel_after=*/2).finish, "cancelled");
  const auto big = run(g, request("Why?", 1000));  // prompt + max_tokens beyond max_context 256
  EXPECT_EQ(big.finish, "error");
  EXPECT_NE(big.error.find("request rejected"), std::string::npos) << big.error;
  generate_request bad = request("x");
  bad.messages = {{"robot", "hi"}};
  EXPECT_EQ(run(g, bad).finish, "error");
  generate_request badp = request("x");
  badp.sampling.top_p = 0;
  EXPECT_EQ(run(g, badp).finish, "error");
  EXPECT_EQ(run(g, request("Still serving?", 4)).finish, "length");  // the engine survived all of the above
  auto o = opts();
  o.device = "tpu";
  EXPECT_THROW(local_generator g_bad(o), evident::error);
}

}  // namespace
