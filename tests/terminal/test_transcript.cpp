// Recorded card exchanges (terminal/transcript.hpp): the text form, a tap recorded against the
// real applet core and replayed byte for byte into a fresh Flow, and faults spliced into that
// recording (the card gone mid-transaction, another nonce than the one recorded).
#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "card_fixture.hpp"
#include "support.hpp"
#include "terminal/driver.hpp"
#include "terminal/transcript.hpp"

using namespace otac;
using namespace otac::applet::test;
namespace term = otac::terminal;

namespace {

// The applet core in the reader's field, in this process: every C-APDU goes to Applet::process.
class AppletReader final : public term::Reader {
 public:
  explicit AppletReader(Card& c) : card_(c) {}
  Result<void> wait_card(term::Millis) override { return {}; }
  Result<Bytes> transceive(ByteView capdu, term::Millis) override { return card_.app.process(capdu); }
  Result<void> wait_removal(term::Millis) override { return {}; }
  std::string name() const override { return "applet in process"; }

 private:
  Card& card_;
};

// A tap at TERM0001 whose backend stand-in approves a cryptogram made with code 0 of list 3.
struct Tap {
  std::vector<Bytes> codes;
  Ch ch;
  int posts = 0;

  term::Outcome run(term::Reader& reader, Bytes nonce) {
    term::DriverIo io;
    io.reader = &reader;
    io.post = [this](const std::string& body) -> Result<std::string> {
      ++posts;
      return term::test::fixture_answer(body, "T-REPLAY-1", codes[0], ch.mac_input(3, 0, 1),
                                        [](const Bytes& k, const Bytes& d) { return mac8(0x01, k, d); });
    };
    io.poll = [](const std::string&, unsigned) -> Result<std::string> { return Error{Errc::io, "unused"}; };
    term::DriverLimits lim;
    term::Flow flow(term::test::fixture_txn("T-REPLAY-1"), [nonce](std::size_t) { return nonce; });
    return term::run_flow(flow, io, lim);
  }
};

// Records one approved tap against a personalized applet holding list 3.
term::Transcript record_tap(Tap& tap) {
  Card c;
  personalize(c);
  tap.codes = test_codes(5);
  load_codes(c, 3, tap.codes, 1);
  AppletReader applet(c);
  term::RecordingReader rec(applet);
  const auto out = tap.run(rec, tap.ch.un);
  REQUIRE(out.decision == term::Decision::approved);
  REQUIRE(out.card_confirmed);
  return rec.transcript();
}

std::size_t count(const term::Transcript& t, term::TranscriptStep::Kind k) {
  std::size_t n = 0;
  for (const auto& s : t.steps) n += s.kind == k;
  return n;
}

}  // namespace

TEST_CASE("transcript text: events, comments, and errors that name the line", "[terminal][transcript]") {
  auto t = term::parse_transcript("# a tap\ncard\n> 00A4 0400 07 F04F544143 0101 00\n< 9000\n\n> 80A8\n! timeout\nremoved\nno-card\n");
  REQUIRE(t);
  REQUIRE(t->steps.size() == 7);
  CHECK(t->steps[1].apdu == hex("00A4040007F04F544143010100"));
  CHECK(t->steps[4].kind == term::TranscriptStep::Kind::failure);
  CHECK(t->steps[4].error == Errc::timeout);
  auto again = term::parse_transcript(term::format_transcript(*t));
  REQUIRE(again);
  CHECK(again->steps == t->steps);

  auto bad = [](std::string_view text) {
    auto r = term::parse_transcript(text);
    REQUIRE_FALSE(r);
    return r.error().message;
  };
  CHECK(bad("card\n> 00A4\n> 00B0\n< 9000\n").find("line 3: the command before it has no answer") != std::string::npos);
  CHECK(bad("card\n< 9000\n").find("line 2: an answer without a command") != std::string::npos);
  CHECK(bad("card\n> 0G\n").find("line 2: APDU is not hex") != std::string::npos);
  CHECK(bad("> \n").find("line 1: APDU is empty") != std::string::npos);
  CHECK(bad("card\n! broken\n").find("line 2: reader failure must be") != std::string::npos);
  CHECK(bad("tap\n").find("line 1: unknown event") != std::string::npos);
  CHECK(bad("card\n> 00A4\n").find("ends with a command") != std::string::npos);
  std::string many;
  for (std::size_t i = 0; i <= term::max_transcript_steps; ++i) many += "card\n";
  CHECK(bad(many).find("more than 4096 events") != std::string::npos);
}

TEST_CASE("a tap recorded against the applet replays byte for byte into a fresh Flow", "[terminal][transcript]") {
  Tap tap;
  const term::Transcript recorded = record_tap(tap);
  CHECK(count(recorded, term::TranscriptStep::Kind::command) == 3);  // SELECT, AUTHENTICATE, CONFIRM
  CHECK(recorded.steps.front().kind == term::TranscriptStep::Kind::card);
  auto text = term::format_transcript(recorded);
  auto parsed = term::parse_transcript(text);
  REQUIRE(parsed);

  term::ReplayReader replay(*parsed);
  Tap again;
  again.codes = tap.codes;
  const auto out = again.run(replay, again.ch.un);
  INFO(out.reason << ": " << out.detail << "\n" << text);
  CHECK(out.decision == term::Decision::approved);
  CHECK(out.auth_code == "654321");
  CHECK(out.card_hex == to_hex(kN));
  CHECK(out.list_id == 3);
  CHECK(out.index == 0);
  CHECK(out.atc == 1);
  CHECK(out.card_confirmed);
  CHECK(out.apdu_exchanges == 3);
  CHECK(again.posts == 1);
  CHECK(replay.finished());
}

TEST_CASE("faults spliced into a recorded tap: the Flow declines and never approves", "[terminal][transcript]") {
  Tap tap;
  const term::Transcript recorded = record_tap(tap);
  using Kind = term::TranscriptStep::Kind;

  SECTION("another nonce than the recorded one: the replay refuses the AUTHENTICATE, nothing is posted") {
    term::ReplayReader replay(recorded);
    Tap other;
    other.codes = tap.codes;
    const auto out = other.run(replay, hex("1112131415161718"));
    CHECK(out.decision == term::Decision::declined);
    CHECK(out.reason == "reader_error");
    CHECK(other.posts == 0);
    CHECK_FALSE(replay.finished());
  }
  SECTION("the card leaves during AUTHENTICATE: declined before the backend is asked") {
    term::Transcript t = recorded;
    // The second command's answer (AUTHENTICATE) becomes "the card is gone", and the rest is cut.
    std::size_t commands = 0, at = 0;
    for (std::size_t i = 0; i < t.steps.size(); ++i)
      if (t.steps[i].kind == Kind::command && ++commands == 2) at = i + 1;
    REQUIRE(at != 0);
    t.steps.resize(at + 1);
    t.steps[at] = term::TranscriptStep{Kind::failure, {}, Errc::not_found};
    term::ReplayReader replay(t);
    Tap again;
    again.codes = tap.codes;
    const auto out = again.run(replay, again.ch.un);
    CHECK(out.decision == term::Decision::declined);
    CHECK(out.reason == "card_removed");
    CHECK(again.posts == 0);
    CHECK(replay.finished());
  }
  SECTION("no card in the field") {
    term::ReplayReader replay(*term::parse_transcript("no-card\n"));
    Tap again;
    again.codes = tap.codes;
    const auto out = again.run(replay, again.ch.un);
    CHECK(out.decision == term::Decision::declined);
    CHECK(out.reason == "no_card");
    CHECK(again.posts == 0);
  }
}
