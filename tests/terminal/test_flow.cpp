// Unit tests of the tap-to-decision state machine (terminal/flow.hpp), driven byte for byte
// with hand-written card answers and backend bodies.
#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "otac/common/apdu.hpp"
#include "terminal/flow.hpp"

using namespace otac;
using namespace otac::terminal;

namespace {

TxnParams pos_params() {
  TxnParams p;
  p.txn_id = "TERM0001-42";
  p.terminal_id = "TERM0001";
  p.amount = 1250;
  p.currency = 978;
  p.year = 2026; p.month = 11; p.day = 22; p.hour = 19; p.minute = 5; p.second = 9;
  return p;
}

// A deterministic "CSPRNG" that gives 01..08, then 11..18, ...
struct CountingRng {
  std::uint8_t next = 0;
  Bytes operator()(std::size_t n) {
    Bytes b(n);
    next = static_cast<std::uint8_t>(next + 0x10);
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(next - 0x10 + 1 + i);
    return b;
  }
};

apdu::Response resp(std::string_view hexdata, std::uint16_t sw) { return {hex(hexdata), sw}; }

// FCI of protocol.md 2.1 with capabilities 0011 (3DES, AES) and the given state.
std::string fci(std::string_view state = "02") {
  return "6F17 8406 F04F54414301 A50D 9F0801 02 DF0201 " + std::string(state) + " DF0102 0003";
}
// The card's answer; DF35 13: PIN verified, three tries left.
const char* kAuthResp = "77 29 DF4108 0102030405060708 DF4202 0003 DF4302 0011 9F3602 002A 9F2608 A1A2A3A4A5A6A7A8 DF3501 13";

std::string approved_json(const std::string& txn = "TERM0001-42") {
  return R"({"txn_id":")" + txn + R"(","decision":"approved","reason":"ok","auth_code":"123456","arc":"3030","arpc":"b1b2b3b4b5b6b7b8"})";
}

Bytes encoded(const apdu::Command& c) {
  auto e = apdu::encode(c);
  REQUIRE(e);
  return *e;
}

// Drives a flow to the post_auth action and returns it.
Action to_backend(Flow& f) {
  REQUIRE(f.start().kind == Action::wait_card);
  auto a = f.on_card();
  REQUIRE(a.kind == Action::transmit);
  a = f.on_response(resp(fci(), 0x9000));
  REQUIRE(a.kind == Action::transmit);
  a = f.on_response(resp(kAuthResp, 0x9000));
  REQUIRE(a.kind == Action::post_auth);
  return a;
}

}  // namespace

TEST_CASE("challenge TLV is encoded as protocol.md 3 lays it out", "[terminal][flow]") {
  const auto p = pos_params();
  const Bytes nonce = hex("0102030405060708");
  // Hand-encoded from the table in protocol.md 3: amount 12.50 EUR = n12 000000001250,
  // currency 0978, date 261122, time 190509, purchase 00, terminal "TERM0001".
  const Bytes expected = hex(
      "DF3301 02  DF3101 01  9F3708 0102030405060708  9F0206 000000001250  5F2A02 0978"
      "9A03 261122  9F2103 190509  9C01 00  9F1C08 5445524D30303031");
  CHECK(build_challenge(p, nonce, {}) == expected);
  auto pin = pin_block("1234");
  REQUIRE(pin);
  CHECK(build_challenge(p, nonce, pin->view()) == concat({expected, hex("DF3408 31323334FFFFFFFF")}));

  TxnParams d = p;
  d.mode = Mode::door;
  d.amount = 0;
  d.door_id = "D1";
  d.txn_type = 0x90;
  const Bytes door = build_challenge(d, nonce, {});
  CHECK(door == hex("DF3301 02  DF3101 02  9F3708 0102030405060708  9F0206 000000000000  5F2A02 0978"
                    "9A03 261122  9F2103 190509  9C01 90  9F1C08 5445524D30303031  DF3202 4431"));
}

TEST_CASE("PIN blocks: 4 to 8 digits padded with FF", "[terminal][flow]") {
  auto b = pin_block("12345678");
  REQUIRE(b);
  CHECK(Bytes(b->view().begin(), b->view().end()) == hex("3132333435363738"));
  CHECK_FALSE(pin_block("123"));
  CHECK_FALSE(pin_block("123456789"));
  CHECK_FALSE(pin_block("12a4"));
}

TEST_CASE("parameters are validated before the card is touched", "[terminal][flow]") {
  auto p = pos_params();
  CHECK(validate(p));
  p.terminal_id = "SHORT";
  CHECK_FALSE(validate(p));
  p = pos_params();
  p.amount = 1000000000000ULL;
  CHECK_FALSE(validate(p));
  p = pos_params();
  p.mode = Mode::door;
  p.amount = 0;
  CHECK_FALSE(validate(p));  // no door id
  p.door_id = "FRONT";
  CHECK(validate(p));
  p = pos_params();
  p.txn_id = "bad id";
  CHECK_FALSE(validate(p));
  Flow f(p, CountingRng{});
  auto a = f.start();
  CHECK(a.kind == Action::done);
  CHECK(f.outcome().decision == Decision::declined);
  CHECK(f.outcome().reason == "bad_parameters");
}

TEST_CASE("approved tap: SELECT, AUTHENTICATE, POST, CONFIRM, removal in 3 APDUs", "[terminal][flow]") {
  Flow f(pos_params(), CountingRng{});
  CHECK(f.start().kind == Action::wait_card);
  auto a = f.on_card();
  REQUIRE(a.kind == Action::transmit);
  CHECK(encoded(a.command) == hex("00A4040006F04F5441430100"));
  a = f.on_response(resp(fci(), 0x9000));
  REQUIRE(a.kind == Action::transmit);
  const Bytes challenge = build_challenge(pos_params(), hex("0102030405060708"), {});
  CHECK(encoded(a.command) == concat({hex("80A00000"), Bytes{static_cast<std::uint8_t>(challenge.size())}, challenge, hex("00")}));
  a = f.on_response(resp(kAuthResp, 0x9000));
  REQUIRE(a.kind == Action::post_auth);
  const auto body = boost::json::parse(a.body).as_object();
  CHECK(body.at("txn_id").as_string() == "TERM0001-42");
  CHECK(body.at("card").as_string() == "0102030405060708");
  CHECK(body.at("list").as_int64() == 3);
  CHECK(body.at("index").as_int64() == 17);
  CHECK(body.at("atc").as_int64() == 42);
  CHECK(body.at("challenge").as_string() == to_hex(challenge));
  CHECK(body.at("cryptogram").as_string() == "a1a2a3a4a5a6a7a8");
  CHECK(body.at("pin_state").as_int64() == 0x13);  // the card's DF35, as it gave it
  a = f.on_backend(approved_json());
  REQUIRE(a.kind == Action::transmit);
  CHECK(a.decision_shown);
  CHECK(a.display == "APPROVED");
  CHECK(encoded(a.command) == hex("80A200000A B1B2B3B4B5B6B7B8 3030"));
  a = f.on_response(resp("", 0x9000));
  CHECK(a.kind == Action::wait_removal);
  CHECK(f.on_removed().kind == Action::done);
  CHECK(f.finished());
  const auto& o = f.outcome();
  CHECK(o.decision == Decision::approved);
  CHECK(o.auth_code == "123456");
  CHECK(o.card_confirmed);
  CHECK(o.apdu_exchanges == 3);
  CHECK(o.card_hex == "0102030405060708");
  CHECK(o.list_id == 3);
  CHECK(o.index == 17);
}

TEST_CASE("PIN policy: 6982 asks the keypad and retries with DF34 and a fresh challenge", "[terminal][flow]") {
  Flow f(pos_params(), CountingRng{});
  f.start();
  f.on_card();
  auto first = f.on_response(resp(fci(), 0x9000));
  auto a = f.on_response(resp("", 0x6982));
  REQUIRE(a.kind == Action::ask_pin);
  CHECK(a.display == "Enter PIN");
  a = f.on_pin(SecretBytes(as_bytes("4321")));
  REQUIRE(a.kind == Action::transmit);
  const Bytes fresh = hex("1112131415161718");
  auto pin = pin_block("4321");
  CHECK(a.command.data == build_challenge(pos_params(), fresh, pin->view()));
  CHECK(a.command.data != first.command.data);
  a = f.on_response(resp(kAuthResp, 0x9000));
  REQUIRE(a.kind == Action::post_auth);
  // The backend never sees the PIN block.
  CHECK(boost::json::parse(a.body).as_object().at("challenge").as_string() ==
        to_hex(build_challenge(pos_params(), fresh, {})));
  a = f.on_backend(approved_json());
  a = f.on_response(resp("", 0x9000));
  f.on_removed();
  CHECK(f.outcome().decision == Decision::approved);
  CHECK(f.outcome().apdu_exchanges == 4);
}

TEST_CASE("a blocked PIN is declined with a message that says what to do", "[terminal][flow]") {
  // The backend's decline (the card marked its blocked PIN in DF35).
  Flow f(pos_params(), CountingRng{});
  to_backend(f);
  auto a = f.on_backend(std::string(
      R"({"txn_id":"TERM0001-42","decision":"declined","reason":"pin_blocked","arc":"3035","arpc":"b1b2b3b4b5b6b7b8"})"));
  CHECK(a.decision_shown);
  CHECK(a.display == "DECLINED (pin_blocked): PIN blocked, unblock the card with its PUK");
  CHECK(f.outcome().reason == "pin_blocked");
  CHECK(f.outcome().decision == Decision::declined);
  // The card's own refusal (6983) shows the same words.
  Flow g(pos_params(), CountingRng{});
  g.start();
  g.on_card();
  g.on_response(resp(fci(), 0x9000));
  a = g.on_response(resp("", 0x6983));
  CHECK(a.display == "DECLINED (pin_blocked): PIN blocked, unblock the card with its PUK");
}

TEST_CASE("wrong PIN asks again with the tries left - 63C0 declines", "[terminal][flow]") {
  Flow f(pos_params(), CountingRng{});
  f.start();
  f.on_card();
  f.on_response(resp(fci(), 0x9000));
  REQUIRE(f.on_response(resp("", 0x6982)).kind == Action::ask_pin);
  REQUIRE(f.on_pin(SecretBytes(as_bytes("0000"))).kind == Action::transmit);
  auto a = f.on_response(resp("", 0x63C2));
  REQUIRE(a.kind == Action::ask_pin);
  CHECK(a.display.find("2 tries left") != std::string::npos);
  REQUIRE(f.on_pin(SecretBytes(as_bytes("1111"))).kind == Action::transmit);
  a = f.on_response(resp("", 0x63C1));
  REQUIRE(a.kind == Action::ask_pin);
  CHECK(a.display.find("1 try left") != std::string::npos);
  CHECK(a.display.find("tries") == std::string::npos);
  REQUIRE(f.on_pin(SecretBytes(as_bytes("2222"))).kind == Action::transmit);
  a = f.on_response(resp("", 0x63C0));
  CHECK(a.kind == Action::wait_removal);
  CHECK(f.outcome().reason == "pin_blocked");
  CHECK(f.outcome().decision == Decision::declined);
}

TEST_CASE("PIN entry limits: cancel, malformed, too many", "[terminal][flow]") {
  SECTION("cancel") {
    Flow f(pos_params(), CountingRng{});
    f.start(); f.on_card(); f.on_response(resp(fci(), 0x9000));
    f.on_response(resp("", 0x6982));
    CHECK(f.on_pin_cancelled().kind == Action::wait_removal);
    CHECK(f.outcome().reason == "pin_cancelled");
  }
  SECTION("malformed then limit") {
    auto p = pos_params();
    p.max_pin_attempts = 2;
    Flow f(p, CountingRng{});
    f.start(); f.on_card(); f.on_response(resp(fci(), 0x9000));
    f.on_response(resp("", 0x6982));
    auto a = f.on_pin(SecretBytes(as_bytes("12")));
    REQUIRE(a.kind == Action::ask_pin);
    REQUIRE(f.on_pin(SecretBytes(as_bytes("1234"))).kind == Action::transmit);
    a = f.on_response(resp("", 0x63C1));
    CHECK(a.kind == Action::wait_removal);
    CHECK(f.outcome().reason == "pin_required");
  }
  SECTION("blocked") {
    Flow f(pos_params(), CountingRng{});
    f.start(); f.on_card(); f.on_response(resp(fci(), 0x9000));
    f.on_response(resp("", 0x6983));
    CHECK(f.outcome().reason == "pin_blocked");
  }
}

TEST_CASE("backend unreachable: same body retried, then declined", "[terminal][flow]") {
  Flow f(pos_params(), CountingRng{});
  auto a = to_backend(f);
  const std::string body = a.body;
  auto b = f.on_backend(Error{Errc::io, "connection refused"});
  REQUIRE(b.kind == Action::post_auth);
  CHECK(b.body == body);
  b = f.on_backend(Error{Errc::timeout, "no answer in 5000 ms"});
  REQUIRE(b.kind == Action::post_auth);
  CHECK(b.body == body);
  b = f.on_backend(Error{Errc::io, "connection refused"});
  CHECK(b.kind == Action::wait_removal);
  CHECK(b.decision_shown);
  CHECK(f.outcome().decision == Decision::declined);
  CHECK(f.outcome().reason == "backend_unreachable");
  CHECK(f.outcome().backend_attempts == 3);
  CHECK(f.outcome().undecided);  // the backend may have approved: the terminal reverses
}

TEST_CASE("a retry that gets through is approved with the same txn", "[terminal][flow]") {
  Flow f(pos_params(), CountingRng{});
  to_backend(f);
  REQUIRE(f.on_backend(Error{Errc::timeout, "no answer"}).kind == Action::post_auth);
  auto a = f.on_backend(approved_json());
  REQUIRE(a.kind == Action::transmit);
  CHECK(f.outcome().decision == Decision::approved);
}

TEST_CASE("an HTTP 429 declines as too_many_declines, with nothing to reverse", "[terminal][flow]") {
  Flow f(pos_params(), CountingRng{});
  to_backend(f);
  const auto a = f.on_backend(Error{Errc::state, "backend answered HTTP 429: too_many_declines"});
  CHECK(a.kind == Action::wait_removal);
  CHECK(f.outcome().decision == Decision::declined);
  CHECK(f.outcome().reason == "too_many_declines");
  CHECK(f.outcome().backend_attempts == 1);  // not retried
  CHECK_FALSE(f.outcome().undecided);
}

TEST_CASE("HTTP errors are not retried and decline", "[terminal][flow]") {
  Flow f(pos_params(), CountingRng{});
  to_backend(f);
  auto a = f.on_backend(Error{Errc::conflict, "HTTP 409"});
  CHECK(a.kind == Action::wait_removal);
  CHECK(f.outcome().reason == "backend_error");
  CHECK_FALSE(f.outcome().undecided);  // the txn_id is another request's: nothing to reverse
  Flow g(pos_params(), CountingRng{});
  to_backend(g);
  g.on_backend(Error{Errc::bad_value, "HTTP 500"});
  CHECK(g.outcome().reason == "backend_error");
  CHECK(g.outcome().undecided);
}

TEST_CASE("malformed or doubtful answers decline", "[terminal][flow]") {
  const std::vector<std::string> bad = {
      "",
      "not json",
      "[]",
      R"({"txn_id":"TERM0001-42","decision":"approved","reason":"ok","auth_code":"1","arc":"3030"})",  // no ARPC
      R"({"txn_id":"TERM0001-42","decision":"approved","reason":"ok","arc":"3030","arpc":"b1b2b3b4b5b6b7b8"})",  // no code
      R"({"txn_id":"TERM0001-42","decision":"approved","reason":"ok","auth_code":"1","arc":"3035","arpc":"b1b2b3b4b5b6b7b8"})",
      R"({"txn_id":"TERM0001-42","decision":"maybe","reason":"ok"})",
      R"({"txn_id":"TERM0001-42","decision":"declined","reason":"x","arc":"3030","arpc":"b1b2b3b4b5b6b7b8"})",
      R"({"txn_id":"TERM0001-42","decision":"approved","reason":"ok","auth_code":"1","arc":"3030","arpc":"b1b2"})",
      R"({"decision":"approved","reason":"ok","auth_code":"1","arc":"3030","arpc":"b1b2b3b4b5b6b7b8"})",
      approved_json("OTHER-1"),
  };
  for (const auto& body : bad) {
    INFO(body);
    Flow f(pos_params(), CountingRng{});
    to_backend(f);
    auto a = f.on_backend(body);
    CHECK(a.kind == Action::wait_removal);
    CHECK(f.outcome().decision == Decision::declined);
    CHECK(f.outcome().reason == "malformed_answer");
  }
}

TEST_CASE("declined with ARPC is confirmed to the card - without, not", "[terminal][flow]") {
  {
    Flow f(pos_params(), CountingRng{});
    to_backend(f);
    auto a = f.on_backend(std::string(R"({"txn_id":"TERM0001-42","decision":"declined","reason":"limit","arc":"3531","arpc":"0102030405060708"})"));
    REQUIRE(a.kind == Action::transmit);
    CHECK(encoded(a.command) == hex("80A200000A 0102030405060708 3531"));
    CHECK(a.display == "DECLINED (limit)");
    f.on_response(resp("", 0x9000));
    f.on_removed();
    CHECK(f.outcome().decision == Decision::declined);
    CHECK(f.outcome().reason == "limit");
  }
  {
    Flow f(pos_params(), CountingRng{});
    to_backend(f);
    auto a = f.on_backend(std::string(R"({"txn_id":"TERM0001-42","decision":"declined","reason":"bad_cryptogram"})"));
    CHECK(a.kind == Action::wait_removal);
    CHECK(f.outcome().reason == "bad_cryptogram");
    CHECK(f.outcome().apdu_exchanges == 2);
  }
}

TEST_CASE("held: waiting for operator, then the operator's decision", "[terminal][flow]") {
  const std::string held = R"({"txn_id":"TERM0001-42","decision":"held","reason":"review","arc":"3139"})";
  SECTION("approved by the operator") {
    Flow f(pos_params(), CountingRng{});
    to_backend(f);
    auto a = f.on_backend(held);
    REQUIRE(a.kind == Action::poll_held);
    CHECK(a.display == "Waiting for operator...");
    a = f.on_backend(held);  // long poll returned, still held
    REQUIRE(a.kind == Action::poll_held);
    a = f.on_backend(Error{Errc::timeout, "poll timed out"});  // a lost poll is retried
    REQUIRE(a.kind == Action::poll_held);
    a = f.on_backend(approved_json());
    REQUIRE(a.kind == Action::transmit);
    f.on_response(resp("", 0x9000));
    f.on_removed();
    CHECK(f.outcome().decision == Decision::approved);
    CHECK(f.outcome().held_before);
  }
  SECTION("the backend's time left reaches the driver") {
    Flow f(pos_params(), CountingRng{});
    to_backend(f);
    auto a = f.on_backend(std::string(R"({"txn_id":"TERM0001-42","decision":"held","reason":"review","arc":"3139","expires_at":1700000120,"expires_in":119})"));
    REQUIRE(a.kind == Action::poll_held);
    REQUIRE(a.held_left);
    CHECK(*a.held_left == std::chrono::seconds(119));
    a = f.on_backend(held);  // an answer without it leaves the deadline as it was
    REQUIRE(a.kind == Action::poll_held);
    CHECK_FALSE(a.held_left);
  }
  SECTION("a malformed time left declines") {
    for (const char* bad : {R"("expires_in":-1)", R"("expires_in":"119")", R"("expires_in":1.5)", R"("expires_in":86401)"}) {
      Flow f(pos_params(), CountingRng{});
      to_backend(f);
      auto a = f.on_backend(R"({"txn_id":"TERM0001-42","decision":"held","reason":"review",)" + std::string(bad) + "}");
      CHECK(a.kind == Action::wait_removal);
      CHECK(f.outcome().reason == "malformed_answer");
      CHECK(f.outcome().undecided);
    }
  }
  SECTION("limit passes: the cancel's answer is what the customer sees") {
    Flow f(pos_params(), CountingRng{});
    to_backend(f);
    f.on_backend(held);
    auto a = f.on_held_expired();
    REQUIRE(a.kind == Action::cancel_held);
    CHECK(f.outcome().decision == Decision::declined);
    a = f.on_backend(std::string(R"({"txn_id":"TERM0001-42","decision":"declined","reason":"held_timeout","arc":"3035","arpc":"0102030405060708"})"));
    REQUIRE(a.kind == Action::transmit);
    CHECK(encoded(a.command) == hex("80A200000A 0102030405060708 3035"));
    CHECK(a.display == "DECLINED (held_timeout)");
    f.on_response(resp("", 0x9000));
    f.on_removed();
    CHECK(f.outcome().decision == Decision::declined);
    CHECK(f.outcome().reason == "held_timeout");
    CHECK_FALSE(f.outcome().undecided);  // the backend's own decline: nothing to reverse
  }
  SECTION("limit passes, but the operator approved just before the cancel") {
    Flow f(pos_params(), CountingRng{});
    to_backend(f);
    f.on_backend(held);
    REQUIRE(f.on_held_expired().kind == Action::cancel_held);
    auto a = f.on_backend(approved_json());
    REQUIRE(a.kind == Action::transmit);
    CHECK(a.display == "APPROVED");
    f.on_response(resp("", 0x9000));
    f.on_removed();
    CHECK(f.outcome().decision == Decision::approved);
  }
  SECTION("limit passes and the cancel is lost: retried, then declined all the same") {
    Flow f(pos_params(), CountingRng{});
    to_backend(f);
    f.on_backend(held);
    auto a = f.on_held_expired();
    for (int i = 0; i <= pos_params().max_backend_attempts; ++i) {  // the first try and its retries
      REQUIRE(a.kind == Action::cancel_held);
      a = f.on_backend(Error{Errc::io, "connection refused"});
    }
    CHECK(a.kind == Action::wait_removal);
    CHECK(a.display == "DECLINED (held_timeout)");
    CHECK(f.outcome().decision == Decision::declined);
    CHECK(f.outcome().reason == "held_timeout");
    CHECK(f.outcome().detail.find("did not confirm the cancel") != std::string::npos);
    CHECK(f.outcome().undecided);  // an operator could still approve it: the terminal reverses
  }
  SECTION("limit passes and the cancel answers still held or garbage: declined") {
    for (const std::string& answer : {held, std::string("not json")}) {
      Flow f(pos_params(), CountingRng{});
      to_backend(f);
      f.on_backend(held);
      REQUIRE(f.on_held_expired().kind == Action::cancel_held);
      auto a = f.on_backend(answer);
      CHECK(a.kind == Action::wait_removal);
      CHECK(f.outcome().decision == Decision::declined);
      CHECK(f.outcome().reason == "held_timeout");
      CHECK(f.outcome().undecided);
    }
  }
}

TEST_CASE("reader failures decline with the reason", "[terminal][flow]") {
  SECTION("no card") {
    Flow f(pos_params(), CountingRng{});
    f.start();
    auto a = f.on_no_card(Error{Errc::timeout, "no card within 15000 ms"});
    CHECK(a.kind == Action::done);
    CHECK(f.outcome().reason == "no_card");
    Flow g(pos_params(), CountingRng{});
    g.start();
    g.on_no_card(Error{Errc::io, "reader unplugged"});
    CHECK(g.outcome().reason == "reader_error");
    Flow h(pos_params(), CountingRng{});
    h.start();
    h.on_no_card(Error{Errc::bad_value, "not ISO 14443-4"});
    CHECK(h.outcome().reason == "card_error");
  }
  SECTION("removed during AUTHENTICATE") {
    Flow f(pos_params(), CountingRng{});
    f.start(); f.on_card(); f.on_response(resp(fci(), 0x9000));
    auto a = f.on_reader_error(Error{Errc::not_found, "card removed"});
    CHECK(a.kind == Action::done);
    CHECK(f.outcome().reason == "card_removed");
  }
  SECTION("timeout during SELECT") {
    Flow f(pos_params(), CountingRng{});
    f.start(); f.on_card();
    auto a = f.on_reader_error(Error{Errc::timeout, "card did not answer"});
    CHECK(a.kind == Action::wait_removal);
    CHECK(f.outcome().reason == "card_timeout");
  }
  SECTION("removed before CONFIRM: the backend's approval stands, unconfirmed") {
    Flow f(pos_params(), CountingRng{});
    to_backend(f);
    f.on_backend(approved_json());
    auto a = f.on_reader_error(Error{Errc::not_found, "card removed"});
    CHECK(a.kind == Action::done);
    CHECK(f.outcome().decision == Decision::approved);
    CHECK_FALSE(f.outcome().card_confirmed);
  }
  SECTION("ARPC refused by the card") {
    Flow f(pos_params(), CountingRng{});
    to_backend(f);
    f.on_backend(approved_json());
    f.on_response(resp("", 0x6300));
    CHECK_FALSE(f.outcome().card_confirmed);
  }
}

TEST_CASE("card answers that stop the flow", "[terminal][flow]") {
  struct Case { std::string fci_hex; std::uint16_t sw; const char* reason; };
  const std::vector<Case> cases = {
      {"", 0x6A82, "not_otac_card"},
      {"", 0x6D00, "card_error"},
      {fci("01"), 0x9000, "card_not_activated"},
      {fci("03"), 0x9000, "card_blocked"},
      {"6F00", 0x9000, "card_error"},
      {"6F0384 01 00", 0x9000, "card_error"},
      {"FF", 0x9000, "card_error"},
      // A version 01 applet gives no PIN state: refused rather than sent on without it.
      {"6F17 8406 F04F54414301 A50D 9F0801 01 DF0201 02 DF0102 0003", 0x9000, "card_error"},
  };
  for (const auto& c : cases) {
    INFO(c.fci_hex);
    Flow f(pos_params(), CountingRng{});
    f.start(); f.on_card();
    auto a = f.on_response(resp(c.fci_hex, c.sw));
    CHECK(a.kind == Action::wait_removal);
    CHECK(f.outcome().reason == c.reason);
  }
  const std::vector<std::pair<apdu::Response, const char*>> auth = {
      {resp("", 0x6A84), "no_codes"},
      {resp("", 0x6985), "card_not_usable"},
      {resp("", 0x6F00), "card_error"},
      {resp("7700", 0x9000), "card_error"},
      {resp("77 0B DF4108 0102030405060708", 0x9000), "card_error"},
      {resp("77 26 DF4108 0102030405060708 DF4203 000003 DF4302 0011 9F3602 002A 9F2608 A1A2A3A4A5A6A7A8", 0x9000), "card_error"},
      // No PIN state (a version 01 answer), or one of the wrong length.
      {resp("77 25 DF4108 0102030405060708 DF4202 0003 DF4302 0011 9F3602 002A 9F2608 A1A2A3A4A5A6A7A8", 0x9000), "card_error"},
      {resp("77 2A DF4108 0102030405060708 DF4202 0003 DF4302 0011 9F3602 002A 9F2608 A1A2A3A4A5A6A7A8 DF3502 0303", 0x9000), "card_error"},
      {resp("", 0x6983), "pin_blocked"},
  };
  for (const auto& [r, reason] : auth) {
    INFO(to_hex(r.data) << " " << r.sw);
    Flow f(pos_params(), CountingRng{});
    f.start(); f.on_card(); f.on_response(resp(fci(), 0x9000));
    f.on_response(r);
    CHECK(f.outcome().reason == reason);
    CHECK(f.outcome().decision == Decision::declined);
  }
}

TEST_CASE("events out of order end declined, and never flip a final approval", "[terminal][flow]") {
  Flow f(pos_params(), CountingRng{});
  f.start();
  CHECK(f.on_backend(approved_json()).kind == Action::done);
  CHECK(f.outcome().decision == Decision::declined);
  CHECK(f.outcome().reason == "internal");

  Flow g(pos_params(), CountingRng{});
  to_backend(g);
  g.on_backend(approved_json());
  g.on_response(resp("", 0x9000));
  g.on_removed();
  CHECK(g.on_removed().kind == Action::done);
  CHECK(g.outcome().decision == Decision::approved);
}
