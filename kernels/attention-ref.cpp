#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention.h"

namespace evident::kernels {
namespace {

// One query row of one head: softmax(q k^T * scale) v * sigmoid(gate) over positions [0, len) of sequence `seq` in
// the paged cache, KV head `hk`; fp64 throughout, output rounded to bf16. `scores` and `acc` are scratch.
void attend_row(const paged_kv_view& kv, int n_kv_heads, int D, float scale, int seq, int hk, int len, const bf16* q,
                const bf16* gate, bf16* out, std::vector<double>& scores, std::vector<double>& acc) {
  auto row = [&](const bf16* cache, int p) {
    const int blk = kv.block_tables[std::size_t(seq) * kv.max_blocks_per_seq + p / kv.block_size];
    return cache + ((std::size_t(blk) * kv.block_size + p % kv.block_size) * n_kv_heads + hk) * D;
  };
  scores.assign(std::max(len, 0), 0.0);
  double mx = -INFINITY;
  for (int p = 0; p < len; ++p) {
    const bf16* k = row(kv.k_cache, p);
    double dot = 0;
    for (int d = 0; d < D; ++d) dot += double(bf16_to_float(q[d])) * bf16_to_float(k[d]);
    scores[p] = dot * scale;
    mx = std::max(mx, scores[p]);
  }
  double sum = 0;
  for (int p = 0; p < len; ++p) sum += (scores[p] = std::exp(scores[p] - mx));
  acc.assign(D, 0.0);
  for (int p = 0; p < len; ++p) {
    const bf16* v = row(kv.v_cache, p);
    for (int d = 0; d < D; ++d) acc[d] += scores[p] * bf16_to_float(v[d]);
  }
  for (int d = 0; d < D; ++d) {
    const double o = len > 0 ? acc[d] / sum : 0.0;
    out[d] = float_to_bf16(float(o / (1.0 + std::exp(-double(bf16_to_float(gate[d]))))));
  }
}

}  // namespace

void attention_decode_ref(const attention_decode_args& a) {
  const int D = a.head_dim, group = a.n_q_heads / a.n_kv_heads;
  std::vector<double> scores, acc;
  for (int s = 0; s < a.n_seq; ++s)
    for (int h = 0; h < a.n_q_heads; ++h)
      attend_row(a.kv, a.n_kv_heads, D, a.scale, s, h / group, a.seq_lens[s],
                 a.q + std::size_t(s) * a.q_stride + std::size_t(h) * a.q_head_stride,
                 a.gate + std::size_t(s) * a.gate_stride + std::size_t(h) * a.gate_head_stride,
                 a.out + std::size_t(s) * a.out_stride + std::size_t(h) * D, scores, acc);
}

void attention_prefill_ref(const attention_prefill_args& a) {
  const int D = a.head_dim, group = a.n_q_heads / a.n_kv_heads;
  std::vector<double> scores, acc;
  for (int s = 0; s < a.n_seq; ++s) {
    const int n_new = a.cu_q[s + 1] - a.cu_q[s], ctx = a.seq_lens[s];
    for (int i = 0; i < n_new; ++i) {
      const std::size_t t = std::size_t(a.cu_q[s]) + i;
      const int len = ctx - n_new + i + 1;  // the query at position len - 1 sees positions [0, len)
      for (int h = 0; h < a.n_q_heads; ++h)
        attend_row(a.kv, a.n_kv_heads, D, a.scale, s, h / group, len,
                   a.q + t * a.q_stride + std::size_t(h) * a.q_head_stride,
                   a.gate + t * a.gate_stride + std::size_t(h) * a.gate_head_stride,
                   a.out + t * a.out_stride + std::size_t(h) * D, scores, acc);
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
