// write_store_vectors (retrieval/vectors.h) with ingest's default embedder (hashed TF-IDF): df table + vectors.faiss.
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/index_io.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string_view>
#include <vector>

#include "engine/base/error.h"
#include "ingest/hashed-embedder.h"
#include "ingest/store.h"
#include "retrieval/vectors.h"

namespace evident::retrieval {

void write_store_vectors(ingest::store& s, const vector_index_options& opt) {
  ingest::hashed_tfidf_embedder emb;
  const int dim = emb.dim();
  const int64_t n = s.chunk_count();
  std::vector<float> vecs(static_cast<size_t>(n) * dim);
  std::vector<int64_t> ids;
  ids.reserve(n);
  std::vector<uint32_t> df(ingest::hashed_tfidf_embedder::df_buckets, 0);
  {
    auto q = s.db().prepare("SELECT id, text FROM chunks ORDER BY id");
    std::vector<uint32_t> buckets;
    while (q.step()) {
      EV_THROW_IF_NOT_KIND(static_cast<int64_t>(ids.size()) < n, internal, "chunk count changed while embedding");
      buckets.clear();
      emb.embed_one(q.col_text_view(1), vecs.data() + ids.size() * dim, &buckets);
      for (uint32_t b : buckets) ++df[b];
      ids.push_back(q.col_int(0));
    }
  }
  {
    sql::transaction tx(s.db());
    const int64_t batch = std::stoll(s.meta("fts.batch").value_or("0"));  // counted over every chunk there is
    ingest::save_df(s, df, static_cast<int64_t>(ids.size()), batch, nullptr);  // pages + meta df_n, df_batch
    tx.commit();
  }
  s.set_meta("embedder.name", emb.name());
  s.set_meta("embedder.dim", std::to_string(dim));

  const auto count = static_cast<faiss::Index::idx_t>(ids.size());
  std::unique_ptr<faiss::Index> index;
  if (opt.kind == "flat") {
    auto m = std::make_unique<faiss::IndexIDMap2>(new faiss::IndexFlatIP(dim));
    m->own_fields = true;
    m->add_with_ids(count, vecs.data(), ids.data());
    index = std::move(m);
  } else if (opt.kind == "ivf") {
    int lists = opt.ivf_lists > 0 ? opt.ivf_lists : std::max(1, static_cast<int>(4 * std::sqrt(double(count))));
    lists = static_cast<int>(std::min<int64_t>(lists, std::max<int64_t>(1, count)));
    auto* quantizer = new faiss::IndexFlatIP(dim);
    auto ivf = std::make_unique<faiss::IndexIVFFlat>(quantizer, dim, lists, faiss::METRIC_INNER_PRODUCT);
    ivf->own_fields = true;
    // Train on a random sample (64 per list is plenty for k-means here and keeps the build minutes, not hours).
    const int64_t n_train = std::min<int64_t>(count, static_cast<int64_t>(lists) * 64);
    std::vector<float> train(static_cast<size_t>(n_train) * dim);
    std::vector<int64_t> pick(count);
    for (int64_t i = 0; i < count; ++i) pick[i] = i;
    std::mt19937_64 rng(42);
    std::shuffle(pick.begin(), pick.end(), rng);
    for (int64_t i = 0; i < n_train; ++i)
      std::copy_n(vecs.data() + pick[i] * dim, dim, train.data() + i * dim);
    ivf->train(n_train, train.data());
    ivf->add_with_ids(count, vecs.data(), ids.data());
    index = std::move(ivf);
  } else if (opt.kind == "hnsw") {
    auto* h = new faiss::IndexHNSWFlat(dim, opt.hnsw_m, faiss::METRIC_INNER_PRODUCT);
    auto m = std::make_unique<faiss::IndexIDMap2>(h);
    m->own_fields = true;
    m->add_with_ids(count, vecs.data(), ids.data());
    index = std::move(m);
  } else {
    EV_THROW(invalid_input, "vector index kind '", opt.kind, "': expected flat, ivf or hnsw");
  }
  const auto path = s.vectors_path();
  const auto tmp = path.string() + ".tmp";
  faiss::write_index(index.get(), tmp.c_str());
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  EV_THROW_IF_NOT_KIND(!ec, io, "cannot move ", tmp, " to ", path.string(), ": ", ec.message());
}

}  // namespace evident::retrieval
