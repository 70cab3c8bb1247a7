// The AUTHENTICATE challenge and the MAC input of protocol.md section 3, assembled by hand
// from the protocol text (independently of common/protocol.hpp's encoder), for the tests of
// every layer. encode() writes the fields in a deliberately non-canonical order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "otac/common/bytes.hpp"

namespace otac::test {

/// The fields of a challenge as a test sets them.
struct Challenge {
  Bytes un = hex("0102030405060708");     // 9F37
  Bytes amount = hex("000000001234");     // 9F02: 12.34
  Bytes terminal = to_bytes("TERM0001");  // 9F1C
  std::uint8_t mode = 0x01;               // DF31: 01 POS, 02 door
  std::string door;                       // DF32 in door mode
  Bytes currency = hex("0978");           // 5F2A
  Bytes date = hex("261122");             // 9A YYMMDD
  Bytes time = hex("185500");             // 9F21 HHMMSS
  std::optional<std::uint8_t> type;       // 9C; default 00 (POS) or 90 (door)
  Bytes extra;                            // appended raw after the fields (malformed input tests)

  std::uint8_t type_byte() const { return type ? *type : mode == 2 ? 0x90 : 0x00; }

  /// The AUTHENTICATE data.
  Bytes encode() const {
    Bytes out;
    put(out, hex("9F1C"), terminal);
    put(out, hex("9F37"), un);
    put(out, hex("DF33"), hex("02"));
    put(out, hex("DF31"), Bytes{mode});
    put(out, hex("9F02"), amount);
    put(out, hex("5F2A"), currency);
    put(out, hex("9A"), date);
    put(out, hex("9F21"), time);
    put(out, hex("9C"), Bytes{type_byte()});
    if (!door.empty()) put(out, hex("DF32"), to_bytes(door));
    append(out, extra);
    return out;
  }

  /// The MAC input: the challenge's fields in canonical order, then the card's N, list, index,
  /// counter and PIN state.
  Bytes mac_input(const Bytes& n, std::uint16_t list, std::uint16_t index, std::uint16_t atc, std::uint8_t pin_state) const {
    Bytes m;
    append(m, hex("DF3301 02"));
    append(m, hex("DF3101")); m.push_back(mode);
    append(m, hex("9F3708")); append(m, un);
    append(m, hex("9F0206")); append(m, amount);
    append(m, hex("5F2A02")); append(m, currency);
    append(m, hex("9A03")); append(m, date);
    append(m, hex("9F2103")); append(m, time);
    append(m, hex("9C01")); m.push_back(type_byte());
    append(m, hex("9F1C08")); append(m, terminal);
    if (mode == 2) { append(m, hex("DF32")); m.push_back(static_cast<std::uint8_t>(door.size())); append(m, to_bytes(door)); }
    append(m, hex("DF4108")); append(m, n);
    append(m, hex("DF4202")); append(m, be_bytes(list, 2));
    append(m, hex("DF4302")); append(m, be_bytes(index, 2));
    append(m, hex("9F3602")); append(m, be_bytes(atc, 2));
    append(m, hex("DF3501")); m.push_back(pin_state);
    return m;
  }

 private:
  // A TLV with a short length (every test value is under 128 bytes).
  static void put(Bytes& out, const Bytes& tag, const Bytes& v) {
    append(out, tag);
    out.push_back(static_cast<std::uint8_t>(v.size()));
    append(out, v);
  }
};

}  // namespace otac::test
