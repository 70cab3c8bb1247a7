// Integration: the terminal's libnfc reader (the stock pn532_uart driver) and flow against
// otac-pn532-emu on a pty with otac-card in its field; faults from the emulator's flags give
// the reader's error paths (card removed mid-transaction, timeout, no card). The backend is an
// in-process stand-in that checks the cryptogram independently (applet test fixture).
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdlib>
#include <cstring>

#include <boost/json.hpp>

#include "card_fixture.hpp"
#include "process.hpp"
#include "support.hpp"
#include "terminal/driver.hpp"
#include "terminal/reader.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;
namespace term = otac::terminal;

namespace {

// Emulator + card processes for one scenario.
struct Field {
  TempDir dir;
  std::unique_ptr<Child> emu, card;
  std::string link, control;
  // Sends one control line to the emulator; returns its one-line answer.
  std::string send(const std::string& line) const {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, control.c_str(), std::min(control.size(), sizeof a.sun_path - 1));
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    const std::string msg = line + "\n";
    REQUIRE(::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(msg.size()));
    std::string answer;
    char c = 0;
    for (int i = 0; i < 4096 && ::recv(fd, &c, 1, 0) == 1 && c != '\n'; ++i) answer.push_back(c);
    ::close(fd);
    return answer;
  }
  Field(const std::filesystem::path& state, std::vector<std::string> faults) {
    link = (dir.path / "pn532").string();
    const auto port_file = dir.path / "card.port";
    control = (dir.path / "control.sock").string();
    std::vector<std::string> args{OTAC_PN532_EMU_BIN, "--link", link, "--card-port", "0", "--port-file", port_file.string(),
                                  "--control", control};
    args.insert(args.end(), faults.begin(), faults.end());
    emu = std::make_unique<Child>(args, dir.path / "emu.log");
    std::string port;
    for (int i = 0; i < 200 && port.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
      std::ifstream in(port_file);
      std::getline(in, port);
    }
    REQUIRE_FALSE(port.empty());
    card = std::make_unique<Child>(std::vector<std::string>{OTAC_CARD_BIN, "run", "--state", state.string(), "--vicc",
                                                            "127.0.0.1:" + port},
                                   dir.path / "card.log");
  }
  ~Field() {
    card.reset();
    emu.reset();
  }
};

term::Outcome tap(term::Reader& r, const std::string& txn, const Bytes& un,
                  std::function<Result<std::string>(const std::string&)> post, term::DriverLimits lim) {
  term::DriverIo io;
  io.reader = &r;
  io.post = std::move(post);
  term::Flow flow(term::test::fixture_txn(txn), [un](std::size_t) { return un; });
  return term::run_flow(flow, io, lim);
}

}  // namespace

TEST_CASE("libnfc reader through otac-pn532-emu and otac-card: approve, removed, timeout, no card",
          "[terminal][libnfc][integration]") {
  ::setenv("LIBNFC_AUTO_SCAN", "false", 1);
  TempDir dir;
  const auto state = dir.path / "card.state";
  auto codes = test_codes(6);
  {
    FileStorage fs(state);
    Card c;
    personalize(c);
    load_codes(c, 3, codes, 1);
    REQUIRE(fs.commit(c.store.load().value()));
  }
  term::DriverLimits lim;
  lim.card_wait = std::chrono::milliseconds(5000);
  lim.apdu_timeout = std::chrono::milliseconds(1000);
  lim.removal_wait = std::chrono::milliseconds(0);

  SECTION("approved and confirmed in 3 APDU exchanges") {
    Field f(state, {});
    auto reader = term::open_reader("pn532_uart:" + f.link);
    REQUIRE(reader.ok());
    CHECK((*reader)->name() == "libnfc pn532_uart:" + f.link);
    Ch ch;
    auto out = tap(**reader, "T-NFC-1", ch.un, [&](const std::string& body) -> Result<std::string> {
      auto o = boost::json::parse(body).as_object();
      const Bytes cryptogram = from_hex(std::string(o.at("cryptogram").as_string())).value();
      if (cryptogram != mac8(0x01, codes[0], ch.mac_input(3, 0, 1)))
        return std::string(R"({"txn_id":"T-NFC-1","decision":"declined","reason":"bad_cryptogram"})");
      Bytes in = to_bytes("ARPC");
      append(in, cryptogram);
      append(in, to_bytes("00"));
      return R"({"txn_id":"T-NFC-1","decision":"approved","reason":"ok","auth_code":"111222","arc":"3030","arpc":")" +
             to_hex(mac8(0x01, codes[0], in)) + "\"}";
    }, lim);
    INFO(out.reason << ": " << out.detail);
    CHECK(out.decision == term::Decision::approved);
    CHECK(out.card_confirmed);
    CHECK(out.apdu_exchanges == 3);
    CHECK(out.card_hex == to_hex(kN));
  }
  SECTION("card removed after SELECT: declined card_removed, backend never asked") {
    Field f(state, {"--remove-after", "1"});
    auto reader = term::open_reader("pn532_uart:" + f.link);
    REQUIRE(reader.ok());
    bool asked = false;
    auto out = tap(**reader, "T-NFC-2", hex("0102030405060708"), [&](const std::string&) -> Result<std::string> {
      asked = true;
      return Error{Errc::io, "unused"};
    }, lim);
    INFO(out.detail);
    CHECK(out.decision == term::Decision::declined);
    CHECK(out.reason == "card_removed");
    CHECK_FALSE(asked);
  }
  SECTION("card answers too late: declined card_timeout") {
    Field f(state, {"--delay", "1500"});
    auto reader = term::open_reader("pn532_uart:" + f.link);
    REQUIRE(reader.ok());
    auto l = lim;
    l.apdu_timeout = std::chrono::milliseconds(300);
    auto out = tap(**reader, "T-NFC-3", hex("0102030405060708"), [](const std::string&) -> Result<std::string> {
      return Error{Errc::io, "unused"};
    }, l);
    INFO(out.detail);
    CHECK(out.decision == term::Decision::declined);
    CHECK(out.reason == "card_timeout");
  }
  SECTION("no card in the field: declined no_card within the wait") {
    Field f(state, {"--no-card"});
    auto reader = term::open_reader("pn532_uart:" + f.link);
    REQUIRE(reader.ok());
    auto l = lim;
    l.card_wait = std::chrono::milliseconds(300);
    const auto t0 = std::chrono::steady_clock::now();
    auto out = tap(**reader, "T-NFC-4", hex("0102030405060708"), [](const std::string&) -> Result<std::string> {
      return Error{Errc::io, "unused"};
    }, l);
    CHECK(out.reason == "no_card");
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3));
  }
  SECTION("wait for removal: times out while the card stays, returns when it leaves") {
    Field f(state, {});
    auto reader = term::open_reader("pn532_uart:" + f.link);
    REQUIRE(reader.ok());
    REQUIRE((*reader)->wait_card(std::chrono::milliseconds(5000)).ok());
    auto stays = (*reader)->wait_removal(std::chrono::milliseconds(300));
    REQUIRE_FALSE(stays.ok());
    CHECK(stays.error().code == Errc::timeout);
    REQUIRE((*reader)->wait_card(std::chrono::milliseconds(5000)).ok());
    std::string removed;  // checked after join: Catch2 2.x assertions belong on the main thread
    std::thread remover([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      removed = f.send("remove");
    });
    const auto t0 = std::chrono::steady_clock::now();
    auto gone = (*reader)->wait_removal(std::chrono::milliseconds(3000));
    remover.join();
    CHECK(removed.rfind("ok", 0) == 0);
    CHECK(gone.ok());
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(2000));
  }
  SECTION("no reader at the path") {
    auto reader = term::open_reader("pn532_uart:" + (dir.path / "absent").string());
    REQUIRE_FALSE(reader.ok());
    CHECK(reader.error().message.find("does not exist") != std::string::npos);
  }
}
