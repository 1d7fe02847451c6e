// The answer pipeline: question -> retrieval -> packing -> generator -> citations resolved + verified -> stored answer.
// Shared by the CLI (`evident ask`) and the HTTP server (POST /v1/ask, /v1/chat/completions). Owned by the citation
// work (issue 7); the server only calls it.
//
// Streaming: the callbacks in ask_events fire in this order: on_retrieval once, on_reasoning*, on_answer*,
// on_citation* (each as it is resolved, with its position in the answer), then ask() returns the full result.
// Any callback returning false cancels the request (the result is then marked cancelled and still stored).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "citation/citation.h"
#include "engine/generator.h"
#include "retrieval/packer.h"

namespace evident::answer {

struct ask_request {
  std::string question;
  std::optional<std::string> collection;    // default: every collection
  std::vector<int64_t> documents;           // restrict to these documents (whole-document mode when one fits)
  int budget_tokens = 32768;                // a gear: 8K, 32K, 64K, 128K
  std::string generator;                    // empty = the pipeline's default
  engine::sampling_params sampling;
  std::string tenant;                       // for storage/audit; empty when auth is off
};

struct timings {
  double retrieval_ms = 0, packing_ms = 0, generation_ms = 0, citation_ms = 0, total_ms = 0;
};

struct ask_result {
  int64_t answer_id = 0;                    // row id in the answers table
  std::string question;
  std::string answer;                       // the answer text shown to people (never the reasoning)
  std::string reasoning;                    // the <think> trace (empty for generators without one)
  bool not_found = false;                   // explicit abstention: the documents do not answer the question
  bool extractive = false;                  // composed from passages, not generated
  bool cancelled = false;
  std::string generator;                    // generator_i::name()
  std::string template_id;                  // prompt template id@version
  std::vector<citation::resolved_citation> citations;
  std::vector<int> uncited_claims;          // byte offsets of answer sentences without any citation
  std::vector<retrieval::passage> passages; // the packed context (or the closest passages when not_found)
  engine::usage_info usage;
  timings time;
  std::string finish_reason;
};

struct ask_events {
  std::function<bool(const std::vector<retrieval::passage>&)> on_retrieval;
  std::function<bool(const std::string&)> on_reasoning;
  std::function<bool(const std::string&)> on_answer;
  std::function<bool(const citation::resolved_citation&)> on_citation;
};

class pipeline;  // defined in api/pipeline.cpp's companion headers by the citation work

}  // namespace evident::answer
