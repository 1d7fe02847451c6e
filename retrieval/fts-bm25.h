// evident_bm25(): an FTS5 auxiliary function computing Okapi BM25 with Lucene's IDF and configurable k1 and b.
//
// FTS5's built-in bm25() fixes k1 = 1.2, b = 0.75 and uses idf = ln((N - n + 0.5) / (n + 0.5)) (clamped at 1e-6),
// which zeroes frequent terms instead of down-weighting them. Lucene/Anserini (the BEIR baselines) use
//   idf(t)   = ln(1 + (N - n_t + 0.5) / (n_t + 0.5))
//   score(d) = sum over query phrases p:  idf(p) * tf(p,d) * (k1 + 1) / (tf(p,d) + k1 * (1 - b + b * |d| / avgdl))
// with |d| and avgdl in tokens over all indexed columns. Higher is better (unlike bm25(), which is negated).
//
// Usage (after register_bm25(db)):  SELECT rowid, evident_bm25(chunks_fts, 0.9, 0.4) AS s FROM chunks_fts
//                                    WHERE chunks_fts MATCH ? ORDER BY s DESC LIMIT ?
// Both parameters are optional (defaults k1 = 0.9, b = 0.4: Anserini's BEIR "flat" setting).
// Per-phrase document counts are computed once per query (FTS5 auxdata), as the built-in bm25() does, by walking each
// phrase's posting list. A caller that already knows them passes a fourth argument: a pointer (sqlite3_bind_pointer,
// type bm25_idf_type) to a bm25_idf whose `idf` has one entry per phrase of the MATCH expression; it must outlive
// the statement's execution.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace evident::retrieval {

inline constexpr const char* bm25_idf_type = "evident_bm25_idf";
struct bm25_idf {
  std::vector<double> idf;  // per phrase, in expression order: ln(1 + (N - n + 0.5) / (n + 0.5))
};

// Registers evident_bm25 and evident_call on this connection (idempotent). Throws evident::error when the connection
// has no FTS5.
void register_bm25(sqlite3* db);

// evident_call(chunks_fts, ptr): runs C++ code against FTS5's extension API, for reading posting lists without a
// virtual-table row (and an SQL function call) per posting.
//   SELECT evident_call(chunks_fts, ?2) FROM chunks_fts WHERE chunks_fts MATCH ?1 LIMIT 1
// with ?2 bound by sqlite3_bind_pointer(stmt, 2, &fn, fts5_call_type, nullptr) to an fts5_call that outlives the step.
// The function runs once, on the first matching row (none: it never runs), and may call xQueryPhrase for each phrase
// of the MATCH expression, xRowCount, xColumnTotalSize, ... It returns an SQLite result code; anything else than
// SQLITE_OK makes the statement fail with it. It must not throw (catch inside and return SQLITE_ERROR).
using fts5_call = std::function<int(const Fts5ExtensionApi*, Fts5Context*)>;
inline constexpr const char* fts5_call_type = "evident_fts5_call";

// One phrase's postings, read inside an fts5_call: rowids ascending, with the phrase's occurrences in each row and
// (when asked) each row's length in tokens over all columns.
struct phrase_postings {
  std::vector<int64_t> rowid;
  std::vector<int32_t> tf;
  std::vector<int32_t> dl;  // empty unless read with lengths
};
// Appends phrase `phrase`'s postings to `out`, stopping after `limit` rows (limit < 0: all). Returns the number of
// rows read, or -1 - rc (rc an SQLite error code) on failure.
int64_t read_phrase(const Fts5ExtensionApi* api, Fts5Context* fts, int phrase, int64_t limit, bool with_lengths,
                    phrase_postings& out);

}  // namespace evident::retrieval
