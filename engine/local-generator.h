// engine::local_generator: generator_i (generator.h) backed by the CPU Qwen3-Next engine, the BPE tokenizer and the
// Qwen3 chat template. Links evident_tokenizer (ICU), so it is not part of the engine-only build.
//
// One request:
//   messages --render_chat--> prompt text --encode, piecewise at the prefix boundaries--> ids
//   --longest cached prefix (snapshot at a boundary of an earlier request whose ids match)--> restore
//   --prefill the rest (snapshotting at each boundary and at the prompt's end)--> decode loop (sampler, stop ids)
//   --incremental UTF-8-safe detokenisation--> reasoning_delta until </think>, then answer_delta (stop strings cut the
//   answer) --> usage, finish
// Reasoning: with the Thinking template the prompt ends inside an open <think>, so the stream starts in the
// reasoning part; a generated <think> token (hybrid template) also starts it. </think> switches to the answer. The
// <think>/</think> tokens themselves and special tokens (<|im_end|> ...) are never part of a delta; leading newlines
// of each part are dropped (the template's "<think>\n" / "</think>\n\n").
// Prefix boundaries: request.prefix_boundaries (character offsets into the rendered prompt) plus the end of a leading
// system message. The prompt is tokenised piece by piece between boundaries; at the boundaries the packer declares
// (ends of messages / documents) this gives the same ids as tokenising it whole.
// Prefix cache: the last `max_cached_requests` requests keep their sequence memory (KV + DeltaNet state) and their
// boundary snapshots; a new request restores the longest matching boundary (usage.cached_prompt_tokens).
//
// Thread-safety: generate() may be called from several threads; requests run one at a time (internal mutex).
#pragma once

#include <cstddef>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/chat-template.h"
#include "engine/generator.h"
#include "engine/memory.h"
#include "engine/models/qwen3next.h"
#include "engine/tokenizer.h"

namespace evident::engine {

struct local_generator_options {
  std::filesystem::path model_dir;        // Hugging Face checkpoint directory (config.json + safetensors)
  std::filesystem::path tokenizer_path;   // tokenizer.json; default: model_dir / "tokenizer.json"
  chat_template_variant variant = chat_template_variant::thinking;
  int64_t prefill_chunk = 512;            // tokens per forward call while prefilling
  size_t max_cached_requests = 4;         // prefix cache entries (each holds one sequence's memory)
};

class local_generator : public generator_i {
 public:
  // Loads the model and the tokenizer. Throws evident::error (missing files, bad checkpoint).
  explicit local_generator(const local_generator_options& options);
  ~local_generator() override;

  std::string name() const override { return name_; }
  void generate(const generate_request& request, const event_callback& on_event) override;

  const qwen3next_model& model() const { return *model_; }
  const tokenizer& tok() const { return *tok_; }

 private:
  struct cache_entry {
    std::vector<int32_t> ids;                                 // the prompt ids the memory started with
    sequence_memory mem;                                      // memory at the end of that request
    std::vector<state_snapshot> snapshots;                    // at boundaries (ascending n_past)
  };
  void run(const generate_request& request, const event_callback& on_event, usage_info& usage,
           std::string& finish_reason);

  local_generator_options opt_;
  std::string name_;
  std::unique_ptr<qwen3next_model> model_;
  std::unique_ptr<tokenizer> tok_;
  std::vector<int32_t> stop_ids_;
  int32_t think_open_ = -1, think_close_ = -1;
  std::mutex mu_;
  std::deque<cache_entry> cache_;
};

}  // namespace evident::engine
