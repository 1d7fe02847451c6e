#include <cuda_runtime.h>

#include <cfloat>

#include "kernels/cuda-check.cuh"
#include "kernels/device-util.cuh"
#include "kernels/sampling.h"

namespace evident::kernels {
namespace {

constexpr int kThreads = 1024;

// (value, index) pair order: larger value wins, then the lower index; NaN counts as -inf.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

__global__ void argmax_kernel(argmax_args a) {
  __shared__ float sv[kThreads / 32];
  __shared__ int si[kThreads / 32];
  const float* l = a.logits + std::int64_t(blockIdx.x) * a.stride;
  // Start below every value (-inf included) with no index; NaN is skipped, so it never wins, not even over -inf.
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  for (int j = threadIdx.x; j < a.vocab; j += kThreads) {
    const float v = l[j];
    if (v != v) continue;
    if (better(v, j, bv, bi)) bv = v, bi = j;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) sv[warp] = bv, si[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    bv = lane < kThreads / 32 ? sv[lane] : -INFINITY;
    bi = lane < kThreads / 32 ? si[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if (lane == 0) a.ids[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
  }
}

}  // namespace

status sample_greedy(const argmax_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_rows >= 0 && a.vocab > 0 && a.stride >= a.vocab, "sample_greedy: n_rows = ", a.n_rows,
                    ", vocab = ", a.vocab, ", stride = ", a.stride, ": expected stride >= vocab > 0");
  if (a.n_rows == 0) return status::success();
  EV_KERNEL_REQUIRE(a.logits && a.ids, "sample_greedy: null logits or ids");
  argmax_kernel<<<a.n_rows, kThreads, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("argmax_kernel");
  return status::success();
}

}  // namespace evident::kernels

// ---------------------------------------------------------------------------------------------------------------------
// Top-k / top-p / min-p sampling: one block of 1024 threads per row, no sort. Every filter and the draw is "the
// shortest prefix of the candidate order whose count or weight reaches a target", found by a radix descent over the
// 50-bit candidate key (ordered fp32 bits of x << 18 | (2^18 - 1 - id): descending key = the candidate order): five
// passes of 10 bits, each a shared-memory histogram (uint64 count or fixed-point weight per digit) and a descending
// block scan. Integer sums make the result independent of the summation order.
// Fast path: the top-k cut (count passes only, no exp) or the first 1024 candidates; when the kept set lies inside
// those (always with top_k <= 1024; with top-p when the nucleus has <= 1024 tokens), they are sorted in shared memory
// and the filters and the draw run there, computing the exp of those candidates only.
namespace evident::kernels {
namespace {

constexpr int kSampleThreads = 1024;
constexpr int kIdBits = 18;
constexpr double kOneW = 17592186044416.0;  // 2^44

struct row_view {
  const float* l;
  int vocab;
  float inv_t, mx;
};

__device__ __forceinline__ float cand_x(const row_view& r, int j) {
  const float v = r.l[j];
  return v != v ? -INFINITY : v * r.inv_t;
}
__device__ __forceinline__ unsigned long long cand_key(float x, int j) {
  unsigned u = __float_as_uint(x);
  u ^= (u >> 31) ? 0xffffffffu : 0x80000000u;
  return (static_cast<unsigned long long>(u) << kIdBits) | static_cast<unsigned long long>((1 << kIdBits) - 1 - j);
}
__device__ __forceinline__ unsigned long long cand_w(const row_view& r, float x) {
  if (x == r.mx) return static_cast<unsigned long long>(kOneW);
  return static_cast<unsigned long long>(__double2ll_rn(exp(static_cast<double>(x - r.mx)) * kOneW));
}

struct sample_smem {
  unsigned long long hist[1024];
  unsigned long long scratch[33];
  unsigned long long sel[2];
};

// Sum over candidates with key >= lo of (mass ? weight : 1), or only those with weight >= min_w when min_w > 0.
__device__ unsigned long long block_total(const row_view& r, unsigned long long lo, bool mass,
                                          unsigned long long min_w, sample_smem& sm) {
  unsigned long long acc = 0;
  for (int j = threadIdx.x; j < r.vocab; j += kSampleThreads) {
    const float x = cand_x(r, j);
    if (cand_key(x, j) < lo) continue;
    if (mass) acc += cand_w(r, x);
    else if (min_w == 0 || cand_w(r, x) >= min_w) acc += 1;
  }
  unsigned long long total = 0;
  dev::block_exclusive_scan(acc, sm.scratch, &total);
  return total;
}

// The key of the candidate at which the prefix (candidates with key >= lo, in descending key order) first reaches
// `target` (count or weight). Precondition: 1 <= target <= the total over key >= lo.
__device__ unsigned long long radix_cut(const row_view& r, bool mass, unsigned long long target,
                                        unsigned long long lo, sample_smem& sm) {
  unsigned long long prefix = 0, above = 0;
  for (int pass = 0; pass < 5; ++pass) {
    const int shift = 40 - 10 * pass;
    sm.hist[threadIdx.x] = 0;
    __syncthreads();
    for (int j = threadIdx.x; j < r.vocab; j += kSampleThreads) {
      const float x = cand_x(r, j);
      const unsigned long long key = cand_key(x, j);
      if (key < lo || (key >> (shift + 10)) != (prefix >> (shift + 10))) continue;
      atomicAdd(&sm.hist[(key >> shift) & 1023], mass ? cand_w(r, x) : 1ull);
    }
    __syncthreads();
    const unsigned long long v = sm.hist[1023 - threadIdx.x];
    const unsigned long long before = dev::block_exclusive_scan(v, sm.scratch);  // digits above 1023 - tid
    if (v > 0 && above + before < target && above + before + v >= target) {
      sm.sel[0] = static_cast<unsigned long long>(1023 - threadIdx.x);
      sm.sel[1] = above + before;
    }
    __syncthreads();
    prefix |= sm.sel[0] << shift;
    above = sm.sel[1];
    __syncthreads();
  }
  return prefix;
}

constexpr int kSmall = 1024;  // candidates the fast path sorts in shared memory (<= kSampleThreads)

struct small_smem {
  unsigned long long key[kSmall];
  unsigned long long cum[kSmall];
  int n, sel;
};

__device__ __forceinline__ float key_x(unsigned long long key) {
  unsigned u = static_cast<unsigned>(key >> kIdBits);
  u = (u & 0x80000000u) ? (u ^ 0x80000000u) : ~u;
  return __uint_as_float(u);
}
__device__ __forceinline__ int key_id(unsigned long long key) {
  return (1 << kIdBits) - 1 - static_cast<int>(key & ((1u << kIdBits) - 1));
}

// The candidates with key >= lo_c (exactly n_c <= kSmall of them) gathered, sorted by key (bitonic, descending), their
// weights scanned; then top-p (against z1, or the sum over C when z1 == 0), min-p and the draw within C. Returns the
// token, or -1 when the top-p prefix does not end inside C (the caller falls back to the general path).
__device__ int small_select(const row_view& r, unsigned long long lo_c, int n_c, unsigned long long z1, bool use_p,
                            float tp, bool use_m, unsigned long long m_w, float u, sample_smem& sm, small_smem& ss) {
  const int tid = threadIdx.x;
  if (tid == 0) ss.n = 0;
  __syncthreads();
  for (int j = tid; j < r.vocab; j += kSampleThreads) {
    const unsigned long long key = cand_key(cand_x(r, j), j);
    if (key >= lo_c) {
      const int slot = atomicAdd(&ss.n, 1);
      if (slot < kSmall) ss.key[slot] = key;
    }
  }
  int p2 = 1;
  while (p2 < n_c) p2 <<= 1;
  __syncthreads();
  if (tid >= n_c && tid < p2) ss.key[tid] = 0;  // below every real key
  __syncthreads();
  for (int size = 2; size <= p2; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      const int j = tid ^ stride;
      if (tid < p2 && j > tid) {
        const unsigned long long x = ss.key[tid], y = ss.key[j];
        const bool desc = (tid & size) == 0;
        if (desc ? x < y : x > y) ss.key[tid] = y, ss.key[j] = x;
      }
      __syncthreads();
    }
  const unsigned long long w = tid < n_c ? cand_w(r, key_x(ss.key[tid])) : 0;
  unsigned long long total_c = 0;
  const unsigned long long cum = dev::block_exclusive_scan(w, sm.scratch, &total_c) + w;
  if (tid < n_c) ss.cum[tid] = cum;
  if (tid == 0) ss.sel = n_c - 1;
  __syncthreads();
  int keep = n_c;
  if (use_p) {
    if (z1 == 0) z1 = total_c;
    unsigned long long t = static_cast<unsigned long long>(ceil(static_cast<double>(tp) * static_cast<double>(z1)));
    t = t < 1 ? 1 : (t > z1 ? z1 : t);
    if (total_c < t) return -1;  // block-uniform
    if (tid < n_c && cum >= t && (tid == 0 || ss.cum[tid - 1] < t)) ss.sel = tid;
    __syncthreads();
    keep = ss.sel + 1;
    __syncthreads();
  }
  if (use_m) {
    unsigned long long c = 0;
    dev::block_exclusive_scan(static_cast<unsigned long long>(tid < keep && w >= m_w ? 1 : 0), sm.scratch, &c);
    keep = c < 1 ? 1 : static_cast<int>(c);
  }
  const unsigned long long z = ss.cum[keep - 1];
  unsigned long long t = static_cast<unsigned long long>(static_cast<double>(u) * static_cast<double>(z));
  if (t > z - 1) t = z - 1;
  if (tid == 0) ss.sel = keep - 1;
  __syncthreads();
  if (tid < keep && cum > t && (tid == 0 || ss.cum[tid - 1] <= t)) ss.sel = tid;
  __syncthreads();
  return key_id(ss.key[ss.sel]);
}

__device__ __forceinline__ bool better_x(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

__global__ void __launch_bounds__(kSampleThreads) sample_kernel(sample_args a) {
  __shared__ sample_smem sm;
  __shared__ small_smem ss;
  __shared__ float s_red[32];
  __shared__ int s_idx[32];
  const int row = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* l = a.logits + std::int64_t(row) * a.stride;
  const float temp = a.temperature[row];
  const bool greedy = !(temp > 0.f);
  row_view r{l, a.vocab, greedy ? 1.f : 1.f / temp, 0.f};
  // Arg-max of x (greedy: of the logits; NaN never wins, the lowest index among equal maxima).
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  for (int j = threadIdx.x; j < a.vocab; j += kSampleThreads) {
    const float x = cand_x(r, j);
    if (better_x(x, j, bv, bi)) bv = x, bi = j;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better_x(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  if (lane == 0) s_red[warp] = bv, s_idx[warp] = bi;
  __syncthreads();
  bv = s_red[lane], bi = s_idx[lane];
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better_x(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  if (greedy || bv == -INFINITY) {  // greedy, or nothing finite (all -inf / NaN): the lowest index of the maximum
    if (threadIdx.x == 0) a.ids[row] = bi == 0x7fffffff ? 0 : bi;
    return;
  }
  r.mx = bv;
  const int k = a.top_k ? a.top_k[row] : 0;
  const bool use_k = k > 0 && k < a.vocab;
  const float tp = a.top_p ? a.top_p[row] : 1.f, mp = a.min_p ? a.min_p[row] : 0.f;
  const bool use_p = tp < 1.f, use_m = mp > 0.f;
  unsigned long long m_w = use_m ? static_cast<unsigned long long>(ceil(static_cast<double>(mp) * kOneW)) : 0;
  if (use_m && m_w < 1) m_w = 1;
  const float u = a.uniforms[row];
  unsigned long long lo = 0;  // the top-k set: keys >= lo
  int n_lo = a.vocab;
  if (use_k) lo = radix_cut(r, false, static_cast<unsigned long long>(k), 0, sm), n_lo = k;
  // Fast path: when the kept set lies within the first kSmall candidates C, sort C in shared memory and finish there.
  {
    const int n_c = min(n_lo, kSmall);
    const unsigned long long lo_c = n_c == n_lo ? lo : radix_cut(r, false, static_cast<unsigned long long>(n_c), 0, sm);
    bool fits = n_c == n_lo;  // C is the whole top-k set (or vocabulary)
    unsigned long long z1 = 0;
    if (!fits) {
      if (use_p) z1 = block_total(r, lo, true, 0, sm);  // small_select checks that the top-p prefix ends inside C
      else if (use_m) fits = block_total(r, lo, false, m_w, sm) <= static_cast<unsigned long long>(n_c);
    }
    if (fits || use_p) {
      const int id = small_select(r, lo_c, n_c, z1, use_p, tp, use_m, m_w, u, sm, ss);
      if (id >= 0) {
        if (threadIdx.x == 0) a.ids[row] = id;
        return;
      }
    }
  }
  // General path: radix descents over the whole vocabulary.
  if (use_p) {
    const unsigned long long z1 = block_total(r, lo, true, 0, sm);
    unsigned long long t = static_cast<unsigned long long>(ceil(static_cast<double>(tp) * static_cast<double>(z1)));
    t = t < 1 ? 1 : (t > z1 ? z1 : t);
    lo = radix_cut(r, true, t, lo, sm);
  }
  if (use_m) {
    const unsigned long long c = block_total(r, lo, false, m_w, sm);
    lo = radix_cut(r, false, c < 1 ? 1 : c, lo, sm);
  }
  const unsigned long long z = block_total(r, lo, true, 0, sm);
  unsigned long long t = static_cast<unsigned long long>(static_cast<double>(u) * static_cast<double>(z));
  if (t > z - 1) t = z - 1;
  const unsigned long long key = radix_cut(r, true, t + 1, lo, sm);
  int id = (1 << kIdBits) - 1 - static_cast<int>(key & ((1u << kIdBits) - 1));
  if (id >= a.vocab) id = bi;  // unreachable when the sums are consistent; never write an out-of-range id
  if (threadIdx.x == 0) a.ids[row] = id;
}

__device__ __forceinline__ std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__global__ void uniforms_kernel(uniforms_args a) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= a.n_rows) return;
  const std::uint64_t h = splitmix64(a.seeds[r] ^ splitmix64(static_cast<std::uint64_t>(a.steps[r])));
  a.u[r] = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

}  // namespace

status sample(const sample_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_rows >= 0 && a.vocab > 0 && a.stride >= a.vocab, "sample: n_rows = ", a.n_rows,
                    ", vocab = ", a.vocab, ", stride = ", a.stride, ": expected stride >= vocab > 0");
  EV_KERNEL_SUPPORTED(a.vocab <= (1 << kIdBits), "sample: vocab = ", a.vocab, ": supported <= ", 1 << kIdBits);
  if (a.n_rows == 0) return status::success();
  EV_KERNEL_REQUIRE(a.logits && a.temperature && a.uniforms && a.ids,
                    "sample: null logits, temperature, uniforms or ids");
  sample_kernel<<<a.n_rows, kSampleThreads, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("sample_kernel");
  return status::success();
}

status fill_uniforms(const uniforms_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_rows >= 0, "fill_uniforms: n_rows = ", a.n_rows, ": expected >= 0");
  if (a.n_rows == 0) return status::success();
  EV_KERNEL_REQUIRE(a.seeds && a.steps && a.u, "fill_uniforms: null seeds, steps or u");
  uniforms_kernel<<<(a.n_rows + 255) / 256, 256, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("uniforms_kernel");
  return status::success();
}

}  // namespace evident::kernels
