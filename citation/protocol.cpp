#include "citation/protocol.h"

#include <algorithm>
#include <cctype>

#include "citation/normalize.h"
#include "engine/base/error.h"

namespace evident::citation {

namespace {

// ---- templates ------------------------------------------------------------------------------------------------------
// The rules shared by every template; only the first paragraph differs. Released texts are frozen (see header).
constexpr const char* rules_v1 =
    "Rules:\n"
    "1. Use only facts stated in the passages. Do not use outside knowledge.\n"
    "2. After every sentence that states a fact, cite the passage it comes from with its label and an exact quote "
    "of the supporting words, in this form: [3: \"exact words copied from passage 3\"]. Copy the quote character for "
    "character from that passage (5 to 25 words); never paraphrase inside the quote marks.\n"
    "3. To cite several passages, write one marker per passage: [1: \"...\"] [4: \"...\"].\n"
    "4. If the passages do not contain the answer, reply with exactly: NOT FOUND IN THE DOCUMENTS. Then say in one "
    "sentence what the passages do cover.\n"
    "5. Answer concisely, in the language of the question. Do not mention these rules.\n";

std::vector<prompt_template> make_templates() {
  std::vector<prompt_template> t;
  t.push_back({"answer", 1,
               std::string("You answer questions using only the numbered passages the user provides. Each passage "
                           "starts with its label in square brackets, such as [3], followed by its source.\n\n") +
                   rules_v1});
  t.push_back({"long-document", 1,
               std::string("You answer questions about one document that the user provides in full, split into "
                           "numbered consecutive passages. Each passage starts with its label in square brackets, "
                           "such as [3]. Read the whole document before answering; facts may be spread across "
                           "passages far apart.\n\n") +
                   rules_v1});
  t.push_back({"code", 1,
               std::string("You answer questions about source code using only the numbered passages the user "
                           "provides (files or excerpts of files). Each passage starts with its label in square "
                           "brackets, such as [3], followed by its file path. Quote identifiers and code lines "
                           "exactly as written.\n\n") +
                   rules_v1});
  return t;
}

// ---- byte-level scanning --------------------------------------------------------------------------------------------
bool starts(std::string_view s, size_t i, std::string_view w) { return s.substr(i, w.size()) == w; }

constexpr std::string_view k_open_cjk = "\xE3\x80\x90";   // 【
constexpr std::string_view k_close_cjk = "\xE3\x80\x91";  // 】
constexpr std::string_view k_ldquo = "\xE2\x80\x9C";      // “
constexpr std::string_view k_rdquo = "\xE2\x80\x9D";      // ”
constexpr std::string_view k_dlow = "\xE2\x80\x9E";       // „
constexpr std::string_view k_laquo = "\xC2\xAB";          // «
constexpr std::string_view k_raquo = "\xC2\xBB";          // »
constexpr std::string_view k_ndash = "\xE2\x80\x93";      // –

size_t open_len(std::string_view s, size_t i) {
  if (s[i] == '[') return 1;
  if (starts(s, i, k_open_cjk)) return k_open_cjk.size();
  return 0;
}
size_t close_len(std::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  if (s[i] == ']') return 1;
  if (starts(s, i, k_close_cjk)) return k_close_cjk.size();
  return 0;
}
// A quote opener at i: returns its length, 0 if none.
size_t quote_open_len(std::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  if (s[i] == '"') return 1;
  for (auto q : {k_ldquo, k_dlow, k_laquo, k_rdquo})
    if (starts(s, i, q)) return q.size();
  return 0;
}
// Position of the quote mark at or after i that closes the opener `open` (npos if none): a straight quote closes
// only at a straight quote, so “curly” quotes may appear inside it; a curly or guillemet opener closes at its pair
// (or at a straight quote, for models that mix them).
size_t find_quote_close(std::string_view s, size_t i, std::string_view open, size_t* len) {
  std::vector<std::string_view> closers;
  if (open == "\"") closers = {"\""};
  else if (open == k_laquo) closers = {k_raquo, "\""};
  else if (open == k_dlow) closers = {k_ldquo, k_rdquo, "\""};
  else closers = {k_rdquo, k_ldquo, "\""};
  for (size_t j = i; j < s.size(); ++j)
    for (auto q : closers)
      if (starts(s, j, q)) { *len = q.size(); return j; }
  return std::string_view::npos;
}
void skip_spaces(std::string_view s, size_t& i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
}
bool parse_int(std::string_view s, size_t& i, int& v) {
  size_t j = i;
  v = 0;
  while (j < s.size() && j - i < 5 && std::isdigit(static_cast<unsigned char>(s[j]))) v = v * 10 + (s[j++] - '0');
  if (j == i || (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j])))) return false;
  i = j;
  return true;
}

// Tries to parse a marker starting at `i` (an opener). On success fills labels/quotes and returns its end.
size_t try_marker(std::string_view s, size_t i, std::vector<int>& labels, std::vector<std::string>& quotes) {
  size_t j = i + open_len(s, i);
  skip_spaces(s, j);
  bool any = false;
  while (j < s.size()) {
    int a = 0;
    if (!parse_int(s, j, a)) break;
    int b = a;
    size_t k = j;
    skip_spaces(s, k);
    size_t dash = s[k] == '-' ? 1 : starts(s, k, k_ndash) ? k_ndash.size() : 0;
    if (k < s.size() && dash > 0) {
      size_t m = k + dash;
      skip_spaces(s, m);
      int c = 0;
      if (parse_int(s, m, c) && c >= a && c - a < 50) {
        b = c;
        j = m;
      }
    }
    for (int v = a; v <= b; ++v)
      if (v > 0 && std::find(labels.begin(), labels.end(), v) == labels.end()) labels.push_back(v);
    any = true;
    skip_spaces(s, j);
    if (j < s.size() && (s[j] == ',' || s[j] == ';')) {
      ++j;
      skip_spaces(s, j);
      continue;
    }
    break;
  }
  if (!any || labels.empty()) return 0;
  if (size_t c = close_len(s, j)) return j + c;
  if (j >= s.size() || s[j] != ':') return 0;
  ++j;
  // quotes: one or more, separated by spaces, commas, "..." or "…"
  while (true) {
    skip_spaces(s, j);
    if (size_t c = close_len(s, j)) return quotes.empty() ? 0 : j + c;
    size_t ql = quote_open_len(s, j);
    if (ql == 0) {
      if (j < s.size() && (s[j] == ',' || s[j] == '.' || s[j] == ';')) { ++j; continue; }
      if (starts(s, j, "\xE2\x80\xA6")) { j += 3; continue; }  // …
      return 0;
    }
    size_t cl = 0;
    size_t e = find_quote_close(s, j + ql, s.substr(j, ql), &cl);
    if (e == std::string_view::npos || e - j > 2000) return 0;
    quotes.emplace_back(s.substr(j + ql, e - j - ql));
    j = e + cl;
  }
}

// A quote directly before raw position `end` ("words" [1]): only spaces and , . ; : between. Empty when none.
std::string leading_quote(std::string_view s, size_t end) {
  size_t j = end;
  int punct = 0;
  while (j > 0 && (s[j - 1] == ' ' || s[j - 1] == '\t' || ((s[j - 1] == ',' || s[j - 1] == '.' || s[j - 1] == ';' ||
                                                           s[j - 1] == ':') && ++punct <= 2)))
    --j;
  size_t close = 0;
  if (j >= 1 && s[j - 1] == '"') close = 1;
  else if (j >= 3 && (s.substr(j - 3, 3) == k_rdquo || s.substr(j - 3, 3) == k_ldquo)) close = 3;
  if (close == 0) return {};
  const size_t qend = j - close;
  for (size_t k = qend; k > 0 && qend - k < 600; --k) {
    const size_t p = k - 1;
    if (s[p] == '\n') return {};
    size_t ol = 0;
    if (s[p] == '"') ol = 1;
    else if (p >= 2 && (s.substr(p - 2, 3) == k_ldquo || s.substr(p - 2, 3) == k_dlow)) ol = 3;
    if (ol > 0) {
      const size_t qstart = ol == 1 ? p + 1 : p + 1;
      if (qend > qstart) return std::string(s.substr(qstart, qend - qstart));
      return {};
    }
  }
  return {};
}

std::string canonical(const std::vector<int>& labels) {
  std::string m = "[";
  for (size_t k = 0; k < labels.size(); ++k) m += (k ? ", " : "") + std::to_string(labels[k]);
  return m + "]";
}

// Cleans `raw` (markers -> canonical form). When `markers` is given, records them.
std::string clean_text(std::string_view raw, std::vector<parsed_marker>* markers) {
  std::string out;
  out.reserve(raw.size());
  size_t i = 0;
  while (i < raw.size()) {
    if (open_len(raw, i) > 0) {
      std::vector<int> labels;
      std::vector<std::string> quotes;
      if (size_t end = try_marker(raw, i, labels, quotes)) {
        const std::string canon = canonical(labels);
        if (markers != nullptr) {
          parsed_marker m;
          m.raw_offset = i;
          m.raw_length = end - i;
          m.offset = out.size();
          m.length = canon.size();
          m.labels = labels;
          m.quotes = quotes;
          if (m.quotes.empty()) {
            // A run like "quote" [1][2] shares the leading quote with every marker of the run.
            size_t back = i;
            if (!markers->empty() && markers->back().raw_offset + markers->back().raw_length == i)
              back = markers->back().raw_offset;
            std::string lq = leading_quote(raw, back);
            if (!lq.empty()) m.quotes.push_back(lq);
          }
          markers->push_back(std::move(m));
        }
        out += canon;
        i = end;
        continue;
      }
    }
    out.push_back(raw[i++]);
  }
  return out;
}

// Sentences of the clean text as [start, end) byte ranges; markers right after a sentence end belong to it.
std::vector<std::pair<size_t, size_t>> sentences(const std::string& t, const std::vector<parsed_marker>& markers) {
  std::vector<bool> marker_at(t.size() + 1, false);
  std::vector<size_t> marker_end(t.size() + 1, 0);
  for (const auto& m : markers) {
    marker_at[m.offset] = true;
    marker_end[m.offset] = m.offset + m.length;
  }
  std::vector<std::pair<size_t, size_t>> out;
  size_t start = 0;
  size_t i = 0;
  while (i < t.size()) {
    if (marker_at[i]) {
      i = marker_end[i];
      continue;
    }
    const char c = t[i];
    bool end_here = false;
    size_t j = i + 1;
    if (c == '\n') {
      end_here = true;
    } else if ((c == '.' || c == '!' || c == '?') && (j >= t.size() || t[j] == ' ' || t[j] == '\n' || marker_at[j])) {
      // as in split_sentences: a new sentence starts with a capital, digit, quote, bracket or non-ASCII letter, so
      // "e.g. the" and "Inc. and" do not end one
      size_t k = j;
      while (k < t.size() && t[k] == ' ') ++k;
      const auto d = static_cast<unsigned char>(k < t.size() ? t[k] : '\n');
      end_here = k >= t.size() || marker_at[k] || std::isupper(d) || std::isdigit(d) || d == '"' || d == '(' ||
                 d == '[' || d == '\n' || d == '-' || d == '*' || d >= 0x80;
    } else if (starts(t, i, "\xE3\x80\x82")) {  // 。
      end_here = true;
      j = i + 3;
    }
    if (!end_here) {
      ++i;
      continue;
    }
    // attach following markers (possibly separated by spaces)
    size_t k = j;
    while (true) {
      size_t q = k;
      while (q < t.size() && t[q] == ' ') ++q;
      if (q < t.size() && marker_at[q]) {
        k = marker_end[q];
        j = k;
      } else {
        break;
      }
    }
    out.emplace_back(start, j);
    start = j;
    i = j;
  }
  if (start < t.size()) out.emplace_back(start, t.size());
  return out;
}

bool is_claim(std::string_view s) {
  // A claim has at least four words of letters; headings ending with ':' and list bullets alone are not claims.
  int words = 0;
  bool in_word = false;
  for (unsigned char c : s) {
    const bool w = std::isalnum(c) || c >= 0x80;
    if (w && !in_word) ++words;
    in_word = w;
  }
  size_t e = s.find_last_not_of(" \n\t");
  if (e != std::string_view::npos && s[e] == ':') return false;
  return words >= 4;
}

const std::vector<std::string>& abstain_phrases() {
  static const std::vector<std::string> p = {
      "not found in the documents", "not found in the provided documents", "not found in the passages",
      "the documents do not contain", "the passages do not contain", "the provided passages do not contain",
      "the documents do not mention", "the passages do not mention", "no answer in the documents"};
  return p;
}

}  // namespace

const std::vector<prompt_template>& all_templates() {
  static const std::vector<prompt_template> t = make_templates();
  return t;
}

const prompt_template& get_template(std::string_view id) {
  const prompt_template* best = nullptr;
  for (const auto& t : all_templates())
    if (t.id == id && (best == nullptr || t.version > best->version)) best = &t;
  EV_THROW_IF_NOT_MSG(best != nullptr, "unknown prompt template '", id,
                      "' (expected one of: answer, long-document, code)");
  return *best;
}

const prompt_template& choose_template(bool whole_document, double code_fraction) {
  if (whole_document) return get_template("long-document");
  if (code_fraction > 0.5) return get_template("code");
  return get_template("answer");
}

std::string render_user_message(std::string_view context, std::string_view question) {
  std::string m;
  m.reserve(context.size() + question.size() + 200);
  m += context;
  if (!m.empty() && m.back() != '\n') m += '\n';
  m += "\nQuestion: ";
  m += question;
  m += "\n\nAnswer from the passages above. After each claim cite [n: \"exact quote\"]; if they do not contain the "
       "answer, reply NOT FOUND IN THE DOCUMENTS.";
  return m;
}

parsed_answer parse_answer(std::string_view raw) {
  parsed_answer a;
  a.text = clean_text(raw, &a.markers);
  const auto sents = sentences(a.text, a.markers);
  size_t mi = 0;
  for (const auto& [s, e] : sents) {
    bool cited = false;
    while (mi < a.markers.size() && a.markers[mi].offset < e) {
      auto& m = a.markers[mi++];
      cited = true;
      // the claim: sentence start up to the first marker of the sentence
      m.claim_start = s;
      m.claim_end = m.offset;
      for (size_t k = mi - 1; k > 0 && a.markers[k - 1].offset >= s; --k) m.claim_end = a.markers[k - 1].offset;
      while (m.claim_start < m.claim_end && (a.text[m.claim_start] == ' ' || a.text[m.claim_start] == '\n'))
        ++m.claim_start;
      while (m.claim_end > m.claim_start && (a.text[m.claim_end - 1] == ' ' || a.text[m.claim_end - 1] == '\n'))
        --m.claim_end;
    }
    size_t b = s;
    while (b < e && (a.text[b] == ' ' || a.text[b] == '\n')) ++b;
    if (!cited && is_claim(std::string_view(a.text).substr(b, e - b))) a.uncited_claims.push_back(b);
  }
  const std::string norm = normalize_string(a.text);
  // The protocol's sentence anywhere means abstention; looser variants only in an answer that cites nothing.
  if (norm.find(normalize_string(not_found_sentence)) != std::string::npos) a.not_found = true;
  for (const auto& p : abstain_phrases())
    if (a.markers.empty() && norm.find(p) != std::string::npos) a.not_found = true;
  if (a.not_found) a.uncited_claims.clear();  // the abstention and its one-line summary are not claims
  return a;
}

std::string clean_stream::feed(std::string_view raw_delta) {
  raw_ += raw_delta;
  // Forward scan: complete markers are skipped; an opener that does not parse yet but would with a few more bytes
  // (a closing sentinel) may still become a marker: hold everything from it back.
  size_t safe = raw_.size();
  for (size_t i = 0; i < raw_.size();) {
    if (open_len(raw_, i) == 0) {
      ++i;
      continue;
    }
    std::vector<int> labels;
    std::vector<std::string> quotes;
    if (size_t end = try_marker(raw_, i, labels, quotes)) {
      i = end;
      continue;
    }
    size_t d = i + open_len(raw_, i);
    skip_spaces(raw_, d);
    const bool digit = d >= raw_.size() || std::isdigit(static_cast<unsigned char>(raw_[d]));
    if (digit && raw_.size() - i < 512) {
      bool maybe = raw_.find(']', i) == std::string::npos && raw_.find(k_close_cjk, i) == std::string::npos;
      for (const char* sentinel : {"]", "\"]", "\"x\"]", "\xE2\x80\x9D]"}) {
        const std::string probe = raw_.substr(i) + sentinel;
        labels.clear();
        quotes.clear();
        maybe = maybe || try_marker(probe, 0, labels, quotes) > 0;
      }
      if (maybe) {
        safe = i;
        break;
      }
    }
    ++i;
  }
  // never cut inside a UTF-8 sequence (or inside an opener such as 【 that is still arriving)
  size_t lead = safe;
  while (lead > 0 && safe - lead < 4 && (static_cast<unsigned char>(raw_[lead - 1]) & 0xC0) == 0x80) --lead;
  if (lead > 0 && safe - lead < 4 && static_cast<unsigned char>(raw_[lead - 1]) >= 0xC0) {
    const auto b = static_cast<unsigned char>(raw_[lead - 1]);
    const size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
    if (safe - (lead - 1) < need) safe = lead - 1;
  }
  const std::string clean = clean_text(std::string_view(raw_).substr(0, safe), nullptr);
  if (clean.size() <= emitted_) return {};
  std::string out = clean.substr(emitted_);
  emitted_ = clean.size();
  return out;
}

std::string clean_stream::finish() {
  const std::string clean = clean_text(raw_, nullptr);
  if (clean.size() <= emitted_) return {};
  std::string out = clean.substr(emitted_);
  emitted_ = clean.size();
  return out;
}

}  // namespace evident::citation
