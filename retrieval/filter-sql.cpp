#include "retrieval/filter-sql.h"

#include <nlohmann/json.hpp>

namespace evident::retrieval::detail {

bool filter_empty(const filter& f) {
  return !f.collection_id && f.document_ids.empty() && f.path_prefix.empty();
}

std::string filter_conditions(const filter& f) {
  std::string s;
  if (f.collection_id) s += " AND d.collection_id = ?100";
  if (!f.document_ids.empty()) s += " AND c.document_id IN (SELECT value FROM json_each(?101))";
  // Byte-wise prefix comparison (LIKE would treat % and _ as wildcards and fold case).
  if (!f.path_prefix.empty())
    s += " AND substr(CAST(d.path AS BLOB), 1, length(CAST(?102 AS BLOB))) = CAST(?102 AS BLOB)";
  return s;
}

void bind_filter(sql::stmt& s, const filter& f) {
  if (f.collection_id) s.bind(100, *f.collection_id);
  if (!f.document_ids.empty()) s.bind(101, nlohmann::json(f.document_ids).dump());
  if (!f.path_prefix.empty()) s.bind(102, f.path_prefix);
}

}  // namespace evident::retrieval::detail
