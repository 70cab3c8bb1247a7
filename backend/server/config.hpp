// otac-backend's configuration file: TOML (toml++, otac/sys/config_file.hpp), one flat table.
// Relative paths are relative to the data directory. Unknown keys are errors (a typo must not
// be ignored); every error is one line, "FILE:LINE: KEY: what is wrong".
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "otac/common/result.hpp"

namespace otac::backend {

/// All settings of otac-backend (see default_config_text for their meaning).
struct Config {
  std::filesystem::path data_dir;
  std::string listen = "127.0.0.1:8443";
  std::string mo_listen = "127.0.0.1:0";
  std::filesystem::path ca_cert = "ca.pem", ca_key = "ca.key";
  std::filesystem::path tls_cert = "server.pem", tls_key = "server.key";
  std::filesystem::path kek_file = "kek.bin", database = "otac.db";
  /// "sqlite" (the file `database`) or "postgresql" (postgres_conninfo; several nodes).
  std::string store = "sqlite";
  std::string postgres_conninfo;  ///< libpq string or URI; the password from a passfile only
  std::uint32_t postgres_start_timeout_seconds = 300;  ///< retries at start before giving up
  /// Keys in a PKCS#11 token (docs/operations.md, "Keys in an HSM"): RFC 7512 URIs; empty
  /// kek_uri = the file KEK. The PIN comes from pkcs11_pin_file, never from the config.
  std::string kek_uri;
  std::string server_key_uri;   ///< the E5 list-signing key; empty = sealed in the store
  std::string card_ca_key_uri;  ///< the card CA key (E4); set together with server_key_uri
  std::filesystem::path pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so";
  std::filesystem::path pkcs11_pin_file = "hsm.pin";
  std::filesystem::path mo_secret_file = "mo.secret", admin_token_file = "admin.token";
  std::string server_msisdn = "+15550100";
  std::uint32_t list_size = 100;
  std::uint32_t threshold = 20;
  std::uint32_t fail_limit = 5;
  std::uint32_t max_wait_seconds = 30;
  std::uint32_t hold_limit_seconds = 120;
  std::uint32_t list_repair_seconds = 900;
  std::string default_currency = "EUR";       ///< ISO 4217 alphabetic or numeric; checked at start
  std::uint32_t max_amount_minor = 10'000'000;  ///< global POS maximum, 0 = none
  std::filesystem::path iso4217_file = "/usr/share/iso-codes/json/iso_4217.json";
  std::uint32_t cash_card_daily_minor = 0;      ///< cash one card may withdraw per UTC day, 0 = no cash
  std::uint32_t cash_terminal_daily_minor = 0;  ///< cash one terminal may pay out per UTC day, 0 = no limit
  std::uint32_t cash_complete_seconds = 300;    ///< an approved withdrawal with no outcome is reversed after this
  std::string kannel_sendsms_url;  ///< empty = SMS sending disabled (queued only)
  std::string kannel_user;
  std::string kannel_pass;
  std::string kannel_smsc_id;
  bool kannel_dlr = true;
  std::uint32_t sms_retry_base_seconds = 2;
  std::uint32_t sms_retry_max_seconds = 300;
  std::uint32_t max_body_bytes = 65536;
  std::uint32_t max_connections = 1024;
  std::uint32_t request_timeout_seconds = 10;
  std::uint32_t handshake_timeout_seconds = 5;
  std::uint32_t max_connections_per_source = 256;
  std::uint32_t max_unauthenticated_connections = 0;  ///< 0 = half of max_connections
  std::uint32_t io_threads = 2;
  std::uint32_t worker_threads = 64;
  std::uint32_t slow_threads = 32;
  std::uint32_t client_cert_days = 397;
  std::uint32_t decline_source_burst = 100;      ///< declines a terminal may have stored back to back
  std::uint32_t decline_source_interval_ms = 5000; ///< ...and one more per this interval
  std::uint32_t decline_card_burst = 50;         ///< declines one card may have stored back to back
  std::uint32_t decline_card_interval_ms = 60000;  ///< ...and one more per this interval
  std::uint32_t decline_retention_days = 90;     ///< declined transactions are deleted this long after; 0 = kept

  /// A path from the config, resolved against data_dir.
  std::filesystem::path resolve(const std::filesystem::path& p) const { return p.is_absolute() ? p : data_dir / p; }
};

/// Parses config text (data_dir already set in base); source names the file in errors.
Result<Config> parse_config(std::string_view text, Config base, std::string_view source = "otac-backend.conf");
/// Reads and parses a config file (at most 64 KiB).
Result<Config> load_config(const std::filesystem::path& file, Config base);
/// A file in the old "key = value" format (before TOML) as TOML with the same lines and values.
Result<std::string> convert_config(const std::filesystem::path& file);
/// The same for text; source names it in errors.
Result<std::string> convert_config_text(std::string_view text, std::string_view source);
/// The commented default configuration written on first start.
std::string default_config_text();

}  // namespace otac::backend
