// Tokenizer throughput: encode / count of a long English text (the BEIR SciFact corpus, titles + abstracts) and of
// a multilingual mixture (the tokenizer fixture strings repeated), single-threaded and on N threads.
//   bench_tokenizer [TOKENIZER_JSON] [CORPUS_JSONL] [THREADS] [FIXTURE_JSONL]
// Prints one line per measurement: throughput per wall-clock second and per CPU second (the sum of the threads' CPU
// time: on a loaded machine the CPU-time figure is the stable one).
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/tokenizer.h"

namespace {

using clock_type = std::chrono::steady_clock;

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

std::string read_corpus(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "bench_tokenizer: cannot open %s\n", path.c_str());
    std::exit(1);
  }
  std::string text, line;
  while (std::getline(in, line)) {
    const auto doc = nlohmann::json::parse(line);
    text += doc.value("title", "") + "\n" + doc.value("text", "") + "\n\n";
  }
  return text;
}

std::string read_fixture_mix(const std::string& path, size_t target_bytes) {
  std::ifstream in(path);
  std::string mix, line;
  std::vector<std::string> texts;
  while (std::getline(in, line)) texts.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
  if (texts.empty()) return mix;
  while (mix.size() < target_bytes)
    for (const auto& t : texts) mix += t + "\n";
  return mix;
}

// Splits `text` into `parts` pieces at newlines (roughly equal sizes).
std::vector<std::string_view> split(const std::string& text, size_t parts) {
  std::vector<std::string_view> out;
  size_t begin = 0;
  for (size_t p = 1; p <= parts; ++p) {
    size_t end = p == parts ? text.size() : text.find('\n', text.size() * p / parts);
    if (end == std::string::npos) end = text.size();
    out.emplace_back(text.data() + begin, end - begin);
    begin = end;
  }
  return out;
}

void measure(const evident::engine::tokenizer& tok, const char* what, const std::string& text, size_t threads,
             bool count_only) {
  const auto parts = split(text, threads * 8);  // several chunks per thread, like a chunker feeding documents
  std::vector<size_t> tokens(threads, 0);
  std::vector<double> cpu(threads, 0.0);
  const auto t0 = clock_type::now();
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      const double c0 = thread_cpu_seconds();
      for (size_t i = t; i < parts.size(); i += threads)
        tokens[t] += count_only ? tok.count(parts[i]) : tok.encode(parts[i]).size();
      cpu[t] = thread_cpu_seconds() - c0;
    });
  for (auto& th : pool) th.join();
  const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
  size_t total = 0;
  double cpu_s = 0;
  for (size_t t = 0; t < threads; ++t) total += tokens[t], cpu_s += cpu[t];
  std::printf(
      "%-34s threads=%zu  wall: %6.2f MB/s %9.0f tokens/s   per CPU-second: %6.2f MB/s %9.0f tokens/s"
      "  (%zu bytes, %zu tokens, %.2f s)\n",
      what, threads, double(text.size()) / 1e6 / s, double(total) / s, double(text.size()) / 1e6 / cpu_s,
      double(total) / cpu_s, text.size(), total, s);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string tok_path = argc > 1 ? argv[1] : EVIDENT_BENCH_SHARED_DIR "/models/qwen3-tokenizer/tokenizer.json";
  const std::string corpus_path = argc > 2 ? argv[2] : EVIDENT_BENCH_SHARED_DIR "/data/beir-scifact/corpus.jsonl";
  const size_t threads = argc > 3 ? std::stoul(argv[3]) : std::thread::hardware_concurrency();
  const auto t0 = clock_type::now();
  const auto tok = evident::engine::tokenizer::from_file(tok_path);
  std::printf("load tokenizer.json: %.2f s\n", std::chrono::duration<double>(clock_type::now() - t0).count());

  const std::string english = read_corpus(corpus_path);
  const std::string fixture = argc > 4 ? argv[4] : EVIDENT_BENCH_SOURCE_DIR "/tests/fixtures/tokenizer/encode.jsonl";
  const std::string mixed = read_fixture_mix(fixture, english.size() / 4);
  measure(tok, "encode scifact (cold cache)", english, 1, false);
  measure(tok, "encode scifact (warm cache)", english, 1, false);
  measure(tok, "count scifact", english, 1, true);
  measure(tok, "encode scifact", english, threads, false);
  measure(tok, "encode multilingual fixture mix", mixed, 1, false);
  measure(tok, "encode multilingual fixture mix", mixed, threads, false);
  return 0;
}
