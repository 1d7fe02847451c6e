#include "engine/local-generator.h"

#include <algorithm>
#include <chrono>
#include <set>

#include "engine/base/error.h"
#include "engine/generation.h"
#include "engine/sampling.h"
#ifdef EVIDENT_HAVE_CUDA_ENGINE
#include "engine/cuda/cuda-model.h"
#include "engine/cuda/cuda-step-model.h"
#endif

namespace evident::engine {

namespace {
double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

local_generator::local_generator(const local_generator_options& options) : opt_(options) {
  std::vector<int64_t> eos;  // the model config's eos ids, from whichever engine loaded it
  scheduler_config sc;
  sc.token_budget = opt_.token_budget;
  const int64_t prefill = opt_.prefill_budget > 0 ? opt_.prefill_budget : opt_.device == "cuda" ? 32768 : 0;
  sc.prefill_only_budget = prefill > 0 ? std::max(opt_.token_budget, prefill) : 0;
  if (opt_.device == "cpu") {
    model_ = qwen3next_model::load(opt_.model_dir);
    eos = model_->config().eos_token_ids;
  } else if (opt_.device == "cpu-scheduled") {
    model_ = qwen3next_model::load(opt_.model_dir);
    eos = model_->config().eos_token_ids;
    const int64_t kv_tokens = opt_.max_context * opt_.max_sequences;
    backend_ = std::make_unique<cpu_step_model>(*model_, opt_.max_sequences, opt_.max_context, kv_tokens);
  } else if (opt_.device == "cuda") {
#ifdef EVIDENT_HAVE_CUDA_ENGINE
    cuda_model_options co;
    co.device = opt_.cuda_device;
    co.max_sequences = opt_.max_sequences;
    co.max_context = opt_.max_context;
    co.max_step_tokens = static_cast<int>(sc.prefill_only_budget);
    cuda_step_options so;
    fit_step_entries(co, so);
    auto m = std::shared_ptr<cuda_model>(cuda_model::load(opt_.model_dir, co));
    eos = m->config().eos_token_ids;
    backend_ = std::make_unique<cuda_step_model>(*m, so);
    cuda_model_ = std::move(m);
#else
    EV_THROW(invalid_input, "local engine: device 'cuda' needs a build with CUDA (this one has none); use 'cpu'");
#endif
  } else {
    EV_THROW(invalid_input, "local engine: unknown device '", opt_.device, "' (expected cpu, cuda or cpu-scheduled)");
  }
  if (backend_) serving_ = std::make_unique<serving_engine>(*backend_, sc);
  const auto tp = opt_.tokenizer_path.empty() ? opt_.model_dir / "tokenizer.json" : opt_.tokenizer_path;
  tok_ = std::make_unique<tokenizer>(tokenizer::from_file(tp));
  std::string dirname = std::filesystem::absolute(opt_.model_dir).lexically_normal().filename().string();
  if (dirname.empty()) dirname = std::filesystem::absolute(opt_.model_dir).parent_path().filename().string();
  name_ = "engine:" + dirname;
  for (int64_t id : eos) stop_ids_.push_back(static_cast<int32_t>(id));
  for (const char* s : {"<|im_end|>", "<|endoftext|>"})
    if (auto id = tok_->find(s)) stop_ids_.push_back(*id);
  std::sort(stop_ids_.begin(), stop_ids_.end());
  stop_ids_.erase(std::unique(stop_ids_.begin(), stop_ids_.end()), stop_ids_.end());
  if (auto id = tok_->find("<think>")) think_open_ = *id;
  if (auto id = tok_->find("</think>")) think_close_ = *id;
}

local_generator::~local_generator() = default;

void local_generator::generate(const generate_request& request, const event_callback& on_event) {
  // The CPU engine runs one request at a time (it owns the prefix cache); the scheduled engine batches callers.
  std::unique_lock<std::mutex> lk(mu_, std::defer_lock);
  if (!serving_) lk.lock();
  usage_info usage;
  std::string finish_reason = "stop";
  generate_event fin;
  fin.kind = event_kind::finish;
  try {
    run(request, on_event, usage, finish_reason);
  } catch (const std::exception& e) {
    finish_reason = "error";
    fin.error_message = e.what();
  }
  generate_event u;
  u.kind = event_kind::usage;
  u.usage = usage;
  on_event(u);
  fin.finish_reason = finish_reason;
  on_event(fin);
}

namespace {

// The text side of one request: generated ids -> reasoning / answer deltas (see the header), whichever engine made
// them. push() returns false to stop generating (the caller cancelled, or a stop string ended the answer).
class answer_stream {
 public:
  answer_stream(const tokenizer& tok, const std::vector<int32_t>& stop_ids, int32_t think_open, int32_t think_close,
                const generate_request& request, bool prompt_opens_think, const event_callback& on_event)
      : stop_ids_(stop_ids),
        think_open_(think_open),
        think_close_(think_close),
        on_event_(on_event),
        dec_(tok, /*skip_special=*/true),
        stops_(request.sampling.stop),
        in_reasoning_(prompt_opens_think) {}

  bool push(int32_t tok) {
    if (first_) {
      t_first_ = std::chrono::steady_clock::now();
      first_ = false;
    }
    if (in_reasoning_) ++reasoning_tokens_;
    if (std::binary_search(stop_ids_.begin(), stop_ids_.end(), tok)) return true;
    if (tok == think_open_) {
      in_reasoning_ = true;
      part_started_ = false;
      return true;
    }
    if (tok == think_close_) {
      if (in_reasoning_) {
        std::string tail = dec_.finish();
        if (!tail.empty() && !emit(event_kind::reasoning_delta, tail)) return cancelled_ = true, false;
      }
      in_reasoning_ = false;
      part_started_ = false;
      return true;
    }
    std::string piece = dec_.push(tok);
    if (piece.empty()) return true;
    if (in_reasoning_) {
      if (!emit(event_kind::reasoning_delta, piece)) return cancelled_ = true, false;
    } else {
      std::string out = stops_.push(piece);
      if (!out.empty() && !emit(event_kind::answer_delta, out)) return cancelled_ = true, false;
      if (stops_.stopped()) return stopped_by_string_ = true, false;
    }
    return true;
  }

  // After the last token: flushes what the decoder and the stop-string filter hold, and returns the finish reason
  // given the engine's own ("stop" / "length" / "cancelled").
  std::string finish(const std::string& engine_reason) {
    if (!cancelled_ && !stopped_by_string_) {
      std::string tail = dec_.finish();
      if (in_reasoning_) {
        if (!tail.empty()) emit(event_kind::reasoning_delta, tail);
      } else {
        std::string out = stops_.push(tail) + stops_.flush();
        if (!out.empty()) emit(event_kind::answer_delta, out);
      }
    }
    return cancelled_ ? "cancelled" : stopped_by_string_ ? "stop" : engine_reason;
  }

  bool started() const { return !first_; }
  std::chrono::steady_clock::time_point first_token_time() const { return t_first_; }
  int reasoning_tokens() const { return reasoning_tokens_; }

 private:
  // Drops the newlines that open a part (the template's "<think>\n" / "</think>\n\n").
  bool emit(event_kind kind, std::string s) {
    if (!part_started_) {
      size_t k = 0;
      while (k < s.size() && s[k] == '\n') ++k;
      s.erase(0, k);
      if (s.empty()) return true;
      part_started_ = true;
    }
    generate_event ev;
    ev.kind = kind;
    ev.text = std::move(s);
    return on_event_(ev);
  }

  const std::vector<int32_t>& stop_ids_;
  int32_t think_open_, think_close_;
  const event_callback& on_event_;
  incremental_decoder dec_;
  stop_string_filter stops_;
  bool in_reasoning_;
  bool part_started_ = false;  // a non-newline character of the current part was emitted
  bool cancelled_ = false, stopped_by_string_ = false, first_ = true;
  std::chrono::steady_clock::time_point t_first_{};
  int reasoning_tokens_ = 0;
};

}  // namespace

local_generator::prompt local_generator::build_prompt(const generate_request& request) const {
  prompt pr;
  chat_template_options topt;
  topt.variant = opt_.variant;
  topt.enable_thinking = request.enable_thinking;
  std::vector<size_t> message_ends;
  const std::string text = render_chat(request.messages, topt, &message_ends);

  // Boundaries (character offsets) -> pieces -> ids, remembering the token count at each boundary.
  std::set<size_t> cuts;
  for (size_t b : request.prefix_boundaries)
    if (b > 0 && b < text.size()) cuts.insert(b);
  if (!request.messages.empty() && request.messages[0].role == "system" && !message_ends.empty() &&
      message_ends[0] < text.size())
    cuts.insert(message_ends[0]);
  size_t prev = 0;
  for (size_t c : cuts) {
    tok_->encode_into(std::string_view(text).substr(prev, c - prev), pr.ids);
    pr.boundary_tokens.push_back(static_cast<int64_t>(pr.ids.size()));
    prev = c;
  }
  tok_->encode_into(std::string_view(text).substr(prev), pr.ids);
  pr.boundary_tokens.push_back(static_cast<int64_t>(pr.ids.size()));  // the request end
  pr.opens_think = text.size() >= 8 && text.rfind("<think>") != std::string::npos &&
                   text.find("</think>", text.rfind("<think>")) == std::string::npos &&
                   !request.messages.empty() && request.messages.back().role != "assistant";
  return pr;
}

void local_generator::run(const generate_request& request, const event_callback& on_event, usage_info& usage,
                          std::string& finish_reason) {
  const auto t_start = std::chrono::steady_clock::now();
  prompt pr = build_prompt(request);
  const auto& ids = pr.ids;
  const int64_t n_prompt = static_cast<int64_t>(ids.size());
  usage.prompt_tokens = static_cast<int>(n_prompt);
  answer_stream out(*tok_, stop_ids_, think_open_, think_close_, request, pr.opens_think, on_event);
  std::string engine_reason;
  size_t n_generated = 0;

  if (serving_) {
    // Scheduled engine: the request shares steps with the other callers' requests; no prefix cache.
    request_params rp;
    rp.prompt = ids;
    rp.sampling = request.sampling;
    rp.stop_ids = stop_ids_;
    const auto r = serving_->generate(std::move(rp), [&](int32_t tok) { return out.push(tok); });
    if (r.finish_reason == "rejected") EV_THROW(resource, "engine (", opt_.device, "): request rejected: ", r.message);
    if (r.finish_reason == "error") EV_THROW(internal, "engine (", opt_.device, "): ", r.message);
    engine_reason = r.finish_reason;
    n_generated = r.tokens.size();
  } else {
    // CPU engine: longest cached prefix that ends on a snapshot and leaves at least one token to run.
    cache_entry entry;
    entry.ids = ids;
    int64_t reused = 0;
    int best_entry = -1;
    const state_snapshot* best_snap = nullptr;
    for (size_t e = 0; e < cache_.size(); ++e)
      for (const auto& s : cache_[e].snapshots) {
        const int64_t b = s.n_past;
        if (b <= reused || b >= n_prompt || b > static_cast<int64_t>(cache_[e].ids.size())) continue;
        if (std::equal(ids.begin(), ids.begin() + b, cache_[e].ids.begin())) {
          reused = b;
          best_entry = static_cast<int>(e);
          best_snap = &s;
        }
      }
    if (best_entry >= 0) {
      entry.mem = std::move(cache_[static_cast<size_t>(best_entry)].mem);
      entry.mem.restore(*best_snap);
      for (const auto& s : cache_[static_cast<size_t>(best_entry)].snapshots)
        if (s.n_past <= reused) entry.snapshots.push_back(s);
      cache_.erase(cache_.begin() + best_entry);
    } else {
      entry.mem = model_->new_sequence();
    }
    usage.cached_prompt_tokens = static_cast<int>(reused);

    // Prefill up to the last boundary before the end, snapshotting at each; the generation loop prefills the rest.
    for (int64_t b : pr.boundary_tokens) {
      if (b <= entry.mem.n_past || b >= n_prompt) continue;
      for (int64_t p = entry.mem.n_past; p < b; p += opt_.prefill_chunk) {
        const int64_t len = std::min(opt_.prefill_chunk, b - p);
        model_->forward(entry.mem, ids.data() + p, len, nullptr);
      }
      entry.snapshots.push_back(entry.mem.snapshot());
    }
    std::vector<int32_t> rest(ids.begin() + entry.mem.n_past, ids.end());
    sampler smp(request.sampling);
    smp.set_prompt(ids);
    auto on_token = [&](int32_t tok) {
      // At the first token the memory holds exactly the prompt (that token is not fed yet): snapshot the request end.
      if (!out.started()) entry.snapshots.push_back(entry.mem.snapshot());
      return out.push(tok);
    };
    const auto res = generate_tokens(*model_, entry.mem, rest, smp, request.sampling.max_tokens, stop_ids_, on_token,
                                     opt_.prefill_chunk);
    engine_reason = res.finish_reason;
    n_generated = res.tokens.size();
    cache_.push_back(std::move(entry));
    while (cache_.size() > std::max<size_t>(opt_.max_cached_requests, 1)) cache_.pop_front();
  }

  finish_reason = out.finish(engine_reason);
  usage.reasoning_tokens = out.reasoning_tokens();
  usage.completion_tokens = static_cast<int>(n_generated);
  const auto t_end = std::chrono::steady_clock::now();
  usage.time_to_first_token_ms = out.started() ? ms_between(t_start, out.first_token_time()) : ms_between(t_start, t_end);
  usage.total_ms = ms_between(t_start, t_end);
}

}  // namespace evident::engine
