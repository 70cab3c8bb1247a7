// The door relay: a libgpiod output line pulsed for a configured time, or a configured
// command. Fail secure: any error leaves the door shut and is reported.
#pragma once

#include <string>

#include "otac/common/result.hpp"
#include "terminal/config.hpp"

namespace otac::terminal {

/// Opens the door once per the config (relay = gpiod | command). relay = none is an error:
/// a door terminal without a relay cannot open anything.
Result<void> pulse_relay(const Config& c, const std::string& door_id);

}  // namespace otac::terminal
