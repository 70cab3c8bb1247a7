// Integration: a list packet that needs concatenation goes through a real Kannel (sendsms ->
// bearerbox -> fake SMSC) to otac-card, into the applet by ENVELOPE; the PoR comes back as
// an MO through Kannel's get-url to a tiny HTTP listener run here, and is opened with the
// card's keys. The card's queued initialization request arrives the same way.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <mutex>

#include "card_fixture.hpp"
#include "host.hpp"
#include "process.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;

namespace {

// A loopback HTTP/1.0 listener that records request targets and answers 200.
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0) throw std::runtime_error("listen");
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~Listener() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  std::uint16_t port() const { return port_; }
  std::vector<std::string> targets() {
    std::lock_guard<std::mutex> g(mu_);
    return targets_;
  }

 private:
  void loop() {
    for (int i = 0; i < 100000 && !stop_; ++i) {  // bounded: about 100 s at most
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 1) <= 0) continue;
      card_host::Fd c(::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC));
      if (!c) continue;
      std::string req;
      char buf[4096];
      for (int j = 0; j < 50 && req.find("\r\n\r\n") == std::string::npos; ++j) {
        pollfd q{c.get(), POLLIN, 0};
        if (::poll(&q, 1, 100) <= 0) continue;
        const ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<std::size_t>(n));
      }
      const auto sp1 = req.find(' '), sp2 = req.find(' ', sp1 + 1);
      if (sp1 != std::string::npos && sp2 != std::string::npos) {
        std::lock_guard<std::mutex> g(mu_);
        targets_.push_back(req.substr(sp1 + 1, sp2 - sp1 - 1));
      }
      const std::string ok = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      (void)card_host::write_all(c.get(), as_bytes(ok), 1000);
    }
  }

  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::string> targets_;
  std::thread thread_;
};

// One HTTP GET on loopback; returns the status line.
std::string http_get(std::uint16_t port, const std::string& target) {
  auto fd = card_host::connect_tcp("127.0.0.1", port, 2000);
  REQUIRE(fd.ok());
  const std::string req = "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  REQUIRE(card_host::write_all(fd->get(), as_bytes(req), 2000).ok());
  std::string resp;
  char buf[1024];
  for (int i = 0; i < 100; ++i) {
    pollfd p{fd->get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = ::recv(fd->get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    resp.append(buf, static_cast<std::size_t>(n));
  }
  return resp.substr(0, resp.find("\r\n"));
}

std::map<std::string, Bytes> query(const std::string& target) {
  std::map<std::string, Bytes> out;
  const auto q = target.find('?');
  if (q == std::string::npos) return out;
  std::string_view s(target);
  s.remove_prefix(q + 1);
  for (int i = 0; i < 32 && !s.empty(); ++i) {
    const auto amp = s.find('&');
    std::string_view kv = s.substr(0, amp);
    s = amp == std::string_view::npos ? std::string_view{} : s.substr(amp + 1);
    const auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    auto v = card_host::url_decode(kv.substr(eq + 1));
    if (v) out[std::string(kv.substr(0, eq))] = *v;
  }
  return out;
}

Bytes strip_udhl(Bytes udh) {
  if (!udh.empty() && udh[0] == udh.size() - 1) udh.erase(udh.begin());
  return udh;
}

}  // namespace

TEST_CASE("Kannel: a concatenated list reaches the card through bearerbox, the PoR comes back by get-url") {
  TempDir dir;
  Listener mo;
  const std::string mo_url = "http://127.0.0.1:" + std::to_string(mo.port()) + "/mo?from=%p&to=%P&udh=%u&data=%b";
  REQUIRE(sh(std::string(OTAC_SOURCE_DIR "/tests/support/kannel.sh start ") + dir.path.string() + "/kannel '" + mo_url + "'") == 0);
  struct StopKannel {
    std::string d;
    ~StopKannel() { sh(std::string(OTAC_SOURCE_DIR "/tests/support/kannel.sh stop ") + d); }
  } stop_kannel{dir.path.string() + "/kannel"};
  auto env = read_env(dir.path / "kannel" / "kannel.env");

  const auto state = dir.path / "card.state";
  {
    FileStorage fs(state);
    Card c;
    personalize(c);  // leaves the initialization request in the outbox
    REQUIRE(fs.commit(c.store.load().value()));
  }
  Child card({OTAC_CARD_BIN, "run", "--state", state.string(), "--smsc", "127.0.0.1:" + env.at("KANNEL_SMSC_PORT"),
              "--msisdn", kPhone},
             dir.path / "card.log");

  // The list: 30 codes, about 4 SMS, split as the backend does (protocol.md 7).
  auto codes = test_codes(30);
  Bytes packet = ota_packet(e1(1, 1, codes), 1);
  const std::size_t first = 132, later = 134;
  const std::size_t total = 1 + (packet.size() - first + later - 1) / later;
  REQUIRE(total >= 3);
  std::size_t pos = 0;
  for (std::size_t seq = 1; seq <= total; ++seq) {
    Bytes udh{0x00, 0x03, 0x21, static_cast<std::uint8_t>(total), static_cast<std::uint8_t>(seq)};
    if (seq == 1) append(udh, hex("7000"));
    udh.insert(udh.begin(), static_cast<std::uint8_t>(udh.size()));
    const std::size_t n = std::min(seq == 1 ? first : later, packet.size() - pos);
    Bytes part(packet.begin() + static_cast<std::ptrdiff_t>(pos), packet.begin() + static_cast<std::ptrdiff_t>(pos + n));
    pos += n;
    const std::string target = "/cgi-bin/sendsms?username=" + env.at("KANNEL_SENDSMS_USER") + "&password=" +
                               env.at("KANNEL_SENDSMS_PASS") + "&from=" + card_host::url_encode(as_bytes(kServer)) +
                               "&to=" + card_host::url_encode(as_bytes(kPhone)) + "&coding=1&pid=127&udh=" +
                               card_host::url_encode(udh) + "&text=" + card_host::url_encode(part);
    const std::string status = http_get(static_cast<std::uint16_t>(std::stoi(env.at("KANNEL_SENDSMS_PORT"))), target);
    INFO(status);
    REQUIRE(status.find(" 202") != std::string::npos);
  }

  // Wait for the PoR (UDH 71) and the initialization request (UDH 70) at the get-url.
  std::optional<Bytes> por, request;
  for (int i = 0; i < 200 && (!por || !request); ++i) {
    for (const auto& t : mo.targets()) {
      auto q = query(t);
      const Bytes udh = strip_udhl(q["udh"]);
      if (udh == hex("7100")) por = q["data"];
      if (udh == hex("7000")) request = q["data"];
      if (udh == hex("7100") || udh == hex("7000")) {
        CHECK(card_host::url_encode(q["from"]) == card_host::url_encode(as_bytes(kPhone)));
      }
    }
    if (!por || !request) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(request.has_value());
  auto opened = ota::open_command(*request, SecretBytes{}, test_keys().kid);
  REQUIRE(opened.ok());
  CHECK(opened->data == hex("F11C DF410811223344556677 88 C00101 DF42020000 DF48020000 DF490101"));
  REQUIRE(por.has_value());
  auto r = open_por(*por);
  CHECK(r.status == ota::Rsc::ok);
  CHECK(r.counter == 1);
  CHECK(r.data == hex("9000"));
  CHECK(card.stop() == 0);

  FileStorage fs(state);
  Applet after(fs);
  after.process(hex("00A4040006F04F5441430100"));
  auto s = apdu::parse_response(after.process(hex("80A6000000"))).value();
  CHECK(field(s.data, 0xE0, 0xDF48) == hex("001E"));
}
