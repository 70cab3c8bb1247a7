// The cash dispenser line protocol (docs/protocol.md §9) and the note planner.
#include <catch2/catch.hpp>

#include "otac/common/dispenser.hpp"

using namespace otac::dispenser;

TEST_CASE("dispenser: requests parse strictly and encode back") {
  auto s = parse_request("STATUS");
  REQUIRE(s);
  CHECK(s->kind == Request::Kind::status);
  auto d = parse_request("DISPENSE 7000 30");
  REQUIRE(d);
  CHECK(d->kind == Request::Kind::dispense);
  CHECK(d->amount == 7000);
  CHECK(d->take_seconds == 30);
  CHECK(encode(*d) == "DISPENSE 7000 30\n");
  auto f = parse_request("FAULT not_taken");
  REQUIRE(f);
  CHECK(f->fault == Fault::not_taken);
  CHECK(encode(*f) == "FAULT not_taken\n");
  for (const char* bad : {"", "STATUS ", " STATUS", "STATUS  x", "status", "DISPENSE 0 30", "DISPENSE 7000", "DISPENSE 7000 0",
                          "DISPENSE 7000 601", "DISPENSE -5 30", "DISPENSE 07000 30", "DISPENSE 1000000000000 30",
                          "DISPENSE 7000 30 x", "FAULT fire", "FAULT", "DISPENSE 7000\t30", "DISPENSE 7000 30\r"}) {
    INFO(bad);
    auto r = parse_request(bad);
    REQUIRE_FALSE(r);
    CHECK_FALSE(r.error().message.empty());
  }
  CHECK_FALSE(parse_request(std::string(300, 'A')));
}

TEST_CASE("dispenser: replies carry the state, the cassettes and what was handed over") {
  auto s = parse_reply("OK STATUS ready 2000x50,5000x20");
  REQUIRE(s);
  CHECK(s->state == "ready");
  REQUIRE(s->cassettes.size() == 2);
  CHECK(s->cassettes[1] == Cassette{5000, 20});
  CHECK(encode(*s) == "OK STATUS ready 2000x50,5000x20\n");
  CHECK(parse_reply("OK STATUS ready -")->cassettes.empty());
  auto ok = parse_reply("OK DISPENSED 7000");
  REQUIRE(ok);
  CHECK(ok->status == Status::dispensed);
  CHECK(ok->handed == 7000);
  auto partial = parse_reply("ERR PARTIAL 2000");
  REQUIRE(partial);
  CHECK(partial->status == Status::partial);
  CHECK(partial->handed == 2000);
  for (const char* w : {"JAM", "SHUTTER", "RETRACTED", "EMPTY", "BAD_REQUEST"}) {
    auto e = parse_reply(std::string("ERR ") + w + " 0");
    REQUIRE(e);
    CHECK(e->handed == 0);
    CHECK(encode(*e) == std::string("ERR ") + w + " 0\n");
  }
  for (const char* bad : {"OK", "OK STATUS ready", "OK STATUS Ready 2000x1", "OK STATUS ready 2000x1,2000x2", "OK STATUS ready 0x5",
                          "OK STATUS ready 2000", "OK STATUS ready 2000x1,", "OK DISPENSED 0", "ERR JAM 100", "ERR PARTIAL 0",
                          "ERR FIRE 0", "ERR JAM", "OK FAULT fire", "NO"}) {
    INFO(bad);
    CHECK_FALSE(parse_reply(bad));
  }
  CHECK_FALSE(parse_cassettes("1x1,2x1,3x1,4x1,5x1,6x1,7x1,8x1,9x1"));  // nine cassettes
}

TEST_CASE("dispenser: notes are planned exactly within the counts, largest first") {
  const std::vector<Cassette> c = {{2000, 50}, {5000, 2}, {1000, 0}};
  CHECK(plan_notes(c, 7000) == std::vector<std::uint32_t>{1, 1, 0});
  CHECK(plan_notes(c, 6000) == std::vector<std::uint32_t>{3, 0, 0});    // 5000 + 1000 is not possible: no 1000s
  CHECK(plan_notes(c, 20000) == std::vector<std::uint32_t>{5, 2, 0});
  CHECK(plan_notes(c, 1000).empty());
  CHECK(plan_notes(c, 3000).empty());
  CHECK(plan_notes(c, 110'001).empty());
  CHECK(plan_notes(c, 110'000) == std::vector<std::uint32_t>{50, 2, 0});
  CHECK(plan_notes(c, 112'000).empty());  // more than there is
  CHECK(plan_notes({}, 1000).empty());
  // 8000 from 5000x1 and 2000x4: the search must leave the 5000 out.
  CHECK(plan_notes({{5000, 1}, {2000, 4}}, 8000) == std::vector<std::uint32_t>{0, 4});
}
