// SqliteTx: the Tx operations in SQL, one file per concern: sqlite_cards.cpp (cards, doors,
// lists and codes), sqlite_transactions.cpp (transactions, terminals, operators),
// sqlite_outbox.cpp (SMS outbox and OTA packets), sqlite_keys.cpp (server keys, card
// security, audit log). Records map to rows through store_rows.hpp, shared with every store.
#pragma once

#include "kek.hpp"
#include "sqlite_db.hpp"
#include "sqlite_settlement.hpp"
#include "store.hpp"
#include "store_rows.hpp"

namespace otac::backend::sqlite {

/// lists_to_repair's statement (parameters: max_packets, after, now, limit). Driven by the
/// partial index lists_sent (migration 11) over the few lists still waiting for a PoR, never
/// by a scan of every packet sent (the test of its plan reads it from here).
inline constexpr const char* kListsToRepairSql =
    "SELECT l.n, l.list_id, COUNT(o.counter) FROM lists l"
    " JOIN ota_sent o ON o.n=l.n AND o.kind='list' AND o.ref=l.list_id"
    " WHERE l.state=0 AND (SELECT rsc FROM ota_sent WHERE n=l.n AND kind='list'"
    " AND ref=l.list_id ORDER BY counter DESC LIMIT 1)=-1"
    " GROUP BY l.n, l.list_id"
    " HAVING COUNT(o.counter)<? AND MAX(o.sent_at) + (? << MIN(COUNT(o.counter)-1, 5)) <= ?"
    " ORDER BY l.n, l.list_id LIMIT ?";

/// rotations_to_repair's statement (parameters: max_packets, after, now, limit), from the
/// cards with a pending key (the partial index cards_rotating of migration 13, whose condition
/// is written out here so that the planner can prove it).
inline constexpr const char* kRotationsToRepairSql =
    "SELECT c.n, c.pending_version, COUNT(o.counter) FROM cards c"
    " JOIN ota_sent o ON o.n=c.n AND o.kind='rotate' AND o.ref=c.pending_version"
    " WHERE c.pending_version<>0 AND (SELECT rsc FROM ota_sent WHERE n=c.n AND kind='rotate'"
    " AND ref=c.pending_version ORDER BY counter DESC LIMIT 1)=-1"
    " GROUP BY c.n, c.pending_version"
    " HAVING COUNT(o.counter)<? AND MAX(o.sent_at) + (? << MIN(COUNT(o.counter)-1, 5)) <= ?"
    " ORDER BY c.n LIMIT ?";

/// key_packets_to_repair's statement (parameters: max_packets, after, now, limit), from the
/// unanswered E3 and E4 packets (the partial index ota_keys_unanswered of migration 14, whose
/// condition is written out here).
inline constexpr const char* kKeyPacketsToRepairSql =
    "SELECT o.n, o.kind, COUNT(*) FROM ota_sent o"
    " WHERE o.rsc=-1 AND o.kind IN ('sig_key','server_key')"
    " GROUP BY o.n, o.kind"
    " HAVING COUNT(*)<? AND MAX(o.sent_at) + (? << MIN(COUNT(*)-1, 5)) <= ?"
    " AND MAX(o.counter)=(SELECT MAX(counter) FROM ota_sent WHERE n=o.n AND kind=o.kind)"
    " ORDER BY o.n, o.kind LIMIT ?";

/// display_candidates' highest consumed code of a card (parameter: n). No index holds the
/// consumed codes since migration 12: it walks the primary key backwards from the card's
/// newest code and stops at the first consumed one, after at most the unused codes of the
/// lists issued since.
inline constexpr const char* kHighestConsumedSql =
    "SELECT list_id,idx FROM otacs WHERE n=? AND used=1 ORDER BY list_id DESC, idx DESC LIMIT 1";
/// unused_more_than's statement (parameters: n, count), run after every consumed code (the
/// threshold push), and held_due's (parameters: now, limit). Each is answered from a partial
/// index of migration 12 (otacs_unused: the unused codes; transactions_held: the held
/// transactions), whose condition SQLite can only prove when it is written out in the text,
/// not bound (the test of their plans reads them from here).
inline constexpr const char* kUnusedMoreThanSql = "SELECT 1 FROM otacs WHERE n=? AND used=0 LIMIT 1 OFFSET ?";
inline constexpr const char* kHeldDueSql =
    "SELECT " OTAC_STORE_TXN_COLUMNS " FROM transactions WHERE decision=2 AND expires_at<=? ORDER BY expires_at LIMIT ?";

/// The store operations inside one SQLite transaction (or savepoint) of a Connection.
class SqliteTx final : public Tx {
 public:
  SqliteTx(Connection& s, const Kek& kek) : s_(s), kek_(kek) {}

  Result<void> insert_card(const CardRecord& c) override;
  Result<CardRecord> card(ByteView n) override;
  Result<CardRecord> card_state(ByteView n) override;
  Result<void> update_card(const CardRecord& c) override;
  Result<void> set_doors(ByteView n, const std::vector<DoorPermission>& doors) override;
  Result<std::vector<DoorPermission>> doors(ByteView n) override;
  Result<std::uint16_t> last_list_id(ByteView n) override;
  Result<void> insert_list(ByteView n, std::uint16_t list_id, const std::vector<SecretBytes>& keys, UnixTime now) override;
  Result<OtacRecord> otac(ByteView n, std::uint16_t list_id, std::uint16_t index) override;
  Result<std::vector<OtacRecord>> lowest_unused(ByteView n, std::uint32_t limit) override;
  Result<std::vector<OtacRecord>> display_candidates(ByteView n, std::uint32_t per_list, std::uint32_t next_lists) override;
  Result<std::uint32_t> unused_count(ByteView n) override;
  Result<bool> unused_more_than(ByteView n, std::uint32_t count) override;
  Result<std::vector<ListInfo>> lists(ByteView n) override;
  Result<void> set_list_state(ByteView n, std::uint16_t list_id, ListState state, std::string_view refusal, UnixTime now) override;
  Result<std::vector<ListRepair>> lists_to_repair(UnixTime now, std::int64_t after, std::uint32_t max_packets,
                                                  std::uint32_t limit) override;
  Result<std::vector<RotationRepair>> rotations_to_repair(UnixTime now, std::int64_t after, std::uint32_t max_packets,
                                                          std::uint32_t limit) override;
  Result<std::vector<KeyPacketRepair>> key_packets_to_repair(UnixTime now, std::int64_t after, std::uint32_t max_packets,
                                                             std::uint32_t limit) override;
  Result<bool> consume_otac(ByteView n, std::uint16_t list_id, std::uint16_t index, std::string_view txn_id, UnixTime now) override;
  Result<TransactionRecord> transaction(std::string_view txn_id) override;
  Result<void> insert_transaction(const TransactionRecord& t) override;
  Result<bool> decide_held_transaction(const TransactionRecord& t) override;
  Result<std::vector<TransactionRecord>> held_due(UnixTime now, std::uint32_t limit) override;
  Result<std::uint32_t> prune_declined(UnixTime before, std::uint32_t limit) override;
  Result<std::vector<TransactionRecord>> transactions(const TransactionFilter& f) override;
  Result<void> put_terminal(const TerminalRecord& t) override;
  Result<TerminalRecord> terminal(std::string_view id) override;
  Result<void> put_operator(const OperatorRecord& op) override;
  Result<OperatorRecord> operator_by_token_hash(ByteView token_hash) override;
  Result<std::int64_t> enqueue_sms(const OutboxMessage& m) override;
  Result<std::vector<OutboxMessage>> due_sms(UnixTime now, std::uint32_t limit) override;
  Result<OutboxMessage> sms(std::int64_t id) override;
  Result<void> update_sms(const OutboxMessage& m) override;
  Result<std::uint32_t> outbox_depth() override;
  Result<std::uint64_t> next_ota_counter(ByteView n) override;
  Result<std::uint64_t> card_counter(ByteView n) override;
  Result<void> set_card_counter(ByteView n, std::uint64_t counter) override;
  Result<void> record_ota_sent(ByteView n, std::uint64_t counter, std::string_view kind, std::int64_t ref, UnixTime now) override;
  Result<std::tuple<std::string, std::int64_t, int>> ota_sent(ByteView n, std::uint64_t counter) override;
  Result<std::uint64_t> latest_ota_sent(ByteView n, std::string_view kind, std::int64_t ref) override;
  Result<void> set_ota_rsc(ByteView n, std::uint64_t counter, int rsc) override;
  Result<Bytes> card_by_msisdn(std::string_view msisdn) override;
  Result<ServerKeyRecord> server_key(std::string_view name) override;
  Result<void> insert_server_key(const ServerKeyRecord& key) override;
  Result<CardSecurity> card_security(ByteView n) override;
  Result<void> set_card_security(ByteView n, const CardSecurity& s) override;
  Result<std::int64_t> audit(UnixTime at, std::string_view actor, std::string_view action, std::string_view detail) override;
  Result<std::vector<AuditEntry>> audit_entries(std::int64_t after_seq, std::uint32_t limit) override;
  Result<std::vector<AuditEntry>> audit_recent(std::uint32_t limit) override;
  Result<std::int64_t> verify_audit_chain() override;
  Result<std::vector<Bytes>> card_ids(std::uint32_t limit) override;
  Result<std::vector<TerminalRecord>> terminals(std::uint32_t limit) override;
  Result<std::vector<OutboxMessage>> queued_sms(ByteView n, std::uint32_t limit) override;
  // After the decision: rows in sqlite_settlement.cpp.
  Result<std::optional<OutcomeRecord>> outcome(std::string_view txn_id) override;
  Result<bool> set_outcome(const OutcomeRecord& o, std::optional<Outcome> from) override;
  Result<void> insert_cash(const CashRecord& c) override;
  Result<std::optional<CashRecord>> cash(std::string_view txn_id) override;
  Result<CashTotals> cash_totals(ByteView card, std::string_view terminal_id, UnixTime since) override;
  Result<std::vector<CashRecord>> cash_unsettled(UnixTime before, std::uint32_t limit) override;
  Result<std::optional<RefundRecord>> refund(std::string_view txn_id) override;
  Result<bool> put_refund(const RefundRecord& r, std::optional<RefundState> from) override;
  Result<std::vector<RefundRecord>> refunds(RefundState state, std::uint32_t limit) override;

 private:
  Query q(const char* sql);
  Result<CardRecord> read_card(ByteView n, bool open_keys);
  Result<std::vector<TransactionRecord>> read_txns(Query& r, std::uint32_t limit);

  Connection& s_;
  const Kek& kek_;
};

}  // namespace otac::backend::sqlite
