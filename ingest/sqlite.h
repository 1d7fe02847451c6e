// Thin RAII wrappers over the SQLite C API, shared by every folder that reads or writes the store.
// Errors throw evident::error naming the statement (first 80 chars) and SQLite's message.
// Thread-safety: one `db` per thread (SQLite connections are not shared across threads here); a `stmt` belongs to
// the `db` that prepared it and must not outlive it.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "engine/base/error.h"

namespace evident::sql {

class stmt;

class db {
 public:
  // Opens (creating when `create`) the database file; sets WAL, foreign keys on, busy timeout 10 s.
  explicit db(const std::filesystem::path& file, bool create = true, bool read_only = false);
  ~db();
  db(const db&) = delete;
  db& operator=(const db&) = delete;
  db(db&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }

  // Runs one or more statements without results (schema, pragmas, BEGIN/COMMIT).
  void exec(std::string_view sql);
  stmt prepare(std::string_view sql);
  int64_t last_insert_rowid() const { return sqlite3_last_insert_rowid(h_); }
  int changes() const { return sqlite3_changes(h_); }
  sqlite3* handle() const { return h_; }

 private:
  static constexpr int busy_timeout_ms = 10000;  // every connection waits this long for a lock
  sqlite3* h_ = nullptr;
};

// RAII transaction: BEGIN IMMEDIATE (or BEGIN, deferred) on construction, ROLLBACK on destruction unless commit() was
// called. IMMEDIATE takes the write lock of every attached database file at once; a deferred transaction whose first
// statement writes takes only the locks of the files it writes (e.g. evident.db, not the attached FTS file that an
// ingest's FTS thread may be holding).
enum class begin_mode { immediate, deferred };
class transaction {
 public:
  explicit transaction(db& d, begin_mode mode = begin_mode::immediate);
  ~transaction();
  void commit();

 private:
  db& d_;
  bool done_ = false;
};

class stmt {
 public:
  stmt(sqlite3* db, std::string_view sql);
  ~stmt();
  stmt(const stmt&) = delete;
  stmt& operator=(const stmt&) = delete;
  stmt(stmt&& o) noexcept : h_(o.h_), sql_(std::move(o.sql_)) { o.h_ = nullptr; }

  // Bind by 1-based index. Strings are copied (SQLITE_TRANSIENT).
  stmt& bind(int i, int64_t v);
  stmt& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  stmt& bind(int i, double v);
  stmt& bind(int i, std::string_view v);
  stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  // Binds text without copying it: `v` must stay valid and unchanged until the statement is stepped to completion
  // and reset (used for large texts on hot write paths).
  stmt& bind_static(int i, std::string_view v);
  stmt& bind_blob(int i, const void* data, size_t bytes);
  stmt& bind_null(int i);

  // Advances; returns true while a row is available, false when done. Throws on error.
  bool step();
  // Runs to completion (for statements without results).
  void run() { while (step()) {} }
  void reset();  // reset + clear bindings, for re-use

  int64_t col_int(int i) const { return sqlite3_column_int64(h_, i); }
  double col_double(int i) const { return sqlite3_column_double(h_, i); }
  std::string col_text(int i) const;
  std::string_view col_text_view(int i) const;  // valid until the next step/reset
  bool col_null(int i) const { return sqlite3_column_type(h_, i) == SQLITE_NULL; }
  const void* col_blob(int i) const { return sqlite3_column_blob(h_, i); }
  int col_bytes(int i) const { return sqlite3_column_bytes(h_, i); }

 private:
  sqlite3_stmt* h_ = nullptr;
  std::string sql_;
};

}  // namespace evident::sql
