// Integration: otac-terminal end to end through libnfc + otac-pn532-emu + otac-card and a real
// otac-backend. The card is activated but holds no list (lists arrive by SMS, which the
// end-to-end tests cover), so purchases end "no_codes" after 2 APDUs; the code command reads
// the card id with a tap and the backend answers for it; door refusals leave the relay alone.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>

#include <boost/json.hpp>

#include "process.hpp"
#include "support.hpp"

using namespace otac::applet::test;

namespace {

using otac::terminal::test::last_json;

// otac-terminal with libnfc's device scan off; its stderr (the display) is not read.
ShellResult run(const std::string& cmd) { return run_shell("LIBNFC_AUTO_SCAN=false " + cmd + " 2>/dev/null"); }

}  // namespace

TEST_CASE("otac-terminal pos, door and code through libnfc, the PN532 emulator and otac-backend",
          "[terminal][cli][integration]") {
  TempDir dir;
  const auto data = dir.path / "data";
  Child backend({OTAC_BACKEND_BIN, "--data-dir", data.string(), "--listen", "127.0.0.1:0"}, dir.path / "backend.log");
  std::string port;
  for (int i = 0; i < 200 && port.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (std::filesystem::exists(data / "backend.port")) port = first_line(data / "backend.port");
  }
  REQUIRE_FALSE(port.empty());
  REQUIRE(sh(std::string(OTAC_ADMIN_BIN) + " --url https://127.0.0.1:" + port + " --ca " + (data / "ca.pem").string() +
             " --token-file " + (data / "admin.token").string() + " register-terminal TERM0001 --out " +
             (dir.path / "term").string() + " >/dev/null 2>&1") == 0);
  const auto link = dir.path / "pn532";
  Child emu({OTAC_PN532_EMU_BIN, "--link", link.string(), "--card-port", "0", "--port-file", (dir.path / "card.port").string()},
            dir.path / "emu.log");
  std::string card_port;
  for (int i = 0; i < 200 && card_port.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    card_port = first_line(dir.path / "card.port");
  }
  REQUIRE_FALSE(card_port.empty());
  const auto state = (dir.path / "card.state").string();
  REQUIRE(sh(std::string(OTAC_CARD_BIN) + " init --state " + state + " >/dev/null 2>&1") == 0);
  // K from an owner-only file, the PIN and PUK on standard input: no secret as an argument.
  const auto k_file = dir.path / "k.hex";
  { std::ofstream(k_file) << "0123456789abcdeffedcba9876543210\n"; }
  std::filesystem::permissions(k_file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::replace);
  REQUIRE(sh("printf '1234\\n12345678\\n' | " + std::string(OTAC_CARD_BIN) + " activate --state " + state +
             " --n 0102030405060708 --k-file " + k_file.string() + " --alg des3 --server-number +15550100 >/dev/null 2>&1") == 0);
  Child card({OTAC_CARD_BIN, "run", "--state", state, "--vicc", "127.0.0.1:" + card_port}, dir.path / "card.log");
  const auto relay_log = dir.path / "relay.log";
  const auto relay = dir.path / "relay.sh";
  {
    std::ofstream r(relay);
    r << "#!/bin/sh\necho \"$@\" >> " << relay_log.string() << "\n";
  }
  std::filesystem::permissions(relay, std::filesystem::perms::owner_all);
  const auto conf = dir.path / "t.conf";
  {
    std::ofstream f(conf);
    f << "reader = \"pn532_uart:" << link.string() << "\"\nbackend_url = \"https://127.0.0.1:" << port
      << "\"\nca_file = \"data/ca.pem\"\ncert_file = \"term/TERM0001.pem\"\nkey_file = \"term/TERM0001.key\"\n"
         "terminal_id = \"TERM0001\"\nremoval_wait_ms = 0\ncard_wait_ms = 5000\npin_source = \"none\"\n"
         "door_id = \"FRONT\"\nrelay = \"command\"\nrelay_command = \"relay.sh\"\nrelay_pulse_ms = 100\n";
  }
  const std::string term = std::string(OTAC_TERMINAL_BIN) + " --config " + conf.string();

  auto pos = run(term + " pos --amount 12.50");
  INFO(pos.out);
  CHECK(pos.status == 1);
  auto pj = last_json(pos.out);
  CHECK(pj.at("reason").as_string() == "no_codes");
  CHECK(pj.at("amount").as_string() == "12.50");
  CHECK(pj.at("currency").as_string() == "EUR");
  CHECK(pj.at("apdu_exchanges").as_int64() == 2);
  CHECK(pos.out.find("POS DECLINED 12.50 EUR") != std::string::npos);

  auto code = run(term + " code 12345678");
  INFO(code.out);
  CHECK(code.status == 1);
  auto cj = last_json(code.out);
  CHECK(cj.at("card").as_string() == "0102030405060708");
  CHECK(cj.at("card_masked").as_string() == "************0708");
  CHECK(cj.at("reason").as_string() == "unknown_card");
  CHECK(cj.at("door").as_string() == "");

  auto door = run(term + " door");
  INFO(door.out);
  CHECK(door.status == 1);
  auto dj = last_json(door.out);
  CHECK(dj.at("door").as_string() == "FRONT");
  CHECK_FALSE(dj.at("door_opened").as_bool());
  CHECK_FALSE(std::filesystem::exists(relay_log));  // fail secure: a refusal never pulses the relay

  // A reader that cannot be opened: one report, and no empty "txn " when no transaction began.
  const auto broken = dir.path / "broken.conf";
  {
    std::ifstream in(conf);
    std::ofstream out(broken);
    std::string line;
    for (int i = 0; i < 100 && std::getline(in, line); ++i)
      out << (line.rfind("reader = ", 0) == 0 ? "reader = \"pn532_uart:" + (dir.path / "no-such-tty").string() + "\"" : line)
          << "\n";
  }
  auto failed = run(std::string(OTAC_TERMINAL_BIN) + " --config " + broken.string() + " pos --amount 1.00");
  INFO(failed.out);
  CHECK(failed.status == 1);
  CHECK(last_json(failed.out).at("reason").as_string() == "reader_error");
  const std::string summary = failed.out.substr(0, failed.out.find('\n'));
  CHECK(summary.find("reason reader_error") != std::string::npos);
  CHECK(summary.find(" txn") == std::string::npos);
  auto named = run(std::string(OTAC_TERMINAL_BIN) + " --config " + broken.string() + " pos --amount 1.00 --txn-id T-1");
  CHECK(named.out.substr(0, named.out.find('\n')).find(" txn T-1") != std::string::npos);
}
