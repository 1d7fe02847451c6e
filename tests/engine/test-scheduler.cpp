// engine::scheduler: continuous batching and chunked prefill, over a fake backend (bookkeeping: fairness, chunk
// boundaries, admission, stop rules, cancellation, sampling) and over the CPU model on the tiny-a fixture (scheduled
// batched generation equals sequential generation per request).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <set>
#include <thread>

#include "engine/base/error.h"
#include "engine/generation.h"
#include "engine/memory.h"
#include "engine/models/qwen3next.h"
#include "engine/sampling.h"
#include "engine/scheduler.h"
#include "tests/test-util.h"

using namespace evident::engine;

namespace {

// Logits of the fake model: a deterministic function of a sequence's whole history (so any batching, chunking or
// position error changes the tokens). Values in [0, 8) with distinct maxima in practice.
void fake_logits(const std::vector<int32_t>& hist, int64_t V, float* out) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : hist) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
  for (int64_t v = 0; v < V; ++v) {
    uint64_t x = (h + static_cast<uint64_t>(v) * 0x9E3779B97F4A7C15ull);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    out[v] = static_cast<float>(x >> 40) / static_cast<float>(1 << 24) * 8.0f;
  }
}

// The device rule for one row (draw_row_on_host: kernels::fill_uniforms_ref + kernels::sample_ref), as the fake
// backend's "device"; the CUDA test (test_engine_decode_graph) checks the GPU kernels against the same function.
int32_t draw_row_on_host_vec(const std::vector<float>& row, const row_sampling& rs) {
  return draw_row_on_host(row.data(), static_cast<int64_t>(row.size()), rs);
}

// A backend that keeps each slot's token history, checks every entry against it and records the batches.
class fake_model final : public step_model_i {
 public:
  fake_model(int slots, int64_t max_ctx, int64_t block, int64_t blocks, bool argmax = false, bool sampling = false)
      : hist_(static_cast<size_t>(slots)),
        live_(static_cast<size_t>(slots), false),
        max_ctx_(max_ctx),
        block_(block),
        blocks_(blocks),
        argmax_(argmax),
        sampling_(sampling) {}
  int64_t vocab_size() const override { return V; }
  int max_sequences() const override { return static_cast<int>(hist_.size()); }
  int64_t max_context() const override { return max_ctx_; }
  int64_t kv_block_tokens() const override { return block_; }
  int64_t kv_blocks() const override { return blocks_; }
  bool supports_argmax() const override { return argmax_; }
  bool supports_sampling() const override { return sampling_; }
  void begin_sequence(int32_t s) override {
    EXPECT_FALSE(live_[static_cast<size_t>(s)]) << "slot " << s << " begun twice";
    live_[static_cast<size_t>(s)] = true;
    hist_[static_cast<size_t>(s)].clear();
    ++begun;
  }
  void end_sequence(int32_t s) override {
    EXPECT_TRUE(live_[static_cast<size_t>(s)]) << "slot " << s << " ended while not live";
    live_[static_cast<size_t>(s)] = false;
    ++ended;
  }
  void step(const step_batch& b, const step_output& out) override {
    batches.push_back(b);
    outputs.push_back({out.logits != nullptr, out.argmax != nullptr, out.sampled != nullptr});
    EXPECT_TRUE(out.argmax == nullptr || argmax_);
    EXPECT_TRUE(out.sampled == nullptr || sampling_);
    if (out.sampled) {
      EXPECT_EQ(static_cast<int64_t>(b.sampling.size()), b.n_logits());
    }
    std::set<int32_t> seen;
    int64_t r = 0, off = 0;
    for (size_t i = 0; i < b.entries.size(); ++i) {
      const auto& e = b.entries[i];
      EXPECT_TRUE(live_[static_cast<size_t>(e.slot)]);
      EXPECT_TRUE(seen.insert(e.slot).second) << "slot " << e.slot << " twice in one batch";
      EXPECT_EQ(e.offset, off);
      EXPECT_GE(e.n_tokens, 1);
      if (static_cast<int64_t>(i) < b.n_decode) {
        EXPECT_EQ(e.n_tokens, 1);
      }
      auto& h = hist_[static_cast<size_t>(e.slot)];
      EXPECT_EQ(e.pos, static_cast<int64_t>(h.size())) << "slot " << e.slot;
      EXPECT_LE(e.pos + e.n_tokens, max_ctx_);
      h.insert(h.end(), b.tokens.begin() + e.offset, b.tokens.begin() + e.offset + e.n_tokens);
      off += e.n_tokens;
      if (!e.want_logits) continue;
      std::vector<float> row(V);
      fake_logits(h, V, row.data());
      if (out.logits) std::copy(row.begin(), row.end(), out.logits + r * V);
      if (out.argmax) out.argmax[r] = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      if (out.sampled) out.sampled[r] = draw_row_on_host_vec(row, b.sampling[static_cast<size_t>(r)]);
      ++r;
    }
    EXPECT_EQ(off, static_cast<int64_t>(b.tokens.size()));
  }

  static constexpr int64_t V = 97;
  std::vector<step_batch> batches;
  struct asked {
    bool logits, argmax, sampled;
  };
  std::vector<asked> outputs;  // what each step asked for
  int begun = 0, ended = 0;

 private:
  std::vector<std::vector<int32_t>> hist_;
  std::vector<bool> live_;
  int64_t max_ctx_, block_, blocks_;
  bool argmax_, sampling_;
};

// What one request generates alone, sampled token by token from the fake's logits.
std::vector<int32_t> sequential_fake(const request_params& p) {
  sampler smp(p.sampling);
  smp.set_prompt(p.prompt);
  std::vector<int32_t> hist = p.prompt, out;
  std::vector<float> row(fake_model::V);
  for (int i = 0; i < p.sampling.max_tokens; ++i) {
    fake_logits(hist, fake_model::V, row.data());
    const int32_t t = smp.sample(row.data(), fake_model::V);
    smp.accept(t);
    out.push_back(t);
    if (std::find(p.stop_ids.begin(), p.stop_ids.end(), t) != p.stop_ids.end()) break;
    hist.push_back(t);
  }
  return out;
}

// The same with device draws: token i is draw_row_on_host with the request's params, its seed and step i.
std::vector<int32_t> sequential_fake_device(const request_params& p) {
  std::vector<int32_t> hist = p.prompt, out;
  std::vector<float> row(fake_model::V);
  row_sampling rs;
  rs.temperature = p.sampling.temperature;
  rs.top_k = p.sampling.top_k;
  rs.top_p = p.sampling.top_p;
  rs.min_p = p.sampling.min_p;
  rs.seed = p.sampling.seed;
  for (int i = 0; i < p.sampling.max_tokens; ++i) {
    fake_logits(hist, fake_model::V, row.data());
    rs.step = i;
    const int32_t t = draw_row_on_host_vec(row, rs);
    out.push_back(t);
    if (std::find(p.stop_ids.begin(), p.stop_ids.end(), t) != p.stop_ids.end()) break;
    hist.push_back(t);
  }
  return out;
}

request_params make_request(int64_t n_prompt, int max_tokens, uint32_t seed, float temperature = 0) {
  request_params p;
  for (int64_t i = 0; i < n_prompt; ++i) p.prompt.push_back(static_cast<int32_t>((seed * 31 + i * 7) % fake_model::V));
  p.sampling.temperature = temperature;
  p.sampling.max_tokens = max_tokens;
  p.sampling.seed = seed + 1;
  return p;
}

struct run_log {
  std::map<request_id, std::vector<int32_t>> tokens;
  std::map<request_id, std::string> finish;
  std::map<request_id, std::string> message;
};

void collect(const std::vector<scheduler_event>& ev, run_log& log) {
  for (const auto& e : ev) {
    if (e.kind == scheduler_event::token) {
      EXPECT_EQ(log.finish.count(e.id), 0u) << "token after finish for " << e.id;
      log.tokens[e.id].push_back(e.token_id);
    } else {
      EXPECT_EQ(log.finish.count(e.id), 0u) << "second finish for " << e.id;
      log.finish[e.id] = e.finish_reason;
      log.message[e.id] = e.message;
    }
  }
}

void drain(scheduler& s, run_log& log, int max_steps = 1000000) {
  for (int i = 0; i < max_steps && s.has_work(); ++i) collect(s.step(), log);
  EXPECT_FALSE(s.has_work());
}

}  // namespace

// A decoding request gets one token in every step while a 100K-token prompt prefills beside it, and no step exceeds
// the budget.
TEST(scheduler, decode_not_starved_by_long_prompt) {
  fake_model m(4, 200000, 16, 200000 / 16, /*argmax=*/true);
  scheduler_config cfg;
  cfg.token_budget = 512;
  scheduler s(m, cfg);
  run_log log;
  auto small = make_request(10, 400, 1);
  const auto a = s.submit(small);
  ASSERT_TRUE(a.accepted) << a.reason;
  collect(s.step(), log);  // a's prompt; its first token
  ASSERT_EQ(log.tokens[a.id].size(), 1u);
  auto big_p = make_request(100000, 2, 2);
  const auto big = s.submit(big_p);
  ASSERT_TRUE(big.accepted) << big.reason;
  // While big prefills, every step carries a's decode first and big's chunk fills the rest of the budget.
  int steps = 0;
  while (s.state(big.id) == request_state::queued || s.state(big.id) == request_state::prefilling) {
    const size_t before = log.tokens[a.id].size();
    collect(s.step(), log);
    ++steps;
    const auto& b = s.last_batch();
    ASSERT_EQ(log.tokens[a.id].size(), before + 1) << "decode starved at step " << steps;
    EXPECT_EQ(b.n_decode, 1);
    EXPECT_LE(static_cast<int64_t>(b.tokens.size()), cfg.token_budget);
    ASSERT_EQ(b.entries.size(), 2u);
    if (s.state(big.id) == request_state::prefilling) {
      EXPECT_EQ(b.entries[1].n_tokens, cfg.token_budget - 1);
    }
  }
  EXPECT_EQ(steps, (100000 + 510) / 511);  // ceil(100000 / (512 - 1 decode))
  drain(s, log);
  EXPECT_EQ(log.tokens[a.id], sequential_fake(small));
  EXPECT_EQ(log.tokens[big.id], sequential_fake(big_p));
  EXPECT_EQ(log.finish[a.id], "length");
  EXPECT_EQ(m.begun, 2);
  EXPECT_EQ(m.ended, 2);
}

// With nobody decoding a step may carry prefill_only_budget prompt tokens; once a request decodes, token_budget
// applies again, so that decode's step stays short.
TEST(scheduler, prefill_only_budget) {
  fake_model m(4, 100000, 16, 100000);
  scheduler_config cfg;
  cfg.token_budget = 64;
  cfg.prefill_only_budget = 1000;
  scheduler s(m, cfg);
  run_log log;
  const auto pa = make_request(2500, 5, 1), pb = make_request(300, 3, 2);
  const auto a = s.submit(pa);
  std::vector<int32_t> sizes;
  for (int i = 0; i < 3; ++i) {
    collect(s.step(), log);
    EXPECT_EQ(s.last_batch().n_decode, 0);
    sizes.push_back(s.last_batch().entries.at(0).n_tokens);
  }
  EXPECT_EQ(sizes, (std::vector<int32_t>{1000, 1000, 500}));
  ASSERT_EQ(log.tokens[a.id].size(), 1u);
  const auto b = s.submit(pb);
  collect(s.step(), log);
  EXPECT_EQ(s.last_batch().n_decode, 1);
  ASSERT_EQ(s.last_batch().entries.size(), 2u);
  EXPECT_EQ(s.last_batch().entries[1].n_tokens, 63);  // token_budget - 1 decode
  drain(s, log);
  EXPECT_EQ(log.tokens[a.id], sequential_fake(pa));
  EXPECT_EQ(log.tokens[b.id], sequential_fake(pb));
  EXPECT_LE(s.stats().max_step_tokens, 1000);
  scheduler_config bad;
  bad.token_budget = 64;
  bad.prefill_only_budget = 32;
  EXPECT_THROW(scheduler(m, bad), evident::error);
}

// Chunks split at max_prefill_chunk and at the budget, positions follow on, only a prompt's last chunk asks for logits,
// several prompts share a step, decodes come first.
TEST(scheduler, chunk_boundaries) {
  fake_model m(8, 4096, 16, 4096);
  scheduler_config cfg;
  cfg.token_budget = 256;
  cfg.max_prefill_chunk = 100;
  scheduler s(m, cfg);
  run_log log;
  std::vector<request_params> ps = {make_request(250, 5, 1), make_request(30, 5, 2), make_request(1, 5, 3),
                                    make_request(201, 5, 4)};
  std::vector<request_id> ids;
  for (auto& p : ps) ids.push_back(s.submit(p).id);
  collect(s.step(), log);
  {
    // Step 1: 100 (first prompt, capped by max_prefill_chunk) + 30 + 1 + 100 = 231 <= 256.
    const auto& b = s.last_batch();
    ASSERT_EQ(b.entries.size(), 4u);
    EXPECT_EQ(b.n_decode, 0);
    std::vector<int32_t> n, want;
    for (const auto& e : b.entries) n.push_back(e.n_tokens), want.push_back(e.want_logits);
    EXPECT_EQ(n, (std::vector<int32_t>{100, 30, 1, 100}));
    EXPECT_EQ(want, (std::vector<int32_t>{0, 1, 1, 0}));
  }
  collect(s.step(), log);
  {
    // Step 2: decodes of requests 2 and 3 first, then 100 of the first prompt, then 100 of the fourth (cap), 202 < 256.
    const auto& b = s.last_batch();
    EXPECT_EQ(b.n_decode, 2);
    ASSERT_EQ(b.entries.size(), 4u);
    EXPECT_EQ(b.entries[2].pos, 100);
    EXPECT_EQ(b.entries[2].n_tokens, 100);
    EXPECT_EQ(b.entries[3].pos, 100);
    EXPECT_EQ(b.entries[3].n_tokens, 100);
  }
  collect(s.step(), log);
  {
    // Step 3: 2 decodes, the first prompt's last 50 (logits), the fourth's last 1 (logits).
    const auto& b = s.last_batch();
    ASSERT_EQ(b.entries.size(), 4u);
    EXPECT_EQ(b.entries[2].n_tokens, 50);
    EXPECT_TRUE(b.entries[2].want_logits);
    EXPECT_EQ(b.entries[3].n_tokens, 1);
    EXPECT_EQ(b.entries[3].pos, 200);
  }
  drain(s, log);
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(log.tokens[ids[i]], sequential_fake(ps[i])) << "request " << i;
    EXPECT_EQ(log.finish[ids[i]], "length");
  }
  for (const auto& b : m.batches) EXPECT_LE(static_cast<int64_t>(b.tokens.size()), cfg.token_budget);
}

// With every slot decoding, prefill still advances (the budget must exceed the slots, checked at construction).
TEST(scheduler, full_decode_batch_leaves_room_for_prefill) {
  fake_model m(4, 4096, 1, 1 << 20);
  scheduler_config cfg;
  cfg.token_budget = 4;
  EXPECT_THROW({ scheduler bad(m, cfg); }, evident::error);
  fake_model m2(6, 4096, 1, 1 << 20);
  cfg.token_budget = 7;
  scheduler s(m2, cfg);
  run_log log;
  std::vector<std::pair<request_id, request_params>> all;
  for (int i = 0; i < 5; ++i) {
    auto p = make_request(1, 200, static_cast<uint32_t>(i));
    all.emplace_back(s.submit(p).id, p);
  }
  auto big = make_request(100, 3, 9);
  all.emplace_back(s.submit(big).id, big);
  // Step 1: the five one-token prompts and 2 tokens of the long one; then 5 decodes + 2 prompt tokens per step.
  collect(s.step(), log);
  EXPECT_EQ(s.last_batch().entries.size(), 6u);
  for (int i = 0; i < 3; ++i) {
    collect(s.step(), log);
    const auto& b = s.last_batch();
    EXPECT_EQ(b.n_decode, 5);
    ASSERT_EQ(b.entries.size(), 6u);
    EXPECT_EQ(b.entries[5].n_tokens, 2);
    EXPECT_EQ(b.entries[5].pos, 2 + 2 * i);
  }
  drain(s, log);
  for (auto& [id, p] : all) EXPECT_EQ(log.tokens[id], sequential_fake(p));
}

// Requests that can never fit are rejected with a reason; those that do not fit now wait and run later.
TEST(scheduler, admission_rejects_and_queues) {
  // 2 slots; 10 blocks of 16 tokens = 160 tokens of KV; context 128.
  fake_model m(2, 128, 16, 10);
  scheduler s(m);
  run_log log;
  auto too_long = s.submit(make_request(100, 40, 1));  // 140 > context 128
  EXPECT_FALSE(too_long.accepted);
  EXPECT_NE(too_long.reason.find("context limit of 128"), std::string::npos) << too_long.reason;
  auto empty = s.submit(make_request(0, 4, 1));
  EXPECT_FALSE(empty.accepted);
  auto bad_id = make_request(4, 4, 1);
  bad_id.prompt[2] = static_cast<int32_t>(fake_model::V);
  auto bad = s.submit(bad_id);
  EXPECT_FALSE(bad.accepted);
  EXPECT_NE(bad.reason.find("prompt token 2"), std::string::npos) << bad.reason;
  auto zero = make_request(4, 0, 1);
  EXPECT_FALSE(s.submit(zero).accepted);

  // 96 + 8 = 104 tokens = 7 blocks each: the second waits for the first's blocks though a slot is free.
  auto p1 = make_request(96, 8, 1), p2 = make_request(96, 8, 2), p3 = make_request(8, 8, 3);
  auto r1 = s.submit(p1), r2 = s.submit(p2), r3 = s.submit(p3);
  ASSERT_TRUE(r1.accepted && r2.accepted && r3.accepted);
  collect(s.step(), log);
  EXPECT_EQ(log.finish[too_long.id], "rejected");
  EXPECT_NE(log.message[too_long.id].find("exceeds"), std::string::npos);
  EXPECT_EQ(log.finish[empty.id], "rejected");
  EXPECT_EQ(s.state(r1.id), request_state::decoding);
  EXPECT_EQ(s.state(r2.id), request_state::queued);
  EXPECT_EQ(s.state(r3.id), request_state::queued);  // head-of-line: no overtaking of r2
  EXPECT_EQ(s.free_kv_blocks(), 3);
  EXPECT_EQ(s.n_running(), 1);
  while (s.state(r1.id) != request_state::finished) collect(s.step(), log);
  collect(s.step(), log);
  EXPECT_NE(s.state(r2.id), request_state::queued);
  EXPECT_NE(s.state(r3.id), request_state::queued);  // 7 + 1 blocks fit now
  drain(s, log);
  EXPECT_EQ(log.tokens[r1.id], sequential_fake(p1));
  EXPECT_EQ(log.tokens[r2.id], sequential_fake(p2));
  EXPECT_EQ(log.tokens[r3.id], sequential_fake(p3));
  EXPECT_EQ(s.free_kv_blocks(), 10);

  // Whole-pool rejection: a context big enough but blocks not.
  fake_model m2(2, 1000, 16, 10);
  scheduler s2(m2);
  auto r = s2.submit(make_request(150, 20, 1));
  EXPECT_FALSE(r.accepted);
  EXPECT_NE(r.reason.find("KV blocks"), std::string::npos) << r.reason;
}

// Slots bound concurrency: with 2 slots the third request waits and then reuses a slot.
TEST(scheduler, slots_are_reused) {
  fake_model m(2, 1024, 16, 1000);
  scheduler s(m);
  run_log log;
  std::vector<request_params> ps = {make_request(5, 3, 1), make_request(6, 9, 2), make_request(7, 4, 3)};
  std::vector<request_id> ids;
  for (auto& p : ps) ids.push_back(s.submit(p).id);
  collect(s.step(), log);
  EXPECT_EQ(s.n_running(), 2);
  EXPECT_EQ(s.n_queued(), 1);
  drain(s, log);
  for (size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(log.tokens[ids[i]], sequential_fake(ps[i]));
  EXPECT_EQ(m.begun, 3);
  EXPECT_EQ(m.ended, 3);
}

// Stop ids end a request after the stop token is reported; max_tokens ends it with "length".
TEST(scheduler, stop_ids_and_max_tokens) {
  fake_model m(4, 1024, 16, 1000);
  scheduler s(m);
  auto p = make_request(12, 50, 7);
  const auto free_run = sequential_fake(p);
  ASSERT_GE(free_run.size(), 5u);
  auto stopping = p;
  stopping.stop_ids = {free_run[3], 1000};
  // sequential_fake(stopping) stops at the first occurrence of free_run[3] (possibly earlier than index 3).
  const auto want = sequential_fake(stopping);
  run_log log;
  auto a = s.submit(stopping), b = s.submit(p);
  drain(s, log);
  EXPECT_EQ(log.tokens[a.id], want);
  EXPECT_EQ(log.tokens[a.id].back(), free_run[3]);
  EXPECT_EQ(log.finish[a.id], "stop");
  EXPECT_EQ(log.tokens[b.id].size(), 50u);
  EXPECT_EQ(log.finish[b.id], "length");
}

// Per-request sampling params: seeded temperature sampling, top-k and penalties give the tokens a lone sampler gives,
// beside greedy requests in the same batches (the backend's argmax path is used only when every row is greedy).
TEST(scheduler, per_request_sampling) {
  for (bool argmax : {false, true}) {
    fake_model m(8, 1024, 16, 1000, argmax);
    scheduler_config cfg;
    cfg.token_budget = 40;
    scheduler s(m, cfg);
    std::vector<request_params> ps = {make_request(30, 20, 1, 0.0f), make_request(17, 20, 2, 0.8f),
                                      make_request(50, 20, 3, 1.3f), make_request(9, 20, 4, 0.0f)};
    ps[2].sampling.top_k = 5;
    ps[3].sampling.repetition_penalty = 1.3f;
    ps[1].sampling.presence_penalty = 0.5f;
    run_log log;
    std::vector<request_id> ids;
    for (auto& p : ps) ids.push_back(s.submit(p).id);
    drain(s, log);
    for (size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(log.tokens[ids[i]], sequential_fake(ps[i])) << "request " << i;
  }
}

// With a backend that samples on the device, requests without penalties draw there (by kernels::sample's rule with
// their seed and token index) and penalised ones on the host, in the same batches; each gets the tokens it gets
// alone, so its draws do not depend on its batch mates. Logits reach the host only in steps with a host row.
TEST(scheduler, device_sampling_per_request) {
  fake_model m(8, 1024, 16, 1000, /*argmax=*/true, /*sampling=*/true);
  scheduler_config cfg;
  cfg.token_budget = 40;
  scheduler s(m, cfg);
  std::vector<request_params> ps = {make_request(30, 20, 1, 0.0f), make_request(17, 20, 2, 0.8f),
                                    make_request(50, 20, 3, 1.3f), make_request(9, 20, 4, 1.0f),
                                    make_request(12, 30, 5, 0.7f)};
  ps[2].sampling.top_k = 5;
  ps[3].sampling.repetition_penalty = 1.3f;  // host draw
  ps[1].sampling.top_p = 0.7f;
  ps[4].sampling.min_p = 0.2f;
  ps[4].sampling.top_k = 0;
  ps[4].sampling.top_p = 1.0f;
  run_log log;
  std::vector<request_id> ids;
  for (auto& p : ps) ids.push_back(s.submit(p).id);
  drain(s, log);
  EXPECT_EQ(log.tokens[ids[0]], sequential_fake(ps[0])) << "greedy (argmax)";
  EXPECT_EQ(log.tokens[ids[3]], sequential_fake(ps[3])) << "penalised (host sampler)";
  for (size_t i : {1u, 2u, 4u}) EXPECT_EQ(log.tokens[ids[i]], sequential_fake_device(ps[i])) << "request " << i;
  // The device draws differ from the host sampler's stream (so the check above is not vacuous).
  EXPECT_NE(log.tokens[ids[1]], sequential_fake(ps[1]));
  // Steps with the penalised request's rows ask for logits; once it has finished (20 tokens, the longest request
  // runs 30), no step does.
  int with_logits = 0, without = 0;
  for (const auto& a : m.outputs) (a.logits ? with_logits : without) += 1;
  EXPECT_GT(with_logits, 0);
  EXPECT_GT(without, 0);
  EXPECT_FALSE(m.outputs.back().logits);
  EXPECT_TRUE(m.outputs.back().sampled);
}

// Cancel a queued request (never begins), a prefilling one and a decoding one; the others are unaffected.
TEST(scheduler, cancellation) {
  fake_model m(2, 100000, 16, 100000);
  scheduler_config cfg;
  cfg.token_budget = 64;
  scheduler s(m, cfg);
  run_log log;
  auto pd = make_request(4, 1000, 1), pp = make_request(5000, 10, 2), pq = make_request(4, 10, 3),
       pk = make_request(4, 10, 4);
  auto d = s.submit(pd), p = s.submit(pp), q = s.submit(pq), k = s.submit(pk);
  collect(s.step(), log);
  collect(s.step(), log);
  EXPECT_EQ(s.state(d.id), request_state::decoding);
  EXPECT_EQ(s.state(p.id), request_state::prefilling);
  EXPECT_EQ(s.state(q.id), request_state::queued);
  EXPECT_TRUE(s.cancel(q.id));
  EXPECT_FALSE(s.cancel(q.id));
  EXPECT_TRUE(s.cancel(p.id));
  collect(s.step(), log);
  EXPECT_EQ(log.finish[q.id], "cancelled");
  EXPECT_EQ(log.finish[p.id], "cancelled");
  EXPECT_EQ(s.state(k.id), request_state::decoding);  // took p's slot
  for (int i = 0; i < 3; ++i) collect(s.step(), log);
  EXPECT_TRUE(s.cancel(d.id));
  drain(s, log);
  EXPECT_EQ(log.finish[d.id], "cancelled");
  EXPECT_EQ(log.tokens[q.id].size(), 0u);
  EXPECT_EQ(log.tokens[k.id], sequential_fake(pk));
  const auto want_d = sequential_fake(pd);
  ASSERT_LE(log.tokens[d.id].size(), want_d.size());
  EXPECT_TRUE(std::equal(log.tokens[d.id].begin(), log.tokens[d.id].end(), want_d.begin()));
  EXPECT_FALSE(s.cancel(12345));
  EXPECT_EQ(m.begun, m.ended);
  EXPECT_EQ(s.free_kv_blocks(), 100000 / 1);
}

// Requests arriving while others run, in the middle of prefills and decodes.
TEST(scheduler, arrivals_at_any_time) {
  fake_model m(3, 4096, 8, 4096 / 8 * 3);
  scheduler_config cfg;
  cfg.token_budget = 48;
  scheduler s(m, cfg);
  run_log log;
  std::vector<std::pair<request_id, request_params>> all;
  for (int t = 0; t < 60; ++t) {
    if (t % 7 == 0) {
      auto p = make_request(13 + t * 5, 3 + t % 5, static_cast<uint32_t>(t));
      all.emplace_back(s.submit(p).id, p);
    }
    collect(s.step(), log);
  }
  drain(s, log);
  for (auto& [id, p] : all) {
    EXPECT_EQ(log.tokens[id], sequential_fake(p)) << "request " << id;
    EXPECT_EQ(log.finish[id], "length");
  }
}

// The CPU model on tiny-a: requests of different lengths, scheduled with small budgets (chunked, mixed with decodes)
// give exactly the greedy tokens that generate_tokens gives each one alone. Exact token equality is the right check:
// both paths run the same fp32 forward; only chunk boundaries differ, which moves logits by rounding (~1e-6 relative)
// and could flip an argmax only where two logits tie within that, which random 512-way logits do not.
TEST(scheduler, cpu_model_matches_sequential_generation) {
  const auto dir = evident::test::source_path("tests/fixtures/tiny-a");
  auto model = qwen3next_model::load(dir);
  const int64_t V = model->vocab_size();
  std::vector<std::vector<int32_t>> prompts;
  uint64_t x = 12345;
  for (int64_t len : {1, 7, 64, 65, 130, 23}) {
    std::vector<int32_t> p;
    for (int64_t i = 0; i < len; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      p.push_back(static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(V)));
    }
    prompts.push_back(p);
  }
  const int max_tokens = 12;
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : prompts) {
    sampling_params sp;
    sp.temperature = 0;
    sampler smp(sp);
    auto mem = model->new_sequence();
    want.push_back(generate_tokens(*model, mem, p, smp, max_tokens, {}, nullptr).tokens);
  }
  for (int64_t budget : {16, 50}) {
    cpu_step_model backend(*model, 4, 1024, 4096);
    scheduler_config cfg;
    cfg.token_budget = budget;
    scheduler s(backend, cfg);
    run_log log;
    std::vector<request_id> ids;
    for (size_t i = 0; i < prompts.size(); ++i) {
      request_params rp;
      rp.prompt = prompts[i];
      rp.sampling.temperature = 0;
      rp.sampling.max_tokens = max_tokens;
      ids.push_back(s.submit(rp).id);
      collect(s.step(), log);  // arrivals interleave with running steps
    }
    drain(s, log);
    for (size_t i = 0; i < prompts.size(); ++i)
      EXPECT_EQ(log.tokens[ids[i]], want[i])
          << "prompt " << i << " (" << prompts[i].size() << " tokens), budget " << budget;
    EXPECT_GT(s.stats().steps, 0);
    EXPECT_LE(s.stats().max_step_tokens, std::max<int64_t>(budget, 4));
  }
}

// submit() and cancel() from another thread while the engine thread steps: every request finishes exactly once, the
// uncancelled ones with their sequential tokens.
TEST(scheduler, submit_and_cancel_from_another_thread) {
  fake_model m(4, 4096, 16, 4096);
  scheduler_config cfg;
  cfg.token_budget = 32;
  scheduler s(m, cfg);
  std::vector<std::pair<request_id, request_params>> all;
  std::atomic<bool> done{false};
  std::set<request_id> cancel_accepted;  // written by the client thread, read after join
  std::thread client([&] {
    for (int i = 0; i < 40; ++i) {
      auto p = make_request(5 + i % 37, 2 + i % 9, static_cast<uint32_t>(i));
      const auto r = s.submit(p);
      all.emplace_back(r.id, p);
      if (i % 5 == 4 && s.cancel(all[static_cast<size_t>(i - 2)].first))
        cancel_accepted.insert(all[static_cast<size_t>(i - 2)].first);
      std::this_thread::yield();
    }
    done = true;
  });
  run_log log;
  while (!done || s.has_work()) collect(s.step(), log);
  client.join();
  drain(s, log);
  int cancelled = 0;
  for (auto& [id, p] : all) {
    ASSERT_EQ(log.finish.count(id), 1u) << id;
    if (log.finish[id] == "cancelled") {
      // Only a request whose cancel() was accepted ends "cancelled" (one that finished in the step in flight may
      // still end "length").
      EXPECT_EQ(cancel_accepted.count(id), 1u) << id;
      ++cancelled;
      continue;
    }
    EXPECT_EQ(log.finish[id], "length");
    EXPECT_EQ(log.tokens[id], sequential_fake(p)) << id;
  }
  EXPECT_EQ(m.begun, m.ended);
  EXPECT_LE(cancelled, static_cast<int>(cancel_accepted.size()));
}
