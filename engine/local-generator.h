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
// Prefix cache (device "cpu"): the last `max_cached_requests` requests keep their sequence memory (KV + DeltaNet
// state) and their boundary snapshots; a new request restores the longest matching boundary
// (usage.cached_prompt_tokens).
//
// Engines (local_generator_options::device):
//   "cpu"            the CPU engine, one request at a time, with the prefix cache above
//   "cuda"           the CUDA engine (engine/cuda/: bf16 weights on GPU `cuda_device`, paged KV, CUDA graphs, sampling
//                    on the device) behind engine::serving_engine: concurrent generate() calls share steps (continuous
//                    batching, chunked prefill). No prefix cache yet (cached_prompt_tokens stays 0). Only in builds
//                    with CUDA; elsewhere the constructor throws.
//   "cpu-scheduled"  the CPU engine behind the same serving_engine (what "cuda" does, on the CPU: tests, and callers
//                    who prefer concurrent requests to the prefix cache)
// The text side (template, boundaries, detokenisation, reasoning split, stop strings) is the same for all three.
// Sampling: "cpu" draws with engine::sampler; the scheduled engines draw on the device by kernels::sample's rule
// (the same seed gives other tokens than on "cpu"; see engine/scheduler.h, draw_mode), except requests with penalties.
//
// Thread-safety: generate() may be called from several threads; with "cpu" requests run one at a time (internal
// mutex), with the scheduled engines they run together.
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
#include "engine/serving.h"
#include "engine/tokenizer.h"

namespace evident::engine {

struct local_generator_options {
  std::filesystem::path model_dir;        // Hugging Face checkpoint directory (config.json + safetensors)
  std::filesystem::path tokenizer_path;   // tokenizer.json; default: model_dir / "tokenizer.json"
  chat_template_variant variant = chat_template_variant::thinking;
  int64_t prefill_chunk = 512;            // tokens per forward call while prefilling ("cpu")
  size_t max_cached_requests = 4;         // prefix cache entries (each holds one sequence's memory; "cpu")
  std::string device = "cpu";             // "cpu" | "cuda" | "cpu-scheduled" (see above)
  int cuda_device = 0;                    // CUDA device ordinal ("cuda")
  int max_sequences = 16;                 // requests decoding at once ("cuda", "cpu-scheduled"); more wait in a queue
  int64_t max_context = 131072;           // prompt + max_tokens of one request ("cuda", "cpu-scheduled"); sizes the
                                          // block tables only (KV blocks are reserved per request at admission)
  int64_t token_budget = 2048;            // tokens per step: decodes + prefill chunks ("cuda", "cpu-scheduled")
  int64_t prefill_budget = 0;             // tokens of a step while nothing decodes (scheduler_config::
                                          // prefill_only_budget); 0 = the device's default: "cuda" 32768 (also sizes
                                          // the step buffers, ~7 GB; 32K-token steps prefill a 32K prompt at 51.5% of
                                          // the FLOP bound on H100, 2K-token steps at 29.8% on H200, bench/RESULTS.md),
                                          // "cpu-scheduled" token_budget (the CPU model's activations grow with it)
};

class local_generator : public generator_i {
 public:
  // Loads the model and the tokenizer. Throws evident::error (missing files, bad checkpoint).
  explicit local_generator(const local_generator_options& options);
  ~local_generator() override;

  std::string name() const override { return name_; }
  void generate(const generate_request& request, const event_callback& on_event) override;

  const tokenizer& tok() const { return *tok_; }

 private:
  struct prompt {
    std::vector<int32_t> ids;
    std::vector<int64_t> boundary_tokens;  // token counts at the prefix boundaries, ascending, the prompt's end last
    bool opens_think = false;              // the rendered prompt ends inside an open <think>
  };
  prompt build_prompt(const generate_request& request) const;
  struct cache_entry {
    std::vector<int32_t> ids;                                 // the prompt ids the memory started with
    sequence_memory mem;                                      // memory at the end of that request
    std::vector<state_snapshot> snapshots;                    // at boundaries (ascending n_past)
  };
  void run(const generate_request& request, const event_callback& on_event, usage_info& usage,
           std::string& finish_reason);

  local_generator_options opt_;
  std::string name_;
  // Declared in dependency order (destroyed in reverse): serving_ stops its thread before backend_ goes, and
  // backend_ closes its sequences before the model it steps goes.
  std::unique_ptr<qwen3next_model> model_;     // "cpu" and "cpu-scheduled"
  std::shared_ptr<void> cuda_model_;           // "cuda": the engine/cuda model the backend steps (type-erased here)
  std::unique_ptr<step_model_i> backend_;      // the scheduled engines' step backend
  std::unique_ptr<serving_engine> serving_;    // the scheduled engines
  std::unique_ptr<tokenizer> tok_;
  std::vector<int32_t> stop_ids_;
  int32_t think_open_ = -1, think_close_ = -1;
  std::mutex mu_;
  std::deque<cache_entry> cache_;
};

}  // namespace evident::engine
