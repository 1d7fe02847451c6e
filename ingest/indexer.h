// The indexer: files -> parsed, normalised, chunked, embedded rows in the store (SQLite) and vectors.faiss.
//
// Write order per document (crash safety): one SQLite transaction (document + chunks + FTS + df), commit; vectors are
// added to the in-memory FAISS index and saved (temp + fsync + rename) every few documents and at the end. A crash
// between commit and save leaves chunks without vectors; `open_vectors` detects the mismatch and re-embeds them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace evident::ingest {

class store;

struct ingest_options {
  std::string collection = "default";
  bool prune = true;                 // remove documents whose files are gone from the folder
  int chunk_tokens = 384;            // target tokens per chunk
  int chunk_overlap = 64;            // tokens shared between consecutive chunks
  int64_t max_file_bytes = 256ll << 20;  // larger files are skipped with a warning
  std::string tokenizer_path;        // tokenizer.json for exact token counts; empty = documented estimate
  bool progress = false;             // draw progress on stderr (TTY)
};

struct skipped_file {
  std::string path;
  std::string reason;
};

struct ingest_summary {
  int added = 0, updated = 0, removed = 0, unchanged = 0;  // counts of files
  std::vector<skipped_file> skipped;
  int64_t chunks = 0;       // chunks written in this run
  int64_t bytes = 0;        // bytes of files parsed in this run
  double seconds = 0;
  int files_seen = 0;       // candidate files found in the folder
};

// Ingests every supported file under `root` into `collection`. Incremental: unchanged files are skipped, changed
// ones replaced, missing ones removed (unless !prune). Per-file problems go to summary.skipped; throws
// evident::error only when the store itself fails.
ingest_summary ingest_folder(store& s, const std::filesystem::path& root, const ingest_options& opt = {});

// Ingests one in-memory file (uploads): `name` decides the format by extension. Replaces a document with the same
// name in the collection. Returns the document id. Throws evident::error (invalid_input) for unsupported or corrupt
// content, naming the file.
int64_t ingest_bytes(store& s, const std::string& name, const std::string& bytes, const ingest_options& opt = {});

// Removes a document, its chunks, FTS rows and vectors. Returns false when no such document.
bool remove_document(store& s, int64_t document_id);

}  // namespace evident::ingest
