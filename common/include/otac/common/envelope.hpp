// 3GPP TS 31.111 / ETSI TS 102 223: the ENVELOPE (SMS-PP DOWNLOAD) the ME sends the UICC for
// an SMS with TP-PID 7F, the UICC's answer to it, and the proactive command SEND SHORT
// MESSAGE the UICC hands the ME on FETCH. Inside the BER-TLV templates D1/D0 are
// COMPREHENSION-TLVs (TS 102 220 7.1.1): tags are accepted with or without the
// comprehension-required bit (0x80); encoders set it as TS 31.111 examples do.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/common/sms.hpp"

namespace otac::envelope {

inline constexpr std::uint8_t tag_proactive_command = 0xD0;  ///< BER-TLV proactive command template
inline constexpr std::uint8_t tag_sms_pp_download = 0xD1;    ///< BER-TLV SMS-PP download template

/// COMPREHENSION-TLV tags, without the CR bit (TS 102 223 9.3, TS 31.111 8.x).
inline constexpr std::uint8_t ctag_command_details = 0x01;
inline constexpr std::uint8_t ctag_device_identities = 0x02;
inline constexpr std::uint8_t ctag_alpha_identifier = 0x05;
inline constexpr std::uint8_t ctag_address = 0x06;
inline constexpr std::uint8_t ctag_sms_tpdu = 0x0B;

/// Device identities (TS 102 223 8.7).
inline constexpr std::uint8_t device_uicc = 0x81;
inline constexpr std::uint8_t device_terminal = 0x82;
inline constexpr std::uint8_t device_network = 0x83;

/// Type of command SEND SHORT MESSAGE (TS 102 223 9.4).
inline constexpr std::uint8_t command_send_short_message = 0x13;

/// ENVELOPE (SMS-PP DOWNLOAD), TS 31.111 7.1.1.2:
/// D1 { 82 02 83 81, [86 <SMSC address, BCD>], 8B <SMS-DELIVER TPDU> }.
struct SmsPpDownload {
  std::optional<sms::Address> smsc;  ///< RP-originator address of the SMSC
  Bytes tpdu;                         ///< the SMS-DELIVER TPDU as received (not parsed here)
  bool operator==(const SmsPpDownload&) const = default;
};

/// Encodes the ENVELOPE data field (D1 template). Errors: bad_length when it would not fit
/// a short APDU (255 octets), errors of sms::encode_address_bcd.
Result<Bytes> encode(const SmsPpDownload& e);

/// Parses a D1 template (the whole input). Errors: truncated, trailing_data, bad_length
/// (a length field that is non-minimal or disagrees with the data), bad_value (wrong outer
/// tag, device identities other than network to UICC, a repeated object, missing device
/// identities or TPDU), unsupported (an unknown object with the comprehension-required bit).
Result<SmsPpDownload> parse_sms_pp_download(ByteView data);

/// Proactive command SEND SHORT MESSAGE, TS 102 223 6.6.9 / TS 31.111 6.6.9:
/// D0 { 81 03 nn 13 qq, 82 02 81 83, [85 alpha], [86 address], 8B <SMS-SUBMIT TPDU> }.
struct SendShortMessage {
  std::uint8_t command_number = 1;  ///< 01..FE
  std::uint8_t qualifier = 0;       ///< bit 1: packing by the ME required
  std::optional<Bytes> alpha_identifier;  ///< shown to the user by the ME (raw, as coded)
  std::optional<sms::Address> address;    ///< the SMSC to use; absent = the ME's default
  Bytes tpdu;                             ///< the SMS-SUBMIT TPDU
  bool operator==(const SendShortMessage&) const = default;
};

/// Encodes the D0 template. Errors as encode(SmsPpDownload).
Result<Bytes> encode(const SendShortMessage& c);

/// Parses a D0 template that holds SEND SHORT MESSAGE. Errors as parse_sms_pp_download,
/// plus bad_value for another type of command or device identities other than UICC to
/// network, and bad_length for command details not 3 octets.
Result<SendShortMessage> parse_send_short_message(ByteView data);

/// What the ME does with the UICC's answer to SMS-PP DOWNLOAD (TS 31.111 7.1.1.2).
enum class DownloadOutcome {
  ack,             ///< 9000 without data: RP-ACK
  ack_with_data,   ///< 9000/61xx/9Fxx with data: RP-ACK carrying the data (a PoR)
  error_with_data, ///< 62xx/63xx: RP-ERROR carrying the data
  busy,            ///< 9300: UICC busy, the ME retries or answers RP-ERROR
  error,           ///< anything else: RP-ERROR without data
};

/// Classifies the UICC's status word (and whether data came with it or is available).
DownloadOutcome classify_download_response(std::uint16_t sw, bool has_data) noexcept;

/// A multi-line human-readable description of a D0 or D1 template (for otac-tool).
/// Input that does not parse is described up to the error, followed by the error message.
std::string describe(ByteView data);

}  // namespace otac::envelope
