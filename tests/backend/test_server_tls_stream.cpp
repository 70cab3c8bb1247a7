// The server's TLS stream (backend/server/tls_stream.hpp) in process: the real stream on a
// loopback socket, against a blocking OpenSSL client, with a certificate from the backend's
// own CA code. What the server tests cannot see from outside: the deadline's meaning, how
// the ends of a connection read, and how a write of several buffers or of a megabyte goes out.
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include <array>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "pki.hpp"
#include "tls_stream.hpp"

namespace otac::backend::http {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;
using Error = boost::system::error_code;

/// An io_context running on its own thread, a listener on 127.0.0.1 and the server's TLS
/// context (a fresh CA and a server certificate for 127.0.0.1).
class Rig {
 public:
  Rig() {
    auto ca = pki::make_ca("tls stream test CA", 30);
    REQUIRE(ca);
    auto leaf = pki::issue_server(*ca, "127.0.0.1", {}, {"127.0.0.1"}, 30);
    REQUIRE(leaf);
    ctx_.use_certificate_chain(asio::buffer(leaf->cert_pem));
    ctx_.use_private_key(asio::buffer(leaf->key_pem), asio::ssl::context::pem);
    acceptor_.open(tcp::v4());
    acceptor_.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    acceptor_.listen();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~Rig() {
    // The stream is the loop's: it goes there, before the loop stops.
    std::promise<void> gone;
    asio::post(ioc_, [&] {
      stream_.reset();
      gone.set_value();
    });
    gone.get_future().wait_for(std::chrono::seconds(10));
    close_client();
    guard_.reset();
    ioc_.stop();
    thread_.join();
  }
  Rig(const Rig&) = delete;
  Rig& operator=(const Rig&) = delete;

  /// Connects a client, accepts it into a TlsStream and runs both handshakes.
  void connect() {
    std::promise<Error> accepted;
    acceptor_.async_accept([&](Error ec, tcp::socket s) {
      if (!ec) stream_ = std::make_unique<TlsStream>(std::move(s), ctx_);
      if (ec) return accepted.set_value(ec);
      stream_->expires_after(std::chrono::seconds(10));
      stream_->async_handshake([&](Error e) { accepted.set_value(e); });
    });
    client_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(client_fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(acceptor_.local_endpoint().port());
    REQUIRE(::connect(client_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    client_ctx_.reset(SSL_CTX_new(TLS_client_method()));
    client_.reset(SSL_new(client_ctx_.get()));
    SSL_set_fd(client_.get(), client_fd_);
    REQUIRE(SSL_connect(client_.get()) == 1);
    REQUIRE(wait(accepted) == Error{});
  }

  /// Runs `start(done)` on the loop; the value it hands to `done`, waited for at most 10 s.
  template <class T, class Start>
  T on_loop(Start start) {
    std::promise<T> p;
    asio::post(ioc_, [&] { start([&](T v) { p.set_value(std::move(v)); }); });
    return wait(p);
  }

  TlsStream& stream() { return *stream_; }
  SSL* client() { return client_.get(); }
  int client_fd() const { return client_fd_; }
  /// Closes the client's socket as it is, with no close_notify.
  void close_client() {
    if (client_fd_ >= 0) ::close(client_fd_);
    client_fd_ = -1;
  }
  /// Plaintext the client reads in one SSL_read (one record at most), "" at the end.
  std::string client_read_once() {
    char buf[65536];
    const int n = SSL_read(client_.get(), buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }

 private:
  template <class T>
  static T wait(std::promise<T>& p) {
    auto f = p.get_future();
    REQUIRE(f.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    return f.get();
  }
  struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
  };
  struct CtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
  };

  asio::io_context ioc_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard_{ioc_.get_executor()};
  asio::ssl::context ctx_{asio::ssl::context::tls_server};
  tcp::acceptor acceptor_{ioc_};
  std::unique_ptr<TlsStream> stream_;
  std::thread thread_;
  int client_fd_ = -1;
  std::unique_ptr<SSL_CTX, CtxFree> client_ctx_;
  std::unique_ptr<SSL, SslFree> client_;

};

using Done = std::pair<Error, std::size_t>;

TEST_CASE("tls stream: a deadline that passes between operations closes nothing, one that passes during a read ends it",
          "[server][tls]") {
  Rig rig;
  rig.connect();
  // A deadline of 100 ms with no operation pending (an authorization waiting for its commit):
  // 300 ms later the answer is still written.
  rig.on_loop<int>([&](auto done) {
    rig.stream().expires_after(milliseconds(100));
    done(0);
  });
  std::this_thread::sleep_for(milliseconds(300));
  static const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  const Done wrote = rig.on_loop<Done>([&](auto done) {
    rig.stream().expires_after(std::chrono::seconds(5));
    rig.stream().async_write_some(asio::buffer(answer), [done](Error ec, std::size_t n) { done({ec, n}); });
  });
  CHECK(wrote.first == Error{});
  CHECK(wrote.second == answer.size());
  CHECK(rig.client_read_once() == answer);
  // A read under a 200 ms deadline from a peer that sends nothing: beast's timeout, and the
  // socket is closed.
  const auto started = std::chrono::steady_clock::now();
  std::array<char, 64> buf{};
  const Done read = rig.on_loop<Done>([&](auto done) {
    rig.stream().expires_after(milliseconds(200));
    rig.stream().async_read_some(asio::buffer(buf), [done](Error ec, std::size_t n) { done({ec, n}); });
  });
  CHECK(read.first == boost::beast::error::timeout);
  CHECK(std::chrono::steady_clock::now() - started >= milliseconds(150));
  CHECK(rig.on_loop<bool>([&](auto done) { done(rig.stream().socket().is_open()); }) == false);
}

TEST_CASE("tls stream: the peer's close_notify reads as eof, shutdown sends ours and waits for the peer's",
          "[server][tls]") {
  Rig rig;
  rig.connect();
  std::array<char, 64> buf{};
  // Data, then the client's close_notify.
  REQUIRE(SSL_write(rig.client(), "ping", 4) == 4);
  const Done first = rig.on_loop<Done>([&](auto done) {
    rig.stream().async_read_some(asio::buffer(buf), [done](Error ec, std::size_t n) { done({ec, n}); });
  });
  CHECK(first.first == Error{});
  CHECK(std::string(buf.data(), first.second) == "ping");
  // The server sends its close_notify first; the client sees it as the end, then answers.
  std::promise<Error> shut;
  auto shut_done = shut.get_future();
  rig.on_loop<int>([&](auto done) {
    rig.stream().async_shutdown([&](Error ec) { shut.set_value(ec); });
    done(0);
  });
  char c = 0;
  CHECK(SSL_read(rig.client(), &c, 1) == 0);
  CHECK(SSL_get_error(rig.client(), 0) == SSL_ERROR_ZERO_RETURN);
  CHECK(SSL_shutdown(rig.client()) == 1);  // ours sent, theirs received
  REQUIRE(shut_done.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  CHECK(shut_done.get() == Error{});
}

TEST_CASE("tls stream: a connection cut without close_notify reads as truncated, and a read of nothing returns at once",
          "[server][tls]") {
  Rig rig;
  rig.connect();
  std::array<char, 64> buf{};
  const Done empty = rig.on_loop<Done>([&](auto done) {
    rig.stream().async_read_some(asio::buffer(buf.data(), 0), [done](Error ec, std::size_t n) { done({ec, n}); });
  });
  CHECK(empty.first == Error{});
  CHECK(empty.second == 0);
  // Close without close_notify. The client first takes the bytes waiting for it (TLS 1.3
  // session tickets), which would otherwise make the kernel reset the connection instead of
  // ending it (that reads as connection_reset, which Session treats the same way).
  char raw[4096];
  for (int i = 0; i < 20 && ::recv(rig.client_fd(), raw, sizeof raw, MSG_DONTWAIT) != 0; ++i) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  rig.close_client();
  const Done cut = rig.on_loop<Done>([&](auto done) {
    rig.stream().async_read_some(asio::buffer(buf), [done](Error ec, std::size_t n) { done({ec, n}); });
  });
  CHECK(cut.first == asio::ssl::error::stream_truncated);
  CHECK(cut.second == 0);
}

TEST_CASE("tls stream: several buffers go out as one record, and a megabyte arrives whole through a slow reader",
          "[server][tls]") {
  Rig rig;
  rig.connect();
  // Beast hands a response over as header and body buffers: one record, one SSL_read.
  static const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", body = "{}";
  const std::array<asio::const_buffer, 2> parts{asio::buffer(head), asio::buffer(body)};
  const Done two = rig.on_loop<Done>([&](auto done) {
    rig.stream().async_write_some(parts, [done](Error ec, std::size_t n) { done({ec, n}); });
  });
  CHECK(two.first == Error{});
  CHECK(two.second == head.size() + body.size());
  CHECK(rig.client_read_once() == head + body);
  // 1 MiB of a known pattern, written with asio::async_write over the stream's partial
  // writes, while the client reads 16 KiB every few milliseconds.
  std::string big(1u << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  std::promise<Done> wrote;
  auto wrote_done = wrote.get_future();
  rig.on_loop<int>([&](auto done) {
    rig.stream().expires_after(std::chrono::seconds(20));
    asio::async_write(rig.stream(), asio::buffer(big), [&](Error ec, std::size_t n) { wrote.set_value({ec, n}); });
    done(0);
  });
  std::string got;
  for (int i = 0; i < 10000 && got.size() < big.size(); ++i) {
    if (i % 8 == 0) std::this_thread::sleep_for(milliseconds(2));
    const std::string piece = rig.client_read_once();
    if (piece.empty()) break;
    got += piece;
  }
  REQUIRE(wrote_done.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
  const Done all = wrote_done.get();
  CHECK(all.first == Error{});
  CHECK(all.second == big.size());
  CHECK(got.size() == big.size());
  CHECK(got == big);
}

}  // namespace
}  // namespace otac::backend::http
