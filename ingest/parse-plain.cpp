// Parsers for line-oriented text formats: plain text, Markdown, source code, CSV/TSV. Also the parser registry and
// document_builder.
#include <algorithm>
#include <cctype>
#include <string>

#include "engine/base/error.h"
#include "ingest/document.h"
#include "ingest/parse-util.h"
#include "ingest/text.h"

namespace evident::ingest {

// ---------------------------------------------------------------------------------------------------------------------
// document_builder

document_builder::document_builder(std::string format, unit_kind units) {
  doc_.format = std::move(format);
  doc_.units = units;
}

void document_builder::append(std::string_view utf8) { append_normalised(nfc(utf8)); }

void document_builder::append_normalised(std::string_view s) {
  doc_.text.append(s);
  cps_ += count_code_points(s);
}

void document_builder::new_page() { doc_.page_starts.push_back(cps_); }

void document_builder::add_heading(int level, std::string_view title) {
  std::string t = collapse_spaces(nfc(title));
  if (t.empty()) return;
  doc_.headings.push_back({std::clamp(level, 1, 6), std::move(t), cps_});
}

void document_builder::end_line() {
  if (!doc_.text.empty() && doc_.text.back() != '\n') append_normalised("\n");
}

document document_builder::finish(const std::filesystem::path& path) {
  if (doc_.title.empty() && !doc_.headings.empty()) doc_.title = doc_.headings.front().title;
  if (doc_.title.empty()) doc_.title = path.filename().string();
  if (doc_.title.size() > 200) doc_.title = utf8_prefix(doc_.title, 200);
  return std::move(doc_);
}

// ---------------------------------------------------------------------------------------------------------------------
// helpers shared by the parsers (parse-util.h)

std::string clean_text(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\r') {
      out.push_back('\n');
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else if (c == '\f' || c == '\v') {
      out.push_back('\n');
    } else if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') {
      // other C0 controls carry no text
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string collapse_spaces(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool space = false;
  for (char c : s) {
    if (is_space_byte(c)) {
      space = !out.empty();
    } else {
      if (space) out.push_back(' ');
      space = false;
      out.push_back(c);
    }
  }
  return out;
}

std::string utf8_prefix(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return std::string(s);
  size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n));
}

std::string decode_text(std::string_view bytes) { return clean_text(decode_to_utf8(bytes)); }

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space_byte(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space_byte(s.back())) s.remove_suffix(1);
  return s;
}

template <typename F>
void for_each_line(std::string_view text, F&& f) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    f(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
class text_parser final : public parser_i {
 public:
  std::string format() const override { return "txt"; }
  document parse(std::string_view bytes, const std::filesystem::path& path) const override {
    document_builder b("txt");
    std::string text = decode_text(bytes);
    b.append(text);
    // Title: the first non-empty line when it is short enough to be one.
    std::string_view first;
    for_each_line(b.doc().text, [&](std::string_view l) {
      if (first.empty()) first = trim(l);
    });
    if (!first.empty() && first.size() <= 100) b.doc().title = std::string(first);
    return b.finish(path);
  }
};

// ---------------------------------------------------------------------------------------------------------------------
// Markdown: ATX (# Title) and setext (Title\n=====) headings become headings; fenced code is kept verbatim and never
// read as headings. The heading line is kept in the text without its # markers.
class markdown_parser final : public parser_i {
 public:
  std::string format() const override { return "md"; }
  document parse(std::string_view bytes, const std::filesystem::path& path) const override {
    document_builder b("md");
    std::string text = decode_text(bytes);
    std::vector<std::string_view> lines;
    for_each_line(text, [&](std::string_view l) { lines.push_back(l); });
    bool fence = false;
    std::string fence_marker;
    for (size_t i = 0; i < lines.size(); ++i) {
      std::string_view l = lines[i];
      std::string_view t = trim(l);
      if (t.starts_with("```") || t.starts_with("~~~")) {
        if (!fence) {
          fence = true;
          fence_marker = std::string(t.substr(0, 3));
        } else if (t.starts_with(fence_marker)) {
          fence = false;
        }
      } else if (!fence) {
        size_t lead = l.find_first_not_of(' ');
        if (lead != std::string_view::npos && lead < 4 && l[lead] == '#') {
          size_t level = 0;
          while (lead + level < l.size() && l[lead + level] == '#') ++level;
          if (level <= 6 && (lead + level == l.size() || l[lead + level] == ' ' || l[lead + level] == '\t')) {
            std::string_view title = trim(l.substr(lead + level));
            while (!title.empty() && title.back() == '#') title.remove_suffix(1);
            title = trim(title);
            b.end_line();
            b.add_heading(static_cast<int>(level), title);
            b.append(title);
            b.append_normalised("\n");
            continue;
          }
        }
        // setext: a non-empty paragraph line followed by ==== or ----
        if (!t.empty() && i + 1 < lines.size()) {
          std::string_view u = trim(lines[i + 1]);
          bool eq = !u.empty() && u.find_first_not_of('=') == std::string_view::npos;
          bool dash = u.size() >= 2 && u.find_first_not_of('-') == std::string_view::npos;
          bool prev_blank = i == 0 || trim(lines[i - 1]).empty();
          if ((eq || dash) && prev_blank) {
            b.end_line();
            b.add_heading(eq ? 1 : 2, t);
            b.append(t);
            b.append_normalised("\n");
            ++i;
            continue;
          }
        }
      }
      b.append(l);
      b.append_normalised("\n");
    }
    return b.finish(path);
  }
};

// ---------------------------------------------------------------------------------------------------------------------
// Source code: kept verbatim; the chunker splits at blank-line-separated top-level blocks.
class code_parser final : public parser_i {
 public:
  std::string format() const override { return "code"; }
  document parse(std::string_view bytes, const std::filesystem::path& path) const override {
    document_builder b("code", unit_kind::blocks);
    b.append(decode_text(bytes));
    b.doc().title = path.filename().string();
    return b.finish(path);
  }
};

// ---------------------------------------------------------------------------------------------------------------------
// CSV/TSV (RFC 4180 quoting): the first record is the header; every later record becomes one line
// "name: value | name: value" (empty cells left out), so each row is retrievable with its column names.
class table_parser final : public parser_i {
 public:
  explicit table_parser(char sep) : sep_(sep) {}
  std::string format() const override { return sep_ == ',' ? "csv" : "tsv"; }
  document parse(std::string_view bytes, const std::filesystem::path& path) const override {
    document_builder b(format(), unit_kind::lines);
    std::string text = decode_text(bytes);
    std::vector<std::string> header, row;
    std::string cell;
    bool quoted = false, have_header = false, cell_started = false;
    int64_t rows = 0;
    auto end_cell = [&] {
      row.push_back(collapse_spaces(cell));
      cell.clear();
      cell_started = false;
    };
    auto end_row = [&] {
      end_cell();
      bool blank = std::all_of(row.begin(), row.end(), [](const std::string& c) { return c.empty(); });
      if (!blank) {
        if (!have_header) {
          header = row;
          have_header = true;
        } else {
          std::string line;
          for (size_t i = 0; i < row.size(); ++i) {
            if (row[i].empty()) continue;
            if (!line.empty()) line += " | ";
            std::string name = i < header.size() && !header[i].empty() ? header[i] : "column " + std::to_string(i + 1);
            line += name + ": " + row[i];
          }
          if (!line.empty()) {
            b.append(line);
            b.append_normalised("\n");
            ++rows;
          }
        }
      }
      row.clear();
    };
    for (size_t i = 0; i < text.size(); ++i) {
      char c = text[i];
      if (quoted) {
        if (c == '"') {
          if (i + 1 < text.size() && text[i + 1] == '"') {
            cell.push_back('"');
            ++i;
          } else {
            quoted = false;
          }
        } else {
          cell.push_back(c);
        }
      } else if (c == '"' && !cell_started) {
        quoted = true;
        cell_started = true;
      } else if (c == sep_) {
        end_cell();
      } else if (c == '\n') {
        end_row();
      } else {
        cell.push_back(c);
        cell_started = true;
      }
    }
    if (!cell.empty() || !row.empty()) end_row();
    if (rows == 0 && have_header) {  // a header-only file: keep the header as text
      std::string line;
      for (auto& h : header) line += (line.empty() ? "" : " | ") + h;
      b.append(line);
    }
    b.doc().title = path.filename().string();
    return b.finish(path);
  }

 private:
  char sep_;
};

std::string lower_ext(const std::filesystem::path& path) {
  std::string e = path.extension().string();
  for (char& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e;
}

}  // namespace

const parser_i& html_parser_instance();
const parser_i& pdf_parser_instance();

const parser_i& parser_for(const std::filesystem::path& path) {
  static const text_parser txt;
  static const markdown_parser md;
  static const code_parser code;
  static const table_parser csv(','), tsv('\t');
  const std::string e = lower_ext(path);
  if (e == ".md" || e == ".markdown") return md;
  if (e == ".html" || e == ".htm" || e == ".xhtml") return html_parser_instance();
  if (e == ".pdf") return pdf_parser_instance();
  if (e == ".csv") return csv;
  if (e == ".tsv" || e == ".tab") return tsv;
  static const char* code_ext[] = {".c", ".cc", ".cpp", ".cxx", ".h", ".hpp", ".py", ".js", ".ts", ".go", ".rs", ".java"};
  for (const char* c : code_ext)
    if (e == c) return code;
  return txt;
}

bool is_known_binary_extension(const std::filesystem::path& path) {
  static const char* bin[] = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ico", ".zip",
                              ".gz", ".bz2", ".xz", ".zst", ".tar", ".7z", ".rar", ".exe", ".dll", ".so", ".a",
                              ".o", ".bin", ".mp3", ".mp4", ".wav", ".avi", ".mov", ".docx", ".xlsx", ".pptx",
                              ".doc", ".xls", ".ppt", ".odt", ".ods", ".class", ".jar", ".pyc", ".woff", ".woff2",
                              ".ttf", ".otf", ".sqlite", ".db", ".faiss", ".pdb", ".wasm"};
  const std::string e = lower_ext(path);
  for (const char* b : bin)
    if (e == b) return true;
  return false;
}

}  // namespace evident::ingest
