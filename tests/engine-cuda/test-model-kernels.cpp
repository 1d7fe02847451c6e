// engine/cuda's own kernels (engine/cuda/model-kernels.h), each against a plain fp64 CPU reference written here from
// the header's contract, on random inputs at Qwen3-Next-80B's real shapes (hidden 2048, attention heads 16/2 of 256
// with 64 rotary dims, 32 DeltaNet value heads, 512 experts top-10 of inter 512, shared inter 512, vocab 151936) and
// at odd small shapes (non-power-of-two sizes, padded strides; the padding must stay untouched). The `Small` tests
// are the ones run under compute-sanitizer memcheck (tools/gpu/run-model-kernels.sh).
//
// Covered: gdn_gates, qk_norm_rope, swiglu_generic (the production dense / shared-expert SwiGLU), add_rmsnorm_rows,
// gemv_small (bf16 and fp32 out, m = 1..8), moe_decode (routed h rows, shared h row, shared gate logit, combined
// output), argmax_rows, reset_states. Not covered here (generic fallbacks for the tiny fixture shapes, still checked
// end to end by test_engine_cuda_model): gdn_recurrent_generic, attention_generic, moe_generic.
//
// Tolerances. u = 2^-8 is bf16's unit roundoff (8 significant bits, round to nearest): one rounding of a value y
// errs by at most u|y|. Every kernel computes in fp32 and rounds its bf16 output once, so with the GPU's fp32 value
// y' = y + d,  |bf16(y') - y| <= u|y| + (1 + u)|d|.  d is bounded per element from the inputs:
//   - an fp32 dot product of length n (any summation order) errs by at most n 2^-24 sum|x_i w_i| (the classical
//     gamma_n bound; deterministic, so loose but never flaky);
//   - a contract-mandated inner bf16 rounding (moe_decode's shared expert rounds its gate/up dots and its down dot)
//     is emulated in the reference; where the fp32 value and the exact one straddle a rounding boundary they round
//     one ulp apart (<= 2u|v|), which enters d through the derivative of what follows;
//   - norms: the fp32 sum of squares errs by <= n 2^-24 relative, the rsqrt by half that plus a few ulps: 2^-13 for
//     dim 2048, 2^-15 for head_dim 256 (used as a relative term on the inputs of the RoPE rotation);
//   - libm in fp32 (expf, log1pf, sincosf; 1-2 ulps each in CUDA's non-fast-math library) and the fp32 rounding of
//     a + dt_bias (relative 2^-24, i.e. 2^-24 |x| absolute, which softplus turns into <= 2^-24 |x| relative):
//     fp32 gate outputs within 2^-24 (16 + |x|) relative.
// A wrong convention (a missing 1 + w, swapped gate/up, wrong head grouping or stride, a stale expert) moves outputs
// by O(1) relative, far beyond these bounds. argmax ids are exact (lowest index among equal maxima, NaN as -FLT_MAX).
// reset_states and the residual written back by add_rmsnorm_rows are exact (the fp32 sum of two bf16 values of
// similar magnitude is exact, so bf16(x + r) is one rounding of the exact sum).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "engine/cuda/model-kernels.h"
#include "tests/test-util.h"

namespace {

namespace ops = evident::engine::cuda_ops;
using evident::kernels::bf16;
using evident::kernels::bf16_to_float;
using evident::kernels::float_to_bf16;
using evident::kernels::round_bf16;

constexpr double kU = 1.0 / 256.0;             // bf16 unit roundoff 2^-8
constexpr double kF32 = 1.0 / 16777216.0;      // 2^-24

#define CUDA_OK(x)                                                                             \
  do {                                                                                         \
    const cudaError_t e_ = (x);                                                                \
    ASSERT_EQ(e_, cudaSuccess) << #x << ": " << cudaGetErrorString(e_);                        \
  } while (0)
#define OPS_OK(x)                                                                              \
  do {                                                                                         \
    const auto s_ = (x);                                                                       \
    ASSERT_TRUE(s_.ok()) << #x << ": " << s_.message;                                          \
  } while (0)

// Device buffer of n elements of T (RAII).
template <typename T>
struct dbuf {
  T* p = nullptr;
  std::size_t n = 0;
  explicit dbuf(std::size_t count) : n(count) {
    if (cudaMalloc(reinterpret_cast<void**>(&p), std::max<std::size_t>(n, 1) * sizeof(T)) != cudaSuccess) p = nullptr;
  }
  ~dbuf() {
    if (p) cudaFree(p);
  }
  dbuf(const dbuf&) = delete;
  dbuf& operator=(const dbuf&) = delete;
  bool up(const std::vector<T>& h) { return cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess; }
  std::vector<T> down() const {
    std::vector<T> h(n);
    if (cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) h.clear();
    return h;
  }
};

// splitmix64: fast, seeded, reproducible.
struct rng {
  std::uint64_t s;
  explicit rng(std::uint64_t seed) : s(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uni(double lo, double hi) { return lo + (hi - lo) * double(next() >> 11) * (1.0 / 9007199254740992.0); }
  int below(int n) { return int(next() % std::uint64_t(n)); }
};

std::vector<bf16> rand_bf16(rng& r, std::size_t n, double lo, double hi) {
  std::vector<bf16> v(n);
  for (auto& x : v) x = float_to_bf16(float(r.uni(lo, hi)));
  return v;
}
double f(bf16 b) { return double(bf16_to_float(b)); }
bool same_bits(bf16 a, bf16 b) { return a.bits == b.bits; }

// Counts elements outside |gpu - ref| <= tol and reports the first few.
struct checker {
  std::string what;
  int bad = 0;
  double worst = 0;  // max |gpu - ref| / tol
  template <typename Where>  // Where() -> std::string, called only on a failure
  void operator()(double gpu, double ref, double tol, Where&& where) {
    const double d = std::fabs(gpu - ref);
    const bool ok = d <= tol;  // NaN fails
    worst = std::max(worst, tol > 0 ? d / tol : (d > 0 ? 1e30 : 0));
    if (!ok && ++bad <= 8) ADD_FAILURE() << what << " at " << where() << ": gpu " << gpu << ", ref " << ref << ", tol " << tol;
  }
  ~checker() {
    EXPECT_EQ(bad, 0) << what << ": " << bad << " elements out of tolerance";
    std::printf("  %s: max |gpu - ref| / tol = %.3g\n", what.c_str(), worst);
  }
};
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
auto at(std::int64_t a, std::int64_t b) {
  return [a, b] { return cat("[", a, "][", b, "]"); };
}

double silu(double x) { return x / (1.0 + std::exp(-x)); }
double dsilu(double x) {
  const double s = 1.0 / (1.0 + std::exp(-x));
  return s * (1.0 + x * (1.0 - s));
}
double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---------------------------------------------------------------------------------------------------------------------
// gdn_gates
void run_gdn_gates(int n_tokens, int heads, std::int64_t stride, std::int64_t b_col, std::int64_t a_col, std::uint64_t seed) {
  rng r(seed);
  std::vector<bf16> in = rand_bf16(r, std::size_t(n_tokens) * stride, -6, 6);
  // Extremes: softplus's x > 20 branch, just below it, and a very negative x.
  in[a_col + 0] = float_to_bf16(40.f);
  if (heads > 1) in[a_col + 1] = float_to_bf16(19.5f);
  if (heads > 2) in[a_col + 2] = float_to_bf16(-30.f);
  in[b_col] = float_to_bf16(-20.f);
  std::vector<float> a_log(heads), dt_bias(heads);
  for (int h = 0; h < heads; ++h) a_log[h] = float(r.uni(-3, 2.5)), dt_bias[h] = float(r.uni(-2, 2));
  dbuf<bf16> d_in(in.size());
  dbuf<float> d_alog(heads), d_dt(heads), d_g(std::size_t(n_tokens) * heads), d_beta(std::size_t(n_tokens) * heads);
  ASSERT_TRUE(d_in.up(in) && d_alog.up(a_log) && d_dt.up(dt_bias));
  ops::gdn_gates_args a;
  a.n_tokens = n_tokens;
  a.n_v_heads = heads;
  a.b = d_in.p + b_col;
  a.a = d_in.p + a_col;
  a.stride = stride;
  a.a_log = d_alog.p;
  a.dt_bias = d_dt.p;
  a.g = d_g.p;
  a.beta = d_beta.p;
  OPS_OK(ops::gdn_gates(a, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto g = d_g.down(), beta = d_beta.down();
  checker cg{"gdn_gates g"}, cb{"gdn_gates beta"};
  for (int t = 0; t < n_tokens; ++t)
    for (int h = 0; h < heads; ++h) {
      const double x = f(in[t * stride + a_col + h]) + double(dt_bias[h]);
      const double sp = x > 20 ? x : std::log1p(std::exp(x));
      const double gr = -std::exp(double(a_log[h])) * sp;
      const double br = sigm(f(in[t * stride + b_col + h]));
      cg(g[t * heads + h], gr, kF32 * (16 + std::fabs(x)) * std::fabs(gr), at(t, h));
      cb(beta[t * heads + h], br, kF32 * 16 * std::fabs(br), at(t, h));
    }
}
TEST(ModelKernels, GdnGatesReal) {
  EV_REQUIRE_CUDA();
  // 32 value heads; b and a are columns of the fused in_proj row (qkvz 12288 wide, then b 32, a 32).
  run_gdn_gates(7, 32, 12352, 12288, 12320, 1);
}
TEST(ModelKernels, GdnGatesSmall) {
  EV_REQUIRE_CUDA();
  run_gdn_gates(3, 5, 13, 1, 7, 2);
}

// ---------------------------------------------------------------------------------------------------------------------
// qk_norm_rope
void run_qk_norm_rope(int n_tokens, int nq, int nkv, int hd, int rot, std::int64_t q_stride, std::int64_t q_head_stride,
                      std::int64_t k_stride, double theta, const std::vector<int>& positions, std::uint64_t seed) {
  rng r(seed);
  const float eps = 1e-6f;
  std::vector<bf16> q = rand_bf16(r, std::size_t(n_tokens) * q_stride, -3, 3);
  std::vector<bf16> k = rand_bf16(r, std::size_t(n_tokens) * k_stride, -3, 3);
  std::vector<bf16> qw = rand_bf16(r, hd, -0.5, 0.5), kw = rand_bf16(r, hd, -0.5, 0.5);
  std::vector<float> inv_freq(std::max(rot / 2, 1));
  for (int i = 0; i < rot / 2; ++i) inv_freq[i] = float(std::pow(theta, -2.0 * i / rot));
  dbuf<bf16> dq(q.size()), dk(k.size()), dqw(hd), dkw(hd);
  dbuf<float> dfreq(inv_freq.size());
  dbuf<std::int32_t> dpos(n_tokens);
  std::vector<std::int32_t> pos(positions.begin(), positions.end());
  ASSERT_EQ(int(pos.size()), n_tokens);
  ASSERT_TRUE(dq.up(q) && dk.up(k) && dqw.up(qw) && dkw.up(kw) && dfreq.up(inv_freq) && dpos.up(pos));
  ops::qk_norm_rope_args a;
  a.n_tokens = n_tokens;
  a.n_q_heads = nq;
  a.n_kv_heads = nkv;
  a.head_dim = hd;
  a.rotary_dim = rot;
  a.eps = eps;
  a.q = dq.p;
  a.q_stride = q_stride;
  a.q_head_stride = q_head_stride;
  a.k = dk.p;
  a.k_stride = k_stride;
  a.q_w = dqw.p;
  a.k_w = dkw.p;
  a.inv_freq = dfreq.p;
  a.positions = dpos.p;
  OPS_OK(ops::qk_norm_rope(a, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto gq = dq.down(), gk = dk.down();
  checker c{"qk_norm_rope"};
  int untouched_bad = 0;
  auto head = [&](const std::vector<bf16>& in, const std::vector<bf16>& out, std::int64_t off, const std::vector<bf16>& w,
                  int t, int hh) {
    std::vector<double> y(hd);
    double ss = 0;
    for (int d = 0; d < hd; ++d) ss += f(in[off + d]) * f(in[off + d]);
    const double inv = 1.0 / std::sqrt(ss / hd + double(eps));
    for (int d = 0; d < hd; ++d) y[d] = f(in[off + d]) * inv * (1.0 + f(w[d]));
    const int half = rot / 2;
    for (int d = 0; d < hd; ++d) {
      double ref = y[d], mag = std::fabs(y[d]);
      if (d < rot) {
        const int i = d < half ? d : d - half;
        // The contract's angle is the fp32 product float(pos) * inv_freq[i] (its rounding is part of the result).
        const double ang = double(float(pos[t]) * inv_freq[i]);
        const double cs = std::cos(ang), sn = std::sin(ang);
        ref = d < half ? y[d] * cs - y[d + half] * sn : y[d] * cs + y[d - half] * sn;
        mag = std::fabs(y[d]) + std::fabs(d < half ? y[d + half] : y[d - half]);
      }
      // bf16 output rounding + fp32 norm (<= 2^-15 relative at head_dim 256) and sincosf / products (few 2^-24).
      c(f(out[off + d]), ref, kU * std::fabs(ref) + std::ldexp(1.0, -15) * mag, [&] {
        return cat("token ", t, " head ", hh, " dim ", d);
      });
    }
  };
  std::vector<char> q_mark(q.size(), 0), k_mark(k.size(), 0);
  for (int t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < nq; ++h) {
      const std::int64_t off = t * q_stride + h * q_head_stride;
      head(q, gq, off, qw, t, h);
      std::fill(q_mark.begin() + off, q_mark.begin() + off + hd, 1);
    }
    for (int h = 0; h < nkv; ++h) {
      const std::int64_t off = t * k_stride + std::int64_t(h) * hd;
      head(k, gk, off, kw, t, nq + h);
      std::fill(k_mark.begin() + off, k_mark.begin() + off + hd, 1);
    }
  }
  for (std::size_t i = 0; i < q.size(); ++i) untouched_bad += !q_mark[i] && !same_bits(q[i], gq[i]);
  for (std::size_t i = 0; i < k.size(); ++i) untouched_bad += !k_mark[i] && !same_bits(k[i], gk[i]);
  EXPECT_EQ(untouched_bad, 0) << "qk_norm_rope wrote outside the q / k heads (gate columns or row padding)";
}
TEST(ModelKernels, QkNormRopeReal) {
  EV_REQUIRE_CUDA();
  // q_proj rows hold [q | gate] per head (head stride 512, row 8192); k inside a wider fused row; theta 1e7.
  run_qk_norm_rope(6, 16, 2, 256, 64, 8192, 512, 1024, 1e7, {0, 1, 17, 4095, 65536, 262143}, 3);
}
TEST(ModelKernels, QkNormRopeSmall) {
  EV_REQUIRE_CUDA();
  run_qk_norm_rope(5, 3, 1, 24, 10, 80, 24, 27, 1e4, {0, 3, 2, 100, 7}, 4);
  run_qk_norm_rope(2, 9, 3, 40, 0, 9 * 40, 40, 120, 1e4, {5, 6}, 5);  // no rotary dims; 9 heads > 8 warps
}

// ---------------------------------------------------------------------------------------------------------------------
// swiglu_generic
void run_swiglu(int n_rows, int inter, std::int64_t in_stride, std::int64_t out_stride, std::uint64_t seed) {
  rng r(seed);
  std::vector<bf16> in = rand_bf16(r, std::size_t(n_rows) * in_stride, -8, 8);
  std::vector<bf16> out0 = rand_bf16(r, std::size_t(n_rows) * out_stride, -1, 1);
  dbuf<bf16> din(in.size()), dout(out0.size());
  ASSERT_TRUE(din.up(in) && dout.up(out0));
  OPS_OK(ops::swiglu_generic(n_rows, inter, din.p, in_stride, dout.p, out_stride, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto out = dout.down();
  checker c{"swiglu_generic"};
  int pad_bad = 0;
  for (int rr = 0; rr < n_rows; ++rr)
    for (std::int64_t i = 0; i < out_stride; ++i) {
      if (i >= inter) {
        pad_bad += !same_bits(out[rr * out_stride + i], out0[rr * out_stride + i]);
        continue;
      }
      const double g = f(in[rr * in_stride + i]), u = f(in[rr * in_stride + inter + i]);
      const double ref = silu(g) * u;
      c(f(out[rr * out_stride + i]), ref, kU * std::fabs(ref) + 16 * kF32 * std::fabs(ref), at(rr, i));
    }
  EXPECT_EQ(pad_bad, 0) << "swiglu_generic wrote into the output row padding";
}
TEST(ModelKernels, SwigluReal) {
  EV_REQUIRE_CUDA();
  run_swiglu(8, 512, 1024, 512, 6);
}
TEST(ModelKernels, SwigluSmall) {
  EV_REQUIRE_CUDA();
  run_swiglu(3, 13, 30, 15, 7);
}

// ---------------------------------------------------------------------------------------------------------------------
// add_rmsnorm_rows
void run_add_rmsnorm(int n_rows, int dim, std::int64_t xs, std::int64_t rs, std::int64_t os, bool with_res,
                     std::uint64_t seed) {
  rng r(seed);
  const float eps = 1e-6f;
  std::vector<bf16> x = rand_bf16(r, std::size_t(n_rows) * xs, -2, 2);
  std::vector<bf16> res = rand_bf16(r, std::size_t(n_rows) * rs, -2, 2);
  std::vector<bf16> w = rand_bf16(r, dim, -0.5, 0.5);
  std::vector<bf16> out0 = rand_bf16(r, std::size_t(n_rows) * os, -1, 1);
  dbuf<bf16> dx(x.size()), dres(res.size()), dw(dim), dout(out0.size());
  ASSERT_TRUE(dx.up(x) && dres.up(res) && dw.up(w) && dout.up(out0));
  ops::add_rmsnorm_args a;
  a.n_rows = n_rows;
  a.dim = dim;
  a.eps = eps;
  a.x = dx.p;
  a.x_stride = xs;
  a.residual = with_res ? dres.p : nullptr;
  a.residual_stride = rs;
  a.w = dw.p;
  a.out = dout.p;
  a.out_stride = os;
  ASSERT_TRUE(ops::add_rmsnorm_rows_supported(a));
  OPS_OK(ops::add_rmsnorm_rows(a, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto out = dout.down(), res2 = dres.down();
  checker c{"add_rmsnorm_rows out"};
  int res_bad = 0, pad_bad = 0;
  // fp32 sum of squares over dim terms and rsqrt: (dim + 8) 2^-24 relative on the scale, as a relative term.
  const double rel = kU + (dim + 8) * kF32;
  for (int rr = 0; rr < n_rows; ++rr) {
    std::vector<double> h(dim);
    double ss = 0;
    for (int i = 0; i < dim; ++i) {
      h[i] = f(x[rr * xs + i]);
      if (with_res) {
        const bf16 hb = float_to_bf16(float(h[i] + f(res[rr * rs + i])));  // exact fp32 sum, one bf16 rounding
        res_bad += !same_bits(hb, res2[rr * rs + i]);
        h[i] = f(hb);
      }
      ss += h[i] * h[i];
    }
    const double inv = 1.0 / std::sqrt(ss / dim + double(eps));
    for (std::int64_t i = 0; i < os; ++i) {
      if (i >= dim) {
        pad_bad += !same_bits(out[rr * os + i], out0[rr * os + i]);
        continue;
      }
      const double ref = h[i] * inv * (1.0 + f(w[i]));
      c(f(out[rr * os + i]), ref, rel * std::fabs(ref), at(rr, i));
    }
    for (std::int64_t i = dim; i < rs && with_res; ++i) res_bad += !same_bits(res[rr * rs + i], res2[rr * rs + i]);
  }
  EXPECT_EQ(res_bad, 0) << "add_rmsnorm_rows: residual written back differs from bf16(x + residual) (or its padding)";
  EXPECT_EQ(pad_bad, 0) << "add_rmsnorm_rows wrote into the output row padding";
  if (!with_res) {
    EXPECT_EQ(std::memcmp(res.data(), res2.data(), res.size() * 2), 0) << "add_rmsnorm_rows wrote a null residual's buffer";
  }
}
TEST(ModelKernels, AddRmsnormReal) {
  EV_REQUIRE_CUDA();
  for (int rows : {1, 3, 8}) {
    run_add_rmsnorm(rows, 2048, 2048, 2048, 2048, true, 10 + rows);
    run_add_rmsnorm(rows, 2048, 2048, 2048, 2048, false, 20 + rows);
  }
}
TEST(ModelKernels, AddRmsnormSmall) {
  EV_REQUIRE_CUDA();
  run_add_rmsnorm(3, 24, 32, 40, 48, true, 30);
  run_add_rmsnorm(2, 8200 - 8, 8200, 8200, 8200, true, 31);  // near the 8192 limit, not a multiple of 256 * 8
}

// ---------------------------------------------------------------------------------------------------------------------
// gemv_small
void run_gemv(int m, int n, int k, std::int64_t ldx, std::int64_t ldw, std::int64_t ldy, bool fp32, std::uint64_t seed) {
  rng r(seed);
  const double ws = 1.0 / std::sqrt(double(k));
  std::vector<bf16> x = rand_bf16(r, std::size_t(m) * ldx, -1, 1);
  std::vector<bf16> w = rand_bf16(r, std::size_t(n) * ldw, -ws, ws);
  const std::size_t ny = std::size_t(m) * ldy;
  dbuf<bf16> dx(x.size()), dw(w.size());
  dbuf<float> dyf(fp32 ? ny : 0);
  dbuf<bf16> dyb(fp32 ? 0 : ny);
  const float pad = -768.f;  // exact in bf16 and fp32
  std::vector<float> y0f(fp32 ? ny : 0, pad);
  std::vector<bf16> y0b(fp32 ? 0 : ny, float_to_bf16(pad));
  ASSERT_TRUE(dx.up(x) && dw.up(w) && (fp32 ? dyf.up(y0f) : dyb.up(y0b)));
  ops::gemv_args a;
  a.m = m;
  a.n = n;
  a.k = k;
  a.x = dx.p;
  a.ldx = ldx;
  a.w = dw.p;
  a.ldw = ldw;
  a.y = fp32 ? static_cast<void*>(dyf.p) : static_cast<void*>(dyb.p);
  a.ldy = ldy;
  a.y_fp32 = fp32;
  ASSERT_TRUE(ops::gemv_small_supported(a));
  OPS_OK(ops::gemv_small(a, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto yf = fp32 ? dyf.down() : std::vector<float>();
  const auto yb = fp32 ? std::vector<bf16>() : dyb.down();
  checker c{cat("gemv_small m=", m, " n=", n, " k=", k, fp32 ? " fp32" : " bf16")};
  int pad_bad = 0;
  for (int i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < ldy; ++j) {
      const double gpu = fp32 ? double(yf[i * ldy + j]) : f(yb[i * ldy + j]);
      if (j >= n) {
        pad_bad += gpu != double(pad);
        continue;
      }
      double s = 0, sa = 0;
      for (int kk = 0; kk < k; ++kk) {
        const double p = f(x[i * ldx + kk]) * f(w[j * ldw + kk]);
        s += p;
        sa += std::fabs(p);
      }
      c(gpu, s, (fp32 ? 0.0 : kU * std::fabs(s)) + (1 + kU) * k * kF32 * sa, at(i, j));
    }
  EXPECT_EQ(pad_bad, 0) << "gemv_small wrote into the output row padding";
}
TEST(ModelKernels, GemvReal) {
  EV_REQUIRE_CUDA();
  // Production uses it for m <= gemv_max_m rows and n * k <= 2^24: router (512 x 2048, fp32 out), shared expert
  // gate_up (1024 x 2048), attention o_proj / DeltaNet out_proj (2048 x 4096).
  for (int m : {1, 2, 5, 8}) {
    run_gemv(m, 512, 2048, 2048, 2048, 512, true, 40 + m);
    run_gemv(m, 1024, 2048, 2048, 2048, 1024, false, 50 + m);
    run_gemv(m, 2048, 4096, 4096, 4096, 2048, false, 60 + m);
  }
}
TEST(ModelKernels, GemvSmall) {
  EV_REQUIRE_CUDA();
  for (int m = 1; m <= 8; ++m) run_gemv(m, 37, 24, 32, 40, 41, m % 2 == 0, 70 + m);
  run_gemv(3, 5, 2056, 2064, 2056, 7, false, 80);  // k8 = 257: the unrolled loop's partial tail
}

// ---------------------------------------------------------------------------------------------------------------------
// moe_decode
struct moe_case {
  int n_tokens, n_experts, top_k, hidden, inter, shared_inter;
  std::int64_t x_stride, h_stride, out_stride;
  bool shared, shared_gate;
  std::vector<std::vector<int>> ids;  // [n_tokens][top_k]; may hold invalid ids
};

void run_moe_decode(const moe_case& mc, std::uint64_t seed) {
  rng r(seed);
  const int T = mc.n_tokens, E = mc.n_experts, K = mc.top_k, H = mc.hidden, I = mc.inter, S = mc.shared_inter;
  const double wsh = 1.0 / std::sqrt(double(H)), wsi = 1.0 / std::sqrt(double(std::max(I, S)));
  std::vector<bf16> x = rand_bf16(r, std::size_t(T) * mc.x_stride, -1.5, 1.5);
  std::vector<std::int32_t> ids(std::size_t(T) * K);
  std::vector<float> weights(std::size_t(T) * K);
  for (int t = 0; t < T; ++t)
    for (int k = 0; k < K; ++k) ids[t * K + k] = mc.ids[t][k], weights[t * K + k] = float(r.uni(0.01, 0.3));
  // Experts: only the ones chosen get random weights (uploaded slice by slice); the rest of the 1 GiB tensors is
  // filled with bf16 3.0 (bytes 0x40), so reading a wrong expert shows as an O(1) error.
  const std::size_t gu_elems = std::size_t(2) * I * H, dn_elems = std::size_t(H) * I;
  dbuf<bf16> dgu(std::size_t(E) * gu_elems), ddn(std::size_t(E) * dn_elems);
  ASSERT_TRUE(dgu.p && ddn.p) << "cudaMalloc of the expert tensors failed";
  CUDA_OK(cudaMemset(dgu.p, 0x40, dgu.n * 2));
  CUDA_OK(cudaMemset(ddn.p, 0x40, ddn.n * 2));
  std::map<int, std::vector<bf16>> gu, dn;
  for (int e : ids)
    if (e >= 0 && e < E && !gu.count(e)) {
      gu[e] = rand_bf16(r, gu_elems, -wsh, wsh);
      dn[e] = rand_bf16(r, dn_elems, -wsi, wsi);
      CUDA_OK(cudaMemcpy(dgu.p + e * gu_elems, gu[e].data(), gu_elems * 2, cudaMemcpyHostToDevice));
      CUDA_OK(cudaMemcpy(ddn.p + e * dn_elems, dn[e].data(), dn_elems * 2, cudaMemcpyHostToDevice));
    }
  std::vector<bf16> sgu = rand_bf16(r, std::size_t(2) * S * H, -wsh, wsh), sdn = rand_bf16(r, std::size_t(H) * S, -wsi, wsi);
  std::vector<bf16> sgate = rand_bf16(r, H, -3 * wsh, 3 * wsh);
  const std::size_t h_rows = std::size_t(T) * (K + 1);
  std::vector<bf16> h0(h_rows * mc.h_stride, float_to_bf16(-777.f));
  std::vector<bf16> out0 = rand_bf16(r, std::size_t(T) * mc.out_stride, -1, 1);
  dbuf<bf16> dx(x.size()), dsgu(sgu.size()), dsdn(sdn.size()), dsg(H), dh(h0.size()), dout(out0.size());
  dbuf<std::int32_t> dids(ids.size());
  dbuf<float> dw(weights.size()), dsgl(T);
  ASSERT_TRUE(dx.up(x) && dsgu.up(sgu) && dsdn.up(sdn) && dsg.up(sgate) && dh.up(h0) && dout.up(out0) && dids.up(ids) &&
              dw.up(weights));
  ops::moe_decode_args a;
  a.n_tokens = T;
  a.n_experts = E;
  a.top_k = K;
  a.hidden = H;
  a.inter = I;
  a.x = dx.p;
  a.x_stride = mc.x_stride;
  a.ids = dids.p;
  a.weights = dw.p;
  a.w_gate_up = dgu.p;
  a.w_down = ddn.p;
  if (mc.shared) {
    a.shared_inter = S;
    a.w_shared_gate_up = dsgu.p;
    a.w_shared_down = dsdn.p;
    if (mc.shared_gate) {
      a.w_shared_gate = dsg.p;
      a.sg = dsgl.p;
    }
  }
  a.h = dh.p;
  a.h_stride = mc.h_stride;
  a.out = dout.p;
  a.out_stride = mc.out_stride;
  ASSERT_TRUE(ops::moe_decode_supported(a));
  OPS_OK(ops::moe_decode(a, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<bf16> h = dh.down(), out = dout.down();
  const std::vector<float> sgl = dsgl.down();

  // Stage 1 against the reference from x and the weights: h rows (routed; shared with its two inner roundings).
  checker ch{"moe_decode h"}, csg{"moe_decode shared gate logit"}, cout{"moe_decode out"};
  auto dot = [&](const bf16* xr, const bf16* wr, int n, double* sa) {
    double s = 0;
    *sa = 0;
    for (int i = 0; i < n; ++i) {
      const double p = f(xr[i]) * f(wr[i]);
      s += p;
      *sa += std::fabs(p);
    }
    return s;
  };
  std::vector<double> sg_ref(T, 0.0), sg_err(T, 0.0);
  for (int t = 0; t < T; ++t) {
    const bf16* xr = x.data() + t * mc.x_stride;
    for (int k = 0; k <= K; ++k) {
      const bool sh = k == K;
      if (sh && !mc.shared) continue;
      const int e = sh ? -2 : ids[t * K + k];
      const int n_i = sh ? S : I;
      const std::int64_t row = std::int64_t(t) * (K + 1) + k;
      for (int i = 0; i < n_i; ++i) {
        const double gpu = f(h[row * mc.h_stride + i]);
        auto where = [&] { return cat("token ", t, " slot ", k, " i ", i); };
        if (!sh && (e < 0 || e >= E)) {
          ch(gpu, 0.0, 0.0, [&] { return cat(where(), " (invalid id)"); });
          continue;
        }
        const bf16* wb = sh ? sgu.data() : gu[e].data();
        double sag, sau;
        double g = dot(xr, wb + std::size_t(i) * H, H, &sag);
        double u = dot(xr, wb + std::size_t(n_i + i) * H, H, &sau);
        const double dg = H * kF32 * sag, du = H * kF32 * sau;  // fp32 dot bounds
        double extra;
        if (sh) {  // gemm_bf16 + swiglu: g and u rounded to bf16 first (one ulp apart at worst: 2u|v| + d)
          const double eg = 2 * kU * std::fabs(g) + dg, eu = 2 * kU * std::fabs(u) + du;
          g = double(round_bf16(float(g)));
          u = double(round_bf16(float(u)));
          extra = (std::fabs(dsilu(g)) + 0.1) * eg * (std::fabs(u) + eu) + std::fabs(silu(g)) * eu;
        } else {
          extra = (std::fabs(dsilu(g)) + 0.1) * dg * (std::fabs(u) + du) + std::fabs(silu(g)) * du;
        }
        const double ref = silu(g) * u;
        ch(gpu, ref, kU * std::fabs(ref) + (1 + kU) * extra, where);
      }
    }
    if (mc.shared && mc.shared_gate) {
      double sa;
      sg_ref[t] = dot(xr, sgate.data(), H, &sa);
      sg_err[t] = H * kF32 * sa;
      csg(sgl[t], sg_ref[t], sg_err[t], [&] { return cat("token ", t); });
    }
  }
  // Unused h row slots (beyond inter / shared_inter inside h_stride) stay untouched.
  int hpad_bad = 0;
  for (std::size_t row = 0; row < h_rows; ++row) {
    const bool sh = int(row % (K + 1)) == K;
    const int n_i = sh ? (mc.shared ? S : 0) : I;
    for (std::int64_t i = n_i; i < mc.h_stride; ++i) hpad_bad += h[row * mc.h_stride + i].bits != h0[0].bits;
  }
  EXPECT_EQ(hpad_bad, 0) << "moe_decode wrote h elements past inter / shared_inter";

  // Stage 2 against the reference from the GPU's h (checked above): routed down + combine, shared down rounded to
  // bf16 (emulated; one ulp apart at worst), times sigmoid of the gate logit.
  int pad_bad = 0;
  for (int t = 0; t < T; ++t)
    for (std::int64_t j = 0; j < mc.out_stride; ++j) {
      if (j >= H) {
        pad_bad += !same_bits(out[t * mc.out_stride + j], out0[t * mc.out_stride + j]);
        continue;
      }
      double acc = 0, err = 0;
      for (int k = 0; k < K; ++k) {
        const int e = ids[t * K + k];
        if (e < 0 || e >= E) continue;
        double sa;
        const double s = dot(h.data() + (std::int64_t(t) * (K + 1) + k) * mc.h_stride, dn[e].data() + std::size_t(j) * I, I, &sa);
        acc += double(weights[t * K + k]) * s;
        err += double(weights[t * K + k]) * (I + K) * kF32 * sa;
      }
      if (mc.shared) {
        double sa;
        const double s = dot(h.data() + (std::int64_t(t) * (K + 1) + K) * mc.h_stride, sdn.data() + std::size_t(j) * S, S, &sa);
        const double sb = double(round_bf16(float(s)));
        const double gate = mc.shared_gate ? sigm(sg_ref[t]) : 1.0;
        acc += gate * sb;
        // + the gate: sigmoid' <= 1/4 times the logit's fp32 error, and expf / the division (a few 2^-24).
        const double gate_err = mc.shared_gate ? 0.25 * sg_err[t] + 8 * kF32 : 0.0;
        err += gate * (2 * kU * std::fabs(s) + S * kF32 * sa) + std::fabs(sb) * gate_err;
      }
      cout(f(out[t * mc.out_stride + j]), acc, kU * std::fabs(acc) + (1 + kU) * err,
           [&] { return cat("token ", t, " j ", j); });
    }
  EXPECT_EQ(pad_bad, 0) << "moe_decode wrote into the output row padding";
}

TEST(ModelKernels, MoeDecodeReal) {
  EV_REQUIRE_CUDA();
  rng r(90);
  for (int T : {1, 8}) {
    moe_case mc{T, 512, 10, 2048, 512, 512, 2048, 512, 2048, true, true, {}};
    for (int t = 0; t < T; ++t) {
      std::vector<int> row;
      while (int(row.size()) < 10) {
        const int e = r.below(512);
        if (std::find(row.begin(), row.end(), e) == row.end()) row.push_back(e);
      }
      mc.ids.push_back(row);
    }
    mc.ids[0][0] = 511;  // the last expert (largest offsets)
    mc.ids[0][1] = 0;
    run_moe_decode(mc, 100 + T);
  }
}
TEST(ModelKernels, MoeDecodeSmall) {
  EV_REQUIRE_CUDA();
  // Odd sizes; invalid ids (-1, n_experts) contribute nothing; an expert used twice by one token; padded strides.
  moe_case mc{3, 5, 3, 40, 16, 24, 48, 32, 44, true, true, {{4, 0, -1}, {2, 2, 5}, {1, 3, 0}}};
  run_moe_decode(mc, 110);
  mc.shared_gate = false;  // no gate: weight 1
  run_moe_decode(mc, 111);
  moe_case ns{2, 4, 2, 264, 40, 0, 264, 40, 270, false, false, {{3, 1}, {0, 3}}};  // no shared expert; h8 = 33
  run_moe_decode(ns, 112);
}

// ---------------------------------------------------------------------------------------------------------------------
// argmax_rows
// The contract: ids[r] = the lowest index among the maxima of row r, NaN counts as -FLT_MAX.
int argmax_ref(const float* l, int vocab) {
  int best = 0;
  auto key = [](float v) { return v != v ? -FLT_MAX : v; };
  for (int j = 1; j < vocab; ++j)
    if (key(l[j]) > key(l[best])) best = j;
  return best;
}
void run_argmax(const std::vector<std::vector<float>>& rows, int vocab, std::int64_t stride) {
  const int n = int(rows.size());
  std::vector<float> l(std::size_t(n) * stride, 1e30f);  // padding larger than anything: must not be read
  for (int r = 0; r < n; ++r) std::copy(rows[r].begin(), rows[r].end(), l.begin() + r * stride);
  dbuf<float> dl(l.size());
  dbuf<std::int32_t> dids(n);
  const std::size_t ws = ops::argmax_rows_workspace_bytes(n);
  dbuf<unsigned char> dws(ws);
  ASSERT_TRUE(dl.up(l));
  OPS_OK(ops::argmax_rows(n, vocab, dl.p, stride, dids.p, dws.p, ws, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto ids = dids.down();
  for (int r = 0; r < n; ++r)
    EXPECT_EQ(ids[r], argmax_ref(rows[r].data(), vocab)) << "argmax_rows row " << r << " of " << n << ", vocab " << vocab;
}
std::vector<float> rand_row(rng& r, int vocab) {
  std::vector<float> v(vocab);
  for (auto& x : v) x = float(r.uni(-20, 20));
  return v;
}
TEST(ModelKernels, ArgmaxReal) {
  EV_REQUIRE_CUDA();
  const int V = 151936;
  rng r(120);
  std::vector<std::vector<float>> rows;
  for (int i = 0; i < 8; ++i) rows.push_back(rand_row(r, V));
  rows[1][V - 1] = 50.f;                                    // the last id
  rows[2][0] = 50.f;                                        // the first id
  rows[3][100000] = 50.f, rows[3][7] = 50.f, rows[3][99999] = 50.f;  // ties across chunks: lowest index 7
  rows[4][2375] = 50.f, rows[4][2374] = 50.f;               // a tie at a chunk border (151936 / 64 = 2374)
  for (int j = 0; j < V; j += 3) rows[5][j] = std::numeric_limits<float>::quiet_NaN();  // NaNs never win
  rows[5][0] = std::numeric_limits<float>::quiet_NaN();
  for (auto& x : rows[6]) x = -3.f;                         // all equal: 0
  rows[7][5000] = std::numeric_limits<float>::infinity();
  run_argmax(rows, V, V);
  run_argmax({rows[3]}, V, V);
  run_argmax({rows[1], rows[4], rows[5]}, V, V + 5);
}
TEST(ModelKernels, ArgmaxSmall) {
  EV_REQUIRE_CUDA();
  rng r(121);
  for (int V : {1, 2, 37, 63, 64, 65, 200}) {
    std::vector<std::vector<float>> rows;
    for (int i = 0; i < 3; ++i) rows.push_back(rand_row(r, V));
    rows[1][V - 1] = 25.f;
    rows[2].assign(V, -1.f);
    run_argmax(rows, V, V + 3);
  }
  // Rows with nothing above -FLT_MAX: all NaN (NaN counts as -FLT_MAX: id 0), all -inf (all equal: id 0),
  // NaN then -inf (NaN as -FLT_MAX beats -inf: id 0), -inf then NaN (id 1), -FLT_MAX after NaN (tie: id 0).
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  run_argmax({{nan, nan, nan, nan}, {-inf, -inf, -inf, -inf}, {nan, -inf, -inf, -inf}, {-inf, nan, -inf, -inf},
              {nan, -FLT_MAX, -inf, nan}},
             4, 4);
  std::vector<float> big(151936, -inf);
  run_argmax({big}, 151936, 151936);
}

// ---------------------------------------------------------------------------------------------------------------------
// reset_states
TEST(ModelKernels, ResetStatesSmall) {
  EV_REQUIRE_CUDA();
  const int L = 3, slots = 5, conv_slot = 37, rec_slot = 53;
  const std::int64_t conv_ls = slots * conv_slot + 11, rec_ls = slots * rec_slot + 7;
  rng r(130);
  std::vector<bf16> conv = rand_bf16(r, std::size_t(L) * conv_ls, 0.5, 1.5);
  std::vector<float> rec(std::size_t(L) * rec_ls);
  for (auto& v : rec) v = float(r.uni(0.5, 1.5));
  const std::vector<std::int32_t> flags{1, 0, 1, 1}, slot{3, 1, 0, 4};
  dbuf<bf16> dconv(conv.size());
  dbuf<float> drec(rec.size());
  dbuf<std::int32_t> dflags(4), dslots(4);
  ASSERT_TRUE(dconv.up(conv) && drec.up(rec) && dflags.up(flags) && dslots.up(slot));
  ops::reset_states_args a;
  a.n_entries = 4;
  a.n_layers = L;
  a.flags = dflags.p;
  a.slots = dslots.p;
  a.conv = dconv.p;
  a.conv_layer_stride = conv_ls;
  a.conv_slot_elems = conv_slot;
  a.rec = drec.p;
  a.rec_layer_stride = rec_ls;
  a.rec_slot_elems = rec_slot;
  OPS_OK(ops::reset_states(a, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto conv2 = dconv.down();
  const auto rec2 = drec.down();
  auto zeroed = [&](int s) { return s == 3 || s == 0 || s == 4; };
  int bad = 0;
  for (int l = 0; l < L; ++l)
    for (std::int64_t i = 0; i < conv_ls; ++i) {
      const std::int64_t s = i / conv_slot;
      const bool z = i < slots * conv_slot && zeroed(int(s));
      bad += z ? conv2[l * conv_ls + i].bits != 0 : conv2[l * conv_ls + i].bits != conv[l * conv_ls + i].bits;
    }
  for (int l = 0; l < L; ++l)
    for (std::int64_t i = 0; i < rec_ls; ++i) {
      const std::int64_t s = i / rec_slot;
      const bool z = i < slots * rec_slot && zeroed(int(s));
      bad += z ? rec2[l * rec_ls + i] != 0.f : rec2[l * rec_ls + i] != rec[l * rec_ls + i];
    }
  EXPECT_EQ(bad, 0) << "reset_states: flagged slots 3, 0, 4 of every layer zeroed, everything else untouched";
}

}  // namespace
