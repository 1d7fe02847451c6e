// The indexer: files -> parsed, normalised, chunked, embedded rows in the store (SQLite) and vectors.faiss.
//
// Write order per document (crash safety): one SQLite transaction (document + chunks + FTS), commit; vectors are
// added to the in-memory FAISS index and df counts in memory; both are persisted at checkpoints (every
// checkpoint_seconds and at the end: df in one transaction, then vectors.faiss by temp + fsync + rename). A crash
// between commit and checkpoint leaves chunks without vectors and df behind; vector_index::open (ingest/vectors.h)
// detects the id mismatch and re-embeds, and the next writer recounts df (ingest/index-writer.h).
//
// Store facts kept in meta: embedder.name, embedder.dim, embedder.df_n, ingest.next_chunk_id (chunk ids are never
// reused, so FAISS ids stay unambiguous), chunker.tokens, chunker.overlap, chunker.counter.
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
  bool warnings = true;              // one "warning: skipped PATH: REASON" line on stderr per skipped file
  int threads = 0;                   // parse/chunk/embed workers; 0 = one per hardware thread
  double checkpoint_seconds = 30;    // persist df + vectors.faiss at least this often during a run
  int64_t hnsw_above = 200000;       // vectors.faiss uses HNSW instead of a flat index above this many vectors
  bool wait_for_lock = true;         // wait for another writer of the store; false: throw at once
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
// evident::error only when the store itself fails, and (not_found) when `root` is not a readable directory.
ingest_summary ingest_folder(store& s, const std::filesystem::path& root, const ingest_options& opt = {});

// The files ingest_folder visits under a folder: hidden entries are passed over with their subtrees, symbolic links
// are never followed (one out of the folder is listed in `skipped`), nor is the store's own directory when it lies
// inside. `files` is sorted by `rel`.
struct listed_file {
  std::string rel;  // path relative to the root, '/'-separated
  std::string abs;  // the root's canonical path + '/' + rel
  int64_t size = 0;
  int64_t mtime = 0;  // ns
};
struct folder_listing {
  std::filesystem::path root;  // canonical
  std::vector<listed_file> files;
  std::vector<skipped_file> skipped;
};
// Throws evident::error (not_found) when `root` is not a readable directory. `store_dir` need not exist yet.
// Safe to run on another thread while the store is opened: `evident ingest` overlaps the two (a new store's schema
// and SciFact's 5183 files each take about 15 ms).
folder_listing list_folder(const std::filesystem::path& root, const std::filesystem::path& store_dir);
// The same as ingest_folder(s, listing.root, opt), from a listing made by list_folder for this store.
ingest_summary ingest_folder(store& s, folder_listing listing, const ingest_options& opt = {});

// The summary as one JSON object: {added, updated, removed, unchanged, skipped: [{path, reason}], chunks, bytes,
// seconds}.
std::string summary_json(const ingest_summary& s);

// Ingests one in-memory file (uploads): `name` decides the format by extension. Replaces a document with the same
// name in the collection. Returns the document id. Throws evident::error (invalid_input) for unsupported or corrupt
// content, naming the file.
int64_t ingest_bytes(store& s, const std::string& name, const std::string& bytes, const ingest_options& opt = {});

// Removes a document, its chunks, FTS rows and vectors. Returns false when no such document.
bool remove_document(store& s, int64_t document_id);

}  // namespace evident::ingest
