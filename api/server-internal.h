// Internals shared by api/server.cpp and the api/routes-*.cpp files: the worker pool, request helpers, JSON
// conversions and the route table. Not a public header: only the server's own files include it (it includes httplib).
#pragma once

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/server.h"
#include "engine/base/error.h"

namespace evident::api {

using json = nlohmann::json;

// A caller's mistake (or a refusal) detected in a handler: becomes {error: {code, message}} with `status`.
struct http_error {
  int status = 400;
  std::string code;     // stable machine-readable code: "bad_request", "invalid_field", "not_found", ...
  std::string message;  // one line for people, naming the field / id and what was expected
};

// A fixed set of threads taking jobs from a bounded queue.
//   try_submit: false (and the job is dropped) when `queue` jobs already wait -> the caller answers 503.
//   stop: runs every job already queued, then joins. Afterwards try_submit returns false.
class worker_pool {
 public:
  worker_pool(int workers, int queue);
  ~worker_pool();
  bool try_submit(std::function<void()> job);
  void stop();
  int waiting() const;
  int running() const { return running_; }

 private:
  void loop();
  const size_t max_waiting_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  std::atomic<int> running_{0};
  bool stopping_ = false;
};

// Fixed-window request counter per client (API key or address): 429 past `per_minute` in the current minute.
class rate_limiter {
 public:
  explicit rate_limiter(int per_minute) : per_minute_(per_minute) {}
  bool allow(const std::string& client);

 private:
  int per_minute_;
  std::mutex mu_;
  std::map<std::string, std::pair<int64_t, int>> windows_;  // client -> (minute, count)
};

// Who is calling (after authentication).
struct caller {
  std::string tenant;
  bool can_write = true;
};

enum class access { open, read, write };

struct server::impl {
  server_config cfg;
  std::shared_ptr<answer_service> answers;
  httplib::Server http;
  worker_pool pool;
  rate_limiter limiter;
  std::mutex store_write_mu;  // one store writer (upload/delete) at a time
  std::thread thread;
  int bound_port = 0;
  int listen_fd = -1;  // the listening socket (see start())
  bool started = false;
  std::atomic<bool> stopped{false};
  std::mutex finished_mu;              // run() waits on finished_cv until stop() completes
  std::condition_variable finished_cv;
  bool finished = false;
  std::atomic<bool> draining{false};  // stop() began: new requests get 503
  std::atomic<int> active{0};         // requests being handled, streams until their last byte

  // Counts a request as active until the returned token (and its copies) are destroyed.
  std::shared_ptr<void> activity() {
    ++active;
    return std::shared_ptr<void>(nullptr, [this](void*) { --active; });
  }

  impl(server_config c, std::shared_ptr<answer_service> a);
};

using handler_fn = std::function<void(server::impl&, const httplib::Request&, httplib::Response&, const caller&)>;

struct route {
  const char* method;
  const char* path;    // OpenAPI template, e.g. "/v1/documents/{id}"
  access needs;
  handler_fn handler;
};

// Every route, in matching order (routes-*.cpp define their parts).
std::vector<route> all_routes();
std::vector<route> document_routes();  // routes-documents.cpp: collections, documents, health, web page
std::vector<route> answer_routes();    // routes-answers.cpp: ask, answers, chat completions

// Helpers for handlers.
void send_json(httplib::Response& res, const json& body, int status = 200);
void send_error(httplib::Response& res, int status, const std::string& code, const std::string& message);
// The HTTP status and code of an evident::error by its kind: invalid_input 422, not_found 404, resource 503, else 500.
http_error http_error_of(const evident::error& e);
// The request body as a JSON object; http_error 400 when it is not JSON or not an object.
json parse_json_body(const httplib::Request& req);
// The numeric path parameter {id} (matches[1]); http_error 404 when it does not fit an int64.
int64_t path_id(const httplib::Request& req);
// Number of Unicode code points in the UTF-8 prefix s[0, bytes).
int64_t code_points(const std::string& s, size_t bytes);

json api_json(const citation::resolved_citation& c, const std::string& answer);
json api_json(const retrieval::passage& p, bool with_text = true);
json api_json(const answer::ask_result& r);

}  // namespace evident::api
