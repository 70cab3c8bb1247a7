#include "terminal/flow.hpp"

#include <algorithm>
#include <utility>

#include "otac/common/sw.hpp"
#include "otac/common/tlv.hpp"

namespace otac::terminal {

namespace {

bool printable(std::string_view s) {
  for (const char c : s)
    if (c < 0x20 || c > 0x7E) return false;
  return true;
}

apdu::Command select_command() {
  apdu::Command c;
  c.cla = protocol::cla_iso; c.ins = protocol::ins(protocol::Ins::select); c.p1 = 0x04; c.p2 = 0x00;
  c.data.assign(protocol::aid.begin(), protocol::aid.end());
  c.ne = 256;
  return c;
}

// The reason names for reader failures (see reader.hpp for the mapping of codes).
std::pair<std::string, bool> reader_reason(const Error& e) {
  switch (e.code) {
    case Errc::not_found: return {"card_removed", false};
    case Errc::timeout: return {"card_timeout", true};
    default: return {"reader_error", true};
  }
}

// The display line of a decline; a reason the customer can act on gets a hint.
std::string declined_display(const std::string& reason) {
  std::string d = "DECLINED (" + reason + ")";
  if (reason == "pin_blocked") d += ": PIN blocked, unblock the card with its PUK";
  return d;
}

}  // namespace

const char* decision_name(Decision d) {
  switch (d) {
    case Decision::approved: return "approved";
    case Decision::declined: return "declined";
    case Decision::held: return "held";
  }
  return "declined";
}

Result<void> validate(const TxnParams& p) {
  if (p.txn_id.empty() || p.txn_id.size() > 64)
    return make_error(Errc::bad_value, "transaction id must be 1 to 64 characters");
  for (const char c : p.txn_id)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
          c == '_' || c == '.' || c == ':'))
      return make_error(Errc::bad_value, "transaction id may hold only A-Z a-z 0-9 - _ . :");
  if (p.terminal_id.size() != 8 || !printable(p.terminal_id))
    return make_error(Errc::bad_value, "terminal id must be exactly 8 printable ASCII characters (tag 9F1C)");
  if (p.amount > 999999999999ULL) return make_error(Errc::bad_value, "amount exceeds 12 digits of minor units");
  if (p.currency > 999) return make_error(Errc::bad_value, "currency must be an ISO 4217 numeric code (0..999)");
  if (p.mode == Mode::door) {
    if (p.door_id.empty() || p.door_id.size() > 16 || !printable(p.door_id))
      return make_error(Errc::bad_value, "door mode needs a door id of 1 to 16 printable ASCII characters");
    if (p.amount != 0) return make_error(Errc::bad_value, "door mode carries no amount");
  } else if (!p.door_id.empty()) {
    return make_error(Errc::bad_value, "a door id is only sent in door mode");
  }
  if (p.year < 2000 || p.year > 2099 || p.month < 1 || p.month > 12 || p.day < 1 || p.day > 31 ||
      p.hour < 0 || p.hour > 23 || p.minute < 0 || p.minute > 59 || p.second < 0 || p.second > 60)
    return make_error(Errc::bad_value, "transaction date/time out of range");
  if (p.max_backend_attempts < 1 || p.max_backend_attempts > 10 || p.max_pin_attempts < 1 || p.max_pin_attempts > 3)
    return make_error(Errc::bad_value, "attempt limits out of range (backend 1..10, PIN 1..3)");
  return {};
}

Bytes build_challenge(const TxnParams& p, ByteView nonce, ByteView pin_block) {
  protocol::Challenge c;
  c.mode = p.mode;
  std::copy_n(nonce.begin(), std::min(nonce.size(), c.un.size()), c.un.begin());
  c.amount_minor = static_cast<std::int64_t>(p.amount);
  c.currency_code = p.currency;
  const auto bcd2 = [](int v) { return static_cast<std::uint8_t>(((v / 10) % 10) << 4 | (v % 10)); };
  c.date = {bcd2(p.year % 100), bcd2(p.month), bcd2(p.day)};
  c.time = {bcd2(p.hour), bcd2(p.minute), bcd2(p.second)};
  c.type = p.txn_type;
  c.terminal = p.terminal_id;
  if (p.mode == Mode::door) c.door = p.door_id;
  if (!pin_block.empty()) c.pin.emplace(pin_block);
  return c.encode();
}

Result<SecretBytes> pin_block(std::string_view pin) {
  if (pin.size() < 4 || pin.size() > 8) return make_error(Errc::bad_value, "a PIN has 4 to 8 digits");
  SecretBytes b(8);
  for (std::size_t i = 0; i < 8; ++i) b.data()[i] = 0xFF;
  for (std::size_t i = 0; i < pin.size(); ++i) {
    if (pin[i] < '0' || pin[i] > '9') return make_error(Errc::bad_value, "a PIN has only digits");
    b.data()[i] = static_cast<std::uint8_t>(pin[i]);
  }
  return b;
}

Flow::Flow(TxnParams params, std::function<Bytes(std::size_t)> rng) : p_(std::move(params)), rng_(std::move(rng)) {}

Action Flow::start() {
  if (state_ != State::idle) return unexpected("start");
  if (auto v = validate(p_); !v) return decline("bad_parameters", v.error().message, false);
  state_ = State::waiting_card;
  Action a;
  a.kind = Action::wait_card;
  a.display = p_.mode == Mode::door ? "Tap card to open " + p_.door_id : "Tap card";
  return a;
}

Action Flow::on_card() {
  if (state_ != State::waiting_card) return unexpected("card");
  state_ = State::selecting;
  Action a;
  a.kind = Action::transmit;
  a.command = select_command();
  ++out_.apdu_exchanges;
  return a;
}

Action Flow::on_no_card(const Error& why) {
  if (state_ != State::waiting_card) return unexpected("no card");
  const bool absent = why.code == Errc::not_found || why.code == Errc::timeout;
  return decline(absent ? "no_card" : why.code == Errc::bad_value ? "card_error" : "reader_error", why.message, false);
}

Action Flow::send_authenticate(ByteView pin) {
  const Bytes nonce = rng_(8);
  if (nonce.size() != 8) return decline("internal", "the random source gave no 8-byte challenge", true);
  challenge_ = build_challenge(p_, nonce, {});
  pin_sent_ = !pin.empty();
  state_ = State::authenticating;
  Action a;
  a.kind = Action::transmit;
  a.command.cla = protocol::cla_proprietary;
  a.command.ins = protocol::ins(protocol::Ins::authenticate);
  a.command.data = pin.empty() ? challenge_ : build_challenge(p_, nonce, pin);
  a.command.ne = 256;
  ++out_.apdu_exchanges;
  return a;
}

Action Flow::on_response(const apdu::Response& r) {
  switch (state_) {
    case State::selecting: {
      if (r.sw != sw::ok) return card_refused("SELECT", r.sw);
      auto fci = protocol::Fci::parse(r.data);
      if (!fci) return decline("card_error", "the card's FCI is malformed (" + fci.error().message + ")", true);
      if (fci->version != protocol::version)
        return decline("card_error", "unsupported applet version " + to_hex(Bytes{fci->version}) + " (this terminal speaks 02)", true);
      if (fci->state == 0x03) return decline("card_blocked", "the card is blocked", true);
      if (fci->state != 0x02) return decline("card_not_activated", "the card is not activated", true);
      if (p_.atm) return send_verify({});  // the PIN's tries left (or blocked) first
      return send_authenticate({});
    }
    case State::pin_status:
    case State::verifying:
      return on_verify_response(r);
    case State::authenticating: {
      if (r.sw == sw::security_not_satisfied || (sw::is_tries_left(r.sw) && pin_sent_)) {
        std::string msg = "Enter PIN";
        if (sw::is_tries_left(r.sw)) {
          if (sw::tries_left(r.sw) == 0) return decline("pin_blocked", "wrong PIN; the PIN is now blocked", true);
          msg = "Wrong PIN, " + sw::tries_left_text(sw::tries_left(r.sw)) + ". Enter PIN";
        } else if (pin_sent_) {
          return decline("card_error", "the card refused the PIN block (6982)", true);
        }
        if (pin_attempts_ >= p_.max_pin_attempts)
          return decline("pin_required", "no correct PIN after " + std::to_string(pin_attempts_) + " entries", true);
        return ask_pin(std::move(msg));
      }
      if (r.sw != sw::ok) return card_refused("AUTHENTICATE", r.sw);
      auto answer = protocol::CardAnswer::parse(r.data);
      if (!answer) return decline("card_error", "the card's AUTHENTICATE answer is malformed (" + answer.error().message + ")", true);
      out_.list_id = answer->list_id;
      out_.index = answer->index;
      out_.atc = answer->atc;
      out_.card_hex = to_hex(answer->n);
      out_.pin_state = answer->pin_state;
      auth_body_ = auth_request_body(p_.txn_id, answer->n, out_.list_id, out_.index, out_.atc, out_.pin_state, challenge_,
                                     answer->cryptogram);
      state_ = State::authorizing;
      Action a;
      a.kind = Action::post_auth;
      a.body = auth_body_;
      a.display = "Authorizing...";
      ++out_.backend_attempts;
      return a;
    }
    case State::confirming:
      out_.card_confirmed = r.sw == sw::ok;
      return finish_to_removal({}, false);
    default:
      return unexpected("response");
  }
}

Action Flow::on_reader_error(const Error& why) {
  if (state_ == State::confirming) {
    // The decision stands (the backend made it); the card just did not record it.
    out_.card_confirmed = false;
    if (why.code == Errc::not_found) {
      state_ = State::done;
      Action a;
      a.kind = Action::done;
      return a;
    }
    return finish_to_removal({}, false);
  }
  if (state_ != State::selecting && state_ != State::authenticating && state_ != State::pin_status && state_ != State::verifying)
    return unexpected("reader error");
  auto [reason, in_field] = reader_reason(why);
  return decline(reason, why.message, in_field);
}

Action Flow::on_pin(const SecretBytes& pin) {
  if (state_ != State::pin_entry) return unexpected("PIN");
  ++pin_attempts_;
  auto block = pin_block(std::string_view(reinterpret_cast<const char*>(pin.data()), pin.size()));
  if (!block) {
    if (pin_attempts_ >= p_.max_pin_attempts) return decline("pin_required", block.error().message, true);
    return ask_pin("PIN must be 4 to 8 digits. Enter PIN");
  }
  if (p_.atm) return send_verify(block->view());
  return send_authenticate(block->view());
}

Action Flow::ask_pin(std::string prompt) {
  state_ = State::pin_entry;
  Action a;
  a.kind = Action::ask_pin;
  a.display = std::move(prompt);
  return a;
}

// ATM: VERIFY (ISO 7816-4, P2 80 = the card's PIN). With no data it asks the tries left.
Action Flow::send_verify(ByteView pin) {
  state_ = pin.empty() ? State::pin_status : State::verifying;
  Action a;
  a.kind = Action::transmit;
  a.command.cla = protocol::cla_iso;
  a.command.ins = protocol::ins(protocol::Ins::verify);
  a.command.p1 = 0x00;
  a.command.p2 = 0x80;
  a.command.data.assign(pin.begin(), pin.end());
  ++out_.apdu_exchanges;
  return a;
}

Action Flow::on_verify_response(const apdu::Response& r) {
  const bool asked_status = state_ == State::pin_status;
  // A blocked PIN never goes online: there is nothing the backend could approve.
  if (r.sw == sw::auth_method_blocked || (sw::is_tries_left(r.sw) && sw::tries_left(r.sw) == 0))
    return decline("pin_blocked", asked_status ? "the card's PIN is blocked" : "wrong PIN; the PIN is now blocked", true);
  if (r.sw == sw::ok && !asked_status) {
    state_ = State::amount_entry;
    Action a;
    a.kind = Action::ask_amount;
    a.display = "Enter amount";
    return a;
  }
  if (!sw::is_tries_left(r.sw) && !(asked_status && r.sw == sw::ok)) return card_refused("VERIFY", r.sw);
  if (pin_attempts_ >= p_.max_pin_attempts)
    return decline("pin_required", "no correct PIN after " + std::to_string(pin_attempts_) + " entries", true);
  if (asked_status) {
    const std::string left = sw::is_tries_left(r.sw) ? " (" + sw::tries_left_text(sw::tries_left(r.sw)) + ")" : "";
    return ask_pin("Enter PIN" + left);
  }
  return ask_pin("Wrong PIN, " + sw::tries_left_text(sw::tries_left(r.sw)) + ". Enter PIN");
}

Action Flow::on_amount(std::uint64_t amount) {
  if (state_ != State::amount_entry) return unexpected("amount");
  if (amount == 0 || amount > 999999999999ULL) return decline("bad_amount", "the amount must be 1 to 12 digits of minor units", true);
  p_.amount = amount;
  return send_authenticate({});
}

Action Flow::on_amount_cancelled() {
  if (state_ != State::amount_entry) return unexpected("amount cancelled");
  return decline("amount_cancelled", "no amount picked, or none the dispenser can pay", true);
}

Action Flow::on_pin_cancelled() {
  if (state_ != State::pin_entry) return unexpected("PIN cancelled");
  return decline("pin_cancelled", "PIN entry cancelled or timed out", true);
}

Action Flow::on_backend(const Result<std::string>& body) {
  if (state_ != State::authorizing && state_ != State::held && state_ != State::cancelling)
    return unexpected("backend answer");
  if (!body) {
    const bool transport = body.error().code == Errc::io || body.error().code == Errc::timeout;
    if (transport && out_.backend_attempts < p_.max_backend_attempts) {
      Action a;
      ++out_.backend_attempts;
      // Same txn_id and same body: the backend answers a retry with the stored decision.
      if (state_ == State::held) {
        a.kind = Action::poll_held;
        a.display = "Waiting for operator...";
      } else if (state_ == State::cancelling) {
        a.kind = Action::cancel_held;
      } else {
        a.kind = Action::post_auth;
        a.body = auth_body_;
        a.display = "Authorizing (retry " + std::to_string(out_.backend_attempts - 1) + ")...";
      }
      return a;
    }
    if (state_ == State::cancelling) return cancel_unconfirmed(body.error().message);
    // HTTP 429 (backend_body): declined and not stored, over the backend's decline budget.
    if (body.error().code == Errc::state) return decline("too_many_declines", body.error().message, true);
    // A conflict (HTTP 409: this txn_id was used with another request) decided nothing for
    // this request, and a reversal would undo the other one.
    out_.undecided = body.error().code != Errc::conflict;
    return decline(transport ? "backend_unreachable" : "backend_error", body.error().message, true);
  }
  auto ans = parse_answer(*body);
  if (!ans) {
    if (state_ == State::cancelling) return cancel_unconfirmed(ans.error().message);
    out_.undecided = true;
    return decline("malformed_answer", ans.error().message, true);
  }
  if (ans->txn_id != p_.txn_id) {
    const std::string why = "the backend answered for another transaction (" + ans->txn_id.substr(0, 64) + ")";
    if (state_ == State::cancelling) return cancel_unconfirmed(why);
    out_.undecided = true;
    return decline("malformed_answer", why, true);
  }
  out_.backend_attempts = 0;  // a good answer resets the transport-error budget (held polling)
  if (state_ == State::cancelling && ans->decision == Decision::held)
    return cancel_unconfirmed("the backend still holds the transaction after the cancel");
  return decide(*ans);
}

Action Flow::decide(const BackendAnswer& a) {
  out_.reason = a.reason;
  out_.auth_code = a.auth_code;
  if (a.decision == Decision::held) {
    out_.held_before = true;
    state_ = State::held;
    Action act;
    act.kind = Action::poll_held;
    act.display = "Waiting for operator...";
    if (a.expires_in) act.held_left = std::chrono::seconds(*a.expires_in);
    return act;
  }
  out_.decision = a.decision;
  out_.detail = a.decision == Decision::approved ? "approved by the backend" : "declined by the backend (" + a.reason + ")";
  std::string disp = a.decision == Decision::approved ? "APPROVED" : declined_display(a.reason);
  if (a.arpc.size() == 8 && a.arc.size() == 2) {
    state_ = State::confirming;
    Action act;
    act.kind = Action::transmit;
    act.command.cla = protocol::cla_proprietary;
    act.command.ins = protocol::ins(protocol::Ins::confirm);
    act.command.data = concat({a.arpc, a.arc});
    act.display = std::move(disp);
    act.decision_shown = true;
    ++out_.apdu_exchanges;
    return act;
  }
  return finish_to_removal(std::move(disp), true);
}

Action Flow::on_held_expired() {
  if (state_ != State::held) return unexpected("held limit");
  // The backend decides what the customer sees: an operator may have decided just before the
  // cancel arrived, and the answer then carries that decision (protocol.md §5.2).
  state_ = State::cancelling;
  out_.backend_attempts = 0;
  Action a;
  a.kind = Action::cancel_held;
  a.display = "No operator decision; cancelling...";
  return a;
}

Action Flow::cancel_unconfirmed(const std::string& why) {
  // No answer to the cancel: declined all the same. The terminal stopped waiting no later
  // than the backend's deadline, and the backend expires the transaction then; until then an
  // operator could still approve it, so the terminal also reverses it (undecided).
  out_.undecided = true;
  return decline("held_timeout", "no operator decision within the limit; the backend did not confirm the cancel (" + why +
                                     "), it declines the transaction at its deadline", true);
}

Action Flow::on_removed() {
  if (state_ != State::removing) return unexpected("card removed");
  state_ = State::done;
  Action a;
  a.kind = Action::done;
  return a;
}

Action Flow::decline(std::string reason, std::string detail, bool card_in_field) {
  out_.decision = Decision::declined;
  out_.reason = std::move(reason);
  out_.detail = std::move(detail);
  out_.auth_code.clear();
  std::string disp = declined_display(out_.reason);
  if (!card_in_field) {
    state_ = State::done;
    Action a;
    a.kind = Action::done;
    a.display = std::move(disp);
    a.decision_shown = true;
    return a;
  }
  return finish_to_removal(std::move(disp), true);
}

Action Flow::card_refused(const char* command, std::uint16_t status) {
  // One table (common/sw) says what each status word means and which reason it declines with.
  const sw::Meaning* m = sw::lookup(status);
  std::string detail = m && m->hint ? std::string(m->hint) : std::string(command) + " failed: " + sw::describe(status);
  return decline(sw::decline_reason(status), std::move(detail), true);
}

Action Flow::finish_to_removal(std::string display, bool decision) {
  state_ = State::removing;
  Action a;
  a.kind = Action::wait_removal;
  a.display = std::move(display);
  a.decision_shown = decision;
  return a;
}

Action Flow::unexpected(const char* event) {
  // A driver bug; never let it turn into an approval.
  if (state_ != State::done) {
    out_.decision = Decision::declined;
    out_.reason = "internal";
    out_.detail = std::string("unexpected event in this state: ") + event;
  }
  state_ = State::done;
  Action a;
  a.kind = Action::done;
  return a;
}

}  // namespace otac::terminal
