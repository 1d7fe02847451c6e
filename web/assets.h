// The web page's static files (web/*.html, *.js, *.css, *.svg), embedded into the binary at build time by
// web/embed-web.cmake. No JavaScript build step: the files are served exactly as they are in the source tree.
// Thread-safety: read-only data, safe from any thread.
#pragma once

#include <string_view>
#include <vector>

namespace evident::web {

struct asset {
  std::string_view path;  // URL path, e.g. "/index.html", "/app.js"
  std::string_view mime;  // Content-Type to serve it with
  std::string_view body;  // the file's bytes (static storage)
};

// Every embedded file, sorted by path.
const std::vector<asset>& assets();

// The asset served at `path` ("/" means "/index.html"); nullptr when there is none.
const asset* find_asset(std::string_view path);

}  // namespace evident::web
