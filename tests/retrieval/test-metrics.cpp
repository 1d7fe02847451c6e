// Metric code against hand-computed cases (values worked out on paper; log2(3) = 1.5849625, log2(4) = 2).
#include <gtest/gtest.h>

#include "retrieval/metrics.h"

namespace evident::retrieval {

// Tolerance: the expected values below are written with 6 significant digits.
constexpr double eps = 1e-6;

TEST(Metrics, BinaryRelevance) {
  const std::vector<std::string> ranked = {"d1", "d2", "d3"};
  const relevance rel = {{"d2", 1}, {"d3", 1}, {"d4", 1}};
  // DCG = 1/log2(3) + 1/log2(4) = 0.6309298 + 0.5; IDCG = 1 + 0.6309298 + 0.5.
  EXPECT_NEAR(ndcg_at(ranked, rel, 10), 1.1309298 / 2.1309298, eps);
  EXPECT_NEAR(recall_at(ranked, rel, 100), 2.0 / 3.0, eps);
  EXPECT_NEAR(mrr_at(ranked, rel, 10), 0.5, eps);
  // Cut at 2: DCG = 0.6309298, IDCG = 1.6309298.
  EXPECT_NEAR(ndcg_at(ranked, rel, 2), 0.6309298 / 1.6309298, eps);
  EXPECT_NEAR(recall_at(ranked, rel, 2), 1.0 / 3.0, eps);
  EXPECT_NEAR(mrr_at(ranked, rel, 1), 0.0, eps);
}

TEST(Metrics, GradedRelevanceUsesLevelAsGain) {
  // trec_eval gain = level: DCG = 1 + 2/log2(3) = 2.2618595; IDCG = 2 + 1/log2(3) = 2.6309298.
  EXPECT_NEAR(ndcg_at({"a", "b"}, {{"a", 1}, {"b", 2}}, 10), 2.2618595 / 2.6309298, eps);
  // Zero and negative levels gain nothing and are not relevant.
  EXPECT_NEAR(ndcg_at({"a", "b"}, {{"a", 0}, {"b", 1}}, 10), 0.6309298, eps);
  EXPECT_NEAR(recall_at({"a"}, {{"a", 0}, {"b", 1}}, 100), 0.0, eps);
  EXPECT_NEAR(mrr_at({"a", "c", "b"}, {{"a", -1}, {"b", 1}}, 10), 1.0 / 3.0, eps);
}

TEST(Metrics, CutoffsAndEmptyCases) {
  std::vector<std::string> ranked;
  for (int i = 0; i < 150; ++i) {
    std::string id = "x";
    id += std::to_string(i);
    ranked.push_back(id);
  }
  const relevance rel = {{"x10", 1}, {"x120", 1}};  // ranks 11 and 121
  EXPECT_NEAR(ndcg_at(ranked, rel, 10), 0.0, eps);
  EXPECT_NEAR(recall_at(ranked, rel, 100), 0.5, eps);
  EXPECT_NEAR(mrr_at(ranked, rel, 10), 0.0, eps);
  EXPECT_NEAR(ndcg_at({}, rel, 10), 0.0, eps);
  EXPECT_NEAR(ndcg_at({"a"}, {}, 10), 0.0, eps);
}

TEST(Metrics, TiesBrokenByDocIdDescending) {
  const auto r = rank_documents({{"a", 1.0}, {"c", 2.0}, {"b", 1.0}});
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0], "c");
  EXPECT_EQ(r[1], "b");
  EXPECT_EQ(r[2], "a");
}

TEST(Metrics, EvaluateAveragesOverQrelsAndDropsIdenticalIds) {
  qrels_t q = {{"q1", {{"d1", 1}}}, {"q2", {{"d2", 1}}}, {"q3", {{"d3", 1}}}};
  run_t run = {{"q1", {{"q1", 9.0}, {"d1", 5.0}}},  // q1 retrieved itself first: dropped, d1 becomes rank 1
               {"q2", {{"x", 3.0}, {"d2", 2.0}}}};  // q3 has no results: counts as 0
  auto s = evaluate(q, run);
  EXPECT_EQ(s.queries, 3);
  EXPECT_NEAR(s.ndcg_10, (1.0 + 0.6309298 + 0.0) / 3.0, eps);
  EXPECT_NEAR(s.recall_100, 2.0 / 3.0, eps);
  EXPECT_NEAR(s.mrr_10, (1.0 + 0.5) / 3.0, eps);
  auto keep = evaluate(q, run, false);
  EXPECT_NEAR(keep.mrr_10, (0.5 + 0.5) / 3.0, eps);
}

}  // namespace evident::retrieval
