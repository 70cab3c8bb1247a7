#include <iostream>
#include <stdexcept>
#include <string_view>

#include "otac/sys/secret_input.hpp"
#include "tool.hpp"

namespace otac::tool {

std::optional<std::string> Args::option(const std::string& name) const {
  auto it = options_.find(name);
  if (it == options_.end()) return std::nullopt;
  return it->second;
}

Bytes parse_hex(const std::string& text, const std::string& what) {
  auto r = from_hex(text);
  if (!r) throw UsageError{what + ": " + r.error().message};
  return std::move(*r);
}

Bytes Args::hex_option(const std::string& name, std::size_t len) const {
  auto v = option(name);
  if (!v) throw UsageError{"option --" + name + " is required"};
  Bytes b = parse_hex(*v, "--" + name);
  if (len != 0 && b.size() != len)
    throw UsageError{"--" + name + " must be " + std::to_string(len) + " bytes (" + std::to_string(2 * len) +
                     " hex digits), got " + std::to_string(b.size())};
  return b;
}

std::optional<Bytes> Args::hex_option_opt(const std::string& name) const {
  if (!option(name)) return std::nullopt;
  return hex_option(name);
}

namespace {

// A key in hex; the message says what is wrong without repeating any part of the secret.
SecretBytes key_from_hex(std::string_view text, const std::string& what) {
  auto r = from_hex(text);
  if (!r) throw UsageError{what + ": not valid hex (give the key as 16, 32 or 48 hex digits)"};
  SecretBytes key(*r);
  secure_zero(r->data(), r->size());
  return key;
}

}  // namespace

SecretBytes Args::key_option(const std::string& name) const {
  if (auto file = option(name + "-file")) {
    auto text = sys::read_secret_file(*file);
    if (!text) throw UsageError{"--" + name + "-file: " + text.error().message};
    return key_from_hex(std::string_view(reinterpret_cast<const char*>(text->data()), text->size()),
                        "--" + name + "-file " + *file);
  }
  auto v = option(name);
  if (!v) throw UsageError{"option --" + name + "-file is required"};
  std::cerr << "otac-tool: warning: --" << name << " puts the key on the command line, where ps and the shell history "
            << "show it; it is deprecated: use --" << name << "-file FILE\n";
  return key_from_hex(*v, "--" + name);
}

SecretBytes Args::key_option_opt(const std::string& name) const {
  if (!option(name) && !option(name + "-file")) return SecretBytes{};
  return key_option(name);
}

std::uint8_t Args::byte_option(const std::string& name) const { return hex_option(name, 1)[0]; }

Bytes Args::hex_positional(const char* what) const {
  if (positional_.size() != 1)
    throw UsageError{std::string("expected exactly one ") + what + " in hex, got " + std::to_string(positional_.size()) +
                     " arguments"};
  // The data itself is input, not usage: data that is not hex is bad input (exit 1).
  auto r = from_hex(positional_[0]);
  if (!r) throw InputError{std::string(what) + ": " + r.error().message};
  return std::move(*r);
}

}  // namespace otac::tool
