#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/moe.h"

namespace evident::kernels {

void moe_router_ref(const moe_router_args& a) {
  std::vector<double> p(a.n_experts);
  std::vector<int> order(a.n_experts);
  for (int t = 0; t < a.n_tokens; ++t) {
    const float* l = a.logits + std::size_t(t) * a.logits_stride;
    double mx = -INFINITY, sum = 0;
    for (int e = 0; e < a.n_experts; ++e) mx = std::max(mx, double(l[e]));
    for (int e = 0; e < a.n_experts; ++e) sum += (p[e] = std::exp(double(l[e]) - mx));
    for (int e = 0; e < a.n_experts; ++e) p[e] /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return p[x] > p[y]; });
    double top = 0;
    for (int j = 0; j < a.top_k; ++j) top += p[order[j]];
    for (int j = 0; j < a.top_k; ++j) {
      a.ids[std::size_t(t) * a.top_k + j] = order[j];
      a.weights[std::size_t(t) * a.top_k + j] = float(a.renormalize ? p[order[j]] / top : p[order[j]]);
    }
  }
}

}  // namespace evident::kernels
