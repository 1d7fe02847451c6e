// CPU backend primitives: fp32 compute over bf16 or fp32 weights (as nn.Linear stores them, [out, in] row-major).
//
// matmul() is the one hot loop of the CPU engine. It converts bf16 to fp32 on the fly (a 16-bit shift, exact), keeps
// 8-wide fp32 accumulators (AVX2 when the CPU has it, chosen at run time through GCC function multi-versioning; SSE
// otherwise) and works on 4 tokens x 2 weight rows at a time so each weight row read from memory serves 4 tokens.
// Threads split the output rows. Results differ from a naive dot product only by fp32 summation order.
//
// With EVIDENT_CPU_BLAS (a CMake option, off in the engine-only build) prompts of many tokens go through OpenBLAS
// sgemm after converting the weight block to fp32; decode stays on the kernel above.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/thread-pool.h"

namespace evident::engine {

enum class weight_dtype { bf16, f32 };

// A weight matrix W: `rows` outputs x `cols` inputs, row-major, `data` points at rows * cols elements (mmap'd
// checkpoint memory or an owned buffer; not owned here). bf16 data must be 2-byte aligned, f32 4-byte aligned.
struct weight {
  weight_dtype dtype = weight_dtype::bf16;
  const void* data = nullptr;
  int64_t rows = 0;  // out_features
  int64_t cols = 0;  // in_features

  bool empty() const { return data == nullptr; }
  // Row r converted to fp32 (cols floats into `out`).
  void row_f32(int64_t r, float* out) const;
  // A view of rows [r0, r0 + n).
  weight slice_rows(int64_t r0, int64_t n) const;
};

// y[t, o] = sum_i x[t, i] * W[o, i]   for t < n_tokens, o < W.rows.
//   x fp32 [n_tokens, W.cols] (row stride x_stride, default W.cols)
//   y fp32 [n_tokens, W.rows] (row stride y_stride, default W.rows); overwritten
// requires: x and y do not overlap.
void matmul(thread_pool& pool, const float* x, int64_t n_tokens, const weight& w, float* y, int64_t x_stride = 0,
            int64_t y_stride = 0);

// Single-threaded version (used inside parallel regions, e.g. per expert).
void matmul_serial(const float* x, int64_t n_tokens, const weight& w, float* y, int64_t x_stride = 0,
                   int64_t y_stride = 0);

// Zero-centred RMSNorm of Qwen3-Next: y = x / sqrt(mean(x^2) + eps) * (1 + w). x, y fp32 [n]; w fp32 [n].
void rmsnorm_1p(const float* x, const float* w, float eps, int64_t n, float* y);
// Gated RMSNorm of the DeltaNet output: y = (x / sqrt(mean(x^2) + eps) * w) * silu(z). All fp32 [n].
void rmsnorm_gated(const float* x, const float* w, const float* z, float eps, int64_t n, float* y);

inline float silu(float x) { return x / (1.0f + __builtin_expf(-x)); }
inline float sigmoid(float x) { return 1.0f / (1.0f + __builtin_expf(-x)); }
// torch.nn.functional.softplus with beta 1, threshold 20.
inline float softplus(float x) { return x > 20.0f ? x : __builtin_log1pf(__builtin_expf(x)); }

// sum_i a[i] * b[i] in fp32 with 8 accumulators.
float dot_f32(const float* a, const float* b, int64_t n);
// y[i] += alpha * x[i]
void axpy_f32(float alpha, const float* x, float* y, int64_t n);

}  // namespace evident::engine
