// citation::normalized_text: the form quotes and passages are compared in, with a map back to the original text.
//
// Normalisation (applied identically to a model's quote and to a passage):
//   1. NFKC + case folding (ICU nfkc_cf): "ﬁ" -> "fi", full-width "Ａ" -> "a", "É" (NFD or NFC) -> "é".
//   2. Apostrophes and primes (' ’ ‘ ʼ ′ `) are dropped: "don't" == "dont" == "don’t".
//   3. Every other punctuation character, dash, quote mark and whitespace becomes a separator; runs of separators
//      collapse to one ASCII space; leading and trailing separators are removed.
// So "Licensed  under the\n“Apache” License—v2" and "licensed under the apache license v2" compare equal.
//
// Each code point of the normalised text maps back to the half-open range of code points [src_start, src_end) of
// the original text it came from (a whole combining sequence when NFKC merged or expanded it), so a match found in
// normalised space becomes a span of the original text: `span_of(i, j)`.
//
// Thread-safety: free functions; ICU's normaliser instance is immutable and shared.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace evident::citation {

struct normalized_text {
  std::u32string text;             // normalised code points
  std::vector<int64_t> src_start;  // [text.size()] code-point offset in the original where text[i] came from
  std::vector<int64_t> src_end;    // [text.size()] exclusive end of that source range
  // Original code-point span covering normalised code points [i, j) (j > i); {0, 0} when empty.
  std::pair<int64_t, int64_t> span_of(size_t i, size_t j) const;
};

// Normalises UTF-8 text (invalid bytes are treated as U+FFFD).
normalized_text normalize(std::string_view utf8);
// The normalised text alone, as UTF-8 (for display, keys and tests).
std::string normalize_string(std::string_view utf8);

// UTF-8 helpers over code points (invalid bytes count as one code point each, decoded as U+FFFD).
std::u32string to_u32(std::string_view utf8);
std::string to_utf8(std::u32string_view cps);
int64_t count_code_points(std::string_view utf8);
// Byte offset of code point `cp` in `utf8` (clamped to the size).
size_t byte_offset_of(std::string_view utf8, int64_t cp);
// Substring by code points [cp_start, cp_end).
std::string substr_cp(std::string_view utf8, int64_t cp_start, int64_t cp_end);

// Sentences of a text as code-point ranges [start, end), whitespace trimmed. A sentence ends at . ! ? 。 followed by
// whitespace and then an upper-case letter, digit, quote or bracket (so "e.g. the" does not split), or at a blank line
// (hard-wrapped lines inside a paragraph do not split). Empty sentences are dropped.
std::vector<std::pair<int64_t, int64_t>> split_sentences(std::u32string_view text);

// The words of a text in normalised form (split at the spaces of `normalize`), without a small English stop-word list
// and without one-character words. Used for overlap and term scores.
std::vector<std::string> content_words(std::string_view utf8);
bool is_stop_word(std::string_view normalized_word);

}  // namespace evident::citation
