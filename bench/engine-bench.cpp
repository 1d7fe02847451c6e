// The engine at Qwen3-Next-80B-A3B's real widths with random weights, N layers in the real 3:1 pattern, served by the
// scheduler (continuous batching, chunked prefill; CUDA graphs for decode on the GPU), measured beside its bounds.
//
//   bench_engine --layers N --batch B --prompt P --gen G [--device cuda|cpu] [--budget T] [--no-graphs]
//                [--threads n (cpu)]
//   bench_engine --layers N --runs B:P:G[:nog][:cublas][:legacy],B:P:G,...   several runs over one model (built
//                once); ":nog" = no CUDA graphs for that run, ":cublas" = every projection through cuBLAS (the
//                model's gemv_small off), ":legacy" = cuBLAS only and options().fast_decode off (the decode paths
//                before the profile-driven fixes: kernels/ norms, attention splits and MoE stages)
//   --profile-prefill P[:C],...   (cuda) before the runs: one sequence of P tokens prefilled in steps of C tokens
//                    (default the budget; C <= --budget, which sizes the model's step buffers), straight on the
//                    cuda_model: timed (wall, after a warm-up prefill) beside the FLOP bound, then profiled (GPU time
//                    per op summed over the whole prompt); one JSON line per item and a table on stderr
//   --gemv-max-m M   cuda_model_options::gemv_max_m (default the model's, 1; 0 = cuBLAS always)
//   --profile        (cuda) before the runs, per run B:P:G: B sequences prefilled with P tokens, then eager decode
//                    steps padded to B (the graph shapes) timed end to end, then profiled (cuda_model::set_profiling:
//                    GPU time per op, summed by op name, argmax included) on three paths: default, cuBLAS only,
//                    legacy (see :legacy); one JSON line per (run, path) with "profile": [[name, ms per step,
//                    launches per step], ...] and a table on stderr. Runs with G < 50 or :cublas/:legacy/:nog are
//                    not profiled
//
// Per run, B requests of P random prompt tokens each generate G tokens (greedy, no stop ids) through one scheduler.
// Reports (one JSON line, plus a readable summary on stderr):
//   prefill      prompt tokens/s over the prefill phase (submit until every request has its first token),
//                time to first token (first request, and the mean over requests)
//   decode       tokens/s per sequence and aggregate over the decode phase (every request decoding), and the median
//                decode step time (steady state: graph warm-up and capture excluded)
//   memory       device weights / KV + states / step buffers and device memory in use (cuda), host max RSS
//   bounds       decode: bytes one decode step must read at batch B (active weights with the expected number of
//                distinct experts, KV of the attention layers, DeltaNet state read + written) / the copy bandwidth
//                measured in the same run (device-to-device cudaMemcpy, bytes read + written per second);
//                prefill: FLOPs the prompts need (2 x active weights per token, lm_head for the last token only,
//                causal attention 2 * heads * head_dim * P^2 per attention layer, chunked gated delta rule) / the bf16
//                GEMM rate measured in the same run (cuBLAS 8192^3, fp32 accumulation).
// Weights: bf16 uniform random. Big matrices are views into a few shared random buffers (one per scale), so the host
// side stays ~1.5 GB at any depth; on the device every tensor is its own copy (real memory traffic).
#include "bench/engine-bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/base/error.h"
#include "engine/model-config.h"
#include "engine/models/qwen3next.h"
#include "engine/scheduler.h"

#ifdef EVIDENT_HAVE_CUDA
#include <cuda_runtime.h>

#include "engine/cuda/cuda-model.h"
#include "engine/cuda/cuda-step-model.h"
#include "engine/cuda/model-kernels.h"
#include "kernels/gemm.h"
#include "kernels/sampling.h"
#endif

using namespace evident::engine;

namespace {

using clock_type = std::chrono::steady_clock;
double secs(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

const char* arg_str(int argc, char** argv, const char* name, const char* def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}
int64_t arg(int argc, char** argv, const char* name, int64_t def) {
  const char* s = arg_str(argc, argv, name, nullptr);
  return s ? std::atoll(s) : def;
}
bool flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Uniform in [-scale, scale] + offset, from a per-range xorshift64* stream; filled on all cores.
void fill_random(uint16_t* dst, int64_t n, float scale, float offset, uint64_t seed) {
  const int nt = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> ts;
  for (int t = 0; t < nt; ++t)
    ts.emplace_back([=] {
      const int64_t a = n * t / nt, b = n * (t + 1) / nt;
      uint64_t s = (seed + static_cast<uint64_t>(t) + 1) * 0x9E3779B97F4A7C15ull;
      for (int64_t i = a; i < b; ++i) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        const float u =
            static_cast<float>((s * 2685821657736338717ull) >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f;
        dst[i] = to_bf16(u * scale + offset);
      }
    });
  for (auto& th : ts) th.join();
}

struct random_store {
  struct spec {
    std::string name;
    std::vector<int64_t> shape;
    float scale, offset;
    int64_t numel;
  };
  std::vector<spec> specs;
  std::map<float, std::vector<uint16_t>> shared;  // scale -> buffer for big matrices
  std::vector<std::vector<uint16_t>> owned;       // small tensors and tensors with an offset
  std::map<std::string, tensor_view> views;

  void add(const std::string& name, std::vector<int64_t> shape, float scale, float offset = 0.0f) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    specs.push_back({name, std::move(shape), scale, offset, n});
  }
  static constexpr int64_t small = 1 << 16;
  void build() {
    std::map<float, int64_t> need;
    for (const auto& s : specs)
      if (s.numel > small && s.offset == 0.0f) need[s.scale] = std::max(need[s.scale], s.numel + 4096);
    uint64_t seed = 1;
    for (auto& [scale, n] : need) {
      auto& buf = shared[scale];
      buf.resize(static_cast<size_t>(n));
      fill_random(buf.data(), n, scale, 0.0f, seed++);
    }
    uint64_t h = 0;
    for (const auto& s : specs) {
      tensor_view t;
      t.name = s.name;
      t.dtype = st_dtype::bf16;
      t.dtype_name = "BF16";
      t.shape = s.shape;
      t.file = "<random>";
      if (s.numel > small && s.offset == 0.0f) {
        auto& buf = shared[s.scale];
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        const int64_t room = static_cast<int64_t>(buf.size()) - s.numel;
        const int64_t off = room > 0 ? static_cast<int64_t>((h >> 20) % static_cast<uint64_t>(room)) / 64 * 64 : 0;
        t.data = buf.data() + off;
      } else {
        owned.emplace_back(static_cast<size_t>(s.numel));
        fill_random(owned.back().data(), s.numel, s.scale, s.offset, seed++);
        t.data = owned.back().data();
      }
      views[s.name] = t;
    }
  }
};

model_config real_config(int64_t layers) {
  model_config c;  // defaults are Qwen3-Next-80B-A3B's widths
  c.num_hidden_layers = layers;
  c.intermediate_size = 5120;
  c.layer_types.clear();
  for (int64_t i = 0; i < layers; ++i)
    c.layer_types.push_back((i + 1) % 4 ? layer_kind::linear_attention : layer_kind::full_attention);
  c.eos_token_ids = {151645};
  c.validate("<bench config>");
  return c;
}

void add_weights(random_store& s, const model_config& c) {
  const int64_t H = c.hidden_size;
  const float wscale = 1.0f / std::sqrt(static_cast<float>(H));
  s.add("model.embed_tokens.weight", {c.vocab_size, H}, 1.0f);
  s.add("lm_head.weight", {c.vocab_size, H}, wscale);
  s.add("model.norm.weight", {H}, 0.1f);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.add(p + "input_layernorm.weight", {H}, 0.1f);
    s.add(p + "post_attention_layernorm.weight", {H}, 0.1f);
    if (c.layer_types[static_cast<size_t>(l)] == layer_kind::full_attention) {
      const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
      s.add(p + "self_attn.q_proj.weight", {2 * q, H}, wscale);
      s.add(p + "self_attn.k_proj.weight", {kv, H}, wscale);
      s.add(p + "self_attn.v_proj.weight", {kv, H}, wscale);
      s.add(p + "self_attn.o_proj.weight", {H, q}, 1.0f / std::sqrt(static_cast<float>(q)));
      s.add(p + "self_attn.q_norm.weight", {c.head_dim}, 0.1f);
      s.add(p + "self_attn.k_norm.weight", {c.head_dim}, 0.1f);
    } else {
      const int64_t kd = c.linear_key_dim(), vd = c.linear_value_dim(), nv = c.linear_num_value_heads;
      s.add(p + "linear_attn.in_proj_qkvz.weight", {2 * kd + 2 * vd, H}, wscale);
      s.add(p + "linear_attn.in_proj_ba.weight", {2 * nv, H}, wscale);
      s.add(p + "linear_attn.out_proj.weight", {H, vd}, 1.0f / std::sqrt(static_cast<float>(vd)));
      s.add(p + "linear_attn.conv1d.weight", {c.linear_conv_dim(), 1, c.linear_conv_kernel_dim}, 0.5f);
      s.add(p + "linear_attn.A_log", {nv}, 1.0f, 0.5f);
      s.add(p + "linear_attn.dt_bias", {nv}, 0.5f);
      s.add(p + "linear_attn.norm.weight", {c.linear_value_head_dim}, 0.1f, 1.0f);
    }
    const int64_t I = c.moe_intermediate_size, S = c.shared_expert_intermediate_size;
    s.add(p + "mlp.gate.weight", {c.num_experts, H}, wscale);
    s.add(p + "mlp.shared_expert.gate_proj.weight", {S, H}, wscale);
    s.add(p + "mlp.shared_expert.up_proj.weight", {S, H}, wscale);
    s.add(p + "mlp.shared_expert.down_proj.weight", {H, S}, 1.0f / std::sqrt(static_cast<float>(S)));
    s.add(p + "mlp.shared_expert_gate.weight", {1, H}, wscale);
    for (int64_t e = 0; e < c.num_experts; ++e) {
      const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
      s.add(q + "gate_proj.weight", {I, H}, wscale);
      s.add(q + "up_proj.weight", {I, H}, wscale);
      s.add(q + "down_proj.weight", {H, I}, 1.0f / std::sqrt(static_cast<float>(I)));
    }
  }
}

// ---- bounds ---------------------------------------------------------------------------------------------------------

struct layer_counts {
  int64_t attn = 0, linear = 0;
};
layer_counts count_layers(const model_config& c) {
  layer_counts n;
  for (auto k : c.layer_types) (k == layer_kind::full_attention ? n.attn : n.linear)++;
  return n;
}

// Bytes one decode step at batch B reads, with every sequence at context `ctx` (weights bf16, KV bf16, DeltaNet
// recurrent state fp32 read and written, conv state bf16 read and written).
double decode_bytes(const model_config& c, int64_t B, double ctx) {
  const auto pc = count_params(c);
  const layer_counts n = count_layers(c);
  const double expert = 3.0 * static_cast<double>(c.moe_intermediate_size * c.hidden_size);
  const double k = static_cast<double>(c.num_experts_per_tok), E = static_cast<double>(c.num_experts);
  // Active weights of one token include k experts per layer; at batch B the layer reads the distinct experts the B
  // tokens pick: E * (1 - (1 - k/E)^B) on average for uniform routing (random router weights route about uniformly).
  const double distinct = E * (1.0 - std::pow(1.0 - k / E, static_cast<double>(B)));
  const double weights =
      static_cast<double>(pc.active_per_token) + static_cast<double>(c.num_hidden_layers) * (distinct - k) * expert;
  const double kv = static_cast<double>(B) * ctx * static_cast<double>(n.attn) * 2.0 *
                    static_cast<double>(c.num_key_value_heads * c.head_dim) * 2.0;
  const double state =
      static_cast<double>(B) * static_cast<double>(n.linear) *
      (static_cast<double>(c.linear_num_value_heads * c.linear_key_head_dim * c.linear_value_head_dim) * 4.0 * 2.0 +
       static_cast<double>((c.linear_conv_kernel_dim - 1) * c.linear_conv_dim()) * 2.0 * 2.0);
  return weights * 2.0 + kv + state;
}

// FLOPs of prefilling B prompts of P tokens (from position 0).
double prefill_flops(const model_config& c, int64_t B, int64_t P) {
  const auto pc = count_params(c);
  const layer_counts n = count_layers(c);
  const double lm_head = static_cast<double>(c.vocab_size * c.hidden_size);
  const double per_token = 2.0 * (static_cast<double>(pc.active_per_token) - lm_head);
  const double Pd = static_cast<double>(P);
  const double attn =
      static_cast<double>(n.attn) * 2.0 * static_cast<double>(c.num_attention_heads * c.head_dim) * Pd * Pd;
  // Chunked gated delta rule (chunk C = 64) per token and value head: state read-out, delta and update
  // 6 dk dv; intra-chunk products 8 C d; the triangular solve (2/3) C^2.
  const double C = 64, dk = static_cast<double>(c.linear_key_head_dim),
               dv = static_cast<double>(c.linear_value_head_dim);
  const double gdr = static_cast<double>(n.linear) * static_cast<double>(c.linear_num_value_heads) * Pd *
                     (6.0 * dk * dv + 8.0 * C * dv + 2.0 / 3.0 * C * C);
  return static_cast<double>(B) * (per_token * Pd + attn + gdr + 2.0 * lm_head);
}

double host_max_rss_gb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / (1024.0 * 1024.0);
}

// ---- hardware rates (measured in the same run) ------------------------------------------------------------------

#ifdef EVIDENT_HAVE_CUDA
#define BENCH_CUDA(call)                                                                                       \
  do {                                                                                                         \
    cudaError_t e_ = (call);                                                                                   \
    if (e_ != cudaSuccess) EV_THROW(internal, #call, " failed: ", cudaGetErrorString(e_), " line ", __LINE__); \
  } while (0)

// Device-to-device copy: bytes read + written per second.
double measure_copy_bw() {
  const size_t bytes = size_t{2} << 30;
  void *a = nullptr, *b = nullptr;
  BENCH_CUDA(cudaMalloc(&a, bytes));
  BENCH_CUDA(cudaMalloc(&b, bytes));
  BENCH_CUDA(cudaMemset(a, 1, bytes));
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  BENCH_CUDA(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
  const int iters = 10;
  BENCH_CUDA(cudaEventRecord(e0));
  for (int i = 0; i < iters; ++i) BENCH_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
  BENCH_CUDA(cudaEventRecord(e1));
  BENCH_CUDA(cudaEventSynchronize(e1));
  float ms = 0;
  BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) * iters / (ms / 1000.0);
}

// cuBLAS bf16 GEMM 8192^3 (fp32 accumulation, bf16 out) through kernels::gemm_bf16.
double measure_gemm_rate() {
  const int n = 8192;
  const size_t elems = static_cast<size_t>(n) * n;
  std::vector<uint16_t> host(elems);
  fill_random(host.data(), static_cast<int64_t>(elems), 0.05f, 0.0f, 77);
  void *x = nullptr, *w = nullptr, *y = nullptr;
  BENCH_CUDA(cudaMalloc(&x, elems * 2));
  BENCH_CUDA(cudaMalloc(&w, elems * 2));
  BENCH_CUDA(cudaMalloc(&y, elems * 2));
  BENCH_CUDA(cudaMemcpy(x, host.data(), elems * 2, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(w, host.data(), elems * 2, cudaMemcpyHostToDevice));
  evident::kernels::status st;
  auto ctx = evident::kernels::gemm_context::create(&st);
  EV_THROW_IF_NOT_MSG(ctx, "gemm_context: ", st.message);
  evident::kernels::gemm_args g;
  g.m = g.n = g.k = n;
  g.x = static_cast<const evident::kernels::bf16*>(x);
  g.w = static_cast<const evident::kernels::bf16*>(w);
  g.y = y;
  g.ldx = g.ldw = g.ldy = n;
  g.out_type = evident::kernels::gemm_out::bf16;
  for (int i = 0; i < 3; ++i) {
    st = evident::kernels::gemm_bf16(*ctx, g, nullptr);
    EV_THROW_IF_NOT_MSG(st.ok(), "gemm_bf16: ", st.message);
  }
  BENCH_CUDA(cudaDeviceSynchronize());
  const int iters = 20;
  const auto t0 = clock_type::now();
  for (int i = 0; i < iters; ++i) st = evident::kernels::gemm_bf16(*ctx, g, nullptr);
  BENCH_CUDA(cudaDeviceSynchronize());
  const double s = secs(t0, clock_type::now());
  ctx.reset();
  cudaFree(x);
  cudaFree(w);
  cudaFree(y);
  return 2.0 * static_cast<double>(n) * n * n * iters / s;
}
#endif

// Host memcpy: bytes read + written per second (the CPU backend's bound).
double measure_host_bw() {
  const size_t bytes = size_t{512} << 20;
  std::vector<char> a(bytes, 1), b(bytes, 0);
  std::memcpy(b.data(), a.data(), bytes);
  const auto t0 = clock_type::now();
  const int iters = 4;
  for (int i = 0; i < iters; ++i) {
    a[static_cast<size_t>(i)] = static_cast<char>(i);
    std::memcpy(b.data(), a.data(), bytes);
  }
  const double s = secs(t0, clock_type::now());
  return 2.0 * static_cast<double>(bytes) * iters / s + static_cast<double>(b[3]) * 0.0;
}

struct run_spec {
  int64_t B = 1, P = 512, G = 64;
  bool graphs = true;
  bool cublas = false;
  bool legacy = false;
};

// "B:P:G[:nog],..." -> specs.
std::vector<run_spec> parse_runs(const std::string& text) {
  std::vector<run_spec> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(start, end - start);
    run_spec r;
    long long b = 0, p = 0, g = 0;
    int used = 0;
    const int n = std::sscanf(item.c_str(), "%lld:%lld:%lld%n", &b, &p, &g, &used);
    EV_THROW_IF_NOT_MSG(n == 3, "bench_engine: --runs item '", item, "': expected B:P:G[:nog][:cublas]");
    std::string tail = item.substr(static_cast<size_t>(used));
    while (!tail.empty()) {
      EV_THROW_IF_NOT_MSG(tail[0] == ':', "bench_engine: --runs item '", item, "': expected B:P:G[:nog][:cublas]");
      size_t next = tail.find(':', 1);
      const std::string opt = tail.substr(1, next == std::string::npos ? std::string::npos : next - 1);
      if (opt == "nog")
        r.graphs = false;
      else if (opt == "cublas")
        r.cublas = true;
      else if (opt == "legacy")
        r.cublas = r.legacy = true;
      else
        EV_THROW(invalid_input, "bench_engine: --runs item '", item, "': unknown option '", opt,
                 "' (expected nog, cublas or legacy)");
      tail = next == std::string::npos ? std::string() : tail.substr(next);
    }
    r.B = b, r.P = p, r.G = g;
    EV_THROW_IF_NOT_MSG(r.B >= 1 && r.P >= 1 && r.G >= 2, "bench_engine: --runs item '", item,
                        "': need B >= 1, P >= 1, G >= 2");
    out.push_back(r);
    start = end + 1;
  }
  EV_THROW_IF_NOT_MSG(!out.empty(), "bench_engine: --runs is empty");
  return out;
}

struct run_result {
  double prefill_s = 0, ttft_first_s = 0, ttft_mean_s = 0, decode_s = 0, step_median_s = 0;
};

// B requests of P random tokens, G greedy tokens each, through one scheduler over `backend`.
run_result run_requests(step_model_i& backend, const run_spec& r, int64_t budget) {
  scheduler_config sc;
  sc.token_budget = budget;
  scheduler sched(backend, sc);
  uint64_t x = 4242;
  std::vector<request_id> ids;
  const auto t0 = clock_type::now();
  for (int64_t q = 0; q < r.B; ++q) {
    request_params rp;
    for (int64_t i = 0; i < r.P; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      rp.prompt.push_back(static_cast<int32_t>((x >> 33) % 151643));
    }
    rp.sampling.temperature = 0;
    rp.sampling.max_tokens = static_cast<int>(r.G);
    auto res = sched.submit(std::move(rp));
    EV_THROW_IF_NOT_KIND(res.accepted, resource, "bench_engine: request rejected: ", res.reason);
    ids.push_back(res.id);
  }
  std::map<request_id, double> ttft;
  std::map<request_id, int64_t> n_tok;
  run_result out;
  std::vector<double> decode_step_s;
  while (sched.has_work()) {
    const auto ts = clock_type::now();
    const auto ev = sched.step();
    const auto te = clock_type::now();
    const bool decode_only = static_cast<int64_t>(ttft.size()) == r.B;
    if (decode_only && sched.last_batch().n_decode == r.B) decode_step_s.push_back(secs(ts, te));
    for (const auto& e : ev) {
      if (e.kind == scheduler_event::finish && e.finish_reason != "length")
        EV_THROW(internal, "bench_engine: request ", e.id, " finished with ", e.finish_reason, " ", e.message);
      if (e.kind != scheduler_event::token) continue;
      if (n_tok[e.id]++ == 0) ttft[e.id] = secs(t0, te);
    }
    if (!decode_only && static_cast<int64_t>(ttft.size()) == r.B) out.prefill_s = secs(t0, te);
  }
  const double t_end = secs(t0, clock_type::now());
  for (auto& [id, t] : ttft) out.ttft_mean_s += t / static_cast<double>(r.B);
  out.ttft_first_s = ttft[ids[0]];
  std::sort(decode_step_s.begin(), decode_step_s.end());
  out.step_median_s = decode_step_s.empty() ? 0 : decode_step_s[decode_step_s.size() / 2];
  out.decode_s = t_end - out.prefill_s;
  return out;
}


#ifdef EVIDENT_HAVE_CUDA
// --profile: one run's decode steps driven on the cuda_model directly (no scheduler, no graphs), padded to B like the
// graph buckets, timed end to end and then per op.
void profile_decode(cuda_model& m, const run_spec& r, int64_t budget, const std::string& card) {
  std::vector<int> slots;
  for (int64_t q = 0; q < r.B; ++q) {
    const auto adm = m.open_sequence(r.P + r.G);
    EV_THROW_IF_NOT_KIND(adm.slot >= 0, resource, "bench_engine --profile: open_sequence: ", adm.reason);
    slots.push_back(adm.slot);
  }
  uint64_t x = 777;
  std::vector<int32_t> prompt(static_cast<size_t>(r.P));
  for (int s : slots) {
    for (auto& t : prompt) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      t = static_cast<int32_t>((x >> 33) % 151643);
    }
    for (int64_t p0 = 0; p0 < r.P; p0 += budget) {
      step_entry e;
      e.slot = s;
      e.ids = prompt.data() + p0;
      e.n_tokens = static_cast<int>(std::min<int64_t>(budget, r.P - p0));
      e.start = p0;
      m.step({e}, nullptr);
    }
  }
  int32_t* d_ids = nullptr;
  int32_t* d_ref = nullptr;
  void* d_ws = nullptr;
  const size_t ws_bytes = cuda_ops::argmax_rows_workspace_bytes(static_cast<int>(r.B));
  BENCH_CUDA(cudaMalloc(&d_ids, sizeof(int32_t) * static_cast<size_t>(r.B)));
  BENCH_CUDA(cudaMalloc(&d_ref, sizeof(int32_t) * static_cast<size_t>(r.B)));
  BENCH_CUDA(cudaMalloc(&d_ws, ws_bytes));
  int64_t argmax_checked = 0, argmax_mismatch = 0;
  std::vector<int32_t> tok(static_cast<size_t>(r.B), 1000);
  auto decode_step = [&](bool marks) {
    std::vector<step_entry> batch;
    for (size_t i = 0; i < slots.size(); ++i) {
      step_entry e;
      e.slot = slots[i];
      e.ids = &tok[i];
      e.n_tokens = 1;
      e.start = m.sequence_length(slots[i]);
      batch.push_back(e);
    }
    m.prepare(batch, static_cast<int>(r.B));
    m.launch();
    if (marks) m.profile_mark(nullptr, "step: argmax");
    // cuda_step_model's argmax (cuda_ops::argmax_rows), checked against kernels::sample_greedy on every step.
    const auto st = cuda_ops::argmax_rows(static_cast<int>(r.B), static_cast<int>(m.vocab_size()), m.logits(),
                                          m.vocab_size(), d_ids, d_ws, ws_bytes, m.stream());
    EV_THROW_IF_NOT_KIND(st.ok(), internal, "bench_engine: argmax_rows: ", st.message);
    if (!marks) return;
    evident::kernels::argmax_args a;
    a.n_rows = static_cast<int>(r.B);
    a.vocab = static_cast<int>(m.vocab_size());
    a.logits = m.logits();
    a.stride = m.vocab_size();
    a.ids = d_ref;
    m.profile_mark(nullptr, "(check: kernels::sample_greedy, not part of a step)");
    const auto st2 = evident::kernels::sample_greedy(a, m.stream());
    EV_THROW_IF_NOT_KIND(st2.ok(), internal, "bench_engine: sample_greedy: ", st2.message);
  };
  auto check_argmax = [&]() {
    std::vector<int32_t> got(static_cast<size_t>(r.B)), want(static_cast<size_t>(r.B));
    BENCH_CUDA(cudaMemcpy(got.data(), d_ids, sizeof(int32_t) * got.size(), cudaMemcpyDeviceToHost));
    BENCH_CUDA(cudaMemcpy(want.data(), d_ref, sizeof(int32_t) * want.size(), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < got.size(); ++i) argmax_checked++, argmax_mismatch += got[i] != want[i];
  };
  const int n_steps = 8;
  // Positions left after the prompt: warm-up 2 + (timed n_steps + profiled n_steps) per path.
  EV_THROW_IF_NOT_MSG(r.G >= 2 + 6 * n_steps, "bench_engine --profile: run ", r.B, ":", r.P, ":", r.G,
                      " needs G >= ", 2 + 6 * n_steps);
  const int saved = m.options().gemv_max_m;
  const char* path_names[3] = {"default", "cublas", "legacy"};
  const char* path_notes[3] = {"default (gemv_small where it wins, fast_decode)", "cuBLAS only, fast_decode",
                               "legacy (cuBLAS only, fast_decode off)"};
  for (int path = 0; path < 3; ++path) {
    const bool gemv = path == 0;
    m.set_gemv_max_m(gemv ? std::max(saved, 1) : 0);
    m.set_fast_decode(path != 2);
    if (path == 0)
      for (int i = 0; i < 2; ++i) decode_step(false), m.read_logits(nullptr);
    decode_step(false);
    m.read_logits(nullptr);
    std::vector<double> wall;
    for (int i = 0; i < n_steps; ++i) {
      const auto t0 = clock_type::now();
      decode_step(false);
      m.read_logits(nullptr);
      wall.push_back(secs(t0, clock_type::now()));
    }
    std::sort(wall.begin(), wall.end());
    m.set_profiling(true);
    std::map<std::string, std::pair<double, int>> acc;
    std::vector<std::string> order;
    for (int i = 0; i < n_steps - 1; ++i) {
      decode_step(true);
      const auto prof = m.read_profile();
      check_argmax();
      for (const auto& e : prof) {
        if (e.name.rfind("(check", 0) == 0) continue;  // the reference argmax: not part of a step
        if (!acc.count(e.name)) order.push_back(e.name);
        acc[e.name].first += e.ms;
        acc[e.name].second += e.count;
      }
    }
    m.set_profiling(false);
    const double steps = n_steps - 1;
    double total = 0;
    for (const auto& n : order) total += acc[n].first / steps;
    std::fprintf(stderr, "profile %s batch %lld prompt %lld, %s: eager step median %.3f ms (wall), GPU sum of ops %.3f ms\n",
                 card.c_str(), static_cast<long long>(r.B), static_cast<long long>(r.P),
                 path_notes[path], wall[wall.size() / 2] * 1e3, total);
    std::string json = "{\"profile_card\": \"" + card + "\", \"batch\": " + std::to_string(r.B) +
                       ", \"prompt\": " + std::to_string(r.P) + ", \"path\": \"" + path_names[path] +
                       "\", \"eager_step_ms\": " + std::to_string(wall[wall.size() / 2] * 1e3) +
                       ", \"gpu_ops_ms\": " + std::to_string(total) + ", \"profile\": [";
    bool first = true;
    for (const auto& n : order) {
      const double ms = acc[n].first / steps;
      const double cnt = acc[n].second / steps;
      std::fprintf(stderr, "  %-42s %8.1f us  %5.1f%%  x%.0f\n", n.c_str(), ms * 1e3, 100.0 * ms / total, cnt);
      json += std::string(first ? "" : ", ") + "[\"" + n + "\", " + std::to_string(ms) + ", " + std::to_string(cnt) + "]";
      first = false;
    }
    std::printf("%s]}\n", json.c_str());
    std::fflush(stdout);
  }
  m.set_gemv_max_m(saved);
  m.set_fast_decode(true);
  std::fprintf(stderr, "profile: argmax_rows vs kernels::sample_greedy: %lld of %lld rows differ\n",
               static_cast<long long>(argmax_mismatch), static_cast<long long>(argmax_checked));
  BENCH_CUDA(cudaFree(d_ids));
  BENCH_CUDA(cudaFree(d_ref));
  BENCH_CUDA(cudaFree(d_ws));
  for (int s : slots) m.close_sequence(s);
}

// --profile-prefill P:C,...: one sequence of P random tokens prefilled in steps of C tokens on the cuda_model directly
// (no scheduler): once unprofiled (warm-up, then timed: wall clock from the first step to the last step's logits),
// then once profiled (GPU time per op summed over the whole prompt). Prints the time beside the FLOP bound.
void profile_prefill(cuda_model& m, int64_t P, int64_t chunk, double flops, double gemm_rate,
                     const std::string& card) {
  uint64_t x = 991;
  std::vector<int32_t> prompt(static_cast<size_t>(P));
  for (auto& t : prompt) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    t = static_cast<int32_t>((x >> 33) % 151643);
  }
  auto prefill = [&](bool profiled, std::map<std::string, std::pair<double, int>>* acc,
                     std::vector<std::string>* order) {
    const auto adm = m.open_sequence(P + 1);
    EV_THROW_IF_NOT_KIND(adm.slot >= 0, resource, "bench_engine --profile-prefill: open_sequence: ", adm.reason);
    m.set_profiling(profiled, 2000);
    const auto t0 = clock_type::now();
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
      step_entry e;
      e.slot = adm.slot;
      e.ids = prompt.data() + p0;
      e.n_tokens = static_cast<int>(std::min<int64_t>(chunk, P - p0));
      e.start = p0;
      m.prepare({e});
      m.launch();
      if (!profiled) continue;
      for (const auto& pe : m.read_profile()) {
        if (!acc->count(pe.name)) order->push_back(pe.name);
        (*acc)[pe.name].first += pe.ms;
        (*acc)[pe.name].second += pe.count;
      }
    }
    m.read_logits(nullptr);
    const double s = secs(t0, clock_type::now());
    m.set_profiling(false);
    m.close_sequence(adm.slot);
    return s;
  };
  prefill(false, nullptr, nullptr);  // warm-up: first use of these shapes (cuBLAS heuristics, lazy module loads)
  const double wall = prefill(false, nullptr, nullptr);
  std::map<std::string, std::pair<double, int>> acc;
  std::vector<std::string> order;
  prefill(true, &acc, &order);
  double total = 0;
  for (const auto& n : order) total += acc[n].first;
  const double bound_ms = gemm_rate > 0 ? flops / gemm_rate * 1e3 : 0;
  std::fprintf(stderr,
               "prefill profile %s: prompt %lld in steps of %lld: wall %.1f ms (%.1f K tok/s), GPU sum of ops %.1f ms;"
               " FLOP bound %.1f ms: %.1f%% of bound\n",
               card.c_str(), static_cast<long long>(P), static_cast<long long>(chunk), wall * 1e3,
               static_cast<double>(P) / wall / 1e3, total, bound_ms, 100.0 * bound_ms / (wall * 1e3));
  std::string json = "{\"prefill_profile_card\": \"" + card + "\", \"prompt\": " + std::to_string(P) +
                     ", \"step_tokens\": " + std::to_string(chunk) + ", \"wall_ms\": " + std::to_string(wall * 1e3) +
                     ", \"gpu_ops_ms\": " + std::to_string(total) + ", \"bound_ms\": " + std::to_string(bound_ms) +
                     ", \"of_bound\": " + std::to_string(bound_ms / (wall * 1e3)) + ", \"profile\": [";
  bool first = true;
  for (const auto& n : order) {
    const double ms = acc[n].first;
    std::fprintf(stderr, "  %-42s %9.2f ms  %5.1f%%  x%d\n", n.c_str(), ms, 100.0 * ms / total, acc[n].second);
    json += std::string(first ? "" : ", ") + "[\"" + n + "\", " + std::to_string(ms) + ", " +
            std::to_string(acc[n].second) + "]";
    first = false;
  }
  std::printf("%s]}\n", json.c_str());
  std::fflush(stdout);
}
#endif
}  // namespace

namespace evident::bench {

int run_engine_bench(int argc, char** argv) try {
  static const char* known[] = {"--layers",  "--device",  "--runs",    "--batch",       "--prompt", "--gen",
                                "--budget",  "--no-graphs", "--threads", "--gemv-max-m", "--profile",
                                "--profile-prefill"};
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--", 2) != 0) continue;
    bool ok = false;
    for (const char* k : known) ok = ok || std::strcmp(argv[i], k) == 0;
    EV_THROW_IF_NOT_MSG(ok, "bench_engine: unknown flag ", argv[i], " (flags: --layers --batch --prompt --gen --runs ",
                        "--device --budget --no-graphs --threads --gemv-max-m --profile --profile-prefill)");
  }
  const int64_t layers = arg(argc, argv, "--layers", 12);
  const std::string device = arg_str(argc, argv, "--device", "cuda");
  std::vector<run_spec> runs;
  if (const char* rs = arg_str(argc, argv, "--runs", nullptr)) {
    runs = parse_runs(rs);
  } else {
    run_spec r;
    r.B = arg(argc, argv, "--batch", 1);
    r.P = arg(argc, argv, "--prompt", 512);
    r.G = arg(argc, argv, "--gen", 64);
    r.graphs = !flag(argc, argv, "--no-graphs");
    EV_THROW_IF_NOT_MSG(r.B >= 1 && r.P >= 1 && r.G >= 2, "bench_engine: need --batch >= 1, --prompt >= 1, --gen >= 2");
    runs.push_back(r);
  }
  // --profile-prefill P:C,... (prompt P in steps of C tokens; C defaults to the budget)
  std::vector<std::pair<int64_t, int64_t>> prefill_profiles;
  if (const char* pp = arg_str(argc, argv, "--profile-prefill", nullptr)) {
    std::string text = pp;
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find(',', start);
      if (end == std::string::npos) end = text.size();
      const std::string item = text.substr(start, end - start);
      long long p = 0, c = 0;
      const int n = std::sscanf(item.c_str(), "%lld:%lld", &p, &c);
      EV_THROW_IF_NOT_MSG(n >= 1 && p >= 1 && (n == 1 || c >= 1), "bench_engine: --profile-prefill item '", item,
                          "': expected P[:C] with P, C >= 1");
      prefill_profiles.emplace_back(p, n == 2 ? c : 0);
      start = end + 1;
    }
  }
  int64_t max_b = 1, max_ctx = 1, max_chunk = 0;
  for (const auto& r : runs) max_b = std::max(max_b, r.B), max_ctx = std::max(max_ctx, r.P + r.G);
  for (const auto& [p, c] : prefill_profiles) max_ctx = std::max(max_ctx, p + 1), max_chunk = std::max(max_chunk, c);
  const int64_t budget = arg(argc, argv, "--budget", std::max<int64_t>(std::max<int64_t>(2048, max_chunk), max_b + 1));
  for (auto& pc : prefill_profiles) {
    if (pc.second == 0) pc.second = budget;
    EV_THROW_IF_NOT_MSG(pc.second <= budget, "bench_engine: --profile-prefill step of ", pc.second,
                        " tokens exceeds --budget ", budget);
  }
  EV_THROW_IF_NOT_MSG(layers >= 1, "bench_engine: need --layers >= 1");
  EV_THROW_IF_NOT_MSG(device == "cuda" || device == "cpu", "bench_engine: --device must be cuda or cpu, got ", device);

  const model_config c = real_config(layers);
  const auto t_build = clock_type::now();
  auto store = std::make_shared<random_store>();
  add_weights(*store, c);
  store->build();
  const random_store* sp = store.get();
  tensor_lookup lookup = [sp](const std::string& n) {
    auto it = sp->views.find(n);
    return it == sp->views.end() ? nullptr : &it->second;
  };

  std::unique_ptr<qwen3next_model> cpu_model;
  std::unique_ptr<thread_pool> pool;
  double copy_bw = 0, gemm_rate = 0;
  std::string card = "cpu";
  size_t dev_weights = 0, dev_states = 0, dev_buffers = 0;
#ifdef EVIDENT_HAVE_CUDA
  std::unique_ptr<cuda_model> gpu_model;
  cuda_step_options step_opts;  // the graph buckets, fitted to the model's step entries (fit_step_entries)
  int gemv_max_m = 1;  // --gemv-max-m as parsed (runs with :cublas set the model's to 0, so it is kept here)
#endif
  if (device == "cpu") {
    pool = std::make_unique<thread_pool>(static_cast<int>(arg(argc, argv, "--threads", 0)));
    cpu_model = qwen3next_model::from_tensors(c, lookup, store, "<random Qwen3-Next>", pool.get());
    copy_bw = measure_host_bw();
  } else {
#ifdef EVIDENT_HAVE_CUDA
    cudaDeviceProp prop{};
    BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
    card = prop.name;
    // Rates first, while the device is empty (the model and its KV cache take most of the memory).
    copy_bw = measure_copy_bw();
    gemm_rate = measure_gemm_rate();
    cuda_model_options o;
    o.max_sequences = static_cast<int>(max_b);
    o.max_context = max_ctx + 64;
    o.max_step_tokens = static_cast<int>(budget);
    fit_step_entries(o, step_opts);
    // KV blocks for the largest run (every request at its full length), not a share of the free memory.
    int64_t kv_blocks = 0;
    for (const auto& r : runs)
      kv_blocks = std::max(kv_blocks, r.B * ((r.P + r.G + o.block_size - 1) / o.block_size + 1));
    for (const auto& pc : prefill_profiles) kv_blocks = std::max(kv_blocks, (pc.first + 1) / o.block_size + 2);
    o.kv_blocks = kv_blocks + 64;
    o.gemv_max_m = gemv_max_m = static_cast<int>(arg(argc, argv, "--gemv-max-m", o.gemv_max_m));
    gpu_model = cuda_model::from_tensors(c, lookup, o, "<random Qwen3-Next>");
    store.reset();  // the device has its copies
    dev_weights = gpu_model->weight_bytes();
    dev_states = gpu_model->state_bytes();
    dev_buffers = gpu_model->buffer_bytes();
    std::fprintf(stderr, "bench_engine: %s\n", gpu_model->kernel_report().c_str());
    if (flag(argc, argv, "--profile"))
      for (const auto& r : runs)
        if (!r.cublas && r.graphs && r.G >= 2 + 6 * 8) profile_decode(*gpu_model, r, budget, card);
    for (const auto& [p, chunk] : prefill_profiles)
      profile_prefill(*gpu_model, p, chunk, prefill_flops(c, 1, p), gemm_rate, card);
#else
    EV_THROW(invalid_input, "bench_engine: built without CUDA; use --device cpu");
#endif
  }
  const double build_s = secs(t_build, clock_type::now());
  const auto pc = count_params(c);

  for (const auto& r : runs) {
    std::unique_ptr<step_model_i> backend;
    std::string graph_note = "none";
    if (device == "cpu") {
      backend = std::make_unique<cpu_step_model>(*cpu_model, static_cast<int>(r.B), r.P + r.G, r.B * (r.P + r.G));
    }
#ifdef EVIDENT_HAVE_CUDA
    cuda_step_model* gpu_step = nullptr;
    if (device == "cuda") {
      gpu_model->set_gemv_max_m(r.cublas ? 0 : gemv_max_m);
      gpu_model->set_fast_decode(!r.legacy);
      cuda_step_options so = step_opts;
      so.use_graphs = r.graphs;
      auto st = std::make_unique<cuda_step_model>(*gpu_model, so);
      gpu_step = st.get();
      backend = std::move(st);
    }
#endif
    const run_result m = run_requests(*backend, r, budget);
#ifdef EVIDENT_HAVE_CUDA
    if (gpu_step)
      graph_note = std::to_string(gpu_step->graph_stats().captures) + " captures, " +
                   std::to_string(gpu_step->graph_stats().replays) + " replays";
#endif
    const bool graphs = r.graphs && device == "cuda";
    const double decode_per_seq = static_cast<double>(r.G - 1) / m.decode_s;
    const double prefill_tps = static_cast<double>(r.B * r.P) / m.prefill_s;
    const double bytes = decode_bytes(c, r.B, static_cast<double>(r.P) + static_cast<double>(r.G) / 2);
    const double bound_step_s = bytes / copy_bw;
    const double flops = prefill_flops(c, r.B, r.P);
    const double bound_prefill_s = gemm_rate > 0 ? flops / gemm_rate : 0;
    double dev_used_gb = 0;
#ifdef EVIDENT_HAVE_CUDA
    if (device == "cuda") {
      size_t fr = 0, tot = 0;
      BENCH_CUDA(cudaMemGetInfo(&fr, &tot));
      dev_used_gb = static_cast<double>(tot - fr) / 1e9;
    }
#endif
    std::printf(
        "{\"device\": \"%s\", \"card\": \"%s\", \"layers\": %lld, \"batch\": %lld, \"prompt\": %lld, \"gen\": %lld, "
        "\"budget\": %lld, \"graphs\": %s, \"cublas_only\": %s, \"params_total\": %lld, \"params_active\": %lld, "
        "\"prefill_tok_per_s\": %.1f, \"ttft_first_ms\": %.2f, \"ttft_mean_ms\": %.2f, \"prefill_s\": %.4f, "
        "\"prefill_flops\": %.4g, \"gemm_flops_per_s\": %.4g, \"prefill_bound_s\": %.4f, \"prefill_of_bound\": %.3f, "
        "\"decode_tok_per_s_per_seq\": %.2f, \"decode_tok_per_s_aggregate\": %.1f, \"decode_step_median_ms\": %.3f, "
        "\"decode_step_bytes\": %.4g, \"copy_bytes_per_s\": %.4g, \"decode_step_bound_ms\": %.3f, "
        "\"decode_of_bound\": %.3f, \"device_weights_gb\": %.2f, \"device_states_gb\": %.2f, "
        "\"device_buffers_gb\": %.2f, \"device_used_gb\": %.2f, \"host_max_rss_gb\": %.2f, \"build_s\": %.1f}\n",
        device.c_str(), card.c_str(), static_cast<long long>(layers), static_cast<long long>(r.B),
        static_cast<long long>(r.P), static_cast<long long>(r.G), static_cast<long long>(budget),
        graphs ? "true" : "false", r.legacy ? "\"legacy\"" : (r.cublas ? "true" : "false"), static_cast<long long>(pc.total), static_cast<long long>(pc.active_per_token),
        prefill_tps, m.ttft_first_s * 1e3, m.ttft_mean_s * 1e3, m.prefill_s, flops, gemm_rate, bound_prefill_s,
        bound_prefill_s > 0 ? bound_prefill_s / m.prefill_s : 0.0, decode_per_seq,
        decode_per_seq * static_cast<double>(r.B), m.step_median_s * 1e3, bytes, copy_bw, bound_step_s * 1e3,
        m.step_median_s > 0 ? bound_step_s / m.step_median_s : 0.0, static_cast<double>(dev_weights) / 1e9,
        static_cast<double>(dev_states) / 1e9, static_cast<double>(dev_buffers) / 1e9, dev_used_gb, host_max_rss_gb(),
        build_s);
    std::fflush(stdout);
    std::fprintf(stderr,
                 "%s %s: %lld layers, batch %lld, prompt %lld, gen %lld | prefill %.0f tok/s (bound %.0f), TTFT %.1f "
                 "ms | decode %.1f tok/s/seq, %.0f tok/s total, step %.2f ms (bound %.2f ms = %.2f GB / %.0f GB/s) "
                 "| graphs: %s%s\n",
                 device.c_str(), card.c_str(), static_cast<long long>(layers), static_cast<long long>(r.B),
                 static_cast<long long>(r.P), static_cast<long long>(r.G), prefill_tps,
                 bound_prefill_s > 0 ? static_cast<double>(r.B * r.P) / bound_prefill_s : 0.0, m.ttft_first_s * 1e3,
                 decode_per_seq, decode_per_seq * static_cast<double>(r.B), m.step_median_s * 1e3, bound_step_s * 1e3,
                 bytes / 1e9, copy_bw / 1e9, graph_note.c_str(), r.legacy ? " | legacy paths (cuBLAS only, fast_decode off)" : (r.cublas ? " | cuBLAS only" : ""));
  }
  return 0;
} catch (const evident::error& e) {
  const std::string msg = e.what();
  std::fprintf(stderr, "%s%s\n", msg.rfind("bench_engine:", 0) == 0 ? "" : "bench_engine: ", msg.c_str());
  return e.kind() == evident::error_kind::invalid_input ? 2 : 1;
}

}  // namespace evident::bench
