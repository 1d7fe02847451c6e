// Retrieval benchmarks (results go to bench/RESULTS.md):
//   bench_retrieval beir DIR --store PATH [--mode bm25|dense|hybrid] [--k 50] [--depth 100] [--index flat|ivf]
//       builds/re-uses the BEIR store, prints nDCG@10 / Recall@100 / MRR@10 at --depth and latency of top-k search
//   bench_retrieval synth --store PATH [--chunks 1000000] [--index ivf] [--queries 200] [--k 50]
//       generates a store of N synthetic chunks (Zipf-distributed vocabulary), then times hybrid top-k queries
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
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
  rt::lexical_options l;
  if (f.count("--prune-above")) l.prune_above_chunks = std::atoll(get(f, "--prune-above", "").c_str());
  if (f.count("--max-postings")) l.max_postings = std::atoll(get(f, "--max-postings", "").c_str());
  if (f.count("--sql-rank")) l.direct_scoring = false;  // BM25 ranked by evident_bm25 inside SQL (for comparison)
  if (mode == "bm25") return rt::make_lexical(store, l);
  if (mode == "dense") return rt::make_dense(store, d);
  rt::hybrid_options h;
  if (f.count("--dense-weight")) h.dense_weight = std::atof(get(f, "--dense-weight", "").c_str());
  if (f.count("--fusion")) h.fusion = get(f, "--fusion", "rrf");
  if (f.count("--rrf-k")) h.rrf_k = std::atoi(get(f, "--rrf-k", "").c_str());
  if (f.count("--candidates")) h.candidates = std::atoi(get(f, "--candidates", "").c_str());
  return rt::make_hybrid(rt::make_lexical(store, l), rt::make_dense(store, d), store, h);
}

// Process CPU time in ms (all threads: hybrid runs dense on a second thread). With other jobs on the machine,
// wall-clock latency includes waiting for a core; CPU time shows the work itself. Both are reported.
double cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// One timed top-k search: appends its wall-clock and CPU milliseconds.
std::vector<rt::hit> timed_search(rt::retriever_i& r, const std::string& q, int k, std::vector<double>& ms,
                                  std::vector<double>& cpu) {
  const double c0 = cpu_ms();
  const auto t0 = std::chrono::steady_clock::now();
  auto hits = r.search(q, k);
  ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  cpu.push_back(cpu_ms() - c0);
  return hits;
}

void report_latency(const char* what, const std::vector<double>& ms, const std::vector<double>& cpu) {
  double load[3] = {0, 0, 0};
  getloadavg(load, 3);
  std::printf(
      "%s: %zu queries, wall ms p50 %.2f  p95 %.2f  p99 %.2f  max %.2f | cpu ms p50 %.2f  p99 %.2f | "
      "load %.1f\n",
      what, ms.size(), rt::percentile(ms, 50), rt::percentile(ms, 95), rt::percentile(ms, 99), rt::percentile(ms, 100),
      rt::percentile(cpu, 50), rt::percentile(cpu, 99), load[0]);
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
  std::vector<double> ms, cpu;
  const auto qrels = rt::load_beir_qrels(dir, get(f, "--split", "test"));
  for (const auto& q : rt::load_beir_queries(dir)) {
    if (qrels.count(q.id)) timed_search(*r, q.text, k, ms, cpu);
  }
  std::string what = mode;
  what += " top-";
  what += std::to_string(k);
  report_latency(what.c_str(), ms, cpu);
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

// Synthetic store: a vocabulary of `--vocab` pseudo-words (syllable strings) drawn from a Zipf(1.0) distribution,
// `--words` words per chunk, `--chunks-per-doc` chunks per document. Retrieval-only: documents.text is left empty.
// Queries: 6 distinct words picked uniformly from the distinct words of a random chunk (so each query has a chunk
// that matches it well, and mixes frequent and rare terms as real questions do after stop-word removal).
namespace {
std::string pseudo_word(int i) {
  static const char* syl[] = {"ka",  "lo",  "mi",  "nu",  "pe",  "ra",  "si",  "to",  "ve",  "zu",
                              "bra", "cle", "dro", "fni", "gla", "ple", "sko", "tri", "vol", "xen"};
  std::string w;
  int x = i + 20;  // at least two syllables
  while (x > 0) {
    w += syl[x % 20];
    x /= 20;
  }
  return w;
}
}  // namespace

int bench_synth(const std::vector<std::string>&, const std::map<std::string, std::string>& f) {
  const std::filesystem::path store = get(f, "--store", "bench-synth-store");
  const int64_t n_chunks = std::atoll(get(f, "--chunks", "1000000").c_str());
  const int vocab = std::atoi(get(f, "--vocab", "100000").c_str());
  const int words = std::atoi(get(f, "--words", "60").c_str());
  const int per_doc = std::atoi(get(f, "--chunks-per-doc", "20").c_str());
  const int k = std::atoi(get(f, "--k", "50").c_str());
  const int n_queries = std::atoi(get(f, "--queries", "200").c_str());
  const std::string mode = get(f, "--mode", "hybrid");
  std::vector<std::string> dict(vocab);
  for (int i = 0; i < vocab; ++i) dict[i] = pseudo_word(i);
  std::vector<double> cdf(vocab);
  double acc = 0;
  for (int i = 0; i < vocab; ++i) cdf[i] = acc += 1.0 / (i + 1);
  for (auto& c : cdf) c /= acc;
  std::mt19937_64 rng(1234);
  std::uniform_real_distribution<double> uni(0, 1);
  auto draw = [&] { return static_cast<int>(std::lower_bound(cdf.begin(), cdf.end(), uni(rng)) - cdf.begin()); };

  bool have = false;
  {
    ev::ingest::store s(store);
    have = s.chunk_count() == n_chunks;
    if (!have) {
      EV_THROW_IF_NOT_MSG(s.chunk_count() == 0, "store ", store.string(), " holds a different corpus; remove it");
      const auto t0 = std::chrono::steady_clock::now();
      s.db().exec("PRAGMA synchronous = OFF");
      ev::sql::transaction tx(s.db());
      const int64_t coll = *s.collection_id("synth", true);
      auto doc = s.db().prepare(
          "INSERT INTO documents(collection_id, path, sha256, size, mtime, format, title, text, char_count, "
          "ingested_at) VALUES (?, ?, '', 0, 0, 'txt', ?, '', 0, 0)");
      auto chunk = s.db().prepare(
          "INSERT INTO chunks(document_id, ordinal, char_start, char_end, byte_start, byte_end, page, token_count, "
          "text) VALUES (?, ?, 0, ?, 0, ?, 1, ?, ?)");
      int64_t doc_id = 0;
      std::string text;
      for (int64_t c = 0; c < n_chunks; ++c) {
        if (c % per_doc == 0) {
          std::string path = "synth/";
          path += std::to_string(c / per_doc);
          doc.bind(1, coll).bind(2, path).bind(3, path);
          doc.run();
          doc.reset();
          doc_id = s.db().last_insert_rowid();
        }
        text.clear();
        for (int w = 0; w < words; ++w) {
          if (w) text += ' ';
          text += dict[draw()];
        }
        chunk.bind(1, doc_id).bind(2, static_cast<int64_t>(c % per_doc)).bind(3, static_cast<int64_t>(text.size()));
        chunk.bind(4, static_cast<int64_t>(text.size())).bind(5, static_cast<int64_t>(words * 4 / 3)).bind(6, text);
        chunk.run();
        chunk.reset();
        if ((c + 1) % 100000 == 0)
          std::fprintf(stderr, "chunks %lld/%lld (%.0f s)\n", (long long)(c + 1), (long long)n_chunks,
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      tx.commit();
      std::printf("generated %lld chunks in %.0f s\n", (long long)n_chunks,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    if (mode != "bm25" && !std::filesystem::exists(s.vectors_path())) {
      const auto t0 = std::chrono::steady_clock::now();
      rt::vector_index_options vo;
      vo.kind = get(f, "--index", "ivf");
      if (f.count("--lists")) vo.ivf_lists = std::atoi(get(f, "--lists", "").c_str());
      rt::write_store_vectors(s, vo);
      std::printf("vectors (%s) built in %.0f s\n", vo.kind.c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  // Queries from random chunks.
  std::vector<std::string> queries;
  {
    ev::ingest::store s(store, ev::ingest::open_mode::read_only);
    std::uniform_int_distribution<int64_t> pick(1, n_chunks);
    while (static_cast<int>(queries.size()) < n_queries) {
      auto c = s.chunk(pick(rng));
      if (!c) continue;
      std::vector<std::string> ws;
      size_t a = 0;
      while (a < c->text.size()) {
        size_t b = c->text.find(' ', a);
        if (b == std::string::npos) b = c->text.size();
        ws.push_back(c->text.substr(a, b - a));
        a = b + 1;
      }
      std::sort(ws.begin(), ws.end());
      ws.erase(std::unique(ws.begin(), ws.end()), ws.end());
      std::shuffle(ws.begin(), ws.end(), rng);
      std::string q;
      for (size_t i = 0; i < ws.size() && i < 6; ++i) {
        if (i) q += ' ';
        q += ws[i];
      }
      queries.push_back(q);
    }
  }
  const auto o0 = std::chrono::steady_clock::now();
  auto r = make(mode, store, f);
  const auto o1 = std::chrono::steady_clock::now();
  r->search(queries[0], k);  // cold: loads what the retrievers keep in memory (BM25's row lengths, ...)
  std::printf("open %.0f ms, first query %.1f ms\n", std::chrono::duration<double, std::milli>(o1 - o0).count(),
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - o1).count());
  for (int i = 1; i < std::min(20, n_queries); ++i) r->search(queries[i], k);  // warm-up: page cache, df cache
  std::vector<double> ms, cpu;
  // --dump FILE: each query's wall ms and hits (chunk id and score), to compare two builds' rankings.
  FILE* dump = f.count("--dump") ? std::fopen(get(f, "--dump", "").c_str(), "w") : nullptr;
  for (const auto& q : queries) {
    auto hits = timed_search(*r, q, k, ms, cpu);
    if (dump != nullptr) {
      std::fprintf(dump, "%.2f\t%s\t", ms.back(), q.c_str());
      for (auto& h : hits) std::fprintf(dump, " %lld:%.12g", static_cast<long long>(h.chunk_id), h.score);
      std::fprintf(dump, "\n");
    }
  }
  if (dump != nullptr) std::fclose(dump);
  std::string what = mode;
  what += " top-";
  what += std::to_string(k);
  what += " @ ";
  what += std::to_string(n_chunks);
  what += " chunks";
  report_latency(what.c_str(), ms, cpu);
  return 0;
}
