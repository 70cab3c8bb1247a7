// Integration: the terminal's PC/SC reader and flow against a real pcscd with its vpcd
// virtual reader and otac-card (the applet) as the card. The backend is an in-process stand-in
// that checks the card's cryptogram independently (protocol.md 3, MAC input assembled by hand
// in the applet's test fixture) and answers with an ARPC the card verifies in CONFIRM.
#include <algorithm>
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

struct FixedRng {
  Bytes un;
  Bytes operator()(std::size_t) const { return un; }
};

}  // namespace

TEST_CASE("PC/SC reader + flow through pcscd/vpcd and otac-card: approve, confirm, tampered ARPC refused",
          "[terminal][pcsc][integration]") {
  FileLock lock("/tmp/otac-pcscd.lock");
  TempDir dir;
  const auto state = dir.path / "card.state";
  auto codes = test_codes(5);
  {
    FileStorage fs(state);
    Card c;
    personalize(c);
    load_codes(c, 3, codes, 1);
    REQUIRE(fs.commit(c.store.load().value()));
  }
  Pcscd pcscd(dir.path / "pcscd");
  const auto port = pcscd.vpcd_port();
  Child card({OTAC_CARD_BIN, "run", "--state", state.string(), "--vicc", "127.0.0.1:" + port}, dir.path / "card.log");

  auto reader = term::open_reader("pcsc:Virtual PCD");
  REQUIRE(reader.ok());
  CHECK((*reader)->name().find("Virtual PCD") != std::string::npos);

  // Tap 1: the backend stand-in approves after checking the cryptogram with code 0.
  {
    Ch ch;  // un 0102030405060708
    std::string posted;
    term::DriverIo io;
    io.reader = reader->get();
    io.post = [&](const std::string& body) -> Result<std::string> {
      posted = body;
      return term::test::fixture_answer(body, "T-PCSC-1", codes[0], ch.mac_input(3, 0, 1),
                                        [](const Bytes& k, const Bytes& d) { return mac8(0x01, k, d); });
    };
    io.poll = [](const std::string&, unsigned) -> Result<std::string> { return Error{Errc::io, "unused"}; };
    std::vector<std::string> shown;
    io.display = [&shown](const std::string& line) { shown.push_back(line); };
    term::DriverLimits lim;
    lim.card_wait = std::chrono::milliseconds(10000);  // the card shows up ~0.4 s after the vicc connects
    lim.removal_wait = std::chrono::milliseconds(0);
    term::Flow flow(term::test::fixture_txn("T-PCSC-1"), FixedRng{ch.un});
    auto out = term::run_flow(flow, io, lim);
    INFO(out.reason << ": " << out.detail);
    CHECK(out.decision == term::Decision::approved);
    CHECK(out.reason == "ok");
    CHECK(out.card_hex == to_hex(kN));
    CHECK(out.list_id == 3);
    CHECK(out.index == 0);
    CHECK(out.atc == 1);
    CHECK(out.card_confirmed);
    CHECK(out.apdu_exchanges == 3);
    // The decision reaches the display (its latency is bench/tap_latency's to measure).
    CHECK(std::find(shown.begin(), shown.end(), "APPROVED") != shown.end());
    CHECK(boost::json::parse(posted).as_object().at("challenge").as_string() ==
          to_hex(term::build_challenge(term::test::fixture_txn("T-PCSC-1"), ch.un, {})));
  }
  // Tap 2: a tampered ARPC; the card refuses it in CONFIRM. The decision shown stays the
  // backend's, and the outcome records that the card did not confirm.
  {
    Ch ch;
    ch.un = hex("1112131415161718");
    term::DriverIo io;
    io.reader = reader->get();
    io.post = [&](const std::string& body) -> Result<std::string> {
      auto o = boost::json::parse(body).as_object();
      const Bytes cryptogram = from_hex(std::string(o.at("cryptogram").as_string())).value();
      CHECK(cryptogram == mac8(0x01, codes[1], ch.mac_input(3, 1, 2)));
      Bytes in = to_bytes("ARPC");
      append(in, cryptogram);
      append(in, to_bytes("00"));
      Bytes arpc = mac8(0x01, codes[1], in);
      arpc[0] ^= 0x01;
      return R"({"txn_id":"T-PCSC-2","decision":"approved","reason":"ok","auth_code":"1","arc":"3030","arpc":")" +
             to_hex(arpc) + "\"}";
    };
    term::DriverLimits lim;
    lim.card_wait = std::chrono::milliseconds(5000);
    lim.removal_wait = std::chrono::milliseconds(0);
    term::Flow flow(term::test::fixture_txn("T-PCSC-2"), FixedRng{ch.un});
    auto out = term::run_flow(flow, io, lim);
    INFO(out.reason << ": " << out.detail);
    CHECK(out.index == 1);
    CHECK_FALSE(out.card_confirmed);
  }
  // Tap 3: the backend is down: declined, never approved, same body on every attempt.
  {
    term::DriverIo io;
    io.reader = reader->get();
    std::vector<std::string> bodies;
    io.post = [&](const std::string& body) -> Result<std::string> {
      bodies.push_back(body);
      return Error{Errc::io, "connection refused"};
    };
    term::DriverLimits lim;
    lim.card_wait = std::chrono::milliseconds(5000);
    lim.removal_wait = std::chrono::milliseconds(0);
    term::Flow flow(term::test::fixture_txn("T-PCSC-3"), FixedRng{hex("2122232425262728")});
    auto out = term::run_flow(flow, io, lim);
    CHECK(out.decision == term::Decision::declined);
    CHECK(out.reason == "backend_unreachable");
    REQUIRE(bodies.size() == 3);
    CHECK(bodies[0] == bodies[1]);
    CHECK(bodies[1] == bodies[2]);
  }
  reader->reset();
  CHECK(card.stop() == 0);
}
