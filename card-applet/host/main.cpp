// otac-card: runs the OTAC applet as a virtual card (vicc client toward pcscd's vpcd or the
// PN532 emulator) and as a virtual phone (fake-SMSC client toward Kannel), and offers the
// user's menu as subcommands that act on the same state file under a file lock.
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "host.hpp"
#include "otac/applet/applet.hpp"
#include "otac/applet/sms_lite.hpp"
#include "otac/common/protocol.hpp"
#include "otac/common/apdu.hpp"
#include "otac/common/number.hpp"
#include "otac/common/secret.hpp"
#include "otac/common/sw.hpp"
#include "otac/common/tlv.hpp"
#include "otac/sys/cli.hpp"
#include "otac/sys/log.hpp"
#include "otac/sys/secret_input.hpp"

namespace {

using namespace otac;
using namespace otac::card_host;
using Clock = std::chrono::steady_clock;

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

constexpr const char* kUsage = R"(USAGE
  otac-card run --state FILE [--vicc HOST:PORT] [--smsc HOST:PORT --msisdn NUMBER]
  otac-card init --state FILE [--force]
  otac-card activate --state FILE [--pin-fd N]
            (--n HEX --k-file FILE --alg des3|aes --server-number NUMBER | --letter FILE)
            [--ca-key HEX] [--threshold N] [--pin-limit MINOR_UNITS] [--pin-door ID]...
  otac-card status --state FILE
  otac-card verify --state FILE [--pin-fd N]
  otac-card code --state FILE [--pin-fd N]
  otac-card refresh --state FILE [--pin-fd N]
  otac-card keygen --state FILE [--pin-fd N] --alg rsa|p256
  otac-card change-pin --state FILE [--pin-fd N]
  otac-card unblock --state FILE [--pin-fd N]

DESCRIPTION
  The card's whole memory lives in the state file (mode 0600; it holds the card key and the
  codes, as a card's EEPROM does). Every change is committed atomically: the file keeps two
  copies, and a change overwrites the older one and is synced to disk before the card
  answers; a copy cut by a power loss fails its checksum and the other copy is read. Every
  command holds an exclusive lock on FILE.lock, so the menu commands may run while the
  daemon does.

  run       The daemon. With --vicc it connects to a vpcd reader (pcscd's virtual reader,
            see pcscd.sh) or to otac-pn532-emu's card port, as the card in the field:
            2-byte length framing, control bytes 00 off, 01 on, 02 reset, 04 ATR. It
            reconnects with a backoff from 0.1 s up to 2 s. With --smsc and --msisdn it
            connects to Kannel's fake-SMSC port as the phone network: every MT message for
            NUMBER goes into the card as ENVELOPE (SMS-PP download); the card's Proof of
            Receipt and its queued requests (FETCH) go back as MO messages. SIGTERM or
            SIGINT stop it.
  init      Creates a blank card (no PIN). Refuses an existing file unless --force.
  activate  First activation: sets the PIN on a blank card (or verifies it), then loads N, K,
            the algorithm and the server's SMS number (from the options or from the
            initialization letter printed by otac-admin enroll) and the PUK (4-8 digits).
            --ca-key (or the letter's "Card CA key" line) is the backend's card CA, a P-256
            point of 130 hex digits (04 || X || Y); the card then accepts the server's
            signing key (E4) only when this CA signed it. --ca-key wins over the letter.
            The card queues its initialization message; the daemon sends it.
  status    Life cycle, N, active list, unused codes, counter, key version, refresh state.
  verify    Checks the PIN (tries left are shown on failure).
  code      Display mode: burns the next code and prints its 8-digit form for typing.
  refresh   Asks the server for a new list (queued; the daemon sends it).
  keygen    Asymmetric mode: the card generates its own key pair (GENERATE KEY PAIR, RSA-2048
            or P-256; the private key never leaves the card) and prints the public key as a
            DER SubjectPublicKeyInfo in hex on stdout, for `otac-admin enroll --public-key`.
            Run it before activate: it sets the PIN on a blank card (or verifies it); a
            second keygen replaces the pair, and the backend must then enroll the new key.
            The backend then sends this card its lists encrypted to this key and signed by
            the server key (E5); activate still needs the letter's K, which protects the SMS.
  change-pin, unblock
            Change the PIN; set a new PIN with the PUK after the PIN blocked.

SECRETS
  PINs are 4 to 8 digits, the PUK too. They are never arguments: on a terminal the command
  asks for them with echo off (a new PIN twice); scripted, it reads one line each from
  standard input, or from descriptor N with --pin-fd N, in this order:
    activate: PIN, PUK          change-pin: PIN, new PIN      unblock: PUK, new PIN
    verify, code, refresh, keygen: PIN
  K comes from the letter (--letter) or from a file (--k-file: 32 hex digits, mode 0600).
  The old --pin, --puk, --new-pin and --k arguments still work but are deprecated and warn:
  ps and the shell history show them. Keys and PINs never appear in the log.

EXIT STATUS
  0 success, 1 failure (the message says what and what to do), 2 usage error.
)";

// One line per event in the format of every OTAC program (otac/sys/log.hpp): the part before
// "vicc: ", "smsc: " or "sms: " names the event, "warning: " makes it a warning, and the whole
// message goes into msg. Never pass secrets.
void log(const std::string& msg) {
  std::string event = "card";
  for (const char* link : {"vicc", "smsc", "sms"})
    if (msg.rfind(std::string(link) + ": ", 0) == 0) event = link;
  const bool warning = msg.rfind("warning: ", 0) == 0;
  sys::log::write(warning ? "warn" : "info", event, {{"msg", warning ? msg.substr(9) : msg}});
}

struct UsageError {
  std::string message;
};

// One subcommand's options as CLI11 parsed them (main): each option's values in command-line
// order (only --pin-door may repeat), flags with the value "1".
struct Args {
  std::string command;
  std::map<std::string, std::vector<std::string>> opts;

  bool has(const std::string& k) const { return opts.count(k) != 0; }
  std::string get(const std::string& k) const {
    auto it = opts.find(k);
    if (it == opts.end()) throw UsageError{"option --" + k + " is required"};
    return it->second.back();
  }
  std::string get_or(const std::string& k, const std::string& def) const { return has(k) ? get(k) : def; }
};

// A whole-number option from 0 to max; anything else is a usage error naming the option.
std::uint64_t number_option(const Args& a, const std::string& k, std::uint64_t max) {
  auto v = parse_uint(a.get(k), 0, max);
  if (!v) throw UsageError{"--" + k + ": " + v.error().message};
  return *v;
}

struct Failure {
  std::string message;
};

// An exclusive lock on STATE.lock for the lifetime of the object. The state file itself is
// replaced by rename when it is created or laid out again, so the lock lives on a separate,
// stable file.
class StateLock {
 public:
  explicit StateLock(const std::filesystem::path& state) : fd_(::open((state.string() + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (!fd_) throw Failure{"cannot open lock file " + state.string() + ".lock: " + std::strerror(errno)};
    for (int i = 0; i < 100; ++i) {  // at most ~10 s: a menu command never waits forever
      if (::flock(fd_.get(), LOCK_EX | LOCK_NB) == 0) return;
      ::usleep(100'000);
    }
    throw Failure{"the state file " + state.string() + " stays locked by another otac-card; try again"};
  }
  ~StateLock() { if (fd_) ::flock(fd_.get(), LOCK_UN); }
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;

 private:
  Fd fd_;
};

// The 8-byte PIN block: the digits in ASCII, padded with FF.
Bytes pin_block(const SecretBytes& pin, const char* what) {
  bool digits = pin.size() >= 4 && pin.size() <= 8;
  for (std::size_t i = 0; digits && i < pin.size(); ++i) digits = pin.data()[i] >= '0' && pin.data()[i] <= '9';
  if (!digits) throw UsageError{std::string(what) + " must be 4 to 8 digits"};
  Bytes b(pin.data(), pin.data() + pin.size());
  b.resize(8, 0xFF);
  return b;
}

// The PINs and PUK of one command, in the order it asks for them. A deprecated --pin/--puk/
// --new-pin argument wins (with a warning once per option); otherwise the terminal, standard
// input or --pin-fd N (see SECRETS in the usage).
class Secrets {
 public:
  explicit Secrets(const Args& a) : args_(a), reader_(fd_option(a)) {}

  // option: the deprecated argument's name ("pin"); what: the name in prompts ("PIN").
  // confirm: a PIN being set, asked twice when typed at a terminal.
  Bytes block(const char* option, const char* what, bool confirm = false) {
    if (args_.has(option)) {
      log(std::string("warning: --") + option + " puts the " + what +
                  " on the command line, where ps and the shell history show it; it is deprecated: type it when asked, "
                  "or give it on standard input or with --pin-fd");
      const std::string v = args_.get(option);
      return pin_block(SecretBytes(as_bytes(v)), ("--" + std::string(option)).c_str());
    }
    auto first = reader_.read(what, 16);
    // No secret given at all is a usage error, like a missing option.
    if (!first && first.error().code == Errc::truncated) throw UsageError{first.error().message};
    if (!first) throw Failure{first.error().message};
    if (confirm && reader_.interactive()) {
      auto again = reader_.read(std::string(what) + " again", 16);
      if (!again) throw Failure{again.error().message};
      if (!ct_equal(first->view(), again->view())) throw UsageError{std::string("the two ") + what + "s differ"};
    }
    return pin_block(*first, what);
  }

 private:
  static int fd_option(const Args& a) {
    if (!a.has("pin-fd")) return -1;
    auto v = parse_uint(a.get("pin-fd"), 0, 1023);
    if (!v) throw UsageError{"--pin-fd: " + v.error().message};
    return static_cast<int>(*v);
  }

  const Args& args_;
  sys::SecretReader reader_;
};

apdu::Response transmit(applet::Applet& app, std::uint8_t cla, std::uint8_t ins, std::uint8_t p1, std::uint8_t p2,
                        const Bytes& data = {}, bool le = false) {
  apdu::Command c{cla, ins, p1, p2, data, le ? std::optional<std::uint32_t>(256) : std::nullopt, false};
  auto raw = apdu::encode(c);
  if (!raw) throw Failure{"cannot encode APDU: " + raw.error().message};
  auto r = apdu::parse_response(app.process(*raw));
  secure_zero(raw->data(), raw->size());  // may hold K, a PIN block or a PUK
  if (!r) throw Failure{"card answered garbage"};
  return *r;
}

void expect_ok(const apdu::Response& r, const std::string& what) {
  if (r.sw == sw::ok) return;
  std::string hint;
  if (sw::is_tries_left(r.sw)) hint = "; wrong PIN or PUK, " + sw::tries_left_text(sw::tries_left(r.sw));
  else if (r.sw == sw::auth_method_blocked) hint = "; blocked: unblock with the PUK (otac-card unblock)";
  else if (r.sw == sw::security_not_satisfied) hint = "; the PIN is needed";
  else if (r.sw == sw::conditions_not_satisfied) hint = "; not possible in the card's current state (see otac-card status)";
  else if (r.sw == sw::not_enough_memory) hint = "; no unused code left: request a refresh";
  else if (r.sw == sw::no_precise_diagnosis) hint = "; the state file could not be read or written";
  throw Failure{what + " failed: " + sw::describe(r.sw) + hint};
}

// A menu session: lock, storage, a fresh logical channel, the applet selected.
struct Session {
  std::filesystem::path path;
  StateLock lock;
  applet::FileStorage storage;
  applet::Applet app;
  Bytes fci;
  explicit Session(const std::filesystem::path& p) : path(p), lock(p), storage(p), app(storage) {
    if (!std::filesystem::exists(p)) throw Failure{"no card state at " + p.string() + "; create one with `otac-card init --state " + p.string() + "`"};
    auto r = transmit(app, 0x00, 0xA4, 0x04, 0x00, Bytes(protocol::aid.begin(), protocol::aid.end()), true);
    expect_ok(r, "SELECT");
    fci = r.data;
  }
  std::uint8_t life() const {
    auto nodes = tlv::parse(fci);
    if (!nodes || nodes->empty()) return 0xFF;
    const tlv::Node* a5 = tlv::find((*nodes)[0].children, 0xA5);
    const tlv::Node* st = a5 ? tlv::find(a5->children, 0xDF02) : nullptr;
    return st && st->value.size() == 1 ? st->value[0] : 0xFF;
  }
  void verify(const Bytes& pin_blk) { expect_ok(transmit(app, 0x00, 0x20, 0x00, 0x80, pin_blk), "VERIFY"); }
};

const char* life_name(std::uint8_t l) {
  switch (l) {
    case 0: return "blank (no PIN)";
    case 1: return "PIN set, not activated";
    case 2: return "activated";
    case 3: return "blocked";
    default: return "unknown";
  }
}

int cmd_init(const Args& a) {
  const std::filesystem::path p = a.get("state");
  StateLock lock(p);
  if (std::filesystem::exists(p) && !a.has("force"))
    throw Failure{p.string() + " exists; add --force to replace it with a blank card (its codes and keys are lost)"};
  applet::FileStorage fs(p);
  if (auto r = fs.commit(Bytes{}); !r) throw Failure{r.error().message};
  std::printf("blank card created at %s (mode 0600)\n", p.c_str());
  return 0;
}

struct Letter {
  std::string n, k, alg, server, ca;
};

Letter read_letter(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw Failure{"cannot read letter " + file};
  Letter l;
  std::string line;
  auto after = [](const std::string& s, const std::string& key) -> std::optional<std::string> {
    if (s.rfind(key, 0) != 0) return std::nullopt;
    std::string v = s.substr(key.size());
    while (!v.empty() && (v.front() == ' ')) v.erase(v.begin());
    while (!v.empty() && (v.back() == ' ' || v.back() == '\r')) v.pop_back();
    return v;
  };
  for (int i = 0; i < 200 && std::getline(in, line); ++i) {
    if (auto v = after(line, "Card identity N:")) l.n = *v;
    else if (auto k = after(line, "Card key K:")) l.k = *k;
    else if (auto s = after(line, "Server SMS number:")) l.server = *s;
    else if (auto c = after(line, "Card CA key:")) l.ca = *c;
    else if (auto g = after(line, "Algorithm:")) l.alg = g->rfind("AES", 0) == 0 ? "aes" : "des3";
  }
  if (l.n.empty() || l.k.empty() || l.server.empty() || l.alg.empty())
    throw Failure{"letter " + file + " lacks N, K, algorithm or server number (is it an OTAC initialization letter?)"};
  return l;
}

// K for activate without a letter: --k-file, or the deprecated --k argument (warns).
std::string card_key_hex(const Args& a) {
  if (a.has("k-file")) {
    auto k = sys::read_secret_file(a.get("k-file"));
    if (!k) throw Failure{"--k-file: " + k.error().message};
    return std::string(k->data(), k->data() + k->size());
  }
  if (!a.has("k")) throw UsageError{"option --k-file (or --letter) is required"};
  log("warning: --k puts the card key on the command line, where ps and the shell history show it; it is deprecated: "
      "use --k-file or --letter");
  return a.get("k");
}

int cmd_activate(const Args& a) {
  Letter l;
  if (a.has("letter")) {
    l = read_letter(a.get("letter"));
  } else {
    l = {a.get("n"), card_key_hex(a), a.get("alg"), a.get("server-number"), {}};
  }
  if (a.has("ca-key")) l.ca = a.get("ca-key");
  std::optional<Bytes> ca;
  if (!l.ca.empty()) {
    auto point = from_hex(l.ca);
    if (point && point->size() == 65 && (*point)[0] == 0x04) ca = std::move(*point);
    else throw UsageError{"the CA key must be an uncompressed P-256 point: 130 hex digits starting with 04"};
  }
  auto n = from_hex(l.n);
  auto k = from_hex(l.k);
  if (!n || n->size() != 8) throw UsageError{"N must be 16 hex digits"};
  if (!k || k->size() != 16) throw UsageError{"K must be 32 hex digits"};
  if (l.alg != "des3" && l.alg != "aes") throw UsageError{"--alg must be des3 or aes"};
  Secrets secrets(a);
  const Bytes pin = secrets.block("pin", "PIN", true);
  const Bytes puk = secrets.block("puk", "PUK", true);
  Bytes d;
  tlv::append(d, 0xDF41, *n);
  tlv::append(d, 0xDF44, *k);
  tlv::append(d, 0xDF45, Bytes{static_cast<std::uint8_t>(l.alg == "des3" ? 1 : 2)});
  tlv::append(d, 0xDF46, as_bytes(l.server));
  tlv::append(d, 0xDF47, puk);
  if (a.has("threshold")) tlv::append(d, 0xDF4B, be_bytes(number_option(a, "threshold", 400), 2));
  if (a.has("pin-limit")) {
    // n12 BCD: the amount in minor units as 12 decimal digits.
    std::uint64_t v = number_option(a, "pin-limit", 999999999999ULL);
    Bytes bcd(6);
    for (std::size_t i = 6; i-- > 0; v /= 100) bcd[i] = static_cast<std::uint8_t>((v % 100 / 10) << 4 | (v % 10));
    tlv::append(d, 0xDF4E, bcd);
  }
  if (a.has("pin-door"))
    for (const auto& door : a.opts.at("pin-door")) tlv::append(d, 0xDF4F, as_bytes(door));
  if (ca) tlv::append(d, 0xDF51, *ca);
  Session s(a.get("state"));
  if (s.life() == 0) expect_ok(transmit(s.app, 0x00, 0x24, 0x01, 0x80, pin), "setting the PIN");
  else s.verify(pin);
  expect_ok(transmit(s.app, 0x80, 0x10, 0x00, 0x00, d, true), "ACTIVATE");
  secure_zero(d.data(), d.size());
  std::printf("card %s activated; its initialization message waits for the daemon to send it to %s\n", to_hex(*n).c_str(),
              l.server.c_str());
  log("activated card " + to_hex(*n));
  return 0;
}

int cmd_status(const Args& a) {
  Session s(a.get("state"));
  auto r = transmit(s.app, 0x80, 0xA6, 0x00, 0x00, {}, true);
  expect_ok(r, "GET STATUS");
  auto nodes = tlv::parse(r.data);
  if (!nodes || nodes->empty()) throw Failure{"card status unreadable"};
  auto get = [&](tlv::Tag t) -> std::uint64_t {
    const tlv::Node* n = tlv::find((*nodes)[0].children, t);
    std::uint64_t v = 0;
    if (n) for (auto b : n->value) v = v << 8 | b;
    return v;
  };
  const tlv::Node* n = tlv::find((*nodes)[0].children, 0xDF41);
  const std::string nhex = n ? to_hex(n->value) : "";
  if (a.has("json")) {
    std::printf("{\"life\":%u,\"n\":\"%s\",\"active_list\":%llu,\"unused\":%llu,\"atc\":%llu,\"key_version\":%llu,"
                "\"refresh_pending\":%s,\"threshold\":%llu,\"lists\":%llu}\n",
                s.life(), nhex.c_str(), static_cast<unsigned long long>(get(0xDF42)), static_cast<unsigned long long>(get(0xDF48)),
                static_cast<unsigned long long>(get(0x9F36)), static_cast<unsigned long long>(get(0xDF49)),
                get(0xDF4A) ? "true" : "false", static_cast<unsigned long long>(get(0xDF4B)), static_cast<unsigned long long>(get(0xDF4C)));
    return 0;
  }
  std::printf("life cycle:       %s\n", life_name(s.life()));
  std::printf("card N:           %s\n", nhex.c_str());
  std::printf("active list:      %llu\n", static_cast<unsigned long long>(get(0xDF42)));
  std::printf("unused codes:     %llu\n", static_cast<unsigned long long>(get(0xDF48)));
  std::printf("lists held:       %llu\n", static_cast<unsigned long long>(get(0xDF4C)));
  std::printf("transactions:     %llu\n", static_cast<unsigned long long>(get(0x9F36)));
  std::printf("key version:      %llu\n", static_cast<unsigned long long>(get(0xDF49)));
  std::printf("refresh pending:  %s\n", get(0xDF4A) ? "yes" : "no");
  std::printf("refresh at:       %llu unused codes\n", static_cast<unsigned long long>(get(0xDF4B)));
  return 0;
}

int cmd_verify(const Args& a) {
  const Bytes pin = Secrets(a).block("pin", "PIN");
  Session s(a.get("state"));
  s.verify(pin);
  std::printf("PIN correct\n");
  return 0;
}

int cmd_code(const Args& a) {
  const Bytes pin = Secrets(a).block("pin", "PIN");
  Session s(a.get("state"));
  s.verify(pin);
  auto r = transmit(s.app, 0x80, 0xA4, 0x00, 0x00, {}, true);
  expect_ok(r, "DISPLAY CODE");
  auto nodes = tlv::parse(r.data);
  const tlv::Node* code = nodes ? tlv::find(*nodes, 0xDF4D) : nullptr;
  const tlv::Node* list = nodes ? tlv::find(*nodes, 0xDF42) : nullptr;
  const tlv::Node* idx = nodes ? tlv::find(*nodes, 0xDF43) : nullptr;
  if (!code || !list || !idx || list->value.size() != 2 || idx->value.size() != 2) throw Failure{"card answer unreadable"};
  std::printf("%s\n", std::string(code->value.begin(), code->value.end()).c_str());
  log("display code used list " + std::to_string(list->value[0] << 8 | list->value[1]) + " index " +
      std::to_string(idx->value[0] << 8 | idx->value[1]));
  return 0;
}

int cmd_refresh(const Args& a) {
  const Bytes pin = Secrets(a).block("pin", "PIN");
  Session s(a.get("state"));
  s.verify(pin);
  const auto r = transmit(s.app, 0x80, 0xA8, 0x00, 0x00);
  if (r.sw == sw::not_enough_memory)
    throw Failure{"REQUEST REFRESH refused: the card holds two lists with unused codes and has no room for a third; "
                  "it asks for a list by itself once one is used up"};
  expect_ok(r, "REQUEST REFRESH");
  std::printf("refresh request queued; the daemon sends it to the server\n");
  return 0;
}

int cmd_keygen(const Args& a) {
  const std::string alg = a.get("alg");
  if (alg != "rsa" && alg != "p256") throw UsageError{"--alg must be rsa (RSA-2048) or p256 (ECDSA/ECDH P-256)"};
  const Bytes pin = Secrets(a).block("pin", "PIN", true);
  Session s(a.get("state"));
  if (s.life() == 0) expect_ok(transmit(s.app, 0x00, 0x24, 0x01, 0x80, pin), "setting the PIN");
  else s.verify(pin);
  auto r = transmit(s.app, 0x80, 0x46, alg == "rsa" ? 0x01 : 0x02, 0x00, {}, true);
  expect_ok(r, "GENERATE KEY PAIR");
  auto nodes = tlv::parse(r.data);
  const tlv::Node* pub = nodes ? tlv::find(*nodes, 0xDF50) : nullptr;
  if (!pub || pub->value.empty()) throw Failure{"card answer to GENERATE KEY PAIR unreadable"};
  std::printf("%s\n", to_hex(pub->value).c_str());
  log("generated a " + std::string(alg == "rsa" ? "RSA-2048" : "P-256") + " key pair; public key printed for enrollment");
  return 0;
}

int cmd_change_pin(const Args& a) {
  Secrets secrets(a);
  Bytes d = secrets.block("pin", "PIN");
  append(d, secrets.block("new-pin", "new PIN", true));
  Session s(a.get("state"));
  expect_ok(transmit(s.app, 0x00, 0x24, 0x00, 0x80, d), "CHANGE PIN");
  secure_zero(d.data(), d.size());
  std::printf("PIN changed\n");
  return 0;
}

int cmd_unblock(const Args& a) {
  Secrets secrets(a);
  Bytes d = secrets.block("puk", "PUK");
  append(d, secrets.block("new-pin", "new PIN", true));
  Session s(a.get("state"));
  expect_ok(transmit(s.app, 0x00, 0x2C, 0x00, 0x80, d), "RESET RETRY COUNTER");
  secure_zero(d.data(), d.size());
  std::printf("PIN unblocked and set\n");
  return 0;
}

// ---- the daemon -----------------------------------------------------------------------------

std::string strip_plus(std::string s) { return !s.empty() && s[0] == '+' ? s.substr(1) : s; }

std::string apdu_summary(ByteView a) {
  // Only the header: data fields may hold PIN blocks or keys.
  char buf[32];
  if (a.size() < 4) return "short APDU";
  std::snprintf(buf, sizeof buf, "%02X %02X %02X %02X", a[0], a[1], a[2], a[3]);
  return std::string(buf) + (a.size() > 5 ? " Lc=" + std::to_string(a[4]) : "");
}

std::string sw_text(ByteView r) {
  if (r.size() < 2) return "?";
  char buf[8];
  std::snprintf(buf, sizeof buf, "%02X%02X", r[r.size() - 2], r[r.size() - 1]);
  return buf;
}

// A TCP link that reconnects with a bounded backoff.
struct Link {
  std::string name, host;
  std::uint16_t port = 0;
  Fd fd;
  Clock::time_point retry_at = Clock::now();
  std::chrono::milliseconds backoff{100};
  bool warned = false;

  void try_connect() {
    if (fd || Clock::now() < retry_at) return;
    auto c = connect_tcp(host, port, 1000);
    if (!c) {
      if (!warned) log(name + ": " + c.error().message + "; retrying (up to every 2 s)");
      warned = true;
      retry_at = Clock::now() + backoff;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
      return;
    }
    fd = std::move(*c);
    backoff = std::chrono::milliseconds(100);
    warned = false;
    log(name + ": connected to " + host + ":" + std::to_string(port));
  }
  void drop(const std::string& why) {
    log(name + ": " + why + "; reconnecting");
    fd.reset();
    retry_at = Clock::now() + backoff;
  }
};

class Daemon {
 public:
  Daemon(std::filesystem::path state, std::string msisdn)
      : state_(std::move(state)), msisdn_(std::move(msisdn)), storage_(state_), contactless_(storage_), phone_(storage_) {}

  std::optional<Link> vicc, smsc;

  int run() {
    auto last_outbox = Clock::now();
    while (!g_stop) {
      if (vicc) vicc->try_connect();
      if (smsc) {
        const bool was = static_cast<bool>(smsc->fd);
        smsc->try_connect();
        if (!was && smsc->fd) flush_outbox();
      }
      std::vector<pollfd> fds;
      if (vicc && vicc->fd) fds.push_back({vicc->fd.get(), POLLIN, 0});
      // Messages wait in mt_ until their turn; the gateway is read again once few are left.
      if (smsc && smsc->fd && mt_.size() < kMtBacklog) fds.push_back({smsc->fd.get(), POLLIN, 0});
      const int rc = ::poll(fds.data(), fds.size(), mt_.empty() ? 200 : 0);
      if (rc < 0 && errno != EINTR) { log(std::string("poll failed: ") + std::strerror(errno)); return 1; }
      for (const auto& p : fds) {
        if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
        if (vicc && vicc->fd && p.fd == vicc->fd.get()) read_vicc();
        else if (smsc && smsc->fd && p.fd == smsc->fd.get()) read_smsc();
      }
      // One message from the gateway per round, after the reader's APDUs: a list arrives as
      // up to 15 parts, each an ENVELOPE with its own commit, and a card in the field must not
      // wait for all of them before it answers.
      if (!mt_.empty()) {
        const std::string line = std::move(mt_.front());
        mt_.pop_front();
        handle_mt(line);
        flush_outbox();
      }
      // Menu commands (refresh, activate) queue messages while we run: poll the outbox.
      if (Clock::now() - last_outbox > std::chrono::milliseconds(300)) {
        flush_outbox();
        last_outbox = Clock::now();
      }
    }
    // Messages read from the gateway are the card's now (the gateway counts them delivered):
    // hand them to the card before stopping.
    for (std::size_t i = 0, n = mt_.size(); i < n; ++i) {
      handle_mt(mt_.front());
      mt_.pop_front();
    }
    flush_outbox();
    log("stopping");
    return 0;
  }

 private:
  Bytes process(applet::Applet& app, ByteView apdu) {
    try {
      StateLock lock(state_);
      return app.process(apdu);
    } catch (const Failure& f) {  // the daemon keeps running; this one command fails
      log(f.message);
      return Bytes{0x6F, 0x00};
    }
  }

  void read_vicc() {
    std::uint8_t buf[4096];
    quickack(vicc->fd.get());
    const ssize_t n = ::recv(vicc->fd.get(), buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      contactless_.reset();
      framer_ = ViccFramer{};
      vicc->drop(n == 0 ? "reader closed the connection (card removed)" : std::string("read failed: ") + std::strerror(errno));
      return;
    }
    if (n < 0) return;
    framer_.feed(ByteView(buf, static_cast<std::size_t>(n)));
    for (int i = 0; i < 4096; ++i) {  // a 4 KiB read holds at most 2048 frames
      auto msg = framer_.next();
      if (!msg) break;
      Bytes reply;
      if (msg->size() == 1) {
        switch ((*msg)[0]) {
          case 0x00: contactless_.reset(); log("vicc: power off"); continue;
          case 0x01: contactless_.reset(); log("vicc: power on"); continue;
          case 0x02: contactless_.reset(); log("vicc: reset"); continue;
          case 0x04: reply = applet::Applet::atr(); break;
          default: log("vicc: unknown control byte ignored"); continue;
        }
      } else {
        reply = process(contactless_, *msg);
        log("vicc: " + apdu_summary(*msg) + " -> " + sw_text(reply));
      }
      if (auto w = write_all(vicc->fd.get(), ViccFramer::frame(reply), 2000); !w) {
        contactless_.reset();
        vicc->drop("cannot answer: " + w.error().message);
        return;
      }
    }
    flush_outbox();
  }

  void read_smsc() {
    std::uint8_t buf[8192];
    const ssize_t n = ::recv(smsc->fd.get(), buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      lines_ = LineSplitter{};
      smsc->drop(n == 0 ? "gateway closed the connection" : std::string("read failed: ") + std::strerror(errno));
      return;
    }
    if (n < 0) return;
    lines_.feed(ByteView(buf, static_cast<std::size_t>(n)));
    for (int i = 0; i < 8192; ++i) {  // an 8 KiB read holds at most 8192 lines
      auto line = lines_.next();
      if (!line) break;
      if (!*line) { log("sms: " + line->error().message); continue; }
      mt_.push_back(std::move(**line));
    }
  }

  void handle_mt(const std::string& line) {
    auto m = parse_mt_line(line);
    if (!m) { log("sms: unreadable line from the gateway: " + m.error().message); return; }
    if (strip_plus(m->to) != strip_plus(msisdn_)) { log("sms: message for " + m->to + " is not for this phone; ignored"); return; }
    Bytes udh = m->udh;
    if (!udh.empty() && udh[0] == udh.size() - 1) udh.erase(udh.begin());  // Kannel keeps the UDHL byte
    auto deliver = applet::sms::encode_deliver(m->from, udh, m->data);
    if (!deliver) { log("sms: cannot hand MT from " + m->from + " to the card: " + deliver.error().message); return; }
    auto env = applet::sms::encode_sms_pp_download("", *deliver);
    if (!env) { log("sms: " + env.error().message); return; }
    apdu::Command c{0x80, 0xC2, 0x00, 0x00, *env, 256, false};
    auto raw = apdu::encode(c);
    if (!raw) { log("sms: " + raw.error().message); return; }
    Bytes r = process(phone_, *raw);
    log("sms: MT from " + m->from + " (" + std::to_string(m->data.size()) + " bytes, UDH " + to_hex(udh) +
        ") -> ENVELOPE " + sw_text(r));
    if (r.size() > 2 && sw_text(r) == "9000") {
      FakeSms por{msisdn_, m->from, Bytes{0x02, 0x71, 0x00}, Bytes(r.begin(), r.end() - 2)};
      send_mo(por, "Proof of Receipt");
    }
  }

  void send_mo(const FakeSms& mo, const std::string& what) {
    if (!smsc || !smsc->fd) { log("sms: " + what + " lost: no gateway connection"); return; }
    const std::string line = format_mo_line(mo);
    if (auto w = write_all(smsc->fd.get(), as_bytes(line), 2000); !w) {
      log("sms: " + what + " not sent: " + w.error().message);
      smsc->drop("write failed");
      return;
    }
    log("sms: " + what + " sent to " + mo.to + " (" + std::to_string(mo.data.size()) + " bytes)");
  }

  void flush_outbox() {
    // Only fetch when the message can go out: the card's outbox is the durable queue.
    for (std::size_t i = 0; i <= applet::max_outbox && smsc && smsc->fd; ++i) {
      Bytes r = process(phone_, Bytes{0x80, 0x12, 0x00, 0x00, 0x00});
      if (r.size() <= 2) return;
      auto ssm = applet::sms::parse_send_short_message(ByteView(r).first(r.size() - 2));
      if (!ssm) { log("sms: card gave an unreadable proactive command: " + ssm.error().message); continue; }
      auto sub = applet::sms::parse_submit(ssm->tpdu);
      if (!sub) { log("sms: card gave an unreadable SMS-SUBMIT: " + sub.error().message); continue; }
      Bytes udh;
      if (!sub->udh.empty()) {
        udh.push_back(static_cast<std::uint8_t>(sub->udh.size()));
        append(udh, sub->udh);
      }
      send_mo(FakeSms{msisdn_, sub->to, udh, sub->payload}, "card request");
    }
  }

  std::filesystem::path state_;
  std::string msisdn_;
  applet::FileStorage storage_;
  applet::Applet contactless_;  // the reader's logical channel
  applet::Applet phone_;        // the handset's toolkit channel (ENVELOPE, FETCH)
  ViccFramer framer_;
  LineSplitter lines_;
  // Whole lines from the gateway, handled one per round of the loop (at most kMtBacklog plus
  // one read's worth: the gateway is not read while kMtBacklog wait).
  static constexpr std::size_t kMtBacklog = 64;
  std::deque<std::string> mt_;
};

int cmd_run(const Args& a) {
  const std::filesystem::path p = a.get("state");
  if (!a.has("vicc") && !a.has("smsc")) throw UsageError{"run needs --vicc and/or --smsc"};
  if (a.has("smsc") && !a.has("msisdn")) throw UsageError{"--smsc needs --msisdn (this phone's number)"};
  {
    StateLock lock(p);
    if (!std::filesystem::exists(p)) throw Failure{"no card state at " + p.string() + "; create one with `otac-card init`"};
    struct stat st{};
    if (::stat(p.c_str(), &st) == 0 && (st.st_mode & 077) != 0)
      throw Failure{p.string() + " is readable by group or others; chmod 600 it (it holds the card key)"};
  }
  Daemon d(p, a.get_or("msisdn", ""));
  if (a.has("vicc")) {
    auto ep = parse_endpoint(a.get("vicc"));
    if (!ep) throw UsageError{ep.error().message};
    d.vicc.emplace();
    d.vicc->name = "vicc";
    d.vicc->host = ep->first;
    d.vicc->port = ep->second;
  }
  if (a.has("smsc")) {
    auto ep = parse_endpoint(a.get("smsc"));
    if (!ep) throw UsageError{ep.error().message};
    d.smsc.emplace();
    d.smsc->name = "smsc";
    d.smsc->host = ep->first;
    d.smsc->port = ep->second;
  }
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  log("running with state " + p.string());
  return d.run();
}

// The subcommands: name, summary, options with a value, flags, and the function.
struct Command {
  const char* name;
  const char* summary;
  std::vector<std::string> options;
  std::vector<std::string> flags;
  int (*run)(const Args&);
};

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"run", "the daemon: the card for vpcd or the PN532 emulator, the phone for Kannel",
       {"state", "vicc", "smsc", "msisdn"}, {}, cmd_run},
      {"init", "create a blank card", {"state"}, {"force"}, cmd_init},
      {"activate", "first activation: PIN, PUK, N, K, algorithm, server number",
       {"state", "pin", "puk", "pin-fd", "n", "k", "k-file", "alg", "server-number", "letter", "ca-key", "threshold",
        "pin-limit", "pin-door"},
       {}, cmd_activate},
      {"status", "life cycle, N, lists, codes, counter, key version", {"state"}, {"json"}, cmd_status},
      {"verify", "check the PIN", {"state", "pin", "pin-fd"}, {}, cmd_verify},
      {"code", "display mode: use the next code and print it", {"state", "pin", "pin-fd"}, {}, cmd_code},
      {"refresh", "ask the server for a new list", {"state", "pin", "pin-fd"}, {}, cmd_refresh},
      {"keygen", "asymmetric mode: generate the card's key pair", {"state", "pin", "pin-fd", "alg"}, {}, cmd_keygen},
      {"change-pin", "change the PIN", {"state", "pin", "new-pin", "pin-fd"}, {}, cmd_change_pin},
      {"unblock", "set a new PIN with the PUK", {"state", "puk", "new-pin", "pin-fd"}, {}, cmd_unblock},
  };
  return table;
}

// Runs one parsed subcommand; the statuses and one-line messages are the program's contract.
int run_command(const Command& c, const Args& a) {
  try {
    return c.run(a);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "otac-card %s: %s (otac-card %s --help)\n", c.name, e.message.c_str(), c.name);
    return 2;
  } catch (const Failure& e) {
    std::fprintf(stderr, "otac-card: %s\n", e.message.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "otac-card: unexpected error: %s\n", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"The OTAC card applet as a virtual card and phone.", "otac-card"};
  otac::sys::cli_defaults(app);
  app.require_subcommand(1);
  app.footer(kUsage);
  const auto& cmds = commands();
  std::vector<std::map<std::string, std::vector<std::string>>> values(cmds.size());  // CLI11 writes here
  std::vector<CLI::App*> subs;
  for (std::size_t i = 0; i < cmds.size(); ++i) {
    CLI::App* sub = app.add_subcommand(cmds[i].name, cmds[i].summary);
    sub->footer("otac-card --help describes every command and option.");
    for (const auto& o : cmds[i].options) {
      CLI::Option* opt = sub->add_option("--" + o, values[i][o])->type_name("VALUE");
      if (o == "pin-door") opt->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
      else opt->expected(1);  // one value, given once
      // Secrets as arguments: deprecated aliases (Secrets warns); parsed, not offered in help.
      if (o == "pin" || o == "puk" || o == "new-pin" || o == "k") opt->group("");
    }
    for (const auto& f : cmds[i].flags) sub->add_flag("--" + f);
    subs.push_back(sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return otac::sys::cli_exit(app, e);
  }
  for (std::size_t i = 0; i < cmds.size(); ++i) {
    if (!subs[i]->parsed()) continue;
    Args a{cmds[i].name, {}};
    for (const auto& o : cmds[i].options)
      if (subs[i]->count("--" + o) != 0) a.opts[o] = values[i][o];
    for (const auto& f : cmds[i].flags)
      if (subs[i]->count("--" + f) != 0) a.opts[f] = {"1"};
    return run_command(cmds[i], a);
  }
  return 2;  // not reached: require_subcommand(1)
}
