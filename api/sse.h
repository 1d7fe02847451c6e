// Server-Sent Events: formatting, and the channel that carries one streamed answer from the worker thread that
// computes it to the connection thread that writes it.
//
//   worker:  push(chunk)* ... close()          connection thread: pop() until it returns false
//   a connection that fails to write sets cancel(); the worker's next event callback sees cancelled() and returns
//   false, which makes the pipeline stop.
// Thread-safety: one producer and one consumer at a time; every member is safe to call concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

namespace evident::api {

// "event: NAME\ndata: JSON\n\n" (the JSON is one line, so one data field).
std::string sse_event(const std::string& name, const nlohmann::json& data);
// "data: JSON\n\n" (unnamed event, as OpenAI streams use).
std::string sse_data(const std::string& payload);

class event_channel {
 public:
  void push(std::string chunk);
  void close();  // no more chunks; pop() drains what is left, then returns false
  // Waits up to `wait` for chunks; appends everything queued to `out`. Returns false once closed and drained.
  // Returns true with `out` unchanged on a timeout (the caller may check cancelled() or send a keep-alive).
  bool pop(std::string& out, std::chrono::milliseconds wait);

  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> chunks_;
  bool closed_ = false;
  std::atomic<bool> cancelled_{false};
};

}  // namespace evident::api
