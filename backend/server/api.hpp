// The JSON API of otac-backend (protocol.md section 5): terminal endpoints (mutual TLS),
// operator endpoints under /v1/admin/ (bearer tokens with roles), /healthz and /metrics.
#pragma once

#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "auth_throttle.hpp"
#include "decline_limit.hpp"
#include "metrics.hpp"
#include "pki.hpp"
#include "router.hpp"
#include "service.hpp"

namespace otac::backend::http {

/// What the API handlers need.
struct ApiContext {
  Service* service = nullptr;
  RequestMetrics* metrics = nullptr;
  /// Checks operator tokens with per-source throttling; without it, tokens are checked plainly.
  OperatorGate* gate = nullptr;
  /// The decline limiter the Service asks (ServiceConfig::record_decline); it names the wait
  /// of a suppressed decline's 429 and its audit summary. Null: declines are never suppressed.
  DeclineLimiter* declines = nullptr;
  pki::KeyCert ca;                 ///< the private CA (issues terminal certificates)
  int client_cert_days = pki::max_leaf_days;
  std::uint32_t max_wait_seconds = 30;
  /// Checks that the key custody answers (a PKCS#11 token: one HMAC in it); /healthz runs it
  /// with the database check, at most once a second. Empty: nothing to check (a KEK file).
  std::function<Result<void>()> custody_check;
  /// True once the server is shutting down: long-polls then answer at once.
  std::function<bool()> stopping;
};

/// Audit-logs (and logs) the declines suppressed since the last report, if a report is due
/// (force: now, e.g. at shutdown). One entry per interval, whatever the flood.
void report_suppressed(Service& service, DeclineLimiter& declines, bool force);

/// Registers every API route on router. ctx must outlive the router.
void install_api(Router& router, ApiContext& ctx);

}  // namespace otac::backend::http
