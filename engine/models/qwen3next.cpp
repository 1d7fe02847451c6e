#include "engine/models/qwen3next.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "engine/base/error.h"

namespace evident::engine {

struct qwen3next_model::layer {
  layer_kind kind = layer_kind::linear_attention;
  std::vector<float> input_norm, post_norm;  // fp32 [hidden]
  // full attention
  weight q_proj, k_proj, v_proj, o_proj;
  std::vector<float> q_norm, k_norm;  // fp32 [head_dim]
  // gated deltanet
  weight in_qkvz, in_ba, out_proj;
  std::vector<float> conv_w;     // fp32 [conv_dim, K]
  std::vector<float> a_log, dt_bias;  // fp32 [n_v_heads]
  std::vector<float> gnorm;      // fp32 [d_v]
  // ffn
  bool moe = false;
  weight gate_proj, up_proj, down_proj;  // dense MLP, or the shared expert
  weight shared_gate;                    // [1, hidden]
  weight router;                         // [n_experts, hidden]
  std::vector<weight> e_gate, e_up, e_down;
};

qwen3next_model::~qwen3next_model() = default;

std::unique_ptr<qwen3next_model> qwen3next_model::load(const std::filesystem::path& dir, thread_pool* pool) {
  model_config cfg = load_model_config(dir / "config.json");
  auto files = std::make_unique<safetensors_dir>(dir);
  const safetensors_dir* f = files.get();
  auto m = from_tensors(
      cfg, [f](const std::string& name) { return f->has(name) ? &f->get(name) : nullptr; }, nullptr, dir.string(),
      pool);
  m->files_ = std::move(files);
  return m;
}

std::unique_ptr<qwen3next_model> qwen3next_model::from_tensors(const model_config& cfg, const tensor_lookup& lookup,
                                                               std::shared_ptr<void> keep_alive, std::string origin,
                                                               thread_pool* pool) {
  cfg.validate(origin + "/config.json");
  std::unique_ptr<qwen3next_model> m(new qwen3next_model());
  m->cfg_ = cfg;
  m->keep_alive_ = std::move(keep_alive);
  m->pool_ = pool ? pool : &default_thread_pool();
  m->build(lookup, origin);
  return m;
}

const tensor_view& find_tensor(const tensor_lookup& lookup, const std::string& origin, const std::string& name,
                               const std::vector<int64_t>& shape) {
  const tensor_view* t = lookup(name);
  EV_THROW_IF_NOT_KIND(t != nullptr, not_found, origin, ": missing tensor ", name, " (expected shape ",
                       shape_string(shape), ")");
  EV_THROW_IF_NOT_MSG(t->shape == shape, origin, ": tensor ", name, ": wrong shape: expected ", shape_string(shape),
                      ", found ", t->shape_string());
  EV_THROW_IF_NOT_MSG(t->dtype == st_dtype::bf16 || t->dtype == st_dtype::f16 || t->dtype == st_dtype::f32, origin,
                      ": tensor ", name, ": unsupported dtype ", t->dtype_name, ", expected BF16, F16 or F32");
  return *t;
}

void qwen3next_model::build(const tensor_lookup& lookup, const std::string& origin) {
  const model_config& c = cfg_;
  auto find = [&](const std::string& name, const std::vector<int64_t>& shape) -> const tensor_view& {
    return find_tensor(lookup, origin, name, shape);
  };
  auto mat_of = [&](const tensor_view& t, int64_t rows, int64_t cols) {
    weight w;
    w.rows = rows;
    w.cols = cols;
    if (t.dtype == st_dtype::bf16) {
      w.dtype = weight_dtype::bf16;
      w.data = t.data;
    } else if (t.dtype == st_dtype::f32 && reinterpret_cast<uintptr_t>(t.data) % 4 == 0) {
      w.dtype = weight_dtype::f32;
      w.data = t.data;
    } else {
      owned_.push_back(to_f32(t));
      w.dtype = weight_dtype::f32;
      w.data = owned_.back().data();
    }
    weight_bytes_ += static_cast<size_t>(rows * cols) * (w.dtype == weight_dtype::bf16 ? 2 : 4);
    return w;
  };
  auto mat = [&](const std::string& name, int64_t rows, int64_t cols) { return mat_of(find(name, {rows, cols}), rows, cols); };
  // A [d0, d1, d2] tensor viewed as a [d0 * d1, d2] matrix.
  auto mat3 = [&](const std::string& name, int64_t d0, int64_t d1, int64_t d2) {
    const tensor_view& t = find(name, {d0, d1, d2});
    tensor_view flat = t;
    flat.shape = {d0 * d1, d2};
    return mat_of(flat, d0 * d1, d2);
  };
  auto vec = [&](const std::string& name, const std::vector<int64_t>& shape) { return to_f32(find(name, shape)); };

  const int64_t H = c.hidden_size;
  embed_ = mat("model.embed_tokens.weight", c.vocab_size, H);
  if (c.tie_word_embeddings) {
    lm_head_ = embed_;
  } else {
    lm_head_ = mat("lm_head.weight", c.vocab_size, H);
  }
  final_norm_ = vec("model.norm.weight", {H});
  layers_.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t li = 0; li < c.num_hidden_layers; ++li) {
    layer& L = layers_[static_cast<size_t>(li)];
    const std::string p = "model.layers." + std::to_string(li) + ".";
    L.kind = c.layer_types[static_cast<size_t>(li)];
    L.input_norm = vec(p + "input_layernorm.weight", {H});
    L.post_norm = vec(p + "post_attention_layernorm.weight", {H});
    if (L.kind == layer_kind::full_attention) {
      const int64_t hd = c.head_dim, nh = c.num_attention_heads, nkv = c.num_key_value_heads;
      L.q_proj = mat(p + "self_attn.q_proj.weight", nh * hd * 2, H);
      L.k_proj = mat(p + "self_attn.k_proj.weight", nkv * hd, H);
      L.v_proj = mat(p + "self_attn.v_proj.weight", nkv * hd, H);
      L.o_proj = mat(p + "self_attn.o_proj.weight", H, nh * hd);
      L.q_norm = vec(p + "self_attn.q_norm.weight", {hd});
      L.k_norm = vec(p + "self_attn.k_norm.weight", {hd});
    } else {
      const int64_t kd = c.linear_key_dim(), vd = c.linear_value_dim(), nv = c.linear_num_value_heads;
      L.in_qkvz = mat(p + "linear_attn.in_proj_qkvz.weight", 2 * kd + 2 * vd, H);
      L.in_ba = mat(p + "linear_attn.in_proj_ba.weight", 2 * nv, H);
      L.out_proj = mat(p + "linear_attn.out_proj.weight", H, vd);
      L.conv_w = vec(p + "linear_attn.conv1d.weight", {c.linear_conv_dim(), 1, c.linear_conv_kernel_dim});
      L.a_log = vec(p + "linear_attn.A_log", {nv});
      L.dt_bias = vec(p + "linear_attn.dt_bias", {nv});
      L.gnorm = vec(p + "linear_attn.norm.weight", {c.linear_value_head_dim});
    }
    L.moe = c.is_moe_layer(li);
    if (L.moe) {
      const int64_t E = c.num_experts, I = c.moe_intermediate_size;
      L.router = mat(p + "mlp.gate.weight", E, H);
      if (c.shared_expert_intermediate_size > 0) {
        const int64_t S = c.shared_expert_intermediate_size;
        L.gate_proj = mat(p + "mlp.shared_expert.gate_proj.weight", S, H);
        L.up_proj = mat(p + "mlp.shared_expert.up_proj.weight", S, H);
        L.down_proj = mat(p + "mlp.shared_expert.down_proj.weight", H, S);
        L.shared_gate = mat(p + "mlp.shared_expert_gate.weight", 1, H);
      }
      L.e_gate.resize(static_cast<size_t>(E));
      L.e_up.resize(static_cast<size_t>(E));
      L.e_down.resize(static_cast<size_t>(E));
      if (lookup(p + "mlp.experts.gate_up_proj") != nullptr) {
        // transformers 5's fused layout: gate_up_proj [E, 2I, H] (gate rows first), down_proj [E, H, I].
        const weight gu = mat3(p + "mlp.experts.gate_up_proj", E, 2 * I, H);
        const weight dn = mat3(p + "mlp.experts.down_proj", E, H, I);
        for (int64_t e = 0; e < E; ++e) {
          L.e_gate[static_cast<size_t>(e)] = gu.slice_rows(e * 2 * I, I);
          L.e_up[static_cast<size_t>(e)] = gu.slice_rows(e * 2 * I + I, I);
          L.e_down[static_cast<size_t>(e)] = dn.slice_rows(e * H, H);
        }
        continue;
      }
      for (int64_t e = 0; e < E; ++e) {
        const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
        L.e_gate[static_cast<size_t>(e)] = mat(q + "gate_proj.weight", I, H);
        L.e_up[static_cast<size_t>(e)] = mat(q + "up_proj.weight", I, H);
        L.e_down[static_cast<size_t>(e)] = mat(q + "down_proj.weight", H, I);
      }
    } else {
      const int64_t I = c.intermediate_size;
      L.gate_proj = mat(p + "mlp.gate_proj.weight", I, H);
      L.up_proj = mat(p + "mlp.up_proj.weight", I, H);
      L.down_proj = mat(p + "mlp.down_proj.weight", H, I);
    }
  }
  // Rotary inverse frequencies as transformers computes them: fp32 base ** (fp32(2i) / dim).
  const int64_t rd = c.rotary_dim();
  inv_freq_.resize(static_cast<size_t>(rd / 2));
  for (int64_t i = 0; i < rd / 2; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(rd);
    inv_freq_[static_cast<size_t>(i)] =
        static_cast<float>(1.0 / std::pow(static_cast<double>(static_cast<float>(c.rope_theta)), static_cast<double>(expo)));
  }
}

sequence_memory qwen3next_model::new_sequence() const {
  sequence_memory m;
  const size_t nl = layers_.size();
  m.k.resize(nl);
  m.v.resize(nl);
  m.conv.resize(nl);
  m.recurrent.resize(nl);
  for (size_t l = 0; l < nl; ++l) {
    if (layers_[l].kind == layer_kind::linear_attention) {
      m.conv[l].assign(static_cast<size_t>((cfg_.linear_conv_kernel_dim - 1) * cfg_.linear_conv_dim()), 0.0f);
      m.recurrent[l].assign(static_cast<size_t>(cfg_.linear_num_value_heads * cfg_.linear_key_head_dim *
                                                cfg_.linear_value_head_dim),
                            0.0f);
    }
  }
  return m;
}

void qwen3next_model::forward(sequence_memory& mem, const int32_t* ids, int64_t n, float* logits,
                              bool all_logits, routing_trace* trace) const {
  EV_ASSERT(n >= 1);
  EV_ASSERT(mem.k.size() == layers_.size(), "sequence_memory of another model");
  const int64_t H = cfg_.hidden_size;
  std::vector<float> x(static_cast<size_t>(n * H)), xn(x.size()), out(x.size());
  for (int64_t t = 0; t < n; ++t) {
    EV_THROW_IF_NOT_MSG(ids[t] >= 0 && ids[t] < cfg_.vocab_size, "token id ", ids[t], " at position ", t,
                        " is out of range [0, ", cfg_.vocab_size, ")");
    embed_.row_f32(ids[t], x.data() + t * H);
  }
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  for (size_t li = 0; li < layers_.size(); ++li) {
    const layer& L = layers_[li];
    for (int64_t t = 0; t < n; ++t) rmsnorm_1p(x.data() + t * H, L.input_norm.data(), eps, H, xn.data() + t * H);
    if (L.kind == layer_kind::full_attention)
      attention(L, static_cast<int>(li), mem, xn.data(), n, out.data());
    else
      deltanet(L, static_cast<int>(li), mem, xn.data(), n, out.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += out[i];
    for (int64_t t = 0; t < n; ++t) rmsnorm_1p(x.data() + t * H, L.post_norm.data(), eps, H, xn.data() + t * H);
    routing_trace::layer_routing* rec = nullptr;
    if (trace != nullptr && L.moe) {
      rec = &trace->records.emplace_back();
      rec->layer = static_cast<int>(li);
      rec->start = mem.n_past;
    }
    ffn(L, xn.data(), n, out.data(), rec);
    for (size_t i = 0; i < x.size(); ++i) x[i] += out[i];
  }
  mem.n_past += n;
  if (logits == nullptr) return;
  const int64_t first = all_logits ? 0 : n - 1;
  for (int64_t t = first; t < n; ++t) rmsnorm_1p(x.data() + t * H, final_norm_.data(), eps, H, xn.data() + t * H);
  matmul(*pool_, xn.data() + first * H, n - first, lm_head_, logits);
}

// ---------------------------------------------------------------------------------------------------------------------
// Gated attention.

void qwen3next_model::attention(const layer& L, int li, sequence_memory& mem, const float* xn, int64_t n,
                                float* out) const {
  const int64_t hd = cfg_.head_dim, nh = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads;
  const int64_t kvd = nkv * hd, rd = cfg_.rotary_dim(), half = rd / 2;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  std::vector<float> qg(static_cast<size_t>(n * nh * hd * 2)), kn(static_cast<size_t>(n * kvd)), vn(kn.size());
  matmul(*pool_, xn, n, L.q_proj, qg.data());
  matmul(*pool_, xn, n, L.k_proj, kn.data());
  matmul(*pool_, xn, n, L.v_proj, vn.data());
  const int64_t p0 = mem.n_past;
  std::vector<float> q(static_cast<size_t>(n * nh * hd)), gate(q.size());
  auto rope = [&](float* v, int64_t pos) {
    for (int64_t i = 0; i < half; ++i) {
      const float f = static_cast<float>(pos) * inv_freq_[static_cast<size_t>(i)];
      const float cs = std::cos(f), sn = std::sin(f);
      const float a = v[i], b = v[i + half];
      v[i] = a * cs - b * sn;
      v[i + half] = b * cs + a * sn;
    }
  };
  std::vector<float> tmp(static_cast<size_t>(hd));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < nh; ++h) {
      const float* src = qg.data() + (t * nh + h) * hd * 2;
      float* qd = q.data() + (t * nh + h) * hd;
      rmsnorm_1p(src, L.q_norm.data(), eps, hd, qd);
      std::memcpy(gate.data() + (t * nh + h) * hd, src + hd, static_cast<size_t>(hd) * 4);
      rope(qd, p0 + t);
    }
    for (int64_t h = 0; h < nkv; ++h) {
      float* kd = kn.data() + t * kvd + h * hd;
      std::memcpy(tmp.data(), kd, static_cast<size_t>(hd) * 4);
      rmsnorm_1p(tmp.data(), L.k_norm.data(), eps, hd, kd);
      rope(kd, p0 + t);
    }
  }
  auto& K = mem.k[static_cast<size_t>(li)];
  auto& V = mem.v[static_cast<size_t>(li)];
  K.insert(K.end(), kn.begin(), kn.end());
  V.insert(V.end(), vn.begin(), vn.end());
  const int64_t total = p0 + n;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t rep = nh / nkv;
  std::vector<float> attn(static_cast<size_t>(n * nh * hd));
  pool_->parallel_for(n * nh, [&](int64_t b, int64_t e) {
    std::vector<float> sc(static_cast<size_t>(total));
    for (int64_t job = b; job < e; ++job) {
      const int64_t t = job / nh, h = job % nh, g = h / rep;
      const float* qv = q.data() + (t * nh + h) * hd;
      const int64_t upto = p0 + t + 1;  // causal
      float mx = -INFINITY;
      for (int64_t s = 0; s < upto; ++s) {
        sc[static_cast<size_t>(s)] = dot_f32(qv, K.data() + s * kvd + g * hd, hd) * scale;
        mx = std::max(mx, sc[static_cast<size_t>(s)]);
      }
      float sum = 0;
      for (int64_t s = 0; s < upto; ++s) sum += (sc[static_cast<size_t>(s)] = std::exp(sc[static_cast<size_t>(s)] - mx));
      const float inv = 1.0f / sum;
      float* o = attn.data() + (t * nh + h) * hd;
      std::fill(o, o + hd, 0.0f);
      for (int64_t s = 0; s < upto; ++s) axpy_f32(sc[static_cast<size_t>(s)] * inv, V.data() + s * kvd + g * hd, o, hd);
      const float* gt = gate.data() + (t * nh + h) * hd;
      for (int64_t i = 0; i < hd; ++i) o[i] *= sigmoid(gt[i]);
    }
  });
  matmul(*pool_, attn.data(), n, L.o_proj, out);
}

// ---------------------------------------------------------------------------------------------------------------------
// Gated DeltaNet.

namespace {

void l2norm_inplace(float* v, int64_t n) {
  float ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += v[i] * v[i];
  const float inv = 1.0f / std::sqrt(ss + 1e-6f);
  for (int64_t i = 0; i < n; ++i) v[i] *= inv;
}

// The recurrent form for one head over n tokens (used for decoding).
//   q, k fp32 [n][dk] (row stride qs / ks), v fp32 [n][dv] (stride vs), g, beta [n] (stride gs), S fp32 [dk][dv],
//   o fp32 [n][dv] (stride os).
void delta_recurrent(const float* q, int64_t qs, const float* k, int64_t ks, const float* v, int64_t vs,
                     const float* g, const float* beta, int64_t gs, int64_t n, int64_t dk, int64_t dv, float* S,
                     float* o, int64_t os) {
  std::vector<float> kv(static_cast<size_t>(dv));
  for (int64_t t = 0; t < n; ++t) {
    const float decay = std::exp(g[t * gs]);
    const float* kt = k + t * ks;
    const float* qt = q + t * qs;
    for (int64_t i = 0; i < dk * dv; ++i) S[i] *= decay;
    std::fill(kv.begin(), kv.end(), 0.0f);
    for (int64_t i = 0; i < dk; ++i) axpy_f32(kt[i], S + i * dv, kv.data(), dv);
    const float b = beta[t * gs];
    for (int64_t j = 0; j < dv; ++j) kv[static_cast<size_t>(j)] = (v[t * vs + j] - kv[static_cast<size_t>(j)]) * b;
    for (int64_t i = 0; i < dk; ++i) axpy_f32(kt[i], kv.data(), S + i * dv, dv);
    float* ot = o + t * os;
    std::fill(ot, ot + dv, 0.0f);
    for (int64_t i = 0; i < dk; ++i) axpy_f32(qt[i], S + i * dv, ot, dv);
  }
}

// The chunked (WY) form of transformers' torch_chunk_gated_delta_rule, for one head, chunks of 64 tokens; the last
// chunk is zero-padded (beta = g = 0 there, so padding changes neither the outputs nor the state). Same arguments.
void delta_chunked(const float* q, int64_t qs, const float* k, int64_t ks, const float* v, int64_t vs, const float* g,
                   const float* beta, int64_t gs, int64_t n, int64_t dk, int64_t dv, float* S, float* o, int64_t os) {
  constexpr int64_t C = 64;
  std::vector<float> Q(C * dk), Kc(C * dk), Kb(C * dk), Vb(C * dv), G(C), U(C * dv), W(C * dk),
      A(C * C), D(C * C), vnew(C * dv), oc(C * dv), tmp(static_cast<size_t>(std::max(dk, dv)));
  for (int64_t c0 = 0; c0 < n; c0 += C) {
    const int64_t m = std::min(C, n - c0);
    std::fill(Q.begin(), Q.end(), 0.0f);
    std::fill(Kc.begin(), Kc.end(), 0.0f);
    std::fill(Kb.begin(), Kb.end(), 0.0f);
    std::fill(Vb.begin(), Vb.end(), 0.0f);
    float cum = 0;
    for (int64_t i = 0; i < C; ++i) {
      if (i < m) {
        const int64_t t = c0 + i;
        const float b = beta[t * gs];
        cum += g[t * gs];
        for (int64_t d = 0; d < dk; ++d) {
          Q[i * dk + d] = q[t * qs + d];
          Kc[i * dk + d] = k[t * ks + d];
          Kb[i * dk + d] = k[t * ks + d] * b;
        }
        for (int64_t d = 0; d < dv; ++d) Vb[i * dv + d] = v[t * vs + d] * b;
      }
      G[i] = cum;
    }
    // decay[i][j] = exp(G_i - G_j) for j <= i (used twice below).
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j <= i; ++j) D[i * C + j] = std::exp(G[i] - G[j]);
    // A = -(Kb K^T * decay) strictly lower; then the forward substitution of the reference; T = A + I.
    std::fill(A.begin(), A.end(), 0.0f);
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < i; ++j)
        A[i * C + j] = -dot_f32(&Kb[i * dk], &Kc[j * dk], dk) * D[i * C + j];
    for (int64_t i = 1; i < C; ++i) {
      // row_i[j] += sum_{mm<i} row_i[mm] * A[mm][j]  (rows mm < i are already final)
      std::vector<float> row(A.begin() + i * C, A.begin() + i * C + i);
      for (int64_t j = 0; j < i; ++j) {
        float s = 0;
        for (int64_t mm = j + 1; mm < i; ++mm) s += row[static_cast<size_t>(mm)] * A[mm * C + j];
        A[i * C + j] = row[static_cast<size_t>(j)] + s;
      }
    }
    float* T = A.data();  // T = A + I, in place
    for (int64_t i = 0; i < C; ++i) T[i * C + i] += 1.0f;
    // U = T Vb  [C, dv];  W = T (Kb * exp(G))  [C, dk]
    std::fill(U.begin(), U.end(), 0.0f);
    std::fill(W.begin(), W.end(), 0.0f);
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        const float tij = T[i * C + j];
        if (tij == 0.0f) continue;
        axpy_f32(tij, &Vb[j * dv], &U[i * dv], dv);
        axpy_f32(tij * std::exp(G[j]), &Kb[j * dk], &W[i * dk], dk);
      }
    // v_new = U - W S ; o = (Q * exp(G)) S + tril(Q K^T * decay) v_new
    for (int64_t i = 0; i < C; ++i) {
      float* vn = &vnew[i * dv];
      std::memcpy(vn, &U[i * dv], static_cast<size_t>(dv) * 4);
      for (int64_t d = 0; d < dk; ++d) axpy_f32(-W[i * dk + d], S + d * dv, vn, dv);
    }
    for (int64_t i = 0; i < m; ++i) {
      float* oi = &oc[i * dv];
      std::fill(oi, oi + dv, 0.0f);
      const float eg = std::exp(G[i]);
      for (int64_t d = 0; d < dk; ++d) axpy_f32(Q[i * dk + d] * eg, S + d * dv, oi, dv);
      for (int64_t j = 0; j <= i; ++j) {
        const float a = dot_f32(&Q[i * dk], &Kc[j * dk], dk) * D[i * C + j];
        axpy_f32(a, &vnew[j * dv], oi, dv);
      }
      std::memcpy(o + (c0 + i) * os, oi, static_cast<size_t>(dv) * 4);
    }
    // S = exp(G_last) S + sum_i (K_i exp(G_last - G_i))^T v_new_i
    const float glast = G[C - 1];
    const float el = std::exp(glast);
    for (int64_t i = 0; i < dk * dv; ++i) S[i] *= el;
    for (int64_t i = 0; i < C; ++i) {
      const float w = std::exp(glast - G[i]);
      for (int64_t d = 0; d < dk; ++d) {
        const float kd = Kc[i * dk + d] * w;
        if (kd != 0.0f) axpy_f32(kd, &vnew[i * dv], S + d * dv, dv);
      }
    }
  }
}

}  // namespace

void qwen3next_model::deltanet(const layer& L, int li, sequence_memory& mem, const float* xn, int64_t n,
                               float* out) const {
  const int64_t nk = cfg_.linear_num_key_heads, nv = cfg_.linear_num_value_heads;
  const int64_t dk = cfg_.linear_key_head_dim, dv = cfg_.linear_value_head_dim, r = nv / nk;
  const int64_t kd = nk * dk, vd = nv * dv, cd = 2 * kd + vd, K = cfg_.linear_conv_kernel_dim;
  const int64_t pq = 2 * kd + 2 * vd, pb = 2 * nv;
  std::vector<float> qkvz(static_cast<size_t>(n * pq)), ba(static_cast<size_t>(n * pb));
  matmul(*pool_, xn, n, L.in_qkvz, qkvz.data());
  matmul(*pool_, xn, n, L.in_ba, ba.data());
  // Un-group: per key head g the projection holds [q (dk) | k (dk) | v (r*dv) | z (r*dv)] and [b (r) | a (r)].
  // mixed = [q of all heads | k of all heads | v of all heads] is the conv input.
  const int64_t hist = K - 1;
  std::vector<float> mixed(static_cast<size_t>((hist + n) * cd)), z(static_cast<size_t>(n * vd));
  std::vector<float> gdec(static_cast<size_t>(n * nv)), beta(gdec.size());
  auto& conv_state = mem.conv[static_cast<size_t>(li)];
  std::memcpy(mixed.data(), conv_state.data(), static_cast<size_t>(hist * cd) * 4);
  const int64_t gsz = 2 * dk + 2 * r * dv;
  for (int64_t t = 0; t < n; ++t) {
    const float* src = qkvz.data() + t * pq;
    float* dst = mixed.data() + (hist + t) * cd;
    for (int64_t g = 0; g < nk; ++g) {
      const float* s = src + g * gsz;
      std::memcpy(dst + g * dk, s, static_cast<size_t>(dk) * 4);
      std::memcpy(dst + kd + g * dk, s + dk, static_cast<size_t>(dk) * 4);
      std::memcpy(dst + 2 * kd + g * r * dv, s + 2 * dk, static_cast<size_t>(r * dv) * 4);
      std::memcpy(z.data() + t * vd + g * r * dv, s + 2 * dk + r * dv, static_cast<size_t>(r * dv) * 4);
      const float* bsrc = ba.data() + t * pb + g * 2 * r;
      for (int64_t j = 0; j < r; ++j) {
        const int64_t h = g * r + j;
        beta[static_cast<size_t>(t * nv + h)] = sigmoid(bsrc[j]);
        const float a = bsrc[r + j];
        gdec[static_cast<size_t>(t * nv + h)] =
            -std::exp(L.a_log[static_cast<size_t>(h)]) * softplus(a + L.dt_bias[static_cast<size_t>(h)]);
      }
    }
  }
  // Causal depth-wise conv + SiLU.
  std::vector<float> conv(static_cast<size_t>(n * cd));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t ch = 0; ch < cd; ++ch) {
      float s = 0;
      for (int64_t i = 0; i < K; ++i) s += L.conv_w[static_cast<size_t>(ch * K + i)] * mixed[static_cast<size_t>((t + i) * cd + ch)];
      conv[static_cast<size_t>(t * cd + ch)] = silu(s);
    }
  std::memcpy(conv_state.data(), mixed.data() + n * cd, static_cast<size_t>(hist * cd) * 4);
  // L2-normalise q and k per head, scale q.
  const float qscale = 1.0f / std::sqrt(static_cast<float>(dk));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t g = 0; g < nk; ++g) {
      float* qh = conv.data() + t * cd + g * dk;
      float* kh = conv.data() + t * cd + kd + g * dk;
      l2norm_inplace(qh, dk);
      for (int64_t i = 0; i < dk; ++i) qh[i] *= qscale;
      l2norm_inplace(kh, dk);
    }
  std::vector<float> core(static_cast<size_t>(n * vd));
  float* state = mem.recurrent[static_cast<size_t>(li)].data();
  pool_->parallel_for(nv, [&](int64_t b, int64_t e) {
    for (int64_t h = b; h < e; ++h) {
      const int64_t g = h / r;
      const float* qh = conv.data() + g * dk;
      const float* kh = conv.data() + kd + g * dk;
      const float* vh = conv.data() + 2 * kd + h * dv;
      float* S = state + h * dk * dv;
      if (n == 1)
        delta_recurrent(qh, cd, kh, cd, vh, cd, gdec.data() + h, beta.data() + h, nv, n, dk, dv, S, core.data() + h * dv, vd);
      else
        delta_chunked(qh, cd, kh, cd, vh, cd, gdec.data() + h, beta.data() + h, nv, n, dk, dv, S, core.data() + h * dv, vd);
    }
  });
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  std::vector<float> normed(core.size());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < nv; ++h) {
      const int64_t off = t * vd + h * dv;
      rmsnorm_gated(core.data() + off, L.gnorm.data(), z.data() + off, eps, dv, normed.data() + off);
    }
  matmul(*pool_, normed.data(), n, L.out_proj, out);
}

// ---------------------------------------------------------------------------------------------------------------------
// Feed-forward: dense SwiGLU or sparse MoE + shared expert.

void qwen3next_model::ffn(const layer& L, const float* xn, int64_t n, float* out,
                          routing_trace::layer_routing* rec) const {
  const int64_t H = cfg_.hidden_size;
  auto swiglu = [&](const weight& gp, const weight& up, const weight& dp, const float* x, int64_t nt, float* y,
                    bool serial) {
    const int64_t I = gp.rows;
    std::vector<float> a(static_cast<size_t>(nt * I)), b(a.size());
    if (serial) {
      matmul_serial(x, nt, gp, a.data());
      matmul_serial(x, nt, up, b.data());
    } else {
      matmul(*pool_, x, nt, gp, a.data());
      matmul(*pool_, x, nt, up, b.data());
    }
    for (size_t i = 0; i < a.size(); ++i) a[i] = silu(a[i]) * b[i];
    if (serial)
      matmul_serial(a.data(), nt, dp, y);
    else
      matmul(*pool_, a.data(), nt, dp, y);
  };
  if (!L.moe) {
    swiglu(L.gate_proj, L.up_proj, L.down_proj, xn, n, out, false);
    return;
  }
  const int64_t E = cfg_.num_experts, topk = cfg_.num_experts_per_tok;
  std::vector<float> probs(static_cast<size_t>(n * E));
  matmul(*pool_, xn, n, L.router, probs.data());
  if (rec != nullptr) {
    rec->n_tokens = n;
    rec->n_experts = E;
    rec->top_k = topk;
    rec->logits = probs;
    rec->ids.resize(static_cast<size_t>(n * topk));
  }
  // Routing: softmax in fp32, top-k (ties to the lower index, as a stable sort), optional renormalisation.
  std::vector<std::vector<std::pair<int64_t, float>>> per_expert(static_cast<size_t>(E));  // (token, weight)
  std::vector<int64_t> idx(static_cast<size_t>(E));
  for (int64_t t = 0; t < n; ++t) {
    float* p = probs.data() + t * E;
    const float mx = *std::max_element(p, p + E);
    float sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += (p[e] = std::exp(p[e] - mx));
    for (int64_t e = 0; e < E; ++e) p[e] /= sum;
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + topk, idx.end(),
                      [&](int64_t a, int64_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    if (rec != nullptr)
      for (int64_t j = 0; j < topk; ++j)
        rec->ids[static_cast<size_t>(t * topk + j)] = static_cast<int32_t>(idx[static_cast<size_t>(j)]);
    float s = 0;
    for (int64_t j = 0; j < topk; ++j) s += p[idx[static_cast<size_t>(j)]];
    for (int64_t j = 0; j < topk; ++j) {
      const int64_t e = idx[static_cast<size_t>(j)];
      per_expert[static_cast<size_t>(e)].push_back({t, cfg_.norm_topk_prob ? p[e] / s : p[e]});
    }
  }
  if (rec != nullptr) rec->probs = probs;
  std::vector<int64_t> active;
  for (int64_t e = 0; e < E; ++e)
    if (!per_expert[static_cast<size_t>(e)].empty()) active.push_back(e);
  std::vector<std::vector<float>> eout(active.size());
  auto run_expert = [&](size_t ai, bool serial) {
    const int64_t e = active[ai];
    const auto& toks = per_expert[static_cast<size_t>(e)];
    const int64_t nt = static_cast<int64_t>(toks.size());
    std::vector<float> xin(static_cast<size_t>(nt * H));
    for (int64_t j = 0; j < nt; ++j)
      std::memcpy(xin.data() + j * H, xn + toks[static_cast<size_t>(j)].first * H, static_cast<size_t>(H) * 4);
    eout[ai].resize(static_cast<size_t>(nt * H));
    swiglu(L.e_gate[static_cast<size_t>(e)], L.e_up[static_cast<size_t>(e)], L.e_down[static_cast<size_t>(e)],
           xin.data(), nt, eout[ai].data(), serial);
  };
  if (static_cast<int>(active.size()) >= 2 * pool_->size()) {
    // Many experts with few tokens each: the threads take whole experts (one dispatch instead of three per expert).
    pool_->parallel_for(static_cast<int64_t>(active.size()), [&](int64_t b, int64_t e) {
      for (int64_t ai = b; ai < e; ++ai) run_expert(static_cast<size_t>(ai), true);
    });
  } else {
    for (size_t ai = 0; ai < active.size(); ++ai) run_expert(ai, false);
  }
  // Shared expert, gated.
  if (!L.gate_proj.empty()) {
    swiglu(L.gate_proj, L.up_proj, L.down_proj, xn, n, out, false);
    std::vector<float> sg(static_cast<size_t>(n));
    matmul_serial(xn, n, L.shared_gate, sg.data());
    for (int64_t t = 0; t < n; ++t) {
      const float s = sigmoid(sg[static_cast<size_t>(t)]);
      for (int64_t i = 0; i < H; ++i) out[t * H + i] *= s;
    }
  } else {
    std::fill(out, out + n * H, 0.0f);
  }
  // Weighted sum of the routed experts, in expert order (deterministic).
  for (size_t ai = 0; ai < active.size(); ++ai) {
    const auto& toks = per_expert[static_cast<size_t>(active[ai])];
    for (size_t j = 0; j < toks.size(); ++j)
      axpy_f32(toks[j].second, eout[ai].data() + static_cast<int64_t>(j) * H, out + toks[j].first * H, H);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// routing_trace

namespace {

// v_(k) - v_(k+1) of one token's row v [n_experts], the chosen set being ids [top_k]: the smallest chosen value
// minus the largest unchosen one.
float routing_margin(const float* v, const int32_t* ids, int64_t n_experts, int64_t top_k) {
  if (top_k >= n_experts) return std::numeric_limits<float>::infinity();
  float kth = std::numeric_limits<float>::infinity(), next = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < top_k; ++j) kth = std::min(kth, v[ids[j]]);
  for (int64_t e = 0; e < n_experts; ++e)
    if (std::find(ids, ids + top_k, static_cast<int32_t>(e)) == ids + top_k) next = std::max(next, v[e]);
  return kth - next;
}

}  // namespace

float routing_trace::layer_routing::prob_margin(int64_t t) const {
  EV_ASSERT(t >= 0 && t < n_tokens);
  return routing_margin(probs.data() + t * n_experts, ids.data() + t * top_k, n_experts, top_k);
}

float routing_trace::layer_routing::logit_margin(int64_t t) const {
  EV_ASSERT(t >= 0 && t < n_tokens);
  return routing_margin(logits.data() + t * n_experts, ids.data() + t * top_k, n_experts, top_k);
}

}  // namespace evident::engine
