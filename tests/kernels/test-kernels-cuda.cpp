// Every CUDA kernel against its CPU reference, one table of cases per op (odd lengths, lengths that are not multiples
// of the chunk or tile, mixed batches, strided inputs packed as the model packs them). Inputs are random (never
// zeros), outputs are poisoned with NaN bytes (0xFF) before each run so that an unwritten element fails.
// EVIDENT_KERNELS_SMALL=1 keeps only small cases (compute-sanitizer runs).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "tests/kernels/compare.h"
#include "kernels/attention.h"
#include "kernels/conv1d.h"
#include "kernels/embedding.h"
#include "kernels/gated-delta-rule.h"
#include "kernels/gemm.h"
#include "kernels/moe.h"
#include "kernels/norm.h"
#include "kernels/rope.h"
#include "kernels/sampling.h"
#include "tests/test-util.h"

namespace evident::kernels {
namespace {

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call
#define KERNEL_OK(call)                       \
  do {                                        \
    status st_ = (call);                      \
    ASSERT_TRUE(st_.ok()) << st_.message;     \
  } while (0)

bool small_only() {
  const char* e = std::getenv("EVIDENT_KERNELS_SMALL");
  return e && e[0] == '1';
}

// Owning device buffer of T.
template <typename T>
struct dbuf {
  T* p = nullptr;
  std::size_t n = 0;
  explicit dbuf(std::size_t count) : n(count) {
    if (cudaMalloc(&p, std::max<std::size_t>(count, 1) * sizeof(T)) != cudaSuccess) p = nullptr;
  }
  ~dbuf() { cudaFree(p); }
  dbuf(const dbuf&) = delete;
  void upload(const std::vector<T>& h) { ASSERT_EQ(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess); }
  void poison() { ASSERT_EQ(cudaMemset(p, 0xFF, n * sizeof(T)), cudaSuccess); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

std::vector<float> uniform(std::size_t n, float lo, float hi, std::mt19937& rng, bool round = false) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = round ? round_bf16(d(rng)) : d(rng);
  return v;
}

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> o(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) o[i] = float_to_bf16(v[i]);
  return o;
}

std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> o(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) o[i] = bf16_to_float(v[i]);
  return o;
}

using evident::test::rel_l2;

// Max over elements of |a - b| / (|b| + floor); infinity on NaN.
double max_rel(const std::vector<float>& a, const std::vector<float>& b, double floor) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    m = std::max(m, std::abs(double(a[i]) - b[i]) / (std::abs(double(b[i])) + floor));
  }
  return m;
}

// ---------------------------------------------------------------------------------------------------------------------
// Gated delta rule
struct gdn_case {
  const char* name;
  int n_k_heads, n_v_heads;
  std::vector<int> lengths;
  bool initial_state;
  bool permute_slots;
  bool small;  // part of the sanitizer subset
};

const std::vector<gdn_case>& gdn_cases() {
  static const std::vector<gdn_case> cases = {
      {"one_token", 2, 4, {1}, false, false, true},
      {"chunk_minus_1", 2, 4, {63}, true, false, true},
      {"one_chunk", 2, 4, {64}, false, false, true},
      {"chunk_plus_1", 1, 2, {65}, true, false, true},
      {"mixed_batch", 2, 4, {1, 130, 0, 64, 257, 17}, true, true, true},
      {"no_gqa", 4, 4, {129}, true, false, false},
      {"real_heads", 16, 32, {200, 37}, true, true, false},
      {"long", 2, 4, {1000}, true, false, false},
  };
  return cases;
}

void PrintTo(const gdn_case& c, std::ostream* os) { *os << c.name; }

class GdnCuda : public ::testing::TestWithParam<gdn_case> {};

TEST_P(GdnCuda, MatchesReference) {
  EV_REQUIRE_CUDA();
  const gdn_case& c = GetParam();
  if (small_only() && !c.small) GTEST_SKIP() << "EVIDENT_KERNELS_SMALL=1: large case skipped";
  std::mt19937 rng(42);
  gdn_shape s;
  s.n_k_heads = c.n_k_heads, s.n_v_heads = c.n_v_heads, s.n_seq = int(c.lengths.size());
  std::vector<std::int32_t> cu(1, 0);
  for (int len : c.lengths) cu.push_back(cu.back() + len);
  s.n_tokens = cu.back();
  const int kdim = s.n_k_heads * 128, vdim = s.n_v_heads * 128, packed = 2 * kdim + vdim;
  const std::size_t T = s.n_tokens;
  // Inputs rounded to bf16 so the reference sees exactly what the kernel sees.
  auto q = uniform(T * kdim, -1, 1, rng, true), k = uniform(T * kdim, -1, 1, rng, true);
  auto v = uniform(T * vdim, -1, 1, rng, true);
  auto g = uniform(T * s.n_v_heads, -2.f, -0.01f, rng), beta = uniform(T * s.n_v_heads, 0.05f, 0.95f, rng);
  const std::size_t state_n = std::size_t(s.n_seq) * s.n_v_heads * 128 * 128;
  auto init = uniform(state_n, -0.5f, 0.5f, rng);
  // Reference (slot = sequence).
  std::vector<float> out_ref(T * vdim), fin_ref(state_n);
  gdn_recurrent_ref(s, {q.data(), k.data(), v.data(), g.data(), beta.data(), cu.data(),
                        c.initial_state ? init.data() : nullptr, fin_ref.data(), out_ref.data()});
  // Device: q|k|v packed per token like the conv output; slots optionally reversed.
  std::vector<bf16> mixed(T * packed);
  for (std::size_t t = 0; t < T; ++t) {
    for (int i = 0; i < kdim; ++i) {
      mixed[t * packed + i] = float_to_bf16(q[t * kdim + i]);
      mixed[t * packed + kdim + i] = float_to_bf16(k[t * kdim + i]);
    }
    for (int i = 0; i < vdim; ++i) mixed[t * packed + 2 * kdim + i] = float_to_bf16(v[t * vdim + i]);
  }
  std::vector<std::int32_t> slots(s.n_seq);
  for (int i = 0; i < s.n_seq; ++i) slots[i] = c.permute_slots ? s.n_seq - 1 - i : i;
  const std::size_t per_slot = std::size_t(s.n_v_heads) * 128 * 128;
  std::vector<float> init_slots(state_n);
  for (int i = 0; i < s.n_seq; ++i)
    std::memcpy(&init_slots[slots[i] * per_slot], &init[i * per_slot], per_slot * sizeof(float));
  dbuf<bf16> d_mixed(mixed.size()), d_out(T * vdim);
  dbuf<float> d_g(g.size()), d_beta(beta.size()), d_init(state_n), d_fin(state_n);
  dbuf<std::int32_t> d_cu(cu.size()), d_slots(slots.size());
  d_mixed.upload(mixed), d_g.upload(g), d_beta.upload(beta), d_init.upload(init_slots), d_cu.upload(cu);
  d_slots.upload(slots);
  gdn_args a;
  a.q = d_mixed.p, a.k = d_mixed.p + kdim, a.v = d_mixed.p + 2 * kdim;
  a.q_stride = a.k_stride = a.v_stride = packed;
  a.g = d_g.p, a.beta = d_beta.p, a.cu_seqlens = d_cu.p, a.state_slots = d_slots.p;
  a.initial_state = c.initial_state ? d_init.p : nullptr, a.final_state = d_fin.p;
  a.out = d_out.p, a.out_stride = vdim;
  auto check = [&](const char* path) {
    auto out = to_float(d_out.download());
    auto fin_slots = d_fin.download();
    std::vector<float> fin(state_n);
    for (int i = 0; i < s.n_seq; ++i)
      std::memcpy(&fin[i * per_slot], &fin_slots[slots[i] * per_slot], per_slot * sizeof(float));
    const double e_out = rel_l2(out, out_ref), e_state = rel_l2(fin, fin_ref);
    std::printf("  [%s %s] rel-L2 out %.3e state %.3e\n", c.name, path, e_out, e_state);
    return std::pair<double, double>(e_out, e_state);
  };
  // Recurrent kernel: fp32 throughout, output rounded to bf16 (rel-L2 of bf16 rounding ~ 2^-9 / sqrt(3) = 1.1e-3):
  // 3e-3 out, 1e-4 state (fp32 sums of <= 1000 steps).
  d_out.poison(), d_fin.poison();
  KERNEL_OK(gdn_recurrent_forward(s, a, nullptr));
  auto [ro, rs] = check("recurrent");
  EXPECT_LT(ro, 3e-3);
  EXPECT_LT(rs, 1e-4);
  // Chunked kernel: tensor-core operands in bf16 (normalised q/k, T, P, the state copy, V_new: each rounded to 2^-9
  // relative) with fp32 accumulation and an fp32 master state; a handful of chained roundings gives ~5e-3 rel-L2,
  // and fla's own tests accept similar. Tolerance 1.5e-2 for out and state.
  for (int variant = 0; variant < 4; ++variant) {
    const int vt = variant == 0 ? 16 : variant == 1 ? 32 : 64, warps = variant == 3 ? 8 : 16;
    dbuf<unsigned char> ws(gdn_chunked_workspace_bytes(s));
    d_out.poison(), d_fin.poison();
    gdn_chunked_options opt;
    opt.v_tile = vt;
    opt.scan_warps = warps;
    KERNEL_OK(gdn_chunked_forward(s, a, ws.p, ws.n, nullptr, opt));
    char label[48];
    std::snprintf(label, sizeof label, "chunked v_tile %d, %d warps", vt, warps);
    auto [co, cs] = check(label);
    EXPECT_LT(co, 1.5e-2) << label;
    EXPECT_LT(cs, 1.5e-2) << label;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, GdnCuda, ::testing::ValuesIn(gdn_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(GdnCudaArgs, RejectsUnsupportedHeadDim) {
  EV_REQUIRE_CUDA();
  gdn_shape s;
  s.d_k = 64;
  s.n_seq = 1, s.n_tokens = 1;
  status st = gdn_recurrent_forward(s, gdn_args{}, nullptr);
  EXPECT_EQ(st.code, status_code::unsupported) << st.message;
}

// ---------------------------------------------------------------------------------------------------------------------
// conv1d: same fp32 accumulation order as the reference; __expf in SiLU may flip a bf16 rounding: 1 bf16 ulp
// (2^-8 relative) plus an absolute floor for values near zero.
struct conv_case {
  const char* name;
  int channels;
  std::vector<int> lengths;
  bool read_state;
  bool small;
};

void PrintTo(const conv_case& c, std::ostream* os) { *os << c.name; }

class Conv1dCuda : public ::testing::TestWithParam<conv_case> {};

TEST_P(Conv1dCuda, ForwardAndUpdateMatchReference) {
  EV_REQUIRE_CUDA();
  const conv_case& c = GetParam();
  if (small_only() && !c.small) GTEST_SKIP() << "EVIDENT_KERNELS_SMALL=1: large case skipped";
  std::mt19937 rng(3);
  const int K = 4, C = c.channels, n_seq = int(c.lengths.size());
  std::vector<std::int32_t> cu(1, 0);
  for (int len : c.lengths) cu.push_back(cu.back() + len);
  const int T = cu.back();
  const int stride = C + 8;  // strided input rows
  auto x = to_bf16(uniform(std::size_t(T) * stride, -2, 2, rng));
  auto w = to_bf16(uniform(std::size_t(C) * K, -1, 1, rng));
  auto st0 = to_bf16(uniform(std::size_t(n_seq) * (K - 1) * C, -2, 2, rng));
  conv1d_args a;
  a.n_tokens = T, a.n_seq = n_seq, a.n_channels = C, a.kernel = K, a.x_stride = stride, a.out_stride = C;
  a.read_state = c.read_state;
  std::vector<bf16> out_ref(std::size_t(T) * C), st_ref = st0;
  a.x = x.data(), a.w = w.data(), a.cu_seqlens = cu.data(), a.state = st_ref.data(), a.out = out_ref.data();
  conv1d_ref(a);
  dbuf<bf16> d_x(x.size()), d_w(w.size()), d_st(st0.size()), d_out(out_ref.size());
  dbuf<std::int32_t> d_cu(cu.size());
  d_x.upload(x), d_w.upload(w), d_st.upload(st0), d_cu.upload(cu);
  d_out.poison();
  a.x = d_x.p, a.w = d_w.p, a.cu_seqlens = d_cu.p, a.state = d_st.p, a.out = d_out.p;
  KERNEL_OK(conv1d_forward(a, nullptr));
  EXPECT_LT(max_rel(to_float(d_out.download()), to_float(out_ref), 1e-2), 8e-3);
  auto st = d_st.download();
  for (std::size_t i = 0; i < st.size(); ++i) ASSERT_EQ(st[i].bits, st_ref[i].bits) << "state element " << i;
  // Decode: one token per sequence on top of the state just produced.
  auto xd = to_bf16(uniform(std::size_t(n_seq) * C, -2, 2, rng));
  std::vector<bf16> outd_ref(std::size_t(n_seq) * C);
  conv1d_args d = a;
  d.n_tokens = n_seq, d.cu_seqlens = nullptr, d.read_state = true, d.x_stride = C;
  d.x = xd.data(), d.w = w.data(), d.state = st_ref.data(), d.out = outd_ref.data();
  conv1d_ref(d);
  dbuf<bf16> d_xd(xd.size()), d_outd(outd_ref.size());
  d_xd.upload(xd);
  d_outd.poison();
  d.x = d_xd.p, d.w = d_w.p, d.state = d_st.p, d.out = d_outd.p;
  KERNEL_OK(conv1d_update(d, nullptr));
  EXPECT_LT(max_rel(to_float(d_outd.download()), to_float(outd_ref), 1e-2), 8e-3);
  st = d_st.download();
  for (std::size_t i = 0; i < st.size(); ++i) ASSERT_EQ(st[i].bits, st_ref[i].bits) << "state element " << i;
}

INSTANTIATE_TEST_SUITE_P(Cases, Conv1dCuda,
                         ::testing::Values(conv_case{"tiny", 8, {1}, false, true},
                                           conv_case{"odd_channels_mixed", 300, {1, 2, 5, 0, 64}, true, true},
                                           conv_case{"real_channels", 8192, {37, 3}, true, false}),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------------------------------------
// Norms: fp32 sums in a different order than the reference can flip a bf16 rounding of the output: 1 ulp (2^-8
// relative) with a small absolute floor.
struct norm_case {
  const char* name;
  int rows, dim, stride;
  bool residual;
};

void PrintTo(const norm_case& c, std::ostream* os) { *os << c.name; }

class NormCuda : public ::testing::TestWithParam<norm_case> {};

TEST_P(NormCuda, ResidualAndGatedMatchReference) {
  EV_REQUIRE_CUDA();
  const norm_case& c = GetParam();
  std::mt19937 rng(5);
  const std::size_t n = std::size_t(c.rows) * c.stride;
  auto x = to_bf16(uniform(n, -3, 3, rng)), res = to_bf16(uniform(n, -3, 3, rng)), z = to_bf16(uniform(n, -4, 4, rng));
  auto w = to_bf16(uniform(c.dim, -0.5f, 1.5f, rng));
  rmsnorm_args a;
  a.n_rows = c.rows, a.dim = c.dim, a.x_stride = c.stride, a.residual_stride = c.stride, a.z_stride = c.stride;
  a.out_stride = c.dim;
  std::vector<bf16> out_ref(std::size_t(c.rows) * c.dim), res_ref = res, gout_ref(out_ref.size());
  a.x = x.data(), a.w = w.data(), a.residual = c.residual ? res_ref.data() : nullptr, a.out = out_ref.data();
  a.z = z.data();
  rmsnorm_residual_ref(a);
  a.out = gout_ref.data();
  rmsnorm_gated_ref(a);
  dbuf<bf16> d_x(n), d_res(n), d_z(n), d_w(w.size()), d_out(out_ref.size());
  d_x.upload(x), d_res.upload(res), d_z.upload(z), d_w.upload(w);
  d_out.poison();
  a.x = d_x.p, a.w = d_w.p, a.residual = c.residual ? d_res.p : nullptr, a.z = d_z.p, a.out = d_out.p;
  KERNEL_OK(rmsnorm_residual(a, nullptr));
  EXPECT_LT(max_rel(to_float(d_out.download()), to_float(out_ref), 1e-2), 8e-3);
  if (c.residual) {
    auto r = d_res.download();
    for (std::size_t i = 0; i < r.size(); ++i) ASSERT_EQ(r[i].bits, res_ref[i].bits) << "residual " << i;
  }
  d_out.poison();
  KERNEL_OK(rmsnorm_gated(a, nullptr));
  EXPECT_LT(max_rel(to_float(d_out.download()), to_float(gout_ref), 1e-2), 8e-3);
}

INSTANTIATE_TEST_SUITE_P(Cases, NormCuda,
                         ::testing::Values(norm_case{"one_row_hidden", 1, 2048, 2048, true},
                                           norm_case{"odd_rows_head", 33, 256, 512, false},
                                           norm_case{"gated_head", 7, 128, 132, true},
                                           norm_case{"dim_not_pow2", 5, 388, 388, true}),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------------------------------------
// RoPE: the same fp32 angle as the reference, but powf/sincosf on the device vs libm on the host may differ by an fp32
// ulp, which at positions ~4e4 moves the angle by ~4e-3 rad; with bf16 outputs: 2^-6 relative plus a floor.
TEST(RopeCuda, PartialRotaryMatchesReference) {
  EV_REQUIRE_CUDA();
  std::mt19937 rng(11);
  for (int n_heads : {16, 2}) {
    const int T = 5, hd = 256, head_stride = n_heads == 16 ? 2 * hd : hd, token_stride = n_heads * head_stride;
    auto x = to_bf16(uniform(std::size_t(T) * token_stride, -2, 2, rng));
    std::vector<std::int32_t> pos = {0, 1, 17, 4095, 40000};
    rope_args a;
    a.n_tokens = T, a.n_heads = n_heads, a.head_dim = hd, a.rotary_dim = 64, a.token_stride = token_stride;
    a.head_stride = head_stride;
    auto ref = x;
    a.x = ref.data(), a.positions = pos.data();
    rope_ref(a);
    dbuf<bf16> d_x(x.size());
    dbuf<std::int32_t> d_pos(pos.size());
    d_x.upload(x), d_pos.upload(pos);
    a.x = d_x.p, a.positions = d_pos.p;
    KERNEL_OK(rope_apply(a, nullptr));
    EXPECT_LT(max_rel(to_float(d_x.download()), to_float(ref), 0.1), 1.6e-2) << n_heads << " heads";
  }
}

// Embedding gather is a copy: exact, and out-of-range ids give zero rows.
TEST(EmbeddingCuda, GatherIsExact) {
  EV_REQUIRE_CUDA();
  std::mt19937 rng(13);
  const int vocab = 1000, dim = 2048;
  auto table = to_bf16(uniform(std::size_t(vocab) * dim, -1, 1, rng));
  std::vector<std::int32_t> ids = {5, 999, 0, -1, 1000, 5, 123};
  std::vector<bf16> ref(ids.size() * dim);
  embedding_args a{int(ids.size()), vocab, dim, table.data(), ids.data(), ref.data(), dim};
  embedding_gather_ref(a);
  dbuf<bf16> d_table(table.size()), d_out(ref.size());
  dbuf<std::int32_t> d_ids(ids.size());
  d_table.upload(table), d_ids.upload(ids);
  d_out.poison();
  a.table = d_table.p, a.ids = d_ids.p, a.out = d_out.p;
  KERNEL_OK(embedding_gather(a, nullptr));
  auto out = d_out.download();
  for (std::size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i].bits, ref[i].bits) << i;
}

// GEMM: identical bf16 inputs, fp32 accumulation vs fp64: fp32 output rel-L2 far below 1e-4 (K <= 2048 terms); bf16
// output adds its rounding (~1.1e-3 rel-L2): 3e-3.
TEST(GemmCuda, MatchesReference) {
  EV_REQUIRE_CUDA();
  status err;
  auto ctx = gemm_context::create(&err);
  ASSERT_TRUE(ctx) << err.message;
  std::mt19937 rng(17);
  struct gcase { int m, n, k; };
  for (gcase c : {gcase{1, 128, 2048}, gcase{17, 300, 512}, gcase{64, 72, 136}}) {
    auto x = to_bf16(uniform(std::size_t(c.m) * c.k, -1, 1, rng)), w = to_bf16(uniform(std::size_t(c.n) * c.k, -1, 1, rng));
    dbuf<bf16> d_x(x.size()), d_w(w.size()), d_y(std::size_t(c.m) * c.n);
    dbuf<float> d_yf(std::size_t(c.m) * c.n);
    d_x.upload(x), d_w.upload(w);
    d_y.poison(), d_yf.poison();
    gemm_args a{c.m, c.n, c.k, x.data(), c.k, w.data(), c.k, nullptr, c.n, gemm_out::fp32};
    std::vector<float> ref(std::size_t(c.m) * c.n);
    a.y = ref.data();
    gemm_bf16_ref(a);
    a.x = d_x.p, a.w = d_w.p, a.y = d_yf.p;
    KERNEL_OK(gemm_bf16(*ctx, a, nullptr));
    EXPECT_LT(rel_l2(d_yf.download(), ref), 1e-4);
    a.y = d_y.p, a.out_type = gemm_out::bf16;
    KERNEL_OK(gemm_bf16(*ctx, a, nullptr));
    EXPECT_LT(rel_l2(to_float(d_y.download()), ref), 3e-3);
  }
}

// MoE router: fp32 softmax vs the fp64 reference; the chosen experts must be identical (the logits are spaced so
// that no two probabilities are within fp32 rounding of each other, except planted exact ties, which both break
// towards the lower id), weights within 1e-5 relative.
TEST(MoeCuda, RouterMatchesReference) {
  EV_REQUIRE_CUDA();
  std::mt19937 rng(29);
  for (int E : {512, 64, 1000}) {
    const int T = 37, K = E >= 512 ? 10 : 8;
    std::vector<float> logits(std::size_t(T) * E);
    for (int t = 0; t < T; ++t) {
      std::vector<int> perm(E);
      for (int e = 0; e < E; ++e) perm[e] = e;
      std::shuffle(perm.begin(), perm.end(), rng);
      for (int e = 0; e < E; ++e) logits[std::size_t(t) * E + e] = 0.01f * float(perm[e]) - 3.f;
    }
    logits[5] = logits[9] = 20.f;  // token 0: an exact tie at the top
    std::vector<std::int32_t> ids_ref(std::size_t(T) * K);
    std::vector<float> w_ref(ids_ref.size());
    moe_router_args a;
    a.n_tokens = T, a.n_experts = E, a.top_k = K, a.logits = logits.data(), a.logits_stride = E;
    a.ids = ids_ref.data(), a.weights = w_ref.data();
    moe_router_ref(a);
    ASSERT_EQ(ids_ref[0], 5);
    ASSERT_EQ(ids_ref[1], 9);
    dbuf<float> d_l(logits.size()), d_w(w_ref.size());
    dbuf<std::int32_t> d_ids(ids_ref.size());
    d_l.upload(logits);
    d_w.poison(), d_ids.poison();
    a.logits = d_l.p, a.ids = d_ids.p, a.weights = d_w.p;
    KERNEL_OK(moe_router(a, nullptr));
    EXPECT_EQ(d_ids.download(), ids_ref) << E << " experts";
    EXPECT_LT(max_rel(d_w.download(), w_ref, 1e-6), 1e-5) << E << " experts";
  }
}

// Greedy sampling: exact, the first maximum on ties.
TEST(SamplingCuda, GreedyMatchesReference) {
  EV_REQUIRE_CUDA();
  std::mt19937 rng(19);
  const int rows = 3, vocab = 151936;
  auto logits = uniform(std::size_t(rows) * vocab, -10, 10, rng);
  logits[100] = 50.f, logits[vocab - 1] = 50.f;                    // tie in row 0: index 100 wins
  logits[vocab + 77777] = 60.f;                                     // row 1
  logits[2 * vocab + vocab - 1] = 70.f, logits[2 * vocab + 5] = NAN;  // row 2: last element, NaN ignored
  std::vector<std::int32_t> ref(rows);
  argmax_args a{rows, vocab, logits.data(), vocab, ref.data()};
  sample_greedy_ref(a);
  dbuf<float> d_l(logits.size());
  dbuf<std::int32_t> d_ids(rows);
  d_l.upload(logits);
  d_ids.poison();
  a.logits = d_l.p, a.ids = d_ids.p;
  KERNEL_OK(sample_greedy(a, nullptr));
  EXPECT_EQ(d_ids.download(), ref);
  EXPECT_EQ(ref[0], 100);
}

// ---------------------------------------------------------------------------------------------------------------------
// Decode attention over a paged cache whose blocks are scattered (a random permutation of the physical blocks), GQA
// 16/2 heads of 256, gate inside the q|gate projection layout. The kernel accumulates in fp32 and rounds the output
// to bf16: rel-L2 is dominated by that rounding (~1.1e-3); 4e-3. The cache is filled through kv_cache_write, which
// must reproduce its reference exactly.
struct attn_case {
  const char* name;
  std::vector<int> lengths;
  int block_size;
  int n_splits;  // 0: automatic
};

void PrintTo(const attn_case& c, std::ostream* os) { *os << c.name; }

class AttentionCuda : public ::testing::TestWithParam<attn_case> {};

TEST_P(AttentionCuda, DecodeMatchesReference) {
  EV_REQUIRE_CUDA();
  const attn_case& c = GetParam();
  std::mt19937 rng(23);
  const int HQ = 16, HK = 2, D = 256, n_seq = int(c.lengths.size()), bs = c.block_size;
  int max_len = 0, total_blocks = 0;
  for (int len : c.lengths) max_len = std::max(max_len, len), total_blocks += (len + bs - 1) / bs;
  const int max_blocks = (max_len + bs - 1) / bs + 1;
  // Physical blocks: a shuffled pool (plus one spare) assigned in order to the sequences' logical blocks.
  std::vector<std::int32_t> pool(total_blocks + 1);
  for (int i = 0; i <= total_blocks; ++i) pool[i] = i;
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<std::int32_t> tables(std::size_t(n_seq) * max_blocks, -1), slots;
  int next = 0;
  for (int s = 0; s < n_seq; ++s) {
    for (int b = 0; b < (c.lengths[s] + bs - 1) / bs; ++b) tables[std::size_t(s) * max_blocks + b] = pool[next++];
    for (int p = 0; p < c.lengths[s]; ++p) slots.push_back(tables[std::size_t(s) * max_blocks + p / bs] * bs + p % bs);
  }
  const int n_tok = int(slots.size()), n_blocks = total_blocks + 1;
  auto kin = to_bf16(uniform(std::size_t(n_tok) * HK * D, -1, 1, rng));
  auto vin = to_bf16(uniform(std::size_t(n_tok) * HK * D, -1, 1, rng));
  const std::size_t cache_n = std::size_t(n_blocks) * bs * HK * D;
  std::vector<bf16> kc(cache_n, float_to_bf16(7.f)), vc(cache_n, float_to_bf16(7.f));  // stale values elsewhere
  kv_write_args w;
  w.n_tokens = n_tok, w.n_kv_heads = HK, w.head_dim = D, w.k = kin.data(), w.k_stride = HK * D, w.v = vin.data();
  w.v_stride = HK * D, w.slot_mapping = slots.data();
  w.kv.k_cache = kc.data(), w.kv.v_cache = vc.data(), w.kv.n_blocks = n_blocks, w.kv.block_size = bs;
  kv_cache_write_ref(w);
  // q|gate per sequence: [n_seq, HQ, 2 * D], q first.
  auto qg = to_bf16(uniform(std::size_t(n_seq) * HQ * 2 * D, -1, 1, rng));
  std::vector<std::int32_t> lens(c.lengths.begin(), c.lengths.end());
  std::vector<bf16> out_ref(std::size_t(n_seq) * HQ * D);
  attention_decode_args a;
  a.n_seq = n_seq, a.n_q_heads = HQ, a.n_kv_heads = HK, a.head_dim = D, a.scale = 1.f / 16.f;
  a.max_seq_len = max_len, a.n_splits = c.n_splits;
  a.q = qg.data(), a.q_stride = HQ * 2 * D, a.q_head_stride = 2 * D;
  a.gate = qg.data() + D, a.gate_stride = HQ * 2 * D, a.gate_head_stride = 2 * D;
  a.seq_lens = lens.data(), a.kv = w.kv, a.kv.block_tables = tables.data(), a.kv.max_blocks_per_seq = max_blocks;
  a.out = out_ref.data(), a.out_stride = HQ * D;
  attention_decode_ref(a);
  // Device.
  dbuf<bf16> d_k(kin.size()), d_v(vin.size()), d_kc(cache_n), d_vc(cache_n), d_qg(qg.size()), d_out(out_ref.size());
  dbuf<std::int32_t> d_slots(slots.size()), d_tables(tables.size()), d_lens(lens.size());
  d_k.upload(kin), d_v.upload(vin), d_qg.upload(qg), d_slots.upload(slots), d_tables.upload(tables);
  d_lens.upload(lens);
  d_kc.upload(std::vector<bf16>(cache_n, float_to_bf16(7.f))), d_vc.upload(std::vector<bf16>(cache_n, float_to_bf16(7.f)));
  w.k = d_k.p, w.v = d_v.p, w.slot_mapping = d_slots.p, w.kv.k_cache = d_kc.p, w.kv.v_cache = d_vc.p;
  KERNEL_OK(kv_cache_write(w, nullptr));
  auto kc_dev = d_kc.download(), vc_dev = d_vc.download();
  for (std::size_t i = 0; i < cache_n; ++i) {
    ASSERT_EQ(kc_dev[i].bits, kc[i].bits) << "k cache element " << i;
    ASSERT_EQ(vc_dev[i].bits, vc[i].bits) << "v cache element " << i;
  }
  a.q = d_qg.p, a.gate = d_qg.p + D, a.seq_lens = d_lens.p, a.kv.k_cache = d_kc.p, a.kv.v_cache = d_vc.p;
  a.kv.block_tables = d_tables.p, a.out = d_out.p;
  dbuf<unsigned char> ws(attention_decode_workspace_bytes(a));
  d_out.poison();
  KERNEL_OK(attention_decode(a, ws.p, ws.n, nullptr));
  const double e = rel_l2(to_float(d_out.download()), to_float(out_ref));
  std::printf("  [attention %s, %d splits] rel-L2 %.3e\n", c.name, attention_decode_splits(a), e);
  EXPECT_LT(e, 4e-3);
}

INSTANTIATE_TEST_SUITE_P(Cases, AttentionCuda,
                         ::testing::Values(attn_case{"one_position", {1}, 16, 0},
                                           attn_case{"mixed_batch", {1, 17, 300, 0, 64}, 16, 0},
                                           attn_case{"long_split", {5000}, 16, 0},
                                           attn_case{"forced_splits_more_than_positions", {3, 40}, 8, 7}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace evident::kernels
