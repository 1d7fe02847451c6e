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

#include <vector>


namespace evident::retrieval {

inline constexpr const char* bm25_idf_type = "evident_bm25_idf";
struct bm25_idf {
  std::vector<double> idf;  // per phrase, in expression order: ln(1 + (N - n + 0.5) / (n + 0.5))
};

// Registers evident_bm25 on this connection (idempotent). Throws evident::error when the connection has no FTS5.
void register_bm25(sqlite3* db);

}  // namespace evident::retrieval
