#include "api/sse.h"

namespace evident::api {

std::string sse_event(const std::string& name, const nlohmann::json& data) {
  // dump() escapes control characters, so the payload never contains a raw newline that would end the field.
  return "event: " + name + "\ndata: " + data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n";
}

std::string sse_data(const std::string& payload) { return "data: " + payload + "\n\n"; }

void event_channel::push(std::string chunk) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    chunks_.push_back(std::move(chunk));
  }
  cv_.notify_one();
}

void event_channel::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_one();
}

bool event_channel::pop(std::string& out, std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, wait, [&] { return !chunks_.empty() || closed_; });
  while (!chunks_.empty()) {
    out += chunks_.front();
    chunks_.pop_front();
  }
  return !(closed_ && out.empty());
}

}  // namespace evident::api
