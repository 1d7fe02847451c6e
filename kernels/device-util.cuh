// Internal to the CUDA sources (kernels/*.cu and engine/cuda/model-kernels.cu): small device helpers shared by the
// kernels (tensor-core fragments through mma.sync / ldmatrix, cp.async, warp and block reductions and scans, bf16
// vector loads).
//
// mma.sync m16n8k16 bf16 fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), lane = threadIdx.x % 32,
// g = lane / 4, c = 2 * (lane % 4):
//   A 16x16 (row-major):  a0 = A[g][c..c+1]   a1 = A[g+8][c..c+1]   a2 = A[g][c+8..c+9]   a3 = A[g+8][c+8..c+9]
//   B 16x8  (col-major):  b0 = B[c..c+1][g]   b1 = B[c+8..c+9][g]
//   C 16x8  (fp32):       c0,c1 = C[g][c..c+1]   c2,c3 = C[g+8][c..c+1]
// ldmatrix.x4 loads four 8x8 b16 matrices; lane l supplies the address of row l % 8 of matrix l / 8, and register j
// receives matrix j's elements [g][c..c+1] (.trans: [c..c+1][g] of the matrix as stored).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace evident::kernels::dev {

__device__ __forceinline__ std::uint32_t smem_u32(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy to a shared address (smem_u32); when !pred nothing is read and the destination is
// zero-filled.
__device__ __forceinline__ void cp_async16(std::uint32_t smem, const void* gmem, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  cp_async16(smem_u32(smem), gmem, pred);
}
// The same, always copied (no source-size operand).
__device__ __forceinline__ void cp_async16(std::uint32_t smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's cp.async groups are in flight; the memory clobber keeps the compiler from
// moving shared-memory accesses across it.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Named barrier `id` for `threads` threads (a multiple of 32): sync waits for them all, arrive counts this warp and
// goes on (producer / consumer hand-offs between warp groups).
__device__ __forceinline__ void named_bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a * b, bf16 operands, fp32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                         std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as a bf16 pair (lo in the low half: the lower column of a fragment).
__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<std::uint32_t*>(&v);
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a shared tile with 64 bf16 (8 chunks, 128 bytes) per row,
// XOR-swizzled so that ldmatrix over 8 consecutive rows at one chunk hits 8 different bank groups.
__device__ __forceinline__ int swz64(int row, int chunk) { return row * 128 + ((chunk ^ (row & 7)) << 4); }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// 8 bf16 packed in 16 bytes, as floats (element 2i in the low half of word i).
__device__ __forceinline__ void cvt8(const uint4& raw, float (&x)[8]) {
  const std::uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&w[i]);
    x[2 * i] = __low2float(h);
    x[2 * i + 1] = __high2float(h);
  }
}
// 8 consecutive bf16 (16 bytes, 16-byte aligned) as floats. T: any 2-byte bf16 type (kernels::bf16, __nv_bfloat16).
template <typename T>
__device__ __forceinline__ void ld8(const T* p, float (&x)[8]) {
  static_assert(sizeof(T) == 2, "ld8 reads bf16");
  cvt8(*reinterpret_cast<const uint4*>(p), x);
}
// 4 consecutive bf16 (8 bytes, 8-byte aligned) as floats.
template <typename T>
__device__ __forceinline__ void load4(const T* p, float (&x)[4]) {
  static_assert(sizeof(T) == 2, "load4 reads bf16");
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const __nv_bfloat162 a = *reinterpret_cast<const __nv_bfloat162*>(&raw.x);
  const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162*>(&raw.y);
  x[0] = __low2float(a), x[1] = __high2float(a), x[2] = __low2float(b), x[3] = __high2float(b);
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Inclusive scan within a warp.
template <typename T>
__device__ __forceinline__ T warp_inclusive_scan(T v) {
  const int lane = threadIdx.x & 31;
  for (int o = 1; o < 32; o <<= 1) {
    const T n = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += n;
  }
  return v;
}

// Exclusive scan over the block (blockDim.x a multiple of 32, <= 1024); `scratch` holds 33 T in shared memory.
// Returns the exclusive prefix of v; *total (if given) receives the block's sum. Contains __syncthreads().
template <typename T>
__device__ T block_exclusive_scan(T v, T* scratch, T* total = nullptr) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  const T inc = warp_inclusive_scan(v);
  if (lane == 31) scratch[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    T w = lane < n_warps ? scratch[lane] : T(0);
    const T winc = warp_inclusive_scan(w);
    scratch[lane] = winc - w;
    if (lane == 31) scratch[32] = winc;
  }
  __syncthreads();
  const T out = scratch[warp] + inc - v;
  if (total) *total = scratch[32];
  __syncthreads();
  return out;
}

}  // namespace evident::kernels::dev
