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
#include <utility>
#include <vector>

#include "tests/kernels/compare.h"
#include "kernels/arch.h"
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
  // Variants 0-2: the mma scan (default: output in separate warps) with 16, 32, 64 value columns per block (32: the
  // default, v14, one cooperative launch in which the blocks of a key head also prepare the chunks); 3: the mma scan
  // without the output split; 4-5: the WMMA scan; 6-9: the split mma scan after the separate preparation kernel with
  // v_tile 32 in clusters of 1 (none, v12b), 2 and 4 blocks, and v_tile 16 in clusters of 4; 10: v14 with bulk copies;
  // 11: the default options (v15: producers and wgmma consumers in one cooperative launch, where
  // wgmma_available(); else v14 or v12b); 12: v15 as two launches (its fallback); 13: v15 with one producer block,
  // so that each producer warpgroup prepares many items one after the other (unused slots of a mixed batch included).
  for (int variant = 0; variant < 14; ++variant) {
    if (variant >= 11) {
      if (variant > 11 && !wgmma_available()) continue;  // v15's variants; without sm_90a they repeat variant 1
      dbuf<unsigned char> ws(gdn_chunked_workspace_bytes(s));
      d_out.poison(), d_fin.poison();
      gdn_chunked_options opt;
      opt.wgmma_variant = variant == 12 ? 3 : 0;
      opt.wgmma_producers = variant == 13 ? 1 : 0;
      KERNEL_OK(gdn_chunked_forward(s, a, ws.p, ws.n, nullptr, opt));
      const char* label = !wgmma_available() ? "chunked default (not sm_90a: v14/v12b)"
                          : variant == 12        ? "chunked v15 wgmma, two launches"
                          : variant == 13        ? "chunked v15 wgmma, one producer block"
                                                 : "chunked default (v15 wgmma)";
      auto [co, cs] = check(label);
      EXPECT_LT(co, 1.5e-2) << label;
      EXPECT_LT(cs, 1.5e-2) << label;
      continue;
    }
    const bool wmma = variant == 4 || variant == 5;
    const int vt = variant == 0 || variant == 9 ? 16 : variant == 2 ? 64 : 32, warps = variant == 5 ? 8 : 16;
    const int cluster = variant == 6 ? 1 : variant == 7 ? 2 : variant == 8 || variant == 9 ? 4 : 0;
    dbuf<unsigned char> ws(gdn_chunked_workspace_bytes(s));
    d_out.poison(), d_fin.poison();
    gdn_chunked_options opt;
    opt.wgmma = false;
    opt.v_tile = vt;
    opt.scan_warps = wmma ? warps : 0;
    opt.wmma_scan = wmma;
    opt.split_output = variant != 3;
    opt.scan_cluster = cluster;
    opt.cooperative = variant == 1 || variant == 10;
    opt.coop_variant = variant == 10 ? 4 : 0;
    KERNEL_OK(gdn_chunked_forward(s, a, ws.p, ws.n, nullptr, opt));
    char label[80];
    std::snprintf(label, sizeof label, "chunked %s v_tile %d%s, cluster %d", wmma ? "wmma" : "mma", vt,
                  wmma            ? (warps == 8 ? ", 8 warps" : ", 16 warps")
                  : variant == 3  ? ", no output split"
                  : variant == 1  ? ", cooperative (v14)"
                  : variant == 10 ? ", cooperative, bulk copies"
                                  : "",
                  cluster);
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
                                           conv_case{"real_channels", 8192, {37, 3}, true, false},
                                           // vectorized path (channels % 8 == 0): window tiles, tiles across sequence
                                           // boundaries, a partial last tile, empty and 1-token sequences
                                           conv_case{"vec_mixed", 264, {1, 40, 0, 67, 5, 19}, true, true},
                                           conv_case{"vec_long_zero_state", 1032, {300, 2, 129}, false, true}),
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

// Gated norm reading its gate in place from a wider per-token row (z_group): (token, head) rows, heads back to back
// within a token, tokens z_group_stride apart (the DeltaNet in_proj layout). Same tolerance as above.
TEST(NormCuda, GatedGroupedGateMatchesReference) {
  EV_REQUIRE_CUDA();
  std::mt19937 rng(6);
  const int tokens = 13, heads = 6, dim = 128, zs = heads * dim + 72;  // token pitch of the gate rows
  const int rows = tokens * heads;
  auto x = to_bf16(uniform(std::size_t(rows) * dim, -3, 3, rng));
  auto z = to_bf16(uniform(std::size_t(tokens) * zs, -4, 4, rng));
  auto w = to_bf16(uniform(dim, -0.5f, 1.5f, rng));
  rmsnorm_args a;
  a.n_rows = rows, a.dim = dim, a.x_stride = dim, a.out_stride = dim;
  a.z_stride = dim, a.z_group = heads, a.z_group_stride = zs;
  std::vector<bf16> out_ref(std::size_t(rows) * dim);
  a.x = x.data(), a.w = w.data(), a.z = z.data() + 40, a.out = out_ref.data();
  rmsnorm_gated_ref(a);
  // The grouped reference equals the ungrouped one on a gathered copy of the gates (checks the reference itself).
  std::vector<bf16> zg(std::size_t(rows) * dim), out_plain(out_ref.size());
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < dim; ++i)
      zg[std::size_t(r) * dim + i] = z[std::size_t(r / heads) * zs + 40 + (r % heads) * dim + i];
  rmsnorm_args b = a;
  b.z = zg.data(), b.z_group = 0, b.out = out_plain.data();
  rmsnorm_gated_ref(b);
  for (std::size_t i = 0; i < out_ref.size(); ++i) ASSERT_EQ(out_ref[i].bits, out_plain[i].bits) << "element " << i;
  dbuf<bf16> d_x(x.size()), d_z(z.size()), d_w(w.size()), d_out(out_ref.size());
  d_x.upload(x), d_z.upload(z), d_w.upload(w);
  d_out.poison();
  a.x = d_x.p, a.w = d_w.p, a.z = d_z.p + 40, a.out = d_out.p;
  KERNEL_OK(rmsnorm_gated(a, nullptr));
  EXPECT_LT(max_rel(to_float(d_out.download()), to_float(out_ref), 1e-2), 8e-3);
}

INSTANTIATE_TEST_SUITE_P(Cases, NormCuda,
                         ::testing::Values(norm_case{"one_row_hidden", 1, 2048, 2048, true},
                                           norm_case{"odd_rows_head", 33, 256, 512, false},
                                           norm_case{"gated_head", 7, 128, 132, true},
                                           // dim 128, strides multiples of 8: the gated norm's 16-byte kernel
                                           norm_case{"gated_head_aligned", 37, 128, 136, true},
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

// Degenerate rows, which a model with masked logits can produce: NaN is below everything (it never wins, not even over
// -inf), all -inf picks the first index, all NaN answers 0. Expected ids are written out, and must equal the reference.
TEST(SamplingCuda, GreedyOnInfiniteAndNanRows) {
  EV_REQUIRE_CUDA();
  const float inf = INFINITY, nan = NAN;
  const std::vector<std::vector<float>> rows = {
      {-inf, -inf, -inf, -inf}, {-inf, -inf, nan, -inf}, {nan, -inf, -inf, nan}, {nan, nan, nan, nan},
      {nan, -inf, 3.f, inf},    {-inf, 2.f, nan, 2.f}};
  const std::vector<std::int32_t> want = {0, 0, 1, 0, 3, 1};
  const int vocab = 4, n = int(rows.size());
  std::vector<float> logits;
  for (const auto& r : rows) logits.insert(logits.end(), r.begin(), r.end());
  std::vector<std::int32_t> ref(n);
  argmax_args a{n, vocab, logits.data(), vocab, ref.data()};
  sample_greedy_ref(a);
  EXPECT_EQ(ref, want);
  dbuf<float> d_l(logits.size());
  dbuf<std::int32_t> d_ids(n);
  d_l.upload(logits);
  d_ids.poison();
  a.logits = d_l.p, a.ids = d_ids.p;
  KERNEL_OK(sample_greedy(a, nullptr));
  EXPECT_EQ(d_ids.download(), want);
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

// ---------------------------------------------------------------------------------------------------------------------
// MoE experts. Each kernel is checked on its own, fed the reference's inputs (so an error is not blamed on the kernel
// before it): permute exactly; gate_up+SwiGLU and combine (bf16 outputs; fp32 accumulation against fp64) within
// 5e-3 rel-L2: both round to bf16, so they differ by a one-ulp flip (2^-8 relative) at a small fraction of elements,
// plus fp32 accumulation error (~1e-6); a wrong row, expert or column is O(1). down with fp32 output within 1e-4
// (fp32 accumulation over K <= 512 products of bf16 values), bf16 output within 5e-3.
struct moe_case {
  const char* name;
  int T, E, K, H, I;
  int tile_m;         // 0 auto, 16 or 128 forced
  bool skew, drop;    // expert 0 taken by every token; one (token, k) dropped (id -1)
  bool small;
};
void PrintTo(const moe_case& c, std::ostream* os) { *os << c.name; }

std::vector<std::int32_t> route(int T, int E, int K, bool skew, bool drop, std::mt19937& rng) {
  std::vector<std::int32_t> ids(std::size_t(T) * K);
  std::vector<int> perm(E);
  for (int t = 0; t < T; ++t) {
    for (int e = 0; e < E; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    if (skew) std::iter_swap(perm.begin(), std::find(perm.begin(), perm.end(), 0));
    for (int k = 0; k < K; ++k) ids[std::size_t(t) * K + k] = perm[k];
  }
  if (drop && T > 1) ids[std::size_t(T / 2) * K + K - 1] = -1;
  return ids;
}

class MoeExpertsCuda : public ::testing::TestWithParam<moe_case> {};

TEST_P(MoeExpertsCuda, EachStageMatchesReference) {
  EV_REQUIRE_CUDA();
  const moe_case& c = GetParam();
  if (small_only() && !c.small) GTEST_SKIP() << "EVIDENT_KERNELS_SMALL=1: large case skipped";
  if (c.tile_m == 256 && !wgmma_available()) GTEST_SKIP() << "wgmma tiling needs sm_90a on compute capability 9.0";
  std::mt19937 rng(41);
  const int T = c.T, E = c.E, K = c.K, H = c.H, I = c.I, R = T * K;
  const float ws = 1.f / std::sqrt(float(H)), wd_s = 1.f / std::sqrt(float(I));
  auto ids = route(T, E, K, c.skew, c.drop, rng);
  auto x = to_bf16(uniform(std::size_t(T) * H, -1, 1, rng));
  auto wgu = to_bf16(uniform(std::size_t(E) * 2 * I * H, -2 * ws, 2 * ws, rng));
  auto wd = to_bf16(uniform(std::size_t(E) * H * I, -2 * wd_s, 2 * wd_s, rng));
  // 1. permute
  std::vector<std::int32_t> off(E + 1), row_token(R, -1), token_row(R);
  moe_permute_args pa;
  pa.n_tokens = T, pa.n_experts = E, pa.top_k = K, pa.ids = ids.data(), pa.expert_offsets = off.data();
  pa.row_token = row_token.data(), pa.token_row = token_row.data();
  moe_permute_ref(pa);
  const int used = off[E];
  dbuf<std::int32_t> d_ids(ids.size()), d_off(E + 1), d_rt(R), d_tr(R);
  d_ids.upload(ids);
  d_off.poison(), d_rt.upload(std::vector<std::int32_t>(R, -1)), d_tr.poison();
  dbuf<unsigned char> d_ws(moe_permute_workspace_bytes(pa));
  d_ws.poison();
  pa.ids = d_ids.p, pa.expert_offsets = d_off.p, pa.row_token = d_rt.p, pa.token_row = d_tr.p;
  KERNEL_OK(moe_permute(pa, d_ws.p, d_ws.n, nullptr));
  ASSERT_EQ(d_off.download(), off);
  ASSERT_EQ(d_rt.download(), row_token);
  ASSERT_EQ(d_tr.download(), token_row);
  // 2. gate_up + SwiGLU (h stride padded by 8 to check the stride)
  const int hs = I + 8;
  std::vector<bf16> h(std::size_t(R) * hs, float_to_bf16(0.f));
  moe_gate_up_args ga;
  ga.n_rows = R, ga.n_experts = E, ga.hidden = H, ga.inter = I, ga.expert_offsets = off.data();
  ga.row_token = row_token.data(), ga.x = x.data(), ga.x_stride = H, ga.w_gate_up = wgu.data(), ga.h = h.data();
  ga.h_stride = hs, ga.tile_m = c.tile_m;
  moe_gate_up_swiglu_ref(ga);
  dbuf<bf16> d_x(x.size()), d_wgu(wgu.size()), d_h(h.size()), d_wd(wd.size());
  d_x.upload(x), d_wgu.upload(wgu), d_wd.upload(wd);
  d_h.upload(std::vector<bf16>(h.size(), float_to_bf16(0.f)));
  ga.expert_offsets = d_off.p, ga.row_token = d_rt.p, ga.x = d_x.p, ga.w_gate_up = d_wgu.p, ga.h = d_h.p;
  KERNEL_OK(moe_gate_up_swiglu(ga, nullptr));
  auto h_dev = d_h.download();
  h_dev.resize(std::size_t(used) * hs);
  std::vector<bf16> h_ref(h.begin(), h.begin() + std::size_t(used) * hs);
  const double e_h = rel_l2(to_float(h_dev), to_float(h_ref));
  // 3. down, fp32 and bf16 outputs, from the reference h
  d_h.upload(h);
  std::vector<float> y(std::size_t(R) * H, 0.f);
  std::vector<bf16> yb(std::size_t(R) * H, float_to_bf16(0.f));
  moe_down_args da;
  da.n_rows = R, da.n_experts = E, da.hidden = H, da.inter = I, da.expert_offsets = off.data(), da.h = h.data();
  da.h_stride = hs, da.w_down = wd.data(), da.y = y.data(), da.y_stride = H, da.y_type = gemm_out::fp32;
  da.tile_m = c.tile_m;
  moe_down_ref(da);
  da.y = yb.data(), da.y_type = gemm_out::bf16;
  moe_down_ref(da);
  dbuf<float> d_y(y.size());
  dbuf<bf16> d_yb(yb.size());
  d_y.upload(std::vector<float>(y.size(), 0.f)), d_yb.upload(std::vector<bf16>(yb.size(), float_to_bf16(0.f)));
  da.expert_offsets = d_off.p, da.h = d_h.p, da.w_down = d_wd.p, da.y = d_y.p, da.y_type = gemm_out::fp32;
  KERNEL_OK(moe_down(da, nullptr));
  da.y = d_yb.p, da.y_type = gemm_out::bf16;
  KERNEL_OK(moe_down(da, nullptr));
  auto y_dev = d_y.download();
  auto yb_dev = to_float(d_yb.download());
  y_dev.resize(std::size_t(used) * H), yb_dev.resize(std::size_t(used) * H);
  std::vector<float> y_ref(y.begin(), y.begin() + std::size_t(used) * H);
  auto yb_ref = to_float(yb);
  yb_ref.resize(std::size_t(used) * H);
  const double e_y = rel_l2(y_dev, y_ref), e_yb = rel_l2(yb_dev, yb_ref);
  // 4. combine from the reference y (fp32), with the shared expert and the residual (in place: out == residual)
  auto weights = uniform(std::size_t(T) * K, 0.05f, 0.5f, rng);
  auto shared = to_bf16(uniform(std::size_t(T) * H, -1, 1, rng));
  std::vector<float> gate_logit(std::size_t(T) * 2);
  for (auto& g : gate_logit) g = std::uniform_real_distribution<float>(-4, 4)(rng);
  auto resid = to_bf16(uniform(std::size_t(T) * H, -1, 1, rng));
  std::vector<bf16> out_ref(resid);
  moe_combine_args ca;
  ca.n_tokens = T, ca.top_k = K, ca.hidden = H, ca.weights = weights.data(), ca.token_row = token_row.data();
  ca.y = y.data(), ca.y_stride = H, ca.y_type = gemm_out::fp32, ca.shared = shared.data(), ca.shared_stride = H;
  ca.shared_gate_logit = gate_logit.data(), ca.shared_gate_stride = 2, ca.residual = out_ref.data();
  ca.residual_stride = H, ca.out = out_ref.data(), ca.out_stride = H;
  moe_combine_ref(ca);
  dbuf<float> d_w(weights.size()), d_gl(gate_logit.size());
  dbuf<bf16> d_sh(shared.size()), d_out(resid.size());
  d_w.upload(weights), d_gl.upload(gate_logit), d_sh.upload(shared), d_out.upload(resid), d_y.upload(y);
  ca.weights = d_w.p, ca.token_row = d_tr.p, ca.y = d_y.p, ca.shared = d_sh.p, ca.shared_gate_logit = d_gl.p;
  ca.residual = d_out.p, ca.out = d_out.p;
  KERNEL_OK(moe_combine(ca, nullptr));
  const double e_out = rel_l2(to_float(d_out.download()), to_float(out_ref));
  std::printf("  [moe %s, %d rows] rel-L2 h %.3e  y %.3e  y(bf16) %.3e  out %.3e\n", c.name, used, e_h, e_y, e_yb,
              e_out);
  EXPECT_LT(e_h, 5e-3);
  EXPECT_LT(e_y, 1e-4);
  EXPECT_LT(e_yb, 5e-3);
  EXPECT_LT(e_out, 5e-3);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MoeExpertsCuda,
    ::testing::Values(moe_case{"small_decode", 5, 8, 2, 64, 32, 0, false, false, true},
                      moe_case{"small_odd_tiles_128", 37, 8, 2, 72, 40, 128, false, true, true},
                      moe_case{"small_odd_tiles_16", 37, 8, 2, 72, 40, 16, false, true, true},
                      moe_case{"small_prefill_skewed", 300, 8, 2, 64, 32, 0, true, true, true},
                      moe_case{"prefill_many_column_tiles", 150, 8, 2, 1032, 136, 128, false, true, true},
                      moe_case{"qwen_decode_b1", 1, 512, 10, 2048, 512, 0, false, false, false},
                      moe_case{"qwen_decode_b64", 64, 512, 10, 2048, 512, 0, false, true, false},
                      moe_case{"prefill_skewed_multi_chunk", 300, 16, 4, 512, 256, 0, true, true, false},
                      // sm_90a wgmma tiling (tile_m 256): partial k tiles, partial and several column tiles, skew
                      moe_case{"wgmma_odd_tiles", 37, 8, 2, 72, 40, 256, false, true, true},
                      moe_case{"wgmma_many_column_tiles", 150, 8, 2, 1032, 136, 256, false, true, true},
                      moe_case{"wgmma_skewed", 300, 8, 2, 64, 32, 256, true, true, true},
                      moe_case{"qwen_prefill_auto", 256, 512, 10, 2048, 512, 0, false, true, false}),
    [](const auto& info) { return std::string(info.param.name); });

// Permutation alone at prefill sizes (many chunks of 1024 entries): exact.
TEST(MoeCuda, PermuteManyChunksIsExact) {
  EV_REQUIRE_CUDA();
  std::mt19937 rng(43);
  for (int T : {1, 102, 103, 3277}) {  // 10 / 1020 entries: one-block path; 1030+: chunked path
    const int E = 512, K = 10, R = T * K;
    auto ids = route(T, E, K, T > 1000, true, rng);
    std::vector<std::int32_t> off(E + 1), rt(R, -1), tr(R);
    moe_permute_args a;
    a.n_tokens = T, a.n_experts = E, a.top_k = K, a.ids = ids.data(), a.expert_offsets = off.data();
    a.row_token = rt.data(), a.token_row = tr.data();
    moe_permute_ref(a);
    dbuf<std::int32_t> d_ids(R), d_off(E + 1), d_rt(R), d_tr(R);
    dbuf<unsigned char> d_ws(moe_permute_workspace_bytes(a));
    d_ids.upload(ids), d_rt.upload(std::vector<std::int32_t>(R, -1)), d_off.poison(), d_tr.poison(), d_ws.poison();
    a.ids = d_ids.p, a.expert_offsets = d_off.p, a.row_token = d_rt.p, a.token_row = d_tr.p;
    KERNEL_OK(moe_permute(a, d_ws.p, d_ws.n, nullptr));
    EXPECT_EQ(d_off.download(), off) << T;
    EXPECT_EQ(d_rt.download(), rt) << T;
    EXPECT_EQ(d_tr.download(), tr) << T;
  }
}

// Shared-expert SwiGLU: fp32 math on bf16 inputs, one rounding; equal to the reference except one-ulp flips.
TEST(MoeCuda, SwigluMatchesReference) {
  EV_REQUIRE_CUDA();
  std::mt19937 rng(47);
  const int n = 7, I = 520;
  auto in = to_bf16(uniform(std::size_t(n) * (2 * I + 16), -4, 4, rng));
  std::vector<bf16> ref(std::size_t(n) * I);
  swiglu_args a{n, I, in.data(), 2 * I + 16, ref.data(), I};
  swiglu_ref(a);
  dbuf<bf16> d_in(in.size()), d_out(ref.size());
  d_in.upload(in), d_out.poison();
  a.in = d_in.p, a.out = d_out.p;
  KERNEL_OK(swiglu(a, nullptr));
  EXPECT_LT(rel_l2(to_float(d_out.download()), to_float(ref)), 5e-3);
}

// ---------------------------------------------------------------------------------------------------------------------
// Prefill attention: varlen chunks on top of cached prefixes in a scattered paged cache, q|gate interleaved per head
// as the projection packs them. Tolerance 1e-2 rel-L2: as flash-attention, P is rounded to bf16 before the P V
// product (relative error <= 2^-9 per weight, averaging out over the keys) and the output is rounded to bf16
// (~1.1e-3); a mask or indexing mistake is O(0.1-1).
struct prefill_case {
  const char* name;
  std::vector<int> ctx, n_new;
  int block_size;
  bool small;
};
void PrintTo(const prefill_case& c, std::ostream* os) { *os << c.name; }

class AttentionPrefillCuda : public ::testing::TestWithParam<prefill_case> {};

TEST_P(AttentionPrefillCuda, MatchesReference) {
  EV_REQUIRE_CUDA();
  const prefill_case& c = GetParam();
  if (small_only() && !c.small) GTEST_SKIP() << "EVIDENT_KERNELS_SMALL=1: large case skipped";
  std::mt19937 rng(53);
  const int HQ = 16, HK = 2, D = 256, n_seq = int(c.ctx.size()), bs = c.block_size;
  int max_len = 0, total_blocks = 0, max_new = 0;
  std::vector<std::int32_t> cu(1, 0);
  for (int s = 0; s < n_seq; ++s) {
    max_len = std::max(max_len, c.ctx[s]), total_blocks += (c.ctx[s] + bs - 1) / bs;
    max_new = std::max(max_new, c.n_new[s]), cu.push_back(cu.back() + c.n_new[s]);
  }
  const int max_blocks = (max_len + bs - 1) / bs + 1, n_tok = cu.back();
  std::vector<std::int32_t> pool(total_blocks + 1);
  for (int i = 0; i <= total_blocks; ++i) pool[i] = i;
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<std::int32_t> tables(std::size_t(n_seq) * max_blocks, -1), slots;
  int next = 0;
  for (int s = 0; s < n_seq; ++s) {
    for (int b = 0; b < (c.ctx[s] + bs - 1) / bs; ++b) tables[std::size_t(s) * max_blocks + b] = pool[next++];
    for (int p = 0; p < c.ctx[s]; ++p) slots.push_back(tables[std::size_t(s) * max_blocks + p / bs] * bs + p % bs);
  }
  const int n_kv = int(slots.size()), n_blocks = total_blocks + 1;
  auto kin = to_bf16(uniform(std::size_t(n_kv) * HK * D, -1, 1, rng));
  auto vin = to_bf16(uniform(std::size_t(n_kv) * HK * D, -1, 1, rng));
  const std::size_t cache_n = std::size_t(n_blocks) * bs * HK * D;
  std::vector<bf16> kc(cache_n, float_to_bf16(7.f)), vc(cache_n, float_to_bf16(7.f));
  kv_write_args w;
  w.n_tokens = n_kv, w.n_kv_heads = HK, w.head_dim = D, w.k = kin.data(), w.k_stride = HK * D, w.v = vin.data();
  w.v_stride = HK * D, w.slot_mapping = slots.data();
  w.kv.k_cache = kc.data(), w.kv.v_cache = vc.data(), w.kv.n_blocks = n_blocks, w.kv.block_size = bs;
  kv_cache_write_ref(w);
  // q scaled up so the softmax is peaked (scores of a few units), as trained models' are.
  auto qg = to_bf16(uniform(std::size_t(std::max(n_tok, 1)) * HQ * 2 * D, -3, 3, rng));
  std::vector<bf16> out_ref(std::size_t(std::max(n_tok, 1)) * HQ * D);
  std::vector<std::int32_t> lens(c.ctx.begin(), c.ctx.end());
  attention_prefill_args a;
  a.n_seq = n_seq, a.n_tokens = n_tok, a.max_n_new = max_new, a.n_q_heads = HQ, a.n_kv_heads = HK, a.head_dim = D;
  a.scale = 1.f / 16.f, a.cu_q = cu.data(), a.seq_lens = lens.data();
  a.q = qg.data(), a.q_stride = HQ * 2 * D, a.q_head_stride = 2 * D;
  a.gate = qg.data() + D, a.gate_stride = HQ * 2 * D, a.gate_head_stride = 2 * D;
  a.kv = w.kv, a.kv.block_tables = tables.data(), a.kv.max_blocks_per_seq = max_blocks;
  a.out = out_ref.data(), a.out_stride = HQ * D;
  attention_prefill_ref(a);
  dbuf<bf16> d_k(kin.size()), d_v(vin.size()), d_kc(cache_n), d_vc(cache_n), d_qg(qg.size()), d_out(out_ref.size());
  dbuf<std::int32_t> d_slots(slots.size()), d_tables(tables.size()), d_lens(lens.size()), d_cu(cu.size());
  d_k.upload(kin), d_v.upload(vin), d_qg.upload(qg), d_slots.upload(slots), d_tables.upload(tables);
  d_lens.upload(lens), d_cu.upload(cu);
  d_kc.upload(std::vector<bf16>(cache_n, float_to_bf16(7.f))), d_vc.upload(std::vector<bf16>(cache_n, float_to_bf16(7.f)));
  w.k = d_k.p, w.v = d_v.p, w.slot_mapping = d_slots.p, w.kv.k_cache = d_kc.p, w.kv.v_cache = d_vc.p;
  KERNEL_OK(kv_cache_write(w, nullptr));
  a.q = d_qg.p, a.gate = d_qg.p + D, a.cu_q = d_cu.p, a.seq_lens = d_lens.p, a.kv.k_cache = d_kc.p;
  a.kv.v_cache = d_vc.p, a.kv.block_tables = d_tables.p, a.out = d_out.p;
  // The default (sm_90a: the plain wgmma kernel), the overlapped and the warp-specialized wgmma kernels, the 128-row
  // and 64-row mma.sync ones.
  for (auto [rows, overlap] :
       {std::pair{0, -1}, std::pair{0, 1}, std::pair{0, 2}, std::pair{128, 0}, std::pair{64, 0}}) {
    a.tile_rows = rows, a.wgmma_overlap = overlap;
    d_out.poison();
    KERNEL_OK(attention_prefill(a, nullptr));
    auto got = to_float(d_out.download()), want = to_float(out_ref);
    got.resize(std::size_t(n_tok) * HQ * D), want.resize(got.size());
    const double e = rel_l2(got, want);
    std::printf("  [attention prefill %s, %d query tokens, tile_rows %d, overlap %d] rel-L2 %.3e\n", c.name, n_tok,
                rows, overlap, e);
    EXPECT_LT(e, 1e-2) << "tile_rows " << rows << ", overlap " << overlap;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AttentionPrefillCuda,
    ::testing::Values(prefill_case{"single_token", {1}, {1}, 16, true},
                      prefill_case{"odd_prompt", {100}, {100}, 16, true},
                      prefill_case{"chunk_on_prefix", {300}, {37}, 8, true},
                      prefill_case{"mixed_batch", {5, 1000, 50, 64, 129, 3}, {5, 130, 0, 64, 1, 2}, 16, false},
                      prefill_case{"long_chunk", {1500}, {300}, 32, false}),
    [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------------------------------------
// Top-k / top-p / min-p sampling: the device uniforms equal fill_uniforms_ref bit for bit, and with them the kernel
// picks exactly the reference's token in every row (integer weights: no tolerance). Rows cover greedy, each filter
// alone and combined, ties (a planted duplicate of the top logit and of a mid-rank logit), -inf and NaN logits.
TEST(SamplingCuda, TopKTopPMinPMatchReference) {
  EV_REQUIRE_CUDA();
  std::mt19937 rng(59);
  for (int vocab : {37, 1000, 151936}) {
    if (small_only() && vocab > 1000) continue;
    const float temps[] = {0.f, 0.6f, 1.f, 1.5f, 0.7f, 1.f, 0.3f, 1.f, 2.f, 0.6f, 1.f, 1.f};
    const int topks[] = {0, 0, 20, 0, 1, 50, 0, 5, 0, 20, vocab + 3, 3};
    const float topps[] = {1.f, 0.95f, 1.f, 0.5f, 1.f, 0.9f, 1.f, 1.f, 0.01f, 0.95f, 0.99f, 1.f};
    const float minps[] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.05f, 0.1f, 0.f, 0.f, 0.f, 0.f, 0.5f};
    const int rows = 12;
    std::normal_distribution<float> nd(0.f, 3.f);
    std::vector<float> logits(std::size_t(rows) * vocab);
    for (auto& v : logits) v = nd(rng);
    for (int r = 0; r < rows; ++r) {
      float* l = logits.data() + std::size_t(r) * vocab;
      const int top = int(std::max_element(l, l + vocab) - l);
      l[(top + 7) % vocab] = l[top];  // tie at the top
      l[11] = l[3];                   // a tie further down
      l[5] = -INFINITY;
      if (r % 3 == 1) l[6] = NAN;
    }
    std::vector<float> temp(temps, temps + rows), tp(topps, topps + rows), mp(minps, minps + rows);
    std::vector<std::int32_t> tk(topks, topks + rows);
    std::vector<std::uint64_t> seeds(rows);
    std::vector<std::int64_t> steps(rows);
    for (int r = 0; r < rows; ++r) seeds[r] = 1000 + r * 7919ull, steps[r] = r * 3;
    std::vector<float> u(rows);
    uniforms_args ua{rows, seeds.data(), steps.data(), u.data()};
    fill_uniforms_ref(ua);
    std::vector<std::int32_t> ids_ref(rows);
    sample_args a;
    a.n_rows = rows, a.vocab = vocab, a.logits = logits.data(), a.stride = vocab, a.temperature = temp.data();
    a.top_k = tk.data(), a.top_p = tp.data(), a.min_p = mp.data(), a.uniforms = u.data(), a.ids = ids_ref.data();
    sample_ref(a);
    dbuf<float> d_l(logits.size()), d_t(rows), d_tp(rows), d_mp(rows), d_u(rows);
    dbuf<std::int32_t> d_tk(rows), d_ids(rows);
    dbuf<std::uint64_t> d_seeds(rows);
    dbuf<std::int64_t> d_steps(rows);
    d_l.upload(logits), d_t.upload(temp), d_tp.upload(tp), d_mp.upload(mp), d_tk.upload(tk);
    d_seeds.upload(seeds), d_steps.upload(steps), d_u.poison(), d_ids.poison();
    ua.seeds = d_seeds.p, ua.steps = d_steps.p, ua.u = d_u.p;
    KERNEL_OK(fill_uniforms(ua, nullptr));
    const auto u_dev = d_u.download();
    for (int r = 0; r < rows; ++r) ASSERT_EQ(u_dev[r], u[r]) << "uniform row " << r;
    a.logits = d_l.p, a.temperature = d_t.p, a.top_k = d_tk.p, a.top_p = d_tp.p, a.min_p = d_mp.p, a.uniforms = d_u.p;
    a.ids = d_ids.p;
    KERNEL_OK(sample(a, nullptr));
    EXPECT_EQ(d_ids.download(), ids_ref) << "vocab " << vocab;
    // Null filter arrays: every row unfiltered.
    a.top_k = nullptr, a.top_p = nullptr, a.min_p = nullptr;
    KERNEL_OK(sample(a, nullptr));
    std::vector<std::int32_t> ids_nf(rows);
    sample_args an = a;
    an.logits = logits.data(), an.temperature = temp.data(), an.uniforms = u.data(), an.ids = ids_nf.data();
    sample_ref(an);
    EXPECT_EQ(d_ids.download(), ids_nf) << "vocab " << vocab << ", no filters";
  }
}

}  // namespace
}  // namespace evident::kernels
