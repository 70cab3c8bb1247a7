// The AUTHENTICATE challenge (protocol.md §3) as the backend reads it, and the canonical MAC
// input built from it. Internal to the service.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::backend {

/// The challenge fields, raw values as they were on the wire.
struct Challenge {
  Bytes version, mode, un, amount, currency, date, time, type, terminal;  ///< DF33 DF31 9F37 9F02 5F2A 9A 9F21 9C 9F1C
  std::optional<Bytes> door;      ///< DF32
  std::int64_t amount_minor = 0;  ///< 9F02 decoded
  std::uint16_t currency_code = 0;
  bool door_mode() const { return mode.size() == 1 && mode[0] == 0x02; }
  std::string terminal_id() const { return {terminal.begin(), terminal.end()}; }
  std::string door_id() const { return door ? std::string(door->begin(), door->end()) : std::string{}; }
};

/// Parses the AUTHENTICATE data TLV: every required tag exactly once with its length,
/// BCD fields valid, DF32 present exactly in door mode. DF34/DF42/DF43 are accepted and ignored.
Result<Challenge> parse_challenge(ByteView data);

/// The MAC input of protocol.md §3 for this challenge and the card's response fields.
Bytes mac_input(const Challenge& c, ByteView n, std::uint16_t list_id, std::uint16_t index, std::uint16_t atc,
                std::uint8_t pin_state);

/// The card's PIN state (DF35, protocol.md §3) says its PIN is blocked (try limit exceeded).
inline bool pin_blocked(std::uint8_t pin_state) { return (pin_state & 0x20) != 0 || (pin_state & 0x0F) == 0; }

}  // namespace otac::backend
