#include "api/server.h"

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>

#include "api/server-internal.h"
#include "engine/base/error.h"
#include "engine/base/log.h"

namespace evident::api {

// ---------------------------------------------------------------------------------------------------------------------
// worker_pool

worker_pool::worker_pool(int workers, int queue) : max_waiting_(static_cast<size_t>(std::max(queue, 0))) {
  EV_ASSERT(workers > 0);
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { loop(); });
}

worker_pool::~worker_pool() { stop(); }

bool worker_pool::try_submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    // Idle workers take jobs at once, so the queue only holds what waits beyond the running ones.
    const size_t idle = threads_.size() - static_cast<size_t>(running_.load());
    if (jobs_.size() >= max_waiting_ + idle) return false;
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
  return true;
}

void worker_pool::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  std::lock_guard<std::mutex> lock(mu_);
  threads_.clear();
}

int worker_pool::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(jobs_.size());
}

void worker_pool::loop() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping and drained
      job = std::move(jobs_.front());
      jobs_.pop_front();
      ++running_;
    }
    job();  // jobs catch their own exceptions (see routes-answers.cpp)
    --running_;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// rate_limiter

bool rate_limiter::allow(const std::string& client) {
  if (per_minute_ <= 0) return true;
  const int64_t minute = std::chrono::duration_cast<std::chrono::minutes>(
                             std::chrono::steady_clock::now().time_since_epoch()).count();
  std::lock_guard<std::mutex> lock(mu_);
  // Keyed by tenant, or by remote address without one: drop other minutes' windows before the map grows unbounded.
  if (windows_.size() >= 4096 && windows_.find(client) == windows_.end())
    std::erase_if(windows_, [minute](const auto& kv) { return kv.second.first != minute; });
  auto& w = windows_[client];
  if (w.first != minute) w = {minute, 0};
  return ++w.second <= per_minute_;
}

// ---------------------------------------------------------------------------------------------------------------------
// helpers

void send_json(httplib::Response& res, const json& body, int status) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& code, const std::string& message) {
  send_json(res, json{{"error", {{"code", code}, {"message", message}}}}, status);
}

http_error http_error_of(const evident::error& e) {
  switch (e.kind()) {
    case error_kind::invalid_input: return {422, "invalid_request", e.what()};
    case error_kind::not_found: return {404, "not_found", e.what()};
    case error_kind::resource: return {503, "unavailable", e.what()};
    default: return {500, "internal", e.what()};
  }
}

json parse_json_body(const httplib::Request& req) {
  json body;
  try {
    body = json::parse(req.body);
  } catch (const json::parse_error& e) {
    throw http_error{400, "malformed_json", std::string("request body is not valid JSON: ") + e.what()};
  }
  if (!body.is_object()) throw http_error{400, "malformed_json", "request body must be a JSON object"};
  return body;
}

int64_t path_id(const httplib::Request& req) {
  const std::string s = req.matches.size() > 1 ? std::string(req.matches[1]) : std::string();
  try {
    size_t used = 0;
    const long long v = std::stoll(s, &used);
    if (used == s.size() && v > 0) return v;
  } catch (const std::exception&) {
  }
  throw http_error{404, "not_found", "no such id '" + s + "'"};
}

int64_t code_points(const std::string& s, size_t bytes) {
  int64_t n = 0;
  for (size_t i = 0; i < bytes && i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) ++n;
  return n;
}

namespace {

// "/v1/documents/{id}" -> "/v1/documents/(\d+)"; "/{file}" -> a static file name.
std::string path_regex(const std::string& tmpl) {
  static const std::regex param(R"(\{([a-z_]+)\})");
  std::string out;
  std::sregex_iterator it(tmpl.begin(), tmpl.end(), param), end;
  size_t last = 0;
  for (; it != end; ++it) {
    out += tmpl.substr(last, static_cast<size_t>(it->position()) - last);
    out += (*it)[1] == "file" ? R"(([A-Za-z0-9_-]+\.(?:html|js|css|svg)))" : R"(([0-9]+))";
    last = static_cast<size_t>(it->position() + it->length());
  }
  return out + tmpl.substr(last);
}

std::string bearer_token(const httplib::Request& req) {
  std::string auth = req.get_header_value("Authorization");
  if (auth.rfind("Bearer ", 0) == 0) return auth.substr(7);
  return req.get_header_value("X-API-Key");
}

// Wraps a handler: authentication, rate limit, and the catch-all boundary (handlers never throw into httplib).
httplib::Server::Handler wrap(server::impl& s, const route& r) {
  return [&s, r](const httplib::Request& req, httplib::Response& res) {
    const auto token = s.activity();
    try {
      if (s.draining && r.needs != access::open) {
        res.set_header("Retry-After", std::to_string(s.cfg.retry_after_s));
        return send_error(res, 503, "shutting_down", "the server is shutting down");
      }
      caller who;
      if (r.needs != access::open && !s.cfg.keys.empty()) {
        const std::string token = bearer_token(req);
        if (token.empty()) {
          res.set_header("WWW-Authenticate", "Bearer");
          return send_error(res, 401, "unauthorized", "missing API key: send Authorization: Bearer <key>");
        }
        const api_key* k = nullptr;
        for (const auto& key : s.cfg.keys)
          if (key.key == token) k = &key;
        if (k == nullptr) {
          res.set_header("WWW-Authenticate", "Bearer");
          return send_error(res, 401, "unauthorized", "unknown API key");
        }
        who.tenant = k->tenant;
        who.can_write = k->can_write;
        if (r.needs == access::write && !k->can_write)
          return send_error(res, 403, "forbidden",
                            "the API key of tenant '" + k->tenant + "' may not change documents (read-only key)");
      }
      if (r.needs != access::open && !s.limiter.allow(who.tenant.empty() ? req.remote_addr : who.tenant)) {
        res.set_header("Retry-After", "60");
        return send_error(res, 429, "rate_limited",
                          "more than " + std::to_string(s.cfg.rate_limit_per_minute) + " requests this minute");
      }
      r.handler(s, req, res, who);
    } catch (const http_error& e) {
      if (e.status == 503) res.set_header("Retry-After", std::to_string(s.cfg.retry_after_s));
      send_error(res, e.status, e.code, e.message);
    } catch (const evident::error& e) {
      const http_error h = http_error_of(e);
      if (h.status == 503) res.set_header("Retry-After", std::to_string(s.cfg.retry_after_s));
      if (h.status == 500) log::err("http ", req.method, " ", req.path, ": ", e.what());
      send_error(res, h.status, h.code, h.message);
    } catch (const std::exception& e) {
      log::err("http ", req.method, " ", req.path, ": internal error: ", e.what());
      send_error(res, 500, "internal", std::string("internal error: ") + e.what());
    } catch (...) {
      send_error(res, 500, "internal", "internal error");
    }
  };
}

}  // namespace

std::vector<route> all_routes() {
  auto out = answer_routes();
  for (auto& r : document_routes()) out.push_back(std::move(r));
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// server

server::impl::impl(server_config c, std::shared_ptr<answer_service> a)
    : cfg(std::move(c)), answers(std::move(a)), pool(cfg.workers, cfg.queue), limiter(cfg.rate_limit_per_minute) {}

server::server(server_config cfg, std::shared_ptr<answer_service> answers) {
  EV_THROW_IF_NOT_MSG(cfg.workers > 0 && cfg.workers <= 1024, "workers must be in [1, 1024], got ", cfg.workers);
  EV_THROW_IF_NOT_MSG(cfg.queue >= 0, "queue must be >= 0, got ", cfg.queue);
  EV_THROW_IF_NOT_MSG(cfg.http_threads > 0 && cfg.http_threads <= 4096, "http_threads must be in [1, 4096], got ",
                      cfg.http_threads);
  impl_ = std::make_unique<impl>(std::move(cfg), std::move(answers));
  auto& s = *impl_;
  auto& h = s.http;
  const size_t threads = static_cast<size_t>(s.cfg.http_threads);
  h.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  h.set_payload_max_length(s.cfg.max_body_bytes);
  h.set_read_timeout(s.cfg.read_timeout_s, 0);
  h.set_write_timeout(s.cfg.write_timeout_s, 0);
  h.set_keep_alive_timeout(s.cfg.keep_alive_timeout_s);
  h.set_tcp_nodelay(true);
  // httplib listens with a backlog of 5: a burst of clients overflows it and some connections are reset. Remember the
  // listening socket so start() can raise the backlog (listen() again on a listening socket only updates it).
  h.set_socket_options([&s](socket_t sock) {
    httplib::default_socket_options(sock);
    s.listen_fd = sock;
  });
  for (const auto& r : all_routes()) {
    const std::string re = path_regex(r.path);
    const std::string m = r.method;
    if (m == "GET") h.Get(re, wrap(s, r));
    else if (m == "POST") h.Post(re, wrap(s, r));
    else if (m == "DELETE") h.Delete(re, wrap(s, r));
    else EV_ASSERT(false, "unsupported method ", m);
  }
  // Statuses httplib produces itself (unknown route, body over the limit, bad request line) get the JSON shape too.
  h.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const int st = res.status;
    if (st == 404) send_error(res, 404, "not_found", "no route " + req.method + " " + req.path);
    else if (st == 413) send_error(res, 413, "body_too_large", "request body over the server's limit");
    else if (st == 405) send_error(res, 405, "method_not_allowed", "method not allowed");
    else if (st >= 500) send_error(res, st, "internal", "internal error");
    else send_error(res, st, "bad_request", "bad request");
    res.status = st;
  });
  h.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_error(res, 500, "internal", "internal error");
  });
  if (!s.cfg.quiet)
    h.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      log::info(req.remote_addr, " ", req.method, " ", req.path, " ", res.status);
    });
}

server::~server() { stop(); }

int server::start() {
  auto& s = *impl_;
  EV_ASSERT(!s.started, "server started twice");
  const int port = s.cfg.port == 0 ? s.http.bind_to_any_port(s.cfg.host)
                                   : (s.http.bind_to_port(s.cfg.host, s.cfg.port) ? s.cfg.port : -1);
  if (port < 0) EV_THROW(io, "cannot listen on ", s.cfg.host, ":", s.cfg.port, " (address in use or not local)");
  if (s.listen_fd >= 0) ::listen(s.listen_fd, 4096);
  s.bound_port = port;
  s.started = true;
  s.thread = std::thread([&s] { s.http.listen_after_bind(); });
  // listen_after_bind sets is_running() once it is in its accept loop; wait for it so callers can connect at once.
  for (int i = 0; i < 2000 && !s.http.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return port;
}

void server::run() {
  auto& s = *impl_;
  if (!s.started) start();
  std::unique_lock<std::mutex> lock(s.finished_mu);
  s.finished_cv.wait(lock, [&] { return s.finished; });
}

void server::stop() {
  if (!impl_) return;
  auto& s = *impl_;
  if (s.stopped.exchange(true)) return;
  // Order: refuse new requests (503) and wait for the running ones, streams included, to finish (httplib's stop()
  // would cut streams short); then stop httplib, then drain and join the workers.
  s.draining = true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(s.cfg.drain_timeout_s);
  while (s.active > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  s.http.stop();
  if (s.thread.joinable() && s.thread.get_id() != std::this_thread::get_id()) s.thread.join();
  s.pool.stop();
  {
    std::lock_guard<std::mutex> lock(s.finished_mu);
    s.finished = true;
  }
  s.finished_cv.notify_all();
}

int server::port() const { return impl_->bound_port; }
const server_config& server::config() const { return impl_->cfg; }

std::vector<route_info> server::routes() {
  std::vector<route_info> out;
  for (const auto& r : all_routes()) out.push_back({r.method, r.path});
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// config file

void load_config_file(const std::filesystem::path& file, server_config& cfg) {
  std::ifstream in(file);
  EV_THROW_IF_NOT_KIND(in.good(), not_found, "config file ", file.string(), ": cannot open");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::parse_error& e) {
    EV_THROW(invalid_input, "config file ", file.string(), ": not valid JSON: ", e.what());
  }
  EV_THROW_IF_NOT_MSG(j.is_object(), "config file ", file.string(), ": expected a JSON object");
  auto get_int = [&](const std::string& k, const json& v) {
    EV_THROW_IF_NOT_MSG(v.is_number_integer(), "config file ", file.string(), ": '", k, "' must be an integer");
    return v.get<int64_t>();
  };
  for (const auto& [k, v] : j.items()) {
    if (k == "host") {
      EV_THROW_IF_NOT_MSG(v.is_string(), "config file ", file.string(), ": 'host' must be a string");
      cfg.host = v.get<std::string>();
    } else if (k == "port") cfg.port = static_cast<int>(get_int(k, v));
    else if (k == "workers") cfg.workers = static_cast<int>(get_int(k, v));
    else if (k == "queue") cfg.queue = static_cast<int>(get_int(k, v));
    else if (k == "http_threads") cfg.http_threads = static_cast<int>(get_int(k, v));
    else if (k == "max_body_mb") cfg.max_body_bytes = static_cast<size_t>(get_int(k, v)) << 20;
    else if (k == "read_timeout_s") cfg.read_timeout_s = static_cast<int>(get_int(k, v));
    else if (k == "write_timeout_s") cfg.write_timeout_s = static_cast<int>(get_int(k, v));
    else if (k == "rate_limit_per_minute") cfg.rate_limit_per_minute = static_cast<int>(get_int(k, v));
    else if (k == "api_keys") {
      EV_THROW_IF_NOT_MSG(v.is_array(), "config file ", file.string(), ": 'api_keys' must be an array");
      for (const auto& e : v) {
        EV_THROW_IF_NOT_MSG(e.is_object() && e.contains("key") && e["key"].is_string(), "config file ",
                            file.string(), ": each api_keys entry needs a string 'key'");
        api_key key;
        key.key = e["key"].get<std::string>();
        key.tenant = e.value("tenant", std::string("default"));
        key.can_write = e.value("write", false);
        cfg.keys.push_back(key);
      }
    } else {
      EV_THROW(invalid_input, "config file ", file.string(), ": unknown key '", k, "'");
    }
  }
}

}  // namespace evident::api
