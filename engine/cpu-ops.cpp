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

// The micro-kernel: NT tokens x 2 weight rows, fp32 accumulation in 8 lanes. Always inlined into the multi-versioned
// range kernel below, so it is compiled once per target (AVX2 / baseline). Only pointers cross its boundary.
template <int NT, bool BF16>
inline __attribute__((always_inline)) void micro(const float* const* xp, const void* w0v, const void* w1v, int64_t cols,
                                                 float* out /* [2][NT] */) {
  f32x8 acc0[NT], acc1[NT];
  for (int t = 0; t < NT; ++t) {
    acc0[t] = f32x8{0, 0, 0, 0, 0, 0, 0, 0};
    acc1[t] = f32x8{0, 0, 0, 0, 0, 0, 0, 0};
  }
  int64_t k = 0;
  for (; k + 8 <= cols; k += 8) {
    f32x8 a, b;
    if constexpr (BF16) {
      u16x8 ra, rb;
      std::memcpy(&ra, static_cast<const uint16_t*>(w0v) + k, 16);
      std::memcpy(&rb, static_cast<const uint16_t*>(w1v) + k, 16);
      u32x8 wa = __builtin_convertvector(ra, u32x8) << 16;
      u32x8 wb = __builtin_convertvector(rb, u32x8) << 16;
      std::memcpy(&a, &wa, 32);
      std::memcpy(&b, &wb, 32);
    } else {
      std::memcpy(&a, static_cast<const float*>(w0v) + k, 32);
      std::memcpy(&b, static_cast<const float*>(w1v) + k, 32);
    }
    for (int t = 0; t < NT; ++t) {
      f32x8 xv;
      std::memcpy(&xv, xp[t] + k, 32);
      acc0[t] += a * xv;
      acc1[t] += b * xv;
    }
  }
  for (int t = 0; t < NT; ++t) {
    float s0 = 0, s1 = 0;
    for (int j = 0; j < 8; ++j) {
      s0 += acc0[t][j];
      s1 += acc1[t][j];
    }
    for (int64_t kk = k; kk < cols; ++kk) {
      float a, b;
      if constexpr (BF16) {
        uint32_t ua = static_cast<uint32_t>(static_cast<const uint16_t*>(w0v)[kk]) << 16;
        uint32_t ub = static_cast<uint32_t>(static_cast<const uint16_t*>(w1v)[kk]) << 16;
        std::memcpy(&a, &ua, 4);
        std::memcpy(&b, &ub, 4);
      } else {
        a = static_cast<const float*>(w0v)[kk];
        b = static_cast<const float*>(w1v)[kk];
      }
      s0 += a * xp[t][kk];
      s1 += b * xp[t][kk];
    }
    out[t] = s0;
    out[NT + t] = s1;
  }
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
        micro<4, BF16>(xp, base + r * w.cols * esz, base + r2 * w.cols * esz, w.cols, out);
        for (int j = 0; j < 4; ++j) y[(t + j) * ys + r] = out[j];
        if (r2 != r)
          for (int j = 0; j < 4; ++j) y[(t + j) * ys + r2] = out[4 + j];
      }
    }
    for (; t < n; ++t) {
      const float* xp[1] = {x + t * xs};
      for (int64_t r = rb; r < re; r += 2) {
        const int64_t r2 = std::min(r + 1, re - 1);
        float out[2];
        micro<1, BF16>(xp, base + r * w.cols * esz, base + r2 * w.cols * esz, w.cols, out);
        y[t * ys + r] = out[0];
        if (r2 != r) y[t * ys + r2] = out[1];
      }
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EV_MULTIVERSION __attribute__((target_clones("arch=haswell", "default")))
#else
#define EV_MULTIVERSION
#endif

EV_MULTIVERSION void range_bf16(const float* x, int64_t n, int64_t xs, const weight& w, int64_t r0, int64_t r1,
                                float* y, int64_t ys) {
  range_impl<true>(x, n, xs, w, r0, r1, y, ys);
}

EV_MULTIVERSION void range_f32(const float* x, int64_t n, int64_t xs, const weight& w, int64_t r0, int64_t r1, float* y,
                               int64_t ys) {
  range_impl<false>(x, n, xs, w, r0, r1, y, ys);
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
