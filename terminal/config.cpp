#include "terminal/config.hpp"

#include "otac/common/number.hpp"
#include "otac/common/url.hpp"

#include <fstream>
#include <set>
#include <sstream>

namespace otac::terminal {

namespace {

struct Currency { const char* alpha; std::uint16_t numeric; int exponent; };
// ISO 4217 (list one, 2024): the currencies a terminal here is likely to be set up for.
constexpr Currency kCurrencies[] = {
    {"EUR", 978, 2}, {"USD", 840, 2}, {"GBP", 826, 2}, {"CHF", 756, 2}, {"JPY", 392, 0},
    {"SEK", 752, 2}, {"NOK", 578, 2}, {"DKK", 208, 2}, {"PLN", 985, 2}, {"CZK", 203, 2},
    {"HUF", 348, 2}, {"CAD", 124, 2}, {"AUD", 36, 2},  {"KWD", 414, 3}, {"BHD", 48, 3},
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

Result<bool> parse_bool(std::string_view v) {
  if (v == "true" || v == "yes" || v == "1") return true;
  if (v == "false" || v == "no" || v == "0") return false;
  return make_error(Errc::bad_value, "must be true or false");
}

std::string path_in(std::string_view base, std::string_view v) {
  if (!v.empty() && v.front() == '/') return std::string(v);
  return std::string(base) + "/" + std::string(v);
}

bool printable(std::string_view s) {
  for (const char c : s)
    if (c < 0x20 || c > 0x7E) return false;
  return true;
}

}  // namespace

Result<void> lookup_currency(std::string_view code, std::uint16_t& numeric, std::string& alpha, int& exponent) {
  for (const auto& c : kCurrencies) {
    if (code == c.alpha || (!code.empty() && code.find_first_not_of("0123456789") == std::string_view::npos &&
                            code.size() <= 3 && std::stoi(std::string(code)) == c.numeric)) {
      numeric = c.numeric;
      alpha = c.alpha;
      exponent = c.exponent;
      return {};
    }
  }
  return make_error(Errc::bad_value, "unknown currency \"" + std::string(code.substr(0, 8)) +
                                         "\" (use an ISO 4217 code such as EUR, USD, GBP, CHF, JPY or its number)");
}

Result<std::uint64_t> parse_amount(std::string_view t, int exponent) {
  const auto dot = t.find('.');
  std::string_view whole = t.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view{} : t.substr(dot + 1);
  const auto bad = [&] {
    return make_error(Errc::bad_value, "amount \"" + std::string(t.substr(0, 20)) + "\" must look like 12.50 (at most " +
                                           std::to_string(exponent) + " decimals, at most 12 digits in all)");
  };
  if (whole.empty() || whole.size() > 12 || frac.size() > static_cast<std::size_t>(exponent) ||
      (dot != std::string_view::npos && frac.empty()))
    return bad();
  std::uint64_t v = 0;
  for (const char c : whole) {
    if (c < '0' || c > '9') return bad();
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  for (int i = 0; i < exponent; ++i) {
    const auto idx = static_cast<std::size_t>(i);
    char c = idx < frac.size() ? frac[idx] : '0';
    if (c < '0' || c > '9') return bad();
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (v > 999999999999ULL) return bad();
  return v;
}

std::string format_amount(std::uint64_t minor, int exponent) {
  std::string s = std::to_string(minor);
  const auto e = static_cast<std::size_t>(exponent);
  if (e == 0) return s;
  if (s.size() <= e) s.insert(0, e + 1 - s.size(), '0');
  s.insert(s.size() - e, ".");
  return s;
}

Result<std::vector<BackendOrigin>> parse_backend_urls(std::string_view text) {
  std::vector<BackendOrigin> out;
  constexpr std::size_t kMaxBackends = 8;
  for (std::size_t i = 0; i <= kMaxBackends; ++i) {
    const auto comma = text.find(',');
    const std::string_view one = trim(text.substr(0, comma));
    const std::string which = "entry " + std::to_string(i + 1);
    if (one.empty()) return make_error(Errc::bad_value, which + " is empty (separate https URLs with commas)");
    if (i == kMaxBackends) return make_error(Errc::bad_length, "more than 8 backend URLs");
    // https://HOST[:PORT][/]; HOST a name, an IPv4 or a bracketed IPv6 address.
    auto origin = parse_https_origin(one);
    if (!origin) return make_error(Errc::bad_value, which + ": " + origin.error().message + " (the backend only speaks TLS)");
    for (const auto& b : out)
      if (b.host == origin->host && b.port == origin->port) return make_error(Errc::conflict, which + " repeats an earlier one");
    out.push_back({origin->host, origin->port});
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

Result<Config> parse_config(std::string_view text, std::string_view base_dir) {
  Config c;
  std::set<std::string, std::less<>> seen;
  std::string url;
  std::size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    if (line_no > 2000) return make_error(Errc::bad_length, "config: more than 2000 lines");
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (const auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    const std::string where = "config line " + std::to_string(line_no);
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) return make_error(Errc::bad_value, where + ": expected \"key = value\"");
    const std::string_view key = trim(line.substr(0, eq));
    const std::string_view v = trim(line.substr(eq + 1));
    const std::string k(key);
    if (!printable(v)) return make_error(Errc::bad_value, where + ": " + k + ": control characters in the value");
    if (!seen.insert(k).second) return make_error(Errc::conflict, where + ": " + k + " is set twice");
    auto fail = [&](const std::string& why) { return make_error(Errc::bad_value, where + ": " + k + " " + why); };
    auto num = [&](unsigned& out, unsigned lo, unsigned hi) -> Result<void> {
      auto r = parse_uint(v, lo, hi);
      if (!r) return fail(r.error().message);
      out = static_cast<unsigned>(*r);
      return {};
    };
    Result<void> r;
    if (key == "reader") {
      if (v.empty()) return fail("must not be empty (e.g. pn532_uart:/dev/ttyUSB0 or pcsc)");
      c.reader = v;
    } else if (key == "backend_url") {
      url = v;
    } else if (key == "ca_file") {
      c.ca_file = path_in(base_dir, v);
    } else if (key == "cert_file") {
      c.cert_file = path_in(base_dir, v);
    } else if (key == "key_file") {
      c.key_file = path_in(base_dir, v);
    } else if (key == "terminal_id") {
      if (v.size() != 8) return fail("must be exactly 8 characters (the CN of the client certificate)");
      c.terminal_id = v;
    } else if (key == "mode") {
      if (v == "pos") c.door_mode = false;
      else if (v == "door") c.door_mode = true;
      else return fail("must be pos or door");
    } else if (key == "currency") {
      if (auto cur = lookup_currency(v, c.currency, c.currency_alpha, c.currency_exponent); !cur)
        return fail(cur.error().message);
    } else if (key == "door_id") {
      if (v.empty() || v.size() > 16) return fail("must be 1 to 16 characters");
      c.door_id = v;
    } else if (key == "relay") {
      if (v == "none") c.relay = RelayKind::none;
      else if (v == "gpiod") c.relay = RelayKind::gpiod;
      else if (v == "command") c.relay = RelayKind::command;
      else return fail("must be none, gpiod or command");
    } else if (key == "relay_chip") {
      if (v.empty()) return fail("must name a GPIO chip (gpiochip0 or /dev/gpiochip0)");
      c.relay_chip = v;
    } else if (key == "relay_line") {
      r = num(c.relay_line, 0, 1023);
    } else if (key == "relay_active_low") {
      auto b = parse_bool(v);
      if (!b) return fail(b.error().message);
      c.relay_active_low = *b;
    } else if (key == "relay_pulse_ms") {
      r = num(c.relay_pulse_ms, 50, 30000);
    } else if (key == "relay_command") {
      if (v.empty()) return fail("must not be empty");
      c.relay_command = path_in(base_dir, v);
    } else if (key == "pin_source") {
      if (v == "none") c.pin_source = PinSource::none;
      else if (v == "tty") c.pin_source = PinSource::tty;
      else if (v == "stdin") c.pin_source = PinSource::stdin_lines;
      else return fail("must be none, tty or stdin");
    } else if (key == "pin_timeout_s") {
      r = num(c.pin_timeout_s, 1, 300);
    } else if (key == "held_wait_limit_s") {
      r = num(c.held_wait_limit_s, 0, 3600);
    } else if (key == "card_wait_ms") {
      r = num(c.card_wait_ms, 10, 3600000);
    } else if (key == "apdu_timeout_ms") {
      r = num(c.apdu_timeout_ms, 10, 60000);
    } else if (key == "removal_wait_ms") {
      r = num(c.removal_wait_ms, 0, 600000);
    } else if (key == "connect_timeout_ms") {
      r = num(c.connect_timeout_ms, 10, 60000);
    } else if (key == "backend_timeout_ms") {
      r = num(c.backend_timeout_ms, 10, 120000);
    } else if (key == "backend_attempts") {
      r = num(c.backend_attempts, 1, 10);
    } else if (key == "data_dir") {
      c.data_dir = path_in(base_dir, v);
    } else if (key == "dispenser_socket") {
      c.dispenser_socket = path_in(base_dir, v);
    } else if (key == "dispenser_take_s") {
      r = num(c.dispenser_take_s, 1, 600);
    } else if (key == "outcome_retry_s") {
      r = num(c.outcome_retry_s, 0, 3600);
    } else {
      return make_error(Errc::bad_value, where + ": unknown key \"" + k.substr(0, 40) + "\" (see otac-terminal --help)");
    }
    if (!r) return r.error();
  }
  // Required keys.
  for (const char* req : {"reader", "backend_url", "ca_file", "cert_file", "key_file", "terminal_id"})
    if (!seen.count(req)) return make_error(Errc::not_found, std::string("config: missing required key ") + req);
  auto backends = parse_backend_urls(url);
  if (!backends) return make_error(Errc::bad_value, "config: backend_url: " + backends.error().message);
  c.backends = std::move(*backends);
  if (c.door_mode && c.door_id.empty()) return make_error(Errc::not_found, "config: mode = door needs door_id");
  if (c.relay == RelayKind::command && c.relay_command.empty())
    return make_error(Errc::not_found, "config: relay = command needs relay_command");
  if (c.data_dir.empty()) c.data_dir = std::string(base_dir);
  return c;
}

Result<Config> load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(Errc::io, "cannot open config file " + path + " (check the path and permissions)");
  std::string text(64 * 1024 + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > 64 * 1024) return make_error(Errc::bad_length, "config file " + path + " is larger than 64 KiB");
  const auto slash = path.rfind('/');
  auto c = parse_config(text, slash == std::string::npos ? std::string(".") : path.substr(0, slash == 0 ? 1 : slash));
  if (!c) return make_error(c.error().code, path + ": " + c.error().message);
  return c;
}

const char* config_keys() {
  return R"(CONFIG FILE
  One "key = value" per line; '#' starts a comment; every key at most once. Relative file
  names are relative to the config file's folder.

  Required:
    reader = CONNSTRING     libnfc connstring, e.g. pn532_uart:/dev/ttyUSB0 (PN532 on a UART),
                            pn532_i2c:/dev/i2c-1, acr122_usb; or pcsc (first PC/SC reader) or
                            pcsc:NAME (the PC/SC reader whose name starts with NAME).
                            LIBNFC_DEFAULT_DEVICE overrides a libnfc reader when reader = libnfc.
    backend_url = https://HOST:PORT[, https://HOST2:PORT ...]   the OTAC backend (TLS
                            only): one node, or up to 8 nodes of one deployment separated by
                            commas. Each server certificate must name its HOST (DNS name or
                            IP address; IPv6 in brackets, https://[::1]:8443) and chain to
                            ca_file. A request that gets no answer from a node (cannot connect,
                            TLS refused, timeout, connection lost) or an HTTP 5xx goes to the
                            next node with the same transaction id, each node at most once per
                            request; the node that last answered is tried first (kept in
                            data_dir/backend.node across runs).
    ca_file = FILE          the only CA trusted for the backend (PEM).
    cert_file = FILE        this terminal's client certificate (PEM), CN = terminal_id.
    key_file = FILE         its private key (PEM); keep it mode 0600.
    terminal_id = ID        exactly 8 characters; sent to the card in tag 9F1C.

  Optional (default):
    mode = pos|door (pos)   what the plain "run" does; pos and door subcommands override.
    currency = EUR          ISO 4217 alphabetic or numeric code.
    door_id = ID            1..16 characters; required for door mode.
    relay = none|gpiod|command (none)   how the door opens on an approval.
    relay_chip = gpiochip0  GPIO chip (name or /dev path) for relay = gpiod.
    relay_line = N (0)      line offset on that chip.
    relay_active_low = false   true when the relay closes on a low level.
    relay_pulse_ms = 1000   how long the relay stays energized (50..30000).
    relay_command = PROG    for relay = command: run as PROG open DOOR_ID PULSE_MS; exit 0 = opened.
    pin_source = tty|stdin|none (tty)   where a PIN comes from when the card asks for one:
                            the controlling terminal without echo, one line of standard input,
                            or none (such transactions are declined).
    pin_timeout_s = 30      time to enter a PIN.
    held_wait_limit_s = 60  how long to wait for an operator on a held transaction (0: do not wait).
    card_wait_ms = 15000    how long to wait for a card.
    apdu_timeout_ms = 1000  time limit of one APDU exchange (libnfc).
    removal_wait_ms = 10000 how long to wait for the card to leave after the decision.
    connect_timeout_ms = 3000   TCP connect + TLS handshake limit.
    backend_timeout_ms = 5000   limit for one request/answer with the backend.
    backend_attempts = 3    POSTs of the same transaction on network errors (same txn_id);
                            each of them tries the nodes of backend_url in turn.
    data_dir = DIR          where unacknowledged outcomes wait (DIR/outcomes/, one fsync'd file
                            each, replayed on the next run) and, with several backend nodes, the
                            one that answered last (DIR/backend.node); default: the config
                            file's folder.
    dispenser_socket = PATH atm mode: the cash dispenser's Unix socket (otac-dispenser-emu, or a
                            driver speaking docs/protocol.md section 8).
    dispenser_take_s = 30   atm mode: seconds the customer has to take the notes (then retracted).
    outcome_retry_s = 5     how long a run retries outcomes the backend has not acknowledged
                            (bounded backoff, 0.5 s doubling to 8 s); the rest stays queued.
)";
}

}  // namespace otac::terminal
