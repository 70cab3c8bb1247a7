// PgTx: the Tx operations in PostgreSQL's SQL, all in pg_tx.cpp (a new Store method is one
// more function there and one line here).
#pragma once

#include "kek.hpp"
#include "pg_db.hpp"
#include "pg_store.hpp"
#include "store.hpp"

namespace otac::backend::pg {

/// The store operations inside one PostgreSQL transaction of a Connection.
class PgTx final : public Tx {
 public:
  PgTx(Connection& c, const Kek& kek) : c_(c), kek_(kek) {}

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
  Result<std::vector<OutboxMessage>> lease_due_sms(UnixTime now, UnixTime lease_until, std::uint32_t limit) override;
  // pg_settlement.cpp: outcomes, cash withdrawals, refunds
  Result<std::optional<OutcomeRecord>> outcome(std::string_view txn_id) override;
  Result<bool> set_outcome(const OutcomeRecord& o, std::optional<Outcome> from) override;
  Result<void> insert_cash(const CashRecord& c) override;
  Result<std::optional<CashRecord>> cash(std::string_view txn_id) override;
  Result<CashTotals> cash_totals(ByteView card, std::string_view terminal_id, UnixTime since) override;
  Result<std::vector<CashRecord>> cash_unsettled(UnixTime before, std::uint32_t limit) override;
  Result<std::optional<RefundRecord>> refund(std::string_view txn_id) override;
  Result<bool> put_refund(const RefundRecord& r, std::optional<RefundState> from) override;
  Result<std::vector<RefundRecord>> refunds(RefundState state, std::uint32_t limit) override;
  Result<std::vector<Bytes>> card_ids(std::uint32_t limit) override;
  Result<std::vector<TerminalRecord>> terminals(std::uint32_t limit) override;
  Result<std::vector<OutboxMessage>> queued_sms(ByteView n, std::uint32_t limit) override;
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

 private:
  Query q(const char* sql) { return Query(c_, sql); }
  Result<CardRecord> read_card(ByteView n, bool open_keys);
  /// Runs an INSERT ... ON CONFLICT DO NOTHING: conflict (the transaction still usable) when
  /// the row exists, naming `what`.
  Result<void> insert(Query& r, const std::string& what);
  /// The first column of the single row a query returns, as an integer (0 without a row).
  static Result<std::int64_t> scalar(Query& r);

  Connection& c_;
  const Kek& kek_;
};

/// Connects once, with the options' timeout and lock_timeout (no retry).
Result<ConnPtr> connect(const PgOptions& o);

/// Runs the schema migrations this database lacks, under a session advisory lock.
Result<void> migrate(Connection& c);

}  // namespace otac::backend::pg
