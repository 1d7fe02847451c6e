// The result type of every kernel launcher, and the stream type they take. Standard library only: the engine includes
// kernel headers and must not see CUDA headers.
//
// A launcher validates its arguments (null pointers, sizes, alignment, supported shapes) before enqueuing anything and
// answers invalid_argument or unsupported with a message naming the argument; a failing CUDA or cuBLAS call answers
// cuda_error / cublas_error with the call, file and line (see kernels/cuda-check.cuh). Kernels run asynchronously:
// `ok` means "enqueued", not "finished"; an error raised while the kernel runs surfaces at the caller's next sync.
#pragma once

#include <string>
#include <utility>

struct CUstream_st;  // the CUDA runtime's opaque stream; cudaStream_t is `CUstream_st*`

namespace evident::kernels {

// Identical to cudaStream_t (nullptr is the legacy default stream).
using stream_t = CUstream_st*;

enum class status_code {
  ok = 0,
  invalid_argument,  // a null pointer, a bad size or stride, a misaligned pointer: the caller's mistake
  unsupported,       // a valid request this build or kernel does not implement (e.g. head_dim != 128)
  cuda_error,        // a CUDA runtime call or a kernel launch failed
  cublas_error,      // a cuBLAS / cuBLASLt call failed
};

const char* to_string(status_code code) noexcept;

// Value type: cheap on success (empty message), a message that names the failure otherwise.
struct [[nodiscard]] status {
  status_code code = status_code::ok;
  std::string message;

  bool ok() const noexcept { return code == status_code::ok; }
  static status success() { return {}; }
  static status make(status_code code, std::string message) { return {code, std::move(message)}; }
};

}  // namespace evident::kernels
