// otac-backend with real Kannel (bearerbox + smsbox, fake SMSC on loopback), both directions:
// a card's MO request typed into the fake SMSC reaches the backend through get-url, the list
// the backend queues comes back out of the fake SMSC byte for byte, delivery reports come
// back through dlr-url; with Kannel down the backend retries and delivers after a restart.
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

#include "kannel.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/ota.hpp"
#include "router.hpp"
#include "server_fixture.hpp"

using namespace otac;
using namespace otac::backend;
using namespace otac::backend::test;
namespace json = boost::json;
using Verb = boost::beast::http::verb;

namespace {

// A port reserved by tests/support/freeport.sh: outside the kernel's ephemeral range and
// reserved against parallel tests, so it is still free when Kannel's get-url points at it.
std::uint16_t free_port() {
  std::FILE* p = ::popen("/bin/bash " OTAC_FREEPORT_SH " 1", "r");
  REQUIRE(p != nullptr);
  char line[16] = {};
  const bool got = std::fgets(line, sizeof line, p) != nullptr;
  REQUIRE(::pclose(p) == 0);
  REQUIRE(got);
  const long port = std::strtol(line, nullptr, 10);
  REQUIRE(port > 0);
  REQUIRE(port < 65536);
  return static_cast<std::uint16_t>(port);
}

std::map<std::string, std::string> read_env(const std::filesystem::path& p) {
  std::map<std::string, std::string> out;
  std::istringstream in(slurp(p));
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

// Kannel under the test's control; stopped by PID (kannel.sh) at scope exit.
struct Kannel {
  std::filesystem::path dir;
  std::map<std::string, std::string> env;
  bool running = false;
  Kannel(std::filesystem::path d, const std::string& mo_url) : dir(std::move(d)) {
    REQUIRE(run_program({"/bin/bash", OTAC_KANNEL_SH, "start", dir.string(), mo_url}, dir.string() + ".out") == 0);
    running = true;
    env = read_env(dir / "kannel.env");
  }
  ~Kannel() {
    if (running) run_program({"/bin/bash", OTAC_KANNEL_SH, "stop", dir.string()}, dir.string() + ".out");
  }
  void stop_keep() {
    REQUIRE(run_program({"/bin/bash", OTAC_KANNEL_SH, "stop-keep", dir.string()}, dir.string() + ".out") == 0);
    running = false;
  }
  void restart() {
    REQUIRE(run_program({"/bin/bash", OTAC_KANNEL_SH, "restart", dir.string()}, dir.string() + ".out") == 0);
    running = true;
  }
  std::uint16_t port(const char* k) { return static_cast<std::uint16_t>(std::stoi(env.at(k))); }
};

// The phone side of Kannel's fake SMSC: one line per message.
class FakePhone {
 public:
  explicit FakePhone(std::uint16_t port) {
    for (int i = 0; i < 100 && fd_ < 0; ++i) {  // the SMSC may still be starting
      const int s = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(port);
      if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) fd_ = s;
      else { ::close(s); std::this_thread::sleep_for(std::chrono::milliseconds(100)); }
    }
    if (fd_ < 0) throw std::runtime_error("cannot connect to the fake SMSC");
  }
  ~FakePhone() { if (fd_ >= 0) ::close(fd_); }
  FakePhone(const FakePhone&) = delete;
  FakePhone& operator=(const FakePhone&) = delete;

  void send_line(const std::string& line) {
    const std::string l = line + "\n";
    REQUIRE(::write(fd_, l.data(), l.size()) == static_cast<ssize_t>(l.size()));
  }
  /// The next line, or nullopt after `timeout`.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int i = 0; i < 100000; ++i) {
      const auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char tmp[4096];
      const ssize_t n = ::read(fd_, tmp, sizeof tmp);
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
    return std::nullopt;
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

struct MtLine {
  std::string from, to;
  Bytes udh;   // with UDHL
  Bytes data;
};

MtLine parse_mt(const std::string& line) {
  std::istringstream in(line);
  MtLine m;
  std::string kind, udh, data;
  // "from to udh <udh> <data>"; Debian's Kannel 1.4.5 writes "from to udh <udh> data <data>".
  in >> m.from >> m.to >> kind >> udh >> data;
  REQUIRE(kind == "udh");
  if (data == "data") in >> data;
  auto u = otac::percent_decode(udh);
  auto d = otac::percent_decode(data);
  REQUIRE(u);
  REQUIRE(d);
  m.udh.assign(u->begin(), u->end());
  m.data.assign(d->begin(), d->end());
  return m;
}

// Reads MT lines to `to` until a complete concatenated set (or one single part) arrived.
std::vector<MtLine> read_packet(FakePhone& phone, const std::string& to, std::chrono::seconds timeout) {
  std::vector<MtLine> parts;
  std::size_t total = 1;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (parts.size() < total) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto l = phone.read_line(left);
    if (!l) break;
    MtLine m = parse_mt(*l);
    if (m.to != to) continue;
    // UDH: UDHL, then elements; 00 03 ref total seq is the concatenation element.
    if (m.udh.size() >= 6 && m.udh[1] == 0x00 && m.udh[2] == 0x03) total = m.udh[4];
    parts.push_back(std::move(m));
  }
  return parts;
}

ota::CardAlgorithm ota_alg(Algorithm a) {
  return a == Algorithm::des3 ? ota::CardAlgorithm::des3_2key : ota::CardAlgorithm::aes128;
}

// The card's request packet of protocol.md §2.4 (as tests/backend/test_service_lists.cpp).
Bytes card_request_packet(const Bytes& n, const SecretBytes& k, std::uint64_t counter, std::uint8_t type) {
  Bytes f1 = hex("DF4108");
  append(f1, n);
  append(f1, Bytes{0xC0, 0x01, type});
  append(f1, hex("DF4202 0000 DF4802 0000 DF4901 01"));
  Bytes data{0xF1, static_cast<std::uint8_t>(f1.size())};
  append(data, f1);
  auto keys = ota::derive_card_keys(k, n, ota_alg(Algorithm::des3)).value();
  const std::uint8_t kid = ota::key_id_for(ota_alg(Algorithm::des3), 1);
  ota::CommandHeader h{ota::Spi::decode(0x1200).value(), 0x00, kid, ota::otac_tar};
  return ota::build_command(h, counter, data, SecretBytes{}, keys.kid).value();
}

std::string as_str(ByteView b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

// The outbox as the backend stored it, for the card.
std::vector<OutboxMessage> outbox(Backend& b) {
  auto s = b.store();
  std::vector<OutboxMessage> out;
  auto r = s->run([&](Tx& tx) -> Result<void> {
    for (std::int64_t id = 1; id < 1000; ++id) {
      auto m = tx.sms(id);
      if (!m) break;
      out.push_back(std::move(*m));
    }
    return {};
  });
  REQUIRE(r);
  return out;
}

struct KannelEnv {
  Backend b;
  std::unique_ptr<Kannel> kannel;
  std::string secret = to_hex(crypto::random_bytes(16));

  KannelEnv() {
    std::filesystem::create_directories(b.dir);
    std::ofstream(b.dir / "mo.secret") << secret << "\n";
    std::filesystem::permissions(b.dir / "mo.secret", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    const std::uint16_t mo = free_port();
    kannel = std::make_unique<Kannel>(b.tmp.path / "kannel", "http://127.0.0.1:" + std::to_string(mo) + "/v1/sms/mo?secret=" +
                                                                 secret + "&from=%p&to=%P&udh=%u&data=%b");
    std::ostringstream cfg;
    cfg << "mo_listen = \"127.0.0.1:" << mo << "\"\n"
        << "server_msisdn = \"+15550100\"\n"
        << "list_size = 100\n"
        << "kannel_sendsms_url = \"http://127.0.0.1:" << kannel->env.at("KANNEL_SENDSMS_PORT") << "/cgi-bin/sendsms\"\n"
        << "kannel_user = \"" << kannel->env.at("KANNEL_SENDSMS_USER") << "\"\n"
        << "kannel_pass = \"" << kannel->env.at("KANNEL_SENDSMS_PASS") << "\"\n"
        << "sms_retry_base_seconds = 1\n"
        << "sms_retry_max_seconds = 2\n";
    b.start(cfg.str());
    REQUIRE(b.mo_port == mo);
  }
};

unsigned http_get_plain(std::uint16_t port, const std::string& target) {
  sms::KannelConfig c;
  c.port = port;
  auto r = sms::sendsms_get(c, target);
  return r ? r->status : 0;
}

std::size_t count(const std::string& hay, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("kannel: an MO card request reaches the backend and its list reaches the phone", "[server][kannel]") {
  KannelEnv env;
  Backend& b = env.b;
  auto [n, k] = b.enroll(R"({"msisdn":"+4915550001"})");
  FakePhone phone(env.kannel->port("KANNEL_SMSC_PORT"));

  // MO: the card's initialization request, typed into the fake SMSC as the phone would send it.
  const Bytes packet = card_request_packet(n, k, 1, 0x01);
  phone.send_line("+4915550001 +15550100 udh " + otac::percent_encode(as_str(hex("027000"))) + " " +
                  otac::percent_encode(as_str(packet)));

  // MT: the list comes back, as concatenated parts to the card's number from the server's.
  auto parts = read_packet(phone, "+4915550001", std::chrono::seconds(20));
  INFO(b.log());
  REQUIRE(!parts.empty());
  const auto stored = outbox(b);
  REQUIRE(parts.size() == stored.size());
  for (std::size_t i = 0; i < parts.size(); ++i) {
    CHECK(parts[i].from == "+15550100");
    Bytes udh{static_cast<std::uint8_t>(stored[i].udh.size())};
    append(udh, stored[i].udh);
    CHECK(parts[i].udh == udh);           // UDHL + elements exactly as queued
    CHECK(parts[i].data == stored[i].payload);  // binary payload unchanged (every byte value survives)
  }
  // The first part carries the command packet identifier 70 00 (protocol.md §7).
  CHECK(to_hex(parts[0].udh).find("7000") != std::string::npos);
  // The MO request was logged with its sender decoded from Kannel's URL encoding.
  CHECK(b.log().find("path=/v1/sms/mo status=200") != std::string::npos);
  CHECK(b.log().find("from=+4915550001") != std::string::npos);

  // Delivery reports come back through dlr-url and are recorded on each message.
  bool all_reported = false;
  for (int i = 0; i < 100 && !all_reported; ++i) {
    all_reported = true;
    for (const auto& m : outbox(b)) all_reported = all_reported && m.status == OutboxStatus::sent && m.last_reply.rfind("dlr:", 0) == 0;
    if (!all_reported) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(all_reported);
  // A wrong secret on the MO listener is refused.
  auto bad = http_get_plain(b.mo_port, "/v1/sms/mo?secret=nope&from=1&to=2&data=x");
  CHECK(bad == 403);
  // The password never reaches the log.
  CHECK(b.log().find(env.kannel->env.at("KANNEL_SENDSMS_PASS")) == std::string::npos);
}

TEST_CASE("kannel: gateway down, the backend retries with backoff and delivers once after a restart", "[server][kannel]") {
  KannelEnv env;
  Backend& b = env.b;
  auto [n, k] = b.enroll(R"({"msisdn":"+4915550009"})");
  env.kannel->stop_keep();

  auto r = Backend::call(b.admin(), Verb::post, "/v1/admin/cards/" + to_hex(n) + "/refresh");
  REQUIRE(r.status == 200);
  // Wait for at least two failed attempts (bounded).
  for (int i = 0; i < 150 && count(b.log(), "event=sms_retry") < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(count(b.log(), "event=sms_retry") >= 2);
  auto m = Backend::call(b.client(), Verb::get, "/metrics");
  CHECK(m.body.find("otac_sms_queue_depth 0") == std::string::npos);

  // A restart of the backend loses nothing either: the outbox is in SQLite.
  REQUIRE(b.stop() == 0);
  b.start();
  env.kannel->restart();
  FakePhone phone(env.kannel->port("KANNEL_SMSC_PORT"));
  auto parts = read_packet(phone, "+4915550009", std::chrono::seconds(30));
  INFO(b.log());
  const auto stored = outbox(b);
  REQUIRE(parts.size() == stored.size());
  std::set<std::pair<Bytes, Bytes>> seen;
  for (const auto& p : parts) CHECK(seen.insert({p.udh, p.data}).second);  // each part once
  // Nothing else arrives: no duplicates from the retries.
  CHECK_FALSE(phone.read_line(std::chrono::milliseconds(1500)).has_value());
  for (int i = 0; i < 50; ++i) {
    m = Backend::call(b.client(), Verb::get, "/metrics");
    if (m.body.find("otac_sms_queue_depth 0") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(m.body.find("otac_sms_queue_depth 0") != std::string::npos);
}
