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

namespace evident::kernels {
namespace {
double silu(double g) { return g / (1.0 + std::exp(-g)); }
double sigmoid(double g) { return 1.0 / (1.0 + std::exp(-g)); }
}  // namespace

void moe_permute_ref(const moe_permute_args& a) {
  const int n = a.n_tokens * a.top_k;
  std::vector<int> count(a.n_experts, 0);
  for (int i = 0; i < n; ++i)
    if (a.ids[i] >= 0 && a.ids[i] < a.n_experts) ++count[a.ids[i]];
  a.expert_offsets[0] = 0;
  for (int e = 0; e < a.n_experts; ++e) a.expert_offsets[e + 1] = a.expert_offsets[e] + count[e];
  std::vector<int> next(a.expert_offsets, a.expert_offsets + a.n_experts);
  for (int i = 0; i < n; ++i) {  // (t, k) in increasing order: stable by token
    const int e = a.ids[i];
    if (e < 0 || e >= a.n_experts) {
      a.token_row[i] = -1;
      continue;
    }
    const int r = next[e]++;
    a.row_token[r] = i / a.top_k;
    a.token_row[i] = r;
  }
}

void moe_gate_up_swiglu_ref(const moe_gate_up_args& a) {
  const std::size_t H = a.hidden, I = a.inter;
  for (int e = 0; e < a.n_experts; ++e)
    for (int r = a.expert_offsets[e]; r < a.expert_offsets[e + 1]; ++r) {
      const bf16* x = a.x + std::size_t(a.row_token[r]) * a.x_stride;
      const bf16* w = a.w_gate_up + std::size_t(e) * 2 * I * H;
      for (std::size_t j = 0; j < I; ++j) {
        double g = 0, u = 0;
        for (std::size_t k = 0; k < H; ++k) {
          const double xv = bf16_to_float(x[k]);
          g += xv * bf16_to_float(w[j * H + k]);
          u += xv * bf16_to_float(w[(I + j) * H + k]);
        }
        a.h[std::size_t(r) * a.h_stride + j] = float_to_bf16(float(silu(g) * u));
      }
    }
}

void moe_down_ref(const moe_down_args& a) {
  const std::size_t H = a.hidden, I = a.inter;
  for (int e = 0; e < a.n_experts; ++e)
    for (int r = a.expert_offsets[e]; r < a.expert_offsets[e + 1]; ++r) {
      const bf16* h = a.h + std::size_t(r) * a.h_stride;
      const bf16* w = a.w_down + std::size_t(e) * H * I;
      for (std::size_t j = 0; j < H; ++j) {
        double acc = 0;
        for (std::size_t k = 0; k < I; ++k) acc += double(bf16_to_float(h[k])) * bf16_to_float(w[j * I + k]);
        if (a.y_type == gemm_out::fp32)
          static_cast<float*>(a.y)[std::size_t(r) * a.y_stride + j] = float(acc);
        else
          static_cast<bf16*>(a.y)[std::size_t(r) * a.y_stride + j] = float_to_bf16(float(acc));
      }
    }
}

void moe_combine_ref(const moe_combine_args& a) {
  for (int t = 0; t < a.n_tokens; ++t)
    for (int j = 0; j < a.hidden; ++j) {
      double acc = 0;
      for (int k = 0; k < a.top_k; ++k) {
        const int r = a.token_row[std::size_t(t) * a.top_k + k];
        if (r < 0) continue;
        const std::size_t at = std::size_t(r) * a.y_stride + j;
        const double y = a.y_type == gemm_out::fp32 ? double(static_cast<const float*>(a.y)[at])
                                                    : double(bf16_to_float(static_cast<const bf16*>(a.y)[at]));
        acc += double(a.weights[std::size_t(t) * a.top_k + k]) * y;
      }
      if (a.shared)
        acc += sigmoid(a.shared_gate_logit[std::size_t(t) * a.shared_gate_stride]) *
               bf16_to_float(a.shared[std::size_t(t) * a.shared_stride + j]);
      if (a.residual) acc += bf16_to_float(a.residual[std::size_t(t) * a.residual_stride + j]);
      a.out[std::size_t(t) * a.out_stride + j] = float_to_bf16(float(acc));
    }
}

void swiglu_ref(const swiglu_args& a) {
  for (int r = 0; r < a.n_rows; ++r)
    for (int j = 0; j < a.inter; ++j) {
      const double g = bf16_to_float(a.in[std::size_t(r) * a.in_stride + j]);
      const double u = bf16_to_float(a.in[std::size_t(r) * a.in_stride + a.inter + j]);
      a.out[std::size_t(r) * a.out_stride + j] = float_to_bf16(float(silu(g) * u));
    }
}

}  // namespace evident::kernels
