// CPU references of the gated delta rule, in fp64. Written for clarity, not speed: the tests use small shapes.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/gated-delta-rule.h"

namespace evident::kernels {
namespace {

// L2-normalises n values into out (eps inside the rsqrt, as fla's l2norm), then multiplies by `scale`.
void l2norm(const float* x, int n, double scale, double* out) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const double inv = 1.0 / std::sqrt(ss + 1e-6);
  for (int i = 0; i < n; ++i) out[i] = x[i] * inv * scale;
}

struct head_view {
  const gdn_shape& s;
  const gdn_ref_io& io;
  int kdim() const { return s.n_k_heads * s.d_k; }
  int vdim() const { return s.n_v_heads * s.d_v; }
  const float* q(int t, int hk) const { return io.q + std::size_t(t) * kdim() + std::size_t(hk) * s.d_k; }
  const float* k(int t, int hk) const { return io.k + std::size_t(t) * kdim() + std::size_t(hk) * s.d_k; }
  const float* v(int t, int hv) const { return io.v + std::size_t(t) * vdim() + std::size_t(hv) * s.d_v; }
  float* o(int t, int hv) const { return io.out + std::size_t(t) * vdim() + std::size_t(hv) * s.d_v; }
  double g(int t, int hv) const { return io.g[std::size_t(t) * s.n_v_heads + hv]; }
  double beta(int t, int hv) const { return io.beta[std::size_t(t) * s.n_v_heads + hv]; }
  std::size_t state_offset(int seq, int hv) const {
    return (std::size_t(seq) * s.n_v_heads + hv) * std::size_t(s.d_k) * s.d_v;
  }
};

void load_state(const head_view& h, int seq, int hv, std::vector<double>& S) {
  S.assign(std::size_t(h.s.d_k) * h.s.d_v, 0.0);
  if (h.io.initial_state) {
    const float* src = h.io.initial_state + h.state_offset(seq, hv);
    for (std::size_t i = 0; i < S.size(); ++i) S[i] = src[i];
  }
}

void store_state(const head_view& h, int seq, int hv, const std::vector<double>& S) {
  if (!h.io.final_state) return;
  float* dst = h.io.final_state + h.state_offset(seq, hv);
  for (std::size_t i = 0; i < S.size(); ++i) dst[i] = float(S[i]);
}

}  // namespace

void gdn_recurrent_ref(const gdn_shape& s, const gdn_ref_io& io) {
  const head_view h{s, io};
  const int dk = s.d_k, dv = s.d_v, ratio = s.n_v_heads / s.n_k_heads;
  const double scale = 1.0 / std::sqrt(double(dk));
  std::vector<double> S, q(dk), k(dk), kv(dv);
  for (int seq = 0; seq < s.n_seq; ++seq) {
    for (int hv = 0; hv < s.n_v_heads; ++hv) {
      const int hk = hv / ratio;
      load_state(h, seq, hv, S);
      for (int t = io.cu_seqlens[seq]; t < io.cu_seqlens[seq + 1]; ++t) {
        l2norm(h.q(t, hk), dk, scale, q.data());
        l2norm(h.k(t, hk), dk, 1.0, k.data());
        const double decay = std::exp(h.g(t, hv)), beta = h.beta(t, hv);
        const float* v = h.v(t, hv);
        for (auto& x : S) x *= decay;
        std::fill(kv.begin(), kv.end(), 0.0);
        for (int i = 0; i < dk; ++i)
          for (int j = 0; j < dv; ++j) kv[j] += S[std::size_t(i) * dv + j] * k[i];
        for (int j = 0; j < dv; ++j) kv[j] = beta * (v[j] - kv[j]);  // delta
        for (int i = 0; i < dk; ++i)
          for (int j = 0; j < dv; ++j) S[std::size_t(i) * dv + j] += k[i] * kv[j];
        float* o = h.o(t, hv);
        for (int j = 0; j < dv; ++j) {
          double acc = 0;
          for (int i = 0; i < dk; ++i) acc += S[std::size_t(i) * dv + j] * q[i];
          o[j] = float(acc);
        }
      }
      store_state(h, seq, hv, S);
    }
  }
}

void gdn_chunked_ref(const gdn_shape& s, const gdn_ref_io& io, int C) {
  const head_view h{s, io};
  const int dk = s.d_k, dv = s.d_v, ratio = s.n_v_heads / s.n_k_heads;
  const double scale = 1.0 / std::sqrt(double(dk));
  std::vector<double> S, Q(std::size_t(C) * dk), K(std::size_t(C) * dk), V(std::size_t(C) * dv), G(C), B(C);
  std::vector<double> T(std::size_t(C) * C), W(std::size_t(C) * dk), U(std::size_t(C) * dv), Vn(std::size_t(C) * dv);
  std::vector<double> KK(std::size_t(C) * C), QK(std::size_t(C) * C);
  for (int seq = 0; seq < s.n_seq; ++seq) {
    const int t_begin = io.cu_seqlens[seq], len = io.cu_seqlens[seq + 1] - t_begin;
    for (int hv = 0; hv < s.n_v_heads; ++hv) {
      const int hk = hv / ratio;
      load_state(h, seq, hv, S);
      for (int c0 = 0; c0 < len; c0 += C) {
        const int n = std::min(C, len - c0);
        // Padded rows (i >= n) are zero with g = 0, beta = 0, as transformers pads.
        std::fill(Q.begin(), Q.end(), 0.0);
        std::fill(K.begin(), K.end(), 0.0);
        std::fill(V.begin(), V.end(), 0.0);
        double cum = 0;
        for (int i = 0; i < C; ++i) {
          if (i < n) {
            const int t = t_begin + c0 + i;
            l2norm(h.q(t, hk), dk, scale, &Q[std::size_t(i) * dk]);
            l2norm(h.k(t, hk), dk, 1.0, &K[std::size_t(i) * dk]);
            for (int j = 0; j < dv; ++j) V[std::size_t(i) * dv + j] = h.v(t, hv)[j];
            cum += h.g(t, hv);
            B[i] = h.beta(t, hv);
          } else {
            B[i] = 0;
          }
          G[i] = cum;
        }
        for (int i = 0; i < C; ++i)
          for (int j = 0; j < C; ++j) {
            double kk = 0, qk = 0;
            for (int d = 0; d < dk; ++d) {
              kk += K[std::size_t(i) * dk + d] * K[std::size_t(j) * dk + d];
              qk += Q[std::size_t(i) * dk + d] * K[std::size_t(j) * dk + d];
            }
            KK[std::size_t(i) * C + j] = kk;
            QK[std::size_t(i) * C + j] = qk;
          }
        // T = (I + L)^-1, L = strict_lower(beta_i k_i.k_j exp(G_i - G_j)), by forward substitution row by row
        // (transformers' in-place loop).
        std::fill(T.begin(), T.end(), 0.0);
        for (int i = 0; i < C; ++i) {
          T[std::size_t(i) * C + i] = 1.0;
          for (int j = 0; j < i; ++j) {
            double acc = 0;
            for (int m = j; m < i; ++m) acc += B[i] * KK[std::size_t(i) * C + m] * std::exp(G[i] - G[m]) * T[std::size_t(m) * C + j];
            T[std::size_t(i) * C + j] = -acc;
          }
        }
        // W = T (beta exp(G) K), U = T (beta V)
        for (int i = 0; i < C; ++i) {
          for (int d = 0; d < dk; ++d) {
            double acc = 0;
            for (int m = 0; m <= i; ++m) acc += T[std::size_t(i) * C + m] * B[m] * std::exp(G[m]) * K[std::size_t(m) * dk + d];
            W[std::size_t(i) * dk + d] = acc;
          }
          for (int d = 0; d < dv; ++d) {
            double acc = 0;
            for (int m = 0; m <= i; ++m) acc += T[std::size_t(i) * C + m] * B[m] * V[std::size_t(m) * dv + d];
            U[std::size_t(i) * dv + d] = acc;
          }
        }
        // v_new = U - W S
        for (int i = 0; i < C; ++i)
          for (int j = 0; j < dv; ++j) {
            double acc = 0;
            for (int d = 0; d < dk; ++d) acc += W[std::size_t(i) * dk + d] * S[std::size_t(d) * dv + j];
            Vn[std::size_t(i) * dv + j] = U[std::size_t(i) * dv + j] - acc;
          }
        // o = (exp(G) Q) S + tril(Q K^T exp(G_i - G_j)) v_new
        for (int i = 0; i < n; ++i) {
          float* o = h.o(t_begin + c0 + i, hv);
          for (int j = 0; j < dv; ++j) {
            double acc = 0;
            for (int d = 0; d < dk; ++d) acc += Q[std::size_t(i) * dk + d] * S[std::size_t(d) * dv + j];
            acc *= std::exp(G[i]);
            for (int m = 0; m <= i; ++m) {
              acc += QK[std::size_t(i) * C + m] * std::exp(G[i] - G[m]) * Vn[std::size_t(m) * dv + j];
            }
            o[j] = float(acc);
          }
        }
        // S = exp(G_last) S + (K exp(G_last - G))^T v_new
        const double gl = G[C - 1];
        for (int d = 0; d < dk; ++d)
          for (int j = 0; j < dv; ++j) {
            double acc = std::exp(gl) * S[std::size_t(d) * dv + j];
            for (int m = 0; m < C; ++m) acc += K[std::size_t(m) * dk + d] * std::exp(gl - G[m]) * Vn[std::size_t(m) * dv + j];
            S[std::size_t(d) * dv + j] = acc;
          }
      }
      store_state(h, seq, hv, S);
    }
  }
}

}  // namespace evident::kernels
