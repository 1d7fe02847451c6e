// Lexical retriever: FTS5 + evident_bm25 over chunks_fts.
#include <algorithm>
#include <memory>

#include "engine/base/error.h"
#include "ingest/store.h"
#include "retrieval/filter-sql.h"
#include "retrieval/fts-bm25.h"
#include "retrieval/query.h"
#include "retrieval/retriever.h"

namespace evident::retrieval {

namespace {

class lexical_retriever final : public retriever_i {
 public:
  lexical_retriever(const std::filesystem::path& dir, const lexical_options& opt)
      : store_(dir, ingest::open_mode::read_only), opt_(opt) {
    EV_THROW_IF_NOT_MSG(opt.k1 >= 0 && opt.b >= 0 && opt.b <= 1, "bm25 parameters: expected k1 >= 0 and b in [0, 1], got k1=",
                        opt.k1, " b=", opt.b);
    register_bm25(store_.db().handle());
  }

  std::string name() const override { return "bm25"; }

  std::vector<hit> search(const std::string& query, int k, const filter& f) override {
    std::vector<hit> out;
    if (k <= 0) return out;
    const std::string expr = fts5_expression(query_terms(query, opt_.query));
    if (expr.empty()) return out;
    const bool filtered = !detail::filter_empty(f);
    std::string q =
        "SELECT c.id, c.document_id, c.ordinal, evident_bm25(chunks_fts, ?2, ?3) AS s "
        "FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid ";
    if (filtered) q += "JOIN documents d ON d.id = c.document_id ";
    q += "WHERE chunks_fts MATCH ?1";
    q += detail::filter_conditions(f);
    q += " ORDER BY s DESC, c.id ASC LIMIT ?4";
    auto s = store_.db().prepare(q);
    s.bind(1, expr).bind(2, opt_.k1).bind(3, opt_.b).bind(4, k);
    detail::bind_filter(s, f);
    while (s.step()) out.push_back({s.col_int(0), s.col_double(3), s.col_int(1), static_cast<int>(s.col_int(2))});
    return out;
  }

 private:
  ingest::store store_;
  lexical_options opt_;
};

}  // namespace

std::unique_ptr<retriever_i> make_lexical(const std::filesystem::path& store_dir, const lexical_options& opt) {
  return std::make_unique<lexical_retriever>(store_dir, opt);
}

std::vector<hit> cap_per_document(std::vector<hit> hits, int cap) {
  if (cap <= 0) return hits;
  std::vector<hit> out;
  std::vector<std::pair<int64_t, int>> seen;  // small: linear scan is fine for top-k lists
  for (auto& h : hits) {
    auto it = std::find_if(seen.begin(), seen.end(), [&](auto& p) { return p.first == h.document_id; });
    if (it == seen.end()) seen.push_back({h.document_id, 0}), it = seen.end() - 1;
    if (it->second++ < cap) out.push_back(h);
  }
  return out;
}

}  // namespace evident::retrieval
