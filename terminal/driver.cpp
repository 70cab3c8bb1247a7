#include "terminal/driver.hpp"

#include <algorithm>
#include <thread>

namespace otac::terminal {

Outcome run_flow(Flow& flow, const DriverIo& io, const DriverLimits& lim, TapTimes* times) {
  using Clock = std::chrono::steady_clock;
  Clock::time_point card_at{};
  Clock::time_point held_deadline{};
  bool held_started = false;
  Action a = flow.start();
  // Every action moves the flow forward; the flow itself bounds retries, so 64 steps is ample.
  for (int step = 0; step < 64; ++step) {
    if (!a.display.empty() && io.display) io.display(a.display);
    if (a.decision_shown && times && card_at != Clock::time_point{})
      times->tap_to_decision_ms = std::chrono::duration<double, std::milli>(Clock::now() - card_at).count();
    switch (a.kind) {
      case Action::wait_card: {
        auto r = io.reader->wait_card(lim.card_wait);
        if (!r) {
          a = flow.on_no_card(r.error());
        } else {
          card_at = Clock::now();
          a = flow.on_card();
        }
        break;
      }
      case Action::transmit: {
        auto r = transmit(*io.reader, a.command, lim.apdu_timeout);
        a = r ? flow.on_response(*r) : flow.on_reader_error(r.error());
        break;
      }
      case Action::ask_pin: {
        auto pin = io.pin ? io.pin(a.display) : std::nullopt;
        a = pin ? flow.on_pin(*pin) : flow.on_pin_cancelled();
        break;
      }
      case Action::post_auth:
        a = flow.on_backend(io.post(a.body));
        break;
      case Action::poll_held: {
        if (!held_started) {
          held_started = true;
          held_deadline = Clock::now() + lim.held_limit;
        }
        const auto left = std::chrono::duration_cast<std::chrono::seconds>(held_deadline - Clock::now());
        if (left.count() <= 0) {
          a = flow.on_held_expired();
          break;
        }
        const auto before = Clock::now();
        auto r = io.poll(flow.params().txn_id, static_cast<unsigned>(std::min<long long>(left.count(), 30)));
        // A failed poll that returned at once must not spin: pause a little before the next.
        if (!r && Clock::now() - before < std::chrono::milliseconds(200))
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        a = flow.on_backend(r);
        break;
      }
      case Action::wait_removal:
        // Even with a zero wait this ends the card session (deselect / reset: PIN state gone).
        (void)io.reader->wait_removal(lim.removal_wait);
        a = flow.on_removed();
        break;
      case Action::done:
        return flow.outcome();
    }
  }
  // Unreachable with a correct flow; decline rather than loop.
  Outcome o = flow.outcome();
  if (!flow.finished()) {
    o.decision = Decision::declined;
    o.reason = "internal";
    o.detail = "the flow did not finish within 64 steps";
  }
  return o;
}

}  // namespace otac::terminal
