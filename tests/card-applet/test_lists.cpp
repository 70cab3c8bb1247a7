// The card's side of the list lifecycle (protocol.md 2.4.1): it asks for a list only when a
// slot is free for it, a refused list re-arms the request, and an unanswered request is
// repeated every few codes.
#include "card_fixture.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;

namespace {

// Requests waiting in the card's outbox (FETCHed, so the outbox is empty afterwards).
int fetch_all(Card& c) {
  int n = 0;
  for (int i = 0; i < 8 && c.tx("8012000000").sw == 0x9000; ++i) ++n;
  return n;
}

bool refresh_pending(Card& c) { return field(c.tx("80A6000000").data, 0xE0, 0xDF4A) == hex("01"); }

// One tap with the next code (POS mode).
void tap(Card& c, std::uint16_t i) {
  Ch ch;
  ch.un = be_bytes(i, 8);
  REQUIRE(c.tx(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true)).sw == 0x9000);
}

// A personalized card with this threshold and list 1 (count codes) loaded; outbox empty.
void card_with_list(Card& c, std::uint16_t threshold, std::size_t count) {
  Bytes thr;
  put(thr, hex("DF4B"), be_bytes(threshold, 2));
  personalize(c, 0x01, thr);
  load_codes(c, 1, test_codes(count, 1), 1, 0x01);
  fetch_all(c);
  REQUIRE_FALSE(refresh_pending(c));
}

}  // namespace

TEST_CASE("lists: REQUEST REFRESH is refused (6A84), nothing queued, while both slots hold unused codes") {
  Card c;
  card_with_list(c, 2, 10);
  REQUIRE(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);
  load_codes(c, 2, test_codes(10, 2), 2, 0x00);
  CHECK(c.sw(hex("80A8000000")) == 0x6A84);
  CHECK(fetch_all(c) == 0);
  CHECK_FALSE(refresh_pending(c));
  // Once list 1 is used up a slot is free and the request goes out.
  for (std::uint16_t i = 0; i < 10; ++i) tap(c, i);
  CHECK(fetch_all(c) == 0);  // 10 unused, threshold 2: the card itself has no reason to ask
  REQUIRE(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);
  CHECK(c.sw(hex("80A8000000")) == 0x9000);
  CHECK(fetch_all(c) == 1);
  CHECK(refresh_pending(c));
}

TEST_CASE("lists: at its threshold the card does not ask while both slots hold codes, it asks when a slot frees") {
  Card c;
  card_with_list(c, 12, 10);
  load_codes(c, 2, test_codes(10, 2), 2, 0x00);
  for (std::uint16_t i = 0; i < 9; ++i) {
    tap(c, i);  // 20 - (i + 1) unused; at 12 and 11 both slots still hold codes
    CHECK(fetch_all(c) == 0);
  }
  tap(c, 9);  // list 1 used up: its slot is free, 10 unused <= 12
  CHECK(fetch_all(c) == 1);
  CHECK(refresh_pending(c));
}

TEST_CASE("lists: a refused list clears refresh_pending, so the card asks again at its threshold") {
  Card c;
  card_with_list(c, 2, 10);
  REQUIRE(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);
  REQUIRE(c.sw(hex("80A8000000")) == 0x9000);
  REQUIRE(fetch_all(c) == 1);
  REQUIRE(refresh_pending(c));
  // The answer is a list the card refuses: its count does not match its keys (6A80).
  Bytes bad = e1(2, 0, test_codes(3, 2));
  REQUIRE(bad[9] == 0xC4);
  bad[12] = 0x04;  // C4: 4 codes, but 3 keys
  auto r = deliver(c, ota_packet(bad, 2));
  REQUIRE(r.sw == 0x9000);
  auto por = open_por(r.data);
  CHECK(por.status == ota::Rsc::ok);
  CHECK(por.data == hex("6A80"));
  CHECK_FALSE(refresh_pending(c));
  for (std::uint16_t i = 0; i < 7; ++i) tap(c, i);
  CHECK(fetch_all(c) == 0);  // 3 unused
  tap(c, 7);                 // 2 unused: at the threshold, a slot free
  CHECK(fetch_all(c) == 1);
}

TEST_CASE("lists: an unanswered request is repeated every 4 codes at or below the threshold, and at 0") {
  Card c;
  card_with_list(c, 10, 12);
  std::vector<int> asked;
  for (std::uint16_t i = 0; i < 12; ++i) {
    tap(c, i);
    if (fetch_all(c) > 0) asked.push_back(11 - i);  // unused codes left after this tap
  }
  CHECK(asked == std::vector<int>{10, 8, 4, 0});
  CHECK(refresh_pending(c));
}

TEST_CASE("lists: an unanswered request is repeated at every 16th poll of an empty outbox, and only while one is pending") {
  Card c;
  card_with_list(c, 10, 12);
  // Nothing pending: polls queue nothing.
  for (int i = 0; i < 40; ++i) REQUIRE(c.tx("8012000000").sw == 0x6A88);
  tap(c, 0);  // 11 unused left, above the threshold
  tap(c, 1);  // 10 left: the card asks
  REQUIRE(fetch_all(c) == 1);  // the request, and one empty poll
  REQUIRE(refresh_pending(c));
  // The request SMS is lost. Polls 2..15 find nothing; the 16th finds the request again.
  for (int i = 2; i < 16; ++i) CHECK(c.tx("8012000000").sw == 0x6A88);
  CHECK(c.tx("8012000000").sw == 0x9000);
  // The count starts over, and survives a power cycle: it is kept in the card's state.
  for (int i = 1; i < 16; ++i) CHECK(c.tx("8012000000").sw == 0x6A88);
  {
    Applet after_power_cycle{c.store};
    REQUIRE(apdu::parse_response(after_power_cycle.process(hex("00A4040006F04F5441430100")))->sw == 0x9000);
    CHECK(apdu::parse_response(after_power_cycle.process(hex("8012000000")))->sw == 0x9000);
  }
  // A list arriving ends the repeats.
  load_codes(c, 2, test_codes(10, 2), 2, 0x00);
  fetch_all(c);
  REQUIRE_FALSE(refresh_pending(c));
  for (int i = 0; i < 40; ++i) REQUIRE(c.tx("8012000000").sw == 0x6A88);
}
