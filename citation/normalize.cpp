#include "citation/normalize.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include "engine/base/error.h"

namespace evident::citation {

namespace {

// Decodes one code point at `i`; invalid or truncated sequences give U+FFFD and advance one byte.
char32_t decode(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return s[i++];
  int n = b0 >= 0xF0 && b0 < 0xF5 ? 3 : b0 >= 0xE0 ? 2 : b0 >= 0xC2 && b0 < 0xE0 ? 1 : -1;
  if (n < 0 || i + static_cast<size_t>(n) >= s.size()) {
    ++i;
    return 0xFFFD;
  }
  char32_t c = b0 & (0x3F >> n);
  for (int k = 1; k <= n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) {
      ++i;
      return 0xFFFD;
    }
    c = (c << 6) | (b & 0x3F);
  }
  i += n + 1;
  return c;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

const icu::Normalizer2& nfkc_cf() {
  static const icu::Normalizer2* n = [] {
    UErrorCode st = U_ZERO_ERROR;
    const icu::Normalizer2* p = icu::Normalizer2::getNFKCCasefoldInstance(st);
    EV_THROW_IF_NOT_KIND(U_SUCCESS(st) && p != nullptr, internal, "ICU NFKC_Casefold normaliser unavailable: ",
                         u_errorName(st));
    return p;
  }();
  return *n;
}

bool is_apostrophe(char32_t c) {
  return c == U'\'' || c == 0x2019 || c == 0x2018 || c == 0x02BC || c == 0x2032 || c == U'`' || c == 0x00B4;
}

bool is_separator(char32_t c) {
  if (u_isUWhiteSpace(static_cast<UChar32>(c))) return true;
  const auto gc = u_charType(static_cast<UChar32>(c));
  switch (gc) {
    case U_DASH_PUNCTUATION: case U_START_PUNCTUATION: case U_END_PUNCTUATION: case U_CONNECTOR_PUNCTUATION:
    case U_OTHER_PUNCTUATION: case U_INITIAL_PUNCTUATION: case U_FINAL_PUNCTUATION: case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::pair<int64_t, int64_t> normalized_text::span_of(size_t i, size_t j) const {
  if (j <= i || i >= text.size()) return {0, 0};
  j = std::min(j, text.size());
  return {src_start[i], src_end[j - 1]};
}

std::u32string to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(decode(s, i));
  return out;
}

std::string to_utf8(std::u32string_view cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) append_utf8(out, c);
  return out;
}

int64_t count_code_points(std::string_view s) {
  int64_t n = 0;
  for (size_t i = 0; i < s.size();) {
    decode(s, i);
    ++n;
  }
  return n;
}

size_t byte_offset_of(std::string_view s, int64_t cp) {
  size_t i = 0;
  for (int64_t k = 0; k < cp && i < s.size(); ++k) decode(s, i);
  return i;
}

std::string substr_cp(std::string_view s, int64_t cp_start, int64_t cp_end) {
  const size_t b = byte_offset_of(s, cp_start);
  const size_t e = b + byte_offset_of(s.substr(b), std::max<int64_t>(0, cp_end - cp_start));
  return std::string(s.substr(b, e - b));
}

normalized_text normalize(std::string_view utf8) {
  const std::u32string src = to_u32(utf8);
  const icu::Normalizer2& norm = nfkc_cf();
  normalized_text out;
  out.text.reserve(src.size());
  out.src_start.reserve(src.size());
  out.src_end.reserve(src.size());
  bool pending_space = false;
  auto emit = [&](char32_t c, int64_t s, int64_t e) {
    if (is_apostrophe(c)) return;
    if (is_separator(c)) {
      pending_space = !out.text.empty();
      return;
    }
    if (pending_space) {
      // the space spans the gap between the previous kept character and this one
      out.text.push_back(U' ');
      out.src_start.push_back(out.src_end.back());
      out.src_end.push_back(s);
      pending_space = false;
    }
    out.text.push_back(c);
    out.src_start.push_back(s);
    out.src_end.push_back(e);
  };
  // Segments: a code point with a normalisation boundary before it starts a new segment; each segment is
  // normalised on its own, so every output code point maps to its segment's source range.
  size_t i = 0;
  icu::UnicodeString seg, res;
  while (i < src.size()) {
    size_t j = i + 1;
    while (j < src.size() && !norm.hasBoundaryBefore(static_cast<UChar32>(src[j]))) ++j;
    const bool ascii_simple = j == i + 1 && src[i] < 0x80;
    if (ascii_simple) {
      char32_t c = src[i];
      if (c >= U'A' && c <= U'Z') c = c - U'A' + U'a';
      emit(c, static_cast<int64_t>(i), static_cast<int64_t>(j));
    } else {
      seg.remove();
      for (size_t k = i; k < j; ++k) seg.append(static_cast<UChar32>(src[k]));
      UErrorCode st = U_ZERO_ERROR;
      res = norm.normalize(seg, st);
      if (U_FAILURE(st)) res = seg;
      for (int32_t k = 0; k < res.length();) {
        const UChar32 c = res.char32At(k);
        emit(static_cast<char32_t>(c), static_cast<int64_t>(i), static_cast<int64_t>(j));
        k += U16_LENGTH(c);
      }
    }
    i = j;
  }
  return out;
}

std::string normalize_string(std::string_view utf8) { return to_utf8(normalize(utf8).text); }

}  // namespace evident::citation

namespace evident::citation {

namespace {
bool is_space32(char32_t c) { return c == U' ' || c == U'\t' || c == U'\n' || c == U'\r' || c == 0xA0 || c == 0x3000; }
}  // namespace

std::vector<std::pair<int64_t, int64_t>> split_sentences(std::u32string_view t) {
  std::vector<std::pair<int64_t, int64_t>> out;
  const int64_t n = static_cast<int64_t>(t.size());
  auto push = [&](int64_t s, int64_t e) {
    while (s < e && is_space32(t[s])) ++s;
    while (e > s && is_space32(t[e - 1])) --e;
    if (e > s) out.emplace_back(s, e);
  };
  int64_t start = 0;
  for (int64_t i = 0; i < n; ++i) {
    const char32_t c = t[i];
    if (c == U'\n') {
      // blank line: paragraph break
      int64_t j = i + 1;
      while (j < n && (t[j] == U' ' || t[j] == U'\t' || t[j] == U'\r')) ++j;
      if (j < n && t[j] == U'\n') {
        push(start, i);
        start = j;
        i = j;
      }
      continue;
    }
    if (c == 0x3002) {  // 。
      push(start, i + 1);
      start = i + 1;
      continue;
    }
    if (c != U'.' && c != U'!' && c != U'?') continue;
    int64_t j = i + 1;
    while (j < n && (t[j] == U'"' || t[j] == U')' || t[j] == 0x201D || t[j] == U'\'' || t[j] == 0x2019)) ++j;
    if (j >= n) continue;
    if (!is_space32(t[j])) continue;
    int64_t k = j;
    while (k < n && is_space32(t[k])) ++k;
    if (k >= n) continue;
    const char32_t d = t[k];
    const bool next_starts = u_isupper(static_cast<UChar32>(d)) || u_isdigit(static_cast<UChar32>(d)) || d == U'"' ||
                             d == U'(' || d == U'[' || d == 0x201C || d == U'\'' || d == 0x2018 ||
                             u_charType(static_cast<UChar32>(d)) == U_OTHER_LETTER;
    if (!next_starts) continue;
    push(start, j);
    start = j;
  }
  push(start, n);
  return out;
}

bool is_stop_word(std::string_view w) {
  static const char* const stop[] = {
      "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could", "did", "do", "does", "for",
      "from", "had", "has", "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "may",
      "me", "my", "no", "not", "of", "on", "or", "our", "she", "should", "so", "such", "than", "that", "the", "their",
      "them", "then", "there", "these", "they", "this", "those", "to", "was", "we", "were", "what", "when", "where",
      "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "about", "any", "all", "also",
      "must", "shall", "there", "under", "other", "some", "each", "more", "most", "only", "own", "same", "very"};
  for (const char* s : stop)
    if (w == s) return true;
  return false;
}

std::vector<std::string> content_words(std::string_view utf8) {
  const std::string norm = normalize_string(utf8);
  std::vector<std::string> out;
  size_t i = 0;
  while (i < norm.size()) {
    size_t j = norm.find(' ', i);
    if (j == std::string::npos) j = norm.size();
    std::string_view w(norm.data() + i, j - i);
    const bool one_char = count_code_points(w) < 2 && !(w.size() == 1 && w[0] >= '0' && w[0] <= '9');
    if (!w.empty() && !one_char && !is_stop_word(w)) out.emplace_back(w);
    i = j + 1;
  }
  return out;
}

}  // namespace evident::citation
