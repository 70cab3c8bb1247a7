#include "https_client.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

namespace otac::backend::client {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

Result<void> parse_https_url(std::string_view url, std::string& host, std::uint16_t& port) {
  constexpr std::string_view scheme = "https://";
  if (url.substr(0, scheme.size()) != scheme) return make_error(Errc::bad_value, "URL must start with https://");
  std::string_view hp = url.substr(scheme.size());
  if (!hp.empty() && hp.back() == '/') hp.remove_suffix(1);
  std::size_t colon = hp.rfind(':');
  if (!hp.empty() && hp[0] == '[') {
    const std::size_t close = hp.find(']');
    if (close == std::string_view::npos) return make_error(Errc::bad_value, "URL has an unterminated [IPv6] host");
    host = std::string(hp.substr(1, close - 1));
    colon = close + 1 < hp.size() && hp[close + 1] == ':' ? close + 1 : std::string_view::npos;
  } else {
    host = std::string(hp.substr(0, colon));
  }
  if (host.empty()) return make_error(Errc::bad_value, "URL has no host");
  port = 443;
  if (colon != std::string_view::npos) {
    const std::string_view p = hp.substr(colon + 1);
    unsigned v = 0;
    if (p.empty() || p.size() > 5) return make_error(Errc::bad_value, "URL port must be 1 to 65535");
    for (const char ch : p) {
      if (ch < '0' || ch > '9') return make_error(Errc::bad_value, "URL port must be a number");
      v = v * 10 + static_cast<unsigned>(ch - '0');
    }
    if (v == 0 || v > 65535) return make_error(Errc::bad_value, "URL port must be 1 to 65535");
    port = static_cast<std::uint16_t>(v);
  }
  return {};
}

Result<Reply> request(const ClientConfig& c, bhttp::verb method, const std::string& target, const std::string& body) {
  asio::io_context ioc;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  try {
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    ctx.load_verify_file(c.ca.string());
    ctx.set_verify_mode(asio::ssl::verify_peer);
    if (!c.cert.empty()) {
      ctx.use_certificate_chain_file(c.cert.string());
      ctx.use_private_key_file(c.key.string(), asio::ssl::context::pem);
    }
  } catch (const std::exception& e) {
    return make_error(Errc::io, std::string("cannot load TLS files (") + c.ca.string() +
                                    (c.cert.empty() ? "" : ", " + c.cert.string() + ", " + c.key.string()) + "): " + e.what());
  }
  beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
  beast::error_code ec;
  (void)asio::ip::make_address(c.host, ec);  // only: is it an IP literal?
  X509_VERIFY_PARAM* param = SSL_get0_param(stream.native_handle());
  if (!ec) {
    X509_VERIFY_PARAM_set1_ip_asc(param, c.host.c_str());
  } else {
    X509_VERIFY_PARAM_set1_host(param, c.host.c_str(), 0);
    SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(c.host.c_str()));  // SSL_set_tlsext_host_name without its C cast
  }
  asio::ip::tcp::resolver resolver(ioc);
  auto eps = resolver.resolve(c.host, std::to_string(c.port), ec);
  if (ec) return make_error(Errc::io, "cannot resolve " + c.host + ": " + ec.message());

  bhttp::request<bhttp::string_body> req{method, target, 11};
  req.set(bhttp::field::host, c.host);
  req.set(bhttp::field::user_agent, "otac-client");
  if (!c.bearer.empty()) req.set(bhttp::field::authorization, "Bearer " + c.bearer);
  if (!body.empty()) {
    req.set(bhttp::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();
  req.keep_alive(false);
  beast::flat_buffer buf;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(16 * 1024 * 1024);
  beast::error_code result = asio::error::timed_out;
  std::string stage = "connect";
  beast::get_lowest_layer(stream).expires_after(c.timeout);
  beast::get_lowest_layer(stream).async_connect(eps, [&](beast::error_code e1, const asio::ip::tcp::endpoint&) {
    if (e1) { result = e1; return; }
    stage = "TLS handshake";
    stream.async_handshake(asio::ssl::stream_base::client, [&](beast::error_code e2) {
      if (e2) { result = e2; return; }
      stage = "request";
      bhttp::async_write(stream, req, [&](beast::error_code e3, std::size_t) {
        if (e3) { result = e3; return; }
        stage = "response";
        bhttp::async_read(stream, buf, parser, [&](beast::error_code e4, std::size_t) { result = e4; });
      });
    });
  });
  ioc.run_for(c.timeout + std::chrono::seconds(1));
  if (result) {
    return make_error(Errc::io, "https://" + c.host + ":" + std::to_string(c.port) + target.substr(0, target.find('?')) +
                                    ": " + stage + " failed: " + result.message());
  }
  auto res = parser.release();
  return Reply{res.result_int(), std::move(res.body())};
}

}  // namespace otac::backend::client
