// retrieval::retriever_i: query, k, filter -> ranked hits over chunks of a store.
// Implementations: lexical (FTS5 bm25), dense (FAISS + the store's embedder), hybrid (reciprocal-rank fusion).
// Thread-safety: a retriever holds its own SQLite connection; use one per thread (or guard it).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace evident::retrieval {

struct filter {
  std::optional<int64_t> collection_id;  // only chunks of documents in this collection
  std::vector<int64_t> document_ids;     // when non-empty: only these documents
  std::string path_prefix;               // when non-empty: only documents whose path starts with it
};

struct hit {
  int64_t chunk_id = 0;
  double score = 0;     // higher is better; scale depends on the retriever (bm25: -bm25(), dense: cosine, rrf)
  int64_t document_id = 0;
  int ordinal = 0;      // chunk ordinal within its document
};

class retriever_i {
 public:
  virtual ~retriever_i() = default;
  virtual std::string name() const = 0;  // "bm25" | "dense" | "hybrid"
  // Top-k hits, best first. Never throws for odd query text (FTS syntax, invalid UTF-8, empty, very long): such
  // input is sanitised; an empty query returns no hits.
  virtual std::vector<hit> search(const std::string& query, int k, const filter& f = {}) = 0;
};

}  // namespace evident::retrieval
