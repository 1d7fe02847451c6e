// Times every CUDA kernel of kernels/ at Qwen3-Next-80B-A3B shapes with CUDA events (median of many runs after a
// warm-up), beside its bound: bytes over the measured device copy bandwidth, or FLOPs over the measured bf16 GEMM
// rate. Inputs are random; buffers larger than L2 (or rotated among several copies) so DRAM is what is measured.
// Usage: bench_kernels [--quick | --gdn-only | --gdn-batches | --new-only]   Prints a markdown table; numbers go to
// bench/RESULTS.md with the card and date. --new-only: the MoE experts, prefill attention and top-k/top-p sampling rows
// only; --gdn-batches: the chunked gated delta rule's default paths on batches of several prompts.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/arch.h"
#include "kernels/attention.h"
#include "kernels/conv1d.h"
#include "kernels/embedding.h"
#include "kernels/gated-delta-rule.h"
#include "kernels/gemm.h"
#include "kernels/moe.h"
#include "kernels/norm.h"
#include "kernels/rope.h"
#include "kernels/sampling.h"

using namespace evident::kernels;

namespace {

#define CHECK_CUDA(call)                                                                          \
  do {                                                                                            \
    cudaError_t e_ = (call);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s failed: %s at %s:%d\n", #call, cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

void check(const status& st, const char* what) {
  if (!st.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, st.message.c_str());
    std::exit(1);
  }
}

// Device buffer filled with random bf16 (or fp32) values in [lo, hi], generated on the host once per size.
template <typename T>
T* random_buffer(std::size_t n, float lo, float hi, unsigned seed) {
  std::vector<T> h(n);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  // Fill a 1 Mi-element pattern and tile it: generating hundreds of millions of randoms on the host is slow.
  const std::size_t pat = std::min<std::size_t>(n, 1u << 20);
  for (std::size_t i = 0; i < pat; ++i) {
    if constexpr (std::is_same_v<T, bf16>) h[i] = float_to_bf16(d(rng));
    else h[i] = T(d(rng));
  }
  for (std::size_t i = pat; i < n; ++i) h[i] = h[i % pat];
  T* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, n * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

// Median milliseconds of fn over `reps` runs after `warmup` runs, each timed by its own pair of events.
double time_ms(const std::function<void()>& fn, int warmup = 3, int reps = 20) {
  for (int i = 0; i < warmup; ++i) fn();
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> t(reps);
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(a));
    fn();
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    CHECK_CUDA(cudaEventElapsedTime(&t[i], a, b));
  }
  CHECK_CUDA(cudaGetLastError());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[reps / 2];
}

double g_bw = 0;     // bytes/s, device copy (read + write counted)
double g_flops = 0;  // bf16 GEMM FLOP/s

void row(const std::string& what, double ms, double bytes, double flops) {
  const double t_bytes = bytes / g_bw * 1e3, t_flops = flops / g_flops * 1e3;
  const double bound = std::max(t_bytes, t_flops);
  std::printf("| %s | %.4f ms | %.4f ms (%s) | %.0f%% |\n", what.c_str(), ms, bound,
              t_bytes >= t_flops ? "bytes" : "flops", 100.0 * bound / ms);
  std::fflush(stdout);
}


// ---- The MoE experts (routed, 512 x top-10, hidden 2048, inter 512), prefill attention and top-k/top-p sampling.
void bench_new_ops(bool quick) {
  // MoE: one layer's routed experts = permute + gate_up+SwiGLU + down (fp32 rows) + combine (with the shared expert
  // output and its gate). Bound: the distinct active experts' weights read once (+ activations) over the copy
  // bandwidth, or 6 * rows * hidden * inter FLOPs over the GEMM rate. 16 routing tables are rotated so that a batch-1
  // step does not find its experts' weights in L2.
  {
    const int E = 512, K = 10, H = 2048, I = 512;
    bf16* wgu = random_buffer<bf16>(std::size_t(E) * 2 * I * H, -0.03f, 0.03f, 40);
    bf16* wd = random_buffer<bf16>(std::size_t(E) * H * I, -0.04f, 0.04f, 41);
    for (int T : {1, 8, 32, 64, 4096, 32768}) {
      if (quick && T != 1 && T != 64 && T != 32768) continue;
      const int R = T * K, n_tables = T <= 64 ? 16 : 1;
      std::mt19937 rng(42 + T);
      std::vector<std::int32_t> ids(std::size_t(n_tables) * R);
      double active = 0;
      std::vector<int> perm(E);
      for (int tb = 0; tb < n_tables; ++tb) {
        std::vector<char> seen(E, 0);
        for (int t = 0; t < T; ++t) {
          for (int e = 0; e < E; ++e) perm[e] = e;
          for (int k = 0; k < K; ++k) std::swap(perm[k], perm[k + rng() % (E - k)]);
          for (int k = 0; k < K; ++k) ids[std::size_t(tb) * R + t * K + k] = perm[k], seen[perm[k]] = 1;
        }
        for (char c : seen) active += c;
      }
      active /= n_tables;
      std::int32_t *d_ids, *off, *rt, *tr;
      CHECK_CUDA(cudaMalloc(&d_ids, ids.size() * 4));
      CHECK_CUDA(cudaMemcpy(d_ids, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
      // One permutation output per routing table, so the GEMMs can be timed alone with the tables rotated.
      CHECK_CUDA(cudaMalloc(&off, std::size_t(n_tables) * (E + 1) * 4));
      CHECK_CUDA(cudaMalloc(&rt, std::size_t(n_tables) * R * 4));
      CHECK_CUDA(cudaMalloc(&tr, std::size_t(n_tables) * R * 4));
      bf16* x = random_buffer<bf16>(std::size_t(T) * H, -1, 1, 43);
      bf16* shared = random_buffer<bf16>(std::size_t(T) * H, -1, 1, 44);
      float* gl = random_buffer<float>(T, -2, 2, 45);
      float* w = random_buffer<float>(std::size_t(R), 0.05f, 0.2f, 46);
      bf16 *h, *out;
      float* y;
      CHECK_CUDA(cudaMalloc(&h, std::size_t(R) * I * 2));
      CHECK_CUDA(cudaMalloc(&y, std::size_t(R) * H * 4));
      CHECK_CUDA(cudaMalloc(&out, std::size_t(T) * H * 2));
      moe_permute_args pa;
      pa.n_tokens = T, pa.n_experts = E, pa.top_k = K, pa.ids = d_ids, pa.expert_offsets = off, pa.row_token = rt;
      pa.token_row = tr;
      const std::size_t ws_bytes = moe_permute_workspace_bytes(pa);
      void* ws;
      CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
      moe_gate_up_args ga;
      ga.n_rows = R, ga.n_experts = E, ga.hidden = H, ga.inter = I, ga.expert_offsets = off, ga.row_token = rt;
      ga.x = x, ga.x_stride = H, ga.w_gate_up = wgu, ga.h = h, ga.h_stride = I;
      moe_down_args da;
      da.n_rows = R, da.n_experts = E, da.hidden = H, da.inter = I, da.expert_offsets = off, da.h = h, da.h_stride = I;
      da.w_down = wd, da.y = y, da.y_stride = H, da.y_type = gemm_out::fp32;
      moe_combine_args ca;
      ca.n_tokens = T, ca.top_k = K, ca.hidden = H, ca.weights = w, ca.token_row = tr, ca.y = y, ca.y_stride = H;
      ca.y_type = gemm_out::fp32, ca.shared = shared, ca.shared_stride = H, ca.shared_gate_logit = gl;
      ca.out = out, ca.out_stride = H;
      int it = 0;
      auto use_table = [&](int tb) {
        pa.ids = d_ids + std::size_t(tb) * R, pa.expert_offsets = off + std::size_t(tb) * (E + 1);
        pa.row_token = rt + std::size_t(tb) * R, pa.token_row = tr + std::size_t(tb) * R;
        ga.expert_offsets = da.expert_offsets = pa.expert_offsets, ga.row_token = pa.row_token;
        ca.token_row = pa.token_row;
      };
      auto layer = [&] {
        use_table(it++ % n_tables);
        check(moe_permute(pa, ws, ws_bytes, nullptr), "moe_permute");
        check(moe_gate_up_swiglu(ga, nullptr), "moe_gate_up");
        check(moe_down(da, nullptr), "moe_down");
        check(moe_combine(ca, nullptr), "moe_combine");
      };
      const double wbytes = active * 3.0 * H * I * 2;
      const double abytes = double(T) * H * 2 * 3 + double(R) * (I * 2 * 2 + H * 4 * 2);
      const double flops = 6.0 * R * H * I;
      const std::string tag = "batch " + std::to_string(T) + " (" + std::to_string(int(active + 0.5)) + " experts)";
      const int reps = T > 4096 ? 10 : 30;
      double ms = time_ms(layer, 3, reps);
      row("moe routed experts layer (permute+gate_up+down+combine), " + tag, ms, wbytes + abytes, flops);
      it = 0;
      ms = time_ms([&] {
        use_table(it++ % n_tables);
        check(moe_permute(pa, ws, ws_bytes, nullptr), "moe_permute");
      }, 3, reps);
      row("  of which moe_permute, " + tag, ms, double(R) * 4 * 4, 0);
      for (int tb = 0; tb < n_tables; ++tb) use_table(tb), check(moe_permute(pa, ws, ws_bytes, nullptr), "permute");
      it = 0;
      ms = time_ms([&] { use_table(it++ % n_tables), check(moe_gate_up_swiglu(ga, nullptr), "moe_gate_up"); }, 3, reps);
      row("  of which moe_gate_up_swiglu, " + tag, ms, active * 2.0 * H * I * 2 + double(T) * H * 2 + R * I * 2.0,
          4.0 * R * H * I);
      it = 0;
      ms = time_ms([&] { use_table(it++ % n_tables), check(moe_down(da, nullptr), "moe_down"); }, 3, reps);
      row("  of which moe_down (fp32 rows), " + tag, ms, active * 1.0 * H * I * 2 + R * (I * 2.0 + H * 4.0),
          2.0 * R * H * I);
      it = 0;
      ms = time_ms([&] { use_table(it++ % n_tables), check(moe_combine(ca, nullptr), "moe_combine"); }, 3, reps);
      row("  of which moe_combine (fp32 rows, shared expert), " + tag, ms,
          double(R) * H * 4 + double(T) * H * 2 * 2 + double(R) * 8, 0);
      cudaFree(d_ids), cudaFree(off), cudaFree(rt), cudaFree(tr), cudaFree(x), cudaFree(shared), cudaFree(gl);
      cudaFree(w), cudaFree(h), cudaFree(y), cudaFree(out), cudaFree(ws);
    }
    cudaFree(wgu), cudaFree(wd);
  }
  // Prefill attention: one sequence, the whole prompt in one chunk (causal), 16/2 heads of 256, paged (block 16).
  for (int T : {8192, 32768}) {
    if (quick && T != 32768) continue;
    const int bs = 16, HQ = 16, HKV = 2, AD = 256, nb = T / bs;
    const std::size_t cache_n = std::size_t(T) * HKV * AD;
    bf16* kc = random_buffer<bf16>(cache_n, -1, 1, 50);
    bf16* vc = random_buffer<bf16>(cache_n, -1, 1, 51);
    bf16* qg = random_buffer<bf16>(std::size_t(T) * HQ * 2 * AD, -1, 1, 52);
    bf16* out;
    CHECK_CUDA(cudaMalloc(&out, std::size_t(T) * HQ * AD * 2));
    std::vector<std::int32_t> tables(nb), meta = {0, T, T};
    for (int i = 0; i < nb; ++i) tables[i] = i;
    std::int32_t *d_tables, *d_meta;
    CHECK_CUDA(cudaMalloc(&d_tables, tables.size() * 4));
    CHECK_CUDA(cudaMalloc(&d_meta, meta.size() * 4));
    CHECK_CUDA(cudaMemcpy(d_tables, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(d_meta, meta.data(), meta.size() * 4, cudaMemcpyHostToDevice));
    attention_prefill_args a;
    a.n_seq = 1, a.n_tokens = T, a.max_n_new = T, a.cu_q = d_meta, a.seq_lens = d_meta + 2;
    a.q = qg, a.q_stride = HQ * 2 * AD, a.q_head_stride = 2 * AD, a.gate = qg + AD, a.gate_stride = HQ * 2 * AD;
    a.gate_head_stride = 2 * AD, a.out = out, a.out_stride = HQ * AD;
    a.kv.k_cache = kc, a.kv.v_cache = vc, a.kv.n_blocks = nb, a.kv.block_size = bs, a.kv.block_tables = d_tables;
    a.kv.max_blocks_per_seq = nb;
    for (int rows : {128, 64}) {
      a.tile_rows = rows;
      const double ms = time_ms([&] { check(attention_prefill(a, nullptr), "attention_prefill"); }, 2, T > 8192 ? 5 : 10);
      // Causal: T (T + 1) / 2 query-key pairs per head, 2 products (QK^T, PV) of 256 multiply-adds each.
      row("attention prefill (paged, causal, GQA 16/2 x 256, gate), " + std::to_string(T) + " tokens, " +
              std::to_string(rows) + "-row tiles",
          ms, double(T) * (HQ * 2 * AD * 2 + HQ * AD * 2) + 2.0 * cache_n * 2, 4.0 * HQ * AD * (double(T) * (T + 1) / 2));
    }
    cudaFree(kc), cudaFree(vc), cudaFree(qg), cudaFree(out), cudaFree(d_tables), cudaFree(d_meta);
  }
  // Sampling: temperature 0.6, top-k 20 / top-p 0.95 (Qwen3 thinking defaults) and top-p 0.95 alone, 151936 vocab.
  for (int B : {1, 64}) {
    const int V = 151936;
    float* logits = random_buffer<float>(std::size_t(B) * V, -10, 10, 60);
    std::vector<float> temp(B, 0.6f), tp(B, 0.95f), u(B, 0.5f);
    std::vector<std::int32_t> tk(B, 20);
    float *d_t, *d_tp, *d_u;
    std::int32_t *d_tk, *ids;
    CHECK_CUDA(cudaMalloc(&d_t, B * 4));
    CHECK_CUDA(cudaMalloc(&d_tp, B * 4));
    CHECK_CUDA(cudaMalloc(&d_u, B * 4));
    CHECK_CUDA(cudaMalloc(&d_tk, B * 4));
    CHECK_CUDA(cudaMalloc(&ids, B * 4));
    CHECK_CUDA(cudaMemcpy(d_t, temp.data(), B * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(d_tp, tp.data(), B * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(d_u, u.data(), B * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(d_tk, tk.data(), B * 4, cudaMemcpyHostToDevice));
    sample_args a;
    a.n_rows = B, a.vocab = V, a.logits = logits, a.stride = V, a.temperature = d_t, a.top_k = d_tk, a.top_p = d_tp;
    a.uniforms = d_u, a.ids = ids;
    double ms = time_ms([&] { check(sample(a, nullptr), "sample"); }, 3, 20);
    row("sample top-k 20 + top-p 0.95, batch " + std::to_string(B) + " x 151936", ms, double(B) * V * 4, 0);
    a.top_k = nullptr;
    ms = time_ms([&] { check(sample(a, nullptr), "sample"); }, 3, 20);
    row("sample top-p 0.95 alone (nucleus of ~14K tokens: general path), batch " + std::to_string(B) + " x 151936", ms,
        double(B) * V * 4, 0);
    // Temperature 0.03 on the same logits: a nucleus of a few hundred tokens, as a peaked model distribution has.
    std::vector<float> cold(B, 0.03f);
    CHECK_CUDA(cudaMemcpy(d_t, cold.data(), B * 4, cudaMemcpyHostToDevice));
    ms = time_ms([&] { check(sample(a, nullptr), "sample"); }, 3, 20);
    row("sample top-p 0.95 alone (nucleus < 1024 tokens: fast path), batch " + std::to_string(B) + " x 151936", ms,
        double(B) * V * 4, 0);
    cudaFree(logits), cudaFree(d_t), cudaFree(d_tp), cudaFree(d_u), cudaFree(d_tk), cudaFree(ids);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // --quick: only the headline shapes; --gdn-only: only the 32K chunked gated delta rule (for profilers).
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const bool gdn_only = argc > 1 && std::strcmp(argv[1], "--gdn-only") == 0;
  const bool new_only = argc > 1 && std::strcmp(argv[1], "--new-only") == 0;
  const bool gdn_batches = argc > 1 && std::strcmp(argv[1], "--gdn-batches") == 0;
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);

  // Ceilings. Copy: 2 GiB device-to-device, bytes read + written.
  {
    const std::size_t n = std::size_t(1) << 31;
    void *a, *b;
    CHECK_CUDA(cudaMalloc(&a, n));
    CHECK_CUDA(cudaMalloc(&b, n));
    CHECK_CUDA(cudaMemset(a, 1, n));
    const double ms = time_ms([&] { CHECK_CUDA(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice)); }, 2, 10);
    g_bw = 2.0 * n / (ms * 1e-3);
    cudaFree(a);
    cudaFree(b);
  }
  status err;
  auto gctx = gemm_context::create(&err);
  check(err, "gemm_context");
  {
    const int M = 8192, N = 8192, K = 8192;
    bf16* x = random_buffer<bf16>(std::size_t(M) * K, -1, 1, 1);
    bf16* w = random_buffer<bf16>(std::size_t(N) * K, -1, 1, 2);
    bf16* y;
    CHECK_CUDA(cudaMalloc(&y, std::size_t(M) * N * 2));
    gemm_args a{M, N, K, x, K, w, K, y, N, gemm_out::bf16};
    const double ms = time_ms([&] { check(gemm_bf16(*gctx, a, nullptr), "gemm"); }, 3, 10);
    g_flops = 2.0 * M * N * K / (ms * 1e-3);
    cudaFree(x), cudaFree(w), cudaFree(y);
  }
  std::printf("copy bandwidth %.0f GB/s (read + write), bf16 GEMM 8192^3 %.0f TFLOP/s\n\n", g_bw / 1e9, g_flops / 1e12);
  std::printf("| kernel (Qwen3-Next-80B-A3B shapes) | median | bound | bound/time |\n| --- | --- | --- | --- |\n");

  if (!gdn_only && !gdn_batches) bench_new_ops(quick);
  if (new_only) return 0;

  // ---- gated delta rule, chunked: 16 key / 32 value heads of 128. --gdn-batches: batches of several prompts (v15's
  // two launches where its consumers and producers do not fit at once), the default paths only.
  const int HK = 16, HV = 32, D = 128, KD = HK * D, VD = HV * D, PACK = 2 * KD + VD;
  const auto gdn_shapes = gdn_batches ? std::vector<std::pair<int, int>>{{2, 16384}, {4, 8192}, {8, 4096}, {16, 2048},
                                                                         {64, 512}, {1, 8192}, {1, 2048}}
                                      : std::vector<std::pair<int, int>>{{1, 32768}, {1, 8192}, {8, 4096}, {1, 65536}};
  for (auto [n_seq, len] : gdn_shapes) {
    if ((quick || gdn_only) && len != 32768) continue;
    const int T = n_seq * len;
    bf16* mixed = random_buffer<bf16>(std::size_t(T) * PACK, -1, 1, 3);
    float* g = random_buffer<float>(std::size_t(T) * HV, -2.f, -0.01f, 4);
    float* beta = random_buffer<float>(std::size_t(T) * HV, 0.05f, 0.95f, 5);
    bf16* out;
    CHECK_CUDA(cudaMalloc(&out, std::size_t(T) * VD * 2));
    float* state = random_buffer<float>(std::size_t(n_seq) * HV * D * D, -0.5f, 0.5f, 6);
    std::vector<std::int32_t> cu(n_seq + 1);
    for (int i = 0; i <= n_seq; ++i) cu[i] = i * len;
    std::int32_t* d_cu;
    CHECK_CUDA(cudaMalloc(&d_cu, cu.size() * 4));
    CHECK_CUDA(cudaMemcpy(d_cu, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
    gdn_shape s;
    s.n_tokens = T, s.n_seq = n_seq, s.n_k_heads = HK, s.n_v_heads = HV;
    const std::size_t ws_bytes = gdn_chunked_workspace_bytes(s);
    void* ws;
    CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
    gdn_args a;
    a.q = mixed, a.k = mixed + KD, a.v = mixed + 2 * KD, a.q_stride = a.k_stride = a.v_stride = PACK;
    a.g = g, a.beta = beta, a.cu_seqlens = d_cu, a.initial_state = state, a.final_state = nullptr;
    a.out = out, a.out_stride = VD;
    // Minimum traffic: q, k, v read once, out written once, g and beta, the state read (and written).
    const double bytes = double(T) * (2 * KD * 2 + VD * 2 + VD * 2 + HV * 8) + 2.0 * n_seq * HV * D * D * 4;
    // Chunked-form FLOPs per chunk and value head: KK^T, QK^T (2 * 64*64*128), T applied (64*64*128), W S, Q S
    // (2 * 64*128*128), P V_new (64*64*128), state update (128*64*128); 2 FLOPs per multiply-add.
    const double chunks = double(T) / 64 * HV;
    const double flops = chunks * 2.0 * (3 * 64 * 64 * 128 + 64 * 64 * 128 + 3 * 64 * 128 * 128.0);
    const std::string tag = std::to_string(n_seq) + "x" + std::to_string(len);
    auto gdn_ms = [&](const gdn_chunked_options& opt) {
      return time_ms([&] { check(gdn_chunked_forward(s, a, ws, ws_bytes, nullptr, opt), "gdn"); }, 3, 20);
    };
    auto free_buffers = [&] {
      cudaFree(mixed), cudaFree(g), cudaFree(beta), cudaFree(out), cudaFree(state), cudaFree(d_cu), cudaFree(ws);
    };
    for (bool wmma : {false, true}) {
      if (gdn_batches) break;
      gdn_chunked_options opt;
      opt.wgmma = false;
      opt.prepare_only = true;
      opt.wmma_scan = wmma;
      const double ms = gdn_ms(opt);
      // The preparation reads q, k, g, beta and writes, per chunk, normalised k (per key head), q (per key head for
      // the mma scan, q * exp(G) per value head for the WMMA scan), T, P (bf16 64x64) and three fp32 vectors per
      // value head.
      row(std::string("  of which gdn prepare (for the ") + (wmma ? "wmma" : "mma") + " scan) " + tag, ms,
          double(T) * (2 * KD * 2 + HV * 8) + double(T) * ((wmma ? VD : KD) + KD) * 2 +
              chunks * (2 * 64 * 64 * 2 + 3 * 64 * 4),
          0);
    }
    // The default on sm_90a, v15 (producer blocks write records, wgmma consumer blocks run the scan), against v14 (one
    // cooperative launch: the blocks of a key head prepare the chunks beside the mma.sync scan; the default elsewhere
    // on sm_90, and v12b where its blocks do not fit at once, as with batches of several prompts) and v12b (separate
    // preparation kernel, then the split mma scan), alternating, three times each.
    for (int rep = 0; rep < 9; ++rep) {
      gdn_chunked_options opt;
      opt.wgmma = rep % 3 == 0;
      opt.cooperative = rep % 3 != 2;
      const bool v15 = opt.wgmma && wgmma_available();
      const double ms = gdn_ms(opt);
      row("gdn chunked " + tag +
              (v15            ? " tokens, v15 wgmma (default)"
               : rep % 3 != 2 ? " tokens, v14 cooperative (default without sm_90a)"
                              : " tokens, v12b prepare + mma scan"),
          ms, bytes, flops);
    }
    if (gdn_batches) {
      free_buffers();
      continue;
    }
    // v15 pieces, for the analysis only (wrong results): the producers alone, the consumers alone (no flag waits), both
    // without the flag waits;
    // and v15 as two launches (producers, then consumers: the fallback where both do not fit at once).
    if (wgmma_available())
      for (int variant : {1, 2, 4, 3}) {
        gdn_chunked_options opt;
        opt.wgmma_variant = variant;
        const double ms = gdn_ms(opt);
        static const char* names[] = {"",
                                      "producers only (analysis only)",
                                      "consumers only (analysis only)",
                                      "two launches",
                                      "no flag waits (analysis only)"};
        row("gdn chunked " + tag + " tokens, v15 " + names[variant], ms, bytes, flops);
      }
    // v14 pieces, for the analysis only (wrong results): the scan beside the producers without waiting for them, the
    // producers alone, the scan alone (no producers).
    for (int variant : {1, 2, 3, 5, 4, 0, 4, 0, 4}) {
      gdn_chunked_options opt;
      opt.wgmma = false;
      opt.coop_variant = variant;
      const double ms = gdn_ms(opt);
      static const char* names[] = {"(default, again)",
                                    "no flag waits (analysis only)",
                                    "producers only (analysis only)",
                                    "consumers only (analysis only)",
                                    "bulk copies",
                                    "bulk copies, consumers only (analysis only)"};
      row("gdn chunked " + tag + " tokens, v14 " + names[variant], ms, bytes, flops);
    }
    // The split mma scan (separate preparation) with v_tile 32 in clusters of 1 (none; v12b) / 2 / 4 blocks.
    for (int cl : {1, 2, 4}) {
      gdn_chunked_options opt;
      opt.wgmma = false;
      opt.cooperative = false;
      opt.scan_cluster = cl;
      const double ms = gdn_ms(opt);
      row("gdn chunked " + tag + " tokens, mma scan, v_tile 32, output split, cluster " + std::to_string(cl), ms,
          bytes, flops);
    }
    // The mma scan (default): v_tile 16 / 32 / 64 = 1 / 2 / 4 warps per block.
    for (bool split : {true, false})
      for (int vt : {32, 16, 64}) {
        if (vt == 64 && split) continue;  // v_tile 64 never splits (shared memory)
        gdn_chunked_options opt;
        opt.wgmma = false;
        opt.cooperative = false;
        opt.v_tile = vt;
        opt.split_output = split;
        const double ms = gdn_ms(opt);
        row("gdn chunked " + tag + " tokens, mma scan, v_tile " + std::to_string(vt) +
                (split ? ", output split" : ", no output split"),
            ms, bytes, flops);
      }
    // The previous WMMA scan (v7), for comparison in the same run.
    for (int warps : {16, 8})
      for (int vt : {32, 16, 64}) {
        if ((quick || gdn_only) && (vt != 32 || warps != 16)) continue;
        gdn_chunked_options opt;
        opt.wgmma = false;
        opt.v_tile = vt;
        opt.scan_warps = warps;
        opt.wmma_scan = true;
        const double ms = gdn_ms(opt);
        row("gdn chunked " + tag + " tokens, wmma scan (v7), v_tile " + std::to_string(vt) + ", " +
                std::to_string(warps) + " warps",
            ms, bytes, flops);
      }
    free_buffers();
  }

  if (gdn_only) return 0;
  // ---- gated delta rule, decode: one token per sequence; states of 16 layers rotated (a layer's state is read and
  // written once per step; rotation keeps the batch-1 state (2 MiB) from living in L2).
  for (int B : {1, 8, 32, 64}) {
    const int layers = 16;
    bf16* mixed = random_buffer<bf16>(std::size_t(B) * PACK, -1, 1, 7);
    float* g = random_buffer<float>(std::size_t(B) * HV, -2.f, -0.01f, 8);
    float* beta = random_buffer<float>(std::size_t(B) * HV, 0.05f, 0.95f, 9);
    bf16* out;
    CHECK_CUDA(cudaMalloc(&out, std::size_t(B) * VD * 2));
    const std::size_t state_n = std::size_t(B) * HV * D * D;
    float* states = random_buffer<float>(state_n * layers, -0.5f, 0.5f, 10);
    std::vector<std::int32_t> cu(B + 1);
    for (int i = 0; i <= B; ++i) cu[i] = i;
    std::int32_t* d_cu;
    CHECK_CUDA(cudaMalloc(&d_cu, cu.size() * 4));
    CHECK_CUDA(cudaMemcpy(d_cu, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
    gdn_shape s;
    s.n_tokens = B, s.n_seq = B, s.n_k_heads = HK, s.n_v_heads = HV;
    gdn_args a;
    a.q = mixed, a.k = mixed + KD, a.v = mixed + 2 * KD, a.q_stride = a.k_stride = a.v_stride = PACK;
    a.g = g, a.beta = beta, a.cu_seqlens = d_cu, a.out = out, a.out_stride = VD;
    int layer = 0;
    const double ms = time_ms([&] {
      a.initial_state = a.final_state = states + state_n * (layer++ % layers);
      check(gdn_recurrent_forward(s, a, nullptr), "gdn recurrent");
    }, 5, 50);
    row("gdn decode step, batch " + std::to_string(B) + " (state in place)", ms, 2.0 * state_n * 4, 0);
    cudaFree(mixed), cudaFree(g), cudaFree(beta), cudaFree(out), cudaFree(states), cudaFree(d_cu);
  }

  // ---- attention decode over a paged cache (block 16), 16/2 heads of 256, context 32768 per sequence.
  for (int B : {1, 8, 32, 64}) {
    const int ctx = 32768, bs = 16, HQ = 16, HKV = 2, AD = 256, blocks_per_seq = ctx / bs;
    const std::size_t cache_n = std::size_t(B) * ctx * HKV * AD;
    bf16* kc = random_buffer<bf16>(cache_n, -1, 1, 30);
    bf16* vc = random_buffer<bf16>(cache_n, -1, 1, 31);
    bf16* qg = random_buffer<bf16>(std::size_t(B) * HQ * 2 * AD, -1, 1, 32);
    bf16* out;
    CHECK_CUDA(cudaMalloc(&out, std::size_t(B) * HQ * AD * 2));
    std::vector<std::int32_t> tables(std::size_t(B) * blocks_per_seq), lens(B, ctx);
    for (std::size_t i = 0; i < tables.size(); ++i) tables[i] = std::int32_t(i);
    std::int32_t *d_tables, *d_lens;
    CHECK_CUDA(cudaMalloc(&d_tables, tables.size() * 4));
    CHECK_CUDA(cudaMalloc(&d_lens, lens.size() * 4));
    CHECK_CUDA(cudaMemcpy(d_tables, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(d_lens, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
    attention_decode_args a;
    a.n_seq = B, a.n_q_heads = HQ, a.n_kv_heads = HKV, a.head_dim = AD, a.scale = 1.f / 16.f, a.max_seq_len = ctx;
    a.q = qg, a.q_stride = HQ * 2 * AD, a.q_head_stride = 2 * AD, a.gate = qg + AD, a.gate_stride = HQ * 2 * AD;
    a.gate_head_stride = 2 * AD, a.seq_lens = d_lens, a.out = out, a.out_stride = HQ * AD;
    a.kv.k_cache = kc, a.kv.v_cache = vc, a.kv.n_blocks = B * blocks_per_seq, a.kv.block_size = bs;
    a.kv.block_tables = d_tables, a.kv.max_blocks_per_seq = blocks_per_seq;
    const std::size_t ws_bytes = attention_decode_workspace_bytes(a);
    void* ws;
    CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
    const double ms = time_ms([&] { check(attention_decode(a, ws, ws_bytes, nullptr), "attention"); }, 3, 20);
    row("attention decode (paged, GQA 16/2 x 256, gate), batch " + std::to_string(B) + " x ctx 32768, " +
            std::to_string(attention_decode_splits(a)) + " splits",
        ms, 2.0 * cache_n * 2, 4.0 * B * HQ * double(ctx) * AD);
    cudaFree(kc), cudaFree(vc), cudaFree(qg), cudaFree(out), cudaFree(d_tables), cudaFree(d_lens), cudaFree(ws);
  }

  // ---- conv1d prompt, 32K tokens x 8192 channels; decode batch 64 (states of 16 layers rotated).
  {
    const int T = 32768, C = PACK, K = 4;
    bf16* x = random_buffer<bf16>(std::size_t(T) * C, -2, 2, 11);
    bf16* w = random_buffer<bf16>(std::size_t(C) * K, -1, 1, 12);
    bf16* out;
    CHECK_CUDA(cudaMalloc(&out, std::size_t(T) * C * 2));
    bf16* st = random_buffer<bf16>(std::size_t(64) * (K - 1) * C * 16, -1, 1, 13);
    std::int32_t cu_h[2] = {0, T};
    std::int32_t* cu;
    CHECK_CUDA(cudaMalloc(&cu, 8));
    CHECK_CUDA(cudaMemcpy(cu, cu_h, 8, cudaMemcpyHostToDevice));
    conv1d_args a;
    a.n_tokens = T, a.n_seq = 1, a.n_channels = C, a.kernel = K, a.x = x, a.x_stride = C, a.w = w, a.cu_seqlens = cu;
    a.state = st, a.read_state = false, a.out = out, a.out_stride = C;
    double ms = time_ms([&] { check(conv1d_forward(a, nullptr), "conv1d"); });
    row("conv1d+silu prompt 32768 x 8192", ms, 2.0 * T * C * 2, 0);
    conv1d_args d = a;
    d.n_tokens = d.n_seq = 64, d.cu_seqlens = nullptr, d.read_state = true;
    int layer = 0;
    ms = time_ms([&] {
      d.state = st + std::size_t(64) * (K - 1) * C * (layer++ % 16);
      check(conv1d_update(d, nullptr), "conv1d_update");
    }, 5, 50);
    row("conv1d update, batch 64 x 8192", ms, 64.0 * C * 2 * (2 + 2 * (K - 1)), 0);
    cudaFree(x), cudaFree(w), cudaFree(out), cudaFree(st), cudaFree(cu);
  }

  // ---- norms, RoPE, embedding at 32K tokens.
  {
    const int T = 32768, H = 2048;
    bf16* x = random_buffer<bf16>(std::size_t(T) * H, -3, 3, 14);
    bf16* res = random_buffer<bf16>(std::size_t(T) * H, -3, 3, 15);
    bf16* w = random_buffer<bf16>(H, -0.5f, 0.5f, 16);
    bf16* out;
    CHECK_CUDA(cudaMalloc(&out, std::size_t(T) * H * 2));
    rmsnorm_args a;
    a.n_rows = T, a.dim = H, a.x = x, a.x_stride = H, a.residual = res, a.residual_stride = H, a.w = w, a.out = out;
    a.out_stride = H;
    double ms = time_ms([&] { check(rmsnorm_residual(a, nullptr), "rmsnorm"); });
    row("rmsnorm + residual 32768 x 2048", ms, double(T) * H * 2 * 4, 0);
    // Gated: 32K tokens x 32 heads rows of 128 (x, z read; out written).
    bf16* wg = random_buffer<bf16>(128, 0.5f, 1.5f, 17);
    rmsnorm_args gz;
    gz.n_rows = T * 32 / 16, gz.dim = 128, gz.x = x, gz.x_stride = 128, gz.z = res, gz.z_stride = 128, gz.w = wg;
    gz.out = out, gz.out_stride = 128;
    gz.n_rows = int(std::size_t(T) * H / 128);  // 32K x 2048 elements = half of the real 32 x 128 per token
    ms = time_ms([&] { check(rmsnorm_gated(gz, nullptr), "gated"); });
    row("gated rmsnorm 524288 rows x 128", ms, double(T) * H * 2 * 3, 0);
    // RoPE on q (16 heads inside q|gate, head stride 512) for 32K tokens: 64 of 256 dims rotate.
    std::vector<std::int32_t> pos(T);
    for (int i = 0; i < T; ++i) pos[i] = i;
    std::int32_t* d_pos;
    CHECK_CUDA(cudaMalloc(&d_pos, T * 4));
    CHECK_CUDA(cudaMemcpy(d_pos, pos.data(), T * 4, cudaMemcpyHostToDevice));
    bf16* q = random_buffer<bf16>(std::size_t(T) * 16 * 512, -2, 2, 18);
    rope_args r;
    r.n_tokens = T, r.n_heads = 16, r.head_dim = 256, r.rotary_dim = 64, r.x = q, r.token_stride = 16 * 512;
    r.head_stride = 512, r.positions = d_pos;
    ms = time_ms([&] { check(rope_apply(r, nullptr), "rope"); });
    row("partial rope q 32768 x 16 heads (64 of 256 dims)", ms, double(T) * 16 * 64 * 2 * 2, 0);
    // Embedding: 32K ids from the 151936 x 2048 table.
    bf16* table = random_buffer<bf16>(std::size_t(151936) * H, -1, 1, 19);
    std::vector<std::int32_t> ids(T);
    std::mt19937 rng(20);
    for (auto& id : ids) id = int(rng() % 151936);
    std::int32_t* d_ids;
    CHECK_CUDA(cudaMalloc(&d_ids, T * 4));
    CHECK_CUDA(cudaMemcpy(d_ids, ids.data(), T * 4, cudaMemcpyHostToDevice));
    embedding_args e{T, 151936, H, table, d_ids, out, H};
    ms = time_ms([&] { check(embedding_gather(e, nullptr), "embedding"); });
    row("embedding gather 32768 x 2048", ms, double(T) * H * 2 * 2, 0);
    cudaFree(x), cudaFree(res), cudaFree(w), cudaFree(wg), cudaFree(out), cudaFree(d_pos), cudaFree(q);
    cudaFree(table), cudaFree(d_ids);
  }

  // ---- dense projections (cuBLAS) at model shapes, and greedy sampling over the vocabulary.
  {
    struct gshape { const char* name; int m, n, k; };
    for (gshape gs : {gshape{"gemm in_proj_qkvz 32768x12288x2048", 32768, 12288, 2048},
                      gshape{"gemm out_proj 32768x2048x4096", 32768, 2048, 4096},
                      gshape{"gemm lm_head decode 1x151936x2048", 1, 151936, 2048},
                      gshape{"gemm lm_head decode 64x151936x2048", 64, 151936, 2048}}) {
      bf16* x = random_buffer<bf16>(std::size_t(gs.m) * gs.k, -1, 1, 21);
      bf16* w = random_buffer<bf16>(std::size_t(gs.n) * gs.k, -1, 1, 22);
      bf16* y;
      CHECK_CUDA(cudaMalloc(&y, std::size_t(gs.m) * gs.n * 2));
      gemm_args a{gs.m, gs.n, gs.k, x, gs.k, w, gs.k, y, gs.n, gemm_out::bf16};
      const double ms = time_ms([&] { check(gemm_bf16(*gctx, a, nullptr), "gemm"); });
      row(gs.name, ms, 2.0 * (double(gs.m) * gs.k + double(gs.n) * gs.k + double(gs.m) * gs.n),
          2.0 * gs.m * double(gs.n) * gs.k);
      cudaFree(x), cudaFree(w), cudaFree(y);
    }
    {
      // MoE router: 32768 tokens x 512 experts, top-10 renormalised.
      const int T = 32768, E = 512;
      float* logits = random_buffer<float>(std::size_t(T) * E, -4, 4, 24);
      std::int32_t* ids;
      float* w;
      CHECK_CUDA(cudaMalloc(&ids, std::size_t(T) * 10 * 4));
      CHECK_CUDA(cudaMalloc(&w, std::size_t(T) * 10 * 4));
      moe_router_args r;
      r.n_tokens = T, r.n_experts = E, r.top_k = 10, r.logits = logits, r.logits_stride = E, r.ids = ids, r.weights = w;
      const double ms = time_ms([&] { check(moe_router(r, nullptr), "router"); });
      row("moe router softmax + top-10 + renormalise, 32768 tokens x 512 experts", ms, double(T) * (E * 4 + 80), 0);
      cudaFree(logits), cudaFree(ids), cudaFree(w);
    }
    for (int B : {1, 64}) {
      float* logits = random_buffer<float>(std::size_t(B) * 151936, -10, 10, 23);
      std::int32_t* ids;
      CHECK_CUDA(cudaMalloc(&ids, B * 4));
      argmax_args a{B, 151936, logits, 151936, ids};
      const double ms = time_ms([&] { check(sample_greedy(a, nullptr), "greedy"); }, 5, 50);
      row("greedy argmax, batch " + std::to_string(B) + " x 151936", ms, double(B) * 151936 * 4, 0);
      cudaFree(logits), cudaFree(ids);
    }
  }
  return 0;
}
