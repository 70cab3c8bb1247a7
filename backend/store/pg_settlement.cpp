// The PostgreSQL rows of what happens after a decision (protocol.md §5.4): outcomes, approved
// cash withdrawals and refund requests; the same statements as sqlite_settlement.cpp in
// PostgreSQL's dialect. Concurrency across nodes:
// - set_outcome and put_refund are conditional writes (ON CONFLICT DO NOTHING, or UPDATE ...
//   WHERE state = from), so of two nodes recording an outcome one wins and the other sees false;
// - cash_totals locks the terminal's row (the card's row is already locked by Tx::card, which
//   the authorization reads first), so two ATMs of one card or one terminal cannot both pass a
//   limit: the second waits for the first's commit and then sums its withdrawal.
#include "pg_tx.hpp"

namespace otac::backend::pg {

namespace {

constexpr const char* kOutcomeColumns = "txn_id,outcome,handed_minor,reported_by,at";
constexpr const char* kCashColumns = "txn_id,card,terminal_id,amount_minor,approved_at";
constexpr const char* kRefundColumns = "txn_id,terminal_id,amount_minor,state,requested_at,decided_by,decided_at";

OutcomeRecord read_outcome(const Row& r) {
  return OutcomeRecord{r.col_t(0), static_cast<Outcome>(r.col_i(1)), r.col_i(2), r.col_t(3), r.col_i(4)};
}
CashRecord read_cash(const Row& r) { return CashRecord{r.col_t(0), r.col_b(1), r.col_t(2), r.col_i(3), r.col_i(4)}; }
RefundRecord read_refund(const Row& r) {
  return RefundRecord{r.col_t(0), r.col_t(1), r.col_i(2), static_cast<RefundState>(r.col_i(3)), r.col_i(4), r.col_t(5), r.col_i(6)};
}

std::int64_t num(Outcome o) { return static_cast<std::int64_t>(o); }
std::int64_t num(RefundState s) { return static_cast<std::int64_t>(s); }

// The query's first row read by `read`, or nullopt when it returned none.
template <class Read>
auto first_row(Query& r, Read read) -> Result<std::optional<decltype(read(r.row(0)))>> {
  if (auto e = r.run(); !e) return e.error();
  if (r.rows() == 0) return std::optional<decltype(read(r.row(0)))>{};
  return std::optional<decltype(read(r.row(0)))>{read(r.row(0))};
}

}  // namespace

// The statement texts are built once per process; the connection prepares each once.
#define OTAC_PG_SQL(name, text) static const std::string name = text

Result<std::optional<OutcomeRecord>> PgTx::outcome(std::string_view txn_id) {
  OTAC_PG_SQL(sql, std::string("SELECT ") + kOutcomeColumns + " FROM outcomes WHERE txn_id=$1");
  auto r = q(sql.c_str());
  r.t(txn_id);
  return first_row(r, read_outcome);
}

Result<bool> PgTx::set_outcome(const OutcomeRecord& o, std::optional<Outcome> from) {
  auto write = [&]() -> Result<int> {
    if (!from) {
      auto r = q("INSERT INTO outcomes(txn_id,outcome,handed_minor,reported_by,at) VALUES($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING");
      r.t(o.txn_id).i(num(o.outcome)).i(o.handed_minor).t(o.reported_by).i(o.at);
      if (auto e = r.run(); !e) return e.error();
      return r.changes();
    }
    auto r = q("UPDATE outcomes SET outcome=$1,handed_minor=$2,reported_by=$3,at=$4 WHERE txn_id=$5 AND outcome=$6");
    r.i(num(o.outcome)).i(o.handed_minor).t(o.reported_by).i(o.at).t(o.txn_id).i(num(*from));
    if (auto e = r.run(); !e) return e.error();
    return r.changes();
  };
  auto changed = write();
  if (!changed) return changed.error();
  if (*changed == 0) return false;
  auto settle = q("UPDATE cash SET settled=1 WHERE txn_id=$1");
  settle.t(o.txn_id);
  if (auto e = settle.run(); !e) return e.error();
  return true;
}

Result<void> PgTx::insert_cash(const CashRecord& c) {
  auto r = q("INSERT INTO cash(txn_id,card,terminal_id,amount_minor,approved_at,settled)"
             " VALUES($1,$2,$3,$4,$5,CASE WHEN EXISTS(SELECT 1 FROM outcomes WHERE txn_id=$1) THEN 1 ELSE 0 END)"
             " ON CONFLICT DO NOTHING");
  r.t(c.txn_id).b(c.card).t(c.terminal_id).i(c.amount_minor).i(c.approved_at);
  return insert(r, "cash withdrawal " + c.txn_id);
}

Result<std::optional<CashRecord>> PgTx::cash(std::string_view txn_id) {
  OTAC_PG_SQL(sql, std::string("SELECT ") + kCashColumns + " FROM cash WHERE txn_id=$1");
  auto r = q(sql.c_str());
  r.t(txn_id);
  return first_row(r, read_cash);
}

Result<CashTotals> PgTx::cash_totals(ByteView card, std::string_view terminal_id, UnixTime since) {
  // The terminal's row lock orders the ATMs of one terminal; the card's was taken by card().
  auto lock = q("SELECT 1 FROM terminals WHERE id=$1 FOR UPDATE");
  lock.t(terminal_id);
  if (auto e = lock.run(); !e) return e.error();
  // A reversed withdrawal (outcome 1) counts with what was handed over, any other with its amount.
  auto r = q("SELECT COALESCE(SUM(CASE WHEN o.outcome=1 THEN o.handed_minor ELSE c.amount_minor END)"
             " FILTER (WHERE c.card=$1),0)::BIGINT,"
             " COALESCE(SUM(CASE WHEN o.outcome=1 THEN o.handed_minor ELSE c.amount_minor END)"
             " FILTER (WHERE c.terminal_id=$2),0)::BIGINT"
             " FROM cash c LEFT JOIN outcomes o ON o.txn_id=c.txn_id"
             " WHERE (c.card=$1 OR c.terminal_id=$2) AND c.approved_at>=$3");
  r.b(card).t(terminal_id).i(since);
  if (auto e = r.run(); !e) return e.error();
  return CashTotals{r.row(0).col_i(0), r.row(0).col_i(1)};
}

Result<std::vector<CashRecord>> PgTx::cash_unsettled(UnixTime before, std::uint32_t limit) {
  OTAC_PG_SQL(sql, std::string("SELECT ") + kCashColumns +
                       " FROM cash WHERE settled=0 AND approved_at<=$1 ORDER BY approved_at,txn_id LIMIT $2");
  auto r = q(sql.c_str());
  r.i(before).i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<CashRecord>(r, read_cash);
}

Result<std::optional<RefundRecord>> PgTx::refund(std::string_view txn_id) {
  OTAC_PG_SQL(sql, std::string("SELECT ") + kRefundColumns + " FROM refunds WHERE txn_id=$1");
  auto r = q(sql.c_str());
  r.t(txn_id);
  return first_row(r, read_refund);
}

Result<bool> PgTx::put_refund(const RefundRecord& rf, std::optional<RefundState> from) {
  if (!from) {
    OTAC_PG_SQL(sql, std::string("INSERT INTO refunds(") + kRefundColumns + ") VALUES($1,$2,$3,$4,$5,$6,$7) ON CONFLICT DO NOTHING");
    auto r = q(sql.c_str());
    r.t(rf.txn_id).t(rf.terminal_id).i(rf.amount_minor).i(num(rf.state)).i(rf.requested_at).t(rf.decided_by).i(rf.decided_at);
    if (auto e = r.run(); !e) return e.error();
    return r.changes() == 1;
  }
  auto r = q("UPDATE refunds SET state=$1,decided_by=$2,decided_at=$3 WHERE txn_id=$4 AND state=$5");
  r.i(num(rf.state)).t(rf.decided_by).i(rf.decided_at).t(rf.txn_id).i(num(*from));
  if (auto e = r.run(); !e) return e.error();
  return r.changes() == 1;
}

Result<std::vector<RefundRecord>> PgTx::refunds(RefundState state, std::uint32_t limit) {
  OTAC_PG_SQL(sql, std::string("SELECT ") + kRefundColumns + " FROM refunds WHERE state=$1 ORDER BY requested_at,txn_id LIMIT $2");
  auto r = q(sql.c_str());
  r.i(num(state)).i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<RefundRecord>(r, read_refund);
}

#undef OTAC_PG_SQL

}  // namespace otac::backend::pg
