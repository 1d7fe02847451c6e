#include "citation/reasoning.h"

namespace evident::citation {

namespace {
constexpr std::string_view k_open = "<think>";
constexpr std::string_view k_close = "</think>";

std::string trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

// Length of the longest suffix of `s` that is a proper prefix of `tag` (a tag possibly split across deltas).
size_t partial_tag_suffix(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n)
    if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
  return 0;
}
}  // namespace

split_text split_reasoning(std::string_view raw) {
  split_text out;
  std::string_view s = raw;
  const size_t lead = s.find_first_not_of(" \t\r\n");
  const bool opened = lead != std::string_view::npos && s.substr(lead, k_open.size()) == k_open;
  if (opened) s = s.substr(lead + k_open.size());
  const size_t close = s.find(k_close);
  if (close != std::string_view::npos) {
    out.reasoning = trim(s.substr(0, close));
    out.answer = trim(s.substr(close + k_close.size()));
  } else if (opened) {
    out.reasoning = trim(s);
  } else {
    out.answer = trim(s);
  }
  return out;
}

void reasoning_stream::emit_answer(std::string_view s, std::string* answer) {
  if (!answer_started_) {
    const size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string_view::npos) return;
    s = s.substr(b);
    answer_started_ = true;
  }
  answer->append(s);
}

void reasoning_stream::feed(std::string_view delta, std::string* reasoning, std::string* answer) {
  pending_.append(delta);
  while (true) {
    if (state_ == state::start) {
      const size_t lead = pending_.find_first_not_of(" \t\r\n");
      if (lead == std::string::npos) return;
      const std::string_view rest = std::string_view(pending_).substr(lead);
      if (rest.size() < k_open.size() && k_open.substr(0, rest.size()) == rest) return;  // maybe "<think>"
      if (rest.substr(0, k_open.size()) == k_open) {
        pending_.erase(0, lead + k_open.size());
        state_ = state::reasoning;
        continue;
      }
      // No opening tag: this is either an answer or reasoning whose <think> was in the prompt. Decide on </think>.
      const size_t close = pending_.find(k_close);
      if (close != std::string::npos) {
        reasoning->append(trim(pending_.substr(0, close)));
        pending_.erase(0, close + k_close.size());
        state_ = state::answer;
        continue;
      }
      if (pending_.size() > max_undecided_) {
        state_ = state::answer;
        continue;
      }
      return;
    }
    if (state_ == state::reasoning) {
      const size_t close = pending_.find(k_close);
      if (close != std::string::npos) {
        reasoning->append(pending_.substr(0, close));
        pending_.erase(0, close + k_close.size());
        state_ = state::answer;
        continue;
      }
      const size_t keep = partial_tag_suffix(pending_, k_close);
      reasoning->append(pending_.substr(0, pending_.size() - keep));
      pending_.erase(0, pending_.size() - keep);
      return;
    }
    emit_answer(pending_, answer);
    pending_.clear();
    return;
  }
}

void reasoning_stream::finish(std::string* reasoning, std::string* answer) {
  if (state_ == state::reasoning) {
    reasoning->append(pending_);
  } else if (!pending_.empty()) {
    emit_answer(pending_, answer);
  }
  pending_.clear();
}

}  // namespace evident::citation
