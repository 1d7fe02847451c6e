// retrieval::retriever_i: query, k, filter -> ranked hits over chunks of a store.
// Implementations: lexical (FTS5 bm25), dense (FAISS + the store's embedder), hybrid (reciprocal-rank fusion).
// Thread-safety: a retriever holds its own SQLite connection; use one per thread (or guard it).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "retrieval/query.h"

namespace evident::retrieval {

struct filter {
  std::optional<int64_t> collection_id;  // only chunks of documents in this collection
  std::vector<int64_t> document_ids;     // when non-empty: only these documents
  std::string path_prefix;               // when non-empty: only documents whose path starts with it
};

struct hit {
  int64_t chunk_id = 0;
  double score = 0;  // higher is better; scale depends on the retriever (bm25: evident_bm25, dense: cosine, rrf)
  int64_t document_id = 0;
  int ordinal = 0;  // chunk ordinal within its document
};

class retriever_i {
 public:
  virtual ~retriever_i() = default;
  virtual std::string name() const = 0;  // "bm25" | "dense" | "hybrid"
  // Top-k hits, best first. Never throws for odd query text (FTS syntax, invalid UTF-8, empty, very long): such
  // input is sanitised; an empty query returns no hits.
  virtual std::vector<hit> search(const std::string& query, int k, const filter& f = {}) = 0;
};

// ---------------------------------------------------------------------------------------------------------------------
// Implementations. Each opens its own read-only connection to the store at `store_dir` (which must exist and be
// migrated); the store may be written by another process meanwhile (WAL). Construction throws evident::error
// (not_found for a missing store or, for dense, a missing vectors.faiss).

// Lexical: FTS5 over chunks_fts with evident_bm25 (Lucene IDF, configurable k1/b; see retrieval/fts-bm25.h).
// Defaults are Anserini's BEIR "flat" BM25 (k1 0.9, b 0.4, Lucene's English stop words removed from the query).
// Large stores: FTS5 has no dynamic pruning (WAND), so an OR query scores every chunk holding any query term; at 1M
// chunks a common term alone means ~10^5-10^6 rows scored per query. Above `prune_above_chunks` the retriever looks
// up each term's document frequency (cached; counting stops at `max_postings`) and searches only the rarest terms
// whose frequencies sum to at most `max_postings` (at least one term). Frequent terms carry little IDF, so the top
// of the ranking mostly survives; it is an approximation, measured in bench/RESULTS.md. Below the threshold, BM25
// is exact.
// State: the retriever caches term frequencies (pruned mode) and a copy of every chunk's token count (2 bytes per
// chunk, read at the first pruned query or the second exact one; kept fresh with PRAGMA data_version). Not
// thread-safe: one retriever per thread.
struct lexical_options {
  double k1 = 0.9;                      // term-frequency saturation
  double b = 0.4;                       // length normalisation (0 = none, 1 = full)
  query_options query;                  // query -> terms (stop words, term cap)
  int64_t prune_above_chunks = 200000;  // exact BM25 up to this many chunks; 0 = always prune
  int64_t max_postings = 15000;         // posting budget of a pruned query
  // Unfiltered queries read the posting lists through FTS5's extension API and score them in C++ (same scores as
  // evident_bm25, several times faster: see retrieval/lexical.cpp). false: rank with evident_bm25 in SQL (as
  // filtered queries always do); kept for comparison.
  bool direct_scoring = true;
};
std::unique_ptr<retriever_i> make_lexical(const std::filesystem::path& store_dir, const lexical_options& opt = {});

// Dense: FAISS over DIR/vectors.faiss (ids = chunk ids), queries embedded by ingest::make_embedder(store).
// Score = inner product of L2-normalised vectors (cosine). Works with any index type the file holds (flat, IVF,
// HNSW, wrapped in an IndexIDMap/IndexIDMap2); IVF and HNSW use the search-time knobs below. An IVF-Flat
// inner-product index with chunk ids in its lists (what retrieval/vectors.h writes) is scanned by the retriever itself
// (AVX2+FMA when the CPU has them; the same lists and top-k as FAISS's search), everything else by FAISS.
// Filters are applied by over-fetching and checking each hit's document in SQLite (x4, x16, ... up to the whole index).
struct dense_options {
  int ivf_nprobe = 32;       // IVF lists visited per query
  int hnsw_ef_search = 128;  // HNSW candidate list size (>= k is enforced)
  int omp_threads = 1;       // FAISS threads per query (1: the server runs queries concurrently instead)
};
std::unique_ptr<retriever_i> make_dense(const std::filesystem::path& store_dir, const dense_options& opt = {});

// Hybrid: fusion of a lexical and a dense retriever over each one's top `candidates`, then optional MMR re-ranking
// (lambda * fused / best fused - (1 - lambda) * max word-set Jaccard similarity to the hits already chosen; lambda = 1
// disables it) and an optional per-document cap. `dense` may be null (lexical only). Two fusions:
//   rrf     reciprocal-rank fusion  sum_r w_r / (rrf_k + rank_r(c)), rank 1-based (Cormack et al.; k = 60)
//   convex  sum_r w_r * score_r(c) / best score in r's list (a chunk absent from a list gets 0 from it)
// Defaults (convex, dense weight 0.1) were chosen on SciFact's *train* split for the default hashed TF-IDF embedder,
// whose dense ranking is much weaker than BM25 (nDCG@10 0.41 vs 0.68): RRF at equal weights then drags BM25 down
// (0.57), and RRF at any dense weight >= 0.02 stayed below BM25, because ranks discard how far ahead BM25's top hits
// are. With a neural embedder, rrf with equal weights is the usual choice (bench/RESULTS.md has the numbers).
// search() runs the dense retriever on a second thread while the lexical one runs (each owns its connection); a
// hybrid retriever itself is still one-thread-at-a-time.
struct hybrid_options {
  std::string fusion = "convex";  // rrf | convex
  int rrf_k = 60;
  double lexical_weight = 1.0;
  double dense_weight = 0.1;
  int candidates = 100;      // hits taken from each retriever before fusion (>= k is enforced)
  double mmr_lambda = 1.0;   // 1 = no MMR; 0.7 is a common diversity setting
  int per_document_cap = 0;  // at most this many hits per document (0 = no cap)
};
std::unique_ptr<retriever_i> make_hybrid(std::unique_ptr<retriever_i> lexical, std::unique_ptr<retriever_i> dense,
                                         const std::filesystem::path& store_dir, const hybrid_options& opt = {});

// Keeps at most `cap` hits per document (first = best ones), preserving order. cap <= 0 keeps everything.
std::vector<hit> cap_per_document(std::vector<hit> hits, int cap);

}  // namespace evident::retrieval
