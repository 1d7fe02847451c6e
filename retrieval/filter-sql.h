// Internal: SQL fragments for retrieval::filter, shared by the retrievers. Not part of the public interface.
#pragma once

#include <string>

#include "ingest/sqlite.h"
#include "retrieval/retriever.h"

namespace evident::retrieval::detail {

// " AND ..." conditions over `c` (chunks) and `d` (documents) for `f`, using parameters ?100.. (named ?NNN so they
// never clash with the caller's). Empty when the filter is empty. The query must join documents d when non-empty.
std::string filter_conditions(const filter& f);
// Binds the parameters filter_conditions() used.
void bind_filter(sql::stmt& s, const filter& f);
bool filter_empty(const filter& f);

}  // namespace evident::retrieval::detail
