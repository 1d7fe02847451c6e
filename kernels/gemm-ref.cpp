#include "kernels/gemm.h"

namespace evident::kernels {

void gemm_bf16_ref(const gemm_args& a) {
  for (int i = 0; i < a.m; ++i)
    for (int j = 0; j < a.n; ++j) {
      double acc = 0;
      for (int p = 0; p < a.k; ++p)
        acc += double(bf16_to_float(a.x[std::size_t(i) * a.ldx + p])) * bf16_to_float(a.w[std::size_t(j) * a.ldw + p]);
      if (a.out_type == gemm_out::bf16)
        static_cast<bf16*>(a.y)[std::size_t(i) * a.ldy + j] = float_to_bf16(float(acc));
      else
        static_cast<float*>(a.y)[std::size_t(i) * a.ldy + j] = float(acc);
    }
}

}  // namespace evident::kernels
