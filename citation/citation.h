// citation: the data an answer's evidence is made of. Parsing, resolution and verification live in citation/*.cpp;
// these types are what the pipeline, the store (answers tables) and the API (JSON) exchange.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace evident::citation {

// How a citation's quote relates to the passages (see citation/verify.h once it exists):
//   supported            the quote (after normalisation, or fuzzily above threshold) is in the cited passage
//   other_passage        not in the cited passage but in another packed passage (the citation points at the wrong one)
//   not_found            in no packed passage (fabricated or paraphrased beyond the threshold)
//   no_quote             the marker carries no quote; checked by overlap of the claim with the passage instead
//   invalid_label        the marker names a label that does not exist in the packed context
enum class verdict { supported, other_passage, not_found, no_quote, invalid_label };
// The verdict's stable name, as stored in the answers table and sent by the API.
inline const char* to_string(verdict v) {
  switch (v) {
    case verdict::supported: return "supported";
    case verdict::other_passage: return "other_passage";
    case verdict::not_found: return "not_found";
    case verdict::no_quote: return "no_quote";
    case verdict::invalid_label: return "invalid_label";
  }
  return "unknown";
}

struct resolved_citation {
  int label = 0;                    // the [n] in the answer
  size_t answer_offset = 0;         // byte offset of the marker in the answer text
  int64_t chunk_id = 0;             // chunk holding the quote (or the passage's first chunk)
  int64_t document_id = 0;
  std::string document_title;
  std::string document_path;
  int page = 1;                     // 1-based page of char_start
  int64_t char_start = 0;           // code points in the document text: the quoted span (or the passage)
  int64_t char_end = 0;
  std::string quote;                // the words quoted by the model (or chosen by the extractive answerer)
  std::string span_text;            // the document text at [char_start, char_end)
  verdict v = verdict::no_quote;
  double match_score = 0;           // 1.0 exact after normalisation; fuzzy score otherwise
  int found_in_label = 0;           // for other_passage: the label where the quote was found
};

}  // namespace evident::citation
