// Stand-in for beir-vectors-hashed.cpp while ingest's default embedder is not part of evident_ingest.
#include "engine/base/error.h"
#include "ingest/store.h"
#include "retrieval/vectors.h"

namespace evident::retrieval {

void write_store_vectors(ingest::store& s, const vector_index_options&) {
  EV_THROW(internal, "dense vectors for store ", s.dir().string(),
           ": the default embedder (ingest::make_embedder) is not available in this build yet");
}

}  // namespace evident::retrieval
