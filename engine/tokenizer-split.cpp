// The Qwen3 split regex by hand. Each branch below names the alternative of the pattern it implements; the
// alternatives are tried in the pattern's order, so the first that matches at a position wins, as in a backtracking
// regex engine.
#include "engine/tokenizer-split.h"

#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <array>

namespace evident::engine {

namespace {

enum char_class : uint8_t {
  k_letter,   // \p{L}
  k_number,   // \p{N}
  k_newline,  // \r or \n
  k_space,    // other White_Space
  k_other,    // [^\s\p{L}\p{N}]
};

constexpr std::array<uint8_t, 128> ascii_classes() {
  std::array<uint8_t, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      t[size_t(c)] = k_letter;
    else if (c >= '0' && c <= '9')
      t[size_t(c)] = k_number;
    else if (c == '\r' || c == '\n')
      t[size_t(c)] = k_newline;
    else if (c == ' ' || (c >= 0x09 && c <= 0x0D))
      t[size_t(c)] = k_space;
    else
      t[size_t(c)] = k_other;
  }
  return t;
}
constexpr std::array<uint8_t, 128> kAscii = ascii_classes();

struct cp_info {
  uint8_t cls;
  int32_t cp;
  uint32_t next;  // byte offset of the following code point
};

inline cp_info at(std::string_view t, uint32_t i) {
  const uint8_t b = uint8_t(t[i]);
  if (b < 0x80) return {kAscii[b], b, i + 1};
  int32_t idx = int32_t(i), c;
  U8_NEXT(reinterpret_cast<const uint8_t*>(t.data()), idx, int32_t(t.size()), c);
  uint8_t cls;
  const uint32_t mask = U_GET_GC_MASK(c < 0 ? 0xFFFD : c);
  if (mask & U_GC_L_MASK)
    cls = k_letter;
  else if (mask & U_GC_N_MASK)
    cls = k_number;
  else if (c >= 0 && u_isUWhiteSpace(c))
    cls = k_space;
  else
    cls = k_other;
  return {cls, c, uint32_t(idx)};
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d) after the apostrophe at `i`'s predecessor; returns the end or 0.
inline uint32_t contraction(std::string_view t, uint32_t i) {
  const uint32_t n = uint32_t(t.size());
  if (i >= n) return 0;
  auto lower = [&](uint32_t k) -> int32_t {
    const cp_info c = at(t, k);
    if (c.cp == 0x017F) return 's';  // LATIN SMALL LETTER LONG S case-folds to s
    return (c.cp >= 'A' && c.cp <= 'Z') ? c.cp + 32 : c.cp;
  };
  const int32_t a = lower(i);
  const uint32_t after_a = at(t, i).next;
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return after_a;
  if ((a == 'r' || a == 'v') && after_a < n && lower(after_a) == 'e') return at(t, after_a).next;
  if (a == 'l' && after_a < n && lower(after_a) == 'l') return at(t, after_a).next;
  return 0;
}

}  // namespace

void split_qwen3(std::string_view t, uint32_t from, std::vector<uint32_t>& ends, size_t max_pieces) {
  const uint32_t n = uint32_t(t.size());
  uint32_t i = from;
  size_t pieces = 0;
  auto run = [&](uint32_t k, uint8_t cls) {  // end of the run of `cls` starting at k
    while (k < n) {
      const cp_info c = at(t, k);
      if (c.cls != cls) break;
      k = c.next;
    }
    return k;
  };
  while (i < n && pieces < max_pieces) {
    const cp_info c = at(t, i);
    uint32_t end = 0;
    if (c.cp == '\'' && (end = contraction(t, c.next)) != 0) {
      // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    } else if (c.cls == k_letter) {
      end = run(c.next, k_letter);  // \p{L}+ (the optional prefix matched nothing)
    } else if ((c.cls == k_space || c.cls == k_other) && c.next < n && at(t, c.next).cls == k_letter) {
      end = run(c.next, k_letter);  // [^\r\n\p{L}\p{N}]\p{L}+
    } else if (c.cls == k_number) {
      end = c.next;  // \p{N}
    } else if (c.cp == ' ' && c.next < n && at(t, c.next).cls == k_other) {
      end = run(run(c.next, k_other), k_newline);  // ' '[^\s\p{L}\p{N}]+[\r\n]*
    } else if (c.cls == k_other) {
      end = run(run(i, k_other), k_newline);  // [^\s\p{L}\p{N}]+[\r\n]*
    } else {
      // A run of white space [i, j): \s*[\r\n]+ takes it up to its last newline; otherwise \s+(?!\S) takes all of it
      // at the end of the text or all but its last character; otherwise (one character before non-space) \s+.
      uint32_t j = i, last_newline_end = 0, last_start = i, count = 0;
      while (j < n) {
        const cp_info w = at(t, j);
        if (w.cls != k_space && w.cls != k_newline) break;
        if (w.cls == k_newline) last_newline_end = w.next;
        last_start = j;
        ++count;
        j = w.next;
      }
      if (last_newline_end != 0)
        end = last_newline_end;
      else if (j == n || count == 1)
        end = j;
      else
        end = last_start;
    }
    ends.push_back(end);
    ++pieces;
    i = end;
  }
}

}  // namespace evident::engine
