#include "terminal/flow.hpp"

#include <utility>

#include "otac/common/cursor.hpp"
#include "otac/common/sw.hpp"
#include "otac/common/tlv.hpp"

namespace otac::terminal {

namespace {

// n digits of v as packed BCD in n/2 bytes (n even).
Bytes bcd(std::uint64_t v, std::size_t digits) {
  Bytes out(digits / 2, 0);
  for (std::size_t i = out.size(); i-- > 0;) {
    const auto lo = static_cast<std::uint8_t>(v % 10);
    v /= 10;
    const auto hi = static_cast<std::uint8_t>(v % 10);
    v /= 10;
    out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return out;
}

Bytes bcd3(int a, int b, int c) {
  return bcd(static_cast<std::uint64_t>(a % 100) * 10000 + static_cast<std::uint64_t>(b) * 100 +
             static_cast<std::uint64_t>(c), 6);
}

bool printable(std::string_view s) {
  for (const char c : s)
    if (c < 0x20 || c > 0x7E) return false;
  return true;
}

apdu::Command select_command() {
  apdu::Command c;
  c.cla = 0x00; c.ins = 0xA4; c.p1 = 0x04; c.p2 = 0x00;
  c.data.assign(std::begin(kAid), std::end(kAid));
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
  Bytes out;
  tlv::append(out, 0xDF33, Bytes{kProtocolVersion});
  tlv::append(out, 0xDF31, Bytes{static_cast<std::uint8_t>(p.mode)});
  tlv::append(out, 0x9F37, nonce);
  tlv::append(out, 0x9F02, bcd(p.amount, 12));
  tlv::append(out, 0x5F2A, bcd(p.currency, 4));
  tlv::append(out, 0x9A, bcd3(p.year, p.month, p.day));
  tlv::append(out, 0x9F21, bcd3(p.hour, p.minute, p.second));
  tlv::append(out, 0x9C, Bytes{p.txn_type});
  tlv::append(out, 0x9F1C, as_bytes(p.terminal_id));
  if (p.mode == Mode::door) tlv::append(out, 0xDF32, as_bytes(p.door_id));
  if (!pin_block.empty()) tlv::append(out, 0xDF34, pin_block);
  return out;
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
  a.command.cla = 0x80;
  a.command.ins = 0xA0;
  a.command.data = pin.empty() ? challenge_ : build_challenge(p_, nonce, pin);
  a.command.ne = 256;
  ++out_.apdu_exchanges;
  return a;
}

Action Flow::on_response(const apdu::Response& r) {
  switch (state_) {
    case State::selecting: {
      if (r.sw == sw::file_not_found) return decline("not_otac_card", "the card has no OTAC application (6A82)", true);
      if (r.sw != sw::ok) return decline("card_error", "SELECT failed: " + sw::describe(r.sw), true);
      auto nodes = tlv::parse(r.data);
      const tlv::Node* fci = nodes ? tlv::find(*nodes, 0x6F) : nullptr;
      const tlv::Node* aid = fci ? tlv::find(fci->children, 0x84) : nullptr;
      const tlv::Node* prop = fci ? tlv::find(fci->children, 0xA5) : nullptr;
      const tlv::Node* ver = prop ? tlv::find(prop->children, 0x9F08) : nullptr;
      const tlv::Node* st = prop ? tlv::find(prop->children, 0xDF02) : nullptr;
      if (!aid || !ver || !st || nodes->size() != 1 || aid->value != Bytes(std::begin(kAid), std::end(kAid)) ||
          st->value.size() != 1)
        return decline("card_error", "the card's FCI is malformed", true);
      if (ver->value != Bytes{kProtocolVersion})
        return decline("card_error", "unsupported applet version " + to_hex(ver->value) + " (this terminal speaks 02)", true);
      if (st->value[0] == 0x03) return decline("card_blocked", "the card is blocked", true);
      if (st->value[0] != 0x02) return decline("card_not_activated", "the card is not activated", true);
      return send_authenticate({});
    }
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
        state_ = State::pin_entry;
        Action a;
        a.kind = Action::ask_pin;
        a.display = msg;
        return a;
      }
      if (r.sw == sw::auth_method_blocked) return decline("pin_blocked", "the card's PIN is blocked", true);
      if (r.sw == sw::not_enough_memory) return decline("no_codes", "the card has no unused code left; wait for a list refresh", true);
      if (r.sw == sw::conditions_not_satisfied) return decline("card_not_usable", "the card cannot authenticate now (6985: no list or blocked)", true);
      if (r.sw != sw::ok) return decline("card_error", "AUTHENTICATE failed: " + sw::describe(r.sw), true);
      auto nodes = tlv::parse(r.data);
      const tlv::Node* t = nodes && nodes->size() == 1 ? tlv::find(*nodes, 0x77) : nullptr;
      const tlv::Node* n = t ? tlv::find(t->children, 0xDF41) : nullptr;
      const tlv::Node* l = t ? tlv::find(t->children, 0xDF42) : nullptr;
      const tlv::Node* i = t ? tlv::find(t->children, 0xDF43) : nullptr;
      const tlv::Node* c = t ? tlv::find(t->children, 0x9F36) : nullptr;
      const tlv::Node* g = t ? tlv::find(t->children, 0x9F26) : nullptr;
      const tlv::Node* ps = t ? tlv::find(t->children, 0xDF35) : nullptr;
      if (!n || !l || !i || !c || !g || !ps || n->value.size() != 8 || g->value.size() != 8 || ps->value.size() != 1)
        return decline("card_error", "the card's AUTHENTICATE answer is malformed", true);
      Cursor cl(l->value, "DF42"), ci(i->value, "DF43"), cc(c->value, "9F36");
      out_.list_id = cl.u16("list id");
      out_.index = ci.u16("index");
      out_.atc = cc.u16("ATC");
      if (!cl.finish() || !ci.finish() || !cc.finish())
        return decline("card_error", "the card's AUTHENTICATE answer has wrong field lengths", true);
      out_.card_hex = to_hex(n->value);
      out_.pin_state = ps->value[0];
      auth_body_ = auth_request_body(p_.txn_id, n->value, out_.list_id, out_.index, out_.atc, out_.pin_state, challenge_,
                                     g->value);
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
  if (state_ != State::selecting && state_ != State::authenticating) return unexpected("reader error");
  auto [reason, in_field] = reader_reason(why);
  return decline(reason, why.message, in_field);
}

Action Flow::on_pin(const SecretBytes& pin) {
  if (state_ != State::pin_entry) return unexpected("PIN");
  ++pin_attempts_;
  auto block = pin_block(std::string_view(reinterpret_cast<const char*>(pin.data()), pin.size()));
  if (!block) {
    if (pin_attempts_ >= p_.max_pin_attempts) return decline("pin_required", block.error().message, true);
    Action a;
    a.kind = Action::ask_pin;
    a.display = "PIN must be 4 to 8 digits. Enter PIN";
    return a;
  }
  return send_authenticate(block->view());
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
    return decline(transport ? "backend_unreachable" : "backend_error", body.error().message, true);
  }
  auto ans = parse_answer(*body);
  if (!ans) {
    if (state_ == State::cancelling) return cancel_unconfirmed(ans.error().message);
    return decline("malformed_answer", ans.error().message, true);
  }
  if (ans->txn_id != p_.txn_id) {
    const std::string why = "the backend answered for another transaction (" + ans->txn_id.substr(0, 64) + ")";
    if (state_ == State::cancelling) return cancel_unconfirmed(why);
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
    act.command.cla = 0x80;
    act.command.ins = 0xA2;
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
  // than the backend's deadline, and the backend expires the transaction then.
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
