#include "engine/memory.h"

#include "engine/base/error.h"

namespace evident::engine {

static size_t vec_bytes(const std::vector<std::vector<float>>& vs) {
  size_t b = 0;
  for (const auto& v : vs) b += v.size() * sizeof(float);
  return b;
}

size_t state_snapshot::bytes() const { return vec_bytes(conv) + vec_bytes(recurrent); }

state_snapshot sequence_memory::snapshot() const {
  state_snapshot s;
  s.n_past = n_past;
  s.conv = conv;
  s.recurrent = recurrent;
  return s;
}

void sequence_memory::restore(const state_snapshot& s) {
  EV_ASSERT(s.n_past <= n_past, "snapshot at ", s.n_past, " is past the sequence end ", n_past);
  EV_ASSERT(s.conv.size() == conv.size() && s.recurrent.size() == recurrent.size(), "snapshot of another model");
  for (size_t l = 0; l < k.size(); ++l) {
    if (k[l].empty()) continue;
    const size_t row = k[l].size() / static_cast<size_t>(n_past);
    k[l].resize(row * static_cast<size_t>(s.n_past));
    v[l].resize(row * static_cast<size_t>(s.n_past));
  }
  conv = s.conv;
  recurrent = s.recurrent;
  n_past = s.n_past;
}

size_t sequence_memory::bytes() const { return vec_bytes(k) + vec_bytes(v) + vec_bytes(conv) + vec_bytes(recurrent); }

}  // namespace evident::engine
