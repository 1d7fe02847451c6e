// Helpers shared by every test suite.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace evident::test {

// Absolute path of a file under the project root (e.g. "tests/fixtures/tiny-a").
std::filesystem::path source_path(const std::string& rel);

// Absolute path of a file under ../shared (e.g. "data/beir-scifact/corpus.jsonl"). Missing data is a test failure,
// never a silent skip: this records a fatal failure naming the path when it does not exist.
std::filesystem::path shared_path(const std::string& rel);

// A fresh empty directory under the build tree, removed and recreated on each call with the same name.
std::filesystem::path scratch_dir(const std::string& name);

// Number of CUDA devices visible (0 in a build without CUDA or on a machine without a GPU).
int cuda_device_count();

}  // namespace evident::test

// Tests labelled `cuda` start with this: on a machine without a GPU the test is skipped with a message saying so.
#define EV_REQUIRE_CUDA()                                                                   \
  do {                                                                                      \
    if (::evident::test::cuda_device_count() == 0)                                          \
      GTEST_SKIP() << "no CUDA device visible (build without CUDA or no GPU): skipping";    \
  } while (0)
