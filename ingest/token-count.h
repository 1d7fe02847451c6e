// Token counting for the chunker: exact (the Qwen3 tokenizer) or a documented estimate.
//
// The estimate mimics the Qwen3 pre-tokeniser on UTF-8 without a vocabulary: a run of ASCII letters is one token up
// to 8 letters, plus one per 5 further letters (long words split into sub-words); every digit is one token (Qwen3
// splits numbers into single digits); a run of ASCII punctuation costs one token per 2 characters; a run of 2+
// spaces or of newlines is one token; non-ASCII letters (accented Latin, Cyrillic, Greek) count like ASCII letters,
// CJK and other 3-byte characters count 0.75 token each (Qwen3's vocabulary holds many CJK bigrams).
// Measured against the real tokenizer (tests/ingest/test-token-estimate.cpp, docs/ingest.md): on 1000 SciFact
// abstracts the total is +0.2% off and a document's count 5.2% off on average; on /usr/share/common-licenses
// (indented legal text) +8.1% / 9.0%. With --tokenizer the counts are exact.
//
// Thread-safety: count() is const and safe to call concurrently.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace evident::ingest {

class token_counter {
 public:
  virtual ~token_counter() = default;
  virtual std::string name() const = 0;  // "estimate-v1" or "qwen3:<path>"
  virtual int count(std::string_view utf8) const = 0;
};

// The estimate described above.
std::unique_ptr<token_counter> make_estimate_counter();

// The Qwen3 tokenizer from `tokenizer_json` (a tokenizer.json) when this build has evident_tokenizer; an empty path
// gives the estimate. Throws evident::error (not_found / invalid_input) when the file is missing or unusable, or when
// this build has no tokenizer library.
std::unique_ptr<token_counter> make_token_counter(const std::string& tokenizer_json);

// The estimate as a free function (used by the estimate counter and by tests).
int estimate_tokens(std::string_view utf8);

}  // namespace evident::ingest
