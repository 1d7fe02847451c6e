// `evident ask "QUESTION" --store PATH ...`: one question through the answer pipeline, printed for people or as JSON.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "api/cli.h"
#include "api/commands.h"
#include "api/pipeline.h"
#include "citation/normalize.h"

namespace evident::cli {

namespace {

std::string one_line(const std::string& s, size_t max_bytes) {
  std::string out;
  bool sp = false;
  for (char c : s) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      sp = !out.empty();
      continue;
    }
    if (sp) out.push_back(' ');
    sp = false;
    out.push_back(c);
  }
  if (out.size() > max_bytes) out = out.substr(0, citation::byte_offset_of(out, static_cast<int64_t>(max_bytes) - 3)) + "...";
  return out;
}

void print_passage(const retrieval::passage& p, bool with_text) {
  std::printf("  [%d] %s (%s), page %d, chars %lld-%lld, score %.3f\n", p.label, p.document_title.c_str(),
              p.document_path.c_str(), p.page_start, static_cast<long long>(p.char_start),
              static_cast<long long>(p.char_end), p.score);
  if (with_text) std::printf("      %s\n", one_line(p.text, 600).c_str());
}

}  // namespace

int cmd_ask(const std::vector<std::string>& argv) {
  args a("ask", "\"QUESTION\" [--store PATH] [options]",
         "Answer a question from the documents in a store, with citations resolved to pages and verified quotes.");
  auto& store = a.option("--store", "PATH", "store directory", "evident-store");
  auto& budget = a.option("--budget", "TOKENS", "context budget (8k, 32k, 64k, 128k)", "32k");
  auto& collection = a.option("--collection", "NAME", "only this collection (default: all)");
  auto& json = a.flag("--json", "print everything as JSON (answer, reasoning, citations, passages, usage, timings)");
  auto& trace = a.flag("--trace", "also print the reasoning trace");
  auto& show_context = a.flag("--show-context", "also print the packed passages");
  auto& generator = a.option("--generator", "NAME", "extractive | openai | engine", "");
  auto& openai = a.option("--openai", "URL", "OpenAI-compatible server (http://host:port[/v1])");
  auto& openai_model = a.option("--openai-model", "NAME", "model name for --openai", "default");
  auto& model = a.option("--model", "DIR", "checkpoint directory for --generator engine");
  auto& tokenizer = a.option("--tokenizer", "FILE", "tokenizer.json for --model (default: DIR/tokenizer.json)");
  auto& device = a.option("--device", "cpu|cuda", "where --model runs (cuda: builds with CUDA only)", "cpu");
  auto& max_tokens = a.option("--max-tokens", "N", "tokens to generate, reasoning included", "4096");
  auto& temperature = a.option("--temperature", "T", "sampling temperature (0 = greedy)", "0.6");
  auto& no_store = a.flag("--no-save", "do not store the answer in the answers table");
  if (!a.parse(argv, 1, 1)) return 0;

  answer::pipeline_options opt;
  opt.store_dir = store;
  opt.generator = generator.empty() ? (openai.empty() ? (model.empty() ? "extractive" : "engine") : "openai") : generator;
  opt.openai_url = openai;
  opt.openai_model = openai_model;
  if (const char* key = std::getenv("OPENAI_API_KEY")) opt.openai_api_key = key;
  opt.model_dir = model;
  opt.tokenizer_path = tokenizer;
  require_one_of("--device", device, {"cpu", "cuda"});
  opt.engine_device = device;
  opt.store_answers = !no_store;

  answer::ask_request req;
  req.question = a.positional()[0];
  if (!collection.empty()) req.collection = collection;
  req.budget_tokens = static_cast<int>(parse_count("--budget", budget));
  req.sampling.max_tokens = static_cast<int>(parse_count("--max-tokens", max_tokens));
  try {
    req.sampling.temperature = std::stof(temperature);
  } catch (...) {
    throw usage_error{"--temperature: expected a number, got '" + temperature + "'"};
  }

  answer::pipeline p(opt);
  const auto r = p.ask(req);
  if (json) {
    std::printf("%s\n", answer::to_json(r, true, 2).c_str());
    return 0;
  }
  if (trace && !r.reasoning.empty()) std::printf("Reasoning:\n%s\n\n", r.reasoning.c_str());
  if (show_context) {
    std::printf("Context (%zu passages):\n", r.passages.size());
    for (const auto& ps : r.passages) print_passage(ps, true);
    std::printf("\n");
  }
  std::printf("%s\n", r.answer.c_str());
  if (r.not_found) {
    std::printf("\nNot found in the documents. Closest passages:\n");
    for (const auto& ps : r.passages) print_passage(ps, true);
  }
  if (!r.citations.empty()) {
    std::printf("\nCitations:\n");
    for (const auto& c : r.citations) {
      std::printf("  [%d] %s (%s), page %d, chars %lld-%lld: %s", c.label, c.document_title.c_str(),
                  c.document_path.c_str(), c.page, static_cast<long long>(c.char_start),
                  static_cast<long long>(c.char_end), citation::to_string(c.v));
      if (c.v == citation::verdict::other_passage) std::printf(" (found in [%d])", c.found_in_label);
      if (c.match_score > 0) std::printf(" (score %.2f)", c.match_score);
      std::printf("\n");
      if (!c.quote.empty()) std::printf("      quote: \"%s\"\n", one_line(c.quote, 300).c_str());
    }
  }
  if (!r.uncited_claims.empty())
    std::printf("\n%zu claim(s) without a citation (flagged).\n", r.uncited_claims.size());
  std::printf("\n-- %s, template %s%s, %.0f ms%s\n", r.generator.c_str(), r.template_id.c_str(),
              r.extractive ? ", extractive (no language model)" : "", r.time.total_ms,
              r.answer_id > 0 ? (", answer #" + std::to_string(r.answer_id)).c_str() : "");
  return r.finish_reason == "error" ? 1 : 0;
}

}  // namespace evident::cli
