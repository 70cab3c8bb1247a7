// Transaction policy that does not depend on the store: the ISO 4217 currency list, the
// transaction-type and amount rules of a POS authorization, and door permissions with daily
// time windows in a door's own time zone (docs/protocol.md §3.2).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "store.hpp"

namespace otac::backend {

/// Where Debian's iso-codes package installs the ISO 4217 list.
inline constexpr const char* kIso4217Path = "/usr/share/iso-codes/json/iso_4217.json";

/// The ISO 4217 currencies a backend accepts (numeric code and alphabetic code).
class CurrencyTable {
 public:
  struct Entry { std::uint16_t numeric; std::string alpha; };
  CurrencyTable() = default;
  explicit CurrencyTable(std::vector<Entry> entries);
  /// Whether numeric is a listed currency.
  bool contains(std::uint16_t numeric) const;
  /// The numeric code of "EUR" or "978"; not_found-style error naming the input otherwise.
  Result<std::uint16_t> resolve(std::string_view code) const;
  /// Number of currencies.
  std::size_t size() const { return entries_.size(); }

 private:
  std::vector<Entry> entries_;  // sorted by numeric
};

/// Parses iso-codes' iso_4217.json ({"4217": [{"alpha_3", "numeric", ...}, ...]}), leaving
/// out the codes that are not money (XXX, XTS, precious metals, units of account).
Result<CurrencyTable> parse_iso4217(std::string_view json_text);
/// Reads and parses the installed list; the error names the file and the package to install.
Result<CurrencyTable> load_iso4217(const std::filesystem::path& path = kIso4217Path);

/// EMV 9C values this project uses (protocol.md §3).
inline constexpr std::uint8_t kTypePurchase = 0x00, kTypeCash = 0x01, kTypeRefund = 0x20, kTypeDoor = 0x90;

/// The amount/currency facts of a POS transaction that policy looks at.
struct PosFacts {
  std::uint8_t type = kTypePurchase;  ///< 9C
  std::uint16_t currency = 0;         ///< 5F2A, ISO 4217 numeric
  std::int64_t amount_minor = 0;      ///< 9F02
};

/// Limits that apply to every POS transaction.
struct PosLimits {
  const CurrencyTable* currencies = nullptr;  ///< valid ISO 4217 codes; null or empty refuses all
  std::uint16_t default_currency = 978;       ///< a card's currency when it has none (0), and the terminals' limit currency
  std::int64_t max_amount_minor = 0;          ///< global maximum, 0 = none
  bool cash = false;                          ///< cash withdrawals (01) are approvable (their daily limits are the caller's)
};

/// A POS decline: reason for the transaction record and whether it is a limit decline (ARC 51).
struct PosDecline { const char* reason; bool limit; };

/// The first rule a POS transaction breaks, in the order of protocol.md §3.2; nullopt = none
/// (review and approval are the caller's).
std::optional<PosDecline> pos_decline(const PosFacts& f, const CardRecord& card, const TerminalRecord& term,
                                      const PosLimits& limits);

/// "HH:MM" (00:00..24:00) to minutes after midnight; nullopt if malformed.
std::optional<std::uint32_t> parse_hhmm(std::string_view s);
/// Minutes after midnight as "HH:MM".
std::string format_hhmm(std::uint32_t minute);

/// Checks door permissions before they are stored: non-empty unique ids of at most 16
/// characters, windows with from != to inside 00:00..24:00, known IANA zones. Fills an
/// empty tz with "UTC".
Result<void> validate_doors(std::vector<DoorPermission>& doors);

/// Whether the door is allowed at now; reason "door_denied" or "outside_hours" otherwise.
/// A window with from > to crosses midnight (22:00-06:00); minutes are the door's local time.
bool door_allowed(const std::vector<DoorPermission>& doors, const std::string& door, UnixTime now, std::string& reason);

/// A permission as "ID HH:MM-HH:MM ZONE", for audit entries and listings.
std::string describe_door(const DoorPermission& d);

}  // namespace otac::backend
