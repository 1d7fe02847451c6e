#include "tests/ingest/ingest-fixtures.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "ingest/embedder.h"
#include "ingest/fts-writer.h"
#include "ingest/hashed-embedder.h"
#include "ingest/store.h"
#include "ingest/vectors.h"

namespace evident::test {

void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << "cannot write " << p;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void make_pdf(const std::filesystem::path& out, const std::vector<std::string>& pages) {
  auto src = out;
  src += ".ms";
  std::string ms;
  for (size_t i = 0; i < pages.size(); ++i) {
    if (i > 0) ms += ".bp\n";
    ms += ".LP\n" + pages[i] + "\n";
  }
  write_file(src, ms);
  std::string cmd = "groff -Tps -ms '" + src.string() + "' 2>/dev/null | ps2pdf - '" + out.string() + "' 2>/dev/null";
  int rc = std::system(cmd.c_str());
  ASSERT_EQ(rc, 0) << "making a PDF failed (needs groff and ghostscript: tools/setup.sh installs them): " << cmd;
  ASSERT_TRUE(std::filesystem::exists(out) && std::filesystem::file_size(out) > 0) << out;
  std::filesystem::remove(src);
}

std::string generated_text(size_t bytes, uint64_t seed) {
  static const char* words[] = {
      "the", "protein", "cell", "study", "results", "of", "and", "in", "patients", "with", "was", "were", "treatment",
      "analysis", "expression", "gene", "increased", "risk", "data", "model", "response", "clinical", "effect",
      "significant", "levels", "associated", "function", "human", "disease", "mice", "activity", "induced", "role",
      "factor", "signaling", "pathway", "receptor", "tumor", "growth", "immune", "binding", "samples", "population",
      "evidence", "method", "observed", "compared", "higher", "lower", "during", "between", "within", "mechanism",
      "therapy", "infection", "virus", "bacterial", "vaccine", "outcome", "mortality", "cohort", "trial", "dose"};
  const size_t nw = sizeof(words) / sizeof(words[0]);
  std::mt19937_64 rng(seed);
  std::string out;
  out.reserve(bytes + 200);
  while (out.size() < bytes) {
    int len = 6 + static_cast<int>(rng() % 20);
    for (int i = 0; i < len; ++i) {
      std::string w = words[rng() % nw];
      if (i == 0) w[0] = static_cast<char>(w[0] - 32);
      out += w;
      out += i + 1 < len ? " " : ". ";
    }
    if (rng() % 6 == 0) out += "\n\n";
  }
  return out;
}

std::u32string to_u32(const std::string& s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
    char32_t cp = n == 0 ? c : n == 1 ? (c & 0x1F) : n == 2 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k <= n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += static_cast<size_t>(n) + 1;
  }
  return out;
}

std::string to_utf8(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xE0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (c >> 18));
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

store_check check_store(const std::filesystem::path& dir) {
  store_check r;
  ingest::store s(dir);
  {
    auto q = s.db().prepare("PRAGMA integrity_check");
    q.step();
    r.integrity = q.col_text(0);
  }
  try {
    s.db().exec("INSERT INTO chunks_fts(chunks_fts) VALUES('integrity-check')");
    r.fts_ok = true;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "FTS integrity-check failed: " << e.what();
  }
  r.documents = s.document_count();
  r.chunks = s.chunk_count();
  std::vector<int64_t> want;
  {
    auto q = s.db().prepare("SELECT id FROM chunks ORDER BY id");
    while (q.step()) want.push_back(q.col_int(0));
  }
  auto fts_ids = [&] {
    std::vector<int64_t> ids;
    auto q = s.db().prepare("SELECT id FROM chunks_fts_docsize ORDER BY id");
    while (q.step()) ids.push_back(q.col_int(0));
    return ids;
  };
  r.fts_match = fts_ids() == want;
  ingest::sync_fts(s.db(), s.db(), "fts.");  // no writer runs here (the test's ingest ended or was killed)
  r.fts_repaired_match = fts_ids() == want;
  if (r.fts_repaired_match) {
    try {
      s.db().exec("INSERT INTO chunks_fts(chunks_fts) VALUES('integrity-check')");
    } catch (const std::exception& e) {
      r.fts_ok = false;
      ADD_FAILURE() << "FTS integrity-check after sync failed: " << e.what();
    }
  }
  auto e = ingest::make_embedder(s);
  ingest::vector_index::options o;
  o.repair = false;
  o.save_repair = false;
  auto v = ingest::vector_index::open(s, *e, o);
  r.vectors = v->size();
  r.vectors_match = v->ids() == want;
  o.repair = true;
  auto v2 = ingest::vector_index::open(s, *e, o);
  r.repaired_match = v2->ids() == want;
  return r;
}

bool df_matches_chunks(ingest::store& s) {
  ingest::hashed_tfidf_embedder e;
  std::vector<uint32_t> want(ingest::hashed_tfidf_embedder::df_buckets, 0), buckets;
  int64_t n = 0;
  auto q = s.db().prepare("SELECT text FROM chunks");
  while (q.step()) {
    buckets.clear();
    e.df_buckets_of(q.col_text_view(0), buckets);
    for (uint32_t b : buckets) ++want[b];
    ++n;
  }
  std::vector<uint32_t> have;
  const int64_t have_n = ingest::load_df(s, have);
  if (have_n != n) ADD_FAILURE() << "embedder.df_n " << have_n << ", chunks " << n;
  if (have != want) ADD_FAILURE() << "df table differs from a recount over the chunks";
  return have_n == n && have == want;
}

}  // namespace evident::test
