// cuBLAS wrapper. Row-major y = x w^T is, in cuBLAS's column-major terms, y^T (N x M) = w^T-as-stored... i.e.
// C = op_T(A = w viewed K x N) * op_N(B = x viewed K x M).
#include <cublas_v2.h>

#include "kernels/cuda-check.cuh"
#include "kernels/gemm.h"

namespace evident::kernels {

namespace {
status make_handle(void** out) {
  cublasHandle_t h = nullptr;
  EV_CUBLAS_CHECK(cublasCreate(&h));
  *out = h;
  return status::success();
}
}  // namespace

std::unique_ptr<gemm_context> gemm_context::create(status* error) {
  std::unique_ptr<gemm_context> ctx(new gemm_context());
  status st = make_handle(&ctx->handle_);
  if (error) *error = st;
  if (!st.ok()) return nullptr;
  return ctx;
}

gemm_context::~gemm_context() {
  if (handle_) cublasDestroy(static_cast<cublasHandle_t>(handle_));
}

status gemm_bf16(gemm_context& ctx, const gemm_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.m >= 0 && a.n >= 0 && a.k >= 0, "gemm_bf16: m, n, k = ", a.m, ", ", a.n, ", ", a.k,
                    ": expected >= 0");
  if (a.m == 0 || a.n == 0) return status::success();
  EV_KERNEL_REQUIRE(a.x && a.w && a.y, "gemm_bf16: null x, w or y");
  EV_KERNEL_REQUIRE(a.ldx >= a.k && a.ldw >= a.k && a.ldy >= a.n, "gemm_bf16: ldx, ldw must be >= k, ldy >= n");
  auto h = static_cast<cublasHandle_t>(ctx.handle());
  EV_CUBLAS_CHECK(cublasSetStream(h, stream));
  const float alpha = 1.f, beta = 0.f;
  const cudaDataType_t out_type = a.out_type == gemm_out::bf16 ? CUDA_R_16BF : CUDA_R_32F;
  EV_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, a.n, a.m, a.k, &alpha, a.w, CUDA_R_16BF, int(a.ldw), a.x,
                               CUDA_R_16BF, int(a.ldx), &beta, a.y, out_type, int(a.ldy), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
  return status::success();
}

}  // namespace evident::kernels
