// Query -> FTS5 expression: structure of the output, and torture queries against a real FTS5 table.
#include <gtest/gtest.h>

#include <algorithm>

#include "ingest/store.h"
#include "retrieval/query.h"
#include "retrieval/vectors.h"
#include "retrieval/retriever.h"
#include "tests/retrieval/store-fixture.h"
#include "tests/test-util.h"

namespace evident::retrieval {

TEST(Query, TermsAndExpression) {
  query_options keep;
  keep.remove_stopwords = false;
  EXPECT_EQ(query_terms("Hello, world! 0-dimensional", keep),
            (std::vector<std::string>{"Hello", "world", "0", "dimensional"}));
  EXPECT_EQ(fts5_expression({"a", "b"}), "\"a\" OR \"b\"");
  EXPECT_EQ(fts5_expression({}), "");
  // Stop words go unless nothing else is left.
  EXPECT_EQ(query_terms("the role of the gene"), (std::vector<std::string>{"role", "gene"}));
  EXPECT_EQ(query_terms("to be or not"), (std::vector<std::string>{"to", "be", "or", "not"}));
  // Operators become separators or quoted words.
  EXPECT_EQ(fts5_expression(query_terms("text:NEAR(a* AND -b)", keep)),
            "\"text\" OR \"NEAR\" OR \"a\" OR \"AND\" OR \"b\"");
  // Non-ASCII letters stay inside terms; invalid UTF-8 bytes separate them.
  EXPECT_EQ(query_terms("caf\xC3\xA9 na\xFFive", keep), (std::vector<std::string>{"caf\xC3\xA9", "na", "ive"}));
}

TEST(Query, StopListIsSorted) {
  for (auto w : {"a", "the", "with", "their", "there", "these", "they", "this"}) EXPECT_TRUE(is_stopword(w)) << w;
  for (auto w : {"gene", "cell", "thes"}) EXPECT_FALSE(is_stopword(w)) << w;
}

TEST(Query, TermCapAndLongInput) {
  std::string q;
  for (int i = 0; i < 2000; ++i) {
    q += 'w';
    q += std::to_string(i);
    q += ' ';
  }
  EXPECT_EQ(query_terms(q).size(), 64u);
  EXPECT_EQ(query_terms(std::string(10000, 'x'))[0].size(), 128u);
}

class QueryTorture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::scratch_dir("retrieval-torture");
    test::make_store(dir_, {{"a.txt", "A", {"The NEAR operator and quotes \"here\" text: colon", "stars * and - minus"}},
                            {"b.txt", "B", {"caf\xC3\xA9 au lait, (parentheses) AND more"}}});
  }
  std::filesystem::path dir_;
};

TEST_F(QueryTorture, NeverThrowsAndFindsPlainWords) {
  {
    ingest::store s(dir_);
    write_store_vectors(s);  // so the dense and hybrid retrievers see the same torture
  }
  std::vector<std::unique_ptr<retriever_i>> others;
  others.push_back(make_dense(dir_));
  others.push_back(make_hybrid(make_lexical(dir_), make_dense(dir_), dir_));
  hybrid_options mmr;
  mmr.mmr_lambda = 0.5;
  mmr.per_document_cap = 1;
  others.push_back(make_hybrid(make_lexical(dir_), make_dense(dir_), dir_, mmr));
  auto r = make_lexical(dir_);
  std::vector<std::string> queries = {
      "",  "\"",  "\"\"\"", "*", "NEAR", "NEAR(", "NEAR(a b, 3)", "AND", "OR", "NOT", "a AND", "AND OR NOT",
      "-", "-minus", ":", "text:", "text:colon", "(", ")", "((())", "(parentheses", "^start", "+plus",
      "\xFF\xFE", "caf\xC3", "\xC3\xA9", "caf\xC3\xA9", "{text}: x", "'single'", "a\0b", "   ", "\t\n",
      std::string(10000, 'q'), std::string(10000, '"'), std::string(10000, '('), std::string(5000, '\xFF')};
  std::string words;
  for (int i = 0; i < 1500; ++i) words += "operator NEAR ( \" * - : ";
  queries.push_back(words.substr(0, 10000));
  for (const auto& q : queries) {
    std::vector<hit> hits;
    EXPECT_NO_THROW(hits = r->search(q, 10)) << "query: " << q.substr(0, 40);
    for (auto& o : others) EXPECT_NO_THROW(o->search(q, 10)) << o->name() << " query: " << q.substr(0, 40);
  }
  // Hybrid with a per-document cap of 1 and MMR: one hit per document.
  auto capped = others[2]->search("and more stars", 10);
  EXPECT_EQ(capped.size(), 2u);
  if (capped.size() == 2) {
    EXPECT_NE(capped[0].document_id, capped[1].document_id);
  }
  EXPECT_EQ(r->search("NEAR", 10).size(), 1u);
  EXPECT_EQ(r->search("\"here\"", 10).size(), 1u);
  EXPECT_EQ(r->search("text:colon", 10).size(), 1u);
  EXPECT_EQ(r->search("(parentheses", 10).size(), 1u);
  EXPECT_EQ(r->search("-minus", 10).size(), 1u);
  EXPECT_EQ(r->search("AND", 10).size(), 3u);  // the word "and" is in all 3 chunks (only stop words: kept)
  EXPECT_EQ(r->search("cafe", 10).size(), 1u);  // remove_diacritics folds é
  EXPECT_TRUE(r->search("", 10).empty());
  EXPECT_TRUE(r->search("\xFF\xFE", 10).empty());
}

}  // namespace evident::retrieval
