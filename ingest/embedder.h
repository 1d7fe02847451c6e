// ingest::embedder_i: texts -> dense vectors for the FAISS index and for dense retrieval of queries.
// The dimension is fixed per store (recorded in meta: embedder.name, embedder.dim); a store built with one embedder
// is queried with the same one (retrieval opens it through make_embedder(store)).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace evident::ingest {

class store;

class embedder_i {
 public:
  virtual ~embedder_i() = default;
  virtual std::string name() const = 0;  // stable id stored in meta, e.g. "hashed-tfidf-v1"
  virtual int dim() const = 0;
  // Embeds n texts into out (n * dim floats, row-major, each row L2-normalised; an empty text gives a zero row).
  // Thread-safe for concurrent calls once constructed.
  virtual void embed(const std::vector<std::string_view>& texts, float* out) const = 0;
  // Query embedding (may differ from documents, e.g. an instruction prefix); default: same as embed.
  virtual void embed_query(std::string_view text, float* out) const { embed({text}, out); }
};

// The embedder a store was built with (default: hashed TF-IDF with the store's document frequencies).
std::unique_ptr<embedder_i> make_embedder(store& s);

}  // namespace evident::ingest
