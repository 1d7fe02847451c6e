#include "ingest/index-writer.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <chrono>
#include <cstring>
#include <ctime>
#include <future>

#include "engine/base/error.h"
#include "engine/base/log.h"
#include "ingest/store.h"

namespace evident::ingest {

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

namespace {
int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}
}  // namespace

std::string page_starts_json(const document& d) { return nlohmann::json(d.page_starts).dump(); }

std::string headings_json(const document& d) {
  nlohmann::json hs = nlohmann::json::array();
  for (const auto& h : d.headings) hs.push_back({{"level", h.level}, {"title", h.title}, {"char_start", h.char_start}});
  return hs.dump();
}

void index_writer::undo_new_document(int64_t doc_id) {
  // Without a savepoint: a failed statement has undone its own changes; delete what the earlier ones wrote.
  if (!batch_open_) return;  // a failed COMMIT: SQLite has ended the transaction
  pending_removals_.clear();
  pending_df_.clear();
  fts_.erase(fts_.begin() + static_cast<std::ptrdiff_t>(fts_mark_), fts_.end());
  try {
    if (doc_id >= 0) {
      stmt(1, "DELETE FROM chunks WHERE document_id = ?").bind(1, doc_id).run();  // the statements of drop_chunks
      stmt(7, "DELETE FROM documents WHERE id = ?").bind(1, doc_id).run();        // and remove
    }
  } catch (const std::exception& e) {
    abort_batch();
    EV_THROW(io, "cannot undo a failed document in ", s_.dir().string(), " (batch rolled back): ", e.what());
  }
}

index_writer::index_writer(store& s, const ingest_options& opt) : s_(s), opt_(opt) {
  lock_fd_ = store::lock_writer(s.dir(), opt.wait_for_lock);
  EV_THROW_IF_NOT_KIND(lock_fd_ >= 0, resource, "store ", s.dir().string(), " is being written by another ingest (",
                       (s.dir() / store::lock_file).string(), ")");
  try {
    counter_ = make_token_counter(opt.tokenizer_path);
    // Embedder: recorded on first use, checked afterwards.
    auto name = s.meta("embedder.name");
    auto dim_s = s.meta("embedder.dim");
    int dim = dim_s ? std::stoi(*dim_s) : hashed_tfidf_embedder::default_dim;
    EV_THROW_IF_NOT_KIND(!name || *name == hashed_tfidf_embedder::id, invalid_input, "store ", s.dir().string(),
                         " uses embedder '", name.value_or(""), "', this build writes '", hashed_tfidf_embedder::id, "'");
    if (!name) {
      sql::transaction tx(s.db());
      s.set_meta("embedder.name", hashed_tfidf_embedder::id);
      s.set_meta("embedder.dim", std::to_string(dim));
      tx.commit();
    }
    // Fewer, larger WAL checkpoints while writing (each one fsyncs): 32 MiB of WAL at 4 KiB pages, the setting the
    // connection keeps afterwards; while this writer lives, checkpoints run on a background thread.
    s.db().exec("PRAGMA wal_autocheckpoint=8192; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY");
    // Background checkpoints (wal-checkpointer.h has the defaults): the frames left at the end are copied by the final
    // checkpoint() (with requests every 8192 frames, SciFact's whole WAL was left to the closing connection).
    checkpointer_ = std::make_unique<wal_checkpointer>(s.db(), s.dir() / store::db_file);
    // The FTS file: detached from this connection while the writer lives (fts-writer.h), synced with `chunks`, then
    // written by the FTS thread.
    s.set_fts_attached(false);
    fts_writer_ = std::make_unique<fts_writer>(s.fts_path());
    const fts_sync_report fr = sync_fts(s.db(), fts_writer_->db(), "");
    if (fr.changed())
      log::warn("repaired the full-text index of ", s.dir().string(), ": ", fr.added, " chunks indexed",
                fr.rebuilt ? " (rebuilt: it held deleted chunks)" : "");
    if (auto b = s.meta("fts.batch")) fts_batch_ = std::stoll(*b);
    fts_writer_->set_synced_batch(fts_batch_);
    embedder_ = std::make_unique<hashed_tfidf_embedder>(dim);
    df_n_ = load_df(s, df_);
    df_saved_ = df_;
    if (df_n_ != s.chunk_count() || s.meta("embedder.df_batch").value_or("0") != std::to_string(fts_batch_))
      rebuild_df();
    embedder_->set_df(df_, df_n_);

    vector_index::options vo;
    vo.for_write = true;
    vectors_ = vector_index::open(s, *embedder_, vo, &repair_);
    if (repair_.changed())
      log::warn("repaired ", s.vectors_path().string(), ": ", repair_.added, " vectors re-embedded, ",
                repair_.removed, " stale removed", repair_.rebuilt ? " (rebuilt)" : "");

    auto next = s.meta("ingest.next_chunk_id");
    auto q = s.db().prepare("SELECT coalesce(max(id), 0) + 1 FROM chunks");
    q.step();
    next_chunk_id_ = std::max<int64_t>(next ? std::stoll(*next) : 1, q.col_int(0));
  } catch (...) {
    fts_writer_.reset();
    try {
      s_.set_fts_attached(true);
    } catch (...) {
    }
    ::close(lock_fd_);
    throw;
  }
}

index_writer::~index_writer() {
  checkpointer_.reset();
  stmts_.clear();
  chunk_stmts_.clear();
  if (batch_open_) {
    try {
      s_.db().exec("ROLLBACK");
    } catch (...) {
    }
  }
  fts_writer_.reset();  // commits what evident.db committed; an open FTS transaction is rolled back
  try {
    s_.set_fts_attached(true);
  } catch (const std::exception& e) {
    log::warn("cannot attach the full-text index of ", s_.dir().string(), " again: ", e.what());
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

sql::stmt& index_writer::stmt(int i, const char* sql) {
  if (stmts_.size() <= static_cast<size_t>(i)) stmts_.resize(static_cast<size_t>(i) + 1);
  auto& p = stmts_[static_cast<size_t>(i)];
  if (!p) p = std::make_unique<sql::stmt>(s_.db().prepare(sql));
  p->reset();
  return *p;
}

sql::stmt& index_writer::chunk_insert(size_t rows) {
  if (chunk_stmts_.size() <= rows) chunk_stmts_.resize(rows + 1);
  auto& p = chunk_stmts_[rows];
  if (!p) {
    std::string q =
        "INSERT INTO chunks(id, document_id, ordinal, char_start, char_end, byte_start, byte_end, page, heading_path, "
        "token_count, text) VALUES ";
    for (size_t i = 0; i < rows; ++i) q += i ? ",(?,?,?,?,?,?,?,?,?,?,?)" : "(?,?,?,?,?,?,?,?,?,?,?)";
    p = std::make_unique<sql::stmt>(s_.db().prepare(q));
  }
  p->reset();
  return *p;
}

void index_writer::begin_batch() {
  if (!batch_open_) {
    if (checkpointer_) checkpointer_->settle();
    s_.db().exec("BEGIN IMMEDIATE");
    batch_open_ = true;
    batch_size_ = 0;
  }
}

void index_writer::begin_doc() {
  begin_batch();
  s_.db().exec("SAVEPOINT doc");
  fts_mark_ = fts_.size();
}

void index_writer::end_doc(bool ok) {
  if (ok) {
    s_.db().exec("RELEASE doc");
    if (batch_size_ >= batch_bytes) commit();
  } else {
    try {
      s_.db().exec("ROLLBACK TO doc; RELEASE doc");
    } catch (...) {
    }
    pending_removals_.clear();
    pending_df_.clear();
    fts_.erase(fts_.begin() + static_cast<std::ptrdiff_t>(fts_mark_), fts_.end());
  }
}

void index_writer::abort_batch() {
  stmts_.clear();  // finalise statements so that ROLLBACK cannot be refused by a pending one
  chunk_stmts_.clear();
  try {
    s_.db().exec("ROLLBACK");
  } catch (...) {
  }
  batch_open_ = false;
  batch_size_ = 0;
  fts_.clear();
  try {
    fts_writer_->rollback();  // the batch's rows it already has
  } catch (...) {
  }
}

void index_writer::finish_batch() {
  try {
    // ingest.next_chunk_id once per batch, in the batch's transaction (chunk ids are never reused).
    stmt(5, "INSERT INTO meta(key, value) VALUES ('ingest.next_chunk_id', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(1, std::to_string(next_chunk_id_))
        .run();
    stmt(10, "INSERT INTO meta(key, value) VALUES ('fts.batch', ?) "
             "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(1, std::to_string(fts_batch_ + 1))
        .run();
  } catch (const std::exception& e) {
    abort_batch();
    EV_THROW(io, "cannot finish a batch in ", s_.dir().string(), " (batch rolled back): ", e.what());
  }
}

void index_writer::commit() {
  if (!batch_open_) return;
  send_fts(1);  // every row of the batch before its commit (whole documents only: commit() runs between them)
  finish_batch();
  const double t0 = thread_cpu_seconds();
  try {
    s_.db().exec("COMMIT");
  } catch (...) {
    abort_batch();
    throw;
  }
  cpu_.commit += thread_cpu_seconds() - t0;
  batch_open_ = false;
  batch_size_ = 0;
  ++fts_batch_;
  fts_writer_->commit(fts_batch_);
}

void index_writer::send_fts(size_t at_least) {
  if (fts_.size() < at_least || fts_.empty()) return;
  std::vector<fts_row> rows;
  rows.swap(fts_);
  fts_mark_ = 0;
  fts_writer_->add(std::move(rows));
}

void index_writer::rebuild_df() {
  log::info("recounting embedder document frequencies for ", s_.dir().string());
  df_.assign(hashed_tfidf_embedder::df_buckets, 0);
  df_n_ = 0;
  std::vector<uint32_t> b;
  auto q = s_.db().prepare("SELECT text FROM chunks");
  while (q.step()) {
    b.clear();
    embedder_->df_buckets_of(q.col_text_view(0), b);
    for (uint32_t x : b) ++df_[x];
    ++df_n_;
  }
  sql::transaction tx(s_.db());
  save_df(s_, df_, df_n_, fts_batch_, nullptr);
  tx.commit();
  df_saved_ = df_;
}

void index_writer::drop_chunks(int64_t document_id) {
  auto& q = stmt(0, "SELECT id, text FROM chunks WHERE document_id = ?");
  q.bind(1, document_id);
  while (q.step()) {
    pending_removals_.push_back(q.col_int(0));
    pending_df_.emplace_back(q.col_text(1));
    fts_.push_back({q.col_int(0), pending_df_.back(), true});
  }
  q.reset();
  stmt(1, "DELETE FROM chunks WHERE document_id = ?").bind(1, document_id).run();
}

void index_writer::apply_pending() {
  if (!pending_removals_.empty()) {
    vectors_->remove(pending_removals_);
    pending_removals_.clear();
    vectors_dirty_ = true;
  }
  std::vector<uint32_t> b;
  for (const auto& t : pending_df_) {
    b.clear();
    embedder_->df_buckets_of(t, b);
    for (uint32_t x : b) {
      if (df_[x]) --df_[x];
    }
    --df_n_;
  }
  pending_df_.clear();
}

int64_t index_writer::write_document(int64_t collection_id, const file_info& f, const prepared& p,
                                     std::optional<int64_t> replace) {
  const document& d = p.doc;
  EV_ASSERT(p.char_count >= 0, "write_document needs a `prepared` from prepare_document (row values filled)");
  const int64_t cps = p.char_count;
  const int64_t first_id = next_chunk_id_;
  int64_t doc_id = -1;
  // A replacement runs in a savepoint (old chunks are dropped first); a new document runs without one and is deleted
  // again on failure (see index-writer.h).
  if (replace) {
    begin_doc();
  } else {
    begin_batch();
    fts_mark_ = fts_.size();
  }
  try {
    if (replace) {
      drop_chunks(*replace);
      stmt(2, "UPDATE documents SET source_root=?, sha256=?, size=?, mtime=?, format=?, title=?, pages=?, "
                   "page_starts=?, headings=?, text=?, char_count=?, ingested_at=? WHERE id=?")
          .bind(1, f.source_root).bind(2, f.sha256).bind(3, f.size).bind(4, f.mtime).bind(5, d.format)
          .bind(6, d.title).bind(7, static_cast<int64_t>(d.page_starts.size())).bind_static(8, p.page_starts_json)
          .bind_static(9, p.headings_json).bind_static(10, d.text).bind(11, cps).bind(12, unix_seconds())
          .bind(13, *replace)
          .run();
      doc_id = *replace;
    } else {
      stmt(3, "INSERT INTO documents(collection_id, path, source_root, sha256, size, mtime, format, title, pages, "
                   "page_starts, headings, text, char_count, ingested_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
          .bind(1, collection_id).bind(2, f.path).bind(3, f.source_root).bind(4, f.sha256).bind(5, f.size)
          .bind(6, f.mtime).bind(7, d.format).bind(8, d.title).bind(9, static_cast<int64_t>(d.page_starts.size()))
          .bind_static(10, p.page_starts_json).bind_static(11, p.headings_json).bind_static(12, d.text)
          .bind(13, cps).bind(14, unix_seconds())
          .run();
      doc_id = s_.db().last_insert_rowid();
    }
    // Chunks go in up to chunk_rows_per_insert rows per statement: FTS5 (SQLite 3.40) flushes its pending terms into
    // a new segment at every statement that fires the chunks_ai trigger, so one statement per chunk meant one tiny
    // segment (and later merge work) per chunk.
    int64_t id = first_id;
    for (size_t i = 0; i < p.chunks.size();) {
      const size_t n = std::min(chunk_rows_per_insert, p.chunks.size() - i);
      sql::stmt& ins = chunk_insert(n);
      int k = 0;
      for (size_t j = 0; j < n; ++j, ++i, k += 11) {
        const chunk& c = p.chunks[i];
        ins.bind(k + 1, id++).bind(k + 2, doc_id).bind(k + 3, c.ordinal).bind(k + 4, c.char_start)
            .bind(k + 5, c.char_end).bind(k + 6, c.byte_start).bind(k + 7, c.byte_end).bind(k + 8, c.page)
            .bind(k + 9, c.heading_path).bind(k + 10, c.token_count).bind_static(k + 11, c.text);
      }
      ins.run();
      ins.reset();
    }
    for (size_t i = 0; i < p.chunks.size(); ++i) fts_.push_back({first_id + static_cast<int64_t>(i), p.chunks[i].text, false});
    batch_size_ += static_cast<int64_t>(d.text.size()) * 2;
    next_chunk_id_ = id;  // before end_doc, which may commit the batch and record ingest.next_chunk_id
    if (replace) end_doc(true);
  } catch (...) {
    if (replace) {
      end_doc(false);
      throw;
    }
    undo_new_document(doc_id);
    throw;
  }
  if (!replace && batch_size_ >= batch_bytes) commit();
  if (batch_open_) send_fts(fts_send_rows);
  // After the rows are written: FAISS and df in memory.
  apply_pending();
  std::vector<int64_t> ids(p.chunks.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = first_id + static_cast<int64_t>(i);
  vectors_->add(static_cast<int64_t>(ids.size()), ids.data(), p.vectors.data());
  for (uint32_t x : p.df_buckets) ++df_[x];  // changed buckets are found at checkpoint (df_ vs df_saved_)
  df_n_ += static_cast<int64_t>(p.chunks.size());
  vectors_dirty_ = true;
  return doc_id;
}

void index_writer::touch(int64_t document_id, int64_t mtime) {
  begin_doc();
  try {
    stmt(6, "UPDATE documents SET mtime = ? WHERE id = ?").bind(1, mtime).bind(2, document_id).run();
    end_doc(true);
  } catch (...) {
    end_doc(false);
    throw;
  }
}

void index_writer::remove(int64_t document_id) {
  begin_doc();
  try {
    drop_chunks(document_id);
    stmt(7, "DELETE FROM documents WHERE id = ?").bind(1, document_id).run();
    end_doc(true);
  } catch (...) {
    end_doc(false);
    throw;
  }
  if (batch_open_) send_fts(fts_send_rows);
  apply_pending();
}

void index_writer::checkpoint(bool final, bool truncate_wal) {
  commit();
  // What follows runs side by side: the FTS thread writes its last segment (and, with truncate_wal, checkpoints its
  // file), vectors.faiss is saved on a thread of its own, and this thread saves df (and, with truncate_wal,
  // checkpoints evident.db). One after another, and with the WAL copies left to the closing connections, they were
  // about 0.13 s of SciFact's 0.85 s run. The three touch different files; vectors.faiss holds committed chunks only
  // either way.
  if (final) fts_writer_->flush(truncate_wal);
  const double t0 = thread_cpu_seconds();
  std::future<void> faiss;
  if (vectors_dirty_ || !std::filesystem::exists(s_.vectors_path()))
    faiss = std::async(std::launch::async, [this, final] {
      vectors_->save(s_.vectors_path(), final ? opt_.hnsw_above : INT64_MAX);
    });
  {
    sql::transaction tx(s_.db());
    save_df(s_, df_, df_n_, fts_batch_, &df_saved_);
    s_.set_meta("chunker.tokens", std::to_string(opt_.chunk_tokens));
    s_.set_meta("chunker.overlap", std::to_string(opt_.chunk_overlap));
    s_.set_meta("chunker.counter", counter_->name());
    tx.commit();
    df_saved_ = df_;
  }
  if (final && truncate_wal && checkpointer_) {
    // The run's WAL into evident.db now, beside the other two, rather than by the closing connection afterwards.
    checkpointer_.reset();
    checkpoint_and_truncate(s_.db(), "main");
  }
  if (faiss.valid()) {
    faiss.get();  // rethrows the save's error
    vectors_dirty_ = false;
  }
  cpu_.checkpoint += thread_cpu_seconds() - t0;
  if (final) {
    fts_writer_->drain();
    cpu_.fts = fts_writer_->cpu_seconds();
  }
}

int64_t index_writer::begin_run(const std::string& root, int64_t collection_id) {
  s_.db()
      .prepare("INSERT INTO ingest_runs(started_at, root, collection_id) VALUES (?, ?, ?)")
      .bind(1, unix_seconds()).bind(2, root).bind(3, collection_id)
      .run();
  return s_.db().last_insert_rowid();
}

void index_writer::end_run(int64_t run_id, const std::string& summary_json) {
  s_.db()
      .prepare("UPDATE ingest_runs SET finished_at = ?, summary = ? WHERE id = ?")
      .bind(1, unix_seconds()).bind(2, summary_json).bind(3, run_id)
      .run();
}

}  // namespace evident::ingest
