// `evident eval retrieval --beir DIR ...`: retrieval quality (nDCG@10, Recall@100, MRR@10) and latency on a BEIR
// dataset. The library calls live in retrieval/beir.h; this file parses flags and prints.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <unistd.h>

#include "api/cli.h"
#include "api/commands.h"
#include "engine/base/error.h"
#include "retrieval/beir.h"
#include "retrieval/retriever.h"

namespace evident::cli {

namespace {

double parse_number(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    double v = std::stod(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw usage_error{flag + ": expected a number, got '" + text + "'"};
}

int eval_retrieval(const std::vector<std::string>& argv) {
  args a("eval retrieval", "--beir DIR [--split test] [--mode bm25|dense|hybrid] [--store PATH] [--json]",
         "Ingest a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) into a store kept for re-use, run its "
         "queries and print nDCG@10, Recall@100, MRR@10 (pytrec_eval/BEIR definitions) and query latency.");
  auto& beir = a.option("--beir", "DIR", "BEIR dataset directory");
  auto& split = a.option("--split", "NAME", "qrels split", "test");
  auto& mode = a.option("--mode", "MODE", "bm25 | dense | hybrid", "bm25");
  auto& store = a.option("--store", "PATH", "store directory (default: ./evident-eval/<dataset name>)");
  auto& k1 = a.option("--k1", "X", "BM25 k1", "0.9");
  auto& b = a.option("--b", "X", "BM25 b", "0.4");
  auto& fusion = a.option("--fusion", "F", "hybrid: rrf | convex (default convex, see retrieval/retriever.h)");
  auto& rrf_k = a.option("--rrf-k", "N", "hybrid: reciprocal-rank-fusion constant (default 60)");
  auto& w_lex = a.option("--lexical-weight", "X", "hybrid: weight of the BM25 ranking (default 1)");
  auto& w_dense = a.option("--dense-weight", "X", "hybrid: weight of the dense ranking (default 0.1)");
  auto& depth = a.option("--depth", "N", "chunks retrieved per query", "100");
  auto& keep_stop = a.flag("--keep-stopwords", "BM25: do not remove English stop words from queries");
  auto& rebuild = a.flag("--rebuild", "rebuild the store even when it holds this corpus");
  auto& json = a.flag("--json", "print the result as JSON");
  if (!a.parse(argv, 0, 0)) return 0;
  if (beir.empty()) throw usage_error{"--beir DIR is required"};
  require_one_of("--mode", mode, {"bm25", "dense", "hybrid"});
  const std::filesystem::path dataset(beir);
  std::filesystem::path store_dir = store;
  if (store_dir.empty()) {
    auto name = std::filesystem::absolute(dataset).lexically_normal().filename();
    if (name.empty()) name = std::filesystem::absolute(dataset).lexically_normal().parent_path().filename();
    store_dir = std::filesystem::path("evident-eval") / name;
  }

  const bool need_vectors = mode != "bm25";
  const auto info = retrieval::build_beir_store(dataset, store_dir, need_vectors, rebuild);
  if (!json)
    std::fprintf(stderr, "store %s: %lld documents (%s)\n", store_dir.string().c_str(),
                 static_cast<long long>(info.documents), info.reused ? "re-used" : "built");

  retrieval::lexical_options lo;
  lo.k1 = parse_number("--k1", k1);
  lo.b = parse_number("--b", b);
  lo.query.remove_stopwords = !keep_stop;
  std::unique_ptr<retrieval::retriever_i> r;
  if (mode == "bm25") {
    r = retrieval::make_lexical(store_dir, lo);
  } else if (mode == "dense") {
    r = retrieval::make_dense(store_dir);
  } else {
    retrieval::hybrid_options ho;
    if (!fusion.empty()) {
      require_one_of("--fusion", fusion, {"rrf", "convex"});
      ho.fusion = fusion;
    }
    if (!rrf_k.empty()) ho.rrf_k = static_cast<int>(parse_count("--rrf-k", rrf_k));
    if (!w_lex.empty()) ho.lexical_weight = parse_number("--lexical-weight", w_lex);
    if (!w_dense.empty()) ho.dense_weight = parse_number("--dense-weight", w_dense);
    r = retrieval::make_hybrid(retrieval::make_lexical(store_dir, lo), retrieval::make_dense(store_dir), store_dir, ho);
  }
  const bool tty = !json && isatty(STDERR_FILENO);
  const auto res = retrieval::run_beir(*r, dataset, store_dir, split, static_cast<int>(parse_count("--depth", depth)),
                                       [&](int done, int total) {
                                         if (tty && (done % 25 == 0 || done == total))
                                           std::fprintf(stderr, "\rqueries %d/%d", done, total);
                                       });
  if (tty) std::fprintf(stderr, "\n");
  if (json) {
    nlohmann::json j = {{"dataset", dataset.string()},
                        {"split", split},
                        {"mode", mode},
                        {"store", store_dir.string()},
                        {"documents", info.documents},
                        {"queries", res.metrics.queries},
                        {"ndcg@10", res.metrics.ndcg_10},
                        {"recall@100", res.metrics.recall_100},
                        {"mrr@10", res.metrics.mrr_10},
                        {"latency_ms", {{"p50", res.p50_ms}, {"p95", res.p95_ms}, {"p99", res.p99_ms}}}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s  %s  split=%s  queries=%d\n", dataset.string().c_str(), mode.c_str(), split.c_str(),
                res.metrics.queries);
    std::printf("nDCG@10     %.4f\nRecall@100  %.4f\nMRR@10      %.4f\n", res.metrics.ndcg_10,
                res.metrics.recall_100, res.metrics.mrr_10);
    std::printf("latency ms  p50 %.2f  p95 %.2f  p99 %.2f\n", res.p50_ms, res.p95_ms, res.p99_ms);
  }
  return 0;
}

}  // namespace

int cmd_eval(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h") {
    std::printf("usage: evident eval retrieval --beir DIR [--split test] [--mode bm25|dense|hybrid] [--store PATH] "
                "[--json]\n\nEvaluations:\n  retrieval   retrieval quality and latency on a BEIR dataset\n");
    return argv.empty() ? 2 : 0;
  }
  if (argv[0] == "retrieval") return eval_retrieval(std::vector<std::string>(argv.begin() + 1, argv.end()));
  throw usage_error{"unknown evaluation '" + argv[0] + "' (expected: retrieval)"};
}

}  // namespace evident::cli
