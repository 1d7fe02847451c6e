#include "ingest/text.h"

#include <unicode/normalizer2.h>
#include <unicode/ucnv.h>
#include <unicode/unistr.h>

#include <cstring>

#include "engine/base/error.h"

namespace evident::ingest {

bool looks_binary(std::string_view bytes) {
  if (bytes.size() >= 2 && ((bytes[0] == '\xFF' && bytes[1] == '\xFE') || (bytes[0] == '\xFE' && bytes[1] == '\xFF')))
    return false;  // UTF-16 with BOM: NULs are expected
  std::string_view head = bytes.substr(0, 8192);
  return std::memchr(head.data(), 0, head.size()) != nullptr;
}

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    // ASCII fast path, 8 bytes at a time.
    while (end - p >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      if (w & 0x8080808080808080ull) break;
      p += 8;
    }
    if (p >= end) break;
    unsigned c = *p;
    if (c < 0x80) { ++p; continue; }
    int n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; }
    else return false;
    if (end - p <= n) return false;
    for (int i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    p += n + 1;
  }
  return true;
}

namespace {
std::string convert(std::string_view bytes, const char* from) {
  UErrorCode st = U_ZERO_ERROR;
  std::string out(bytes.size() * 3 + 16, '\0');
  int32_t n = ucnv_convert("UTF-8", from, out.data(), static_cast<int32_t>(out.size()), bytes.data(),
                           static_cast<int32_t>(bytes.size()), &st);
  if (st == U_BUFFER_OVERFLOW_ERROR) {
    out.resize(static_cast<size_t>(n) + 1);
    st = U_ZERO_ERROR;
    n = ucnv_convert("UTF-8", from, out.data(), static_cast<int32_t>(out.size()), bytes.data(),
                     static_cast<int32_t>(bytes.size()), &st);
  }
  EV_THROW_IF_NOT_KIND(U_SUCCESS(st), corrupt, "cannot convert text from ", from, ": ", u_errorName(st));
  out.resize(static_cast<size_t>(n));
  return out;
}
}  // namespace

std::string decode_to_utf8(std::string_view bytes, std::string* encoding) {
  auto set = [&](const char* e) { if (encoding) *encoding = e; };
  if (bytes.size() >= 3 && bytes.substr(0, 3) == "\xEF\xBB\xBF") bytes.remove_prefix(3);
  if (bytes.size() >= 2 && bytes[0] == '\xFF' && bytes[1] == '\xFE') {
    set("utf-16le");
    return convert(bytes.substr(2), "UTF-16LE");
  }
  if (bytes.size() >= 2 && bytes[0] == '\xFE' && bytes[1] == '\xFF') {
    set("utf-16be");
    return convert(bytes.substr(2), "UTF-16BE");
  }
  if (is_valid_utf8(bytes)) {
    set("utf-8");
    return std::string(bytes);
  }
  set("windows-1252");
  return convert(bytes, "windows-1252");
}

std::string nfc(std::string_view utf8) {
  bool ascii = true;
  for (char c : utf8)
    if (static_cast<unsigned char>(c) >= 0x80) { ascii = false; break; }
  if (ascii) return std::string(utf8);
  UErrorCode st = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(st);
  EV_THROW_IF_NOT_KIND(U_SUCCESS(st), internal, "ICU NFC normaliser unavailable: ", u_errorName(st));
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(utf8.data(), static_cast<int32_t>(utf8.size())));
  if (n->quickCheck(u, st) == UNORM_YES && U_SUCCESS(st)) return std::string(utf8);
  st = U_ZERO_ERROR;
  icu::UnicodeString r = n->normalize(u, st);
  EV_THROW_IF_NOT_KIND(U_SUCCESS(st), internal, "NFC normalisation failed: ", u_errorName(st));
  std::string out;
  r.toUTF8String(out);
  return out;
}

int64_t count_code_points(std::string_view utf8) {
  int64_t n = 0;
  for (char c : utf8) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

size_t byte_offset_of(std::string_view utf8, int64_t cp) {
  int64_t seen = -1;
  for (size_t i = 0; i < utf8.size(); ++i) {
    if ((static_cast<unsigned char>(utf8[i]) & 0xC0) != 0x80 && ++seen == cp) return i;
  }
  return utf8.size();
}

}  // namespace evident::ingest
