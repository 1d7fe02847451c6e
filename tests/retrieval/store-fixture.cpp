#include "tests/retrieval/store-fixture.h"

#include <nlohmann/json.hpp>

#include "ingest/store.h"

namespace evident::test {

namespace {
int64_t code_points(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}
}  // namespace

std::vector<int64_t> make_store(const std::filesystem::path& dir, const std::vector<fixture_doc>& docs) {
  std::filesystem::remove_all(dir);
  ingest::store s(dir);
  std::vector<int64_t> ids;
  sql::transaction tx(s.db());
  for (const auto& d : docs) {
    const int64_t coll = *s.collection_id(d.collection, true);
    std::string text;
    std::vector<int64_t> cstart, cend, bstart, bend;
    for (size_t i = 0; i < d.chunks.size(); ++i) {
      if (i > 0) text += "\n";
      bstart.push_back(static_cast<int64_t>(text.size()));
      cstart.push_back(code_points(text));
      text += d.chunks[i];
      bend.push_back(static_cast<int64_t>(text.size()));
      cend.push_back(code_points(text));
    }
    int pages = 1;
    nlohmann::json page_starts = nlohmann::json::array({0});
    if (!d.chunk_pages.empty()) {
      for (size_t i = 1; i < d.chunks.size(); ++i)
        if (d.chunk_pages[i] != d.chunk_pages[i - 1]) page_starts.push_back(cstart[i]), ++pages;
    }
    auto ins = s.db().prepare(
        "INSERT INTO documents(collection_id, path, sha256, size, mtime, format, title, pages, page_starts, text, "
        "char_count, ingested_at) VALUES (?, ?, 'x', ?, 0, 'txt', ?, ?, ?, ?, ?, 0)");
    ins.bind(1, coll).bind(2, d.path).bind(3, static_cast<int64_t>(text.size())).bind(4, d.title).bind(5, pages);
    ins.bind(6, page_starts.dump()).bind(7, text).bind(8, code_points(text));
    ins.run();
    const int64_t doc_id = s.db().last_insert_rowid();
    ids.push_back(doc_id);
    for (size_t i = 0; i < d.chunks.size(); ++i) {
      auto c = s.db().prepare(
          "INSERT INTO chunks(document_id, ordinal, char_start, char_end, byte_start, byte_end, page, heading_path, "
          "token_count, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
      c.bind(1, doc_id).bind(2, static_cast<int64_t>(i)).bind(3, cstart[i]).bind(4, cend[i]);
      c.bind(5, bstart[i]).bind(6, bend[i]).bind(7, d.chunk_pages.empty() ? 1 : d.chunk_pages[i]);
      c.bind(8, d.heading_path).bind(9, static_cast<int64_t>(d.chunks[i].size() / 4 + 1)).bind(10, d.chunks[i]);
      c.run();
    }
  }
  tx.commit();
  return ids;
}

}  // namespace evident::test
