// The chunker: a document's text -> overlapping, unit-aligned chunks of about `chunk_tokens` tokens.
//
// Units come from document::units: ICU sentence boundaries (prose), lines (tables) or blank-line-separated top-level
// blocks (code). Units are trimmed of surrounding whitespace; a unit longer than `chunk_tokens` is split at line
// ends, then spaces, then code points. Chunks pack whole units greedily up to `chunk_tokens`; the next chunk starts
// so that it repeats at most `overlap` tokens of trailing units of the previous one (always advancing by at least
// one unit). A heading starts a new chunk (without overlap) once the current chunk holds chunk_tokens/4 tokens.
//
// Invariants of the result (tested): text == substr of document text by [char_start, char_end) in code points and by
// [byte_start, byte_end) in bytes; ordinals are 0..n-1; char_start is non-decreasing; page is the 1-based page of
// char_start; heading_path is the headings enclosing char_start joined by " > ".
//
// Thread-safety: chunk_document is re-entrant (ICU break iterators are per thread).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ingest/document.h"
#include "ingest/token-count.h"

namespace evident::ingest {

struct chunk_options {
  int chunk_tokens = 384;  // target (and maximum, up to a unit's rounding) tokens per chunk
  int overlap = 64;        // at most this many tokens repeated from the end of the previous chunk
};

struct chunk {
  int ordinal = 0;
  int64_t char_start = 0, char_end = 0;  // code points, [start, end) in document::text
  int64_t byte_start = 0, byte_end = 0;  // UTF-8 bytes, same span
  int page = 1;
  std::string heading_path;
  int token_count = 0;  // sum of the unit counts (the counter's count of the joined text may differ slightly)
  std::string text;
};

// Throws evident::error (invalid_input) when chunk_tokens < 8 or overlap is outside [0, chunk_tokens/2].
std::vector<chunk> chunk_document(const document& doc, const token_counter& counter, const chunk_options& opt = {});

// Unit spans [byte_start, byte_end) of `text` (exposed for tests): sentences, lines or blocks, untrimmed, covering
// the text in order.
std::vector<std::pair<size_t, size_t>> split_units(const std::string& text, unit_kind kind);

}  // namespace evident::ingest
