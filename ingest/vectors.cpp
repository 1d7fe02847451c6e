#include "ingest/vectors.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_io.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "engine/base/error.h"
#include "engine/base/log.h"
#include "ingest/embedder.h"
#include "ingest/store.h"

namespace evident::ingest {
namespace {

using idx_t = faiss::Index::idx_t;

faiss::IndexIDMap2* as_map(faiss::Index* i) { return dynamic_cast<faiss::IndexIDMap2*>(i); }
const faiss::IndexIDMap2* as_map(const faiss::Index* i) { return dynamic_cast<const faiss::IndexIDMap2*>(i); }

std::unique_ptr<faiss::Index> make_flat(int dim) {
  auto* m = new faiss::IndexIDMap2(new faiss::IndexFlatIP(dim));
  m->own_fields = true;
  return std::unique_ptr<faiss::Index>(m);
}

bool is_flat(const faiss::Index* i) {
  auto* m = as_map(i);
  return m && dynamic_cast<const faiss::IndexFlat*>(m->index) != nullptr;
}

// The flat form of any IndexIDMap2 (reconstructs vectors from an HNSW form).
std::unique_ptr<faiss::Index> to_flat(const faiss::IndexIDMap2& m) {
  auto flat = make_flat(static_cast<int>(m.d));
  const idx_t n = m.ntotal;
  if (n > 0) {
    std::vector<float> v(static_cast<size_t>(n) * m.d);
    m.index->reconstruct_n(0, n, v.data());
    flat->add_with_ids(n, v.data(), m.id_map.data());
  }
  return flat;
}

void fsync_path(const std::filesystem::path& p, bool dir) {
  int fd = ::open(p.c_str(), dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

vector_index::vector_index(int dim) : dim_(dim), index_(make_flat(dim)) {}
vector_index::~vector_index() = default;

int64_t vector_index::size() const { return index_->ntotal; }

void vector_index::add(int64_t n, const int64_t* ids, const float* vecs) {
  EV_ASSERT(is_flat(index_.get()), "vector_index::add needs the flat form (open with for_write)");
  if (n > 0) index_->add_with_ids(n, vecs, ids);
}

void vector_index::remove(const std::vector<int64_t>& ids) {
  if (ids.empty()) return;
  EV_ASSERT(is_flat(index_.get()), "vector_index::remove needs the flat form (open with for_write)");
  faiss::IDSelectorBatch sel(ids.size(), ids.data());
  index_->remove_ids(sel);
}

void vector_index::search(const float* query, int k, float* scores, int64_t* ids) const {
  std::vector<idx_t> labels(static_cast<size_t>(k));
  index_->search(1, query, k, scores, labels.data());
  for (int i = 0; i < k; ++i) ids[i] = labels[static_cast<size_t>(i)];
}

std::vector<int64_t> vector_index::ids() const {
  auto* m = as_map(index_.get());
  std::vector<int64_t> out(m->id_map.begin(), m->id_map.end());
  std::sort(out.begin(), out.end());
  return out;
}

void vector_index::save(const std::filesystem::path& file, int64_t hnsw_above) const {
  const faiss::Index* to_write = index_.get();
  std::unique_ptr<faiss::Index> hnsw;
  if (index_->ntotal > hnsw_above && is_flat(index_.get())) {
    auto* m = as_map(index_.get());
    auto* h = new faiss::IndexHNSWFlat(dim_, 32, faiss::METRIC_INNER_PRODUCT);
    auto* hm = new faiss::IndexIDMap2(h);
    hm->own_fields = true;
    hnsw.reset(hm);
    auto* flat = static_cast<const faiss::IndexFlat*>(m->index);
    hm->add_with_ids(m->ntotal, flat->get_xb(), m->id_map.data());
    to_write = hnsw.get();
  }
  std::filesystem::path tmp = file;
  tmp += ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  EV_THROW_IF_NOT_KIND(f != nullptr, io, "cannot write ", tmp.string());
  try {
    faiss::write_index(to_write, f);
  } catch (const faiss::FaissException& e) {
    std::fclose(f);
    EV_THROW(io, "cannot write vector index ", tmp.string(), ": ", e.what());
  }
  bool ok = std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  ok = (std::fclose(f) == 0) && ok;
  EV_THROW_IF_NOT_KIND(ok, io, "cannot write ", tmp.string(), " (disk full?)");
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  EV_THROW_IF_NOT_KIND(!ec, io, "cannot rename ", tmp.string(), " to ", file.string(), ": ", ec.message());
  fsync_path(file.parent_path().empty() ? "." : file.parent_path(), true);
}

std::unique_ptr<vector_index> vector_index::open(store& s, const embedder_i& e, const options& opt,
                                                 vector_repair* report) {
  vector_repair rep;
  const int dim = e.dim();
  const auto file = s.vectors_path();
  {
    std::error_code ec;
    auto tmp = file;
    tmp += ".tmp";
    if (opt.save_repair) std::filesystem::remove(tmp, ec);
  }
  auto vi = std::make_unique<vector_index>(dim);
  if (std::filesystem::exists(file)) {
    try {
      std::unique_ptr<faiss::Index> idx(faiss::read_index(file.c_str()));
      auto* m = as_map(idx.get());
      if (m && m->d == dim) {
        vi->index_ = (opt.for_write && !is_flat(idx.get())) ? to_flat(*m) : std::move(idx);
      } else {
        log::warn("vector index ", file.string(), " has the wrong type or dimension; rebuilding it");
        rep.rebuilt = true;
      }
    } catch (const std::exception& ex) {
      log::warn("vector index ", file.string(), " is unreadable (", ex.what(), "); rebuilding it");
      rep.rebuilt = true;
    }
  } else if (s.chunk_count() > 0) {
    rep.rebuilt = true;
  }

  if (opt.repair) {
    std::vector<int64_t> have = vi->ids();
    std::vector<int64_t> want;
    {
      auto q = s.db().prepare("SELECT id FROM chunks ORDER BY id");
      while (q.step()) want.push_back(q.col_int(0));
    }
    std::vector<int64_t> extra, missing;
    std::set_difference(have.begin(), have.end(), want.begin(), want.end(), std::back_inserter(extra));
    std::set_difference(want.begin(), want.end(), have.begin(), have.end(), std::back_inserter(missing));
    if (!extra.empty() || !missing.empty()) {
      if (!is_flat(vi->index_.get())) vi->index_ = to_flat(*as_map(vi->index_.get()));
      vi->remove(extra);
      rep.removed = static_cast<int64_t>(extra.size());
      // Re-embed missing chunks in batches, reading their stored text.
      auto q = s.db().prepare("SELECT text FROM chunks WHERE id = ?");
      const size_t batch = 256;
      std::vector<std::string> texts;
      std::vector<float> vecs;
      for (size_t i = 0; i < missing.size(); i += batch) {
        size_t n = std::min(batch, missing.size() - i);
        texts.clear();
        for (size_t j = 0; j < n; ++j) {
          q.bind(1, missing[i + j]);
          texts.push_back(q.step() ? q.col_text(0) : std::string());
          q.reset();
        }
        std::vector<std::string_view> views(texts.begin(), texts.end());
        vecs.resize(n * static_cast<size_t>(dim));
        e.embed(views, vecs.data());
        vi->add(static_cast<int64_t>(n), missing.data() + i, vecs.data());
      }
      rep.added = static_cast<int64_t>(missing.size());
    }
    if (rep.changed() && opt.save_repair) vi->save(file);
  }
  if (opt.for_write && !is_flat(vi->index_.get())) vi->index_ = to_flat(*as_map(vi->index_.get()));
  if (report) *report = rep;
  return vi;
}

}  // namespace evident::ingest
