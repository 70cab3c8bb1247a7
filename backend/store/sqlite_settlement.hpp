// The SQLite rows of what happens after a decision (protocol.md §5.4): outcomes, approved cash
// withdrawals and refund requests. Internal to the SQLite store: SqliteTx forwards its Tx
// methods of that part here, inside the transaction it has open on `db`.
#pragma once

#include <sqlite3.h>

#include "store.hpp"

namespace otac::backend::sqlite_settlement {

/// The schema migration that creates the tables (appended to the store's kMigrations).
extern const char* const kMigration;

Result<std::optional<OutcomeRecord>> outcome(sqlite3* db, std::string_view txn_id);
Result<bool> set_outcome(sqlite3* db, const OutcomeRecord& o, std::optional<Outcome> from);
Result<void> insert_cash(sqlite3* db, const CashRecord& c);
Result<std::optional<CashRecord>> cash(sqlite3* db, std::string_view txn_id);
Result<CashTotals> cash_totals(sqlite3* db, ByteView card, std::string_view terminal_id, UnixTime since);
Result<std::vector<CashRecord>> cash_unsettled(sqlite3* db, UnixTime before, std::uint32_t limit);
Result<std::optional<RefundRecord>> refund(sqlite3* db, std::string_view txn_id);
Result<bool> put_refund(sqlite3* db, const RefundRecord& r, std::optional<RefundState> from);
Result<std::vector<RefundRecord>> refunds(sqlite3* db, RefundState state, std::uint32_t limit);

}  // namespace otac::backend::sqlite_settlement
