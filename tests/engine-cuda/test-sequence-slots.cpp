// The CUDA engine's sequence-memory bookkeeping (engine/cuda/sequence-slots.h), on the CPU: block allocation and
// release, block tables and KV slots, admission refusals with reasons (never a crash), and a random workload that
// checks the invariants after every operation against a simple model of what each sequence should hold.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "engine/base/error.h"
#include "engine/cuda/sequence-slots.h"

namespace {

using evident::engine::kv_block_allocator;
using evident::engine::sequence_slots;

TEST(kv_block_allocator, allocates_every_block_once_then_refuses) {
  kv_block_allocator a(4);
  EXPECT_EQ(a.n_free(), 4);
  std::vector<int> got;
  for (int i = 0; i < 4; ++i) got.push_back(a.allocate());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(a.allocate(), -1);
  EXPECT_EQ(a.n_free(), 0);
  a.release(2);
  EXPECT_FALSE(a.in_use(2));
  EXPECT_EQ(a.allocate(), 2);  // LIFO reuse
  EXPECT_DEATH(a.release(7), "block");
  a.release(1);
  EXPECT_DEATH(a.release(1), "double release");
}

TEST(sequence_slots, block_tables_and_kv_slots) {
  sequence_slots s(2, 8, 4, 3);
  auto a = s.open();
  ASSERT_TRUE(a.ok()) << a.reason;
  EXPECT_EQ(s.length(a.slot), 0);
  s.reserve(a.slot, 5);  // two blocks
  ASSERT_EQ(s.blocks(a.slot).size(), 2u);
  auto b = s.open();
  ASSERT_TRUE(b.ok());
  s.reserve(b.slot, 1);
  s.reserve(a.slot, 8);  // still two blocks
  EXPECT_EQ(s.blocks(a.slot).size(), 2u);
  EXPECT_EQ(s.n_free_blocks(), 5);
  // Position p lives at block p/4, offset p%4.
  for (int p = 0; p < 8; ++p)
    EXPECT_EQ(s.kv_slot(a.slot, p), s.blocks(a.slot)[static_cast<size_t>(p / 4)] * 4 + p % 4);
  EXPECT_EQ(s.kv_slot(b.slot, 0), s.blocks(b.slot)[0] * 4);
  s.check_invariants();
  s.close(a.slot);
  EXPECT_EQ(s.n_free_blocks(), 7);
  EXPECT_FALSE(s.is_open(a.slot));
  s.check_invariants();
}

TEST(sequence_slots, refusals_name_the_reason_and_change_nothing) {
  sequence_slots s(2, 4, 4, 3);  // 16 blocks' worth is not there: 4 blocks, at most 12 positions per sequence
  auto a = s.open(13);
  EXPECT_FALSE(a.ok());
  EXPECT_NE(a.reason.find("per-sequence limit"), std::string::npos) << a.reason;
  a = s.open(12);
  ASSERT_TRUE(a.ok()) << a.reason;
  s.reserve(a.slot, 9);  // 3 blocks
  auto b = s.open(8);    // needs 2 blocks, 1 free
  EXPECT_FALSE(b.ok());
  EXPECT_NE(b.reason.find("KV blocks"), std::string::npos) << b.reason;
  b = s.open(4);
  ASSERT_TRUE(b.ok());
  auto c = s.open();
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.reason.find("no free sequence slot"), std::string::npos) << c.reason;
  // Growth beyond the free blocks: a reason from can_reserve, a resource error from reserve, no change.
  EXPECT_NE(s.can_reserve(b.slot, 9), "");
  try {
    s.reserve(b.slot, 9);
    ADD_FAILURE() << "reserve beyond the free blocks did not throw";
  } catch (const evident::error& e) {
    EXPECT_EQ(e.kind(), evident::error_kind::resource);
    EXPECT_NE(std::string(e.what()).find("KV blocks"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s.length(b.slot), 0);
  EXPECT_EQ(s.n_free_blocks(), 1);
  // Joint reservation: each alone fits, together they do not (one free block, two sequences wanting one each).
  {
    sequence_slots t(2, 1, 4, 3);
    const int x = t.open().slot, y = t.open().slot;
    EXPECT_EQ(t.can_reserve(x, 1), "");
    EXPECT_EQ(t.can_reserve(y, 4), "");
    EXPECT_NE(t.can_reserve_all({{x, 1}, {y, 4}}).find("KV blocks"), std::string::npos);
  }
  EXPECT_NE(s.can_reserve_all({{b.slot, 1}, {b.slot, 2}}).find("twice"), std::string::npos);
  EXPECT_NE(s.can_reserve(a.slot, 3).find("shorter"), std::string::npos);
  EXPECT_NE(s.can_reserve(5, 3).find("not open"), std::string::npos);
  s.check_invariants();
}

TEST(sequence_slots, random_workload_keeps_invariants) {
  std::mt19937 rng(7);
  const int block = 16;
  sequence_slots s(8, 40, block, 10);
  std::map<int, std::int64_t> model;  // open slot -> length
  int refused = 0;
  for (int op = 0; op < 5000; ++op) {
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 2) {
      auto a = s.open(static_cast<std::int64_t>(rng() % 200));
      if (a.ok()) {
        ASSERT_EQ(model.count(a.slot), 0u);
        model[a.slot] = 0;
      } else {
        ++refused;
        EXPECT_FALSE(a.reason.empty());
      }
    } else if (kind < 4 && !model.empty()) {
      auto it = model.begin();
      std::advance(it, static_cast<long>(rng() % model.size()));
      s.close(it->first);
      model.erase(it);
    } else if (!model.empty()) {
      auto it = model.begin();
      std::advance(it, static_cast<long>(rng() % model.size()));
      const std::int64_t want = it->second + static_cast<std::int64_t>(rng() % 40);
      if (s.can_reserve(it->first, want).empty()) {
        s.reserve(it->first, want);
        it->second = want;
      } else {
        ++refused;
        EXPECT_THROW(s.reserve(it->first, want), evident::error);
      }
    }
    s.check_invariants();
    for (const auto& [slot, len] : model) {
      ASSERT_EQ(s.length(slot), len);
      ASSERT_EQ(static_cast<std::int64_t>(s.blocks(slot).size()), (len + block - 1) / block);
    }
    ASSERT_EQ(s.n_open(), static_cast<int>(model.size()));
  }
  EXPECT_GT(refused, 0);  // the workload does hit the limits
}

}  // namespace
