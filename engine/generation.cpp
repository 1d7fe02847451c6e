#include "engine/generation.h"

#include <algorithm>
#include <chrono>

#include "engine/base/error.h"

namespace evident::engine {

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

generation_result generate_tokens(const qwen3next_model& model, sequence_memory& mem, const std::vector<int32_t>& prompt,
                                  sampler& smp, int max_tokens, const std::vector<int32_t>& stop_ids,
                                  const token_callback& on_token, int64_t prefill_chunk) {
  EV_THROW_IF_NOT_MSG(!prompt.empty(), "generate: empty prompt");
  generation_result res;
  res.prompt_tokens = static_cast<int64_t>(prompt.size());
  const int64_t V = model.vocab_size();
  std::vector<float> logits(static_cast<size_t>(V));
  auto t0 = std::chrono::steady_clock::now();
  const int64_t n = static_cast<int64_t>(prompt.size());
  for (int64_t p = 0; p < n; p += prefill_chunk) {
    const int64_t len = std::min(prefill_chunk, n - p);
    model.forward(mem, prompt.data() + p, len, p + len == n ? logits.data() : nullptr);
  }
  res.prefill_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  res.finish_reason = "length";
  for (int i = 0; i < max_tokens; ++i) {
    const int32_t tok = smp.sample(logits.data(), V);
    smp.accept(tok);
    res.tokens.push_back(tok);
    const bool go_on = on_token ? on_token(tok) : true;
    if (std::find(stop_ids.begin(), stop_ids.end(), tok) != stop_ids.end()) {
      res.finish_reason = "stop";
      break;
    }
    if (!go_on) {
      res.finish_reason = "cancelled";
      break;
    }
    if (i + 1 == max_tokens) break;
    model.forward(mem, &tok, 1, logits.data());
  }
  res.decode_ms = ms_since(t0);
  return res;
}

stop_string_filter::stop_string_filter(std::vector<std::string> stops) {
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string stop_string_filter::push(const std::string& text) {
  if (stopped_) return {};
  pending_ += text;
  // A complete stop string: emit what precedes the earliest one, then stop.
  size_t cut = std::string::npos;
  for (const auto& s : stops_) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, cut);
    pending_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_)
    for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len)
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string stop_string_filter::flush() {
  if (stopped_) return {};
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace evident::engine
