// otac-terminal: one OTAC transaction per invocation (or a service with --loop). See --help.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "otac/common/crypto.hpp"
#include "otac/common/cursor.hpp"
#include "otac/common/tlv.hpp"
#include "otac/sys/cli.hpp"
#include "otac/sys/file.hpp"
#include "otac/sys/log.hpp"
#include "otac/sys/secret_input.hpp"
#include "terminal/backend_json.hpp"
#include "terminal/backend_link.hpp"
#include "terminal/config.hpp"
#include "terminal/dispenser.hpp"
#include "terminal/driver.hpp"
#include "terminal/outcome_queue.hpp"
#include "terminal/reader.hpp"
#include "terminal/relay.hpp"

namespace {

using namespace otac;
using namespace otac::terminal;

constexpr int kOk = 0, kFail = 1, kUsage = 2;

// The text of --help after CLI11's list of the options and commands; config_keys() follows.
const char* kHelp = R"(
SYNOPSIS
  otac-terminal --config FILE pos [--amount 12.50] [--currency EUR] [--loop] [--txn-id ID]
  otac-terminal --config FILE door [--door ID] [--loop] [--txn-id ID]
  otac-terminal --config FILE code CODE [--door ID] [--card N] [--txn-id ID]
  otac-terminal --config FILE atm [--amount 50.00] [--currency EUR] [--loop] [--txn-id ID]
  otac-terminal --config FILE void --txn-id ID
  otac-terminal --config FILE refund --txn-id ID --amount AMOUNT
  otac-terminal --config FILE outcomes
  otac-terminal COMMAND --help
  otac-terminal --convert-config OLD-FILE > NEW-FILE
  pos, door and atm also take --save-request FILE. Each command takes its own options after
  its name; --config may come before or after it.

DESCRIPTION
  Reads an OTAC card through a contactless reader, asks the OTAC backend over mutually
  authenticated HTTPS, and shows the backend's decision. The terminal never approves on its
  own: if the backend cannot be reached, answers late, answers something malformed, or
  anything else is in doubt, the transaction is declined and the reason is shown.

  One tap runs: wait for a card; SELECT the OTAC application (AID F04F54414301); AUTHENTICATE
  with a fresh 8-byte random challenge bound to the amount, currency, date, time, terminal and
  door (if the card asks for its PIN, the keypad is asked and AUTHENTICATE is repeated with the
  PIN); POST the card's cryptogram to the backend; show the decision; hand the backend's
  response cryptogram (ARPC) to the card (CONFIRM); wait for the card to leave. Network
  retries reuse the same transaction id, so the backend never decides twice. A transaction
  the backend holds for review shows "waiting for operator" and waits up to held_wait_limit_s
  or until the backend's deadline, whichever comes first; then it cancels the transaction at
  the backend and shows the final answer (normally DECLINED (held_timeout)).

COMMANDS
  pos      A purchase. --amount AMOUNT (e.g. 12.50, in the currency's units) or, without it,
           an interactive prompt on standard input. --currency CODE overrides the config.
           The receipt line shows the masked card id, amount, decision, authorization code
           and time.
  door     Door entry for --door ID or the config's door_id. On approval the relay is pulsed
           (relay = gpiod or command); if the relay fails the door stays shut and the exit
           status is 1 (fail secure).
  atm      A cash withdrawal (9C 01): tap, the PIN keyed at the keypad and checked by the card
           (VERIFY: tries left shown from 63Cx; a blocked PIN declines without going online),
           the amount (--amount, or a prompt) checked against the dispenser's cassettes before
           going online, the cryptogram, the backend's decision, the payout through the
           dispenser (dispenser_socket), and the outcome report: completed, or reversed with
           the amount actually handed over (jam, partial dispense, shutter, notes retracted).
           The report is queued on disk (data_dir/outcomes/) before the payout and retried
           until the backend acknowledges it; a run killed mid-payout reverses on the next.
  void     Voids this terminal's last approved purchase --txn-id ID before the day closes.
  refund   Asks the backend to refund --amount of the purchase --txn-id ID; an operator
           approves or declines it (otac-admin refunds). Prints the request's state.
  outcomes Delivers the queued outcome reports (also done before and after every transaction).
  code     Checks a code typed from the card's display (8 digits) with the backend
           (POST /v1/codes/verify). The card id comes from --card N (16 hex digits) or, without
           it, from a tap (GET STATUS, no PIN needed). With --door ID (or mode = door in the
           config) an approval pulses the relay.

OPTIONS
  --config FILE  the configuration file (required; keys below).
  --amount AMOUNT
                 pos, atm: the amount in the currency's units (12.50); refund: the amount
                 to refund. Checked against the currency's decimals.
  --currency CODE
                 pos, atm: ISO 4217 code (EUR) or number (978) instead of the config's.
  --door ID      door, code: the door instead of the config's door_id.
  --card N       code: the card id, 16 hex digits, instead of a tap.
  --loop         pos, door, atm: run transactions until SIGINT/SIGTERM (a service).
  --txn-id ID    use this transaction id (1..64 of A-Z a-z 0-9 - _ . :) instead of a fresh
                 one; repeating an id replays the backend's stored answer. Required by void
                 and refund.
  --save-request FILE
                 pos, door, atm: write the JSON body of the last authorization request sent
                 to the backend to FILE (mode 0600), for incident reports and for replay
                 tests. It holds no secret: the cryptogram's code is burned on the card
                 before it is sent.
  --help         this text; COMMAND --help: that command's options.
  --version      the program's version.

OUTPUT
  Standard output gets two lines per transaction: one for people, e.g.
    2026-11-22T19:30:01Z POS APPROVED 12.50 EUR card ************0708 auth 123456 txn TERM0001-...
  and one JSON object for programs with the members txn_id, mode, decision, reason, detail,
  auth_code, card, card_masked, amount, currency, door, held, card_confirmed, door_opened,
  apdu_exchanges, backend_attempts, latency_ms, time, dispense, handed_minor, outcome,
  outcome_delivered. Display lines ("[display] ...") and prompts go to standard error, and so
  do logs, one key=value line per event (the format of every OTAC program):
    ts=2026-11-22T19:30:01.123Z level=info event=reader name=...

EXIT STATUS
  0 approved (and, for doors, the relay pulsed); 1 declined, held without a decision, or a
  device/network failure; 2 usage or configuration error (one line naming the option).

ENVIRONMENT
  LIBNFC_DEFAULT_DEVICE  the libnfc connstring when reader = libnfc.
  LIBNFC_LOG_LEVEL       libnfc's own logging (3 shows every frame).

)";

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

namespace slog = otac::sys::log;

// A failure or a notice in the log (otac/sys/log.hpp): never a secret.
void log_error(std::string_view event, const std::string& error) { slog::error(event, {{"error", error}}); }

struct Args {
  std::string config, command, amount, currency, door, card, code, txn_id, save_request;
  bool loop = false;
};

// Reads one line from fd within the timeout (byte by byte, so nothing beyond the line is consumed).
std::optional<std::string> read_line(int fd, unsigned timeout_s, std::size_t max_len) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (line.size() <= max_len) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r <= 0) return std::nullopt;
    char c = 0;
    if (::read(fd, &c, 1) != 1) return line.empty() ? std::nullopt : std::optional<std::string>(line);
    if (c == '\n') return line;
    if (c != '\r') line.push_back(c);
  }
  return std::nullopt;
}

std::optional<SecretBytes> read_pin(const Config& c, const std::string& prompt) {
  if (c.pin_source == PinSource::none) {
    log_error("pin_unavailable", "the card asks for a PIN but pin_source = none");
    return std::nullopt;
  }
  std::optional<std::string> line;
  if (c.pin_source == PinSource::tty) {
    const int fd = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
      log_error("pin_unavailable", "no terminal to read the PIN from (/dev/tty); set pin_source = stdin");
      return std::nullopt;
    }
    const std::string p = prompt + ": ";
    (void)!::write(fd, p.data(), p.size());
    {
      const otac::sys::EchoOff quiet(fd);  // ECHONL: the newline shows, the digits do not
      line = read_line(fd, c.pin_timeout_s, 16);
    }
    if (!line) (void)!::write(fd, "\n", 1);  // timed out: end the prompt's line
    ::close(fd);
  } else {
    std::cerr << prompt << ": " << std::flush;
    line = read_line(0, c.pin_timeout_s, 16);
  }
  if (!line) return std::nullopt;
  SecretBytes pin(as_bytes(*line));
  secure_zero(line->data(), line->size());
  return pin;
}

struct Now { std::tm tm{}; std::string iso; };
Now now_utc() {
  Now n;
  const std::time_t t = std::time(nullptr);
  gmtime_r(&t, &n.tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &n.tm);
  n.iso = buf;
  return n;
}

std::string fresh_txn_id(const std::string& terminal_id, const Now& n) {
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d%H%M%S", &n.tm);
  std::string id;
  for (const char c : terminal_id) id.push_back((std::isalnum(static_cast<unsigned char>(c)) || c == '-') ? c : '_');
  return id + "-" + buf + "-" + to_hex(crypto::random_bytes(4));
}

std::string mask(const std::string& card) {
  if (card.size() < 4) return card.empty() ? "unknown" : card;
  return std::string(card.size() - 4, '*') + card.substr(card.size() - 4);
}

struct Report {
  std::string mode, txn_id, time, amount, currency, door;
  Outcome out;
  bool door_opened = false;
  std::string dispense;          // atm: how the payout ended ("dispensed", "jam", ...), empty if none
  std::int64_t handed_minor = 0; // atm: what the customer got
  std::string outcome;           // the outcome reported after the decision, empty if none
  bool outcome_delivered = false;
  double latency_ms = -1;
};

int print_report(const Report& r) {
  const bool approved = r.out.decision == Decision::approved;
  std::string label = r.mode.empty() ? std::string("CODE") : r.mode;  // POS, DOOR, CODE, ATM, VOID, REFUND
  for (char& c : label) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string human = r.time + " " + label + " " + (approved ? "APPROVED" : "DECLINED");
  if (!r.amount.empty()) human += " " + r.amount + " " + r.currency;
  if (!r.dispense.empty()) human += " dispense " + r.dispense + " handed " + std::to_string(r.handed_minor);
  if (!r.outcome.empty()) human += " outcome " + r.outcome + (r.outcome_delivered ? "" : " (queued)");
  if (!r.door.empty()) human += " door " + r.door + (r.door_opened ? " opened" : "");
  human += " card " + mask(r.out.card_hex);
  if (approved) human += " auth " + r.out.auth_code;
  else human += " reason " + r.out.reason + (r.out.detail.empty() ? "" : " (" + r.out.detail + ")");
  if (!r.txn_id.empty()) human += " txn " + r.txn_id;  // none when no transaction started
  boost::json::object o;
  o["txn_id"] = r.txn_id;
  o["mode"] = r.mode;
  o["decision"] = approved ? "approved" : "declined";
  o["reason"] = r.out.reason;
  o["detail"] = r.out.detail;
  o["auth_code"] = r.out.auth_code;
  o["card"] = r.out.card_hex;
  o["card_masked"] = mask(r.out.card_hex);
  o["amount"] = r.amount;
  o["currency"] = r.currency;
  o["door"] = r.door;
  o["held"] = r.out.held_before;
  o["card_confirmed"] = r.out.card_confirmed;
  o["door_opened"] = r.door_opened;
  o["apdu_exchanges"] = r.out.apdu_exchanges;
  o["backend_attempts"] = r.out.backend_attempts;
  o["latency_ms"] = r.latency_ms;
  o["time"] = r.time;
  o["dispense"] = r.dispense;
  o["handed_minor"] = r.handed_minor;
  o["outcome"] = r.outcome;
  o["outcome_delivered"] = r.outcome_delivered;
  std::cout << human << "\n" << boost::json::serialize(o) << std::endl;
  if (r.mode == "door" || (r.mode == "code" && !r.door.empty())) return approved && r.door_opened ? kOk : kFail;
  if (r.mode == "atm") return approved && r.dispense == "dispensed" ? kOk : kFail;
  return approved ? kOk : kFail;
}

using Backend = BackendLink;

// --save-request: the body as sent, replacing the file atomically; a failure is logged and
// does not affect the transaction.
void save_request(const std::string& path, const std::string& body) {
  if (auto w = sys::write_file_atomic(path, body + "\n", {.mode = 0600}); !w)
    slog::warn("save_request_failed", {{"file", path}, {"error", w.error().message}});
}

// The outcome queue's delivery through the backend link, within the config's retry time.
OutcomeQueue::Delivery deliver_outcomes(OutcomeQueue& q, Backend& be, const Config& cfg, std::chrono::milliseconds budget) {
  auto d = q.deliver([&](const std::string& body) { return be.post("/v1/outcomes", body); },
                     std::min<std::chrono::milliseconds>(budget, std::chrono::seconds(cfg.outcome_retry_s)),
                     [](const std::string& what) { slog::warn("outcome_queue", {{"detail", what}}); });
  if (d.delivered + d.refused + d.left > 0)
    slog::info("outcomes", {{"delivered", std::to_string(d.delivered)}, {"refused", std::to_string(d.refused)},
                            {"queued", std::to_string(d.left)}});
  return d;
}

// Queues an outcome (durably) and tries to deliver the queue; fills the report's fields.
void report_outcome(Report& r, OutcomeQueue& q, Backend& be, const Config& cfg, const OutcomeReport& o) {
  r.outcome = o.outcome;
  if (auto w = q.put(o); !w) {
    slog::error("outcome_not_queued", {{"txn", o.txn_id}, {"error", w.error().message}});
    return;
  }
  deliver_outcomes(q, be, cfg, std::chrono::seconds(cfg.outcome_retry_s));
  auto left = q.pending();
  r.outcome_delivered = left && std::none_of(left->begin(), left->end(), [&](const OutcomeReport& x) { return x.txn_id == o.txn_id; });
}


// ATM: the amount from --amount or the keypad (standard input), checked against the cassettes
// before anything goes online; three tries at most.
std::optional<std::uint64_t> atm_amount(const Args& a, const Config& cfg, Dispenser& disp, const std::string& prompt) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::string text = a.amount;
    if (text.empty()) {
      std::cerr << prompt << " (" << cfg.currency_alpha << "): " << std::flush;
      auto line = read_line(0, 120, 20);
      if (!line) return std::nullopt;
      text = *line;
    }
    auto v = parse_amount(text, cfg.currency_exponent);
    auto cassettes = disp.cassettes();
    if (!cassettes) {
      log_error("dispenser_error", "the dispenser cannot be read: " + cassettes.error().message);
      return std::nullopt;
    }
    if (v && *v > 0 && payable(*cassettes, static_cast<std::int64_t>(*v))) return *v;
    std::cerr << "[display] " << (v ? "Amount not available from the notes loaded (" + dispenser::encode_cassettes(*cassettes) + ")"
                                    : v.error().message) << std::endl;
    if (!a.amount.empty()) return std::nullopt;
  }
  return std::nullopt;
}

// One tap in pos, door or atm mode.
int run_tap(const Args& a, Config& cfg, Reader& reader, Backend& be, std::uint64_t amount, const std::string& door,
            const std::string& txn_override, OutcomeQueue& queue, Dispenser* disp) {
  const Now n = now_utc();
  TxnParams p;
  p.mode = a.command == "door" ? Mode::door : Mode::pos;
  p.atm = a.command == "atm";
  p.txn_id = txn_override.empty() ? fresh_txn_id(cfg.terminal_id, n) : txn_override;
  p.terminal_id = cfg.terminal_id;
  p.amount = amount;
  p.currency = cfg.currency;
  p.door_id = door;
  p.txn_type = p.mode == Mode::door ? 0x90 : p.atm ? 0x01 : 0x00;
  p.year = n.tm.tm_year + 1900; p.month = n.tm.tm_mon + 1; p.day = n.tm.tm_mday;
  p.hour = n.tm.tm_hour; p.minute = n.tm.tm_min; p.second = n.tm.tm_sec;
  p.max_backend_attempts = static_cast<int>(cfg.backend_attempts);
  Flow flow(p, [](std::size_t k) { return crypto::random_bytes(k); });
  DriverIo io;
  io.reader = &reader;
  io.post = [&](const std::string& body) {
    if (!a.save_request.empty()) save_request(a.save_request, body);
    return be.post("/v1/authorizations", body);
  };
  io.poll = [&](const std::string& txn, unsigned w) { return be.poll(txn, w); };
  io.cancel = [&](const std::string& txn) { return be.post("/v1/authorizations/" + txn + "/cancel", ""); };
  io.pin = [&](const std::string& prompt) { return read_pin(cfg, prompt); };
  io.display = [](const std::string& line) { std::cerr << "[display] " << line << std::endl; };
  std::uint64_t picked = amount;
  if (disp) io.amount = [&](const std::string& prompt) {
    auto v = atm_amount(a, cfg, *disp, prompt);
    if (v) picked = *v;
    return v;
  };
  DriverLimits lim;
  lim.card_wait = Millis(cfg.card_wait_ms);
  lim.apdu_timeout = Millis(cfg.apdu_timeout_ms);
  lim.removal_wait = Millis(cfg.removal_wait_ms);
  lim.held_limit = std::chrono::seconds(cfg.held_wait_limit_s);
  TapTimes times;
  Report r;
  r.out = run_flow(flow, io, lim, &times);
  r.mode = a.command;
  r.txn_id = p.txn_id;
  r.time = n.iso;
  r.latency_ms = times.tap_to_decision_ms;
  const bool approved = r.out.decision == Decision::approved;
  if (p.mode == Mode::pos) {
    r.amount = format_amount(picked, cfg.currency_exponent);
    r.currency = cfg.currency_alpha;
  } else {
    r.door = door;
    if (approved) {
      auto pulse = pulse_relay(cfg, door);
      r.door_opened = pulse.ok();
      if (!pulse) log_error("relay_failed", pulse.error().message);
    }
  }
  if (approved && disp) {
    // The reversal of a payout that never finishes is on disk before the payout starts.
    if (auto w = queue.put({p.txn_id, "reversed", 0}); !w) {
      log_error("payout_refused", "cannot queue the reversal before the payout, not paying out: " + w.error().message);
      r.dispense = "not_started";
      report_outcome(r, queue, be, cfg, {p.txn_id, "reversed", 0});
      return print_report(r);
    }
    auto paid = disp->dispense(static_cast<std::int64_t>(picked), std::chrono::seconds(cfg.dispenser_take_s));
    if (!paid) log_error("dispenser_error", "the dispenser gave no result: " + paid.error().message);
    r.dispense = paid ? dispenser::status_name(paid->status) : "unknown";
    r.handed_minor = paid ? paid->handed_minor : 0;
    const bool full = paid && paid->status == dispenser::Status::dispensed && paid->handed_minor == static_cast<std::int64_t>(picked);
    report_outcome(r, queue, be, cfg, {p.txn_id, full ? "completed" : "reversed", r.handed_minor});
  } else if (approved && p.mode == Mode::door) {
    report_outcome(r, queue, be, cfg, {p.txn_id, r.door_opened ? "completed" : "not_opened", 0});
  } else if (approved) {
    report_outcome(r, queue, be, cfg, {p.txn_id, "completed", static_cast<std::int64_t>(picked)});
  } else if (r.out.undecided) {
    // The terminal gave up on the backend's decision (Outcome::undecided): the backend may
    // have approved, or an operator may still approve, so the transaction is reversed
    // (protocol.md §5.4); a retry of the same txn_id then reads declined "reversed".
    report_outcome(r, queue, be, cfg, {p.txn_id, "reversed", 0});
  }
  return print_report(r);
}

// void: the terminal's last purchase, before the day closes (the backend checks both).
int run_void(const Args& a, Config& cfg, Backend& be, OutcomeQueue& queue) {
  Report r;
  r.mode = "void";
  r.time = now_utc().iso;
  r.txn_id = a.txn_id;
  auto ans = be.post("/v1/outcomes", outcome_body({a.txn_id, "voided", 0}));
  if (ans && ans->find("\"voided\"") != std::string::npos) {
    r.out.decision = Decision::approved;
    r.out.reason = "voided";
    r.outcome = "voided";
    r.outcome_delivered = true;
  } else if (!ans && (ans.error().code == Errc::io || ans.error().code == Errc::timeout)) {
    report_outcome(r, queue, be, cfg, {a.txn_id, "voided", 0});  // retried until acknowledged
    r.out.reason = "void_queued";
    r.out.detail = ans.error().message;
  } else {
    r.out.reason = "void_refused";
    r.out.detail = ans ? *ans : ans.error().message;
  }
  return print_report(r);
}

// refund: asks the backend; an operator decides (GET /v1/refunds/TXN shows the state).
int run_refund(const Args& a, Config& cfg, Backend& be) {
  Report r;
  r.mode = "refund";
  r.time = now_utc().iso;
  r.txn_id = a.txn_id;
  auto amount = parse_amount(a.amount, cfg.currency_exponent);  // checked in main
  if (!amount) return kUsage;
  r.amount = format_amount(*amount, cfg.currency_exponent);
  r.currency = cfg.currency_alpha;
  boost::json::object body;
  body["txn_id"] = a.txn_id;
  body["amount_minor"] = *amount;
  auto ans = be.post("/v1/refunds", boost::json::serialize(body));
  if (!ans) {
    r.out.reason = "refund_refused";
    r.out.detail = ans.error().message;
    return print_report(r);
  }
  r.out.reason = ans->find("\"approved\"") != std::string::npos ? "refund_approved"
               : ans->find("\"declined\"") != std::string::npos ? "refund_declined" : "refund_pending";
  r.out.decision = r.out.reason == "refund_approved" ? Decision::approved : Decision::declined;
  r.out.detail = *ans;
  return print_report(r);
}

// Reads N from the card: SELECT, then GET STATUS (template E0, tag DF41).
Result<Bytes> read_card_id(Reader& reader, const Config& cfg) {
  if (auto w = reader.wait_card(Millis(cfg.card_wait_ms)); !w) return w.error();
  apdu::Command sel;
  sel.ins = protocol::ins(protocol::Ins::select); sel.p1 = 0x04;
  sel.data.assign(protocol::aid.begin(), protocol::aid.end());
  sel.ne = 256;
  auto s = transmit(reader, sel, Millis(cfg.apdu_timeout_ms));
  if (!s) return s.error();
  if (s->sw != 0x9000) return make_error(Errc::not_found, "the card has no OTAC application");
  apdu::Command st;
  st.cla = protocol::cla_proprietary; st.ins = protocol::ins(protocol::Ins::get_status); st.ne = 256;
  auto r = transmit(reader, st, Millis(cfg.apdu_timeout_ms));
  (void)reader.wait_removal(Millis(0));
  if (!r) return r.error();
  if (r->sw != 0x9000) return make_error(Errc::bad_value, "GET STATUS failed on the card");
  auto nodes = tlv::parse(r->data);
  const tlv::Node* e0 = nodes ? tlv::find(*nodes, 0xE0) : nullptr;
  const tlv::Node* id = e0 ? tlv::find(e0->children, 0xDF41) : nullptr;
  if (!id || id->value.size() != 8) return make_error(Errc::bad_value, "the card's status has no card id");
  return id->value;
}

int run_code(const Args& a, Config& cfg, Reader* reader, Backend& be, OutcomeQueue& queue) {
  const Now n = now_utc();
  Report r;
  r.mode = "code";
  r.time = n.iso;
  r.txn_id = a.txn_id.empty() ? fresh_txn_id(cfg.terminal_id, n) : a.txn_id;
  r.door = !a.door.empty() ? a.door : (cfg.door_mode ? cfg.door_id : "");
  Bytes card;
  if (!a.card.empty()) {
    auto c = from_hex(a.card);  // 16 hex digits: checked as the command line was parsed
    if (!c || c->size() != 8) return kUsage;
    card = *c;
  } else {
    auto c = read_card_id(*reader, cfg);
    if (!c) {
      r.out.reason = c.error().code == Errc::not_found ? "no_card" : "card_error";
      r.out.detail = c.error().message;
      return print_report(r);
    }
    card = *c;
  }
  r.out.card_hex = to_hex(card);
  const std::string body = code_request_body(r.txn_id, card, a.code, r.door);
  Result<std::string> ans = make_error(Errc::internal, "not sent");
  for (unsigned i = 0; i < cfg.backend_attempts; ++i) {
    ++r.out.backend_attempts;
    ans = be.post("/v1/codes/verify", body);  // same txn_id on every attempt
    if (ans || (ans.error().code != Errc::io && ans.error().code != Errc::timeout)) break;
  }
  if (!ans) {
    const bool net = ans.error().code == Errc::io || ans.error().code == Errc::timeout;
    r.out.reason = net ? "backend_unreachable" : "backend_error";
    r.out.detail = ans.error().message;
    // The code may have been accepted: undone, unless the txn_id belongs to another request (409).
    if (ans.error().code != Errc::conflict) report_outcome(r, queue, be, cfg, {r.txn_id, "reversed", 0});
    return print_report(r);
  }
  auto parsed = parse_answer(*ans, false);
  if (!parsed || parsed->txn_id != r.txn_id) {
    r.out.reason = "malformed_answer";
    r.out.detail = parsed ? "answer for another transaction" : parsed.error().message;
    report_outcome(r, queue, be, cfg, {r.txn_id, "reversed", 0});
    return print_report(r);
  }
  r.out.decision = parsed->decision == Decision::approved ? Decision::approved : Decision::declined;
  r.out.reason = parsed->reason;
  r.out.auth_code = parsed->auth_code;
  if (r.out.decision == Decision::approved && !r.door.empty()) {
    auto pulse = pulse_relay(cfg, r.door);
    r.door_opened = pulse.ok();
    if (!pulse) log_error("relay_failed", pulse.error().message);
  }
  return print_report(r);
}

// The command line through CLI11 (otac/sys/cli.hpp): each command with its own options,
// checked as far as they can be without the configuration.
struct CommandLine {
  CLI::App app{"The OTAC payment and door terminal: one transaction per run, or a service with --loop.",
               "otac-terminal"};
  Args a;
  std::vector<CLI::App*> commands;

  CommandLine() {
    otac::sys::cli_defaults(app);
    app.require_subcommand(1);
    app.footer(std::string(kHelp) + config_keys());
    app.add_option("--config", a.config, "the configuration file (keys below)")->type_name("FILE")->required();
    paying("pos", "a purchase");
    auto* door = command("door", "door entry; the relay is pulsed on approval");
    door_id(door);
    loop(door);
    txn_id(door, false);
    save_request(door);
    auto* code = command("code", "checks a code typed from the card's display");
    code->add_option("CODE", a.code, "the 8 digits the card shows")->required()->check([](const std::string& v) {
      return v.size() == 8 && v.find_first_not_of("0123456789") == std::string::npos ? std::string()
                                                                                     : std::string("needs 8 digits");
    });
    door_id(code);
    code->add_option("--card", a.card, "the card id (16 hex digits) instead of a tap")
        ->type_name("N")
        ->check([](const std::string& v) {
          auto c = from_hex(v);
          return c && c->size() == 8 ? std::string() : std::string("needs 16 hex digits");
        });
    txn_id(code, false);
    paying("atm", "a cash withdrawal through the dispenser");
    txn_id(command("void", "voids this terminal's last purchase, --txn-id, before the day closes"), true);
    auto* refund = command("refund", "asks the backend to refund --amount of the purchase --txn-id");
    txn_id(refund, true);
    amount(refund, true);
    command("outcomes", "delivers the queued outcome reports");
  }

  CLI::App* command(const char* name, const char* summary) {
    CLI::App* c = app.add_subcommand(name, summary);
    c->fallthrough();  // --config also after the command
    c->footer("otac-terminal --help describes every command, option and configuration key.");
    commands.push_back(c);
    return c;
  }
  // pos and atm: an amount in a currency, one tap or a service.
  void paying(const char* name, const char* summary) {
    CLI::App* c = command(name, summary);
    amount(c, false);
    currency(c);
    loop(c);
    txn_id(c, false);
    save_request(c);
  }
  void amount(CLI::App* c, bool required) {
    auto* o = c->add_option("--amount", a.amount, "in the currency's units, e.g. 12.50")->type_name("AMOUNT");
    o->check([](const std::string& v) {  // the decimals are checked against the currency later
      return !v.empty() && v.find_first_not_of("0123456789.") == std::string::npos ? std::string()
                                                                                     : std::string("needs an amount such as 12.50");
    });
    if (required) o->required();
  }
  void currency(CLI::App* c) {
    c->add_option("--currency", a.currency, "ISO 4217 code or number instead of the config's")->type_name("CODE");
  }
  void door_id(CLI::App* c) { c->add_option("--door", a.door, "the door instead of the config's door_id")->type_name("ID"); }
  void loop(CLI::App* c) { c->add_flag("--loop", a.loop, "run transactions until SIGINT or SIGTERM"); }
  void txn_id(CLI::App* c, bool required) {
    auto* o = c->add_option("--txn-id", a.txn_id, "this transaction id instead of a fresh one")->type_name("ID");
    o->check([](const std::string& v) {
      const bool ok = !v.empty() && v.size() <= 64 &&
                      std::all_of(v.begin(), v.end(), [](char ch) {
                        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.' || ch == ':';
                      });
      return ok ? std::string() : std::string("needs 1..64 of A-Z a-z 0-9 - _ . :");
    });
    if (required) o->required();
  }
  void save_request(CLI::App* c) {
    c->add_option("--save-request", a.save_request, "write the last authorization request here (0600)")->type_name("FILE");
  }
};

}  // namespace

int main(int argc, char** argv) {
  // Before CLI11, which requires a command: docs/operations.md "Config files".
  if (argc >= 2 && std::string_view(argv[1]) == "--convert-config") {
    if (argc != 3) { std::cerr << "otac-terminal: --convert-config needs the old config file\n"; return kUsage; }
    auto toml = convert_config(argv[2]);
    if (!toml) { log_error("config_error", toml.error().message); return kFail; }
    std::cout << *toml;
    return kOk;
  }
  CommandLine cl;
  try {
    cl.app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return otac::sys::cli_exit(cl.app, e);
  }
  const CLI::App& app = cl.app;
  Args* args = &cl.a;
  for (const CLI::App* c : cl.commands)
    if (c->parsed()) args->command = c->get_name();
  auto cfg = load_config(args->config);
  if (!cfg) {
    log_error("config_error", cfg.error().message);
    return kUsage;
  }
  if (!args->currency.empty()) {
    if (auto c = lookup_currency(args->currency, cfg->currency, cfg->currency_alpha, cfg->currency_exponent); !c)
      return otac::sys::cli_usage_error(app, "--currency: " + c.error().message);
  }
  std::string door = args->door.empty() ? cfg->door_id : args->door;
  if (args->command == "door" && door.empty())
    return otac::sys::cli_usage_error(app, "--door: door mode needs --door ID or door_id in the config");
  if (args->command != "door" && args->command != "code") door.clear();
  std::optional<std::uint64_t> amount;
  if (!args->amount.empty()) {  // pos, atm, refund: the decimals the currency has
    auto v = parse_amount(args->amount, cfg->currency_exponent);
    if (!v) return otac::sys::cli_usage_error(app, "--amount: " + v.error().message);
    amount = *v;
  }
  ::signal(SIGINT, on_signal);
  ::signal(SIGTERM, on_signal);
  ::signal(SIGPIPE, SIG_IGN);

  auto link = BackendLink::create(*cfg);
  if (!link) { log_error("backend_link_failed", link.error().message); return kFail; }
  Backend& be = **link;
  OutcomeQueue queue(cfg->data_dir);
  // Reports a run before this one left (backend down, or killed mid-payout) go first.
  const auto replay = deliver_outcomes(queue, be, *cfg, std::chrono::seconds(cfg->outcome_retry_s));
  if (args->command == "outcomes") return replay.left == 0 && replay.refused == 0 ? kOk : kFail;
  if (args->command == "void") return run_void(*args, *cfg, be, queue);
  if (args->command == "refund") return run_refund(*args, *cfg, be);
  std::unique_ptr<Dispenser> disp;
  if (args->command == "atm") {
    auto d = open_socket_dispenser(cfg->dispenser_socket, std::chrono::milliseconds(5000));
    if (!d) { log_error("dispenser_error", d.error().message); return kUsage; }
    disp = std::move(*d);
  }

  std::unique_ptr<Reader> reader;
  if (!(args->command == "code" && !args->card.empty())) {
    auto r = open_reader(cfg->reader);
    if (!r) {
      // No transaction can start; still one report, so that scripts see why.
      log_error("reader_error", r.error().message);
      Report rep;
      rep.mode = args->command;
      rep.time = now_utc().iso;
      rep.txn_id = args->txn_id;
      rep.out.reason = "reader_error";
      rep.out.detail = r.error().message;
      print_report(rep);
      return kFail;
    }
    reader = std::move(*r);
    slog::info("reader", {{"name", reader->name()}});
  }
  if (args->command == "code") return run_code(*args, *cfg, reader.get(), be, queue);

  int status = kFail;
  // --loop: bounded by signals; each tap is bounded by the config's limits.
  for (long i = 0; i < (args->loop ? 1000000000L : 1L) && !g_stop; ++i) {
    std::uint64_t amt = 0;
    if (args->command == "pos") {
      if (amount) {
        amt = *amount;
      } else {
        std::cerr << "Amount (" << cfg->currency_alpha << "): " << std::flush;
        auto line = read_line(0, 300, 20);
        if (!line) { log_error("no_amount", "no amount entered"); return args->loop ? status : kUsage; }
        auto v = parse_amount(*line, cfg->currency_exponent);
        if (!v) { log_error("bad_amount", v.error().message); if (args->loop) continue; return kUsage; }
        amt = *v;
      }
    }
    // The service keeps its connection warm: one the backend closed while idle (30 s) is
    // reopened, with TLS session resumption, before the card arrives rather than during the tap.
    if (args->loop) {
      if (auto w = be.warm(); !w) slog::warn("backend_not_reachable", {{"error", w.error().message}});
    }
    status = run_tap(*args, *cfg, *reader, be, amt, door, args->loop ? std::string() : args->txn_id, queue, disp.get());
  }
  return status;
}
