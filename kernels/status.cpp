#include "kernels/status.h"

namespace evident::kernels {

const char* to_string(status_code code) noexcept {
  switch (code) {
    case status_code::ok: return "ok";
    case status_code::invalid_argument: return "invalid argument";
    case status_code::unsupported: return "unsupported";
    case status_code::cuda_error: return "CUDA error";
    case status_code::cublas_error: return "cuBLAS error";
  }
  return "unknown status";
}

}  // namespace evident::kernels
