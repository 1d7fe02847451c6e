// The token-level generation loop of the local engine, and the stop-string filter the text layer uses.
//
//   prompt ids ──prefill (chunks of prefill_chunk tokens)──► logits ──sample──► token ──on_token──► ...
//        ▲                                                                          │
//        └──────────────────────────── forward(token) ◄─────────────────────────────┘
// The loop ends when a stop id is sampled (finish "stop"; the stop id is reported to on_token but not fed back),
// when max_tokens tokens were generated ("length"), or when on_token returns false ("cancelled").
// Tokenizer-free, so it is part of the engine core (engine-only build).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/memory.h"
#include "engine/models/qwen3next.h"
#include "engine/sampling.h"

namespace evident::engine {

struct generation_result {
  std::vector<int32_t> tokens;   // generated ids, a final stop id included
  std::string finish_reason;     // "stop" | "length" | "cancelled"
  int64_t prompt_tokens = 0;     // tokens prefilled by this call
  double prefill_ms = 0;         // time of the prefill (time to the first token's logits)
  double decode_ms = 0;          // time of the decode steps
};

// on_token(id) -> false cancels. Called for every generated token, stop ids included.
using token_callback = std::function<bool(int32_t)>;

// Prefills `prompt` into `mem` (which may already hold a prefix: only the new ids are passed) and generates.
//   params.max_tokens bounds the generated tokens (stop id included); stop_ids end the loop.
// requires: prompt non-empty.
generation_result generate_tokens(const qwen3next_model& model, sequence_memory& mem, const std::vector<int32_t>& prompt,
                                  sampler& smp, int max_tokens, const std::vector<int32_t>& stop_ids,
                                  const token_callback& on_token, int64_t prefill_chunk = 512);

// Holds back streamed text that might be the start of a stop string, and cuts the stream at the first stop string.
//   push("Hello wo") -> "Hello wo" (or less, while a suffix could start a stop string)
//   after a stop string appeared, stopped() is true and nothing after it is ever returned.
// Stop strings are matched in the emitted text only (not across a reset). Empty stop strings are ignored.
class stop_string_filter {
 public:
  explicit stop_string_filter(std::vector<std::string> stops);
  // Appends text, returns what can be emitted now.
  std::string push(const std::string& text);
  // End of stream: returns what was held back (nothing after a stop).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace evident::engine
