// SqliteTx: transactions, terminals and operators.
#include "sqlite_tx.hpp"
#include "store_rows.hpp"

namespace otac::backend::sqlite {

using rows::ad;

Result<TransactionRecord> SqliteTx::transaction(std::string_view txn_id) {
  auto r = q("SELECT " OTAC_STORE_TXN_COLUMNS " FROM transactions WHERE txn_id=?");
  r.t(txn_id);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no transaction " + std::string(txn_id));
  return rows::txn_from_row(r);
}

Result<void> SqliteTx::insert_transaction(const TransactionRecord& t) {
  auto r = q("INSERT INTO transactions(" OTAC_STORE_TXN_COLUMNS ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  rows::bind_txn(r, t);
  return r.exec();
}

Result<bool> SqliteTx::decide_held_transaction(const TransactionRecord& t) {
  auto r = q("UPDATE transactions SET decision=?,reason=?,auth_code=?,arc=?,arpc=?,decided_at=?,decided_by=? WHERE txn_id=? AND decision=?");
  rows::bind_decision(r, t);
  r.t(t.txn_id).i(static_cast<int>(Decision::held));
  if (auto e = r.exec(); !e) return e.error();
  return r.changes() == 1;
}

Result<std::vector<TransactionRecord>> SqliteTx::held_due(UnixTime now, std::uint32_t limit) {
  static_assert(static_cast<int>(Decision::held) == 2, "kHeldDueSql writes the held decision out as 2");
  auto r = q(kHeldDueSql);
  r.i(now).i(limit);
  return read_txns(r, limit);
}

Result<std::uint32_t> SqliteTx::prune_declined(UnixTime before, std::uint32_t limit) {
  // The created_at index finds the old rows; a held transaction that expired later is kept
  // until its decision is old too.
  auto r = q("DELETE FROM transactions WHERE rowid IN (SELECT rowid FROM transactions WHERE created_at<?1"
             " AND decision=?2 AND decided_at<?1 ORDER BY created_at LIMIT ?3)");
  r.i(before).i(static_cast<int>(Decision::declined)).i(limit);
  if (auto e = r.exec(); !e) return e.error();
  return static_cast<std::uint32_t>(r.changes());
}

Result<std::vector<TransactionRecord>> SqliteTx::transactions(const TransactionFilter& f) {
  auto r = q("SELECT " OTAC_STORE_TXN_COLUMNS " FROM transactions WHERE (?1 IS NULL OR card=?1) AND (?2 IS NULL OR terminal_id=?2)"
             " AND (?3 IS NULL OR decision=?3) AND created_at>=?4 AND (?5=0 OR created_at<?5)"
             " ORDER BY created_at DESC, rowid DESC LIMIT ?6");
  if (f.card) r.b(*f.card); else r.null();
  if (f.terminal_id) r.t(*f.terminal_id); else r.null();
  if (f.decision) r.i(static_cast<int>(*f.decision)); else r.null();
  r.i(f.since).i(f.until).i(f.limit);
  return read_txns(r, f.limit);
}

Result<std::vector<TransactionRecord>> SqliteTx::read_txns(Query& r, std::uint32_t limit) {
  return collect<TransactionRecord>(r, limit, rows::txn_from_row<Query>);
}

Result<void> SqliteTx::put_terminal(const TerminalRecord& t) {
  auto r = q("INSERT OR REPLACE INTO terminals(id,cert_fingerprint,limit_minor,enabled) VALUES(?,?,?,?)");
  r.t(t.id).t(t.cert_fingerprint).i(t.limit_minor).i(t.enabled ? 1 : 0);
  return r.exec();
}

Result<TerminalRecord> SqliteTx::terminal(std::string_view id) {
  auto r = q("SELECT cert_fingerprint,limit_minor,enabled FROM terminals WHERE id=?");
  r.t(id);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no terminal " + std::string(id));
  return TerminalRecord{std::string(id), r.col_t(0), r.col_i(1), r.col_i(2) != 0};
}

Result<std::vector<TerminalRecord>> SqliteTx::terminals(std::uint32_t limit) {
  auto r = q("SELECT id,cert_fingerprint,limit_minor,enabled FROM terminals ORDER BY id LIMIT ?");
  r.i(limit);
  return collect<TerminalRecord>(r, limit, [](const Query& row) {
    return TerminalRecord{row.col_t(0), row.col_t(1), row.col_i(2), row.col_i(3) != 0};
  });
}

Result<void> SqliteTx::put_operator(const OperatorRecord& op) {
  auto r = q("INSERT OR REPLACE INTO operators(name,role,token_hash) VALUES(?,?,?)");
  r.t(op.name).i(static_cast<int>(op.role)).b(op.token_hash);
  return r.exec();
}

Result<OperatorRecord> SqliteTx::operator_by_token_hash(ByteView token_hash) {
  auto r = q("SELECT name,role,token_hash FROM operators WHERE token_hash=?");
  r.b(token_hash);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "unknown operator token");
  return OperatorRecord{r.col_t(0), static_cast<Role>(r.col_i(1)), r.col_b(2)};
}

}  // namespace otac::backend::sqlite
