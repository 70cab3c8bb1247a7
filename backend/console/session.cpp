// Server-side session table of the operator console.
#include "session.hpp"

#include <algorithm>

#include "otac/common/bytes.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/secret.hpp"
#include "service.hpp"

namespace otac::backend::console {

namespace {

std::string key_of(std::string_view id) { return to_hex(crypto::sha256(as_bytes(id))); }

UnixTime system_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

SessionStore::SessionStore(SessionLimits limits, std::function<UnixTime()> clock)
    : limits_(limits), clock_(clock ? std::move(clock) : std::function<UnixTime()>(system_now)) {}

UnixTime SessionStore::now() const { return clock_(); }

void SessionStore::drop_expired(UnixTime t) {
  std::erase_if(table_, [t](const auto& kv) { return kv.second.expires_at <= t; });
}

Result<NewSession> SessionStore::create(std::string_view operator_name, Role role, std::string_view token) {
  const UnixTime t = now();
  NewSession out;
  out.id = to_hex(crypto::random_bytes(32));
  out.session.operator_name = std::string(operator_name);
  out.session.role = role;
  out.session.csrf = to_hex(crypto::random_bytes(32));
  out.session.token = std::make_shared<const SecretBytes>(as_bytes(token));
  out.session.created_at = t;
  out.session.last_used = t;
  out.session.expires_at = t + std::min(limits_.idle.count(), limits_.absolute.count());
  std::lock_guard lock(mu_);
  drop_expired(t);
  // One operator signing in again and again only replaces their own sessions (oldest first).
  std::size_t mine = 0, same_role = 0;
  auto oldest = table_.end();
  for (auto it = table_.begin(); it != table_.end(); ++it) {
    if (it->second.role == role) ++same_role;
    if (it->second.operator_name != operator_name) continue;
    ++mine;
    if (oldest == table_.end() || it->second.created_at < oldest->second.created_at) oldest = it;
  }
  if (limits_.max_per_operator == 0)
    return make_error(Errc::state, "console sessions are disabled (max_per_operator is 0)");
  while (mine >= limits_.max_per_operator && oldest != table_.end()) {
    table_.erase(oldest);
    --mine;
    --same_role;
    oldest = table_.end();
    for (auto it = table_.begin(); it != table_.end(); ++it) {
      if (it->second.operator_name != operator_name) continue;
      if (oldest == table_.end() || it->second.created_at < oldest->second.created_at) oldest = it;
    }
  }
  // Each role has its own share, so one role's sessions never shut out another's.
  if (same_role >= limits_.max_sessions)
    return make_error(Errc::state, std::string("too many console sessions of role ") + role_name(role) +
                                       " are open; sign out elsewhere or wait for them to expire");
  table_.emplace(key_of(out.id), out.session);
  return out;
}

std::optional<Session> SessionStore::touch(std::string_view id, bool extend) {
  if (id.size() != 64) return std::nullopt;  // not one of ours; no hashing needed
  const UnixTime t = now();
  const std::string key = key_of(id);
  std::lock_guard lock(mu_);
  auto it = table_.find(key);
  if (it == table_.end()) return std::nullopt;
  Session& s = it->second;
  if (s.expires_at <= t) {
    table_.erase(it);
    return std::nullopt;
  }
  if (extend) {
    s.last_used = t;
    s.expires_at = std::min(t + limits_.idle.count(), s.created_at + limits_.absolute.count());
  }
  return s;
}

bool SessionStore::destroy(std::string_view id) {
  const std::string key = key_of(id);
  std::lock_guard lock(mu_);
  return table_.erase(key) > 0;
}

std::size_t SessionStore::size() {
  std::lock_guard lock(mu_);
  drop_expired(now());
  return table_.size();
}

bool csrf_ok(const Session& s, std::optional<std::string_view> header_value) noexcept {
  if (!header_value || header_value->size() != s.csrf.size() || s.csrf.empty()) return false;
  return ct_equal(as_bytes(*header_value), as_bytes(s.csrf));
}

bool is_state_changing(std::string_view method) noexcept {
  return !(method == "GET" || method == "HEAD" || method == "OPTIONS");
}

namespace {

std::string_view trim_blanks(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::optional<std::string_view> cookie_value(std::string_view cookie_header, std::string_view name) {
  while (!cookie_header.empty()) {
    const auto semi = cookie_header.find(';');
    std::string_view pair = trim_blanks(cookie_header.substr(0, semi));
    cookie_header = semi == std::string_view::npos ? std::string_view{} : cookie_header.substr(semi + 1);
    const auto eq = pair.find('=');
    if (eq == std::string_view::npos) continue;
    if (trim_blanks(pair.substr(0, eq)) == name) return trim_blanks(pair.substr(eq + 1));
  }
  return std::nullopt;
}

}  // namespace otac::backend::console
