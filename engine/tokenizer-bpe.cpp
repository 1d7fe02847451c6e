#include "engine/tokenizer-bpe.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <queue>

#include "engine/base/error.h"

namespace evident::engine {

namespace {
constexpr int32_t kNoMerge = std::numeric_limits<int32_t>::max();
// Pieces up to this many bytes use the quadratic merge loop: for short words a linear scan over a few ranks beats the
// bookkeeping of a heap.
constexpr size_t kSmallPiece = 48;
}  // namespace

bool bpe_model::add_merge(id_t left, id_t right, id_t merged, int32_t rank) {
  const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  return staging_.emplace(key, merge_value{rank, merged}).second;
}

void bpe_model::finalize() {
  EV_ASSERT(keys_.empty(), "bpe_model::finalize called twice");
  size_t cap = 1024;
  while (cap < staging_.size() * 2) cap <<= 1;
  keys_.assign(cap, kEmpty);
  values_.assign(cap, merge_value{kNoMerge, -1});
  mask_ = cap - 1;
  for (const auto& [key, v] : staging_) {
    size_t slot = hash(key) & mask_;
    while (keys_[slot] != kEmpty) slot = (slot + 1) & mask_;
    keys_[slot] = key;
    values_[slot] = v;
  }
  n_merges_ = staging_.size();
  staging_.clear();
  staging_.rehash(0);
}

void bpe_model::encode_piece(std::string_view piece, std::vector<id_t>& out) const {
  if (piece.empty()) return;
  if (piece.size() == 1) {
    out.push_back(byte_token_[uint8_t(piece[0])]);
    return;
  }
  if (piece.size() > kMaxCachedBytes) {
    merge_heap(piece, out);
    return;
  }
  shard& s = cache_[std::hash<std::string_view>{}(piece) % kShards];
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(std::string(piece));
    if (it != s.map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  if (piece.size() <= kSmallPiece)
    merge_small(piece, out);
  else
    merge_heap(piece, out);
  std::vector<id_t> ids(out.begin() + std::ptrdiff_t(first), out.end());
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.map.size() >= kShardCapacity) s.map.clear();
  s.map.emplace(std::string(piece), std::move(ids));
}

void bpe_model::merge_small(std::string_view piece, std::vector<id_t>& out) const {
  // ids[i] are the current symbols; rank[i] / merged[i] describe the pair (ids[i], ids[i+1]).
  id_t ids[kSmallPiece];
  int32_t rank[kSmallPiece];
  id_t merged[kSmallPiece];
  size_t n = piece.size();
  for (size_t i = 0; i < n; ++i) ids[i] = byte_token_[uint8_t(piece[i])];
  auto pair_at = [&](size_t i) {
    merge_value v;
    if (lookup(ids[i], ids[i + 1], v)) {
      rank[i] = v.rank;
      merged[i] = v.merged;
    } else {
      rank[i] = kNoMerge;
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) pair_at(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i)
      if (rank[i] < rank[best]) best = i;  // strict: the leftmost pair wins ties
    if (rank[best] == kNoMerge) break;
    ids[best] = merged[best];
    for (size_t i = best + 1; i + 1 < n; ++i) {
      ids[i] = ids[i + 1];
      if (i + 1 < n - 1) {
        rank[i] = rank[i + 1];
        merged[i] = merged[i + 1];
      }
    }
    --n;
    if (best > 0) pair_at(best - 1);
    if (best + 1 < n) pair_at(best);
  }
  out.insert(out.end(), ids, ids + n);
}

void bpe_model::merge_heap(std::string_view piece, std::vector<id_t>& out) const {
  // Symbols in a doubly linked list over the original byte positions; a merged symbol keeps its left position.
  struct symbol {
    id_t id;
    int32_t prev, next;
    bool alive;
  };
  struct candidate {
    int32_t rank;
    int32_t pos;  // position of the left symbol
    id_t merged;
    bool operator>(const candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const int32_t n = int32_t(piece.size());
  std::vector<symbol> sym(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) sym[size_t(i)] = {byte_token_[uint8_t(piece[size_t(i)])], i - 1, i + 1 < n ? i + 1 : -1, true};
  std::priority_queue<candidate, std::vector<candidate>, std::greater<candidate>> queue;
  merge_value v;
  for (int32_t i = 0; i + 1 < n; ++i)
    if (lookup(sym[size_t(i)].id, sym[size_t(i + 1)].id, v)) queue.push({v.rank, i, v.merged});
  while (!queue.empty()) {
    const candidate top = queue.top();
    queue.pop();
    symbol& left = sym[size_t(top.pos)];
    if (!left.alive || left.next < 0) continue;
    symbol& right = sym[size_t(left.next)];
    // Stale entry: the pair at this position changed since it was queued.
    if (!lookup(left.id, right.id, v) || v.merged != top.merged) continue;
    left.id = top.merged;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sym[size_t(right.next)].prev = top.pos;
    if (left.prev >= 0 && lookup(sym[size_t(left.prev)].id, left.id, v)) queue.push({v.rank, left.prev, v.merged});
    if (left.next >= 0 && lookup(left.id, sym[size_t(left.next)].id, v)) queue.push({v.rank, top.pos, v.merged});
  }
  for (int32_t i = 0; i >= 0; i = sym[size_t(i)].next) out.push_back(sym[size_t(i)].id);
}

}  // namespace evident::engine
