#include "ingest/store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>

#include "ingest/fts-writer.h"
#include "ingest/hashed-embedder.h"
#include "ingest/migrations.h"  // generated: evident::ingest::migrations[] = {{version, name, sql}, ...}

namespace evident::ingest {

namespace {
constexpr int latest_version() { return std::end(migrations)[-1].version; }

sql::db open_db(const std::filesystem::path& dir, open_mode mode) {
  if (mode == open_mode::read_only) {
    EV_THROW_IF_NOT_KIND(std::filesystem::exists(dir / store::db_file), not_found, "no store at ", dir.string(),
                         " (expected ", store::db_file, "; run `evident ingest DIR --store ", dir.string(), "` first)");
  } else {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    EV_THROW_IF_NOT_KIND(!ec, io, "cannot create store directory ", dir.string(), ": ", ec.message());
  }
  return sql::db(dir / store::db_file, mode == open_mode::read_write, mode == open_mode::read_only);
}

document_row read_document(sql::stmt& s, bool with_text) {
  document_row d;
  d.id = s.col_int(0);
  d.collection_id = s.col_int(1);
  d.path = s.col_text(2);
  d.source_root = s.col_text(3);
  d.sha256 = s.col_text(4);
  d.size = s.col_int(5);
  d.mtime = s.col_int(6);
  d.format = s.col_text(7);
  d.title = s.col_text(8);
  d.pages = static_cast<int>(s.col_int(9));
  for (auto& v : nlohmann::json::parse(s.col_text_view(10))) d.page_starts.push_back(v.get<int64_t>());
  for (auto& h : nlohmann::json::parse(s.col_text_view(11)))
    d.headings.push_back({h.value("level", 1), h.value("title", ""), h.value("char_start", int64_t{0})});
  d.char_count = s.col_int(12);
  d.ingested_at = s.col_int(13);
  if (with_text) d.text = s.col_text(14);
  return d;
}

constexpr const char* document_columns =
    "id, collection_id, path, source_root, sha256, size, mtime, format, title, pages, page_starts, headings, "
    "char_count, ingested_at";

chunk_row read_chunk(sql::stmt& s) {
  chunk_row c;
  c.id = s.col_int(0);
  c.document_id = s.col_int(1);
  c.ordinal = static_cast<int>(s.col_int(2));
  c.char_start = s.col_int(3);
  c.char_end = s.col_int(4);
  c.byte_start = s.col_int(5);
  c.byte_end = s.col_int(6);
  c.page = static_cast<int>(s.col_int(7));
  c.heading_path = s.col_text(8);
  c.token_count = static_cast<int>(s.col_int(9));
  c.text = s.col_text(10);
  return c;
}
constexpr const char* chunk_columns =
    "id, document_id, ordinal, char_start, char_end, byte_start, byte_end, page, heading_path, token_count, text";
}  // namespace

store::store(const std::filesystem::path& dir, open_mode mode)
    : dir_(dir), db_(open_db(dir, mode)), write_(mode == open_mode::read_write) {
  if (write_) {
    migrate();
  } else {
    EV_THROW_IF_NOT_KIND(schema_version() == latest_version(), corrupt, "store ", dir.string(),
                         " has schema version ", schema_version(), ", this build expects ", latest_version(),
                         " (open it read-write once to migrate)");
    EV_THROW_IF_NOT_KIND(std::filesystem::exists(fts_path()), corrupt, "store ", dir.string(),
                         " has no full-text index ", fts_path().string(),
                         " (open it read-write once, e.g. `evident ingest`, to rebuild it)");
  }
  set_fts_attached(true);
  if (write_) {
    // A never-synced FTS file (just created, e.g. after the upgrade to version 5) or one that lags evident.db (an
    // ingest killed before its FTS thread committed) is repaired now unless an ingest is running (it syncs the file
    // itself, under the lock). In step, sync_fts compares two counters and returns.
    const int fd = lock_writer(dir_, false);
    if (fd < 0) return;
    struct unlock {
      int fd;
      ~unlock() { ::close(fd); }
    } release{fd};
    sync_fts(db_, db_, "fts.");
  } else {
    auto q = db_.prepare("SELECT name FROM fts.sqlite_master WHERE type = 'table' AND name = 'fts_state'");
    bool synced = q.step();
    if (synced) synced = db_.prepare("SELECT 1 FROM fts.fts_state WHERE key = 'batch'").step();
    EV_THROW_IF_NOT_KIND(synced, corrupt, "store ", dir_.string(), ": the full-text index ", fts_path().string(),
                         " was never filled (open it read-write once, e.g. `evident ingest`, to rebuild it)");
  }
}

int store::lock_writer(const std::filesystem::path& dir, bool wait) {
  const auto path = dir / lock_file;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  EV_THROW_IF_NOT_KIND(fd >= 0, io, "cannot open ", path.string(), ": ", std::strerror(errno));
  if (::flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void store::set_fts_attached(bool attached) {
  if (attached == fts_attached_) return;
  if (!attached) {
    if (write_) db_.exec("DROP TRIGGER IF EXISTS temp.chunks_fts_ai; DROP TRIGGER IF EXISTS temp.chunks_fts_ad");
    db_.exec("DETACH DATABASE fts");
    fts_attached_ = false;
    return;
  }
  try {
    db_.prepare("ATTACH DATABASE ? AS fts").bind(1, fts_path().string()).run();  // read-only when the store is
  } catch (const error& e) {
    EV_THROW(io, "cannot open the full-text index of store ", dir_.string(), ": ", e.what());
  }
  fts_attached_ = true;
  if (!write_) return;
  db_.exec("PRAGMA fts.journal_mode=WAL; PRAGMA fts.synchronous=NORMAL");
  create_fts_schema(db_, "fts.");
  // Plain SQL writes of chunks (everyone but the ingest writer) keep the index in sync, as the triggers of migrations
  // 0001/0003 did; TEMP, because a trigger in evident.db cannot write another database file.
  db_.exec(
      "CREATE TEMP TRIGGER IF NOT EXISTS chunks_fts_ai AFTER INSERT ON main.chunks BEGIN"
      "  INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END;"
      "CREATE TEMP TRIGGER IF NOT EXISTS chunks_fts_ad AFTER DELETE ON main.chunks BEGIN"
      "  INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END;");
}

int store::schema_version() {
  auto s = db_.prepare("PRAGMA user_version");
  s.step();
  return static_cast<int>(s.col_int(0));
}

void store::migrate() {
  int have = schema_version();
  EV_THROW_IF_NOT_KIND(have <= latest_version(), corrupt, "store ", dir_.string(), " has schema version ",
                       have, ", newer than this build knows (", latest_version(), ")");
  for (const auto& m : migrations) {
    if (m.version <= have) continue;
    sql::transaction tx(db_);
    db_.exec(m.sql);
    if (m.version == 4) migrate_df_rows_to_pages(db_);  // 0004-df-pages.sql: the rows become pages (C++)
    db_.exec("PRAGMA user_version = " + std::to_string(m.version));
    tx.commit();
  }
}

std::optional<int64_t> store::collection_id(const std::string& name, bool create) {
  EV_THROW_IF_NOT_MSG(!name.empty() && name.size() <= 128, "collection name must be 1-128 bytes, got '", name, "'");
  auto s = db_.prepare("SELECT id FROM collections WHERE name = ?");
  s.bind(1, name);
  if (s.step()) return s.col_int(0);
  if (!create) return std::nullopt;
  auto ins = db_.prepare("INSERT INTO collections(name, created_at) VALUES (?, strftime('%s','now'))");
  ins.bind(1, name).run();
  return db_.last_insert_rowid();
}

std::vector<store::collection_info> store::collections() {
  std::vector<collection_info> out;
  auto s = db_.prepare(
      "SELECT c.id, c.name, (SELECT count(*) FROM documents d WHERE d.collection_id = c.id), "
      "(SELECT count(*) FROM chunks k JOIN documents d ON k.document_id = d.id WHERE d.collection_id = c.id) "
      "FROM collections c ORDER BY c.name");
  while (s.step()) out.push_back({s.col_int(0), s.col_text(1), s.col_int(2), s.col_int(3)});
  return out;
}

std::optional<document_row> store::document(int64_t id, bool with_text) {
  auto s = db_.prepare(std::string("SELECT ") + document_columns + ", text FROM documents WHERE id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_document(s, with_text);
}

std::vector<document_row> store::documents(std::optional<int64_t> collection_id) {
  std::string q = std::string("SELECT ") + document_columns + " FROM documents";
  if (collection_id) q += " WHERE collection_id = ?";
  q += " ORDER BY path";
  auto s = db_.prepare(q);
  if (collection_id) s.bind(1, *collection_id);
  std::vector<document_row> out;
  while (s.step()) out.push_back(read_document(s, false));
  return out;
}

std::optional<chunk_row> store::chunk(int64_t id) {
  auto s = db_.prepare(std::string("SELECT ") + chunk_columns + " FROM chunks WHERE id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_chunk(s);
}

std::vector<chunk_row> store::chunks_of(int64_t document_id, int from_ordinal, int to_ordinal) {
  auto s = db_.prepare(std::string("SELECT ") + chunk_columns +
                       " FROM chunks WHERE document_id = ? AND ordinal BETWEEN ? AND ? ORDER BY ordinal");
  s.bind(1, document_id).bind(2, from_ordinal).bind(3, to_ordinal);
  std::vector<chunk_row> out;
  while (s.step()) out.push_back(read_chunk(s));
  return out;
}

int64_t store::chunk_count() {
  auto s = db_.prepare("SELECT count(*) FROM chunks");
  s.step();
  return s.col_int(0);
}

int64_t store::document_count() {
  auto s = db_.prepare("SELECT count(*) FROM documents");
  s.step();
  return s.col_int(0);
}

std::optional<std::string> store::meta(const std::string& key) {
  auto s = db_.prepare("SELECT value FROM meta WHERE key = ?");
  s.bind(1, key);
  if (!s.step()) return std::nullopt;
  return s.col_text(0);
}

void store::set_meta(const std::string& key, const std::string& value) {
  db_.prepare("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
      .bind(1, key)
      .bind(2, value)
      .run();
}

int store::page_of(const std::vector<int64_t>& page_starts, int64_t char_pos) {
  if (page_starts.empty()) return 1;
  auto it = std::upper_bound(page_starts.begin(), page_starts.end(), char_pos);
  return static_cast<int>(std::max<std::ptrdiff_t>(1, it - page_starts.begin()));
}

}  // namespace evident::ingest
