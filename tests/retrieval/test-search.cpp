// searcher: the one call from question to packed context (retrieval mode, whole-document mode, scope filters).
#include <gtest/gtest.h>

#include "ingest/store.h"
#include "retrieval/search.h"
#include "tests/retrieval/store-fixture.h"
#include "tests/test-util.h"

namespace evident::retrieval {

TEST(Search, QuestionToPackedContext) {
  auto dir = test::scratch_dir("retrieval-search");
  auto ids = test::make_store(
      dir, {{"gpl.txt", "GPL", {"The Free Software Foundation may publish revised versions of the licence.",
                                "Each version is given a distinguishing version number.", "Unrelated words here."}},
            {"mit.txt", "MIT", {"Permission is hereby granted, free of charge, to any person.", "The software is provided as is."}},
            {"notes/bsd.txt", "BSD", {"Redistribution and use in source and binary forms are permitted."}}});
  searcher s(dir);
  EXPECT_FALSE(s.has_vectors());
  search_options o;  // hybrid: falls back to bm25 without vectors.faiss
  o.pack.system_prompt = "Cite passages.";
  auto pc = s.search("Who may publish revised versions of the licence?", o);
  ASSERT_FALSE(pc.passages.empty());
  EXPECT_FALSE(pc.whole_document);
  EXPECT_EQ(pc.passages[0].document_id, ids[0]);  // GPL is both the best hit and the lowest id
  EXPECT_NE(pc.context.find("Free Software Foundation may publish"), std::string::npos);
  EXPECT_LE(pc.total_tokens, pc.budget_tokens);
  EXPECT_EQ(pc.question, "Who may publish revised versions of the licence?");

  // Retrieval only, with a path filter.
  o.scope.path_prefix = "notes/";
  auto hits = s.retrieve("redistribution software licence", o);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].document_id, ids[2]);

  // A scope holding one document: whole-document mode.
  auto whole = s.search("What is permitted?", o);
  EXPECT_TRUE(whole.whole_document);
  ASSERT_EQ(whole.passages.size(), 1u);
  EXPECT_EQ(whole.passages[0].document_id, ids[2]);

  // One targeted document: whole-document mode, even when the question matches nothing in it.
  o.scope = {};
  o.scope.document_ids = {ids[1]};
  auto mit = s.search("zebra", o);
  EXPECT_TRUE(mit.whole_document);
  EXPECT_EQ(mit.passages.size(), 1u);  // two small chunks, one passage of ~1024 tokens

  // Nothing searchable: empty context, no error.
  o.scope = {};
  auto none = s.search("?!", o);
  EXPECT_TRUE(none.passages.empty());
  o.mode = "nonsense";
  EXPECT_THROW(s.search("licence", o), evident::error);
}

}  // namespace evident::retrieval
