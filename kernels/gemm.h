// Dense projections (nn.Linear without bias) through cuBLAS: bf16 operands, fp32 accumulation.
//     y[m][n] = sum_k x[m][k] * w[n][k]          x bf16 [M, K] (row stride ldx)   w bf16 [N, K] (row stride ldw)
//     y bf16 or fp32 [M, N] (row stride ldy)
// A gemm_context owns the cuBLAS handle; one per thread (cuBLAS handles are not thread-safe); it is bound to the
// device current at creation.
#pragma once

#include <cstdint>
#include <memory>

#include "kernels/bf16.h"
#include "kernels/status.h"

namespace evident::kernels {

class gemm_context {
 public:
  // Creates the cuBLAS handle; `error` (if given) receives the failure, and the result is null on failure.
  static std::unique_ptr<gemm_context> create(status* error = nullptr);
  ~gemm_context();
  gemm_context(const gemm_context&) = delete;
  gemm_context& operator=(const gemm_context&) = delete;

  void* handle() const { return handle_; }  // the cublasHandle_t

 private:
  gemm_context() = default;
  void* handle_ = nullptr;
};

enum class gemm_out { bf16, fp32 };

struct gemm_args {
  int m = 0, n = 0, k = 0;
  const bf16* x = nullptr;
  std::int64_t ldx = 0;
  const bf16* w = nullptr;
  std::int64_t ldw = 0;
  void* y = nullptr;  // bf16* or float* per out_type
  std::int64_t ldy = 0;
  gemm_out out_type = gemm_out::bf16;
};

status gemm_bf16(gemm_context& ctx, const gemm_args& args, stream_t stream);

// CPU reference: fp64 accumulation of bf16 inputs, output rounded to the output type.
void gemm_bf16_ref(const gemm_args& args);

}  // namespace evident::kernels
