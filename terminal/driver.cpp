#include "terminal/driver.hpp"

#include <algorithm>
#include <thread>

namespace otac::terminal {

Outcome run_flow(Flow& flow, const DriverIo& io, const DriverLimits& lim, TapTimes* times) {
  using Clock = std::chrono::steady_clock;
  auto now = [&io] { return io.now ? io.now() : Clock::now(); };
  auto pause = [&io](Clock::duration d) {
    if (io.pause) io.pause(d);
    else std::this_thread::sleep_for(d);
  };
  Clock::time_point card_at{};
  Clock::time_point held_deadline{};
  Clock::time_point sent_at{};  // when the request whose answer the flow is acting on was sent
  bool held_started = false;
  Action a = flow.start();
  // Every action but a poll moves the flow forward and the flow bounds its retries, so 64
  // such steps is ample; polls are bounded by the held deadline (at most 5 per second).
  int steps = 0;
  for (int iter = 0; iter < 1000000 && steps < 64; ++iter) {
    if (a.kind != Action::poll_held) ++steps;
    if (!a.display.empty() && io.display) io.display(a.display);
    if (a.decision_shown && times && card_at != Clock::time_point{})
      times->tap_to_decision_ms = std::chrono::duration<double, std::milli>(now() - card_at).count();
    switch (a.kind) {
      case Action::wait_card: {
        auto r = io.reader->wait_card(lim.card_wait);
        if (!r) {
          a = flow.on_no_card(r.error());
        } else {
          card_at = now();
          a = flow.on_card();
        }
        break;
      }
      case Action::transmit: {
        const auto t0 = Clock::now();
        auto r = transmit(*io.reader, a.command, lim.apdu_timeout);
        if (times && times->tap_to_decision_ms < 0)
          times->card_ms += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        a = r ? flow.on_response(*r) : flow.on_reader_error(r.error());
        break;
      }
      case Action::ask_pin: {
        auto pin = io.pin ? io.pin(a.display) : std::nullopt;
        a = pin ? flow.on_pin(*pin) : flow.on_pin_cancelled();
        break;
      }
      case Action::ask_amount: {
        auto amount = io.amount ? io.amount(a.display) : std::nullopt;
        a = amount ? flow.on_amount(*amount) : flow.on_amount_cancelled();
        break;
      }
      case Action::post_auth: {
        sent_at = now();
        auto answer = io.post(a.body);
        if (times) times->backend_ms += std::chrono::duration<double, std::milli>(now() - sent_at).count();
        a = flow.on_backend(std::move(answer));
        break;
      }
      case Action::poll_held: {
        // The wait ends at the terminal's own limit or at the backend's deadline, whichever
        // comes first. The deadline arrives as time left and is counted from when the request
        // was sent, before the backend read its clock, so it is never later than the
        // backend's, whatever the two wall clocks say (protocol.md §5.2).
        if (!held_started) {
          held_started = true;
          held_deadline = sent_at + lim.held_limit;
        }
        if (a.held_left) held_deadline = std::min(held_deadline, sent_at + *a.held_left);
        const auto before = now();
        if (before >= held_deadline) {
          a = flow.on_held_expired();
          break;
        }
        // Whole seconds, rounded down (the API takes seconds; at most 30), so that the
        // long-poll ends by the deadline; under a second left polls without waiting.
        const auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(held_deadline - before).count();
        sent_at = before;
        auto r = io.poll(flow.params().txn_id, static_cast<unsigned>(std::min<long long>(left_ms / 1000, 30)));
        // A poll that returned at once (error, short wait, or a backend that caps the wait)
        // must not spin; the pause never runs past the deadline.
        const auto took = now() - before;
        if (took < std::chrono::milliseconds(200))
          pause(std::min<Clock::duration>(std::chrono::milliseconds(200) - took,
                                          std::max<Clock::duration>(held_deadline - now(), Clock::duration::zero())));
        a = flow.on_backend(r);
        break;
      }
      case Action::cancel_held:
        sent_at = now();
        a = flow.on_backend(io.cancel ? io.cancel(flow.params().txn_id)
                                      : Result<std::string>(Error{Errc::io, "this terminal cannot send a cancel"}));
        break;
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
    o.detail = "the flow did not finish within its step bound";
  }
  return o;
}

}  // namespace otac::terminal
