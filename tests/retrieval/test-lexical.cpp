// Lexical retriever: evident_bm25 scores against the BM25 formula computed here from hand-counted statistics,
// ranking, and filters.
#include <gtest/gtest.h>

#include <cmath>

#include "ingest/store.h"
#include "retrieval/retriever.h"
#include "tests/retrieval/store-fixture.h"
#include "tests/test-util.h"

namespace evident::retrieval {

namespace {
// Lucene BM25 with the (k1 + 1) numerator factor, as documented in retrieval/fts-bm25.h.
double bm25_term(double N, double n, double tf, double dl, double avgdl, double k1, double b) {
  const double idf = std::log(1.0 + (N - n + 0.5) / (n + 0.5));
  return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl));
}
}  // namespace

TEST(Lexical, ScoresMatchBm25Formula) {
  auto dir = test::scratch_dir("retrieval-bm25");
  // Words the Porter stemmer leaves unchanged, so token counts are obvious.
  auto ids = test::make_store(dir, {{"1.txt", "t", {"cat dog dog"}},
                                    {"2.txt", "t", {"cat fish"}},
                                    {"3.txt", "t", {"bird bird bird fish"}},
                                    {"4.txt", "t", {"owl"}}});
  for (double k1 : {0.9, 1.2}) {
    for (double b : {0.4, 0.75}) {
      lexical_options o;
      o.k1 = k1;
      o.b = b;
      auto r = make_lexical(dir, o);
      auto hits = r->search("dog fish", 10);
      ASSERT_EQ(hits.size(), 3u);
      // N = 4 chunks, avgdl = (3 + 2 + 4 + 1) / 4 = 2.5; df(dog) = 1, df(fish) = 2.
      std::map<int64_t, double> expect = {
          {ids[0], bm25_term(4, 1, 2, 3, 2.5, k1, b)},
          {ids[1], bm25_term(4, 2, 1, 2, 2.5, k1, b)},
          {ids[2], bm25_term(4, 2, 1, 4, 2.5, k1, b)},
      };
      for (auto& h : hits) {
        // SQLite computes in double like the reference; only summation order can differ.
        EXPECT_NEAR(h.score, expect.at(h.document_id), 1e-12) << "k1=" << k1 << " b=" << b;
        EXPECT_EQ(h.ordinal, 0);
      }
      EXPECT_EQ(hits[0].document_id, ids[0]);
      EXPECT_GT(hits[1].score, hits[2].score);  // shorter document wins for the same tf
      EXPECT_EQ(r->search("dog fish", 1).size(), 1u);
      EXPECT_TRUE(r->search("zebra", 10).empty());
    }
  }
}

TEST(Lexical, Filters) {
  auto dir = test::scratch_dir("retrieval-filters");
  test::fixture_doc a{"docs/a%_.txt", "A", {"alpha shared", "beta shared"}, "one"};
  test::fixture_doc b{"docs/b.txt", "B", {"gamma shared"}, "one"};
  test::fixture_doc c{"other/c.txt", "C", {"delta shared"}, "two"};
  auto ids = test::make_store(dir, {a, b, c});
  auto r = make_lexical(dir);
  EXPECT_EQ(r->search("shared", 10).size(), 4u);
  filter f;
  f.document_ids = {ids[0], ids[2]};
  EXPECT_EQ(r->search("shared", 10, f).size(), 3u);
  filter by_path;
  by_path.path_prefix = "docs/";
  EXPECT_EQ(r->search("shared", 10, by_path).size(), 3u);
  by_path.path_prefix = "docs/a%_";  // wildcards are literal
  EXPECT_EQ(r->search("shared", 10, by_path).size(), 2u);
  by_path.path_prefix = "docs/%";
  EXPECT_EQ(r->search("shared", 10, by_path).size(), 0u);
  filter by_coll;
  {
    ingest::store s(dir);
    by_coll.collection_id = s.collection_id("two");
  }
  auto hits = r->search("shared", 10, by_coll);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].document_id, ids[2]);
  filter none;
  none.document_ids = {999};
  EXPECT_TRUE(r->search("shared", 10, none).empty());
}

TEST(Lexical, CapPerDocument) {
  std::vector<hit> h = {{1, 5, 10, 0}, {2, 4, 10, 1}, {3, 3, 11, 0}, {4, 2, 10, 2}};
  auto c = cap_per_document(h, 1);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].chunk_id, 1);
  EXPECT_EQ(c[1].chunk_id, 3);
  EXPECT_EQ(cap_per_document(h, 0).size(), 4u);
}

}  // namespace evident::retrieval
