#include <gtest/gtest.h>

#include "engine/base/error.h"

namespace {

TEST(base_error, throw_if_not_names_the_thing) {
  int size = 0;
  try {
    EV_THROW_IF_NOT_MSG(size > 0, "file ", "a.pdf", ": expected a non-empty file, found ", size, " bytes");
    FAIL() << "no exception";
  } catch (const evident::error& e) {
    EXPECT_STREQ(e.what(), "file a.pdf: expected a non-empty file, found 0 bytes");
    EXPECT_EQ(e.kind(), evident::error_kind::invalid_input);
  }
}

TEST(base_error, kind_is_kept) {
  try {
    EV_THROW(corrupt, "tensor ", "model.embed_tokens.weight", " truncated");
  } catch (const evident::error& e) {
    EXPECT_EQ(e.kind(), evident::error_kind::corrupt);
    EXPECT_NE(std::string(e.what()).find("embed_tokens"), std::string::npos);
  }
}

TEST(base_error, assert_aborts_with_expression) {
  EXPECT_DEATH({ EV_ASSERT(1 + 1 == 3, "math"); }, "assertion failed: 1 \\+ 1 == 3");
}

}  // namespace
