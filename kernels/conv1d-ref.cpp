#include <cmath>
#include <vector>

#include "kernels/conv1d.h"

namespace evident::kernels {

void conv1d_ref(const conv1d_args& a) {
  const int K = a.kernel, C = a.n_channels;
  std::vector<std::int32_t> cu(a.n_seq + 1);
  if (a.cu_seqlens) {
    for (int s = 0; s <= a.n_seq; ++s) cu[s] = a.cu_seqlens[s];
  } else {
    for (int s = 0; s <= a.n_seq; ++s) cu[s] = s;  // decode: one token per sequence
  }
  std::vector<float> hist;  // [K-1 + len] per channel: history then inputs
  for (int s = 0; s < a.n_seq; ++s) {
    const int slot = a.state_slots ? a.state_slots[s] : s;
    const int len = cu[s + 1] - cu[s];
    bf16* st = a.state ? a.state + std::size_t(slot) * (K - 1) * C : nullptr;
    for (int c = 0; c < C; ++c) {
      hist.assign(std::size_t(K - 1 + len), 0.f);
      if (st && a.read_state)
        for (int p = 0; p < K - 1; ++p) hist[p] = bf16_to_float(st[std::size_t(p) * C + c]);
      for (int t = 0; t < len; ++t) hist[K - 1 + t] = bf16_to_float(a.x[std::size_t(cu[s] + t) * a.x_stride + c]);
      for (int t = 0; t < len; ++t) {
        float acc = 0.f;
        for (int j = 0; j < K; ++j) acc += bf16_to_float(a.w[std::size_t(c) * K + j]) * hist[t + j];
        a.out[std::size_t(cu[s] + t) * a.out_stride + c] = float_to_bf16(acc / (1.f + std::exp(-acc)));
      }
      if (st)
        for (int p = 0; p < K - 1; ++p) st[std::size_t(p) * C + c] = float_to_bf16(hist[len + p]);
    }
  }
}

}  // namespace evident::kernels
