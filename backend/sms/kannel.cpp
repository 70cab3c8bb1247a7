#include "kannel.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <charconv>
#include <ctime>

#include "log.hpp"
#include "otac/common/secret.hpp"
#include "server.hpp"

namespace otac::backend::sms {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

Result<void> parse_http_url(std::string_view url, std::string& host, std::uint16_t& port, std::string& path) {
  constexpr std::string_view scheme = "http://";
  if (url.substr(0, scheme.size()) != scheme) return make_error(Errc::bad_value, "must start with http://");
  std::string_view rest = url.substr(scheme.size());
  const std::size_t slash = rest.find('/');
  const std::string_view hp = rest.substr(0, slash);
  path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (!http::parse_host_port(hp, host, port)) {
    host = std::string(hp);
    port = 80;
  }
  if (host.empty()) return make_error(Errc::bad_value, "has no host");
  return {};
}

std::string sendsms_target(const KannelConfig& c, const OutboxMessage& m) {
  auto str = [](ByteView b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); };
  std::string t = c.path;
  t += "?username=" + percent_encode(c.user);
  t += "&password=" + percent_encode(c.pass);
  t += "&from=" + percent_encode(c.from);
  t += "&to=" + percent_encode(m.to);
  if (!m.udh.empty()) {
    // Kannel's udh parameter is the whole header including the UDHL byte.
    Bytes udh;
    udh.push_back(static_cast<std::uint8_t>(m.udh.size()));
    append(udh, m.udh);
    t += "&udh=" + percent_encode(str(udh));
  }
  t += "&text=" + percent_encode(str(m.payload));
  // coding=1: 8-bit data; mclass=2: class 2 (SIM specific); alt-dcs=1: use the F_ group of
  // TS 23.038, so DCS = F6 rather than 16; pid=127 (7F): SIM data download.
  t += "&coding=1&mclass=2&alt-dcs=1&pid=127";
  if (!c.smsc_id.empty()) t += "&smsc=" + percent_encode(c.smsc_id);
  if (!c.dlr_url_prefix.empty()) {
    // Kannel replaces %d (report type) and %A (SMSC reply) when it calls the URL.
    t += "&dlr-mask=31&dlr-url=" + percent_encode(c.dlr_url_prefix + "&id=" + std::to_string(m.id) + "&type=%d&reply=%A");
  }
  return t;
}

std::chrono::seconds backoff(const KannelConfig& c, std::uint32_t attempts) {
  std::int64_t d = c.retry_base.count();
  for (std::uint32_t i = 0; i < attempts && d < c.retry_max.count(); ++i) d *= 2;
  return std::chrono::seconds(std::min<std::int64_t>(d, c.retry_max.count()));
}

Result<std::pair<unsigned, std::string>> http_get(const std::string& host, std::uint16_t port, const std::string& target,
                                                  std::chrono::milliseconds timeout) {
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  beast::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) return make_error(Errc::bad_value, "gateway host '" + host + "' is not an IP address");
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, target, 11};
  req.set(bhttp::field::host, host + ":" + std::to_string(port));
  req.set(bhttp::field::user_agent, "otac-backend");
  req.set(bhttp::field::connection, "close");
  beast::flat_buffer buf;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64 * 1024);
  beast::error_code result = asio::error::timed_out;
  stream.expires_after(timeout);
  stream.async_connect(asio::ip::tcp::endpoint(addr, port), [&](beast::error_code e1) {
    if (e1) { result = e1; return; }
    bhttp::async_write(stream, req, [&](beast::error_code e2, std::size_t) {
      if (e2) { result = e2; return; }
      bhttp::async_read(stream, buf, parser, [&](beast::error_code e3, std::size_t) { result = e3; });
    });
  });
  ioc.run_for(timeout + std::chrono::seconds(1));
  if (result) return make_error(Errc::io, "gateway " + host + ":" + std::to_string(port) + ": " + result.message());
  auto res = parser.release();
  return std::make_pair(res.result_int(), std::move(res.body()));
}

KannelSender::KannelSender(Service& service, KannelConfig config) : service_(service), config_(std::move(config)) {}

KannelSender::~KannelSender() { stop(); }

void KannelSender::start() {
  thread_ = std::jthread([this](std::stop_token st) { run(st); });
}

void KannelSender::stop() {
  thread_.request_stop();  // also ends the wait in run()
  if (thread_.joinable()) thread_.join();
}

void KannelSender::wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

std::uint32_t KannelSender::drain_once() { return drain(std::stop_token{}); }

std::uint32_t KannelSender::drain(const std::stop_token& stop) {
  auto due = service_.next_due(config_.batch);
  if (!due) {
    log::error("sms_outbox_failed", {{"reason", due.error().message}});
    return 0;
  }
  std::uint32_t accepted = 0;
  for (const auto& m : *due) {
    if (stop.stop_requested()) break;
    auto r = http_get(config_.host, config_.port, sendsms_target(config_, m),
                      std::chrono::duration_cast<std::chrono::milliseconds>(config_.timeout));
    std::string reply;
    bool ok = false;
    if (r) {
      reply = "HTTP " + std::to_string(r->first) + ": " + r->second.substr(0, 200);
      while (!reply.empty() && (reply.back() == '\n' || reply.back() == '\r')) reply.pop_back();
      // Kannel: 202 "0: Accepted for delivery" or "3: Queued for later delivery".
      ok = (r->first == 200 || r->first == 202) && (r->second.rfind("0:", 0) == 0 || r->second.rfind("3:", 0) == 0);
    } else {
      reply = r.error().message;
    }
    if (ok) {
      if (auto s = service_.mark_sent(m.id, reply); !s) {
        log::error("sms_mark_sent_failed", {{"id", std::to_string(m.id)}, {"reason", s.error().message}});
      }
      ++accepted;
      log::info("sms_sent", {{"id", std::to_string(m.id)}, {"to", m.to}, {"attempt", std::to_string(m.attempts + 1)},
                             {"bytes", std::to_string(m.payload.size())}, {"reply", reply}});
    } else {
      const auto delay = backoff(config_, m.attempts);
      const UnixTime retry_at = static_cast<UnixTime>(std::time(nullptr)) + delay.count();
      if (auto s = service_.mark_failed(m.id, reply, retry_at); !s) {
        log::error("sms_mark_failed_failed", {{"id", std::to_string(m.id)}, {"reason", s.error().message}});
      }
      log::warn("sms_retry", {{"id", std::to_string(m.id)}, {"to", m.to}, {"attempt", std::to_string(m.attempts + 1)},
                              {"retry_in_s", std::to_string(delay.count())}, {"reply", reply}});
    }
  }
  return accepted;
}

void KannelSender::run(const std::stop_token& stop) {
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

namespace {

Bytes bytes_of(const std::string& s) { return Bytes(s.begin(), s.end()); }

}  // namespace

void install_mo_routes(http::Router& router, Service& service, std::string secret, std::function<void()> on_queued) {
  auto check = [secret](const http::Request& req, const http::RequestContext& ctx) -> std::optional<http::Response> {
    auto it = ctx.query.find("secret");
    if (it == ctx.query.end() || secret.empty() || !ct_equal(as_bytes(it->second), as_bytes(secret)))
      return http::error_response(req, http::Status::forbidden, "bad_secret", "missing or wrong secret in the URL");
    return std::nullopt;
  };
  auto mo = [&service, check, on_queued](const http::Request& req, http::RequestContext& ctx) -> http::Response {
    if (auto e = check(req, ctx)) return *e;
    MoSms m;
    auto get = [&](const char* k) -> std::string {
      auto it = ctx.query.find(k);
      return it == ctx.query.end() ? std::string() : it->second;
    };
    m.from = get("from");
    m.to = get("to");
    const Bytes udh = bytes_of(get("udh"));
    m.data = bytes_of(get("data"));
    if (!udh.empty()) {
      // Kannel's %u is the whole UDH including its length byte.
      if (udh[0] != udh.size() - 1)
        return http::error_response(req, http::Status::bad_request, "bad_udh", "udh length byte does not match the header");
      m.udh.assign(udh.begin() + 1, udh.end());
    }
    if (m.data.empty()) return http::error_response(req, http::Status::bad_request, "no_data", "MO message has no data");
    ctx.log["from"] = m.from;
    ctx.log["bytes"] = std::to_string(m.data.size());
    auto r = service.handle_mo_sms(m);
    if (on_queued) on_queued();
    if (!r) {
      ctx.log["mo_error"] = r.error().message;
      // Kannel only logs our answer; the error is in our log. Never send an SMS reply.
      return http::text_response(req, http::Status::ok, "");
    }
    return http::text_response(req, http::Status::ok, "");
  };
  router.add(http::Verb::get, "/v1/sms/mo", mo);
  router.add(http::Verb::post, "/v1/sms/mo", mo);
  router.add(http::Verb::get, "/v1/sms/dlr", [&service, check](const http::Request& req, http::RequestContext& ctx) {
    if (auto e = check(req, ctx)) return *e;
    auto id_it = ctx.query.find("id");
    auto type_it = ctx.query.find("type");
    std::int64_t id = 0;
    int type = 0;
    if (id_it == ctx.query.end() ||
        std::from_chars(id_it->second.data(), id_it->second.data() + id_it->second.size(), id).ec != std::errc() ||
        type_it == ctx.query.end() ||
        std::from_chars(type_it->second.data(), type_it->second.data() + type_it->second.size(), type).ec != std::errc())
      return http::error_response(req, http::Status::bad_request, "bad_dlr", "id and type must be integers");
    auto rep = ctx.query.find("reply");
    const std::string text = "type " + std::to_string(type) + (rep == ctx.query.end() ? "" : " " + rep->second);
    // Kannel DLR types: 1 delivered, 2 undelivered, 4 buffered, 8 SMSC accepted, 16 SMSC rejected.
    auto r = service.record_delivery_report(id, text, type == 2 || type == 16);
    ctx.log["sms_id"] = std::to_string(id);
    ctx.log["dlr_type"] = std::to_string(type);
    if (!r) return http::service_error(req, r.error());
    return http::text_response(req, http::Status::ok, "");
  });
}

}  // namespace otac::backend::sms
