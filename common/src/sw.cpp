#include "otac/common/sw.hpp"

#include <cstdio>

namespace otac::sw {
namespace {

struct Entry {
  std::uint16_t sw;
  const char* meaning;
};

// ISO/IEC 7816-4:2020 clause 5.6, tables 5 and 6, and the words our applet uses with the
// meaning it gives them (docs/protocol.md §2).
constexpr Entry table[] = {
    {0x9000, "success"},
    {0x6200, "warning: state of non-volatile memory unchanged"},
    {0x6281, "warning: part of returned data may be corrupted"},
    {0x6282, "warning: end of file or record reached before reading Ne bytes"},
    {0x6283, "warning: selected file deactivated"},
    {0x6300, "verification failed (no information given)"},
    {0x6381, "warning: file filled up by the last write"},
    {0x6400, "execution error: state of non-volatile memory unchanged"},
    {0x6500, "execution error: state of non-volatile memory changed"},
    {0x6581, "execution error: memory failure"},
    {0x6700, "wrong length (Lc or Le)"},
    {0x6800, "functions in CLA not supported"},
    {0x6881, "logical channel not supported"},
    {0x6882, "secure messaging not supported"},
    {0x6900, "command not allowed"},
    {0x6981, "command incompatible with file structure"},
    {0x6982, "security status not satisfied (PIN not verified)"},
    {0x6983, "authentication method blocked (PIN blocked)"},
    {0x6984, "reference data not usable"},
    {0x6985, "conditions of use not satisfied"},
    {0x6986, "command not allowed (no current EF)"},
    {0x6987, "expected secure messaging data objects missing"},
    {0x6988, "incorrect secure messaging data objects"},
    {0x6A00, "wrong parameters P1-P2"},
    {0x6A80, "incorrect parameters in the command data field"},
    {0x6A81, "function not supported"},
    {0x6A82, "file or application not found"},
    {0x6A83, "record not found (code index not available)"},
    {0x6A84, "not enough memory space in the file (no free code)"},
    {0x6A85, "Nc inconsistent with TLV structure"},
    {0x6A86, "incorrect parameters P1-P2"},
    {0x6A87, "Nc inconsistent with parameters P1-P2"},
    {0x6A88, "referenced data or reference data not found"},
    {0x6A89, "file already exists"},
    {0x6A8A, "DF name already exists"},
    {0x6B00, "wrong parameters P1-P2"},
    {0x6D00, "instruction code not supported or invalid"},
    {0x6E00, "class not supported"},
    {0x6F00, "no precise diagnosis"},
};

}  // namespace

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
  for (const auto& e : table)
    if (e.sw == s) return out + e.meaning;
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
