// The one HTTP(S) client of the programs: Boost.Beast over OpenSSL 3 (or plain TCP for a
// gateway on loopback). TLS 1.2 or later, only the configured CA as trust anchor, SNI and
// host-name or IP-address verification with every OpenSSL call checked, an optional client
// certificate, a time limit on each of resolve, connect, handshake, write and read, and a
// keep-alive connection reused across requests (with TLS session resumption when it drops).
#pragma once

#include <boost/beast/http/verb.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "otac/common/result.hpp"

namespace otac::net {

/// Where to connect, how to prove who we are, and how long each step may take.
struct ClientOptions {
  bool tls = true;                     ///< false: plain HTTP (only for a gateway on loopback)
  std::string host;                    ///< DNS name, IPv4 or IPv6 literal (without brackets)
  std::uint16_t port = 443;
  std::filesystem::path ca_file;       ///< the only CA trusted for the server (TLS: required)
  std::filesystem::path cert_file;     ///< client certificate chain (PEM), optional
  std::filesystem::path key_file;      ///< its unencrypted PEM key, required with cert_file
  std::string bearer;                  ///< "Authorization: Bearer" token, optional (never logged)
  std::string user_agent = "otac";
  std::chrono::milliseconds resolve_timeout{3000};
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds handshake_timeout{3000};
  std::chrono::milliseconds io_timeout{10000};  ///< writing the request, and again reading the answer
  bool keep_alive = true;              ///< false: one connection per request ("Connection: close")
  std::size_t body_limit = 1024 * 1024;  ///< largest answer body accepted
};

/// An HTTP answer of any status.
struct Response {
  unsigned status = 0;
  std::string body;
};

/// One connection to one server, opened on first use and reopened when needed. Not thread-safe.
class HttpClient {
 public:
  /// Loads the CA, certificate and key (errors name the file). Does not connect yet.
  static Result<std::unique_ptr<HttpClient>> create(const ClientOptions& options);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// Sends one request (a non-empty body goes as application/json) and reads the answer;
  /// writing and reading are each bounded by io_timeout (0: options.io_timeout). A reused
  /// connection that the server had closed meanwhile is reopened once.
  /// Errors: Errc::io (cannot resolve or connect, connection lost), Errc::timeout (a step
  /// took longer than its limit), Errc::crypto (TLS refused: certificate not trusted, wrong
  /// name, client certificate refused).
  Result<Response> request(boost::beast::http::verb method, std::string_view target, std::string_view body = {},
                           std::chrono::milliseconds io_timeout = std::chrono::milliseconds(0));

  /// Makes sure a keep-alive connection is open, between requests: one the server closed
  /// while idle (its idle timeout) is reopened now, resuming the TLS session, so that the
  /// next request does not pay for connecting and the handshake. Errors as for request.
  Result<void> warm();

  /// Number of TCP connections opened so far (keep-alive shows as 1).
  int connections_opened() const noexcept;
  /// Number of TLS handshakes that resumed an earlier session.
  int sessions_resumed() const noexcept;
  /// "host:port" as shown in error messages ("[::1]:8443" for IPv6).
  std::string where() const;

 private:
  struct Impl;
  explicit HttpClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// One request on a connection of its own, closed afterwards.
Result<Response> request_once(ClientOptions options, boost::beast::http::verb method, std::string_view target,
                              std::string_view body = {});

}  // namespace otac::net
