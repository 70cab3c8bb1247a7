#include "config.hpp"

#include "otac/sys/config_file.hpp"
#include "pg_store.hpp"
#include "pkcs11.hpp"

namespace otac::backend {
namespace {

namespace cfg = sys::config;

const cfg::Format kFormat{.keys_help = "otac-backend --default-config",
                          .convert_command = "otac-backend --convert-config",
                          .old_comment_anywhere = false,
                          .old_strip_quotes = true,
                          .old_last_wins = true};

// Every key, its type and its checks, writing into c.
cfg::Keys keys_of(Config& c) {
  using cfg::whole;
  auto str = [](std::string& dst) { return cfg::text(dst); };
  auto path = [](std::filesystem::path& dst) {
    return cfg::text_to([&dst](const std::string& s) -> Result<void> {
      if (s.empty()) return make_error(Errc::bad_value, "empty path");
      dst = s;
      return {};
    });
  };
  // Empty, or a PKCS#11 URI without a PIN (parsed again, with the token, at start).
  auto pkcs11_uri = [](std::string& dst) {
    return cfg::text_to([&dst](const std::string& s) -> Result<void> {
      if (!s.empty()) {
        auto u = p11::parse_uri(s);
        if (!u) return u.error();
        if (u->object.empty()) return make_error(Errc::bad_value, "must name the key with object=LABEL");
      }
      dst = s;
      return {};
    });
  };
  return {
      {"listen", str(c.listen)},
      {"mo_listen", str(c.mo_listen)},
      {"ca_cert", path(c.ca_cert)},
      {"ca_key", path(c.ca_key)},
      {"tls_cert", path(c.tls_cert)},
      {"tls_key", path(c.tls_key)},
      {"kek_file", path(c.kek_file)},
      {"database", path(c.database)},
      {"store", cfg::text_to([&c](const std::string& s) -> Result<void> {
         if (s != "sqlite" && s != "postgresql") return make_error(Errc::bad_value, "must be sqlite or postgresql");
         c.store = s;
         return {};
       })},
      {"postgres_conninfo", cfg::text_to([&c](const std::string& s) -> Result<void> {
         if (auto ok = check_pg_conninfo(s); !ok) return ok;
         c.postgres_conninfo = s;
         return {};
       })},
      {"postgres_start_timeout_seconds", whole(c.postgres_start_timeout_seconds, 0, 86400)},
      {"kek_uri", pkcs11_uri(c.kek_uri)},
      {"server_key_uri", pkcs11_uri(c.server_key_uri)},
      {"card_ca_key_uri", pkcs11_uri(c.card_ca_key_uri)},
      {"pkcs11_module", path(c.pkcs11_module)},
      {"pkcs11_pin_file", path(c.pkcs11_pin_file)},
      {"mo_secret_file", path(c.mo_secret_file)},
      {"admin_token_file", path(c.admin_token_file)},
      {"server_msisdn", str(c.server_msisdn)},
      {"list_size", whole(c.list_size, 1, 120)},
      {"threshold", whole(c.threshold, 0, 1000)},
      {"fail_limit", whole(c.fail_limit, 1, 1000)},
      {"max_wait_seconds", whole(c.max_wait_seconds, 0, 300)},
      {"hold_limit_seconds", whole(c.hold_limit_seconds, 1, 86400)},
      {"list_repair_seconds", whole(c.list_repair_seconds, 60, 86400)},
      {"default_currency", str(c.default_currency)},
      {"max_amount_minor", whole(c.max_amount_minor, 0, 2'000'000'000)},
      {"iso4217_file", path(c.iso4217_file)},
      {"cash_card_daily_minor", whole(c.cash_card_daily_minor, 0, 2'000'000'000)},
      {"cash_terminal_daily_minor", whole(c.cash_terminal_daily_minor, 0, 2'000'000'000)},
      {"cash_complete_seconds", whole(c.cash_complete_seconds, 10, 86400)},
      {"kannel_sendsms_url", str(c.kannel_sendsms_url)},
      {"kannel_user", str(c.kannel_user)},
      {"kannel_pass", str(c.kannel_pass)},
      {"kannel_smsc_id", str(c.kannel_smsc_id)},
      {"kannel_dlr", cfg::flag(c.kannel_dlr)},
      {"sms_retry_base_seconds", whole(c.sms_retry_base_seconds, 1, 3600)},
      {"sms_retry_max_seconds", whole(c.sms_retry_max_seconds, 1, 86400)},
      {"max_body_bytes", whole(c.max_body_bytes, 1024, 16u << 20)},
      {"max_connections", whole(c.max_connections, 1, 100000)},
      {"request_timeout_seconds", whole(c.request_timeout_seconds, 1, 3600)},
      {"handshake_timeout_seconds", whole(c.handshake_timeout_seconds, 1, 60)},
      {"max_connections_per_source", whole(c.max_connections_per_source, 1, 100000)},
      {"max_unauthenticated_connections", whole(c.max_unauthenticated_connections, 0, 100000)},
      {"io_threads", whole(c.io_threads, 1, 64)},
      {"worker_threads", whole(c.worker_threads, 1, 256)},
      {"slow_threads", whole(c.slow_threads, 1, 1024)},
      {"client_cert_days", whole(c.client_cert_days, 1, 3650)},
      {"decline_source_burst", whole(c.decline_source_burst, 1, 1'000'000)},
      {"decline_source_interval_ms", whole(c.decline_source_interval_ms, 1, 86'400'000)},
      {"decline_card_burst", whole(c.decline_card_burst, 1, 1'000'000)},
      {"decline_card_interval_ms", whole(c.decline_card_interval_ms, 1, 86'400'000)},
      {"decline_retention_days", whole(c.decline_retention_days, 0, 36500)},
  };
}

}  // namespace

Result<Config> parse_config(std::string_view text, Config c, std::string_view source) {
  const cfg::Keys keys = keys_of(c);
  auto lines = cfg::apply(text, source, keys, kFormat);
  if (!lines) return std::move(lines).error();
  if (c.store == "postgresql" && c.postgres_conninfo.empty())
    return cfg::error(source, (*lines)["store"], "store",
                      "postgresql needs postgres_conninfo (a libpq connection string or URI)");
  return c;
}

Result<Config> load_config(const std::filesystem::path& file, Config base) {
  auto text = cfg::read(file);
  if (!text) return std::move(text).error();
  return parse_config(*text, std::move(base), file.string());
}

Result<std::string> convert_config_text(std::string_view text, std::string_view source) {
  Config scratch;
  auto toml = cfg::convert(text, source, keys_of(scratch), kFormat);
  if (!toml) return toml;
  // The result must load: a value the old reader would have refused is an error here too.
  if (auto c = parse_config(*toml, Config{}, source); !c) return std::move(c).error();
  return toml;
}

Result<std::string> convert_config(const std::filesystem::path& file) {
  auto text = cfg::read(file);
  if (!text) return std::move(text).error();
  return convert_config_text(*text, file.string());
}

std::string default_config_text() {
  return R"(# otac-backend configuration, in TOML (https://toml.io): key = value, strings in double
# quotes, numbers and true/false without; '#' starts a comment. Unknown keys are errors.
# Relative paths are relative to the data directory (--data-dir).
# Written on a first start without it (or installed by the package); edit it and restart.

# HTTPS listener for terminals (client certificates) and operators (bearer tokens).
# "--listen" on the command line overrides it. Port 0 picks a free port (see backend.port).
listen = "127.0.0.1:8443"
# Plain-HTTP listener for Kannel (MO get-url and delivery reports). Loopback only; requests
# must carry the secret from mo_secret_file. The bound port is written to mo.port.
mo_listen = "127.0.0.1:0"

# Private CA (ECDSA P-256) that signs the server certificate and terminal client certificates.
ca_cert = "ca.pem"
ca_key = "ca.key"
tls_cert = "server.pem"
tls_key = "server.key"
# Key-encryption key for card keys and codes at rest (32 bytes, mode 0600).
kek_file = "kek.bin"
database = "otac.db"
# The store: sqlite (the file above; one node) or postgresql (several nodes on one database,
# docs/operations.md "Several nodes on PostgreSQL"). postgres_conninfo is a libpq connection
# string or URI; sslmode and the other libpq keywords apply. The password never goes here:
# libpq reads it from a passfile (passfile=PATH in the string, or PGPASSFILE), mode 0600.
# A node that cannot reach PostgreSQL at start retries with backoff for
# postgres_start_timeout_seconds, then exits with the reason.
# Example: postgres_conninfo = "host=db.example sslmode=verify-full dbname=otac user=otac"
store = "sqlite"
postgres_conninfo = ""
postgres_start_timeout_seconds = 300

# Keys in a PKCS#11 token (an HSM; SoftHSM2 for tests). Empty kek_uri: the file KEK above.
# With kek_uri, card keys and codes are wrapped by the token's AES key (AES-GCM inside the
# token); kek_file, if it still exists, only opens values not yet migrated. With
# server_key_uri and card_ca_key_uri, ECDSA signatures (E4, E5) are made inside the token.
# Set up with "otac-backend hsm-init" (new store) or "hsm-migrate" (existing store); rotate
# with "hsm-rotate". The PIN is read from pkcs11_pin_file (mode 0600), never from here.
# Example: kek_uri = "pkcs11:token=otac;object=kek"
kek_uri = ""
server_key_uri = ""
card_ca_key_uri = ""
pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"
pkcs11_pin_file = "hsm.pin"
mo_secret_file = "mo.secret"
# Token of the first operator ("admin", role admin), written on first start (mode 0600).
admin_token_file = "admin.token"
# Validity of issued terminal certificates, days (at most 397, counted from the 5-minute
# backdated start; a larger value, as older versions wrote here, is lowered to 397).
client_cert_days = 397

# The SMS number cards send to (printed in initialization letters).
server_msisdn = "+15550100"
# Codes per list (at most 120: a list must fit one concatenated OTA packet).
list_size = 100
# Unused codes at or below which a new list is pushed to the card.
threshold = 20
# Bad cryptograms in a row that block a card.
fail_limit = 5
# Longest wait a terminal may ask for on GET /v1/authorizations/{txn}?wait=S.
max_wait_seconds = 30
# A transaction held for review expires (declined, held_timeout) this long after it was held,
# unless an operator decided it first or its terminal gave up earlier. Terminals are told the
# time left and never wait longer; one with a shorter limit cancels it when it stops waiting.
hold_limit_seconds = 120
# A list whose SMS packet got no Proof of Receipt (the SMS or the PoR was lost) goes out
# again, same codes, after this long, then after twice as long, up to six packets in all.
list_repair_seconds = 900

# Transactions. Cards are enrolled in default_currency unless the operator names another;
# a purchase in any other currency declines currency_not_allowed. Terminal limits are in
# this currency. The ISO 4217 list comes from Debian's iso-codes package.
default_currency = "EUR"
# No purchase above this many minor units is approved (0 = no global maximum).
max_amount_minor = 10000000
iso4217_file = "/usr/share/iso-codes/json/iso_4217.json"

# Cash withdrawals (9C 01) at ATMs (protocol.md §5.4). A card may withdraw at most
# cash_card_daily_minor per UTC day (0: no withdrawal is approved) unless it has its own limit
# (otac-admin card-set --cash-daily), and one terminal may pay out
# at most cash_terminal_daily_minor (0: no terminal limit); a reversal gives back what was not
# handed over. An approved withdrawal whose terminal reports no outcome within
# cash_complete_seconds is reversed in full.
cash_card_daily_minor = 0
cash_terminal_daily_minor = 0
cash_complete_seconds = 300

# Declines (operations.md "Declines and retention"). Each stored decline is a transaction
# row and an audit entry. A terminal may have `decline_source_burst` declines stored back to
# back and earns one more per `decline_source_interval_ms`; a card likewise with the card
# settings. A decline beyond either budget that used up no code (bad cryptogram, unknown card
# or code, code already used, blocked card) is answered 429 with Retry-After and not stored;
# /metrics counts it and one audit entry a minute sums them up. Approvals are never limited.
decline_source_burst = 100
decline_source_interval_ms = 5000
decline_card_burst = 50
decline_card_interval_ms = 60000
# Declined transactions are deleted this many days after their decision (0 = kept forever).
# Approved and held ones are kept; the audit log is kept whole (its MAC chain needs every entry).
decline_retention_days = 90

# Kannel smsbox sendsms interface. Empty URL: messages are only queued.
# Example: kannel_sendsms_url = "http://127.0.0.1:13013/cgi-bin/sendsms"
kannel_sendsms_url = ""
kannel_user = ""
kannel_pass = ""
# Optional: route MT messages to this Kannel smsc-id.
kannel_smsc_id = ""
# Ask Kannel for delivery reports (dlr-url to the mo_listen port).
kannel_dlr = true
# Retry delay after a failed hand-over: base * 2^attempts seconds, at most max.
sms_retry_base_seconds = 2
sms_retry_max_seconds = 300

# Limits.
max_body_bytes = 65536
max_connections = 1024
# Connections from one IP address (terminals behind one NAT share an address).
max_connections_per_source = 256
# Connections without a verified client certificate (handshaking, operators, scanners). When
# this many are open, the oldest of them is closed to admit a new one, so peers that never
# finish a handshake cannot lock terminals out. 0 = half of max_connections.
max_unauthenticated_connections = 0
# From accept to a finished TLS handshake.
handshake_timeout_seconds = 5
request_timeout_seconds = 10
io_threads = 2
worker_threads = 64
slow_threads = 32
)";
}

}  // namespace otac::backend
