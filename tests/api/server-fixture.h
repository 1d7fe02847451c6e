// Test fixtures for the HTTP server: a small store written directly through SQL (so the server tests do not depend on
// the parsers), a scripted answer_service, and a gtest fixture that starts the real server on an ephemeral loopback
// port in a background thread and stops it in teardown.
#pragma once

#include <httplib.h>

#include <atomic>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/server.h"
#include "tests/test-util.h"

namespace evident::test {

// One document of the fixture store: text split into chunks of whole sentences.
struct fixture_doc {
  std::string collection, path, title, text;
  std::vector<std::string> chunks;  // consecutive pieces whose concatenation is `text`
};

// The fixture corpus: three documents in two collections, one with non-ASCII text (code points != bytes).
std::vector<fixture_doc> fixture_docs();

// Writes the fixture documents into a fresh store at `dir` (documents, chunks, FTS rows).
void write_fixture_store(const std::filesystem::path& dir);

// A stand-in for the answer pipeline: picks the chunk sharing the most words with the question, answers with its
// first sentence and a [1] citation quoting it (char span in code points), streams reasoning and answer in pieces.
// "not_found" when no chunk shares a word. Keeps answers in memory for load().
class scripted_answers : public api::answer_service {
 public:
  explicit scripted_answers(std::filesystem::path store) : store_(std::move(store)) {}
  answer::ask_result ask(const answer::ask_request& r, const answer::ask_events& ev) override;
  std::optional<answer::ask_result> load(int64_t id) override;
  std::string generator_name() const override { return "scripted"; }
  bool extractive() const override { return true; }

  // When set, ask() signals `entered` and then waits for `release` (to fill the queue in tests).
  std::shared_future<void> release;
  std::promise<void>* entered = nullptr;
  std::atomic<int> delay_ms{0};       // sleep between streamed pieces
  std::atomic<bool> throw_bug{false};  // throw std::runtime_error (a bug) instead of answering

 private:
  std::filesystem::path store_;
  std::mutex mu_;
  std::map<int64_t, answer::ask_result> saved_;
  int64_t next_id_ = 1;
};

// Code points [start, end) of UTF-8 `s`, both clamped to its length (independent of the server's own conversion).
std::string cp_substr(const std::string& s, int64_t start, int64_t end);

// A parsed SSE event.
struct sse_event {
  std::string name;  // "message" when the stream has no event: line
  std::string data;
};
std::vector<sse_event> parse_sse(const std::string& body);

class server_test : public ::testing::Test {
 protected:
  // Override to change the configuration before start.
  virtual void configure(api::server_config&) {}

  void SetUp() override;
  void TearDown() override;

  httplib::Client client() const;
  // JSON helpers; `key` adds Authorization: Bearer.
  httplib::Result post_json(const std::string& path, const nlohmann::json& body, const std::string& key = "") const;
  httplib::Result get(const std::string& path, const std::string& key = "") const;

  std::filesystem::path store_dir;
  std::shared_ptr<scripted_answers> answers;
  std::unique_ptr<api::server> srv;
  int port = 0;
};

}  // namespace evident::test
