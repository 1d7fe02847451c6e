// citation::extractive_answerer: an engine::generator_i that needs no model. It answers by quoting the sentences of
// the packed passages that best match the question, each with its [n: "quote"] marker, so every claim it makes is a
// verbatim, verifiable quote. It is the default generator when no model is configured, and says that it is extractive.
//
// Scoring of each sentence s of the passages against question q (terms = content_words with light stemming):
//   bm25(s)     BM25 (k1 = 1.2, b = 0.75) with IDF over the sentences of the packed context, divided by the best
//   coverage(s) IDF-weighted share of q's terms present in s (terms absent from every sentence weigh the most)
//   dense(s)    cosine of embeddings: the store's embedder when given, else hashed character-trigram vectors
//   position(s) 1 / (1 + index of s in its passage): openings of passages summarise
//   score = (0.35 bm25 + 0.40 coverage + 0.20 dense + 0.05 position) * min(1, 0.5 + content words / 8)
// The question's terms exclude question phrasing ("say", "mention", "how many"); for coverage a sentence also has the
// words of its document's title (when at most 100 bytes), so "Trademarks." in the Apache licence covers "Apache".
// Abstention: when the best coverage is below `min_coverage` (the documents do not hold the question's key terms),
// the answer is not_found_sentence and the trace lists the closest sentences.
//
// Thread-safety: const after construction; generate() may run concurrently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "retrieval/packer.h"

namespace evident::ingest {
class embedder_i;
}

namespace evident::citation {

struct extractive_options {
  int max_sentences = 3;         // sentences in an answer
  int max_quote_words = 60;      // longer sentences are cut to the best window of this many words
  double min_coverage = 0.5;     // abstain when no sentence covers this IDF-weighted share of the question's terms
  double keep_ratio = 0.6;       // further sentences need at least this share of the best sentence's score
  int trace_candidates = 8;      // sentences listed in the reasoning trace
};

struct scored_sentence {
  int label = 0;                 // passage label
  int64_t char_start = 0;        // code points in the document text
  int64_t char_end = 0;
  std::string text;
  double score = 0, bm25 = 0, coverage = 0, dense = 0, position = 0;
};

struct extractive_answer {
  std::string raw;               // the answer with [n: "quote"] markers (what generate() streams)
  std::string trace;             // what was considered (the reasoning trace)
  bool not_found = false;
  std::vector<scored_sentence> ranked;  // best first (at most trace_candidates)
};

class extractive_answerer : public engine::generator_i {
 public:
  // `embedder` may be null (hashed trigram vectors); it must outlive the answerer.
  explicit extractive_answerer(extractive_options opt = {}, const ingest::embedder_i* embedder = nullptr);

  std::string name() const override { return "extractive"; }
  bool is_extractive() const override { return true; }
  // Reads the passages and the question back from the rendered prompt (the last user message: passages headed by
  // lines starting with "[n]", then "Question: ..."), answers, streams the trace as reasoning and the answer.
  void generate(const engine::generate_request& request, const engine::event_callback& on_event) override;

  // The direct form used by the pipeline (no prompt parsing).
  extractive_answer answer(const std::string& question, const std::vector<retrieval::passage>& passages) const;

  // Parses passages and the question out of a rendered user message (see generate). Exposed for tests.
  static std::vector<retrieval::passage> passages_from_prompt(const std::string& user_message, std::string* question);

 private:
  extractive_options opt_;
  const ingest::embedder_i* embedder_;
};

// Text-only relevance used by the pipeline's abstention gate: the best IDF-weighted coverage of the question's terms
// by any sentence of the passages (0..1).
double best_coverage(const std::string& question, const std::vector<retrieval::passage>& passages);

}  // namespace evident::citation
