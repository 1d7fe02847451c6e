// Query text -> a safe FTS5 MATCH expression.
//
// No user input ever reaches FTS5 syntax unescaped: the query is split into terms here (runs of letters, digits and
// private-use code points, as FTS5's unicode61 tokenizer does), each term is emitted as a double-quoted FTS5 string
// (an embedded '"' would be doubled, though terms never contain one), and terms are joined with OR. FTS5 operators
// in the input (AND, OR, NOT, NEAR, '*', '^', '-', ':', '+', parentheses, quotes) are either separators or become
// quoted plain words ("NEAR" is searched as the word near). Invalid UTF-8 bytes are separators.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace evident::retrieval {

struct query_options {
  bool remove_stopwords = true;  // drop a small English stop list (Lucene's 33 words) unless every term is one
  int max_terms = 64;            // keep at most this many terms (first occurrences first); bounds FTS5 work
  size_t max_term_bytes = 128;   // longer runs are cut (no real word is this long; keeps pathological input cheap)
};

// The terms of `query` in order of appearance, duplicates kept (a repeated term weighs more, as in Lucene's
// bag-of-words query). Each term is valid UTF-8 made of token characters only.
std::vector<std::string> query_terms(std::string_view query, const query_options& opt = {});

// `"t1" OR "t2" OR ...` for the given terms; "" when `terms` is empty (the caller returns no hits then).
std::string fts5_expression(const std::vector<std::string>& terms);

// True for the stop words removed by query_terms (ASCII, lower case).
bool is_stopword(std::string_view lower_term);

}  // namespace evident::retrieval
