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
#include "kannel_fixture.hpp"
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
  // A report for a message the outbox does not have is taken (200, so smsbox does not fetch
  // it again) and logged; one that names no message is refused.
  CHECK(http_get_plain(b.mo_port, "/v1/sms/dlr?secret=" + env.secret + "&id=999999&type=1") == 200);
  // The request's log line is written after its answer: bounded wait for it.
  for (int i = 0; i < 50 && b.log().find("dlr_error=") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(b.log().find("dlr_error=") != std::string::npos);
  CHECK(http_get_plain(b.mo_port, "/v1/sms/dlr?secret=" + env.secret + "&id=x&type=1") == 400);
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
  for (int i = 0; i < 150 && occurrences(b.log(), "event=sms_retry") < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(occurrences(b.log(), "event=sms_retry") >= 2);
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
