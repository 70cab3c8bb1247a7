#include "otac/common/envelope.hpp"

#include <vector>

#include "otac/common/cursor.hpp"
#include "otac/common/tlv.hpp"

namespace otac::envelope {
namespace {

constexpr std::size_t kMaxData = 255;  // ENVELOPE and FETCH data fit a short APDU

std::string hexbyte(std::uint8_t b) { return to_hex(ByteView(&b, 1)); }

// One COMPREHENSION-TLV (TS 102 220 7.1.1). tag is without the CR bit; three-byte tags
// (7F xx xx) keep their 15-bit value with 0x10000 added so they never equal a one-byte tag.
struct Object {
  std::uint32_t tag = 0;
  bool cr = false;
  ByteView value;
};

// Reads a BER-style length as TS 102 220 7.1.2 allows: 00-7F, or 81 80-FF. Larger forms
// cannot occur inside a 255-octet template.
std::size_t read_length(Cursor& c, const char* what) {
  const std::uint8_t b = c.u8("length");
  if (!c.ok()) return 0;
  if (b <= 0x7F) return b;
  if (b == 0x81) {
    const std::uint8_t n = c.u8("length");
    if (c.ok() && n < 0x80)
      c.fail(Errc::bad_length, std::string(what) + ": length 81 " + hexbyte(n) + " is not minimal (write " + hexbyte(n) + ")");
    return n;
  }
  c.fail(Errc::bad_length, std::string(what) + ": length octet " + hexbyte(b) + " is not allowed (00-7F or 81 80-FF)");
  return 0;
}

Result<std::vector<Object>> parse_objects(ByteView data, const char* what) {
  Cursor c(data, what);
  std::vector<Object> out;
  while (c.ok() && !c.empty()) {
    Object o;
    const std::uint8_t t = c.u8("tag");
    if (t == 0x00 || t == 0x80 || t == 0xFF) {
      c.fail(Errc::bad_value, std::string(what) + ": COMPREHENSION-TLV tag " + hexbyte(t) + " is reserved");
      break;
    }
    if (t == 0x7F) {
      const std::uint16_t t3 = c.u16("three-byte tag");
      o.cr = (t3 & 0x8000) != 0;
      o.tag = 0x10000u | (t3 & 0x7FFFu);
    } else {
      o.cr = (t & 0x80) != 0;
      o.tag = t & 0x7Fu;
    }
    const std::size_t len = read_length(c, what);
    o.value = c.take(len, "value");
    if (c.ok()) out.push_back(o);
  }
  if (auto f = c.finish(); !f) return f.error();
  return out;
}

// Reads the outer BER-TLV template (D0/D1) and returns its value.
Result<ByteView> open_template(ByteView data, std::uint8_t tag, const char* what) {
  Cursor c(data, what);
  const std::uint8_t t = c.u8("tag");
  if (c.ok() && t != tag)
    return make_error(Errc::bad_value, std::string(what) + ": tag " + hexbyte(t) + ", expected " + hexbyte(tag));
  const std::size_t len = read_length(c, what);
  const auto value = c.take(len, "template value");
  if (auto f = c.finish(); !f) return f.error();
  return value;
}

// Picks out the objects a template may hold; unknown objects are skipped unless they carry
// the CR bit (TS 102 223 6.10: "comprehension required" objects that are not understood
// make the command fail).
struct Found {
  std::vector<std::optional<ByteView>> values;
};

Result<Found> pick(const std::vector<Object>& objs, const std::vector<std::uint8_t>& known, const char* what) {
  Found f;
  f.values.resize(known.size());
  for (const auto& o : objs) {
    bool matched = false;
    for (std::size_t i = 0; i < known.size(); ++i) {
      if (o.tag != known[i]) continue;
      matched = true;
      if (f.values[i])
        return make_error(Errc::bad_value, std::string(what) + ": object " + hexbyte(known[i]) + " appears twice");
      f.values[i] = o.value;
    }
    if (!matched && o.cr)
      return make_error(Errc::unsupported, std::string(what) + ": unknown comprehension-required object " +
                                               (o.tag > 0xFF ? "7F" + to_hex(be_bytes(o.tag & 0xFFFF, 2))
                                                             : hexbyte(static_cast<std::uint8_t>(o.tag | 0x80))));
  }
  return f;
}

Result<Bytes> finish_template(std::uint8_t tag, const Bytes& body, const char* what) {
  Bytes out = tlv::encode(tag, body);
  if (out.size() > kMaxData)
    return make_error(Errc::bad_length, std::string(what) + ": " + std::to_string(out.size()) +
                                            " octets do not fit a short APDU (255)");
  return out;
}

const char* device_name(std::uint8_t d) {
  switch (d) {
    case device_uicc: return "UICC";
    case device_terminal: return "terminal";
    case device_network: return "network";
    default: return (d >= 0x21 && d <= 0x27) ? "channel" : (d >= 0x10 && d <= 0x17) ? "card reader" : "keypad/display/earpiece/other";
  }
}

Result<void> check_devices(std::optional<ByteView> v, std::uint8_t src, std::uint8_t dst, const char* what) {
  if (!v) return make_error(Errc::bad_value, std::string(what) + ": device identities (82) missing");
  if (v->size() != 2)
    return make_error(Errc::bad_length, std::string(what) + ": device identities of " + std::to_string(v->size()) +
                                            " octets, expected 2");
  if ((*v)[0] != src || (*v)[1] != dst)
    return make_error(Errc::bad_value, std::string(what) + ": device identities " + to_hex(*v) + ", expected " +
                                           hexbyte(src) + hexbyte(dst) + " (" + device_name(src) + " to " +
                                           device_name(dst) + ")");
  return {};
}

}  // namespace

Result<Bytes> encode(const SmsPpDownload& e) {
  Bytes body;
  tlv::append(body, 0x80 | ctag_device_identities, Bytes{device_network, device_uicc});
  if (e.smsc) {
    auto a = sms::encode_address_bcd(*e.smsc);
    if (!a) return a.error();
    tlv::append(body, 0x80 | ctag_address, *a);
  }
  if (e.tpdu.size() > kMaxData)
    return make_error(Errc::bad_length, "SMS-PP DOWNLOAD: TPDU of " + std::to_string(e.tpdu.size()) + " octets is too long");
  tlv::append(body, 0x80 | ctag_sms_tpdu, e.tpdu);
  return finish_template(tag_sms_pp_download, body, "SMS-PP DOWNLOAD");
}

Result<SmsPpDownload> parse_sms_pp_download(ByteView data) {
  const char* what = "SMS-PP DOWNLOAD";
  auto value = open_template(data, tag_sms_pp_download, what);
  if (!value) return value.error();
  auto objs = parse_objects(*value, what);
  if (!objs) return objs.error();
  auto f = pick(*objs, {ctag_device_identities, ctag_address, ctag_sms_tpdu}, what);
  if (!f) return f.error();
  if (auto d = check_devices(f->values[0], device_network, device_uicc, what); !d) return d.error();
  SmsPpDownload out;
  if (f->values[1]) {
    auto a = sms::parse_address_bcd(*f->values[1]);
    if (!a) return make_error(a.error().code, std::string(what) + " address (86): " + a.error().message);
    out.smsc = std::move(*a);
  }
  if (!f->values[2]) return make_error(Errc::bad_value, std::string(what) + ": SMS TPDU (8B) missing");
  out.tpdu.assign(f->values[2]->begin(), f->values[2]->end());
  return out;
}

Result<Bytes> encode(const SendShortMessage& c) {
  Bytes body;
  tlv::append(body, 0x80 | ctag_command_details, Bytes{c.command_number, command_send_short_message, c.qualifier});
  tlv::append(body, 0x80 | ctag_device_identities, Bytes{device_uicc, device_network});
  if (c.alpha_identifier) {
    if (c.alpha_identifier->size() > kMaxData)
      return make_error(Errc::bad_length, "SEND SHORT MESSAGE: alpha identifier too long");
    tlv::append(body, 0x80 | ctag_alpha_identifier, *c.alpha_identifier);
  }
  if (c.address) {
    auto a = sms::encode_address_bcd(*c.address);
    if (!a) return a.error();
    tlv::append(body, 0x80 | ctag_address, *a);
  }
  if (c.tpdu.size() > kMaxData)
    return make_error(Errc::bad_length, "SEND SHORT MESSAGE: TPDU of " + std::to_string(c.tpdu.size()) + " octets is too long");
  tlv::append(body, 0x80 | ctag_sms_tpdu, c.tpdu);
  return finish_template(tag_proactive_command, body, "SEND SHORT MESSAGE");
}

Result<SendShortMessage> parse_send_short_message(ByteView data) {
  const char* what = "SEND SHORT MESSAGE";
  auto value = open_template(data, tag_proactive_command, what);
  if (!value) return value.error();
  auto objs = parse_objects(*value, what);
  if (!objs) return objs.error();
  auto f = pick(*objs, {ctag_command_details, ctag_device_identities, ctag_alpha_identifier, ctag_address, ctag_sms_tpdu},
                what);
  if (!f) return f.error();
  SendShortMessage out;
  const auto& cd = f->values[0];
  if (!cd) return make_error(Errc::bad_value, std::string(what) + ": command details (81) missing");
  if (cd->size() != 3)
    return make_error(Errc::bad_length, std::string(what) + ": command details of " + std::to_string(cd->size()) +
                                            " octets, expected 3");
  if ((*cd)[1] != command_send_short_message)
    return make_error(Errc::bad_value, std::string(what) + ": type of command " + hexbyte((*cd)[1]) + ", expected 13");
  out.command_number = (*cd)[0];
  out.qualifier = (*cd)[2];
  if (auto d = check_devices(f->values[1], device_uicc, device_network, what); !d) return d.error();
  if (f->values[2]) out.alpha_identifier = Bytes(f->values[2]->begin(), f->values[2]->end());
  if (f->values[3]) {
    auto a = sms::parse_address_bcd(*f->values[3]);
    if (!a) return make_error(a.error().code, std::string(what) + " address (86): " + a.error().message);
    out.address = std::move(*a);
  }
  if (!f->values[4]) return make_error(Errc::bad_value, std::string(what) + ": SMS TPDU (8B) missing");
  out.tpdu.assign(f->values[4]->begin(), f->values[4]->end());
  return out;
}

DownloadOutcome classify_download_response(std::uint16_t sw, bool has_data) noexcept {
  const auto sw1 = static_cast<std::uint8_t>(sw >> 8);
  if (sw == 0x9000) return has_data ? DownloadOutcome::ack_with_data : DownloadOutcome::ack;
  if (sw1 == 0x61 || sw1 == 0x9F) return DownloadOutcome::ack_with_data;
  if (sw1 == 0x62 || sw1 == 0x63) return DownloadOutcome::error_with_data;
  if (sw == 0x9300) return DownloadOutcome::busy;
  return DownloadOutcome::error;
}

std::string describe(ByteView data) {
  std::string out;
  if (data.empty()) return "empty input\n";
  const std::uint8_t tag = data[0];
  const char* what = tag == tag_sms_pp_download ? "SMS-PP DOWNLOAD" : tag == tag_proactive_command ? "proactive command"
                                                                                                  : "template";
  out += std::string(what) + " (" + hexbyte(tag) + ")\n";
  auto value = open_template(data, tag, what);
  if (!value) return out + "  error: " + value.error().message + "\n";
  auto objs = parse_objects(*value, what);
  if (!objs) return out + "  error: " + objs.error().message + "\n";
  for (const auto& o : *objs) {
    const std::string tagtxt = o.tag > 0xFF ? "7F" + to_hex(be_bytes(o.tag & 0xFFFF, 2))
                                            : hexbyte(static_cast<std::uint8_t>(o.tag | (o.cr ? 0x80 : 0)));
    out += "  " + tagtxt + " ";
    switch (o.tag) {
      case ctag_command_details:
        out += "command details: " + to_hex(o.value);
        if (o.value.size() == 3)
          out += " (number " + std::to_string(o.value[0]) + ", type " + hexbyte(o.value[1]) +
                 (o.value[1] == command_send_short_message ? " SEND SHORT MESSAGE" : "") + ", qualifier " +
                 hexbyte(o.value[2]) + ")";
        break;
      case ctag_device_identities:
        out += "device identities: " + to_hex(o.value);
        if (o.value.size() == 2)
          out += std::string(" (") + device_name(o.value[0]) + " -> " + device_name(o.value[1]) + ")";
        break;
      case ctag_alpha_identifier: out += "alpha identifier: " + to_hex(o.value); break;
      case ctag_address: {
        out += "address: " + to_hex(o.value);
        auto a = sms::parse_address_bcd(o.value);
        if (a) out += " (TON/NPI " + hexbyte(a->toa) + ", digits " + a->digits + ")";
        else out += " (" + a.error().message + ")";
        break;
      }
      case ctag_sms_tpdu: out += "SMS TPDU: " + to_hex(o.value); break;
      default: out += "object [" + std::to_string(o.value.size()) + "]: " + to_hex(o.value); break;
    }
    out += "\n";
  }
  return out;
}

}  // namespace otac::envelope
