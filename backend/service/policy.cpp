#include "policy.hpp"

#include <date/tz.h>

#include <algorithm>
#include <boost/json.hpp>
#include <fstream>
#include <set>
#include <sstream>

namespace otac::backend {
namespace json = boost::json;

CurrencyTable::CurrencyTable(std::vector<Entry> entries) : entries_(std::move(entries)) {
  std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.numeric < b.numeric; });
}

bool CurrencyTable::contains(std::uint16_t numeric) const {
  return std::binary_search(entries_.begin(), entries_.end(), Entry{numeric, {}},
                            [](const Entry& a, const Entry& b) { return a.numeric < b.numeric; });
}

Result<std::uint16_t> CurrencyTable::resolve(std::string_view code) const {
  const bool digits = !code.empty() && code.size() <= 3 && code.find_first_not_of("0123456789") == std::string_view::npos;
  for (const auto& e : entries_) {
    if (digits ? std::stoi(std::string(code)) == e.numeric : code == e.alpha) return e.numeric;
  }
  return make_error(Errc::bad_value, "\"" + std::string(code.substr(0, 8)) +
                                         "\" is not an ISO 4217 currency (use an alphabetic code such as EUR or its number such as 978)");
}

namespace {

// Codes ISO 4217 lists that no card payment is made in: no currency (XXX) and testing (XTS),
// precious metals (XAU XAG XPD XPT), and units of account (XBA XBB XBC XBD XDR XSU XUA).
const std::set<std::string, std::less<>> kNotMoney = {"XXX", "XTS", "XAU", "XAG", "XPD", "XPT", "XBA",
                                                      "XBB", "XBC", "XBD", "XDR", "XSU", "XUA"};

}  // namespace

Result<CurrencyTable> parse_iso4217(std::string_view json_text) {
  boost::system::error_code ec;
  json::value v = json::parse(json_text, ec);
  if (ec) return make_error(Errc::bad_value, "ISO 4217 list: not JSON (" + ec.message() + ")");
  const auto* root = v.if_object();
  const json::value* list = root ? root->if_contains("4217") : nullptr;
  if (!list || !list->is_array()) return make_error(Errc::bad_value, "ISO 4217 list: no \"4217\" array");
  std::vector<CurrencyTable::Entry> out;
  std::set<std::uint16_t> seen;
  for (const auto& item : list->as_array()) {
    const auto* o = item.if_object();
    const json::value* num = o ? o->if_contains("numeric") : nullptr;
    const json::value* alpha = o ? o->if_contains("alpha_3") : nullptr;
    if (!num || !num->is_string() || !alpha || !alpha->is_string())
      return make_error(Errc::bad_value, "ISO 4217 list: an entry lacks \"numeric\" or \"alpha_3\"");
    const std::string n(num->as_string()), a(alpha->as_string());
    if (n.size() != 3 || n.find_first_not_of("0123456789") != std::string::npos || n == "000")
      return make_error(Errc::bad_value, "ISO 4217 list: numeric code \"" + n.substr(0, 8) + "\" is not 3 digits from 001");
    if (a.size() != 3 || !std::all_of(a.begin(), a.end(), [](char c) { return c >= 'A' && c <= 'Z'; }))
      return make_error(Errc::bad_value, "ISO 4217 list: alphabetic code \"" + a.substr(0, 8) + "\" is not 3 letters");
    if (kNotMoney.count(a)) continue;
    const auto code = static_cast<std::uint16_t>(std::stoi(n));
    if (!seen.insert(code).second) return make_error(Errc::bad_value, "ISO 4217 list: numeric code " + n + " appears twice");
    out.push_back({code, a});
  }
  if (out.empty()) return make_error(Errc::bad_value, "ISO 4217 list: no currencies");
  return CurrencyTable(std::move(out));
}

Result<CurrencyTable> load_iso4217(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return make_error(Errc::io, "cannot read the ISO 4217 list " + path.string() + ": " + ec.message() +
                                          " (install the Debian package iso-codes)");
  if (size > 4 * 1024 * 1024) return make_error(Errc::bad_length, "ISO 4217 list " + path.string() + " is larger than 4 MiB");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) return make_error(Errc::io, "cannot read the ISO 4217 list " + path.string());
  auto t = parse_iso4217(text.str());
  if (!t) return make_error(t.error().code, path.string() + ": " + t.error().message);
  return t;
}

std::optional<PosDecline> pos_decline(const PosFacts& f, const CardRecord& card, const TerminalRecord& term,
                                      const PosLimits& limits) {
  // Purchases, and cash withdrawals where the backend has cash limits (protocol.md §5.4). A
  // refund (20) moves money to the card, which a one-time code of the payer must not
  // authorize: refunds are requested by the merchant and decided by an operator (DESIGN.md §6;
  // protocol.md §3.2).
  if (f.type != kTypePurchase && !(f.type == kTypeCash && limits.cash)) return PosDecline{"type_not_allowed", false};
  if (!limits.currencies || !limits.currencies->contains(f.currency)) return PosDecline{"invalid_currency", false};
  const std::uint16_t card_currency = card.currency != 0 ? card.currency : limits.default_currency;
  if (f.currency != card_currency) return PosDecline{"currency_not_allowed", false};
  if (limits.max_amount_minor > 0 && f.amount_minor > limits.max_amount_minor) return PosDecline{"amount_too_large", true};
  if (card.limit_minor > 0 && f.amount_minor > card.limit_minor) return PosDecline{"card_limit", true};
  if (term.limit_minor > 0) {
    // A terminal's limit is in the backend's default currency; there is no conversion.
    if (f.currency != limits.default_currency) return PosDecline{"currency_not_allowed", false};
    if (f.amount_minor > term.limit_minor) return PosDecline{"terminal_limit", true};
  }
  return std::nullopt;
}

std::optional<std::uint32_t> parse_hhmm(std::string_view s) {
  if (s.size() != 5 || s[2] != ':') return std::nullopt;
  for (std::size_t i : {0u, 1u, 3u, 4u})
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
  const std::uint32_t h = static_cast<std::uint32_t>((s[0] - '0') * 10 + (s[1] - '0'));
  const std::uint32_t m = static_cast<std::uint32_t>((s[3] - '0') * 10 + (s[4] - '0'));
  if (m > 59 || h > 24 || (h == 24 && m != 0)) return std::nullopt;
  return h * 60 + m;
}

std::string format_hhmm(std::uint32_t minute) {
  const auto two = [](std::uint32_t v) { return std::string(v < 10 ? "0" : "") + std::to_string(v); };
  return two(minute / 60) + ":" + two(minute % 60);
}

namespace {

const date::time_zone* find_zone(const std::string& name) {
  try {
    return date::locate_zone(name);
  } catch (const std::exception&) {
    return nullptr;  // unknown name, or no time zone database
  }
}

}  // namespace

Result<void> validate_doors(std::vector<DoorPermission>& doors) {
  if (doors.size() > 64) return make_error(Errc::bad_length, "at most 64 door permissions per card");
  std::set<std::string> ids;
  for (auto& d : doors) {
    if (d.door.empty() || d.door.size() > 16) return make_error(Errc::bad_value, "door id must be 1 to 16 characters");
    if (!ids.insert(d.door).second) return make_error(Errc::bad_value, "door " + d.door + " is listed twice");
    if (d.from_minute >= 1440 || d.to_minute > 1440)
      return make_error(Errc::bad_value, "door " + d.door + ": a window starts at 00:00..23:59 and ends at 00:00..24:00");
    if (d.from_minute == d.to_minute)
      return make_error(Errc::bad_value, "door " + d.door + ": window " + format_hhmm(d.from_minute) + "-" +
                                             format_hhmm(d.to_minute) + " is empty (start equals end); use 00:00-24:00 for all day");
    if (d.tz.empty()) d.tz = "UTC";
    if (d.tz.size() > 64 || !find_zone(d.tz))
      return make_error(Errc::bad_value, "door " + d.door + ": unknown time zone \"" + d.tz.substr(0, 64) +
                                             "\" (use an IANA name such as Europe/Berlin, or UTC)");
  }
  return {};
}

bool door_allowed(const std::vector<DoorPermission>& doors, const std::string& door, UnixTime now, std::string& reason) {
  for (const auto& d : doors) {
    if (d.door != door) continue;
    const date::time_zone* z = find_zone(d.tz.empty() ? std::string("UTC") : d.tz);
    if (!z) {  // validated when stored; only a tzdata change can remove a zone
      reason = "door_zone_unknown";
      return false;
    }
    const auto info = z->get_info(date::sys_seconds{std::chrono::seconds{now}});
    const std::int64_t local = now + info.offset.count();
    const auto minute = static_cast<std::uint32_t>(((local % 86400) + 86400) % 86400 / 60);
    const bool inside = d.from_minute < d.to_minute ? (minute >= d.from_minute && minute < d.to_minute)
                                                    : (minute >= d.from_minute || minute < d.to_minute);
    if (inside) return true;
    reason = "outside_hours";
    return false;
  }
  reason = "door_denied";
  return false;
}

std::string describe_door(const DoorPermission& d) {
  return d.door + " " + format_hhmm(d.from_minute) + "-" + format_hhmm(d.to_minute) + " " + (d.tz.empty() ? "UTC" : d.tz);
}

}  // namespace otac::backend
