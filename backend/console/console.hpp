// The operator console: serves the embedded page under /console/ and its JSON API under
// /console/api/. Sign-in with an operator token gives a session cookie; every state-changing
// call needs the session's CSRF token in X-CSRF-Token; roles are checked here, server-side,
// before any Service call. Every action is one Service call, the same the operator API makes.
//
// The server calls Console::handle for every request whose path starts with /console (or is
// exactly "/console"); it does no I/O itself.
#pragma once

#include <functional>
#include <memory>
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
}  // namespace otac::backend::http

namespace otac::backend::console {

/// Registers the console's routes on otac-backend's router (install.cpp; the server calls it
/// once at start-up, see backend/server/router.hpp).
void install(http::Router& router, const http::Extension& ext);

/// A terminal client certificate freshly issued by the server's CA.
struct IssuedCert {
  std::string cert_pem;
  std::string key_pem;          ///< shown once to the operator, never stored by the console
  std::string fingerprint_hex;  ///< SHA-256 of the DER certificate, as register_terminal wants
};

/// What the console needs from the server besides the Service.
struct ConsoleOptions {
  SessionLimits sessions;
  /// Opens a store connection for read-only views the Service has no call for (codes left,
  /// a terminal's record, a transaction by id). Optional: those fields are omitted without it.
  std::function<Result<std::unique_ptr<Store>>()> open_store;
  /// Issues a client certificate for a terminal id (the server owns the CA). Optional: the
  /// console answers 501 for certificate issuance without it.
  std::function<Result<IssuedCert>(std::string_view terminal_id)> issue_cert;
  /// The clock (Unix seconds); defaults to the system clock.
  std::function<UnixTime()> clock;
};

/// The least role each console action needs (one table, checked before the Service call).
enum class Action { view, decide_held, block_card, unblock_card, refresh_card, rotate_key, enroll_card, manage_terminal };
/// The least role allowed to perform an action.
Role required_role(Action a) noexcept;

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
  UnixTime now() const;

  Service& service_;
  ConsoleOptions options_;
  SessionStore sessions_;
};

}  // namespace otac::backend::console
