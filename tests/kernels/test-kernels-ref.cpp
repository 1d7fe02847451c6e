// Unit tests of the CPU references: independent formulations of the same op must agree (chunked gated delta rule ==
// token-by-token recurrence; conv1d prompt pass split at any point == one pass == decode steps).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "tests/kernels/compare.h"
#include "kernels/attention.h"
#include "kernels/bf16.h"
#include "kernels/conv1d.h"
#include "kernels/gated-delta-rule.h"
#include "kernels/moe.h"
#include "kernels/norm.h"
#include "kernels/sampling.h"

namespace evident::kernels {
namespace {

std::vector<float> uniform(std::size_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

using evident::test::rel_l2;

struct gdn_case {
  int n_k_heads, n_v_heads, d_k, d_v;
  std::vector<int> lengths;
  bool initial_state;
};

void PrintTo(const gdn_case& c, std::ostream* os) {
  *os << c.n_k_heads << "/" << c.n_v_heads << " heads, d_k " << c.d_k << ", d_v " << c.d_v << ", " << c.lengths.size()
      << " sequences";
}

class GdnRefTest : public ::testing::TestWithParam<gdn_case> {};

// Both references compute in fp64 and round only their outputs to fp32, so they must agree to fp32 rounding
// (rel-L2 1e-6: about 10 fp32 ulps, far below any algebra mistake, which shows as O(1)).
TEST_P(GdnRefTest, ChunkedEqualsRecurrent) {
  const gdn_case& c = GetParam();
  std::mt19937 rng(1234);
  gdn_shape s;
  s.n_k_heads = c.n_k_heads, s.n_v_heads = c.n_v_heads, s.d_k = c.d_k, s.d_v = c.d_v;
  s.n_seq = int(c.lengths.size());
  std::vector<std::int32_t> cu(1, 0);
  for (int len : c.lengths) cu.push_back(cu.back() + len);
  s.n_tokens = cu.back();
  const std::size_t T = s.n_tokens;
  auto q = uniform(T * s.n_k_heads * s.d_k, -1, 1, rng), k = uniform(T * s.n_k_heads * s.d_k, -1, 1, rng);
  auto v = uniform(T * s.n_v_heads * s.d_v, -1, 1, rng);
  auto g = uniform(T * s.n_v_heads, -2.f, -0.01f, rng), beta = uniform(T * s.n_v_heads, 0.05f, 0.95f, rng);
  const std::size_t state_n = std::size_t(s.n_seq) * s.n_v_heads * s.d_k * s.d_v;
  auto init = uniform(state_n, -0.5f, 0.5f, rng);
  std::vector<float> out_r(T * s.n_v_heads * s.d_v, NAN), out_c(out_r.size(), NAN);
  std::vector<float> fin_r(state_n, NAN), fin_c(state_n, NAN);
  gdn_ref_io io{q.data(), k.data(), v.data(), g.data(), beta.data(), cu.data(),
                c.initial_state ? init.data() : nullptr, fin_r.data(), out_r.data()};
  gdn_recurrent_ref(s, io);
  io.final_state = fin_c.data();
  io.out = out_c.data();
  gdn_chunked_ref(s, io, 64);
  EXPECT_LT(rel_l2(out_c, out_r), 1e-6);
  EXPECT_LT(rel_l2(fin_c, fin_r), 1e-6);
  // A small chunk exercises many chunk boundaries on short inputs.
  io.out = out_c.data();
  gdn_chunked_ref(s, io, 16);
  EXPECT_LT(rel_l2(out_c, out_r), 1e-6);
  EXPECT_LT(rel_l2(fin_c, fin_r), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GdnRefTest,
                         ::testing::Values(gdn_case{1, 1, 16, 8, {1}, false}, gdn_case{1, 2, 16, 8, {63}, true},
                                           gdn_case{2, 4, 8, 16, {64}, false}, gdn_case{2, 4, 8, 16, {65}, true},
                                           gdn_case{1, 2, 32, 16, {130, 0, 7, 64}, true},
                                           gdn_case{1, 2, 128, 128, {70}, true}));

// The recurrence against a hand-computed case: d_k = d_v = 1 makes q, k = +-1 after normalisation.
TEST(GdnRef, ScalarHandComputed) {
  gdn_shape s;
  s.n_k_heads = s.n_v_heads = 1, s.d_k = s.d_v = 1, s.n_seq = 1, s.n_tokens = 2;
  const float q[] = {2.f, -3.f}, k[] = {1.f, 0.5f}, v[] = {3.f, -1.f}, g[] = {-0.5f, -1.f}, beta[] = {0.5f, 0.25f};
  const std::int32_t cu[] = {0, 2};
  const float init[] = {2.f};
  float out[2], fin[1];
  gdn_recurrent_ref(s, {q, k, v, g, beta, cu, init, fin, out});
  // |k| = 1 (eps 1e-6 inside the rsqrt perturbs ~5e-7), scale 1/sqrt(1) = 1.
  double S = 2.0 * std::exp(-0.5);
  S += 0.5 * (3.0 - S);
  EXPECT_NEAR(out[0], S, 1e-5);
  S *= std::exp(-1.0);
  S += 0.25 * (-1.0 - S);
  EXPECT_NEAR(out[1], -S, 1e-5);
  EXPECT_NEAR(fin[0], S, 1e-5);
}

// conv1d: a prompt processed in two pieces (state carried) equals one pass; decode steps equal the prompt pass.
TEST(Conv1dRef, SplitAndDecodeEqualOnePass) {
  std::mt19937 rng(7);
  const int C = 37, K = 4, L = 11;
  std::vector<bf16> x(std::size_t(L) * C), w(std::size_t(C) * K);
  for (auto& e : x) e = float_to_bf16(std::uniform_real_distribution<float>(-2, 2)(rng));
  for (auto& e : w) e = float_to_bf16(std::uniform_real_distribution<float>(-1, 1)(rng));
  std::vector<bf16> out_full(x.size()), out_split(x.size()), out_dec(x.size());
  std::vector<bf16> st_full(std::size_t(K - 1) * C), st_split(st_full.size()), st_dec(st_full.size());
  conv1d_args a;
  a.n_channels = C, a.kernel = K, a.x_stride = C, a.out_stride = C, a.w = w.data();
  const std::int32_t cu_full[] = {0, L};
  a.n_tokens = L, a.n_seq = 1, a.cu_seqlens = cu_full, a.x = x.data(), a.out = out_full.data(), a.state = st_full.data();
  conv1d_ref(a);
  for (int split : {1, 2, 5, 10}) {
    const std::int32_t cu1[] = {0, split}, cu2[] = {0, L - split};
    a.n_tokens = split, a.cu_seqlens = cu1, a.x = x.data(), a.out = out_split.data(), a.state = st_split.data();
    a.read_state = false;
    conv1d_ref(a);
    a.n_tokens = L - split, a.cu_seqlens = cu2, a.x = x.data() + std::size_t(split) * C;
    a.out = out_split.data() + std::size_t(split) * C, a.read_state = true;
    conv1d_ref(a);
    for (std::size_t i = 0; i < x.size(); ++i) ASSERT_EQ(out_split[i].bits, out_full[i].bits) << "split " << split;
    for (std::size_t i = 0; i < st_full.size(); ++i) ASSERT_EQ(st_split[i].bits, st_full[i].bits);
  }
  std::fill(st_dec.begin(), st_dec.end(), bf16{});
  for (int t = 0; t < L; ++t) {
    a.n_tokens = 1, a.n_seq = 1, a.cu_seqlens = nullptr, a.read_state = true;
    a.x = x.data() + std::size_t(t) * C, a.out = out_dec.data() + std::size_t(t) * C, a.state = st_dec.data();
    conv1d_ref(a);
  }
  for (std::size_t i = 0; i < x.size(); ++i) ASSERT_EQ(out_dec[i].bits, out_full[i].bits);
  for (std::size_t i = 0; i < st_full.size(); ++i) ASSERT_EQ(st_dec[i].bits, st_full[i].bits);
}

// Zero-centred RMSNorm with w = 0 has unit RMS; the residual is updated to x + residual.
TEST(NormRef, UnitRmsAndResidual) {
  const int D = 256;
  std::vector<bf16> x(D), res(D), w(D, float_to_bf16(0.f)), out(D);
  for (int i = 0; i < D; ++i) x[i] = float_to_bf16(0.1f * float(i % 17) - 0.7f), res[i] = float_to_bf16(0.25f);
  rmsnorm_args a;
  a.n_rows = 1, a.dim = D, a.x = x.data(), a.x_stride = D, a.residual = res.data(), a.residual_stride = D;
  a.w = w.data(), a.out = out.data(), a.out_stride = D;
  rmsnorm_residual_ref(a);
  double ss = 0;
  for (int i = 0; i < D; ++i) {
    EXPECT_EQ(res[i].bits, float_to_bf16(bf16_to_float(x[i]) + 0.25f).bits);
    ss += double(bf16_to_float(out[i])) * bf16_to_float(out[i]);
  }
  EXPECT_NEAR(std::sqrt(ss / D), 1.0, 4e-3);  // bf16 output rounding: 2^-9 relative per element
}

// Attention with a single position returns that position's value times sigmoid(gate), whatever the scores.
TEST(AttentionRef, SinglePositionIsGatedValue) {
  const int D = 256;
  std::vector<bf16> kc(D), vc(D), q(D), gate(D), out(D);
  for (int d = 0; d < D; ++d) {
    kc[d] = float_to_bf16(0.5f), vc[d] = float_to_bf16(float(d % 7) - 3.f), q[d] = float_to_bf16(1.f);
    gate[d] = float_to_bf16(float(d % 5) - 2.f);
  }
  const std::int32_t table[] = {0}, lens[] = {1};
  attention_decode_args a;
  a.n_seq = 1, a.n_q_heads = 1, a.n_kv_heads = 1, a.head_dim = D, a.max_seq_len = 1;
  a.q = q.data(), a.q_stride = D, a.q_head_stride = D, a.gate = gate.data(), a.gate_stride = D, a.gate_head_stride = D;
  a.seq_lens = lens, a.kv.k_cache = kc.data(), a.kv.v_cache = vc.data(), a.kv.n_blocks = 1, a.kv.block_size = 1;
  a.kv.block_tables = table, a.kv.max_blocks_per_seq = 1, a.out = out.data(), a.out_stride = D;
  attention_decode_ref(a);
  for (int d = 0; d < D; ++d) {
    const float g = bf16_to_float(gate[d]);
    EXPECT_EQ(out[d].bits, float_to_bf16(float(double(bf16_to_float(vc[d])) / (1.0 + std::exp(-double(g))))).bits);
  }
}

// Router: top-2 of softmax([0, ln 3, ln 2, -inf-ish]) = experts 1 (p 3/6) and 2 (p 2/6); renormalised 0.6 / 0.4.
TEST(MoeRef, RouterTopKRenormalised) {
  const float logits[] = {0.f, std::log(3.f), std::log(2.f), -80.f};
  std::int32_t ids[2];
  float w[2];
  moe_router_args a;
  a.n_tokens = 1, a.n_experts = 4, a.top_k = 2, a.logits = logits, a.logits_stride = 4, a.ids = ids, a.weights = w;
  moe_router_ref(a);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 2);
  EXPECT_NEAR(w[0], 0.6, 1e-6);
  EXPECT_NEAR(w[1], 0.4, 1e-6);
  a.renormalize = false;
  moe_router_ref(a);
  EXPECT_NEAR(w[0], 0.5, 1e-6);
}

TEST(SamplingRef, GreedyPicksFirstMaximum) {
  const float logits[] = {1.f, 5.f, 5.f, NAN, -1.f, NAN, 2.f, 2.f};
  std::int32_t ids[2];
  sample_greedy_ref({2, 4, logits, 4, ids});
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 2);
}

// ---------------------------------------------------------------------------------------------------------------------
// MoE experts: permutation invariants, and the permuted pipeline (permute -> gate_up+SwiGLU -> down -> combine) equal
// to a direct per-token evaluation of the routed experts plus the gated shared expert, computed here without any
// permutation. Both sides round the same intermediates to bf16 (h after SwiGLU, the output), so they differ only where
// the order of fp64 sums flips a bf16 rounding (one ulp, 2^-8 relative, at a few elements): rel-L2 below 1e-3; a wrong
// row or expert shows as O(1).
std::vector<bf16> rand_bf16(std::size_t n, float lo, float hi, std::mt19937& rng) {
  auto f = uniform(n, lo, hi, rng);
  std::vector<bf16> o(n);
  for (std::size_t i = 0; i < n; ++i) o[i] = float_to_bf16(f[i]);
  return o;
}
std::vector<float> bf16_vec_to_float(const std::vector<bf16>& v) {
  std::vector<float> o(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) o[i] = bf16_to_float(v[i]);
  return o;
}

TEST(MoeRef, PermuteIsStableAndComplete) {
  std::mt19937 rng(5);
  const int T = 37, K = 3, E = 6;
  std::vector<std::int32_t> ids(T * K);
  for (int t = 0; t < T; ++t) {
    std::vector<int> e(E);
    for (int i = 0; i < E; ++i) e[i] = i;
    std::shuffle(e.begin(), e.end(), rng);
    for (int k = 0; k < K; ++k) ids[t * K + k] = e[k];
  }
  ids[4] = -1, ids[10] = E;  // dropped
  std::vector<std::int32_t> off(E + 1), row_token(T * K, -7), token_row(T * K);
  moe_permute_args a;
  a.n_tokens = T, a.n_experts = E, a.top_k = K, a.ids = ids.data(), a.expert_offsets = off.data();
  a.row_token = row_token.data(), a.token_row = token_row.data();
  moe_permute_ref(a);
  EXPECT_EQ(off[0], 0);
  EXPECT_EQ(off[E], T * K - 2);
  EXPECT_EQ(token_row[4], -1);
  EXPECT_EQ(token_row[10], -1);
  for (int i = 0; i < T * K; ++i) {
    if (token_row[i] < 0) continue;
    const int r = token_row[i], e = ids[i];
    EXPECT_GE(r, off[e]);
    EXPECT_LT(r, off[e + 1]);
    EXPECT_EQ(row_token[r], i / K);
  }
  for (int e = 0; e < E; ++e)
    for (int r = off[e] + 1; r < off[e + 1]; ++r) EXPECT_LT(row_token[r - 1], row_token[r]) << "stable by token";
}

TEST(MoeRef, PermutedPipelineEqualsDirectEvaluation) {
  std::mt19937 rng(11);
  const int T = 9, K = 2, E = 5, H = 24, I = 16;
  auto x = rand_bf16(std::size_t(T) * H, -1, 1, rng);
  auto wgu = rand_bf16(std::size_t(E) * 2 * I * H, -0.5f, 0.5f, rng);
  auto wd = rand_bf16(std::size_t(E) * H * I, -0.5f, 0.5f, rng);
  auto shared = rand_bf16(std::size_t(T) * H, -1, 1, rng);
  auto gate_logit = uniform(T, -3, 3, rng);
  auto weights = uniform(std::size_t(T) * K, 0.1f, 1.f, rng);
  std::vector<std::int32_t> ids(T * K);
  for (int t = 0; t < T; ++t) ids[t * K] = (t * 3) % E, ids[t * K + 1] = (t * 3 + 1 + t % 2) % E;
  const int R = T * K;
  std::vector<std::int32_t> off(E + 1), row_token(R), token_row(R);
  moe_permute_args p;
  p.n_tokens = T, p.n_experts = E, p.top_k = K, p.ids = ids.data(), p.expert_offsets = off.data();
  p.row_token = row_token.data(), p.token_row = token_row.data();
  moe_permute_ref(p);
  std::vector<bf16> h(std::size_t(R) * I);
  moe_gate_up_args gu;
  gu.n_rows = R, gu.n_experts = E, gu.hidden = H, gu.inter = I, gu.expert_offsets = off.data();
  gu.row_token = row_token.data(), gu.x = x.data(), gu.x_stride = H, gu.w_gate_up = wgu.data(), gu.h = h.data();
  gu.h_stride = I;
  moe_gate_up_swiglu_ref(gu);
  std::vector<float> y(std::size_t(R) * H);
  moe_down_args dn;
  dn.n_rows = R, dn.n_experts = E, dn.hidden = H, dn.inter = I, dn.expert_offsets = off.data(), dn.h = h.data();
  dn.h_stride = I, dn.w_down = wd.data(), dn.y = y.data(), dn.y_stride = H, dn.y_type = gemm_out::fp32;
  moe_down_ref(dn);
  std::vector<bf16> out(std::size_t(T) * H);
  moe_combine_args cb;
  cb.n_tokens = T, cb.top_k = K, cb.hidden = H, cb.weights = weights.data(), cb.token_row = token_row.data();
  cb.y = y.data(), cb.y_stride = H, cb.y_type = gemm_out::fp32, cb.shared = shared.data(), cb.shared_stride = H;
  cb.shared_gate_logit = gate_logit.data(), cb.out = out.data(), cb.out_stride = H;
  moe_combine_ref(cb);
  // Direct: per token and expert, no permutation.
  std::vector<float> direct(std::size_t(T) * H);
  for (int t = 0; t < T; ++t) {
    std::vector<double> acc(H, 0.0);
    for (int k = 0; k < K; ++k) {
      const int e = ids[t * K + k];
      std::vector<float> hrow(I);
      for (int j = 0; j < I; ++j) {
        double g = 0, u = 0;
        for (int c = 0; c < H; ++c) {
          g += double(bf16_to_float(x[t * H + c])) * bf16_to_float(wgu[(std::size_t(e) * 2 * I + j) * H + c]);
          u += double(bf16_to_float(x[t * H + c])) * bf16_to_float(wgu[(std::size_t(e) * 2 * I + I + j) * H + c]);
        }
        hrow[j] = round_bf16(float(g / (1 + std::exp(-g)) * u));
      }
      for (int c = 0; c < H; ++c) {
        double d = 0;
        for (int j = 0; j < I; ++j) d += double(hrow[j]) * bf16_to_float(wd[(std::size_t(e) * H + c) * I + j]);
        acc[c] += weights[t * K + k] * double(float(d));
      }
    }
    const double sg = 1 / (1 + std::exp(-double(gate_logit[t])));
    for (int c = 0; c < H; ++c) direct[t * H + c] = round_bf16(float(acc[c] + sg * bf16_to_float(shared[t * H + c])));
  }
  EXPECT_LT(rel_l2(bf16_vec_to_float(out), direct), 1e-3);
  // swiglu_ref on a gate|up row equals the fused form.
  std::vector<bf16> gu_row = rand_bf16(2 * I, -2, 2, rng), sw(I);
  swiglu_args sa{1, I, gu_row.data(), 2 * I, sw.data(), I};
  swiglu_ref(sa);
  for (int j = 0; j < I; ++j) {
    const double g = bf16_to_float(gu_row[j]), u = bf16_to_float(gu_row[I + j]);
    EXPECT_EQ(sw[j].bits, float_to_bf16(float(g / (1 + std::exp(-g)) * u)).bits);
  }
}

// Attention prefill == decode at every query position: a chunk of n_new queries on top of a cached prefix, each query
// compared with attention_decode_ref over positions [0, its position]. Same fp64 math, so equal bit for bit.
TEST(AttentionRef, PrefillEqualsDecodePerPosition) {
  std::mt19937 rng(3);
  const int HQ = 4, HK = 2, D = 8, bs = 4;
  const std::vector<int> ctx = {7, 3, 12}, n_new = {3, 3, 0};
  const int n_seq = 3, max_blocks = 4;
  std::vector<std::int32_t> tables = {5, 1, -1, -1, 0, -1, -1, -1, 2, 3, 4, -1};
  const int n_blocks = 6;
  auto kc = rand_bf16(std::size_t(n_blocks) * bs * HK * D, -1, 1, rng);
  auto vc = rand_bf16(kc.size(), -1, 1, rng);
  std::vector<std::int32_t> cu = {0, 3, 6, 6}, lens(ctx.begin(), ctx.end());
  auto qg = rand_bf16(std::size_t(6) * HQ * 2 * D, -1, 1, rng);
  std::vector<bf16> out(std::size_t(6) * HQ * D);
  attention_prefill_args a;
  a.n_seq = n_seq, a.n_tokens = 6, a.max_n_new = 3, a.n_q_heads = HQ, a.n_kv_heads = HK, a.head_dim = D;
  a.scale = 0.35f, a.cu_q = cu.data(), a.seq_lens = lens.data();
  a.q = qg.data(), a.q_stride = HQ * 2 * D, a.q_head_stride = 2 * D;
  a.gate = qg.data() + D, a.gate_stride = HQ * 2 * D, a.gate_head_stride = 2 * D;
  a.kv.k_cache = kc.data(), a.kv.v_cache = vc.data(), a.kv.n_blocks = n_blocks, a.kv.block_size = bs;
  a.kv.block_tables = tables.data(), a.kv.max_blocks_per_seq = max_blocks, a.out = out.data(), a.out_stride = HQ * D;
  attention_prefill_ref(a);
  for (int s = 0; s < n_seq; ++s)
    for (int i = 0; i < n_new[s]; ++i) {
      const int t = cu[s] + i;
      std::vector<bf16> dec(std::size_t(HQ) * D);
      std::int32_t len = ctx[s] - n_new[s] + i + 1;
      attention_decode_args d;
      d.n_seq = 1, d.n_q_heads = HQ, d.n_kv_heads = HK, d.head_dim = D, d.scale = a.scale, d.max_seq_len = len;
      d.q = qg.data() + std::size_t(t) * HQ * 2 * D, d.q_stride = HQ * 2 * D, d.q_head_stride = 2 * D;
      d.gate = d.q + D, d.gate_stride = HQ * 2 * D, d.gate_head_stride = 2 * D, d.seq_lens = &len;
      d.kv = a.kv, d.kv.block_tables = tables.data() + std::size_t(s) * max_blocks, d.out = dec.data();
      d.out_stride = HQ * D;
      attention_decode_ref(d);
      for (int j = 0; j < HQ * D; ++j) ASSERT_EQ(dec[j].bits, out[std::size_t(t) * HQ * D + j].bits) << s << "," << i;
    }
}

// Sampling reference on a hand-checked row: logits {2, 1, 0, 0, -1, -inf, NaN}, temperature 1.
//   order 0, 1, 2, 3 (tie: lower id first), 4, 5, 6; weights 2^44 * exp(x - 2).
TEST(SamplingRef, FiltersAndDrawFollowTheCandidateOrder) {
  const std::vector<float> l = {2, 1, 0, 0, -1, -INFINITY, NAN};
  const int V = int(l.size());
  const double e[5] = {1, std::exp(-1.0), std::exp(-2.0), std::exp(-2.0), std::exp(-3.0)};
  auto run = [&](float temp, int k, float p, float mp, float u) {
    std::int32_t id = -1;
    sample_args a;
    a.n_rows = 1, a.vocab = V, a.logits = l.data(), a.stride = V, a.temperature = &temp, a.top_k = &k;
    a.top_p = &p, a.min_p = &mp, a.uniforms = &u, a.ids = &id;
    sample_ref(a);
    return id;
  };
  double z = 0;
  for (double v : e) z += v;
  // No filter: u just below / above the first boundary.
  EXPECT_EQ(run(1, 0, 1, 0, float(e[0] / z * 0.999)), 0);
  EXPECT_EQ(run(1, 0, 1, 0, float(e[0] / z * 1.001)), 1);
  EXPECT_EQ(run(1, 0, 1, 0, 0.9999f), 4);  // the last token with weight; -inf and NaN never drawn
  // top_k 3 keeps {0, 1, 2}: id 3 (tied with 2) is cut.
  const double z3 = e[0] + e[1] + e[2];
  EXPECT_EQ(run(1, 3, 1, 0, float((e[0] + e[1]) / z3 * 1.001)), 2);
  EXPECT_EQ(run(1, 3, 1, 0, 0.99999f), 2);
  // top_p 0.5: p0 = e0 / z ~ 0.6 >= 0.5 keeps only id 0.
  EXPECT_EQ(run(1, 0, 0.5f, 0, 0.99f), 0);
  // top_p 0.8: p0 + p1 ~ 0.82 keeps {0, 1}.
  EXPECT_EQ(run(1, 0, 0.8f, 0, 0.99f), 1);
  // min_p 0.3: keeps e >= 0.3 -> {0, 1} (e1 = 0.37).
  EXPECT_EQ(run(1, 0, 1, 0.3f, 0.99f), 1);
  // temperature 0: greedy.
  EXPECT_EQ(run(0, 0, 1, 0, 0.99f), 0);
  // top_k 1 is greedy whatever u is.
  EXPECT_EQ(run(1.5f, 1, 1, 0, 0.99f), 0);
  // uniforms: deterministic, in [0, 1), different per step.
  std::vector<std::uint64_t> seeds = {1, 1, 2};
  std::vector<std::int64_t> steps = {0, 1, 0};
  std::vector<float> u1(3), u2(3);
  uniforms_args ua{3, seeds.data(), steps.data(), u1.data()};
  fill_uniforms_ref(ua);
  ua.u = u2.data();
  fill_uniforms_ref(ua);
  EXPECT_EQ(u1, u2);
  for (float v : u1) EXPECT_TRUE(v >= 0 && v < 1);
  EXPECT_NE(u1[0], u1[1]);
  EXPECT_NE(u1[0], u1[2]);
}

}  // namespace
}  // namespace evident::kernels
