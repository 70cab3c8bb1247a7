#include "kannel.hpp"

#include <charconv>

#include "otac/common/secret.hpp"
#include "otac/common/url.hpp"

namespace otac::backend::sms {

Result<void> set_sendsms_url(KannelConfig& config, std::string_view url) {
  auto u = parse_url(url);
  if (!u) return u.error();
  if (u->https) return make_error(Errc::bad_value, "Kannel's sendsms interface is plain HTTP: the URL must start with http://");
  if (u->target.find('?') != std::string::npos)
    return make_error(Errc::bad_value, "the sendsms URL takes no query: the backend adds the parameters");
  config.host = u->host;
  config.port = u->port;
  config.path = u->target;
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
    const std::string udh = std::string(1, static_cast<char>(m.udh.size())) + str(m.udh);
    t += "&udh=" + percent_encode(udh);
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

Result<net::Response> sendsms_get(const KannelConfig& config, const std::string& target) {
  net::ClientOptions o;
  o.tls = false;
  o.host = config.host;
  o.port = config.port;
  o.user_agent = "otac-backend";
  const auto limit = std::chrono::duration_cast<std::chrono::milliseconds>(config.timeout);
  o.resolve_timeout = o.connect_timeout = o.io_timeout = limit;
  o.body_limit = 64 * 1024;
  // A connection per message: a retried request on a reused connection could send an SMS twice.
  return net::request_once(o, boost::beast::http::verb::get, target);
}

Result<std::string> KannelGateway::send(const OutboxMessage& m) {
  auto r = sendsms_get(config_, sendsms_target(config_, m));
  if (!r) return r.error();
  std::string reply = "HTTP " + std::to_string(r->status) + ": " + r->body.substr(0, 200);
  while (!reply.empty() && (reply.back() == '\n' || reply.back() == '\r')) reply.pop_back();
  // Kannel: 202 "0: Accepted for delivery" or "3: Queued for later delivery".
  const bool ok = (r->status == 200 || r->status == 202) && (r->body.rfind("0:", 0) == 0 || r->body.rfind("3:", 0) == 0);
  if (!ok) return make_error(Errc::state, reply);  // refused: the pump retries later
  return reply;
}

namespace {

Bytes bytes_of(const std::string& s) { return Bytes(s.begin(), s.end()); }

// A failure that may pass: the store (a lock, a lost connection, a full disk) or the key token.
bool transient(Errc e) { return e == Errc::io || e == Errc::timeout || e == Errc::unavailable; }

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
      // Ours, not the message's (the store or the key token out for now): a 5xx, so smsbox
      // fetches the message again after http-queue-delay, up to http-request-retry times.
      // Nothing was committed, and a message that did commit is never answered this way.
      if (transient(r.error().code)) return http::service_error(req, ctx, r.error());
      // The message's own fault: fetching it again would fail the same way. Kannel only logs
      // our answer; the error is in our log. Never send an SMS reply.
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
    if (!r) {
      ctx.log["dlr_error"] = r.error().message;
      // A report for a message the outbox no longer has: smsbox would fetch it again in vain.
      // Anything else is a 4xx or 5xx (a transient failure 5xx: fetched again).
      if (r.error().code == Errc::not_found) return http::text_response(req, http::Status::ok, "");
      return http::service_error(req, ctx, r.error());
    }
    return http::text_response(req, http::Status::ok, "");
  });
}

}  // namespace otac::backend::sms
