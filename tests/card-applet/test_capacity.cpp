// Fixed capacity: two lists of 200 codes fit, a third does not; the state size is fixed.
// Benchmark figures (hidden tag [bench], run with `test_card_applet [bench]`): time for the
// applet to answer a challenge, state size.
#include <chrono>
#include <cstdio>

#include "card_fixture.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;

TEST_CASE("capacity: 2 lists of 200 codes arrive by concatenated SMS and are all usable") {
  Card c;
  personalize(c);
  c.select();
  auto drain = [&] { for (int i = 0; i < 8 && c.tx("8012000000").sw == 0x9000; ++i) {} };
  drain();  // the outbox is bounded (4 messages) but varies; measure without it
  const std::size_t empty_size = c.store.load().value().size();
  load_codes(c, 1, test_codes(200, 1), 1, 0x01);
  load_codes(c, 2, test_codes(200, 2), 2, 0x00);
  drain();
  CHECK(c.store.load().value().size() == empty_size);  // fixed layout: no growth
  auto s = c.tx("80A6000000");
  CHECK(field(s.data, 0xE0, 0xDF48) == hex("0190"));  // 400
  auto third = open_por(deliver(c, ota_packet(e1(3, 0, test_codes(10, 3)), 3)).data);
  CHECK(third.status == ota::Rsc::insufficient_memory);
  auto codes1 = test_codes(200, 1), codes2 = test_codes(200, 2);
  for (std::uint16_t i = 0; i < 400; ++i) {
    Ch ch;
    ch.un = be_bytes(i, 8);
    auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true));
    REQUIRE(r.sw == 0x9000);
    const std::uint16_t list = i < 200 ? 1 : 2, index = static_cast<std::uint16_t>(i % 200);
    REQUIRE(field(r.data, 0x77, 0x9F26) == mac8(0x01, list == 1 ? codes1[index] : codes2[index], ch.mac_input(list, index, static_cast<std::uint16_t>(i + 1))));
  }
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, Ch{}.encode(), true)) == 0x6A84);
  drain();
  CHECK(c.store.load().value().size() == empty_size);
}

TEST_CASE("benchmark figures: challenge answer time and state size", "[.][bench]") {
  Card c;
  personalize(c);
  c.select();
  load_codes(c, 1, test_codes(200, 1), 1, 0x01);
  load_codes(c, 2, test_codes(200, 2), 2, 0x00);
  for (int i = 0; i < 8 && c.tx("8012000000").sw == 0x9000; ++i) {}
  std::printf("state size with 2 x 200 codes: %zu bytes (fixed layout, empty outbox; at most 4 x 256 more with a full outbox)\n", c.store.load().value().size());
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint16_t i = 0; i < 400; ++i) {
    Ch ch;
    ch.un = be_bytes(i, 8);
    REQUIRE(c.tx(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true)).sw == 0x9000);
  }
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / 400;
  std::printf("AUTHENTICATE (3DES, memory storage, includes commit): %.1f us mean of 400\n", us);
}
