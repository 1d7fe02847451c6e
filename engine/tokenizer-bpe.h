// engine::bpe_model: the merge step of the byte-level BPE tokenizer (internal to engine/tokenizer.cpp).
//
// Works on raw bytes: the vocabulary's byte-level strings ("Ġthe") are mapped back to the bytes they stand for
// (" the") at load time, so a piece is merged straight from its UTF-8 bytes.
//
// Merge order follows the `tokenizers` library exactly: repeatedly merge the adjacent pair with the lowest merge rank,
// the leftmost one when several pairs share that rank, until no adjacent pair has a merge. (This is not the same as
// "merge every occurrence of the best pair at once": after one merge a newly formed pair of lower rank wins first.)
//
// Thread-safety: const methods may be called concurrently; the piece cache is per thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace evident::engine {

class bpe_model {
 public:
  using id_t = int32_t;
  bpe_model();

  // requires: every byte 0..255 has a single-byte token (byte-level BPE guarantees it); checked by the loader.
  void set_byte_token(uint8_t byte, id_t id) { byte_token_[byte] = id; }
  id_t byte_token(uint8_t byte) const { return byte_token_[byte]; }
  // Registers merge number `rank` (0 = first, applied earliest): left + right -> merged. Call with increasing ranks.
  // Returns false if the pair was already registered (the first registration wins, as in the reference).
  bool add_merge(id_t left, id_t right, id_t merged, int32_t rank);
  // Builds the lookup table once all merges are added. requires: called once, before encode().
  void finalize();

  // Appends the ids of one pre-tokenised piece (its UTF-8 bytes) to `out`.
  void encode_piece(std::string_view piece, std::vector<id_t>& out) const;

  size_t merge_count() const { return n_merges_; }

 private:
  struct merge_value {
    int32_t rank;
    id_t merged;
  };
  // Open-addressing table: key = (left << 32) | right, empty slots hold kEmpty. Faster than std::unordered_map for
  // the ~150k merges and the hot lookup in the merge loop.
  static constexpr uint64_t kEmpty = ~0ull;
  bool lookup(id_t left, id_t right, merge_value& v) const {
    const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
    size_t slot = hash(key) & mask_;
    while (true) {
      const table_slot& s = table_[slot];
      if (s.key == key) {
        v = s.value;
        return true;
      }
      if (s.key == kEmpty) return false;
      slot = (slot + 1) & mask_;
    }
  }
  static size_t hash(uint64_t key) { return size_t((key * 0x9E3779B97F4A7C15ull) >> 20); }

  void merge_small(std::string_view piece, std::vector<id_t>& out) const;  // O(n^2), for short pieces
  void merge_heap(std::string_view piece, std::vector<id_t>& out) const;   // O(n log n), for long pieces

  std::array<id_t, 256> byte_token_{};
  std::unordered_map<uint64_t, merge_value> staging_;  // merges before finalize()
  struct table_slot {  // key and value in one 16-byte slot: a lookup touches one cache line
    uint64_t key;
    merge_value value;
  };
  std::vector<table_slot> table_;
  size_t mask_ = 0;
  size_t n_merges_ = 0;

  // Piece cache (per thread, direct-mapped, see encode_piece): pieces of kMinCachedBytes..kMaxCachedBytes bytes whose
  // ids fit kMaxCachedIds. A direct-mapped slot costs one hash and one
  // memcmp, with no lock and no allocation, where merging a piece costs a merge-table lookup (a likely cache miss)
  // per candidate pair.
  static constexpr size_t kMinCachedBytes = 2;
  static constexpr size_t kMaxCachedBytes = 40;
  static constexpr size_t kMaxCachedIds = 14;
  static constexpr size_t kCacheEntries = 1 << 14;
  static constexpr size_t kCachesPerThread = 2;  // models a thread keeps a cache for (about 1.8 MB each)
  uint64_t owner_id_ = 0;                        // unique per model instance: tags the thread-local cache
};

}  // namespace evident::engine
