// The SQLite rows of what happens after a decision (protocol.md §5.4): outcomes, approved cash
// withdrawals and refund requests. SqliteTx's methods for them are in sqlite_settlement.cpp;
// this header gives the migrations their schema version.
#pragma once

namespace otac::backend::sqlite_settlement {

/// The schema migration that creates the tables (appended to the store's kMigrations).
extern const char* const kMigration;

}  // namespace otac::backend::sqlite_settlement
