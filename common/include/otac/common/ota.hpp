// ETSI TS 102 225 / 3GPP TS 31.115 secured packets (SIM OTA), SMS dialect.
//
// A command packet is CPL CHL SPI KIc KID TAR CNTR PCNTR RC/CC/DS data; a response packet
// (PoR) is RPL RHL TAR CNTR PCNTR RSC RC/CC/DS data. The UDH element that identifies the
// packet (IEI 70 / 71) belongs to the SMS layer and is not part of these byte strings,
// except that the PoR's RC/CC is computed over the SMS UDH "02 71 00" as TS 31.115 has it.
// docs/protocol.md section 6 records every reading we chose.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"

namespace otac::ota {

/// Toolkit Application Reference, 3 bytes (the OTAC applet's is 4F 54 43).
using Tar = std::array<std::uint8_t, 3>;

/// The OTAC applet's TAR.
inline constexpr Tar otac_tar{0x4F, 0x54, 0x43};

/// Largest counter value (5 bytes).
inline constexpr std::uint64_t counter_max = 0xFF'FFFF'FFFFULL;

/// SPI first octet b2b1 and second octet b4b3: which integrity check a packet carries.
enum class Integrity : std::uint8_t { none = 0, rc = 1, cc = 2, ds = 3 };

/// SPI first octet b5b4: how the receiver checks the counter.
enum class CounterMode : std::uint8_t {
  none = 0,        ///< no counter available (CNTR content ignored)
  no_check = 1,    ///< counter available, not checked
  higher = 2,      ///< must be higher than the receiver's value
  one_higher = 3,  ///< must be exactly one higher than the receiver's value
};

/// SPI second octet b2b1: whether a Proof of Receipt is wanted.
enum class PorMode : std::uint8_t { none = 0, required = 1, on_error = 2 };

/// Security Parameter Indicator, both octets, decoded.
struct Spi {
  Integrity integrity = Integrity::none;     ///< 1st octet b2b1
  bool ciphered = false;                     ///< 1st octet b3
  CounterMode counter = CounterMode::none;   ///< 1st octet b5b4
  PorMode por = PorMode::none;               ///< 2nd octet b2b1
  Integrity por_integrity = Integrity::none; ///< 2nd octet b4b3
  bool por_ciphered = false;                 ///< 2nd octet b5
  bool por_via_submit = false;               ///< 2nd octet b6: PoR by SMS-SUBMIT, else DELIVER-REPORT

  /// The two SPI octets as a big-endian number (first octet high), reserved bits zero.
  std::uint16_t encode() const;
  /// Decodes two SPI octets. Reserved bits are ignored; PoR mode 11 (reserved) is an error.
  static Result<Spi> decode(std::uint16_t raw);
  bool operator==(const Spi&) const = default;
};

/// What a KIc or KID byte (b4..b1) names. The key version is b8..b5 (see key_version()).
enum class Algorithm : std::uint8_t {
  implicit,     ///< b2b1 = 00: agreed beforehand; we cannot resolve it
  des_cbc,      ///< single DES, CBC (KIc) / CBC-MAC (KID); legacy
  des3_2key,    ///< 3DES two keys (16-byte key), CBC / CBC-MAC
  des3_3key,    ///< 3DES three keys (24-byte key), CBC / CBC-MAC
  des_ecb,      ///< KIc only: DES in ECB mode (not supported)
  aes,          ///< AES-CBC (KIc) / AES-CMAC (KID), key 16, 24 or 32 bytes
  crc16,        ///< KID with RC: CRC-16 (ISO/IEC 13239)
  crc32,        ///< KID with RC: CRC-32 (ISO/IEC 13239)
  proprietary,  ///< b2b1 = 11
  reserved,     ///< a combination the standard reserves
};

/// Key version, b8..b5 of a KIc or KID byte.
inline std::uint8_t key_version(std::uint8_t kic_or_kid) { return static_cast<std::uint8_t>(kic_or_kid >> 4); }
/// The ciphering algorithm a KIc byte names.
Algorithm kic_algorithm(std::uint8_t kic);
/// The algorithm a KID byte names, read as CC or RC algorithm according to integrity.
Algorithm kid_algorithm(std::uint8_t kid, Integrity integrity);
/// A short name for an algorithm ("3DES-2key", "AES", ...).
const char* algorithm_name(Algorithm a);

/// Length of the RC/CC/DS field for an integrity type and KID: RC 2 (CRC-16) or 4 (CRC-32);
/// CC 8 (DES CBC-MAC, and AES-CMAC truncated to its leftmost 8 bytes). Error for DS,
/// implicit, proprietary and reserved algorithms (Errc::unknown_key / unsupported).
Result<std::size_t> check_length(Integrity integrity, std::uint8_t kid);

/// Response Status Code of a PoR (TS 102 225 table 5.5 / TS 31.115 clause 7).
enum class Rsc : std::uint8_t {
  ok = 0x00,
  rc_cc_ds_failed = 0x01,
  counter_low = 0x02,
  counter_high = 0x03,
  counter_blocked = 0x04,
  ciphering_error = 0x05,
  unidentified_security_error = 0x06,
  insufficient_memory = 0x07,
  more_time = 0x08,
  tar_unknown = 0x09,
  insufficient_security_level = 0x0A,
  response_in_sms_submit = 0x0B,  ///< actual response data sent by SMS-SUBMIT
  response_in_ussd = 0x0C,        ///< actual response data sent by a USSD operation
};

/// A short description of a response status ("PoR OK", "counter low", ...).
const char* rsc_name(Rsc rsc);

// ---- command packets ----------------------------------------------------------------------

/// The cleartext header fields of a command packet.
struct CommandHeader {
  Spi spi;
  std::uint8_t kic = 0;
  std::uint8_t kid = 0;
  Tar tar{};
};

/// Everything in a command packet after opening it.
struct Command {
  CommandHeader header;
  std::uint64_t counter = 0;  ///< CNTR, 5 bytes
  std::uint8_t pcntr = 0;     ///< padding count
  Bytes data;                 ///< secured data with the padding removed
};

/// Builds a command packet (starting at CPL). Pads with zeros so that the ciphered part
/// (CNTR .. data) is a whole number of cipher blocks when ciphering, else adds no padding.
/// kic_key is used only when spi.ciphered, kid_key only for a CC; an unused key may be
/// empty. counter must fit in 5 bytes. Errc::unknown_key when KIc/KID name an algorithm
/// we do not implement or the key length does not fit it; Errc::bad_length when the
/// packet would exceed CPL's range.
Result<Bytes> build_command(const CommandHeader& header, std::uint64_t counter, ByteView data,
                            const SecretBytes& kic_key, const SecretBytes& kid_key);

/// What can be read from a command packet without keys: header, and counter only if the
/// packet is not ciphered. Checks CPL against the length and CHL against the SPI/KID.
struct CommandPeek {
  CommandHeader header;
  std::optional<std::uint64_t> counter;  ///< empty when the counter is ciphered
};

/// Step one of opening: reads the header without keys, so that the receiver can pick keys
/// by TAR and key versions. Errors: truncated, bad_length (CPL or CHL), trailing_data.
Result<CommandPeek> peek_command(ByteView packet);

/// Step two: deciphers and verifies the packet with the keys for its KIc/KID. Does NOT
/// check the counter (use check_counter). Errors: those of peek_command, unknown_key,
/// bad_mac (CC or RC wrong), bad_length (ciphered part not whole blocks), bad_value
/// (PCNTR larger than the data).
Result<Command> open_command(ByteView packet, const SecretBytes& kic_key, const SecretBytes& kid_key);

/// The RSC for a received counter under a counter mode, given the receiver's stored
/// counter: ok, counter_low (not higher / not one higher), counter_high (more than one
/// higher in mode one_higher) or counter_blocked (stored counter at counter_max).
Rsc counter_status(CounterMode mode, std::uint64_t received, std::uint64_t stored);

/// Same check as an error value: Errc::replay with the RSC in the message.
Result<void> check_counter(CounterMode mode, std::uint64_t received, std::uint64_t stored);

/// The RSC a receiver should answer for an error from open_command.
Rsc rsc_for(const Error& open_error);

// ---- response packets (PoR) ---------------------------------------------------------------

/// Fields of a response packet. The security of a PoR comes from the command: SPI second
/// octet, and the command's KIc/KID and keys.
struct Response {
  Tar tar{};
  std::uint64_t counter = 0;  ///< the command's CNTR
  std::uint8_t pcntr = 0;     ///< padding count (set by build_response)
  Rsc status = Rsc::ok;
  Bytes data;                 ///< additional response data, padding removed
};

/// How a PoR is protected: the command's SPI (second octet used) and KIc/KID.
struct PorSecurity {
  Spi spi;
  std::uint8_t kic = 0;
  std::uint8_t kid = 0;
};

/// Builds a response packet (starting at RPL). The RC/CC covers the SMS UDH "02 71 00",
/// RPL, RHL, TAR, CNTR, PCNTR, RSC and the data with padding (TS 31.115). pcntr in r is
/// ignored and computed.
Result<Bytes> build_response(const PorSecurity& sec, const Response& r, const SecretBytes& kic_key,
                             const SecretBytes& kid_key);

/// Reads a response packet's TAR without keys (everything else may be ciphered).
Result<Tar> peek_response_tar(ByteView packet);

/// Deciphers and verifies a response packet. Errors as for open_command; additionally
/// bad_length when RHL disagrees with the RC/CC length the security asks for.
Result<Response> open_response(ByteView packet, const PorSecurity& sec, const SecretBytes& kic_key,
                               const SecretBytes& kid_key);

// ---- checks and keys ----------------------------------------------------------------------

/// CRC-16 of ISO/IEC 13239 (poly 1021 reflected, init FFFF, final xor FFFF), as sent
/// big-endian in an RC.
std::uint16_t crc16(ByteView data);
/// CRC-32 of ISO/IEC 13239 (the zlib/Ethernet CRC).
std::uint32_t crc32(ByteView data);

/// Card key algorithm, the values of ACTIVATE tag DF45.
enum class CardAlgorithm : std::uint8_t { des3_2key = 0x01, aes128 = 0x02 };

/// The per-purpose keys of a card (protocol.md 1.1).
struct CardKeys {
  SecretBytes kic;     ///< OTAC-OTA-ENC: ciphering of OTA packets
  SecretBytes kid;     ///< OTAC-OTA-MAC: CC of OTA packets
  SecretBytes mo_mac;  ///< OTAC-MO-MAC: MAC of card-originated requests
};

/// Derives the card's keys from K and N with SP 800-108 (protocol.md 1.1); 3DES keys get
/// odd parity. Errc::bad_length if K is not 16 bytes or N not 8.
Result<CardKeys> derive_card_keys(const SecretBytes& k, ByteView n, CardAlgorithm algorithm);

/// The KIc/KID byte for a card algorithm and key version (e.g. 3DES2, version 1 -> 0x15).
std::uint8_t key_id_for(CardAlgorithm algorithm, std::uint8_t key_version);

}  // namespace otac::ota
