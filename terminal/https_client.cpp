#include "terminal/https_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <optional>

#include "terminal/backend_json.hpp"

namespace otac::terminal {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Stream = beast::ssl_stream<beast::tcp_stream>;

struct HttpsClient::Impl {
  HttpsOptions opt;
  net::io_context ioc;
  ssl::context ctx{ssl::context::tls_client};
  std::optional<Stream> stream;
  beast::flat_buffer buffer;
  bool connected = false;
  int opened = 0;

  std::string where() const { return opt.host + ":" + std::to_string(opt.port); }

  // Runs the queued asynchronous work. Socket operations carry their own expiry (tcp_stream);
  // run_for is the backstop for the resolver.
  void run(std::chrono::milliseconds limit) {
    ioc.restart();
    ioc.run_for(limit + std::chrono::milliseconds(200));
    if (!ioc.stopped()) {
      if (stream) beast::get_lowest_layer(*stream).close();
      ioc.restart();
      ioc.run_for(std::chrono::milliseconds(500));
    }
  }

  void close() {
    if (stream) {
      beast::error_code ec;
      beast::get_lowest_layer(*stream).socket().shutdown(tcp::socket::shutdown_both, ec);
      beast::get_lowest_layer(*stream).close();
    }
    stream.reset();
    buffer.clear();
    connected = false;
  }

  Result<void> connect() {
    close();
    stream.emplace(ioc, ctx);
    SSL* s = stream->native_handle();
    X509_VERIFY_PARAM* param = SSL_get0_param(s);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    beast::error_code aec;
    net::ip::make_address_v4(opt.host, aec);
    if (!aec) {
      if (X509_VERIFY_PARAM_set1_ip_asc(param, opt.host.c_str()) != 1)
        return make_error(Errc::crypto, "cannot set the expected IP address " + opt.host);
    } else {
      if (X509_VERIFY_PARAM_set1_host(param, opt.host.c_str(), 0) != 1 ||
          SSL_ctrl(s, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                   const_cast<char*>(opt.host.c_str())) != 1)  // SSL_set_tlsext_host_name without its C cast
        return make_error(Errc::crypto, "cannot set the expected host name " + opt.host);
    }
    const auto deadline = std::chrono::steady_clock::now() + opt.connect_timeout;
    tcp::resolver resolver(ioc);
    beast::error_code ec = net::error::timed_out;
    tcp::resolver::results_type endpoints;
    resolver.async_resolve(opt.host, std::to_string(opt.port),
                           [&](beast::error_code e, tcp::resolver::results_type r) { ec = e; endpoints = std::move(r); });
    run(opt.connect_timeout);
    if (ec) return make_error(ec == net::error::timed_out ? Errc::timeout : Errc::io,
                              "backend unreachable: cannot resolve " + opt.host + " (" + ec.message() + ")");
    auto left = [&] {
      return std::max(std::chrono::milliseconds(1),
                      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
    };
    auto& tcp_layer = beast::get_lowest_layer(*stream);
    tcp_layer.expires_after(left());
    ec = net::error::timed_out;
    tcp_layer.async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    run(left());
    if (ec) {
      close();
      return make_error(ec == beast::error::timeout || ec == net::error::timed_out ? Errc::timeout : Errc::io,
                        "backend unreachable: cannot connect to " + where() + " (" + ec.message() + ")");
    }
    net::ip::tcp::no_delay nd(true);
    tcp_layer.socket().set_option(nd, aec);
    tcp_layer.expires_after(left());
    ec = net::error::timed_out;
    stream->async_handshake(ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
    run(left());
    if (ec) {
      const long verify = SSL_get_verify_result(stream->native_handle());
      std::string why = ec.message();
      if (verify != X509_V_OK)
        why += std::string("; server certificate: ") + X509_verify_cert_error_string(verify) +
               " (is ca_file the backend's CA, and does its certificate name " + opt.host + "?)";
      const bool timed_out = ec == beast::error::timeout;
      close();
      return make_error(timed_out ? Errc::timeout : Errc::crypto, "TLS handshake with " + where() + " failed: " + why);
    }
    connected = true;
    ++opened;
    return {};
  }

  // One request/answer on the open connection. stale is set when the failure looks like a
  // keep-alive connection the server had already closed (worth one reconnect).
  Result<HttpAnswer> exchange(http::request<http::string_body>& req, std::chrono::milliseconds timeout, bool& stale) {
    stale = false;
    auto& tcp_layer = beast::get_lowest_layer(*stream);
    tcp_layer.expires_after(timeout);
    beast::error_code ec = net::error::timed_out;
    bool wrote_any = false;
    http::async_write(*stream, req, [&](beast::error_code e, std::size_t n) { ec = e; wrote_any = n > 0; });
    run(timeout);
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024);
    parser.header_limit(16 * 1024);
    if (!ec) {
      ec = net::error::timed_out;
      bool read_any = false;
      http::async_read(*stream, buffer, parser, [&](beast::error_code e, std::size_t n) { ec = e; read_any = n > 0; });
      run(timeout);
      if (ec && !read_any && (ec == http::error::end_of_stream || ec == net::error::eof ||
                              ec == net::error::connection_reset || ec == ssl::error::stream_truncated))
        stale = true;
    } else if (ec == net::error::broken_pipe || ec == net::error::connection_reset) {
      stale = true;
    }
    (void)wrote_any;
    if (ec && ec.category() == net::error::get_ssl_category()) {
      // With TLS 1.3 the server checks our certificate after the handshake; its refusal
      // arrives as an alert on the first read.
      const std::string why = ec.message();
      close();
      return make_error(Errc::crypto, "TLS error from the backend " + where() + ": " + why +
                                          " (does the backend know this terminal's certificate?)");
    }
    if (ec) {
      const bool timed_out = ec == beast::error::timeout || ec == net::error::timed_out;
      close();
      return make_error(timed_out ? Errc::timeout : Errc::io,
                        (timed_out ? "backend did not answer within " + std::to_string(timeout.count()) + " ms ("
                                   : "connection to the backend lost (") + where() + ": " + ec.message() + ")");
    }
    auto res = parser.release();
    if (!res.keep_alive()) close();
    return HttpAnswer{static_cast<int>(res.result_int()), std::move(res.body())};
  }
};

HttpsClient::HttpsClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpsClient::~HttpsClient() {
  if (impl_) impl_->close();
}

int HttpsClient::connections_opened() const { return impl_->opened; }

Result<std::unique_ptr<HttpsClient>> HttpsClient::create(const HttpsOptions& o) {
  auto impl = std::make_unique<Impl>();
  impl->opt = o;
  auto& ctx = impl->ctx;
  SSL_CTX* c = ctx.native_handle();
  if (SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1) return make_error(Errc::crypto, "cannot require TLS 1.2");
  beast::error_code ec;
  ctx.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
  // Only the configured CA: no system trust store, so a public CA cannot vouch for a fake backend.
  ctx.load_verify_file(o.ca_file, ec);
  if (ec) return make_error(Errc::io, "cannot load the CA file " + o.ca_file + " (" + ec.message() + ")");
  ctx.use_certificate_chain_file(o.cert_file, ec);
  if (ec) return make_error(Errc::io, "cannot load the client certificate " + o.cert_file + " (" + ec.message() + ")");
  ctx.use_private_key_file(o.key_file, ssl::context::pem, ec);
  if (ec)
    return make_error(Errc::io, "cannot load the client key " + o.key_file + " (" + ec.message() +
                                    "); it must be the unencrypted PEM key that matches " + o.cert_file);
  if (SSL_CTX_check_private_key(c) != 1)
    return make_error(Errc::crypto, "the client key " + o.key_file + " does not match the certificate " + o.cert_file +
                                         "; it must be the PEM key that matches " + o.cert_file);
  return std::unique_ptr<HttpsClient>(new HttpsClient(std::move(impl)));  // private constructor
}

Result<HttpAnswer> HttpsClient::request(const std::string& method, const std::string& target, const std::string& body,
                                        std::chrono::milliseconds timeout) {
  auto& d = *impl_;
  http::request<http::string_body> req{method == "POST" ? http::verb::post : http::verb::get, target, 11};
  req.set(http::field::host, d.opt.host + ":" + std::to_string(d.opt.port));
  req.set(http::field::user_agent, "otac-terminal");
  req.set(http::field::accept, "application/json");
  req.keep_alive(true);
  if (method == "POST") {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = d.connected;
    if (!d.connected) {
      if (auto c = d.connect(); !c) return c.error();
    }
    bool stale = false;
    auto r = d.exchange(req, timeout, stale);
    if (r || !(stale && reused)) return r;
  }
  return make_error(Errc::io, "connection to the backend " + d.where() + " keeps closing");
}

Result<std::string> backend_body(const Result<HttpAnswer>& a) {
  if (!a) return a.error();
  if (a->status == 200) return a->body;
  const std::string msg = "backend answered HTTP " + std::to_string(a->status) + ": " + error_summary(a->body);
  if (a->status == 502 || a->status == 503 || a->status == 504) return make_error(Errc::io, msg);
  if (a->status == 409) return make_error(Errc::conflict, msg);
  return make_error(Errc::bad_value, msg);
}

}  // namespace otac::terminal
