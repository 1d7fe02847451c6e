// The server over the real answer pipeline (extractive generator) and a store ingested from tests/api/corpus/ by the
// real indexer: streamed answers whose citations resolve to document spans containing the quotes, stored answers,
// abstention, the OpenAI-compatible endpoint, and upload / delete through the API.
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "api/pipeline.h"
#include "api/server-pipeline.h"
#include "api/server.h"
#include "ingest/indexer.h"
#include "ingest/store.h"
#include "tests/api/server-fixture.h"

namespace evident::test {
namespace {

using nlohmann::json;

// Whitespace collapsed and final punctuation dropped: the pipeline's spans end at the quote's last word.
std::string collapse_ws(std::string s) {
  while (!s.empty() && std::string(".,;:!?").find(s.back()) != std::string::npos) s.pop_back();
  std::string out;
  bool sp = false;
  for (char c : s) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      sp = !out.empty();
      continue;
    }
    if (sp) out += ' ';
    sp = false;
    out += c;
  }
  return out;
}

class PipelineServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    store_dir = scratch_dir(std::string("api-pipeline-") + info->name());
    {
      ingest::store st(store_dir);
      ingest::ingest_options opt;
      opt.collection = "corpus";
      const auto sum = ingest::ingest_folder(st, source_path("tests/api/corpus"), opt);
      ASSERT_EQ(sum.added, 3) << "expected the three corpus files to be ingested";
    }
    api::server_config cfg;
    cfg.store_dir = store_dir;
    cfg.port = 0;
    cfg.quiet = true;
    answer::pipeline_options opt;
    opt.store_dir = store_dir;
    opt.generator = "extractive";
    srv = std::make_unique<api::server>(cfg, api::make_pipeline_service(opt));
    port = srv->start();
  }
  void TearDown() override {
    if (srv) srv->stop();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    return c;
  }
  json post(const std::string& path, const json& body, int expect = 200) {
    auto r = client().Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(r) << path;
    if (!r) return {};
    EXPECT_EQ(r->status, expect) << r->body;
    return json::parse(r->body, nullptr, false);
  }
  json get(const std::string& path, int expect = 200) {
    auto r = client().Get(path.c_str());
    EXPECT_TRUE(r) << path;
    if (!r) return {};
    EXPECT_EQ(r->status, expect) << path << ": " << r->body;
    return json::parse(r->body, nullptr, false);
  }
  // Every citation's span, cut from the document text by code points, holds its quote.
  void expect_citations_resolve(const json& citations) {
    for (const auto& c : citations) {
      const json d = get("/v1/documents/" + std::to_string(c["document_id"].get<int64_t>()));
      const std::string span = cp_substr(d["text"], c["char_start"], c["char_end"]);
      EXPECT_EQ(span, c["span_text"].get<std::string>());
      EXPECT_NE(collapse_ws(span).find(collapse_ws(c["quote"])), std::string::npos)
          << "quote '" << c["quote"] << "' not in span '" << span << "'";
      EXPECT_EQ(c["verdict"], "supported");
    }
  }

  std::filesystem::path store_dir;
  std::unique_ptr<api::server> srv;
  int port = 0;
};

TEST_F(PipelineServerTest, StreamedExtractiveAnswerWithResolvedCitations) {
  auto r = client().Post("/v1/ask",
                         json{{"question", "Who received the Nobel Prize for decoding the waggle dance?"},
                              {"stream", true}}.dump(),
                         "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const auto events = parse_sse(r->body);
  const std::map<std::string, int> rank = {{"retrieval", 0}, {"reasoning", 1}, {"answer", 2}, {"citation", 3},
                                           {"done", 4}};
  int last = -1;
  std::string answer;
  json citations = json::array();
  json done;
  for (const auto& e : events) {
    ASSERT_TRUE(rank.count(e.name)) << e.name << ": " << e.data;
    EXPECT_GE(rank.at(e.name), last) << e.name << " out of order";
    last = rank.at(e.name);
    const json j = json::parse(e.data);
    if (e.name == "answer") answer += j["delta"].get<std::string>();
    if (e.name == "citation") citations.push_back(j);
    if (e.name == "done") done = j;
  }
  ASSERT_FALSE(done.is_null()) << r->body;
  EXPECT_TRUE(done["extractive"].get<bool>());
  EXPECT_FALSE(done["not_found"].get<bool>());
  EXPECT_NE(answer.find("Frisch"), std::string::npos) << answer;
  ASSERT_FALSE(citations.empty());
  expect_citations_resolve(citations);

  const json stored = get("/v1/answers/" + std::to_string(done["answer_id"].get<int64_t>()));
  EXPECT_EQ(stored["answer"], answer);
  EXPECT_EQ(stored["citations"].size(), citations.size());
}

TEST_F(PipelineServerTest, NonAsciiDocumentSpansCountCodePoints) {
  const json a = post("/v1/ask", {{"question", "When did the Café Central open, and where?"}});
  ASSERT_FALSE(a["not_found"].get<bool>()) << a.dump();
  ASSERT_FALSE(a["citations"].empty());
  bool in_cafes = false;
  for (const auto& c : a["citations"]) in_cafes |= c["document_path"].get<std::string>().find("caf") != std::string::npos;
  EXPECT_TRUE(in_cafes) << a.dump();
  expect_citations_resolve(a["citations"]);
}

TEST_F(PipelineServerTest, AbstainsWhenTheDocumentsDoNotAnswer) {
  const json a = post("/v1/ask", {{"question", "What is the boiling point of liquid nitrogen at sea level?"}});
  EXPECT_TRUE(a["not_found"].get<bool>()) << a.dump();
}

TEST_F(PipelineServerTest, ChatCompletionsOverThePipeline) {
  const json j = post("/v1/chat/completions",
                      {{"model", "evident"}, {"messages", {{{"role", "user"}, {"content", "Who built the third Eddystone lighthouse?"}}}}});
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_NE(j["choices"][0]["message"]["content"].get<std::string>().find("Smeaton"), std::string::npos) << j.dump();
  EXPECT_TRUE(j["evident"]["extractive"].get<bool>());
  expect_citations_resolve(j["citations"]);
}

TEST_F(PipelineServerTest, UploadAskAndDelete) {
  httplib::MultipartFormDataItems items = {
      {"file", "The okapi lives in the rainforests of the Democratic Republic of the Congo. It is the only living "
               "relative of the giraffe.\n", "okapi.txt", "text/plain"},
      {"collection", "uploads", "", ""}};
  auto up = client().Post("/v1/documents", items);
  ASSERT_TRUE(up);
  ASSERT_EQ(up->status, 201) << up->body;
  const int64_t id = json::parse(up->body)["documents"][0]["id"];
  const json d = get("/v1/documents/" + std::to_string(id));
  EXPECT_EQ(d["collection"], "uploads");
  EXPECT_NE(d["text"].get<std::string>().find("okapi"), std::string::npos);

  const json a = post("/v1/ask", {{"question", "Where does the okapi live?"}, {"collection", "uploads"}});
  ASSERT_FALSE(a["citations"].empty()) << a.dump();
  EXPECT_EQ(a["citations"][0]["document_id"], id);

  auto del = client().Delete(("/v1/documents/" + std::to_string(id)).c_str());
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200) << del->body;
  get("/v1/documents/" + std::to_string(id), 404);
  auto again = client().Delete(("/v1/documents/" + std::to_string(id)).c_str());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 404);

  // An unsupported format is the caller's mistake (422), not ours.
  httplib::MultipartFormDataItems bad = {{"file", "\x01\x02\x03", "blob.exe", "application/octet-stream"}};
  auto r = client().Post("/v1/documents", bad);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
}

}  // namespace
}  // namespace evident::test
