// Routes that answer questions: POST /v1/ask (JSON or SSE), GET /v1/answers/{id}, POST /v1/chat/completions
// (OpenAI-compatible, JSON or SSE). The answer itself is computed on the worker pool (see api/server.h).
#include <chrono>
#include <future>
#include <set>

#include "api/answer-json.h"
#include "api/server-internal.h"
#include "api/sse.h"
#include "engine/base/error.h"
#include "ingest/store.h"

namespace evident::api {

json api_json(const citation::resolved_citation& c, const std::string& answer) {
  json j = answer::citation_json(c);
  j["answer_char_offset"] = code_points(answer, c.answer_offset);  // for the page: JavaScript counts code points
  return j;
}

json api_json(const retrieval::passage& p, bool with_text) { return answer::passage_json(p, with_text); }

namespace {

json usage_json(const engine::usage_info& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"cached_prompt_tokens", u.cached_prompt_tokens},
          {"reasoning_tokens", u.reasoning_tokens},
          {"completion_tokens", u.completion_tokens},
          {"time_to_first_token_ms", u.time_to_first_token_ms}};
}

// The fields of the final SSE `done` event (everything but the texts already streamed).
json done_json(const answer::ask_result& r) {
  return {{"answer_id", r.answer_id},     {"not_found", r.not_found},   {"extractive", r.extractive},
          {"cancelled", r.cancelled},     {"generator", r.generator},   {"template", r.template_id},
          {"finish_reason", r.finish_reason}, {"uncited_claims", r.uncited_claims}, {"usage", usage_json(r.usage)},
          {"timings", answer::timings_json(r.time)}};
}

}  // namespace

json api_json(const answer::ask_result& r) {
  json j = done_json(r);
  j["question"] = r.question;
  j["answer"] = r.answer;
  j["reasoning"] = r.reasoning;
  json cites = json::array();
  for (const auto& c : r.citations) cites.push_back(api_json(c, r.answer));
  j["citations"] = cites;
  json passages = json::array();
  for (const auto& p : r.passages) passages.push_back(api_json(p));
  j["passages"] = passages;
  return j;
}

namespace {

using clock = std::chrono::steady_clock;

// What a job hands back to a waiting (non-streaming) handler.
struct job_outcome {
  std::optional<answer::ask_result> result;
  http_error error;
};

http_error error_of(const std::exception_ptr& ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const http_error& e) {
    return e;
  } catch (const evident::error& e) {
    return http_error_of(e);
  } catch (const std::exception& e) {
    return {500, "internal", std::string("internal error: ") + e.what()};
  } catch (...) {
    return {500, "internal", "internal error"};
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Request validation (422 for well-formed JSON with wrong or missing fields).

std::string require_string(const json& body, const char* field) {
  if (!body.contains(field)) throw http_error{422, "missing_field", std::string("field '") + field + "' is required"};
  if (!body[field].is_string())
    throw http_error{422, "invalid_field", std::string("field '") + field + "' must be a string"};
  return body[field].get<std::string>();
}

std::optional<bool> optional_bool(const json& body, const char* field) {
  if (!body.contains(field) || body[field].is_null()) return std::nullopt;
  if (!body[field].is_boolean())
    throw http_error{422, "invalid_field", std::string("field '") + field + "' must be true or false"};
  return body[field].get<bool>();
}

void read_sampling(const json& body, engine::sampling_params& sp) {
  if (body.contains("temperature") && !body["temperature"].is_null()) {
    const auto& t = body["temperature"];
    if (!t.is_number() || t.get<double>() < 0 || t.get<double>() > 2)
      throw http_error{422, "invalid_field", "field 'temperature' must be a number in [0, 2]"};
    sp.temperature = t.get<float>();
  }
  if (body.contains("top_p") && !body["top_p"].is_null()) {
    const auto& t = body["top_p"];
    if (!t.is_number() || t.get<double>() <= 0 || t.get<double>() > 1)
      throw http_error{422, "invalid_field", "field 'top_p' must be a number in (0, 1]"};
    sp.top_p = t.get<float>();
  }
  for (const char* f : {"max_tokens", "max_completion_tokens"}) {
    if (!body.contains(f) || body[f].is_null()) continue;
    const auto& t = body[f];
    if (!t.is_number_integer() || t.get<int64_t>() < 1 || t.get<int64_t>() > 1'000'000)
      throw http_error{422, "invalid_field", std::string("field '") + f + "' must be an integer in [1, 1000000]"};
    sp.max_tokens = t.get<int>();
  }
}

void check_question(const server::impl& s, const std::string& q) {
  if (q.find_first_not_of(" \t\r\n") == std::string::npos)
    throw http_error{422, "invalid_field", "field 'question' must not be empty"};
  if (code_points(q, q.size()) > s.cfg.max_question_chars)
    throw http_error{422, "invalid_field",
                     "field 'question' is longer than " + std::to_string(s.cfg.max_question_chars) + " characters"};
}

void check_collection(const server::impl& s, const std::optional<std::string>& name) {
  if (!name) return;
  if (name->empty() || name->size() > 128) throw http_error{422, "invalid_field", "collection must be 1-128 bytes"};
  ingest::store st(s.cfg.store_dir, ingest::open_mode::read_only);
  if (!st.collection_id(*name)) throw http_error{404, "not_found", "no collection '" + *name + "'"};
}

answer::ask_request parse_ask(const server::impl& s, const json& body, const caller& who) {
  static const std::set<std::string> known = {"question", "collection", "documents",   "budget",
                                              "stream",   "generator",  "temperature", "top_p",
                                              "max_tokens"};
  for (const auto& [k, v] : body.items())
    if (!known.count(k)) throw http_error{422, "unknown_field", "unknown field '" + k + "'"};
  answer::ask_request r;
  r.question = require_string(body, "question");
  check_question(s, r.question);
  if (body.contains("collection") && !body["collection"].is_null()) r.collection = require_string(body, "collection");
  if (body.contains("documents") && !body["documents"].is_null()) {
    const auto& d = body["documents"];
    if (!d.is_array()) throw http_error{422, "invalid_field", "field 'documents' must be an array of document ids"};
    for (const auto& id : d) {
      if (!id.is_number_integer() || id.get<int64_t>() <= 0)
        throw http_error{422, "invalid_field", "field 'documents' must hold positive integer ids"};
      r.documents.push_back(id.get<int64_t>());
    }
  }
  if (body.contains("budget") && !body["budget"].is_null()) {
    const auto& b = body["budget"];
    int64_t v = -1;
    if (b.is_number_integer()) v = b.get<int64_t>();
    else if (b.is_string()) {
      const std::string t = b.get<std::string>();
      if (t == "8k" || t == "8K") v = 8192;
      else if (t == "32k" || t == "32K") v = 32768;
      else if (t == "64k" || t == "64K") v = 65536;
      else if (t == "128k" || t == "128K") v = 131072;
    }
    if (v < 512 || v > 131072)
      throw http_error{422, "invalid_field", "field 'budget' must be 8k, 32k, 64k, 128k or a token count in [512, 131072]"};
    r.budget_tokens = static_cast<int>(v);
  }
  if (body.contains("generator") && !body["generator"].is_null()) r.generator = require_string(body, "generator");
  read_sampling(body, r.sampling);
  r.tenant = who.tenant;
  check_collection(s, r.collection);
  if (!s.answers) throw http_error{503, "not_ready", "no answer pipeline is configured on this server"};
  return r;
}

// ---------------------------------------------------------------------------------------------------------------------
// Streaming plumbing shared by /v1/ask and /v1/chat/completions.

// Formats the pipeline's events for one wire protocol.
struct stream_format {
  std::function<std::string(const std::vector<retrieval::passage>&)> retrieval;
  std::function<std::string(const std::string&)> reasoning;
  std::function<std::string(const std::string&)> answer;
  std::function<std::string(const citation::resolved_citation&, const std::string& answer_so_far)> citation;
  std::function<std::string(const answer::ask_result&)> done;
  std::function<std::string(const http_error&)> error;
};

// What a handler throws when the worker pool's queue refuses a job.
http_error queue_full(const server::impl& s) {
  return {503, "queue_full",
          "the answer queue is full (" + std::to_string(s.cfg.queue) +
              " waiting); retry after the Retry-After seconds"};
}

// Admits the job (503 when the queue is full) and streams its events as they come.
void stream_answer(server::impl& s, httplib::Response& res, answer::ask_request areq, stream_format fmt) {
  auto ch = std::make_shared<event_channel>();
  auto answers = s.answers;
  const bool admitted = s.pool.try_submit([ch, answers, areq = std::move(areq), fmt = std::move(fmt)] {
    std::string answer_so_far;
    answer::ask_events ev;
    ev.on_retrieval = [&](const std::vector<retrieval::passage>& ps) {
      if (fmt.retrieval) ch->push(fmt.retrieval(ps));
      return !ch->cancelled();
    };
    ev.on_reasoning = [&](const std::string& d) {
      ch->push(fmt.reasoning(d));
      return !ch->cancelled();
    };
    ev.on_answer = [&](const std::string& d) {
      answer_so_far += d;
      ch->push(fmt.answer(d));
      return !ch->cancelled();
    };
    ev.on_citation = [&](const citation::resolved_citation& c) {
      if (fmt.citation) ch->push(fmt.citation(c, answer_so_far));
      return !ch->cancelled();
    };
    try {
      ch->push(fmt.done(answers->ask(areq, ev)));
    } catch (...) {
      ch->push(fmt.error(error_of(std::current_exception())));
    }
    ch->close();
  });
  if (!admitted) throw queue_full(s);
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  // The stream counts as active (for a graceful stop) until httplib drops the provider after the last byte.
  res.set_chunked_content_provider(
      "text/event-stream",
      [ch, token = s.activity()](size_t, httplib::DataSink& sink) {
        std::string out;
        if (!ch->pop(out, std::chrono::seconds(10))) {
          sink.done();
          return true;
        }
        if (out.empty()) out = ": keep-alive\n\n";  // a comment line: keeps proxies and idle timers from closing us
        if (!sink.write(out.data(), out.size())) {
          ch->cancel();
          return false;
        }
        return true;
      },
      [ch](bool success) {
        if (!success) ch->cancel();
      });
}

// Runs the job on the pool and waits for it (503 when the queue is full).
answer::ask_result run_answer(server::impl& s, answer::ask_request areq) {
  auto promise = std::make_shared<std::promise<job_outcome>>();
  auto fut = promise->get_future();
  auto answers = s.answers;
  const bool admitted = s.pool.try_submit([promise, answers, areq = std::move(areq)] {
    job_outcome o;
    try {
      o.result = answers->ask(areq, answer::ask_events{});
    } catch (...) {
      o.error = error_of(std::current_exception());
    }
    promise->set_value(std::move(o));
  });
  if (!admitted) throw queue_full(s);
  job_outcome o = fut.get();
  if (!o.result) throw o.error;
  return std::move(*o.result);
}

// ---------------------------------------------------------------------------------------------------------------------
// POST /v1/ask, GET /v1/answers/{id}

void ask(server::impl& s, const httplib::Request& req, httplib::Response& res, const caller& who) {
  const json body = parse_json_body(req);
  const bool stream = optional_bool(body, "stream").value_or(false);
  answer::ask_request areq = parse_ask(s, body, who);
  if (!stream) return send_json(res, api_json(run_answer(s, std::move(areq))));
  stream_format fmt;
  fmt.retrieval = [](const std::vector<retrieval::passage>& ps) {
    json arr = json::array();
    for (const auto& p : ps) arr.push_back(api_json(p));
    return sse_event("retrieval", {{"passages", arr}});
  };
  fmt.reasoning = [](const std::string& d) { return sse_event("reasoning", {{"delta", d}}); };
  fmt.answer = [](const std::string& d) { return sse_event("answer", {{"delta", d}}); };
  fmt.citation = [](const citation::resolved_citation& c, const std::string& a) {
    return sse_event("citation", api_json(c, a));
  };
  fmt.done = [](const answer::ask_result& r) { return sse_event("done", done_json(r)); };
  fmt.error = [](const http_error& e) {
    return sse_event("error", {{"error", {{"code", e.code}, {"message", e.message}, {"status", e.status}}}});
  };
  stream_answer(s, res, std::move(areq), std::move(fmt));
}

void get_answer(server::impl& s, const httplib::Request& req, httplib::Response& res, const caller&) {
  const int64_t id = path_id(req);
  if (!s.answers) throw http_error{503, "not_ready", "no answer pipeline is configured on this server"};
  auto r = s.answers->load(id);
  if (!r) throw http_error{404, "not_found", "no answer " + std::to_string(id)};
  send_json(res, api_json(*r));
}

// ---------------------------------------------------------------------------------------------------------------------
// POST /v1/chat/completions (OpenAI-compatible)

std::string message_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {  // [{type: "text", text: "..."}]
    std::string out;
    for (const auto& part : content) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
        throw http_error{422, "invalid_field", "message content parts must be {type: \"text\", text: string}"};
      out += (out.empty() ? "" : "\n") + part["text"].get<std::string>();
    }
    return out;
  }
  if (content.is_null()) return "";
  throw http_error{422, "invalid_field", "message 'content' must be a string or an array of text parts"};
}

json chat_citations(const answer::ask_result& r) {
  json cites = json::array();
  for (const auto& c : r.citations) cites.push_back(api_json(c, r.answer));
  return cites;
}

// The fields a chat completion (or its last streamed chunk) carries about the whole answer: OpenAI's usage, and
// evident's citations and answer facts as extra fields.
json chat_result_fields(const answer::ask_result& r) {
  const int completion = r.usage.completion_tokens;
  return {{"usage",
           {{"prompt_tokens", r.usage.prompt_tokens},
            {"completion_tokens", completion},
            {"total_tokens", r.usage.prompt_tokens + completion}}},
          {"citations", chat_citations(r)},
          {"evident",
           {{"answer_id", r.answer_id}, {"not_found", r.not_found}, {"extractive", r.extractive},
            {"generator", r.generator}}}};
}

void chat_completions(server::impl& s, const httplib::Request& req, httplib::Response& res, const caller& who) {
  const json body = parse_json_body(req);
  if (!body.contains("messages")) throw http_error{422, "missing_field", "field 'messages' is required"};
  if (!body["messages"].is_array() || body["messages"].empty())
    throw http_error{422, "invalid_field", "field 'messages' must be a non-empty array"};
  std::string question;
  for (const auto& m : body["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      throw http_error{422, "invalid_field", "each message needs a string 'role'"};
    const std::string role = m["role"].get<std::string>();
    const std::string text = message_text(m.contains("content") ? m["content"] : json());
    if (role == "user") question = text;  // the last user message is the question
  }
  if (question.empty()) throw http_error{422, "invalid_field", "no user message with text content"};
  check_question(s, question);
  const bool stream = optional_bool(body, "stream").value_or(false);
  const std::string model = body.contains("model") && body["model"].is_string() ? body["model"].get<std::string>()
                                                                                : std::string("evident");
  answer::ask_request areq;
  areq.question = question;
  read_sampling(body, areq.sampling);
  areq.tenant = who.tenant;
  // Extensions (ignored by OpenAI clients that do not send them): collection, documents.
  if (body.contains("collection") && !body["collection"].is_null()) areq.collection = require_string(body, "collection");
  check_collection(s, areq.collection);
  if (!s.answers) throw http_error{503, "not_ready", "no answer pipeline is configured on this server"};
  const int64_t created =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  // The id must exist before the answer does (the first chunk carries it): derive it from the time and a counter.
  static std::atomic<uint64_t> counter{0};
  const std::string id = "chatcmpl-" + std::to_string(created) + "-" + std::to_string(++counter);

  if (!stream) {
    const answer::ask_result r = run_answer(s, std::move(areq));
    json message = {{"role", "assistant"}, {"content", r.answer}};
    if (!r.reasoning.empty()) message["reasoning_content"] = r.reasoning;
    json reply = {{"id", id},
                    {"object", "chat.completion"},
                    {"created", created},
                    {"model", model},
                    {"choices", json::array({{{"index", 0},
                                              {"message", message},
                                              {"logprobs", nullptr},
                                              {"finish_reason", r.finish_reason.empty() ? "stop" : r.finish_reason}}})},
};
    reply.update(chat_result_fields(r));
    send_json(res, reply);
    return;
  }
  auto chunk = [id, created, model](const json& delta, const json& finish) {
    return sse_data(json{{"id", id},
                         {"object", "chat.completion.chunk"},
                         {"created", created},
                         {"model", model},
                         {"choices", json::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr},
                                                   {"finish_reason", finish}}})}}
                        .dump(-1, ' ', false, json::error_handler_t::replace));
  };
  stream_format fmt;
  // The role arrives with the first chunk, as OpenAI sends it.
  fmt.retrieval = [chunk](const std::vector<retrieval::passage>&) {
    return chunk({{"role", "assistant"}, {"content", ""}}, nullptr);
  };
  fmt.reasoning = [chunk](const std::string& d) { return chunk({{"reasoning_content", d}}, nullptr); };
  fmt.answer = [chunk](const std::string& d) { return chunk({{"content", d}}, nullptr); };
  fmt.done = [chunk, id, created, model](const answer::ask_result& r) {
    json last = {{"id", id},
                 {"object", "chat.completion.chunk"},
                 {"created", created},
                 {"model", model},
                 {"choices", json::array({{{"index", 0}, {"delta", json::object()}, {"logprobs", nullptr},
                                           {"finish_reason", r.finish_reason.empty() ? "stop" : r.finish_reason}}})},
};
    last.update(chat_result_fields(r));
    return sse_data(last.dump(-1, ' ', false, json::error_handler_t::replace)) + sse_data("[DONE]");
  };
  fmt.error = [](const http_error& e) {
    return sse_data(json{{"error", {{"code", e.code}, {"message", e.message}, {"type", "server_error"}}}}.dump(
               -1, ' ', false, json::error_handler_t::replace)) +
           sse_data("[DONE]");
  };
  stream_answer(s, res, std::move(areq), std::move(fmt));
}

}  // namespace

std::vector<route> answer_routes() {
  return {
      {"POST", "/v1/ask", access::read, ask},
      {"GET", "/v1/answers/{id}", access::read, get_answer},
      {"POST", "/v1/chat/completions", access::read, chat_completions},
  };
}

}  // namespace evident::api
