// Sampling on the GPU.
// Greedy: ids[r] = argmax_j logits[r][j] (the lowest index among equal maxima; NaN never wins).
// logits fp32 [n_rows, vocab] with row stride; ids int32 [n_rows].
#pragma once

#include <cstdint>

#include "kernels/status.h"

namespace evident::kernels {

struct argmax_args {
  int n_rows = 0;
  int vocab = 0;
  const float* logits = nullptr;
  std::int64_t stride = 0;
  std::int32_t* ids = nullptr;
};

status sample_greedy(const argmax_args& args, stream_t stream);
void sample_greedy_ref(const argmax_args& args);

// Temperature + top-k + top-p + min-p with per-row parameters, following engine::sampler (engine/sampling.h) steps 3-6;
// repetition / presence penalties are the caller's (apply them to the logits first). For row r:
//   temperature[r] <= 0 (or NaN): greedy, as sample_greedy.
//   x_j = logits[r][j] * (1.0f / temperature[r]) in fp32. Candidates in ORDER: x descending, ties by lower id first
//        (NaN logits count as -inf).
//   e_j = the fixed-point weight  llrint(exp(double(x_j - x_max)) * 2^44)  (uint64; the top candidate has 2^44;
//        a token whose probability is below 2^-45 of the top one's has weight 0 and is never drawn).
//   top_k[r] in (0, vocab): keep the first top_k[r] candidates (0 or >= vocab: all).
//   top_p[r] < 1: then keep the shortest prefix whose weight sum reaches ceil(top_p * Z1), Z1 the kept weight sum
//        (the most likely token always stays).
//   min_p[r] > 0: then keep the prefix of candidates with e_j >= ceil(min_p * 2^44) (at least one).
//   draw: Z = the kept weight sum, t = min(floor(u[r] * Z), Z - 1); the token is the first kept candidate whose
//        cumulative weight exceeds t.
// All sums are exact integers, so the CUDA kernel and sample_ref pick the same token for the same u, and repeated runs
// agree. (Caveat: the weights come from fp64 exp(), CUDA's on the device and the C library's on the host, which may
// differ in the last bit; that changes an integer weight only when exp() * 2^44 lies within ~1e-3 of a rounding
// boundary, and the pick only when u then falls on that weight's boundary.) top_k / top_p / min_p may be null (off for every row); temperature and uniforms may not.
// CUDA: one block per row, radix selection over (x, id) keys (no sort of the vocabulary); vocab <= 262144.
struct sample_args {
  int n_rows = 0;
  int vocab = 0;
  const float* logits = nullptr;  // fp32 [n_rows, vocab], row stride `stride`; not modified
  std::int64_t stride = 0;
  const float* temperature = nullptr;  // fp32 [n_rows]
  const std::int32_t* top_k = nullptr; // int32 [n_rows] or null
  const float* top_p = nullptr;        // fp32 [n_rows] in (0, 1], or null
  const float* min_p = nullptr;        // fp32 [n_rows] in [0, 1], or null
  const float* uniforms = nullptr;     // fp32 [n_rows] in [0, 1)
  std::int32_t* ids = nullptr;         // int32 [n_rows]
};
status sample(const sample_args& args, stream_t stream);
void sample_ref(const sample_args& args);  // host pointers; a full sort of every row

// Deterministic uniforms for `sample`, on the device (so a decode step needs no host round trip):
//   u[r] = (splitmix64(seeds[r] ^ splitmix64(steps[r])) >> 40) * 2^-24   in [0, 1)
// with splitmix64(z) = the finaliser of z + 0x9E3779B97F4A7C15 (Steele et al.; exact integer arithmetic, so
// uniforms_ref gives the same floats). seeds, steps: uint64 / int64 [n_rows] (e.g. the request seed and the index of
// the token being generated); u fp32 [n_rows].
struct uniforms_args {
  int n_rows = 0;
  const std::uint64_t* seeds = nullptr;
  const std::int64_t* steps = nullptr;
  float* u = nullptr;
};
status fill_uniforms(const uniforms_args& args, stream_t stream);
void fill_uniforms_ref(const uniforms_args& args);

}  // namespace evident::kernels
