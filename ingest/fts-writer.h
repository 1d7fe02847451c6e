// ingest::fts_writer: the full-text index (FTS5 table chunks_fts) lives in its own database file, DIR/evident-fts.db
// (migration 0005), and the ingest writer hands each written document's FTS rows to a thread that writes them there
// through its own connection (one transaction over several of the writer's batches), while the writer goes on.
//
// Why: FTS5 building its index was more than half of the ingest writer thread's CPU, and SQLite lets one connection
// write one database file at a time. In a second file, on a second connection, it overlaps the writer's inserts.
//
// Consistency: SQLite (evident.db) is the source of truth, as for vectors.faiss. The writer commits a batch in
// evident.db first, with meta key `fts.batch` = its batch number; only then may the FTS thread commit that batch's rows
// (with fts_state `batch` = the same number; it commits every few batches). The FTS file therefore only ever lags: after a crash it can miss the chunks of
// the last batches (and keep entries of chunks those batches deleted). `sync_fts` compares the two numbers and the
// store ids (meta `store.id`, copied into fts_state `store_id`); when the numbers differ (or the FTS file is new), it
// compares chunk ids with the index's rowids (chunks_fts_docsize): missing chunks are indexed from their stored
// text; when entries of deleted chunks remain (their text is gone, and a contentless FTS5 table needs it to delete
// them), or the file belongs to another store, the index is rebuilt from `chunks`. It runs in every ingest writer
// (under the writer lock) before anything is written, and at every read-write `store` open while no ingest runs.
// Readers see the index through ATTACH (store.h); during an ingest it may lag evident.db by up to about commit_rows (12000)
// chunks plus the queue (a search then misses those chunks in BM25).
//
// Thread-safety: an fts_writer is driven from one thread (the ingest writer); its own thread owns its connection.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ingest/sqlite.h"
#include "ingest/wal-checkpointer.h"

namespace evident::ingest {

class store;

// One FTS change: index `text` under `rowid` (a chunk id), or remove that entry (`del`, with the text that was
// indexed: a contentless FTS5 table needs it).
struct fts_row {
  int64_t rowid;
  std::string text;
  bool del;
};

struct fts_sync_report {
  int64_t added = 0;    // chunks indexed that the FTS file lacked
  bool rebuilt = false; // the FTS file held entries of deleted chunks and was rebuilt from `chunks`
  bool changed() const { return added > 0 || rebuilt; }
};

// Brings the FTS index in line with `chunks` when the batch numbers differ (see above). `main` reads evident.db;
// `fts` writes the FTS tables, named with `fts_schema` ("fts." when attached to `main`, "" on its own connection).
// The caller holds the writer lock.
fts_sync_report sync_fts(sql::db& main, sql::db& fts, const std::string& fts_schema);

// The schema of evident-fts.db (created when missing; `schema` as above). The FTS5 table is contentless (content=''):
// chunk text stays in evident.db; same column and tokenizer as before (`porter unicode61 remove_diacritics 2`), so
// tokens, document lengths and rankings are unchanged. FTS5 `hashsize` is 64 MiB.
void create_fts_schema(sql::db& db, const std::string& schema);

class fts_writer {
 public:
  // Opens `file` (evident-fts.db) on a connection of its own and starts the thread.
  explicit fts_writer(const std::filesystem::path& file);
  // Finishes what was sent (an open FTS transaction without its commit() is rolled back), then stops.
  ~fts_writer();
  fts_writer(const fts_writer&) = delete;
  fts_writer& operator=(const fts_writer&) = delete;

  sql::db& db() { return *db_; }  // only before the first add/commit (sync_fts)

  // The protocol follows the writer's batches: add() the FTS rows of documents written in the open evident.db
  // transaction (only whole documents: a failed one's rows are never sent); the thread applies them to an open
  // transaction of its own as they come (FTS5 keeps them in memory), so indexing overlaps the writer. After
  // evident.db's COMMIT, commit(batch) lets those rows be committed: the FTS transaction is committed, with fts_state
  // batch = `batch`, once it holds commit_rows_ rows (so it spans several batches: fewer segments), and by drain()
  // and at destruction. After evident.db's ROLLBACK, rollback() undoes the rows sent since the last commit(batch)
  // (each change's exact inverse), keeping the rest. Waits while too much is queued. Throws evident::error (io) when
  // the thread failed (it then drops its open transaction and ignores everything: the next sync_fts repairs).
  void add(std::vector<fts_row> rows);
  void commit(int64_t batch);
  void rollback();
  // flush(): asks the thread to commit what evident.db committed, without waiting. drain(): the same, then waits
  // until everything sent is done; both throw as add does. flush(true), for the end of a run: after that commit the
  // thread also stops its background checkpoints and copies the WAL into evident-fts.db (checkpoint_and_truncate,
  // which never waits for readers), so the connection that closes the file last finds nothing left to copy.
  void flush(bool checkpoint_after = false);
  void drain();
  // The batch sync_fts recorded (meta fts.batch): what the file holds before this writer's first message, so a run
  // that only rolls back records it again rather than nothing. Call before the first add/commit.
  void set_synced_batch(int64_t batch);
  // CPU seconds of the thread so far (profiles).
  double cpu_seconds();

 private:
  enum class op { rows, commit, rollback, flush, flush_and_checkpoint };
  struct message {
    op what;
    std::vector<fts_row> rows;
    int64_t batch = 0;
  };
  void send(message m);
  void run();
  void handle(message& m);  // thread only, as are the members below up to thread_
  void apply(const fts_row& r, bool inverse);
  void begin_if_closed();   // BEGIN IMMEDIATE unless a transaction is open (after settling the WAL)
  void commit_open();       // commits the open transaction (or records a batch without rows) as pending_batch_
  void undo_uncommitted();
  void finish();
  // The transaction is committed after the batch that brings it to commit_rows_ rows: first_commit_rows, doubling
  // with each commit up to commit_rows. The last commit, at the end of a run, writes its whole segment while
  // everything else waits; growing from small keeps it at most about half of a small run's rows (SciFact, 6788 rows
  // in one commit: 35-60 ms of a 0.75 s run), at the cost of a few small segments at the start of a large one.
  static constexpr size_t first_commit_rows = 1024, commit_rows = 12000;
  size_t commit_rows_ = first_commit_rows;
  void check_error();  // under mu_
  std::unique_ptr<sql::db> db_;
  std::unique_ptr<wal_checkpointer> checkpointer_;  // evident-fts.db's WAL checkpoints, off this thread too
  std::unique_ptr<sql::stmt> ins_, del_;
  bool open_ = false;  // the thread's transaction
  bool failed_ = false;
  size_t rows_in_txn_ = 0;
  int64_t pending_batch_ = -1, stored_batch_ = -1;  // last batch evident.db committed / recorded in fts_state
  std::vector<std::vector<fts_row>> uncommitted_;   // rows of the batch evident.db has not committed yet
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<message> queue_;
  size_t queued_rows_ = 0;
  bool busy_ = false, stop_ = false;
  std::string error_;
  double cpu_ = 0;
};

}  // namespace evident::ingest
