// HTTPS client for the backend API: Boost.Beast over OpenSSL 3, mutual TLS (client
// certificate), the configured CA as the only trust anchor, host name or IP address
// verification, TLS 1.2 or later, keep-alive connection reuse, and a time limit on every
// network operation.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "otac/common/result.hpp"

namespace otac::terminal {

/// Where the backend is and how to prove who we are.
struct HttpsOptions {
  std::string host;  ///< DNS name or IPv4 address; must be named in the server certificate
  std::uint16_t port = 443;
  std::string ca_file, cert_file, key_file;
  std::chrono::milliseconds connect_timeout{3000};  ///< TCP connect + TLS handshake
};

/// An HTTP answer of any status.
struct HttpAnswer {
  int status = 0;
  std::string body;
};

/// One keep-alive connection to the backend, reopened when needed. Not thread-safe.
class HttpsClient {
 public:
  /// Loads the CA, certificate and key (errors name the file). Does not connect yet.
  static Result<std::unique_ptr<HttpsClient>> create(const HttpsOptions& o);
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  /// Sends one request (method "GET" or "POST", JSON body for POST) and reads the answer,
  /// all within timeout. A reused connection the server closed meanwhile is reopened once.
  /// Errors: Errc::io (cannot connect, connection lost), Errc::timeout, Errc::crypto (TLS
  /// handshake failed: certificate not trusted, wrong name, client certificate refused).
  Result<HttpAnswer> request(const std::string& method, const std::string& target, const std::string& body,
                             std::chrono::milliseconds timeout);

  /// Number of TCP+TLS connections opened so far (keep-alive shows as 1).
  int connections_opened() const;

 private:
  struct Impl;
  explicit HttpsClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Turns an HTTP answer into the body the flow wants: 200 gives the body; 502/503/504 give
/// Errc::io (retryable); 409 Errc::conflict; other statuses Errc::bad_value; the message
/// carries the backend's error text.
Result<std::string> backend_body(const Result<HttpAnswer>& a);

}  // namespace otac::terminal
