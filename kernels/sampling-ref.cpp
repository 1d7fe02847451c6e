#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

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

namespace {

std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

constexpr double kOne = 17592186044416.0;  // 2^44: the fixed-point weight of the top candidate

}  // namespace

void sample_ref(const sample_args& a) {
  std::vector<float> x(a.vocab);
  std::vector<std::int32_t> order(a.vocab);
  std::vector<std::uint64_t> w(a.vocab);
  for (int r = 0; r < a.n_rows; ++r) {
    const float* l = a.logits + std::size_t(r) * a.stride;
    const float temp = a.temperature[r];
    if (!(temp > 0.0f)) {
      argmax_args g{1, a.vocab, l, a.stride, a.ids + r};
      sample_greedy_ref(g);
      continue;
    }
    const float inv_t = 1.0f / temp;
    for (int j = 0; j < a.vocab; ++j) x[j] = std::isnan(l[j]) ? -INFINITY : l[j] * inv_t;
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int p, int q) { return x[p] > x[q] || (x[p] == x[q] && p < q); });
    const float mx = x[order[0]];
    if (mx == -INFINITY) {  // nothing finite: the lowest id, as greedy
      a.ids[r] = 0;
      continue;
    }
    for (int i = 0; i < a.vocab; ++i) {
      const float v = x[order[i]];
      w[i] = v == mx ? std::uint64_t(kOne) : std::uint64_t(std::llrint(std::exp(double(v - mx)) * kOne));
    }
    int keep = a.vocab;
    const int k = a.top_k ? a.top_k[r] : 0;
    if (k > 0 && k < keep) keep = k;
    if (a.top_p && a.top_p[r] < 1.0f) {
      std::uint64_t z1 = 0;
      for (int i = 0; i < keep; ++i) z1 += w[i];
      std::uint64_t target = std::uint64_t(std::ceil(double(a.top_p[r]) * double(z1)));
      target = std::clamp<std::uint64_t>(target, 1, z1);
      std::uint64_t cum = 0;
      int i = 0;
      while (i < keep && cum < target) cum += w[i++];
      keep = std::max(i, 1);
    }
    if (a.min_p && a.min_p[r] > 0.0f) {
      const std::uint64_t m = std::uint64_t(std::ceil(double(a.min_p[r]) * kOne));
      int i = 1;
      while (i < keep && w[i] >= m) ++i;
      keep = i;
    }
    std::uint64_t z = 0;
    for (int i = 0; i < keep; ++i) z += w[i];
    std::uint64_t t = std::uint64_t(double(a.uniforms[r]) * double(z));
    t = std::min(t, z - 1);
    std::uint64_t cum = 0;
    int pick = keep - 1;
    for (int i = 0; i < keep; ++i) {
      cum += w[i];
      if (cum > t) {
        pick = i;
        break;
      }
    }
    a.ids[r] = order[pick];
  }
}

void fill_uniforms_ref(const uniforms_args& a) {
  for (int r = 0; r < a.n_rows; ++r) {
    const std::uint64_t h = splitmix64(a.seeds[r] ^ splitmix64(std::uint64_t(a.steps[r])));
    a.u[r] = float(h >> 40) * (1.0f / 16777216.0f);
  }
}

}  // namespace evident::kernels
