#include "store_open.hpp"

#include <algorithm>
#include <string>

#include "log.hpp"
#include "pg_store.hpp"
#include "sqlite_store.hpp"

namespace otac::backend {
namespace {

// Attempts that fit in `timeout` with the backoff PgOptions describes (1/4 s doubling to 8 s).
int attempts_within(std::chrono::seconds timeout, std::chrono::milliseconds first) {
  int attempts = 1;
  std::chrono::milliseconds waited{0}, wait = first;
  while (waited + wait <= timeout && attempts < 100000) {
    waited += wait;
    wait = std::min(wait * 2, std::chrono::milliseconds(8000));
    ++attempts;
  }
  return attempts;
}

}  // namespace

Result<StoreFactory> store_opener(const Config& c, std::shared_ptr<const Kek> kek) {
  if (c.store == "postgresql") {
    PgOptions start;
    start.conninfo = c.postgres_conninfo;
    start.start_attempts = attempts_within(std::chrono::seconds(c.postgres_start_timeout_seconds), start.first_backoff);
    start.on_retry = [](const std::string& why, std::chrono::milliseconds next) {
      log::warn("store_retry", {{"error", why}, {"retry_in_ms", std::to_string(next.count())}});
    };
    auto first = open_pg_store(start, kek);  // connects and migrates under an advisory lock
    if (!first) return make_error(first.error().code, "cannot open the PostgreSQL store: " + first.error().message);
    // Later connections: one attempt each (a request waits for no retry loop; Store::run
    // reconnects a broken connection), and the schema is current.
    PgOptions later;
    later.conninfo = c.postgres_conninfo;
    later.start_attempts = 1;
    later.migrate = false;
    return StoreFactory([later, kek] { return open_pg_store(later, kek); });
  }
  const auto db = c.resolve(c.database);
  auto s = open_sqlite_store(db, kek);  // creates and migrates; fails early on a bad file
  if (!s) return s.error();
  return StoreFactory([db, kek] { return open_sqlite_store(db, kek); });
}

}  // namespace otac::backend
