#include "ingest/fts-writer.h"

#include <algorithm>
#include <iterator>

#include "engine/base/error.h"
#include "ingest/index-writer.h"

namespace evident::ingest {

void create_fts_schema(sql::db& db, const std::string& sc) {
  {
    auto t = db.prepare("SELECT 1 FROM " + sc + "sqlite_master WHERE type = 'table' AND name = 'fts_state'");
    if (t.step()) return;
  }
  sql::transaction tx(db);
  db.exec("CREATE VIRTUAL TABLE IF NOT EXISTS " + sc +
          "chunks_fts USING fts5(text, content='', tokenize='porter unicode61 remove_diacritics 2');"
          "INSERT INTO " + sc + "chunks_fts(chunks_fts, rank) VALUES ('hashsize', 16777216);"
          "CREATE TABLE " + sc + "fts_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);");
  tx.commit();
}

fts_sync_report sync_fts(sql::db& main, sql::db& fts, const std::string& sc) {
  fts_sync_report rep;
  int64_t main_batch = 0;
  {
    auto q = main.prepare("SELECT value FROM meta WHERE key = 'fts.batch'");
    if (q.step()) main_batch = std::stoll(q.col_text(0));
  }
  {
    auto q = fts.prepare("SELECT value FROM " + sc + "fts_state WHERE key = 'batch'");
    if (q.step() && q.col_int(0) == main_batch) return rep;  // in step: the common case, no scan
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
  fts.prepare("INSERT INTO " + sc + "fts_state(key, value) VALUES ('batch', ?) "
              "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
      .bind(1, main_batch)
      .run();
  tx.commit();
  rep.added = static_cast<int64_t>(missing.size());
  return rep;
}

fts_writer::fts_writer(const std::filesystem::path& file) {
  db_ = std::make_unique<sql::db>(file, true, false);
  db_->exec("PRAGMA wal_autocheckpoint=8192; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY");
  create_fts_schema(*db_, "");
  checkpointer_ = std::make_unique<wal_checkpointer>(*db_, file, 8192, 16384, 65536, 2048);
  thread_ = std::thread([this] { run(); });
}

fts_writer::~fts_writer() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  checkpointer_.reset();
  ins_.reset();
  del_.reset();
  if (open_) {
    try {
      db_->exec("ROLLBACK");
    } catch (...) {
    }
  }
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

void fts_writer::drain() {
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
    if (queue_.empty()) return;  // stopped, everything handled
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

void fts_writer::handle(message& m) {
  // One transaction per batch: FTS5 keeps the batch's terms in memory (hashsize) and writes them as one segment at
  // COMMIT. Single-row statements on this connection never open a statement savepoint, which would flush early.
  if (m.what == op::rollback) {
    if (open_) {
      open_ = false;
      db_->exec("ROLLBACK");
    }
    return;
  }
  if (!open_) {
    checkpointer_->settle();
    db_->exec("BEGIN IMMEDIATE");
    open_ = true;
  }
  if (m.what == op::rows) {
    if (!ins_) {
      ins_ = std::make_unique<sql::stmt>(db_->prepare("INSERT INTO chunks_fts(rowid, text) VALUES (?, ?)"));
      del_ = std::make_unique<sql::stmt>(
          db_->prepare("INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', ?, ?)"));
    }
    for (const auto& r : m.rows) {
      sql::stmt& s = r.del ? *del_ : *ins_;
      s.bind(1, r.rowid).bind_static(2, r.text).run();
      s.reset();
    }
    return;
  }
  db_->prepare("INSERT INTO fts_state(key, value) VALUES ('batch', ?) "
               "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
      .bind(1, m.batch)
      .run();
  db_->exec("COMMIT");
  open_ = false;
}

}  // namespace evident::ingest
