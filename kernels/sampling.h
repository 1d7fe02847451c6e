// Sampling on the GPU. Greedy only for now: ids[r] = argmax_j logits[r][j] (the lowest index among equal maxima; NaN
// never wins). logits fp32 [n_rows, vocab] with row stride; ids int32 [n_rows].
#pragma once

#include <cstdint>

#include "kernels/status.h"

namespace evident::kernels {

struct argmax_args {
  int n_rows = 0;
  int vocab = 0;
  const float* logits = nullptr;
  std::int64_t stride = 0;
  std::int32_t* ids = nullptr;
};

status sample_greedy(const argmax_args& args, stream_t stream);
void sample_greedy_ref(const argmax_args& args);

}  // namespace evident::kernels
