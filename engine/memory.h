// engine::sequence_memory: what one sequence's layers remember between forward calls on the CPU backend.
//
//   full_attention layer l   K and V of every past position        fp32 [n_past, n_kv_heads * head_dim] each
//   linear_attention layer l conv state: the last K-1 conv inputs    fp32 [K-1, conv_dim]  (oldest row first)
//                            recurrent state S per value head        fp32 [n_v_heads, d_k, d_v]
//
// Prefix reuse: attention KV is append-only, so a snapshot only has to copy the DeltaNet/conv state and remember
// n_past; restore() truncates KV back to that length and puts the DeltaNet/conv state back. Snapshots therefore
// restore exactly (bit for bit) the state the sequence had when it was taken.
//
//   new ──forward(n)──► n_past += n ──snapshot()──► state_snapshot{n_past, conv, recurrent}
//                          ▲                                   │
//                          └──────────── restore(snap) ◄───────┘   requires: snap.n_past <= n_past and the KV rows
//                                                                  [0, snap.n_past) are those of the snapshot's
//                                                                  history (same sequence, or a copy of it)
// Thread-safety: none; one sequence is used by one thread at a time. Copying a sequence_memory gives an independent
// sequence (a fork).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace evident::engine {

struct state_snapshot {
  int64_t n_past = 0;
  std::vector<std::vector<float>> conv;       // per linear layer (empty vectors for attention layers)
  std::vector<std::vector<float>> recurrent;  // per linear layer
  size_t bytes() const;
};

struct sequence_memory {
  int64_t n_past = 0;                         // tokens processed so far (the next token's position)
  std::vector<std::vector<float>> k, v;       // per layer; empty for linear layers. Row stride n_kv_heads*head_dim
  std::vector<std::vector<float>> conv;       // per layer; empty for attention layers
  std::vector<std::vector<float>> recurrent;  // per layer; empty for attention layers

  state_snapshot snapshot() const;
  void restore(const state_snapshot& s);
  // Bytes held (KV + states).
  size_t bytes() const;
};

}  // namespace evident::engine
