// The packer: selection of passages under a token budget, canonical ordering, rendering, prefix boundaries.
#include "retrieval/packer.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "engine/base/error.h"
#include "engine/tokenizer.h"
#include "ingest/store.h"
#include "ingest/text.h"

namespace evident::retrieval {

int parse_gear(std::string_view text) {
  std::string t;
  for (char c : text) t += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (t == "8k") return gear_8k;
  if (t == "32k") return gear_32k;
  if (t == "64k") return gear_64k;
  if (t == "128k") return gear_128k;
  EV_THROW(invalid_input, "context gear '", std::string(text), "': expected 8k, 32k, 64k or 128k");
}

namespace {

// A document with its chunks, loaded once per pack() call.
struct doc_info {
  ingest::document_row row;            // with text
  std::vector<ingest::chunk_row> chunks;  // all chunks, by ordinal (index == ordinal when the store is consistent)
  int rank = 0;                        // order of first appearance among the hits (0 = best)
  double best = 0;                     // best hit score in this document
};

// A run of consecutive chunks [first, last] (indexes into doc_info::chunks) forming one passage.
struct span {
  int first = 0, last = 0;
  double score = 0;
  bool whole = false;  // part of a whole-document partition: text ends where the next span starts
};

// Built with += only: GCC 12 reports a false -Wrestrict on `"literal" + std::string` at -O3 (GCC bug 105651).
std::string page_label(int a, int b) {
  std::string s = a == b ? "p. " : "pp. ";
  s += std::to_string(a);
  if (a != b) {
    s += '-';
    s += std::to_string(b);
  }
  return s;
}

std::string default_user(std::string_view context, std::string_view question) {
  std::string u(context);
  u += "Question: ";
  u += question;
  return u;
}

class pack_state {
 public:
  pack_state(ingest::store& s, const packer& p, const pack_options& opt) : store_(s), packer_(p), opt_(opt) {}

  doc_info* doc(int64_t id) {
    auto it = docs_.find(id);
    if (it != docs_.end()) return it->second.get();
    auto row = store_.document(id, true);
    if (!row) return nullptr;
    auto d = std::make_unique<doc_info>();
    d->row = std::move(*row);
    d->chunks = store_.chunks_of(id);
    d->rank = static_cast<int>(docs_.size());
    auto* raw = d.get();
    docs_.emplace(id, std::move(d));
    return raw;
  }

  // Byte range of a span in the document text.
  std::pair<size_t, size_t> bytes_of(const doc_info& d, const std::vector<span>& spans, size_t i) const {
    const auto& s = spans[i];
    size_t b0 = static_cast<size_t>(d.chunks[s.first].byte_start);
    size_t b1 = static_cast<size_t>(d.chunks[s.last].byte_end);
    if (s.whole) {
      b0 = s.first == 0 ? 0 : b0;
      b1 = static_cast<size_t>(s.last + 1 < static_cast<int>(d.chunks.size()) ? d.chunks[s.last + 1].byte_start
                                                                             : static_cast<int64_t>(d.row.text.size()));
    }
    b0 = std::min(b0, d.row.text.size());
    b1 = std::clamp(b1, b0, d.row.text.size());
    return {b0, b1};
  }

  std::string header(const doc_info& d) const {
    std::string h = "Document: ";
    h += d.row.title.empty() ? d.row.path : d.row.title;
    if (!d.row.path.empty() && d.row.path != d.row.title) {
      h += " (";
      h += d.row.path;
      h += ')';
    }
    h += "\n";
    return h;
  }

  passage make_passage(const doc_info& d, const std::vector<span>& spans, size_t i, int label) const {
    const auto& s = spans[i];
    auto [b0, b1] = bytes_of(d, spans, i);
    passage p;
    p.label = label;
    p.document_id = d.row.id;
    p.document_title = d.row.title;
    p.document_path = d.row.path;
    for (int c = s.first; c <= s.last; ++c) p.chunk_ids.push_back(d.chunks[c].id);
    p.text = d.row.text.substr(b0, b1 - b0);
    // Code-point offsets: from the first chunk's char_start plus the code points of the text.
    p.char_start = (s.whole && s.first == 0) ? 0 : d.chunks[s.first].char_start;
    p.char_end = p.char_start + ingest::count_code_points(p.text);
    p.page_start = d.chunks[s.first].page;
    p.page_end = std::max(p.page_start, ingest::store::page_of(d.row.page_starts, std::max<int64_t>(p.char_end - 1, 0)));
    p.heading_path = d.chunks[s.first].heading_path;
    p.score = s.score;
    return p;
  }

  static std::string label_line(const passage& p) {
    std::string l = "[";
    l += std::to_string(p.label);
    l += "] (";
    l += page_label(p.page_start, p.page_end);
    if (!p.heading_path.empty()) {
      l += "; ";
      l += p.heading_path;
    }
    l += ")\n";
    return l;
  }
  static std::string render_passage(const passage& p) {
    std::string r = label_line(p);
    r += p.text;
    r += "\n\n";
    return r;
  }

  // Token cost of one document block with these spans (labels rendered as 3 digits: a slight overcount).
  int block_cost(const doc_info& d, const std::vector<span>& spans) {
    if (spans.empty()) return 0;
    int total = cached_count(header(d));
    for (size_t i = 0; i < spans.size(); ++i) {
      auto key = std::make_tuple(d.row.id, spans[i].first, spans[i].last, spans[i].whole);
      auto it = passage_cost_.find(key);
      if (it == passage_cost_.end()) {
        passage p = make_passage(d, spans, i, 100);
        it = passage_cost_.emplace(key, packer_.count_tokens(render_passage(p))).first;
      }
      total += it->second;
    }
    return total;
  }

  int cached_count(const std::string& text) {
    auto it = text_cost_.find(text);
    if (it != text_cost_.end()) return it->second;
    return text_cost_.emplace(text, packer_.count_tokens(text)).first->second;
  }

  // Partition of the whole document into consecutive passages of about whole_passage_tokens.
  std::vector<span> whole_spans(const doc_info& d, double score) const {
    std::vector<span> out;
    int acc = 0;
    for (int c = 0; c < static_cast<int>(d.chunks.size()); ++c) {
      if (out.empty() || acc >= opt_.whole_passage_tokens) {
        out.push_back({c, c, score, true});
        acc = 0;
      }
      out.back().last = c;
      acc += std::max(1, d.chunks[c].token_count);
    }
    return out;
  }

  // Renders the selection in canonical order and fills `pc`.
  void render(std::map<int64_t, std::vector<span>>& sel, packed_context& pc) {
    pc.context.clear();
    pc.passages.clear();
    pc.prefix_boundaries.assign(1, pc.system_prompt.size());
    int label = 1;
    for (auto& [id, spans] : sel) {  // std::map: document id ascending
      if (spans.empty()) continue;
      std::sort(spans.begin(), spans.end(), [](const span& a, const span& b) { return a.first < b.first; });
      const doc_info& d = *docs_.at(id);
      pc.context += header(d);
      for (size_t i = 0; i < spans.size(); ++i) {
        passage p = make_passage(d, spans, i, label++);
        const std::string r = render_passage(p);
        p.tokens = packer_.count_tokens(r);
        pc.context += r;
        pc.passages.push_back(std::move(p));
      }
      pc.prefix_boundaries.push_back(pc.system_prompt.size() + pc.context.size());
    }
  }

  int total_tokens(const packed_context& pc) const {
    const auto& ru = opt_.render_user ? opt_.render_user : default_user;
    return packer_.count_tokens(pc.system_prompt) + packer_.count_tokens(ru(pc.context, pc.question)) +
           opt_.chat_overhead_tokens;
  }

  // Renders, then drops lowest-scored passages while the exact total exceeds the budget.
  void finish(std::map<int64_t, std::vector<span>>& sel, packed_context& pc) {
    for (;;) {
      render(sel, pc);
      pc.total_tokens = total_tokens(pc);
      if (pc.total_tokens <= pc.budget_tokens || pc.passages.empty()) break;
      // Drop the lowest-scored span (latest document on ties).
      int64_t worst_doc = 0;
      size_t worst_i = 0;
      double worst = 1e300;
      for (auto& [id, spans] : sel)
        for (size_t i = 0; i < spans.size(); ++i)
          if (spans[i].score <= worst) worst = spans[i].score, worst_doc = id, worst_i = i;
      auto& v = sel[worst_doc];
      v.erase(v.begin() + static_cast<std::ptrdiff_t>(worst_i));
      pc.whole_document = false;
    }
    EV_ASSERT(pc.passages.empty() || pc.total_tokens <= pc.budget_tokens);
  }

  ingest::store& store_;
  const packer& packer_;
  const pack_options& opt_;
  std::map<int64_t, std::unique_ptr<doc_info>> docs_;
  std::map<std::tuple<int64_t, int, int, bool>, int> passage_cost_;
  std::map<std::string, int> text_cost_;
};

int reserve_of(const pack_options& opt) {
  return opt.answer_reserve >= 0 ? opt.answer_reserve : std::min(4096, opt.context_tokens / 4);
}

packed_context start(const pack_options& opt, const std::string& question, const packer& pk) {
  EV_THROW_IF_NOT_MSG(opt.context_tokens > 0, "context_tokens must be positive, got ", opt.context_tokens);
  packed_context pc;
  pc.system_prompt = opt.system_prompt;
  pc.question = question;
  pc.budget_tokens = opt.context_tokens - reserve_of(opt);
  pc.exact_token_count = pk.exact();
  const auto& ru = opt.render_user ? opt.render_user : default_user;
  const int fixed = pk.count_tokens(pc.system_prompt) + pk.count_tokens(ru("", question)) + opt.chat_overhead_tokens;
  EV_THROW_IF_NOT_MSG(fixed <= pc.budget_tokens, "the system prompt and question take ", fixed,
                      " tokens, more than the budget of ", pc.budget_tokens, " (context ", opt.context_tokens,
                      " minus ", reserve_of(opt), " reserved for the answer)");
  pc.total_tokens = fixed;
  return pc;
}

}  // namespace

packer::packer(ingest::store& s, const engine::tokenizer* tok) : store_(s), tok_(tok) {}

int packer::count_tokens(std::string_view text) const {
  if (tok_ != nullptr) return static_cast<int>(tok_->count(text, engine::special_mode::as_text));
  return static_cast<int>((text.size() + 2) / 3);
}

packed_context packer::pack(const std::vector<hit>& hits, const std::string& question, const pack_options& opt) const {
  packed_context pc = start(opt, question, *this);
  pack_state st(store_, *this, opt);
  const int avail = pc.budget_tokens - pc.total_tokens;
  std::map<int64_t, std::vector<span>> sel;
  std::map<int64_t, int> cost;  // current block cost per document
  int used = 0;
  int n_passages = 0;
  auto try_set = [&](doc_info& d, std::vector<span> spans) {
    const int c = st.block_cost(d, spans);
    const int before = cost.count(d.row.id) ? cost[d.row.id] : 0;
    if (used - before + c > avail) return false;
    used += c - before;
    cost[d.row.id] = c;
    sel[d.row.id] = std::move(spans);
    return true;
  };
  // Merge [lo, hi] into a document's spans (merging overlapping or touching ones).
  auto merged = [](std::vector<span> spans, span add) {
    std::vector<span> out;
    for (auto& s : spans) {
      if (s.last + 1 < add.first || add.last + 1 < s.first) {
        out.push_back(s);
      } else {
        add.first = std::min(add.first, s.first);
        add.last = std::max(add.last, s.last);
        add.score = std::max(add.score, s.score);
      }
    }
    out.push_back(add);
    return out;
  };

  for (const auto& h : hits) {
    if (opt.max_passages > 0 && n_passages >= opt.max_passages) break;
    doc_info* d = st.doc(h.document_id);
    if (d == nullptr || d->chunks.empty()) continue;
    d->best = std::max(d->best, h.score);
    // Locate the hit's chunk (index == ordinal normally; search otherwise).
    int idx = -1;
    if (h.ordinal >= 0 && h.ordinal < static_cast<int>(d->chunks.size()) && d->chunks[h.ordinal].id == h.chunk_id)
      idx = h.ordinal;
    for (int i = 0; idx < 0 && i < static_cast<int>(d->chunks.size()); ++i)
      if (d->chunks[i].id == h.chunk_id) idx = i;
    if (idx < 0) continue;  // chunk deleted since retrieval
    const auto& cur = sel[d->row.id];
    const bool inside = std::any_of(cur.begin(), cur.end(), [&](const span& s) { return s.first <= idx && idx <= s.last; });
    if (inside) continue;
    const int w = std::max(0, opt.neighbour_window);
    const int last = static_cast<int>(d->chunks.size()) - 1;
    span win{std::max(0, idx - w), std::min(last, idx + w), h.score, false};
    const size_t before = cur.size();
    if (try_set(*d, merged(cur, win)) || try_set(*d, merged(cur, span{idx, idx, h.score, false}))) {
      n_passages += static_cast<int>(sel[d->row.id].size()) - static_cast<int>(before);
    }
  }
  if (opt.fill_whole_documents && opt.max_passages <= 0) {
    // Best document first (rank of its first hit).
    std::vector<doc_info*> order;
    for (auto& [id, spans] : sel)
      if (!spans.empty()) order.push_back(st.doc(id));
    std::sort(order.begin(), order.end(), [](doc_info* a, doc_info* b) { return a->rank < b->rank; });
    for (doc_info* d : order) {
      double best = 0;
      for (auto& s : sel[d->row.id]) best = std::max(best, s.score);
      try_set(*d, st.whole_spans(*d, best));
    }
  }
  // Drop documents left without spans.
  for (auto it = sel.begin(); it != sel.end();) it = it->second.empty() ? sel.erase(it) : std::next(it);
  st.finish(sel, pc);
  return pc;
}

packed_context packer::pack_document(int64_t document_id, const std::string& question, const pack_options& opt) const {
  packed_context pc = start(opt, question, *this);
  pack_state st(store_, *this, opt);
  doc_info* d = st.doc(document_id);
  EV_THROW_IF_NOT_KIND(d != nullptr, not_found, "document ", document_id, " does not exist");
  if (d->chunks.empty()) return pc;
  std::map<int64_t, std::vector<span>> sel;
  sel[document_id] = st.whole_spans(*d, 1.0);
  if (pc.total_tokens + st.block_cost(*d, sel[document_id]) > pc.budget_tokens + 64) return pc;  // clearly too big
  pc.whole_document = true;
  st.finish(sel, pc);
  if (!pc.whole_document || pc.passages.empty()) {  // finish() had to drop passages: not whole any more
    packed_context empty = start(opt, question, *this);
    return empty;
  }
  return pc;
}

}  // namespace evident::retrieval
