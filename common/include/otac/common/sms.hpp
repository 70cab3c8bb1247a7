// 3GPP TS 23.040 short-message TPDUs: SMS-DELIVER (MT) and SMS-SUBMIT (MO) with addresses,
// TP-PID, TP-DCS, TP-SCTS, TP-VP, a user-data header (UDH) and user data; the GSM 7-bit
// default alphabet; concatenation (IEI 00) with the TS 31.115 packet IEIs 70/71; and the
// TS 24.008 BCD address that ENVELOPE tag 06 carries. Readings chosen where the standards
// leave room are in docs/protocol.md section 7.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::sms {

/// User data (UDHL + UDH + data, in octets) is at most 140 octets (TS 23.040 9.2.3.24).
inline constexpr std::size_t max_user_data = 140;
/// Most digits an address holds (TS 23.040 9.1.2.5: at most 10 octets of semi-octets).
inline constexpr std::size_t max_address_digits = 20;

inline constexpr std::uint8_t iei_concat_8bit = 0x00;   ///< concatenated SM, 8-bit reference
inline constexpr std::uint8_t iei_concat_16bit = 0x08;  ///< concatenated SM, 16-bit reference
inline constexpr std::uint8_t iei_command_packet = 0x70;   ///< TS 31.115 command packet identifier
inline constexpr std::uint8_t iei_response_packet = 0x71;  ///< TS 31.115 response packet identifier

inline constexpr std::uint8_t pid_sim_data_download = 0x7F;  ///< TP-PID "(U)SIM data download"
inline constexpr std::uint8_t dcs_8bit_class2 = 0xF6;         ///< TP-DCS 8-bit data, class 2 (SIM specific)

/// An address: digits as text plus the type-of-address octet (1 TON NPI). Digits use
/// "0123456789*#abc" for the semi-octet values 0-E. When the TON is alphanumeric (toa bits
/// 7-5 = 101, e.g. 0xD0) digits holds the text instead (GSM 7-bit, TS 23.038 basic set).
struct Address {
  std::string digits;
  std::uint8_t toa = 0x91;  ///< 0x91: international, ISDN/E.164
  bool alphanumeric() const noexcept { return (toa & 0x70) == 0x50; }
  bool operator==(const Address&) const = default;
};

/// One information element of a user-data header.
struct UdhElement {
  std::uint8_t iei = 0;
  Bytes data;  ///< 0..137 octets
  bool operator==(const UdhElement&) const = default;
};

/// The character set TP-DCS selects for the user data (TS 23.038 clause 4).
enum class Alphabet { gsm7, eight_bit, ucs2 };

/// The alphabet of a TP-DCS value. Reserved codings count as GSM 7-bit, as TS 23.038
/// clause 4 tells a receiver; compressed text (bit 6 of groups 00xx/01xx) is unsupported.
Result<Alphabet> alphabet(std::uint8_t dcs);

/// TP-SCTS / absolute TP-VP: a local time and its offset from UTC in quarter hours.
struct Timestamp {
  std::uint8_t year = 0;    ///< 0..99
  std::uint8_t month = 1;   ///< 1..12
  std::uint8_t day = 1;     ///< 1..31
  std::uint8_t hour = 0;    ///< 0..23
  std::uint8_t minute = 0;  ///< 0..59
  std::uint8_t second = 0;  ///< 0..59
  int tz_quarters = 0;      ///< -79..79 quarter hours from UTC
  bool operator==(const Timestamp&) const = default;
};

/// Encodes a timestamp as 7 semi-octet-swapped octets (TS 23.040 9.2.3.11).
Bytes encode_timestamp(const Timestamp& t);
/// Parses 7 octets; a non-decimal semi-octet or a field out of range is bad_value.
Result<Timestamp> parse_timestamp(ByteView seven);

/// TP-VPF (bits 4-3 of an SMS-SUBMIT's first octet).
enum class VpFormat : std::uint8_t { none = 0, enhanced = 1, relative = 2, absolute = 3 };

/// TP-VP as carried: the format and its raw octets (relative: 1, enhanced/absolute: 7).
struct ValidityPeriod {
  VpFormat format = VpFormat::none;
  Bytes value;
  bool operator==(const ValidityPeriod&) const = default;
};

/// SMS-DELIVER (TS 23.040 9.2.2.1), network to mobile.
struct Deliver {
  bool more_messages = false;        ///< TP-MMS: the bit is 0 when more messages are waiting
  bool loop_prevention = false;      ///< TP-LP
  bool reply_path = false;           ///< TP-RP
  bool status_report_indication = false;  ///< TP-SRI
  Address originator;                ///< TP-OA
  std::uint8_t pid = pid_sim_data_download;  ///< TP-PID
  std::uint8_t dcs = dcs_8bit_class2;        ///< TP-DCS
  Timestamp scts;                    ///< TP-SCTS
  std::vector<UdhElement> udh;       ///< TP-UDHI is set exactly when this is not empty
  Bytes user_data;  ///< octets for 8-bit/UCS2; for GSM 7-bit one septet (0..127) per byte
  bool operator==(const Deliver&) const = default;
};

/// SMS-SUBMIT (TS 23.040 9.2.2.2), mobile to network.
struct Submit {
  bool reject_duplicates = false;     ///< TP-RD
  bool reply_path = false;            ///< TP-RP
  bool status_report_request = false; ///< TP-SRR
  std::uint8_t mr = 0;                ///< TP-MR
  Address destination;                ///< TP-DA
  std::uint8_t pid = pid_sim_data_download;
  std::uint8_t dcs = dcs_8bit_class2;
  ValidityPeriod vp;                  ///< TP-VPF/TP-VP
  std::vector<UdhElement> udh;
  Bytes user_data;  ///< as in Deliver
  bool operator==(const Submit&) const = default;
};

/// The TP-MTI of a TPDU's first octet in the given direction: 0 DELIVER (MT) / DELIVER-REPORT
/// (MO), 1 SUBMIT (MO) / SUBMIT-REPORT (MT), 2 STATUS-REPORT / COMMAND.
inline std::uint8_t mti(std::uint8_t first_octet) noexcept { return first_octet & 0x03; }

/// Parses an SMS-DELIVER TPDU (the whole input). Errors: truncated, trailing_data, bad_value
/// (wrong TP-MTI, bad semi-octet, UDH element overrunning the header), bad_length (TP-UDL
/// over 140 octets / 160 septets, UDHL larger than the user data), unsupported (reserved
/// or compressed DCS).
Result<Deliver> parse_deliver(ByteView tpdu);
/// Parses an SMS-SUBMIT TPDU (the whole input); errors as parse_deliver.
Result<Submit> parse_submit(ByteView tpdu);

/// Encodes an SMS-DELIVER. Errors: bad_length when the user data exceeds 140 octets
/// (160 septets) with its header, bad_value for a digit outside "0-9*#abc" or a septet > 127.
Result<Bytes> encode(const Deliver& d);
/// Encodes an SMS-SUBMIT; errors as for Deliver, plus bad_length for a TP-VP of the wrong size.
Result<Bytes> encode(const Submit& s);

/// Encodes a UDH (without UDHL). Errors: bad_length for an element over 255 octets.
Result<Bytes> encode_udh(const std::vector<UdhElement>& udh);
/// Parses a UDH (without UDHL). Errors: truncated element, bad_value.
Result<std::vector<UdhElement>> parse_udh(ByteView udh);
/// First element with the IEI, or nullptr.
const UdhElement* find(const std::vector<UdhElement>& udh, std::uint8_t iei) noexcept;

/// Packs septets (0..127 each) into octets, starting after fill_bits zero bits (0..6), as
/// TS 23.038 6.1.2.1 and TS 23.040 9.2.3.24 (fill after a UDH) say.
Bytes pack_septets(ByteView septets, unsigned fill_bits = 0);
/// Unpacks count septets from octets that start with fill_bits fill bits. Error: truncated.
Result<Bytes> unpack_septets(ByteView octets, std::size_t count, unsigned fill_bits = 0);
/// Decodes GSM 7-bit default alphabet septets (with the 1B escape table) to UTF-8.
/// Unknown escapes decode as the basic character, as TS 23.038 6.2.1.1 asks.
std::string gsm7_to_utf8(ByteView septets);
/// Encodes UTF-8 text into GSM 7-bit septets; a character outside the default alphabet
/// and its extension table is bad_value.
Result<Bytes> utf8_to_gsm7(std::string_view text);

/// TS 23.040 address field (length in digits, TOA, semi-octets) encode and parse; the
/// parse reads from the start of the input and reports how many octets it used.
Result<Bytes> encode_address(const Address& a);
/// Parses a TS 23.040 address field at the start of data; consumed receives its size.
Result<Address> parse_address(ByteView data, std::size_t& consumed);

/// TS 24.008 10.5.4.7 style BCD address: TON/NPI octet then BCD digits, F-filled. This is
/// the value of ENVELOPE tag 06/86 (TS 102 223 8.1). Errors as encode_address.
Result<Bytes> encode_address_bcd(const Address& a);
/// Parses the value of a BCD address (no tag or length). Errors: truncated (empty),
/// bad_value (a filler F before the last digit, bit 8 of TON/NPI clear), bad_length (> 20 digits).
Result<Address> parse_address_bcd(ByteView value);

/// One SMS of a concatenated series: its UDH and its data.
struct Part {
  std::vector<UdhElement> udh;
  Bytes data;
};

/// Splits an 8-bit payload into SMS user data parts. When payload plus the packet element
/// (if any, with empty data, e.g. IEI 70) fits in 140 octets, one part without a
/// concatenation element. Otherwise parts with IEI 00 (ref, total, sequence 1..total) and,
/// in the first part only, the packet element after it (docs/protocol.md section 7).
/// Errors: bad_length when more than 255 parts would be needed.
Result<std::vector<Part>> split_concatenated(ByteView payload, std::optional<std::uint8_t> packet_iei,
                                             std::uint8_t ref);

/// A message put back together by the Reassembler.
struct Message {
  std::string originator;
  std::vector<UdhElement> udh;  ///< the first part's UDH without its concatenation element
  Bytes data;                   ///< the data of all parts in sequence order
};

/// Limits of the Reassembler.
struct ReassemblerLimits {
  std::size_t max_parts = 16;      ///< a larger total is refused (bad_length)
  std::size_t max_pending = 8;     ///< incomplete messages kept; the oldest is evicted beyond
  std::chrono::seconds timeout{120};  ///< an incomplete message older than this is dropped
};

/// Joins concatenated parts (IEI 00 or 08) by originator and reference. Bounded in parts,
/// pending messages and time. Not thread-safe.
class Reassembler {
 public:
  using Clock = std::chrono::steady_clock;

  /// A reassembler with the given limits.
  explicit Reassembler(ReassemblerLimits limits = {}) : limits_(limits) {}

  /// Adds one SMS. A message without a concatenation element is complete at once. Returns
  /// the whole message when this part completes it, std::nullopt while parts are missing.
  /// Errors: bad_value (sequence 0 or above total, total 0, malformed concatenation
  /// element), bad_length (total above max_parts), conflict (part already received, or a
  /// total that differs from earlier parts' — the pending message is then dropped).
  Result<std::optional<Message>> add(const std::string& originator, const std::vector<UdhElement>& udh,
                                     ByteView data, Clock::time_point now);

  /// Drops incomplete messages older than the timeout; returns how many were dropped.
  std::size_t expire(Clock::time_point now);
  /// Number of incomplete messages held.
  std::size_t pending() const noexcept { return pending_.size(); }

 private:
  struct Pending {
    std::uint8_t total = 0;
    Clock::time_point first_seen;
    std::uint64_t order = 0;  // arrival order, for evicting the oldest
    std::map<std::uint8_t, Part> parts;
  };
  ReassemblerLimits limits_;
  std::map<std::pair<std::string, std::uint16_t>, Pending> pending_;
  std::uint64_t next_order_ = 0;
};

}  // namespace otac::sms
