// The store: one directory per deployment.
//   DIR/evident.db      SQLite (WAL): collections, documents (+ full text), chunks, FTS5, embedder df, answers, ...
//   DIR/vectors.faiss   FAISS IndexIDMap2, ids = chunks.id (written by the indexer: temp + fsync + rename)
//   DIR/kv/             disk tier of the engine's prefix cache (later)
//
// Schema: ingest/migrations/NNNN-*.sql, embedded at build time and applied in order inside one transaction each;
// PRAGMA user_version records the last applied step. Folders that need tables add a migration file:
//   0001 initial (ingest)   0002 answers (citation)   0003 tenants, keys, audit (api)
// Offsets: char_* count Unicode code points of documents.text (NFC), byte_* count its UTF-8 bytes.
//
// Thread-safety: a `store` owns one SQLite connection; use one `store` per thread (opening is cheap: migrations
// are skipped when user_version is current). Readers and one writer may run concurrently (WAL).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ingest/sqlite.h"

namespace evident::ingest {

struct heading {
  int level = 1;            // 1 = top level
  std::string title;
  int64_t char_start = 0;   // code-point offset in the document text
};

struct document_row {
  int64_t id = 0;
  int64_t collection_id = 0;
  std::string path, source_root, sha256, format, title;
  int64_t size = 0, mtime = 0, ingested_at = 0;
  int pages = 1;
  std::vector<int64_t> page_starts;  // code-point offset where page i+1 starts; page_starts[0] == 0
  std::vector<heading> headings;
  int64_t char_count = 0;
  std::string text;                  // filled only when asked for (with_text)
};

struct chunk_row {
  int64_t id = 0;
  int64_t document_id = 0;
  int ordinal = 0;
  int64_t char_start = 0, char_end = 0;  // code points, [start, end)
  int64_t byte_start = 0, byte_end = 0;  // UTF-8 bytes, [start, end)
  int page = 1;
  std::string heading_path;
  int token_count = 0;
  std::string text;
};

enum class open_mode { read_write, read_only };

class store {
 public:
  static constexpr const char* db_file = "evident.db";
  static constexpr const char* vectors_file = "vectors.faiss";
  static constexpr const char* fts_file = "evident-fts.db";  // the FTS5 index (migration 0005, fts-writer.h)
  static constexpr const char* lock_file = "ingest.lock";    // the writer lock (flock), index-writer.h
  // Takes the writer lock of the store in `dir`: returns the descriptor that holds it (close it to release), or -1
  // when another writer holds it and `wait` is false (with `wait`, blocks until it is free). Throws evident::error
  // (io) when the lock file cannot be opened.
  static int lock_writer(const std::filesystem::path& dir, bool wait);

  // Opens the store at `dir`, creating the directory and database in read_write mode; applies pending migrations.
  // Throws evident::error (not_found for a missing store in read_only mode, corrupt for a damaged database).
  // The full-text index (DIR/evident-fts.db) is attached as schema `fts`, so `chunks_fts` and `chunks_fts_docsize`
  // name its tables. A read_write connection creates the file when missing, fills it from `chunks` when it was never
  // synced and no ingest holds the writer lock (a store upgraded from version 4), and keeps it in sync for plain SQL
  // writes of `chunks` through TEMP triggers.
  explicit store(const std::filesystem::path& dir, open_mode mode = open_mode::read_write);

  sql::db& db() { return db_; }
  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path vectors_path() const { return dir_ / vectors_file; }
  std::filesystem::path fts_path() const { return dir_ / fts_file; }
  // The ingest writer detaches the FTS file from this connection while it runs (its BEGIN IMMEDIATE would lock that
  // file too, and its FTS thread writes it) and attaches it again afterwards (with the TEMP triggers of a read_write
  // store). Call outside a transaction.
  void set_fts_attached(bool attached);
  int schema_version();

  // Collections. `collection_id` returns nullopt for an unknown name unless `create`.
  std::optional<int64_t> collection_id(const std::string& name, bool create = false);
  struct collection_info { int64_t id; std::string name; int64_t documents; int64_t chunks; };
  std::vector<collection_info> collections();

  // Documents and chunks (reads used by retrieval, citation and api).
  std::optional<document_row> document(int64_t id, bool with_text = false);
  std::vector<document_row> documents(std::optional<int64_t> collection_id = std::nullopt);  // without text
  std::optional<chunk_row> chunk(int64_t id);
  // Chunks of one document with ordinal in [from, to] (inclusive), in order.
  std::vector<chunk_row> chunks_of(int64_t document_id, int from_ordinal = 0, int to_ordinal = INT32_MAX);
  int64_t chunk_count();
  int64_t document_count();

  // meta key/value.
  std::optional<std::string> meta(const std::string& key);
  void set_meta(const std::string& key, const std::string& value);

  // 1-based page containing code-point offset `char_pos`, from a document's page_starts.
  static int page_of(const std::vector<int64_t>& page_starts, int64_t char_pos);

 private:
  void migrate();
  std::filesystem::path dir_;
  sql::db db_;
  bool write_ = false;
  bool fts_attached_ = false;
};

}  // namespace evident::ingest
