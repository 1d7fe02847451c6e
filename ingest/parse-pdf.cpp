// PDF parser (poppler-cpp): the text of every page in poppler's reading order, pages numbered from 1 as viewers show
// them. A PDF that poppler cannot load (truncated, not a PDF), that is encrypted, or that has no extractable text
// (scanned images) is reported as corrupt.
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>

#include <memory>
#include <mutex>

#include "engine/base/error.h"
#include "ingest/document.h"
#include "ingest/parse-util.h"

namespace evident::ingest {
namespace {

void quiet(const std::string&, void*) {}

std::string to_std(const poppler::ustring& u) {
  poppler::byte_array a = u.to_utf8();
  return std::string(a.begin(), a.end());
}

class pdf_parser final : public parser_i {
 public:
  std::string format() const override { return "pdf"; }
  document parse(std::string_view bytes, const std::filesystem::path& path) const override {
    static std::once_flag once;
    std::call_once(once, [] { poppler::set_debug_error_function(quiet, nullptr); });
    // poppler keeps process-wide state (GlobalParams, font caches): parse one PDF at a time.
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    EV_THROW_IF_NOT_KIND(bytes.size() >= 5 && bytes.substr(0, 5) == "%PDF-", corrupt, path.string(),
                         ": not a PDF (no %PDF- header)");
    EV_THROW_IF_NOT_KIND(bytes.size() < (1u << 31), corrupt, path.string(), ": PDF larger than 2 GiB");
    std::unique_ptr<poppler::document> doc(
        poppler::document::load_from_raw_data(bytes.data(), static_cast<int>(bytes.size())));
    EV_THROW_IF_NOT_KIND(doc != nullptr, corrupt, path.string(), ": damaged or truncated PDF (poppler cannot load it)");
    EV_THROW_IF_NOT_KIND(!doc->is_locked(), corrupt, path.string(), ": encrypted PDF");
    const int n = doc->pages();
    EV_THROW_IF_NOT_KIND(n > 0, corrupt, path.string(), ": PDF has no pages (damaged or truncated)");
    document_builder b("pdf");
    bool any_text = false;
    for (int i = 0; i < n; ++i) {
      if (i > 0) {
        b.end_line();
        b.new_page();
      }
      std::unique_ptr<poppler::page> p(doc->create_page(i));
      if (!p) continue;
      std::string t = clean_text(to_std(p->text(poppler::rectf(), poppler::page::non_raw_non_physical_layout)));
      if (t.find_first_not_of(" \n\t") != std::string::npos) any_text = true;
      b.append(t);
    }
    EV_THROW_IF_NOT_KIND(any_text, corrupt, path.string(), ": PDF has no extractable text (scanned or damaged)");
    std::string title = collapse_spaces(to_std(doc->info_key("Title")));
    if (!title.empty()) b.doc().title = title;
    return b.finish(path);
  }
};

}  // namespace

const parser_i& pdf_parser_instance() {
  static const pdf_parser p;
  return p;
}

}  // namespace evident::ingest
