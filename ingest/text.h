// Text utilities for ingest: encoding detection, UTF-8 validation, NFC normalisation, code-point counting.
// All functions are thread-safe (ICU normaliser and converters are per-call or immutable singletons).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace evident::ingest {

// True when the bytes look binary: a NUL byte in the first 8 KiB that is not explained by a UTF-16 BOM.
bool looks_binary(std::string_view bytes);

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_valid_utf8(std::string_view s);

// Decodes file bytes to UTF-8 with ICU: a UTF-8 BOM is stripped; UTF-16LE/BE with BOM are converted; valid UTF-8 is
// kept; anything else is read as Latin-1 (windows-1252, whose printable range is a superset). `encoding` (optional)
// receives "utf-8" | "utf-16le" | "utf-16be" | "windows-1252".
std::string decode_to_utf8(std::string_view bytes, std::string* encoding = nullptr);

// NFC normalisation of valid UTF-8 (fast path: pure ASCII is returned as is).
std::string nfc(std::string_view utf8);

// Number of code points in valid UTF-8 (counts bytes that are not continuation bytes).
int64_t count_code_points(std::string_view utf8);

// Byte offset of the code point with index `cp` in valid UTF-8 (s.size() when cp >= count).
size_t byte_offset_of(std::string_view utf8, int64_t cp);

inline bool is_space_byte(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

}  // namespace evident::ingest
