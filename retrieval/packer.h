// retrieval::packer: hits + a token budget -> the packed context the generator sees.
//
// Layout of the packed prompt (prefix-stable): [system prompt] | [document A passages] | [document B passages] ... |
// [question]. Passages are in canonical order (document id, then position), labelled [1]..[n] in that order, so two
// questions over the same documents share the longest possible prefix. `prefix_boundaries` are the character offsets
// in `prompt` after the system prompt and after each document block: the engine snapshots its state there.
//
// Rendering (this file's format; the citation protocol supplies the system prompt and may wrap context + question in
// its own user message through pack_options::render_user):
//     Document: <title> (<path>)\n          once per document block
//     [n] (p. 3; Chapter 2 > Section 2.1)\n  one label line per passage (pages "3-4" when it spans pages)
//     <passage text>\n\n
//     ... next document block ...
//
// Selection (retrieval mode): hits are taken best first; each becomes a window of +-neighbour_window chunks, and
// windows of the same document that overlap or touch merge into one passage (text = the document text from the
// first chunk's start to the last chunk's end, so overlapping chunks never repeat text). A hit is skipped when it
// does not fit the budget. Then, best document first, a document whose whole text fits in what is left is packed
// whole (fill_whole_documents): two questions whose hits fall in the same documents that fit then get identical
// context blocks, i.e. the shared prompt prefix covers every passage both selected.
// Whole-document mode (pack_document): one document, in order, split into consecutive non-overlapping passages of
// about whole_passage_tokens (their texts concatenate to the document text exactly).
//
// Budget: budget_tokens = context_tokens - answer_reserve; total_tokens = tokens(system prompt) + tokens(user message
// = render_user(context, question)) + chat_overhead_tokens <= budget_tokens, always; it is verified on the final
// rendering and passages are dropped (lowest score first) if an estimate was short.
// Token counts: exact with the Qwen3 tokenizer when one is given (documents counted as plain text: special-token
// strings inside documents are not control tokens), else the estimate ceil(bytes / 3) (English runs about 4 bytes a
// token with Qwen3's vocabulary, so the estimate overcounts rather than overflows).
//
// Thread-safety: a packer reads the store through the caller's connection; one packer per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "retrieval/retriever.h"

namespace evident::engine {
class tokenizer;
}
namespace evident::ingest {
class store;
}

namespace evident::retrieval {

struct passage {
  int label = 0;                  // the [n] the model cites, 1-based
  int64_t document_id = 0;
  std::string document_title;
  std::string document_path;
  std::vector<int64_t> chunk_ids;  // contiguous chunks merged into this passage, in order
  int64_t char_start = 0;          // code points in the document text, [start, end)
  int64_t char_end = 0;
  int page_start = 1, page_end = 1;
  std::string heading_path;
  std::string text;                // exactly substr(document text, char_start, char_end - char_start)
  double score = 0;                // best retrieval score among its chunks
  int tokens = 0;                  // tokens of the passage as rendered in the prompt (label + header + text)
};

struct packed_context {
  std::string system_prompt;       // the instructions (citation protocol), first in the prompt
  std::string context;             // the rendered passages block (what follows the system prompt)
  std::string question;
  std::vector<passage> passages;   // in label order == canonical order
  std::vector<size_t> prefix_boundaries;  // byte offsets into system_prompt + context where the prefix is stable
  int total_tokens = 0;            // system + context + question (exact with the Qwen3 tokenizer when configured)
  int budget_tokens = 0;           // the gear's budget this was packed into (reserve already subtracted)
  bool whole_document = false;     // true when one whole document was packed in order
  bool exact_token_count = false;  // false when counted with the estimate (no tokenizer configured)
};

// Context gears (tokens of the model's window a request may use).
inline constexpr int gear_8k = 8192, gear_32k = 32768, gear_64k = 65536, gear_128k = 131072;
// "8k" | "32k" | "64k" | "128k" (case-insensitive) -> tokens; throws evident::error (invalid_input) otherwise.
int parse_gear(std::string_view text);

struct pack_options {
  int context_tokens = gear_32k;   // the gear
  int answer_reserve = -1;         // tokens kept for the answer (and reasoning); -1 = min(4096, context_tokens / 4)
  int chat_overhead_tokens = 16;   // chat-template tokens around the messages (<|im_start|>system ... assistant\n)
  std::string system_prompt;       // the citation protocol's system prompt; may be empty
  // Renders the user message from the context block and the question; default: context + "Question: " + question.
  std::function<std::string(std::string_view context, std::string_view question)> render_user;
  int neighbour_window = 1;        // chunks merged on each side of a hit
  bool fill_whole_documents = true;  // upgrade a hit document to its whole text when it fits what is left
  int whole_passage_tokens = 1024; // passage size (chunk-token sum) when a document is packed whole
  int max_passages = 0;            // 0 = no limit other than the budget
};

class packer {
 public:
  // `tok` may be null (estimated counts). Both must outlive the packer.
  explicit packer(ingest::store& s, const engine::tokenizer* tok = nullptr);

  // Retrieval mode: hits (best first) -> packed context. Throws evident::error (invalid_input) when the system
  // prompt and question alone exceed the budget.
  packed_context pack(const std::vector<hit>& hits, const std::string& question, const pack_options& opt) const;

  // Whole-document mode: the whole document in order when it fits (whole_document = true); otherwise returns
  // nullopt-like empty result with whole_document = false and no passages (the caller then packs hits).
  // Throws evident::error (not_found) for an unknown document.
  packed_context pack_document(int64_t document_id, const std::string& question, const pack_options& opt) const;

  // Tokens of `text` as this packer counts them (exact or estimated).
  int count_tokens(std::string_view text) const;
  bool exact() const { return tok_ != nullptr; }

 private:
  ingest::store& store_;
  const engine::tokenizer* tok_;
};

}  // namespace evident::retrieval
