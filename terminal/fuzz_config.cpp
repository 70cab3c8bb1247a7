// libFuzzer target: the otac-terminal config parser and the amount parser on arbitrary text.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "terminal/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = otac::terminal::parse_config(text, "/etc/otac");
  // A parsed config has 1 to 8 backends, each with a host.
  if (c && (c->backends.empty() || c->backends.size() > 8)) __builtin_trap();
  if (c)
    for (const auto& b : c->backends)
      if (b.host.empty()) __builtin_trap();
  auto a = otac::terminal::parse_amount(text, 2);
  if (a && *a > 999999999999ULL) __builtin_trap();
  return 0;
}
