#include "ingest/chunker.h"

#include <unicode/brkiter.h>
#include <unicode/utext.h>

#include <algorithm>
#include <memory>

#include "engine/base/error.h"
#include "ingest/text.h"

namespace evident::ingest {
namespace {

using span = std::pair<size_t, size_t>;

// One sentence iterator per thread: creating one loads ICU rule data and costs ~100 us.
icu::BreakIterator& sentence_iterator() {
  thread_local std::unique_ptr<icu::BreakIterator> it;
  if (!it) {
    UErrorCode st = U_ZERO_ERROR;
    it.reset(icu::BreakIterator::createSentenceInstance(icu::Locale::getRoot(), st));
    EV_THROW_IF_NOT_KIND(U_SUCCESS(st) && it, internal, "ICU sentence break iterator unavailable: ", u_errorName(st));
  }
  return *it;
}

void sentences(const std::string& text, std::vector<span>& out) {
  UErrorCode st = U_ZERO_ERROR;
  UText* ut = utext_openUTF8(nullptr, text.data(), static_cast<int64_t>(text.size()), &st);
  EV_THROW_IF_NOT_KIND(U_SUCCESS(st), internal, "utext_openUTF8 failed: ", u_errorName(st));
  icu::BreakIterator& it = sentence_iterator();
  it.setText(ut, st);
  if (U_FAILURE(st)) {
    utext_close(ut);
    EV_THROW(internal, "BreakIterator::setText failed: ", u_errorName(st));
  }
  int32_t prev = it.first();
  for (int32_t b = it.next(); b != icu::BreakIterator::DONE; b = it.next()) {  // native indexes = UTF-8 bytes
    out.push_back({static_cast<size_t>(prev), static_cast<size_t>(b)});
    prev = b;
  }
  utext_close(ut);
}

void lines(const std::string& text, std::vector<span>& out) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    size_t end = nl == std::string::npos ? text.size() : nl + 1;
    out.push_back({pos, end});
    pos = end;
  }
}

bool blank(std::string_view l) {
  return std::all_of(l.begin(), l.end(), [](char c) { return is_space_byte(c); });
}

// Top-level blocks of source code: a block ends at a blank line that is followed by a line starting in column 0
// (so blank lines inside an indented function body do not split it).
void blocks(const std::string& text, std::vector<span>& out) {
  std::vector<span> ls;
  lines(text, ls);
  size_t start = 0;
  for (size_t i = 0; i + 1 < ls.size(); ++i) {
    std::string_view cur(text.data() + ls[i].first, ls[i].second - ls[i].first);
    std::string_view next(text.data() + ls[i + 1].first, ls[i + 1].second - ls[i + 1].first);
    if (blank(cur) && !blank(next) && !is_space_byte(next[0]) && next[0] != '}' && next[0] != ')') {
      out.push_back({start, ls[i + 1].first});
      start = ls[i + 1].first;
    }
  }
  if (start < text.size()) out.push_back({start, text.size()});
}

struct unit {
  size_t b0, b1;  // trimmed byte span
  int64_t c0 = 0, c1 = 0;
  int tokens = 0;
};

// Splits [b0, b1) into pieces of at most max_tokens (by the counter): at line ends, then spaces, then code points.
void split_long(const std::string& text, size_t b0, size_t b1, int max_tokens, const token_counter& tc, int level,
                std::vector<unit>& out) {
  while (b0 < b1 && is_space_byte(text[b0])) ++b0;
  while (b1 > b0 && is_space_byte(text[b1 - 1])) --b1;
  if (b0 == b1) return;
  std::string_view s(text.data() + b0, b1 - b0);
  int t = tc.count(s);
  if (t <= max_tokens || b1 - b0 <= 4) {
    out.push_back({b0, b1, 0, 0, t});
    return;
  }
  // Candidate cut points (byte offsets in text, exclusive ends of pieces).
  std::vector<size_t> cuts;
  if (level <= 1) {
    char sep = level == 0 ? '\n' : ' ';
    for (size_t i = b0; i < b1; ++i)
      if (text[i] == sep) cuts.push_back(i + 1);
  }
  if (level >= 2 || cuts.empty()) {
    if (level < 2) {
      split_long(text, b0, b1, max_tokens, tc, level + 1, out);
      return;
    }
    // Fixed-size pieces on code-point boundaries, sized by the average bytes per token of this span.
    size_t step = std::max<size_t>(4, (b1 - b0) * static_cast<size_t>(max_tokens) / static_cast<size_t>(t + 1));
    for (size_t p = b0; p < b1;) {
      size_t e = std::min(b1, p + step);
      while (e < b1 && (static_cast<unsigned char>(text[e]) & 0xC0) == 0x80) ++e;
      out.push_back({p, e, 0, 0, tc.count(std::string_view(text.data() + p, e - p))});
      p = e;
    }
    return;
  }
  if (cuts.back() != b1) cuts.push_back(b1);
  size_t p = b0;
  size_t piece_start = b0;
  int acc = 0;
  for (size_t c : cuts) {
    int pt = tc.count(std::string_view(text.data() + p, c - p));
    if (acc > 0 && acc + pt > max_tokens) {
      split_long(text, piece_start, p, max_tokens, tc, level + 1, out);
      piece_start = p;
      acc = 0;
    }
    acc += pt;
    p = c;
  }
  if (piece_start < b1) split_long(text, piece_start, b1, max_tokens, tc, level + 1, out);
}

}  // namespace

std::vector<span> split_units(const std::string& text, unit_kind kind) {
  std::vector<span> out;
  if (text.empty()) return out;
  switch (kind) {
    case unit_kind::sentences: sentences(text, out); break;
    case unit_kind::lines: lines(text, out); break;
    case unit_kind::blocks: blocks(text, out); break;
  }
  return out;
}

std::vector<chunk> chunk_document(const document& doc, const token_counter& tc, const chunk_options& opt) {
  EV_THROW_IF_NOT_MSG(opt.chunk_tokens >= 8, "chunk size must be at least 8 tokens, got ", opt.chunk_tokens);
  EV_THROW_IF_NOT_MSG(opt.overlap >= 0 && opt.overlap <= opt.chunk_tokens / 2, "chunk overlap must be in [0, ",
                      opt.chunk_tokens / 2, "] for ", opt.chunk_tokens, "-token chunks, got ", opt.overlap);
  const std::string& text = doc.text;

  // 1. Units, trimmed, long ones split.
  std::vector<unit> units;
  for (auto [b0, b1] : split_units(text, doc.units)) {
    while (b0 < b1 && is_space_byte(text[b0])) ++b0;
    while (b1 > b0 && is_space_byte(text[b1 - 1])) --b1;
    if (b0 == b1) continue;
    split_long(text, b0, b1, opt.chunk_tokens, tc, 0, units);
  }
  if (units.empty()) return {};
  // Code-point offsets: units are ordered and disjoint, so one forward scan suffices.
  {
    size_t pos = 0;
    int64_t cp = 0;
    auto advance = [&](size_t to) {
      for (; pos < to; ++pos) cp += (static_cast<unsigned char>(text[pos]) & 0xC0) != 0x80;
      return cp;
    };
    for (auto& u : units) {
      u.c0 = advance(u.b0);
      u.c1 = advance(u.b1);
    }
  }

  // Headings that start a unit (their char_start falls in the gap before the unit's first code point).
  const auto& hs = doc.headings;
  std::vector<char> heading_at(units.size(), 0);
  {
    size_t h = 0;
    for (size_t i = 0; i < units.size(); ++i) {
      while (h < hs.size() && hs[h].char_start <= units[i].c0) {
        if (i > 0 && hs[h].char_start >= units[i - 1].c1) heading_at[i] = 1;
        ++h;
      }
    }
  }

  auto heading_path = [&](int64_t pos) {
    std::vector<const heading*> stack;
    for (const auto& h : hs) {
      if (h.char_start > pos) break;
      while (!stack.empty() && stack.back()->level >= h.level) stack.pop_back();
      stack.push_back(&h);
    }
    std::string p;
    for (const auto* h : stack) p += (p.empty() ? "" : " > ") + h->title;
    return p;
  };

  // 2. Greedy packing with overlap.
  std::vector<chunk> out;
  const size_t n = units.size();
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    int tokens = 0;
    while (j < n) {
      if (j > i && tokens + units[j].tokens > opt.chunk_tokens) break;
      if (j > i && heading_at[j] && tokens >= opt.chunk_tokens / 4) break;
      tokens += units[j].tokens;
      ++j;
    }
    chunk c;
    c.ordinal = static_cast<int>(out.size());
    c.byte_start = static_cast<int64_t>(units[i].b0);
    c.byte_end = static_cast<int64_t>(units[j - 1].b1);
    c.char_start = units[i].c0;
    c.char_end = units[j - 1].c1;
    c.page = store::page_of(doc.page_starts, c.char_start);
    c.heading_path = heading_path(c.char_start);
    c.token_count = tokens;
    c.text = text.substr(units[i].b0, units[j - 1].b1 - units[i].b0);
    out.push_back(std::move(c));
    if (j >= n) break;
    if (heading_at[j] || opt.overlap == 0) {
      i = j;
      continue;
    }
    // Next start: the earliest k in (i, j] whose units k..j-1 fit in the overlap.
    size_t k = j;
    int ov = 0;
    while (k > i + 1 && ov + units[k - 1].tokens <= opt.overlap) {
      ov += units[k - 1].tokens;
      --k;
    }
    i = k;
  }
  return out;
}

}  // namespace evident::ingest
