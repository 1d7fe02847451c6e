// Reasoning traces: the `<think> ... </think>` part of a Thinking model's output is kept apart from the answer. It is
// stored and shown only on request (`--trace`, the UI's "reasoning" panel), never as the answer.
//
// Accepted shapes of a raw completion:
//   "<think>R</think>A"      reasoning R, answer A
//   "R</think>A"             the chat template already opened <think> (Qwen3 Thinking models): reasoning R, answer A
//   "<think>R"               cut off while reasoning (length): reasoning R, empty answer
//   "A"                      no reasoning
// Leading/trailing whitespace around both parts is trimmed.
#pragma once

#include <string>
#include <string_view>

namespace evident::citation {

struct split_text {
  std::string reasoning;
  std::string answer;
};

split_text split_reasoning(std::string_view raw);

// Streaming form: feed deltas of a raw completion, get reasoning and answer deltas. A possible tag split across deltas
// is held back until it is decided. Text before any tag is held until it is clear whether a `</think>` follows
// (`max_undecided` bytes; after that it is taken as answer) unless `starts_in_reasoning` is set.
class reasoning_stream {
 public:
  explicit reasoning_stream(bool starts_in_reasoning = false, size_t max_undecided = 4096)
      : state_(starts_in_reasoning ? state::reasoning : state::start), max_undecided_(max_undecided) {}
  // Appends the new reasoning and answer text of this delta to *reasoning and *answer.
  void feed(std::string_view delta, std::string* reasoning, std::string* answer);
  void finish(std::string* reasoning, std::string* answer);

 private:
  enum class state { start, reasoning, answer };
  state state_;
  size_t max_undecided_;
  std::string pending_;
  bool answer_started_ = false;
  void emit_answer(std::string_view s, std::string* answer);
};

}  // namespace evident::citation
