// Tearing: cut the file commit at every one of its operations (each write of the slot and
// its fdatasync; create, each write, fsync, rename and directory fsync when the file is laid
// out) and check that the stored state is exactly the old or the new one, or one the uncut
// command passed through, that the card still works, and that no answer is given for a state
// that was lost.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <vector>
#include <sys/stat.h>

#include "card_fixture.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;

namespace {

using otac::test::TempDir;

using Prelude = std::function<void(Applet&)>;

// Forwards to a FileStorage and keeps every blob it committed.
struct Recording final : Storage {
  explicit Recording(FileStorage& f) : fs(f) {}
  Result<Bytes> load() override { return fs.load(); }
  Result<void> commit(ByteView blob) override {
    auto r = fs.commit(blob);
    if (r) commits.emplace_back(blob.begin(), blob.end());
    return r;
  }
  FileStorage& fs;
  std::vector<Bytes> commits;
};

// Runs `command` with the commit cut at every operation; base is the stored state before.
// A command that commits more than once (CHANGE: the try, then the new PIN) may be cut after
// a commit whose slot write was complete although its sync was not: the state it passed
// through may stick, with 6F00 as the answer.
void tear(const Bytes& base, const Prelude& prelude, const Bytes& command, const std::string& name,
          std::uint16_t expect = 0x9000) {
  TempDir dir;
  const auto path = dir.path / "card.state";
  // The uncut run gives the new state, and the states the command passes through.
  Bytes fresh;
  std::vector<Bytes> passed;
  {
    FileStorage fs(path);
    REQUIRE(fs.commit(base));
    Recording rec(fs);
    Applet app(rec);
    prelude(app);
    rec.commits.clear();
    auto r = apdu::parse_response(app.process(command)).value();
    INFO(name << " uncut answer " << std::hex << r.sw);
    REQUIRE(r.sw == expect);
    fresh = fs.load().value();
    REQUIRE(!rec.commits.empty());
    REQUIRE(rec.commits.back() == fresh);
    passed.assign(rec.commits.begin(), rec.commits.end() - 1);
  }
  std::size_t cuts = 0;
  for (std::size_t cut = 0; cut < 200; ++cut) {
    FileStorage fs(path);
    REQUIRE(fs.commit(base));
    Applet app(fs);
    prelude(app);
    const Bytes before = fs.load().value();  // the prelude may commit too
    REQUIRE(fresh != before);
    bool cut_happened = false;
    fs.set_cut_hook([&](std::size_t op) {
      if (op == cut) cut_happened = true;
      return op >= cut;
    });
    auto r = apdu::parse_response(app.process(command)).value();
    fs.set_cut_hook({});
    if (!cut_happened) break;  // the commit has fewer operations than cut: done
    ++cuts;
    FileStorage reopened(path);
    auto now = reopened.load();
    INFO(name << ": cut at operation " << cut << ", answer " << std::hex << r.sw);
    REQUIRE(now.ok());
    const bool is_old = *now == before, is_new = *now == fresh;
    const bool is_passed = std::find(passed.begin(), passed.end(), *now) != passed.end();
    CHECK((is_old || is_new || is_passed));
    // An answer with data (a cryptogram, a PoR, a fetched message) only for a state that stuck.
    if (r.sw == expect) CHECK(is_new);
    if (is_old || (is_passed && !is_new)) CHECK(r.sw == 0x6F00);
    // The card keeps working on whatever state it has.
    Applet after(reopened);
    CHECK(apdu::parse_response(after.process(hex("00A4040006F04F5441430100"))).value().sw == 0x9000);
    CHECK(apdu::parse_response(after.process(hex("80A6000000"))).value().sw == 0x9000);
  }
  CHECK(cuts >= 8);  // several writes of the slot, fdatasync
}

// The state of a personalized card holding a list, as bytes.
Bytes personalized_state(std::size_t codes, bool with_list = true) {
  Card c;
  personalize(c);
  c.select();
  if (with_list) load_codes(c, 1, test_codes(codes), 1);
  return c.store.load().value();
}

void select_only(Applet& a) { REQUIRE(apdu::parse_response(a.process(hex("00A4040006F04F5441430100"))).value().sw == 0x9000); }

}  // namespace

TEST_CASE("tearing: AUTHENTICATE never answers for a code that is not burned") {
  tear(personalized_state(100), select_only, cmd(0x80, 0xA0, 0x00, 0x00, Ch{}.encode(), true), "AUTHENTICATE");
}

TEST_CASE("tearing: a wrong VERIFY") {
  tear(personalized_state(3), select_only, cmd(0x00, 0x20, 0x00, 0x80, pin_block("0000")), "VERIFY", 0x63C2);
}

namespace {

// One command on `base` after SELECT, with the power cut from the cut-th storage operation
// of the command on, counted across all of its commits (the hook's own count restarts with
// each commit). Gives the answer, whether a cut fell inside the command, and what stuck.
struct CutRun {
  std::uint16_t sw = 0;
  bool cut = false;
  Bytes state;
};

CutRun run_cut(const Bytes& base, const Bytes& command, std::size_t cut) {
  TempDir dir;
  const auto path = dir.path / "card.state";
  FileStorage fs(path);
  REQUIRE(fs.commit(base));
  Applet app(fs);
  select_only(app);
  CutRun out;
  std::size_t op = 0;
  fs.set_cut_hook([&](std::size_t) {
    const bool now = op++ >= cut;
    out.cut = out.cut || now;
    return now;
  });
  out.sw = apdu::parse_response(app.process(command)).value().sw;
  fs.set_cut_hook({});
  out.state = FileStorage(path).load().value();
  return out;
}

// The PIN tries left as a new session sees them (VERIFY without data: 63Cx, or 6983).
int pin_tries_of(const Bytes& state) {
  MemoryStorage m;
  REQUIRE(m.commit(state));
  Applet a(m);
  select_only(a);
  const auto sw = apdu::parse_response(a.process(hex("0020008000"))).value().sw;
  if (sw == 0x6983) return 0;
  REQUIRE((sw & 0xFFF0) == 0x63C0);
  return sw & 0x0F;
}

// Cuts the command with the right and with a wrong secret at every storage operation. No
// free try: whenever the two answers differ (the comparison showed), the wrong secret's try
// is already in storage; a wrong secret is told 63Cx only once its try is stored, and a
// right one 9000 only once its try is given back. `extra` checks more on each pair.
void no_free_try(const Bytes& base, const Bytes& right, const Bytes& wrong, std::uint16_t wrong_sw,
                 const std::string& name, const std::function<void(const CutRun&, const CutRun&)>& extra) {
  std::size_t cuts = 0;
  for (std::size_t cut = 0; cut < 400; ++cut) {
    const CutRun r = run_cut(base, right, cut), w = run_cut(base, wrong, cut);
    if (!r.cut && !w.cut) break;
    ++cuts;
    INFO(name << ": cut at operation " << cut << ", right " << std::hex << r.sw << ", wrong " << w.sw);
    const bool wrong_try_stored = w.state != base;
    if (r.sw != w.sw) CHECK(wrong_try_stored);
    CHECK((w.sw == wrong_sw || w.sw == 0x6F00));
    if (w.sw == wrong_sw) CHECK(wrong_try_stored);
    CHECK((r.sw == 0x9000 || r.sw == 0x6F00));
    extra(r, w);
  }
  CHECK(cuts >= 8);  // the slot's writes and fdatasync (twice for a right PIN)
}

}  // namespace

TEST_CASE("tearing: VERIFY spends the try before it compares, no cut gives a free try") {
  Bytes base = personalized_state(3);
  for (const int before : {3, 2}) {
    if (before == 2) {  // one wrong PIN already
      MemoryStorage m;
      REQUIRE(m.commit(base));
      Applet a(m);
      select_only(a);
      REQUIRE(apdu::parse_response(a.process(cmd(0x00, 0x20, 0x00, 0x80, pin_block("9999")))).value().sw == 0x63C2);
      base = m.load().value();
    }
    REQUIRE(pin_tries_of(base) == before);
    no_free_try(base, cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234")), cmd(0x00, 0x20, 0x00, 0x80, pin_block("0000")),
                static_cast<std::uint16_t>(0x63C0 + before - 1), "VERIFY with " + std::to_string(before) + " tries",
                [&](const CutRun& r, const CutRun& w) {
                  const int tr = pin_tries_of(r.state), tw = pin_tries_of(w.state);
                  INFO("tries stored after the right PIN " << tr << ", after the wrong " << tw);
                  if (r.sw != w.sw) CHECK(tw == before - 1);
                  CHECK((tw == before || tw == before - 1));
                  if (r.sw == 0x9000) CHECK(tr == 3);
                  CHECK((tr == before || tr == before - 1 || tr == 3));
                });
  }
}

// A right PUK writes (the new PIN) as a wrong one does (the counter): one commit either way.
TEST_CASE("tearing: RESET RETRY COUNTER leaks nothing at any cut") {
  Bytes right = pin_block("87654321"), wrong = pin_block("11112222");
  append(right, pin_block("2468"));
  append(wrong, pin_block("2468"));
  no_free_try(personalized_state(3), cmd(0x00, 0x2C, 0x00, 0x80, right), cmd(0x00, 0x2C, 0x00, 0x80, wrong), 0x63C9,
              "RESET RETRY COUNTER", [](const CutRun&, const CutRun&) {});
}

TEST_CASE("tearing: CHANGE REFERENCE DATA") {
  Bytes change = pin_block("1234");
  append(change, pin_block("5678"));
  tear(personalized_state(3), select_only, cmd(0x00, 0x24, 0x00, 0x80, change), "CHANGE");
}

TEST_CASE("tearing: a list load by ENVELOPE (PoR only when the list is stored)") {
  Bytes base = personalized_state(0, false);
  Bytes packet = ota_packet(e1(1, 1, test_codes(5)), 1);
  REQUIRE(packet.size() <= 137);
  tear(base, select_only, envelope(hex("7000"), packet), "ENVELOPE E1");
}

TEST_CASE("tearing: key replacement E2") {
  Bytes e2;
  put(e2, hex("C6"), hex("a1a2a3a4a5a6a7a8b1b2b3b4b5b6b7b8"));
  put(e2, hex("C7"), hex("02"));
  tear(personalized_state(3), select_only, envelope(hex("7000"), ota_packet(tlv::encode(0xE2, e2), 2)), "ENVELOPE E2");
}

TEST_CASE("tearing: FETCH hands a message out only once it is removed") {
  Card c;
  personalize(c);
  tear(c.store.load().value(), [](Applet&) {}, hex("8012000000"), "FETCH");
}

TEST_CASE("tearing: ACTIVATE") {
  Card c;
  c.select();
  REQUIRE(c.sw(cmd(0x00, 0x24, 0x01, 0x80, pin_block("1234"))) == 0x9000);
  tear(c.store.load().value(),
       [](Applet& a) {
         select_only(a);
         REQUIRE(apdu::parse_response(a.process(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234")))).value().sw == 0x9000);
       },
       cmd(0x80, 0x10, 0x00, 0x00, activate_data(), true), "ACTIVATE");
}

TEST_CASE("tearing: DISPLAY CODE, REQUEST REFRESH, RESET RETRY COUNTER, CONFIRM") {
  auto verified = [](Applet& a) {
    select_only(a);
    REQUIRE(apdu::parse_response(a.process(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234")))).value().sw == 0x9000);
  };
  tear(personalized_state(30), verified, hex("80A4000000"), "DISPLAY CODE");
  tear(personalized_state(30), verified, hex("80A80000"), "REQUEST REFRESH");
  Bytes rrc = pin_block("87654321");
  append(rrc, pin_block("2468"));
  tear(personalized_state(3), select_only, cmd(0x00, 0x2C, 0x00, 0x80, rrc), "RESET RETRY COUNTER");
  // CONFIRM after an AUTHENTICATE in the prelude.
  Bytes confirm;
  tear(personalized_state(3),
       [&](Applet& a) {
         select_only(a);
         Ch ch;
         auto r = apdu::parse_response(a.process(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true))).value();
         REQUIRE(r.sw == 0x9000);
         Bytes in = to_bytes("ARPC");
         append(in, field(r.data, 0x77, 0x9F26));
         append(in, to_bytes("00"));
         Bytes data = mac8(0x01, test_codes(3)[0], in);
         append(data, to_bytes("00"));
         confirm = cmd(0x80, 0xA2, 0x00, 0x00, data);
       },
       confirm, "CONFIRM");  // read after the prelude filled it (tear takes a reference)
}
