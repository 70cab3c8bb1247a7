// The terminal's link to the backend: the configured HTTPS client (common/net) and the two
// calls the flow makes, with the backend's HTTP statuses turned into the errors it expects.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "otac/common/result.hpp"
#include "otac/net/http_client.hpp"
#include "terminal/config.hpp"

namespace otac::terminal {

/// Client settings from the terminal's configuration: its CA, certificate and key, and
/// connect_timeout_ms for each of resolve, TCP connect and TLS handshake.
net::ClientOptions backend_options(const Config& cfg);

/// Turns an HTTP answer into the body the flow wants: 200 gives the body; 502/503/504 give
/// Errc::io (retryable); 409 Errc::conflict; other statuses Errc::bad_value; the message
/// carries the backend's error text.
Result<std::string> backend_body(const Result<net::Response>& a);

/// One keep-alive connection to the backend. Not thread-safe.
class BackendLink {
 public:
  /// Loads the TLS files named in cfg (errors name the file). Does not connect yet.
  static Result<std::unique_ptr<BackendLink>> create(const Config& cfg);
  /// POSTs a JSON body, within backend_timeout_ms per step.
  Result<std::string> post(const std::string& target, const std::string& body);
  /// GET /v1/authorizations/TXN?wait=S, within backend_timeout_ms plus the wait.
  Result<std::string> poll(const std::string& txn, unsigned wait_s);
  /// Reopens, ahead of the next tap, a connection the backend closed while idle (HttpClient::warm).
  Result<void> warm() { return http_->warm(); }
  /// The client underneath (connection counters for benchmarks and tests).
  const net::HttpClient& client() const { return *http_; }

 private:
  BackendLink(std::unique_ptr<net::HttpClient> http, std::chrono::milliseconds timeout)
      : http_(std::move(http)), timeout_(timeout) {}
  std::unique_ptr<net::HttpClient> http_;
  std::chrono::milliseconds timeout_;
};

}  // namespace otac::terminal
