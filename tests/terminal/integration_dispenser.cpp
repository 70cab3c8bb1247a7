// The terminal's socket dispenser driver against the real otac-dispenser-emu process: a full
// payout, each injected fault, an amount the cassettes cannot make, and a dispenser that is gone.
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "terminal/dispenser.hpp"

namespace fs = std::filesystem;
namespace d = otac::dispenser;
using otac::terminal::Dispenser;

extern char** environ;

namespace {

// otac-dispenser-emu on a socket in a fresh directory, stopped by its PID.
struct Emulator {
  fs::path dir;
  fs::path socket;
  pid_t pid = -1;

  explicit Emulator(const std::string& cassettes) {
    std::string tmpl = (fs::temp_directory_path() / "otac-disp-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    socket = dir / "dispenser.sock";
    const std::string ready = (dir / "ready").string();
    std::vector<std::string> args = {OTAC_DISPENSER_EMU_BIN, "--socket", socket.string(), "--cassettes", cassettes, "--ready-file", ready};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) == 0);
    for (int i = 0; i < 100 && !fs::exists(ready); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(fs::exists(ready));
  }
  ~Emulator() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      int st = 0;
      ::waitpid(pid, &st, 0);
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::unique_ptr<Dispenser> driver() { return otac::terminal::open_socket_dispenser(socket.string(), std::chrono::milliseconds(2000)).value(); }
  // Sends FAULT KIND on a connection of its own, as a test harness does (the terminal's driver
  // has no such command).
  void fault(const char* kind) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket.c_str());
    REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    const std::string line = "FAULT " + std::string(kind) + "\n";
    REQUIRE(::send(fd, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size()));
    char buf[64] = {};
    const ssize_t n = ::recv(fd, buf, sizeof buf - 1, 0);  // blocking: the emulator answers at once
    ::close(fd);
    CHECK(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0) == "OK FAULT " + std::string(kind) + "\n");
  }
};

}  // namespace

TEST_CASE("dispenser driver: payouts and faults through otac-dispenser-emu") {
  Emulator emu("2000x10,5000x2");
  auto disp = emu.driver();
  auto c = disp->cassettes();
  REQUIRE(c);
  REQUIRE(c->size() == 2);
  CHECK((*c)[1] == d::Cassette{5000, 2});
  CHECK(otac::terminal::payable(*c, 7000));
  CHECK_FALSE(otac::terminal::payable(*c, 1000));

  auto ok = disp->dispense(7000, std::chrono::seconds(5));
  REQUIRE(ok);
  CHECK(ok->status == d::Status::dispensed);
  CHECK(ok->handed_minor == 7000);
  CHECK(disp->cassettes().value() == std::vector<d::Cassette>{{2000, 9}, {5000, 1}});

  emu.fault("jam");
  auto jam = disp->dispense(4000, std::chrono::seconds(5));
  REQUIRE(jam);
  CHECK(jam->status == d::Status::jam);
  CHECK(jam->handed_minor == 0);

  emu.fault("partial");
  auto partial = disp->dispense(9000, std::chrono::seconds(5));  // 5000 + 2 x 2000: the 5000 comes out
  REQUIRE(partial);
  CHECK(partial->status == d::Status::partial);
  CHECK(partial->handed_minor == 5000);

  emu.fault("shutter");
  CHECK(disp->dispense(2000, std::chrono::seconds(5))->status == d::Status::shutter);

  emu.fault("not_taken");
  const auto before = std::chrono::steady_clock::now();
  auto retracted = disp->dispense(2000, std::chrono::seconds(1));
  REQUIRE(retracted);
  CHECK(retracted->status == d::Status::retracted);
  CHECK(retracted->handed_minor == 0);
  CHECK(std::chrono::steady_clock::now() - before >= std::chrono::milliseconds(900));  // the customer had the take time

  emu.fault("empty");
  CHECK(disp->dispense(2000, std::chrono::seconds(5))->status == d::Status::empty);
  CHECK(disp->dispense(1000, std::chrono::seconds(5))->status == d::Status::empty);  // no 1000s at all
}

TEST_CASE("dispenser driver: a dispenser that is gone is an error, not a payout") {
  auto disp = otac::terminal::open_socket_dispenser("/nonexistent/otac-dispenser.sock", std::chrono::milliseconds(500)).value();
  auto r = disp->dispense(2000, std::chrono::seconds(1));
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("/nonexistent/otac-dispenser.sock") != std::string::npos);
}
