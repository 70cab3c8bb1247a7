// The terminal's link to the backend: the configured HTTPS client (common/net) for each node
// of backend_url, failover between them, and the two calls the flow makes, with the
// backend's HTTP statuses turned into the errors it expects.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "otac/common/result.hpp"
#include "otac/net/http_client.hpp"
#include "terminal/config.hpp"

namespace otac::terminal {

/// Client settings from the terminal's configuration for one of its backend nodes: its CA,
/// certificate and key, and connect_timeout_ms for each of resolve, TCP connect and TLS
/// handshake.
net::ClientOptions backend_options(const Config& cfg, const BackendOrigin& origin);

/// Turns an HTTP answer into the body the flow wants: 200 gives the body; 502/503/504 give
/// Errc::io (retryable); 409 Errc::conflict; other statuses Errc::bad_value; the message
/// carries the backend's error text.
Result<std::string> backend_body(const Result<net::Response>& a);

/// True for an exchange another node may answer instead: no answer at all (cannot resolve or
/// connect, TLS refused, timeout, connection lost) or an HTTP 5xx. Every request the terminal
/// sends is keyed by its transaction id, so sending it again elsewhere cannot decide twice.
bool worth_another_node(const Result<net::Response>& a);

/// Keep-alive connections to the backend's nodes, one at a time. Not thread-safe.
///
/// Failover: a request goes to the node that answered last (at first, the first of
/// backend_url); when worth_another_node says so it goes, unchanged, to the next node, each
/// node at most once per request, and the node that answers becomes the one tried first from
/// then on. Worst case per request: nodes x (connect_timeout_ms + backend_timeout_ms). With
/// several nodes, the one that answered last is also kept in data_dir/backend.node
/// ("HOST:PORT"), so that the next run starts with it instead of a node that is down.
class BackendLink {
 public:
  using Log = std::function<void(const std::string&)>;
  /// Loads the TLS files named in cfg (errors name the file). Does not connect yet. `log`
  /// gets one line per failover (default: standard error).
  static Result<std::unique_ptr<BackendLink>> create(const Config& cfg, Log log = {});
  /// POSTs a JSON body, within backend_timeout_ms per step.
  Result<std::string> post(const std::string& target, const std::string& body);
  /// GET /v1/authorizations/TXN?wait=S, within backend_timeout_ms plus the wait.
  Result<std::string> poll(const std::string& txn, unsigned wait_s);
  /// Reopens, ahead of the next tap, a connection the backend closed while idle
  /// (HttpClient::warm); a node that cannot be reached hands over to the next.
  Result<void> warm();
  /// The client of the node tried first (connection counters for benchmarks and tests).
  const net::HttpClient& client() const { return *nodes_[current_]; }
  /// Index in Config::backends of the node tried first.
  std::size_t current() const noexcept { return current_; }
  /// Requests that went to another node because one failed, so far.
  int failovers() const noexcept { return failovers_; }

 private:
  BackendLink(std::vector<std::unique_ptr<net::HttpClient>> nodes, std::chrono::milliseconds timeout, Log log)
      : nodes_(std::move(nodes)), timeout_(timeout), log_(std::move(log)) {}
  /// Makes node k the one tried first, and keeps it in the state file when it changed.
  void answered_by(std::size_t k);
  Result<std::string> exchange(boost::beast::http::verb method, const std::string& target, const std::string& body,
                               std::chrono::milliseconds timeout);
  std::vector<std::unique_ptr<net::HttpClient>> nodes_;
  std::chrono::milliseconds timeout_;
  Log log_;
  std::size_t current_ = 0;
  int failovers_ = 0;
  std::filesystem::path state_file_;  ///< data_dir/backend.node; empty with one node
};

}  // namespace otac::terminal
