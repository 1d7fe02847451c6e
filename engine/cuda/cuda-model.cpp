// The batched Qwen3-Next forward on one GPU (contracts in cuda-model.h).
//
// Load: a planning pass lays out every device allocation (weights, states, step buffers) in three arenas and
// checks the total against cudaMemGetInfo before anything is allocated; then the weights are converted to bf16 and
// uploaded tensor by tensor (the host never holds a converted copy of the whole model).
//
// A step packs its entries internally as [decode entries (1 token) | prefill entries], whatever the caller's order:
// the decode prefix runs the decode kernels (conv1d_update, recurrent gated delta rule, split-KV decode attention),
// the prefill suffix the prompt kernels (conv1d_forward, chunked gated delta rule, prefill attention). Logit rows are
// returned in the caller's order.
#include "engine/cuda/cuda-model.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <unordered_map>

#include "engine/base/error.h"
#include "engine/cuda/cuda-call.h"
#include "engine/cuda/model-kernels.h"
#include "kernels/attention.h"
#include "kernels/conv1d.h"
#include "kernels/embedding.h"
#include "kernels/gated-delta-rule.h"
#include "kernels/gemm.h"
#include "kernels/moe.h"
#include "kernels/norm.h"

namespace evident::engine {

namespace {

using kernels::bf16;

#define EV_CUDA_CALL(call) EV_CUDA_THROW("cuda_model", call)

void ok(const kernels::status& s, const char* what) {
  EV_THROW_IF_NOT_KIND(s.ok(), internal, "cuda_model: ", what, ": ", kernels::to_string(s.code), ": ", s.message);
}

std::string gib(std::size_t bytes) {
  std::ostringstream os;
  os.precision(3);
  os << static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0) << " GiB";
  return os.str();
}

constexpr std::size_t kAlign = 256;
// Steps of at most this many tokens run the sparse-MoE block through cuda_ops::moe_decode (two launches) instead of
// the shared-expert GEMMs + permute + grouped GEMMs + combine (eight).
constexpr int kDecodeMoeTokens = 8;
// Steps of more than this many tokens keep the routed experts' down-projection outputs in bf16 (see ffn_layer).
constexpr int kBf16ExpertOutTokens = 64;
std::size_t align_up(std::size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// A bump layout of one device allocation: offsets first (planning), the base pointer later.
struct arena {
  std::size_t size = 0;
  char* base = nullptr;
  std::size_t take(std::size_t bytes) {
    const std::size_t off = size;
    size += align_up(std::max<std::size_t>(bytes, 1));
    return off;
  }
  template <typename T>
  T* at(std::size_t off) const {
    return reinterpret_cast<T*>(base + off);
  }
  ~arena() {
    if (base) cudaFree(base);
  }
};

// One piece of a weight to upload: n elements of tensor t starting at element src, to arena offset dst (+ element
// index dst_elem) as bf16 or fp32.
struct upload_job {
  const tensor_view* t = nullptr;
  std::int64_t src = 0, n = 0;
  std::size_t dst = 0;
  std::int64_t dst_elem = 0;
  bool fp32 = false;
};

float elem_f32(const tensor_view& t, std::int64_t i) {
  switch (t.dtype) {
    case st_dtype::f32: {
      float f;
      std::memcpy(&f, static_cast<const char*>(t.data) + i * 4, 4);
      return f;
    }
    case st_dtype::f16: {
      std::uint16_t h;
      std::memcpy(&h, static_cast<const char*>(t.data) + i * 2, 2);
      return half_to_float(h);
    }
    case st_dtype::bf16: {
      bf16 b;
      std::memcpy(&b.bits, static_cast<const char*>(t.data) + i * 2, 2);
      return kernels::bf16_to_float(b);
    }
    default:
      EV_THROW(internal, "unreachable dtype");
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------------

struct cuda_model::impl {
  model_config cfg;
  cuda_model_options opt;
  std::string origin;

  // ---- shapes ----
  std::int64_t H = 0, V = 0;
  int nh = 0, nkv = 0, hd = 0, rd = 0;                  // attention
  int nk = 0, nv = 0, dk = 0, dv = 0, K = 0;            // deltanet
  std::int64_t kd = 0, vd = 0, cd = 0, P_gdn = 0, P_attn = 0;
  int E = 0, topk = 0, I_moe = 0, S_sh = 0, I_dense = 0;
  int n_linear = 0, n_full = 0;
  int n_slots_state = 0;  // max_sequences + 1 (scratch)
  int max_blocks = 0;     // per sequence
  std::int64_t kv_blocks = 0;
  bool attn_fast = false, gdn_fast = false, moe_grouped = false, attn_prefill_fast = false;

  // ---- device memory ----
  arena w;       // weights
  arena s;       // KV cache + DeltaNet states
  arena b;       // step buffers
  struct layer {
    layer_kind kind = layer_kind::linear_attention;
    int state_index = 0;  // index among linear layers or among full layers
    std::size_t in_norm = 0, post_norm = 0;
    std::size_t w_qkv = 0, w_o = 0, q_norm = 0, k_norm = 0;               // attention
    std::size_t w_in = 0, w_out = 0, conv_w = 0, a_log = 0, dt_bias = 0, gnorm = 0;  // deltanet (a_log/dt fp32)
    bool moe = false;
    int moe_index = -1;  // among sparse-MoE layers (routing records)
    std::size_t w_gu = 0, w_down = 0;                                    // dense MLP or shared expert
    std::size_t w_sgate = 0, w_router = 0, e_gu = 0, e_down = 0;          // MoE
    bool has_shared = false;
  };
  std::vector<layer> layers;
  std::size_t embed = 0, lm_head = 0, final_norm = 0, inv_freq = 0;
  std::vector<upload_job> jobs;
  std::vector<float> inv_freq_host;

  // states
  std::size_t kcache0 = 0, vcache0 = 0, kv_layer_bytes = 0;  // per full layer: k at kcache0 + i*kv_layer_bytes
  std::size_t conv0 = 0, rec0 = 0;
  std::int64_t conv_slot_elems = 0, rec_slot_elems = 0;

  // step buffers
  std::size_t res = 0, xn = 0, mo = 0, proj = 0, core = 0, gn = 0, conv_out = 0, gbuf = 0, betabuf = 0;
  std::size_t zc = 0;  // z gathered to contiguous rows: only where z can't be read in place (z_in_place false)
  bool z_in_place = true;  // the gated norm reads z from the projection (8-byte aligned rows)
  std::size_t hbuf = 0, rlogits = 0, rids = 0, rweights = 0, eh = 0, sh_h = 0, sh_out = 0, sg = 0, xg = 0, logits = 0;
  std::size_t dec_h = 0;  // moe_decode scratch: bf16 [kDecodeMoeTokens * (top_k + 1), max(moe_inter, shared_inter)]
  std::size_t gdn_ws = 0, gdn_ws_bytes = 0, attn_ws = 0, attn_ws_bytes = 0;
  std::size_t moe_offsets = 0, moe_row_token = 0, moe_token_row = 0, moe_y = 0, moe_ws = 0, moe_ws_bytes = 0;
  std::size_t meta = 0, meta_bytes = 0;
  std::size_t route_logits = 0, route_ids = 0;  // opt.record_routing: [n_moe, T, E] fp32, [n_moe, T, top_k] int32
  int n_moe = 0;
  std::int64_t proj_cols = 0, core_cols = 0;

  // ---- host side ----
  std::unique_ptr<sequence_slots> seqs;
  std::unique_ptr<kernels::gemm_context> gemm;
  cudaStream_t own_stream = nullptr;
  cudaEvent_t copied = nullptr;
  bool copy_pending = false;

  // Profiling (set_profiling): events recorded before each op of eager launches, names beside them.
  bool prof = false;
  int prof_spin_us = 20000;
  bool prof_active = false;  // this launch is profiled (profiling on and the stream not capturing)
  std::vector<cudaEvent_t> prof_events;
  std::vector<std::string> prof_names;
  std::size_t prof_n = 0;    // marks recorded since the last read
  void mark(cudaStream_t st, const char* a, const char* b = nullptr) {
    if (!prof_active) return;
    if (prof_n == prof_events.size()) {
      cudaEvent_t e = nullptr;
      EV_CUDA_CALL(cudaEventCreate(&e));
      prof_events.push_back(e);
      prof_names.emplace_back();
    }
    prof_names[prof_n] = b ? std::string(a) + b : std::string(a);
    EV_CUDA_CALL(cudaEventRecord(prof_events[prof_n], st));
    ++prof_n;
  }
  std::int32_t* staging = nullptr;  // pinned, meta_bytes

  // The prepared step.
  struct prepared {
    bool valid = false;
    int n_tokens = 0, n_entries = 0, n_decode = 0, n_rows = 0;
    int n_prefill_tokens = 0, max_prefill_len = 0, max_seq_len = 0;
    bool padded = false;
    std::size_t used_bytes = 0;
    // int32 offsets (elements) into the metadata block
    std::size_t o_ids = 0, o_pos = 0, o_slotmap = 0, o_tok_entry = 0, o_cu_all = 0, o_cu_pre = 0, o_state = 0,
                o_seqlen = 0, o_reset = 0, o_rows = 0, o_tables = 0;
  } cur;

  ~impl() {
    if (staging) cudaFreeHost(staging);
    if (copied) cudaEventDestroy(copied);
    for (cudaEvent_t e : prof_events) cudaEventDestroy(e);
    if (own_stream) cudaStreamDestroy(own_stream);
  }

  // ---- metadata layout (a pure function of the counts, so a bucket always gets the same pointers) ----
  void layout_meta(prepared& p, int n_tokens, int n_entries, int n_rows) const {
    auto up = [](std::size_t x) { return (x + 63) / 64 * 64; };
    std::size_t o = 0;
    auto take = [&](std::size_t n) {
      const std::size_t r = o;
      o += up(std::max<std::size_t>(n, 1));
      return r;
    };
    p.o_ids = take(std::size_t(n_tokens));
    p.o_pos = take(std::size_t(n_tokens));
    p.o_slotmap = take(std::size_t(n_tokens));
    p.o_tok_entry = take(std::size_t(n_tokens));
    p.o_cu_all = take(std::size_t(n_entries) + 1);
    p.o_cu_pre = take(std::size_t(n_entries) + 1);
    p.o_state = take(std::size_t(n_entries));
    p.o_seqlen = take(std::size_t(n_entries));
    p.o_reset = take(std::size_t(n_entries));
    p.o_rows = take(std::size_t(n_rows));
    p.o_tables = take(std::size_t(n_entries) * std::size_t(max_blocks));
    p.used_bytes = o * sizeof(std::int32_t);
  }

  template <typename T>
  T* wp(std::size_t off) const {
    return w.at<T>(off);
  }
  template <typename T>
  T* bp(std::size_t off) const {
    return b.at<T>(off);
  }
  const std::int32_t* md(std::size_t elem_off) const { return bp<std::int32_t>(meta) + elem_off; }

  void build(const tensor_lookup& lookup);
  void plan_buffers();
  void allocate_and_upload();
  std::string check_batch(const std::vector<step_entry>& batch, int pad, error_kind* kind) const;
  void run(cudaStream_t st);
  void gemm_call(cudaStream_t st, const bf16* x, std::int64_t ldx, const bf16* wt, int m, int n, int k, void* y,
                 std::int64_t ldy, kernels::gemm_out ot);
  void attention_layer(cudaStream_t st, const layer& L);
  void add_norm(cudaStream_t st, const kernels::rmsnorm_args& na, const char* what);
  int decode_splits(int n_seq, int max_seq_len) const;
  void deltanet_layer(cudaStream_t st, const layer& L);
  void ffn_layer(cudaStream_t st, const layer& L);
};

// ---------------------------------------------------------------------------------------------------------------------
// Weights: shapes checked as the CPU loader does; offsets planned in arena w, upload jobs recorded.

void cuda_model::impl::build(const tensor_lookup& lookup) {
  const model_config& c = cfg;
  H = c.hidden_size;
  V = c.vocab_size;
  nh = int(c.num_attention_heads);
  nkv = int(c.num_key_value_heads);
  hd = int(c.head_dim);
  rd = int(c.rotary_dim());
  nk = int(c.linear_num_key_heads);
  nv = int(c.linear_num_value_heads);
  dk = int(c.linear_key_head_dim);
  dv = int(c.linear_value_head_dim);
  K = int(c.linear_conv_kernel_dim);
  kd = c.linear_key_dim();
  vd = c.linear_value_dim();
  cd = c.linear_conv_dim();
  P_gdn = 2 * kd + 2 * vd + 2 * nv;
  P_attn = std::int64_t(nh) * hd * 2 + 2 * std::int64_t(nkv) * hd;
  E = int(c.num_experts);
  topk = int(c.num_experts_per_tok);
  I_moe = int(c.moe_intermediate_size);
  S_sh = int(c.shared_expert_intermediate_size);
  I_dense = int(c.intermediate_size);

  // What the CUDA path needs beyond what the config validation checks (the fallbacks' limits).
  EV_THROW_IF_NOT_MSG(H % 8 == 0, origin, ": hidden_size ", H, ": the CUDA engine needs a multiple of 8");
  EV_THROW_IF_NOT_MSG(hd <= 256 && hd % 8 == 0, origin, ": head_dim ", hd, ": the CUDA engine needs <= 256, a multiple of 8");
  EV_THROW_IF_NOT_MSG(dv % 4 == 0 && dk <= 128 && dv <= 128, origin, ": DeltaNet head dims ", dk, " x ", dv,
                      ": the CUDA engine needs both <= 128 and d_v a multiple of 4");
  EV_THROW_IF_NOT_MSG(K >= 2 && K <= 8, origin, ": linear_conv_kernel_dim ", K, ": the CUDA engine supports 2..8");

  const bool generic = opt.use_generic_kernels;
  attn_fast = !generic && hd == 256 && nh / nkv == 8;
  attn_prefill_fast = !generic && hd == 256 && 64 % (nh / nkv) == 0;
  gdn_fast = !generic && dk == 128 && dv == 128;
  moe_grouped = !generic && E > 0 && H % 8 == 0 && I_moe % 8 == 0 && E <= 4096;

  auto find = [&](const std::string& name, const std::vector<std::int64_t>& shape) -> const tensor_view& {
    return find_tensor(lookup, origin, name, shape);
  };
  // A whole tensor into its own allocation.
  auto whole = [&](const std::string& name, const std::vector<std::int64_t>& shape, bool fp32 = false) {
    const tensor_view& t = find(name, shape);
    const std::size_t off = w.take(std::size_t(t.numel()) * (fp32 ? 4 : 2));
    jobs.push_back({&t, 0, t.numel(), off, 0, fp32});
    return off;
  };
  // Rows [r0, r0+n) of a 2-D tensor [rows, cols] to rows starting at dst_row of the allocation at `off`.
  auto rows_to = [&](const tensor_view& t, std::int64_t cols, std::int64_t r0, std::int64_t n, std::size_t off,
                     std::int64_t dst_row) { jobs.push_back({&t, r0 * cols, n * cols, off, dst_row * cols, false}); };

  embed = whole("model.embed_tokens.weight", {V, H});
  lm_head = c.tie_word_embeddings ? embed : whole("lm_head.weight", {V, H});
  final_norm = whole("model.norm.weight", {H});
  layers.resize(std::size_t(c.num_hidden_layers));
  for (std::int64_t li = 0; li < c.num_hidden_layers; ++li) {
    layer& L = layers[std::size_t(li)];
    const std::string p = "model.layers." + std::to_string(li) + ".";
    L.kind = c.layer_types[std::size_t(li)];
    L.in_norm = whole(p + "input_layernorm.weight", {H});
    L.post_norm = whole(p + "post_attention_layernorm.weight", {H});
    if (L.kind == layer_kind::full_attention) {
      L.state_index = n_full++;
      const std::int64_t qrows = std::int64_t(nh) * hd * 2, kvrows = std::int64_t(nkv) * hd;
      L.w_qkv = w.take(std::size_t(P_attn * H) * 2);
      rows_to(find(p + "self_attn.q_proj.weight", {qrows, H}), H, 0, qrows, L.w_qkv, 0);
      rows_to(find(p + "self_attn.k_proj.weight", {kvrows, H}), H, 0, kvrows, L.w_qkv, qrows);
      rows_to(find(p + "self_attn.v_proj.weight", {kvrows, H}), H, 0, kvrows, L.w_qkv, qrows + kvrows);
      L.w_o = whole(p + "self_attn.o_proj.weight", {H, std::int64_t(nh) * hd});
      L.q_norm = whole(p + "self_attn.q_norm.weight", {hd});
      L.k_norm = whole(p + "self_attn.k_norm.weight", {hd});
    } else {
      L.state_index = n_linear++;
      const std::int64_t r = nv / nk, gsz = 2 * dk + 2 * r * dv;
      const tensor_view& qkvz = find(p + "linear_attn.in_proj_qkvz.weight", {2 * kd + 2 * vd, H});
      const tensor_view& ba = find(p + "linear_attn.in_proj_ba.weight", {2 * std::int64_t(nv), H});
      L.w_in = w.take(std::size_t(P_gdn * H) * 2);
      // Checkpoint rows per key head g: [q (dk) | k (dk) | v (r dv) | z (r dv)] and [b (r) | a (r)]; ours:
      // [q all heads | k all | v all | z all | b all | a all], so q|k|v is the conv input and each part contiguous.
      for (std::int64_t g = 0; g < nk; ++g) {
        rows_to(qkvz, H, g * gsz, dk, L.w_in, g * dk);
        rows_to(qkvz, H, g * gsz + dk, dk, L.w_in, kd + g * dk);
        rows_to(qkvz, H, g * gsz + 2 * dk, r * dv, L.w_in, 2 * kd + g * r * dv);
        rows_to(qkvz, H, g * gsz + 2 * dk + r * dv, r * dv, L.w_in, 2 * kd + vd + g * r * dv);
        rows_to(ba, H, g * 2 * r, r, L.w_in, 2 * kd + 2 * vd + g * r);
        rows_to(ba, H, g * 2 * r + r, r, L.w_in, 2 * kd + 2 * vd + nv + g * r);
      }
      L.w_out = whole(p + "linear_attn.out_proj.weight", {H, vd});
      L.conv_w = whole(p + "linear_attn.conv1d.weight", {cd, 1, K});
      L.a_log = whole(p + "linear_attn.A_log", {nv}, true);
      L.dt_bias = whole(p + "linear_attn.dt_bias", {nv}, true);
      L.gnorm = whole(p + "linear_attn.norm.weight", {dv});
    }
    L.moe = c.is_moe_layer(li);
    if (L.moe) {
      L.moe_index = n_moe++;
      L.w_router = whole(p + "mlp.gate.weight", {E, H});
      if (S_sh > 0) {
        L.has_shared = true;
        L.w_gu = w.take(std::size_t(2 * S_sh) * std::size_t(H) * 2);
        rows_to(find(p + "mlp.shared_expert.gate_proj.weight", {S_sh, H}), H, 0, S_sh, L.w_gu, 0);
        rows_to(find(p + "mlp.shared_expert.up_proj.weight", {S_sh, H}), H, 0, S_sh, L.w_gu, S_sh);
        L.w_down = whole(p + "mlp.shared_expert.down_proj.weight", {H, S_sh});
        L.w_sgate = whole(p + "mlp.shared_expert_gate.weight", {1, H});
      }
      const std::int64_t I = I_moe;
      if (lookup(p + "mlp.experts.gate_up_proj") != nullptr) {
        L.e_gu = whole(p + "mlp.experts.gate_up_proj", {E, 2 * I, H});
        L.e_down = whole(p + "mlp.experts.down_proj", {E, H, I});
      } else {
        L.e_gu = w.take(std::size_t(E) * std::size_t(2 * I * H) * 2);
        L.e_down = w.take(std::size_t(E) * std::size_t(H * I) * 2);
        for (std::int64_t e = 0; e < E; ++e) {
          const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
          rows_to(find(q + "gate_proj.weight", {I, H}), H, 0, I, L.e_gu, e * 2 * I);
          rows_to(find(q + "up_proj.weight", {I, H}), H, 0, I, L.e_gu, e * 2 * I + I);
          rows_to(find(q + "down_proj.weight", {H, I}), I, 0, H, L.e_down, e * H);
        }
      }
    } else {
      L.w_gu = w.take(std::size_t(2 * I_dense) * std::size_t(H) * 2);
      rows_to(find(p + "mlp.gate_proj.weight", {I_dense, H}), H, 0, I_dense, L.w_gu, 0);
      rows_to(find(p + "mlp.up_proj.weight", {I_dense, H}), H, 0, I_dense, L.w_gu, I_dense);
      L.w_down = whole(p + "mlp.down_proj.weight", {H, I_dense});
    }
  }
  // Rotary inverse frequencies exactly as the CPU engine (and transformers) compute them.
  inv_freq_host.resize(std::size_t(std::max(rd / 2, 1)));
  for (int i = 0; i < rd / 2; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(rd);
    inv_freq_host[std::size_t(i)] = static_cast<float>(
        1.0 / std::pow(static_cast<double>(static_cast<float>(c.rope_theta)), static_cast<double>(expo)));
  }
  inv_freq = w.take(inv_freq_host.size() * 4);
}

// ---------------------------------------------------------------------------------------------------------------------
// Step buffers, states, and the memory check.

void cuda_model::impl::plan_buffers() {
  const cuda_model_options& o = opt;
  EV_THROW_IF_NOT_MSG(o.max_sequences >= 1 && o.block_size >= 1 && o.max_context >= 1 && o.max_step_tokens >= 1 &&
                          o.max_step_entries >= 1 && o.max_logit_rows >= 1 && o.kv_blocks >= 0 &&
                          o.kv_memory_fraction > 0 && o.kv_memory_fraction <= 1,
                      "cuda_model_options: every size must be positive (kv_blocks >= 0, 0 < kv_memory_fraction <= 1)");
  EV_THROW_IF_NOT_MSG(o.max_step_entries <= o.max_step_tokens, "cuda_model_options: max_step_entries ",
                      o.max_step_entries, " > max_step_tokens ", o.max_step_tokens);
  const std::size_t T = std::size_t(o.max_step_tokens), NE = std::size_t(o.max_step_entries),
                    R = std::size_t(o.max_logit_rows), Hs = std::size_t(H);
  n_slots_state = o.max_sequences + 1;
  max_blocks = int((o.max_context + o.block_size - 1) / o.block_size);

  // DeltaNet states (fixed) in arena s; KV blocks appended once their number is known.
  conv_slot_elems = std::int64_t(K - 1) * cd;
  rec_slot_elems = std::int64_t(nv) * dk * dv;
  conv0 = s.take(std::size_t(n_linear) * std::size_t(n_slots_state) * std::size_t(conv_slot_elems) * 2);
  rec0 = s.take(std::size_t(n_linear) * std::size_t(n_slots_state) * std::size_t(rec_slot_elems) * 4);

  proj_cols = std::max<std::int64_t>({n_full ? P_attn : 0, n_linear ? P_gdn : 0, 2 * std::int64_t(I_dense),
                                      2 * std::int64_t(S_sh), 8});
  core_cols = std::max<std::int64_t>(std::int64_t(nh) * hd, vd);
  res = b.take(T * Hs * 2);
  xn = b.take(T * Hs * 2);
  mo = b.take(T * Hs * 2);
  proj = b.take(T * std::size_t(proj_cols) * 2);
  core = b.take(T * std::size_t(core_cols) * 2);
  z_in_place = P_gdn % 4 == 0 && (2 * kd + vd) % 4 == 0 && vd % 4 == 0;
  if (!z_in_place) zc = b.take(T * std::size_t(vd) * 2);
  gn = b.take(T * std::size_t(vd) * 2);
  conv_out = b.take(T * std::size_t(cd) * 2);
  gbuf = b.take(T * std::size_t(nv) * 4);
  betabuf = b.take(T * std::size_t(nv) * 4);
  hbuf = b.take(T * std::size_t(std::max({S_sh, I_dense, 1})) * 2);
  sh_h = hbuf;
  if (E > 0) {
    rlogits = b.take(T * std::size_t(E) * 4);
    rids = b.take(T * std::size_t(topk) * 4);
    rweights = b.take(T * std::size_t(topk) * 4);
    eh = b.take(T * std::size_t(topk) * std::size_t(I_moe) * 2);
    sh_out = b.take(T * Hs * 2);
    sg = b.take(T * 4);
    dec_h = b.take(std::size_t(kDecodeMoeTokens) * std::size_t(topk + 1) * std::size_t(std::max(I_moe, S_sh)) * 2);
    if (moe_grouped) {
      moe_offsets = b.take((std::size_t(E) + 1) * 4);
      moe_row_token = b.take(T * std::size_t(topk) * 4);
      moe_token_row = b.take(T * std::size_t(topk) * 4);
      moe_y = b.take(T * std::size_t(topk) * Hs * 4);
      kernels::moe_permute_args pa;
      pa.n_tokens = int(T);
      pa.n_experts = E;
      pa.top_k = topk;
      moe_ws_bytes = kernels::moe_permute_workspace_bytes(pa);
      moe_ws = b.take(moe_ws_bytes);
    }
    if (o.record_routing) {
      route_logits = b.take(std::size_t(n_moe) * T * std::size_t(E) * 4);
      route_ids = b.take(std::size_t(n_moe) * T * std::size_t(topk) * 4);
    }
  }
  xg = b.take(R * Hs * 2);
  logits = b.take(R * std::size_t(V) * 4);
  if (gdn_fast && n_linear > 0) {
    kernels::gdn_shape gs{int(T), int(NE), nk, nv, dk, dv};
    gdn_ws_bytes = kernels::gdn_chunked_workspace_bytes(gs);
    gdn_ws = b.take(gdn_ws_bytes);
  }
  if (attn_fast && n_full > 0) {
    kernels::attention_decode_args da;
    da.n_seq = int(NE);
    da.n_q_heads = nh;
    da.n_kv_heads = nkv;
    da.head_dim = hd;
    da.max_seq_len = int(std::min<std::int64_t>(o.max_context, std::int64_t(max_blocks) * o.block_size));
    // The workspace grows with n_seq * n_splits; decode_splits() keeps that near its largest at some n_seq <= NE.
    // (A padded step passes max_blocks * block_size, which may exceed max_context.)
    const int longest = int(std::max<std::int64_t>(da.max_seq_len, std::int64_t(max_blocks) * o.block_size));
    for (int ns = 1; ns <= int(NE); ++ns) {
      da.n_seq = ns;
      da.n_splits = decode_splits(ns, longest);
      attn_ws_bytes = std::max(attn_ws_bytes, kernels::attention_decode_workspace_bytes(da));
    }
    attn_ws = b.take(attn_ws_bytes);
  }
  prepared full;
  layout_meta(full, int(T), int(NE), int(R));
  meta_bytes = full.used_bytes;
  meta = b.take(meta_bytes);

  // The memory check, before any allocation.
  std::size_t free_b = 0, total_b = 0;
  EV_CUDA_CALL(cudaMemGetInfo(&free_b, &total_b));
  kv_layer_bytes = align_up(std::size_t(o.block_size) * std::size_t(nkv) * std::size_t(hd) * 2);  // per block, k or v
  const std::size_t per_block = 2 * std::size_t(n_full) * kv_layer_bytes / 1;
  const std::size_t reserve = (std::size_t(256) << 20);  // cuBLAS workspace, CUDA context growth, fragmentation
  const std::size_t fixed = w.size + s.size + b.size + reserve;
  if (fixed > free_b)
    EV_THROW(resource, "cuda_model ", origin, ": does not fit on device ", o.device, ": weights ", gib(w.size),
             " + DeltaNet states ", gib(s.size), " (", o.max_sequences, " sequences) + step buffers ", gib(b.size),
             " (", o.max_step_tokens, " tokens, ", o.max_logit_rows, " logit rows) + reserve ", gib(reserve),
             " = ", gib(fixed), ", but only ", gib(free_b), " of ", gib(total_b),
             " are free (lower max_sequences / max_step_tokens / max_logit_rows, or use a larger card)");
  if (n_full == 0) {
    kv_blocks = std::int64_t(o.max_sequences) * max_blocks;  // bookkeeping only: no cache bytes without attention
  } else if (o.kv_blocks > 0) {
    kv_blocks = o.kv_blocks;
    if (std::size_t(kv_blocks) * per_block > free_b - fixed)
      EV_THROW(resource, "cuda_model ", origin, ": KV cache of ", kv_blocks, " blocks needs ",
               gib(std::size_t(kv_blocks) * per_block), ", only ", gib(free_b - fixed),
               " are free after weights, states and step buffers (", gib(fixed), ")");
  } else {
    kv_blocks = std::int64_t(double(free_b - fixed) * o.kv_memory_fraction) / std::int64_t(per_block);
    EV_THROW_IF_NOT_KIND(kv_blocks >= 1, resource, "cuda_model ", origin, ": no memory left for the KV cache after ",
                         gib(fixed), " of weights, states and buffers (", gib(free_b), " free)");
  }
  kv_blocks = std::min<std::int64_t>(kv_blocks, std::int64_t(1) << 30);
  kcache0 = s.take(std::size_t(n_full) * std::size_t(kv_blocks) * kv_layer_bytes);
  vcache0 = s.take(std::size_t(n_full) * std::size_t(kv_blocks) * kv_layer_bytes);
  seqs = std::make_unique<sequence_slots>(o.max_sequences, int(std::min<std::int64_t>(kv_blocks, INT32_MAX / 2)),
                                          o.block_size, max_blocks);
}

void cuda_model::impl::allocate_and_upload() {
  EV_CUDA_CALL(cudaMalloc(&w.base, w.size));
  EV_CUDA_CALL(cudaMalloc(&s.base, s.size));
  EV_CUDA_CALL(cudaMalloc(&b.base, b.size));
  EV_CUDA_CALL(cudaMemset(s.base, 0, s.size));
  EV_CUDA_CALL(cudaMallocHost(&staging, meta_bytes));
  std::memset(staging, 0, meta_bytes);
  std::vector<std::uint16_t> h16;
  std::vector<float> h32;
  for (const upload_job& j : jobs) {
    const tensor_view& t = *j.t;
    if (j.fp32) {
      h32.resize(std::size_t(j.n));
      for (std::int64_t i = 0; i < j.n; ++i) h32[std::size_t(i)] = elem_f32(t, j.src + i);
      EV_CUDA_CALL(cudaMemcpy(w.base + j.dst + std::size_t(j.dst_elem) * 4, h32.data(), std::size_t(j.n) * 4,
                              cudaMemcpyHostToDevice));
      continue;
    }
    const void* src;
    if (t.dtype == st_dtype::bf16) {
      src = static_cast<const char*>(t.data) + j.src * 2;
    } else {
      h16.resize(std::size_t(j.n));
      for (std::int64_t i = 0; i < j.n; ++i) h16[std::size_t(i)] = kernels::float_to_bf16(elem_f32(t, j.src + i)).bits;
      src = h16.data();
    }
    EV_CUDA_CALL(cudaMemcpy(w.base + j.dst + std::size_t(j.dst_elem) * 2, src, std::size_t(j.n) * 2,
                            cudaMemcpyHostToDevice));
  }
  jobs.clear();
  jobs.shrink_to_fit();
  EV_CUDA_CALL(cudaMemcpy(w.base + inv_freq, inv_freq_host.data(), inv_freq_host.size() * 4, cudaMemcpyHostToDevice));
  EV_CUDA_CALL(cudaStreamCreateWithFlags(&own_stream, cudaStreamNonBlocking));
  EV_CUDA_CALL(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
  kernels::status st;
  gemm = kernels::gemm_context::create(&st);
  ok(st, "cuBLAS handle");
}

// ---------------------------------------------------------------------------------------------------------------------
// Batch validation and the host half of a step.

std::string cuda_model::impl::check_batch(const std::vector<step_entry>& batch, int pad, error_kind* kind) const {
  *kind = error_kind::invalid_input;
  if (batch.empty()) return "empty batch";
  const int n_entries = std::max<int>(int(batch.size()), pad);
  if (n_entries > opt.max_step_entries)
    return detail::concat(n_entries, " entries, more than max_step_entries ", opt.max_step_entries);
  std::int64_t tokens = 0, rows = 0;
  bool decode_only = true;
  std::vector<std::pair<int, std::int64_t>> wants;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const step_entry& e = batch[i];
    if (!seqs->is_open(e.slot)) return detail::concat("entry ", i, ": sequence slot ", e.slot, " is not open");
    if (e.n_tokens < 1 || e.ids == nullptr) return detail::concat("entry ", i, ": no tokens");
    if (e.start != seqs->length(e.slot))
      return detail::concat("entry ", i, ": start ", e.start, " but sequence slot ", e.slot, " holds ",
                            seqs->length(e.slot), " positions");
    for (int t = 0; t < e.n_tokens; ++t)
      if (e.ids[t] < 0 || e.ids[t] >= V)
        return detail::concat("entry ", i, ": token id ", e.ids[t], " at ", t, " is out of range [0, ", V, ")");
    tokens += e.n_tokens;
    rows += e.all_logits ? e.n_tokens : 1;
    decode_only = decode_only && e.n_tokens == 1;
    wants.push_back({e.slot, e.start + e.n_tokens});
  }
  if (pad > 0) {
    if (pad < int(batch.size())) return detail::concat("pad_entries ", pad, " < batch size ", batch.size());
    if (!decode_only) return "pad_entries needs a decode-only batch (one token per entry)";
    tokens = pad;
    rows = pad;
  }
  if (tokens > opt.max_step_tokens)
    return detail::concat(tokens, " tokens, more than max_step_tokens ", opt.max_step_tokens);
  if (rows > opt.max_logit_rows) return detail::concat(rows, " logit rows, more than max_logit_rows ", opt.max_logit_rows);
  std::string why = seqs->can_reserve_all(wants);
  if (!why.empty()) {
    *kind = why.find("KV blocks") != std::string::npos ? error_kind::resource : error_kind::invalid_input;
    return "KV cache: " + why;
  }
  return {};
}

// ---------------------------------------------------------------------------------------------------------------------
// The device half.

void cuda_model::impl::gemm_call(cudaStream_t st, const bf16* x, std::int64_t ldx, const bf16* wt, int m, int n, int k,
                                 void* y, std::int64_t ldy, kernels::gemm_out ot) {
  // gemv_small beats cuBLAS at one row on the smaller matrices only (H200: shared expert gate_up 7 vs 16 us, router
  // 7 vs 9 us, o/out_proj 12 vs 12.5 us; but in_proj 23 vs 19 us, lm_head 187 vs 152 us; at 8 rows 5x slower).
  if (m <= opt.gemv_max_m && std::int64_t(n) * k <= (std::int64_t(1) << 24)) {
    cuda_ops::gemv_args v;
    v.m = m;
    v.n = n;
    v.k = k;
    v.x = x;
    v.ldx = ldx;
    v.w = wt;
    v.ldw = k;
    v.y = y;
    v.ldy = ldy;
    v.y_fp32 = ot == kernels::gemm_out::fp32;
    if (cuda_ops::gemv_small_supported(v)) {
      ok(cuda_ops::gemv_small(v, st), "gemv_small");
      return;
    }
  }
  kernels::gemm_args g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.x = x;
  g.ldx = ldx;
  g.w = wt;
  g.ldw = k;
  g.y = y;
  g.ldy = ldy;
  g.out_type = ot;
  ok(kernels::gemm_bf16(*gemm, g, st), "gemm_bf16");
}

// Residual add + norm: few rows (decode) one block per row (engine/cuda), else kernels/ (a warp per row).
void cuda_model::impl::add_norm(cudaStream_t st, const kernels::rmsnorm_args& na, const char* what) {
  cuda_ops::add_rmsnorm_args a;
  a.n_rows = na.n_rows;
  a.dim = na.dim;
  a.eps = na.eps;
  a.x = na.x;
  a.x_stride = na.x_stride;
  a.residual = na.residual;
  a.residual_stride = na.residual_stride;
  a.w = na.w;
  a.out = na.out;
  a.out_stride = na.out_stride;
  if (opt.fast_decode && na.n_rows <= 256 && cuda_ops::add_rmsnorm_rows_supported(a)) {
    ok(cuda_ops::add_rmsnorm_rows(a, st), what);
    return;
  }
  ok(kernels::rmsnorm_residual(na, st), what);
}

// Split-KV count for decode attention: ~2 blocks per SM (132 SMs) over n_seq * n_kv_heads, no split shorter than 64
// positions of max_seq_len (kernels/ defaults to 256, which leaves 8 blocks for one sequence of 1K: ~40 us a layer).
int cuda_model::impl::decode_splits(int n_seq, int max_seq_len) const {
  const int units = std::max(1, n_seq * nkv);
  const int by_fill = (264 + units - 1) / units;
  const int by_len = (std::max(max_seq_len, 1) + 63) / 64;
  return std::max(1, std::min({by_fill, by_len, 64}));
}

void cuda_model::impl::attention_layer(cudaStream_t st, const layer& L) {
  const prepared& p = cur;
  const int n = p.n_tokens;
  bf16* pr = bp<bf16>(proj);
  mark(st, "full: q|gate|k|v proj");
  gemm_call(st, bp<bf16>(xn), H, wp<bf16>(L.w_qkv), n, int(P_attn), int(H), pr, P_attn, kernels::gemm_out::bf16);
  const std::int64_t qcols = std::int64_t(nh) * hd * 2, kvcols = std::int64_t(nkv) * hd;
  bf16* q = pr;
  bf16* k = pr + qcols;
  bf16* v = pr + qcols + kvcols;
  cuda_ops::qk_norm_rope_args nr;
  nr.n_tokens = n;
  nr.n_q_heads = nh;
  nr.n_kv_heads = nkv;
  nr.head_dim = hd;
  nr.rotary_dim = rd;
  nr.eps = float(cfg.rms_norm_eps);
  nr.q = q;
  nr.q_stride = P_attn;
  nr.q_head_stride = 2 * hd;
  nr.k = k;
  nr.k_stride = P_attn;
  nr.q_w = wp<bf16>(L.q_norm);
  nr.k_w = wp<bf16>(L.k_norm);
  nr.inv_freq = wp<float>(inv_freq);
  nr.positions = md(p.o_pos);
  mark(st, "full: qk norm + rope");
  ok(cuda_ops::qk_norm_rope(nr, st), "qk_norm_rope");

  kernels::paged_kv_view kv;
  kv.k_cache = s.at<bf16>(kcache0 + std::size_t(L.state_index) * std::size_t(kv_blocks) * kv_layer_bytes);
  kv.v_cache = s.at<bf16>(vcache0 + std::size_t(L.state_index) * std::size_t(kv_blocks) * kv_layer_bytes);
  kv.n_blocks = int(kv_blocks);
  kv.block_size = opt.block_size;
  kv.block_tables = md(p.o_tables);
  kv.max_blocks_per_seq = max_blocks;
  kernels::kv_write_args kw;
  kw.n_tokens = n;
  kw.n_kv_heads = nkv;
  kw.head_dim = hd;
  kw.k = k;
  kw.k_stride = P_attn;
  kw.v = v;
  kw.v_stride = P_attn;
  kw.slot_mapping = md(p.o_slotmap);
  kw.kv = kv;
  mark(st, "full: kv cache write");
  ok(kernels::kv_cache_write(kw, st), "kv_cache_write");

  bf16* out = bp<bf16>(core);
  const std::int64_t out_stride = std::int64_t(nh) * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int nd = p.n_decode;
  if (attn_fast && nd > 0) {
    kernels::attention_decode_args da;
    da.n_seq = nd;
    da.n_q_heads = nh;
    da.n_kv_heads = nkv;
    da.head_dim = hd;
    da.scale = scale;
    da.max_seq_len = p.max_seq_len;
    da.n_splits = opt.fast_decode ? decode_splits(nd, p.max_seq_len) : 0;
    da.q = q;
    da.q_stride = P_attn;
    da.q_head_stride = 2 * hd;
    da.gate = q + hd;
    da.gate_stride = P_attn;
    da.gate_head_stride = 2 * hd;
    da.seq_lens = md(p.o_seqlen);
    da.kv = kv;
    da.out = out;
    da.out_stride = out_stride;
    mark(st, "full: attention decode");
    ok(kernels::attention_decode(da, bp<void>(attn_ws), attn_ws_bytes, st), "attention_decode");
  }
  const int first_generic = attn_fast ? nd : 0;
  const int n_pre_entries = p.n_entries - nd;
  if (attn_prefill_fast && n_pre_entries > 0) {
    kernels::attention_prefill_args pa;
    pa.n_seq = n_pre_entries;
    pa.n_tokens = p.n_prefill_tokens;
    pa.max_n_new = p.max_prefill_len;
    pa.n_q_heads = nh;
    pa.n_kv_heads = nkv;
    pa.head_dim = hd;
    pa.scale = scale;
    pa.cu_q = md(p.o_cu_pre);
    pa.seq_lens = md(p.o_seqlen) + nd;
    pa.q = q + std::int64_t(nd) * P_attn;
    pa.q_stride = P_attn;
    pa.q_head_stride = 2 * hd;
    pa.gate = q + hd + std::int64_t(nd) * P_attn;
    pa.gate_stride = P_attn;
    pa.gate_head_stride = 2 * hd;
    pa.kv = kv;
    pa.kv.block_tables = md(p.o_tables) + std::size_t(nd) * std::size_t(max_blocks);
    pa.out = out + std::int64_t(nd) * out_stride;
    pa.out_stride = out_stride;
    mark(st, "full: attention prefill");
    ok(kernels::attention_prefill(pa, st), "attention_prefill");
  }
  const int last_generic = attn_prefill_fast ? nd : n;  // generic covers tokens [first_generic, last_generic)
  if (last_generic > first_generic) {
    cuda_ops::attention_generic_args ga;
    ga.n_tokens = last_generic - first_generic;
    ga.n_q_heads = nh;
    ga.n_kv_heads = nkv;
    ga.head_dim = hd;
    ga.scale = scale;
    ga.q = q + std::int64_t(first_generic) * P_attn;
    ga.q_stride = P_attn;
    ga.q_head_stride = 2 * hd;
    ga.gate = ga.q + hd;
    ga.gate_stride = P_attn;
    ga.gate_head_stride = 2 * hd;
    ga.token_entry = md(p.o_tok_entry) + first_generic;
    ga.positions = md(p.o_pos) + first_generic;
    ga.kv = kv;
    ga.out = out + std::int64_t(first_generic) * out_stride;
    ga.out_stride = out_stride;
    mark(st, "full: attention generic");
    ok(cuda_ops::attention_generic(ga, st), "attention_generic");
  }
  mark(st, "full: o proj");
  gemm_call(st, out, out_stride, wp<bf16>(L.w_o), n, int(H), int(out_stride), bp<bf16>(mo), H,
            kernels::gemm_out::bf16);
}

void cuda_model::impl::deltanet_layer(cudaStream_t st, const layer& L) {
  const prepared& p = cur;
  const int n = p.n_tokens, nd = p.n_decode;
  bf16* pr = bp<bf16>(proj);
  mark(st, "deltanet: in_proj qkvz+ba");
  gemm_call(st, bp<bf16>(xn), H, wp<bf16>(L.w_in), n, int(P_gdn), int(H), pr, P_gdn, kernels::gemm_out::bf16);
  cuda_ops::gdn_gates_args ga;
  ga.n_tokens = n;
  ga.n_v_heads = nv;
  ga.b = pr + 2 * kd + 2 * vd;
  ga.a = ga.b + nv;
  ga.stride = P_gdn;
  ga.a_log = wp<float>(L.a_log);
  ga.dt_bias = wp<float>(L.dt_bias);
  ga.g = bp<float>(gbuf);
  ga.beta = bp<float>(betabuf);
  mark(st, "deltanet: gates");
  ok(cuda_ops::gdn_gates(ga, st), "gdn_gates");

  bf16* conv_state = s.at<bf16>(conv0) + std::int64_t(L.state_index) * n_slots_state * conv_slot_elems;
  float* rec_state = s.at<float>(rec0) + std::int64_t(L.state_index) * n_slots_state * rec_slot_elems;
  bf16* co = bp<bf16>(conv_out);
  kernels::conv1d_args ca;
  ca.n_channels = int(cd);
  ca.kernel = K;
  ca.w = wp<bf16>(L.conv_w);
  ca.state = conv_state;
  ca.read_state = true;  // a starting sequence's state was zeroed at the top of the step
  ca.x_stride = P_gdn;
  ca.out_stride = cd;
  if (nd > 0) {
    kernels::conv1d_args u = ca;
    u.n_tokens = nd;
    u.n_seq = nd;
    u.x = pr;
    u.state_slots = md(cur.o_state);
    u.out = co;
    mark(st, "deltanet: conv1d update");
    ok(kernels::conv1d_update(u, st), "conv1d_update");
  }
  const int n_pre_entries = p.n_entries - nd;
  if (n_pre_entries > 0) {
    kernels::conv1d_args f = ca;
    f.n_tokens = p.n_prefill_tokens;
    f.n_seq = n_pre_entries;
    f.x = pr + std::int64_t(nd) * P_gdn;
    f.cu_seqlens = md(p.o_cu_pre);
    f.state_slots = md(p.o_state) + nd;
    f.out = co + std::int64_t(nd) * cd;
    mark(st, "deltanet: conv1d prompt");
    ok(kernels::conv1d_forward(f, st), "conv1d_forward");
  }

  kernels::gdn_args g;
  g.q = co;
  g.q_stride = cd;
  g.k = co + kd;
  g.k_stride = cd;
  g.v = co + 2 * kd;
  g.v_stride = cd;
  g.g = bp<float>(gbuf);
  g.beta = bp<float>(betabuf);
  g.initial_state = rec_state;
  g.final_state = rec_state;
  g.out = bp<bf16>(core);
  g.out_stride = vd;
  if (gdn_fast) {
    if (nd > 0) {
      kernels::gdn_shape sh{nd, nd, nk, nv, dk, dv};
      kernels::gdn_args d = g;
      d.cu_seqlens = md(p.o_cu_all);  // 0, 1, ..., nd over the decode prefix
      d.state_slots = md(p.o_state);
      mark(st, "deltanet: gated delta rule step");
      ok(kernels::gdn_recurrent_forward(sh, d, st), "gdn_recurrent_forward");
    }
    if (n_pre_entries > 0) {
      kernels::gdn_shape sh{p.n_prefill_tokens, n_pre_entries, nk, nv, dk, dv};
      kernels::gdn_args c = g;
      const std::int64_t off = std::int64_t(nd);
      c.q = g.q + off * cd;
      c.k = g.k + off * cd;
      c.v = g.v + off * cd;
      c.g = g.g + off * nv;
      c.beta = g.beta + off * nv;
      c.out = g.out + off * vd;
      c.cu_seqlens = md(p.o_cu_pre);
      c.state_slots = md(p.o_state) + nd;
      mark(st, "deltanet: gated delta rule chunked");
      ok(kernels::gdn_chunked_forward(sh, c, bp<void>(gdn_ws), gdn_ws_bytes, st), "gdn_chunked_forward");
    }
  } else {
    kernels::gdn_shape sh{n, p.n_entries, nk, nv, dk, dv};
    kernels::gdn_args a = g;
    a.cu_seqlens = md(p.o_cu_all);
    a.state_slots = md(p.o_state);
    mark(st, "deltanet: gated delta rule generic");
    ok(cuda_ops::gdn_recurrent_generic(sh, a, st), "gdn_recurrent_generic");
  }
  // z is a column block of the projection: the gated norm's rows are (token, head), read in place (a token's heads
  // are back to back, tokens P_gdn apart) unless its rows are misaligned for the kernel's 8-byte loads (then it is
  // gathered to contiguous rows first; one token's z is contiguous already).
  const bf16* z = pr + 2 * kd + vd;
  const bool z_copy = !z_in_place && n > 1;
  if (z_copy) {
    mark(st, "deltanet: z copy");
    EV_CUDA_CALL(cudaMemcpy2DAsync(bp<bf16>(zc), std::size_t(vd) * 2, z, std::size_t(P_gdn) * 2,
                                   std::size_t(vd) * 2, std::size_t(n), cudaMemcpyDeviceToDevice, st));
    z = bp<bf16>(zc);
  }
  kernels::rmsnorm_args na;
  na.n_rows = n * nv;
  na.dim = dv;
  na.eps = float(cfg.rms_norm_eps);
  na.x = bp<bf16>(core);
  na.x_stride = dv;
  na.z = z;
  na.z_stride = dv;
  na.z_group = z_copy || n == 1 ? 0 : int(nv);  // 0: rows dv apart (gathered, or one token)
  na.z_group_stride = P_gdn;
  na.w = wp<bf16>(L.gnorm);
  na.out = bp<bf16>(gn);
  na.out_stride = dv;
  mark(st, "deltanet: gated norm");
  ok(kernels::rmsnorm_gated(na, st), "rmsnorm_gated");
  mark(st, "deltanet: out_proj");
  gemm_call(st, bp<bf16>(gn), vd, wp<bf16>(L.w_out), n, int(H), int(vd), bp<bf16>(mo), H, kernels::gemm_out::bf16);
}

void cuda_model::impl::ffn_layer(cudaStream_t st, const layer& L) {
  const int n = cur.n_tokens;
  bf16* x = bp<bf16>(xn);
  if (!L.moe) {
    mark(st, "dense mlp: gate_up + swiglu + down");
    gemm_call(st, x, H, wp<bf16>(L.w_gu), n, 2 * I_dense, int(H), bp<bf16>(proj), 2 * I_dense, kernels::gemm_out::bf16);
    ok(cuda_ops::swiglu_generic(n, I_dense, bp<bf16>(proj), 2 * I_dense, bp<bf16>(hbuf), I_dense, st),
       "swiglu");
    gemm_call(st, bp<bf16>(hbuf), I_dense, wp<bf16>(L.w_down), n, int(H), I_dense, bp<bf16>(mo), H,
              kernels::gemm_out::bf16);
    return;
  }
  mark(st, "moe: router proj");
  gemm_call(st, x, H, wp<bf16>(L.w_router), n, E, int(H), bp<float>(rlogits), E, kernels::gemm_out::fp32);
  kernels::moe_router_args ra;
  ra.n_tokens = n;
  ra.n_experts = E;
  ra.top_k = topk;
  ra.renormalize = cfg.norm_topk_prob;
  ra.logits = bp<float>(rlogits);
  ra.logits_stride = E;
  ra.ids = bp<std::int32_t>(rids);
  ra.weights = bp<float>(rweights);
  mark(st, "moe: router softmax top-k");
  ok(kernels::moe_router(ra, st), "moe_router");
  if (opt.record_routing) {
    const std::size_t T = std::size_t(opt.max_step_tokens), li = std::size_t(L.moe_index);
    EV_CUDA_CALL(cudaMemcpyAsync(bp<float>(route_logits) + li * T * std::size_t(E), bp<float>(rlogits),
                                 std::size_t(n) * std::size_t(E) * 4, cudaMemcpyDeviceToDevice, st));
    EV_CUDA_CALL(cudaMemcpyAsync(bp<std::int32_t>(route_ids) + li * T * std::size_t(topk), bp<std::int32_t>(rids),
                                 std::size_t(n) * std::size_t(topk) * 4, cudaMemcpyDeviceToDevice, st));
  }
  if (opt.fast_decode && n <= kDecodeMoeTokens && !opt.use_generic_kernels) {
    cuda_ops::moe_decode_args d;
    d.n_tokens = n;
    d.n_experts = E;
    d.top_k = topk;
    d.hidden = int(H);
    d.inter = I_moe;
    d.x = x;
    d.x_stride = H;
    d.ids = bp<std::int32_t>(rids);
    d.weights = bp<float>(rweights);
    d.w_gate_up = wp<bf16>(L.e_gu);
    d.w_down = wp<bf16>(L.e_down);
    if (L.has_shared) {
      d.shared_inter = S_sh;
      d.w_shared_gate_up = wp<bf16>(L.w_gu);
      d.w_shared_down = wp<bf16>(L.w_down);
      d.w_shared_gate = wp<bf16>(L.w_sgate);
      d.sg = bp<float>(sg);
    }
    d.h = bp<bf16>(dec_h);
    d.h_stride = std::max(I_moe, S_sh);
    d.out = bp<bf16>(mo);
    d.out_stride = H;
    if (cuda_ops::moe_decode_supported(d)) {
      mark(st, "moe: decode experts + shared (2 kernels)");
      ok(cuda_ops::moe_decode(d, st), "moe_decode");
      return;
    }
  }
  if (L.has_shared) {
    mark(st, "moe: shared gate_up proj");
    gemm_call(st, x, H, wp<bf16>(L.w_gu), n, 2 * S_sh, int(H), bp<bf16>(proj), 2 * S_sh, kernels::gemm_out::bf16);
    mark(st, "moe: shared swiglu");
    ok(cuda_ops::swiglu_generic(n, S_sh, bp<bf16>(proj), 2 * S_sh, bp<bf16>(sh_h), S_sh, st), "swiglu (shared)");
    mark(st, "moe: shared down proj");
    gemm_call(st, bp<bf16>(sh_h), S_sh, wp<bf16>(L.w_down), n, int(H), S_sh, bp<bf16>(sh_out), H,
              kernels::gemm_out::bf16);
    mark(st, "moe: shared gate proj");
    gemm_call(st, x, H, wp<bf16>(L.w_sgate), n, 1, int(H), bp<float>(sg), 1, kernels::gemm_out::fp32);
  }
  if (moe_grouped) {
    const int rows = n * topk;
    kernels::moe_permute_args pa;
    pa.n_tokens = n;
    pa.n_experts = E;
    pa.top_k = topk;
    pa.ids = bp<std::int32_t>(rids);
    pa.expert_offsets = bp<std::int32_t>(moe_offsets);
    pa.row_token = bp<std::int32_t>(moe_row_token);
    pa.token_row = bp<std::int32_t>(moe_token_row);
    mark(st, "moe: experts permute");
    ok(kernels::moe_permute(pa, bp<void>(moe_ws), moe_ws_bytes, st), "moe_permute");
    kernels::moe_gate_up_args gu;
    gu.n_rows = rows;
    gu.n_experts = E;
    gu.hidden = int(H);
    gu.inter = I_moe;
    gu.expert_offsets = pa.expert_offsets;
    gu.row_token = pa.row_token;
    gu.x = x;
    gu.x_stride = H;
    gu.w_gate_up = wp<bf16>(L.e_gu);
    gu.h = bp<bf16>(eh);
    gu.h_stride = I_moe;
    mark(st, "moe: experts gate_up+swiglu");
    ok(kernels::moe_gate_up_swiglu(gu, st), "moe_gate_up_swiglu");
    kernels::moe_down_args da;
    da.n_rows = rows;
    da.n_experts = E;
    da.hidden = int(H);
    da.inter = I_moe;
    da.expert_offsets = pa.expert_offsets;
    da.h = bp<bf16>(eh);
    da.h_stride = I_moe;
    da.w_down = wp<bf16>(L.e_down);
    da.y = bp<void>(moe_y);
    da.y_stride = H;
    // Prefill-sized steps keep the routed experts' outputs in bf16 (half the bytes written by moe_down and read by
    // moe_combine: 2.7 -> 1.3 GB a layer at 32K tokens); decode-sized steps keep fp32 (their y is small).
    const kernels::gemm_out y_type = n > kBf16ExpertOutTokens ? kernels::gemm_out::bf16 : kernels::gemm_out::fp32;
    da.y_type = y_type;
    mark(st, "moe: experts down");
    ok(kernels::moe_down(da, st), "moe_down");
    kernels::moe_combine_args cb;
    cb.n_tokens = n;
    cb.top_k = topk;
    cb.hidden = int(H);
    cb.weights = bp<float>(rweights);
    cb.token_row = pa.token_row;
    cb.y = bp<void>(moe_y);
    cb.y_stride = H;
    cb.y_type = y_type;
    if (L.has_shared) {
      cb.shared = bp<bf16>(sh_out);
      cb.shared_stride = H;
      cb.shared_gate_logit = bp<float>(sg);
      cb.shared_gate_stride = 1;
    }
    cb.out = bp<bf16>(mo);
    cb.out_stride = H;
    mark(st, "moe: experts combine + shared");
    ok(kernels::moe_combine(cb, st), "moe_combine");
    return;
  }
  cuda_ops::moe_generic_args ma;
  ma.n_tokens = n;
  ma.n_experts = E;
  ma.top_k = topk;
  ma.hidden = int(H);
  ma.inter = I_moe;
  ma.x = x;
  ma.x_stride = H;
  ma.ids = bp<std::int32_t>(rids);
  ma.weights = bp<float>(rweights);
  ma.w_gate_up = wp<bf16>(L.e_gu);
  ma.w_down = wp<bf16>(L.e_down);
  ma.h = bp<bf16>(eh);
  if (L.has_shared) {
    ma.shared = bp<bf16>(sh_out);
    ma.shared_stride = H;
    ma.shared_gate = bp<float>(sg);
  }
  ma.out = bp<bf16>(mo);
  ma.out_stride = H;
  mark(st, "moe: experts generic");
  ok(cuda_ops::moe_generic(ma, st), "moe_generic");
}

void cuda_model::impl::run(cudaStream_t st) {
  const prepared& p = cur;
  EV_THROW_IF_NOT_KIND(p.valid, invalid_input, "cuda_model::launch: no prepared step");
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  EV_CUDA_CALL(cudaStreamIsCapturing(st, &capture));
  const bool capturing = capture != cudaStreamCaptureStatusNone;
  prof_active = prof && !capturing;
  if (prof_active) {
    if (prof_n > 0) mark(st, "(end)");  // closes the previous launch's last op (the gap after it is not counted)
    ok(cuda_ops::spin(std::int64_t(prof_spin_us) * 1000, st), "spin");
  }
  mark(st, "step: metadata copy");
  EV_CUDA_CALL(cudaMemcpyAsync(b.base + meta, staging, p.used_bytes, cudaMemcpyHostToDevice, st));
  if (capturing) {
    // An event recorded inside a capture cannot be waited on from the host (cudaErrorInvalidValue): the caller
    // marks each replay with replayed(), which records the event after the graph.
    copy_pending = false;
  } else {
    EV_CUDA_CALL(cudaEventRecord(copied, st));
    copy_pending = true;
  }
  const int n = p.n_tokens;
  if (n_linear > 0) {
    cuda_ops::reset_states_args ra;
    ra.n_entries = p.n_entries;
    ra.n_layers = n_linear;
    ra.flags = md(p.o_reset);
    ra.slots = md(p.o_state);
    ra.conv = s.at<bf16>(conv0);
    ra.conv_layer_stride = std::int64_t(n_slots_state) * conv_slot_elems;
    ra.conv_slot_elems = conv_slot_elems;
    ra.rec = s.at<float>(rec0);
    ra.rec_layer_stride = std::int64_t(n_slots_state) * rec_slot_elems;
    ra.rec_slot_elems = rec_slot_elems;
    mark(st, "step: reset states");
    ok(cuda_ops::reset_states(ra, st), "reset_states");
  }
  kernels::embedding_args ea;
  ea.n_tokens = n;
  ea.vocab = int(V);
  ea.dim = int(H);
  ea.table = wp<bf16>(embed);
  ea.ids = md(p.o_ids);
  ea.out = bp<bf16>(res);
  ea.out_stride = H;
  mark(st, "step: embedding");
  ok(kernels::embedding_gather(ea, st), "embedding_gather");

  kernels::rmsnorm_args na;
  na.n_rows = n;
  na.dim = int(H);
  na.eps = float(cfg.rms_norm_eps);
  na.x_stride = H;
  na.residual_stride = H;
  na.out = bp<bf16>(xn);
  na.out_stride = H;
  for (std::size_t li = 0; li < layers.size(); ++li) {
    const layer& L = layers[li];
    // Residual stream: res += (previous block's output in mo), xn = norm(res). Layer 0 norms the embeddings.
    na.x = li == 0 ? bp<bf16>(res) : bp<bf16>(mo);
    na.residual = li == 0 ? nullptr : bp<bf16>(res);
    na.w = wp<bf16>(L.in_norm);
    mark(st, L.kind == layer_kind::full_attention ? "full: " : "deltanet: ", "input add + norm");
    add_norm(st, na, "rmsnorm_residual (input)");
    if (L.kind == layer_kind::full_attention)
      attention_layer(st, L);
    else
      deltanet_layer(st, L);
    na.x = bp<bf16>(mo);
    na.residual = bp<bf16>(res);
    na.w = wp<bf16>(L.post_norm);
    mark(st, L.moe ? "moe: " : "dense mlp: ", "post-attention add + norm");
    add_norm(st, na, "rmsnorm_residual (post-attention)");
    ffn_layer(st, L);
  }
  na.x = bp<bf16>(mo);
  na.residual = bp<bf16>(res);
  na.w = wp<bf16>(final_norm);
  mark(st, "step: final add + norm");
  add_norm(st, na, "rmsnorm_residual (final)");
  // The logit rows: gather the requested tokens' normed states, then lm_head in fp32.
  kernels::embedding_args ga;
  ga.n_tokens = p.n_rows;
  ga.vocab = n;
  ga.dim = int(H);
  ga.table = bp<bf16>(xn);
  ga.ids = md(p.o_rows);
  ga.out = bp<bf16>(xg);
  ga.out_stride = H;
  mark(st, "step: logit row gather");
  ok(kernels::embedding_gather(ga, st), "row gather");
  mark(st, "step: lm_head");
  gemm_call(st, bp<bf16>(xg), H, wp<bf16>(lm_head), p.n_rows, int(V), int(H), bp<float>(logits), V,
            kernels::gemm_out::fp32);
}

// ---------------------------------------------------------------------------------------------------------------------
// Public API.

cuda_model::cuda_model(std::unique_ptr<impl> p) : p_(std::move(p)) {}
cuda_model::~cuda_model() {
  if (p_ && p_->own_stream) cudaStreamSynchronize(p_->own_stream);
}

std::unique_ptr<cuda_model> cuda_model::load(const std::filesystem::path& dir, const cuda_model_options& options) {
  const model_config cfg = load_model_config(dir / "config.json");
  safetensors_dir files(dir);
  return from_tensors(
      cfg, [&files](const std::string& name) { return files.has(name) ? &files.get(name) : nullptr; }, options,
      dir.string());
}

std::unique_ptr<cuda_model> cuda_model::from_tensors(const model_config& cfg, const tensor_lookup& lookup,
                                                     const cuda_model_options& options, const std::string& origin) {
  cfg.validate(origin + "/config.json");
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess) n_dev = 0;
  EV_THROW_IF_NOT_KIND(options.device >= 0 && options.device < n_dev, resource, "cuda_model ", origin,
                       ": CUDA device ", options.device, " not available (", n_dev, " visible)");
  EV_CUDA_CALL(cudaSetDevice(options.device));
  auto p = std::make_unique<impl>();
  p->cfg = cfg;
  p->opt = options;
  p->origin = origin;
  p->build(lookup);
  p->plan_buffers();
  p->allocate_and_upload();
  return std::unique_ptr<cuda_model>(new cuda_model(std::move(p)));
}

const model_config& cuda_model::config() const { return p_->cfg; }
const cuda_model_options& cuda_model::options() const { return p_->opt; }
std::int64_t cuda_model::vocab_size() const { return p_->V; }

sequence_slots::admission cuda_model::open_sequence(std::int64_t expected_tokens) {
  return p_->seqs->open(expected_tokens);
}
void cuda_model::close_sequence(int slot) { p_->seqs->close(slot); }
std::int64_t cuda_model::sequence_length(int slot) const { return p_->seqs->length(slot); }
const sequence_slots& cuda_model::slots() const { return *p_->seqs; }

std::string cuda_model::can_step(const std::vector<step_entry>& batch) const {
  error_kind kind;
  return p_->check_batch(batch, 0, &kind);
}

step_plan cuda_model::prepare(const std::vector<step_entry>& batch, int pad_entries) {
  impl& m = *p_;
  error_kind kind;
  const std::string why = m.check_batch(batch, pad_entries, &kind);
  if (!why.empty()) throw evident::error("cuda_model step: " + why, kind);
  // The previous launch's metadata copy must have left the staging buffer before it is rewritten.
  if (m.copy_pending) {
    EV_CUDA_CALL(cudaEventSynchronize(m.copied));
    m.copy_pending = false;
  }

  // Internal order: decode entries (one token) first, then prefill entries; caller order within each group.
  std::vector<int> order;
  for (int i = 0; i < int(batch.size()); ++i)
    if (batch[std::size_t(i)].n_tokens == 1) order.push_back(i);
  const int n_decode_real = int(order.size());
  for (int i = 0; i < int(batch.size()); ++i)
    if (batch[std::size_t(i)].n_tokens > 1) order.push_back(i);
  const int n_pad = pad_entries > int(batch.size()) ? pad_entries - int(batch.size()) : 0;
  const int n_entries = int(batch.size()) + n_pad;
  int n_tokens = n_pad;
  int n_rows = pad_entries > 0 ? n_entries : 0;
  for (const step_entry& e : batch) {
    n_tokens += e.n_tokens;
    if (pad_entries == 0) n_rows += e.all_logits ? e.n_tokens : 1;
  }
  impl::prepared p;
  m.layout_meta(p, n_tokens, n_entries, n_rows);
  p.n_tokens = n_tokens;
  p.n_entries = n_entries;
  p.n_decode = n_decode_real + n_pad;
  p.n_rows = n_rows;
  p.padded = pad_entries > 0;
  std::int32_t* S = m.staging;
  std::int32_t* ids = S + p.o_ids;
  std::int32_t* pos = S + p.o_pos;
  std::int32_t* slotmap = S + p.o_slotmap;
  std::int32_t* tok_entry = S + p.o_tok_entry;
  std::int32_t* cu_all = S + p.o_cu_all;
  std::int32_t* cu_pre = S + p.o_cu_pre;
  std::int32_t* state = S + p.o_state;
  std::int32_t* seqlen = S + p.o_seqlen;
  std::int32_t* reset = S + p.o_reset;
  std::int32_t* rows = S + p.o_rows;
  std::int32_t* tables = S + p.o_tables;
  // Reserve positions first (can_reserve_all said they fit), so kv_slot() covers the new tokens.
  for (const step_entry& e : batch) m.seqs->reserve(e.slot, e.start + e.n_tokens);
  step_plan plan;
  plan.n_entries = int(batch.size());
  plan.n_padded = n_entries;
  plan.n_tokens = n_tokens;
  plan.decode_only = n_decode_real == int(batch.size());
  plan.graph_safe = plan.decode_only && p.padded;
  plan.logit_row.assign(batch.size(), 0);
  std::vector<int> first_token(batch.size(), 0);
  int t = 0, max_len = 0, max_pre = 0, n_pre_tokens = 0;
  cu_all[0] = 0;
  cu_pre[0] = 0;
  auto put_entry = [&](int ei, const step_entry* e) {
    // e == nullptr: a padding entry (scratch slot, no KV write, no attention context).
    const int nt = e ? e->n_tokens : 1;
    state[ei] = e ? e->slot : m.opt.max_sequences;
    reset[ei] = e ? (e->start == 0 ? 1 : 0) : 1;
    seqlen[ei] = e ? int(e->start + nt) : 0;
    std::int32_t* wrow = tables + std::size_t(ei) * std::size_t(m.max_blocks);
    std::fill(wrow, wrow + m.max_blocks, 0);
    if (e) {
      const auto& blocks = m.seqs->blocks(e->slot);
      std::copy(blocks.begin(), blocks.end(), wrow);
    }
    for (int j = 0; j < nt; ++j, ++t) {
      ids[t] = e ? e->ids[j] : 0;
      pos[t] = e ? int(e->start + j) : 0;
      slotmap[t] = e ? m.seqs->kv_slot(e->slot, e->start + j) : -1;
      tok_entry[t] = ei;
    }
    cu_all[ei + 1] = t;
    max_len = std::max(max_len, seqlen[ei]);
  };
  int ei = 0;
  for (int k = 0; k < n_decode_real; ++k, ++ei) {
    first_token[std::size_t(order[std::size_t(k)])] = t;
    put_entry(ei, &batch[std::size_t(order[std::size_t(k)])]);
  }
  for (int k = 0; k < n_pad; ++k, ++ei) put_entry(ei, nullptr);
  const int pre_t0 = t;
  for (int k = n_decode_real; k < int(order.size()); ++k, ++ei) {
    const step_entry& e = batch[std::size_t(order[std::size_t(k)])];
    first_token[std::size_t(order[std::size_t(k)])] = t;
    put_entry(ei, &e);
    cu_pre[ei - p.n_decode + 1] = t - pre_t0;
    max_pre = std::max(max_pre, e.n_tokens);
    n_pre_tokens += e.n_tokens;
  }
  // Logit rows in caller order.
  int r = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    plan.logit_row[i] = r;
    const step_entry& e = batch[i];
    if (pad_entries == 0 && e.all_logits)
      for (int j = 0; j < e.n_tokens; ++j) rows[r++] = first_token[i] + j;
    else
      rows[r++] = first_token[i] + e.n_tokens - 1;
  }
  for (; r < n_rows; ++r) rows[r] = r;  // padding rows: token r is padding entry r's (decode-only, one token each)
  p.n_prefill_tokens = n_pre_tokens;
  p.max_prefill_len = max_pre;
  // Graph buckets need launch shapes independent of the contexts: the split count then assumes max_context.
  p.max_seq_len = p.padded ? int(std::int64_t(m.max_blocks) * m.opt.block_size) : std::max(max_len, 1);
  p.valid = true;
  m.cur = p;
  plan.n_logit_rows = n_rows;
  return plan;
}

void cuda_model::launch(kernels::stream_t stream) {
  impl& m = *p_;
  cudaStream_t st = stream ? reinterpret_cast<cudaStream_t>(stream) : m.own_stream;
  m.run(st);
}

const float* cuda_model::logits() const { return p_->bp<float>(p_->logits); }

void cuda_model::read_logits(float* host, kernels::stream_t stream) {
  impl& m = *p_;
  cudaStream_t st = stream ? reinterpret_cast<cudaStream_t>(stream) : m.own_stream;
  EV_CUDA_CALL(cudaStreamSynchronize(st));
  m.copy_pending = false;
  if (host)
    EV_CUDA_CALL(cudaMemcpy(host, m.bp<float>(m.logits), std::size_t(m.cur.n_rows) * std::size_t(m.V) * 4,
                            cudaMemcpyDeviceToHost));
}

cuda_routing cuda_model::read_routing(kernels::stream_t stream) {
  impl& m = *p_;
  EV_THROW_IF_NOT_KIND(m.opt.record_routing, invalid_input,
                       "cuda_model::read_routing: the model was loaded without options.record_routing");
  cudaStream_t st = stream ? reinterpret_cast<cudaStream_t>(stream) : m.own_stream;
  EV_CUDA_CALL(cudaStreamSynchronize(st));
  cuda_routing r;
  r.n_tokens = m.cur.n_tokens;
  r.n_experts = m.E;
  r.top_k = m.topk;
  for (std::size_t l = 0; l < m.layers.size(); ++l)
    if (m.layers[l].moe) r.layers.push_back(int(l));
  const std::size_t T = std::size_t(m.opt.max_step_tokens), n = std::size_t(r.n_tokens);
  r.logits.resize(r.layers.size() * n * std::size_t(m.E));
  r.ids.resize(r.layers.size() * n * std::size_t(m.topk));
  for (std::size_t l = 0; l < r.layers.size(); ++l) {
    EV_CUDA_CALL(cudaMemcpy(r.logits.data() + l * n * std::size_t(m.E),
                            m.bp<float>(m.route_logits) + l * T * std::size_t(m.E), n * std::size_t(m.E) * 4,
                            cudaMemcpyDeviceToHost));
    EV_CUDA_CALL(cudaMemcpy(r.ids.data() + l * n * std::size_t(m.topk),
                            m.bp<std::int32_t>(m.route_ids) + l * T * std::size_t(m.topk), n * std::size_t(m.topk) * 4,
                            cudaMemcpyDeviceToHost));
  }
  return r;
}

void cuda_model::replayed(kernels::stream_t stream) {
  impl& m = *p_;
  cudaStream_t st = stream ? reinterpret_cast<cudaStream_t>(stream) : m.own_stream;
  EV_CUDA_CALL(cudaEventRecord(m.copied, st));
  m.copy_pending = true;
}

void cuda_model::set_gemv_max_m(int max_m) { p_->opt.gemv_max_m = std::max(max_m, 0); }
void cuda_model::set_fast_decode(bool on) { p_->opt.fast_decode = on; }

void cuda_model::set_profiling(bool on, int spin_us) {
  p_->prof = on;
  p_->prof_spin_us = std::max(spin_us, 0);
}

void cuda_model::profile_mark(kernels::stream_t stream, const std::string& name) {
  impl& m = *p_;
  cudaStream_t st = stream ? reinterpret_cast<cudaStream_t>(stream) : m.own_stream;
  m.mark(st, name.c_str());
}

std::vector<cuda_profile_entry> cuda_model::read_profile(kernels::stream_t stream) {
  impl& m = *p_;
  cudaStream_t st = stream ? reinterpret_cast<cudaStream_t>(stream) : m.own_stream;
  std::vector<cuda_profile_entry> out;
  if (m.prof_n == 0) return out;
  const bool was = m.prof_active;
  m.prof_active = true;
  m.mark(st, "(end)");
  m.prof_active = was;
  EV_CUDA_CALL(cudaStreamSynchronize(st));
  std::unordered_map<std::string, std::size_t> at;
  for (std::size_t i = 0; i + 1 < m.prof_n; ++i) {
    const std::string& name = m.prof_names[i];
    if (name == "(end)") continue;  // the end of one read's launches to the next launch's spin: not an op
    float ms = 0;
    EV_CUDA_CALL(cudaEventElapsedTime(&ms, m.prof_events[i], m.prof_events[i + 1]));
    auto [it, fresh] = at.try_emplace(name, out.size());
    if (fresh) out.push_back({name, 0.0, 0});
    out[it->second].ms += ms;
    out[it->second].count += 1;
  }
  m.prof_n = 0;
  return out;
}

kernels::stream_t cuda_model::stream() const { return reinterpret_cast<kernels::stream_t>(p_->own_stream); }

step_plan cuda_model::step(const std::vector<step_entry>& batch, float* logits_out) {
  step_plan plan = prepare(batch);
  launch();
  read_logits(logits_out);
  return plan;
}

std::size_t cuda_model::weight_bytes() const { return p_->w.size; }
std::size_t cuda_model::state_bytes() const { return p_->s.size; }
std::size_t cuda_model::buffer_bytes() const { return p_->b.size; }

std::string cuda_model::kernel_report() const {
  const impl& m = *p_;
  std::ostringstream os;
  os << "attention decode: " << (m.attn_fast ? "kernels/attention_decode" : "engine/cuda attention_generic")
     << "; attention prefill: " << (m.attn_prefill_fast ? "kernels/attention_prefill" : "engine/cuda attention_generic")
     << "; gated delta rule: "
     << (m.gdn_fast ? "kernels/gdn_recurrent_forward + gdn_chunked_forward" : "engine/cuda gdn_recurrent_generic")
     << "; MoE experts: " << (m.moe_grouped ? "kernels/moe_permute + grouped GEMMs + combine" : "engine/cuda moe_generic")
     << "; KV blocks " << m.kv_blocks << " x " << m.opt.block_size;
  return os.str();
}

}  // namespace evident::engine
