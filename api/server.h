// The HTTP server behind `evident serve`: REST under /v1 (JSON), Server-Sent Events for streamed answers, an
// OpenAI-compatible /v1/chat/completions, health probes, and the embedded web page. This file and the other
// api/server*, api/routes*, api/sse* files are the only code that includes httplib.
//
// Request lifecycle of an answer (POST /v1/ask, POST /v1/chat/completions):
//
//   http thread: parse + validate ──► admission ──full──► 503 + Retry-After
//                                        │ (bounded queue of `queue` jobs in front of `workers` generator threads)
//                                        ▼
//   worker thread: answer_service::ask(request, events) ──events──► channel ──► http thread writes SSE / JSON
//
//   A client that disconnects mid-stream makes the next event callback return false: the pipeline cancels.
// Invariants: at most `workers` answers run at once; at most `queue` more wait; everything else is refused at once.
// Every handler catches at the boundary: evident::error maps to 4xx/5xx by kind, anything else is a 500 (our bug).
//
// Thread-safety: start() and stop() from one controlling thread; handlers run on httplib's pool and the workers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "api/pipeline.h"

namespace evident::api {

// One API key (configured in the --config file). Without any key, auth is off and every caller may do everything.
struct api_key {
  std::string key;            // the bearer token (Authorization: Bearer KEY, or X-API-Key: KEY)
  std::string tenant;         // stored with answers and audit lines
  bool can_write = false;     // may upload and delete documents (otherwise 403 on those routes)
};

struct server_config {
  std::filesystem::path store_dir;          // the store (created by `evident ingest`; opened per request)
  std::string host = "127.0.0.1";
  int port = 8080;                          // 0 = an ephemeral port (see server::port())
  int workers = 4;                          // generator threads: answers computed at once
  int queue = 256;                          // answers waiting for a worker; beyond it 503 + Retry-After
  int http_threads = 64;                    // connection threads (a streaming client holds one while it streams)
  int retry_after_s = 2;                    // the Retry-After value sent with 503
  size_t max_body_bytes = 64u << 20;        // bytes; larger request bodies get 413 (uploads included)
  int read_timeout_s = 30;                  // a client that sends nothing for this long is dropped
  int write_timeout_s = 30;                 // a client that reads nothing for this long is dropped
  int keep_alive_timeout_s = 5;
  int drain_timeout_s = 30;                 // stop() waits this long for running requests and streams to finish
  int max_question_chars = 8192;            // code points; longer questions get 422
  int rate_limit_per_minute = 0;            // per API key (or client address when auth is off); 0 = unlimited -> 429
  std::vector<api_key> keys;                // empty = auth off
  std::string upload_collection = "default";  // collection of uploads that name none
  bool quiet = false;                       // no access log lines
};

// Reads the --config FILE (JSON) over `cfg`: {"host","port","workers","queue","http_threads","max_body_mb",
// "read_timeout_s","write_timeout_s","rate_limit_per_minute","api_keys":[{"key","tenant","write"}]}.
// Unknown keys are an error (evident::error naming the key and the file).
void load_config_file(const std::filesystem::path& file, server_config& cfg);

// What the server answers with: the answer pipeline in `evident serve`, a scripted double in some tests.
// Thread-safety: ask() and load() are called from several worker threads at once.
class answer_service {
 public:
  virtual ~answer_service() = default;
  // Runs one question to completion, calling `events` in the pipeline's order (see api/pipeline.h). Throws
  // evident::error for the caller's mistakes (invalid_input, not_found) and for broken components.
  virtual answer::ask_result ask(const answer::ask_request& request, const answer::ask_events& events) = 0;
  // A stored answer by id (GET /v1/answers/{id}); nullopt when unknown.
  virtual std::optional<answer::ask_result> load(int64_t answer_id) = 0;
  // generator_i::name() of the default generator, and whether it is extractive (shown on the page and in /readyz).
  virtual std::string generator_name() const = 0;
  virtual bool extractive() const = 0;
};

// One registered route, as documented in api/openapi.yaml ("/v1/documents/{id}").
struct route_info {
  std::string method;  // "GET", "POST", "DELETE"
  std::string path;    // OpenAPI path template
};

class server {
 public:
  // `answers` may be null: the answer routes then reply 503 (not ready) and /readyz says so.
  server(server_config cfg, std::shared_ptr<answer_service> answers);
  ~server();  // stops
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Binds (throws evident::error kind io when the address is taken) and serves on a background thread. Returns the
  // bound port.
  int start();
  // Blocks the calling thread serving (used by `evident serve`); returns after stop(). Requires: start() not called.
  void run();
  // Graceful stop: stops accepting, lets running answers finish (their streams end), joins every thread. Idempotent;
  // safe to call from another thread than run()'s.
  void stop();

  int port() const;
  const server_config& config() const;
  // Every route the server registers (the OpenAPI test checks these against api/openapi.yaml).
  static std::vector<route_info> routes();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace evident::api
