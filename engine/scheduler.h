// engine::scheduler: continuous batching with chunked prefill over an abstract batched-step backend.
//
// The scheduler is plain CPU bookkeeping: it decides which tokens of which requests run in the next model step, keeps
// the per-request samplers and stop rules, and accounts the backend's memory for admission. It never touches tensors,
// so it is unit-tested with a fake backend and with the CPU model (cpu_step_model below); the CUDA backend implements
// the same step_model_i.
//
// Request lifecycle (one request id):
//
// clang-format off
//   submit ──(can never fit)─────────────────────────────────────────────────────► finished "rejected"
//     │
//     ▼
//   queued ──admit (slot free, KV blocks reserved)──► prefilling ──last chunk──► decoding ──stop id──► "stop"
//     │                                                 │  ▲ a chunk per step       │  ▲ 1 token ──max_tokens──► "length"
//     │                                                 └──┘                        └──┘ per step
//     └────────── cancel (any state before finished) ──────────────────────────────────────────► "cancelled"
// clang-format on
//
// Invariants:
//   - Every decoding request gets exactly one token in every step (decodes are never starved, whatever the prompts).
//   - A step carries at most token_budget tokens (prefill_only_budget when no request is decoding); prefill chunks
//     fill what decodes leave, in admission order (FCFS),
//     so a 100K-token prompt advances by up to token_budget - n_decoding tokens per step. token_budget > max_sequences
//     (checked at construction), so prefill also advances by at least one token in every step.
//   - Admission is FCFS and head-of-line: a queued request that does not fit now blocks the ones behind it (no
//     overtaking, so large requests are not starved by a stream of small ones).
//   - A request reserves its worst case at admission: ceil((prompt + max_tokens) / kv_block_tokens) KV blocks and one
//     sequence slot. Reservations never exceed the backend's capacity, so a running request is never preempted and
//     the backend never runs out of blocks mid-step. A request whose worst case exceeds the whole capacity (or the
//     backend's max_context) is rejected at submit with a reason.
//   - The backend sees begin_sequence(slot) before a request's first chunk and end_sequence(slot) after its last step
//     (finish or cancel); slots are reused.
//
// Thread-safety: submit() and cancel() may be called from any thread at any time (they take a mutex); step() and the
// accessors are called from one engine thread. Events are returned by step() (the caller dispatches them).
#pragma once

#include <climits>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/generator.h"
#include "engine/sampling.h"

namespace evident::engine {

class qwen3next_model;
struct sequence_memory;

// ---------------------------------------------------------------------------------------------------------------------
// The backend interface.

// One sequence's share of a step: n_tokens consecutive tokens of the sequence in `slot`, at positions pos..pos+n-1.
struct batch_entry {
  int32_t slot = 0;          // backend sequence slot, in [0, max_sequences)
  int64_t pos = 0;           // position of the first token = tokens the slot already holds
  int32_t n_tokens = 0;      // >= 1
  int64_t offset = 0;        // index of the first token in step_batch::tokens
  bool want_logits = false;  // logits (or the argmax) of the entry's last token are needed
};

// How the backend draws one row's token (step_output::sampled): kernels::sample's rule (kernels/sampling.h) with
// the uniform u = kernels::fill_uniforms(seed, step), so every backend that supports it draws the same token from the
// same logits (exact integer arithmetic), and a request's draws do not depend on what else is in the batch.
struct row_sampling {
  float temperature = 0;  // <= 0: greedy (lowest id among maxima)
  int32_t top_k = 0;      // 0 = off
  float top_p = 1;        // 1 = off
  float min_p = 0;        // 0 = off
  uint64_t seed = 0;      // the request's seed
  int64_t step = 0;       // index of the token being generated (0 for the first)
};

// A mixed batch: decode entries (n_tokens == 1) first, then prefill chunks. A slot appears at most once.
struct step_batch {
  std::vector<int32_t> tokens;       // int32 [n_tokens total]: every entry's tokens, concatenated in entry order
  std::vector<batch_entry> entries;  // in order; entries with want_logits produce output rows in this order
  int64_t n_decode = 0;              // entries[0, n_decode) are decodes (n_tokens == 1, want_logits)
  std::vector<row_sampling> sampling;  // [n_logits] when the step asks for step_output::sampled, else empty
  int64_t n_logits() const;
};

// Where a step writes its outputs. Row r belongs to the r-th entry with want_logits. Any combination may be asked.
struct step_output {
  float* logits = nullptr;    // fp32 [n_logits, vocab] on the host, or null
  int32_t* argmax = nullptr;  // int32 [n_logits] greedy ids (lowest id on ties), or null; only when
                              // supports_argmax()
  int32_t* sampled = nullptr;  // int32 [n_logits] ids drawn per step_batch::sampling, or null; only when
                               // supports_sampling()
};

// A model that runs batched steps over per-slot sequence memory.
class step_model_i {
 public:
  virtual ~step_model_i() = default;
  virtual int64_t vocab_size() const = 0;
  // Sequences that can be resident at once (slots 0..max_sequences-1).
  virtual int max_sequences() const = 0;
  // Longest sequence (prompt + generated tokens) one slot can hold.
  virtual int64_t max_context() const = 0;
  // Paged KV: tokens per block and blocks in the pool shared by all slots (admission accounting only; the backend
  // allocates its own blocks). A backend without a shared pool returns 1 and a large count.
  virtual int64_t kv_block_tokens() const = 0;
  virtual int64_t kv_blocks() const = 0;
  // Makes `slot` an empty sequence (position 0, zero DeltaNet/conv state, no KV blocks).
  virtual void begin_sequence(int32_t slot) = 0;
  // Releases the slot's memory; the slot is not used again before the next begin_sequence.
  virtual void end_sequence(int32_t slot) = 0;
  // Runs one step: appends every entry's tokens to its slot and writes the requested outputs.
  // requires: entries valid as documented on step_batch; at least one of out.logits / out.argmax when n_logits > 0.
  virtual void step(const step_batch& batch, const step_output& out) = 0;
  // True when step() can fill out.argmax (greedy on the device, so logits need not be copied to the host).
  virtual bool supports_argmax() const { return false; }
  // True when step() can fill out.sampled (temperature / top-k / top-p / min-p draws next to the logits).
  virtual bool supports_sampling() const { return false; }
  // Most tokens / entries one step may carry (the scheduler checks token_budget and max_sequences against them).
  virtual int64_t max_step_tokens() const { return INT64_MAX; }
  virtual int64_t max_step_entries() const { return INT64_MAX; }
};

// ---------------------------------------------------------------------------------------------------------------------
// The scheduler.

struct scheduler_config {
  int64_t token_budget = 2048;    // tokens per step (decodes + prefill chunks); must exceed the backend's
                                  // max_sequences so a full batch of decodes leaves room for prefill
  int64_t prefill_only_budget = 0;  // tokens of a step with no decode entry (only prompt chunks); 0 = token_budget.
                                    // Bigger prompt-only steps keep prefill efficient (on the GPU each of the 512
                                    // experts gets more rows per read of its weights) while no request waits for a
                                    // token; >= token_budget and <= the backend's max_step_tokens
  int64_t max_prefill_chunk = 0;  // most tokens of one prompt per step; 0 = the step's budget
  int64_t max_queue = 4096;       // queued requests beyond this are rejected ("queue full")
};

// What a request asks for.
struct request_params {
  std::vector<int32_t> prompt;    // token ids, non-empty, each in [0, vocab)
  sampling_params sampling;       // temperature 0 = greedy; max_tokens bounds generated tokens (stop id included)
  std::vector<int32_t> stop_ids;  // generation ends after one of these is sampled (it is reported, then not fed)
};

using request_id = uint64_t;

enum class request_state { queued, prefilling, decoding, finished };

// One thing that happened in a step (or at submit / cancel).
struct scheduler_event {
  enum kind_t { token, finish } kind = token;
  request_id id = 0;
  int32_t token_id = -1;      // for token
  std::string finish_reason;  // for finish: "stop" | "length" | "cancelled" | "rejected"
  std::string message;        // for "rejected": why
};

// A finish event for request `id` (reason as in scheduler_event; message for "rejected" / "error").
scheduler_event finish_event(request_id id, const std::string& reason, const std::string& message = {});

struct submit_result {
  request_id id = 0;
  bool accepted = false;
  std::string reason;  // why not accepted (also delivered as a finish event "rejected" by the next step())
};

struct scheduler_stats {
  int64_t steps = 0;
  int64_t prefill_tokens = 0;   // prompt tokens run
  int64_t decode_tokens = 0;    // decode entries run
  int64_t max_step_tokens = 0;  // largest step seen
};

// How a request's tokens are drawn, fixed at submit from its sampling params and the backend (so a request draws the
// same way in every step, whatever else shares the batch):
//   argmax  temperature 0, no penalties, backend supports_argmax(): the backend's greedy id
//   device  no penalties, backend supports_sampling(): the backend draws (row_sampling: seed, token index)
//   host    otherwise: the request's engine::sampler on the logits row copied to the host (penalties, or a backend
//           without device sampling; its own Mersenne Twister stream)
// So the same seed gives the same random numbers whatever shares the steps; device draws and host draws use
// different random streams and are not interchangeable. (On the GPU the logits themselves move with the batch's shape,
// by rounding, so a seeded request is reproducible there only up to such near-ties.)
enum class draw_mode { host = 0, argmax = 1, device = 2 };

class scheduler {
 public:
  // `model` must outlive the scheduler. Throws evident::error when the config is invalid.
  scheduler(step_model_i& model, scheduler_config cfg = {});
  ~scheduler();

  // Queues a request (or rejects it with a reason when it can never fit: empty prompt, id out of range, prompt +
  // max_tokens beyond max_context, more KV blocks than the pool holds, max_tokens < 1, invalid sampling params, queue
  // full). Thread-safe.
  submit_result submit(request_params params);
  // Cancels a queued or running request; its "cancelled" finish event comes from the next step(). Returns false
  // when the id is unknown or already finished. Thread-safe.
  bool cancel(request_id id);

  // Admits what fits, builds one batch, runs it, samples and returns the events (tokens in entry order, then
  // finishes). Returns only the events of cancellations/rejections when there is nothing to run.
  std::vector<scheduler_event> step();

  // True while a request is queued or running (or an event is pending).
  bool has_work() const;
  request_state state(request_id id) const;  // finished for unknown ids
  // Generated tokens so far of a live request (empty for unknown / finished ones).
  std::vector<int32_t> tokens(request_id id) const;

  const scheduler_stats& stats() const { return stats_; }
  // The batch of the last step (for tests and metrics).
  const step_batch& last_batch() const { return last_batch_; }
  int64_t free_kv_blocks() const;
  int n_running() const;
  int n_queued() const;

 private:
  struct request;
  std::string check_fits(const request_params& p) const;  // empty when it fits the empty machine
  int64_t blocks_for(const request_params& p) const;  // KV blocks of the worst case: prompt + max_tokens
  void admit();
  void finish(request& r, const std::string& reason, std::vector<scheduler_event>& ev);

  step_model_i& model_;
  scheduler_config cfg_;
  mutable std::mutex mu_;  // guards queue_, pending_, cancelled_, next_id_ (the submit/cancel side)
  std::deque<std::unique_ptr<request>> queue_;
  std::vector<scheduler_event> pending_;    // rejections / cancellations of queued requests, for the next step
  std::vector<request_id> cancel_running_;  // cancels of running requests, applied by the next step
  std::unordered_map<request_id, request_state> states_;
  request_id next_id_ = 1;
  std::vector<std::unique_ptr<request>> running_;  // admission order
  std::vector<int32_t> free_slots_;
  int64_t reserved_blocks_ = 0;
  scheduler_stats stats_;
  step_batch last_batch_;
  std::vector<float> logits_;
  std::vector<int32_t> argmax_;
  std::vector<int32_t> sampled_;
};

// One row's draw by row_sampling's rule on the host (kernels::fill_uniforms_ref + kernels::sample_ref): what a
// backend without device kernels returns in step_output::sampled. `logits` fp32 [vocab] is not modified.
int32_t draw_row_on_host(const float* logits, int64_t vocab, const row_sampling& rs);

// ---------------------------------------------------------------------------------------------------------------------
// The CPU model as a step backend: one sequence_memory per slot, entries run one after another (the CPU model has no
// batched kernels). KV is not paged on the CPU: kv_block_tokens() is 1 and kv_blocks() = kv_token_capacity.
class cpu_step_model final : public step_model_i {
 public:
  // `model` must outlive this object.
  cpu_step_model(const qwen3next_model& model, int max_sequences, int64_t max_context, int64_t kv_token_capacity);
  ~cpu_step_model() override;
  int64_t vocab_size() const override;
  int max_sequences() const override { return static_cast<int>(seqs_.size()); }
  int64_t max_context() const override { return max_context_; }
  int64_t kv_block_tokens() const override { return 1; }
  int64_t kv_blocks() const override { return kv_capacity_; }
  void begin_sequence(int32_t slot) override;
  void end_sequence(int32_t slot) override;
  void step(const step_batch& batch, const step_output& out) override;
  bool supports_argmax() const override { return true; }
  bool supports_sampling() const override { return true; }  // draw_row_on_host, the CUDA backend's rule

 private:
  const qwen3next_model& model_;
  int64_t max_context_, kv_capacity_;
  std::vector<std::unique_ptr<sequence_memory>> seqs_;
  std::vector<float> row_;
};

}  // namespace evident::engine
