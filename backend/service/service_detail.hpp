// What the Service's parts share (service.cpp, authorization.cpp, cards.cpp, ota_flow.cpp):
// helpers that run inside one store transaction. Internal to backend/service; not a public API.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "otac/common/crypto.hpp"

#include "ota_push.hpp"
#include "policy.hpp"
#include "service.hpp"

namespace otac::backend::detail {

inline const Bytes kArcApproved = {'0', '0'};
inline const Bytes kArcDeclined = {'0', '5'};
inline const Bytes kArcLimit = {'5', '1'};
inline const Bytes kArcHeld = {'1', '9'};
inline constexpr std::string_view kCaKeyName = "card-ca";
inline constexpr std::string_view kServerKeyName = "server";
inline const Bytes kSwOk = {0x90, 0x00};
inline const Bytes kSwSecurity = {0x69, 0x82};
inline constexpr std::size_t kCardListSlots = 2;

/// The card algorithm's 8-byte MAC (protocol.md §3) under one code's key, set up once: an
/// authorization makes two MACs under the same code (the cryptogram, then the ARPC).
class CardMac {
 public:
  static Result<CardMac> make(Algorithm alg, const SecretBytes& key);
  Result<Bytes> mac(ByteView data);

 private:
  explicit CardMac(std::variant<crypto::MacAlg3Key, crypto::AesCmacKey> k) : k_(std::move(k)) {}
  std::variant<crypto::MacAlg3Key, crypto::AesCmacKey> k_;
};
/// One MAC under a key used once (CardMac for more).
Result<Bytes> mac8(Algorithm alg, const SecretBytes& key, ByteView data);
SecretBytes new_key(Algorithm alg);
std::string random_digits(std::size_t n);
bool valid_txn_id(std::string_view id);
Bytes request_hash(std::string_view kind, std::initializer_list<ByteView> parts);
AuthAnswer answer_of(const TransactionRecord& t, UnixTime now);
Result<bool> settle_held(Tx& tx, TransactionRecord& rec, Decision d, std::string reason, std::string_view actor,
                         std::string_view action, UnixTime decided_at, UnixTime now);
Result<TerminalRecord> enabled_terminal(Tx& tx, std::string_view id);
TransactionRecord new_transaction(const std::string& txn_id, ByteView hash, ByteView card, std::string_view terminal_id,
                                  UnixTime now);
Result<void> count_failure(Tx& tx, CardRecord& card, UnixTime now, std::string_view what);
Result<void> reset_failures(Tx& tx, CardRecord& card);
Result<AuthAnswer> record_transaction(Tx& tx, const TransactionRecord& rec, std::string_view terminal_id, std::string_view action,
                                      const std::string& extra, UnixTime now);
Result<bool> expire_if_due(Tx& tx, TransactionRecord& rec, UnixTime now);
/// The transaction as it stands now: a held one past its deadline is expired first
/// (`expired` says this call did it).
Result<TransactionRecord> transaction_now(Tx& tx, std::string_view txn_id, UnixTime now, bool& expired);
Result<std::optional<AuthAnswer>> earlier_answer(Tx& tx, const std::string& txn_id, ByteView hash, UnixTime now, bool& fresh);

// settlement.cpp
/// 00:00 UTC of t's day: the day of the daily cash limits and of the void's day close.
UnixTime utc_day_start(UnixTime t);
/// An answer to a reversed, voided or not-opened transaction reads declined with that reason.
Result<void> apply_outcome(Tx& tx, AuthAnswer& a);
/// A new transaction whose reversal its terminal sent first is declined "reversed".
Result<void> decline_if_reversed_first(Tx& tx, TransactionRecord& rec);
/// The daily cash limit that applies to card: its own, else the config's (0 = no withdrawals).
std::int64_t card_cash_limit(const CardRecord& card, const ServiceConfig& config);
/// The daily cash limit the withdrawal c would pass (cash_limit: the card's card_limit;
/// terminal_cash_limit), if any.
Result<std::optional<PosDecline>> cash_decline(Tx& tx, const CashRecord& c, std::int64_t card_limit, const ServiceConfig& config);

Result<void> promote_pending_key(Tx& tx, CardRecord& card, bool keep_retired, UnixTime now);
Result<ServerKeyRecord> ensure_server_key(Tx& tx, std::string_view name, UnixTime now);
Result<std::uint64_t> queue_server_key(Tx& tx, const CardRecord& card, UnixTime now);
Result<Bytes> list_command(Tx& tx, const CardRecord& card, std::uint16_t id, bool activate_now,
                           const std::vector<SecretBytes>& keys, UnixTime now);
/// Queues E2 { K', version } of the card's pending rotation (the same K' every time).
Result<std::uint64_t> queue_replace_key(Tx& tx, const CardRecord& card, UnixTime now);
Result<std::uint16_t> allocate_list(Tx& tx, CardRecord& card, std::uint16_t size, std::string_view actor, UnixTime now,
                                    std::vector<SecretBytes>* keys_out);
Result<void> resend_list(Tx& tx, const CardRecord& card, std::uint16_t id, UnixTime now);
Result<void> promote_and_repair(Tx& tx, CardRecord& card, bool by_request, UnixTime now);
Result<std::vector<ListInfo>> lists_with_codes(Tx& tx, ByteView n);
/// Re-reads a card read by Tx::card_state with its keys, before it is written back or sent a
/// list; nothing when its keys are open already. The record is replaced by the store's
/// current row, so a caller writes its changes to the card after this, never before.
Result<void> with_keys(Tx& tx, CardRecord& card);
Result<void> push_if_low(Tx& tx, CardRecord& card, std::uint16_t size, UnixTime now);
Result<void> record_list_outcome(Tx& tx, CardRecord& card, const PorResult& p, std::uint16_t id, bool accepted,
                                 std::uint16_t list_size, UnixTime now);
Result<void> track_keys(Tx& tx, const CardRecord& card, const PorResult& p, const std::string& kind, std::int64_t ref,
                        UnixTime now);

}  // namespace otac::backend::detail
