// The few SMS and SIM-toolkit encodings the card and its host need (3GPP TS 23.040
// SMS-DELIVER/SMS-SUBMIT, TS 24.008 BCD addresses, TS 31.111 ENVELOPE SMS-PP download and
// proactive SEND SHORT MESSAGE), as thin adapters over common/sms and common/envelope:
// phone numbers as "+digits" strings, 8-bit data only. A UDH is parsed and encoded by
// common/sms (otac::sms::parse_udh, encode_udh) itself.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/common/sms.hpp"

namespace otac::applet::sms {

/// TS 24.008 address as in TLV tag 06: TON/NPI byte then BCD digits (F-filled). A leading
/// '+' gives 0x91 (international), otherwise 0x81. Digits 0-9 only, 1..20 of them.
Result<Bytes> encode_address(std::string_view number);
/// The number back from the tag 06 form ('+' added for international).
Result<std::string> parse_address(ByteView v);

/// An SMS-DELIVER, decoded.
struct Deliver {
  std::string from;  ///< digits ('+' if international), or '@' and hex octets when alphanumeric
  std::uint8_t pid = 0;
  std::uint8_t dcs = 0;
  std::vector<otac::sms::UdhElement> udh;  ///< empty when TP-UDHI is clear (common/sms's element type)
  Bytes payload;        ///< user data after the UDH
};
/// Parses an SMS-DELIVER TPDU with 8-bit data (DCS with 8-bit alphabet); the whole input
/// must be the TPDU.
Result<Deliver> parse_deliver(ByteView tpdu);
/// Encodes an SMS-DELIVER with TP-PID 7F, TP-DCS F6 and the UDH (without UDHL), if any; a
/// sender that is not a number (up to 11 characters) is encoded as an alphanumeric address.
Result<Bytes> encode_deliver(std::string_view from, ByteView udh, ByteView payload);

/// An SMS-SUBMIT, decoded.
struct Submit {
  std::string to;
  std::uint8_t pid = 0;
  std::uint8_t dcs = 0;
  Bytes udh;  ///< without UDHL, empty when TP-UDHI is clear
  Bytes payload;
};
/// Parses an SMS-SUBMIT TPDU with 8-bit data and no validity period or one of any format.
Result<Submit> parse_submit(ByteView tpdu);
/// Encodes an SMS-SUBMIT (TP-MR 00, no validity period) with TP-PID 7F, TP-DCS F6.
Result<Bytes> encode_submit(std::string_view to, ByteView udh, ByteView payload);

/// ENVELOPE (SMS-PP DOWNLOAD) data: D1 { 82 02 83 81, 06 smsc, 8B tpdu }; 06 left out when
/// smsc is empty (it is optional in TS 31.111).
Result<Bytes> encode_sms_pp_download(std::string_view smsc, ByteView tpdu);
/// The TPDU of an SMS-PP DOWNLOAD ENVELOPE (device identities must be network -> UICC).
Result<Bytes> parse_sms_pp_download(ByteView envelope);

/// Proactive SEND SHORT MESSAGE: D0 { 81 03 01 13 00, 82 02 81 83, 06 addr, 8B tpdu }.
Result<Bytes> encode_send_short_message(std::string_view address, ByteView tpdu);
/// Address (tag 06, may be absent) and TPDU of a SEND SHORT MESSAGE proactive command.
struct SendShortMessage {
  std::optional<std::string> address;
  Bytes tpdu;
};
Result<SendShortMessage> parse_send_short_message(ByteView d0);

}  // namespace otac::applet::sms
