#include "retrieval/query.h"

#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <array>
#include <cstdint>

namespace evident::retrieval {

namespace {

// FTS5 unicode61's default token characters: general categories L*, N* and Co.
bool is_token_char(UChar32 c) {
  switch (u_charType(c)) {
    case U_UPPERCASE_LETTER: case U_LOWERCASE_LETTER: case U_TITLECASE_LETTER: case U_MODIFIER_LETTER:
    case U_OTHER_LETTER: case U_DECIMAL_DIGIT_NUMBER: case U_LETTER_NUMBER: case U_OTHER_NUMBER:
    case U_PRIVATE_USE_CHAR:
    // Combining marks continue a word (unicode61 with remove_diacritics folds them away instead of splitting).
    case U_NON_SPACING_MARK: case U_COMBINING_SPACING_MARK: case U_ENCLOSING_MARK:
      return true;
    default:
      return false;
  }
}

// Lucene's EnglishAnalyzer default stop set (the classic 33 words); sorted for binary search.
constexpr std::array<std::string_view, 33> stopwords = {
    "a",    "an",   "and",  "are",   "as",   "at",   "be",   "but",   "by",   "for",  "if",
    "in",   "into", "is",   "it",    "no",   "not",  "of",   "on",    "or",   "such", "that",
    "the",  "their", "then", "there", "these", "they", "this", "to",   "was",  "will", "with"};

}  // namespace

bool is_stopword(std::string_view lower_term) {
  return std::binary_search(stopwords.begin(), stopwords.end(), lower_term);
}

std::vector<std::string> query_terms(std::string_view query, const query_options& opt) {
  std::vector<std::string> all;
  std::string cur;
  const auto* s = reinterpret_cast<const uint8_t*>(query.data());
  const int32_t n = static_cast<int32_t>(std::min<size_t>(query.size(), INT32_MAX));
  auto flush = [&] {
    if (!cur.empty()) all.push_back(std::move(cur));
    cur.clear();
  };
  for (int32_t i = 0; i < n;) {
    const int32_t start = i;
    UChar32 c;
    U8_NEXT(s, i, n, c);  // c < 0 for an ill-formed sequence; i always advances
    if (c < 0 || !is_token_char(c)) {
      flush();
      continue;
    }
    if (cur.size() + static_cast<size_t>(i - start) <= opt.max_term_bytes)
      cur.append(reinterpret_cast<const char*>(s + start), static_cast<size_t>(i - start));
  }
  flush();

  std::vector<std::string> kept;
  if (opt.remove_stopwords) {
    for (const auto& t : all) {
      std::string lower = t;
      for (auto& ch : lower)
        if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
      if (!is_stopword(lower)) kept.push_back(t);
    }
    if (kept.empty()) kept = std::move(all);  // "to be or not to be": search the stop words rather than nothing
  } else {
    kept = std::move(all);
  }
  if (opt.max_terms >= 0 && kept.size() > static_cast<size_t>(opt.max_terms)) kept.resize(opt.max_terms);
  return kept;
}

std::string fts5_expression(const std::vector<std::string>& terms) {
  std::string out;
  for (const auto& t : terms) {
    if (!out.empty()) out += " OR ";
    out += '"';
    for (char ch : t) {
      if (ch == '"') out += '"';
      out += ch;
    }
    out += '"';
  }
  return out;
}

}  // namespace evident::retrieval
