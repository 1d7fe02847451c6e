// ingest::index_writer: the single writer of a store's documents, chunks, FTS rows, df table and vectors.faiss.
// Used by ingest_folder, ingest_bytes and remove_document (ingest/indexer.h); internal to ingest/.
//
// Construction takes the store's writer lock (DIR/ingest.lock, flock; blocks while another writer runs, or throws
// when opt.wait_for_lock is false), records/validates the embedder in meta, loads df, opens vectors.faiss for writing
// and repairs it against SQLite, and rebuilds the df table when meta embedder.df_n disagrees with the chunk count
// (a crash between a document commit and the next checkpoint).
//
// Per document: document row, old chunks deleted, new chunks inserted with fresh ids from meta ingest.next_chunk_id,
// in the batch's SQLite transaction (see commit()); then the in-memory FAISS index and df are updated. The batch's
// FTS rows go to the FTS thread after COMMIT (fts-writer.h); the constructor syncs the FTS file first.
// checkpoint() persists df (one transaction, with embedder.df_n) and then saves vectors.faiss atomically.
//
// Thread-safety: one index_writer per store at a time (the lock enforces it across processes); its methods are
// called from one thread. embedder() and counter() are const and may be used by worker threads concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ingest/chunker.h"
#include "ingest/document.h"
#include "ingest/fts-writer.h"
#include "ingest/hashed-embedder.h"
#include "ingest/indexer.h"
#include "ingest/token-count.h"
#include "ingest/vectors.h"
#include "ingest/wal-checkpointer.h"

namespace evident::ingest {

class store;

// A parsed, chunked and embedded file, ready to be written.
struct prepared {
  document doc;
  std::vector<chunk> chunks;
  std::vector<float> vectors;         // float [chunks.size(), dim]
  std::vector<uint32_t> df_buckets;   // df buckets of every chunk (distinct per chunk), concatenated
  std::string sha256;
  int64_t bytes = 0;
  // Row values derived from doc, computed by the worker so that the writer thread only writes (prepare_document
  // fills them; write_document requires them: char_count >= 0).
  std::string page_starts_json;       // JSON array of doc.page_starts
  std::string headings_json;          // JSON array of {level, title, char_start}
  int64_t char_count = -1;            // code points in doc.text
};

struct file_info {
  std::string path;         // relative to source_root (or the upload name)
  std::string source_root;  // absolute folder; empty for uploads
  std::string sha256;
  int64_t size = 0;
  int64_t mtime = 0;        // unix ns
};

class index_writer {
 public:
  index_writer(store& s, const ingest_options& opt);
  ~index_writer();
  index_writer(const index_writer&) = delete;
  index_writer& operator=(const index_writer&) = delete;

  const hashed_tfidf_embedder& embedder() const { return *embedder_; }
  const token_counter& counter() const { return *counter_; }
  const vector_repair& repair_report() const { return repair_; }

  // Writes (or replaces, keeping the id, when `replace` names an existing document) one document. Returns its id.
  int64_t write_document(int64_t collection_id, const file_info& f, const prepared& p, std::optional<int64_t> replace);
  // Records a new mtime for a document whose content did not change.
  void touch(int64_t document_id, int64_t mtime);
  // Deletes a document with its chunks, their FTS entries (queued for the FTS thread), vectors and df contributions.
  void remove(int64_t document_id);
  // Commits the open batch (see below) and persists df and vectors.faiss. Intermediate checkpoints (final = false)
  // always save the flat form: building HNSW (above opt.hnsw_above vectors) is left to the final one, which also
  // waits for the FTS thread to commit every batch (the store is then wholly in sync). truncate_wal (a final
  // checkpoint at the end of a bulk run whose connection closes soon after, as `evident ingest`): the WALs of
  // evident.db and evident-fts.db are copied into their files and truncated now, beside the other end-of-run work
  // (checkpoint_and_truncate), instead of by the closing connections; a long-lived connection (the server's uploads)
  // leaves them to the usual checkpoints.
  void checkpoint(bool final = true, bool truncate_wal = false);

  // Batching: write_document/touch/remove open one transaction and keep it open across documents until commit() (or
  // until the batch holds `batch_bytes` of text); a document is always wholly in or wholly out, and a failed document
  // is rolled back alone: replacements, touch and remove run inside their own SAVEPOINT; a new document runs without
  // one (a savepoint per small file cost measurable writer time) and is undone on failure by deleting its rows again
  // (its queued FTS rows are dropped); when that undo fails too, the whole batch is rolled back and an io error is
  // thrown. In-memory FAISS/df changes of a document are applied only after its rows are written. After COMMIT the
  // batch's FTS rows go to the FTS thread, tagged with the batch number written in the batch (meta fts.batch).
  void commit();
  // 2 MB (was 8): the run's last COMMIT writes its batch's pages while everything else waits (SciFact: 20-25 ms at
  // 8 MB, 2-4 ms at 2 MB), and smaller commits let the background checkpoints copy more of the WAL during the run.
  int64_t batch_bytes = 2 << 20;

  // CPU seconds of the FTS thread (up to the last final checkpoint) and of this writer's thread in COMMIT and in
  // checkpoint() (for profiles).
  struct cpu_times {
    double fts = 0, commit = 0, checkpoint = 0;
  };
  const cpu_times& cpu() const { return cpu_; }

  int64_t begin_run(const std::string& root, int64_t collection_id);
  void end_run(int64_t run_id, const std::string& summary_json);

 private:
  void drop_chunks(int64_t document_id);  // inside a transaction: df decrement, ids queued for FAISS removal
  void rebuild_df();
  void apply_pending();  // after a document's savepoint: FAISS removals, df decrements of dropped chunks
  void begin_batch();  // opens the batch transaction when none is open
  void begin_doc();    // begin_batch + SAVEPOINT doc
  void end_doc(bool ok);
  void abort_batch();  // rolls the open batch back (after a failed undo)
  void undo_new_document(int64_t doc_id);  // deletes a failed new document's rows (doc_id < 0: none written)
  sql::stmt& stmt(int i, const char* sql);
  sql::stmt& chunk_insert(size_t rows);  // cached multi-row INSERT INTO chunks of `rows` rows, reset
  static constexpr size_t chunk_rows_per_insert = 64;  // 704 parameters, well under SQLite's 32766
  void finish_batch();  // the batch's meta (next chunk id, fts.batch) before COMMIT; rolls back on error
  // FTS rows of the open batch's last documents, sent to the FTS thread (fts-writer.h) at a document boundary once
  // there are `at_least` of them (whole documents only: a failed document drops its rows from fts_mark_).
  void send_fts(size_t at_least);
  static constexpr size_t fts_send_rows = 256;
  std::vector<fts_row> fts_;
  size_t fts_mark_ = 0;  // fts_.size() when the current document began (rolled back to on failure)
  store& s_;
  ingest_options opt_;
  int lock_fd_ = -1;
  std::unique_ptr<hashed_tfidf_embedder> embedder_;
  std::unique_ptr<token_counter> counter_;
  std::unique_ptr<vector_index> vectors_;
  vector_repair repair_;
  std::vector<uint32_t> df_;
  std::vector<uint32_t> df_saved_;  // df_ as last persisted (checkpoint writes the buckets that differ)
  int64_t df_n_ = 0;
  int64_t next_chunk_id_ = 1;
  std::vector<int64_t> pending_removals_;
  std::vector<std::string> pending_df_;  // texts of dropped chunks (df decrement after the savepoint)
  bool vectors_dirty_ = false;
  bool batch_open_ = false;
  int64_t batch_size_ = 0;
  std::vector<std::unique_ptr<sql::stmt>> stmts_;
  std::vector<std::unique_ptr<sql::stmt>> chunk_stmts_;  // by row count
  std::unique_ptr<wal_checkpointer> checkpointer_;
  std::unique_ptr<fts_writer> fts_writer_;  // the FTS thread (evident-fts.db) while this writer lives
  int64_t fts_batch_ = 0;                    // meta fts.batch of the last batch
  cpu_times cpu_;  // WAL checkpoints on a background thread while this writer lives
};

// CPU seconds used by the calling thread so far (CLOCK_THREAD_CPUTIME_ID).
double thread_cpu_seconds();

// documents.page_starts / documents.headings values of a parsed document (JSON text).
std::string page_starts_json(const document& d);
std::string headings_json(const document& d);

// The worker's half: parse + chunk + embed one file's bytes (`name` picks the format). Throws evident::error with the
// reason when the file cannot be used (empty, binary, corrupt, no text).
prepared prepare_document(const index_writer& w, std::string_view bytes, const std::filesystem::path& name,
                          const ingest_options& opt);

}  // namespace evident::ingest
