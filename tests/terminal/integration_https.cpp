// Integration: the terminal's HTTPS client and otac-terminal against a real otac-backend
// (mutual TLS with a certificate from otac-admin register-terminal, CA pinning, keep-alive),
// and the failure paths: wrong CA, client certificate the backend does not know, backend down.
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include <boost/json.hpp>

#include "process.hpp"
#include "support.hpp"
#include "terminal/backend_json.hpp"
#include "terminal/backend_link.hpp"

using namespace otac;
using namespace otac::applet::test;
namespace term = otac::terminal;
using Verb = boost::beast::http::verb;

namespace {

using otac::terminal::test::last_json;

// otac-terminal; its stderr (the display) is not read.
ShellResult run(const std::string& cmd) { return run_shell(cmd + " 2>/dev/null"); }

// A loopback listener that completes TCP handshakes (the kernel's backlog) and never says a
// word: a node that hangs. Its port stays bound for the listener's lifetime.
struct SilentNode {
  int fd = -1;
  std::uint16_t port = 0;
  SilentNode() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
  }
  ~SilentNode() { ::close(fd); }
  SilentNode(const SilentNode&) = delete;
  SilentNode& operator=(const SilentNode&) = delete;
};

// A node that answers every request with HTTP 503, as a node whose database is away does:
// python3's http.server over TLS, with a certificate for 127.0.0.1 from `ca` (PEM files).
struct UnavailableNode {
  std::unique_ptr<Child> proc;
  std::string port;
  UnavailableNode(const TempDir& dir, const std::filesystem::path& ca_cert, const std::filesystem::path& ca_key) {
    const auto p = [&](const char* name) { return (dir.path / name).string(); };
    const std::string quiet = " >/dev/null 2>&1";
    REQUIRE(sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 -keyout " + p("u.key") +
               " -out " + p("u.csr") + quiet) == 0);
    std::ofstream(p("u.ext")) << "subjectAltName = IP:127.0.0.1\n";
    REQUIRE(sh("openssl x509 -req -in " + p("u.csr") + " -CA " + ca_cert.string() + " -CAkey " + ca_key.string() +
               " -CAcreateserial -CAserial " + p("u.srl") + " -days 1 -extfile " + p("u.ext") + " -out " + p("u.pem") + quiet) == 0);
    std::ofstream(p("u.py")) << R"(import http.server, os, ssl, sys
class Unavailable(http.server.BaseHTTPRequestHandler):
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = b'{"error":"unavailable","message":"the database is not usable"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Unavailable)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(sys.argv[3] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(sys.argv[3] + ".tmp", sys.argv[3])
server.serve_forever()
)";
    proc = std::make_unique<Child>(std::vector<std::string>{"/usr/bin/python3", p("u.py"), p("u.pem"), p("u.key"), p("u.port")},
                                   dir.path / "unavailable.log");
    for (int i = 0; i < 200 && port.empty(); ++i) {  // up to 10 s
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (std::filesystem::exists(p("u.port"))) port = first_line(p("u.port"));
    }
    REQUIRE_FALSE(port.empty());
  }
};

// A running otac-backend with a registered terminal TERM0001.
struct Backend {
  TempDir dir;
  std::unique_ptr<Child> proc;
  std::string port;
  std::filesystem::path data, term;
  Backend() {
    data = dir.path / "data";
    term = dir.path / "term";
    proc = std::make_unique<Child>(std::vector<std::string>{OTAC_BACKEND_BIN, "--data-dir", data.string(), "--listen", "127.0.0.1:0"},
                                   dir.path / "backend.log");
    for (int i = 0; i < 200 && port.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (std::filesystem::exists(data / "backend.port")) port = first_line(data / "backend.port");
    }
    REQUIRE_FALSE(port.empty());
    const std::string admin = std::string(OTAC_ADMIN_BIN) + " --url https://127.0.0.1:" + port + " --ca " +
                              (data / "ca.pem").string() + " --token-file " + (data / "admin.token").string();
    REQUIRE(sh(admin + " register-terminal TERM0001 --out " + term.string() + " >/dev/null 2>&1") == 0);
  }
  net::ClientOptions options() const {
    net::ClientOptions o;
    o.host = "127.0.0.1";
    o.port = static_cast<std::uint16_t>(std::stoi(port));
    o.ca_file = (data / "ca.pem").string();
    o.cert_file = (term / "TERM0001.pem").string();
    o.key_file = (term / "TERM0001.key").string();
    return o;
  }
  std::filesystem::path config(const std::string& extra = "", const std::string& ca = "", const std::string& url = "") const {
    const auto p = dir.path / ("terminal" + std::to_string(std::hash<std::string>{}(extra + ca + url)) + ".conf");
    std::ofstream f(p);
    f << "reader = \"pcsc\"\nbackend_url = \"" << (url.empty() ? "https://127.0.0.1:" + port : url) << "\"\nca_file = \""
      << (ca.empty() ? (data / "ca.pem").string() : ca) << "\"\ncert_file = \"" << (term / "TERM0001.pem").string()
      << "\"\nkey_file = \"" << (term / "TERM0001.key").string()
      << "\"\nterminal_id = \"TERM0001\"\nbackend_timeout_ms = 3000\nconnect_timeout_ms = 1000\n" << extra;
    return p;
  }
};

}  // namespace

TEST_CASE("HTTPS client: past the terminal's decline budget the backend's 429 is an error the flow declines on, not a decision", "[terminal][https][integration]") {
  Backend b;  // the default budgets: 100 stored declines per terminal, 50 per card
  auto client = net::HttpClient::create(b.options());
  REQUIRE(client.ok());
  Result<std::string> last = std::string();
  int declined = 0;
  for (int i = 0; i < 150 && last.ok(); ++i) {
    const std::string body = term::code_request_body("T-429-" + std::to_string(i), hex("0102030405060708"), "12345678", "");
    last = term::backend_body((*client)->request(Verb::post, "/v1/codes/verify", body, std::chrono::milliseconds(3000)));
    if (last.ok()) ++declined;
  }
  INFO(declined << " declines stored before the first refusal");
  REQUIRE_FALSE(last.ok());
  CHECK(declined >= 50);  // the one card's budget (decline_card_burst) runs out first
  CHECK(last.error().code == Errc::state);  // terminal/flow.cpp: too_many_declines, nothing to reverse
  CHECK(last.error().message.find("HTTP 429") != std::string::npos);
  CHECK(last.error().message.find("too_many_declines") != std::string::npos);
}

TEST_CASE("HTTPS client: mutual TLS to otac-backend, keep-alive, strict answers", "[terminal][https][integration]") {
  Backend b;
  auto client = net::HttpClient::create(b.options());
  REQUIRE(client.ok());
  const std::string body = term::code_request_body("T-HTTPS-1", hex("0102030405060708"), "12345678", "");
  auto a1 = term::backend_body((*client)->request(Verb::post, "/v1/codes/verify", body, std::chrono::milliseconds(3000)));
  INFO((a1 ? *a1 : a1.error().message));
  REQUIRE(a1.ok());
  auto ans = term::parse_answer(*a1, false);
  REQUIRE(ans.ok());
  CHECK(ans->txn_id == "T-HTTPS-1");
  CHECK(ans->decision == term::Decision::declined);
  CHECK(ans->reason == "unknown_card");
  // The same txn_id and body again: the stored answer, over the same connection.
  auto a2 = term::backend_body((*client)->request(Verb::post, "/v1/codes/verify", body, std::chrono::milliseconds(3000)));
  REQUIRE(a2.ok());
  CHECK(term::parse_answer(*a2, false)->reason == "unknown_card");
  // A GET for an unknown transaction is an HTTP error, never a decision.
  auto g = term::backend_body((*client)->request(Verb::get, "/v1/authorizations/NOPE-1?wait=0", {}, std::chrono::milliseconds(3000)));
  REQUIRE_FALSE(g.ok());
  CHECK(g.error().message.find("HTTP 404") != std::string::npos);
  CHECK((*client)->connections_opened() == 1);
  // The same id with another body is refused (409).
  auto c = term::backend_body((*client)->request(
      Verb::post, "/v1/codes/verify", term::code_request_body("T-HTTPS-1", hex("0102030405060708"), "87654321", ""),
      std::chrono::milliseconds(3000)));
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == Errc::conflict);

  SECTION("a CA that did not sign the server certificate: TLS refused") {
    auto o = b.options();
    o.ca_file = o.cert_file;  // a leaf certificate from another chain position, not the server's CA
    auto bad = net::HttpClient::create(o);
    REQUIRE(bad.ok());
    auto r = (*bad)->request(Verb::post, "/v1/codes/verify", body, std::chrono::milliseconds(3000));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::crypto);
    CHECK(r.error().message.find("TLS handshake") != std::string::npos);
  }
  SECTION("a client certificate the backend did not issue: refused") {
    const auto other = b.dir.path / "other";
    std::filesystem::create_directories(other);
    REQUIRE(sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=TERM0001 -days 1 -keyout " +
               (other / "k.pem").string() + " -out " + (other / "c.pem").string() + " >/dev/null 2>&1") == 0);
    auto o = b.options();
    o.cert_file = (other / "c.pem").string();
    o.key_file = (other / "k.pem").string();
    auto bad = net::HttpClient::create(o);
    REQUIRE(bad.ok());
    auto r = term::backend_body((*bad)->request(Verb::post, "/v1/codes/verify", body, std::chrono::milliseconds(3000)));
    REQUIRE_FALSE(r.ok());
    INFO(r.error().message);
    // Not a network hiccup to retry: a TLS refusal (or an HTTP refusal of the certificate).
    CHECK(r.error().code != Errc::io);
    CHECK(r.error().code != Errc::timeout);
  }
  SECTION("key and certificate that do not match are refused at load") {
    auto o = b.options();
    o.key_file = (b.data / "server.key").string();
    auto bad = net::HttpClient::create(o);
    REQUIRE_FALSE(bad.ok());
    INFO(bad.error().message);
    CHECK(bad.error().message.find("PEM key that matches") != std::string::npos);
  }
}

TEST_CASE("otac-terminal code: JSON line, exit status, backend down", "[terminal][https][integration]") {
  Backend b;
  const auto conf = b.config();
  auto r = run(std::string(OTAC_TERMINAL_BIN) + " --config " + conf.string() +
               " code 12345678 --card 0102030405060708 --txn-id T-CLI-1");
  INFO(r.out);
  CHECK(r.status == 1);
  auto j = last_json(r.out);
  CHECK(j.at("txn_id").as_string() == "T-CLI-1");
  CHECK(j.at("decision").as_string() == "declined");
  CHECK(j.at("reason").as_string() == "unknown_card");
  CHECK(r.out.find("CODE DECLINED") != std::string::npos);

  // Wrong CA in the config: declined with a TLS reason, not approved.
  auto wrong = run(std::string(OTAC_TERMINAL_BIN) + " --config " + b.config("", (b.term / "TERM0001.pem").string()).string() +
                   " code 12345678 --card 0102030405060708");
  CHECK(wrong.status == 1);
  CHECK(last_json(wrong.out).at("reason").as_string() == "backend_error");

  // Backend down: three attempts with the same txn_id, then declined.
  const std::string port = b.port;
  CHECK(b.proc->stop() == 0);
  auto down = run(std::string(OTAC_TERMINAL_BIN) + " --config " + conf.string() + " code 12345678 --card 0102030405060708");
  INFO(down.out);
  CHECK(down.status == 1);
  auto dj = last_json(down.out);
  CHECK(dj.at("reason").as_string() == "backend_unreachable");
  CHECK(dj.at("backend_attempts").as_int64() == 3);

  // Usage errors exit 2.
  CHECK(run(std::string(OTAC_TERMINAL_BIN) + " --config " + conf.string() + " code 1234").status == 2);
  CHECK(run(std::string(OTAC_TERMINAL_BIN) + " --config " + conf.string() + " fly").status == 2);
  CHECK(run(std::string(OTAC_TERMINAL_BIN) + " --config " + conf.string() + " pos --amount 1.234").status == 2);
}

TEST_CASE("backend link: a node that hangs or is gone hands over to the next, which is then tried first",
          "[terminal][https][integration]") {
  Backend b;
  SilentNode hung;
  // The hung node first: the TLS handshake times out (connect_timeout_ms = 1000), the live node
  // answers the same request.
  const std::string urls = "https://127.0.0.1:" + std::to_string(hung.port) + ", https://127.0.0.1:" + b.port;
  auto cfg = term::load_config(b.config("", "", urls).string());
  REQUIRE(cfg);
  REQUIRE(cfg->backends.size() == 2);
  std::vector<std::string> logged;
  auto link = term::BackendLink::create(*cfg, [&](const std::string& l) { logged.push_back(l); });
  REQUIRE(link);
  const std::string body = term::code_request_body("T-FO-1", hex("0102030405060708"), "12345678", "");
  auto a1 = (*link)->post("/v1/codes/verify", body);
  INFO((a1 ? *a1 : a1.error().message));
  REQUIRE(a1);
  CHECK(term::parse_answer(*a1, false)->reason == "unknown_card");
  CHECK((*link)->failovers() == 1);
  CHECK((*link)->current() == 1);
  REQUIRE(logged.size() == 1);
  CHECK(logged[0].find("127.0.0.1:" + std::to_string(hung.port) + " failed") != std::string::npos);
  // The node that answered is remembered: the next request goes straight to it.
  const auto t0 = std::chrono::steady_clock::now();
  auto a2 = (*link)->post("/v1/codes/verify", body);
  REQUIRE(a2);
  CHECK(*a2 == *a1);  // the same txn_id: the stored answer
  CHECK((*link)->failovers() == 1);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(900));
  // An answer the backend gives (HTTP 4xx) is not a reason to ask another node.
  auto g = (*link)->poll("NOPE-1", 0);
  REQUIRE_FALSE(g);
  CHECK(g.error().message.find("HTTP 404") != std::string::npos);
  CHECK((*link)->failovers() == 1);
  // Every node gone: a network error after each node was tried once, and the flow's own
  // retries (backend_attempts) decide what happens next.
  CHECK(b.proc->stop() == 0);
  auto a3 = (*link)->post("/v1/codes/verify", body);
  REQUIRE_FALSE(a3);
  CHECK((a3.error().code == Errc::io || a3.error().code == Errc::timeout));
  CHECK((*link)->failovers() == 2);  // live node (remembered) -> hung node, which ends the round
}

TEST_CASE("otac-terminal: backend_url with several nodes, the first two failing", "[terminal][https][integration]") {
  Backend b;
  Backend stranger;  // a backend with a CA of its own: the terminal's TLS check refuses it
  SilentNode hung;
  const std::string urls = "https://127.0.0.1:" + std::to_string(hung.port) + ", https://127.0.0.1:" + stranger.port +
                           ",https://127.0.0.1:" + b.port + "/";
  auto r = run_shell(std::string(OTAC_TERMINAL_BIN) + " --config " + b.config("", "", urls).string() +
                     " code 12345678 --card 0102030405060708 --txn-id T-CLI-FO 2>&1");
  INFO(r.out);
  CHECK(r.status == 1);
  auto j = last_json(r.out);
  CHECK(j.at("reason").as_string() == "unknown_card");  // the backend's answer, from the third node
  CHECK(j.at("backend_attempts").as_int64() == 1);       // one attempt of the flow, three nodes within it
  CHECK(r.out.find("127.0.0.1:" + std::to_string(hung.port) + " failed (TLS handshake") != std::string::npos);
  CHECK(r.out.find("127.0.0.1:" + stranger.port + " failed (TLS handshake") != std::string::npos);
  // The node that answered is kept in data_dir (the config's folder): the next run starts there.
  CHECK(first_line(b.dir.path / "backend.node") == "127.0.0.1:" + b.port);
  auto again = run_shell(std::string(OTAC_TERMINAL_BIN) + " --config " + b.config("", "", urls).string() +
                         " code 12345678 --card 0102030405060708 --txn-id T-CLI-FO-2 2>&1");
  INFO(again.out);
  CHECK(last_json(again.out).at("reason").as_string() == "unknown_card");
  CHECK(again.out.find(" failed (") == std::string::npos);
  // A remembered node that is no longer listed is ignored: the first listed is tried first.
  std::ofstream(b.dir.path / "backend.node") << "127.0.0.1:1\n";
  auto listed = run_shell(std::string(OTAC_TERMINAL_BIN) + " --config " + b.config("", "", urls).string() +
                          " code 12345678 --card 0102030405060708 --txn-id T-CLI-FO-3 2>&1");
  INFO(listed.out);
  CHECK(listed.out.find("127.0.0.1:" + std::to_string(hung.port) + " failed") != std::string::npos);
}

TEST_CASE("backend link: a node that answers 503 hands over to the next", "[terminal][https][integration]") {
  Backend b;
  TempDir d;
  UnavailableNode unavailable(d, b.data / "ca.pem", b.data / "ca.key");
  const std::string urls = "https://127.0.0.1:" + unavailable.port + ", https://127.0.0.1:" + b.port;
  auto cfg = term::load_config(b.config("", "", urls).string());
  REQUIRE(cfg);
  std::vector<std::string> logged;
  auto link = term::BackendLink::create(*cfg, [&](const std::string& l) { logged.push_back(l); });
  REQUIRE(link);
  // The 503 node alone is an HTTP error the flow may retry (Errc::io), not an answer.
  auto only_cfg = term::load_config(b.config("", "", "https://127.0.0.1:" + unavailable.port).string());
  REQUIRE(only_cfg);
  auto only = term::BackendLink::create(*only_cfg);
  REQUIRE(only);
  const std::string body = term::code_request_body("T-503-1", hex("0102030405060708"), "12345678", "");
  auto alone = (*only)->post("/v1/codes/verify", body);
  REQUIRE_FALSE(alone);
  CHECK(alone.error().code == Errc::io);
  CHECK(alone.error().message.find("HTTP 503") != std::string::npos);
  // With the live node second, the same request is answered there.
  auto a = (*link)->post("/v1/codes/verify", body);
  INFO((a ? *a : a.error().message));
  REQUIRE(a);
  CHECK(term::parse_answer(*a, false)->reason == "unknown_card");
  CHECK((*link)->failovers() == 1);
  CHECK((*link)->current() == 1);
  REQUIRE(logged.size() == 1);
  CHECK(logged[0].find("failed (HTTP 503)") != std::string::npos);
}
