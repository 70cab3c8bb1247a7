// Plain HTTP request/response values between the HTTPS server and the console. The console
// never touches a socket (the server adapts its Boost.Beast messages to these), so tests
// drive it request by request.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace otac::backend::console {

/// A request as the server received it.
struct HttpRequest {
  std::string method;                                        ///< "GET", "POST", ...
  std::string target;                                        ///< path and query, e.g. "/console/api/held?x=1"
  std::vector<std::pair<std::string, std::string>> headers;  ///< names in any case
  std::string body;
  std::string remote;                                        ///< peer "address:port" (throttling)

  /// The first header with this name (case-insensitive), if any.
  std::optional<std::string_view> header(std::string_view name) const;
};

/// A response for the server to send.
struct HttpResponse {
  unsigned status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  /// The first header with this name (case-insensitive), if any.
  std::optional<std::string_view> header(std::string_view name) const;
};

/// Case-insensitive ASCII comparison of header names.
bool iequals(std::string_view a, std::string_view b) noexcept;

/// The value of one cookie from a Cookie header ("a=1; b=2"), if present.
std::optional<std::string_view> cookie_value(std::string_view cookie_header, std::string_view name);

/// Splits a target into path and query (without '?').
std::pair<std::string_view, std::string_view> split_target(std::string_view target) noexcept;

/// The percent-decoded value of a query parameter, if present; nullopt also for bad escapes.
std::optional<std::string> query_param(std::string_view query, std::string_view name);

}  // namespace otac::backend::console
