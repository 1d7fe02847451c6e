#include "kernels/embedding.h"

namespace evident::kernels {

void embedding_gather_ref(const embedding_args& a) {
  for (int t = 0; t < a.n_tokens; ++t) {
    const int id = a.ids[t];
    bf16* out = a.out + std::size_t(t) * a.out_stride;
    for (int i = 0; i < a.dim; ++i)
      out[i] = (id >= 0 && id < a.vocab) ? a.table[std::size_t(id) * a.dim + i] : bf16{};
  }
}

}  // namespace evident::kernels
