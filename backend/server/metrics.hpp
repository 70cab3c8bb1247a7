// Request counters and a latency histogram for /metrics (Prometheus text format 0.0.4).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "service.hpp"

namespace otac::backend::http {

/// Counts requests by method and status and records their latency. Thread-safe.
class RequestMetrics {
 public:
  /// Records one finished request.
  void observe(std::string_view method, unsigned status, double seconds);
  /// Counts a connection refused because of the connection limit.
  void refused_connection() { refused_.fetch_add(1, std::memory_order_relaxed); }
  /// Counts an unauthenticated connection closed to make room for a new one.
  void evicted_connection() { evicted_.fetch_add(1, std::memory_order_relaxed); }
  /// Counts a connection closed because it broke a framing limit (chunk extensions,
  /// trailer, bytes per request).
  void refused_request() { oversized_.fetch_add(1, std::memory_order_relaxed); }
  /// A network thread starts serving (`expected` = how many the server runs).
  void io_thread_started(unsigned expected) {
    io_expected_.store(expected, std::memory_order_relaxed);
    io_running_.fetch_add(1, std::memory_order_relaxed);
  }
  /// A network thread stopped serving (only when the server stops, unless something is wrong).
  void io_thread_stopped() { io_running_.fetch_sub(1, std::memory_order_relaxed); }
  /// An exception reached a network thread's event loop (it was caught and the loop resumed).
  void io_exception() { io_exceptions_.fetch_add(1, std::memory_order_relaxed); }
  /// Counts an operator token that did not match (bearer or console sign-in).
  void auth_failure() { auth_failures_.fetch_add(1, std::memory_order_relaxed); }
  /// Counts an operator request answered 429 because its source failed too often.
  void auth_throttled() { auth_throttled_.fetch_add(1, std::memory_order_relaxed); }
  /// Counts a decline answered 429 and not stored: its terminal or card is over its decline budget.
  void decline_suppressed() { declines_suppressed_.fetch_add(1, std::memory_order_relaxed); }
  /// The notAfter (Unix seconds) of the server certificate being served.
  void server_certificate(std::int64_t not_after) { cert_not_after_.store(not_after, std::memory_order_relaxed); }
  /// {running, expected} network threads; /healthz is unhealthy while running < expected.
  std::pair<unsigned, unsigned> io_threads() const {
    return {io_running_.load(std::memory_order_relaxed), io_expected_.load(std::memory_order_relaxed)};
  }
  /// The Prometheus text of these counters plus the service's (decisions, SMS queue depth).
  std::string render(const Metrics& service) const;

  /// Histogram bucket upper bounds, seconds.
  static constexpr std::array<double, 12> bounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                 0.1,   0.25,   0.5,   1.0,  2.5,   10.0};

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, unsigned>, std::uint64_t> requests_;
  std::array<std::uint64_t, bounds.size()> buckets_{};
  std::uint64_t count_ = 0;
  double sum_ = 0;
  std::atomic<std::uint64_t> refused_{0};
  std::atomic<std::uint64_t> oversized_{0};
  std::atomic<std::uint64_t> evicted_{0};
  std::atomic<std::uint64_t> io_exceptions_{0};
  std::atomic<std::uint64_t> auth_failures_{0};
  std::atomic<std::uint64_t> auth_throttled_{0};
  std::atomic<std::uint64_t> declines_suppressed_{0};
  std::atomic<std::int64_t> cert_not_after_{0};
  std::atomic<unsigned> io_running_{0};
  std::atomic<unsigned> io_expected_{0};
};

}  // namespace otac::backend::http
