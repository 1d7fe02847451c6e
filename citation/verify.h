// Resolution and verification: parsed markers + the packed passages -> resolved_citation records (citation.h).
//
// For each marker, each label and each quote (one record per label x quote; a marker without a quote gives one
// record per label):
//   1. the label must name a packed passage, else invalid_label (the quote is still searched: found_in_label says
//      where it actually is, 0 when nowhere);
//   2. the quote is searched in the cited passage in normalised form (normalize.h): exact -> supported, score 1;
//      else a fuzzy approximate-substring match (edit distance over normalised code points, free start and end in the
//      passage): score = 1 - distance / quote length; supported when score >= fuzzy_threshold;
//   3. a quote that runs past the end (or start) of the cited passage into the next (previous) passage of the same
//      document, contiguous in the document, is searched in the two merged: supported when it starts in the cited one;
//   4. otherwise every other passage is searched the same way: other_passage with found_in_label, or not_found;
//   5. a marker without a quote: verdict no_quote; match_score = the share of the claim's content words that occur in
//      the passage (an overlap check, not a proof); the span is the passage's best matching sentence.
// The span (char_start, char_end: code points of the document text) is the matched text's extent in the document,
// from which chunk_id and page follow through the passage's layout (chunk and page starts); without a layout the
// passage's first chunk and first page are used.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "citation/citation.h"
#include "citation/protocol.h"
#include "retrieval/packer.h"

namespace evident::citation {

struct verify_options {
  double fuzzy_threshold = 0.85;  // fuzzy score needed for supported / other_passage (1 - edits / quote length)
  size_t min_quote_chars = 3;     // normalised quotes shorter than this are treated as no quote
};

// Where a passage's chunks and the document's pages start, in code points of the document text (the store knows).
struct passage_layout {
  std::vector<int64_t> chunk_starts;  // [passage.chunk_ids.size()] start of each chunk, ascending
  std::vector<int64_t> page_starts;   // the document's page_starts (page i+1 starts at page_starts[i])
};
using layout_fn = std::function<std::optional<passage_layout>(const retrieval::passage&)>;

// A quote located in a passage.
struct quote_match {
  int64_t char_start = 0, char_end = 0;  // code points in the document text
  double score = 0;                       // 1 exact (normalised), else fuzzy score
};

// Searches `quote` in `p` (exact normalised, then fuzzy at or above `threshold`). nullopt when not found.
std::optional<quote_match> find_quote(const std::string& quote, const retrieval::passage& p, double threshold);

// Share of the content words of `claim` that occur in `text` (0..1; 0 when the claim has no content words).
double claim_overlap(const std::string& claim, const std::string& text);

std::vector<resolved_citation> resolve_citations(const parsed_answer& answer,
                                                 const std::vector<retrieval::passage>& passages,
                                                 const layout_fn& layout = {}, const verify_options& opt = {});

}  // namespace evident::citation
