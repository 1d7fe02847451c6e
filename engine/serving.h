// engine::serving_engine: the scheduler (engine/scheduler.h) on its own engine thread, for callers that each run one
// request on their own thread (the server's workers, through generator_i). Requests from all callers are batched
// together by the scheduler (continuous batching, chunked prefill); each caller sees only its own tokens.
//
//   caller thread A ──generate(params, on_token)──► submit ─┐                 ┌─► A's mailbox ──► on_token (A's thread)
//   caller thread B ──generate(params, on_token)──► submit ─┼─► scheduler ◄── engine thread: step() loop, dispatch ─┤
//                                                           ┘   (backend)     └─► B's mailbox ──► on_token (B's thread)
//
// on_token runs on the caller's thread (never on the engine thread), in token order; returning false cancels the
// request (its finish reason is then "cancelled"; tokens the engine produced after that are dropped). An exception
// from on_token cancels the request and leaves generate().
// A backend failure (an exception from a step) fails every live request with finish reason "error" and the failure's
// message, and every later generate() too: the backend's state is unknown after a failed step, so the engine stops.
//
// Thread-safety: generate() may be called from any number of threads at once. The destructor stops the engine thread,
// ends the requests of callers still inside generate() with "error" ("the engine is shutting down") and waits until
// they have returned. `backend` must outlive the object.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/scheduler.h"

namespace evident::engine {

struct serving_result {
  std::vector<int32_t> tokens;  // every token generated (a sampled stop id included), as passed to on_token
  std::string finish_reason;    // "stop" | "length" | "cancelled" | "rejected" | "error"
  std::string message;          // why, for "rejected" and "error"
};

class serving_engine {
 public:
  // Throws evident::error when the scheduler config does not suit the backend (see scheduler's constructor).
  serving_engine(step_model_i& backend, scheduler_config cfg = {});
  ~serving_engine();
  serving_engine(const serving_engine&) = delete;
  serving_engine& operator=(const serving_engine&) = delete;

  // Runs one request to its end (blocking) and returns what it generated and why it ended. Never throws for the
  // request's own failure (rejected / error are finish reasons).
  serving_result generate(request_params params, const std::function<bool(int32_t token)>& on_token);

  scheduler_stats stats() const;  // a copy, taken between steps

 private:
  struct mailbox;
  void loop();
  void fail_all_locked();

  scheduler sched_;
  mutable std::mutex mu_;        // guards everything below and the order of submit vs. the engine's wait
  std::condition_variable work_;  // the engine thread waits here for work or stop
  std::map<request_id, std::shared_ptr<mailbox>> boxes_;
  scheduler_stats stats_;
  std::string failure_;  // set once a step failed (or the engine is shutting down)
  bool stop_ = false;
  int callers_ = 0;                // generate() calls in progress
  std::condition_variable left_;   // callers_ reached zero
  std::thread thread_;
};

}  // namespace evident::engine
