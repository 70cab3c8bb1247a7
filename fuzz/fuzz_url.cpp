// libFuzzer target: the URL and HOST:PORT parsers (common/url) behind every address the
// programs read: listen addresses, backend_url, otac-admin --url, the Kannel sendsms URL.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "otac/common/url.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto hp = otac::parse_host_port(text)) {
    // A parsed address prints back to one that parses to the same host and port.
    auto again = otac::parse_host_port(otac::join_host_port(hp->host, hp->port));
    if (!again || again->host != hp->host || again->port != hp->port) std::abort();
  } else if (hp.error().message.empty()) {
    std::abort();  // every refusal says why
  }
  if (auto u = otac::parse_url(text)) {
    if (u->host.empty() || u->port == 0 || u->target.empty() || u->target[0] != '/') std::abort();
  } else if (u.error().message.empty()) {
    std::abort();
  }
  if (auto o = otac::parse_https_origin(text); !o && o.error().message.empty()) std::abort();
  return 0;
}
