// Interoperability: the challenge the terminal builds is read by the backend's own parser
// (backend/service/challenge.hpp, on common/protocol) with the values we meant, in POS and door mode, with and
// without the PIN block, and the backend's MAC input equals protocol.md 3 assembled by hand.
#include <catch2/catch.hpp>

#include "challenge.hpp"
#include "terminal/flow.hpp"

using namespace otac;
namespace term = otac::terminal;

TEST_CASE("the backend parses the terminal's challenge", "[terminal][interop]") {
  term::TxnParams p;
  p.txn_id = "T-1";
  p.terminal_id = "TERM0001";
  p.amount = 123456;
  p.currency = 826;
  p.year = 2026; p.month = 1; p.day = 2; p.hour = 3; p.minute = 4; p.second = 5;
  const Bytes un = hex("A0A1A2A3A4A5A6A7");
  auto c = backend::parse_challenge(term::build_challenge(p, un, {}));
  REQUIRE(c.ok());
  CHECK(c->amount_minor == 123456);
  CHECK(c->currency_code == 826);
  CHECK(c->terminal_id() == "TERM0001");
  CHECK(Bytes(c->un.begin(), c->un.end()) == un);
  CHECK_FALSE(c->door_mode());
  CHECK(Bytes(c->date.begin(), c->date.end()) == hex("260102"));
  CHECK(Bytes(c->time.begin(), c->time.end()) == hex("030405"));
  const Bytes n = hex("0102030405060708");
  CHECK(backend::mac_input(*c, n, 3, 17, 42, 0x13) ==
        hex("DF330102 DF310101 9F3708A0A1A2A3A4A5A6A7 9F0206000000123456 5F2A020826 9A03260102 9F2103030405 9C0100"
            "9F1C085445524D30303031 DF41080102030405060708 DF42020003 DF43020011 9F3602002A DF350113"));
  auto pin = term::pin_block("1234");
  CHECK(backend::parse_challenge(term::build_challenge(p, un, pin->view())).ok());

  p.mode = term::Mode::door;
  p.amount = 0;
  p.door_id = "FRONT";
  p.txn_type = 0x90;
  auto d = backend::parse_challenge(term::build_challenge(p, un, {}));
  REQUIRE(d.ok());
  CHECK(d->door_mode());
  CHECK(d->door_id() == "FRONT");
}
