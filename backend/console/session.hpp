// Browser sessions of the operator console: a random session id in an HttpOnly cookie, the
// operator's name and role server-side, an idle and an absolute expiry, and a per-session CSRF
// token that every state-changing request must echo in a header.
//
// Ids and CSRF tokens are 32 random bytes (hex). The table is keyed by SHA-256 of the id, so
// the ids themselves are not kept in memory and a lookup's timing says nothing about them.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"
#include "store.hpp"

namespace otac::backend::console {

/// Limits of the session table.
struct SessionLimits {
  std::chrono::seconds idle{15 * 60};       ///< a session unused this long expires
  std::chrono::seconds absolute{8 * 3600};  ///< no session lives longer than this
  /// Bound on memory, per role: a role's sign-in fails beyond it, and the other roles' sign-ins
  /// are unaffected (so viewers can never lock admins out).
  std::size_t max_sessions = 1000;
  /// Sessions one operator may hold; a further sign-in ends that operator's oldest session.
  std::size_t max_per_operator = 8;
};

/// What the server knows about a signed-in browser.
struct Session {
  std::string operator_name;
  Role role = Role::viewer;
  std::string csrf;            ///< the token the page sends in X-CSRF-Token
  /// The operator token typed at sign-in, kept in memory only (wiped with the session) so that
  /// the console's actions go through the operator API with the operator's own credentials.
  std::shared_ptr<const SecretBytes> token;
  UnixTime created_at = 0;
  UnixTime last_used = 0;
  UnixTime expires_at = 0;     ///< min(last_used + idle, created_at + absolute)
};

/// A new session: the id for the cookie (only ever returned here) and its record.
struct NewSession {
  std::string id;
  Session session;
};

/// The server-side session table. Thread-safe.
class SessionStore {
 public:
  /// clock returns the current Unix time; defaults to the system clock.
  explicit SessionStore(SessionLimits limits = {}, std::function<UnixTime()> clock = {});

  /// Creates a session for a signed-in operator, ending that operator's oldest session when it
  /// already holds max_per_operator; state error when the role's share of the table is full.
  Result<NewSession> create(std::string_view operator_name, Role role, std::string_view token = {});
  /// The live session with this id, or nullopt if unknown or expired. extend restarts its idle
  /// timer (a person acted); background polling passes false so an unattended page still expires.
  std::optional<Session> touch(std::string_view id, bool extend = true);
  /// Ends the session with this id; false if there was none.
  bool destroy(std::string_view id);
  /// Number of live sessions (expired ones are dropped first).
  std::size_t size();
  /// The configured limits.
  const SessionLimits& limits() const noexcept { return limits_; }

 private:
  UnixTime now() const;
  void drop_expired(UnixTime now);

  SessionLimits limits_;
  std::function<UnixTime()> clock_;
  std::mutex mu_;
  std::map<std::string, Session> table_;  // key: hex SHA-256 of the id
};

/// True when the request's CSRF header matches the session's token (constant time).
bool csrf_ok(const Session& s, std::optional<std::string_view> header_value) noexcept;

/// True for methods that change state (everything but GET, HEAD and OPTIONS).
bool is_state_changing(std::string_view method) noexcept;

/// The value of one cookie from a Cookie header ("a=1; b=2"), if present.
std::optional<std::string_view> cookie_value(std::string_view cookie_header, std::string_view name);

}  // namespace otac::backend::console
