// otac-tool internals: argument parsing shared by the subcommands.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/secret.hpp"

namespace otac::tool {

/// Exit codes: 0 success, 1 bad input (a packet that does not parse or verify), 2 usage.
inline constexpr int exit_ok = 0;
inline constexpr int exit_bad_input = 1;
inline constexpr int exit_usage = 2;

/// Thrown for a usage error (unknown option, missing or malformed argument); main prints
/// the message and the subcommand's help and exits 2.
struct UsageError {
  std::string message;
};

/// Thrown for input that is well-formed on the command line but wrong (does not parse,
/// does not verify); main prints the message and exits 1.
struct InputError {
  std::string message;
};

/// The arguments of one subcommand as CLI11 parsed them (main.cpp): "--name value" options,
/// "--flag" flags, positionals. The accessors below turn values into bytes and keys.
class Args {
 public:
  Args(std::map<std::string, std::string> options, std::set<std::string> flags, std::vector<std::string> positional)
      : options_(std::move(options)), flags_(std::move(flags)), positional_(std::move(positional)) {}

  bool flag(const std::string& name) const { return flags_.count(name) != 0; }
  std::optional<std::string> option(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

  /// A required option's value as hex bytes (exact length if len != 0).
  Bytes hex_option(const std::string& name, std::size_t len = 0) const;
  /// An optional option's value as hex bytes.
  std::optional<Bytes> hex_option_opt(const std::string& name) const;
  /// A required option holding a secret key in hex. Its value never appears in messages.
  SecretBytes key_option(const std::string& name) const;
  /// An optional key option (empty SecretBytes when absent).
  SecretBytes key_option_opt(const std::string& name) const;
  /// A required option holding one byte in hex ("15").
  std::uint8_t byte_option(const std::string& name) const;
  /// The single positional argument, as hex (packets, APDUs, TPDUs); InputError if not hex.
  Bytes hex_positional(const char* what) const;

 private:
  std::map<std::string, std::string> options_;
  std::set<std::string> flags_;
  std::vector<std::string> positional_;
};

/// Hex parse with a usage error naming the argument on failure.
Bytes parse_hex(const std::string& text, const std::string& what);

/// One subcommand: name, one-line summary, full help text, the options it takes (each with a
/// value), its flags (without one), whether it takes positional arguments, and the function.
struct Command {
  const char* name;
  const char* summary;
  const char* help;
  std::vector<std::string> options;
  std::vector<std::string> flags;
  bool positional;
  int (*run)(const Args& args, std::ostream& out);
};

/// The OTA subcommands (ota_cmds.cpp).
std::vector<Command> ota_commands();
/// The codec subcommands (codec_cmds.cpp).
std::vector<Command> codec_commands();

}  // namespace otac::tool
