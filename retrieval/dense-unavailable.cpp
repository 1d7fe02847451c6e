// Stand-in for dense.cpp while ingest's default embedder is not part of evident_ingest (see retrieval/CMakeLists.txt).
#include "engine/base/error.h"
#include "retrieval/retriever.h"

namespace evident::retrieval {

std::unique_ptr<retriever_i> make_dense(const std::filesystem::path& store_dir, const dense_options&) {
  EV_THROW(internal, "dense retrieval over ", store_dir.string(),
           ": this build has no default embedder (ingest::make_embedder) yet");
}

}  // namespace evident::retrieval
