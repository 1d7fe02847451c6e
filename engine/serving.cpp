#include "engine/serving.h"

#include <deque>
#include <exception>
#include <utility>

namespace evident::engine {

struct serving_engine::mailbox {
  std::deque<scheduler_event> events;  // this request's events, in order (guarded by serving_engine::mu_)
  std::condition_variable cv;
};

serving_engine::serving_engine(step_model_i& backend, scheduler_config cfg)
    : sched_(backend, cfg), thread_([this] { loop(); }) {}

serving_engine::~serving_engine() {
  std::unique_lock<std::mutex> lk(mu_);
  stop_ = true;
  if (failure_.empty()) failure_ = "the engine is shutting down";
  fail_all_locked();
  lk.unlock();
  work_.notify_all();
  thread_.join();
  // Callers still inside generate() have their "error" finish; wait until they have left before members go.
  lk.lock();
  left_.wait(lk, [&] { return callers_ == 0; });
}

// Caller holds mu_. Ends every live request with "error" and failure_ as the message.
void serving_engine::fail_all_locked() {
  for (auto& [id, box] : boxes_) {
    box->events.push_back(finish_event(id, "error", failure_));
    box->cv.notify_one();
  }
  boxes_.clear();
}

scheduler_stats serving_engine::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void serving_engine::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      work_.wait(lk, [&] { return stop_ || sched_.has_work(); });
      if (stop_) return;
    }
    // The step runs without mu_: callers keep submitting (the scheduler's submit/cancel are thread-safe).
    std::vector<scheduler_event> ev;
    bool failed = false;
    std::string err;
    try {
      ev = sched_.step();
    } catch (const std::exception& e) {
      failed = true;
      err = e.what();
    } catch (...) {
      failed = true;
      err = "unknown exception";
    }
    std::lock_guard<std::mutex> lk(mu_);
    stats_ = sched_.stats();
    if (failed) {
      failure_ = "the engine's step failed: " + err;
      fail_all_locked();
      return;  // the backend's state is unknown: no more steps
    }
    for (auto& e : ev) {
      auto it = boxes_.find(e.id);
      if (it == boxes_.end()) continue;  // a rejection already answered by generate()
      const bool last = e.kind == scheduler_event::finish;
      auto box = it->second;
      box->events.push_back(std::move(e));
      if (last) boxes_.erase(it);
      box->cv.notify_one();
    }
  }
}

serving_result serving_engine::generate(request_params params, const std::function<bool(int32_t)>& on_token) {
  serving_result out;
  auto box = std::make_shared<mailbox>();
  request_id id = 0;
  // Counts this call in callers_ until it returns (the destructor waits for zero).
  struct caller_guard {
    serving_engine& e;
    explicit caller_guard(serving_engine& eng) : e(eng) {
      std::lock_guard<std::mutex> lk(e.mu_);
      ++e.callers_;
    }
    ~caller_guard() {
      std::lock_guard<std::mutex> lk(e.mu_);
      if (--e.callers_ == 0) e.left_.notify_all();
    }
  } guard(*this);
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!failure_.empty()) {
      out.finish_reason = "error";
      out.message = failure_;
      return out;
    }
    // Submitted under mu_, so the engine thread cannot check has_work() between the submit and its wait.
    auto res = sched_.submit(std::move(params));
    if (!res.accepted) {
      out.finish_reason = "rejected";
      out.message = res.reason;
      return out;
    }
    id = res.id;
    boxes_[id] = box;
  }
  work_.notify_one();
  bool cancelled = false;
  for (;;) {
    std::deque<scheduler_event> got;
    {
      std::unique_lock<std::mutex> lk(mu_);
      box->cv.wait(lk, [&] { return !box->events.empty(); });
      got.swap(box->events);
    }
    for (auto& e : got) {
      if (e.kind == scheduler_event::finish) {
        out.finish_reason = cancelled && e.finish_reason != "error" ? "cancelled" : e.finish_reason;
        out.message = std::move(e.message);
        return out;
      }
      if (cancelled) continue;
      out.tokens.push_back(e.token_id);
      bool keep = false;
      try {
        keep = on_token(e.token_id);
      } catch (...) {
        // The caller's failure: stop the request and forget its events before passing the exception on.
        sched_.cancel(id);
        std::lock_guard<std::mutex> lk(mu_);
        boxes_.erase(id);
        throw;
      }
      if (!keep) {
        cancelled = true;
        sched_.cancel(id);  // false when it already finished; its finish event comes either way
        work_.notify_one();
      }
    }
  }
}

}  // namespace evident::engine
