#include "otac/applet/sms_lite.hpp"

#include "otac/common/cursor.hpp"
#include "otac/common/tlv.hpp"

namespace otac::applet::sms {
namespace {

constexpr std::uint8_t kPid = 0x7F;  // SIM data download
constexpr std::uint8_t kDcs = 0xF6;  // 8-bit data, class 2 (SIM specific)

// Digits of a number; international when it starts with '+'.
Result<std::pair<std::string, std::uint8_t>> split_number(std::string_view number) {
  std::uint8_t toa = 0x81;
  if (!number.empty() && number.front() == '+') {
    toa = 0x91;
    number.remove_prefix(1);
  }
  if (number.empty() || number.size() > 20)
    return make_error(Errc::bad_length, "phone number must have 1 to 20 digits");
  for (char ch : number)
    if (ch < '0' || ch > '9') return make_error(Errc::bad_value, "phone number may hold only digits and a leading '+'");
  return std::pair<std::string, std::uint8_t>{std::string(number), toa};
}

Bytes bcd_digits(std::string_view digits) {
  Bytes out;
  for (std::size_t i = 0; i < digits.size(); i += 2) {
    const auto lo = static_cast<std::uint8_t>(digits[i] - '0');
    const auto hi = static_cast<std::uint8_t>(i + 1 < digits.size() ? digits[i + 1] - '0' : 0x0F);
    out.push_back(static_cast<std::uint8_t>(hi << 4 | lo));
  }
  return out;
}

// Swapped-nibble BCD digits; F ends the number (only in the last byte's high nibble).
Result<std::string> digits_from_bcd(ByteView v, std::size_t max_digits) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) {
    for (int half = 0; half < 2; ++half) {
      const int d = half == 0 ? (v[i] & 0x0F) : (v[i] >> 4);
      if (d == 0x0F && half == 1 && i + 1 == v.size()) break;
      if (d > 9) return make_error(Errc::bad_value, "address digit is not 0-9");
      s.push_back(static_cast<char>('0' + d));
    }
  }
  if (s.size() > max_digits) return make_error(Errc::bad_length, "address has too many digits");
  return s;
}

std::string with_toa(std::string digits, std::uint8_t toa) {
  return (toa & 0x70) == 0x10 ? "+" + digits : digits;
}

// TP-OA / TP-DA: digit count, TOA, BCD.
Result<Bytes> encode_tp_address(std::string_view number) {
  auto n = split_number(number);
  if (!n) return n.error();
  Bytes out{static_cast<std::uint8_t>(n->first.size()), n->second};
  append(out, bcd_digits(n->first));
  return out;
}

Result<std::string> read_tp_address(Cursor& c) {
  const std::size_t digits = c.u8("address length");
  const auto toa = c.u8("type of address");
  if (digits > 20) return make_error(Errc::bad_length, "TPDU address longer than 20 digits");
  ByteView v = c.take((digits + 1) / 2, "address digits");
  if (!c.ok()) return c.error();
  // Alphanumeric (GSM 7-bit) senders are common for OTA: kept as '@' and the raw octets in hex,
  // enough to tell senders apart for reassembly.
  if ((toa & 0x70) == 0x50) return "@" + to_hex(v);
  auto s = digits_from_bcd(v, digits);
  if (!s) return s.error();
  if (s->size() != digits) return make_error(Errc::bad_value, "TPDU address digit count disagrees with its length");
  return with_toa(std::move(*s), toa);
}

bool eight_bit(std::uint8_t dcs) {
  if ((dcs & 0xF0) == 0xF0) return (dcs & 0x04) != 0;
  if ((dcs & 0xC0) == 0x00) return (dcs & 0x20) == 0 && (dcs & 0x0C) == 0x04;
  return false;
}

// TP-UDL (octets, 8-bit data) then the UD: UDHL, UDH and payload when udhi.
Result<void> read_user_data(Cursor& c, bool udhi, Bytes& udh, Bytes& payload) {
  const std::size_t udl = c.u8("TP-UDL");
  ByteView ud = c.take(udl, "TP-UD");
  if (auto f = c.finish(); !f) return f.error();
  if (udl > 140) return make_error(Errc::bad_length, "TP-UDL above 140 octets");
  Cursor u(ud, "TP-UD");
  if (udhi) {
    const std::size_t udhl = u.u8("UDHL");
    ByteView h = u.take(udhl, "UDH");
    if (!u.ok()) return u.error();
    udh.assign(h.begin(), h.end());
  }
  ByteView rest = u.rest();
  payload.assign(rest.begin(), rest.end());
  return {};
}

Result<Bytes> user_data(ByteView udh, ByteView payload) {
  Bytes ud;
  if (!udh.empty()) {
    ud.push_back(static_cast<std::uint8_t>(udh.size()));
    append(ud, udh);
  }
  append(ud, payload);
  if (udh.size() > 139 || ud.size() > 140) return make_error(Errc::bad_length, "SMS user data longer than 140 octets");
  Bytes out{static_cast<std::uint8_t>(ud.size())};
  append(out, ud);
  return out;
}

// The children of a SIM toolkit template (D0/D1), with comprehension-required bits cleared.
Result<std::vector<tlv::Node>> template_children(ByteView data, tlv::Tag want, const char* what) {
  auto top = tlv::parse(data);
  if (!top) return make_error(top.error().code, std::string(what) + ": " + top.error().message);
  if (top->size() != 1 || (*top)[0].tag != want) return make_error(Errc::bad_value, std::string(what) + ": wrong template tag");
  auto kids = tlv::parse((*top)[0].value);
  if (!kids) return make_error(kids.error().code, std::string(what) + ": " + kids.error().message);
  for (auto& k : *kids) k.tag &= 0x7F;
  return kids;
}

}  // namespace

Result<std::vector<Ie>> parse_udh(ByteView udh) {
  std::vector<Ie> out;
  Cursor c(udh, "UDH");
  for (int guard = 0; !c.empty(); ++guard) {
    if (guard >= 16) return make_error(Errc::bad_length, "UDH has more than 16 elements");
    Ie ie;
    ie.iei = c.u8("IEI");
    const std::size_t len = c.u8("IE length");
    ByteView d = c.take(len, "IE data");
    if (!c.ok()) return c.error();
    ie.data.assign(d.begin(), d.end());
    out.push_back(std::move(ie));
  }
  if (auto f = c.finish(); !f) return f.error();
  return out;
}

Bytes encode_udh(const std::vector<Ie>& ies) {
  Bytes out;
  for (const auto& ie : ies) {
    out.push_back(ie.iei);
    out.push_back(static_cast<std::uint8_t>(ie.data.size()));
    append(out, ie.data);
  }
  return out;
}

Result<Bytes> encode_address(std::string_view number) {
  auto n = split_number(number);
  if (!n) return n.error();
  Bytes out{n->second};
  append(out, bcd_digits(n->first));
  return out;
}

Result<std::string> parse_address(ByteView v) {
  Cursor c(v, "address");
  const auto toa = c.u8("type of address");
  ByteView digits = c.rest();
  if (!c.ok()) return c.error();
  if (digits.empty() || digits.size() > 10) return make_error(Errc::bad_length, "address must have 1 to 20 digits");
  auto s = digits_from_bcd(digits, 20);
  if (!s) return s.error();
  return with_toa(std::move(*s), toa);
}

Result<Deliver> parse_deliver(ByteView tpdu) {
  Cursor c(tpdu, "SMS-DELIVER");
  const auto fo = c.u8("first octet");
  if (!c.ok()) return c.error();
  if ((fo & 0x03) != 0x00) return make_error(Errc::bad_value, "TPDU is not an SMS-DELIVER (TP-MTI)");
  Deliver d;
  auto from = read_tp_address(c);
  if (!from) return from.error();
  d.from = std::move(*from);
  d.pid = c.u8("TP-PID");
  d.dcs = c.u8("TP-DCS");
  c.take(7, "TP-SCTS");
  if (!c.ok()) return c.error();
  if (!eight_bit(d.dcs)) return make_error(Errc::unsupported, "SMS-DELIVER data coding is not 8-bit");
  Bytes udh;
  if (auto r = read_user_data(c, (fo & 0x40) != 0, udh, d.payload); !r) return r.error();
  if ((fo & 0x40) != 0) {
    auto ies = parse_udh(udh);
    if (!ies) return ies.error();
    d.udh = std::move(*ies);
  }
  return d;
}

Result<Bytes> encode_deliver(std::string_view from, ByteView udh, ByteView payload) {
  // MTI 00, TP-MMS set (no more messages waiting), UDHI when there is a UDH.
  Bytes out{static_cast<std::uint8_t>(0x04 | (udh.empty() ? 0x00 : 0x40))};
  auto oa = encode_tp_address(from);
  if (!oa) return oa.error();
  append(out, *oa);
  out.push_back(kPid);
  out.push_back(kDcs);
  append(out, Bytes{0x62, 0x11, 0x22, 0x00, 0x00, 0x00, 0x00});  // TP-SCTS: 2026-11-22 00:00:00 UTC
  auto ud = user_data(udh, payload);
  if (!ud) return ud.error();
  append(out, *ud);
  return out;
}

Result<Submit> parse_submit(ByteView tpdu) {
  Cursor c(tpdu, "SMS-SUBMIT");
  const auto fo = c.u8("first octet");
  c.u8("TP-MR");
  if (!c.ok()) return c.error();
  if ((fo & 0x03) != 0x01) return make_error(Errc::bad_value, "TPDU is not an SMS-SUBMIT (TP-MTI)");
  Submit s;
  auto to = read_tp_address(c);
  if (!to) return to.error();
  s.to = std::move(*to);
  s.pid = c.u8("TP-PID");
  s.dcs = c.u8("TP-DCS");
  const int vpf = (fo >> 3) & 0x03;
  c.take(vpf == 0 ? 0 : vpf == 2 ? 1 : 7, "TP-VP");
  if (!c.ok()) return c.error();
  if (!eight_bit(s.dcs)) return make_error(Errc::unsupported, "SMS-SUBMIT data coding is not 8-bit");
  if (auto r = read_user_data(c, (fo & 0x40) != 0, s.udh, s.payload); !r) return r.error();
  return s;
}

Result<Bytes> encode_submit(std::string_view to, ByteView udh, ByteView payload) {
  Bytes out{static_cast<std::uint8_t>(0x01 | (udh.empty() ? 0x00 : 0x40)), 0x00};
  auto da = encode_tp_address(to);
  if (!da) return da.error();
  append(out, *da);
  out.push_back(kPid);
  out.push_back(kDcs);
  auto ud = user_data(udh, payload);
  if (!ud) return ud.error();
  append(out, *ud);
  return out;
}

Result<Bytes> encode_sms_pp_download(std::string_view smsc, ByteView tpdu) {
  Bytes body;
  tlv::append(body, 0x82, Bytes{0x83, 0x81});  // device identities: network -> UICC
  if (!smsc.empty()) {
    auto addr = encode_address(smsc);
    if (!addr) return addr.error();
    tlv::append(body, 0x06, *addr);
  }
  tlv::append(body, 0x8B, tpdu);
  return tlv::encode(0xD1, body);
}

Result<Bytes> parse_sms_pp_download(ByteView envelope) {
  auto kids = template_children(envelope, 0xD1, "ENVELOPE SMS-PP download");
  if (!kids) return kids.error();
  const tlv::Node* dev = tlv::find(*kids, 0x02);
  const tlv::Node* tpdu = tlv::find(*kids, 0x0B);
  if (!dev || dev->value != Bytes{0x83, 0x81})
    return make_error(Errc::bad_value, "ENVELOPE SMS-PP download: device identities must be 83 81 (network to UICC)");
  if (!tpdu) return make_error(Errc::bad_value, "ENVELOPE SMS-PP download: SMS TPDU (tag 8B) missing");
  for (const auto& k : *kids)
    if (k.tag != 0x02 && k.tag != 0x06 && k.tag != 0x0B)
      return make_error(Errc::bad_value, "ENVELOPE SMS-PP download: unexpected data object");
  if (kids->size() > 3) return make_error(Errc::bad_value, "ENVELOPE SMS-PP download: a data object appears twice");
  return tpdu->value;
}

Result<Bytes> encode_send_short_message(std::string_view address, ByteView tpdu) {
  auto addr = encode_address(address);
  if (!addr) return addr.error();
  Bytes body;
  tlv::append(body, 0x81, Bytes{0x01, 0x13, 0x00});  // command details: number 1, SEND SHORT MESSAGE, no packing
  tlv::append(body, 0x82, Bytes{0x81, 0x83});        // device identities: UICC -> network
  tlv::append(body, 0x06, *addr);
  tlv::append(body, 0x8B, tpdu);
  return tlv::encode(0xD0, body);
}

Result<SendShortMessage> parse_send_short_message(ByteView d0) {
  auto kids = template_children(d0, 0xD0, "SEND SHORT MESSAGE");
  if (!kids) return kids.error();
  const tlv::Node* details = tlv::find(*kids, 0x01);
  const tlv::Node* tpdu = tlv::find(*kids, 0x0B);
  if (!details || details->value.size() != 3 || details->value[1] != 0x13)
    return make_error(Errc::bad_value, "proactive command is not SEND SHORT MESSAGE");
  if (!tpdu) return make_error(Errc::bad_value, "SEND SHORT MESSAGE: SMS TPDU (tag 8B) missing");
  SendShortMessage m;
  if (const tlv::Node* a = tlv::find(*kids, 0x06)) {
    auto s = parse_address(a->value);
    if (!s) return s.error();
    m.address = std::move(*s);
  }
  m.tpdu = tpdu->value;
  return m;
}

}  // namespace otac::applet::sms
