// Helpers shared by the parsers (internal to ingest/).
#pragma once

#include <string>
#include <string_view>

namespace evident::ingest {

// \r\n and lone \r -> \n; \f and \v -> \n; other C0 controls except \t dropped.
std::string clean_text(std::string_view utf8);
// Runs of whitespace -> one space; leading/trailing whitespace removed.
std::string collapse_spaces(std::string_view utf8);
// The longest prefix of at most max_bytes that ends on a code-point boundary.
std::string utf8_prefix(std::string_view utf8, size_t max_bytes);
// decode_to_utf8 + clean_text.
std::string decode_text(std::string_view bytes);

}  // namespace evident::ingest
