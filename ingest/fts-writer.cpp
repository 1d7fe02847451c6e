#include "ingest/fts-writer.h"

#include <algorithm>
#include <iterator>

#include "engine/base/error.h"
#include "engine/base/log.h"
#include "ingest/index-writer.h"

namespace evident::ingest {

void create_fts_schema(sql::db& db, const std::string& sc) {
  {
    auto t = db.prepare("SELECT 1 FROM " + sc + "sqlite_master WHERE type = 'table' AND name = 'fts_state'");
    if (t.step()) return;
  }
  sql::transaction tx(db);
  {
    // Again inside the transaction: another connection may have created it since the check above.
    auto t = db.prepare("SELECT 1 FROM " + sc + "sqlite_master WHERE type = 'table' AND name = 'fts_state'");
    if (t.step()) return;
  }
  db.exec("CREATE VIRTUAL TABLE IF NOT EXISTS " + sc +
          "chunks_fts USING fts5(text, content='', tokenize='porter unicode61 remove_diacritics 2');"
          "INSERT INTO " + sc + "chunks_fts(chunks_fts, rank) VALUES ('hashsize', 67108864);"
          "CREATE TABLE " + sc + "fts_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);");
  tx.commit();
}

fts_sync_report sync_fts(sql::db& main, sql::db& fts, const std::string& sc) {
  fts_sync_report rep;
  int64_t main_batch = 0, main_id = 0;
  {
    auto q = main.prepare("SELECT key, value FROM meta WHERE key IN ('fts.batch', 'store.id')");
    while (q.step()) (q.col_text(0) == "fts.batch" ? main_batch : main_id) = std::stoll(q.col_text(1));
  }
  bool same_store = false;
  {
    auto q = fts.prepare("SELECT key, value FROM " + sc + "fts_state WHERE key IN ('batch', 'store_id')");
    bool batch_equal = false;
    while (q.step()) {
      if (q.col_text(0) == "batch") batch_equal = q.col_int(1) == main_batch;
      else same_store = q.col_int(1) == main_id;
    }
    if (batch_equal && same_store) return rep;  // in step: the common case, no scan
  }
  std::vector<int64_t> have, want, extra, missing;
  {
    auto q = fts.prepare("SELECT id FROM " + sc + "chunks_fts_docsize ORDER BY id");
    while (q.step()) have.push_back(q.col_int(0));
  }
  {
    auto q = main.prepare("SELECT id FROM chunks ORDER BY id");
    while (q.step()) want.push_back(q.col_int(0));
  }
  std::set_difference(have.begin(), have.end(), want.begin(), want.end(), std::back_inserter(extra));
  std::set_difference(want.begin(), want.end(), have.begin(), have.end(), std::back_inserter(missing));
  sql::transaction tx(fts);
  if (!same_store && !have.empty()) extra = have;  // another store's index (or one from before 0006): start again
  if (!extra.empty()) {  // entries of deleted chunks: their text is gone, so start again from `chunks`
    fts.exec("INSERT INTO " + sc + "chunks_fts(chunks_fts) VALUES ('delete-all')");
    missing = want;
    rep.rebuilt = true;
  }
  auto ins = fts.prepare("INSERT INTO " + sc + "chunks_fts(rowid, text) VALUES (?, ?)");
  if (missing.size() > 1000) {  // many: one scan of `chunks` in id order
    auto q = main.prepare("SELECT id, text FROM chunks ORDER BY id");
    size_t i = 0;
    while (i < missing.size() && q.step()) {
      const int64_t id = q.col_int(0);
      while (i < missing.size() && missing[i] < id) ++i;
      if (i == missing.size() || missing[i] != id) continue;
      ins.bind(1, id).bind_static(2, q.col_text_view(1)).run();
      ins.reset();
    }
  } else {
    auto q = main.prepare("SELECT text FROM chunks WHERE id = ?");
    for (int64_t id : missing) {
      q.bind(1, id);
      if (q.step()) {
        ins.bind(1, id).bind_static(2, q.col_text_view(0)).run();
        ins.reset();
      }
      q.reset();
    }
  }
  fts.prepare("INSERT INTO " + sc + "fts_state(key, value) VALUES ('batch', ?), ('store_id', ?) "
              "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
      .bind(1, main_batch)
      .bind(2, main_id)
      .run();
  tx.commit();
  rep.added = static_cast<int64_t>(missing.size());
  return rep;
}

fts_writer::fts_writer(const std::filesystem::path& file) {
  db_ = std::make_unique<sql::db>(file, true, false);
  db_->exec("PRAGMA wal_autocheckpoint=8192; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY");
  create_fts_schema(*db_, "");  // also sets the 64 MiB hashsize, which FTS5 keeps in the file
  checkpointer_ = std::make_unique<wal_checkpointer>(*db_, file);
  thread_ = std::thread([this] { run(); });
}

fts_writer::~fts_writer() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  ins_.reset();
  del_.reset();
  if (open_) {  // finish() failed
    try {
      db_->exec("ROLLBACK");
    } catch (...) {
    }
  }
  checkpointer_.reset();
}

void fts_writer::check_error() {
  if (!error_.empty())
    EV_THROW(io, "cannot write the full-text index: ", error_,
             " (evident.db is ahead of it; the next ingest indexes the missing chunks)");
}

void fts_writer::send(message m) {
  std::unique_lock<std::mutex> lk(mu_);
  // At most 4096 rows (about 6 MB of chunk text) in flight: what is queued here when the workers finish is indexed by
  // this thread alone, so a long queue only moves work to the end of the run.
  cv_.wait(lk, [&] { return queued_rows_ < 4096 || !error_.empty(); });
  check_error();
  queued_rows_ += m.rows.size();
  queue_.push_back(std::move(m));
  cv_.notify_all();
}

void fts_writer::add(std::vector<fts_row> rows) {
  if (!rows.empty()) send({op::rows, std::move(rows), 0});
}
void fts_writer::commit(int64_t batch) { send({op::commit, {}, batch}); }
void fts_writer::rollback() { send({op::rollback, {}, 0}); }

void fts_writer::flush(bool checkpoint_after) {
  send({checkpoint_after ? op::flush_and_checkpoint : op::flush, {}, 0});
}

void fts_writer::set_synced_batch(int64_t batch) {
  std::lock_guard<std::mutex> lk(mu_);  // hands the values to the FTS thread with its next message
  pending_batch_ = stored_batch_ = batch;
}

void fts_writer::drain() {
  flush();
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return (queue_.empty() && !busy_) || !error_.empty(); });
  check_error();
}

double fts_writer::cpu_seconds() {
  std::lock_guard<std::mutex> lk(mu_);
  return cpu_;
}

void fts_writer::run() {
  std::unique_lock<std::mutex> lk(mu_);
  while (true) {
    cv_.wait(lk, [&] { return !queue_.empty() || stop_; });
    if (queue_.empty()) {  // stopped, everything handled
      lk.unlock();
      finish();
      return;
    }
    message m = std::move(queue_.front());
    queue_.pop_front();
    queued_rows_ -= m.rows.size();
    busy_ = true;
    const bool failed = !error_.empty();  // after a failure, everything is left to the next sync_fts
    lk.unlock();
    std::string err;
    if (!failed) {
      try {
        handle(m);
      } catch (const std::exception& e) {
        err = e.what();
        failed_ = true;  // the open transaction is dropped: everything since the last commit is left to sync_fts
        if (open_) {
          try {
            db_->exec("ROLLBACK");
          } catch (...) {
          }
          open_ = false;
        }
      }
    }
    const double cpu = thread_cpu_seconds();
    lk.lock();
    if (!err.empty() && error_.empty()) error_ = err;
    cpu_ = cpu;
    busy_ = false;
    cv_.notify_all();
  }
}

void fts_writer::apply(const fts_row& r, bool inverse) {
  if (!ins_) {
    ins_ = std::make_unique<sql::stmt>(db_->prepare("INSERT INTO chunks_fts(rowid, text) VALUES (?, ?)"));
    del_ = std::make_unique<sql::stmt>(
        db_->prepare("INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', ?, ?)"));
  }
  sql::stmt& s = r.del != inverse ? *del_ : *ins_;
  s.bind(1, r.rowid).bind_static(2, r.text).run();
  s.reset();
}

void fts_writer::begin_if_closed() {
  if (open_) return;
  if (checkpointer_) checkpointer_->settle();
  db_->exec("BEGIN IMMEDIATE");
  open_ = true;
}

void fts_writer::commit_open() {
  if (!open_ && pending_batch_ == stored_batch_) return;
  begin_if_closed();
  db_->prepare("INSERT INTO fts_state(key, value) VALUES ('batch', ?) "
               "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
      .bind(1, pending_batch_)
      .run();
  db_->exec("COMMIT");
  open_ = false;
  stored_batch_ = pending_batch_;
  rows_in_txn_ = 0;
}

void fts_writer::undo_uncommitted() {
  // Entries of a batch evident.db rolled back: the exact inverse of each change, newest first (FTS5 then holds
  // what it held at the batch's start; savepoints are not an option: FTS5 flushes a segment at each one).
  for (auto m = uncommitted_.rbegin(); m != uncommitted_.rend(); ++m)
    for (auto r = m->rbegin(); r != m->rend(); ++r) apply(*r, true);
  uncommitted_.clear();
}

void fts_writer::handle(message& m) {
  // FTS5 keeps pending terms in memory (hashsize) and writes them as one segment at COMMIT (or when the hash is
  // full); single-row statements on this connection never open the statement savepoint that would flush early. So
  // the transaction spans several of the writer's batches (commit_rows), and each COMMIT records the last batch
  // that evident.db committed: fewer, larger segments cost less to write and to merge (120 MB of chunks in Python:
  // 8.1-9.6 s of FTS CPU committing every 2800 rows with a 16 MiB hash, 6.8-6.9 s every 11200 rows with 64 MiB).
  switch (m.what) {
    case op::rows:
      begin_if_closed();
      for (const auto& r : m.rows) apply(r, false);
      rows_in_txn_ += m.rows.size();
      uncommitted_.push_back(std::move(m.rows));
      return;
    case op::commit:  // evident.db committed batch m.batch: its entries may be committed from now on
      uncommitted_.clear();
      pending_batch_ = m.batch;
      if (rows_in_txn_ >= commit_rows_) {
        commit_open();
        commit_rows_ = std::min(2 * commit_rows_, commit_rows);
      }
      return;
    case op::rollback:
      undo_uncommitted();
      return;
    case op::flush:
    case op::flush_and_checkpoint:
      if (uncommitted_.empty()) commit_open();
      if (m.what == op::flush_and_checkpoint && !open_) {  // the run's last commit is done
        checkpointer_.reset();
        checkpoint_and_truncate(*db_, "main");
      }
      return;
  }
}

void fts_writer::finish() {
  // At stop: a batch evident.db did not commit is undone, the rest committed.
  if (failed_) return;
  try {
    undo_uncommitted();
    commit_open();
  } catch (const std::exception& e) {
    log::warn("cannot commit the full-text index: ", e.what(), " (the next ingest indexes the missing chunks)");
  }
}

}  // namespace evident::ingest
