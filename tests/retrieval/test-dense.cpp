// Dense retriever over an IVF-Flat index: its own list scan (retrieval/dense.cpp, SIMD inner products) must return
// what FAISS's IndexIVFFlat::search returns for the same nprobe (FAISS is the independent reference here).
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "ingest/embedder.h"
#include "ingest/store.h"
#include "retrieval/retriever.h"
#include "retrieval/vectors.h"
#include "tests/retrieval/store-fixture.h"
#include "tests/test-util.h"

namespace evident::retrieval {

TEST(Dense, IvfFlatScanMatchesFaiss) {
  auto dir = test::scratch_dir("retrieval-dense-ivf");
  // 120 one-chunk documents of 12 words each from a 40-word vocabulary (a fixed LCG: distinct texts, shared words).
  const char* vocab[] = {"alpha",  "bravo",  "charlie", "delta",  "echo",    "foxtrot",  "golf",    "hotel",
                         "india",  "juliet", "kilo",    "lima",   "mike",    "november", "oscar",   "papa",
                         "quebec", "romeo",  "sierra",  "tango",  "uniform", "victor",   "whiskey", "xray",
                         "yankee", "zulu",   "amber",   "basalt", "cobalt",  "dune",     "ember",   "fjord",
                         "garnet", "harbor", "indigo",  "jasper", "krypton", "lagoon",   "magma",   "nectar"};
  uint32_t x = 12345;
  std::vector<test::fixture_doc> docs;
  for (int d = 0; d < 120; ++d) {
    std::string text;
    for (int w = 0; w < 12; ++w) {
      x = x * 1664525u + 1013904223u;
      if (w) text += ' ';
      text += vocab[(x >> 16) % 40];
    }
    docs.push_back({"d" + std::to_string(d) + ".txt", "t", {text}});
  }
  test::make_store(dir, docs);
  {
    ingest::store s(dir);
    vector_index_options vo;
    vo.kind = "ivf";
    vo.ivf_lists = 8;
    write_store_vectors(s, vo);
  }
  ingest::store s(dir, ingest::open_mode::read_only);
  std::unique_ptr<faiss::Index> ref(faiss::read_index(s.vectors_path().string().c_str()));
  ASSERT_NE(dynamic_cast<faiss::IndexIVF*>(ref.get()), nullptr);
  auto emb = ingest::make_embedder(s);
  const std::vector<std::string> queries = {"alpha bravo", "zulu magma nectar", "harbor", "delta echo foxtrot golf",
                                            "krypton lagoon indigo"};
  for (int nprobe : {1, 3, 8}) {
    dense_options o;
    o.ivf_nprobe = nprobe;
    auto r = make_dense(dir, o);
    faiss::SearchParametersIVF p;
    p.nprobe = static_cast<size_t>(nprobe);
    for (const auto& q : queries) {
      const int k = 10;
      std::vector<float> v(emb->dim());
      emb->embed_query(q, v.data());
      std::vector<float> dist(k);
      std::vector<faiss::Index::idx_t> ids(k);
      ref->search(1, v.data(), k, dist.data(), ids.data(), &p);
      auto hits = r->search(q, k);
      size_t expect = 0;
      for (auto id : ids) expect += id >= 0;
      ASSERT_EQ(hits.size(), expect) << q << " nprobe " << nprobe;
      for (size_t i = 0; i < hits.size(); ++i) {
        // Float sums of 384 products in another order: differences are a few ulps of values <= 1; 1e-5 is far
        // above that and far below the gaps between distinct scores. Equal scores may come in either order.
        EXPECT_NEAR(hits[i].score, dist[i], 1e-5) << q << " nprobe " << nprobe << " rank " << i;
        if (std::fabs(hits[i].score - dist[i]) < 1e-5 && (i == 0 || std::fabs(dist[i] - dist[i - 1]) > 1e-5) &&
            (i + 1 == hits.size() || std::fabs(dist[i] - dist[i + 1]) > 1e-5)) {
          EXPECT_EQ(hits[i].chunk_id, ids[i]) << q << " nprobe " << nprobe << " rank " << i;
        }
      }
    }
  }
}

}  // namespace evident::retrieval
