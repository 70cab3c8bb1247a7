// Thin adapters over common/sms and common/envelope (the project's one implementation of
// TS 23.040 and TS 31.111), in the shapes the applet and the host use.
#include "otac/applet/sms_lite.hpp"

#include "otac/common/envelope.hpp"
#include "otac/common/sms.hpp"

namespace otac::applet::sms {
namespace {

namespace cs = otac::sms;

// "+digits" -> international, "digits" -> unknown TON; digits 0-9 only.
Result<cs::Address> to_address(std::string_view number) {
  cs::Address a;
  a.toa = 0x81;
  if (!number.empty() && number.front() == '+') {
    a.toa = 0x91;
    number.remove_prefix(1);
  }
  if (number.empty() || number.size() > cs::max_address_digits)
    return make_error(Errc::bad_length, "phone number must have 1 to 20 digits");
  for (char ch : number)
    if (ch < '0' || ch > '9') return make_error(Errc::bad_value, "phone number may hold only digits and a leading '+'");
  a.digits = std::string(number);
  return a;
}

// The reverse; alphanumeric senders (common for OTA) become '@' and their text.
std::string from_address(const cs::Address& a) {
  if (a.alphanumeric()) return "@" + a.digits;
  return ((a.toa & 0x70) == 0x10 ? "+" : "") + a.digits;
}

Result<std::vector<cs::UdhElement>> from_raw_udh(ByteView udh) {
  if (udh.empty()) return std::vector<cs::UdhElement>{};
  return cs::parse_udh(udh);
}

Result<void> require_8bit(std::uint8_t dcs, const char* what) {
  auto a = cs::alphabet(dcs);
  if (!a) return a.error();
  if (*a != cs::Alphabet::eight_bit) return make_error(Errc::unsupported, std::string(what) + " data coding is not 8-bit");
  return {};
}

}  // namespace

Result<Bytes> encode_address(std::string_view number) {
  auto a = to_address(number);
  if (!a) return a.error();
  return cs::encode_address_bcd(*a);
}

Result<std::string> parse_address(ByteView v) {
  auto a = cs::parse_address_bcd(v);
  if (!a) return a.error();
  return from_address(*a);
}

Result<Deliver> parse_deliver(ByteView tpdu) {
  auto d = cs::parse_deliver(tpdu);
  if (!d) return d.error();
  if (auto e = require_8bit(d->dcs, "SMS-DELIVER"); !e) return e.error();
  return Deliver{from_address(d->originator), d->pid, d->dcs, std::move(d->udh), std::move(d->user_data)};
}

Result<Bytes> encode_deliver(std::string_view from, ByteView udh, ByteView payload) {
  auto a = to_address(from);
  if (!a && !from.empty() && from.size() <= 11) a = cs::Address{std::string(from), 0xD0};  // alphanumeric sender
  if (!a) return a.error();
  auto u = from_raw_udh(udh);
  if (!u) return u.error();
  cs::Deliver d;
  d.more_messages = false;
  d.originator = *a;
  d.scts = cs::Timestamp{26, 11, 22, 0, 0, 0, 0};
  d.udh = std::move(*u);
  d.user_data.assign(payload.begin(), payload.end());
  return cs::encode(d);
}

Result<Submit> parse_submit(ByteView tpdu) {
  auto s = cs::parse_submit(tpdu);
  if (!s) return s.error();
  if (auto e = require_8bit(s->dcs, "SMS-SUBMIT"); !e) return e.error();
  auto raw = cs::encode_udh(s->udh);
  if (!raw) return raw.error();
  return Submit{from_address(s->destination), s->pid, s->dcs, std::move(*raw), std::move(s->user_data)};
}

Result<Bytes> encode_submit(std::string_view to, ByteView udh, ByteView payload) {
  auto a = to_address(to);
  if (!a) return a.error();
  auto u = from_raw_udh(udh);
  if (!u) return u.error();
  cs::Submit s;
  s.destination = *a;
  s.udh = std::move(*u);
  s.user_data.assign(payload.begin(), payload.end());
  return cs::encode(s);
}

Result<Bytes> encode_sms_pp_download(std::string_view smsc, ByteView tpdu) {
  envelope::SmsPpDownload e;
  if (!smsc.empty()) {
    auto a = to_address(smsc);
    if (!a) return a.error();
    e.smsc = *a;
  }
  e.tpdu.assign(tpdu.begin(), tpdu.end());
  return envelope::encode(e);
}

Result<Bytes> parse_sms_pp_download(ByteView env) {
  auto e = envelope::parse_sms_pp_download(env);
  if (!e) return e.error();
  return std::move(e->tpdu);
}

Result<Bytes> encode_send_short_message(std::string_view address, ByteView tpdu) {
  auto a = to_address(address);
  if (!a) return a.error();
  envelope::SendShortMessage m;
  m.address = *a;
  m.tpdu.assign(tpdu.begin(), tpdu.end());
  return envelope::encode(m);
}

Result<SendShortMessage> parse_send_short_message(ByteView d0) {
  auto m = envelope::parse_send_short_message(d0);
  if (!m) return m.error();
  SendShortMessage out;
  if (m->address) out.address = from_address(*m->address);
  out.tpdu = std::move(m->tpdu);
  return out;
}

}  // namespace otac::applet::sms
