#include "retrieval/search.h"

#include "engine/base/error.h"
#include "ingest/store.h"
#include "retrieval/filter-sql.h"

namespace evident::retrieval {

searcher::searcher(const std::filesystem::path& store_dir, const engine::tokenizer* tok)
    : store_(std::make_unique<ingest::store>(store_dir, ingest::open_mode::read_only)),
      packer_(std::make_unique<packer>(*store_, tok)) {}

searcher::~searcher() = default;

bool searcher::has_vectors() const {
  return std::filesystem::exists(store_->vectors_path());
}

retriever_i& searcher::retriever_for(const search_options& opt) {
  EV_THROW_IF_NOT_MSG(opt.mode == "bm25" || opt.mode == "dense" || opt.mode == "hybrid", "retrieval mode '", opt.mode,
                      "': expected bm25, dense or hybrid");
  std::string mode = opt.mode;
  if (mode == "hybrid" && !has_vectors()) mode = "bm25";
  // Rebuild the retriever only when its options change (the dense side loads the whole vector index).
  std::string key = evident::detail::concat(
      mode, '|', opt.lexical.k1, '|', opt.lexical.b, '|', opt.lexical.query.remove_stopwords, '|',
      opt.lexical.query.max_terms, '|', opt.lexical.prune_above_chunks, '|', opt.lexical.max_postings, '|',
      opt.lexical.direct_scoring, '|', opt.dense.ivf_nprobe, '|', opt.dense.hnsw_ef_search, '|', opt.hybrid.fusion, '|',
      opt.hybrid.rrf_k, '|', opt.hybrid.lexical_weight, '|', opt.hybrid.dense_weight, '|', opt.hybrid.candidates, '|',
      opt.hybrid.mmr_lambda, '|', opt.hybrid.per_document_cap);
  if (!retriever_ || key != retriever_key_) {
    retriever_.reset();
    const std::filesystem::path& dir = store_->dir();
    if (mode == "bm25")
      retriever_ = make_lexical(dir, opt.lexical);
    else if (mode == "dense")
      retriever_ = make_dense(dir, opt.dense);
    else
      retriever_ = make_hybrid(make_lexical(dir, opt.lexical), make_dense(dir, opt.dense), dir, opt.hybrid);
    retriever_key_ = key;
  }
  return *retriever_;
}

std::vector<hit> searcher::retrieve(const std::string& question, const search_options& opt) {
  return retriever_for(opt).search(question, opt.top_k, opt.scope);
}

packed_context searcher::search(const std::string& question, const search_options& opt) {
  if (opt.whole_document) {
    // The documents in scope, at most two (we only need to know whether there is exactly one).
    std::vector<int64_t> in_scope;
    if (opt.scope.document_ids.size() == 1) {
      in_scope = opt.scope.document_ids;
    } else {
      std::string q = "SELECT d.id FROM documents d JOIN chunks c ON c.document_id = d.id WHERE 1";
      q += detail::filter_conditions(opt.scope);
      q += " GROUP BY d.id LIMIT 2";
      auto s = store_->db().prepare(q);
      detail::bind_filter(s, opt.scope);
      while (s.step()) in_scope.push_back(s.col_int(0));
    }
    if (in_scope.size() == 1 && store_->document(in_scope[0])) {
      auto pc = packer_->pack_document(in_scope[0], question, opt.pack);
      if (pc.whole_document) return pc;
    }
  }
  return packer_->pack(retrieve(question, opt), question, opt.pack);
}

}  // namespace evident::retrieval
