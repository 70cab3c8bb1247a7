// The otac-terminal config parser, amounts and currencies, and the backend JSON bodies.
#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "terminal/backend_json.hpp"
#include "terminal/config.hpp"

using namespace otac;
using namespace otac::terminal;

namespace {
const std::string kMinimal =
    "# a terminal\n"
    "reader = pn532_uart:/tmp/pn532\n"
    "backend_url = https://127.0.0.1:8443\n"
    "ca_file = ca.pem   # trust only this CA\n"
    "cert_file = /etc/otac/t.pem\n"
    "key_file = t.key\n"
    "terminal_id = TERM0001\n";
}

TEST_CASE("config: a minimal file parses with defaults", "[terminal][config]") {
  auto c = parse_config(kMinimal, "/etc/otac");
  REQUIRE(c);
  CHECK(c->reader == "pn532_uart:/tmp/pn532");
  REQUIRE(c->backends.size() == 1);
  CHECK(c->backends[0].host == "127.0.0.1");
  CHECK(c->backends[0].port == 8443);
  CHECK(c->ca_file == "/etc/otac/ca.pem");
  CHECK(c->cert_file == "/etc/otac/t.pem");
  CHECK(c->key_file == "/etc/otac/t.key");
  CHECK(c->terminal_id == "TERM0001");
  CHECK_FALSE(c->door_mode);
  CHECK(c->currency == 978);
  CHECK(c->relay == RelayKind::none);
  CHECK(c->held_wait_limit_s == 60);
}

TEST_CASE("config: every optional key", "[terminal][config]") {
  auto c = parse_config(kMinimal +
                            "mode = door\ndoor_id = FRONT\ncurrency = GBP\nrelay = gpiod\nrelay_chip = gpiochip1\n"
                            "relay_line = 17\nrelay_active_low = true\nrelay_pulse_ms = 2500\npin_source = stdin\n"
                            "held_wait_limit_s = 5\ncard_wait_ms = 100\napdu_timeout_ms = 200\nremoval_wait_ms = 0\n"
                            "connect_timeout_ms = 300\nbackend_timeout_ms = 400\nbackend_attempts = 2\npin_timeout_s = 9\n",
                        "/x");
  REQUIRE(c);
  CHECK(c->door_mode);
  CHECK(c->door_id == "FRONT");
  CHECK(c->currency == 826);
  CHECK(c->currency_alpha == "GBP");
  CHECK(c->relay == RelayKind::gpiod);
  CHECK(c->relay_chip == "gpiochip1");
  CHECK(c->relay_line == 17);
  CHECK(c->relay_active_low);
  CHECK(c->relay_pulse_ms == 2500);
  CHECK(c->pin_source == PinSource::stdin_lines);
  CHECK(c->held_wait_limit_s == 5);
  CHECK(c->card_wait_ms == 100);
  CHECK(c->apdu_timeout_ms == 200);
  CHECK(c->removal_wait_ms == 0);
  CHECK(c->connect_timeout_ms == 300);
  CHECK(c->backend_timeout_ms == 400);
  CHECK(c->backend_attempts == 2);
  CHECK(c->pin_timeout_s == 9);
}

TEST_CASE("config: errors name the line and the key", "[terminal][config]") {
  struct Case { std::string text; const char* needle; };
  const std::vector<Case> cases = {
      {kMinimal + "colour = blue\n", "line 8: unknown key \"colour\""},
      {kMinimal + "reader = pcsc\n", "line 8: reader is set twice"},
      {kMinimal + "just words\n", "line 8: expected \"key = value\""},
      {kMinimal + "relay_line = -1\n", "relay_line '-1' is not a whole number from 0 to"},
      {kMinimal + "relay_pulse_ms = 10\n", "from 50 to 30000"},
      {kMinimal + "mode = kiosk\n", "must be pos or door"},
      {kMinimal + "mode = door\n", "needs door_id"},
      {kMinimal + "relay = command\n", "needs relay_command"},
      {kMinimal + "currency = XXX\n", "unknown currency"},
      {kMinimal + "relay_active_low = maybe\n", "true or false"},
      {kMinimal + "door_id = 12345678901234567\n", "1 to 16"},
      {"reader = pcsc\n", "missing required key backend_url"},
      {"backend_url = https://h\n", "missing required key reader"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto r = parse_config(c.text);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains(c.needle));
  }
  auto replace_url = [](const std::string& url) {
    std::string t = kMinimal;
    t.replace(t.find("https://127.0.0.1:8443"), 22, url);
    return t;
  };
  for (const char* url : {"http://127.0.0.1:80", "https://", "https://h:0", "https://h:99999", "https://h/path",
                          "https://u@h", "https://h?q=1", "https://[::1", "https://h%00x"}) {
    INFO(url);
    CHECK_FALSE(parse_config(replace_url(url)));
  }
  auto ok = parse_config(replace_url("https://backend.example/"));
  REQUIRE(ok);
  REQUIRE(ok->backends.size() == 1);
  CHECK(ok->backends[0].host == "backend.example");
  CHECK(ok->backends[0].port == 443);
  // An IPv6 literal: the host without its brackets (as the TLS address check wants it).
  auto v6 = parse_config(replace_url("https://[::1]:8443"));
  REQUIRE(v6);
  REQUIRE(v6->backends.size() == 1);
  CHECK(v6->backends[0].host == "::1");
  CHECK(v6->backends[0].port == 8443);
  // Several nodes, separated by commas: kept in order, the first tried first.
  auto three = parse_config(replace_url("https://a.example:8443, https://[::1]:8444/,https://10.0.0.3"));
  REQUIRE(three);
  REQUIRE(three->backends.size() == 3);
  CHECK(three->backends[0].host == "a.example");
  CHECK(three->backends[0].port == 8443);
  CHECK(three->backends[1].host == "::1");
  CHECK(three->backends[1].port == 8444);
  CHECK(three->backends[2].host == "10.0.0.3");
  CHECK(three->backends[2].port == 443);
  const std::vector<std::pair<std::string, const char*>> bad_lists = {
      {"https://a:1,", "entry 2 is empty"},
      {",https://a:1", "entry 1 is empty"},
      {"https://a:1, http://b:2", "entry 2: "},
      {"https://a:1, https://a:1/", "entry 2 repeats an earlier one"},
      {"https://a:1,https://a:2,https://a:3,https://a:4,https://a:5,https://a:6,https://a:7,https://a:8,https://a:9",
       "more than 8 backend URLs"},
  };
  for (const auto& [list, needle] : bad_lists) {
    INFO(list);
    auto r = parse_config(replace_url(list));
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("backend_url") && Catch::Contains(needle));
  }
  auto tid = kMinimal;
  tid.replace(tid.find("TERM0001"), 8, "T1");
  CHECK_FALSE(parse_config(tid));
  CHECK_FALSE(parse_config(kMinimal + "door_id = a\x01" "b\n"));
}

TEST_CASE("config: load_config reports a missing file", "[terminal][config]") {
  auto r = load_config("/nonexistent/otac-terminal.conf");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::io);
  CHECK_THAT(r.error().message, Catch::Contains("/nonexistent/otac-terminal.conf"));
}

TEST_CASE("amounts and currencies (ISO 4217 exponents)", "[terminal][config]") {
  CHECK(*parse_amount("12.50", 2) == 1250);
  CHECK(*parse_amount("12.5", 2) == 1250);
  CHECK(*parse_amount("12", 2) == 1200);
  CHECK(*parse_amount("0.01", 2) == 1);
  CHECK(*parse_amount("1000", 0) == 1000);
  CHECK(*parse_amount("9999999999.99", 2) == 999999999999ULL);
  for (const char* bad : {"", ".5", "12.", "12.345", "1,00", "-1", "1e3", "99999999999.99", " 1"}) {
    INFO(bad);
    CHECK_FALSE(parse_amount(bad, 2));
  }
  CHECK_FALSE(parse_amount("1.5", 0));
  CHECK(format_amount(1250, 2) == "12.50");
  CHECK(format_amount(5, 2) == "0.05");
  CHECK(format_amount(5, 0) == "5");
  CHECK(format_amount(1234, 3) == "1.234");
  std::uint16_t n = 0;
  std::string a;
  int e = 0;
  REQUIRE(lookup_currency("978", n, a, e));
  CHECK((n == 978 && a == "EUR" && e == 2));
  REQUIRE(lookup_currency("JPY", n, a, e));
  CHECK((n == 392 && e == 0));
  CHECK_FALSE(lookup_currency("eur", n, a, e));
  CHECK_FALSE(lookup_currency("1234", n, a, e));
}

TEST_CASE("backend answers: strict parse", "[terminal][json]") {
  auto a = parse_answer(R"({"txn_id":"T-1","decision":"held","reason":"review","arc":"3139","extra":[1,2]})");
  REQUIRE(a);
  CHECK(a->decision == Decision::held);
  CHECK(a->arc == Bytes{0x31, 0x39});
  CHECK(a->arpc.empty());
  auto b = parse_answer(R"({"txn_id":"T-1","decision":"approved","reason":"ok","auth_code":"A1B2C3","arc":"3030","arpc":"0011223344556677"})");
  REQUIRE(b);
  CHECK(b->auth_code == "A1B2C3");
  CHECK(b->arpc == hex("0011223344556677"));
  for (const char* bad : {R"({"txn_id":1,"decision":"held","reason":"r"})",
                          R"({"txn_id":"T","decision":"held"})",
                          R"({"txn_id":"T","decision":"held","reason":"r","arc":"31"})",
                          R"({"txn_id":"T","decision":"held","reason":"r","arc":"zz39"})",
                          R"({"txn_id":"T","decision":"declined","reason":"r","auth_code":"a b"})",
                          R"({"txn_id":"","decision":"declined","reason":"r"})",
                          R"({"txn_id":"T","decision":"declined","reason":"r"} trailing)"}) {
    INFO(bad);
    CHECK_FALSE(parse_answer(bad));
  }
}

TEST_CASE("request bodies and error summaries", "[terminal][json]") {
  auto body = boost::json::parse(code_request_body("T-2", hex("0102030405060708"), "12345678", "FRONT")).as_object();
  CHECK(body.at("txn_id").as_string() == "T-2");
  CHECK(body.at("card").as_string() == "0102030405060708");
  CHECK(body.at("code").as_string() == "12345678");
  CHECK(body.at("door").as_string() == "FRONT");
  CHECK_FALSE(boost::json::parse(code_request_body("T-2", hex("0102030405060708"), "12345678", "")).as_object().contains("door"));
  CHECK(error_summary(R"({"error":"unknown_terminal","message":"terminal X is not registered"})") ==
        "unknown_terminal: terminal X is not registered");
  CHECK(error_summary("<html>\nbad gateway") == "<html> bad gateway");
}

TEST_CASE("config: the shipped example parses", "[terminal][config]") {
  auto c = load_config(std::string(OTAC_TEST_DATA_DIR) + "/../../terminal/otac-terminal.conf.example");
  REQUIRE(c);
  CHECK(c->reader == "pn532_uart:/dev/ttyUSB0");
  CHECK(c->terminal_id == "TERM0001");
}
