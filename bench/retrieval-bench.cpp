// Retrieval benchmarks (results go to bench/RESULTS.md):
//   bench_retrieval beir DIR --store PATH [--mode bm25|dense|hybrid] [--k 50] [--depth 100] [--index flat|ivf]
//       builds/re-uses the BEIR store, prints nDCG@10 / Recall@100 / MRR@10 at --depth and latency of top-k search
//   bench_retrieval synth --store PATH [--chunks 1000000] [--index ivf] [--queries 200] [--k 50]
//       generates a store of N synthetic chunks (Zipf-distributed vocabulary), then times hybrid top-k queries
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/base/error.h"
#include "ingest/store.h"
#include "retrieval/beir.h"
#include "retrieval/retriever.h"
#include "retrieval/vectors.h"

namespace ev = evident;
namespace rt = evident::retrieval;

namespace {

std::map<std::string, std::string> parse_flags(int argc, char** argv, int from, std::vector<std::string>& pos) {
  std::map<std::string, std::string> f;
  for (int i = from; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      const bool has_value = i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0;
      f.insert_or_assign(a, std::string(has_value ? argv[++i] : "1"));
    } else {
      pos.push_back(a);
    }
  }
  return f;
}
std::string get(const std::map<std::string, std::string>& f, const std::string& k, const std::string& def) {
  auto it = f.find(k);
  return it == f.end() ? def : it->second;
}

std::unique_ptr<rt::retriever_i> make(const std::string& mode, const std::filesystem::path& store,
                                      const std::map<std::string, std::string>& f) {
  rt::dense_options d;
  d.ivf_nprobe = std::atoi(get(f, "--nprobe", "32").c_str());
  if (mode == "bm25") return rt::make_lexical(store);
  if (mode == "dense") return rt::make_dense(store, d);
  rt::hybrid_options h;
  if (f.count("--dense-weight")) h.dense_weight = std::atof(get(f, "--dense-weight", "").c_str());
  if (f.count("--fusion")) h.fusion = get(f, "--fusion", "rrf");
  if (f.count("--rrf-k")) h.rrf_k = std::atoi(get(f, "--rrf-k", "").c_str());
  if (f.count("--candidates")) h.candidates = std::atoi(get(f, "--candidates", "").c_str());
  return rt::make_hybrid(rt::make_lexical(store), rt::make_dense(store, d), store, h);
}

void report_latency(const char* what, std::vector<double> ms) {
  std::printf("%s: %zu queries, latency ms p50 %.2f  p95 %.2f  p99 %.2f  max %.2f\n", what, ms.size(),
              rt::percentile(ms, 50), rt::percentile(ms, 95), rt::percentile(ms, 99), rt::percentile(ms, 100));
}

int bench_beir(const std::vector<std::string>& pos, const std::map<std::string, std::string>& f) {
  EV_THROW_IF_NOT_MSG(!pos.empty(), "usage: bench_retrieval beir DIR --store PATH [--mode M] [--k 50]");
  const std::filesystem::path dir = pos[0], store = get(f, "--store", "bench-beir-store");
  const std::string mode = get(f, "--mode", "hybrid");
  const int k = std::atoi(get(f, "--k", "50").c_str());
  auto info = rt::build_beir_store(dir, store, mode != "bm25", f.count("--rebuild") > 0);
  std::printf("store %s: %lld documents (%s, %.1f s)\n", store.string().c_str(), (long long)info.documents,
              info.reused ? "re-used" : "built", info.seconds);
  auto r = make(mode, store, f);
  auto res = rt::run_beir(*r, dir, store, get(f, "--split", "test"), std::atoi(get(f, "--depth", "100").c_str()));
  std::printf("%s: nDCG@10 %.4f  Recall@100 %.4f  MRR@10 %.4f  (%d queries)\n", mode.c_str(), res.metrics.ndcg_10,
              res.metrics.recall_100, res.metrics.mrr_10, res.metrics.queries);
  // Latency of top-k, all queries of the split, after one warm-up pass (the eval pass above).
  std::vector<double> ms;
  const auto qrels = rt::load_beir_qrels(dir, get(f, "--split", "test"));
  for (const auto& q : rt::load_beir_queries(dir)) {
    if (!qrels.count(q.id)) continue;
    auto t0 = std::chrono::steady_clock::now();
    auto hits = r->search(q.text, k);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::string what = mode;
  what += " top-";
  what += std::to_string(k);
  report_latency(what.c_str(), ms);
  return 0;
}

}  // namespace

int bench_synth(const std::vector<std::string>& pos, const std::map<std::string, std::string>& f);

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_retrieval beir DIR ... | synth ...\n");
    return 2;
  }
  std::vector<std::string> pos;
  auto f = parse_flags(argc, argv, 2, pos);
  try {
    if (std::strcmp(argv[1], "beir") == 0) return bench_beir(pos, f);
    if (std::strcmp(argv[1], "synth") == 0) return bench_synth(pos, f);
    std::fprintf(stderr, "unknown benchmark %s\n", argv[1]);
    return 2;
  } catch (const ev::error& e) {
    std::fprintf(stderr, "bench_retrieval: %s\n", e.what());
    return 1;
  }
}

int bench_synth(const std::vector<std::string>&, const std::map<std::string, std::string>&) {
  std::fprintf(stderr, "synth: not yet\n");
  return 1;
}
