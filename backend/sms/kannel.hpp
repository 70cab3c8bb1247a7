// The Kannel link: a sender thread that drains the service's durable outbox into Kannel's
// HTTP sendsms interface (binary, UDH, PID 7F, DCS F6), retrying with exponential backoff
// while the gateway is unreachable; and the loopback MO listener's routes that receive
// Kannel's get-url MO messages and delivery reports (guarded by a secret in the URL).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <stop_token>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "otac/common/result.hpp"
#include "otac/net/http_client.hpp"
#include "router.hpp"
#include "service.hpp"

namespace otac::backend::sms {

/// Where and how to hand messages to Kannel.
struct KannelConfig {
  std::string host = "127.0.0.1";
  std::uint16_t port = 13013;
  std::string path = "/cgi-bin/sendsms";
  std::string user;                  ///< sendsms-user username
  std::string pass;                  ///< its password (never logged)
  std::string from;                  ///< sender address (the server's MSISDN)
  std::string smsc_id;               ///< optional smsc routing
  std::string dlr_url_prefix;        ///< "http://127.0.0.1:P/v1/sms/dlr?secret=S"; empty = no DLR
  std::chrono::seconds retry_base{2};
  std::chrono::seconds retry_max{300};
  std::chrono::milliseconds poll{500};    ///< how often the outbox is checked
  std::chrono::seconds timeout{5};        ///< per HTTP step (resolve, connect, write, read)
  std::uint32_t batch = 16;
};

/// Kannel's sendsms URL ("http://HOST:PORT/PATH", plain HTTP) into config's host, port and path.
Result<void> set_sendsms_url(KannelConfig& config, std::string_view url);
/// The sendsms request target for one outbox message (contains the password: never log it).
std::string sendsms_target(const KannelConfig& c, const OutboxMessage& m);
/// Retry delay after `attempts` failed attempts: base * 2^attempts, at most max.
std::chrono::seconds backoff(const KannelConfig& c, std::uint32_t attempts);
/// One sendsms GET on a connection of its own, each step bounded by config.timeout.
Result<net::Response> sendsms_get(const KannelConfig& config, const std::string& target);

/// Drains the outbox in a background thread.
class KannelSender {
 public:
  KannelSender(Service& service, KannelConfig config);
  ~KannelSender();
  KannelSender(const KannelSender&) = delete;
  KannelSender& operator=(const KannelSender&) = delete;
  /// Starts the thread.
  void start();
  /// Stops and joins the thread (a message in flight finishes first).
  void stop();
  /// Checks the outbox now instead of at the next poll.
  void wake();
  /// One pass over the due messages; returns how many were accepted by Kannel.
  std::uint32_t drain_once();

 private:
  void run(const std::stop_token& stop);
  std::uint32_t drain(const std::stop_token& stop);
  Service& service_;
  KannelConfig config_;
  std::mutex mu_;
  std::condition_variable_any cv_;  // waits end early on wake() or on the thread's stop request
  bool woken_ = false;
  std::jthread thread_;  // declared last: started after, and stopped before, the members it uses
};

/// Registers GET/POST /v1/sms/mo and GET /v1/sms/dlr on router (the MO listener's router).
/// on_queued is called after an MO message was handled (it may have queued an answer).
void install_mo_routes(http::Router& router, Service& service, std::string secret, std::function<void()> on_queued);

}  // namespace otac::backend::sms
