// Packer: budget, canonical order, neighbour merging, prefix sharing between questions, whole-document mode.
// Token counts use the real Qwen3 tokenizer (../shared/models/qwen3-tokenizer) where the budget matters.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "engine/tokenizer.h"
#include "ingest/store.h"
#include "retrieval/packer.h"
#include "tests/retrieval/store-fixture.h"
#include "tests/test-util.h"

namespace evident::retrieval {

namespace {

const engine::tokenizer& qwen3() {
  static engine::tokenizer tok =
      engine::tokenizer::from_file(test::shared_path("models/qwen3-tokenizer/tokenizer.json"));
  return tok;
}

// Deterministic English-like text: sentences of words from a small list.
std::string prose(std::mt19937& rng, int words) {
  static const char* vocab[] = {"the", "evidence", "suggests", "that", "protein", "binding", "increases", "in",
                                "patients", "with", "chronic", "disease", "while", "control", "groups", "show",
                                "no", "significant", "change", "across", "trials", "measured", "over", "years",
                                "licence", "software", "copyright", "holder", "may", "distribute", "copies"};
  std::string s;
  for (int i = 0; i < words; ++i) {
    if (!s.empty()) s += (i % 12 == 0) ? ". " : " ";
    s += vocab[rng() % (sizeof(vocab) / sizeof(vocab[0]))];
  }
  return s + ".";
}

std::vector<test::fixture_doc> corpus(int docs, int chunks_per_doc, int words_per_chunk, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<test::fixture_doc> out;
  for (int d = 0; d < docs; ++d) {
    test::fixture_doc fd;
    fd.path = "doc" + std::to_string(d) + ".txt";
    fd.title = "Document " + std::to_string(d);
    fd.heading_path = "Part " + std::to_string(d);
    for (int c = 0; c < chunks_per_doc; ++c) {
      fd.chunks.push_back(prose(rng, words_per_chunk));
      fd.chunk_pages.push_back(1 + c / 2);
    }
    out.push_back(fd);
  }
  return out;
}

std::vector<hit> hits_for(ingest::store& s, const std::vector<std::pair<int64_t, int>>& doc_ordinals) {
  std::vector<hit> h;
  double score = 100;
  for (auto [doc, ord] : doc_ordinals) {
    auto c = s.chunks_of(doc, ord, ord);
    EV_ASSERT(c.size() == 1);
    h.push_back({c[0].id, score--, doc, ord});
  }
  return h;
}

// The exact total as a generator would see it, recounted independently of the packer's bookkeeping.
int recount(const packed_context& pc, int overhead) {
  return static_cast<int>(qwen3().count(pc.system_prompt, engine::special_mode::as_text) +
                          qwen3().count(pc.context + "Question: " + pc.question, engine::special_mode::as_text)) +
         overhead;
}

void expect_canonical(const packed_context& pc) {
  for (size_t i = 0; i < pc.passages.size(); ++i) {
    EXPECT_EQ(pc.passages[i].label, static_cast<int>(i + 1));
    if (i > 0) {
      const auto& a = pc.passages[i - 1];
      const auto& b = pc.passages[i];
      EXPECT_TRUE(a.document_id < b.document_id || (a.document_id == b.document_id && a.char_end <= b.char_start))
          << "passage " << i << " out of canonical order";
    }
    // Labels appear in the rendered context in order.
    if (i > 0) {
      std::string prev = "[", cur = "[";
      prev += std::to_string(i);
      prev += "] (";
      cur += std::to_string(i + 1);
      cur += "] (";
      EXPECT_LT(pc.context.find(prev), pc.context.find(cur));
    }
  }
}

}  // namespace

TEST(Packer, Gears) {
  EXPECT_EQ(parse_gear("8k"), 8192);
  EXPECT_EQ(parse_gear("32K"), 32768);
  EXPECT_EQ(parse_gear("64k"), 65536);
  EXPECT_EQ(parse_gear("128k"), 131072);
  EXPECT_THROW(parse_gear("16k"), evident::error);
}

TEST(Packer, NeighboursMergeIntoOnePassage) {
  auto dir = test::scratch_dir("retrieval-pack-neigh");
  auto ids = test::make_store(dir, corpus(1, 12, 30, 1));
  ingest::store s(dir);
  packer p(s);
  pack_options o;
  o.fill_whole_documents = false;
  o.neighbour_window = 1;
  auto pc = p.pack(hits_for(s, {{ids[0], 5}, {ids[0], 7}, {ids[0], 0}}), "q?", o);
  ASSERT_EQ(pc.passages.size(), 2u);  // [0-1] and [4-8] (5+-1 and 7+-1 touch)
  EXPECT_EQ(pc.passages[0].chunk_ids.size(), 2u);
  EXPECT_EQ(pc.passages[1].chunk_ids.size(), 5u);
  auto doc = s.document(ids[0], true);
  for (const auto& ps : pc.passages) {
    // text is exactly the document's code points [char_start, char_end) (ASCII here, so bytes == code points).
    EXPECT_EQ(ps.text, doc->text.substr(ps.char_start, ps.char_end - ps.char_start));
    EXPECT_EQ(ps.heading_path, "Part 0");
  }
  EXPECT_EQ(pc.passages[1].page_start, 3);  // chunk 4 is on page 3 (two chunks a page)
  EXPECT_EQ(pc.passages[1].page_end, 5);    // chunk 8 on page 5
  EXPECT_FALSE(pc.exact_token_count);
  expect_canonical(pc);
  // The question is last; boundaries: after the system prompt and after the one document block.
  EXPECT_EQ(pc.prefix_boundaries.size(), 2u);
  EXPECT_EQ(pc.prefix_boundaries.back(), pc.system_prompt.size() + pc.context.size());
}

TEST(Packer, BudgetNeverExceededWithRealTokenizer) {
  auto dir = test::scratch_dir("retrieval-pack-budget");
  auto ids = test::make_store(dir, corpus(20, 30, 120, 2));
  ingest::store s(dir);
  packer p(s, &qwen3());
  std::mt19937 rng(7);
  for (int gear : {gear_8k, gear_32k}) {
    for (int trial = 0; trial < 3; ++trial) {
      std::vector<std::pair<int64_t, int>> want;
      for (int i = 0; i < 60; ++i) want.push_back({ids[rng() % ids.size()], static_cast<int>(rng() % 30)});
      pack_options o;
      o.context_tokens = gear;
      o.system_prompt = "You answer from the passages and cite them as [n: \"quote\"].";
      o.neighbour_window = static_cast<int>(trial);
      auto pc = p.pack(hits_for(s, want), "What changes in patients with chronic disease?", o);
      ASSERT_FALSE(pc.passages.empty());
      EXPECT_TRUE(pc.exact_token_count);
      EXPECT_EQ(pc.budget_tokens, gear - std::min(4096, gear / 4));
      EXPECT_LE(pc.total_tokens, pc.budget_tokens);
      EXPECT_EQ(recount(pc, o.chat_overhead_tokens), pc.total_tokens);
      // The packer should use most of the budget when there is more material than room (8K: 60 hits of ~170 tokens).
      if (gear == gear_8k) {
        EXPECT_GT(pc.total_tokens, pc.budget_tokens * 8 / 10);
      }
      expect_canonical(pc);
    }
  }
  // A question that alone exceeds the budget is an error, not an overflow.
  pack_options tiny;
  tiny.context_tokens = 64;
  tiny.answer_reserve = 0;
  EXPECT_THROW(p.pack({}, std::string(2000, 'x'), tiny), evident::error);
}

TEST(Packer, TwoQuestionsShareAPrefixCoveringCommonPassages) {
  auto dir = test::scratch_dir("retrieval-pack-prefix");
  auto ids = test::make_store(dir, corpus(6, 8, 60, 3));
  ingest::store s(dir);
  packer p(s, &qwen3());
  pack_options o;
  o.system_prompt = "System prompt of the citation protocol.";
  // Different hits, different ranks, same documents (1, 3, 4).
  auto a = p.pack(hits_for(s, {{ids[3], 2}, {ids[1], 0}, {ids[4], 7}}), "Which groups show no change?", o);
  auto b = p.pack(hits_for(s, {{ids[4], 1}, {ids[3], 5}, {ids[1], 6}, {ids[3], 0}}), "What do trials measure?", o);
  const std::string pa = a.system_prompt + a.context, pb = b.system_prompt + b.context;
  size_t common = 0;
  while (common < pa.size() && common < pb.size() && pa[common] == pb[common]) ++common;
  int shared = 0;
  for (const auto& x : a.passages) {
    for (const auto& y : b.passages) {
      if (x.chunk_ids != y.chunk_ids) continue;
      ++shared;
      const size_t end_a = pa.find(x.text) + x.text.size();
      EXPECT_LE(end_a, common) << "passage [" << x.label << "] is past the shared prefix";
    }
  }
  EXPECT_GT(shared, 0);
  EXPECT_EQ(a.passages.size(), b.passages.size());
  // Prefix boundaries are identical up to the shared part and one per document block.
  EXPECT_EQ(a.prefix_boundaries, b.prefix_boundaries);
  EXPECT_EQ(a.prefix_boundaries.size(), 4u);  // system + 3 documents
  expect_canonical(a);
}

TEST(Packer, WholeDocumentModePacks60kTokensIntactAt64k) {
  auto dir = test::scratch_dir("retrieval-pack-whole");
  // ~60K tokens: 160 chunks of ~375 tokens each, measured below with the real tokenizer.
  std::mt19937 rng(11);
  test::fixture_doc big{"book.txt", "A long book", {}};
  for (int c = 0; c < 160; ++c) big.chunks.push_back(prose(rng, 345));
  auto ids = test::make_store(dir, {big});
  ingest::store s(dir);
  auto doc = s.document(ids[0], true);
  const size_t doc_tokens = qwen3().count(doc->text, engine::special_mode::as_text);
  ASSERT_GE(doc_tokens, 59000u);
  ASSERT_LE(doc_tokens, 61000u);
  // Chunk token counts from the real tokenizer, as the indexer would store them.
  for (auto& c : s.chunks_of(ids[0])) {
    auto u = s.db().prepare("UPDATE chunks SET token_count = ? WHERE id = ?");
    u.bind(1, static_cast<int64_t>(qwen3().count(c.text))).bind(2, c.id).run();
  }
  packer p(s, &qwen3());
  pack_options o;
  o.context_tokens = gear_64k;
  o.system_prompt = "Answer from the document.";
  auto pc = p.pack_document(ids[0], "What does the book say about licences?", o);
  ASSERT_TRUE(pc.whole_document);
  std::string joined;
  for (auto& ps : pc.passages) joined += ps.text;
  EXPECT_EQ(joined, doc->text);  // intact: every byte, in order, once
  EXPECT_LE(pc.total_tokens, pc.budget_tokens);
  EXPECT_EQ(recount(pc, o.chat_overhead_tokens), pc.total_tokens);
  expect_canonical(pc);
  // At the 32K gear it does not fit: no whole-document packing.
  o.context_tokens = gear_32k;
  EXPECT_FALSE(p.pack_document(ids[0], "q", o).whole_document);
}

}  // namespace evident::retrieval
