// engine::serving_engine: several caller threads at once over the CPU model (tiny-a) through the scheduler's engine
// thread. Each caller gets exactly the tokens its prompt gives when generated alone (generate_tokens), while the
// requests share steps; cancellation from the callback, rejection, and a failing backend end requests with the
// documented finish reasons.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "engine/generation.h"
#include "engine/memory.h"
#include "engine/models/qwen3next.h"
#include "engine/sampling.h"
#include "engine/serving.h"
#include "tests/engine/forwarding-model.h"
#include "tests/test-util.h"

using namespace evident::engine;

namespace {

// Forwards to a backend; counts entries per step, can hold steps at a gate, and can throw from the n-th step.
class wrapped_model final : public evident::test::forwarding_model {
 public:
  using forwarding_model::forwarding_model;
  void step(const step_batch& b, const step_output& out) override {
    ++calls;
    while (!open.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (++steps == fail_at) throw std::runtime_error("injected device fault");
    max_entries = std::max(max_entries.load(), static_cast<int>(b.entries.size()));
    inner_.step(b, out);
  }
  std::atomic<bool> open{true};
  std::atomic<int> calls{0}, steps{0}, max_entries{0};  // calls: steps entered (also those held at the gate)
  int fail_at = -1;
};

std::vector<int32_t> prompt_of(int64_t len, uint64_t seed, int64_t V) {
  std::vector<int32_t> p;
  uint64_t x = seed;
  for (int64_t i = 0; i < len; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    p.push_back(static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(V)));
  }
  return p;
}

request_params greedy(std::vector<int32_t> prompt, int max_tokens) {
  request_params rp;
  rp.prompt = std::move(prompt);
  rp.sampling.temperature = 0;
  rp.sampling.max_tokens = max_tokens;
  return rp;
}

}  // namespace

// Six callers at once: each gets its own sequential greedy tokens (the same forward, only batching differs; see
// scheduler.cpu_model_matches_sequential_generation for why exact equality holds), in order, and the steps are shared.
TEST(serving, concurrent_callers_get_their_sequential_tokens) {
  auto model = qwen3next_model::load(evident::test::source_path("tests/fixtures/tiny-a"));
  const int64_t V = model->vocab_size();
  const int64_t lens[] = {1, 9, 64, 33, 5, 120};
  const int max_tokens = 10;
  std::vector<std::vector<int32_t>> prompts, want;
  for (int i = 0; i < 6; ++i) {
    prompts.push_back(prompt_of(lens[i], 7 + i, V));
    sampling_params sp;
    sp.temperature = 0;
    sampler smp(sp);
    auto mem = model->new_sequence();
    want.push_back(generate_tokens(*model, mem, prompts.back(), smp, max_tokens, {}, nullptr).tokens);
  }
  cpu_step_model cpu(*model, 4, 1024, 4096);  // 4 slots for 6 callers: two wait in the queue
  wrapped_model backend(cpu);
  backend.open = false;  // hold the first step until every caller has submitted, so steps are shared
  scheduler_config cfg;
  cfg.token_budget = 48;
  std::vector<serving_result> got(6);
  std::vector<std::vector<int32_t>> streamed(6);
  std::atomic<int> started{0};
  {
    serving_engine eng(backend, cfg);
    std::vector<std::thread> th;
    for (int i = 0; i < 6; ++i)
      th.emplace_back([&, i] {
        ++started;
        got[i] = eng.generate(greedy(prompts[i], max_tokens), [&, i](int32_t t) {
          streamed[i].push_back(t);
          return true;
        });
      });
    while (started.load() < 6) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    backend.open = true;
    for (auto& t : th) t.join();
    EXPECT_GT(eng.stats().steps, 0);
  }
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(got[i].finish_reason, "length") << i;
    EXPECT_EQ(got[i].tokens, want[i]) << "caller " << i << " (" << lens[i] << "-token prompt)";
    EXPECT_EQ(streamed[i], got[i].tokens) << i;
  }
  EXPECT_GE(backend.max_entries.load(), 2);  // requests shared steps
}

// Returning false from on_token cancels that request only; a request that can never fit is rejected with a reason.
TEST(serving, cancel_and_reject) {
  auto model = qwen3next_model::load(evident::test::source_path("tests/fixtures/tiny-a"));
  const int64_t V = model->vocab_size();
  cpu_step_model cpu(*model, 2, 256, 1024);
  serving_engine eng(cpu);
  std::vector<int32_t> long_tokens;
  std::thread other([&] {
    auto r = eng.generate(greedy(prompt_of(20, 3, V), 30), [](int32_t) { return true; });
    long_tokens = r.tokens;
    EXPECT_EQ(r.finish_reason, "length");
  });
  int seen = 0;
  auto r = eng.generate(greedy(prompt_of(10, 4, V), 50), [&](int32_t) { return ++seen < 3; });
  other.join();
  EXPECT_EQ(r.finish_reason, "cancelled");
  EXPECT_EQ(r.tokens.size(), 3u);
  EXPECT_EQ(long_tokens.size(), 30u);
  // The cancel reached the scheduler: the cancelled request decoded a few tokens at most past its third, not to 50.
  EXPECT_LT(eng.stats().decode_tokens, 29 + 2 + 8);

  auto big = eng.generate(greedy(prompt_of(200, 5, V), 100), [](int32_t) { return true; });
  EXPECT_EQ(big.finish_reason, "rejected");
  EXPECT_NE(big.message.find("exceeds the context limit of 256"), std::string::npos) << big.message;
  EXPECT_TRUE(big.tokens.empty());
  auto bad = greedy(prompt_of(5, 6, V), 5);
  bad.sampling.top_p = 0;  // the sampler refuses it: a rejection, not an exception
  auto badr = eng.generate(bad, [](int32_t) { return true; });
  EXPECT_EQ(badr.finish_reason, "rejected");
  EXPECT_NE(badr.message.find("top_p"), std::string::npos) << badr.message;
  // An exception from on_token leaves generate() and cancels the request; the engine keeps serving.
  EXPECT_THROW(eng.generate(greedy(prompt_of(6, 7, V), 20), [](int32_t) -> bool { throw std::runtime_error("x"); }),
               std::runtime_error);
  EXPECT_EQ(eng.generate(greedy(prompt_of(6, 8, V), 4), [](int32_t) { return true; }).finish_reason, "length");
}

// Destroying the engine while a caller waits ends that caller's request with "error" and waits for it to return.
TEST(serving, destructor_ends_waiting_callers) {
  auto model = qwen3next_model::load(evident::test::source_path("tests/fixtures/tiny-a"));
  cpu_step_model cpu(*model, 2, 256, 1024);
  wrapped_model backend(cpu);
  backend.open = false;  // the engine thread blocks in its first step, the caller waits for tokens
  serving_result r;
  std::atomic<bool> entered{false};
  auto eng = std::make_unique<serving_engine>(backend);
  std::thread caller([&] {
    entered = true;
    r = eng->generate(greedy(prompt_of(8, 9, model->vocab_size()), 20), [](int32_t) { return true; });
  });
  while (!entered.load() || backend.calls.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    backend.open = true;  // lets the engine thread finish its step so the destructor's join returns
  });
  eng.reset();
  caller.join();
  opener.join();
  EXPECT_EQ(r.finish_reason, "error");
  EXPECT_NE(r.message.find("shutting down"), std::string::npos) << r.message;
}

// A step that throws ends the live request with "error" and the failure's text; later requests get the same error
// at once (the engine does not step a backend in an unknown state).
TEST(serving, backend_failure_fails_live_and_later_requests) {
  auto model = qwen3next_model::load(evident::test::source_path("tests/fixtures/tiny-a"));
  const int64_t V = model->vocab_size();
  cpu_step_model cpu(*model, 2, 256, 1024);
  wrapped_model backend(cpu);
  backend.fail_at = 4;
  serving_engine eng(backend);
  auto r = eng.generate(greedy(prompt_of(8, 6, V), 20), [](int32_t) { return true; });
  EXPECT_EQ(r.finish_reason, "error");
  EXPECT_NE(r.message.find("injected device fault"), std::string::npos) << r.message;
  EXPECT_EQ(r.tokens.size(), 3u);  // step 1 prefills the prompt (token 1), steps 2-3 decode, step 4 throws
  auto later = eng.generate(greedy(prompt_of(8, 7, V), 5), [](int32_t) { return true; });
  EXPECT_EQ(later.finish_reason, "error");
  EXPECT_TRUE(later.tokens.empty());
}
