// HTML parser (gumbo): visible text with structure. script/style/nav/noscript/template/head are dropped (the <title>
// becomes the document title), h1-h6 become headings, list items become "- item" lines, table rows become
// "cell | cell" lines, block elements end lines; whitespace in inline text is collapsed (kept inside <pre>).
#include <gumbo.h>

#include <string>

#include "engine/base/error.h"
#include "ingest/document.h"
#include "ingest/parse-util.h"

namespace evident::ingest {
namespace {

bool is_block(GumboTag t) {
  switch (t) {
    case GUMBO_TAG_P: case GUMBO_TAG_DIV: case GUMBO_TAG_SECTION: case GUMBO_TAG_ARTICLE: case GUMBO_TAG_BR:
    case GUMBO_TAG_UL: case GUMBO_TAG_OL: case GUMBO_TAG_TABLE: case GUMBO_TAG_BLOCKQUOTE: case GUMBO_TAG_PRE:
    case GUMBO_TAG_HR: case GUMBO_TAG_HEADER: case GUMBO_TAG_FOOTER: case GUMBO_TAG_MAIN: case GUMBO_TAG_ASIDE:
    case GUMBO_TAG_DL: case GUMBO_TAG_DT: case GUMBO_TAG_DD: case GUMBO_TAG_FIGURE: case GUMBO_TAG_FIGCAPTION:
    case GUMBO_TAG_FORM: case GUMBO_TAG_ADDRESS: case GUMBO_TAG_CAPTION: case GUMBO_TAG_BODY: case GUMBO_TAG_DETAILS:
    case GUMBO_TAG_SUMMARY:
      return true;
    default:
      return false;
  }
}

bool is_dropped(GumboTag t) {
  return t == GUMBO_TAG_SCRIPT || t == GUMBO_TAG_STYLE || t == GUMBO_TAG_NAV || t == GUMBO_TAG_NOSCRIPT ||
         t == GUMBO_TAG_TEMPLATE || t == GUMBO_TAG_HEAD || t == GUMBO_TAG_IFRAME || t == GUMBO_TAG_SVG ||
         t == GUMBO_TAG_BUTTON || t == GUMBO_TAG_SELECT;
}

int heading_level(GumboTag t) {
  switch (t) {
    case GUMBO_TAG_H1: return 1;
    case GUMBO_TAG_H2: return 2;
    case GUMBO_TAG_H3: return 3;
    case GUMBO_TAG_H4: return 4;
    case GUMBO_TAG_H5: return 5;
    case GUMBO_TAG_H6: return 6;
    default: return 0;
  }
}

// Plain text of a subtree (for headings, cells, title), whitespace not yet collapsed.
void raw_text(const GumboNode* n, std::string& out) {
  if (n->type == GUMBO_NODE_TEXT || n->type == GUMBO_NODE_CDATA || n->type == GUMBO_NODE_WHITESPACE) {
    out += n->v.text.text;
    return;
  }
  if (n->type != GUMBO_NODE_ELEMENT) return;
  if (is_dropped(n->v.element.tag)) return;
  if (n->v.element.tag == GUMBO_TAG_BR) out += ' ';
  const GumboVector& ch = n->v.element.children;
  for (unsigned i = 0; i < ch.length; ++i) raw_text(static_cast<const GumboNode*>(ch.data[i]), out);
  if (is_block(n->v.element.tag)) out += ' ';
}

class walker {
 public:
  explicit walker(document_builder& b) : b_(b) {}

  void inline_text(std::string_view s, bool pre) {
    if (pre) {
      flush_space();
      b_.append(clean_text(s));
      return;
    }
    bool lead = !s.empty() && (s.front() == ' ' || s.front() == '\n' || s.front() == '\t');
    bool trail = !s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\t');
    std::string c = collapse_spaces(s);
    if (c.empty()) {
      if (lead || trail) space_ = true;
      return;
    }
    if (lead) space_ = true;
    flush_space();
    b_.append(c);
    space_ = trail;
  }

  void line_break() {
    space_ = false;
    b_.end_line();
  }

  void visit(const GumboNode* n, bool pre) {
    if (n->type == GUMBO_NODE_TEXT || n->type == GUMBO_NODE_CDATA || n->type == GUMBO_NODE_WHITESPACE) {
      inline_text(n->v.text.text, pre);
      return;
    }
    if (n->type != GUMBO_NODE_ELEMENT && n->type != GUMBO_NODE_DOCUMENT) return;
    const GumboVector& ch = n->type == GUMBO_NODE_DOCUMENT ? n->v.document.children : n->v.element.children;
    GumboTag tag = n->type == GUMBO_NODE_ELEMENT ? n->v.element.tag : GUMBO_TAG_UNKNOWN;
    if (n->type == GUMBO_NODE_ELEMENT) {
      if (tag == GUMBO_TAG_TITLE && title_.empty()) {
        raw_text(n, title_);
        return;
      }
      if (tag == GUMBO_TAG_HEAD) {  // only the title matters in <head>
        for (unsigned i = 0; i < ch.length; ++i) {
          auto* c = static_cast<const GumboNode*>(ch.data[i]);
          if (c->type == GUMBO_NODE_ELEMENT && c->v.element.tag == GUMBO_TAG_TITLE) raw_text(c, title_);
        }
        return;
      }
      if (is_dropped(tag)) return;
      if (int level = heading_level(tag)) {
        std::string t;
        raw_text(n, t);
        std::string c = collapse_spaces(t);
        line_break();
        if (!c.empty()) {
          b_.add_heading(level, c);
          b_.append(c);
        }
        line_break();
        return;
      }
      if (tag == GUMBO_TAG_TR) {
        std::string line;
        for (unsigned i = 0; i < ch.length; ++i) {
          auto* c = static_cast<const GumboNode*>(ch.data[i]);
          if (c->type != GUMBO_NODE_ELEMENT) continue;
          if (c->v.element.tag != GUMBO_TAG_TD && c->v.element.tag != GUMBO_TAG_TH) continue;
          std::string t;
          raw_text(c, t);
          if (!line.empty()) line += " | ";
          line += collapse_spaces(t);
        }
        line_break();
        if (line.find_first_not_of(" |") != std::string::npos) b_.append(line);
        line_break();
        return;
      }
      if (tag == GUMBO_TAG_LI) {
        line_break();
        b_.append_normalised("- ");
        for (unsigned i = 0; i < ch.length; ++i) visit(static_cast<const GumboNode*>(ch.data[i]), pre);
        line_break();
        return;
      }
      if (tag == GUMBO_TAG_PRE) pre = true;
      if (is_block(tag)) line_break();
    }
    for (unsigned i = 0; i < ch.length; ++i) visit(static_cast<const GumboNode*>(ch.data[i]), pre);
    if (n->type == GUMBO_NODE_ELEMENT && is_block(tag)) line_break();
  }

  std::string title() const { return collapse_spaces(title_); }

 private:
  void flush_space() {
    if (space_ && !b_.empty() && b_.doc().text.back() != '\n' && b_.doc().text.back() != ' ')
      b_.append_normalised(" ");
    space_ = false;
  }
  document_builder& b_;
  bool space_ = false;
  std::string title_;
};

class html_parser final : public parser_i {
 public:
  std::string format() const override { return "html"; }
  document parse(std::string_view bytes, const std::filesystem::path& path) const override {
    std::string text = decode_text(bytes);
    GumboOutput* out = gumbo_parse_with_options(&kGumboDefaultOptions, text.data(), text.size());
    EV_THROW_IF_NOT_KIND(out != nullptr, corrupt, path.string(), ": HTML parser failed");
    document_builder b("html");
    walker w(b);
    try {
      w.visit(out->document, false);
    } catch (...) {
      gumbo_destroy_output(&kGumboDefaultOptions, out);
      throw;
    }
    gumbo_destroy_output(&kGumboDefaultOptions, out);
    std::string t = w.title();
    if (!t.empty()) b.doc().title = t;
    return b.finish(path);
  }
};

}  // namespace

const parser_i& html_parser_instance() {
  static const html_parser p;
  return p;
}

}  // namespace evident::ingest
