// Fixtures for the ingest tests: real files written by the tests (PDFs made with groff + ghostscript), and a store
// consistency check shared by the incremental and crash tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace evident::ingest {
class store;
}

namespace evident::test {

void write_file(const std::filesystem::path& p, const std::string& bytes);
std::string read_file(const std::filesystem::path& p);

// A PDF with one page per entry of `pages` (plain text paragraphs), made by `groff -Tps -ms | ps2pdf`.
// Fails the test (fatal) when the tools are missing.
void make_pdf(const std::filesystem::path& out, const std::vector<std::string>& pages);

// Deterministic English-like text of about `bytes` bytes (sentences of words from a fixed vocabulary), seeded.
std::string generated_text(size_t bytes, uint64_t seed);

// Decodes UTF-8 into code points (independent of ingest/text.h, for span checks).
std::u32string to_u32(const std::string& utf8);
std::string to_utf8(const std::u32string& s);

struct store_check {
  std::string integrity;          // PRAGMA integrity_check result ("ok")
  bool fts_ok = false;            // FTS5 'integrity-check' passed
  bool fts_match = false;         // the FTS file's rowids (chunks_fts_docsize) == chunk ids, as opened
  bool fts_repaired_match = false;  // the same after ingest::sync_fts (what the next ingest writer does first)
  int64_t documents = 0, chunks = 0;
  int64_t vectors = 0;            // ids in vectors.faiss after open (without repair)
  bool vectors_match = false;     // the file's ids == chunk ids, before repair
  bool repaired_match = false;    // after an in-memory repair, ids == chunk ids
};
store_check check_store(const std::filesystem::path& store_dir);

// The store's df table (ingest::load_df) and N equal a recount over its chunk texts (embeds every chunk: small
// stores only).
bool df_matches_chunks(ingest::store& s);

}  // namespace evident::test
