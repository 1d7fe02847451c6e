#include "citation/verify.h"

#include <algorithm>
#include <limits>
#include <set>
#include <unordered_set>

#include <unicode/uchar.h>

#include "citation/normalize.h"

namespace evident::citation {

namespace {

struct match_in_norm {
  size_t begin = 0, end = 0;  // normalised code points
  double score = 0;
};

// Exact, then approximate substring search of q in t (both normalised).
std::optional<match_in_norm> search(const std::u32string& q, const std::u32string& t, double threshold) {
  if (q.empty() || t.empty()) return std::nullopt;
  if (size_t pos = t.find(q); pos != std::u32string::npos) return match_in_norm{pos, pos + q.size(), 1.0};
  if (threshold >= 1.0) return std::nullopt;
  const size_t m = q.size();
  const size_t max_edits = static_cast<size_t>((1.0 - threshold) * static_cast<double>(m));
  // Prefilter: a fuzzy match needs most of the quote's words; skip passages that share too few of them.
  {
    const std::u32string pad = U" " + t + U" ";
    size_t words = 0, present = 0, i = 0;
    while (i < q.size()) {
      size_t j = q.find(U' ', i);
      if (j == std::u32string::npos) j = q.size();
      if (j > i) {
        ++words;
        if (pad.find(U" " + q.substr(i, j - i) + U" ") != std::u32string::npos) ++present;
      }
      i = j + 1;
    }
    if (words > 0 && static_cast<double>(present) < 0.5 * static_cast<double>(words)) return std::nullopt;
  }
  // Sellers' algorithm: edit distance of q against every substring of t ending at i, free start; start tracked.
  std::vector<size_t> prev(m + 1), cur(m + 1), prev_s(m + 1), cur_s(m + 1);
  for (size_t j = 0; j <= m; ++j) {
    prev[j] = j;
    prev_s[j] = 0;
  }
  size_t best = prev[m], best_end = 0, best_start = 0;
  for (size_t i = 1; i <= t.size(); ++i) {
    cur[0] = 0;
    cur_s[0] = i;
    for (size_t j = 1; j <= m; ++j) {
      size_t d = prev[j - 1] + (q[j - 1] == t[i - 1] ? 0 : 1);
      size_t s = prev_s[j - 1];
      if (prev[j] + 1 < d) {
        d = prev[j] + 1;
        s = prev_s[j];
      }
      if (cur[j - 1] + 1 < d) {
        d = cur[j - 1] + 1;
        s = cur_s[j - 1];
      }
      cur[j] = d;
      cur_s[j] = s;
    }
    if (cur[m] < best) {
      best = cur[m];
      best_end = i;
      best_start = cur_s[m];
    }
    std::swap(prev, cur);
    std::swap(prev_s, cur_s);
  }
  if (best > max_edits || best_end <= best_start) return std::nullopt;
  // Trim separators the alignment may have swallowed at the edges.
  while (best_start < best_end && t[best_start] == U' ') ++best_start;
  while (best_end > best_start && t[best_end - 1] == U' ') --best_end;
  const double score = 1.0 - static_cast<double>(best) / static_cast<double>(m);
  return match_in_norm{best_start, best_end, score};
}

struct prepared {
  const retrieval::passage* p = nullptr;
  retrieval::passage merged;  // used when p is a merge of two passages
  normalized_text norm;
  std::optional<passage_layout> layout;
};

void locate(const retrieval::passage& p, const std::optional<passage_layout>& layout, resolved_citation& c) {
  c.document_id = p.document_id;
  c.document_title = p.document_title;
  c.document_path = p.document_path;
  c.chunk_id = p.chunk_ids.empty() ? 0 : p.chunk_ids.front();
  c.page = p.page_start;
  if (!layout) return;
  for (size_t k = 0; k < layout->chunk_starts.size() && k < p.chunk_ids.size(); ++k)
    if (layout->chunk_starts[k] <= c.char_start) c.chunk_id = p.chunk_ids[k];
  if (!layout->page_starts.empty()) {
    const auto it = std::upper_bound(layout->page_starts.begin(), layout->page_starts.end(), c.char_start);
    c.page = std::max(1, static_cast<int>(it - layout->page_starts.begin()));
  }
}

// Sets the span of `c` to normalised [b, e) of `pp`.
// Normalisation turns punctuation into spaces, so a match starts and ends at a letter or digit. The span is widened
// over the punctuation the quote itself carries at its edges when the text has exactly those characters there
// ("... this dance." keeps its full stop), so that the span's text contains the quote as written.
void set_span(const prepared& pp, size_t b, size_t e, resolved_citation& c) {
  auto [s, t] = pp.norm.span_of(b, e);
  const std::u32string text = to_u32(pp.p->text);
  const std::u32string q = to_u32(c.quote);
  auto edge = [](char32_t ch) { return !u_isalnum(static_cast<UChar32>(ch)) && !u_isspace(static_cast<UChar32>(ch)); };
  size_t qb = 0, qe = q.size();
  while (qe > 0 && u_isspace(static_cast<UChar32>(q[qe - 1]))) --qe;
  while (qb < qe && u_isspace(static_cast<UChar32>(q[qb]))) ++qb;
  size_t tail = qe;
  while (tail > qb && edge(q[tail - 1])) --tail;
  for (size_t k = tail; k < qe && static_cast<size_t>(t) < text.size() && text[static_cast<size_t>(t)] == q[k]; ++k) ++t;
  size_t head = qb;
  while (head < tail && edge(q[head])) ++head;
  for (size_t k = head; k > qb && s > 0 && text[static_cast<size_t>(s) - 1] == q[k - 1]; --k) --s;
  c.char_start = pp.p->char_start + s;
  c.char_end = pp.p->char_start + t;
  c.span_text = substr_cp(pp.p->text, s, t);
  locate(*pp.p, pp.layout, c);
}

// Merges two passages of one document that touch or overlap in the document ([a] then [b]).
std::optional<retrieval::passage> merge(const retrieval::passage& a, const retrieval::passage& b) {
  if (a.document_id != b.document_id || b.char_start > a.char_end || b.char_end <= a.char_end) return std::nullopt;
  retrieval::passage m = a;
  m.text += substr_cp(b.text, a.char_end - b.char_start, b.char_end - b.char_start);
  m.char_end = b.char_end;
  m.page_end = b.page_end;
  m.chunk_ids.insert(m.chunk_ids.end(), b.chunk_ids.begin(), b.chunk_ids.end());
  return m;
}

}  // namespace

std::optional<quote_match> find_quote(const std::string& quote, const retrieval::passage& p, double threshold) {
  const normalized_text nq = normalize(quote);
  const normalized_text np = normalize(p.text);
  auto m = search(nq.text, np.text, threshold);
  if (!m) return std::nullopt;
  const auto [s, e] = np.span_of(m->begin, m->end);
  return quote_match{p.char_start + s, p.char_start + e, m->score};
}

double claim_overlap(const std::string& claim, const std::string& text) {
  const auto cw = content_words(claim);
  if (cw.empty()) return 0;
  const auto tw = content_words(text);
  const std::unordered_set<std::string> have(tw.begin(), tw.end());
  std::set<std::string> uniq(cw.begin(), cw.end());
  size_t hit = 0;
  for (const auto& w : uniq) hit += have.count(w);
  return static_cast<double>(hit) / static_cast<double>(uniq.size());
}

std::vector<resolved_citation> resolve_citations(const parsed_answer& answer,
                                                 const std::vector<retrieval::passage>& passages,
                                                 const layout_fn& layout, const verify_options& opt) {
  std::vector<resolved_citation> out;
  // Normalise every passage once; layouts are fetched lazily.
  std::vector<prepared> prep(passages.size());
  std::vector<bool> have_layout(passages.size(), false);
  auto get = [&](size_t k) -> prepared& {
    prepared& pp = prep[k];
    if (pp.p == nullptr) {
      pp.p = &passages[k];
      pp.norm = normalize(passages[k].text);
    }
    if (!have_layout[k]) {
      if (layout) pp.layout = layout(passages[k]);
      have_layout[k] = true;
    }
    return pp;
  };
  auto index_of = [&](int label) -> int {
    for (size_t k = 0; k < passages.size(); ++k)
      if (passages[k].label == label) return static_cast<int>(k);
    return -1;
  };
  auto merged_prep = [&](size_t a, size_t b) -> std::optional<prepared> {
    auto m = merge(passages[a], passages[b]);
    if (!m) return std::nullopt;
    prepared pp;
    pp.merged = std::move(*m);
    pp.p = &pp.merged;
    pp.norm = normalize(pp.merged.text);
    const auto& la = get(a).layout;
    const auto& lb = get(b).layout;
    if (la && lb) {
      passage_layout l = *la;
      l.chunk_starts.insert(l.chunk_starts.end(), lb->chunk_starts.begin(), lb->chunk_starts.end());
      pp.layout = l;
    }
    return pp;
  };

  for (const auto& mk : answer.markers) {
    const std::string claim = answer.text.substr(mk.claim_start, mk.claim_end - mk.claim_start);
    std::vector<std::string> quotes;
    for (const auto& q : mk.quotes)
      if (normalize(q).text.size() >= opt.min_quote_chars) quotes.push_back(q);
    for (int label : mk.labels) {
      const int idx = index_of(label);
      auto base = [&] {
        resolved_citation c;
        c.label = label;
        c.answer_offset = mk.offset;
        return c;
      };
      auto no_quote = [&]() {
        resolved_citation c = base();
        c.v = idx < 0 ? verdict::invalid_label : verdict::no_quote;
        if (idx >= 0) {
          prepared& pp = get(static_cast<size_t>(idx));
          // span: the passage sentence that overlaps the claim most (the whole passage when none does)
          const auto sents = split_sentences(pp.norm.text.empty() ? std::u32string() : to_u32(pp.p->text));
          double best = -1;
          int64_t bs = 0, be = count_code_points(pp.p->text);
          const std::u32string u = to_u32(pp.p->text);
          for (const auto& [s, e] : sents) {
            const double o = claim_overlap(claim, to_utf8(std::u32string_view(u).substr(s, e - s)));
            if (o > best) {
              best = o;
              bs = s;
              be = e;
            }
          }
          c.match_score = claim_overlap(claim, pp.p->text);
          c.char_start = pp.p->char_start + bs;
          c.char_end = pp.p->char_start + be;
          c.span_text = to_utf8(std::u32string_view(u).substr(bs, be - bs));
          locate(*pp.p, pp.layout, c);
        }
        return c;
      };
      if (quotes.empty()) {
        out.push_back(no_quote());
        continue;
      }
      for (const auto& q : quotes) {
        resolved_citation c = base();
        c.quote = q;
        const std::u32string nq = normalize(q).text;
        bool done = false;
        if (idx >= 0) {
          prepared& pp = get(static_cast<size_t>(idx));
          if (auto m = search(nq, pp.norm.text, opt.fuzzy_threshold)) {
            c.v = verdict::supported;
            c.match_score = m->score;
            set_span(pp, m->begin, m->end, c);
            done = true;
          }
          // a quote crossing into the next or previous passage of the same document
          for (int dir : {+1, -1}) {
            if (done) break;
            const int other = idx + dir;
            if (other < 0 || other >= static_cast<int>(passages.size())) continue;
            auto mp = dir > 0 ? merged_prep(static_cast<size_t>(idx), static_cast<size_t>(other))
                              : merged_prep(static_cast<size_t>(other), static_cast<size_t>(idx));
            if (!mp) continue;
            mp->p = &mp->merged;  // (the copy out of merged_prep must point at its own merged passage)
            if (auto m = search(nq, mp->norm.text, opt.fuzzy_threshold)) {
              const auto [s, e] = mp->norm.span_of(m->begin, m->end);
              const int64_t as = mp->p->char_start + s, ae = mp->p->char_start + e;
              if (ae > passages[idx].char_start && as < passages[idx].char_end) {
                c.v = verdict::supported;
                c.match_score = m->score;
                set_span(*mp, m->begin, m->end, c);
                done = true;
              }
            }
          }
        }
        if (!done) {
          // search the other passages: exact everywhere first, then fuzzy
          for (double th : {1.0, opt.fuzzy_threshold}) {
            for (size_t k = 0; k < passages.size() && !done; ++k) {
              if (static_cast<int>(k) == idx) continue;
              prepared& pp = get(k);
              if (auto m = search(nq, pp.norm.text, th)) {
                c.v = idx < 0 ? verdict::invalid_label : verdict::other_passage;
                c.found_in_label = passages[k].label;
                c.match_score = m->score;
                set_span(pp, m->begin, m->end, c);
                done = true;
              }
            }
            if (done) break;
          }
        }
        if (!done) {
          c.v = idx < 0 ? verdict::invalid_label : verdict::not_found;
          if (idx >= 0) {
            const prepared& pp = get(static_cast<size_t>(idx));
            c.char_start = pp.p->char_start;
            c.char_end = pp.p->char_end;
            locate(*pp.p, pp.layout, c);
          }
        }
        // [1, 2: "q"] with q in passage 2: for label 1 the quote says nothing; check label 1 by claim overlap.
        if (c.v == verdict::other_passage &&
            std::find(mk.labels.begin(), mk.labels.end(), c.found_in_label) != mk.labels.end()) {
          c = no_quote();
        }
        out.push_back(std::move(c));
      }
    }
  }
  return out;
}

}  // namespace evident::citation
