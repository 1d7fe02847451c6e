// CUDA graphs for decode steps (engine/cuda/decode-graph.h) through the scheduler's CUDA backend
// (engine/cuda/cuda-step-model.h): the same scheduled workload on two copies of the tiny-a model, one stepping
// eagerly and one replaying a graph per batch-size bucket (batch sizes shrink 6 -> 1 as requests finish, so buckets
// 8, 4, 2, 1 are captured and replayed with padding entries), gives the same logits and the same greedy tokens.
// Device sampling (cuda_step_model's kernels::sample after the step, graphs or not) draws what the kernels' CPU
// reference draws from the same logits rows. serving_engine over the graphed backend gives concurrent callers the
// tokens the scheduler gives them in one thread.
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "engine/cuda/cuda-model.h"
#include "engine/cuda/cuda-step-model.h"
#include "engine/scheduler.h"
#include "engine/serving.h"
#include "tests/engine/fixture.h"
#include "tests/engine/forwarding-model.h"
#include "tests/test-util.h"

using namespace evident::engine;

namespace {

// Forwards to a backend and keeps a copy of every logits row it returns. It does not report supports_argmax() or
// supports_sampling(), so the scheduler asks it for logits only.
class recording_model final : public evident::test::forwarding_model {
 public:
  using forwarding_model::forwarding_model;
  bool supports_argmax() const override { return false; }
  bool supports_sampling() const override { return false; }
  void step(const step_batch& b, const step_output& out) override {
    inner_.step(b, out);
    rows.insert(rows.end(), out.logits, out.logits + b.n_logits() * vocab_size());
    decode_steps += b.n_decode == static_cast<int64_t>(b.entries.size()) ? 1 : 0;
  }
  std::vector<float> rows;
  int decode_steps = 0;
};

std::vector<request_params> workload(int64_t V) {
  std::vector<request_params> ps;
  uint64_t x = 99;
  const int64_t lens[] = {5, 17, 64, 3, 40, 9};
  const int max_tokens[] = {12, 3, 9, 16, 5, 7};  // finish at different steps: decode batches of 6, 5, 4, 3, 2, 1
  for (int i = 0; i < 6; ++i) {
    request_params p;
    for (int64_t t = 0; t < lens[i]; ++t) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      p.prompt.push_back(static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(V)));
    }
    p.sampling.temperature = 0;
    p.sampling.max_tokens = max_tokens[i];
    ps.push_back(p);
  }
  return ps;
}

std::map<size_t, std::vector<int32_t>> run(step_model_i& backend, const std::vector<request_params>& ps) {
  scheduler_config cfg;
  cfg.token_budget = 64;
  scheduler s(backend, cfg);
  std::vector<request_id> ids;
  for (const auto& p : ps) ids.push_back(s.submit(p).id);
  std::map<request_id, std::vector<int32_t>> got;
  while (s.has_work())
    for (const auto& e : s.step())
      if (e.kind == scheduler_event::token) got[e.id].push_back(e.token_id);
  std::map<size_t, std::vector<int32_t>> out;
  for (size_t i = 0; i < ids.size(); ++i) out[i] = got[ids[i]];
  return out;
}

cuda_model_options tiny_options() {
  cuda_model_options o;
  o.max_sequences = 8;
  o.max_context = 512;
  o.max_step_tokens = 256;
  o.max_step_entries = 16;
  o.max_logit_rows = 16;
  o.kv_blocks = 256;
  return o;
}

}  // namespace

TEST(decode_graph, replay_matches_eager) {
  EV_REQUIRE_CUDA();
  const auto dir = evident::test::source_path("tests/fixtures/tiny-a");
  auto m_eager = cuda_model::load(dir, tiny_options());
  auto m_graph = cuda_model::load(dir, tiny_options());
  const auto ps = workload(m_eager->vocab_size());

  // Logits path (the scheduler samples on the host): graph replays give the eager logits. Both run the same kernels
  // on the same inputs; the tolerance leaves room for kernels whose fp32 reductions use atomics (order may change
  // between runs, ~1e-6 relative), which can flip a bf16 rounding of an activation (2^-9 relative) and carry it to
  // the logits through 4 layers; 1e-2 of the largest logit is well below what a wrong slot, position or padding row
  // would cause (those change the logits completely).
  cuda_step_model eager(*m_eager, {false, {1, 2, 4, 8}});
  cuda_step_model graphed(*m_graph, {true, {1, 2, 4, 8}});
  recording_model rec_eager(eager), rec_graph(graphed);
  const auto tok_eager = run(rec_eager, ps);
  const auto tok_graph = run(rec_graph, ps);
  EXPECT_EQ(tok_eager, tok_graph);
  ASSERT_EQ(rec_eager.rows.size(), rec_graph.rows.size());
  EXPECT_LT(evident::test::rel_max_diff(rec_graph.rows.data(), rec_eager.rows.data(), rec_eager.rows.size()), 1e-2);
  const auto& gs = graphed.graph_stats();
  EXPECT_GE(gs.captures, 2);  // buckets 2 and 1 at least (the 16-token request decodes alone for 4 steps)
  EXPECT_GT(gs.replays, gs.captures);
  EXPECT_EQ(eager.graph_stats().replays, 0);
  EXPECT_GT(rec_graph.decode_steps, 10);

  // Argmax path (greedy on the device, ids copied inside the graph): same tokens as the logits path.
  const auto tok_graph_argmax = run(graphed, ps);
  EXPECT_EQ(tok_graph_argmax, tok_eager);
  const auto tok_eager_argmax = run(eager, ps);
  EXPECT_EQ(tok_eager_argmax, tok_eager);
  for (const auto& [i, t] : tok_eager) EXPECT_EQ(t.size(), static_cast<size_t>(ps[i].sampling.max_tokens)) << i;
}

namespace {

// Forwards to a backend, always asking for the logits too, and checks every sampled id against draw_row_on_host
// (kernels::fill_uniforms_ref + kernels::sample_ref) on the logits row of the same step.
class sampling_checker final : public evident::test::forwarding_model {
 public:
  using forwarding_model::forwarding_model;
  void step(const step_batch& b, const step_output& out) override {
    const int64_t V = vocab_size();
    step_output o = out;
    rows_.resize(static_cast<size_t>(b.n_logits() * V));
    if (!o.logits) o.logits = rows_.data();
    inner_.step(b, o);
    if (!out.sampled) return;
    for (int64_t r = 0; r < b.n_logits(); ++r) {
      const row_sampling& rs = b.sampling[static_cast<size_t>(r)];
      if (rs.temperature <= 0) continue;  // placeholder rows of argmax / host requests
      ++drawn;
      mismatches += out.sampled[r] != draw_row_on_host(o.logits + r * V, V, rs) ? 1 : 0;
      decode_only_draws += b.n_decode == static_cast<int64_t>(b.entries.size()) ? 1 : 0;
    }
  }
  int drawn = 0, mismatches = 0, decode_only_draws = 0;

 private:
  std::vector<float> rows_;
};

}  // namespace

TEST(decode_graph, device_sampling_matches_reference) {
  EV_REQUIRE_CUDA();
  const auto dir = evident::test::source_path("tests/fixtures/tiny-a");
  for (bool graphs : {false, true}) {
    auto m = cuda_model::load(dir, tiny_options());
    auto ps = workload(m->vocab_size());
    // Rows 1-4 draw on the device with different filters; 0 stays greedy (argmax) and 5 has a penalty (host draw),
    // so some steps also mix the three outputs.
    const float temps[] = {0.0f, 0.7f, 1.0f, 1.3f, 0.9f, 0.8f};
    for (size_t i = 0; i < ps.size(); ++i) {
      ps[i].sampling.temperature = temps[i];
      ps[i].sampling.seed = 1000 + i;
      ps[i].sampling.top_k = 0;
      ps[i].sampling.top_p = 1.0f;
    }
    ps[2].sampling.top_k = 20;
    ps[3].sampling.top_p = 0.9f;
    ps[4].sampling.min_p = 0.05f;
    ps[5].sampling.repetition_penalty = 1.2f;
    cuda_step_model backend(*m, {graphs, {1, 2, 4, 8}});
    sampling_checker chk(backend);
    const auto toks = run(chk, ps);
    EXPECT_EQ(chk.mismatches, 0) << "graphs " << graphs << ": of " << chk.drawn << " device draws";
    EXPECT_GT(chk.drawn, 20);
    EXPECT_GT(chk.decode_only_draws, 10);
    if (graphs) {
      EXPECT_GT(backend.graph_stats().replays, 0);
    }
    for (const auto& [i, t] : toks) EXPECT_EQ(t.size(), static_cast<size_t>(ps[i].sampling.max_tokens)) << i;
  }
}

// The engine thread (engine/serving.h) over the CUDA backend with graphs: six callers at once get the greedy tokens
// the single-threaded scheduler run gives. Arrivals differ, so steps hold other mixes of rows: that changes the GEMM
// shapes and with them the rounding, as eager (M = n) against graph (M = bucket) steps already do in
// replay_matches_eager, where the same workload's greedy tokens stay equal. A caller getting another caller's tokens,
// a lost token or a wrong slot would change whole streams.
TEST(decode_graph, serving_engine_concurrent_callers) {
  EV_REQUIRE_CUDA();
  const auto dir = evident::test::source_path("tests/fixtures/tiny-a");
  auto m = cuda_model::load(dir, tiny_options());
  const auto ps = workload(m->vocab_size());
  cuda_step_model backend(*m, {true, {1, 2, 4, 8}});
  const auto want = run(backend, ps);
  scheduler_config cfg;
  cfg.token_budget = 64;
  std::vector<serving_result> got(ps.size());
  {
    serving_engine eng(backend, cfg);
    std::vector<std::thread> th;
    for (size_t i = 0; i < ps.size(); ++i)
      th.emplace_back([&, i] { got[i] = eng.generate(ps[i], [](int32_t) { return true; }); });
    for (auto& t : th) t.join();
  }
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(got[i].finish_reason, "length") << i << " " << got[i].message;
    EXPECT_EQ(got[i].tokens, want.at(i)) << "caller " << i;
  }
}

// The step entries a model is given for serving through cuda_step_model (host code; needs no GPU): the largest graph
// bucket or max_sequences, whichever is more, but never more than a step's tokens (each entry, padding included,
// takes one), and only the buckets that fit.
TEST(decode_graph, fit_step_entries_caps_entries_and_buckets_at_the_step_tokens) {
  auto fit = [](int max_sequences, int max_step_tokens) {
    cuda_model_options m;
    m.max_sequences = max_sequences;
    m.max_step_tokens = max_step_tokens;
    cuda_step_options s;
    fit_step_entries(m, s);
    EXPECT_EQ(m.max_logit_rows, m.max_step_entries);
    return std::make_pair(m.max_step_entries, s.buckets);
  };
  const std::vector<int> all = {1, 2, 4, 8, 16, 32, 64};
  EXPECT_EQ(fit(16, 32768), std::make_pair(64, all));   // the local generator's defaults
  EXPECT_EQ(fit(100, 2048), std::make_pair(100, all));  // more sequences than the largest bucket
  EXPECT_EQ(fit(2, 24), std::make_pair(24, std::vector<int>{1, 2, 4, 8, 16}));  // a budget under the largest bucket
  EXPECT_EQ(fit(100, 40), std::make_pair(40, std::vector<int>{1, 2, 4, 8, 16, 32}));
}
