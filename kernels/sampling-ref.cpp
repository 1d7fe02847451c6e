#include "kernels/sampling.h"

namespace evident::kernels {

void sample_greedy_ref(const argmax_args& a) {
  for (int r = 0; r < a.n_rows; ++r) {
    const float* l = a.logits + std::size_t(r) * a.stride;
    int best = 0;
    for (int j = 1; j < a.vocab; ++j)
      if (l[j] > l[best] || (l[best] != l[best] && l[j] == l[j])) best = j;
    a.ids[r] = best;
  }
}

}  // namespace evident::kernels
