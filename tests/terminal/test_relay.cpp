// The door relay's command mode and its fail-secure errors (the gpiod mode needs a GPIO chip;
// without one it must fail, never report an opened door).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "terminal/relay.hpp"
#include "test_support.hpp"

using namespace otac;
using namespace otac::terminal;
namespace fs = std::filesystem;

namespace {
using Dir = otac::test::TempDir;  // tests/test_support.hpp
fs::path script(const Dir& d, const std::string& name, const std::string& body) {
  const auto p = d.path / name;
  std::ofstream(p) << "#!/bin/sh\n" << body << "\n";
  fs::permissions(p, fs::perms::owner_all);
  return p;
}
}  // namespace

TEST_CASE("relay command: run with open DOOR PULSE_MS, exit status decides", "[terminal][relay]") {
  Dir d;
  Config c;
  c.relay = RelayKind::command;
  c.relay_pulse_ms = 120;
  const auto log = d.path / "log";
  c.relay_command = script(d, "ok.sh", "echo \"$@\" > " + log.string()).string();
  REQUIRE(pulse_relay(c, "FRONT").ok());
  std::ifstream in(log);
  std::string line;
  std::getline(in, line);
  CHECK(line == "open FRONT 120");

  c.relay_command = script(d, "fail.sh", "exit 3").string();
  auto f = pulse_relay(c, "FRONT");
  REQUIRE_FALSE(f.ok());
  CHECK(f.error().message.find("door stays shut") != std::string::npos);

  c.relay_command = (d.path / "missing").string();
  CHECK_FALSE(pulse_relay(c, "FRONT").ok());

  c.relay_pulse_ms = 50;
  c.relay_command = script(d, "hang.sh", "exec sleep 30").string();
  const auto t0 = std::chrono::steady_clock::now();
  auto h = pulse_relay(c, "FRONT");
  REQUIRE_FALSE(h.ok());
  CHECK(h.error().code == Errc::timeout);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(8));
}

TEST_CASE("relay none or a missing GPIO chip: the door stays shut", "[terminal][relay]") {
  Config c;
  c.relay = RelayKind::none;
  CHECK_FALSE(pulse_relay(c, "FRONT").ok());
  c.relay = RelayKind::gpiod;
  c.relay_chip = "/nonexistent/gpiochip99";
  auto r = pulse_relay(c, "FRONT");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("cannot open GPIO chip") != std::string::npos);
}
