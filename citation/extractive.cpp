#include "citation/extractive.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <unordered_map>

#include "citation/normalize.h"
#include "citation/protocol.h"
#include "ingest/embedder.h"

namespace evident::citation {

namespace {

// Light English stemming so "licenses" meets "license" and "copying" meets "copy"; applied to both sides.
std::string stem(std::string w) {
  auto ends = [&](const char* s) {
    const size_t n = std::char_traits<char>::length(s);
    return w.size() > n + 2 && w.compare(w.size() - n, n, s) == 0;
  };
  if (ends("ies")) return w.substr(0, w.size() - 3) + "y";
  if (ends("ing")) return w.substr(0, w.size() - 3);
  if (ends("ed")) return w.substr(0, w.size() - 2);
  if (ends("es") && (w[w.size() - 3] == 's' || w[w.size() - 3] == 'x' || w[w.size() - 3] == 'h'))
    return w.substr(0, w.size() - 2);
  if (ends("s") && w[w.size() - 2] != 's' && w[w.size() - 2] != 'u') return w.substr(0, w.size() - 1);
  return w;
}

std::vector<std::string> terms(std::string_view text) {
  std::vector<std::string> out;
  for (auto& w : content_words(text)) out.push_back(stem(std::move(w)));
  return out;
}

// A sentence word matches a question term when equal after stemming, or when the shorter of the two has at least
// six bytes and begins the longer ("redistribut" ~ "redistribution", "licens" ~ "licensee").
bool term_match(const std::string& word, const std::string& term) {
  if (word == term) return true;
  const std::string& a = word.size() < term.size() ? word : term;
  const std::string& b = word.size() < term.size() ? term : word;
  return a.size() >= 6 && b.compare(0, a.size(), a) == 0;
}

size_t term_count(const std::vector<std::string>& words, const std::string& term) {
  size_t n = 0;
  for (const auto& w : words) n += term_match(w, term) ? 1 : 0;
  return n;
}

// Words that shape a question but say nothing about its subject ("what does X say about Y", "how many ...").
bool is_question_filler(const std::string& stemmed) {
  static const char* const filler[] = {"say", "tell", "mention", "describe", "explain", "state", "according",
                                       "regard", "concern", "anyth", "someth", "whether", "much", "many", "often",
                                       "kind", "type", "way", "give", "know", "anyone", "somebody"};
  for (const char* f : filler)
    if (stemmed == f) return true;
  return false;
}

constexpr int k_hash_dim = 256;

// Hashed character-trigram vector of the normalised text (FNV-1a), L2-normalised.
std::vector<float> hashed_vector(std::string_view text) {
  std::vector<float> v(k_hash_dim, 0.0f);
  std::u32string n;  // (built with append: GCC 12 -Wrestrict misfires on operator+ here)
  n.push_back(U' ');
  n.append(normalize(text).text);
  n.push_back(U' ');
  for (size_t i = 0; i + 3 <= n.size(); ++i) {
    uint32_t h = 2166136261u;
    for (size_t k = 0; k < 3; ++k) {
      h ^= static_cast<uint32_t>(n[i + k]);
      h *= 16777619u;
    }
    v[h % k_hash_dim] += 1.0f;
  }
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  if (s > 0)
    for (float& x : v) x = static_cast<float>(x / std::sqrt(s));
  return v;
}

double dot(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

std::string collapse_ws(std::string_view s) {
  std::string out;
  bool sp = false;
  for (char c : s) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      sp = !out.empty();
      continue;
    }
    if (sp) out.push_back(' ');
    sp = false;
    out.push_back(c);
  }
  return out;
}

// Prose copies of passage text must not contain brackets that could read as citation markers.
std::string defuse_brackets(std::string s) {
  for (char& c : s) {
    if (c == '[') c = '(';
    if (c == ']') c = ')';
  }
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.compare(i, 3, "\xE3\x80\x90") == 0) { out += "("; i += 2; continue; }
    if (s.compare(i, 3, "\xE3\x80\x91") == 0) { out += ")"; i += 2; continue; }
    out.push_back(s[i]);
  }
  return out;
}

// The longest piece of `s` between quote marks (a quote inside [n: "..."] must not contain one).
std::string quote_safe(const std::string& s) {
  std::vector<std::string> pieces(1);
  for (size_t i = 0; i < s.size(); ++i) {
    const bool q = s[i] == '"' || s.compare(i, 3, "\xE2\x80\x9C") == 0 || s.compare(i, 3, "\xE2\x80\x9D") == 0 ||
                   s.compare(i, 3, "\xE2\x80\x9E") == 0 || s.compare(i, 2, "\xC2\xAB") == 0 ||
                   s.compare(i, 2, "\xC2\xBB") == 0;
    if (q) {
      i += s[i] == '"' ? 0 : (static_cast<unsigned char>(s[i]) == 0xC2 ? 1 : 2);
      pieces.emplace_back();
      continue;
    }
    pieces.back().push_back(s[i]);
  }
  std::string best;
  for (auto& p : pieces) {
    const size_t b = p.find_first_not_of(" ,;:()");
    const size_t e = p.find_last_not_of(" ,;:()");
    std::string t = b == std::string::npos ? "" : p.substr(b, e - b + 1);
    if (t.size() > best.size()) best = t;
  }
  return best;
}

struct sentence_info {
  size_t passage = 0;
  int index = 0;                  // within its passage
  int64_t cp_start = 0, cp_end = 0;  // code points within the passage text
  std::string text;
  std::vector<std::string> words;
};

}  // namespace

extractive_answerer::extractive_answerer(extractive_options opt, const ingest::embedder_i* embedder)
    : opt_(opt), embedder_(embedder) {}

extractive_answer extractive_answerer::answer(const std::string& question,
                                              const std::vector<retrieval::passage>& passages) const {
  extractive_answer out;
  // 1. sentences
  std::vector<sentence_info> sents;
  for (size_t pi = 0; pi < passages.size(); ++pi) {
    const std::u32string u = to_u32(passages[pi].text);
    int idx = 0;
    for (const auto& [s, e] : split_sentences(u)) {
      sentence_info si;
      si.passage = pi;
      si.index = idx++;
      si.cp_start = s;
      si.cp_end = e;
      si.text = to_utf8(std::u32string_view(u).substr(s, e - s));
      si.words = terms(si.text);
      if (!si.words.empty()) sents.push_back(std::move(si));
    }
  }
  // 2. question terms and their IDF over the sentences
  std::vector<std::string> qterms = terms(question);
  qterms.erase(std::remove_if(qterms.begin(), qterms.end(), is_question_filler), qterms.end());
  std::sort(qterms.begin(), qterms.end());
  qterms.erase(std::unique(qterms.begin(), qterms.end()), qterms.end());
  const double n = static_cast<double>(sents.size());
  std::map<std::string, double> idf;
  double avg_len = 0;
  for (const auto& s : sents) avg_len += static_cast<double>(s.words.size());
  avg_len = sents.empty() ? 1 : avg_len / n;
  for (const auto& t : qterms) {
    double df = 0;
    for (const auto& s : sents) df += term_count(s.words, t) > 0 ? 1 : 0;
    idf[t] = std::log(1.0 + (n - df + 0.5) / (df + 0.5));
  }
  double idf_total = 0;
  for (const auto& [t, w] : idf) idf_total += w;

  // 3. dense similarity
  std::vector<double> dense(sents.size(), 0.0);
  if (!sents.empty()) {
    if (embedder_ != nullptr) {
      const int d = embedder_->dim();
      std::vector<float> q(d), m(sents.size() * static_cast<size_t>(d));
      embedder_->embed_query(question, q.data());
      std::vector<std::string_view> views;
      for (const auto& s : sents) views.emplace_back(s.text);
      embedder_->embed(views, m.data());
      for (size_t i = 0; i < sents.size(); ++i) dense[i] = dot(q.data(), m.data() + i * d, d);
    } else {
      const auto q = hashed_vector(question);
      for (size_t i = 0; i < sents.size(); ++i) dense[i] = dot(q.data(), hashed_vector(sents[i].text).data(), k_hash_dim);
    }
  }

  // 4. scores
  std::vector<scored_sentence> scored;
  double best_bm25 = 0;
  std::vector<double> bm25(sents.size(), 0.0), coverage(sents.size(), 0.0);
  // A sentence is read with its document's title (short titles only: "Apache License" makes "Trademarks." part of
  // the Apache licence); title words count for coverage, not for BM25.
  std::vector<std::set<std::string>> title_terms(passages.size());
  for (size_t pi = 0; pi < passages.size(); ++pi)
    if (passages[pi].document_title.size() <= 100) {
      const auto tt = terms(passages[pi].document_title);
      title_terms[pi].insert(tt.begin(), tt.end());
    }
  for (size_t i = 0; i < sents.size(); ++i) {
    const auto& s = sents[i];
    const double len = static_cast<double>(s.words.size());
    double cov = 0;
    for (const auto& t : qterms) {
      // a term of the document's title is given for every sentence of it: coverage, but no BM25 weight (else
      // "Apache License ..." headings outrank the sentence about trademarks in the Apache licence)
      if (title_terms[s.passage].count(t)) {
        cov += idf[t];
        continue;
      }
      const double f = static_cast<double>(term_count(s.words, t));
      if (f == 0) continue;
      bm25[i] += idf[t] * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * len / avg_len));
      cov += idf[t];
    }
    coverage[i] = idf_total > 0 ? cov / idf_total : 0;
    best_bm25 = std::max(best_bm25, bm25[i]);
  }
  for (size_t i = 0; i < sents.size(); ++i) {
    const auto& s = sents[i];
    const auto& p = passages[s.passage];
    scored_sentence ss;
    ss.label = p.label;
    ss.char_start = p.char_start + s.cp_start;
    ss.char_end = p.char_start + s.cp_end;
    ss.text = s.text;
    ss.bm25 = best_bm25 > 0 ? bm25[i] / best_bm25 : 0;
    ss.coverage = coverage[i];
    ss.dense = std::max(0.0, dense[i]);
    ss.position = 1.0 / (1.0 + s.index);
    ss.score = 0.35 * ss.bm25 + 0.40 * ss.coverage + 0.20 * ss.dense + 0.05 * ss.position;
    // headings and fragments ("Trademarks.") name a topic without saying anything about it
    ss.score *= std::min(1.0, 0.5 + static_cast<double>(s.words.size()) / 8.0);
    scored.push_back(std::move(ss));
  }
  std::stable_sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
  double top_coverage = 0;
  for (const auto& s : scored) top_coverage = std::max(top_coverage, s.coverage);

  // 5. compose
  char buf[256];
  std::string trace = "Extractive answerer (no language model): scored " + std::to_string(sents.size()) +
                      " sentences of " + std::to_string(passages.size()) + " passages against the question.\n";
  trace += "Question terms (IDF):";
  for (const auto& [t, w] : idf) {
    std::snprintf(buf, sizeof buf, " %s(%.2f)", t.c_str(), w);
    trace += buf;
  }
  std::snprintf(buf, sizeof buf, "\nBest coverage of the question's terms: %.2f (threshold %.2f).\nCandidates:\n",
                top_coverage, opt_.min_coverage);
  trace += buf;
  for (size_t i = 0; i < scored.size() && static_cast<int>(i) < opt_.trace_candidates; ++i) {
    const auto& s = scored[i];
    std::snprintf(buf, sizeof buf, "  [%d] score %.3f (bm25 %.2f, coverage %.2f, dense %.2f, position %.2f): ",
                  s.label, s.score, s.bm25, s.coverage, s.dense, s.position);
    std::string t = collapse_ws(s.text);
    if (t.size() > 160) t = t.substr(0, byte_offset_of(t, 150)) + "...";
    trace += buf + t + "\n";
    out.ranked.push_back(s);
  }
  if (qterms.empty() || scored.empty() || top_coverage < opt_.min_coverage) {
    out.not_found = true;
    std::snprintf(buf, sizeof buf, " No sentence of the passages covers the question's key terms (best coverage "
                  "%.2f, needed %.2f); the closest passages are listed.", top_coverage, opt_.min_coverage);
    out.raw = std::string(not_found_sentence) + buf;
    trace += "Decision: abstain (not found in the documents).\n";
    out.trace = trace;
    return out;
  }
  out.raw = "Extractive answer (sentences quoted from the documents; no language model was used):\n";
  std::vector<std::pair<int64_t, int64_t>> used;
  int taken = 0;
  const double best_score = scored.front().score;
  for (const auto& s : scored) {
    if (taken >= opt_.max_sentences) break;
    if (taken > 0 && (s.score < opt_.keep_ratio * best_score || s.coverage < 0.5 * top_coverage)) break;
    bool dup = false;
    for (const auto& [a, b] : used) dup |= s.char_start < b && a < s.char_end;
    if (dup) continue;
    used.emplace_back(s.char_start, s.char_end);
    // cut long sentences to the window of max_quote_words words with most question terms
    std::string text = s.text;
    const std::u32string u = to_u32(text);
    std::vector<std::pair<size_t, size_t>> words;
    for (size_t i = 0; i < u.size();) {
      while (i < u.size() && (u[i] == U' ' || u[i] == U'\n' || u[i] == U'\t' || u[i] == U'\r')) ++i;
      size_t j = i;
      while (j < u.size() && !(u[j] == U' ' || u[j] == U'\n' || u[j] == U'\t' || u[j] == U'\r')) ++j;
      if (j > i) words.emplace_back(i, j);
      i = j;
    }
    bool cut = false;
    if (static_cast<int>(words.size()) > opt_.max_quote_words) {
      const size_t w = static_cast<size_t>(opt_.max_quote_words);
      std::vector<int> hit(words.size(), 0);
      const std::set<std::string> qs(qterms.begin(), qterms.end());
      for (size_t k = 0; k < words.size(); ++k)
        for (const auto& t : terms(to_utf8(std::u32string_view(u).substr(words[k].first, words[k].second - words[k].first))))
          for (const auto& qt : qs) hit[k] += term_match(t, qt) ? 1 : 0;
      int cur = 0, best = -1;
      size_t best_k = 0;
      for (size_t k = 0; k < words.size(); ++k) {
        cur += hit[k];
        if (k >= w) cur -= hit[k - w];
        if (k + 1 >= w && cur > best) {
          best = cur;
          best_k = k + 1 - w;
        }
      }
      text = to_utf8(std::u32string_view(u).substr(words[best_k].first,
                                                   words[best_k + w - 1].second - words[best_k].first));
      cut = true;
    }
    const std::string prose = defuse_brackets(collapse_ws(text));
    const std::string quote = collapse_ws(quote_safe(text));
    out.raw += "- ";
    if (cut) out.raw += "... ";
    out.raw += prose;
    if (cut) out.raw += " ...";
    if (count_code_points(normalize_string(quote)) >= 3)
      out.raw += " [" + std::to_string(s.label) + ": \"" + quote + "\"]\n";
    else
      out.raw += " [" + std::to_string(s.label) + "]\n";
    ++taken;
  }
  trace += "Decision: answer with " + std::to_string(taken) + " quoted sentence(s).\n";
  out.trace = trace;
  return out;
}

std::vector<retrieval::passage> extractive_answerer::passages_from_prompt(const std::string& msg,
                                                                         std::string* question) {
  std::vector<retrieval::passage> out;
  size_t i = 0;
  bool in_question = false;
  std::string q, doc_title;
  while (i < msg.size()) {
    size_t e = msg.find('\n', i);
    if (e == std::string::npos) e = msg.size();
    const std::string_view line(msg.data() + i, e - i);
    int label = 0;
    size_t k = 1;
    if (line.size() >= 3 && line[0] == '[') {
      while (k < line.size() && std::isdigit(static_cast<unsigned char>(line[k]))) label = label * 10 + (line[k++] - '0');
      if (k == 1 || k >= line.size() || line[k] != ']') label = 0;
    }
    if (label > 0) {
      retrieval::passage p;
      p.label = label;
      p.document_title = doc_title;
      out.push_back(std::move(p));
      in_question = false;
    } else if (line.rfind("Document: ", 0) == 0) {
      // the packer's document header: the title of the passages that follow
      doc_title = std::string(line.substr(10));
      in_question = false;
    } else if (line.rfind("Question:", 0) == 0) {
      in_question = true;
      q = std::string(line.substr(9));
    } else if (in_question) {
      if (line.empty()) in_question = false;
      else q += " " + std::string(line);
    } else if (!out.empty() && q.empty()) {  // after the question: instructions, not passage text
      out.back().text += std::string(line) + "\n";
    }
    i = e + 1;
  }
  for (auto& p : out) {
    while (!p.text.empty() && (p.text.back() == '\n' || p.text.back() == ' ')) p.text.pop_back();
    p.char_end = count_code_points(p.text);
  }
  const size_t b = q.find_first_not_of(' ');
  if (question != nullptr) *question = b == std::string::npos ? "" : q.substr(b);
  return out;
}

void extractive_answerer::generate(const engine::generate_request& request, const engine::event_callback& on_event) {
  const auto t0 = std::chrono::steady_clock::now();
  engine::generate_event fin;
  fin.kind = engine::event_kind::finish;
  const engine::chat_message* user = nullptr;
  for (const auto& m : request.messages)
    if (m.role == "user") user = &m;
  if (user == nullptr) {
    fin.finish_reason = "error";
    fin.error_message = "extractive answerer: the request has no user message";
    on_event(fin);
    return;
  }
  std::string question;
  const auto passages = passages_from_prompt(user->content, &question);
  const auto a = answer(question, passages);
  auto send = [&](engine::event_kind k, const std::string& text) {
    engine::generate_event ev;
    ev.kind = k;
    ev.text = text;
    return on_event(ev);
  };
  bool ok = !request.enable_thinking || send(engine::event_kind::reasoning_delta, a.trace);
  // stream the answer a line at a time
  for (size_t i = 0; ok && i < a.raw.size();) {
    size_t e = a.raw.find('\n', i);
    e = e == std::string::npos ? a.raw.size() : e + 1;
    ok = send(engine::event_kind::answer_delta, a.raw.substr(i, e - i));
    i = e;
  }
  engine::generate_event usage;
  usage.kind = engine::event_kind::usage;
  usage.usage.total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (ok) ok = on_event(usage);
  fin.finish_reason = ok ? "stop" : "cancelled";
  on_event(fin);
}

double best_coverage(const std::string& question, const std::vector<retrieval::passage>& passages) {
  extractive_options o;
  o.trace_candidates = 1;
  extractive_answerer x(o);
  const auto a = x.answer(question, passages);
  return a.ranked.empty() ? 0.0 : a.ranked.front().coverage;
}

}  // namespace evident::citation
