#include "citation/citation.h"

namespace evident::citation {

const char* to_string(verdict v) {
  switch (v) {
    case verdict::supported: return "supported";
    case verdict::other_passage: return "other_passage";
    case verdict::not_found: return "not_found";
    case verdict::no_quote: return "no_quote";
    case verdict::invalid_label: return "invalid_label";
  }
  return "unknown";
}

}  // namespace evident::citation
