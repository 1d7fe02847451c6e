// The pipeline with the local engine (engine::local_generator) on the tiny real-vocabulary checkpoint
// (tests/fixtures/tiny-vocab, random weights) and the real Qwen3 tokenizer. The model's text is gibberish, so what is
// checked is the plumbing: the citation protocol reaches the model, the reasoning stays apart from the answer, the
// answer is parsed and stored, and every citation the model happens to emit gets the verdict an independent check
// gives (label exists? quote in the cited passage?).
#include <gtest/gtest.h>

#include "api/pipeline.h"
#include "citation/normalize.h"
#include "ingest/store.h"
#include "tests/test-util.h"

namespace ev = evident;

TEST(pipeline_engine, tiny_checkpoint_end_to_end) {
  const auto dir = ev::test::scratch_dir("citation-engine");
  { ev::ingest::store st(dir); }
  ev::answer::pipeline_options o;
  o.store_dir = dir;
  o.generator = "engine";
  o.model_dir = ev::test::source_path("tests/fixtures/tiny-vocab");
  o.tokenizer_path = ev::test::shared_path("models/qwen3-tokenizer/tokenizer.json");
  o.min_relevance = 0;
  ev::answer::pipeline p(o);
  std::vector<ev::retrieval::passage> ps(2);
  ps[0].label = 1;
  ps[0].document_id = 1;
  ps[0].chunk_ids = {1};
  ps[0].text = "The sky is blue on a clear day.";
  ps[0].char_end = ev::citation::count_code_points(ps[0].text);
  ps[1].label = 2;
  ps[1].document_id = 2;
  ps[1].chunk_ids = {2};
  ps[1].text = "Grass is green in spring.";
  ps[1].char_end = ev::citation::count_code_points(ps[1].text);
  p.set_context([&](const ev::answer::ask_request& req, const std::string& sys) {
    ev::retrieval::packed_context pc;
    pc.system_prompt = sys;
    pc.passages = ps;
    pc.context = "[1] sky\nThe sky is blue on a clear day.\n\n[2] grass\nGrass is green in spring.\n\n";
    pc.prefix_boundaries = {sys.size(), sys.size() + pc.context.size()};
    pc.question = req.question;
    return pc;
  });
  ev::answer::ask_request req;
  req.question = "What colour is the sky?";
  req.sampling.temperature = 0;
  req.sampling.max_tokens = 48;
  std::string streamed;
  ev::answer::ask_events evs;
  evs.on_answer = [&](const std::string& s) { streamed += s; return true; };
  const auto r = p.ask(req, &evs);
  EXPECT_EQ(r.generator, "engine:tiny-vocab");
  EXPECT_TRUE(r.finish_reason == "stop" || r.finish_reason == "length") << r.finish_reason;
  EXPECT_GT(r.usage.prompt_tokens, 100);  // the system prompt (citation protocol) and passages reached the model
  EXPECT_EQ(r.answer.find("<think>"), std::string::npos);
  EXPECT_EQ(r.answer.find("</think>"), std::string::npos);
  EXPECT_EQ(streamed, r.answer);
  for (const auto& c : r.citations) {
    const bool label_ok = c.label == 1 || c.label == 2;
    if (!label_ok) {
      EXPECT_EQ(c.v, ev::citation::verdict::invalid_label);
      continue;
    }
    if (c.quote.empty()) {
      EXPECT_EQ(c.v, ev::citation::verdict::no_quote);
      continue;
    }
    const auto& text = ps[static_cast<size_t>(c.label - 1)].text;
    const bool in_cited = ev::citation::normalize_string(text).find(ev::citation::normalize_string(c.quote)) !=
                          std::string::npos;
    if (in_cited) {
      EXPECT_EQ(c.v, ev::citation::verdict::supported);
    }
  }
  const auto back = ev::answer::load_answer(dir, r.answer_id);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->answer, r.answer);
  EXPECT_EQ(back->reasoning, r.reasoning);
  EXPECT_EQ(back->generator, "engine:tiny-vocab");
}
