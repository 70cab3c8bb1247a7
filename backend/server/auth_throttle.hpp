// Per-source throttling of failed operator-token checks (bearer tokens on /v1/admin and the
// console's sign-in). A source may fail a few times; after that, every further failure blocks
// it for a time that doubles with each failure, up to a ceiling. While blocked, its operator
// requests get 429 with Retry-After and their tokens are not even checked. Other sources are
// not affected. A correct token does not reset the count (one valid viewer token must not let
// a source keep guessing others); failures are forgotten after a quiet period instead. The
// table is bounded.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "otac/common/result.hpp"
#include "service.hpp"

namespace otac::backend::http {

/// Limits of the throttle.
struct ThrottleLimits {
  std::uint32_t free_failures = 10;                ///< failures before the first block
  std::chrono::milliseconds base{1000};            ///< first block; doubles per further failure
  std::chrono::milliseconds max{15 * 60 * 1000};   ///< longest block
  std::chrono::milliseconds forget{60 * 60 * 1000};///< a source quiet this long starts afresh
  std::size_t max_sources = 4096;                  ///< bound on memory
};

/// What a failure did.
struct FailureOutcome {
  bool blocked = false;          ///< the source is now blocked
  bool crossed = false;          ///< this failure crossed the threshold (the first block): audit it
  std::uint32_t failures = 0;    ///< failures counted for the source
};

/// Thread-safe per-source failure table.
class AuthThrottle {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  explicit AuthThrottle(ThrottleLimits limits = {}, Clock clock = {});

  /// Seconds the source must still wait (0: it may try now).
  std::uint32_t retry_after(std::string_view source);
  /// Records a failed token check from source.
  FailureOutcome failure(std::string_view source);
  /// Sources in the table (tests).
  std::size_t size();

  /// The address part of the server's "address:port" (the port changes with every connection).
  static std::string source_of(std::string_view remote);

 private:
  struct Entry {
    std::uint32_t failures = 0;
    std::chrono::steady_clock::time_point last{};
    std::chrono::steady_clock::time_point blocked_until{};
  };
  void make_room(std::chrono::steady_clock::time_point now);

  ThrottleLimits limits_;
  Clock clock_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> table_;
};

class RequestMetrics;

/// The answer of OperatorGate::check.
struct GateAnswer {
  std::optional<OperatorRecord> op;  ///< set when the token belongs to an operator
  std::uint32_t retry_after = 0;     ///< > 0: the source is throttled (answer 429)
  std::optional<Error> error;        ///< a service failure (not a wrong token)
};

/// Checks operator tokens for the API and the console alike: throttles sources that fail too
/// often, counts failures and throttled requests in /metrics, and audit-logs (and logs) each
/// source that crosses the threshold.
class OperatorGate {
 public:
  OperatorGate(Service& service, RequestMetrics* metrics, ThrottleLimits limits = {}, AuthThrottle::Clock clock = {});
  /// Checks token sent from remote (the server's "address:port"); via names the entry point
  /// for the audit entry ("bearer" or "console").
  GateAnswer check(std::string_view remote, std::string_view token, std::string_view via);
  /// The throttle (tests).
  AuthThrottle& throttle() noexcept { return throttle_; }

 private:
  Service& service_;
  RequestMetrics* metrics_;
  AuthThrottle throttle_;
};

}  // namespace otac::backend::http
