#include "otac/common/sms.hpp"

#include <algorithm>
#include <array>

#include "otac/common/cursor.hpp"

namespace otac::sms {
namespace {

constexpr std::string_view kDigits = "0123456789*#abc";

// TS 23.038 6.2.1: the GSM 7-bit default alphabet, as UTF-8; index = septet. 0x1B is the
// escape to the extension table and is handled separately.
constexpr std::array<const char*, 128> kGsm7 = {
    "@", "\xC2\xA3", "$", "\xC2\xA5", "\xC3\xA8", "\xC3\xA9", "\xC3\xB9", "\xC3\xAC",
    "\xC3\xB2", "\xC3\x87", "\n", "\xC3\x98", "\xC3\xB8", "\r", "\xC3\x85", "\xC3\xA5",
    "\xCE\x94", "_", "\xCE\xA6", "\xCE\x93", "\xCE\x9B", "\xCE\xA9", "\xCE\xA0", "\xCE\xA8",
    "\xCE\xA3", "\xCE\x98", "\xCE\x9E", " ", "\xC3\x86", "\xC3\xA6", "\xC3\x9F", "\xC3\x89",
    " ", "!", "\"", "#", "\xC2\xA4", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".", "/",
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", ":", ";", "<", "=", ">", "?",
    "\xC2\xA1", "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O",
    "P", "Q", "R", "S", "T", "U", "V", "W", "X", "Y", "Z", "\xC3\x84", "\xC3\x96", "\xC3\x91", "\xC3\x9C", "\xC2\xA7",
    "\xC2\xBF", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o",
    "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", "\xC3\xA4", "\xC3\xB6", "\xC3\xB1", "\xC3\xBC", "\xC3\xA0",
};

constexpr std::uint8_t kEsc = 0x1B;

// TS 23.038 6.2.1.1 extension table (septet after 1B -> character).
struct Ext {
  std::uint8_t septet;
  const char* utf8;
};
constexpr std::array<Ext, 10> kGsm7Ext = {{{0x0A, "\f"}, {0x14, "^"}, {0x28, "{"}, {0x29, "}"}, {0x2F, "\\"},
                                           {0x3C, "["}, {0x3D, "~"}, {0x3E, "]"}, {0x40, "|"}, {0x65, "\xE2\x82\xAC"}}};

Error err(Errc c, std::string m) { return make_error(c, std::move(m)); }

std::string hexbyte(std::uint8_t b) { return to_hex(ByteView(&b, 1)); }

// Semi-octet digits (low nibble first), F-filled when odd. Shared by the TS 23.040 and
// TS 24.008 forms, which differ only in their length octet.
Result<Bytes> pack_digits(const std::string& digits, const char* what) {
  if (digits.size() > max_address_digits)
    return err(Errc::bad_length, std::string(what) + ": " + std::to_string(digits.size()) + " digits, at most " +
                                     std::to_string(max_address_digits) + " fit");
  Bytes out((digits.size() + 1) / 2, 0xFF);
  for (std::size_t i = 0; i < digits.size(); ++i) {
    const auto pos = kDigits.find(digits[i]);
    if (pos == std::string_view::npos)
      return err(Errc::bad_value, std::string(what) + ": '" + std::string(1, digits[i]) +
                                      "' is not an address digit (use 0-9 * # a b c)");
    const auto v = static_cast<std::uint8_t>(pos);
    auto& o = out[i / 2];
    o = (i % 2 == 0) ? static_cast<std::uint8_t>((o & 0xF0) | v) : static_cast<std::uint8_t>((o & 0x0F) | (v << 4));
  }
  return out;
}

Result<std::string> unpack_digits(ByteView octets, std::size_t count, const char* what) {
  std::string out;
  for (std::size_t i = 0; i < octets.size() * 2; ++i) {
    const std::uint8_t b = octets[i / 2];
    const auto v = static_cast<std::uint8_t>(i % 2 == 0 ? (b & 0x0F) : (b >> 4));
    if (i < count) {
      if (v == 0x0F)
        return err(Errc::bad_value, std::string(what) + ": filler F at digit " + std::to_string(i + 1) + " of " +
                                        std::to_string(count));
      out.push_back(kDigits[v]);
    } else if (v != 0x0F) {
      return err(Errc::bad_value, std::string(what) + ": semi-octet after the last digit is " + hexbyte(v) +
                                      ", must be the filler F");
    }
  }
  return out;
}

bool bit(std::uint8_t v, int n) { return ((v >> n) & 1) != 0; }
std::uint8_t flag(bool b, int n) { return static_cast<std::uint8_t>(b ? (1u << n) : 0u); }

std::uint8_t bcd2(std::uint8_t v) { return static_cast<std::uint8_t>(((v % 10) << 4) | (v / 10)); }

// Septets needed for a UDH of udhl octets plus its UDHL (TS 23.040 9.2.3.24 fill rule).
std::size_t udh_septets(std::size_t udh_octets) { return (udh_octets * 8 + 6) / 7; }

// Encodes TP-UDL and TP-UD for either TPDU.
Result<void> encode_user_data(Bytes& out, std::uint8_t dcs, const std::vector<UdhElement>& udh, ByteView data) {
  auto alpha = alphabet(dcs);
  if (!alpha) return alpha.error();
  Bytes header;
  if (!udh.empty()) {
    auto h = encode_udh(udh);
    if (!h) return h.error();
    if (h->size() > max_user_data - 1)
      return err(Errc::bad_length, "SMS: user data header of " + std::to_string(h->size()) + " octets exceeds 139");
    header.push_back(static_cast<std::uint8_t>(h->size()));
    append(header, *h);
  }
  if (*alpha == Alphabet::gsm7) {
    for (auto s : data)
      if (s > 0x7F) return err(Errc::bad_value, "SMS: user data value " + hexbyte(s) + " is not a septet (DCS is 7-bit)");
    const std::size_t hs = udh_septets(header.size());
    const std::size_t udl = hs + data.size();
    if (udl > 160)
      return err(Errc::bad_length, "SMS: " + std::to_string(udl) + " septets of user data (with header) exceed 160");
    out.push_back(static_cast<std::uint8_t>(udl));
    append(out, header);
    append(out, pack_septets(data, static_cast<unsigned>(hs * 7 - header.size() * 8)));
    return {};
  }
  const std::size_t udl = header.size() + data.size();
  if (udl > max_user_data)
    return err(Errc::bad_length, "SMS: " + std::to_string(udl) + " octets of user data (with header) exceed 140");
  out.push_back(static_cast<std::uint8_t>(udl));
  append(out, header);
  append(out, data);
  return {};
}

// Reads TP-UDL and TP-UD (the rest of the TPDU) for either TPDU.
Result<void> parse_user_data(Cursor& c, std::uint8_t dcs, bool udhi, std::vector<UdhElement>& udh, Bytes& data,
                             const char* what) {
  auto alpha = alphabet(dcs);
  if (!alpha) return alpha.error();
  const std::uint8_t udl = c.u8("TP-UDL");
  if (!c.ok()) return c.error();
  const bool septets = *alpha == Alphabet::gsm7;
  if (septets ? udl > 160 : udl > max_user_data)
    return err(Errc::bad_length, std::string(what) + ": TP-UDL " + std::to_string(udl) + " exceeds " +
                                     (septets ? "160 septets" : "140 octets"));
  const std::size_t octets = septets ? (udl * 7u + 7) / 8 : udl;
  if (c.remaining() < octets)
    return err(Errc::truncated, std::string(what) + ": TP-UDL says " + std::to_string(octets) + " octets of user data, " +
                                    std::to_string(c.remaining()) + " present");
  const ByteView ud = c.take(octets, "TP-UD");
  std::size_t header_octets = 0;
  if (udhi) {
    if (ud.empty()) return err(Errc::bad_length, std::string(what) + ": TP-UDHI set but TP-UDL is 0");
    const std::size_t udhl = ud[0];
    if (udhl + 1 > ud.size())
      return err(Errc::bad_length, std::string(what) + ": UDHL " + std::to_string(udhl) + " exceeds the " +
                                       std::to_string(ud.size() - 1) + " octets of user data after it");
    auto elems = parse_udh(ud.subspan(1, udhl));
    if (!elems) return elems.error();
    udh = std::move(*elems);
    header_octets = udhl + 1;
  }
  if (!septets) {
    data.assign(ud.begin() + static_cast<std::ptrdiff_t>(header_octets), ud.end());
    return {};
  }
  const std::size_t hs = udhi ? udh_septets(header_octets) : 0;
  if (hs > udl)
    return err(Errc::bad_length, std::string(what) + ": the user data header needs " + std::to_string(hs) +
                                     " septets, TP-UDL is " + std::to_string(udl));
  auto s = unpack_septets(ud.subspan(header_octets), udl - hs, static_cast<unsigned>(hs * 7 - header_octets * 8));
  if (!s) return s.error();
  data = std::move(*s);
  return {};
}

}  // namespace

Result<Alphabet> alphabet(std::uint8_t dcs) {
  const unsigned group = dcs >> 4;
  if (group <= 0x7) {  // general data coding (00xx) and automatic deletion (01xx)
    if (bit(dcs, 5))
      return err(Errc::unsupported, "SMS: TP-DCS " + hexbyte(dcs) + " says compressed text, which is not supported");
    switch ((dcs >> 2) & 0x03) {
      case 1: return Alphabet::eight_bit;
      case 2: return Alphabet::ucs2;
      default: return Alphabet::gsm7;  // 11 is reserved: TS 23.038 says assume 7-bit
    }
  }
  if (group == 0xE) return Alphabet::ucs2;                      // MWI, store, UCS2
  if (group == 0xF) return bit(dcs, 2) ? Alphabet::eight_bit : Alphabet::gsm7;
  return Alphabet::gsm7;  // 8-B reserved (assume 7-bit), C-D MWI with 7-bit
}

Bytes encode_timestamp(const Timestamp& t) {
  const int q = t.tz_quarters < 0 ? -t.tz_quarters : t.tz_quarters;
  auto tz = bcd2(static_cast<std::uint8_t>(q % 80));
  if (t.tz_quarters < 0) tz = static_cast<std::uint8_t>(tz | 0x08);
  return {bcd2(t.year), bcd2(t.month), bcd2(t.day), bcd2(t.hour), bcd2(t.minute), bcd2(t.second), tz};
}

Result<Timestamp> parse_timestamp(ByteView seven) {
  if (seven.size() != 7)
    return err(seven.size() < 7 ? Errc::truncated : Errc::bad_length,
               "SMS: a time stamp has 7 octets, got " + std::to_string(seven.size()));
  std::array<std::uint8_t, 7> v{};
  for (std::size_t i = 0; i < 7; ++i) {
    const std::uint8_t lo = static_cast<std::uint8_t>(seven[i] & (i == 6 ? 0x07 : 0x0F));
    const std::uint8_t hi = static_cast<std::uint8_t>(seven[i] >> 4);
    if (lo > 9 || hi > 9)
      return err(Errc::bad_value, "SMS: time stamp octet " + std::to_string(i + 1) + " (" + hexbyte(seven[i]) +
                                      ") is not two decimal semi-octets");
    v[i] = static_cast<std::uint8_t>(lo * 10 + hi);
  }
  Timestamp t{v[0], v[1], v[2], v[3], v[4], v[5], (seven[6] & 0x08) ? -static_cast<int>(v[6]) : static_cast<int>(v[6])};
  if (t.month < 1 || t.month > 12 || t.day < 1 || t.day > 31 || t.hour > 23 || t.minute > 59 || t.second > 59)
    return err(Errc::bad_value, "SMS: time stamp " + to_hex(seven) + " has a field out of range");
  return t;
}

Result<Bytes> encode_udh(const std::vector<UdhElement>& udh) {
  Bytes out;
  for (const auto& e : udh) {
    if (e.data.size() > 0xFF)
      return err(Errc::bad_length, "SMS: UDH element " + hexbyte(e.iei) + " has " + std::to_string(e.data.size()) +
                                       " octets, at most 255");
    out.push_back(e.iei);
    out.push_back(static_cast<std::uint8_t>(e.data.size()));
    append(out, e.data);
  }
  return out;
}

Result<std::vector<UdhElement>> parse_udh(ByteView udh) {
  Cursor c(udh, "SMS user data header");
  std::vector<UdhElement> out;
  while (c.ok() && !c.empty()) {
    UdhElement e;
    e.iei = c.u8("IEI");
    const std::uint8_t len = c.u8("IEDL");
    const auto d = c.take(len, "IED");
    e.data.assign(d.begin(), d.end());
    if (c.ok()) out.push_back(std::move(e));
  }
  if (auto f = c.finish(); !f) return f.error();
  return out;
}

const UdhElement* find(const std::vector<UdhElement>& udh, std::uint8_t iei) noexcept {
  for (const auto& e : udh)
    if (e.iei == iei) return &e;
  return nullptr;
}

Bytes pack_septets(ByteView septets, unsigned fill_bits) {
  const std::size_t bits = fill_bits + septets.size() * 7;
  Bytes out((bits + 7) / 8, 0);
  std::size_t pos = fill_bits;
  for (auto s : septets) {
    const unsigned v = s & 0x7Fu;
    const std::size_t byte = pos / 8;
    const unsigned shift = static_cast<unsigned>(pos % 8);
    out[byte] = static_cast<std::uint8_t>(out[byte] | ((v << shift) & 0xFF));
    if (shift > 1) out[byte + 1] = static_cast<std::uint8_t>(out[byte + 1] | (v >> (8 - shift)));
    pos += 7;
  }
  return out;
}

Result<Bytes> unpack_septets(ByteView octets, std::size_t count, unsigned fill_bits) {
  const std::size_t need = (fill_bits + count * 7 + 7) / 8;
  if (octets.size() < need)
    return err(Errc::truncated, "SMS: " + std::to_string(count) + " septets need " + std::to_string(need) +
                                    " octets, got " + std::to_string(octets.size()));
  Bytes out;
  out.reserve(count);
  std::size_t pos = fill_bits;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t byte = pos / 8;
    const unsigned shift = static_cast<unsigned>(pos % 8);
    unsigned v = static_cast<unsigned>(octets[byte]) >> shift;
    if (shift > 1) v |= static_cast<unsigned>(octets[byte + 1]) << (8 - shift);
    out.push_back(static_cast<std::uint8_t>(v & 0x7F));
    pos += 7;
  }
  return out;
}

std::string gsm7_to_utf8(ByteView septets) {
  std::string out;
  for (std::size_t i = 0; i < septets.size(); ++i) {
    const std::uint8_t s = septets[i] & 0x7F;
    if (s != kEsc) {
      out += kGsm7[s];
      continue;
    }
    if (i + 1 == septets.size()) {  // a lone escape at the end shows as a space (TS 23.038)
      out += ' ';
      break;
    }
    const std::uint8_t x = septets[++i] & 0x7F;
    const auto it = std::find_if(kGsm7Ext.begin(), kGsm7Ext.end(), [x](const Ext& e) { return e.septet == x; });
    out += it != kGsm7Ext.end() ? it->utf8 : (x == kEsc ? " " : kGsm7[x]);
  }
  return out;
}

Result<Bytes> utf8_to_gsm7(std::string_view text) {
  Bytes out;
  std::size_t i = 0;
  while (i < text.size()) {
    // Longest match first: table entries are 1 to 3 UTF-8 bytes.
    bool found = false;
    for (std::size_t len = 3; len >= 1 && !found; --len) {
      if (i + len > text.size()) continue;
      const auto piece = text.substr(i, len);
      for (std::size_t s = 0; s < kGsm7.size() && !found; ++s) {
        if (s == kEsc || piece != kGsm7[s]) continue;
        out.push_back(static_cast<std::uint8_t>(s));
        found = true;
      }
      for (const auto& e : kGsm7Ext) {
        if (found || piece != e.utf8) continue;
        out.push_back(kEsc);
        out.push_back(e.septet);
        found = true;
      }
      if (found) i += len;
    }
    if (!found)
      return err(Errc::bad_value, "GSM 7-bit: character at byte " + std::to_string(i) +
                                      " is not in the default alphabet or its extension table");
  }
  return out;
}

Result<Bytes> encode_address(const Address& a) {
  if ((a.toa & 0x80) == 0) return err(Errc::bad_value, "SMS address: type of address " + hexbyte(a.toa) + " lacks bit 8");
  Bytes out;
  if (a.alphanumeric()) {
    auto s = utf8_to_gsm7(a.digits);
    if (!s) return err(Errc::bad_value, "SMS address: " + s.error().message);
    if (s->size() > 11)
      return err(Errc::bad_length, "SMS address: alphanumeric address of " + std::to_string(s->size()) +
                                       " septets, at most 11 fit");
    out.push_back(static_cast<std::uint8_t>((s->size() * 7 + 3) / 4));
    out.push_back(a.toa);
    append(out, pack_septets(*s));
    return out;
  }
  auto d = pack_digits(a.digits, "SMS address");
  if (!d) return d.error();
  out.push_back(static_cast<std::uint8_t>(a.digits.size()));
  out.push_back(a.toa);
  append(out, *d);
  return out;
}

Result<Address> parse_address(ByteView data, std::size_t& consumed) {
  Cursor c(data, "SMS address");
  const std::uint8_t len = c.u8("address length");
  Address a;
  a.toa = c.u8("type of address");
  if (!c.ok()) return c.error();
  if ((a.toa & 0x80) == 0) return err(Errc::bad_value, "SMS address: type of address " + hexbyte(a.toa) + " lacks bit 8");
  if (len > max_address_digits)
    return err(Errc::bad_length, "SMS address: length " + std::to_string(len) + " semi-octets, at most 20");
  const auto body = c.take((len + 1u) / 2, "address digits");
  if (!c.ok()) return c.error();
  consumed = c.position();
  if (a.alphanumeric()) {
    auto s = unpack_septets(body, len * 4u / 7);
    if (!s) return s.error();
    a.digits = gsm7_to_utf8(*s);
    return a;
  }
  auto d = unpack_digits(body, len, "SMS address");
  if (!d) return d.error();
  a.digits = std::move(*d);
  return a;
}

Result<Bytes> encode_address_bcd(const Address& a) {
  if (a.alphanumeric())
    return err(Errc::unsupported, "BCD address: an alphanumeric address (TON 101) has no BCD form");
  if ((a.toa & 0x80) == 0) return err(Errc::bad_value, "BCD address: TON/NPI " + hexbyte(a.toa) + " lacks bit 8");
  auto d = pack_digits(a.digits, "BCD address");
  if (!d) return d.error();
  Bytes out{a.toa};
  append(out, *d);
  return out;
}

Result<Address> parse_address_bcd(ByteView value) {
  if (value.empty()) return err(Errc::truncated, "BCD address: empty (needs at least the TON/NPI octet)");
  Address a;
  a.toa = value[0];
  if ((a.toa & 0x80) == 0) return err(Errc::bad_value, "BCD address: TON/NPI " + hexbyte(a.toa) + " lacks bit 8");
  if (a.alphanumeric()) return err(Errc::unsupported, "BCD address: alphanumeric TON 101 has no BCD form");
  const auto body = value.subspan(1);
  if (body.size() * 2 > max_address_digits)
    return err(Errc::bad_length, "BCD address: " + std::to_string(body.size()) + " digit octets, at most 10");
  // The digit count is implied: every semi-octet, except an F filler in the very last one.
  std::size_t count = body.size() * 2;
  if (!body.empty() && (body.back() >> 4) == 0x0F) --count;
  auto d = unpack_digits(body, count, "BCD address");
  if (!d) return d.error();
  a.digits = std::move(*d);
  return a;
}

Result<Bytes> encode(const Deliver& d) {
  Bytes out;
  out.push_back(static_cast<std::uint8_t>(0x00 | flag(!d.more_messages, 2) | flag(d.loop_prevention, 3) |
                                          flag(d.status_report_indication, 5) | flag(!d.udh.empty(), 6) |
                                          flag(d.reply_path, 7)));
  auto a = encode_address(d.originator);
  if (!a) return a.error();
  append(out, *a);
  out.push_back(d.pid);
  out.push_back(d.dcs);
  append(out, encode_timestamp(d.scts));
  if (auto u = encode_user_data(out, d.dcs, d.udh, d.user_data); !u) return u.error();
  return out;
}

Result<Bytes> encode(const Submit& s) {
  const std::size_t vp_size = s.vp.format == VpFormat::none ? 0 : s.vp.format == VpFormat::relative ? 1 : 7;
  if (s.vp.value.size() != vp_size)
    return err(Errc::bad_length, "SMS-SUBMIT: TP-VP of this format has " + std::to_string(vp_size) + " octets, got " +
                                     std::to_string(s.vp.value.size()));
  Bytes out;
  out.push_back(static_cast<std::uint8_t>(0x01 | flag(s.reject_duplicates, 2) |
                                          (static_cast<unsigned>(s.vp.format) << 3) |
                                          flag(s.status_report_request, 5) | flag(!s.udh.empty(), 6) |
                                          flag(s.reply_path, 7)));
  out.push_back(s.mr);
  auto a = encode_address(s.destination);
  if (!a) return a.error();
  append(out, *a);
  out.push_back(s.pid);
  out.push_back(s.dcs);
  append(out, s.vp.value);
  if (auto u = encode_user_data(out, s.dcs, s.udh, s.user_data); !u) return u.error();
  return out;
}

Result<Deliver> parse_deliver(ByteView tpdu) {
  Cursor c(tpdu, "SMS-DELIVER");
  const std::uint8_t fo = c.u8("first octet");
  if (!c.ok()) return c.error();
  if (mti(fo) != 0)
    return err(Errc::bad_value, "SMS-DELIVER: TP-MTI is " + std::to_string(mti(fo)) + ", expected 0 (first octet " +
                                    hexbyte(fo) + ")");
  Deliver d;
  d.more_messages = !bit(fo, 2);
  d.loop_prevention = bit(fo, 3);
  d.status_report_indication = bit(fo, 5);
  d.reply_path = bit(fo, 7);
  std::size_t used = 0;
  auto a = parse_address(tpdu.subspan(1), used);
  if (!a) return err(a.error().code, "SMS-DELIVER TP-OA: " + a.error().message);
  d.originator = std::move(*a);
  c.take(used, "TP-OA");
  d.pid = c.u8("TP-PID");
  d.dcs = c.u8("TP-DCS");
  const auto ts = c.take(7, "TP-SCTS");
  if (!c.ok()) return c.error();
  auto t = parse_timestamp(ts);
  if (!t) return err(t.error().code, "SMS-DELIVER TP-SCTS: " + t.error().message);
  d.scts = *t;
  if (auto u = parse_user_data(c, d.dcs, bit(fo, 6), d.udh, d.user_data, "SMS-DELIVER"); !u) return u.error();
  if (auto f = c.finish(); !f) return f.error();
  return d;
}

Result<Submit> parse_submit(ByteView tpdu) {
  Cursor c(tpdu, "SMS-SUBMIT");
  const std::uint8_t fo = c.u8("first octet");
  if (!c.ok()) return c.error();
  if (mti(fo) != 1)
    return err(Errc::bad_value, "SMS-SUBMIT: TP-MTI is " + std::to_string(mti(fo)) + ", expected 1 (first octet " +
                                    hexbyte(fo) + ")");
  Submit s;
  s.reject_duplicates = bit(fo, 2);
  s.vp.format = static_cast<VpFormat>((fo >> 3) & 0x03);
  s.status_report_request = bit(fo, 5);
  s.reply_path = bit(fo, 7);
  s.mr = c.u8("TP-MR");
  if (!c.ok()) return c.error();
  std::size_t used = 0;
  auto a = parse_address(tpdu.subspan(2), used);
  if (!a) return err(a.error().code, "SMS-SUBMIT TP-DA: " + a.error().message);
  s.destination = std::move(*a);
  c.take(used, "TP-DA");
  s.pid = c.u8("TP-PID");
  s.dcs = c.u8("TP-DCS");
  const std::size_t vp_size = s.vp.format == VpFormat::none ? 0 : s.vp.format == VpFormat::relative ? 1 : 7;
  if (vp_size != 0) {
    const auto vp = c.take(vp_size, "TP-VP");
    s.vp.value.assign(vp.begin(), vp.end());
  }
  if (!c.ok()) return c.error();
  if (auto u = parse_user_data(c, s.dcs, bit(fo, 6), s.udh, s.user_data, "SMS-SUBMIT"); !u) return u.error();
  if (auto f = c.finish(); !f) return f.error();
  return s;
}

Result<std::vector<Part>> split_concatenated(ByteView payload, std::optional<std::uint8_t> packet_iei,
                                             std::uint8_t ref) {
  const std::size_t packet_el = packet_iei ? 2 : 0;
  std::vector<Part> parts;
  const std::size_t single_room = max_user_data - (packet_iei ? 1 + packet_el : 0);
  if (payload.size() <= single_room) {
    Part p;
    if (packet_iei) p.udh.push_back({*packet_iei, {}});
    p.data.assign(payload.begin(), payload.end());
    parts.push_back(std::move(p));
    return parts;
  }
  const std::size_t concat_el = 5;  // 00 03 ref total seq
  const std::size_t first_room = max_user_data - 1 - concat_el - packet_el;
  const std::size_t room = max_user_data - 1 - concat_el;
  const std::size_t total = 1 + (payload.size() - first_room + room - 1) / room;
  if (total > 255)
    return err(Errc::bad_length, "SMS concatenation: " + std::to_string(payload.size()) + " octets need " +
                                     std::to_string(total) + " parts, at most 255");
  std::size_t off = 0;
  for (std::size_t seq = 1; seq <= total; ++seq) {
    const std::size_t n = std::min(seq == 1 ? first_room : room, payload.size() - off);
    Part p;
    p.udh.push_back({iei_concat_8bit, {ref, static_cast<std::uint8_t>(total), static_cast<std::uint8_t>(seq)}});
    if (seq == 1 && packet_iei) p.udh.push_back({*packet_iei, {}});
    const auto chunk = payload.subspan(off, n);
    p.data.assign(chunk.begin(), chunk.end());
    off += n;
    parts.push_back(std::move(p));
  }
  return parts;
}

Result<std::optional<Message>> Reassembler::add(const std::string& originator, const std::vector<UdhElement>& udh,
                                                ByteView data, Clock::time_point now) {
  expire(now);
  const UdhElement* concat = nullptr;
  std::vector<UdhElement> rest;
  for (const auto& e : udh) {
    if (e.iei != iei_concat_8bit && e.iei != iei_concat_16bit) {
      rest.push_back(e);
      continue;
    }
    if (concat) return err(Errc::bad_value, "SMS concatenation: more than one concatenation element in one part");
    const std::size_t want = e.iei == iei_concat_8bit ? 3 : 4;
    if (e.data.size() != want)
      return err(Errc::bad_value, "SMS concatenation: element " + hexbyte(e.iei) + " has " +
                                      std::to_string(e.data.size()) + " octets, expected " + std::to_string(want));
    concat = &e;
  }
  if (!concat) {
    Message m{originator, std::move(rest), Bytes(data.begin(), data.end())};
    return std::optional<Message>(std::move(m));
  }
  const auto& d = concat->data;
  const bool wide = concat->iei == iei_concat_16bit;
  const auto ref = static_cast<std::uint16_t>(wide ? (d[0] << 8) | d[1] : d[0]);
  const std::uint8_t total = d[wide ? 2 : 1];
  const std::uint8_t seq = d[wide ? 3 : 2];
  if (total == 0) return err(Errc::bad_value, "SMS concatenation: total number of parts is 0");
  if (seq == 0 || seq > total)
    return err(Errc::bad_value, "SMS concatenation: part " + std::to_string(seq) + " of " + std::to_string(total) +
                                    " is out of range");
  if (total > limits_.max_parts)
    return err(Errc::bad_length, "SMS concatenation: " + std::to_string(total) + " parts, at most " +
                                     std::to_string(limits_.max_parts) + " accepted");
  const auto key = std::make_pair(originator, ref);
  auto it = pending_.find(key);
  if (it != pending_.end() && it->second.total != total) {
    const auto was = it->second.total;
    pending_.erase(it);
    return err(Errc::conflict, "SMS concatenation: part says " + std::to_string(total) + " parts, earlier parts said " +
                                   std::to_string(was) + "; the partial message is dropped");
  }
  if (it == pending_.end()) {
    while (!pending_.empty() && pending_.size() >= limits_.max_pending) {
      auto oldest = std::min_element(pending_.begin(), pending_.end(), [](const auto& x, const auto& y) {
        return x.second.order < y.second.order;
      });
      pending_.erase(oldest);
    }
    Pending p;
    p.total = total;
    p.first_seen = now;
    p.order = next_order_++;
    it = pending_.emplace(key, std::move(p)).first;
  }
  auto& pend = it->second;
  if (pend.parts.count(seq) != 0)
    return err(Errc::conflict, "SMS concatenation: part " + std::to_string(seq) + " of reference " + std::to_string(ref) +
                                   " was received already");
  pend.parts.emplace(seq, Part{std::move(rest), Bytes(data.begin(), data.end())});
  if (pend.parts.size() < total) return std::optional<Message>();
  Message m;
  m.originator = originator;
  m.udh = pend.parts.begin()->second.udh;
  for (auto& [s, part] : pend.parts) append(m.data, part.data);
  pending_.erase(it);
  return std::optional<Message>(std::move(m));
}

std::size_t Reassembler::expire(Clock::time_point now) {
  return std::erase_if(pending_, [&](const auto& kv) { return now - kv.second.first_seen > limits_.timeout; });
}

}  // namespace otac::sms
