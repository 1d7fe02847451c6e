// RMS norms of Qwen3-Next (transformers modeling_qwen3_next.py).
//
// rmsnorm_residual: the zero-centred Qwen3NextRMSNorm (weight stored as w, applied as 1 + w), optionally fused with
// the residual add that precedes it in every decoder layer:
//     h        = x + residual            (rounded to bf16: the residual stream is bf16)    [if residual is given]
//     residual = h                                                                          [written back in place]
//     out      = bf16( h * rsqrt(mean(h^2) + eps) * (1 + w) )
// Also serves q_norm / k_norm (per head rows, row stride = the projection's head pitch) with residual = null.
//
// rmsnorm_gated: Qwen3NextRMSNormGated after the delta rule (weight applied as w, not 1 + w):
//     out = bf16( w * (x * rsqrt(mean(x^2) + eps)) * silu(z) )
//
// Layouts: rows of `dim` bf16 values; x, z, residual and out each have their own row stride (elements). w is bf16
// [dim]. CUDA requires dim % 4 == 0, all row pointers 8-byte aligned (strides multiples of 4). out may alias x.
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/status.h"

namespace evident::kernels {

struct rmsnorm_args {
  int n_rows = 0;
  int dim = 0;
  float eps = 1e-6f;
  const bf16* x = nullptr;
  std::int64_t x_stride = 0;
  bf16* residual = nullptr;  // rmsnorm_residual: in/out, may be null; rmsnorm_gated: unused
  std::int64_t residual_stride = 0;
  const bf16* z = nullptr;   // rmsnorm_gated: the gate; unused otherwise
  std::int64_t z_stride = 0;
  // rmsnorm_gated: with z_group > 0, row r's gate is z + (r / z_group) * z_group_stride + (r % z_group) * z_stride
  // (e.g. (token, head) rows read from a wider per-token projection row, no copy); 0: z + r * z_stride.
  int z_group = 0;
  std::int64_t z_group_stride = 0;
  const bf16* w = nullptr;
  bf16* out = nullptr;
  std::int64_t out_stride = 0;
};

status rmsnorm_residual(const rmsnorm_args& args, stream_t stream);
status rmsnorm_gated(const rmsnorm_args& args, stream_t stream);

// CPU references (host pointers, fp32 math, same rounding points).
void rmsnorm_residual_ref(const rmsnorm_args& args);
void rmsnorm_gated_ref(const rmsnorm_args& args);

}  // namespace evident::kernels
