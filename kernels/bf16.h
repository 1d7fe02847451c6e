// bfloat16 as stored in memory, for host code that must not include CUDA headers. Layout-compatible with CUDA's
// __nv_bfloat16 (one 16-bit word: sign, 8 exponent bits, 7 mantissa bits), so device buffers declared `bf16*` here are
// passed straight to kernels.
#pragma once

#include <cstdint>
#include <cstring>

namespace evident::kernels {

struct bf16 {
  std::uint16_t bits = 0;
};
static_assert(sizeof(bf16) == 2, "bf16 must be two bytes");

// float -> bf16 with round-to-nearest-even (NaN stays NaN), the rounding torch and CUDA use.
inline bf16 float_to_bf16(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<std::uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<std::uint16_t>(u >> 16)};
}

inline float bf16_to_float(bf16 b) noexcept {
  std::uint32_t u = static_cast<std::uint32_t>(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Rounds a float through bf16 and back: what a bf16 tensor can hold.
inline float round_bf16(float f) noexcept { return bf16_to_float(float_to_bf16(f)); }

}  // namespace evident::kernels
