// Lexical retriever: evident_bm25 scores against the BM25 formula computed here from hand-counted statistics,
// ranking, and filters.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "ingest/sqlite.h"
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

namespace {
// Same chunks, order and scores (same arithmetic; only the summation order of a chunk's terms may differ).
void expect_same_hits(retriever_i& a, retriever_i& b, const char* q) {
  auto x = a.search(q, 10), y = b.search(q, 10);
  ASSERT_EQ(x.size(), y.size()) << q;
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(x[i].chunk_id, y[i].chunk_id) << q << " rank " << i;
    EXPECT_EQ(x[i].document_id, y[i].document_id) << q << " rank " << i;
    EXPECT_EQ(x[i].ordinal, y[i].ordinal) << q << " rank " << i;
    EXPECT_NEAR(x[i].score, y[i].score, 1e-12) << q << " rank " << i;
  }
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

// Large-store mode (forced with prune_above_chunks = 0): the rarest terms whose chunk frequencies sum to at most
// max_postings are scored, with exact BM25 statistics (N, avgdl and the kept terms' frequencies over the whole store).
TEST(Lexical, PrunedQueriesScoreTheRarestTermsExactly) {
  auto dir = test::scratch_dir("retrieval-pruned");
  auto ids = test::make_store(dir, {{"1.txt", "t", {"cat dog dog"}},
                                    {"2.txt", "t", {"cat fish"}},
                                    {"3.txt", "t", {"bird bird bird fish"}},
                                    {"4.txt", "t", {"owl"}},
                                    {"5.txt", "t", {"cat cat owl"}}});
  // N = 5, avgdl = (3 + 2 + 4 + 1 + 3) / 5 = 2.6; df: cat 3, dog 1, fish 2, bird 1, owl 2.
  const double N = 5, avgdl = 2.6, k1 = 0.9, b = 0.4;
  auto pruned = [&](int64_t budget) {
    lexical_options o;
    o.prune_above_chunks = 0;
    o.max_postings = budget;
    return make_lexical(dir, o);
  };
  auto expect_scores = [&](const std::vector<hit>& hits, const std::map<int64_t, double>& expect, const char* what) {
    ASSERT_EQ(hits.size(), expect.size()) << what;
    for (size_t i = 0; i < hits.size(); ++i) {
      // Same double arithmetic as the reference; only the summation order of a chunk's terms can differ.
      EXPECT_NEAR(hits[i].score, expect.at(hits[i].document_id), 1e-12) << what;
      if (i > 0) {
        EXPECT_GE(hits[i - 1].score, hits[i].score) << what;
      }
    }
  };
  {
    // Budget 3: dog (1) + fish (2) fit, cat (3) does not.
    auto r = pruned(3);
    for (int pass = 0; pass < 2; ++pass) {  // the second pass uses the cached frequencies
      expect_scores(r->search("cat dog fish", 10),
                    {{ids[0], bm25_term(N, 1, 2, 3, avgdl, k1, b)},
                     {ids[1], bm25_term(N, 2, 1, 2, avgdl, k1, b)},
                     {ids[2], bm25_term(N, 2, 1, 4, avgdl, k1, b)}},
                    "budget 3");
    }
    // Every term above the budget: the rarest one is kept (here the only one).
    expect_scores(r->search("Cat", 10),
                  {{ids[0], bm25_term(N, 3, 1, 3, avgdl, k1, b)},
                   {ids[1], bm25_term(N, 3, 1, 2, avgdl, k1, b)},
                   {ids[4], bm25_term(N, 3, 2, 3, avgdl, k1, b)}},
                  "frequent term alone");
    EXPECT_TRUE(r->search("zebra", 10).empty());
    EXPECT_EQ(r->search("cat dog fish", 1).size(), 1u);
    // With a filter the kept terms go through the SQL path: same scores, fewer chunks.
    filter f;
    f.document_ids = {ids[1], ids[2]};
    expect_scores(r->search("cat dog fish", 10, f),
                  {{ids[1], bm25_term(N, 2, 1, 2, avgdl, k1, b)}, {ids[2], bm25_term(N, 2, 1, 4, avgdl, k1, b)}},
                  "budget 3, filtered");
  }
  {
    // A repeated term weighs twice, as in the exact mode (fish twice + dog = 5 postings <= 5).
    auto r = pruned(5);
    expect_scores(r->search("fish fish dog", 10),
                  {{ids[0], bm25_term(N, 1, 2, 3, avgdl, k1, b)},
                   {ids[1], 2 * bm25_term(N, 2, 1, 2, avgdl, k1, b)},
                   {ids[2], 2 * bm25_term(N, 2, 1, 4, avgdl, k1, b)}},
                  "repeated term");
  }
  {
    // A budget that fits every term: the same ranking and scores as exact BM25 ranked by evident_bm25 in SQL.
    auto r = pruned(1000);
    lexical_options o;
    o.direct_scoring = false;
    auto exact = make_lexical(dir, o);
    for (const char* q : {"cat dog fish owl bird", "owl cat", "bird"}) expect_same_hits(*r, *exact, q);
  }
}

// Unfiltered queries are scored outside SQL (direct_scoring) with row lengths from a copy of FTS5's %_docsize; the
// SQL path (evident_bm25) is the reference, also after the store changes under an open retriever, including a
// deleted last chunk whose id SQLite hands out again.
TEST(Lexical, DirectScoringMatchesSqlRankingAcrossStoreChanges) {
  auto dir = test::scratch_dir("retrieval-direct");
  test::make_store(dir, {{"1.txt", "t", {"cat dog dog", "cat fish"}},
                         {"2.txt", "t", {"bird bird bird fish", "owl", "cat cat owl"}}});
  lexical_options sql_opt;
  sql_opt.direct_scoring = false;
  auto direct = make_lexical(dir);
  auto sql = make_lexical(dir, sql_opt);
  const std::vector<const char*> queries = {"cat dog fish", "owl", "bird fish cat", "fish fish"};
  auto check_all = [&](const char* when) {
    for (const char* q : queries) {
      SCOPED_TRACE(when);
      expect_same_hits(*direct, *sql, q);
    }
  };
  check_all("first queries");
  check_all("store unchanged");
  {
    // Another connection replaces the last chunk: the new row gets the same id with another length.
    ingest::store w(dir);
    auto last = w.db().prepare("SELECT id, document_id FROM chunks ORDER BY id DESC LIMIT 1");
    ASSERT_TRUE(last.step());
    const int64_t id = last.col_int(0), doc = last.col_int(1);
    w.db().exec("DELETE FROM chunks WHERE id = " + std::to_string(id));
    auto ins = w.db().prepare(
        "INSERT INTO chunks(document_id, ordinal, char_start, char_end, byte_start, byte_end, page, token_count, text) "
        "VALUES (?1, 7, 0, 0, 0, 0, 1, 1, 'cat owl owl fish fish fish dog')");
    ins.bind(1, doc);
    ins.run();
    ASSERT_EQ(w.db().last_insert_rowid(), id);
  }
  check_all("after the change");
  check_all("store quiet again");
}

// While an ingest runs, the FTS file may hold entries of chunks evident.db no longer has (it lags by up to a batch
// of commits). Such an entry that outscores everything is dropped, and the next best chunk takes its place: k hits
// still come back, on the direct and the SQL ranking paths.
TEST(Lexical, EntriesOfGoneChunksDoNotShrinkTheResults) {
  auto dir = test::scratch_dir("retrieval-stale-fts");
  test::make_store(dir, {{"1.txt", "t", {"cat dog dog", "cat fish"}},
                         {"2.txt", "t", {"bird bird bird fish", "owl", "cat cat owl"}}});
  {
    sql::db fts(dir / ingest::store::fts_file);
    fts.exec("INSERT INTO chunks_fts(rowid, text) VALUES (999999, 'cat cat cat cat')");
  }
  lexical_options sql_opt;
  sql_opt.direct_scoring = false;
  for (const auto& opt : {lexical_options{}, sql_opt}) {
    SCOPED_TRACE(opt.direct_scoring ? "direct scoring" : "SQL ranking");
    auto r = make_lexical(dir, opt);
    const auto hits = r->search("cat", 2, {});
    ASSERT_EQ(hits.size(), 2u);
    for (const auto& h : hits) EXPECT_NE(h.chunk_id, 999999);
    EXPECT_EQ(r->search("cat", 10, {}).size(), 3u);  // every real chunk with "cat", none more
  }
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
