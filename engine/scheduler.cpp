#include "engine/scheduler.h"

#include <algorithm>

#include "engine/base/error.h"
#include "engine/memory.h"
#include "engine/models/qwen3next.h"
#include "kernels/sampling.h"

namespace evident::engine {

scheduler_event finish_event(request_id id, const std::string& reason, const std::string& message) {
  scheduler_event e;
  e.kind = scheduler_event::finish;
  e.id = id;
  e.finish_reason = reason;
  e.message = message;
  return e;
}

int64_t step_batch::n_logits() const {
  int64_t n = 0;
  for (const auto& e : entries) n += e.want_logits ? 1 : 0;
  return n;
}

struct scheduler::request {
  request_id id = 0;
  request_params p;
  std::unique_ptr<sampler> smp;
  draw_mode draw = draw_mode::host;
  int32_t slot = -1;
  int64_t prefilled = 0;  // prompt tokens already run
  std::vector<int32_t> generated;
  int64_t blocks = 0;  // KV blocks reserved
  bool cancelled = false;
};

scheduler::scheduler(step_model_i& model, scheduler_config cfg) : model_(model), cfg_(cfg) {
  EV_THROW_IF_NOT_MSG(cfg_.token_budget >= 1, "scheduler: token_budget must be >= 1, got ", cfg_.token_budget);
  if (cfg_.prefill_only_budget <= 0) cfg_.prefill_only_budget = cfg_.token_budget;
  EV_THROW_IF_NOT_MSG(cfg_.prefill_only_budget >= cfg_.token_budget, "scheduler: prefill_only_budget (",
                      cfg_.prefill_only_budget, ") must be >= token_budget (", cfg_.token_budget, ")");
  EV_THROW_IF_NOT_MSG(cfg_.prefill_only_budget <= model_.max_step_tokens(), "scheduler: prefill_only_budget (",
                      cfg_.prefill_only_budget, ") exceeds the backend's max_step_tokens (", model_.max_step_tokens(),
                      ")");
  EV_THROW_IF_NOT_MSG(model_.max_sequences() >= 1, "scheduler: the backend has no sequence slots");
  EV_THROW_IF_NOT_MSG(cfg_.token_budget > model_.max_sequences(), "scheduler: token_budget (", cfg_.token_budget,
                      ") must exceed the backend's max_sequences (", model_.max_sequences(),
                      ") so prefill advances beside a full batch of decodes");
  EV_THROW_IF_NOT_MSG(cfg_.token_budget <= model_.max_step_tokens(), "scheduler: token_budget (", cfg_.token_budget,
                      ") exceeds the backend's max_step_tokens (", model_.max_step_tokens(), ")");
  EV_THROW_IF_NOT_MSG(model_.max_sequences() <= model_.max_step_entries(), "scheduler: the backend's max_sequences (",
                      model_.max_sequences(), ") exceeds its max_step_entries (", model_.max_step_entries(), ")");
  EV_THROW_IF_NOT_MSG(model_.kv_block_tokens() >= 1 && model_.kv_blocks() >= 1,
                      "scheduler: the backend reports no KV capacity");
  // Slots are handed out lowest first (pop from the back).
  for (int s = model_.max_sequences() - 1; s >= 0; --s) free_slots_.push_back(s);
}

scheduler::~scheduler() {
  for (auto& r : running_) model_.end_sequence(r->slot);
}

int64_t scheduler::blocks_for(const request_params& p) const {
  const int64_t tokens = static_cast<int64_t>(p.prompt.size()) + p.sampling.max_tokens;
  return (tokens + model_.kv_block_tokens() - 1) / model_.kv_block_tokens();
}

std::string scheduler::check_fits(const request_params& p) const {
  using evident::detail::concat;
  if (p.prompt.empty()) return "empty prompt";
  if (p.sampling.max_tokens < 1) return concat("max_tokens must be >= 1, got ", p.sampling.max_tokens);
  const int64_t V = model_.vocab_size();
  for (size_t i = 0; i < p.prompt.size(); ++i)
    if (p.prompt[i] < 0 || p.prompt[i] >= V)
      return concat("prompt token ", i, " is ", p.prompt[i], ", outside the vocabulary [0, ", V, ")");
  const int64_t need = static_cast<int64_t>(p.prompt.size()) + p.sampling.max_tokens;
  if (need > model_.max_context())
    return concat("prompt (", p.prompt.size(), ") + max_tokens (", p.sampling.max_tokens, ") = ", need,
                  " tokens exceeds the context limit of ", model_.max_context());
  const int64_t blocks = blocks_for(p);
  if (blocks > model_.kv_blocks())
    return concat("prompt + max_tokens = ", need, " tokens needs ", blocks, " KV blocks of ", model_.kv_block_tokens(),
                  " tokens; the cache holds ", model_.kv_blocks(), " blocks in all");
  return {};
}

submit_result scheduler::submit(request_params params) {
  submit_result res;
  std::string why = check_fits(params);
  // The sampler checks its params (top_p in (0, 1], ...); built before the lock, so a bad one is a rejection.
  std::unique_ptr<sampler> smp;
  if (why.empty()) {
    try {
      smp = std::make_unique<sampler>(params.sampling);
      smp->set_prompt(params.prompt);
    } catch (const evident::error& e) {
      why = e.what();
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  res.id = next_id_++;
  if (why.empty() && static_cast<int64_t>(queue_.size()) >= cfg_.max_queue)
    why = evident::detail::concat("queue full (", cfg_.max_queue, " requests waiting)");
  if (!why.empty()) {
    res.reason = why;  // never live: state() reports finished for ids it does not hold
    pending_.push_back(finish_event(res.id, "rejected", why));
    return res;
  }
  auto r = std::make_unique<request>();
  r->id = res.id;
  r->p = std::move(params);
  const auto& sp = r->p.sampling;
  const bool no_penalties = sp.repetition_penalty == 1.0f && sp.presence_penalty == 0.0f;
  r->draw = !no_penalties                                         ? draw_mode::host
            : sp.temperature <= 0 && model_.supports_argmax()    ? draw_mode::argmax
            : model_.supports_sampling()                          ? draw_mode::device
                                                                  : draw_mode::host;
  r->smp = std::move(smp);
  states_[res.id] = request_state::queued;
  queue_.push_back(std::move(r));
  res.accepted = true;
  return res;
}

bool scheduler::cancel(request_id id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto st = states_.find(id);
  if (st == states_.end()) return false;  // unknown or finished (states_ holds live requests only)
  if (st->second == request_state::queued) {
    auto it = std::find_if(queue_.begin(), queue_.end(), [id](const auto& r) { return r->id == id; });
    EV_ASSERT(it != queue_.end(), "queued request ", id, " not in the queue");
    queue_.erase(it);
    states_.erase(st);
    pending_.push_back(finish_event(id, "cancelled"));
    return true;
  }
  cancel_running_.push_back(id);
  return true;
}

// Caller holds mu_.
void scheduler::admit() {
  while (!queue_.empty() && !free_slots_.empty()) {
    auto& r = queue_.front();
    const int64_t blocks = blocks_for(r->p);
    if (reserved_blocks_ + blocks > model_.kv_blocks()) break;  // head-of-line: wait for memory
    r->blocks = blocks;
    reserved_blocks_ += blocks;
    r->slot = free_slots_.back();
    free_slots_.pop_back();
    model_.begin_sequence(r->slot);
    states_[r->id] = request_state::prefilling;
    running_.push_back(std::move(r));
    queue_.pop_front();
  }
}

// Caller holds mu_.
void scheduler::finish(request& r, const std::string& reason, std::vector<scheduler_event>& ev) {
  model_.end_sequence(r.slot);
  free_slots_.push_back(r.slot);
  reserved_blocks_ -= r.blocks;
  states_.erase(r.id);  // a finished id reads as finished through state() without an entry
  ev.push_back(finish_event(r.id, reason));
  r.slot = -1;
}

std::vector<scheduler_event> scheduler::step() {
  std::vector<scheduler_event> ev;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ev.swap(pending_);
    for (request_id id : cancel_running_)
      for (auto& r : running_)
        if (r->id == id && !r->cancelled) {
          r->cancelled = true;
          finish(*r, "cancelled", ev);
        }
    cancel_running_.clear();
    std::erase_if(running_, [](const auto& r) { return r->cancelled; });
    admit();
  }

  // Build the batch: every decode, then prefill chunks in admission order within the budget.
  step_batch& b = last_batch_;
  b.tokens.clear();
  b.entries.clear();
  b.sampling.clear();
  std::vector<request*> rows;  // request of each logits row
  for (auto& r : running_) {
    if (r->prefilled < static_cast<int64_t>(r->p.prompt.size())) continue;
    batch_entry e;
    e.slot = r->slot;
    e.pos = r->prefilled + static_cast<int64_t>(r->generated.size()) - 1;
    e.n_tokens = 1;
    e.offset = static_cast<int64_t>(b.tokens.size());
    e.want_logits = true;
    b.tokens.push_back(r->generated.back());
    b.entries.push_back(e);
    rows.push_back(r.get());
  }
  b.n_decode = static_cast<int64_t>(b.entries.size());
  const int64_t budget = b.n_decode == 0 ? cfg_.prefill_only_budget : cfg_.token_budget;
  const int64_t chunk_cap = cfg_.max_prefill_chunk > 0 ? cfg_.max_prefill_chunk : budget;
  int64_t left = budget - b.n_decode;
  std::vector<std::pair<request*, int64_t>> chunks;
  for (auto& r : running_) {
    if (left <= 0) break;
    const int64_t n_prompt = static_cast<int64_t>(r->p.prompt.size());
    if (r->prefilled >= n_prompt) continue;
    const int64_t n = std::min({left, chunk_cap, n_prompt - r->prefilled});
    batch_entry e;
    e.slot = r->slot;
    e.pos = r->prefilled;
    e.n_tokens = static_cast<int32_t>(n);
    e.offset = static_cast<int64_t>(b.tokens.size());
    e.want_logits = r->prefilled + n == n_prompt;
    b.tokens.insert(b.tokens.end(), r->p.prompt.begin() + r->prefilled, r->p.prompt.begin() + r->prefilled + n);
    b.entries.push_back(e);
    if (e.want_logits) rows.push_back(r.get());
    chunks.emplace_back(r.get(), n);
    left -= n;
  }
  if (b.entries.empty()) return ev;

  // Run it, asking only for the outputs the rows' draw modes need (logits reach the host only for host draws).
  const int64_t n_rows = static_cast<int64_t>(rows.size());
  const int64_t V = model_.vocab_size();
  bool need[3] = {false, false, false};
  for (request* r : rows) need[static_cast<int>(r->draw)] = true;
  step_output out;
  argmax_.assign(static_cast<size_t>(n_rows), -1);
  sampled_.assign(static_cast<size_t>(n_rows), -1);
  if (need[static_cast<int>(draw_mode::host)]) {
    logits_.resize(static_cast<size_t>(n_rows * V));
    out.logits = logits_.data();
  }
  if (need[static_cast<int>(draw_mode::argmax)]) out.argmax = argmax_.data();
  if (need[static_cast<int>(draw_mode::device)]) {
    out.sampled = sampled_.data();
    b.sampling.resize(static_cast<size_t>(n_rows));
    for (int64_t i = 0; i < n_rows; ++i) {
      const request& r = *rows[static_cast<size_t>(i)];
      row_sampling& rs = b.sampling[static_cast<size_t>(i)];
      rs = row_sampling{};
      if (r.draw != draw_mode::device) continue;  // greedy placeholder; the row's token comes from elsewhere
      rs.temperature = r.p.sampling.temperature;
      rs.top_k = r.p.sampling.top_k;
      rs.top_p = r.p.sampling.top_p;
      rs.min_p = r.p.sampling.min_p;
      rs.seed = r.smp->seed();
      rs.step = static_cast<int64_t>(r.generated.size());
    }
  }
  model_.step(b, out);
  ++stats_.steps;
  stats_.decode_tokens += b.n_decode;
  for (auto& [r, n] : chunks) {
    r->prefilled += n;
    stats_.prefill_tokens += n;
  }
  stats_.max_step_tokens = std::max(stats_.max_step_tokens, static_cast<int64_t>(b.tokens.size()));

  // Sample, apply stop rules.
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t i = 0; i < n_rows; ++i) {
    request& r = *rows[static_cast<size_t>(i)];
    const int32_t tok = r.draw == draw_mode::argmax   ? argmax_[static_cast<size_t>(i)]
                        : r.draw == draw_mode::device ? sampled_[static_cast<size_t>(i)]
                                                      : r.smp->sample(logits_.data() + i * V, V);
    EV_ASSERT(tok >= 0 && tok < V, "backend returned token ", tok, " outside [0, ", V, ")");
    r.smp->accept(tok);
    r.generated.push_back(tok);
    scheduler_event e;
    e.kind = scheduler_event::token;
    e.id = r.id;
    e.token_id = tok;
    ev.push_back(std::move(e));
    states_[r.id] = request_state::decoding;
    if (std::find(r.p.stop_ids.begin(), r.p.stop_ids.end(), tok) != r.p.stop_ids.end())
      finish(r, "stop", ev);
    else if (static_cast<int64_t>(r.generated.size()) >= r.p.sampling.max_tokens)
      finish(r, "length", ev);
  }
  std::erase_if(running_, [](const auto& r) { return r->slot < 0; });
  return ev;
}

bool scheduler::has_work() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !queue_.empty() || !running_.empty() || !pending_.empty() || !cancel_running_.empty();
}

request_state scheduler::state(request_id id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = states_.find(id);
  return it == states_.end() ? request_state::finished : it->second;
}

std::vector<int32_t> scheduler::tokens(request_id id) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& r : running_)
    if (r->id == id) return r->generated;
  return {};
}

int64_t scheduler::free_kv_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return model_.kv_blocks() - reserved_blocks_;
}

int scheduler::n_running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(running_.size());
}

int scheduler::n_queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size());
}

// ---------------------------------------------------------------------------------------------------------------------

cpu_step_model::cpu_step_model(const qwen3next_model& model, int max_sequences, int64_t max_context,
                               int64_t kv_token_capacity)
    : model_(model), max_context_(max_context), kv_capacity_(kv_token_capacity) {
  EV_THROW_IF_NOT_MSG(max_sequences >= 1, "cpu_step_model: max_sequences must be >= 1");
  seqs_.resize(static_cast<size_t>(max_sequences));
}

cpu_step_model::~cpu_step_model() = default;

int64_t cpu_step_model::vocab_size() const {
  return model_.vocab_size();
}

void cpu_step_model::begin_sequence(int32_t slot) {
  EV_ASSERT(slot >= 0 && slot < max_sequences());
  seqs_[static_cast<size_t>(slot)] = std::make_unique<sequence_memory>(model_.new_sequence());
}

void cpu_step_model::end_sequence(int32_t slot) {
  EV_ASSERT(slot >= 0 && slot < max_sequences());
  seqs_[static_cast<size_t>(slot)].reset();
}

void cpu_step_model::step(const step_batch& batch, const step_output& out) {
  const int64_t V = model_.vocab_size();
  row_.resize(static_cast<size_t>(V));
  int64_t r = 0;
  for (const auto& e : batch.entries) {
    EV_ASSERT(e.slot >= 0 && e.slot < max_sequences() && seqs_[static_cast<size_t>(e.slot)], "slot ", e.slot);
    auto& mem = *seqs_[static_cast<size_t>(e.slot)];
    EV_ASSERT(mem.n_past == e.pos, "slot ", e.slot, " holds ", mem.n_past, " tokens, entry says pos ", e.pos);
    float* dst = e.want_logits ? (out.logits ? out.logits + r * V : row_.data()) : nullptr;
    model_.forward(mem, batch.tokens.data() + e.offset, e.n_tokens, dst);
    if (!e.want_logits) continue;
    if (out.argmax) {
      // Lowest id on ties, as the greedy sampler.
      int32_t best = 0;
      for (int64_t v = 1; v < V; ++v)
        if (dst[v] > dst[best]) best = static_cast<int32_t>(v);
      out.argmax[r] = best;
    }
    if (out.sampled) {
      EV_ASSERT(static_cast<int64_t>(batch.sampling.size()) > r, "step asks for sampled ids without row_sampling");
      out.sampled[r] = draw_row_on_host(dst, V, batch.sampling[static_cast<size_t>(r)]);
    }
    ++r;
  }
}

int32_t draw_row_on_host(const float* logits, int64_t vocab, const row_sampling& rs) {
  float u = 0;
  int64_t step = rs.step;
  kernels::uniforms_args ua;
  ua.n_rows = 1;
  ua.seeds = &rs.seed;
  ua.steps = &step;
  ua.u = &u;
  kernels::fill_uniforms_ref(ua);
  int32_t id = -1;
  kernels::sample_args a;
  a.n_rows = 1;
  a.vocab = static_cast<int>(vocab);
  a.logits = logits;
  a.stride = vocab;
  a.temperature = &rs.temperature;
  a.top_k = &rs.top_k;
  a.top_p = &rs.top_p;
  a.min_p = &rs.min_p;
  a.uniforms = &u;
  a.ids = &id;
  kernels::sample_ref(a);
  return id;
}

}  // namespace evident::engine
