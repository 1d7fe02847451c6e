// Building DIR/vectors.faiss for a store whose chunks were written without the indexer (BEIR evaluation, the
// generated 1M-chunk benchmark store). The indexer (ingest/) owns the normal path; this one exists so retrieval can
// be measured on large or foreign corpora and to choose the index type for large stores.
//
// Index kinds (all use inner product on L2-normalised vectors, ids = chunk ids):
//   flat   IndexIDMap2(IndexFlatIP): exact; ~n * dim * 4 bytes; query cost O(n * dim) (about 40+ ms at 1M x 384
//          on 2 cores), fine up to ~200K chunks.
//   ivf    IndexIVFFlat with `ivf_lists` k-means lists (default 4 * sqrt(n)), trained on up to 64 * lists sampled
//          vectors; queries visit `nprobe` lists (dense_options::ivf_nprobe), cost ~ n * nprobe / lists * dim.
//   hnsw   IndexIDMap2(IndexHNSWFlat(M)); fastest queries, slowest build (not used by default).
#pragma once

#include <string>

namespace evident::ingest {
class store;
}

namespace evident::retrieval {

struct vector_index_options {
  std::string kind = "flat";   // flat | ivf | hnsw
  int ivf_lists = 0;           // 0 = 4 * sqrt(n), at least 1
  int hnsw_m = 32;
  int batch = 4096;            // chunks embedded per batch
};

// Embeds every chunk of the store with the default embedder, writes the embedder's df table and meta
// (embedder.name, embedder.dim, embedder.df_n) and saves vectors.faiss (temp + rename). Replaces existing vectors.
// Throws evident::error (internal when this build has no default embedder).
void write_store_vectors(ingest::store& s, const vector_index_options& opt = {});

}  // namespace evident::retrieval
