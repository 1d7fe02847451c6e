#include "retrieval/fts-bm25.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/base/error.h"

namespace evident::retrieval {

namespace {

struct query_stats {
  double avgdl = 1;
  std::vector<double> idf;  // per phrase
};

int count_row(const Fts5ExtensionApi*, Fts5Context*, void* user) {
  ++*static_cast<int64_t*>(user);
  return SQLITE_OK;
}

// Computes N, avgdl and each phrase's idf for the current query (idf from `given` when it has one per phrase).
// Returns an SQLite error code.
int compute_stats(const Fts5ExtensionApi* api, Fts5Context* fts, query_stats* st, const bm25_idf* given) {
  sqlite3_int64 n_rows = 0;
  int rc = api->xRowCount(fts, &n_rows);
  if (rc != SQLITE_OK) return rc;
  sqlite3_int64 total = 0;
  rc = api->xColumnTotalSize(fts, -1, &total);
  if (rc != SQLITE_OK) return rc;
  st->avgdl = n_rows > 0 ? static_cast<double>(total) / static_cast<double>(n_rows) : 1.0;
  if (st->avgdl <= 0) st->avgdl = 1.0;
  const int n_phrase = api->xPhraseCount(fts);
  if (given != nullptr && given->idf.size() == static_cast<size_t>(n_phrase)) {
    st->idf = given->idf;
    return SQLITE_OK;
  }
  st->idf.assign(n_phrase, 0.0);
  for (int p = 0; p < n_phrase; ++p) {
    int64_t hits = 0;
    rc = api->xQueryPhrase(fts, p, &hits, count_row);
    if (rc != SQLITE_OK) return rc;
    const double N = static_cast<double>(n_rows), n = static_cast<double>(hits);
    st->idf[p] = std::log(1.0 + (N - n + 0.5) / (n + 0.5));
  }
  return SQLITE_OK;
}

void bm25_function(const Fts5ExtensionApi* api, Fts5Context* fts, sqlite3_context* ctx, int n_val,
                   sqlite3_value** val) {
  double k1 = 0.9, b = 0.4;
  if (n_val >= 1) k1 = sqlite3_value_double(val[0]);
  if (n_val >= 2) b = sqlite3_value_double(val[1]);

  auto* st = static_cast<query_stats*>(api->xGetAuxdata(fts, 0));
  if (st == nullptr) {
    st = new query_stats();
    const auto* given =
        n_val >= 3 ? static_cast<const bm25_idf*>(sqlite3_value_pointer(val[2], bm25_idf_type)) : nullptr;
    int rc = compute_stats(api, fts, st, given);
    if (rc == SQLITE_OK)
      rc = api->xSetAuxdata(fts, st, [](void* p) { delete static_cast<query_stats*>(p); });
    else
      delete st;
    if (rc != SQLITE_OK) {
      sqlite3_result_error_code(ctx, rc);
      return;
    }
  }

  int n_inst = 0;
  int rc = api->xInstCount(fts, &n_inst);
  if (rc != SQLITE_OK) {
    sqlite3_result_error_code(ctx, rc);
    return;
  }
  // Term frequency per phrase in this row (small: phrases <= max_terms).
  thread_local std::vector<int> tf;
  tf.assign(st->idf.size(), 0);
  for (int i = 0; i < n_inst; ++i) {
    int phrase = 0, col = 0, off = 0;
    rc = api->xInst(fts, i, &phrase, &col, &off);
    if (rc != SQLITE_OK) {
      sqlite3_result_error_code(ctx, rc);
      return;
    }
    if (phrase >= 0 && static_cast<size_t>(phrase) < tf.size()) ++tf[phrase];
  }
  int dl = 0;
  rc = api->xColumnSize(fts, -1, &dl);
  if (rc != SQLITE_OK) {
    sqlite3_result_error_code(ctx, rc);
    return;
  }
  const double norm = k1 * (1.0 - b + b * static_cast<double>(dl) / st->avgdl);
  double score = 0;
  for (size_t p = 0; p < tf.size(); ++p) {
    if (tf[p] == 0) continue;
    const double f = tf[p];
    score += st->idf[p] * f * (k1 + 1.0) / (f + norm);
  }
  sqlite3_result_double(ctx, score);
}

void call_function(const Fts5ExtensionApi* api, Fts5Context* fts, sqlite3_context* ctx, int n_val,
                   sqlite3_value** val) {
  const auto* fn = n_val >= 1 ? static_cast<const fts5_call*>(sqlite3_value_pointer(val[0], fts5_call_type)) : nullptr;
  if (fn == nullptr || !*fn) {
    sqlite3_result_error(ctx, "evident_call: expected a bound fts5_call pointer", -1);
    return;
  }
  const int rc = (*fn)(api, fts);
  if (rc != SQLITE_OK) {
    sqlite3_result_error_code(ctx, rc);
    return;
  }
  sqlite3_result_int(ctx, 1);
}

struct phrase_reader {
  phrase_postings* out;
  int64_t limit;
  int64_t n = 0;
  bool with_lengths;
};

int read_row(const Fts5ExtensionApi* api, Fts5Context* fts, void* user) {
  auto* r = static_cast<phrase_reader*>(user);
  if (r->limit >= 0 && r->n >= r->limit) return SQLITE_DONE;
  int n_inst = 0;
  int rc = api->xInstCount(fts, &n_inst);
  if (rc != SQLITE_OK) return rc;
  if (r->with_lengths) {
    int dl = 0;
    rc = api->xColumnSize(fts, -1, &dl);
    if (rc != SQLITE_OK) return rc;
    r->out->dl.push_back(dl);
  }
  r->out->rowid.push_back(api->xRowid(fts));
  r->out->tf.push_back(n_inst);
  ++r->n;
  return SQLITE_OK;
}

}  // namespace

int64_t read_phrase(const Fts5ExtensionApi* api, Fts5Context* fts, int phrase, int64_t limit, bool with_lengths,
                    phrase_postings& out) {
  phrase_reader r{&out, limit, 0, with_lengths};
  const int rc = api->xQueryPhrase(fts, phrase, &r, read_row);
  return rc == SQLITE_OK ? r.n : -1 - rc;
}

void register_bm25(sqlite3* db) {
  fts5_api* api = nullptr;
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &s, nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_bind_pointer(s, 1, static_cast<void*>(&api), "fts5_api_ptr", nullptr);
    sqlite3_step(s);
  }
  sqlite3_finalize(s);
  EV_THROW_IF_NOT_KIND(api != nullptr, internal, "SQLite has no FTS5 (cannot register evident_bm25)");
  rc = api->xCreateFunction(api, "evident_bm25", nullptr, bm25_function, nullptr);
  EV_THROW_IF_NOT_KIND(rc == SQLITE_OK, internal, "cannot register FTS5 function evident_bm25: ", sqlite3_errstr(rc));
  rc = api->xCreateFunction(api, "evident_call", nullptr, call_function, nullptr);
  EV_THROW_IF_NOT_KIND(rc == SQLITE_OK, internal, "cannot register FTS5 function evident_call: ", sqlite3_errstr(rc));
}

}  // namespace evident::retrieval
