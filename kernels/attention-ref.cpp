#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention.h"

namespace evident::kernels {

void attention_decode_ref(const attention_decode_args& a) {
  const int D = a.head_dim, group = a.n_q_heads / a.n_kv_heads;
  std::vector<double> scores, acc(D);
  for (int s = 0; s < a.n_seq; ++s) {
    const int len = a.seq_lens[s];
    for (int h = 0; h < a.n_q_heads; ++h) {
      const int hk = h / group;
      const bf16* q = a.q + std::size_t(s) * a.q_stride + std::size_t(h) * a.q_head_stride;
      auto row = [&](const bf16* cache, int p) {
        const int blk = a.kv.block_tables[std::size_t(s) * a.kv.max_blocks_per_seq + p / a.kv.block_size];
        return cache + ((std::size_t(blk) * a.kv.block_size + p % a.kv.block_size) * a.n_kv_heads + hk) * D;
      };
      scores.assign(len, 0.0);
      double mx = -INFINITY;
      for (int p = 0; p < len; ++p) {
        const bf16* k = row(a.kv.k_cache, p);
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += double(bf16_to_float(q[d])) * bf16_to_float(k[d]);
        scores[p] = dot * a.scale;
        mx = std::max(mx, scores[p]);
      }
      double sum = 0;
      for (int p = 0; p < len; ++p) sum += (scores[p] = std::exp(scores[p] - mx));
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int p = 0; p < len; ++p) {
        const bf16* v = row(a.kv.v_cache, p);
        for (int d = 0; d < D; ++d) acc[d] += scores[p] * bf16_to_float(v[d]);
      }
      const bf16* g = a.gate + std::size_t(s) * a.gate_stride + std::size_t(h) * a.gate_head_stride;
      bf16* out = a.out + std::size_t(s) * a.out_stride + std::size_t(h) * D;
      for (int d = 0; d < D; ++d) {
        const double o = len > 0 ? acc[d] / sum : 0.0;
        out[d] = float_to_bf16(float(o / (1.0 + std::exp(-double(bf16_to_float(g[d]))))));
      }
    }
  }
}

void kv_cache_write_ref(const kv_write_args& a) {
  for (int t = 0; t < a.n_tokens; ++t) {
    const int slot = a.slot_mapping[t];
    if (slot < 0) continue;
    for (int h = 0; h < a.n_kv_heads; ++h)
      for (int d = 0; d < a.head_dim; ++d) {
        const std::size_t dst = (std::size_t(slot) * a.n_kv_heads + h) * a.head_dim + d;
        a.kv.k_cache[dst] = a.k[std::size_t(t) * a.k_stride + std::size_t(h) * a.head_dim + d];
        a.kv.v_cache[dst] = a.v[std::size_t(t) * a.v_stride + std::size_t(h) * a.head_dim + d];
      }
  }
}

}  // namespace evident::kernels

namespace evident::kernels {

void attention_prefill_ref(const attention_prefill_args& a) {
  const int D = a.head_dim, group = a.n_q_heads / a.n_kv_heads;
  std::vector<double> scores, acc(D);
  for (int s = 0; s < a.n_seq; ++s) {
    const int n_new = a.cu_q[s + 1] - a.cu_q[s], ctx = a.seq_lens[s];
    for (int i = 0; i < n_new; ++i) {
      const std::size_t t = std::size_t(a.cu_q[s]) + i;
      const int len = ctx - n_new + i + 1;  // positions [0, len)
      for (int h = 0; h < a.n_q_heads; ++h) {
        const int hk = h / group;
        const bf16* q = a.q + t * a.q_stride + std::size_t(h) * a.q_head_stride;
        auto row = [&](const bf16* cache, int p) {
          const int blk = a.kv.block_tables[std::size_t(s) * a.kv.max_blocks_per_seq + p / a.kv.block_size];
          return cache + ((std::size_t(blk) * a.kv.block_size + p % a.kv.block_size) * a.n_kv_heads + hk) * D;
        };
        scores.assign(std::max(len, 0), 0.0);
        double mx = -INFINITY;
        for (int p = 0; p < len; ++p) {
          const bf16* k = row(a.kv.k_cache, p);
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += double(bf16_to_float(q[d])) * bf16_to_float(k[d]);
          scores[p] = dot * a.scale;
          mx = std::max(mx, scores[p]);
        }
        double sum = 0;
        for (int p = 0; p < len; ++p) sum += (scores[p] = std::exp(scores[p] - mx));
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int p = 0; p < len; ++p) {
          const bf16* v = row(a.kv.v_cache, p);
          for (int d = 0; d < D; ++d) acc[d] += scores[p] * bf16_to_float(v[d]);
        }
        const bf16* g = a.gate + t * a.gate_stride + std::size_t(h) * a.gate_head_stride;
        bf16* out = a.out + t * a.out_stride + std::size_t(h) * D;
        for (int d = 0; d < D; ++d) {
          const double o = len > 0 ? acc[d] / sum : 0.0;
          out[d] = float_to_bf16(float(o / (1.0 + std::exp(-double(bf16_to_float(g[d]))))));
        }
      }
    }
  }
}

}  // namespace evident::kernels
