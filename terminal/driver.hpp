// Runs one Flow against real edges: a Reader, the backend calls and a keypad. All waiting is
// bounded by the limits given here; the flow decides, the driver only carries out actions.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "otac/common/secret.hpp"
#include "terminal/flow.hpp"
#include "terminal/reader.hpp"

namespace otac::terminal {

/// The edges the driver talks to.
struct DriverIo {
  Reader* reader = nullptr;
  /// POST /v1/authorizations with the body; the answer body (200) or an error.
  std::function<Result<std::string>(const std::string& body)> post;
  /// GET /v1/authorizations/{txn}?wait=seconds.
  std::function<Result<std::string>(const std::string& txn, unsigned wait_s)> poll;
  /// POST /v1/authorizations/{txn}/cancel: the terminal stopped waiting for an operator.
  std::function<Result<std::string>(const std::string& txn)> cancel;
  /// Reads a PIN after showing the prompt; nullopt when cancelled, timed out or unavailable.
  std::function<std::optional<SecretBytes>(const std::string& prompt)> pin;
  /// ATM: the amount the customer picks, already checked against the cassettes; nullopt when
  /// cancelled, timed out or not payable.
  std::function<std::optional<std::uint64_t>(const std::string& prompt)> amount;
  /// Shows a line on the terminal's display.
  std::function<void(const std::string& line)> display;
  /// The clock of the held wait's deadlines and latency, and the pause between polls; unset:
  /// steady_clock and this_thread::sleep_for. Tests pass a clock that the pause moves forward.
  std::function<std::chrono::steady_clock::time_point()> now;
  std::function<void(std::chrono::steady_clock::duration)> pause;
};

/// Time limits for one tap.
struct DriverLimits {
  Millis card_wait{15000};
  Millis apdu_timeout{1000};
  Millis removal_wait{10000};  ///< 0: end the card session without waiting (benchmarks)
  std::chrono::seconds held_limit{60};  ///< longest wait for an operator; the backend's deadline may end it sooner
};

/// Timings of one tap.
struct TapTimes {
  double tap_to_decision_ms = -1;  ///< card detected -> decision shown; -1 if no card
  double backend_ms = 0;           ///< of which waiting for the backend's answers
  double card_ms = 0;              ///< of which APDU exchanges with the card
};

/// Drives the flow to its end and returns its outcome.
Outcome run_flow(Flow& flow, const DriverIo& io, const DriverLimits& lim, TapTimes* times = nullptr);

}  // namespace otac::terminal
