// The backend's business logic: enrollment, lists over SMS, authorization, operators.
// No network I/O: the HTTPS layer calls in, the outbox pump (sms_outbox.hpp) drains the
// outbox through next_due/mark_sent/mark_failed into an SmsGateway. Every state change is one Store transaction.
//
// Error codes and their HTTP meaning (for the server layer):
//   bad_value / truncated / bad_length / trailing_data -> 400 (malformed request)
//   state    -> 403 (e.g. challenge terminal id != client certificate CN, terminal unknown)
//   not_found -> 404, conflict -> 409 (txn_id reused with a different body),
//   timeout -> 503, unavailable (the key token is out for now) -> 503 with Retry-After: 1,
//   others -> 500.
// Declines are not errors: they are answers with decision = declined and a reason.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"
#include "policy.hpp"
#include "store.hpp"

namespace otac::backend {

/// Settings of the service.
struct ServiceConfig {
  std::string server_msisdn = "+15550100";  ///< SMS number the cards send to (letter, DF46)
  std::uint16_t list_size = 100;            ///< codes per list
  std::uint32_t default_threshold = 20;     ///< unused codes that trigger a push
  std::uint32_t default_fail_limit = 5;     ///< bad cryptograms that block a card
  std::chrono::seconds max_wait{30};        ///< longest get_authorization wait
  std::chrono::seconds hold_limit{120};     ///< a held transaction expires this long after it was held
  CurrencyTable currencies;                 ///< ISO 4217 (load_iso4217); empty declines every POS transaction
  std::uint16_t default_currency = 978;     ///< a card's currency unless enrolled with another; terminal limits' currency
  std::int64_t max_amount_minor = 10'000'000;  ///< no POS transaction above this, 0 = no global maximum
  std::chrono::seconds list_repair_after{900};  ///< an unanswered list packet is sent again after this (then 2x, 4x, ...)
  std::uint32_t list_repair_packets = 6;        ///< at most this many packets per list, the first included
  /// Asked for each new decline that used up no code (decline_limit.hpp): false = answer it
  /// but store neither a row nor an audit entry (AuthAnswer::recorded = false). Unset: store all.
  std::function<bool(std::string_view terminal_id, ByteView card)> record_decline;
  /// Cash withdrawals (9C 01, protocol.md §5.4): the most one card may take per UTC day; 0 =
  /// no withdrawal is approved (declined type_not_allowed).
  std::int64_t cash_card_daily_minor = 0;
  /// The most one terminal may pay out per UTC day, 0 = no terminal limit.
  std::int64_t cash_terminal_daily_minor = 0;
  /// An approved withdrawal with no outcome reported this long after is reversed in full.
  std::chrono::seconds cash_complete_within{300};
};

/// The largest daily cash limit a card may be given (as the config's cash_card_daily_minor).
inline constexpr std::int64_t kMaxCashDaily = 2'000'000'000;

/// What to enroll.
struct EnrollRequest {
  Algorithm algorithm = Algorithm::des3;
  std::string msisdn;                 ///< the card's phone number
  std::int64_t limit_minor = 0;       ///< per-transaction limit, 0 = none
  std::int64_t review_minor = 0;      ///< hold above this amount, 0 = never
  std::uint16_t currency = 0;         ///< ISO 4217 numeric, 0 = ServiceConfig::default_currency
  std::optional<std::uint32_t> threshold;
  /// The card's own daily cash limit (0 = no withdrawals); unset = ServiceConfig::cash_card_daily_minor.
  std::optional<std::int64_t> cash_daily_minor;
  std::vector<DoorPermission> doors;
  Bytes public_key;                   ///< DER SPKI (RSA-2048 or P-256): lists go as E5 (K still carries OTA)
};

/// A change of an enrolled card's settings; unset fields stay as they are.
struct CardSettings {
  std::optional<std::int64_t> limit_minor{};
  std::optional<std::int64_t> review_minor{};
  std::optional<std::uint32_t> threshold{};
  std::optional<std::uint16_t> currency{};           ///< ISO 4217 numeric
  std::optional<std::vector<DoorPermission>> doors{};  ///< replaces all door permissions
  /// The card's own daily cash limit (0 = no withdrawals); kCashDefault = back to the
  /// backend's cash_card_daily_minor.
  std::optional<std::int64_t> cash_daily_minor{};
  static constexpr std::int64_t kCashDefault = -1;
};

/// The result of an enrollment: what goes into the initialization letter.
struct Enrollment {
  Bytes n;
  Algorithm algorithm = Algorithm::des3;
  SecretBytes k;                      ///< OTA transport key (also for asymmetric cards)
  Bytes ca_point;                     ///< the card CA's P-256 point, for ACTIVATE DF51 (E4)
  std::string letter;                 ///< printable letter: N, K, server number, CA key
};

/// A card's E3/E4 state, for operators (no key material).
struct CardKeyStatus {
  bool signature_key = false;         ///< S is confirmed: every packet carries CF
  bool signature_key_pending = false; ///< E3 sent, not yet proven
  bool server_key = false;            ///< an E4 with the current server key was confirmed
};

/// A card as operators see it: settings, state, lists and the SMS waiting for it; never a key.
struct CardSummary {
  Bytes n;
  Algorithm algorithm = Algorithm::des3;
  std::string msisdn;
  CardStatus status = CardStatus::active;
  std::uint32_t fail_count = 0;
  std::uint32_t fail_limit = 0;
  std::uint32_t threshold = 0;
  std::int64_t limit_minor = 0;
  std::int64_t review_minor = 0;
  std::optional<std::int64_t> cash_daily_minor;  ///< the card's own daily cash limit; unset = the backend's
  std::int64_t cash_daily_effective_minor = 0;   ///< the daily cash limit that applies (0 = no withdrawals)
  std::uint16_t currency = 0;         ///< 0: enrolled before currencies, the backend's default applies
  std::uint8_t key_version = 1;
  bool key_rotation_pending = false;  ///< K' sent, not yet proven by the card
  bool asymmetric = false;
  bool list_push_in_flight = false;
  UnixTime created_at = 0;
  std::vector<DoorPermission> doors;
  std::vector<ListInfo> lists;        ///< oldest first
  CardKeyStatus keys;
  std::uint32_t sms_queued = 0;       ///< messages still queued for the gateway
  std::optional<OutboxMessage> sms_last;  ///< the newest of them
};

/// An authorization request as the terminal sent it (protocol.md §5).
struct AuthRequest {
  std::string txn_id;
  Bytes card;                         ///< N
  std::uint16_t list_id = 0;
  std::uint16_t index = 0;
  std::uint16_t atc = 0;
  std::uint8_t pin_state = 0;         ///< DF35 of the card's answer
  Bytes challenge;                    ///< the AUTHENTICATE data TLV
  Bytes cryptogram;                   ///< 8 bytes
};

/// The answer to a terminal (protocol.md §5).
struct AuthAnswer {
  std::string txn_id;
  Decision decision = Decision::declined;
  std::string reason;                 ///< ok, bad_cryptogram, code_used, unknown_card, ...
  std::string auth_code;              ///< six digits when approved, else empty
  Bytes arc;                          ///< 2 bytes ("00", "05", "51", "19")
  Bytes arpc;                         ///< 8 bytes, empty if no OTAC could be used
  UnixTime expires_at = 0;            ///< held: the deadline for an operator's decision, else 0
  std::int64_t expires_in = 0;        ///< held: whole seconds surely left before expires_at (protocol.md §5.2)
  bool recorded = true;               ///< false: a decline ServiceConfig::record_decline left unstored
};

/// A typed display code (protocol.md §4, §5 POST /v1/codes/verify).
struct CodeRequest {
  std::string txn_id;
  Bytes card;
  std::string code;                   ///< 8 digits
  std::string door;                   ///< may be empty
};

/// A terminal's report of what happened after a decision (protocol.md §5.4).
struct OutcomeReport {
  std::string txn_id;
  Outcome outcome = Outcome::completed;
  /// reversed: what was handed over all the same (unset = nothing); completed: unset or the
  /// full amount; not_opened and voided: unset or 0.
  std::optional<std::int64_t> handed_minor;
};

/// The backend's acknowledgement of an outcome report.
struct OutcomeAnswer {
  OutcomeRecord record;   ///< the outcome now recorded
  bool applied = false;   ///< this report recorded it (false: a repeat of the recorded one)
};

/// An MO SMS as Kannel's get-url delivers it.
struct MoSms {
  std::string from;
  std::string to;
  Bytes udh;                          ///< without the UDHL byte
  Bytes data;
};

/// Counters for /metrics.
struct Metrics {
  std::map<std::string, std::uint64_t> decisions;  ///< "approved/ok", "declined/code_used", ...
  std::uint32_t outbox_depth = 0;
  std::map<std::string, std::uint64_t> settlements;  ///< "outcome/reversed", "outcome/auto_reversed", "refund/approved", ...
};

/// Short names, as used in JSON.
const char* decision_name(Decision d) noexcept;
const char* role_name(Role r) noexcept;
const char* outcome_name(Outcome o) noexcept;
const char* refund_state_name(RefundState s) noexcept;
/// "completed", "reversed", "not_opened" or "voided"; nullopt otherwise.
std::optional<Outcome> parse_outcome(std::string_view s) noexcept;

/// The service. One object per process; each call opens its own store transaction.
/// Thread-safe: a Store connection is taken from an internal pool per call.
class Service {
 public:
  /// factory opens a new Store connection (called lazily, once per concurrent caller).
  Service(ServiceConfig config, std::function<Result<std::unique_ptr<Store>>()> factory,
          std::function<UnixTime()> clock = {});
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // ---- cards ----
  /// Enrolls a new card: random N and K (or the given public key); audit-logged.
  Result<Enrollment> enroll_card(const EnrollRequest& req, std::string_view actor);
  /// Allocates a new list for the card and queues it (when OTA packets are available);
  /// returns the list id. The keys are also returned for tests and local loading.
  Result<std::pair<std::uint16_t, std::vector<SecretBytes>>> issue_list(ByteView n, std::string_view actor);
  /// Manual refresh by an operator: queues a new list and returns its id. Refused (conflict,
  /// audited, nothing queued) while the card holds codes of two lists: it has no room.
  Result<std::uint16_t> refresh_card(ByteView n, std::string_view actor);
  /// The card's lists and their state (sent, loaded, refused), oldest first.
  Result<std::vector<ListInfo>> card_lists(ByteView n);
  /// Starts a key rotation: a new K' is stored as pending and sent under K (E2). K stays
  /// current until the card proves K' (a card request whose CC verifies under K').
  Result<void> rotate_key(ByteView n, std::string_view actor);
  /// The card CA's public point (65 bytes), created with the server key on first use. Cards
  /// are personalized with it (ACTIVATE DF51) so that they accept E4.
  Result<Bytes> card_ca_public();
  /// Queues E4 for the card: the server's public point signed by the card CA.
  Result<void> install_server_key(ByteView n, std::string_view actor);
  /// Generates a signature key S and queues E3; packets carry CF once a PoR proves the card
  /// holds S (protocol.md 6.2). While an E3 is unconfirmed, sends the same S again.
  Result<void> set_signature_key(ByteView n, std::string_view actor);
  /// The card's E3/E4 state.
  Result<CardKeyStatus> key_status(ByteView n);
  /// Blocks a card; audit-logged.
  Result<void> block_card(ByteView n, std::string_view actor);
  /// Unblocks a card and resets its fail counter; audit-logged.
  Result<void> unblock_card(ByteView n, std::string_view actor);
  /// The card record (keys included; never expose them over the API).
  Result<CardRecord> card(ByteView n);
  /// The card's door permissions.
  Result<std::vector<DoorPermission>> card_doors(ByteView n);
  /// The card for operators (settings, lists, key state, queued SMS), read in one transaction.
  Result<CardSummary> card_summary(ByteView n);
  /// The most recently enrolled cards, newest first, at most `limit` (1..1000).
  Result<std::vector<CardSummary>> list_cards(std::uint32_t limit);
  /// Changes limits, review amount, threshold, currency or doors of an enrolled card; one
  /// audit entry lists every changed setting with its old and new value. Returns the card.
  Result<CardRecord> update_card_settings(ByteView n, CardSettings s, std::string_view actor);
  /// The service's currency list (for resolving "EUR" at the API).
  const CurrencyTable& currencies() const { return config_.currencies; }

  // ---- SMS ----
  /// Handles a card's MO SMS: a request packet (UDH IEI 70, protocol.md §2.4) allocates and
  /// queues a list or confirms a key rotation; a PoR (IEI 71) records its RSC, marks a list
  /// loaded or refused (either clears the in-flight flag; protocol.md 6.4) and confirms a key
  /// rotation.
  Result<void> handle_mo_sms(const MoSms& sms);
  /// Outbox messages due at now.
  Result<std::vector<OutboxMessage>> next_due(std::uint32_t limit);
  /// Records a successful hand-over to the gateway.
  Result<void> mark_sent(std::int64_t id, std::string_view reply);
  /// Records a failed attempt; retried at retry_at.
  Result<void> mark_failed(std::int64_t id, std::string_view reply, UnixTime retry_at);
  /// Records a gateway delivery report for a sent message; `failed` marks it undeliverable.
  Result<void> record_delivery_report(std::int64_t id, std::string_view report, bool failed);

  // ---- authorization ----
  /// Verifies and decides an authorization; terminal_id is the client certificate's CN.
  Result<AuthAnswer> authorize(const AuthRequest& req, std::string_view terminal_id);
  /// The answer of an asynchronous call, or its error.
  using AuthDone = std::function<void(Result<AuthAnswer>)>;
  /// authorize without waiting: done gets the answer (durable, as authorize's) exactly once,
  /// from the store's committing thread, or at once for a request refused before the store.
  /// done must not block and must not call the Service.
  void authorize_async(const AuthRequest& req, std::string_view terminal_id, AuthDone done);
  /// The current answer for txn_id, waiting up to `wait` (capped) while it is held.
  Result<AuthAnswer> get_authorization(std::string_view txn_id, std::chrono::milliseconds wait);
  /// An operator decides a held transaction; conflict once it is decided or has expired.
  Result<AuthAnswer> decide_held(std::string_view txn_id, bool approve, std::string_view actor);
  /// The terminal that created a held transaction gave up waiting: declines it (held_timeout)
  /// if it is still held, else returns its final answer. Idempotent; not_found for another
  /// terminal's transaction.
  Result<AuthAnswer> cancel_held(std::string_view txn_id, std::string_view terminal_id);
  /// Declines (held_timeout) up to `limit` held transactions whose deadline has passed;
  /// returns how many. Reads and decisions expire them too; this keeps audit and metrics timely.
  Result<std::uint32_t> expire_held(std::uint32_t limit);
  /// Sends again, same id and keys under a new counter, every card's latest list whose last
  /// packet went unanswered for ServiceConfig::list_repair_after (doubling per resend, at
  /// most list_repair_packets packets): a lost list SMS or a lost PoR is repaired without
  /// waiting for the card to ask (protocol.md 6.4). Returns how many lists went out again.
  Result<std::uint32_t> repair_lists(std::uint32_t limit);
  /// Sends the pending key K' again (the same E2, a new counter) to every card whose latest E2
  /// went unanswered, on the same schedule and bound as repair_lists: an E2 lost on its way
  /// would otherwise leave the rotation pending until an operator rotates again. Returns how
  /// many E2 went out again.
  Result<std::uint32_t> repair_rotations(std::uint32_t limit);
  /// Sends an E3 (the pending S') or an E4 (the server key) again to every card whose latest
  /// one went unanswered while that key is still unconfirmed, on the same schedule and bound
  /// as repair_lists. Returns how many went out again.
  Result<std::uint32_t> repair_key_packets(std::uint32_t limit);
  /// Verifies a typed display code against the codes the card can be at (protocol.md 4).
  Result<AuthAnswer> verify_display_code(const CodeRequest& req, std::string_view terminal_id);

  // ---- after the decision (settlement.cpp, protocol.md §5.4) ----
  /// Records what happened after a decision, exactly once per txn_id: a repeat of the
  /// recorded outcome is acknowledged again (applied = false), a different one is a conflict.
  /// A reversal may come before its authorization (the terminal gave up waiting): the
  /// authorization, when it arrives, is then declined "reversed". Retries of a reversed or
  /// voided transaction answer declined with that reason, never approved. A void is for the
  /// terminal's last approved purchase, on the UTC day it was approved. Audited.
  Result<OutcomeAnswer> report_outcome(const OutcomeReport& r, std::string_view terminal_id);
  /// The recorded outcome of txn_id, nullopt if none.
  Result<std::optional<OutcomeRecord>> outcome(std::string_view txn_id);
  /// Reverses in full (reported by "system", audited) up to `limit` cash withdrawals that no
  /// outcome followed within ServiceConfig::cash_complete_within; returns how many.
  Result<std::uint32_t> reverse_stale_cash(std::uint32_t limit);
  /// A terminal asks to refund (part of) its own approved purchase txn_id; pending until an
  /// operator decides. A repeat with the same amount returns the request. Audited.
  Result<RefundRecord> request_refund(std::string_view txn_id, std::int64_t amount_minor, std::string_view terminal_id);
  /// An operator approves or declines a pending refund; conflict once decided. Audited.
  Result<RefundRecord> decide_refund(std::string_view txn_id, bool approve, std::string_view actor);
  /// The refund request of txn_id; not_found if none.
  Result<RefundRecord> refund(std::string_view txn_id);
  /// Refund requests in `state`, oldest first.
  Result<std::vector<RefundRecord>> list_refunds(RefundState state, std::uint32_t limit);

  // ---- terminals, operators ----
  /// Registers (or replaces) a terminal.
  Result<void> register_terminal(const TerminalRecord& t, std::string_view actor);
  /// The terminal with this id (for the server's client-certificate check); not_found if none.
  Result<TerminalRecord> terminal(std::string_view id);
  /// Registered terminals by id, at most `limit` (1..1000).
  Result<std::vector<TerminalRecord>> list_terminals(std::uint32_t limit);
  /// Creates an operator and returns its new random token (shown once).
  Result<std::string> create_operator(std::string_view name, Role role, std::string_view actor);
  /// The operator owning token; not_found if none.
  Result<OperatorRecord> authenticate_operator(std::string_view token);

  // ---- reporting ----
  /// One recorded transaction; not_found if absent.
  Result<TransactionRecord> transaction(std::string_view txn_id);
  /// Transactions matching the filter.
  Result<std::vector<TransactionRecord>> list_transactions(const TransactionFilter& f);
  /// Audit entries after seq.
  Result<std::vector<AuditEntry>> audit_log(std::int64_t after_seq, std::uint32_t limit);
  /// The newest `limit` audit entries, oldest first.
  Result<std::vector<AuditEntry>> audit_recent(std::uint32_t limit);
  /// Verifies the audit chain; returns the number of entries.
  Result<std::int64_t> verify_audit();
  /// Audit-logs an event the server saw (e.g. a source throttled for guessing operator tokens).
  Result<void> record_event(std::string_view actor, std::string_view action, std::string_view detail);
  /// Counters for /metrics.
  Result<Metrics> metrics();
  /// Retention (retention.cpp): deletes up to `limit` declined transactions decided more than
  /// `keep` ago, oldest first, and audit-logs how many; returns how many. Audit entries stay.
  Result<std::uint32_t> prune_declined(std::chrono::seconds keep, std::uint32_t limit);

 private:
  class Pool;
  Result<void> run(const std::function<Result<void>(Tx&)>& fn);
  /// Store::run_async on a store of the pool.
  void run_async(std::function<Result<void>(Tx&)> fn, Store::Done done);
  UnixTime now() const;
  void count(const AuthAnswer& a);
  void count_settlement(const std::string& key);
  /// Fills in a new transaction's fields and decision inside the store transaction, for a
  /// card the store knows (never null).
  using Rules = std::function<Result<void>(Tx&, TransactionRecord&, const TerminalRecord&, CardRecord*)>;
  /// One authorization's frame, shared by taps and typed display codes: the answer given
  /// before to the same txn_id (idempotent retries; a held one past its deadline is expired
  /// first), or else, with the terminal registered and enabled, a new transaction that
  /// `rules` decides (declined unknown_card when the card is not enrolled), stored with its
  /// audit entry and counted in the metrics.
  Result<AuthAnswer> decide(UnixTime t, const std::string& txn_id, ByteView hash, ByteView card, std::string_view terminal_id,
                            std::string_view action, const Rules& rules);
  /// What decide works on, kept by an asynchronous decision until it is answered.
  struct DecideJob {
    UnixTime t = 0;
    std::string txn_id;
    Bytes hash;
    Bytes card;
    std::string terminal_id;
    std::string action;
    Rules rules;
    AuthAnswer ans;      ///< filled by the store transaction
    bool fresh = false;  ///< a new decision (not a retry's earlier answer): counted
  };
  /// decide's store transaction over job (which must outlive it).
  std::function<Result<void>(Tx&)> decide_tx(DecideJob& job);
  Result<AuthAnswer> decide(DecideJob& job);
  void decide_async(std::shared_ptr<DecideJob> job, AuthDone done);
  /// A tap's request checked outside the store, and its decision prepared.
  Result<std::shared_ptr<DecideJob>> authorize_job(const AuthRequest& req, std::string_view terminal_id);

  ServiceConfig config_;
  std::unique_ptr<Pool> pool_;
  std::function<UnixTime()> clock_;
  std::mutex metrics_mu_;
  std::map<std::string, std::uint64_t> decisions_;
  std::map<std::string, std::uint64_t> settlements_;
  std::mutex held_mu_;
  std::condition_variable held_cv_;  // wakes in-process waiters early; polling covers other processes
};

}  // namespace otac::backend
