#include <cmath>

#include "kernels/rope.h"

namespace evident::kernels {

void rope_ref(const rope_args& a) {
  const int half = a.rotary_dim / 2;
  for (int t = 0; t < a.n_tokens; ++t) {
    const float pos = float(a.positions[t]);
    for (int h = 0; h < a.n_heads; ++h) {
      bf16* x = a.x + std::size_t(t) * a.token_stride + std::size_t(h) * a.head_stride;
      for (int i = 0; i < half; ++i) {
        const float inv_freq = 1.f / std::pow(a.theta, float(2 * i) / float(a.rotary_dim));
        const float ang = pos * inv_freq;
        const double c = std::cos(double(ang)), s = std::sin(double(ang));
        const double x1 = bf16_to_float(x[i]), x2 = bf16_to_float(x[i + half]);
        x[i] = float_to_bf16(float(x1 * c - x2 * s));
        x[i + half] = float_to_bf16(float(x2 * c + x1 * s));
      }
    }
  }
}

}  // namespace evident::kernels
