#include "api/openai-client.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

#include <chrono>

#include "engine/base/error.h"

namespace evident::answer {

namespace {
using json = nlohmann::json;

std::string str_or(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

engine::usage_info parse_usage(const json& u) {
  engine::usage_info x;
  x.prompt_tokens = u.value("prompt_tokens", 0);
  x.completion_tokens = u.value("completion_tokens", 0);
  if (auto d = u.find("prompt_tokens_details"); d != u.end() && d->is_object())
    x.cached_prompt_tokens = d->value("cached_tokens", 0);
  if (auto d = u.find("completion_tokens_details"); d != u.end() && d->is_object())
    x.reasoning_tokens = d->value("reasoning_tokens", 0);
  return x;
}
}  // namespace

openai_client::openai_client(openai_options opt) : opt_(std::move(opt)) {
  const std::string& u = opt_.base_url;
  EV_THROW_IF_NOT_MSG(u.rfind("http://", 0) == 0 || u.rfind("https://", 0) == 0, "OpenAI-compatible URL '", u,
                      "': expected http://host[:port][/path]");
  const size_t scheme_end = u.find("://") + 3;
  const size_t slash = u.find('/', scheme_end);
  host_ = slash == std::string::npos ? u : u.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : u.substr(slash);
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.size() >= 17 && path.compare(path.size() - 17, 17, "/chat/completions") == 0) {
    path_ = path;
  } else {
    if (path.size() < 3 || path.compare(path.size() - 3, 3, "/v1") != 0) path += "/v1";
    path_ = path + "/chat/completions";
  }
  EV_THROW_IF_NOT_MSG(host_.size() > scheme_end, "OpenAI-compatible URL '", u, "': no host");
}

void openai_client::generate(const engine::generate_request& request, const engine::event_callback& on_event) {
  const auto t0 = std::chrono::steady_clock::now();
  auto ms = [&] { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(); };
  engine::generate_event fin;
  fin.kind = engine::event_kind::finish;
  auto fail = [&](const std::string& msg) {
    fin.finish_reason = "error";
    fin.error_message = "openai " + host_ + path_ + ": " + msg;
    on_event(fin);
  };

  json body;
  body["model"] = opt_.model;
  body["messages"] = json::array();
  for (const auto& m : request.messages) body["messages"].push_back({{"role", m.role}, {"content", m.content}});
  const auto& sp = request.sampling;
  body["temperature"] = sp.temperature;
  body["top_p"] = sp.top_p;
  body["max_tokens"] = sp.max_tokens;
  if (sp.top_k > 0) body["top_k"] = sp.top_k;
  if (sp.min_p > 0) body["min_p"] = sp.min_p;
  if (sp.presence_penalty != 0) body["presence_penalty"] = sp.presence_penalty;
  if (sp.repetition_penalty != 1.0f) body["repetition_penalty"] = sp.repetition_penalty;
  if (sp.seed != 0) body["seed"] = sp.seed;
  if (!sp.stop.empty()) body["stop"] = sp.stop;
  body["stream"] = opt_.stream;
  if (opt_.stream) body["stream_options"] = {{"include_usage", true}};

  httplib::Client cli(host_);
  cli.set_connection_timeout(opt_.connect_timeout_s, 0);
  cli.set_read_timeout(opt_.read_timeout_s, 0);
  httplib::Headers headers = {{"Accept", opt_.stream ? "text/event-stream" : "application/json"}};
  if (!opt_.api_key.empty()) headers.emplace("Authorization", "Bearer " + opt_.api_key);

  bool cancelled = false;
  bool first_token = true;
  engine::usage_info usage;
  std::string finish_reason;
  auto send_delta = [&](engine::event_kind k, const std::string& text) {
    if (text.empty() || cancelled) return;
    if (first_token) {
      usage.time_to_first_token_ms = ms();
      first_token = false;
    }
    engine::generate_event ev;
    ev.kind = k;
    ev.text = text;
    if (!on_event(ev)) cancelled = true;
  };
  auto handle_message = [&](const json& msg) {
    std::string r = str_or(msg, "reasoning_content");
    if (r.empty()) r = str_or(msg, "reasoning");
    send_delta(engine::event_kind::reasoning_delta, r);
    send_delta(engine::event_kind::answer_delta, str_or(msg, "content"));
  };
  std::string parse_error;

  if (!opt_.stream) {
    auto res = cli.Post(path_, headers, body.dump(), "application/json");
    if (!res) return fail("request failed: " + httplib::to_string(res.error()));
    if (res->status >= 400) return fail("HTTP " + std::to_string(res->status) + ": " + res->body.substr(0, 300));
    try {
      const json j = json::parse(res->body);
      const json& choice = j.at("choices").at(0);
      handle_message(choice.at("message"));
      finish_reason = str_or(choice, "finish_reason");
      if (j.contains("usage") && j["usage"].is_object()) usage = parse_usage(j["usage"]);
    } catch (const std::exception& e) {
      return fail(std::string("malformed response: ") + e.what());
    }
  } else {
    std::string buffer;
    int status = 0;
    std::string error_body;
    bool done = false;
    httplib::Request req;
    req.method = "POST";
    req.path = path_;
    req.headers = headers;
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    req.response_handler = [&](const httplib::Response& r) {
      status = r.status;
      return true;
    };
    req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
      if (status >= 400) {
        error_body.append(data, len);
        return error_body.size() < 4096;
      }
      buffer.append(data, len);
      // SSE: events separated by blank lines; we only need the `data:` lines.
      size_t nl;
      while ((nl = buffer.find('\n')) != std::string::npos) {
        std::string line = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.rfind("data:", 0) != 0) continue;
        std::string payload = line.substr(5);
        if (!payload.empty() && payload[0] == ' ') payload.erase(0, 1);
        if (payload == "[DONE]") {
          done = true;
          continue;
        }
        try {
          const json j = json::parse(payload);
          if (j.contains("error")) {
            parse_error = "server error: " + j["error"].dump();
            return false;
          }
          if (j.contains("usage") && j["usage"].is_object()) usage = parse_usage(j["usage"]);
          if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
            const json& choice = j["choices"][0];
            if (choice.contains("delta") && choice["delta"].is_object()) handle_message(choice["delta"]);
            if (choice.contains("finish_reason") && choice["finish_reason"].is_string())
              finish_reason = choice["finish_reason"].get<std::string>();
          }
        } catch (const std::exception& e) {
          parse_error = std::string("malformed stream chunk: ") + e.what();
          return false;
        }
        if (cancelled) return false;
      }
      return !cancelled;
    };
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    const bool ok = cli.send(req, res, err);
    if (!parse_error.empty()) return fail(parse_error);
    if (status >= 400) return fail("HTTP " + std::to_string(status) + ": " + error_body.substr(0, 300));
    if (!ok && !cancelled) return fail("request failed: " + httplib::to_string(err));
    if (!done && !cancelled && finish_reason.empty()) return fail("stream ended without [DONE]");
  }
  usage.total_ms = ms();
  if (usage.completion_tokens > 0 && usage.reasoning_tokens > usage.completion_tokens)
    usage.reasoning_tokens = usage.completion_tokens;
  if (!cancelled) {
    engine::generate_event u;
    u.kind = engine::event_kind::usage;
    u.usage = usage;
    if (!on_event(u)) cancelled = true;
  }
  fin.finish_reason = cancelled ? "cancelled" : (finish_reason.empty() ? "stop" : finish_reason);
  on_event(fin);
}

}  // namespace evident::answer
