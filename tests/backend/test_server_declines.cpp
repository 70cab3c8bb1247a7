// Declines without bound, against the real otac-backend: a terminal that floods declines is
// answered 429 beyond its budget, the suppressed declines are counted in /metrics and summed
// up in the audit log instead of one row each, and genuine codes still approve.
#include <catch2/catch.hpp>

#include <cstdlib>

#include "server_fixture.hpp"

using namespace otac;
using namespace otac::backend;
using namespace otac::backend::test;
namespace json = boost::json;
using Verb = boost::beast::http::verb;

namespace {

json::array admin_list(const Backend& b, const std::string& target, const char* key) {
  auto r = Backend::call(b.admin(), Verb::get, target);
  REQUIRE(r.status == 200);
  return json::parse(r.body).as_object().at(key).as_array();
}

// Audit entries of one action.
std::vector<std::string> audit_details(const Backend& b, std::string_view action) {
  std::vector<std::string> out;
  for (const auto& e : admin_list(b, "/v1/admin/audit?limit=1000", "entries")) {
    const auto& o = e.as_object();
    if (o.at("action").as_string() == action) out.emplace_back(o.at("detail").as_string());
  }
  return out;
}

long long suppressed_metric(const Backend& b) {
  auto m = Backend::call(b.client(), Verb::get, "/metrics");
  REQUIRE(m.status == 200);
  const std::string name = "\notac_declines_suppressed_total ";
  const auto at = m.body.find(name);
  if (at == std::string::npos) return -1;
  return std::stoll(m.body.substr(at + name.size()));
}

}  // namespace

TEST_CASE("declines without bound: a flooding terminal gets 429 beyond its budget, counted and audited once, approvals pass",
          "[server][hostile]") {
  Backend b;
  // Five stored declines per terminal, then one more an hour.
  b.start("decline_source_burst = 5\ndecline_source_interval_ms = 3600000\n");
  auto [c1, k1] = b.register_terminal("TERM0001");
  auto [c2, k2] = b.register_terminal("TERM0002");
  auto [n, k] = b.enroll(R"({"msisdn":"+4915550001"})");
  auto refresh = Backend::call(b.admin(), Verb::post, "/v1/admin/cards/" + to_hex(n) + "/refresh");
  REQUIRE(refresh.status == 200);
  const auto list = static_cast<std::uint16_t>(json::parse(refresh.body).as_object().at("list").as_int64());
  const auto t1 = b.terminal(c1, k1);
  const auto t2 = b.terminal(c2, k2);

  // 40 authorizations for cards nobody enrolled, each with its own transaction id.
  int ok = 0, limited = 0;
  for (int i = 0; i < 40; ++i) {
    AuthRequest a;
    a.txn_id = "FLOOD-" + std::to_string(i);
    a.card = be_bytes(static_cast<std::uint64_t>(0xF000 + i), 8);
    a.challenge = Ch{}.encode();
    a.cryptogram = Bytes(8, 0);
    auto r = Backend::call(t1, Verb::post, "/v1/authorizations", auth_body(a));
    if (r.status == 200) {
      ++ok;
      CHECK(json::parse(r.body).as_object().at("reason").as_string() == "unknown_card");
    } else {
      INFO(r.body);
      CHECK(r.status == 429);
      CHECK(r.body.find("too_many_declines") != std::string::npos);
      // The next token comes an hour after the bucket ran dry; seconds have passed since.
      const auto at = r.body.find("retry after ");
      REQUIRE(at != std::string::npos);
      const long wait = std::strtol(r.body.c_str() + at + 12, nullptr, 10);
      CHECK(wait > 3500);
      CHECK(wait <= 3600);
      ++limited;
    }
  }
  CHECK(ok == 5);
  CHECK(limited == 35);
  CHECK(suppressed_metric(b) == 35);
  // Five rows, not forty; one audit entry for the suppressed ones so far (the first reports at
  // once, the rest are summed up a minute later or at shutdown).
  CHECK(admin_list(b, "/v1/admin/transactions?terminal=TERM0001&limit=1000", "transactions").size() == 5);
  CHECK(audit_details(b, "declines_suppressed") == std::vector<std::string>{"count=1 by_source=1 by_card=0 sources=TERM0001"});

  // A genuine code approves from the other terminal, and from the flooding one too.
  Ch ch2;
  ch2.terminal = to_bytes("TERM0002");
  auto g2 = Backend::call(t2, Verb::post, "/v1/authorizations",
                          auth_body(card_request("GOOD-2", n, Algorithm::des3, list, 0, b.otac(n, list, 0), ch2)));
  REQUIRE(g2.status == 200);
  CHECK(json::parse(g2.body).as_object().at("decision").as_string() == "approved");
  auto g1 = Backend::call(t1, Verb::post, "/v1/authorizations",
                          auth_body(card_request("GOOD-1", n, Algorithm::des3, list, 1, b.otac(n, list, 1), Ch{})));
  REQUIRE(g1.status == 200);
  CHECK(json::parse(g1.body).as_object().at("decision").as_string() == "approved");
  // The other terminal's declines are not limited by the first one's flood.
  AuthRequest other;
  other.txn_id = "OTHER-DECLINE";
  other.card = Bytes(8, 0xEE);
  other.challenge = ch2.encode();
  other.cryptogram = Bytes(8, 0);
  CHECK(Backend::call(t2, Verb::post, "/v1/authorizations", auth_body(other)).status == 200);

  // At shutdown the rest is summed up in one more entry; the chain verifies.
  REQUIRE(b.stop() == 0);
  b.start();
  CHECK(audit_details(b, "declines_suppressed") ==
        std::vector<std::string>{"count=1 by_source=1 by_card=0 sources=TERM0001",
                                 "count=34 by_source=34 by_card=0 sources=TERM0001"});
  CHECK(Backend::call(b.admin(), Verb::get, "/v1/admin/audit/verify").status == 200);
}
