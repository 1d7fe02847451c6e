#include "retrieval/metrics.h"

#include <algorithm>
#include <cmath>

namespace evident::retrieval {

std::vector<std::string> rank_documents(const scored_docs& docs) {
  scored_docs d = docs;
  std::sort(d.begin(), d.end(), [](const auto& a, const auto& b) {
    if (a.second != b.second) return a.second > b.second;
    return a.first > b.first;
  });
  std::vector<std::string> out;
  out.reserve(d.size());
  for (auto& [id, s] : d) out.push_back(id);
  return out;
}

double ndcg_at(const std::vector<std::string>& ranked, const relevance& rel, int k) {
  double dcg = 0;
  for (int i = 0; i < k && i < static_cast<int>(ranked.size()); ++i) {
    auto it = rel.find(ranked[i]);
    if (it != rel.end() && it->second > 0) dcg += it->second / std::log2(i + 2.0);
  }
  std::vector<int> levels;
  for (auto& [id, r] : rel)
    if (r > 0) levels.push_back(r);
  std::sort(levels.rbegin(), levels.rend());
  double idcg = 0;
  for (int i = 0; i < k && i < static_cast<int>(levels.size()); ++i) idcg += levels[i] / std::log2(i + 2.0);
  return idcg > 0 ? dcg / idcg : 0.0;
}

double recall_at(const std::vector<std::string>& ranked, const relevance& rel, int k) {
  int n_rel = 0;
  for (auto& [id, r] : rel) n_rel += r > 0;
  if (n_rel == 0) return 0;
  int found = 0;
  for (int i = 0; i < k && i < static_cast<int>(ranked.size()); ++i) {
    auto it = rel.find(ranked[i]);
    found += it != rel.end() && it->second > 0;
  }
  return static_cast<double>(found) / n_rel;
}

double mrr_at(const std::vector<std::string>& ranked, const relevance& rel, int k) {
  for (int i = 0; i < k && i < static_cast<int>(ranked.size()); ++i) {
    auto it = rel.find(ranked[i]);
    if (it != rel.end() && it->second > 0) return 1.0 / (i + 1);
  }
  return 0;
}

eval_summary evaluate(const qrels_t& qrels, const run_t& run, bool ignore_identical_ids) {
  eval_summary s;
  for (auto& [qid, rel] : qrels) {
    if (rel.empty()) continue;
    ++s.queries;
    auto it = run.find(qid);
    if (it == run.end()) continue;
    scored_docs docs;
    for (auto& d : it->second)
      if (!(ignore_identical_ids && d.first == qid)) docs.push_back(d);
    const auto ranked = rank_documents(docs);
    s.ndcg_10 += ndcg_at(ranked, rel, 10);
    s.recall_100 += recall_at(ranked, rel, 100);
    s.mrr_10 += mrr_at(ranked, rel, 10);
  }
  if (s.queries > 0) {
    s.ndcg_10 /= s.queries;
    s.recall_100 /= s.queries;
    s.mrr_10 /= s.queries;
  }
  return s;
}

}  // namespace evident::retrieval
