#include <cmath>

#include "kernels/norm.h"

namespace evident::kernels {

void rmsnorm_residual_ref(const rmsnorm_args& a) {
  for (int r = 0; r < a.n_rows; ++r) {
    const bf16* x = a.x + std::size_t(r) * a.x_stride;
    bf16* res = a.residual ? a.residual + std::size_t(r) * a.residual_stride : nullptr;
    double ss = 0;
    for (int i = 0; i < a.dim; ++i) {
      float h = bf16_to_float(x[i]);
      if (res) h = round_bf16(h + bf16_to_float(res[i]));
      ss += double(h) * h;
    }
    const float inv = float(1.0 / std::sqrt(ss / a.dim + a.eps));
    bf16* out = a.out + std::size_t(r) * a.out_stride;
    for (int i = 0; i < a.dim; ++i) {
      float h = bf16_to_float(x[i]);
      if (res) {
        h = round_bf16(h + bf16_to_float(res[i]));
        res[i] = float_to_bf16(h);
      }
      out[i] = float_to_bf16(h * inv * (1.f + bf16_to_float(a.w[i])));
    }
  }
}

void rmsnorm_gated_ref(const rmsnorm_args& a) {
  for (int r = 0; r < a.n_rows; ++r) {
    const bf16* x = a.x + std::size_t(r) * a.x_stride;
    const bf16* z = a.z + (a.z_group > 0 ? std::size_t(r / a.z_group) * std::size_t(a.z_group_stride) +
                                               std::size_t(r % a.z_group) * std::size_t(a.z_stride)
                                         : std::size_t(r) * std::size_t(a.z_stride));
    double ss = 0;
    for (int i = 0; i < a.dim; ++i) ss += double(bf16_to_float(x[i])) * bf16_to_float(x[i]);
    const float inv = float(1.0 / std::sqrt(ss / a.dim + a.eps));
    bf16* out = a.out + std::size_t(r) * a.out_stride;
    for (int i = 0; i < a.dim; ++i) {
      const float zv = bf16_to_float(z[i]);
      out[i] = float_to_bf16(bf16_to_float(a.w[i]) * bf16_to_float(x[i]) * inv * (zv / (1.f + std::exp(-zv))));
    }
  }
}

}  // namespace evident::kernels
