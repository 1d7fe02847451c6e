// Internal to kernels/*.cu: Hopper (sm_90a) warpgroup MMA helpers (wgmma.mma_async with B in shared memory and A in
// shared memory or, the _rs forms, in registers), compiled to real instructions only in the sm_90a device pass
// (EV_SM90A); elsewhere they are empty and the launchers must not select the kernels that use them
// (wgmma_available(), kernels/arch.h, answers at run time).
//
// Operand tiles: K-major, 64 bf16 (128 bytes) per row, rows 128 bytes apart, 16-byte chunk c of row r stored at chunk
// c ^ (r % 8) (dev::swz64), tile base 1024-byte aligned: the 128-byte-swizzle layout of the PTX ISA ("Shared Memory
// Matrix Layout", K-major, 128B swizzle). Descriptor: start address >> 4, leading offset unused (1), stride offset
// 1024 bytes (8 rows) >> 4, swizzle mode 1 (128B) in bits 62-63. The k-th 16-element slice of a 64-wide tile starts
// 32 * k bytes later (start address + 2 * k), as the swizzle is applied to absolute address bits.
// Accumulator layout of m64nNk16 (fp32), thread t of the warpgroup (warp w = t / 32, lane l): d[4 i + e] holds
// row 16 w + l / 4 + 8 (e / 2), column 8 i + 2 (l % 4) + (e % 2), for i < N / 8.
#pragma once

#include <cstdint>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define EV_SM90A 1
#else
#define EV_SM90A 0
#endif

namespace evident::kernels::dev {

// lead_bytes: the leading byte offset (K-major swizzled: unused, 16; N-major: bytes between 64-element N blocks).
__device__ __forceinline__ std::uint64_t wgmma_desc(std::uint32_t smem_addr, std::uint32_t lead_bytes = 16) {
  return (std::uint64_t((smem_addr & 0x3FFFF) >> 4)) | (std::uint64_t((lead_bytes >> 4) & 0x3FFF) << 16) |
         (std::uint64_t(1024 >> 4) << 32) | (std::uint64_t(1) << 62);
}

#if EV_SM90A
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Keeps the compiler from moving accumulator reads/writes across the asynchronous MMAs.
template <int N>
__device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Operand lists shared by the wrappers below: the accumulator placeholders "%0,...,%N-1" (EV_WGMMA_DN_STR, string
// literals to splice into the instruction) and their read-write constraints "+f"(d[i]) (EV_WGMMA_DN_OUT). #undef'd
// at the end of this header.
#define EV_WGMMA_D32_STR                                   \
  "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
  "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
#define EV_WGMMA_D64_STR                                              \
  EV_WGMMA_D32_STR                                                    \
  ",%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," \
  "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"
#define EV_WGMMA_D128_STR                                                        \
  EV_WGMMA_D64_STR                                                               \
  ",%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"            \
  "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,"             \
  "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111," \
  "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"
#define EV_WGMMA_D8_OUT(i)                                                                                    \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
      "+f"(d[i + 7])
#define EV_WGMMA_D32_OUT EV_WGMMA_D8_OUT(0), EV_WGMMA_D8_OUT(8), EV_WGMMA_D8_OUT(16), EV_WGMMA_D8_OUT(24)
#define EV_WGMMA_D64_OUT \
  EV_WGMMA_D32_OUT, EV_WGMMA_D8_OUT(32), EV_WGMMA_D8_OUT(40), EV_WGMMA_D8_OUT(48), EV_WGMMA_D8_OUT(56)
#define EV_WGMMA_D128_OUT                                                                               \
  EV_WGMMA_D64_OUT, EV_WGMMA_D8_OUT(64), EV_WGMMA_D8_OUT(72), EV_WGMMA_D8_OUT(80), EV_WGMMA_D8_OUT(88), \
      EV_WGMMA_D8_OUT(96), EV_WGMMA_D8_OUT(104), EV_WGMMA_D8_OUT(112), EV_WGMMA_D8_OUT(120)

// d[128] += A(64x16, shared, desc a) * B(256x16, shared, desc b)^T; scale_d = 0 overwrites d.
__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], std::uint64_t a, std::uint64_t b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {" EV_WGMMA_D128_STR "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
      : EV_WGMMA_D128_OUT
      : "l"(a), "l"(b), "r"(scale_d));
}

// d[64] += A(64x16, shared, desc a) * B(128x16, shared, desc b)^T; scale_d = 0 overwrites d.
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], std::uint64_t a, std::uint64_t b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" EV_WGMMA_D64_STR "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : EV_WGMMA_D64_OUT
      : "l"(a), "l"(b), "r"(scale_d));
}

// d[32] += A(64x16, shared, desc a) * B(64x16, shared, desc b)^T; scale_d = 0 overwrites d.
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], std::uint64_t a, std::uint64_t b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {" EV_WGMMA_D32_STR "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : EV_WGMMA_D32_OUT
      : "l"(a), "l"(b), "r"(scale_d));
}
// d[128] += A(64x16, registers: the mma.sync m16n8k16 A fragment of each warp's 16 rows) * B(256x16)^T with B
// N-major in shared memory (imm-trans-b = 1: 64-element N blocks of 128-byte rows, one row per k, swizzled;
// leading offset = bytes between the N blocks, stride offset = 1024 bytes between groups of 8 k rows).
__device__ __forceinline__ void wgmma_m64n256k16_rs_tb(float (&d)[128], const std::uint32_t (&a)[4], std::uint64_t b,
                                                       int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {" EV_WGMMA_D128_STR
      "}, {%128,%129,%130,%131}, %132, p, 1, 1, 1;\n}\n"
      : EV_WGMMA_D128_OUT
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));
}

// d[32] += A(64x16, registers: the mma.sync m16n8k16 A fragment of each warp's 16 rows) * B(64x16, shared, desc b)^T
// with B K-major (as wgmma_m64n64k16).
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const std::uint32_t (&a)[4], std::uint64_t b,
                                                   int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {" EV_WGMMA_D32_STR
      "}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
      : EV_WGMMA_D32_OUT
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));
}
// d[64] += A(64x16, registers) * B(128x16)^T with B N-major in shared memory (as wgmma_m64n256k16_rs_tb: two 64-element
// N blocks, lead_bytes apart in the descriptor).
__device__ __forceinline__ void wgmma_m64n128k16_rs_tb(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t b,
                                                       int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" EV_WGMMA_D64_STR
      "}, {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
      : EV_WGMMA_D64_OUT
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));
}

#else
__device__ __forceinline__ void wgmma_fence() {}
__device__ __forceinline__ void wgmma_commit() {}
template <int N>
__device__ __forceinline__ void wgmma_wait() {}
__device__ __forceinline__ void fence_proxy_async() {}
template <int N>
__device__ __forceinline__ void fence_regs(float (&)[N]) {}
__device__ __forceinline__ void wgmma_m64n256k16(float (&)[128], std::uint64_t, std::uint64_t, int) {}
__device__ __forceinline__ void wgmma_m64n128k16(float (&)[64], std::uint64_t, std::uint64_t, int) {}
__device__ __forceinline__ void wgmma_m64n64k16(float (&)[32], std::uint64_t, std::uint64_t, int) {}
__device__ __forceinline__ void wgmma_m64n256k16_rs_tb(float (&)[128], const std::uint32_t (&)[4], std::uint64_t, int) {}
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&)[32], const std::uint32_t (&)[4], std::uint64_t, int) {}
__device__ __forceinline__ void wgmma_m64n128k16_rs_tb(float (&)[64], const std::uint32_t (&)[4], std::uint64_t, int) {}
#endif

}  // namespace evident::kernels::dev

#undef EV_WGMMA_D32_STR
#undef EV_WGMMA_D64_STR
#undef EV_WGMMA_D128_STR
#undef EV_WGMMA_D8_OUT
#undef EV_WGMMA_D32_OUT
#undef EV_WGMMA_D64_OUT
#undef EV_WGMMA_D128_OUT
