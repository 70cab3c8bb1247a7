// The Kannel link: an SmsGateway (sms_outbox.hpp) that hands one outbox message at a time to
// Kannel's HTTP sendsms interface (binary, UDH, PID 7F, DCS F6), and the loopback MO listener's
// routes that receive Kannel's get-url MO messages and delivery reports (guarded by a secret
// in the URL). The outbox pump in the service layer does the retrying.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "otac/common/result.hpp"
#include "otac/net/http_client.hpp"
#include "router.hpp"
#include "service.hpp"
#include "sms_outbox.hpp"

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
  std::chrono::seconds timeout{5};        ///< per HTTP step (resolve, connect, write, read)
};

/// Kannel's sendsms URL ("http://HOST:PORT/PATH", plain HTTP) into config's host, port and path.
Result<void> set_sendsms_url(KannelConfig& config, std::string_view url);
/// The sendsms request target for one outbox message (contains the password: never log it).
std::string sendsms_target(const KannelConfig& c, const OutboxMessage& m);
/// One sendsms GET on a connection of its own, each step bounded by config.timeout.
Result<net::Response> sendsms_get(const KannelConfig& config, const std::string& target);

/// Kannel's sendsms interface as an SmsGateway: accepted when Kannel answers 200/202 with
/// "0: Accepted for delivery" or "3: Queued for later delivery".
class KannelGateway final : public SmsGateway {
 public:
  explicit KannelGateway(KannelConfig config) : config_(std::move(config)) {}
  Result<std::string> send(const OutboxMessage& m) override;

 private:
  KannelConfig config_;
};

/// Registers GET/POST /v1/sms/mo and GET /v1/sms/dlr on router (the MO listener's router).
/// on_queued is called after an MO message was handled (it may have queued an answer).
void install_mo_routes(http::Router& router, Service& service, std::string secret, std::function<void()> on_queued);

}  // namespace otac::backend::sms
