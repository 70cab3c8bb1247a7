// The OTAC protocol itself (docs/protocol.md §2, §3, §6.1): the applet's AID and INS codes,
// the tag names, the AUTHENTICATE challenge and the card's answer, the MAC and ARPC inputs,
// and the E1-E5 inner commands of the OTA packets. The applet, the terminal, the backend and
// the benchmarks all build and read these bytes here, so they cannot drift apart.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"
#include "otac/common/tlv.hpp"

namespace otac::protocol {

/// The applet's AID: proprietary RID range F0, "OTAC", version 1 (protocol.md §2).
inline constexpr std::array<std::uint8_t, 6> aid = {0xF0, 0x4F, 0x54, 0x41, 0x43, 0x01};

/// The challenge-response version (DF33, FCI 9F08). 02 binds the PIN state DF35 into the MAC.
inline constexpr std::uint8_t version = 0x02;

/// CLA of the interindustry commands (SELECT, VERIFY, ...) and of the proprietary ones.
inline constexpr std::uint8_t cla_iso = 0x00;
inline constexpr std::uint8_t cla_proprietary = 0x80;

/// Instruction codes (protocol.md §2). SELECT (CLA 00) and DISPLAY CODE (CLA 80) share A4.
enum class Ins : std::uint8_t {
  select = 0xA4,                 ///< CLA 00
  verify = 0x20,                 ///< CLA 00
  change_reference_data = 0x24,  ///< CLA 00
  reset_retry_counter = 0x2C,    ///< CLA 00
  activate = 0x10,
  fetch = 0x12,
  generate_key_pair = 0x46,
  authenticate = 0xA0,
  confirm = 0xA2,
  display_code = 0xA4,
  get_status = 0xA6,
  request_refresh = 0xA8,
  envelope = 0xC2,
};

/// The byte of an INS code.
constexpr std::uint8_t ins(Ins i) noexcept { return static_cast<std::uint8_t>(i); }

/// Tag names (protocol.md §2, §3, §6.1).
namespace tag {
// FCI (§2.1)
inline constexpr tlv::Tag fci = 0x6F, df_name = 0x84, fci_proprietary = 0xA5, fci_version = 0x9F08,
                          capabilities = 0xDF01, card_state = 0xDF02;
// Challenge (§3)
inline constexpr tlv::Tag version = 0xDF33, mode = 0xDF31, unpredictable_number = 0x9F37, amount = 0x9F02,
                          currency = 0x5F2A, date = 0x9A, time = 0x9F21, txn_type = 0x9C, terminal_id = 0x9F1C,
                          door_id = 0xDF32, pin_block = 0xDF34;
// Answer (§3) and card data (§2.2-§2.4)
inline constexpr tlv::Tag answer = 0x77, card_id = 0xDF41, list_id = 0xDF42, index = 0xDF43, atc = 0x9F36,
                          cryptogram = 0x9F26, pin_state = 0xDF35;
// Inner commands (§6.1) and their fields
inline constexpr tlv::Tag load_list = 0xE1, replace_key = 0xE2, set_signature_key = 0xE3, set_server_key = 0xE4,
                          load_list_asymmetric = 0xE5, inner_mac = 0xCF;
inline constexpr tlv::Tag c_list_id = 0xC1, c_activation = 0xC2, c_count = 0xC4, c_keys = 0xC5, c_new_key = 0xC6,
                          c_key_version = 0xC7, c_signature_key = 0xC8, c_server_point = 0xCA,
                          c_ca_signature = 0xCB, c_wrapped_key = 0xCC, c_list_signature = 0xCD;
}  // namespace tag

/// POS purchase or door entry (DF31).
enum class Mode : std::uint8_t { pos = 0x01, door = 0x02 };

/// PIN state bits (DF35): tries left in bits 0-3, and these.
inline constexpr std::uint8_t pin_state_verified = 0x10;  ///< PIN verified for this transaction
inline constexpr std::uint8_t pin_state_blocked = 0x20;   ///< PIN try limit exceeded
inline constexpr std::uint8_t pin_state_failed = 0x40;    ///< a wrong PIN since SELECT

/// The PIN state says the PIN is blocked (limit exceeded, or no try left).
constexpr bool pin_blocked(std::uint8_t pin_state) noexcept {
  return (pin_state & pin_state_blocked) != 0 || (pin_state & 0x0F) == 0;
}

/// The AUTHENTICATE data (protocol.md §3), every field validated by parse().
struct Challenge {
  std::uint8_t version = protocol::version;
  Mode mode = Mode::pos;
  std::array<std::uint8_t, 8> un{};    ///< 9F37
  std::int64_t amount_minor = 0;       ///< 9F02, n12 BCD
  std::uint16_t currency_code = 0;     ///< 5F2A, four BCD digits (0978 EUR)
  std::array<std::uint8_t, 3> date{};  ///< 9A YYMMDD, BCD as sent
  std::array<std::uint8_t, 3> time{};  ///< 9F21 HHMMSS, BCD as sent
  std::uint8_t type = 0x00;            ///< 9C
  std::string terminal;                ///< 9F1C, 8 bytes
  std::optional<std::string> door;     ///< DF32, 1..16 bytes, door mode only
  std::optional<SecretBytes> pin;      ///< DF34, 8 bytes, to the card only
  std::optional<std::uint16_t> list;   ///< DF42, indexed TAN
  std::optional<std::uint16_t> index;  ///< DF43, indexed TAN

  bool door_mode() const noexcept { return mode == Mode::door; }
  const std::string& terminal_id() const noexcept { return terminal; }
  std::string door_id() const { return door.value_or(std::string{}); }

  /// Parses strictly: BER-TLV covering the whole input, tags of §3 only, each at most once
  /// with its exact length, every required tag, version 02 (else unsupported), mode 01/02,
  /// DF32 exactly in door mode, BCD fields valid. Messages name the offending tag.
  static Result<Challenge> parse(ByteView data);

  /// Encodes the tags in the order of the table of §3, then DF42, DF43 and DF34 if present.
  /// amount_minor must fit 12 digits and currency_code 4 (std::invalid_argument otherwise).
  Bytes encode() const;
};

/// The card's AUTHENTICATE answer, template 77 (protocol.md §3).
struct CardAnswer {
  Bytes n;                         ///< DF41, 8 bytes
  std::uint16_t list_id = 0;       ///< DF42
  std::uint16_t index = 0;         ///< DF43
  std::uint16_t atc = 0;           ///< 9F36
  Bytes cryptogram;                ///< 9F26, 8 bytes
  std::uint8_t pin_state = 0;      ///< DF35

  /// Parses strictly: one template 77 and nothing after it; inside, exactly the six tags,
  /// each once, with their lengths.
  static Result<CardAnswer> parse(ByteView data);
  /// 77 { DF41 DF42 DF43 9F36 9F26 DF35 }.
  Bytes encode() const;
};

/// The MAC input of §3: DF33 DF31 9F37 9F02 5F2A 9A 9F21 9C 9F1C [DF32] DF41 DF42 DF43 9F36
/// DF35, from the challenge and the answer (its cryptogram is not used).
Bytes mac_input(const Challenge& c, const CardAnswer& a);

/// The ARPC input of §3.1: "ARPC" || cryptogram || ARC.
Bytes arpc_input(ByteView cryptogram, ByteView arc);

/// The MAC input of a display code (§4): "DISPLAY" || N || list id || index.
Bytes display_input(ByteView n, std::uint16_t list_id, std::uint16_t index);

/// The 8 digits a card shows (§4): the first 4 bytes of the MAC, top bit cleared, mod 10^8,
/// zero-padded. `mac` must hold at least 4 bytes.
std::string display_digits(ByteView mac);

/// The FCI of SELECT (§2.1): 6F { 84 AID  A5 { 9F08 version  DF01 capabilities  DF02 state } }.
struct Fci {
  std::uint8_t version = protocol::version;
  std::uint16_t capabilities = 0;
  std::uint8_t state = 0;  ///< 00 blank, 01 PIN set, 02 activated, 03 blocked

  /// Parses strictly (any version: the caller decides what it speaks); the AID must be ours.
  static Result<Fci> parse(ByteView data);
  Bytes encode() const;
};

// ---- Inner commands of OTA packets (protocol.md §6.1) ----

/// E1: load list.
struct LoadList {
  std::uint16_t list_id = 0;    ///< C1, never 0
  std::uint8_t activation = 0;  ///< C2: 00 when the current list runs out, 01 at once
  std::uint16_t count = 0;      ///< C4, at least 1
  SecretBytes keys;             ///< C5, count x 16
};

/// E2: replace card key.
struct ReplaceKey {
  SecretBytes key;              ///< C6 K', 16 bytes
  std::uint8_t key_version = 0; ///< C7, 1..15
};

/// E3: set signature key.
struct SetSignatureKey {
  SecretBytes key;  ///< C8 S, 16 bytes
};

/// E4: set server public key.
struct SetServerKey {
  Bytes point;      ///< CA, 65 bytes
  Bytes signature;  ///< CB, DER ECDSA, 1..80 bytes
};

/// E5: load list, asymmetric (§6.1.2).
struct LoadListAsymmetric {
  std::uint16_t list_id = 0;    ///< C1
  std::uint8_t activation = 0;  ///< C2
  std::uint16_t count = 0;      ///< C4
  Bytes wrapped_key;            ///< CC
  Bytes encrypted_keys;         ///< C5, a non-empty multiple of 16 bytes
  Bytes signature;              ///< CD
  /// C1 C2 C4 CC C5 in this order: what CD signs.
  Bytes signed_part() const;
};

/// One inner command.
using InnerCommand = std::variant<LoadList, ReplaceKey, SetSignatureKey, SetServerKey, LoadListAsymmetric>;

/// Encodes one inner command (E1..E5 with its fields in the order of §6.1).
Bytes encode_inner(const InnerCommand& cmd);

/// Decodes one parsed inner command object: tag E1..E5, its own fields only, each once with
/// its length. bad_value / bad_length say which field.
Result<InnerCommand> decode_inner(const tlv::Node& node);

/// The inner commands of a packet's secured data.
struct InnerCommands {
  std::vector<tlv::Node> commands;  ///< the objects before CF, not yet decoded
  std::optional<Bytes> mac;         ///< the CF value (32 bytes), when expect_mac
  Bytes signed_part;                ///< the encodings of the objects before CF
};

/// Splits secured data into commands. With expect_mac (the card holds a signature key) the
/// last object must be CF of 32 bytes (else Errc::bad_mac) and is taken off; without, every
/// object is a command (a CF is then refused by decode_inner). Data that is not BER-TLV or
/// holds no object is refused; commands is empty when CF was the only object (the caller
/// checks CF first, then refuses that).
Result<InnerCommands> parse_inner(ByteView data, bool expect_mac);

/// Appends CF = HMAC-SHA-256(s, inner) to inner (§6.1).
void append_inner_mac(Bytes& inner, const SecretBytes& s);

}  // namespace otac::protocol
