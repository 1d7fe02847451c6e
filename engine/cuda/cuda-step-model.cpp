#include "engine/cuda/cuda-step-model.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "engine/base/error.h"
#include "engine/cuda/cuda-call.h"
#include "engine/cuda/model-kernels.h"
#include "kernels/sampling.h"

#define EV_STEP_CHECK(call) EV_CUDA_THROW("cuda_step_model", call)

namespace evident::engine {

namespace {

// The packed sampling parameters of R rows, one array after another (8-byte arrays first, so each is aligned):
//   seeds u64[R] | steps i64[R] | temperature f32[R] | top_p f32[R] | min_p f32[R] | top_k i32[R]
// carved out of the pinned host copy and of the device copy alike.
struct sample_params {
  uint64_t* seeds;
  int64_t* steps;
  float* temperature;
  float* top_p;
  float* min_p;
  int32_t* top_k;
  static size_t bytes(size_t R) {
    return R * (sizeof(uint64_t) + sizeof(int64_t) + 3 * sizeof(float) + sizeof(int32_t));
  }
  static sample_params carve(void* base, size_t R) {
    sample_params p;
    p.seeds = static_cast<uint64_t*>(base);
    p.steps = reinterpret_cast<int64_t*>(p.seeds + R);
    p.temperature = reinterpret_cast<float*>(p.steps + R);
    p.top_p = p.temperature + R;
    p.min_p = p.top_p + R;
    p.top_k = reinterpret_cast<int32_t*>(p.min_p + R);
    return p;
  }
};

}  // namespace

struct cuda_step_model::impl {
  explicit impl(std::vector<int> buckets) : graphs(std::make_unique<decode_graphs>(std::move(buckets))) {}
  std::unique_ptr<decode_graphs> graphs;
  cudaStream_t stream = nullptr;
  int32_t* d_ids = nullptr;    // int32 [max_logit_rows] argmax of every logit row
  int32_t* h_ids = nullptr;    // pinned copy
  void* d_argmax_ws = nullptr;  // cuda_ops::argmax_rows workspace for max_logit_rows rows
  size_t argmax_ws_bytes = 0;
  // Sampling: per model logit row (R = max_logit_rows) the parameters, packed in one buffer (sample_params) so one
  // async copy moves them; then the uniforms f32[R] and the drawn ids i32[R] on the device (ids copied back to
  // h_sampled).
  void* h_sample_params = nullptr;  // pinned
  void* d_sample_params = nullptr;
  float* d_uniforms = nullptr;
  int32_t* d_sampled = nullptr;
  int32_t* h_sampled = nullptr;  // pinned
  std::vector<int> cuda_slot;  // scheduler slot -> cuda_model slot (-1 when closed)
  std::vector<step_entry> entries;
  std::vector<float> rows;  // host logits of every row of a step (when out.logits and rows are skipped)
};

void fit_step_entries(cuda_model_options& model, cuda_step_options& step) {
  const int largest = step.buckets.empty() ? 1 : *std::max_element(step.buckets.begin(), step.buckets.end());
  model.max_step_entries = std::min(std::max(largest, model.max_sequences), model.max_step_tokens);
  model.max_logit_rows = model.max_step_entries;
  std::erase_if(step.buckets, [&](int b) { return b > model.max_step_entries; });
}

cuda_step_model::cuda_step_model(cuda_model& model, cuda_step_options options)
    : model_(model), opt_(std::move(options)), p_(std::make_unique<impl>(opt_.buckets)) {
  const auto& mo = model_.options();
  for (int b : opt_.buckets)
    EV_THROW_IF_NOT_MSG(b <= mo.max_step_entries && b <= mo.max_logit_rows, "cuda_step_model: graph bucket ", b,
                        " exceeds the model's max_step_entries (", mo.max_step_entries, ") or max_logit_rows (",
                        mo.max_logit_rows, ")");
  EV_STEP_CHECK(cudaSetDevice(mo.device));
  EV_STEP_CHECK(cudaStreamCreateWithFlags(&p_->stream, cudaStreamNonBlocking));
  EV_STEP_CHECK(cudaMalloc(&p_->d_ids, sizeof(int32_t) * static_cast<size_t>(mo.max_logit_rows)));
  EV_STEP_CHECK(cudaMallocHost(&p_->h_ids, sizeof(int32_t) * static_cast<size_t>(mo.max_logit_rows)));
  p_->argmax_ws_bytes = cuda_ops::argmax_rows_workspace_bytes(mo.max_logit_rows);
  EV_STEP_CHECK(cudaMalloc(&p_->d_argmax_ws, p_->argmax_ws_bytes));
  const size_t R = static_cast<size_t>(mo.max_logit_rows);
  EV_STEP_CHECK(cudaMallocHost(&p_->h_sample_params, sample_params::bytes(R)));
  EV_STEP_CHECK(cudaMalloc(&p_->d_sample_params, sample_params::bytes(R)));
  EV_STEP_CHECK(cudaMalloc(&p_->d_uniforms, sizeof(float) * R));
  EV_STEP_CHECK(cudaMalloc(&p_->d_sampled, sizeof(int32_t) * R));
  EV_STEP_CHECK(cudaMallocHost(&p_->h_sampled, sizeof(int32_t) * R));
  p_->cuda_slot.assign(static_cast<size_t>(mo.max_sequences), -1);
}

cuda_step_model::~cuda_step_model() {
  if (p_->stream) cudaStreamSynchronize(p_->stream);
  for (int s : p_->cuda_slot)
    if (s >= 0) model_.close_sequence(s);
  p_->graphs.reset();  // graphs go before the stream
  if (p_->h_ids) cudaFreeHost(p_->h_ids);
  if (p_->d_ids) cudaFree(p_->d_ids);
  if (p_->d_argmax_ws) cudaFree(p_->d_argmax_ws);
  if (p_->h_sample_params) cudaFreeHost(p_->h_sample_params);
  if (p_->d_sample_params) cudaFree(p_->d_sample_params);
  if (p_->d_uniforms) cudaFree(p_->d_uniforms);
  if (p_->d_sampled) cudaFree(p_->d_sampled);
  if (p_->h_sampled) cudaFreeHost(p_->h_sampled);
  if (p_->stream) cudaStreamDestroy(p_->stream);
}

int64_t cuda_step_model::vocab_size() const {
  return model_.vocab_size();
}
int cuda_step_model::max_sequences() const {
  return model_.options().max_sequences;
}
int64_t cuda_step_model::max_context() const {
  return std::min(model_.options().max_context, model_.slots().max_length());
}
int64_t cuda_step_model::kv_block_tokens() const {
  return model_.slots().block_size();
}
int64_t cuda_step_model::kv_blocks() const {
  return model_.slots().n_blocks();
}
int64_t cuda_step_model::max_step_tokens() const {
  return model_.options().max_step_tokens;
}
int64_t cuda_step_model::max_step_entries() const {
  return std::min(model_.options().max_step_entries, model_.options().max_logit_rows);
}
const decode_graphs::counters& cuda_step_model::graph_stats() const {
  return p_->graphs->stats();
}

void cuda_step_model::begin_sequence(int32_t slot) {
  EV_ASSERT(slot >= 0 && slot < max_sequences() && p_->cuda_slot[static_cast<size_t>(slot)] < 0, "slot ", slot);
  auto adm = model_.open_sequence();
  EV_THROW_IF_NOT_KIND(adm.ok(), resource, "cuda_step_model: the CUDA model refused a sequence: ", adm.reason);
  p_->cuda_slot[static_cast<size_t>(slot)] = adm.slot;
}

void cuda_step_model::end_sequence(int32_t slot) {
  EV_ASSERT(slot >= 0 && slot < max_sequences() && p_->cuda_slot[static_cast<size_t>(slot)] >= 0, "slot ", slot);
  model_.close_sequence(p_->cuda_slot[static_cast<size_t>(slot)]);
  p_->cuda_slot[static_cast<size_t>(slot)] = -1;
}

void cuda_step_model::step(const step_batch& batch, const step_output& out) {
  // The thread that steps need not be the one that built the model (serving_engine's engine thread).
  EV_STEP_CHECK(cudaSetDevice(model_.options().device));
  auto& es = p_->entries;
  es.clear();
  for (const auto& e : batch.entries) {
    step_entry c;
    c.slot = p_->cuda_slot[static_cast<size_t>(e.slot)];
    EV_ASSERT(c.slot >= 0, "slot ", e.slot, " not begun");
    c.ids = batch.tokens.data() + e.offset;
    c.n_tokens = e.n_tokens;
    c.start = e.pos;
    es.push_back(c);
  }
  const int n = static_cast<int>(es.size());
  const bool decode_only = batch.n_decode == n;
  const int bucket = opt_.use_graphs && decode_only ? p_->graphs->bucket_for(n) : 0;
  const step_plan plan = model_.prepare(es, bucket);
  EV_ASSERT(static_cast<int>(plan.logit_row.size()) >= n, "prepare returned ", plan.logit_row.size(),
            " logit rows for ", n, " entries");
  const int64_t V = model_.vocab_size();
  // The argmax always runs (a graph captured for a bucket must serve steps that want ids and steps that want logits;
  // it costs one read of the logit rows), over a row count fixed by the bucket in graph mode (padding rows included).
  const int argmax_rows = bucket > 0 ? std::max(bucket, plan.n_logit_rows) : plan.n_logit_rows;
  EV_ASSERT(argmax_rows <= model_.options().max_logit_rows);
  cudaStream_t st = p_->stream;
  auto enqueue = [&](kernels::stream_t s) {
    model_.launch(s);
    if (argmax_rows == 0) return;
    // Same result as kernels::sample_greedy (lowest index among maxima, NaN never wins), split over 64 blocks a row.
    const auto stt = cuda_ops::argmax_rows(argmax_rows, static_cast<int>(V), model_.logits(), V, p_->d_ids,
                                           p_->d_argmax_ws, p_->argmax_ws_bytes, s);
    EV_THROW_IF_NOT_KIND(stt.ok(), internal, "cuda_step_model: argmax_rows: ", stt.message);
    EV_STEP_CHECK(cudaMemcpyAsync(p_->h_ids, p_->d_ids, sizeof(int32_t) * static_cast<size_t>(argmax_rows),
                                  cudaMemcpyDeviceToHost, reinterpret_cast<cudaStream_t>(s)));
  };
  if (bucket > 0) {
    p_->graphs->run(bucket, reinterpret_cast<kernels::stream_t>(st), enqueue);
    model_.replayed(reinterpret_cast<kernels::stream_t>(st));  // next prepare() waits for this replay's copy
  } else {
    enqueue(reinterpret_cast<kernels::stream_t>(st));
  }
  if (out.sampled) enqueue_sampling(batch, plan, reinterpret_cast<kernels::stream_t>(st));
  // read_logits waits for the stream (with a null host pointer it only waits) so the outputs are on the host; the
  // staging copy of a replay is covered by replayed() above either way.
  if (out.logits) p_->rows.resize(static_cast<size_t>(plan.n_logit_rows) * static_cast<size_t>(V));
  model_.read_logits(out.logits ? p_->rows.data() : nullptr, reinterpret_cast<kernels::stream_t>(st));
  int64_t r = 0;
  for (int i = 0; i < n; ++i) {
    if (!batch.entries[static_cast<size_t>(i)].want_logits) continue;
    const int row = plan.logit_row[static_cast<size_t>(i)];
    if (out.logits)
      std::memcpy(out.logits + r * V, p_->rows.data() + static_cast<int64_t>(row) * V,
                  sizeof(float) * static_cast<size_t>(V));
    if (out.argmax) out.argmax[r] = p_->h_ids[row];
    if (out.sampled) out.sampled[r] = p_->h_sampled[row];
    ++r;
  }
}

// Draws every logit row of the step (rows nobody asked for are greedy) after the forward, on `st`: the parameters of
// this step go up in one copy, then fill_uniforms and sample; the ids come back to pinned memory (the caller waits).
void cuda_step_model::enqueue_sampling(const step_batch& batch, const step_plan& plan, kernels::stream_t s) {
  const auto st = reinterpret_cast<cudaStream_t>(s);
  const int rows = plan.n_logit_rows;
  if (rows == 0) return;
  const size_t R = static_cast<size_t>(model_.options().max_logit_rows);
  EV_ASSERT(static_cast<size_t>(rows) <= R);
  const sample_params h = sample_params::carve(p_->h_sample_params, R);
  for (int i = 0; i < rows; ++i) {
    h.seeds[i] = 0;
    h.steps[i] = 0;
    h.temperature[i] = 0;
    h.top_p[i] = 1;
    h.min_p[i] = 0;
    h.top_k[i] = 0;
  }
  size_t r = 0;
  for (size_t i = 0; i < batch.entries.size(); ++i) {
    if (!batch.entries[i].want_logits) continue;
    EV_ASSERT(r < batch.sampling.size(), "step asks for sampled ids without row_sampling for row ", r);
    const row_sampling& rs = batch.sampling[r++];
    const int row = plan.logit_row[i];
    h.seeds[row] = rs.seed;
    h.steps[row] = rs.step;
    h.temperature[row] = rs.temperature;
    h.top_p[row] = rs.top_p;
    h.min_p[row] = rs.min_p;
    h.top_k[row] = rs.top_k;
  }
  EV_STEP_CHECK(cudaMemcpyAsync(p_->d_sample_params, p_->h_sample_params, sample_params::bytes(R),
                                cudaMemcpyHostToDevice, st));
  const sample_params d = sample_params::carve(p_->d_sample_params, R);
  kernels::uniforms_args ua;
  ua.n_rows = rows;
  ua.seeds = d.seeds;
  ua.steps = d.steps;
  ua.u = p_->d_uniforms;
  auto stt = kernels::fill_uniforms(ua, s);
  EV_THROW_IF_NOT_KIND(stt.ok(), internal, "cuda_step_model: fill_uniforms: ", stt.message);
  kernels::sample_args sa;
  sa.n_rows = rows;
  sa.vocab = static_cast<int>(model_.vocab_size());
  sa.logits = model_.logits();
  sa.stride = model_.vocab_size();
  sa.temperature = d.temperature;
  sa.top_k = d.top_k;
  sa.top_p = d.top_p;
  sa.min_p = d.min_p;
  sa.uniforms = p_->d_uniforms;
  sa.ids = p_->d_sampled;
  stt = kernels::sample(sa, s);
  EV_THROW_IF_NOT_KIND(stt.ok(), internal, "cuda_step_model: sample: ", stt.message);
  EV_STEP_CHECK(cudaMemcpyAsync(p_->h_sampled, p_->d_sampled, sizeof(int32_t) * static_cast<size_t>(rows),
                                cudaMemcpyDeviceToHost, st));
}

}  // namespace evident::engine
