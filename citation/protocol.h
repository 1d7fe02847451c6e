// The citing protocol: what the model is told (versioned prompt templates) and how its answer is read back (parsing
// of citation markers and quotes).
//
// Marker syntax the templates ask for, after each claim:
//     The licence may be changed only by the FSF [2: "may publish revised and/or new versions"].
// i.e. `[n: "exact words copied from passage n"]`. Also accepted when reading answers (models drift):
//     [1]  [1, 3]  [1][2]  [1-3]  【1】  [1: “curly quotes”]  [1: "a" "b"] (two quotes for one label)
//     "quoted words" [1]        (a quote directly before the marker, only spaces/punctuation between)
// Bracketed text that does not start with a number ("[a]", "[citation needed]") is prose, not a marker.
//
// The answer shown to people is the *clean* text: each marker is rewritten to its canonical short form "[1]" /
// "[1, 3]" (inline quotes move into the citation records), so offsets in parsed_answer refer to the clean text.
//
// Abstention: the templates ask for the exact sentence `not_found_sentence` when the passages do not answer; the
// parser recognises it (and a few close variants) anywhere in the answer.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace evident::citation {

// A versioned system prompt. Stored with every answer as "id@version". Never edit a released version's text: add
// the next version and switch the default.
struct prompt_template {
  std::string id;        // "answer" | "long-document" | "code"
  int version = 1;
  std::string system;    // the system prompt (the citation protocol), first in the packed prompt
  std::string key() const { return id + "@" + std::to_string(version); }
};

inline constexpr const char* not_found_sentence = "NOT FOUND IN THE DOCUMENTS.";

// The current template for an id; throws evident::error (invalid_input) naming the id when unknown.
const prompt_template& get_template(std::string_view id);
// Every template version ever released (for tests and the docs).
const std::vector<prompt_template>& all_templates();
// Chooses the template for a request: "long-document" when one whole document is packed, "code" when most packed
// passages come from source files (by extension), else "answer".
const prompt_template& choose_template(bool whole_document, double code_fraction);
// The user message: the rendered passages, then the question, then a one-line reminder of the protocol.
std::string render_user_message(std::string_view context, std::string_view question);

struct parsed_marker {
  size_t raw_offset = 0;     // bytes into the raw answer where the marker (or its leading quote) starts
  size_t raw_length = 0;     // bytes of the marker in the raw answer
  size_t offset = 0;         // bytes into the clean answer where the canonical marker starts
  size_t length = 0;         // bytes of the canonical marker in the clean answer
  std::vector<int> labels;   // as written, in order, duplicates removed (a range 1-3 expands to 1, 2, 3)
  std::vector<std::string> quotes;  // inline or leading quotes (UTF-8, without quote marks); may be empty
  size_t claim_start = 0;    // the claim this marker supports: clean-text bytes [claim_start, claim_end)
  size_t claim_end = 0;
};

struct parsed_answer {
  std::string text;                    // the clean answer
  std::vector<parsed_marker> markers;  // in order of appearance
  std::vector<size_t> uncited_claims;  // clean-text byte offsets of sentences that make a claim without a marker
  bool not_found = false;              // the answer abstains (not_found_sentence or a close variant)
};

// Parses a model's answer (reasoning already removed). Never throws; malformed markers are left as prose.
parsed_answer parse_answer(std::string_view raw);

// Streaming form of the cleaning above: feed raw deltas, get the clean text that is final so far (text after an
// unclosed '[' or '【' is held back until the bracket closes or 512 bytes pass). Offsets of the final clean text match
// parse_answer(whole raw).text.
class clean_stream {
 public:
  std::string feed(std::string_view raw_delta);  // returns the newly final clean text
  std::string finish();                          // the rest
 private:
  std::string raw_;
  size_t emitted_ = 0;  // bytes of clean text already returned
};

}  // namespace evident::citation
