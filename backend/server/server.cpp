#include "server.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <array>
#include <atomic>
#include <map>
#include <thread>
#include <type_traits>
#include <vector>

#include "log.hpp"
#include "otac/common/crypto.hpp"

namespace otac::backend::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;

namespace {

struct Shared {
  Limits limits;
  RequestMetrics* metrics = nullptr;
  asio::thread_pool* workers = nullptr;
  asio::thread_pool* slow = nullptr;
  std::atomic<std::uint32_t> connections{0};
  std::atomic<bool> stopping{false};
};

std::string x509_cn(X509* cert) {
  X509_NAME* name = X509_get_subject_name(cert);
  if (!name) return {};
  const int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return {};
  X509_NAME_ENTRY* e = X509_NAME_get_entry(name, idx);
  ASN1_STRING* s = X509_NAME_ENTRY_get_data(e);
  if (!s) return {};
  const unsigned char* p = ASN1_STRING_get0_data(s);
  const int len = ASN1_STRING_length(s);
  if (!p || len <= 0) return {};
  return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(len));
}

std::string x509_fingerprint(X509* cert) {
  const int len = i2d_X509(cert, nullptr);
  if (len <= 0) return {};
  Bytes der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  if (i2d_X509(cert, &p) != len) return {};
  return to_hex(crypto::sha256(der));
}

template <bool Tls>
class Session : public std::enable_shared_from_this<Session<Tls>> {
 public:
  using Stream = std::conditional_t<Tls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

  template <class... Args>
  Session(Shared& sh, const Router& router, tcp::socket&& socket, Args&&... args)
      : sh_(sh), router_(router), stream_(std::move(socket), std::forward<Args>(args)...) {
    beast::error_code ec;
    const auto ep = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  ~Session() { sh_.connections.fetch_sub(1, std::memory_order_relaxed); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start() {
    if constexpr (Tls) {
      beast::get_lowest_layer(stream_).expires_after(sh_.limits.read_timeout);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) { self->on_handshake(ec); });
    } else {
      do_read(sh_.limits.read_timeout);
    }
  }

 private:
  void on_handshake(beast::error_code ec) {
    if (ec) {
      // Failed handshakes are routine (scanners, wrong CA, refused client certificate).
      log::info("tls_handshake_failed", {{"remote", remote_}, {"reason", ec.message()}});
      return;
    }
    if constexpr (Tls) {
      SSL* ssl = stream_.native_handle();
      X509* peer = SSL_get0_peer_certificate(ssl);
      if (peer && SSL_get_verify_result(ssl) == X509_V_OK) {
        cn_ = x509_cn(peer);
        fingerprint_ = x509_fingerprint(peer);
      }
    }
    do_read(sh_.limits.read_timeout);
  }

  void do_read(std::chrono::seconds timeout) {
    parser_.emplace();
    parser_->body_limit(sh_.limits.max_body);
    parser_->header_limit(sh_.limits.max_header);
    beast::get_lowest_layer(stream_).expires_after(timeout);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ||
        ec == beast::error::timeout || ec == asio::error::operation_aborted || ec == asio::error::connection_reset) {
      return do_close();
    }
    started_ = std::chrono::steady_clock::now();
    ctx_ = RequestContext{};
    ctx_.remote = remote_;
    ctx_.tls = Tls;
    // For errors found while reading, answer (and log) with whatever header was read.
    Request dummy;
    dummy.version(11);
    dummy.keep_alive(false);
    // The request line is stored before the header is complete (and before body_limit fires).
    if (parser_->get().method() != bhttp::verb::unknown) {
      dummy.method(parser_->get().method());
      dummy.target(parser_->get().target());
      std::map<std::string, std::string> ignored;
      if (!split_target(dummy.target(), ctx_.path, ignored)) ctx_.path = "-";
    }
    if (ec == bhttp::error::body_limit) {
      // Read and drop a declared body of moderate size first: closing with unread data
      // makes TCP send a reset, and the client would never see the 413.
      std::uint64_t remaining = 0;
      const auto cl = parser_->content_length();
      if (cl && *cl <= kMaxDrain) remaining = *cl > buffer_.size() ? *cl - buffer_.size() : 0;
      buffer_.consume(buffer_.size());
      too_large_ = std::move(dummy);
      return drain(remaining);
    }
    if (ec == bhttp::error::header_limit) {
      return reply_error(dummy, Status::request_header_fields_too_large, "header_too_large", "request header too large");
    }
    if (ec) return reply_error(dummy, Status::bad_request, "bad_http", "malformed HTTP request: " + ec.message());

    req_ = parser_->release();
    if (!cn_.empty()) ctx_.client_cn = cn_;
    ctx_.client_fingerprint = fingerprint_;
    if (!split_target(req_.target(), ctx_.path, ctx_.query)) {
      req_.keep_alive(false);
      return reply_error(req_, Status::bad_request, "bad_target", "malformed request target (path or query escapes)");
    }
    if (sh_.stopping.load()) {
      req_.keep_alive(false);
      return reply_error(req_, Status::service_unavailable, "stopping", "the server is shutting down; retry later");
    }
    bool allowed = true;
    RouteOptions opt;
    RequestContext probe;
    router_.match(req_.method(), ctx_.path, probe, &allowed, &opt);
    asio::thread_pool& pool = opt.slow ? *sh_.slow : *sh_.workers;
    asio::post(pool, [self = this->shared_from_this()] {
      Response res = self->router_.dispatch(self->req_, self->ctx_);
      auto& st = self->stream_;
      asio::post(st.get_executor(), [self, r = std::move(res)]() mutable { self->write(std::move(r)); });
    });
  }

  static constexpr std::uint64_t kMaxDrain = 8u << 20;

  void drain(std::uint64_t remaining) {
    if (remaining == 0) {
      return reply_error(too_large_, Status::payload_too_large, "body_too_large",
                         "request body exceeds " + std::to_string(sh_.limits.max_body) + " bytes");
    }
    beast::get_lowest_layer(stream_).expires_after(sh_.limits.read_timeout);
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, scratch_.size()));
    stream_.async_read_some(asio::buffer(scratch_.data(), want),
                            [self = this->shared_from_this(), remaining](beast::error_code ec, std::size_t n) {
                              if (ec) return;  // peer gone or timed out: nothing to answer
                              self->drain(remaining - n);
                            });
  }

  void reply_error(const Request& req, Status status, std::string_view code, const std::string& message) {
    if (ctx_.path.empty()) ctx_.path = "-";
    req_ = req;
    Response r = error_response(req, status, code, message);
    r.keep_alive(false);
    write(std::move(r));
  }

  void write(Response res) {
    res_ = std::move(res);
    res_.set(bhttp::field::server, "otac-backend");
    if constexpr (Tls) res_.set(bhttp::field::strict_transport_security, "max-age=31536000");
    beast::get_lowest_layer(stream_).expires_after(sh_.limits.write_timeout);
    bhttp::async_write(stream_, res_, [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
      self->on_write(ec);
    });
  }

  void on_write(beast::error_code ec) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    const unsigned status = res_.result_int();
    sh_.metrics->observe(req_.method_string(), status, secs);
    log::Fields f{{"method", std::string(req_.method_string())},
                  {"path", ctx_.path},
                  {"status", std::to_string(status)},
                  {"ms", std::to_string(static_cast<long long>(secs * 1000.0 + 0.5))},
                  {"remote", remote_}};
    if (!cn_.empty()) f.emplace_back("client_cn", cn_);
    for (const auto& [k, v] : ctx_.log) f.emplace_back(k, v);
    if (ec) f.emplace_back("write_error", ec.message());
    log::info("request", f);
    if (ec) return;
    if (!res_.keep_alive() || sh_.stopping.load()) return do_close();
    do_read(sh_.limits.idle_timeout);
  }

  void do_close() {
    if constexpr (Tls) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    } else {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    }
  }

  Shared& sh_;
  const Router& router_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  Request req_;
  RequestContext ctx_;
  Response res_;
  std::string remote_ = "-";
  std::string cn_;
  std::string fingerprint_;
  std::chrono::steady_clock::time_point started_{};
  Request too_large_;
  std::array<char, 16384> scratch_{};
};

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(asio::io_context& ioc, Shared& sh, const Router& router, asio::ssl::context* ssl)
      : ioc_(ioc), sh_(sh), router_(router), ssl_(ssl), acceptor_(asio::make_strand(ioc)) {}

  Result<std::uint16_t> open(const std::string& host, std::uint16_t port) {
    beast::error_code ec;
    const auto addr = asio::ip::make_address(host, ec);
    if (ec) return make_error(Errc::bad_value, "listen address '" + host + "' is not an IP address");
    const tcp::endpoint ep{addr, port};
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return make_error(Errc::io, "cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
    return acceptor_.local_endpoint().port();
  }

  void accept() {
    acceptor_.async_accept(asio::make_strand(ioc_), [self = shared_from_this()](beast::error_code ec, tcp::socket s) {
      self->on_accept(ec, std::move(s));
    });
  }

  void close() {
    asio::post(acceptor_.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->acceptor_.close(ec);
    });
  }

 private:
  void on_accept(beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      if (sh_.connections.fetch_add(1, std::memory_order_relaxed) >= sh_.limits.max_connections) {
        sh_.connections.fetch_sub(1, std::memory_order_relaxed);
        sh_.metrics->refused_connection();
        beast::error_code ignored;
        socket.close(ignored);
      } else if (ssl_) {
        std::make_shared<Session<true>>(sh_, router_, std::move(socket), *ssl_)->start();
      } else {
        std::make_shared<Session<false>>(sh_, router_, std::move(socket))->start();
      }
    } else {
      log::warn("accept_failed", {{"reason", ec.message()}});
    }
    accept();
  }

  asio::io_context& ioc_;
  Shared& sh_;
  const Router& router_;
  asio::ssl::context* ssl_;
  tcp::acceptor acceptor_;
};

}  // namespace

struct Server::Impl {
  asio::io_context ioc;
  Shared shared;
  asio::thread_pool workers;
  asio::thread_pool slow;
  std::vector<std::unique_ptr<asio::ssl::context>> contexts;
  std::vector<std::shared_ptr<Listener>> listeners;
  std::vector<std::thread> threads;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  bool stopped = false;

  Impl(Limits l, RequestMetrics& m)
      : ioc(static_cast<int>(l.io_threads)), workers(l.workers), slow(l.slow_workers) {
    shared.limits = l;
    shared.metrics = &m;
    shared.workers = &workers;
    shared.slow = &slow;
  }
};

Server::Server(Limits limits, RequestMetrics& metrics) : impl_(std::make_unique<Impl>(limits, metrics)) {}

Server::~Server() { stop(); }

Result<std::uint16_t> Server::listen_tls(const std::string& host, std::uint16_t port, const TlsFiles& files,
                                         const Router& router) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  try {
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                     asio::ssl::context::single_dh_use | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX* native = ctx->native_handle();
    SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
    // TLS 1.2: forward-secret AEAD suites only (TLS 1.3 suites are all modern; OpenSSL's default).
    if (SSL_CTX_set_cipher_list(native,
                                "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                                "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
                                "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305") != 1) {
      return make_error(Errc::crypto, "OpenSSL rejected the TLS 1.2 cipher list");
    }
    ctx->use_certificate_chain_file(files.cert.string());
    ctx->use_private_key_file(files.key.string(), asio::ssl::context::pem);
    ctx->load_verify_file(files.client_ca.string());
    // Client certificates are requested and verified against our CA but not required here:
    // operators use bearer tokens; terminal endpoints refuse requests without a verified one.
    ctx->set_verify_mode(asio::ssl::verify_peer);
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(files.client_ca.string().c_str());
    if (names) SSL_CTX_set_client_CA_list(native, names);
    static const unsigned char sid[] = "otac-backend";
    SSL_CTX_set_session_id_context(native, sid, sizeof sid - 1);
  } catch (const std::exception& e) {
    return make_error(Errc::crypto, std::string("cannot set up TLS (") + files.cert.string() + ", " +
                                        files.key.string() + ", " + files.client_ca.string() + "): " + e.what());
  }
  auto l = std::make_shared<Listener>(impl_->ioc, impl_->shared, router, ctx.get());
  auto p = l->open(host, port);
  if (!p) return p;
  impl_->contexts.push_back(std::move(ctx));
  impl_->listeners.push_back(l);
  return p;
}

Result<std::uint16_t> Server::listen_plain(const std::string& host, std::uint16_t port, const Router& router) {
  auto l = std::make_shared<Listener>(impl_->ioc, impl_->shared, router, nullptr);
  auto p = l->open(host, port);
  if (!p) return p;
  impl_->listeners.push_back(l);
  return p;
}

void Server::start() {
  impl_->guard.emplace(impl_->ioc.get_executor());
  for (auto& l : impl_->listeners) l->accept();
  for (unsigned i = 0; i < std::max(1u, impl_->shared.limits.io_threads); ++i) {
    impl_->threads.emplace_back([this] {
      // Bounded by the io_context's life: run() returns when stop() stops it.
      for (int restarts = 0; restarts < 1000; ++restarts) {
        try {
          impl_->ioc.run();
          return;
        } catch (const std::exception& e) {
          log::error("io_thread_exception", {{"what", e.what()}});
        }
      }
    });
  }
}

void Server::stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  impl_->shared.stopping = true;
  for (auto& l : impl_->listeners) l->close();
  // Let handlers in progress finish and their answers go out, then stop the network.
  impl_->workers.join();
  impl_->slow.join();
  impl_->guard.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads) {
    if (t.joinable()) t.join();
  }
}

bool parse_host_port(std::string_view s, std::string& host, std::uint16_t& port) {
  std::size_t colon;
  if (!s.empty() && s[0] == '[') {
    const std::size_t close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') return false;
    host = std::string(s.substr(1, close - 1));
    colon = close + 1;
  } else {
    colon = s.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    host = std::string(s.substr(0, colon));
  }
  const std::string_view p = s.substr(colon + 1);
  if (p.empty() || p.size() > 5) return false;
  unsigned v = 0;
  for (const char c : p) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 65535) return false;
  port = static_cast<std::uint16_t>(v);
  return true;
}

}  // namespace otac::backend::http
