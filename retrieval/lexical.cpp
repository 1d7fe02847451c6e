// Lexical retriever: FTS5 + evident_bm25 over chunks_fts.
#include <algorithm>
#include <chrono>
#include <cmath>
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

class lexical_retriever final : public retriever_i {
 public:
  lexical_retriever(const std::filesystem::path& dir, const lexical_options& opt)
      : store_(dir, ingest::open_mode::read_only), opt_(opt) {
    EV_THROW_IF_NOT_MSG(opt.k1 >= 0 && opt.b >= 0 && opt.b <= 1, "bm25 parameters: expected k1 >= 0 and b in [0, 1], got k1=",
                        opt.k1, " b=", opt.b);
    register_bm25(store_.db().handle());
  }

  std::string name() const override { return "bm25"; }

  std::vector<hit> search(const std::string& query, int k, const filter& f) override {
    std::vector<hit> out;
    if (k <= 0) return out;
    auto terms = query_terms(query, opt_.query);
    if (terms.empty()) return out;
    // Pruned queries know each kept term's exact frequency (below the counting cap): pass the IDFs so that
    // evident_bm25 need not walk the posting lists a second time.
    bm25_idf known;
    bool pass_idf = false;
    if (chunk_count() > opt_.prune_above_chunks) {
      terms = rarest_terms(terms);
      pass_idf = true;
      const double N = static_cast<double>(n_chunks_);
      for (auto& t : terms) {
        const int64_t n = df(t);
        if (n > opt_.max_postings) pass_idf = false;  // capped count: let FTS5 count it exactly
        known.idf.push_back(std::log(1.0 + (N - n + 0.5) / (n + 0.5)));
      }
    }
    const std::string expr = fts5_expression(terms);
    if (expr.empty()) return out;
    if (detail::filter_empty(f)) {
      // Rank inside FTS5 alone, then look up documents for the k winners only (a join per matching row costs
      // ~3x more at SciFact scale).
      raw_stmt s(store_.db().handle(),
                 "SELECT rowid, evident_bm25(chunks_fts, ?2, ?3, ?5) AS s FROM chunks_fts WHERE chunks_fts MATCH ?1 "
                 "ORDER BY s DESC, rowid ASC LIMIT ?4");
      sqlite3_bind_text(s.h, 1, expr.data(), static_cast<int>(expr.size()), SQLITE_TRANSIENT);
      sqlite3_bind_double(s.h, 2, opt_.k1);
      sqlite3_bind_double(s.h, 3, opt_.b);
      sqlite3_bind_int(s.h, 4, k);
      if (pass_idf) sqlite3_bind_pointer(s.h, 5, &known, bm25_idf_type, nullptr);
      while (s.step()) out.push_back({sqlite3_column_int64(s.h, 0), sqlite3_column_double(s.h, 1), 0, 0});
      if (out.empty()) return out;
      std::string ids;
      for (auto& h : out) {
        ids += ids.empty() ? '[' : ',';
        ids += std::to_string(h.chunk_id);
      }
      ids += ']';
      auto d = store_.db().prepare(
          "SELECT c.id, c.document_id, c.ordinal FROM chunks c WHERE c.id IN (SELECT value FROM json_each(?1))");
      d.bind(1, ids);
      std::unordered_map<int64_t, std::pair<int64_t, int>> where;
      while (d.step()) where[d.col_int(0)] = {d.col_int(1), static_cast<int>(d.col_int(2))};
      std::vector<hit> kept;
      for (auto& h : out) {
        auto it = where.find(h.chunk_id);
        if (it == where.end()) continue;  // FTS row without a chunk: cannot happen with the triggers; be safe
        h.document_id = it->second.first;
        h.ordinal = it->second.second;
        kept.push_back(h);
      }
      return kept;
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
    auto s = store_.db().prepare(
        "SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ?1 LIMIT ?2)");
    s.bind(1, fts5_expression({term})).bind(2, opt_.max_postings + 1);
    s.step();
    const int64_t n = s.col_int(0);
    if (df_.size() > 100000) df_.clear();
    df_.emplace(key, n);
    return n;
  }

  // The rarest terms whose frequencies sum to at most max_postings (at least the rarest one), in query order.
  std::vector<std::string> rarest_terms(const std::vector<std::string>& terms) {
    std::vector<std::pair<int64_t, size_t>> by_df;
    for (size_t i = 0; i < terms.size(); ++i) by_df.push_back({df(terms[i]), i});
    std::stable_sort(by_df.begin(), by_df.end());
    std::vector<bool> keep(terms.size(), false);
    int64_t sum = 0;
    for (auto& [n, i] : by_df) {
      if (n == 0) continue;  // in no chunk: costs nothing, scores nothing
      if (sum > 0 && sum + n > opt_.max_postings) break;
      sum += n;
      keep[i] = true;
    }
    std::vector<std::string> out;
    for (size_t i = 0; i < terms.size(); ++i)
      if (keep[i]) out.push_back(terms[i]);
    return out;
  }

  ingest::store store_;
  lexical_options opt_;
  int64_t n_chunks_ = 0;
  std::chrono::steady_clock::time_point count_at_{};
  std::unordered_map<std::string, int64_t> df_;  // lower-cased term -> capped chunk frequency
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
