// JSON of the evidence types, shared by the answer pipeline (stored answers, `evident ask --json`) and the HTTP API,
// so a citation, passage or timing breakdown has one spelling everywhere. Header-only: the server links neither
// citation/ nor the pipeline library.
#pragma once

#include <nlohmann/json.hpp>

#include "api/pipeline.h"
#include "citation/citation.h"
#include "retrieval/packer.h"

namespace evident::answer {

// char_start/char_end count code points of the document text; answer_offset is a byte offset in the answer.
inline nlohmann::json citation_json(const citation::resolved_citation& c) {
  return {{"label", c.label},
          {"answer_offset", c.answer_offset},
          {"chunk_id", c.chunk_id},
          {"document_id", c.document_id},
          {"document_title", c.document_title},
          {"document_path", c.document_path},
          {"page", c.page},
          {"char_start", c.char_start},
          {"char_end", c.char_end},
          {"quote", c.quote},
          {"span_text", c.span_text},
          {"verdict", citation::to_string(c.v)},
          {"match_score", c.match_score},
          {"found_in_label", c.found_in_label}};
}

inline nlohmann::json passage_json(const retrieval::passage& p, bool with_text) {
  nlohmann::json j = {{"label", p.label},
                      {"document_id", p.document_id},
                      {"document_title", p.document_title},
                      {"document_path", p.document_path},
                      {"chunk_ids", p.chunk_ids},
                      {"char_start", p.char_start},
                      {"char_end", p.char_end},
                      {"page_start", p.page_start},
                      {"page_end", p.page_end},
                      {"heading_path", p.heading_path},
                      {"score", p.score},
                      {"tokens", p.tokens}};
  if (with_text) j["text"] = p.text;
  return j;
}

inline nlohmann::json timings_json(const timings& t) {
  return {{"retrieval_ms", t.retrieval_ms}, {"packing_ms", t.packing_ms}, {"generation_ms", t.generation_ms},
          {"citation_ms", t.citation_ms},   {"total_ms", t.total_ms}};
}

}  // namespace evident::answer
