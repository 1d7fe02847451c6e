#include "engine/sampling.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "engine/base/error.h"

namespace evident::engine {

sampler::sampler(const sampling_params& params) : p_(params) {
  EV_THROW_IF_NOT_MSG(p_.temperature >= 0, "sampling: temperature must be >= 0, found ", p_.temperature);
  EV_THROW_IF_NOT_MSG(p_.top_k >= 0, "sampling: top_k must be >= 0, found ", p_.top_k);
  EV_THROW_IF_NOT_MSG(p_.top_p > 0 && p_.top_p <= 1, "sampling: top_p must be in (0, 1], found ", p_.top_p);
  EV_THROW_IF_NOT_MSG(p_.min_p >= 0 && p_.min_p <= 1, "sampling: min_p must be in [0, 1], found ", p_.min_p);
  EV_THROW_IF_NOT_MSG(p_.repetition_penalty > 0, "sampling: repetition_penalty must be > 0, found ",
                      p_.repetition_penalty);
  seed_ = p_.seed != 0 ? p_.seed
                       : static_cast<uint64_t>(std::chrono::high_resolution_clock::now().time_since_epoch().count());
  rng_.seed(seed_);
}

void sampler::set_prompt(const std::vector<int32_t>& prompt_ids) {
  seen_prompt_.clear();
  for (int32_t id : prompt_ids) ++seen_prompt_[id];
}

void sampler::accept(int32_t token) { ++seen_generated_[token]; }

void sampler::apply_penalties(float* logits, int64_t vocab) const {
  auto in_range = [&](int32_t id) { return id >= 0 && id < vocab; };
  if (p_.repetition_penalty != 1.0f) {
    const float r = p_.repetition_penalty;
    auto pen = [&](int32_t id) {
      if (!in_range(id)) return;
      float& l = logits[id];
      l = l > 0 ? l / r : l * r;
    };
    for (const auto& [id, _] : seen_prompt_) pen(id);
    for (const auto& [id, _] : seen_generated_)
      if (!seen_prompt_.count(id)) pen(id);
  }
  if (p_.presence_penalty != 0.0f)
    for (const auto& [id, _] : seen_generated_)
      if (in_range(id)) logits[id] -= p_.presence_penalty;
}

std::vector<float> sampler::distribution(float* logits, int64_t vocab) {
  EV_ASSERT(vocab > 0);
  apply_penalties(logits, vocab);
  std::vector<float> probs(static_cast<size_t>(vocab), 0.0f);
  if (p_.temperature == 0.0f) {
    probs[static_cast<size_t>(std::max_element(logits, logits + vocab) - logits)] = 1.0f;
    return probs;
  }
  const float inv_t = 1.0f / p_.temperature;
  for (int64_t i = 0; i < vocab; ++i) logits[i] *= inv_t;
  // Candidates sorted by logit, descending (ties: lower id first); only the top k when top_k is set.
  order_.resize(static_cast<size_t>(vocab));
  std::iota(order_.begin(), order_.end(), 0);
  auto cmp = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t keep = vocab;
  if (p_.top_k > 0 && p_.top_k < vocab) {
    keep = p_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), cmp);
  } else {
    std::sort(order_.begin(), order_.end(), cmp);
  }
  const float mx = logits[order_[0]];
  std::vector<double> p(static_cast<size_t>(keep));
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += (p[static_cast<size_t>(i)] = std::exp(static_cast<double>(logits[order_[static_cast<size_t>(i)]] - mx)));
  for (auto& v : p) v /= sum;
  if (p_.top_p < 1.0f) {
    double cum = 0;
    int64_t k = 0;
    while (k < keep) {
      cum += p[static_cast<size_t>(k)];
      ++k;
      if (cum >= p_.top_p) break;
    }
    keep = k;
  }
  if (p_.min_p > 0.0f) {
    const double thr = p_.min_p * p[0];
    int64_t k = 1;
    while (k < keep && p[static_cast<size_t>(k)] >= thr) ++k;
    keep = k;
  }
  double s = 0;
  for (int64_t i = 0; i < keep; ++i) s += p[static_cast<size_t>(i)];
  for (int64_t i = 0; i < keep; ++i)
    probs[static_cast<size_t>(order_[static_cast<size_t>(i)])] = static_cast<float>(p[static_cast<size_t>(i)] / s);
  return probs;
}

int32_t sampler::sample(float* logits, int64_t vocab) {
  if (p_.temperature == 0.0f) {
    apply_penalties(logits, vocab);
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  }
  const std::vector<float> probs = distribution(logits, vocab);
  // Walk the kept candidates in their sorted order so the draw does not depend on the vocabulary size.
  double total = 0;
  int64_t kept = 0;
  for (int64_t i = 0; i < vocab && probs[static_cast<size_t>(order_[static_cast<size_t>(i)])] > 0; ++i, ++kept)
    total += probs[static_cast<size_t>(order_[static_cast<size_t>(i)])];
  std::uniform_real_distribution<double> u(0.0, total);
  const double r = u(rng_);
  double cum = 0;
  for (int64_t i = 0; i < kept; ++i) {
    cum += probs[static_cast<size_t>(order_[static_cast<size_t>(i)])];
    if (r < cum) return order_[static_cast<size_t>(i)];
  }
  return order_[static_cast<size_t>(std::max<int64_t>(kept - 1, 0))];
}

}  // namespace evident::engine
