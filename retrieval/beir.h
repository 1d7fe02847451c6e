// BEIR evaluation: load a BEIR dataset directory, build (or re-use) a store of its corpus, run its queries through a
// retriever and score the run with retrieval/metrics.h.
//
// Dataset layout (BEIR): DIR/corpus.jsonl ({"_id", "title", "text"} per line), DIR/queries.jsonl ({"_id", "text"}),
// DIR/qrels/<split>.tsv (header row, then query-id TAB corpus-id TAB score).
//
// Store built from a corpus: one document per corpus entry (path = the BEIR _id, title = its title, text = title,
// blank line, text: the "title + text" field BEIR's BM25 baselines index) and one chunk per document, since the BEIR
// retrieval unit is the whole entry. Dense retrieval needs DIR/vectors.faiss, which build_beir_store writes with
// the store's embedder when `with_vectors` is set. The store records the corpus fingerprint (meta beir.corpus) and
// is re-used when it matches.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "retrieval/metrics.h"
#include "retrieval/retriever.h"

namespace evident::retrieval {

struct beir_doc {
  std::string id, title, text;
};
struct beir_query {
  std::string id, text;
};

// Throw evident::error (not_found / corrupt naming the file and line) for missing or malformed files.
std::vector<beir_doc> load_beir_corpus(const std::filesystem::path& dir);
std::vector<beir_query> load_beir_queries(const std::filesystem::path& dir);
qrels_t load_beir_qrels(const std::filesystem::path& dir, const std::string& split);

struct beir_store_info {
  bool reused = false;        // the store already held this corpus
  int64_t documents = 0;
  double seconds = 0;         // time spent building (0 when reused)
};
// Creates or re-uses the store at `store_dir` for the corpus in `dataset_dir`.
beir_store_info build_beir_store(const std::filesystem::path& dataset_dir, const std::filesystem::path& store_dir,
                                 bool with_vectors, bool rebuild = false);

struct beir_result {
  eval_summary metrics;
  std::vector<double> latency_ms;  // per query, search() only
  double p50_ms = 0, p95_ms = 0, p99_ms = 0;
};
// Runs every query that has judgements in the split through `r` (top `depth` chunks, mapped to documents by path,
// best chunk per document) and evaluates. `progress` (optional) is called after each query with (done, total).
beir_result run_beir(retriever_i& r, const std::filesystem::path& dataset_dir, const std::filesystem::path& store_dir,
                     const std::string& split, int depth = 100,
                     const std::function<void(int, int)>& progress = nullptr);

// Nearest-rank percentile (p in [0, 100]) of `v` (copied and sorted); 0 for an empty vector.
double percentile(std::vector<double> v, double p);

}  // namespace evident::retrieval
