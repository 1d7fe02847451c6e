// CUDA gated delta rule: chunked prompt path (two kernels) and fused recurrent path. Semantics and layouts: see
// gated-delta-rule.h. Design notes: docs/kernels.md.
//
// Chunked path
//   v15. gdn_wg_kernel (the default on sm_90a with n_v_heads <= 2 n_k_heads): producer blocks prepare each (chunk,
//      key head) into workspace records (T, P, per-token factors) published by flags; consumer blocks of 64 value
//      columns copy them with the raw q/k rows and run the scan on warpgroup MMAs; one cooperative launch, or two
//      launches where both do not fit at once. See the comment above the kernel.
//   0. gdn_coop_scan_kernel (v14, the default on sm_90 where v15 does not run and it applies: v_tile 32,
//      n_v_heads <= 2 n_k_heads, the grid resident at once): one cooperative launch whose blocks run the split mma
//      scan of step 2 and, in 4 more warps, prepare every G-th chunk of their key head (the work of step 1) into the
//      workspace, published by flags; see the comment above the kernel. Steps 1 and 2 remain selectable
//      (options.cooperative = false) and serve the other cases.
//   1. gdn_prepare_kernel, one block per (chunk, key head), all chunks in parallel: L2-normalises q, k of the chunk
//      (k and, for the mma scan, q written out), forms K K^T and Q K^T once on tensor cores (WMMA bf16, fp32
//      accumulate), and for each value head of the key head writes to the workspace T = (I + L)^-1 (blocked forward
//      substitution in fp32, stored bf16), P = tril(Q K^T * exp(G_i - G_j)) (bf16), exp(G), exp(G_last - G), beta
//      (and, for the WMMA scan, q * scale * exp(G) per value head).
//   2. gdn_mma_scan_kernel (default), one block per (sequence, value head, 32 value columns): walks the chunks of its
//      sequence in order with the fp32 state held as mma.sync accumulator fragments in registers, in transposed form
//      (value columns as the M dimension; see the comment above the kernel). Chain warps carry the state, output warps
//      form O one chunk behind. For this scan, prepare stores q, k, T and P with the scan's shared-memory row pitch.
//      Opt-in (scan_cluster 2 or 4): a value head's blocks in a thread-block cluster that loads the shared chunk
//      inputs once by multicast bulk copies (measured slower than without clusters; kept for the next attempt).
//      gdn_chunk_scan_kernel (wmma_scan, the previous version): the state tile S [128, BV] in shared memory, WMMA:
//        X = K S,  Y = beta (V - exp(G) X),  V_new = T Y,  O = (exp(G) Q) S + P V_new,
//        S = exp(G_last) S + K^T (V_new exp(G_last - G))   (the decay moved from K's rows onto V_new's rows).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cstdint>

#include "kernels/arch.h"
#include "kernels/cuda-check.cuh"
#include "kernels/device-util.cuh"
#include "kernels/gated-delta-rule.h"
#include "kernels/wgmma-sm90.cuh"

namespace evident::kernels {
namespace {

namespace wmma = nvcuda::wmma;
using nvbf = __nv_bfloat16;
using dev::cp_async16;
using dev::ldmatrix_x4;
using dev::ldmatrix_x4_trans;
using dev::mma_bf16;
using dev::pack_bf16;
using dev::smem_u32;

constexpr int kChunk = 64;
constexpr int kDk = 128;
constexpr int kDv = 128;
constexpr int kLdQ = kDk + 8;     // bf16 row pitch of q/k tiles (272 B: keeps 32-byte fragment alignment, skews banks)
constexpr int kLdT = kChunk + 8;  // bf16 row pitch of 64x64 tiles
constexpr float kNormEps = 1e-6f;
// Workspace tiles for the mma scan are stored with the scan's shared-memory row pitch (rows of q and k padded to kLdQ,
// of T and P to kLdT; the padding is never read), so a block of rows is one contiguous copy; the WMMA scan's are dense.
constexpr int kTileQ = kChunk * kLdQ;
constexpr int kTileT = kChunk * kLdT;

// Chunk slot of (sequence s, chunk 0): floor(cu[s]/64) + s. Slots of consecutive sequences never overlap because
// floor(b/64) - floor(a/64) + 1 >= ceil((b - a)/64); the total is at most n_tokens/64 + n_seq.
__device__ __forceinline__ int chunk_base(const int32_t* cu, int s) { return cu[s] / kChunk + s; }

struct workspace_view {
  nvbf* Qe;     // WMMA scan: [slots, n_v_heads, 64, 128] q / |q| * d_k^-1/2 * exp(G_i), per value head;
                // mma scan: [slots, n_k_heads, 64, kLdQ] q / |q| * d_k^-1/2, per key head
  nvbf* Kn;     // [slots, n_k_heads, 64, 128] k / |k| (mma scan: rows padded to kLdQ)
  nvbf* T;      // [slots, n_v_heads, 64, 64] (mma scan: rows padded to kLdT); the 16x16 blocks above the diagonal are
                // not written (no scan uses them)
  nvbf* P;      // [slots, n_v_heads, 64, 64] (mma scan: rows padded to kLdT); likewise
  float* eg;    // [slots, n_v_heads, 64] exp(G_i), G the in-chunk cumulative sum of g
  float* ed;    // [slots, n_v_heads, 64] exp(G_last - G_i)
  float* beta;  // [slots, n_v_heads, 64] (0 past the sequence end)
};

__host__ __device__ inline std::size_t align_up(std::size_t x, std::size_t a) { return (x + a - 1) / a * a; }

__host__ __device__ inline workspace_view make_view(void* ws, int n_slots, int n_k_heads, int n_v_heads) {
  const std::size_t mats = std::size_t(n_slots) * n_v_heads * kTileT;  // >= the dense 64 x 64 tiles
  const std::size_t vecs = std::size_t(n_slots) * n_v_heads * kChunk;
  char* p = static_cast<char*>(ws);
  workspace_view v;
  v.Qe = reinterpret_cast<nvbf*>(p);
  p += align_up(std::max(std::size_t(n_slots) * n_v_heads * kChunk * kDk, std::size_t(n_slots) * n_k_heads * kTileQ) *
                    sizeof(nvbf),
                256);
  v.Kn = reinterpret_cast<nvbf*>(p);
  p += align_up(std::size_t(n_slots) * n_k_heads * kTileQ * sizeof(nvbf), 256);
  v.T = reinterpret_cast<nvbf*>(p);
  p += align_up(mats * sizeof(nvbf), 256);
  v.P = reinterpret_cast<nvbf*>(p);
  p += align_up(mats * sizeof(nvbf), 256);
  v.eg = reinterpret_cast<float*>(p);
  p += align_up(vecs * sizeof(float), 256);
  v.ed = reinterpret_cast<float*>(p);
  p += align_up(vecs * sizeof(float), 256);
  v.beta = reinterpret_cast<float*>(p);
  return v;
}

inline int n_slots_for(int n_tokens, int n_seq) { return n_tokens / kChunk + n_seq; }

__device__ __forceinline__ const nvbf* dev(const bf16* p) { return reinterpret_cast<const nvbf*>(p); }
__device__ __forceinline__ nvbf* dev(bf16* p) { return reinterpret_cast<nvbf*>(p); }

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// 4 bf16 packed in 8 bytes as floats.
__device__ __forceinline__ void unpack4(uint2 raw, float (&x)[4]) {
  const __nv_bfloat162 a = *reinterpret_cast<const __nv_bfloat162*>(&raw.x);
  const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162*>(&raw.y);
  x[0] = __low2float(a);
  x[1] = __high2float(a);
  x[2] = __low2float(b);
  x[3] = __high2float(b);
}

// Loads 4 consecutive bf16 (8 bytes) as floats.
__device__ __forceinline__ void load4(const nvbf* p, float (&x)[4]) { unpack4(*reinterpret_cast<const uint2*>(p), x); }

// 8 consecutive fp32 from shared memory (16-byte aligned).
__device__ __forceinline__ void lds8f(const float* p, float (&x)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
  x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
}
// 8 consecutive bf16 (16 bytes, aligned) as floats / from floats.
__device__ __forceinline__ void ld8h(const nvbf* p, float (&x)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&w[i]);
    x[2 * i] = __low2float(h);
    x[2 * i + 1] = __high2float(h);
  }
}
__device__ __forceinline__ uint4 pack8h(const float (&x)[8]) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __nv_bfloat162 h = __floats2bfloat162_rn(x[2 * i], x[2 * i + 1]);
    w[i] = *reinterpret_cast<uint32_t*>(&h);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

__device__ __forceinline__ void store4(nvbf* p, float a, float b, float c, float d) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
  uint2 raw;
  raw.x = *reinterpret_cast<uint32_t*>(&lo);
  raw.y = *reinterpret_cast<uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(p) = raw;
}

// Finds the sequence of a chunk slot: the largest s with chunk_base(s) <= slot. Returns -1 for unused slots.
__device__ int slot_to_seq(const int32_t* cu, int n_seq, int slot, int* chunk) {
  int lo = 0, hi = n_seq - 1, s = -1;
  while (lo <= hi) {
    const int mid = (lo + hi) >> 1;
    if (chunk_base(cu, mid) <= slot) {
      s = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  if (s < 0) return -1;
  const int len = cu[s + 1] - cu[s];
  const int c = slot - chunk_base(cu, s);
  if (c >= (len + kChunk - 1) / kChunk) return -1;
  *chunk = c;
  return s;
}

// ---------------------------------------------------------------------------------------------------------------------
// Kernel 1: per-chunk preparation, one block per (chunk, key head) serving every value head of that key head.
constexpr int kPrepThreads = 256;  // 8 warps; two blocks per SM (shared memory)
constexpr int kLdF = kChunk + 4;   // fp32 pitch of 64x64 tiles
constexpr int kLdTm = kChunk + 4;  // fp32 pitch of the T solve (16-byte rows for the float4 reads)

struct prep_smem {
  nvbf q[kChunk * kLdQ];  // normalised, scaled q (exp(G) applied per value head on the way out)
  nvbf k[kChunk * kLdQ];  // normalised k; reused as the fp32 scratch R [3][16][16] after the products
  float Tm[kChunk * kLdTm];
  float kk[kChunk * kLdF];
  float qk[kChunk * kLdF];
  float L[kChunk * kLdF];
  float G[kChunk];
  float beta[kChunk];
};

// The diagonal 16x16 blocks of T = (I + L)^-1 (L strictly lower triangular, fp32 with pitch ld_l) by forward
// substitution: thread t (< kChunk) solves column t % 16 of diagonal block t / 16 into T (fp32, pitch ld_t); x: the
// caller's scratch for the column.
__device__ __forceinline__ void solve_diag_col(const float* L, int ld_l, float* T, int ld_t, int t, float (&x)[16]) {
  const int base = (t >> 4) * 16, col = t & 15;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    float acc = (i == col) ? 1.f : 0.f;
#pragma unroll
    for (int m = 0; m < i; ++m) acc -= L[(base + i) * ld_l + base + m] * x[m];
    x[i] = acc;
  }
#pragma unroll
  for (int i = 0; i < 16; ++i) T[(base + i) * ld_t + base + col] = x[i];
}

// kQn (the mma scan): normalised, scaled q is written once per key head (like k), with no exp(G) factor; the scan
// applies exp(G_i) to the output rows instead. Otherwise (the WMMA scan) q * exp(G) is written per value head.
template <bool kQn>
__global__ void __launch_bounds__(kPrepThreads, 2) gdn_prepare_kernel(gdn_shape shape, gdn_args args, workspace_view ws) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  prep_smem& sm = *reinterpret_cast<prep_smem*>(smem_raw);
  const int slot = blockIdx.x, hk = blockIdx.y;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  int chunk = 0;
  const int seq = slot_to_seq(args.cu_seqlens, shape.n_seq, slot, &chunk);
  if (seq < 0) return;
  const int ratio = shape.n_v_heads / shape.n_k_heads;
  const int t0 = args.cu_seqlens[seq] + chunk * kChunk;
  const int len = min(kChunk, args.cu_seqlens[seq + 1] - t0);
  const float qscale = rsqrtf(float(kDk));

  // Normalised q (scaled) and k rows as bf16; rows past the sequence end are zero. Warp w: rows 8w..8w+7, all loads
  // issued before any use.
  {
    uint2 rq[8], rk[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int r = warp * 8 + i;
      rq[i] = rk[i] = make_uint2(0, 0);
      if (r < len) {
        rq[i] = *reinterpret_cast<const uint2*>(dev(args.q) + std::int64_t(t0 + r) * args.q_stride + hk * kDk + lane * 4);
        rk[i] = *reinterpret_cast<const uint2*>(dev(args.k) + std::int64_t(t0 + r) * args.k_stride + hk * kDk + lane * 4);
      }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int r = warp * 8 + i;
      float xq[4], xk[4];
      unpack4(rq[i], xq);
      unpack4(rk[i], xk);
      const float sq = warp_sum(xq[0] * xq[0] + xq[1] * xq[1] + xq[2] * xq[2] + xq[3] * xq[3]);
      const float sk = warp_sum(xk[0] * xk[0] + xk[1] * xk[1] + xk[2] * xk[2] + xk[3] * xk[3]);
      const float iq = rsqrtf(sq + kNormEps) * qscale, ik = rsqrtf(sk + kNormEps);
      store4(sm.q + r * kLdQ + lane * 4, xq[0] * iq, xq[1] * iq, xq[2] * iq, xq[3] * iq);
      store4(sm.k + r * kLdQ + lane * 4, xk[0] * ik, xk[1] * ik, xk[2] * ik, xk[3] * ik);
    }
  }
  __syncthreads();
  // K K^T and Q K^T on the 10 lower-triangular 16x16 tiles: 20 single-accumulator tasks over 8 warps.
  for (int task = warp; task < 20; task += kPrepThreads / 32) {
    int p = task >> 1, ti = 0;
    while (p >= ti + 1) p -= ++ti;
    const int tj = p;
    const bool is_kk = (task & 1) == 0;
    const nvbf* a_src = is_kk ? sm.k : sm.q;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.f);
#pragma unroll
    for (int kk = 0; kk < kDk / 16; ++kk) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, nvbf, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, nvbf, wmma::col_major> b;
      wmma::load_matrix_sync(a, a_src + ti * 16 * kLdQ + kk * 16, kLdQ);
      wmma::load_matrix_sync(b, sm.k + tj * 16 * kLdQ + kk * 16, kLdQ);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync((is_kk ? sm.kk : sm.qk) + ti * 16 * kLdF + tj * 16, acc, kLdF, wmma::mem_row_major);
  }
  __syncthreads();
  // Normalised k rows to the workspace for the scan (zero rows past the sequence end).
  for (int e = tid * 8; e < kChunk * kDk; e += kPrepThreads * 8) {
    const int i = e >> 7, d = e & 127;
    const std::size_t tile = std::size_t(slot) * shape.n_k_heads + hk;
    const std::size_t dst = kQn ? tile * kTileQ + i * kLdQ + d : tile * kChunk * kDk + e;
    *reinterpret_cast<uint4*>(ws.Kn + dst) = *reinterpret_cast<const uint4*>(sm.k + i * kLdQ + d);
    if constexpr (kQn) *reinterpret_cast<uint4*>(ws.Qe + dst) = *reinterpret_cast<const uint4*>(sm.q + i * kLdQ + d);
  }
  float* Tm = sm.Tm;                          // [64][65]
  float* R = reinterpret_cast<float*>(sm.k);  // [3][16][16]; k is dead after the products and the copy above
  for (int r = 0; r < ratio; ++r) {
    const int hv = hk * ratio + r;
    const std::size_t head_slot = std::size_t(slot) * shape.n_v_heads + hv;
    // Cumulative decay over the chunk (padded rows: g = 0, beta = 0), by two warp scans.
    if (tid < kChunk) {
      const bool valid = tid < len;
      float g = valid ? args.g[std::size_t(t0 + tid) * shape.n_v_heads + hv] : 0.f;
      sm.beta[tid] = valid ? args.beta[std::size_t(t0 + tid) * shape.n_v_heads + hv] : 0.f;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float up = __shfl_up_sync(0xffffffffu, g, o);
        if (lane >= o) g += up;
      }
      sm.G[tid] = g;
    }
    __syncthreads();  // also orders the products above before their use, and the previous head's T solve
    if (tid >= 32 && tid < kChunk) sm.G[tid] += sm.G[31];
    __syncthreads();
    // L (strictly lower), P (lower with diagonal, straight to global), the per-row decays and beta.
    const std::size_t mat_off = head_slot * (kQn ? kTileT : kChunk * kChunk);
    constexpr int kPitchT = kQn ? kLdT : kChunk;  // row pitch of T and P in the workspace
    for (int e = tid * 4; e < kChunk * kChunk; e += kPrepThreads * 4) {
      const int i = e >> 6, j0 = e & 63;
      if ((j0 >> 4) > (i >> 4)) continue;  // 16x16 blocks above the diagonal: zero, and no scan reads them
      const float gi = sm.G[i], bi = sm.beta[i];
      float p[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int j = j0 + u;
        const float decay = j <= i ? __expf(gi - sm.G[j]) : 0.f;
        sm.L[i * kLdF + j] = j < i ? bi * sm.kk[i * kLdF + j] * decay : 0.f;
        p[u] = j <= i ? sm.qk[i * kLdF + j] * decay : 0.f;
      }
      __nv_bfloat162 lo = __floats2bfloat162_rn(p[0], p[1]), hi = __floats2bfloat162_rn(p[2], p[3]);
      uint2 raw;
      raw.x = *reinterpret_cast<uint32_t*>(&lo);
      raw.y = *reinterpret_cast<uint32_t*>(&hi);
      *reinterpret_cast<uint2*>(ws.P + mat_off + i * kPitchT + j0) = raw;
    }
    // q * scale * exp(G_i) for this value head, to the workspace.
    if constexpr (!kQn)
    for (int e = tid * 8; e < kChunk * kDk; e += kPrepThreads * 8) {
      const int i = e >> 7, d = e & 127;
      float x[8];
      ld8h(sm.q + i * kLdQ + d, x);
      const float eg = __expf(sm.G[i]);
#pragma unroll
      for (int u = 0; u < 8; ++u) x[u] *= eg;
      *reinterpret_cast<uint4*>(ws.Qe + head_slot * kChunk * kDk + e) = pack8h(x);
    }
    if (tid < kChunk) {
      ws.eg[head_slot * kChunk + tid] = __expf(sm.G[tid]);
      ws.ed[head_slot * kChunk + tid] = __expf(sm.G[kChunk - 1] - sm.G[tid]);
      ws.beta[head_slot * kChunk + tid] = sm.beta[tid];
    }
    __syncthreads();
    // T = (I + L)^-1, blocked by 16: diagonal blocks by forward substitution (one thread per column), then block
    // rows ib = 1..3: T[ib][j] = -T[ib][ib] * sum_{m=j}^{ib-1} L[ib][m] T[m][j].
    if (tid < kChunk) {
      float x[16];
      solve_diag_col(sm.L, kLdF, Tm, kLdTm, tid, x);
    }
    __syncthreads();
    // Each of the ib * 64 active threads owns 4 adjacent columns of one row (float4 reads of T and R, one scalar of
    // L or T per 4 FMAs: the solve was shared-memory bound with one element per thread).
    for (int ib = 1; ib < 4; ++ib) {
      const int j = tid >> 6, rr = (tid >> 2) & 15, c = (tid & 3) * 4;
      if (tid < ib * 64) {
        const float* lrow = sm.L + (ib * 16 + rr) * kLdF;
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int m = j; m < ib; ++m)
#pragma unroll
          for (int kk = 0; kk < 16; ++kk) {
            const float a = lrow[m * 16 + kk];
            const float4 b = *reinterpret_cast<const float4*>(Tm + (m * 16 + kk) * kLdTm + j * 16 + c);
            acc.x += a * b.x, acc.y += a * b.y, acc.z += a * b.z, acc.w += a * b.w;
          }
        *reinterpret_cast<float4*>(R + j * 256 + rr * 16 + c) = acc;
      }
      __syncthreads();
      if (tid < ib * 64) {
        const float* trow = Tm + (ib * 16 + rr) * kLdTm + ib * 16;
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int kk = 0; kk < 16; ++kk) {
          const float a = trow[kk];
          const float4 b = *reinterpret_cast<const float4*>(R + j * 256 + kk * 16 + c);
          acc.x += a * b.x, acc.y += a * b.y, acc.z += a * b.z, acc.w += a * b.w;
        }
        *reinterpret_cast<float4*>(Tm + (ib * 16 + rr) * kLdTm + j * 16 + c) =
            make_float4(-acc.x, -acc.y, -acc.z, -acc.w);
      }
      __syncthreads();
    }
    // Only the diagonal and lower blocks of Tm were written; the blocks above the diagonal are zero.
    // Blocks above the diagonal are not written: both scans read only the blocks on and below it.
    for (int e = tid * 4; e < kChunk * kChunk; e += kPrepThreads * 4) {
      const int i = e >> 6, j0 = e & 63;
      if ((j0 >> 4) > (i >> 4)) continue;
      float t[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) t[u] = Tm[i * kLdTm + j0 + u];
      __nv_bfloat162 lo = __floats2bfloat162_rn(t[0], t[1]), hi = __floats2bfloat162_rn(t[2], t[3]);
      uint2 raw;
      raw.x = *reinterpret_cast<uint32_t*>(&lo);
      raw.y = *reinterpret_cast<uint32_t*>(&hi);
      *reinterpret_cast<uint2*>(ws.T + mat_off + i * kPitchT + j0) = raw;
    }
    // The next head's first __syncthreads orders these reads of Tm before its zeroing.
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Kernel 2: the sequential scan over chunks.


template <int BV>
struct scan_smem {
  static constexpr int kLdV = BV + 8;       // bf16 pitch of [64, BV] v rows
  static constexpr int kLdS = BV + 8;       // fp32 pitch of [*, BV] tiles (32 bytes of skew)
  static constexpr int kLdSt = kDk + 8;     // bf16 pitch of the transposed state S^T [BV, 128]
  static constexpr int kLdYt = kChunk + 8;  // bf16 pitch of transposed [BV, 64] operands
  struct stage {
    nvbf q[kChunk * kLdQ];  // exp(G) * scale * q / |q| (prepared)
    nvbf k[kChunk * kLdQ];  // k / |k| (prepared)
    nvbf v[kChunk * kLdV];
    nvbf T[kChunk * kLdT];
    nvbf P[kChunk * kLdT];
    float eg[kChunk];    // exp(G_i)
    float ed[kChunk];    // exp(G_last - G_i)
    float beta[kChunk];
    float pad[kChunk];   // keeps the stage a multiple of 32 bytes
  };
  stage st[2];
  float S[kDk * kLdS];     // fp32 state tile [128, BV] (accumulator memory)
  // Tensor-core B operands are stored transposed (k contiguous): WMMA's col_major B load then maps straight onto
  // the mma register layout, where a row-major B needs a transposing MOVM per fragment.
  nvbf St[BV * kLdSt];     // bf16 S^T
  float X[kChunk * kLdS];  // per-tile staging: K S, then V_new (phase D), then the output (phase F)
  nvbf Yt[BV * kLdYt];     // (beta (V - exp(G) X))^T
  nvbf Vnt[BV * kLdYt];    // V_new^T (bf16)
  nvbf Vdt[BV * kLdYt];    // (V_new * exp(G_last - G))^T
};

template <int BV, int kScanThreads>
__device__ __forceinline__ void prefetch_chunk(typename scan_smem<BV>::stage& st, const gdn_args& a, int hk, int hv,
                                               int v0, int t0, int len, std::size_t ws_mat, std::size_t ws_vec,
                                               std::size_t ws_kn, const workspace_view& ws, int tid) {
  // Prepared q (per value head) and k (per key head): 64 contiguous rows x 16 segments of 16 bytes.
  const nvbf* qe = ws.Qe + ws_mat / kChunk * kDk;  // ws_mat = (slot * n_v_heads + hv) * 64 * 64
  const nvbf* kn = ws.Kn + ws_kn;
  for (int i = tid; i < kChunk * 16; i += kScanThreads) {
    const int r = i >> 4, sgm = i & 15;
    cp_async16(st.q + r * kLdQ + sgm * 8, qe + r * kDk + sgm * 8, true);
    cp_async16(st.k + r * kLdQ + sgm * 8, kn + r * kDk + sgm * 8, true);
  }
  constexpr int kSegV = BV / 8;
  for (int i = tid; i < kChunk * kSegV; i += kScanThreads) {
    const int r = i / kSegV, sgm = i % kSegV;
    const bool valid = r < len;
    const std::int64_t tr = valid ? t0 + r : t0;
    cp_async16(st.v + r * scan_smem<BV>::kLdV + sgm * 8, a.v + tr * a.v_stride + hv * kDv + v0 + sgm * 8, valid);
  }
  for (int i = tid; i < kChunk * 8; i += kScanThreads) {
    const int r = i >> 3, sgm = i & 7;
    cp_async16(st.T + r * kLdT + sgm * 8, ws.T + ws_mat + r * kChunk + sgm * 8, true);
    cp_async16(st.P + r * kLdT + sgm * 8, ws.P + ws_mat + r * kChunk + sgm * 8, true);
  }
  if (tid < 16) cp_async16(st.eg + tid * 4, ws.eg + ws_vec + tid * 4, true);
  else if (tid < 32) cp_async16(st.ed + (tid - 16) * 4, ws.ed + ws_vec + (tid - 16) * 4, true);
  else if (tid < 48) cp_async16(st.beta + (tid - 32) * 4, ws.beta + ws_vec + (tid - 32) * 4, true);
}

// acc += A[ti][kk] B[kk][tj] over the 16x16 blocks kk <= ti (A lower triangular by blocks): A row-major bf16 (pitch
// lda), B given transposed (Bt[n][k], pitch ldb) and read as col_major. Phases (D) V_new = T Y and (F) O += P V_new.
__device__ __forceinline__ void wmma_tril_mma(wmma::fragment<wmma::accumulator, 16, 16, 16, float>& acc, const nvbf* A,
                                              int lda, const nvbf* Bt, int ldb, int ti, int tj) {
  for (int kk = 0; kk <= ti; ++kk) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, nvbf, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, nvbf, wmma::col_major> b;
    wmma::load_matrix_sync(a, A + ti * 16 * lda + kk * 16, lda);
    wmma::load_matrix_sync(b, Bt + tj * 16 * ldb + kk * 16, ldb);
    wmma::mma_sync(acc, a, b, acc);
  }
}

// x[i] = src[(r0 + i) * ld + cc] (8 rows of column cc of an fp32 tile), stored transposed as one 16-byte bf16 write
// at dst[cc * ld_t + r0]; x stays with the caller.
__device__ __forceinline__ void store_col8_t(const float* src, int ld, int r0, int cc, nvbf* dst, int ld_t,
                                             float (&x)[8]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) x[i] = src[(r0 + i) * ld + cc];
  *reinterpret_cast<uint4*>(dst + cc * ld_t + r0) = pack8h(x);
}

// Per chunk, three block barriers: (top) inputs landed; (B) Y tiles complete; (D) V_new tiles complete. Everything else is warp-local: a warp post-processes the tiles it produced (X, V_new, output, state).
// 16 warps: with one block per SM (the state tile and two input stages fill shared memory), the per-phase dependency
// chains are latency-bound, so each warp takes one tile task per phase.
template <int BV, int kScanWarps>
__global__ void __launch_bounds__(kScanWarps * 32, 1)
    gdn_chunk_scan_kernel(gdn_shape shape, gdn_args args, workspace_view ws) {
  constexpr int kScanThreads = kScanWarps * 32;
  using SM = scan_smem<BV>;
  constexpr int kLdV = SM::kLdV, kLdS = SM::kLdS, kLdSt = SM::kLdSt, kLdYt = SM::kLdYt, kTilesV = BV / 16;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  SM& sm = *reinterpret_cast<SM*>(smem_raw);
  // Shared-memory base pointers, asserted as such so that fragment loads compile to LDS rather than generic loads.
  nvbf* const St = sm.St;
  nvbf* const Yt = sm.Yt;
  nvbf* const Vnt = sm.Vnt;
  nvbf* const Vdt = sm.Vdt;
  float* const Xs = sm.X;
  float* const Ss = sm.S;
  __builtin_assume(__isShared(St) && __isShared(Yt) && __isShared(Vnt) && __isShared(Vdt) && __isShared(Xs) &&
                   __isShared(Ss));
  const int n_vt = kDv / BV;
  const int hv = blockIdx.x / n_vt, vt = blockIdx.x % n_vt, v0 = vt * BV, seq = blockIdx.y;
  const int hk = hv / (shape.n_v_heads / shape.n_k_heads);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int seq_begin = args.cu_seqlens[seq], seq_len = args.cu_seqlens[seq + 1] - seq_begin;
  const int n_chunks = (seq_len + kChunk - 1) / kChunk;
  const int slot0 = chunk_base(args.cu_seqlens, seq);
  const int state_slot = args.state_slots ? args.state_slots[seq] : seq;
  const std::size_t state_off = (std::size_t(state_slot) * shape.n_v_heads + hv) * kDk * kDv + v0;

  // Initial state tile.
  for (int i = tid; i < kDk * BV; i += kScanThreads) {
    const int r = i / BV, c = i % BV;
    const float s = args.initial_state ? args.initial_state[state_off + std::size_t(r) * kDv + c] : 0.f;
    Ss[r * kLdS + c] = s;
    St[c * kLdSt + r] = __float2bfloat16(s);
  }
  auto issue = [&](int c) {
    const std::size_t head_slot = std::size_t(slot0 + c) * shape.n_v_heads + hv;
    prefetch_chunk<BV, kScanThreads>(sm.st[c & 1], args, hk, hv, v0, seq_begin + c * kChunk, min(kChunk, seq_len - c * kChunk),
                       head_slot * kChunk * kChunk, head_slot * kChunk,
                       (std::size_t(slot0 + c) * shape.n_k_heads + hk) * kChunk * kDk, ws, tid);
    dev::cp_async_commit();
  };
  if (n_chunks > 0) issue(0);

  constexpr int kOutTiles = (kChunk / 16) * kTilesV;  // [64, BV] tiles: X, Y, V_new, output
  constexpr int kTasksB = 2 * kOutTiles;              // phase B: X tiles then O tiles
  constexpr int kTasksBPerWarp = (kTasksB + kScanWarps - 1) / kScanWarps;
  constexpr int kStateTiles = (kDk / 16) * kTilesV;   // [128, BV] state tiles
  for (int c = 0; c < n_chunks; ++c) {
    typename SM::stage& st = sm.st[c & 1];
    const nvbf* const sq = st.q;
    const nvbf* const sk = st.k;
    const nvbf* const sT = st.T;
    const nvbf* const sP = st.P;
    __builtin_assume(__isShared(sq) && __isShared(sk) && __isShared(sT) && __isShared(sP));
    const int t0 = seq_begin + c * kChunk;
    const int len = min(kChunk, seq_len - c * kChunk);
    dev::cp_async_wait<0>();  // chunk c has landed (for this thread's copies) ...
    __syncthreads();      // ... for every thread's; and every warp is done with chunk c-1 (its stage is free)
    if (c + 1 < n_chunks) issue(c + 1);
    // (B) task t < kOutTiles: X tile = K S, then this warp's Y tile = beta (V - exp(G) X); task t >= kOutTiles:
    // O tile = (exp(G) Q) S, kept in registers until (F).
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> o_acc[kTasksBPerWarp];
#pragma unroll
    for (int u = 0; u < kTasksBPerWarp; ++u) {
      const int task = warp + u * kScanWarps;
      wmma::fill_fragment(o_acc[u], 0.f);
      if (task >= kTasksB) continue;
      const bool is_x = task < kOutTiles;
      const int tile = is_x ? task : task - kOutTiles;
      const int ti = tile / kTilesV, tj = tile % kTilesV;
      const nvbf* a_src = is_x ? sk : sq;
#pragma unroll
      for (int kk = 0; kk < kDk / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, nvbf, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, nvbf, wmma::col_major> b;  // S[k][n] = St[n][k]
        wmma::load_matrix_sync(b, St + tj * 16 * kLdSt + kk * 16, kLdSt);
        wmma::load_matrix_sync(a, a_src + ti * 16 * kLdQ + kk * 16, kLdQ);
        wmma::mma_sync(o_acc[u], a, b, o_acc[u]);
      }
      if (is_x) {
        wmma::store_matrix_sync(Xs + ti * 16 * kLdS + tj * 16, o_acc[u], kLdS, wmma::mem_row_major);
        __syncwarp();
        {  // lane: column lane%16 of the tile, rows (lane/16)*8..+8; one 16-byte store into Y^T
          const int cc = tj * 16 + (lane & 15), r0 = ti * 16 + (lane >> 4) * 8;
          float y[8];
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const int r = r0 + i;
            y[i] = st.beta[r] * (__bfloat162float(st.v[r * kLdV + cc]) - st.eg[r] * Xs[r * kLdS + cc]);
          }
          *reinterpret_cast<uint4*>(Yt + cc * kLdYt + r0) = pack8h(y);
        }
      }
    }
    __syncthreads();
    // (D) V_new = T Y (T lower triangular: block columns kk <= ti only); this warp's tile to bf16 V_new and
    // V_new * exp(G_last - G). X tiles are reused (each is private to the warp that owns the tile index).
    for (int tile = warp; tile < kOutTiles; tile += kScanWarps) {
      const int ti = tile / kTilesV, tj = tile % kTilesV;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
      wmma_tril_mma(acc, sT, kLdT, Yt, kLdYt, ti, tj);  // Y[k][n] = Yt[n][k]
      wmma::store_matrix_sync(Xs + ti * 16 * kLdS + tj * 16, acc, kLdS, wmma::mem_row_major);
      __syncwarp();
      {
        const int cc = tj * 16 + (lane & 15), r0 = ti * 16 + (lane >> 4) * 8;
        float x[8];
        store_col8_t(Xs, kLdS, r0, cc, Vnt, kLdYt, x);
#pragma unroll
        for (int i = 0; i < 8; ++i) x[i] *= st.ed[r0 + i];
        *reinterpret_cast<uint4*>(Vdt + cc * kLdYt + r0) = pack8h(x);
      }
    }
    __syncthreads();
    // (F) O += P V_new, staged through X (dead since the (D) barrier) and written out by its warp;
    // S = exp(G_last) S + K^T (V_new * exp(G_last - G)), each state tile's bf16 copy refreshed by its warp.
#pragma unroll
    for (int u = 0; u < kTasksBPerWarp; ++u) {
      const int task = warp + u * kScanWarps;
      if (task < kOutTiles || task >= kTasksB) continue;
      const int tile = task - kOutTiles;
      const int ti = tile / kTilesV, tj = tile % kTilesV;
      wmma_tril_mma(o_acc[u], sP, kLdT, Vnt, kLdYt, ti, tj);  // V_new[k][n] = Vnt[n][k]
      wmma::store_matrix_sync(Xs + ti * 16 * kLdS + tj * 16, o_acc[u], kLdS, wmma::mem_row_major);
      __syncwarp();
      {
        const int r = ti * 16 + (lane >> 1), cc = tj * 16 + (lane & 1) * 8;
        if (r < len) {
          float x[8];
          lds8f(Xs + r * kLdS + cc, x);
          *reinterpret_cast<uint4*>(args.out + std::int64_t(t0 + r) * args.out_stride + hv * kDv + v0 + cc) = pack8h(x);
        }
      }
    }
    const float decay_last = st.eg[kChunk - 1];
    for (int tile = warp; tile < kStateTiles; tile += kScanWarps) {
      const int si = tile / kTilesV, sj = tile % kTilesV;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, Ss + si * 16 * kLdS + sj * 16, kLdS, wmma::mem_row_major);
#pragma unroll
      for (int e = 0; e < acc.num_elements; ++e) acc.x[e] *= decay_last;
#pragma unroll
      for (int kk = 0; kk < kChunk / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, nvbf, wmma::col_major> a;  // K^T: a[m][t] = k[t][m]
        wmma::fragment<wmma::matrix_b, 16, 16, 16, nvbf, wmma::col_major> b;  // Vd[k][n] = Vdt[n][k]
        wmma::load_matrix_sync(a, sk + kk * 16 * kLdQ + si * 16, kLdQ);
        wmma::load_matrix_sync(b, Vdt + sj * 16 * kLdYt + kk * 16, kLdYt);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(Ss + si * 16 * kLdS + sj * 16, acc, kLdS, wmma::mem_row_major);
      __syncwarp();
      {  // lane: column lane%16 of the tile, rows (lane/16)*8..+8 -> one 16-byte store into S^T
        const int cc = sj * 16 + (lane & 15), r0 = si * 16 + (lane >> 4) * 8;
        float x[8];
        store_col8_t(Ss, kLdS, r0, cc, St, kLdSt, x);
      }
    }
    // The next iteration's top barrier orders this chunk's S, Sb and X writes before their next readers.
  }
  if (args.final_state) {
    __syncthreads();
    for (int i = tid; i < kDk * BV; i += kScanThreads) {
      const int r = i / BV, c = i % BV;
      args.final_state[state_off + std::size_t(r) * kDv + c] = Ss[r * kLdS + c];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Kernel 2 (default): the scan on mma.sync m16n8k16 with the state in registers, in transposed form.
//
// Value columns of the state evolve independently, so each warp owns 16 value columns v of one head for the whole
// sequence and needs no other warp's results. Everything is computed transposed (value columns as the M dimension):
//     X^T  = S^T K^T                      [16, 64]   A = S^T (registers), B = K rows (ldmatrix)
//     Y^T  = beta_t (V^T - exp(G_t) X^T)             V^T by ldmatrix.trans, in the accumulator layout of X^T
//     Vn^T = Y^T T^T                                 A = Y^T straight from the X^T accumulators (C -> A fragments)
//     O^T  = exp(G_t) (S^T Qn^T) + Vn^T P^T          output staged by stmatrix.trans, written as 32-byte rows
//     S^T  = exp(G_last) S^T + (Vn^T exp(G_last - G_t)) K     B = K by ldmatrix.trans
// The fp32 state S^T [16, 128] lives in 16 m16n8 accumulator tiles (64 registers per thread); two adjacent n8 tiles
// of an m16n8 accumulator are exactly the A fragment of an m16k16 tile, so no product result goes through shared
// memory. A block is NW warps = 16 NW value columns of one value head; it shares the chunk inputs (normalised q and
// k of the key head, T, P, exp(G), exp(G_last - G), beta, the V tile), double-buffered by cp.async, one barrier per
// chunk.

// sm_90 device code: the mma scan (stmatrix) and the cluster pieces below. The sm_80 pass compiles their bodies to a
// trap; the host launches the mma scan only where its compiled binary is sm_90 (mma_scan_available()) and runs the
// WMMA scan elsewhere.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define EV_GDN_SM90 1
#else
#define EV_GDN_SM90 0
#endif
__device__ __forceinline__ void stsm_x4_t(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
#if EV_GDN_SM90
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r0),
               "r"(r1), "r"(r2), "r"(r3)
               : "memory");
#else
  (void)addr, (void)r0, (void)r1, (void)r2, (void)r3;
  __trap();
#endif
}
__device__ __forceinline__ float2 bf16x2_to_float2(uint32_t x) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&x));
}
// Thread-block cluster pieces (sm_90): mbarriers with transaction counts, bulk copies multicast to every block of the
// cluster, the cluster barrier. The sm_80 pass never launches the cluster kernels; their bodies trap there.
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r = 0;
#if EV_GDN_SM90
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
#endif
  return r;
}
__device__ __forceinline__ void cluster_arrive() {
#if EV_GDN_SM90
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void cluster_wait() {
#if EV_GDN_SM90
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_sync() {
  cluster_arrive();
  cluster_wait();
}
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
#if EV_GDN_SM90
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#if EV_GDN_SM90
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if EV_GDN_SM90
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
#endif
}
// `bytes` (a multiple of 16) from global `src` to shared offset `dst` of this block, completing `bytes` transactions on
// the mbarrier at offset `bar`.
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
#if EV_GDN_SM90
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
#else
  (void)dst, (void)src, (void)bytes, (void)bar;
  __trap();
#endif
}
// `bytes` (a multiple of 16) from global `src` to shared offset `dst` of every block in `mask`, completing `bytes`
// transactions on the mbarrier at offset `bar` of each of them.
__device__ __forceinline__ void bulk_copy_multicast(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar,
                                                    uint16_t mask) {
#if EV_GDN_SM90
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, [%3], "
      "%4;\n" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar), "h"(mask)
      : "memory");
#else
  __trap();
#endif
}

// A fragments (m16 x k16, bf16) from accumulator tiles acc[2kk], acc[2kk+1] (m16 x n8 each).
template <int N>
__device__ __forceinline__ void acc_to_a(const float (&acc)[2 * N][4], uint32_t (&a)[N][4]) {
#pragma unroll
  for (int kk = 0; kk < N; ++kk) {
    a[kk][0] = pack_bf16(acc[2 * kk][0], acc[2 * kk][1]);
    a[kk][1] = pack_bf16(acc[2 * kk][2], acc[2 * kk][3]);
    a[kk][2] = pack_bf16(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
    a[kk][3] = pack_bf16(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
  }
}

// acc (m16 x n64 as 8 m16n8 tiles, zeroed here) = A B^T: A m16 x k128 (8 bf16 A fragments), B the 64 rows of a
// [64][kLdQ] bf16 tile at shared address `rows` (B[k][n] = rows[n][k]); rowB, colB: the lane's ldmatrix offsets.
__device__ __forceinline__ void mma_rows_k128(float (&acc)[8][4], const uint32_t (&a)[8][4], uint32_t rows, int rowB,
                                              int colB) {
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < 8; ++kk)
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      uint32_t b[4];
      ldmatrix_x4(b, rows + uint32_t(((16 * np + rowB) * kLdQ + 16 * kk + colB) * 2));
      mma_bf16(acc[2 * np], a[kk], b[0], b[1]);
      mma_bf16(acc[2 * np + 1], a[kk], b[2], b[3]);
    }
}
// acc += A B^T: A m16 x k64 (4 bf16 A fragments), B a lower-triangular [64][kLdT] tile (T or P) at shared address
// `tri`, so k blocks kk <= np only; k block outer: chains on one accumulator are interleaved.
__device__ __forceinline__ void mma_tril_k64(float (&acc)[8][4], const uint32_t (&a)[4][4], uint32_t tri, int rowB,
                                             int colB) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
#pragma unroll
    for (int np = kk; np < 4; ++np) {
      uint32_t b[4];
      ldmatrix_x4(b, tri + uint32_t(((16 * np + rowB) * kLdT + 16 * kk + colB) * 2));
      mma_bf16(acc[2 * np], a[kk], b[0], b[1]);
      mma_bf16(acc[2 * np + 1], a[kk], b[2], b[3]);
    }
}

template <int NW, int NS, bool kSplit>
struct mma_scan_smem {
  static constexpr int BV = 16 * NW;
  static constexpr int kLdV = BV + 8;  // bf16 pitch of the V tile (ldmatrix rows land on distinct bank groups)
  static constexpr int kLdO = 16 + 8;  // bf16 pitch of a warp's output staging tile [64, 16]
  struct stage {
    nvbf q[kChunk * kLdQ];  // q / |q| * d_k^-1/2 (per key head)
    nvbf k[kChunk * kLdQ];  // k / |k|
    nvbf T[kChunk * kLdT];
    nvbf P[kChunk * kLdT];
    nvbf v[kChunk * kLdV];
    float eg[kChunk];    // exp(G_i)
    float ed[kChunk];    // exp(G_last - G_i)
    float beta[kChunk];
    float pad[kChunk];
  };
  stage st[NS];
  nvbf o[NW][kChunk * kLdO];
  // kSplit: the state (bf16 A fragments, 8 x 4 words) and V_new^T (4 x 4 words) of a column group, handed from its
  // chain warp to its output warp; [buffer = chunk & 1][group][12 x uint4][lane].
  uint4 hand[kSplit ? 2 : 1][kSplit ? NW : 1][12][32];
  unsigned long long full[NS];  // cluster kernels: stage s's shared inputs have landed (transaction-count mbarrier)
};

// O^T = exp(G_t) (S^T Qn^T) + Vn^T P^T for one warp's 16 value columns and chunk stage `st`, staged through `o` and
// written to out rows t0 .. t0 + len - 1.
template <typename Stage>
__device__ __forceinline__ void mma_scan_output(const Stage& st, const uint32_t (&sa)[8][4], const uint32_t (&va)[4][4],
                                                nvbf* o, int kLdO, bf16* out, std::int64_t out_stride, int t0,
                                                int len, int col0, int lane) {
  const int q4 = lane & 3;
  const int rowB = (lane & 7) + ((lane >> 4) << 3), colB = ((lane >> 3) & 1) << 3;
  const uint32_t sq = smem_u32(st.q), sP = smem_u32(st.P);
  float oacc[8][4];
  mma_rows_k128(oacc, sa, sq, rowB, colB);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float2 eg = *reinterpret_cast<const float2*>(st.eg + 8 * j + 2 * q4);
    oacc[j][0] *= eg.x, oacc[j][1] *= eg.y, oacc[j][2] *= eg.x, oacc[j][3] *= eg.y;
  }
  mma_tril_k64(oacc, va, sP, rowB, colB);
  const uint32_t o_base = smem_u32(o);
#pragma unroll
  for (int jp = 0; jp < 4; ++jp)
    stsm_x4_t(o_base + uint32_t(((16 * jp + rowB) * kLdO + colB) * 2), pack_bf16(oacc[2 * jp][0], oacc[2 * jp][1]),
              pack_bf16(oacc[2 * jp][2], oacc[2 * jp][3]), pack_bf16(oacc[2 * jp + 1][0], oacc[2 * jp + 1][1]),
              pack_bf16(oacc[2 * jp + 1][2], oacc[2 * jp + 1][3]));
  __syncwarp();
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int idx = lane + 32 * i, t = idx >> 1, half = idx & 1;
    if (t < len)
      *reinterpret_cast<uint4*>(dev(out) + std::int64_t(t0 + t) * out_stride + col0 + half * 8) =
          *reinterpret_cast<const uint4*>(o + t * kLdO + half * 8);
  }
  // The caller's next block barrier orders these staging reads before the next stmatrix.
}

// The state S^T of one warp's 16 value columns (vw ..), as 16 m16n8 accumulator tiles: tile j holds state rows
// d_k = 8j .. 8j + 7, [e] at v = vw + g + 8 (e >> 1), d_k = 8j + 2 q4 + (e & 1). Loaded from `init` (fp32
// [.., d_k, d_v] at state_off) when `load` and init is set, else zero; mma_scan_store_state writes it back there.
__device__ __forceinline__ void mma_scan_load_state(float (&sacc)[16][4], bool load, const float* init,
                                                    std::size_t state_off, int vw, int g, int q4) {
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      sacc[j][e] = load && init ? init[state_off + std::size_t(8 * j + 2 * q4 + (e & 1)) * kDv + vw + g + 8 * (e >> 1)]
                                : 0.f;
}
__device__ __forceinline__ void mma_scan_store_state(const float (&sacc)[16][4], float* out, std::size_t state_off,
                                                     int vw, int g, int q4) {
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      out[state_off + std::size_t(8 * j + 2 * q4 + (e & 1)) * kDv + vw + g + 8 * (e >> 1)] = sacc[j][e];
}

// The chain warp's fragments of one chunk (registers), in the order its steps produce them: S^T (bf16 A fragments),
// X^T then Y^T (fp32 accumulators, in place), Y^T (bf16 A), Vn^T then Vd^T (fp32, in place), Vn^T and Vd^T (bf16 A).
// The kernels declare one per chunk and pass it to both halves; the helpers declare no arrays of their own, which kept
// every kernel's SASS byte-identical to the earlier inline copies (arrays local to an inlined helper change the order
// in which the compiler splits the kernel's arrays into registers, and with it the register allocation).
struct mma_chain_frags {
  uint32_t sa[8][4];
  float xacc[8][4];
  uint32_t ya[4][4];
  float vacc[8][4];
  uint32_t va[4][4];
  uint32_t vda[4][4];
};

// Y^T = beta (V^T - e X^T) in place on x (8 n8 tiles of tokens; tile j: tokens 8j..8j+7, this lane's 8j + 2 q4 + {0,1}),
// V^T by ldmatrix.trans from the bf16 V tile at shared `sv` (row pitch kLdV), columns col0 .. col0 + 15.
template <int kLdV>
__device__ __forceinline__ void chunk_y_from_x(float (&x)[8][4], uint32_t sv, int col0, const float* e,
                                               const float* beta, int q4, int rowB, int colB) {
#pragma unroll
  for (int jp = 0; jp < 4; ++jp) {
    uint32_t vv[4];  // (tile 2jp, v g), (tile 2jp, v g+8), (tile 2jp+1, v g), (tile 2jp+1, v g+8)
    ldmatrix_x4_trans(vv, sv + uint32_t(((16 * jp + rowB) * kLdV + col0 + colB) * 2));
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int j = 2 * jp + h, t = 8 * j + 2 * q4;
      const float2 e2 = *reinterpret_cast<const float2*>(e + t);
      const float2 be = *reinterpret_cast<const float2*>(beta + t);
      const float2 v_lo = bf16x2_to_float2(vv[2 * h]), v_hi = bf16x2_to_float2(vv[2 * h + 1]);
      x[j][0] = be.x * (v_lo.x - e2.x * x[j][0]);
      x[j][1] = be.y * (v_lo.y - e2.y * x[j][1]);
      x[j][2] = be.x * (v_hi.x - e2.x * x[j][2]);
      x[j][3] = be.y * (v_hi.y - e2.y * x[j][3]);
    }
  }
}

// Chain warp, first half of a chunk for its 16 value columns (column group cw of the V tile, row pitch kLdV):
//     X^T  = S^T K^T          (n = token; sa: S^T as bf16 A fragments, k = d_k)
//     Y^T  = beta (V^T - exp(G) X^T), in place; tile j covers tokens 8j..8j+7, this lane's 8j + 2 q4 + {0,1}
//     Vn^T = Y^T T^T          (B[k = j][n = i] = T[i][j]; T is lower triangular, so k blocks kk <= np only)
// sk, sT, sv: shared addresses of the stage's k, T and V tiles; eg, beta: the chunk's exp(G) and beta (shared);
// q4 = lane & 3; rowB, colB: the lane's ldmatrix row offsets (see the kernels).
// Fills f.sa, f.xacc, f.ya, then f.vacc (Vn^T in fp32, for the state update) and f.va (Vn^T as bf16 A fragments).
template <int kLdV>
__device__ __forceinline__ void mma_scan_chain_front(const float (&sacc)[16][4], uint32_t sk, uint32_t sT, uint32_t sv,
                                                     const float* eg, const float* beta, int cw, int q4, int rowB,
                                                     int colB, mma_chain_frags& f) {
  acc_to_a<8>(sacc, f.sa);
  mma_rows_k128(f.xacc, f.sa, sk, rowB, colB);
  chunk_y_from_x<kLdV>(f.xacc, sv, cw * 16, eg, beta, q4, rowB, colB);
  acc_to_a<4>(f.xacc, f.ya);
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) f.vacc[j][e] = 0.f;
  mma_tril_k64(f.vacc, f.ya, sT, rowB, colB);
  acc_to_a<4>(f.vacc, f.va);
}

// Chain warp, second half: Vd^T = Vn^T exp(G_last - G_t) (f.vacc in place, then f.vda), then
//     S^T = exp(G_last) S^T + Vd^T K      (B[k = t][n = d_k] = K[t][d_k], by ldmatrix.trans)
// ed: the chunk's exp(G_last - G) (shared); eg: its exp(G), of which the last is exp(G_last); rowT, colT: the lane's
// ldmatrix.trans row offsets.
__device__ __forceinline__ void mma_scan_chain_state(float (&sacc)[16][4], mma_chain_frags& f, uint32_t sk,
                                                     const float* ed, const float* eg, int q4, int rowT, int colT) {
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float2 d = *reinterpret_cast<const float2*>(ed + 8 * j + 2 * q4);
    f.vacc[j][0] *= d.x, f.vacc[j][1] *= d.y, f.vacc[j][2] *= d.x, f.vacc[j][3] *= d.y;
  }
  acc_to_a<4>(f.vacc, f.vda);
  const float decay_last = eg[kChunk - 1];
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) sacc[j][e] *= decay_last;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
#pragma unroll
    for (int np = 0; np < 8; ++np) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, sk + uint32_t(((16 * kk + rowT) * kLdQ + 16 * np + colT) * 2));
      mma_bf16(sacc[2 * np], f.vda[kk], b[0], b[1]);
      mma_bf16(sacc[2 * np + 1], f.vda[kk], b[2], b[3]);
    }
}

// Split scans: the hand-off of one column group, [12 x uint4][lane] (h at this lane's first word): S^T (before the
// chunk's update, 8 x 4 words) and V_new^T (4 x 4 words), written by the chain warp ...
__device__ __forceinline__ void mma_scan_hand_put(uint4* h, const uint32_t (&sa)[8][4], const uint32_t (&va)[4][4]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) h[32 * i] = make_uint4(sa[i][0], sa[i][1], sa[i][2], sa[i][3]);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[32 * (8 + i)] = make_uint4(va[i][0], va[i][1], va[i][2], va[i][3]);
}
// ... and read back by the output warp one chunk later (for mma_scan_output).
__device__ __forceinline__ void mma_scan_hand_get(const uint4* h, uint32_t (&sa)[8][4], uint32_t (&va)[4][4]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const uint4 x = h[32 * i];
    sa[i][0] = x.x, sa[i][1] = x.y, sa[i][2] = x.z, sa[i][3] = x.w;
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint4 x = h[32 * (8 + i)];
    va[i][0] = x.x, va[i][1] = x.y, va[i][2] = x.z, va[i][3] = x.w;
  }
}

// kSplit = false: NW warps, each does everything for its 16 columns. kSplit = true: 2 NW warps; warp w < NW (chain)
// carries the state of column group w through X, Y, V_new and the state update and hands S^T and V_new^T (bf16) to
// warp NW + w, which computes and writes the output one chunk later and issues the copies. One block barrier per
// chunk orders everything: chunk c's stage is read by the chain warps in iteration c and by the output warps in
// iteration c + 1, so the copy for chunk c + NS - 2 (not NS - 1) goes out in iteration c.
// CS > 1 (split only): the CS column blocks of a value head (consecutive blockIdx.x) form a thread-block cluster.
// The chunk inputs they share (q, k, T, P, exp(G), exp(G_last - G), beta; all but the V tile) are read from L2 once
// per cluster: block `rank` issues rows rank * 64 / CS .. of each as bulk copies multicast into every block's stage,
// completing on each block's mbarrier full[stage]. The cluster barrier replaces the block barrier (a stage is
// refilled only when every block of the cluster is done with it).
template <int NW, int NS, bool kSplit, int CS>
__global__ void __launch_bounds__((kSplit ? 2 : 1) * NW * 32, 1)
    gdn_mma_scan_kernel(gdn_shape shape, gdn_args args, workspace_view ws) {
  static_assert(CS == 1 || (kSplit && (CS == 2 || CS == 4)), "clusters of 2 or 4 split blocks only");
  using SM = mma_scan_smem<NW, NS, kSplit>;
  constexpr int BV = SM::BV, kLdV = SM::kLdV, kLdO = SM::kLdO;
  constexpr int kCopyThreads = NW * 32;           // the output warps when split, else all warps
  constexpr int kDist = kSplit ? NS - 2 : NS - 1;  // chunks in flight ahead of the one being read
  static_assert(kDist >= 1, "too few stages");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  SM& sm = *reinterpret_cast<SM*>(smem_raw);
  const int n_vt = kDv / BV;
  const int hv = blockIdx.x / n_vt, v0 = (blockIdx.x % n_vt) * BV, seq = blockIdx.y;
  const int hk = hv / (shape.n_v_heads / shape.n_k_heads);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
  const bool is_chain = !kSplit || warp < NW, is_out = !kSplit || warp >= NW;
  const int cw = kSplit ? warp % NW : warp;  // column group of this warp
  const int ctid = kSplit ? tid - NW * 32 : tid;  // copy thread index (valid when is_out)
  const int vw = v0 + cw * 16;                    // the group's first value column
  const int seq_begin = args.cu_seqlens[seq], seq_len = args.cu_seqlens[seq + 1] - seq_begin;
  const int n_chunks = (seq_len + kChunk - 1) / kChunk;
  const int slot0 = chunk_base(args.cu_seqlens, seq);
  const int state_slot = args.state_slots ? args.state_slots[seq] : seq;
  const std::size_t state_off = (std::size_t(state_slot) * shape.n_v_heads + hv) * kDk * kDv;

  float sacc[16][4];  // S^T, see mma_scan_load_state
  mma_scan_load_state(sacc, is_chain, args.initial_state, state_off, vw, g, q4);

  // Per-thread pieces of the chunk copy, fixed for the whole scan: each loop below steps by a compile-time stride, so
  // every cp.async is one instruction with immediate offsets.
  constexpr int kSegV = BV / 8;                      // 16-byte segments per V row
  const int qk_row = ctid >> 4, qk_seg = ctid & 15;  // q/k: 16 segments per row
  const int tp_row = ctid >> 3, tp_seg = ctid & 7;   // T/P: 8 segments per row
  const int v_row = ctid / kSegV, v_seg = ctid % kSegV;
  const uint32_t st0 = smem_u32(&sm.st[0]);
  constexpr uint32_t kStageBytes = sizeof(typename SM::stage);
  const uint32_t s_qk = uint32_t((qk_row * kLdQ + qk_seg * 8) * 2), s_tp = uint32_t((tp_row * kLdT + tp_seg * 8) * 2),
                 s_v = uint32_t((v_row * kLdV + v_seg * 8) * 2);
  constexpr uint32_t kOffQ = offsetof(typename SM::stage, q), kOffK = offsetof(typename SM::stage, k),
                     kOffT = offsetof(typename SM::stage, T), kOffP = offsetof(typename SM::stage, P),
                     kOffV = offsetof(typename SM::stage, v), kOffEg = offsetof(typename SM::stage, eg);
  const nvbf* const v_src = dev(args.v) + hv * kDv + v0 + v_seg * 8;
  const uint32_t bar0 = smem_u32(&sm.full[0]);
  const int rank = CS > 1 ? int(cluster_rank()) : 0;
  if constexpr (CS > 1) {
    if (tid == 0)
      for (int i = 0; i < NS; ++i) mbar_init(bar0 + 8 * i, 1);
    cluster_sync();  // every block's mbarriers are initialised before any multicast reaches them
  }
  auto issue = [&](int c) {  // chunk c's inputs into stage c % NS (the caller commits the group)
    const uint32_t sb = st0 + uint32_t(c % NS) * kStageBytes;
    const int t0 = seq_begin + c * kChunk, len = min(kChunk, seq_len - c * kChunk);
    const std::size_t kslot = std::size_t(slot0 + c) * shape.n_k_heads + hk;
    const std::size_t head_slot = std::size_t(slot0 + c) * shape.n_v_heads + hv;
    if constexpr (CS > 1) {
      // Bytes each block receives per stage: q, k, T, P (64 padded rows each) and three vectors of 64 floats.
      constexpr uint32_t kTx = 2 * kTileQ * 2 + 2 * kTileT * 2 + 3 * kChunk * 4;
      constexpr int kRowsPer = kChunk / CS;
      const uint32_t bar = bar0 + uint32_t(c % NS) * 8;
      if (ctid == 0) mbar_arrive_expect_tx(bar, kTx);
      // Block `rank`: rows rank * kRowsPer .. of q, k, T, P as one copy each; rank 0 also the vectors.
      if (ctid < (rank == 0 ? 7 : 4)) {
        const int r0 = rank * kRowsPer;
        const void* src;
        uint32_t dst, bytes;
        if (ctid < 2) {
          src = (ctid == 0 ? ws.Qe : ws.Kn) + kslot * kTileQ + r0 * kLdQ;
          dst = sb + (ctid == 0 ? kOffQ : kOffK) + uint32_t(r0 * kLdQ * 2);
          bytes = kRowsPer * kLdQ * 2;
        } else if (ctid < 4) {
          src = (ctid == 2 ? ws.T : ws.P) + head_slot * kTileT + r0 * kLdT;
          dst = sb + (ctid == 2 ? kOffT : kOffP) + uint32_t(r0 * kLdT * 2);
          bytes = kRowsPer * kLdT * 2;
        } else {
          const int j = ctid - 4;
          src = (j == 0 ? ws.eg : j == 1 ? ws.ed : ws.beta) + head_slot * kChunk;
          dst = sb + kOffEg + uint32_t(j * kChunk * 4);
          bytes = kChunk * 4;
        }
        bulk_copy_multicast(dst, src, bytes, bar, uint16_t((1u << CS) - 1));
      }
    } else {
      const nvbf* qn = ws.Qe + kslot * kTileQ + qk_row * kLdQ + qk_seg * 8;
      const nvbf* kn = ws.Kn + kslot * kTileQ + qk_row * kLdQ + qk_seg * 8;
#pragma unroll
      for (int it = 0; it < kChunk * 16 / kCopyThreads; ++it) {
        constexpr int kRows = kCopyThreads / 16;
        cp_async16(sb + kOffQ + s_qk + uint32_t(it * kRows * kLdQ * 2), qn + it * kRows * kLdQ);
        cp_async16(sb + kOffK + s_qk + uint32_t(it * kRows * kLdQ * 2), kn + it * kRows * kLdQ);
      }
      const nvbf* T = ws.T + head_slot * kTileT + tp_row * kLdT + tp_seg * 8;
      const nvbf* P = ws.P + head_slot * kTileT + tp_row * kLdT + tp_seg * 8;
#pragma unroll
      for (int it = 0; it < kChunk * 8 / kCopyThreads; ++it) {  // only the 16x16 blocks on and below the diagonal
        constexpr int kRows = kCopyThreads / 8;
        if ((tp_seg >> 1) <= ((tp_row + it * kRows) >> 4)) {
          cp_async16(sb + kOffT + s_tp + uint32_t(it * kRows * kLdT * 2), T + it * kRows * kLdT);
          cp_async16(sb + kOffP + s_tp + uint32_t(it * kRows * kLdT * 2), P + it * kRows * kLdT);
        }
      }
    }
    // V rows past the sequence end are zero-filled (source size 0, address of the chunk's first row).
#pragma unroll
    for (int it = 0; it < kChunk * kSegV / kCopyThreads; ++it) {
      constexpr int kRows = kCopyThreads / kSegV;
      const int r = v_row + it * kRows;
      const bool valid = r < len;
      cp_async16(sb + kOffV + s_v + uint32_t(it * kRows * kLdV * 2),
                       v_src + std::int64_t(valid ? t0 + r : t0) * args.v_stride, valid);
    }
    if constexpr (CS == 1) {
      const std::size_t vec = head_slot * kChunk;
#pragma unroll
      for (int i0 = 0; i0 < 48; i0 += kCopyThreads) {  // exp(G), exp(G_last - G), beta: 16 segments each, contiguous
        const int i = i0 + ctid;
        if (i < 48) {
          const float* src = i < 16 ? ws.eg : i < 32 ? ws.ed : ws.beta;
          cp_async16(sb + kOffEg + uint32_t(i * 16), src + vec + (i & 15) * 4);
        }
      }
    }
  };
  // kDist chunks in flight; one commit group per chunk, empty past the end, so wait_group kDist - 1 at the top of
  // iteration c always means "chunk c has landed".
#pragma unroll
  for (int c = 0; c < kDist; ++c) {
    if (is_out && c < n_chunks) issue(c);
    dev::cp_async_commit();
  }

  // Lane offsets of ldmatrix row addresses. Non-transposed B from [n][k] rows: rows n0 + rowB, columns k0 + colB.
  // Transposed B from [k][n] rows: rows k0 + rowT, columns n0 + colT.
  const int rowB = (lane & 7) + ((lane >> 4) << 3), colB = ((lane >> 3) & 1) << 3;
  const int rowT = (lane & 7) + (((lane >> 3) & 1) << 3), colT = (lane >> 4) << 3;

  for (int c = 0; c < n_chunks + (kSplit ? 1 : 0); ++c) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kDist - 1));
    // Chunk c landed (its cp.async part); every warp is done with the stage and hand-off buffer being refilled.
    // Clusters: every thread arrives on the cluster barrier here (done with iteration c - 1), but only the output
    // warps, which refill the stage in every block, wait for it now; the chain warps wait after their chunk.
    if constexpr (CS > 1) {
      cluster_arrive();
      __syncthreads();
      if (is_out) cluster_wait();
    } else {
      __syncthreads();
    }
    if (is_out && c + kDist < n_chunks) issue(c + kDist);
    dev::cp_async_commit();
    if (is_chain && c < n_chunks) {
      if constexpr (CS > 1) mbar_wait(bar0 + uint32_t(c % NS) * 8, uint32_t(c / NS) & 1);  // the multicast part
      const typename SM::stage& st = sm.st[c % NS];
      const int t0 = seq_begin + c * kChunk, len = min(kChunk, seq_len - c * kChunk);
      const uint32_t sk = smem_u32(st.k), sT = smem_u32(st.T), sv = smem_u32(st.v);
      mma_chain_frags f;
      mma_scan_chain_front<kLdV>(sacc, sk, sT, sv, st.eg, st.beta, cw, q4, rowB, colB, f);
      if constexpr (kSplit) mma_scan_hand_put(&sm.hand[c & 1][cw][0][lane], f.sa, f.va);  // to the output warp
      mma_scan_chain_state(sacc, f, sk, st.ed, st.eg, q4, rowT, colT);
      if constexpr (!kSplit)
        mma_scan_output(st, f.sa, f.va, sm.o[cw], kLdO, args.out, args.out_stride, t0, len,
                        hv * kDv + vw, lane);
    }
    if constexpr (CS > 1)
      if (is_chain) cluster_wait();
    if constexpr (kSplit) {
      if (is_out && c >= 1) {  // chunk c - 1
        const int cp = c - 1;
        // Completed in iteration c - 1 (the stage is refilled only after the next cluster barrier): returns at once.
        if constexpr (CS > 1) mbar_wait(bar0 + uint32_t(cp % NS) * 8, uint32_t(cp / NS) & 1);
        uint32_t sa[8][4], va[4][4];
        mma_scan_hand_get(&sm.hand[cp & 1][cw][0][lane], sa, va);
        mma_scan_output(sm.st[cp % NS], sa, va, sm.o[cw], kLdO, args.out, args.out_stride, seq_begin + cp * kChunk,
                        min(kChunk, seq_len - cp * kChunk), hv * kDv + vw, lane);
      }
    }
  }
  if constexpr (CS > 1) cluster_sync();  // no block leaves while a peer may still multicast into it
  if (is_chain && args.final_state) mma_scan_store_state(sacc, args.final_state, state_off, vw, g, q4);
}

// ---------------------------------------------------------------------------------------------------------------------
// Kernel (v14, cooperative), pieces: the stages of the split mma scan with 32 value columns, split by lifetime, and
// the tf32 mma.sync helpers of the T solve.
constexpr int kCoopNW = 2;          // column groups of 16 per block (32 value columns)
constexpr int kProducerThreads = 128;  // the producer warps

struct coop_stages {
  static constexpr int BV = 16 * kCoopNW;
  static constexpr int kLdV = BV + 8;
  static constexpr int kLdO = 16 + 8;
  struct qstage {  // read by the output warps, one iteration after the chain warps: 3 in rotation
    nvbf q[kChunk * kLdQ];  // q / |q| * d_k^-1/2
    nvbf P[kChunk * kLdT];  // tril(Q K^T exp(G_i - G_j)); 16x16 blocks above the diagonal unused
    float eg[kChunk];       // exp(G_i)
  };
  struct kstage {  // read by the chain warps only: 2 in rotation
    nvbf k[kChunk * kLdQ];  // k / |k|
    nvbf T[kChunk * kLdT];  // (I + L)^-1; 16x16 blocks above the diagonal unused
    nvbf v[kChunk * kLdV];
    float ed[kChunk];  // exp(G_last - G_i)
    float beta[kChunk];
  };
};

__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}
// d += a * b, m16n8k8, tf32 in, fp32 accumulate.
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// C (16 x 8) = A B, or -(A B) with kNeg, over k in [k0, k1) (multiples of 8), on tf32 mma.sync; A, B and C fp32 in
// shared memory, row-major with pitch kLdF (B's rows are k), each pointer at its tile's first element.
template <bool kNeg>
__device__ __forceinline__ void tile_tf32(const float* A, const float* B, float* C, int k0, int k1, int lane) {
  const int g = lane >> 2, q4 = lane & 3;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int k = k0; k < k1; k += 8) {
    const uint32_t a[4] = {to_tf32(A[g * kLdF + k + q4]), to_tf32(A[(g + 8) * kLdF + k + q4]),
                           to_tf32(A[g * kLdF + k + q4 + 4]), to_tf32(A[(g + 8) * kLdF + k + q4 + 4])};
    mma_tf32(acc, a, to_tf32(B[(k + q4) * kLdF + g]), to_tf32(B[(k + q4 + 4) * kLdF + g]));
  }
  const float s = kNeg ? -1.f : 1.f;
  *reinterpret_cast<float2*>(C + g * kLdF + 2 * q4) = make_float2(s * acc[0], s * acc[1]);
  *reinterpret_cast<float2*>(C + (g + 8) * kLdF + 2 * q4) = make_float2(s * acc[2], s * acc[3]);
}

// In-chunk cumulative sums of a warp's 64 values, two per lane (g.x, g.y: tokens 2 lane, 2 lane + 1): G0, G1 at
// those tokens, Gl at token 63.
__device__ __forceinline__ void chunk_cumsum(float2 g, int lane, float& G0, float& G1, float& Gl) {
  const float s1 = g.x + g.y;
  const float x = dev::warp_inclusive_scan(s1);
  G0 = x - s1 + g.x, G1 = x, Gl = __shfl_sync(0xffffffffu, x, 31);
}

__device__ __forceinline__ void prep_bar() { asm volatile("bar.sync 1, %0;\n" ::"n"(kProducerThreads) : "memory"); }

// T = (I + L)^-1 into Tm (fp32, pitch kLdF) for L strictly lower triangular (fp32, pitch kLdF; only the blocks on and
// below the diagonal are read, and of the diagonal blocks only the strictly lower part), for NH
// independent problems at once (L + h * stride, Tm + h * stride), by four warps (thread ptid < 128, warp pw < 4 of
// them): the 16x16 diagonal blocks by forward substitution, one thread per column, then two merge levels on tf32
// mma.sync. Afterwards the blocks of Tm above the diagonal hold scratch, not zeros. bar(): the four warps' barrier;
// the last call orders every write of Tm before the caller's reads.
template <int NH, typename Bar>
__device__ __forceinline__ void solve_T_heads(const float* L, float* Tm, int stride, int ptid, int pw, int lane,
                                              Bar bar) {
  // diagonal blocks by forward substitution, one thread per column, full 16x16
  if (ptid < NH * kChunk) {
    float x[16];
    const int h = ptid / kChunk;
    solve_diag_col(L + h * stride, kLdF, Tm + h * stride, kLdF, ptid % kChunk, x);
  }
  bar();
  // Level 1, merge m = pw >> 1 of the blocks r0 = 2m, r1 = 2m + 1, n8 tile h8: Y = L_10 D_0 into the unused block
  // (r0, r1) of Tm, then T_10 = -D_1 Y.
  const int r0 = 2 * (pw >> 1), r1 = r0 + 1, h8 = pw & 1;
#pragma unroll
  for (int h = 0; h < NH; ++h) {
    const float* Lh = L + h * stride;
    float* Th = Tm + h * stride;
    tile_tf32<false>(Lh + 16 * r1 * kLdF + 16 * r0, Th + 16 * r0 * kLdF + 16 * r0 + 8 * h8,
                     Th + 16 * r0 * kLdF + 16 * r1 + 8 * h8, 0, 16, lane);
  }
  bar();
#pragma unroll
  for (int h = 0; h < NH; ++h) {
    float* Th = Tm + h * stride;
    tile_tf32<true>(Th + 16 * r1 * kLdF + 16 * r1, Th + 16 * r0 * kLdF + 16 * r1 + 8 * h8,
                    Th + 16 * r1 * kLdF + 16 * r0 + 8 * h8, 0, 16, lane);
  }
  bar();
  // Level 2: A = T[0:32, 0:32], B = T[32:64, 32:64] (lower triangular), C = L[32:64, 0:32]. Z = C A into
  // Tm[0:32, 32:64] (unused), then T[32:64, 0:32] = -B Z. Warp pw: row tile mt = pw >> 1 (16 rows), column block
  // nb = pw & 1 (two n8 tiles). A's block (0, 1) and B's block (2, 3) hold scratch: the k ranges skip them
  // (A[k][n] = 0 for k < 16 nb; B[i][k] = 0 for k >= 16 (mt + 1)).
  const int mt = pw >> 1, nb = pw & 1;
#pragma unroll
  for (int h = 0; h < NH; ++h) {
    const float* Lh = L + h * stride;
    float* Th = Tm + h * stride;
#pragma unroll
    for (int e = 0; e < 2; ++e)
      tile_tf32<false>(Lh + (32 + 16 * mt) * kLdF, Th + 16 * nb + 8 * e, Th + 32 + 16 * mt * kLdF + 16 * nb + 8 * e,
                       16 * nb, 32, lane);
  }
  bar();
#pragma unroll
  for (int h = 0; h < NH; ++h) {
    float* Th = Tm + h * stride;
#pragma unroll
    for (int e = 0; e < 2; ++e)
      tile_tf32<true>(Th + (32 + 16 * mt) * kLdF + 32, Th + 32 + 16 * nb + 8 * e,
                      Th + (32 + 16 * mt) * kLdF + 16 * nb + 8 * e, 0, 16 * (mt + 1), lane);
  }
  bar();
}

// ---------------------------------------------------------------------------------------------------------------------
// Kernel (v14, cooperative): one launch in which every block is both a consumer (the split mma scan of v12b, 2 chain +
// 2 output warps, for 32 value columns of one value head) and a producer (4 more warps that prepare chunks for the
// blocks sharing its key head). The G = 4 * (n_v_heads / n_k_heads) blocks of a key head and sequence share the
// preparation: member m prepares chunks m, m + G, m + 2G, ... (normalised q and k, and for each value head T, P,
// exp(G), exp(G_last - G), beta, written to the v12b workspace with the scan's row pitch) and then publishes a flag
// per (chunk slot, key head) with a release store; the output warps of every member acquire the flag before they
// copy the chunk into their stage. A member has G scan iterations to prepare its next chunk, so the preparation
// runs beside the scan instead of before it.
// Deadlock freedom: producers wait for nothing outside their own block; consumers wait only for producers. The
// launch is cooperative (every block resident at once, or the launch fails), so every producer always runs. The
// flags are zeroed on the stream before each launch. Consumers and producers use separate named barriers (2 and 1);
// there is no block-wide barrier after the start.
constexpr int kCoopThreads = 256;  // warps 0-1 chain, 2-3 output, 4-7 produce

struct coop_smem {
  using qstage = coop_stages::qstage;
  using kstage = coop_stages::kstage;
  qstage qs[3];
  kstage ks[2];
  uint4 hand[2][kCoopNW][12][32];
  nvbf o[kCoopNW][kChunk * coop_stages::kLdO];
  union {
    struct {
      nvbf q[kChunk * kLdQ];  // normalised q, k of the chunk being prepared (the products' operands)
      nvbf k[kChunk * kLdQ];
    } in;
    struct {
      float L[kChunk * kLdF];   // then: beta_i k_i.k_j exp(G_i - G_j) of one value head
      float Tm[kChunk * kLdF];  // and its T in fp32; blocks above the diagonal are merge scratch
    } solve;
  } p;
  float G[2][kChunk];
  float beta[2][kChunk];
  unsigned long long qbar[3], kbar[2];  // kBulk: the bulk copies of stage qs[i] / ks[i] have landed
};
static_assert(sizeof(coop_smem) <= 227 * 1024, "the cooperative scan's shared memory exceeds one SM's");

__device__ __forceinline__ void consumer_bar() { asm volatile("bar.sync 2, 128;\n" ::: "memory"); }
__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_release(unsigned* p, unsigned v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}

// Q K^T or K K^T for the 16-row block RB against n8 column tiles 0 .. 2 RB + 1 (bf16 operands by ldmatrix, rows of
// pitch kLdQ), accumulated into acc (zeroed here).
template <int RB>
__device__ __forceinline__ void coop_products(uint32_t a_base, uint32_t k_base, float (&acc)[2 * (RB + 1)][4],
                                              int lane) {
  const int rowB = (lane & 7) + ((lane >> 4) << 3), colB = ((lane >> 3) & 1) << 3;
#pragma unroll
  for (int j = 0; j < 2 * (RB + 1); ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) {
    uint32_t a[4];
    ldmatrix_x4(a, a_base + uint32_t(((16 * RB + (lane & 15)) * kLdQ + 16 * kk + ((lane >> 4) << 3)) * 2));
#pragma unroll
    for (int np = 0; np <= RB; ++np) {
      uint32_t b[4];
      ldmatrix_x4(b, k_base + uint32_t(((16 * np + rowB) * kLdQ + 16 * kk + colB) * 2));
      mma_bf16(acc[2 * np], a, b[0], b[1]);
      mma_bf16(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}
// L (fp32, shared, pitch kLdF) from K K^T: beta_i kk_ij exp(G_i - G_j) for j < i, else 0.
template <int RB>
__device__ __forceinline__ void coop_epilogue_L(const float (&acc)[2 * (RB + 1)][4], const float* G, const float* beta,
                                                float* L, int lane) {
  const int g = lane >> 2, q4 = lane & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int i = 16 * RB + g + 8 * h;
    const float gi = G[i], bi = beta[i];
#pragma unroll
    for (int nt = 0; nt < 2 * (RB + 1); ++nt) {
      const int j = 8 * nt + 2 * q4;
      const float l0 = j < i ? bi * acc[nt][2 * h] * __expf(gi - G[j]) : 0.f;
      const float l1 = j + 1 < i ? bi * acc[nt][2 * h + 1] * __expf(gi - G[j + 1]) : 0.f;
      *reinterpret_cast<float2*>(L + i * kLdF + j) = make_float2(l0, l1);
    }
  }
}
// P (bf16, global, pitch kLdT) from Q K^T: qk_ij exp(G_i - G_j) for j <= i, else 0.
template <int RB>
__device__ __forceinline__ void coop_epilogue_P(const float (&acc)[2 * (RB + 1)][4], const float* G, nvbf* P, int lane) {
  const int g = lane >> 2, q4 = lane & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int i = 16 * RB + g + 8 * h;
    const float gi = G[i];
#pragma unroll
    for (int nt = 0; nt < 2 * (RB + 1); ++nt) {
      const int j = 8 * nt + 2 * q4;
      const float p0 = j <= i ? acc[nt][2 * h] * __expf(gi - G[j]) : 0.f;
      const float p1 = j + 1 <= i ? acc[nt][2 * h + 1] * __expf(gi - G[j + 1]) : 0.f;
      *reinterpret_cast<uint32_t*>(P + i * kLdT + j) = pack_bf16(p0, p1);
    }
  }
}

// kDebug (benchmarks only, for the analysis): 1 = consumers skip the flag waits (wrong results: the scan's time beside
// the producers), 2 = producers only (consumers return at once), 3 = consumers only (no producers, no waits).
// Measured and dropped (H100): a fence by every producer thread before the publishing barrier (+0.05 ms), producers
// held to at most 16 / 32 chunks ahead of their block's consumers (+0.15 / +0.12 ms), the scan reading the raw q and k
// rows from the inputs with 1/|k| and d_k^-1/2/|q| folded into its per-token vectors (producers 0.79 vs 0.84 ms alone,
// but the scan 0.85 vs 0.67 ms alone; together 1.48-1.50 ms vs v12b 1.53-1.55 in that call).
// kBulk (opt-in, measured equal: 1.29-1.34 vs 1.30-1.33 ms, the scan alone 0.63 vs 0.66 ms): one thread copies q, k,
// T, P and the vectors of a chunk as 7 bulk copies (cp.async.bulk) completing on the stage's mbarrier, instead of 64
// threads issuing 16-byte cp.async; the V tile stays cp.async.
template <int kDebug, bool kBulk>
__global__ void __launch_bounds__(kCoopThreads, 1)
    gdn_coop_scan_kernel(gdn_shape shape, gdn_args args, workspace_view ws, unsigned* flags) {
  using SM = coop_smem;
  constexpr int NW = kCoopNW, BV = coop_stages::BV, kLdV = coop_stages::kLdV, kLdO = coop_stages::kLdO;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  SM& sm = *reinterpret_cast<SM*>(smem_raw);
  const int n_vt = kDv / BV;
  const int ratio = shape.n_v_heads / shape.n_k_heads;  // 1 or 2 (the launcher checks)
  const int hv = blockIdx.x / n_vt, v0 = (blockIdx.x % n_vt) * BV, seq = blockIdx.y;
  const int hk = hv / ratio;
  const int n_members = n_vt * ratio, member = blockIdx.x % n_members;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
  const int seq_begin = args.cu_seqlens[seq], seq_len = args.cu_seqlens[seq + 1] - seq_begin;
  const int n_chunks = (seq_len + kChunk - 1) / kChunk;
  const int slot0 = chunk_base(args.cu_seqlens, seq);
  if constexpr (kBulk) {
    if (tid == 0) {
      for (int i = 0; i < 3; ++i) mbar_init(smem_u32(&sm.qbar[i]), 1);
      for (int i = 0; i < 2; ++i) mbar_init(smem_u32(&sm.kbar[i]), 1);
    }
    __syncthreads();  // the only block-wide barrier: before the roles part
  }

  if (warp >= 2 * NW) {
    // ---- producer: chunks member, member + n_members, ... of this sequence and key head.
    if (kDebug == 3) return;
    const int ptid = tid - 2 * NW * 32, pw = warp - 2 * NW;
    const int p_seg = ptid & 15, p_row = ptid >> 4;
    uint4 rq[8], rk[8];
    float2 rgb = make_float2(0.f, 0.f);  // warp 2r: g of value head r, warp 2r + 1: beta (two tokens per lane)
    auto prefetch = [&](int c) {
#pragma unroll
      for (int i = 0; i < 8; ++i) rq[i] = rk[i] = make_uint4(0, 0, 0, 0);
      rgb = make_float2(0.f, 0.f);
      if (c >= n_chunks) return;
      const int t0 = seq_begin + c * kChunk, len = min(kChunk, seq_len - c * kChunk);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int r = p_row + 8 * i;
        if (r < len) {
          rq[i] = *reinterpret_cast<const uint4*>(dev(args.q) + std::int64_t(t0 + r) * args.q_stride + hk * kDk + p_seg * 8);
          rk[i] = *reinterpret_cast<const uint4*>(dev(args.k) + std::int64_t(t0 + r) * args.k_stride + hk * kDk + p_seg * 8);
        }
      }
      if ((pw >> 1) < ratio) {
        const float* src = (pw & 1) == 0 ? args.g : args.beta;
        const int r = 2 * lane, h = hk * ratio + (pw >> 1);
        if (r < len) rgb.x = src[std::size_t(t0 + r) * shape.n_v_heads + h];
        if (r + 1 < len) rgb.y = src[std::size_t(t0 + r + 1) * shape.n_v_heads + h];
      }
    };
    const float qscale = rsqrtf(float(kDk));
    float* const L = sm.p.solve.L;
    float* const Tm = sm.p.solve.Tm;
    // T = (I + L)^-1 for value head hv_r of chunk slot `slot` into the workspace (all four warps; L complete).
    auto solve = [&](std::size_t head_slot) {
      solve_T_heads<1>(L, Tm, 0, ptid, pw, lane, [] { prep_bar(); });
      nvbf* T = ws.T + head_slot * kTileT;
      for (int e = ptid * 4; e < kChunk * kChunk; e += kProducerThreads * 4) {
        const int i = e >> 6, j0 = e & 63;
        if ((j0 >> 4) > (i >> 4)) continue;
        const float4 t = *reinterpret_cast<const float4*>(Tm + i * kLdF + j0);
        *reinterpret_cast<uint2*>(T + i * kLdT + j0) = make_uint2(pack_bf16(t.x, t.y), pack_bf16(t.z, t.w));
      }
    };
    prefetch(member);
    for (int c = member; c < n_chunks; c += n_members) {
      const std::size_t slot = std::size_t(slot0 + c);
      const std::size_t kslot = slot * shape.n_k_heads + hk;
      // Normalised q (scaled) and k: to the products' staging and to the workspace.
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int r = p_row + 8 * i;
        float xq[8], xk[8];
        const uint32_t wq[4] = {rq[i].x, rq[i].y, rq[i].z, rq[i].w}, wk[4] = {rk[i].x, rk[i].y, rk[i].z, rk[i].w};
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const float2 a = bf16x2_to_float2(wq[u]), b = bf16x2_to_float2(wk[u]);
          xq[2 * u] = a.x, xq[2 * u + 1] = a.y, xk[2 * u] = b.x, xk[2 * u + 1] = b.y;
        }
        float sq = 0.f, sk = 0.f;
#pragma unroll
        for (int u = 0; u < 8; ++u) sq += xq[u] * xq[u], sk += xk[u] * xk[u];
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) {
          sq += __shfl_xor_sync(0xffffffffu, sq, o);
          sk += __shfl_xor_sync(0xffffffffu, sk, o);
        }
        const float iq = rsqrtf(sq + kNormEps) * qscale, ik = rsqrtf(sk + kNormEps);
#pragma unroll
        for (int u = 0; u < 8; ++u) xq[u] *= iq, xk[u] *= ik;
        const uint4 pq = pack8h(xq), pk = pack8h(xk);
        *reinterpret_cast<uint4*>(sm.p.in.q + r * kLdQ + p_seg * 8) = pq;
        *reinterpret_cast<uint4*>(sm.p.in.k + r * kLdQ + p_seg * 8) = pk;
        *reinterpret_cast<uint4*>(ws.Qe + kslot * kTileQ + r * kLdQ + p_seg * 8) = pq;
        *reinterpret_cast<uint4*>(ws.Kn + kslot * kTileQ + r * kLdQ + p_seg * 8) = pk;
      }
      if ((pw >> 1) < ratio) {
        const int r = pw >> 1;
        const std::size_t vec = (slot * shape.n_v_heads + hk * ratio + r) * kChunk;
        if ((pw & 1) == 0) {  // G = in-chunk cumulative sum of g (padded rows: g = 0)
          float G0, G1, Gl;
          chunk_cumsum(rgb, lane, G0, G1, Gl);
          *reinterpret_cast<float2*>(sm.G[r] + 2 * lane) = make_float2(G0, G1);
          *reinterpret_cast<float2*>(ws.eg + vec + 2 * lane) = make_float2(__expf(G0), __expf(G1));
          *reinterpret_cast<float2*>(ws.ed + vec + 2 * lane) = make_float2(__expf(Gl - G0), __expf(Gl - G1));
        } else {
          *reinterpret_cast<float2*>(sm.beta[r] + 2 * lane) = rgb;
          *reinterpret_cast<float2*>(ws.beta + vec + 2 * lane) = rgb;
        }
      }
      prefetch(c + n_members);  // consumed by the next item: the loads' latency is hidden behind this one
      prep_bar();
      const uint32_t kb = smem_u32(sm.p.in.k), qb = smem_u32(sm.p.in.q);
      const std::size_t head_slot0 = slot * shape.n_v_heads + hk * ratio;
      if (pw < 2) {  // K K^T for the 16-row blocks {0, 3} (warp 0) or {1, 2} (warp 1), kept for every value head
        float a_lo[4][4], a_hi[8][4];  // blocks {0 or 1} and {3 or 2}; only the first 2 (RB + 1) tiles are used
        if (pw == 0) {
          coop_products<0>(kb, kb, reinterpret_cast<float(&)[2][4]>(a_lo), lane);
          coop_products<3>(kb, kb, a_hi, lane);
        } else {
          coop_products<1>(kb, kb, a_lo, lane);
          coop_products<2>(kb, kb, reinterpret_cast<float(&)[6][4]>(a_hi), lane);
        }
        prep_bar();  // the staging of q and k is dead: L and Tm may overwrite it
        for (int r = 0; r < ratio; ++r) {
          if (pw == 0) {
            coop_epilogue_L<0>(reinterpret_cast<float(&)[2][4]>(a_lo), sm.G[r], sm.beta[r], L, lane);
            coop_epilogue_L<3>(a_hi, sm.G[r], sm.beta[r], L, lane);
          } else {
            coop_epilogue_L<1>(a_lo, sm.G[r], sm.beta[r], L, lane);
            coop_epilogue_L<2>(reinterpret_cast<float(&)[6][4]>(a_hi), sm.G[r], sm.beta[r], L, lane);
          }
          prep_bar();
          solve(head_slot0 + r);
        }
      } else {  // Q K^T: P of every value head straight to the workspace
        float a_lo[4][4], a_hi[8][4];
        if (pw == 2) {
          coop_products<0>(qb, kb, reinterpret_cast<float(&)[2][4]>(a_lo), lane);
          coop_products<3>(qb, kb, a_hi, lane);
        } else {
          coop_products<1>(qb, kb, a_lo, lane);
          coop_products<2>(qb, kb, reinterpret_cast<float(&)[6][4]>(a_hi), lane);
        }
        for (int r = 0; r < ratio; ++r) {
          nvbf* P = ws.P + (head_slot0 + r) * kTileT;
          if (pw == 2) {
            coop_epilogue_P<0>(reinterpret_cast<float(&)[2][4]>(a_lo), sm.G[r], P, lane);
            coop_epilogue_P<3>(a_hi, sm.G[r], P, lane);
          } else {
            coop_epilogue_P<1>(a_lo, sm.G[r], P, lane);
            coop_epilogue_P<2>(reinterpret_cast<float(&)[6][4]>(a_hi), sm.G[r], P, lane);
          }
        }
        prep_bar();
        for (int r = 0; r < ratio; ++r) {
          prep_bar();
          solve(head_slot0 + r);
        }
      }
      // Publish: the barrier orders every producer thread's workspace writes before thread 0's fence and release store
      // of the flag (cumulative at GPU scope), as a grid barrier does.
      prep_bar();
      if (ptid == 0) {
        __threadfence();
        st_release(flags + slot * shape.n_k_heads + hk, 1u);
      }
    }
    return;
  }

  // ---- consumers: the split mma scan of v12b over stages qs[c % 3] and ks[c & 1].
  const bool is_out = warp >= NW;
  const int cw = warp % NW, vw = v0 + cw * 16;
  const int ctid = tid - NW * 32;  // copy thread (output warps)
  const int state_slot = args.state_slots ? args.state_slots[seq] : seq;
  const std::size_t state_off = (std::size_t(state_slot) * shape.n_v_heads + hv) * kDk * kDv;
  const int rowB = (lane & 7) + ((lane >> 4) << 3), colB = ((lane >> 3) & 1) << 3;
  const int rowT = (lane & 7) + (((lane >> 3) & 1) << 3), colT = (lane >> 4) << 3;
  auto issue = [&](int c) {  // chunk c into qs[c % 3], ks[c & 1], after its flag (output warps; caller commits)
    const std::size_t slot = std::size_t(slot0 + c);
    const std::size_t kslot = slot * shape.n_k_heads + hk, head_slot = slot * shape.n_v_heads + hv;
    const unsigned* flag = flags + kslot;
    if (kDebug == 0)
      while (ld_acquire(flag) == 0) __nanosleep(64);
    const uint32_t qsb = smem_u32(&sm.qs[c % 3]), ksb = smem_u32(&sm.ks[c & 1]);
    constexpr uint32_t kOffQ = offsetof(SM::qstage, q), kOffP = offsetof(SM::qstage, P),
                       kOffEg = offsetof(SM::qstage, eg), kOffK = offsetof(SM::kstage, k),
                       kOffT = offsetof(SM::kstage, T), kOffV = offsetof(SM::kstage, v),
                       kOffEd = offsetof(SM::kstage, ed), kOffBeta = offsetof(SM::kstage, beta);
    // q, k: 64 padded rows = 1088 contiguous 16-byte segments; T, P: 576. The padding and the blocks above the
    // diagonal come along and are never read: whole contiguous tiles measured faster than the v12b per-row copies
    // that skip them (H100: 1.28-1.34 vs 1.43-1.45 ms).
    if constexpr (kBulk) {
      if (ctid == 0) {
        const uint32_t qbar = smem_u32(&sm.qbar[c % 3]), kbar = smem_u32(&sm.kbar[c & 1]);
        mbar_arrive_expect_tx(qbar, uint32_t(kTileQ * 2 + kTileT * 2 + kChunk * 4));
        mbar_arrive_expect_tx(kbar, uint32_t(kTileQ * 2 + kTileT * 2 + 2 * kChunk * 4));
        bulk_copy(qsb + kOffQ, ws.Qe + kslot * kTileQ, kTileQ * 2, qbar);
        bulk_copy(qsb + kOffP, ws.P + head_slot * kTileT, kTileT * 2, qbar);
        bulk_copy(qsb + kOffEg, ws.eg + head_slot * kChunk, kChunk * 4, qbar);
        bulk_copy(ksb + kOffK, ws.Kn + kslot * kTileQ, kTileQ * 2, kbar);
        bulk_copy(ksb + kOffT, ws.T + head_slot * kTileT, kTileT * 2, kbar);
        bulk_copy(ksb + kOffEd, ws.ed + head_slot * kChunk, kChunk * 4, kbar);
        bulk_copy(ksb + kOffBeta, ws.beta + head_slot * kChunk, kChunk * 4, kbar);
      }
    } else {
      const nvbf* qn = ws.Qe + kslot * kTileQ + ctid * 8;
      const nvbf* kn = ws.Kn + kslot * kTileQ + ctid * 8;
#pragma unroll
      for (int it = 0; it < kTileQ / 8 / 64; ++it) {
        cp_async16(qsb + kOffQ + uint32_t((ctid + 64 * it) * 16), qn + 64 * 8 * it);
        cp_async16(ksb + kOffK + uint32_t((ctid + 64 * it) * 16), kn + 64 * 8 * it);
      }
      const nvbf* T = ws.T + head_slot * kTileT + ctid * 8;
      const nvbf* P = ws.P + head_slot * kTileT + ctid * 8;
#pragma unroll
      for (int it = 0; it < kTileT / 8 / 64; ++it) {
        cp_async16(ksb + kOffT + uint32_t((ctid + 64 * it) * 16), T + 64 * 8 * it);
        cp_async16(qsb + kOffP + uint32_t((ctid + 64 * it) * 16), P + 64 * 8 * it);
      }
    }
    const int t0 = seq_begin + c * kChunk, len = min(kChunk, seq_len - c * kChunk);
#pragma unroll
    for (int it = 0; it < 4; ++it) {  // V: 64 rows x 4 segments, rows past the end zero-filled
      const int r = (ctid >> 2) + 16 * it, sgm = ctid & 3;
      const bool valid = r < len;
      cp_async16(ksb + kOffV + uint32_t((r * kLdV + sgm * 8) * 2),
                       dev(args.v) + std::int64_t(valid ? t0 + r : t0) * args.v_stride + hv * kDv + v0 + sgm * 8,
                       valid);
    }
    if (!kBulk && ctid < 48) {
      const int j = ctid >> 4, sgm = ctid & 15;
      const float* src = (j == 0 ? ws.eg : j == 1 ? ws.ed : ws.beta) + head_slot * kChunk + sgm * 4;
      const uint32_t dst = j == 0 ? qsb + kOffEg : ksb + (j == 1 ? kOffEd : kOffBeta);
      cp_async16(dst + uint32_t(sgm * 16), src);
    }
  };

  if (kDebug == 2) return;
  if (is_out) {
    if (n_chunks > 0) issue(0);
    dev::cp_async_commit();
    for (int c = 0; c <= n_chunks; ++c) {
      dev::cp_async_wait<0>();
      consumer_bar();  // chunk c landed; every consumer is done with iteration c - 1
      if (c + 1 < n_chunks) issue(c + 1);
      dev::cp_async_commit();
      if (c < 1) continue;
      const int cp = c - 1;
      if constexpr (kBulk) mbar_wait(smem_u32(&sm.qbar[cp % 3]), uint32_t(cp / 3) & 1);  // landed (the chain waited)
      uint32_t sa[8][4], va[4][4];
      mma_scan_hand_get(&sm.hand[cp & 1][cw][0][lane], sa, va);
      mma_scan_output(sm.qs[cp % 3], sa, va, sm.o[cw], kLdO, args.out, args.out_stride, seq_begin + cp * kChunk,
                      min(kChunk, seq_len - cp * kChunk), hv * kDv + vw, lane);
    }
    return;
  }
  float sacc[16][4];  // S^T, as in gdn_mma_scan_kernel
  mma_scan_load_state(sacc, true, args.initial_state, state_off, vw, g, q4);
  for (int c = 0; c <= n_chunks; ++c) {
    consumer_bar();
    if (c >= n_chunks) continue;
    if constexpr (kBulk) {
      mbar_wait(smem_u32(&sm.kbar[c & 1]), uint32_t(c >> 1) & 1);
      mbar_wait(smem_u32(&sm.qbar[c % 3]), uint32_t(c / 3) & 1);
    }
    const SM::kstage& st = sm.ks[c & 1];
    const float* const eg = sm.qs[c % 3].eg;
    const uint32_t sk = smem_u32(st.k), sT = smem_u32(st.T), sv = smem_u32(st.v);
    mma_chain_frags f;
    mma_scan_chain_front<kLdV>(sacc, sk, sT, sv, eg, st.beta, cw, q4, rowB, colB, f);
    mma_scan_hand_put(&sm.hand[c & 1][cw][0][lane], f.sa, f.va);
    mma_scan_chain_state(sacc, f, sk, st.ed, eg, q4, rowT, colT);
  }
  if (args.final_state) mma_scan_store_state(sacc, args.final_state, state_off, vw, g, q4);
}

// ---------------------------------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------------------------------
// Kernel v15 (sm_90a; the default where wgmma_available() and n_v_heads <= 2 n_k_heads): the scan on warpgroup
// MMAs (wgmma) in blocks of 64 value columns, fed by producer blocks on the other SMs.
//
// Producers (blocks >= n_cons, two independent warpgroups each) prepare (chunk slot, key head) items in slot order;
// the next item's q and k rows are copied in (cp.async) as soon as an item's products are done. The raw q and k rows
// are the MMA operands: |k_t|^2 and |q_t|^2 come from the diagonals of K K^T and Q Q^T (fp32 sums of exact bf16
// products), and rk = 1/|k|, rq = d_k^-1/2/|q| are applied as per-token factors. For each value head of the key head
// a producer writes a record to the workspace (wg_record: the layout of a stage's tail, so that a consumer copies it
// as is); the two value heads' T are solved side by side (solve_T_heads<2>):
//     T = (I + L)^-1, L = strict_lower(beta_i K K^T rk_i rk_j exp(G_i - G_j))   (fp32 blocked solve; bf16 tile)
//     P = tril(Q K^T exp(G_i - G_j)) rq_i rk_j                                  (bf16 tile)
//     exp(G) rk, exp(G) rq, exp(G_last - G) rk, beta, exp(G_last)
// (tiles 64 x 64 with 128-byte rows, 128-byte swizzled: dev::swz64), then publishes a flag per (slot, key head):
// barrier, __threadfence and st.release.gpu by one thread.
// Consumers (blocks < n_cons: sequence, value head, 64 value columns) run two warpgroups:
//   - the loader acquires chunk c + 2's flag and copies (cp.async) its q and k rows into two 128-byte-swizzled tiles
//     each, the record, and the block's 64 V columns into stage (c + 2) % 3, once the state warpgroup released it
//     (done with chunk c - 1), and publishes chunk c when its copies have landed;
//   - the state warpgroup holds S^T [64 value columns, 128] in fp32 as a wgmma m64n128 accumulator (64 registers per
//     thread) for the whole sequence and, per chunk, with S^T as bf16 A fragments in registers and every B operand a
//     tile of the stage:
//       X^T  = S^T K^T,  O1^T = S^T Q^T                      m64n64k16 x 8 each, B = the raw K / Q tiles (K-major)
//       Y^T  = beta (V^T - exp(G) rk X^T)                   V^T by ldmatrix.trans, already in the accumulator layout
//       Vn^T = Y^T T^T                                      x 4, B = the T tile
//       O^T  = exp(G) rq O1^T + Vn^T P^T                    x 4, B = the P tile
//       S^T  = exp(G_last) S^T + (Vn^T exp(G_last - G) rk) K   m64n128k16 x 4, B = the K tiles read N-major
//     and writes O through a staging tile as 128-byte rows.
// One cooperative launch holds both (every block resident, so every producer runs: producers wait for nothing,
// consumers only for producers). Where the consumers and at least 8 producer blocks do not fit at once, two ordinary
// launches: producers only (n_cons = 0), then consumers only (the flags are set by then).
// Named barriers: 1 + s (stage s full: the loader arrives, the state warpgroup syncs), 4 + s (stage s free again: the
// reverse, only for chunks that reuse it, so that every arrival is matched), 7 (the state warpgroup), 9 + w
// (producer warpgroup w). Shared writes that wgmma reads (by st.shared or cp.async) are made visible to the async
// proxy by fence.proxy.async before the barrier that publishes them.
constexpr int kWgThreads = 256;
constexpr int kWgStages = 3;
constexpr int kWgBV = 64;          // value columns per consumer block
constexpr int kWgLdV = kWgBV + 8;  // bf16 pitch of the V tile and of the output staging (ldmatrix / stmatrix rows)
constexpr int kWgMinProducers = 8;
constexpr int kWgVTiles = kDv / kWgBV;  // consumer blocks per (sequence, value head)

struct wg_record {         // per (chunk slot, value head), in the workspace and at the tail of a stage
  nvbf T[kChunk * 64];     // (I + L)^-1, [i][j], dev::swz64; zero above the diagonal
  nvbf P[kChunk * 64];     // tril(Q K^T exp(G_i - G_j)) rq_i rk_j, same
  float egk[kChunk];       // exp(G_t) rk_t
  float eq[kChunk];        // exp(G_t) rq_t
  float edk[kChunk];       // exp(G_last - G_t) rk_t
  float beta[kChunk];
  float decay[4];          // exp(G_last), padding
};
static_assert(sizeof(wg_record) % 16 == 0, "records are copied in 16-byte pieces");
struct alignas(1024) wg_stage {  // 1024-byte aligned tiles: the 128-byte swizzle repeats every 8 rows of 128 bytes
  nvbf q[2][kChunk * 64];        // raw q: d_k columns 0-63 and 64-127, [token][64], dev::swz64
  nvbf k[2][kChunk * 64];        // raw k, same
  wg_record r;
  nvbf v[kChunk * kWgLdV];       // V[token][this block's 64 columns]
};
struct wg_consumer_smem {
  wg_stage st[kWgStages];
  alignas(16) nvbf o[kChunk * kWgLdV];  // output staging (stmatrix: 16-byte rows)
};
struct alignas(1024) wg_producer_smem {  // one per producer warpgroup
  nvbf q[2][kChunk * 64];                // [d_k half] of the item being prepared (the next one's copies follow the products)
  nvbf k[2][kChunk * 64];
  float L[2][kChunk * kLdF];             // per value head of the item (solved side by side)
  float Tm[2][kChunk * kLdF];
  float G2[2][kChunk];                   // the in-chunk cumulative sum of g, times log2(e)
  float beta[2][kChunk];
  float rk[kChunk];
  float rq[kChunk];
};
constexpr int kWgSmemBytes =
    int(std::max(sizeof(wg_consumer_smem), 2 * sizeof(wg_producer_smem))) + 1024;  // + the base's alignment
static_assert(kWgSmemBytes <= 227 * 1024, "v15's shared memory exceeds one SM's");

// Named barriers (dev::named_bar_sync / _arrive) with ids in a register: ptxas then reserves all 16, harmless at one
// block per SM.
#if EV_SM90A  // helpers of the sm_90a kernel body only (unused functions warn in the other device passes)
__device__ __forceinline__ float wg_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
// A wgmma m64nN fp32 accumulator (d[4 i + e]: n8 tile i, element e, the mma.sync m16n8 layout of each warp's 16 rows)
// viewed as the [N / 8][4] tiles that the mma.sync scan's helpers (acc_to_a, mma_scan_load_state, ...) take.
template <int T>
__device__ __forceinline__ float (&as_tiles(float (&d)[4 * T]))[T][4] {
  return reinterpret_cast<float(&)[T][4]>(d);
}
// The 64 rows of 256 bytes at `src` (row stride `stride` elements; rows >= len zero-filled) into two 64-column
// 128-byte-swizzled tiles at shared `dst` (8 KiB apart): this thread's 16-byte pieces (p_seg of rows p_row + 8 i).
__device__ __forceinline__ void wg_copy_rows(uint32_t dst, const nvbf* src, std::int64_t stride, int len, int p_seg,
                                             int p_row) {
  const nvbf* s0 = src + p_seg * 8;
  const uint32_t d0 = dst + (p_seg >> 3) * 8192;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = p_row + 8 * i;
    cp_async16(d0 + uint32_t(dev::swz64(r, p_seg & 7)), s0 + std::int64_t(min(r, len - 1)) * stride, r < len);
  }
}
#endif

// kMode = gdn_chunked_options::wgmma_variant (benchmarks only, wrong results): 1 = producers only (consumers return at
// once), 2 = consumers only (no producers, no flag waits), 4 = both, but the consumers do not wait for the flags.
// (Variant 3, the two launches, is kMode 0 launched twice.)
template <int kMode>
__global__ void __launch_bounds__(kWgThreads, 1)
    gdn_wg_kernel(gdn_shape shape, gdn_args args, unsigned char* ws, unsigned* flags, int n_slots, int n_cons) {
#if EV_SM90A
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // Pointer arithmetic on the shared array (not through an integer) keeps the accesses in the shared state space.
  unsigned char* const smem = smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
  const int ratio = shape.n_v_heads / shape.n_k_heads;  // 1 or 2 (the launcher checks)
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
  // The role as a warp-uniform value (a shuffle from lane 0): ptxas serialises wgmma in a branch it cannot prove
  // warp-uniform.
  const int role = __shfl_sync(0xffffffffu, tid >> 7, 0);
  const int wt = tid & 127, ww = warp & 3;  // thread and warp within the warpgroup
  const int p_seg = wt & 15, p_row = wt >> 4;
  constexpr float kLog2e = 1.4426950408889634f;

  if (int(blockIdx.x) >= n_cons) {
    // ---------------- producer warpgroup
    if (kMode == 2) return;
    wg_producer_smem& sm = reinterpret_cast<wg_producer_smem*>(smem)[role];
    const int bar_id = 9 + role;
    auto bar = [bar_id] { dev::named_bar_sync(bar_id, 128); };
    const int pw_id = (int(blockIdx.x) - n_cons) * 2 + role, n_pw = (int(gridDim.x) - n_cons) * 2;
    const int n_items = n_slots * shape.n_k_heads;
    const float qscale = rsqrtf(float(kDk));
    // Item it = (slot, key head): its sequence and chunk (seq < 0: an unused slot), first token and length.
    struct item_t {
      int slot, hk, seq, t0, len;
    };
    auto decode = [&](int it) {
      item_t x;
      x.slot = it / shape.n_k_heads, x.hk = it % shape.n_k_heads;
      int c = 0;
      x.seq = slot_to_seq(args.cu_seqlens, shape.n_seq, x.slot, &c);
      x.t0 = x.seq >= 0 ? args.cu_seqlens[x.seq] + c * kChunk : 0;
      x.len = x.seq >= 0 ? min(kChunk, args.cu_seqlens[x.seq + 1] - x.t0) : 0;
      return x;
    };
    auto issue = [&](const item_t& x) {
      if (x.seq < 0) return;
      wg_copy_rows(smem_u32(sm.q[0]), dev(args.q) + std::int64_t(x.t0) * args.q_stride + x.hk * kDk, args.q_stride,
                   x.len, p_seg, p_row);
      wg_copy_rows(smem_u32(sm.k[0]), dev(args.k) + std::int64_t(x.t0) * args.k_stride + x.hk * kDk, args.k_stride,
                   x.len, p_seg, p_row);
    };
    // g (warp 2 r) or beta (warp 2 r + 1) of value head r of an item, two tokens per lane.
    auto load_gb = [&](const item_t& x) {
      float2 v = make_float2(0.f, 0.f);
      if (x.seq < 0 || (ww >> 1) >= ratio) return v;
      const float* src = (ww & 1) == 0 ? args.g : args.beta;
      const int h = x.hk * ratio + (ww >> 1), r = 2 * lane;
      if (r < x.len) v.x = src[std::size_t(x.t0 + r) * shape.n_v_heads + h];
      if (r + 1 < x.len) v.y = src[std::size_t(x.t0 + r + 1) * shape.n_v_heads + h];
      return v;
    };
    item_t cur = decode(pw_id < n_items ? pw_id : 0);
    float2 gb = make_float2(0.f, 0.f);
    if (pw_id < n_items) issue(cur), gb = load_gb(cur);
    dev::cp_async_commit();
    for (int it = pw_id; it < n_items; it += n_pw) {
      const item_t x = cur;
      const float2 gbx = gb;
      const bool has_next = it + n_pw < n_items;
      if (has_next) cur = decode(it + n_pw), gb = load_gb(cur);  // registers only; the copies follow the products
      dev::cp_async_wait<0>();  // this thread's copies of item x
      if (x.seq < 0) {
        if (has_next) issue(cur);
        dev::cp_async_commit();
        continue;
      }
      dev::fence_proxy_async();
      bar();
      // K K^T, Q K^T, Q Q^T of the raw rows: accumulator [4 n + e] at row i = 16 ww + g + 8 (e >> 1), column
      // j = 8 n + 2 q4 + (e & 1); each product's first k-slice overwrites it (scale_d = 0).
      float kk[32], qk[32], qq[32];
      {
        const std::uint64_t dk = dev::wgmma_desc(smem_u32(sm.k[0])), dq = dev::wgmma_desc(smem_u32(sm.q[0]));
        dev::wgmma_fence();
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const std::uint64_t o = (j >> 2) * 512 + (j & 3) * 2;  // 16-byte units: k-slice j of the two tiles
          dev::wgmma_m64n64k16(kk, dk + o, dk + o, j > 0);
          dev::wgmma_m64n64k16(qk, dq + o, dk + o, j > 0);
          dev::wgmma_m64n64k16(qq, dq + o, dq + o, j > 0);
        }
        dev::wgmma_commit();
      }
      // Meanwhile: G of value head r (warp 2 r), beta (warp 2 r + 1).
      float G0 = 0.f, G1 = 0.f, Gl = 0.f;
      if ((ww >> 1) < ratio) {
        const int r = ww >> 1;
        if ((ww & 1) == 0) {  // in-chunk cumulative sum (rows past the sequence: g = 0), in log2 units
          chunk_cumsum(gbx, lane, G0, G1, Gl);
          G0 *= kLog2e, G1 *= kLog2e, Gl *= kLog2e;
          *reinterpret_cast<float2*>(sm.G2[r] + 2 * lane) = make_float2(G0, G1);
        } else {
          *reinterpret_cast<float2*>(sm.beta[r] + 2 * lane) = gbx;
        }
      }
      dev::wgmma_wait<0>();
      dev::fence_regs(kk), dev::fence_regs(qk), dev::fence_regs(qq);
      {  // Lane q4 == g / 2 holds the diagonal of rows 16 ww + g (tile 2 ww) and 16 ww + g + 8 (tile 2 ww + 1), at
         // element g % 2 (+ 2). Constant indices only (a computed one would put the accumulators on the stack).
        float nk[2] = {0.f, 0.f}, nq[2] = {0.f, 0.f};
#pragma unroll
        for (int p = 0; p < 4; ++p)
          if (p == ww)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int b = 4 * (2 * p + h) + 2 * h;
              nk[h] = (g & 1) ? kk[b + 1] : kk[b];
              nq[h] = (g & 1) ? qq[b + 1] : qq[b];
            }
        if (q4 == (g >> 1))
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            sm.rk[16 * ww + g + 8 * h] = rsqrtf(nk[h] + kNormEps);
            sm.rq[16 * ww + g + 8 * h] = rsqrtf(nq[h] + kNormEps) * qscale;
          }
      }
      bar();  // every warp's products are done: the q and k tiles take the next item's rows
      if (has_next) issue(cur);
      dev::cp_async_commit();
      wg_record* const recs = reinterpret_cast<wg_record*>(ws) + std::size_t(x.slot) * shape.n_v_heads + x.hk * ratio;
      if ((ww >> 1) < ratio) {  // the consumers' per-token factors of value head ww / 2
        wg_record& rec = recs[ww >> 1];
        if ((ww & 1) == 0) {
          const float2 rk = *reinterpret_cast<const float2*>(sm.rk + 2 * lane);
          const float2 rq = *reinterpret_cast<const float2*>(sm.rq + 2 * lane);
          const float e0 = wg_exp2(G0), e1 = wg_exp2(G1), d0 = wg_exp2(Gl - G0), d1 = wg_exp2(Gl - G1);
          *reinterpret_cast<float2*>(rec.egk + 2 * lane) = make_float2(e0 * rk.x, e1 * rk.y);
          *reinterpret_cast<float2*>(rec.eq + 2 * lane) = make_float2(e0 * rq.x, e1 * rq.y);
          *reinterpret_cast<float2*>(rec.edk + 2 * lane) = make_float2(d0 * rk.x, d1 * rk.y);
          if (lane == 0) *reinterpret_cast<float4*>(rec.decay) = make_float4(wg_exp2(Gl), 0.f, 0.f, 0.f);
        } else {
          *reinterpret_cast<float2*>(rec.beta + 2 * lane) = gbx;
        }
      }
      // Per value head r: L (fp32, shared) on and below the diagonal blocks (n-tiles 0 .. 2 ww + 1 of this warp's
      // rows), and the whole P tile straight to the record (zero above the diagonal blocks).
      for (int r = 0; r < ratio; ++r) {
        unsigned char* const Pg = reinterpret_cast<unsigned char*>(recs[r].P);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int i = 16 * ww + g + 8 * h;
          const float gi = sm.G2[r][i], bki = sm.beta[r][i] * sm.rk[i], rqi = sm.rq[i];
#pragma unroll
          for (int n = 0; n < 8; ++n) {
            const int j = 8 * n + 2 * q4;
            uint32_t pv = 0;
            if (n <= 2 * ww + 1) {
              const float2 gj = *reinterpret_cast<const float2*>(sm.G2[r] + j);
              const float2 rkj = *reinterpret_cast<const float2*>(sm.rk + j);
              const float e0 = wg_exp2(fminf(gi - gj.x, 0.f)) * rkj.x, e1 = wg_exp2(fminf(gi - gj.y, 0.f)) * rkj.y;
              float l0 = bki * kk[4 * n + 2 * h] * e0, l1 = bki * kk[4 * n + 2 * h + 1] * e1;
              float p0 = rqi * qk[4 * n + 2 * h] * e0, p1 = rqi * qk[4 * n + 2 * h + 1] * e1;
              if (n >= 2 * ww) {  // the diagonal block: L strictly lower, P lower
                l0 = j < i ? l0 : 0.f, l1 = j + 1 < i ? l1 : 0.f;
                p0 = j <= i ? p0 : 0.f, p1 = j + 1 <= i ? p1 : 0.f;
              }
              *reinterpret_cast<float2*>(sm.L[r] + i * kLdF + j) = make_float2(l0, l1);
              pv = pack_bf16(p0, p1);
            }
            *reinterpret_cast<uint32_t*>(Pg + dev::swz64(i, n) + 4 * q4) = pv;
          }
        }
      }
      bar();
      constexpr int kStride = kChunk * kLdF;
      if (ratio == 2)
        solve_T_heads<2>(sm.L[0], sm.Tm[0], kStride, wt, ww, lane, bar);
      else
        solve_T_heads<1>(sm.L[0], sm.Tm[0], kStride, wt, ww, lane, bar);
      for (int r = 0; r < ratio; ++r) {
        uint4* const Tg = reinterpret_cast<uint4*>(recs[r].T);
#pragma unroll
        for (int u = 0; u < 4; ++u) {  // T to bf16 (zero above the diagonal blocks: the solve's scratch there)
          const int idx = wt + 128 * u, i = idx >> 3, cj = idx & 7;
          uint4 val = make_uint4(0, 0, 0, 0);
          if ((cj >> 1) <= (i >> 4)) {
            const float4 a = *reinterpret_cast<const float4*>(sm.Tm[r] + i * kLdF + 8 * cj);
            const float4 b = *reinterpret_cast<const float4*>(sm.Tm[r] + i * kLdF + 8 * cj + 4);
            val = make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
          }
          Tg[dev::swz64(i, cj) >> 4] = val;
        }
      }
      bar();  // every thread's record stores precede the publication; the next item rewrites L
      if (wt == 0) {  // the fence makes the release cover the other threads' stores (ordered by the barrier)
        __threadfence();
        st_release(flags + std::size_t(x.slot) * shape.n_k_heads + x.hk, 1u);
      }
    }
    dev::cp_async_wait<0>();
    return;
  }

  // ---------------- consumer block: sequence, value head, 64 value columns
  if (kMode == 1) return;
  wg_consumer_smem& sm = *reinterpret_cast<wg_consumer_smem*>(smem);
  static_assert(kWgVTiles == 2, "the block index below splits off the value tile as its low bit");
  const int seq = int(blockIdx.x) / (kWgVTiles * shape.n_v_heads), hv = (int(blockIdx.x) >> 1) % shape.n_v_heads;
  const int v0 = (blockIdx.x & 1) * kWgBV, hk = hv / ratio;
  const int seq_begin = args.cu_seqlens[seq], seq_len = args.cu_seqlens[seq + 1] - seq_begin;
  const int n_chunks = (seq_len + kChunk - 1) / kChunk, slot0 = chunk_base(args.cu_seqlens, seq);
  if (role == 0) {
    // ---- loader: chunk c into stage c % 3
    auto issue = [&](int c) {
      wg_stage& st = sm.st[c % kWgStages];
      const int t0 = seq_begin + c * kChunk, len = min(kChunk, seq_len - c * kChunk);
      const std::size_t slot = std::size_t(slot0 + c);
      if (slot >= std::size_t(n_slots)) __trap();  // cu_seqlens inconsistent with n_tokens: no producer would come
      if (kMode == 0)
        while (ld_acquire(flags + slot * shape.n_k_heads + hk) == 0) __nanosleep(32);
      wg_copy_rows(smem_u32(st.q[0]), dev(args.q) + std::int64_t(t0) * args.q_stride + hk * kDk, args.q_stride, len,
                   p_seg, p_row);
      wg_copy_rows(smem_u32(st.k[0]), dev(args.k) + std::int64_t(t0) * args.k_stride + hk * kDk, args.k_stride, len,
                   p_seg, p_row);
      const unsigned char* rec = ws + (slot * shape.n_v_heads + hv) * sizeof(wg_record);
      const uint32_t rd = smem_u32(&st.r);
      for (int u = wt; u < int(sizeof(wg_record) / 16); u += 128) cp_async16(rd + 16 * u, rec + 16 * u);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int idx = wt + 128 * u, row = idx >> 3, sg = idx & 7;
        const nvbf* src = dev(args.v) + std::int64_t(t0 + min(row, len - 1)) * args.v_stride + hv * kDv + v0 + sg * 8;
        cp_async16(smem_u32(st.v + row * kWgLdV + sg * 8), src, row < len);
      }
    };
    // Two chunks in flight ahead of the one the state warpgroup reads: chunk c + 2 goes out as soon as chunk c - 1's
    // stage is free.
    for (int c = 0; c < 2; ++c) {
      if (c < n_chunks) issue(c);
      dev::cp_async_commit();
    }
    for (int c = 0; c < n_chunks; ++c) {
      dev::cp_async_wait<1>();  // this thread's copies of chunk c (the newest group is chunk c + 1's)
      dev::fence_proxy_async();
      dev::named_bar_arrive(1 + c % kWgStages, 256);
      if (c + 2 < n_chunks) {
        // the state warpgroup is done with c - 1
        if (c + 2 >= kWgStages) dev::named_bar_sync(4 + (c + 2) % kWgStages, 256);
        issue(c + 2);
      }
      dev::cp_async_commit();
    }
    dev::cp_async_wait<0>();
    return;
  }
  // ---- state: S^T [v0 + 16 ww + g + 8 (e >> 1)][8 i + 2 q4 + (e & 1)] in sacc[4 i + e].
  const int rowB = (lane & 7) + ((lane >> 4) << 3), colB = ((lane >> 3) & 1) << 3;
  const int state_slot = args.state_slots ? args.state_slots[seq] : seq;
  const std::size_t state_off = (std::size_t(state_slot) * shape.n_v_heads + hv) * kDk * kDv;
  float sacc[64];
  mma_scan_load_state(as_tiles<16>(sacc), true, args.initial_state, state_off, v0 + 16 * ww, g, q4);
  for (int c = 0; c < n_chunks; ++c) {
    const int s = c % kWgStages;
    const int t0 = seq_begin + c * kChunk, len = min(kChunk, seq_len - c * kChunk);
    dev::named_bar_sync(1 + s, 256);
    const wg_stage& st = sm.st[s];
    const std::uint64_t dk = dev::wgmma_desc(smem_u32(st.k[0])), dq = dev::wgmma_desc(smem_u32(st.q[0]));
    const std::uint64_t dT = dev::wgmma_desc(smem_u32(st.r.T)), dP = dev::wgmma_desc(smem_u32(st.r.P));
    const std::uint64_t dkn = dev::wgmma_desc(smem_u32(st.k[0]), 8192);  // K read N-major: tiles 8 KiB apart
    uint32_t sa[8][4];
    acc_to_a<8>(as_tiles<16>(sacc), sa);
    float x[32], o[32];  // each product's first k-slice overwrites its accumulator (scale_d = 0)
    dev::wgmma_fence();
#pragma unroll
    for (int j = 0; j < 8; ++j) dev::wgmma_m64n64k16_rs(x, sa[j], dk + (j >> 2) * 512 + (j & 3) * 2, j > 0);
    dev::wgmma_commit();
#pragma unroll
    for (int j = 0; j < 8; ++j) dev::wgmma_m64n64k16_rs(o, sa[j], dq + (j >> 2) * 512 + (j & 3) * 2, j > 0);
    dev::wgmma_commit();
    dev::wgmma_wait<1>();  // X done (O1 may still run)
    dev::fence_regs(x);
    chunk_y_from_x<kWgLdV>(as_tiles<8>(x), smem_u32(st.v), 16 * ww, st.r.egk, st.r.beta, q4, rowB, colB);
    uint32_t ya[4][4];
    acc_to_a<4>(as_tiles<8>(x), ya);
    dev::wgmma_fence();
#pragma unroll
    for (int j = 0; j < 4; ++j) dev::wgmma_m64n64k16_rs(x, ya[j], dT + 2 * j, j > 0);
    dev::wgmma_commit();
    dev::wgmma_wait<0>();  // Vn^T (in x) and O1^T done
    dev::fence_regs(x), dev::fence_regs(o);
    uint32_t va[4][4], vda[4][4];
    acc_to_a<4>(as_tiles<8>(x), va);
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const float2 e2 = *reinterpret_cast<const float2*>(st.r.eq + 8 * n + 2 * q4);
      const float2 d2 = *reinterpret_cast<const float2*>(st.r.edk + 8 * n + 2 * q4);
      o[4 * n] *= e2.x, o[4 * n + 1] *= e2.y, o[4 * n + 2] *= e2.x, o[4 * n + 3] *= e2.y;
      x[4 * n] *= d2.x, x[4 * n + 1] *= d2.y, x[4 * n + 2] *= d2.x, x[4 * n + 3] *= d2.y;
    }
    acc_to_a<4>(as_tiles<8>(x), vda);
    const float decay_last = st.r.decay[0];
#pragma unroll
    for (int i = 0; i < 64; ++i) sacc[i] *= decay_last;
    dev::wgmma_fence();
#pragma unroll
    for (int j = 0; j < 4; ++j) dev::wgmma_m64n64k16_rs(o, va[j], dP + 2 * j, 1);
#pragma unroll
    for (int j = 0; j < 4; ++j) dev::wgmma_m64n128k16_rs_tb(sacc, vda[j], dkn + 128 * j, 1);  // 16 rows = 2 KiB
    dev::wgmma_commit();
    dev::wgmma_wait<0>();
    dev::fence_regs(sacc), dev::fence_regs(o);
    if (c + kWgStages < n_chunks) dev::named_bar_arrive(4 + s, 256);  // stage s free for chunk c + 3
    const uint32_t o_base = smem_u32(sm.o) + 32 * ww;
    dev::named_bar_sync(7, 128);  // the previous chunk's reads of the staging tile are done
#pragma unroll
    for (int jp = 0; jp < 4; ++jp)
      stsm_x4_t(o_base + uint32_t(((16 * jp + rowB) * kWgLdV + colB) * 2), pack_bf16(o[8 * jp], o[8 * jp + 1]),
                pack_bf16(o[8 * jp + 2], o[8 * jp + 3]), pack_bf16(o[8 * jp + 4], o[8 * jp + 5]),
                pack_bf16(o[8 * jp + 6], o[8 * jp + 7]));
    dev::named_bar_sync(7, 128);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int idx = wt + 128 * u, row = idx >> 3, sg = idx & 7;
      if (row < len)
        *reinterpret_cast<uint4*>(dev(args.out) + std::int64_t(t0 + row) * args.out_stride + hv * kDv + v0 + sg * 8) =
            *reinterpret_cast<const uint4*>(sm.o + row * kWgLdV + sg * 8);
    }
  }
  if (args.final_state) mma_scan_store_state(as_tiles<16>(sacc), args.final_state, state_off, v0 + 16 * ww, g, q4);
#else
  (void)shape, (void)args, (void)ws, (void)flags, (void)n_slots, (void)n_cons;
  __trap();
#endif
}

// Recurrent kernel: block = (value head, value tile of 32 columns, sequence), 128 threads = 32 columns x 4 row groups of
// 32 state rows; each thread keeps its 32 state values in registers for the whole sequence.
constexpr int kRecThreads = 128;

__global__ void __launch_bounds__(kRecThreads) gdn_recurrent_kernel(gdn_shape shape, gdn_args args) {
  __shared__ float qn[kDk], kn[kDk], red[4][32], vals[2];
  const int n_vt = kDv / 32;
  const int hv = blockIdx.x / n_vt, v0 = (blockIdx.x % n_vt) * 32, seq = blockIdx.y;
  const int hk = hv / (shape.n_v_heads / shape.n_k_heads);
  const int tid = threadIdx.x, col = tid & 31, grp = tid >> 5;
  const int state_slot = args.state_slots ? args.state_slots[seq] : seq;
  const std::size_t state_off = (std::size_t(state_slot) * shape.n_v_heads + hv) * kDk * kDv + v0 + col;
  float s[32];
#pragma unroll
  for (int i = 0; i < 32; ++i)
    s[i] = args.initial_state ? args.initial_state[state_off + std::size_t(grp * 32 + i) * kDv] : 0.f;
  const int t_end = args.cu_seqlens[seq + 1];
  for (int t = args.cu_seqlens[seq]; t < t_end; ++t) {
    if (grp < 2) {  // warp 0 normalises q, warp 1 k
      const nvbf* src = grp == 0 ? dev(args.q) + std::int64_t(t) * args.q_stride + hk * kDk
                                 : dev(args.k) + std::int64_t(t) * args.k_stride + hk * kDk;
      float x[4];
      load4(src + col * 4, x);
      const float inv = rsqrtf(warp_sum(x[0] * x[0] + x[1] * x[1] + x[2] * x[2] + x[3] * x[3]) + kNormEps) *
                        (grp == 0 ? rsqrtf(float(kDk)) : 1.f);
      float* dst = grp == 0 ? qn : kn;
#pragma unroll
      for (int i = 0; i < 4; ++i) dst[col * 4 + i] = x[i] * inv;
    } else if (tid == 64) {
      vals[0] = __expf(args.g[std::size_t(t) * shape.n_v_heads + hv]);
      vals[1] = args.beta[std::size_t(t) * shape.n_v_heads + hv];
    }
    __syncthreads();
    const float decay = vals[0], beta = vals[1];
    float part = 0.f;
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      s[i] *= decay;
      part += s[i] * kn[grp * 32 + i];
    }
    red[grp][col] = part;
    __syncthreads();
    const float kv = red[0][col] + red[1][col] + red[2][col] + red[3][col];
    const float v = __bfloat162float(dev(args.v)[std::int64_t(t) * args.v_stride + hv * kDv + v0 + col]);
    const float delta = beta * (v - kv);
    part = 0.f;
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      s[i] += kn[grp * 32 + i] * delta;
      part += s[i] * qn[grp * 32 + i];
    }
    __syncthreads();  // everyone has read red[] for kv
    red[grp][col] = part;
    __syncthreads();
    if (grp == 0)
      dev(args.out)[std::int64_t(t) * args.out_stride + hv * kDv + v0 + col] =
          __float2bfloat16(red[0][col] + red[1][col] + red[2][col] + red[3][col]);
    __syncthreads();  // red, qn, kn are rewritten by the next token
  }
  if (args.final_state) {
#pragma unroll
    for (int i = 0; i < 32; ++i) args.final_state[state_off + std::size_t(grp * 32 + i) * kDv] = s[i];
  }
}

status check_common(const gdn_shape& s, const gdn_args& a, const char* what) {
  EV_KERNEL_REQUIRE(s.n_tokens >= 0 && s.n_seq >= 0, what, ": n_tokens = ", s.n_tokens, ", n_seq = ", s.n_seq,
                    ", expected >= 0");
  EV_KERNEL_REQUIRE(s.n_k_heads > 0 && s.n_v_heads > 0 && s.n_v_heads % s.n_k_heads == 0, what,
                    ": n_v_heads = ", s.n_v_heads, " must be a positive multiple of n_k_heads = ", s.n_k_heads);
  EV_KERNEL_SUPPORTED(s.d_k == kDk && s.d_v == kDv, what, ": d_k = ", s.d_k, ", d_v = ", s.d_v,
                      ", only 128 x 128 is implemented");
  if (s.n_seq == 0) return status::success();
  EV_KERNEL_REQUIRE(a.cu_seqlens, what, ": cu_seqlens is null");
  if (s.n_tokens == 0) return status::success();
  EV_KERNEL_REQUIRE(a.q && a.k && a.v && a.g && a.beta && a.out, what, ": q, k, v, g, beta and out must be non-null");
  EV_KERNEL_REQUIRE(a.q_stride >= s.n_k_heads * kDk && a.k_stride >= s.n_k_heads * kDk &&
                        a.v_stride >= s.n_v_heads * kDv && a.out_stride >= s.n_v_heads * kDv,
                    what, ": a row stride is smaller than heads * head_dim");
  return status::success();
}

// True where the mma scan's machine code for the current device is sm_90 (the sm_80 pass of a "90a;80" build traps in
// its stmatrix); cached on first use, like wgmma_available().
bool mma_scan_available() {
  static const bool ok = [] {
    cudaFuncAttributes fa{};
    return cudaFuncGetAttributes(&fa, gdn_mma_scan_kernel<2, 2, false, 1>) == cudaSuccess && fa.binaryVersion >= 90;
  }();
  return ok;
}

}  // namespace

// Bytes of the workspace tensors of make_view; the cooperative scan's flags (uint32 [slots, n_k_heads]) follow them.
static std::size_t view_bytes(const gdn_shape& shape) {
  const std::size_t slots = std::size_t(n_slots_for(shape.n_tokens, shape.n_seq));
  const std::size_t mats = slots * shape.n_v_heads * kTileT, vecs = slots * shape.n_v_heads * kChunk;
  return align_up(std::max(slots * shape.n_v_heads * kChunk * kDk, slots * shape.n_k_heads * kTileQ) * 2, 256) +
         align_up(slots * shape.n_k_heads * kTileQ * 2, 256) + 2 * align_up(mats * 2, 256) +
         3 * align_up(vecs * 4, 256);
}

std::size_t gdn_chunked_workspace_bytes(const gdn_shape& shape) {
  const std::size_t slots = std::size_t(n_slots_for(shape.n_tokens, shape.n_seq));
  return view_bytes(shape) + align_up(slots * shape.n_k_heads * sizeof(unsigned), 256);
}

// How many blocks of `kernel` (threads, smem bytes each) the current device holds at once, and whether it has
// cooperative launches; sets the kernel's shared-memory limit. It first returns an error pending from earlier work, so
// that the launchers below neither clear it with a refused cooperative launch nor take it for their own.
struct device_fit {
  int per_sm = 0, sms = 0;
  bool coop = false;
  int resident() const { return per_sm * sms; }
};
template <typename Kernel>
static status fit_on_device(Kernel kernel, int threads, int smem, device_fit* f) {
  EV_CUDA_CHECK(cudaGetLastError());
  int dev = 0, coop = 0;
  EV_CUDA_CHECK(cudaGetDevice(&dev));
  EV_CUDA_CHECK(cudaDeviceGetAttribute(&f->sms, cudaDevAttrMultiProcessorCount, dev));
  EV_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  EV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  EV_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&f->per_sm, kernel, threads, smem));
  f->coop = coop != 0;
  return status::success();
}

// The flags of v14 and v15 (uint32 [slots, n_k_heads], after make_view's tensors), cleared on `stream`.
static status clear_flags(void* workspace, const gdn_shape& shape, stream_t stream, unsigned** flags) {
  const std::size_t slots = std::size_t(n_slots_for(shape.n_tokens, shape.n_seq));
  *flags = reinterpret_cast<unsigned*>(static_cast<char*>(workspace) + view_bytes(shape));
  EV_CUDA_CHECK(cudaMemsetAsync(*flags, 0, slots * shape.n_k_heads * sizeof(unsigned), stream));
  return status::success();
}

// A cooperative launch; *launched = false, with nothing enqueued and the refusal cleared, where the device refuses it
// as too large (fewer SMs than it reports: MPS, green contexts), so that the caller takes another path.
template <typename Kernel>
static status try_coop_launch(Kernel kernel, dim3 grid, int threads, int smem, void** kargs, stream_t stream,
                              bool* launched) {
  const cudaError_t e = cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, dim3(threads), kargs,
                                                    std::size_t(smem), stream);
  *launched = e == cudaSuccess;
  if (e == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError();
    return status::success();
  }
  EV_CUDA_CHECK(e);
  return status::success();
}

// The cooperative scan (v14) where it applies and every block can be resident at once (*launched = true); else
// nothing is enqueued and the caller takes another path.
template <int kDebug, bool kBulk>
static status launch_coop(const gdn_shape& shape, const gdn_args& args, const workspace_view& ws, void* workspace,
                          stream_t stream, bool* launched) {
  *launched = false;
  if (shape.n_v_heads > 2 * shape.n_k_heads) return status::success();
  const int smem = int(sizeof(coop_smem));
  const auto kernel = gdn_coop_scan_kernel<kDebug, kBulk>;
  device_fit fit;
  if (auto st = fit_on_device(kernel, kCoopThreads, smem, &fit); !st.ok()) return st;
  const dim3 grid(shape.n_v_heads * (kDv / coop_stages::BV), shape.n_seq);
  if (!fit.coop || std::int64_t(fit.resident()) < std::int64_t(grid.x) * grid.y) return status::success();
  unsigned* flags = nullptr;
  if (auto st = clear_flags(workspace, shape, stream, &flags); !st.ok()) return st;
  gdn_shape sh = shape;
  gdn_args ar = args;
  workspace_view wv = ws;
  void* kargs[] = {&sh, &ar, &wv, &flags};
  return try_coop_launch(kernel, grid, kCoopThreads, smem, kargs, stream, launched);
}

// v15: one cooperative launch of consumers and producers; where they do not fit at once (or the cooperative launch is
// refused, or two_launches), producers alone, then consumers alone. *launched = false where v15 does not apply
// (n_v_heads > 2 n_k_heads): the caller takes another path. The records (n_slots x n_v_heads wg_record, 17 KiB each)
// fit in the space of make_view's tensors (more than 34 KiB per slot and value head); the flags follow them as in v14.
// The records must fit in front of the flags: per (slot, value head) make_view reserves at least T and P (kTileT each)
// and three fp32 vectors.
static_assert(sizeof(wg_record) <= 2 * kTileT * sizeof(nvbf) + 3 * kChunk * sizeof(float),
              "v15's records exceed the workspace of make_view");
// max_producers (tests): at most this many producer blocks (0: as many as fit), so that each producer warpgroup
// prepares several items.
template <int kMode>
static status launch_wg(const gdn_shape& shape, const gdn_args& args, void* workspace, stream_t stream,
                        bool two_launches, int max_producers, bool* launched) {
  *launched = false;
  if (shape.n_v_heads > 2 * shape.n_k_heads) return status::success();
  const auto kernel = gdn_wg_kernel<kMode>;
  device_fit fit;
  if (auto st = fit_on_device(kernel, kWgThreads, kWgSmemBytes, &fit); !st.ok()) return st;
  if (fit.per_sm < 1) return status::success();  // does not fit an SM here: another path
  unsigned* flags = nullptr;
  if (auto st = clear_flags(workspace, shape, stream, &flags); !st.ok()) return st;
  int n_slots = n_slots_for(shape.n_tokens, shape.n_seq);
  int n_cons = shape.n_seq * shape.n_v_heads * kWgVTiles;
  const int resident = fit.resident();
  unsigned char* ws = static_cast<unsigned char*>(workspace);
  if (!two_launches && fit.coop && n_cons + kWgMinProducers <= resident) {
    gdn_shape sh = shape;
    gdn_args ar = args;
    void* kargs[] = {&sh, &ar, &ws, &flags, &n_slots, &n_cons};
    const int grid = max_producers > 0 ? std::min(n_cons + max_producers, resident) : resident;
    if (auto st = try_coop_launch(kernel, dim3(grid), kWgThreads, kWgSmemBytes, kargs, stream, launched); !st.ok())
      return st;
    if (*launched) return status::success();
    // refused as too large: two launches
  }
  if (kMode != 2) {  // kMode 2 (consumers only) has no producers
    const int n_prod = max_producers > 0 ? std::min(max_producers, resident) : resident;
    kernel<<<n_prod, kWgThreads, kWgSmemBytes, stream>>>(shape, args, ws, flags, n_slots, 0);
    EV_CUDA_CHECK_LAUNCH("gdn_wg_kernel (producers)");
  }
  if (n_cons > 0) {
    kernel<<<n_cons, kWgThreads, kWgSmemBytes, stream>>>(shape, args, ws, flags, n_slots, n_cons);
    EV_CUDA_CHECK_LAUNCH("gdn_wg_kernel (consumers)");
  }
  *launched = true;
  return status::success();
}

template <int NW, int NS, bool kSplit>
static status launch_mma_scan(const gdn_shape& shape, const gdn_args& args, const workspace_view& ws,
                              stream_t stream) {
  const int smem = int(sizeof(mma_scan_smem<NW, NS, kSplit>));
  EV_CUDA_CHECK(cudaFuncSetAttribute(gdn_mma_scan_kernel<NW, NS, kSplit, 1>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(shape.n_v_heads * (kDv / (16 * NW)), shape.n_seq);
  gdn_mma_scan_kernel<NW, NS, kSplit, 1><<<grid, (kSplit ? 2 : 1) * NW * 32, smem, stream>>>(shape, args, ws);
  EV_CUDA_CHECK_LAUNCH("gdn_mma_scan_kernel");
  return status::success();
}

// The split mma scan in clusters of `cs` (1, 2 or 4) blocks; 0 means 1 (measured: clusters of 2 and 4 are slower).
template <int NW>
static status launch_mma_scan_cluster(const gdn_shape& shape, const gdn_args& args, const workspace_view& ws,
                                      stream_t stream, int cs) {
  using SM = mma_scan_smem<NW, 3, true>;
  const int smem = int(sizeof(SM));
  const dim3 grid(shape.n_v_heads * (kDv / (16 * NW)), shape.n_seq), block(2 * NW * 32);
  auto kernel_for = [](int n) {
    return n == 4 ? gdn_mma_scan_kernel<NW, 3, true, 4> : gdn_mma_scan_kernel<NW, 3, true, 2>;
  };
  if (cs <= 1) return launch_mma_scan<NW, 3, true>(shape, args, ws, stream);
  int dev = 0, major = 0;
  EV_CUDA_CHECK(cudaGetDevice(&dev));
  EV_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  EV_KERNEL_SUPPORTED(major >= 9, "gdn_chunked_forward: scan_cluster = ", cs, " needs sm_90 (thread-block clusters)");
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(cs), attr[0].val.clusterDim.y = 1, attr[0].val.clusterDim.z = 1;
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = std::size_t(smem), cfg.stream = stream;
  cfg.attrs = attr, cfg.numAttrs = 1;
  EV_CUDA_CHECK(cudaFuncSetAttribute(kernel_for(cs), cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  EV_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel_for(cs), shape, args, ws));
  EV_CUDA_CHECK_LAUNCH("gdn_mma_scan_kernel (cluster)");
  return status::success();
}

template <int BV, int WARPS>
static status launch_scan(const gdn_shape& shape, const gdn_args& args, const workspace_view& ws, stream_t stream) {
  const int smem = int(sizeof(scan_smem<BV>));
  EV_CUDA_CHECK(
      cudaFuncSetAttribute(gdn_chunk_scan_kernel<BV, WARPS>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(shape.n_v_heads * (kDv / BV), shape.n_seq);
  gdn_chunk_scan_kernel<BV, WARPS><<<grid, WARPS * 32, smem, stream>>>(shape, args, ws);
  EV_CUDA_CHECK_LAUNCH("gdn_chunk_scan_kernel");
  return status::success();
}

status gdn_chunked_forward(const gdn_shape& shape, const gdn_args& args, void* workspace, std::size_t workspace_bytes,
                           stream_t stream, const gdn_chunked_options& options) {
  if (auto st = check_common(shape, args, "gdn_chunked_forward"); !st.ok()) return st;
  if (shape.n_seq == 0) return status::success();
  const int vt = options.v_tile == 0 ? 32 : options.v_tile;
  EV_KERNEL_SUPPORTED(vt == 16 || vt == 32 || vt == 64, "gdn_chunked_forward: v_tile = ", vt,
                      ", expected 16, 32 or 64");
  EV_KERNEL_SUPPORTED(options.wgmma_variant >= 0 && options.wgmma_variant <= 4 && options.wgmma_producers >= 0,
                      "gdn_chunked_forward: wgmma_variant = ", options.wgmma_variant, ", expected 0-4; wgmma_producers = ",
                      options.wgmma_producers, ", expected >= 0");
  EV_KERNEL_SUPPORTED(options.scan_cluster == 0 || options.scan_cluster == 1 || options.scan_cluster == 2 ||
                          options.scan_cluster == 4,
                      "gdn_chunked_forward: scan_cluster = ", options.scan_cluster, ", expected 0, 1, 2 or 4");
  EV_KERNEL_SUPPORTED(options.scan_warps == 0 || options.scan_warps == 8 || options.scan_warps == 16,
                      "gdn_chunked_forward: scan_warps = ", options.scan_warps, ", expected 8 or 16");
  EV_KERNEL_REQUIRE(workspace && workspace_bytes >= gdn_chunked_workspace_bytes(shape),
                    "gdn_chunked_forward: workspace of ", workspace_bytes, " bytes, expected at least ",
                    gdn_chunked_workspace_bytes(shape));
  EV_KERNEL_REQUIRE(reinterpret_cast<std::uintptr_t>(workspace) % 256 == 0,
                    "gdn_chunked_forward: workspace must be 256-byte aligned");
  auto aligned16 = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  EV_KERNEL_REQUIRE(aligned16(args.q) && aligned16(args.k) && aligned16(args.v) && args.q_stride % 8 == 0 &&
                        args.k_stride % 8 == 0 && args.v_stride % 8 == 0 && args.out_stride % 8 == 0 &&
                        aligned16(args.out),
                    "gdn_chunked_forward: q, k, v and out must be 16-byte aligned with strides that are multiples "
                    "of 8 elements");
  const int n_slots = n_slots_for(shape.n_tokens, shape.n_seq);
  const workspace_view ws = make_view(workspace, n_slots, shape.n_k_heads, shape.n_v_heads);
  const int prep_bytes = int(sizeof(prep_smem));
  const dim3 prep_grid(n_slots, shape.n_k_heads);
  if (options.wgmma && !options.wmma_scan && !options.prepare_only && wgmma_available()) {
    bool launched = false;
    auto launch = [&]() -> status {
      switch (options.wgmma_variant) {
        case 1: return launch_wg<1>(shape, args, workspace, stream, false, options.wgmma_producers, &launched);
        case 2: return launch_wg<2>(shape, args, workspace, stream, true, options.wgmma_producers, &launched);
        case 4: return launch_wg<4>(shape, args, workspace, stream, false, options.wgmma_producers, &launched);
        default:
          return launch_wg<0>(shape, args, workspace, stream, options.wgmma_variant == 3, options.wgmma_producers,
                              &launched);
      }
    };
    if (auto st = launch(); !st.ok() || launched) return st;
  }
  if (!options.wmma_scan && mma_scan_available()) {
    if (options.cooperative && vt == 32 && options.split_output && options.scan_cluster <= 1 &&
        !options.prepare_only) {
      bool launched = false;
      auto launch = [&]() -> status {
        switch (options.coop_variant) {
          case 1: return launch_coop<1, false>(shape, args, ws, workspace, stream, &launched);
          case 2: return launch_coop<2, false>(shape, args, ws, workspace, stream, &launched);
          case 3: return launch_coop<3, false>(shape, args, ws, workspace, stream, &launched);
          case 4: return launch_coop<0, true>(shape, args, ws, workspace, stream, &launched);
          case 5: return launch_coop<3, true>(shape, args, ws, workspace, stream, &launched);
          default: return launch_coop<0, false>(shape, args, ws, workspace, stream, &launched);
        }
      };
      if (auto st = launch(); !st.ok() || launched) return st;
    }
    EV_CUDA_CHECK(
        cudaFuncSetAttribute(gdn_prepare_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, prep_bytes));
    gdn_prepare_kernel<true><<<prep_grid, kPrepThreads, prep_bytes, stream>>>(shape, args, ws);
    EV_CUDA_CHECK_LAUNCH("gdn_prepare_kernel");
    if (options.prepare_only) return status::success();
    if (!options.split_output) {
      switch (vt) {
        case 16: return launch_mma_scan<1, 2, false>(shape, args, ws, stream);
        case 64: return launch_mma_scan<4, 2, false>(shape, args, ws, stream);
        default: return launch_mma_scan<2, 2, false>(shape, args, ws, stream);
      }
    }
    switch (vt) {
      case 16: return launch_mma_scan_cluster<1>(shape, args, ws, stream, options.scan_cluster);
      case 64: return launch_mma_scan<4, 2, false>(shape, args, ws, stream);  // split: 3 stages do not fit
      default: return launch_mma_scan_cluster<2>(shape, args, ws, stream, options.scan_cluster);
    }
  }
  EV_CUDA_CHECK(
      cudaFuncSetAttribute(gdn_prepare_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, prep_bytes));
  gdn_prepare_kernel<false><<<prep_grid, kPrepThreads, prep_bytes, stream>>>(shape, args, ws);
  EV_CUDA_CHECK_LAUNCH("gdn_prepare_kernel");
  if (options.prepare_only) return status::success();
  if (options.scan_warps == 8) {
    switch (vt) {
      case 16: return launch_scan<16, 8>(shape, args, ws, stream);
      case 64: return launch_scan<64, 8>(shape, args, ws, stream);
      default: return launch_scan<32, 8>(shape, args, ws, stream);
    }
  }
  switch (vt) {
    case 16: return launch_scan<16, 16>(shape, args, ws, stream);
    case 64: return launch_scan<64, 16>(shape, args, ws, stream);
    default: return launch_scan<32, 16>(shape, args, ws, stream);
  }
}

status gdn_recurrent_forward(const gdn_shape& shape, const gdn_args& args, stream_t stream) {
  if (auto st = check_common(shape, args, "gdn_recurrent_forward"); !st.ok()) return st;
  if (shape.n_seq == 0) return status::success();
  auto aligned8 = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 8 == 0; };
  EV_KERNEL_REQUIRE(shape.n_tokens == 0 || (aligned8(args.q) && aligned8(args.k) && args.q_stride % 4 == 0 &&
                                            args.k_stride % 4 == 0),
                    "gdn_recurrent_forward: q, k must be 8-byte aligned with strides that are multiples of 4");
  gdn_recurrent_kernel<<<dim3(shape.n_v_heads * (kDv / 32), shape.n_seq), kRecThreads, 0, stream>>>(shape, args);
  EV_CUDA_CHECK_LAUNCH("gdn_recurrent_kernel");
  return status::success();
}

}  // namespace evident::kernels
