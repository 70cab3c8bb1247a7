// The operator console: serves the embedded page under /console/ and its JSON API under
// /console/api/. Sign-in with an operator token gives a session cookie; every state-changing
// call needs the session's CSRF token in X-CSRF-Token. Actions are forwarded to the operator
// API (/v1/admin/...) with the operator's token, so the server enforces roles there exactly as
// for otac-admin; views read through the Service.
//
// The server calls Console::handle for every request whose path starts with /console (or is
// exactly "/console"); it does no I/O itself.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "http.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"
#include "service.hpp"
#include "session.hpp"

namespace otac::backend::http {
class Router;
struct Extension;
class OperatorGate;
}  // namespace otac::backend::http

namespace otac::backend::console {

/// Registers the console's routes on otac-backend's router (install.cpp; the server calls it
/// once at start-up, see backend/server/router.hpp).
void install(http::Router& router, const http::Extension& ext);

/// What the console needs from the server besides the Service.
struct ConsoleOptions {
  SessionLimits sessions;
  /// Sends one request to otac-backend's operator API (/v1/admin/...) and returns its answer.
  /// Every console action goes this way, with the signed-in operator's own token as bearer,
  /// so roles, validation and side effects are exactly those of otac-admin. Without it the
  /// console is read-only (actions answer 501).
  std::function<HttpResponse(const HttpRequest&)> operator_api;
  /// Opens a store connection for read-only views the Service has no call for (codes left,
  /// a transaction by id). Optional: those fields are omitted without it.
  std::function<Result<std::unique_ptr<Store>>()> open_store;
  /// The clock (Unix seconds); defaults to the system clock.
  std::function<UnixTime()> clock;
  /// The server's operator-token check with per-source throttling (sign-in answers 429 while
  /// the source is throttled); without it, tokens are checked plainly.
  http::OperatorGate* gate = nullptr;
};

/// Name of the session cookie (the __Host- prefix pins it to this host, Path=/, Secure).
inline constexpr std::string_view session_cookie = "__Host-otac-console";

/// The console request handler.
class Console {
 public:
  Console(Service& service, ConsoleOptions options);
  ~Console();
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  /// True for targets the console answers (/console and /console/...).
  static bool owns(std::string_view target) noexcept;
  /// Answers one request under /console. Never throws for bad input.
  HttpResponse handle(const HttpRequest& req);

  /// The session table (tests inspect it).
  SessionStore& sessions() noexcept { return sessions_; }

 private:
  struct Call;
  HttpResponse serve_asset(const HttpRequest& req, std::string_view name);
  HttpResponse api(const HttpRequest& req, std::string_view path, std::string_view query);
  HttpResponse sign_in(const HttpRequest& req);
  HttpResponse route(Call& c);
  HttpResponse forward(const Call& c, std::string_view method, std::string target, std::string body);
  UnixTime now() const;
  void sample_outbox(UnixTime t, std::uint32_t depth);

  Service& service_;
  ConsoleOptions options_;
  SessionStore sessions_;
  // SMS queue depth over the last hour, sampled while any console polls (for the chart).
  std::mutex outbox_mu_;
  std::deque<std::pair<UnixTime, std::uint32_t>> outbox_history_;
};

}  // namespace otac::backend::console
