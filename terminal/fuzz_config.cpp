// libFuzzer target: the otac-terminal config through toml++ and our checks (config.cpp), the
// conversion of the old key = value format, and the amount parser, on arbitrary bytes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "terminal/config.hpp"

namespace {

std::size_t lines(std::string_view t) {
  return static_cast<std::size_t>(std::count(t.begin(), t.end(), '\n')) + (!t.empty() && t.back() != '\n' ? 1 : 0);
}

void one_line(const otac::Error& e) {
  if (e.message.empty() || e.message.find('\n') != std::string::npos) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = otac::terminal::parse_config(text, "/etc/otac", "fuzz.conf");
  // A parsed config has 1 to 8 backends, each with a host.
  if (c && (c->backends.empty() || c->backends.size() > 8)) __builtin_trap();
  if (c)
    for (const auto& b : c->backends)
      if (b.host.empty()) __builtin_trap();
  if (!c) one_line(c.error());
  auto toml = otac::terminal::convert_config_text(text, "fuzz.conf");
  if (toml) {
    if (lines(*toml) != lines(text)) __builtin_trap();  // line for line, so errors keep their line
    if (!otac::terminal::parse_config(*toml, "/etc/otac", "fuzz.conf")) __builtin_trap();
  } else {
    one_line(toml.error());
  }
  auto a = otac::terminal::parse_amount(text, 2);
  if (a && *a > 999999999999ULL) __builtin_trap();
  return 0;
}
