// The ATM path of the flow (protocol.md §5.4): VERIFY with the tries left shown, a blocked PIN
// declined offline, the amount picked after the PIN and bound into the challenge as a cash
// withdrawal (9C 01); and the outcome queue on disk.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "otac/common/apdu.hpp"
#include "terminal/flow.hpp"
#include "terminal/outcome_queue.hpp"

using namespace otac;
using namespace otac::terminal;

namespace {

TxnParams atm_params() {
  TxnParams p;
  p.txn_id = "ATM00001-7";
  p.terminal_id = "ATM00001";
  p.atm = true;
  p.txn_type = 0x01;
  p.currency = 978;
  p.year = 2026; p.month = 12; p.day = 6; p.hour = 12; p.minute = 0; p.second = 0;
  return p;
}

Bytes fixed_rng(std::size_t n) { return Bytes(n, 0x5A); }

apdu::Response resp(std::string_view hexdata, std::uint16_t sw) { return {hex(hexdata), sw}; }
const char* kFci = "6F17 8406 F04F54414301 A50D 9F0801 02 DF0201 02 DF0102 0003";
const char* kAuthResp = "77 29 DF4108 0102030405060708 DF4202 0003 DF4302 0011 9F3602 002A 9F2608 A1A2A3A4A5A6A7A8 DF3501 13";

SecretBytes pin(const char* digits) { return SecretBytes(as_bytes(std::string_view(digits))); }

// Through SELECT: the flow asks the card for the PIN's tries left.
Action to_pin_status(Flow& f) {
  REQUIRE(f.start().kind == Action::wait_card);
  REQUIRE(f.on_card().kind == Action::transmit);
  auto a = f.on_response(resp(kFci, 0x9000));
  REQUIRE(a.kind == Action::transmit);
  return a;
}

}  // namespace

TEST_CASE("atm: VERIFY, then the amount, then AUTHENTICATE with 9C 01 and that amount", "[terminal][atm]") {
  Flow f(atm_params(), fixed_rng);
  auto status = to_pin_status(f);
  // ISO 7816-4 VERIFY, P2 80, no data: the tries left.
  CHECK(status.command.cla == 0x00);
  CHECK(status.command.ins == 0x20);
  CHECK(status.command.p2 == 0x80);
  CHECK(status.command.data.empty());
  auto a = f.on_response(resp("", 0x63C3));
  REQUIRE(a.kind == Action::ask_pin);
  CHECK(a.display == "Enter PIN (3 tries left)");
  a = f.on_pin(pin("1234"));
  REQUIRE(a.kind == Action::transmit);
  CHECK(a.command.ins == 0x20);
  CHECK(a.command.data == hex("31323334FFFFFFFF"));
  a = f.on_response(resp("", 0x9000));
  REQUIRE(a.kind == Action::ask_amount);
  a = f.on_amount(5000);
  REQUIRE(a.kind == Action::transmit);
  CHECK(a.command.ins == 0xA0);
  // The challenge carries the amount picked and 9C 01, and no PIN (the card checked it).
  auto ch = protocol::Challenge::parse(a.command.data);
  REQUIRE(ch);
  CHECK(ch->amount_minor == 5000);
  CHECK(ch->type == 0x01);
  CHECK_FALSE(ch->pin);
  a = f.on_response(resp(kAuthResp, 0x9000));
  REQUIRE(a.kind == Action::post_auth);
  CHECK(a.body.find("\"pin_state\":19") != std::string::npos);
}

TEST_CASE("atm: a wrong PIN shows the tries left from 63Cx, 63C0 declines without going online", "[terminal][atm]") {
  Flow f(atm_params(), fixed_rng);
  to_pin_status(f);
  REQUIRE(f.on_response(resp("", 0x63C3)).kind == Action::ask_pin);
  auto a = f.on_pin(pin("0000"));
  a = f.on_response(resp("", 0x63C2));
  REQUIRE(a.kind == Action::ask_pin);
  CHECK(a.display == "Wrong PIN, 2 tries left. Enter PIN");
  a = f.on_pin(pin("1111"));
  a = f.on_response(resp("", 0x63C1));
  REQUIRE(a.kind == Action::ask_pin);
  CHECK(a.display == "Wrong PIN, 1 try left. Enter PIN");
  a = f.on_pin(pin("2222"));
  a = f.on_response(resp("", 0x63C0));
  CHECK(a.kind == Action::wait_removal);
  CHECK(f.outcome().reason == "pin_blocked");
  CHECK(f.outcome().backend_attempts == 0);
}

TEST_CASE("atm: a card whose PIN is already blocked declines at once, offline", "[terminal][atm]") {
  Flow f(atm_params(), fixed_rng);
  to_pin_status(f);
  auto a = f.on_response(resp("", 0x6983));
  CHECK(a.kind == Action::wait_removal);
  CHECK(f.outcome().decision == Decision::declined);
  CHECK(f.outcome().reason == "pin_blocked");
  CHECK(f.outcome().backend_attempts == 0);
}

TEST_CASE("atm: no payable amount picked declines before the cryptogram", "[terminal][atm]") {
  Flow f(atm_params(), fixed_rng);
  to_pin_status(f);
  f.on_response(resp("", 0x63C3));
  f.on_pin(pin("1234"));
  REQUIRE(f.on_response(resp("", 0x9000)).kind == Action::ask_amount);
  CHECK(f.on_amount_cancelled().kind == Action::wait_removal);
  CHECK(f.outcome().reason == "amount_cancelled");
  CHECK(f.outcome().apdu_exchanges == 3);  // SELECT, VERIFY, VERIFY: no AUTHENTICATE
}

TEST_CASE("outcome queue: durable files, strict parsing, delivery with refusal set aside", "[terminal][atm]") {
  std::string tmpl = (std::filesystem::temp_directory_path() / "otac-oq-XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  const std::filesystem::path dir = tmpl;
  OutcomeQueue q(dir.string());
  REQUIRE(q.put({"ATM00001-1", "reversed", 0}));
  REQUIRE(q.put({"ATM00001-1", "reversed", 2000}));  // replaced: the payout's result
  REQUIRE(q.put({"ATM00001-2", "completed", 5000}));
  CHECK_FALSE(q.put({"../escape", "completed", 1}));
  CHECK_FALSE(q.put({"ATM00001-3", "refunded", 1}));
  std::ofstream(dir / "outcomes" / "junk.json") << "{not json";
  std::vector<std::string> bad;
  auto p = q.pending(&bad);
  REQUIRE(p);
  REQUIRE(p->size() == 2);
  CHECK((*p)[0] == OutcomeReport{"ATM00001-1", "reversed", 2000});
  CHECK(bad.size() == 1);
  // The backend is down once, then acknowledges one and refuses the other for good.
  int calls = 0;
  std::vector<std::string> log;
  auto d = q.deliver(
      [&](const std::string& body) -> Result<std::string> {
        if (++calls <= 2) return make_error(Errc::io, "connection refused");
        if (body.find("ATM00001-2") != std::string::npos) return make_error(Errc::conflict, "already completed");
        return std::string("{}");
      },
      std::chrono::seconds(5), [&](const std::string& s) { log.push_back(s); });
  CHECK(d.delivered == 1);
  CHECK(d.refused == 1);
  CHECK(d.left == 0);
  CHECK(q.pending().value().empty());
  CHECK(std::filesystem::exists(dir / "outcomes" / "refused" / "ATM00001-2.json"));
  // Backend down for the whole budget: the report stays queued.
  REQUIRE(q.put({"ATM00001-4", "reversed", 0}));
  auto down = q.deliver([](const std::string&) -> Result<std::string> { return make_error(Errc::io, "down"); },
                        std::chrono::milliseconds(800), [](const std::string&) {});
  CHECK(down.left == 1);
  CHECK(q.pending().value().size() == 1);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}
