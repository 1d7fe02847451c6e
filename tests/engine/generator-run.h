// What the local_generator tests (test-local-generator.cpp, test-local-generator-cuda.cpp) collect from one stream,
// and the request they send: a system message with two passages and a question, greedy, max_tokens tokens.
#pragma once

#include <string>
#include <vector>

#include "engine/generator.h"

namespace evident::test {

struct collected {
  std::string reasoning, answer, finish, error;
  engine::usage_info usage;
  std::vector<engine::event_kind> kinds;
};

// Runs `r` on `g`; with cancel_after >= 0 the callback asks to stop after that many text deltas.
inline collected run(engine::generator_i& g, const engine::generate_request& r, int cancel_after = -1) {
  using engine::event_kind;
  collected c;
  int deltas = 0;
  g.generate(r, [&](const engine::generate_event& e) {
    c.kinds.push_back(e.kind);
    if (e.kind == event_kind::reasoning_delta) c.reasoning += e.text;
    if (e.kind == event_kind::answer_delta) c.answer += e.text;
    if (e.kind == event_kind::usage) c.usage = e.usage;
    if (e.kind == event_kind::finish) {
      c.finish = e.finish_reason;
      c.error = e.error_message;
    }
    if (e.kind == event_kind::reasoning_delta || e.kind == event_kind::answer_delta) ++deltas;
    return cancel_after < 0 || deltas < cancel_after;
  });
  return c;
}

inline engine::generate_request request(const std::string& question, int max_tokens = 24) {
  engine::generate_request r;
  r.messages = {{"system", "You answer from the passages. [1] The sky is blue. [2] Grass is green."},
                {"user", question}};
  r.sampling.temperature = 0;
  r.sampling.max_tokens = max_tokens;
  return r;
}

}  // namespace evident::test
