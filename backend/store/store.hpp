// The backend's durable store: an interface with two implementations, SQLite (one node, the
// embedded default) and PostgreSQL (several nodes on one database).
//
// Correctness never rests on in-process locks. Every state change runs inside one store
// transaction (Store::run), and the "use a code at most once" rule is a conditional update
// (consume_otac returns false when another transaction consumed it first), evaluated inside
// the same transaction that records the decision. Several processes may open the same store.
//
// Keys (card keys K and K', OTACs) cross this interface in clear as SecretBytes; the
// implementation encrypts them under the key-encryption key before they reach the disk.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"

namespace otac::backend {

/// Seconds since the Unix epoch (UTC); the store never reads the clock itself.
using UnixTime = std::int64_t;

/// The card's symmetric algorithm (protocol.md §1; the values are the DF45 encoding).
enum class Algorithm : std::uint8_t { des3 = 1, aes128 = 2 };

/// A card's state as the backend sees it.
enum class CardStatus : std::uint8_t { active = 0, blocked = 1 };

/// One enrolled card.
struct CardRecord {
  Bytes n;                            ///< identity N, 8 bytes
  Algorithm algorithm = Algorithm::des3;
  std::string msisdn;                 ///< the card's phone number, digits with optional '+'
  CardStatus status = CardStatus::active;
  std::uint32_t fail_count = 0;       ///< consecutive bad cryptograms
  std::uint32_t fail_limit = 5;       ///< fail_count reaching this blocks the card
  std::uint32_t threshold = 20;       ///< unused codes at or below which a new list is pushed
  std::int64_t limit_minor = 0;       ///< per-transaction amount limit, minor units; 0 = none
  std::int64_t review_minor = 0;      ///< amounts above this are held for review; 0 = never
  std::uint16_t currency = 0;         ///< ISO 4217 numeric of limits and transactions; 0 = the backend's default
  /// Cash withdrawals: the most this card may take per UTC day, 0 = none; unset = the
  /// backend's cash_card_daily_minor.
  std::optional<std::int64_t> cash_daily_minor;
  std::uint8_t key_version = 1;       ///< version of K
  SecretBytes k;                      ///< current card key K
  std::optional<SecretBytes> pending_k;  ///< K' sent but not yet proven by the card
  std::uint8_t pending_version = 0;   ///< version of K' when pending_k is set
  std::optional<SecretBytes> retired_k;  ///< the K before the last rotation, until the card is heard under the new K
  std::uint8_t retired_version = 0;   ///< version of retired_k when it is set
  Bytes public_key;                   ///< DER SubjectPublicKeyInfo for asymmetric cards, else empty
  bool list_push_in_flight = false;   ///< a server-initiated list is queued and not yet confirmed
  UnixTime created_at = 0;
  /// Read by Tx::card_state: k, pending_k and retired_k were left sealed in the store and are
  /// empty here, so Tx::update_card refuses this record (it would erase the keys).
  bool keys_withheld = false;
};

/// One OTAC (one-time key) of a list.
struct OtacRecord {
  std::uint16_t list_id = 0;
  std::uint16_t index = 0;
  SecretBytes key;                    ///< 16 bytes, same algorithm as the card
  bool used = false;
};

/// Where a list stands with its card (protocol.md 6.4, the list lifecycle).
enum class ListState : std::uint8_t {
  sent = 0,     ///< queued for the card, no Proof of Receipt yet
  loaded = 1,   ///< the card's PoR confirmed it
  refused = 2,  ///< the card refused it; its unused codes are withdrawn
};

/// A list whose packets went unanswered (Tx::lists_to_repair).
struct ListRepair {
  Bytes n;
  std::uint16_t list_id = 0;
  std::uint32_t packets = 0;  ///< packets that carried it so far
};

/// A key rotation whose E2 packets went unanswered (Tx::rotations_to_repair).
struct RotationRepair {
  Bytes n;
  std::uint8_t version = 0;   ///< the pending key's version, the packets' ref
  std::uint32_t packets = 0;  ///< E2 packets that carried it so far
};

/// A card whose latest E3 or E4 went unanswered (Tx::key_packets_to_repair).
struct KeyPacketRepair {
  Bytes n;
  std::string kind;           ///< "sig_key" (E3) or "server_key" (E4)
  std::uint32_t packets = 0;  ///< unanswered packets of that kind for the card so far
};

/// A list of a card as the backend sees it (no key material).
struct ListInfo {
  std::uint16_t id = 0;
  ListState state = ListState::sent;
  std::uint32_t count = 0;            ///< codes in the list
  std::uint32_t unused = 0;           ///< codes neither consumed nor withdrawn
  std::string refusal;                ///< why the card refused it ("rsc=07 sw=6A84"), else empty
  UnixTime created_at = 0;
  UnixTime state_at = 0;              ///< when the state last changed
};

/// Final or provisional decision on an authorization.
enum class Decision : std::uint8_t { approved = 0, declined = 1, held = 2 };

/// A recorded authorization (or display-code verification).
struct TransactionRecord {
  std::string txn_id;                 ///< terminal's id, unique
  Bytes request_hash;                 ///< SHA-256 of the canonical request, for idempotency
  Bytes card;                         ///< N (may be unknown to the store for declines)
  std::uint16_t list_id = 0;
  std::uint16_t index = 0;
  std::string terminal_id;
  std::int64_t amount_minor = 0;
  std::uint16_t currency = 0;         ///< ISO 4217 numeric
  std::string door;                   ///< door id in door mode, else empty
  Decision decision = Decision::declined;
  std::string reason;                 ///< "ok", "bad_cryptogram", "code_used", ...
  std::string auth_code;              ///< six digits when approved
  Bytes arc;                          ///< 2 ASCII bytes (protocol.md §3.1)
  Bytes arpc;                         ///< 8 bytes, empty when no OTAC was available
  Bytes cryptogram;                   ///< the card's cryptogram (for the ARPC of a later decision)
  UnixTime created_at = 0;
  UnixTime decided_at = 0;            ///< 0 while held
  std::string decided_by;             ///< operator who decided a held transaction
  UnixTime expires_at = 0;            ///< held: the deadline for an operator's decision; 0 = none recorded
};

/// A registered terminal (identified by its client certificate).
struct TerminalRecord {
  std::string id;                     ///< 8 ASCII characters, = certificate CN = 9F1C
  std::string cert_fingerprint;       ///< SHA-256 of the DER certificate, hex
  std::int64_t limit_minor = 0;       ///< per-transaction amount limit; 0 = none
  bool enabled = true;
};

/// A card's permission for one door, with a daily time window in the door's time zone.
struct DoorPermission {
  std::string door;
  std::uint32_t from_minute = 0;      ///< minutes after local midnight, inclusive
  std::uint32_t to_minute = 1440;     ///< exclusive; from > to crosses midnight; 0..1440 is all day
  std::string tz = "UTC";             ///< IANA time zone of the window (Europe/Berlin)
};

/// Operator roles, in increasing power.
enum class Role : std::uint8_t { viewer = 0, operator_ = 1, admin = 2 };

/// An operator API token (only its hash is stored).
struct OperatorRecord {
  std::string name;
  Role role = Role::viewer;
  Bytes token_hash;                   ///< SHA-256 of the token
};

/// Delivery state of an outbox message.
enum class OutboxStatus : std::uint8_t { queued = 0, sent = 1, failed = 2 };

/// One MT SMS waiting for (or done with) the gateway.
struct OutboxMessage {
  std::int64_t id = 0;
  Bytes card;                         ///< N of the destination card
  std::string to;                     ///< destination MSISDN
  Bytes udh;                          ///< user data header without the UDHL byte
  Bytes payload;                      ///< user data after the UDH
  OutboxStatus status = OutboxStatus::queued;
  std::uint32_t attempts = 0;
  UnixTime next_attempt_at = 0;
  std::string last_reply;             ///< the gateway's last answer or error
  UnixTime created_at = 0;
};

/// One entry of the tamper-evident audit log.
struct AuditEntry {
  std::int64_t seq = 0;               ///< 1, 2, ...
  UnixTime at = 0;
  std::string actor;                  ///< operator name, terminal id or "system"
  std::string action;                 ///< "enroll", "authorize", "block", ...
  std::string detail;                 ///< free text, never a secret
  Bytes mac;                          ///< HMAC-SHA-256(audit key, prev mac || entry)
};

/// A key pair held by the backend (ECDSA P-256): "card-ca" (signs the server key for E4) or
/// "server" (signs E5 lists). The private key is sealed under the KEK at rest.
struct ServerKeyRecord {
  std::string name;
  SecretBytes private_der;            ///< PKCS#8 DER
  Bytes public_point;                 ///< uncompressed P-256 point, 65 bytes
  UnixTime created_at = 0;
  /// Set when a PKCS#11 token holds the private key (private_der is then empty): signs inside it.
  std::function<Result<Bytes>(ByteView message)> sign_in_token = nullptr;
};

/// A card's signature key S and server-key state (protocol.md 6.2, E3/E4). Kept apart from
/// CardRecord so that these columns live in their own table.
struct CardSecurity {
  std::optional<SecretBytes> sig_key;          ///< S the card is known to hold: packets carry CF
  std::optional<SecretBytes> pending_sig_key;  ///< S' sent in E3, not yet proven by a PoR
  std::uint64_t pending_sig_counter = 0;       ///< counter of the first packet that carried E3{S'}
  std::uint64_t pending_sig_sent = 0;          ///< counter of the latest packet that carried E3{S'}
  std::uint64_t sig_since = 0;                 ///< counter of the first packet with CF under sig_key (0: none yet)
  Bytes server_point;                          ///< server public point an OK PoR of E4 confirmed
};

/// How long lease_due_sms leases a message to the node that sends it, in seconds.
inline constexpr std::int64_t kSmsLeaseSeconds = 60;

/// What happened after an approval (protocol.md §5.4). Stored as these numbers.
enum class Outcome : std::uint8_t {
  completed = 0,   ///< goods, cash or entry handed over in full
  reversed = 1,    ///< undone; handed_minor says what was handed over all the same (partial dispense)
  not_opened = 2,  ///< door mode: the relay failed, nobody entered
  voided = 3,      ///< the merchant voided the terminal's last purchase before the day closed
};

/// The outcome of one transaction, or a reversal that arrived before its authorization.
struct OutcomeRecord {
  std::string txn_id;
  Outcome outcome = Outcome::completed;
  std::int64_t handed_minor = 0;      ///< amount actually handed over (reversed: what stays charged)
  std::string reported_by;            ///< terminal id, or "system" for an automatic reversal
  UnixTime at = 0;
};

/// An approved cash withdrawal, kept for the daily cash limits and the automatic reversal.
struct CashRecord {
  std::string txn_id;
  Bytes card;
  std::string terminal_id;
  std::int64_t amount_minor = 0;      ///< amount approved
  UnixTime approved_at = 0;
};

/// Net cash taken since a point in time: approvals, less what reversals gave back.
struct CashTotals {
  std::int64_t card_minor = 0;
  std::int64_t terminal_minor = 0;
};

/// Where a refund request stands. Stored as these numbers.
enum class RefundState : std::uint8_t { pending = 0, approved = 1, declined = 2 };

/// A merchant's request to refund (part of) an approved purchase; an operator decides it.
struct RefundRecord {
  std::string txn_id;                 ///< the purchase refunded (one refund per purchase)
  std::string terminal_id;            ///< the terminal that asked (the purchase's own)
  std::int64_t amount_minor = 0;
  RefundState state = RefundState::pending;
  UnixTime requested_at = 0;
  std::string decided_by;             ///< operator, empty while pending
  UnixTime decided_at = 0;
};

/// Filter for listing transactions; unset fields match everything.
struct TransactionFilter {
  std::optional<Bytes> card;
  std::optional<std::string> terminal_id;
  std::optional<Decision> decision;
  UnixTime since = 0;
  UnixTime until = 0;                 ///< 0 = no upper bound
  std::uint32_t limit = 100;
};

/// Operations available inside one store transaction. Reads see the transaction's snapshot;
/// nothing is visible to others until Store::run commits.
class Tx {
 public:
  virtual ~Tx() = default;

  // cards
  /// Inserts a new card; conflict if N exists.
  virtual Result<void> insert_card(const CardRecord& card) = 0;
  /// The card with identity n, with its keys decrypted; not_found if absent.
  virtual Result<CardRecord> card(ByteView n) = 0;
  /// The card with identity n without its keys (keys_withheld is set), for paths that read
  /// its status, limits and counters but neither its keys nor update_card: an authorization
  /// then opens one sealed key (its code's) instead of up to four.
  virtual Result<CardRecord> card_state(ByteView n) = 0;
  /// Writes status, fail counter, limits, threshold, flags and keys of an existing card;
  /// internal error for a record read by card_state.
  virtual Result<void> update_card(const CardRecord& card) = 0;
  /// Replaces the door permissions of a card.
  virtual Result<void> set_doors(ByteView n, const std::vector<DoorPermission>& doors) = 0;
  /// The door permissions of a card.
  virtual Result<std::vector<DoorPermission>> doors(ByteView n) = 0;

  // lists and codes
  /// The highest list id of the card, 0 if none.
  virtual Result<std::uint16_t> last_list_id(ByteView n) = 0;
  /// Stores a new list of codes (indexes 0..count-1) for the card; conflict if the id exists.
  virtual Result<void> insert_list(ByteView n, std::uint16_t list_id,
                                   const std::vector<SecretBytes>& keys, UnixTime now) = 0;
  /// One code, decrypted; not_found if the card has no such list/index.
  virtual Result<OtacRecord> otac(ByteView n, std::uint16_t list_id, std::uint16_t index) = 0;
  /// The lowest `limit` unused codes over all lists of the card (list, then index order).
  virtual Result<std::vector<OtacRecord>> lowest_unused(ByteView n, std::uint32_t limit) = 0;
  /// The codes a display code may be under (protocol.md 7.2): up to `per_list` unused codes
  /// after the highest consumed one of the list that holds it, then up to `per_list` unused
  /// codes of each of the next `next_lists` lists. Cards use codes in order, so anything
  /// before the highest consumed code was used on the card (or abandoned) whatever the
  /// backend still counts. With nothing consumed yet: the first codes of the first lists.
  virtual Result<std::vector<OtacRecord>> display_candidates(ByteView n, std::uint32_t per_list, std::uint32_t next_lists) = 0;
  /// Number of unused codes of the card.
  virtual Result<std::uint32_t> unused_count(ByteView n) = 0;
  /// Whether the card has more than `count` unused codes; reads at most count + 1 of them
  /// (the per-authorization threshold check, where unused_count would scan every code).
  virtual Result<bool> unused_more_than(ByteView n, std::uint32_t count) = 0;
  /// The card's lists, oldest first.
  virtual Result<std::vector<ListInfo>> lists(ByteView n) = 0;
  /// Records a PoR's outcome on a list. `refused` also withdraws the list's unused codes in
  /// the same transaction: they no longer count as unused and can never be consumed;
  /// `loaded` gives a refused list's withdrawn codes back (the refusal proved wrong).
  virtual Result<void> set_list_state(ByteView n, std::uint16_t list_id, ListState state, std::string_view refusal,
                                      UnixTime now) = 0;
  /// Lists still `sent` whose latest packet has no PoR, went out at least
  /// `after << min(packets - 1, 5)` seconds before `now`, and that fewer than `max_packets`
  /// packets carried (protocol.md 6.4, repair); by card, then list id.
  virtual Result<std::vector<ListRepair>> lists_to_repair(UnixTime now, std::int64_t after, std::uint32_t max_packets,
                                                          std::uint32_t limit) = 0;
  /// Cards with a pending key (a rotation not yet confirmed) whose latest E2 packet for that
  /// key ("rotate", ref = the pending version) has no PoR, went out at least
  /// `after << min(packets - 1, 5)` seconds before `now`, and that fewer than `max_packets`
  /// such packets carried; by card. The same rule as lists_to_repair.
  virtual Result<std::vector<RotationRepair>> rotations_to_repair(UnixTime now, std::int64_t after,
                                                                  std::uint32_t max_packets, std::uint32_t limit) = 0;
  /// Cards and kinds ("sig_key", "server_key") whose latest packet of that kind has no PoR and
  /// went out at least `after << min(packets - 1, 5)` seconds before `now`, where `packets`
  /// counts the card's unanswered packets of that kind and is below `max_packets`; by card.
  /// Whether the key is still unconfirmed is the caller's to check.
  virtual Result<std::vector<KeyPacketRepair>> key_packets_to_repair(UnixTime now, std::int64_t after,
                                                                     std::uint32_t max_packets, std::uint32_t limit) = 0;
  /// Marks a code used iff it is still unused: true when this call consumed it.
  virtual Result<bool> consume_otac(ByteView n, std::uint16_t list_id, std::uint16_t index,
                                    std::string_view txn_id, UnixTime now) = 0;

  // transactions
  /// The transaction with this id; not_found if absent.
  virtual Result<TransactionRecord> transaction(std::string_view txn_id) = 0;
  /// Records a new transaction; conflict if the id exists.
  virtual Result<void> insert_transaction(const TransactionRecord& t) = 0;
  /// Records the final decision (decision, reason, codes, decided_at/by) of a transaction iff
  /// it is still held: true when this call decided it, false when another decided it first.
  /// The condition is in the update itself, so an operator and an expiry cannot both win.
  virtual Result<bool> decide_held_transaction(const TransactionRecord& t) = 0;
  /// Transactions matching the filter, newest first.
  virtual Result<std::vector<TransactionRecord>> transactions(const TransactionFilter& f) = 0;
  /// Held transactions whose expires_at <= now, earliest deadline first, at most limit.
  virtual Result<std::vector<TransactionRecord>> held_due(UnixTime now, std::uint32_t limit) = 0;
  /// Deletes up to limit declined transactions created and decided before `before`, oldest
  /// first (retention); returns how many. Their audit entries stay (the chain needs them).
  virtual Result<std::uint32_t> prune_declined(UnixTime before, std::uint32_t limit) = 0;

  // after the decision (protocol.md §5.4): outcomes, cash withdrawals, refunds
  /// The outcome recorded for txn_id, nullopt if none.
  virtual Result<std::optional<OutcomeRecord>> outcome(std::string_view txn_id) = 0;
  /// Writes o iff the recorded outcome of o.txn_id is still `from` (nullopt: none yet): true
  /// when this call wrote it, false when another outcome got there first. A cash withdrawal
  /// with an outcome is settled: cash_unsettled no longer lists it.
  virtual Result<bool> set_outcome(const OutcomeRecord& o, std::optional<Outcome> from) = 0;
  /// Records an approved cash withdrawal; conflict if its txn_id has one. One whose txn_id
  /// already has an outcome (a reversal that came first) is stored settled.
  virtual Result<void> insert_cash(const CashRecord& c) = 0;
  /// The cash withdrawal approved as txn_id, nullopt if it is none.
  virtual Result<std::optional<CashRecord>> cash(std::string_view txn_id) = 0;
  /// Net cash of the card and of the terminal approved at or after `since`: the amount of each
  /// withdrawal, or what was handed over when it was reversed. Read in the caller's
  /// transaction, so a limit checked with it and the insert_cash after it are one step
  /// (a PostgreSQL store must lock the card's and terminal's rows for it).
  virtual Result<CashTotals> cash_totals(ByteView card, std::string_view terminal_id, UnixTime since) = 0;
  /// Cash withdrawals without an outcome approved at or before `before`, oldest first.
  virtual Result<std::vector<CashRecord>> cash_unsettled(UnixTime before, std::uint32_t limit) = 0;
  /// The refund request for the purchase txn_id, nullopt if none.
  virtual Result<std::optional<RefundRecord>> refund(std::string_view txn_id) = 0;
  /// Writes r iff the refund of r.txn_id is still in state `from` (nullopt: none yet): true
  /// when this call wrote it.
  virtual Result<bool> put_refund(const RefundRecord& r, std::optional<RefundState> from) = 0;
  /// Refund requests in `state`, oldest first, at most limit.
  virtual Result<std::vector<RefundRecord>> refunds(RefundState state, std::uint32_t limit) = 0;

  // terminals and operators
  /// Inserts or replaces a terminal.
  virtual Result<void> put_terminal(const TerminalRecord& t) = 0;
  /// The terminal with this id; not_found if absent.
  virtual Result<TerminalRecord> terminal(std::string_view id) = 0;
  /// Inserts or replaces an operator.
  virtual Result<void> put_operator(const OperatorRecord& op) = 0;
  /// The operator whose token hashes to token_hash; not_found if none.
  virtual Result<OperatorRecord> operator_by_token_hash(ByteView token_hash) = 0;

  // SMS outbox
  /// Queues a message; returns its id.
  virtual Result<std::int64_t> enqueue_sms(const OutboxMessage& m) = 0;
  /// Queued messages whose next_attempt_at <= now, oldest first.
  virtual Result<std::vector<OutboxMessage>> due_sms(UnixTime now, std::uint32_t limit) = 0;
  /// The due messages this process is to send now: due_sms, and where several nodes share
  /// the store, leased to this one until lease_until (no other node takes them before; after
  /// it, another node sends a message this one did not mark, the duplicate the card tolerates).
  virtual Result<std::vector<OutboxMessage>> lease_due_sms(UnixTime now, UnixTime lease_until, std::uint32_t limit) {
    (void)lease_until;  // one process per store: nobody else sends
    return due_sms(now, limit);
  }
  /// The message with this id; not_found if absent.
  virtual Result<OutboxMessage> sms(std::int64_t id) = 0;
  /// Sets status, attempts, next_attempt_at and last_reply of a message.
  virtual Result<void> update_sms(const OutboxMessage& m) = 0;
  /// Number of queued (not yet sent) messages.
  virtual Result<std::uint32_t> outbox_depth() = 0;

  // OTA counters (TS 102 225 CNTR), per card
  /// Returns the next counter value for packets to the card and stores it (strictly increasing).
  virtual Result<std::uint64_t> next_ota_counter(ByteView n) = 0;
  /// The highest counter accepted from the card, 0 if none.
  virtual Result<std::uint64_t> card_counter(ByteView n) = 0;
  /// Stores the highest counter accepted from the card.
  virtual Result<void> set_card_counter(ByteView n, std::uint64_t counter) = 0;

  /// A command packet sent to a card, remembered until its PoR arrives.
  /// kind: "list" (ref = list id) or "rotate" (ref = new key version).
  virtual Result<void> record_ota_sent(ByteView n, std::uint64_t counter, std::string_view kind, std::int64_t ref,
                                       UnixTime now) = 0;
  /// What was sent with that counter: {kind, ref, rsc or -1 if no PoR yet}; not_found if never.
  virtual Result<std::tuple<std::string, std::int64_t, int>> ota_sent(ByteView n, std::uint64_t counter) = 0;
  /// The highest counter of the packets of this kind and ref sent to the card, 0 if none.
  virtual Result<std::uint64_t> latest_ota_sent(ByteView n, std::string_view kind, std::int64_t ref) = 0;
  /// Records the PoR status of a sent packet.
  virtual Result<void> set_ota_rsc(ByteView n, std::uint64_t counter, int rsc) = 0;
  /// The card with this MSISDN; not_found if none.
  virtual Result<Bytes> card_by_msisdn(std::string_view msisdn) = 0;

  // server keys and per-card security state (E3/E4/E5)
  /// The server key pair with this name; not_found if absent.
  virtual Result<ServerKeyRecord> server_key(std::string_view name) = 0;
  /// Stores a new server key pair; conflict if the name exists.
  virtual Result<void> insert_server_key(const ServerKeyRecord& key) = 0;
  /// The card's signature-key and server-key state (all empty when never set).
  virtual Result<CardSecurity> card_security(ByteView n) = 0;
  /// Replaces the card's signature-key and server-key state.
  virtual Result<void> set_card_security(ByteView n, const CardSecurity& s) = 0;

  // audit log
  /// Appends an entry chained to the previous one; returns its sequence number.
  virtual Result<std::int64_t> audit(UnixTime at, std::string_view actor, std::string_view action,
                                     std::string_view detail) = 0;
  /// Entries with seq > after_seq, oldest first, at most limit.
  virtual Result<std::vector<AuditEntry>> audit_entries(std::int64_t after_seq, std::uint32_t limit) = 0;
  /// The newest `limit` entries, oldest first.
  virtual Result<std::vector<AuditEntry>> audit_recent(std::uint32_t limit) = 0;
  /// Recomputes the whole chain; error (bad_mac) naming the first entry that does not verify.
  virtual Result<std::int64_t> verify_audit_chain() = 0;

  // listings for operators
  /// Identities of the most recently enrolled cards, newest first, at most limit.
  virtual Result<std::vector<Bytes>> card_ids(std::uint32_t limit) = 0;
  /// Registered terminals by id, at most limit.
  virtual Result<std::vector<TerminalRecord>> terminals(std::uint32_t limit) = 0;
  /// Messages to the card still queued for the gateway (whatever their retry time), oldest first.
  virtual Result<std::vector<OutboxMessage>> queued_sms(ByteView n, std::uint32_t limit) = 0;
};

/// A store: opens transactions. Thread-safe in the sense that each Store object is used by
/// one thread at a time; open one Store per thread (they may share the same file).
class Store {
 public:
  virtual ~Store() = default;
  /// Runs fn inside one write transaction and commits if fn returns OK, else rolls back.
  /// Retries a bounded number of times when the database is busy. Durable on return.
  /// Concurrent calls may share one database commit (group commit): their functions still
  /// run one after another, each seeing the effects of those before it, and each is undone
  /// alone when it fails. So fn may run on another thread than the caller's (the caller
  /// waits meanwhile), may run again if the database aborts the shared commit, and must not
  /// call run itself.
  virtual Result<void> run(const std::function<Result<void>(Tx&)>& fn) = 0;

  /// The completion of run_async: fn's result once its transaction is durable, or the error.
  using Done = std::function<void(Result<void>)>;
  /// run without waiting: done is called exactly once, when run would have returned, from the
  /// store's committing thread (this default runs fn at once in the caller's thread). done
  /// must not block and must not call run; fn must not call run either.
  virtual void run_async(std::function<Result<void>(Tx&)> fn, Done done) { done(run(fn)); }
};

}  // namespace otac::backend
