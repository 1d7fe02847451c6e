// A step_model_i that forwards everything to another backend: tests derive from it and override step() (or the
// capability queries) to record, check, gate or break steps without repeating the forwarding.
#pragma once

#include "engine/scheduler.h"

namespace evident::test {

class forwarding_model : public engine::step_model_i {
 public:
  explicit forwarding_model(engine::step_model_i& inner) : inner_(inner) {}
  int64_t vocab_size() const override { return inner_.vocab_size(); }
  int max_sequences() const override { return inner_.max_sequences(); }
  int64_t max_context() const override { return inner_.max_context(); }
  int64_t kv_block_tokens() const override { return inner_.kv_block_tokens(); }
  int64_t kv_blocks() const override { return inner_.kv_blocks(); }
  bool supports_argmax() const override { return inner_.supports_argmax(); }
  bool supports_sampling() const override { return inner_.supports_sampling(); }
  int64_t max_step_tokens() const override { return inner_.max_step_tokens(); }
  int64_t max_step_entries() const override { return inner_.max_step_entries(); }
  void begin_sequence(int32_t s) override { inner_.begin_sequence(s); }
  void end_sequence(int32_t s) override { inner_.end_sequence(s); }
  void step(const engine::step_batch& b, const engine::step_output& out) override { inner_.step(b, out); }

 protected:
  engine::step_model_i& inner_;
};

}  // namespace evident::test
