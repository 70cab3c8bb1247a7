// The Service: its store pool and clock, terminals and operators, and reporting (transactions,
// the audit log, metrics). Authorizations, cards and the OTA flow are in their own files.
#include "service.hpp"

#include <algorithm>
#include <ctime>

#include "challenge.hpp"
#include "ota_push.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/cursor.hpp"
#include "otac/common/protocol.hpp"
#include "service_detail.hpp"

namespace otac::backend {
using namespace detail;

const char* decision_name(Decision d) noexcept {
  switch (d) {
    case Decision::approved: return "approved";
    case Decision::declined: return "declined";
    case Decision::held: return "held";
  }
  return "declined";
}

const char* role_name(Role r) noexcept {
  switch (r) {
    case Role::viewer: return "viewer";
    case Role::operator_: return "operator";
    case Role::admin: return "admin";
  }
  return "viewer";
}

// Store connections, one per concurrent caller (a SQLite connection is not shared by threads).
class Service::Pool {
 public:
  explicit Pool(std::function<Result<std::unique_ptr<Store>>()> f) : factory_(std::move(f)) {}
  Result<std::unique_ptr<Store>> take() {
    {
      std::lock_guard lock(mu_);
      if (!free_.empty()) {
        auto s = std::move(free_.back());
        free_.pop_back();
        return s;
      }
    }
    return factory_();
  }
  void give(std::unique_ptr<Store> s) {
    std::lock_guard lock(mu_);
    if (free_.size() < 64) free_.push_back(std::move(s));
  }

 private:
  std::function<Result<std::unique_ptr<Store>>()> factory_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Store>> free_;
};

Service::Service(ServiceConfig config, std::function<Result<std::unique_ptr<Store>>()> factory,
                 std::function<UnixTime()> clock)
    : config_(std::move(config)), pool_(std::make_unique<Pool>(std::move(factory))), clock_(std::move(clock)) {}

Service::~Service() = default;

UnixTime Service::now() const { return clock_ ? clock_() : static_cast<UnixTime>(std::time(nullptr)); }

Result<void> Service::run(const std::function<Result<void>(Tx&)>& fn) {
  auto s = pool_->take();
  if (!s) return s.error();
  auto r = (*s)->run(fn);
  pool_->give(std::move(*s));
  return r;
}

void Service::run_async(std::function<Result<void>(Tx&)> fn, Store::Done done) {
  auto s = pool_->take();
  if (!s) return done(s.error());
  // A store handle only names the shared connection: it goes back at once, while the call
  // waits in the store's queue.
  (*s)->run_async(std::move(fn), std::move(done));
  pool_->give(std::move(*s));
}

void Service::count(const AuthAnswer& a) {
  std::lock_guard lock(metrics_mu_);
  ++decisions_[std::string(decision_name(a.decision)) + "/" + a.reason];
}

void Service::count_settlement(const std::string& key) {
  std::lock_guard lock(metrics_mu_);
  ++settlements_[key];
}

// ---- terminals, operators --------------------------------------------------------------

Result<void> Service::register_terminal(const TerminalRecord& term, std::string_view actor) {
  if (term.id.size() != 8 || !std::all_of(term.id.begin(), term.id.end(), [](char c) { return c > 0x20 && c < 0x7F; }))
    return make_error(Errc::bad_value, "terminal id must be 8 printable ASCII characters (it is tag 9F1C)");
  const UnixTime t = now();
  return run([&](Tx& tx) -> Result<void> {
    if (auto x = tx.put_terminal(term); !x) return x;
    auto a = tx.audit(t, actor, "register_terminal", "terminal=" + term.id + " cert=" + term.cert_fingerprint);
    if (!a) return a.error();
    return {};
  });
}

Result<TerminalRecord> Service::terminal(std::string_view id) {
  TerminalRecord out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto t = tx.terminal(id);
    if (!t) return t.error();
    out = std::move(*t);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<TerminalRecord>> Service::list_terminals(std::uint32_t limit) {
  if (limit < 1 || limit > 1000) return make_error(Errc::bad_value, "terminal list limit must be 1 to 1000");
  std::vector<TerminalRecord> out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto t = tx.terminals(limit);
    if (!t) return t.error();
    out = std::move(*t);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::string> Service::create_operator(std::string_view name, Role role, std::string_view actor) {
  if (name.empty() || name.size() > 64) return make_error(Errc::bad_value, "operator name must be 1 to 64 characters");
  std::string token = "otac_" + to_hex(crypto::random_bytes(32));
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    if (auto x = tx.put_operator(OperatorRecord{std::string(name), role, crypto::sha256(as_bytes(token))}); !x) return x;
    auto a = tx.audit(t, actor, "create_operator", "name=" + std::string(name) + " role=" + role_name(role));
    if (!a) return a.error();
    return {};
  });
  if (!r) return r.error();
  return token;
}

Result<OperatorRecord> Service::authenticate_operator(std::string_view token) {
  OperatorRecord out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto op = tx.operator_by_token_hash(crypto::sha256(as_bytes(token)));
    if (!op) return op.error();
    out = std::move(*op);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<void> Service::record_event(std::string_view actor, std::string_view action, std::string_view detail) {
  const UnixTime t = now();
  return run([&](Tx& tx) -> Result<void> {
    auto a = tx.audit(t, actor, action, detail);
    if (!a) return a.error();
    return {};
  });
}

// ---- reporting --------------------------------------------------------------------------

Result<TransactionRecord> Service::transaction(std::string_view txn_id) {
  TransactionRecord out;
  bool expired = false;
  const UnixTime now_ = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto t = transaction_now(tx, txn_id, now_, expired);
    if (!t) return t.error();
    out = std::move(*t);
    return {};
  });
  if (!r) return r.error();
  if (expired) {
    count(answer_of(out, now_));
    held_cv_.notify_all();
  }
  return out;
}

Result<std::vector<TransactionRecord>> Service::list_transactions(const TransactionFilter& f) {
  // Expire what is due first, so that no list shows a transaction as held after its deadline.
  if (auto e = expire_held(1000); !e) return e.error();
  std::vector<TransactionRecord> out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto v = tx.transactions(f);
    if (!v) return v.error();
    out = std::move(*v);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<AuditEntry>> Service::audit_log(std::int64_t after_seq, std::uint32_t limit) {
  std::vector<AuditEntry> out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto v = tx.audit_entries(after_seq, limit);
    if (!v) return v.error();
    out = std::move(*v);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<AuditEntry>> Service::audit_recent(std::uint32_t limit) {
  std::vector<AuditEntry> out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto v = tx.audit_recent(limit);
    if (!v) return v.error();
    out = std::move(*v);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::int64_t> Service::verify_audit() {
  std::int64_t n = 0;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto v = tx.verify_audit_chain();
    if (!v) return v.error();
    n = *v;
    return {};
  });
  if (!r) return r.error();
  return n;
}

Result<Metrics> Service::metrics() {
  Metrics m;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto d = tx.outbox_depth();
    if (!d) return d.error();
    m.outbox_depth = *d;
    return {};
  });
  if (!r) return r.error();
  std::lock_guard lock(metrics_mu_);
  m.decisions = decisions_;
  m.settlements = settlements_;
  return m;
}

}  // namespace otac::backend
