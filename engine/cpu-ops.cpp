#include "engine/cpu-ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/base/error.h"

namespace evident::engine {

namespace {

typedef float f32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));

// The micro-kernels: NT tokens x 2 weight rows, fp32 accumulation in 8 lanes, every accumulator a named local so
// it stays in a register. Always inlined into the per-ISA range kernels below, so they are compiled once per target
// (AVX2+FMA / baseline). Only pointers cross their boundary.
#define EV_LOAD_W(dst, base, k)                                                          \
  do {                                                                                   \
    if constexpr (BF16) {                                                                \
      u16x8 raw_;                                                                        \
      std::memcpy(&raw_, static_cast<const uint16_t*>(base) + (k), 16);                  \
      u32x8 wide_ = __builtin_convertvector(raw_, u32x8) << 16;                          \
      std::memcpy(&(dst), &wide_, 32);                                                   \
    } else {                                                                             \
      std::memcpy(&(dst), static_cast<const float*>(base) + (k), 32);                    \
    }                                                                                    \
  } while (0)
#define EV_HSUM(v) ((((v)[0] + (v)[1]) + ((v)[2] + (v)[3])) + (((v)[4] + (v)[5]) + ((v)[6] + (v)[7])))

template <bool BF16>
inline __attribute__((always_inline)) float w_at(const void* base, int64_t k) {
  if constexpr (BF16) {
    const uint32_t u = static_cast<uint32_t>(static_cast<const uint16_t*>(base)[k]) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  } else {
    return static_cast<const float*>(base)[k];
  }
}

template <bool BF16>
inline __attribute__((always_inline)) void micro4(const float* const* xp, const void* w0v, const void* w1v,
                                                  int64_t cols, float* out /* [2][4] */) {
  const f32x8 z = {0, 0, 0, 0, 0, 0, 0, 0};
  f32x8 a0 = z, a1 = z, a2 = z, a3 = z, b0 = z, b1 = z, b2 = z, b3 = z;
  const float *x0 = xp[0], *x1 = xp[1], *x2 = xp[2], *x3 = xp[3];
  int64_t k = 0;
  for (; k + 8 <= cols; k += 8) {
    f32x8 wa, wb, v;
    EV_LOAD_W(wa, w0v, k);
    EV_LOAD_W(wb, w1v, k);
    std::memcpy(&v, x0 + k, 32);
    a0 += wa * v;
    b0 += wb * v;
    std::memcpy(&v, x1 + k, 32);
    a1 += wa * v;
    b1 += wb * v;
    std::memcpy(&v, x2 + k, 32);
    a2 += wa * v;
    b2 += wb * v;
    std::memcpy(&v, x3 + k, 32);
    a3 += wa * v;
    b3 += wb * v;
  }
  float s[8] = {EV_HSUM(a0), EV_HSUM(a1), EV_HSUM(a2), EV_HSUM(a3), EV_HSUM(b0), EV_HSUM(b1), EV_HSUM(b2), EV_HSUM(b3)};
  for (; k < cols; ++k) {
    const float wa = w_at<BF16>(w0v, k), wb = w_at<BF16>(w1v, k);
    for (int t = 0; t < 4; ++t) {
      s[t] += wa * xp[t][k];
      s[4 + t] += wb * xp[t][k];
    }
  }
  for (int j = 0; j < 8; ++j) out[j] = s[j];
}

template <bool BF16>
inline __attribute__((always_inline)) void micro1(const float* x, const void* w0v, const void* w1v, int64_t cols,
                                                  float* out /* [2] */) {
  const f32x8 z = {0, 0, 0, 0, 0, 0, 0, 0};
  f32x8 a0 = z, a1 = z, b0 = z, b1 = z;
  int64_t k = 0;
  for (; k + 16 <= cols; k += 16) {
    f32x8 wa, wb, wc, wd, v, u;
    EV_LOAD_W(wa, w0v, k);
    EV_LOAD_W(wb, w1v, k);
    EV_LOAD_W(wc, w0v, k + 8);
    EV_LOAD_W(wd, w1v, k + 8);
    std::memcpy(&v, x + k, 32);
    std::memcpy(&u, x + k + 8, 32);
    a0 += wa * v;
    b0 += wb * v;
    a1 += wc * u;
    b1 += wd * u;
  }
  for (; k + 8 <= cols; k += 8) {
    f32x8 wa, wb, v;
    EV_LOAD_W(wa, w0v, k);
    EV_LOAD_W(wb, w1v, k);
    std::memcpy(&v, x + k, 32);
    a0 += wa * v;
    b0 += wb * v;
  }
  a0 += a1;
  b0 += b1;
  float s0 = EV_HSUM(a0), s1 = EV_HSUM(b0);
  for (; k < cols; ++k) {
    s0 += w_at<BF16>(w0v, k) * x[k];
    s1 += w_at<BF16>(w1v, k) * x[k];
  }
  out[0] = s0;
  out[1] = s1;
}

template <bool BF16>
inline __attribute__((always_inline)) void range_impl(const float* x, int64_t n, int64_t xs, const weight& w,
                                                      int64_t r0, int64_t r1, float* y, int64_t ys) {
  const int64_t esz = BF16 ? 2 : 4;
  const auto* base = static_cast<const unsigned char*>(w.data);
  // Row blocks small enough to stay in L2 while every token passes over them.
  const int64_t block = std::max<int64_t>(2, (128 * 1024) / std::max<int64_t>(1, w.cols * esz) & ~int64_t{1});
  for (int64_t rb = r0; rb < r1; rb += block) {
    const int64_t re = std::min(r1, rb + block);
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
      const float* xp[4] = {x + t * xs, x + (t + 1) * xs, x + (t + 2) * xs, x + (t + 3) * xs};
      for (int64_t r = rb; r < re; r += 2) {
        const int64_t r2 = std::min(r + 1, re - 1);
        float out[8];
        micro4<BF16>(xp, base + r * w.cols * esz, base + r2 * w.cols * esz, w.cols, out);
        for (int j = 0; j < 4; ++j) y[(t + j) * ys + r] = out[j];
        if (r2 != r)
          for (int j = 0; j < 4; ++j) y[(t + j) * ys + r2] = out[4 + j];
      }
    }
    for (; t < n; ++t) {
      for (int64_t r = rb; r < re; r += 2) {
        const int64_t r2 = std::min(r + 1, re - 1);
        float out[2];
        micro1<BF16>(x + t * xs, base + r * w.cols * esz, base + r2 * w.cols * esz, w.cols, out);
        y[t * ys + r] = out[0];
        if (r2 != r) y[t * ys + r2] = out[1];
      }
    }
  }
}

// Two builds of the range kernel: AVX2 + FMA, and the baseline (SSE2 on x86-64), picked once at run time. (GCC's
// target_clones("arch=haswell") would test the CPU model, not its features, and miss AMD CPUs.)
using range_fn = void (*)(const float*, int64_t, int64_t, const weight&, int64_t, int64_t, float*, int64_t);

void range_bf16_base(const float* x, int64_t n, int64_t xs, const weight& w, int64_t r0, int64_t r1, float* y,
                     int64_t ys) {
  range_impl<true>(x, n, xs, w, r0, r1, y, ys);
}
void range_f32_base(const float* x, int64_t n, int64_t xs, const weight& w, int64_t r0, int64_t r1, float* y,
                    int64_t ys) {
  range_impl<false>(x, n, xs, w, r0, r1, y, ys);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define EV_HAVE_AVX2_BUILD 1
__attribute__((target("avx2,fma"))) void range_bf16_avx2(const float* x, int64_t n, int64_t xs, const weight& w,
                                                         int64_t r0, int64_t r1, float* y, int64_t ys) {
  range_impl<true>(x, n, xs, w, r0, r1, y, ys);
}
__attribute__((target("avx2,fma"))) void range_f32_avx2(const float* x, int64_t n, int64_t xs, const weight& w,
                                                        int64_t r0, int64_t r1, float* y, int64_t ys) {
  range_impl<false>(x, n, xs, w, r0, r1, y, ys);
}
#endif

bool use_avx2() {
#ifdef EV_HAVE_AVX2_BUILD
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

void range_bf16(const float* x, int64_t n, int64_t xs, const weight& w, int64_t r0, int64_t r1, float* y, int64_t ys) {
#ifdef EV_HAVE_AVX2_BUILD
  if (use_avx2()) return range_bf16_avx2(x, n, xs, w, r0, r1, y, ys);
#endif
  range_bf16_base(x, n, xs, w, r0, r1, y, ys);
}

void range_f32(const float* x, int64_t n, int64_t xs, const weight& w, int64_t r0, int64_t r1, float* y, int64_t ys) {
#ifdef EV_HAVE_AVX2_BUILD
  if (use_avx2()) return range_f32_avx2(x, n, xs, w, r0, r1, y, ys);
#endif
  range_f32_base(x, n, xs, w, r0, r1, y, ys);
}

}  // namespace

void weight::row_f32(int64_t r, float* out) const {
  if (dtype == weight_dtype::f32) {
    std::memcpy(out, static_cast<const float*>(data) + r * cols, static_cast<size_t>(cols) * 4);
    return;
  }
  const uint16_t* p = static_cast<const uint16_t*>(data) + r * cols;
  for (int64_t i = 0; i < cols; ++i) {
    uint32_t u = static_cast<uint32_t>(p[i]) << 16;
    std::memcpy(out + i, &u, 4);
  }
}

weight weight::slice_rows(int64_t r0, int64_t n) const {
  weight s = *this;
  const int64_t esz = dtype == weight_dtype::bf16 ? 2 : 4;
  s.data = static_cast<const unsigned char*>(data) + r0 * cols * esz;
  s.rows = n;
  return s;
}

void matmul_serial(const float* x, int64_t n, const weight& w, float* y, int64_t xs, int64_t ys) {
  if (xs == 0) xs = w.cols;
  if (ys == 0) ys = w.rows;
  if (w.dtype == weight_dtype::bf16)
    range_bf16(x, n, xs, w, 0, w.rows, y, ys);
  else
    range_f32(x, n, xs, w, 0, w.rows, y, ys);
}

void matmul(thread_pool& pool, const float* x, int64_t n, const weight& w, float* y, int64_t xs, int64_t ys) {
  EV_ASSERT(!w.empty());
  if (xs == 0) xs = w.cols;
  if (ys == 0) ys = w.rows;
  // Split the rows in even chunks; tiny products stay on the calling thread (the wake-up costs more than the work).
  const int64_t work = n * w.rows * w.cols;
  const int64_t grain = work < (1 << 15) ? w.rows : 2;
  pool.parallel_for(
      (w.rows + 1) / 2,
      [&](int64_t b, int64_t e) {
        const int64_t r0 = 2 * b, r1 = std::min(w.rows, 2 * e);
        if (w.dtype == weight_dtype::bf16)
          range_bf16(x, n, xs, w, r0, r1, y, ys);
        else
          range_f32(x, n, xs, w, r0, r1, y, ys);
      },
      grain);
}

void rmsnorm_1p(const float* x, const float* w, float eps, int64_t n, float* y) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(n)) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * (1.0f + w[i]);
}

void rmsnorm_gated(const float* x, const float* w, const float* z, float eps, int64_t n, float* y) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(n)) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = (w[i] * (x[i] * inv)) * silu(z[i]);
}

float dot_f32(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_f32(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace evident::engine
