// Token counting for the chunker: exact (the Qwen3 tokenizer) or a documented estimate.
//
// The estimate mimics the Qwen3 pre-tokeniser on UTF-8 without a vocabulary: a run of ASCII letters is one token up
// to 7 letters, plus one per 4 further letters (long words split into sub-words); every digit is one token (Qwen3
// splits numbers into single digits); a run of ASCII punctuation costs one token per 2 characters; a run of 2+
// spaces or of newlines is one token; non-ASCII letters (accented Latin, Cyrillic, Greek) count like ASCII letters,
// CJK and other 3-byte characters count 0.75 token each (Qwen3's vocabulary holds many CJK bigrams).
// Its error against the real tokenizer is measured in docs/ingest.md (SciFact abstracts).
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
