// The default embedder: TF-IDF-weighted signed feature hashing, no model needed ("hashed-tfidf-v1").
//
// Features of a text (lower-cased; words are runs of letters/digits, any script):
//   word unigrams (weight 1.0), word bigrams (0.7), character 3-, 4- and 5-grams of each word padded with spaces
//   (0.25 each; at most the first 32 characters of a word).
// Each feature is a 64-bit hash; its high bits pick one of `dim` dimensions and a sign (signed hashing keeps the
// expected inner product of colliding features at zero); the value is weight * (1 + ln tf) for word features and
// weight * tf for character n-grams (they are accumulated without a count table: most of the cost is theirs).
//
// Where IDF applies: documents are embedded with tf weights only and L2-normalised; queries are weighted by
// idf = 1 + ln((N + 1) / (df + 1)) before normalisation, so the score q.d weights each shared feature by its idf
// once, like BM25. This keeps stored vectors independent of the corpus statistics: adding documents changes df but
// never invalidates vectors already in vectors.faiss, and a crash-repair re-embeds a chunk to the same vector.
// df is counted per chunk over 2^18 buckets of the feature hash (df = chunks containing a feature of that bucket),
// stored in table embedder_df_pages (migration 0004: page p = buckets [p * 4096, (p + 1) * 4096) as little-endian
// uint32) with N = meta "embedder.df_n".
//
// Thread-safety: embed/embed_query/features are const and re-entrant (per-thread scratch); set_df is not: call it
// before sharing the embedder.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "ingest/embedder.h"
#include "ingest/sqlite.h"

namespace evident::ingest {

class hashed_tfidf_embedder final : public embedder_i {
 public:
  static constexpr int default_dim = 384;
  static constexpr int df_buckets = 1 << 18;
  static constexpr const char* id = "hashed-tfidf-v1";

  explicit hashed_tfidf_embedder(int dim = default_dim);

  std::string name() const override { return id; }
  int dim() const override { return dim_; }
  void embed(const std::vector<std::string_view>& texts, float* out) const override;
  void embed_query(std::string_view text, float* out) const override;

  // One document text: its vector (dim floats) and, when `buckets` is given, the distinct df buckets it contains
  // (appended, each in [0, df_buckets)).
  void embed_one(std::string_view text, float* out, std::vector<uint32_t>* buckets) const;
  // The distinct df buckets of a text (for decrementing df when a chunk is removed).
  void df_buckets_of(std::string_view text, std::vector<uint32_t>& buckets) const;

  // Document frequencies: df[b] for b < df_buckets, n = number of chunks counted.
  void set_df(std::vector<uint32_t> df, int64_t n);
  const std::vector<uint32_t>& df() const { return df_; }
  int64_t df_n() const { return n_; }

 private:
  void embed_impl(std::string_view text, float* out, std::vector<uint32_t>* buckets, bool query) const;
  int dim_;
  std::vector<uint32_t> df_;
  int64_t n_ = 0;
};

// Loads the df table of a store into `df` (size df_buckets) and returns N (meta embedder.df_n, 0 when absent).
int64_t load_df(store& s, std::vector<uint32_t>& df);
// Writes df (size df_buckets), N (meta embedder.df_n) and `batch`, the last chunk batch the counts include (meta
// embedder.df_batch; the value of meta fts.batch): every page, or only the pages that differ from `saved` (the df
// last written or loaded; size df_buckets). Call inside a transaction, between chunk batches.
void save_df(store& s, const std::vector<uint32_t>& df, int64_t n, int64_t batch, const std::vector<uint32_t>* saved);
// Migration 0004 (called by store::migrate inside its transaction): the rows of the old embedder_df table become
// pages of embedder_df_pages, and embedder_df is dropped (nothing happens when there is no embedder_df table).
void migrate_df_rows_to_pages(sql::db& db);

}  // namespace evident::ingest
