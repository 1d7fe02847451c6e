// Internal to kernels/*.cu: check macros that turn a failing CUDA / cuBLAS call into a returned status naming the
// call, the file and the line, and argument checks that return invalid_argument. Launchers return status, so these
// macros `return` from the enclosing function.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <sstream>
#include <string>

#include "kernels/status.h"

namespace evident::kernels::detail {

template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

inline status cuda_failure(const char* call, cudaError_t err, const char* file, int line) {
  return status::make(status_code::cuda_error, concat(call, " failed: ", cudaGetErrorName(err), " (",
                                                      cudaGetErrorString(err), ") at ", file, ":", line));
}

inline status cublas_failure(const char* call, cublasStatus_t st, const char* file, int line) {
  return status::make(status_code::cublas_error,
                      concat(call, " failed: ", cublasGetStatusName(st), " (", cublasGetStatusString(st), ") at ",
                             file, ":", line));
}

}  // namespace evident::kernels::detail

#define EV_CUDA_CHECK(call)                                                                           \
  do {                                                                                                \
    cudaError_t ev_cuda_err_ = (call);                                                                \
    if (ev_cuda_err_ != cudaSuccess)                                                                  \
      return ::evident::kernels::detail::cuda_failure(#call, ev_cuda_err_, __FILE__, __LINE__);       \
  } while (0)

// After a <<<>>> launch: catches bad launch configurations immediately.
#define EV_CUDA_CHECK_LAUNCH(name) EV_CUDA_CHECK((static_cast<void>(name), cudaGetLastError()))

#define EV_CUBLAS_CHECK(call)                                                                         \
  do {                                                                                                \
    cublasStatus_t ev_cublas_st_ = (call);                                                            \
    if (ev_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                       \
      return ::evident::kernels::detail::cublas_failure(#call, ev_cublas_st_, __FILE__, __LINE__);    \
  } while (0)

// Argument checks: EV_KERNEL_REQUIRE(n_tokens >= 0, "gdn: n_tokens = ", n, ", expected >= 0");
#define EV_KERNEL_REQUIRE(cond, ...)                                                                  \
  do {                                                                                                \
    if (!(cond))                                                                                      \
      return ::evident::kernels::status::make(::evident::kernels::status_code::invalid_argument,      \
                                              ::evident::kernels::detail::concat(__VA_ARGS__));       \
  } while (0)

#define EV_KERNEL_SUPPORTED(cond, ...)                                                                \
  do {                                                                                                \
    if (!(cond))                                                                                      \
      return ::evident::kernels::status::make(::evident::kernels::status_code::unsupported,           \
                                              ::evident::kernels::detail::concat(__VA_ARGS__));       \
  } while (0)
