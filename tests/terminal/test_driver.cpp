// The driver and the ISO 7816-4 transmit helper against a scripted fake reader.
#include <chrono>
#include <catch2/catch.hpp>

#include <algorithm>
#include <deque>
#include <thread>

#include "otac/common/apdu.hpp"
#include "terminal/driver.hpp"
#include "terminal/reader.hpp"

using namespace otac;
using namespace otac::terminal;

namespace {

// Answers each C-APDU with the next scripted R-APDU and records what it got.
class ScriptedReader final : public Reader {
 public:
  std::deque<Result<Bytes>> answers;
  std::vector<Bytes> sent;
  bool card = true;
  int removals = 0;
  Result<void> wait_card(Millis) override {
    if (!card) return Error{Errc::not_found, "no card within 10 ms"};
    return {};
  }
  Result<Bytes> transceive(ByteView capdu, Millis) override {
    sent.emplace_back(capdu.begin(), capdu.end());
    if (answers.empty()) return Error{Errc::timeout, "script ran out"};
    auto a = std::move(answers.front());
    answers.pop_front();
    return a;
  }
  Result<void> wait_removal(Millis) override {
    ++removals;
    return {};
  }
  std::string name() const override { return "scripted"; }
};

TxnParams params() {
  TxnParams p;
  p.txn_id = "TERM0001-7";
  p.terminal_id = "TERM0001";
  p.amount = 100;
  p.year = 2026;
  return p;
}

Bytes fixed8(std::size_t) { return hex("0102030405060708"); }

// A steady clock that only the test and the driver's pauses move forward: the held-wait tests
// run in no time and their deadlines are exact.
struct FakeClock {
  std::chrono::steady_clock::time_point t{std::chrono::hours(1)};
  void attach(DriverIo& io) {
    io.now = [this] { return t; };
    io.pause = [this](std::chrono::steady_clock::duration d) { t += d; };
  }
};

const char* kFci = "6F17 8406 F04F54414301 A50D 9F0801 02 DF0201 02 DF0102 0003 9000";
const char* kAuth = "7729 DF4108 0102030405060708 DF4202 0003 DF4302 0011 9F3602 002A 9F2608 A1A2A3A4A5A6A7A8 DF3501 03 9000";

}  // namespace

TEST_CASE("transmit: 61xx fetches the rest with GET RESPONSE, 6Cxx resends with the right Le", "[terminal][reader]") {
  ScriptedReader r;
  r.answers.push_back(hex("0102 6103"));
  r.answers.push_back(hex("030405 9000"));
  apdu::Command c;
  c.cla = 0x80; c.ins = 0xA6; c.ne = 256;
  int n = 0;
  auto resp = transmit(r, c, Millis(100), &n);
  REQUIRE(resp);
  CHECK(resp->data == hex("0102030405"));
  CHECK(resp->sw == 0x9000);
  CHECK(n == 2);
  REQUIRE(r.sent.size() == 2);
  CHECK(r.sent[1] == hex("00C0000003"));

  ScriptedReader w;
  w.answers.push_back(hex("6C05"));
  w.answers.push_back(hex("AABBCCDDEE 9000"));
  auto again = transmit(w, c, Millis(100));
  REQUIRE(again);
  CHECK(again->data == hex("AABBCCDDEE"));
  CHECK(w.sent[1] == hex("80A6000005"));

  ScriptedReader loop;
  for (int i = 0; i < 20; ++i) loop.answers.push_back(hex("00 6101"));
  CHECK_FALSE(transmit(loop, c, Millis(100)));
  CHECK(loop.sent.size() == 9);

  ScriptedReader shortr;
  shortr.answers.push_back(hex("90"));
  CHECK_FALSE(transmit(shortr, c, Millis(100)));
}

TEST_CASE("driver: a whole tap with a scripted card and backend", "[terminal][driver]") {
  ScriptedReader r;
  r.answers.push_back(hex(kFci));
  r.answers.push_back(hex(kAuth));
  r.answers.push_back(hex("9000"));
  DriverIo io;
  io.reader = &r;
  int posts = 0;
  io.post = [&](const std::string&) -> Result<std::string> {
    ++posts;
    return std::string(R"({"txn_id":"TERM0001-7","decision":"approved","reason":"ok","auth_code":"9","arc":"3030","arpc":"0000000000000001"})");
  };
  std::vector<std::string> shown;
  io.display = [&](const std::string& s) { shown.push_back(s); };
  Flow f(params(), fixed8);
  TapTimes t;
  const auto before = std::chrono::steady_clock::now();
  auto o = run_flow(f, io, DriverLimits{}, &t);
  const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - before).count();
  CHECK(o.decision == Decision::approved);
  CHECK(o.card_confirmed);
  CHECK(posts == 1);
  CHECK(r.sent.size() == 3);
  CHECK(r.sent[2] == hex("80A200000A 0000000000000001 3030"));
  CHECK(r.removals == 1);
  // Measured (not the -1 of "no card") and within the run it belongs to.
  CHECK(t.tap_to_decision_ms >= 0);
  CHECK(t.tap_to_decision_ms <= wall_ms);
  CHECK(std::find(shown.begin(), shown.end(), "APPROVED") != shown.end());
}

TEST_CASE("driver: the backend's deadline ends the wait before the terminal's limit, then it cancels", "[terminal][driver]") {
  ScriptedReader r;
  r.answers.push_back(hex(kFci));
  r.answers.push_back(hex(kAuth));
  r.answers.push_back(hex("9000"));
  DriverIo io;
  io.reader = &r;
  FakeClock clock;
  clock.attach(io);
  io.post = [&clock](const std::string&) -> Result<std::string> {
    clock.t += std::chrono::milliseconds(200);  // the answer takes 200 ms: the time left counts from the send
    return std::string(R"({"txn_id":"TERM0001-7","decision":"held","reason":"review","expires_in":1})");
  };
  int polls = 0;
  io.poll = [&](const std::string&, unsigned wait) -> Result<std::string> {
    CHECK(wait == 0);  // under a second left: no long-poll past the deadline
    ++polls;
    return std::string(R"({"txn_id":"TERM0001-7","decision":"held","reason":"review"})");
  };
  int cancels = 0;
  io.cancel = [&](const std::string& txn) -> Result<std::string> {
    CHECK(txn == "TERM0001-7");
    ++cancels;
    return std::string(R"({"txn_id":"TERM0001-7","decision":"declined","reason":"held_timeout","arc":"3035","arpc":"0000000000000002"})");
  };
  DriverLimits lim;
  lim.held_limit = std::chrono::seconds(60);
  Flow f(params(), fixed8);
  const auto t0 = clock.t;
  auto o = run_flow(f, io, lim);
  CHECK(o.decision == Decision::declined);
  CHECK(o.reason == "held_timeout");
  CHECK(cancels == 1);
  CHECK(polls >= 1);
  CHECK(polls <= 5);
  // The wait ended at the backend's deadline, 1 s after the send, long before the 60 s limit.
  CHECK(clock.t - t0 == std::chrono::seconds(1));
  REQUIRE(r.sent.size() == 3);
  CHECK(r.sent[2] == hex("80A200000A 0000000000000002 3035"));
}

TEST_CASE("driver: held past the limit declines - the PIN callback feeds the flow", "[terminal][driver]") {
  SECTION("held") {
    ScriptedReader r;
    r.answers.push_back(hex(kFci));
    r.answers.push_back(hex(kAuth));
    DriverIo io;
    io.reader = &r;
    FakeClock clock;
    clock.attach(io);
    io.post = [](const std::string&) -> Result<std::string> {
      return std::string(R"({"txn_id":"TERM0001-7","decision":"held","reason":"review"})");
    };
    int polls = 0;
    io.poll = [&](const std::string& txn, unsigned wait) -> Result<std::string> {
      CHECK(txn == "TERM0001-7");
      CHECK(wait <= 1);
      ++polls;
      clock.t += std::chrono::milliseconds(300);  // each poll takes 300 ms
      return std::string(R"({"txn_id":"TERM0001-7","decision":"held","reason":"review"})");
    };
    DriverLimits lim;
    lim.held_limit = std::chrono::seconds(1);
    Flow f(params(), fixed8);
    auto o = run_flow(f, io, lim);
    CHECK(o.decision == Decision::declined);
    CHECK(o.reason == "held_timeout");
    CHECK(polls >= 1);
    CHECK(polls <= 5);
  }
  SECTION("PIN") {
    ScriptedReader r;
    r.answers.push_back(hex(kFci));
    r.answers.push_back(hex("6982"));
    r.answers.push_back(hex("6983"));
    DriverIo io;
    io.reader = &r;
    std::string prompt;
    io.pin = [&](const std::string& p) -> std::optional<SecretBytes> {
      prompt = p;
      return SecretBytes(as_bytes("2468"));
    };
    Flow f(params(), fixed8);
    auto o = run_flow(f, io, DriverLimits{});
    CHECK(prompt == "Enter PIN");
    REQUIRE(r.sent.size() == 3);
    CHECK(r.sent[2].size() > 11);
    CHECK(Bytes(r.sent[2].end() - 12, r.sent[2].end() - 1) == hex("DF3408 32343638FFFFFFFF"));
    CHECK(o.reason == "pin_blocked");
  }
  SECTION("no card") {
    ScriptedReader r;
    r.card = false;
    DriverIo io;
    io.reader = &r;
    Flow f(params(), fixed8);
    auto o = run_flow(f, io, DriverLimits{});
    CHECK(o.reason == "no_card");
    CHECK(r.sent.empty());
  }
}
