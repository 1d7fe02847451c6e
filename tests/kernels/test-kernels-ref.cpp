// Unit tests of the CPU references: independent formulations of the same op must agree (chunked gated delta rule ==
// token-by-token recurrence; conv1d prompt pass split at any point == one pass == decode steps).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/kernels/compare.h"
#include "kernels/attention.h"
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

}  // namespace
}  // namespace evident::kernels
