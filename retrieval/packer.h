// retrieval::packer: hits + a token budget -> the packed context the generator sees.
//
// Layout of the packed prompt (prefix-stable): [system prompt] | [document A passages] | [document B passages] ... |
// [question]. Passages are in canonical order (document id, then position), labelled [1]..[n] in that order, so two
// questions over the same documents share the longest possible prefix. `prefix_boundaries` are the character offsets
// in `prompt` after the system prompt and after each document block: the engine snapshots its state there.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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

}  // namespace evident::retrieval
