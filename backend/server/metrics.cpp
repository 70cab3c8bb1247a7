#include "metrics.hpp"

#include <chrono>
#include <cstdio>

namespace otac::backend::http {
namespace {

std::string num(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// Label values are our own fixed names; escape anyway, as the format requires.
std::string label(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') { out += "\\n"; continue; }
    out.push_back(c);
  }
  return out;
}

}  // namespace

void RequestMetrics::observe(std::string_view method, unsigned status, double seconds) {
  std::lock_guard lock(mu_);
  ++requests_[{std::string(method), status}];
  ++count_;
  sum_ += seconds;
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (seconds <= bounds[i]) ++buckets_[i];
  }
}

std::string RequestMetrics::render(const Metrics& service) const {
  std::string out;
  std::lock_guard lock(mu_);
  out += "# HELP otac_http_requests_total HTTP requests answered, by method and status.\n";
  out += "# TYPE otac_http_requests_total counter\n";
  for (const auto& [k, v] : requests_) {
    out += "otac_http_requests_total{method=\"" + label(k.first) + "\",status=\"" + std::to_string(k.second) + "\"} " +
           std::to_string(v) + "\n";
  }
  out += "# HELP otac_http_request_duration_seconds Time from a complete request to its response.\n";
  out += "# TYPE otac_http_request_duration_seconds histogram\n";
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    out += "otac_http_request_duration_seconds_bucket{le=\"" + num(bounds[i]) + "\"} " + std::to_string(buckets_[i]) + "\n";
  }
  out += "otac_http_request_duration_seconds_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += "otac_http_request_duration_seconds_sum " + num(sum_) + "\n";
  out += "otac_http_request_duration_seconds_count " + std::to_string(count_) + "\n";
  out += "# HELP otac_connections_refused_total Connections closed at once: the connection limit or the per-source limit.\n";
  out += "# TYPE otac_connections_refused_total counter\n";
  out += "otac_connections_refused_total " + std::to_string(refused_.load(std::memory_order_relaxed)) + "\n";
  out += "# HELP otac_connections_evicted_total Unauthenticated connections closed to make room for new ones.\n";
  out += "# TYPE otac_connections_evicted_total counter\n";
  out += "otac_connections_evicted_total " + std::to_string(evicted_.load(std::memory_order_relaxed)) + "\n";
  out += "# HELP otac_requests_refused_total Requests refused for their framing (chunk extensions, trailer, bytes read).\n";
  out += "# TYPE otac_requests_refused_total counter\n";
  out += "otac_requests_refused_total " + std::to_string(oversized_.load(std::memory_order_relaxed)) + "\n";
  const auto [running, expected] = io_threads();
  out += "# HELP otac_io_threads_running Network threads serving connections.\n";
  out += "# TYPE otac_io_threads_running gauge\n";
  out += "otac_io_threads_running " + std::to_string(running) + "\n";
  out += "# HELP otac_io_threads_configured Network threads the server runs.\n";
  out += "# TYPE otac_io_threads_configured gauge\n";
  out += "otac_io_threads_configured " + std::to_string(expected) + "\n";
  out += "# HELP otac_io_exceptions_total Exceptions that reached a network thread's event loop (caught; the loop resumed).\n";
  out += "# TYPE otac_io_exceptions_total counter\n";
  out += "otac_io_exceptions_total " + std::to_string(io_exceptions_.load(std::memory_order_relaxed)) + "\n";
  out += "# HELP otac_auth_failures_total Operator tokens that matched no operator (bearer or console sign-in).\n";
  out += "# TYPE otac_auth_failures_total counter\n";
  out += "otac_auth_failures_total " + std::to_string(auth_failures_.load(std::memory_order_relaxed)) + "\n";
  out += "# HELP otac_auth_throttled_total Operator requests answered 429: their source failed too often.\n";
  out += "# TYPE otac_auth_throttled_total counter\n";
  out += "otac_auth_throttled_total " + std::to_string(auth_throttled_.load(std::memory_order_relaxed)) + "\n";
  out += "# HELP otac_declines_suppressed_total Declines answered 429 and not stored: the terminal or card was over its decline budget.\n";
  out += "# TYPE otac_declines_suppressed_total counter\n";
  out += "otac_declines_suppressed_total " + std::to_string(declines_suppressed_.load(std::memory_order_relaxed)) + "\n";
  if (const std::int64_t na = cert_not_after_.load(std::memory_order_relaxed); na != 0) {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    out += "# HELP otac_server_certificate_expiry_seconds Seconds until the served TLS server certificate expires (negative: expired).\n";
    out += "# TYPE otac_server_certificate_expiry_seconds gauge\n";
    out += "otac_server_certificate_expiry_seconds " + std::to_string(na - now) + "\n";
    out += "# HELP otac_server_certificate_not_after_seconds The served TLS server certificate's notAfter, Unix seconds.\n";
    out += "# TYPE otac_server_certificate_not_after_seconds gauge\n";
    out += "otac_server_certificate_not_after_seconds " + std::to_string(na) + "\n";
  }
  out += "# HELP otac_decisions_total Authorization decisions since start, by decision and reason.\n";
  out += "# TYPE otac_decisions_total counter\n";
  for (const auto& [k, v] : service.decisions) {
    const std::size_t slash = k.find('/');
    const std::string d = k.substr(0, slash);
    const std::string r = slash == std::string::npos ? std::string() : k.substr(slash + 1);
    out += "otac_decisions_total{decision=\"" + label(d) + "\",reason=\"" + label(r) + "\"} " + std::to_string(v) + "\n";
  }
  out += "# HELP otac_settlements_total What happened after decisions since start: outcomes reported or automatic, refund requests and decisions.\n";
  out += "# TYPE otac_settlements_total counter\n";
  for (const auto& [k, v] : service.settlements) {
    const std::size_t slash = k.find('/');
    out += "otac_settlements_total{kind=\"" + label(k.substr(0, slash)) + "\",state=\"" +
           label(slash == std::string::npos ? std::string() : k.substr(slash + 1)) + "\"} " + std::to_string(v) + "\n";
  }
  out += "# HELP otac_sms_queue_depth MT SMS queued and not yet accepted by the gateway.\n";
  out += "# TYPE otac_sms_queue_depth gauge\n";
  out += "otac_sms_queue_depth " + std::to_string(service.outbox_depth) + "\n";
  return out;
}

}  // namespace otac::backend::http
