#include "tests/api/server-fixture.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <sstream>
#include <thread>

#include "ingest/store.h"

namespace evident::test {

namespace {

int64_t cps(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

std::set<std::string> words(const std::string& s) {
  std::set<std::string> out;
  std::string w;
  for (char ch : s + " ") {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c >= 0x80) {
      w += static_cast<char>(std::tolower(c));
    } else {
      if (w.size() > 3) out.insert(w);  // skip short function words
      w.clear();
    }
  }
  return out;
}

}  // namespace

std::string cp_substr(const std::string& s, int64_t start, int64_t end) {
  std::vector<size_t> at;  // byte offset of each code point, then the size
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) at.push_back(i);
  at.push_back(s.size());
  const size_t a = std::min(static_cast<size_t>(start), at.size() - 1);
  const size_t b = std::min(static_cast<size_t>(end), at.size() - 1);
  return s.substr(at[a], at[b] - at[a]);
}

std::vector<fixture_doc> fixture_docs() {
  return {
      {"default", "rivers.txt", "Rivers of Europe",
       "",
       {"The Danube flows through ten countries before reaching the Black Sea. ",
        "The Rhine rises in the Swiss Alps and ends in the North Sea. ",
        "Rivers carried most of the continent's trade until railways arrived."}},
      {"default", "café.md", "Café notes",
       "",
       {"Café crème — naïve façade 😀 is served at the Zürich café every morning. ",
        "The espresso machine was repaired on Tuesday by the technician."}},
      {"science", "tides.txt", "Tides",
       "",
       {"Tides are caused mainly by the gravitational pull of the Moon. ",
        "Spring tides happen when the Sun and the Moon are aligned."}},
  };
}

void write_fixture_store(const std::filesystem::path& dir) {
  ingest::store st(dir);
  auto& db = st.db();
  sql::transaction tx(db);
  for (auto d : fixture_docs()) {
    for (const auto& c : d.chunks) d.text += c;
    const int64_t cid = *st.collection_id(d.collection, true);
    auto ins = db.prepare(
        "INSERT INTO documents(collection_id, path, source_root, sha256, size, mtime, format, title, pages, "
        "page_starts, headings, text, char_count, ingested_at) VALUES (?, ?, '', 'x', ?, 0, ?, ?, ?, ?, '[]', ?, ?, 0)");
    // Two pages when there are two or more chunks: page 2 starts at the second chunk.
    const int64_t second = d.chunks.size() > 1 ? cps(d.chunks[0]) : 0;
    const int pages = d.chunks.size() > 1 ? 2 : 1;
    ins.bind(1, cid).bind(2, d.path).bind(3, static_cast<int64_t>(d.text.size()));
    ins.bind(4, d.path.ends_with(".md") ? "md" : "txt").bind(5, d.title).bind(6, pages);
    ins.bind(7, pages == 2 ? "[0," + std::to_string(second) + "]" : std::string("[0]"));
    ins.bind(8, d.text).bind(9, cps(d.text));
    ins.run();
    const int64_t doc_id = db.last_insert_rowid();
    int64_t cp = 0, byte = 0;
    for (size_t i = 0; i < d.chunks.size(); ++i) {
      const auto& c = d.chunks[i];
      auto ch = db.prepare(
          "INSERT INTO chunks(document_id, ordinal, char_start, char_end, byte_start, byte_end, page, heading_path, "
          "token_count, text) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?)");
      ch.bind(1, doc_id).bind(2, static_cast<int64_t>(i)).bind(3, cp).bind(4, cp + cps(c));
      ch.bind(5, byte).bind(6, byte + static_cast<int64_t>(c.size())).bind(7, i == 0 ? 1 : 2);
      ch.bind(8, static_cast<int64_t>(c.size() / 4)).bind(9, c);
      ch.run();
      cp += cps(c);
      byte += static_cast<int64_t>(c.size());
    }
  }
  tx.commit();
}

answer::ask_result scripted_answers::ask(const answer::ask_request& r, const answer::ask_events& ev) {
  if (throw_bug) throw std::runtime_error("scripted bug");
  if (entered) {
    entered->set_value();
    entered = nullptr;
  }
  if (release.valid()) release.wait();
  ingest::store st(store_, ingest::open_mode::read_only);
  std::optional<int64_t> cid;
  if (r.collection) cid = st.collection_id(*r.collection);
  const auto q = words(r.question);
  ingest::chunk_row best;
  ingest::document_row best_doc;
  size_t best_score = 0;
  for (const auto& d : st.documents(cid))
    for (const auto& c : st.chunks_of(d.id)) {
      size_t score = 0;
      for (const auto& w : words(c.text)) score += q.count(w);
      if (score > best_score) best_score = score, best = c, best_doc = d;
    }
  answer::ask_result res;
  res.question = r.question;
  res.generator = "scripted";
  res.extractive = true;
  res.finish_reason = "stop";
  auto pause = [&] {
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
  };
  if (best_score > 0) {
    retrieval::passage p;
    p.label = 1;
    p.document_id = best.document_id;
    p.document_title = best_doc.title;
    p.document_path = best_doc.path;
    p.chunk_ids = {best.id};
    p.char_start = best.char_start;
    p.char_end = best.char_end;
    p.page_start = p.page_end = best.page;
    p.text = best.text;
    p.score = static_cast<double>(best_score);
    res.passages.push_back(p);
  }
  if (ev.on_retrieval && !ev.on_retrieval(res.passages)) res.cancelled = true;
  const std::vector<std::string> reasoning = {"Looking for passages that share words with the question. ",
                                              best_score > 0 ? "Passage [1] matches." : "Nothing matches."};
  for (const auto& piece : reasoning) {
    pause();
    res.reasoning += piece;
    if (!res.cancelled && ev.on_reasoning && !ev.on_reasoning(piece)) res.cancelled = true;
  }
  if (best_score == 0) {
    res.not_found = true;
    res.answer = "Not found in the documents.";
    if (!res.cancelled && ev.on_answer && !ev.on_answer(res.answer)) res.cancelled = true;
  } else {
    // The quote: the chunk's text up to and including its first full stop.
    std::string quote = best.text.substr(0, best.text.find('.') + 1);
    const std::vector<std::string> pieces = {quote.substr(0, quote.size() / 2), quote.substr(quote.size() / 2), " [1]"};
    for (const auto& piece : pieces) {
      pause();
      res.answer += piece;
      if (!res.cancelled && ev.on_answer && !ev.on_answer(piece)) res.cancelled = true;
    }
    citation::resolved_citation c;
    c.label = 1;
    c.answer_offset = res.answer.size() - 3;
    c.chunk_id = best.id;
    c.document_id = best.document_id;
    c.document_title = best_doc.title;
    c.document_path = best_doc.path;
    c.page = best.page;
    c.char_start = best.char_start;
    c.char_end = best.char_start + cps(quote);
    c.quote = quote;
    c.span_text = quote;
    c.v = citation::verdict::supported;
    c.match_score = 1.0;
    res.citations.push_back(c);
    if (!res.cancelled && ev.on_citation && !ev.on_citation(c)) res.cancelled = true;
  }
  res.usage.prompt_tokens = 100;
  res.usage.completion_tokens = static_cast<int>(res.answer.size() / 4);
  if (res.cancelled) res.finish_reason = "cancelled";
  std::lock_guard<std::mutex> lock(mu_);
  res.answer_id = next_id_++;
  saved_[res.answer_id] = res;
  return res;
}

std::optional<answer::ask_result> scripted_answers::load(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = saved_.find(id);
  if (it == saved_.end()) return std::nullopt;
  return it->second;
}

std::vector<sse_event> parse_sse(const std::string& body) {
  std::vector<sse_event> out;
  std::istringstream in(body);
  std::string line;
  sse_event cur;
  bool any = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {
      if (any) out.push_back(cur.name.empty() ? sse_event{"message", cur.data} : cur);
      cur = {};
      any = false;
    } else if (line[0] == ':') {
      continue;  // comment (keep-alive)
    } else if (line.rfind("event: ", 0) == 0) {
      cur.name = line.substr(7);
      any = true;
    } else if (line.rfind("data: ", 0) == 0) {
      cur.data += (cur.data.empty() ? "" : "\n") + line.substr(6);
      any = true;
    }
  }
  return out;
}

void server_test::SetUp() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  store_dir = scratch_dir(std::string("api-") + info->test_suite_name() + "-" + info->name());
  write_fixture_store(store_dir);
  answers = std::make_shared<scripted_answers>(store_dir);
  api::server_config cfg;
  cfg.store_dir = store_dir;
  cfg.port = 0;
  cfg.quiet = true;
  configure(cfg);
  srv = std::make_unique<api::server>(cfg, answers);
  port = srv->start();
  ASSERT_GT(port, 0);
}

void server_test::TearDown() {
  if (srv) srv->stop();
}

httplib::Client server_test::client() const {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  c.set_connection_timeout(10, 0);
  return c;
}

httplib::Result server_test::post_json(const std::string& path, const nlohmann::json& body,
                                       const std::string& key) const {
  httplib::Headers h;
  if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
  return client().Post(path.c_str(), h, body.dump(), "application/json");
}

httplib::Result server_test::get(const std::string& path, const std::string& key) const {
  httplib::Headers h;
  if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
  return client().Get(path.c_str(), h);
}

}  // namespace evident::test
