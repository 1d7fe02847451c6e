// The HTTP server end to end on loopback: every route, every error status, SSE order, the OpenAI-compatible endpoint,
// concurrency and queue limits. The answers come from tests/api/server-fixture.h's scripted_answers, so these tests
// pin the server's behaviour independently of the answer pipeline (tests/api/test-serve-pipeline.cpp covers that).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "tests/api/server-fixture.h"

namespace evident::test {
namespace {

using nlohmann::json;

void expect_error(const httplib::Result& r, int status, const std::string& what) {
  ASSERT_TRUE(r) << what << ": no response";
  EXPECT_EQ(r->status, status) << what << ": " << r->body;
  const json j = json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object() && j.contains("error")) << what << ": not a JSON error: " << r->body;
  EXPECT_TRUE(j["error"]["code"].is_string()) << what;
  EXPECT_TRUE(j["error"]["message"].is_string()) << what;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json") << what;
}

using ServerTest = server_test;

TEST_F(ServerTest, HealthAndReadiness) {
  auto h = get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  auto r = get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["status"], "ready");
  EXPECT_EQ(j["generator"], "scripted");
  EXPECT_EQ(j["documents"], 3);
}

TEST_F(ServerTest, CollectionsAndDocumentList) {
  auto r = get("/v1/collections");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const json c = json::parse(r->body)["collections"];
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0]["name"], "default");
  EXPECT_EQ(c[0]["documents"], 2);
  EXPECT_EQ(c[1]["name"], "science");
  EXPECT_EQ(c[1]["chunks"], 2);

  auto all = get("/v1/documents");
  ASSERT_TRUE(all);
  EXPECT_EQ(json::parse(all->body)["documents"].size(), 3u);
  auto sci = get("/v1/documents?collection=science");
  ASSERT_TRUE(sci);
  const json docs = json::parse(sci->body)["documents"];
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0]["path"], "tides.txt");
  EXPECT_EQ(docs[0]["collection"], "science");
  EXPECT_FALSE(docs[0].contains("text"));
  expect_error(get("/v1/documents?collection=nope"), 404, "unknown collection");
}

TEST_F(ServerTest, DocumentWithTextAndPagesInCodePoints) {
  auto list = json::parse(get("/v1/documents?collection=default")->body)["documents"];
  int64_t id = 0;
  for (const auto& d : list)
    if (d["path"] == "café.md") id = d["id"];
  ASSERT_GT(id, 0);
  auto r = get("/v1/documents/" + std::to_string(id));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const json d = json::parse(r->body);
  const std::string text = d["text"];
  const auto& docs = fixture_docs();
  EXPECT_EQ(text, docs[1].chunks[0] + docs[1].chunks[1]);
  EXPECT_EQ(d["pages"], 2);
  // "Café crème — naïve façade 😀 ..." has more bytes than code points: char_count counts code points.
  EXPECT_LT(d["char_count"].get<int64_t>(), static_cast<int64_t>(text.size()));
  const int64_t page2 = d["page_starts"][1];
  EXPECT_EQ(cp_substr(text, page2, page2 + 12), "The espresso");
  auto no_text = json::parse(get("/v1/documents/" + std::to_string(id) + "?text=false")->body);
  EXPECT_FALSE(no_text.contains("text"));
  expect_error(get("/v1/documents/999999"), 404, "unknown document");
  expect_error(get("/v1/documents/abc"), 404, "non-numeric id");
}

TEST_F(ServerTest, AskReturnsCitedAnswerAndStoresIt) {
  auto r = post_json("/v1/ask", {{"question", "Where does the Danube flow before the Black Sea?"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json a = json::parse(r->body);
  EXPECT_FALSE(a["not_found"].get<bool>());
  EXPECT_TRUE(a["extractive"].get<bool>());
  EXPECT_NE(a["answer"].get<std::string>().find("Danube"), std::string::npos);
  ASSERT_EQ(a["citations"].size(), 1u);
  const json c = a["citations"][0];
  EXPECT_EQ(c["verdict"], "supported");
  EXPECT_EQ(c["label"], 1);
  // The span in code points of the document text contains the quote.
  const json d = json::parse(get("/v1/documents/" + std::to_string(c["document_id"].get<int64_t>()))->body);
  const int64_t s = c["char_start"], e = c["char_end"];
  EXPECT_EQ(cp_substr(d["text"], s, e), c["quote"].get<std::string>());
  EXPECT_EQ(a["passages"].size(), 1u);
  EXPECT_FALSE(a["reasoning"].get<std::string>().empty());

  auto stored = get("/v1/answers/" + std::to_string(a["answer_id"].get<int64_t>()));
  ASSERT_TRUE(stored);
  ASSERT_EQ(stored->status, 200);
  EXPECT_EQ(json::parse(stored->body)["answer"], a["answer"]);
  expect_error(get("/v1/answers/424242"), 404, "unknown answer");
}

TEST_F(ServerTest, AskWithCodePointSpansOnNonAsciiText) {
  auto r = post_json("/v1/ask", {{"question", "What is served at the Zürich café every morning?"},
                                 {"collection", "default"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json c = json::parse(r->body)["citations"][0];
  const json d = json::parse(get("/v1/documents/" + std::to_string(c["document_id"].get<int64_t>()))->body);
  const int64_t s = c["char_start"], e = c["char_end"];
  EXPECT_EQ(cp_substr(d["text"], s, e), c["quote"].get<std::string>());
  EXPECT_NE(c["quote"].get<std::string>().find("😀"), std::string::npos);
}

TEST_F(ServerTest, AskNotFound) {
  auto r = post_json("/v1/ask", {{"question", "xylophone quantum zebra"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const json a = json::parse(r->body);
  EXPECT_TRUE(a["not_found"].get<bool>());
  EXPECT_TRUE(a["citations"].empty());
}

TEST_F(ServerTest, AskStreamsEventsInOrder) {
  auto r = post_json("/v1/ask", {{"question", "Where does the Rhine rise?"}, {"stream", true}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  const auto events = parse_sse(r->body);
  ASSERT_GE(events.size(), 5u) << r->body;
  // Order: retrieval, reasoning*, answer*, citation*, done. Rank each name and check the ranks never decrease.
  const std::map<std::string, int> rank = {{"retrieval", 0}, {"reasoning", 1}, {"answer", 2}, {"citation", 3},
                                           {"done", 4}};
  int last = -1;
  std::map<std::string, int> count;
  std::string answer;
  for (const auto& e : events) {
    ASSERT_TRUE(rank.count(e.name)) << "unexpected event " << e.name << ": " << e.data;
    EXPECT_GE(rank.at(e.name), last) << e.name << " after a later event";
    last = rank.at(e.name);
    ++count[e.name];
    const json j = json::parse(e.data);
    if (e.name == "answer") answer += j["delta"].get<std::string>();
    if (e.name == "citation") {
      EXPECT_EQ(j["verdict"], "supported");
      EXPECT_EQ(j["answer_char_offset"], j["answer_offset"]);  // ASCII answer: bytes == code points
    }
    if (e.name == "done") {
      EXPECT_GT(j["answer_id"].get<int64_t>(), 0);
      EXPECT_TRUE(j.contains("usage"));
      EXPECT_TRUE(j.contains("timings"));
    }
  }
  EXPECT_EQ(count["retrieval"], 1);
  EXPECT_GE(count["reasoning"], 1);
  EXPECT_GE(count["answer"], 1);
  EXPECT_EQ(count["citation"], 1);
  EXPECT_EQ(count["done"], 1);
  EXPECT_EQ(events.back().name, "done");
  EXPECT_NE(answer.find("Rhine"), std::string::npos);
}

TEST_F(ServerTest, CallerMistakesGetJsonErrors) {
  auto c = client();
  expect_error(c.Post("/v1/ask", "{not json", "application/json"), 400, "malformed JSON");
  expect_error(c.Post("/v1/ask", "[1,2]", "application/json"), 400, "JSON that is not an object");
  expect_error(post_json("/v1/ask", json::object()), 422, "missing question");
  expect_error(post_json("/v1/ask", {{"question", 5}}), 422, "question of the wrong type");
  expect_error(post_json("/v1/ask", {{"question", "   "}}), 422, "blank question");
  expect_error(post_json("/v1/ask", {{"question", "q"}, {"stream", "yes"}}), 422, "stream not a boolean");
  expect_error(post_json("/v1/ask", {{"question", "q"}, {"budget", "9k"}}), 422, "unknown budget gear");
  expect_error(post_json("/v1/ask", {{"question", "q"}, {"documents", {"a"}}}), 422, "document ids not integers");
  expect_error(post_json("/v1/ask", {{"question", "q"}, {"questoin", "typo"}}), 422, "unknown field");
  expect_error(post_json("/v1/ask", {{"question", "q"}, {"collection", "nope"}}), 404, "unknown collection");
  expect_error(get("/v1/nothing-here"), 404, "unknown route");
  expect_error(post_json("/v1/chat/completions", {{"model", "x"}}), 422, "chat without messages");
  expect_error(post_json("/v1/chat/completions", {{"messages", {{{"role", "system"}, {"content", "hi"}}}}}), 422,
               "chat without a user message");
  expect_error(post_json("/v1/chat/completions",
                         {{"messages", {{{"role", "user"}, {"content", "q"}}}}, {"temperature", "hot"}}),
               422, "temperature not a number");
  expect_error(c.Post("/v1/documents", "plain", "text/plain"), 400, "upload that is not multipart");
}

TEST_F(ServerTest, BugsBecome500WithoutKillingTheServer) {
  answers->throw_bug = true;
  expect_error(post_json("/v1/ask", {{"question", "Where does the Rhine rise?"}}), 500, "a bug in the pipeline");
  auto s = post_json("/v1/ask", {{"question", "Where does the Rhine rise?"}, {"stream", true}});
  ASSERT_TRUE(s);
  const auto events = parse_sse(s->body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().name, "error");
  answers->throw_bug = false;
  auto ok = post_json("/v1/ask", {{"question", "Where does the Rhine rise?"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

// What openai-python 1.x sends for client.chat.completions.create(model=..., messages=[...]) (headers recorded from
// the client's source: Authorization, Content-Type, Accept, User-Agent, X-Stainless-*).
httplib::Headers openai_headers() {
  return {{"Authorization", "Bearer sk-anything"}, {"Accept", "application/json"},
          {"User-Agent", "OpenAI/Python 1.54.0"}, {"X-Stainless-Lang", "python"},
          {"X-Stainless-Package-Version", "1.54.0"}, {"X-Stainless-Retry-Count", "0"}};
}

TEST_F(ServerTest, ChatCompletionsLikeOpenAI) {
  const json body = {{"model", "evident"},
                     {"messages", {{{"role", "system"}, {"content", "Answer from the documents."}},
                                   {{"role", "user"}, {"content", "What causes tides?"}}}},
                     {"temperature", 0.2},
                     {"max_tokens", 256}};
  auto r = client().Post("/v1/chat/completions", openai_headers(), body.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "evident");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_NE(j["choices"][0]["message"]["content"].get<std::string>().find("Moon"), std::string::npos);
  EXPECT_FALSE(j["choices"][0]["message"]["reasoning_content"].get<std::string>().empty());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["total_tokens"],
            j["usage"]["prompt_tokens"].get<int>() + j["usage"]["completion_tokens"].get<int>());
  ASSERT_EQ(j["citations"].size(), 1u);
  EXPECT_EQ(j["citations"][0]["verdict"], "supported");

  // Content as an array of text parts (newer clients) works too.
  json parts = body;
  parts["messages"][1]["content"] = {{{"type", "text"}, {"text", "What causes tides?"}}};
  auto r2 = client().Post("/v1/chat/completions", openai_headers(), parts.dump(), "application/json");
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->status, 200) << r2->body;
}

TEST_F(ServerTest, ChatCompletionsStreamLikeOpenAI) {
  const json body = {{"model", "evident"},
                     {"messages", {{{"role", "user"}, {"content", "What causes tides?"}}}},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
  auto h = openai_headers();
  h.erase("Accept");
  h.emplace("Accept", "text/event-stream");
  auto r = client().Post("/v1/chat/completions", h, body.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const auto events = parse_sse(r->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back().data, "[DONE]");
  std::string content, reasoning, id;
  bool saw_role = false, saw_finish = false, saw_citations = false;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i].name, "message");  // OpenAI streams use unnamed events
    const json j = json::parse(events[i].data);
    EXPECT_EQ(j["object"], "chat.completion.chunk");
    if (id.empty()) id = j["id"];
    EXPECT_EQ(j["id"], id);  // one id for the whole stream
    const json& ch = j["choices"][0];
    if (ch["delta"].contains("role")) saw_role = true;
    if (ch["delta"].contains("content")) content += ch["delta"]["content"].get<std::string>();
    if (ch["delta"].contains("reasoning_content")) reasoning += ch["delta"]["reasoning_content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) saw_finish = true;
    if (j.contains("citations") && !j["citations"].empty()) saw_citations = true;
  }
  EXPECT_TRUE(saw_role);
  EXPECT_TRUE(saw_finish);
  EXPECT_TRUE(saw_citations);
  EXPECT_NE(content.find("Moon"), std::string::npos);
  EXPECT_FALSE(reasoning.empty());
}

TEST_F(ServerTest, WebPageIsServed) {
  auto r = get("/");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(r->body.find("app.js"), std::string::npos);
  auto js = get("/app.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->status, 200);
  EXPECT_NE(js->get_header_value("Content-Type").find("javascript"), std::string::npos);
  auto css = get("/style.css");
  ASSERT_TRUE(css);
  EXPECT_EQ(css->status, 200);
  expect_error(get("/missing.js"), 404, "unknown static file");
}

// ---------------------------------------------------------------------------------------------------------------------
// Limits: body size, auth, rate, queue.

class SmallBodyTest : public server_test {
  void configure(api::server_config& c) override { c.max_body_bytes = 4096; }
};

TEST_F(SmallBodyTest, BodyOverTheLimitIs413) {
  const json body = {{"question", std::string(8000, 'a')}};
  expect_error(post_json("/v1/ask", body), 413, "body over the limit");
  auto ok = post_json("/v1/ask", {{"question", "Where does the Rhine rise?"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

class AuthTest : public server_test {
  void configure(api::server_config& c) override {
    c.keys = {{"reader-key", "acme", false}, {"writer-key", "acme", true}};
  }
};

TEST_F(AuthTest, KeysAreRequiredAndScoped) {
  expect_error(get("/v1/collections"), 401, "no key");
  expect_error(get("/v1/collections", "wrong-key"), 401, "unknown key");
  auto ok = get("/v1/collections", "reader-key");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  httplib::Headers h = {{"Authorization", "Bearer reader-key"}};
  expect_error(client().Delete("/v1/documents/1", h), 403, "read-only key deleting");
  // Health probes and the page stay open (load balancers do not carry keys).
  auto health = get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto x = client().Get("/v1/collections", {{"X-API-Key", "writer-key"}});
  ASSERT_TRUE(x);
  EXPECT_EQ(x->status, 200);
}

class RateLimitTest : public server_test {
  void configure(api::server_config& c) override { c.rate_limit_per_minute = 3; }
};

TEST_F(RateLimitTest, TooManyRequestsIs429) {
  for (int i = 0; i < 3; ++i) {
    auto r = get("/v1/collections");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  auto r = get("/v1/collections");
  expect_error(r, 429, "fourth request in a minute");
  EXPECT_FALSE(r->get_header_value("Retry-After").empty());
}

class FullQueueTest : public server_test {
  void configure(api::server_config& c) override {
    c.workers = 1;
    c.queue = 0;
  }
};

TEST_F(FullQueueTest, FullQueueIs503WithRetryAfter) {
  std::promise<void> release, entered;
  answers->release = release.get_future().share();
  answers->entered = &entered;
  std::optional<httplib::Result> first;
  std::thread t([&] { first.emplace(post_json("/v1/ask", {{"question", "Where does the Rhine rise?"}})); });
  entered.get_future().wait();  // the only worker is busy
  auto refused = post_json("/v1/ask", {{"question", "Where does the Rhine rise?"}, {"stream", true}});
  expect_error(refused, 503, "queue full");
  EXPECT_EQ(refused->get_header_value("Retry-After"), "2");
  release.set_value();
  t.join();
  ASSERT_TRUE(first && *first);
  EXPECT_EQ((*first)->status, 200);
}

class SlowClientTest : public server_test {
  void configure(api::server_config& c) override { c.read_timeout_s = 1; }
};

TEST_F(SlowClientTest, ClientThatStopsSendingIsDropped) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{10, 0};  // the test's own bound: the server must close well before this
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string partial = "POST /v1/ask HTTP/1.1\r\nHost: 127.0.0.1\r\n";  // headers never finished
  ASSERT_EQ(::send(fd, partial.data(), partial.size(), 0), static_cast<ssize_t>(partial.size()));
  const auto t0 = std::chrono::steady_clock::now();
  // The server may answer 4xx before closing; either way the connection must end (recv returns 0).
  std::string got;
  char buf[512];
  ssize_t n = 0;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) got.append(buf, static_cast<size_t>(n));
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::close(fd);
  EXPECT_EQ(n, 0) << "expected the server to close the connection of a client that stopped sending";
  if (!got.empty()) {
    EXPECT_EQ(got.rfind("HTTP/1.1 4", 0), 0u) << got;
  }
  EXPECT_LT(waited, 9.0) << "the server kept a silent client for " << waited << " s (read timeout 1 s)";
  auto ok = get("/healthz");  // and it still serves everyone else
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

class ConcurrentTest : public server_test {
  void configure(api::server_config& c) override {
    c.workers = 8;
    c.queue = 256;
    c.http_threads = 256;
  }
};

TEST_F(ConcurrentTest, TwoHundredConcurrentStreamingClients) {
  answers->delay_ms = 5;  // so that the streams overlap
  const int n = std::getenv("EV_N") ? std::atoi(std::getenv("EV_N")) : 200;
  std::vector<std::thread> threads;
  std::vector<std::string> failures(n);
  std::atomic<int> ok{0};
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      auto r = post_json("/v1/ask", {{"question", i % 2 ? "Where does the Rhine rise?" : "What causes tides?"},
                                     {"stream", true}});
      if (!r) return void(failures[i] = "no response: " + httplib::to_string(r.error()));
      if (r->status != 200) return void(failures[i] = "status " + std::to_string(r->status) + ": " + r->body);
      const auto events = parse_sse(r->body);
      if (events.empty() || events.back().name != "done") return void(failures[i] = "no done event: " + r->body);
      ++ok;
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < n; ++i) EXPECT_TRUE(failures[i].empty()) << "client " << i << ": " << failures[i];
  EXPECT_EQ(ok.load(), n);
}

TEST_F(ServerTest, StopLetsRunningStreamsFinish) {
  answers->delay_ms = 50;
  std::promise<void> entered;
  answers->entered = &entered;
  std::optional<httplib::Result> r;
  std::thread t([&] { r.emplace(post_json("/v1/ask", {{"question", "What causes tides?"}, {"stream", true}})); });
  entered.get_future().wait();  // the answer is being computed
  srv->stop();
  t.join();
  ASSERT_TRUE(r && *r);
  const auto events = parse_sse((*r)->body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().name, "done");
}

}  // namespace
}  // namespace evident::test
