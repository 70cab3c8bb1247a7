// The operator console: the embedded page under /console/ and its JSON API under
// /console/api/, as routes on otac-backend's router (Beast messages in and out, no I/O here).
// Sign-in with an operator token gives a session cookie; every state-changing call needs the
// session's CSRF token in X-CSRF-Token. Views read through the Service and answer with the
// operator API's JSON views (views.hpp); actions are sent through the same router to the
// operator API (/v1/admin/...) with the signed-in operator's own token, so roles, validation
// and side effects are exactly those of otac-admin.
#pragma once

#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "router.hpp"
#include "service.hpp"
#include "session.hpp"

namespace otac::backend::http {
class OperatorGate;
}  // namespace otac::backend::http

namespace otac::backend::console {

/// What the console needs from the program besides the Service and the router.
struct ConsoleOptions {
  SessionLimits sessions;
  /// The clock (Unix seconds); defaults to the system clock.
  std::function<UnixTime()> clock;
  /// The server's operator-token check with per-source throttling (sign-in answers 429 while
  /// the source is throttled); without it, tokens are checked plainly.
  http::OperatorGate* gate = nullptr;
};

/// Name of the session cookie (the __Host- prefix pins it to this host, Path=/, Secure).
inline constexpr std::string_view session_cookie = "__Host-otac-console";

/// The console's handlers. Register them once with install(); the object must outlive the router.
class Console {
 public:
  /// router is otac-backend's router with the operator API on it; actions go through it.
  Console(Service& service, const http::Router& router, ConsoleOptions options);
  ~Console();
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  /// Registers GET /console (a redirect), the assets under /console/ and the API under
  /// /console/api/ on router (before the server starts).
  void install(http::Router& router);

  /// The session table (tests inspect it).
  SessionStore& sessions() noexcept { return sessions_; }

 private:
  struct Call;
  using ApiHandler = http::Response (Console::*)(Call&);
  void api(http::Router& router, http::Verb verb, std::string pattern, ApiHandler h);
  http::Response guarded(const http::Request& req, http::RequestContext& ctx, ApiHandler h);
  http::Response page(const http::Request& req, http::RequestContext& ctx);
  http::Response sign_in(const http::Request& req, http::RequestContext& ctx);
  http::Response forward(const Call& c, http::Verb method, std::string target, std::string body);
  UnixTime now() const;
  void sample_outbox(UnixTime t, std::uint32_t depth);

  // The API, one handler per route.
  http::Response session_get(Call& c);
  http::Response session_delete(Call& c);
  http::Response held(Call& c);
  http::Response held_decide(Call& c);
  http::Response transactions(Call& c);
  http::Response transaction(Call& c);
  http::Response refunds(Call& c);
  http::Response refund_decide(Call& c);
  http::Response cards(Call& c);
  http::Response card_enroll(Call& c);
  http::Response card(Call& c);
  http::Response card_settings(Call& c);
  http::Response card_action(Call& c);
  http::Response terminals(Call& c);
  http::Response terminal_register(Call& c);
  http::Response terminal_action(Call& c);
  http::Response audit(Call& c);
  http::Response stats(Call& c);

  Service& service_;
  const http::Router& router_;
  ConsoleOptions options_;
  SessionStore sessions_;
  // SMS queue depth over the last hour, sampled while any console polls (for the chart).
  std::mutex outbox_mu_;
  std::deque<std::pair<UnixTime, std::uint32_t>> outbox_history_;
};

}  // namespace otac::backend::console
