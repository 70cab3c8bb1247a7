// otac-backend: the OTAC transaction backend (HTTPS API, Kannel SMS gateway link). This file
// wires the layers together: store and key custody, Service, the outbox pump with the Kannel
// gateway, the HTTPS router with the operator API and the console, and the MO listener.
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>

#include "api.hpp"
#include "config.hpp"
#include "kannel.hpp"
#include "custody.hpp"
#include "log.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/number.hpp"
#include "otac/common/url.hpp"
#include "otac/sys/cli.hpp"
#include "otac/sys/file.hpp"
#include "pki.hpp"
#include "router.hpp"
#include "server.hpp"
#include "service.hpp"
#include "sms_outbox.hpp"
#include "store_open.hpp"
#include "console.hpp"

namespace fs = std::filesystem;
using namespace otac;           // NOLINT: a program's main file
using namespace otac::backend;  // NOLINT

namespace {

// The text of --help after CLI11's list of the options and commands.
constexpr const char* kHelp = R"(
SYNOPSIS
    otac-backend --data-dir DIR [--config FILE] [--listen HOST:PORT] [--mo-listen HOST:PORT]
    otac-backend --default-config
    otac-backend --convert-config OLD-FILE > NEW-FILE
    otac-backend renew-certificate --data-dir DIR [--config FILE]
    otac-backend hsm-init --data-dir DIR [--config FILE]
    otac-backend hsm-migrate --data-dir DIR [--config FILE] [--batch N]
    otac-backend hsm-rotate --data-dir DIR [--config FILE] [--batch N] [--keep-old]
    otac-backend [COMMAND] --help
    otac-backend --version

DESCRIPTION
    Serves the HTTPS API of docs/protocol.md section 5: terminals authenticate with client
    certificates issued by the backend's private CA (mutual TLS, CN = terminal id); operators
    with bearer tokens (roles viewer, operator, admin) under /v1/admin/. Also /healthz and
    /metrics (Prometheus text). A second, plain-HTTP listener on loopback receives Kannel's
    MO messages (get-url) and delivery reports; a sender thread hands queued MT messages to
    Kannel's sendsms interface, retrying with exponential backoff while it is unreachable.

    First start: if FILE (default DIR/otac-backend.conf) does not exist, a commented default
    is written. Missing files are then created in DIR: ca.pem/ca.key (private CA, ECDSA P-256),
    server.pem/server.key (for 127.0.0.1, ::1 and localhost), kek.bin (key-encryption key,
    0600), mo.secret (0600), otac.db (SQLite, WAL), admin.token (0600; token of operator
    "admin"). Their paths are printed on standard error. Every start writes DIR/card-ca.pub:
    the card CA's P-256 point in hex (cards are activated with it; its private key and the
    server's list-signing key live in otac.db, sealed under kek.bin).

    Once listening, DIR/backend.port holds the HTTPS port and DIR/mo.port the MO port (useful
    with port 0). Logs go to standard error, one key=value line per request or event (the
    format of every OTAC program: ts=... level=... event=... key=value ...); secrets (keys,
    tokens, codes) are never logged.

    Certificates: the server certificate and terminal certificates are valid for 397 days
    (client_cert_days), counted from a start backdated 5 minutes. From 30 days before the
    server certificate expires, a warning is logged at start and once a day, and /metrics has
    otac_server_certificate_expiry_seconds throughout.

RENEW-CERTIFICATE
    Issues a new server certificate (397 days) under the same CA for the same key, CN and
    subject alternative names, and replaces the certificate file atomically (write, fsync,
    rename). The key file is unchanged. A running backend keeps serving the old certificate
    until it is restarted. Prints the new notAfter.

KEY CEREMONY (keys in a PKCS#11 token; kek_uri and friends in the config)
    hsm-init     makes what the token lacks: KEK version 1, the audit-log key and, with
                 server_key_uri and card_ca_key_uri, the two ECDSA P-256 key pairs. For a
                 new store (refused when kek_file exists beside the SQLite database, or
                 the PostgreSQL database holds values the file KEK sealed).
    hsm-migrate  moves a file-KEK store into the token: imports the audit-log key and the
                 server and card CA keys (cards trust them), re-wraps every card key and code
                 under the token's KEK in transactions of --batch rows (default 200), then
                 drops the stored private keys. Resumable; safe to kill at any point.
    hsm-rotate   makes a new KEK version, waits for running backends to seal under it,
                 re-wraps every value in batches while they serve (they open both versions),
                 then destroys the old versions (--keep-old keeps them). Run again to
                 resume an interrupted rotation.
    Each works on the configured store (SQLite or PostgreSQL) and writes an audit entry.
    The PIN is read from pkcs11_pin_file (0600). Each command takes --data-dir and --config
    after its name (or before it).

OPTIONS
    --data-dir DIR        data directory (created 0700 if absent). Required.
    --config FILE         configuration file (TOML; --default-config shows every key).
                          Default DIR/otac-backend.conf.
    --listen HOST:PORT    HTTPS listener; overrides "listen" in the config.
    --mo-listen HOST:PORT Kannel listener; overrides "mo_listen"; must be a loopback address.
    --default-config      print the commented default configuration and exit (the text a
                          first start writes; the Debian package installs it in /etc/otac).
    --convert-config OLD  print a config file of the old "key = value" format as TOML, same
                          lines and values (docs/operations.md, "Config files").
    --batch N             hsm-migrate, hsm-rotate: rows per transaction, 1 to 100000
                          (default 200).
    --keep-old            hsm-rotate: keep the old KEK versions in the token.
    --help                this text; COMMAND --help: that command's options.
    --version             the program's version.

KANNEL
    get-url = "http://127.0.0.1:MOPORT/v1/sms/mo?secret=SECRET&from=%p&to=%P&udh=%u&data=%b"
    with SECRET from DIR/mo.secret. See docs/operations.md.

SIGNALS
    SIGTERM, SIGINT: stop accepting, finish requests in progress, exit 0.

EXIT STATUS
    0 clean shutdown, 1 failure (logged on standard error), 2 usage error (one line naming
    the option).
)";

int fail(const std::string& msg) {
  log::error("failed", {{"error", msg}});
  return 1;
}

bool is_loopback(const std::string& host) { return host == "127.0.0.1" || host == "::1"; }

// Creates what a first start needs; returns the list of created files for the message.
Result<std::vector<std::string>> bootstrap(const Config& c) {
  std::vector<std::string> created;
  const fs::path ca_cert = c.resolve(c.ca_cert), ca_key = c.resolve(c.ca_key);
  if (!fs::exists(ca_cert) || !fs::exists(ca_key)) {
    if (fs::exists(ca_cert) != fs::exists(ca_key))
      return make_error(Errc::state, "only one of " + ca_cert.string() + " and " + ca_key.string() +
                                         " exists; restore the other or delete both to create a new CA");
    auto ca = pki::make_ca("OTAC private CA", 3650);
    if (!ca) return ca.error();
    if (auto w = sys::write_file_atomic(ca_key, ca->key_pem, {.mode = 0600}); !w) return w.error();
    if (auto w = sys::write_file_atomic(ca_cert, ca->cert_pem, {.mode = 0644}); !w) return w.error();
    created.push_back(ca_cert.string() + " (CA certificate; give it to terminals and otac-admin)");
    created.push_back(ca_key.string() + " (CA private key, 0600)");
  }
  const fs::path cert = c.resolve(c.tls_cert), key = c.resolve(c.tls_key);
  if (!fs::exists(cert) || !fs::exists(key)) {
    auto cap = sys::read_file(ca_cert);
    if (!cap) return cap.error();
    auto cak = sys::read_file(ca_key);
    if (!cak) return cak.error();
    auto kc = pki::issue_server(pki::KeyCert{*cak, *cap}, "localhost", {"localhost"}, {"127.0.0.1", "::1"},
                                pki::max_leaf_days);
    if (!kc) return kc.error();
    if (auto w = sys::write_file_atomic(key, kc->key_pem, {.mode = 0600}); !w) return w.error();
    if (auto w = sys::write_file_atomic(cert, kc->cert_pem, {.mode = 0644}); !w) return w.error();
    created.push_back(cert.string() + " (server certificate for 127.0.0.1, ::1, localhost)");
  }
  const fs::path secret = c.resolve(c.mo_secret_file);
  if (!fs::exists(secret)) {
    if (auto w = sys::write_file_atomic(secret, to_hex(crypto::random_bytes(16)) + "\n", {.mode = 0600}); !w) return w.error();
    created.push_back(secret.string() + " (Kannel get-url secret, 0600)");
  }
  return created;
}

// Warn this long before the server certificate expires.
constexpr std::int64_t kCertWarnSeconds = 30 * 86400;

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Logs a warning when the served certificate expires within kCertWarnSeconds (or has expired).
void warn_if_expiring(std::int64_t not_after, const fs::path& data_dir) {
  const std::int64_t left = not_after - unix_now();
  if (left > kCertWarnSeconds) return;
  log::warn("server_certificate_expiring",
            {{"not_after", std::to_string(not_after)},
             {"days_left", std::to_string(left / 86400)},
             {"expired", left <= 0 ? "yes" : "no"},
             {"action", "run otac-backend renew-certificate --data-dir " + data_dir.string() + ", then restart"}});
}

// otac-backend renew-certificate: a new server certificate for the same key, names and CA.
int renew_certificate(const Config& c) {
  auto ca_cert = sys::read_file(c.resolve(c.ca_cert));
  if (!ca_cert) return fail(ca_cert.error().message);
  auto ca_key = sys::read_file(c.resolve(c.ca_key));
  if (!ca_key) return fail(ca_key.error().message);
  const fs::path cert_path = c.resolve(c.tls_cert), key_path = c.resolve(c.tls_key);
  auto cert = sys::read_file(cert_path);
  if (!cert) return fail(cert.error().message + " (renew-certificate renews an existing certificate; start the backend once to create one)");
  auto key = sys::read_file(key_path);
  if (!key) return fail(key.error().message);
  auto fresh = pki::reissue_server(pki::KeyCert{std::move(*ca_key), std::move(*ca_cert)},
                                   pki::KeyCert{std::move(*key), *cert}, pki::max_leaf_days);
  if (!fresh) return fail("cannot renew " + cert_path.string() + ": " + fresh.error().message);
  if (auto w = sys::write_file_atomic(cert_path, *fresh, {.mode = 0644}); !w) return fail(w.error().message);
  auto na = pki::not_after(*fresh);
  if (!na) return fail(na.error().message);
  char when[32] = "?";
  const std::time_t t = static_cast<std::time_t>(*na);
  std::tm tm{};
  if (gmtime_r(&t, &tm)) std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  std::printf("renewed %s: valid until %s (%lld); restart otac-backend to serve it\n", cert_path.c_str(), when,
              static_cast<long long>(*na));
  return 0;
}

// otac-backend hsm-init | hsm-migrate | hsm-rotate: prints the summary (also in the audit log).
int run_ceremony(std::string_view sub, const Config& c, CeremonyOptions o) {
  o.rewrap.progress = [](std::uint64_t n) { log::info("rewrapped", {{"keys", std::to_string(n)}}); };
  auto r = sub == "hsm-init" ? hsm_init(c, o) : sub == "hsm-migrate" ? hsm_migrate(c, o) : hsm_rotate(c, o);
  if (!r) return fail(std::string(sub) + ": " + r.error().message);
  std::printf("%s\n", r->c_str());
  return 0;
}

// The outbox pump's events in the log (never the payload, never the sendsms URL).
void log_pump_event(const PumpEvent& e) {
  switch (e.kind) {
    case PumpEvent::Kind::sent:
      log::info("sms_sent", {{"id", std::to_string(e.id)}, {"to", e.to}, {"attempt", std::to_string(e.attempt)},
                             {"bytes", std::to_string(e.bytes)}, {"reply", e.reply}});
      break;
    case PumpEvent::Kind::retry:
      log::warn("sms_retry", {{"id", std::to_string(e.id)}, {"to", e.to}, {"attempt", std::to_string(e.attempt)},
                              {"retry_in_s", std::to_string(e.retry_in.count())}, {"reply", e.reply}});
      break;
    case PumpEvent::Kind::store_failed:
      log::error("sms_outbox_failed", {{"id", std::to_string(e.id)}, {"reason", e.reply}});
      break;
  }
}

std::string trim_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string data_dir, config_file, listen_override, mo_override;
  CeremonyOptions ceremony_options;
  // The command line through CLI11 (otac/sys/cli.hpp).
  CLI::App app{"The OTAC transaction backend: authorizations, card lists over SMS, operators.", "otac-backend"};
  otac::sys::cli_defaults(app);
  app.footer(kHelp);
  app.add_flag_callback(
      "--default-config",
      [] {
        std::fputs(default_config_text().c_str(), stdout);
        throw CLI::Success();
      },
      "print the commented default configuration and exit");
  // An old key = value file as TOML, same lines and values (docs/operations.md "Config files").
  int convert_status = -1;
  app.add_option_function<std::string>(
         "--convert-config",
         [&convert_status](const std::string& old) {
           auto toml = convert_config(old);
           if (!toml) {
             convert_status = fail(toml.error().message);
           } else {
             std::fputs(toml->c_str(), stdout);
             convert_status = 0;
           }
           throw CLI::Success();
         },
         "print the old key = value config file OLD as TOML and exit")
      ->type_name("OLD");
  // --data-dir and --config: before a command or after it (the commands' own options).
  const auto dirs = [&](CLI::App* a) {
    a->add_option("--data-dir", data_dir, "data directory, created 0700 if absent (required)")->type_name("DIR");
    a->add_option("--config", config_file, "configuration file (default DIR/otac-backend.conf)")->type_name("FILE");
  };
  const auto batch = [&](CLI::App* a) {
    a->add_option("--batch", ceremony_options.rewrap.batch, "rows per transaction (default 200)")
        ->type_name("N")
        ->check(CLI::Range(1u, 100000u));
  };
  dirs(&app);
  app.add_option("--listen", listen_override, "HTTPS listener; overrides listen in the config")->type_name("HOST:PORT");
  app.add_option("--mo-listen", mo_override, "Kannel listener on loopback; overrides mo_listen")->type_name("HOST:PORT");
  CLI::App* renew_cmd = app.add_subcommand("renew-certificate", "a new server certificate for the same key, names and CA");
  CLI::App* init_cmd = app.add_subcommand("hsm-init", "makes the keys a new store needs in the PKCS#11 token");
  CLI::App* migrate_cmd = app.add_subcommand("hsm-migrate", "moves a file-KEK store into the PKCS#11 token");
  CLI::App* rotate_cmd = app.add_subcommand("hsm-rotate", "re-wraps every key under a new KEK version");
  for (CLI::App* c : {renew_cmd, init_cmd, migrate_cmd, rotate_cmd}) {
    c->footer("otac-backend --help describes every command and option.");
    dirs(c);
  }
  batch(migrate_cmd);
  batch(rotate_cmd);
  rotate_cmd->add_flag("--keep-old", ceremony_options.keep_old, "keep the old KEK versions in the token");
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (convert_status >= 0) return convert_status;
    return otac::sys::cli_exit(app, e);
  }
  const std::string_view sub = app.get_subcommands().empty() ? std::string_view() : app.get_subcommands().front()->get_name();
  const bool renew = renew_cmd->parsed();
  const bool ceremony = !sub.empty() && !renew;
  const auto usage = [&app](const std::string& msg) { return otac::sys::cli_usage_error(app, msg); };
  if (data_dir.empty()) return usage("--data-dir DIR is required");
  if (renew || ceremony) {
    if (!listen_override.empty() || !mo_override.empty()) return usage("--listen, --mo-listen: " + std::string(sub) + " takes no listen address");
    Config base;
    base.data_dir = fs::absolute(data_dir);
    const fs::path cfg_path = config_file.empty() ? base.data_dir / "otac-backend.conf" : fs::path(config_file);
    Config c = base;
    if (fs::exists(cfg_path)) {
      auto cfg = load_config(cfg_path, base);
      if (!cfg) return fail(cfg.error().message);
      c = std::move(*cfg);
    }
    if (renew) return renew_certificate(c);
    return run_ceremony(sub, c, ceremony_options);
  }

  std::error_code ec;
  fs::create_directories(data_dir, ec);
  if (ec) return fail("cannot create data directory " + data_dir + ": " + ec.message());
  ::chmod(data_dir.c_str(), 0700);
  Config base;
  base.data_dir = fs::absolute(data_dir);
  const fs::path cfg_path = config_file.empty() ? base.data_dir / "otac-backend.conf" : fs::path(config_file);
  bool first_start = false;
  if (!fs::exists(cfg_path)) {
    if (auto w = sys::write_file_atomic(cfg_path, default_config_text(), {.mode = 0600}); !w) return fail(w.error().message);
    first_start = true;
  }
  auto cfg = load_config(cfg_path, base);
  if (!cfg) return fail(cfg.error().message);
  Config c = std::move(*cfg);
  if (!listen_override.empty()) c.listen = listen_override;
  if (!mo_override.empty()) c.mo_listen = mo_override;
  auto listen = parse_host_port(c.listen);
  if (!listen) return usage((listen_override.empty() ? "listen in " + cfg_path.string() : std::string("--listen")) + ": " + listen.error().message);
  auto mo_listen = parse_host_port(c.mo_listen);
  if (!mo_listen) return usage((mo_override.empty() ? "mo_listen in " + cfg_path.string() : std::string("--mo-listen")) + ": " + mo_listen.error().message);
  const std::string host = listen->host, mo_host = mo_listen->host;
  const std::uint16_t port = listen->port, mo_port = mo_listen->port;
  if (!is_loopback(mo_host))
    return usage((mo_override.empty() ? "mo_listen in " + cfg_path.string() : std::string("--mo-listen")) +
                 ": the MO listener is plain HTTP and must be on 127.0.0.1 or ::1");

  auto created = bootstrap(c);
  if (!created) return fail(created.error().message);
  if (first_start) created->insert(created->begin(), cfg_path.string() + " (configuration, commented defaults)");
  auto kekp_r = open_custody(c, &*created);
  if (!kekp_r) return fail(kekp_r.error().message);
  auto kekp = std::move(*kekp_r);
  auto open_store = store_opener(c, kekp);
  if (!open_store) return fail(open_store.error().message);
  ServiceConfig sc;
  auto currencies = load_iso4217(c.resolve(c.iso4217_file));
  if (!currencies) return fail(currencies.error().message);
  auto default_currency = currencies->resolve(c.default_currency);
  if (!default_currency) return fail("config default_currency: " + default_currency.error().message);
  sc.currencies = std::move(*currencies);
  sc.default_currency = *default_currency;
  sc.max_amount_minor = c.max_amount_minor;
  sc.server_msisdn = c.server_msisdn;
  sc.list_size = static_cast<std::uint16_t>(c.list_size);
  sc.default_threshold = c.threshold;
  sc.default_fail_limit = c.fail_limit;
  sc.max_wait = std::chrono::seconds(c.max_wait_seconds);
  sc.hold_limit = std::chrono::seconds(c.hold_limit_seconds);
  sc.list_repair_after = std::chrono::seconds(c.list_repair_seconds);
  sc.cash_card_daily_minor = c.cash_card_daily_minor;
  sc.cash_terminal_daily_minor = c.cash_terminal_daily_minor;
  sc.cash_complete_within = std::chrono::seconds(c.cash_complete_seconds);
  // Declines beyond a terminal's or a card's budget are answered but not stored.
  DeclineLimits dl;
  dl.source_burst = c.decline_source_burst;
  dl.source_refill = std::chrono::milliseconds(c.decline_source_interval_ms);
  dl.card_burst = c.decline_card_burst;
  dl.card_refill = std::chrono::milliseconds(c.decline_card_interval_ms);
  DeclineLimiter declines(dl);
  sc.record_decline = [&declines](std::string_view terminal, ByteView card) { return declines.admit(terminal, card); };
  Service service(sc, std::move(*open_store));

  const fs::path token_file = c.resolve(c.admin_token_file);
  if (!fs::exists(token_file)) {
    auto tok = service.create_operator("admin", Role::admin, "system");
    if (!tok) return fail("cannot create the admin operator: " + tok.error().message);
    if (auto w = sys::write_file_atomic(token_file, *tok + "\n", {.mode = 0600}); !w) return fail(w.error().message);
    created->push_back(token_file.string() + " (token of operator 'admin', 0600)");
  }
  // The card CA's public point, for personalizing cards (otac-card activate --ca-key); public.
  auto card_ca = service.card_ca_public();
  if (!card_ca) return fail("cannot create or read the card CA key: " + card_ca.error().message);
  if (!fs::exists(c.data_dir / "card-ca.pub")) created->push_back((c.data_dir / "card-ca.pub").string() + " (card CA public point, hex)");
  if (auto w = sys::write_file_atomic(c.data_dir / "card-ca.pub", to_hex(*card_ca) + "\n", {.mode = 0644}); !w) return fail(w.error().message);
  if (!created->empty()) {
    log::info("first_start", {{"data_dir", c.data_dir.string()}, {"created", std::to_string(created->size())}});
    for (const auto& f : *created) {  // "PATH (what it is)"
      const auto paren = f.find(" (");
      log::info("created", {{"file", f.substr(0, paren)},
                            {"what", paren == std::string::npos ? std::string() : f.substr(paren + 2, f.size() - paren - 3)}});
    }
  }

  auto ca_cert = sys::read_file(c.resolve(c.ca_cert));
  if (!ca_cert) return fail(ca_cert.error().message);
  auto ca_key = sys::read_file(c.resolve(c.ca_key));
  if (!ca_key) return fail(ca_key.error().message);
  auto mo_secret = sys::read_file(c.resolve(c.mo_secret_file));
  if (!mo_secret) return fail(mo_secret.error().message);

  http::RequestMetrics metrics;
  http::OperatorGate gate(service, &metrics);
  http::ApiContext api;
  api.service = &service;
  api.metrics = &metrics;
  api.gate = &gate;
  api.declines = &declines;
  api.ca = pki::KeyCert{std::move(*ca_key), std::move(*ca_cert)};
  api.client_cert_days = static_cast<int>(c.client_cert_days);
  if (api.client_cert_days > pki::max_leaf_days) {
    log::warn("client_cert_days_lowered", {{"configured", std::to_string(c.client_cert_days)},
                                           {"used", std::to_string(pki::max_leaf_days)},
                                           {"why", "certificates are issued for at most 397 days"}});
    api.client_cert_days = pki::max_leaf_days;
  }
  api.max_wait_seconds = c.max_wait_seconds;
  std::atomic<bool> stopping{false};
  api.stopping = [&stopping] { return stopping.load(); };
  if (const TokenKek* token = kekp->token()) {
    api.custody_check = [token]() -> Result<void> {
      static const Bytes probe = to_bytes("OTAC health check");  // public; the MAC is dropped
      if (auto m = token->audit_mac(probe); !m) return m.error();
      return {};
    };
  }
  http::Router router;
  http::install_api(router, api);
  // The console's views read through this Service; its actions go through this router.
  console::ConsoleOptions console_options;
  console_options.gate = &gate;
  console::Console console(service, router, console_options);
  console.install(router);
  std::atomic<OutboxPump*> pump_ptr{nullptr};
  http::Router mo_router;
  // An MO message may queue an answer (a list): wake the pump instead of waiting for its poll.
  sms::install_mo_routes(mo_router, service, trim_line(*mo_secret), [&pump_ptr] {
    if (auto* p = pump_ptr.load()) p->wake();
  });

  // Block the stop signals in every thread; the main thread waits for them below.
  sigset_t stop_set;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGTERM);
  sigaddset(&stop_set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  http::Limits limits;
  limits.max_body = c.max_body_bytes;
  limits.max_connections = c.max_connections;
  limits.max_unauthenticated = c.max_unauthenticated_connections;
  limits.max_per_source = c.max_connections_per_source;
  limits.handshake_timeout = std::chrono::seconds(c.handshake_timeout_seconds);
  limits.read_timeout = std::chrono::seconds(c.request_timeout_seconds);
  limits.write_timeout = std::chrono::seconds(c.request_timeout_seconds);
  limits.io_threads = c.io_threads;
  limits.workers = c.worker_threads;
  limits.slow_workers = c.slow_threads;
  http::Server server(limits, metrics);
  auto bound = server.listen_tls(host, port, http::TlsFiles{c.resolve(c.tls_cert), c.resolve(c.tls_key), c.resolve(c.ca_cert)}, router);
  if (!bound) return fail(bound.error().message);
  auto mo_bound = server.listen_plain(mo_host, mo_port, mo_router);
  if (!mo_bound) return fail(mo_bound.error().message);
  server.start();
  // The certificate now being served: its expiry in /metrics, a warning when it is near.
  std::int64_t cert_not_after = 0;
  if (auto pem = sys::read_file(c.resolve(c.tls_cert))) {
    if (auto na = pki::not_after(*pem)) cert_not_after = *na;
  }
  if (cert_not_after != 0) {
    metrics.server_certificate(cert_not_after);
    warn_if_expiring(cert_not_after, c.data_dir);
  } else {
    log::warn("server_certificate_unreadable", {{"file", c.resolve(c.tls_cert).string()}});
  }
  std::int64_t cert_checked_at = unix_now();
  std::int64_t pruned_at = 0;  // retention runs at start, then hourly (at once again while a backlog is left)

  std::unique_ptr<sms::KannelGateway> gateway;
  std::unique_ptr<OutboxPump> pump;
  if (!c.kannel_sendsms_url.empty()) {
    sms::KannelConfig kc;
    if (auto u = sms::set_sendsms_url(kc, c.kannel_sendsms_url); !u)
      return fail("kannel_sendsms_url: " + u.error().message);
    kc.user = c.kannel_user;
    kc.pass = c.kannel_pass;
    kc.from = c.server_msisdn;
    kc.smsc_id = c.kannel_smsc_id;
    if (c.kannel_dlr) {
      kc.dlr_url_prefix = "http://" + join_host_port(mo_host, *mo_bound) +
                          "/v1/sms/dlr?secret=" + trim_line(*mo_secret);
    }
    gateway = std::make_unique<sms::KannelGateway>(kc);
    OutboxPumpConfig pc;
    pc.retry_base = std::chrono::seconds(c.sms_retry_base_seconds);
    pc.retry_max = std::chrono::seconds(c.sms_retry_max_seconds);
    pump = std::make_unique<OutboxPump>(service, *gateway, pc, unix_now, log_pump_event);
    pump_ptr = pump.get();
    pump->start();
  } else {
    log::warn("sms_disabled", {{"why", "kannel_sendsms_url is empty; MT messages stay queued"}});
  }

  // Port files last: their presence means "ready".
  if (auto w = sys::write_file_atomic(c.data_dir / "mo.port", std::to_string(*mo_bound) + "\n", {.mode = 0644}); !w) return fail(w.error().message);
  if (auto w = sys::write_file_atomic(c.data_dir / "backend.port", std::to_string(*bound) + "\n", {.mode = 0644}); !w) return fail(w.error().message);
  log::info("listening", {{"https", join_host_port(host, *bound)},
                          {"mo", join_host_port(mo_host, *mo_bound)},
                          {"data_dir", c.data_dir.string()},
                          {"sms", c.kannel_sendsms_url.empty() ? "disabled" : "kannel"}});

  // Wait for a stop signal; meanwhile expire held transactions whose deadline passed once a
  // second (reads and decisions expire them too; this keeps the audit log and metrics timely).
  int sig = 0;
  std::uint64_t ticks = 0;
  for (;;) {
    const timespec second{1, 0};
    sig = sigtimedwait(&stop_set, nullptr, &second);
    if (sig == SIGTERM || sig == SIGINT) break;
    if (auto e = service.expire_held(256); !e) log::warn("expire_held_failed", {{"error", e.error().message}});
    if (auto e = service.reverse_stale_cash(256); !e) log::warn("auto_reverse_failed", {{"error", e.error().message}});
    else if (*e != 0) log::info("cash_auto_reversed", {{"count", std::to_string(*e)}});
    if (++ticks % 10 == 0) {  // unanswered list, E2, E3 and E4 packets (protocol.md 6.4): every 10 s is plenty
      if (auto e = service.repair_lists(256); !e) log::warn("repair_lists_failed", {{"error", e.error().message}});
      else if (*e != 0) log::info("lists_resent", {{"count", std::to_string(*e)}});
      if (auto e = service.repair_rotations(256); !e) log::warn("repair_rotations_failed", {{"error", e.error().message}});
      else if (*e != 0) log::info("rotation_keys_resent", {{"count", std::to_string(*e)}});
      if (auto e = service.repair_key_packets(256); !e) log::warn("repair_key_packets_failed", {{"error", e.error().message}});
      else if (*e != 0) log::info("key_packets_resent", {{"count", std::to_string(*e)}});
    }
    if (c.decline_retention_days != 0 && unix_now() - pruned_at >= 3600) {
      constexpr std::uint32_t kBatch = 5000;  // one short write transaction per second at most
      auto p = service.prune_declined(std::chrono::hours(24) * c.decline_retention_days, kBatch);
      if (!p) log::warn("retention_failed", {{"error", p.error().message}});
      else if (*p > 0) log::info("retention_pruned", {{"rows", std::to_string(*p)}});
      pruned_at = p && *p == kBatch ? 0 : unix_now();
    }
    if (cert_not_after != 0 && unix_now() - cert_checked_at >= 86400) {
      cert_checked_at = unix_now();
      warn_if_expiring(cert_not_after, c.data_dir);
    }
  }
  log::info("stopping", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  stopping = true;
  server.stop();  // first: no MO handler may touch the pump afterwards
  pump_ptr = nullptr;
  if (pump) pump->stop();
  http::report_suppressed(service, declines, true);  // the last minute's count
  log::info("stopped");
  return 0;
}
