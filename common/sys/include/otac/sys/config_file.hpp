// Config files in TOML, read with toml++: one flat table of known keys, each with its TOML type
// and a setter that holds the program's own checks. Every error is one line,
// "FILE:LINE: KEY: what is wrong". The old "key = value" format is not read; convert() turns it
// into TOML with the same line numbers (docs/operations.md, "Config files").
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "otac/common/result.hpp"

namespace otac::sys::config {

/// The TOML type a key takes. `strings`: one string or an array of strings.
enum class Type { string, integer, boolean, strings };

/// A key's value, as its Type says: std::string, std::int64_t, bool or std::vector<std::string>.
using Value = std::variant<std::string, std::int64_t, bool, std::vector<std::string>>;

/// One known key: its type, and what to do with a value of that type (an error says what is
/// wrong with the value; the file, line and key are added).
struct Key {
  Type type;
  std::function<Result<void>(const Value&)> set;
};
using Keys = std::map<std::string, Key, std::less<>>;

/// The line (from 1) of each key a file set.
using Lines = std::map<std::string, std::size_t, std::less<>>;

/// What a program's config files look like, for its error messages and for convert().
struct Format {
  std::string keys_help;        ///< where the known keys are described ("otac-terminal --help")
  std::string convert_command;  ///< the command that converts an old file ("otac-terminal --convert-config")
  bool old_comment_anywhere;    ///< old format: '#' anywhere starts a comment (else only at a line's start)
  bool old_strip_quotes;        ///< old format: a value in double quotes lost them
  bool old_last_wins;           ///< old format: a key set twice took the last value (else an error)
};

/// Largest config file read (bytes).
inline constexpr std::size_t max_size = 64 * 1024;

/// Parses TOML `text` and passes every top-level key to its setter. `source` names the file in
/// errors. Unknown keys, wrong types, tables and syntax errors are errors; a syntax error in a
/// file that convert() could read adds how to convert it.
Result<Lines> apply(std::string_view text, std::string_view source, const Keys& keys, const Format& format);

/// The error "SOURCE:LINE: KEY: what" ("SOURCE: KEY: what" when line is 0), for checks across keys.
Error error(std::string_view source, std::size_t line, std::string_view key, std::string_view what,
            Errc code = Errc::bad_value);

/// Converts text in the old "key = value" format to TOML, line for line, each value typed as
/// its key says. Comments stay; a key the old format set twice keeps its last value (the
/// earlier lines become comments) where old_last_wins says so. The result is not checked here.
Result<std::string> convert(std::string_view text, std::string_view source, const Keys& keys, const Format& format);

/// Reads a config file of at most max_size bytes; the error names the file.
Result<std::string> read(const std::filesystem::path& file);

/// A string setter; empty values are refused unless allow_empty.
Key text(std::string& dst, bool allow_empty = true);
/// A string key whose value goes to `set` (which checks it and stores it).
Key text_to(std::function<Result<void>(const std::string&)> set);
/// A whole number from lo to hi.
Key whole(std::uint32_t& dst, std::uint32_t lo, std::uint32_t hi);
/// true or false.
Key flag(bool& dst);

}  // namespace otac::sys::config
