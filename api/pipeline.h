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
#include "citation/extractive.h"
#include "citation/verify.h"
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

// ---------------------------------------------------------------------------------------------------------------------
// The pipeline object.
//
//   ask(request) --> context(question, system prompt)   retrieval + packing (retrieval/), timed
//                --> relevance gate                      no passages, or no passage sentence covering min_relevance of
//                                                        the question's key terms: not_found, no generation
//                --> generator                           extractive | openai | engine (one generate() call)
//                --> split reasoning / answer            <think> handling (citation/reasoning.h)
//                --> parse + resolve + verify            citation/protocol.h, citation/verify.h
//                --> store                               answers + answer_citations (migration 0002)
//
// Thread-safety: ask() may be called from several threads at once (each call opens its own store connection and
// retrievers; generators are thread-safe by contract). Configuration is fixed after construction.

// Builds the packed context for a request with the given system prompt (the citation protocol). The default uses
// retrieval/ (hybrid retrieval + packer); tests and special routes may substitute their own.
using context_fn = std::function<retrieval::packed_context(const ask_request&, const std::string& system_prompt)>;

struct pipeline_options {
  std::filesystem::path store_dir;          // the store (must exist: ingest first)
  std::string generator = "extractive";     // default generator: extractive | openai | engine
  std::string openai_url;                   // e.g. http://127.0.0.1:8000 (with or without /v1)
  std::string openai_model;                 // model name sent to the server
  std::string openai_api_key;               // Bearer token; empty = none
  bool openai_stream = true;                // use SSE streaming
  std::filesystem::path model_dir;          // engine: the checkpoint directory (loaded at construction when set)
  std::filesystem::path tokenizer_path;     // engine: tokenizer.json (default: model_dir/tokenizer.json)
  std::string engine_device = "cpu";        // engine: cpu | cuda (engine/local-generator.h: cuda batches concurrent
                                            // answers, cpu reuses cached prompt prefixes)
  int retrieve_k = 50;                      // hits retrieved before packing
  double min_relevance = 0.25;              // relevance gate (IDF-weighted question-term coverage, 0..1; 0 = off)
  bool store_answers = true;                // write every answer to the answers table
  citation::verify_options verify;
  citation::extractive_options extractive;
};

class pipeline {
 public:
  // `generator`: "extractive" (default when empty), "openai" (needs openai_url/openai_model through the options
  // form) or "engine" (needs model_dir). Throws evident::error for a missing store or an unusable generator.
  pipeline(const std::filesystem::path& store_dir, const std::string& generator = "");
  explicit pipeline(pipeline_options opt);
  ~pipeline();
  pipeline(const pipeline&) = delete;
  pipeline& operator=(const pipeline&) = delete;

  // Registers (or replaces) a generator under `key` ("extractive", "openai", "engine", or any name a request's
  // `generator` field may select). The pipeline shares ownership.
  void set_generator(const std::string& key, std::shared_ptr<engine::generator_i> g);
  // Replaces the retrieval + packing step (tests; whole-document routes).
  void set_context(context_fn fn);

  // Answers one question. Never throws for the generator's own failure (finish_reason "error", stored); throws
  // evident::error for invalid requests (empty question, unknown generator) and store failures.
  ask_result ask(const ask_request& request, const ask_events* events = nullptr);

  const pipeline_options& options() const { return opt_; }

  struct impl;  // (public name so the implementation's helpers can see it; its definition is private to pipeline.cpp)

 private:
  pipeline_options opt_;
  std::unique_ptr<impl> impl_;
};

// Reads a stored answer (with its citations); nullopt when no such id. `passages` hold the stored ids and offsets
// (texts are not stored again).
std::optional<ask_result> load_answer(const std::filesystem::path& store_dir, int64_t answer_id);

// The JSON form used by `evident ask --json` and the HTTP API (one schema for both):
//   {answer_id, question, answer, reasoning, not_found, extractive, cancelled, generator, template, finish_reason,
//    citations: [{label, answer_offset, chunk_id, document_id, document_title, document_path, page, char_start,
//                 char_end, quote, span_text, verdict, match_score, found_in_label}],
//    uncited_claims: [byte offsets], passages: [{label, document_id, document_title, document_path, chunk_ids,
//    char_start, char_end, page_start, page_end, score, tokens, text}], usage: {...}, timings: {...}}
std::string to_json(const ask_result& r, bool with_passage_text = true, int indent = -1);

}  // namespace evident::answer
