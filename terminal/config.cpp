#include "terminal/config.hpp"

#include "otac/common/url.hpp"

#include <utility>
#include <vector>

#include "otac/sys/config_file.hpp"

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

std::string path_in(std::string_view base, std::string_view v) {
  if (!v.empty() && v.front() == '/') return std::string(v);
  return std::string(base) + "/" + std::string(v);
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

namespace {

namespace cfg = sys::config;

const cfg::Format kFormat{.keys_help = "otac-terminal --help",
                          .convert_command = "otac-terminal --convert-config",
                          .old_comment_anywhere = true,
                          .old_strip_quotes = false,
                          .old_last_wins = false};

// Every key, its type and its checks, writing into c; backend_url goes to urls.
cfg::Keys keys_of(Config& c, std::vector<std::string>& urls, std::string_view base_dir) {
  using cfg::Type;
  using cfg::Value;
  using cfg::whole;
  const std::string base(base_dir);
  auto str = [](auto check) { return cfg::text_to(check); };
  auto file = [&base](std::string& dst) {
    return cfg::text_to([&dst, base](const std::string& v) -> Result<void> {
      dst = path_in(base, v);
      return {};
    });
  };
  auto bad = [](const char* why) { return make_error(Errc::bad_value, why); };
  return {
      {"reader", str([&c, bad](const std::string& v) -> Result<void> {
         if (v.empty()) return bad("must not be empty (e.g. \"pn532_uart:/dev/ttyUSB0\" or \"pcsc\")");
         c.reader = v;
         return {};
       })},
      {"backend_url", {Type::strings, [&urls](const Value& v) -> Result<void> {
                         urls = std::get<std::vector<std::string>>(v);
                         return {};
                       }}},
      {"ca_file", file(c.ca_file)},
      {"cert_file", file(c.cert_file)},
      {"key_file", file(c.key_file)},
      {"terminal_id", str([&c, bad](const std::string& v) -> Result<void> {
         if (v.size() != 8) return bad("must be exactly 8 characters (the CN of the client certificate)");
         c.terminal_id = v;
         return {};
       })},
      {"mode", str([&c, bad](const std::string& v) -> Result<void> {
         if (v != "pos" && v != "door") return bad("must be \"pos\" or \"door\"");
         c.door_mode = v == "door";
         return {};
       })},
      {"currency", str([&c](const std::string& v) { return lookup_currency(v, c.currency, c.currency_alpha, c.currency_exponent); })},
      {"door_id", str([&c, bad](const std::string& v) -> Result<void> {
         if (v.empty() || v.size() > 16) return bad("must be 1 to 16 characters");
         c.door_id = v;
         return {};
       })},
      {"relay", str([&c, bad](const std::string& v) -> Result<void> {
         if (v == "none") c.relay = RelayKind::none;
         else if (v == "gpiod") c.relay = RelayKind::gpiod;
         else if (v == "command") c.relay = RelayKind::command;
         else return bad("must be \"none\", \"gpiod\" or \"command\"");
         return {};
       })},
      {"relay_chip", str([&c, bad](const std::string& v) -> Result<void> {
         if (v.empty()) return bad("must name a GPIO chip (\"gpiochip0\" or \"/dev/gpiochip0\")");
         c.relay_chip = v;
         return {};
       })},
      {"relay_line", whole(c.relay_line, 0, 1023)},
      {"relay_active_low", cfg::flag(c.relay_active_low)},
      {"relay_pulse_ms", whole(c.relay_pulse_ms, 50, 30000)},
      {"relay_command", str([&c, bad, base](const std::string& v) -> Result<void> {
         if (v.empty()) return bad("must not be empty");
         c.relay_command = path_in(base, v);
         return {};
       })},
      {"pin_source", str([&c, bad](const std::string& v) -> Result<void> {
         if (v == "none") c.pin_source = PinSource::none;
         else if (v == "tty") c.pin_source = PinSource::tty;
         else if (v == "stdin") c.pin_source = PinSource::stdin_lines;
         else return bad("must be \"none\", \"tty\" or \"stdin\"");
         return {};
       })},
      {"pin_timeout_s", whole(c.pin_timeout_s, 1, 300)},
      {"held_wait_limit_s", whole(c.held_wait_limit_s, 0, 3600)},
      {"card_wait_ms", whole(c.card_wait_ms, 10, 3600000)},
      {"apdu_timeout_ms", whole(c.apdu_timeout_ms, 10, 60000)},
      {"removal_wait_ms", whole(c.removal_wait_ms, 0, 600000)},
      {"connect_timeout_ms", whole(c.connect_timeout_ms, 10, 60000)},
      {"backend_timeout_ms", whole(c.backend_timeout_ms, 10, 120000)},
      {"backend_attempts", whole(c.backend_attempts, 1, 10)},
      {"data_dir", file(c.data_dir)},
      {"dispenser_socket", file(c.dispenser_socket)},
      {"dispenser_take_s", whole(c.dispenser_take_s, 1, 600)},
      {"outcome_retry_s", whole(c.outcome_retry_s, 0, 3600)},
  };
}

std::string folder_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash == 0 ? 1 : slash);
}

}  // namespace

Result<Config> parse_config(std::string_view text, std::string_view base_dir, std::string_view source) {
  Config c;
  std::vector<std::string> urls;
  const cfg::Keys keys = keys_of(c, urls, base_dir);
  auto applied = cfg::apply(text, source, keys, kFormat);
  if (!applied) return std::move(applied).error();
  auto& lines = *applied;
  for (const char* req : {"reader", "backend_url", "ca_file", "cert_file", "key_file", "terminal_id"})
    if (!lines.count(req)) return cfg::error(source, 0, req, "missing (a required key)", Errc::not_found);
  // backend_url = "https://HOST[:PORT][/]" (HOST a name, an IPv4 or a bracketed IPv6 address),
  // an array of them, or one string of several separated by commas: the nodes of one
  // deployment, tried in turn (backend_link.cpp).
  std::string joined;
  for (const auto& url : urls) joined += (joined.empty() ? "" : ",") + url;
  auto backends = parse_backend_urls(joined);
  if (!backends) return cfg::error(source, lines["backend_url"], "backend_url", backends.error().message);
  c.backends = std::move(*backends);
  if (c.door_mode && c.door_id.empty())
    return cfg::error(source, lines["mode"], "mode", "\"door\" needs door_id", Errc::not_found);
  if (c.relay == RelayKind::command && c.relay_command.empty())
    return cfg::error(source, lines["relay"], "relay", "\"command\" needs relay_command", Errc::not_found);
  if (c.data_dir.empty()) c.data_dir = std::string(base_dir);
  return c;
}

Result<Config> load_config(const std::string& path) {
  auto text = cfg::read(path);
  if (!text) return std::move(text).error();
  return parse_config(*text, folder_of(path), path);
}

Result<std::string> convert_config_text(std::string_view text, std::string_view source) {
  Config scratch;
  std::vector<std::string> urls;
  auto toml = cfg::convert(text, source, keys_of(scratch, urls, "."), kFormat);
  if (!toml) return toml;
  // The result must load: a value the old reader would have refused is an error here too.
  if (auto c = parse_config(*toml, ".", source); !c) return std::move(c).error();
  return toml;
}

Result<std::string> convert_config(const std::string& path) {
  auto text = cfg::read(path);
  if (!text) return std::move(text).error();
  return convert_config_text(*text, path);
}

const char* config_keys() {
  return R"(CONFIG FILE
  TOML (https://toml.io), one key = value per line: strings in double quotes, numbers and
  true/false without; '#' starts a comment; every key at most once; an unknown key is an
  error. Relative file names are relative to the config file's folder. A file in the old
  format (values without quotes) is converted by otac-terminal --convert-config OLD > NEW.

  Required:
    reader = "CONNSTRING"   libnfc connstring, e.g. pn532_uart:/dev/ttyUSB0 (PN532 on a UART),
                            pn532_i2c:/dev/i2c-1, acr122_usb; or pcsc (first PC/SC reader) or
                            pcsc:NAME (the PC/SC reader whose name starts with NAME).
                            LIBNFC_DEFAULT_DEVICE overrides a libnfc reader when reader = libnfc.
    backend_url = "https://HOST:PORT"   the OTAC backend (TLS only): one node, or up to 8
                            nodes of one deployment as an array ["https://a:8443",
                            "https://b:8443"]. Each server certificate must name its HOST (DNS
                            name or IP address; IPv6 in brackets, "https://[::1]:8443") and
                            chain to ca_file. A request that gets no answer from a node (cannot
                            connect, TLS refused, timeout, connection lost) or an HTTP 5xx goes
                            to the next node with the same transaction id, each node at most
                            once per request; the node that last answered is tried first (kept
                            in data_dir/backend.node across runs).
    ca_file = "FILE"        the only CA trusted for the backend (PEM).
    cert_file = "FILE"      this terminal's client certificate (PEM), CN = terminal_id.
    key_file = "FILE"       its private key (PEM); keep it mode 0600.
    terminal_id = "ID"      exactly 8 characters; sent to the card in tag 9F1C.

  Optional (the value shown is the default):
    mode = "pos"|"door"     what the plain "run" does (default pos); the subcommands override.
    currency = "EUR"        ISO 4217 alphabetic or numeric code.
    door_id = "ID"          1..16 characters; required for door mode.
    relay = "none"|"gpiod"|"command"   how the door opens on an approval (default none).
    relay_chip = "gpiochip0"   GPIO chip (name or /dev path) for relay = gpiod.
    relay_line = 0          line offset on that chip.
    relay_active_low = false   true when the relay closes on a low level.
    relay_pulse_ms = 1000   how long the relay stays energized (50..30000).
    relay_command = "PROG"  for relay = command: run as PROG open DOOR_ID PULSE_MS; exit 0 = opened.
    pin_source = "tty"|"stdin"|"none"   where a PIN comes from when the card asks for one:
                            the controlling terminal without echo, one line of standard input,
                            or none (such transactions are declined). Default tty.
    pin_timeout_s = 30      time to enter a PIN.
    held_wait_limit_s = 60  how long to wait for an operator on a held transaction (0: do not wait).
    card_wait_ms = 15000    how long to wait for a card.
    apdu_timeout_ms = 1000  time limit of one APDU exchange (libnfc).
    removal_wait_ms = 10000 how long to wait for the card to leave after the decision.
    connect_timeout_ms = 3000   TCP connect + TLS handshake limit.
    backend_timeout_ms = 5000   limit for one request/answer with the backend.
    backend_attempts = 3    POSTs of the same transaction on network errors (same txn_id);
                            each of them tries the nodes of backend_url in turn.
    data_dir = "DIR"        where unacknowledged outcomes wait (DIR/outcomes/, one fsync'd file
                            each, replayed on the next run) and, with several backend nodes, the
                            one that answered last (DIR/backend.node); default: the config
                            file's folder.
    dispenser_socket = "PATH"   atm mode: the cash dispenser's Unix socket (otac-dispenser-emu, or a
                            driver speaking docs/protocol.md section 8).
    dispenser_take_s = 30   atm mode: seconds the customer has to take the notes (then retracted).
    outcome_retry_s = 5     how long a run retries outcomes the backend has not acknowledged
                            (bounded backoff, 0.5 s doubling to 8 s); the rest stays queued.
)";
}

}  // namespace otac::terminal
