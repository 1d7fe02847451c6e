#include "engine/base/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace evident::log {
namespace {
level level_from_env() {
  const char* v = std::getenv("EVIDENT_LOG_LEVEL");
  if (v == nullptr) return level::info;
  if (std::strcmp(v, "debug") == 0) return level::debug;
  if (std::strcmp(v, "warn") == 0) return level::warn;
  if (std::strcmp(v, "error") == 0) return level::error;
  if (std::strcmp(v, "off") == 0) return level::off;
  return level::info;
}
std::atomic<level> g_level{level_from_env()};
}  // namespace

void set_level(level l) { g_level.store(l); }
level get_level() { return g_level.load(); }

void write(level l, const std::string& line) {
  static const char* names[] = {"debug", "info", "warning", "error", ""};
  std::string out = std::string("evident: ") + names[static_cast<int>(l)] + ": " + line + "\n";
  std::fwrite(out.data(), 1, out.size(), stderr);
}
}  // namespace evident::log
