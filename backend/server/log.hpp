// Structured logs: one line per event, key=value pairs, to stderr. Never pass secrets.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace otac::backend::log {

/// Key/value fields of one log line.
using Fields = std::vector<std::pair<std::string, std::string>>;

/// Writes "ts=... level=... event=... k=v ..." as one line (thread-safe); quotes values with
/// spaces, quotes, '=' or control characters.
void write(std::string_view level, std::string_view event, const Fields& fields = {});
/// Shorthands.
inline void info(std::string_view event, const Fields& fields = {}) { write("info", event, fields); }
inline void warn(std::string_view event, const Fields& fields = {}) { write("warn", event, fields); }
inline void error(std::string_view event, const Fields& fields = {}) { write("error", event, fields); }

}  // namespace otac::backend::log
