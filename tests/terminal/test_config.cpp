// The otac-terminal config parser, amounts and currencies, and the backend JSON bodies.
#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <fstream>

#include "terminal/backend_json.hpp"
#include "terminal/config.hpp"
#include "test_support.hpp"

using namespace otac;
using namespace otac::terminal;

namespace {
const std::string kMinimal =
    "# a terminal\n"
    "reader = \"pn532_uart:/tmp/pn532\"\n"
    "backend_url = \"https://127.0.0.1:8443\"\n"
    "ca_file = \"ca.pem\"   # trust only this CA\n"
    "cert_file = \"/etc/otac/t.pem\"\n"
    "key_file = 't.key'\n"
    "terminal_id = \"TERM0001\"\n";

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }
}  // namespace

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
  CHECK(c->data_dir == "/etc/otac");
}

TEST_CASE("config: every optional key", "[terminal][config]") {
  auto c = parse_config(kMinimal +
                            "mode = \"door\"\ndoor_id = \"FRONT\"\ncurrency = \"GBP\"\nrelay = \"gpiod\"\n"
                            "relay_chip = \"gpiochip1\"\nrelay_line = 17\nrelay_active_low = true\nrelay_pulse_ms = 2500\n"
                            "pin_source = \"stdin\"\nheld_wait_limit_s = 5\ncard_wait_ms = 100\napdu_timeout_ms = 200\n"
                            "removal_wait_ms = 0\nconnect_timeout_ms = 300\nbackend_timeout_ms = 400\nbackend_attempts = 2\n"
                            "pin_timeout_s = 9\ndata_dir = \"spool\"\ndispenser_socket = \"/run/d.sock\"\n"
                            "dispenser_take_s = 20\noutcome_retry_s = 0\n",
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
  CHECK(c->data_dir == "/x/spool");
  CHECK(c->dispenser_socket == "/run/d.sock");
  CHECK(c->dispenser_take_s == 20);
  CHECK(c->outcome_retry_s == 0);
  auto cmd = parse_config(kMinimal + "relay = \"command\"\nrelay_command = \"relay.sh\"\n", "/x");
  REQUIRE(cmd);
  CHECK(cmd->relay_command == "/x/relay.sh");
}

TEST_CASE("config: each error is one line naming the file, the line and the key", "[terminal][config]") {
  struct Case { std::string text; const char* expect; };
  const std::vector<Case> cases = {
      // TOML syntax (an old-format value without quotes; a broken table header).
      {kMinimal + "mode = pos\n", "t.conf:8: mode: not valid TOML: "},
      {kMinimal + "[terminal\n", "t.conf:8: not valid TOML: "},
      {kMinimal + "just words\n", "t.conf:8: not valid TOML: "},
      // A key twice.
      {kMinimal + "reader = \"pcsc\"\n", "t.conf:8: reader: not valid TOML: "},
      // Unknown keys, tables included.
      {kMinimal + "colour = \"blue\"\n", "t.conf:8: colour: unknown key (otac-terminal --help lists the known keys)"},
      {kMinimal + "[relay]\nline = 17\n", "t.conf:8: relay: must be a string in double quotes"},
      // Wrong types.
      {kMinimal + "relay_line = \"17\"\n", "t.conf:8: relay_line: must be a whole number (without quotes)"},
      {kMinimal + "relay_line = 1.5\n", "t.conf:8: relay_line: must be a whole number (without quotes)"},
      {kMinimal + "relay_active_low = \"yes\"\n", "t.conf:8: relay_active_low: must be true or false (without quotes)"},
      {kMinimal + "door_id = 7\n", "t.conf:8: door_id: must be a string in double quotes"},
      {kMinimal + "door_id = \"a\\u0001b\"\n", "t.conf:8: door_id: control characters in the value"},
      // Out of range, or refused by our rules.
      {kMinimal + "relay_line = -1\n", "t.conf:8: relay_line: must be a whole number from 0 to 1023 (is -1)"},
      {kMinimal + "\nrelay_pulse_ms = 10\n", "t.conf:9: relay_pulse_ms: must be a whole number from 50 to 30000 (is 10)"},
      {kMinimal + "mode = \"kiosk\"\n", "t.conf:8: mode: must be \"pos\" or \"door\""},
      {kMinimal + "currency = \"XXX\"\n", "t.conf:8: currency: unknown currency"},
      {kMinimal + "door_id = \"12345678901234567\"\n", "t.conf:8: door_id: must be 1 to 16 characters"},
      {kMinimal + "reader_x = 1\n", "t.conf:8: reader_x: unknown key"},
      // Checks across keys name the key that asked for the other.
      {kMinimal + "mode = \"door\"\n", "t.conf:8: mode: \"door\" needs door_id"},
      {kMinimal + "relay = \"command\"\n", "t.conf:8: relay: \"command\" needs relay_command"},
      // A missing required key has no line of its own.
      {"reader = \"pcsc\"\n", "t.conf: backend_url: missing (a required key)"},
      {"backend_url = \"https://h\"\n", "t.conf: reader: missing (a required key)"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto r = parse_config(c.text, ".", "t.conf");
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::StartsWith(c.expect));
    CHECK(r.error().message.find('\n') == std::string::npos);
  }
  auto replace_url = [](const std::string& url) {
    std::string t = kMinimal;
    t.replace(t.find("\"https://127.0.0.1:8443\""), 24, url);
    return t;
  };
  for (const char* url : {"\"http://127.0.0.1:80\"", "\"https://\"", "\"https://h:0\"", "\"https://h:99999\"",
                          "\"https://h/path\"", "\"https://u@h\"", "\"https://h?q=1\"", "\"https://[::1\"",
                          "\"https://h%00x\"", "[]", "[\"https://a\", 5]", "[\"https://a\", \"http://b\"]", "443"}) {
    INFO(url);
    auto r = parse_config(replace_url(url), ".", "t.conf");
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::StartsWith("t.conf:3: backend_url: "));
  }
  auto ok = parse_config(replace_url("\"https://backend.example/\""));
  REQUIRE(ok);
  REQUIRE(ok->backends.size() == 1);
  CHECK(ok->backends[0].host == "backend.example");
  CHECK(ok->backends[0].port == 443);
  // An IPv6 literal: the host without its brackets (as the TLS address check wants it).
  auto v6 = parse_config(replace_url("\"https://[::1]:8443\""));
  REQUIRE(v6);
  REQUIRE(v6->backends.size() == 1);
  CHECK(v6->backends[0].host == "::1");
  CHECK(v6->backends[0].port == 8443);
  // An array of nodes, kept in order, the first tried first.
  auto two = parse_config(replace_url("[\"https://a.example:8443\", \"https://b.example\"]"));
  REQUIRE(two);
  REQUIRE(two->backends.size() == 2);
  CHECK(two->backends[0].host == "a.example");
  CHECK(two->backends[0].port == 8443);
  CHECK(two->backends[1].host == "b.example");
  CHECK(two->backends[1].port == 443);
  auto dup = parse_config(replace_url("[\"https://a:1\", \"https://a:1/\"]"), ".", "t.conf");
  REQUIRE_FALSE(dup);
  CHECK_THAT(dup.error().message, Catch::StartsWith("t.conf:3: backend_url: ") && Catch::Contains("repeats"));
  // Or one string with several, separated by commas: kept in order, the first tried first.
  auto three = parse_config(replace_url("\"https://a.example:8443, https://[::1]:8444/,https://10.0.0.3\""));
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
    auto r = parse_config(replace_url("\"" + list + "\""));
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("backend_url") && Catch::Contains(needle));
  }
  auto tid = kMinimal;
  tid.replace(tid.find("TERM0001"), 8, "T1");
  CHECK_FALSE(parse_config(tid));
}

TEST_CASE("config: non-ASCII where toml++ 3.3.0 checks for whitespace gets an error, not undefined behaviour",
          "[terminal][config]") {
  // marzer/tomlplusplus issues 190 and 295, and what fuzz_terminal_config_toml found: toml++
  // reached TOML_UNREACHABLE for these (common/sys/src/config_file.cpp). An OTAC_SANITIZE
  // build reports it if it comes back.
  const std::string inputs[] = {
      "s = \"\"\"\\\n\xc2\xa7\"\"\"\n",
      "\xcc\xaa",
      "reader = \"pcsc\"\nbackend_url = -r[\"https://[::\xd0\xab:8443\",)\"https\xff\xff c = 1\n",
      kMinimal + "\xc3\xa9 = 1\n",
      kMinimal + "mode =\xe3\x80\x81\"pos\"\n",
  };
  for (const auto& text : inputs) {
    INFO(text);
    auto r = parse_config(text, ".", "t.conf");
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::StartsWith("t.conf:"));
  }
  // Non-ASCII in strings and comments is fine.
  auto ok = parse_config(kMinimal + "door_id = \"Tür 1\"  # Eingang, café\n", ".", "t.conf");
  REQUIRE(ok);
  CHECK(ok->door_id == "Tür 1");
}

TEST_CASE("config: load_config names the file", "[terminal][config]") {
  auto r = load_config("/nonexistent/otac-terminal.conf");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::io);
  CHECK_THAT(r.error().message, Catch::Contains("/nonexistent/otac-terminal.conf"));
  test::TempDir d;
  const auto f = (d.path / "terminal.conf").string();
  write(f, kMinimal + "backend_attempts = 11\n");
  auto bad = load_config(f);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == f + ":8: backend_attempts: must be a whole number from 1 to 10 (is 11)");
  write(f, kMinimal);
  auto good = load_config(f);
  REQUIRE(good);
  CHECK(good->ca_file == d.path.string() + "/ca.pem");
}

TEST_CASE("config: an old key = value file converts line for line to the same values", "[terminal][config]") {
  test::TempDir d;
  const auto old = (d.path / "old.conf").string();
  // The old reader: '#' anywhere starts a comment, values are taken as written (no quote
  // stripping), yes/no/1/0 booleans, numbers with leading zeros.
  write(old,
        "# a terminal\n"
        "reader = pn532_uart:/tmp/pn532\n"
        "backend_url = https://127.0.0.1:8443\n"
        "ca_file = ca.pem   # trust only this CA\n"
        "cert_file = /etc/otac/t.pem\n"
        "key_file = t.key\r\n"
        "terminal_id = TERM0001\n"
        "\n"
        "  relay_active_low = yes\n"
        "relay_line = 017\n"
        "currency = 978\n");
  auto toml = convert_config(old);
  REQUIRE(toml);
  CHECK(*toml ==
        "# a terminal\n"
        "reader = \"pn532_uart:/tmp/pn532\"\n"
        "backend_url = \"https://127.0.0.1:8443\"\n"
        "ca_file = \"ca.pem\"  # trust only this CA\n"
        "cert_file = \"/etc/otac/t.pem\"\n"
        "key_file = \"t.key\"\n"
        "terminal_id = \"TERM0001\"\n"
        "\n"
        "relay_active_low = true\n"
        "relay_line = 17\n"
        "currency = \"978\"\n");
  auto c = parse_config(*toml, "/x");
  REQUIRE(c);
  CHECK(c->relay_active_low);
  CHECK(c->relay_line == 17);
  CHECK(c->currency_alpha == "EUR");
  // A key set twice was an error, and stays one; so does a value the old reader refused.
  write(old, "reader = pcsc\nreader = pcsc\n");
  auto twice = convert_config(old);
  REQUIRE_FALSE(twice);
  CHECK(twice.error().message == old + ":2: reader: set twice (also on line 1)");
  write(old, "reader = pcsc\nbackend_url = https://h\nca_file = c\ncert_file = c\nkey_file = k\n"
             "terminal_id = TERM0001\nrelay_pulse_ms = ten\n");
  auto refused = convert_config(old);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message == old + ":7: relay_pulse_ms: must be a whole number (without quotes)");
  // Loading an old file says how to convert it.
  write(old, "reader = pcsc\nbackend_url = https://h\nca_file = c\ncert_file = c\nkey_file = k\nterminal_id = TERM0001\n");
  auto hint = load_config(old);
  REQUIRE_FALSE(hint);
  CHECK_THAT(hint.error().message, Catch::StartsWith(old + ":1: reader: not valid TOML: ") &&
                                       Catch::Contains("otac-terminal --convert-config " + old + " > NEW"));
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

TEST_CASE("config: the shipped example (/etc/otac/terminal.conf) loads, and so does each commented key in it",
          "[terminal][config]") {
  const std::string example = std::string(OTAC_TEST_DATA_DIR) + "/../../terminal/otac-terminal.conf.example";
  auto c = load_config(example);
  REQUIRE(c);
  CHECK(c->reader == "pn532_uart:/dev/ttyUSB0");
  CHECK(c->terminal_id == "TERM0001");
  // The commented-out keys are examples too: uncommented, the file still loads.
  std::ifstream in(example);
  std::string line, text;
  int uncommented = 0;
  while (std::getline(in, line)) {
    const auto eq = line.find(" = ");
    const auto key_start = line.find_first_not_of("# ");
    if (line.rfind('#', 0) == 0 && eq != std::string::npos && key_start != std::string::npos &&
        line.find(' ', key_start) == eq && line.substr(key_start, eq - key_start).find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string::npos) {
      line = line.substr(key_start);
      if (line.rfind("mode = ", 0) == 0) text += "# ";  // the file sets mode already
      ++uncommented;
    }
    text += line + "\n";
  }
  CHECK(uncommented >= 10);
  auto all = parse_config(text, "/etc/otac", "example");
  INFO(text);
  REQUIRE(all);
  CHECK(all->door_id == "FRONT");
  CHECK(all->relay == RelayKind::gpiod);
  CHECK(all->relay_line == 17);
  CHECK(all->dispenser_take_s == 30);
}
