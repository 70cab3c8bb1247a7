// The cash dispenser as the terminal sees it: a small interface, so that a real driver (a
// CEN/XFS-style service or a vendor's serial protocol) can replace the socket driver for the
// emulator (hw/, otac-dispenser-emu) without touching the ATM flow.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "otac/common/dispenser.hpp"
#include "otac/common/result.hpp"

namespace otac::terminal {

/// How one payout ended, and what the customer got.
struct DispenseResult {
  dispenser::Status status = dispenser::Status::dispensed;  ///< dispensed, or the fault
  std::int64_t handed_minor = 0;                            ///< minor units handed over
};

/// A cash dispenser.
class Dispenser {
 public:
  virtual ~Dispenser() = default;
  /// The cassettes and the notes left in them.
  virtual Result<std::vector<dispenser::Cassette>> cassettes() = 0;
  /// Pays `amount_minor` out, giving the customer `take_time` to take the notes. An error
  /// means the dispenser did not say what happened (the caller assumes nothing was handed over
  /// and reverses).
  virtual Result<DispenseResult> dispense(std::int64_t amount_minor, std::chrono::seconds take_time) = 0;
};

/// The driver for the line protocol on a Unix socket (docs/protocol.md §8); every exchange is
/// bounded by `timeout` (a dispense by the take time plus `timeout`).
Result<std::unique_ptr<Dispenser>> open_socket_dispenser(const std::string& socket_path, std::chrono::milliseconds timeout);

/// Whether the cassettes can pay `amount_minor` exactly (checked before going online).
bool payable(const std::vector<dispenser::Cassette>& cassettes, std::int64_t amount_minor);

}  // namespace otac::terminal
