#include "sqlite_settlement.hpp"

#include <initializer_list>
#include <stdexcept>
#include <variant>

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

namespace {

using Value = std::variant<std::int64_t, std::string_view, ByteView>;

// One statement, prepared, bound and finalized in one scope. These rows are written once per
// approval or report, so the statement cache of the main store is not needed here.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql, std::initializer_list<Value> args) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK)
      throw std::logic_error(std::string("bad SQL: ") + sqlite3_errmsg(db));  // a bug, not input
    int at = 0;
    for (const Value& v : args) bind(++at, v);
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  /// true: a row is available; false: done.
  Result<bool> step() {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    const Errc e = (sqlite3_extended_errcode(db_) & 0xFF) == SQLITE_CONSTRAINT ? Errc::conflict : Errc::io;
    return make_error(e, std::string("database statement failed: ") + sqlite3_errmsg(db_));
  }
  /// Runs a write; how many rows it changed.
  Result<int> write() {
    auto r = step();
    if (!r) return r.error();
    return sqlite3_changes(db_);
  }
  std::int64_t i(int c) const { return sqlite3_column_int64(s_, c); }
  std::string t(int c) const {
    const auto* p = sqlite3_column_text(s_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s_, c))) : std::string{};
  }
  Bytes b(int c) const {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(s_, c));
    return p ? Bytes(p, p + sqlite3_column_bytes(s_, c)) : Bytes{};
  }

 private:
  void bind(int at, const Value& v) {
    if (const auto* n = std::get_if<std::int64_t>(&v)) {
      sqlite3_bind_int64(s_, at, *n);
    } else if (const auto* s = std::get_if<std::string_view>(&v)) {
      sqlite3_bind_text(s_, at, s->data(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
    } else {
      const ByteView bytes = std::get<ByteView>(v);
      // An empty blob stays a blob (not NULL), as in the main store.
      if (bytes.empty()) sqlite3_bind_zeroblob(s_, at, 0);
      else sqlite3_bind_blob(s_, at, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
    }
  }

  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

std::int64_t n(std::uint8_t v) { return v; }

OutcomeRecord read_outcome(const Stmt& s) {
  return OutcomeRecord{s.t(0), static_cast<Outcome>(s.i(1)), s.i(2), s.t(3), s.i(4)};
}

RefundRecord read_refund(const Stmt& s) {
  return RefundRecord{s.t(0), s.t(1), s.i(2), static_cast<RefundState>(s.i(3)), s.i(4), s.t(5), s.i(6)};
}

constexpr const char* kRefundColumns = "txn_id, terminal_id, amount_minor, state, requested_at, decided_by, decided_at";

// The statement's one row read by `read`, or nullopt when it has none.
template <class Read>
auto one_row(Stmt& s, Read read) -> Result<std::optional<decltype(read(s))>> {
  auto row = s.step();
  if (!row) return row.error();
  if (!*row) return std::optional<decltype(read(s))>{};
  return std::optional<decltype(read(s))>{read(s)};
}

// Up to `limit` rows read by `read`.
template <class Read>
auto all_rows(Stmt& s, std::uint32_t limit, Read read) -> Result<std::vector<decltype(read(s))>> {
  std::vector<decltype(read(s))> out;
  for (std::uint32_t i = 0; i < limit; ++i) {
    auto row = s.step();
    if (!row) return row.error();
    if (!*row) break;
    out.push_back(read(s));
  }
  return out;
}

}  // namespace

Result<std::optional<OutcomeRecord>> outcome(sqlite3* db, std::string_view txn_id) {
  Stmt s(db, "SELECT txn_id, outcome, handed_minor, reported_by, at FROM outcomes WHERE txn_id = ?", {txn_id});
  return one_row(s, read_outcome);
}

Result<bool> set_outcome(sqlite3* db, const OutcomeRecord& o, std::optional<Outcome> from) {
  const std::int64_t kind = n(static_cast<std::uint8_t>(o.outcome));
  Result<int> changed = 0;
  if (!from) {
    Stmt s(db,
           "INSERT INTO outcomes(txn_id, outcome, handed_minor, reported_by, at) VALUES(?, ?, ?, ?, ?) "
           "ON CONFLICT(txn_id) DO NOTHING",
           {std::string_view(o.txn_id), kind, o.handed_minor, std::string_view(o.reported_by), o.at});
    changed = s.write();
  } else {
    Stmt s(db, "UPDATE outcomes SET outcome = ?, handed_minor = ?, reported_by = ?, at = ? WHERE txn_id = ? AND outcome = ?",
           {kind, o.handed_minor, std::string_view(o.reported_by), o.at, std::string_view(o.txn_id),
            n(static_cast<std::uint8_t>(*from))});
    changed = s.write();
  }
  if (!changed) return changed.error();
  if (*changed == 0) return false;
  Stmt settle(db, "UPDATE cash SET settled = 1 WHERE txn_id = ?", {std::string_view(o.txn_id)});
  if (auto w = settle.write(); !w) return w.error();
  return true;
}

Result<void> insert_cash(sqlite3* db, const CashRecord& c) {
  Stmt s(db,
         "INSERT INTO cash(txn_id, card, terminal_id, amount_minor, approved_at, settled) "
         "VALUES(?1, ?2, ?3, ?4, ?5, EXISTS(SELECT 1 FROM outcomes WHERE txn_id = ?1))",
         {std::string_view(c.txn_id), ByteView(c.card), std::string_view(c.terminal_id), c.amount_minor, c.approved_at});
  if (auto w = s.write(); !w) return w.error();
  return {};
}

namespace {
constexpr const char* kCashColumns = "txn_id, card, terminal_id, amount_minor, approved_at";
CashRecord read_cash(const Stmt& s) { return CashRecord{s.t(0), s.b(1), s.t(2), s.i(3), s.i(4)}; }
}  // namespace

Result<std::optional<CashRecord>> cash(sqlite3* db, std::string_view txn_id) {
  Stmt s(db, (std::string("SELECT ") + kCashColumns + " FROM cash WHERE txn_id = ?").c_str(), {txn_id});
  return one_row(s, read_cash);
}

Result<CashTotals> cash_totals(sqlite3* db, ByteView card, std::string_view terminal_id, UnixTime since) {
  // A reversed withdrawal (outcome 1) counts with what was handed over, any other with its amount.
  constexpr const char* kNet =
      "SELECT COALESCE(SUM(CASE WHEN o.outcome = 1 THEN o.handed_minor ELSE c.amount_minor END), 0) "
      "FROM cash c LEFT JOIN outcomes o ON o.txn_id = c.txn_id WHERE ";
  CashTotals out;
  Stmt by_card(db, (std::string(kNet) + "c.card = ? AND c.approved_at >= ?").c_str(), {card, since});
  if (auto r = by_card.step(); !r) return r.error();
  out.card_minor = by_card.i(0);
  Stmt by_terminal(db, (std::string(kNet) + "c.terminal_id = ? AND c.approved_at >= ?").c_str(), {terminal_id, since});
  if (auto r = by_terminal.step(); !r) return r.error();
  out.terminal_minor = by_terminal.i(0);
  return out;
}

Result<std::vector<CashRecord>> cash_unsettled(sqlite3* db, UnixTime before, std::uint32_t limit) {
  Stmt s(db, (std::string("SELECT ") + kCashColumns + " FROM cash WHERE settled = 0 AND approved_at <= ? ORDER BY approved_at, txn_id LIMIT ?").c_str(),
         {before, std::int64_t{limit}});
  return all_rows(s, limit, read_cash);
}

Result<std::optional<RefundRecord>> refund(sqlite3* db, std::string_view txn_id) {
  Stmt s(db, (std::string("SELECT ") + kRefundColumns + " FROM refunds WHERE txn_id = ?").c_str(), {txn_id});
  return one_row(s, read_refund);
}

Result<bool> put_refund(sqlite3* db, const RefundRecord& r, std::optional<RefundState> from) {
  const std::int64_t state = n(static_cast<std::uint8_t>(r.state));
  Result<int> changed = 0;
  if (!from) {
    Stmt s(db, (std::string("INSERT INTO refunds(") + kRefundColumns + ") VALUES(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(txn_id) DO NOTHING").c_str(),
           {std::string_view(r.txn_id), std::string_view(r.terminal_id), r.amount_minor, state, r.requested_at,
            std::string_view(r.decided_by), r.decided_at});
    changed = s.write();
  } else {
    Stmt s(db, "UPDATE refunds SET state = ?, decided_by = ?, decided_at = ? WHERE txn_id = ? AND state = ?",
           {state, std::string_view(r.decided_by), r.decided_at, std::string_view(r.txn_id), n(static_cast<std::uint8_t>(*from))});
    changed = s.write();
  }
  if (!changed) return changed.error();
  return *changed == 1;
}

Result<std::vector<RefundRecord>> refunds(sqlite3* db, RefundState state, std::uint32_t limit) {
  Stmt s(db, (std::string("SELECT ") + kRefundColumns + " FROM refunds WHERE state = ? ORDER BY requested_at, txn_id LIMIT ?").c_str(),
         {n(static_cast<std::uint8_t>(state)), std::int64_t{limit}});
  return all_rows(s, limit, read_refund);
}

}  // namespace otac::backend::sqlite_settlement
