// ingest::wal_checkpointer: moves SQLite's WAL checkpoints off the ingest writer thread.
//
// With the default auto-checkpoint, the connection that commits copies the WAL back into the database file itself,
// on its own thread: for a 200 MB ingest that was about a fifth of the writer thread's CPU (write() of every page a
// second time). While a wal_checkpointer is alive it replaces the writer connection's auto-checkpoint: after a commit
// that leaves `request_frames` more WAL frames than the last request, the connection's WAL hook wakes a background
// thread that runs a PASSIVE checkpoint through a second connection, which SQLite lets run alongside the writer's
// next transaction. SQLite only rewinds the WAL file when a write transaction BEGINs after a complete checkpoint, and
// the writer begins its next batch right after each commit, so the WAL grows; once it holds `restart_frames`, settle()
// (called by the writer before BEGIN) asks for a checkpoint of the latest commits and waits for it (the older frames
// are already copied by then), and the next commit rewinds the WAL.
// When the WAL still grows past `inline_frames` (a reader holding an old snapshot, or the background thread starved
// of CPU), the committing thread checkpoints inline, as SQLite would.
// Checkpoints are SQLite's own crash-safe operation; nothing here changes what a crash can leave.
//
// Thread-safety: construct and destroy on the thread that owns `writer`; the hook runs on that thread, the
// checkpoints on the background thread (its own connection). The destructor restores `wal_autocheckpoint`.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>

#include "ingest/sqlite.h"

namespace evident::ingest {

class wal_checkpointer {
 public:
  // `file`: the database file of `writer`. When the second connection cannot be opened, the writer keeps its
  // auto-checkpoint (`restore_pages`) and this object does nothing.
  // `restart_frames` / `inline_frames` / `request_frames`: see above (tests use small values). The defaults are the
  // ingest writers' (index_writer, fts_writer): requests every 512 frames (2 MiB), about every batch, so few frames
  // are left for the run's final checkpoint to copy and sync. Measured together with rewinding the WAL at 4096
  // frames (SciFact, 10 alternating rounds: 0.73 -> 0.70 s median wall against 2048 / 16384); the rewind was then
  // measured alone against 16384: SciFact within noise, 200 MB about 6% slower (the writer waits for each rewind),
  // so it was not kept. The request interval alone was not measured separately. `restore_pages` 8192 (32 MiB) is the
  // auto-checkpoint the writers keep afterwards.
  wal_checkpointer(sql::db& writer, const std::filesystem::path& file, int restore_pages = 8192,
                   int restart_frames = 16384, int inline_frames = 65536, int request_frames = 512);
  ~wal_checkpointer();
  wal_checkpointer(const wal_checkpointer&) = delete;
  wal_checkpointer& operator=(const wal_checkpointer&) = delete;

  // Before BEGIN of a write transaction on `writer`: when the WAL holds restart_frames or more, waits until the
  // background checkpoint of the latest commit has finished.
  void settle();


 private:
  static int on_commit(void* self, sqlite3* db, const char* schema, int frames);
  void ask(int frames);  // writer thread: wakes the background thread for a checkpoint
  void run();
  sql::db& writer_;
  int restore_pages_;
  int restart_frames_;  // default 16384: 64 MiB of WAL at 4 KiB pages
  int inline_frames_;   // default 65536: 256 MiB
  int request_frames_;  // default 512: 2 MiB
  int asked_at_ = 0;    // WAL frames at the last request (writer thread only)
  std::unique_ptr<sql::db> conn_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;       // wakes the background thread
  std::condition_variable done_cv_;  // wakes settle()
  uint64_t requested_ = 0;  // commits that asked for a checkpoint
  uint64_t done_ = 0;       // the `requested_` value the last finished checkpoint covered
  int frames_ = 0;          // WAL frames after the last commit (writer thread only)
  bool stop_ = false;
};

// The end of a writer's run, on `db` (no statement of it in progress; no wal_checkpointer alive on it): copies the
// WAL of `schema` ("main", or an attached name) into the database file and truncates the WAL to zero bytes, without
// waiting for anyone: when a reader holds an older snapshot it copies what it can and leaves the rest, as a PASSIVE
// checkpoint would. Why: a closing connection does the same copy, and then deletes the WAL file, which frees its
// blocks (on this machine's ext4 with `discard`, 35 ms for SciFact's 24 MB WAL); here it runs beside the writer's
// other end-of-run work instead of after it. Best effort: failures are ignored (the closing connection copies).
void checkpoint_and_truncate(sql::db& db, const char* schema);

}  // namespace evident::ingest
