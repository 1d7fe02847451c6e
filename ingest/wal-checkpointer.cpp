#include "ingest/wal-checkpointer.h"

#include <string>

#include "engine/base/log.h"

namespace evident::ingest {

wal_checkpointer::wal_checkpointer(sql::db& writer, const std::filesystem::path& file, int restore_pages,
                                   int restart_frames, int inline_frames, int request_frames)
    : writer_(writer),
      restore_pages_(restore_pages),
      restart_frames_(restart_frames),
      inline_frames_(inline_frames),
      request_frames_(request_frames) {
  try {
    conn_ = std::make_unique<sql::db>(file, false, false);
  } catch (const std::exception& e) {
    log::warn("WAL checkpoints stay on the writer thread: ", e.what());
    return;
  }
  thread_ = std::thread([this] { run(); });
  sqlite3_wal_hook(writer_.handle(), &wal_checkpointer::on_commit, this);  // replaces the auto-checkpoint hook
}

wal_checkpointer::~wal_checkpointer() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  done_cv_.notify_all();
  thread_.join();
  conn_.reset();
  try {  // puts SQLite's own hook back
    writer_.exec("PRAGMA wal_autocheckpoint=" + std::to_string(restore_pages_));
  } catch (...) {
  }
}

int wal_checkpointer::on_commit(void* self, sqlite3* db, const char* schema, int frames) {
  auto* w = static_cast<wal_checkpointer*>(self);
  if (frames < w->frames_) w->asked_at_ = 0;  // the WAL was rewound
  w->frames_ = frames;
  if (frames >= w->inline_frames_) {
    sqlite3_wal_checkpoint_v2(db, schema, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    return SQLITE_OK;
  }
  // Not after every commit: each checkpoint fsyncs the WAL and the database file, and a loaded disk makes those
  // slow (SQLite's own auto-checkpoint ran every 8192 frames here too).
  if (frames - w->asked_at_ >= w->request_frames_) w->ask(frames);
  return SQLITE_OK;
}

void wal_checkpointer::ask(int frames) {
  asked_at_ = frames;
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++requested_;
  }
  cv_.notify_one();
}

void wal_checkpointer::settle() {
  if (!thread_.joinable() || frames_ < restart_frames_) return;
  if (asked_at_ < frames_) ask(frames_);  // the latest commits too: the WAL can only be rewound when all is copied
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait(lk, [&] { return done_ >= requested_ || stop_; });
}

void wal_checkpointer::run() {
  std::unique_lock<std::mutex> lk(mu_);
  while (true) {
    cv_.wait(lk, [&] { return requested_ > done_ || stop_; });
    if (stop_) return;
    const uint64_t covers = requested_;
    lk.unlock();
    // SQLITE_BUSY and friends are harmless here: the next commit asks again.
    sqlite3_wal_checkpoint_v2(conn_->handle(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    lk.lock();
    done_ = covers;
    done_cv_.notify_all();
  }
}

void checkpoint_and_truncate(sql::db& db, const char* schema) {
  sqlite3* h = db.handle();
  int timeout_ms = 0;  // the connection's own busy timeout, restored below
  {
    auto q = db.prepare("PRAGMA busy_timeout");
    if (q.step()) timeout_ms = static_cast<int>(q.col_int(0));
  }
  sqlite3_busy_timeout(h, 0);  // TRUNCATE would otherwise wait (busy handler) for readers of older snapshots
  // When it cannot have the locks it needs, SQLite goes on as a PASSIVE checkpoint and returns SQLITE_BUSY.
  sqlite3_wal_checkpoint_v2(h, schema, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  sqlite3_busy_timeout(h, timeout_ms);
}

}  // namespace evident::ingest
