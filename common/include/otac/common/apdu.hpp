// ISO/IEC 7816-4 command and response APDUs (clause 5.1): cases 1-4, short and extended
// length fields.
//
// Ne (the maximum response length) follows the standard: a short Le byte 00 means 256, an
// extended Le 00 00 means 65536. Command.ne is absent for cases 1 and 3.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::apdu {

/// A command APDU.
struct Command {
  std::uint8_t cla = 0;
  std::uint8_t ins = 0;
  std::uint8_t p1 = 0;
  std::uint8_t p2 = 0;
  Bytes data;                        ///< Nc = data.size(), 0..65535
  std::optional<std::uint32_t> ne;   ///< 1..65536 when an Le field is present
  bool extended = false;             ///< encode with extended length fields

  /// 1..4 as in ISO 7816-4: 1 no data no Le, 2 Le only, 3 data only, 4 both.
  int apdu_case() const noexcept;
};

/// Parses a command APDU. The whole input must be one APDU. Errors: truncated (< 4 bytes,
/// or fewer data bytes than Lc), trailing_data (bytes after data and Le), bad_length
/// (bodies that fit no case: extended Lc 0000 with data, a 1-byte Le after extended data,
/// a body of 2 bytes starting 00).
Result<Command> parse_command(ByteView bytes);

/// Encodes a command. Short form unless extended is set or Nc > 255 or Ne > 256.
/// Errors: bad_length for Nc > 65535, Ne = 0 or Ne > 65536.
Result<Bytes> encode(const Command& c);

/// A response APDU: data and the status word SW1 SW2.
struct Response {
  Bytes data;
  std::uint16_t sw = 0;
  std::uint8_t sw1() const noexcept { return static_cast<std::uint8_t>(sw >> 8); }
  std::uint8_t sw2() const noexcept { return static_cast<std::uint8_t>(sw & 0xFF); }
};

/// Parses a response APDU (at least the two status bytes). Error: truncated.
Result<Response> parse_response(ByteView bytes);

/// Encodes data || SW1 || SW2.
Bytes encode(const Response& r);

/// A one-line description: "80 A0 00 00 Lc=61 Le=256 case 4 short".
std::string describe(const Command& c);

}  // namespace otac::apdu
