// retrieval::searcher: the one call the answer pipeline (`evident ask`, POST /v1/ask) makes: question + options ->
// packed context. It owns the retrievers for one store and the packer; the tokenizer (optional) belongs to the caller.
//
//   retrieval::searcher s(store_dir, &tokenizer);            // tokenizer may be null: estimated counts
//   retrieval::search_options o;  o.pack.context_tokens = retrieval::parse_gear("32k");
//   o.pack.system_prompt = citation::choose_template(...).system;
//   retrieval::packed_context pc = s.search("What may the FSF change?", o);
//
// What search() does:
//   1. whole-document mode when the request targets one document (filter.document_ids has exactly one id) or the
//      filtered scope holds a single document, and that document fits the gear: packer::pack_document;
//   2. otherwise retrieval with `mode` (hybrid falls back to bm25 when the store has no vectors.faiss), top `top_k`
//      chunks, then packer::pack (neighbour merging, whole-document fill, canonical order).
// An empty or unsearchable question (only punctuation) yields a context without passages, never an error.
//
// Thread-safety: one searcher per thread (it holds SQLite connections). Construction opens the store read-only and
// loads the vector index: reuse a searcher across requests on the same thread.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "retrieval/packer.h"
#include "retrieval/retriever.h"

namespace evident::engine {
class tokenizer;
}
namespace evident::ingest {
class store;
}

namespace evident::retrieval {

struct search_options {
  std::string mode = "hybrid";   // bm25 | dense | hybrid
  int top_k = 50;                // chunks retrieved before packing
  filter scope;                  // collection, documents, path prefix
  bool whole_document = true;    // allow whole-document mode (step 1 above)
  lexical_options lexical;
  dense_options dense;
  hybrid_options hybrid;
  pack_options pack;
};

class searcher {
 public:
  // Throws evident::error (not_found) when there is no store at `store_dir`.
  explicit searcher(const std::filesystem::path& store_dir, const engine::tokenizer* tok = nullptr);
  ~searcher();

  // Retrieval only (best first), with the retriever for `opt.mode`.
  std::vector<hit> retrieve(const std::string& question, const search_options& opt);
  // Retrieval + packing (see above).
  packed_context search(const std::string& question, const search_options& opt);

  bool has_vectors() const;

 private:
  retriever_i& retriever_for(const search_options& opt);
  std::unique_ptr<ingest::store> store_;
  std::unique_ptr<packer> packer_;
  std::unique_ptr<retriever_i> retriever_;
  std::string retriever_key_;  // options the cached retriever was built with
};

}  // namespace evident::retrieval
