// PostgreSQL implementation of the Store interface, for several backend nodes on one
// database. Every rule that SQLite's single writer gives for free holds here through the
// database itself, never through in-process locks (pg_tx.cpp says which mechanism per
// operation):
// - transactions run at READ COMMITTED; a card's row is locked (SELECT ... FOR UPDATE) by
//   every read of the card or its counter, so read-modify-write of a card (fail counter,
//   blocking, key rotation, the list-push flag, the OTA replay counter) is serial per card
//   across nodes;
// - "at most once" decisions are conditional updates (consume_otac, decide_held_transaction),
//   which PostgreSQL re-evaluates on the newest row version after a concurrent update;
// - inserts of an id that exists report conflict without aborting the transaction; a
//   transaction that met such a conflict, a serialization failure or a deadlock is run again
//   (bounded), so a retry that raced the first request finds its record (idempotency);
// - the audit log is one chain: an append takes a transaction-level advisory lock, so
//   entries are chained in commit order;
// - the SMS outbox is leased (lease_due_sms: FOR UPDATE SKIP LOCKED, next_attempt_at moved
//   past the lease), so each message goes to one node, and to another once a lease ends.
// Card keys, OTACs and server keys are sealed under the KEK before they reach the database,
// with the same associated data as in SQLite (store_rows.hpp); the KEK never leaves the process.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "kek.hpp"
#include "store.hpp"

namespace otac::backend {

/// How a node reaches PostgreSQL.
struct PgOptions {
  std::string conninfo;                ///< libpq connection string or URI (sslmode, passfile, ...)
  std::chrono::seconds connect_timeout{5};     ///< per connection attempt
  int start_attempts = 8;              ///< open_pg_store: attempts before giving up (bounded backoff)
  std::chrono::milliseconds first_backoff{250};  ///< doubled after each failed attempt, at most 8 s
  bool migrate = true;                 ///< run the migrations (once per process is enough)
  /// A statement waiting this long for a row lock fails (55P03), so a node that stalls while
  /// holding a card's lock delays the others by this much at most; 0 = wait without limit.
  std::chrono::milliseconds lock_timeout{10000};
  /// Told about each failed attempt at start (what failed, the next wait); may be empty.
  std::function<void(const std::string& why, std::chrono::milliseconds next_wait)> on_retry;
};

/// Checks a connection string or URI before use: libpq must parse it, and it must not carry
/// a password (the password comes from a passfile: passfile=... or PGPASSFILE).
Result<void> check_pg_conninfo(std::string_view conninfo);

/// Connects (retrying with bounded backoff while the server is unreachable), runs the
/// schema migrations this database lacks under an advisory lock (safe when several nodes
/// start at once), and returns a store with one connection. Open one Store per thread.
Result<std::unique_ptr<Store>> open_pg_store(const PgOptions& options, std::shared_ptr<const Kek> kek);

}  // namespace otac::backend
