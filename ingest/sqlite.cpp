#include "ingest/sqlite.h"

namespace evident::sql {
namespace {
std::string head(std::string_view sql) {
  std::string s(sql.substr(0, 80));
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s;
}
}  // namespace

db::db(const std::filesystem::path& file, bool create, bool read_only) {
  int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0));
  flags |= SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(file.c_str(), &h_, flags, nullptr) != SQLITE_OK) {
    std::string msg = h_ ? sqlite3_errmsg(h_) : "out of memory";
    sqlite3_close(h_);
    h_ = nullptr;
    EV_THROW(io, "cannot open database ", file.string(), ": ", msg);
  }
  sqlite3_busy_timeout(h_, busy_timeout_ms);
  sqlite3_extended_result_codes(h_, 1);
  if (!read_only) exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
  exec("PRAGMA foreign_keys=ON;");
}

db::~db() {
  if (h_) sqlite3_close_v2(h_);
}

void db::exec(std::string_view sql) {
  char* err = nullptr;
  std::string s(sql);
  if (sqlite3_exec(h_, s.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(h_);
    sqlite3_free(err);
    EV_THROW(io, "SQL failed (", head(sql), "): ", msg);
  }
}

stmt db::prepare(std::string_view sql) { return stmt(h_, sql); }

transaction::transaction(db& d, begin_mode mode) : d_(d) {
  d_.exec(mode == begin_mode::immediate ? "BEGIN IMMEDIATE" : "BEGIN");
}
transaction::~transaction() {
  if (!done_) {
    try {
      d_.exec("ROLLBACK");
    } catch (...) {
    }
  }
}
void transaction::commit() {
  d_.exec("COMMIT");
  done_ = true;
}

stmt::stmt(sqlite3* db, std::string_view sql) : sql_(sql) {
  if (sqlite3_prepare_v2(db, sql_.data(), static_cast<int>(sql_.size()), &h_, nullptr) != SQLITE_OK)
    EV_THROW(internal, "SQL prepare failed (", head(sql), "): ", sqlite3_errmsg(db));
}
stmt::~stmt() {
  if (h_) sqlite3_finalize(h_);
}

#define EV_SQL_BIND(call)                                                                           \
  do {                                                                                              \
    if ((call) != SQLITE_OK)                                                                        \
      EV_THROW(internal, "SQL bind ", i, " failed (", head(sql_), "): ", sqlite3_errmsg(sqlite3_db_handle(h_))); \
  } while (0)

stmt& stmt::bind(int i, int64_t v) { EV_SQL_BIND(sqlite3_bind_int64(h_, i, v)); return *this; }
stmt& stmt::bind(int i, double v) { EV_SQL_BIND(sqlite3_bind_double(h_, i, v)); return *this; }
stmt& stmt::bind(int i, std::string_view v) {
  EV_SQL_BIND(sqlite3_bind_text(h_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  return *this;
}
stmt& stmt::bind_static(int i, std::string_view v) {
  EV_SQL_BIND(sqlite3_bind_text(h_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC));
  return *this;
}
stmt& stmt::bind_blob(int i, const void* data, size_t bytes) {
  EV_SQL_BIND(sqlite3_bind_blob(h_, i, data, static_cast<int>(bytes), SQLITE_TRANSIENT));
  return *this;
}
stmt& stmt::bind_null(int i) { EV_SQL_BIND(sqlite3_bind_null(h_, i)); return *this; }

bool stmt::step() {
  int rc = sqlite3_step(h_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  sqlite3* d = sqlite3_db_handle(h_);
  int ext = sqlite3_extended_errcode(d);
  std::string msg = sqlite3_errmsg(d);
  sqlite3_reset(h_);
  if ((ext & 0xff) == SQLITE_CONSTRAINT) EV_THROW(invalid_input, "SQL constraint (", head(sql_), "): ", msg);
  if ((ext & 0xff) == SQLITE_CORRUPT || (ext & 0xff) == SQLITE_NOTADB) EV_THROW(corrupt, "database corrupt: ", msg);
  EV_THROW(io, "SQL step failed (", head(sql_), "): ", msg);
}

void stmt::reset() {
  sqlite3_reset(h_);
  sqlite3_clear_bindings(h_);
}

std::string stmt::col_text(int i) const { return std::string(col_text_view(i)); }
std::string_view stmt::col_text_view(int i) const {
  auto p = reinterpret_cast<const char*>(sqlite3_column_text(h_, i));
  if (!p) return {};
  return std::string_view(p, static_cast<size_t>(sqlite3_column_bytes(h_, i)));
}

}  // namespace evident::sql
