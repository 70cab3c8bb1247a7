// libFuzzer target: otac-backend.conf through toml++ and our checks (config.cpp), and the
// conversion of the old key = value format. Any bytes get a Config or a one-line error that
// says why; a conversion keeps the line count and always loads.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config.hpp"

namespace {

std::size_t lines(std::string_view t) {
  return static_cast<std::size_t>(std::count(t.begin(), t.end(), '\n')) + (!t.empty() && t.back() != '\n' ? 1 : 0);
}

void one_line(const otac::Error& e) {
  if (e.message.empty() || e.message.find('\n') != std::string::npos) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  otac::backend::Config base;
  base.data_dir = "/nonexistent/otac-fuzz";
  auto c = otac::backend::parse_config(text, base, "fuzz.conf");
  if (!c) one_line(c.error());
  else (void)c->resolve("server.pem");
  auto toml = otac::backend::convert_config_text(text, "fuzz.conf");
  if (!toml) {
    one_line(toml.error());
    return 0;
  }
  if (lines(*toml) != lines(text)) std::abort();  // line for line, so errors keep their line
  if (!otac::backend::parse_config(*toml, base, "fuzz.conf")) std::abort();
  return 0;
}
