#include "ingest/hashed-embedder.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "engine/base/error.h"
#include "ingest/store.h"

namespace evident::ingest {
namespace {

constexpr uint64_t k_mul = 0x9E3779B97F4A7C15ull;


inline uint64_t mix_fast(uint64_t h) {  // one multiply: enough to spread FNV state over low and high bits
  h ^= h >> 32;
  h *= k_mul;
  h ^= h >> 29;
  return h;
}

// Word features (unigrams, bigrams) need counts for the sublinear tf: an open-addressing map hash -> (weight, tf),
// cleared between texts by walking the used slots. Character n-grams (most of the features) skip the map and go
// straight into the vector with raw tf (see embed_impl).
struct feature_table {
  std::vector<uint64_t> keys;
  std::vector<float> weight;
  std::vector<float> tf;
  std::vector<uint32_t> used;
  uint64_t mask = 0;

  void init(size_t cap) {
    keys.assign(cap, 0);
    weight.assign(cap, 0);
    tf.assign(cap, 0);
    used.clear();
    mask = cap - 1;
  }
  void clear() {
    for (uint32_t i : used) keys[i] = 0;
    used.clear();
  }
  void add(uint64_t h, float w) {
    if (h == 0) h = 1;
    if (used.size() * 2 >= keys.size()) grow();
    uint64_t i = (h >> 7) & mask;
    while (true) {
      if (keys[i] == h) {
        tf[i] += 1;
        return;
      }
      if (keys[i] == 0) {
        keys[i] = h;
        weight[i] = w;
        tf[i] = 1;
        used.push_back(static_cast<uint32_t>(i));
        return;
      }
      i = (i + 1) & mask;
    }
  }
  void grow() {
    std::vector<uint64_t> ok;
    std::vector<float> ow, ot;
    ok.reserve(used.size());
    for (uint32_t i : used) {
      ok.push_back(keys[i]);
      ow.push_back(weight[i]);
      ot.push_back(tf[i]);
    }
    init(keys.size() * 2);
    for (size_t j = 0; j < ok.size(); ++j) {
      uint64_t i = (ok[j] >> 7) & mask;
      while (keys[i] != 0) i = (i + 1) & mask;
      keys[i] = ok[j];
      weight[i] = ow[j];
      tf[i] = ot[j];
      used.push_back(static_cast<uint32_t>(i));
    }
  }
};

struct scratch_space {
  feature_table words;
  std::vector<uint64_t> seen;   // bitset over df buckets, all clear between texts
  std::vector<uint32_t> marked; // buckets set in `seen` for the current text (room for every bucket)
  std::vector<float> vec;       // for df_buckets_of
};

scratch_space& scratch() {
  thread_local scratch_space t;
  if (t.words.keys.empty()) {
    t.words.init(1 << 11);
    t.seen.assign(hashed_tfidf_embedder::df_buckets / 64, 0);
    t.marked.resize(hashed_tfidf_embedder::df_buckets + 1);
  }
  return t;
}

// Adds one feature to the vector: the hot loop of the embedder (about three features per character of text), so
// the options are template parameters rather than per-feature tests, and a new df bucket is recorded without a
// branch (the "seen before" test mispredicts about as often as not).
template <bool Idf, bool Buckets, bool DefaultDim>
struct feature_sink {
  float* out;
  uint32_t dim;
  const uint32_t* df;
  double logn1;
  uint64_t* seen;
  uint32_t* marked;
  size_t n_marked = 0;

  void operator()(uint64_t h, float w) {
    const uint32_t b = static_cast<uint32_t>(h & (hashed_tfidf_embedder::df_buckets - 1));
    if constexpr (Idf) w *= static_cast<float>(1.0 + logn1 - std::log(static_cast<double>(df[b]) + 1.0));
    if constexpr (Buckets) {
      uint64_t& word = seen[b >> 6];
      const uint64_t bit = 1ull << (b & 63);
      marked[n_marked] = b;
      n_marked += (word & bit) == 0;
      word |= bit;
    }
    // h >> 32 fits 32 bits: a 32-bit remainder, and a constant divisor (multiply + shift, not a divide) for the
    // default dimension; the same value either way.
    const uint32_t hi = static_cast<uint32_t>(h >> 32);
    const uint32_t d = DefaultDim ? hi % static_cast<uint32_t>(hashed_tfidf_embedder::default_dim) : hi % dim;
    out[d] += (h >> 63) ? -w : w;
  }
};

// Decodes one code point (valid UTF-8 assumed; invalid bytes decode as themselves).
inline char32_t next_cp(const unsigned char*& p, const unsigned char* end) {
  unsigned c = *p++;
  if (c < 0x80) return c;
  int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
  char32_t cp = n == 3 ? (c & 0x07) : n == 2 ? (c & 0x0F) : (c & 0x1F);
  for (int i = 0; i < n && p < end; ++i) cp = (cp << 6) | (*p++ & 0x3F);
  return n ? cp : c;
}

constexpr float w_unigram = 1.0f, w_bigram = 0.7f, w_char = 0.25f;
constexpr size_t max_word_chars = 32;

// Calls on_char(hash) for every character n-gram; word features go into `words`.
template <typename F>
void extract(std::string_view text, feature_table& words, F&& on_char) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  char32_t padded[max_word_chars + 2];
  size_t wlen = 0, wtotal = 0;
  uint64_t wh = 0, prev_wh = 0;
  auto flush = [&] {
    if (wtotal == 0) return;
    words.add(mix_fast(wh ^ 0x1111), w_unigram);
    if (prev_wh) words.add(mix_fast(prev_wh * k_mul ^ wh ^ 0x2222), w_bigram);
    prev_wh = wh;
    // char 3-5-grams of " word " (first max_word_chars characters)
    padded[0] = U' ';
    padded[wlen + 1] = U' ';
    const size_t pl = wlen + 2;
    // FNV-1a of padded[i, i + n] for n = 3, 4, 5 (those that fit), emitted in that order.
    constexpr uint64_t fnv_prime = 0x100000001B3ull;
    for (size_t i = 0; i + 3 <= pl; ++i) {
      uint64_t h = 0xCBF29CE484222325ull;
      h = (h ^ padded[i]) * fnv_prime;
      h = (h ^ padded[i + 1]) * fnv_prime;
      h = (h ^ padded[i + 2]) * fnv_prime;
      on_char(mix_fast(h + 2));
      if (i + 4 > pl) continue;
      h = (h ^ padded[i + 3]) * fnv_prime;
      on_char(mix_fast(h + 3));
      if (i + 5 > pl) continue;
      h = (h ^ padded[i + 4]) * fnv_prime;
      on_char(mix_fast(h + 4));
    }
    wlen = wtotal = 0;
    wh = 0;
  };
  while (p < end) {
    char32_t c;
    bool is_word;
    if (*p < 0x80) {
      c = *p++;
      if (c >= 'A' && c <= 'Z') c += 32;
      is_word = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    } else {
      c = next_cp(p, end);
      is_word = u_isalnum(static_cast<UChar32>(c)) || (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_M_MASK) != 0;
      if (is_word) c = static_cast<char32_t>(u_tolower(static_cast<UChar32>(c)));
    }
    if (is_word) {
      wh = (wh ^ c) * 0x100000001B3ull + 0x9E37;
      if (wlen < max_word_chars) padded[1 + wlen++] = c;
      ++wtotal;
    } else {
      flush();
    }
  }
  flush();
}

}  // namespace

hashed_tfidf_embedder::hashed_tfidf_embedder(int dim) : dim_(dim) {
  EV_THROW_IF_NOT_MSG(dim > 0 && dim <= 4096, "embedder dimension must be in [1, 4096], got ", dim);
}

void hashed_tfidf_embedder::set_df(std::vector<uint32_t> df, int64_t n) {
  EV_THROW_IF_NOT_MSG(df.size() == static_cast<size_t>(df_buckets), "df table must have ", df_buckets,
                      " buckets, got ", df.size());
  df_ = std::move(df);
  n_ = n;
}

namespace {
template <bool Idf, bool Buckets, bool DefaultDim>
void embed_features(std::string_view text, float* out, uint32_t dim, const std::vector<uint32_t>& df, double logn1,
                    scratch_space& sc, std::vector<uint32_t>* buckets) {
  feature_table& ft = sc.words;
  feature_sink<Idf, Buckets, DefaultDim> sink{out, dim, df.data(), logn1, sc.seen.data(), sc.marked.data()};
  extract(text, ft, [&](uint64_t h) { sink(h, w_char); });
  // 1 + ln(tf) for the word features.
  static const std::array<float, 64> log_tf = [] {
    std::array<float, 64> a{};
    for (size_t i = 1; i < a.size(); ++i) a[i] = 1.0f + std::log(static_cast<float>(i));
    return a;
  }();
  for (uint32_t i : ft.used) {
    const float tf = ft.tf[i];
    const float s = tf < 64 ? log_tf[static_cast<size_t>(tf)] : 1.0f + std::log(tf);
    sink(ft.keys[i], ft.weight[i] * s);
  }
  ft.clear();
  if constexpr (Buckets) {
    for (size_t i = 0; i < sink.n_marked; ++i) sc.seen[sc.marked[i] >> 6] = 0;
    buckets->insert(buckets->end(), sc.marked.begin(), sc.marked.begin() + static_cast<std::ptrdiff_t>(sink.n_marked));
  }
}
}  // namespace

void hashed_tfidf_embedder::embed_impl(std::string_view text, float* out, std::vector<uint32_t>* buckets,
                                       bool query) const {
  scratch_space& sc = scratch();
  sc.words.clear();
  std::memset(out, 0, sizeof(float) * static_cast<size_t>(dim_));
  const bool idf = query && n_ > 0 && !df_.empty();
  const double logn1 = std::log(static_cast<double>(n_) + 1.0);
  const uint32_t dim = static_cast<uint32_t>(dim_);
  EV_ASSERT(!(query && buckets), "queries record no df buckets");
  if (idf)
    embed_features<true, false, false>(text, out, dim, df_, logn1, sc, nullptr);
  else if (buckets && dim_ == default_dim)
    embed_features<false, true, true>(text, out, dim, df_, logn1, sc, buckets);
  else if (buckets)
    embed_features<false, true, false>(text, out, dim, df_, logn1, sc, buckets);
  else
    embed_features<false, false, false>(text, out, dim, df_, logn1, sc, nullptr);
  double norm = 0;
  for (int d = 0; d < dim_; ++d) norm += static_cast<double>(out[d]) * out[d];
  if (norm > 0) {
    float inv = static_cast<float>(1.0 / std::sqrt(norm));
    for (int d = 0; d < dim_; ++d) out[d] *= inv;
  }
}

void hashed_tfidf_embedder::embed(const std::vector<std::string_view>& texts, float* out) const {
  for (size_t i = 0; i < texts.size(); ++i) embed_impl(texts[i], out + i * static_cast<size_t>(dim_), nullptr, false);
}

void hashed_tfidf_embedder::embed_query(std::string_view text, float* out) const {
  embed_impl(text, out, nullptr, true);
}

void hashed_tfidf_embedder::embed_one(std::string_view text, float* out, std::vector<uint32_t>* buckets) const {
  embed_impl(text, out, buckets, false);
}

void hashed_tfidf_embedder::df_buckets_of(std::string_view text, std::vector<uint32_t>& buckets) const {
  thread_local std::vector<float> v;
  v.resize(static_cast<size_t>(dim_));
  embed_impl(text, v.data(), &buckets, false);
}

namespace {
constexpr int df_page_buckets = 4096;
constexpr int df_pages = hashed_tfidf_embedder::df_buckets / df_page_buckets;

void put_page(sql::stmt& ins, int page, const uint32_t* counts) {
  std::array<unsigned char, df_page_buckets * 4> b;
  for (int i = 0; i < df_page_buckets; ++i) {
    const uint32_t v = counts[i];
    b[4 * i] = static_cast<unsigned char>(v);
    b[4 * i + 1] = static_cast<unsigned char>(v >> 8);
    b[4 * i + 2] = static_cast<unsigned char>(v >> 16);
    b[4 * i + 3] = static_cast<unsigned char>(v >> 24);
  }
  ins.bind(1, page).bind_blob(2, b.data(), b.size()).run();
  ins.reset();
}

constexpr const char* put_page_sql = "INSERT OR REPLACE INTO embedder_df_pages(page, counts) VALUES (?, ?)";
}  // namespace

int64_t load_df(store& s, std::vector<uint32_t>& df) {
  df.assign(hashed_tfidf_embedder::df_buckets, 0);
  auto q = s.db().prepare("SELECT page, counts FROM embedder_df_pages");
  while (q.step()) {
    const int64_t p = q.col_int(0);
    const auto* b = static_cast<const unsigned char*>(q.col_blob(1));
    EV_THROW_IF_NOT_KIND(p >= 0 && p < df_pages && q.col_bytes(1) == df_page_buckets * 4, corrupt, "store ",
                         s.dir().string(), ": embedder_df_pages row ", p, " has ", q.col_bytes(1),
                         " bytes, expected page 0-", df_pages - 1, " of ", df_page_buckets * 4, " bytes");
    uint32_t* out = df.data() + p * df_page_buckets;
    for (int i = 0; i < df_page_buckets; ++i)
      out[i] = uint32_t{b[4 * i]} | uint32_t{b[4 * i + 1]} << 8 | uint32_t{b[4 * i + 2]} << 16 |
               uint32_t{b[4 * i + 3]} << 24;
  }
  auto n = s.meta("embedder.df_n");
  return n ? std::stoll(*n) : 0;
}

void save_df(store& s, const std::vector<uint32_t>& df, int64_t n, int64_t batch,
             const std::vector<uint32_t>* saved) {
  EV_ASSERT(df.size() == hashed_tfidf_embedder::df_buckets && (!saved || saved->size() == df.size()),
            "save_df needs df_buckets counts");
  auto ins = s.db().prepare(put_page_sql);
  for (int p = 0; p < df_pages; ++p) {
    const uint32_t* a = df.data() + p * df_page_buckets;
    if (saved && std::equal(a, a + df_page_buckets, saved->data() + p * df_page_buckets)) continue;
    put_page(ins, p, a);
  }
  s.set_meta("embedder.df_n", std::to_string(n));
  // The chunk batch these counts include (every batch committed so far: callers save between batches). A writer
  // recounts when it differs from meta fts.batch: a crash between a batch's commit and the next df save leaves df
  // stale, and a batch that replaced documents can leave the chunk count (embedder.df_n) unchanged.
  s.set_meta("embedder.df_batch", std::to_string(batch));
}

void migrate_df_rows_to_pages(sql::db& db) {
  {
    auto t = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'embedder_df'");
    if (!t.step()) return;  // nothing to convert (a store whose user_version was set back by hand, as in tests)
  }
  std::vector<uint32_t> df(hashed_tfidf_embedder::df_buckets, 0);
  {
    auto q = db.prepare("SELECT feature, df FROM embedder_df");
    while (q.step()) {
      const int64_t f = q.col_int(0);
      if (f >= 0 && f < hashed_tfidf_embedder::df_buckets)
        df[static_cast<size_t>(f)] = static_cast<uint32_t>(q.col_int(1));
    }
  }
  auto ins = db.prepare(put_page_sql);
  for (int p = 0; p < df_pages; ++p) put_page(ins, p, df.data() + p * df_page_buckets);
  db.exec("DROP TABLE embedder_df");
}

std::unique_ptr<embedder_i> make_embedder(store& s) {
  auto name = s.meta("embedder.name");
  EV_THROW_IF_NOT_KIND(!name || *name == hashed_tfidf_embedder::id, invalid_input, "store ", s.dir().string(),
                       " was built with embedder '", *name, "', which this build does not provide");
  auto dim_s = s.meta("embedder.dim");
  int dim = dim_s ? std::stoi(*dim_s) : hashed_tfidf_embedder::default_dim;
  auto e = std::make_unique<hashed_tfidf_embedder>(dim);
  std::vector<uint32_t> df;
  int64_t n = load_df(s, df);
  e->set_df(std::move(df), n);
  return e;
}

}  // namespace evident::ingest
