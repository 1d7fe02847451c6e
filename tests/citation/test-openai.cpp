// The OpenAI-compatible client inside the pipeline, against a scripted fake server on loopback (cpp-httplib):
// good, wrong and missing citations, inline <think>, abstention, HTTP errors; streaming (SSE) and not.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/openai-client.h"
#include "api/pipeline.h"
#include "citation/normalize.h"
#include "ingest/store.h"
#include "tests/test-util.h"

namespace ev = evident;
using nlohmann::json;
using ev::citation::verdict;

namespace {

const char* const passage1 =
    "The GNU General Public License is a free, copyleft license for software and other kinds of works.";
const char* const passage2 =
    "Licensed under the Apache License, Version 2.0; you may not use this file except in compliance with the License.";

struct script {
  std::string reasoning;  // sent as reasoning_content
  std::string content;
  int status = 200;
};

// Scripts are chosen by a key word in the question.
script script_for(const std::string& user) {
  if (user.find("KEY-good") != std::string::npos)
    return {"Passage 1 describes the GPL; passage 2 the Apache terms.",
            "The GPL is copyleft [1: \"a free, copyleft license for software\"]. Apache files need compliance "
            "[2: \"you may not use this file except in compliance\"]."};
  if (user.find("KEY-wrong") != std::string::npos)
    return {"", "Apache files need compliance [1: \"you may not use this file except in compliance\"]. "
                "The GPL forbids sales [1: \"the license forbids all commercial use\"]. See also [7]."};
  if (user.find("KEY-missing") != std::string::npos)
    return {"", "The GPL is a copyleft license for software and other works. Apache needs compliance with it."};
  if (user.find("KEY-think") != std::string::npos)
    return {"", "<think>Look at passage 1 first.</think>\nIt is copyleft [1: \"copyleft license for software\"]."};
  if (user.find("KEY-notfound") != std::string::npos)
    return {"I see nothing about that.", "NOT FOUND IN THE DOCUMENTS. The passages cover two software licences."};
  if (user.find("KEY-error") != std::string::npos) return {"", "", 500};
  return {"", "unscripted"};
}

class fake_openai {
 public:
  fake_openai() {
    svr_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      const json body = json::parse(req.body);
      last_body_ = body.dump();
      ++requests_;
      std::string user;
      for (const auto& m : body["messages"])
        if (m["role"] == "user") user = m["content"];
      const script s = script_for(user);
      if (s.status != 200) {
        res.status = s.status;
        res.set_content("{\"error\":{\"message\":\"scripted failure\"}}", "application/json");
        return;
      }
      if (!body.value("stream", false)) {
        const json out = {{"id", "x"},
                          {"object", "chat.completion"},
                          {"choices", {{{"index", 0},
                                        {"message", {{"role", "assistant"}, {"content", s.content},
                                                     {"reasoning_content", s.reasoning}}},
                                        {"finish_reason", "stop"}}}},
                          {"usage", {{"prompt_tokens", 120}, {"completion_tokens", 40}, {"total_tokens", 160}}}};
        res.set_content(out.dump(), "application/json");
        return;
      }
      // SSE: reasoning then content, in small pieces (pieces may split words and markers)
      std::string events;
      auto chunk = [&](const json& delta, const json& finish) {
        const json c = {{"id", "x"}, {"object", "chat.completion.chunk"},
                        {"choices", {{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}}}};
        events += "data: " + c.dump() + "\n\n";
      };
      for (size_t i = 0; i < s.reasoning.size(); i += 9) chunk({{"reasoning_content", s.reasoning.substr(i, 9)}}, nullptr);
      for (size_t i = 0; i < s.content.size(); i += 5) chunk({{"content", s.content.substr(i, 5)}}, nullptr);
      chunk(json::object(), "stop");
      events += "data: " + json({{"id", "x"}, {"choices", json::array()},
                                 {"usage", {{"prompt_tokens", 120}, {"completion_tokens", 40}}}}).dump() + "\n\n";
      events += "data: [DONE]\n\n";
      res.set_chunked_content_provider("text/event-stream", [events](size_t, httplib::DataSink& sink) {
        // write in uneven slices so lines arrive split across reads
        for (size_t i = 0; i < events.size(); i += 37) sink.write(events.data() + i, std::min<size_t>(37, events.size() - i));
        sink.done();
        return true;
      });
    });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { svr_.listen_after_bind(); });
    while (!svr_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~fake_openai() {
    svr_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string last_body() const { return last_body_; }
  int requests() const { return requests_; }

 private:
  httplib::Server svr_;
  int port_ = 0;
  std::thread thread_;
  std::string last_body_;
  std::atomic<int> requests_{0};
};

std::vector<ev::retrieval::passage> passages() {
  std::vector<ev::retrieval::passage> ps(2);
  ps[0].label = 1;
  ps[0].document_id = 1;
  ps[0].document_title = "GPL";
  ps[0].document_path = "GPL-3";
  ps[0].chunk_ids = {11};
  ps[0].text = passage1;
  ps[0].char_start = 40;
  ps[0].char_end = 40 + ev::citation::count_code_points(passage1);
  ps[1].label = 2;
  ps[1].document_id = 2;
  ps[1].document_title = "Apache";
  ps[1].document_path = "Apache-2.0";
  ps[1].chunk_ids = {21};
  ps[1].text = passage2;
  ps[1].char_start = 0;
  ps[1].char_end = ev::citation::count_code_points(passage2);
  return ps;
}

class openai_pipeline : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    dir_ = ev::test::scratch_dir(std::string("citation-openai-") + (GetParam() ? "stream" : "plain"));
    { ev::ingest::store st(dir_); }
    ev::answer::pipeline_options o;
    o.store_dir = dir_;
    o.generator = "openai";
    o.openai_url = server_.url() + "/v1";
    o.openai_model = "fake-model";
    o.openai_stream = GetParam();
    o.min_relevance = 0;  // the scripted questions are keys, not real questions
    p_ = std::make_unique<ev::answer::pipeline>(o);
    p_->set_context([](const ev::answer::ask_request& req, const std::string& sys) {
      ev::retrieval::packed_context pc;
      pc.system_prompt = sys;
      pc.passages = passages();
      for (const auto& p : pc.passages) {
        pc.context.append("[").append(std::to_string(p.label)).append("] ").append(p.document_title);
        pc.context.append("\n").append(p.text).append("\n\n");
      }
      pc.question = req.question;
      return pc;
    });
  }
  ev::answer::ask_result ask(const std::string& q, ev::answer::ask_events* ev = nullptr) {
    ev::answer::ask_request r;
    r.question = q;
    return p_->ask(r, ev);
  }
  fake_openai server_;
  std::filesystem::path dir_;
  std::unique_ptr<ev::answer::pipeline> p_;
};

}  // namespace

TEST_P(openai_pipeline, good_citations_are_supported) {
  std::string streamed_answer, streamed_reasoning;
  int n_citations = 0;
  ev::answer::ask_events evs;
  evs.on_answer = [&](const std::string& s) { streamed_answer += s; return true; };
  evs.on_reasoning = [&](const std::string& s) { streamed_reasoning += s; return true; };
  evs.on_citation = [&](const ev::citation::resolved_citation&) { ++n_citations; return true; };
  const auto r = ask("KEY-good what do the licences say?", &evs);
  EXPECT_EQ(r.generator, "openai:fake-model");
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_FALSE(r.not_found);
  EXPECT_EQ(r.reasoning, "Passage 1 describes the GPL; passage 2 the Apache terms.");
  EXPECT_EQ(r.answer, "The GPL is copyleft [1]. Apache files need compliance [2].");
  EXPECT_EQ(streamed_answer, r.answer);  // the streamed clean text equals the final one
  EXPECT_EQ(streamed_reasoning, r.reasoning);
  ASSERT_EQ(r.citations.size(), 2u);
  EXPECT_EQ(n_citations, 2);
  for (const auto& c : r.citations) {
    EXPECT_EQ(c.v, verdict::supported);
    EXPECT_DOUBLE_EQ(c.match_score, 1.0);
    EXPECT_EQ(r.answer.substr(c.answer_offset, 1), "[");
  }
  EXPECT_EQ(r.citations[0].char_start, 40 + 34);  // "a free, copyleft ..." starts at code point 34 of passage 1
  EXPECT_EQ(r.citations[0].span_text, "a free, copyleft license for software");
  EXPECT_EQ(r.citations[1].document_path, "Apache-2.0");
  EXPECT_TRUE(r.uncited_claims.empty());
  EXPECT_EQ(r.usage.prompt_tokens, 120);
  // the request carried the citation protocol and the model name
  const json body = json::parse(server_.last_body());
  EXPECT_EQ(body["model"], "fake-model");
  EXPECT_EQ(body["stream"], GetParam());
  EXPECT_NE(body["messages"][0]["content"].get<std::string>().find("[3: \"exact words"), std::string::npos);
  EXPECT_NE(body["messages"][1]["content"].get<std::string>().find(passage2), std::string::npos);
  // stored
  const auto back = ev::answer::load_answer(dir_, r.answer_id);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->citations.size(), 2u);
  EXPECT_EQ(back->generator, "openai:fake-model");
}

TEST_P(openai_pipeline, wrong_citations_get_their_verdicts) {
  const auto r = ask("KEY-wrong");
  ASSERT_EQ(r.citations.size(), 3u);
  EXPECT_EQ(r.citations[0].v, verdict::other_passage);  // the quote is in [2], not [1]
  EXPECT_EQ(r.citations[0].found_in_label, 2);
  EXPECT_EQ(r.citations[0].document_path, "Apache-2.0");
  EXPECT_EQ(r.citations[1].v, verdict::not_found);      // fabricated quote
  EXPECT_EQ(r.citations[2].v, verdict::invalid_label);  // [7] does not exist
  EXPECT_EQ(r.citations[2].label, 7);
}

TEST_P(openai_pipeline, missing_citations_are_flagged) {
  const auto r = ask("KEY-missing");
  EXPECT_TRUE(r.citations.empty());
  EXPECT_EQ(r.uncited_claims.size(), 2u);
  EXPECT_FALSE(r.not_found);
}

TEST_P(openai_pipeline, inline_think_is_split_from_the_answer) {
  const auto r = ask("KEY-think");
  EXPECT_EQ(r.reasoning, "Look at passage 1 first.");
  EXPECT_EQ(r.answer, "It is copyleft [1].");
  ASSERT_EQ(r.citations.size(), 1u);
  EXPECT_EQ(r.citations[0].v, verdict::supported);
}

TEST_P(openai_pipeline, model_abstention_is_not_found) {
  const auto r = ask("KEY-notfound");
  EXPECT_TRUE(r.not_found);
  EXPECT_TRUE(r.uncited_claims.empty());
  EXPECT_EQ(r.reasoning, "I see nothing about that.");
  EXPECT_FALSE(r.passages.empty());
}

TEST_P(openai_pipeline, http_error_is_a_finish_error_not_a_throw) {
  const auto r = ask("KEY-error");
  EXPECT_EQ(r.finish_reason, "error");
  EXPECT_NE(r.reasoning.find("HTTP 500"), std::string::npos);
  EXPECT_TRUE(r.citations.empty());
}

TEST_P(openai_pipeline, cancel_from_a_callback) {
  ev::answer::ask_events evs;
  evs.on_answer = [](const std::string&) { return false; };
  const auto r = ask("KEY-good", &evs);
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(r.finish_reason, "cancelled");
  EXPECT_GT(r.answer_id, 0);  // still stored
}

INSTANTIATE_TEST_SUITE_P(stream_and_plain, openai_pipeline, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "stream" : "plain"; });

TEST(openai_client, unreachable_server_is_an_error_event) {
  ev::answer::openai_options o;
  o.base_url = "http://127.0.0.1:1";  // nothing listens on port 1
  o.model = "m";
  o.connect_timeout_s = 2;
  ev::answer::openai_client c(o);
  std::string reason, message;
  ev::engine::generate_request req;
  req.messages = {{"user", "hi"}};
  c.generate(req, [&](const ev::engine::generate_event& e) {
    if (e.kind == ev::engine::event_kind::finish) {
      reason = e.finish_reason;
      message = e.error_message;
    }
    return true;
  });
  EXPECT_EQ(reason, "error");
  EXPECT_NE(message.find("127.0.0.1:1"), std::string::npos);
  EXPECT_THROW(ev::answer::openai_client({"ftp://x", "m"}), ev::error);
}
