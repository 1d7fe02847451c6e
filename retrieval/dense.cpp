// Dense retriever: FAISS over DIR/vectors.faiss, queries embedded with the store's embedder.
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>
#include <omp.h>

#include <algorithm>
#include <memory>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "ingest/embedder.h"
#include "ingest/store.h"
#include "retrieval/filter-sql.h"
#include "retrieval/retriever.h"

namespace evident::retrieval {

namespace {

using faiss_id = faiss::Index::idx_t;

class dense_retriever final : public retriever_i {
 public:
  dense_retriever(const std::filesystem::path& dir, const dense_options& opt)
      : store_(dir, ingest::open_mode::read_only), opt_(opt) {
    const auto path = store_.vectors_path();
    EV_THROW_IF_NOT_KIND(std::filesystem::exists(path), not_found, "no vector index at ", path.string(),
                         " (the store has no dense vectors; re-run ingest)");
    try {
      index_.reset(faiss::read_index(path.string().c_str(), faiss::IO_FLAG_READ_ONLY));
    } catch (const std::exception& e) {
      EV_THROW(corrupt, "cannot read vector index ", path.string(), ": ", e.what());
    }
    embedder_ = ingest::make_embedder(store_);
    EV_THROW_IF_NOT_KIND(index_->d == embedder_->dim(), corrupt, "vector index ", path.string(), " has dimension ",
                         index_->d, " but the store's embedder ", embedder_->name(), " makes ", embedder_->dim());
    // Find the searchable core below an id map, for its search-time knobs.
    faiss::Index* core = index_.get();
    if (auto* m = dynamic_cast<faiss::IndexIDMap2*>(core)) core = m->index;
    else if (auto* m1 = dynamic_cast<faiss::IndexIDMap*>(core)) core = m1->index;
    ivf_ = dynamic_cast<faiss::IndexIVF*>(core);
    hnsw_ = dynamic_cast<faiss::IndexHNSW*>(core);
  }

  std::string name() const override { return "dense"; }

  std::vector<hit> search(const std::string& query, int k, const filter& f) override {
    std::vector<hit> out;
    if (k <= 0 || index_->ntotal == 0) return out;
    std::vector<float> q(embedder_->dim());
    embedder_->embed_query(query, q.data());
    bool zero = true;
    for (float v : q) zero = zero && v == 0.0f;
    if (zero) return out;  // nothing embeddable (empty or punctuation-only query)

    const bool filtered = !detail::filter_empty(f);
    int64_t fetch = filtered ? static_cast<int64_t>(k) * 4 : k;
    for (;;) {
      fetch = std::min<int64_t>(fetch, index_->ntotal);
      std::vector<float> dist(fetch);
      std::vector<faiss_id> ids(fetch);
      search_index(q.data(), fetch, dist.data(), ids.data());
      std::vector<std::pair<int64_t, float>> cand;
      for (int64_t i = 0; i < fetch; ++i)
        if (ids[i] >= 0) cand.push_back({ids[i], dist[i]});
      out = resolve(cand, f, k);
      if (static_cast<int>(out.size()) >= k || fetch >= index_->ntotal || !filtered) break;
      fetch *= 4;
    }
    return out;
  }

 private:
  void search_index(const float* q, int64_t n, float* dist, faiss_id* ids) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(std::max(1, opt_.omp_threads));
    if (ivf_ != nullptr) {
      faiss::SearchParametersIVF p;
      p.nprobe = static_cast<size_t>(std::max(1, opt_.ivf_nprobe));
      index_->search(1, q, n, dist, ids, &p);
    } else if (hnsw_ != nullptr) {
      faiss::SearchParametersHNSW p;
      p.efSearch = std::max<int>(opt_.hnsw_ef_search, static_cast<int>(n));
      index_->search(1, q, n, dist, ids, &p);
    } else {
      index_->search(1, q, n, dist, ids);
    }
    omp_set_num_threads(saved);
  }

  // Chunk ids -> hits with document id and ordinal, dropping ids that the filter excludes or that no longer exist
  // (a vector whose chunk was deleted before the index was saved).
  std::vector<hit> resolve(const std::vector<std::pair<int64_t, float>>& cand, const filter& f, int k) {
    std::vector<hit> out;
    if (cand.empty()) return out;
    std::vector<int64_t> ids;
    for (auto& c : cand) ids.push_back(c.first);
    std::string q = "SELECT c.id, c.document_id, c.ordinal FROM chunks c ";
    if (!detail::filter_empty(f)) q += "JOIN documents d ON d.id = c.document_id ";
    q += "WHERE c.id IN (SELECT value FROM json_each(?1))" + detail::filter_conditions(f);
    auto s = store_.db().prepare(q);
    s.bind(1, nlohmann::json(ids).dump());
    detail::bind_filter(s, f);
    std::unordered_map<int64_t, std::pair<int64_t, int>> found;
    while (s.step()) found[s.col_int(0)] = {s.col_int(1), static_cast<int>(s.col_int(2))};
    for (auto& [id, score] : cand) {
      auto it = found.find(id);
      if (it == found.end()) continue;
      out.push_back({id, static_cast<double>(score), it->second.first, it->second.second});
      if (static_cast<int>(out.size()) >= k) break;
    }
    return out;
  }

  ingest::store store_;
  dense_options opt_;
  std::unique_ptr<faiss::Index> index_;
  std::unique_ptr<ingest::embedder_i> embedder_;
  faiss::IndexIVF* ivf_ = nullptr;
  faiss::IndexHNSW* hnsw_ = nullptr;
};

}  // namespace

std::unique_ptr<retriever_i> make_dense(const std::filesystem::path& store_dir, const dense_options& opt) {
  return std::make_unique<dense_retriever>(store_dir, opt);
}

}  // namespace evident::retrieval
