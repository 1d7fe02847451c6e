// ingest::document and ingest::parser_i: file bytes + path -> normalised text with page and heading structure.
//
// A parser turns one file into a `document`: its full text in UTF-8, NFC-normalised, plus where pages start and
// which headings it has. All offsets count Unicode code points of `text` (the store's convention, see
// ingest/store.h). Parsers never see the file system: they get the bytes and the path (for the extension and the
// fallback title), so they work the same for folder ingest and uploads.
//
// Thread-safety: parsers are stateless; `parser_for` returns a shared instance that may be used from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/store.h"  // heading

namespace evident::ingest {

// How the chunker cuts `text` into units before packing them into chunks.
enum class unit_kind {
  sentences,  // ICU sentence boundaries (prose: txt, md, html, pdf)
  lines,      // one unit per line (csv/tsv rows)
  blocks,     // blank-line-separated top-level blocks (source code)
};

struct document {
  std::string text;                        // UTF-8, NFC
  std::vector<int64_t> page_starts{0};     // code-point offset where page i+1 starts; [0] == 0; size() == pages
  std::vector<heading> headings;           // in text order; char_start in code points
  std::string title;                       // first heading / <title> / PDF title, else the file name
  std::string format;                      // txt | md | html | pdf | csv | tsv | code
  unit_kind units = unit_kind::sentences;
};

class parser_i {
 public:
  virtual ~parser_i() = default;
  virtual std::string format() const = 0;
  // Parses `bytes` (the whole file) into a document. Throws evident::error (kind corrupt) naming `path` when the
  // content is damaged (e.g. a truncated PDF) or has no text.
  virtual document parse(std::string_view bytes, const std::filesystem::path& path) const = 0;
};

// The parser for a path, chosen by extension (case-insensitive):
//   .txt .text .log .rst (and files without a known extension whose bytes look like text)  -> txt
//   .md .markdown -> md     .html .htm .xhtml -> html     .pdf -> pdf     .csv -> csv     .tsv .tab -> tsv
//   .c .cc .cpp .cxx .h .hpp .py .js .ts .go .rs .java -> code
// Never returns nullptr: unknown extensions get the text parser (the indexer skips binary content before parsing).
const parser_i& parser_for(const std::filesystem::path& path);

// True for extensions that are known binary formats the indexer does not read (images, archives, office files...).
bool is_known_binary_extension(const std::filesystem::path& path);

// Builds a document piece by piece, normalising every appended piece to NFC and keeping code-point offsets.
// (Pieces are normalised separately: a combining mark at the very start of a piece does not compose with the
// previous piece. Parsers append whole lines/blocks, so this only matters for malformed input.)
class document_builder {
 public:
  explicit document_builder(std::string format, unit_kind units = unit_kind::sentences);
  void append(std::string_view utf8);  // any valid UTF-8; normalised to NFC
  void append_ascii(std::string_view ascii) { append_normalised(ascii); }
  void append_normalised(std::string_view nfc_utf8);  // caller guarantees NFC
  void new_page();                                    // the next appended text starts a new page
  void add_heading(int level, std::string_view title);  // at the current position
  // Ensures the text ends with "\n" (or is empty); used between blocks.
  void end_line();
  int64_t code_points() const { return cps_; }
  bool empty() const { return doc_.text.empty(); }
  document finish(const std::filesystem::path& path);  // sets title fallback; trims trailing whitespace

  document& doc() { return doc_; }

 private:
  document doc_;
  int64_t cps_ = 0;
};

}  // namespace evident::ingest
