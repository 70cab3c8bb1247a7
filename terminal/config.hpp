// The otac-terminal configuration file: TOML (toml++, otac/sys/config_file.hpp), one flat
// table. Every key is documented in config_keys() (part of `otac-terminal --help`); every
// error is one line, "FILE:LINE: KEY: what is wrong".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "otac/common/result.hpp"

namespace otac::terminal {

/// How the door relay is driven.
enum class RelayKind { none, gpiod, command };

/// Where the PIN comes from when a card asks for one.
enum class PinSource { none, tty, stdin_lines };

/// One backend node the terminal may talk to (an https origin of backend_url).
struct BackendOrigin {
  std::string host;              ///< DNS name or IP literal, without brackets
  std::uint16_t port = 443;
};

/// The parsed configuration, with defaults for optional keys.
struct Config {
  std::string reader;            ///< libnfc connstring (pn532_uart:/dev/ttyS0) or pcsc[:READER NAME]
  /// From backend_url, in the order given (at least one): the first is tried first, the next
  /// when one fails (terminal/backend_link.hpp).
  std::vector<BackendOrigin> backends;
  std::string ca_file, cert_file, key_file;
  std::string terminal_id;       ///< 8 characters, the client certificate's CN
  bool door_mode = false;        ///< mode = pos | door
  std::uint16_t currency = 978;  ///< ISO 4217 numeric
  std::string currency_alpha = "EUR";
  int currency_exponent = 2;     ///< digits after the decimal point
  std::string door_id;
  RelayKind relay = RelayKind::none;
  std::string relay_chip = "gpiochip0";
  unsigned relay_line = 0;
  bool relay_active_low = false;
  unsigned relay_pulse_ms = 1000;
  std::string relay_command;
  PinSource pin_source = PinSource::tty;
  unsigned pin_timeout_s = 30;
  unsigned held_wait_limit_s = 60;
  unsigned card_wait_ms = 15000;
  unsigned apdu_timeout_ms = 1000;
  unsigned removal_wait_ms = 10000;
  unsigned connect_timeout_ms = 3000;
  unsigned backend_timeout_ms = 5000;
  unsigned backend_attempts = 3;
  std::string data_dir;          ///< the outcome queue (outcomes/); empty = the config file's folder
  std::string dispenser_socket;  ///< atm mode: the dispenser driver's Unix socket
  unsigned dispenser_take_s = 30;   ///< atm mode: the customer's time to take the notes
  unsigned outcome_retry_s = 5;     ///< how long one run keeps retrying unacknowledged outcomes
};

/// Parses the text of a config file. Relative file names are taken relative to base_dir
/// (the config file's folder). Errors name source (the file), the line and the key.
Result<Config> parse_config(std::string_view text, std::string_view base_dir = ".", std::string_view source = "config");

/// Parses backend_url's value: one https origin (https://HOST[:PORT][/]) or several separated
/// by commas, at most 8, none twice. Errors name the entry.
Result<std::vector<BackendOrigin>> parse_backend_urls(std::string_view text);

/// Reads and parses a config file (at most 64 KiB).
Result<Config> load_config(const std::string& path);

/// A file in the old "key = value" format (before TOML) as TOML with the same lines and values.
Result<std::string> convert_config(const std::string& path);
/// The same for text; source names it in errors.
Result<std::string> convert_config_text(std::string_view text, std::string_view source);

/// One paragraph per key, for --help.
const char* config_keys();

/// Looks up an ISO 4217 code (alphabetic "EUR" or numeric "978"): numeric code, alpha, exponent.
Result<void> lookup_currency(std::string_view code, std::uint16_t& numeric, std::string& alpha, int& exponent);

/// Parses "12.50" (or "12", "0.5") into minor units for a currency with the given exponent.
Result<std::uint64_t> parse_amount(std::string_view text, int exponent);

/// Formats minor units as "12.50".
std::string format_amount(std::uint64_t minor, int exponent);

}  // namespace otac::terminal
