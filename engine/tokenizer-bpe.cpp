#include "engine/tokenizer-bpe.h"

#include <algorithm>
#include <atomic>
#include <cstring>
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

bpe_model::bpe_model() {
  static std::atomic<uint64_t> next_owner{1};
  owner_id_ = next_owner.fetch_add(1);
}

bool bpe_model::add_merge(id_t left, id_t right, id_t merged, int32_t rank) {
  if (staging_.empty()) staging_.reserve(1 << 18);
  const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  return staging_.emplace(key, merge_value{rank, merged}).second;
}

void bpe_model::finalize() {
  EV_ASSERT(table_.empty(), "bpe_model::finalize called twice");
  size_t cap = 1024;
  while (cap < staging_.size() * 2) cap <<= 1;
  table_.assign(cap, table_slot{kEmpty, merge_value{kNoMerge, -1}});
  mask_ = cap - 1;
  for (const auto& [key, v] : staging_) {
    size_t slot = hash(key) & mask_;
    while (table_[slot].key != kEmpty) slot = (slot + 1) & mask_;
    table_[slot] = table_slot{key, v};
  }
  n_merges_ = staging_.size();
  staging_.clear();
  staging_.rehash(0);
}

void bpe_model::encode_piece(std::string_view piece, std::vector<id_t>& out) const {
  const size_t n = piece.size();
  if (n == 0) return;
  if (n == 1) {
    out.push_back(byte_token_[uint8_t(piece[0])]);
    return;
  }
  if (n < kMinCachedBytes || n > kMaxCachedBytes) {
    if (n <= kSmallPiece)
      merge_small(piece, out);
    else
      merge_heap(piece, out);
    return;
  }
  // Direct-mapped per-thread cache, tagged with the model it belongs to (owner_id_). No locks: each thread has its own.
  struct entry {
    uint64_t hash = 0;
    uint8_t len = 0;  // 0: empty
    uint8_t n_ids = 0;
    char bytes[kMaxCachedBytes];
    id_t ids[kMaxCachedIds];
  };
  // A thread keeps caches for its kCachesPerThread most recently used models, so that a thread alternating between
  // two tokenizers (a packer's and a generator's) does not wipe its cache at every switch.
  struct owned_cache {
    uint64_t owner = 0;
    uint64_t last_use = 0;
    std::vector<entry> entries;
  };
  thread_local std::array<owned_cache, kCachesPerThread> caches;
  thread_local uint64_t uses = 0;
  owned_cache* slot = nullptr;
  for (auto& c : caches)
    if (c.owner == owner_id_) slot = &c;
  if (slot == nullptr) {
    slot = &caches[0];
    for (auto& c : caches)
      if (c.last_use < slot->last_use) slot = &c;
    slot->owner = owner_id_;
    slot->entries.assign(kCacheEntries, entry{});
  }
  slot->last_use = ++uses;
  std::vector<entry>& cache = slot->entries;
  const uint64_t h = std::hash<std::string_view>{}(piece);
  entry& e = cache[h & (kCacheEntries - 1)];
  if (e.hash == h && e.len == n && std::memcmp(e.bytes, piece.data(), n) == 0) {
    out.insert(out.end(), e.ids, e.ids + e.n_ids);
    return;
  }
  const size_t first = out.size();
  if (n <= kSmallPiece)
    merge_small(piece, out);
  else
    merge_heap(piece, out);
  const size_t n_ids = out.size() - first;
  if (n_ids <= kMaxCachedIds) {
    e.hash = h;
    e.len = uint8_t(n);
    e.n_ids = uint8_t(n_ids);
    std::memcpy(e.bytes, piece.data(), n);
    std::copy(out.begin() + std::ptrdiff_t(first), out.end(), e.ids);
  }
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
  for (int32_t i = 0; i < n; ++i)
    sym[size_t(i)] = {byte_token_[uint8_t(piece[size_t(i)])], i - 1, i + 1 < n ? i + 1 : -1, true};
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
