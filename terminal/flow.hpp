// The tap-to-decision flow (protocol.md §2-§5) as a state machine that does no I/O: the
// driver feeds it events (card present, R-APDU, PIN, backend answer, ...) and carries out the
// action it returns (transmit this APDU, ask for the PIN, POST this body, ...). Tests drive it
// byte for byte with a fake card and a fake backend.
//
// The terminal never approves on its own: only a well-formed "approved" answer from the
// backend, carrying the txn_id we sent, approves. Everything else declines with a reason.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "otac/common/apdu.hpp"
#include "otac/common/bytes.hpp"
#include "otac/common/protocol.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"
#include "terminal/backend_json.hpp"

namespace otac::terminal {

/// POS purchase or door entry (tag DF31).
using Mode = protocol::Mode;

/// What one transaction is about; fixed before the card is tapped.
struct TxnParams {
  Mode mode = Mode::pos;
  std::string txn_id;           ///< unique per transaction; reused on every retry
  std::string terminal_id;      ///< exactly 8 ASCII characters (9F1C)
  std::uint64_t amount = 0;     ///< minor units, at most 12 digits; 0 in door mode
  std::uint16_t currency = 978; ///< ISO 4217 numeric (0978 EUR)
  std::string door_id;          ///< door mode: 1..16 ASCII characters (DF32)
  std::uint8_t txn_type = 0x00; ///< 9C: 00 purchase, 20 refund, 90 door entry
  // Local date and time of the transaction (9A, 9F21).
  int year = 2000, month = 1, day = 1, hour = 0, minute = 0, second = 0;
  int max_backend_attempts = 3; ///< POSTs of the same body on transport errors
  int max_pin_attempts = 3;     ///< PIN entries per tap
  /// ATM (protocol.md §5.4): after SELECT the card checks the PIN keyed at the keypad (VERIFY;
  /// 63Cx tries left are shown, a blocked PIN declines without going online), then the
  /// customer picks the amount (ask_amount), then AUTHENTICATE. amount is set by on_amount.
  bool atm = false;
};

/// Checks the parameters (lengths, digits, mode-specific fields); errors say which one.
Result<void> validate(const TxnParams& p);

/// Encodes the AUTHENTICATE data (protocol.md §3); pin_block is empty or 8 bytes (DF34).
Bytes build_challenge(const TxnParams& p, ByteView nonce, ByteView pin_block);

/// The 8-byte PIN block: ASCII digits padded with FF. Error unless 4..8 digits.
Result<SecretBytes> pin_block(std::string_view pin);

/// The final word on one transaction.
struct Outcome {
  Decision decision = Decision::declined;
  std::string reason;           ///< backend reason, or a terminal reason (no_card, backend_unreachable, ...)
  std::string detail;           ///< a sentence for people
  std::string auth_code;
  std::string card_hex;         ///< N, 16 hex digits; empty if unknown
  std::uint16_t list_id = 0, index = 0, atc = 0;
  std::uint8_t pin_state = 0;   ///< the card's DF35 (tries left, verified, blocked)
  bool held_before = false;     ///< the backend held it for an operator first
  bool card_confirmed = false;  ///< the card accepted the ARPC (CONFIRM 9000)
  int apdu_exchanges = 0;       ///< command/response pairs sent to the card
  int backend_attempts = 0;
  /// The terminal stopped waiting without a decision from the backend (unreachable, an answer
  /// it could not use, a cancel of a held transaction not confirmed): the backend may have
  /// approved or may still approve, so the driver's caller reverses txn_id (protocol.md §5.4).
  bool undecided = false;
};

/// What the driver must do next.
struct Action {
  enum Kind {
    wait_card,       ///< wait for a card in the field
    transmit,        ///< send command, answer with on_response / on_reader_error
    ask_pin,         ///< prompt the keypad, answer with on_pin / on_pin_cancelled
    ask_amount,      ///< ATM: the customer picks an amount the cassettes can pay; on_amount / on_amount_cancelled
    post_auth,       ///< POST body to /v1/authorizations, answer with on_backend
    poll_held,       ///< GET /v1/authorizations/{txn_id}?wait=, answer with on_backend / on_held_expired
    cancel_held,     ///< POST /v1/authorizations/{txn_id}/cancel, answer with on_backend
    wait_removal,    ///< wait until the card leaves, then on_removed
    done,            ///< outcome() is final
  } kind = wait_card;
  apdu::Command command;        ///< transmit
  std::string body;             ///< post_auth
  std::string display;          ///< a line for the display, shown before acting (may be empty)
  bool decision_shown = false;  ///< this action's display is the decision (latency end point)
  /// poll_held after a held answer: the backend's time left (expires_in), counted from when
  /// the request that got this answer was sent; empty when the answer had none.
  std::optional<std::chrono::seconds> held_left;
};

/// The flow of one tap. Not thread-safe; one instance per transaction.
class Flow {
 public:
  /// rng(n) returns n bytes from a CSPRNG; tests pass a fixed source.
  Flow(TxnParams params, std::function<Bytes(std::size_t)> rng);

  /// The first action (wait for a card).
  Action start();
  /// A card is in the field.
  Action on_card();
  /// No card came within the reader's limit, or the reader failed while waiting.
  Action on_no_card(const Error& why);
  /// The R-APDU for the last transmit (after 61xx/6Cxx handling).
  Action on_response(const apdu::Response& r);
  /// The reader failed during the last transmit (removed, timeout, I/O).
  Action on_reader_error(const Error& why);
  /// The keypad delivered a PIN.
  Action on_pin(const SecretBytes& pin);
  /// The user cancelled PIN entry or the keypad timed out.
  Action on_pin_cancelled();
  /// ATM: the amount picked, in minor units (the driver checked it against the cassettes).
  Action on_amount(std::uint64_t amount);
  /// ATM: no amount picked (cancelled, timed out, or none the cassettes can pay).
  Action on_amount_cancelled();
  /// The backend's answer body (HTTP 200), or a transport/HTTP error.
  Action on_backend(const Result<std::string>& body);
  /// The wait for an operator's decision ended (the backend's deadline or the terminal's own
  /// limit, whichever came first): asks the backend to cancel; its answer is final.
  Action on_held_expired();
  /// The card left the field (or waiting for that ended).
  Action on_removed();

  const Outcome& outcome() const { return out_; }
  const TxnParams& params() const { return p_; }
  bool finished() const { return state_ == State::done; }

 private:
  enum class State { idle, waiting_card, selecting, pin_status, verifying, amount_entry, authenticating, pin_entry,
                     authorizing, held, cancelling, confirming, removing, done };

  Action send_authenticate(ByteView pin_block);
  Action send_verify(ByteView pin_block);
  Action on_verify_response(const apdu::Response& r);
  Action ask_pin(std::string prompt);
  Action decide(const BackendAnswer& a);
  Action decline(std::string reason, std::string detail, bool card_in_field);
  Action card_refused(const char* command, std::uint16_t status);
  Action cancel_unconfirmed(const std::string& why);
  Action finish_to_removal(std::string display, bool decision);
  Action unexpected(const char* event);

  TxnParams p_;
  std::function<Bytes(std::size_t)> rng_;
  State state_ = State::idle;
  Outcome out_;
  Bytes challenge_;        // AUTHENTICATE data as sent (without DF34: the backend never sees the PIN)
  std::string auth_body_;  // the POST body, identical on every retry
  int pin_attempts_ = 0;
  bool pin_sent_ = false;
};

/// "approved"/"declined"/"held" for display and JSON.
const char* decision_name(Decision d);

}  // namespace otac::terminal
