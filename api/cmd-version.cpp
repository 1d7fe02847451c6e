#include <cstdio>

#include "api/cli.h"
#include "api/commands.h"

namespace evident::cli {
int cmd_version(const std::vector<std::string>& argv) {
  args a("version", "", "Print evident's version and build configuration.");
  if (!a.parse(argv, 0, 0)) return 0;
#ifdef EVIDENT_VERSION
  std::printf("evident %s\n", EVIDENT_VERSION);
#endif
#ifdef EVIDENT_WITH_CUDA
  std::printf("cuda backend: built\n");
#else
  std::printf("cuda backend: not built\n");
#endif
  return 0;
}
}  // namespace evident::cli
