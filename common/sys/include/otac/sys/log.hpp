// The one log format of every OTAC program: one line per event on stderr, logfmt key=value
// pairs after a UTC time stamp and a level, which journald keeps as they are and which
// grep, awk and log shippers read. Never pass secrets.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace otac::sys::log {

/// Key/value fields of one log line.
using Fields = std::vector<std::pair<std::string, std::string>>;

/// Writes "ts=... level=... event=... k=v ..." as one line (thread-safe); quotes values with
/// spaces, quotes, '=' or control characters.
void write(std::string_view level, std::string_view event, const Fields& fields = {});
/// The line write() would write, with its newline, for a caller that gathers the lines of a
/// burst and writes them together with write_lines.
std::string format(std::string_view level, std::string_view event, const Fields& fields = {});
/// Writes whole lines from format() in one write (thread-safe; never between another
/// caller's lines).
void write_lines(std::string_view lines);
/// Shorthands.
inline void info(std::string_view event, const Fields& fields = {}) { write("info", event, fields); }
inline void warn(std::string_view event, const Fields& fields = {}) { write("warn", event, fields); }
inline void error(std::string_view event, const Fields& fields = {}) { write("error", event, fields); }

}  // namespace otac::sys::log
