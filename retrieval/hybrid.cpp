// Hybrid retriever: weighted fusion (reciprocal-rank or convex), optional MMR, per-document cap.
#include <algorithm>
#include <cmath>
#include <future>
#include <memory>
#include <set>
#include <unordered_map>

#include "engine/base/error.h"
#include "ingest/store.h"
#include "retrieval/query.h"
#include "retrieval/retriever.h"

namespace evident::retrieval {

namespace {

class hybrid_retriever final : public retriever_i {
 public:
  hybrid_retriever(std::unique_ptr<retriever_i> lexical, std::unique_ptr<retriever_i> dense,
                   const std::filesystem::path& dir, const hybrid_options& opt)
      : lexical_(std::move(lexical)), dense_(std::move(dense)), dir_(dir), opt_(opt) {
    EV_ASSERT(lexical_ != nullptr);
    EV_THROW_IF_NOT_MSG(opt.rrf_k >= 0 && opt.mmr_lambda >= 0 && opt.mmr_lambda <= 1 && opt.candidates > 0,
                        "hybrid options: expected rrf_k >= 0, mmr_lambda in [0, 1], candidates > 0");
    EV_THROW_IF_NOT_MSG(opt.fusion == "rrf" || opt.fusion == "convex", "hybrid fusion '", opt.fusion,
                        "': expected rrf or convex");
  }

  std::string name() const override { return "hybrid"; }

  std::vector<hit> search(const std::string& query, int k, const filter& f) override {
    if (k <= 0) return {};
    const int depth = std::max(k, opt_.candidates);
    struct fused {
      hit h;
      double rrf = 0;
    };
    std::unordered_map<int64_t, fused> by_chunk;
    std::vector<int64_t> order;  // first-seen order, for deterministic ties
    const bool convex = opt_.fusion == "convex";
    auto add = [&](const std::vector<hit>& hits, double w) {
      // convex: scores scaled by the list's best score (bm25 has no fixed range; cosine is already in [0, 1]).
      const double top = !hits.empty() && hits[0].score > 0 ? hits[0].score : 1.0;
      for (size_t i = 0; i < hits.size(); ++i) {
        auto [it, fresh] = by_chunk.try_emplace(hits[i].chunk_id, fused{hits[i], 0.0});
        if (fresh) order.push_back(hits[i].chunk_id);
        it->second.rrf += convex ? w * hits[i].score / top : w / (opt_.rrf_k + static_cast<double>(i + 1));
      }
    };
    // The two retrievers own separate connections: run the dense search on a second thread meanwhile.
    std::future<std::vector<hit>> dense_hits;
    if (dense_) dense_hits = std::async(std::launch::async, [&] { return dense_->search(query, depth, f); });
    std::vector<hit> lexical_hits = lexical_->search(query, depth, f);
    add(lexical_hits, opt_.lexical_weight);
    if (dense_) add(dense_hits.get(), opt_.dense_weight);

    std::vector<hit> ranked;
    ranked.reserve(order.size());
    for (int64_t id : order) {
      auto& x = by_chunk[id];
      x.h.score = x.rrf;
      ranked.push_back(x.h);
    }
    std::stable_sort(ranked.begin(), ranked.end(), [](const hit& a, const hit& b) { return a.score > b.score; });
    if (opt_.mmr_lambda < 1.0) ranked = mmr(std::move(ranked), k);
    ranked = cap_per_document(std::move(ranked), opt_.per_document_cap);
    if (ranked.size() > static_cast<size_t>(k)) ranked.resize(k);
    return ranked;
  }

 private:
  // Maximal marginal relevance over the fused list: relevance = rrf / max rrf, similarity = Jaccard of the chunks'
  // lower-cased word sets (cheap, needs no vectors, and catches the near-duplicate overlapping chunks MMR is for).
  std::vector<hit> mmr(std::vector<hit> ranked, int k) {
    if (ranked.empty()) return ranked;
    if (!store_) store_ = std::make_unique<ingest::store>(dir_, ingest::open_mode::read_only);
    const size_t pool = std::min(ranked.size(), static_cast<size_t>(std::max(k, opt_.candidates)));
    ranked.resize(pool);
    std::vector<std::set<std::string>> words(pool);
    query_options qo;
    qo.remove_stopwords = true;
    qo.max_terms = 4096;
    for (size_t i = 0; i < pool; ++i) {
      auto c = store_->chunk(ranked[i].chunk_id);
      if (!c) continue;
      for (auto& t : query_terms(c->text, qo)) {
        for (auto& ch : t)
          if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
        words[i].insert(t);
      }
    }
    const double top = ranked[0].score > 0 ? ranked[0].score : 1.0;
    std::vector<bool> taken(pool, false);
    std::vector<size_t> chosen;
    std::vector<hit> out;
    while (out.size() < static_cast<size_t>(k) && out.size() < pool) {
      double best = -1e300;
      size_t best_i = 0;
      for (size_t i = 0; i < pool; ++i) {
        if (taken[i]) continue;
        double sim = 0;
        for (size_t j : chosen) {
          size_t inter = 0;
          for (auto& w : words[i]) inter += words[j].count(w);
          const size_t uni = words[i].size() + words[j].size() - inter;
          sim = std::max(sim, uni ? static_cast<double>(inter) / static_cast<double>(uni) : 0.0);
        }
        const double v = opt_.mmr_lambda * ranked[i].score / top - (1 - opt_.mmr_lambda) * sim;
        if (v > best) best = v, best_i = i;
      }
      taken[best_i] = true;
      chosen.push_back(best_i);
      out.push_back(ranked[best_i]);
    }
    return out;
  }

  std::unique_ptr<retriever_i> lexical_, dense_;
  std::filesystem::path dir_;
  hybrid_options opt_;
  std::unique_ptr<ingest::store> store_;  // opened on first MMR use
};

}  // namespace

std::unique_ptr<retriever_i> make_hybrid(std::unique_ptr<retriever_i> lexical, std::unique_ptr<retriever_i> dense,
                                         const std::filesystem::path& store_dir, const hybrid_options& opt) {
  return std::make_unique<hybrid_retriever>(std::move(lexical), std::move(dense), store_dir, opt);
}

}  // namespace evident::retrieval
