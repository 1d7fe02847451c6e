#include <cuda_runtime.h>

#include "kernels/cuda-check.cuh"
#include "kernels/embedding.h"

namespace evident::kernels {
namespace {

// One block per token, 16-byte copies.
__global__ void embedding_kernel(embedding_args a) {
  const int t = blockIdx.x, id = a.ids[t];
  const bool valid = id >= 0 && id < a.vocab;
  const uint4* src = reinterpret_cast<const uint4*>(a.table + std::int64_t(valid ? id : 0) * a.dim);
  uint4* dst = reinterpret_cast<uint4*>(a.out + std::int64_t(t) * a.out_stride);
  for (int i = threadIdx.x; i < a.dim / 8; i += blockDim.x) dst[i] = valid ? src[i] : make_uint4(0, 0, 0, 0);
}

}  // namespace

status embedding_gather(const embedding_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_tokens >= 0 && a.vocab > 0 && a.dim > 0 && a.dim % 8 == 0, "embedding_gather: n_tokens = ",
                    a.n_tokens, ", vocab = ", a.vocab, ", dim = ", a.dim, ": expected dim a multiple of 8");
  if (a.n_tokens == 0) return status::success();
  EV_KERNEL_REQUIRE(a.table && a.ids && a.out, "embedding_gather: null table, ids or out");
  EV_KERNEL_REQUIRE(reinterpret_cast<std::uintptr_t>(a.table) % 16 == 0 &&
                        reinterpret_cast<std::uintptr_t>(a.out) % 16 == 0 && a.out_stride % 8 == 0,
                    "embedding_gather: table and out must be 16-byte aligned, out_stride a multiple of 8");
  embedding_kernel<<<a.n_tokens, 128, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("embedding_kernel");
  return status::success();
}

}  // namespace evident::kernels
