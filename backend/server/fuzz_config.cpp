// libFuzzer target: the backend's configuration file (otac-backend.conf). Any text gets a
// value or an error that says why. (The addresses and URLs in it are fuzz/fuzz_url.cpp's.)
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  otac::backend::Config base;
  base.data_dir = "/nonexistent/otac-fuzz";
  auto c = otac::backend::parse_config(text, base);
  if (!c) {
    if (c.error().message.empty()) std::abort();  // every refusal says why
    return 0;
  }
  (void)c->resolve("server.pem");
  return 0;
}
