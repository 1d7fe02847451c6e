// engine::tokenizer: the byte-level BPE tokenizer of Qwen3 / Qwen3-Next, loaded from a Hugging Face `tokenizer.json`.
//
// Encoding follows the `tokenizers` library (the reference the fixtures in tests/fixtures/tokenizer come from):
//   1. added tokens are found first, in the raw text (leftmost-longest match), honouring each token's flags:
//        lstrip / rstrip   the match also swallows the whitespace to its left / right
//        single_word       the match must not touch a word character on either side
//        normalized        matched in the NFC-normalised text instead of the raw text
//      special tokens (<|im_start|> ...) and non-special added tokens (<think> ...) are both matched; pass
//      special_mode::as_text to treat every added token as plain text (documents from untrusted sources).
//   2. every stretch between added tokens is NFC-normalised (the `normalizer` of tokenizer.json),
//   3. split by the pre-tokeniser regex into pieces (the Qwen3 pattern by an equivalent hand-written splitter,
//      engine/tokenizer-split.h; any other pattern by ICU regex),
//   4. each piece's UTF-8 bytes are merged by rank (BPE, lowest rank first, leftmost on ties), a cache remembers the
//      ids of pieces seen before.
// Decoding maps ids back to bytes; a byte sequence that is not valid UTF-8 is replaced by U+FFFD per maximal invalid
// subsequence (as Rust's String::from_utf8_lossy does in the reference).
//
// Supported tokenizer.json: model.type "BPE" (byte_fallback false, no dropout, no continuing_subword_prefix /
// end_of_word_suffix), normalizer null | NFC | Sequence of those, pre_tokenizer Split(Regex, Isolated) and/or ByteLevel
// (use_regex false) alone or in a Sequence, decoder ByteLevel. Anything else fails at load time with an evident::error
// naming the field (e.g. "tokenizer.json: model.type: expected \"BPE\", found \"WordPiece\"").
//
// Input text must be UTF-8; invalid sequences are replaced by U+FFFD before encoding (as ICU's conversion does).
//
// Thread-safety: a loaded tokenizer is immutable (the piece cache is per thread; the ICU regex matchers of the fallback
// path come from a mutex-guarded pool): encode(), count() and decode() may be called concurrently from any number of
// threads. Memory: count() and the splitter work in bounded batches, so a text of hundreds of MB costs no more than
// its ids (encode) or nothing extra (count); one call takes at most 2 GiB of text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace evident::engine {

using token_id = int32_t;

// One entry of tokenizer.json's `added_tokens` (special tokens and other added tokens such as <think>).
struct added_token {
  token_id id = -1;
  std::string content;       // UTF-8, matched literally
  bool special = false;      // control token (skipped by decode(..., skip_special = true))
  bool lstrip = false;       // a match swallows whitespace on its left
  bool rstrip = false;       // a match swallows whitespace on its right
  bool normalized = false;   // matched in the normalised text rather than the raw text
  bool single_word = false;  // only matched when not adjacent to a word character
};

enum class special_mode {
  parse,    // added tokens in the text become their ids (what the `tokenizers` library does by default)
  as_text,  // added tokens are ordinary text (e.g. "<|im_end|>" inside a document is spelled out in BPE pieces)
};

struct tokenizer_options {
  // The Qwen3 split pattern runs through a hand-written splitter equivalent to it (engine/tokenizer-split.h), several
  // times faster than ICU regex; true forces ICU regex (the tests compare the two).
  bool force_icu_regex = false;
};

class tokenizer {
 public:
  // Loads `tokenizer.json`. Throws evident::error: not_found when the file is missing, corrupt when it is not JSON or
  // a field is missing / of the wrong type / unsupported (the message names the field).
  static tokenizer from_file(const std::filesystem::path& path, const tokenizer_options& options = {});
  // Same, from the JSON text; `origin` names the source in error messages.
  static tokenizer from_json(std::string_view json_text, std::string_view origin = "tokenizer.json",
                             const tokenizer_options& options = {});

  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;
  ~tokenizer();

  // Text (UTF-8) -> ids. Thread-safe.
  std::vector<token_id> encode(std::string_view text, special_mode mode = special_mode::parse) const;
  // Appends to `out` instead of returning a new vector (no allocation when `out` has capacity).
  void encode_into(std::string_view text, std::vector<token_id>& out, special_mode mode = special_mode::parse) const;
  // Number of tokens encode(text, mode) would return, without building the vector. Thread-safe.
  size_t count(std::string_view text, special_mode mode = special_mode::parse) const;

  // Ids -> UTF-8 text. Ids outside [0, vocab_size()) or unassigned throw evident::error (invalid_input).
  // skip_special drops tokens whose added_token::special is set (as the reference's skip_special_tokens does).
  std::string decode(std::span<const token_id> ids, bool skip_special = false) const;
  // The raw bytes of one token (not necessarily valid UTF-8 on its own). Throws for an unknown id.
  std::string_view token_bytes(token_id id) const;

  // The id of an added token or vocabulary entry given its text (e.g. "<|im_end|>", "<think>"); nullopt if absent.
  std::optional<token_id> find(std::string_view token_text) const;
  bool is_special(token_id id) const;
  // One past the largest id in use (the vocabulary plus the added tokens): 151669 for Qwen3.
  size_t vocab_size() const;
  const std::vector<added_token>& added_tokens() const;

 private:
  struct impl;
  explicit tokenizer(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
  friend class incremental_decoder;
};

// Streaming decoder: feed ids one at a time, get back text that never ends in the middle of a UTF-8 code point.
// Bytes of an incomplete code point are held back until the next id completes it (or finish() flushes them as
// U+FFFD). The concatenation of every push() result and finish() equals tokenizer::decode() of all the ids.
// One object per stream; not thread-safe itself (the tokenizer it refers to must outlive it).
class incremental_decoder {
 public:
  explicit incremental_decoder(const tokenizer& tok, bool skip_special = false);
  // Returns the text completed by this id (possibly empty).
  std::string push(token_id id);
  // Flushes held-back bytes (an incomplete sequence at the end of the stream becomes U+FFFD) and resets.
  std::string finish();

 private:
  const tokenizer* tok_;
  bool skip_special_;
  std::string pending_;  // bytes of a code point not yet complete (at most 3)
};

// Appends `bytes` to `out` as valid UTF-8, replacing each maximal invalid subsequence by U+FFFD (Unicode's
// "substitution of maximal subparts", which Rust's from_utf8_lossy implements). When `keep_incomplete_tail` is set,
// a truncated but so far valid sequence at the very end is not replaced: its length is returned so the caller can
// keep those bytes for later (the streaming decoder does this). Returns the number of trailing bytes left out.
size_t append_utf8_lossy(std::string_view bytes, std::string& out, bool keep_incomplete_tail = false);

}  // namespace evident::engine
