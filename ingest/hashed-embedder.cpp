#include "ingest/hashed-embedder.h"

#include <unicode/uchar.h>

#include <cmath>
#include <cstring>

#include "engine/base/error.h"
#include "ingest/store.h"

namespace evident::ingest {
namespace {

constexpr uint64_t k_mul = 0x9E3779B97F4A7C15ull;

inline uint64_t mix(uint64_t h) {  // splitmix64 finaliser
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return h;
}

// Open-addressing map feature hash -> (group weight, tf); cleared between texts by walking the used slots.
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
    uint64_t i = h & mask;
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
      uint64_t i = ok[j] & mask;
      while (keys[i] != 0) i = (i + 1) & mask;
      keys[i] = ok[j];
      weight[i] = ow[j];
      tf[i] = ot[j];
      used.push_back(static_cast<uint32_t>(i));
    }
  }
};

feature_table& scratch() {
  thread_local feature_table t;
  if (t.keys.empty()) t.init(1 << 14);
  return t;
}

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

void extract(std::string_view text, feature_table& ft) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  char32_t word[max_word_chars + 2];
  size_t wlen = 0, wtotal = 0;
  uint64_t wh = 0, prev_wh = 0;
  auto flush = [&] {
    if (wtotal == 0) return;
    ft.add(mix(wh ^ 0x1111), w_unigram);
    if (prev_wh) ft.add(mix(prev_wh * k_mul ^ wh ^ 0x2222), w_bigram);
    prev_wh = wh;
    // char n-grams of " word " (first max_word_chars characters)
    char32_t padded[max_word_chars + 2];
    padded[0] = U' ';
    std::memcpy(padded + 1, word, wlen * sizeof(char32_t));
    padded[wlen + 1] = U' ';
    const size_t pl = wlen + 2;
    for (size_t i = 0; i + 3 <= pl; ++i) {
      uint64_t h = 0xCBF29CE484222325ull;
      for (size_t n = 0; n < 5 && i + n < pl; ++n) {
        h = (h ^ padded[i + n]) * 0x100000001B3ull;
        if (n >= 2) ft.add(mix(h ^ (0x3000 + n)), w_char);
      }
    }
    wlen = wtotal = 0;
    wh = 0;
  };
  while (p < end) {
    char32_t c = next_cp(p, end);
    bool is_word;
    if (c < 0x80) {
      if (c >= 'A' && c <= 'Z') c += 32;
      is_word = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    } else {
      is_word = u_isalnum(static_cast<UChar32>(c)) || (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_M_MASK) != 0;
      if (is_word) c = static_cast<char32_t>(u_tolower(static_cast<UChar32>(c)));
    }
    if (is_word) {
      wh = (wh ^ c) * 0x100000001B3ull + 0x9E37;
      if (wlen < max_word_chars) word[wlen++] = c;
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

void hashed_tfidf_embedder::embed_impl(std::string_view text, float* out, std::vector<uint32_t>* buckets,
                                       bool query) const {
  feature_table& ft = scratch();
  ft.clear();
  extract(text, ft);
  std::memset(out, 0, sizeof(float) * static_cast<size_t>(dim_));
  const bool idf = query && n_ > 0 && !df_.empty();
  const double logn1 = std::log(static_cast<double>(n_) + 1.0);
  for (uint32_t i : ft.used) {
    uint64_t h = ft.keys[i];
    float w = ft.weight[i] * (1.0f + std::log(ft.tf[i]));
    uint32_t b = static_cast<uint32_t>(h & (df_buckets - 1));
    if (idf) w *= static_cast<float>(1.0 + logn1 - std::log(static_cast<double>(df_[b]) + 1.0));
    if (buckets) buckets->push_back(b);
    uint32_t d = static_cast<uint32_t>((h >> 32) % static_cast<uint64_t>(dim_));
    out[d] += (h >> 63) ? -w : w;
  }
  double norm = 0;
  for (int d = 0; d < dim_; ++d) norm += static_cast<double>(out[d]) * out[d];
  if (norm > 0) {
    float inv = static_cast<float>(1.0 / std::sqrt(norm));
    for (int d = 0; d < dim_; ++d) out[d] *= inv;
  }
  ft.clear();
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
  feature_table& ft = scratch();
  ft.clear();
  extract(text, ft);
  for (uint32_t i : ft.used) buckets.push_back(static_cast<uint32_t>(ft.keys[i] & (df_buckets - 1)));
  ft.clear();
}

int64_t load_df(store& s, std::vector<uint32_t>& df) {
  df.assign(hashed_tfidf_embedder::df_buckets, 0);
  auto q = s.db().prepare("SELECT feature, df FROM embedder_df");
  while (q.step()) {
    int64_t f = q.col_int(0);
    if (f >= 0 && f < hashed_tfidf_embedder::df_buckets) df[static_cast<size_t>(f)] = static_cast<uint32_t>(q.col_int(1));
  }
  auto n = s.meta("embedder.df_n");
  return n ? std::stoll(*n) : 0;
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
