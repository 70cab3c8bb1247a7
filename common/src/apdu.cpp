#include "otac/common/apdu.hpp"

#include <cstdio>

namespace otac::apdu {
namespace {

std::string n(std::size_t v) { return std::to_string(v); }

}  // namespace

int Command::apdu_case() const noexcept {
  if (data.empty()) return ne ? 2 : 1;
  return ne ? 4 : 3;
}

// ISO/IEC 7816-4 clause 5.1: the body after the 4-byte header decides the case.
//   (empty)                      case 1
//   Le                           case 2S   (Le 00 = 256)
//   Lc data                      case 3S   (Lc 01..FF)
//   Lc data Le                   case 4S
//   00 Le1 Le2                   case 2E   (00 00 = 65536)
//   00 Lc1 Lc2 data              case 3E   (Lc 0001..FFFF)
//   00 Lc1 Lc2 data Le1 Le2      case 4E
Result<Command> parse_command(ByteView b) {
  if (b.size() < 4)
    return make_error(Errc::truncated, "APDU: " + n(b.size()) + " bytes, a command has at least 4 (CLA INS P1 P2)");
  Command c;
  c.cla = b[0];
  c.ins = b[1];
  c.p1 = b[2];
  c.p2 = b[3];
  std::size_t body = b.size() - 4;
  if (body == 0) return c;
  if (body == 1) {
    c.ne = b[4] == 0 ? 256u : b[4];
    return c;
  }
  if (b[4] != 0) {  // short Lc
    std::size_t lc = b[4];
    if (body < 1 + lc)
      return make_error(Errc::truncated, "APDU: Lc = " + n(lc) + " but only " + n(body - 1) + " data bytes follow");
    c.data.assign(b.begin() + 5, b.begin() + 5 + static_cast<std::ptrdiff_t>(lc));
    if (body == 1 + lc) return c;
    if (body == 2 + lc) {
      std::uint8_t le = b[b.size() - 1];
      c.ne = le == 0 ? 256u : le;
      return c;
    }
    return make_error(Errc::trailing_data, "APDU: " + n(body - 2 - lc) + " bytes after Lc = " + n(lc) + ", data and Le");
  }
  // Extended length: a first body byte 00 followed by two length bytes.
  c.extended = true;
  if (body < 3)
    return make_error(Errc::bad_length, "APDU: body of " + n(body) + " bytes starting 00 fits no case (extended length needs 3)");
  std::size_t v = static_cast<std::size_t>(b[5]) << 8 | b[6];
  if (body == 3) {
    c.ne = v == 0 ? 65536u : static_cast<std::uint32_t>(v);
    return c;
  }
  if (v == 0)
    return make_error(Errc::bad_length, "APDU: extended Lc = 0000 followed by " + n(body - 3) + " bytes");
  std::size_t lc = v;
  if (body < 3 + lc)
    return make_error(Errc::truncated, "APDU: extended Lc = " + n(lc) + " but only " + n(body - 3) + " data bytes follow");
  c.data.assign(b.begin() + 7, b.begin() + 7 + static_cast<std::ptrdiff_t>(lc));
  if (body == 3 + lc) return c;
  if (body == 5 + lc) {
    std::size_t le = static_cast<std::size_t>(b[b.size() - 2]) << 8 | b[b.size() - 1];
    c.ne = le == 0 ? 65536u : static_cast<std::uint32_t>(le);
    return c;
  }
  if (body == 4 + lc)
    return make_error(Errc::bad_length, "APDU: extended case 4 needs a 2-byte Le, found 1 byte");
  return make_error(Errc::trailing_data, "APDU: " + n(body - 5 - lc) + " bytes after extended Lc = " + n(lc) + ", data and Le");
}

Result<Bytes> encode(const Command& c) {
  if (c.data.size() > 65535)
    return make_error(Errc::bad_length, "APDU: " + n(c.data.size()) + " data bytes (at most 65535)");
  if (c.ne && (*c.ne == 0 || *c.ne > 65536))
    return make_error(Errc::bad_length, "APDU: Ne = " + n(*c.ne) + " (must be 1..65536)");
  bool ext = c.extended || c.data.size() > 255 || (c.ne && *c.ne > 256);
  Bytes out{c.cla, c.ins, c.p1, c.p2};
  if (!c.data.empty()) {
    if (ext) {
      out.push_back(0);
      out.push_back(static_cast<std::uint8_t>(c.data.size() >> 8));
    }
    out.push_back(static_cast<std::uint8_t>(c.data.size()));
    append(out, c.data);
  }
  if (c.ne) {
    std::uint32_t le = *c.ne;
    if (ext) {
      if (c.data.empty()) out.push_back(0);  // case 2E: 00 Le1 Le2
      out.push_back(static_cast<std::uint8_t>((le == 65536 ? 0 : le) >> 8));
      out.push_back(static_cast<std::uint8_t>(le == 65536 ? 0 : le));
    } else {
      out.push_back(static_cast<std::uint8_t>(le == 256 ? 0 : le));
    }
  }
  return out;
}

Result<Response> parse_response(ByteView b) {
  if (b.size() < 2)
    return make_error(Errc::truncated, "response APDU: " + n(b.size()) + " bytes, needs at least SW1 SW2");
  Response r;
  r.data.assign(b.begin(), b.end() - 2);
  r.sw = static_cast<std::uint16_t>(b[b.size() - 2] << 8 | b[b.size() - 1]);
  return r;
}

Bytes encode(const Response& r) {
  Bytes out = r.data;
  out.push_back(r.sw1());
  out.push_back(r.sw2());
  return out;
}

std::string describe(const Command& c) {
  char head[32];
  std::snprintf(head, sizeof head, "%02X %02X %02X %02X", c.cla, c.ins, c.p1, c.p2);
  std::string out = head;
  if (!c.data.empty()) out += " Lc=" + n(c.data.size());
  if (c.ne) out += " Le=" + n(*c.ne);
  bool ext = c.extended || c.data.size() > 255 || (c.ne && *c.ne > 256);
  out += " case " + std::to_string(c.apdu_case()) + (c.apdu_case() == 1 ? "" : ext ? " extended" : " short");
  return out;
}

}  // namespace otac::apdu
