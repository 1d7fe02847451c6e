#include "engine/local-generator.h"

#include <algorithm>
#include <chrono>
#include <set>

#include "engine/base/error.h"
#include "engine/generation.h"
#include "engine/sampling.h"

namespace evident::engine {

namespace {
double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

local_generator::local_generator(const local_generator_options& options) : opt_(options) {
  model_ = qwen3next_model::load(opt_.model_dir);
  const auto tp = opt_.tokenizer_path.empty() ? opt_.model_dir / "tokenizer.json" : opt_.tokenizer_path;
  tok_ = std::make_unique<tokenizer>(tokenizer::from_file(tp));
  std::string dirname = std::filesystem::absolute(opt_.model_dir).lexically_normal().filename().string();
  if (dirname.empty()) dirname = std::filesystem::absolute(opt_.model_dir).parent_path().filename().string();
  name_ = "engine:" + dirname;
  for (int64_t id : model_->config().eos_token_ids) stop_ids_.push_back(static_cast<int32_t>(id));
  for (const char* s : {"<|im_end|>", "<|endoftext|>"})
    if (auto id = tok_->find(s)) stop_ids_.push_back(*id);
  std::sort(stop_ids_.begin(), stop_ids_.end());
  stop_ids_.erase(std::unique(stop_ids_.begin(), stop_ids_.end()), stop_ids_.end());
  if (auto id = tok_->find("<think>")) think_open_ = *id;
  if (auto id = tok_->find("</think>")) think_close_ = *id;
}

local_generator::~local_generator() = default;

void local_generator::generate(const generate_request& request, const event_callback& on_event) {
  std::lock_guard<std::mutex> lk(mu_);
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

void local_generator::run(const generate_request& request, const event_callback& on_event, usage_info& usage,
                          std::string& finish_reason) {
  const auto t_start = std::chrono::steady_clock::now();
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
  std::vector<int32_t> ids;
  std::vector<int64_t> boundary_tokens;
  size_t prev = 0;
  for (size_t c : cuts) {
    tok_->encode_into(std::string_view(text).substr(prev, c - prev), ids);
    boundary_tokens.push_back(static_cast<int64_t>(ids.size()));
    prev = c;
  }
  tok_->encode_into(std::string_view(text).substr(prev), ids);
  const int64_t n_prompt = static_cast<int64_t>(ids.size());
  boundary_tokens.push_back(n_prompt);  // the request end
  usage.prompt_tokens = static_cast<int>(n_prompt);

  // Longest cached prefix that ends on a snapshot and leaves at least one token to run.
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
  for (int64_t b : boundary_tokens) {
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
  incremental_decoder dec(*tok_, /*skip_special=*/true);
  stop_string_filter stops(request.sampling.stop);
  const bool prompt_opens_think = text.size() >= 8 && text.rfind("<think>") != std::string::npos &&
                                  text.find("</think>", text.rfind("<think>")) == std::string::npos &&
                                  request.messages.back().role != "assistant";
  bool in_reasoning = prompt_opens_think;
  bool part_started = false;  // a non-newline character of the current part was emitted
  bool cancelled = false, stopped_by_string = false, first = true;
  std::chrono::steady_clock::time_point t_first{};
  int reasoning_tokens = 0;
  auto emit = [&](event_kind kind, std::string s) {
    if (!part_started) {
      size_t k = 0;
      while (k < s.size() && s[k] == '\n') ++k;
      s.erase(0, k);
      if (s.empty()) return true;
      part_started = true;
    }
    generate_event ev;
    ev.kind = kind;
    ev.text = std::move(s);
    return on_event(ev);
  };
  bool snapshot_taken_at_end = false;
  auto on_token = [&](int32_t tok) {
    if (first) {
      t_first = std::chrono::steady_clock::now();
      first = false;
      if (!snapshot_taken_at_end) {
        // The memory now holds exactly the prompt (the first sampled token is not fed yet): snapshot the request end.
        entry.snapshots.push_back(entry.mem.snapshot());
        snapshot_taken_at_end = true;
      }
    }
    if (in_reasoning) ++reasoning_tokens;
    if (std::binary_search(stop_ids_.begin(), stop_ids_.end(), tok)) return true;
    if (tok == think_open_) {
      in_reasoning = true;
      part_started = false;
      return true;
    }
    if (tok == think_close_) {
      if (in_reasoning) {
        std::string tail = dec.finish();
        if (!tail.empty() && !emit(event_kind::reasoning_delta, tail)) return cancelled = true, false;
      }
      in_reasoning = false;
      part_started = false;
      return true;
    }
    std::string piece = dec.push(tok);
    if (piece.empty()) return true;
    if (in_reasoning) {
      if (!emit(event_kind::reasoning_delta, piece)) return cancelled = true, false;
    } else {
      std::string out = stops.push(piece);
      if (!out.empty() && !emit(event_kind::answer_delta, out)) return cancelled = true, false;
      if (stops.stopped()) return stopped_by_string = true, false;
    }
    return true;
  };
  const auto res = generate_tokens(*model_, entry.mem, rest, smp, request.sampling.max_tokens, stop_ids_, on_token,
                                   opt_.prefill_chunk);
  if (!cancelled && !stopped_by_string) {
    std::string tail = dec.finish();
    if (in_reasoning) {
      if (!tail.empty()) emit(event_kind::reasoning_delta, tail);
    } else {
      std::string out = stops.push(tail) + stops.flush();
      if (!out.empty()) emit(event_kind::answer_delta, out);
    }
  }
  finish_reason = cancelled ? "cancelled" : stopped_by_string ? "stop" : res.finish_reason;
  usage.reasoning_tokens = reasoning_tokens;
  usage.completion_tokens = static_cast<int>(res.tokens.size());
  const auto t_end = std::chrono::steady_clock::now();
  usage.time_to_first_token_ms = first ? ms_between(t_start, t_end) : ms_between(t_start, t_first);
  usage.total_ms = ms_between(t_start, t_end);

  cache_.push_back(std::move(entry));
  while (cache_.size() > std::max<size_t>(opt_.max_cached_requests, 1)) cache_.pop_front();
}

}  // namespace evident::engine
