// ingest::vector_index: the store's FAISS index (DIR/vectors.faiss), ids = chunks.id, inner product on L2-normalised
// vectors (= cosine).
//
// On disk: faiss::IndexIDMap2 over IndexFlatIP, or over IndexHNSWFlat (M = 32, inner product) once the index holds
// more than `hnsw_above` vectors. In memory for writing it is always the flat form (FAISS's HNSW cannot remove ids);
// save() builds the HNSW form when needed. Files are written to vectors.faiss.tmp, fsync'ed, renamed over
// vectors.faiss and the directory fsync'ed, so readers see the old or the new index, never a torn one.
//
// Consistency with SQLite (the source of truth): chunks are committed to SQLite first, vectors saved after. open()
// compares the index's ids with `SELECT id FROM chunks`: ids without a chunk are removed, chunks without a vector are
// re-embedded from their stored text (and an unreadable or wrong-dimension file is rebuilt from scratch). The report
// says what was repaired. Chunk ids are never reused (the indexer allocates them from meta "ingest.next_chunk_id"),
// so an id present on both sides always denotes the same text.
//
// Thread-safety: search() is const and may run concurrently with other searches; add/remove/save need exclusive
// access.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

namespace faiss {
struct Index;
}

namespace evident::ingest {

class store;
class embedder_i;

struct vector_repair {
  int64_t removed = 0;   // ids in the file with no chunk in SQLite
  int64_t added = 0;     // chunks re-embedded because the file lacked them
  bool rebuilt = false;  // the file was missing, unreadable or of another dimension
  bool changed() const { return removed || added || rebuilt; }
};

class vector_index {
 public:
  struct options {
    bool repair = true;       // re-embed missing / drop extra ids in memory
    bool save_repair = true;  // write the repaired index back (needs a writable store)
    bool for_write = false;   // keep the flat form in memory (needed for add/remove)
  };

  // Opens DIR/vectors.faiss of `s` (an empty index when absent), checks it against the chunks table and repairs as
  // `opt` says. `e` embeds chunks that lack vectors. Leftover vectors.faiss.tmp files from a crash are removed.
  static std::unique_ptr<vector_index> open(store& s, const embedder_i& e, const options& opt, vector_repair* report = nullptr);
  static std::unique_ptr<vector_index> open(store& s, const embedder_i& e) { return open(s, e, options{}); }
  // An empty flat index of dimension `dim`.
  explicit vector_index(int dim);
  ~vector_index();

  int dim() const { return dim_; }
  int64_t size() const;
  // requires: flat form (opened for_write or newly created). vecs: float [n, dim], ids: int64 [n], ids new.
  void add(int64_t n, const int64_t* ids, const float* vecs);
  // Removes ids that are present (absent ids are ignored). requires: flat form.
  void remove(const std::vector<int64_t>& ids);
  // Top-k by inner product: scores float [k], ids int64 [k] (-1 where fewer than k vectors).
  void search(const float* query, int k, float* scores, int64_t* ids) const;
  // All ids, sorted.
  std::vector<int64_t> ids() const;
  // Atomically writes the index to `file` (HNSW form above `hnsw_above` vectors).
  void save(const std::filesystem::path& file, int64_t hnsw_above = 200000) const;

  faiss::Index* index() { return index_.get(); }  // the IndexIDMap2 (for filtered searches)

 private:
  int dim_;
  std::unique_ptr<faiss::Index> index_;
};

}  // namespace evident::ingest
