// evident's error conventions (three tiers, see docs/contributing.md):
//   1. programmer bugs   -> EV_ASSERT(expr): prints expression, file and line, then aborts.
//   2. bad data or input -> throw evident::error (or EV_THROW_IF_NOT_MSG) with a message that names the thing
//                           (path, field, byte offset) and what was expected.
//   3. boundaries (CLI, HTTP handlers) catch evident::error and convert it: one line + exit code, or a JSON 4xx.
// Standard library only: every folder, kernels/ excepted, may include this header.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace evident {

// The project's one exception type. `kind` lets boundaries map errors to exit codes and HTTP statuses without
// parsing messages.
enum class error_kind {
  invalid_input,  // the caller's mistake: bad argument, malformed request, unsupported format      (CLI 2, HTTP 400/422)
  not_found,      // a named thing does not exist: file, document id, tensor                         (CLI 1, HTTP 404)
  corrupt,        // data on disk is damaged or inconsistent: truncated file, bad header            (CLI 1, HTTP 500)
  io,             // the operating system refused: open, read, write, fsync                          (CLI 1, HTTP 500)
  resource,       // out of memory, queue full, quota exceeded                                       (CLI 1, HTTP 429/503)
  internal,       // should not happen; a bug that was caught rather than crashed on               (CLI 1, HTTP 500)
};

class error : public std::runtime_error {
 public:
  explicit error(std::string message, error_kind kind = error_kind::invalid_input)
      : std::runtime_error(std::move(message)), kind_(kind) {}
  error_kind kind() const noexcept { return kind_; }

 private:
  error_kind kind_;
};

namespace detail {
// Concatenates any streamable arguments; used by the macros below.
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "evident: assertion failed: %s at %s:%d%s%s\n", expr, file, line, msg.empty() ? "" : ": ",
               msg.c_str());
  std::fflush(stderr);
  std::abort();
}
}  // namespace detail

}  // namespace evident

// Tier 1: programmer bugs. Active in every build type (the cost is a branch); the message is optional.
#define EV_ASSERT(expr, ...)                                                                          \
  do {                                                                                                \
    if (!(expr)) ::evident::detail::assert_fail(#expr, __FILE__, __LINE__, ::evident::detail::concat("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)

// Tier 2: bad input. EV_THROW_IF_NOT_MSG(size > 0, "file ", path, ": expected a non-empty file");
#define EV_THROW_IF_NOT_MSG(cond, ...)                                              \
  do {                                                                              \
    if (!(cond)) throw ::evident::error(::evident::detail::concat(__VA_ARGS__));    \
  } while (0)

// Same, with an explicit error_kind: EV_THROW_IF_NOT_KIND(ok, corrupt, "...").
#define EV_THROW_IF_NOT_KIND(cond, kind, ...)                                                                  \
  do {                                                                                                         \
    if (!(cond)) throw ::evident::error(::evident::detail::concat(__VA_ARGS__), ::evident::error_kind::kind); \
  } while (0)

#define EV_THROW(kind, ...) throw ::evident::error(::evident::detail::concat(__VA_ARGS__), ::evident::error_kind::kind)
