// Minimal leveled logging to stderr, standard library only so the engine core builds on the GPU machine.
// Folders that link spdlog (ingest, api, ...) may use spdlog directly; this is for code that must not.
// Thread-safe: each call writes one line with a single fwrite.
#pragma once

#include <string>

#include "engine/base/error.h"

namespace evident::log {

enum class level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

// Lines below this level are dropped. Default: info, or EVIDENT_LOG_LEVEL=debug|info|warn|error|off.
void set_level(level l);
level get_level();

void write(level l, const std::string& line);

template <typename... Args> void debug(Args&&... a) { if (get_level() <= level::debug) write(level::debug, detail::concat(std::forward<Args>(a)...)); }
template <typename... Args> void info(Args&&... a) { if (get_level() <= level::info) write(level::info, detail::concat(std::forward<Args>(a)...)); }
template <typename... Args> void warn(Args&&... a) { if (get_level() <= level::warn) write(level::warn, detail::concat(std::forward<Args>(a)...)); }
template <typename... Args> void err(Args&&... a) { if (get_level() <= level::error) write(level::error, detail::concat(std::forward<Args>(a)...)); }

}  // namespace evident::log
