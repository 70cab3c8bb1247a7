// Hostile HTTP framing against the real otac-backend process, with no certificate and no
// token: what anyone who can open a TCP connection can send. Each request must get a 4xx or
// a closed connection, memory must stay bounded, and the server must keep serving.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <sstream>
#include <vector>
#include <string>
#include <thread>

#include "auth_throttle.hpp"
#include "server.hpp"
#include "server_fixture.hpp"

namespace otac::backend::test {
namespace {

using Verb = boost::beast::http::verb;
using Clock = std::chrono::steady_clock;

/// A connected loopback TCP socket (closed on destruction), from 127.0.0.1 or another
/// loopback source address (the per-source limits tell them apart).
class Tcp {
 public:
  /// `receive_buffer`: SO_RCVBUF before connecting (0: the kernel's default), for a peer
  /// whose window fills after a few answers.
  explicit Tcp(std::uint16_t port, const char* source = nullptr, int receive_buffer = 0)
      : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    if (receive_buffer > 0) {
      REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer) == 0);
    }
    const int one = 1;
    REQUIRE(::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    if (source) {
      sockaddr_in local{};
      local.sin_family = AF_INET;
      REQUIRE(::inet_pton(AF_INET, source, &local.sin_addr) == 1);
      REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) == 0);
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~Tcp() { ::close(fd_); }
  Tcp(const Tcp&) = delete;
  Tcp& operator=(const Tcp&) = delete;
  int fd() const { return fd_; }
  /// True once the server has closed the connection (EOF or reset), waiting up to `limit`.
  bool closed_by_peer(std::chrono::milliseconds limit) const {
    pollfd p{fd_, POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, MSG_DONTWAIT) <= 0;
  }

 private:
  int fd_;
};

/// A TLS client connection without a client certificate (the server's CA is not checked:
/// the point is what an anonymous peer can send).
class Tls {
 public:
  explicit Tls(std::uint16_t port, const char* source = nullptr)
      : tcp_(port, source), ctx_(SSL_CTX_new(TLS_client_method()), SSL_CTX_free) {
    REQUIRE(ctx_);
    ssl_.reset(SSL_new(ctx_.get()));
    REQUIRE(ssl_);
    SSL_set_fd(ssl_.get(), tcp_.fd());
    REQUIRE(SSL_connect(ssl_.get()) == 1);
  }
  /// Writes data until all is written or the peer closes (a server may refuse a request
  /// before its end); returns the bytes written.
  std::size_t send(std::string_view data) {
    std::size_t off = 0;
    for (int guard = 0; off < data.size() && guard < 1'000'000; ++guard) {
      const int n = SSL_write(ssl_.get(), data.data() + off, static_cast<int>(std::min<std::size_t>(data.size() - off, 16384)));
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    return off;
  }
  /// Reads until the peer closes or `limit` passes; returns what arrived.
  std::string read_all(std::chrono::milliseconds limit) {
    std::string out;
    const auto end = Clock::now() + limit;
    char buf[4096];
    while (Clock::now() < end) {
      pollfd p{tcp_.fd(), POLLIN, 0};
      if (SSL_pending(ssl_.get()) == 0 && ::poll(&p, 1, 50) <= 0) continue;
      const int n = SSL_read(ssl_.get(), buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }

 private:
  struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
  };
  Tcp tcp_;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx_;
  std::unique_ptr<SSL, SslFree> ssl_;
};

/// Writes as much of data as the peer takes; returns the bytes written before the peer closed.
std::size_t send_until_closed(int fd, std::string_view data) {
  std::size_t off = 0;
  for (int guard = 0; off < data.size() && guard < 1'000'000; ++guard) {
    const ssize_t n = ::send(fd, data.data() + off, std::min<std::size_t>(data.size() - off, 65536), MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  return off;
}

/// A TLS client whose records are sealed into memory and opened from memory, so that the
/// test decides how their bytes cross the socket: a byte at a time, several records in one
/// send, or nothing read for a while.
class TlsBytes {
 public:
  explicit TlsBytes(std::uint16_t port, int receive_buffer = 0)
      : tcp_(port, nullptr, receive_buffer), ctx_(SSL_CTX_new(TLS_client_method()), SSL_CTX_free) {
    REQUIRE(ctx_);
    ssl_.reset(SSL_new(ctx_.get()));
    REQUIRE(ssl_);
    in_ = BIO_new(BIO_s_mem());
    out_ = BIO_new(BIO_s_mem());
    REQUIRE((in_ && out_));
    SSL_set_bio(ssl_.get(), in_, out_);  // the SSL object owns both
    SSL_set_connect_state(ssl_.get());
    for (int round = 0; round < 200 && SSL_do_handshake(ssl_.get()) != 1; ++round) {
      send_all(take());
      pull(std::chrono::milliseconds(50));
    }
    REQUIRE(SSL_is_init_finished(ssl_.get()));
    send_all(take());
  }
  int fd() const { return tcp_.fd(); }
  /// The record(s) that carry `plain`, not yet sent.
  std::string seal(std::string_view plain) {
    std::size_t written = 0;
    REQUIRE(SSL_write_ex(ssl_.get(), plain.data(), plain.size(), &written) == 1);
    REQUIRE(written == plain.size());
    return take();
  }
  /// Sends bytes (blocking).
  void send_all(std::string_view bytes) const { REQUIRE(send_until_closed(tcp_.fd(), bytes) == bytes.size()); }
  /// Moves what the socket has (waiting up to `limit`) into the TLS input; false at its end.
  bool pull(std::chrono::milliseconds limit) {
    pollfd p{tcp_.fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) return true;
    char buf[16384];
    const ssize_t n = ::recv(tcp_.fd(), buf, sizeof buf, 0);
    if (n <= 0) return false;
    REQUIRE(BIO_write(in_, buf, static_cast<int>(n)) == n);
    return true;
  }
  /// Plaintext opened from what was pulled so far.
  std::string open() {
    std::string out;
    char buf[4096];
    std::size_t n = 0;
    while (SSL_read_ex(ssl_.get(), buf, sizeof buf, &n) == 1) out.append(buf, n);
    return out;
  }

 private:
  std::string take() {
    std::string bytes(static_cast<std::size_t>(BIO_pending(out_)), '\0');
    if (!bytes.empty()) REQUIRE(BIO_read(out_, bytes.data(), static_cast<int>(bytes.size())) == static_cast<int>(bytes.size()));
    return bytes;
  }
  struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
  };
  Tcp tcp_;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx_;
  std::unique_ptr<SSL, SslFree> ssl_;
  BIO* in_ = nullptr;
  BIO* out_ = nullptr;
};

/// The status codes of the HTTP/1.1 responses in `text`, in order.
std::vector<int> statuses(const std::string& text) {
  std::vector<int> out;
  for (std::size_t at = text.find("HTTP/1.1 "); at != std::string::npos && at + 12 <= text.size();
       at = text.find("HTTP/1.1 ", at + 1)) {
    out.push_back(std::stoi(text.substr(at + 9, 3)));
  }
  return out;
}

/// Reads until the peer closes or `limit` passes.
std::string read_all(int fd, std::chrono::milliseconds limit) {
  std::string out;
  const auto end = Clock::now() + limit;
  char buf[4096];
  while (Clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

/// The status code of an HTTP/1.1 response ("HTTP/1.1 431 ..."), or 0.
int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

/// Resident set size of a process in KiB, from /proc.
long rss_kib(pid_t pid) {
  const std::string status = slurp("/proc/" + std::to_string(pid) + "/status");
  const auto at = status.find("VmRSS:");
  if (at == std::string::npos) return -1;
  return std::stol(status.substr(at + 6));
}

const std::string kChunkedHead =
    "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n";

std::string trailer_attack(std::size_t value_bytes) {
  return kChunkedHead + "0\r\nX-Pad: " + std::string(value_bytes, 'a') + "\r\n\r\n";
}

/// CPU seconds (user + system) a process has used, from /proc.
double cpu_seconds(pid_t pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  std::istringstream in(stat.substr(stat.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// The value of an unlabelled counter in /metrics text (-1 if absent).
long long metric(const std::string& text, const std::string& name) {
  const auto at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(text.substr(at + name.size() + 2));
}

}  // namespace

TEST_CASE("the connection's request framing limits, without a socket (the fuzz target's entry point)", "[server][hostile]") {
  const otac::backend::http::Limits l;  // the defaults a backend runs with
  CHECK(otac::backend::http::check_request_bytes("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", l) == 200);
  CHECK(otac::backend::http::check_request_bytes(kChunkedHead + "2;a=b\r\n{}\r\n0\r\nX-T: 1\r\n\r\n", l) == 200);
  CHECK(otac::backend::http::check_request_bytes("GET /healthz HTTP/1.1\r\nHo", l) == 0);  // incomplete
  // A trailer field over 64 KiB: Beast's field table throws std::length_error for it, so it
  // must never reach the parser whole.
  CHECK(otac::backend::http::check_request_bytes(trailer_attack(70 * 1024), l) == 431);
  CHECK(otac::backend::http::check_request_bytes(trailer_attack(20 * 1024), l) == 431);  // larger than the buffer
  CHECK(otac::backend::http::check_request_bytes(kChunkedHead + "2;e=" + std::string(300, 'x') + "\r\n{}\r\n0\r\n\r\n", l) == 431);
  CHECK(otac::backend::http::check_request_bytes(kChunkedHead + "2;e=" + std::string(1u << 20, 'x'), l) == 431);
  std::string many = kChunkedHead;
  for (int i = 0; i < 2000; ++i) many += "2;e=" + std::string(200, 'y') + "\r\nab\r\n";
  CHECK(otac::backend::http::check_request_bytes(many + "0\r\n\r\n", l) == 413);
  CHECK(otac::backend::http::check_request_bytes("POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", l) == 413);
  CHECK(otac::backend::http::check_request_bytes("GET / HTTP/1.1\r\nX: " + std::string(9000, 'h') + "\r\n\r\n", l) == 431);
  CHECK(otac::backend::http::check_request_bytes("GARBAGE\r\n\r\n", l) == 400);
}

TEST_CASE("hostile framing: a chunked trailer over 64 KiB gets 431 on both listeners and the server keeps serving",
          "[server][hostile]") {
  ::signal(SIGPIPE, SIG_IGN);  // the server may close while a write is under way
  Backend b;
  b.start();
  {
    INFO("HTTPS listener, no client certificate");
    Tls c(b.port);
    c.send(trailer_attack(70 * 1024));
    const std::string r = c.read_all(std::chrono::seconds(10));
    INFO(r.substr(0, 200));
    CHECK(status_of(r) == 431);
  }
  {
    INFO("Kannel listener (plain HTTP)");
    Tcp c(b.mo_port);
    send_until_closed(c.fd(), trailer_attack(70 * 1024));
    const std::string r = read_all(c.fd(), std::chrono::seconds(10));
    INFO(r.substr(0, 200));
    CHECK(status_of(r) == 431);
  }
  // Each network thread used to survive at most 1,000 such exceptions; 2,500 requests
  // would have left none. Every one is answered, and the server still serves.
  int answered = 0;
  for (int i = 0; i < 2500; ++i) {
    Tcp c(b.mo_port);
    send_until_closed(c.fd(), trailer_attack(70 * 1024));
    if (status_of(read_all(c.fd(), std::chrono::seconds(5))) != 431) break;  // keeps a failing run short
    ++answered;
  }
  CHECK(answered == 2500);
  auto h = Backend::call(b.client(), Verb::get, "/healthz");
  CHECK(h.status == 200);
  CHECK(h.body.find("\"io_threads\":2") != std::string::npos);
  const std::string m = Backend::call(b.client(), Verb::get, "/metrics").body;
  CHECK(m.find("otac_io_exceptions_total 0\n") != std::string::npos);
  CHECK(m.find("otac_io_threads_running 2\n") != std::string::npos);
  CHECK(b.log().find("io_thread_exception") == std::string::npos);
}

TEST_CASE("hostile framing: unbounded chunk extensions are cut off and memory stays bounded", "[server][hostile]") {
  Backend b;
  b.start();
  const long before = rss_kib(b.pid);
  REQUIRE(before > 0);
  // Two connections, each offering 64 MiB of one chunk's extension: the server must stop
  // reading long before the end (it used to buffer all of it).
  const std::string attack = kChunkedHead + "2;e=" + std::string(64u << 20, 'x');
  for (int i = 0; i < 2; ++i) {
    Tcp c(b.mo_port);
    const std::size_t taken = send_until_closed(c.fd(), attack);
    CHECK(taken < (16u << 20));  // socket buffers on both sides take a few MiB at most
    const std::string r = read_all(c.fd(), std::chrono::seconds(5));
    if (!r.empty()) CHECK(status_of(r) == 431);
  }
  // Many small chunks, each with a long extension: not one chunk header is too large, but
  // the request is, by its framing alone (the body is 2 bytes a chunk).
  std::string many = kChunkedHead;
  for (int i = 0; i < 2000; ++i) many += "2;e=" + std::string(200, 'y') + "\r\nab\r\n";
  many += "0\r\n\r\n";
  {
    Tcp c(b.mo_port);
    send_until_closed(c.fd(), many);
    const std::string r = read_all(c.fd(), std::chrono::seconds(5));
    INFO(r.substr(0, 200));
    CHECK(status_of(r) == 413);
  }
  // A normal chunked request with a short extension is still accepted.
  {
    Tcp c(b.mo_port);
    send_until_closed(c.fd(), "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b\r\nx\r\n0\r\n\r\n");
    CHECK(status_of(read_all(c.fd(), std::chrono::seconds(5))) != 431);
  }
  const long after = rss_kib(b.pid);
  INFO("RSS before " << before << " KiB, after " << after << " KiB");
  CHECK(after - before < 16 * 1024);
  CHECK(Backend::call(b.client(), Verb::get, "/healthz").status == 200);
  CHECK(Backend::call(b.client(), Verb::get, "/metrics").body.find("otac_requests_refused_total 0\n") == std::string::npos);
}

TEST_CASE("idle connections: unauthenticated ones are evicted for new ones, and a terminal gets in while they hold every slot",
          "[server][hostile]") {
  Backend b;
  b.start("listen = \"127.0.0.1:0\"\nmax_connections = 6\nmax_unauthenticated_connections = 3\nhandshake_timeout_seconds = 30\n");
  const auto [cert, key] = b.register_terminal("TERM0001");
  const auto terminal = b.terminal(cert, key);
  // Peers that connect and never start TLS, from another source address.
  std::vector<std::unique_ptr<Tcp>> idle;
  for (int i = 0; i < 20; ++i) idle.push_back(std::make_unique<Tcp>(b.port, "127.0.0.2"));
  int closed = 0;
  for (auto& c : idle) closed += c->closed_by_peer(std::chrono::milliseconds(300)) ? 1 : 0;
  CHECK(closed >= 17);  // at most max_unauthenticated_connections stay open
  // Idle peers keep coming between the terminal's requests; every request is served.
  int served = 0;
  for (int i = 0; i < 20; ++i) {
    for (int j = 0; j < 3; ++j) idle.push_back(std::make_unique<Tcp>(b.port, "127.0.0.2"));
    auto r = net::request_once(terminal, Verb::get, "/healthz");
    if (r && r->status == 200) ++served;
  }
  CHECK(served == 20);
  const std::string m = Backend::call(terminal, Verb::get, "/metrics").body;
  CHECK(metric(m, "otac_connections_evicted_total") >= 17);
}

TEST_CASE("one source cannot take the connection table, and silent peers are closed after the handshake timeout",
          "[server][hostile]") {
  Backend b;
  b.start("listen = \"127.0.0.1:0\"\nmax_connections_per_source = 4\nhandshake_timeout_seconds = 1\n");
  std::vector<std::unique_ptr<Tcp>> from3;
  for (int i = 0; i < 6; ++i) from3.push_back(std::make_unique<Tcp>(b.port, "127.0.0.3"));
  CHECK(from3[4]->closed_by_peer(std::chrono::milliseconds(500)));
  CHECK(from3[5]->closed_by_peer(std::chrono::milliseconds(500)));
  for (int i = 0; i < 4; ++i) CHECK_FALSE(from3[static_cast<std::size_t>(i)]->closed_by_peer(std::chrono::milliseconds(0)));
  // Other sources are not affected.
  CHECK(Backend::call(b.client(), Verb::get, "/healthz").status == 200);
  // The four that never start TLS are closed by the handshake timeout (1 s).
  for (int i = 0; i < 4; ++i) CHECK(from3[static_cast<std::size_t>(i)]->closed_by_peer(std::chrono::milliseconds(3000)));
  CHECK(metric(Backend::call(b.client(), Verb::get, "/metrics").body, "otac_connections_refused_total") == 2);
}

TEST_CASE("TLS records that arrive a byte at a time or several in one segment are each read whole",
          "[server][hostile][tls]") {
  Backend b;
  b.start();
  TlsBytes c(b.port);
  const std::string get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  // One request whose record crosses the socket one byte per segment (TCP_NODELAY): the
  // server sees partial records and must wait for the rest of each.
  const std::string sealed = c.seal(get);
  REQUIRE(sealed.size() > get.size());
  for (char byte : sealed) {
    c.send_all(std::string_view(&byte, 1));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::string got;
  for (int i = 0; i < 100 && statuses(got).empty() && c.pull(std::chrono::milliseconds(50)); ++i) got += c.open();
  CHECK(statuses(got) == std::vector<int>{200});
  // Three records of three requests (the second for a path that does not exist) in one send:
  // the server has them all after one read, and answers each, in order.
  got.clear();
  std::string three = c.seal(get);  // sealed in order: each record's MAC covers its sequence number
  three += c.seal("GET /no-such-path HTTP/1.1\r\nHost: x\r\n\r\n");
  three += c.seal(get);
  c.send_all(three);
  for (int i = 0; i < 100 && statuses(got).size() < 3 && c.pull(std::chrono::milliseconds(50)); ++i) got += c.open();
  CHECK(statuses(got) == std::vector<int>{200, 404, 200});
}

TEST_CASE("a peer that pipelines 20,000 requests and stops reading: the server waits without spinning, then answers each in order",
          "[server][hostile][tls]") {
  Backend b;
  b.start();
  TlsBytes c(b.port, 4096);  // a small receive window
  const std::string ok = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string missing = "GET /no-such-path HTTP/1.1\r\nHost: x\r\n\r\n";
  // About 5 MB of answers: more than the server's socket buffer can take (4 MiB at most on
  // Linux by default), so its writes must wait for the socket to be writable.
  constexpr int kRequests = 20000;
  std::string plain;
  std::vector<int> expected;
  for (int i = 0; i < kRequests; ++i) {
    const bool hit = i % 7 != 3;
    plain += hit ? ok : missing;
    expected.push_back(hit ? 200 : 404);
  }
  std::string wire;
  for (std::size_t at = 0; at < plain.size(); at += 16384) wire += c.seal(std::string_view(plain).substr(at, 16384));
  std::size_t sent = 0;
  const auto sending = Clock::now();
  while (sent < wire.size() && Clock::now() - sending < std::chrono::seconds(20)) {
    pollfd p{c.fd(), POLLOUT, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    const ssize_t n = ::send(c.fd(), wire.data() + sent, std::min<std::size_t>(wire.size() - sent, 65536), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) sent += static_cast<std::size_t>(n);
  }
  REQUIRE(sent == wire.size());
  // Nothing is read: the server fills the window and its socket buffer, then must sit idle
  // (no CPU tick in 200 ms) rather than retry its write in a loop. Bounded: 15 s.
  bool idle = false;
  double cpu = cpu_seconds(b.pid);
  for (int i = 0; i < 75 && !idle; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const double now = cpu_seconds(b.pid);
    idle = now - cpu < 0.015;
    cpu = now;
  }
  CHECK(idle);
  // Then every answer arrives, in order, within 30 s.
  std::string got;
  const auto reading = Clock::now();
  for (std::size_t answers = 0; answers < expected.size() && Clock::now() - reading < std::chrono::seconds(30);) {
    if (!c.pull(std::chrono::milliseconds(50))) break;
    got += c.open();
    answers = occurrences(got, "HTTP/1.1 ");
  }
  CHECK(statuses(got) == expected);
  CHECK(Backend::call(b.client(), Verb::get, "/healthz").status == 200);
}

TEST_CASE("out of file descriptors: the accept loop backs off instead of spinning, and recovers", "[server][hostile]") {
  Backend b;
  b.fd_limit = 128;  // soft and hard: the backend cannot raise it
  b.start();
  CHECK(b.log().find("fd_limit_low") != std::string::npos);  // max_connections 1024 > 128
  std::vector<std::unique_ptr<Tcp>> conns;
  for (int i = 0; i < 200; ++i) conns.push_back(std::make_unique<Tcp>(b.port));  // the backlog takes the rest
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const double cpu0 = cpu_seconds(b.pid);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const double cpu1 = cpu_seconds(b.pid);
  INFO("backend CPU while out of descriptors: " << (cpu1 - cpu0) << " s in 2 s");
  CHECK(cpu1 - cpu0 < 0.5);
  const std::string log = b.log();
  CHECK(occurrences(log, "accept_paused") >= 1);
  CHECK(occurrences(log, "accept_paused") <= 3);
  CHECK(occurrences(log, "accept_failed") <= 3);
  conns.clear();
  std::optional<net::Response> h;
  for (int i = 0; i < 50 && !(h && h->status == 200); ++i) {  // up to 5 s while the backlog drains
    auto r = net::request_once(b.client(), Verb::get, "/healthz");
    if (r) h = *r;
    else std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(h.has_value());
  CHECK(h->status == 200);
  CHECK(b.log().find("accept_resumed") != std::string::npos);
}

}  // namespace otac::backend::test

namespace otac::backend::test {
namespace {

// One request on a new TLS connection from a loopback source address: {status, response}.
std::pair<int, std::string> request_from(std::uint16_t port, const char* source, const std::string& head,
                                         const std::string& body = {}) {
  Tls t(port, source);
  t.send(head + "Host: 127.0.0.1\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
         body);
  std::string r = t.read_all(std::chrono::milliseconds(5000));
  return {status_of(r), r};
}

std::pair<int, std::string> bearer_from(std::uint16_t port, const char* source, const std::string& token) {
  return request_from(port, source, "GET /v1/admin/whoami HTTP/1.1\r\nAuthorization: Bearer " + token + "\r\n");
}

std::pair<int, std::string> console_sign_in_from(std::uint16_t port, const char* source, const std::string& token) {
  return request_from(port, source, "POST /console/api/session HTTP/1.1\r\nContent-Type: application/json\r\n",
                      R"({"token":")" + token + R"("})");
}

long retry_after_of(const std::string& response) {
  const auto at = response.find("\r\nRetry-After: ");
  if (at == std::string::npos) return -1;
  return std::stol(response.substr(at + 15));
}

}  // namespace

TEST_CASE("operator token guessing: a source is throttled with backoff, others are not, and it is counted and audited",
          "[server][hostile]") {
  Backend b;
  b.start();
  const std::string good = b.admin_token();
  const std::string wrong(good.size(), 'f');
  // Ten free failures, then the eleventh crosses the threshold.
  for (int i = 0; i < 11; ++i) {
    INFO(i);
    CHECK(bearer_from(b.port, "127.0.0.1", wrong).first == 401);
  }
  auto [st, r] = bearer_from(b.port, "127.0.0.1", wrong);
  CHECK(st == 429);
  CHECK(retry_after_of(r) == 1);
  // While throttled, even the right token is not checked from that source...
  CHECK(bearer_from(b.port, "127.0.0.1", good).first == 429);
  // ...but the right token from elsewhere works, and a wrong one there is only a 401.
  CHECK(bearer_from(b.port, "127.0.0.2", good).first == 200);
  CHECK(bearer_from(b.port, "127.0.0.2", wrong).first == 401);

  // Backoff: after the wait, one more failure blocks for twice as long.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  CHECK(bearer_from(b.port, "127.0.0.1", wrong).first == 401);
  std::tie(st, r) = bearer_from(b.port, "127.0.0.1", wrong);
  CHECK(st == 429);
  CHECK(retry_after_of(r) == 2);

  // The console's sign-in counts towards the same table, per source.
  for (int i = 0; i < 11; ++i) CHECK(console_sign_in_from(b.port, "127.0.0.3", wrong).first == 401);
  std::tie(st, r) = console_sign_in_from(b.port, "127.0.0.3", good);
  CHECK(st == 429);
  CHECK(retry_after_of(r) >= 1);
  CHECK(console_sign_in_from(b.port, "127.0.0.4", good).first == 200);

  auto m = Backend::call(b.client(), Verb::get, "/metrics");
  REQUIRE(m.status == 200);
  CHECK(metric(m.body, "otac_auth_failures_total") == 11 + 1 + 1 + 11);
  CHECK(metric(m.body, "otac_auth_throttled_total") == 4);
  CHECK(occurrences(b.log(), "operator_auth_throttled") == 2);
  // 127.0.0.1 is still blocked: read the audit log from another address.
  auto [audit_status, audit] =
      request_from(b.port, "127.0.0.2", "GET /v1/admin/audit?limit=1000 HTTP/1.1\r\nAuthorization: Bearer " + good + "\r\n");
  REQUIRE(audit_status == 200);
  CHECK(audit.find("source=127.0.0.1 via=bearer failures=11") != std::string::npos);
  CHECK(audit.find("source=127.0.0.3 via=console failures=11") != std::string::npos);
  CHECK(audit.find(wrong) == std::string::npos);  // no token in the audit log
  CHECK(b.log().find(wrong) == std::string::npos);
  CHECK(request_from(b.port, "127.0.0.2", "GET /v1/admin/audit/verify HTTP/1.1\r\nAuthorization: Bearer " + good + "\r\n")
            .first == 200);
}

TEST_CASE("operator token throttle: backoff doubles to a ceiling, quiet sources are forgotten, the table is bounded",
          "[server][throttle]") {
  using namespace std::chrono;
  steady_clock::time_point now{};
  http::ThrottleLimits lim;
  lim.free_failures = 3;
  lim.base = seconds(1);
  lim.max = seconds(10);
  lim.forget = seconds(100);
  lim.max_sources = 8;
  http::AuthThrottle t(lim, [&] { return now; });
  for (int i = 0; i < 3; ++i) CHECK_FALSE(t.failure("a").blocked);
  CHECK(t.retry_after("a") == 0);
  auto f = t.failure("a");
  CHECK(f.blocked);
  CHECK(f.crossed);
  CHECK(t.retry_after("a") == 1);
  CHECK(t.retry_after("b") == 0);
  std::uint32_t expected[] = {2, 4, 8, 10, 10};
  for (std::uint32_t e : expected) {
    auto g = t.failure("a");
    CHECK(g.blocked);
    CHECK_FALSE(g.crossed);  // audited once per crossing, not per failure
    CHECK(t.retry_after("a") == e);
  }
  now += seconds(10);
  CHECK(t.retry_after("a") == 0);
  now += seconds(100);  // quiet: starts afresh
  CHECK_FALSE(t.failure("a").blocked);
  // Bounded: 1000 sources never hold more than 8 entries, and a blocked source survives
  // a flood of new ones (others go first).
  for (int i = 0; i < 4; ++i) t.failure("blocked");
  REQUIRE(t.retry_after("blocked") > 0);
  for (int i = 0; i < 1000; ++i) t.failure("10.0.0." + std::to_string(i));
  CHECK(t.size() <= 8);
  CHECK(t.retry_after("blocked") > 0);
  CHECK(http::AuthThrottle::source_of("127.0.0.1:5555") == "127.0.0.1");
  CHECK(http::AuthThrottle::source_of("::1:5555") == "::1");
  CHECK(http::AuthThrottle::source_of("console") == "console");
}

}  // namespace otac::backend::test
