#include "ingest/token-count.h"

#include <filesystem>

#include "engine/base/error.h"
#include "engine/tokenizer.h"

namespace evident::ingest {

int estimate_tokens(std::string_view s) {
  // Units of 1/4 token so that 0.75 per CJK character stays integral.
  int64_t q = 0;
  size_t i = 0;
  const size_t n = s.size();
  auto is_alpha = [](unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; };
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (is_alpha(c) || (c >= 0xC0 && c < 0xE0)) {  // letters: ASCII or 2-byte (Latin ext, Greek, Cyrillic...)
      size_t len = 0;
      while (i < n) {
        unsigned char d = static_cast<unsigned char>(s[i]);
        if (is_alpha(d)) { ++i; ++len; }
        else if (d >= 0xC0 && d < 0xE0) { i += 2; ++len; }
        else break;
      }
      q += 4 * (1 + (len > 8 ? (len - 8 + 4) / 5 : 0));
    } else if (c >= '0' && c <= '9') {
      q += 4;
      ++i;
    } else if (c == ' ' || c == '\t') {
      size_t len = 0;
      while (i < n && (s[i] == ' ' || s[i] == '\t')) { ++i; ++len; }
      if (len >= 2) q += 4;
    } else if (c == '\n') {
      while (i < n && s[i] == '\n') ++i;
      q += 4;
    } else if (c < 0x80) {
      size_t len = 0;
      while (i < n) {
        unsigned char d = static_cast<unsigned char>(s[i]);
        if (d >= 0x80 || is_alpha(d) || (d >= '0' && d <= '9') || d == ' ' || d == '\n' || d == '\t') break;
        ++i;
        ++len;
      }
      q += 4 * ((len + 1) / 2);
    } else if (c >= 0xE0 && c < 0xF0) {  // 3-byte: CJK, Thai, symbols
      q += 3;
      i += 3;
    } else if (c >= 0xF0) {  // 4-byte: emoji, rare CJK
      q += 4;
      i += 4;
    } else {  // stray continuation byte
      ++i;
    }
  }
  return static_cast<int>((q + 3) / 4);
}

namespace {
class estimate_counter final : public token_counter {
 public:
  std::string name() const override { return "estimate-v1"; }
  int count(std::string_view s) const override { return estimate_tokens(s); }
};
// Exact counts with the Qwen3 tokenizer; added tokens inside documents are counted as text (they are not control
// tokens there).
class qwen3_counter final : public token_counter {
 public:
  explicit qwen3_counter(const std::string& path) : path_(path), tok_(engine::tokenizer::from_file(path)) {}
  std::string name() const override { return "qwen3:" + path_; }
  int count(std::string_view s) const override {
    return static_cast<int>(tok_.count(s, engine::special_mode::as_text));
  }

 private:
  std::string path_;
  engine::tokenizer tok_;
};
}  // namespace

std::unique_ptr<token_counter> make_estimate_counter() { return std::make_unique<estimate_counter>(); }

std::unique_ptr<token_counter> make_token_counter(const std::string& tokenizer_json) {
  if (tokenizer_json.empty()) return make_estimate_counter();
  EV_THROW_IF_NOT_KIND(std::filesystem::exists(tokenizer_json), not_found, "tokenizer file ", tokenizer_json,
                       " does not exist (expected a Hugging Face tokenizer.json)");
  return std::make_unique<qwen3_counter>(tokenizer_json);
}

}  // namespace evident::ingest
