// The CUDA engine (engine/cuda/cuda-model.h) against independent references:
//   1. the transformers fixtures (tests/fixtures/tiny-*: transformers' fp32 forward from bf16 weights): logits at
//      every stored position and the greedy continuation. Their head shapes are tiny, so they run engine/cuda's
//      generic attention / delta-rule kernels (and kernels/' MoE, norms, conv1d, RoPE-free paths, cuBLAS).
//   2. the CPU engine (engine::qwen3next_model, itself checked against transformers) on a random model with
//      Qwen3-Next-80B's real head shapes (16/2 attention heads of 256, 16/32 DeltaNet heads of 128), so the fast
//      kernels of kernels/ run: a mixed batch of 8 sequences of different lengths with prefill chunks and decode
//      steps interleaved, compared entry by entry with the CPU engine fed the same pieces.
//   3. chunked prefill (a prompt fed in pieces across steps) against one-shot prefill, on the GPU.
//   4. "no room" answers (load, admission, step) and decode padding for CUDA-graph buckets.
//
// Tolerances. The GPU computes the way a bf16 engine does: activations (the residual stream included) are rounded
// to bf16 between ops, each rounding a relative error up to 2^-9 = 2e-3 (half of bf16's 2^-8 spacing); the references
// keep fp32. Through a few layers of norms, projections and softmaxes those roundings add up to about 1e-2 of the logit
// scale. We require
//   max|gpu - ref| / max|ref| < 4e-2   per logit row (fixtures and CPU engine),
// which a wrong convention breaks by far (a missing 1 + w, a swapped gate/up, a wrong head grouping, a stale state
// all give O(1) differences), and greedy tokens equal to the reference's (teacher-forced: step t is fed the
// reference's token t-1, so one near-tie cannot cascade). The fast kernels of kernels/ round more inside (the chunked
// delta rule feeds bf16 tensor-core operands and is itself allowed 1.5e-2 against fp64; prefill attention rounds
// the softmax probabilities to bf16, as flash-attention does), so with them the bound against the CPU engine is
// 6e-2 (measured on H100: 0.0415 fast, 0.031 generic). GPU-vs-GPU comparisons (chunked vs one-shot prefill) differ
// only by kernel paths (chunked vs recurrent delta rule, prefill vs decode attention): 5e-2 (measured 0.036 fast;
// the generic kernels run token by token and give exactly 0).
//
// Fixture rows above 4e-2 are explained, never tolerated by count. Two things bf16 inherently causes are larger
// than the 4e-2 floor at a few positions, and each is proven per position against the fp32 CPU engine (within 4e-6
// of transformers):
//   - MoE routing flips. Top-k routing is discontinuous: where the k-th and (k+1)-th router logits of a token are
//     closer than the bf16 noise, the GPU and the reference choose different experts and the output jumps there.
//   - ill-conditioned positions. At tiny-a position 86 the layer-1 Gated DeltaNet output of heads 2/3 is nearly
//     cancelled (rms 3.9e-4 / 1.1e-4, median 6e-3), so bf16's absolute error is a relative error of 0.2 / 1.4 there,
//     which the gated RMSNorm scales back up: the residual's relative error goes 0.003 -> 0.06 -> 0.21 (found with a
//     CPU emulation of this engine's bf16 rounding points, not committed); position 94 likewise in layer 2.
// The sensitivity S_p measures the second directly: the CPU engine is re-run kSensRuns = 32 times with every weight
// element multiplied by 1 + u, u uniform in +-2^-9 (bf16's relative rounding error; independent, seeded), and
//   S_p  = max over the runs that route p exactly as the unperturbed run of max|l_pert - l| / max|l| at p,
//   R_pj = max over the runs with no flip at p before sparse layer j of max|router logit_pert - router logit|.
// Runs that flip at p are left out of S_p: a flip must be shown by the GPU itself (rule (a)). The rule:
//   (a) a row with diff > max(4e-2, c * S_p) needs a routing flip AT THAT POSITION: the GPU's chosen expert set
//       differs from the CPU's in some sparse-MoE layer, and at the first such layer the CPU logit margin
//       l_(k) - l_(k+1) < 2 * B_pj (two logits, each off by up to B_pj, can swap only if closer than that);
//   (b) every flip anywhere is at such a near-tie (a flip at a clear margin is a routing bug, spike or not);
//   (c) router logits, at every position and sparse layer j up to its first flip, within B_pj = max(0.15, c * R_pj)
//       of the CPU's (before its first flip a position differs from fp32 only by rounding);
//   and greedy tokens equal. No share of positions is allowed to fail. S_p is measured only when the floors (4e-2,
//   0.15) do not hold by themselves (tiny-b and tiny-vocab never need it), once per fixture (~1.5 s for tiny-a).
// Floors. kRouterErr = 0.15: a router logit is w_e . xn with xn the bf16 rmsnorm output; its error is the hidden
// state's relative error (~5e-3 at an ordinary position) times the logit's scale (|l| up to 8, sd ~2). Measured: the
// CPU bf16 emulation gave at most 0.106 / 0.124 / 0.113 on tiny-a / tiny-b / tiny-vocab; the GPU (H100) at most
// 0.112 at positions not ill-conditioned. Flip margins measured on H100: 0.004 - 0.10 (tiny-a 33, 53, 55, 120, 152).
// c = kSensFactor = 3. The weight noise is a proxy: the GPU does not perturb weights but rounds activations, at
// 2-4 points per weight application (matmul inputs and outputs, norms, the bf16 residual), each of the same relative
// size as u, so its error per op is up to sqrt(4) = 2 times the proxy's in rms; and 32 runs sample the tail of a
// heavy-tailed spread (one GPU run is one more sample): at 86, S_p was 0.057 / 0.076 / 0.119 / 0.221 with 8 / 16 /
// 32 / 128 runs (another seed set). Measured with the committed seeds (32 runs): S_86 = 0.099, S_94 = 0.046 (GPU
// diffs 0.196, 0.050: 2.0x and 1.1x S_p); R at 86 is 0.20 / 0.37 in layers 2 / 3 (GPU router err 0.39 / 0.80: 2.2x),
// at 94 0.19 / 0.30 (GPU 0.22 / 0.32). With c = 2 position 86 would sit on the edge (0.197 vs 0.196 logits, 0.73 vs
// 0.80 router): c = 3 leaves ~1.4x. 23 of tiny-a's 162 positions get a logit bound above 4e-2 (max 0.30 at 86, then
// 0.14 at 94, the rest <= 0.10); at most positions S_p ~ 0.006 (median), so the floor decides.
// Why this still fails for a wrong engine (routing_check_negative, run on the GPU, judged with the sensitivity
// bounds): a wrong renormalisation keeps the chosen experts (no new flips at ties) but scales every routed
// contribution, so rows spike where nothing flipped and far above c * S_p (CPU engine with the same fault: 135 of
// 162 rows above max(4e-2, 3 S_p); GPU with the floors alone: 121 unexplained); a wrong expert choice (router rows
// swapped in layer 0) flips at clear margins and moves layer-0 router logits by O(1), where R_p0 <= 0.07 keeps the
// bound at <= 0.21: (b) and (c) fail. The CPU-only form of (a) ("a near-tie in some layer") would be weak: 100 of 162
// tiny-a positions have a CPU margin below 0.3 somewhere, which is why (a) needs the GPU's own chosen experts.
//
// The random model compared with the CPU engine routes every token to ALL of its experts (top_k = num_experts: the
// weights are a softmax, continuous), so there the bound holds at every position with no exception.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <tuple>

#include "engine/base/error.h"
#include "engine/cuda/cuda-model.h"
#include "engine/models/qwen3next.h"
#include "kernels/bf16.h"
#include "tests/engine/fixture.h"
#include "tests/test-util.h"

namespace {

using evident::engine::cuda_model;
using evident::engine::cuda_model_options;
using evident::engine::cuda_routing;
using evident::engine::model_config;
using evident::engine::qwen3next_model;
using evident::engine::routing_trace;
using evident::engine::sequence_memory;
using evident::engine::st_dtype;
using evident::engine::step_entry;
using evident::engine::tensor_view;

constexpr double kTolRef = 4e-2;
constexpr double kTolFast = 6e-2;  // fast kernels vs the CPU engine
constexpr double kTolGpu = 5e-2;
// Routing (see the top): the floor of the router-logit error bound B_pj; a flip is at a near-tie when the CPU logit
// margin is below 2 * B_pj.
constexpr double kRouterErr = 0.15;

int argmax(const float* v, std::int64_t n) {
  return int(std::max_element(v, v + n) - v);
}

cuda_model_options small_options() {
  cuda_model_options o;
  o.max_sequences = 12;
  o.block_size = 16;
  o.max_context = 1024;
  o.max_step_tokens = 1024;
  o.max_step_entries = 32;
  o.max_logit_rows = 256;
  o.kv_blocks = 256;
  return o;
}

// ---------------------------------------------------------------------------------------------------------------------
// 1. transformers fixtures, with every routing flip proven (see the top).

// The routing at one position, as the CPU engine (fp32) and the GPU chose it, per sparse-MoE layer.
struct position_routing {
  int first_flip = -1;        // index (into the sparse layers) of the first whose chosen expert SET differs; -1: none
  int first_flip_layer = -1;  // its model layer
  std::vector<int> layer;     // per sparse layer: the model layer
  std::vector<float> err;     // per sparse layer: max |l_gpu - l_cpu| over the experts
  std::vector<float> margin;  // per sparse layer: the CPU logit margin l_(k) - l_(k+1)
  std::vector<bool> flip;     // per sparse layer: chosen sets differ
};

// cpu: one forward() over the whole sequence (records of n tokens from position 0); position t of it. gpu: a step's
// routing; gpu_row: t's row in that step.
position_routing compare_routing(const routing_trace& cpu, std::int64_t t, const cuda_routing& gpu, int gpu_row) {
  position_routing r;
  EXPECT_EQ(cpu.records.size(), gpu.layers.size());
  for (std::size_t j = 0; j < std::min(cpu.records.size(), gpu.layers.size()); ++j) {
    const auto& rec = cpu.records[j];
    EXPECT_EQ(rec.layer, gpu.layers[j]);
    const std::int64_t E = rec.n_experts, k = rec.top_k;
    const std::size_t g = j * std::size_t(gpu.n_tokens) + std::size_t(gpu_row);
    const float* lc = rec.logits.data() + t * E;
    const float* lg = gpu.logits.data() + g * std::size_t(E);
    float err = 0;
    for (std::int64_t e = 0; e < E; ++e) err = std::max(err, std::abs(lg[e] - lc[e]));
    std::vector<std::int32_t> a(rec.ids.begin() + t * k, rec.ids.begin() + (t + 1) * k);
    std::vector<std::int32_t> b(gpu.ids.begin() + std::int64_t(g) * k, gpu.ids.begin() + std::int64_t(g + 1) * k);
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    r.layer.push_back(rec.layer);
    r.err.push_back(err);
    r.margin.push_back(rec.logit_margin(t));
    r.flip.push_back(a != b);
    if (a != b && r.first_flip < 0) {
      r.first_flip = int(j);
      r.first_flip_layer = rec.layer;
    }
  }
  return r;
}

struct compared_row {
  double diff = 0;  // max|gpu - ref| / max|ref| of the row's logits
  std::int64_t position = 0;
  position_routing routing;
};

// The sensitivity of a fixture's exact fp32 forward to bf16-sized noise (see the top): the CPU engine re-run
// kSensRuns times on the same tokens, every weight element multiplied by 1 + u, u uniform in +-2^-9 (independent,
// seeded), compared with the unperturbed CPU engine.
//   logits[p]: S_p = max over the runs whose chosen experts at p equal the unperturbed ones in every sparse layer of
//              max|l_pert - l| / max|l| of row p (a run that flips at p measures a flip, which the GPU must show
//              itself: rule (a));
//   router[p * n_sparse + j]: R_pj = max |router logit_pert - router logit| at p in sparse layer j over the runs
//              with no flip at p before layer j (the same "up to the first flip" as the GPU's router error).
constexpr int kSensRuns = 32;
constexpr double kSensNoise = 1.0 / 512;  // 2^-9: bf16's relative rounding error (8 significant bits, nearest)
constexpr double kSensFactor = 3;         // c (see the top)

struct sensitivity {
  int runs = 0, n_sparse = 0;
  std::vector<double> logits;  // [n positions]
  std::vector<float> router;   // [n positions, n_sparse]
  double seconds = 0;
  // The bounds of the rule at the top.
  double logit_bound(std::int64_t p) const { return std::max(kTolRef, kSensFactor * logits[std::size_t(p)]); }
  double router_bound(std::int64_t p, int j) const {
    return std::max(kRouterErr, kSensFactor * double(router[std::size_t(p * n_sparse + j)]));
  }
};

// Perturbed fp32 copies of every tensor of a checkpoint, handed to qwen3next_model::from_tensors.
struct perturbed_weights {
  std::map<std::string, std::pair<std::vector<float>, tensor_view>> tensors;
  const tensor_view* find(const std::string& name) const {
    auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second.second;
  }
};

sensitivity measure_sensitivity(const std::string& dir, const std::vector<std::int32_t>& ids) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto files = std::make_shared<evident::engine::safetensors_dir>(dir);
  const model_config cfg = evident::engine::load_model_config(std::filesystem::path(dir) / "config.json");
  const std::int64_t n = std::int64_t(ids.size()), V = cfg.vocab_size;
  auto forward = [&](const qwen3next_model& m, routing_trace& trace) {
    std::vector<float> logits(std::size_t(n * V));
    sequence_memory mem = m.new_sequence();
    m.forward(mem, ids.data(), n, logits.data(), true, &trace);
    return logits;
  };
  routing_trace base_trace;
  const std::vector<float> base = forward(*qwen3next_model::load(dir), base_trace);
  sensitivity s;
  s.runs = kSensRuns;
  s.n_sparse = int(base_trace.records.size());
  s.logits.assign(std::size_t(n), 0);
  s.router.assign(std::size_t(n * s.n_sparse), 0);
  for (int run = 0; run < kSensRuns; ++run) {
    auto w = std::make_shared<perturbed_weights>();
    std::mt19937_64 rng(std::uint64_t(20261127 + run));
    std::uniform_real_distribution<double> noise(-kSensNoise, kSensNoise);
    for (const std::string& name : files->names()) {  // sorted: the same draws every time
      auto& slot = w->tensors[name];
      slot.first = evident::engine::to_f32(files->get(name));
      for (float& v : slot.first) v = float(double(v) * (1 + noise(rng)));
      slot.second = files->get(name);
      slot.second.dtype = st_dtype::f32;
      slot.second.dtype_name = "F32";
      slot.second.data = slot.first.data();
    }
    auto model = qwen3next_model::from_tensors(
        cfg, [w](const std::string& name) { return w->find(name); }, w, dir + " (perturbed)");
    routing_trace trace;
    const std::vector<float> got = forward(*model, trace);
    EXPECT_EQ(trace.records.size(), base_trace.records.size());
    for (std::int64_t p = 0; p < n; ++p) {
      bool flipped = false;
      for (int j = 0; j < s.n_sparse && !flipped; ++j) {
        const auto& a = base_trace.records[std::size_t(j)];
        const auto& b = trace.records[std::size_t(j)];
        const std::int64_t E = a.n_experts, k = a.top_k;
        float err = 0;
        for (std::int64_t e = 0; e < E; ++e)
          err = std::max(err, std::abs(b.logits[std::size_t(p * E + e)] - a.logits[std::size_t(p * E + e)]));
        float& r = s.router[std::size_t(p * s.n_sparse + j)];
        r = std::max(r, err);
        std::vector<std::int32_t> x(a.ids.begin() + p * k, a.ids.begin() + (p + 1) * k);
        std::vector<std::int32_t> y(b.ids.begin() + p * k, b.ids.begin() + (p + 1) * k);
        std::sort(x.begin(), x.end());
        std::sort(y.begin(), y.end());
        flipped = x != y;
      }
      if (!flipped)
        s.logits[std::size_t(p)] =
            std::max(s.logits[std::size_t(p)],
                     evident::test::rel_max_diff(got.data() + p * V, base.data() + p * V, std::size_t(V)));
    }
  }
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

// Measured once per fixture and process (the fixture tests and the negative tests share it).
const sensitivity& fixture_sensitivity(const std::string& dir, const std::vector<std::int32_t>& ids) {
  static std::map<std::string, sensitivity> cache;
  auto it = cache.find(dir);
  if (it == cache.end()) {
    it = cache.emplace(dir, measure_sensitivity(dir, ids)).first;
    const sensitivity& s = it->second;
    std::vector<double> v = s.logits;
    std::sort(v.begin(), v.end());
    const float rmax = s.router.empty() ? 0.f : *std::max_element(s.router.begin(), s.router.end());
    std::printf("%s: sensitivity, %d perturbed CPU runs in %.1f s: S_p median %.4f, p90 %.4f, max %.4f; R max %.4f\n",
                dir.c_str(), s.runs, s.seconds, v[v.size() / 2], v[v.size() * 9 / 10], v.back(), double(rmax));
  }
  return it->second;
}

// The verdict of the rule at the top over a set of rows; ok() when it holds. Kept apart from the EXPECTs so the
// negative tests can show that it fails for a broken engine. sens: null judges with the floors alone (kTolRef,
// kRouterErr).
struct routing_verdict {
  int rows = 0, spikes = 0, flips = 0;
  int unexplained = 0;     // rows above their logit bound without a routing flip at a near-tie at that position
  int flips_off_tie = 0;   // flips where the CPU margin is >= 2 * the router bound: not rounding, the routing is wrong
  int noisy_router = 0;    // rows whose router logits (up to the first flip) exceed their bound somewhere
  int by_sensitivity = 0;  // rows above kTolRef without a flip but within c * S_p
  double worst = 0, worst_unflipped = 0, router_err = 0;
  double worst_ratio = 0;  // max over rows without a flip of diff / logit bound
  std::string detail;      // one line per spike, flip or row outside the floors
  bool ok() const { return unexplained == 0 && flips_off_tie == 0 && noisy_router == 0; }
};

routing_verdict judge_rows(const std::vector<compared_row>& rows, const sensitivity* sens) {
  routing_verdict v;
  char line[768];
  for (const compared_row& r : rows) {
    const position_routing& q = r.routing;
    const std::int64_t p = r.position;
    const double tol = sens ? sens->logit_bound(p) : kTolRef;
    auto router_bound = [&](int j) { return sens ? sens->router_bound(p, j) : kRouterErr; };
    const int last = q.first_flip >= 0 ? q.first_flip : int(q.err.size()) - 1;
    bool noisy = false, tie = false;
    std::string layers;
    for (int j = 0; j < int(q.err.size()); ++j) {
      const double b = router_bound(j);
      if (j <= last) {
        v.router_err = std::max(v.router_err, double(q.err[std::size_t(j)]));
        noisy = noisy || q.err[std::size_t(j)] >= b;
      }
      if (j == q.first_flip) tie = q.margin[std::size_t(j)] < 2 * b;
      char buf[128];
      std::snprintf(buf, sizeof buf, " L%d err %.4f (bound %.3g) m %.4f%s", q.layer[std::size_t(j)],
                    double(q.err[std::size_t(j)]), b, double(q.margin[std::size_t(j)]),
                    q.flip[std::size_t(j)] ? " flip" : "");
      layers += buf;
    }
    const bool flip = q.first_flip >= 0, spike = r.diff >= kTolRef;
    const bool unexplained = r.diff >= tol && !(flip && tie);
    ++v.rows;
    v.spikes += spike ? 1 : 0;
    v.flips += flip ? 1 : 0;
    v.worst = std::max(v.worst, r.diff);
    v.noisy_router += noisy ? 1 : 0;
    v.flips_off_tie += flip && !tie ? 1 : 0;
    v.unexplained += unexplained ? 1 : 0;
    if (!flip) {
      v.worst_unflipped = std::max(v.worst_unflipped, r.diff);
      v.worst_ratio = std::max(v.worst_ratio, r.diff / tol);
      v.by_sensitivity += spike && !unexplained ? 1 : 0;
    }
    if (spike || flip || noisy || (sens && sens->logits[std::size_t(p)] * kSensFactor > kTolRef)) {
      char sp[32] = "not measured";
      if (sens) std::snprintf(sp, sizeof sp, "%.4f", sens->logits[std::size_t(p)]);
      std::snprintf(line, sizeof line, "  position %3lld: diff %.4f, bound %.4f (S_p %s), first flip layer %d;%s%s\n",
                    static_cast<long long>(p), r.diff, tol, sp, q.first_flip_layer, layers.c_str(),
                    unexplained      ? "  <-- above its bound without a flip at a near-tie"
                    : flip && !tie   ? "  <-- flip at a non-tie"
                    : noisy          ? "  <-- router error above its bound"
                    : spike && !flip ? "  (within c * S_p)"
                                     : "");
      v.detail += line;
    }
  }
  return v;
}

std::string verdict_summary(const routing_verdict& v, const sensitivity* sens) {
  char buf[640];
  std::snprintf(buf, sizeof buf,
                "%d rows: worst %.3g, worst without a flip %.3g (%.2f of its bound); %d above %.2g, %d of them "
                "within c * S_p, %d routing flips, max router-logit err %.4g; unexplained %d, flips at non-ties %d, "
                "router err above bound %d [%s]",
                v.rows, v.worst, v.worst_unflipped, v.worst_ratio, v.spikes, kTolRef, v.by_sensitivity, v.flips,
                v.router_err, v.unexplained, v.flips_off_tie, v.noisy_router,
                sens ? "bounds max(floor, c * sensitivity)" : "floors only");
  return buf;
}

// The CPU engine's routing over the whole sequence, one forward() call.
routing_trace cpu_routing(const qwen3next_model& cpu, const std::vector<std::int32_t>& ids) {
  routing_trace trace;
  sequence_memory mem = cpu.new_sequence();
  cpu.forward(mem, ids.data(), std::int64_t(ids.size()), nullptr, false, &trace);
  return trace;
}

// One-shot prefill of `ids` on `gpu`, every stored position compared with the transformers logits and its routing
// with the CPU engine's.
std::vector<compared_row> prefill_rows(cuda_model& gpu, const std::vector<std::int32_t>& ids,
                                       const evident::test::qwen3next_reference& ref, const routing_trace& cpu) {
  const std::int64_t V = gpu.vocab_size(), n = std::int64_t(ids.size());
  auto adm = gpu.open_sequence(n);
  EXPECT_TRUE(adm.ok()) << adm.reason;
  std::vector<float> logits(std::size_t(n * V));
  step_entry e{adm.slot, ids.data(), int(n), 0, true};
  const auto plan = gpu.step({e}, logits.data());
  EXPECT_EQ(plan.n_logit_rows, n);
  const cuda_routing routing = gpu.read_routing();
  EXPECT_EQ(routing.n_tokens, n);
  std::vector<compared_row> rows;
  for (std::size_t i = 0; i < ref.positions.size(); ++i) {
    compared_row r;
    r.position = ref.positions[i];
    r.diff = evident::test::rel_max_diff(logits.data() + r.position * V, ref.logits.data() + i * V, std::size_t(V));
    r.routing = compare_routing(cpu, r.position, routing, int(r.position));
    rows.push_back(r);
  }
  gpu.close_sequence(adm.slot);
  return rows;
}

// Param: fixture name, and whether to force engine/cuda's generic kernels (the MoE then runs moe_generic instead
// of kernels/' grouped GEMMs; attention and the delta rule are generic at these head shapes either way).
class cuda_fixture : public ::testing::TestWithParam<std::tuple<const char*, bool>> {
 protected:
  void SetUp() override {
    EV_REQUIRE_CUDA();
    name_ = std::get<0>(GetParam());
    if (std::get<1>(GetParam())) name_ += " (generic)";
    dir_ = evident::test::source_path(std::string("tests/fixtures/") + std::get<0>(GetParam())).string();
    ref_ = evident::test::load_reference(dir_);
    cuda_model_options o = small_options();
    o.use_generic_kernels = std::get<1>(GetParam());
    o.record_routing = true;
    model_ = cuda_model::load(dir_, o);
    std::printf("%s: %s\n", name_.c_str(), model_->kernel_report().c_str());
    ASSERT_EQ(ref_.vocab, model_->vocab_size());
    ids_ = ref_.prompt;
    ids_.insert(ids_.end(), ref_.generated.begin(), ref_.generated.end());
    cpu_trace_ = cpu_routing(*qwen3next_model::load(dir_), ids_);
  }
  // The rule at the top, as EXPECTs; prints the verdict and every spike / flip. The floors are tried first: the
  // sensitivity only raises bounds, so it is measured (once per fixture) only where the floors do not hold.
  void check_rows(const std::vector<compared_row>& rows, const char* what) {
    const sensitivity* sens = nullptr;
    routing_verdict v = judge_rows(rows, nullptr);
    if (!v.ok()) {
      std::printf("%s: %s: %s\n", name_.c_str(), what, verdict_summary(v, nullptr).c_str());
      sens = &fixture_sensitivity(dir_, ids_);
      v = judge_rows(rows, sens);
    }
    std::printf("%s: %s: %s\n%s", name_.c_str(), what, verdict_summary(v, sens).c_str(), v.detail.c_str());
    EXPECT_EQ(v.unexplained, 0) << name_ << " " << what
                                << ": rows above max(kTolRef, c * S_p) without a routing flip at a near-tie:\n"
                                << v.detail;
    EXPECT_EQ(v.flips_off_tie, 0) << name_ << " " << what << ": routing flips at non-ties:\n" << v.detail;
    EXPECT_EQ(v.noisy_router, 0) << name_ << " " << what << ": router logits off by more than bf16 noise:\n"
                                 << v.detail;
  }
  std::string name_, dir_;
  std::unique_ptr<cuda_model> model_;
  evident::test::qwen3next_reference ref_;
  std::vector<std::int32_t> ids_;  // prompt + generated
  routing_trace cpu_trace_;        // the CPU engine's routing over ids_
};

TEST_P(cuda_fixture, logits_match_transformers) {
  check_rows(prefill_rows(*model_, ids_, ref_, cpu_trace_), "one-shot prefill logits");
}

TEST_P(cuda_fixture, greedy_decode_matches_transformers) {
  const std::int64_t V = model_->vocab_size(), P = std::int64_t(ref_.prompt.size());
  auto adm = model_->open_sequence();
  ASSERT_TRUE(adm.ok()) << adm.reason;
  std::vector<float> logits(static_cast<std::size_t>(V));
  model_->step({{adm.slot, ref_.prompt.data(), int(P), 0, false}}, logits.data());
  cuda_routing routing = model_->read_routing();  // of the step whose last token gave `logits`
  int routing_row = int(P - 1);
  std::int64_t pos = P;
  std::vector<compared_row> rows;
  int equal = 0;
  for (std::size_t t = 0; t < ref_.generated.size(); ++t) {
    const int got = argmax(logits.data(), V);
    equal += got == ref_.generated[t] ? 1 : 0;
    EXPECT_EQ(got, ref_.generated[t]) << name_ << " generated token " << t;
    if (!ref_.decode_logits.empty()) {
      compared_row r;
      r.position = pos - 1;
      r.diff = evident::test::rel_max_diff(logits.data(), ref_.decode_logits.data() + t * V, std::size_t(V));
      r.routing = compare_routing(cpu_trace_, r.position, routing, routing_row);
      rows.push_back(r);
    }
    model_->step({{adm.slot, &ref_.generated[t], 1, pos++, false}}, logits.data());
    routing = model_->read_routing();
    routing_row = 0;
  }
  std::printf("%s: decode, %d/%zu greedy tokens equal\n", name_.c_str(), equal, ref_.generated.size());
  if (!rows.empty()) check_rows(rows, "decode-step logits");
}

// The rule can fail: two engines broken on purpose, on tiny-a (top-2 of 8, renormalised), judged against the
// correct CPU engine and the transformers logits.
//   - wrong renormalisation (norm_topk_prob off): the same experts are chosen (no new flips) but every routed
//     contribution is scaled by p_1 + p_2 (~0.3-0.5 here), so rows spike where there is no flip: "unexplained".
//   - the router rows of experts 0 and 1 swapped in layer 0: tokens go to the other expert wherever one of the two
//     is chosen and the other is not, with no near-tie: "flips at non-ties", and router errors far above bf16.
class routing_check_negative : public ::testing::Test {
 protected:
  void SetUp() override {
    EV_REQUIRE_CUDA();
    dir_ = evident::test::source_path("tests/fixtures/tiny-a").string();
    ref_ = evident::test::load_reference(dir_);
    ids_ = ref_.prompt;
    ids_.insert(ids_.end(), ref_.generated.begin(), ref_.generated.end());
    cpu_trace_ = cpu_routing(*qwen3next_model::load(dir_), ids_);
    files_ = std::make_unique<evident::engine::safetensors_dir>(dir_);
    cfg_ = evident::engine::load_model_config(std::filesystem::path(dir_) / "config.json");
    ASSERT_TRUE(cfg_.norm_topk_prob);
    ASSERT_LT(cfg_.num_experts_per_tok, cfg_.num_experts);
    ASSERT_TRUE(cfg_.is_moe_layer(0));
  }
  routing_verdict run(const model_config& cfg, const evident::engine::tensor_lookup& lookup, const char* what) {
    cuda_model_options o = small_options();
    o.record_routing = true;
    auto gpu = cuda_model::from_tensors(cfg, lookup, o, std::string("tiny-a, ") + what);
    // Judged with the sensitivity bounds (the loosest form of the rule).
    const sensitivity& sens = fixture_sensitivity(dir_, ids_);
    const routing_verdict v = judge_rows(prefill_rows(*gpu, ids_, ref_, cpu_trace_), &sens);
    std::printf("tiny-a, %s: %s\n", what, verdict_summary(v, &sens).c_str());
    return v;
  }
  std::string dir_;
  evident::test::qwen3next_reference ref_;
  std::vector<std::int32_t> ids_;
  routing_trace cpu_trace_;
  std::unique_ptr<evident::engine::safetensors_dir> files_;
  model_config cfg_;
};

TEST_F(routing_check_negative, wrong_renormalisation_fails_the_check) {
  const auto* f = files_.get();
  model_config cfg = cfg_;
  cfg.norm_topk_prob = false;
  const routing_verdict v = run(
      cfg, [f](const std::string& n) { return f->has(n) ? &f->get(n) : nullptr; }, "no renormalisation");
  EXPECT_FALSE(v.ok());
  EXPECT_GT(v.unexplained, 0);
}

TEST_F(routing_check_negative, swapped_router_rows_fail_the_check) {
  const tensor_view& r = files_->get("model.layers.0.mlp.gate.weight");
  ASSERT_EQ(r.dtype, st_dtype::bf16);
  const std::int64_t H = r.shape.at(1);
  std::vector<std::uint16_t> rows(std::size_t(r.numel()));
  std::memcpy(rows.data(), r.data, rows.size() * 2);
  std::swap_ranges(rows.begin(), rows.begin() + H, rows.begin() + H);
  tensor_view swapped = r;
  swapped.data = rows.data();
  const auto* f = files_.get();
  const routing_verdict v = run(
      cfg_,
      [f, &swapped](const std::string& n) -> const tensor_view* {
        if (n == swapped.name) return &swapped;
        return f->has(n) ? &f->get(n) : nullptr;
      },
      "router rows 0/1 swapped in layer 0");
  EXPECT_FALSE(v.ok());
  EXPECT_GT(v.flips_off_tie, 0);
  EXPECT_GT(v.noisy_router, 0);
}

INSTANTIATE_TEST_SUITE_P(fixtures, cuda_fixture,
                         ::testing::Combine(::testing::Values("tiny-a", "tiny-b", "tiny-vocab"), ::testing::Bool()),
                         [](const auto& info) {
                           std::string s = std::get<0>(info.param);
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s + (std::get<1>(info.param) ? "_generic" : "_fast");
                         });

// ---------------------------------------------------------------------------------------------------------------------
// 2./3. A random model with the real head shapes, in memory (bf16), shared by the CPU and the CUDA engine.

struct random_checkpoint {
  model_config cfg;
  std::map<std::string, std::pair<std::vector<std::uint16_t>, tensor_view>> tensors;

  const tensor_view* find(const std::string& name) const {
    auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second.second;
  }
  void add(const std::string& name, std::vector<std::int64_t> shape, std::mt19937& rng, float scale, float mean = 0) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    auto& slot = tensors[name];
    std::normal_distribution<float> nd(0.f, 1.f);
    slot.first.resize(std::size_t(n));
    for (auto& v : slot.first) v = evident::kernels::float_to_bf16(mean + scale * nd(rng)).bits;
    slot.second.name = name;
    slot.second.dtype = st_dtype::bf16;
    slot.second.dtype_name = "BF16";
    slot.second.shape = shape;
  }
  void finish() {
    for (auto& [name, t] : tensors) t.second.data = t.first.data();
  }
};

std::shared_ptr<random_checkpoint> make_real_heads_checkpoint() {
  auto ck = std::make_shared<random_checkpoint>();
  ck->cfg = evident::engine::parse_model_config(R"({
    "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next",
    "vocab_size": 512, "hidden_size": 128, "intermediate_size": 192, "num_hidden_layers": 4,
    "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
    "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
    "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4,
    "num_experts": 8, "num_experts_per_tok": 8, "moe_intermediate_size": 64,
    "shared_expert_intermediate_size": 96, "norm_topk_prob": true, "decoder_sparse_step": 1,
    "mlp_only_layers": [1], "tie_word_embeddings": false,
    "layer_types": ["linear_attention", "linear_attention", "full_attention", "linear_attention"],
    "rope_theta": 10000000.0, "partial_rotary_factor": 0.25, "rms_norm_eps": 1e-6
  })",
                                                "real-heads");
  const model_config& c = ck->cfg;
  std::mt19937 rng(20261127);
  const std::int64_t H = c.hidden_size;
  auto lin = [&](const std::string& n, std::int64_t rows, std::int64_t cols, float gain = 1.f) {
    ck->add(n, {rows, cols}, rng, gain / std::sqrt(float(cols)));
  };
  lin("model.embed_tokens.weight", c.vocab_size, H, 8.f);
  lin("lm_head.weight", c.vocab_size, H, 2.f);
  ck->add("model.norm.weight", {H}, rng, 0.1f);
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ck->add(p + "input_layernorm.weight", {H}, rng, 0.1f);
    ck->add(p + "post_attention_layernorm.weight", {H}, rng, 0.1f);
    if (c.layer_types[std::size_t(l)] == evident::engine::layer_kind::full_attention) {
      const std::int64_t hd = c.head_dim;
      lin(p + "self_attn.q_proj.weight", c.num_attention_heads * hd * 2, H);
      lin(p + "self_attn.k_proj.weight", c.num_key_value_heads * hd, H);
      lin(p + "self_attn.v_proj.weight", c.num_key_value_heads * hd, H);
      lin(p + "self_attn.o_proj.weight", H, c.num_attention_heads * hd);
      ck->add(p + "self_attn.q_norm.weight", {hd}, rng, 0.1f);
      ck->add(p + "self_attn.k_norm.weight", {hd}, rng, 0.1f);
    } else {
      const std::int64_t kd = c.linear_key_dim(), vd = c.linear_value_dim(), nv = c.linear_num_value_heads;
      lin(p + "linear_attn.in_proj_qkvz.weight", 2 * kd + 2 * vd, H);
      lin(p + "linear_attn.in_proj_ba.weight", 2 * nv, H);
      lin(p + "linear_attn.out_proj.weight", H, vd);
      ck->add(p + "linear_attn.conv1d.weight", {c.linear_conv_dim(), 1, c.linear_conv_kernel_dim}, rng, 0.5f);
      ck->add(p + "linear_attn.A_log", {nv}, rng, 0.5f, 0.5f);
      ck->add(p + "linear_attn.dt_bias", {nv}, rng, 0.5f);
      ck->add(p + "linear_attn.norm.weight", {c.linear_value_head_dim}, rng, 0.1f, 1.f);
    }
    if (c.is_moe_layer(l)) {
      const std::int64_t E = c.num_experts, I = c.moe_intermediate_size, S = c.shared_expert_intermediate_size;
      lin(p + "mlp.gate.weight", E, H, 4.f);
      for (std::int64_t e = 0; e < E; ++e) {
        const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
        lin(q + "gate_proj.weight", I, H);
        lin(q + "up_proj.weight", I, H);
        lin(q + "down_proj.weight", H, I);
      }
      lin(p + "mlp.shared_expert.gate_proj.weight", S, H);
      lin(p + "mlp.shared_expert.up_proj.weight", S, H);
      lin(p + "mlp.shared_expert.down_proj.weight", H, S);
      lin(p + "mlp.shared_expert_gate.weight", 1, H);
    } else {
      lin(p + "mlp.gate_proj.weight", c.intermediate_size, H);
      lin(p + "mlp.up_proj.weight", c.intermediate_size, H);
      lin(p + "mlp.down_proj.weight", H, c.intermediate_size);
    }
  }
  ck->finish();
  return ck;
}

class real_heads : public ::testing::TestWithParam<bool> {  // param: force engine/cuda's generic kernels
 protected:
  void SetUp() override {
    EV_REQUIRE_CUDA();
    ck_ = make_real_heads_checkpoint();
    auto lookup = [ck = ck_](const std::string& n) { return ck->find(n); };
    cpu_ = qwen3next_model::from_tensors(ck_->cfg, lookup, ck_, "real-heads");
    cuda_model_options o = small_options();
    o.use_generic_kernels = GetParam();
    gpu_ = cuda_model::from_tensors(ck_->cfg, lookup, o, "real-heads");
    std::printf("real-heads: %s\n", gpu_->kernel_report().c_str());
  }
  std::shared_ptr<random_checkpoint> ck_;
  std::unique_ptr<qwen3next_model> cpu_;
  std::unique_ptr<cuda_model> gpu_;
};

TEST_P(real_heads, mixed_batch_of_8_matches_cpu_engine) {
  const std::int64_t V = gpu_->vocab_size();
  std::mt19937 rng(5);
  const std::vector<int> prompt_len = {1, 7, 64, 65, 100, 130, 203, 33};
  const int n_decode = 6, max_chunk = 48;
  struct seq {
    std::vector<std::int32_t> ids;  // prompt + decode tokens
    std::vector<int> pieces;        // sizes fed step by step
    std::size_t next = 0;
    std::int64_t pos = 0;
    int slot = -1, start_step = 0;
    sequence_memory mem;
  };
  std::vector<seq> seqs(prompt_len.size());
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    seq& s = seqs[i];
    for (int t = 0; t < prompt_len[i] + n_decode; ++t) s.ids.push_back(int(rng() % std::uint32_t(V)));
    for (int left = prompt_len[i]; left > 0; left -= max_chunk) s.pieces.push_back(std::min(left, max_chunk));
    for (int t = 0; t < n_decode; ++t) s.pieces.push_back(1);
    s.start_step = int(i % 3);
    s.mem = cpu_->new_sequence();
    auto adm = gpu_->open_sequence(std::int64_t(s.ids.size()));
    ASSERT_TRUE(adm.ok()) << adm.reason;
    s.slot = adm.slot;
  }
  double worst = 0;
  int compared = 0, agree = 0, mixed_steps = 0;
  std::vector<float> gpu_logits, cpu_logits(static_cast<std::size_t>(V));
  for (int step = 0;; ++step) {
    std::vector<step_entry> batch;
    std::vector<std::size_t> who;
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      seq& s = seqs[i];
      if (step < s.start_step || s.next >= s.pieces.size()) continue;
      batch.push_back({s.slot, s.ids.data() + s.pos, s.pieces[s.next], s.pos, false});
      who.push_back(i);
    }
    if (batch.empty()) break;
    bool has_pre = false, has_dec = false;
    for (const auto& e : batch) (e.n_tokens > 1 ? has_pre : has_dec) = true;
    mixed_steps += has_pre && has_dec ? 1 : 0;
    gpu_logits.resize(batch.size() * std::size_t(V));
    const auto plan = gpu_->step(batch, gpu_logits.data());
    for (std::size_t j = 0; j < batch.size(); ++j) {
      seq& s = seqs[who[j]];
      cpu_->forward(s.mem, batch[j].ids, batch[j].n_tokens, cpu_logits.data());
      const float* g = gpu_logits.data() + std::size_t(plan.logit_row[j]) * std::size_t(V);
      const double d = evident::test::rel_max_diff(g, cpu_logits.data(), std::size_t(V));
      worst = std::max(worst, d);
      ++compared;
      agree += argmax(g, V) == argmax(cpu_logits.data(), V) ? 1 : 0;
      EXPECT_LT(d, GetParam() ? kTolRef : kTolFast)
          << "step " << step << " sequence " << who[j] << " piece of " << batch[j].n_tokens << " at " << batch[j].start;
      s.pos += batch[j].n_tokens;
      ++s.next;
      EXPECT_EQ(gpu_->sequence_length(s.slot), s.pos);
    }
  }
  EXPECT_GT(mixed_steps, 2);
  std::printf("real-heads%s: %d entries compared with the CPU engine, worst %.3g, argmax agree %d/%d, %d mixed steps\n",
              GetParam() ? " (generic kernels)" : "", compared, worst, agree, compared, mixed_steps);
  for (const seq& s : seqs) gpu_->close_sequence(s.slot);
  EXPECT_EQ(gpu_->slots().n_open(), 0);
  EXPECT_EQ(gpu_->slots().n_free_blocks(), gpu_->slots().n_blocks());
}

TEST_P(real_heads, chunked_prefill_equals_one_shot) {
  const std::int64_t V = gpu_->vocab_size();
  std::mt19937 rng(11);
  const int n = 230;
  std::vector<std::int32_t> ids(n);
  for (auto& v : ids) v = int(rng() % std::uint32_t(V));
  std::vector<float> whole(std::size_t(n) * std::size_t(V)), parts(whole.size());
  auto a = gpu_->open_sequence(n);
  ASSERT_TRUE(a.ok()) << a.reason;
  // Rows limited by max_logit_rows (256): 230 fits in one step.
  gpu_->step({{a.slot, ids.data(), n, 0, true}}, whole.data());
  auto b = gpu_->open_sequence(n);
  ASSERT_TRUE(b.ok()) << b.reason;
  int pos = 0;
  for (int len : {64, 1, 65, 3, n - 133}) {
    gpu_->step({{b.slot, ids.data() + pos, len, pos, true}}, parts.data() + std::size_t(pos) * std::size_t(V));
    pos += len;
  }
  ASSERT_EQ(pos, n);
  double worst = 0;
  for (int t = 0; t < n; ++t) {
    const double d = evident::test::rel_max_diff(parts.data() + std::size_t(t) * std::size_t(V),
                                                 whole.data() + std::size_t(t) * std::size_t(V), std::size_t(V));
    worst = std::max(worst, d);
    EXPECT_LT(d, kTolGpu) << "position " << t;
  }
  std::printf("real-heads%s: chunked vs one-shot prefill, worst %.3g\n", GetParam() ? " (generic kernels)" : "", worst);
  gpu_->close_sequence(a.slot);
  gpu_->close_sequence(b.slot);
}

// Decode padded to a bucket (the CUDA-graph path) gives the unpadded logits, and a captured graph replays it.
TEST_P(real_heads, padded_decode_and_graph_replay_equal_eager) {
  const std::int64_t V = gpu_->vocab_size();
  std::vector<int> slots;
  std::vector<std::int32_t> prompt(40);
  for (int i = 0; i < 40; ++i) prompt[std::size_t(i)] = (i * 37 + 5) % int(V);
  for (int s = 0; s < 3; ++s) {
    auto a = gpu_->open_sequence();
    ASSERT_TRUE(a.ok());
    slots.push_back(a.slot);
    gpu_->step({{a.slot, prompt.data(), 20 + 7 * s, 0, false}}, nullptr);
  }
  // Twin sequences with the same history: one decodes eagerly (unpadded), the other through the padded path. Batch
  // shapes differ (3 vs 8 rows: cuBLAS and the split count may pick other summation orders), so kTolGpu.
  std::vector<int> twins;
  for (int s = 0; s < 3; ++s) {
    auto a = gpu_->open_sequence();
    ASSERT_TRUE(a.ok());
    twins.push_back(a.slot);
    gpu_->step({{a.slot, prompt.data(), 20 + 7 * s, 0, false}}, nullptr);
  }
  const std::int32_t tok[3] = {3, 4, 5};
  std::vector<step_entry> eager, padded;
  for (int s = 0; s < 3; ++s) {
    eager.push_back({slots[std::size_t(s)], &tok[s], 1, 20 + 7 * s, false});
    padded.push_back({twins[std::size_t(s)], &tok[s], 1, 20 + 7 * s, false});
  }
  std::vector<float> le(3 * std::size_t(V)), lp(8 * std::size_t(V));
  gpu_->step(eager, le.data());
  const auto plan = gpu_->prepare(padded, 8);
  EXPECT_TRUE(plan.graph_safe);
  gpu_->launch();
  gpu_->read_logits(lp.data());
  for (int s = 0; s < 3; ++s)
    EXPECT_LT(evident::test::rel_max_diff(lp.data() + std::size_t(plan.logit_row[std::size_t(s)]) * std::size_t(V),
                                          le.data() + std::size_t(s) * std::size_t(V), std::size_t(V)),
              kTolGpu)
        << "padded entry " << s;
  // Capture the next padded decode step in a graph, then replay it for the step after (same bucket).
  auto st = reinterpret_cast<cudaStream_t>(gpu_->stream());
  const std::int32_t tok2[3] = {6, 7, 8}, tok3[3] = {9, 10, 11};
  for (int s = 0; s < 3; ++s) {
    eager[std::size_t(s)] = {slots[std::size_t(s)], &tok2[s], 1, 21 + 7 * s, false};
    padded[std::size_t(s)] = {twins[std::size_t(s)], &tok2[s], 1, 21 + 7 * s, false};
  }
  gpu_->step(eager, le.data());
  gpu_->prepare(padded, 8);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  try {
    gpu_->launch();
  } catch (const evident::error& e) {
    cudaStreamEndCapture(st, &graph);
    FAIL() << "launch under capture: " << e.what();
  }
  ASSERT_EQ(cudaStreamEndCapture(st, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, st), cudaSuccess);  // runs the captured step (tokens tok2)
  gpu_->read_logits(lp.data());
  for (int s = 0; s < 3; ++s)
    EXPECT_LT(evident::test::rel_max_diff(lp.data() + std::size_t(s) * std::size_t(V),
                                          le.data() + std::size_t(s) * std::size_t(V), std::size_t(V)),
              kTolGpu)
        << "graph step 1 entry " << s;
  for (int s = 0; s < 3; ++s) {
    eager[std::size_t(s)] = {slots[std::size_t(s)], &tok3[s], 1, 22 + 7 * s, false};
    padded[std::size_t(s)] = {twins[std::size_t(s)], &tok3[s], 1, 22 + 7 * s, false};
  }
  gpu_->step(eager, le.data());
  gpu_->prepare(padded, 8);  // new metadata into the same staging; the graph's copy picks it up
  ASSERT_EQ(cudaGraphLaunch(exec, st), cudaSuccess);
  gpu_->read_logits(lp.data());
  for (int s = 0; s < 3; ++s)
    EXPECT_LT(evident::test::rel_max_diff(lp.data() + std::size_t(s) * std::size_t(V),
                                          le.data() + std::size_t(s) * std::size_t(V), std::size_t(V)),
              kTolGpu)
        << "graph replay entry " << s;
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

INSTANTIATE_TEST_SUITE_P(kernels, real_heads, ::testing::Values(false, true),
                         [](const auto& info) { return std::string(info.param ? "generic" : "fast"); });

// ---------------------------------------------------------------------------------------------------------------------
// 4. No room: clear errors and refusals, never a crash.

TEST(cuda_model_limits, out_of_memory_and_admission_answer_with_reasons) {
  EV_REQUIRE_CUDA();
  auto ck = make_real_heads_checkpoint();
  auto lookup = [ck](const std::string& n) { return ck->find(n); };
  cuda_model_options o = small_options();
  o.kv_blocks = std::int64_t(1) << 28;  // ~ 4 TB of KV cache
  try {
    cuda_model::from_tensors(ck->cfg, lookup, o, "real-heads");
    ADD_FAILURE() << "an impossible KV cache was accepted";
  } catch (const evident::error& e) {
    EXPECT_EQ(e.kind(), evident::error_kind::resource);
    EXPECT_NE(std::string(e.what()).find("KV cache"), std::string::npos) << e.what();
    std::printf("load refusal: %s\n", e.what());
  }
  o = small_options();
  o.max_step_tokens = 1 << 26;  // activation buffers far beyond any card
  o.max_step_entries = 16;
  EXPECT_THROW(cuda_model::from_tensors(ck->cfg, lookup, o, "real-heads"), evident::error);

  o = small_options();
  o.max_sequences = 2;
  o.kv_blocks = 4;  // 64 positions in all
  auto m = cuda_model::from_tensors(ck->cfg, lookup, o, "real-heads");
  auto a = m->open_sequence(40);
  ASSERT_TRUE(a.ok()) << a.reason;
  auto b = m->open_sequence(100);
  EXPECT_FALSE(b.ok());
  EXPECT_NE(b.reason.find("KV blocks"), std::string::npos) << b.reason;
  b = m->open_sequence();
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(m->open_sequence().ok());
  std::vector<std::int32_t> ids(80, 1);
  m->step({{a.slot, ids.data(), 40, 0, false}}, nullptr);
  // b wants 40 positions but only 24 are left: refused with a reason, nothing changes.
  const std::string why = m->can_step({{b.slot, ids.data(), 40, 0, false}});
  EXPECT_NE(why.find("KV blocks"), std::string::npos) << why;
  try {
    m->step({{b.slot, ids.data(), 40, 0, false}}, nullptr);
    ADD_FAILURE() << "step beyond the KV cache ran";
  } catch (const evident::error& e) {
    EXPECT_EQ(e.kind(), evident::error_kind::resource);
  }
  EXPECT_EQ(m->sequence_length(b.slot), 0);
  // Bad entries are invalid_input.
  EXPECT_NE(m->can_step({{a.slot, ids.data(), 1, 7, false}}).find("start"), std::string::npos);
  const std::int32_t bad = 100000;
  EXPECT_NE(m->can_step({{a.slot, &bad, 1, 40, false}}).find("out of range"), std::string::npos);
  EXPECT_NE(m->can_step({{a.slot, ids.data(), 1, 40, false}, {a.slot, ids.data(), 1, 40, false}}).find("twice"),
            std::string::npos);
  // After closing a, b fits.
  m->close_sequence(a.slot);
  EXPECT_EQ(m->can_step({{b.slot, ids.data(), 40, 0, false}}), "");
}

}  // namespace
