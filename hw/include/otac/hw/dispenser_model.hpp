// The cash dispenser the emulator plays (otac-dispenser-emu): cassettes with notes, a retract
// bin, and faults injected into the next DISPENSE. It answers request lines of the dispenser
// protocol (otac/common/dispenser.hpp, docs/protocol.md §8). No I/O: the program around it
// owns the socket and the clock.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "otac/common/dispenser.hpp"

namespace otac::hw::dispenser {

/// A reply, and how long the customer is given before it goes out (a not-taken dispense
/// answers RETRACTED only after the take time has passed).
struct Answer {
  std::string line;               ///< LF included
  std::uint32_t delay_seconds = 0;
};

/// The dispenser's state and its answers.
class Model {
 public:
  explicit Model(std::vector<otac::dispenser::Cassette> cassettes) : cassettes_(std::move(cassettes)) {}

  /// Answers one request line (without its LF). Malformed lines get ERR BAD_REQUEST 0.
  Answer handle(std::string_view line);
  /// The fault the next DISPENSE suffers (then none again).
  void set_fault(otac::dispenser::Fault f) { fault_ = f; }

  const std::vector<otac::dispenser::Cassette>& cassettes() const { return cassettes_; }
  /// Minor units of notes taken back into the retract bin so far.
  std::int64_t retracted() const { return retracted_; }

 private:
  Answer dispense(std::int64_t amount, std::uint32_t take_seconds);

  std::vector<otac::dispenser::Cassette> cassettes_;
  otac::dispenser::Fault fault_ = otac::dispenser::Fault::none;
  std::int64_t retracted_ = 0;
};

}  // namespace otac::hw::dispenser
