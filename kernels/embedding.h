// Embedding gather: out[t] = table[ids[t]].
//     table bf16 [vocab, dim] (row-major, contiguous)   ids int32 [n_tokens]   out bf16 [n_tokens, dim], row stride
// An id outside [0, vocab) yields a zero row (the CUDA kernel cannot report per element; callers validate ids).
// CUDA requires dim % 8 == 0 and 16-byte aligned table/out rows.
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/status.h"

namespace evident::kernels {

struct embedding_args {
  int n_tokens = 0;
  int vocab = 0;
  int dim = 0;
  const bf16* table = nullptr;
  const std::int32_t* ids = nullptr;  // device memory for CUDA
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
};

status embedding_gather(const embedding_args& args, stream_t stream);
void embedding_gather_ref(const embedding_args& args);

}  // namespace evident::kernels
