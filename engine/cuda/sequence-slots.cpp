#include "engine/cuda/sequence-slots.h"

#include <algorithm>
#include <map>

#include "engine/base/error.h"

namespace evident::engine {

kv_block_allocator::kv_block_allocator(int n_blocks) {
  EV_ASSERT(n_blocks >= 0);
  used_.assign(static_cast<size_t>(n_blocks), 0);
  free_.reserve(static_cast<size_t>(n_blocks));
  // Highest id at the bottom of the stack, so fresh allocations come out 0, 1, 2, ... (readable in tests).
  for (int b = n_blocks - 1; b >= 0; --b) free_.push_back(b);
}

int kv_block_allocator::allocate() {
  if (free_.empty()) return -1;
  const int b = free_.back();
  free_.pop_back();
  used_[static_cast<size_t>(b)] = 1;
  return b;
}

void kv_block_allocator::release(int block) {
  EV_ASSERT(block >= 0 && block < n_blocks(), "block ", block);
  EV_ASSERT(used_[static_cast<size_t>(block)] != 0, "double release of block ", block);
  used_[static_cast<size_t>(block)] = 0;
  free_.push_back(block);
}

sequence_slots::sequence_slots(int n_slots, int n_blocks, int block_size, int max_blocks_per_seq)
    : block_size_(block_size), max_blocks_per_seq_(max_blocks_per_seq), blocks_(n_blocks) {
  EV_ASSERT(n_slots >= 1 && block_size >= 1 && max_blocks_per_seq >= 1);
  seqs_.resize(static_cast<size_t>(n_slots));
  for (int s = n_slots - 1; s >= 0; --s) free_slots_.push_back(s);
}

sequence_slots::admission sequence_slots::open(std::int64_t expected_tokens) {
  admission a;
  if (free_slots_.empty()) {
    a.reason = detail::concat("no free sequence slot (all ", n_slots(), " in use)");
    return a;
  }
  if (expected_tokens > max_length()) {
    a.reason = detail::concat("request of ", expected_tokens, " tokens exceeds the per-sequence limit of ",
                              max_length(), " positions");
    return a;
  }
  if (blocks_for(expected_tokens) > blocks_.n_free()) {
    a.reason = detail::concat("request of ", expected_tokens, " tokens needs ", blocks_for(expected_tokens),
                              " KV blocks, ", blocks_.n_free(), " of ", blocks_.n_blocks(), " are free");
    return a;
  }
  a.slot = free_slots_.back();
  free_slots_.pop_back();
  seq& s = seqs_[static_cast<size_t>(a.slot)];
  s.open = true;
  s.length = 0;
  s.blocks.clear();
  return a;
}

void sequence_slots::close(int slot) {
  EV_ASSERT(is_open(slot), "close of slot ", slot, " which is not open");
  seq& s = seqs_[static_cast<size_t>(slot)];
  for (auto it = s.blocks.rbegin(); it != s.blocks.rend(); ++it) blocks_.release(*it);
  s = seq{};
  free_slots_.push_back(slot);
}

bool sequence_slots::is_open(int slot) const {
  return slot >= 0 && slot < n_slots() && seqs_[static_cast<size_t>(slot)].open;
}

std::int64_t sequence_slots::length(int slot) const {
  EV_ASSERT(is_open(slot), "slot ", slot, " is not open");
  return seqs_[static_cast<size_t>(slot)].length;
}

const std::vector<std::int32_t>& sequence_slots::blocks(int slot) const {
  EV_ASSERT(is_open(slot), "slot ", slot, " is not open");
  return seqs_[static_cast<size_t>(slot)].blocks;
}

std::int32_t sequence_slots::kv_slot(int slot, std::int64_t pos) const {
  const seq& s = seqs_[static_cast<size_t>(slot)];
  EV_ASSERT(s.open && pos >= 0 && pos < s.length, "position ", pos, " of slot ", slot);
  return s.blocks[static_cast<size_t>(pos / block_size_)] * block_size_ + static_cast<std::int32_t>(pos % block_size_);
}

int sequence_slots::n_open() const {
  return n_slots() - static_cast<int>(free_slots_.size());
}

std::string sequence_slots::can_reserve(int slot, std::int64_t new_length) const {
  return can_reserve_all({{slot, new_length}});
}

std::string sequence_slots::can_reserve_all(const std::vector<std::pair<int, std::int64_t>>& wants) const {
  std::int64_t need = 0;
  std::map<int, int> seen;
  for (const auto& [slot, len] : wants) {
    if (!is_open(slot)) return detail::concat("sequence slot ", slot, " is not open");
    if (seen[slot]++ != 0) return detail::concat("sequence slot ", slot, " appears twice");
    const seq& s = seqs_[static_cast<size_t>(slot)];
    if (len < s.length)
      return detail::concat("sequence slot ", slot, ": length ", len, " is shorter than its current ", s.length);
    if (len > max_length())
      return detail::concat("sequence slot ", slot, ": ", len, " positions exceed the per-sequence limit of ",
                            max_length());
    need += blocks_for(len) - static_cast<std::int64_t>(s.blocks.size());
  }
  if (need > blocks_.n_free())
    return detail::concat("needs ", need, " more KV blocks, ", blocks_.n_free(), " of ", blocks_.n_blocks(),
                          " are free");
  return {};
}

void sequence_slots::reserve(int slot, std::int64_t new_length) {
  const std::string why = can_reserve(slot, new_length);
  EV_THROW_IF_NOT_KIND(why.empty(), resource, "KV cache: ", why);
  seq& s = seqs_[static_cast<size_t>(slot)];
  while (static_cast<std::int64_t>(s.blocks.size()) < blocks_for(new_length)) {
    const int b = blocks_.allocate();
    EV_ASSERT(b >= 0);
    s.blocks.push_back(b);
  }
  s.length = new_length;
}

void sequence_slots::check_invariants() const {
  std::vector<int> owner(static_cast<size_t>(blocks_.n_blocks()), -1);
  int held = 0;
  for (int i = 0; i < n_slots(); ++i) {
    const seq& s = seqs_[static_cast<size_t>(i)];
    if (!s.open) {
      EV_ASSERT(s.blocks.empty() && s.length == 0, "closed slot ", i, " holds blocks");
      continue;
    }
    EV_ASSERT(static_cast<std::int64_t>(s.blocks.size()) == blocks_for(s.length), "slot ", i, " holds ",
              s.blocks.size(), " blocks for length ", s.length);
    EV_ASSERT(static_cast<int>(s.blocks.size()) <= max_blocks_per_seq_);
    for (std::int32_t b : s.blocks) {
      EV_ASSERT(b >= 0 && b < blocks_.n_blocks() && blocks_.in_use(b), "slot ", i, " block ", b);
      EV_ASSERT(owner[static_cast<size_t>(b)] == -1, "block ", b, " owned twice");
      owner[static_cast<size_t>(b)] = i;
      ++held;
    }
  }
  EV_ASSERT(held + blocks_.n_free() == blocks_.n_blocks(), "blocks held ", held, " + free ", blocks_.n_free(),
            " != ", blocks_.n_blocks());
  int open_count = 0;
  for (const seq& s : seqs_) open_count += s.open ? 1 : 0;
  EV_ASSERT(open_count + static_cast<int>(free_slots_.size()) == n_slots());
}

}  // namespace evident::engine
