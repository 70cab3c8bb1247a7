// The AUTHENTICATE challenge (protocol.md §3) as the service reads it: the names the service
// uses, bound to the one codec in common/ (otac/common/protocol.hpp). Internal to the service.
#pragma once

#include <cstdint>

#include "otac/common/protocol.hpp"

namespace otac::backend {

using Challenge = protocol::Challenge;
using protocol::pin_blocked;

/// protocol::Challenge::parse: strict, version 02 only.
inline Result<Challenge> parse_challenge(ByteView data) { return Challenge::parse(data); }

/// protocol::mac_input for this challenge and the card's answer fields.
inline Bytes mac_input(const Challenge& c, ByteView n, std::uint16_t list_id, std::uint16_t index, std::uint16_t atc,
                       std::uint8_t pin_state) {
  return protocol::mac_input(c, protocol::CardAnswer{Bytes(n.begin(), n.end()), list_id, index, atc, {}, pin_state});
}

}  // namespace otac::backend
