// engine::cuda_step_model: the CUDA model (engine/cuda/cuda-model.h) as the scheduler's step backend
// (engine/scheduler.h), with CUDA graphs for decode steps (engine/cuda/decode-graph.h), and greedy and
// temperature / top-k / top-p / min-p sampling on the device.
//
//   scheduler ──step_batch──► cuda_step_model ──prepare(entries, bucket)──► cuda_model (host: staging, block tables)
//                                   │
//                                   ├─ decode-only batch of n <= 64: pad to bucket(n) ∈ {1,2,4,8,16,32,64}, run the
//                                   │  bucket's graph (launch + argmax + id copy), replayed after one warm-up
//                                   └─ otherwise: launch eagerly on the same stream
//                                   ▼
//                    argmax ids (int32, pinned), sampled ids (kernels::sample, after the graph) and/or logits
//                    (fp32 host rows), in the order of want_logits entries
//
// Slots: the scheduler's slot s maps to the cuda_model sequence opened by begin_sequence(s) (cuda_model picks its own
// slot numbers). KV accounting: kv_block_tokens() / kv_blocks() are cuda_model's block size and block count; the
// scheduler reserves a request's worst case at admission, so cuda_model's on-demand block growth in prepare() never
// runs out.
//
// Thread-safety: none; the scheduler's thread drives it. `model` must outlive this object.
#pragma once

#include <memory>
#include <vector>

#include "engine/cuda/cuda-model.h"
#include "engine/cuda/decode-graph.h"
#include "engine/scheduler.h"

namespace evident::engine {

struct cuda_step_options {
  bool use_graphs = true;                               // CUDA graphs for decode-only steps
  std::vector<int> buckets = {1, 2, 4, 8, 16, 32, 64};  // graph batch sizes (each <= the model's max_step_entries)
};

// Sizes model.max_step_entries and max_logit_rows for serving model.max_sequences through cuda_step_model with
// step.buckets: a decode step is padded to a bucket, and every entry, padding included, takes a token of the step, so
// the entries are max(largest bucket, max_sequences) but at most model.max_step_tokens; buckets above that are
// dropped from step (they could never be filled).
void fit_step_entries(cuda_model_options& model, cuda_step_options& step);

class cuda_step_model final : public step_model_i {
 public:
  // Throws evident::error (invalid_input) when a bucket exceeds the model's max_step_entries or max_logit_rows,
  // internal for a CUDA failure.
  cuda_step_model(cuda_model& model, cuda_step_options options = {});
  ~cuda_step_model() override;

  int64_t vocab_size() const override;
  int max_sequences() const override;
  int64_t max_context() const override;
  int64_t kv_block_tokens() const override;
  int64_t kv_blocks() const override;
  // Throws evident::error (resource) with cuda_model's reason when it refuses to open a sequence.
  void begin_sequence(int32_t slot) override;
  void end_sequence(int32_t slot) override;
  // Synchronous: returns when the outputs are on the host.
  void step(const step_batch& batch, const step_output& out) override;
  bool supports_argmax() const override { return true; }
  // kernels::fill_uniforms + kernels::sample on the device logits, after the step (outside the decode graphs: the
  // per-row parameters go up with one async copy), only when the step asks for out.sampled.
  bool supports_sampling() const override { return true; }
  int64_t max_step_tokens() const override;
  int64_t max_step_entries() const override;

  const decode_graphs::counters& graph_stats() const;
  cuda_model& model() { return model_; }

 private:
  struct impl;
  void enqueue_sampling(const step_batch& batch, const step_plan& plan, kernels::stream_t st);
  cuda_model& model_;
  cuda_step_options opt_;
  std::unique_ptr<impl> p_;
};

}  // namespace evident::engine
