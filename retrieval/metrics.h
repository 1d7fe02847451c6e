// Retrieval metrics exactly as BEIR reports them (pytrec_eval / trec_eval definitions, BEIR's own MRR).
//
//   nDCG@k     DCG = sum_{i=1..k} gain_i / log2(i + 1), gain = the qrels relevance (trec_eval's ndcg_cut uses the
//              level itself, not 2^rel - 1; levels <= 0 gain nothing); IDCG from all judged documents of the query
//              sorted by relevance, cut at k. 0 when the query has no relevant document.
//   Recall@k   |relevant (rel > 0) in the top k| / |relevant|.
//   MRR@k      1 / rank of the first relevant document within the top k, 0 if none (BEIR's mrr, rel > 0).
// Ranking: documents sorted by score descending; ties broken by document id descending (trec_eval sorts by score, then
// docno in decreasing strcmp order). BEIR drops a retrieved document whose id equals the query id before evaluating
// (ignore_identical_ids=True by default); evaluate() does the same when asked.
// Averages: over the queries of `qrels` that have at least one judged document (as pytrec_eval evaluates the queries
// present in qrels; a query without results scores 0 on every metric).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace evident::retrieval {

using relevance = std::map<std::string, int>;              // doc id -> relevance level (one query)
using qrels_t = std::map<std::string, relevance>;          // query id -> judgements
using scored_docs = std::vector<std::pair<std::string, double>>;  // doc id, score (any order)
using run_t = std::map<std::string, scored_docs>;          // query id -> retrieved documents

// Sorts by the rule above and returns doc ids best first.
std::vector<std::string> rank_documents(const scored_docs& docs);

double ndcg_at(const std::vector<std::string>& ranked, const relevance& rel, int k);
double recall_at(const std::vector<std::string>& ranked, const relevance& rel, int k);
double mrr_at(const std::vector<std::string>& ranked, const relevance& rel, int k);

struct eval_summary {
  double ndcg_10 = 0, recall_100 = 0, mrr_10 = 0;
  int queries = 0;  // queries averaged over
};
eval_summary evaluate(const qrels_t& qrels, const run_t& run, bool ignore_identical_ids = true);

}  // namespace evident::retrieval
