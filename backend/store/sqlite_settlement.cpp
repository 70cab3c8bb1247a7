#include "sqlite_settlement.hpp"

#include "sqlite_tx.hpp"

namespace otac::backend::sqlite_settlement {

// 9: outcomes of approved transactions (and reversals that came before their authorization,
// so they have no foreign key), approved cash withdrawals (settled = 1 once they have an
// outcome; the partial index keeps the automatic reversal's scan to the open ones), and
// refund requests, one per purchase.
const char* const kMigration = R"sql(
CREATE TABLE outcomes(
  txn_id TEXT PRIMARY KEY, outcome INTEGER NOT NULL, handed_minor INTEGER NOT NULL,
  reported_by TEXT NOT NULL, at INTEGER NOT NULL);
CREATE TABLE cash(
  txn_id TEXT PRIMARY KEY, card BLOB NOT NULL, terminal_id TEXT NOT NULL, amount_minor INTEGER NOT NULL,
  approved_at INTEGER NOT NULL, settled INTEGER NOT NULL DEFAULT 0);
CREATE INDEX cash_card ON cash(card, approved_at);
CREATE INDEX cash_terminal ON cash(terminal_id, approved_at);
CREATE INDEX cash_open ON cash(approved_at) WHERE settled = 0;
CREATE TABLE refunds(
  txn_id TEXT PRIMARY KEY, terminal_id TEXT NOT NULL, amount_minor INTEGER NOT NULL, state INTEGER NOT NULL,
  requested_at INTEGER NOT NULL, decided_by TEXT NOT NULL DEFAULT '', decided_at INTEGER NOT NULL DEFAULT 0);
CREATE INDEX refunds_state ON refunds(state, requested_at);
)sql";

}  // namespace otac::backend::sqlite_settlement

namespace otac::backend::sqlite {

namespace {

#define OTAC_OUTCOME_COLUMNS "txn_id, outcome, handed_minor, reported_by, at"
#define OTAC_CASH_COLUMNS "txn_id, card, terminal_id, amount_minor, approved_at"
#define OTAC_REFUND_COLUMNS "txn_id, terminal_id, amount_minor, state, requested_at, decided_by, decided_at"

std::int64_t num(Outcome o) { return static_cast<std::int64_t>(o); }
std::int64_t num(RefundState s) { return static_cast<std::int64_t>(s); }

OutcomeRecord read_outcome(const Query& s) {
  return OutcomeRecord{s.col_t(0), static_cast<Outcome>(s.col_i(1)), s.col_i(2), s.col_t(3), s.col_i(4)};
}
CashRecord read_cash(const Query& s) { return CashRecord{s.col_t(0), s.col_b(1), s.col_t(2), s.col_i(3), s.col_i(4)}; }
RefundRecord read_refund(const Query& s) {
  return RefundRecord{s.col_t(0), s.col_t(1), s.col_i(2), static_cast<RefundState>(s.col_i(3)), s.col_i(4), s.col_t(5), s.col_i(6)};
}

// The statement's one row read by `read`, or nullopt when it has none.
template <class Read>
auto one_row(Query& s, Read read) -> Result<std::optional<decltype(read(s))>> {
  auto row = s.step();
  if (!row) return row.error();
  if (!*row) return std::optional<decltype(read(s))>{};
  return std::optional<decltype(read(s))>{read(s)};
}

// Runs a write; how many rows it changed.
Result<int> changed(Query& s) {
  if (auto e = s.exec(); !e) return e.error();
  return s.changes();
}

}  // namespace

Result<std::optional<OutcomeRecord>> SqliteTx::outcome(std::string_view txn_id) {
  auto s = q("SELECT " OTAC_OUTCOME_COLUMNS " FROM outcomes WHERE txn_id = ?");
  s.t(txn_id);
  return one_row(s, read_outcome);
}

Result<bool> SqliteTx::set_outcome(const OutcomeRecord& o, std::optional<Outcome> from) {
  Result<int> n = 0;
  if (!from) {
    auto s = q("INSERT INTO outcomes(" OTAC_OUTCOME_COLUMNS ") VALUES(?, ?, ?, ?, ?) ON CONFLICT(txn_id) DO NOTHING");
    s.t(o.txn_id).i(num(o.outcome)).i(o.handed_minor).t(o.reported_by).i(o.at);
    n = changed(s);
  } else {
    auto s = q("UPDATE outcomes SET outcome = ?, handed_minor = ?, reported_by = ?, at = ? WHERE txn_id = ? AND outcome = ?");
    s.i(num(o.outcome)).i(o.handed_minor).t(o.reported_by).i(o.at).t(o.txn_id).i(num(*from));
    n = changed(s);
  }
  if (!n) return n.error();
  if (*n == 0) return false;
  auto settle = q("UPDATE cash SET settled = 1 WHERE txn_id = ?");
  settle.t(o.txn_id);
  if (auto e = settle.exec(); !e) return e.error();
  return true;
}

Result<void> SqliteTx::insert_cash(const CashRecord& c) {
  auto s = q("INSERT INTO cash(" OTAC_CASH_COLUMNS ", settled) "
             "VALUES(?1, ?2, ?3, ?4, ?5, EXISTS(SELECT 1 FROM outcomes WHERE txn_id = ?1))");
  s.t(c.txn_id).b(c.card).t(c.terminal_id).i(c.amount_minor).i(c.approved_at);
  return s.exec();
}

Result<std::optional<CashRecord>> SqliteTx::cash(std::string_view txn_id) {
  auto s = q("SELECT " OTAC_CASH_COLUMNS " FROM cash WHERE txn_id = ?");
  s.t(txn_id);
  return one_row(s, read_cash);
}

Result<CashTotals> SqliteTx::cash_totals(ByteView card, std::string_view terminal_id, UnixTime since) {
  // A reversed withdrawal (outcome 1) counts with what was handed over, any other with its
  // amount. The transaction holds SQLite's write lock, so no other ATM's insert comes between.
#define OTAC_NET_CASH \
  "SELECT COALESCE(SUM(CASE WHEN o.outcome = 1 THEN o.handed_minor ELSE c.amount_minor END), 0) " \
  "FROM cash c LEFT JOIN outcomes o ON o.txn_id = c.txn_id WHERE "
  CashTotals out;
  auto by_card = q(OTAC_NET_CASH "c.card = ? AND c.approved_at >= ?");
  by_card.b(card).i(since);
  if (auto r = by_card.step(); !r) return r.error();
  out.card_minor = by_card.col_i(0);
  auto by_terminal = q(OTAC_NET_CASH "c.terminal_id = ? AND c.approved_at >= ?");
  by_terminal.t(terminal_id).i(since);
  if (auto r = by_terminal.step(); !r) return r.error();
  out.terminal_minor = by_terminal.col_i(0);
#undef OTAC_NET_CASH
  return out;
}

Result<std::vector<CashRecord>> SqliteTx::cash_unsettled(UnixTime before, std::uint32_t limit) {
  auto s = q("SELECT " OTAC_CASH_COLUMNS " FROM cash WHERE settled = 0 AND approved_at <= ? ORDER BY approved_at, txn_id LIMIT ?");
  s.i(before).i(limit);
  return collect<CashRecord>(s, limit, read_cash);
}

Result<std::optional<RefundRecord>> SqliteTx::refund(std::string_view txn_id) {
  auto s = q("SELECT " OTAC_REFUND_COLUMNS " FROM refunds WHERE txn_id = ?");
  s.t(txn_id);
  return one_row(s, read_refund);
}

Result<bool> SqliteTx::put_refund(const RefundRecord& r, std::optional<RefundState> from) {
  Result<int> n = 0;
  if (!from) {
    auto s = q("INSERT INTO refunds(" OTAC_REFUND_COLUMNS ") VALUES(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(txn_id) DO NOTHING");
    s.t(r.txn_id).t(r.terminal_id).i(r.amount_minor).i(num(r.state)).i(r.requested_at).t(r.decided_by).i(r.decided_at);
    n = changed(s);
  } else {
    auto s = q("UPDATE refunds SET state = ?, decided_by = ?, decided_at = ? WHERE txn_id = ? AND state = ?");
    s.i(num(r.state)).t(r.decided_by).i(r.decided_at).t(r.txn_id).i(num(*from));
    n = changed(s);
  }
  if (!n) return n.error();
  return *n == 1;
}

Result<std::vector<RefundRecord>> SqliteTx::refunds(RefundState state, std::uint32_t limit) {
  auto s = q("SELECT " OTAC_REFUND_COLUMNS " FROM refunds WHERE state = ? ORDER BY requested_at, txn_id LIMIT ?");
  s.i(num(state)).i(limit);
  return collect<RefundRecord>(s, limit, read_refund);
}

#undef OTAC_OUTCOME_COLUMNS
#undef OTAC_CASH_COLUMNS
#undef OTAC_REFUND_COLUMNS

}  // namespace otac::backend::sqlite
