// The SQLite schema: versions applied in order, PRAGMA user_version recording how many ran.
// New versions are appended at the end of kMigrations, never edited once released.
#include "sqlite_db.hpp"
#include "sqlite_settlement.hpp"

#include <iterator>

namespace otac::backend::sqlite {
namespace {

// Schema versions, applied in order; PRAGMA user_version records how many ran.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE cards(
  n BLOB PRIMARY KEY, algorithm INTEGER NOT NULL, msisdn TEXT NOT NULL, status INTEGER NOT NULL,
  fail_count INTEGER NOT NULL, fail_limit INTEGER NOT NULL, threshold INTEGER NOT NULL,
  limit_minor INTEGER NOT NULL, review_minor INTEGER NOT NULL, key_version INTEGER NOT NULL,
  k_sealed BLOB, pending_k_sealed BLOB, pending_version INTEGER NOT NULL, public_key BLOB,
  list_push_in_flight INTEGER NOT NULL, ota_counter INTEGER NOT NULL DEFAULT 0,
  card_counter INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);
CREATE TABLE doors(
  n BLOB NOT NULL REFERENCES cards(n), door TEXT NOT NULL, from_minute INTEGER NOT NULL,
  to_minute INTEGER NOT NULL, PRIMARY KEY(n, door));
CREATE TABLE lists(
  n BLOB NOT NULL REFERENCES cards(n), list_id INTEGER NOT NULL, created_at INTEGER NOT NULL,
  PRIMARY KEY(n, list_id));
CREATE TABLE otacs(
  n BLOB NOT NULL, list_id INTEGER NOT NULL, idx INTEGER NOT NULL, key_sealed BLOB NOT NULL,
  used INTEGER NOT NULL DEFAULT 0, used_at INTEGER, txn_id TEXT,
  PRIMARY KEY(n, list_id, idx), FOREIGN KEY(n, list_id) REFERENCES lists(n, list_id));
CREATE INDEX otacs_unused ON otacs(n, used, list_id, idx);
CREATE TABLE transactions(
  txn_id TEXT PRIMARY KEY, request_hash BLOB NOT NULL, card BLOB, list_id INTEGER, idx INTEGER,
  terminal_id TEXT, amount_minor INTEGER, currency INTEGER, door TEXT, decision INTEGER NOT NULL,
  reason TEXT NOT NULL, auth_code TEXT, arc BLOB, arpc BLOB, created_at INTEGER NOT NULL,
  decided_at INTEGER NOT NULL, decided_by TEXT);
CREATE INDEX transactions_created ON transactions(created_at);
CREATE TABLE terminals(
  id TEXT PRIMARY KEY, cert_fingerprint TEXT NOT NULL, limit_minor INTEGER NOT NULL,
  enabled INTEGER NOT NULL);
CREATE TABLE operators(name TEXT PRIMARY KEY, role INTEGER NOT NULL, token_hash BLOB NOT NULL UNIQUE);
CREATE TABLE sms_outbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT, card BLOB, dest TEXT NOT NULL, udh BLOB, payload BLOB NOT NULL,
  status INTEGER NOT NULL, attempts INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL,
  last_reply TEXT, created_at INTEGER NOT NULL);
CREATE INDEX sms_due ON sms_outbox(status, next_attempt_at);
CREATE TABLE audit_log(
  seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  detail TEXT NOT NULL, mac BLOB NOT NULL);
)sql",
    R"sql(
CREATE TABLE ota_sent(
  n BLOB NOT NULL REFERENCES cards(n), counter INTEGER NOT NULL, kind TEXT NOT NULL,
  ref INTEGER NOT NULL, rsc INTEGER NOT NULL DEFAULT -1, sent_at INTEGER NOT NULL,
  PRIMARY KEY(n, counter));
CREATE INDEX cards_msisdn ON cards(msisdn);
)sql",
    R"sql(
ALTER TABLE transactions ADD COLUMN cryptogram BLOB;
)sql",
    // 4: server signing keys (E4/E5) and per-card signature keys (E3), in tables of their own.
    R"sql(
CREATE TABLE server_keys(
  name TEXT PRIMARY KEY, private_sealed BLOB NOT NULL, public_point BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE card_security(
  n BLOB PRIMARY KEY REFERENCES cards(n), sig_sealed BLOB, pending_sig_sealed BLOB,
  pending_sig_counter INTEGER NOT NULL DEFAULT 0, pending_sig_sent INTEGER NOT NULL DEFAULT 0, sig_since INTEGER NOT NULL DEFAULT 0,
  server_point BLOB);
)sql",
    // 5: held transactions expire (protocol.md §5.2). Rows held before this version get the
    // default hold limit (120 s) after their creation; expires_at is 0 for every other row.
    R"sql(
ALTER TABLE transactions ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
UPDATE transactions SET expires_at = created_at + 120 WHERE decision = 2;
CREATE INDEX transactions_held ON transactions(decision, expires_at);
)sql",
    // 6: the list lifecycle (sent, loaded, refused). A refused list's unused codes are marked
    // used=2 (withdrawn), so every "used=0" query leaves them out and none can be consumed.
    R"sql(
ALTER TABLE lists ADD COLUMN state INTEGER NOT NULL DEFAULT 0;
ALTER TABLE lists ADD COLUMN refusal TEXT;
ALTER TABLE lists ADD COLUMN state_at INTEGER NOT NULL DEFAULT 0;
)sql",
    // 7: a card's currency (0 = the backend's default) and a time zone per door window.
    R"sql(
ALTER TABLE cards ADD COLUMN currency INTEGER NOT NULL DEFAULT 0;
ALTER TABLE doors ADD COLUMN tz TEXT NOT NULL DEFAULT 'UTC';
)sql",
    // 8: the card key K kept after a rotation until the card is heard under K' (protocol.md
    // 6.3): requests and PoRs the card sealed under K before it switched still open.
    R"sql(
ALTER TABLE cards ADD COLUMN retired_k_sealed BLOB;
ALTER TABLE cards ADD COLUMN retired_version INTEGER NOT NULL DEFAULT 0;
)sql",
    // 9: outcomes, cash withdrawals and refunds (sqlite_settlement.cpp).
    sqlite_settlement::kMigration,
    // 10: a card's own daily cash limit (NULL = the backend's cash_card_daily_minor).
    R"sql(
ALTER TABLE cards ADD COLUMN cash_daily_minor INTEGER;
)sql",
    // 11: the lists still waiting for their PoR (state 0, sent), for lists_to_repair: the
    // repair round (every 10 s) scanned every OTA packet ever sent, inside a write
    // transaction, and stalled every authorization behind it once the store held 10^6 cards.
    R"sql(
CREATE INDEX lists_sent ON lists(n, list_id) WHERE state=0;
)sql",
    // 12: the two indexes every authorization writes hold only the rows they are read for.
    // otacs_unused had an entry per code ever issued, and consuming a code moved it (a delete
    // and an insert); now it holds the unused codes (used=0), and consuming one is a delete.
    // `used` stays its last column, so that a count of unused codes reads the index alone
    // (SQLite does not take a partial index's condition as known for the columns it reads).
    // transactions_held had an entry per transaction; now only the held ones (decision=2),
    // the only rows held_due reads. Together one B-tree insert and one page less per
    // authorization (docs/operations.md, "Partial indexes").
    R"sql(
DROP INDEX otacs_unused;
CREATE INDEX otacs_unused ON otacs(n, list_id, idx, used) WHERE used=0;
DROP INDEX transactions_held;
CREATE INDEX transactions_held ON transactions(expires_at) WHERE decision=2;
)sql",
    // 13: the cards with a pending key, for rotations_to_repair: an E2 lost on its way (the
    // phone took the SMS and never handed it to the card) left the rotation pending for good.
    R"sql(
CREATE INDEX cards_rotating ON cards(n, pending_version) WHERE pending_version<>0;
)sql",
    // 14: the unanswered E3 and E4 packets, for key_packets_to_repair: a lost E3 or E4 left the
    // key unconfirmed for good.
    R"sql(
CREATE INDEX ota_keys_unanswered ON ota_sent(n, kind, counter, sent_at) WHERE rsc=-1 AND kind IN ('sig_key','server_key');
)sql",
};

}  // namespace

// Runs once per process and file, before the connection is shared.
Result<void> Connection::configure_and_migrate() {
  sqlite3_busy_timeout(db_.get(), 5000);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
    if (sqlite3_exec(db_.get(), pragma, nullptr, nullptr, nullptr) != SQLITE_OK)
      return db_error(db_.get(), std::string("cannot set ") + pragma);
  }
  if (auto b = begin(); !b) return b;
  auto r = [&]() -> Result<void> {
    std::size_t have = 0;
    {
      // Finished before any migration runs: DROP INDEX fails ("table is locked") while a
      // statement of this connection is still open.
      Query v = query("PRAGMA user_version");
      auto row = v.step();
      if (!row) return row.error();
      have = static_cast<std::size_t>(v.col_i(0));
    }
    constexpr std::size_t want = std::size(kMigrations);
    if (have > want)
      return make_error(Errc::state, "database schema version " + std::to_string(have) +
                                         " is newer than this program knows (" + std::to_string(want) + "); upgrade the program");
    if (have == want) return {};
    for (std::size_t i = have; i < want; ++i) {
      if (sqlite3_exec(db_.get(), kMigrations[i], nullptr, nullptr, nullptr) != SQLITE_OK)
        return db_error(db_.get(), "schema migration " + std::to_string(i + 1) + " failed");
    }
    const std::string set = "PRAGMA user_version=" + std::to_string(want);
    if (sqlite3_exec(db_.get(), set.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK)
      return db_error(db_.get(), "cannot record the schema version");
    return {};
  }();
  if (!r) {
    abandon();
    return r;
  }
  if (auto c = control("COMMIT"); !c) {
    abandon();
    return make_error(c.error().code, "cannot commit the schema migration: " + c.error().message);
  }
  return {};
}

}  // namespace otac::backend::sqlite
