#include "challenge.hpp"

#include "otac/common/cursor.hpp"

namespace otac::backend {
namespace {

void tlv(Bytes& out, std::uint32_t tag, ByteView v) {
  if (tag > 0xFF) out.push_back(static_cast<std::uint8_t>(tag >> 8));
  out.push_back(static_cast<std::uint8_t>(tag));
  // Values here are at most 16 bytes, so the short length form always applies.
  out.push_back(static_cast<std::uint8_t>(v.size()));
  append(out, v);
}

Result<std::int64_t> bcd(ByteView v, const char* what) {
  std::int64_t n = 0;
  for (auto b : v) {
    const int hi = b >> 4, lo = b & 0x0F;
    if (hi > 9 || lo > 9) return make_error(Errc::bad_value, std::string(what) + " is not BCD");
    n = n * 100 + hi * 10 + lo;
  }
  return n;
}

}  // namespace

Result<Challenge> parse_challenge(ByteView data) {
  // A TODO for after the codecs merge: use otac::tlv::parse. This walker accepts exactly the
  // primitive 1- and 2-byte tags the challenge uses, with short or 81 lengths.
  Challenge c;
  Cursor cur(data, "AUTHENTICATE challenge");
  struct Slot { std::uint32_t tag; Bytes* field; std::size_t min, max; bool seen = false; };
  Bytes door;
  Bytes ignored;
  Slot slots[] = {{0xDF33, &c.version, 1, 1}, {0xDF31, &c.mode, 1, 1},     {0x9F37, &c.un, 8, 8},
                  {0x9F02, &c.amount, 6, 6},  {0x5F2A, &c.currency, 2, 2}, {0x9A, &c.date, 3, 3},
                  {0x9F21, &c.time, 3, 3},    {0x9C, &c.type, 1, 1},       {0x9F1C, &c.terminal, 8, 8},
                  {0xDF32, &door, 1, 16},     {0xDF34, &ignored, 8, 8},    {0xDF42, &ignored, 2, 2},
                  {0xDF43, &ignored, 2, 2}};
  bool door_seen = false;
  for (int guard = 0; !cur.empty() && guard < 64; ++guard) {
    std::uint32_t tag = cur.u8("tag");
    if ((tag & 0x1F) == 0x1F) tag = (tag << 8) | cur.u8("tag");
    std::size_t len = cur.u8("length");
    if (len == 0x81) len = cur.u8("length");
    else if (len > 0x7F) return make_error(Errc::bad_length, "challenge: unsupported length form");
    ByteView v = cur.take(len, "value");
    if (!cur.ok()) return cur.error();
    Slot* s = nullptr;
    for (auto& x : slots) if (x.tag == tag) s = &x;
    if (!s) return make_error(Errc::bad_value, "challenge: unexpected tag " + to_hex(be_bytes(tag, tag > 0xFF ? 2 : 1)));
    if (s->seen) return make_error(Errc::bad_value, "challenge: tag " + to_hex(be_bytes(tag, tag > 0xFF ? 2 : 1)) + " appears twice");
    if (v.size() < s->min || v.size() > s->max)
      return make_error(Errc::bad_length, "challenge: tag " + to_hex(be_bytes(tag, tag > 0xFF ? 2 : 1)) + " has a wrong length");
    s->seen = true;
    if (tag == 0xDF32) door_seen = true;
    s->field->assign(v.begin(), v.end());
  }
  if (auto f = cur.finish(); !f) return f.error();
  for (std::size_t i = 0; i < 9; ++i)
    if (!slots[i].seen) return make_error(Errc::bad_value, "challenge: required tag " + to_hex(be_bytes(slots[i].tag, slots[i].tag > 0xFF ? 2 : 1)) + " is missing");
  // 02 carries the card's PIN state in the MAC; 01 did not and is refused (no downgrade).
  if (c.version[0] != 0x02) return make_error(Errc::unsupported, "challenge: protocol version must be 02");
  if (c.mode[0] != 0x01 && c.mode[0] != 0x02) return make_error(Errc::bad_value, "challenge: mode must be 01 (POS) or 02 (door)");
  if (c.door_mode() != door_seen) return make_error(Errc::bad_value, "challenge: DF32 door id is required in door mode and only there");
  if (door_seen) c.door = door;
  auto amt = bcd(c.amount, "amount 9F02");
  if (!amt) return amt.error();
  c.amount_minor = *amt;
  auto cur_code = bcd(c.currency, "currency 5F2A");
  if (!cur_code) return cur_code.error();
  c.currency_code = static_cast<std::uint16_t>(*cur_code);
  for (auto* f : {&c.date, &c.time})
    if (auto b = bcd(*f, "date/time"); !b) return b.error();
  return c;
}

Bytes mac_input(const Challenge& c, ByteView n, std::uint16_t list_id, std::uint16_t index, std::uint16_t atc,
                std::uint8_t pin_state) {
  Bytes out;
  tlv(out, 0xDF33, c.version);
  tlv(out, 0xDF31, c.mode);
  tlv(out, 0x9F37, c.un);
  tlv(out, 0x9F02, c.amount);
  tlv(out, 0x5F2A, c.currency);
  tlv(out, 0x9A, c.date);
  tlv(out, 0x9F21, c.time);
  tlv(out, 0x9C, c.type);
  tlv(out, 0x9F1C, c.terminal);
  if (c.door_mode() && c.door) tlv(out, 0xDF32, *c.door);
  tlv(out, 0xDF41, n);
  tlv(out, 0xDF42, be_bytes(list_id, 2));
  tlv(out, 0xDF43, be_bytes(index, 2));
  tlv(out, 0x9F36, be_bytes(atc, 2));
  tlv(out, 0xDF35, Bytes{pin_state});
  return out;
}

}  // namespace otac::backend
