// Dense retriever: FAISS over DIR/vectors.faiss, queries embedded with the store's embedder.
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/index_io.h>
#include <omp.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EVIDENT_DENSE_X86 1
#endif

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "ingest/embedder.h"
#include "ingest/store.h"
#include "retrieval/filter-sql.h"
#include "retrieval/retriever.h"

namespace evident::retrieval {

namespace {

using faiss_id = faiss::Index::idx_t;

// Inner products of q with n rows of x (row-major, d floats each). The distribution's FAISS is built for baseline
// x86-64 and scans IVF lists with its scalar reference loop; on a CPU with AVX2+FMA this one is ~3x faster.
void ip_rows_scalar(const float* q, const float* x, size_t n, size_t d, float* out) {
  for (size_t i = 0; i < n; ++i) {
    const float* r = x + i * d;
    float s = 0;
    for (size_t j = 0; j < d; ++j) s += q[j] * r[j];
    out[i] = s;
  }
}

#ifdef EVIDENT_DENSE_X86
__attribute__((target("avx2,fma"))) void ip_rows_avx2(const float* q, const float* x, size_t n, size_t d, float* out) {
  for (size_t i = 0; i < n; ++i) {
    const float* r = x + i * d;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 32 <= d; j += 32) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), _mm256_loadu_ps(r + j), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 8), _mm256_loadu_ps(r + j + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 16), _mm256_loadu_ps(r + j + 16), a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 24), _mm256_loadu_ps(r + j + 24), a3);
    }
    for (; j + 8 <= d; j += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), _mm256_loadu_ps(r + j), a0);
    const __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
    float sum = _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1)));
    for (; j < d; ++j) sum += q[j] * r[j];
    out[i] = sum;
  }
}
#endif

using ip_rows_fn = void (*)(const float*, const float*, size_t, size_t, float*);
ip_rows_fn pick_ip_rows() {
#ifdef EVIDENT_DENSE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ip_rows_avx2;
#endif
  return ip_rows_scalar;
}

// The n best (largest score; ties: smaller id) of a stream of (score, id), kept in a min-heap.
class top_n {
 public:
  explicit top_n(size_t n) : n_(n) { heap_.reserve(n + 1); }
  float floor() const { return heap_.size() < n_ ? -std::numeric_limits<float>::infinity() : heap_.front().first; }
  void push(float score, int64_t id) {
    if (heap_.size() < n_) {
      heap_.push_back({score, id});
      std::push_heap(heap_.begin(), heap_.end(), worse_first);
    } else if (worse_first(std::pair<float, int64_t>{score, id}, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), worse_first);
      heap_.back() = {score, id};
      std::push_heap(heap_.begin(), heap_.end(), worse_first);
    }
  }
  std::vector<std::pair<float, int64_t>> sorted() {  // best first
    std::sort(heap_.begin(), heap_.end(), worse_first);
    return std::move(heap_);
  }

 private:
  // a before b in heap order (the heap's front is the worst kept): a is better than b.
  static bool worse_first(const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  }
  size_t n_;
  std::vector<std::pair<float, int64_t>> heap_;
};

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
    if (auto* m = dynamic_cast<faiss::IndexIDMap2*>(core))
      core = m->index;
    else if (auto* m1 = dynamic_cast<faiss::IndexIDMap*>(core))
      core = m1->index;
    ivf_ = dynamic_cast<faiss::IndexIVF*>(core);
    hnsw_ = dynamic_cast<faiss::IndexHNSW*>(core);
    // IVF-Flat with inner product, ids stored in the lists, a flat coarse quantizer: scanned here (see ip_rows_avx2).
    if (auto* flat = dynamic_cast<faiss::IndexIVFFlat*>(core);
        flat != nullptr && core == index_.get() && flat->metric_type == faiss::METRIC_INNER_PRODUCT &&
        flat->code_size == flat->d * sizeof(float) && flat->invlists != nullptr &&
        dynamic_cast<faiss::IndexFlat*>(flat->quantizer) != nullptr &&
        flat->quantizer->metric_type == faiss::METRIC_INNER_PRODUCT) {
      ivf_flat_ = flat;
      ip_rows_ = pick_ip_rows();
    }
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
    if (ivf_flat_ != nullptr) {
      scan_ivf_flat(q, n, dist, ids);
    } else if (ivf_ != nullptr) {
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

  // IVF-Flat search as FAISS does it (the nprobe lists whose centroids have the largest inner product with q, every
  // vector in them scored by inner product), with the SIMD kernel. Missing results are id -1.
  void scan_ivf_flat(const float* q, int64_t n, float* dist, faiss_id* ids) {
    const size_t d = static_cast<size_t>(ivf_flat_->d), nlist = ivf_flat_->nlist;
    const auto* quant = static_cast<const faiss::IndexFlat*>(ivf_flat_->quantizer);
    scores_.resize(std::max<size_t>(nlist, scores_.size()));
    ip_rows_(q, quant->get_xb(), nlist, d, scores_.data());
    top_n lists(std::min<size_t>(nlist, static_cast<size_t>(std::max(1, opt_.ivf_nprobe))));
    for (size_t l = 0; l < nlist; ++l) lists.push(scores_[l], static_cast<int64_t>(l));
    top_n best(static_cast<size_t>(n));
    for (auto& [cs, l] : lists.sorted()) {
      const size_t len = ivf_flat_->invlists->list_size(l);
      if (len == 0) continue;
      faiss::InvertedLists::ScopedCodes codes(ivf_flat_->invlists, l);
      faiss::InvertedLists::ScopedIds lid(ivf_flat_->invlists, l);
      if (scores_.size() < len) scores_.resize(len);
      ip_rows_(q, reinterpret_cast<const float*>(codes.get()), len, d, scores_.data());
      const float fl = best.floor();
      for (size_t i = 0; i < len; ++i)
        if (scores_[i] >= fl) best.push(scores_[i], lid.get()[i]);
    }
    auto out = best.sorted();
    for (int64_t i = 0; i < n; ++i) {
      dist[i] = i < static_cast<int64_t>(out.size()) ? out[i].first : -std::numeric_limits<float>::infinity();
      ids[i] = i < static_cast<int64_t>(out.size()) ? out[i].second : -1;
    }
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
  faiss::IndexIVFFlat* ivf_flat_ = nullptr;  // set when scan_ivf_flat applies
  ip_rows_fn ip_rows_ = nullptr;
  std::vector<float> scores_;  // scratch
};

}  // namespace

std::unique_ptr<retriever_i> make_dense(const std::filesystem::path& store_dir, const dense_options& opt) {
  return std::make_unique<dense_retriever>(store_dir, opt);
}

}  // namespace evident::retrieval
