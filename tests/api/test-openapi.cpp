// api/openapi.yaml stays true: the set of (method, path) pairs it documents is exactly the set the server registers.
// The YAML is read with a small line scanner that knows the spec's layout: paths at two spaces of indentation under
// `paths:`, methods at four.
#include <fstream>
#include <set>
#include <string>

#include "api/server.h"
#include "tests/test-util.h"

namespace evident::test {
namespace {

std::set<std::string> documented_routes(const std::filesystem::path& file) {
  std::ifstream in(file);
  EXPECT_TRUE(in.good()) << "cannot open " << file;
  std::set<std::string> out;
  std::string line, path;
  bool in_paths = false;
  while (std::getline(in, line)) {
    if (line == "paths:") {
      in_paths = true;
      continue;
    }
    if (!in_paths) continue;
    if (!line.empty() && line[0] != ' ') break;  // the next top-level key ends `paths:`
    if (line.rfind("  /", 0) == 0 && line.back() == ':') {
      path = line.substr(2, line.size() - 3);
    } else if (line.size() > 4 && line.rfind("    ", 0) == 0 && line[4] != ' ' && line.back() == ':') {
      std::string method = line.substr(4, line.size() - 5);
      for (auto& c : method) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      out.insert(method + " " + path);
    }
  }
  return out;
}

TEST(OpenApi, EveryRouteIsDocumentedAndEveryDocumentedRouteExists) {
  const auto documented = documented_routes(source_path("api/openapi.yaml"));
  std::set<std::string> registered;
  for (const auto& r : api::server::routes()) registered.insert(r.method + " " + r.path);
  ASSERT_GE(registered.size(), 11u);
  for (const auto& r : registered) EXPECT_TRUE(documented.count(r)) << r << " is registered but not in api/openapi.yaml";
  for (const auto& d : documented) EXPECT_TRUE(registered.count(d)) << d << " is in api/openapi.yaml but not registered";
}

}  // namespace
}  // namespace evident::test
