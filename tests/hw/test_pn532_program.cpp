// The otac-pn532-emu program as a process: command line, readiness file, control socket,
// nfc-list (libnfc-bin) listing the card, clean SIGTERM shutdown.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "vicc_test_card.hpp"

namespace fs = std::filesystem;

namespace {

struct CommandResult {
  int status = -1;
  std::string output;
};

// Runs a shell command line (bounded by `timeout`), capturing stdout and stderr.
CommandResult run(const std::string& cmd) {
  CommandResult r;
  FILE* p = ::popen(("timeout 30 " + cmd + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  for (int i = 0; i < 10000; ++i) {
    const std::size_t n = std::fread(buf.data(), 1, buf.size(), p);
    if (n == 0) break;
    r.output.append(buf.data(), n);
  }
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string emu_bin() { return OTAC_PN532_EMU_BIN; }

// One emulator process; SIGTERM and reap on destruction (SIGKILL if it does not stop in 5 s).
class EmulatorProcess {
 public:
  explicit EmulatorProcess(std::vector<std::string> extra = {}) {
    dir_ = fs::temp_directory_path() / ("otac-hw-prog-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::create_directories(dir_);
    std::vector<std::string> args{emu_bin(), "--link", link(), "--card-port", "0", "--port-file", port_file(),
                                  "--control", control()};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    REQUIRE(otac::test::wait_for([&] { return fs::exists(port_file()); }));
    std::ifstream in(port_file());
    unsigned p = 0;
    in >> p;
    REQUIRE(p > 0);
    port_ = static_cast<std::uint16_t>(p);
  }
  ~EmulatorProcess() {
    if (pid_ > 0) (void)stop();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // SIGTERM, then the exit status (or -1).
  int stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int st = 0;
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    return -1;
  }
  std::string link() const { return (dir_ / "pn532").string(); }
  std::string port_file() const { return (dir_ / "card.port").string(); }
  std::string control() const { return (dir_ / "control.sock").string(); }
  std::uint16_t port() const { return port_; }

  // Sends one control line, returns the answer line.
  std::string send_control(const std::string& line) const {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string path = control();
    std::memcpy(a.sun_path, path.c_str(), path.size());
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    const std::string msg = line + "\n";
    REQUIRE(::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(msg.size()));
    std::string answer;
    for (int i = 0; i < 200 && answer.find('\n') == std::string::npos; ++i) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 25) <= 0) continue;
      std::array<char, 256> buf{};
      const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) break;
      answer.append(buf.data(), static_cast<std::size_t>(n));
    }
    ::close(fd);
    return answer.substr(0, answer.find('\n'));
  }

  CommandResult nfc_list(bool verbose = false) const {
    return run("env LIBNFC_AUTO_SCAN=false LIBNFC_DEFAULT_DEVICE=pn532_uart:" + link() + " nfc-list" +
               (verbose ? " -v" : ""));
  }

 private:
  static inline int counter_ = 0;
  fs::path dir_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

}  // namespace

TEST_CASE("otac-pn532-emu --help and usage errors", "[pn532][program]") {
  auto help = run(emu_bin() + " --help");
  CHECK(help.status == 0);
  CHECK(help.output.find("Usage: otac-pn532-emu --link PATH --card-port PORT|0") != std::string::npos);
  CHECK(help.output.find("remove-after N") != std::string::npos);
  CHECK(help.output.find("pn532_uart:PATH") != std::string::npos);

  CHECK(run(emu_bin()).status == 2);
  CHECK(run(emu_bin() + " --send /nonexistent/otac-emu.sock stats").status == 1);
  CHECK(run(emu_bin() + " --link /tmp/x").status == 2);
  CHECK(run(emu_bin() + " --link /tmp/x --card-port nope").status == 2);
  for (const char* bad : {"--card-port 65536", "--card-port -1", "--card-port 0 --delay 1x", "--card-port 0 --delay 99999999999999999999",
                          "--card-port 0 --remove-after abc"})
    CHECK(run(emu_bin() + " --link /tmp/x " + bad).status == 2);
  auto bad = run(emu_bin() + " --link /tmp/x --card-port 0 --frobnicate");
  CHECK(bad.status == 2);
  CHECK(bad.output.find("--frobnicate") != std::string::npos);
}

TEST_CASE("otac-pn532-emu refuses to replace a regular file with its link", "[pn532][program]") {
  const fs::path f = fs::temp_directory_path() / ("otac-hw-notalink-" + std::to_string(::getpid()));
  { std::ofstream(f) << "keep me\n"; }
  auto r = run(emu_bin() + " --link " + f.string() + " --card-port 0");
  CHECK(r.status == 1);
  CHECK(r.output.find("not a symlink") != std::string::npos);
  CHECK(fs::is_regular_file(f));
  fs::remove(f);
}

TEST_CASE("nfc-list lists the card of otac-pn532-emu, SIGTERM cleans up", "[pn532][program][nfc-list]") {
  EmulatorProcess emu;
  CHECK(fs::is_symlink(emu.link()));
  CHECK(fs::read_symlink(emu.link()).string().rfind("/dev/pts/", 0) == 0);
  {
    otac::test::ViccTestCard card(emu.port());
    REQUIRE(otac::test::wait_for([&] { return emu.send_control("stats").find("card=in") != std::string::npos; }));
    auto out = emu.nfc_list();
    INFO(out.output);
    CHECK(out.status == 0);
    CHECK(out.output.find("1 ISO14443A passive target(s) found:") != std::string::npos);
    CHECK(out.output.find("ATQA (SENS_RES): 00  04") != std::string::npos);
    CHECK(out.output.find("08  4f  54  41") != std::string::npos);
    CHECK(out.output.find("SAK (SEL_RES): 20") != std::string::npos);
    CHECK(out.output.find("ATS: 78  80  70  02") != std::string::npos);
    CHECK(card.power_ons() >= 1);
    const std::string stats = emu.send_control("stats");
    CHECK(stats.rfind("ok frames=", 0) == 0);
    CHECK(emu.send_control("no-such-command").rfind("error:", 0) == 0);
  }
  CHECK(emu.stop() == 0);
  CHECK_FALSE(fs::exists(fs::symlink_status(emu.link())));
  CHECK_FALSE(fs::exists(emu.port_file()));
  CHECK_FALSE(fs::exists(fs::symlink_status(emu.control())));
}

TEST_CASE("flag --no-card: nfc-list finds nothing until the control socket inserts the card", "[pn532][program][nfc-list]") {
  EmulatorProcess emu({"--no-card", "--uid", "04112233445566"});
  otac::test::ViccTestCard card(emu.port());
  REQUIRE(otac::test::wait_for([&] { return emu.send_control("stats").find("card=out") != std::string::npos; }));
  auto none = emu.nfc_list(true);
  INFO(none.output);
  CHECK(none.status == 0);
  CHECK(none.output.find("0 ISO14443A passive target(s) found.") != std::string::npos);
  CHECK(card.power_ons() == 0);

  auto sent = run(emu_bin() + " --send " + emu.control() + " insert");
  CHECK(sent.status == 0);
  CHECK(sent.output == "ok\n");
  auto bad = run(emu_bin() + " --send " + emu.control() + " delay soon");
  CHECK(bad.status == 1);
  CHECK(bad.output.rfind("error: delay", 0) == 0);
  auto one = emu.nfc_list();
  INFO(one.output);
  CHECK(one.output.find("1 ISO14443A passive target(s) found:") != std::string::npos);
  CHECK(one.output.find("04  11  22  33  44  55  66") != std::string::npos);
  CHECK(one.output.find("ATQA (SENS_RES): 00  44") != std::string::npos);
}

TEST_CASE("nfc-scan-device -v reports a PN532 v1.6 on the emulator", "[pn532][program][nfc-list]") {
  EmulatorProcess emu;
  auto out = run("env LIBNFC_AUTO_SCAN=false LIBNFC_DEFAULT_DEVICE=pn532_uart:" + emu.link() + " nfc-scan-device -v");
  INFO(out.output);
  CHECK(out.status == 0);
  CHECK(out.output.find("1 NFC device(s) found:") != std::string::npos);
  CHECK(out.output.find("pn532_uart:" + emu.link()) != std::string::npos);
  CHECK(out.output.find("chip: PN532 v1.6") != std::string::npos);
}
