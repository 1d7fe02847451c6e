// The extractive answerer through generator_i (prompt in the packer's rendering), and the reasoning split.
#include <gtest/gtest.h>

#include "citation/extractive.h"
#include "citation/normalize.h"
#include "citation/protocol.h"
#include "citation/reasoning.h"
#include "citation/verify.h"

namespace ev = evident;
using ev::engine::event_kind;

namespace {
// The packer's layout (retrieval/packer.cpp): "Document: title (path)" then "[n] (page ...)" + text, then the question.
const char* const prompt =
    "Document: Harbour Point (lighthouse.txt)\n"
    "[1] (page 1)\n"
    "The Harbour Point lighthouse was built in 1874 from granite. Its lamp was first fuelled by whale oil.\n\n"
    "Document: Sourdough (sourdough.txt)\n"
    "[2] (page 1)\n"
    "A sourdough starter is a culture of wild yeast. Rye flour makes a starter ferment faster than white flour.\n\n"
    "Question: Which flour makes a sourdough starter ferment faster?\n\n"
    "Answer from the passages above.";
}  // namespace

TEST(extractive, passages_from_packer_prompt) {
  std::string q;
  const auto ps = ev::citation::extractive_answerer::passages_from_prompt(prompt, &q);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0].label, 1);
  EXPECT_EQ(ps[0].document_title, "Harbour Point (lighthouse.txt)");
  EXPECT_EQ(ps[1].text,
            "A sourdough starter is a culture of wild yeast. Rye flour makes a starter ferment faster than white flour.");
  EXPECT_EQ(q, "Which flour makes a sourdough starter ferment faster?");
}

TEST(extractive, generate_streams_trace_then_quoted_answer) {
  ev::citation::extractive_answerer x;
  EXPECT_TRUE(x.is_extractive());
  ev::engine::generate_request req;
  req.messages = {{"system", ev::citation::get_template("answer").system}, {"user", prompt}};
  std::vector<event_kind> kinds;
  std::string reasoning, answer, finish;
  x.generate(req, [&](const ev::engine::generate_event& e) {
    kinds.push_back(e.kind);
    if (e.kind == event_kind::reasoning_delta) reasoning += e.text;
    if (e.kind == event_kind::answer_delta) answer += e.text;
    if (e.kind == event_kind::finish) finish = e.finish_reason;
    return true;
  });
  ASSERT_GE(kinds.size(), 4u);
  EXPECT_EQ(kinds.front(), event_kind::reasoning_delta);
  EXPECT_EQ(kinds.back(), event_kind::finish);
  EXPECT_EQ(finish, "stop");
  EXPECT_NE(reasoning.find("Candidates"), std::string::npos);
  // the answer's first quoted sentence is the one that answers, and its quote verifies against passage 2
  std::string q;
  const auto ps = ev::citation::extractive_answerer::passages_from_prompt(prompt, &q);
  const auto parsed = ev::citation::parse_answer(answer);
  ASSERT_FALSE(parsed.markers.empty()) << answer;
  EXPECT_EQ(parsed.markers[0].labels, std::vector<int>{2});
  EXPECT_NE(parsed.markers[0].quotes.at(0).find("Rye flour"), std::string::npos);
  for (const auto& c : ev::citation::resolve_citations(parsed, ps)) EXPECT_EQ(c.v, ev::citation::verdict::supported);
  EXPECT_TRUE(parsed.uncited_claims.empty()) << answer;
}

TEST(extractive, abstains_without_key_terms) {
  ev::citation::extractive_answerer x;
  std::string q;
  const auto ps = ev::citation::extractive_answerer::passages_from_prompt(prompt, &q);
  const auto a = x.answer("Who designed the lighthouse lantern room?", ps);
  EXPECT_TRUE(a.not_found);
  EXPECT_TRUE(ev::citation::parse_answer(a.raw).not_found);
  EXPECT_FALSE(a.ranked.empty());  // the closest sentences are still in the trace
}

TEST(extractive, quotes_never_break_the_marker_syntax) {
  // a sentence with quote marks and brackets: the quote inside [n: "..."] is cut to a piece without quote marks,
  // the prose copy has its brackets defused, and the result still verifies
  std::vector<ev::retrieval::passage> ps(1);
  ps[0].label = 1;
  ps[0].text = "The term \"Licensor\" [1] means the copyright owner granting the License to the licensee today.";
  ps[0].char_end = ev::citation::count_code_points(ps[0].text);
  ev::citation::extractive_answerer x;
  const auto a = x.answer("What does the term Licensor mean for the copyright owner?", ps);
  ASSERT_FALSE(a.not_found) << a.trace;
  const auto parsed = ev::citation::parse_answer(a.raw);
  ASSERT_EQ(parsed.markers.size(), 1u) << a.raw;
  EXPECT_EQ(parsed.markers[0].labels, std::vector<int>{1});
  const auto cites = ev::citation::resolve_citations(parsed, ps);
  ASSERT_EQ(cites.size(), 1u);
  EXPECT_EQ(cites[0].v, ev::citation::verdict::supported);
}

TEST(reasoning, split_shapes) {
  using ev::citation::split_reasoning;
  auto a = split_reasoning("<think>\nR1\n</think>\n\nA1");
  EXPECT_EQ(a.reasoning, "R1");
  EXPECT_EQ(a.answer, "A1");
  a = split_reasoning("R2</think>A2");
  EXPECT_EQ(a.reasoning, "R2");
  EXPECT_EQ(a.answer, "A2");
  a = split_reasoning("<think>cut off");
  EXPECT_EQ(a.reasoning, "cut off");
  EXPECT_EQ(a.answer, "");
  a = split_reasoning("just an answer");
  EXPECT_EQ(a.reasoning, "");
  EXPECT_EQ(a.answer, "just an answer");
}

TEST(reasoning, stream_matches_split_for_any_chunking) {
  for (const std::string raw : {"<think>\nthinking hard\n</think>\n\nThe answer [1].", "R</think>A", "<think>never closed",
                                "plain answer with < and </thin and more"}) {
    const auto whole = ev::citation::split_reasoning(raw);
    for (size_t step : {1u, 2u, 3u, 5u, 100u}) {
      ev::citation::reasoning_stream s(false, 4096);
      std::string r, a;
      for (size_t i = 0; i < raw.size(); i += step) s.feed(raw.substr(i, step), &r, &a);
      s.finish(&r, &a);
      // streaming keeps inner whitespace as produced; compare trimmed
      auto trim = [](std::string x) {
        const auto b = x.find_first_not_of(" \n");
        if (b == std::string::npos) return std::string();
        return x.substr(b, x.find_last_not_of(" \n") - b + 1);
      };
      EXPECT_EQ(trim(r), whole.reasoning) << raw << " step " << step;
      EXPECT_EQ(trim(a), whole.answer) << raw << " step " << step;
    }
  }
}
