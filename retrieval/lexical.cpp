// Lexical retriever: FTS5 + evident_bm25 over chunks_fts.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <unordered_map>

#include "engine/base/error.h"
#include "ingest/store.h"
#include "retrieval/filter-sql.h"
#include "retrieval/fts-bm25.h"
#include "retrieval/query.h"
#include "retrieval/retriever.h"

namespace evident::retrieval {

namespace {

// A statement on the raw C API: sql::stmt has no pointer binding, which passing IDFs to evident_bm25 needs.
struct raw_stmt {
  sqlite3* db;
  sqlite3_stmt* h = nullptr;
  raw_stmt(sqlite3* d, const char* sql) : db(d) {
    EV_THROW_IF_NOT_KIND(sqlite3_prepare_v2(d, sql, -1, &h, nullptr) == SQLITE_OK, internal, "prepare ", sql, ": ",
                         sqlite3_errmsg(d));
  }
  ~raw_stmt() { sqlite3_finalize(h); }
  raw_stmt(const raw_stmt&) = delete;
  raw_stmt& operator=(const raw_stmt&) = delete;
  bool step() {
    const int rc = sqlite3_step(h);
    if (rc == SQLITE_ROW) return true;
    EV_THROW_IF_NOT_KIND(rc == SQLITE_DONE, internal, "FTS5 query failed: ", sqlite3_errmsg(db));
    return false;
  }
};

// A kept statement is reset when a use starts and when it ends (also by an exception): a statement left stepping
// would hold its read snapshot of the WAL store open between queries.
struct use {
  sqlite3_stmt* h;
  explicit use(raw_stmt& s) : h(s.h) { sqlite3_reset(h); }
  ~use() {
    sqlite3_reset(h);
    sqlite3_clear_bindings(h);
  }
  use(const use&) = delete;
  use& operator=(const use&) = delete;
};

class lexical_retriever final : public retriever_i {
 public:
  lexical_retriever(const std::filesystem::path& dir, const lexical_options& opt)
      : store_(dir, ingest::open_mode::read_only), opt_(opt) {
    EV_THROW_IF_NOT_MSG(opt.k1 >= 0 && opt.b >= 0 && opt.b <= 1,
                        "bm25 parameters: expected k1 >= 0 and b in [0, 1], got k1=", opt.k1, " b=", opt.b);
    register_bm25(store_.db().handle());
    // Posting lists are read page by page (one %_data row each) and rows' lengths from %_docsize: map the file
    // instead of copying each page through read() into a 2 MB cache. Read-only connection, so this only changes how
    // pages are fetched (SQLite falls back to read() where mmap is unavailable or above its compile-time cap).
    store_.db().exec("PRAGMA mmap_size = 4294967296; PRAGMA cache_size = -32768");
    // The FTS5 tables live in the store's attached FTS file (schema `fts`, ingest/store.h).
    auto t = store_.db().prepare(
        "SELECT 1 FROM fts.sqlite_master WHERE type = 'table' AND name = 'chunks_fts_docsize'");
    lengths_ = t.step();
  }

  std::string name() const override { return "bm25"; }

  std::vector<hit> search(const std::string& query, int k, const filter& f) override {
    std::vector<hit> out;
    if (k <= 0) return out;
    auto terms = query_terms(query, opt_.query);
    if (terms.empty()) return out;
    const bool prune = chunk_count() > opt_.prune_above_chunks;
    if (detail::filter_empty(f) && opt_.direct_scoring) return direct_search(terms, k, prune);
    // Filtered (or direct scoring off): FTS5 ranks with evident_bm25 inside SQL; a pruned query keeps only the
    // rarest terms (FTS5 counts their frequencies itself).
    if (prune) terms = rarest_terms(terms);
    const std::string expr = fts5_expression(terms);
    if (expr.empty()) return out;
    if (detail::filter_empty(f)) {
      // Rank inside FTS5 alone, then look up documents for the k winners only (a join per matching row costs
      // ~3x more at SciFact scale).
      raw_stmt& s = kept(rank_,
                         "SELECT rowid, evident_bm25(chunks_fts, ?2, ?3) AS s FROM chunks_fts "
                         "WHERE chunks_fts MATCH ?1 ORDER BY s DESC, rowid ASC LIMIT ?4");
      // Entries whose chunk is gone (the FTS file lags evident.db during an ingest) are dropped by locate(); ask for
      // more rows until k remain or FTS5 has no more.
      for (int limit = k;; limit *= 2) {
        out.clear();
        use u(s);
        sqlite3_bind_text(s.h, 1, expr.data(), static_cast<int>(expr.size()), SQLITE_TRANSIENT);
        sqlite3_bind_double(s.h, 2, opt_.k1);
        sqlite3_bind_double(s.h, 3, opt_.b);
        sqlite3_bind_int(s.h, 4, limit);
        while (s.step()) out.push_back({sqlite3_column_int64(s.h, 0), sqlite3_column_double(s.h, 1), 0, 0});
        const size_t got = out.size();
        auto kept_hits = locate(std::move(out));
        if (kept_hits.size() >= static_cast<size_t>(k) || got < static_cast<size_t>(limit) || limit > (1 << 24)) {
          if (kept_hits.size() > static_cast<size_t>(k)) kept_hits.resize(static_cast<size_t>(k));
          return kept_hits;
        }
      }
    }
    std::string q =
        "SELECT c.id, c.document_id, c.ordinal, evident_bm25(chunks_fts, ?2, ?3) AS s "
        "FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.document_id "
        "WHERE chunks_fts MATCH ?1";
    q += detail::filter_conditions(f);
    q += " ORDER BY s DESC, c.id ASC LIMIT ?4";
    auto s = store_.db().prepare(q);
    s.bind(1, expr).bind(2, opt_.k1).bind(3, opt_.b).bind(4, k);
    detail::bind_filter(s, f);
    while (s.step()) out.push_back({s.col_int(0), s.col_double(3), s.col_int(1), static_cast<int>(s.col_int(2))});
    return out;
  }

 private:
  // Chunk count, re-read at most once a minute (count(*) walks an index: ~10 ms at 1M chunks).
  int64_t chunk_count() {
    const auto now = std::chrono::steady_clock::now();
    if (count_at_ == std::chrono::steady_clock::time_point{} || now - count_at_ > std::chrono::seconds(60)) {
      auto s = store_.db().prepare("SELECT count(*) FROM chunks");
      s.step();
      n_chunks_ = s.col_int(0);
      count_at_ = now;
      df_.clear();  // frequencies may have moved with the corpus
    }
    return n_chunks_;
  }

  // Chunks containing `term` as FTS5 tokenises it, counting at most max_postings + 1.
  int64_t df(const std::string& term) {
    std::string key = term;
    for (auto& ch : key)
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    auto it = df_.find(key);
    if (it != df_.end()) return it->second;
    auto s = store_.db().prepare("SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ?1 LIMIT ?2)");
    s.bind(1, fts5_expression({term})).bind(2, opt_.max_postings + 1);
    s.step();
    const int64_t n = s.col_int(0);
    if (df_.size() > 100000) df_.clear();
    df_.emplace(key, n);
    return n;
  }

  // The rarest terms whose frequencies sum to at most max_postings (at least the rarest one), in query order.
  std::vector<std::string> rarest_terms(const std::vector<std::string>& terms) {
    std::vector<int64_t> n;
    for (auto& t : terms) n.push_back(df(t));
    const auto keep = rarest(n);
    std::vector<std::string> out;
    for (size_t i = 0; i < terms.size(); ++i)
      if (keep[i]) out.push_back(terms[i]);
    return out;
  }

  // Which of the terms with chunk frequencies `n` (capped at max_postings + 1) a pruned query keeps: the rarest ones
  // whose frequencies sum to at most max_postings, at least the rarest one (ties: query order).
  std::vector<bool> rarest(const std::vector<int64_t>& n) const {
    std::vector<std::pair<int64_t, size_t>> by_df;
    for (size_t i = 0; i < n.size(); ++i) by_df.push_back({n[i], i});
    std::stable_sort(by_df.begin(), by_df.end());
    std::vector<bool> keep(n.size(), false);
    int64_t sum = 0;
    for (auto& [n, i] : by_df) {
      if (n == 0) continue;  // in no chunk: costs nothing, scores nothing
      if (sum > 0 && sum + n > opt_.max_postings) break;
      sum += n;
      keep[i] = true;
    }
    return keep;
  }

  static std::string lower_ascii(std::string s) {
    for (auto& ch : s)
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    return s;
  }

  // BM25 without a filter, scored here: the same terms, IDFs and scores as ranking (for a pruned query:
  // rarest_terms(terms)) with evident_bm25 in SQL, but each posting list is read once through FTS5's extension API
  // (one evident_call for the whole query), without an SQL row, a function call and a %_docsize statement per
  // posting. Exact: every term's list is read. Pruned: a term whose frequency is not cached yet is read up to
  // max_postings + 1 rows; that read both counts it and, when it is rare enough, gives its postings. Cost: the kept
  // postings plus, once per frequent term, a capped read.
  std::vector<hit> direct_search(const std::vector<std::string>& terms, int k, bool prune) {
    // Distinct terms (ASCII-lower-cased, as FTS5 folds case) become the phrases of one OR expression.
    std::vector<std::string> distinct;
    std::vector<size_t> phrase_of;  // query term -> phrase
    for (auto& t : terms) {
      std::string key = lower_ascii(t);
      auto it = std::find(distinct.begin(), distinct.end(), key);
      phrase_of.push_back(static_cast<size_t>(it - distinct.begin()));
      if (it == distinct.end()) distinct.push_back(std::move(key));
    }
    const std::string expr = fts5_expression(distinct);
    const size_t n_phrase = distinct.size();
    const bool from_copy = lengths_ && refresh_lengths(prune);
    std::vector<phrase_postings> post(n_phrase);
    std::vector<char> have(n_phrase, 0);  // post[p] holds all of phrase p's postings
    std::vector<int64_t> n(n_phrase, -1);
    std::vector<bool> keep;
    double n_rows = 0, avgdl = 1;
    const int64_t cap = opt_.max_postings;
    fts5_call fn = [&](const Fts5ExtensionApi* api, Fts5Context* fts) -> int {
      sqlite3_int64 rows = 0, total = 0;
      int rc = api->xRowCount(fts, &rows);
      if (rc == SQLITE_OK) rc = api->xColumnTotalSize(fts, -1, &total);
      if (rc != SQLITE_OK) return rc;
      n_rows = static_cast<double>(rows);
      avgdl = rows > 0 ? static_cast<double>(total) / static_cast<double>(rows) : 1.0;
      if (avgdl <= 0) avgdl = 1.0;
      if (api->xPhraseCount(fts) != static_cast<int>(n_phrase)) return SQLITE_INTERNAL;
      for (size_t p = 0; p < n_phrase; ++p) {
        if (!prune) {  // exact: every list in full (no cache: the store may change between queries)
          const int64_t got = read_phrase(api, fts, static_cast<int>(p), -1, !from_copy, post[p]);
          if (got < 0) return static_cast<int>(-1 - got);
          n[p] = got;
          have[p] = 1;
          continue;
        }
        if (auto it = df_.find(distinct[p]); it != df_.end()) {
          n[p] = it->second;
          continue;
        }
        const int64_t got = read_phrase(api, fts, static_cast<int>(p), cap + 1, !from_copy, post[p]);
        if (got < 0) return static_cast<int>(-1 - got);
        n[p] = got;
        have[p] = got <= cap;
        if (!have[p]) post[p] = {};
        if (df_.size() > 100000) df_.clear();
        df_.emplace(distinct[p], got);
      }
      std::vector<int64_t> per_term(terms.size());
      for (size_t i = 0; i < terms.size(); ++i) per_term[i] = n[phrase_of[i]];
      if (prune) {
        keep = rarest(per_term);
      } else {
        keep.assign(terms.size(), false);
        for (size_t i = 0; i < terms.size(); ++i) keep[i] = per_term[i] > 0;
      }
      for (size_t i = 0; i < terms.size(); ++i) {
        const size_t p = phrase_of[i];
        if (!keep[i] || have[p]) continue;
        post[p] = {};
        const int64_t got = read_phrase(api, fts, static_cast<int>(p), -1, !from_copy, post[p]);
        if (got < 0) return static_cast<int>(-1 - got);
        n[p] = got;  // exact (a capped count was only a lower bound)
        have[p] = 1;
      }
      return SQLITE_OK;
    };
    raw_stmt& s = kept(call_, "SELECT evident_call(chunks_fts, ?2) FROM chunks_fts WHERE chunks_fts MATCH ?1 LIMIT 1");
    use u(s);
    sqlite3_bind_text(s.h, 1, expr.data(), static_cast<int>(expr.size()), SQLITE_TRANSIENT);
    sqlite3_bind_pointer(s.h, 2, &fn, fts5_call_type, nullptr);
    const bool matched = s.step();
    if (!matched || keep.empty()) return {};  // no term occurs in any chunk

    // Score as evident_bm25 does: per chunk, the kept query terms' contributions summed in query order. Each term's
    // contributions are computed list by list first (the row-length table is read at scattered positions, so its
    // cache misses are prefetched), then the rowid-ordered lists are merged: no hash table.
    const double k1 = opt_.k1, b = opt_.b;
    struct cursor {
      const std::vector<int64_t>* rowid;
      std::vector<double> w;  // contribution of each posting; < 0: none (tf 0)
      size_t j = 0;
    };
    std::vector<cursor> cur;
    for (size_t i = 0; i < terms.size(); ++i) {
      if (!keep[i]) continue;
      const auto& pp = post[phrase_of[i]];
      const double nn = static_cast<double>(n[phrase_of[i]]);
      const double idf = std::log(1.0 + (n_rows - nn + 0.5) / (nn + 0.5));
      cursor c{&pp.rowid, std::vector<double>(pp.rowid.size()), 0};
      const size_t m = pp.rowid.size();
      for (size_t j = 0; j < m; ++j) {
        if (from_copy && j + 16 < m) {
          const int64_t ahead = pp.rowid[j + 16];
          if (ahead >= 0 && static_cast<size_t>(ahead) < dl_.size()) __builtin_prefetch(dl_.data() + ahead);
        }
        if (pp.tf[j] == 0) {
          c.w[j] = -1;
          continue;
        }
        const double tf = pp.tf[j];
        const double dl = from_copy ? length(pp.rowid[j]) : pp.dl[j];
        const double norm = k1 * (1.0 - b + b * dl / avgdl);
        c.w[j] = idf * tf * (k1 + 1.0) / (tf + norm);
      }
      cur.push_back(std::move(c));
    }
    std::vector<hit> out;
    for (;;) {
      int64_t row = std::numeric_limits<int64_t>::max();
      for (auto& c : cur)
        if (c.j < c.rowid->size()) row = std::min(row, (*c.rowid)[c.j]);
      if (row == std::numeric_limits<int64_t>::max()) break;
      double sc = 0;
      bool any = false;
      for (auto& c : cur) {
        if (c.j < c.rowid->size() && (*c.rowid)[c.j] == row) {
          if (c.w[c.j] >= 0) sc += c.w[c.j], any = true;
          ++c.j;
        }
      }
      if (any) out.push_back({row, sc, 0, 0});
    }
    auto better = [](const hit& a, const hit& b2) {
      return a.score != b2.score ? a.score > b2.score : a.chunk_id < b2.chunk_id;
    };
    // The best k, located; entries whose chunk is gone (the FTS file lags evident.db during an ingest) are dropped
    // by locate(), and the next best candidates take their places.
    std::vector<hit> result;
    size_t next = 0;
    while (result.size() < static_cast<size_t>(k) && next < out.size()) {
      const size_t take = std::min(out.size(), next + (static_cast<size_t>(k) - result.size()));
      std::partial_sort(out.begin() + static_cast<std::ptrdiff_t>(next), out.begin() + static_cast<std::ptrdiff_t>(take),
                        out.end(), better);
      auto located = locate(std::vector<hit>(out.begin() + static_cast<std::ptrdiff_t>(next),
                                             out.begin() + static_cast<std::ptrdiff_t>(take)));
      result.insert(result.end(), located.begin(), located.end());
      next = take;
    }
    return result;
  }

  // Row lengths for BM25's normalisation. FTS5 reads a row's length from its %_docsize table with one statement per
  // row (xColumnSize), which costs more than reading the posting itself; direct scoring takes them from this copy
  // instead: 2 bytes per chunk, read from %_docsize (about 0.25 s per 1M chunks). Freshness (PRAGMA data_version
  // tells whether another connection changed the store since the copy was made):
  //   pruned (large stores): read at the first query; after a change, the new ids are added. Chunk ids are never
  //     reused by ingest (ingest.next_chunk_id), so a loaded length stays valid.
  //   exact (small stores): the copy is (re)read in full only when the store has not changed since the previous
  //     query (so a retriever used once, or during an ingest, never pays for it); until then xColumnSize is used.
  //     Exact results therefore never depend on the id-reuse assumption.
  // Without a %_docsize table (FTS5 columnsize=0) lengths always come from xColumnSize.
  // Returns whether this query may use the copy.
  bool refresh_lengths(bool prune) {
    raw_stmt& dv = kept(data_version_, "PRAGMA fts.data_version");  // the FTS file: %_docsize lives there
    int64_t v = 0;
    {
      use u(dv);
      if (dv.step()) v = sqlite3_column_int64(dv.h, 0);
    }
    const bool quiet = v == last_version_;
    last_version_ = v;
    if (loaded_ && v == lengths_version_) return true;
    if (prune) {
      load_lengths();  // from lengths_to_: the whole table the first time, new ids afterwards
    } else {
      if (!quiet) return false;
      dl_.clear();
      lengths_to_ = 0;
      load_lengths();
    }
    loaded_ = true;
    lengths_version_ = v;
    return true;
  }

  static int64_t docsize_tokens(const unsigned char* p, int n) {
    // The blob holds one SQLite varint per column (big-endian 7-bit groups, high bit = more; a 9th byte has 8 bits).
    int64_t sum = 0;
    int i = 0;
    while (i < n) {
      uint64_t v = 0;
      int j = 0;
      for (; j < 8 && i < n; ++j) {
        const unsigned char c = p[i++];
        v = (v << 7) | (c & 0x7f);
        if (!(c & 0x80)) break;
      }
      if (j == 8 && i < n) v = (v << 8) | p[i++];
      sum += static_cast<int64_t>(v);
    }
    return sum;
  }

  void load_lengths() {
    raw_stmt& s = kept(lengths_read_, "SELECT id, sz FROM chunks_fts_docsize WHERE id > ?1 ORDER BY id");
    use u(s);
    sqlite3_bind_int64(s.h, 1, lengths_to_);
    while (s.step()) {
      const int64_t id = sqlite3_column_int64(s.h, 0);
      const auto* blob = static_cast<const unsigned char*>(sqlite3_column_blob(s.h, 1));
      const int64_t n = docsize_tokens(blob, sqlite3_column_bytes(s.h, 1));
      if (id < 0 || id > (int64_t{1} << 32)) continue;  // not a chunk id this table can hold; looked up instead
      if (static_cast<size_t>(id) >= dl_.size()) dl_.resize(std::max<size_t>(id + 1, dl_.size() * 5 / 4), 0);
      dl_[id] = static_cast<uint16_t>(std::min<int64_t>(n, 65535));
      lengths_to_ = std::max(lengths_to_, id);
    }
  }

  // Length of row `id` in tokens: the loaded copy, else (a new chunk, or 65535+ tokens) %_docsize itself.
  double length(int64_t id) {
    if (id >= 0 && static_cast<size_t>(id) < dl_.size() && dl_[id] != 0 && dl_[id] != 65535) return dl_[id];
    raw_stmt& s = kept(length_one_, "SELECT sz FROM chunks_fts_docsize WHERE id = ?1");
    use u(s);
    sqlite3_bind_int64(s.h, 1, id);
    int64_t n = 0;
    if (s.step())
      n = docsize_tokens(static_cast<const unsigned char*>(sqlite3_column_blob(s.h, 0)), sqlite3_column_bytes(s.h, 0));
    return static_cast<double>(n);
  }

  // Fills document_id and ordinal of FTS5 hits from `chunks`, in one statement.
  std::vector<hit> locate(std::vector<hit> out) {
    if (out.empty()) return out;
    std::string ids;
    for (auto& h : out) {
      ids += ids.empty() ? '[' : ',';
      ids += std::to_string(h.chunk_id);
    }
    ids += ']';
    raw_stmt& d = kept(
        locate_, "SELECT c.id, c.document_id, c.ordinal FROM chunks c WHERE c.id IN (SELECT value FROM json_each(?1))");
    use u(d);
    sqlite3_bind_text(d.h, 1, ids.data(), static_cast<int>(ids.size()), SQLITE_TRANSIENT);
    std::unordered_map<int64_t, std::pair<int64_t, int>> where;
    while (d.step()) where[sqlite3_column_int64(d.h, 0)] = {sqlite3_column_int64(d.h, 1), sqlite3_column_int(d.h, 2)};
    std::vector<hit> kept;
    for (auto& h : out) {
      auto it = where.find(h.chunk_id);
      if (it == where.end()) continue;  // an FTS entry whose chunk is gone (the FTS file lags during an ingest)
      h.document_id = it->second.first;
      h.ordinal = it->second.second;
      kept.push_back(h);
    }
    return kept;
  }

  // The statement kept in `slot`, prepared on first use (reset it with `use`).
  raw_stmt& kept(std::unique_ptr<raw_stmt>& slot, const char* sql) {
    if (!slot) slot = std::make_unique<raw_stmt>(store_.db().handle(), sql);
    return *slot;
  }

  ingest::store store_;
  lexical_options opt_;
  int64_t n_chunks_ = 0;
  std::chrono::steady_clock::time_point count_at_{};
  std::unordered_map<std::string, int64_t> df_;  // lower-cased term -> capped chunk frequency
  std::unique_ptr<raw_stmt> rank_, call_, locate_, lengths_read_, length_one_;  // prepared once, reset after use
  bool lengths_ = false;                              // the store has chunks_fts_docsize: direct scoring may use dl_
  bool loaded_ = false;                               // dl_ was read (at data_version lengths_version_)
  int64_t lengths_version_ = -1, last_version_ = -1;  // PRAGMA data_version at the copy / at the previous query
  std::unique_ptr<raw_stmt> data_version_;
  std::vector<uint16_t> dl_;  // chunk id -> tokens (0: not loaded; 65535: that many or more, looked up)
  int64_t lengths_to_ = 0;    // highest id loaded
};

}  // namespace

std::unique_ptr<retriever_i> make_lexical(const std::filesystem::path& store_dir, const lexical_options& opt) {
  return std::make_unique<lexical_retriever>(store_dir, opt);
}

std::vector<hit> cap_per_document(std::vector<hit> hits, int cap) {
  if (cap <= 0) return hits;
  std::vector<hit> out;
  std::vector<std::pair<int64_t, int>> seen;  // small: linear scan is fine for top-k lists
  for (auto& h : hits) {
    auto it = std::find_if(seen.begin(), seen.end(), [&](auto& p) { return p.first == h.document_id; });
    if (it == seen.end()) seen.push_back({h.document_id, 0}), it = seen.end() - 1;
    if (it->second++ < cap) out.push_back(h);
  }
  return out;
}

}  // namespace evident::retrieval
