#include "sms_outbox.hpp"

#include <algorithm>
#include <ctime>

#include "otac/sys/thread.hpp"

namespace otac::backend {

std::chrono::seconds backoff(const OutboxPumpConfig& c, std::uint32_t attempts) {
  std::int64_t d = c.retry_base.count();
  for (std::uint32_t i = 0; i < attempts && d < c.retry_max.count(); ++i) d *= 2;
  return std::chrono::seconds(std::min<std::int64_t>(d, c.retry_max.count()));
}

OutboxPump::OutboxPump(Service& service, SmsGateway& gateway, OutboxPumpConfig config,
                       std::function<UnixTime()> clock, std::function<void(const PumpEvent&)> report)
    : service_(service), gateway_(gateway), config_(config), clock_(std::move(clock)), report_(std::move(report)) {}

OutboxPump::~OutboxPump() { stop(); }

UnixTime OutboxPump::now() const { return clock_ ? clock_() : static_cast<UnixTime>(std::time(nullptr)); }

void OutboxPump::emit(const PumpEvent& e) const {
  if (report_) report_(e);
}

void OutboxPump::start() {
  thread_ = std::jthread([this](std::stop_token st) { run(st); });
}

void OutboxPump::stop() {
  thread_.request_stop();  // also ends the wait in run()
  if (thread_.joinable()) thread_.join();
}

void OutboxPump::wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

std::uint32_t OutboxPump::drain_once() { return drain(std::stop_token{}); }

std::uint32_t OutboxPump::drain(const std::stop_token& stop) {
  auto due = service_.next_due(config_.batch);
  if (!due) {
    emit(PumpEvent{PumpEvent::Kind::store_failed, 0, {}, 0, 0, due.error().message, {}});
    return 0;
  }
  std::uint32_t accepted = 0;
  for (const auto& m : *due) {
    if (stop.stop_requested()) break;
    auto sent = gateway_.send(m);
    PumpEvent e{PumpEvent::Kind::sent, m.id, m.to, m.attempts + 1, m.payload.size(), {}, {}};
    if (sent) {
      e.reply = std::move(*sent);
      if (auto s = service_.mark_sent(m.id, e.reply); !s)
        emit(PumpEvent{PumpEvent::Kind::store_failed, m.id, m.to, e.attempt, e.bytes, s.error().message, {}});
      ++accepted;
    } else {
      e.kind = PumpEvent::Kind::retry;
      e.reply = sent.error().message;
      e.retry_in = backoff(config_, m.attempts);
      if (auto s = service_.mark_failed(m.id, e.reply, now() + e.retry_in.count()); !s)
        emit(PumpEvent{PumpEvent::Kind::store_failed, m.id, m.to, e.attempt, e.bytes, s.error().message, {}});
    }
    emit(e);
  }
  return accepted;
}

void OutboxPump::run(const std::stop_token& stop) {
  sys::name_this_thread("otac-sms");
  // Bounded by stop(): each round either sends or sleeps up to `poll`.
  while (!stop.stop_requested()) {
    {
      std::lock_guard lock(mu_);
      woken_ = false;
    }
    drain(stop);
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, stop, config_.poll, [this] { return woken_; });
  }
}

}  // namespace otac::backend
