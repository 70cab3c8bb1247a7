#include "terminal/backend_link.hpp"

#include "terminal/backend_json.hpp"

namespace otac::terminal {

using Verb = boost::beast::http::verb;

net::ClientOptions backend_options(const Config& cfg) {
  net::ClientOptions o;
  o.host = cfg.backend_host;
  o.port = cfg.backend_port;
  o.ca_file = cfg.ca_file;
  o.cert_file = cfg.cert_file;
  o.key_file = cfg.key_file;
  o.user_agent = "otac-terminal";
  o.resolve_timeout = o.connect_timeout = o.handshake_timeout = std::chrono::milliseconds(cfg.connect_timeout_ms);
  o.io_timeout = std::chrono::milliseconds(cfg.backend_timeout_ms);
  o.body_limit = 64 * 1024;
  return o;
}

Result<std::string> backend_body(const Result<net::Response>& a) {
  if (!a) return a.error();
  if (a->status == 200) return a->body;
  const std::string msg = "backend answered HTTP " + std::to_string(a->status) + ": " + error_summary(a->body);
  if (a->status == 502 || a->status == 503 || a->status == 504) return make_error(Errc::io, msg);
  if (a->status == 409) return make_error(Errc::conflict, msg);
  return make_error(Errc::bad_value, msg);
}

Result<std::unique_ptr<BackendLink>> BackendLink::create(const Config& cfg) {
  auto http = net::HttpClient::create(backend_options(cfg));
  if (!http) return http.error();
  return std::unique_ptr<BackendLink>(
      new BackendLink(std::move(*http), std::chrono::milliseconds(cfg.backend_timeout_ms)));  // private constructor
}

Result<std::string> BackendLink::post(const std::string& target, const std::string& body) {
  return backend_body(http_->request(Verb::post, target, body, timeout_));
}

Result<std::string> BackendLink::poll(const std::string& txn, unsigned wait_s) {
  return backend_body(http_->request(Verb::get, "/v1/authorizations/" + txn + "?wait=" + std::to_string(wait_s), {},
                                     timeout_ + std::chrono::seconds(wait_s)));
}

}  // namespace otac::terminal
