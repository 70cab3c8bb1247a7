// libFuzzer target: the backend's configuration file (otac-backend.conf) and the addresses
// parsed from it or from command lines (listen addresses, the Kannel sendsms URL, the backend
// URL otac-admin takes). Any text gets a value or an error that says why.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config.hpp"
#include "https_client.hpp"
#include "kannel.hpp"
#include "server.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  {
    std::string host, path;
    std::uint16_t port = 0;
    (void)otac::backend::http::parse_host_port(text, host, port);
    if (auto u = otac::backend::client::parse_https_url(text, host, port); !u && u.error().message.empty()) std::abort();
    if (auto u = otac::backend::sms::parse_http_url(text, host, port, path); !u && u.error().message.empty()) std::abort();
  }
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
