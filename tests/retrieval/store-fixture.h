// Test helper: fills a store through the committed schema with plain SQL (no parser, chunker or embedder needed).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace evident::test {

struct fixture_doc {
  std::string path;
  std::string title;
  std::vector<std::string> chunks;  // document text = chunks joined by "\n" (offsets computed accordingly)
  std::string collection = "default";
  std::vector<int> chunk_pages;     // optional: page of each chunk (1-based); default all 1
  std::string heading_path;         // same for every chunk
};

// Creates the store at `dir` (fresh) and inserts the documents in order; returns their ids.
std::vector<int64_t> make_store(const std::filesystem::path& dir, const std::vector<fixture_doc>& docs);

}  // namespace evident::test
