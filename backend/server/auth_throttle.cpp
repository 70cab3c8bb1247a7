#include "auth_throttle.hpp"

#include <algorithm>

#include "log.hpp"
#include "metrics.hpp"

namespace otac::backend::http {

using std::chrono::steady_clock;

AuthThrottle::AuthThrottle(ThrottleLimits limits, Clock clock)
    : limits_(limits), clock_(clock ? std::move(clock) : Clock([] { return steady_clock::now(); })) {}

std::string AuthThrottle::source_of(std::string_view remote) {
  // The server writes "address:port" (IPv6 unbracketed): the port follows the last colon.
  const auto colon = remote.rfind(':');
  return std::string(colon == std::string_view::npos ? remote : remote.substr(0, colon));
}

std::uint32_t AuthThrottle::retry_after(std::string_view source) {
  const auto now = clock_();
  std::lock_guard lock(mu_);
  auto it = table_.find(std::string(source));
  if (it == table_.end() || it->second.blocked_until <= now) return 0;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(it->second.blocked_until - now).count();
  return static_cast<std::uint32_t>((ms + 999) / 1000);
}

FailureOutcome AuthThrottle::failure(std::string_view source) {
  const auto now = clock_();
  std::lock_guard lock(mu_);
  auto it = table_.find(std::string(source));
  if (it == table_.end()) {
    make_room(now);
    it = table_.emplace(std::string(source), Entry{}).first;
  } else if (now - it->second.last >= limits_.forget && it->second.blocked_until <= now) {
    it->second = Entry{};
  }
  Entry& e = it->second;
  if (e.failures < UINT32_MAX) ++e.failures;
  e.last = now;
  FailureOutcome out;
  out.failures = e.failures;
  if (e.failures > limits_.free_failures) {
    // base * 2^(failures beyond the free ones - 1), capped; the shift is bounded first.
    const std::uint32_t extra = std::min<std::uint32_t>(e.failures - limits_.free_failures - 1, 30);
    auto block = limits_.base * (std::int64_t{1} << extra);
    if (block > limits_.max || block < limits_.base) block = limits_.max;
    e.blocked_until = now + block;
    out.blocked = true;
    out.crossed = e.failures == limits_.free_failures + 1;
  }
  return out;
}

std::size_t AuthThrottle::size() {
  std::lock_guard lock(mu_);
  return table_.size();
}

void AuthThrottle::make_room(steady_clock::time_point now) {
  if (table_.size() < limits_.max_sources) return;
  // First drop sources that are quiet and not blocked; if that frees nothing, the one whose
  // last failure is oldest (preferring those not blocked now).
  std::erase_if(table_, [&](const auto& kv) {
    return kv.second.blocked_until <= now && now - kv.second.last >= limits_.forget;
  });
  if (table_.size() < limits_.max_sources) return;
  auto victim = table_.begin();
  for (auto it = table_.begin(); it != table_.end(); ++it) {
    const bool it_blocked = it->second.blocked_until > now, v_blocked = victim->second.blocked_until > now;
    if ((v_blocked && !it_blocked) || (v_blocked == it_blocked && it->second.last < victim->second.last)) victim = it;
  }
  table_.erase(victim);
}

OperatorGate::OperatorGate(Service& service, RequestMetrics* metrics, ThrottleLimits limits, AuthThrottle::Clock clock)
    : service_(service), metrics_(metrics), throttle_(limits, std::move(clock)) {}

GateAnswer OperatorGate::check(std::string_view remote, std::string_view token, std::string_view via) {
  GateAnswer out;
  const std::string source = AuthThrottle::source_of(remote);
  if (const auto wait = throttle_.retry_after(source); wait > 0) {
    if (metrics_) metrics_->auth_throttled();
    out.retry_after = wait;
    return out;
  }
  auto op = service_.authenticate_operator(token);
  if (op) {
    out.op = std::move(*op);
    return out;
  }
  if (op.error().code != Errc::not_found) {
    out.error = op.error();
    return out;
  }
  if (metrics_) metrics_->auth_failure();
  const FailureOutcome f = throttle_.failure(source);
  if (f.crossed) {
    const std::string detail = "source=" + source + " via=" + std::string(via) + " failures=" + std::to_string(f.failures);
    log::warn("operator_auth_throttled", {{"source", source}, {"via", std::string(via)}, {"failures", std::to_string(f.failures)}});
    if (auto a = service_.record_event("system", "auth_throttled", detail); !a)
      log::warn("audit_failed", {{"action", "auth_throttled"}, {"error", a.error().message}});
  }
  return out;
}

}  // namespace otac::backend::http
