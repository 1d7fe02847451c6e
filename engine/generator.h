// engine::generator_i: the one interface every answer source implements (local engine, OpenAI-compatible client,
// extractive answerer). The answer pipeline (citation/) and the server (api/) only see this.
//
// Lifecycle of one call:
//   generate(request, on_event) --> on_event(reasoning_delta)* on_event(answer_delta)* ... on_event(usage) on_event(finish)
// Reasoning and answer deltas may interleave only in that order: every reasoning delta comes before the first answer
// delta (the `<think>` part of a Thinking model comes first). Exactly one `finish` event ends the stream, also on error
// (finish_reason "error" with a message). Returning false from on_event cancels: the generator stops as soon as it can
// and still sends `finish` with reason "cancelled".
//
// Thread-safety: a generator object may be called from several threads at once (the server's workers); an
// implementation that cannot run requests concurrently serialises them internally.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace evident::engine {

struct chat_message {
  std::string role;     // "system" | "user" | "assistant"
  std::string content;  // UTF-8
};

struct sampling_params {
  float temperature = 0.6f;         // 0 = greedy
  int top_k = 20;                   // 0 = off
  float top_p = 0.95f;              // 1 = off
  float min_p = 0.0f;               // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off (multiplicative, as in transformers)
  float presence_penalty = 0.0f;    // 0 = off (additive, as in OpenAI)
  uint64_t seed = 0;                // 0 = from the clock
  int max_tokens = 4096;            // generated tokens, reasoning included
  std::vector<std::string> stop;    // stop strings (not included in the output)
};

struct generate_request {
  std::vector<chat_message> messages;  // the packed prompt as chat messages
  // Character offsets into the rendered prompt where the prefix is stable across requests (end of system prompt, end
  // of each packed document): the local engine snapshots its state there for prefix reuse. May be empty.
  std::vector<size_t> prefix_boundaries;
  sampling_params sampling;
  bool enable_thinking = true;  // Thinking models: let the model reason in <think> first
  std::string request_id;       // for logs and metrics
};

enum class event_kind { reasoning_delta, answer_delta, usage, finish };

struct usage_info {
  int prompt_tokens = 0;
  int cached_prompt_tokens = 0;  // prompt tokens served from the prefix cache
  int reasoning_tokens = 0;
  int completion_tokens = 0;     // reasoning + answer
  double time_to_first_token_ms = 0;
  double total_ms = 0;
};

struct generate_event {
  event_kind kind = event_kind::answer_delta;
  std::string text;            // the delta (valid UTF-8: never a split code point) for *_delta events
  usage_info usage;            // for `usage`
  std::string finish_reason;   // for `finish`: "stop" | "length" | "cancelled" | "error"
  std::string error_message;   // for `finish` with reason "error"
};

// Returns false to cancel.
using event_callback = std::function<bool(const generate_event&)>;

class generator_i {
 public:
  virtual ~generator_i() = default;
  // A short stable identifier, stored with every answer: "extractive", "engine:<model dir name>", "openai:<model>".
  virtual std::string name() const = 0;
  // True when the text is composed from the passages rather than generated (the UI says so).
  virtual bool is_extractive() const { return false; }
  // Runs one request to completion, calling on_event from the calling thread. Never throws for a request's own
  // failure (that is a finish event with reason "error"); throws evident::error only for a broken generator.
  virtual void generate(const generate_request& request, const event_callback& on_event) = 0;
};

}  // namespace evident::engine
