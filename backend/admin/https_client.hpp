// A small blocking HTTPS client (Boost.Beast): CA pinning, host/IP verification, optional
// client certificate, bearer token, bounded time. Used by otac-admin and the tests.
#pragma once

#include <boost/beast/http/verb.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>

#include "otac/common/result.hpp"

namespace otac::backend::client {

/// Where to connect and how to authenticate.
struct ClientConfig {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::filesystem::path ca;           ///< the only CA trusted for the server certificate
  std::filesystem::path cert, key;    ///< client certificate and key (PEM), optional
  std::string bearer;                 ///< operator token, optional (never logged)
  std::chrono::milliseconds timeout{30000};
};

/// An HTTP answer.
struct Reply {
  unsigned status = 0;
  std::string body;
};

/// Parses "https://host:port" (an optional trailing '/'); host may be an IP or a name.
Result<void> parse_https_url(std::string_view url, std::string& host, std::uint16_t& port);

/// One request on a fresh TLS connection. body may be empty (then no content type is sent).
Result<Reply> request(const ClientConfig& c, boost::beast::http::verb method, const std::string& target,
                      const std::string& body = {});

}  // namespace otac::backend::client
