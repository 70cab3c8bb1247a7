#include "otac/common/sw.hpp"

#include <cstdio>

namespace otac::sw {
namespace {

// ISO/IEC 7816-4:2020 clause 5.6, tables 5 and 6, and the words our applet uses with the
// meaning it gives them (docs/protocol.md §2): what each means to people, to programs (Errc,
// as OpenSC's iso7816_check_sw maps to SC_ERROR_*), and as a terminal's decline reason.
constexpr Meaning table[] = {
    {0x9000, "success", Errc::internal, nullptr, nullptr},
    {0x6200, "warning: state of non-volatile memory unchanged", Errc::state, nullptr, nullptr},
    {0x6281, "warning: part of returned data may be corrupted", Errc::state, nullptr, nullptr},
    {0x6282, "warning: end of file or record reached before reading Ne bytes", Errc::state, nullptr, nullptr},
    {0x6283, "warning: selected file deactivated", Errc::state, nullptr, nullptr},
    {0x6300, "verification failed (no information given)", Errc::bad_mac, nullptr, nullptr},
    {0x6381, "warning: file filled up by the last write", Errc::state, nullptr, nullptr},
    {0x6400, "execution error: state of non-volatile memory unchanged", Errc::io, nullptr, nullptr},
    {0x6500, "execution error: state of non-volatile memory changed", Errc::io, nullptr, nullptr},
    {0x6581, "execution error: memory failure", Errc::io, nullptr, nullptr},
    {0x6700, "wrong length (Lc or Le)", Errc::bad_length, nullptr, nullptr},
    {0x6800, "functions in CLA not supported", Errc::unsupported, nullptr, nullptr},
    {0x6881, "logical channel not supported", Errc::unsupported, nullptr, nullptr},
    {0x6882, "secure messaging not supported", Errc::unsupported, nullptr, nullptr},
    {0x6900, "command not allowed", Errc::state, nullptr, nullptr},
    {0x6981, "command incompatible with file structure", Errc::state, nullptr, nullptr},
    {0x6982, "security status not satisfied (PIN not verified)", Errc::state, nullptr, nullptr},
    {0x6983, "authentication method blocked (PIN blocked)", Errc::state, "pin_blocked", "the card's PIN is blocked"},
    {0x6984, "reference data not usable", Errc::state, nullptr, nullptr},
    {0x6985, "conditions of use not satisfied", Errc::state, "card_not_usable", "the card cannot authenticate now (6985: no list or blocked)"},
    {0x6986, "command not allowed (no current EF)", Errc::state, nullptr, nullptr},
    {0x6987, "expected secure messaging data objects missing", Errc::bad_value, nullptr, nullptr},
    {0x6988, "incorrect secure messaging data objects", Errc::bad_value, nullptr, nullptr},
    {0x6A00, "wrong parameters P1-P2", Errc::bad_value, nullptr, nullptr},
    {0x6A80, "incorrect parameters in the command data field", Errc::bad_value, nullptr, nullptr},
    {0x6A81, "function not supported", Errc::unsupported, nullptr, nullptr},
    {0x6A82, "file or application not found", Errc::not_found, "not_otac_card", "the card has no OTAC application (6A82)"},
    {0x6A83, "record not found (code index not available)", Errc::not_found, nullptr, nullptr},
    {0x6A84, "not enough memory space in the file (no free code)", Errc::not_found, "no_codes", "the card has no unused code left; wait for a list refresh"},
    {0x6A85, "Nc inconsistent with TLV structure", Errc::bad_length, nullptr, nullptr},
    {0x6A86, "incorrect parameters P1-P2", Errc::bad_value, nullptr, nullptr},
    {0x6A87, "Nc inconsistent with parameters P1-P2", Errc::bad_length, nullptr, nullptr},
    {0x6A88, "referenced data or reference data not found", Errc::not_found, nullptr, nullptr},
    {0x6A89, "file already exists", Errc::conflict, nullptr, nullptr},
    {0x6A8A, "DF name already exists", Errc::conflict, nullptr, nullptr},
    {0x6B00, "wrong parameters P1-P2", Errc::bad_value, nullptr, nullptr},
    {0x6D00, "instruction code not supported or invalid", Errc::unsupported, nullptr, nullptr},
    {0x6E00, "class not supported", Errc::unsupported, nullptr, nullptr},
    {0x6F00, "no precise diagnosis", Errc::internal, nullptr, nullptr},
};

}  // namespace

const Meaning* lookup(std::uint16_t s) noexcept {
  for (const auto& e : table)
    if (e.sw == s) return &e;
  return nullptr;
}

Errc to_errc(std::uint16_t s) noexcept {
  if (is_tries_left(s)) return Errc::bad_mac;  // verification failed
  if (is_wrong_le(s)) return Errc::bad_length;
  if (is_bytes_available(s)) return Errc::internal;  // the reader layer completes these
  if (const Meaning* m = lookup(s)) return m->errc;
  switch (s >> 8) {
    case 0x62: case 0x63: case 0x69: return Errc::state;
    case 0x64: case 0x65: return Errc::io;
    case 0x67: return Errc::bad_length;
    case 0x68: return Errc::unsupported;
    case 0x6A: case 0x6B: return Errc::bad_value;
    default: return Errc::internal;
  }
}

Result<void> check(std::uint16_t s) {
  if (is_success(s)) return {};
  return make_error(to_errc(s), describe(s));
}

const char* decline_reason(std::uint16_t s) noexcept {
  if (is_tries_left(s) && tries_left(s) == 0) return "pin_blocked";
  const Meaning* m = lookup(s);
  return m && m->reason ? m->reason : "card_error";
}

bool is_bytes_available(std::uint16_t s) noexcept { return (s >> 8) == 0x61; }
bool is_wrong_le(std::uint16_t s) noexcept { return (s >> 8) == 0x6C; }
bool is_tries_left(std::uint16_t s) noexcept { return (s & 0xFFF0) == 0x63C0; }
int tries_left(std::uint16_t s) noexcept { return s & 0x0F; }
std::uint16_t tries(int n) noexcept {
  if (n < 0) n = 0;
  if (n > 15) n = 15;
  return static_cast<std::uint16_t>(0x63C0 | n);
}
bool is_success(std::uint16_t s) noexcept { return s == ok || is_bytes_available(s); }

std::string tries_left_text(int n) { return std::to_string(n) + (n == 1 ? " try left" : " tries left"); }

std::string describe(std::uint16_t s) {
  char head[8];
  std::snprintf(head, sizeof head, "%04X ", s);
  std::string out = head;
  int low = s & 0xFF;
  int n = low == 0 ? 256 : low;
  if (is_bytes_available(s)) return out + std::to_string(n) + " more bytes available (GET RESPONSE)";
  if (is_wrong_le(s)) return out + "wrong Le: exactly " + std::to_string(n) + " bytes available";
  if (is_tries_left(s)) return out + "verification failed, " + tries_left_text(tries_left(s));
  if (const Meaning* m = lookup(s)) return out + m->meaning;
  switch (s >> 8) {
    case 0x62: return out + "warning: state of non-volatile memory unchanged";
    case 0x63: return out + "warning: state of non-volatile memory changed";
    case 0x64: return out + "execution error: state of non-volatile memory unchanged";
    case 0x65: return out + "execution error: state of non-volatile memory changed";
    case 0x66: return out + "security-related issue";
    case 0x68: return out + "functions in CLA not supported";
    case 0x69: return out + "command not allowed";
    case 0x67: return out + "wrong length";
    case 0x6A: return out + "wrong parameters";
    case 0x6F: return out + "no precise diagnosis";
    default: return out + "unknown status";
  }
}

}  // namespace otac::sw
