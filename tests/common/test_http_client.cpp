// The one HTTP(S) client (common/net) against real servers on loopback: a small Beast TLS
// server in this test with certificates made by the openssl command line. What must be
// refused (a certificate for another host, an untrusted CA) is refused with an error that
// says why; what never answers, or cannot be resolved, fails within its configured bound.
#include <catch2/catch.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "otac/net/http_client.hpp"
#include "test_support.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using Verb = bhttp::verb;
using ms = std::chrono::milliseconds;
using otac::Errc;

int sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

// A CA and server certificates signed by it, made by the openssl command line (an
// independent implementation), in a temporary directory.
struct Pki {
  otac::test::TempDir dir;
  std::string path(const std::string& name) const { return (dir.path / name).string(); }

  void make_ca(const std::string& name) const {
    REQUIRE(sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=" + name +
               " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -keyout " +
               path(name + ".key") + " -out " + path(name + ".pem")) == 0);
  }
  // A server certificate for the subjectAltName san (as "DNS:localhost,IP:127.0.0.1"), signed by ca.
  void make_server(const std::string& name, const std::string& ca, const std::string& san) const {
    std::ofstream(path(name + ".ext")) << "subjectAltName=" << san << "\nextendedKeyUsage=serverAuth\n";
    REQUIRE(sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=" + name + " -keyout " +
               path(name + ".key") + " -out " + path(name + ".csr")) == 0);
    REQUIRE(sh("openssl x509 -req -days 1 -in " + path(name + ".csr") + " -CA " + path(ca + ".pem") + " -CAkey " +
               path(ca + ".key") + " -CAcreateserial -extfile " + path(name + ".ext") + " -out " + path(name + ".pem")) == 0);
  }
  Pki() {
    make_ca("ca");
    make_ca("other-ca");
    make_server("good", "ca", "DNS:localhost,IP:127.0.0.1,IP:::1");
    make_server("wrong-name", "ca", "DNS:wrong.example");
    make_server("untrusted", "other-ca", "DNS:localhost,IP:127.0.0.1");
  }
};

// A TLS (or plain) HTTP server on 127.0.0.1 port 0, run by one thread. It answers every
// request with 200 and the request's target as body, or (silent) accepts and never answers.
// What it saw is read on the main thread after stop(), so assertions stay there.
class TestServer {
 public:
  struct Options {
    std::string cert, key;   // empty: plain TCP
    bool silent = false;     // accept, then never read or answer
    bool close_after = false;  // "Connection: close" after each answer
    bool close_idle = false;   // keep-alive answers, then the connection is closed (an idle timeout)
  };

  explicit TestServer(Options o) : opt_(std::move(o)) {
    if (!opt_.cert.empty()) {
      ctx_.use_certificate_chain_file(opt_.cert);
      ctx_.use_private_key_file(opt_.key, asio::ssl::context::pem);
    }
    acceptor_.open(tcp::v4());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    acceptor_.listen();
    accept();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~TestServer() { stop(); }
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  void stop() {
    ioc_.stop();
    if (thread_.joinable()) thread_.join();
  }
  // Only after stop().
  int accepted() const { return accepted_; }
  const std::vector<std::string>& server_names() const { return sni_; }

 private:
  struct Conn {
    explicit Conn(tcp::socket s, asio::ssl::context& ctx) : tls(std::move(s), ctx) {}
    beast::ssl_stream<beast::tcp_stream> tls;
    beast::flat_buffer buf;
    bhttp::request<bhttp::string_body> req;
    bhttp::response<bhttp::string_body> res;
  };

  void accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket s) {
      if (ec) return;
      ++accepted_;
      auto& c = conns_.emplace_back(std::make_unique<Conn>(std::move(s), ctx_));
      if (!opt_.silent) {
        if (opt_.cert.empty()) {
          read(*c);
        } else {
          c->tls.async_handshake(asio::ssl::stream_base::server, [this, p = c.get()](beast::error_code e) {
            if (e) return;
            const char* name = SSL_get_servername(p->tls.native_handle(), TLSEXT_NAMETYPE_host_name);
            sni_.push_back(name ? name : "");
            read(*p);
          });
        }
      }
      accept();
    });
  }

  template <class F>
  void with_stream(Conn& c, F f) {
    if (opt_.cert.empty()) f(beast::get_lowest_layer(c.tls));
    else f(c.tls);
  }

  void read(Conn& c) {
    c.req = {};
    with_stream(c, [&](auto& s) {
      bhttp::async_read(s, c.buf, c.req, [this, p = &c](beast::error_code e, std::size_t) {
        if (e) return;
        p->res = bhttp::response<bhttp::string_body>(bhttp::status::ok, 11);
        p->res.body() = std::string(p->req.target());
        p->res.keep_alive(!opt_.close_after);
        p->res.prepare_payload();
        with_stream(*p, [&](auto& s2) {
          bhttp::async_write(s2, p->res, [this, p](beast::error_code e2, std::size_t) {
            if (e2) return;
            if (opt_.close_after || opt_.close_idle) {
              beast::error_code ignored;
              beast::get_lowest_layer(p->tls).socket().shutdown(tcp::socket::shutdown_both, ignored);
              return;
            }
            read(*p);
          });
        });
      });
    });
  }

  Options opt_;
  asio::io_context ioc_;
  asio::ssl::context ctx_{asio::ssl::context::tls_server};
  tcp::acceptor acceptor_{ioc_};
  std::list<std::unique_ptr<Conn>> conns_;
  int accepted_ = 0;
  std::vector<std::string> sni_;
  std::thread thread_;  // last: started after, and joined before, what it uses
};

otac::net::ClientOptions client_for(const Pki& pki, std::uint16_t port, const std::string& host = "localhost") {
  otac::net::ClientOptions o;
  o.host = host;
  o.port = port;
  o.ca_file = pki.path("ca.pem");
  o.resolve_timeout = o.connect_timeout = o.handshake_timeout = o.io_timeout = ms(3000);
  return o;
}

ms elapsed_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - t0);
}

}  // namespace

TEST_CASE("HTTP client: a trusted server by name and by address, keep-alive, SNI", "[net][https]") {
  Pki pki;
  TestServer server({pki.path("good.pem"), pki.path("good.key")});
  auto client = otac::net::HttpClient::create(client_for(pki, server.port()));
  REQUIRE(client.ok());
  for (int i = 0; i < 3; ++i) {
    auto r = (*client)->request(Verb::get, "/hello/" + std::to_string(i));
    INFO((r ? "" : r.error().message));
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(r->body == "/hello/" + std::to_string(i));
  }
  CHECK((*client)->connections_opened() == 1);

  auto by_ip = otac::net::HttpClient::create(client_for(pki, server.port(), "127.0.0.1"));
  REQUIRE(by_ip.ok());
  auto r = (*by_ip)->request(Verb::post, "/ip", R"({"a":1})");
  INFO((r ? "" : r.error().message));
  REQUIRE(r.ok());
  CHECK(r->body == "/ip");
  CHECK((*by_ip)->where() == "127.0.0.1:" + std::to_string(server.port()));

  server.stop();
  CHECK(server.accepted() == 2);
  // SNI carries the name, and is not sent for an IP address (RFC 6066, section 3).
  REQUIRE(server.server_names().size() == 2);
  CHECK(server.server_names()[0] == "localhost");
  CHECK(server.server_names()[1].empty());
}

TEST_CASE("HTTP client: a certificate for another host name is refused", "[net][https]") {
  Pki pki;
  TestServer server({pki.path("wrong-name.pem"), pki.path("wrong-name.key")});
  auto client = otac::net::HttpClient::create(client_for(pki, server.port()));
  REQUIRE(client.ok());
  auto r = (*client)->request(Verb::get, "/");
  REQUIRE_FALSE(r.ok());
  INFO(r.error().message);
  CHECK(r.error().code == Errc::crypto);
  CHECK(r.error().message.find("hostname mismatch") != std::string::npos);
  CHECK(r.error().message.find("localhost") != std::string::npos);

  // Nor does the certificate pass for an address it does not name.
  auto by_ip = otac::net::HttpClient::create(client_for(pki, server.port(), "127.0.0.1"));
  REQUIRE(by_ip.ok());
  auto r2 = (*by_ip)->request(Verb::get, "/");
  REQUIRE_FALSE(r2.ok());
  INFO(r2.error().message);
  CHECK(r2.error().code == Errc::crypto);
  CHECK(r2.error().message.find("IP address mismatch") != std::string::npos);
}

TEST_CASE("HTTP client: a server certificate from an untrusted CA is refused", "[net][https]") {
  Pki pki;
  TestServer server({pki.path("untrusted.pem"), pki.path("untrusted.key")});
  auto client = otac::net::HttpClient::create(client_for(pki, server.port()));
  REQUIRE(client.ok());
  auto r = (*client)->request(Verb::get, "/");
  REQUIRE_FALSE(r.ok());
  INFO(r.error().message);
  CHECK(r.error().code == Errc::crypto);
  CHECK(r.error().message.find("unable to get local issuer certificate") != std::string::npos);
  CHECK(r.error().message.find(pki.path("ca.pem")) != std::string::npos);
}

TEST_CASE("HTTP client: a server that accepts and never answers times out within the bound", "[net][https]") {
  Pki pki;
  TestServer server({pki.path("good.pem"), pki.path("good.key"), /*silent=*/true});
  auto o = client_for(pki, server.port());
  o.handshake_timeout = ms(400);
  auto client = otac::net::HttpClient::create(o);
  REQUIRE(client.ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = (*client)->request(Verb::get, "/");
  const ms took = elapsed_since(t0);
  REQUIRE_FALSE(r.ok());
  INFO(r.error().message << " after " << took.count() << " ms");
  CHECK(r.error().code == Errc::timeout);
  CHECK(r.error().message.find("400 ms") != std::string::npos);
  CHECK(took >= ms(350));
  CHECK(took < ms(400 + 1500));

  // Plain HTTP: the answer never comes, and the read is what times out.
  TestServer plain({{}, {}, /*silent=*/true});
  auto po = client_for(pki, plain.port(), "127.0.0.1");
  po.tls = false;
  po.io_timeout = ms(400);
  auto pc = otac::net::HttpClient::create(po);
  REQUIRE(pc.ok());
  const auto t1 = std::chrono::steady_clock::now();
  auto pr = (*pc)->request(Verb::get, "/");
  const ms took2 = elapsed_since(t1);
  REQUIRE_FALSE(pr.ok());
  INFO(pr.error().message << " after " << took2.count() << " ms");
  CHECK(pr.error().code == Errc::timeout);
  CHECK(pr.error().message.find("reading the answer") != std::string::npos);
  CHECK(took2 >= ms(350));
  CHECK(took2 < ms(400 + 1500));
}

TEST_CASE("HTTP client: an unresolvable name fails within the resolve bound", "[net]") {
  otac::net::ClientOptions o;
  o.tls = false;
  o.host = "no-such-host.invalid";  // RFC 6761: never resolves
  o.port = 80;
  o.resolve_timeout = ms(2000);
  auto client = otac::net::HttpClient::create(o);
  REQUIRE(client.ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = (*client)->request(Verb::get, "/");
  const ms took = elapsed_since(t0);
  REQUIRE_FALSE(r.ok());
  INFO(r.error().message << " after " << took.count() << " ms");
  CHECK((r.error().code == Errc::io || r.error().code == Errc::timeout));
  CHECK(r.error().message.find("cannot resolve no-such-host.invalid") != std::string::npos);
  CHECK(took < ms(2000 + 500));
  CHECK((*client)->connections_opened() == 0);
}

TEST_CASE("HTTP client: a dropped connection is reopened with TLS session resumption", "[net][https]") {
  Pki pki;
  TestServer server({pki.path("good.pem"), pki.path("good.key"), false, /*close_after=*/true});
  auto client = otac::net::HttpClient::create(client_for(pki, server.port()));
  REQUIRE(client.ok());
  for (int i = 0; i < 3; ++i) {
    auto r = (*client)->request(Verb::get, "/r");
    INFO((r ? "" : r.error().message));
    REQUIRE(r.ok());
    CHECK(r->body == "/r");
  }
  CHECK((*client)->connections_opened() == 3);
  CHECK((*client)->sessions_resumed() == 2);
}

TEST_CASE("HTTP client: warm reopens, with session resumption, a connection the server closed while idle", "[net][https]") {
  Pki pki;
  TestServer server({pki.path("good.pem"), pki.path("good.key"), false, false, /*close_idle=*/true});
  auto client = otac::net::HttpClient::create(client_for(pki, server.port()));
  REQUIRE(client.ok());
  REQUIRE((*client)->warm().ok());  // nothing open yet: connects
  CHECK((*client)->connections_opened() == 1);
  auto r = (*client)->request(Verb::get, "/a");
  REQUIRE(r.ok());
  CHECK((*client)->connections_opened() == 1);  // the warm connection served it
  // The server closes the idle keep-alive connection; warm notices and reopens it (bounded wait
  // for the hang-up to arrive).
  for (int i = 0; i < 200 && (*client)->connections_opened() == 1; ++i) {
    std::this_thread::sleep_for(ms(10));
    REQUIRE((*client)->warm().ok());
  }
  CHECK((*client)->connections_opened() == 2);
  CHECK((*client)->sessions_resumed() == 1);
  r = (*client)->request(Verb::get, "/b");
  INFO((r ? "" : r.error().message));
  REQUIRE(r.ok());
  CHECK(r->body == "/b");
  CHECK((*client)->connections_opened() == 2);  // no reconnect inside the request
}

TEST_CASE("HTTP client: warm leaves an open keep-alive connection alone", "[net][https]") {
  Pki pki;
  TestServer server({pki.path("good.pem"), pki.path("good.key")});
  auto client = otac::net::HttpClient::create(client_for(pki, server.port()));
  REQUIRE(client.ok());
  for (int i = 0; i < 3; ++i) {
    REQUIRE((*client)->request(Verb::get, "/r").ok());
    std::this_thread::sleep_for(ms(20));  // a session ticket the server sent meanwhile is not a hang-up
    REQUIRE((*client)->warm().ok());
  }
  CHECK((*client)->connections_opened() == 1);
}

TEST_CASE("HTTP client: unusable settings are refused at creation with the file named", "[net][https]") {
  Pki pki;
  auto o = client_for(pki, 1);
  o.ca_file = pki.path("missing.pem");
  auto a = otac::net::HttpClient::create(o);
  REQUIRE_FALSE(a.ok());
  CHECK(a.error().message.find("missing.pem") != std::string::npos);

  o = client_for(pki, 1);
  o.ca_file.clear();
  auto b = otac::net::HttpClient::create(o);
  REQUIRE_FALSE(b.ok());
  CHECK(b.error().message.find("CA file") != std::string::npos);

  o = client_for(pki, 1);
  o.cert_file = pki.path("good.pem");
  o.key_file = pki.path("untrusted.key");  // another key
  auto c = otac::net::HttpClient::create(o);
  REQUIRE_FALSE(c.ok());
  INFO(c.error().message);
  CHECK(c.error().message.find("PEM key that matches " + pki.path("good.pem")) != std::string::npos);
}
