// URLs and HOST:PORT addresses, parsed by Boost.URL (RFC 3986): names, IPv4 and bracketed
// IPv6 literals ("[::1]:8443"). Pure parsing, no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "otac/common/result.hpp"

namespace otac {

/// A host and a port; host holds no brackets ("::1", not "[::1]").
struct HostPort {
  std::string host;
  std::uint16_t port = 0;
};

/// "HOST:PORT" as a listen or connect address. The port is required and may be 0 ("any
/// free port", for listening). Errors name what is wrong.
Result<HostPort> parse_host_port(std::string_view text);

/// An absolute http or https URL, split for a client.
struct Url {
  bool https = false;
  std::string host;           ///< without brackets
  std::uint16_t port = 0;     ///< the URL's port, or 80 / 443 by scheme
  std::string target = "/";   ///< path and query as sent in the request line (still encoded)
};

/// Parses "http[s]://HOST[:PORT][/PATH][?QUERY]". No user part, no fragment, port 1-65535.
Result<Url> parse_url(std::string_view text);

/// parse_url for a server address only: https, no path beyond "/", no query.
Result<HostPort> parse_https_origin(std::string_view text);

/// HOST:PORT for a URL or a Host header: "[::1]:8443" for an IPv6 literal.
std::string join_host_port(std::string_view host, std::uint16_t port);

}  // namespace otac
