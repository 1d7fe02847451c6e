// SHA-256 (FIPS 180-4) of a byte string, as 64 lower-case hex digits. Used to detect changed files on re-ingest.
#pragma once

#include <string>
#include <string_view>

namespace evident::ingest {
std::string sha256_hex(std::string_view bytes);
}  // namespace evident::ingest
