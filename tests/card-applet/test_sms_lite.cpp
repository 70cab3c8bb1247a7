// The host/card SMS encodings against an independent implementation: vectors from osmocom
// pySim, tests/unittests/test_sms.py (repository osmocom/pysim, file version
// 5a54dd9edac257df3aead81798472b1d365ef287): Test_DELIVER, Test_SUBMIT, Test_AddressField,
// Test_SMS_UDH. The DELIVER is an operator's SMS-PP (PID 7F, DCS F6, alphanumeric sender).
#include "card_fixture.hpp"

using namespace otac;
using namespace otac::applet;

TEST_CASE("pySim SMS-DELIVER (SMS-PP, alphanumeric sender) decodes") {
  auto d = applet::sms::parse_deliver(hex("0408D0E5759A0E7FF6907090307513000824010101BB400101"));
  REQUIRE(d.ok());
  CHECK(d->pid == 0x7F);
  CHECK(d->dcs == 0xF6);
  CHECK(d->udh.empty());
  CHECK(d->payload == hex("24010101BB400101"));
  CHECK(d->from == "@ekit");  // GSM 7-bit "ekit" in 8 semi-octets
}

TEST_CASE("pySim SMS-SUBMIT (relative validity, UDH, 140 octets) decodes") {
  auto s = applet::sms::parse_submit(hex(
      "550d0b911614261771f000f5a78c0b050423f423f40003010201424547494e3a56434152440d0a56455253494f4e3a322e310d0a4e3a4d65"
      "0d0a54454c3b505245463b43454c4c3b564f4943453a2b36313431363237313137300d0a54454c3b484f4d453b564f4943453a2b36313339"
      "353337303437310d0a54454c3b574f524b3b564f4943453a2b36313339363734373031350d0a454e443a"));
  REQUIRE(s.ok());
  CHECK(s->to == "+61416271170");
  CHECK(s->pid == 0x00);
  CHECK(s->dcs == 0xF5);
  CHECK(s->udh == hex("050423F423F40003010201"));
  CHECK(s->udh.size() + 1 + s->payload.size() == 140);
  auto ies = otac::sms::parse_udh(s->udh);
  REQUIRE(ies.ok());
  REQUIRE(ies->size() == 2);
  CHECK((*ies)[0].iei == 0x05);
  CHECK((*ies)[1].iei == 0x00);
  CHECK((*ies)[1].data == hex("010201"));
}

TEST_CASE("pySim address field and UDH vectors") {
  // AddressField('12345', international, isdn) -> 05 91 21 43 F5, as TP-DA of our SUBMIT.
  auto sub = applet::sms::encode_submit("+12345", {}, hex("00"));
  REQUIRE(sub.ok());
  CHECK(Bytes(sub->begin() + 2, sub->begin() + 7) == hex("05912143F5"));
  // 04 80 21 43: four digits, TON/NPI unknown.
  auto d = applet::sms::parse_deliver(hex("00 0480 2143 7FF6 62112200000000 01 AA"));
  REQUIRE(d.ok());
  CHECK(d->from == "1234");
  auto u = otac::sms::parse_udh(hex("71007001ff"));
  REQUIRE(u.ok());
  REQUIRE(u->size() == 2);
  CHECK((*u)[0].iei == 0x71);
  CHECK((*u)[0].data.empty());
  CHECK((*u)[1].iei == 0x70);
  CHECK((*u)[1].data == hex("ff"));
  CHECK(otac::sms::encode_udh(*u).value() == hex("71007001ff"));
  CHECK(!otac::sms::parse_udh(hex("7101")).ok());  // IE longer than the header
}

TEST_CASE("an alphanumeric sender survives DELIVER encoding and decoding") {
  auto t = applet::sms::encode_deliver("OTAC", hex("7000"), hex("0102"));
  REQUIRE(t.ok());
  auto d = applet::sms::parse_deliver(*t);
  REQUIRE(d.ok());
  CHECK(d->from == "@OTAC");
  CHECK(!applet::sms::encode_deliver("", {}, hex("00")).ok());
}
