// CUDA MoE router: one warp per token; each lane keeps n_experts/32 logits in registers (strided: lane + 32 i), the
// softmax reductions and the k rounds of arg-max are warp shuffles.
#include <cuda_runtime.h>

#include <cfloat>
#include <type_traits>

#include "kernels/arch.h"
#include "kernels/cuda-check.cuh"
#include "kernels/device-util.cuh"
#include "kernels/moe.h"
#include "kernels/wgmma-sm90.cuh"

namespace evident::kernels {
namespace {

constexpr int kMaxPerLane = 32;  // n_experts <= 1024

template <int PER_LANE>
__global__ void router_kernel(moe_router_args a) {
  const int t = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (t >= a.n_tokens) return;
  const float* l = a.logits + std::int64_t(t) * a.logits_stride;
  float v[PER_LANE];
  float mx = -FLT_MAX;
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) {
    const int e = lane + 32 * i;
    v[i] = e < a.n_experts ? l[e] : -FLT_MAX;
    mx = fmaxf(mx, v[i]);
  }
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) {
    const int e = lane + 32 * i;
    v[i] = e < a.n_experts ? expf(v[i] - mx) : -1.f;  // probabilities are >= 0; -1 marks padding and taken experts
    sum += e < a.n_experts ? v[i] : 0.f;
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  float chosen_p = 0.f, top = 0.f;
  int chosen_e = 0;
  for (int j = 0; j < a.top_k; ++j) {
    float bv = -2.f;
    int bi = 0x7fffffff;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i)
      if (v[i] > bv) bv = v[i], bi = lane + 32 * i;  // ascending e within the lane: the first maximum wins
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    if ((bi & 31) == lane) {
#pragma unroll
      for (int i = 0; i < PER_LANE; ++i)
        if (lane + 32 * i == bi) v[i] = -1.f;
    }
    const float p = bv / sum;
    top += p;
    if (lane == j) chosen_p = p, chosen_e = bi;
  }
  if (lane < a.top_k) {
    a.ids[std::int64_t(t) * a.top_k + lane] = chosen_e;
    a.weights[std::int64_t(t) * a.top_k + lane] = a.renormalize ? chosen_p / top : chosen_p;
  }
}

}  // namespace

status moe_router(const moe_router_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_tokens >= 0 && a.n_experts > 0 && a.top_k > 0 && a.top_k <= a.n_experts,
                    "moe_router: n_experts = ", a.n_experts, ", top_k = ", a.top_k, ": expected 0 < top_k <= n_experts");
  EV_KERNEL_SUPPORTED(a.n_experts <= 32 * kMaxPerLane && a.top_k <= 32, "moe_router: n_experts = ", a.n_experts,
                      ", top_k = ", a.top_k, ": supported n_experts <= 1024, top_k <= 32");
  if (a.n_tokens == 0) return status::success();
  EV_KERNEL_REQUIRE(a.logits && a.ids && a.weights && a.logits_stride >= a.n_experts,
                    "moe_router: null logits/ids/weights or logits_stride < n_experts");
  const int blocks = (a.n_tokens + 7) / 8;
  if (a.n_experts <= 512) router_kernel<16><<<blocks, 256, 0, stream>>>(a);
  else router_kernel<kMaxPerLane><<<blocks, 256, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("router_kernel");
  return status::success();
}

}  // namespace evident::kernels

// ---------------------------------------------------------------------------------------------------------------------
// Routed experts: permutation, grouped GEMMs, combine.
namespace evident::kernels {
namespace {

// ---- moe_permute: deterministic (no atomics on global memory). Up to kPermChunk entries (decode): one block does
// it all (permute_small_kernel). Beyond, three launches:
// 1. permute_count_kernel: one warp per chunk of kPermChunk (token, k) entries, walked in order 32 at a time; lanes
//    with the same expert are grouped with __match_any_sync, so each entry gets its stable rank within the chunk
//    (local_rank) and the chunk its per-expert counts (counts[chunk][e]).
// 2. permute_chunk_scan_kernel: one warp per expert turns counts[.][e] into exclusive prefixes over the chunks and
//    writes the expert's total.
// 3. permute_scatter_kernel: every block scans the totals (n_experts <= 4096) into the expert offsets in shared
//    memory (block 0 writes expert_offsets), then places each entry: row = offset[e] + prefix[chunk][e] + local_rank.
constexpr int kPermChunk = 1024;
constexpr int kMaxPermExperts = 4096;

struct permute_ws {
  std::int32_t* counts;      // [n_chunks][n_experts]
  std::int32_t* totals;      // [n_experts]
  std::int32_t* local_rank;  // [n]
};

// Walks chunk `chunk` of the (token, k) entries in order, 32 at a time, with one warp: lanes that share an expert are
// grouped by __match_any_sync, so each valid entry i gets its stable rank within the chunk (rank(i, r)) and cnt[e]
// (shared, zeroed by the caller) ends as the chunk's count of expert e.
template <typename RankFn>
__device__ void rank_chunk(const moe_permute_args& a, int n, int chunk, std::int32_t* cnt, RankFn rank) {
  const int lane = threadIdx.x & 31;
  const unsigned lt = (1u << lane) - 1u;
  for (int s = 0; s < kPermChunk / 32; ++s) {
    const int i = chunk * kPermChunk + s * 32 + lane;
    int e = i < n ? a.ids[i] : -1;
    if (e < 0 || e >= a.n_experts) e = -1;
    const unsigned same = __match_any_sync(0xffffffffu, e);
    const int base = e >= 0 ? cnt[e] : 0;
    __syncwarp();
    if (e >= 0) {
      if ((same & lt) == 0) cnt[e] = base + __popc(same);  // the lowest lane of the group advances the counter
      rank(i, base + __popc(same & lt));
    }
    __syncwarp();
  }
}

__global__ void permute_count_kernel(moe_permute_args a, permute_ws ws, int n) {
  extern __shared__ std::int32_t cnt[];  // [n_experts]
  const int lane = threadIdx.x, chunk = blockIdx.x;
  for (int e = lane; e < a.n_experts; e += 32) cnt[e] = 0;
  __syncwarp();
  rank_chunk(a, n, chunk, cnt, [&](int i, int r) { ws.local_rank[i] = r; });
  for (int e = lane; e < a.n_experts; e += 32) ws.counts[std::int64_t(chunk) * a.n_experts + e] = cnt[e];
}

__global__ void permute_chunk_scan_kernel(moe_permute_args a, permute_ws ws, int n_chunks) {
  const int e = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (e >= a.n_experts) return;
  int carry = 0;
  for (int c0 = 0; c0 < n_chunks; c0 += 32) {
    const int c = c0 + lane;
    const int v = c < n_chunks ? ws.counts[std::int64_t(c) * a.n_experts + e] : 0;
    const int inc = dev::warp_inclusive_scan(v);
    if (c < n_chunks) ws.counts[std::int64_t(c) * a.n_experts + e] = carry + inc - v;
    carry += __shfl_sync(0xffffffffu, inc, 31);
  }
  if (lane == 0) ws.totals[e] = carry;
}

constexpr int kScatterThreads = 1024;

// The experts' first rows: an exclusive scan over the block (kScatterThreads threads, kMaxPermExperts /
// kScatterThreads experts each) of their row counts (counts[e]) into off[e] (may be counts: each thread reads its
// experts' counts before the scan); where write_global() (asked after the scan) also into a.expert_offsets. Returns
// the total row count (the caller stores it at a.expert_offsets[n_experts]).
template <typename WriteGlobal>
__device__ __forceinline__ int scan_expert_offsets(const moe_permute_args& a, const std::int32_t* counts,
                                                    std::int32_t* off, WriteGlobal write_global,
                                                    std::int32_t* scratch) {
  constexpr int per = kMaxPermExperts / kScatterThreads;
  const int e0 = threadIdx.x * per;
  int local[per], sum = 0;
#pragma unroll
  for (int j = 0; j < per; ++j) {
    local[j] = e0 + j < a.n_experts ? counts[e0 + j] : 0;
    sum += local[j];
  }
  int total = 0;
  int run = dev::block_exclusive_scan(sum, scratch, &total);
#pragma unroll
  for (int j = 0; j < per; ++j) {
    if (e0 + j < a.n_experts) {
      off[e0 + j] = run;
      if (write_global()) a.expert_offsets[e0 + j] = run;
    }
    run += local[j];
  }
  return total;
}

__global__ void __launch_bounds__(kScatterThreads) permute_scatter_kernel(moe_permute_args a, permute_ws ws, int n) {
  __shared__ std::int32_t off[kMaxPermExperts];
  __shared__ std::int32_t scratch[33];
  const int total = scan_expert_offsets(a, ws.totals, off, [] { return blockIdx.x == 0; }, scratch);
  if (blockIdx.x == 0 && threadIdx.x == 0) a.expert_offsets[a.n_experts] = total;
  __syncthreads();
  for (int i = blockIdx.x * kScatterThreads + threadIdx.x; i < min(n, (blockIdx.x + 1) * kScatterThreads);
       i += kScatterThreads) {
    const int e = a.ids[i];
    if (e < 0 || e >= a.n_experts) {
      a.token_row[i] = -1;
      continue;
    }
    const int row = off[e] + ws.counts[std::int64_t(i / kPermChunk) * a.n_experts + e] + ws.local_rank[i];
    a.row_token[row] = i / a.top_k;
    a.token_row[i] = row;
  }
}

// Decode sizes (n <= kPermChunk entries): everything in one block of kScatterThreads threads, one launch.
__global__ void __launch_bounds__(kScatterThreads) permute_small_kernel(moe_permute_args a, int n) {
  __shared__ std::int32_t cnt[kMaxPermExperts];
  __shared__ std::int32_t rank[kPermChunk];
  __shared__ std::int32_t scratch[33];
  for (int e = threadIdx.x; e < a.n_experts; e += kScatterThreads) cnt[e] = 0;
  __syncthreads();
  if (threadIdx.x < 32) rank_chunk(a, n, 0, cnt, [&](int i, int r) { rank[i] = r; });
  __syncthreads();
  const int total = scan_expert_offsets(a, cnt, cnt, [] { return true; }, scratch);  // cnt now holds the offsets
  if (threadIdx.x == 0) a.expert_offsets[a.n_experts] = total;
  __syncthreads();
  const int i = threadIdx.x;
  if (i < n) {
    const int e = a.ids[i];
    if (e < 0 || e >= a.n_experts) {
      a.token_row[i] = -1;
    } else {
      const int row = cnt[e] + rank[i];
      a.row_token[row] = i / a.top_k;
      a.token_row[i] = row;
    }
  }
}

permute_ws carve_permute(const moe_permute_args& a, void* workspace) {
  const std::int64_t n = std::int64_t(a.n_tokens) * a.top_k, n_chunks = (n + kPermChunk - 1) / kPermChunk;
  auto* p = static_cast<std::int32_t*>(workspace);
  permute_ws ws;
  ws.counts = p;
  ws.totals = p + n_chunks * a.n_experts;
  ws.local_rank = ws.totals + a.n_experts;
  return ws;
}

// ---- Grouped GEMM: C[r][n] = sum_k A[row(r)][k] * W[e][n][k] over the rows of expert e.
// Tile schedule on the device: every block reads expert_offsets, computes the number of BM-row tiles of each expert
// and their prefix (a block scan), and finds its (expert, first row) from blockIdx.x; blocks past the last tile exit.
// Grid: x = an upper bound of the tiles (floor(n_rows / BM) + min(n_experts, n_rows)), y = N / BN.
// Main loop: BK = 64, a STAGES-deep cp.async pipeline of A (gathered rows, zero-filled past the expert's rows and
// past K) and B (weight rows; with SWIGLU the BN gate rows and the BN matching up rows), XOR-swizzled shared tiles
// read with ldmatrix, mma.sync m16n8k16 bf16 with fp32 accumulators.
template <int BM, int BN, int WM, int WN, int STAGES, bool SWIGLU>
struct gg_cfg {
  static constexpr int kThreads = WM * WN * 32;
  static constexpr int kWTM = BM / WM, kWTN = BN / WN;
  static constexpr int kMI = kWTM / 16, kNI = kWTN / 8;
  static constexpr int kNB = SWIGLU ? 2 * BN : BN;  // weight rows per stage
  static constexpr int kStageBytes = (BM + kNB) * 128;
  static constexpr int kSmem = STAGES * kStageBytes;
  static_assert(kWTM % 16 == 0 && kWTN % 16 == 0, "warp tile must be a multiple of 16x16");
  static_assert((BM * 8) % kThreads == 0 && (kNB * 8) % kThreads == 0, "tile chunks must split over the threads");
};

struct gg_params {
  int n_rows, n_experts, K, N;  // N: output columns (inter for gate_up, hidden for down)
  const std::int32_t* offsets;
  const std::int32_t* row_token;  // null: A row = permuted row
  const bf16* a;
  std::int64_t lda;
  const bf16* w;  // [n_experts][rows_per_expert][K]
  std::int64_t w_expert_stride;
  void* out;
  std::int64_t ldo;
  bool out_fp32;
};


// Finds the (expert, m0 within the expert, row count of the expert) of a row tile (BM rows per tile, the tiles of each
// expert in expert order) into s_info; returns false if there is no such tile. Block-wide (a block scan). tile: the
// tile index, or a callable returning it, called after the scan (where grouped_gemm_kernel reads blockIdx.x).
template <int BM, typename Tile>
__device__ __forceinline__ bool find_tile(const gg_params& p, Tile tile_or_fn, int* s_info) {
  __shared__ int scratch[33];
  const int per = (p.n_experts + blockDim.x - 1) / blockDim.x;
  const int e0 = threadIdx.x * per;
  int tiles = 0;
  for (int j = 0; j < per; ++j) {
    const int e = e0 + j;
    if (e < p.n_experts) tiles += (p.offsets[e + 1] - p.offsets[e] + BM - 1) / BM;
  }
  if (threadIdx.x == 0) s_info[0] = -1;
  int run = dev::block_exclusive_scan(tiles, scratch);
  int tile;
  if constexpr (std::is_integral_v<Tile>) {
    tile = tile_or_fn;
  } else {
    tile = tile_or_fn();
  }
  if (tile >= run && tile < run + tiles) {
    for (int j = 0; j < per; ++j) {
      const int e = e0 + j;
      if (e >= p.n_experts) break;
      const int cnt = p.offsets[e + 1] - p.offsets[e], t = (cnt + BM - 1) / BM;
      if (tile < run + t) {
        s_info[0] = e;
        s_info[1] = (tile - run) * BM;
        s_info[2] = cnt;
        break;
      }
      run += t;
    }
  }
  __syncthreads();
  return s_info[0] >= 0;
}

// The A sources of this thread's load rows m = tid / 8 + STEP i (i < N) of a tile that starts m0 rows into an expert
// of cnt rows (permuted row row0): a_ok[i] says the row exists; a_src[i] points at chunk column cc of the row's
// activations (row_token maps permuted rows to token rows where set; rows past cnt use row0's, never read).
template <int N, int STEP>
__device__ __forceinline__ void gg_a_rows(const gg_params& p, int tid, int m0, int cnt, int row0, int cc,
                                          const bf16* (&a_src)[N], bool (&a_ok)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int m = tid / 8 + i * STEP;
    a_ok[i] = m0 + m < cnt;
    const int r = row0 + (a_ok[i] ? m : 0);
    const int src_row = p.row_token ? p.row_token[r] : r;
    a_src[i] = p.a + std::int64_t(src_row) * p.lda + cc * 8;
  }
}

// The B sources of this thread's load rows nb = tid / 8 + STEP i (i < N) of a column tile at output column n0 with
// BN output columns (SWIGLU: rows nb >= BN are the up rows, weight row N + column): b_ok[i] says the column exists;
// b_src[i] points at chunk column cc of the weight row of expert weights w (column 0's where the column is past N).
template <int N, int STEP, int BN, bool SWIGLU>
__device__ __forceinline__ void gg_b_rows(const gg_params& p, const bf16* w, int tid, int n0, int cc,
                                          const bf16* (&b_src)[N], bool (&b_ok)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int nb = tid / 8 + i * STEP;
    int col = n0 + (SWIGLU ? nb % BN : nb);
    b_ok[i] = col < p.N;
    if (!b_ok[i]) col = 0;
    const int wrow = SWIGLU && nb >= BN ? p.N + col : col;
    b_src[i] = w + std::int64_t(wrow) * p.K + cc * 8;
  }
}

// Stores the output pair (row r, columns col, col + 1) as fp32 or bf16 (p.out_fp32).
__device__ __forceinline__ void gg_store_pair(const gg_params& p, std::int64_t r, int col, float v0, float v1) {
  if (p.out_fp32) {
    *reinterpret_cast<float2*>(static_cast<float*>(p.out) + r * p.ldo + col) = make_float2(v0, v1);
  } else {
    *reinterpret_cast<__nv_bfloat162*>(static_cast<bf16*>(p.out) + r * p.ldo + col) = __floats2bfloat162_rn(v0, v1);
  }
}

template <int BM, int BN, int WM, int WN, int STAGES, bool SWIGLU>
__global__ void __launch_bounds__(WM* WN * 32) grouped_gemm_kernel(gg_params p) {
  using C = gg_cfg<BM, BN, WM, WN, STAGES, SWIGLU>;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_info[3];
  if (!find_tile<BM>(p, [] { return int(blockIdx.x); }, s_info)) return;
  const int e = s_info[0], m0 = s_info[1], cnt = s_info[2];
  const int row0 = p.offsets[e] + m0;  // first permuted row of the tile
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / WN, wn = warp % WN;
  const bf16* w = p.w + std::int64_t(e) * p.w_expert_stride;

  // Per-thread load assignments (fixed across k tiles): chunk column tid % 8, rows tid / 8 + i * (threads / 8).
  constexpr int kRowStep = C::kThreads / 8;
  constexpr int kAL = BM * 8 / C::kThreads, kBL = C::kNB * 8 / C::kThreads;
  const int cc = tid & 7;
  const bf16* a_src[kAL];
  bool a_ok[kAL];
  gg_a_rows<kAL, kRowStep>(p, tid, m0, cnt, row0, cc, a_src, a_ok);
  // Column tiles blockIdx.y, blockIdx.y + gridDim.y, ...: the prefill tiling walks several per block, so the tile
  // lookup above and the A row pointers are amortised.
  const int n_tiles = (p.N + BN - 1) / BN;
  for (int nt = blockIdx.y; nt < n_tiles; nt += gridDim.y) {
  const int n0 = nt * BN;
  __syncthreads();  // the previous column tile's last reads of the stage buffers are done
  const bf16* b_src[kBL];
  bool b_ok[kBL];
  gg_b_rows<kBL, kRowStep, BN, SWIGLU>(p, w, tid, n0, cc, b_src, b_ok);

  const int KT = (p.K + 63) / 64;
  auto load_stage = [&](int kt) {
    unsigned char* st = smem + (kt % STAGES) * C::kStageBytes;
    const int k0 = kt * 64;
    const bool kin = k0 + cc * 8 < p.K;
#pragma unroll
    for (int i = 0; i < kAL; ++i) {
      const int m = tid / 8 + i * kRowStep;
      const bool ok = a_ok[i] && kin;
      dev::cp_async16(st + dev::swz64(m, cc), ok ? a_src[i] + k0 : p.a, ok);
    }
#pragma unroll
    for (int i = 0; i < kBL; ++i) {
      const int nb = tid / 8 + i * kRowStep;
      const bool ok = b_ok[i] && kin;
      dev::cp_async16(st + BM * 128 + dev::swz64(nb, cc), ok ? b_src[i] + k0 : p.w, ok);
    }
  };

  float acc[C::kMI][C::kNI][4] = {};
  float acc_up[SWIGLU ? C::kMI : 1][SWIGLU ? C::kNI : 1][4] = {};

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) load_stage(s);
    dev::cp_async_commit();
  }
  for (int kt = 0; kt < KT; ++kt) {
    dev::cp_async_wait<STAGES - 2>();
    __syncthreads();
    if (kt + STAGES - 1 < KT) load_stage(kt + STAGES - 1);
    dev::cp_async_commit();
    const unsigned char* st = smem + (kt % STAGES) * C::kStageBytes;
    const std::uint32_t a_base = dev::smem_u32(st), b_base = dev::smem_u32(st + BM * 128);
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      std::uint32_t af[C::kMI][4];
#pragma unroll
      for (int mi = 0; mi < C::kMI; ++mi) {
        const int row = wm * C::kWTM + mi * 16 + (lane & 15);
        dev::ldmatrix_x4(af[mi], a_base + dev::swz64(row, ks * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int nj = 0; nj < C::kNI; nj += 2) {
        const int nrow = wn * C::kWTN + nj * 8 + ((lane >> 4) << 3) + (lane & 7);
        const int kc = ks * 2 + ((lane >> 3) & 1);
        std::uint32_t bf[4];
        dev::ldmatrix_x4(bf, b_base + dev::swz64(nrow, kc));
#pragma unroll
        for (int mi = 0; mi < C::kMI; ++mi) {
          dev::mma_bf16(acc[mi][nj], af[mi], bf[0], bf[1]);
          dev::mma_bf16(acc[mi][nj + 1], af[mi], bf[2], bf[3]);
        }
        if constexpr (SWIGLU) {
          std::uint32_t bu[4];
          dev::ldmatrix_x4(bu, b_base + dev::swz64(BN + nrow, kc));
#pragma unroll
          for (int mi = 0; mi < C::kMI; ++mi) {
            dev::mma_bf16(acc_up[mi][nj], af[mi], bu[0], bu[1]);
            dev::mma_bf16(acc_up[mi][nj + 1], af[mi], bu[2], bu[3]);
          }
        }
      }
    }
  }
  dev::cp_async_wait<0>();

  // Epilogue: element pairs (row g / g + 8, columns c, c + 1) straight from the accumulators.
#pragma unroll
  for (int mi = 0; mi < C::kMI; ++mi)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = wm * C::kWTM + mi * 16 + (lane >> 2) + half * 8;
      if (m0 + m >= cnt) continue;
      const std::int64_t r = row0 + m;
#pragma unroll
      for (int ni = 0; ni < C::kNI; ++ni) {
        const int col = n0 + wn * C::kWTN + ni * 8 + 2 * (lane & 3);
        if (col >= p.N) continue;
        float v0 = acc[mi][ni][2 * half], v1 = acc[mi][ni][2 * half + 1];
        if constexpr (SWIGLU) {
          v0 = v0 / (1.f + expf(-v0)) * acc_up[mi][ni][2 * half];
          v1 = v1 / (1.f + expf(-v1)) * acc_up[mi][ni][2 * half + 1];
        }
        gg_store_pair(p, r, col, v0, v1);
      }
    }
  }  // column tiles
}

template <int BM, int BN, int WM, int WN, int STAGES, bool SWIGLU>
status launch_grouped(const gg_params& p, stream_t stream) {
  using C = gg_cfg<BM, BN, WM, WN, STAGES, SWIGLU>;
  auto kernel = grouped_gemm_kernel<BM, BN, WM, WN, STAGES, SWIGLU>;
  EV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
  const long long tiles = p.n_rows / BM + std::min(p.n_experts, p.n_rows);
  const int n_tiles = (p.N + BN - 1) / BN;
  const int per_block = BM >= 64 ? 4 : 1;  // prefill: 4 column tiles per block
  const dim3 grid(unsigned(tiles), unsigned((n_tiles + per_block - 1) / per_block));
  kernel<<<grid, C::kThreads, C::kSmem, stream>>>(p);
  EV_CUDA_CHECK_LAUNCH("grouped_gemm_kernel");
  return status::success();
}

// ---- Hopper (sm_90a) grouped GEMM for prefill sizes: a block = 2 warpgroups (256 threads), a tile of 128 permuted
// rows (64 per warpgroup) x 256 weight rows (SWIGLU: 128 gate rows + the 128 matching up rows, i.e. 128 output
// columns; else 256 output columns), BK = 64. A (gathered rows, zero-filled past the expert's rows) and B go through
// a kWgStages-deep cp.async pipeline into 128-byte-swizzled shared tiles (dev::swz64, the wgmma K-major layout);
// each k tile is 4 wgmma.m64n256k16 per warpgroup, one commit group kept in flight. Loads run kWgStages - 2 tiles
// ahead and are issued right after the tile's MMAs, so the stage a load overwrites was read by the MMAs of two
// iterations ago, which every thread has waited for (wgmma_wait<1>) before this iteration's barrier.
// Grid: x = column tiles (fastest, so the blocks of one row tile run together and share its A rows in L2),
// y = an upper bound of the row tiles (as in grouped_gemm_kernel).
constexpr int kWgStages = 4;
constexpr int kWgStageBytes = (128 + 256) * 128;
constexpr int kWgSmem = kWgStages * kWgStageBytes + 1024;  // + alignment of the tiles to 1024 bytes


template <bool SWIGLU>
__global__ void __launch_bounds__(256, 1) grouped_gemm_wgmma_kernel(gg_params p) {
#if EV_SM90A
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) &
                                                         ~std::uintptr_t(1023));
  __shared__ int s_info[3];
  if (!find_tile<128>(p, int(blockIdx.y), s_info)) return;
  const int e = s_info[0], m0 = s_info[1], cnt = s_info[2];
  const int row0 = p.offsets[e] + m0;
  constexpr int kOutCols = SWIGLU ? 128 : 256;
  const int n0 = blockIdx.x * kOutCols;
  const int tid = threadIdx.x, wg = tid >> 7, t128 = tid & 127;
  const bf16* w = p.w + std::int64_t(e) * p.w_expert_stride;

  // Loads: chunk column tid % 8; A rows tid / 8 + 32 i (4), B rows tid / 8 + 32 i (8).
  const int cc = tid & 7;
  const bf16* a_src[4];
  bool a_ok[4];
  gg_a_rows<4, 32>(p, tid, m0, cnt, row0, cc, a_src, a_ok);
  const bf16* b_src[8];
  bool b_ok[8];
  gg_b_rows<8, 32, 128, SWIGLU>(p, w, tid, n0, cc, b_src, b_ok);
  const int KT = (p.K + 63) / 64;
  auto load_stage = [&](int kt) {
    unsigned char* st = smem + (kt % kWgStages) * kWgStageBytes;
    const int k0 = kt * 64;
    const bool kin = k0 + cc * 8 < p.K;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const bool ok = a_ok[i] && kin;
      dev::cp_async16(st + dev::swz64(tid / 8 + i * 32, cc), ok ? a_src[i] + k0 : p.a, ok);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const bool ok = b_ok[i] && kin;
      dev::cp_async16(st + 128 * 128 + dev::swz64(tid / 8 + i * 32, cc), ok ? b_src[i] + k0 : p.w, ok);
    }
  };

  float acc[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) acc[i] = 0.f;
#pragma unroll
  for (int s = 0; s < kWgStages - 2; ++s) {
    if (s < KT) load_stage(s);
    dev::cp_async_commit();
  }
  for (int kt = 0; kt < KT; ++kt) {
    dev::cp_async_wait<kWgStages - 3>();
    dev::fence_proxy_async();
    __syncthreads();
    const std::uint32_t st = dev::smem_u32(smem + (kt % kWgStages) * kWgStageBytes);
    const std::uint64_t da = dev::wgmma_desc(st + wg * 64 * 128), db = dev::wgmma_desc(st + 128 * 128);
    dev::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) dev::wgmma_m64n256k16(acc, da + 2 * ks, db + 2 * ks, 1);
    dev::wgmma_commit();
    // The copies go out while the MMAs run (their stage was read by the MMAs of iteration kt - 2).
    if (kt + kWgStages - 2 < KT) load_stage(kt + kWgStages - 2);
    dev::cp_async_commit();
    dev::wgmma_wait<1>();
  }
  dev::wgmma_wait<0>();
  dev::fence_regs(acc);

  // Epilogue straight from the accumulators: row 16 w + l / 4 (+ 8), columns 8 i + 2 (l % 4) (+ 1).
  const int lane = t128 & 31, wr = t128 >> 5;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int m = wg * 64 + wr * 16 + (lane >> 2) + half * 8;
    if (m0 + m >= cnt) continue;
    const std::int64_t r = row0 + m;
#pragma unroll
    for (int i = 0; i < kOutCols / 8; ++i) {
      const int col = n0 + i * 8 + 2 * (lane & 3);
      if (col >= p.N) continue;
      float v0 = acc[4 * i + 2 * half], v1 = acc[4 * i + 2 * half + 1];
      if constexpr (SWIGLU) {
        v0 = v0 / (1.f + expf(-v0)) * acc[4 * (i + 16) + 2 * half];
        v1 = v1 / (1.f + expf(-v1)) * acc[4 * (i + 16) + 2 * half + 1];
      }
      gg_store_pair(p, r, col, v0, v1);
    }
  }
#else
  __trap();  // launched only where wgmma_available()
#endif
}

template <bool SWIGLU>
status launch_grouped_wgmma(const gg_params& p, stream_t stream) {
  auto kernel = grouped_gemm_wgmma_kernel<SWIGLU>;
  EV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgSmem));
  const long long tiles = p.n_rows / 128 + std::min(p.n_experts, p.n_rows);
  const int n_tiles = (p.N + (SWIGLU ? 127 : 255)) / (SWIGLU ? 128 : 256);
  kernel<<<dim3(unsigned(n_tiles), unsigned(tiles)), 256, kWgSmem, stream>>>(p);
  EV_CUDA_CHECK_LAUNCH("grouped_gemm_wgmma_kernel");
  return status::success();
}


bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// Decode tiling (16 rows) when experts get few rows on average, else the prefill tiling (128 rows).
int pick_tile_m(int forced, int n_rows, int n_experts) {
  if (forced == 16 || forced == 128 || forced == 256) return forced;
  return n_rows <= 2 * n_experts ? 16 : 128;
}

// ---- combine and swiglu: one block row per token, 8 columns (16 bytes of bf16) per thread.
__device__ __forceinline__ void load8(const bf16* p, float (&v)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x, v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void store8(bf16* p, const float (&v)[8]) {
  uint4 u;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = u;
}

__global__ void combine_kernel(moe_combine_args a) {
  const int t = blockIdx.x;
  const int j = (blockIdx.y * blockDim.x + threadIdx.x) * 8;
  if (j >= a.hidden) return;
  float acc[8] = {};
  for (int k = 0; k < a.top_k; ++k) {
    const int r = a.token_row[std::int64_t(t) * a.top_k + k];
    if (r < 0) continue;
    const float w = a.weights[std::int64_t(t) * a.top_k + k];
    float y[8];
    if (a.y_type == gemm_out::fp32) {
      const float4* src = reinterpret_cast<const float4*>(static_cast<const float*>(a.y) + std::int64_t(r) * a.y_stride + j);
      const float4 y0 = src[0], y1 = src[1];
      y[0] = y0.x, y[1] = y0.y, y[2] = y0.z, y[3] = y0.w, y[4] = y1.x, y[5] = y1.y, y[6] = y1.z, y[7] = y1.w;
    } else {
      load8(static_cast<const bf16*>(a.y) + std::int64_t(r) * a.y_stride + j, y);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] = fmaf(w, y[i], acc[i]);
  }
  if (a.shared) {
    const float g = a.shared_gate_logit[std::int64_t(t) * a.shared_gate_stride];
    const float sg = 1.f / (1.f + expf(-g));
    float s[8];
    load8(a.shared + std::int64_t(t) * a.shared_stride + j, s);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] = fmaf(sg, s[i], acc[i]);
  }
  if (a.residual) {
    float s[8];
    load8(a.residual + std::int64_t(t) * a.residual_stride + j, s);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] += s[i];
  }
  store8(a.out + std::int64_t(t) * a.out_stride + j, acc);
}

__global__ void swiglu_kernel(swiglu_args a) {
  const int t = blockIdx.x;
  const int j = (blockIdx.y * blockDim.x + threadIdx.x) * 8;
  if (j >= a.inter) return;
  float g[8], u[8];
  load8(a.in + std::int64_t(t) * a.in_stride + j, g);
  load8(a.in + std::int64_t(t) * a.in_stride + a.inter + j, u);
#pragma unroll
  for (int i = 0; i < 8; ++i) g[i] = g[i] / (1.f + expf(-g[i])) * u[i];
  store8(a.out + std::int64_t(t) * a.out_stride + j, g);
}

}  // namespace


std::size_t moe_permute_workspace_bytes(const moe_permute_args& a) {
  const std::int64_t n = std::int64_t(std::max(a.n_tokens, 0)) * std::max(a.top_k, 0);
  const std::int64_t n_chunks = (n + kPermChunk - 1) / kPermChunk;
  return std::size_t(n_chunks * std::max(a.n_experts, 0) + std::max(a.n_experts, 0) + n) * sizeof(std::int32_t);
}

status moe_permute(const moe_permute_args& a, void* workspace, std::size_t workspace_bytes, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_tokens >= 0 && a.n_experts > 0 && a.top_k > 0, "moe_permute: n_tokens = ", a.n_tokens,
                    ", n_experts = ", a.n_experts, ", top_k = ", a.top_k, ": expected n_tokens >= 0, others > 0");
  EV_KERNEL_SUPPORTED(a.n_experts <= kMaxPermExperts, "moe_permute: n_experts = ", a.n_experts,
                      ": supported <= ", kMaxPermExperts);
  EV_KERNEL_REQUIRE(std::int64_t(a.n_tokens) * a.top_k < (std::int64_t(1) << 31), "moe_permute: n_tokens * top_k = ",
                    std::int64_t(a.n_tokens) * a.top_k, ": expected < 2^31");
  EV_KERNEL_REQUIRE(a.expert_offsets, "moe_permute: null expert_offsets");
  if (a.n_tokens == 0) {
    EV_CUDA_CHECK(cudaMemsetAsync(a.expert_offsets, 0, (a.n_experts + 1) * sizeof(std::int32_t), stream));
    return status::success();
  }
  EV_KERNEL_REQUIRE(a.ids && a.row_token && a.token_row, "moe_permute: null ids, row_token or token_row");
  EV_KERNEL_REQUIRE(workspace && workspace_bytes >= moe_permute_workspace_bytes(a), "moe_permute: workspace of ",
                    workspace_bytes, " bytes, expected ", moe_permute_workspace_bytes(a));
  const int n = a.n_tokens * a.top_k, n_chunks = (n + kPermChunk - 1) / kPermChunk;
  if (n <= kPermChunk) {
    permute_small_kernel<<<1, kScatterThreads, 0, stream>>>(a, n);
    EV_CUDA_CHECK_LAUNCH("permute_small_kernel");
    return status::success();
  }
  const permute_ws ws = carve_permute(a, workspace);
  permute_count_kernel<<<n_chunks, 32, a.n_experts * sizeof(std::int32_t), stream>>>(a, ws, n);
  EV_CUDA_CHECK_LAUNCH("permute_count_kernel");
  permute_chunk_scan_kernel<<<(a.n_experts + 7) / 8, 256, 0, stream>>>(a, ws, n_chunks);
  EV_CUDA_CHECK_LAUNCH("permute_chunk_scan_kernel");
  permute_scatter_kernel<<<(n + kScatterThreads - 1) / kScatterThreads, kScatterThreads, 0, stream>>>(a, ws, n);
  EV_CUDA_CHECK_LAUNCH("permute_scatter_kernel");
  return status::success();
}

status moe_gate_up_swiglu(const moe_gate_up_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_rows >= 0 && a.n_experts > 0 && a.hidden > 0 && a.inter > 0, "moe_gate_up_swiglu: n_rows = ",
                    a.n_rows, ", n_experts = ", a.n_experts, ", hidden = ", a.hidden, ", inter = ", a.inter);
  EV_KERNEL_SUPPORTED(a.hidden % 8 == 0 && a.inter % 8 == 0, "moe_gate_up_swiglu: hidden = ", a.hidden,
                      ", inter = ", a.inter, ": supported multiples of 8");
  if (a.n_rows == 0) return status::success();
  EV_KERNEL_REQUIRE(a.expert_offsets && a.row_token && a.x && a.w_gate_up && a.h,
                    "moe_gate_up_swiglu: null expert_offsets, row_token, x, w_gate_up or h");
  EV_KERNEL_REQUIRE(a.x_stride >= a.hidden && a.x_stride % 8 == 0 && a.h_stride >= a.inter && a.h_stride % 8 == 0,
                    "moe_gate_up_swiglu: x_stride = ", a.x_stride, ", h_stride = ", a.h_stride,
                    ": expected >= hidden / inter and multiples of 8");
  EV_KERNEL_REQUIRE(aligned16(a.x) && aligned16(a.w_gate_up) && aligned16(a.h),
                    "moe_gate_up_swiglu: x, w_gate_up and h must be 16-byte aligned");
  gg_params p{a.n_rows, a.n_experts, a.hidden, a.inter, a.expert_offsets, a.row_token, a.x, a.x_stride,
              a.w_gate_up, std::int64_t(2) * a.inter * a.hidden, a.h, a.h_stride, false};
  EV_KERNEL_SUPPORTED(a.tile_m != 256 || wgmma_available(), "moe_gate_up_swiglu: tile_m = 256 (wgmma) needs an sm_90a build ",
                      "on a compute capability 9.0 device");
  const int tm = pick_tile_m(a.tile_m, a.n_rows, a.n_experts);
  if (tm == 16) return launch_grouped<16, 32, 1, 2, 4, true>(p, stream);
  if ((a.tile_m == 0 && wgmma_available()) || a.tile_m == 256) return launch_grouped_wgmma<true>(p, stream);
  return launch_grouped<128, 128, 2, 4, 3, true>(p, stream);
}

status moe_down(const moe_down_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_rows >= 0 && a.n_experts > 0 && a.hidden > 0 && a.inter > 0, "moe_down: n_rows = ", a.n_rows,
                    ", n_experts = ", a.n_experts, ", hidden = ", a.hidden, ", inter = ", a.inter);
  EV_KERNEL_SUPPORTED(a.hidden % 8 == 0 && a.inter % 8 == 0, "moe_down: hidden = ", a.hidden, ", inter = ", a.inter,
                      ": supported multiples of 8");
  if (a.n_rows == 0) return status::success();
  EV_KERNEL_REQUIRE(a.expert_offsets && a.h && a.w_down && a.y, "moe_down: null expert_offsets, h, w_down or y");
  EV_KERNEL_REQUIRE(a.h_stride >= a.inter && a.h_stride % 8 == 0 && a.y_stride >= a.hidden && a.y_stride % 2 == 0,
                    "moe_down: h_stride = ", a.h_stride, ", y_stride = ", a.y_stride,
                    ": expected h_stride >= inter, a multiple of 8, y_stride >= hidden, even");
  EV_KERNEL_REQUIRE(aligned16(a.h) && aligned16(a.w_down) && (reinterpret_cast<std::uintptr_t>(a.y) & 7u) == 0,
                    "moe_down: h and w_down must be 16-byte aligned, y 8-byte aligned");
  gg_params p{a.n_rows, a.n_experts, a.inter, a.hidden, a.expert_offsets, nullptr, a.h, a.h_stride,
              a.w_down, std::int64_t(a.hidden) * a.inter, a.y, a.y_stride, a.y_type == gemm_out::fp32};
  EV_KERNEL_SUPPORTED(a.tile_m != 256 || wgmma_available(), "moe_down: tile_m = 256 (wgmma) needs an sm_90a build ",
                      "on a compute capability 9.0 device");
  const int tm = pick_tile_m(a.tile_m, a.n_rows, a.n_experts);
  if (tm == 16) return launch_grouped<16, 64, 1, 2, 4, false>(p, stream);
  if ((a.tile_m == 0 && wgmma_available()) || a.tile_m == 256) return launch_grouped_wgmma<false>(p, stream);
  return launch_grouped<128, 128, 2, 4, 3, false>(p, stream);
}

status moe_combine(const moe_combine_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_tokens >= 0 && a.top_k > 0 && a.hidden > 0, "moe_combine: n_tokens = ", a.n_tokens,
                    ", top_k = ", a.top_k, ", hidden = ", a.hidden);
  EV_KERNEL_SUPPORTED(a.hidden % 8 == 0, "moe_combine: hidden = ", a.hidden, ": supported multiples of 8");
  if (a.n_tokens == 0) return status::success();
  EV_KERNEL_REQUIRE(a.weights && a.token_row && a.y && a.out, "moe_combine: null weights, token_row, y or out");
  EV_KERNEL_REQUIRE(!a.shared || a.shared_gate_logit, "moe_combine: shared given without shared_gate_logit");
  const int y_align = a.y_type == gemm_out::fp32 ? 4 : 8;
  EV_KERNEL_REQUIRE(a.y_stride >= a.hidden && a.y_stride % y_align == 0 && a.out_stride >= a.hidden &&
                        a.out_stride % 8 == 0 && (!a.shared || (a.shared_stride >= a.hidden && a.shared_stride % 8 == 0)) &&
                        (!a.residual || (a.residual_stride >= a.hidden && a.residual_stride % 8 == 0)),
                    "moe_combine: strides must be >= hidden and multiples of 8 elements (fp32 y: 4)");
  EV_KERNEL_REQUIRE(aligned16(a.y) && aligned16(a.out) && (!a.shared || aligned16(a.shared)) &&
                        (!a.residual || aligned16(a.residual)),
                    "moe_combine: y, out, shared and residual must be 16-byte aligned");
  const int per_row = a.hidden / 8, threads = std::min(per_row, 256);
  combine_kernel<<<dim3(a.n_tokens, (per_row + threads - 1) / threads), threads, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("combine_kernel");
  return status::success();
}

status swiglu(const swiglu_args& a, stream_t stream) {
  EV_KERNEL_REQUIRE(a.n_rows >= 0 && a.inter > 0, "swiglu: n_rows = ", a.n_rows, ", inter = ", a.inter);
  EV_KERNEL_SUPPORTED(a.inter % 8 == 0, "swiglu: inter = ", a.inter, ": supported multiples of 8");
  if (a.n_rows == 0) return status::success();
  EV_KERNEL_REQUIRE(a.in && a.out, "swiglu: null in or out");
  EV_KERNEL_REQUIRE(a.in_stride >= 2 * a.inter && a.in_stride % 8 == 0 && a.out_stride >= a.inter &&
                        a.out_stride % 8 == 0,
                    "swiglu: in_stride = ", a.in_stride, ", out_stride = ", a.out_stride,
                    ": expected >= 2 * inter / inter and multiples of 8");
  EV_KERNEL_REQUIRE(aligned16(a.in) && aligned16(a.out), "swiglu: in and out must be 16-byte aligned");
  const int per_row = a.inter / 8, threads = std::min(per_row, 256);
  swiglu_kernel<<<dim3(a.n_rows, (per_row + threads - 1) / threads), threads, 0, stream>>>(a);
  EV_CUDA_CHECK_LAUNCH("swiglu_kernel");
  return status::success();
}

}  // namespace evident::kernels
