#include "api/pipeline.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>

#include "api/answer-json.h"
#include "api/openai-client.h"
#ifdef EVIDENT_HAVE_LOCAL_GENERATOR
#include "engine/local-generator.h"
#endif
#include "citation/extractive.h"
#include "citation/normalize.h"
#include "citation/protocol.h"
#include "citation/reasoning.h"
#include "citation/verify.h"
#include "engine/base/error.h"
#include "ingest/embedder.h"
#include "ingest/store.h"
#include "retrieval/retriever.h"
#if __has_include("retrieval/search.h")
#include "retrieval/search.h"
#define EVIDENT_HAVE_SEARCHER 1
#endif

namespace evident::answer {

namespace {

using clock_type = std::chrono::steady_clock;
double ms_since(clock_type::time_point t) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t).count();
}

bool is_code_path(const std::string& path) {
  static const char* const ext[] = {".c", ".h", ".cc", ".cpp", ".hpp", ".py", ".js", ".ts", ".go", ".rs", ".java",
                                    ".rb", ".sh", ".cu", ".cuh", ".kt", ".swift", ".cs", ".php", ".scala", ".lua"};
  for (const char* e : ext) {
    const size_t n = std::char_traits<char>::length(e);
    if (path.size() > n && path.compare(path.size() - n, n, e) == 0) return true;
  }
  return false;
}

// Stand-in for retrieval's one-call question -> packed_context API (until it lands): hybrid retrieval (lexical, plus
// dense when the store has vectors), contiguous chunks of a document merged into one passage, canonical order
// (document, position), a budget counted with the 4-bytes-per-token estimate.
retrieval::packed_context fallback_context(const std::filesystem::path& store_dir, int k, const ask_request& req,
                                           const std::string& system_prompt) {
  retrieval::packed_context pc;
  pc.system_prompt = system_prompt;
  pc.question = req.question;
  pc.budget_tokens = req.budget_tokens;
  ingest::store st(store_dir, ingest::open_mode::read_only);
  retrieval::filter f;
  if (req.collection) {
    auto cid = st.collection_id(*req.collection);
    EV_THROW_IF_NOT_KIND(cid.has_value(), not_found, "no collection '", *req.collection, "' in store ",
                         store_dir.string());
    f.collection_id = cid;
  }
  f.document_ids = req.documents;
  std::unique_ptr<retrieval::retriever_i> dense;
  if (std::filesystem::exists(st.vectors_path())) {
    try {
      dense = retrieval::make_dense(store_dir);
    } catch (const evident::error&) {
      dense.reset();  // lexical only
    }
  }
  auto r = retrieval::make_hybrid(retrieval::make_lexical(store_dir), std::move(dense), store_dir);
  const auto hits = r->search(req.question, k, f);
  // take hits best first while the estimated budget allows
  const int budget = std::max(256, req.budget_tokens - 1024);  // reserve for the answer and the question
  int used = static_cast<int>((system_prompt.size() + req.question.size()) / 4) + 64;
  std::map<int64_t, std::map<int, ingest::chunk_row>> chosen;  // document -> ordinal -> chunk
  std::map<int64_t, double> score_of;
  for (const auto& h : hits) {
    auto c = st.chunk(h.chunk_id);
    if (!c) continue;
    const int t = static_cast<int>(c->text.size() / 4) + 16;
    if (used + t > budget) continue;
    used += t;
    score_of[c->id] = h.score;
    chosen[c->document_id][c->ordinal] = std::move(*c);
  }
  int label = 0;
  for (auto& [doc_id, chunks] : chosen) {
    const auto doc = st.document(doc_id, true);
    if (!doc) continue;
    retrieval::passage* cur = nullptr;
    int last_ord = -2;
    for (auto& [ord, c] : chunks) {
      if (cur == nullptr || ord != last_ord + 1 || c.char_start > cur->char_end) {
        retrieval::passage p;
        p.label = ++label;
        p.document_id = doc_id;
        p.document_title = doc->title;
        p.document_path = doc->path;
        p.char_start = c.char_start;
        p.char_end = c.char_start;
        p.page_start = c.page;
        p.heading_path = c.heading_path;
        pc.passages.push_back(p);
        cur = &pc.passages.back();
      }
      cur->chunk_ids.push_back(c.id);
      cur->char_end = std::max(cur->char_end, c.char_end);
      cur->page_end = ingest::store::page_of(doc->page_starts, std::max<int64_t>(c.char_end - 1, c.char_start));
      cur->score = std::max(cur->score, score_of[c.id]);
      last_ord = ord;
    }
    for (auto& p : pc.passages)
      if (p.document_id == doc_id) p.text = citation::substr_cp(doc->text, p.char_start, p.char_end);
  }
  // render: system | passages (document blocks) | question
  std::string ctx;
  int64_t prev_doc = -1;
  for (auto& p : pc.passages) {
    if (p.document_id != prev_doc && prev_doc != -1) pc.prefix_boundaries.push_back(system_prompt.size() + ctx.size());
    prev_doc = p.document_id;
    std::string head = "[" + std::to_string(p.label) + "] " + p.document_title;
    if (p.document_path != p.document_title) head += " (" + p.document_path + ")";
    if (p.page_start > 1 || p.page_end > 1)
      head += p.page_end > p.page_start ? ", pages " + std::to_string(p.page_start) + "-" + std::to_string(p.page_end)
                                        : ", page " + std::to_string(p.page_start);
    const std::string block = head + "\n" + p.text + "\n\n";
    p.tokens = static_cast<int>(block.size() / 4);
    ctx += block;
  }
  if (!pc.passages.empty()) pc.prefix_boundaries.push_back(system_prompt.size() + ctx.size());
  pc.prefix_boundaries.insert(pc.prefix_boundaries.begin(), system_prompt.size());
  pc.context = std::move(ctx);
  pc.total_tokens = static_cast<int>((system_prompt.size() + pc.context.size() + req.question.size()) / 4);
  pc.whole_document = false;
  pc.exact_token_count = false;
  return pc;
}

nlohmann::json usage_json(const engine::usage_info& u) {
  return {{"prompt_tokens", u.prompt_tokens},         {"cached_prompt_tokens", u.cached_prompt_tokens},
          {"reasoning_tokens", u.reasoning_tokens},   {"completion_tokens", u.completion_tokens},
          {"time_to_first_token_ms", u.time_to_first_token_ms}, {"total_ms", u.total_ms}};
}
citation::verdict verdict_from(const std::string& s) {
  using citation::verdict;
  for (verdict v : {verdict::supported, verdict::other_passage, verdict::not_found, verdict::no_quote,
                    verdict::invalid_label})
    if (s == citation::to_string(v)) return v;
  return verdict::not_found;
}

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void save(ingest::store& st, ask_result& r, const ask_request& req, const std::string& raw_answer,
          int context_tokens) {
  nlohmann::json passages = nlohmann::json::array();
  for (const auto& p : r.passages) passages.push_back(passage_json(p, false));
  const nlohmann::json sampling = {{"temperature", req.sampling.temperature}, {"top_k", req.sampling.top_k},
                                   {"top_p", req.sampling.top_p},             {"min_p", req.sampling.min_p},
                                   {"seed", req.sampling.seed},               {"max_tokens", req.sampling.max_tokens}};
  // Deferred, and its first statement writes evident.db: an IMMEDIATE transaction would also lock the attached FTS
  // file, which a running ingest's FTS thread holds while waiting for the ingest writer, which may wait for us.
  sql::transaction tx(st.db(), sql::begin_mode::deferred);
  auto s = st.db().prepare(
      "INSERT INTO answers (created_at, tenant, question, answer, raw_answer, reasoning, not_found, extractive, "
      "cancelled, finish_reason, generator, template, collection, budget_tokens, context_tokens, passages, "
      "uncited_claims, usage, timings, sampling) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  s.bind(1, unix_ms()).bind(2, req.tenant).bind(3, r.question).bind(4, r.answer).bind(5, raw_answer);
  s.bind(6, r.reasoning).bind(7, r.not_found ? 1 : 0).bind(8, r.extractive ? 1 : 0).bind(9, r.cancelled ? 1 : 0);
  s.bind(10, r.finish_reason).bind(11, r.generator).bind(12, r.template_id);
  if (req.collection) s.bind(13, *req.collection); else s.bind_null(13);
  s.bind(14, req.budget_tokens).bind(15, context_tokens).bind(16, passages.dump());
  s.bind(17, nlohmann::json(r.uncited_claims).dump()).bind(18, usage_json(r.usage).dump());
  s.bind(19, timings_json(r.time).dump()).bind(20, sampling.dump());
  s.run();
  r.answer_id = st.db().last_insert_rowid();
  auto c = st.db().prepare(
      "INSERT INTO answer_citations (answer_id, ordinal, label, answer_offset, chunk_id, document_id, document_title, "
      "document_path, page, char_start, char_end, quote, span_text, verdict, match_score, found_in_label) "
      "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  for (size_t k = 0; k < r.citations.size(); ++k) {
    const auto& x = r.citations[k];
    c.reset();
    c.bind(1, r.answer_id).bind(2, static_cast<int64_t>(k)).bind(3, x.label).bind(4, static_cast<int64_t>(x.answer_offset));
    c.bind(5, x.chunk_id).bind(6, x.document_id).bind(7, x.document_title).bind(8, x.document_path).bind(9, x.page);
    c.bind(10, x.char_start).bind(11, x.char_end).bind(12, x.quote).bind(13, x.span_text);
    c.bind(14, citation::to_string(x.v)).bind(15, x.match_score).bind(16, x.found_in_label);
    c.run();
  }
  tx.commit();
}

}  // namespace

struct pipeline::impl {
  std::mutex mu;  // guards generators and context (set_* vs ask)
  std::map<std::string, std::shared_ptr<engine::generator_i>> generators;
  context_fn context;
  const engine::tokenizer* tok = nullptr;  // the engine's tokenizer when loaded: exact token counts in packing
#ifdef EVIDENT_HAVE_SEARCHER
  // Searchers are one per thread at a time (they hold SQLite connections): a small pool, taken and given back.
  std::mutex pool_mu;
  std::vector<std::unique_ptr<retrieval::searcher>> pool;
#endif
};


pipeline::pipeline(const std::filesystem::path& store_dir, const std::string& generator)
    : pipeline([&] {
        pipeline_options o;
        o.store_dir = store_dir;
        if (!generator.empty()) o.generator = generator;
        return o;
      }()) {}

pipeline::pipeline(pipeline_options opt) : opt_(std::move(opt)), impl_(std::make_unique<impl>()) {
  {
    // Opening read-write applies pending migrations (0002 answers) once, before concurrent asks.
    EV_THROW_IF_NOT_KIND(std::filesystem::exists(opt_.store_dir / ingest::store::db_file), not_found, "no store at ",
                         opt_.store_dir.string(), " (run `evident ingest DIR --store ", opt_.store_dir.string(),
                         "` first)");
    ingest::store st(opt_.store_dir);
  }
  impl_->generators["extractive"] = std::make_shared<citation::extractive_answerer>(opt_.extractive);
  if (!opt_.openai_url.empty()) {
    openai_options o;
    o.base_url = opt_.openai_url;
    o.model = opt_.openai_model;
    o.api_key = opt_.openai_api_key;
    o.stream = opt_.openai_stream;
    impl_->generators["openai"] = std::make_shared<openai_client>(o);
  }
  if (!opt_.model_dir.empty()) {
#ifdef EVIDENT_HAVE_LOCAL_GENERATOR
    engine::local_generator_options o;
    o.model_dir = opt_.model_dir;
    if (!opt_.tokenizer_path.empty()) o.tokenizer_path = opt_.tokenizer_path;
    o.device = opt_.engine_device;
    auto g = std::make_shared<engine::local_generator>(o);
    impl_->tok = &g->tok();
    impl_->generators["engine"] = g;
#else
    EV_THROW(invalid_input, "generator 'engine': this build has no local engine (model dir ", opt_.model_dir.string(),
             "); use --generator extractive or openai");
#endif
  }
  if (opt_.generator == "openai") {
    EV_THROW_IF_NOT_MSG(!opt_.openai_url.empty(), "generator 'openai' needs an OpenAI-compatible URL (--openai URL)");
  } else if (opt_.generator == "engine") {
    EV_THROW_IF_NOT_MSG(!opt_.model_dir.empty(), "generator 'engine' needs a checkpoint directory (--model DIR)");
  } else {
    EV_THROW_IF_NOT_MSG(opt_.generator == "extractive", "unknown generator '", opt_.generator,
                        "' (expected extractive, openai or engine)");
  }
  const auto dir = opt_.store_dir;
  const int k = opt_.retrieve_k;
#ifdef EVIDENT_HAVE_SEARCHER
  // retrieval's one call (hybrid retrieval + packer) with the citation protocol's system prompt and user message.
  impl* self = impl_.get();
  impl_->context = [self, dir, k](const ask_request& req, const std::string& sys) {
    std::unique_ptr<retrieval::searcher> s;
    {
      std::lock_guard<std::mutex> lock(self->pool_mu);
      if (!self->pool.empty()) {
        s = std::move(self->pool.back());
        self->pool.pop_back();
      }
    }
    if (!s) s = std::make_unique<retrieval::searcher>(dir, self->tok);
    retrieval::search_options o;
    o.top_k = k;
    if (req.collection) {
      ingest::store st(dir, ingest::open_mode::read_only);
      auto cid = st.collection_id(*req.collection);
      EV_THROW_IF_NOT_KIND(cid.has_value(), not_found, "no collection '", *req.collection, "' in store ",
                           dir.string());
      o.scope.collection_id = cid;
    }
    o.scope.document_ids = req.documents;
    o.pack.context_tokens = req.budget_tokens;
    o.pack.system_prompt = sys;
    o.pack.render_user = [](std::string_view c, std::string_view q) { return citation::render_user_message(c, q); };
    retrieval::packed_context pc = s->search(req.question, o);
    std::lock_guard<std::mutex> lock(self->pool_mu);
    self->pool.push_back(std::move(s));
    return pc;
  };
  (void)fallback_context;
#else
  impl_->context = [dir, k](const ask_request& req, const std::string& sys) {
    return fallback_context(dir, k, req, sys);
  };
#endif
}

pipeline::~pipeline() = default;

void pipeline::set_generator(const std::string& key, std::shared_ptr<engine::generator_i> g) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->generators[key] = std::move(g);
}

void pipeline::set_context(context_fn fn) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->context = std::move(fn);
}

ask_result pipeline::ask(const ask_request& req, const ask_events* events) {
  const auto t_start = clock_type::now();
  {
    const auto q = req.question.find_first_not_of(" \t\r\n");
    EV_THROW_IF_NOT_MSG(q != std::string::npos, "the question is empty");
  }
  std::shared_ptr<engine::generator_i> gen;
  context_fn context;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    const std::string key = req.generator.empty() ? opt_.generator : req.generator;
    auto it = impl_->generators.find(key);
    EV_THROW_IF_NOT_MSG(it != impl_->generators.end(), "generator '", key, "' is not configured (available:",
                        [&] {
                          std::string s;
                          for (const auto& [n, g] : impl_->generators) s += " " + n;
                          return s;
                        }(),
                        ")");
    gen = it->second;
    context = impl_->context;
  }
  ask_result r;
  r.question = req.question;
  r.generator = gen->name();
  r.extractive = gen->is_extractive();
  bool cancelled = false;

  // 1. retrieval + packing (the packer times itself inside; here both are one step)
  const citation::prompt_template* tmpl = &citation::choose_template(req.documents.size() == 1, 0.0);
  auto t = clock_type::now();
  retrieval::packed_context pc = context(req, tmpl->system);
  r.time.retrieval_ms = ms_since(t);
  // code-heavy contexts get the code template (same length class; boundaries shift with the system prompt)
  {
    size_t code = 0;
    for (const auto& p : pc.passages) code += is_code_path(p.document_path) ? 1 : 0;
    const auto* better = &citation::choose_template(pc.whole_document,
                                                    pc.passages.empty() ? 0.0 : double(code) / double(pc.passages.size()));
    if (better != tmpl) {
      const auto delta = static_cast<long long>(better->system.size()) - static_cast<long long>(pc.system_prompt.size());
      for (auto& b : pc.prefix_boundaries) b = static_cast<size_t>(static_cast<long long>(b) + delta);
      pc.system_prompt = better->system;
      tmpl = better;
    }
  }
  r.template_id = tmpl->key();
  r.passages = pc.passages;
  if (events && events->on_retrieval && !events->on_retrieval(r.passages)) cancelled = true;

  // 2. relevance gate
  std::string raw_answer;
  bool gated = false;
  if (!cancelled) {
    if (pc.passages.empty()) {
      gated = true;
    } else if (opt_.min_relevance > 0 && !r.extractive &&
               citation::best_coverage(req.question, pc.passages) < opt_.min_relevance) {
      gated = true;
    }
  }

  // 3. generation
  t = clock_type::now();
  if (gated) {
    raw_answer = std::string(citation::not_found_sentence) +
                 (pc.passages.empty() ? " No passage of the documents matched the question."
                                      : " No passage covers the question's key terms; the closest are listed.");
    r.finish_reason = "abstained";
    if (events && events->on_answer && !events->on_answer(raw_answer)) cancelled = true;
  } else if (!cancelled) {
    citation::reasoning_stream splitter(false, 512);
    citation::clean_stream cleaner;
    auto emit_reasoning = [&](const std::string& s) {
      if (s.empty()) return;
      r.reasoning += s;
      if (events && events->on_reasoning && !events->on_reasoning(s)) cancelled = true;
    };
    auto emit_answer = [&](const std::string& s) {
      if (s.empty()) return;
      raw_answer += s;
      const std::string clean = cleaner.feed(s);
      if (!clean.empty() && events && events->on_answer && !events->on_answer(clean)) cancelled = true;
    };
    auto* ex = dynamic_cast<citation::extractive_answerer*>(gen.get());
    if (ex != nullptr) {
      // direct form: the real passages, no prompt round trip
      const auto a = ex->answer(req.question, pc.passages);
      emit_reasoning(a.trace);
      if (!cancelled) emit_answer(a.raw);
      r.finish_reason = cancelled ? "cancelled" : "stop";
    } else {
      engine::generate_request gr;
      gr.messages = {{"system", pc.system_prompt}, {"user", citation::render_user_message(pc.context, req.question)}};
      gr.prefix_boundaries = pc.prefix_boundaries;
      gr.sampling = req.sampling;
      gen->generate(gr, [&](const engine::generate_event& ev) {
        switch (ev.kind) {
          case engine::event_kind::reasoning_delta:
            emit_reasoning(ev.text);
            break;
          case engine::event_kind::answer_delta: {
            std::string rs, as;
            splitter.feed(ev.text, &rs, &as);
            emit_reasoning(rs);
            emit_answer(as);
            break;
          }
          case engine::event_kind::usage:
            r.usage = ev.usage;
            break;
          case engine::event_kind::finish:
            r.finish_reason = ev.finish_reason;
            if (ev.finish_reason == "error") r.reasoning += (r.reasoning.empty() ? "" : "\n") + ("[generator error] " + ev.error_message);
            break;
        }
        return !cancelled;
      });
      std::string rs, as;
      splitter.finish(&rs, &as);
      emit_reasoning(rs);
      emit_answer(as);
    }
    const std::string rest = cleaner.finish();
    if (!rest.empty() && events && events->on_answer && !cancelled && !events->on_answer(rest)) cancelled = true;
  }
  r.time.generation_ms = ms_since(t);

  // 4. citations
  t = clock_type::now();
  const auto parsed = citation::parse_answer(raw_answer);
  r.answer = parsed.text;
  r.not_found = parsed.not_found || gated;
  r.uncited_claims.assign(parsed.uncited_claims.begin(), parsed.uncited_claims.end());
  {
    ingest::store st(opt_.store_dir, ingest::open_mode::read_only);
    std::map<int64_t, std::vector<int64_t>> page_starts;
    const citation::layout_fn layout = [&](const retrieval::passage& p) -> std::optional<citation::passage_layout> {
      citation::passage_layout l;
      for (int64_t id : p.chunk_ids) {
        auto c = st.chunk(id);
        if (!c) return std::nullopt;
        l.chunk_starts.push_back(c->char_start);
      }
      auto it = page_starts.find(p.document_id);
      if (it == page_starts.end()) {
        auto d = st.document(p.document_id);
        it = page_starts.emplace(p.document_id, d ? d->page_starts : std::vector<int64_t>{0}).first;
      }
      l.page_starts = it->second;
      return l;
    };
    r.citations = citation::resolve_citations(parsed, pc.passages, layout, opt_.verify);
  }
  for (const auto& c : r.citations) {
    if (cancelled || !events || !events->on_citation) break;
    if (!events->on_citation(c)) cancelled = true;
  }
  if (r.not_found) {
    // the closest passages, best first
    std::stable_sort(r.passages.begin(), r.passages.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
    if (r.passages.size() > 5) r.passages.resize(5);
  }
  r.time.citation_ms = ms_since(t);
  r.cancelled = cancelled;
  if (cancelled) r.finish_reason = "cancelled";
  r.time.packing_ms = 0;
  r.time.total_ms = ms_since(t_start);

  if (opt_.store_answers) {
    ingest::store st(opt_.store_dir);
    save(st, r, req, raw_answer, pc.total_tokens);
  }
  return r;
}

std::optional<ask_result> load_answer(const std::filesystem::path& store_dir, int64_t answer_id) {
  ingest::store st(store_dir, ingest::open_mode::read_only);
  auto s = st.db().prepare(
      "SELECT question, answer, reasoning, not_found, extractive, cancelled, generator, template, finish_reason, "
      "passages, uncited_claims, usage, timings FROM answers WHERE id = ?");
  s.bind(1, answer_id);
  if (!s.step()) return std::nullopt;
  ask_result r;
  r.answer_id = answer_id;
  r.question = s.col_text(0);
  r.answer = s.col_text(1);
  r.reasoning = s.col_text(2);
  r.not_found = s.col_int(3) != 0;
  r.extractive = s.col_int(4) != 0;
  r.cancelled = s.col_int(5) != 0;
  r.generator = s.col_text(6);
  r.template_id = s.col_text(7);
  r.finish_reason = s.col_text(8);
  for (const auto& j : nlohmann::json::parse(s.col_text(9))) {
    retrieval::passage p;
    p.label = j.value("label", 0);
    p.document_id = j.value("document_id", int64_t{0});
    p.document_title = j.value("document_title", "");
    p.document_path = j.value("document_path", "");
    p.chunk_ids = j.value("chunk_ids", std::vector<int64_t>{});
    p.char_start = j.value("char_start", int64_t{0});
    p.char_end = j.value("char_end", int64_t{0});
    p.page_start = j.value("page_start", 1);
    p.page_end = j.value("page_end", 1);
    p.score = j.value("score", 0.0);
    p.tokens = j.value("tokens", 0);
    r.passages.push_back(std::move(p));
  }
  r.uncited_claims = nlohmann::json::parse(s.col_text(10)).get<std::vector<int>>();
  const auto u = nlohmann::json::parse(s.col_text(11));
  r.usage.prompt_tokens = u.value("prompt_tokens", 0);
  r.usage.cached_prompt_tokens = u.value("cached_prompt_tokens", 0);
  r.usage.reasoning_tokens = u.value("reasoning_tokens", 0);
  r.usage.completion_tokens = u.value("completion_tokens", 0);
  r.usage.time_to_first_token_ms = u.value("time_to_first_token_ms", 0.0);
  r.usage.total_ms = u.value("total_ms", 0.0);
  const auto tj = nlohmann::json::parse(s.col_text(12));
  r.time.retrieval_ms = tj.value("retrieval_ms", 0.0);
  r.time.packing_ms = tj.value("packing_ms", 0.0);
  r.time.generation_ms = tj.value("generation_ms", 0.0);
  r.time.citation_ms = tj.value("citation_ms", 0.0);
  r.time.total_ms = tj.value("total_ms", 0.0);
  auto c = st.db().prepare(
      "SELECT label, answer_offset, chunk_id, document_id, document_title, document_path, page, char_start, char_end, "
      "quote, span_text, verdict, match_score, found_in_label FROM answer_citations WHERE answer_id = ? "
      "ORDER BY ordinal");
  c.bind(1, answer_id);
  while (c.step()) {
    citation::resolved_citation x;
    x.label = static_cast<int>(c.col_int(0));
    x.answer_offset = static_cast<size_t>(c.col_int(1));
    x.chunk_id = c.col_int(2);
    x.document_id = c.col_int(3);
    x.document_title = c.col_text(4);
    x.document_path = c.col_text(5);
    x.page = static_cast<int>(c.col_int(6));
    x.char_start = c.col_int(7);
    x.char_end = c.col_int(8);
    x.quote = c.col_text(9);
    x.span_text = c.col_text(10);
    x.v = verdict_from(c.col_text(11));
    x.match_score = c.col_double(12);
    x.found_in_label = static_cast<int>(c.col_int(13));
    r.citations.push_back(std::move(x));
  }
  return r;
}

std::string to_json(const ask_result& r, bool with_passage_text, int indent) {
  nlohmann::json cites = nlohmann::json::array();
  for (const auto& c : r.citations) cites.push_back(citation_json(c));
  nlohmann::json passages = nlohmann::json::array();
  for (const auto& p : r.passages) passages.push_back(passage_json(p, with_passage_text));
  const nlohmann::json j = {{"answer_id", r.answer_id},
                            {"question", r.question},
                            {"answer", r.answer},
                            {"reasoning", r.reasoning},
                            {"not_found", r.not_found},
                            {"extractive", r.extractive},
                            {"cancelled", r.cancelled},
                            {"generator", r.generator},
                            {"template", r.template_id},
                            {"finish_reason", r.finish_reason},
                            {"citations", cites},
                            {"uncited_claims", r.uncited_claims},
                            {"passages", passages},
                            {"usage", usage_json(r.usage)},
                            {"timings", timings_json(r.time)}};
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace evident::answer
