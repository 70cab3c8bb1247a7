// The network side of otac-backend: Boost.Beast listeners (HTTPS with optional client
// certificates, and plain HTTP for the loopback-only Kannel listener), sessions with limits
// and timeouts, and worker pools that run the Router's handlers off the network threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "metrics.hpp"
#include "otac/common/result.hpp"
#include "router.hpp"

namespace otac::backend::http {

/// Limits applied to every connection and request.
struct Limits {
  std::size_t max_body = 64 * 1024;              ///< request body bytes (-> 413)
  std::uint32_t max_header = 8 * 1024;           ///< request header bytes (-> 431/400)
  /// Bytes of one request read from the connection, whatever the framing: the header, chunk
  /// headers with their extensions, the body and the trailer together (-> 413). 0 = derived
  /// from max_header and max_body (both, plus 64 KiB for chunked framing).
  std::size_t max_request = 0;
  /// Unparsed bytes buffered for one connection. A chunk header line (with its extensions)
  /// and the whole trailer must fit here; more is refused with 431. 0 = 2 x max_header.
  std::size_t max_buffer = 0;
  std::uint32_t max_connections = 1024;          ///< open connections; more are closed at once
  /// Connections without a verified client certificate yet (handshaking, operators, scanners);
  /// when full, the oldest of them is closed for a new one. 0 = half of max_connections.
  std::uint32_t max_unauthenticated = 0;
  std::uint32_t max_per_source = 256;            ///< open connections from one IP address
  std::chrono::seconds handshake_timeout{5};     ///< from accept to a finished TLS handshake
  std::chrono::seconds read_timeout{10};         ///< reading one request
  std::chrono::seconds write_timeout{10};        ///< writing one response
  std::chrono::seconds idle_timeout{30};         ///< keep-alive wait for the next request
  unsigned io_threads = 2;                       ///< network threads, each with its own event loop
  unsigned workers = 64;                         ///< handler threads (they wait for group commits: more = larger batches)
  unsigned slow_workers = 32;                    ///< long-poll handler threads
};

/// Certificate files of an HTTPS listener.
struct TlsFiles {
  std::filesystem::path cert;     ///< server certificate chain (PEM)
  std::filesystem::path key;      ///< its private key (PEM)
  std::filesystem::path client_ca;///< CA that verifies client certificates (PEM)
};

/// An HTTP(S) server with any number of listeners sharing threads and pools.
class Server {
 public:
  Server(Limits limits, RequestMetrics& metrics);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Adds an HTTPS listener on host:port (port 0 = any); returns the bound port.
  Result<std::uint16_t> listen_tls(const std::string& host, std::uint16_t port, const TlsFiles& files,
                                   const Router& router);
  /// Adds a plain-HTTP listener; returns the bound port.
  Result<std::uint16_t> listen_plain(const std::string& host, std::uint16_t port, const Router& router);
  /// Starts the network threads (returns at once).
  void start();
  /// Stops accepting, closes connections, joins all threads. Idempotent.
  void stop();

 private:
  void serve(unsigned index, unsigned expected);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Feeds raw request bytes through the parser exactly as a connection reads them (the same
/// limits, buffer bound and chunk-extension check) and returns the status a connection would
/// answer: 200 for a complete request, 0 for an incomplete one, else 400, 413 or 431. For
/// tests and the fuzz target; it must never throw.
unsigned check_request_bytes(std::string_view bytes, const Limits& limits);

}  // namespace otac::backend::http
