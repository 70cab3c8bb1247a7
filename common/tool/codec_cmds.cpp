// Codec subcommands: tlv, apdu, sms-decode, sms-encode, envelope-decode, envelope-encode.
#include <cstdio>
#include <ostream>
#include <string>

#include "otac/common/apdu.hpp"
#include "otac/common/envelope.hpp"
#include "otac/common/sms.hpp"
#include "otac/common/sw.hpp"
#include "otac/common/tlv.hpp"
#include "tool.hpp"

namespace otac::tool {
namespace {

const char* kTlvHelp =
    "usage: otac-tool tlv HEX\n\n"
    "Pretty-prints BER-TLV data (EMV rules: tags of 1-3 bytes, minimal definite lengths,\n"
    "constructed objects indented). Exit status 1 when the data does not parse; what parsed\n"
    "is printed before the error.\n";

const char* kApduHelp =
    "usage: otac-tool apdu HEX\n"
    "       otac-tool apdu --response HEX\n\n"
    "Describes an ISO/IEC 7816-4 command APDU (case 1-4, short or extended, Lc, data, Ne)\n"
    "or, with --response, a response APDU (data and the meaning of SW1 SW2, including\n"
    "61xx, 6Cxx and 63Cx).\n";

const char* kSmsDecodeHelp =
    "usage: otac-tool sms-decode [--deliver|--submit] TPDU\n\n"
    "Decodes a 3GPP TS 23.040 SMS-DELIVER or SMS-SUBMIT TPDU (chosen by TP-MTI unless forced)\n"
    "and prints every field: flags, address, TP-PID, TP-DCS, time stamp or validity period,\n"
    "the user-data header element by element, and the user data (as text when the DCS says\n"
    "7-bit or UCS2). Says when the user data carries a TS 102 225 command packet (UDH IEI 70)\n"
    "or response packet (IEI 71) and how to open it with ota-open.\n";

const char* kSmsEncodeHelp =
    "usage: otac-tool sms-encode deliver --from ADDR [--scts HEX14] [--more-messages] [options]\n"
    "       otac-tool sms-encode submit --to ADDR [--mr HH] [--vp HH] [options]\n"
    "options: [--pid HH] [--dcs HH] [--udh HEX] (--data HEX | --text TEXT) [--concat-ref R]\n\n"
    "Encodes a TS 23.040 TPDU and prints it in hex, one TPDU per line.\n\n"
    "  ADDR            +4912345 (international, E.164), 12345 (unknown TON, E.164), or\n"
    "                  TOA:DIGITS with the type-of-address octet in hex, e.g. 91:4912345\n"
    "                  or d0:OTAC (alphanumeric)\n"
    "  --pid/--dcs     TP-PID and TP-DCS in hex (default 7f, f6: SIM data download, 8-bit)\n"
    "  --udh           the user-data header without its length octet, e.g. 7000\n"
    "  --data          user data in hex (octets; septets one per byte when the DCS is 7-bit)\n"
    "  --text          user data as text in the GSM 7-bit default alphabet (DCS must be 7-bit)\n"
    "  --scts          service-centre time stamp as on the wire (default 00101000000000)\n"
    "  --more-messages clear TP-MMS (more messages are waiting)\n"
    "  --mr/--vp       TP-MR (default 00) and a relative TP-VP\n"
    "  --concat-ref R  split --data into concatenated parts (IEI 00, reference R in hex); a\n"
    "                  --udh of 7000 or 7100 goes into the first part only (protocol.md 7)\n";

const char* kEnvDecodeHelp =
    "usage: otac-tool envelope-decode HEX\n\n"
    "Decodes an ENVELOPE SMS-PP DOWNLOAD (D1) or a proactive SEND SHORT MESSAGE (D0), object\n"
    "by object, then the SMS TPDU inside it as sms-decode would.\n";

const char* kEnvEncodeHelp =
    "usage: otac-tool envelope-encode --tpdu HEX [--smsc ADDR]\n\n"
    "Builds the data field of an ENVELOPE SMS-PP DOWNLOAD (D1: device identities network to\n"
    "UICC, optional SMSC address, SMS TPDU) and prints it in hex. ADDR as for sms-encode.\n";

std::string hx(std::uint8_t b) { return to_hex(ByteView(&b, 1)); }

sms::Address parse_address(const std::string& text, const std::string& what) {
  if (text.empty()) throw UsageError{what + ": empty address"};
  if (text[0] == '+') return {text.substr(1), 0x91};
  const auto colon = text.find(':');
  if (colon == std::string::npos) return {text, 0x81};
  const Bytes toa = parse_hex(text.substr(0, colon), what + " type of address");
  if (toa.size() != 1) throw UsageError{what + ": the type of address is one byte, e.g. 91"};
  return {text.substr(colon + 1), toa[0]};
}

std::string address_text(const sms::Address& a) {
  std::string ton;
  switch ((a.toa >> 4) & 0x07) {
    case 0: ton = "unknown"; break;
    case 1: ton = "international"; break;
    case 2: ton = "national"; break;
    case 3: ton = "network specific"; break;
    case 4: ton = "subscriber"; break;
    case 5: ton = "alphanumeric"; break;
    case 6: ton = "abbreviated"; break;
    default: ton = "reserved"; break;
  }
  return (a.alphanumeric() ? "\"" + a.digits + "\"" : (a.digits.empty() ? "(empty)" : a.digits)) + " (TOA " +
         hx(a.toa) + ", " + ton + ")";
}

std::string utf8_from_ucs2(ByteView b) {
  std::string out;
  for (std::size_t i = 0; i + 1 < b.size(); i += 2) {
    const unsigned c = (static_cast<unsigned>(b[i]) << 8) | b[i + 1];
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xE0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

// Printable ASCII plus CR/LF/TAB, which text payloads (vCards, messages) carry.
bool printable(ByteView b) {
  for (auto c : b)
    if ((c < 0x20 || c > 0x7E) && c != '\r' && c != '\n' && c != '\t') return false;
  return !b.empty();
}

std::string escaped(ByteView b) {
  std::string out;
  for (auto c : b) {
    if (c == '\r') out += "\\r";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else out += static_cast<char>(c);
  }
  return out;
}

std::string iei_name(std::uint8_t iei) {
  switch (iei) {
    case sms::iei_concat_8bit: return "concatenated SM, 8-bit reference";
    case sms::iei_concat_16bit: return "concatenated SM, 16-bit reference";
    case 0x04: return "application port, 8-bit";
    case 0x05: return "application port, 16-bit";
    case sms::iei_command_packet: return "command packet identifier (TS 31.115)";
    case sms::iei_response_packet: return "response packet identifier (TS 31.115)";
    default: return "element";
  }
}

void print_udh(std::ostream& out, const std::vector<sms::UdhElement>& udh, const std::string& ind) {
  for (const auto& e : udh) {
    out << ind << "UDH   IEI " << hx(e.iei) << " [" << e.data.size() << "] " << to_hex(e.data) << "  "
        << iei_name(e.iei);
    if (e.iei == sms::iei_concat_8bit && e.data.size() == 3)
      out << ": reference " << int(e.data[0]) << ", part " << int(e.data[2]) << " of " << int(e.data[1]);
    if (e.iei == sms::iei_concat_16bit && e.data.size() == 4)
      out << ": reference " << ((e.data[0] << 8) | e.data[1]) << ", part " << int(e.data[3]) << " of "
          << int(e.data[2]);
    out << "\n";
  }
}

void print_user_data(std::ostream& out, std::uint8_t pid, std::uint8_t dcs, const std::vector<sms::UdhElement>& udh, const Bytes& ud,
                     const std::string& ind) {
  auto alpha = sms::alphabet(dcs);
  print_udh(out, udh, ind);
  if (alpha && *alpha == sms::Alphabet::gsm7) {
    out << ind << "data  " << ud.size() << " septets: \"" << sms::gsm7_to_utf8(ud) << "\"\n";
  } else if (alpha && *alpha == sms::Alphabet::ucs2) {
    out << ind << "data  " << ud.size() << " octets UCS2: \"" << utf8_from_ucs2(ud) << "\"\n";
  } else {
    out << ind << "data  " << ud.size() << " octets: " << to_hex(ud) << "\n";
    if (printable(ud)) out << ind << "text  \"" << escaped(ud) << "\"\n";
  }
  const auto* cmd = sms::find(udh, sms::iei_command_packet);
  const auto* rsp = sms::find(udh, sms::iei_response_packet);
  const auto* cat = sms::find(udh, sms::iei_concat_8bit);
  if (!cat) cat = sms::find(udh, sms::iei_concat_16bit);
  if (cmd || rsp) {
    out << ind << "OTA   the user data " << (cat ? "starts" : "is") << " a TS 102 225 "
        << (cmd ? "command packet (IEI 70)" : "response packet (IEI 71)");
    if (cat) out << "; join all parts before opening it";
    else if (cmd) out << "; open it with: otac-tool ota-open [--kic-key K --kid-key K] " << to_hex(ud);
    else out << "; open it with: otac-tool ota-open --response --spi S --kic I --kid I ... " << to_hex(ud);
    out << "\n";
  } else if (cat && pid == sms::pid_sim_data_download && cat->data.back() > 1) {
    out << ind << "OTA   a later part of a concatenated message (the packet IEI is in part 1)\n";
  }
}

void print_deliver(std::ostream& out, const sms::Deliver& d, const std::string& ind) {
  out << ind << "SMS-DELIVER\n"
      << ind << "flags MMS=" << (d.more_messages ? "0 (more messages waiting)" : "1 (no more messages)")
      << " LP=" << d.loop_prevention << " SRI=" << d.status_report_indication << " RP=" << d.reply_path
      << " UDHI=" << !d.udh.empty() << "\n"
      << ind << "OA    " << address_text(d.originator) << "\n"
      << ind << "PID   " << hx(d.pid) << (d.pid == sms::pid_sim_data_download ? " (SIM data download)" : "") << "\n"
      << ind << "DCS   " << hx(d.dcs) << "\n";
  const auto& t = d.scts;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%02u-%02u-%02u %02u:%02u:%02u (yy-mm-dd), UTC%+d:%02d", t.year, t.month, t.day, t.hour,
                t.minute, t.second, t.tz_quarters / 4, (t.tz_quarters < 0 ? -t.tz_quarters : t.tz_quarters) % 4 * 15);
  out << ind << "SCTS  " << buf << "\n";
  print_user_data(out, d.pid, d.dcs, d.udh, d.user_data, ind);
}

void print_submit(std::ostream& out, const sms::Submit& s, const std::string& ind) {
  static const char* vpf[] = {"none", "enhanced", "relative", "absolute"};
  out << ind << "SMS-SUBMIT\n"
      << ind << "flags RD=" << s.reject_duplicates << " SRR=" << s.status_report_request << " RP=" << s.reply_path
      << " UDHI=" << !s.udh.empty() << "\n"
      << ind << "MR    " << hx(s.mr) << "\n"
      << ind << "DA    " << address_text(s.destination) << "\n"
      << ind << "PID   " << hx(s.pid) << (s.pid == sms::pid_sim_data_download ? " (SIM data download)" : "") << "\n"
      << ind << "DCS   " << hx(s.dcs) << "\n"
      << ind << "VP    " << vpf[static_cast<int>(s.vp.format)]
      << (s.vp.value.empty() ? "" : " " + to_hex(s.vp.value)) << "\n";
  print_user_data(out, s.pid, s.dcs, s.udh, s.user_data, ind);
}

// Decodes a TPDU as DELIVER or SUBMIT (by TP-MTI unless forced); throws InputError.
void decode_tpdu(std::ostream& out, ByteView tpdu, int force_mti, const std::string& ind) {
  if (tpdu.empty()) throw InputError{"empty TPDU"};
  const int mti = force_mti >= 0 ? force_mti : sms::mti(tpdu[0]);
  if (mti == 0) {
    auto d = sms::parse_deliver(tpdu);
    if (!d) throw InputError{d.error().message};
    print_deliver(out, *d, ind);
  } else if (mti == 1) {
    auto s = sms::parse_submit(tpdu);
    if (!s) throw InputError{s.error().message};
    print_submit(out, *s, ind);
  } else {
    throw InputError{"TP-MTI " + std::to_string(mti) + " (STATUS-REPORT/COMMAND) is not supported; only DELIVER and SUBMIT"};
  }
}

int run_tlv(const Args& a, std::ostream& out) {
  const Bytes data = a.hex_positional("TLV data");
  out << tlv::dump(data);
  auto p = tlv::parse(data);
  return p ? exit_ok : exit_bad_input;
}

int run_apdu(const Args& a, std::ostream& out) {
  const Bytes raw = a.hex_positional("APDU");
  if (a.flag("response")) {
    auto r = apdu::parse_response(raw);
    if (!r) throw InputError{r.error().message};
    out << "response APDU, " << r->data.size() << " data bytes\n";
    if (!r->data.empty()) out << "  data " << to_hex(r->data) << "\n";
    out << "  SW   " << sw::describe(r->sw) << "\n";
    return exit_ok;
  }
  auto c = apdu::parse_command(raw);
  if (!c) throw InputError{c.error().message};
  out << "command APDU: " << apdu::describe(*c) << "\n  CLA " << hx(c->cla) << "  INS " << hx(c->ins) << "  P1 "
      << hx(c->p1) << "  P2 " << hx(c->p2) << "\n";
  if (!c->data.empty()) out << "  Nc   " << c->data.size() << "\n  data " << to_hex(c->data) << "\n";
  if (c->ne) out << "  Ne   " << *c->ne << "\n";
  return exit_ok;
}

int run_sms_decode(const Args& a, std::ostream& out) {
  if (a.flag("deliver") && a.flag("submit")) throw UsageError{"--deliver and --submit exclude each other"};
  const Bytes tpdu = a.hex_positional("TPDU");
  decode_tpdu(out, tpdu, a.flag("deliver") ? 0 : a.flag("submit") ? 1 : -1, "");
  return exit_ok;
}

int run_sms_encode(const Args& a, std::ostream& out) {
  if (a.positional().size() != 1 || (a.positional()[0] != "deliver" && a.positional()[0] != "submit"))
    throw UsageError{"say what to encode: deliver or submit"};
  const bool deliver = a.positional()[0] == "deliver";
  const std::uint8_t pid = a.option("pid") ? a.byte_option("pid") : sms::pid_sim_data_download;
  const std::uint8_t dcs = a.option("dcs") ? a.byte_option("dcs") : sms::dcs_8bit_class2;
  std::vector<sms::UdhElement> udh;
  if (auto u = a.hex_option_opt("udh")) {
    auto p = sms::parse_udh(*u);
    if (!p) throw UsageError{"--udh: " + p.error().message};
    udh = std::move(*p);
  }
  Bytes data;
  if (a.option("data") && a.option("text")) throw UsageError{"give --data or --text, not both"};
  if (auto t = a.option("text")) {
    auto alpha = sms::alphabet(dcs);
    if (!alpha || *alpha != sms::Alphabet::gsm7) throw UsageError{"--text needs a 7-bit --dcs (e.g. 00)"};
    auto s = sms::utf8_to_gsm7(*t);
    if (!s) throw UsageError{"--text: " + s.error().message};
    data = std::move(*s);
  } else {
    data = a.hex_option("data");
  }

  std::vector<sms::Part> parts;
  if (auto ref = a.option("concat-ref")) {
    const Bytes r = parse_hex(*ref, "--concat-ref");
    if (r.size() != 1) throw UsageError{"--concat-ref is one byte in hex, e.g. 2a"};
    std::optional<std::uint8_t> packet;
    if (!udh.empty()) {
      if (udh.size() != 1 || !udh[0].data.empty() ||
          (udh[0].iei != sms::iei_command_packet && udh[0].iei != sms::iei_response_packet))
        throw UsageError{"with --concat-ref, --udh may only be 7000 or 7100 (the packet identifier)"};
      packet = udh[0].iei;
    }
    auto split = sms::split_concatenated(data, packet, r[0]);
    if (!split) throw InputError{split.error().message};
    parts = std::move(*split);
  } else {
    parts.push_back({udh, data});
  }

  for (const auto& part : parts) {
    Result<Bytes> tpdu = Bytes{};
    if (deliver) {
      if (a.option("to") || a.option("mr") || a.option("vp")) throw UsageError{"--to/--mr/--vp belong to submit"};
      sms::Deliver d;
      auto from = a.option("from");
      if (!from) throw UsageError{"deliver needs --from ADDR"};
      d.originator = parse_address(*from, "--from");
      d.more_messages = a.flag("more-messages");
      d.pid = pid;
      d.dcs = dcs;
      if (a.option("scts")) {
        auto t = sms::parse_timestamp(a.hex_option("scts", 7));
        if (!t) throw UsageError{"--scts: " + t.error().message};
        d.scts = *t;
      }
      d.udh = part.udh;
      d.user_data = part.data;
      tpdu = sms::encode(d);
    } else {
      if (a.option("from") || a.option("scts") || a.flag("more-messages"))
        throw UsageError{"--from/--scts/--more-messages belong to deliver"};
      sms::Submit s;
      auto to = a.option("to");
      if (!to) throw UsageError{"submit needs --to ADDR"};
      s.destination = parse_address(*to, "--to");
      s.mr = a.option("mr") ? a.byte_option("mr") : 0;
      if (a.option("vp")) s.vp = {sms::VpFormat::relative, {a.byte_option("vp")}};
      s.pid = pid;
      s.dcs = dcs;
      s.udh = part.udh;
      s.user_data = part.data;
      tpdu = sms::encode(s);
    }
    if (!tpdu) throw InputError{tpdu.error().message};
    out << to_hex(*tpdu) << "\n";
  }
  return exit_ok;
}

int run_env_decode(const Args& a, std::ostream& out) {
  const Bytes data = a.hex_positional("ENVELOPE or proactive command");
  out << envelope::describe(data);
  if (!data.empty() && data[0] == envelope::tag_sms_pp_download) {
    auto e = envelope::parse_sms_pp_download(data);
    if (!e) throw InputError{e.error().message};
    decode_tpdu(out, e->tpdu, 0, "  ");
    return exit_ok;
  }
  auto c = envelope::parse_send_short_message(data);
  if (!c) throw InputError{c.error().message};
  // With packing requested the ME packs the data itself: the TPDU need not be a wire TPDU.
  if (c->qualifier & 0x01) {
    out << "  (packing by the ME requested: the TPDU is shown as given)\n";
    return exit_ok;
  }
  decode_tpdu(out, c->tpdu, 1, "  ");
  return exit_ok;
}

int run_env_encode(const Args& a, std::ostream& out) {
  envelope::SmsPpDownload e;
  e.tpdu = a.hex_option("tpdu");
  if (auto s = a.option("smsc")) e.smsc = parse_address(*s, "--smsc");
  auto enc = envelope::encode(e);
  if (!enc) throw InputError{enc.error().message};
  out << to_hex(*enc) << "\n";
  return exit_ok;
}

}  // namespace

std::vector<Command> codec_commands() {
  return {
      {"tlv", "pretty-print BER-TLV data", kTlvHelp, {}, {}, true, run_tlv},
      {"apdu", "describe a command or (--response) response APDU", kApduHelp, {}, {"response"}, true, run_apdu},
      {"sms-decode", "decode an SMS-DELIVER or SMS-SUBMIT TPDU", kSmsDecodeHelp, {}, {"deliver", "submit"}, true,
       run_sms_decode},
      {"sms-encode", "encode SMS-DELIVER/SUBMIT TPDUs (with concatenation)", kSmsEncodeHelp,
       {"from", "to", "pid", "dcs", "udh", "data", "text", "concat-ref", "scts", "mr", "vp"}, {"more-messages"}, true,
       run_sms_encode},
      {"envelope-decode", "decode an ENVELOPE (D1) or SEND SHORT MESSAGE (D0)", kEnvDecodeHelp, {}, {}, true,
       run_env_decode},
      {"envelope-encode", "build an ENVELOPE SMS-PP DOWNLOAD (D1)", kEnvEncodeHelp, {"tpdu", "smsc"}, {}, false,
       run_env_encode},
  };
}

}  // namespace otac::tool
