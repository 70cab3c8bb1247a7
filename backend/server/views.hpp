// One JSON view per record, shared by the operator API (/v1/admin/...) and the console, so
// that a record has the same field names wherever an operator reads it (protocol.md 5.4).
#pragma once

#include <boost/json.hpp>

#include "service.hpp"

namespace otac::backend::http {

/// A recorded transaction; empty door, auth code, ARC (hex) and decider are left out.
boost::json::object transaction_json(const TransactionRecord& t);
/// A card for operators: settings, lists, key state and queued SMS, never a key.
boost::json::object card_json(const CardSummary& c);
/// A registered terminal.
boost::json::object terminal_json(const TerminalRecord& t);
/// One audit-log entry with its chain MAC (hex).
boost::json::object audit_json(const AuditEntry& e);

}  // namespace otac::backend::http
