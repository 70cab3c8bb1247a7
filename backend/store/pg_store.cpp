// PgStore: Store::run on one PostgreSQL connection, with reconnection and bounded reruns;
// open_pg_store: the first connection, retried with backoff while the server is unreachable.
#include "pg_store.hpp"

#include <algorithm>
#include <exception>
#include <random>
#include <thread>

#include "pg_tx.hpp"

namespace otac::backend {

namespace pg {

// The error names the server's answer (never the password: libpq's messages do not contain it).
Result<ConnPtr> connect(const PgOptions& o) {
  // Our defaults first: with expand_dbname, the caller's string (dbname, expanded) comes
  // later and its values win.
  const char* keys[] = {"connect_timeout", "application_name", "dbname", nullptr};
  const std::string timeout = std::to_string(o.connect_timeout.count());
  const char* values[] = {timeout.c_str(), "otac-backend", o.conninfo.c_str(), nullptr};
  ConnPtr c(PQconnectdbParams(keys, values, 1));  // expand_dbname: the string may be a URI
  if (!c) return make_error(Errc::io, "cannot reach PostgreSQL: out of memory");
  // Server notices ("relation exists, skipping") are for people at a psql prompt, not the log.
  PQsetNoticeProcessor(c.get(), [](void*, const char*) {}, nullptr);
  if (PQstatus(c.get()) != CONNECTION_OK) {
    std::string why = PQerrorMessage(c.get());
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    // One line: libpq puts one line per address or sslmode it tried.
    for (auto nl = why.find('\n'); nl != std::string::npos; nl = why.find('\n', nl)) why.replace(nl, 1, "; ");
    return make_error(Errc::io, "cannot reach PostgreSQL: " + why);
  }
  const std::string limit = "SET lock_timeout = " + std::to_string(o.lock_timeout.count());
  pg::ResultPtr r(PQexec(c.get(), limit.c_str()));
  if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK)
    return make_error(Errc::io, std::string("cannot set lock_timeout: ") + PQerrorMessage(c.get()));
  return c;
}

}  // namespace pg

namespace {

using pg::Connection;
using pg::ConnPtr;
using pg::connect;

// States after which running the whole transaction again can succeed.
bool worth_rerun(const Connection& c) {
  return c.last_state == pg::kSerializationFailure || c.last_state == pg::kDeadlock ||
         c.last_state == pg::kUniqueViolation || c.met_conflict;
}

class PgStore final : public Store {
 public:
  PgStore(PgOptions o, std::unique_ptr<Connection> c, std::shared_ptr<const Kek> kek)
      : options_(std::move(o)), conn_(std::move(c)), kek_(std::move(kek)) {}

  Result<void> run(const std::function<Result<void>(Tx&)>& fn) override {
    Result<void> last = make_error(Errc::internal, "no attempt");
    bool conflict_rerun = false;  // a met conflict earns one rerun; genuine ones come back again
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      if (attempt > 0) backoff(attempt);
      if (auto c = ensure_connected(); !c) return c;
      Connection& c = *conn_;
      c.last_state.clear();
      c.met_conflict = false;
      bool began = false;
      last = once(c, fn, began);
      if (last) return last;
      if (c.broken()) {
        conn_.reset();  // reconnect next time
        // Nothing ran yet (a connection the server closed while idle, e.g. after its
        // restart): try again on a new connection. Otherwise the caller hears of it.
        if (!began) continue;
        return last;
      }
      if (!worth_rerun(c)) return last;
      const bool conflict = c.met_conflict || c.last_state == pg::kUniqueViolation;
      if (conflict && conflict_rerun) return last;
      conflict_rerun = conflict_rerun || conflict;
    }
    return last;
  }

 private:
  static constexpr int kAttempts = 8;

  // One transaction: BEGIN, fn, COMMIT (or ROLLBACK). An exception rolls back and propagates.
  Result<void> once(Connection& c, const std::function<Result<void>(Tx&)>& fn, bool& began) {
    if (auto b = c.command("BEGIN"); !b) return b;
    began = true;
    pg::PgTx tx(c, *kek_);
    Result<void> r;
    try {
      r = fn(tx);
    } catch (...) {
      (void)c.command("ROLLBACK");
      throw;
    }
    if (!r) {
      (void)c.command("ROLLBACK");
      return r;
    }
    if (auto e = c.command("COMMIT"); !e) {
      if (c.broken())
        return make_error(Errc::io, "the connection to PostgreSQL broke during COMMIT; the outcome is unknown: " + e.error().message);
      return make_error(e.error().code, "cannot commit the database transaction: " + e.error().message);
    }
    return {};
  }

  Result<void> ensure_connected() {
    if (conn_ && !conn_->broken()) return {};
    conn_.reset();
    auto c = connect(options_);
    if (!c) return c.error();
    conn_ = std::make_unique<Connection>(std::move(*c));
    return {};
  }

  static void backoff(int attempt) {
    thread_local std::minstd_rand rng(std::random_device{}());
    const int base = std::min(2 << attempt, 200);
    std::this_thread::sleep_for(std::chrono::milliseconds(base / 2 + static_cast<int>(rng() % static_cast<unsigned>(base))));
  }

  PgOptions options_;
  std::unique_ptr<Connection> conn_;  // null while disconnected
  std::shared_ptr<const Kek> kek_;
};

}  // namespace

Result<void> check_pg_conninfo(std::string_view conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(std::string(conninfo).c_str(), &err);
  if (!opts) {
    std::string why = err ? err : "out of memory";
    PQfreemem(err);
    while (!why.empty() && why.back() == '\n') why.pop_back();
    return make_error(Errc::bad_value, "is not a libpq connection string or URI: " + why);
  }
  bool has_password = false;
  for (const auto* o = opts; o->keyword; ++o) {
    if (std::string_view(o->keyword) == "password" && o->val && *o->val) has_password = true;
  }
  PQconninfoFree(opts);
  if (has_password)
    return make_error(Errc::bad_value, "must not contain a password: put it in a passfile (passfile=PATH in the string, "
                                       "or PGPASSFILE) with mode 0600");
  return {};
}

Result<std::unique_ptr<Store>> open_pg_store(const PgOptions& options, std::shared_ptr<const Kek> kek) {
  if (!kek) return make_error(Errc::internal, "open_pg_store needs a key-encryption key");
  auto wait = options.first_backoff;
  Result<ConnPtr> c = make_error(Errc::internal, "no attempt");
  for (int attempt = 1;; ++attempt) {
    c = connect(options);
    if (c) break;
    if (attempt >= std::max(1, options.start_attempts))
      return make_error(Errc::io, c.error().message + " (gave up after " + std::to_string(attempt) + " attempts)");
    if (options.on_retry) options.on_retry(c.error().message, wait);
    std::this_thread::sleep_for(wait);
    wait = std::min(wait * 2, std::chrono::milliseconds(8000));
  }
  auto conn = std::make_unique<Connection>(std::move(*c));
  if (options.migrate) {
    if (auto m = pg::migrate(*conn); !m) return m.error();
  }
  return std::unique_ptr<Store>(std::make_unique<PgStore>(options, std::move(conn), std::move(kek)));
}

}  // namespace otac::backend
