#include "retrieval/beir.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <unordered_map>

#include "engine/base/error.h"
#include "ingest/store.h"
#include "retrieval/vectors.h"

namespace evident::retrieval {

namespace {

std::ifstream open_input(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  EV_THROW_IF_NOT_KIND(in.good(), not_found, "BEIR file missing: ", p.string());
  return in;
}

template <typename F>
void for_each_json_line(const std::filesystem::path& p, F&& f) {
  auto in = open_input(p);
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line == "\r") continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      EV_THROW(corrupt, p.string(), ":", n, ": expected one JSON object per line: ", e.what());
    }
    EV_THROW_IF_NOT_KIND(j.is_object() && j.contains("_id"), corrupt, p.string(), ":", n,
                         ": expected an object with \"_id\"");
    f(j);
  }
}

std::string id_of(const nlohmann::json& j) {
  const auto& v = j.at("_id");
  return v.is_string() ? v.get<std::string>() : v.dump();
}
std::string str_field(const nlohmann::json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string fingerprint(const std::filesystem::path& corpus) {
  return std::to_string(std::filesystem::file_size(corpus)) + ":" +
         std::to_string(std::filesystem::last_write_time(corpus).time_since_epoch().count());
}

int64_t code_points(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

std::vector<beir_doc> load_beir_corpus(const std::filesystem::path& dir) {
  std::vector<beir_doc> out;
  for_each_json_line(dir / "corpus.jsonl",
                     [&](const nlohmann::json& j) { out.push_back({id_of(j), str_field(j, "title"), str_field(j, "text")}); });
  return out;
}

std::vector<beir_query> load_beir_queries(const std::filesystem::path& dir) {
  std::vector<beir_query> out;
  for_each_json_line(dir / "queries.jsonl",
                     [&](const nlohmann::json& j) { out.push_back({id_of(j), str_field(j, "text")}); });
  return out;
}

qrels_t load_beir_qrels(const std::filesystem::path& dir, const std::string& split) {
  const auto p = dir / "qrels" / (split + ".tsv");
  auto in = open_input(p);
  qrels_t q;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const auto t1 = line.find('\t');
    const auto t2 = t1 == std::string::npos ? t1 : line.find('\t', t1 + 1);
    EV_THROW_IF_NOT_KIND(t2 != std::string::npos, corrupt, p.string(), ":", n,
                         ": expected query-id<TAB>corpus-id<TAB>score");
    const std::string qid = line.substr(0, t1), did = line.substr(t1 + 1, t2 - t1 - 1), score = line.substr(t2 + 1);
    if (n == 1 && qid == "query-id") continue;  // header row
    int rel = 0;
    try {
      rel = std::stoi(score);
    } catch (const std::exception&) {
      EV_THROW(corrupt, p.string(), ":", n, ": score '", score, "' is not an integer");
    }
    q[qid][did] = rel;
  }
  return q;
}

beir_store_info build_beir_store(const std::filesystem::path& dataset_dir, const std::filesystem::path& store_dir,
                                 bool with_vectors, bool rebuild) {
  const auto corpus_path = dataset_dir / "corpus.jsonl";
  EV_THROW_IF_NOT_KIND(std::filesystem::exists(corpus_path), not_found, "BEIR file missing: ", corpus_path.string());
  const std::string fp = fingerprint(corpus_path);
  beir_store_info info;
  if (rebuild) std::filesystem::remove_all(store_dir);
  {
    ingest::store s(store_dir);
    if (s.meta("beir.corpus") == fp) {
      info.reused = true;
      info.documents = s.document_count();
      if (with_vectors && !std::filesystem::exists(s.vectors_path())) write_store_vectors(s);
      return info;
    }
    EV_THROW_IF_NOT_MSG(s.document_count() == 0, "store ", store_dir.string(),
                        " holds other documents; give `evident eval retrieval` its own --store (or --rebuild)");
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto corpus = load_beir_corpus(dataset_dir);
  ingest::store s(store_dir);
  {
    sql::transaction tx(s.db());
    const int64_t coll = *s.collection_id("beir", true);
    auto doc = s.db().prepare(
        "INSERT INTO documents(collection_id, path, sha256, size, mtime, format, title, text, char_count, "
        "ingested_at) VALUES (?, ?, '', ?, 0, 'txt', ?, ?, ?, strftime('%s','now'))");
    auto chunk = s.db().prepare(
        "INSERT INTO chunks(document_id, ordinal, char_start, char_end, byte_start, byte_end, page, token_count, text) "
        "VALUES (?, 0, 0, ?, 0, ?, 1, ?, ?)");
    for (const auto& d : corpus) {
      const std::string text = d.title.empty() ? d.text : d.title + "\n\n" + d.text;
      const int64_t cps = code_points(text);
      doc.bind(1, coll).bind(2, d.id).bind(3, static_cast<int64_t>(text.size())).bind(4, d.title).bind(5, text);
      doc.bind(6, cps);
      doc.run();
      doc.reset();
      const int64_t doc_id = s.db().last_insert_rowid();
      // token_count: the documented estimate (bytes / 4) - BEIR stores are for retrieval only.
      chunk.bind(1, doc_id).bind(2, cps).bind(3, static_cast<int64_t>(text.size()));
      chunk.bind(4, static_cast<int64_t>(text.size() / 4 + 1)).bind(5, text);
      chunk.run();
      chunk.reset();
    }
    tx.commit();
  }
  if (with_vectors) write_store_vectors(s);
  s.set_meta("beir.corpus", fp);
  info.documents = s.document_count();
  info.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return info;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

beir_result run_beir(retriever_i& r, const std::filesystem::path& dataset_dir, const std::filesystem::path& store_dir,
                     const std::string& split, int depth, const std::function<void(int, int)>& progress) {
  const auto qrels = load_beir_qrels(dataset_dir, split);
  const auto queries = load_beir_queries(dataset_dir);
  std::unordered_map<int64_t, std::string> doc_key;  // document id -> BEIR _id
  {
    ingest::store s(store_dir, ingest::open_mode::read_only);
    auto st = s.db().prepare("SELECT id, path FROM documents");
    while (st.step()) doc_key[st.col_int(0)] = st.col_text(1);
  }
  beir_result res;
  run_t run;
  int done = 0, total = 0;
  for (const auto& q : queries) total += qrels.count(q.id) > 0;
  for (const auto& q : queries) {
    if (!qrels.count(q.id)) continue;
    const auto t0 = std::chrono::steady_clock::now();
    const auto hits = r.search(q.text, depth);
    res.latency_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    auto& docs = run[q.id];
    std::map<int64_t, bool> seen;
    for (const auto& h : hits) {
      if (seen[h.document_id]) continue;  // best chunk per document (hits are best first)
      seen[h.document_id] = true;
      auto it = doc_key.find(h.document_id);
      if (it != doc_key.end()) docs.push_back({it->second, h.score});
    }
    if (progress) progress(++done, total);
  }
  res.metrics = evaluate(qrels, run);
  res.p50_ms = percentile(res.latency_ms, 50);
  res.p95_ms = percentile(res.latency_ms, 95);
  res.p99_ms = percentile(res.latency_ms, 99);
  return res;
}

}  // namespace evident::retrieval
