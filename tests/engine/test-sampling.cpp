// Sampling (greedy, temperature, top-k, top-p, min-p, penalties, seeds) and the generation loop / stop strings.
// Distributions are compared with probabilities computed here by hand (double precision, tolerance 1e-6: the
// sampler works in double after an fp32 temperature division). Empirical frequencies use 20000 draws: a binomial
// proportion's standard deviation is then <= 0.0036, and the bound 0.02 is > 5 sigma.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "engine/base/error.h"
#include "engine/generation.h"
#include "engine/models/qwen3next.h"
#include "engine/sampling.h"
#include "tests/test-util.h"

namespace {

using evident::engine::sampler;
using evident::engine::sampling_params;

sampling_params params(float t, int k = 0, float p = 1.0f, float min_p = 0.0f) {
  sampling_params s;
  s.temperature = t;
  s.top_k = k;
  s.top_p = p;
  s.min_p = min_p;
  s.seed = 42;
  return s;
}

std::vector<double> softmax(const std::vector<float>& l, double t) {
  double mx = *std::max_element(l.begin(), l.end()), s = 0;
  std::vector<double> p(l.size());
  for (size_t i = 0; i < l.size(); ++i) s += (p[i] = std::exp((l[i] - mx) / t));
  for (auto& v : p) v /= s;
  return p;
}

const std::vector<float> kLogits = {1.0f, 3.0f, 2.0f, 0.5f, 2.5f, -1.0f};

TEST(sampling, greedy_is_argmax) {
  sampler s(params(0));
  auto l = kLogits;
  EXPECT_EQ(s.sample(l.data(), 6), 1);
}

TEST(sampling, temperature_distribution) {
  sampler s(params(0.7f));
  auto l = kLogits;
  const auto d = s.distribution(l.data(), 6);
  const auto ref = softmax(kLogits, 0.7);
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(d[i], ref[i], 1e-6);
}

TEST(sampling, top_k_top_p_min_p) {
  {  // top-k 2 keeps ids 1 and 4
    sampler s(params(1.0f, 2));
    auto l = kLogits;
    const auto d = s.distribution(l.data(), 6);
    const double z = std::exp(3.0) + std::exp(2.5);
    EXPECT_NEAR(d[1], std::exp(3.0) / z, 1e-6);
    EXPECT_NEAR(d[4], std::exp(2.5) / z, 1e-6);
    EXPECT_EQ(d[0] + d[2] + d[3] + d[5], 0.0f);
  }
  {  // top-p: p(1)=0.45, p(4)=0.27 -> 0.73 < 0.8, p(2)=0.17 -> 0.89 >= 0.8: keeps {1, 4, 2}
    const auto ref = softmax(kLogits, 1.0);
    sampler s(params(1.0f, 0, 0.8f));
    auto l = kLogits;
    const auto d = s.distribution(l.data(), 6);
    const double z = ref[1] + ref[4] + ref[2];
    EXPECT_NEAR(d[1], ref[1] / z, 1e-6);
    EXPECT_NEAR(d[2], ref[2] / z, 1e-6);
    EXPECT_EQ(d[0], 0.0f);
  }
  {  // min-p 0.5: keeps tokens with p >= 0.5 p_max: exp(l - 3) >= 0.5 <=> l >= 3 - ln 2 = 2.31: {1, 4}
    sampler s(params(1.0f, 0, 1.0f, 0.5f));
    auto l = kLogits;
    const auto d = s.distribution(l.data(), 6);
    EXPECT_GT(d[4], 0.0f);
    EXPECT_EQ(d[2], 0.0f);
    EXPECT_NEAR(d[1] + d[4], 1.0, 1e-6);
  }
}

TEST(sampling, empirical_frequencies_follow_the_distribution) {
  sampler s(params(1.0f, 3));
  std::map<int, int> count;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto l = kLogits;
    ++count[s.sample(l.data(), 6)];
  }
  const double z = std::exp(3.0) + std::exp(2.5) + std::exp(2.0);
  EXPECT_NEAR(count[1] / double(n), std::exp(3.0) / z, 0.02);
  EXPECT_NEAR(count[4] / double(n), std::exp(2.5) / z, 0.02);
  EXPECT_NEAR(count[2] / double(n), std::exp(2.0) / z, 0.02);
  EXPECT_EQ(count[0] + count[3] + count[5], 0);
}

TEST(sampling, seeds_reproduce_and_differ) {
  auto draw = [](uint64_t seed) {
    auto p = params(1.0f);
    p.seed = seed;
    sampler s(p);
    std::vector<int> out;
    for (int i = 0; i < 50; ++i) {
      auto l = kLogits;
      out.push_back(s.sample(l.data(), 6));
    }
    return out;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

TEST(sampling, repetition_and_presence_penalties) {
  auto p = params(0);
  p.repetition_penalty = 2.0f;
  sampler s(p);
  s.set_prompt({1});
  auto l = kLogits;
  // logit 3 -> 1.5 (positive: divided), so 4 (2.5) wins.
  EXPECT_EQ(s.sample(l.data(), 6), 4);
  EXPECT_FLOAT_EQ(l[1], 1.5f);
  // Negative logits are multiplied.
  s.accept(5);
  l = kLogits;
  s.sample(l.data(), 6);
  EXPECT_FLOAT_EQ(l[5], -2.0f);

  auto q = params(0);
  q.presence_penalty = 1.0f;
  sampler s2(q);
  s2.set_prompt({4});  // the prompt does not count for presence
  s2.accept(1);
  l = kLogits;
  EXPECT_EQ(s2.sample(l.data(), 6), 4);  // 3 - 1 = 2 < 2.5
  EXPECT_FLOAT_EQ(l[1], 2.0f);
}

TEST(sampling, bad_params_are_rejected) {
  auto p = params(-1);
  EXPECT_THROW(sampler{p}, evident::error);
  p = params(1, 0, 0.0f);
  EXPECT_THROW(sampler{p}, evident::error);
}

TEST(stop_strings, hold_back_and_cut) {
  evident::engine::stop_string_filter f({"STOP", "\n\n"});
  EXPECT_EQ(f.push("Hello S"), "Hello ");
  EXPECT_EQ(f.push("T"), "");
  EXPECT_EQ(f.push("x"), "STx");
  EXPECT_EQ(f.push("ab\n"), "ab");
  EXPECT_EQ(f.push("\nrest"), "");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.push("more"), "");
  evident::engine::stop_string_filter g({"END"});
  EXPECT_EQ(g.push("aE"), "a");
  EXPECT_EQ(g.flush(), "E");
}

TEST(generation, greedy_loop_stops_on_stop_id_and_length) {
  const auto dir = evident::test::source_path("tests/fixtures/tiny-b");
  auto model = evident::engine::qwen3next_model::load(dir);
  const std::vector<int32_t> prompt = {5, 17, 300, 42, 7};
  auto p = params(0);
  // Run once for 8 tokens, then again with the 4th generated token as a stop id.
  sampler s1(p);
  auto mem = model->new_sequence();
  auto r1 = evident::engine::generate_tokens(*model, mem, prompt, s1, 8, {}, nullptr);
  ASSERT_EQ(r1.tokens.size(), 8u);
  EXPECT_EQ(r1.finish_reason, "length");
  EXPECT_EQ(mem.n_past, 5 + 7);  // the last token is not fed
  sampler s2(p);
  auto mem2 = model->new_sequence();
  const int32_t stop = r1.tokens[3];
  const auto first = std::find(r1.tokens.begin(), r1.tokens.end(), stop) - r1.tokens.begin();
  auto r2 = evident::engine::generate_tokens(*model, mem2, prompt, s2, 8, {stop}, nullptr, /*prefill_chunk=*/2);
  EXPECT_EQ(r2.finish_reason, "stop");
  EXPECT_EQ(static_cast<long>(r2.tokens.size()), first + 1);
  EXPECT_TRUE(std::equal(r2.tokens.begin(), r2.tokens.end(), r1.tokens.begin()));
  // Cancellation after 2 tokens.
  sampler s3(p);
  auto mem3 = model->new_sequence();
  int seen = 0;
  auto r3 = evident::engine::generate_tokens(*model, mem3, prompt, s3, 8, {}, [&](int32_t) { return ++seen < 2; });
  EXPECT_EQ(r3.finish_reason, "cancelled");
  EXPECT_EQ(r3.tokens.size(), 2u);
}

}  // namespace
