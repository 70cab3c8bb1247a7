#include "otac/net/http_client.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace otac::net {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using ms = std::chrono::milliseconds;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

namespace {

// A host given as an IP literal needs no resolver and is checked as an address in the certificate.
std::optional<asio::ip::address> ip_literal(const std::string& host) {
  beast::error_code ec;
  auto a = asio::ip::make_address(host, ec);
  if (ec) return std::nullopt;
  return a;
}

// getaddrinfo(3) cannot be cancelled, and Asio's resolver joins its thread when the
// io_context goes away. So the lookup runs on a detached thread that shares its result
// with the caller; a caller that stops waiting leaves the thread to finish on its own
// (the C library's resolver timeouts bound it).
struct Lookup {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  int rc = 0;
  std::vector<tcp::endpoint> endpoints;
};

Result<std::vector<tcp::endpoint>> resolve(const std::string& host, std::uint16_t port, ms limit) {
  if (auto a = ip_literal(host)) return std::vector<tcp::endpoint>{tcp::endpoint(*a, port)};
  auto lookup = std::make_shared<Lookup>();
  std::thread([lookup, host, port] {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* list = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list);
    std::vector<tcp::endpoint> eps;
    for (const addrinfo* ai = list; rc == 0 && ai != nullptr; ai = ai->ai_next) {
      tcp::endpoint ep;
      if (ai->ai_addrlen <= ep.capacity()) {
        std::memcpy(ep.data(), ai->ai_addr, ai->ai_addrlen);
        ep.resize(ai->ai_addrlen);
        eps.push_back(ep);
      }
    }
    if (list) ::freeaddrinfo(list);
    {
      std::lock_guard lock(lookup->mu);
      lookup->rc = rc;
      lookup->endpoints = std::move(eps);
      lookup->done = true;
    }
    lookup->cv.notify_all();
  }).detach();
  std::unique_lock lock(lookup->mu);
  if (!lookup->cv.wait_for(lock, limit, [&] { return lookup->done; }))
    return make_error(Errc::timeout, "cannot resolve " + host + " within " + std::to_string(limit.count()) +
                                         " ms (is the name and the resolver configuration right?)");
  if (lookup->rc != 0)
    return make_error(Errc::io, "cannot resolve " + host + " (" + ::gai_strerror(lookup->rc) + ")");
  if (lookup->endpoints.empty()) return make_error(Errc::io, "cannot resolve " + host + " (no address)");
  return std::move(lookup->endpoints);
}

struct SessionFree {
  void operator()(SSL_SESSION* s) const noexcept { SSL_SESSION_free(s); }
};

bool is_timeout(const beast::error_code& ec) { return ec == beast::error::timeout || ec == asio::error::timed_out; }

}  // namespace

struct HttpClient::Impl {
  ClientOptions opt;
  std::optional<asio::ip::address> literal;
  std::unique_ptr<asio::io_context> ioc = std::make_unique<asio::io_context>();
  ssl::context ctx{ssl::context::tls_client};
  // Exactly one of the two is engaged while connected (tls chooses which).
  std::optional<beast::tcp_stream> plain;
  std::optional<TlsStream> secure;
  std::unique_ptr<SSL_SESSION, SessionFree> session;  // the last resumable TLS session
  beast::flat_buffer buffer;
  bool connected = false;
  int opened = 0;
  int resumed = 0;

  std::string where() const {
    const bool v6 = literal && literal->is_v6();
    return (v6 ? "[" + opt.host + "]" : opt.host) + ":" + std::to_string(opt.port);
  }

  beast::tcp_stream& tcp_layer() { return secure ? beast::get_lowest_layer(*secure) : *plain; }

  // Runs the queued asynchronous work. Each socket step carries its own expiry (tcp_stream);
  // run_for is the backstop. Work that outlives the backstop is cancelled by closing the
  // socket; if even that does not end it, the io_context goes, with its pending handlers
  // (destroyed without being called, so none touches the caller's finished stack frame).
  void run(ms limit) {
    ioc->restart();
    ioc->run_for(limit + ms(200));
    if (ioc->stopped()) return;
    if (plain || secure) {
      beast::error_code ec;
      tcp_layer().socket().close(ec);
    }
    ioc->restart();
    ioc->run_for(ms(500));
    if (!ioc->stopped()) {
      plain.reset();
      secure.reset();
      connected = false;
      ioc = std::make_unique<asio::io_context>();
    }
  }

  void close() {
    // A connection that completed its handshake ends as a quiet shutdown: freeing an SSL
    // object that is not shut down marks its session not resumable, and the session is what
    // the next connection resumes. (HTTP framing, not close_notify, delimits our answers.)
    if (secure && connected) SSL_set_shutdown(secure->native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    if (plain || secure) {
      beast::error_code ec;
      tcp_layer().socket().shutdown(tcp::socket::shutdown_both, ec);
      tcp_layer().socket().close(ec);
    }
    plain.reset();
    secure.reset();
    buffer.clear();
    connected = false;
  }

  // True when the server has closed the idle connection (its FIN or a reset is pending). Bytes
  // it may have sent meanwhile (a TLS session ticket) do not count; only the hang-up does.
  bool peer_closed() {
    if (!plain && !secure) return true;
    pollfd p{tcp_layer().socket().native_handle(), POLLIN | POLLRDHUP, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
  }

  // SNI and the name (or address) the server certificate must carry; every call checked.
  Result<void> expect_peer(SSL* s) {
    if (literal) {
      if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), opt.host.c_str()) != 1)
        return make_error(Errc::crypto, "cannot set the expected IP address " + opt.host);
      return {};
    }
    // SSL_set_tlsext_host_name is a macro with a C cast; this is its expansion.
    if (SSL_ctrl(s, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(opt.host.c_str())) != 1)
      return make_error(Errc::crypto, "cannot set the TLS server name (SNI) " + opt.host);
    SSL_set_hostflags(s, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(s, opt.host.c_str()) != 1)
      return make_error(Errc::crypto, "cannot set the expected host name " + opt.host);
    return {};
  }

  Result<void> tcp_connect(const std::vector<tcp::endpoint>& endpoints) {
    tcp_layer().expires_after(opt.connect_timeout);
    beast::error_code ec = asio::error::timed_out;
    tcp_layer().async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    run(opt.connect_timeout);
    if (ec) {
      close();
      return make_error(is_timeout(ec) ? Errc::timeout : Errc::io,
                        "cannot connect to " + where() +
                            (is_timeout(ec) ? " within " + std::to_string(opt.connect_timeout.count()) + " ms"
                                            : " (" + ec.message() + ")"));
    }
    beast::error_code ignored;
    tcp_layer().socket().set_option(tcp::no_delay(true), ignored);  // latency only; not fatal
    return {};
  }

  Result<void> handshake() {
    SSL* s = secure->native_handle();
    if (session && SSL_set_session(s, session.get()) != 1) session.reset();  // then a full handshake
    tcp_layer().expires_after(opt.handshake_timeout);
    beast::error_code ec = asio::error::timed_out;
    secure->async_handshake(ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
    run(opt.handshake_timeout);
    const long verify = SSL_get_verify_result(s);
    if (!ec && verify == X509_V_OK && SSL_get0_peer_certificate(s) != nullptr) {
      if (SSL_session_reused(s) == 1) ++resumed;
      return {};
    }
    std::string why = ec ? ec.message() : "the server certificate was not verified";
    if (verify != X509_V_OK)
      why += std::string("; server certificate: ") + X509_verify_cert_error_string(verify) + " (is " +
             opt.ca_file.string() + " the server's CA, and does its certificate name " + opt.host + "?)";
    const bool timed_out = is_timeout(ec);
    close();
    session.reset();
    if (timed_out)
      return make_error(Errc::timeout, "TLS handshake with " + where() + " did not finish within " +
                                           std::to_string(opt.handshake_timeout.count()) + " ms");
    return make_error(Errc::crypto, "TLS handshake with " + where() + " failed: " + why);
  }

  Result<void> connect() {
    close();
    auto endpoints = resolve(opt.host, opt.port, opt.resolve_timeout);
    if (!endpoints) return endpoints.error();
    if (opt.tls) {
      secure.emplace(*ioc, ctx);
      if (auto e = expect_peer(secure->native_handle()); !e) {
        close();
        return e;
      }
    } else {
      plain.emplace(*ioc);
    }
    ++opened;
    if (auto c = tcp_connect(*endpoints); !c) return c;
    if (opt.tls) {
      if (auto h = handshake(); !h) return h;
    }
    connected = true;
    return {};
  }

  template <class Stream>
  beast::error_code write(Stream& stream, http::request<http::string_body>& req, ms limit) {
    tcp_layer().expires_after(limit);
    beast::error_code ec = asio::error::timed_out;
    http::async_write(stream, req, [&](beast::error_code e, std::size_t) { ec = e; });
    run(limit);
    return ec;
  }

  template <class Stream>
  beast::error_code read(Stream& stream, http::response_parser<http::string_body>& parser, ms limit, bool& read_any) {
    tcp_layer().expires_after(limit);
    beast::error_code ec = asio::error::timed_out;
    http::async_read(stream, buffer, parser, [&](beast::error_code e, std::size_t n) {
      ec = e;
      read_any = n > 0;
    });
    run(limit);
    return ec;
  }

  // One request and its answer on the open connection. stale is set when the failure looks
  // like a keep-alive connection the server had already closed (worth one reconnect).
  Result<Response> exchange(http::request<http::string_body>& req, ms limit, bool& stale) {
    stale = false;
    http::response_parser<http::string_body> parser;
    parser.body_limit(opt.body_limit);
    parser.header_limit(16 * 1024);
    beast::error_code ec = secure ? write(*secure, req, limit) : write(*plain, req, limit);
    const char* step = "sending the request to";
    if (!ec) {
      bool read_any = false;
      ec = secure ? read(*secure, parser, limit, read_any) : read(*plain, parser, limit, read_any);
      step = "reading the answer from";
      stale = ec && !read_any &&
              (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
               ec == ssl::error::stream_truncated);
    } else {
      stale = ec == asio::error::broken_pipe || ec == asio::error::connection_reset;
    }
    if (ec && ec.category() == asio::error::get_ssl_category()) {
      // With TLS 1.3 the server checks our certificate after the handshake; its refusal
      // arrives as an alert on the first read.
      const std::string why = ec.message();
      close();
      return make_error(Errc::crypto, "TLS error from " + where() + ": " + why +
                                          " (does the server accept this client certificate?)");
    }
    if (ec) {
      const bool timed_out = is_timeout(ec);
      close();
      if (timed_out)
        return make_error(Errc::timeout, std::string(step) + " " + where() + " took longer than " +
                                             std::to_string(limit.count()) + " ms");
      return make_error(Errc::io, std::string("connection lost while ") + step + " " + where() + " (" + ec.message() + ")");
    }
    auto res = parser.release();
    remember_session();
    if (!res.keep_alive() || !opt.keep_alive) close();
    return Response{res.result_int(), std::move(res.body())};
  }

  // With TLS 1.3 the session tickets arrive after the handshake, so the session is taken
  // after a complete answer.
  void remember_session() {
    if (!secure) return;
    SSL_SESSION* s = SSL_get1_session(secure->native_handle());
    if (s != nullptr && SSL_SESSION_is_resumable(s) == 1) {
      session.reset(s);
    } else if (s != nullptr) {
      SSL_SESSION_free(s);
    }
  }

  http::request<http::string_body> make_request(http::verb method, std::string_view target, std::string_view body) const {
    http::request<http::string_body> req{method, beast::string_view(target.data(), target.size()), 11};
    req.set(http::field::host, where());
    req.set(http::field::user_agent, opt.user_agent);
    req.set(http::field::accept, "application/json");
    if (!opt.bearer.empty()) req.set(http::field::authorization, "Bearer " + opt.bearer);
    if (!body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = std::string(body);
    }
    req.keep_alive(opt.keep_alive);
    req.prepare_payload();
    return req;
  }
};

HttpClient::HttpClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpClient::~HttpClient() {
  if (impl_) impl_->close();
}

int HttpClient::connections_opened() const noexcept { return impl_->opened; }
int HttpClient::sessions_resumed() const noexcept { return impl_->resumed; }
std::string HttpClient::where() const { return impl_->where(); }

namespace {

// TLS 1.2 or later, the configured CA only (no system trust store, so a public CA cannot
// vouch for a fake server), and the client certificate if one is configured.
Result<void> configure_tls(ssl::context& ctx, const ClientOptions& o) {
  SSL_CTX* c = ctx.native_handle();
  if (SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1) return make_error(Errc::crypto, "cannot require TLS 1.2");
  if (o.ca_file.empty()) return make_error(Errc::bad_value, "HTTPS needs a CA file to verify the server");
  beast::error_code ec;
  ctx.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
  if (ec) return make_error(Errc::crypto, "cannot require server verification (" + ec.message() + ")");
  ctx.load_verify_file(o.ca_file.string(), ec);
  if (ec) return make_error(Errc::io, "cannot load the CA file " + o.ca_file.string() + " (" + ec.message() + ")");
  if (o.cert_file.empty()) return {};
  ctx.use_certificate_chain_file(o.cert_file.string(), ec);
  if (ec)
    return make_error(Errc::io, "cannot load the client certificate " + o.cert_file.string() + " (" + ec.message() + ")");
  ctx.use_private_key_file(o.key_file.string(), ssl::context::pem, ec);
  if (ec)
    return make_error(Errc::io, "cannot load the client key " + o.key_file.string() + " (" + ec.message() +
                                    "); it must be the unencrypted PEM key that matches " + o.cert_file.string());
  if (SSL_CTX_check_private_key(c) != 1)
    return make_error(Errc::crypto, "the client key " + o.key_file.string() + " does not match the certificate " +
                                         o.cert_file.string() + "; it must be the PEM key that matches " +
                                         o.cert_file.string());
  return {};
}

}  // namespace

Result<std::unique_ptr<HttpClient>> HttpClient::create(const ClientOptions& o) {
  if (o.host.empty()) return make_error(Errc::bad_value, "no server host to connect to");
  auto impl = std::make_unique<Impl>();
  impl->opt = o;
  impl->literal = ip_literal(o.host);
  if (o.tls) {
    if (auto t = configure_tls(impl->ctx, o); !t) return t.error();
  }
  return std::unique_ptr<HttpClient>(new HttpClient(std::move(impl)));  // private constructor
}

Result<Response> HttpClient::request(http::verb method, std::string_view target, std::string_view body, ms io_timeout) {
  auto& d = *impl_;
  const ms limit = io_timeout.count() > 0 ? io_timeout : d.opt.io_timeout;
  auto req = d.make_request(method, target, body);
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = d.connected;
    if (!d.connected) {
      if (auto c = d.connect(); !c) return c.error();
    }
    bool stale = false;
    auto r = d.exchange(req, limit, stale);
    if (r || !(stale && reused)) return r;
  }
  return make_error(Errc::io, "the connection to " + d.where() + " keeps closing");
}

Result<void> HttpClient::warm() {
  auto& d = *impl_;
  if (!d.opt.keep_alive) return {};
  if (d.connected && d.peer_closed()) d.close();
  if (d.connected) return {};
  return d.connect();
}

Result<Response> request_once(ClientOptions options, http::verb method, std::string_view target, std::string_view body) {
  options.keep_alive = false;
  auto client = HttpClient::create(options);
  if (!client) return client.error();
  return (*client)->request(method, target, body);
}

}  // namespace otac::net
