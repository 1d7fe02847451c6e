// engine::sampler: picks the next token from a row of logits, following engine::sampling_params (generator.h).
//
// Pipeline, in the order transformers' generate() applies its processors:
//   1. repetition_penalty r (multiplicative, transformers' RepetitionPenaltyLogitsProcessor): for every token id seen
//      in the prompt or generated so far, logit > 0 ? logit / r : logit * r;
//   2. presence_penalty p (additive, OpenAI): logit -= p for every token id generated so far (prompt excluded);
//   3. temperature == 0 -> greedy: the argmax (lowest id on ties), steps 4-6 skipped;
//   4. logits / temperature;
//   5. top_k (keep the k largest), then top_p (keep the smallest set of most likely tokens whose probability sums to
//      at least top_p; the most likely token always stays), then min_p (drop tokens whose probability is below
//      min_p * the top probability), all on the softmax of what is left;
//   6. draw from the renormalised distribution with a 64-bit Mersenne Twister seeded by `seed` (0: from the clock).
// The same seed, params, prompt and logits give the same tokens on every run and machine.
//
// Thread-safety: none; one sampler per sequence.
#pragma once

#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

#include "engine/generator.h"

namespace evident::engine {

class sampler {
 public:
  explicit sampler(const sampling_params& params);

  // Token ids the repetition penalty applies to before any token is generated (the prompt).
  void set_prompt(const std::vector<int32_t>& prompt_ids);
  // Records a generated token (penalties apply to it from the next call on).
  void accept(int32_t token);

  // Picks a token. `logits` fp32 [vocab] is modified in place (penalties, temperature). Does not call accept().
  int32_t sample(float* logits, int64_t vocab);

  // The probabilities step 5 leaves (after penalties, temperature and the filters; zero elsewhere), for tests.
  // Greedy: one-hot on the argmax.
  std::vector<float> distribution(float* logits, int64_t vocab);

  uint64_t seed() const { return seed_; }

 private:
  void apply_penalties(float* logits, int64_t vocab) const;

  sampling_params p_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::unordered_map<int32_t, int> seen_prompt_;     // id -> count
  std::unordered_map<int32_t, int> seen_generated_;  // id -> count
  std::vector<int32_t> order_;                       // scratch
};

}  // namespace evident::engine
