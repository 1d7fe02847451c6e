// engine::cuda_paging: the CPU bookkeeping of the CUDA engine's sequence memory. Plain C++ (no CUDA), unit-tested
// without a GPU (tests/engine-cuda/test-sequence-slots.cpp).
//
// Two resources, both fixed at load time:
//   KV blocks       the paged KV cache of the full-attention layers is `n_blocks` blocks of `block_size` token
//                   positions; block b of every attention layer belongs to the same sequence (one block table serves
//                   all layers). Free blocks sit on a free list (LIFO).
//   sequence slots  `n_slots` per-sequence slots of DeltaNet state (conv state + fp32 recurrent state of every
//                   linear-attention layer). A slot is taken when a sequence opens and returned when it closes.
//
// Sequence lifecycle:
//
//     free ──open()──► open (length 0, no blocks) ──reserve(n)──► open (length L, ceil(L/block_size) blocks)
//       ▲                                                                    │
//       └──────────────────────────── close() (blocks back to the free list) ┘
//
// Invariants (checked by check_invariants()): every block is either on the free list or in exactly one open
// sequence's table; an open sequence of length L holds exactly ceil(L / block_size) blocks, and at most
// max_blocks_per_seq; closed slots hold no blocks.
//
// "No room" is an answer, not a crash: open() and can_reserve() say why (no free slot, not enough free blocks, longer
// than the per-sequence limit) and change nothing when they refuse.
//
// Thread-safety: none (the engine's scheduler thread owns it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace evident::engine {

class kv_block_allocator {
 public:
  // requires: n_blocks >= 0.
  explicit kv_block_allocator(int n_blocks);
  // A free block id in [0, n_blocks), or -1 when none is free.
  int allocate();
  // requires: `block` was allocated and not yet released (a double release aborts).
  void release(int block);
  int n_free() const { return static_cast<int>(free_.size()); }
  int n_blocks() const { return static_cast<int>(used_.size()); }
  bool in_use(int block) const { return used_[static_cast<size_t>(block)] != 0; }

 private:
  std::vector<int> free_;           // LIFO: the most recently released block is reused first
  std::vector<std::uint8_t> used_;  // 1 while allocated
};

class sequence_slots {
 public:
  // requires: n_slots >= 1, n_blocks >= 0, block_size >= 1, max_blocks_per_seq >= 1.
  sequence_slots(int n_slots, int n_blocks, int block_size, int max_blocks_per_seq);

  struct admission {
    int slot = -1;       // the new sequence's slot, or -1 when refused
    std::string reason;  // empty when admitted
    bool ok() const { return slot >= 0; }
  };
  // Opens a sequence of length 0. `expected_tokens` (optional) is checked against the per-sequence limit and the
  // free blocks now, so a request that can never fit is refused at admission; nothing is reserved by it.
  admission open(std::int64_t expected_tokens = 0);
  // requires: slot open. Returns its blocks to the free list.
  void close(int slot);

  // Whether the sequence can grow to `new_length` positions; "" if so, else the reason.
  std::string can_reserve(int slot, std::int64_t new_length) const;
  // Whether every (slot, new_length) pair can be satisfied together (blocks are shared); "" or the reason.
  std::string can_reserve_all(const std::vector<std::pair<int, std::int64_t>>& wants) const;
  // Grows the sequence to `new_length` positions (allocating blocks); new_length < length is an error.
  // Throws evident::error (resource) with the reason when it does not fit; nothing changes then.
  void reserve(int slot, std::int64_t new_length);

  bool is_open(int slot) const;
  std::int64_t length(int slot) const;                        // requires: slot open
  const std::vector<std::int32_t>& blocks(int slot) const;   // requires: slot open; physical block ids in order
  // The KV cache slot of position `pos` of the sequence (block * block_size + offset). requires: pos < length.
  std::int32_t kv_slot(int slot, std::int64_t pos) const;

  int n_slots() const { return static_cast<int>(seqs_.size()); }
  int n_open() const;
  int n_free_blocks() const { return blocks_.n_free(); }
  int n_blocks() const { return blocks_.n_blocks(); }
  int block_size() const { return block_size_; }
  int max_blocks_per_seq() const { return max_blocks_per_seq_; }
  std::int64_t max_length() const { return static_cast<std::int64_t>(max_blocks_per_seq_) * block_size_; }
  // Blocks needed to hold `length` positions.
  std::int64_t blocks_for(std::int64_t length) const { return (length + block_size_ - 1) / block_size_; }

  // Aborts (EV_ASSERT) when an invariant above is broken; for tests.
  void check_invariants() const;

 private:
  struct seq {
    bool open = false;
    std::int64_t length = 0;
    std::vector<std::int32_t> blocks;
  };
  int block_size_ = 16;
  int max_blocks_per_seq_ = 0;
  kv_block_allocator blocks_;
  std::vector<seq> seqs_;
  std::vector<int> free_slots_;  // LIFO
};

}  // namespace evident::engine
