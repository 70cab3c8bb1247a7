// SMS delivery: the gateway interface and the outbox pump that drains the Service's durable
// outbox into it, retrying each refused message with exponential backoff. The pump's clock is
// injected (retry times), so a test drives it pass by pass without sleeping. No network here:
// backend/sms/kannel.hpp implements SmsGateway over Kannel's sendsms interface.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>

#include "otac/common/result.hpp"
#include "service.hpp"

namespace otac::backend {

/// Something that takes MT messages for delivery (Kannel in otac-backend).
class SmsGateway {
 public:
  virtual ~SmsGateway() = default;
  /// Hands one message over, bounded in time. The gateway's answer when it accepted the
  /// message; otherwise an error saying why (stored as the message's last reply).
  virtual Result<std::string> send(const OutboxMessage& m) = 0;
};

/// How the pump paces itself.
struct OutboxPumpConfig {
  std::chrono::seconds retry_base{2};        ///< delay after the first refusal
  std::chrono::seconds retry_max{300};       ///< longest delay
  std::chrono::milliseconds poll{500};       ///< how often the outbox is checked when not woken
  std::uint32_t batch = 16;                  ///< messages per pass
};

/// What happened to one message, for the program's log (never carries the payload).
struct PumpEvent {
  enum class Kind { sent, retry, store_failed };
  Kind kind = Kind::sent;
  std::int64_t id = 0;              ///< 0 when the outbox itself could not be read
  std::string to;
  std::uint32_t attempt = 0;        ///< 1 for the first hand-over
  std::size_t bytes = 0;
  std::string reply;                ///< the gateway's answer, or the error
  std::chrono::seconds retry_in{0};
};

/// Delay before the next attempt after `attempts` failed ones: base * 2^attempts, at most max.
std::chrono::seconds backoff(const OutboxPumpConfig& c, std::uint32_t attempts);

/// Drains the outbox into a gateway, in a thread of its own (start) or pass by pass (drain_once).
class OutboxPump {
 public:
  /// clock: Unix seconds for retry times (the system clock by default); report: called for
  /// every message handed over or refused, and when the store fails.
  OutboxPump(Service& service, SmsGateway& gateway, OutboxPumpConfig config,
             std::function<UnixTime()> clock = {}, std::function<void(const PumpEvent&)> report = {});
  ~OutboxPump();
  OutboxPump(const OutboxPump&) = delete;
  OutboxPump& operator=(const OutboxPump&) = delete;

  /// Starts the thread.
  void start();
  /// Stops and joins the thread (a message in flight finishes first).
  void stop();
  /// Checks the outbox now instead of at the next poll.
  void wake();
  /// One pass over the due messages; returns how many the gateway accepted.
  std::uint32_t drain_once();

 private:
  void run(const std::stop_token& stop);
  std::uint32_t drain(const std::stop_token& stop);
  UnixTime now() const;
  void emit(const PumpEvent& e) const;

  Service& service_;
  SmsGateway& gateway_;
  OutboxPumpConfig config_;
  std::function<UnixTime()> clock_;
  std::function<void(const PumpEvent&)> report_;
  std::mutex mu_;
  std::condition_variable_any cv_;  // waits end early on wake() or on the thread's stop request
  bool woken_ = false;
  std::jthread thread_;  // declared last: started after, and stopped before, the members it uses
};

}  // namespace otac::backend
